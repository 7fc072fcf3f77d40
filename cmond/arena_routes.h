// SPDX-License-Identifier: MIT
// The /arena API: libarena stats pages, read with the stats client library (libarena/client:
// reader.h, json.h), as CMon-shaped replies.
//   GET  /arena             200, data: [summary, ...] sorted by pid; extra "stats_dir" and
//                           "skipped" (entries not reported, by reason)
//   GET  /arena/<pid>       200, data: detail; 404 when the process has no live, valid page
//   POST /arena/<pid>/trim  202, data: {"pid", "trim_requests", "trims_served"}: the request is
//                           in the control area and the allocator serves it on its next slow
//                           path; 404 no page, 403 cmond may not write it (another user's
//                           process), 409 the page is stale (its process is gone)
// A <pid> that is not a positive decimal integer gives 400 on both. detail is the process JSON
// of json.h (the schema of `arena-stat --json` too, its rates null here); summary is its short
// form (process_summary_json).
#pragma once

#include "response.h"

#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>

namespace arena::client {
struct ScanOptions;
}

namespace cmond {

/// A positive decimal pid without sign or leading zeros, or nullopt.
std::optional<pid_t> parse_pid(std::string_view text);

/// `stats_dir`: the base directory of stats pages; `options`: how the reader checks processes
/// (its procfs).
ApiReply arena_list_reply(const std::string& stats_dir, const arena::client::ScanOptions& options);
ApiReply arena_get_reply(const std::string& stats_dir, const arena::client::ScanOptions& options,
                         std::string_view pid_text);
ApiReply arena_trim_reply(const std::string& stats_dir, const arena::client::ScanOptions& options,
                          std::string_view pid_text);

} // namespace cmond
