// SPDX-License-Identifier: MIT
// Process and file helpers for the exporter and arena-stat tests (TempDir and read_file are
// tests/lib/common.h): running a program to completion with its output captured, and a
// started process that is always killed and reaped when its guard goes out of scope.
#pragma once

#include "common.h"
#include "process.h"

#include <string>
#include <sys/types.h>
#include <vector>

namespace exptest {

using testing::RunResult;

/// Runs argv[0] (a path) to completion with `input` as its stdin and `env` ("K=V") added to the
/// environment (testing::run, 30 s at most).
inline RunResult run(const std::vector<std::string>& argv, const std::string& input = "",
                     const std::vector<std::string>& env = {}) {
    return testing::run(argv, {.input = input, .env = env, .limit = std::chrono::seconds(30)});
}

/// A started process. stdout and stderr go to files (read them with out() and err()). The
/// destructor sends SIGTERM, waits up to 5 s, then SIGKILL, and always reaps it.
class Child {
public:
    /// `env` entries ("K=V") are added to the environment; "K=" removes K. stdin is
    /// `in_path`, or /dev/null.
    Child(const std::vector<std::string>& argv, const std::vector<std::string>& env,
          const std::string& out_path, const std::string& err_path,
          const std::string& in_path = "");
    ~Child();
    pid_t pid() const { return pid_; }
    bool started() const { return pid_ > 0; }
    /// True while the process has not exited (reaps it if it has).
    bool running();
    /// Sends `sig` and waits up to `timeout_s` for the exit; then SIGKILL. Returns the status
    /// as RunResult::status does.
    int stop(int sig, double timeout_s = 5);
    /// Waits up to `timeout_s` for a normal exit; returns the status or -1 on timeout.
    int wait(double timeout_s);
    std::string out() const;
    std::string err() const;

    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

private:
    pid_t pid_ = -1;
    int status_ = -1;
    std::string out_path_, err_path_;
};

/// The port an arena-exporter started with `--listen 127.0.0.1:0` bound, from the address it
/// reports on stderr; fails the test if it exits or does not report one within 5 s.
int bound_port(Child& exporter);

/// A TCP port on 127.0.0.1 that was free a moment ago. Only for a program that cannot be given
/// port 0 and say what it bound (Prometheus): another process may take it first.
int free_port();

using testing::required_env;

bool write_file(const std::string& path, const std::string& text);
/// Full path of `name` on $PATH, or "".
std::string which(const std::string& name);
void sleep_s(double seconds);

} // namespace exptest
