// SPDX-License-Identifier: MIT
// Unit tests of the collector: histogram math, group-by summing, label hygiene, the names it
// can emit (prometheus::CheckMetricName / CheckLabelName), robustness against whatever files a
// stats directory holds, and that every field of stats_page.h's tables reaches the exposition.
#include "collector.h"
#include "fixture_pages.h"
#include "proc.h"
#include "schema.h"

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

using arena::client::GroupBy;
using arena::client::Process;
using arena::client::Scan;
using arena::client::Skip;
using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

Process make_process(int pid, const std::string& comm) {
    Process p{};
    p.pid = pid;
    p.comm = comm;
    p.snap.head.created_unix_ns = 1700000000000000000ull + uint64_t(pid) * 1000000000ull;
    const std::vector<uint32_t> sizes = exptest::arena_class_sizes();
    p.snap.head.nclasses = static_cast<uint32_t>(sizes.size());
    for (size_t c = 0; c < sizes.size(); ++c)
        p.snap.head.class_size[c] = sizes[c];
    return p;
}

/// The index of the size class of `size` bytes.
unsigned cls(const Process& p, uint32_t size) {
    for (unsigned c = 0; c < p.snap.nclasses(); ++c)
        if (p.snap.head.class_size[c] == size)
            return c;
    FAIL("no class of size ", size);
    return 0;
}

uint64_t& allocs(Process& p, uint32_t size) {
    return p.snap.class_alloc[cls(p, size)];
}

uint64_t& frees(Process& p, uint32_t size) {
    return p.snap.class_free[cls(p, size)];
}

uint64_t& event(Process& p, arena_stats_event e) {
    return p.snap.events[e];
}

