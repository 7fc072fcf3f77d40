// SPDX-License-Identifier: MIT
// Multi-threaded stress in the style of mimalloc's test-stress: threads allocate blocks of
// random sizes (mostly small, some large), write a cookie derived from the address and size into
// them, free some themselves, and swap others through a shared transfer array so that other
// threads free them (cross-thread frees). Threads are created and exit in rounds (thread churn),
// leaving live blocks behind for later threads. Every free checks the cookie first.
//
// Size: STRESS_THREADS (default 4), STRESS_ROUNDS (default 8), STRESS_ITER (default 100000)
// per thread per round. `meson test --setup=slow` runs it bigger.
#include "testing.h"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <thread>
#include <vector>

namespace {

constexpr size_t kTransfer = 1000;
std::atomic<void*> g_transfer[kTransfer];
std::atomic<uint64_t> g_corrupt{0};
std::atomic<uint64_t> g_blocks{0};

size_t env_or(const char* name, size_t def) {
    const char* v = getenv(name);
    return v != nullptr && *v != '\0' ? strtoull(v, nullptr, 10) : def;
}

size_t pick_size(uint64_t& rng) {
    const uint64_t r = testing::next_random(rng) % 1000;
    if (r < 800)
        return 1 + testing::next_random(rng) % 128; // small
    if (r < 980)
        return 129 + testing::next_random(rng) % 8000; // medium
    if (r < 998)
        return 8192 + testing::next_random(rng) % 100000;                     // up to large
    return (size_t{1} << 20) + testing::next_random(rng) % (size_t{4} << 20); // big
}

uintptr_t cookie_of(const void* p, size_t n) {
    return (reinterpret_cast<uintptr_t>(p) * 0x9e3779b97f4a7c15ull) ^ n ^ 0x5bd1e995u;
}

/// Layout: [size][cookie] ... pattern ... [cookie] at the end (when it fits).
void* make_block(uint64_t& rng) {
    size_t n = pick_size(rng);
    if (n < 16)
        n = 16;
    auto* p = static_cast<unsigned char*>(malloc(n));
    if (p == nullptr)
        return nullptr;
    const uintptr_t c = cookie_of(p, n);
    memcpy(p, &n, sizeof n);
    memcpy(p + 8, &c, sizeof c);
    if (n >= 32)
        memcpy(p + n - 8, &c, sizeof c);
    for (size_t i = 16; i + 8 < n && i < 256; ++i)
        p[i] = static_cast<unsigned char>(c >> (i % 8 * 8));
    g_blocks.fetch_add(1, std::memory_order_relaxed);
    return p;
}

void check_and_free(void* v) {
    if (v == nullptr)
        return;
    auto* p = static_cast<unsigned char*>(v);
    size_t n = 0;
    uintptr_t c = 0;
    memcpy(&n, p, sizeof n);
    memcpy(&c, p + 8, sizeof c);
    bool ok = n >= 16 && c == cookie_of(p, n) && malloc_usable_size(p) >= n;
    if (ok && n >= 32) {
        uintptr_t tail = 0;
        memcpy(&tail, p + n - 8, sizeof tail);
        ok = tail == c;
    }
    for (size_t i = 16; ok && i + 8 < n && i < 256; ++i)
        ok = p[i] == static_cast<unsigned char>(c >> (i % 8 * 8));
    if (!ok)
        g_corrupt.fetch_add(1, std::memory_order_relaxed);
    free(p);
}

void worker(uint64_t seed, size_t iters) {
    uint64_t rng = seed;
    std::vector<void*> mine;
    mine.reserve(2048);
    for (size_t i = 0; i < iters; ++i) {
        const uint64_t r = testing::next_random(rng) % 100;
        if (r < 50 || mine.empty()) {
            if (void* p = make_block(rng))
                mine.push_back(p);
        } else if (r < 85) {
            const size_t k = testing::next_random(rng) % mine.size();
            check_and_free(mine[k]);
            mine[k] = mine.back();
            mine.pop_back();
        } else {
            // Swap one of ours with a transfer slot; what we get back is another thread's.
            const size_t k = testing::next_random(rng) % mine.size();
            const size_t t = testing::next_random(rng) % kTransfer;
            void* theirs = g_transfer[t].exchange(mine[k], std::memory_order_acq_rel);
            mine[k] = mine.back();
            mine.pop_back();
            if (theirs != nullptr)
                mine.push_back(theirs);
        }
        if (mine.size() > 4000) { // bound the working set
            for (size_t k = 0; k < 1000; ++k) {
                check_and_free(mine.back());
                mine.pop_back();
            }
        }
    }
    // Leave some blocks live for other threads, free the rest.
    for (size_t k = 0; k < mine.size(); ++k) {
        if (k % 4 == 0) {
            void* old = g_transfer[testing::next_random(rng) % kTransfer].exchange(mine[k]);
            check_and_free(old);
        } else {
            check_and_free(mine[k]);
        }
    }
}

} // namespace

TEST_CASE("the process runs on libarena") {
    REQUIRE(testing::on_libarena());
}

TEST_CASE("threads, cross-thread frees and thread churn keep every block intact") {
    const size_t threads = env_or("STRESS_THREADS", 4);
    const size_t rounds = env_or("STRESS_ROUNDS", 8);
    const size_t iters = env_or("STRESS_ITER", 100000);
    for (size_t round = 0; round < rounds; ++round) {
        std::vector<std::thread> ts;
        for (size_t t = 0; t < threads; ++t)
            ts.emplace_back(worker, round * 1000 + t + 1, iters);
        for (auto& t : ts)
            t.join();
        // Short-lived threads that only allocate and exit (pure churn).
        for (uint64_t k = 0; k < 20; ++k)
            std::thread([k, round] {
                uint64_t rng = 777 + round * 100 + k;
                check_and_free(g_transfer[k].exchange(make_block(rng)));
            }).join();
    }
    for (auto& slot : g_transfer)
        check_and_free(slot.exchange(nullptr));
    CHECK(g_corrupt.load() == 0);
    CHECK(g_blocks.load() > threads * rounds * iters / 4);
    malloc_trim(0);
}
