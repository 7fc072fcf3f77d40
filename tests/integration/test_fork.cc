// SPDX-License-Identifier: MIT
// fork() in a multi-threaded program: the child's allocator works (from the forking thread,
// from new threads, and for blocks the parent allocated), while the parent's other threads keep
// allocating during the fork. fork never deadlocks: not while other threads hold stdio locks and
// wait in the allocator (glibc's tst-malloc-fork-deadlock), not from a signal handler that
// interrupted the allocator (glibc's tst-mallocfork2). The scenarios that could hang run in a
// child process killed after a deadline, so that a hang is a failure and not a stuck test.
#include "common.h"
#include "testing.h"

#include "arena/stats_page.h"

#include <doctest/doctest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <fstream>
#include <malloc.h>
#include <string>
#include <sys/time.h>
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
    for (int round = 0, n = testing::rounds(40); round < n; ++round) {
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

// ---- Scenarios that could hang: bounded ------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;

/// Waits at most `ms` milliseconds for child pid, and kills it (SIGKILL) if it is not done by
/// then. Its wait status, or -1 when it had to be killed.
int wait_bounded(pid_t pid, int ms) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(ms);
    for (;;) {
        int status = 0;
        const pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -1;
        if (Clock::now() >= deadline) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            return -1;
        }
        usleep(200);
    }
}

struct Bounded {
    bool timed_out = false;
    bool exited = false;
    int code = -1;
    int signal = 0;
};

/// Runs the registered child NAME in a new process of this binary, with `env` and a stats
/// directory of its own (ARENA_STATS_DIR), and kills it when it runs longer than `seconds`.
Bounded run_bounded(const std::string& name, int seconds, std::vector<std::string> env = {}) {
    // A directory of its own for the stats pages (children that _exit leave theirs behind).
    testing::TempDir dir("fork");
    env.push_back("ARENA_STATS_DIR=" + dir.path());
    fflush(nullptr);
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0)
        testing::exec_child(name, env);
    Bounded b;
    const int status = wait_bounded(pid, seconds * 1000);
    if (status == -1) {
        b.timed_out = true;
        return b;
    }
    b.exited = WIFEXITED(status);
    b.code = b.exited ? WEXITSTATUS(status) : -1;
    b.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    return b;
}

// ---- A checked allocation workload ----

/// A block and the byte its first and last bytes were set from.
struct Slot {
    unsigned char* p = nullptr;
    size_t n = 0;
    unsigned char v = 0;
};

/// Only blocks above the small sizes (a page run each: every malloc and free takes the pages
/// lock), for FORK_TEST_LARGE=1.
bool g_large_only = false;

/// Sizes like tst-mallocfork2's (up to 70000 bytes), plus large blocks up to about 1 MiB.
size_t churn_size(uint64_t& rng) {
    const uint64_t r = testing::next_random(rng);
    if (g_large_only)
        return 40000 + (r >> 8) % (1u << 20);
    switch (r % 10) {
    case 0:
        return 2 + (r >> 8) % 64;
    case 1:
    case 2:
        return 70000 + (r >> 8) % (1u << 20);
    default:
        return 2 + (r >> 8) % 70000;
    }
}

/// Set while churn_step is inside malloc, free or realloc: the timer's handler forks only then
/// (as tst-mallocfork2's handler forks only during its free and malloc), so that nearly every
/// fork interrupts the allocator.
volatile sig_atomic_t g_in_allocator = 0;

bool intact(const Slot& s) {
    return s.p == nullptr ||
           (s.p[0] == s.v && s.p[s.n - 1] == static_cast<unsigned char>(s.v ^ 0x5a));
}

/// One malloc, free or realloc on a random slot. False when a block's contents were damaged or
/// an allocation failed.
bool churn_step(std::vector<Slot>& slots, uint64_t& rng) {
    Slot& s = slots[testing::next_random(rng) % slots.size()];
    if (!intact(s))
        return false;
    const uint64_t op = testing::next_random(rng) % 3;
    if (s.p != nullptr && op == 0) {
        g_in_allocator = 1;
        free(s.p);
        g_in_allocator = 0;
        s.p = nullptr;
        return true;
    }
    const size_t n = churn_size(rng);
    if (s.p != nullptr && op == 1) {
        g_in_allocator = 1;
        auto* q = static_cast<unsigned char*>(realloc(s.p, n));
        g_in_allocator = 0;
        if (q == nullptr || q[0] != s.v)
            return false;
        s.p = q;
    } else {
        g_in_allocator = 1;
        free(s.p);
        s.p = static_cast<unsigned char*>(malloc(n));
        g_in_allocator = 0;
        if (s.p == nullptr)
            return false;
    }
    s.n = n;
    s.v = static_cast<unsigned char>(testing::next_random(rng));
    s.p[n - 1] = static_cast<unsigned char>(s.v ^ 0x5a);
    s.p[0] = s.v;
    return true;
}

