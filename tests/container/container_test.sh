#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The container test: builds docker/Dockerfile with podman and runs the compose topology of
# docker/compose.yaml (cmond, arena-exporter and the demo workload, sharing a tmpfs stats
# volume and cmond's PID namespace; the key mounted as a file), then checks /health with the
# key, both /metrics, the demo's allocator series (a sawtooth), /arena, the key copies,
# docker/prometheus/prometheus.yml run by the machine's Prometheus, the HEALTHCHECK, the users,
# and that every container stops on SIGTERM with status 0.
#
#   container_test.sh SOURCE_DIR          (meson test --suite container)
#
# Nothing here touches the machine: the build runs in private mount and PID namespaces, the
# containers in private mount, network and PID namespaces (so their bridge, iptables rules,
# mounts and processes live and die with the test; /run, /var/lib and /dev/shm are private
# tmpfs there), cgroups go under one parent that is removed, and podman's configuration and
# state are the test's own.
# Kept between runs, in CMON_CONTAINER_CACHE (default ~/.cache/cmon/containers): podman's image
# store, with the debootstrap base image (no registry is reachable: FROM debian:bookworm-slim
# is made locally) and the build's layer cache. Delete the directory to start cold.
#
# Exit status: 0 passed, 1 failed, 77 skipped (the reason is printed: not root, podman missing,
# or podman unable to run a container here). scripts/deps.sh container installs what it needs.
set -euo pipefail

self=$(readlink -f "$0")
image=localhost/cmon-test
# Every container's cgroup goes under this parent, removed when a phase ends (podman's default,
# libpod_parent, would stay behind in the machine's cgroup tree).
cgroup_parent=/cmon-container-test
# Seconds since the test started, across the namespaced phases too.
export CMON_TEST_START=${CMON_TEST_START:-$(date +%s)}

log() { printf '[%4ds] %s\n' $(($(date +%s) - CMON_TEST_START)) "$*"; }
skip() {
    echo "SKIP: $*"
    exit 77
}
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# ---- podman's configuration, all of it under $cache and $conf ----

# The paths podman records in its database must not change between runs, so the state that must
# not outlive a run (runroot, tmp_dir, network config) sits at a fixed path, $cache/state, on a
# tmpfs that each namespaced phase mounts afresh.
write_config() {
    local cache=$1 conf=$2 driver=overlay
    # overlay cannot sit on overlayfs (a CI runner inside a container): vfs is slow but works.
    if [ "$(stat -f -c %T "$cache")" = overlayfs ]; then
        driver=vfs
    fi
    mkdir -p "$conf"
    cat >"$conf/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$cache/state/tmp"

[network]
network_backend = "cni"
network_config_dir = "$cache/state/cni"
EOF
    cat >"$conf/storage.conf" <<EOF
[storage]
driver = "$driver"
graphroot = "$cache/storage"
runroot = "$cache/state/run"
EOF
    cat >"$conf/registries.conf" <<EOF
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
EOF
}

use_config() {
    local conf=$1
    export CONTAINERS_CONF=$conf/containers.conf
    export CONTAINERS_STORAGE_CONF=$conf/storage.conf
    export CONTAINERS_REGISTRIES_CONF=$conf/registries.conf
    unset XDG_RUNTIME_DIR CONTAINER_HOST
}

