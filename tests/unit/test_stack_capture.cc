// SPDX-License-Identifier: MIT
// Stack capture (stack_capture.h): built with -fomit-frame-pointer (tests/meson.build), as Debian's
// binaries are, the walk still names every frame of a known call chain, from the innermost out;
// and it never calls the public malloc, not even the first time.
#include "stack_capture.h"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <dlfcn.h>
#include <string>
#include <vector>

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
