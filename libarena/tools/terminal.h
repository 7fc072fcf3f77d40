// SPDX-License-Identifier: MIT
// What the command-line tools that redraw (arena-stat --watch, arena-prof --watch) share: output
// that is all written or an error, the terminal's size, frames cut to its width, the --watch
// interval, and a redraw loop that ends on SIGINT, SIGTERM or SIGHUP.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <utility>

namespace arena::cli {

/// Writes `s` to stdout and flushes it; false when not all of it was written.
bool write_all(const std::string& s);

/// The terminal's size (rows, columns), or zeros when stdout is not one.
std::pair<size_t, size_t> terminal_size();

/// Cuts every line to `columns` characters (the frame is ASCII), so that none wraps; 0: as is.
std::string fit_width(const std::string& text, size_t columns);

/// Seconds as digits and a dot ("2", "0.5"); nullopt for anything else.
std::optional<double> parse_seconds(const std::string& s);

/// The --watch interval `v`: seconds from 0.1 to 86400, else `fail` is called with a usage
/// message (it does not return).
double watch_interval(const std::string& v, void (*fail)(const std::string& message));

/// Escape sequences for a full-screen redraw.
constexpr const char* kClear = "\x1b[H\x1b[2J";

/// A redraw loop's stop signals: SIGINT, SIGTERM and SIGHUP are blocked while it lives and
/// awaited with a timeout, which is also the sleep between frames (no handler, no race). On a
/// terminal (`screen`) the cursor is hidden meanwhile and shown again at the end.
class Watch {
public:
    explicit Watch(bool screen);
    ~Watch();
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;

    /// Sleeps `seconds`; false when a stop signal came first.
    bool wait(double seconds);

private:
    bool screen_;
};

} // namespace arena::cli
