// SPDX-License-Identifier: MIT
// Double and invalid frees are detected, counted, reported once on stderr with the address, and
// abort the process with ARENA_ABORT_ON_ERROR=1. Each case runs in a child process.
#include "testing.h"

#include <doctest/doctest.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <new>
#include <thread>
#include <vector>

namespace {

// Keeps the compiler from seeing (and warning about, or folding) the deliberate misuse.
void (*volatile do_free)(void*) = free;
void (*volatile do_delete)(void*) noexcept = ::operator delete;
void* (*volatile do_realloc)(void*, size_t) = realloc;

void print_addr(const void* p) {
    printf("%p\n", p);
    fflush(stdout);
}

/// Prints "seen N": how many of `tries` mallocs of n bytes (all freed again) returned p. A
/// block freed twice but handed out once gives 1; `tries` spans several refills, so that the
/// owner collects remote frees.
void print_times_handed_out(void* p, size_t n, int tries) {
    std::vector<void*> v;
    int seen = 0;
    for (int i = 0; i < tries; ++i) {
        v.push_back(malloc(n));
        seen += v.back() == p;
    }
    for (void* q : v)
        free(q);
    printf("seen %d\n", seen);
}

} // namespace

ARENA_TEST_CHILD(double_free_small) {
    void* p = malloc(40);
    print_addr(p);
    do_free(p);
    do_free(p);
    return 0;
}

ARENA_TEST_CHILD(double_free_large) {
    void* p = malloc(1 << 20);
    print_addr(p);
    do_free(p);
    do_free(p);
    return 0;
}

ARENA_TEST_CHILD(double_free_large_cached) {
    // Freed pages wake the background purger, which lets the next large free be kept in the
    // large-block cache (pages.h) with its pagemap entry tagged: the second free of that block
    // must still be one. (Without a purger the block is freed as usual: the same report.)
    void* warm[8];
    for (void*& w : warm) {
        w = malloc(256 << 10);
        memset(w, 1, 256 << 10);
    }
    for (void* w : warm)
        free(w);
    void* p = malloc(256 << 10);
    do_free(p);
    void* q = malloc(256 << 10); // the cached block when the cache kept p
    print_addr(q);
    do_free(q);
    do_free(q);
    return 0;
}

ARENA_TEST_CHILD(double_free_remote) {
    // Freed by another thread first, then by the owner.
    void* p = malloc(64);
    print_addr(p);
    std::thread([p] { do_free(p); }).join();
    do_free(p);
    // Make the owner fold in the remote frees (and so find the double).
    for (int i = 0; i < 100000; ++i)
        do_free(malloc(64));
    malloc_trim(0);
    return 0;
}

ARENA_TEST_CHILD(double_free_owner_then_remote) {
    // Freed by the owner first (onto its free cache), then by another thread: the second free
    // is reported by that thread at once (the block carries the free key), not when the owner
    // next collects, and the block is handed out again only once.
    void* p = malloc(64);
    print_addr(p);
    do_free(p);
    std::thread([p] { do_free(p); }).join();
    fprintf(stderr, "joined\n");
    print_times_handed_out(p, 64, 5000);
    return 0;
}

ARENA_TEST_CHILD(double_free_owner_bitmap_then_remote) {
    // As above, but the owner's free cache of the class is full, so the owner's free goes into
    // the slab bitmap: the block carries the free key there too, and the remote free (which
    // does not read the owner's bitmap) still reports at once.
    std::vector<void*> fill;
    for (int i = 0; i < 64; ++i) // 4 KiB blocks: a cache of 16
        fill.push_back(malloc(4000));
    void* p = malloc(4000);
    print_addr(p);
    for (void* q : fill)
        free(q);
    do_free(p);
    std::thread([p] { do_free(p); }).join();
    fprintf(stderr, "joined\n");
    print_times_handed_out(p, 4000, 2000);
    return 0;
}

ARENA_TEST_CHILD(invalid_free_remote_never_handed_out) {
    // Another thread frees the start of a slot that was never handed out (the one after the
    // only block of a fresh slab): an invalid free, seen without the owner's bitmap
    // (Slab::handed), and the slot is not handed out twice.
    void* p = malloc(3000); // the first block of its slab in this process (3 KiB class)
    void* next = static_cast<char*>(p) + 3072;
    print_addr(next);
    std::thread([next] {
        testing::own_heap();
        do_free(next);
    }).join();
    fprintf(stderr, "joined\n");
    void* a = malloc(3000);
    void* b = malloc(3000);
    printf("%s\n", a != b ? "distinct" : "same");
    free(a);
    free(b);
    free(p);
    return 0;
}

