#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Sanitizer runs (issue 15): two build directories of their own, each configured once, built for
# what its suites need, and run.
#
#   asan  build-asan, -Db_sanitize=address,undefined: the suites unit, cmond, exporter and client.
#         UBSan findings are fatal (-fno-sanitize-recover=all, UBSAN_OPTIONS=halt_on_error=1);
#         LeakSanitizer runs too (detect_leaks=1). Nothing runs on libarena there (the
#         sanitizer owns malloc): the preloaded tests and libarena-deps are registered as skips
#         (exit 77, tests/meson.build), as are cmond_arena_http's libarena cases.
#   tsan  build-tsan, -Db_sanitize=thread: the unit suite, whose heap-threads test runs libarena's
#         heaps, remote frees, trims and the purger's step from threads (tests/unit/
#         test_heap_threads.cc); TSAN_OPTIONS=halt_on_error=1.
#
#   scripts/check_sanitize.sh [asan|tsan]...     (default: both)
#
# Directories: $ASAN_BUILD (default build-asan), $TSAN_BUILD (default build-tsan). Exits non-zero
# when a build or any test fails; skips are listed, not counted as passes. Builds run under
# `nice -n 10`. Not part of scripts/test.sh; CI calls it on its own.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

runs=("$@")
[ ${#runs[@]} -eq 0 ] && runs=(asan tsan)
for r in "${runs[@]}"; do
    case "$r" in
    asan | tsan) ;;
    *) echo "usage: $0 [asan|tsan]..." >&2; exit 2 ;;
    esac
done

scripts/deps.sh sanitize

declare -A dir suites env want
dir[asan]=${ASAN_BUILD:-build-asan}
want[asan]=address,undefined
suites[asan]="unit cmond exporter client"
env[asan]="ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1"
dir[tsan]=${TSAN_BUILD:-build-tsan}
want[tsan]=thread
suites[tsan]="unit"
env[tsan]="TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1"

setup() { # setup asan|tsan DIR
    local flags=-fno-omit-frame-pointer
    [ "$1" = asan ] && flags="-fno-sanitize-recover=all $flags"
    meson setup "$2" -Db_sanitize="${want[$1]}" -Db_lundef=false -Dbench=false \
        -Dbuildtype=debugoptimized -Dcpp_args="$flags" >"$root/$2.setup.log" 2>&1 ||
        { cat "$root/$2.setup.log"; return 1; }
    rm -f "$root/$2.setup.log"
}

# The sanitizer a directory was configured with ('' when it is not configured).
configured_sanitizer() {
    [ -f "$1/meson-private/coredata.dat" ] || return 0
    meson introspect --buildoptions "$1" | python3 -c 'import json, sys
print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "b_sanitize"))'
}

# The files (relative to the build directory) that the tests of the given suites run or depend on.
targets_for() {
    local build=$1
    shift
    python3 - "$build" "$@" <<'EOF'
import json, os, subprocess, sys
build, want = sys.argv[1], set(sys.argv[2:])
intro = lambda what: json.loads(subprocess.check_output(["meson", "introspect", what, build]))
by_id = {t["id"]: t for t in intro("--targets")}
out = set()
for test in intro("--tests"):
    if not want.intersection(s.split(":")[-1] for s in test["suite"]):
        continue
    files = [test["cmd"][0]]
    for dep in test["depends"]:
        if dep in by_id:
            files += by_id[dep]["filename"]
    for f in files:
        f = os.path.abspath(f)
        if f.startswith(os.path.abspath(build) + os.sep):
            out.add(os.path.relpath(f, build))
print("\n".join(sorted(out)))
EOF
}

declare -A result
failed=0
start_all=$(date +%s)
for r in "${runs[@]}"; do
    build=${dir[$r]}
    start=$(date +%s)
    have=$(configured_sanitizer "$build")
    if [ -z "$have" ]; then
        echo "== $r: configuring $build"
        setup "$r" "$build"
    elif [ "$have" != "${want[$r]}" ]; then
        echo "check_sanitize: $build is configured with b_sanitize=$have, not ${want[$r]}" >&2
        exit 2
    fi
    # The test list is meson's introspection data: brought up to date first (a meson.build may
    # have changed since the last build).
    nice -n 10 ninja -C "$build" build.ninja >"$build/check_sanitize-build.log" 2>&1 ||
        { cat "$build/check_sanitize-build.log"; exit 1; }
    # shellcheck disable=SC2086
    mapfile -t files < <(targets_for "$build" ${suites[$r]})
    echo "== $r: building ${#files[@]} targets in $build"
    if ! nice -n 10 ninja -C "$build" "${files[@]}" >"$build/check_sanitize-build.log" 2>&1; then
        tail -n 40 "$build/check_sanitize-build.log"
        result[$r]="BUILD FAILED (log: $build/check_sanitize-build.log)"
        failed=1
        continue
    fi
    suite_args=()
    for s in ${suites[$r]}; do suite_args+=(--suite "$s"); done
    echo "== $r: meson test ${suite_args[*]}"
    log="$build/meson-logs/testlog.txt"
    status=0
    # shellcheck disable=SC2086
    env ${env[$r]} meson test -C "$build" --no-rebuild --print-errorlogs "${suite_args[@]}" \
        >"$build/check_sanitize-test.log" 2>&1 || status=$?
    grep -E '^ *[0-9]+/[0-9]+ ' "$build/check_sanitize-test.log" | grep -vE ' OK +[0-9.]+s$' |
        awk '!seen[$0]++' || true
    counts=$(grep -E '^(Ok|Expected Fail|Fail|Unexpected Pass|Skipped|Timeout): ' \
        "$build/check_sanitize-test.log" |
        awk -F': *' '{ gsub(/ +$/, "", $2) }
                     $2 != "0" || $1 == "Ok" || $1 == "Fail" { printf "%s %s, ", $1, $2 }' ||
        true)
    [ -n "$counts" ] || { tail -n 5 "$build/check_sanitize-test.log"; status=1; }
    if [ "$status" -ne 0 ]; then
        findings='ERROR: (Address|Leak)Sanitizer|runtime error:|WARNING: ThreadSanitizer|SUMMARY: '
        grep -E "$findings" "$log" | sort | uniq -c | head -n 20 || true
        result[$r]="FAILED: ${counts%, } (logs: $build/check_sanitize-test.log, $log)"
        failed=1
    else
        result[$r]="ok: ${counts%, }"
    fi
    result[$r]+=" [$(($(date +%s) - start)) s]"
done

echo
echo "== sanitizer runs ($(($(date +%s) - start_all)) s)"
for r in "${runs[@]}"; do
    printf '  %-5s %-12s %s\n' "$r" "${dir[$r]}" "${result[$r]}"
done
exit $failed
