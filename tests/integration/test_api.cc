// SPDX-License-Identifier: MIT
// The malloc family as a program sees it, run with libarena preloaded: alignment of every size
// and of every power-of-two alignment, usable sizes, realloc in all directions, calloc on reused
// memory, errno and overflow rules, foreign pointers, reservation fallback and exhaustion.
#include "testing.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace {

bool aligned(const void* p, size_t a) {
    return reinterpret_cast<uintptr_t>(p) % a == 0;
}

using OwnsFn = int (*)(const void*);
int owns(const void* p) {
    static auto fn = reinterpret_cast<OwnsFn>(dlsym(RTLD_DEFAULT, "arena_owns"));
    return fn != nullptr ? fn(p) : -1;
}

// Calls through volatile function pointers, so that the compiler cannot fold away calls whose
// result it thinks it knows (malloc(SIZE_MAX), calloc overflow, ...).
void* (*volatile do_malloc)(size_t) = malloc;
void* (*volatile do_calloc)(size_t, size_t) = calloc;
void* (*volatile do_realloc)(void*, size_t) = realloc;
void* (*volatile do_reallocarray)(void*, size_t, size_t) = reallocarray;
void* (*volatile do_memalign)(size_t, size_t) = memalign;
void* (*volatile do_aligned_alloc)(size_t, size_t) = aligned_alloc;
void (*volatile do_free)(void*) = free;

} // namespace

TEST_CASE("the process runs on libarena") {
    REQUIRE_MESSAGE(testing::on_libarena(), "libarena.so is not this process's malloc");
}

