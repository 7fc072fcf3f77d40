// SPDX-License-Identifier: MIT
// Strict parsing of a request's query string, and the per-route check of its parameters.
//
// One reading of a query for every component: a parameter that cmond sees is the one a proxy,
// a log or git sees, and anything two parsers could read differently is a 400 instead of a guess.
// - Parameters are separated by '&' only. A raw ';' (a separator for some parsers) is refused
//   anywhere, so "branch=a;foo=1" can never become foo or branch "1".
// - Each parameter is exactly NAME=VALUE: no '=' at all, or a second raw '=', is refused
//   ("branch=--upload-pack=id"; a value that needs '=' encodes it as %3D). Empty parameters
//   ("a=1&&b=2", a leading or trailing '&') are refused. NAME is not empty; VALUE may be (the
//   route says whether an empty value is acceptable).
// - Splitting happens before decoding, so %26, %3D and %3B inside a value are just characters.
// - %XX escapes need two hex digits. '+' is a literal plus, not a space: that is RFC 3986;
//   the form encoding that turns '+' into a space is for request bodies, and no value cmond
//   accepts (a branch is [A-Za-z0-9._/-]) contains either.
// - Control characters (0x00-0x1f, 0x7f), raw or decoded, are refused.
// Nothing here throws for bad input; every refusal is a message for a 400 whose client-given
// text has passed through log::sanitize.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace cmond {

/// Decoded (name, value) pairs in the order of the query string.
using QueryParams = std::vector<std::pair<std::string, std::string>>;

/// Why a query string was refused: the message of a 400 reply.
struct QueryError {
    std::string message;
};

/// Parses `raw`, the part of the request target after '?' (not decoded; empty for no query).
/// Thread-safe (no shared state).
std::variant<QueryParams, QueryError> parse_query(std::string_view raw);

/// Checks `params` for a route that accepts only the parameters named in `allowed` (none when
/// empty), each at most once, even with the same value twice. Returns the message of the 400
/// reply, or nullopt when they are acceptable.
std::optional<std::string> check_query(const QueryParams& params,
                                       const std::vector<std::string_view>& allowed);

/// The value of the first parameter called `name`, or nullopt.
std::optional<std::string_view> query_value(const QueryParams& params, std::string_view name);

} // namespace cmond
