// SPDX-License-Identifier: MIT
// A process that lowers RLIMIT_AS or RLIMIT_DATA, or starts under a low one, keeps working
// under libarena as it does under glibc's malloc (issue 14, item 2): threads, mmap, stdio and
// malloc after the limit, blocks allocated before it intact, NULL + ENOMEM (no crash) beyond it.
// And the interposed setrlimit/prlimit forward exactly: return values, errno, the old limit,
// other resources and other processes untouched.
//
// Every case runs in a child of this binary (a limit cannot be raised back once the hard limit
// is lowered), killed after kChildSeconds: a hang is a failure.
#include "testing.h"

#include <doctest/doctest.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <string>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

namespace {

constexpr int kChildSeconds = 30;
constexpr size_t MiB = size_t{1} << 20;
constexpr size_t GiB = size_t{1} << 30;

// Calls through volatile pointers, so that the compiler keeps every allocation.
void* (*volatile do_malloc)(size_t) = malloc;
void* (*volatile do_realloc)(void*, size_t) = realloc;
void (*volatile do_free)(void*) = free;

#define FAIL_IF(cond, code)                                                                        \
    do {                                                                                           \
        if (cond) {                                                                                \
            fprintf(stderr, "%s:%d: %s (errno %d)\n", __FILE__, __LINE__, #cond, errno);           \
            return code;                                                                           \
        }                                                                                          \
    } while (0)

/// Fork, optionally set RLIMIT_AS (soft and hard) to `as_limit`, exec this binary's child
/// `name`; waits at most kChildSeconds, then kills it. Returns the wait status, or -1 when killed.
int run_bounded(const char* name, const std::vector<std::string>& env, size_t as_limit = 0) {
    const pid_t pid = fork();
    if (pid == 0) {
        if (as_limit != 0) {
            const rlimit lim{as_limit, as_limit};
            if (setrlimit(RLIMIT_AS, &lim) != 0)
                _exit(126);
        }
        testing::exec_child(name, env);
    }
    const timespec tick{0, 10 * 1000 * 1000};
    for (int waited = 0; waited < kChildSeconds * 100; ++waited) {
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return status;
        nanosleep(&tick, nullptr);
    }
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    MESSAGE("child ", name, " killed after ", kChildSeconds, " s");
    return -1;
}

bool exited_ok(int status) {
    return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/// This process's virtual size in bytes (/proc/self/statm).
size_t vm_bytes(size_t skip_mappings_from = 0) {
    if (skip_mappings_from == 0) {
        FILE* f = fopen("/proc/self/statm", "r");
        if (f == nullptr)
            return 0;
        unsigned long pages = 0;
        const int got = fscanf(f, "%lu", &pages);
        fclose(f);
        return got == 1 ? pages * static_cast<size_t>(sysconf(_SC_PAGESIZE)) : 0;
    }
    // The size without mappings of skip_mappings_from bytes or more (an allocator's reserve).
    FILE* f = fopen("/proc/self/maps", "r");
    if (f == nullptr)
        return 0;
    size_t total = 0;
    unsigned long lo = 0, hi = 0;
    char line[512];
    while (fgets(line, sizeof line, f) != nullptr)
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && hi - lo < skip_mappings_from)
            total += hi - lo;
    fclose(f);
    return total;
}

// ---- What a program does after its limit is lowered ----------------------------------------

void* thread_work(void*) {
    for (size_t n : {size_t{100}, size_t{4000}, size_t{64} << 10, MiB}) {
        char* p = static_cast<char*>(do_malloc(n));
        if (p == nullptr)
            return reinterpret_cast<void*>(1);
        memset(p, 0x5a, n);
        do_free(p);
    }
    return nullptr;
}

/// Threads, a 64 MiB mmap, fopen + fgets, small and large mallocs and a realloc growth to
/// `grow_to` bytes. 0 when all work.
int program_works(size_t grow_to) {
    pthread_t t[6];
    for (pthread_t& th : t) {
        const int e = pthread_create(&th, nullptr, thread_work, nullptr);
        errno = e;
        FAIL_IF(e != 0, 10);
    }
    for (pthread_t& th : t) {
        void* r = nullptr;
        pthread_join(th, &r);
        FAIL_IF(r != nullptr, 11);
    }
    void* m = mmap(nullptr, 64 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    FAIL_IF(m == MAP_FAILED, 12);
    memset(m, 1, 64 * MiB);
    munmap(m, 64 * MiB);
    FILE* f = fopen("/proc/self/status", "r");
    FAIL_IF(f == nullptr, 13);
    char line[256];
    FAIL_IF(fgets(line, sizeof line, f) == nullptr, 14);
    fclose(f);
    void* small[200];
    for (void*& p : small) {
        p = do_malloc(500);
        FAIL_IF(p == nullptr, 15);
        memset(p, 2, 500);
    }
    for (void* p : small)
        do_free(p);
    for (size_t n : {MiB, 16 * MiB, 48 * MiB}) {
        void* p = do_malloc(n);
        FAIL_IF(p == nullptr, 16);
        memset(p, 3, n);
        do_free(p);
    }
    // realloc growth, contents checked at each step.
    size_t n = 1000;
    unsigned char* p = static_cast<unsigned char*>(do_malloc(n));
    FAIL_IF(p == nullptr, 17);
    for (size_t i = 0; i < n; ++i)
        p[i] = static_cast<unsigned char>(i * 7);
    while (n < grow_to) {
        const size_t to = n * 2;
        unsigned char* q = static_cast<unsigned char*>(do_realloc(p, to));
        FAIL_IF(q == nullptr, 18);
        for (size_t i = 0; i < n; i += 997)
            FAIL_IF(q[i] != static_cast<unsigned char>(i * 7), 19);
        for (size_t i = n; i < to; ++i)
            q[i] = static_cast<unsigned char>(i * 7);
        p = q;
        n = to;
    }
    do_free(p);
    return 0;
}

// ---- Blocks allocated before the limit ---------------------------------------------------

struct Kept {
    unsigned char* p;
    size_t n;
};
constexpr unsigned kKept = 300;
Kept g_kept[kKept];

/// Allocates blocks of mixed sizes (small to 8 MiB) filled with a pattern of their index, and
/// frees every third one, leaving holes.
int keep_blocks() {
    uint64_t rng = 14;
    for (unsigned i = 0; i < kKept; ++i) {
        const uint64_t r = testing::next_random(rng);
        const size_t n = i % 30 == 0 ? (r % (8 * MiB)) + 1 : (r % 6000) + 1;
        g_kept[i].p = static_cast<unsigned char*>(do_malloc(n));
        g_kept[i].n = n;
        FAIL_IF(g_kept[i].p == nullptr, 30);
        memset(g_kept[i].p, static_cast<int>(i & 0xff), n);
    }
    for (unsigned i = 0; i < kKept; i += 3) {
        do_free(g_kept[i].p);
        g_kept[i].p = nullptr;
    }
    return 0;
}

/// The kept blocks still hold their pattern; they are freed, and the same sizes allocated,
/// written and freed again.
int check_kept_blocks() {
    for (unsigned i = 0; i < kKept; ++i) {
        const Kept& k = g_kept[i];
        if (k.p == nullptr)
            continue;
        for (size_t j = 0; j < k.n; ++j)
            FAIL_IF(k.p[j] != (i & 0xff), 31);
    }
    for (Kept& k : g_kept) {
        do_free(k.p);
        k.p = static_cast<unsigned char*>(do_malloc(k.n));
        FAIL_IF(k.p == nullptr, 32);
        memset(k.p, 0x77, k.n);
    }
    for (Kept& k : g_kept)
        do_free(k.p);
    return 0;
}

// ---- Lowering the limit, through each entry point ------------------------------------------

using SetFn = int (*)(int, const rlimit*);
using PrFn = int (*)(pid_t, int, const rlimit*, rlimit*);

/// Lowers `resource` to `soft` (hard unchanged) through the entry point named `how`, found
/// with dlsym (the header maps setrlimit to setrlimit64 under _FILE_OFFSET_BITS=64). For the
/// prlimit family the old limit must come back.
int lower(const char* how, int resource, size_t soft) {
    rlimit before{};
    FAIL_IF(getrlimit(resource, &before) != 0, 40);
    const rlimit lim{soft, before.rlim_max};
    void* fn = dlsym(RTLD_DEFAULT, how);
    FAIL_IF(fn == nullptr, 41);
    if (strncmp(how, "prlimit", 7) == 0) {
        rlimit old{1, 2};
        FAIL_IF(reinterpret_cast<PrFn>(fn)(0, resource, &lim, &old) != 0, 42);
        FAIL_IF(old.rlim_cur != before.rlim_cur || old.rlim_max != before.rlim_max, 43);
    } else {
        FAIL_IF(reinterpret_cast<SetFn>(fn)(resource, &lim) != 0, 44);
    }
    rlimit now{};
    FAIL_IF(getrlimit(resource, &now) != 0 || now.rlim_cur != soft, 45);
    return 0;
}

ARENA_TEST_CHILD(lowered_limit) {
    // RLIMIT_TEST_HOW = entry point, RLIMIT_TEST_RESOURCE = AS or DATA.
    const char* how = getenv("RLIMIT_TEST_HOW");
    const char* res = getenv("RLIMIT_TEST_RESOURCE");
    if (how == nullptr || res == nullptr)
        return 2;
    const int resource = strcmp(res, "DATA") == 0 ? RLIMIT_DATA : RLIMIT_AS;
    if (int e = keep_blocks(); e != 0)
        return e;
    // 1 GiB, or what the program uses (without the allocator's reserve) and 256 MiB if more.
    size_t limit = vm_bytes(GiB) + 256 * MiB;
    if (limit < GiB)
        limit = GiB;
    if (int e = lower(how, resource, limit); e != 0)
        return e;
    if (int e = program_works(128 * MiB); e != 0)
        return e;
    return check_kept_blocks();
}

void check_lowered(const char* how, const char* resource) {
    const std::string what = std::string(how) + " " + resource;
    CAPTURE(what);
    const int status =
        run_bounded("lowered_limit", {std::string("RLIMIT_TEST_HOW=") + how,
                                      std::string("RLIMIT_TEST_RESOURCE=") + resource});
    CHECK(exited_ok(status));
    if (status != -1 && WIFEXITED(status))
        CHECK(WEXITSTATUS(status) == 0);
}

// ---- Started under a low limit --------------------------------------------------------------

ARENA_TEST_CHILD(started_low) {
    if (int e = keep_blocks(); e != 0)
        return e;
    if (int e = program_works(32 * MiB); e != 0)
        return e;
    // Up to the limit: 1 MiB blocks until malloc fails, with ENOMEM; the process lives on.
    constexpr unsigned kMax = 4096;
    static void* held[kMax];
    unsigned got = 0;
    errno = 0;
    for (; got < kMax; ++got) {
        held[got] = do_malloc(MiB);
        if (held[got] == nullptr)
            break;
        memset(held[got], static_cast<int>(got), 4096);
    }
    FAIL_IF(got == kMax, 50); // the limit stopped nothing
    FAIL_IF(errno != ENOMEM, 51);
    FAIL_IF(got < 100, 52); // 100 of the ~240 MiB the limit leaves
    for (unsigned i = 0; i < got; ++i)
        FAIL_IF(static_cast<unsigned char*>(held[i])[4095] != (i & 0xff), 53);
    for (unsigned i = 0; i < got; ++i)
        do_free(held[i]);
    void* p = do_malloc(500);
    FAIL_IF(p == nullptr, 54);
    do_free(p);
    return check_kept_blocks();
}

ARENA_TEST_CHILD(report_vm) {
    // What this binary maps without the allocator's reserve, for started_low's limit.
    printf("%zu\n", vm_bytes(64 * MiB));
    return 0;
}

// ---- Forwarding -----------------------------------------------------------------------------

ARENA_TEST_CHILD(forwarding) {
    rlimit as{}, nofile{};
    FAIL_IF(getrlimit(RLIMIT_AS, &as) != 0 || getrlimit(RLIMIT_NOFILE, &nofile) != 0, 60);
    const size_t vm = vm_bytes();
    // An unknown resource, soft above hard, a bad pointer: the kernel's answer, nothing changed.
    rlimit lim{GiB, GiB / 2};
    errno = 0;
    FAIL_IF(setrlimit(static_cast<__rlimit_resource>(4096), &lim) != -1 || errno != EINVAL, 61);
    errno = 0;
    FAIL_IF(setrlimit(RLIMIT_AS, &lim) != -1 || errno != EINVAL, 62);
    errno = 0;
    FAIL_IF(prlimit(0, RLIMIT_AS, &lim, nullptr) != -1 || errno != EINVAL, 63);
    errno = 0;
    FAIL_IF(setrlimit(RLIMIT_AS, reinterpret_cast<const rlimit*>(16)) != -1 || errno != EFAULT, 64);
    errno = 0;
    FAIL_IF(prlimit(0, RLIMIT_AS, nullptr, reinterpret_cast<rlimit*>(16)) != -1 || errno != EFAULT,
            65);
    rlimit now{};
    FAIL_IF(getrlimit(RLIMIT_AS, &now) != 0 || now.rlim_cur != as.rlim_cur, 66);
    // The old limit of another resource, read and set through prlimit.
    rlimit old{};
    FAIL_IF(prlimit(0, RLIMIT_NOFILE, nullptr, &old) != 0, 67);
    FAIL_IF(old.rlim_cur != nofile.rlim_cur || old.rlim_max != nofile.rlim_max, 68);
    const rlimit fewer{nofile.rlim_cur > 64 ? 64 : nofile.rlim_cur, nofile.rlim_max};
    FAIL_IF(prlimit(0, RLIMIT_NOFILE, &fewer, &old) != 0 || old.rlim_cur != nofile.rlim_cur, 69);
    FAIL_IF(getrlimit(RLIMIT_NOFILE, &now) != 0 || now.rlim_cur != fewer.rlim_cur, 70);
    // A pid that does not exist.
    errno = 0;
    FAIL_IF(prlimit(0x3ffffff0, RLIMIT_AS, &lim, nullptr) != -1 || errno != ESRCH, 71);
    // Another process's RLIMIT_AS: set there, not here; this process keeps its reservation.
    const pid_t other = fork();
    if (other == 0) {
        pause();
        _exit(0);
    }
    const rlimit small{256 * MiB, as.rlim_max};
    rlimit other_old{};
    const int r = prlimit(other, RLIMIT_AS, &small, &other_old);
    rlimit other_now{};
    prlimit(other, RLIMIT_AS, nullptr, &other_now);
    kill(other, SIGKILL);
    waitpid(other, nullptr, 0);
    FAIL_IF(r != 0 || other_old.rlim_cur != as.rlim_cur, 72);
    FAIL_IF(other_now.rlim_cur != 256 * MiB, 73);
    FAIL_IF(getrlimit(RLIMIT_AS, &now) != 0 || now.rlim_cur != as.rlim_cur, 74);
    FAIL_IF(vm_bytes() + 64 * MiB < vm, 75); // nothing of this process's was given back
    // Other resources leave the reservation alone too.
    FAIL_IF(setrlimit(RLIMIT_NOFILE, &nofile) != 0, 76);
    FAIL_IF(vm_bytes() + 64 * MiB < vm, 77);
    return 0;
}

} // namespace

TEST_CASE("the process runs on libarena") {
    REQUIRE_MESSAGE(testing::on_libarena(), "libarena.so is not this process's malloc");
}

TEST_SUITE("rlimit") {

    TEST_CASE(
        "RLIMIT_AS lowered with setrlimit: threads, mmap, stdio, malloc and old blocks work") {
        check_lowered("setrlimit", "AS");
        check_lowered("setrlimit64", "AS");
    }

    TEST_CASE("RLIMIT_AS lowered with prlimit, RLIMIT_DATA lowered: the same") {
        check_lowered("prlimit", "AS");
        check_lowered("prlimit64", "AS");
        check_lowered("setrlimit", "DATA");
        check_lowered("prlimit", "DATA");
    }

    TEST_CASE("a process started under a low RLIMIT_AS works up to it, then gets ENOMEM") {
        // The limit leaves 320 MiB beyond what this binary maps without an allocator reserve.
        const testing::ChildResult base = testing::run_child("report_vm");
        REQUIRE(base.code == 0);
        const size_t vm = strtoull(base.out.c_str(), nullptr, 10);
        REQUIRE(vm > 0);
        const int status = run_bounded("started_low", {}, vm + 320 * MiB);
        CHECK(exited_ok(status));
        if (status != -1 && WIFEXITED(status))
            CHECK(WEXITSTATUS(status) == 0);
    }

    TEST_CASE("setrlimit and prlimit forward exactly") {
        CHECK(exited_ok(run_bounded("forwarding", {})));
    }

} // TEST_SUITE
