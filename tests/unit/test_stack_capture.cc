// SPDX-License-Identifier: MIT
// Stack capture (stack_capture.h): built with -fomit-frame-pointer (tests/meson.build), as Debian's
// binaries are, the walk still names every frame of a known call chain, from the innermost out;
// and it never calls the public malloc, not even the first time. The fast walk gives libgcc's
// frames, frame for frame: a chain, a deep recursion, an alloca frame (its CFA on rbp), calls
// back from libc through the PLT (qsort) and from a dlopen'ed library (zlib's zalloc), inside a
// signal handler (past the trampoline, where it hands over to libgcc), cold and warm. And it
// prints what a frame costs either way.
#include "stack_capture.h"

#include <doctest/doctest.h>

#include <alloca.h>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <string>
#include <thread>
#include <vector>
#include <zlib.h>

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
// A malloc that counts (forwarding to glibc's), so that the test sees any allocation capture
// makes. Not under the sanitizers, which own malloc.
#    define COUNT_MALLOC 1
extern "C" void* __libc_malloc(size_t);
extern "C" void* __libc_calloc(size_t, size_t);
extern "C" void* __libc_realloc(void*, size_t);
static std::atomic<long> g_allocs{0};
extern "C" void* malloc(size_t n) {
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    return __libc_malloc(n);
}
extern "C" void* calloc(size_t c, size_t n) {
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    return __libc_calloc(c, n);
}
extern "C" void* realloc(void* p, size_t n) {
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    return __libc_realloc(p, n);
}
#endif

namespace {

constexpr unsigned kMax = 64;
uintptr_t g_frames[kMax];
unsigned g_count = 0;
long g_allocs_during = -1;

// A chain of three functions whose frames the walk must find. Exported (dladdr names them) and
// kept apart: noinline, and a call after the capture so that it is no tail call.
extern "C" __attribute__((noinline, visibility("default"))) void unwind_test_leaf() {
#ifdef COUNT_MALLOC
    const long before = g_allocs.load();
#endif
    g_count = arena::unwind::capture(g_frames, kMax, 0);
#ifdef COUNT_MALLOC
    g_allocs_during = g_allocs.load() - before;
#endif
    __asm__ __volatile__("" ::: "memory");
}
extern "C" __attribute__((noinline, visibility("default"))) void unwind_test_middle() {
    unwind_test_leaf();
    __asm__ __volatile__("" ::: "memory");
}
extern "C" __attribute__((noinline, visibility("default"))) void unwind_test_outer() {
    unwind_test_middle();
    __asm__ __volatile__("" ::: "memory");
}

std::string name_of(uintptr_t pc) {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(pc - 1), &info) == 0 || info.dli_sname == nullptr)
        return "?";
    return info.dli_sname;
}

} // namespace

TEST_CASE("the walk names the call chain innermost first, without frame pointers") {
    unwind_test_outer();
    REQUIRE(g_count >= 3);
    std::vector<std::string> names;
    for (unsigned i = 0; i < g_count; ++i)
        names.push_back(name_of(g_frames[i]));
    INFO("frames: ", names.size(), " first: ", names[0], " ", names[1], " ", names[2]);
    CHECK(names[0] == "unwind_test_leaf");
    CHECK(names[1] == "unwind_test_middle");
    CHECK(names[2] == "unwind_test_outer");
}

TEST_CASE("skip drops the innermost frames; max bounds the walk") {
    unwind_test_outer();
    const unsigned all = g_count;
    uintptr_t few[2];
    CHECK(arena::unwind::capture(few, 2, 0) == 2);
    CHECK(arena::unwind::capture(few, 0, 0) == 0);
    uintptr_t deep[kMax];
    const unsigned here = arena::unwind::capture(deep, kMax, 0);
    const unsigned skipped = arena::unwind::capture(deep + 1, kMax - 1, 1);
    CHECK(skipped + 1 == here);
    CHECK(all > 3);
}

TEST_CASE("capture calls no malloc, the first time included") {
#ifdef COUNT_MALLOC
    // The first capture of the process ran in the first test case.
    CHECK(g_allocs_during == 0);
    unwind_test_outer();
    CHECK(g_allocs_during == 0);
    // The counter works: a malloc here is seen.
    const long before = g_allocs.load();
    void* volatile p = malloc(10);
    free(p);
    CHECK(g_allocs.load() - before == 1);
#else
    MESSAGE("skipped under a sanitizer, which owns malloc");
#endif
}

