// SPDX-License-Identifier: MIT
// Query string parsing and the per-route parameter check; see query.h for the rules.
#include "query.h"

#include "hex.h"

#include "log.h"

#include <algorithm>

namespace cmond {

namespace {

constexpr std::string_view kMalformed = "Malformed query: ";

bool is_control(unsigned char c) {
    return c < 0x20 || c == 0x7f;
}

enum class Decode { Ok, BadEscape, Control };

// Percent-decodes `in` into `out`.
Decode decode(std::string_view in, std::string& out) {
    out.clear();
    out.reserve(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
        char c = in[i];
        if (c == '%') {
            const int hi = i + 1 < in.size() ? hex_value(in[i + 1]) : -1;
            const int lo = i + 2 < in.size() ? hex_value(in[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                return Decode::BadEscape;
            }
            c = static_cast<char>(hi << 4 | lo);
            i += 2;
        }
        if (is_control(static_cast<unsigned char>(c))) {
            return Decode::Control;
        }
        out += c;
    }
    return Decode::Ok;
}

// "'<name>'" for a message: client text, so sanitized and cut like server.cc's.
std::string quoted(std::string_view name) {
    std::string out = "'";
    out += log::sanitize(name, 40);
    out += '\'';
    return out;
}

// "only 'a' is accepted here", "only 'a' and 'b' are accepted here", "this route takes none".
std::string accepted(const std::vector<std::string_view>& allowed) {
    if (allowed.empty()) {
        return "this route takes none";
    }
    std::string out = "only ";
    for (std::size_t i = 0; i < allowed.size(); ++i) {
        out += i == 0 ? "" : i + 1 == allowed.size() ? " and " : ", ";
        out += '\'';
        out += allowed[i];
        out += '\'';
    }
    return out + (allowed.size() == 1 ? " is accepted here" : " are accepted here");
}

} // namespace

std::variant<QueryParams, QueryError> parse_query(std::string_view raw) {
    QueryParams params;
    if (raw.empty()) {
        return params;
    }
    if (raw.find(';') != std::string_view::npos) {
        return QueryError{std::string(kMalformed) +
                          "';' is not a separator (parameters are separated by '&')"};
    }
    std::size_t start = 0;
    for (;;) {
        const std::size_t amp = raw.find('&', start);
        const std::string_view pair =
            raw.substr(start, amp == std::string_view::npos ? std::string_view::npos : amp - start);
        if (pair.empty()) {
            return QueryError{std::string(kMalformed) +
                              "empty parameter (an '&' at the start or end, or two in a row)"};
        }
        const std::size_t eq = pair.find('=');
        if (eq == std::string_view::npos) {
            return QueryError{std::string(kMalformed) + "parameter " + quoted(pair) +
                              " has no '=' (NAME=VALUE expected)"};
        }
        const std::string_view raw_name = pair.substr(0, eq);
        if (raw_name.empty()) {
            return QueryError{std::string(kMalformed) + "a parameter has no name"};
        }
        if (pair.find('=', eq + 1) != std::string_view::npos) {
            return QueryError{std::string(kMalformed) + "parameter " + quoted(raw_name) +
                              " has more than one '=' (write '=' in a value as %3D)"};
        }
        std::string name;
        std::string value;
        for (const Decode d : {decode(raw_name, name), decode(pair.substr(eq + 1), value)}) {
            if (d == Decode::BadEscape) {
                return QueryError{std::string(kMalformed) + "bad percent escape in parameter " +
                                  quoted(raw_name) + " (% must be followed by two hex digits)"};
            }
            if (d == Decode::Control) {
                return QueryError{std::string(kMalformed) + "control character in parameter " +
                                  quoted(raw_name)};
            }
        }
        params.emplace_back(std::move(name), std::move(value));
        if (amp == std::string_view::npos) {
            return params;
        }
        start = amp + 1;
    }
}

std::optional<std::string> check_query(const QueryParams& params,
                                       const std::vector<std::string_view>& allowed) {
    const auto known = [&](const std::string& name) {
        return std::find(allowed.begin(), allowed.end(), name) != allowed.end();
    };
    // Every name first, so that a client learns about an unknown parameter before a repeat.
    for (const auto& [name, value] : params) {
        if (!known(name)) {
            return "Unknown query parameter " + quoted(name) + " (" + accepted(allowed) + ")";
        }
    }
    for (auto it = params.begin(); it != params.end(); ++it) {
        const auto same = [&](const auto& p) { return p.first == it->first; };
        if (std::find_if(std::next(it), params.end(), same) != params.end()) {
            return "Query parameter '" + it->first + "' given more than once";
        }
    }
    return std::nullopt;
}

std::optional<std::string_view> query_value(const QueryParams& params, std::string_view name) {
    for (const auto& [n, value] : params) {
        if (n == name) {
            return value;
        }
    }
    return std::nullopt;
}

} // namespace cmond