# In a phase's private mount namespace: fresh tmpfs for podman's run-time state and for the
# places podman, CNI and c/image write to whatever their configuration says (/run: network
# namespaces, iptables lock; /var/lib: containers/cache, cni/results; /dev/shm: podman's
# locks, so that no other podman on the machine, nor a killed earlier run, can hold them).
# Then no leftovers of an interrupted run in podman's database.
fresh_state() {
    local cache=$1 resolv
    mkdir -p "$cache/state" "$cache/storage"
    mount -t tmpfs -o mode=0700 tmpfs "$cache/state"
    mount -t tmpfs -o mode=1777 tmpfs /dev/shm
    mount -t tmpfs -o mode=0755 tmpfs /var/lib
    # /etc/resolv.conf may live in /run (systemd-resolved): keep it for the build's apt-get.
    resolv=$(readlink -f /etc/resolv.conf)
    if [ -f "$resolv" ] && [ "${resolv#/run/}" != "$resolv" ]; then
        cp "$resolv" "$cache/state/resolv.conf"
    fi
    mount -t tmpfs -o mode=0755 tmpfs /run
    if [ -f "$cache/state/resolv.conf" ]; then
        mkdir -p "$(dirname "$resolv")"
        touch "$resolv"
        mount --bind "$cache/state/resolv.conf" "$resolv"
    fi
    mkdir -p "$cache/state/tmp" "$cache/state/run" "$cache/state/cni" "$cache/state/cni-ipam"
    # The default network, with its address leases on the same tmpfs.
    cat >"$cache/state/cni/87-podman-bridge.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "podman",
  "plugins": [
    { "type": "bridge", "bridge": "cni-podman0", "isGateway": true, "ipMasq": true,
      "hairpinMode": true,
      "ipam": { "type": "host-local", "dataDir": "$cache/state/cni-ipam",
                "routes": [{ "dst": "0.0.0.0/0" }],
                "ranges": [[{ "subnet": "10.88.0.0/16", "gateway": "10.88.0.1" }]] } },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "firewall" },
    { "type": "tuning" }
  ]
}
EOF
    podman rm --all --force --time 0 >/dev/null 2>&1 || true
    podman volume rm --all --force >/dev/null 2>&1 || true
}

# The (empty) cgroups left under $cgroup_parent once every container is gone.
remove_cgroups() {
    local d
    for d in /sys/fs/cgroup/*"$cgroup_parent" /sys/fs/cgroup/*/*"$cgroup_parent"; do
        [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    return 0
}

# ---- Phase 1 (private mount and PID namespaces, the machine's network): the image ----

# The base images named by the Dockerfile's FROM lines (not the stages it defines), fully
# qualified as docker would read them: debian:bookworm-slim -> docker.io/library/debian:...
base_images() {
    awk '
        toupper($1) == "FROM" {
            name = $2
            for (i = 3; i < NF; i++) if (toupper($i) == "AS") stage[$(i + 1)] = 1
            if (!(name in stage) && !(name in seen)) { seen[name] = 1; print name }
        }' "$1"
}

qualify() {
    case $1 in
    */*/*) echo "$1" ;;
    */*) echo "docker.io/$1" ;;
    *) echo "docker.io/library/$1" ;;
    esac
}

# The Debian mirror apt uses here: the one place this machine can fetch packages from.
apt_mirror() {
    local m=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        m=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m=$(awk '$1 == "deb" && $2 !~ /^\[/ { print $2; exit }' /etc/apt/sources.list)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

make_base_image() {
    local ref=$1 tmp=$2 suite
    suite=${ref##*:}
    suite=${suite%-slim}
    case $ref in
    docker.io/library/debian:*) ;;
    *) fail "the Dockerfile's base image $ref is not debian:SUITE[-slim], which this test makes" ;;
    esac
    command -v debootstrap >/dev/null || skip "no base image $ref and no debootstrap to make it" \
        "(scripts/deps.sh container installs it)"
    local mirror rootfs=$tmp/rootfs
    mirror=$(apt_mirror)
    log "making $ref: debootstrap --variant=minbase $suite from $mirror"
    if ! debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" \
        >"$tmp/debootstrap.log" 2>&1; then
        tail -n 20 "$tmp/debootstrap.log"
        skip "cannot make the base image $ref: debootstrap failed (is $mirror reachable?)"
    fi
    # As the registry's image: apt's lists are fetched by the Dockerfile's own apt-get update.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
    tar -C "$rootfs" -c . | podman import --quiet --change 'CMD ["bash"]' - "$ref" >/dev/null
    rm -rf "$rootfs"
}

