#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The style gates CI runs (.ci/run), after the build:
#   format  clang-format --dry-run --Werror on every C/C++ file git tracks (.clang-format): any
#           difference fails; `scripts/check_style.sh --fix` rewrites the files instead
#   tidy    clang-tidy (.clang-tidy: bugprone checks and a function-size limit) on every
#           translation unit of the product (libarena, cmond, front, exporter, common, docker) in
#           build/compile_commands.json; findings are errors
#   scripts/check_style.sh [--fix] [format|tidy]...   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh style

fix=false
if [ "${1:-}" = --fix ]; then
    fix=true
    shift
fi
gates=("$@")
[ ${#gates[@]} -gt 0 ] || gates=(format tidy)

# The translation units clang-tidy reads: the product's, not the tests' and benchmarks' (their
# doctest and driver code would double the run for little).
tidy_units='^(?!.*/(tests|bench)/).*/(libarena|cmond|front|exporter|common|docker)/.*\.cc$'

status=0
for gate in "${gates[@]}"; do
    case "$gate" in
    format)
        mapfile -t files < <(git ls-files '*.cc' '*.h' '*.c' '*.cpp' '*.hpp')
        if [ "$fix" = true ]; then
            clang-format -i "${files[@]}"
        elif ! clang-format --dry-run --Werror "${files[@]}"; then
            echo "check_style: clang-format: the files above differ from .clang-format" \
                 "(scripts/check_style.sh --fix format rewrites them)" >&2
            status=1
        fi
        ;;
    tidy)
        [ -f build/compile_commands.json ] || scripts/build.sh
        fix_arg=()
        [ "$fix" = false ] || fix_arg=(-fix)
        if ! run-clang-tidy -p build -j "$(nproc)" -quiet "${fix_arg[@]}" "$tidy_units" \
                > build/clang-tidy.log 2>&1; then
            grep -E "(error|warning): " build/clang-tidy.log | sort -u >&2 || true
            echo "check_style: clang-tidy found the problems above (whole log:" \
                 "build/clang-tidy.log)" >&2
            status=1
        fi
        ;;
    *)
        echo "usage: $0 [--fix] [format|tidy]..." >&2
        exit 2
        ;;
    esac
done
[ "$status" -ne 0 ] || echo "check_style: ${gates[*]}: clean"
exit "$status"
