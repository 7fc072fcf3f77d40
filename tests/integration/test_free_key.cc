// SPDX-License-Identifier: MIT
// Look-alike frees (issue 14, glibc's tst-tcfree3 and BZ #23907): a live block whose second
// word holds the free key (types.h, "free key") is freed like any other block, by its owner, by
// another thread and through realloc: no report, no abort with ARENA_ABORT_ON_ERROR=1, the slot
// is handed out again, and live bytes come back to where they were. Real double frees of the
// same sizes in the same configurations are still reported, and their block is handed out once.
//
// The key is read as tst-tcfree3 reads it: free a block, read its second word. Each case runs
// in a child process (run with the block size in KEY_SIZE) that an alarm bounds.
#include "testing.h"

#include <doctest/doctest.h>

#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <string>
#include <thread>
#include <unistd.h>

namespace {

// Keeps the compiler from seeing (and folding, or warning about) the deliberate misuse.
void (*volatile do_free)(void*) = free;
void* (*volatile do_realloc)(void*, size_t) = realloc;

constexpr size_t kSizes[] = {16, 64, 256, 1024, 16384};

size_t child_size() {
    alarm(20); // a hang is a failure, not a stuck test
    const char* s = getenv("KEY_SIZE");
    return s != nullptr ? strtoul(s, nullptr, 10) : 64;
}

uint64_t second_word(const void* p) {
    return static_cast<const volatile uint64_t*>(p)[1];
}

void set_second_word(void* p, uint64_t v) {
    static_cast<volatile uint64_t*>(p)[1] = v;
}

/// The process's free key, as tst-tcfree3 finds it: the second word of a block just freed.
uint64_t read_key(size_t n) {
    void* q = malloc(n);
    do_free(q);
    return second_word(q);
}

/// A live block of n bytes filled with a pattern, carrying the free key in its second word.
char* lookalike(size_t n, uint64_t key) {
    auto* p = static_cast<char*>(malloc(n));
    memset(p, 0x5a, n);
    set_second_word(p, key);
    return p;
}

/// Live bytes by the allocator's counts. A program's first thread makes blocks glibc keeps
/// (thread bookkeeping): `warm` starts and joins one first.
uint64_t live_bytes(bool warm = false) {
    if (warm)
        std::thread([] {}).join();
    return mallinfo2().uordblks;
}

void print_addr(const void* p) {
    printf("%p\n", p);
    fflush(stdout);
}

/// How many of `tries` (at most 2000) mallocs of n bytes, all freed again afterwards, return p.
int times_handed_out(void* p, size_t n, int tries) {
    static void* v[2000]; // not malloc'd: that could take p
    int seen = 0;
    for (int i = 0; i < tries; ++i) {
        v[i] = malloc(n);
        seen += v[i] == p;
    }
    for (int i = 0; i < tries; ++i)
        free(v[i]);
    return seen;
}

} // namespace

// ---- Look-alike blocks --------------------------------------------------------------------------

ARENA_TEST_CHILD(lookalike_owner) {
    const size_t n = child_size();
    const uint64_t key = read_key(n);
    const uint64_t before = live_bytes();
    char* p = lookalike(n, key);
    do_free(p);
    void* again = malloc(n); // the free cache is LIFO: p, if its free was kept
    const bool back = again == p;
    const size_t usable = malloc_usable_size(again);
    do_free(again);
    const uint64_t after = live_bytes();
    printf("back %d usable %d balanced %d\n", back, usable >= n, after == before);
    return 0;
}

ARENA_TEST_CHILD(lookalike_copied_head) {
    // tst-tcfree3's shape: the whole head of a freed block (link and key) copied into a live
    // block and into a large one, both then freed.
    const size_t n = child_size();
    const uint64_t before = live_bytes();
    char* a = static_cast<char*>(malloc(n));
    char* b = static_cast<char*>(malloc(n));
    char* c = static_cast<char*>(malloc(127 * 1024));
    memset(c, 0xff, 127 * 1024);
    do_free(a);
    memcpy(b, a, n < 32 ? n : 32);
    memcpy(c, a, 32);
    do_free(b);
    do_free(c);
    void* again = malloc(n);
    const bool back = again == b;
    do_free(again);
    printf("back %d balanced %d\n", back, live_bytes() == before);
    return 0;
}

