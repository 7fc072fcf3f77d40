// SPDX-License-Identifier: MIT
// Stats pages and processes made by hand, for the tests of the readers (client library,
// exporter, cmond): a complete v2 page with chosen counters written where a writer would put it
// (<base>/<uid>/<pid>, stats_page.h), and a fake procfs (ScanOptions::procfs) in which such a
// page's process is "alive" (same pid and start time) or not. A page is valid to a reader only
// with its process: FakePage defaults to start time 12345, so FakeProc::add(pid, 12345, ...)
// makes it live.
#pragma once

#include "arena/stats_page.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <unistd.h>

namespace testing {

/// A fake procfs under `root` for ScanOptions::procfs: <root>/<pid>/stat (with the comm and
/// field 22, the start time, as the kernel writes them) and <root>/<pid>/status (a "Uid:" line),
/// as the reader reads them. Nothing is removed at destruction (the test's temp dir is).
class FakeProc {
public:
    /// Creates `root` (and its parents) if missing.
    explicit FakeProc(std::string root);

    /// Adds (or replaces) process `pid` with all four uids (real, effective, saved, fs) `uid`.
    void add(int pid, uint64_t start_time, const std::string& comm, uid_t uid = geteuid());
    /// The same with each uid given: the Uid: line is "ruid euid suid fsuid".
    void add(int pid, uint64_t start_time, const std::string& comm, uid_t ruid, uid_t euid,
             uid_t suid, uid_t fsuid);
    /// Gives process `pid` an auxiliary vector (<root>/<pid>/auxv) with AT_ENTRY `entry` and
    /// AT_RANDOM `random`: a page whose exec_entry/exec_random differ was made before an exec.
    void set_auxv(int pid, uint64_t entry, uint64_t random);
    /// Removes process `pid` (its directory and what is in it).
    void remove(int pid);

    const std::string& root() const { return root_; }
    /// <root>/<pid>: where a test puts more files (auxv, ns/pid) for that process.
    std::string dir(int pid) const { return root_ + "/" + std::to_string(pid); }

private:
    std::string root_;
};

/// A complete v2 page for `pid`: READY, start_time 12345, comm "fake", cmdline
/// "fake --workload", nclasses 4 (16, 32, 48, 64 bytes), shards_used all, uid geteuid(),
/// exec identity and PID namespace unknown (0: readers skip those checks), counters zero. Nothing
/// is written until write().
class FakePage {
public:
    explicit FakePage(int pid);
    FakePage(const FakePage& other);
    FakePage& operator=(const FakePage& other);

    arena_stats_page& page() { return *page_; }
    const arena_stats_page& page() const { return *page_; }
    arena_stats_head& head() { return page_->head; }

    /// Writes <base>/<geteuid()>/<pid> (making <base> 01777 and <base>/<uid> 0700 if missing),
    /// mode 0600, as a new file (a file or link already there is removed first). Returns the
    /// path, or "" when it could not be written.
    std::string write(const std::string& base) const;
    /// The same, only the first `bytes` bytes.
    std::string write_truncated(const std::string& base, size_t bytes) const;
    /// The same, the whole page followed by `tail` (what a process puts after its page: a heap
    /// profile region, profile_fixture.h).
    std::string write(const std::string& base, std::string_view tail) const;
    /// The user directory write() uses: <base>/<geteuid()>.
    static std::string user_dir(const std::string& base);

private:
    std::string write_file(const std::string& base, size_t bytes, std::string_view tail) const;

    std::unique_ptr<arena_stats_page> page_;
};

/// /proc/self/stat field 22 of this process (its start time in clock ticks), or 0.
uint64_t self_start_time();

/// A page of this very process, as its libarena would make it: its pid, start time, exec
/// identity (AT_ENTRY, AT_RANDOM) and PID namespace; valid to a reader of the real /proc.
FakePage self_page();

} // namespace testing