build_phase() {
    local src=$1 cache=$2 tmp=$3
    use_config "$tmp/conf"
    fresh_state "$cache"
    trap remove_cgroups EXIT

    local first="" ref name
    while read -r name; do
        ref=$(qualify "$name")
        if podman image exists "$ref"; then
            log "base image $ref: cached"
        elif [ -n "$first" ]; then
            podman tag "$first" "$ref"
        else
            make_base_image "$ref" "$tmp"
        fi
        first=${first:-$ref}
    done < <(base_images "$src/docker/Dockerfile")
    [ -n "$first" ] || fail "no FROM line in $src/docker/Dockerfile"

    # Can podman run a container here at all? If not, this machine cannot run the test.
    if ! podman run --rm --network host --cgroup-parent "$cgroup_parent" "$first" true \
        >"$tmp/probe.log" 2>&1; then
        cat "$tmp/probe.log"
        skip "podman cannot run a container here (see above; ../shared/NOTES.md, Containers)"
    fi

    log "building $image from docker/Dockerfile (log: $cache/build.log)"
    local t0=$SECONDS target
    : >"$cache/build.log"
    # The build stage is tagged too: untagged, it would be pruned below with its layer cache.
    # --network host: the RUN steps reach Debian's mirror without a bridge on the machine.
    local version # the image's version label, from meson.build
    version=$("$src/scripts/version.sh")
    for target in build final; do
        local args=(-t "$image")
        [ $target = build ] && args=(--target build -t "$image-build")
        if ! podman build --pull=never --network host --format docker --layers \
            --build-arg REVISION=test --build-arg VERSION="$version" \
            "${args[@]}" -f "$src/docker/Dockerfile" "$src" \
            >>"$cache/build.log" 2>&1; then
            tail -n 40 "$cache/build.log"
            fail "podman build failed"
        fi
    done
    log "built in $((SECONDS - t0)) s"
    podman image prune --force >/dev/null 2>&1 || true # earlier builds
}

# ---- Phase 2 (private mount, network and PID namespaces): the stack ----

c_cmond=cmon-test-cmond
c_exporter=cmon-test-exporter
c_demo=cmon-test-demo

# On a failure, what the containers said.
dump_logs() {
    local ctr
    for ctr in "$c_cmond" "$c_exporter" "$c_demo"; do
        echo "--- podman logs $ctr (last 20 lines)"
        timeout 10 podman logs --tail 20 "$ctr" 2>&1 | grep -v 'systemd' || true
    done
}

remove_all() {
    timeout 60 podman rm --force --time 2 "$c_demo" "$c_exporter" "$c_cmond" >/dev/null 2>&1 || true
    timeout 30 podman volume rm --force cmon-test-stats cmon-test-keys >/dev/null 2>&1 || true
    remove_cgroups
}

# metric TEXT NAME LABEL...: the value of the first sample of NAME whose labels contain every
# LABEL (e.g. comm="arena-demo"), or nothing.
metric() {
    local text=$1 name=$2
    shift 2
    awk -v name="$name" -v want="$*" '
        index($0, name "{") == 1 {
            n = split(want, w, " ")
            for (i = 1; i <= n; i++) if (index($0, w[i]) == 0) next
            print $NF
            exit
        }' <<<"$text"
}

