// SPDX-License-Identifier: MIT
// End to end: a real Prometheus server scrapes arena-exporter while a workload runs under
// LD_PRELOAD=libarena.so, and the workload's series are read back from Prometheus's HTTP API.
//
//   arena-exporter --listen 127.0.0.1:P1 --stats-dir TMP/stats
//   prometheus --config.file TMP/prometheus.yml (scrape every 1 s) on 127.0.0.1:P2, TSDB in TMP
//   e2e_workload with LD_PRELOAD=libarena.so ARENA_STATS_DIR=TMP/stats
//
// Checks: the workload's arena_live_bytes{pid} appears, grows while the workload holds memory
// and falls once it frees; arena_calls_total{api="malloc"} never decreases; the page is gone
// after the workload exits (<stats>/<uid>/<pid>). The exporter checks processes in the real
// /proc. Every process is stopped and reaped by its guard and TMP removed,
// whatever fails. Without a prometheus binary the test exits 77 (meson: SKIP).
#include "proc.h"

#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <sys/stat.h>
#include <unistd.h>

namespace {

using exptest::required_env;
using nlohmann::json;

double wall_s() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

struct Prometheus {
    httplib::Client client;
    explicit Prometheus(int port) : client("127.0.0.1", port) {
        client.set_connection_timeout(2, 0);
        client.set_read_timeout(5, 0);
    }
    bool ready() {
        auto res = client.Get("/-/ready");
        return res && res->status == 200;
    }
    /// data.result of an API call, or a null json on any failure.
    json api(const std::string& path, const httplib::Params& params) {
        auto res = client.Get(path, params, httplib::Headers{});
        if (!res || res->status != 200)
            return nullptr;
        json j = json::parse(res->body, nullptr, false);
        if (j.is_discarded() || j.value("status", "") != "success")
            return nullptr;
        return j["data"]["result"];
    }
    /// The value of an instant query with exactly one series, or nullopt.
    std::optional<double> scalar(const std::string& query) {
        const json r = api("/api/v1/query", {{"query", query}});
        if (!r.is_array() || r.size() != 1)
            return std::nullopt;
        return std::stod(r[0]["value"][1].get<std::string>());
    }
    /// The values of a range query with one series.
    std::vector<double> range(const std::string& query, double start, double end) {
        char s[32], e[32];
        snprintf(s, sizeof s, "%.3f", start);
        snprintf(e, sizeof e, "%.3f", end);
        const json r =
            api("/api/v1/query_range", {{"query", query}, {"start", s}, {"end", e}, {"step", "1"}});
        std::vector<double> out;
        if (r.is_array() && r.size() == 1)
            for (const json& v : r[0]["values"])
                out.push_back(std::stod(v[1].get<std::string>()));
        return out;
    }
};

/// How often the e2e test asks Prometheus.
constexpr std::chrono::milliseconds kPoll{250};

} // namespace

TEST_SUITE_BEGIN("e2e");

