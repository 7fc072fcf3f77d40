// SPDX-License-Identifier: MIT
// The only place in cmond that starts processes. A command runs from an argv array (never a
// shell) via posix_spawn, in a new session and process group, with stdin from /dev/null,
// stdout and stderr into one pipe, every other descriptor closed, default signal dispositions
// and an empty signal mask. The parent polls the pipe and a pidfd against a deadline; at the
// deadline the whole group gets SIGTERM, then SIGKILL after the grace period. When the direct
// child has exited, remaining output is drained for at most kLinger, and then whatever is left
// of its process group is killed: a command's processes never outlive it (long-lived services
// must be started through systemd-run or similar). Every child is reaped.
//
// Environment: cmond's own, except LD_PRELOAD. cmond may be started preloaded (arena-run, a
// launcher's LD_PRELOAD=libarena.so), and a preload meant for the daemon must not follow into
// git, journalctl or deploy scripts; a command gets an LD_PRELOAD only from RunSpec::ld_preload
// (the `command_ld_preload` option).
#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>
#include <set>
#include <string>
#include <sys/types.h>
#include <vector>

namespace cmond {

struct RunSpec {
    std::vector<std::string> argv;        // argv[0] without '/' is looked up in PATH
    std::string workdir;                  // chdir before exec; must exist
    std::chrono::milliseconds timeout;    // from spawn to SIGTERM
    std::chrono::milliseconds kill_grace; // from SIGTERM to SIGKILL
    std::size_t output_cap;               // bytes kept; the rest is read and dropped
    std::string ld_preload = {};          // the command's LD_PRELOAD; empty: none
};

struct RunResult {
    enum class Outcome {
        Exited,      // exit_code is the exit status
        Signaled,    // killed by a signal it did not get from us; exit_code = 128 + signal
        TimedOut,    // we killed it at its deadline; exit_code = 128 + signal
        Killed,      // we killed it because cmond is shutting down; exit_code = 128 + signal
        SpawnFailed, // could not be started (e.g. not found); exit_code = 127, see error
    };
    Outcome outcome = Outcome::SpawnFailed;
    int exit_code = 127;
    std::string output;     // stdout and stderr interleaved, at most output_cap bytes
    bool truncated = false; // output was longer than output_cap
    std::string error;      // why it could not be started (SpawnFailed)
    std::chrono::nanoseconds duration{0};

    bool ok() const { return outcome == Outcome::Exited && exit_code == 0; }
};

/// Short name of an outcome ("exited", "signaled", "timeout", "killed", "spawn_failed").
const char* outcome_name(RunResult::Outcome outcome);

class Runner {
public:
    /// After the direct child exits, how long output is still drained from group members.
    static constexpr std::chrono::milliseconds kLinger{500};

    /// Runs one command to completion (or to its deadline). Thread-safe; blocks the caller.
    RunResult run(const RunSpec& spec);

    /// Refuses every later run() (SpawnFailed, "shutting down"). Thread-safe.
    void stop_accepting();

    /// True after stop_accepting().
    bool stopping() const;

    /// Sends SIGKILL to the process group of every running command; their run() calls return
    /// Outcome::Killed. Thread-safe.
    void kill_all();

    /// Commands running now.
    std::size_t running() const;

private:
    mutable std::mutex mutex_;
    bool stopping_ = false;
    bool killed_all_ = false;       // kill_all() ran: groups registered later die at once
    std::set<pid_t> groups_;        // process groups of running commands
    std::set<pid_t> killed_groups_; // ... that kill_all() has killed
};

} // namespace cmond