run_phase() {
    local src=$1 cache=$2 tmp=$3
    use_config "$tmp/conf"
    ip link set lo up
    fresh_state "$cache"
    trap 'status=$?; [ $status -eq 0 ] || dump_logs; remove_all; exit $status' EXIT

    local p_cmond p_exporter p_prometheus key
    read -r p_cmond p_exporter p_prometheus <<<"$(shuf -i 20000-60000 -n 3 | tr '\n' ' ')"
    (umask 077 && openssl rand -hex 32 >"$tmp/client_secret.key")
    key=$(cat "$tmp/client_secret.key")

    # The volumes and services of docker/compose.yaml, flag for flag (--read-only-tmpfs=false:
    # podman's --read-only would add tmpfs on /run and /tmp, docker's read_only does not).
    podman volume create --opt type=tmpfs --opt device=tmpfs --opt o=mode=1777 \
        cmon-test-stats >/dev/null
    podman volume create --opt type=tmpfs --opt device=tmpfs \
        --opt o=mode=0750,uid=10001,gid=10001 cmon-test-keys >/dev/null
    local hardening=(--cgroup-parent "$cgroup_parent" --cap-drop ALL
        --security-opt no-new-privileges --read-only --read-only-tmpfs=false)
    log "starting cmond (127.0.0.1:$p_cmond), arena-exporter (127.0.0.1:$p_exporter), arena-demo"
    podman run -d --name "$c_cmond" --user 0:0 "${hardening[@]}" \
        --cap-add DAC_READ_SEARCH,SETUID,SETGID --tmpfs /tmp \
        -v "$tmp/client_secret.key:/run/secrets/cmond_key:ro" \
        -v cmon-test-stats:/dev/shm/arena -v cmon-test-keys:/run/cmon \
        -p "127.0.0.1:$p_cmond:8000" "$image" cmond >/dev/null 2>"$tmp/run.err" ||
        { cat "$tmp/run.err"; fail "podman run cmond failed"; }

    local base="http://127.0.0.1:$p_cmond" up=0
    for _ in $(seq 150); do
        if curl -fsS -o /dev/null -H "access_token: $key" "$base/health" 2>/dev/null; then
            up=1
            break
        fi
        sleep 0.2
    done
    [ $up -eq 1 ] || { podman logs "$c_cmond"; fail "cmond did not answer /health within 30 s"; }

    podman run -d --name "$c_exporter" --pid "container:$c_cmond" "${hardening[@]}" \
        --health-cmd '["/usr/local/bin/cmon-entry", "health", "exporter"]' \
        -v cmon-test-stats:/dev/shm/arena -p "127.0.0.1:$p_exporter:9464" "$image" exporter \
        >/dev/null 2>"$tmp/run.err" || { cat "$tmp/run.err"; fail "podman run exporter failed"; }
    # Short cycles (10 s, 4 steps) so that the sawtooth shows within the test.
    podman run -d --name "$c_demo" --pid "container:$c_cmond" "${hardening[@]}" \
        --health-cmd none -v cmon-test-stats:/dev/shm/arena "$image" demo \
        --period 10 --steps 4 --peak 16M >/dev/null 2>"$tmp/run.err" ||
        { cat "$tmp/run.err"; fail "podman run demo failed"; }

    # ---- cmond: the key, /health, /metrics ----
    local code body
    code=$(curl -s -o /dev/null -w '%{http_code}' "$base/health")
    [ "$code" = 401 ] || fail "GET /health without the key answered $code, not 401"
    body=$(curl -fsS -H "access_token: $key" "$base/health")
    grep -q '"status":"ok"' <<<"$body" || fail "GET /health with the key: $body"
    body=$(curl -fsS -H "Authorization: Bearer $key" "$base/health")
    grep -q '"code":200' <<<"$body" || fail "GET /health with a Bearer key: $body"
    log "cmond: /health 401 without the key, 200 with it (access_token and Bearer)"

    # ---- The stats directories: root's base and root's directory (libarena's tmpfiles.d line,
    # applied by cmon-entry as root), the cmon user's own directory made by libarena ----
    local modes
    modes=$(podman exec "$c_cmond" stat -c '%n %u %a' /dev/shm/arena /dev/shm/arena/0 \
        /dev/shm/arena/10001 2>&1 | tr '\n' ';')
    [ "$modes" = "/dev/shm/arena 0 1777;/dev/shm/arena/0 0 700;/dev/shm/arena/10001 10001 700;" ] ||
        fail "stats directories (name uid mode): $modes"
    log "stats directories: the base 1777 and 0/ 0700 root's, 10001/ 0700 the cmon user's"

    # ---- arena-exporter: the demo's allocator series, and the sawtooth ----
    local url="http://127.0.0.1:$p_exporter/metrics" text="" live=""
    for _ in $(seq 100); do
        text=$(curl -fsS "$url" 2>/dev/null || true)
        live=$(metric "$text" arena_live_bytes 'comm="arena-demo"')
        [ -n "$live" ] && [ "$live" != 0 ] && break
        sleep 0.2
    done
    if [ -z "$live" ]; then
        echo "$text" | head -n 30
        fail "no arena_live_bytes{comm=\"arena-demo\"} on arena-exporter's /metrics"
    fi
    local family
    for family in arena_allocation_size_bytes_bucket arena_calls_total arena_resident_bytes \
        arena_peak_live_bytes; do
        [ -n "$(metric "$text" "$family" 'comm="arena-demo"')" ] ||
            fail "no $family{comm=\"arena-demo\"} on arena-exporter's /metrics"
    done
    local new_calls
    new_calls=$(metric "$text" arena_calls_total 'comm="arena-demo"' 'api="new"')
    [ -n "$new_calls" ] && [ "$new_calls" != 0 ] ||
        fail "the demo's operator new calls are not counted"
    # Over 12 s (more than a cycle), live bytes must go both up and down.
    local prev="$live" rose=0 fell=0 v
    for _ in $(seq 48); do
        sleep 0.25
        v=$(metric "$(curl -fsS "$url")" arena_live_bytes 'comm="arena-demo"')
        [ -n "$v" ] || continue
        awk -v a="$v" -v b="$prev" 'BEGIN { exit !(a > b) }' && rose=1
        awk -v a="$v" -v b="$prev" 'BEGIN { exit !(a < b) }' && fell=1
        prev=$v
        [ $rose -eq 1 ] && [ $fell -eq 1 ] && break
    done
    [ $rose -eq 1 ] && [ $fell -eq 1 ] ||
        fail "arena_live_bytes of arena-demo made no sawtooth (rose=$rose fell=$fell)"
    log "arena-exporter: arena-demo's live bytes rise and fall (a sawtooth);" \
        "its size histogram and calls are there"

    # ---- cmond's /metrics: its own families; the demo's series once cmond reads the pages ----
    code=$(curl -s -o /dev/null -w '%{http_code}' "$base/metrics")
    [ "$code" = 401 ] || fail "GET /metrics without the key answered $code, not 401"
    text=$(curl -fsS -H "access_token: $key" "$base/metrics")
    grep -q '^cmond_http_requests_total{' <<<"$text" ||
        fail "no cmond_http_requests_total on cmond's /metrics"
    local jobs=1 # Prometheus jobs with the demo's series: the exporter, and cmond if it has them
    if grep -q '^# TYPE arena_live_bytes ' <<<"$text"; then
        jobs=2
        [ -n "$(metric "$text" arena_live_bytes 'comm="arena-demo"')" ] ||
            fail "cmond's /metrics has arena_live_bytes but no series of arena-demo"
        [ -n "$(metric "$text" arena_allocation_size_bytes_bucket 'comm="arena-demo"')" ] ||
            fail "cmond's /metrics has no arena_allocation_size_bytes of arena-demo"
        # cmond runs on libarena: its own page is in the shared volume, seen by the exporter.
        [ -n "$(metric "$(curl -fsS "$url")" arena_live_bytes 'comm="cmond"')" ] ||
            fail "arena-exporter does not see cmond's stats page (is cmond on libarena?)"
        log "cmond: /metrics needs the key, has the demo's arena_* series; its own page is shared"
    else
        log "cmond: /metrics needs the key; no arena_* families yet (checked on the exporter only)"
    fi

    # ---- cmond's /arena routes, across containers (same PID namespace and stats volume) ----
    code=$(curl -s -o "$tmp/arena.json" -w '%{http_code}' -H "access_token: $key" "$base/arena")
    if [ "$code" = 200 ]; then
        grep -q 'arena-demo' "$tmp/arena.json" || fail "GET /arena does not list arena-demo"
        local demo_pid
        demo_pid=$(curl -fsS "$url" | grep -o 'arena_live_bytes{comm="arena-demo",pid="[0-9]*"' |
            grep -o '[0-9]*"$' | tr -d '"')
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "access_token: $key" \
            "$base/arena/$demo_pid/trim")
        [ "$code" = 202 ] || fail "POST /arena/$demo_pid/trim (arena-demo) answered $code, not 202"
        log "cmond: GET /arena lists arena-demo; POST /arena/$demo_pid/trim reaches it (202)"
    else
        log "cmond: no /arena routes yet (GET /arena answered $code)"
    fi

    # ---- The key copies, and Prometheus with docker/prometheus/prometheus.yml ----
    local keys
    keys=$(podman volume inspect --format '{{.Mountpoint}}' cmon-test-keys)
    [ "$(stat -c '%a %u' "$keys/cmond.key")" = "400 10001" ] ||
        fail "cmond.key is $(stat -c '%a %u' "$keys/cmond.key"), not mode 400 owned by 10001"
    [ "$(stat -c '%a %g' "$keys/scrape.key")" = "440 10001" ] ||
        fail "scrape.key is $(stat -c '%a %g' "$keys/scrape.key"), not mode 440 group 10001"
    cmp -s "$keys/cmond.key" "$tmp/client_secret.key" || fail "cmond.key is not the mounted key"
    if command -v prometheus >/dev/null; then
        check_prometheus "$src" "$keys" "$p_cmond" "$p_exporter" "$p_prometheus" "$jobs"
    else
        log "prometheus not installed: the scrape configuration was not run"
    fi

    # ---- The image: HEALTHCHECK, users, labels, no key inside ----
    local out
    out=$(podman healthcheck run "$c_cmond" 2>/dev/null) ||
        fail "the image's HEALTHCHECK failed in cmond's container: $out"
    out=$(podman healthcheck run "$c_exporter" 2>/dev/null) ||
        fail "the exporter's health check failed: $out"
    local ctr users
    for ctr in "$c_cmond" "$c_exporter" "$c_demo"; do
        users=$(podman top "$ctr" user | tail -n +2 | sort -u | tr '\n' ' ')
        [ "$users" = "cmon " ] || fail "$ctr runs processes as: $users(expected cmon only)"
    done
    [ "$(podman image inspect --format '{{.Config.User}}' "$image")" = cmon ] ||
        fail "the image's USER is not cmon"
    local title='{{index .Labels "org.opencontainers.image.title"}}'
    [ "$(podman image inspect --format "$title" "$image")" = cmon ] ||
        fail "the image has no org.opencontainers.image.title label"
    out=$(podman run --rm --network none --cgroup-parent "$cgroup_parent" --health-cmd none \
        --entrypoint /bin/sh "$image" -c \
        'find / -xdev \( -name "*.key" -o -name "client_secret*" \) -print 2>/dev/null; true' \
        2>/dev/null)
    [ -z "$out" ] || fail "key files in the image: $out"
    log "image: HEALTHCHECK passes, every process runs as cmon, OCI labels, no key file inside"

    # ---- SIGTERM: each entry process passes it on; everything exits 0, pages are removed ----
    local t0 status
    for ctr in "$c_demo" "$c_exporter" "$c_cmond"; do
        t0=$SECONDS
        podman stop --time 10 "$ctr" >/dev/null 2>&1 || fail "podman stop $ctr failed"
        status=$(podman inspect --format '{{.State.ExitCode}}' "$ctr")
        [ "$status" = 0 ] || fail "$ctr exited with $status after SIGTERM"
        [ $((SECONDS - t0)) -lt 8 ] || fail "$ctr took $((SECONDS - t0)) s to stop on SIGTERM"
        if [ "$ctr" = "$c_demo" ]; then
            text=$(curl -fsS "$url")
            [ -z "$(metric "$text" arena_live_bytes 'comm="arena-demo"')" ] ||
                fail "arena-demo's stats page is still there after it stopped"
        fi
    done
    log "SIGTERM: arena-demo, arena-exporter and cmond stopped with status 0;" \
        "the demo's page is gone"
}

