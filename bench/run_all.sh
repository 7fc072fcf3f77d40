#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/run_all.sh — every benchmark in one command: builds what is missing, runs the seed's
# 256 KiB benchmark (run_seed.py), the allocator suite (run_bench.py), the resident memory by
# mapping (rss_split.py), process start-up (run_startup.py), RSS over time after a large free
# (run_idle_rss.py) and the HTTP load figures (http/run_http_bench.py), then writes the
# summary and the plots (report.py).
#
#   bench/run_all.sh                     full run into bench/results/ (about 14 min here),
#                                        and refreshes the results sections of bench/README.md and README.md
#   bench/run_all.sh --smoke             tiny sizes, one round, into a temporary directory
#
# Options:
#   --rounds N        interleaved rounds of the suite and of the seed benchmark (default 5)
#   --smoke           smoke sizes; results go to a temporary directory unless --out is given
#   --out DIR         where the results go (default bench/results; smoke: a temporary dir)
#   --build-dir DIR   meson build directory (default: build-bench/ at the top of the tree;
#                     set up with `meson setup` if missing)
#   --no-build        do not run meson/ninja (the programs must exist)
#   --no-http         skip the HTTP load figures
#   --only WORKLOAD   suite: only this workload (repeatable)
#
# Runs the full sizes only on a quiet machine: check `uptime` first (the drivers warn at a
# 1-minute load average of 1 or more, and the reports say so).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
build="$root/build-bench"
rounds=5
smoke=0
out=""
do_build=1
do_http=1
only=()

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit "$1"
}

while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) rounds=${2:?--rounds needs a value}; shift 2 ;;
    --smoke) smoke=1; shift ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --build-dir) build=${2:?--build-dir needs a value}; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --no-http) do_http=0; shift ;;
    --only) only+=(--only "${2:?--only needs a value}"); shift 2 ;;
    -h | --help) usage 0 ;;
    *) echo "run_all.sh: unknown argument '$1'" >&2; usage 2 >&2 ;;
    esac
done
case "$rounds" in
'' | *[!0-9]* | 0) echo "run_all.sh: --rounds must be a positive integer" >&2; exit 2 ;;
esac

say() { printf '\n=== %s\n' "$*" >&2; }
started=$(date +%s)
# The drivers judge "busy" by this, not by the load our own earlier benchmarks leave behind.
BENCH_LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
export BENCH_LOADAVG_BEFORE

tmp=""
if [ -z "$out" ]; then
    if [ "$smoke" = 1 ]; then
        tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-all-smoke.XXXXXX")
        out="$tmp"
        trap 'rm -rf "$tmp"' EXIT
    else
        out="$here/results"
    fi
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)

# ---- Build ----
targets=(bench/bench_alloc bench/bench_seed bench/bench_seed_native bench/bench_startup
         bench/bench_idle libarena/libarena.so)
if [ "$do_http" = 1 ]; then
    targets+=(cmond/cmond bench/http/spawn_ceiling)
fi
if [ "$do_build" = 1 ]; then
    if [ ! -f "$build/build.ninja" ]; then
        say "meson setup $build"
        meson setup "$build" "$root" >&2
    fi
    say "building ${targets[*]}"
    ninja -C "$build" "${targets[@]}" >&2
fi
for t in "${targets[@]}"; do
    if [ ! -e "$build/$t" ]; then
        echo "run_all.sh: $build/$t is missing (build it, or drop --no-build)" >&2
        exit 1
    fi
done

smoke_flag=()
[ "$smoke" = 1 ] && smoke_flag=(--smoke)
[ "$smoke" = 1 ] && rounds=1
say "machine: $(uptime)"

# ---- The seed benchmark ----
say "seed benchmark (run_seed.py, $rounds round(s))"
t0=$(date +%s)
python3 "$here/run_seed.py" --bench "$build/bench/bench_seed" \
    --native "$build/bench/bench_seed_native" --arena "$build/libarena/libarena.so" \
    --rounds "$rounds" --out "$out" "${smoke_flag[@]}" >/dev/null
seed_s=$(($(date +%s) - t0))

# ---- The suite ----
say "allocator suite (run_bench.py, $rounds round(s))"
t0=$(date +%s)
python3 "$here/run_bench.py" --bench "$build/bench/bench_alloc" \
    --arena "$build/libarena/libarena.so" --rounds "$rounds" --out "$out" \
    "${smoke_flag[@]}" "${only[@]}" >/dev/null
suite_s=$(($(date +%s) - t0))

# ---- Resident memory by mapping ----
say "resident memory by mapping (rss_split.py)"
split_rounds=3
[ "$smoke" = 1 ] && split_rounds=1
python3 "$here/rss_split.py" --bench "$build/bench/bench_alloc" \
    --arena "$build/libarena/libarena.so" --rounds "$split_rounds" --out "$out" \
    "${smoke_flag[@]}" >/dev/null

# ---- Process start-up ----
# Its own rounds: 40 of 50 starts per allocator, 2,000 starts each.
startup_rounds=40
[ "$smoke" = 1 ] && startup_rounds=1
say "process start-up (run_startup.py, $startup_rounds round(s))"
t0=$(date +%s)
python3 "$here/run_startup.py" --bench "$build/bench/bench_startup" \
    --arena "$build/libarena/libarena.so" --rounds "$startup_rounds" --out "$out" \
    "${smoke_flag[@]}" >/dev/null
startup_s=$(($(date +%s) - t0))

# ---- RSS over time after a large free ----
# Its own rounds: 3 of every scenario under every allocator, 3 s of sampling each.
idle_rounds=3
[ "$smoke" = 1 ] && idle_rounds=1
say "RSS after a large free (run_idle_rss.py, $idle_rounds round(s))"
t0=$(date +%s)
python3 "$here/run_idle_rss.py" --bench "$build/bench/bench_idle" \
    --arena "$build/libarena/libarena.so" --rounds "$idle_rounds" --out "$out" \
    "${smoke_flag[@]}" >/dev/null
idle_s=$(($(date +%s) - t0))

# ---- HTTP load figures (bench/http/, another engineer's: called, not changed) ----
http_s=0
if [ "$do_http" = 1 ]; then
    say "HTTP load figures (http/run_http_bench.py)"
    t0=$(date +%s)
    http_args=(--cmond "$build/cmond/cmond" --spawn-ceiling "$build/bench/http/spawn_ceiling")
    if [ "$smoke" = 1 ]; then
        python3 "$here/http/run_http_bench.py" "${http_args[@]}" --smoke >&2
    else
        python3 "$here/http/run_http_bench.py" "${http_args[@]}" --out "$out/http.md" >&2
    fi
    http_s=$(($(date +%s) - t0))
fi

# ---- Summary, plots, README ----
say "summary and plots (report.py)"
report_args=(--results "$out" --require)
if [ "$smoke" = 0 ] && [ "$out" = "$here/results" ]; then
    report_args+=(--readme "$here/README.md" --readme "$(dirname "$here")/README.md")
fi
python3 "$here/report.py" "${report_args[@]}"

total=$(($(date +%s) - started))
say "done in ${total} s (seed ${seed_s} s, suite ${suite_s} s, start-up ${startup_s} s, idle RSS ${idle_s} s, http ${http_s} s); results in $out"
