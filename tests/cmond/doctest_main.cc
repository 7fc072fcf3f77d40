// SPDX-License-Identifier: MIT
// The doctest runner, compiled once for every cmond test binary.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
