// SPDX-License-Identifier: MIT
// The one doctest main of every test program, with `--child=NAME` for tests that must run code
// in a fresh process (testing.h).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "testing.h"

#include <cstring>

int main(int argc, char** argv) {
    if (argc >= 2 && strncmp(argv[1], "--child=", 8) == 0)
        return testing::run_registered_child(argv[1] + 8);
    doctest::Context context(argc, argv);
    return context.run();
}