TEST_SUITE("api") {

    TEST_CASE("every size from 0 to 64 KiB is 16-byte aligned, usable, and writable") {
        // A window of the last 512 blocks stays live, so that overlapping blocks would show.
        constexpr size_t kWindow = 512;
        std::vector<unsigned char*> window(kWindow, nullptr);
        auto check_and_free = [](unsigned char* p) {
            const size_t u = malloc_usable_size(p);
            if (u > 1)
                REQUIRE((p[0] == 0xa1 && p[u - 1] == 0xb2));
            free(p);
        };
        for (size_t n = 0; n <= 65536; ++n) {
            unsigned char* p = static_cast<unsigned char*>(malloc(n));
            REQUIRE(p != nullptr);
            REQUIRE(aligned(p, 16));
            REQUIRE(owns(p) == 1);
            const size_t u = malloc_usable_size(p);
            REQUIRE(u >= n);
            REQUIRE(u <= (n <= 128 ? n + 16 : n + n / 4 + 4096));
            if (u > 1) {
                p[0] = 0xa1;
                p[u - 1] = 0xb2;
            }
            unsigned char*& slot = window[n % kWindow];
            if (slot != nullptr)
                check_and_free(slot);
            slot = p;
        }
        for (unsigned char* p : window)
            if (p != nullptr)
                check_and_free(p);
    }

    TEST_CASE("every power-of-two alignment up to 64 MiB, through every aligned call") {
        for (size_t a = 1; a <= (size_t{64} << 20); a *= 2) {
            for (size_t n : {size_t{0}, size_t{1}, a / 2 + 1, a, 3 * a + 7, size_t{100000}}) {
                void* p = do_memalign(a, n);
                REQUIRE(p != nullptr);
                REQUIRE_MESSAGE(aligned(p, a < 16 ? 16 : a), "memalign ", a, " ", n);
                REQUIRE(malloc_usable_size(p) >= n);
                memset(p, 0x11, n);
                free(p);

                if (a >= sizeof(void*)) {
                    void* q = reinterpret_cast<void*>(0x1);
                    REQUIRE(posix_memalign(&q, a, n) == 0);
                    REQUIRE(aligned(q, a));
                    free(q);
                }
                void* r = do_aligned_alloc(a, n);
                REQUIRE(r != nullptr);
                REQUIRE(aligned(r, a));
                free(r);
            }
        }
        void* v = valloc(100);
        CHECK(aligned(v, 4096));
        free(v);
        void* pv = pvalloc(5000);
        CHECK(aligned(pv, 4096));
        CHECK(malloc_usable_size(pv) >= 8192);
        free(pv);
        void* pv0 = pvalloc(0);
        CHECK(pv0 != nullptr);
        CHECK(malloc_usable_size(pv0) >= 4096);
        free(pv0);
    }

    TEST_CASE("memalign rounds a non-power-of-two alignment up, as glibc does") {
        void* p = do_memalign(48, 10);
        REQUIRE(p != nullptr);
        CHECK(aligned(p, 64));
        free(p);
    }

    TEST_CASE("posix_memalign: EINVAL for a bad alignment leaves *memptr alone") {
        for (size_t bad :
             {size_t{0}, size_t{1}, size_t{4}, size_t{24}, size_t{100}, size_t{3} << 20}) {
            void* sentinel = reinterpret_cast<void*>(0xdeadbeef);
            void* q = sentinel;
            CHECK(posix_memalign(&q, bad, 64) == EINVAL);
            CHECK(q == sentinel);
        }
        void* q = reinterpret_cast<void*>(0xdeadbeef);
        errno = 0;
        CHECK(posix_memalign(&q, 64, SIZE_MAX - 100) == ENOMEM);
        CHECK(q == reinterpret_cast<void*>(0xdeadbeef));
    }

    TEST_CASE("usable size covers the request and tracks the size class") {
        CHECK(malloc_usable_size(nullptr) == 0);
        void* p = malloc(17);
        CHECK(malloc_usable_size(p) == 32);
        free(p);
        p = malloc(40000); // a large block: whole pages
        CHECK(malloc_usable_size(p) == 40960);
        free(p);
        int on_stack = 0;
        CHECK(malloc_usable_size(&on_stack) == 0);
    }

    TEST_CASE("realloc: grow, shrink, in place, across small and large, NULL and 0") {
        SUBCASE("small grows and keeps the content") {
            char* p = static_cast<char*>(malloc(10));
            memcpy(p, "123456789", 10);
            char* q = static_cast<char*>(realloc(p, 5000));
            REQUIRE(q != nullptr);
            CHECK(memcmp(q, "123456789", 10) == 0);
            free(q);
        }
        SUBCASE("within a slot it stays in place") {
            char* p = static_cast<char*>(malloc(100)); // 112-byte slot
            CHECK(realloc(p, 110) == p);
            CHECK(realloc(p, 60) == p);
            free(p);
        }
        SUBCASE("shrinking far moves to a smaller class") {
            char* p = static_cast<char*>(malloc(4000));
            memset(p, 'x', 4000);
            char* q = static_cast<char*>(realloc(p, 20));
            REQUIRE(q != nullptr);
            CHECK(malloc_usable_size(q) == 32);
            CHECK(q[19] == 'x');
            free(q);
        }
        SUBCASE("large blocks grow in place when the next pages are free, and shrink in place") {
            // Allocate a guard after a block, free the guard, then grow into its pages.
            char* p = static_cast<char*>(malloc(1 << 20));
            char* guard = static_cast<char*>(malloc(1 << 20));
            REQUIRE(p != nullptr);
            memset(p, 7, 1 << 20);
            const bool adjacent = guard == p + (1 << 20);
            free(guard);
            char* q = static_cast<char*>(realloc(p, 2 << 20));
            REQUIRE(q != nullptr);
            if (adjacent)
                CHECK(q == p);
            CHECK(q[(1 << 20) - 1] == 7);
            CHECK(malloc_usable_size(q) >= (2u << 20));
            char* r = static_cast<char*>(realloc(q, 300000));
            CHECK(r == q);
            CHECK(malloc_usable_size(r) == 303104); // 74 pages
            CHECK(r[299999] == 7);
            free(r);
        }
        SUBCASE("large to small and back keeps the bytes") {
            char* p = static_cast<char*>(malloc(100000));
            for (int i = 0; i < 100000; ++i)
                p[i] = static_cast<char>(i * 7);
            char* q = static_cast<char*>(realloc(p, 1000));
            REQUIRE(q != nullptr);
            for (int i = 0; i < 1000; ++i)
                REQUIRE(q[i] == static_cast<char>(i * 7));
            char* r = static_cast<char*>(realloc(q, 200000));
            for (int i = 0; i < 1000; ++i)
                REQUIRE(r[i] == static_cast<char>(i * 7));
            free(r);
        }
        SUBCASE("realloc(NULL, n) allocates and realloc(p, 0) frees") {
            void* p = do_realloc(nullptr, 33);
            REQUIRE(p != nullptr);
            CHECK(malloc_usable_size(p) >= 33);
            CHECK(do_realloc(p, 0) == nullptr);
        }
        SUBCASE("a failed realloc leaves the block intact") {
            char* p = static_cast<char*>(malloc(64));
            memset(p, 3, 64);
            errno = 0;
            CHECK(do_realloc(p, SIZE_MAX / 2) == nullptr);
            CHECK(errno == ENOMEM);
            CHECK(p[63] == 3);
            free(p);
        }
    }

    TEST_CASE("calloc zeroes memory that was used before") {
        for (size_t n : {size_t{8}, size_t{100}, size_t{4000}, size_t{30000}, size_t{200000},
                         size_t{3} << 20}) {
            std::vector<void*> dirty;
            for (int i = 0; i < 64; ++i) {
                void* p = do_malloc(n); // never elided: the memory must really be dirtied
                memset(p, 0xff, n);
                dirty.push_back(p);
            }
            for (void* p : dirty)
                free(p);
            for (int i = 0; i < 64; ++i) {
                unsigned char* p = static_cast<unsigned char*>(do_calloc(1, n));
                REQUIRE(p != nullptr);
                for (size_t k = 0; k < n; ++k)
                    if (p[k] != 0)
                        FAIL("calloc(", n, ") byte ", k, " is ", int(p[k]));
                dirty[i] = p;
            }
            for (void* p : dirty)
                free(p);
        }
    }

    TEST_CASE("overflow and impossible sizes fail with ENOMEM") {
        errno = 0;
        CHECK(do_malloc(SIZE_MAX) == nullptr);
        CHECK(errno == ENOMEM);
        errno = 0;
        CHECK(do_malloc(PTRDIFF_MAX + size_t{1}) == nullptr);
        CHECK(errno == ENOMEM);
        errno = 0;
        CHECK(do_calloc(SIZE_MAX / 2, 3) == nullptr);
        CHECK(errno == ENOMEM);
        errno = 0;
        CHECK(do_calloc(size_t{1} << 33, size_t{1} << 33) == nullptr);
        CHECK(errno == ENOMEM);
        char* p = static_cast<char*>(malloc(16));
        memcpy(p, "keep", 5);
        errno = 0;
        CHECK(do_reallocarray(p, SIZE_MAX / 4, 8) == nullptr);
        CHECK(errno == ENOMEM);
        CHECK(strcmp(p, "keep") == 0); // untouched
        void* q = do_reallocarray(p, 10, 10);
        REQUIRE(q != nullptr);
        CHECK(strcmp(static_cast<char*>(q), "keep") == 0);
        free(q);
        errno = 0;
        CHECK(do_memalign((size_t{1} << 63) + 1, 16) == nullptr); // rounds up past SIZE_MAX
        CHECK(errno == EINVAL);
        errno = 0;
        CHECK(do_memalign(size_t{1} << 63, 16) == nullptr); // glibc too: ENOMEM, not EINVAL
        CHECK(errno == ENOMEM);
        errno = 0;
        CHECK(do_aligned_alloc(4096, SIZE_MAX - 4096) == nullptr);
        CHECK(errno == ENOMEM);
    }

    TEST_CASE("success leaves errno alone and free preserves it") {
        errno = 12345;
        void* small = do_malloc(10); // through volatile pointers: the calls really happen
        void* large = do_malloc(10 << 20);
        void* zero = do_calloc(100, 100);
        CHECK(errno == 12345);
        memset(large, 1, 10 << 20);
        free(small);
        free(large);
        free(zero);
        free(nullptr);
        CHECK(errno == 12345);
        malloc_trim(0); // purges with madvise
        CHECK(errno == 12345);
    }

    TEST_CASE("malloc(0) returns distinct usable pointers") {
        void* a = malloc(0);
        void* b = malloc(0);
        REQUIRE(a != nullptr);
        REQUIRE(b != nullptr);
        CHECK(a != b);
        free(a);
        free(b);
    }

    TEST_CASE("pointers the arena does not own are ignored, never fatal") {
        // glibc's own malloc, looked up in libc.so.6 itself (the preload shadows it everywhere
        // else).
        using MallocFn = void* (*)(size_t);
        using FreeFn = void (*)(void*);
        void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
        REQUIRE(libc != nullptr);
        auto libc_malloc = reinterpret_cast<MallocFn>(dlsym(libc, "malloc"));
        auto libc_free = reinterpret_cast<FreeFn>(dlsym(libc, "free"));
        REQUIRE(static_cast<bool>(libc_malloc));
        REQUIRE(static_cast<bool>(libc_free));
        char* g = static_cast<char*>(libc_malloc(100));
        REQUIRE(g != nullptr);
        CHECK(owns(g) == 0);
        strcpy(g, "from glibc");
        CHECK(malloc_usable_size(g) == 0);
        // realloc copies what it can read and gives a block of ours.
        char* moved = static_cast<char*>(realloc(g, 50));
        REQUIRE(moved != nullptr);
        CHECK(owns(moved) == 1);
        CHECK(strcmp(moved, "from glibc") == 0);
        free(moved);
        do_free(g); // ignored: not ours
        libc_free(g);
        dlclose(libc);
        // An mmap'ed page, a stack address and a static address.
        void* m = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        do_free(m);
        munmap(m, 4096);
        int local = 0;
        do_free(&local);
        static char buf[64];
        do_free(buf);
        void* r = do_realloc(buf, 16);
        CHECK(r != nullptr);
        free(r);
    }

    TEST_CASE("mallinfo2 and malloc_trim account for memory") {
        malloc_trim(0);
        const struct mallinfo2 before = mallinfo2();
        std::vector<void*> ps;
        for (int i = 0; i < 100; ++i) {
            ps.push_back(malloc(1 << 20));
            memset(ps.back(), 1, 1 << 20);
        }
        const struct mallinfo2 during = mallinfo2();
        CHECK(during.uordblks >= before.uordblks + (100u << 20));
        CHECK(during.hblkhd >= (100u << 20));
        const size_t rss_during = testing::rss_bytes();
        for (void* p : ps)
            free(p);
        CHECK(mallinfo2().uordblks < during.uordblks - (99u << 20));
        CHECK(malloc_trim(0) == 1);
        const size_t rss_after = testing::rss_bytes();
        CHECK(rss_after + (90u << 20) < rss_during);
        CHECK(mallinfo2().keepcost == 0);
    }

    TEST_CASE("mallopt is accepted and malloc_stats reports") {
        CHECK(mallopt(M_ARENA_MAX, 1) == 1);
        malloc_stats(); // writes to stderr; must not crash
    }

} // TEST_SUITE("api")

