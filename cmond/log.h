// SPDX-License-Identifier: MIT
// Logging for cmond: one line per event, written to stderr (with an ISO 8601 UTC timestamp) and,
// when enabled, to syslog (facility daemon, ident "cmond", which adds its own timestamp).
// Each stderr line goes out in a single write(2), so lines from worker threads never interleave.
// Client-controlled text (paths, query values) must pass through sanitize() before it is logged;
// secrets (the key, auth headers) are never passed here at all.
#pragma once

#include <string>
#include <string_view>

namespace cmond::log {

enum class Level { Debug, Info, Warning, Error };

/// Sets the minimum level and opens syslog when use_syslog is true. Call once, before threads.
void init(Level min_level, bool use_syslog);

/// Closes syslog (before re-exec). Safe to call when syslog was never opened.
void shutdown();

/// Writes one line at the given level. Thread-safe.
void write(Level level, std::string_view message);

inline void debug(std::string_view m) {
    write(Level::Debug, m);
}
inline void info(std::string_view m) {
    write(Level::Info, m);
}
inline void warning(std::string_view m) {
    write(Level::Warning, m);
}
inline void error(std::string_view m) {
    write(Level::Error, m);
}

/// True when a message at this level would be written (to skip building it otherwise).
bool enabled(Level level);

/// Makes client-controlled text safe for a log line: bytes outside printable ASCII become \xNN,
/// backslashes and quotes are escaped, and the result is cut to max_len characters (marked "...").
std::string sanitize(std::string_view text, std::size_t max_len = 200);

/// Parses "debug", "info", "warning" or "error"; returns false for anything else.
bool parse_level(std::string_view text, Level& out);

/// The name of a level as parse_level accepts it.
std::string_view level_name(Level level);

} // namespace cmond::log
