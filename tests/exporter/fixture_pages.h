// SPDX-License-Identifier: MIT
// The stats directory behind the golden exposition files (tests/fixtures/exporter-*.prom) and
// the arena-stat tests: a base directory of v2 pages (<base>/<uid>/<pid>) beside a fake procfs
// (testing::FakeProc) that makes their processes live. Four live processes (two share a comm)
// with counters spread over several shards, plus entries the reader must skip:
// a dead process's page, a page whose pid was reused, a truncated page, garbage, a page of
// another ABI version, one not ready, a forged one (its pid is not its name) and a file not
// named by a pid.
#pragma once

#include "fake_page.h"
#include "reader.h"

#include <memory>
#include <string>
#include <vector>

namespace exptest {

/// libarena's size classes (16-byte steps to 128, then four per doubling to 32 KiB).
std::vector<uint32_t> arena_class_sizes();

/// Adds `allocs` and `frees` of size class `c` to shard `shard`.
void add_class(arena_stats_page& p, unsigned shard, unsigned c, uint64_t allocs, uint64_t frees);

/// A page with libarena's class table, `comm` and no counters (not written yet).
std::unique_ptr<testing::FakePage> blank_page(int pid, const char* comm);

/// A stats base and a fake procfs side by side: <dir>/stats and <dir>/proc.
struct Place {
    std::string base;
    testing::FakeProc proc;

    explicit Place(const std::string& dir);
    /// Writes `page` and adds its process to the fake procfs (alive, with the page's start
    /// time and comm). Returns the page's path.
    std::string add_live(const testing::FakePage& page);
    /// The page's file under base for `pid` (this user's directory).
    std::string page_path(int pid) const;
    /// --stats-dir BASE --path.procfs PROC, for arena-exporter and arena-stat.
    std::vector<std::string> args() const;
    /// The reader's options for the fake procfs.
    arena::client::ScanOptions options() const;
};

struct FixtureDir {
    Place place;
    std::string stale_path;                   // a dead process's page: removed by a scan
    std::string reused_path;                  // a page whose pid was reused: removed by a scan
    static constexpr int kStalePid = 4194304; // above any pid_max: never a real process
    static constexpr int kReusedPid = 1008;

    explicit FixtureDir(const std::string& dir) : place(dir) {}
};

/// Writes the fixture pages into <dir>/stats, their processes into <dir>/proc.
std::unique_ptr<FixtureDir> write_fixture_pages(const std::string& dir);

} // namespace exptest
