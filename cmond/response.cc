// SPDX-License-Identifier: MIT
// Rendering of the CMon response shape; see response.h.
#include "response.h"

namespace cmond {

std::string render_reply(const ApiReply& reply) {
    Json body;
    body["status"] = reply.code < 400 ? "ok" : "error";
    body["code"] = reply.code;
    body["message"] = reply.message;
    body["data"] = reply.data;
    for (const auto& [key, value] : reply.extra.items()) {
        body[key] = value;
    }
    return body.dump(-1, ' ', false, Json::error_handler_t::replace);
}

ApiReply error_reply(int code, std::string message) {
    ApiReply r;
    r.code = code;
    r.message = std::move(message);
    return r;
}

std::string_view reason_phrase(int code) {
    switch (code) {
    case 200:
        return "OK";
    case 202:
        return "Accepted";
    case 400:
        return "Bad Request";
    case 401:
        return "Authentication Error";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 416:
        return "Range Not Satisfiable";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return code < 400 ? "OK" : code < 500 ? "Client Error" : "Server Error";
    }
}

} // namespace cmond
