// SPDX-License-Identifier: MIT
// Starting programs from tests, one way for every suite: fork + execve with the argument and
// environment arrays built before the fork (the child makes only async-signal-safe calls), the
// standard streams from files or pipes, the signal mask cleared and SIGPIPE at its default (the
// program under test must see SIGTERM even when the test blocked it). run() runs a program to
// completion; LineReader reads a child's stdout by lines with a time limit. Suite helpers
// (cmond's Daemon and Process, the exporter's Child, testing::run_child) are built on these.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <sys/types.h>
#include <utility>
#include <vector>

namespace testing {

/// This process's environment with `changes` applied: "K=V" adds K or replaces its value, "K="
/// removes K.
std::vector<std::string> merged_environment(const std::vector<std::string>& changes);

struct Spawn {
    std::vector<std::string> argv; // argv[0] is a path (no $PATH search)
    std::vector<std::string> env;  // changes to this environment, as merged_environment takes them
    std::string cwd;               // "": this process's directory
    std::string in;                // stdin from this file; "": /dev/null (unless in_pipe)
    std::string out;       // stdout to this file (truncated); "": /dev/null (unless out_pipe)
    std::string err;       // stderr to this file (truncated); "": /dev/null
    bool in_pipe = false;  // stdin from a pipe: Spawned::in is its write end
    bool out_pipe = false; // stdout into a pipe: Spawned::out is its read end
    std::optional<std::pair<uid_t, gid_t>> run_as; // setgid + setuid before the exec (root only)
};

struct Spawned {
    pid_t pid = -1;
    int in = -1;  // write end of stdin's pipe (Spawn::in_pipe), close-on-exec
    int out = -1; // read end of stdout's pipe (Spawn::out_pipe), close-on-exec
};

/// Starts `s`. Throws std::runtime_error when a pipe or the fork fails. The child exits 126 when
/// a stream or the directory cannot be set up, 125 when run_as fails, 127 when execve fails.
Spawned spawn(const Spawn& s);

/// A wait status as one number: the exit code, or 128 + the terminating signal.
int exit_code(int wait_status);

/// Lines from a pipe: next() returns the next line without its newline, or nullopt at end of
/// file or when `limit` passes first (a partial line stays buffered).
class LineReader {
public:
    explicit LineReader(int fd = -1) : fd_(fd) {}
    std::optional<std::string> next(std::chrono::milliseconds limit);
    int fd() const { return fd_; }

private:
    int fd_;
    std::string buffered_;
};

struct RunOptions {
    std::string input;                       // written to its stdin (through a file)
    std::vector<std::string> env;            // as Spawn::env
    std::string cwd;                         // as Spawn::cwd
    std::chrono::milliseconds limit{30'000}; // then it is killed
};

struct RunResult {
    int status = -1; // exit_code(), or -1 when it was killed at the time limit
    bool timed_out = false;
    int signal = 0; // the signal that ended it (status is then 128 + signal), 0 when it exited
    std::string out;
    std::string err;
};

/// Runs argv to completion (stdout and stderr captured through files in a TempDir).
RunResult run(const std::vector<std::string>& argv, const RunOptions& options = {});

/// `go tool pprof -top -sample_index=inuse_space FILE` (Debian's golang-go, /usr/bin/go), with
/// its home, caches and temporary files in `home`: the heap profile tests' reader of pprof files.
RunResult go_pprof_top(const std::string& file, const std::string& home);

} // namespace testing
