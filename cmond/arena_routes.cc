// SPDX-License-Identifier: MIT
// JSON replies of the /arena routes; see arena_routes.h.
#include "arena_routes.h"

#include <charconv>
#include <limits>

namespace cmond {

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

Json process_json(const ProcessStats& p) {
    Json j;
    j["pid"] = p.pid;
    j["start_time"] = p.start_time;
    j["comm"] = p.comm;
    j["cmdline"] = p.cmdline;
    j["counters"] = Json::object();
    for (const auto& c : p.counters) {
        j["counters"][c.name] = c.value;
    }
    j["histograms"] = Json::object();
    for (const auto& h : p.histograms) {
        Json buckets = Json::array();
        for (std::size_t i = 0; i < h.counts.size(); ++i) {
            Json b;
            if (i < h.upper_bounds.size()) {
                b["le"] = h.upper_bounds[i];
            } else {
                b["le"] = "+Inf";
            }
            b["count"] = h.counts[i];
            buckets.push_back(std::move(b));
        }
        j["histograms"][h.name] = {{"buckets", std::move(buckets)}, {"sum", h.sum}};
    }
    return j;
}

ApiReply arena_list_reply(ArenaSource& source) {
    ApiReply r;
    r.message = "Arena processes";
    r.data = Json::array();
    for (const auto& p : source.list()) {
        r.data.push_back(process_json(p));
    }
    return r;
}

ApiReply arena_get_reply(ArenaSource& source, std::string_view pid_text) {
    const auto pid = parse_pid(pid_text);
    if (!pid) {
        return error_reply(400, "Invalid pid: expected a positive decimal integer");
    }
    const auto p = source.get(*pid);
    if (!p) {
        return error_reply(404, "No stats page for pid " + std::to_string(*pid));
    }
    ApiReply r;
    r.message = "Arena process";
    r.data = process_json(*p);
    return r;
}

ApiReply arena_trim_reply(ArenaSource& source, std::string_view pid_text) {
    const auto pid = parse_pid(pid_text);
    if (!pid) {
        return error_reply(400, "Invalid pid: expected a positive decimal integer");
    }
    const TrimResult t = source.trim(*pid);
    const std::string suffix = t.detail.empty() ? "" : ": " + t.detail;
    switch (t.status) {
    case TrimStatus::Requested: {
        ApiReply r;
        r.message = "Trim requested" + suffix;
        r.data = {{"pid", *pid}};
        return r;
    }
    case TrimStatus::NoSuchProcess:
        return error_reply(404, "No stats page for pid " + std::to_string(*pid) + suffix);
    case TrimStatus::PermissionDenied:
        return error_reply(403, "Not allowed to control pid " + std::to_string(*pid) + suffix);
    case TrimStatus::Failed:
        break;
    }
    return error_reply(500, "Trim failed for pid " + std::to_string(*pid) + suffix);
}

} // namespace cmond
