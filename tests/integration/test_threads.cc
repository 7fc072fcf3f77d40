// SPDX-License-Identifier: MIT
// Thread life cycle: a thread that exits leaves its heap behind with live blocks, which other
// threads free later; new threads adopt abandoned heaps, so thread churn does not grow memory.
#include "testing.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <thread>
#include <vector>

TEST_CASE("the process runs on libarena") {
    REQUIRE(testing::on_libarena());
}

TEST_CASE("blocks of exited threads are freed by others, and the memory comes back") {
    malloc_trim(0);
    const size_t base = mallinfo2().arena;
    std::vector<void*> orphans;
    for (int round = 0; round < 8; ++round) {
        std::vector<void*> made;
        std::thread([&made] {
            for (int i = 0; i < 50000; ++i) {
                made.push_back(malloc(static_cast<size_t>(16 + i % 200)));
                memset(made.back(), 0x42, 16);
            }
        }).join();
        // The thread is gone; its blocks are freed here (remote frees into an abandoned heap).
        for (void* p : made) {
            REQUIRE(static_cast<unsigned char*>(p)[15] == 0x42);
            free(p);
        }
    }
    const size_t during = mallinfo2().arena;
    malloc_trim(0); // drains abandoned heaps, returns their empty slabs
    const size_t after = mallinfo2().arena;
    CHECK(after <= base + (4u << 20));
    CHECK(after <= during);
}

TEST_CASE("thread churn reuses heaps instead of growing") {
    // Warm up, then measure: thousands of threads that allocate and exit.
    auto churn = [](int n) {
        for (int i = 0; i < n; ++i)
            std::thread([] {
                std::vector<void*> v;
                for (int k = 0; k < 200; ++k)
                    v.push_back(malloc(static_cast<size_t>(8 + k * 13)));
                for (void* p : v)
                    free(p);
            }).join();
    };
    churn(50);
    malloc_trim(0);
    const size_t before = mallinfo2().arena;
    churn(2000);
    malloc_trim(0);
    const size_t after = mallinfo2().arena;
    CHECK(after <= before + (2u << 20));
}

TEST_CASE("many threads at once, each with its own heap, all freeing each other's blocks") {
    constexpr int kThreads = 16;
    std::vector<std::vector<void*>> blocks(kThreads);
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t)
        ts.emplace_back([&blocks, t] {
            for (int i = 0; i < 5000; ++i) {
                void* p = malloc(static_cast<size_t>(24 + (i * 7 + t) % 500));
                *static_cast<int*>(p) = t;
                blocks[static_cast<size_t>(t)].push_back(p);
            }
        });
    for (auto& th : ts)
        th.join();
    ts.clear();
    int bad = 0;
    std::atomic<int> bad_shared{0};
    for (int t = 0; t < kThreads; ++t)
        ts.emplace_back([&blocks, &bad_shared, t] {
            // Each thread frees the blocks of the next thread.
            auto& mine = blocks[static_cast<size_t>((t + 1) % kThreads)];
            for (void* p : mine) {
                if (*static_cast<int*>(p) != (t + 1) % kThreads)
                    bad_shared.fetch_add(1);
                free(p);
            }
        });
    for (auto& th : ts)
        th.join();
    bad += bad_shared.load();
    CHECK(bad == 0);
}

TEST_CASE("a thread's batched remote frees are published when it exits") {
    // One remote free: the thread's batch never moves to another slab word, so only its exit
    // publishes it.
    void* p = malloc(64);
    std::thread([p] {
        testing::own_heap();
        free(p);
    }).join();
    CHECK(testing::comes_back(p, 64));
}

TEST_CASE("a remote batch that reaches kBatchMax slots is published at once") {
    // 64-byte slots: a bitmap word covers 64 slots, one page of the slab. Find 32 blocks in one
    // page; another thread frees them (one batch: same word) and then stays alive and idle, so
    // only the batch filling up can publish them.
    std::vector<void*> made;
    std::vector<void*> word;
    for (int i = 0; i < 256 && word.size() < 32; ++i) {
        made.push_back(malloc(64));
        const auto page = [](void* q) { return reinterpret_cast<uintptr_t>(q) >> 12; };
        if (!word.empty() && page(word.front()) != page(made.back()))
            word.clear();
        word.push_back(made.back());
    }
    REQUIRE(word.size() == 32);
    {
        const testing::IdleThread freer([&word] {
            for (void* q : word)
                free(q);
        });
        CHECK(testing::comes_back(word.front(), 64));
    }
    for (void* q : made)
        if (std::find(word.begin(), word.end(), q) == word.end())
            free(q);
}

TEST_CASE("malloc_trim publishes the calling thread's batched remote frees") {
    void* p = malloc(64);
    const testing::IdleThread freer([p] {
        free(p);
        malloc_trim(0);
    });
    CHECK(testing::comes_back(p, 64));
}

TEST_CASE("the freeing thread's refill publishes its batched remote frees") {
    void* p = malloc(64);
    const testing::IdleThread freer([p] {
        free(p);
        // Another class, enough to need a new slab: the alloc_refill slow path.
        std::vector<void*> v;
        for (int i = 0; i < 2000; ++i)
            v.push_back(malloc(500));
        for (void* q : v)
            free(q);
    });
    CHECK(testing::comes_back(p, 64));
}
