#!/bin/sh
# SPDX-License-Identifier: MIT
# Stands in for a test that a sanitizer build (-Db_sanitize=...) cannot run: the test preloads
# libarena.so, or checks the library itself, and the sanitizer runtime owns malloc in every
# process of that build. Exit 77 makes meson report it as SKIP, never as a pass.
# Usage: sanitizer_skip.sh NAME REASON
echo "$1: skipped in this sanitizer build: $2"
exit 77
