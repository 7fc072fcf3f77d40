// SPDX-License-Identifier: MIT
// The seam between cmond and the allocator's stats pages (libarena's reader library).
//
// cmond's /arena routes (arena_routes.h) and the arena_* part of /metrics (arena_collector.h)
// see the stats pages only through this interface. cmond ships no implementation: until the
// reader library exists, main.cc passes no ArenaSource to the Server, which then registers no
// /arena route and exports no arena_* series (no placeholder data, ever).
//
// To plug in the reader: implement ArenaSource over it (list/get read the pages, skipping and
// cleaning up pages of dead processes and guarding against PID reuse with start_time; trim
// writes the control area), construct it in main.cc, and pass it to the Server constructor.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace cmond {

/// One scalar of a stats page.
struct ArenaCounter {
    enum class Kind { Counter, Gauge };
    std::string name; // metric-name safe, no prefix: "bytes_live" is exported as arena_bytes_live
    std::string help; // one sentence ending in a full stop
    Kind kind = Kind::Gauge;
    double value = 0;
};

/// One histogram of a stats page (e.g. allocation sizes), in Prometheus form.
struct ArenaHistogram {
    std::string name; // "allocation_size_bytes" -> arena_allocation_size_bytes
    std::string help;
    std::vector<double> upper_bounds;  // increasing; +Inf is implied after the last
    std::vector<std::uint64_t> counts; // cumulative, upper_bounds.size() + 1 entries (+Inf last)
    double sum = 0;
};

/// A consistent snapshot of one process's stats page.
struct ProcessStats {
    pid_t pid = 0;
    std::uint64_t start_time = 0; // /proc/<pid>/stat field 22 (clock ticks since boot)
    std::string comm;             // short name (label value)
    std::string cmdline;          // for humans; not a label
    std::vector<ArenaCounter> counters;
    std::vector<ArenaHistogram> histograms;
};

enum class TrimStatus {
    Requested,        // the control area now asks the allocator to trim
    NoSuchProcess,    // no live stats page for that pid
    PermissionDenied, // the control area is not writable by cmond's user
    Failed,           // anything else; see detail
};

struct TrimResult {
    TrimStatus status = TrimStatus::Failed;
    std::string detail; // human-readable; goes into the JSON message
};

/// Access to the stats pages of every process. Implementations must be thread-safe: HTTP worker
/// threads call these concurrently.
class ArenaSource {
public:
    virtual ~ArenaSource() = default;

    /// Every process with a live stats page, sorted by pid.
    virtual std::vector<ProcessStats> list() = 0;

    /// One process's snapshot, or nullopt when it has no live stats page.
    virtual std::optional<ProcessStats> get(pid_t pid) = 0;

    /// Asks the allocator of `pid` to trim now (through the page's control area).
    virtual TrimResult trim(pid_t pid) = 0;
};

} // namespace cmond
