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

std::string cmond_bin() { return required_env("CMOND_BIN"); }

// This process's environment with `extra` ("K=V") added, replacing entries of the same name.
std::vector<std::string> merged_environment(const std::vector<std::string>& extra) {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
        const std::string entry(*e);
        const std::string name = entry.substr(0, entry.find('=') + 1);
        bool replaced = false;
        for (const auto& x : extra) {
            replaced = replaced || x.rfind(name, 0) == 0;
        }
        if (!replaced) {
            env.push_back(entry);
        }
    }
    env.insert(env.end(), extra.begin(), extra.end());
    return env;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
    std::vector<char*> out;
    for (auto& s : strings) {
        out.push_back(s.data());
    }
    out.push_back(nullptr);
    return out;
}

// fork + exec of `argv` with stdout to a pipe (and stdin from one when in_write is not null),
// stderr to a file; returns the pid. Only async-signal-safe calls happen in the child.
pid_t spawn_program(std::vector<std::string> args, const std::string& cwd, const Launch& launch,
                    int& out_read, int* in_write, const std::string& err_path) {
    int out[2];
    int in[2] = {-1, -1};
    if (::pipe2(out, O_CLOEXEC) != 0 || (in_write != nullptr && ::pipe2(in, O_CLOEXEC) != 0)) {
        throw std::runtime_error("pipe2 failed");
    }
    std::vector<std::string> env = merged_environment(launch.env);
    std::vector<char*> argv = pointers(args);
    std::vector<char*> envp = pointers(env);
    const pid_t pid = ::fork();
    if (pid == 0) {
        const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
        const int stdin_fd = in[0] >= 0 ? in[0] : ::open("/dev/null", O_RDONLY);
        if (err < 0 || stdin_fd < 0 || ::dup2(stdin_fd, 0) < 0 || ::dup2(out[1], 1) < 0 ||
            ::dup2(err, 2) < 0 || (!cwd.empty() && ::chdir(cwd.c_str()) != 0)) {
            ::_exit(126);
        }
        if (launch.run_as &&
            (::setgroups(0, nullptr) != 0 || ::setgid(launch.run_as->second) != 0 ||
             ::setuid(launch.run_as->first) != 0)) {
            ::_exit(125);
        }
        ::execve(argv[0], argv.data(), envp.data());
        static const char kMsg[] = "test helper: execve failed\n";
        [[maybe_unused]] auto n = ::write(2, kMsg, sizeof kMsg - 1);
        ::_exit(127);
    }
    ::close(out[1]);
    if (in[0] >= 0) {
        ::close(in[0]);
    }
    if (pid < 0) {
        ::close(out[0]);
        if (in[1] >= 0) {
            ::close(in[1]);
        }
        throw std::runtime_error("fork failed");
    }
    out_read = out[0];
    if (in_write != nullptr) {
        *in_write = in[1];
    }
    return pid;
}

// cmond with `args`; see Daemon.
pid_t spawn(const std::vector<std::string>& args, const std::string& cwd, int& out_read,
            const std::string& err_path, const Launch& launch = {}) {
    std::vector<std::string> argv = {cmond_bin()};
    argv.insert(argv.end(), args.begin(), args.end());
    return spawn_program(argv, cwd, launch, out_read, nullptr, err_path);
}

int decode_status(int status) {
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
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
    cmond_bin(); // throws before any temp file exists when CMOND_BIN is not set
    char tmpl[] = "/tmp/cmond-test-err-XXXXXX";
    const int tmp_fd = ::mkstemp(tmpl);
    if (tmp_fd >= 0) {
        ::close(tmp_fd);
    }
    const std::string err_path = tmpl;
    int out_fd = -1;
    const pid_t pid = spawn(args, cwd, out_fd, err_path);
    Exit result;
    int status = 0;
    const bool exited = testing::eventually(
        [&] {
            char buf[4096];
            const pollfd p{out_fd, POLLIN, 0};
            pollfd pp = p;
            if (::poll(&pp, 1, 0) > 0) {
                const ssize_t n = ::read(out_fd, buf, sizeof buf);
                if (n > 0) {
                    result.out.append(buf, static_cast<std::size_t>(n));
                }
            }
            return ::waitpid(pid, &status, WNOHANG) == pid;
        },
        limit);
    if (!exited) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
    } else {
        result.status = decode_status(status);
    }
    char buf[4096];
    ssize_t n;
    ::fcntl(out_fd, F_SETFL, O_NONBLOCK);
    while ((n = ::read(out_fd, buf, sizeof buf)) > 0) {
        result.out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(out_fd);
    result.err = testing::read_file(err_path);
    ::unlink(err_path.c_str());
    return result;
}

Daemon::Daemon(const testing::TempDir& dir, std::vector<std::string> args, const Launch& launch) {
    err_path_ = dir.file("cmond.stderr");
    args.push_back("--port");
    args.push_back("0");
    args.push_back("--syslog");
    args.push_back("false");
    pid_ = spawn(args, dir.path(), out_fd_, err_path_, launch);
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
    if (out_fd_ >= 0) {
        ::close(out_fd_);
    }
}

std::string Daemon::err() const {
    return testing::read_file(err_path_);
}

bool Daemon::wait_listening(std::chrono::milliseconds limit) {
    static const std::string kMarker = "cmond: listening on ";
    port_ = 0;
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
        const auto nl = out_buf_.find('\n');
        if (nl != std::string::npos) {
            const std::string line = out_buf_.substr(0, nl);
            out_buf_.erase(0, nl + 1);
            if (line.rfind(kMarker, 0) == 0) {
                url_ = line.substr(kMarker.size());
                port_ = std::stoi(url_.substr(url_.rfind(':') + 1));
                return true;
            }
            continue;
        }
        pollfd p{out_fd_, POLLIN, 0};
        if (::poll(&p, 1, 50) > 0) {
            char buf[1024];
            const ssize_t n = ::read(out_fd_, buf, sizeof buf);
            if (n <= 0) {
                return false; // stdout closed: it exited
            }
            out_buf_.append(buf, static_cast<std::size_t>(n));
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
        return decode_status(status);
    }
    return std::nullopt;
}

Process::Process(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                 const std::string& err_path) {
    pid_ = spawn_program(argv, "", Launch{env, std::nullopt}, out_, &in_, err_path);
}

Process::~Process() {
    if (!reaped_) {
        finish(std::chrono::seconds(5));
    }
    if (out_ >= 0) {
        ::close(out_);
    }
}

std::string Process::read_line(std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    for (;;) {
        const auto nl = buffered_.find('\n');
        if (nl != std::string::npos) {
            std::string line = buffered_.substr(0, nl);
            buffered_.erase(0, nl + 1);
            return line;
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            end - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            return "";
        }
        pollfd p{out_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
            continue;
        }
        char buf[1024];
        const ssize_t n = ::read(out_, buf, sizeof buf);
        if (n <= 0) {
            return "";
        }
        buffered_.append(buf, static_cast<std::size_t>(n));
    }
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
        return decode_status(status);
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    return std::nullopt;
}

} // namespace cmond_test
