// SPDX-License-Identifier: MIT
// ArenaCollector: the libarena stats pages under a base directory as Prometheus metric families.
//
// It is a prometheus::Collectable: an Exposer (prometheus-cpp pull) can register it, or its
// Collect() result can be fed to prometheus::TextSerializer directly (arena-exporter does).
// Every Collect() scans afresh with the reader (nothing is cached between scrapes; stale pages
// are removed as the reader does) and returns the per-process `arena_*` families of schema.h
// followed by the collector's own `<self_prefix>_*` families (scrape duration, success and
// truncation, pages read and skipped by reason, stale pages removed, build info).
//
// Use in another program (cmond): construct one with its own self_prefix, and append its
// Collect() to the program's own families before serializing with TextSerializer.
//
// Label cardinality is bounded: per process (`pid`, `comm`) or per command name (`comm`, summed
// over the processes sharing it); size classes appear only while they hold live blocks.
#pragma once

#include "reader.h"

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <atomic>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace arena::client {

/// How processes map to series.
enum class GroupBy {
    Pid,  // one series per process, labels {comm, pid}
    Comm, // one series per command name, label {comm}, values summed over its processes
};

/// "pid" or "comm"; nullopt for anything else.
std::optional<GroupBy> parse_group_by(std::string_view text);
const char* group_by_name(GroupBy g);

/// The metric families of one scan, without the collector's own families. No I/O: the unit
/// tests feed it hand-made scans.
std::vector<prometheus::MetricFamily> process_families(const Scan& scan, GroupBy group_by);

/// A name the collector can emit, with the label names its samples may carry.
struct FamilyName {
    std::string name;
    std::vector<std::string> labels;
};

class ArenaCollector : public prometheus::Collectable {
public:
    /// `stats_dir`: the base directory of stats pages (see default_dir()). `options`: how the
    /// reader scans it (procfs, caps). `self_prefix`: prefix of the collector's own families
    /// ("arena_exporter" in arena-exporter; cmond passes its own so that the two never collide).
    ArenaCollector(std::string stats_dir, GroupBy group_by, ScanOptions options = {},
                   std::string self_prefix = "arena_exporter");

    /// Scans the directory and returns every family. Thread-safe: scrapes may run
    /// concurrently.
    std::vector<prometheus::MetricFamily> Collect() const override;

    /// Every family name this collector can emit and the labels of its samples (for name
    /// checks; the histogram's _bucket/_sum/_count series are derived from its name).
    std::vector<FamilyName> family_names() const;

    /// The error of the last scan ("" if the directory was read).
    std::string last_error() const;

    const std::string& stats_dir() const { return stats_dir_; }
    const ScanOptions& options() const { return options_; }
    GroupBy group_by() const { return group_by_; }

private:
    std::string stats_dir_;
    GroupBy group_by_;
    ScanOptions options_;
    std::string self_prefix_;
    mutable std::atomic<uint64_t> stale_removed_{0}; // pages removed by all scans so far
    mutable std::mutex error_mutex_;
    mutable std::string last_error_; // guarded by error_mutex_
};

/// The version of the stats client library, reported in <prefix>_build_info.
const char* version();

} // namespace arena::client
