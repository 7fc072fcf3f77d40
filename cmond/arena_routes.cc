// SPDX-License-Identifier: MIT
// JSON replies of the /arena routes; see arena_routes.h. Every read and request goes through the
// stats client's reader, which validates each page and its process, and every process becomes
// JSON through json.h, so that GET /arena/<pid> and `arena-stat --json` agree; heap profiles
// likewise through profile.h, whose JSON is arena-prof's.
#include "arena_routes.h"

#include "json.h"
#include "profile.h"
#include "reader.h"

#include "arena/profile_page.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <limits>
#include <memory>
#include <sys/stat.h>
#include <unistd.h>

namespace cmond {

namespace ac = arena::client;
namespace prof = arena::client::profile;

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

/// HTTP status and message of a refused control request; `what` names it ("trim", "profile").
ApiReply control_error_reply(const std::string& dir, pid_t pid, const ac::ControlResult& r,
                             const std::string& what) {
    const std::string detail = r.detail.empty() ? "" : ": " + r.detail;
    switch (r.error) {
    case ac::ControlError::Invalid:
        return error_reply(400, "Invalid " + what + " request for " + pid_word(pid) + detail);
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
    return error_reply(500, "The " + what + " request for " + pid_word(pid) + " failed" + detail);
}

/// The reply for a profile that profile::read_pid could not read, by its reason.
ApiReply profile_error_reply(const std::string& dir, pid_t pid, const prof::ReadResult& r) {
    const std::string detail = r.detail.empty() ? "" : ": " + r.detail;
    switch (r.error) {
    case prof::Error::NoPage:
        return error_reply(404, "No stats page for " + pid_word(pid) + " in " + dir + detail);
    case prof::Error::NoProfile:
        return error_reply(404, "No heap profile for " + pid_word(pid) +
                                    ": profiling was never turned on; POST /arena/" +
                                    std::to_string(pid) + "/profile?state=on");
    case prof::Error::BadFile:
        return error_reply(404, "No valid heap profile for " + pid_word(pid) + detail);
    case prof::Error::None:
    case prof::Error::Io:
        break;
    }
    return error_reply(500, "Cannot read the heap profile of " + pid_word(pid) + detail);
}

enum class ProfileFormat { Json, Pprof, Folded };

std::optional<ProfileFormat> profile_format(std::optional<std::string_view> text) {
    if (!text || *text == "json") {
        return ProfileFormat::Json;
    }
    if (*text == "pprof") {
        return ProfileFormat::Pprof;
    }
    if (*text == "folded") {
        return ProfileFormat::Folded;
    }
    return std::nullopt;
}

/// What resolves `pid`'s frames, or null with *why set. The symbolizer reads /proc/<pid>/maps
/// and opens and parses the files it names. So, frames stay addresses:
///  - with another procfs configured (a host's, mounted elsewhere): its pids and paths are not
///    this mount namespace's;
///  - for another user's process (cmond as root, or with CAP_SYS_PTRACE, could read its maps):
///    that user controls the files it maps, and could swap one for a FIFO between libdwfl's
///    check and its open (a worker hung) or feed libdw crafted DWARF. SECURITY.md: no local user
///    may make a reader hang or crash.
std::unique_ptr<prof::Symbolizer> symbolizer_for(pid_t pid, const ac::ScanOptions& options,
                                                 std::string* why) {
    if (options.procfs != "/proc") {
        *why = "cmond reads processes in " + options.procfs +
               ", and resolves frames only for processes in its own /proc";
        return nullptr;
    }
    // Its uids, not the owner of /proc/<pid>: a process made non-dumpable (by itself, or by a
    // change of uid) has a /proc/<pid> of root's.
    const auto uids = ac::process_uids(options.procfs, pid);
    if (!uids) {
        *why = "cannot read the uids of " + pid_word(pid);
        return nullptr;
    }
    const uid_t self = ::geteuid();
    if (std::any_of(uids->begin(), uids->end(), [&](uid_t u) { return u != self; })) {
        *why = pid_word(pid) + " runs as uid " + std::to_string((*uids)[1]) + " and cmond as uid " +
               std::to_string(self) +
               ": cmond resolves frames only in processes of its own user (resolving opens the "
               "files a process maps, which its user controls)";
        return nullptr;
    }
    std::unique_ptr<prof::Symbolizer> sym = prof::Symbolizer::for_pid(pid, why);
    if (sym == nullptr && why->empty()) {
        *why = "cannot read the mappings of " + pid_word(pid);
    }
    return sym;
}

} // namespace

std::optional<uint64_t> parse_positive(std::string_view text, uint64_t max) {
    if (text.empty() || text.front() == '0') {
        return std::nullopt;
    }
    uint64_t v = 0;
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || ptr != text.data() + text.size() || v > max) {
        return std::nullopt;
    }
    return v;
}

