// SPDX-License-Identifier: MIT
// Memory back when idle: a process that frees a lot and then allocates nothing gets its RSS
// back within the purge delay (two ticks) plus a margin, for large blocks and for many 4 KiB
// blocks; and the background purger that makes it so is invisible to the program: no thread,
// no descriptor, nothing for waitpid, no SIGCHLD, none in a fork child, none after exec, none
// with ARENA_PURGE_DELAY_MS=-1 or 0 or under a seccomp filter. (Secure-exec: test_page_safety,
// the setuid probe.)
//
// Every check runs in a child process of this binary (options are read once per process) and
// bounds its own waiting; each prints what it saw.
#include "testing.h"

#include <doctest/doctest.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <string>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <time.h>
#include <unistd.h>
#include <vector>

namespace {

// Through volatile pointers: a malloc that is only written and freed may be elided.
void* (*volatile do_malloc)(size_t) = malloc;
void (*volatile do_free)(void*) = free;

constexpr int kDelayMs = 200; // ARENA_PURGE_DELAY_MS of the children below
const std::string kDelayEnv = "ARENA_PURGE_DELAY_MS=" + std::to_string(kDelayMs);

uint64_t now_ms() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

/// Reads the start of a /proc file into buf as a C string, without allocating; false when it
/// cannot be read or is empty.
bool read_proc(const char* path, char* buf, size_t size) {
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    const ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return true;
}

/// Resident bytes from /proc/self/statm, with no allocation (the process must stay idle).
size_t rss_now() {
    char buf[128];
    if (!read_proc("/proc/self/statm", buf, sizeof buf))
        return 0;
    const char* p = strchr(buf, ' ');
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return p == nullptr ? 0 : strtoul(p + 1, nullptr, 10) * page;
}

/// Sleeps without allocating until RSS is below `target` or `deadline_ms` passes; returns the
/// milliseconds it took, or -1.
long wait_rss_below(size_t target, uint64_t deadline_ms) {
    const uint64_t start = now_ms();
    for (;;) {
        if (rss_now() < target)
            return static_cast<long>(now_ms() - start);
        if (now_ms() - start > deadline_ms)
            return -1;
        usleep(20000);
    }
}

/// Pids of the processes whose parent is `parent` (and, when `comm` is not empty, whose name
/// is `comm`), from /proc/<pid>/stat. `zombies` counts ended ones too.
std::vector<int> children_of(int parent, const std::string& comm = "", bool zombies = true) {
    std::vector<int> out;
    DIR* d = opendir("/proc");
    if (d == nullptr)
        return out;
    while (dirent* e = readdir(d)) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        const int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        const ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        const char* open_paren = strchr(buf, '(');
        const char* close_paren = strrchr(buf, ')');
        if (open_paren == nullptr || close_paren == nullptr || close_paren[1] == '\0')
            continue;
        char state = 0;
        int ppid = 0;
        if (sscanf(close_paren + 2, "%c %d", &state, &ppid) != 2 || ppid != parent)
            continue;
        if (!zombies && (state == 'Z' || state == 'X'))
            continue;
        if (!comm.empty() && std::string(open_paren + 1, close_paren) != comm)
            continue;
        out.push_back(atoi(e->d_name));
    }
    closedir(d);
    return out;
}

/// This process's purgers. A purger names itself first thing after it starts: when `expect` is
/// given, waits up to a second for that many.
std::vector<int> purgers(size_t expect = 0) {
    std::vector<int> found = children_of(getpid(), "arena-purger");
    for (int i = 0; i < 100 && found.size() < expect; ++i) {
        usleep(10000);
        found = children_of(getpid(), "arena-purger");
    }
    return found;
}

/// The state letter of /proc/<pid>/stat, or 0 when there is no such process.
char process_state(int pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (!read_proc(path, buf, sizeof buf))
        return 0;
    const char* p = strrchr(buf, ')');
    return p != nullptr && p[1] == ' ' ? p[2] : 0;
}