ARENA_TEST_CHILD(lookalike_remote) {
    const size_t n = child_size();
    const uint64_t key = read_key(n);
    const uint64_t before = live_bytes(true);
    char* p = lookalike(n, key);
    std::thread([p] {
        testing::own_heap();
        do_free(p); // the owner is blocked in join: its free cache is quiet
    }).join();      // the thread's exit publishes its remote batch
    const bool back = testing::comes_back(p, n);
    const uint64_t after = live_bytes();
    printf("back %d balanced %d\n", back, after == before);
    return 0;
}

ARENA_TEST_CHILD(lookalike_remote_no_heap) {
    // A thread that never allocated frees it: published at once (no remote batch).
    const size_t n = child_size();
    const uint64_t key = read_key(n);
    char* p = lookalike(n, key);
    std::thread([p] { do_free(p); }).join();
    printf("back %d\n", testing::comes_back(p, n));
    return 0;
}

ARENA_TEST_CHILD(lookalike_remote_key_from_thread) {
    // The key is read by the freeing thread from a block of its own.
    const size_t n = child_size();
    char* p = static_cast<char*>(malloc(n));
    memset(p, 0x5a, n);
    std::thread([p, n] {
        set_second_word(p, read_key(n));
        do_free(p);
    }).join();
    printf("back %d\n", testing::comes_back(p, n));
    return 0;
}

ARENA_TEST_CHILD(lookalike_realloc) {
    const size_t n = child_size();
    const uint64_t key = read_key(n);
    const uint64_t before = live_bytes();
    // Grown: moved, the contents kept, the old slot freed (and handed out again).
    char* p = lookalike(n, key);
    auto* r = static_cast<char*>(do_realloc(p, 2 * n));
    const bool moved = r != nullptr && r != p;
    bool kept = r != nullptr && second_word(r) == key;
    for (size_t i = 16; r != nullptr && i < n; ++i)
        kept = kept && r[i] == 0x5a;
    void* again = malloc(n);
    const bool back = again == p;
    do_free(again);
    do_free(r);
    // The same size: stays in place.
    char* s = lookalike(n, key);
    const bool in_place = do_realloc(s, n) == s;
    do_free(s);
    const uint64_t after = live_bytes();
    printf("moved %d kept %d back %d in_place %d balanced %d\n", moved, kept, back, in_place,
           after == before);
    return 0;
}

ARENA_TEST_CHILD(lookalike_many) {
    // Many look-alikes at once, freed in a mixed order with ordinary blocks, and a usable size
    // asked of one while it is live.
    const size_t n = child_size();
    const uint64_t key = read_key(n);
    const uint64_t before = live_bytes(true);
    constexpr int kCount = 200;
    char* blocks[kCount];
    for (int i = 0; i < kCount; ++i)
        blocks[i] = i % 3 == 0 ? lookalike(n, key) : static_cast<char*>(malloc(n));
    const bool usable = malloc_usable_size(blocks[0]) >= n;
    for (int i = 0; i < kCount; i += 2)
        do_free(blocks[i]);
    std::thread([&blocks] {
        for (int i = 1; i < kCount; i += 2)
            do_free(blocks[i]);
    }).join();
    const uint64_t after = live_bytes();
    printf("usable %d balanced %d\n", usable, after == before);
    return 0;
}

// ---- Owners busy in the class -------------------------------------------------------------------
// Another thread's free cache changes on every malloc and free of its owner, so a free by
// another thread may not be able to tell whether the block is on it; the free is then left to
// the owner, which settles it on its next slow path (here malloc_trim). Either way: done once,
// reported once.

namespace {

/// Puts `count` blocks of n bytes on the free cache (or, once it is full, in the bitmap), so that
/// a walk of the cache is long.
void fill_cache(size_t n, int count) {
    void* blocks[32];
    for (int i = 0; i < count; ++i)
        blocks[i] = malloc(n);
    for (int i = 0; i < count; ++i)
        do_free(blocks[i]);
}

/// The owner keeps its free cache of the class moving (x pushed and popped again each round,
/// the blocks below it untouched) until `stop`.
void keep_cache_busy(void* x, size_t n, std::atomic<bool>& started, const std::atomic<bool>& stop) {
    started = true;
    while (!stop.load()) {
        do_free(x);
        x = malloc(n);
    }
    do_free(x);
}

} // namespace

