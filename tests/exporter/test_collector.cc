// SPDX-License-Identifier: MIT
// Unit tests of the collector: histogram math, group-by summing, label hygiene, the names it
// can emit (prometheus::CheckMetricName / CheckLabelName), and robustness against whatever
// files a stats directory holds.
#include "collector.h"
#include "fixture_pages.h"
#include "proc.h"

#include <doctest/doctest.h>
#include <prometheus/check_names.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <cmath>
#include <fcntl.h>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

namespace {

using arena::stats::Process;
using arena::stats::Scan;
using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

Process make_process(int pid, const std::string& comm) {
    Process p;
    p.pid = pid;
    p.comm = comm;
    p.created_unix_ns = 1700000000000000000ull + uint64_t(pid) * 1000000000ull;
    for (uint32_t size : exptest::arena_class_sizes())
        p.classes.push_back({size, 0, 0});
    return p;
}

arena::stats::SizeClass& cls(Process& p, uint32_t size) {
    for (auto& c : p.classes)
        if (c.size == size)
            return c;
    FAIL("no class of size ", size);
    return p.classes.front();
}

const MetricFamily& family(const std::vector<MetricFamily>& fams, const std::string& name) {
    for (const MetricFamily& f : fams)
        if (f.name == name)
            return f;
    FAIL("no family ", name);
    return fams.front();
}

bool has_family(const std::vector<MetricFamily>& fams, const std::string& name) {
    for (const MetricFamily& f : fams)
        if (f.name == name)
            return true;
    return false;
}

std::string label(const ClientMetric& m, const std::string& name) {
    for (const auto& l : m.label)
        if (l.name == name)
            return l.value;
    return "<none>";
}

/// The sample of `name` whose labels include all of `want`.
const ClientMetric& sample(const std::vector<MetricFamily>& fams, const std::string& name,
                           const std::vector<std::pair<std::string, std::string>>& want) {
    const MetricFamily& f = family(fams, name);
    for (const ClientMetric& m : f.metric) {
        bool ok = true;
        for (const auto& [k, v] : want)
            ok = ok && label(m, k) == v;
        if (ok)
            return m;
    }
    FAIL("no sample of ", name, " with the wanted labels");
    return f.metric.front();
}

double value(const MetricFamily& f, const ClientMetric& m) {
    return f.type == MetricType::Counter ? m.counter.value : m.gauge.value;
}

double value(const std::vector<MetricFamily>& fams, const std::string& name,
             const std::vector<std::pair<std::string, std::string>>& want) {
    return value(family(fams, name), sample(fams, name, want));
}

bool valid_utf8(const std::string& s) {
    for (size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        const size_t len = c < 0x80             ? 1
                           : (c & 0xe0) == 0xc0 ? 2
                           : (c & 0xf0) == 0xe0 ? 3
                           : (c & 0xf8) == 0xf0 ? 4
                                                : 0;
        if (len == 0 || i + len > s.size())
            return false;
        for (size_t k = 1; k < len; ++k)
            if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80)
                return false;
        i += len;
    }
    return true;
}

} // namespace

TEST_SUITE_BEGIN("exporter");

TEST_CASE("histogram: cumulative power-of-two buckets from the size classes") {
    Scan scan;
    Process p = make_process(10, "h");
    cls(p, 16).allocs = 10;
    cls(p, 32).allocs = 5;
    cls(p, 48).allocs = 3; // in (32, 64]
    cls(p, 64).allocs = 2;
    cls(p, 160).allocs = 1;  // in (128, 256]
    cls(p, 1280).allocs = 7; // in (1024, 2048]
    cls(p, 32768).allocs = 4;
    cls(p, 32768).frees = 4; // frees do not change the allocation histogram
    p.events[ARENA_EV_large_allocs] = 6;
    p.events[ARENA_EV_bytes_requested] = 123456;
    scan.processes.push_back(p);

    const auto fams = exporter::process_families(scan, exporter::GroupBy::Pid);
    const MetricFamily& f = family(fams, "arena_allocation_size_bytes");
    CHECK(f.type == MetricType::Histogram);
    REQUIRE(f.metric.size() == 1);
    const ClientMetric::Histogram& h = f.metric[0].histogram;
    // le: 16 32 64 128 256 512 1024 2048 4096 8192 16384 32768 +Inf
    const std::vector<uint64_t> want = {10, 15, 20, 20, 21, 21, 21, 28, 28, 28, 28, 32, 38};
    REQUIRE(h.bucket.size() == want.size());
    double bound = 16;
    for (size_t b = 0; b + 1 < want.size(); ++b, bound *= 2) {
        CAPTURE(b);
        CHECK(h.bucket[b].upper_bound == bound);
        CHECK(h.bucket[b].cumulative_count == want[b]);
    }
    CHECK(std::isinf(h.bucket.back().upper_bound));
    CHECK(h.bucket.back().cumulative_count == 38);
    CHECK(h.sample_count == 38); // 32 small + 6 large
    CHECK(h.sample_sum == 123456);

    // The serializer writes exactly one +Inf bucket, equal to _count.
    const std::string text = prometheus::TextSerializer().Serialize(fams);
    size_t n = 0;
    for (size_t pos = 0; (pos = text.find("le=\"+Inf\"", pos)) != std::string::npos; ++pos)
        ++n;
    CHECK(n == 1);
    CHECK(text.find("arena_allocation_size_bytes_bucket{comm=\"h\",pid=\"10\",le=\"+Inf\"} 38\n") !=
          std::string::npos);
    CHECK(text.find("arena_allocation_size_bytes_count{comm=\"h\",pid=\"10\"} 38\n") !=
          std::string::npos);
}

