// SPDX-License-Identifier: MIT
// The /arena replies over real stats-page files: pages written by hand (FakePage) into a
// temporary directory, read back through the shared reader exactly as the daemon does. Live
// pages hold their lock (as a running process does); stale ones do not.
#include "arena_routes.h"
#include "fake_page.h"
#include "helpers.h"
#include "stats_reader.h"

#include <doctest/doctest.h>

#include <fstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace cmond;
using cmond_test::TempDir;

namespace {

// PIDs far above any running process here (pid_max is 4194304 at most).
constexpr int kPidA = 40000001;
constexpr int kPidB = 40000002;
constexpr int kPidStale = 40000003;

// A stats directory like the real one: mode 1777 inside a temp dir that others may traverse.
struct StatsDir {
    TempDir tmp;
    std::string path;
    StatsDir() : path(tmp.file("stats")) {
        ::chmod(tmp.path().c_str(), 0755);
        REQUIRE(::mkdir(path.c_str(), 01777) == 0);
        ::chmod(path.c_str(), 01777); // the umask took bits away
    }
};

// A page with recognisable counters: 3 live 16-byte blocks, one live 8 KiB large block.
void fill(testing::FakePage& page, const char* comm) {
    arena_stats_page& p = page.page();
    std::snprintf(p.comm, sizeof p.comm, "%s", comm);
    std::snprintf(p.cmdline, sizeof p.cmdline, "%s --serve", comm);
    p.shards[1].events[ARENA_EV_malloc_calls] = 10;
    p.shards[2].events[ARENA_EV_malloc_calls] = 5;
    p.shards[1].events[ARENA_EV_free_calls] = 2;
    p.shards[1].events[ARENA_EV_new_calls] = 7;
    p.shards[1].events[ARENA_EV_failed_allocs] = 1;
    p.shards[1].events[ARENA_EV_large_allocs] = 1;
    p.shards[1].events[ARENA_EV_large_alloc_bytes] = 8192;
    p.shards[1].class_alloc[0] = 5;
    p.shards[1].class_free[0] = 2;
    p.global.peak_live_bytes = 100000;
    p.global.reserved_bytes = 1ull << 36;
    p.global.committed_bytes = 1 << 20;
    p.global.resident_bytes = 1 << 19;
    p.global.double_frees = 2;
    p.global.invalid_frees = 3;
    p.global.trims = 4;
    p.global.purge_delay_ms = 500;
}

} // namespace