std::optional<pid_t> parse_pid(std::string_view text) {
    const auto v = parse_positive(text, std::numeric_limits<pid_t>::max());
    if (!v) {
        return std::nullopt;
    }
    return static_cast<pid_t>(*v);
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
        return control_error_reply(stats_dir, *pid, result, "trim");
    }
    ApiReply r;
    r.code = 202;
    r.message = "Trim requested: " + pid_word(*pid) + " trims on its next allocator slow path";
    r.data = {{"pid", *pid}, {"trim_requests", result.requests}, {"trims_served", result.served}};
    return r;
}

std::variant<ApiReply, RawReply> arena_profile_reply(const std::string& stats_dir,
                                                     const ac::ScanOptions& options,
                                                     std::string_view pid_text,
                                                     std::optional<std::string_view> format) {
    const auto pid = parse_pid(pid_text);
    if (!pid) {
        return error_reply(400, "Invalid pid: expected a positive decimal integer");
    }
    const auto how = profile_format(format);
    if (!how) {
        return error_reply(400, "Invalid format: expected json, pprof or folded");
    }
    prof::Profile profile;
    const prof::ReadResult read = prof::read_pid(stats_dir, *pid, options, &profile);
    if (!read.ok()) {
        return profile_error_reply(stats_dir, *pid, read);
    }
    std::string why;
    const std::unique_ptr<prof::Symbolizer> sym = symbolizer_for(*pid, options, &why);
    switch (*how) {
    case ProfileFormat::Pprof:
        return RawReply{"application/octet-stream", prof::to_pprof(profile, sym.get())};
    case ProfileFormat::Folded:
        return RawReply{"text/plain; charset=utf-8",
                        prof::to_folded(profile, sym.get(), prof::Order::LiveBytes)};
    case ProfileFormat::Json:
        break;
    }
    ApiReply r;
    r.message = "Heap profile";
    r.data = Json::parse(prof::to_json(profile, sym.get()));
    r.extra["symbolized"] = sym != nullptr;
    if (sym == nullptr) {
        r.extra["symbolize_error"] = why;
    }
    return r;
}

ApiReply arena_profile_request_reply(const std::string& stats_dir, const ac::ScanOptions& options,
                                     std::string_view pid_text,
                                     std::optional<std::string_view> state,
                                     std::optional<std::string_view> rate) {
    const auto pid = parse_pid(pid_text);
    if (!pid) {
        return error_reply(400, "Invalid pid: expected a positive decimal integer");
    }
    uint64_t want = 0; // state=off
    if (state == "on") {
        want = ARENA_PROFILE_DEFAULT_RATE;
        if (rate) {
            const auto given = parse_positive(*rate, ARENA_PROFILE_MAX_RATE);
            if (!given) {
                return error_reply(400, "Invalid rate: expected the mean bytes between samples, "
                                        "a decimal integer from 1 to " +
                                            std::to_string(ARENA_PROFILE_MAX_RATE));
            }
            want = *given;
        }
    } else if (state == "off") {
        if (rate) {
            return error_reply(400, "Invalid query: rate goes with state=on only");
        }
    } else {
        return error_reply(400, "Invalid state: expected state=on (with an optional rate) or "
                                "state=off");
    }
    const ac::ControlResult result = prof::request_profile(stats_dir, *pid, want, options);
    if (!result.ok()) {
        return control_error_reply(stats_dir, *pid, result, "profile");
    }
    ApiReply r;
    r.code = 202;
    r.message = want == 0 ? "Profiling off requested: " + pid_word(*pid) +
                                " stops sampling on its next allocator slow path"
                          : "Profiling requested: " + pid_word(*pid) +
                                " samples an allocation every " + std::to_string(want) +
                                " bytes on average from its next allocator slow path";
    r.data = {{"pid", *pid},
              {"profile_rate", want},
              {"profile_requests", result.requests},
              {"profile_served", result.served}};
    return r;
}

} // namespace cmond
