// SPDX-License-Identifier: MIT
// The CMon response shape, kept from the original daemon:
//   {"status": "ok"|"error", "code": <HTTP status>, "message": "...", "data": <any>}
// plus optional extra members after these four (exit_code, duration_ms, ... for commands).
// Bodies are built with nlohmann::json (ordered, so the four keys come first, as before); bytes
// that are not valid UTF-8 (command output can be anything) become U+FFFD instead of an error.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace cmond {

using Json = nlohmann::ordered_json;

struct ApiReply {
    int code = 200;
    std::string message;
    Json data = nullptr;
    Json extra = Json::object(); // members appended after "data"
};

/// The JSON body for a reply. Never throws on odd bytes in strings.
std::string render_reply(const ApiReply& reply);

/// An error reply with data null.
ApiReply error_reply(int code, std::string message);

/// "Not Found", "Method Not Allowed", ... for the status codes cmond answers with.
std::string_view reason_phrase(int code);

/// The exact 401 body of the original daemon.
inline constexpr std::string_view kAuthErrorBody =
    R"({"status":"error","code":401,"message":"Authentication Error","data":null})";

} // namespace cmond
