// SPDX-License-Identifier: MIT
// The exported C ABI of the malloc family: thin forwarders to arena::libc (alloc.h, and
// mallinfo.h for glibc's introspection calls) and the glibc __libc_* aliases. No logic here.
#include "alloc.h"
#include "mallinfo.h"
#include "pages.h"

using namespace arena;

// ---- The exported symbols ----------------------------------------------------------------------

ARENA_EXPORT void* malloc(size_t n) {
    return libc::malloc(n);
}

ARENA_EXPORT void free(void* p) {
    libc::free(p);
}

ARENA_EXPORT void cfree(void* p) {
    libc::free(p);
}

ARENA_EXPORT void* calloc(size_t count, size_t size) {
    return libc::calloc(count, size);
}

ARENA_EXPORT void* realloc(void* p, size_t n) {
    return libc::realloc(p, n);
}

ARENA_EXPORT void* reallocarray(void* p, size_t count, size_t size) {
    return libc::reallocarray(p, count, size);
}

ARENA_EXPORT void* memalign(size_t align, size_t n) {
    return libc::memalign(align, n);
}

ARENA_EXPORT int posix_memalign(void** out, size_t align, size_t n) {
    return libc::posix_memalign(out, align, n);
}

ARENA_EXPORT void* aligned_alloc(size_t align, size_t n) {
    return libc::aligned_alloc(align, n);
}

ARENA_EXPORT void* valloc(size_t n) {
    return libc::valloc(n);
}

ARENA_EXPORT void* pvalloc(size_t n) {
    return libc::pvalloc(n);
}

ARENA_EXPORT size_t malloc_usable_size(void* p) {
    return libc::malloc_usable_size(p);
}

ARENA_EXPORT int malloc_trim(size_t pad) {
    return libc::malloc_trim(pad);
}

ARENA_EXPORT int mallopt(int param, int value) {
    return libc::mallopt(param, value);
}

ARENA_EXPORT struct mallinfo2 mallinfo2() {
    return libc::mallinfo2();
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
ARENA_EXPORT struct mallinfo mallinfo() {
    return libc::mallinfo();
}
#pragma GCC diagnostic pop

ARENA_EXPORT void malloc_stats() {
    libc::malloc_stats();
}

ARENA_EXPORT int malloc_info(int options, FILE* fp) {
    return libc::malloc_info(options, fp);
}

// glibc's internal names, which some programs and libraries call directly. copy() (GCC 9)
// gives the alias the target's attributes; clang has no such attribute and warns about it.
// decltype(target) names the function's type; decltype((target)) would be a reference.
// NOLINTBEGIN(bugprone-macro-parentheses)
#if __has_attribute(copy)
#    define ARENA_ALIAS(name, target)                                                              \
        ARENA_EXPORT decltype(target) name __attribute__((alias(#target), copy(target)))
#else
#    define ARENA_ALIAS(name, target)                                                              \
        ARENA_EXPORT decltype(target) name __attribute__((alias(#target)))
#endif
// NOLINTEND(bugprone-macro-parentheses)
ARENA_ALIAS(__libc_malloc, malloc);
ARENA_ALIAS(__libc_free, free);
ARENA_ALIAS(__libc_cfree, cfree);
ARENA_ALIAS(__libc_calloc, calloc);
ARENA_ALIAS(__libc_realloc, realloc);
ARENA_ALIAS(__libc_reallocarray, reallocarray);
ARENA_ALIAS(__libc_memalign, memalign);
ARENA_ALIAS(__libc_valloc, valloc);
ARENA_ALIAS(__libc_pvalloc, pvalloc);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
ARENA_ALIAS(__libc_mallinfo, mallinfo);
#pragma GCC diagnostic pop
ARENA_ALIAS(__libc_mallopt, mallopt);
ARENA_ALIAS(__posix_memalign, posix_memalign);

// ---- Native API calls about the process allocator
// ------------------------------------------------

#include "arena/arena.h"

extern "C" int arena_owns(const void* p) {
    return pages::region_of(reinterpret_cast<uintptr_t>(p)) != nullptr ? 1 : 0;
}
