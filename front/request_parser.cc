// SPDX-License-Identifier: MIT
// See request_parser.h.
#include "request_parser.h"

#include <boost/beast/http/error.hpp>

#include <algorithm>
#include <string>
#include <strings.h>

namespace cmon::front {

namespace http = boost::beast::http;

std::size_t Request::count(std::string_view name) const {
    std::size_t n = 0;
    for (const auto& [k, v] : headers) {
        n += k.size() == name.size() && ::strncasecmp(k.data(), name.data(), k.size()) == 0;
    }
    return n;
}

std::vector<std::string_view> Request::values(std::string_view name) const {
    std::vector<std::string_view> out;
    for (const auto& [k, v] : headers) {
        if (k.size() == name.size() && ::strncasecmp(k.data(), name.data(), k.size()) == 0) {
            out.emplace_back(v);
        }
    }
    return out;
}

RequestParser::RequestParser(Request& into, const ParseLimits& limits)
    : into_(into), limits_(limits) {
    header_limit(limits.max_head_bytes);
    body_limit(limits.max_body_bytes);
}

void RequestParser::on_request_impl(verb method, string_view method_str, string_view target,
                                    int version, error_code& ec) {
    if (method == verb::unknown) {
        ec = http::error::bad_method; // a method no route of ours could have: 400, as before
        return;
    }
    if (target.size() > limits_.max_target_bytes) {
        problem_ = Problem::TargetTooLong;
        ec = http::error::bad_target;
        return;
    }
    into_.method.assign(method_str.data(), method_str.size());
    into_.target.assign(target.data(), target.size());
    const std::string_view t = into_.target;
    const std::size_t q = t.find('?');
    into_.path = t.substr(0, q);
    into_.query = q == std::string_view::npos ? std::string() : std::string(t.substr(q + 1));
    into_.version = version;
}

void RequestParser::on_response_impl(int, string_view, int, error_code& ec) {
    ec = http::error::bad_method; // a request parser never sees a status line
}

void RequestParser::on_field_impl(field name_enum, string_view name, string_view value,
                                  error_code& ec) {
    if (into_.headers.size() >= limits_.max_fields) {
        problem_ = Problem::TooManyFields;
        ec = http::error::header_limit;
        return;
    }
    if (name_enum == field::content_length && !content_length_ok(value, ec)) {
        return;
    }
    into_.headers.emplace_back(std::string(name.data(), name.size()),
                               std::string(value.data(), value.size()));
}

// Stricter than Beast, which accepts a list of equal values ("1, 1") and repeated equal fields
// (RFC 9110 8.6 allows a recipient to): one field, digits only. All digits but over the body
// limit is a 413 however many digits, not an overflow's 400.
bool RequestParser::content_length_ok(string_view value, error_code& ec) {
    if (seen_content_length_) {
        ec = http::error::multiple_content_length;
        return false;
    }
    seen_content_length_ = true;
    if (value.empty() || value.find_first_not_of("0123456789") != string_view::npos) {
        ec = http::error::bad_content_length;
        return false;
    }
    const std::size_t digits = value.size() - std::min(value.find_first_not_of('0'), value.size());
    if (digits > 19 || std::stoull(std::string(value)) > limits_.max_body_bytes) {
        ec = http::error::body_limit;
        return false;
    }
    return true;
}

void RequestParser::on_header_impl(error_code&) {
    into_.keep_alive = keep_alive();
    into_.has_body = chunked() || (content_length() && *content_length() > 0);
}

void RequestParser::on_body_init_impl(const boost::optional<std::uint64_t>& length, error_code&) {
    // body_limit() has already refused a larger Content-Length; reserve no more than the cap.
    if (length) {
        into_.body.reserve(static_cast<std::size_t>(*length));
    }
}

std::size_t RequestParser::on_body_impl(string_view body, error_code&) {
    into_.body.append(body.data(), body.size());
    return body.size();
}

void RequestParser::on_chunk_header_impl(std::uint64_t, string_view, error_code&) {}

std::size_t RequestParser::on_chunk_body_impl(std::uint64_t, string_view body, error_code&) {
    // The parser counts chunk bytes against body_limit() before handing them over.
    into_.body.append(body.data(), body.size());
    return body.size();
}

void RequestParser::on_finish_impl(error_code&) {}

} // namespace cmon::front
