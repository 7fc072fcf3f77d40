// SPDX-License-Identifier: MIT
// Coalescing over real HTTP: requests that arrive while a read-only command runs share the next
// run, never the one in progress; runs, timeouts, output caps and the concurrency limit behave.
// The stand-in commands wait for a "release" file the test writes (so every step is ordered by
// the test, not by sleeps), or print a counter and a start time.
#include "http_env.h"

#include <atomic>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <thread>

using namespace cmond_test;
using namespace std::chrono_literals;

namespace {

// Prints "run <pid>", marks itself started, waits for a "release" file and consumes it.
const char* kGated = R"(health.argv=["/bin/sh", "-c", )"
                     R"("echo run $$; touch started.$$; )"
                     R"(while [ ! -e release ]; do sleep 0.01; done; rm -f release"])";

std::size_t started_runs(const Env& env) {
    std::size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(env.dir.path())) {
        n += e.path().filename().string().rfind("started.", 0) == 0 ? 1 : 0;
    }
    return n;
}

double waiting(const Daemon& d, const Env& env, const std::string& command = "health") {
    return sample(metrics_text(d, env),
                  "cmond_command_waiting_requests{command=\"" + command + "\"}");
}

// A GET on its own thread and connection; the answer is read after join(). Threads are always
// joined before the Daemon goes (declared after it), so a failing check never leaks a daemon.
struct Request {
    std::optional<httplib::Result> result;
    std::thread thread;
    Request(const Daemon& d, const Env& env, std::string path) {
        thread = std::thread(
            [&d, &env, this, path] { result.emplace(client(d).Get(path.c_str(), env.auth())); });
    }
    json join() {
        thread.join();
        REQUIRE(result.has_value());
        REQUIRE(*result);
        REQUIRE((*result)->status == 200);
        return json::parse((*result)->body);
    }
    ~Request() {
        if (thread.joinable()) {
            thread.join();
        }
    }
};

long long wall_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<long long>(ts.tv_sec) * 1'000'000'000LL + ts.tv_nsec;
}

} // namespace