ARENA_TEST_CHILD(double_free_remote_batched_twice) {
    // Freed twice by one other thread, the block's free key overwritten in between (a write
    // after free): the first free is still in the thread's remote batch, and the batch's bits
    // catch the second.
    void* p = malloc(64);
    print_addr(p);
    std::thread([p] {
        testing::own_heap();
        do_free(p);
        memset(static_cast<char*>(p) + 8, 0, 8);
        do_free(p);
    }).join();
    return 0;
}

ARENA_TEST_CHILD(double_free_remote_then_owner_batched) {
    // Freed by another thread that is still alive (the free sits in its remote batch, invisible
    // to the owner's bitmap), then by the owner: reported at once (the free key), and the block
    // comes back once when the batch is published at the thread's exit.
    void* p = malloc(64);
    print_addr(p);
    {
        const testing::IdleThread freer([p] { do_free(p); });
        do_free(p);
        fprintf(stderr, "owner freed\n");
    } // the thread exits here, publishing its batch
    print_times_handed_out(p, 64, 5000);
    return 0;
}

ARENA_TEST_CHILD(double_free_found_when_published) {
    // Two other threads free the block, its key overwritten in between, so neither free sees the
    // other: the second thread's batch is published first (at its exit), and publishing the
    // first thread's batch (at its exit) finds the bit set: reported, and handed out once.
    void* p = malloc(64);
    print_addr(p);
    {
        const testing::IdleThread first([p] { do_free(p); });
        memset(static_cast<char*>(p) + 8, 0, 8);
        std::thread([p] {
            testing::own_heap();
            do_free(p);
        }).join();
        fprintf(stderr, "second free done\n");
    } // the first thread exits here, publishing its batch
    print_times_handed_out(p, 64, 5000);
    return 0;
}

ARENA_TEST_CHILD(double_free_by_two_threads) {
    void* p = malloc(64);
    print_addr(p);
    std::thread([p] { do_free(p); }).join();
    std::thread([p] { do_free(p); }).join();
    return 0;
}

ARENA_TEST_CHILD(invalid_free_interior_small) {
    char* p = static_cast<char*>(malloc(100));
    print_addr(p + 16);
    do_free(p + 16);
    do_free(p); // the block itself is still live and freeable
    return 0;
}

ARENA_TEST_CHILD(invalid_free_interior_large) {
    char* p = static_cast<char*>(malloc(1 << 20));
    print_addr(p + 8192);
    do_free(p + 8192);
    do_free(p);
    return 0;
}

ARENA_TEST_CHILD(invalid_realloc) {
    char* p = static_cast<char*>(malloc(100));
    print_addr(p + 32);
    void* r = do_realloc(p + 32, 200);
    printf("%s\n", r == nullptr ? "null" : "not-null");
    return 0;
}

ARENA_TEST_CHILD(realloc_after_free) {
    void* p = malloc(48); // freed onto the thread's free cache, then realloc'd
    print_addr(p);
    do_free(p);
    void* r = do_realloc(p, 40);
    printf("%s\n", r == nullptr ? "null" : "not-null");
    return 0;
}

ARENA_TEST_CHILD(many_double_frees) {
    for (int i = 0; i < 10; ++i) {
        void* p = malloc(24);
        do_free(p);
        do_free(p);
    }
    malloc_stats();
    return 0;
}

ARENA_TEST_CHILD(delete_twice) {
    int* p = new int(3);
    print_addr(p);
    do_delete(p);
    do_delete(p);
    return 0;
}

namespace {

std::string first_line(const std::string& s) {
    return s.substr(0, s.find('\n'));
}

void expect_reported(const char* child, const char* kind) {
    CAPTURE(child);
    const testing::ChildResult r = testing::run_child(child);
    CHECK(r.exited);
    CHECK(r.code == 0);
    const std::string addr = first_line(r.out);
    REQUIRE(!addr.empty());
    const std::string want = std::string("arena: error: ") + kind + " of " + addr;
    CHECK_MESSAGE(r.err.find(want) != std::string::npos, "stderr was: ", r.err);
    CHECK(testing::count_occurrences(r.err, "arena: error:") == 1);
}

/// expect_reported, and the report comes from the thread that made the bad free: before the
/// child prints "joined" (after joining that thread). `out` must be in its stdout (what the
/// child found when it allocated again).
void expect_reported_by_other_thread(const char* child, const char* kind, const char* out) {
    expect_reported(child, kind);
    const testing::ChildResult r = testing::run_child(child);
    const size_t error = r.err.find(std::string("arena: error: ") + kind);
    REQUIRE(error != std::string::npos);
    CHECK(error < r.err.find("joined"));
    CHECK(r.out.find(out) != std::string::npos);
}

void expect_abort(const char* child) {
    CAPTURE(child);
    const testing::ChildResult r = testing::run_child(child, {"ARENA_ABORT_ON_ERROR=1"});
    CHECK_FALSE(r.exited);
    CHECK(r.signal == SIGABRT);
    CHECK(r.err.find("arena: error:") != std::string::npos);
    CHECK(r.err.find("aborting (ARENA_ABORT_ON_ERROR=1)") != std::string::npos);
}

} // namespace