void free_all(std::vector<Slot>& slots) {
    for (Slot& s : slots) {
        free(s.p);
        s = Slot{};
    }
}

/// A child's allocator at work: its blocks from the parent intact, `steps` checked operations,
/// the same on a new thread, then malloc_trim. 0 when all is well.
int child_allocates(std::vector<Slot>& slots, uint64_t rng, int steps) {
    for (const Slot& s : slots)
        if (!intact(s))
            return 40;
    for (int i = 0; i < steps; ++i)
        if (!churn_step(slots, rng))
            return 41;
    int rc = 0;
    std::thread t([&rc, steps] {
        std::vector<Slot> mine(64);
        uint64_t r = 77;
        for (int i = 0; i < steps; ++i)
            if (!churn_step(mine, r))
                rc = 42;
        free_all(mine);
    });
    t.join();
    free_all(slots);
    malloc_trim(0);
    return rc;
}

// ---- fork while other threads hold stdio locks and wait in the allocator ----

/// glibc's tst-malloc-fork-deadlock, bounded: threads read a file of long lines with getdelim
/// (which holds the FILE's lock while realloc grows the line past the small sizes), write
/// memory streams, flush every stream (fflush(NULL) holds the stream list lock and waits for
/// each FILE's lock), open and close files and reallocate, while this thread and another fork
/// for 3 s. A fork handler that waits for an allocator lock while glibc's fork waits for the
/// stream list lock deadlocks with them.
int fork_while_stdio_waits() {
    const char* dir = getenv("ARENA_STATS_DIR");
    if (dir == nullptr)
        return 60;
    const std::string lines = std::string(dir) + "/lines";
    {
        FILE* f = fopen(lines.c_str(), "w");
        if (f == nullptr)
            return 61;
        const std::string line(150000, 'x');
        for (int i = 0; i < 6; ++i)
            fprintf(f, "%s\n", line.c_str());
        fclose(f);
    }
    std::atomic<bool> stop{false};
    std::atomic<int> bad{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < 2; ++t)
        ts.emplace_back([&] {
            while (!stop.load(std::memory_order_relaxed)) {
                FILE* f = fopen(lines.c_str(), "r");
                if (f == nullptr) {
                    ++bad;
                    return;
                }
                char* line = nullptr;
                size_t cap = 0;
                while (getdelim(&line, &cap, '\n', f) > 0) {
                }
                free(line);
                fclose(f);
            }
        });
    ts.emplace_back([&] {
        while (!stop.load(std::memory_order_relaxed)) {
            char* buf = nullptr;
            size_t len = 0;
            FILE* m = open_memstream(&buf, &len);
            if (m == nullptr) {
                ++bad;
                return;
            }
            for (int i = 0; i < 3000; ++i)
                fprintf(m, "line %d of a memory stream\n", i);
            fclose(m);
            free(buf);
        }
    });
    ts.emplace_back([&] {
        while (!stop.load(std::memory_order_relaxed))
            fflush(nullptr);
    });
    ts.emplace_back([&] {
        std::vector<Slot> slots(32);
        uint64_t rng = 5;
        while (!stop.load(std::memory_order_relaxed))
            if (!churn_step(slots, rng))
                ++bad;
        free_all(slots);
    });
    ts.emplace_back([&] { // a second thread that forks (children that only exit)
        while (!stop.load(std::memory_order_relaxed)) {
            const pid_t pid = fork();
            if (pid == 0)
                _exit(17);
            const int status = pid < 0 ? -1 : wait_bounded(pid, 5000);
            if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 17)
                ++bad;
        }
    });
    int forks = 0, failures = 0;
    const auto end = Clock::now() + std::chrono::seconds(3);
    while (Clock::now() < end) {
        const pid_t pid = fork();
        if (pid < 0) {
            ++failures;
            break;
        }
        if (pid == 0) {
            void* p = malloc(100);
            void* q = malloc(300000);
            void* r = realloc(p, 5000);
            const bool ok = q != nullptr && r != nullptr;
            free(q);
            free(r);
            _exit(ok ? 0 : 1);
        }
        const int status = wait_bounded(pid, 5000);
        if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            ++failures;
        ++forks;
    }
    stop = true;
    for (auto& t : ts)
        t.join();
    printf("%d forks, %d failed\n", forks, failures);
    return failures == 0 && bad == 0 && forks > 0 ? 0 : 1;
}
ARENA_TEST_CHILD(fork_while_stdio_waits) {
    return fork_while_stdio_waits();
}

