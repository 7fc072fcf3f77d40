// SPDX-License-Identifier: MIT
// The stats page, end to end with the real writer: the page of this (preloaded) process and of
// children, counters, the reader's handling of garbage, truncated, foreign-version, dead and
// PID-reused pages, fork, the control area (a trim request lowers resident bytes), removal at
// exit, and running without stats.
#include "fake_page.h"
#include "stats_reader.h"
#include "testing.h"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <malloc.h>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace st = arena::stats;

namespace {

/// A temporary directory, removed with its files.
struct TempDir {
    std::string path;
    TempDir() {
        char t[] = "/tmp/arena-stats-test-XXXXXX";
        path = mkdtemp(t);
    }
    ~TempDir() {
        const std::string cmd = "rm -rf '" + path + "'";
        if (system(cmd.c_str()) != 0)
            fprintf(stderr, "could not remove %s\n", path.c_str());
    }
};

// Through volatile pointers: the compiler may otherwise move a malloc whose result is only freed
// later past the reads of the page.
void* (*volatile do_malloc)(size_t) = malloc;
void (*volatile do_free)(void*) = free;

std::string page_of(int pid) {
    return st::default_dir() + "/" + std::to_string(pid);
}

bool file_exists(const std::string& p) {
    struct stat s {};
    return stat(p.c_str(), &s) == 0;
}

/// Polls `pred` every 20 ms for up to `ms`.
template <class F>
bool eventually(F pred, int ms = 5000) {
    for (int waited = 0; waited < ms; waited += 20) {
        if (pred())
            return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return pred();
}

void write_file(const std::string& path, const void* data, size_t n) {
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, data, n) == static_cast<ssize_t>(n));
    close(fd);
}

} // namespace

// ---- Children ----------------------------------------------------------------------------------

ARENA_TEST_CHILD(hold_memory) {
    // Allocates and touches 200 MiB in large blocks, frees it (stays resident: purge delay -1),
    // then keeps taking allocation slow paths so that control requests are served.
    std::vector<void*> blocks;
    for (int i = 0; i < 100; ++i) {
        blocks.push_back(do_malloc(2 << 20));
        memset(blocks.back(), 1, 2 << 20);
    }
    for (void* b : blocks)
        do_free(b);
    printf("ready %d\n", getpid());
    fflush(stdout);
    for (int i = 0; i < 2000; ++i) { // about 20 s at most; the parent ends us sooner
        do_free(do_malloc(64 << 10)); // a large block: a slow path that polls the control area
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        char c;
        if (i % 10 == 0 && fcntl(0, F_SETFL, O_NONBLOCK) == 0 && read(0, &c, 1) == 0)
            break; // stdin closed: the parent is done with us
    }
    return 0;
}

