// SPDX-License-Identifier: MIT
// The /arena replies and the arena_* collector over the ArenaSource seam. The source here is a
// test double with fixed snapshots: cmond itself has no source until the stats reader exists.
#include "arena_collector.h"
#include "arena_routes.h"

#include <doctest/doctest.h>
#include <prometheus/check_names.h>
#include <prometheus/text_serializer.h>

using namespace cmond;

namespace {

class FixedSource : public ArenaSource {
public:
    std::vector<ProcessStats> list() override { return processes; }
    std::optional<ProcessStats> get(pid_t pid) override {
        for (const auto& p : processes) {
            if (p.pid == pid) {
                return p;
            }
        }
        return std::nullopt;
    }
    TrimResult trim(pid_t pid) override {
        trimmed.push_back(pid);
        if (pid == 7) {
            return {TrimStatus::PermissionDenied, "owned by another user"};
        }
        if (pid == 8) {
            return {TrimStatus::Failed, "control area version mismatch"};
        }
        return get(pid) ? TrimResult{TrimStatus::Requested, ""}
                        : TrimResult{TrimStatus::NoSuchProcess, ""};
    }

    std::vector<ProcessStats> processes;
    std::vector<pid_t> trimmed;
};

ProcessStats process(pid_t pid, const std::string& comm, double live) {
    ProcessStats p;
    p.pid = pid;
    p.start_time = 1000 + static_cast<std::uint64_t>(pid);
    p.comm = comm;
    p.cmdline = comm + " --flag";
    p.counters = {
        {"bytes_live", "Bytes allocated and not yet freed.", ArenaCounter::Kind::Gauge, live},
        {"malloc_calls_total", "Calls of malloc.", ArenaCounter::Kind::Counter, 10}};
    p.histograms = {{"allocation_size_bytes", "Sizes of allocations.", {16, 256}, {3, 5, 6}, 900}};
    return p;
}

} // namespace

TEST_SUITE("arena") {

    TEST_CASE("parse_pid accepts positive decimal pids only") {
        CHECK(parse_pid("1") == 1);
        CHECK(parse_pid("4194304") == 4194304);
        for (const char* bad :
             {"", "0", "-1", "+1", "01", "1a", "a", "99999999999", "2147483648", " 1"}) {
            CAPTURE(bad);
            CHECK_FALSE(parse_pid(bad).has_value());
        }
    }

    TEST_CASE("GET /arena and /arena/<pid> replies") {
        FixedSource src;
        src.processes = {process(10, "python3", 4096), process(11, "cmond", 1024)};
        const ApiReply list = arena_list_reply(src);
        CHECK(list.code == 200);
        REQUIRE(list.data.is_array());
        REQUIRE(list.data.size() == 2);
        CHECK(list.data[0]["pid"] == 10);
        CHECK(list.data[0]["comm"] == "python3");
        CHECK(list.data[0]["counters"]["bytes_live"] == 4096.0);
        CHECK(list.data[0]["histograms"]["allocation_size_bytes"]["buckets"][2]["le"] == "+Inf");
        CHECK(list.data[0]["histograms"]["allocation_size_bytes"]["buckets"][2]["count"] == 6);

        const ApiReply one = arena_get_reply(src, "11");
        CHECK(one.code == 200);
        CHECK(one.data["cmdline"] == "cmond --flag");
        CHECK(arena_get_reply(src, "12").code == 404);
        CHECK(arena_get_reply(src, "x").code == 400);

        FixedSource empty;
        const ApiReply none = arena_list_reply(empty);
        CHECK(none.code == 200);
        CHECK(none.data == Json::array());
    }

    TEST_CASE("POST /arena/<pid>/trim maps every outcome to a status") {
        FixedSource src;
        src.processes = {process(10, "a", 1)};
        CHECK(arena_trim_reply(src, "10").code == 200);
        CHECK(arena_trim_reply(src, "10").data["pid"] == 10);
        CHECK(arena_trim_reply(src, "99").code == 404);
        CHECK(arena_trim_reply(src, "7").code == 403);
        const ApiReply failed = arena_trim_reply(src, "8");
        CHECK(failed.code == 500);
        CHECK(failed.message.find("control area version mismatch") != std::string::npos);
        CHECK(arena_trim_reply(src, "-3").code == 400);
        CHECK(src.trimmed == std::vector<pid_t>{10, 10, 99, 7, 8});
    }

    TEST_CASE("the collector makes one arena_* family per counter, labelled by pid and comm") {
        auto src = std::make_shared<FixedSource>();
        src->processes = {process(10, "python3", 4096), process(11, "cmond", 1024)};
        ArenaCollector collector(src);
        const auto families = collector.Collect();
        REQUIRE(families.size() == 3);
        for (const auto& f : families) {
            CHECK(prometheus::CheckMetricName(f.name));
            CHECK(f.metric.size() == 2);
        }
        const std::string text = prometheus::TextSerializer().Serialize(families);
        CHECK(text.find("# TYPE arena_bytes_live gauge") != std::string::npos);
        CHECK(text.find(R"(arena_bytes_live{comm="python3",pid="10"} 4096)") != std::string::npos);
        CHECK(text.find("# TYPE arena_malloc_calls_total counter") != std::string::npos);
        CHECK(
            text.find(R"(arena_allocation_size_bytes_bucket{comm="cmond",pid="11",le="256"} 5)") !=
            std::string::npos);
        CHECK(text.find(R"(arena_allocation_size_bytes_count{comm="cmond",pid="11"} 6)") !=
              std::string::npos);
    }

} // TEST_SUITE
