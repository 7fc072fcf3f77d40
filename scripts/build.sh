#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Configures (once) and builds the tree in ./build. Used by test.sh and demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/build.ninja ]; then
    meson setup build
fi
meson compile -C build
