// SPDX-License-Identifier: MIT
// See helpers.h.
#include "helpers.h"

#include <doctest/doctest.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <ftw.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <random>
#include <stdexcept>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace cmond_test {

namespace {

std::string cmond_bin() {
    return required_env("CMOND_BIN");
}

// cmond with `args` in `cwd`, its stdout into a pipe (out_read); see Daemon.
pid_t spawn(const std::vector<std::string>& args, const std::string& cwd, int& out_read,
            const std::string& err_path, const Launch& launch = {}) {
    std::vector<std::string> argv = {cmond_bin()};
    argv.insert(argv.end(), args.begin(), args.end());
    const testing::Spawned child = testing::spawn({.argv = argv,
                                                   .env = launch.env,
                                                   .cwd = cwd,
                                                   .err = err_path,
                                                   .out_pipe = true,
                                                   .run_as = launch.run_as});
    out_read = child.out;
    return child.pid;
}

} // namespace

std::string random_key_hex() {
    std::random_device rd;
    static constexpr char kHex[] = "0123456789abcdef";
    std::string s;
    for (int i = 0; i < 64; ++i) {
        s += kHex[rd() % 16];
    }
    return s;
}

arena::client::profile::Profile read_profile(const std::string& stats_dir, int pid,
                                             const arena::client::ScanOptions& options) {
    arena::client::profile::Profile p;
    const auto read = arena::client::profile::read_pid(stats_dir, pid, options, &p);
    REQUIRE_MESSAGE(read.ok(), read.detail);
    return p;
}

std::pair<uid_t, gid_t> nobody() {
    if (const passwd* pw = ::getpwnam("nobody")) {
        return {pw->pw_uid, pw->pw_gid};
    }
    return {65534, 65534};
}

bool chown_tree(const std::string& path, uid_t uid, gid_t gid) {
    static uid_t s_uid;
    static gid_t s_gid;
    s_uid = uid;
    s_gid = gid;
    return ::nftw(
               path.c_str(),
               [](const char* p, const struct stat*, int, struct FTW*) {
                   return ::lchown(p, s_uid, s_gid);
               },
               16, FTW_PHYS) == 0;
}

bool process_alive(pid_t pid) {
    const std::string stat = testing::read_file("/proc/" + std::to_string(pid) + "/stat");
    if (stat.empty()) {
        return false;
    }
    const auto close_paren = stat.rfind(')');
    return close_paren != std::string::npos && close_paren + 2 < stat.size() &&
           stat[close_paren + 2] != 'Z' && stat[close_paren + 2] != 'X';
}

Exit run_cmond(const std::vector<std::string>& args, const std::string& cwd,
               std::chrono::milliseconds limit) {
    std::vector<std::string> argv = {cmond_bin()};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::run(argv, {.cwd = cwd, .limit = limit});
}

Daemon::Daemon(const testing::TempDir& dir, std::vector<std::string> args, const Launch& launch) {
    err_path_ = dir.file("cmond.stderr");
    args.push_back("--port");
    args.push_back("0");
    args.push_back("--syslog");
    args.push_back("false");
    int out_fd = -1;
    pid_ = spawn(args, dir.path(), out_fd, err_path_, launch);
    out_ = testing::LineReader(out_fd);
    wait_listening(std::chrono::seconds(10));
}

Daemon::~Daemon() {
    if (pid_ > 0 && !reaped_) {
        ::kill(pid_, SIGTERM);
        const auto status = wait_exit(std::chrono::seconds(15));
        if (!status) {
            ::kill(pid_, SIGKILL);
            int ignored;
            ::waitpid(pid_, &ignored, 0);
        }
        // Every daemon must stop cleanly on SIGTERM (under ASan, LeakSanitizer turns a leak
        // into a non-zero status).
        CHECK_MESSAGE(status == 0,
                      (std::string("cmond did not exit 0 on SIGTERM; stderr:\n") + err()));
    }
    const std::string log = err();
    CHECK_MESSAGE(log.find("runtime error:") == std::string::npos, log);
    CHECK_MESSAGE(log.find("Sanitizer") == std::string::npos, log);
    if (out_.fd() >= 0) {
        ::close(out_.fd());
    }
}

std::string Daemon::err() const {
    return testing::read_file(err_path_);
}

bool Daemon::wait_listening(std::chrono::milliseconds limit) {
    static const std::string kMarker = "cmond: listening on ";
    port_ = 0;
    const auto end = std::chrono::steady_clock::now() + limit;
    // Lines before the marker (none today) are skipped; nullopt: stdout closed (it exited) or
    // the time is up.
    while (const auto line = out_.next(std::chrono::duration_cast<std::chrono::milliseconds>(
               end - std::chrono::steady_clock::now()))) {
        if (line->rfind(kMarker, 0) == 0) {
            url_ = line->substr(kMarker.size());
            port_ = std::stoi(url_.substr(url_.rfind(':') + 1));
            return true;
        }
    }
    return false;
}

void Daemon::signal(int sig) const {
    ::kill(pid_, sig);
}

std::optional<int> Daemon::wait_exit(std::chrono::milliseconds limit) {
    if (reaped_) {
        return std::nullopt;
    }
    int status = 0;
    if (testing::eventually([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, limit)) {
        reaped_ = true;
        return testing::exit_code(status);
    }
    return std::nullopt;
}

Process::Process(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                 const std::string& err_path) {
    const testing::Spawned child = testing::spawn(
        {.argv = argv, .env = env, .err = err_path, .in_pipe = true, .out_pipe = true});
    pid_ = child.pid;
    in_ = child.in;
    out_ = testing::LineReader(child.out);
}

Process::~Process() {
    if (!reaped_) {
        finish(std::chrono::seconds(5));
    }
    if (out_.fd() >= 0) {
        ::close(out_.fd());
    }
}

std::string Process::read_line(std::chrono::milliseconds limit) {
    return out_.next(limit).value_or("");
}

std::optional<int> Process::finish(std::chrono::milliseconds limit) {
    if (reaped_) {
        return std::nullopt;
    }
    if (in_ >= 0) {
        ::close(in_);
        in_ = -1;
    }
    int status = 0;
    reaped_ = true;
    if (testing::eventually([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, limit)) {
        return testing::exit_code(status);
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    return std::nullopt;
}

} // namespace cmond_test