namespace {

// Both walks from one call site (so that even their first frames agree): the fast one, then
// libgcc's, each skipping grab's own frame.
struct Pair {
    uintptr_t fast[kMax];
    uintptr_t slow[kMax];
    unsigned n_fast = 0;
    unsigned n_slow = 0;
};
Pair g_pair;
long g_pair_allocs = -1;
volatile int g_sink = 0;
volatile int g_two = 2; // a loop the compiler cannot unroll: one call site

extern "C" __attribute__((noinline, visibility("default"))) void unwind_test_grab(int which) {
    if (which == 0)
        g_pair.n_fast = arena::unwind::capture(g_pair.fast, kMax, 1);
    else
        g_pair.n_slow = arena::unwind::capture_libgcc(g_pair.slow, kMax, 1);
    __asm__ __volatile__("" ::: "memory");
}

extern "C" __attribute__((noinline, visibility("default"))) void unwind_test_both() {
#ifdef COUNT_MALLOC
    const long before = g_allocs.load();
#endif
    for (int which = 0; which < g_two; ++which)
        unwind_test_grab(which);
#ifdef COUNT_MALLOC
    g_pair_allocs = g_allocs.load() - before;
#endif
    __asm__ __volatile__("" ::: "memory");
}

std::string describe(const uintptr_t* frames, unsigned n) {
    std::string s;
    for (unsigned i = 0; i < n; ++i)
        s += name_of(frames[i]) + " ";
    return s;
}

// The two walks of g_pair agree frame for frame.
void check_pair(unsigned at_least) {
    INFO("fast: ", describe(g_pair.fast, g_pair.n_fast));
    INFO("libgcc: ", describe(g_pair.slow, g_pair.n_slow));
    REQUIRE(g_pair.n_slow >= at_least);
    REQUIRE(g_pair.n_fast == g_pair.n_slow);
    for (unsigned i = 0; i < g_pair.n_fast; ++i) {
        INFO("frame ", i);
        CHECK(g_pair.fast[i] == g_pair.slow[i]);
    }
#ifdef COUNT_MALLOC
    CHECK(g_pair_allocs == 0);
#endif
}

void (*g_bottom)() = unwind_test_both;

extern "C" __attribute__((noipa, visibility("default"))) int unwind_test_recurse(int depth) {
    if (depth == 0) {
        g_bottom();
        return 0;
    }
    const int r = unwind_test_recurse(depth - 1);
    g_sink = r; // no tail call, no loop
    __asm__ __volatile__("" ::: "memory");
    return r + 1;
}

// alloca makes the compiler keep a frame pointer here: the CFA is rbp-based.
extern "C" __attribute__((noipa, visibility("default"))) void unwind_test_alloca(size_t n) {
    auto* buf = static_cast<char*>(alloca(n));
    memset(buf, 1, n);
    __asm__ __volatile__("" : : "r"(buf) : "memory");
    unwind_test_recurse(3);
    g_sink = buf[n / 2];
}

int g_qsort_calls = 0;
extern "C" int unwind_test_compare(const void* a, const void* b) {
    if (g_qsort_calls++ == 0)
        unwind_test_both();
    return *static_cast<const int*>(a) - *static_cast<const int*>(b);
}

int g_zalloc_calls = 0;
extern "C" void* unwind_test_zalloc(void*, unsigned items, unsigned size) {
    if (g_zalloc_calls++ == 0)
        unwind_test_both();
    return calloc(items, size);
}
extern "C" void unwind_test_zfree(void*, void* p) {
    free(p);
}

extern "C" void unwind_test_on_signal(int) {
    unwind_test_both();
    __asm__ __volatile__("" ::: "memory"); // no tail call
}

} // namespace

TEST_CASE("the fast walk gives libgcc's frames: a chain, cold and warm") {
    arena::unwind::forget_rules();
    const uint64_t fallbacks = arena::unwind::fallbacks();
    g_bottom = unwind_test_both;
    unwind_test_recurse(2);
    check_pair(5);
    CHECK(name_of(g_pair.fast[0]) == "unwind_test_both");
    CHECK(name_of(g_pair.fast[1]) == "unwind_test_recurse");
    unwind_test_recurse(2); // warm
    check_pair(5);
    // The whole stack, up to _start, without libgcc.
    CHECK(arena::unwind::fallbacks() == fallbacks);
}

TEST_CASE("the fast walk gives libgcc's frames: 40 frames without frame pointers") {
    const uint64_t fallbacks = arena::unwind::fallbacks();
    for (int round = 0; round < 2; ++round) {
        if (round == 0)
            arena::unwind::forget_rules();
        unwind_test_recurse(40);
        check_pair(42);
        for (unsigned i = 1; i <= 41; ++i)
            CHECK(name_of(g_pair.fast[i]) == "unwind_test_recurse");
    }
    CHECK(arena::unwind::fallbacks() == fallbacks);
}

TEST_CASE("the fast walk gives libgcc's frames: an alloca frame, its CFA on rbp") {
    const uint64_t fallbacks = arena::unwind::fallbacks();
    for (int round = 0; round < 2; ++round) {
        if (round == 0)
            arena::unwind::forget_rules();
        volatile size_t n = 200000;
        unwind_test_alloca(n);
        check_pair(6);
        CHECK(name_of(g_pair.fast[5]) == "unwind_test_alloca");
    }
    CHECK(arena::unwind::fallbacks() == fallbacks);
}

