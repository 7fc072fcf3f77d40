// SPDX-License-Identifier: MIT
// Raw-socket clients that misbehave on purpose, for the HTTP suites of cmond and arena-exporter
// (loopback only): a connection that sends what it is told, when it is told, and reads what
// comes back with a bound on time; and the resident size of a process.
#pragma once

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <netinet/in.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

namespace hostile {

class Conn {
public:
    explicit Conn(int port) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<uint16_t>(port));
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
            ::close(fd_);
            fd_ = -1;
        }
    }
    ~Conn() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }
    Conn(const Conn&) = delete;
    Conn& operator=(const Conn&) = delete;
    Conn(Conn&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }

    bool ok() const { return fd_ >= 0; }
    int fd() const { return fd_; }

    /// Sends everything, or stops at the first error (the peer closed): returns bytes sent.
    std::size_t send(const std::string& bytes) {
        std::size_t done = 0;
        while (done < bytes.size()) {
            const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
            if (n <= 0) {
                break;
            }
            done += static_cast<std::size_t>(n);
        }
        return done;
    }

    /// Sends `total` bytes of `unit` repeated, in 64 KiB writes, stopping when the peer stops
    /// taking them. Returns bytes sent.
    std::size_t flood(const std::string& unit, std::size_t total) {
        std::string block;
        while (block.size() < 64 * 1024) {
            block += unit;
        }
        std::size_t sent = 0;
        while (sent < total) {
            const std::size_t n = send(block);
            sent += n;
            if (n < block.size()) {
                break;
            }
        }
        return sent;
    }

    void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

    /// Reads until the peer closes, `limit` passes, or `max` bytes arrived.
    std::string read_all(std::chrono::milliseconds limit, std::size_t max = 16 << 20) {
        std::string out;
        const auto end = std::chrono::steady_clock::now() + limit;
        char buf[16384];
        while (out.size() < max) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                end - std::chrono::steady_clock::now());
            if (left.count() <= 0) {
                break;
            }
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
                break;
            }
            const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
            if (n <= 0) {
                closed_ = true;
                break;
            }
            out.append(buf, static_cast<std::size_t>(n));
        }
        return out;
    }

    /// True once read_all() saw the peer close (or reset) the connection.
    bool closed() const { return closed_; }

    /// True when the peer has closed the connection by now (polls without waiting long).
    bool peer_closed(std::chrono::milliseconds wait = std::chrono::milliseconds(0)) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0) {
            return false;
        }
        char c;
        const ssize_t n = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        return n == 0 || (n < 0 && errno != EAGAIN);
    }

private:
    int fd_ = -1;
    bool closed_ = false;
};

/// VmRSS of `pid` in KiB (0 when unreadable).
inline long rss_kib(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmRSS:", 0) == 0) {
            return std::stol(line.substr(6));
        }
    }
    return 0;
}

/// The status code of the first response in `text` (0 when there is none).
inline int status_of(const std::string& text) {
    if (text.rfind("HTTP/1.", 0) != 0 || text.size() < 12) {
        return 0;
    }
    return std::atoi(text.substr(9, 3).c_str());
}

/// How many responses `text` holds (status lines at the start of a line).
inline int responses_in(const std::string& text) {
    int n = 0;
    for (std::size_t at = 0; (at = text.find("HTTP/1.1 ", at)) != std::string::npos; ++at) {
        n += at == 0 || text[at - 1] == '\n';
    }
    return n;
}

} // namespace hostile
