// SPDX-License-Identifier: MIT
// Implementation of cmond's two log sinks; see log.h for the contract.
#include "log.h"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <syslog.h>
#include <unistd.h>

namespace cmond::log {

namespace {

std::atomic<int> g_min_level{static_cast<int>(Level::Info)};
std::atomic<bool> g_syslog{false};

int syslog_priority(Level level) {
    switch (level) {
    case Level::Debug:
        return LOG_DEBUG;
    case Level::Info:
        return LOG_INFO;
    case Level::Warning:
        return LOG_WARNING;
    case Level::Error:
        return LOG_ERR;
    }
    return LOG_INFO;
}

// "2025-01-31T12:34:56.789Z"
std::string timestamp() {
    using namespace std::chrono;
    const auto now = system_clock::now();
    const auto secs = system_clock::to_time_t(now);
    const auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[96]; // ample for any int fields; the real length is 24
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(ms));
    return buf;
}

void write_all(int fd, const std::string& line) {
    const char* p = line.data();
    std::size_t left = line.size();
    while (left > 0) {
        const ssize_t n = ::write(fd, p, left);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return; // stderr gone: nothing sensible left to report to
        }
        p += n;
        left -= static_cast<std::size_t>(n);
    }
}

} // namespace

void init(Level min_level, bool use_syslog) {
    g_min_level = static_cast<int>(min_level);
    if (use_syslog && !g_syslog.exchange(true)) {
        openlog("cmond", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    }
}

void shutdown() {
    if (g_syslog.exchange(false)) {
        closelog();
    }
}

bool enabled(Level level) {
    return static_cast<int>(level) >= g_min_level.load();
}

void write(Level level, std::string_view message) {
    if (!enabled(level)) {
        return;
    }
    std::string line = timestamp();
    line += ' ';
    line += level_name(level);
    line += ' ';
    line += message;
    line += '\n';
    write_all(STDERR_FILENO, line);
    if (g_syslog.load()) {
        syslog(syslog_priority(level), "%s %.*s", level_name(level).data(),
               static_cast<int>(message.size()), message.data());
    }
}

std::string sanitize(std::string_view text, std::size_t max_len) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(text.size() < max_len ? text.size() : max_len);
    for (const char c : text) {
        if (out.size() >= max_len) {
            out += "...";
            break;
        }
        const auto u = static_cast<unsigned char>(c);
        if (c == '\\' || c == '"') {
            out += '\\';
            out += c;
        } else if (u < 0x20 || u >= 0x7f) {
            out += "\\x";
            out += kHex[u >> 4];
            out += kHex[u & 0xf];
        } else {
            out += c;
        }
    }
    return out;
}

bool parse_level(std::string_view text, Level& out) {
    for (const Level l : {Level::Debug, Level::Info, Level::Warning, Level::Error}) {
        if (text == level_name(l)) {
            out = l;
            return true;
        }
    }
    return false;
}

std::string_view level_name(Level level) {
    switch (level) {
    case Level::Debug:
        return "debug";
    case Level::Info:
        return "info";
    case Level::Warning:
        return "warning";
    case Level::Error:
        return "error";
    }
    return "info";
}

} // namespace cmond::log