// ---- fork from a signal handler that interrupted the allocator ----

const int kHandlerForks = testing::rounds(400);
std::atomic<int> g_handler_forks{0};
std::atomic<int> g_handler_failures{0};
std::atomic<bool> g_forking_done{false};
volatile sig_atomic_t g_in_child = 0;

/// The timer's handler: forks, when it interrupted malloc, free or realloc (g_in_allocator; with
/// two threads, the other thread's flag may be the one set). Most children _exit at once
/// (tst-mallocfork2); every eighth
/// returns from the handler, so that the code it interrupted (maybe inside malloc) finishes in
/// the child, which then allocates on (the loops below check g_in_child).
void fork_on_timer(int) {
    if (!g_in_allocator || g_in_child || g_forking_done.load(std::memory_order_relaxed))
        return;
    const int saved = errno;
    const int n = g_handler_forks.load(std::memory_order_relaxed);
    const pid_t pid = fork();
    if (pid == 0) {
        if (n % 8 == 7) {
            g_in_child = 1;
            errno = saved;
            return;
        }
        _exit(0);
    }
    if (pid < 0) {
        ++g_handler_failures;
    } else {
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            ++g_handler_failures;
    }
    if (g_handler_forks.fetch_add(1) + 1 >= kHandlerForks)
        g_forking_done = true;
    errno = saved;
}

/// malloc, free and realloc of small and large sizes until the handler has forked
/// kHandlerForks times (or 60 s passed); a child that returned from the handler allocates on
/// and exits. False when a block was damaged or an allocation failed.
bool churn_while_forking(uint64_t seed) {
    std::vector<Slot> slots(64);
    uint64_t rng = seed;
    bool ok = true;
    const auto end = Clock::now() + std::chrono::seconds(60);
    while (!g_forking_done.load(std::memory_order_relaxed) && Clock::now() < end) {
        if (!churn_step(slots, rng))
            ok = false;
        if (g_in_child)
            _exit(ok ? child_allocates(slots, rng, 300) : 43);
    }
    free_all(slots);
    return ok;
}

int fork_from_signal_handler(bool second_thread) {
    g_large_only = getenv("FORK_TEST_LARGE") != nullptr;
    struct sigaction sa {};
    sa.sa_handler = fork_on_timer;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, nullptr) != 0)
        return 70;
    std::atomic<bool> other_ok{true};
    std::thread other;
    if (second_thread)
        other = std::thread([&other_ok] { other_ok = churn_while_forking(99); });
    // A timer every 100 us, its signal sent to the process: either thread takes it.
    sigevent sev{};
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGUSR1;
    timer_t timer{};
    if (timer_create(CLOCK_MONOTONIC, &sev, &timer) != 0)
        return 71;
    itimerspec its{};
    its.it_interval.tv_nsec = 100 * 1000;
    its.it_value.tv_nsec = 100 * 1000;
    timer_settime(timer, 0, &its, nullptr);
    const bool ok = churn_while_forking(1);
    g_forking_done = true;
    timer_delete(timer);
    if (other.joinable())
        other.join();
    const int forks = g_handler_forks.load();
    printf("%d forks from the handler, %d failed\n", forks, g_handler_failures.load());
    if (!ok || !other_ok)
        return 72;
    return forks >= kHandlerForks && g_handler_failures.load() == 0 ? 0 : 73;
}
ARENA_TEST_CHILD(fork_from_signal_handler) {
    return fork_from_signal_handler(false);
}
ARENA_TEST_CHILD(fork_from_signal_handler_two_threads) {
    return fork_from_signal_handler(true);
}

// ---- The child's allocator and stats page after a fork under load ----

/// Sum of an event over the shards in use of the page at `path`; -1 when it cannot be read or
/// is not a page of `pid`.
int64_t page_event(const std::string& path, pid_t pid, unsigned event) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    std::vector<char> buf(sizeof(arena_stats_page));
    const ssize_t got = pread(fd, buf.data(), buf.size(), 0);
    close(fd);
    if (got != static_cast<ssize_t>(buf.size()))
        return -1;
    const auto* page = reinterpret_cast<const arena_stats_page*>(buf.data());
    if (page->head.magic != ARENA_STATS_MAGIC || page->head.pid != pid)
        return -1;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < page->head.shards_used && i < ARENA_STATS_SHARDS; ++i)
        sum += page->shards[i].events[event];
    return static_cast<int64_t>(sum);
}