# The compose Prometheus configuration, run by the machine's prometheus against the containers
# the way compose runs it: as nobody with the cmon group (group_add), the key volume at
# /run/cmon (this phase's private /run). Both jobs must be up (cmond with scrape.key), the
# demo's series scraped from both, the alert rules loaded.
check_prometheus() {
    local src=$1 keys=$2 p_cmond=$3 p_exporter=$4 port=$5 jobs=$6 dir=/run/cmon-test-prometheus
    mkdir -p /run/cmon "$dir"
    mount --bind "$keys" /run/cmon
    cp "$src/docker/prometheus/alerts.yml" "$dir/"
    sed -e "s|\"cmond:8000\"|\"127.0.0.1:$p_cmond\"|" \
        -e "s|\"exporter:9464\"|\"127.0.0.1:$p_exporter\"|" \
        "$src/docker/prometheus/prometheus.yml" >"$dir/prometheus.yml"
    chown -R 65534:65534 "$dir"
    setpriv --reuid=65534 --regid=65534 --groups=10001 -- \
        prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
        --web.listen-address="127.0.0.1:$port" >"$dir/log" 2>&1 &
    local prom=$! api="http://127.0.0.1:$port/api/v1" up="" series=""
    for _ in $(seq 60); do
        up=$(curl -fsS "$api/query?query=sum(up)" 2>/dev/null | grep -o '"value":\[[^]]*\]' || true)
        series=$(curl -fsS "$api/query" --data-urlencode \
            'query=count(arena_live_bytes{comm="arena-demo"})' 2>/dev/null |
            grep -o '"value":\[[^]]*\]' || true)
        [[ $up == *'"2"]' ]] && [[ $series == *"\"$jobs\"]" ]] && break
        sleep 0.5
    done
    local rules targets
    rules=$(curl -fsS "$api/rules" 2>/dev/null || true)
    targets=$(curl -fsS "$api/targets" 2>/dev/null || true)
    kill "$prom" 2>/dev/null || true
    wait "$prom" 2>/dev/null || true
    umount /run/cmon
    [[ $up == *'"2"]' ]] || {
        tail -n 20 "$dir/log"
        echo "${targets:0:2000}"
        fail "Prometheus: not both targets up ($up)"
    }
    [[ $series == *"\"$jobs\"]" ]] ||
        fail "Prometheus: arena-demo's arena_live_bytes not scraped from $jobs job(s) ($series)"
    [[ $rules == *ArenaLiveBytesGrowing* ]] || fail "Prometheus did not load alerts.yml"
    log "Prometheus (docker/prometheus, as nobody with the cmon group): cmond and the" \
        "exporter up, the demo's series from $jobs job(s), alerts loaded"
}

