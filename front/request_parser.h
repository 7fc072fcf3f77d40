// SPDX-License-Identifier: MIT
// The HTTP/1.1 request parser: Beast's strict basic_parser (RFC 9112 grammar, one
// Content-Length, chunked framing, limits on the head and body) with a store of our own. Fields
// go straight into front::Request, so a head costs at most its own bytes in memory, and the
// count of fields is capped while they arrive (Beast's own parser keeps every field and has no
// count limit). Limits that Beast does not have are reported as `Problem`s next to the error
// code the parse stopped with.
#pragma once

#include "message.h"

#include <boost/beast/http/basic_parser.hpp>

#include <cstddef>
#include <cstdint>

namespace cmon::front {

struct ParseLimits {
    std::uint32_t max_head_bytes = 16 * 1024; // request line + fields
    std::size_t max_fields = 100;
    std::size_t max_target_bytes = 8192;
    std::uint64_t max_body_bytes = std::uint64_t{64} << 10; // chunked or not
};

class RequestParser : public boost::beast::http::basic_parser<true> {
public:
    /// Why a parse was stopped on purpose (the error code is then bad_target / header_limit).
    enum class Problem { None, TargetTooLong, TooManyFields };

    RequestParser(Request& into, const ParseLimits& limits);

    Problem problem() const { return problem_; }

private:
    using error_code = boost::beast::error_code;
    using string_view = boost::beast::string_view;
    using verb = boost::beast::http::verb;
    using field = boost::beast::http::field;

    void on_request_impl(verb method, string_view method_str, string_view target, int version,
                         error_code& ec) override;
    void on_response_impl(int, string_view, int, error_code& ec) override;
    void on_field_impl(field name, string_view name_string, string_view value,
                       error_code& ec) override;
    void on_header_impl(error_code& ec) override;
    void on_body_init_impl(const boost::optional<std::uint64_t>& content_length,
                           error_code& ec) override;
    std::size_t on_body_impl(string_view body, error_code& ec) override;
    void on_chunk_header_impl(std::uint64_t size, string_view extensions, error_code& ec) override;
    std::size_t on_chunk_body_impl(std::uint64_t remain, string_view body, error_code& ec) override;
    void on_finish_impl(error_code& ec) override;
    bool content_length_ok(string_view value, error_code& ec);

    Request& into_;
    const ParseLimits limits_;
    Problem problem_ = Problem::None;
    bool seen_content_length_ = false;
};

} // namespace cmon::front
