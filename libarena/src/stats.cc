// SPDX-License-Identifier: MIT
#include "stats.h"

namespace arena {

void StatTotals::add(const StatShard& s) {
    for (unsigned i = 0; i < kCounterCount; ++i)
        events[i] += s.events[i].load(std::memory_order_relaxed);
    for (unsigned c = 0; c < kNumClasses; ++c) {
        class_alloc[c] += s.class_alloc[c].load(std::memory_order_relaxed);
        class_free[c] += s.class_free[c].load(std::memory_order_relaxed);
    }
}

uint64_t StatTotals::live_bytes() const {
    // Shards are read one after another while threads run, so a free counted in one shard can
    // be seen before the matching allocation in another: sum signed and clamp.
    int64_t live = static_cast<int64_t>(events[k_large_alloc_bytes] - events[k_large_free_bytes]);
    for (unsigned c = 0; c < kNumClasses; ++c)
        live += static_cast<int64_t>(class_alloc[c] - class_free[c]) * kClasses[c].size;
    return live > 0 ? static_cast<uint64_t>(live) : 0;
}

} // namespace arena
