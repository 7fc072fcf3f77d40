// SPDX-License-Identifier: MIT
// The stats page, end to end with the real writer and the stats client's reader: the page of
// this (preloaded) process and of children, its place and modes, counters, fork, the control
// area (a trim request lowers resident bytes), removal at exit, and running without stats.
// What the page must withstand from other users and odd programs is test_page_safety.cc; the
// reader's handling of bad files is tests/client.
#include "common.h"
#include "fake_page.h"
#include "reader.h"
#include "testing.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <malloc.h>
#include <optional>
#include <string>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace cl = arena::client;

namespace {

// Through volatile pointers: the compiler may otherwise move a malloc whose result is only freed
// later past the reads of the page.
void* (*volatile do_malloc)(size_t) = malloc;
void (*volatile do_free)(void*) = free;

/// Where the writer puts a page of ours: <base>/<euid>/<pid>.
std::string page_of(int pid) {
    return cl::default_dir() + "/" + std::to_string(geteuid()) + "/" + std::to_string(pid);
}

/// The page of `pid`, through the client's reader; fails the test with the reason when absent.
std::optional<cl::Process> page(int pid) {
    cl::Skip why = cl::Skip::Dead;
    auto p = cl::read_pid(cl::default_dir(), pid, {}, &why);
    if (!p)
        MESSAGE("no page for pid ", pid, ": ", cl::skip_name(why));
    return p;
}

bool file_exists(const std::string& p) {
    struct stat s {};
    return stat(p.c_str(), &s) == 0;
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
    for (int i = 0; i < 2000; ++i) {  // about 20 s at most; the parent ends us sooner
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
            memset(do_malloc(128), 1, 128);         // kept: 8 MiB in all
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

// ---- Tests
// ----------------------------------------------------------------------------------------

TEST_CASE("the process runs on libarena") {
    REQUIRE(testing::on_libarena());
}

TEST_SUITE("stats-page") {

    TEST_CASE("this process has a page: identity, place, modes, layout") {
        const auto p = page(getpid());
        REQUIRE(p.has_value());
        CHECK(p->pid == getpid());
        CHECK(p->path == page_of(getpid()));
        CHECK(p->comm == "test-stats");
        CHECK(p->cmdline.find("test-stats") != std::string::npos);
        CHECK(p->start_time == testing::self_start_time());           // the process's, from /proc
        CHECK(p->snap.head.start_time >= testing::self_start_time()); // when the page was made
        CHECK(p->uid == geteuid());
        const arena_stats_head& h = p->snap.head;
        CHECK(h.nclasses == 48);
        CHECK(h.class_size[0] == 16);
        CHECK(h.class_size[28] == 4608); // eight classes per doubling from 4 KiB
        CHECK(h.class_size[47] == 32768);
        CHECK(h.uid == geteuid());
        CHECK(p->gauge(ARENA_G_reserved_bytes) >= (16u << 20));
        CHECK(h.exec_entry == getauxval(AT_ENTRY));
        CHECK(h.exec_random == getauxval(AT_RANDOM));
        // The pid namespace is written on a slow path some time after start-up (not by /bin/true).
        struct stat ns {};
        REQUIRE(stat("/proc/self/ns/pid", &ns) == 0);
        CHECK(testing::eventually([&] {
            for (int i = 0; i < 64; ++i)
                do_free(do_malloc(1 << 20)); // large blocks: slow paths that poll the control area
            const auto now = page(getpid());
            return now && now->snap.head.pid_ns == ns.st_ino;
        }));
        // Private by default: the page 0600, its user's directory 0700, the base 1777.
        struct stat s {};
        REQUIRE(stat(p->path.c_str(), &s) == 0);
        CHECK((s.st_mode & 07777) == 0600);
        CHECK(s.st_nlink == 1);
        CHECK(s.st_size == sizeof(arena_stats_page));
        CHECK(s.st_blocks * 512 >= static_cast<blkcnt_t>(sizeof(arena_stats_page))); // reserved
        const std::string user_dir = cl::default_dir() + "/" + std::to_string(geteuid());
        REQUIRE(lstat(user_dir.c_str(), &s) == 0);
        CHECK(S_ISDIR(s.st_mode));
        CHECK((s.st_mode & 07777) == 0700);
        CHECK(s.st_uid == geteuid());
        REQUIRE(lstat(cl::default_dir().c_str(), &s) == 0);
        CHECK((s.st_mode & 07777) == 01777);
    }

    TEST_CASE("counters follow allocations: calls, classes, live bytes, large blocks") {
        std::vector<void*> v;
        v.reserve(10000);
        const auto before = page(getpid());
        REQUIRE(before);
        for (int i = 0; i < 10000; ++i)
            v.push_back(do_malloc(100)); // class 112
        void* big = do_malloc(1 << 20);
        const auto during = page(getpid());
        REQUIRE(during);
        CHECK(during->event(ARENA_EV_malloc_calls) >= before->event(ARENA_EV_malloc_calls) + 10001);
        CHECK(during->event(ARENA_EV_large_allocs) == before->event(ARENA_EV_large_allocs) + 1);
        CHECK(during->event(ARENA_EV_bytes_requested) >=
              before->event(ARENA_EV_bytes_requested) + 10000 * 100 + (1 << 20));
        const unsigned c112 = 6;
        REQUIRE(during->snap.head.class_size[c112] == 112);
        CHECK(during->snap.class_alloc[c112] >= before->snap.class_alloc[c112] + 10000);
        CHECK(during->live_bytes() >= before->live_bytes() + 10000 * 112 + (1 << 20) - 50000);
        for (void* p : v)
            do_free(p);
        do_free(big);
        const auto after = page(getpid());
        REQUIRE(after);
        CHECK(after->event(ARENA_EV_free_calls) >= during->event(ARENA_EV_free_calls) + 10001);
        CHECK(after->live_bytes() + 10000 * 112 + (1 << 20) <= during->live_bytes() + 50000);
        CHECK(after->gauge(ARENA_G_peak_live_bytes) >= during->live_bytes() - (2u << 20));
    }

    TEST_CASE("the peak of live bytes holds when another thread frees everything") {
        // Producer/consumer: every free is remote, and the consumer takes no allocation slow
        // path, where a heap's live bytes used to reach the process's. They must reach it
        // anyway, or the peak counts what the producer allocated as if none of it were freed
        // (bench_prodcons showed a peak of 14 GB in an 18 MB process). Once with a consumer
        // that has a heap (it allocated once) and once with one that never allocates (its
        // frees are published at once, in shard 0).
        for (const bool consumer_allocates : {true, false}) {
            CAPTURE(consumer_allocates);
            constexpr size_t kSlots = 256, kBlocks = 100000, kSize = 1000; // 100 MB in all
            std::atomic<void*> slots[kSlots] = {};
            const auto before = page(getpid());
            REQUIRE(before);
            std::thread consumer([&] {
                if (consumer_allocates)
                    do_free(do_malloc(16));
                for (size_t i = 0, freed = 0; freed < kBlocks; ++i) {
                    void* p = slots[i % kSlots].exchange(nullptr, std::memory_order_acquire);
                    if (p == nullptr) {
                        std::this_thread::yield();
                        continue;
                    }
                    do_free(p);
                    ++freed;
                }
            });
            for (size_t i = 0; i < kBlocks; ++i) {
                void* p = do_malloc(kSize);
                while (slots[i % kSlots].load(std::memory_order_acquire) != nullptr)
                    std::this_thread::yield();
                slots[i % kSlots].store(p, std::memory_order_release);
            }
            consumer.join();
            const auto after = page(getpid());
            REQUIRE(after);
            // At most kSlots blocks (256 KiB) were live at a time, besides the process's own.
            CHECK(after->gauge(ARENA_G_peak_live_bytes) <
                  before->gauge(ARENA_G_peak_live_bytes) + (16u << 20));
        }
    }

    TEST_CASE("threads beyond the page's shards are still counted") {
        // 31 shards: heap 31 and later count privately and add to shard 0 on their slow paths.
        const auto before = page(getpid());
        REQUIRE(before);
        constexpr int kThreads = 40, kEach = 2000;
        std::atomic<int> started{0};
        std::vector<std::thread> threads;
        for (int t = 0; t < kThreads; ++t)
            threads.emplace_back([&started] {
                std::vector<void*> v;
                for (int i = 0; i < kEach; ++i)
                    v.push_back(do_malloc(48));
                // All heaps alive at once: none is abandoned and adopted by a later thread.
                started.fetch_add(1);
                while (started.load() < kThreads)
                    std::this_thread::yield();
                for (void* p : v)
                    do_free(p);
            });
        for (auto& t : threads)
            t.join();
        const auto after = page(getpid());
        REQUIRE(after);
        CHECK(after->snap.head.shards_used == ARENA_STATS_SHARDS);
        CHECK(after->event(ARENA_EV_malloc_calls) >=
              before->event(ARENA_EV_malloc_calls) + uint64_t{kThreads} * kEach);
        CHECK(after->event(ARENA_EV_free_calls) >=
              before->event(ARENA_EV_free_calls) + uint64_t{kThreads} * kEach);
    }

    TEST_CASE("a fork child gets a page of its own; the parent keeps its own") {
        int ready[2];
        REQUIRE(pipe(ready) == 0);
        int go[2];
        REQUIRE(pipe(go) == 0);
        const auto parent_before = page(getpid());
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
        const auto child = page(pid);
        const auto parent = page(getpid());
        REQUIRE(child.has_value());
        REQUIRE(parent.has_value());
        CHECK(child->pid == pid);
        CHECK(parent->pid == getpid());
        CHECK(child->path == page_of(pid));
        // The child started from the parent's counters and added its own 5000 allocations.
        CHECK(child->snap.class_alloc[2] >= 5000);
        CHECK(child->snap.class_alloc[2] >= parent_before->snap.class_alloc[2] + 5000);
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
        const auto p = page(child.pid());
        REQUIRE(p);
        // The last ~10 ms of the burst may be missing from the page (about 1.5 MiB here).
        CHECK(p->gauge(ARENA_G_committed_bytes) >= (12u << 20));
        CHECK(p->gauge(ARENA_G_resident_bytes) >= (12u << 20));
        CHECK(p->gauge(ARENA_G_resident_bytes) <= p->gauge(ARENA_G_committed_bytes));
        CHECK(child.wait() == 0);
    }

    TEST_CASE("control area: a trim request lowers resident bytes; the purge delay can be set") {
        testing::Child child("hold_memory", {"ARENA_PURGE_DELAY_MS=-1"});
        const std::string line = child.read_line();
        REQUIRE(line.rfind("ready ", 0) == 0);
        const int pid = child.pid();
        const std::string base = cl::default_dir();
        // Resident bytes are sampled about every second: wait for a sample after the frees.
        REQUIRE(testing::eventually([&] {
            const auto p = page(pid);
            return p && p->gauge(ARENA_G_resident_bytes) >= (150u << 20);
        }));
        const auto before = page(pid);
        REQUIRE(before);
        const cl::ControlResult trim = cl::request_trim(base, pid);
        REQUIRE_MESSAGE(trim.ok(), trim.detail);
        CHECK(trim.requests == before->control().trim_requests + 1);
        REQUIRE(testing::eventually([&] {
            const auto p = page(pid);
            return p && p->control().trims_served == p->control().trim_requests &&
                   p->gauge(ARENA_G_trims) > before->gauge(ARENA_G_trims);
        }));
        const uint64_t trimmed_at = page(pid)->gauge(ARENA_G_updated_unix_ns);
        CHECK(testing::eventually([&] {
            const auto p = page(pid);
            return p && p->gauge(ARENA_G_resident_unix_ns) > trimmed_at &&
                   p->gauge(ARENA_G_resident_bytes) + (150u << 20) <=
                       before->gauge(ARENA_G_resident_bytes);
        }));
        CHECK(page(pid)->gauge(ARENA_G_purged_bytes) >= (150u << 20));

        const cl::ControlResult purge = cl::request_purge_delay(base, pid, 250);
        REQUIRE_MESSAGE(purge.ok(), purge.detail);
        CHECK(testing::eventually([&] {
            const auto p = page(pid);
            return p && p->snap.signed_gauge(ARENA_G_purge_delay_ms) == 250 &&
                   p->control().purges_served == p->control().purge_requests;
        }));
        const cl::ControlResult bad_delay = cl::request_purge_delay(base, pid, -5);
        CHECK(bad_delay.error == cl::ControlError::Invalid);
        CHECK(bad_delay.detail.find("between") != std::string::npos);
        CHECK(cl::request_trim(base, 3999999).error != cl::ControlError::None);
        CHECK(child.wait() == 0);
    }

    TEST_CASE("ARENA_STATS=0 makes no page; an unusable directory leaves the program running") {
        {
            // The fork before the exec made a page for the child (fork children get one); the
            // exec'd program, with ARENA_STATS=0, makes none, and the fork child's page is stale:
            // same pid, start time and program, but made before the exec.
            testing::Child child("wait_for_stdin", {"ARENA_STATS=0"});
            REQUIRE(child.read_line().rfind("ready ", 0) == 0);
            cl::Skip why = cl::Skip::Dead;
            CHECK_FALSE(cl::read_pid(cl::default_dir(), child.pid(), {}, &why).has_value());
            CHECK((why == cl::Skip::Exec || why == cl::Skip::Foreign));
            CHECK_FALSE(file_exists(page_of(child.pid()))); // removed as stale by the reader
            CHECK(child.wait() == 0);
        }
        const testing::ChildResult r = testing::run_child(
            "just_exit", {"ARENA_STATS_DIR=/proc/arena-cannot-be-here", "ARENA_VERBOSE=1"});
        CHECK(r.code == 0);
        CHECK(testing::count_occurrences(r.err, "arena: stats page off:") == 1);
        const testing::ChildResult quiet =
            testing::run_child("just_exit", {"ARENA_STATS_DIR=/proc/arena-cannot-be-here"});
        CHECK(quiet.code == 0);
        CHECK(quiet.err.empty());
    }

} // TEST_SUITE
