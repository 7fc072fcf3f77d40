// SPDX-License-Identifier: MIT
// The /arena replies over real stats-page files: pages written by hand (testing::FakePage) into
// <tmp>/stats/<uid>/<pid>, some with a heap profile region after them (testing::Region),
// their processes made live in a fake procfs (testing::FakeProc, given to the reader as
// ScanOptions::procfs), read back through the stats client exactly as the daemon does. Also:
// GET /arena/<pid> and `arena-stat --json` emit the same JSON for a page; GET
// /arena/<pid>/profile is the profile library's output for the same file.
#include "arena_routes.h"
#include "fake_page.h"
#include "helpers.h"
#include "profile.h"
#include "profile_fixture.h"
#include "reader.h"

#include <doctest/doctest.h>

#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <functional>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace cmond;
using testing::TempDir;
namespace prof = arena::client::profile;

namespace {

// PIDs far above any running process here (pid_max is 4194304 at most); only the fake procfs
// knows them.
constexpr int kPidA = 40000001;
constexpr int kPidB = 40000002;
constexpr int kPidStale = 40000003;
constexpr int kPidNoPage = 40000004;

// A stats base like the real one (mode 1777, made by the first page written) inside a temp dir
// that others may traverse, and a fake procfs beside it.
struct StatsDir {
    TempDir tmp;
    std::string path = tmp.file("stats");
    testing::FakeProc proc{tmp.file("proc")};
    arena::client::ScanOptions options;

    StatsDir() {
        ::chmod(tmp.path().c_str(), 0755);
        options.procfs = proc.root();
    }

    /// Writes `page` and makes its process live.
    std::string add_live(const testing::FakePage& page) {
        make_live(page);
        return page.write(path);
    }
    /// The same, with `profile` after the page.
    std::string add_live(const testing::FakePage& page, const testing::Region& profile) {
        make_live(page);
        return profile.write(page, path);
    }
    void make_live(const testing::FakePage& page) {
        const arena_stats_head& h = page.page().head;
        proc.add(h.pid, h.start_time, h.comm);
    }
    std::string page_path(int pid) const {
        return testing::FakePage::user_dir(path) + "/" + std::to_string(pid);
    }
};

// A page with recognisable counters: 3 live 16-byte blocks, one live 8 KiB large block.
void fill(testing::FakePage& page, const char* comm) {
    arena_stats_page& p = page.page();
    std::snprintf(p.head.comm, sizeof p.head.comm, "%s", comm);
    std::snprintf(p.head.cmdline, sizeof p.head.cmdline, "%s --serve", comm);
    p.shards[1].events[ARENA_EV_malloc_calls] = 10;
    p.shards[2].events[ARENA_EV_malloc_calls] = 5;
    p.shards[1].events[ARENA_EV_free_calls] = 2;
    p.shards[1].events[ARENA_EV_new_calls] = 7;
    p.shards[1].events[ARENA_EV_failed_allocs] = 1;
    p.shards[1].events[ARENA_EV_large_allocs] = 1;
    p.shards[1].events[ARENA_EV_large_alloc_bytes] = 8192;
    p.shards[1].class_alloc[0] = 5;
    p.shards[1].class_free[0] = 2;
    uint64_t* g = p.head.global.gauges;
    g[ARENA_G_peak_live_bytes] = 100000;
    g[ARENA_G_reserved_bytes] = 1ull << 36;
    g[ARENA_G_committed_bytes] = 1 << 20;
    g[ARENA_G_resident_bytes] = 1 << 19;
    g[ARENA_G_double_frees] = 2;
    g[ARENA_G_invalid_frees] = 3;
    g[ARENA_G_trims] = 4;
    g[ARENA_G_purge_delay_ms] = 500;
}

/// The keys of an object, recursively: "a", "a.b", "list[].c" (first element of arrays).
void collect_keys(const Json& j, const std::string& prefix, std::vector<std::string>& out) {
    if (j.is_object()) {
        for (const auto& [k, v] : j.items()) {
            out.push_back(prefix + k);
            collect_keys(v, prefix + k + ".", out);
        }
    } else if (j.is_array() && !j.empty()) {
        collect_keys(j[0], prefix + "[].", out);
    }
}

std::vector<std::string> keys_of(const Json& j) {
    std::vector<std::string> out;
    collect_keys(j, "", out);
    return out;
}

} // namespace

