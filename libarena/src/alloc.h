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

/// Initialises the library on first use. False when it cannot work (no address space).
bool ensure_init();

namespace large {
/// A large block of at least n bytes aligned to `align` (a power of two), zeroed if asked.
void* alloc(size_t n, size_t align, bool zero);
}

/// What a pointer is, for realloc and malloc_usable_size.
struct BlockInfo {
    enum Kind { Null, Foreign, Small, Large, Invalid, Freed } kind;
    Region* region;
    size_t page;
    uintptr_t entry;  // pagemap entry
    size_t usable;    // bytes usable at the pointer (Small, Large)
};
BlockInfo block_info(const void* p);

// ---- Fast paths --------------------------------------------------------------------------------

/// Frees p. Everything but a slab pointer in region 0 goes to dealloc_slow.
ARENA_SLOW_PATH void dealloc_slow(uintptr_t a, Api api);

ARENA_FAST_PATH void dealloc(void* p, Api api) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    const uintptr_t off = a - g_region0.base;
    if (ARENA_LIKELY(off < g_region0.size)) {
        const uintptr_t e = g_region0.pagemap[off >> kPageShift].load(std::memory_order_relaxed);
        if (ARENA_LIKELY((e & kTagMask) == 0 && e != 0)) {
            Slab* s = reinterpret_cast<Slab*>(e);
            Heap* h = t_heap;
            if (ARENA_LIKELY(s->heap.load(std::memory_order_relaxed) == h))
                return heap::free_local(h, s, a, api);
            return heap::free_remote(s, a, api);
        }
    }
    dealloc_slow(a, api);
}

/// n bytes, 16-byte aligned; null on failure (errno not yet set).
ARENA_FAST_PATH void* alloc(size_t n) {
    if (ARENA_LIKELY(n <= kSmallMax))
        return heap::alloc_small(t_heap, class_of(n), n);
    return large::alloc(n, kMinAlign, false);
}

namespace libc {

/// Sets errno to ENOMEM, counts the failure, returns null.
ARENA_COLD void* fail_enomem();

ARENA_FAST_PATH void* malloc(size_t n) {
    void* p = alloc(n);
    if (ARENA_UNLIKELY(p == nullptr))
        return fail_enomem();
    heap::count(k_malloc_calls);
    return p;
}

ARENA_FAST_PATH void free(void* p) {
    heap::count(k_free_calls);
    dealloc(p, Api::Free);
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

/// An aligned block (align a power of two). Counts nothing; null on failure.
void* alloc_aligned(size_t align, size_t n);

} // namespace libc
} // namespace arena
