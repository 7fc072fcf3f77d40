#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Configures (once) and builds the tree in ./build. Used by test.sh and demo.sh.
# CMON_WERROR=1 (CI sets it: .ci/run) makes every compiler warning an error.
set -euo pipefail
cd "$(dirname "$0")/.."
werror=false
if [ "${CMON_WERROR:-0}" = 1 ]; then
    werror=true
fi
if [ ! -f build/build.ninja ]; then
    meson setup build -Dwerror="$werror"
elif [ "$werror" = true ]; then
    meson configure build -Dwerror=true
fi
meson compile -C build
