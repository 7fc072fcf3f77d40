// SPDX-License-Identifier: MIT
// cmond over real HTTP: the real binary (CMOND_BIN) on a port it picks at run time, a stand-in
// command table (never the real reboot), and httplib clients. Every daemon is killed and reaped
// when its test case ends (Daemon's destructor).
#include "http_env.h"

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <sys/stat.h>
#include <thread>

using namespace cmond_test;
using namespace std::chrono_literals;

TEST_SUITE("http") {

    TEST_CASE("every route runs its command with the original response shape") {
        Env env;
        Daemon d(env.dir, env.args());
        REQUIRE_MESSAGE(d.started(), d.err());
        auto cli = client(d);

        auto health = cli.Get("/health", env.auth());
        REQUIRE(health);
        CHECK(health->status == 200);
        CHECK(health->get_header_value("Content-Type") == "application/json");
        const json h = json::parse(health->body);
        CHECK(h["status"] == "ok");
        CHECK(h["code"] == 200);
        CHECK(h["message"] == "Command executed");
        CHECK(h["data"] == "healthy\n");
        CHECK(h["exit_code"] == 0);
        CHECK(h["duration_ms"].is_number());
        CHECK(h["duration_ms"].get<double>() >= 0);
        CHECK(h["timed_out"] == false);
        CHECK(h["truncated"] == false);
        // The four original keys come first, in the original order.
        CHECK(health->body.rfind(
                  R"({"status":"ok","code":200,"message":"Command executed","data":)", 0) == 0);

        CHECK(body_of(cli.Get("/logs", env.auth()))["data"] == "log line\nerr line\n");
        CHECK(body_of(cli.Post("/reboot", env.auth(), "", "text/plain"))["data"] ==
              "reboot stand-in\n");
        CHECK(body_of(cli.Put("/sync_upstream", env.auth(), "", "text/plain"))["data"] ==
              "pull origin -- main\n");
        CHECK(body_of(cli.Put("/sync_upstream?branch=develop", env.auth(), "",
                              "text/plain"))["data"] == "pull origin -- develop\n");
        CHECK(body_of(cli.Get("/deploy_branch?branch=feature/x-1.2", env.auth()))["data"] ==
              "deploy feature/x-1.2\n");
        CHECK(body_of(cli.Get("/deploy_branch", env.auth()))["data"] == "deploy main\n");

        auto teardown = cli.Delete("/teardown_branch?branch=old", env.auth());
        REQUIRE(teardown);
        CHECK(teardown->status == 500);
        const json t = json::parse(teardown->body);
        CHECK(t["status"] == "error");
        CHECK(t["code"] == 500);
        CHECK(t["message"] == "Command failed");
        CHECK(t["data"] == "teardown old\n");
        CHECK(t["exit_code"] == 3);

        auto m = cli.Get("/metrics", env.auth());
        REQUIRE(m);
        CHECK(m->status == 200);
        CHECK(m->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0) == 0);

        // One access-log line per request, with route, command, exit code and duration.
        const std::string log = d.err();
        CHECK(log.find("info request client=127.0.0.1 method=GET route=/health code=200 "
                       "command=health exit_code=0") != std::string::npos);
        CHECK(log.find("route=/teardown_branch code=500 command=teardown_branch exit_code=3") !=
              std::string::npos);
        CHECK(log.find("duration_ms=") != std::string::npos);
        CHECK(log.find(env.key) == std::string::npos);
    }

    TEST_CASE("wrong methods get 405 with Allow; unknown paths 404; both JSON") {
        Env env;
        Daemon d(env.dir, env.args());
        REQUIRE_MESSAGE(d.started(), d.err());
        auto cli = client(d);
        const std::vector<std::pair<std::string, std::string>> routes = {
            {"/health", "GET"},
            {"/logs", "GET"},
            {"/reboot", "POST"},
            {"/restart", "POST"},
            {"/sync_upstream", "PUT"},
            {"/deploy_branch", "GET"},
            {"/teardown_branch", "DELETE"},
            {"/metrics", "GET"},
            {"/arena", "GET"},
            {"/arena/1", "GET"},
            {"/arena/1/trim", "POST"},
            {"/arena/1/profile", "GET, POST"},
        };
        for (const auto& route : routes) {
            const std::string& path = route.first;     // not structured bindings: CAPTURE's lambda
            const std::string& allowed = route.second; // cannot capture those in clang 14
            for (const std::string method :
                 {"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"}) {
                if ((", " + allowed + ", ").find(", " + method + ", ") != std::string::npos) {
                    continue; // one of the Allow list's
                }
                CAPTURE(path);
                CAPTURE(method);
                httplib::Result r =
                    method == "GET"      ? cli.Get(path.c_str(), env.auth())
                    : method == "POST"   ? cli.Post(path.c_str(), env.auth(), "", "text/plain")
                    : method == "PUT"    ? cli.Put(path.c_str(), env.auth(), "", "text/plain")
                    : method == "DELETE" ? cli.Delete(path.c_str(), env.auth())
                    : method == "PATCH"  ? cli.Patch(path.c_str(), env.auth(), "", "text/plain")
                    : method == "HEAD"   ? cli.Head(path.c_str(), env.auth())
                                         : cli.Options(path.c_str(), env.auth());
                REQUIRE(r);
                CHECK(r->status == 405);
                CHECK(r->get_header_value("Allow") == allowed);
                if (method != "HEAD") {
                    CHECK(
                        r->body ==
                        R"({"status":"error","code":405,"message":"Method Not Allowed","data":null})");
                }
            }
        }
        for (const char* path : {"/", "/nope", "/health/", "/HEALTH", "/health/x", "/arenas",
                                 "/arena/", "/arena/1/x", "/arena//trim", "/metrics.txt"}) {
            CAPTURE(path);
            auto r = cli.Get(path, env.auth());
            REQUIRE(r);
            CHECK(r->status == 404);
            CHECK(r->body == R"({"status":"error","code":404,"message":"Not Found","data":null})");
        }
        // Request targets that only look like a route.
        for (const char* target : {"health", "//health", "/arena/1/", "arena/1"}) {
            CAPTURE(target);
            const std::string out = raw_request(
                d.port(), std::string("GET ") + target + " HTTP/1.1\r\nHost: x\r\n" +
                              "access_token: " + env.key + "\r\nConnection: close\r\n\r\n");
            CHECK(out.rfind("HTTP/1.1 404", 0) == 0);
        }
        // A method httplib does not know at all, and a broken request line: JSON 400.
        const std::string foo =
            raw_request(d.port(), "FOO /health HTTP/1.1\r\nHost: x\r\naccess_token: " + env.key +
                                      "\r\nConnection: close\r\n\r\n");
        CHECK(foo.rfind("HTTP/1.1 400", 0) == 0);
        CHECK(foo.find(R"({"status":"error","code":400,"message":"Bad Request","data":null})") !=
              std::string::npos);
        const std::string junk = raw_request(d.port(), "garbage\r\n\r\n");
        CHECK(junk.rfind("HTTP/1.1 400", 0) == 0);
        CHECK(junk.find(R"("code":400)") != std::string::npos);
    }

    TEST_CASE("authentication on every route: both headers, constant-time check, exact 401 body") {
        Env env;
        Daemon d(env.dir, env.args());
        REQUIRE_MESSAGE(d.started(), d.err());
        auto cli = client(d);
        std::string wrong = env.key;
        wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
        std::string upper = env.key;
        for (auto& c : upper) {
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        }

        const std::vector<std::pair<const char*, httplib::Headers>> refused = {
            {"missing", {}},
            {"wrong", {{"access_token", wrong}}},
            {"short", {{"access_token", env.key.substr(0, 63)}}},
            {"long", {{"access_token", env.key + "0"}}},
            {"non-hex", {{"access_token", std::string(64, 'z')}}},
            {"empty", {{"access_token", ""}}},
            {"bearer wrong", {{"Authorization", "Bearer " + wrong}}},
            {"basic scheme", {{"Authorization", "Basic " + env.key}}},
            {"no scheme", {{"Authorization", env.key}}},
            {"both, token wrong",
             {{"access_token", wrong}, {"Authorization", "Bearer " + env.key}}},
            {"both, bearer wrong",
             {{"access_token", env.key}, {"Authorization", "Bearer " + wrong}}},
            {"token twice", {{"access_token", env.key}, {"access_token", env.key}}},
            {"other header name", {{"access-token", env.key}}},
        };
        for (const auto& entry : refused) {
            const char* name = entry.first;
            const httplib::Headers& headers = entry.second;
            for (const char* path : {"/health", "/metrics", "/nope"}) {
                CAPTURE(name);
                CAPTURE(path);
                auto r = cli.Get(path, headers);
                REQUIRE(r);
                CHECK(r->status == 401);
                CHECK(r->body == kAuthError);
                CHECK(r->get_header_value("WWW-Authenticate") == R"(Bearer realm="cmond")");
            }
        }
        auto post = cli.Post("/reboot", httplib::Headers{}, "", "text/plain");
        REQUIRE(post);
        CHECK(post->status == 401);

        const std::vector<std::pair<const char*, httplib::Headers>> accepted = {
            {"access_token", {{"access_token", env.key}}},
            {"ACCESS_TOKEN header name", {{"ACCESS_TOKEN", env.key}}},
            {"upper-case hex", {{"access_token", upper}}},
            {"bearer", {{"Authorization", "Bearer " + env.key}}},
            {"bearer lower-case scheme", {{"authorization", "bearer " + env.key}}},
            {"both right", {{"access_token", env.key}, {"Authorization", "Bearer " + env.key}}},
        };
        for (const auto& entry : accepted) {
            const char* name = entry.first;
            const httplib::Headers& headers = entry.second;
            CAPTURE(name);
            auto r = cli.Get("/health", headers);
            REQUIRE(r);
            CHECK(r->status == 200);
        }
        const std::string text = metrics_text(d, env);
        CHECK(sample(text, R"(cmond_auth_failures_total{reason="missing"})") >= 4);
        CHECK(sample(text, R"(cmond_auth_failures_total{reason="wrong"})") >= 9);
        CHECK(sample(text, R"(cmond_auth_failures_total{reason="malformed"})") >= 15);
        CHECK(sample(text, R"(cmond_auth_failures_total{reason="ambiguous"})") == 3);
        CHECK(d.err().find(env.key) == std::string::npos);
        CHECK(d.err().find(wrong) == std::string::npos);
    }

    TEST_CASE("repeated failures from one address get 429; the valid key is always served") {
        Env env;
        Daemon d(env.dir, env.args({"--auth-max-failures", "3", "--auth-block-time", "1500ms"}));
        REQUIRE_MESSAGE(d.started(), d.err());
        auto cli = client(d);
        const httplib::Headers bad = {{"access_token", std::string(64, '0')}};
        for (int i = 0; i < 3; ++i) {
            auto r = cli.Get("/health", bad);
            REQUIRE(r);
            CHECK(r->status == 401);
        }
        auto blocked = cli.Get("/health", bad);
        REQUIRE(blocked);
        CHECK(blocked->status == 429);
        const std::string retry = blocked->get_header_value("Retry-After");
        CHECK((retry == "1" || retry == "2")); // ceil of the 1.5 s block left
        CHECK(body_of(blocked)["message"].get<std::string>().find("authentication failures") !=
              std::string::npos);
        CHECK(d.err().find("client 127.0.0.1: 3 authentication failures; its failed requests get "
                           "429 for 1500ms (a valid key is still served)") != std::string::npos);
        // The key's holder shares 127.0.0.1 with whoever failed, and is not locked out.
        auto good = cli.Get("/health", env.auth());
        REQUIRE(good);
        CHECK(good->status == 200);
        REQUIRE(testing::eventually(
            [&] {
                auto r = cli.Get("/health", bad);
                return r && r->status == 401;
            },
            5s));
        const std::string text = metrics_text(d, env);
        CHECK(sample(text, "cmond_rate_limited_requests_total") >= 1);
        CHECK(sample(text, "cmond_rate_limited_clients_total") >= 1);
    }

    TEST_CASE("lockout: the valid key is served after 100 failures from its address") {
        Env env;
        Daemon d(env.dir, env.args({"--auth-max-failures", "5", "--auth-block-time", "1h"}));
        REQUIRE_MESSAGE(d.started(), d.err());
        auto cli = client(d);
        const httplib::Headers bad = {{"access_token", std::string(64, '1')}};
        int refused = 0;
        for (int i = 0; i < 100; ++i) {
            auto r = cli.Get("/health", bad);
            REQUIRE(r);
            refused += r->status == 429;
        }
        CHECK(refused == 95);
        for (int i = 0; i < 3; ++i) {
            auto r = cli.Get("/health", env.auth());
            REQUIRE(r);
            CHECK(r->status == 200);
        }
        auto still = cli.Get("/metrics", bad);
        REQUIRE(still);
        CHECK(still->status == 429);
    }

    TEST_CASE("injection attempts and bad queries get 400 and never run") {
        Env env;
        Daemon d(env.dir, env.args());
        REQUIRE_MESSAGE(d.started(), d.err());
        auto cli = client(d);
        const std::string pwned = env.dir.file("pwned");
        const std::vector<std::string> values = {
            "main;%20rm%20-rf%20/",
            "--upload-pack=touch%20" + pwned,
            "-x",
            "$(id)",
            "%60id%60",
            "a%0ab",
            "..",
            "a/../b",
            "/etc",
            "main%00",
            "",
            std::string(5000, 'a'),
            "main.lock",
            "a%20b",
            "a|b",
        };
        for (const auto& v : values) {
            CAPTURE(v.substr(0, 40));
            auto r = cli.Get(("/deploy_branch?branch=" + v).c_str(), env.auth());
            REQUIRE(r);
            CHECK(r->status == 400);
            const json j = json::parse(r->body);
            CHECK(j["code"] == 400);
            CHECK(j["status"] == "error");
            // Refused by the query parser (';', a second '=', control characters) or by the
            // branch whitelist.
            const std::string message = j["message"].get<std::string>();
            CHECK((message.rfind("Invalid branch: ", 0) == 0 ||
                   message.rfind("Malformed query: ", 0) == 0 ||
                   message.find("Query parameter") != std::string::npos));
            CHECK(j["data"].is_null());
            auto put =
                cli.Put(("/sync_upstream?branch=" + v).c_str(), env.auth(), "", "text/plain");
            REQUIRE(put);
            CHECK(put->status == 400);
        }
        // 10,000 characters: past httplib's URI limit, still a JSON 400.
        auto huge =
            cli.Get(("/deploy_branch?branch=" + std::string(10000, 'a')).c_str(), env.auth());
        REQUIRE(huge);
        CHECK(huge->status == 400);
        CHECK(json::parse(huge->body)["code"] == 400);

        auto twice = cli.Get("/deploy_branch?branch=a&branch=b", env.auth());
        REQUIRE(twice);
        CHECK(twice->status == 400);
        CHECK(body_of(twice)["message"] == "Query parameter 'branch' given more than once");
        auto unknown = cli.Get("/deploy_branch?brnach=a", env.auth());
        REQUIRE(unknown);
        CHECK(unknown->status == 400);
        CHECK(body_of(unknown)["message"].get<std::string>().find(
                  "Unknown query parameter 'brnach'") == 0);
        auto on_health = cli.Get("/health?branch=main", env.auth());
        REQUIRE(on_health);
        CHECK(on_health->status == 400);

        CHECK_FALSE(std::filesystem::exists(env.dir.file("deploy.log")));
        CHECK_FALSE(std::filesystem::exists(pwned));
        auto ok = cli.Get("/deploy_branch?branch=good", env.auth());
        REQUIRE(ok);
        CHECK(ok->status == 200);
        CHECK(testing::read_file(env.dir.file("deploy.log")) == "good\n");
    }

    TEST_CASE("a command past its timeout is killed with its children") {
        Env env;
        const std::string script =
            "(trap '' TERM; exec sleep 30) & echo $! > gc.pid; echo started; wait";
        Daemon d(env.dir,
                 env.args({"--command",
                           json::array({"/bin/sh", "-c", script}).dump().insert(0, "health.argv="),
                           "--command", "health.timeout=500ms"}));
        REQUIRE_MESSAGE(d.started(), d.err());
        auto cli = client(d);
        const auto t0 = std::chrono::steady_clock::now();
        auto r = cli.Get("/health", env.auth());
        const auto took = std::chrono::steady_clock::now() - t0;
        REQUIRE(r);
        CHECK(r->status == 500);
        const json j = json::parse(r->body);
        CHECK(j["message"] == "Command timed out after 500ms");
        CHECK(j["timed_out"] == true);
        CHECK(j["data"] == "started\n");
        CHECK(j["exit_code"].get<int>() > 128);
        CHECK(took < 5s);
        const std::string pid_text = testing::read_file(env.dir.file("gc.pid"));
        REQUIRE_FALSE(pid_text.empty());
        const pid_t grandchild = static_cast<pid_t>(std::stol(pid_text));
        CHECK(testing::eventually([&] { return !cmond_test::process_alive(grandchild); }, 3s));
        CHECK(sample(metrics_text(d, env),
                     R"(cmond_command_runs_total{command="health",result="timeout"})") == 1);
    }

    TEST_CASE("output over the cap is cut, odd bytes stay valid JSON, exec failures are 500/127") {
        Env env;
        Daemon d(env.dir,
                 env.args({
                     "--command",
                     R"(health.argv=["/bin/sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"])",
                     "--command",
                     "health.output_cap=1KiB",
                     "--command",
                     R"(logs.argv=["/usr/bin/printf", "\\377\\376ok\\033[31m"])",
                     "--command",
                     R"(reboot.argv=["/nonexistent/reboot"])",
                     "--command",
                     "sync_upstream.enabled=false",
                 }));
        REQUIRE_MESSAGE(d.started(), d.err());
        auto cli = client(d);
        // At the cap cmond closes the pipe: the writer dies of SIGPIPE, and the answer says so.
        const json capped = body_of(cli.Get("/health", env.auth()));
        CHECK(capped["code"] == 500);
        CHECK(capped["message"].get<std::string>().rfind("Command stopped at output_cap (1024 "
                                                         "bytes)",
                                                         0) == 0);
        CHECK(capped["data"] == std::string(1024, 'x'));
        CHECK(capped["truncated"] == true);

        const json odd = body_of(cli.Get("/logs", env.auth()));
        CHECK(odd["code"] == 200);
        CHECK(odd["data"] == "\xef\xbf\xbd\xef\xbf\xbdok\x1b[31m"); // U+FFFD twice, escapes kept

        auto missing = cli.Post("/reboot", env.auth(), "", "text/plain");
        REQUIRE(missing);
        CHECK(missing->status == 500);
        const json m = json::parse(missing->body);
        CHECK(m["message"] == "Command could not be started");
        CHECK(m["exit_code"] == 127);
        CHECK(m["data"].get<std::string>().find("/nonexistent/reboot") != std::string::npos);

        auto disabled = cli.Put("/sync_upstream", env.auth(), "", "text/plain");
        REQUIRE(disabled);
        CHECK(disabled->status == 403);
        CHECK(body_of(disabled)["message"] ==
              "Command 'sync_upstream' is disabled in this cmond's configuration");

        auto big_body = cli.Post("/reboot", env.auth(), std::string(100 * 1024, 'b'), "text/plain");
        REQUIRE(big_body);
        CHECK(big_body->status == 413);
        CHECK(body_of(big_body)["code"] == 413);

        // Broken body framing is answered at once, not after the read timeout.
        const std::pair<const char*, const char*> framing[] = {
            {"Content-Length: -5\r\n", "HTTP/1.1 400"},
            {"Content-Length: 99999999999999999999\r\n", "HTTP/1.1 413"},
            {"Content-Length: 70000\r\n", "HTTP/1.1 413"},
            {"Content-Length: 1, 1\r\n", "HTTP/1.1 400"},
            {"Content-Length: 1\r\nContent-Length: 1\r\n", "HTTP/1.1 400"},
            {"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "HTTP/1.1 400"},
        };
        for (const auto& entry : framing) {
            const char* headers = entry.first;
            CAPTURE(headers);
            const auto t0 = std::chrono::steady_clock::now();
            const std::string out = raw_request(
                d.port(), "POST /reboot HTTP/1.1\r\nHost: x\r\naccess_token: " + env.key + "\r\n" +
                              headers + "Connection: close\r\n\r\nhello");
            CHECK(out.rfind(entry.second, 0) == 0);
            CHECK(out.find(R"({"status":"error")") != std::string::npos);
            CHECK(std::chrono::steady_clock::now() - t0 < 1500ms);
        }
    }

    TEST_CASE("429 when a command is at its concurrency limit") {
        Env env;
        Daemon d(
            env.dir,
            env.args({"--command",
                      R"(health.argv=["/bin/sh", "-c", )"
                      R"("while [ ! -e release ]; do sleep 0.02; done; rm release; echo done"])",
                      "--command", "health.concurrency=1"}));
        REQUIRE_MESSAGE(d.started(), d.err());
        std::atomic<int> ok{0};
        std::atomic<int> busy{0};
        std::atomic<int> other{0};
        std::vector<std::jthread> threads;
        for (int i = 0; i < 4; ++i) {
            threads.emplace_back([&] {
                auto cli = client(d);
                auto r = cli.Get("/health", env.auth());
                if (r && r->status == 200) {
                    ++ok;
                } else if (r && r->status == 429 && r->get_header_value("Retry-After") == "1" &&
                           json::parse(r->body)["message"] ==
                               "Command 'health' is busy (1 in progress, limit 1); retry later") {
                    ++busy;
                } else {
                    ++other;
                }
            });
        }
        // The first command holds the only slot until the test releases it, so the other three
        // are refused whatever the timing.
        CHECK(testing::eventually([&] { return busy + other == 3; }, 10s));
        env.dir.write("release", "");
        for (auto& t : threads) {
            t.join();
        }
        CHECK(ok == 1);
        CHECK(busy == 3);
        CHECK(other == 0);
        auto cli = client(d);
        env.dir.write("release", "");
        auto after = cli.Get("/health", env.auth()); // the slot is free again
        REQUIRE(after);
        CHECK(after->status == 200);
        CHECK(sample(metrics_text(d, env),
                     R"(cmond_command_rejections_total{command="health",reason="busy"})") == 3);
    }

    TEST_CASE("/metrics passes promtool check metrics") {
        Env env;
        Daemon d(env.dir, env.args());
        REQUIRE_MESSAGE(d.started(), d.err());
        auto cli = client(d);
        cli.Get("/health", env.auth());
        cli.Get("/health");
        cli.Get("/nope", env.auth());
        cli.Delete("/teardown_branch", env.auth());
        cli.Get("/deploy_branch?branch=..", env.auth());
        const std::string text = metrics_text(d, env);
        CHECK(text.find("cmond_command_duration_seconds_bucket") != std::string::npos);
        const std::string file = env.dir.write("metrics.txt", text);
        const std::string out_file = env.dir.file("promtool.out");
        const int rc =
            std::system(("promtool check metrics < " + file + " > " + out_file + " 2>&1").c_str());
        const std::string out = testing::read_file(out_file);
        CHECK_MESSAGE(rc == 0, out);
        CHECK_MESSAGE(out.empty(), out); // no lint warnings either
    }

    TEST_CASE("TLS round trip with a self-signed certificate made at test time") {
        Env env;
        const std::string gen =
            "cd " + env.dir.path() +
            " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
            "-nodes -keyout tls.key -out tls.crt -days 2 -subj /CN=127.0.0.1 "
            "-addext subjectAltName=IP:127.0.0.1 > openssl.log 2>&1";
        REQUIRE(std::system(gen.c_str()) == 0);
        // The key file is checked like the certificate: a FIFO is refused, not waited on.
        REQUIRE(::mkfifo(env.dir.file("fifo.key").c_str(), 0600) == 0);
        auto fifo_key = cmond_test::run_cmond(
            env.args({"--tls-cert", "tls.crt", "--tls-key", "fifo.key"}), env.dir.path(), 3s);
        CHECK(fifo_key.status == 2);
        CHECK(fifo_key.err.find("tls_key: cannot load 'fifo.key': not a regular file (a FIFO)") !=
              std::string::npos);

        Daemon d(env.dir, env.args({"--tls-cert", "tls.crt", "--tls-key", "tls.key"}));
        REQUIRE_MESSAGE(d.started(), d.err());
        CHECK(d.url().rfind("https://127.0.0.1:", 0) == 0);

        httplib::SSLClient tls("127.0.0.1", d.port());
        tls.set_ca_cert_path(env.dir.file("tls.crt").c_str());
        tls.enable_server_certificate_verification(true);
        tls.set_connection_timeout(5, 0);
        auto r = tls.Get("/health", env.auth());
        REQUIRE_MESSAGE(r, httplib::to_string(r.error()));
        CHECK(r->status == 200);
        CHECK(json::parse(r->body)["data"] == "healthy\n");
        auto unauth = tls.Get("/health");
        REQUIRE(unauth);
        CHECK(unauth->status == 401);
        CHECK(unauth->body == kAuthError);

        // Plain HTTP to the TLS port gets no HTTP answer.
        auto plain = client(d).Get("/health", env.auth());
        CHECK_FALSE((plain && plain->status == 200));
    }

    TEST_CASE("startup refusals: key file, TLS files, config values, busy port") {
        Env env;
        const auto& dir = env.dir;
        const auto conf = dir.file("cmond.conf");

        dir.write("open.key", env.key + "\n", 0644);
        auto open = cmond_test::run_cmond(
            {"--config", conf, "--key-file", "open.key", "--syslog", "false"}, dir.path());
        CHECK(open.status == 2);
        CHECK(open.err.find("key file 'open.key': mode 0644 gives group or others access") !=
              std::string::npos);
        CHECK(open.err.find("chmod 600 open.key") != std::string::npos);
        CHECK(open.err.find(env.key) == std::string::npos);

        auto missing = cmond_test::run_cmond(
            {"--config", conf, "--key-file", "none.key", "--syslog", "false"}, dir.path());
        CHECK(missing.status == 2);
        CHECK(missing.err.find("key file 'none.key': cannot open") != std::string::npos);

        dir.write("bad.key", "not a key\n", 0600);
        auto bad = cmond_test::run_cmond(
            {"--config", conf, "--key-file", "bad.key", "--syslog", "false"}, dir.path());
        CHECK(bad.status == 2);
        CHECK(bad.err.find("malformed") != std::string::npos);

        auto port = cmond_test::run_cmond({"--config", conf, "--port", "99999"}, dir.path());
        CHECK(port.status == 2);
        CHECK(port.err == "cmond: --port: '99999' is out of range (0..65535)\n");

        dir.write("bad.conf", "key_file = client_secret.key\nkill_grace = soon\n");
        auto file = cmond_test::run_cmond({"--config", dir.file("bad.conf")}, dir.path());
        CHECK(file.status == 2);
        CHECK(file.err.find("bad.conf:2: kill_grace: 'soon' is not a duration") !=
              std::string::npos);

        auto tls = cmond_test::run_cmond({"--config", conf, "--tls-cert", "nope.crt", "--tls-key",
                                          "nope.key", "--syslog", "false"},
                                         dir.path());
        CHECK(tls.status == 2);
        CHECK(tls.err.find("tls_cert: cannot load 'nope.crt'") != std::string::npos);

        // Files the operator names must be regular files: a FIFO would hang start-up (opening
        // one waits for a writer). Refused at once, with its own message (the config's case is
        // in test_auth.cc); the limit turns a hang into status -1.
        REQUIRE(::mkfifo(dir.file("fifo").c_str(), 0600) == 0);
        auto fifo_cert = cmond_test::run_cmond({"--config", conf, "--tls-cert", dir.file("fifo"),
                                                "--tls-key", "nope.key", "--syslog", "false"},
                                               dir.path(), 3s);
        CHECK(fifo_cert.status == 2);
        CHECK(fifo_cert.err.find("tls_cert: cannot load '" + dir.file("fifo") +
                                 "': not a regular file (a FIFO)") != std::string::npos);

        auto check = cmond_test::run_cmond({"--config", conf, "--check-config"}, dir.path());
        CHECK(check.status == 0);
        CHECK(check.out == "cmond: configuration OK\n");

        auto few_threads = cmond_test::run_cmond(
            {"--config", conf, "--threads", "4", "--check-config", "--syslog", "false"},
            dir.path());
        CHECK(few_threads.status == 0);
        CHECK(few_threads.err.find("threads = 4 but commands may take 14 requests at once") !=
              std::string::npos);

        auto help = cmond_test::run_cmond({"--help"}, dir.path());
        CHECK(help.status == 0);
        CHECK(help.out.find("Usage: cmond") == 0);

        // A port already in use: runtime failure, status 1, with the reason.
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        REQUIRE(::listen(fd, 1) == 0);
        socklen_t len = sizeof addr;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
        const std::string taken = std::to_string(ntohs(addr.sin_port));
        auto busy = cmond_test::run_cmond({"--config", conf, "--port", taken, "--syslog", "false"},
                                          dir.path());
        ::close(fd);
        CHECK(busy.status == 1);
        CHECK(busy.err.find("cannot listen on 127.0.0.1:" + taken + ": Address already in use") !=
              std::string::npos);
    }

    TEST_CASE("POST /restart answers, then re-executes cmond in place") {
        Env env;
        Daemon d(env.dir, env.args());
        REQUIRE_MESSAGE(d.started(), d.err());
        const double started = sample(metrics_text(d, env), "cmond_start_time_seconds");
        REQUIRE(started > 0);
        std::this_thread::sleep_for(20ms);
        auto cli = client(d);
        auto r = cli.Post("/restart", env.auth(), "", "text/plain");
        REQUIRE(r);
        CHECK(r->status == 200);
        CHECK(body_of(r)["message"] == "Restarting");
        CHECK(r->get_header_value("Connection") == "close");
        // The new image binds again (port 0: a new port) and prints a new listening line.
        REQUIRE_MESSAGE(d.wait_listening(10s), d.err());
        CHECK(cmond_test::process_alive(d.pid())); // same process, new image
        const std::string text = metrics_text(d, env);
        CHECK(sample(text, "cmond_start_time_seconds") > started);
        CHECK(text.find(R"(route="/restart")") == std::string::npos); // counters start afresh
        CHECK(d.err().find("restart: re-executing /proc/self/exe") != std::string::npos);
        auto health = client(d).Get("/health", env.auth());
        REQUIRE(health);
        CHECK(health->status == 200);
    }

    TEST_CASE("POST /restart with restart_mode = exit leaves it to the supervisor") {
        Env env;
        Daemon d(env.dir, env.args({"--restart-mode", "exit", "--restart-exit-code", "75"}));
        REQUIRE_MESSAGE(d.started(), d.err());
        auto r = client(d).Post("/restart", env.auth(), "", "text/plain");
        REQUIRE(r);
        CHECK(r->status == 200);
        CHECK(d.wait_exit(10s) == 75);
    }

    TEST_CASE("SIGTERM: in-flight commands finish before the deadline") {
        Env env;
        Daemon d(
            env.dir,
            env.args(
                {"--command",
                 R"(health.argv=["/bin/sh", "-c", "touch started; sleep 0.5; echo finished"])"}));
        REQUIRE_MESSAGE(d.started(), d.err());
        std::optional<httplib::Result> r;
        std::jthread t([&] { r.emplace(client(d).Get("/health", env.auth())); });
        // SIGTERM once the command runs (the marker file), while it sleeps.
        REQUIRE(
            testing::eventually([&] { return std::filesystem::exists(env.dir.file("started")); }));
        d.signal(SIGTERM);
        t.join();
        REQUIRE((r && *r));
        CHECK((*r)->status == 200);
        CHECK(json::parse((*r)->body)["data"] == "finished\n");
        CHECK(d.wait_exit(10s) == 0);
    }

    TEST_CASE("SIGTERM: commands still running at the deadline are killed and reaped") {
        Env env;
        Daemon d(env.dir,
                 env.args({"--command",
                           R"(health.argv=["/bin/sh", "-c", "echo $$ > leader.pid; sleep 30"])",
                           "--shutdown-timeout", "500ms"}));
        REQUIRE_MESSAGE(d.started(), d.err());
        std::optional<httplib::Result> r;
        std::jthread t([&] { r.emplace(client(d).Get("/health", env.auth())); });
        REQUIRE(testing::eventually(
            [&] { return !testing::read_file(env.dir.file("leader.pid")).empty(); }));
        const pid_t leader =
            static_cast<pid_t>(std::stol(testing::read_file(env.dir.file("leader.pid"))));
        const auto t0 = std::chrono::steady_clock::now();
        d.signal(SIGTERM);
        t.join();
        REQUIRE((r && *r));
        CHECK((*r)->status == 500);
        CHECK(json::parse((*r)->body)["message"] == "Command killed: cmond is shutting down");
        CHECK(d.wait_exit(10s) == 0);
        CHECK(std::chrono::steady_clock::now() - t0 < 5s);
        CHECK_FALSE(cmond_test::process_alive(leader));
        const std::string log = d.err();
        CHECK(log.find("received Terminated: stopping") != std::string::npos);
        CHECK(log.find("deadline reached, killing 1 running command(s)") != std::string::npos);
        CHECK(log.find("info stopped") != std::string::npos);
    }

} // TEST_SUITE
