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
#include <poll.h>
#include <random>
#include <sstream>
#include <stdexcept>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace cmond_test {

namespace {

std::string cmond_bin() {
    const char* bin = std::getenv("CMOND_BIN");
    if (bin == nullptr || *bin == '\0') {
        throw std::runtime_error("CMOND_BIN is not set (run through meson test)");
    }
    return bin;
}

// fork + exec of cmond with stdout to a pipe and stderr to a file; returns the pid.
pid_t spawn(const std::vector<std::string>& args, const std::string& cwd, int& out_read,
            const std::string& err_path) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        throw std::runtime_error("pipe2 failed");
    }
    const std::string bin = cmond_bin();
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(bin.c_str()));
    for (const auto& a : args) {
        argv.push_back(const_cast<char*>(a.c_str()));
    }
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
        if (err < 0 || ::dup2(fds[1], 1) < 0 || ::dup2(err, 2) < 0 || ::chdir(cwd.c_str()) != 0) {
            ::_exit(126);
        }
        ::execv(argv[0], argv.data());
        static const char kMsg[] = "test helper: execv of CMOND_BIN failed\n";
        [[maybe_unused]] auto n = ::write(2, kMsg, sizeof kMsg - 1);
        ::_exit(127);
    }
    ::close(fds[1]);
    if (pid < 0) {
        ::close(fds[0]);
        throw std::runtime_error("fork failed");
    }
    out_read = fds[0];
    return pid;
}

int decode_status(int status) {
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

} // namespace

TempDir::TempDir() {
    char tmpl[] = "/tmp/cmond-test-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
        throw std::runtime_error("mkdtemp failed");
    }
    path_ = tmpl;
}

TempDir::~TempDir() {
    ::nftw(
        path_.c_str(),
        [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
        FTW_DEPTH | FTW_PHYS);
}

std::string TempDir::write(const std::string& name, const std::string& content,
                           unsigned mode) const {
    const std::string p = file(name);
    std::ofstream(p, std::ios::binary | std::ios::trunc) << content;
    ::chmod(p.c_str(), mode);
    return p;
}

std::string random_key_hex() {
    std::random_device rd;
    static constexpr char kHex[] = "0123456789abcdef";
    std::string s;
    for (int i = 0; i < 64; ++i) {
        s += kHex[rd() % 16];
    }
    return s;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

bool process_alive(pid_t pid) {
    const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
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
    const bool exited = eventually(
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
    result.err = read_file(err_path);
    ::unlink(err_path.c_str());
    return result;
}

Daemon::Daemon(const TempDir& dir, std::vector<std::string> args) {
    err_path_ = dir.file("cmond.stderr");
    args.push_back("--port");
    args.push_back("0");
    args.push_back("--syslog");
    args.push_back("false");
    pid_ = spawn(args, dir.path(), out_fd_, err_path_);
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
    return read_file(err_path_);
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
    if (eventually([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, limit)) {
        reaped_ = true;
        return decode_status(status);
    }
    return std::nullopt;
}

} // namespace cmond_test