ARENA_TEST_CHILD(busy_owner_lookalikes) {
    const size_t n = child_size();
    const uint64_t key = read_key(n);
    const uint64_t before = live_bytes(true);
    constexpr int kCount = 64;
    char* blocks[kCount];
    for (char*& p : blocks)
        p = lookalike(n, key);
    void* x = malloc(n);
    fill_cache(n, 32);
    std::atomic<bool> started{false}, stop{false};
    std::thread freer([&] {
        testing::own_heap();
        while (!started.load()) {
        }
        for (char* p : blocks)
            do_free(p);
        stop = true;
    });
    keep_cache_busy(x, n, started, stop);
    freer.join();
    malloc_trim(0); // settles what the freer left to this thread
    printf("balanced %d\n", live_bytes() == before);
    return 0;
}

ARENA_TEST_CHILD(busy_owner_double) {
    const size_t n = child_size();
    void* p = malloc(n);
    void* x = malloc(n);
    print_addr(p);
    do_free(p); // on the owner's free cache, under the blocks keep_cache_busy moves
    fill_cache(n, 32);
    std::atomic<bool> started{false}, stop{false};
    std::thread freer([&] {
        testing::own_heap();
        while (!started.load()) {
        }
        do_free(p);
        stop = true;
    });
    keep_cache_busy(x, n, started, stop);
    freer.join();
    malloc_trim(0);
    printf("seen %d\n", times_handed_out(p, n, 2000));
    return 0;
}

// ---- Real double frees of the same sizes
// ----------------------------------------------------------

ARENA_TEST_CHILD(double_owner) {
    const size_t n = child_size();
    void* p = malloc(n);
    print_addr(p);
    do_free(p);
    do_free(p);
    printf("seen %d\n", times_handed_out(p, n, 2000));
    return 0;
}

ARENA_TEST_CHILD(double_lookalike_owner) {
    // A look-alike freed (rightly) and then freed again: the second free is a double free.
    const size_t n = child_size();
    char* p = lookalike(n, read_key(n));
    print_addr(p);
    do_free(p);
    do_free(p);
    return 0;
}

ARENA_TEST_CHILD(double_owner_then_remote) {
    // Freed by the owner onto its free cache, then by another thread while the owner is quiet.
    const size_t n = child_size();
    void* p = malloc(n);
    print_addr(p);
    do_free(p);
    std::thread([p] {
        testing::own_heap();
        do_free(p);
    }).join();
    fprintf(stderr, "joined\n");
    return 0;
}

ARENA_TEST_CHILD(double_lookalike_owner_then_remote) {
    const size_t n = child_size();
    char* p = lookalike(n, read_key(n));
    print_addr(p);
    do_free(p);
    std::thread([p] { do_free(p); }).join();
    fprintf(stderr, "joined\n");
    return 0;
}

ARENA_TEST_CHILD(double_remote_then_owner) {
    // Freed by a thread that is still alive (in its remote batch), then by the owner.
    const size_t n = child_size();
    void* p = malloc(n);
    print_addr(p);
    {
        const testing::IdleThread freer([p] { do_free(p); });
        do_free(p);
        fprintf(stderr, "owner freed\n");
    }
    return 0;
}

ARENA_TEST_CHILD(double_remote_then_remote) {
    // Freed by a live thread (in its remote batch), then by a third thread.
    const size_t n = child_size();
    void* p = malloc(n);
    print_addr(p);
    {
        const testing::IdleThread freer([p] { do_free(p); });
        std::thread([p] {
            testing::own_heap();
            do_free(p);
        }).join();
        fprintf(stderr, "joined\n");
    }
    return 0;
}

ARENA_TEST_CHILD(double_realloc) {
    const size_t n = child_size();
    void* p = malloc(n);
    print_addr(p);
    do_free(p);
    void* r = do_realloc(p, 2 * n);
    printf("%s\n", r == nullptr ? "null" : "not-null");
    return 0;
}