/// In a child forked while its parent's threads allocate: its page is its own (its file, its
/// pid, and the parent's page no longer mapped here), it counts into it, and its allocator works.
int child_under_load(const std::string& user_dir, pid_t parent) {
    const std::string mine = user_dir + "/" + std::to_string(getpid());
    const std::string theirs = user_dir + "/" + std::to_string(parent);
    const int64_t before = page_event(mine, getpid(), ARENA_EV_malloc_calls);
    if (before < 0)
        return 50;
    {
        std::ifstream maps("/proc/self/maps");
        bool mapped = false;
        for (std::string line; std::getline(maps, line);) {
            if (line.size() >= theirs.size() &&
                line.compare(line.size() - theirs.size(), theirs.size(), theirs) == 0)
                return 51; // still writing into the parent's page
            if (line.size() >= mine.size() &&
                line.compare(line.size() - mine.size(), mine.size(), mine) == 0)
                mapped = true;
        }
        if (!mapped)
            return 52;
    }
    std::vector<Slot> slots(256);
    if (const int rc = child_allocates(slots, static_cast<uint64_t>(getpid()), 2000); rc != 0)
        return rc;
    // Distinct blocks: each keeps what was written into it.
    std::vector<uint32_t*> blocks;
    for (uint32_t i = 0; i < 5000; ++i) {
        auto* b = static_cast<uint32_t*>(malloc(16 + (i % 7) * 24));
        if (b == nullptr)
            return 53;
        b[0] = i;
        blocks.push_back(b);
    }
    for (uint32_t i = 0; i < blocks.size(); ++i)
        if (blocks[i][0] != i)
            return 54;
    for (uint32_t* b : blocks)
        free(b);
    const int64_t after = page_event(mine, getpid(), ARENA_EV_malloc_calls);
    if (after < before + 5000)
        return 55; // the child's mallocs are not counted in its own page
    return 0;
}

/// The parent: threads allocate (small and large, realloc, malloc_trim) and come and go (heaps
/// abandoned and adopted) while this thread forks 20 times; every child must work, and leave
/// the parent's page alone.
int fork_under_load() {
    const char* dir = getenv("ARENA_STATS_DIR");
    if (dir == nullptr)
        return 60;
    const std::string user_dir = std::string(dir) + "/" + std::to_string(geteuid());
    std::atomic<bool> stop{false};
    std::atomic<int> bad{0};
    std::vector<std::thread> ts;
    for (uint64_t t = 0; t < 3; ++t)
        ts.emplace_back([&, t] {
            std::vector<Slot> slots(64);
            uint64_t rng = t + 11;
            for (unsigned i = 0; !stop.load(std::memory_order_relaxed); ++i) {
                if (!churn_step(slots, rng))
                    ++bad;
                if ((i & 1023) == 0)
                    malloc_trim(0);
            }
            free_all(slots);
        });
    ts.emplace_back([&] {
        while (!stop.load(std::memory_order_relaxed))
            std::thread([] {
                std::vector<Slot> slots(16);
                uint64_t rng = 3;
                for (int i = 0; i < 200; ++i)
                    churn_step(slots, rng);
                free_all(slots);
            }).join();
    });
    int failures = 0;
    for (int round = 0, n = testing::rounds(20); round < n; ++round) {
        const pid_t pid = fork();
        if (pid < 0)
            return 62;
        if (pid == 0)
            _exit(child_under_load(user_dir, getppid()));
        const int status = wait_bounded(pid, 20000);
        if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            ++failures;
            printf("child %d: status %d (exit code %d)\n", round, status,
                   status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        }
        // The child wrote nothing into this process's page: it is still a page of this pid.
        if (page_event(user_dir + "/" + std::to_string(getpid()), getpid(), ARENA_EV_malloc_calls) <
            0) {
            ++failures;
            printf("child %d: the parent's page is not the parent's any more\n", round);
        }
    }
    stop = true;
    for (auto& t : ts)
        t.join();
    return failures == 0 && bad == 0 ? 0 : 1;
}
ARENA_TEST_CHILD(fork_under_load) {
    return fork_under_load();
}