std::string status_field(const char* key) {
    char buf[4096];
    if (!read_proc("/proc/self/status", buf, sizeof buf))
        return "";
    const char* p = strstr(buf, key);
    if (p == nullptr)
        return "";
    const char* end = strchr(p, '\n');
    return std::string(p, end != nullptr ? end : p + strlen(p));
}

/// This process's descriptors but `skip_a` and `skip_b`, as "0 1 2 ".
std::string fd_list(int skip_a = -1, int skip_b = -1) {
    std::string s;
    DIR* d = opendir("/proc/self/fd");
    if (d == nullptr)
        return s;
    const int own = dirfd(d);
    while (dirent* e = readdir(d)) {
        const int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd != own && fd != skip_a && fd != skip_b)
            s += std::string(e->d_name) + " ";
    }
    closedir(d);
    return s;
}

/// Allocates about `bytes` in large blocks (64 KiB .. 4 MiB) and small ones (16 B .. 32 KiB),
/// touches every byte, and returns them.
std::vector<void*> allocate_mixed(size_t bytes, uint64_t seed) {
    std::vector<void*> v;
    v.reserve(1 << 18);
    uint64_t rng = seed;
    for (size_t got = 0; got < bytes;) {
        const uint64_t r = testing::next_random(rng);
        const size_t n = r % 10 < 4 ? (64u << 10) + r % (4u << 20) : 16 + (r >> 8) % (32u << 10);
        void* p = do_malloc(n);
        if (p == nullptr)
            break;
        memset(p, 0x5a, n);
        v.push_back(p);
        got += n;
    }
    return v;
}

/// Frees v in an order that mixes the sizes (every 7th first, then the rest), as a program
/// dropping a cache would.
void free_all(std::vector<void*>& v) {
    for (size_t i = 0; i < v.size(); i += 7)
        do_free(v[i]);
    for (size_t i = 0; i < v.size(); ++i)
        if (i % 7 != 0)
            do_free(v[i]);
    v.clear();
    v.shrink_to_fit();
}

/// After a free of `freed` bytes from a baseline RSS: waits without allocating for RSS to come
/// within 10% of the freed amount of the baseline. 0 when it did.
int expect_rss_back(size_t baseline, size_t freed, const char* what) {
    const size_t target = baseline + freed / 10;
    const long took = wait_rss_below(target, 2 * kDelayMs + 1500);
    if (took < 0) {
        printf("%s: RSS still %zu MiB, %zu MiB freed, baseline %zu MiB, after %d ms idle\n", what,
               rss_now() >> 20, freed >> 20, baseline >> 20, 2 * kDelayMs + 1500);
        return 1;
    }
    printf("%s: RSS back to %zu MiB (baseline %zu MiB, %zu MiB freed) %ld ms after the free\n",
           what, rss_now() >> 20, baseline >> 20, freed >> 20, took);
    if (getenv("ARENA_TEST_WATCH") != nullptr)
        for (int i = 0; i < 10; ++i) {
            usleep(200000);
            printf("  +%d ms: %zu KiB\n", (i + 1) * 200, rss_now() >> 10);
        }
    return 0;
}

volatile sig_atomic_t g_sigchld = 0;
void on_sigchld(int) {
    g_sigchld = g_sigchld + 1;
}

bool futex_waitv_exists() {
#ifdef SYS_futex_waitv
    return syscall(SYS_futex_waitv, nullptr, 0, 0, nullptr, 0) != -1 || errno != ENOSYS;
#else
    return syscall(449, nullptr, 0, 0, nullptr, 0) != -1 || errno != ENOSYS;
#endif
}

/// Starts a purger (if this process may have one): frees 64 MiB it touched.
void free_a_lot() {
    constexpr size_t kBytes = 64u << 20;
    char* p = static_cast<char*>(do_malloc(kBytes));
    if (p != nullptr) {
        memset(p, 1, kBytes);
        do_free(p);
    }
}

} // namespace

ARENA_TEST_CHILD(idle_after_large_free) {
    const size_t baseline = rss_now();
    std::vector<void*> v = allocate_mixed(512u << 20, 7);
    const size_t peak = rss_now();
    free_all(v);
    return expect_rss_back(baseline, peak - baseline, "512 MiB of mixed sizes");
}

