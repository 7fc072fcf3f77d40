#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the libFuzzer targets (tests/fuzz/) with clang in ./build-fuzz and fuzzes each one for a
# bounded time, starting from its seed corpus (tests/fuzz/corpus/<target>/). Exits non-zero if any
# target crashes, times out or fails a check, and prints where the input that did it was saved.
#
#   scripts/fuzz.sh [SECONDS] [--update-corpus] [TARGET...]
#
#   SECONDS           per target (default 25: the five targets and a warm build fit in ~2.5 min)
#   --update-corpus   merge the new inputs that add coverage into tests/fuzz/corpus/ (otherwise
#                     the tree is only read: new inputs go to a temporary directory)
#   TARGET            stats-reader, profile-reader, http-request, config, alloc (default: all)
#
# Environment: FUZZ_BUILD_DIR (default build-fuzz), FUZZ_JOBS (parallel compile jobs),
# FUZZ_KEEP=1 keeps the temporary directory even when nothing failed.
# Reproduce a crash: build-fuzz/tests/fuzz/fuzz-TARGET CRASH-FILE
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=25
update=false
targets=()
for arg in "$@"; do
    case "$arg" in
        --update-corpus) update=true ;;
        -h|--help) sed -n '3,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        ''|*[!0-9]*) targets+=("$arg") ;;
        *) seconds="$arg" ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(stats-reader profile-reader http-request config alloc)

build="${FUZZ_BUILD_DIR:-build-fuzz}"
corpus_root=tests/fuzz/corpus
dict_root=tests/fuzz/dict

scripts/deps.sh fuzz

start=$(date +%s)
if [ ! -f "$build/build.ninja" ]; then
    # debugoptimized: assert() stays on (release would define NDEBUG); nothing else is needed
    # from the tree, so the tests and benchmarks are left out.
    CC=clang CXX=clang++ meson setup "$build" -Dfuzz=true -Dtests=false -Dbench=false \
        -Dbuildtype=debugoptimized >/dev/null
fi
build_targets=()
for t in "${targets[@]}"; do
    [ -d "$corpus_root/$t" ] || { echo "fuzz: no target '$t'" >&2; exit 2; }
    build_targets+=("fuzz-$t")
done
nice -n 10 meson compile -C "$build" ${FUZZ_JOBS:+-j "$FUZZ_JOBS"} "${build_targets[@]}" >/dev/null
echo "fuzz: built ${build_targets[*]} in $(($(date +%s) - start)) s"

work=$(mktemp -d "${TMPDIR:-/tmp}/cmon-fuzz-XXXXXX")
failed=()
for t in "${targets[@]}"; do
    exe="$build/tests/fuzz/fuzz-$t"
    mkdir -p "$work/$t/new" "$work/$t/artifacts"
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
          -artifact_prefix="$work/$t/artifacts/")
    [ -f "$dict_root/$t.dict" ] && args+=(-dict="$dict_root/$t.dict")
    # A stats page is 32 KiB (and the comm after it).
    [ "$t" = stats-reader ] && args+=(-max_len=33024)
    # A profile head (256 bytes) and a few dozen stack slots (320 each) after the mode byte.
    [ "$t" = profile-reader ] && args+=(-max_len=16641)
    # New inputs go to the first directory (a temporary one); the tree's corpus is only read.
    if "$exe" "${args[@]}" "$work/$t/new" "$corpus_root/$t" >"$work/$t/log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t/log")
        cov=$(grep -o 'cov: [0-9]*' "$work/$t/log" | tail -1)
        echo "fuzz: $t: ok, ${runs:-?} runs in ${seconds} s, $cov"
        if [ "$update" = true ]; then
            "$exe" -merge=1 "$corpus_root/$t" "$work/$t/new" >>"$work/$t/log" 2>&1
            echo "fuzz: $t: merged new coverage into $corpus_root/$t"
        fi
    else
        failed+=("$t")
        echo "fuzz: $t: FAILED (log: $work/$t/log):"
        # What went wrong: the first report and the top of its stack, then the summary.
        {
            grep -m1 -A10 -E '^==[0-9]+==ERROR|runtime error:|^fuzz_[a-z_]+:|assertion .* failed' \
                "$work/$t/log" || tail -n 20 "$work/$t/log"
            grep -E '^SUMMARY:' "$work/$t/log" || true
        } | sed 's/^/    /'
        for f in "$work/$t/artifacts"/*; do
            [ -e "$f" ] && echo "fuzz: $t: crashing input: $f (reproduce: $exe $f)"
        done
    fi
done

echo "fuzz: total $(($(date +%s) - start)) s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs and logs kept in $work)"
    exit 1
fi
if [ "${FUZZ_KEEP:-0}" = 1 ]; then
    echo "fuzz: logs and new inputs in $work"
else
    rm -rf "$work"
fi
