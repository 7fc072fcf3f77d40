// SPDX-License-Identifier: MIT
// The only place in cmond that starts processes. A command runs from an argv array (never a
// shell) via posix_spawn, in a new session and process group, with stdin from /dev/null,
// stdout and stderr into one pipe, every other descriptor closed, default signal dispositions
// and an empty signal mask.
//
// No process of a run outlives it. Each run has a supervisor: a small process of cmond's own
// (a clone sharing cmond's memory, see runner.cc) that is the child subreaper
// (PR_SET_CHILD_SUBREAPER) of the command it starts. Whatever the command forks stays below the
// supervisor whatever it does: a descendant that calls setsid or daemonizes (fork, setsid,
// fork) is reparented to it, not to init. The supervisor reads the output, enforces the
// deadline (SIGTERM to the command's group, then SIGKILL after the grace period), and at the
// end of the run (the command exited, its deadline, kill_all() or a SIGTERM to the supervisor,
// cmond's death) SIGKILLs and reaps every process left below it. Since each run has its own
// supervisor, concurrent runs never touch each other's processes. When the command has exited,
// remaining output is still drained for at most kLinger before the rest is killed: long-lived
// services must be started through systemd-run or similar.
//
// Output cap: once output_cap bytes are kept and more arrives, the supervisor closes the pipe,
// as `cmd | head -c N` does: the command's next write fails with EPIPE, or kills it with
// SIGPIPE (the default it runs with). A `yes` ends at once instead of at its timeout. The
// command is not lied about: its status is what it did with the broken pipe (usually
// Signaled with 128 + SIGPIPE, or Exited 141 from a shell whose child died of it), and
// `truncated` and `ended_by_cap` say that the cap ended it. A command that survives EPIPE
// keeps its status; its timeout still bounds it.
//
// Environment: cmond's own, except LD_PRELOAD. cmond may be started preloaded (arena-run, a
// launcher's LD_PRELOAD=libarena.so), and a preload meant for the daemon must not follow into
// git, journalctl or deploy scripts; a command gets an LD_PRELOAD only from RunSpec::ld_preload
// (the `command_ld_preload` option).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <mutex>
#include <set>
#include <string>
#include <sys/types.h>
#include <vector>

namespace cmond {

struct Supervision; // runner.cc: one run's supervisor process, what it needs and finds

struct RunSpec {
    std::vector<std::string> argv;        // argv[0] without '/' is looked up in PATH
    std::string workdir;                  // chdir before exec; must exist
    std::chrono::milliseconds timeout;    // from spawn to SIGTERM
    std::chrono::milliseconds kill_grace; // from SIGTERM to SIGKILL
    std::size_t output_cap;               // bytes kept; at more, the pipe is closed (see top)
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
    bool truncated = false; // output was longer than output_cap: cmond closed the pipe there
    // truncated, and the command then died of the broken pipe (SIGPIPE, or exit status
    // 128 + SIGPIPE from a shell): the cap ended it, not a fault of its own. It did not
    // complete all the same (a deploy script stopped half-way), so outcome is not Exited 0.
    bool ended_by_cap = false;
    std::string error; // why it could not be started (SpawnFailed), or a supervision failure
    std::chrono::nanoseconds duration{0};

    bool ok() const { return outcome == Outcome::Exited && exit_code == 0; }
};

class Runner {
public:
    /// After the command exits, how long output is still drained from its descendants.
    static constexpr std::chrono::milliseconds kLinger{500};

    /// Runs one command to completion (or to its deadline). Thread-safe; blocks the caller.
    RunResult run(const RunSpec& spec);

    /// Refuses every later run() (SpawnFailed, "shutting down"). Thread-safe.
    void stop_accepting();

    /// True after stop_accepting().
    bool stopping() const;

    /// Ends every running command and all its descendants (SIGKILL); their run() calls return
    /// Outcome::Killed, and so do the runs started after it. Thread-safe.
    void kill_all();

    /// Commands running now.
    std::size_t running() const;

private:
    /// Runs the command prepared in `s` under its own supervisor process, and returns when
    /// that has ended (0), or could not be started (an errno value).
    int supervise(Supervision& s);

    mutable std::mutex mutex_;
    bool stopping_ = false;
    // kill_all() ran. Read by supervisors, which share cmond's memory but must not lock.
    std::atomic<bool> killed_all_{false};
    // The supervisor pid of each running command (written by clone: 0 until it is known).
    // Erased before the supervisor is reaped, so kill_all() never signals a reused pid.
    std::set<pid_t*> supervisors_;
};

} // namespace cmond