TEST_CASE(
    "the fast walk gives libgcc's frames: called back from libc (PLT) and from a dlopen'ed zlib") {
    const uint64_t fallbacks = arena::unwind::fallbacks();
    for (int round = 0; round < 2; ++round) {
        if (round == 0)
            arena::unwind::forget_rules();
        int v[4] = {3, 1, 2, 0};
        g_qsort_calls = 0;
        qsort(v, 4, sizeof v[0], unwind_test_compare);
        check_pair(3);
        CHECK(name_of(g_pair.fast[1]) == "unwind_test_compare");
    }
    void* z = dlopen("libz.so.1", RTLD_NOW | RTLD_LOCAL);
    REQUIRE(z != nullptr);
    auto* init =
        reinterpret_cast<int (*)(z_streamp, int, const char*, int)>(dlsym(z, "deflateInit_"));
    auto* end = reinterpret_cast<int (*)(z_streamp)>(dlsym(z, "deflateEnd"));
    REQUIRE((init != nullptr && end != nullptr));
    for (int round = 0; round < 2; ++round) {
        if (round == 0)
            arena::unwind::forget_rules();
        z_stream strm{};
        strm.zalloc = unwind_test_zalloc;
        strm.zfree = unwind_test_zfree;
        g_zalloc_calls = 0;
        REQUIRE(init(&strm, 6, ZLIB_VERSION, static_cast<int>(sizeof strm)) == Z_OK);
        end(&strm);
        check_pair(4);
        CHECK(name_of(g_pair.fast[1]) == "unwind_test_zalloc");
        Dl_info info{};
        REQUIRE(dladdr(reinterpret_cast<void*>(g_pair.fast[2] - 1), &info) != 0);
        CHECK(std::string(info.dli_fname).find("libz") != std::string::npos);
    }
    dlclose(z);
    CHECK(arena::unwind::fallbacks() == fallbacks);
}

TEST_CASE("the fast walk gives libgcc's frames: in a signal handler, past the trampoline") {
    struct sigaction sa {};
    struct sigaction old {};
    sa.sa_handler = unwind_test_on_signal;
    sigemptyset(&sa.sa_mask);
    REQUIRE(sigaction(SIGUSR1, &sa, &old) == 0);
    const uint64_t fallbacks = arena::unwind::fallbacks();
    for (int round = 0; round < 2; ++round) {
        if (round == 0)
            arena::unwind::forget_rules();
        g_pair = Pair{};
        raise(SIGUSR1);
        check_pair(4);
        CHECK(name_of(g_pair.fast[1]) == "unwind_test_on_signal");
    }
    // The trampoline's FDE is a signal frame's ('S'): libgcc walked on from there.
    CHECK(arena::unwind::fallbacks() == fallbacks + 2);
    // On an alternate signal stack too.
    static char alt[1 << 16];
    stack_t ss{};
    ss.ss_sp = alt;
    ss.ss_size = sizeof alt;
    REQUIRE(sigaltstack(&ss, nullptr) == 0);
    sa.sa_flags = SA_ONSTACK;
    REQUIRE(sigaction(SIGUSR1, &sa, nullptr) == 0);
    g_pair = Pair{};
    raise(SIGUSR1);
    check_pair(4);
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, nullptr);
    sigaction(SIGUSR1, &old, nullptr);
}

TEST_CASE("the fast walk gives libgcc's frames: on a thread, to the end of its stack (clone)") {
    const uint64_t fallbacks = arena::unwind::fallbacks();
    for (int round = 0; round < 2; ++round) {
        if (round == 0)
            arena::unwind::forget_rules();
        std::thread([] { unwind_test_recurse(5); }).join();
        check_pair(8);
    }
    CHECK(arena::unwind::fallbacks() == fallbacks);
}

namespace {
double g_ns_fast = 0;
double g_ns_slow = 0;
unsigned g_bench_frames = 0;
// The best of 20 batches of 200 captures each way: the machine may be shared.
extern "C" __attribute__((noinline)) void unwind_test_bench() {
    constexpr int kBatches = 20;
    constexpr int kRounds = 200;
    uintptr_t buf[kMax];
    unsigned n = 0;
    for (int k = 0; k < 2; ++k) {
        double best = 1e30;
        for (int b = 0; b < kBatches; ++b) {
            const auto t0 = std::chrono::steady_clock::now();
            for (int i = 0; i < kRounds; ++i)
                n = k == 0 ? arena::unwind::capture(buf, kMax, 0)
                           : arena::unwind::capture_libgcc(buf, kMax, 0);
            const auto t1 = std::chrono::steady_clock::now();
            const double ns = std::chrono::duration<double, std::nano>(t1 - t0).count();
            best = ns < best ? ns : best;
        }
        (k == 0 ? g_ns_fast : g_ns_slow) = best / kRounds / n;
    }
    g_bench_frames = n;
}
} // namespace

TEST_CASE("micro-benchmark: ns per frame, fast walk and libgcc, 40-frame recursion") {
    g_bottom = unwind_test_bench;
    unwind_test_recurse(40);
    g_bottom = unwind_test_both;
    MESSAGE("stack of ", g_bench_frames, " frames: fast ", g_ns_fast, " ns/frame, libgcc ",
            g_ns_slow, " ns/frame (", g_ns_slow / g_ns_fast, "x)");
    CHECK(g_bench_frames >= 42);
}
