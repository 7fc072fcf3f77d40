// SPDX-License-Identifier: MIT
// arena-prof (libarena/tools/arena_prof.cc) run as users run it, over a page and profile region
// made by hand (fake_profile.h) in a fake procfs (--path.procfs: frames stay addresses): the
// table and its orders, --json, --folded, --pprof, --on and --off landing in the page, --watch
// bounded by --count and ended by SIGTERM, and a clear message and exit status for every bad
// input. $ARENA_PROF is set by tests/client/meson.build.
#include "common.h"
#include "fake_profile.h"
#include "process.h"
#include "testing.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <csignal>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <vector>

namespace {

using testing::kPid;
using testing::ProfileEnv;

/// Runs arena-prof with `args` over env's base directory and procfs.
testing::RunResult prof(const ProfileEnv& env, const std::vector<std::string>& args) {
    std::vector<std::string> argv = {testing::required_env("ARENA_PROF"), "--dir", env.base,
                                     "--path.procfs", env.options.procfs};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::run(argv, {.env = {"ARENA_STATS_DIR="}, .limit = std::chrono::seconds(30)});
}

bool has(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

} // namespace

TEST_CASE("arena-prof PID shows the table by live bytes; --by and --top change it") {
    ProfileEnv env;
    testing::write_page(env, testing::sample_region());
    testing::RunResult r = prof(env, {std::to_string(kPid)});
    INFO(r.out, r.err);
    REQUIRE(r.status == 0);
    CHECK(has(r.out, "pid 4243 (profiled)  profiling on"));
    CHECK(has(r.out, "3 of 3 call stacks"));
    CHECK(r.out.find("0x1503") < r.out.find("0x1003")); // 40000 live before 6000
    CHECK(has(r.out, "<- 0x2003 <- 0x3003"));

    r = prof(env, {"--by", "count", "--top", "1", std::to_string(kPid)});
    CHECK(r.status == 0);
    CHECK(has(r.out, "by allocated objects, 1 of 3"));
    CHECK(has(r.out, "0x1003"));
    CHECK(!has(r.out, "0x1503"));
    r = prof(env, {"--by=alloc", std::to_string(kPid)});
    CHECK(r.out.find("0x1503") < r.out.find("0x1003"));
}

TEST_CASE("arena-prof --json, --folded and --pprof") {
    ProfileEnv env;
    testing::write_page(env, testing::sample_region());
    testing::RunResult r = prof(env, {"--json", std::to_string(kPid)});
    REQUIRE(r.status == 0);
    const nlohmann::json j = nlohmann::json::parse(r.out);
    CHECK(j["pid"] == kPid);
    CHECK(j["stacks"].size() == 3);
    CHECK(j["stacks"][0]["frames"][0]["address"] == "0x1503");

    r = prof(env, {std::to_string(kPid), "--folded", "--by", "alloc"});
    REQUIRE(r.status == 0);
    CHECK(r.out == "0x3003;0x1503 50000\n0x3003;0x2003;0x1003 10000\n[other stacks] 200\n");

    const std::string file = env.tmp.file("heap.pb.gz");
    r = prof(env, {"--pprof", file, std::to_string(kPid)});
    INFO(r.err);
    REQUIRE(r.status == 0);
    CHECK(has(r.err, "go tool pprof"));
    const std::string data = testing::read_file(file);
    REQUIRE(data.size() > 2);
    CHECK(static_cast<unsigned char>(data[0]) == 0x1f); // gzip
    CHECK(static_cast<unsigned char>(data[1]) == 0x8b);
    r = prof(env, {"--pprof", "-", std::to_string(kPid)});
    CHECK(r.status == 0);
    CHECK(r.out.size() > 2);
}

TEST_CASE("arena-prof --on and --off write the request into the page") {
    ProfileEnv env;
    const std::string path = testing::FakePage(kPid).write(env.base);
    testing::RunResult r = prof(env, {"--on", "64k", std::to_string(kPid)});
    INFO(r.out, r.err);
    REQUIRE(r.status == 0);
    CHECK(has(r.out, "65536 bytes"));
    CHECK(has(r.out, "pending")); // nobody serves a fake page
    CHECK(testing::control_of(path).profile_rate == 65536);
    CHECK(testing::control_of(path).profile_requests == 1);

    r = prof(env, {std::to_string(kPid), "--on"});
    REQUIRE(r.status == 0);
    CHECK(testing::control_of(path).profile_rate == ARENA_PROFILE_DEFAULT_RATE);

    r = prof(env, {"--off", std::to_string(kPid)});
    REQUIRE(r.status == 0);
    CHECK(has(r.out, "stop heap profiling"));
    CHECK(testing::control_of(path).profile_rate == 0);
    CHECK(testing::control_of(path).profile_requests == 3);
}

TEST_CASE("arena-prof --watch redraws until --count, or until SIGTERM") {
    ProfileEnv env;
    testing::write_page(env, testing::sample_region());
    const testing::RunResult r =
        prof(env, {"--watch", "0.1", "--count", "3", std::to_string(kPid)});
    REQUIRE(r.status == 0);
    CHECK(testing::count_occurrences(r.out, "pid 4243 (profiled)") == 3);

    testing::Spawn s;
    s.argv = {testing::required_env("ARENA_PROF"),
              "--dir",
              env.base,
              "--path.procfs",
              env.options.procfs,
              "--watch",
              "0.1",
              std::to_string(kPid)};
    const testing::Spawned child = testing::spawn(s);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    kill(child.pid, SIGTERM);
    int status = 0;
    const bool ended =
        testing::eventually([&] { return waitpid(child.pid, &status, WNOHANG) == child.pid; });
    if (!ended) {
        kill(child.pid, SIGKILL);
        waitpid(child.pid, &status, 0);
    }
    CHECK(ended);
    CHECK(testing::exit_code(status) == 0);
}

TEST_CASE("arena-prof says what is wrong, with a non-zero exit") {
    ProfileEnv env;
    SUBCASE("usage errors: 2") {
        for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
                 {},
                 {"abc"},
                 {"0"},
                 {"-5"},
                 {"4243", "4244"},
                 {"--by", "size", "4243"},
                 {"--top", "x", "4243"},
                 {"--watch", "0.01", "4243"},
                 {"--on", "0", "4243"},
                 {"--on", "2000G", "4243"},
                 {"--on", "--off", "4243"},
                 {"--json", "--folded", "4243"},
                 {"--on", "--json", "4243"},
                 {"--watch", "--pprof", "f", "4243"},
                 {"--count", "2", "4243"},
                 {"--bogus", "4243"},
                 {"--json=yes", "4243"},
             }) {
            const testing::RunResult r = prof(env, args);
            INFO(r.err);
            CHECK(r.status == 2);
            CHECK(has(r.err, "arena-prof: "));
            CHECK(has(r.err, "--help"));
        }
    }
    SUBCASE("no such process") {
        const testing::RunResult r = prof(env, {std::to_string(kPid + 1)});
        CHECK(r.status == 1);
        CHECK(has(r.err, "There is no process 4244."));
    }
    SUBCASE("no page") {
        const testing::RunResult r = prof(env, {std::to_string(kPid)});
        CHECK(r.status == 1);
        CHECK(has(r.err, "no stats page"));
    }
    SUBCASE("profiling never turned on: how to turn it on") {
        testing::FakePage(kPid).write(env.base);
        for (const char* opt : {"--json", "--folded", "--watch"}) {
            const testing::RunResult r = prof(env, {opt, std::to_string(kPid)});
            CHECK(r.status == 1);
            CHECK(has(r.err, "never turned on"));
            CHECK(has(r.err, "arena-prof --on 4243"));
        }
    }
    SUBCASE("a bad region") {
        testing::Region g = testing::sample_region();
        g.r->head.version = 99;
        testing::write_page(env, g);
        const testing::RunResult r = prof(env, {std::to_string(kPid)});
        CHECK(r.status == 1);
        CHECK(has(r.err, "version 99"));
    }
    SUBCASE("--on for a process without a page") {
        const testing::RunResult r = prof(env, {"--on", std::to_string(kPid)});
        CHECK(r.status == 1);
        CHECK(has(r.err, "no stats page"));
    }
}
