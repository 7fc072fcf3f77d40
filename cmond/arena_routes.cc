// SPDX-License-Identifier: MIT
// JSON replies of the /arena routes; see arena_routes.h. Every read and request goes through the
// stats client's reader, which validates each page and its process, and every process becomes
// JSON through json.h, so that GET /arena/<pid> and `arena-stat --json` agree.
#include "arena_routes.h"

#include "json.h"
#include "reader.h"

#include <cerrno>
#include <charconv>
#include <limits>
#include <sys/stat.h>

namespace cmond {

namespace ac = arena::client;

namespace {

std::string pid_word(pid_t pid) {
    return "pid " + std::to_string(pid);
}

/// The reply for a pid whose page read_pid() refused, by its reason.
ApiReply no_page_reply(const std::string& dir, pid_t pid, ac::Skip why) {
    switch (why) {
    case ac::Skip::Foreign:
        return error_reply(404, "No stats page for " + pid_word(pid) + " in " + dir);
    case ac::Skip::Dead:
        return error_reply(404, "No stats page for " + pid_word(pid) + " in " + dir +
                                    ": no such process");
    case ac::Skip::PidReused:
    case ac::Skip::Exec:
        return error_reply(404, "The stats page of " + pid_word(pid) + " is stale (" +
                                    ac::skip_name(why) + ")");
    default:
        return error_reply(404, "No valid stats page for " + pid_word(pid) + " (" +
                                    ac::skip_name(why) + ")");
    }
}

/// HTTP status and message of a refused control request.
ApiReply control_error_reply(const std::string& dir, pid_t pid, const ac::ControlResult& r) {
    const std::string detail = r.detail.empty() ? "" : ": " + r.detail;
    switch (r.error) {
    case ac::ControlError::Invalid:
        return error_reply(400, "Invalid trim request for " + pid_word(pid) + detail);
    case ac::ControlError::NoPage:
        return error_reply(404, "No stats page for " + pid_word(pid) + " in " + dir + detail);
    case ac::ControlError::Permission:
        return error_reply(403,
                           "Not allowed to write the control area of " + pid_word(pid) + detail);
    case ac::ControlError::Stale:
        return error_reply(409, "The stats page of " + pid_word(pid) + " is stale" + detail);
    case ac::ControlError::None:
    case ac::ControlError::Io:
        break;
    }
    return error_reply(500, "Trim of " + pid_word(pid) + " failed" + detail);
}

} // namespace

std::optional<pid_t> parse_pid(std::string_view text) {
    if (text.empty() || text.size() > 10 || text.front() == '0') {
        return std::nullopt;
    }
    long long v = 0;
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || ptr != text.data() + text.size() || v <= 0 ||
        v > std::numeric_limits<pid_t>::max()) {
        return std::nullopt;
    }
    return static_cast<pid_t>(v);
}

ApiReply arena_list_reply(const std::string& stats_dir, const ac::ScanOptions& options) {
    const ac::Scan scan = ac::scan(stats_dir, options);
    if (!scan.error.empty()) {
        struct stat sb {};
        if (::stat(stats_dir.c_str(), &sb) != 0 && errno == ENOENT) {
            // No process on libarena has started yet: nothing to report, not an error.
            ApiReply r;
            r.message = "Arena processes (no stats directory yet)";
            r.data = Json::array();
            r.extra["stats_dir"] = stats_dir;
            return r;
        }
        return error_reply(500, "Cannot read the stats directory: " + scan.error);
    }
    ApiReply r;
    r.message = "Arena processes";
    r.data = Json::array();
    for (const ac::Process& p : scan.processes) {
        r.data.push_back(ac::process_summary_json(p));
    }
    r.extra["stats_dir"] = stats_dir;
    Json skipped = Json::object();
    for (std::size_t i = 0; i < scan.skipped.size(); ++i) {
        if (scan.skipped[i] != 0) {
            skipped[ac::skip_name(static_cast<ac::Skip>(i))] = scan.skipped[i];
        }
    }
    r.extra["skipped"] = std::move(skipped);
    if (scan.truncated) {
        r.extra["truncated"] = true; // a cap ended the scan: the list is incomplete
    }
    return r;
}

ApiReply arena_get_reply(const std::string& stats_dir, const ac::ScanOptions& options,
                         std::string_view pid_text) {
    const auto pid = parse_pid(pid_text);
    if (!pid) {
        return error_reply(400, "Invalid pid: expected a positive decimal integer");
    }
    ac::Skip why = ac::Skip::Foreign;
    const std::optional<ac::Process> p = ac::read_pid(stats_dir, *pid, options, &why);
    if (!p) {
        return no_page_reply(stats_dir, *pid, why);
    }
    ApiReply r;
    r.message = "Arena process";
    r.data = ac::process_json(*p); // no rates: null, as json.h says
    return r;
}

ApiReply arena_trim_reply(const std::string& stats_dir, const ac::ScanOptions& options,
                          std::string_view pid_text) {
    const auto pid = parse_pid(pid_text);
    if (!pid) {
        return error_reply(400, "Invalid pid: expected a positive decimal integer");
    }
    // The reader validates the page as for GET and refuses a page cmond may not write (another
    // user's): no check by path here, which could differ from the file it writes.
    const ac::ControlResult result = ac::request_trim(stats_dir, *pid, options);
    if (!result.ok()) {
        return control_error_reply(stats_dir, *pid, result);
    }
    ApiReply r;
    r.code = 202;
    r.message = "Trim requested: " + pid_word(*pid) + " trims on its next allocator slow path";
    r.data = {{"pid", *pid}, {"trim_requests", result.requests}, {"trims_served", result.served}};
    return r;
}

} // namespace cmond
