#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Prints the project version: project(version: ...) in the top meson.build, its only literal.
# For what builds outside meson: the image (docker build --build-arg VERSION="$(scripts/version.sh)").
set -euo pipefail
version=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" "$(dirname "$0")/../meson.build" | head -n 1)
if [ -z "$version" ]; then
    echo "version.sh: no \"version : '...'\" line in meson.build" >&2
    exit 1
fi
echo "$version"