TEST_CASE("e2e: Prometheus scrapes arena-exporter while a preloaded workload runs") {
    const char* env_prom = getenv("PROMETHEUS");
    const std::string prometheus_bin =
        env_prom != nullptr && *env_prom != '\0' ? env_prom : exptest::which("prometheus");
    if (prometheus_bin.empty()) {
        fprintf(stderr, "SKIP: no prometheus binary on PATH (apt-get install prometheus, or set "
                        "PROMETHEUS=/path/to/prometheus)\n");
        exit(77);
    }
    const std::string exporter_bin = required_env("ARENA_EXPORTER");
    const std::string workload_bin = required_env("ARENA_E2E_WORKLOAD");
    const std::string libarena = required_env("ARENA_LIB");

    testing::TempDir tmp("e2e");
    const std::string stats = tmp.file("stats");
    REQUIRE(mkdir(stats.c_str(), 01777) == 0);
    REQUIRE(mkdir(tmp.file("tsdb").c_str(), 0755) == 0);

    // Guards are declared in start order, so they stop in reverse: workload, Prometheus,
    // exporter.
    exptest::Child exporter({exporter_bin, "--listen", "127.0.0.1:0", "--stats-dir", stats}, {},
                            tmp.file("exporter.out"), tmp.file("exporter.err"));
    const int exporter_port = exptest::bound_port(exporter);
    INFO("exporter log: ", exporter.err());
    REQUIRE(exporter_port > 0);

    int prometheus_port = exptest::free_port();
    while (prometheus_port == exporter_port)
        prometheus_port = exptest::free_port();
    REQUIRE(exptest::write_file(tmp.file("prometheus.yml"), "global:\n"
                                                            "  scrape_interval: 1s\n"
                                                            "  scrape_timeout: 1s\n"
                                                            "  evaluation_interval: 1s\n"
                                                            "scrape_configs:\n"
                                                            "  - job_name: arena\n"
                                                            "    static_configs:\n"
                                                            "      - targets: ['127.0.0.1:" +
                                                                std::to_string(exporter_port) +
                                                                "']\n"));
    exptest::Child prometheus({prometheus_bin, "--config.file=" + tmp.file("prometheus.yml"),
                               "--storage.tsdb.path=" + tmp.file("tsdb"),
                               "--web.listen-address=127.0.0.1:" + std::to_string(prometheus_port),
                               "--log.level=warn"},
                              {}, tmp.file("prometheus.out"), tmp.file("prometheus.err"));
    Prometheus api(prometheus_port);
    INFO("prometheus log: ", prometheus.err());
    REQUIRE(testing::eventually([&] { return api.ready() || !prometheus.running(); },
                                std::chrono::seconds(30), kPoll));
    REQUIRE(prometheus.running());
    REQUIRE_MESSAGE(testing::eventually([&] { return api.scalar("up{job=\"arena\"}") == 1.0; },
                                        std::chrono::seconds(20), kPoll),
                    "the exporter target never came up");

    const double workload_start = wall_s();
    exptest::Child workload({workload_bin, "40", "250"},
                            {"LD_PRELOAD=" + libarena, "ARENA_STATS_DIR=" + stats},
                            tmp.file("workload.out"), tmp.file("workload.err"));
    REQUIRE(workload.started());
    INFO("workload stdout: ", workload.out(), "\nworkload stderr: ", workload.err());
    const std::string pid = std::to_string(workload.pid());
    const std::string live_q = "arena_live_bytes{job=\"arena\",pid=\"" + pid + "\"}";
    const std::string malloc_q =
        "arena_calls_total{job=\"arena\",pid=\"" + pid + "\",api=\"malloc\"}";

    REQUIRE_MESSAGE(testing::eventually([&] { return api.scalar(live_q).has_value(); },
                                        std::chrono::seconds(15), kPoll),
                    "no arena_live_bytes series for the workload (pid ", pid, ")");

    // Follow the live bytes until the workload has freed everything and a scrape saw it.
    std::vector<double> live, mallocs;
    double freed_at = 0;
    testing::eventually(
        [&] {
            if (const auto v = api.scalar(live_q))
                live.push_back(*v);
            if (const auto v = api.scalar(malloc_q))
                mallocs.push_back(*v);
            if (freed_at == 0 && workload.out().find("freed") != std::string::npos)
                freed_at = wall_s();
            exptest::sleep_s(0.75);
            // Done when a scrape after the free shows the drop, or 10 s after the free.
            const double high = live.empty() ? 0 : *std::max_element(live.begin(), live.end());
            return freed_at != 0 && (wall_s() > freed_at + 10 ||
                                     (wall_s() > freed_at + 1.5 && live.back() < high / 4));
        },
        std::chrono::seconds(40), kPoll);
    REQUIRE_MESSAGE(freed_at != 0, "the workload did not finish its steps");
    CAPTURE(live.size());
    REQUIRE(live.size() >= 6);

    // Live bytes grew while held: several rising samples and a peak well above the first.
    const double peak = *std::max_element(live.begin(), live.end());
    size_t rises = 0;
    for (size_t i = 1; i < live.size(); ++i)
        rises += live[i] > live[i - 1];
    CHECK(rises >= 3);
    CHECK(peak >= live.front() + 8.0 * 1024 * 1024);
    // ...and fell once freed.
    CHECK(live.back() < peak / 4);

    // The malloc counter only rises, in the samples and over the whole range.
    REQUIRE(mallocs.size() >= 2);
    for (size_t i = 1; i < mallocs.size(); ++i)
        CHECK(mallocs[i] >= mallocs[i - 1]);
    CHECK(mallocs.back() >= 40 * 1100); // each step makes 1108 malloc calls
    const std::vector<double> ranged = api.range(malloc_q, workload_start - 2, wall_s());
    REQUIRE(ranged.size() >= 5);
    for (size_t i = 1; i < ranged.size(); ++i)
        CHECK(ranged[i] >= ranged[i - 1]);
    CHECK(ranged.back() > ranged.front());

    // A normal exit removes the page.
    CHECK(workload.stop(SIGTERM, 10) == 0);
    struct stat st;
    CHECK(stat((stats + "/" + std::to_string(geteuid()) + "/" + pid).c_str(), &st) != 0);
}

TEST_SUITE_END();
