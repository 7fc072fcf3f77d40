// SPDX-License-Identifier: MIT
// cmond's request parsing on hostile bytes: front::RequestParser (Beast's basic_parser with our
// own store and limits) fed the input the way a connection delivers it, in pieces whose sizes
// the first input byte chooses, then, for a head it accepted, cmond's query parsing and the
// per-route check of its parameters (query.h) on the request's query.
//
// Checked besides "no crash, no sanitizer report, nothing thrown": an accepted head respects
// the limits (target length, field count), its path and query are the target split at the first
// '?', and a parsed query has only non-empty names and no control characters.
#include "front/request_parser.h"
#include "query.h"

#include <boost/beast/core/buffers_prefix.hpp>
#include <boost/beast/http/error.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string_view>

// Beast's own assertions stay on (BOOST_ENABLE_ASSERT_HANDLER, meson.build) and abort, but for
// one that is wrong: basic_parser::parse_chunk_header (Boost 1.81, basic_parser.ipp:702) asserts
// n >= 5 when it resumes after a last chunk "0\r\n" that was also the body's first chunk and
// arrived alone (4 bytes with the next one: no CRLF of a previous chunk in front). The code
// after it reads within the buffer, and release builds (cmond's) have no assertions.
namespace boost {
void assertion_failed(const char* expr, const char* function, const char* file, long line) {
    if (strcmp(expr, "n >= 5") == 0 && strstr(file, "beast/http/impl/basic_parser.ipp") != nullptr)
        return;
    fprintf(stderr, "%s:%ld: %s: assertion '%s' failed\n", file, line, function, expr);
    abort();
}
void assertion_failed_msg(const char* expr, const char* msg, const char* function, const char* file,
                          long line) {
    fprintf(stderr, "%s:%ld: %s: assertion '%s' failed: %s\n", file, line, function, expr, msg);
    abort();
}
} // namespace boost

namespace {

[[noreturn]] void fail(const char* what) {
    fprintf(stderr, "fuzz_http_request: %s\n", what);
    abort();
}

void check_query(std::string_view raw) {
    auto parsed = cmond::parse_query(raw);
    if (auto* err = std::get_if<cmond::QueryError>(&parsed)) {
        if (err->message.empty())
            fail("a query refused without a message");
        return;
    }
    const auto& params = std::get<cmond::QueryParams>(parsed);
    for (const auto& [name, value] : params) {
        if (name.empty())
            fail("a parameter without a name");
        for (const unsigned char c : name + value)
            if (c < 0x20 || c == 0x7f)
                fail("a control character got through");
    }
    // The routes' checks: none allowed, one parameter (cmond's deploy_branch takes 'branch'),
    // or two (POST /arena/<pid>/profile takes 'state' and 'rate').
    const std::vector<std::vector<std::string_view>> routes = {{}, {"branch"}, {"state", "rate"}};
    for (const auto& allowed : routes) {
        const auto problem = cmond::check_query(params, allowed);
        if (!problem && params.size() > allowed.size())
            fail(allowed.empty() ? "parameters accepted by a route that takes none"
                                 : "a parameter accepted twice");
    }
    (void)cmond::query_value(params, "branch");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0)
        return 0;
    // Pieces of 1..256 bytes (0: everything at once).
    const size_t piece = data[0] == 0 ? size : data[0];
    const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);

    cmon::front::ParseLimits limits;
    limits.max_head_bytes = 4096; // smaller than the server's, so the fuzzer reaches them
    limits.max_fields = 16;
    limits.max_target_bytes = 512;
    limits.max_body_bytes = 2048;
    cmon::front::Request request;
    cmon::front::RequestParser parser(request, limits);
    parser.eager(true);

    // A connection's buffer: what has arrived and not been consumed yet.
    std::string buffer;
    size_t arrived = 0;
    boost::beast::error_code ec;
    bool head_checked = false;
    while (!parser.is_done()) {
        if (arrived < bytes.size()) {
            const size_t n = std::min(piece, bytes.size() - arrived);
            buffer.append(bytes.substr(arrived, n));
            arrived += n;
        }
        // An exact-size copy, so that ASan sees a read past what has arrived.
        const auto view = std::make_unique<char[]>(buffer.size());
        memcpy(view.get(), buffer.data(), buffer.size());
        const size_t used = parser.put(boost::asio::buffer(view.get(), buffer.size()), ec);
        buffer.erase(0, used);
        if (ec == boost::beast::http::error::need_more) {
            ec = {};
            if (arrived == bytes.size()) {
                // The connection's end, as Beast's read reports it: to the parser only once it
                // has seen something (an idle connection's end is not a message's).
                if (parser.got_some())
                    parser.put_eof(ec);
                break;
            }
            continue;
        }
        if (ec)
            break;
        if (parser.is_header_done() && !head_checked) {
            head_checked = true;
            if (request.method.empty())
                fail("a head with no method");
            if (request.target.size() > limits.max_target_bytes)
                fail("a target over the limit");
            if (request.headers.size() > limits.max_fields)
                fail("more fields than the limit");
            const size_t q = request.target.find('?');
            if (request.path != std::string_view(request.target).substr(0, q))
                fail("path is not the target up to '?'");
            if (q == std::string::npos ? !request.query.empty()
                                       : request.query != request.target.substr(q + 1))
                fail("query is not the target after '?'");
            check_query(request.query);
            (void)request.count("content-length");
            (void)request.values("authorization");
        }
        if (used == 0 && arrived == bytes.size())
            break; // nothing consumed and nothing more to come
    }
    if (request.body.size() > limits.max_body_bytes)
        fail("a body over the limit");
    // The query parser on the raw input too: it sees any bytes a target may carry.
    check_query(bytes);
    return 0;
}
