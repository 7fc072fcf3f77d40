// SPDX-License-Identifier: MIT
// Scrape-time conversion of stats-page snapshots to metric families; see arena_collector.h.
#include "arena_collector.h"

#include <limits>
#include <map>

namespace cmond {

ArenaCollector::ArenaCollector(std::shared_ptr<ArenaSource> source) : source_(std::move(source)) {}

std::vector<prometheus::MetricFamily> ArenaCollector::Collect() const {
    // One family per name, in first-seen order, holding one metric per process.
    std::vector<prometheus::MetricFamily> families;
    std::map<std::string, std::size_t> index;
    auto family = [&](const std::string& name, const std::string& help,
                      prometheus::MetricType type) -> prometheus::MetricFamily& {
        const std::string full = "arena_" + name;
        const auto [it, inserted] = index.emplace(full, families.size());
        if (inserted) {
            families.push_back({full, help, type, {}});
        }
        return families[it->second];
    };
    for (const auto& p : source_->list()) {
        const std::vector<prometheus::ClientMetric::Label> labels = {
            {"comm", p.comm}, {"pid", std::to_string(p.pid)}};
        for (const auto& c : p.counters) {
            prometheus::ClientMetric m;
            m.label = labels;
            if (c.kind == ArenaCounter::Kind::Counter) {
                m.counter.value = c.value;
                family(c.name, c.help, prometheus::MetricType::Counter).metric.push_back(m);
            } else {
                m.gauge.value = c.value;
                family(c.name, c.help, prometheus::MetricType::Gauge).metric.push_back(m);
            }
        }
        for (const auto& h : p.histograms) {
            prometheus::ClientMetric m;
            m.label = labels;
            m.histogram.sample_count = h.counts.empty() ? 0 : h.counts.back();
            m.histogram.sample_sum = h.sum;
            for (std::size_t i = 0; i < h.counts.size(); ++i) {
                prometheus::ClientMetric::Bucket b;
                b.cumulative_count = h.counts[i];
                b.upper_bound = i < h.upper_bounds.size() ? h.upper_bounds[i]
                                                          : std::numeric_limits<double>::infinity();
                m.histogram.bucket.push_back(b);
            }
            family(h.name, h.help, prometheus::MetricType::Histogram).metric.push_back(m);
        }
    }
    return families;
}

} // namespace cmond
