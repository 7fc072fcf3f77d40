// SPDX-License-Identifier: MIT
// The default command table and the branch whitelist; see commands.h.
#include "commands.h"

namespace cmond {

using namespace std::chrono_literals;

namespace {
constexpr std::size_t kSmallOutput = std::size_t{64} << 10;
constexpr std::size_t kLargeOutput = std::size_t{1} << 20;
} // namespace

bool CommandSpec::takes_branch() const {
    for (const auto& arg : argv) {
        if (arg.find(kBranchPlaceholder) != std::string::npos) {
            return true;
        }
    }
    return false;
}

std::optional<std::string> CommandSpec::coalesce_error() const {
    if (method != "GET") {
        return "only GET routes may share runs (" + method + " " + route +
               " changes state: every request must run the command itself)";
    }
    return std::nullopt;
}

std::vector<CommandSpec> default_commands() {
    // name, method, route, argv, timeout, output cap, workdir, concurrency, enabled, coalesce.
    // Only the read-only reports coalesce by default; /deploy_branch is a GET route but deploys.
    return {
        {"health", "GET", "/health", {"uptime"}, 10s, kSmallOutput, "", 8, true, true},
        {"logs",
         "GET",
         "/logs",
         {"journalctl", "-n", "50", "--no-pager"},
         30s,
         kLargeOutput,
         "",
         2,
         true,
         true},
        {"reboot", "POST", "/reboot", {"reboot"}, 60s, kSmallOutput, "", 1, true, false},
        // `git pull` stops option parsing at "--", but it forwards the refspec to `git fetch`
        // without one (git 2.39: `git pull origin -- --upload-pack=CMD` runs CMD). So "--" is
        // kept for pull's own parser, and branch_error() (no leading '-') is the real guard.
        {"sync_upstream",
         "PUT",
         "/sync_upstream",
         {"git", "pull", "origin", "--", "{branch}"},
         300s,
         kLargeOutput,
         "",
         1,
         true,
         false},
        // Scripts get the branch as $1; it can never start with '-' (branch_error).
        {"deploy_branch",
         "GET",
         "/deploy_branch",
         {"./deploy.sh", "{branch}"},
         600s,
         kLargeOutput,
         "",
         1,
         true,
         false},
        {"teardown_branch",
         "DELETE",
         "/teardown_branch",
         {"./teardown.sh", "{branch}"},
         600s,
         kLargeOutput,
         "",
         1,
         true,
         false},
    };
}

const CommandSpec* find_command(const std::vector<CommandSpec>& table, std::string_view name) {
    for (const auto& c : table) {
        if (c.name == name) {
            return &c;
        }
    }
    return nullptr;
}

CommandSpec* find_command(std::vector<CommandSpec>& table, std::string_view name) {
    for (auto& c : table) {
        if (c.name == name) {
            return &c;
        }
    }
    return nullptr;
}

std::optional<std::string> branch_error(std::string_view branch) {
    if (branch.empty()) {
        return "is empty";
    }
    if (branch.size() > kMaxBranchLength) {
        return "is longer than " + std::to_string(kMaxBranchLength) + " characters";
    }
    for (const char c : branch) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '/' || c == '-';
        if (!ok) {
            return "may only contain letters, digits and ._/-";
        }
    }
    if (branch.front() == '-') {
        return "must not start with '-'";
    }
    if (branch.front() == '/' || branch.back() == '/') {
        return "must not start or end with '/'";
    }
    if (branch.find("..") != std::string_view::npos) {
        return "must not contain '..'";
    }
    if (branch.find("//") != std::string_view::npos) {
        return "must not contain '//'";
    }
    if (branch.back() == '.') {
        return "must not end with '.'";
    }
    // Per path component: no leading '.', no ".lock" suffix (git check-ref-format).
    std::size_t start = 0;
    while (start <= branch.size()) {
        std::size_t end = branch.find('/', start);
        if (end == std::string_view::npos) {
            end = branch.size();
        }
        const std::string_view part = branch.substr(start, end - start);
        if (!part.empty() && part.front() == '.') {
            return "no path component may start with '.'";
        }
        if (part.size() >= 5 && part.substr(part.size() - 5) == ".lock") {
            return "no path component may end with '.lock'";
        }
        start = end + 1;
    }
    return std::nullopt;
}

std::optional<std::string> argv_template_error(const std::vector<std::string>& argv) {
    if (argv.empty()) {
        return "must name a program";
    }
    if (argv.front().empty()) {
        return "argv[0] must not be empty";
    }
    if (argv.front().find(kBranchPlaceholder) != std::string::npos) {
        return "argv[0] must not contain {branch}";
    }
    for (const auto& arg : argv) {
        if (arg.find('\0') != std::string::npos) {
            return "arguments must not contain NUL bytes";
        }
        // "{word}" is a placeholder; any word but "branch" is a typo like "{brnach}". Braces
        // that do not enclose a bare word ("{print $1}" for awk) are plain text.
        for (auto open = arg.find('{'); open != std::string::npos; open = arg.find('{', open + 1)) {
            std::size_t end = open + 1;
            while (end < arg.size() && ((arg[end] >= 'a' && arg[end] <= 'z') ||
                                        (arg[end] >= 'A' && arg[end] <= 'Z') || arg[end] == '_')) {
                ++end;
            }
            if (end > open + 1 && end < arg.size() && arg[end] == '}' &&
                std::string_view(arg).substr(open, end + 1 - open) != kBranchPlaceholder) {
                return "unknown placeholder " + arg.substr(open, end + 1 - open) +
                       " (only {branch} exists)";
            }
        }
    }
    return std::nullopt;
}

std::vector<std::string> expand_argv(const CommandSpec& spec, std::string_view branch) {
    std::vector<std::string> out;
    out.reserve(spec.argv.size());
    for (const auto& arg : spec.argv) {
        std::string a = arg;
        for (auto pos = a.find(kBranchPlaceholder); pos != std::string::npos;
             pos = a.find(kBranchPlaceholder, pos + branch.size())) {
            a.replace(pos, kBranchPlaceholder.size(), branch);
        }
        out.push_back(std::move(a));
    }
    return out;
}

} // namespace cmond