TEST_CASE("the process runs on libarena") {
    REQUIRE(testing::on_libarena());
}

TEST_SUITE("errors") {

    TEST_CASE("double free of a small block") {
        expect_reported("double_free_small", "double free");
        expect_abort("double_free_small");
    }

    TEST_CASE("double free of a large block") {
        expect_reported("double_free_large", "double free");
        expect_abort("double_free_large");
    }

    TEST_CASE("double free of a large block kept in the large-block cache") {
        expect_reported("double_free_large_cached", "double free");
        expect_abort("double_free_large_cached");
    }

    TEST_CASE("double free across threads") {
        expect_reported("double_free_remote", "double free");
        expect_reported("double_free_by_two_threads", "double free");
        expect_abort("double_free_by_two_threads");
    }

    TEST_CASE("a second remote free while the first is in the thread's remote batch") {
        expect_reported("double_free_remote_batched_twice", "double free");
        expect_abort("double_free_remote_batched_twice");
    }

    TEST_CASE("remote free still batched, then owner free: reported at once, handed out once") {
        expect_reported("double_free_remote_then_owner_batched", "double free");
        const testing::ChildResult r = testing::run_child("double_free_remote_then_owner_batched");
        const size_t error = r.err.find("arena: error: double free");
        REQUIRE(error != std::string::npos);
        CHECK(error < r.err.find("owner freed"));
        CHECK(r.out.find("seen 1\n") != std::string::npos);
    }

    TEST_CASE("publishing a remote batch reports bits another thread set already") {
        expect_reported("double_free_found_when_published", "double free");
        const testing::ChildResult r = testing::run_child("double_free_found_when_published");
        const size_t error = r.err.find("arena: error: double free");
        REQUIRE(error != std::string::npos);
        CHECK(error > r.err.find("second free done"));
        CHECK(r.out.find("seen 1\n") != std::string::npos);
    }

    TEST_CASE("owner free into a full cache's bitmap, then remote free: reported at once") {
        expect_reported_by_other_thread("double_free_owner_bitmap_then_remote", "double free",
                                        "seen 1\n");
    }

    TEST_CASE("remote free of a slot never handed out is an invalid free") {
        expect_reported_by_other_thread("invalid_free_remote_never_handed_out", "invalid free",
                                        "distinct");
    }

    TEST_CASE("owner free then remote free: reported by the remote freer, handed out once") {
        expect_reported_by_other_thread("double_free_owner_then_remote", "double free", "seen 1\n");
    }

    TEST_CASE("free of a pointer inside a block") {
        expect_reported("invalid_free_interior_small", "invalid free");
        expect_reported("invalid_free_interior_large", "invalid free");
        expect_abort("invalid_free_interior_small");
    }

    TEST_CASE("realloc of a bad pointer is reported and returns NULL") {
        expect_reported("invalid_realloc", "invalid free");
        const testing::ChildResult r = testing::run_child("invalid_realloc");
        CHECK(r.out.find("null") != std::string::npos);
    }

    TEST_CASE("realloc of a freed block is a double free, even while it sits in the free cache") {
        expect_reported("realloc_after_free", "double free");
        const testing::ChildResult r = testing::run_child("realloc_after_free");
        CHECK(r.out.find("null") != std::string::npos);
    }

    TEST_CASE("operator delete twice") {
        expect_reported("delete_twice", "double free");
    }

    TEST_CASE("errors are reported once but all counted") {
        const testing::ChildResult r = testing::run_child("many_double_frees");
        CHECK(r.code == 0);
        CHECK(testing::count_occurrences(r.err, "arena: error: double free") == 1);
        CHECK(r.err.find(" double_frees 10 ") != std::string::npos); // malloc_stats() at exit
        const testing::ChildResult v = testing::run_child("many_double_frees", {"ARENA_VERBOSE=1"});
        CHECK(testing::count_occurrences(v.err, "arena: error: double free") == 10);
    }

} // TEST_SUITE
