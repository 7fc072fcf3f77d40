// SPDX-License-Identifier: MIT
// Allocation at the very start of a process: a library preloaded next to libarena (before and
// after it in LD_PRELOAD) allocates from its constructor through dlsym/dlerror, calloc, realloc,
// a thread with static TLS and asprintf, before or while libarena initialises. Its blocks must be
// libarena's and stay usable.
#include "testing.h"

#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <malloc.h>

namespace {

using OwnsFn = int (*)(const void*);
using StatusFn = int (*)();
using BlockFn = void* (*)(int);

} // namespace

TEST_CASE("the process runs on libarena") {
    REQUIRE(testing::on_libarena());
}

TEST_CASE("a preloaded library's constructor allocates through libc before main") {
    auto status = reinterpret_cast<StatusFn>(dlsym(RTLD_DEFAULT, "init_probe_status"));
    auto block = reinterpret_cast<BlockFn>(dlsym(RTLD_DEFAULT, "init_probe_block"));
    auto owns = reinterpret_cast<OwnsFn>(dlsym(RTLD_DEFAULT, "arena_owns"));
    REQUIRE_MESSAGE(static_cast<bool>(status), "the init probe is not preloaded");
    REQUIRE(static_cast<bool>(block));
    REQUIRE(static_cast<bool>(owns));
    CHECK(status() == 0);
    for (int i = 0; i < 4; ++i) {
        void* p = block(i);
        REQUIRE(p != nullptr);
        CHECK_MESSAGE(owns(p) == 1, "block ", i, " is not libarena's");
        CHECK(malloc_usable_size(p) > 0);
        free(p);
    }
}
