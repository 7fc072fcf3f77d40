// SPDX-License-Identifier: MIT
// The stats directory behind the golden exposition files (tests/fixtures/exporter-*.prom) and
// the arena-stat tests: live pages of four fake processes (two share a comm) with counters
// spread over several shards, plus every kind of file the readers must skip: a stale page (no
// writer holds its lock; its PID cannot exist), a truncated page, garbage, a page of another
// ABI version, and a file not named by a PID (skipped as foreign).
#pragma once

#include "fake_page.h"

#include <memory>
#include <string>
#include <vector>

namespace exptest {

/// libarena's size classes (16-byte steps to 128, then four per doubling to 32 KiB).
std::vector<uint32_t> arena_class_sizes();

/// Adds `allocs` and `frees` of size class `c` to shard `shard`.
void add_class(arena_stats_page& p, unsigned shard, unsigned c, uint64_t allocs, uint64_t frees);

/// A live page with libarena's class table, `comm` and no counters.
std::unique_ptr<testing::FakePage> blank_page(int pid, const char* comm);

struct FixtureDir {
    std::vector<std::unique_ptr<testing::FakePage>> live; // locks held while this lives
    std::string stale_path;                               // removed by the first scan
    static constexpr int kStalePid = 4194304;             // above any pid_max: never exists
};

/// Writes the fixture pages into `dir`.
FixtureDir write_fixture_pages(const std::string& dir);

} // namespace exptest