// ---- Processes with their own ARENA_* settings
// -----------------------------------------------------

ARENA_TEST_CHILD(exhaust_small_reserve) {
    // ARENA_RESERVE=16M: allocate far more than one region holds, in small and large blocks.
    std::vector<void*> ps;
    size_t total = 0;
    for (int i = 0; i < 300; ++i) {
        void* p = malloc(1 << 20);
        if (p == nullptr)
            return 1;
        memset(p, i, 1 << 20);
        ps.push_back(p);
        total += 1 << 20;
    }
    for (int i = 0; i < 200000; ++i) {
        void* p = malloc(100 + i % 900);
        if (p == nullptr)
            return 2;
        memset(p, 1, 100);
        ps.push_back(p);
    }
    void* huge = malloc(size_t{1} << 30); // bigger than ARENA_RESERVE itself
    if (huge == nullptr)
        return 3;
    static_cast<char*>(huge)[(size_t{1} << 30) - 1] = 1;
    for (int i = 0; i < 300; ++i)
        if (static_cast<unsigned char*>(ps[i])[12345] != static_cast<unsigned char>(i))
            return 4;
    for (void* p : ps)
        free(p);
    free(huge);
    printf("ok %zu\n", total);
    return 0;
}

ARENA_TEST_CHILD(holes_before_fresh_pages) {
    // 64-byte blocks: slabs of 1024 slots (64 KiB). 1100 fill one slab and start a second; then
    // 900 frees make holes in the first, and 900 mallocs must fill those holes rather than move
    // into the second slab's untouched pages (heap.cc, "Fresh words"). Before fresh words, this
    // touched 10 new pages.
    constexpr size_t kFirst = 1100, kFreed = 900;
    std::vector<char*> blocks(kFirst);
    std::vector<uintptr_t> touched;
    touched.reserve(kFirst);
    for (char*& p : blocks) {
        p = static_cast<char*>(malloc(64));
        if (p == nullptr)
            return 2;
        memset(p, 1, 64);
        touched.push_back(reinterpret_cast<uintptr_t>(p) >> 12);
    }
    std::sort(touched.begin(), touched.end());
    size_t freed = 0;
    for (size_t i = 0; i < 1000 && freed < kFreed; ++i) {
        if (i % 10 != 0) {
            free(blocks[i]);
            blocks[i] = nullptr;
            ++freed;
        }
    }
    std::vector<uintptr_t> fresh;
    for (size_t i = 0; i < kFreed; ++i) {
        char* p = static_cast<char*>(malloc(64));
        if (p == nullptr)
            return 2;
        memset(p, 2, 64);
        blocks.push_back(p);
        const uintptr_t page = reinterpret_cast<uintptr_t>(p) >> 12;
        if (!std::binary_search(touched.begin(), touched.end(), page) &&
            std::find(fresh.begin(), fresh.end(), page) == fresh.end())
            fresh.push_back(page);
    }
    printf("%zu new pages\n", fresh.size());
    for (char* p : blocks)
        free(p);
    return fresh.size() <= 1 ? 0 : 1;
}

