// SPDX-License-Identifier: MIT
// terminal.h: output, sizes and the redraw loop of the command-line tools.
#include "terminal.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <sys/ioctl.h>
#include <unistd.h>

namespace arena::cli {
namespace {

constexpr const char* kHideCursor = "\x1b[?25l";
constexpr const char* kShowCursor = "\x1b[?25h";

sigset_t stop_signals() {
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGHUP);
    return stop;
}

} // namespace

bool write_all(const std::string& s) {
    return fwrite(s.data(), 1, s.size(), stdout) == s.size() && fflush(stdout) == 0;
}

std::pair<size_t, size_t> terminal_size() {
    winsize ws{};
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0)
        return {ws.ws_row, ws.ws_col};
    return {0, 0};
}

std::string fit_width(const std::string& text, size_t columns) {
    if (columns == 0)
        return text;
    std::string out;
    size_t start = 0;
    while (start < text.size()) {
        size_t end = text.find('\n', start);
        if (end == std::string::npos)
            end = text.size();
        out.append(text, start, std::min(end - start, columns));
        if (end < text.size())
            out += '\n';
        start = end + 1;
    }
    return out;
}

std::optional<double> parse_seconds(const std::string& s) {
    if (s.empty() || s.find_first_not_of("0123456789.") != std::string::npos)
        return std::nullopt;
    errno = 0;
    char* end = nullptr;
    const double v = strtod(s.c_str(), &end);
    if (errno != 0 || end == nullptr || *end != '\0' || !std::isfinite(v))
        return std::nullopt;
    return v;
}

double watch_interval(const std::string& v, void (*fail)(const std::string& message)) {
    const std::optional<double> s = parse_seconds(v);
    if (!s || *s < 0.1 || *s > 86400)
        fail("invalid --watch interval '" + v + "' (expected seconds, 0.1 to 86400)");
    return *s;
}

Watch::Watch(bool screen) : screen_(screen) {
    const sigset_t stop = stop_signals();
    sigprocmask(SIG_BLOCK, &stop, nullptr);
    if (screen_)
        write_all(kHideCursor);
}

Watch::~Watch() {
    if (screen_)
        write_all(std::string(kShowCursor) + "\n");
}

bool Watch::wait(double seconds) {
    const sigset_t stop = stop_signals();
    const double whole = std::floor(seconds);
    timespec wait{static_cast<time_t>(whole), static_cast<long>((seconds - whole) * 1e9)};
    return sigtimedwait(&stop, nullptr, &wait) <= 0;
}

} // namespace arena::cli
