// SPDX-License-Identifier: MIT
// The one reader of libarena stats pages (include/arena/stats_page.h), shared by arena-exporter,
// arena-stat and cmond. It validates every file before trusting it (magic, version, sizes,
// readiness), takes consistent snapshots (the page's seqlock and free-before-alloc order),
// recognises stale pages (no live writer holds the file's lock: the process died, or its PID
// was reused) and removes them, and counts every file it skipped, by reason. It never crashes
// on a garbage, truncated or foreign file.
//
// Thread-safety: the functions keep no state; call them from any thread.
#pragma once

#include "arena/stats_page.h"

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace arena::stats {

/// Why a file of the stats directory was not reported.
enum class Skip : unsigned {
    Foreign,    // not a page: the name is not a PID, or not a regular file
    Unreadable, // open or fstat failed (permissions, vanished meanwhile)
    Truncated,  // shorter than its header says, or than a header
    BadMagic,   // not a stats page
    BadVersion, // a page of another ABI version
    BadSize,    // header sizes do not match this version's layout
    NotReady,   // being created: the READY flag is not set yet
    Dead,       // stale: no live writer and no such process
    PidReused,  // stale: no live writer, and the PID now belongs to another process
    Count
};

/// Prometheus-label-friendly name: "foreign", "unreadable", "truncated", "bad_magic", ...
const char* skip_name(Skip why);

struct SizeClass {
    uint32_t size;   // slot size, bytes
    uint64_t allocs; // slots handed out
    uint64_t frees;  // slots freed
};

/// One process's counters at one moment.
struct Process {
    int pid = 0;
    uint64_t start_time = 0;      // clock ticks after boot
    uint64_t created_unix_ns = 0; // when the page was created
    std::string comm;
    std::string cmdline;
    std::string path;
    uint32_t page_size = 0;
    std::array<uint64_t, ARENA_EV_COUNT> events{}; // summed over all shards
    std::vector<SizeClass> classes;
    arena_stats_global global{};   // consistent copy (seqlock); peak_live_bytes is at least
                                   // live_bytes()
    arena_stats_control control{}; // as last written

    uint64_t event(arena_stats_event e) const { return events[e]; }
    /// Bytes in live blocks: small slots at their class size plus large blocks.
    uint64_t live_bytes() const;
    /// Live blocks: small slots plus large blocks.
    uint64_t live_blocks() const;
};

struct Scan {
    std::vector<Process> processes;                  // sorted by pid
    std::array<uint64_t, size_t(Skip::Count)> skipped{}; // files skipped, by reason
    std::vector<std::string> removed;                // stale pages deleted by this scan
    std::string error;                               // the directory itself could not be read
};

struct ScanOptions {
    bool remove_stale = true; // delete pages without a live writer (needs write access)
};

/// Reads one page. On failure returns nullopt and sets *why (if not null). Does not remove.
std::optional<Process> read_page(const std::string& path, Skip* why = nullptr);

/// Reads every page in `dir`. Files named by a PID are pages; names starting with '.' are pages
/// being created and are ignored; anything else is skipped as Foreign.
Scan scan(const std::string& dir, const ScanOptions& options = {});

/// Why a control request was not made.
enum class ControlError {
    None,       // done
    Invalid,    // a bad argument (pid, delay out of range)
    NoPage,     // no stats page for the pid
    Permission, // the page belongs to another user
    Stale,      // the page's process is gone
    Io,         // anything else (not a valid page, mapping failed)
};

struct ControlResult {
    ControlError error = ControlError::None;
    std::string detail; // a sentence for people, empty on success
    bool ok() const { return error == ControlError::None; }
};

/// Asks the process `pid` to trim (malloc_trim(0)) on its next allocator slow path.
ControlResult request_trim(const std::string& dir, int pid);

/// Asks the process `pid` to use a new purge delay (-1 .. 3600000 ms).
ControlResult request_purge_delay(const std::string& dir, int pid, int64_t ms);

/// $ARENA_STATS_DIR, or the default directory.
std::string default_dir();

/// Name and help text of every event counter, indexed by arena_stats_event.
struct EventInfo {
    const char* name;
    const char* help;
};
extern const EventInfo kEvents[ARENA_EV_COUNT];

} // namespace arena::stats
