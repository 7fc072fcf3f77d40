// SPDX-License-Identifier: MIT
// The Prometheus side of the stats client: schema.h's families turned into prometheus-cpp
// MetricFamily objects (labels, grouping by comm), and the collector's own families, one table.
//
// A family's values come per process from schema.h; grouping by comm adds up the samples of the
// processes sharing a comm (or keeps the smallest, for the start time) and adds the comm-only
// families (arena_processes). Adding a metric means adding a field to stats_page.h or a row to
// schema.cc's derived table; the names, types and help texts there are the whole exposition
// (checked by tests/exporter: golden files, promtool, name checks).
#include "collector.h"

#include "schema.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <utility>

#ifndef ARENA_CLIENT_VERSION
#    error "ARENA_CLIENT_VERSION must be defined by the build (the project version)"
#endif

namespace arena::client {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

namespace {

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
        // The reader reports one page per pid; a hand-made scan with a pid twice would make
        // duplicate series, so the first page stands.
        std::set<int> seen;
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
Values group_values(const Family& f, const Group& g) {
    Values total;
    bool first = true;
    for (const Process* p : g.members) {
        Values v = f.values(*p);
        if (first) {
            total = std::move(v);
            first = false;
            continue;
        }
        for (const Sample& sample : v.samples) {
            auto it = std::find_if(total.samples.begin(), total.samples.end(),
                                   [&](const Sample& s) { return s.label == sample.label; });
            if (it == total.samples.end())
                total.samples.push_back(sample);
            else if (f.aggregate == Aggregate::Sum)
                it->value += sample.value;
            else
                it->value = std::min(it->value, sample.value);
        }
        Histogram& h = total.histogram;
        h.count += v.histogram.count;
        h.sum += v.histogram.sum;
        for (size_t b = 0; b < h.buckets.size() && b < v.histogram.buckets.size(); ++b)
            h.buckets[b].second += v.histogram.buckets[b].second;
    }
    return total;
}

MetricType prometheus_type(MetricKind kind) {
    switch (kind) {
    case MetricKind::Counter:
        return MetricType::Counter;
    case MetricKind::Gauge:
        return MetricType::Gauge;
    case MetricKind::Histogram:
        break;
    }
    return MetricType::Histogram;
}

// ---- The collector's own families ----

struct ScrapeState {
    const Scan& scan;
    double duration_seconds;
    uint64_t stale_removed_total;
};

struct SelfFamily {
    const char* suffix; // appended to "<self_prefix>_"
    MetricKind type;
    const char* help;
    const char* label; // "" when none
    void (*compute)(const ScrapeState&, Values&);
};

void one(Values& v, double x) {
    v.samples.push_back({std::string(), x});
}

// clang-format off
const SelfFamily kSelfFamilies[] = {
    {"scrape_duration_seconds", MetricKind::Gauge,
     "Seconds this scrape took to read the stats pages and compute the metrics.", "",
     [](const ScrapeState& s, Values& v) { one(v, s.duration_seconds); }},
    {"scrape_success", MetricKind::Gauge,
     "1 if the stats directory could be read by this scrape, else 0.", "",
     [](const ScrapeState& s, Values& v) { one(v, s.scan.error.empty() ? 1 : 0); }},
    {"scrape_truncated", MetricKind::Gauge,
     "1 if this scrape stopped at its cap on pages, directory entries or time, else 0.", "",
     [](const ScrapeState& s, Values& v) { one(v, s.scan.truncated ? 1 : 0); }},
    {"pages_read", MetricKind::Gauge, "Stats pages read by this scrape.", "",
     [](const ScrapeState& s, Values& v) { one(v, static_cast<double>(s.scan.processes.size())); }},
    {"pages_skipped", MetricKind::Gauge,
     "Entries of the stats directory skipped by this scrape, by reason.", "reason",
     [](const ScrapeState& s, Values& v) {
         for (size_t r = 0; r < size_t(Skip::Count); ++r)
             v.samples.push_back({skip_name(Skip(r)), static_cast<double>(s.scan.skipped[r])});
     }},
    {"stale_pages_removed_total", MetricKind::Counter,
     "Stale stats pages (without a live writer) removed since the collector started.", "",
     [](const ScrapeState& s, Values& v) { one(v, static_cast<double>(s.stale_removed_total)); }},
    {"build_info", MetricKind::Gauge, "Version of the collector; the value is always 1.",
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
        m.histogram.sample_count = v.histogram.count;
        m.histogram.sample_sum = v.histogram.sum;
        for (const auto& [bound, count] : v.histogram.buckets)
            m.histogram.bucket.push_back({count, bound});
        family.metric.push_back(std::move(m));
        return;
    }
    for (Sample& s : v.samples) {
        if (drop_zero && s.value == 0)
            continue;
        ClientMetric m;
        m.label = base;
        if (*own_label != '\0')
            m.label.push_back({own_label, std::move(s.label)});
        set_value(m, family.type, s.value);
        family.metric.push_back(std::move(m));
    }
}

} // namespace

// ---- Public API ----

const char* version() {
    return ARENA_CLIENT_VERSION;
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
    for (const Family& f : families()) {
        if (f.comm_only && group_by != GroupBy::Comm)
            continue;
        MetricFamily family;
        family.name = f.name;
        family.help = f.help;
        family.type = prometheus_type(f.type);
        for (const Group& g : groups)
            append(family, f.label, g.labels, group_values(f, g), f.drop_zero);
        out.push_back(std::move(family));
    }
    return out;
}

ArenaCollector::ArenaCollector(std::string stats_dir, GroupBy group_by, ScanOptions options,
                               std::string self_prefix)
    : stats_dir_(std::move(stats_dir)), group_by_(group_by), options_(std::move(options)),
      self_prefix_(std::move(self_prefix)) {}

std::vector<MetricFamily> ArenaCollector::Collect() const {
    const auto start = std::chrono::steady_clock::now();
    const Scan scan = arena::client::scan(stats_dir_, options_);
    std::vector<MetricFamily> out = process_families(scan, group_by_);
    const uint64_t removed = stale_removed_ += scan.removed;
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
        family.type = prometheus_type(f.type);
        Values v;
        f.compute(state, v);
        append(family, f.label, {}, std::move(v), false);
        out.push_back(std::move(family));
    }
    return out;
}

std::vector<FamilyName> ArenaCollector::family_names() const {
    std::vector<FamilyName> names;
    for (const Family& f : families()) {
        if (f.comm_only && group_by_ != GroupBy::Comm)
            continue;
        FamilyName n{f.name, {"comm"}};
        if (group_by_ == GroupBy::Pid)
            n.labels.push_back("pid");
        if (*f.label != '\0')
            n.labels.push_back(f.label);
        if (f.type == MetricKind::Histogram)
            n.labels.push_back("le");
        names.push_back(std::move(n));
    }
    for (const SelfFamily& f : kSelfFamilies) {
        FamilyName n{self_prefix_ + "_" + f.suffix, {}};
        if (*f.label != '\0')
            n.labels.push_back(f.label);
        names.push_back(std::move(n));
    }
    return names;
}

std::string ArenaCollector::last_error() const {
    std::lock_guard<std::mutex> lock(error_mutex_);
    return last_error_;
}

} // namespace arena::client
