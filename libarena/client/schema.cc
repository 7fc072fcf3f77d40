// SPDX-License-Identifier: MIT
// The schema of schema.h: the page's fields and families generated from stats_page.h's tables
// (and checked against each other at compile time), and the one table of derived families.
#include "schema.h"

#include <cstring>
#include <iterator>
#include <limits>

namespace arena::client {

namespace {

// ---- Page fields, from stats_page.h ----

// clang-format off
constexpr Field kFields[] = {
#define ARENA_SCHEMA_EVENT(name, family, label, pass)                                             \
    {#name, FieldKind::Event, ARENA_EV_##name, ARENA_FAMILY_##family, label, false},
    ARENA_STATS_EVENTS(ARENA_SCHEMA_EVENT)
#undef ARENA_SCHEMA_EVENT
#define ARENA_SCHEMA_GAUGE(name, family, label, is_signed)                                        \
    {#name, FieldKind::Gauge, ARENA_G_##name, ARENA_FAMILY_##family, label, (is_signed) != 0},
    ARENA_STATS_GAUGES(ARENA_SCHEMA_GAUGE)
#undef ARENA_SCHEMA_GAUGE
};

/// The label key of each page family, by arena_stats_family.
constexpr const char* kFamilyLabel[] = {
#define ARENA_SCHEMA_LABEL(id, type, name, label, help) label,
    ARENA_STATS_FAMILIES(ARENA_SCHEMA_LABEL)
#undef ARENA_SCHEMA_LABEL
};
// clang-format on

constexpr bool same(const char* a, const char* b) {
    while (*a != '\0' && *a == *b) {
        ++a;
        ++b;
    }
    return *a == *b;
}

/// The tables agree: every family has a field; a family without a label key has exactly one,
/// a family with one tells its fields apart by distinct, non-empty label values; fields that
/// are no metric have no label value.
constexpr bool tables_agree() {
    for (unsigned fam = 0; fam < ARENA_FAMILY_COUNT; ++fam) {
        const bool labelled = kFamilyLabel[fam][0] != '\0';
        unsigned n = 0;
        for (size_t i = 0; i < std::size(kFields); ++i) {
            const Field& f = kFields[i];
            if (unsigned(f.family) != fam)
                continue;
            ++n;
            if (fam == ARENA_FAMILY_none || !labelled) {
                if (f.label[0] != '\0')
                    return false;
                continue;
            }
            if (f.label[0] == '\0')
                return false;
            for (size_t j = i + 1; j < std::size(kFields); ++j)
                if (kFields[j].family == f.family && same(kFields[j].label, f.label))
                    return false;
        }
        if (fam != ARENA_FAMILY_none && (n == 0 || (!labelled && n != 1)))
            return false;
    }
    return true;
}
static_assert(std::size(kFields) == size_t{ARENA_EV_COUNT} + size_t{ARENA_G_COUNT},
              "one row per field");
static_assert(tables_agree(),
              "stats_page.h: a family's fields do not fit its label (see tables_agree)");

// ---- Derived families ----

void one(Values& v, double x) {
    v.samples.push_back({std::string(), x});
}

// Histogram buckets: the powers of two from 16 to 32 KiB. Every one is a size class of
// libarena, and every request served by a class is larger than the class below it, so
// "slot size <= bound" counts exactly the requests <= bound (an aligned request may be served
// by a larger class, and counts there). Large blocks (page runs, above the largest class) are
// only in +Inf.
constexpr uint32_t kFirstBucket = 16;
constexpr uint32_t kLastBucket = 32768;

void size_histogram(const Process& p, Values& v) {
    const snapshot::Snapshot& s = p.snap;
    Histogram& h = v.histogram;
    uint64_t total = s.event(ARENA_EV_large_allocs);
    for (unsigned c = 0; c < s.nclasses(); ++c)
        total += s.class_alloc[c];
    for (uint64_t bound = kFirstBucket; bound <= kLastBucket; bound *= 2) {
        uint64_t n = 0;
        for (unsigned c = 0; c < s.nclasses(); ++c)
            if (s.head.class_size[c] <= bound)
                n += s.class_alloc[c];
        h.buckets.push_back({static_cast<double>(bound), n});
    }
    h.buckets.push_back({std::numeric_limits<double>::infinity(), total});
    h.count = total;
    h.sum = static_cast<double>(s.event(ARENA_EV_bytes_requested));
}

void size_class_live_blocks(const Process& p, Values& v) {
    const snapshot::Snapshot& s = p.snap;
    for (unsigned c = 0; c < s.nclasses(); ++c) {
        const uint64_t a = s.class_alloc[c], f = s.class_free[c];
        v.samples.push_back(
            {std::to_string(s.head.class_size[c]), a > f ? static_cast<double>(a - f) : 0.0});
    }
}

// clang-format off
const Family kDerived[] = {
    {"arena_live_bytes", MetricKind::Gauge, "",
     "Bytes in live blocks: small blocks at their slot size plus large blocks in whole pages.",
     Aggregate::Sum, false, false, ARENA_FAMILY_none,
     [](const Process& p, Values& v) { one(v, static_cast<double>(p.live_bytes())); }},
    {"arena_live_blocks", MetricKind::Gauge, "", "Live blocks, small and large.",
     Aggregate::Sum, false, false, ARENA_FAMILY_none,
     [](const Process& p, Values& v) { one(v, static_cast<double>(p.live_blocks())); }},
    {"arena_size_class_live_blocks", MetricKind::Gauge, "size",
     "Live small blocks by size class (the slot size in bytes); classes without live blocks "
     "are left out.",
     Aggregate::Sum, true, false, ARENA_FAMILY_none, size_class_live_blocks},
    {"arena_allocation_size_bytes", MetricKind::Histogram, "",
     "Allocations by the slot size that served them, in bytes (large blocks only in +Inf); "
     "the sum is the bytes requested.",
     Aggregate::Sum, false, false, ARENA_FAMILY_none, size_histogram},
    {"arena_process_start_time_seconds", MetricKind::Gauge, "",
     "When the process's stats page was created, in seconds since the Unix epoch (the "
     "earliest of the processes when grouped by comm).",
     Aggregate::Min, false, false, ARENA_FAMILY_none,
     [](const Process& p, Values& v) {
         const uint64_t created_ms = p.created_unix_ns() / 1000000; // milliseconds, as exposed
         one(v, static_cast<double>(created_ms) / 1e3);
     }},
    {"arena_processes", MetricKind::Gauge, "", "Processes with a stats page, by comm.",
     Aggregate::Sum, false, true, ARENA_FAMILY_none,
     [](const Process&, Values& v) { one(v, 1); }},
};
// clang-format on

std::vector<Family> make_families() {
    std::vector<Family> out;
#define ARENA_SCHEMA_FAMILY(id, type, name, label, help)                                           \
    if (ARENA_FAMILY_##id != ARENA_FAMILY_none)                                                    \
        out.push_back(                                                                             \
            Family{name, (type) == ARENA_METRIC_COUNTER ? MetricKind::Counter : MetricKind::Gauge, \
                   label, help, Aggregate::Sum, false, false, ARENA_FAMILY_##id, nullptr});
    ARENA_STATS_FAMILIES(ARENA_SCHEMA_FAMILY)
#undef ARENA_SCHEMA_FAMILY
    out.insert(out.end(), std::begin(kDerived), std::end(kDerived));
    return out;
}

/// The `calls` APIs that free; every other one allocates.
bool frees(const Field& f) {
    return std::strcmp(f.label, "free") == 0 || std::strcmp(f.label, "delete") == 0;
}

} // namespace

std::span<const Field> fields() {
    return kFields;
}

std::span<const Family> families() {
    static const std::vector<Family> all = make_families();
    return all;
}

Values Family::values(const Process& p) const {
    Values v;
    if (derive != nullptr) {
        derive(p, v);
        return v;
    }
    for (const Field& f : kFields)
        if (f.family == page_family)
            v.samples.push_back({f.label, f.number(p.snap)});
    return v;
}

uint64_t allocation_calls(const Process& p) {
    uint64_t n = 0;
    for (const Field& f : kFields)
        if (f.family == ARENA_FAMILY_calls && !frees(f))
            n += f.raw(p.snap);
    return n;
}

uint64_t free_calls(const Process& p) {
    uint64_t n = 0;
    for (const Field& f : kFields)
        if (f.family == ARENA_FAMILY_calls && frees(f))
            n += f.raw(p.snap);
    return n;
}

uint64_t error_count(const Process& p) {
    uint64_t n = 0;
    for (const Field& f : kFields)
        if (f.family == ARENA_FAMILY_heap_errors || f.family == ARENA_FAMILY_failed)
            n += f.raw(p.snap);
    return n;
}

} // namespace arena::client