TEST_CASE("group by comm: sums per comm, oldest start time, process counts") {
    Scan scan;
    Process a1 = make_process(1, "app");
    a1.events[ARENA_EV_malloc_calls] = 100;
    a1.global.reserved_bytes = 1000;
    a1.global.double_frees = 1;
    a1.global.heaps_active = 2;
    cls(a1, 16).allocs = 10;
    cls(a1, 16).frees = 4; // live 6
    Process a2 = make_process(2, "app");
    a2.events[ARENA_EV_malloc_calls] = 50;
    a2.global.reserved_bytes = 500;
    a2.global.heaps_active = 1;
    cls(a2, 16).allocs = 3; // live 3
    cls(a2, 64).allocs = 2; // live 2
    a2.events[ARENA_EV_large_allocs] = 1;
    a2.events[ARENA_EV_large_alloc_bytes] = 8192;
    Process b = make_process(3, "other");
    b.events[ARENA_EV_malloc_calls] = 7;
    scan.processes = {a1, a2, b};

    const auto fams = exporter::process_families(scan, exporter::GroupBy::Comm);
    CHECK(value(fams, "arena_calls_total", {{"comm", "app"}, {"api", "malloc"}}) == 150);
    CHECK(value(fams, "arena_calls_total", {{"comm", "other"}, {"api", "malloc"}}) == 7);
    CHECK(value(fams, "arena_reserved_bytes", {{"comm", "app"}}) == 1500);
    CHECK(value(fams, "arena_heap_errors_total", {{"comm", "app"}, {"kind", "double_free"}}) == 1);
    CHECK(value(fams, "arena_heaps", {{"comm", "app"}, {"state", "active"}}) == 3);
    CHECK(value(fams, "arena_live_bytes", {{"comm", "app"}}) == 9 * 16 + 2 * 64 + 8192);
    CHECK(value(fams, "arena_live_blocks", {{"comm", "app"}}) == 9 + 2 + 1);
    CHECK(value(fams, "arena_size_class_live_blocks", {{"comm", "app"}, {"size", "16"}}) == 9);
    CHECK(value(fams, "arena_size_class_live_blocks", {{"comm", "app"}, {"size", "64"}}) == 2);
    CHECK(value(fams, "arena_processes", {{"comm", "app"}}) == 2);
    CHECK(value(fams, "arena_processes", {{"comm", "other"}}) == 1);
    CHECK(value(fams, "arena_process_start_time_seconds", {{"comm", "app"}}) == 1700000001.0);
    const auto& h = sample(fams, "arena_allocation_size_bytes", {{"comm", "app"}}).histogram;
    CHECK(h.sample_count == 10 + 3 + 2 + 1);
    CHECK(h.bucket[0].cumulative_count == 13); // le 16
    CHECK(h.bucket[2].cumulative_count == 15); // le 64

    // No pid label anywhere; one series per comm.
    for (const MetricFamily& f : fams)
        for (const ClientMetric& m : f.metric)
            CHECK(label(m, "pid") == "<none>");
    CHECK(family(fams, "arena_live_bytes").metric.size() == 2);
    // Classes without live blocks are left out: "other" has none at all.
    for (const ClientMetric& m : family(fams, "arena_size_class_live_blocks").metric)
        CHECK(label(m, "comm") == "app");
}

