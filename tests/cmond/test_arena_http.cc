// SPDX-License-Identifier: MIT
// /arena and the arena_* part of /metrics over real HTTP and real stats pages, two ways:
//  - real processes and the real /proc: cmond's own page (it runs on libarena) and
//    arena_workload started under LD_PRELOAD=libarena.so, in a stats base of the test's own
//    (ARENA_STATS_DIR);
//  - pages written by hand (FakePage) whose processes live in a fake procfs (FakeProc), given
//    to cmond as its stats_dir and procfs keys (cmond's own page is off: ARENA_STATS=0).
#include "fake_page.h"
#include "http_env.h"
#include "profile_fixture.h"
#include "reader.h"

#include <sys/stat.h>
#include <thread>

using namespace cmond_test;
using namespace std::chrono_literals;

namespace {

constexpr int kFakePid = 40000001;
constexpr int kStalePid = 40000003;
constexpr int kMissingPid = 40000009;

// Env plus a stats base like the real one (mode 1777) and a fake procfs beside it.
struct ArenaEnv : Env {
    std::string stats = dir.file("stats");
    testing::FakeProc proc{dir.file("proc")};

    ArenaEnv() {
        ::chmod(dir.path().c_str(), 0755);
        REQUIRE(::mkdir(stats.c_str(), 01777) == 0);
        ::chmod(stats.c_str(), 01777);
    }

    /// Real processes: cmond's own page and its default stats_dir are `stats`, procfs /proc.
    Launch launch() const { return {{"ARENA_STATS_DIR=" + stats}, std::nullopt}; }

    /// Fake pages: cmond reads `stats` with the fake procfs, and has no page of its own.
    Launch fake_launch() const { return {{"ARENA_STATS=0"}, std::nullopt}; }
    std::vector<std::string> fake_args() const {
        return args({"--stats-dir", stats, "--procfs", proc.root()});
    }

    /// Writes `page` and makes its process live in the fake procfs.
    std::string add_live(const testing::FakePage& page, uid_t uid = ::geteuid()) {
        const arena_stats_head& h = page.page().head;
        proc.add(h.pid, h.start_time, h.comm, uid);
        return page.write(stats);
    }
    /// The same, with `profile` after the page.
    std::string add_live(const testing::FakePage& page, const testing::Region& profile) {
        add_live(page);
        return profile.write(page, stats);
    }

    arena::client::ScanOptions fake_options() const {
        arena::client::ScanOptions o;
        o.procfs = proc.root();
        return o;
    }

    /// arena_workload under LD_PRELOAD=libarena.so, writing its page into `stats`.
    std::unique_ptr<Process> workload(const std::vector<std::string>& args,
                                      std::vector<std::string> extra_env = {}) const {
        std::vector<std::string> argv = {required_env("ARENA_WORKLOAD")};
        argv.insert(argv.end(), args.begin(), args.end());
        extra_env.push_back("LD_PRELOAD=" + required_env("ARENA_LIB"));
        extra_env.push_back("ARENA_STATS_DIR=" + stats);
        return std::make_unique<Process>(argv, extra_env, dir.file("workload.err"));
    }

    /// Where a real process's page is: <stats>/<uid>/<pid>.
    std::string page_path(long pid) const {
        return stats + "/" + std::to_string(::geteuid()) + "/" + std::to_string(pid);
    }
};

// Sanitizer builds: cmond is not linked with libarena, and the instrumented libarena.so cannot
// be preloaded (the sanitizer runtime must come first and owns malloc). The cases that need
// either are in the test suite "arena-http-libarena": tests/cmond/meson.build excludes it from
// such a build's run and registers it as a skip (exit 77), so that it is never counted as a
// pass. Run there anyway, they fail with this message.
bool sanitized() {
    return required_env("CMOND_SANITIZE") != "none";
}

#define REQUIRE_LIBARENA()                                                                         \
    REQUIRE_MESSAGE(!sanitized(), "sanitizer build: no libarena to run on or preload; run with "   \
                                  "--test-suite-exclude=arena-http-libarena")

const auto kNeedsLibarena = doctest::test_suite("arena-http-libarena");

// A fake page with known counters: 3 live 16-byte blocks and one 8 KiB large block.
void fill(testing::FakePage& page, const char* comm) {
    arena_stats_page& p = page.page();
    std::snprintf(p.head.comm, sizeof p.head.comm, "%s", comm);
    p.shards[1].events[ARENA_EV_malloc_calls] = 15;
    p.shards[1].events[ARENA_EV_large_allocs] = 1;
    p.shards[1].events[ARENA_EV_large_alloc_bytes] = 8192;
    p.shards[1].class_alloc[0] = 5;
    p.shards[1].class_free[0] = 2;
    p.head.global.gauges[ARENA_G_trims] = 4;
}

const json* find_pid(const json& list, long pid) {
    for (const auto& p : list) {
        if (p["pid"] == pid) {
            return &p;
        }
    }
    return nullptr;
}

std::string series(const std::string& family, const std::string& comm, long pid) {
    return family + "{comm=\"" + comm + "\",pid=\"" + std::to_string(pid) + "\"}";
}

} // namespace