// A function whose address a hand-made profile records: the symbolizer must name it.
[[gnu::noinline]] void cmond_test_profiled_caller() {
    asm volatile("");
}

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

    TEST_CASE(
        "GET /arena: live pages by pid, the summary keys; stale and foreign entries skipped") {
        StatsDir dir;
        testing::FakePage b(kPidB);
        fill(b, "worker");
        dir.add_live(b);
        testing::FakePage a(kPidA);
        fill(a, "server");
        dir.add_live(a);
        testing::FakePage stale(kPidStale); // its process does not exist
        const std::string stale_path = stale.write(dir.path);
        std::ofstream(testing::FakePage::user_dir(dir.path) + "/notes.txt") << "not a page";

        const ApiReply r = arena_list_reply(dir.path, dir.options);
        CHECK(r.code == 200);
        REQUIRE(r.data.is_array());
        REQUIRE(r.data.size() == 2);
        const Json& p = r.data[0];
        CHECK(p["pid"] == kPidA);
        CHECK(r.data[1]["pid"] == kPidB);
        CHECK(p["comm"] == "server");
        CHECK(p["cmdline"] == "server --serve");
        CHECK(p["uid"] == ::geteuid());
        CHECK(p["start_time"] == 12345);
        CHECK(p["created_unix_ns"] == 1700000000000000000ull);
        CHECK(p["live_bytes"] == 3 * 16 + 8192);
        CHECK(p["live_blocks"] == 4);
        CHECK(p["events"]["malloc_calls"] == 15);
        CHECK(p["events"]["free_calls"] == 2);
        CHECK(p["events"]["new_calls"] == 7);
        CHECK(p["events"]["failed_allocs"] == 1);
        CHECK(p["events"].size() == ARENA_EV_COUNT);
        CHECK(p["gauges"]["peak_live_bytes"] == 100000);
        CHECK(p["gauges"]["reserved_bytes"] == (1ull << 36));
        CHECK(p["gauges"]["double_frees"] == 2);
        CHECK(p["gauges"]["invalid_frees"] == 3);
        CHECK(p["gauges"].size() == ARENA_G_COUNT);
        // The list stays short: classes, control and paths per pid only.
        for (const char* key : {"size_classes", "control", "path", "allocs_per_second"}) {
            CAPTURE(key);
            CHECK_FALSE(p.contains(key));
        }
        // A subset of the detail's keys, with the same values.
        const Json detail = arena_get_reply(dir.path, dir.options, std::to_string(kPidA)).data;
        for (const auto& [key, value] : p.items()) {
            CAPTURE(key);
            REQUIRE(detail.contains(key));
            CHECK(detail[key] == value);
        }
        CHECK(r.extra["stats_dir"] == dir.path);
        CHECK(r.extra["skipped"]["foreign"] == 1);
        CHECK(r.extra["skipped"]["dead"] == 1);
        CHECK_FALSE(r.extra.contains("truncated"));
        struct stat sb {};
        CHECK(::stat(stale_path.c_str(), &sb) != 0); // the reader removed the stale page
    }

    TEST_CASE("GET /arena: no directory yet is an empty list, an unusable one a 500") {
        StatsDir dir;
        const ApiReply none = arena_list_reply(dir.tmp.file("absent"), dir.options);
        CHECK(none.code == 200);
        CHECK(none.data == Json::array());
        const std::string file = dir.tmp.write("file", "x");
        const ApiReply bad = arena_list_reply(file, dir.options);
        CHECK(bad.code == 500);
        CHECK(bad.message.find("Cannot read the stats directory") == 0);
    }

    TEST_CASE("GET /arena: a scan ended by its cap says so") {
        StatsDir dir;
        for (const int pid : {kPidA, kPidB}) {
            dir.add_live(testing::FakePage(pid));
        }
        arena::client::ScanOptions capped = dir.options;
        capped.max_pages = 1;
        const ApiReply r = arena_list_reply(dir.path, capped);
        CHECK(r.code == 200);
        CHECK(r.data.size() == 1);
        CHECK(r.extra["truncated"] == true);
    }

    TEST_CASE("GET /arena/<pid>: every counter, the size classes and the control area") {
        StatsDir dir;
        testing::FakePage a(kPidA);
        fill(a, "server");
        a.page().head.control.trim_requests = 3;
        a.page().head.control.trims_served = 2;
        a.page().head.control.purge_delay_ms = 250; // asked for before, and served
        a.page().head.control.purge_requests = 1;
        a.page().head.control.purges_served = 1;
        dir.add_live(a);
        const ApiReply r = arena_get_reply(dir.path, dir.options, std::to_string(kPidA));
        CHECK(r.code == 200);
        CHECK(r.message == "Arena process");
        const Json& p = r.data;
        CHECK(p["pid"] == kPidA);
        CHECK(p["path"] == dir.page_path(kPidA));
        CHECK(p["page_size"] == 4096);
        CHECK(p["live_bytes"] == 3 * 16 + 8192);
        CHECK(p["allocs_per_second"].is_null());
        CHECK(p["frees_per_second"].is_null());
        CHECK(p["events"]["malloc_calls"] == 15);
        CHECK(p["events"]["large_alloc_bytes"] == 8192);
        CHECK(p["events"].size() == ARENA_EV_COUNT);
        CHECK(p["gauges"]["trims"] == 4);
        CHECK(p["gauges"]["purge_delay_ms"] == 500);
        CHECK(p["gauges"]["double_frees"] == 2);
        REQUIRE(p["size_classes"].size() == 4);
        CHECK(
            p["size_classes"][0] ==
            Json{
                {"size", 16}, {"allocs", 5}, {"frees", 2}, {"live_blocks", 3}, {"live_bytes", 48}});
        CHECK(p["size_classes"][3]["size"] == 64);
        CHECK(p["control"] == Json{{"trim_requests", 3},
                                   {"trims_served", 2},
                                   {"trim_pending", true},
                                   {"purge_requests", 1},
                                   {"purges_served", 1},
                                   {"purge_delay_request", nullptr}});

        // A purge request not served yet shows the delay asked for; a signed one stays signed.
        testing::FakePage b(kPidB);
        b.page().head.control.purge_delay_ms = -1;
        b.page().head.control.purge_requests = 1;
        dir.add_live(b);
        const Json control =
            arena_get_reply(dir.path, dir.options, std::to_string(kPidB)).data["control"];
        CHECK(control["purge_delay_request"] == -1);
        CHECK(control["trim_pending"] == false);
    }

    TEST_CASE("GET /arena/<pid>: 400 for a bad pid, 404 for no process, no page, stale, invalid") {
        StatsDir dir;
        CHECK(arena_get_reply(dir.path, dir.options, "abc").code == 400);
        CHECK(arena_get_reply(dir.path, dir.options, "0").code == 400);
        const std::string missing = std::to_string(kPidNoPage);
        const ApiReply gone = arena_get_reply(dir.path, dir.options, missing);
        CHECK(gone.code == 404);
        CHECK(gone.message ==
              "No stats page for pid " + missing + " in " + dir.path + ": no such process");
        dir.proc.add(kPidNoPage, 12345, "plain"); // a process without a page
        const ApiReply none = arena_get_reply(dir.path, dir.options, missing);
        CHECK(none.code == 404);
        CHECK(none.message == "No stats page for pid " + missing + " in " + dir.path);

        testing::FakePage reused(kPidStale);
        dir.add_live(reused);
        dir.proc.add(kPidStale, 99999, "other"); // the pid now belongs to another process
        const ApiReply s = arena_get_reply(dir.path, dir.options, std::to_string(kPidStale));
        CHECK(s.code == 404);
        CHECK(s.message ==
              "The stats page of pid " + std::to_string(kPidStale) + " is stale (pid_reused)");
        testing::FakePage bad(kPidB);
        bad.page().head.magic = 42;
        dir.add_live(bad);
        const ApiReply f = arena_get_reply(dir.path, dir.options, std::to_string(kPidB));
        CHECK(f.code == 404);
        CHECK(f.message == "No valid stats page for pid " + std::to_string(kPidB) + " (bad_magic)");
    }

    TEST_CASE("POST /arena/<pid>/trim: 202 writes the control area; 400, 404, 409") {
        StatsDir dir;
        testing::FakePage a(kPidA);
        a.page().head.control.trims_served = 0;
        dir.add_live(a);
        const ApiReply ok = arena_trim_reply(dir.path, dir.options, std::to_string(kPidA));
        CHECK(ok.code == 202);
        CHECK(ok.data == Json{{"pid", kPidA}, {"trim_requests", 1}, {"trims_served", 0}});
        CHECK(
            arena_trim_reply(dir.path, dir.options, std::to_string(kPidA)).data["trim_requests"] ==
            2);
        arena::client::Skip why{};
        const auto page = arena::client::read_pid(dir.path, kPidA, dir.options, &why);
        REQUIRE(page);
        CHECK(page->control().trim_requests == 2);

        CHECK(arena_trim_reply(dir.path, dir.options, "-1").code == 400);
        // No such process, and a process without a page.
        const ApiReply gone = arena_trim_reply(dir.path, dir.options, std::to_string(kPidNoPage));
        CHECK(gone.code == 404);
        CHECK(gone.message.find("No stats page for pid " + std::to_string(kPidNoPage)) == 0);
        dir.proc.add(kPidB, 12345, "plain");
        CHECK(arena_trim_reply(dir.path, dir.options, std::to_string(kPidB)).code == 404);
        // A stale page: its pid now belongs to another process.
        testing::FakePage reused(kPidStale);
        dir.add_live(reused);
        dir.proc.add(kPidStale, 99999, "other");
        const ApiReply s = arena_trim_reply(dir.path, dir.options, std::to_string(kPidStale));
        CHECK(s.code == 409);
        CHECK(s.message.find("The stats page of pid " + std::to_string(kPidStale) + " is stale") ==
              0);
    }

    TEST_CASE("POST /arena/<pid>/trim and /profile: 403 when the page is another user's") {
        StatsDir dir;
        testing::FakePage a(kPidA);
        const std::string path = dir.add_live(a); // ours, mode 0600
        const std::string pid = std::to_string(kPidA);
        std::function<ApiReply()> request;
        SUBCASE("trim") {
            request = [&] { return arena_trim_reply(dir.path, dir.options, pid); };
        }
        SUBCASE("profile") {
            request = [&] {
                return arena_profile_request_reply(dir.path, dir.options, pid, "on", "4096");
            };
        }
        int code = 0;
        std::string message;
        if (::geteuid() == 0) {
            // Root may write anything: ask as "nobody", in a child, as a daemon running under
            // its own user would. The page stays root's, in root's private directory.
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
                const ApiReply r = request();
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
            ::chmod(path.c_str(), 0400);
            const ApiReply r = request();
            code = r.code;
            message = r.message;
        }
        CHECK(code == 403);
        CHECK(message.find("Not allowed to write the control area of pid " + pid) == 0);
        arena::client::Skip why{};
        const auto page = arena::client::read_pid(dir.path, kPidA, dir.options, &why);
        REQUIRE(page);
        CHECK(page->control().trim_requests == 0);
        CHECK(page->control().profile_requests == 0);
        CHECK(page->control().profile_rate == 0);
    }

    TEST_CASE("GET /arena/<pid> and arena-stat --json: the same JSON for the same page") {
        StatsDir dir;
        testing::FakePage a(kPidA);
        fill(a, "server");
        a.page().head.control.purge_delay_ms = 20;
        a.page().head.control.purge_requests = 1;
        dir.add_live(a);
        const Json cmond = arena_get_reply(dir.path, dir.options, std::to_string(kPidA)).data;

        const std::string command = cmond_test::required_env("ARENA_STAT") +
                                    " --json --stats-dir " + dir.path + " --path.procfs " +
                                    dir.proc.root() + " 2>&1";
        FILE* pipe = ::popen(command.c_str(), "r");
        REQUIRE(pipe != nullptr);
        std::string out;
        char buf[4096];
        for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) {
            out.append(buf, n);
        }
        REQUIRE(::pclose(pipe) == 0);
        const Json list = Json::parse(out, nullptr, false);
        REQUIRE_MESSAGE(list.is_array(), out);
        REQUIRE(list.size() == 1);
        const Json& stat = list[0];
        // The same keys in the same order, nested ones included...
        CHECK(keys_of(stat) == keys_of(cmond));
        // ...and the same values: arena-stat --once has no rates either.
        CHECK(stat == cmond);
    }

    TEST_CASE("GET /arena/<pid>/profile: the profile library's JSON; frames stay addresses "
              "with another procfs") {
        StatsDir dir;
        testing::FakePage a(kPidA);
        fill(a, "server");
        REQUIRE(!dir.add_live(a, testing::sample_region()).empty());
        const std::string pid = std::to_string(kPidA);
        const auto got = arena_profile_reply(dir.path, dir.options, pid, std::nullopt);
        REQUIRE(std::holds_alternative<ApiReply>(got));
        const ApiReply& r = std::get<ApiReply>(got);
        CHECK(r.code == 200);
        CHECK(r.message == "Heap profile");
        const prof::Profile p = cmond_test::read_profile(dir.path, kPidA, dir.options);
        CHECK(r.data == Json::parse(prof::to_json(p, nullptr)));
        // sample_region(), as its process's.
        CHECK(r.data["pid"] == kPidA);
        CHECK(r.data["comm"] == "server");
        CHECK(r.data["on"] == true);
        CHECK(r.data["rate"] == 4096);
        CHECK(r.data["samples"] == 17);
        CHECK(r.data["stacks_used"] == 2);
        CHECK(r.data["overflow"] == 2);
        REQUIRE(r.data["stacks"].size() == 3);
        const Json& top = r.data["stacks"][0]; // the most live bytes first
        CHECK(top["live_bytes"] == 40000);
        CHECK(top["alloc_samples"] == 5);
        REQUIRE(top["frames"].size() == 2);
        CHECK(top["frames"][0]["address"] == "0x1503");
        CHECK(top["frames"][0]["function"] == "");
        // The reader looks at a procfs that is not cmond's own: nothing is resolved, and the
        // reply says why.
        CHECK(r.extra["symbolized"] == false);
        CHECK(r.extra["symbolize_error"] ==
              "cmond reads processes in " + dir.proc.root() +
                  ", and resolves frames only for processes in its own /proc");
        // format=json is the default.
        const auto json = arena_profile_reply(dir.path, dir.options, pid, "json");
        REQUIRE(std::holds_alternative<ApiReply>(json));
        CHECK(std::get<ApiReply>(json).data == r.data);
    }

    TEST_CASE("GET /arena/<pid>/profile?format=pprof|folded: the library's bytes, not JSON") {
        StatsDir dir;
        testing::FakePage a(kPidA);
        REQUIRE(!dir.add_live(a, testing::sample_region()).empty());
        const std::string pid = std::to_string(kPidA);
        const prof::Profile p = cmond_test::read_profile(dir.path, kPidA, dir.options);

        const auto pprof = arena_profile_reply(dir.path, dir.options, pid, "pprof");
        REQUIRE(std::holds_alternative<RawReply>(pprof));
        const RawReply& bin = std::get<RawReply>(pprof);
        CHECK(bin.content_type == "application/octet-stream");
        REQUIRE(bin.body.size() > 2);
        CHECK(bin.body.substr(0, 2) == "\x1f\x8b"); // gzip'd, as pprof reads it
        CHECK(bin.body == prof::to_pprof(p, nullptr));

        const auto folded = arena_profile_reply(dir.path, dir.options, pid, "folded");
        REQUIRE(std::holds_alternative<RawReply>(folded));
        const RawReply& text = std::get<RawReply>(folded);
        CHECK(text.content_type == "text/plain; charset=utf-8");
        CHECK(text.body == prof::to_folded(p, nullptr, prof::Order::LiveBytes));
        // Live bytes per stack, outermost frame first, the most first.
        CHECK(text.body == "0x3003;0x1503 40000\n0x3003;0x2003;0x1003 6000\n[other stacks] 200\n");
    }

    TEST_CASE("GET /arena/<pid>/profile: 400 for a bad pid or format; 404 for no process, no "
              "page, no profile, a bad region") {
        StatsDir dir;
        const auto code = [&](std::string_view pid, std::optional<std::string_view> format) {
            const auto got = arena_profile_reply(dir.path, dir.options, pid, format);
            REQUIRE(std::holds_alternative<ApiReply>(got));
            return std::get<ApiReply>(got);
        };
        for (const char* bad : {"abc", "0", "-1", "01", ""}) {
            CAPTURE(bad);
            const ApiReply r = code(bad, std::nullopt);
            CHECK(r.code == 400);
            CHECK(r.message == "Invalid pid: expected a positive decimal integer");
        }
        testing::FakePage a(kPidA);
        REQUIRE(!dir.add_live(a, testing::sample_region()).empty());
        const std::string pid = std::to_string(kPidA);
        for (const char* bad : {"", "JSON", "xml", "pprof ", "proto"}) {
            CAPTURE(bad);
            const ApiReply r = code(pid, bad);
            CHECK(r.code == 400);
            CHECK(r.message == "Invalid format: expected json, pprof or folded");
        }

        const std::string missing = std::to_string(kPidNoPage);
        const ApiReply gone = code(missing, std::nullopt);
        CHECK(gone.code == 404);
        CHECK(gone.message.find("No stats page for pid " + missing + " in " + dir.path) == 0);
        dir.proc.add(kPidNoPage, 12345, "plain"); // a process without a page
        CHECK(code(missing, "pprof").code == 404);

        // A page and no region after it: profiling was never turned on.
        testing::FakePage b(kPidB);
        dir.add_live(b);
        const std::string never = std::to_string(kPidB);
        for (const char* format : {"json", "pprof", "folded"}) {
            CAPTURE(format);
            const ApiReply r = code(never, format);
            CHECK(r.code == 404);
            CHECK(r.message == "No heap profile for pid " + never +
                                   ": profiling was never turned on; POST /arena/" + never +
                                   "/profile?state=on");
        }

        // A region of another layout.
        testing::Region other = testing::sample_region();
        other.r->head.version = ARENA_PROFILE_VERSION + 1;
        REQUIRE(!dir.add_live(a, other).empty());
        const ApiReply bad = code(pid, std::nullopt);
        CHECK(bad.code == 404);
        CHECK(bad.message.find("No valid heap profile for pid " + pid) == 0);
    }

    TEST_CASE("GET /arena/<pid>/profile: frames resolved for a process in cmond's /proc") {
        // This test program's own page, in a stats base of its own, judged with the real /proc:
        // its frame is the return address into cmond_test_profiled_caller.
        TempDir tmp;
        ::chmod(tmp.path().c_str(), 0755);
        const std::string base = tmp.file("stats");
        const testing::FakePage self = testing::self_page();
        testing::Region profile;
        const auto caller = reinterpret_cast<uintptr_t>(&cmond_test_profiled_caller);
        profile.add(1, {caller + 1}, 1, 4096);
        REQUIRE(!profile.write(self, base).empty());

        const auto got = arena_profile_reply(base, {}, std::to_string(::getpid()), std::nullopt);
        REQUIRE(std::holds_alternative<ApiReply>(got));
        const ApiReply& r = std::get<ApiReply>(got);
        REQUIRE_MESSAGE(r.code == 200, r.message);
        CHECK_MESSAGE(r.extra["symbolized"] == true, r.extra.dump());
        CHECK_FALSE(r.extra.contains("symbolize_error"));
        CHECK_MESSAGE(r.data.dump().find("cmond_test_profiled_caller") != std::string::npos,
                      r.data.dump());
    }

    TEST_CASE("GET /arena/<pid>/profile: another user's process keeps its frames as addresses") {
        if (::geteuid() != 0) {
            MESSAGE("not root: no process of another user to profile here; not checked");
            return;
        }
        // A child of this program turned "nobody" (so non-dumpable: its /proc/<pid> is root's),
        // with a page it wrote as root before that, which the reader accepts for any process.
        TempDir tmp;
        ::chmod(tmp.path().c_str(), 0755);
        const std::string base = tmp.file("stats");
        testing::Region profile;
        profile.add(1, {reinterpret_cast<uintptr_t>(&cmond_test_profiled_caller) + 1}, 1, 4096);
        int ready[2];
        int hold[2];
        REQUIRE(::pipe(ready) == 0);
        REQUIRE(::pipe(hold) == 0);
        const auto [uid, gid] = cmond_test::nobody();
        const pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            ::close(ready[0]);
            ::close(hold[1]);
            if (profile.write(testing::self_page(), base).empty() || ::setgid(gid) != 0 ||
                ::setuid(uid) != 0) {
                ::_exit(2);
            }
            [[maybe_unused]] auto w = ::write(ready[1], "r", 1);
            char c = 0;
            [[maybe_unused]] auto r = ::read(hold[0], &c, 1); // until the parent closes hold
            ::_exit(0);
        }
        ::close(ready[1]);
        ::close(hold[0]);
        char c = 0;
        const bool started = ::read(ready[0], &c, 1) == 1;
        ::close(ready[0]);
        const auto got =
            started ? arena_profile_reply(base, {}, std::to_string(child), std::nullopt)
                    : std::variant<ApiReply, RawReply>(error_reply(500, "the child did not start"));
        ::close(hold[1]);
        int status = 0;
        ::waitpid(child, &status, 0);
        REQUIRE(std::holds_alternative<ApiReply>(got));
        const ApiReply& r = std::get<ApiReply>(got);
        REQUIRE_MESSAGE(r.code == 200, r.message);
        CHECK(r.extra["symbolized"] == false);
        CHECK(r.extra["symbolize_error"] ==
              "pid " + std::to_string(child) + " runs as uid " + std::to_string(uid) +
                  " and cmond as uid 0: cmond resolves frames only in processes of its own "
                  "user (resolving opens the files a process maps, which its user controls)");
        CHECK(r.data["stacks"][0]["frames"][0]["function"] == "");
    }

    TEST_CASE("POST /arena/<pid>/profile: 202 writes the control area; state and rate checked") {
        StatsDir dir;
        testing::FakePage a(kPidA);
        dir.add_live(a);
        const std::string pid = std::to_string(kPidA);
        const auto control = [&] {
            arena::client::Skip why{};
            const auto page = arena::client::read_pid(dir.path, kPidA, dir.options, &why);
            REQUIRE(page);
            return page->control();
        };
        const auto request = [&](std::optional<std::string_view> state,
                                 std::optional<std::string_view> rate) {
            return arena_profile_request_reply(dir.path, dir.options, pid, state, rate);
        };

        // state=on without a rate: the default rate.
        const ApiReply on = request("on", std::nullopt);
        CHECK(on.code == 202);
        CHECK(on.message == "Profiling requested: pid " + pid +
                                " samples an allocation every 524288 bytes on average from its "
                                "next allocator slow path");
        CHECK(on.data == Json{{"pid", kPidA},
                              {"profile_rate", ARENA_PROFILE_DEFAULT_RATE},
                              {"profile_requests", 1},
                              {"profile_served", 0}});
        CHECK(control().profile_rate == ARENA_PROFILE_DEFAULT_RATE);
        CHECK(control().profile_requests == 1);

        const ApiReply every = request("on", "1");
        CHECK(every.code == 202);
        CHECK(every.data["profile_rate"] == 1);
        CHECK(every.data["profile_requests"] == 2);
        CHECK(control().profile_rate == 1);
        const std::string max = std::to_string(ARENA_PROFILE_MAX_RATE);
        CHECK(request("on", max).data["profile_rate"] == ARENA_PROFILE_MAX_RATE);

        const ApiReply off = request("off", std::nullopt);
        CHECK(off.code == 202);
        CHECK(off.message == "Profiling off requested: pid " + pid +
                                 " stops sampling on its next allocator "
                                 "slow path");
        CHECK(off.data == Json{{"pid", kPidA},
                               {"profile_rate", 0},
                               {"profile_requests", 4},
                               {"profile_served", 0}});
        CHECK(control().profile_rate == 0);
        CHECK(control().profile_requests == 4);
        // The trim counters are another request's.
        CHECK(control().trim_requests == 0);

        // Anything else is a 400, and writes nothing.
        const std::string too_big = std::to_string(ARENA_PROFILE_MAX_RATE + 1);
        const std::vector<std::pair<std::optional<std::string>, std::optional<std::string>>> bad = {
            {std::nullopt, std::nullopt},
            {std::nullopt, "4096"},
            {"", std::nullopt},
            {"yes", std::nullopt},
            {"ON", std::nullopt},
            {"1", std::nullopt},
            {"on", ""},
            {"on", "0"},
            {"on", "-1"},
            {"on", "+1"},
            {"on", "01"},
            {"on", " 1"},
            {"on", "1e3"},
            {"on", "4k"},
            {"on", too_big},
            {"on", "99999999999999999999999"},
            {"off", "4096"},
            {"off", ""}};
        for (const auto& [state, rate] : bad) {
            CAPTURE(state.value_or("(none)"));
            CAPTURE(rate.value_or("(none)"));
            const ApiReply r = request(state, rate);
            CHECK(r.code == 400);
            CHECK(r.data.is_null());
        }
        CHECK(request("on", "0").message == "Invalid rate: expected the mean bytes between "
                                            "samples, a decimal integer from 1 to " +
                                                max);
        CHECK(request("maybe", std::nullopt).message ==
              "Invalid state: expected state=on (with an optional rate) or state=off");
        CHECK(request("off", "1").message == "Invalid query: rate goes with state=on only");
        CHECK(control().profile_requests == 4);
        CHECK(control().profile_rate == 0);
    }

    TEST_CASE("POST /arena/<pid>/profile: 400 bad pid, 404 no process or page, 409 stale") {
        StatsDir dir;
        const auto request = [&](const std::string& pid) {
            return arena_profile_request_reply(dir.path, dir.options, pid, "on", std::nullopt);
        };
        CHECK(request("abc").code == 400);
        CHECK(request("0").code == 400);
        const std::string missing = std::to_string(kPidNoPage);
        const ApiReply gone = request(missing);
        CHECK(gone.code == 404);
        CHECK(gone.message.find("No stats page for pid " + missing) == 0);
        dir.proc.add(kPidNoPage, 12345, "plain");
        CHECK(request(missing).code == 404);
        testing::FakePage reused(kPidStale);
        dir.add_live(reused);
        dir.proc.add(kPidStale, 99999, "other");
        const ApiReply s = request(std::to_string(kPidStale));
        CHECK(s.code == 409);
        CHECK(s.message.find("The stats page of pid " + std::to_string(kPidStale) + " is stale") ==
              0);
    }

} // TEST_SUITE