TEST_CASE("a size class fills holes in pages it touched before it touches new ones") {
    const testing::ChildResult r = testing::run_child("holes_before_fresh_pages");
    CHECK(r.exited);
    CHECK_MESSAGE(r.code == 0, r.out);
}

ARENA_TEST_CHILD(purge_after_delay) {
    // ARENA_PURGE_DELAY_MS=100: 32 MiB freed stays resident at first, then goes back to the
    // kernel once the delay has passed and page operations go on (the purge runs on them).
    constexpr size_t kBig = 32u << 20;
    char* p = static_cast<char*>(do_malloc(kBig)); // through a volatile pointer: never elided
    if (p == nullptr)
        return 2;
    memset(p, 1, kBig);
    const size_t before = testing::rss_bytes();
    do_free(p);
    if (testing::rss_bytes() + (kBig / 2) < before)
        return 3;                   // given back at once: the delay was not kept
    for (int i = 0; i < 200; ++i) { // up to 4 s
        usleep(20000);
        do_free(do_malloc(1 << 20)); // page operations, which run the purge timer
        if (testing::rss_bytes() + (kBig * 3 / 4) < before) {
            printf("purged after %d ms\n", (i + 1) * 20);
            return 0;
        }
    }
    return 1;
}

TEST_CASE("free pages go back to the kernel after the purge delay") {
    const testing::ChildResult r =
        testing::run_child("purge_after_delay", {"ARENA_PURGE_DELAY_MS=100"});
    CHECK(r.exited);
    CHECK_MESSAGE(r.code == 0, r.out << r.err);
}

