// SPDX-License-Identifier: MIT
// THE command table: which HTTP route runs which program, and under which limits.
// The default table below is the original CMon API; a config file may override any field of any
// entry except its route and method (the API clients rely on), but cannot add entries.
// An argv element may contain the placeholder "{branch}", replaced by the request's validated
// `branch` query value (default "main"); only routes whose argv uses it accept that parameter.
// Programs run without a shell (see runner.h); argv[0] without a '/' is looked up in PATH.
//
// Coalescing (`coalesce`, GET routes only; see coalescer.h): a request that arrives while the
// command is running with the same argv waits for the next run, which starts when the current
// one ends, and shares its output with every request that waited for it. No answer ever comes
// from a process that started before its request arrived.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cmond {

using Millis = std::chrono::milliseconds;

struct CommandSpec {
    std::string name;              // table key, config section name and metrics label ("health")
    std::string method;            // HTTP method of the route; fixed by the API
    std::string route;             // HTTP path; fixed by the API
    std::vector<std::string> argv; // argv template; "{branch}" is the only placeholder
    Millis timeout;                // then SIGTERM to the process group, SIGKILL after kill_grace
    std::size_t output_cap;        // bytes of stdout+stderr kept; the rest is read and dropped
    std::string workdir;           // working directory; empty means Config::workdir
    unsigned concurrency;          // requests in progress at once; one more gets 429
    bool enabled;                  // false: the route answers 403
    bool coalesce;                 // share runs between requests (GET routes only)

    /// True when some argv element contains "{branch}".
    bool takes_branch() const;

    /// Why `coalesce` cannot be true for this command, or nullopt when it can: a request that
    /// changes state (any method but GET) must run the command itself.
    std::optional<std::string> coalesce_error() const;
};

inline constexpr std::string_view kBranchPlaceholder = "{branch}";
inline constexpr std::string_view kDefaultBranch = "main";
inline constexpr std::size_t kMaxBranchLength = 100;

/// The original CMon command table (the defaults of every entry).
std::vector<CommandSpec> default_commands();

/// The entry named `name`, or nullptr.
const CommandSpec* find_command(const std::vector<CommandSpec>& table, std::string_view name);
CommandSpec* find_command(std::vector<CommandSpec>& table, std::string_view name);

/// Why `branch` is not an acceptable branch name, or nullopt when it is.
/// Accepted: 1..100 characters from [A-Za-z0-9._/-], not starting with '-', '/' or '.', no "..",
/// no "//", no path component starting with '.', not ending with '/' or '.', and no component
/// ending in ".lock" (the rules of git check-ref-format that matter here, plus a charset that
/// no shell or option parser can misread).
std::optional<std::string> branch_error(std::string_view branch);

/// Why `argv` is not an acceptable argv template (empty, empty argv[0], NUL bytes, a "{word}"
/// placeholder other than "{branch}"), or nullopt when it is.
std::optional<std::string> argv_template_error(const std::vector<std::string>& argv);

/// The argv to run: the template with every "{branch}" replaced by `branch`.
/// Precondition: branch_error(branch) is nullopt when the template takes a branch.
std::vector<std::string> expand_argv(const CommandSpec& spec, std::string_view branch);

} // namespace cmond
