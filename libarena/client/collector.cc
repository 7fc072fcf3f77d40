// SPDX-License-Identifier: MIT
// The metric families of arena-exporter (and of cmond's /metrics), as two tables: per-process
// families computed from one arena::stats::Process, and the collector's own families computed
// from the scrape. Adding a metric means adding one row; the names, types and help texts in the
// rows are the whole exposition (checked by tests/exporter: golden files, promtool, name checks).
//
// Per-process rows produce "samples": a value and, for families with a label of their own
// (api, kind, state, size), that label's value. A process's histogram is computed the same
// way. Grouping by comm adds up the samples of the processes sharing a comm (or keeps the
// smallest, for the start time) and adds arena_processes.
#include "collector.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <utility>

#ifndef ARENA_EXPORTER_VERSION
#    error "ARENA_EXPORTER_VERSION must be defined by the build (the project version)"
#endif

namespace exporter {

using arena::stats::Process;
using arena::stats::Scan;
using arena::stats::Skip;
using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

namespace {

// ---- Per-process families ----

/// The samples of one family for one process (or one comm group).
struct Values {
    std::vector<std::pair<std::string, double>> samples; // (own label value or "", value)
    ClientMetric::Histogram histogram;                   // MetricType::Histogram only
};

enum class Aggregate { Sum, Min };

enum Flags : unsigned {
    kNone = 0,
    kDropZero = 1, // omit samples whose value is 0 (bounds the size-class label)
    kCommOnly = 2, // only with --group-by comm
};

struct ProcessFamily {
    const char* name;
    MetricType type;
    const char* help;
    const char* label;   // the family's own label, or nullptr
    Aggregate aggregate; // how --group-by comm combines processes
    unsigned flags;
    void (*compute)(const Process&, Values&);
};

void one(Values& v, double x) {
    v.samples.emplace_back(std::string(), x);
}

double ev(const Process& p, arena_stats_event e) {
    return static_cast<double>(p.events[e]);
}

// Histogram buckets: the powers of two from 16 to 32 KiB. Every one is a size class of
// libarena, and every request served by a class is larger than the class below it, so
// "slot size <= bound" counts exactly the requests <= bound (an aligned request may be served
// by a larger class, and counts there). Large blocks (page runs, above the largest class) are
// only in +Inf.
constexpr uint32_t kFirstBucket = 16;
constexpr uint32_t kLastBucket = 32768;

void size_histogram(const Process& p, Values& v) {
    ClientMetric::Histogram& h = v.histogram;
    for (uint64_t bound = kFirstBucket; bound <= kLastBucket; bound *= 2) {
        uint64_t n = 0;
        for (const arena::stats::SizeClass& c : p.classes)
            if (c.size <= bound)
                n += c.allocs;
        h.bucket.push_back({n, static_cast<double>(bound)});
    }
    uint64_t total = p.events[ARENA_EV_large_allocs];
    for (const arena::stats::SizeClass& c : p.classes)
        total += c.allocs;
    h.bucket.push_back({total, std::numeric_limits<double>::infinity()});
    h.sample_count = total;
    h.sample_sum = ev(p, ARENA_EV_bytes_requested);
}

// clang-format off
const ProcessFamily kProcessFamilies[] = {
    {"arena_calls_total", MetricType::Counter,
     "Calls of the allocator's entry points, by API (aligned: memalign, posix_memalign, "
     "aligned_alloc, valloc and pvalloc; new and delete: every C++ operator form).",
     "api", Aggregate::Sum, kNone,
     [](const Process& p, Values& v) {
         v.samples = {{"malloc", ev(p, ARENA_EV_malloc_calls)},
                      {"calloc", ev(p, ARENA_EV_calloc_calls)},
                      {"realloc", ev(p, ARENA_EV_realloc_calls)},
                      {"free", ev(p, ARENA_EV_free_calls)},
                      {"aligned", ev(p, ARENA_EV_aligned_calls)},
                      {"new", ev(p, ARENA_EV_new_calls)},
                      {"delete", ev(p, ARENA_EV_delete_calls)}};
     }},
    {"arena_requested_bytes_total", MetricType::Counter,
     "Bytes asked for by allocation calls.", nullptr, Aggregate::Sum, kNone,
     [](const Process& p, Values& v) { one(v, ev(p, ARENA_EV_bytes_requested)); }},
    {"arena_live_bytes", MetricType::Gauge,
     "Bytes in live blocks: small blocks at their slot size plus large blocks in whole pages.",
     nullptr, Aggregate::Sum, kNone,
     [](const Process& p, Values& v) { one(v, static_cast<double>(p.live_bytes())); }},
    {"arena_live_blocks", MetricType::Gauge, "Live blocks, small and large.", nullptr,
     Aggregate::Sum, kNone,
     [](const Process& p, Values& v) { one(v, static_cast<double>(p.live_blocks())); }},
    {"arena_peak_live_bytes", MetricType::Gauge,
     "Highest live bytes seen by the allocator (summed over the processes when grouped by "
     "comm).", nullptr, Aggregate::Sum, kNone,
     [](const Process& p, Values& v) { one(v, static_cast<double>(p.global.peak_live_bytes)); }},
    {"arena_reserved_bytes", MetricType::Gauge, "Address space reserved by the allocator.",
     nullptr, Aggregate::Sum, kNone,
     [](const Process& p, Values& v) { one(v, static_cast<double>(p.global.reserved_bytes)); }},
    {"arena_committed_bytes", MetricType::Gauge,
     "Pages in use plus free pages not yet returned to the kernel.", nullptr, Aggregate::Sum,
     kNone,
     [](const Process& p, Values& v) { one(v, static_cast<double>(p.global.committed_bytes)); }},
    {"arena_resident_bytes", MetricType::Gauge,
     "Resident bytes of the allocator's memory, as last sampled by the allocator.", nullptr,
     Aggregate::Sum, kNone,
     [](const Process& p, Values& v) { one(v, static_cast<double>(p.global.resident_bytes)); }},
    {"arena_purged_bytes_total", MetricType::Counter, "Bytes returned to the kernel.", nullptr,
     Aggregate::Sum, kNone,
     [](const Process& p, Values& v) { one(v, static_cast<double>(p.global.purged_bytes)); }},
    {"arena_trims_total", MetricType::Counter,
     "Trims served (malloc_trim calls and trim requests).", nullptr, Aggregate::Sum, kNone,
     [](const Process& p, Values& v) { one(v, static_cast<double>(p.global.trims)); }},
    {"arena_large_allocations_total", MetricType::Counter,
     "Large blocks (page runs) allocated.", nullptr, Aggregate::Sum, kNone,
     [](const Process& p, Values& v) { one(v, ev(p, ARENA_EV_large_allocs)); }},
    {"arena_failed_allocations_total", MetricType::Counter,
     "Allocation calls that failed with ENOMEM.", nullptr, Aggregate::Sum, kNone,
     [](const Process& p, Values& v) { one(v, ev(p, ARENA_EV_failed_allocs)); }},
    {"arena_foreign_frees_total", MetricType::Counter,
     "Frees of pointers the allocator does not own (ignored).", nullptr, Aggregate::Sum, kNone,
     [](const Process& p, Values& v) { one(v, ev(p, ARENA_EV_foreign_frees)); }},
    {"arena_heap_errors_total", MetricType::Counter,
     "Heap errors caught, by kind (invalid_free: a pointer inside the arena that is not a live "
     "block).", "kind", Aggregate::Sum, kNone,
     [](const Process& p, Values& v) {
         v.samples = {{"double_free", static_cast<double>(p.global.double_frees)},
                      {"invalid_free", static_cast<double>(p.global.invalid_frees)}};
     }},
    {"arena_heaps", MetricType::Gauge,
     "Thread heaps, by state (abandoned: of an exited thread, waiting for adoption).", "state",
     Aggregate::Sum, kNone,
     [](const Process& p, Values& v) {
         v.samples = {{"active", static_cast<double>(p.global.heaps_active)},
                      {"abandoned", static_cast<double>(p.global.heaps_abandoned)}};
     }},
    {"arena_size_class_live_blocks", MetricType::Gauge,
     "Live small blocks by size class (the slot size in bytes); classes without live blocks "
     "are left out.", "size", Aggregate::Sum, kDropZero,
     [](const Process& p, Values& v) {
         for (const arena::stats::SizeClass& c : p.classes) {
             const double live = c.allocs > c.frees ? static_cast<double>(c.allocs - c.frees) : 0;
             v.samples.emplace_back(std::to_string(c.size), live);
         }
     }},
    {"arena_allocation_size_bytes", MetricType::Histogram,
     "Allocations by the slot size that served them, in bytes (large blocks only in +Inf); "
     "the sum is the bytes requested.", nullptr, Aggregate::Sum, kNone, size_histogram},
    {"arena_process_start_time_seconds", MetricType::Gauge,
     "When the process's stats page was created, in seconds since the Unix epoch (the "
     "earliest of the processes when grouped by comm).", nullptr, Aggregate::Min, kNone,
     [](const Process& p, Values& v) {
         one(v, static_cast<double>(p.created_unix_ns / 1000000) / 1e3);
     }},
    {"arena_processes", MetricType::Gauge, "Processes with a stats page, by comm.", nullptr,
     Aggregate::Sum, kCommOnly, [](const Process&, Values& v) { one(v, 1); }},
};
// clang-format on

// ---- Labels ----

/// Prometheus label values are UTF-8: invalid bytes (a comm is any bytes a process chose)
/// become U+FFFD. The serializer escapes backslash, quote and newline itself.
std::string utf8_label(const std::string& in) {
    std::string out;
    out.reserve(in.size());
    const auto* s = reinterpret_cast<const unsigned char*>(in.data());
    const size_t n = in.size();
    for (size_t i = 0; i < n;) {
        const unsigned char c = s[i];
        size_t len = 0;
        uint32_t cp = 0;
        if (c < 0x80) {
            len = 1;
            cp = c;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        }
        bool ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; ++k) {
            ok = (s[i + k] & 0xc0) == 0x80;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        // Reject overlong forms, surrogates and values above U+10FFFF.
        if (ok) {
            static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
            ok = cp >= kMin[len] && cp <= 0x10ffff && (cp < 0xd800 || cp > 0xdfff);
        }
        if (ok) {
            out.append(in, i, len);
            i += len;
        } else {
            out += "\xef\xbf\xbd";
            ++i;
        }
    }
    return out;
}

/// The identity of a series: comm and pid, or comm only.
struct Group {
    std::vector<ClientMetric::Label> labels;
    std::vector<const Process*> members;
};

std::vector<Group> make_groups(const Scan& scan, GroupBy group_by) {
    std::vector<Group> groups;
    if (group_by == GroupBy::Pid) {
        std::set<int> seen; // a pid twice would make duplicate series; keep the first page
        for (const Process& p : scan.processes) {
            if (!seen.insert(p.pid).second)
                continue;
            groups.push_back(
                Group{{{"comm", utf8_label(p.comm)}, {"pid", std::to_string(p.pid)}}, {&p}});
        }
        std::sort(groups.begin(), groups.end(), [](const Group& a, const Group& b) {
            return a.members.front()->pid < b.members.front()->pid;
        });
    } else {
        std::map<std::string, std::vector<const Process*>> by_comm;
        for (const Process& p : scan.processes)
            by_comm[utf8_label(p.comm)].push_back(&p);
        for (auto& [comm, members] : by_comm)
            groups.push_back(Group{{{"comm", comm}}, std::move(members)});
    }
    return groups;
}

/// One family's values for a group: each member's values, combined.
Values group_values(const ProcessFamily& f, const Group& g) {
    Values total;
    bool first = true;
    for (const Process* p : g.members) {
        Values v;
        f.compute(*p, v);
        if (first) {
            total = std::move(v);
            first = false;
            continue;
        }
        for (const auto& sample : v.samples) {
            auto it = std::find_if(total.samples.begin(), total.samples.end(),
                                   [&](const auto& s) { return s.first == sample.first; });
            if (it == total.samples.end())
                total.samples.push_back(sample);
            else if (f.aggregate == Aggregate::Sum)
                it->second += sample.second;
            else
                it->second = std::min(it->second, sample.second);
        }
        ClientMetric::Histogram& h = total.histogram;
        h.sample_count += v.histogram.sample_count;
        h.sample_sum += v.histogram.sample_sum;
        for (size_t b = 0; b < h.bucket.size() && b < v.histogram.bucket.size(); ++b)
            h.bucket[b].cumulative_count += v.histogram.bucket[b].cumulative_count;
    }
    return total;
}

// ---- The collector's own families ----

struct ScrapeState {
    const Scan& scan;
    double duration_seconds;
    uint64_t stale_removed_total;
};

struct SelfFamily {
    const char* suffix; // appended to "<self_prefix>_"
    MetricType type;
    const char* help;
    const char* label;
    void (*compute)(const ScrapeState&, Values&);
};

// clang-format off
const SelfFamily kSelfFamilies[] = {
    {"scrape_duration_seconds", MetricType::Gauge,
     "Seconds this scrape took to read the stats pages and compute the metrics.", nullptr,
     [](const ScrapeState& s, Values& v) { one(v, s.duration_seconds); }},
    {"scrape_success", MetricType::Gauge,
     "1 if the stats directory could be read by this scrape, else 0.", nullptr,
     [](const ScrapeState& s, Values& v) { one(v, s.scan.error.empty() ? 1 : 0); }},
    {"pages_read", MetricType::Gauge, "Stats pages read by this scrape.", nullptr,
     [](const ScrapeState& s, Values& v) { one(v, static_cast<double>(s.scan.processes.size())); }},
    {"pages_skipped", MetricType::Gauge,
     "Files of the stats directory skipped by this scrape, by reason.", "reason",
     [](const ScrapeState& s, Values& v) {
         for (size_t r = 0; r < size_t(Skip::Count); ++r)
             v.samples.emplace_back(arena::stats::skip_name(Skip(r)),
                                    static_cast<double>(s.scan.skipped[r]));
     }},
    {"stale_pages_removed_total", MetricType::Counter,
     "Stale stats pages (without a live writer) removed since the collector started.", nullptr,
     [](const ScrapeState& s, Values& v) { one(v, static_cast<double>(s.stale_removed_total)); }},
    {"build_info", MetricType::Gauge, "Version of the collector; the value is always 1.",
     "version", [](const ScrapeState&, Values& v) { v.samples = {{version(), 1}}; }},
};
// clang-format on

void set_value(ClientMetric& m, MetricType type, double value) {
    switch (type) {
    case MetricType::Counter:
        m.counter.value = value;
        break;
    case MetricType::Gauge:
        m.gauge.value = value;
        break;
    default:
        m.untyped.value = value;
        break;
    }
}

/// Appends the samples of `v` to `family`, each with `base` labels plus the own label.
void append(MetricFamily& family, const char* own_label,
            const std::vector<ClientMetric::Label>& base, Values&& v, bool drop_zero) {
    if (family.type == MetricType::Histogram) {
        ClientMetric m;
        m.label = base;
        m.histogram = std::move(v.histogram);
        family.metric.push_back(std::move(m));
        return;
    }
    for (auto& [label, value] : v.samples) {
        if (drop_zero && value == 0)
            continue;
        ClientMetric m;
        m.label = base;
        if (own_label != nullptr)
            m.label.push_back({own_label, label});
        set_value(m, family.type, value);
        family.metric.push_back(std::move(m));
    }
}

} // namespace

// ---- Public API ----

const char* version() {
    return ARENA_EXPORTER_VERSION;
}

std::optional<GroupBy> parse_group_by(std::string_view text) {
    if (text == "pid")
        return GroupBy::Pid;
    if (text == "comm")
        return GroupBy::Comm;
    return std::nullopt;
}

const char* group_by_name(GroupBy g) {
    return g == GroupBy::Pid ? "pid" : "comm";
}

std::vector<MetricFamily> process_families(const Scan& scan, GroupBy group_by) {
    const std::vector<Group> groups = make_groups(scan, group_by);
    std::vector<MetricFamily> out;
    for (const ProcessFamily& f : kProcessFamilies) {
        if ((f.flags & kCommOnly) && group_by != GroupBy::Comm)
            continue;
        MetricFamily family;
        family.name = f.name;
        family.help = f.help;
        family.type = f.type;
        for (const Group& g : groups)
            append(family, f.label, g.labels, group_values(f, g), f.flags & kDropZero);
        out.push_back(std::move(family));
    }
    return out;
}

ArenaCollector::ArenaCollector(std::string stats_dir, GroupBy group_by, std::string self_prefix)
    : stats_dir_(std::move(stats_dir)), group_by_(group_by), self_prefix_(std::move(self_prefix)) {}

std::vector<MetricFamily> ArenaCollector::Collect() const {
    const auto start = std::chrono::steady_clock::now();
    const Scan scan = arena::stats::scan(stats_dir_);
    std::vector<MetricFamily> out = process_families(scan, group_by_);
    const uint64_t removed = stale_removed_ += scan.removed.size();
    {
        std::lock_guard<std::mutex> lock(error_mutex_);
        last_error_ = scan.error;
    }
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    const ScrapeState state{scan, took.count(), removed};
    for (const SelfFamily& f : kSelfFamilies) {
        MetricFamily family;
        family.name = self_prefix_ + "_" + f.suffix;
        family.help = f.help;
        family.type = f.type;
        Values v;
        f.compute(state, v);
        append(family, f.label, {}, std::move(v), false);
        out.push_back(std::move(family));
    }
    return out;
}

std::vector<FamilyName> ArenaCollector::family_names() const {
    std::vector<FamilyName> names;
    for (const ProcessFamily& f : kProcessFamilies) {
        if ((f.flags & kCommOnly) && group_by_ != GroupBy::Comm)
            continue;
        FamilyName n{f.name, {"comm"}};
        if (group_by_ == GroupBy::Pid)
            n.labels.push_back("pid");
        if (f.label != nullptr)
            n.labels.push_back(f.label);
        if (f.type == MetricType::Histogram)
            n.labels.push_back("le");
        names.push_back(std::move(n));
    }
    for (const SelfFamily& f : kSelfFamilies) {
        FamilyName n{self_prefix_ + "_" + f.suffix, {}};
        if (f.label != nullptr)
            n.labels.push_back(f.label);
        names.push_back(std::move(n));
    }
    return names;
}

std::string ArenaCollector::last_error() const {
    std::lock_guard<std::mutex> lock(error_mutex_);
    return last_error_;
}

} // namespace exporter
