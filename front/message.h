// SPDX-License-Identifier: MIT
// What the front end hands to an application and takes back: a request that has passed the
// server's limits (head size, field count, target length, body size, deadline), the answer, and
// the per-request exchange that carries the application's own state from admit() to finished().
#pragma once

#include <any>
#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cmon::front {

using Clock = std::chrono::steady_clock;
using Header = std::pair<std::string, std::string>;

struct Request {
    std::string method;          // as sent ("GET"); never empty
    std::string target;          // as sent ("/deploy_branch?branch=x")
    std::string path;            // the target up to '?', not decoded
    std::string query;           // after the first '?', not decoded; may be empty
    int version = 11;            // 10 or 11
    std::vector<Header> headers; // in arrival order, names as sent
    bool has_body = false;       // Content-Length > 0 or chunked
    std::string body;            // empty until the body is read (only for serve())
    bool keep_alive = true;      // what the client asked for
    std::string remote;          // the client's address, without port

    /// How many fields named `name` (case-insensitive).
    std::size_t count(std::string_view name) const;
    /// Their values, in order.
    std::vector<std::string_view> values(std::string_view name) const;
};

struct Response {
    int status = 200;
    std::string content_type;
    std::string body;
    std::vector<Header> headers; // extra fields (Allow, Retry-After, WWW-Authenticate, ...)
    bool close = false;          // send Connection: close and close after writing
};

/// One request on its way through the server. `state` belongs to the application: admit() puts
/// what it learned there (the matched route, log fields) for serve() and finished().
struct Exchange {
    Request request;
    Clock::time_point start; // when the server began reading this request
    std::any state;
};

/// Something the server refused before the application saw a request: a head over its limits,
/// a malformed request, a deadline, a connection over a cap. `status` is the HTTP answer sent
/// (0 when the connection was closed without one).
struct Rejection {
    std::string remote;
    int status = 0;
    std::string_view reason; // a fixed token, one of kRejectionReasons
};

/// Every Rejection::reason, for metrics that are declared up front.
inline constexpr std::string_view kRejectionReasons[] = {
    "head_too_large",          // 431: request line and fields over the head limit
    "too_many_fields",         // 431
    "target_too_long",         // 400
    "malformed",               // 400: not HTTP/1.x
    "bad_framing",             // 400: Content-Length/Transfer-Encoding unacceptable
    "body_too_large",          // 413, chunked or not
    "timeout",                 // 408: a request begun but not complete in time
    "tls_handshake",           // the TLS handshake failed or timed out
    "address_cap_eviction",    // an idle connection closed for a new one from its address
    "connection_cap_eviction", // ... for a new one under the total cap
    "connection_refused",      // a new connection closed: a cap reached, nothing idle to close
    "accept_starved",          // accept failed for lack of descriptors or memory (retried)
    "accept_failed",           // accept failed otherwise (retried)
};

} // namespace cmon::front