# ---- Prometheus configuration in docker/prometheus (promtool, on the host, no network) ----

check_prometheus_config() {
    local src=$1 tmp=$2 dir=$1/docker/prometheus
    if ! command -v promtool >/dev/null; then
        log "promtool not installed: Prometheus configuration not checked"
        return
    fi
    # The compose configuration reads the key from /run/cmon in its container: point it at a
    # file that exists here.
    mkdir -p "$tmp/prometheus"
    cp "$dir/alerts.yml" "$tmp/prometheus/"
    touch "$tmp/prometheus/scrape.key"
    sed "s|/run/cmon/scrape.key|$tmp/prometheus/scrape.key|" "$dir/prometheus.yml" \
        >"$tmp/prometheus/prometheus.yml"
    promtool check config "$tmp/prometheus/prometheus.yml" >"$tmp/promtool.log" 2>&1 &&
        promtool check config "$dir/fleet.yml" >>"$tmp/promtool.log" 2>&1 &&
        promtool check rules "$dir/alerts.yml" >>"$tmp/promtool.log" 2>&1 ||
        { cat "$tmp/promtool.log"; fail "promtool rejects docker/prometheus"; }
    log "docker/prometheus: promtool accepts prometheus.yml, fleet.yml and alerts.yml"
}

# ---- Main ----

