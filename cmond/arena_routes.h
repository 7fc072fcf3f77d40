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
//   GET  /arena/<pid>/profile[?format=json|pprof|folded]
//                           the heap profile (profile_page.h) through the stats client's
//                           profile.h: json (the default) 200, data: profile::to_json's object,
//                           its frames resolved for the process when cmond can (extra
//                           "symbolized", and "symbolize_error" when it could not: the frames
//                           are addresses then); pprof 200, application/octet-stream (gzip'd
//                           profile.proto, for `go tool pprof`); folded 200, text/plain (one
//                           "f1;f2;f3 N" line per stack, N its live bytes). 404 no page, or
//                           profiling was never turned on (no profile region); 400 bad format
//   POST /arena/<pid>/profile?state=on[&rate=N] | ?state=off
//                           202, data: {"pid", "profile_rate", "profile_requests",
//                           "profile_served"}: asks the process to sample every N bytes (1 ..
//                           ARENA_PROFILE_MAX_RATE; ARENA_PROFILE_DEFAULT_RATE without rate), or
//                           to stop; served on its next allocator slow path. 400 for a missing
//                           or bad state or rate (rate with state=off too); 404, 403, 409 as trim
// A <pid> that is not a positive decimal integer gives 400 on all of them. detail is the
// process JSON of json.h (the schema of `arena-stat --json` too, its rates null here); summary
// is its short form (process_summary_json).
#pragma once

#include "response.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <variant>

namespace arena::client {
struct ScanOptions;
}

namespace cmond {

/// A decimal integer in 1..max without sign or leading zeros, or nullopt.
std::optional<uint64_t> parse_positive(std::string_view text, uint64_t max);

/// A positive decimal pid without sign or leading zeros, or nullopt.
std::optional<pid_t> parse_pid(std::string_view text);

/// A 200 reply whose body is not CMon JSON: a heap profile in pprof or folded form.
struct RawReply {
    std::string content_type;
    std::string body;
};

/// `stats_dir`: the base directory of stats pages; `options`: how the reader checks processes
/// (its procfs).
ApiReply arena_list_reply(const std::string& stats_dir, const arena::client::ScanOptions& options);
ApiReply arena_get_reply(const std::string& stats_dir, const arena::client::ScanOptions& options,
                         std::string_view pid_text);
ApiReply arena_trim_reply(const std::string& stats_dir, const arena::client::ScanOptions& options,
                          std::string_view pid_text);
/// `format`: the query's format value, if given.
std::variant<ApiReply, RawReply> arena_profile_reply(const std::string& stats_dir,
                                                     const arena::client::ScanOptions& options,
                                                     std::string_view pid_text,
                                                     std::optional<std::string_view> format);
/// `state`, `rate`: the query's values, if given.
ApiReply arena_profile_request_reply(const std::string& stats_dir,
                                     const arena::client::ScanOptions& options,
                                     std::string_view pid_text,
                                     std::optional<std::string_view> state,
                                     std::optional<std::string_view> rate);

} // namespace cmond