TEST_CASE("a process whose reservation is exhausted still gets memory") {
    const testing::ChildResult r =
        testing::run_child("exhaust_small_reserve", {"ARENA_RESERVE=16M"});
    CHECK(r.exited);
    CHECK(r.code == 0);
    CHECK(r.out.find("ok") == 0);
}

ARENA_TEST_CHILD(limited_address_space) {
    // The preload initialised already, under the limit set by the parent before exec; it must
    // have fallen back to a smaller reservation. Allocating still works.
    void* p = do_malloc(100 << 20); // a malloc only written and freed may be elided
    if (p == nullptr)
        return 1;
    memset(p, 1, 100 << 20);
    do_free(p);
    return 0;
}

TEST_CASE("the reservation falls back to smaller sizes when the kernel refuses") {
    // RLIMIT_AS of 2 GiB cannot hold the default 64 GiB reservation. Set it in a child of ours
    // (fork), then exec the test child so that the preload initialises under the limit.
    const pid_t pid = fork();
    if (pid == 0) {
        rlimit lim{size_t{2} << 30, size_t{2} << 30};
        setrlimit(RLIMIT_AS, &lim);
        testing::exec_child("limited_address_space", {"ARENA_VERBOSE=1"});
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("invalid option values are reported and the defaults used") {
    const testing::ChildResult r = testing::run_child(
        "exhaust_small_reserve", {"ARENA_RESERVE=lots", "ARENA_PURGE_DELAY_MS=-7"});
    CHECK(r.code == 0);
    CHECK(r.err.find("ARENA_RESERVE=lots is not a size") != std::string::npos);
    CHECK(r.err.find("ARENA_PURGE_DELAY_MS=-7 is out of range") != std::string::npos);
}
