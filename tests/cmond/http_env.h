// SPDX-License-Identifier: MIT
// What the HTTP test programs share: Env (a temp dir with a 0600 key, stand-in scripts and a
// config file with a harmless command table), httplib clients for a Daemon, raw requests, and
// reading samples out of a /metrics exposition.
#pragma once

#include "helpers.h"

#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace cmond_test {

using nlohmann::json;

// A temp dir with a 0600 key, stand-in scripts and a config file with a harmless command table.
struct Env {
    testing::TempDir dir;
    std::string key = cmond_test::random_key_hex();

    Env() {
        dir.write("client_secret.key", key + "\n", 0600);
        // deploy.sh logs every branch it receives, so tests can prove refused values never ran.
        dir.write("deploy.sh", "#!/bin/sh\necho \"$1\" >> deploy.log\necho \"deploy $1\"\n", 0755);
        dir.write("teardown.sh", "#!/bin/sh\necho \"teardown $1\"\nexit 3\n", 0755);
        dir.write("cmond.conf", R"(# stand-in command table for the tests
key_file = client_secret.key
auth_max_failures = 1000
shutdown_timeout = 5s
kill_grace = 200ms
log_level = info

[command health]
argv = ["/bin/echo", "healthy"]
[command logs]
argv = ["/bin/sh", "-c", "echo log line; echo err line >&2"]
[command reboot]
argv = ["/bin/echo", "reboot stand-in"]
[command sync_upstream]
argv = ["/bin/echo", "pull", "origin", "--", "{branch}"]
[command deploy_branch]
argv = ["./deploy.sh", "{branch}"]
[command teardown_branch]
argv = ["./teardown.sh", "{branch}"]
)");
    }

    std::vector<std::string> args(std::vector<std::string> extra = {}) const {
        std::vector<std::string> a = {"--config", dir.file("cmond.conf")};
        a.insert(a.end(), extra.begin(), extra.end());
        return a;
    }

    httplib::Headers auth() const { return {{"access_token", key}}; }
};

inline httplib::Client client(const Daemon& d) {
    httplib::Client cli("127.0.0.1", d.port());
    cli.set_connection_timeout(5, 0);
    cli.set_read_timeout(30, 0);
    return cli;
}

inline json body_of(const httplib::Result& r) {
    REQUIRE(r);
    return json::parse(r->body);
}

// Sends raw bytes and returns everything the server answers before closing (or 2 s of quiet).
inline std::string raw_request(int port, const std::string& bytes) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(fd);
        return "";
    }
    ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    timeval tv{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) {
        out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return out;
}

inline std::string metrics_text(const Daemon& d, const Env& env) {
    auto cli = client(d);
    auto r = cli.Get("/metrics", env.auth());
    REQUIRE(r);
    REQUIRE(r->status == 200);
    return r->body;
}

// Value of the sample line starting with `series ` in an exposition, or -1.
inline double sample(const std::string& text, const std::string& series) {
    const auto pos = text.find("\n" + series + " ");
    if (pos == std::string::npos) {
        return -1;
    }
    return std::stod(text.substr(pos + series.size() + 2));
}

inline constexpr const char* kAuthError =
    R"({"status":"error","code":401,"message":"Authentication Error","data":null})";

} // namespace cmond_test
