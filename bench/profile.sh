#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# bench/profile.sh — a callgrind profile of one benchmark process under one allocator, as
# used for bench/results/profiles.md. Callgrind counts instructions, so the figures repeat
# exactly from run to run, whatever else the machine is doing. Threads run one at a time
# under valgrind, so contention does not show; only the work done does.
#
#   bench/profile.sh [options] ALLOCATOR PROGRAM [ARGS...]
#
#   ALLOCATOR  glibc | jemalloc | mimalloc | tcmalloc | libarena | libarena-nostats
#   PROGRAM    bench_alloc | bench_seed | bench_seed_native (from BUILD/bench/)
#   --build-dir DIR  build directory (default build-bench/). For line-level annotation,
#                    configure one with `meson setup DIR -Dcpp_args=-g`: release code plus
#                    debug info (the machine code is the same as a release build's).
#   --out DIR        where callgrind.out.* goes (default: a new directory in /tmp)
#   --sim            also simulate caches and branches (--cache-sim=yes --branch-sim=yes)
#   --lines FILE     also list the hot lines of source FILE (e.g. libarena/src/heap.h)
#   --only FUNC      count only inside functions matching FUNC (callgrind --toggle-collect),
#                    e.g. '*run_once*' for the seed benchmark's measured loop without its setup
#
# Example: bench/profile.sh --build-dir /tmp/build-prof libarena bench_alloc small --ops 200000
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
build="$root/build-bench"
out=""
vg_args=()
lines=()
libdir=/usr/lib/x86_64-linux-gnu

usage() {
    sed -n '3,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit "$1"
}

while [ $# -gt 0 ]; do
    case "$1" in
    --build-dir) build=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --sim) vg_args+=(--cache-sim=yes --branch-sim=yes); shift ;;
    --only) vg_args+=("--toggle-collect=${2:?}"); shift 2 ;;
    --lines) lines+=("$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"); shift 2 ;;
    -h | --help) usage 0 ;;
    -*) echo "profile.sh: unknown option '$1'" >&2; usage 2 >&2 ;;
    *) break ;;
    esac
done
[ $# -ge 2 ] || usage 2 >&2
alloc=$1
program=$2
shift 2

env_args=(env -u LD_PRELOAD -u MALLOC_PERTURB_)
case "$alloc" in
glibc) ;;
jemalloc) env_args+=(LD_PRELOAD="$libdir/libjemalloc.so.2") ;;
mimalloc) env_args+=(LD_PRELOAD="$libdir/libmimalloc.so.2") ;;
tcmalloc) env_args+=(LD_PRELOAD="$libdir/libtcmalloc_minimal.so.4") ;;
libarena) env_args+=(LD_PRELOAD="$build/libarena/libarena.so") ;;
libarena-nostats) env_args+=(LD_PRELOAD="$build/libarena/libarena.so" ARENA_STATS=0) ;;
*) echo "profile.sh: unknown allocator '$alloc'" >&2; exit 2 ;;
esac
exe="$build/bench/$program"
[ -x "$exe" ] || { echo "profile.sh: $exe not found" >&2; exit 1; }
[ -n "$out" ] || out=$(mktemp -d /tmp/bench-profile.XXXXXX)
mkdir -p "$out"
name="$alloc.$program"
case "${1:-}" in '' | -*) ;; *) name="$name.$1" ;; esac
file="$out/callgrind.out.$name"

"${env_args[@]}" valgrind --tool=callgrind --callgrind-out-file="$file" "${vg_args[@]}" \
    "$exe" "$@" >"$out/$name.stdout" 2>"$out/$name.stderr" || {
    echo "profile.sh: the run failed; see $out/$name.stderr" >&2
    exit 1
}
set +o pipefail # head closes the pipes below early
echo "== $alloc $program $*  ($file)"
cat "$out/$name.stdout"
# Self cost per function, then inclusive; then the requested source lines.
callgrind_annotate --threshold=100 "$file" | sed -n '/PROGRAM TOTALS/p; /file:function/,$p' |
    head -22
echo "-- inclusive"
callgrind_annotate --inclusive=yes --threshold=100 "$file" | sed -n '/file:function/,$p' |
    sed -n '3,20p'
for f in "${lines[@]}"; do
    # Annotate under the name the debug info recorded (relative to the build directory).
    recorded=$(grep -oE "^c?f[lie]=\([0-9]+\) .*/$(basename "$f")\$" "$file" | head -1 | sed 's/^[^ ]* //')
    echo "-- hot lines of $f (lines with at least 0.5% of the total)"
    total=$(callgrind_annotate "$file" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
    callgrind_annotate --auto=no --context=0 "$file" "${recorded:-$f}" |
        sed -n '/User-annotated source/,$p' | grep -v '=>' |
        awk -v min="$((total / 200))" '{ v = $1; gsub(",", "", v) } v ~ /^[0-9]+$/ && v + 0 >= min' |
        head -40
done
