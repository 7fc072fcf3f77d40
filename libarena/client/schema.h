// SPDX-License-Identifier: MIT
// The metric schema of one process, each part declared once: the page's fields and families come
// from stats_page.h's tables (ARENA_STATS_FAMILIES, _EVENTS, _GAUGES), the families derived from
// them (live bytes and blocks, the size histogram, the start time, ...) from one table in
// schema.cc. The collector turns families into Prometheus families, the JSON iterates the
// fields: a field added to stats_page.h shows up in both without touching either.
//
// No I/O, no state: a family's values are computed from one Process (reader.h).
#pragma once

#include "reader.h"

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace arena::client {

// ---- Page fields ----

/// Where a field lives in the page.
enum class FieldKind {
    Event, // a counter of every shard, summed (stats_page.h ARENA_STATS_EVENTS)
    Gauge, // a process-wide value under the seqlock (ARENA_STATS_GAUGES)
};

/// One field of the page, as its table row declares it.
struct Field {
    const char* name; // "malloc_calls", "reserved_bytes": the JSON key
    FieldKind kind;
    unsigned index;            // arena_stats_event or arena_stats_gauge
    arena_stats_family family; // ARENA_FAMILY_none: not a metric (JSON only)
    const char* label;         // the value of the family's label, or ""
    bool is_signed;            // a gauge holding an int64_t

    /// The raw word in a snapshot (a signed gauge in two's complement).
    uint64_t raw(const snapshot::Snapshot& s) const {
        return kind == FieldKind::Event ? s.events[index] : s.head.global.gauges[index];
    }
    /// The value as a number, signed gauges signed.
    double number(const snapshot::Snapshot& s) const {
        return is_signed ? static_cast<double>(static_cast<int64_t>(raw(s)))
                         : static_cast<double>(raw(s));
    }
};

/// Every field: the events in table order, then the gauges in table order.
std::span<const Field> fields();

// ---- Metric families ----

enum class MetricKind { Counter, Gauge, Histogram };

/// How grouping by comm combines the processes that share a comm.
enum class Aggregate { Sum, Min };

/// One sample of a family for one process: the value of the family's own label ("" when it
/// has none) and the value.
struct Sample {
    std::string label;
    double value = 0;
};

/// A histogram of one process: cumulative counts by upper bound, +Inf last.
struct Histogram {
    std::vector<std::pair<double, uint64_t>> buckets; // (upper bound, cumulative count)
    uint64_t count = 0;
    double sum = 0;
};

/// The values of one family for one process (or the combined ones of a comm group).
struct Values {
    std::vector<Sample> samples; // Counter and Gauge families
    Histogram histogram;         // Histogram families
};

/// A Prometheus family of per-process metrics. Its series carry the process's labels (comm, and
/// pid unless grouped by comm) plus the family's own label when it has one.
struct Family {
    const char* name;
    MetricKind type;
    const char* label; // the family's own label key ("api", "kind", "size", ...), or ""
    const char* help;
    Aggregate aggregate = Aggregate::Sum;
    bool drop_zero = false; // samples of value 0 are left out (bounds the label's values)
    bool comm_only = false; // only when grouping by comm
    arena_stats_family page_family = ARENA_FAMILY_none; // a family of page fields, or none
    void (*derive)(const Process&, Values&) = nullptr;  // a derived family's computation

    /// The family's values in process `p`.
    Values values(const Process& p) const;
};

/// Every family, each once: the page's families in ARENA_STATS_FAMILIES order, then the derived
/// families (schema.cc).
std::span<const Family> families();

// ---- Sums the tools show ----

/// Calls of the entry points that allocate (every arena_calls_total API but free and delete).
uint64_t allocation_calls(const Process& p);
/// Calls of free and operator delete.
uint64_t free_calls(const Process& p);
/// Heap errors caught (every arena_heap_errors_total kind) plus allocations that failed.
uint64_t error_count(const Process& p);

} // namespace arena::client