uint64_t& gauge(Process& p, arena_stats_gauge g) {
    return p.snap.head.global.gauges[g];
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
    allocs(p, 16) = 10;
    allocs(p, 32) = 5;
    allocs(p, 48) = 3; // in (32, 64]
    allocs(p, 64) = 2;
    allocs(p, 160) = 1;  // in (128, 256]
    allocs(p, 1280) = 7; // in (1024, 2048]
    allocs(p, 32768) = 4;
    frees(p, 32768) = 4; // frees do not change the allocation histogram
    event(p, ARENA_EV_large_allocs) = 6;
    event(p, ARENA_EV_bytes_requested) = 123456;
    scan.processes.push_back(p);

    const auto fams = arena::client::process_families(scan, GroupBy::Pid);
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
    event(a1, ARENA_EV_malloc_calls) = 100;
    gauge(a1, ARENA_G_reserved_bytes) = 1000;
    gauge(a1, ARENA_G_double_frees) = 1;
    gauge(a1, ARENA_G_heaps_active) = 2;
    allocs(a1, 16) = 10;
    frees(a1, 16) = 4; // live 6
    Process a2 = make_process(2, "app");
    event(a2, ARENA_EV_malloc_calls) = 50;
    gauge(a2, ARENA_G_reserved_bytes) = 500;
    gauge(a2, ARENA_G_heaps_active) = 1;
    allocs(a2, 16) = 3; // live 3
    allocs(a2, 64) = 2; // live 2
    event(a2, ARENA_EV_large_allocs) = 1;
    event(a2, ARENA_EV_large_alloc_bytes) = 8192;
    Process b = make_process(3, "other");
    event(b, ARENA_EV_malloc_calls) = 7;
    scan.processes = {a1, a2, b};

    const auto fams = arena::client::process_families(scan, GroupBy::Comm);
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
    event(scan.processes[1], ARENA_EV_free_calls) = 9;
    const auto fams = arena::client::process_families(scan, GroupBy::Pid);
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
    const auto fams = arena::client::process_families(scan, GroupBy::Pid);
    const std::string comm = label(family(fams, "arena_live_bytes").metric.at(0), "comm");
    CHECK(valid_utf8(comm));
    CHECK(comm == "a\xef\xbf\xbd\xef\xbf\xbd\"q\\\nz\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    const std::string text = prometheus::TextSerializer().Serialize(fams);
    CHECK(text.find("comm=\"a\xef\xbf\xbd\xef\xbf\xbd\\\"q\\\\\\nz") != std::string::npos);
}

TEST_CASE("names: every family, metric and label name is valid and conventional") {
    testing::TempDir dir("names");
    const auto pages = exptest::write_fixture_pages(dir.path());
    for (const auto group_by : {GroupBy::Pid, GroupBy::Comm}) {
        CAPTURE(arena::client::group_by_name(group_by));
        const arena::client::ArenaCollector collector(pages->place.base, group_by,
                                                      pages->place.options());
        const auto names = collector.family_names();
        std::set<std::string> known;
        for (const arena::client::FamilyName& n : names) {
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
    testing::TempDir dir("self");
    const auto pages = exptest::write_fixture_pages(dir.path());
    exptest::Place& place = pages->place;
    const arena::client::ArenaCollector collector(place.base, GroupBy::Pid, place.options(),
                                                  "cmond_arena");
    const auto first = collector.Collect();
    CHECK(value(first, "cmond_arena_pages_read", {}) == 4);
    CHECK(value(first, "cmond_arena_scrape_success", {}) == 1);
    CHECK(value(first, "cmond_arena_scrape_truncated", {}) == 0);
    CHECK(value(first, "cmond_arena_stale_pages_removed_total", {}) == 2);
    const MetricFamily& skipped = family(first, "cmond_arena_pages_skipped");
    CHECK(skipped.metric.size() == size_t(Skip::Count));
    for (size_t r = 0; r < size_t(Skip::Count); ++r)
        CHECK(label(skipped.metric[r], "reason") == arena::client::skip_name(Skip(r)));
    for (const char* reason : {"dead", "pid_reused", "truncated", "bad_magic", "bad_version",
                               "forged", "not_ready", "foreign"}) {
        CAPTURE(reason);
        CHECK(value(first, "cmond_arena_pages_skipped", {{"reason", reason}}) == 1);
    }
    const double duration = value(first, "cmond_arena_scrape_duration_seconds", {});
    CHECK(duration > 0);
    CHECK(duration < 5);
    for (const MetricFamily& f : first)
        CHECK(f.name.rfind("arena_exporter", 0) != 0);

    // Scans happen at scrape time: a new page shows up, the removal count stays.
    place.add_live(*exptest::blank_page(1020, "late"));
    const auto second = collector.Collect();
    CHECK(value(second, "cmond_arena_pages_read", {}) == 5);
    CHECK(value(second, "cmond_arena_stale_pages_removed_total", {}) == 2);
    CHECK(value(second, "cmond_arena_pages_skipped", {{"reason", "dead"}}) == 0);

    // Its process exits: the page is stale from the next scrape on, removed and counted.
    place.proc.remove(1020);
    const auto third = collector.Collect();
    CHECK(value(third, "cmond_arena_pages_read", {}) == 4);
    CHECK(value(third, "cmond_arena_stale_pages_removed_total", {}) == 3);

    // A directory that cannot be read: no process series, scrape_success 0, an error.
    const arena::client::ArenaCollector missing(dir.file("nonexistent"), GroupBy::Pid,
                                                place.options());
    const auto none = missing.Collect();
    CHECK(value(none, "arena_exporter_scrape_success", {}) == 0);
    CHECK(family(none, "arena_live_bytes").metric.empty());
    CHECK_FALSE(missing.last_error().empty());
}

TEST_CASE("scrape_truncated: a scan ended by its cap on pages says so") {
    testing::TempDir dir("cap");
    const auto pages = exptest::write_fixture_pages(dir.path());
    arena::client::ScanOptions options = pages->place.options();
    options.max_pages = 2;
    const arena::client::ArenaCollector collector(pages->place.base, GroupBy::Pid, options);
    const auto fams = collector.Collect();
    CHECK(value(fams, "arena_exporter_pages_read", {}) == 2);
    CHECK(value(fams, "arena_exporter_scrape_truncated", {}) == 1);
    CHECK(value(fams, "arena_exporter_scrape_success", {}) == 1);
}

TEST_CASE("robustness: no crash or hang on any file in the stats directory") {
    testing::TempDir dir("weird");
    exptest::Place place(dir.path());
    // A page first, so that the base and this user's directory exist as a writer makes them.
    auto liar = exptest::blank_page(2008, "liar");
    liar->head().nclasses = 1000; // more classes, shards and events than the layout has
    liar->head().nshards = 100000;
    liar->head().nevents = 1000;
    place.add_live(*liar);
    const std::string user = testing::FakePage::user_dir(place.base);
    const auto at = [&](const char* name) { return user + "/" + name; };
    for (int pid = 2001; pid <= 2009; ++pid)
        place.proc.add(pid, 12345, "weird");
    REQUIRE(mkdir(at("2001").c_str(), 0755) == 0);          // a directory
    REQUIRE(mkfifo(at("2002").c_str(), 0600) == 0);         // a FIFO without a writer
    REQUIRE(symlink("/dev/zero", at("2003").c_str()) == 0); // a device, through a symlink
    REQUIRE(exptest::write_file(at("2004"), ""));           // empty
    {
        // Huge and sparse, with a valid head claiming a matching size.
        auto page = exptest::blank_page(2005, "sparse");
        page->head().size = 1ull << 40;
        REQUIRE(!page->write(place.base).empty());
        REQUIRE(truncate(at("2005").c_str(), 1ll << 30) == 0);
    }
    REQUIRE(symlink(at("2006").c_str(), at("2006").c_str()) == 0);         // a symlink loop
    REQUIRE(symlink("/nonexistent/page", at("2007").c_str()) == 0);        // dangling
    REQUIRE(link(place.page_path(2008).c_str(), at("2009").c_str()) == 0); // two links
    // In the base: a file where a user directory should be, and a symlink to one.
    REQUIRE(exptest::write_file(place.base + "/4242", "x"));
    REQUIRE(symlink(user.c_str(), (place.base + "/4243").c_str()) == 0);
    auto unready = exptest::blank_page(2010, "early");
    unready->head().flags = 0;
    place.add_live(*unready);

    const arena::client::ArenaCollector collector(place.base, GroupBy::Pid, place.options());
    const auto fams = collector.Collect();
    CHECK(value(fams, "arena_exporter_pages_read", {}) == 0);
    double skipped = 0;
    for (const ClientMetric& m : family(fams, "arena_exporter_pages_skipped").metric)
        skipped += m.gauge.value;
    // Every entry is skipped for some reason, and nothing stops the scan.
    CHECK(skipped >= 10);
    CHECK(value(fams, "arena_exporter_pages_skipped", {{"reason", "not_ready"}}) == 1);
    const std::string text = prometheus::TextSerializer().Serialize(fams);
    CHECK(text.find("arena_exporter_scrape_success 1\n") != std::string::npos);
}

TEST_CASE("schema: every page field of stats_page.h reaches the exposition") {
    // A page whose every event and gauge is non-zero and distinct (signed gauges negative),
    // exported by arena-exporter: a field added to the tables cannot be forgotten.
    testing::TempDir dir("fields");
    exptest::Place place(dir.path());
    testing::FakePage page(5001);
    std::snprintf(page.head().comm, sizeof page.head().comm, "full");
    for (const arena::client::Field& f : arena::client::fields()) {
        if (f.kind == arena::client::FieldKind::Event) {
            page.page().shards[1].events[f.index] = 500 + f.index; // summed over two shards
            page.page().shards[2].events[f.index] = 500;
        } else {
            const int64_t v = 100000 + f.index;
            page.head().global.gauges[f.index] = static_cast<uint64_t>(f.is_signed ? -v : v);
        }
    }
    place.add_live(page);
    std::vector<std::string> argv = {exptest::required_env("ARENA_EXPORTER"), "--once"};
    for (const std::string& a : place.args())
        argv.push_back(a);
    const exptest::RunResult r = exptest::run(argv);
    INFO("stderr: ", r.err);
    REQUIRE(r.status == 0);

    // The families named by the tables, from their own table.
    std::vector<std::string> page_families;
#define FAMILY_NAME(id, type, name, label, help)                                                   \
    if (ARENA_FAMILY_##id != ARENA_FAMILY_none)                                                    \
        page_families.push_back(name);
    ARENA_STATS_FAMILIES(FAMILY_NAME)
#undef FAMILY_NAME
    for (const std::string& name : page_families) {
        CAPTURE(name);
        CHECK(r.out.find("\n# TYPE " + name + " ") != std::string::npos);
    }
    // Every field with a family is one sample, with its label value and its value.
    std::vector<const char*> labels;
#define FAMILY_LABEL(id, type, name, label, help) labels.push_back(label);
    ARENA_STATS_FAMILIES(FAMILY_LABEL)
#undef FAMILY_LABEL
    std::vector<const char*> names;
#define FAMILY_NAME(id, type, name, label, help) names.push_back(name);
    ARENA_STATS_FAMILIES(FAMILY_NAME)
#undef FAMILY_NAME
    REQUIRE(arena::client::fields().size() == size_t{ARENA_EV_COUNT} + size_t{ARENA_G_COUNT});
    size_t exported = 0;
    for (const arena::client::Field& f : arena::client::fields()) {
        CAPTURE(f.name);
        if (f.family == ARENA_FAMILY_none)
            continue;
        std::string series = std::string(names[f.family]) + "{comm=\"full\",pid=\"5001\"";
        if (*labels[f.family] != '\0')
            series += std::string(",") + labels[f.family] + "=\"" + f.label + "\"";
        const int64_t expected = f.kind == arena::client::FieldKind::Event
                                     ? int64_t(1000 + f.index)
                                     : (f.is_signed ? -1 : 1) * int64_t(100000 + f.index);
        CHECK(r.out.find("\n" + series + "} " + std::to_string(expected) + "\n") !=
              std::string::npos);
        ++exported;
    }
    CHECK(exported > 0);
}

TEST_SUITE_END();