ARENA_TEST_CHILD(idle_after_small_frees) {
    // A cache of 4 KiB values (redis's case): 4100 bytes each with their headers.
    const size_t baseline = rss_now();
    std::vector<void*> v;
    v.reserve(60000);
    for (int i = 0; i < 60000; ++i) {
        void* p = do_malloc(4100);
        if (p == nullptr)
            return 2;
        memset(p, 0x33, 4100);
        v.push_back(p);
    }
    const size_t peak = rss_now();
    uint64_t rng = 11; // deleted in random order
    for (size_t i = v.size(); i > 1; --i)
        std::swap(v[i - 1], v[testing::next_random(rng) % i]);
    free_all(v);
    return expect_rss_back(baseline, peak - baseline, "60000 blocks of 4100 bytes");
}

ARENA_TEST_CHILD(idle_after_remote_frees) {
    // The blocks are allocated by a thread that then sleeps, and freed by this one: the owner
    // never sees the frees (it makes no further call), yet its slabs' pages must go back.
    const size_t baseline = rss_now();
    std::vector<void*> v;
    testing::IdleThread owner([&v] {
        for (int i = 0; i < 30000; ++i) {
            void* p = do_malloc(4100);
            if (p == nullptr)
                return;
            memset(p, 0x44, 4100);
            v.push_back(p);
        }
    });
    if (v.size() != 30000)
        return 2;
    const size_t peak = rss_now();
    free_all(v);
    return expect_rss_back(baseline, peak - baseline, "30000 blocks freed by another thread");
}

ARENA_TEST_CHILD(purger_is_invisible) {
    struct sigaction sa {};
    sa.sa_handler = on_sigchld;
    sigaction(SIGCHLD, &sa, nullptr);
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0)
        return 2;
    const std::string threads = status_field("Threads:");
    const std::string fds = fd_list(pipe_fds[0], pipe_fds[1]); // the pipe is closed below
    errno = 0;
    if (waitpid(-1, nullptr, WNOHANG) != -1 || errno != ECHILD)
        return 3;
    if (!purgers().empty()) {
        printf("a purger before any free\n");
        return 4;
    }
    const size_t baseline = rss_now();
    free_a_lot();
    const std::vector<int> mine = purgers(1);
    if (mine.size() != 1) {
        printf("expected one purger, found %zu\n", mine.size());
        return 5;
    }
    int rc = 0;
    auto check = [&](const char* when) {
        if (status_field("Threads:") != threads) {
            printf("%s: %s, was %s\n", when, status_field("Threads:").c_str(), threads.c_str());
            rc = 10;
        }
        if (fd_list(pipe_fds[0], pipe_fds[1]) != fds) {
            printf("%s: descriptors %s, were %s\n", when, fd_list().c_str(), fds.c_str());
            rc = 11;
        }
        errno = 0;
        const pid_t w = waitpid(-1, nullptr, WNOHANG);
        if (w != -1 || errno != ECHILD) {
            printf("%s: waitpid(-1, WNOHANG) = %d, errno %d\n", when, static_cast<int>(w), errno);
            rc = 12;
        }
        siginfo_t si{};
        errno = 0;
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG) != -1 || errno != ECHILD) {
            printf("%s: waitid(P_ALL) found pid %d\n", when, static_cast<int>(si.si_pid));
            rc = 13;
        }
        if (g_sigchld != 0) {
            printf("%s: SIGCHLD\n", when);
            rc = 14;
        }
    };
    check("after the purger started");
    // The purger holds no copy of the program's descriptors: a pipe whose write end the program
    // closes reads as ended at once.
    close(pipe_fds[1]);
    pollfd pfd{pipe_fds[0], POLLIN, 0};
    char c;
    if (poll(&pfd, 1, 1000) != 1 || read(pipe_fds[0], &c, 1) != 0) {
        printf("the pipe did not end when its write end was closed\n");
        rc = 15;
    }
    close(pipe_fds[0]);
    if (expect_rss_back(baseline, 64u << 20, "64 MiB") != 0)
        rc = 16;
    check("after the purge");
    // It sleeps when there is nothing to purge: no CPU time while the process is idle.
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", mine[0]);
    auto cpu_ticks = [&path] {
        char buf[512];
        const int fd = open(path, O_RDONLY | O_CLOEXEC);
        const ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
        if (fd >= 0)
            close(fd);
        if (n <= 0)
            return -1L;
        buf[n] = '\0';
        const char* p = strrchr(buf, ')');
        long utime = 0, stime = 0;
        // state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        if (p == nullptr || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld",
                                   &utime, &stime) != 2)
            return -1L;
        return utime + stime;
    };
    // A tick that began before the RSS came back may still be finishing (in a debug build its
    // assertions recount whole bitmaps: milliseconds), so idleness is looked for in up to five
    // windows of 600 ms; a purger that keeps running uses CPU in all of them.
    long t0 = -1, t1 = -1;
    for (int window = 0; window < 5 && (t0 < 0 || t1 != t0); ++window) {
        t0 = cpu_ticks();
        usleep(600000);
        t1 = cpu_ticks();
    }
    if (t0 < 0 || t1 != t0) {
        printf("the idle purger used CPU in five windows of 600 ms: %ld -> %ld ticks in the last\n",
               t0, t1);
        rc = 17;
    }
    return rc;
}

