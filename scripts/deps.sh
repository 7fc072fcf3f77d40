#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian packages a task needs, only those that are missing.
#
#   scripts/deps.sh build|test|demo|bench|container|aarch64|fuzz|sanitize|style
#
# Runs apt-get as root, or through sudo when available. Prints what it installs.
set -euo pipefail

# libdw-dev: elfutils, which the heap profile readers (arena-prof, cmond) symbolise with; zlib1g-dev:
# the gzip of their pprof output.
build=(g++ meson ninja-build pkg-config doctest-dev libssl-dev libcpp-httplib-dev libboost1.81-dev
       prometheus-cpp-dev nlohmann-json3-dev libdw-dev zlib1g-dev)
# What the test suites run: real programs for the preload suite, promtool, the allocator peers
# and load tools for the benchmark smoke tests; golang-go's `go tool pprof` opens the heap
# profiles arena-prof writes. zstd (2 MB) is one of bench-programs' programs; its others, ruby
# (libruby3.1, 25 MB) and z3 (libz3-4, 45 MB), are too big for the test list: that smoke test
# skips them, with the reason printed, where only the test list is installed.
test=("${build[@]}" python3 git perl sqlite3 cmake curl coreutils findutils tar xz-utils gzip
      gawk procps prometheus libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 wrk webhook
      libpython3.11-testsuite golang-go zstd)
# The demo: openssl makes the key, procps has the uptime that cmond's /health runs.
demo=("${build[@]}" curl openssl procps)
# The container suite: podman (runc as its runtime), debootstrap for the base image, ip, curl and
# openssl for the checks, prometheus and promtool to run and check the configuration in docker/.
container=(podman runc debootstrap iproute2 curl openssl prometheus)
# heaptrack: the heap profiler that bench/'s profiling overhead is compared with; z3 and ruby:
# programs of bench/run_programs.py.
bench=("${test[@]}" gnuplot-nox hyperfine valgrind heaptrack z3 ruby)
# scripts/check_aarch64.sh: a cross compiler, and qemu-user to run what it builds.
aarch64=("${build[@]}" g++-aarch64-linux-gnu qemu-user-static)
# scripts/fuzz.sh: clang 14 and its runtimes (libFuzzer, ASan, UBSan are in libclang-rt-14-dev).
fuzz=("${build[@]}" clang libclang-rt-14-dev)
# scripts/check_sanitize.sh: GCC's sanitizer runtimes, and what the unit, cmond, exporter and
# client suites run (promtool, openssl for cmond's TLS tests, procps).
sanitize=("${build[@]}" libasan8 libubsan1 libtsan2 prometheus openssl procps)
# scripts/check_style.sh: clang-format, and clang-tidy with its run-clang-tidy.
style=(clang-format clang-tidy)

case "${1:-}" in
    build) want=("${build[@]}") ;;
    test) want=("${test[@]}") ;;
    demo) want=("${demo[@]}") ;;
    bench) want=("${bench[@]}") ;;
    container) want=("${container[@]}") ;;
    aarch64) want=("${aarch64[@]}") ;;
    fuzz) want=("${fuzz[@]}") ;;
    sanitize) want=("${sanitize[@]}") ;;
    style) want=("${style[@]}") ;;
    *) echo "usage: $0 build|test|demo|bench|container|aarch64|fuzz|sanitize|style" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
# node: the preload suite uses it; any node on PATH will do (Debian's nodejs package otherwise).
if [ "$1" = test ] && ! command -v node >/dev/null 2>&1; then
    missing+=(nodejs)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "deps: missing packages: ${missing[*]}; run as root or install sudo" >&2
    exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    "${as_root[@]}" apt-get update -q
    "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
