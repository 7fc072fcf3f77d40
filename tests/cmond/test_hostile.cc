// SPDX-License-Identifier: MIT
// cmond against clients that mean harm (../shared/SECURITY.md), on loopback with the stand-in
// command table: floods of header bytes, slow and silent connections, bodies where none belong,
// requests hidden in bodies, Range, half-closed sockets, weak TLS, SIGTERM with a client that
// never finishes. Each case bounds its connections, bytes and time, and the daemon is killed
// and reaped when the case ends.
#include "hostile.h"
#include "http_env.h"

#include <csignal>
#include <cstdlib>
#include <thread>

using namespace cmond_test;
using namespace std::chrono_literals;
using hostile::Conn;

namespace {

std::string head_for(const std::string& target, const std::string& key,
                     const std::string& extra = "") {
    return "GET " + target + " HTTP/1.1\r\nHost: x\r\naccess_token: " + key + "\r\n" + extra +
           "\r\n";
}

// A legitimate GET /health: answered 200, and how long it took.
std::chrono::milliseconds legit_health(const Daemon& d, const Env& env) {
    auto cli = client(d);
    cli.set_connection_timeout(5, 0);
    cli.set_read_timeout(5, 0);
    const auto t0 = std::chrono::steady_clock::now();
    auto r = cli.Get("/health", env.auth());
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - t0);
    REQUIRE(r);
    CHECK(r->status == 200);
    return took;
}

// The count of a command's runs from /metrics (0 when absent).
double runs_of(const Daemon& d, const Env& env, const std::string& command) {
    const std::string text = metrics_text(d, env);
    double n = 0;
    for (const char* result : {"ok", "failed"}) {
        const double v = sample(text, "cmond_command_runs_total{command=\"" + command +
                                          "\",result=\"" + result + "\"}");
        n += v > 0 ? v : 0;
    }
    return n;
}

} // namespace

