// SPDX-License-Identifier: MIT
// arena-stat on the fixture stats directory: --json fields and values (every field of the
// page's tables), every --sort order, the table's human-readable bytes, rates between --watch
// refreshes, usage errors, and a clean exit on Ctrl-C in a terminal (the cursor is shown again).
#include "fixture_pages.h"
#include "proc.h"
#include "schema.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <map>
#include <poll.h>
#include <pty.h>
#include <sstream>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using exptest::required_env;
using nlohmann::json;

exptest::RunResult arena_stat(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {required_env("ARENA_STAT")};
    argv.insert(argv.end(), args.begin(), args.end());
    return exptest::run(argv, "", {"ARENA_STATS_DIR="});
}

json stat_json(const exptest::Place& place, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"--json"};
    const std::vector<std::string> where = place.args();
    args.insert(args.end(), where.begin(), where.end());
    args.insert(args.end(), extra.begin(), extra.end());
    const exptest::RunResult r = arena_stat(args);
    INFO("stderr: ", r.err);
    REQUIRE(r.status == 0);
    json j = json::parse(r.out, nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    REQUIRE(j.is_array());
    return j;
}

std::vector<int> pids(const json& procs) {
    std::vector<int> out;
    for (const json& p : procs)
        out.push_back(p.at("pid").get<int>());
    return out;
}

} // namespace

TEST_SUITE_BEGIN("exporter");

TEST_CASE("arena-stat --json: every process with its counters") {
    testing::TempDir dir("stat");
    const auto pages = exptest::write_fixture_pages(dir.path());
    const json procs = stat_json(pages->place);
    REQUIRE(procs.size() == 4); // every other entry of the fixture is skipped

    std::map<int, json> by_pid;
    for (const json& p : procs)
        by_pid[p.at("pid").get<int>()] = p;
    const json& web = by_pid.at(1001);
    CHECK(web.at("comm") == "web");
    CHECK(web.at("cmdline") == "/usr/bin/web --serve");
    CHECK(web.at("uid") == geteuid());
    CHECK(web.at("start_time") == 12345);
    CHECK(web.at("path") == pages->place.page_path(1001));
    // 100 x 16 + 50 x 64 + 50 x 512 small, 2 x 64 KiB large.
    CHECK(web.at("live_bytes") == 1600 + 3200 + 25600 + 131072);
    CHECK(web.at("live_blocks") == 100 + 50 + 50 + 2);
    const json& gauges = web.at("gauges");
    CHECK(gauges.at("peak_live_bytes") == 2 << 20);
    CHECK(gauges.at("resident_bytes") == 3 << 20);
    CHECK(gauges.at("reserved_bytes") == 1 << 30);
    CHECK(gauges.at("committed_bytes") == 4 << 20);
    CHECK(gauges.at("heaps_active") == 3);
    CHECK(gauges.at("purge_delay_ms") == 10000);
    CHECK(gauges.size() == ARENA_G_COUNT);
    CHECK(web.at("allocs_per_second").is_null());
    CHECK(web.at("frees_per_second").is_null());
    CHECK(web.at("events").at("malloc_calls") == 1500);
    CHECK(web.at("events").at("free_calls") == 800 + 430 + 20);
    CHECK(web.at("events").at("bytes_requested") == 150000);
    CHECK(web.at("events").size() == ARENA_EV_COUNT);
    REQUIRE(web.at("size_classes").size() == 40);
    CHECK(web.at("size_classes")[0] == json{{"size", 16},
                                            {"allocs", 900},
                                            {"frees", 800},
                                            {"live_blocks", 100},
                                            {"live_bytes", 1600}});
    CHECK(web.at("control").at("trim_pending") == false);
    CHECK(web.at("control").at("purge_delay_request").is_null());

    CHECK(by_pid.at(1002).at("gauges").at("double_frees") == 1);
    CHECK(by_pid.at(1004).at("gauges").at("double_frees") == 0);
    CHECK(by_pid.at(1004).at("gauges").at("invalid_frees") == 2);
    CHECK(by_pid.at(1004).at("events").at("failed_allocs") == 1);
    CHECK(by_pid.at(1004).at("gauges").at("purge_delay_ms") == -1);
    CHECK(by_pid.at(1003).at("live_bytes") == 3 * 102400);
}

