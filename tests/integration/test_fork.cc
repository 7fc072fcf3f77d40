// SPDX-License-Identifier: MIT
// fork() in a multi-threaded program: the child's allocator works (from the forking thread,
// from new threads, and for blocks the parent allocated), while the parent's other threads keep
// allocating during the fork.
#include "testing.h"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

std::atomic<bool> g_stop{false};

void churn(uint64_t seed) {
    uint64_t rng = seed;
    std::vector<void*> live(256, nullptr);
    while (!g_stop.load(std::memory_order_relaxed)) {
        const size_t k = testing::next_random(rng) % live.size();
        free(live[k]);
        const size_t n = 1 + testing::next_random(rng) % 20000;
        live[k] = malloc(n);
        memset(live[k], 0x33, n < 64 ? n : 64);
    }
    for (void* p : live)
        free(p);
}

/// What a child does: allocate and free a lot, in its own thread too, and touch parent blocks.
int child_work(std::vector<char*>& parents) {
    for (char* p : parents) {
        if (p[0] != 'P')
            return 10;
        free(p);
    }
    std::vector<void*> v;
    for (int i = 0; i < 20000; ++i) {
        v.push_back(malloc(static_cast<size_t>(i % 3000) + 1));
        if (v.back() == nullptr)
            return 11;
    }
    for (void* p : v)
        free(p);
    int rc = 0;
    std::thread t([&rc] {
        std::vector<void*> w;
        for (int i = 0; i < 10000; ++i)
            w.push_back(malloc(static_cast<size_t>(i % 500) + 1));
        for (void* p : w)
            free(p);
        void* big = malloc(8 << 20);
        if (big == nullptr)
            rc = 12;
        free(big);
    });
    t.join();
    malloc_trim(0);
    return rc;
}

} // namespace

ARENA_TEST_CHILD(fork_with_remote_batch) {
    // A thread allocates blocks and exits (its heap is abandoned); this thread frees them (remote
    // frees, held in its batch) and forks at once. In the child a new thread adopts the abandoned
    // heap and must get the blocks back; a second free of one is still a double free.
    std::vector<void*> made(32);
    std::thread([&made] {
        for (auto& q : made)
            q = malloc(64);
    }).join();
    for (void* q : made)
        free(q);
    const pid_t pid = fork();
    if (pid == 0) {
        bool back = false;
        std::thread([&] { back = testing::comes_back(made[3], 64); }).join();
        free(made[5]); // freed before the fork: a double free
        _exit(back ? 0 : 20);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status))
        return 30;
    if (WEXITSTATUS(status) != 0)
        return WEXITSTATUS(status);
    // The parent's copy of the batch was published too.
    bool back = false;
    std::thread([&] { back = testing::comes_back(made[3], 64); }).join();
    return back ? 0 : 21;
}

TEST_CASE("the process runs on libarena") {
    REQUIRE(testing::on_libarena());
}

TEST_CASE("fork while other threads allocate: every child's allocator works") {
    g_stop = false;
    std::vector<std::thread> ts;
    for (uint64_t t = 0; t < 3; ++t)
        ts.emplace_back(churn, t + 1);
    int failures = 0;
    for (int round = 0; round < 40; ++round) {
        std::vector<char*> parents;
        for (int i = 0; i < 100; ++i) {
            parents.push_back(static_cast<char*>(malloc(static_cast<size_t>(16 + i * 37))));
            parents.back()[0] = 'P';
        }
        const pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0)
            _exit(child_work(parents));
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            ++failures;
            MESSAGE("child failed: status ", status);
        }
        for (char* p : parents)
            free(p);
    }
    g_stop = true;
    for (auto& t : ts)
        t.join();
    CHECK(failures == 0);
}

TEST_CASE("fork from a secondary thread, and a fork of a fork") {
    int status = -1;
    std::thread([&status] {
        void* keep = malloc(1000);
        const pid_t pid = fork();
        if (pid == 0) {
            free(keep);
            const pid_t grandchild = fork();
            if (grandchild == 0) {
                std::vector<void*> v(1000);
                for (auto& p : v)
                    p = malloc(64);
                for (auto& p : v)
                    free(p);
                _exit(0);
            }
            int gs = 0;
            waitpid(grandchild, &gs, 0);
            _exit(WIFEXITED(gs) ? WEXITSTATUS(gs) : 99);
        }
        waitpid(pid, &status, 0);
        free(keep);
    }).join();
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("fork with remote frees in the forking thread's batch: both sides get the blocks back") {
    const testing::ChildResult r = testing::run_child("fork_with_remote_batch");
    CHECK(r.exited);
    CHECK(r.code == 0);
    CHECK(testing::count_occurrences(r.err, "arena: error: double free") == 1);
}
