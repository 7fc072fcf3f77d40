// SPDX-License-Identifier: MIT
// /arena and the arena_* part of /metrics over real HTTP and real stats pages: cmond's own page
// (it runs on libarena), pages written by hand (FakePage), and arena_workload started under
// LD_PRELOAD=libarena.so, all in a stats directory of the test's own (ARENA_STATS_DIR).
#include "fake_page.h"
#include "http_env.h"
#include "stats_reader.h"

#include <sys/stat.h>

using namespace cmond_test;
using namespace std::chrono_literals;

namespace {

constexpr int kFakePid = 40000001;
constexpr int kStalePid = 40000003;
constexpr int kMissingPid = 40000009;

// Env plus a stats directory like the real one (mode 1777), given to cmond as ARENA_STATS_DIR:
// its own page goes there, and its default stats_dir is that directory.
struct ArenaEnv : Env {
    std::string stats = dir.file("stats");

    ArenaEnv() {
        ::chmod(dir.path().c_str(), 0755);
        REQUIRE(::mkdir(stats.c_str(), 01777) == 0);
        ::chmod(stats.c_str(), 01777);
    }

    Launch launch() const { return {{"ARENA_STATS_DIR=" + stats}, std::nullopt}; }

    /// arena_workload under LD_PRELOAD=libarena.so, writing its page into `stats`.
    std::unique_ptr<Process> workload(const std::vector<std::string>& args,
                                      std::vector<std::string> extra_env = {}) const {
        std::vector<std::string> argv = {required_env("ARENA_WORKLOAD")};
        argv.insert(argv.end(), args.begin(), args.end());
        extra_env.push_back("LD_PRELOAD=" + required_env("ARENA_LIB"));
        extra_env.push_back("ARENA_STATS_DIR=" + stats);
        return std::make_unique<Process>(argv, extra_env, dir.file("workload.err"));
    }
};

// Sanitizer builds: cmond is not linked with libarena, and the instrumented libarena.so cannot
// be preloaded (the sanitizer runtime must come first and owns malloc).
bool sanitized() {
    return required_env("CMOND_SANITIZE") != "none";
}

bool cmond_on_libarena() {
    return !sanitized();
}

#define SKIP_IN_SANITIZER_BUILDS()                                                                 \
    do {                                                                                           \
        if (sanitized()) {                                                                         \
            MESSAGE("sanitizer build: no libarena to run on or preload; skipped");                 \
            return;                                                                                \
        }                                                                                          \
    } while (false)

// A live fake page with known counters: 3 live 16-byte blocks and one 8 KiB large block.
void fill(testing::FakePage& page, const char* comm) {
    arena_stats_page& p = page.page();
    std::snprintf(p.comm, sizeof p.comm, "%s", comm);
    p.shards[1].events[ARENA_EV_malloc_calls] = 15;
    p.shards[1].events[ARENA_EV_large_allocs] = 1;
    p.shards[1].events[ARENA_EV_large_alloc_bytes] = 8192;
    p.shards[1].class_alloc[0] = 5;
    p.shards[1].class_free[0] = 2;
    p.global.trims = 4;
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

    TEST_CASE("cmond runs on libarena: its own page is in /arena and /metrics") {
        SKIP_IN_SANITIZER_BUILDS();
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
        CHECK((*self)["cmdline"].get<std::string>().find("--config") != std::string::npos);
        CHECK((*self)["calls"]["malloc"].get<long>() > 0);
        CHECK((*self)["calls"]["new"].get<long>() > 0);
        CHECK((*self)["live_bytes"].get<long>() > 0);
        CHECK((*self)["reserved_bytes"].get<long>() > 0);

        const json one =
            body_of(cli.Get(("/arena/" + std::to_string(d.pid())).c_str(), env.auth()));
        CHECK(one["code"] == 200);
        CHECK(one["data"]["size_classes"].size() > 0);
        CHECK(one["data"]["control"]["trim_pending"] == false);

        const std::string text = metrics_text(d, env);
        CHECK(sample(text, series("arena_live_bytes", "cmond", d.pid())) > 0);
        CHECK(sample(text, "arena_calls_total{comm=\"cmond\",pid=\"" + std::to_string(d.pid()) +
                               "\",api=\"malloc\"}") > 0);
        CHECK(sample(text, "cmond_arena_scrape_success") == 1);
        CHECK(sample(text, "cmond_arena_pages_read") == 1);
    }

    TEST_CASE("/arena lists fake pages and a preloaded workload; /arena/<pid> shows one") {
        SKIP_IN_SANITIZER_BUILDS();
        ArenaEnv env;
        testing::FakePage fake(kFakePid);
        fill(fake, "server");
        fake.write(env.stats);
        Daemon d(env.dir, env.args(), env.launch());
        REQUIRE_MESSAGE(d.started(), d.err());
        auto work = env.workload({"500", "8"});
        const std::string ready = work->read_line();
        REQUIRE_MESSAGE(ready == "ready " + std::to_string(work->pid()),
                        cmond_test::read_file(env.dir.file("workload.err")));
        auto cli = client(d);

        const json list = body_of(cli.Get("/arena", env.auth()));
        CHECK(list["code"] == 200);
        CHECK(list["data"].size() == (cmond_on_libarena() ? 3U : 2U));
        for (std::size_t i = 1; i < list["data"].size(); ++i) {
            CHECK(list["data"][i - 1]["pid"] < list["data"][i]["pid"]);
        }
        const json* f = find_pid(list["data"], kFakePid);
        REQUIRE(f != nullptr);
        CHECK((*f)["comm"] == "server");
        CHECK((*f)["live_bytes"] == 3 * 16 + 8192);
        CHECK((*f)["calls"]["malloc"] == 15);
        const json* w = find_pid(list["data"], work->pid());
        REQUIRE_MESSAGE(w != nullptr, list.dump());
        CHECK((*w)["comm"] == "arena_workload");
        CHECK((*w)["live_bytes"].get<long>() >= 500 * 1000);
        CHECK((*w)["calls"]["malloc"].get<long>() >= 500);
        CHECK((*w)["errors"]["double_free"] == 0);

        const std::string path = "/arena/" + std::to_string(work->pid());
        const json one = body_of(cli.Get(path.c_str(), env.auth()));
        CHECK(one["code"] == 200);
        CHECK(one["message"] == "Arena process");
        const json& detail = one["data"];
        CHECK(detail["path"] == env.stats + "/" + std::to_string(work->pid()));
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
        CHECK(detail["global"]["reserved_bytes"].get<long>() > 0);
        CHECK(detail["control"].contains("trims_served"));

        // A process that exits removes its page: then it is gone from /arena too.
        REQUIRE(work->finish() == 0);
        auto gone = cli.Get(path.c_str(), env.auth());
        REQUIRE(gone);
        CHECK(gone->status == 404);
        CHECK(find_pid(body_of(cli.Get("/arena", env.auth()))["data"], work->pid()) == nullptr);
    }

    TEST_CASE("POST /arena/<pid>/trim reaches a preloaded process through its control area") {
        SKIP_IN_SANITIZER_BUILDS();
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
        CHECK(before["global"]["purge_delay_ms"] == -1);

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
        CHECK(cmond_test::eventually(
            [&] {
                after = body_of(cli.Get(path.c_str(), env.auth()))["data"];
                return after["control"]["trims_served"] == after["control"]["trim_requests"] &&
                       after["global"]["trims"].get<long>() > before["global"]["trims"].get<long>();
            },
            10s));
        CHECK(after["control"]["trim_pending"] == false);
        CHECK(cmond_test::eventually(
            [&] {
                after = body_of(cli.Get(path.c_str(), env.auth()))["data"];
                return after["global"]["purged_bytes"].get<long>() >=
                       before["global"]["purged_bytes"].get<long>() + (16 << 20);
            },
            10s));
        CHECK(sample(metrics_text(d, env),
                     series("arena_trims_total", "arena_workload", work->pid())) >= 1);
        CHECK(work->finish() == 0);
    }

    TEST_CASE("/arena errors over HTTP: 400, 404, 409, 405, and a POST without a body") {
        ArenaEnv env;
        testing::FakePage stale(kStalePid);
        stale.write(env.stats, false); // no live writer
        testing::FakePage fake(kFakePid);
        fake.write(env.stats);
        Daemon d(env.dir, env.args(), env.launch());
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
        CHECK(json::parse(get_missing->body)["message"] == not_found);
        auto trim_missing = cli.Post((missing + "/trim").c_str(), env.auth(), "", "text/plain");
        REQUIRE(trim_missing);
        CHECK(trim_missing->status == 404);
        CHECK(json::parse(trim_missing->body)["message"] == not_found);
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

    TEST_CASE("POST /arena/<pid>/trim: 403 for another user's page, 202 for its own user's") {
        ArenaEnv env;
        testing::FakePage fake(kFakePid);
        const std::string fake_path = fake.write(env.stats); // this user's, mode 0644
        Launch launch = env.launch();
        const bool root = ::geteuid() == 0;
        if (root) {
            // The daemon runs as "nobody", as under its systemd unit; the page stays root's.
            const auto user = cmond_test::nobody();
            REQUIRE(cmond_test::chown_tree(env.dir.path(), user.first, user.second));
            REQUIRE(::lchown(fake_path.c_str(), 0, 0) == 0);
            launch.run_as = user;
        } else {
            ::chmod(fake_path.c_str(), 0444); // a page this user may not write stands in
        }
        Daemon d(env.dir, env.args(), launch);
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
        const auto page = arena::stats::read_page(fake_path);
        REQUIRE(page);
        CHECK(page->control.trim_requests == 0);

        if (cmond_on_libarena()) {
            // cmond's own page belongs to its own user: that one it may trim.
            auto own = cli.Post(("/arena/" + std::to_string(d.pid()) + "/trim").c_str(), env.auth(),
                                "", "text/plain");
            REQUIRE(own);
            CHECK(own->status == 202);
        }
    }

    TEST_CASE("/metrics with the arena families passes promtool check metrics") {
        ArenaEnv env;
        testing::FakePage fake(kFakePid);
        fill(fake, "server");
        fake.write(env.stats);
        testing::FakePage odd(kFakePid + 1);
        std::snprintf(odd.page().comm, sizeof odd.page().comm, "a\"b\\c\xff\n");
        odd.write(env.stats);
        Daemon d(env.dir, env.args(), env.launch());
        REQUIRE_MESSAGE(d.started(), d.err());
        const std::string text = metrics_text(d, env);
        CHECK(text.find("# TYPE arena_live_bytes gauge") != std::string::npos);
        CHECK(text.find("# TYPE arena_allocation_size_bytes histogram") != std::string::npos);
        CHECK(sample(text, series("arena_live_bytes", "server", kFakePid)) == 3 * 16 + 8192);
        CHECK(sample(text, series("arena_trims_total", "server", kFakePid)) == 4);
        CHECK(sample(text, "cmond_arena_scrape_success") == 1);
        CHECK(sample(text, "cmond_arena_pages_read") == (cmond_on_libarena() ? 3 : 2));
        CHECK(text.find("cmond_arena_build_info{version=") != std::string::npos);
        CHECK(text.find("arena_exporter_") == std::string::npos); // cmond's own prefix
        if (cmond_on_libarena()) {
            CHECK(sample(text, series("arena_live_bytes", "cmond", d.pid())) > 0);
        }
        const std::string file = env.dir.write("metrics.txt", text);
        const std::string out_file = env.dir.file("promtool.out");
        const int rc =
            std::system(("promtool check metrics < " + file + " > " + out_file + " 2>&1").c_str());
        const std::string out = cmond_test::read_file(out_file);
        CHECK_MESSAGE(rc == 0, out);
        CHECK_MESSAGE(out.empty(), out);
    }

} // TEST_SUITE