ARENA_TEST_CHILD(burst_then_idle) {
    // 16 MiB allocated and touched over about 100 ms (small and large blocks), then nothing:
    // the page must show it without any further allocation.
    for (int step = 0; step < 64; ++step) {
        for (int i = 0; i < 1024; ++i)
            memset(do_malloc(128), 1, 128); // kept: 8 MiB in all
        memset(do_malloc(128 << 10), 1, 128 << 10); // kept: 8 MiB in all
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    printf("ready %d\n", getpid());
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    return 0;
}

ARENA_TEST_CHILD(just_exit) {
    do_free(do_malloc(100));
    printf("%d\n", getpid());
    return 0;
}

ARENA_TEST_CHILD(wait_for_stdin) {
    void* p = do_malloc(1000);
    printf("ready %d\n", getpid());
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    do_free(p);
    return 0;
}

// ---- Tests ----------------------------------------------------------------------------------------

TEST_CASE("the process runs on libarena") {
    REQUIRE(testing::on_libarena());
}

TEST_SUITE("stats-page") {

TEST_CASE("this process has a page: identity, permissions, layout") {
    const std::string path = page_of(getpid());
    st::Skip why = st::Skip::Unreadable;
    const auto p = st::read_page(path, &why);
    REQUIRE_MESSAGE(p.has_value(), "no page at ", path, ": ", st::skip_name(why));
    CHECK(p->pid == getpid());
    CHECK(p->comm == "test-stats");
    CHECK(p->cmdline.find("test-stats") != std::string::npos);
    CHECK(p->start_time == testing::self_start_time());
    CHECK(p->classes.size() == 40);
    CHECK(p->classes[0].size == 16);
    CHECK(p->classes.back().size == 32768);
    CHECK(p->global.reserved_bytes >= (16u << 20));
    struct stat s {};
    REQUIRE(stat(path.c_str(), &s) == 0);
    CHECK((s.st_mode & 07777) == 0644);
    REQUIRE(stat(st::default_dir().c_str(), &s) == 0);
    CHECK((s.st_mode & 07777) == 01777);
}

TEST_CASE("counters follow allocations: calls, classes, live bytes, large blocks") {
    const std::string path = page_of(getpid());
    std::vector<void*> v;
    v.reserve(10000);
    const auto before = st::read_page(path);
    REQUIRE(before);
    for (int i = 0; i < 10000; ++i)
        v.push_back(do_malloc(100)); // class 112
    void* big = do_malloc(1 << 20);
    const auto during = st::read_page(path);
    REQUIRE(during);
    CHECK(during->event(ARENA_EV_malloc_calls) >= before->event(ARENA_EV_malloc_calls) + 10001);
    CHECK(during->event(ARENA_EV_large_allocs) == before->event(ARENA_EV_large_allocs) + 1);
    CHECK(during->event(ARENA_EV_bytes_requested) >=
          before->event(ARENA_EV_bytes_requested) + 10000 * 100 + (1 << 20));
    const unsigned c112 = 6;
    REQUIRE(during->classes[c112].size == 112);
    CHECK(during->classes[c112].allocs >= before->classes[c112].allocs + 10000);
    CHECK(during->live_bytes() >= before->live_bytes() + 10000 * 112 + (1 << 20) - 50000);
    for (void* p : v)
        do_free(p);
    do_free(big);
    const auto after = st::read_page(path);
    REQUIRE(after);
    CHECK(after->event(ARENA_EV_free_calls) >= during->event(ARENA_EV_free_calls) + 10001);
    CHECK(after->live_bytes() + 10000 * 112 + (1 << 20) <= during->live_bytes() + 50000);
    CHECK(after->global.peak_live_bytes >= during->live_bytes() - (2u << 20));
}

TEST_CASE("the reader skips every kind of bad file, by reason, and removes stale pages") {
    TempDir dir;
    testing::FakePage good(4242);
    good.page().shards[0].events[ARENA_EV_malloc_calls] = 5;
    good.page().shards[7].events[ARENA_EV_malloc_calls] = 6;
    good.page().shards[3].class_alloc[1] = 10;
    good.page().shards[9].class_free[1] = 4;
    good.write(dir.path);

    testing::FakePage truncated(4243);
    truncated.write_truncated(dir.path, 3000);
    testing::FakePage tiny(4244);
    tiny.write_truncated(dir.path, 10);
    testing::FakePage wrong_version(4245);
    wrong_version.page().version = 99;
    wrong_version.write(dir.path);
    testing::FakePage wrong_sizes(4246);
    wrong_sizes.page().nshards = 3;
    wrong_sizes.write(dir.path);
    testing::FakePage not_ready(4247);
    not_ready.page().flags = 0;
    not_ready.write(dir.path);
    // Garbage: random bytes, the size of a page.
    std::vector<unsigned char> junk(sizeof(arena_stats_page));
    uint64_t rng = 7;
    for (auto& b : junk)
        b = static_cast<unsigned char>(testing::next_random(rng));
    write_file(dir.path + "/4248", junk.data(), junk.size());
    write_file(dir.path + "/notes.txt", "hello", 5);
    mkdir((dir.path + "/4249").c_str(), 0755);
    // Stale: no writer holds the lock. A PID that does not exist...
    testing::FakePage dead(3999999);
    const std::string dead_path = dead.write(dir.path, false);
    // ...and our own PID with another start time: a reused PID.
    testing::FakePage reused(getpid());
    reused.page().start_time = testing::self_start_time() + 1000;
    const std::string reused_path = reused.write(dir.path, false);
    write_file(dir.path + "/.4250.tmp", "x", 1); // a page being created: ignored

    const st::Scan scan = st::scan(dir.path);
    CHECK(scan.error.empty());
    REQUIRE(scan.processes.size() == 1);
    const st::Process& p = scan.processes[0];
    CHECK(p.pid == 4242);
    CHECK(p.comm == "fake");
    CHECK(p.event(ARENA_EV_malloc_calls) == 11);
    CHECK(p.classes[1].allocs == 10);
    CHECK(p.classes[1].frees == 4);
    CHECK(p.live_bytes() == 6 * 32);
    auto skipped = [&](st::Skip why) { return scan.skipped[size_t(why)]; };
    CHECK(skipped(st::Skip::Truncated) == 2);
    CHECK(skipped(st::Skip::BadVersion) == 1);
    CHECK(skipped(st::Skip::BadSize) == 1);
    CHECK(skipped(st::Skip::NotReady) == 1);
    CHECK(skipped(st::Skip::BadMagic) == 1);
    CHECK(skipped(st::Skip::Foreign) == 2); // notes.txt and the directory
    CHECK(skipped(st::Skip::Dead) == 1);
    CHECK(skipped(st::Skip::PidReused) == 1);
    CHECK(scan.removed.size() == 2);
    CHECK_FALSE(file_exists(dead_path));
    CHECK_FALSE(file_exists(reused_path));
    CHECK(file_exists(dir.path + "/4242")); // live pages and bad files stay
    CHECK(file_exists(dir.path + "/4248"));

    const st::Scan again = st::scan(dir.path, {.remove_stale = false});
    CHECK(again.skipped[size_t(st::Skip::Dead)] == 0);
    CHECK(st::scan("/nonexistent/arena").error.find("cannot read") == 0);
}

TEST_CASE("a fork child gets a page of its own; the parent keeps its own") {
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    int go[2];
    REQUIRE(pipe(go) == 0);
    const auto parent_before = st::read_page(page_of(getpid()));
    REQUIRE(parent_before.has_value());
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        std::vector<void*> v;
        for (int i = 0; i < 5000; ++i)
            v.push_back(malloc(48));
        char c = 'r';
        if (write(ready[1], &c, 1) != 1)
            _exit(2);
        if (read(go[0], &c, 1) != 1)
            _exit(3);
        for (void* p : v)
            free(p);
        exit(0); // a normal exit: the page goes away
    }
    char c;
    REQUIRE(read(ready[0], &c, 1) == 1);
    const auto child = st::read_page(page_of(pid));
    const auto parent = st::read_page(page_of(getpid()));
    REQUIRE(child.has_value());
    REQUIRE(parent.has_value());
    CHECK(child->pid == pid);
    CHECK(parent->pid == getpid());
    CHECK(child->path != parent->path);
    // The child started from the parent's counters and added its own 5000 allocations.
    CHECK(child->classes[2].allocs >= 5000);
    CHECK(child->classes[2].allocs >= parent_before->classes[2].allocs + 5000);
    REQUIRE(write(go[1], &c, 1) == 1);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK_FALSE(file_exists(page_of(pid)));
    CHECK(file_exists(page_of(getpid())));
    close(ready[0]);
    close(ready[1]);
    close(go[0]);
    close(go[1]);
}

TEST_CASE("the page is removed at normal exit") {
    const testing::ChildResult r = testing::run_child("just_exit");
    REQUIRE(r.code == 0);
    const int pid = atoi(r.out.c_str());
    REQUIRE(pid > 0);
    CHECK_FALSE(file_exists(page_of(pid)));
}

TEST_CASE("a process that allocates in a short burst and then idles shows its memory") {
    // Gauges used to be published at most every 100 ms and resident bytes sampled every second,
    // so this child's page kept its values from start-up: 0 resident bytes.
    testing::Child child("burst_then_idle");
    REQUIRE(child.read_line().rfind("ready ", 0) == 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(200)); // nothing publishes now
    const auto p = st::read_page(page_of(child.pid()));
    REQUIRE(p);
    // The last ~10 ms of the burst may be missing from the page (about 1.5 MiB here).
    CHECK(p->global.committed_bytes >= (12u << 20));
    CHECK(p->global.resident_bytes >= (12u << 20));
    CHECK(p->global.resident_bytes <= p->global.committed_bytes);
    CHECK(child.wait() == 0);
}

TEST_CASE("control area: a trim request lowers resident bytes; the purge delay can be set") {
    testing::Child child("hold_memory", {"ARENA_PURGE_DELAY_MS=-1"});
    const std::string line = child.read_line();
    REQUIRE(line.rfind("ready ", 0) == 0);
    const int pid = child.pid();
    const std::string path = page_of(pid);
    // Resident bytes are sampled about every second: wait for a sample after the frees.
    REQUIRE(eventually([&] {
        const auto p = st::read_page(path);
        return p && p->global.resident_bytes >= (150u << 20);
    }));
    const auto before = st::read_page(path);
    REQUIRE(before);
    CHECK(st::request_trim(st::default_dir(), pid).ok());
    REQUIRE(eventually([&] {
        const auto p = st::read_page(path);
        return p && p->control.trims_served == p->control.trim_requests &&
               p->global.trims > before->global.trims;
    }));
    const uint64_t trimmed_at = st::read_page(path)->global.updated_unix_ns;
    CHECK(eventually([&] {
        const auto p = st::read_page(path);
        return p && p->global.resident_unix_ns > trimmed_at &&
               p->global.resident_bytes + (150u << 20) <= before->global.resident_bytes;
    }));
    CHECK(st::read_page(path)->global.purged_bytes >= (150u << 20));

    CHECK(st::request_purge_delay(st::default_dir(), pid, 250).ok());
    CHECK(eventually([&] {
        const auto p = st::read_page(path);
        return p && p->global.purge_delay_ms == 250;
    }));
    const st::ControlResult bad_delay = st::request_purge_delay(st::default_dir(), pid, -5);
    CHECK(bad_delay.error == st::ControlError::Invalid);
    CHECK(bad_delay.detail.find("between") != std::string::npos);
    const st::ControlResult no_page = st::request_trim(st::default_dir(), 3999999);
    CHECK(no_page.error == st::ControlError::NoPage);
    CHECK(no_page.detail.find("no stats page") == 0);
    CHECK(child.wait() == 0);
}

TEST_CASE("ARENA_STATS=0 makes no page; an unusable directory leaves the program running") {
    {
        // The fork before the exec made a page for the child (fork children get one); the
        // exec'd program, with ARENA_STATS=0, must not have made it live.
        testing::Child child("wait_for_stdin", {"ARENA_STATS=0"});
        REQUIRE(child.read_line().rfind("ready ", 0) == 0);
        st::Skip why = st::Skip::Unreadable;
        CHECK_FALSE(st::read_page(page_of(child.pid()), &why).has_value());
        CHECK((why == st::Skip::Dead || why == st::Skip::Unreadable));
        CHECK(child.wait() == 0);
    }
    const testing::ChildResult r = testing::run_child(
        "just_exit", {"ARENA_STATS_DIR=/proc/arena-cannot-be-here", "ARENA_VERBOSE=1"});
    CHECK(r.code == 0);
    CHECK(testing::count_occurrences(r.err, "arena: stats page off:") == 1);
    CHECK(r.err.find("stats page off") != std::string::npos);
    const testing::ChildResult quiet =
        testing::run_child("just_exit", {"ARENA_STATS_DIR=/proc/arena-cannot-be-here"});
    CHECK(quiet.code == 0);
    CHECK(quiet.err.empty());
}

} // TEST_SUITE
