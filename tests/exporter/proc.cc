// SPDX-License-Identifier: MIT
#include "proc.h"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

namespace exptest {

namespace {

double now_s() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

} // namespace

Child::Child(const std::vector<std::string>& argv, const std::vector<std::string>& env,
             const std::string& out_path, const std::string& err_path, const std::string& in_path)
    : out_path_(out_path), err_path_(err_path) {
    pid_ =
        testing::spawn({.argv = argv, .env = env, .in = in_path, .out = out_path, .err = err_path})
            .pid;
}

Child::~Child() {
    if (pid_ > 0 && status_ < 0)
        stop(SIGTERM);
}

bool Child::running() {
    if (pid_ <= 0 || status_ >= 0)
        return false;
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
        status_ = testing::exit_code(status);
        return false;
    }
    return r == 0;
}

int Child::wait(double timeout_s) {
    const double deadline = now_s() + timeout_s;
    while (running()) {
        if (now_s() > deadline)
            return -1;
        sleep_s(0.01);
    }
    return status_;
}

int Child::stop(int sig, double timeout_s) {
    if (!running())
        return status_;
    kill(pid_, sig);
    if (wait(timeout_s) >= 0)
        return status_;
    kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    status_ = testing::exit_code(status);
    return status_;
}

std::string Child::out() const {
    return testing::read_file(out_path_);
}

std::string Child::err() const {
    return testing::read_file(err_path_);
}

int bound_port(Child& exporter) {
    const std::string prefix = "serving http://127.0.0.1:";
    for (int i = 0; i < 500; ++i) {
        const std::string err = exporter.err();
        const size_t at = err.find(prefix);
        if (at != std::string::npos)
            return std::atoi(err.c_str() + at + prefix.size());
        REQUIRE_MESSAGE(exporter.running(), "arena-exporter exited: ", err);
        sleep_s(0.01);
    }
    FAIL("arena-exporter did not report its address: ", exporter.err());
    return 0;
}

int free_port() {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    close(fd);
    return ntohs(addr.sin_port);
}

bool write_file(const std::string& path, const std::string& text) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << text;
    return static_cast<bool>(f);
}

std::string which(const std::string& name) {
    const char* path = getenv("PATH");
    std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
    size_t start = 0;
    while (start <= dirs.size()) {
        const size_t end = dirs.find(':', start);
        const std::string dir = dirs.substr(start, end == std::string::npos ? end : end - start);
        const std::string full = (dir.empty() ? "." : dir) + "/" + name;
        if (access(full.c_str(), X_OK) == 0)
            return full;
        if (end == std::string::npos)
            break;
        start = end + 1;
    }
    return "";
}

void sleep_s(double seconds) {
    const auto whole = static_cast<time_t>(seconds);
    timespec ts{whole, static_cast<long>((seconds - double(whole)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

} // namespace exptest