TEST_SUITE("coalesce-http") {

    TEST_CASE("requests arriving during a run share the next run, never the one in progress") {
        Env env;
        Daemon d(env.dir, env.args({"--command", kGated}));
        REQUIRE_MESSAGE(d.started(), d.err());

        Request a(d, env, "/health");
        REQUIRE(testing::eventually([&] { return started_runs(env) == 1; }));
        std::vector<std::unique_ptr<Request>> bcd;
        for (int i = 0; i < 3; ++i) {
            bcd.push_back(std::make_unique<Request>(d, env, "/health"));
        }
        REQUIRE(testing::eventually([&] { return waiting(d, env) == 3; }));
        CHECK(started_runs(env) == 1); // they wait: no process of their own

        env.dir.write("release", "");
        const json ja = a.join();
        CHECK(ja["shared_by"] == 1);
        const std::string run1 = ja["data"];
        REQUIRE(
            testing::eventually([&] { return started_runs(env) == 2; })); // their run, started now

        Request e(d, env, "/health"); // arrives during the shared run: waits for the next one
        REQUIRE(testing::eventually([&] { return waiting(d, env) == 1; }));
        env.dir.write("release", "");
        std::set<std::string> outputs;
        for (auto& r : bcd) {
            const json j = r->join();
            CHECK(j["code"] == 200);
            CHECK(j["shared_by"] == 3);
            CHECK(j["exit_code"] == 0);
            outputs.insert(j["data"].get<std::string>());
        }
        REQUIRE(outputs.size() == 1); // one run, one output
        const std::string run2 = *outputs.begin();
        CHECK(run2 != run1);

        REQUIRE(testing::eventually([&] { return started_runs(env) == 3; }));
        env.dir.write("release", "");
        const json je = e.join();
        CHECK(je["shared_by"] == 1);
        CHECK(je["data"] != run1);
        CHECK(je["data"] != run2);

        // The request counter and the log line are written after the answer is sent: wait.
        REQUIRE(testing::eventually([&] {
            return sample(metrics_text(d, env),
                          R"(cmond_http_requests_total{code="200",route="/health"})") == 5 &&
                   d.err().find(" shared_by=3 ") != std::string::npos;
        }));
        const std::string text = metrics_text(d, env);
        CHECK(sample(text, R"(cmond_command_runs_total{command="health",result="ok"})") == 3);
        CHECK(sample(text, R"(cmond_command_coalesced_requests_total{command="health"})") == 2);
        CHECK(sample(text, R"(cmond_http_requests_total{code="200",route="/health"})") == 5);
        CHECK(sample(text, R"(cmond_command_waiting_requests{command="health"})") == 0);
        CHECK(d.err().find("route=/health code=200 command=health exit_code=0") !=
              std::string::npos);
        CHECK(d.err().find(" shared_by=3 ") != std::string::npos);
    }

    TEST_CASE("a burst of requests: far fewer runs, each started after its requests arrived") {
        // Each run prints the counter it found, its pid and its start time, then takes 300 ms.
        const std::string script =
            "n=$(cat counter 2>/dev/null || echo 0); echo $((n+1)) > counter; "
            "echo \"run $n pid $$ start $(date +%s%N)\"; sleep 0.3";
        for (const bool coalesce : {true, false}) {
            CAPTURE(coalesce);
            Env env;
            Daemon d(env.dir,
                     env.args({"--command",
                               "health.argv=" + json::array({"/bin/sh", "-c", script}).dump(),
                               "--command", "health.concurrency=16", "--command",
                               std::string("health.coalesce=") + (coalesce ? "true" : "false"),
                               "--threads", "40"}));
            REQUIRE_MESSAGE(d.started(), d.err());
            constexpr int kRequests = 12;
            std::vector<long long> sent(kRequests);
            std::vector<std::optional<httplib::Result>> results(kRequests);
            std::vector<std::jthread> threads; // joined even when a check throws
            for (int i = 0; i < kRequests; ++i) {
                threads.emplace_back([&, i] {
                    std::this_thread::sleep_for(std::chrono::milliseconds(50 * i));
                    auto cli = client(d);
                    sent[i] = wall_ns();
                    results[i].emplace(cli.Get("/health", env.auth()));
                });
            }
            for (auto& t : threads) {
                t.join();
            }
            std::map<std::string, std::vector<int>> by_output; // run output -> requests
            for (int i = 0; i < kRequests; ++i) {
                CAPTURE(i);
                REQUIRE(static_cast<bool>(*results[i]));
                REQUIRE((*results[i])->status == 200);
                const json j = json::parse((*results[i])->body);
                const std::string out = j["data"];
                const auto at = out.find(" start ");
                REQUIRE(at != std::string::npos);
                const long long started = std::stoll(out.substr(at + 7));
                // Never an answer from a process that started before the request was sent.
                CHECK(started >= sent[i]);
                by_output[out].push_back(i);
                CHECK(j["shared_by"].get<std::size_t>() >= 1);
            }
            for (const auto& [out, requests] : by_output) {
                for (const int i : requests) {
                    CHECK(json::parse((*results[i])->body)["shared_by"] == requests.size());
                }
            }
            const std::size_t runs = by_output.size();
            // The request counter is written after the answer is sent: wait for the last one.
            REQUIRE(testing::eventually([&] {
                return sample(metrics_text(d, env),
                              R"(cmond_http_requests_total{code="200",route="/health"})") ==
                       kRequests;
            }));
            const std::string text = metrics_text(d, env);
            CHECK(sample(text, R"(cmond_command_runs_total{command="health",result="ok"})") ==
                  static_cast<double>(runs));
            CHECK(sample(text, R"(cmond_http_requests_total{code="200",route="/health"})") ==
                  kRequests);
            if (coalesce) {
                // 12 requests over 550 ms, runs of 300 ms one after another: 2 to 4 runs.
                CHECK(runs <= 5);
                CHECK(std::stoi(testing::read_file(env.dir.file("counter"))) ==
                      static_cast<int>(runs));
                CHECK(sample(text, R"(cmond_command_coalesced_requests_total{command="health"})") ==
                      static_cast<double>(kRequests - runs));
            } else {
                CHECK(runs == kRequests); // one process per request
            }
        }
    }

    TEST_CASE("shared runs keep the timeout and the output cap, for every request sharing them") {
        Env env;
        Daemon d(
            env.dir,
            env.args({"--command",
                      R"(health.argv=["/bin/sh", "-c", )"
                      R"("head -c 5000 /dev/zero | tr '\\0' x; touch started.$$; sleep 5"])",
                      "--command", "health.timeout=500ms", "--command", "health.output_cap=1KiB"}));
        REQUIRE_MESSAGE(d.started(), d.err());
        const auto t0 = std::chrono::steady_clock::now();
        std::optional<httplib::Result> first;
        std::jthread ta([&] { first.emplace(client(d).Get("/health", env.auth())); });
        REQUIRE(testing::eventually([&] { return started_runs(env) == 1; }));
        std::vector<std::optional<httplib::Result>> later(2);
        std::vector<std::jthread> ts;
        for (auto& r : later) {
            ts.emplace_back([&] { r.emplace(client(d).Get("/health", env.auth())); });
        }
        REQUIRE(testing::eventually([&] { return waiting(d, env) == 2; }));
        ta.join();
        for (auto& t : ts) {
            t.join();
        }
        // The first run times out at 500 ms, the shared one 500 ms after it started.
        CHECK(std::chrono::steady_clock::now() - t0 < 5s);
        auto check = [](const std::optional<httplib::Result>& r, int shared_by) {
            REQUIRE(r.has_value());
            REQUIRE(*r);
            CHECK((*r)->status == 500);
            const json j = json::parse((*r)->body);
            CHECK(j["message"] == "Command timed out after 500ms");
            CHECK(j["timed_out"] == true);
            CHECK(j["truncated"] == true);
            CHECK(j["data"] == std::string(1024, 'x'));
            CHECK(j["shared_by"] == shared_by);
        };
        check(first, 1);
        for (const auto& r : later) {
            check(r, 2);
        }
        CHECK(sample(metrics_text(d, env),
                     R"(cmond_command_runs_total{command="health",result="timeout"})") == 2);
    }

    TEST_CASE("the concurrency limit counts waiting requests: one more gets 429") {
        Env env;
        Daemon d(env.dir, env.args({"--command", kGated, "--command", "health.concurrency=2"}));
        REQUIRE_MESSAGE(d.started(), d.err());
        Request a(d, env, "/health");
        REQUIRE(testing::eventually([&] { return started_runs(env) == 1; }));
        Request b(d, env, "/health");
        REQUIRE(testing::eventually([&] { return waiting(d, env) == 1; }));
        auto c = client(d).Get("/health", env.auth());
        REQUIRE(c);
        CHECK(c->status == 429);
        CHECK(c->get_header_value("Retry-After") == "1");
        CHECK(json::parse(c->body)["message"] ==
              "Command 'health' is busy (2 in progress, limit 2); retry later");
        env.dir.write("release", "");
        CHECK(a.join()["shared_by"] == 1);
        REQUIRE(testing::eventually([&] { return started_runs(env) == 2; }));
        env.dir.write("release", "");
        CHECK(b.join()["shared_by"] == 1);
        CHECK(sample(metrics_text(d, env),
                     R"(cmond_command_rejections_total{command="health",reason="busy"})") == 1);
    }

    TEST_CASE("coalescing is per argv: other branches run side by side, the same one shares") {
        Env env;
        Daemon d(env.dir, env.args({"--command",
                                    R"(deploy_branch.argv=["/bin/sh", "-c", )"
                                    R"("echo deploy {branch} $$; touch started.$$; )"
                                    R"(while [ ! -e release ]; do sleep 0.01; done"])",
                                    "--command", "deploy_branch.coalesce=true", "--command",
                                    "deploy_branch.concurrency=4"}));
        REQUIRE_MESSAGE(d.started(), d.err());
        Request a1(d, env, "/deploy_branch?branch=a");
        Request b(d, env, "/deploy_branch?branch=b");
        REQUIRE(testing::eventually([&] { return started_runs(env) == 2; })); // a and b at once
        Request a2(d, env, "/deploy_branch?branch=a");
        Request a3(d, env, "/deploy_branch?branch=a");
        REQUIRE(testing::eventually([&] { return waiting(d, env, "deploy_branch") == 2; }));
        env.dir.write("release", ""); // stays: every later run ends at once
        const json j1 = a1.join();
        const json jb = b.join();
        const json j2 = a2.join();
        const json j3 = a3.join();
        CHECK(j1["shared_by"] == 1);
        CHECK(jb["shared_by"] == 1);
        CHECK(jb["data"].get<std::string>().rfind("deploy b ", 0) == 0);
        CHECK(j2["shared_by"] == 2);
        CHECK(j2["data"] == j3["data"]);
        CHECK(j2["data"] != j1["data"]);
        CHECK(j2["data"].get<std::string>().rfind("deploy a ", 0) == 0);
        CHECK(started_runs(env) == 3);
    }

} // TEST_SUITE
