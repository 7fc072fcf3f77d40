// SPDX-License-Identifier: MIT
// The malloc family's semantics (arena::libc), on top of thread heaps (small sizes) and page
// runs (large blocks). override.cc only forwards the exported C and C++ symbols to these.
//
// errno follows glibc: ENOMEM on a failed allocation (also for calloc/reallocarray overflow),
// EINVAL for a bad alignment; free never changes it.
#pragma once

#include "heap.h"
#include "pages.h"

#include <cstddef>
#include <cstdint>

namespace arena {

namespace large {
/// A large block of at least n bytes aligned to `align` (a power of two), zeroed if asked,
/// counted as a call of `api`. On failure: errno = ENOMEM, counted, null.
void* alloc(size_t n, size_t align, bool zero, Api api);
} // namespace large

/// What a pointer is, for realloc and malloc_usable_size.
struct BlockInfo {
    enum Kind { Null, Foreign, Small, Large, Invalid, Freed } kind;
    Region* region;
    size_t page;
    uintptr_t entry; // pagemap entry
    size_t usable;   // bytes usable at the pointer (Small, Large)
    bool unsure;     // Small, but it carries the free key and whether it is free could not be
                     // told yet (confirm.cc: Where::Unknown): realloc moves it, so that the
                     // free of it is settled the way free settles it
};
BlockInfo block_info(const void* p);

// ---- Fast paths --------------------------------------------------------------------------------

/// Everything free() gets that is not a slab pointer in region 0.
ARENA_SLOW_PATH void dealloc_slow(uintptr_t a, Api api);

/// A free in a slab of region 0 with a live sampled block (pagemap entry e carries kSampledTag:
/// profile.h): matched against its sample if it is one, then freed as on the fast path.
ARENA_SLOW_PATH void dealloc_sampled(uintptr_t a, uintptr_t e, Api api);

/// Frees p on behalf of A (which names the caller in error reports and picks the call counter).
template <Api A>
ARENA_FAST_PATH void dealloc(void* p) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    const uintptr_t off = a - g_region0.base;
    if (ARENA_LIKELY(off < g_region0.size)) {
        const uintptr_t e = g_region0.pagemap[off >> kPageShift].load(std::memory_order_relaxed);
        if (ARENA_LIKELY((e & kTagMask) == 0 && e != 0)) {
            Slab* s = reinterpret_cast<Slab*>(e);
            Heap* h = t_heap;
            if (ARENA_LIKELY(s->heap.load(std::memory_order_relaxed) == h))
                return heap::free_local<A>(h, s, a);
            return heap::free_remote<A>(h, s, a);
        }
        if ((e & kSampledTag) != 0) // off the fast path (a test of its own: costs it nothing)
            return dealloc_sampled(a, e, A);
    }
    dealloc_slow(a, A);
}

/// n bytes, 16-byte aligned, counted as a call of A. On failure: errno = ENOMEM, null.
template <Api A>
ARENA_FAST_PATH void* alloc(size_t n) {
    // The common sizes first, so that their class is one table load with no jump.
    if (ARENA_LIKELY(n <= 1024))
        return heap::alloc_small<A>(t_heap, kSmallLookup[(n + 15) >> 4], n);
    if (n <= kSmallMax)
        return heap::alloc_small<A>(t_heap, kMediumLookup[(n + 127) >> 7], n);
    return large::alloc(n, kMinAlign, false, A);
}

/// n bytes aligned to `align` (a power of two), counted as a call of A. Alignments up to a page
/// come from a size class that is a multiple of the alignment (slabs start on a page; power-of-
/// two classes always qualify, so the search is short); larger ones from aligned page runs.
template <Api A>
void* alloc_aligned(size_t align, size_t n) {
    if (align <= kMinAlign)
        return alloc<A>(n);
    if (n <= kSmallMax && align <= kMaxClassAlign) {
        unsigned c = class_of(n < align ? align : n);
        while (c < kNumClasses && (kClasses[c].size & (align - 1)) != 0)
            ++c;
        if (c < kNumClasses)
            return heap::alloc_small<A>(t_heap, c, n);
    }
    return large::alloc(n, align, false, A);
}

namespace libc {

ARENA_FAST_PATH void* malloc(size_t n) {
    return alloc<Api::Malloc>(n);
}

ARENA_FAST_PATH void free(void* p) {
    dealloc<Api::Free>(p);
}

void* calloc(size_t count, size_t size);
void* realloc(void* p, size_t n);
void* reallocarray(void* p, size_t count, size_t size);
void* memalign(size_t align, size_t n);
int posix_memalign(void** out, size_t align, size_t n);
void* aligned_alloc(size_t align, size_t n);
void* valloc(size_t n);
void* pvalloc(size_t n);
size_t malloc_usable_size(const void* p);
int malloc_trim(size_t pad);

} // namespace libc
} // namespace arena