TEST_CASE("arena-stat --json: every field of the page's tables, by name, signed ones signed") {
    testing::TempDir dir("stat-fields");
    exptest::Place place(dir.path());
    testing::FakePage page(5002);
    page.head().control.purge_delay_ms = 250;
    page.head().control.purge_requests = 1; // pending: not served yet
    for (const arena::client::Field& f : arena::client::fields()) {
        if (f.kind == arena::client::FieldKind::Event) {
            page.page().shards[3].events[f.index] = 7000 + f.index;
        } else {
            const int64_t v = 9000 + f.index;
            page.head().global.gauges[f.index] = static_cast<uint64_t>(f.is_signed ? -v : v);
        }
    }
    place.add_live(page);
    const json procs = stat_json(place);
    REQUIRE(procs.size() == 1);
    const json& p = procs[0];
    size_t events = 0, gauges = 0;
#define CHECK_EVENT(name, family, label, pass)                                                     \
    CHECK(p.at("events").at(#name) == 7000 + ARENA_EV_##name);                                     \
    ++events;
    ARENA_STATS_EVENTS(CHECK_EVENT)
#undef CHECK_EVENT
#define CHECK_GAUGE(name, family, label, is_signed)                                                \
    CHECK(p.at("gauges").at(#name) == ((is_signed) ? -1 : 1) * int64_t(9000 + ARENA_G_##name));    \
    ++gauges;
    ARENA_STATS_GAUGES(CHECK_GAUGE)
#undef CHECK_GAUGE
    CHECK(p.at("events").size() == events);
    CHECK(p.at("gauges").size() == gauges);
    CHECK(p.at("control") == json{{"trim_requests", 0},
                                  {"trims_served", 0},
                                  {"trim_pending", false},
                                  {"purge_requests", 1},
                                  {"purges_served", 0},
                                  {"purge_delay_request", 250}});
}

TEST_CASE("arena-stat --sort: each column, numbers descending, ties by pid") {
    testing::TempDir dir("stat-sort");
    const auto pages = exptest::write_fixture_pages(dir.path());
    const exptest::Place& place = pages->place;
    // Default: live, descending.
    CHECK(pids(stat_json(place)) == std::vector<int>{1003, 1001, 1004, 1002});
    const std::map<std::string, std::vector<int>> want = {
        {"pid", {1001, 1002, 1003, 1004}},
        {"comm", {1004, 1001, 1002, 1003}}, // batch, web, web, worker
        {"live", {1003, 1001, 1004, 1002}},
        {"peak", {1001, 1004, 1003, 1002}},
        {"resident", {1001, 1004, 1002, 1003}},
        {"reserved", {1004, 1001, 1002, 1003}}, // 2 GiB, then three ties at 1 GiB
        {"allocs", {1001, 1002, 1004, 1003}},   // by call counts without rates
        {"frees", {1001, 1002, 1004, 1003}},
        {"errors", {1004, 1002, 1001, 1003}},
    };
    for (const auto& entry : want) {
        const std::string& column = entry.first;
        const std::vector<int>& order = entry.second;
        CAPTURE(column);
        CHECK(pids(stat_json(place, {"--sort", column})) == order);
        CHECK(pids(stat_json(place, {"--sort=" + column})) == order);
    }
}

TEST_CASE("arena-stat table: header, totals, human-readable bytes, rates as '-'") {
    testing::TempDir dir("stat-table");
    const auto pages = exptest::write_fixture_pages(dir.path());
    const exptest::RunResult r = arena_stat(pages->place.args());
    INFO(r.out, r.err);
    REQUIRE(r.status == 0);
    CHECK(r.out.find("arena-stat ") == 0);
    CHECK(r.out.find("4 processes") != std::string::npos);
    // Every reason with a count, in the reader's order.
    CHECK(r.out.find("\nskipped: 1 foreign, 1 truncated, 1 bad_magic, 1 bad_version, 1 not_ready, "
                     "1 forged, 1 dead, 1 pid_reused\n") != std::string::npos);
    CHECK(r.out.find("     PID COMM                   LIVE       PEAK   RESIDENT   RESERVED  "
                     "ALLOCS/S   FREES/S  ERRORS") != std::string::npos);
    // live 300 KiB, peak 400 KiB, resident 300 KiB, reserved 1 GiB, no rates, no errors.
    CHECK(
        r.out.find("    1003 worker              300 KiB    400 KiB    300 KiB   1.00 GiB         "
                   "-         -       0\n") != std::string::npos);
    CHECK(
        r.out.find("    1002 web                   560 B   4.00 KiB    512 KiB   1.00 GiB         "
                   "-         -       1\n") != std::string::npos);
    CHECK(r.out.find("    1004 batch              64.0 KiB    640 KiB   1.00 MiB   2.00 GiB") !=
          std::string::npos);
    CHECK(r.out.find("4 processes, live 522 KiB, resident 4.79 MiB, reserved 5.00 GiB, allocs/s -, "
                     "frees/s -, errors 4\n") != std::string::npos);
    CHECK(r.out.find("\x1b") == std::string::npos); // no escapes outside --watch on a terminal
    // Rows come in --sort order.
    const size_t a = r.out.find("    1003 "), b = r.out.find("    1001 "),
                 c = r.out.find("    1002 ");
    CHECK(a < b);
    CHECK(b < c);
}

TEST_CASE("arena-stat --watch --json: rates between refreshes") {
    testing::TempDir dir("stat-watch");
    const auto pages = exptest::write_fixture_pages(dir.path());
    testing::TempDir out("stat-watch-out");
    std::vector<std::string> argv = {
        required_env("ARENA_STAT"), "--watch", "1", "--count", "2", "--json", "--sort", "allocs"};
    for (const std::string& a : pages->place.args())
        argv.push_back(a);
    exptest::Child child(argv, {}, out.file("stdout"), out.file("stderr"));
    REQUIRE(child.started());
    // After the first frame, 1000 more mallocs in process 1001, in place as a writer would.
    for (int i = 0; i < 500 && child.out().find('\n') == std::string::npos; ++i)
        exptest::sleep_s(0.01);
    REQUIRE(child.out().find('\n') != std::string::npos);
    {
        const int fd = open(pages->place.page_path(1001).c_str(), O_RDWR);
        REQUIRE(fd >= 0);
        void* map =
            mmap(nullptr, sizeof(arena_stats_page), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        REQUIRE(map != MAP_FAILED);
        auto* page = static_cast<arena_stats_page*>(map);
        __atomic_fetch_add(&page->shards[3].events[ARENA_EV_malloc_calls], 1000, __ATOMIC_RELAXED);
        munmap(map, sizeof(arena_stats_page));
    }
    REQUIRE(child.wait(10) == 0);
    std::istringstream lines(child.out());
    std::string first, second, third;
    REQUIRE(std::getline(lines, first));
    REQUIRE(std::getline(lines, second));
    CHECK_FALSE(std::getline(lines, third));
    const json f = json::parse(first), s = json::parse(second);
    REQUIRE(f.size() == 4);
    REQUIRE(s.size() == 4);
    for (const json& p : f)
        CHECK(p.at("allocs_per_second").is_null());
    for (const json& p : s) {
        CAPTURE(p.at("pid"));
        REQUIRE(p.at("allocs_per_second").is_number());
        const double rate = p.at("allocs_per_second").get<double>();
        if (p.at("pid") == 1001) {
            CHECK(rate > 200); // 1000 calls in a refresh of 1 s plus scheduling delays
            CHECK(rate <= 1000.001);
        } else {
            CHECK(rate == 0);
        }
        CHECK(p.at("frees_per_second") == 0);
    }
    // --sort allocs orders by call counts until rates are known, then by rate (ties by pid).
    CHECK(pids(f) == std::vector<int>{1001, 1002, 1004, 1003});
    CHECK(pids(s) == std::vector<int>{1001, 1002, 1003, 1004});
}

TEST_CASE("arena-stat: usage errors exit 2 with a message, an unreadable directory exits 1") {
    testing::TempDir dir("stat-flags");
    const std::vector<std::pair<std::vector<std::string>, std::string>> bad = {
        {{"--bogus"}, "unknown argument '--bogus'"},
        {{"--sort", "size"}, "invalid --sort 'size'"},
        {{"--sort"}, "option '--sort' needs a value"},
        {{"--watch", "0"}, "invalid --watch interval '0'"},
        {{"--watch=abc"}, "invalid --watch interval 'abc'"},
        {{"--watch", "1e9"}, "unknown argument '1e9'"},
        {{"--count", "3"}, "--count needs --watch"},
        {{"--watch", "--count", "0"}, "invalid --count '0'"},
        {{"--once", "--watch"}, "--once and --watch exclude each other"},
        {{"--json=yes"}, "option '--json' takes no value"},
        {{"--stats-dir="}, "--stats-dir needs a directory"},
        {{"--path.procfs="}, "--path.procfs needs a directory"},
        {{"--path.procfs"}, "option '--path.procfs' needs a value"},
        {{"extra"}, "unknown argument 'extra'"},
    };
    for (const auto& entry : bad) {
        const std::vector<std::string>& args = entry.first;
        const std::string& message = entry.second;
        CAPTURE(args.front());
        const exptest::RunResult r = arena_stat(args);
        CHECK(r.status == 2);
        CHECK(r.out.empty());
        CHECK(r.err.find(message) != std::string::npos);
        CHECK(r.err.find("Try 'arena-stat --help'") != std::string::npos);
    }
    const exptest::RunResult help = arena_stat({"--help"});
    CHECK(help.status == 0);
    CHECK(help.out.find("Usage: arena-stat") == 0);

    const exptest::RunResult missing = arena_stat({"--stats-dir", dir.file("missing")});
    CHECK(missing.status == 1);
    CHECK(missing.err.find(dir.file("missing")) != std::string::npos);
    const exptest::RunResult missing_json =
        arena_stat({"--json", "--stats-dir", dir.file("missing")});
    CHECK(missing_json.status == 1);
    // An empty directory is fine: an empty array.
    const exptest::Place empty(dir.path());
    REQUIRE(mkdir(empty.base.c_str(), 01777) == 0);
    CHECK(stat_json(empty).empty());
}

TEST_CASE("arena-stat --watch in a terminal: Ctrl-C exits 0 and shows the cursor again") {
    testing::TempDir dir("stat-tty");
    const auto pages = exptest::write_fixture_pages(dir.path());
    const std::string exe = required_env("ARENA_STAT");
    const std::string stats_dir = pages->place.base;
    const std::string procfs = pages->place.proc.root();
    int master = -1;
    winsize ws{};
    ws.ws_row = 24;
    ws.ws_col = 120;
    const pid_t pid = forkpty(&master, nullptr, nullptr, &ws);
    REQUIRE(pid >= 0);
    if (pid == 0) {
        execl(exe.c_str(), exe.c_str(), "--watch", "0.2", "--stats-dir", stats_dir.c_str(),
              "--path.procfs", procfs.c_str(), static_cast<char*>(nullptr));
        _exit(127);
    }
    std::string seen;
    bool interrupted = false;
    const auto frames = [&] {
        size_t n = 0;
        for (size_t pos = 0; (pos = seen.find("\x1b[H\x1b[2J", pos)) != std::string::npos; ++pos)
            ++n;
        return n;
    };
    // Wait for two frames, then type Ctrl-C; read until the terminal closes (EIO) or 10 s pass.
    for (int i = 0; i < 1000; ++i) {
        pollfd pfd{master, POLLIN, 0};
        if (poll(&pfd, 1, 10) == 1) {
            char buf[4096];
            const ssize_t n = read(master, buf, sizeof buf);
            if (n <= 0)
                break;
            seen.append(buf, static_cast<size_t>(n));
        }
        if (!interrupted && frames() >= 2) {
            REQUIRE(write(master, "\x03", 1) == 1); // the line discipline sends SIGINT
            interrupted = true;
        }
    }
    if (!interrupted)
        kill(pid, SIGKILL);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    close(master);
    CHECK(interrupted);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(seen.find("\x1b[?25l") != std::string::npos);     // cursor hidden while watching
    CHECK(seen.find("\x1b[H\x1b[2J") != std::string::npos); // each frame clears the screen
    const size_t shown = seen.rfind("\x1b[?25h");
    REQUIRE(shown != std::string::npos); // and shown again at the end
    CHECK(shown > seen.rfind("\x1b[H\x1b[2J"));
}

TEST_SUITE_END();
