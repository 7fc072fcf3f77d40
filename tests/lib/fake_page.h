// SPDX-License-Identifier: MIT
// Writes stats pages by hand for reader, exporter and golden-file tests: a valid page with
// chosen counters, optionally kept "alive" (its flock held by this process, as a real writer
// does) or left stale, and malformed variants (truncated, wrong magic or version, garbage).
#pragma once

#include "arena/stats_page.h"

#include <cstdint>
#include <string>

namespace testing {

class FakePage {
public:
    /// A complete page for `pid`, all counters zero, READY set, comm "fake". Nothing is written
    /// until write().
    explicit FakePage(int pid);
    ~FakePage(); // releases the lock, keeps the file

    arena_stats_page& page() { return *page_; }
    /// Writes the page to dir/<pid>. With `alive`, keeps the file open with a shared flock
    /// held until destruction (as a live process does). Returns the path.
    std::string write(const std::string& dir, bool alive = true);
    /// Writes only the first `bytes` bytes (a truncated page).
    std::string write_truncated(const std::string& dir, size_t bytes);

    FakePage(const FakePage&) = delete;
    FakePage& operator=(const FakePage&) = delete;

private:
    arena_stats_page* page_;
    int fd_ = -1;
};

/// /proc/self/stat field 22 of this process.
uint64_t self_start_time();

} // namespace testing
