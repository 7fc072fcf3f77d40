#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The README's demo command: the whole stack on this machine, on defaults.
#   - installs what is missing (scripts/deps.sh demo) and builds (scripts/build.sh);
#   - makes client_secret.key (mode 0600) if there is none;
#   - starts cmond on 127.0.0.1:8000 (on libarena) and arena-exporter on 127.0.0.1:9464;
#   - runs arena-demo on libarena (arena-run: LD_PRELOAD=libarena.so), a sawtooth of live bytes;
#   - prints the curl commands to try, then arena-stat's view of every process, refreshed.
# Ctrl-C (or SIGTERM) stops and reaps everything it started. It stops by itself, with a
# message, if one of the three exits, or if port 8000 or 9464 is taken.
#
#   scripts/demo.sh [SECONDS]     stop after SECONDS (default: run until Ctrl-C)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
duration=${1:-0}
if ! [[ $duration =~ ^[0-9]+$ ]]; then
    echo "usage: $0 [SECONDS]" >&2
    exit 2
fi

cmond_port=8000
exporter_port=9464

scripts/deps.sh demo
echo "demo: building (scripts/build.sh)"
scripts/build.sh >/dev/null

build=$root/build
cmond=$build/cmond/cmond
exporter=$build/exporter/arena-exporter
arena_run=$build/libarena/arena-run
arena_stat=$build/libarena/tools/arena-stat
workload=$build/docker/arena-demo
for f in "$cmond" "$exporter" "$arena_run" "$arena_stat" "$workload"; do
    if [ ! -x "$f" ]; then
        echo "demo: $f was not built" >&2
        exit 1
    fi
done

key_file=$root/client_secret.key
if [ ! -e "$key_file" ]; then
    (umask 077 && openssl rand -hex 32 >"$key_file")
    echo "demo: made a new key in $key_file (mode 0600; .gitignore keeps it out of git)"
fi

# A port that answers is taken: say which and by what, rather than let a daemon fail later.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$cmond_port" "$exporter_port"; do
    if port_taken "$port"; then
        echo "demo: 127.0.0.1:$port is already in use; stop what listens there and try again:" >&2
        if command -v ss >/dev/null 2>&1; then
            ss -ltnpH "sport = :$port" >&2 || true
        fi
        exit 1
    fi
done

work=$(mktemp -d)
pids=()
names=()

# Stops what this script started: SIGTERM, up to 10 s to exit, then SIGKILL; reaps each one.
stop_all() {
    trap - INT TERM
    [ ${#pids[@]} -eq 0 ] && return 0
    printf '\ndemo: stopping %s\n' "${names[*]}"
    local i
    for i in "${!pids[@]}"; do
        kill -TERM "${pids[$i]}" 2>/dev/null || true
    done
    for _ in $(seq 100); do
        local alive=0
        for i in "${!pids[@]}"; do
            kill -0 "${pids[$i]}" 2>/dev/null && alive=1
        done
        [ $alive -eq 0 ] && break
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        if kill -0 "${pids[$i]}" 2>/dev/null; then
            echo "demo: ${names[$i]} did not stop in 10 s: killing it" >&2
            kill -KILL "${pids[$i]}" 2>/dev/null || true
        fi
        wait "${pids[$i]}" 2>/dev/null || true
    done
    echo "demo: stopped ${names[*]}"
    pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME COMMAND...: in the background, output to $work/NAME.log.
start() {
    local name=$1
    shift
    "$@" >"$work/$name.log" 2>&1 &
    pids+=($!)
    names+=("$name")
}

# Exits with the log of NAME when its process is gone.
check_alive() {
    local i
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            echo "demo: ${names[$i]} exited; its log:" >&2
            sed 's/^/  /' "$work/${names[$i]}.log" >&2
            exit 1
        fi
    done
}

# cmond runs on libarena: linked to it, or else preloaded through arena-run.
cmond_cmd=("$cmond" --bind 127.0.0.1 --port "$cmond_port" --key-file "$key_file" --syslog false)
if ! grep -q 'libarena\.so' < <(ldd "$cmond"); then
    cmond_cmd=("$arena_run" "${cmond_cmd[@]}")
fi
start cmond "${cmond_cmd[@]}"
start arena-exporter "$exporter" --listen "127.0.0.1:$exporter_port"
start arena-demo "$arena_run" "$workload"

# Ready when cmond answers /health with the key and the exporter serves /metrics.
key=$(cat "$key_file")
ready=0
for _ in $(seq 100); do
    check_alive
    if curl -fsS -o /dev/null -H "access_token: $key" "http://127.0.0.1:$cmond_port/health" &&
        curl -fsS -o /dev/null "http://127.0.0.1:$exporter_port/metrics"; then
        ready=1
        break
    fi
    sleep 0.1
done
unset key
if [ $ready -eq 0 ]; then
    echo "demo: cmond or arena-exporter did not answer within 10 s" >&2
    for name in "${names[@]}"; do
        echo "--- $name" >&2
        sed 's/^/  /' "$work/$name.log" >&2
    done
    exit 1
fi

banner() {
    cat <<EOF
cmon demo: cmond on http://127.0.0.1:$cmond_port (on libarena), arena-exporter on
http://127.0.0.1:$exporter_port, and arena-demo (pid ${pids[2]}) making a 60 s sawtooth on libarena.

Try, in another terminal:
  KEY=\$(cat $key_file)
  curl -H "access_token: \$KEY" http://127.0.0.1:$cmond_port/health
  curl -H "Authorization: Bearer \$KEY" http://127.0.0.1:$cmond_port/metrics
  curl -H "access_token: \$KEY" http://127.0.0.1:$cmond_port/arena
  curl -s http://127.0.0.1:$exporter_port/metrics | grep 'arena_live_bytes{'
  $arena_stat --watch

Ctrl-C stops everything this demo started.
EOF
}

# The arena-stat view: redrawn under the banner every 2 s on a terminal, appended every 10 s
# otherwise. Each view is the second frame of a 1 s watch, so that it has call rates.
if [ -t 1 ]; then
    interval=2
else
    interval=10
fi
banner
started=$SECONDS
while :; do
    frame=$("$arena_stat" --watch 1 --count 2 | awk '/^arena-stat /{k++} k==2')
    check_alive
    if [ -t 1 ]; then
        printf '\033[H\033[2J'
        banner
    fi
    printf '\n%s\n' "$frame"
    if [ "$duration" -gt 0 ] && [ $((SECONDS - started)) -ge "$duration" ]; then
        break
    fi
    sleep $((interval - 1)) &
    wait $! || true
done
