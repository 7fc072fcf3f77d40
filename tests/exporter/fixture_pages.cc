// SPDX-License-Identifier: MIT
#include "fixture_pages.h"

#include "arena/profile_page.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sys/stat.h>
#include <unistd.h>

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
    arena_stats_head& h = page->head();
    const std::vector<uint32_t> sizes = arena_class_sizes();
    h.nclasses = static_cast<uint32_t>(sizes.size());
    for (size_t c = 0; c < sizes.size(); ++c)
        h.class_size[c] = sizes[c];
    std::memset(h.comm, 0, sizeof h.comm);
    std::strncpy(h.comm, comm, sizeof h.comm - 1);
    std::snprintf(h.cmdline, sizeof h.cmdline, "/usr/bin/%s --serve", comm);
    h.created_unix_ns = 1700000000000000000ull + static_cast<uint64_t>(pid) * 1000000000ull;
    h.global.gauges[ARENA_G_purge_delay_ms] = 10000;
    return page;
}

Place::Place(const std::string& dir) : base(dir + "/stats"), proc(dir + "/proc") {}

std::string Place::add_live(const testing::FakePage& page) {
    const arena_stats_head& h = page.page().head;
    proc.add(h.pid, h.start_time, std::string(h.comm, strnlen(h.comm, sizeof h.comm)));
    return page.write(base);
}

std::string Place::page_path(int pid) const {
    return testing::FakePage::user_dir(base) + "/" + std::to_string(pid);
}

std::vector<std::string> Place::args() const {
    return {"--stats-dir", base, "--path.procfs", proc.root()};
}

arena::client::ScanOptions Place::options() const {
    arena::client::ScanOptions o;
    o.procfs = proc.root();
    return o;
}

namespace {

uint64_t& gauge(arena_stats_page& p, arena_stats_gauge g) {
    return p.head.global.gauges[g];
}

void events(arena_stats_page& p, unsigned shard,
            std::initializer_list<std::pair<arena_stats_event, uint64_t>> evs) {
    for (const auto& [e, v] : evs)
        p.shards[shard].events[e] += v;
}

} // namespace

std::unique_ptr<FixtureDir> write_fixture_pages(const std::string& dir) {
    auto fixture = std::make_unique<FixtureDir>(dir);
    FixtureDir& f = *fixture;
    Place& place = f.place;

    // 1001 web: three threads' shards plus cross-thread frees in the shared shard 0; profiled.
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
        gauge(p, ARENA_G_reserved_bytes) = 1ull << 30;
        gauge(p, ARENA_G_committed_bytes) = 4ull << 20;
        gauge(p, ARENA_G_resident_bytes) = 3ull << 20;
        gauge(p, ARENA_G_purged_bytes) = 8ull << 20;
        gauge(p, ARENA_G_purges) = 4;
        gauge(p, ARENA_G_trims) = 1;
        gauge(p, ARENA_G_regions) = 1;
        gauge(p, ARENA_G_heaps_active) = 3;
        gauge(p, ARENA_G_heaps_abandoned) = 1;
        gauge(p, ARENA_G_peak_live_bytes) = 2ull << 20;
        // Heap profiling on at the default rate, 37 allocations sampled so far.
        gauge(p, ARENA_G_profiling) = 1;
        gauge(p, ARENA_G_profile_rate) = ARENA_PROFILE_DEFAULT_RATE;
        gauge(p, ARENA_G_profile_samples) = 37;
        gauge(p, ARENA_G_profile_sampled_bytes) = 151552;
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
        gauge(p, ARENA_G_reserved_bytes) = 1ull << 30;
        gauge(p, ARENA_G_committed_bytes) = 1ull << 20;
        gauge(p, ARENA_G_resident_bytes) = 512ull << 10;
        gauge(p, ARENA_G_heaps_active) = 1;
        gauge(p, ARENA_G_peak_live_bytes) = 4096;
        gauge(p, ARENA_G_double_frees) = 1;
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
        gauge(p, ARENA_G_reserved_bytes) = 1ull << 30;
        gauge(p, ARENA_G_committed_bytes) = 3 * 102400;
        gauge(p, ARENA_G_resident_bytes) = 3 * 102400;
        gauge(p, ARENA_G_heaps_active) = 1;
        gauge(p, ARENA_G_peak_live_bytes) = 4 * 102400;
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
        gauge(p, ARENA_G_reserved_bytes) = 2ull << 30;
        gauge(p, ARENA_G_committed_bytes) = 2ull << 20;
        gauge(p, ARENA_G_resident_bytes) = 1ull << 20;
        gauge(p, ARENA_G_heaps_active) = 2;
        gauge(p, ARENA_G_peak_live_bytes) = 20 * 32768;
        gauge(p, ARENA_G_invalid_frees) = 2;
        gauge(p, ARENA_G_purge_delay_ms) = -1;
    }
    for (auto* page : {&web1, &web2, &worker, &batch})
        place.add_live(**page);

    // Dead: a page whose process does not exist (its pid cannot).
    f.stale_path = blank_page(FixtureDir::kStalePid, "gone")->write(place.base);

    // Reused: the pid is alive, but its process started at another time.
    f.reused_path = blank_page(FixtureDir::kReusedPid, "old")->write(place.base);
    place.proc.add(FixtureDir::kReusedPid, 99999, "new");

    // Truncated: only the first 100 bytes of a head.
    auto truncated = blank_page(1005, "cut");
    place.proc.add(1005, truncated->head().start_time, "cut");
    truncated->write_truncated(place.base, 100);

    // Garbage of a page's size, named by a live pid.
    place.proc.add(1006, 12345, "noise");
    {
        std::ofstream garbage(place.page_path(1006), std::ios::binary);
        for (unsigned i = 0; i < sizeof(arena_stats_page); ++i)
            garbage.put(static_cast<char>((i * 131u + 7u) & 0xff));
    }
    chmod(place.page_path(1006).c_str(), 0600);

    // A page of another ABI version.
    auto future = blank_page(1007, "future");
    future->head().version = ARENA_STATS_VERSION + 1;
    place.add_live(*future);

    // Forged: the file 1009 holds the page of pid 1010 (both processes alive).
    auto forged = blank_page(1010, "forger");
    place.proc.add(1010, forged->head().start_time, "forger");
    place.proc.add(1009, forged->head().start_time, "victim");
    rename(forged->write(place.base).c_str(), place.page_path(1009).c_str());

    // Being made: READY not set yet.
    auto unready = blank_page(1011, "early");
    unready->head().flags = 0;
    place.add_live(*unready);

    // Not named by a pid: skipped as foreign.
    std::ofstream(testing::FakePage::user_dir(place.base) + "/README").put('x');
    return fixture;
}

} // namespace exptest
