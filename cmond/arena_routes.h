// SPDX-License-Identifier: MIT
// The /arena API: libarena stats pages (read with arena::stats, the shared reader library) as
// CMon-shaped replies.
//   GET  /arena             200, data: [summary, ...] sorted by pid; extra "stats_dir" and
//                           "skipped" (files not reported, by reason)
//   GET  /arena/<pid>       200, data: detail; 404 when there is no live, valid page
//   POST /arena/<pid>/trim  202, data: {"pid", "trim_requests", "trims_served"}: the request is
//                           in the control area and the allocator serves it on its next slow
//                           path; 404 no page, 403 cmond may not write it (another user's
//                           process), 409 the page is stale (its process is gone)
// A <pid> that is not a positive decimal integer gives 400 on both. summary = pid, comm,
// cmdline, start_time (clock ticks after boot, as the page has it), created_unix (seconds),
// live/peak/resident/committed/reserved bytes, live_blocks, calls {api: n}, errors {kind: n}.
// detail = summary + page path, page_size, every event counter, every gauge, size classes and
// the control area.
#pragma once

#include "response.h"

#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>

namespace arena::stats {
struct Process;
}

namespace cmond {

/// A positive decimal pid without sign or leading zeros, or nullopt.
std::optional<pid_t> parse_pid(std::string_view text);

/// The JSON objects for one process.
Json process_summary(const arena::stats::Process& p);
Json process_detail(const arena::stats::Process& p);

ApiReply arena_list_reply(const std::string& stats_dir);
ApiReply arena_get_reply(const std::string& stats_dir, std::string_view pid_text);
ApiReply arena_trim_reply(const std::string& stats_dir, std::string_view pid_text);

} // namespace cmond