main() {
    local src=${1:-}
    [ -n "$src" ] && [ -f "$src/docker/Dockerfile" ] ||
        fail "usage: $0 SOURCE_DIR (the top of the tree, with docker/Dockerfile)"
    src=$(readlink -f "$src")
    [ "$(uname -s)" = Linux ] || skip "podman containers need Linux"
    [ "$(id -u)" -eq 0 ] || skip "needs root: rootless podman needs subordinate ids and" \
        "fuse-overlayfs, which this test does not set up (run it as root, as CI does)"
    local cmd
    for cmd in podman runc unshare ip curl openssl shuf flock setpriv; do
        command -v "$cmd" >/dev/null ||
            skip "$cmd is not installed (scripts/deps.sh container installs what this test needs)"
    done
    unshare --mount --net --pid --fork --mount-proc true 2>/dev/null ||
        skip "cannot create mount, network and PID namespaces here"

    local cache=${CMON_CONTAINER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cmon/containers}
    mkdir -p "$cache"
    cache=$(readlink -f "$cache")
    exec 9>"$cache/lock"
    flock -w 1800 9 || fail "another container test holds $cache/lock"

    tmp=$(mktemp -d "${TMPDIR:-/tmp}/cmon-container-test.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    write_config "$cache" "$tmp/conf"
    log "podman $(podman --version | awk '{print $3}'), state in $cache"

    check_prometheus_config "$src" "$tmp"

    local status=0 t0=$SECONDS
    unshare --mount --pid --fork --kill-child --mount-proc --propagation private \
        -- "$BASH" "$self" --build-phase "$src" "$cache" "$tmp" || status=$?
    [ $status -eq 0 ] || exit $status
    log "image ready in $((SECONDS - t0)) s"
    t0=$SECONDS
    unshare --mount --net --pid --fork --kill-child --mount-proc --propagation private \
        -- "$BASH" "$self" --run-phase "$src" "$cache" "$tmp" || status=$?
    [ $status -eq 0 ] || exit $status
    log "stack checked in $((SECONDS - t0)) s"
    echo "PASS: the image builds, runs the compose topology and passes every check"
}

case ${1:-} in
--build-phase)
    shift
    build_phase "$@"
    ;;
--run-phase)
    shift
    run_phase "$@"
    ;;
*) main "$@" ;;
esac
