#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The README's test command: installs what is missing, builds, runs every test suite.
#   scripts/test.sh --quick   everyday work: this tree's own suites only (meson's quick setup,
#                             tests/meson.build), a few minutes on a built tree
# Other arguments go to `meson test` (e.g. --suite unit, --setup=slow).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=false
if [ "${1:-}" = --quick ]; then
    quick=true
    shift
fi
scripts/deps.sh test
if [ "$quick" = false ]; then
    scripts/deps.sh container # podman for the container suite (it skips, saying why, without)
fi
scripts/build.sh
if [ "$quick" = true ]; then
    exec meson test -C build --print-errorlogs --setup=quick "$@"
fi
exec meson test -C build --print-errorlogs "$@"
