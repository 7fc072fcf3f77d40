// SPDX-License-Identifier: MIT
// JSON replies of the /arena routes; see arena_routes.h. Every read goes through the shared
// reader (arena::stats), which validates each page and takes consistent snapshots.
#include "arena_routes.h"

#include "stats_reader.h"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <sys/stat.h>
#include <unistd.h>

namespace cmond {

namespace st = arena::stats;

namespace {

std::string page_path(const std::string& dir, pid_t pid) {
    return dir + "/" + std::to_string(pid);
}

std::string pid_word(pid_t pid) {
    return "pid " + std::to_string(pid);
}

// Why `pid` has no page to report, as a 404/409 reply, or nullopt with `out` filled.
std::optional<ApiReply> read_live_page(const std::string& dir, pid_t pid, int stale_code,
                                       std::optional<st::Process>& out) {
    const std::string path = page_path(dir, pid);
    struct stat sb {};
    if (::lstat(path.c_str(), &sb) != 0) {
        if (errno == ENOENT || errno == ENOTDIR) {
            return error_reply(404, "No stats page for " + pid_word(pid) + " in " + dir);
        }
        return error_reply(500, "Cannot read the stats page of " + pid_word(pid) + ": " +
                                    std::strerror(errno));
    }
    st::Skip why = st::Skip::Unreadable;
    out = st::read_page(path, &why);
    if (out) {
        return std::nullopt;
    }
    if (why == st::Skip::Dead || why == st::Skip::PidReused) {
        return error_reply(stale_code, "The stats page of " + pid_word(pid) +
                                           " is stale: no live process writes it (" +
                                           st::skip_name(why) + ")");
    }
    return error_reply(404, "No valid stats page for " + pid_word(pid) + " (" + st::skip_name(why) +
                                ")");
}

Json calls_json(const st::Process& p) {
    return {
        {"malloc", p.event(ARENA_EV_malloc_calls)},   {"calloc", p.event(ARENA_EV_calloc_calls)},
        {"realloc", p.event(ARENA_EV_realloc_calls)}, {"free", p.event(ARENA_EV_free_calls)},
        {"aligned", p.event(ARENA_EV_aligned_calls)}, {"new", p.event(ARENA_EV_new_calls)},
        {"delete", p.event(ARENA_EV_delete_calls)}};
}

Json errors_json(const st::Process& p) {
    return {{"double_free", p.global.double_frees},
            {"invalid_free", p.global.invalid_frees},
            {"failed_allocs", p.event(ARENA_EV_failed_allocs)},
            {"foreign_frees", p.event(ARENA_EV_foreign_frees)}};
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

Json process_summary(const st::Process& p) {
    Json j;
    j["pid"] = p.pid;
    j["comm"] = p.comm;
    j["cmdline"] = p.cmdline;
    j["start_time"] = p.start_time;
    j["created_unix_ns"] = p.created_unix_ns;
    j["live_bytes"] = p.live_bytes();
    j["live_blocks"] = p.live_blocks();
    j["peak_live_bytes"] = p.global.peak_live_bytes;
    j["resident_bytes"] = p.global.resident_bytes;
    j["committed_bytes"] = p.global.committed_bytes;
    j["reserved_bytes"] = p.global.reserved_bytes;
    j["calls"] = calls_json(p);
    j["errors"] = errors_json(p);
    return j;
}

Json process_detail(const st::Process& p) {
    Json j = process_summary(p);
    j["path"] = p.path;
    j["page_size"] = p.page_size;
    Json events = Json::object();
    for (unsigned e = 0; e < ARENA_EV_COUNT; ++e) {
        events[st::kEvents[e].name] = p.events[e];
    }
    j["events"] = std::move(events);
    const arena_stats_global& g = p.global;
    j["global"] = {
        {"updated_unix_ns", g.updated_unix_ns},
        {"reserved_bytes", g.reserved_bytes},
        {"committed_bytes", g.committed_bytes},
        {"resident_bytes", g.resident_bytes},
        {"resident_unix_ns", g.resident_unix_ns},
        {"purged_bytes", g.purged_bytes},
        {"purges", g.purges},
        {"trims", g.trims},
        {"regions", g.regions},
        {"heaps_active", g.heaps_active},
        {"heaps_abandoned", g.heaps_abandoned},
        {"peak_live_bytes", g.peak_live_bytes},
        {"double_frees", g.double_frees},
        {"invalid_frees", g.invalid_frees},
        {"purge_delay_ms", g.purge_delay_ms},
    };
    Json classes = Json::array();
    for (const st::SizeClass& c : p.classes) {
        const std::uint64_t live = c.allocs > c.frees ? c.allocs - c.frees : 0;
        classes.push_back({{"size", c.size},
                           {"allocs", c.allocs},
                           {"frees", c.frees},
                           {"live_blocks", live},
                           {"live_bytes", live * c.size}});
    }
    j["size_classes"] = std::move(classes);
    const arena_stats_control& c = p.control;
    j["control"] = {
        {"trim_requests", c.trim_requests},
        {"trims_served", c.trims_served},
        {"trim_pending", c.trim_requests != c.trims_served},
        {"purge_delay_request",
         c.purge_delay_ms == ARENA_STATS_NO_REQUEST ? Json(nullptr) : Json(c.purge_delay_ms)},
    };
    return j;
}

ApiReply arena_list_reply(const std::string& stats_dir) {
    const st::Scan scan = st::scan(stats_dir);
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
    for (const st::Process& p : scan.processes) {
        r.data.push_back(process_summary(p));
    }
    r.extra["stats_dir"] = stats_dir;
    Json skipped = Json::object();
    for (std::size_t i = 0; i < scan.skipped.size(); ++i) {
        if (scan.skipped[i] != 0) {
            skipped[st::skip_name(static_cast<st::Skip>(i))] = scan.skipped[i];
        }
    }
    r.extra["skipped"] = std::move(skipped);
    return r;
}

ApiReply arena_get_reply(const std::string& stats_dir, std::string_view pid_text) {
    const auto pid = parse_pid(pid_text);
    if (!pid) {
        return error_reply(400, "Invalid pid: expected a positive decimal integer");
    }
    std::optional<st::Process> p;
    if (auto problem = read_live_page(stats_dir, *pid, 404, p)) {
        return *problem;
    }
    ApiReply r;
    r.message = "Arena process";
    r.data = process_detail(*p);
    return r;
}

ApiReply arena_trim_reply(const std::string& stats_dir, std::string_view pid_text) {
    const auto pid = parse_pid(pid_text);
    if (!pid) {
        return error_reply(400, "Invalid pid: expected a positive decimal integer");
    }
    std::optional<st::Process> before;
    if (auto problem = read_live_page(stats_dir, *pid, 409, before)) {
        return *problem;
    }
    // The control area is writable by the page's owner (and root): the file mode says so.
    const std::string path = page_path(stats_dir, *pid);
    if (::faccessat(AT_FDCWD, path.c_str(), W_OK, AT_EACCESS) != 0 &&
        (errno == EACCES || errno == EPERM)) {
        struct stat sb {};
        const std::string owner = ::stat(path.c_str(), &sb) == 0
                                      ? " (it belongs to uid " + std::to_string(sb.st_uid) +
                                            ", cmond runs as uid " + std::to_string(::geteuid()) +
                                            ")"
                                      : "";
        return error_reply(403,
                           "Not allowed to write the control area of " + pid_word(*pid) + owner);
    }
    const st::ControlResult result = st::request_trim(stats_dir, *pid);
    if (!result.ok()) {
        // The page changed between the checks above and the request (the process exited, ...).
        int code = 500;
        switch (result.error) {
        case st::ControlError::NoPage:
            code = 404;
            break;
        case st::ControlError::Permission:
            code = 403;
            break;
        case st::ControlError::Stale:
            code = 409;
            break;
        case st::ControlError::Invalid:
            code = 400;
            break;
        case st::ControlError::None:
        case st::ControlError::Io:
            break;
        }
        return error_reply(code, "Trim of " + pid_word(*pid) + " failed: " + result.detail);
    }
    ApiReply r;
    r.code = 202;
    r.message = "Trim requested: " + pid_word(*pid) + " trims on its next allocator slow path";
    r.data = {{"pid", *pid}};
    if (const auto after = st::read_page(path)) {
        r.data["trim_requests"] = after->control.trim_requests;
        r.data["trims_served"] = after->control.trims_served;
    }
    return r;
}

} // namespace cmond
