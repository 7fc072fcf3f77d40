// SPDX-License-Identifier: MIT
// The arena_* part of /metrics: a prometheus::Collectable that reads every stats page through
// an ArenaSource at scrape time (nothing cached between scrapes). Each ArenaCounter becomes the
// family arena_<name> and each ArenaHistogram arena_<name>, with labels pid and comm.
#pragma once

#include "arena_source.h"

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <memory>

namespace cmond {

class ArenaCollector : public prometheus::Collectable {
public:
    explicit ArenaCollector(std::shared_ptr<ArenaSource> source);
    std::vector<prometheus::MetricFamily> Collect() const override;

private:
    std::shared_ptr<ArenaSource> source_;
};

} // namespace cmond