TEST_CASE("group by pid: one series per process, labels comm and pid") {
    Scan scan;
    scan.processes = {make_process(5, "x"), make_process(6, "x")};
    scan.processes[1].events[ARENA_EV_free_calls] = 9;
    const auto fams = exporter::process_families(scan, exporter::GroupBy::Pid);
    CHECK_FALSE(has_family(fams, "arena_processes"));
    CHECK(family(fams, "arena_live_bytes").metric.size() == 2);
    CHECK(value(fams, "arena_calls_total", {{"pid", "6"}, {"api", "free"}}) == 9);
    CHECK(value(fams, "arena_calls_total", {{"pid", "5"}, {"api", "free"}}) == 0);
    const ClientMetric& m = sample(fams, "arena_live_bytes", {{"pid", "5"}});
    REQUIRE(m.label.size() == 2);
    CHECK(m.label[0].name == "comm");
    CHECK(m.label[1].name == "pid");
    // Every API label value is present, zeros included.
    std::set<std::string> apis;
    for (const ClientMetric& c : family(fams, "arena_calls_total").metric)
        apis.insert(label(c, "api"));
    CHECK(apis ==
          std::set<std::string>{"malloc", "calloc", "realloc", "free", "aligned", "new", "delete"});
}

TEST_CASE("labels: a comm of any bytes becomes valid, escaped UTF-8") {
    Scan scan;
    scan.processes = {make_process(7, std::string("a\xff\xfe\"q\\\nz\xc3\xa9\xed\xa0\x80", 13))};
    const auto fams = exporter::process_families(scan, exporter::GroupBy::Pid);
    const std::string comm = label(family(fams, "arena_live_bytes").metric.at(0), "comm");
    CHECK(valid_utf8(comm));
    CHECK(comm == "a\xef\xbf\xbd\xef\xbf\xbd\"q\\\nz\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    const std::string text = prometheus::TextSerializer().Serialize(fams);
    CHECK(text.find("comm=\"a\xef\xbf\xbd\xef\xbf\xbd\\\"q\\\\\\nz") != std::string::npos);
}

TEST_CASE("names: every family, metric and label name is valid and conventional") {
    exptest::TempDir dir("names");
    const exptest::FixtureDir pages = exptest::write_fixture_pages(dir.path());
    for (const auto group_by : {exporter::GroupBy::Pid, exporter::GroupBy::Comm}) {
        CAPTURE(exporter::group_by_name(group_by));
        const exporter::ArenaCollector collector(dir.path(), group_by);
        const auto names = collector.family_names();
        std::set<std::string> known;
        for (const exporter::FamilyName& n : names) {
            CAPTURE(n.name);
            known.insert(n.name);
            CHECK(prometheus::CheckMetricName(n.name));
            for (const char* suffix : {"_bucket", "_sum", "_count"})
                CHECK(prometheus::CheckMetricName(n.name + suffix));
            for (const std::string& l : n.labels) {
                CAPTURE(l);
                CHECK(prometheus::CheckLabelName(l));
            }
            CHECK(n.name.rfind("arena_", 0) == 0);
        }
        // Everything Collect() emits is among the names, with help, conventional suffixes
        // and only the declared labels.
        const auto fams = collector.Collect();
        CHECK(fams.size() == names.size());
        for (const MetricFamily& f : fams) {
            CAPTURE(f.name);
            REQUIRE(known.count(f.name) == 1);
            CHECK(prometheus::CheckMetricName(f.name));
            REQUIRE(!f.help.empty());
            CHECK(f.help.back() == '.');
            const bool total =
                f.name.size() > 6 && f.name.compare(f.name.size() - 6, 6, "_total") == 0;
            CHECK(total == (f.type == MetricType::Counter));
            CHECK(f.type != MetricType::Untyped);
            CHECK(f.type != MetricType::Summary);
            std::vector<std::string> declared;
            for (const auto& n : names)
                if (n.name == f.name)
                    declared = n.labels;
            for (const ClientMetric& m : f.metric)
                for (const auto& l : m.label) {
                    CAPTURE(l.name);
                    CHECK(std::find(declared.begin(), declared.end(), l.name) != declared.end());
                    CHECK(valid_utf8(l.value));
                }
        }
    }
}

TEST_CASE("self families: prefix, every skip reason, stale pages counted across scrapes") {
    exptest::TempDir dir("self");
    const exptest::FixtureDir pages = exptest::write_fixture_pages(dir.path());
    const exporter::ArenaCollector collector(dir.path(), exporter::GroupBy::Pid, "cmond_arena");
    const auto first = collector.Collect();
    CHECK(value(first, "cmond_arena_pages_read", {}) == 4);
    CHECK(value(first, "cmond_arena_scrape_success", {}) == 1);
    CHECK(value(first, "cmond_arena_stale_pages_removed_total", {}) == 1);
    const MetricFamily& skipped = family(first, "cmond_arena_pages_skipped");
    CHECK(skipped.metric.size() == size_t(arena::stats::Skip::Count));
    for (size_t r = 0; r < size_t(arena::stats::Skip::Count); ++r)
        CHECK(label(skipped.metric[r], "reason") == arena::stats::skip_name(arena::stats::Skip(r)));
    CHECK(value(first, "cmond_arena_pages_skipped", {{"reason", "dead"}}) == 1);
    CHECK(value(first, "cmond_arena_pages_skipped", {{"reason", "truncated"}}) == 1);
    CHECK(value(first, "cmond_arena_pages_skipped", {{"reason", "bad_version"}}) == 1);
    CHECK(value(first, "cmond_arena_pages_skipped", {{"reason", "bad_magic"}}) == 1);
    const double duration = value(first, "cmond_arena_scrape_duration_seconds", {});
    CHECK(duration > 0);
    CHECK(duration < 5);
    for (const MetricFamily& f : first)
        CHECK(f.name.rfind("arena_exporter", 0) != 0);

    // Scans happen at scrape time: a new page shows up, the removal count stays.
    auto extra = exptest::blank_page(1010, "late");
    extra->write(dir.path(), true);
    const auto second = collector.Collect();
    CHECK(value(second, "cmond_arena_pages_read", {}) == 5);
    CHECK(value(second, "cmond_arena_stale_pages_removed_total", {}) == 1);
    CHECK(value(second, "cmond_arena_pages_skipped", {{"reason", "dead"}}) == 0);

    // A directory that cannot be read: no process series, scrape_success 0, an error.
    const exporter::ArenaCollector missing(dir / "nonexistent", exporter::GroupBy::Pid);
    const auto none = missing.Collect();
    CHECK(value(none, "arena_exporter_scrape_success", {}) == 0);
    CHECK(family(none, "arena_live_bytes").metric.empty());
    CHECK_FALSE(missing.last_error().empty());
}

TEST_CASE("robustness: no crash or hang on any file in the stats directory") {
    exptest::TempDir dir("weird");
    const std::string d = dir.path();
    REQUIRE(mkdir((dir / "2001").c_str(), 0755) == 0);          // a directory
    REQUIRE(mkfifo((dir / "2002").c_str(), 0644) == 0);         // a FIFO without a writer
    REQUIRE(symlink("/dev/zero", (dir / "2003").c_str()) == 0); // a device
    REQUIRE(exptest::write_file(dir / "2004", ""));             // empty
    {
        // Huge and sparse, with a valid-looking header claiming a matching size.
        auto page = exptest::blank_page(2005, "sparse");
        page->page().size = 1ull << 40;
        page->write(d, false);
        REQUIRE(truncate((dir / "2005").c_str(), 1ll << 30) == 0);
    }
    REQUIRE(symlink((dir / "2006").c_str(), (dir / "2006").c_str()) == 0); // a symlink loop
    REQUIRE(symlink("/nonexistent/page", (dir / "2007").c_str()) == 0);    // dangling
    {
        // A header that says more classes and shards than the layout has.
        auto page = exptest::blank_page(2008, "liar");
        page->page().nclasses = 1000;
        page->page().nshards = 100000;
        page->page().nevents = 1000;
        page->write(d, true);
        // Not ready yet.
        auto unready = exptest::blank_page(2009, "early");
        unready->page().flags = 0;
        unready->write(d, true);
        const exporter::ArenaCollector collector(d, exporter::GroupBy::Pid);
        const auto fams = collector.Collect();
        CHECK(value(fams, "arena_exporter_pages_read", {}) == 0);
        double skipped = 0;
        for (const ClientMetric& m : family(fams, "arena_exporter_pages_skipped").metric)
            skipped += m.gauge.value;
        // Every entry but the directory is a file named by a PID that was not read.
        CHECK(skipped >= 8);
        CHECK(value(fams, "arena_exporter_pages_skipped", {{"reason", "not_ready"}}) == 1);
        const std::string text = prometheus::TextSerializer().Serialize(fams);
        CHECK(text.find("arena_exporter_scrape_success 1\n") != std::string::npos);
    }
}

TEST_SUITE_END();