/// The dirty bytes after malloc_trim, once nothing is in flight: the child may have started a
/// purger of its own, whose batch (busy runs) trim cannot return; it is given back within
/// milliseconds. Counts left wrong by the fork never come back to 0.
size_t dirty_after_trim(struct mallinfo2* out) {
    for (int i = 0; i < 1000; ++i) {
        malloc_trim(0);
        *out = mallinfo2();
        if (out->keepcost == 0)
            return 0;
        usleep(1000);
    }
    return out->keepcost;
}

/// In a child: the page counts are exact. After malloc_trim nothing is dirty (a run the purger
/// had taken at the fork, busy, must have been given back, and counted once); allocating and
/// freeing 64 MiB leaves the counts where they were.
int child_page_counts_exact() {
    struct mallinfo2 a {};
    if (dirty_after_trim(&a) != 0)
        return 40;
    void* v[64]; // not a std::vector: a first small block would add a slab's pages
    for (void*& p : v) {
        p = malloc(1 << 20);
        if (p == nullptr)
            return 41;
        memset(p, 0x5a, 1 << 20);
    }
    for (void* p : v)
        free(p);
    struct mallinfo2 b {};
    if (dirty_after_trim(&b) != 0)
        return 42;
    return b.arena == a.arena ? 0 : 43;
}

ARENA_TEST_CHILD(fork_while_purging) {
    // 256 MiB of large blocks, written and freed: the background purger returns them in
    // batches (taken under the pages lock, returned without it, given back under it) about a
    // delay later. Forks meanwhile land in every phase, mostly while a batch is being returned
    // without the lock (the child gives it back: purger::fork_child); a fork while the purger
    // holds the pages lock (microseconds per batch) is rarely hit here. Each child must find
    // its page counts exact.
    constexpr size_t kBlock = size_t{1} << 20;
    for (int round = 0, n = testing::rounds(6); round < n; ++round) {
        std::vector<void*> v;
        for (int i = 0; i < 256; ++i) {
            v.push_back(malloc(kBlock));
            if (v.back() == nullptr)
                return 2;
            memset(v.back(), 0x11, kBlock);
        }
        for (void* p : v)
            free(p);
        const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
        do {
            const pid_t pid = fork();
            if (pid < 0)
                return 3;
            if (pid == 0)
                _exit(child_page_counts_exact());
            int status = 0;
            if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
                return 4;
            if (WEXITSTATUS(status) != 0)
                return WEXITSTATUS(status);
        } while (std::chrono::steady_clock::now() < end);
    }
    return 0;
}

} // namespace

TEST_CASE("fork while threads hold stdio locks and wait in the allocator: no deadlock") {
    const Bounded r = run_bounded("fork_while_stdio_waits", 30);
    CHECK_FALSE(r.timed_out);
    CHECK(r.exited);
    CHECK(r.code == 0);
}

TEST_CASE("fork from a signal handler that interrupted malloc, free or realloc: no deadlock") {
    // With ARENA_PURGE_DELAY_MS=0 every free of a large block returns its pages at once, a
    // system call inside the pages lock: the timer's signal, due during it, arrives as it returns,
    // inside the critical section. With FORK_TEST_LARGE=1 every malloc and free takes that lock.
    struct Case {
        std::string child;
        std::vector<std::string> env;
    };
    const std::vector<std::string> large = {"ARENA_PURGE_DELAY_MS=0", "FORK_TEST_LARGE=1"};
    const Case cases[] = {
        {"fork_from_signal_handler", {}},
        {"fork_from_signal_handler", {"ARENA_PURGE_DELAY_MS=0"}},
        {"fork_from_signal_handler_two_threads", {"ARENA_PURGE_DELAY_MS=0"}},
        {"fork_from_signal_handler_two_threads", large},
    };
    for (const Case& c : cases) {
        CAPTURE(c.child);
        const std::string env = c.env.empty() ? "" : c.env.back();
        CAPTURE(env);
        const Bounded r = run_bounded(c.child, 60, c.env);
        CHECK_FALSE(r.timed_out);
        CHECK(r.exited);
        CHECK(r.code == 0);
    }
}

TEST_CASE("fork while the background purger returns pages: the child's page counts are exact") {
    const Bounded r = run_bounded("fork_while_purging", 60, {"ARENA_PURGE_DELAY_MS=20"});
    CHECK_FALSE(r.timed_out);
    CHECK(r.exited);
    CHECK(r.code == 0);
}

TEST_CASE("a child forked under allocation load: its allocator works, its stats page is its own") {
    const Bounded r = run_bounded("fork_under_load", 90);
    CHECK_FALSE(r.timed_out);
    CHECK(r.exited);
    CHECK(r.code == 0);
}
