// SPDX-License-Identifier: MIT
// Golden-file and promtool tests of arena-exporter --once.
//
// The fixture stats directory (fixture_pages.cc, with its fake procfs as --path.procfs) is
// exported with --group-by pid and comm and
// compared with tests/fixtures/exporter-pid.prom and exporter-comm.prom after normalising what
// legitimately varies: the scrape duration sample is dropped and the build_info version is
// replaced by "VERSION". To regenerate the golden files after an intended change:
//
//     ARENA_UPDATE_GOLDEN=1 meson test -C build exporter-golden
//
// then review `git diff tests/fixtures`. The promtool cases pipe the same output through
// `promtool check metrics` and fail on any complaint.
#include "fixture_pages.h"
#include "proc.h"

#include <doctest/doctest.h>

#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace {

using exptest::required_env;

std::string exporter_once(const exptest::Place& place, const std::string& group_by) {
    std::vector<std::string> argv = {required_env("ARENA_EXPORTER"), "--once", "--group-by",
                                     group_by};
    for (const std::string& a : place.args())
        argv.push_back(a);
    const exptest::RunResult r = exptest::run(argv);
    INFO("stderr: ", r.err);
    REQUIRE(r.status == 0);
    CHECK(r.err.empty());
    return r.out;
}

/// Drops the scrape duration sample and replaces the version, the only varying parts.
std::string normalise(const std::string& text) {
    const std::string version = "version=\"" + required_env("ARENA_VERSION") + "\"";
    std::istringstream in(text);
    std::string line, out;
    bool saw_duration = false, saw_version = false;
    while (std::getline(in, line)) {
        if (line.rfind("arena_exporter_scrape_duration_seconds ", 0) == 0) {
            saw_duration = true;
            continue;
        }
        const size_t v = line.find(version);
        if (v != std::string::npos && line.rfind("arena_exporter_build_info{", 0) == 0) {
            line.replace(v, version.size(), "version=\"VERSION\"");
            saw_version = true;
        }
        out += line + "\n";
    }
    CHECK_MESSAGE(saw_duration, "no arena_exporter_scrape_duration_seconds sample");
    CHECK_MESSAGE(saw_version, "no arena_exporter_build_info with the project version");
    return out;
}

void compare_golden(const std::string& actual, const std::string& name) {
    const std::string path = required_env("ARENA_FIXTURES") + "/" + name;
    const char* update = getenv("ARENA_UPDATE_GOLDEN");
    if (update != nullptr && std::string(update) == "1") {
        REQUIRE_MESSAGE(exptest::write_file(path, actual), "cannot write ", path);
        MESSAGE("updated ", path);
        return;
    }
    const std::string expected = testing::read_file(path);
    REQUIRE_MESSAGE(!expected.empty(), path, " is missing; ARENA_UPDATE_GOLDEN=1 writes it");
    if (expected == actual)
        return;
    std::istringstream e(expected), a(actual);
    std::string el, al;
    int line = 0;
    for (;;) {
        ++line;
        const bool more_e = static_cast<bool>(std::getline(e, el));
        const bool more_a = static_cast<bool>(std::getline(a, al));
        if (!more_e && !more_a)
            break;
        if (!more_e || !more_a || el != al) {
            FAIL_CHECK(name, ":", line, " differs\n  expected: ", (more_e ? el : "<end>"),
                       "\n  actual:   ", (more_a ? al : "<end>"),
                       "\n(if the change is intended: ARENA_UPDATE_GOLDEN=1 meson test -C build "
                       "exporter-golden)\nactual output:\n",
                       actual);
            break;
        }
    }
}

bool exists(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0;
}

void promtool_check(const std::string& text) {
    const exptest::RunResult r = exptest::run({required_env("PROMTOOL"), "check", "metrics"}, text);
    INFO("promtool stdout: ", r.out, "\npromtool stderr: ", r.err);
    CHECK(r.status == 0);
    CHECK(r.out.empty());
    CHECK(r.err.empty());
}

} // namespace

TEST_SUITE_BEGIN("exporter");

TEST_CASE("golden: --group-by pid") {
    testing::TempDir dir("golden");
    const auto pages = exptest::write_fixture_pages(dir.path());
    const exptest::Place& place = pages->place;
    REQUIRE(exists(pages->stale_path));
    REQUIRE(exists(pages->reused_path));

    const std::string first = exporter_once(place, "pid");
    compare_golden(normalise(first), "exporter-pid.prom");

    // The stale pages (a dead process, a reused pid) were removed and counted; the pages
    // skipped for other reasons stay.
    CHECK_FALSE(exists(pages->stale_path));
    CHECK_FALSE(exists(pages->reused_path));
    CHECK(first.find("\narena_exporter_stale_pages_removed_total 2\n") != std::string::npos);
    CHECK(first.find("\narena_exporter_pages_skipped{reason=\"dead\"} 1\n") != std::string::npos);
    CHECK(first.find("\narena_exporter_pages_skipped{reason=\"pid_reused\"} 1\n") !=
          std::string::npos);
    for (const int pid : {1005, 1006, 1007, 1009, 1011}) {
        CAPTURE(pid);
        CHECK(exists(place.page_path(pid)));
    }
    CHECK(exists(testing::FakePage::user_dir(place.base) + "/README"));

    // A second run finds nothing stale any more.
    const std::string second = exporter_once(place, "pid");
    CHECK(second.find("\narena_exporter_stale_pages_removed_total 0\n") != std::string::npos);
    CHECK(second.find("\narena_exporter_pages_skipped{reason=\"dead\"} 0\n") != std::string::npos);
}

TEST_CASE("golden: --group-by comm") {
    testing::TempDir dir("golden");
    const auto pages = exptest::write_fixture_pages(dir.path());
    compare_golden(normalise(exporter_once(pages->place, "comm")), "exporter-comm.prom");
    CHECK_FALSE(exists(pages->stale_path));
}

TEST_CASE("promtool: check metrics accepts both outputs") {
    testing::TempDir dir("promtool");
    const auto pages = exptest::write_fixture_pages(dir.path());
    for (const char* group_by : {"pid", "comm"}) {
        CAPTURE(group_by);
        promtool_check(exporter_once(pages->place, group_by));
    }
    // An empty stats directory (no processes) is valid exposition too.
    testing::TempDir empty("promtool-empty");
    const exptest::Place none(empty.path());
    REQUIRE(mkdir(none.base.c_str(), 01777) == 0);
    promtool_check(exporter_once(none, "pid"));
}

TEST_CASE("promtool: the check itself catches a bad exposition") {
    // A counter without _total and a gauge with a unit-less name: promtool must complain,
    // otherwise the case above proves nothing.
    const exptest::RunResult r =
        exptest::run({required_env("PROMTOOL"), "check", "metrics"},
                     "# HELP arena_calls Calls.\n# TYPE arena_calls counter\narena_calls 1\n");
    CHECK((r.status != 0 || !r.out.empty() || !r.err.empty()));
}

TEST_SUITE_END();
