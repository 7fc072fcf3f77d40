// SPDX-License-Identifier: MIT
// A process as JSON: the one schema of cmond's GET /arena/<pid> and of `arena-stat --json` (an
// array of these), and the summary form of GET /arena (a subset of the same keys). The event
// counters and gauges are generated from stats_page.h's tables (schema.h fields), so a field
// added there appears here without touching this file.
//
// The schema (keys in this order; the summary has the ones marked *):
//
//   pid *               the process (also the page's name)
//   comm *              its command name, from /proc/<pid>/stat now
//   cmdline *           from the page: the arguments joined by spaces, the first 255 bytes
//   uid *               the page's owner
//   start_time *        the process's start, clock ticks after boot (/proc/<pid>/stat field 22)
//   created_unix_ns *   when the page was made, nanoseconds since the Unix epoch
//   page_size           the allocator's page, bytes (large blocks are runs of pages)
//   path                the page's file
//   live_bytes *        bytes in live blocks (small at their slot size, large in whole pages)
//   live_blocks *       live blocks, small and large
//   allocs_per_second   allocation calls per second between two refreshes of arena-stat
//                       --watch; null everywhere else (cmond, the first refresh, --once)
//   frees_per_second    the same for free calls
//   events *            {name: count} for every event counter (ARENA_STATS_EVENTS), summed
//                       over the shards: malloc_calls, ..., bytes_requested, large_allocs, ...
//   gauges *            {name: value} for every gauge (ARENA_STATS_GAUGES): updated_unix_ns,
//                       reserved_bytes, ..., purge_delay_ms (signed: -1 = only on trim)
//   size_classes        [{size, allocs, frees, live_blocks, live_bytes}] per class in use
//   control             {trim_requests, trims_served, trim_pending (bool), purge_requests,
//                       purges_served, purge_delay_request (the delay asked for while a purge
//                       request is pending, else null)}
//
// Strings hold what the process chose (any bytes): dump with error_handler_t::replace.
#pragma once

#include "reader.h"

#include <nlohmann/json.hpp>

#include <optional>

namespace arena::client {

/// What only arena-stat knows: call rates between two of its refreshes.
struct Rates {
    std::optional<double> allocs_per_second;
    std::optional<double> frees_per_second;
};

/// Every key of the schema above.
nlohmann::ordered_json process_json(const Process& p, const Rates& rates = {});

/// The keys marked * above (GET /arena: a list that stays short).
nlohmann::ordered_json process_summary_json(const Process& p);

} // namespace arena::client
