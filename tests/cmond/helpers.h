// SPDX-License-Identifier: MIT
// Test helpers for cmond (TempDir, read_file and eventually are in tests/lib/common.h): Daemon,
// which runs the real cmond binary (CMOND_BIN) as a child on a port it picks itself (--port 0,
// read back from the "cmond: listening on URL" line on its stdout) and always kills and reaps it
// when it goes out of scope; and Process, any other program run alongside a test (a preloaded
// workload).
#pragma once

#include "common.h"
#include "process.h"
#include "profile.h"

#include <chrono>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace cmond_test {

/// A random 64-hex-digit key.
std::string random_key_hex();

using testing::required_env;

/// The profile of `pid` as the profile library reads it (what GET /arena/<pid>/profile must
/// show); a failed read fails the test.
arena::client::profile::Profile read_profile(const std::string& stats_dir, int pid,
                                             const arena::client::ScanOptions& options);

/// The uid and gid of the user "nobody" (65534 when it has no passwd entry).
std::pair<uid_t, gid_t> nobody();

/// chown -R of `path` (no symlinks followed). Returns false on any failure.
bool chown_tree(const std::string& path, uid_t uid, gid_t gid);

/// True while `pid` exists and is not a zombie.
bool process_alive(pid_t pid);

/// The outcome of a cmond run that was expected to end by itself (status -1 when it did not
/// exit in time and was killed).
using Exit = testing::RunResult;

/// Runs cmond with `args` (in `cwd`) and waits up to `limit` for it to exit.
Exit run_cmond(const std::vector<std::string>& args, const std::string& cwd,
               std::chrono::milliseconds limit = std::chrono::seconds(10));

/// How to start a child: environment entries ("K=V") added to (or replacing those of) this
/// process's environment, and optionally another user to run as (needs root).
struct Launch {
    std::vector<std::string> env;
    std::optional<std::pair<uid_t, gid_t>> run_as;
};

class Daemon {
public:
    /// Starts cmond with `args` + --port 0 --syslog false in `dir`, and waits for its listening
    /// line. On failure, `started()` is false and `err()` tells why.
    Daemon(const testing::TempDir& dir, std::vector<std::string> args, const Launch& launch = {});
    ~Daemon();
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    bool started() const { return port_ > 0; }
    int port() const { return port_; }
    pid_t pid() const { return pid_; }
    const std::string& url() const { return url_; }
    /// Everything the daemon wrote to stderr so far.
    std::string err() const;

    /// Waits for the next "listening on" line (after a re-exec); updates port() and url().
    bool wait_listening(std::chrono::milliseconds limit);

    /// Sends a signal.
    void signal(int sig) const;

    /// Waits for exit; returns the exit status (128+sig when killed by a signal) or nullopt.
    std::optional<int> wait_exit(std::chrono::milliseconds limit);

private:
    pid_t pid_ = -1;
    testing::LineReader out_; // its stdout
    std::string err_path_;
    int port_ = 0;
    std::string url_;
    bool reaped_ = false;
};

/// A program running alongside a test, with a pipe to its stdin and one from its stdout (its
/// stderr goes to a file). The destructor closes its stdin, waits up to 5 s, then kills and
/// reaps it.
class Process {
public:
    Process(const std::vector<std::string>& argv, const std::vector<std::string>& env,
            const std::string& err_path);
    ~Process();
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;

    pid_t pid() const { return pid_; }
    /// The next line of its stdout without the newline; "" at EOF or after `limit`.
    std::string read_line(std::chrono::milliseconds limit = std::chrono::seconds(10));
    /// Closes its stdin and waits for it to exit; returns the exit status (128+signal), or
    /// nullopt when it did not exit within `limit` (then it is killed).
    std::optional<int> finish(std::chrono::milliseconds limit = std::chrono::seconds(10));

private:
    pid_t pid_ = -1;
    int in_ = -1;
    testing::LineReader out_;
    bool reaped_ = false;
};

} // namespace cmond_test