TEST_SUITE("arena") {

    TEST_CASE("parse_pid accepts positive decimal pids only") {
        CHECK(parse_pid("1") == 1);
        CHECK(parse_pid("4194304") == 4194304);
        for (const char* bad :
             {"", "0", "-1", "+1", "01", "1a", "a", "99999999999", "2147483648", " 1", ".."}) {
            CAPTURE(bad);
            CHECK_FALSE(parse_pid(bad).has_value());
        }
    }

    TEST_CASE("GET /arena: live pages by pid with totals; stale and foreign files skipped") {
        StatsDir dir;
        testing::FakePage b(kPidB);
        fill(b, "worker");
        b.write(dir.path);
        testing::FakePage a(kPidA);
        fill(a, "server");
        a.write(dir.path);
        testing::FakePage stale(kPidStale);
        const std::string stale_path = stale.write(dir.path, false);
        std::ofstream(dir.path + "/notes.txt") << "not a page";

        const ApiReply r = arena_list_reply(dir.path);
        CHECK(r.code == 200);
        REQUIRE(r.data.is_array());
        REQUIRE(r.data.size() == 2);
        const Json& p = r.data[0];
        CHECK(p["pid"] == kPidA);
        CHECK(r.data[1]["pid"] == kPidB);
        CHECK(p["comm"] == "server");
        CHECK(p["cmdline"] == "server --serve");
        CHECK(p["start_time"] == 12345);
        CHECK(p["created_unix_ns"] == 1700000000000000000ull);
        CHECK(p["live_bytes"] == 3 * 16 + 8192);
        CHECK(p["live_blocks"] == 4);
        CHECK(p["peak_live_bytes"] == 100000);
        CHECK(p["reserved_bytes"] == (1ull << 36));
        CHECK(p["committed_bytes"] == (1 << 20));
        CHECK(p["resident_bytes"] == (1 << 19));
        CHECK(p["calls"]["malloc"] == 15);
        CHECK(p["calls"]["free"] == 2);
        CHECK(p["calls"]["new"] == 7);
        CHECK(p["calls"]["calloc"] == 0);
        CHECK(p["errors"]["double_free"] == 2);
        CHECK(p["errors"]["invalid_free"] == 3);
        CHECK(p["errors"]["failed_allocs"] == 1);
        CHECK(p["errors"]["foreign_frees"] == 0);
        CHECK_FALSE(p.contains("size_classes")); // the list stays short: details per pid
        CHECK(r.extra["stats_dir"] == dir.path);
        CHECK(r.extra["skipped"]["foreign"] == 1);
        const auto stale_seen =
            r.extra["skipped"].value("dead", 0) + r.extra["skipped"].value("pid_reused", 0);
        CHECK(stale_seen == 1);
        struct stat sb {};
        CHECK(::stat(stale_path.c_str(), &sb) != 0); // the reader removed the stale page
    }

    TEST_CASE("GET /arena: no directory yet is an empty list, an unusable one a 500") {
        TempDir tmp;
        const ApiReply none = arena_list_reply(tmp.file("absent"));
        CHECK(none.code == 200);
        CHECK(none.data == Json::array());
        const std::string file = tmp.write("file", "x");
        const ApiReply bad = arena_list_reply(file);
        CHECK(bad.code == 500);
        CHECK(bad.message.find("Cannot read the stats directory") == 0);
    }

    TEST_CASE("GET /arena/<pid>: every counter, the size classes and the control area") {
        StatsDir dir;
        testing::FakePage a(kPidA);
        fill(a, "server");
        a.page().control.trim_requests = 3;
        a.page().control.trims_served = 2;
        a.page().control.purge_delay_ms = 250;
        a.write(dir.path);
        const ApiReply r = arena_get_reply(dir.path, std::to_string(kPidA));
        CHECK(r.code == 200);
        const Json& p = r.data;
        CHECK(p["pid"] == kPidA);
        CHECK(p["path"] == dir.path + "/" + std::to_string(kPidA));
        CHECK(p["page_size"] == 4096);
        CHECK(p["live_bytes"] == 3 * 16 + 8192);
        CHECK(p["events"]["malloc_calls"] == 15);
        CHECK(p["events"]["large_alloc_bytes"] == 8192);
        CHECK(p["events"].size() == ARENA_EV_COUNT);
        CHECK(p["global"]["trims"] == 4);
        CHECK(p["global"]["purge_delay_ms"] == 500);
        CHECK(p["global"]["double_frees"] == 2);
        REQUIRE(p["size_classes"].size() == 4);
        CHECK(
            p["size_classes"][0] ==
            Json{
                {"size", 16}, {"allocs", 5}, {"frees", 2}, {"live_blocks", 3}, {"live_bytes", 48}});
        CHECK(p["size_classes"][3]["size"] == 64);
        CHECK(p["control"] == Json{{"trim_requests", 3},
                                   {"trims_served", 2},
                                   {"trim_pending", true},
                                   {"purge_delay_request", 250}});

        testing::FakePage b(kPidB);
        b.write(dir.path);
        CHECK(arena_get_reply(dir.path, std::to_string(kPidB))
                  .data["control"]["purge_delay_request"]
                  .is_null());
    }

    TEST_CASE("GET /arena/<pid>: 400 for a bad pid, 404 for a missing, stale or invalid page") {
        StatsDir dir;
        CHECK(arena_get_reply(dir.path, "abc").code == 400);
        CHECK(arena_get_reply(dir.path, "0").code == 400);
        const ApiReply missing = arena_get_reply(dir.path, std::to_string(kPidA));
        CHECK(missing.code == 404);
        CHECK(missing.message ==
              "No stats page for pid " + std::to_string(kPidA) + " in " + dir.path);
        testing::FakePage stale(kPidStale);
        stale.write(dir.path, false);
        const ApiReply s = arena_get_reply(dir.path, std::to_string(kPidStale));
        CHECK(s.code == 404);
        CHECK(s.message.find("is stale") != std::string::npos);
        testing::FakePage foreign(kPidB);
        foreign.page().magic = 42;
        foreign.write(dir.path);
        const ApiReply f = arena_get_reply(dir.path, std::to_string(kPidB));
        CHECK(f.code == 404);
        CHECK(f.message.find("bad_magic") != std::string::npos);
    }

    TEST_CASE("POST /arena/<pid>/trim: 202 writes the control area; 400, 404, 409") {
        StatsDir dir;
        testing::FakePage a(kPidA);
        const std::string path = a.write(dir.path);
        const ApiReply ok = arena_trim_reply(dir.path, std::to_string(kPidA));
        CHECK(ok.code == 202);
        CHECK(ok.data["pid"] == kPidA);
        CHECK(ok.data["trim_requests"] == 1);
        CHECK(ok.data["trims_served"] == 0); // nobody serves a fake page
        CHECK(arena_trim_reply(dir.path, std::to_string(kPidA)).data["trim_requests"] == 2);
        const auto page = arena::stats::read_page(path);
        REQUIRE(page);
        CHECK(page->control.trim_requests == 2);

        CHECK(arena_trim_reply(dir.path, "-1").code == 400);
        CHECK(arena_trim_reply(dir.path, std::to_string(kPidB)).code == 404);
        testing::FakePage stale(kPidStale);
        stale.write(dir.path, false);
        const ApiReply s = arena_trim_reply(dir.path, std::to_string(kPidStale));
        CHECK(s.code == 409);
        CHECK(s.message.find("no live process writes it") != std::string::npos);
    }

    TEST_CASE("POST /arena/<pid>/trim: 403 when the page is another user's") {
        StatsDir dir;
        testing::FakePage a(kPidA);
        const std::string path = a.write(dir.path); // ours, mode 0644
        const std::string pid = std::to_string(kPidA);
        int code = 0;
        std::string message;
        if (::geteuid() == 0) {
            // Root may write anything: ask as "nobody", in a child, as a daemon running under
            // its own user would.
            int fds[2];
            REQUIRE(::pipe(fds) == 0);
            const auto [uid, gid] = cmond_test::nobody();
            const pid_t child = ::fork();
            REQUIRE(child >= 0);
            if (child == 0) {
                ::close(fds[0]);
                if (::setgid(gid) != 0 || ::setuid(uid) != 0) {
                    ::_exit(2);
                }
                const ApiReply r = arena_trim_reply(dir.path, pid);
                const std::string out = std::to_string(r.code) + " " + r.message;
                [[maybe_unused]] auto n = ::write(fds[1], out.data(), out.size());
                ::_exit(0);
            }
            ::close(fds[1]);
            char buf[512];
            const ssize_t n = ::read(fds[0], buf, sizeof buf);
            ::close(fds[0]);
            int status = 0;
            ::waitpid(child, &status, 0);
            REQUIRE(WIFEXITED(status));
            REQUIRE(WEXITSTATUS(status) == 0);
            REQUIRE(n > 4);
            code = std::stoi(std::string(buf, 3));
            message = std::string(buf + 4, static_cast<std::size_t>(n) - 4);
        } else {
            // Not root: a page we may not write stands in for another user's.
            ::chmod(path.c_str(), 0444);
            const ApiReply r = arena_trim_reply(dir.path, pid);
            code = r.code;
            message = r.message;
        }
        CHECK(code == 403);
        CHECK(message.find("Not allowed to write the control area of pid " + pid) == 0);
        const auto page = arena::stats::read_page(path);
        REQUIRE(page);
        CHECK(page->control.trim_requests == 0);
    }

} // TEST_SUITE