TEST_SUITE("arena-http") {

    TEST_CASE("cmond runs on libarena: its own page is in /arena and /metrics, and it trims" *
              kNeedsLibarena) {
        REQUIRE_LIBARENA();
        ArenaEnv env;
        Daemon d(env.dir, env.args(), env.launch());
        REQUIRE_MESSAGE(d.started(), d.err());
        auto cli = client(d);
        const json list = body_of(cli.Get("/arena", env.auth()));
        CHECK(list["code"] == 200);
        CHECK(list["stats_dir"] == env.stats);
        const json* self = find_pid(list["data"], d.pid());
        REQUIRE_MESSAGE(self != nullptr, list.dump());
        CHECK((*self)["comm"] == "cmond");
        CHECK((*self)["uid"] == ::geteuid());
        CHECK((*self)["cmdline"].get<std::string>().find("--config") != std::string::npos);
        CHECK((*self)["events"]["malloc_calls"].get<long>() > 0);
        CHECK((*self)["events"]["new_calls"].get<long>() > 0);
        CHECK((*self)["live_bytes"].get<long>() > 0);
        CHECK((*self)["gauges"]["reserved_bytes"].get<long>() > 0);

        const std::string path = "/arena/" + std::to_string(d.pid());
        const json one = body_of(cli.Get(path.c_str(), env.auth()));
        CHECK(one["code"] == 200);
        CHECK(one["data"]["path"] == env.page_path(d.pid()));
        CHECK(one["data"]["size_classes"].size() > 0);
        CHECK(one["data"]["control"]["trim_pending"] == false);

        const std::string text = metrics_text(d, env);
        CHECK(sample(text, series("arena_live_bytes", "cmond", d.pid())) > 0);
        CHECK(sample(text, "arena_calls_total{comm=\"cmond\",pid=\"" + std::to_string(d.pid()) +
                               "\",api=\"malloc\"}") > 0);
        CHECK(sample(text, "cmond_arena_scrape_success") == 1);
        CHECK(sample(text, "cmond_arena_pages_read") == 1);

        // Its own page belongs to its own user: that one it may ask to trim.
        auto own = cli.Post((path + "/trim").c_str(), env.auth(), "", "text/plain");
        REQUIRE(own);
        CHECK(own->status == 202);
    }

    TEST_CASE("/arena lists a preloaded workload; /arena/<pid> shows it until it exits" *
              kNeedsLibarena) {
        REQUIRE_LIBARENA();
        ArenaEnv env;
        Daemon d(env.dir, env.args(), env.launch());
        REQUIRE_MESSAGE(d.started(), d.err());
        auto work = env.workload({"500", "8"});
        const std::string ready = work->read_line();
        REQUIRE_MESSAGE(ready == "ready " + std::to_string(work->pid()),
                        testing::read_file(env.dir.file("workload.err")));
        auto cli = client(d);

        const json list = body_of(cli.Get("/arena", env.auth()));
        CHECK(list["code"] == 200);
        CHECK(list["data"].size() == 2U); // cmond and the workload
        for (std::size_t i = 1; i < list["data"].size(); ++i) {
            CHECK(list["data"][i - 1]["pid"] < list["data"][i]["pid"]);
        }
        const json* w = find_pid(list["data"], work->pid());
        REQUIRE_MESSAGE(w != nullptr, list.dump());
        CHECK((*w)["comm"] == "arena_workload");
        CHECK((*w)["live_bytes"].get<long>() >= 500 * 1000);
        CHECK((*w)["events"]["malloc_calls"].get<long>() >= 500);
        CHECK((*w)["gauges"]["double_frees"] == 0);

        const std::string path = "/arena/" + std::to_string(work->pid());
        const json one = body_of(cli.Get(path.c_str(), env.auth()));
        CHECK(one["code"] == 200);
        CHECK(one["message"] == "Arena process");
        const json& detail = one["data"];
        CHECK(detail["path"] == env.page_path(work->pid()));
        CHECK(detail["events"]["malloc_calls"].get<long>() >= 500);
        bool found_class = false;
        for (const auto& c : detail["size_classes"]) {
            if (c["size"] == 1024) {
                found_class = true;
                CHECK(c["live_blocks"].get<long>() >= 500);
                CHECK(c["live_bytes"] == c["live_blocks"].get<long>() * 1024);
            }
        }
        CHECK(found_class);
        CHECK(detail["gauges"]["reserved_bytes"].get<long>() > 0);
        CHECK(detail["control"].contains("trims_served"));

        // A process that exits removes its page: then it is gone from /arena too.
        REQUIRE(work->finish() == 0);
        auto gone = cli.Get(path.c_str(), env.auth());
        REQUIRE(gone);
        CHECK(gone->status == 404);
        CHECK(find_pid(body_of(cli.Get("/arena", env.auth()))["data"], work->pid()) == nullptr);
    }

    TEST_CASE("/arena and /arena/<pid> over fake pages, with the procfs key") {
        ArenaEnv env;
        testing::FakePage fake(kFakePid);
        fill(fake, "server");
        env.add_live(fake);
        Daemon d(env.dir, env.fake_args(), env.fake_launch());
        REQUIRE_MESSAGE(d.started(), d.err());
        auto cli = client(d);

        const json list = body_of(cli.Get("/arena", env.auth()));
        CHECK(list["code"] == 200);
        REQUIRE(list["data"].size() == 1U);
        const json& f = list["data"][0];
        CHECK(f["pid"] == kFakePid);
        CHECK(f["comm"] == "server");
        CHECK(f["live_bytes"] == 3 * 16 + 8192);
        CHECK(f["events"]["malloc_calls"] == 15);

        const json one =
            body_of(cli.Get(("/arena/" + std::to_string(kFakePid)).c_str(), env.auth()));
        CHECK(one["code"] == 200);
        CHECK(one["data"]["path"] ==
              testing::FakePage::user_dir(env.stats) + "/" + std::to_string(kFakePid));
        CHECK(one["data"]["gauges"]["trims"] == 4);
        CHECK(one["data"]["allocs_per_second"].is_null());

        // Its process exits (in the fake procfs): the page is stale, removed by the next scan.
        env.proc.remove(kFakePid);
        auto gone = cli.Get(("/arena/" + std::to_string(kFakePid)).c_str(), env.auth());
        REQUIRE(gone);
        CHECK(gone->status == 404);
        CHECK(body_of(cli.Get("/arena", env.auth()))["data"].empty());
    }

    TEST_CASE("POST /arena/<pid>/trim reaches a preloaded process through its control area" *
              kNeedsLibarena) {
        REQUIRE_LIBARENA();
        ArenaEnv env;
        Daemon d(env.dir, env.args(), env.launch());
        REQUIRE_MESSAGE(d.started(), d.err());
        // Freed memory stays committed (purge delay -1) until someone asks for a trim.
        auto work = env.workload({"100", "32"}, {"ARENA_PURGE_DELAY_MS=-1"});
        REQUIRE(work->read_line() == "ready " + std::to_string(work->pid()));
        auto cli = client(d);
        const std::string path = "/arena/" + std::to_string(work->pid());
        const json before = body_of(cli.Get(path.c_str(), env.auth()))["data"];
        CHECK(before["control"]["trim_pending"] == false);
        CHECK(before["gauges"]["purge_delay_ms"] == -1);

        auto r = cli.Post((path + "/trim").c_str(), env.auth(), "", "text/plain");
        REQUIRE(r);
        CHECK(r->status == 202);
        const json trim = json::parse(r->body);
        CHECK(trim["status"] == "ok");
        CHECK(trim["code"] == 202);
        CHECK(trim["data"]["pid"] == work->pid());
        CHECK(trim["data"]["trim_requests"] == before["control"]["trim_requests"].get<long>() + 1);

        // The workload's next slow path serves it: trims_served catches up, trims grows, and
        // the memory it held goes back to the kernel.
        json after;
        CHECK(testing::eventually(
            [&] {
                after = body_of(cli.Get(path.c_str(), env.auth()))["data"];
                return after["control"]["trims_served"] == after["control"]["trim_requests"] &&
                       after["gauges"]["trims"].get<long>() > before["gauges"]["trims"].get<long>();
            },
            10s));
        CHECK(after["control"]["trim_pending"] == false);
        CHECK(testing::eventually(
            [&] {
                after = body_of(cli.Get(path.c_str(), env.auth()))["data"];
                return after["gauges"]["purged_bytes"].get<long>() >=
                       before["gauges"]["purged_bytes"].get<long>() + (16 << 20);
            },
            10s));
        CHECK(sample(metrics_text(d, env),
                     series("arena_trims_total", "arena_workload", work->pid())) >= 1);
        CHECK(work->finish() == 0);
    }

    TEST_CASE("/arena errors over HTTP: 400, 404, 409, 405, and a POST without a body") {
        ArenaEnv env;
        testing::FakePage stale(kStalePid);
        env.add_live(stale);
        env.proc.add(kStalePid, 99999, "other"); // the pid now belongs to another process
        testing::FakePage fake(kFakePid);
        env.add_live(fake);
        Daemon d(env.dir, env.fake_args(), env.fake_launch());
        REQUIRE_MESSAGE(d.started(), d.err());
        auto cli = client(d);

        // Stale before anything scans (a scan removes stale pages).
        auto conflict = cli.Post(("/arena/" + std::to_string(kStalePid) + "/trim").c_str(),
                                 env.auth(), "", "text/plain");
        REQUIRE(conflict);
        CHECK(conflict->status == 409);
        const json c = json::parse(conflict->body);
        CHECK(c["status"] == "error");
        CHECK(c["code"] == 409);
        CHECK(c["message"].get<std::string>().find("is stale") != std::string::npos);
        CHECK(c["data"].is_null());

        for (const char* bad : {"/arena/abc", "/arena/0", "/arena/-5", "/arena/007",
                                "/arena/99999999999", "/arena/%2e%2e"}) {
            CAPTURE(bad);
            auto r = cli.Get(bad, env.auth());
            REQUIRE(r);
            CHECK(r->status == 400);
            CHECK(json::parse(r->body)["message"] ==
                  "Invalid pid: expected a positive decimal integer");
            auto t = cli.Post((std::string(bad) + "/trim").c_str(), env.auth(), "", "text/plain");
            REQUIRE(t);
            CHECK(t->status == 400);
        }
        const std::string missing = "/arena/" + std::to_string(kMissingPid);
        const std::string not_found =
            "No stats page for pid " + std::to_string(kMissingPid) + " in " + env.stats;
        auto get_missing = cli.Get(missing.c_str(), env.auth());
        REQUIRE(get_missing);
        CHECK(get_missing->status == 404);
        CHECK(json::parse(get_missing->body)["message"] == not_found + ": no such process");
        auto trim_missing = cli.Post((missing + "/trim").c_str(), env.auth(), "", "text/plain");
        REQUIRE(trim_missing);
        CHECK(trim_missing->status == 404);
        CHECK(json::parse(trim_missing->body)["message"].get<std::string>().find(not_found) == 0);
        auto query = cli.Get("/arena?pid=1", env.auth());
        REQUIRE(query);
        CHECK(query->status == 400);

        auto wrong = cli.Get(("/arena/" + std::to_string(kFakePid) + "/trim").c_str(), env.auth());
        REQUIRE(wrong);
        CHECK(wrong->status == 405);
        CHECK(wrong->get_header_value("Allow") == "POST");
        auto del = cli.Delete("/arena", env.auth());
        REQUIRE(del);
        CHECK(del->status == 405);
        CHECK(del->get_header_value("Allow") == "GET");

        // `curl -X POST URL` sends neither Content-Length nor a body: answered at once, not
        // after the read timeout.
        const auto t0 = std::chrono::steady_clock::now();
        const std::string out =
            raw_request(d.port(), "POST /arena/" + std::to_string(kFakePid) +
                                      "/trim HTTP/1.1\r\nHost: x\r\naccess_token: " + env.key +
                                      "\r\nConnection: close\r\n\r\n");
        CHECK(out.rfind("HTTP/1.1 202", 0) == 0);
        CHECK(std::chrono::steady_clock::now() - t0 < 1500ms);
        // The stale page was removed by the list scan; the fake one got the request.
        const json list = body_of(cli.Get("/arena", env.auth()));
        CHECK(find_pid(list["data"], kStalePid) == nullptr);
        REQUIRE(find_pid(list["data"], kFakePid) != nullptr);
        CHECK(body_of(cli.Get(("/arena/" + std::to_string(kFakePid)).c_str(),
                              env.auth()))["data"]["control"]["trim_requests"] == 1);
    }

    TEST_CASE("POST /arena/<pid>/trim: 403 for another user's page") {
        ArenaEnv env;
        testing::FakePage fake(kFakePid);
        const std::string fake_path = env.add_live(fake); // this user's, mode 0600
        Launch launch = env.fake_launch();
        const bool root = ::geteuid() == 0;
        if (root) {
            // The daemon runs as "nobody", as under its systemd unit; the page and its private
            // directory stay root's.
            const auto user = cmond_test::nobody();
            REQUIRE(cmond_test::chown_tree(env.dir.path(), user.first, user.second));
            REQUIRE(::lchown(testing::FakePage::user_dir(env.stats).c_str(), 0, 0) == 0);
            REQUIRE(::lchown(fake_path.c_str(), 0, 0) == 0);
            launch.run_as = user;
        } else {
            ::chmod(fake_path.c_str(), 0400); // a page this user may not write stands in
        }
        Daemon d(env.dir, env.fake_args(), launch);
        REQUIRE_MESSAGE(d.started(), d.err());
        auto cli = client(d);
        auto r = cli.Post(("/arena/" + std::to_string(kFakePid) + "/trim").c_str(), env.auth(), "",
                          "text/plain");
        REQUIRE(r);
        CHECK(r->status == 403);
        const json j = json::parse(r->body);
        CHECK(j["message"].get<std::string>().find("Not allowed to write the control area of "
                                                   "pid " +
                                                   std::to_string(kFakePid)) == 0);
        arena::client::Skip why{};
        const auto page = arena::client::read_pid(env.stats, kFakePid, env.fake_options(), &why);
        REQUIRE(page);
        CHECK(page->control().trim_requests == 0);
    }

    TEST_CASE("/metrics with the arena families passes promtool check metrics") {
        ArenaEnv env;
        testing::FakePage fake(kFakePid);
        fill(fake, "server");
        env.add_live(fake);
        testing::FakePage odd(kFakePid + 1);
        std::snprintf(odd.page().head.comm, sizeof odd.page().head.comm, "a\"b\\c\xff\n");
        env.add_live(odd);
        Daemon d(env.dir, env.fake_args(), env.fake_launch());
        REQUIRE_MESSAGE(d.started(), d.err());
        const std::string text = metrics_text(d, env);
        CHECK(text.find("# TYPE arena_live_bytes gauge") != std::string::npos);
        CHECK(text.find("# TYPE arena_allocation_size_bytes histogram") != std::string::npos);
        CHECK(sample(text, series("arena_live_bytes", "server", kFakePid)) == 3 * 16 + 8192);
        CHECK(sample(text, series("arena_trims_total", "server", kFakePid)) == 4);
        CHECK(sample(text, "cmond_arena_scrape_success") == 1);
        CHECK(sample(text, "cmond_arena_scrape_truncated") == 0);
        CHECK(sample(text, "cmond_arena_pages_read") == 2);
        CHECK(text.find("cmond_arena_build_info{version=") != std::string::npos);
        CHECK(text.find("arena_exporter_") == std::string::npos); // cmond's own prefix
        const std::string file = env.dir.write("metrics.txt", text);
        const std::string out_file = env.dir.file("promtool.out");
        const int rc =
            std::system(("promtool check metrics < " + file + " > " + out_file + " 2>&1").c_str());
        const std::string out = testing::read_file(out_file);
        CHECK_MESSAGE(rc == 0, out);
        CHECK_MESSAGE(out.empty(), out);
    }

    TEST_CASE("/arena/<pid>/profile over HTTP: the key first; GET in three formats, POST writes "
              "the control area") {
        namespace prof = arena::client::profile;
        ArenaEnv env;
        testing::FakePage fake(kFakePid);
        fill(fake, "server");
        REQUIRE(!env.add_live(fake, testing::sample_region()).empty());
        testing::FakePage never(kFakePid + 1); // a page, and no profile region after it
        env.add_live(never);
        Daemon d(env.dir, env.fake_args(), env.fake_launch());
        REQUIRE_MESSAGE(d.started(), d.err());
        auto cli = client(d);
        const std::string path = "/arena/" + std::to_string(kFakePid) + "/profile";
        const auto control = [&] {
            arena::client::Skip why{};
            const auto page =
                arena::client::read_pid(env.stats, kFakePid, env.fake_options(), &why);
            REQUIRE(page);
            return page->control();
        };

        // Without the key (or with a wrong one): 401 and nothing else, nothing written.
        std::string wrong = env.key;
        wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
        for (const httplib::Headers& headers :
             {httplib::Headers{}, httplib::Headers{{"access_token", wrong}}}) {
            for (const std::string& target :
                 std::vector<std::string>{path, path + "?format=pprof", path + "?format=x"}) {
                CAPTURE(target);
                auto r = cli.Get(target.c_str(), headers);
                REQUIRE(r);
                CHECK(r->status == 401);
                CHECK(r->body == kAuthError);
            }
            for (const std::string& target :
                 std::vector<std::string>{path + "?state=on", path + "?state=on&rate=1",
                                          path + "?state=off", path + "?state=bad"}) {
                CAPTURE(target);
                auto r = cli.Post(target.c_str(), headers, "", "text/plain");
                REQUIRE(r);
                CHECK(r->status == 401);
                CHECK(r->body == kAuthError);
            }
        }
        CHECK(control().profile_requests == 0);
        CHECK(control().profile_rate == 0);

        // GET: the profile library's JSON, frames unresolved (the fake procfs is not cmond's).
        const prof::Profile p = cmond_test::read_profile(env.stats, kFakePid, env.fake_options());
        auto got = cli.Get(path.c_str(), env.auth());
        REQUIRE(got);
        CHECK(got->status == 200);
        CHECK(got->get_header_value("Content-Type") == "application/json");
        const json j = json::parse(got->body);
        CHECK(j["status"] == "ok");
        CHECK(j["message"] == "Heap profile");
        CHECK(j["data"] == json::parse(prof::to_json(p, nullptr)));
        CHECK(j["symbolized"] == false);
        CHECK(j["symbolize_error"].is_string());
        auto pprof = cli.Get((path + "?format=pprof").c_str(), env.auth());
        REQUIRE(pprof);
        CHECK(pprof->status == 200);
        CHECK(pprof->get_header_value("Content-Type") == "application/octet-stream");
        CHECK(pprof->body == prof::to_pprof(p, nullptr));
        auto folded = cli.Get((path + "?format=folded").c_str(), env.auth());
        REQUIRE(folded);
        CHECK(folded->status == 200);
        CHECK(folded->get_header_value("Content-Type") == "text/plain; charset=utf-8");
        CHECK(folded->body == prof::to_folded(p, nullptr, prof::Order::LiveBytes));

        // GET errors: a bad format or parameter, a bad pid, no profile yet.
        for (const std::string& target : std::vector<std::string>{
                 path + "?format=xml", path + "?format=", path + "?state=on",
                 path + "?format=json&format=json", "/arena/abc/profile", "/arena/0/profile"}) {
            CAPTURE(target);
            auto r = cli.Get(target.c_str(), env.auth());
            REQUIRE(r);
            CHECK(r->status == 400);
            CHECK(json::parse(r->body)["status"] == "error");
        }
        const std::string never_pid = std::to_string(kFakePid + 1);
        auto none = cli.Get(("/arena/" + never_pid + "/profile").c_str(), env.auth());
        REQUIRE(none);
        CHECK(none->status == 404);
        CHECK(json::parse(none->body)["message"] ==
              "No heap profile for pid " + never_pid +
                  ": profiling was never turned on; POST /arena/" + never_pid +
                  "/profile?state=on");
        auto missing =
            cli.Get(("/arena/" + std::to_string(kMissingPid) + "/profile").c_str(), env.auth());
        REQUIRE(missing);
        CHECK(missing->status == 404);

        // POST: the control area gets the rate, then the request.
        auto on = cli.Post((path + "?state=on&rate=4096").c_str(), env.auth(), "", "text/plain");
        REQUIRE(on);
        CHECK(on->status == 202);
        const json accepted = json::parse(on->body);
        CHECK(accepted["status"] == "ok");
        CHECK(accepted["code"] == 202);
        CHECK(accepted["data"] == json{{"pid", kFakePid},
                                       {"profile_rate", 4096},
                                       {"profile_requests", 1},
                                       {"profile_served", 0}});
        CHECK(control().profile_rate == 4096);
        CHECK(control().profile_requests == 1);
        auto dflt = cli.Post((path + "?rate=1&state=on").c_str(), env.auth(), "", "text/plain");
        REQUIRE(dflt);
        CHECK(dflt->status == 202);
        CHECK(control().profile_rate == 1);
        auto off = cli.Post((path + "?state=off").c_str(), env.auth(), "", "text/plain");
        REQUIRE(off);
        CHECK(off->status == 202);
        CHECK(json::parse(off->body)["data"]["profile_rate"] == 0);
        CHECK(control().profile_rate == 0);
        CHECK(control().profile_requests == 3);

        // POST errors write nothing.
        for (const std::string& target : std::vector<std::string>{
                 path, path + "?state=on&rate=0", path + "?state=on&rate=1099511627777",
                 path + "?state=on&state=off", path + "?state=off&rate=4096", path + "?state=On",
                 path + "?state=on&format=json", "/arena/abc/profile?state=on"}) {
            CAPTURE(target);
            auto r = cli.Post(target.c_str(), env.auth(), "", "text/plain");
            REQUIRE(r);
            CHECK(r->status == 400);
        }
        CHECK(control().profile_requests == 3);
        auto post_missing =
            cli.Post(("/arena/" + std::to_string(kMissingPid) + "/profile?state=on").c_str(),
                     env.auth(), "", "text/plain");
        REQUIRE(post_missing);
        CHECK(post_missing->status == 404);

        // Both methods on one path: anything else is a 405 naming them.
        auto put = cli.Put(path.c_str(), env.auth(), "", "text/plain");
        REQUIRE(put);
        CHECK(put->status == 405);
        CHECK(put->get_header_value("Allow") == "GET, POST");

        // The request metrics have one route label for every pid.
        CHECK(sample(metrics_text(d, env),
                     R"(cmond_http_requests_total{code="202",route="/arena/:pid/profile"})") == 3);
    }

    TEST_CASE("/arena/<pid>/profile of a preloaded workload: its call sites by name, and off" *
              kNeedsLibarena) {
        REQUIRE_LIBARENA();
        ArenaEnv env;
        Daemon d(env.dir, env.args(), env.launch());
        REQUIRE_MESSAGE(d.started(), d.err());
        // Every allocation sampled from the start: main's 500 live blocks of 1000 bytes exactly.
        auto work = env.workload({"500", "0"}, {"ARENA_PROFILE=1", "ARENA_PROFILE_RATE=1"});
        REQUIRE(work->read_line() == "ready " + std::to_string(work->pid()));
        auto cli = client(d);
        const std::string path = "/arena/" + std::to_string(work->pid()) + "/profile";

        const json got = body_of(cli.Get(path.c_str(), env.auth()));
        REQUIRE_MESSAGE(got["code"] == 200, got.dump());
        CHECK_MESSAGE(got["symbolized"] == true, got.dump()); // this user's process, /proc
        const json& p = got["data"];
        CHECK(p["pid"] == work->pid());
        CHECK(p["comm"] == "arena_workload");
        CHECK(p["on"] == true);
        CHECK(p["rate"] == 1);
        REQUIRE(!p["stacks"].empty());
        const json& top = p["stacks"][0];
        CHECK(top["live_bytes"] == 500 * 1000);
        REQUIRE(!top["frames"].empty());
        CHECK(top["frames"][0]["function"] == "main");
        CHECK(top["frames"][0]["module"].get<std::string>().find("arena_workload") !=
              std::string::npos);
        auto folded = cli.Get((path + "?format=folded").c_str(), env.auth());
        REQUIRE(folded);
        CHECK(folded->status == 200);
        CHECK(folded->body.find(";main 500000\n") != std::string::npos);
        auto pprof = cli.Get((path + "?format=pprof").c_str(), env.auth());
        REQUIRE(pprof);
        CHECK(pprof->status == 200);
        CHECK(pprof->body.rfind("\x1f\x8b", 0) == 0);

        // Off through the control area: served on the workload's next slow path; what was
        // sampled stays readable.
        auto off = cli.Post((path + "?state=off").c_str(), env.auth(), "", "text/plain");
        REQUIRE(off);
        CHECK(off->status == 202);
        json after;
        CHECK(testing::eventually(
            [&] {
                after = body_of(cli.Get(path.c_str(), env.auth()));
                return after["data"]["on"] == false;
            },
            10s));
        CHECK(after["data"]["stacks"][0]["live_bytes"] == 500 * 1000);
        CHECK(sample(metrics_text(d, env),
                     series("arena_profiling", "arena_workload", work->pid())) == 0);
        CHECK(work->finish() == 0);
    }

    TEST_CASE("/arena/<pid>/profile: profiling started and stopped through cmond on a running "
              "process" *
              kNeedsLibarena) {
        REQUIRE_LIBARENA();
        ArenaEnv env;
        Daemon d(env.dir, env.args(), env.launch());
        REQUIRE_MESSAGE(d.started(), d.err());
        // Started without profiling; its loop allocates and frees 64 KiB every 10 ms.
        auto work = env.workload({"10", "0"});
        REQUIRE(work->read_line() == "ready " + std::to_string(work->pid()));
        auto cli = client(d);
        const std::string path = "/arena/" + std::to_string(work->pid()) + "/profile";
        auto never = cli.Get(path.c_str(), env.auth());
        REQUIRE(never);
        CHECK(never->status == 404);

        auto on = cli.Post((path + "?state=on&rate=1").c_str(), env.auth(), "", "text/plain");
        REQUIRE(on);
        CHECK(on->status == 202);
        json p;
        CHECK(testing::eventually(
            [&] {
                const json got = body_of(cli.Get(path.c_str(), env.auth()));
                p = got["data"];
                return got["code"] == 200 && p["on"] == true && p["samples"].get<long>() >= 3;
            },
            10s));
        CHECK(p["rate"] == 1);
        // The loop's blocks, sampled and freed again: allocated bytes by main, none live.
        bool found = false;
        for (const json& s : p["stacks"])
            if (!s["frames"].empty() && s["frames"][0]["function"] == "main" &&
                s["alloc_bytes"].get<long>() >= (64 << 10))
                found = s["live_bytes"].get<long>() <= (64 << 10); // one may be in flight
        CHECK_MESSAGE(found, p.dump());
        CHECK(sample(metrics_text(d, env),
                     series("arena_profiling", "arena_workload", work->pid())) == 1);

        auto off = cli.Post((path + "?state=off").c_str(), env.auth(), "", "text/plain");
        REQUIRE(off);
        CHECK(off->status == 202);
        CHECK(testing::eventually(
            [&] { return body_of(cli.Get(path.c_str(), env.auth()))["data"]["on"] == false; },
            10s));
        // Off: no more samples while the loop goes on.
        const long samples = body_of(cli.Get(path.c_str(), env.auth()))["data"]["samples"];
        std::this_thread::sleep_for(100ms);
        CHECK(body_of(cli.Get(path.c_str(), env.auth()))["data"]["samples"] == samples);
        CHECK(work->finish() == 0);
    }

} // TEST_SUITE
