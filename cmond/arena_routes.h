// SPDX-License-Identifier: MIT
// The /arena API over an ArenaSource, as CMon-shaped replies:
//   GET  /arena             -> data: [process, ...]
//   GET  /arena/<pid>       -> data: process            (404 when it has no stats page)
//   POST /arena/<pid>/trim  -> data: {"pid": N}         (404, 403 or 500 when it cannot)
// where process = {"pid", "start_time", "comm", "cmdline", "counters": {name: value},
// "histograms": {name: {"buckets": [{"le", "count"}], "sum"}}}. A <pid> that is not a
// positive decimal integer gives 400. server.cc registers these only when it has a source.
#pragma once

#include "arena_source.h"
#include "response.h"

#include <optional>
#include <string_view>

namespace cmond {

/// A positive decimal pid without sign or leading zeros, or nullopt.
std::optional<pid_t> parse_pid(std::string_view text);

/// The JSON object for one process.
Json process_json(const ProcessStats& p);

ApiReply arena_list_reply(ArenaSource& source);
ApiReply arena_get_reply(ArenaSource& source, std::string_view pid_text);
ApiReply arena_trim_reply(ArenaSource& source, std::string_view pid_text);

} // namespace cmond
