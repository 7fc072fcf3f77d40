// SPDX-License-Identifier: MIT
// Numbers and strings as the command-line tools and tables show them (arena-stat, arena-prof,
// profile.h's table).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace arena::client {

/// Bytes in binary units, three significant digits: "512 B", "1.50 KiB", "23.4 MiB", "512 GiB".
std::string human_bytes(uint64_t bytes);

/// For the terminal: printable ASCII only, at most `max` characters (a comm, a path or a
/// function name is any bytes a process chose, escape sequences included).
std::string printable(const std::string& s, size_t max);

} // namespace arena::client