namespace {

std::string size_env(size_t n) {
    return "KEY_SIZE=" + std::to_string(n);
}

/// The child ran to its end with no report, also with ARENA_ABORT_ON_ERROR=1; returns its
/// stdout.
std::string expect_clean(const char* child, size_t n) {
    const std::string name = child;
    CAPTURE(name);
    CAPTURE(n);
    const testing::ChildResult r = testing::run_child(child, {size_env(n)});
    CHECK(r.exited);
    CHECK(r.code == 0);
    CHECK_MESSAGE(r.err.find("arena: error:") == std::string::npos, "stderr was: ", r.err);
    const testing::ChildResult a =
        testing::run_child(child, {size_env(n), "ARENA_ABORT_ON_ERROR=1"});
    CHECK_MESSAGE(a.exited, "signal ", a.signal, ", stderr was: ", a.err);
    CHECK(a.code == 0);
    return r.out;
}

/// The child reported exactly one double free, of the address on its first line of stdout
/// (before the line `before` on stderr, when given), and aborts with ARENA_ABORT_ON_ERROR=1.
/// Returns its stdout.
std::string expect_double(const char* child, size_t n, const char* before = nullptr) {
    const std::string name = child;
    CAPTURE(name);
    CAPTURE(n);
    const testing::ChildResult r = testing::run_child(child, {size_env(n)});
    CHECK(r.exited);
    CHECK(r.code == 0);
    const std::string addr = r.out.substr(0, r.out.find('\n'));
    REQUIRE(!addr.empty());
    const size_t at = r.err.find("arena: error: double free of " + addr);
    CHECK_MESSAGE(at != std::string::npos, "stderr was: ", r.err);
    CHECK(testing::count_occurrences(r.err, "arena: error:") == 1);
    if (before != nullptr)
        CHECK_MESSAGE(at < r.err.find(before), "stderr was: ", r.err);
    const testing::ChildResult a =
        testing::run_child(child, {size_env(n), "ARENA_ABORT_ON_ERROR=1"});
    CHECK_FALSE(a.exited);
    CHECK(a.signal == SIGABRT);
    return r.out;
}

} // namespace

TEST_CASE("the process runs on libarena") {
    REQUIRE(testing::on_libarena());
}

TEST_SUITE("errors") {

    TEST_CASE("a live block carrying the free key, freed by its owner, is freed") {
        for (size_t n : kSizes)
            CHECK(expect_clean("lookalike_owner", n) == "back 1 usable 1 balanced 1\n");
        for (size_t n : kSizes)
            CHECK(expect_clean("lookalike_copied_head", n) == "back 1 balanced 1\n");
    }

    TEST_CASE("a live block carrying the free key, freed by another thread, is freed") {
        for (size_t n : kSizes) {
            CHECK(expect_clean("lookalike_remote", n) == "back 1 balanced 1\n");
            CHECK(expect_clean("lookalike_remote_no_heap", n) == "back 1\n");
            CHECK(expect_clean("lookalike_remote_key_from_thread", n) == "back 1\n");
        }
    }

    TEST_CASE("a live block carrying the free key is reallocated") {
        for (size_t n : kSizes)
            CHECK(expect_clean("lookalike_realloc", n) ==
                  "moved 1 kept 1 back 1 in_place 1 balanced 1\n");
    }

    TEST_CASE("many look-alikes freed by the owner and another thread") {
        for (size_t n : kSizes)
            CHECK(expect_clean("lookalike_many", n) == "usable 1 balanced 1\n");
    }

    TEST_CASE("frees by another thread while the owner uses the class") {
        for (size_t n : kSizes) {
            CHECK(expect_clean("busy_owner_lookalikes", n) == "balanced 1\n");
            CHECK(expect_double("busy_owner_double", n).find("seen 1\n") != std::string::npos);
        }
    }

    TEST_CASE("real double frees of the same sizes are still reported") {
        for (size_t n : kSizes) {
            CHECK(expect_double("double_owner", n).find("seen 1\n") != std::string::npos);
            expect_double("double_lookalike_owner", n);
            expect_double("double_owner_then_remote", n, "joined");
            expect_double("double_lookalike_owner_then_remote", n, "joined");
            expect_double("double_remote_then_owner", n, "owner freed");
            expect_double("double_remote_then_remote", n, "joined");
            CHECK(expect_double("double_realloc", n).find("null\n") != std::string::npos);
        }
    }

} // TEST_SUITE