TEST_SUITE("hostile") {

    TEST_CASE("header floods: 431 and close, memory bounded, later clients served") {
        Env env;
        Daemon d(env.dir, env.args());
        REQUIRE_MESSAGE(d.started(), d.err());
        legit_health(d, env);
        const long rss_before = hostile::rss_kib(d.pid());

        // Four connections at once, each offering 32 MB of header lines (the landed server
        // kept them all: 2.5 GB and an abort); and one line with no newline at all.
        std::vector<std::thread> floods;
        std::atomic<int> answered_431{0};
        std::atomic<std::size_t> taken{0};
        for (int i = 0; i < 5; ++i) {
            floods.emplace_back([&, i] {
                Conn c(d.port());
                REQUIRE(c.ok());
                c.send("GET /health HTTP/1.1\r\nHost: x\r\n");
                taken += i < 4 ? c.flood("X-Flood: " + std::string(100, 'a') + "\r\n", 32 << 20)
                               : c.flood(std::string(1000, 'a'), 32 << 20);
                const std::string out = c.read_all(5s);
                answered_431 += hostile::status_of(out) == 431;
            });
        }
        for (auto& t : floods) {
            t.join();
        }
        CHECK(answered_431 == 5);
        // The server stopped reading long before 5 x 32 MB (socket buffers take a few MB).
        CHECK(taken < 5 * (32u << 20));
        const long rss_after = hostile::rss_kib(d.pid());
        CAPTURE(rss_before);
        CAPTURE(rss_after);
        CHECK(rss_after < rss_before + 32 * 1024);

        // Too many fields, each small: 431 as well.
        Conn many(d.port());
        std::string fields;
        for (int i = 0; i < 150; ++i) {
            fields += "X-F" + std::to_string(i) + ": 1\r\n";
        }
        many.send(head_for("/health", env.key, fields));
        CHECK(hostile::status_of(many.read_all(3s)) == 431);

        CHECK(legit_health(d, env) < 1000ms);
        // Every refusal is in the log with the client's address.
        CHECK(d.err().find("rejected client=127.0.0.1 reason=head_too_large code=431") !=
              std::string::npos);
        CHECK(d.err().find("rejected client=127.0.0.1 reason=too_many_fields code=431") !=
              std::string::npos);
        CHECK(sample(metrics_text(d, env),
                     "cmond_http_rejections_total{reason=\"head_too_large\"}") >= 5);
    }

    TEST_CASE("slow and silent connections do not keep a legitimate client waiting") {
        Env env;
        // A high per-address cap first: all 128 stay open, and the event loop still answers.
        Daemon d(env.dir, env.args({"--max-connections-per-address", "1000"}));
        REQUIRE_MESSAGE(d.started(), d.err());
        std::vector<Conn> slow;
        std::vector<Conn> silent;
        for (int i = 0; i < 64; ++i) {
            slow.emplace_back(d.port());
            REQUIRE(slow.back().ok());
            slow.back().send("GET /health HTTP/1.1\r\nHost: x\r\n");
            silent.emplace_back(d.port());
            REQUIRE(silent.back().ok());
        }
        for (int round = 0; round < 3; ++round) {
            for (auto& c : slow) {
                c.send("X-Slow: " + std::to_string(round) + "\r\n");
            }
            CHECK(legit_health(d, env) < 1000ms);
            std::this_thread::sleep_for(300ms);
        }
        for (auto& c : slow) {
            CHECK_FALSE(c.peer_closed());
        }
    }

    TEST_CASE("the per-address cap closes the oldest idle connection, not the newcomer") {
        Env env;
        Daemon d(env.dir, env.args({"--max-connections-per-address", "8"}));
        REQUIRE_MESSAGE(d.started(), d.err());
        std::vector<Conn> silent;
        for (int i = 0; i < 8; ++i) {
            silent.emplace_back(d.port());
            REQUIRE(silent.back().ok());
        }
        std::this_thread::sleep_for(100ms); // all eight accepted
        CHECK(legit_health(d, env) < 1000ms);
        CHECK(silent.front().peer_closed(2s));
        CHECK(d.err().find("rejected client=127.0.0.1 reason=address_cap_eviction") !=
              std::string::npos);
    }

    TEST_CASE("a request begun and never finished gets 408 at http_timeout") {
        Env env;
        Daemon d(env.dir, env.args({"--http-timeout", "500ms"}));
        REQUIRE_MESSAGE(d.started(), d.err());
        Conn c(d.port());
        c.send("GET /health HTTP/1.1\r\nHost: x\r\n");
        const auto t0 = std::chrono::steady_clock::now();
        // One header line every 100 ms does not extend the deadline of the whole head.
        std::string out;
        for (int i = 0; i < 20 && out.empty(); ++i) {
            c.send("X-Slow: 1\r\n");
            out = c.read_all(100ms);
        }
        CHECK(hostile::status_of(out) == 408);
        CHECK(std::chrono::steady_clock::now() - t0 < 1500ms);
    }

    TEST_CASE("SIGTERM with slow clients: cmond exits within shutdown_timeout") {
        Env env;
        Daemon d(env.dir, env.args({"--shutdown-timeout", "2s"}));
        REQUIRE_MESSAGE(d.started(), d.err());
        std::vector<Conn> slow;
        for (int i = 0; i < 8; ++i) {
            slow.emplace_back(d.port());
            slow.back().send("GET /health HTTP/1.1\r\nHost: x\r\n");
        }
        Conn keep(d.port()); // a keep-alive client between requests
        keep.send(head_for("/health", env.key));
        CHECK(hostile::status_of(keep.read_all(1s)) == 200);
        std::atomic<bool> trickle{true};
        std::thread t([&] {
            for (int i = 0; trickle && i < 100; ++i) {
                for (auto& c : slow) {
                    c.send("X-Slow: 1\r\n");
                }
                std::this_thread::sleep_for(100ms);
            }
        });
        const auto t0 = std::chrono::steady_clock::now();
        d.signal(SIGTERM);
        const auto status = d.wait_exit(6s);
        trickle = false;
        t.join();
        REQUIRE(status);
        CHECK(*status == 0);
        CHECK(std::chrono::steady_clock::now() - t0 < 2500ms);
    }

    TEST_CASE("desync: a body never runs as a request") {
        Env env;
        Daemon d(env.dir, env.args());
        REQUIRE_MESSAGE(d.started(), d.err());
        const std::string hidden =
            "GET /deploy_branch?branch=smuggled HTTP/1.1\r\nHost: x\r\naccess_token: " + env.key +
            "\r\n\r\n";
        // 401 (no key), 404 and 405 (key) are answered before the body: the connection closes.
        const std::string heads[] = {
            "POST /health HTTP/1.1\r\nHost: x\r\n",
            "POST /nope HTTP/1.1\r\nHost: x\r\naccess_token: " + env.key + "\r\n",
            "POST /health HTTP/1.1\r\nHost: x\r\naccess_token: " + env.key + "\r\n",
        };
        const int codes[] = {401, 404, 405};
        for (int i = 0; i < 3; ++i) {
            CAPTURE(i);
            Conn c(d.port());
            c.send(heads[i] + "Content-Length: " + std::to_string(hidden.size()) + "\r\n\r\n" +
                   hidden);
            const std::string out = c.read_all(3s);
            CHECK(hostile::status_of(out) == codes[i]);
            CHECK(hostile::responses_in(out) == 1);
            CHECK(out.find("Connection: close") != std::string::npos);
            CHECK(c.closed());
        }
        // Chunked, too.
        Conn chunked(d.port());
        char size[16];
        std::snprintf(size, sizeof size, "%zx", hidden.size());
        chunked.send("POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
                     std::string(size) + "\r\n" + hidden + "\r\n0\r\n\r\n");
        const std::string out = chunked.read_all(3s);
        CHECK(hostile::status_of(out) == 401);
        CHECK(hostile::responses_in(out) == 1);
        CHECK(testing::read_file(env.dir.file("deploy.log")).find("smuggled") == std::string::npos);
    }

    TEST_CASE("bodies are capped chunked or not: 413") {
        Env env;
        Daemon d(env.dir, env.args());
        REQUIRE_MESSAGE(d.started(), d.err());
        Conn c(d.port());
        std::string body;
        for (int i = 0; i < 32; ++i) { // 32 chunks of 4 KiB = 128 KiB
            body += "1000\r\n" + std::string(4096, 'b') + "\r\n";
        }
        c.send("POST /reboot HTTP/1.1\r\nHost: x\r\naccess_token: " + env.key +
               "\r\nTransfer-Encoding: chunked\r\n\r\n" + body + "0\r\n\r\n");
        const std::string out = c.read_all(3s);
        CHECK(hostile::status_of(out) == 413);
        CHECK(out.find(R"("code":413)") != std::string::npos);
        CHECK(runs_of(d, env, "reboot") == 0);
    }

    TEST_CASE("Range is ignored on every route: the whole answer, once") {
        Env env;
        Daemon d(env.dir, env.args());
        REQUIRE_MESSAGE(d.started(), d.err());
        std::string ranges = "Range: bytes=0-";
        for (int i = 0; i < 2600; ++i) {
            ranges += ",0-";
        }
        ranges += "\r\n";
        for (const char* target : {"/logs", "/metrics"}) {
            CAPTURE(target);
            Conn c(d.port());
            c.send(head_for(target, env.key, ranges + "Connection: close\r\n"));
            const std::string out = c.read_all(5s);
            CHECK(hostile::status_of(out) == 200);
            CHECK(out.find("multipart/byteranges") == std::string::npos);
            CHECK(out.size() < 1u << 20);
        }
    }

    TEST_CASE("half-closed client: the answer is written, the command runs once") {
        Env env;
        Daemon d(env.dir, env.args());
        REQUIRE_MESSAGE(d.started(), d.err());
        Conn c(d.port());
        c.send("PUT /sync_upstream?branch=feature-1 HTTP/1.1\r\nHost: x\r\naccess_token: " +
               env.key + "\r\nContent-Length: 0\r\n\r\n");
        c.shutdown_write();
        const std::string out = c.read_all(5s);
        CHECK(hostile::status_of(out) == 200);
        CHECK(out.find("pull origin -- feature-1") != std::string::npos);
        CHECK(runs_of(d, env, "sync_upstream") == 1);
    }

    TEST_CASE("strict queries: one branch, one '=', no ';'") {
        Env env;
        Daemon d(env.dir, env.args());
        REQUIRE_MESSAGE(d.started(), d.err());
        auto cli = client(d);
        for (const char* q : {"branch=--upload-pack=id", "branch=a;foo=1", "branch=x&branch=x",
                              "branch=a&&", "branch", "branch=%zz"}) {
            CAPTURE(q);
            auto r = cli.Get((std::string("/deploy_branch?") + q).c_str(), env.auth());
            REQUIRE(r);
            CHECK(r->status == 400);
        }
        const std::string log = testing::read_file(env.dir.file("deploy.log"));
        CHECK(log.find("id") == std::string::npos);
        CHECK(log.find("foo") == std::string::npos);
        CHECK(log.find("x") == std::string::npos);
        auto ok = cli.Get("/deploy_branch?branch=feature%2Fx", env.auth());
        REQUIRE(ok);
        CHECK(ok->status == 200);
    }

    TEST_CASE("TLS 1.2 offers only ECDHE with AEAD; TLS 1.3 works") {
        if (std::system("command -v openssl >/dev/null 2>&1") != 0) {
            MESSAGE("SKIP: openssl is not installed");
            return;
        }
        Env env;
        const std::string make =
            "cd '" + env.dir.path() +
            "' && openssl req -x509 -newkey rsa:2048 -nodes -keyout tls.key -out tls.crt "
            "-days 2 -subj /CN=127.0.0.1 >/dev/null 2>&1";
        REQUIRE(std::system(make.c_str()) == 0);
        Daemon d(env.dir, env.args({"--tls-cert", "tls.crt", "--tls-key", "tls.key"}));
        REQUIRE_MESSAGE(d.started(), d.err());
        const auto handshake = [&](const std::string& args) {
            const std::string cmd = "echo | timeout 10 openssl s_client -connect 127.0.0.1:" +
                                    std::to_string(d.port()) + " " + args + " >/dev/null 2>&1";
            return std::system(cmd.c_str()) == 0;
        };
        CHECK(handshake("-tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256"));
        CHECK(handshake("-tls1_2 -cipher ECDHE-RSA-CHACHA20-POLY1305"));
        CHECK(handshake("-tls1_3"));
        CHECK_FALSE(handshake("-tls1_2 -cipher AES128-GCM-SHA256"));         // static RSA
        CHECK_FALSE(handshake("-tls1_2 -cipher AES256-SHA"));                // static RSA, CBC
        CHECK_FALSE(handshake("-tls1_2 -cipher ECDHE-RSA-AES128-SHA"));      // CBC, SHA-1
        CHECK_FALSE(handshake("-tls1_2 -cipher DHE-RSA-AES128-GCM-SHA256")); // not ECDHE
        CHECK_FALSE(handshake("-tls1_1"));
    }
}