ARENA_TEST_CHILD(no_purger) {
    free_a_lot();
    usleep(3 * kDelayMs * 1000);
    const size_t n = children_of(getpid()).size();
    printf("child processes %zu\n", n);
    return n == 0 ? 0 : 1;
}

ARENA_TEST_CHILD(no_purger_under_seccomp) {
    // A filter that allows everything: the purger still stays away, since another filter might
    // kill the process for a system call the purger needs.
    sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    sock_fprog prog{1, allow};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return 2;
    free_a_lot();
    usleep(3 * kDelayMs * 1000);
    const size_t n = children_of(getpid()).size();
    printf("child processes %zu\n", n);
    return n == 0 ? 0 : 1;
}

ARENA_TEST_CHILD(report_children) {
    // An image made by exec: it must have inherited no purger, and get no SIGCHLD for one.
    struct sigaction sa {};
    sa.sa_handler = on_sigchld;
    sigaction(SIGCHLD, &sa, nullptr);
    usleep(300000);
    const size_t n = children_of(getpid()).size();
    printf("after exec: %zu children, %d SIGCHLD\n", n, static_cast<int>(g_sigchld));
    fflush(stdout);
    return n == 0 && g_sigchld == 0 ? 0 : 1;
}

ARENA_TEST_CHILD(fork_and_exec) {
    free_a_lot();
    if (purgers(1).size() != 1) {
        printf("no purger in the parent\n");
        return 2;
    }
    // A failed exec stops the purger, and the process gets one again when it needs one.
    errno = 0;
    if (execl("/nonexistent/arena-test", "x", static_cast<char*>(nullptr)) != -1 || errno != ENOENT)
        return 3;
    free_a_lot();
    if (purgers(1).size() != 1) {
        printf("%zu purgers after a failed exec\n", purgers().size());
        return 4;
    }
    int report[2];
    if (pipe(report) != 0)
        return 5;
    fflush(stdout);
    const pid_t pid = fork();
    if (pid < 0)
        return 6;
    if (pid == 0) {
        close(report[0]);
        int out[2] = {static_cast<int>(children_of(getpid()).size()), 0};
        free_a_lot();
        const std::vector<int> mine = purgers(1);
        out[1] = mine.size() == 1 ? mine[0] : -static_cast<int>(mine.size());
        if (write(report[1], out, sizeof out) != sizeof out)
            _exit(120);
        close(report[1]);
        testing::exec_child("report_children"); // execl: the purger goes first
    }
    close(report[1]);
    int got[2] = {-1, -1};
    const ssize_t n = read(report[0], got, sizeof got);
    close(report[0]);
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return 7;
    if (n != sizeof got)
        return 8;
    int rc = 0;
    if (got[0] != 0) {
        printf("the fork child had %d purgers before it freed anything\n", got[0]);
        rc = 9;
    }
    if (got[1] <= 0) {
        printf("the fork child had %d purgers after a large free\n", -got[1]);
        rc = 10;
    } else if (process_state(got[1]) != 0) {
        printf("the fork child's purger %d is still there (state %c)\n", got[1],
               process_state(got[1]));
        rc = 11;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("the exec'd child ended with status %d\n", status);
        rc = 12;
    }
    if (children_of(getpid()).size() != 1 || purgers().size() != 1) {
        printf("the parent has %zu children\n", children_of(getpid()).size());
        rc = 13;
    }
    return rc;
}

