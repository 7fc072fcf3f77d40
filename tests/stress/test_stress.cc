// SPDX-License-Identifier: MIT
// Multi-threaded stress in the style of mimalloc's test-stress (tests/lib/cookie_stress.h) on the
// process's malloc, libarena preloaded: random sizes, cookies checked on every free, cross-thread
// frees through a transfer array, and rounds of thread churn that leave blocks live behind them.
//
// Size: STRESS_THREADS (default 4), STRESS_ROUNDS (default 8), STRESS_ITER (default 100000)
// per thread per round. `meson test --setup=slow` runs it bigger.
#include "cookie_stress.h"
#include "testing.h"

#include <doctest/doctest.h>

#include <cstdlib>
#include <malloc.h>

namespace {

/// The process's malloc: libarena, preloaded.
struct ProcessMalloc {
    static void* malloc(size_t n) { return ::malloc(n); }
    static void free(void* p) { ::free(p); }
    static size_t usable_size(void* p) { return malloc_usable_size(p); }
};

} // namespace

TEST_CASE("the process runs on libarena") {
    REQUIRE(testing::on_libarena());
}

TEST_CASE("threads, cross-thread frees and thread churn keep every block intact") {
    const size_t threads = testing::env_or("STRESS_THREADS", 4);
    const size_t rounds = testing::env_or("STRESS_ROUNDS", 8);
    const size_t iters = testing::env_or("STRESS_ITER", 100000);
    testing::CookieStress<ProcessMalloc> stress;
    for (size_t round = 0; round < rounds; ++round)
        stress.round(round, threads, iters, 20);
    stress.drain();
    CHECK(stress.corrupt() == 0);
    CHECK(stress.blocks() > threads * rounds * iters / 4);
    malloc_trim(0);
}
