// SPDX-License-Identifier: MIT
// text.h: numbers and strings for tables.
#include "text.h"

#include <cstdio>
#include <iterator>

namespace arena::client {

std::string human_bytes(uint64_t bytes) {
    static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024)
        return std::to_string(bytes) + " B";
    double v = double(bytes) / 1024;
    unsigned u = 0;
    while (v >= 1024 && u + 1 < std::size(kUnits)) {
        v /= 1024;
        ++u;
    }
    char buf[32];
    snprintf(buf, sizeof buf, v < 10 ? "%.2f %s" : v < 100 ? "%.1f %s" : "%.0f %s", v, kUnits[u]);
    return buf;
}

std::string printable(const std::string& s, size_t max) {
    std::string out;
    for (const char ch : s) {
        if (out.size() == max)
            break;
        const auto c = static_cast<unsigned char>(ch);
        out += c >= 0x20 && c < 0x7f ? ch : '?';
    }
    return out;
}

} // namespace arena::client
