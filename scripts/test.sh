#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The README's test command: installs what is missing, builds, runs every test suite.
# Extra arguments go to `meson test` (e.g. --suite unit, --setup=slow).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
scripts/deps.sh container # podman for the container suite (it skips, saying why, without)
scripts/build.sh
exec meson test -C build --print-errorlogs "$@"