ARENA_TEST_CHILD(raw_exec_target) {
    // Made by a raw execve system call from a process whose purger was `ARENA_TEST_PURGER`: that
    // purger must end within a second or two (letting go of the old image), and is reaped here.
    const char* s = getenv("ARENA_TEST_PURGER");
    const int old = s != nullptr ? atoi(s) : 0;
    if (old <= 0)
        return 2;
    const uint64_t start = now_ms();
    for (;;) {
        const char st = process_state(old);
        if (st == 0 || st == 'Z')
            break;
        if (now_ms() - start > 2000) {
            printf("the old image's purger %d still runs (state %c)\n", old, st);
            return 1;
        }
        usleep(10000);
    }
    waitpid(old, nullptr, __WALL | WNOHANG);
    printf("the old purger ended %lu ms after the exec\n",
           static_cast<unsigned long>(now_ms() - start));
    return 0;
}

ARENA_TEST_CHILD(raw_exec) {
    free_a_lot();
    const std::vector<int> mine = purgers(1);
    if (mine.size() != 1)
        return 2;
    char exe[4096];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return 3;
    exe[n] = '\0';
    setenv("ARENA_TEST_PURGER", std::to_string(mine[0]).c_str(), 1);
    const char* argv[] = {exe, "--child=raw_exec_target", nullptr};
    fflush(stdout);
    syscall(SYS_execve, exe, argv, environ); // not through libc: the purger must notice alone
    return 4;
}

namespace {

/// Runs a child with the purge delay of these tests; `show` passes its output on (figures).
void check_child(const char* name, bool show) {
    const testing::ChildResult r = testing::run_child(name, {kDelayEnv});
    if (show)
        MESSAGE(r.out);
    CHECK(r.exited);
    CHECK_MESSAGE(r.code == 0, r.out << r.err);
}

} // namespace

TEST_SUITE("purge") {

    TEST_CASE("RSS returns after a large free followed by idleness") {
        check_child("idle_after_large_free", true);
    }

    TEST_CASE("RSS returns after many 4 KiB blocks are freed and the process idles") {
        check_child("idle_after_small_frees", true);
    }

    TEST_CASE("RSS returns after another thread frees a sleeping thread's blocks") {
        check_child("idle_after_remote_frees", true);
    }

    TEST_CASE("the purger is invisible: threads, descriptors, waitpid, SIGCHLD, idle CPU") {
        check_child("purger_is_invisible", false);
    }

    TEST_CASE("no purger with ARENA_PURGE_DELAY_MS=-1 or 0") {
        for (const char* env : {"ARENA_PURGE_DELAY_MS=-1", "ARENA_PURGE_DELAY_MS=0"}) {
            const testing::ChildResult r = testing::run_child("no_purger", {env});
            CHECK(r.exited);
            CHECK_MESSAGE(r.code == 0, env << ": " << r.out << r.err);
        }
    }

    TEST_CASE("no purger in a process under a seccomp filter") {
        check_child("no_purger_under_seccomp", false);
    }

    TEST_CASE("a fork child has no purger until it needs one; exec leaves none behind") {
        check_child("fork_and_exec", true);
    }

    TEST_CASE("an exec that bypasses libc still ends the purger") {
        if (!futex_waitv_exists()) {
            MESSAGE("skipped: no futex_waitv (Linux < 5.16): such an exec is not watched");
            return;
        }
        check_child("raw_exec", true);
    }

} // TEST_SUITE
