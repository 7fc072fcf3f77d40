// SPDX-License-Identifier: MIT
#include "fixture_pages.h"

#include <cstdio>
#include <cstring>
#include <fstream>

namespace exptest {

std::vector<uint32_t> arena_class_sizes() {
    std::vector<uint32_t> sizes;
    for (uint32_t s = 16; s <= 128; s += 16)
        sizes.push_back(s);
    for (uint32_t k = 128; k < 32768; k *= 2)
        for (uint32_t j = 1; j <= 4; ++j)
            sizes.push_back(k + j * (k / 4));
    return sizes; // 40 classes, the last 32768
}

void add_class(arena_stats_page& p, unsigned shard, unsigned c, uint64_t allocs, uint64_t frees) {
    p.shards[shard].class_alloc[c] += allocs;
    p.shards[shard].class_free[c] += frees;
}

std::unique_ptr<testing::FakePage> blank_page(int pid, const char* comm) {
    auto page = std::make_unique<testing::FakePage>(pid);
    arena_stats_page& p = page->page();
    const std::vector<uint32_t> sizes = arena_class_sizes();
    p.nclasses = static_cast<uint32_t>(sizes.size());
    for (size_t c = 0; c < sizes.size(); ++c)
        p.class_size[c] = sizes[c];
    std::memset(p.comm, 0, sizeof p.comm);
    std::strncpy(p.comm, comm, sizeof p.comm - 1);
    std::snprintf(p.cmdline, sizeof p.cmdline, "/usr/bin/%s --serve", comm);
    p.created_unix_ns = 1700000000000000000ull + static_cast<uint64_t>(pid) * 1000000000ull;
    p.global.purge_delay_ms = 10000;
    return page;
}

namespace {

void events(arena_stats_page& p, unsigned shard,
            std::initializer_list<std::pair<arena_stats_event, uint64_t>> evs) {
    for (const auto& [e, v] : evs)
        p.shards[shard].events[e] += v;
}

} // namespace

FixtureDir write_fixture_pages(const std::string& dir) {
    FixtureDir f;

    // 1001 web: three threads' shards plus cross-thread frees in the shared shard 0.
    auto web1 = blank_page(1001, "web");
    {
        arena_stats_page& p = web1->page();
        events(p, 1,
               {{ARENA_EV_malloc_calls, 1000},
                {ARENA_EV_free_calls, 800},
                {ARENA_EV_new_calls, 50},
                {ARENA_EV_delete_calls, 40},
                {ARENA_EV_calloc_calls, 10},
                {ARENA_EV_realloc_calls, 5},
                {ARENA_EV_aligned_calls, 2},
                {ARENA_EV_bytes_requested, 100000},
                {ARENA_EV_large_allocs, 3},
                {ARENA_EV_large_frees, 1},
                {ARENA_EV_large_alloc_bytes, 3 * 65536},
                {ARENA_EV_large_free_bytes, 65536}});
        events(p, 2,
               {{ARENA_EV_malloc_calls, 500},
                {ARENA_EV_free_calls, 430},
                {ARENA_EV_bytes_requested, 50000}});
        events(p, 0, {{ARENA_EV_free_calls, 20}});
        add_class(p, 1, 0, 600, 500); // 16 B
        add_class(p, 2, 0, 300, 290);
        add_class(p, 0, 0, 0, 10);     // 16 B: live 100
        add_class(p, 1, 3, 200, 150);  // 64 B: live 50
        add_class(p, 2, 8, 100, 100);  // 160 B: none live
        add_class(p, 1, 15, 364, 314); // 512 B: live 50
        p.global.reserved_bytes = 1ull << 30;
        p.global.committed_bytes = 4ull << 20;
        p.global.resident_bytes = 3ull << 20;
        p.global.purged_bytes = 8ull << 20;
        p.global.purges = 4;
        p.global.trims = 1;
        p.global.regions = 1;
        p.global.heaps_active = 3;
        p.global.heaps_abandoned = 1;
        p.global.peak_live_bytes = 2ull << 20;
    }

    // 1002 web: one thread, a double free caught.
    auto web2 = blank_page(1002, "web");
    {
        arena_stats_page& p = web2->page();
        events(p, 1,
               {{ARENA_EV_malloc_calls, 300},
                {ARENA_EV_free_calls, 290},
                {ARENA_EV_bytes_requested, 9000}});
        add_class(p, 1, 1, 200, 195); // 32 B: live 5
        add_class(p, 1, 4, 100, 95);  // 80 B: live 5
        p.global.reserved_bytes = 1ull << 30;
        p.global.committed_bytes = 1ull << 20;
        p.global.resident_bytes = 512ull << 10;
        p.global.heaps_active = 1;
        p.global.peak_live_bytes = 4096;
        p.global.double_frees = 1;
    }

    // 1003 worker: large blocks only (C++).
    auto worker = blank_page(1003, "worker");
    {
        arena_stats_page& p = worker->page();
        events(p, 1,
               {{ARENA_EV_new_calls, 4},
                {ARENA_EV_delete_calls, 1},
                {ARENA_EV_bytes_requested, 4 * 100000},
                {ARENA_EV_large_allocs, 4},
                {ARENA_EV_large_frees, 1},
                {ARENA_EV_large_alloc_bytes, 4 * 102400},
                {ARENA_EV_large_free_bytes, 102400}});
        p.global.reserved_bytes = 1ull << 30;
        p.global.committed_bytes = 3 * 102400;
        p.global.resident_bytes = 3 * 102400;
        p.global.heaps_active = 1;
        p.global.peak_live_bytes = 4 * 102400;
    }

    // 1004 batch: heap errors, a failed allocation, foreign frees, the largest class.
    auto batch = blank_page(1004, "batch");
    {
        arena_stats_page& p = batch->page();
        events(p, 1,
               {{ARENA_EV_malloc_calls, 40},
                {ARENA_EV_free_calls, 37},
                {ARENA_EV_bytes_requested, 700000},
                {ARENA_EV_failed_allocs, 1},
                {ARENA_EV_foreign_frees, 5}});
        add_class(p, 1, 39, 20, 18); // 32768 B: live 2
        add_class(p, 1, 12, 19, 19); // 320 B
        p.global.reserved_bytes = 2ull << 30;
        p.global.committed_bytes = 2ull << 20;
        p.global.resident_bytes = 1ull << 20;
        p.global.heaps_active = 2;
        p.global.peak_live_bytes = 20 * 32768;
        p.global.invalid_frees = 2;
        p.global.purge_delay_ms = -1;
    }
    for (auto* page : {&web1, &web2, &worker, &batch}) {
        (*page)->write(dir, true);
        f.live.push_back(std::move(*page));
    }

    // Stale: nobody holds its lock, and no process can have its PID.
    auto stale = blank_page(FixtureDir::kStalePid, "gone");
    f.stale_path = stale->write(dir, false);

    // Truncated: only the first 100 bytes of a header.
    auto truncated = blank_page(1005, "cut");
    truncated->write_truncated(dir, 100);
    f.live.push_back(std::move(truncated));

    // Garbage named by a PID.
    {
        std::ofstream garbage(dir + "/1006", std::ios::binary);
        for (unsigned i = 0; i < 3000; ++i)
            garbage.put(static_cast<char>((i * 131u + 7u) & 0xff));
    }

    // A page of another ABI version.
    auto v2 = blank_page(1007, "future");
    v2->page().version = ARENA_STATS_VERSION + 1;
    v2->write(dir, true);
    f.live.push_back(std::move(v2));

    // Not named by a PID: skipped as foreign.
    std::ofstream(dir + "/README").put('x');
    return f;
}

} // namespace exptest
