// SPDX-License-Identifier: MIT
// Thread heaps: the small-object fast paths (inline here) and their slow paths (heap.cc).
//
// malloc fast path: in the class's current slab, the lowest word named by `nonempty`, its lowest
// set bit: clear it and return base + index * size. A thread that has no heap yet points at
// g_empty_heap, whose classes all use a slab with no free slot, so its first malloc falls into
// the slow path by itself and no "initialised?" test is ever made on the fast path.
//
// free fast path (owner thread): compute the slot index with a multiply, check that the pointer
// is a slot start and that the slot is allocated (else: invalid or double free), set its bit.
// Frees by other threads go to free_remote (heap.cc).
#pragma once

#include "macros.h"
#include "report.h"
#include "types.h"

#include <cstddef>
#include <cstdint>

namespace arena {

/// The sentinel heap of threads that have none (yet, or any more): every class is empty.
extern constinit Heap g_empty_heap;
/// This thread's heap; &g_empty_heap until its first allocation.
extern __thread Heap* t_heap __attribute__((tls_model("initial-exec")));

namespace heap {

// ---- Slow paths (heap.cc) ----------------------------------------------------------------------

/// The current slab of `cls` has no free slot: find another (or create this thread's heap when
/// h is the sentinel) and allocate, counting the call as `api`. On failure sets errno to ENOMEM,
/// counts it and returns null.
ARENA_SLOW_PATH void* alloc_refill(Heap* h, unsigned cls, size_t n, Api api);

/// Sets errno to ENOMEM, counts a failed allocation and returns null.
ARENA_COLD void* fail_enomem();

/// A local free emptied the slab or was the first free into a full (or exhausted) slab.
ARENA_SLOW_PATH void free_local_slow(Heap* h, Slab* s);

/// A free by a thread that does not own the slab, counted as `api`.
ARENA_SLOW_PATH void free_remote(Slab* s, uintptr_t a, Api api);

/// Releases the empty slabs this thread keeps, folds in remote frees, drains abandoned heaps,
/// and makes every other thread drop its cached empty slabs on its next slow path.
void trim();

/// This thread's heap, made now if it has none; null for a thread past its exit destructor or
/// when out of memory. For slow paths that need a heap to count into (large blocks).
Heap* self();

/// After fork, the page moved: points every heap's shard from [old, old+bytes) into `now`.
void rebase_stats(char* old, char* now, size_t bytes);

/// Heaps made so far (their ids are 1..created()).
uint32_t created();

/// Heaps that exist, by state (for malloc_stats).
void count_heaps(unsigned* active, unsigned* abandoned);

void fork_prepare();
void fork_parent();
void fork_child();

/// pthread key destructor: abandons the exiting thread's heap.
void thread_exit(void* heap);

// ---- Counting ------------------------------------------------------------------------------------

/// Adds to the calling thread's live bytes (for the peak), when it has a heap.
ARENA_FAST_PATH void add_live(int64_t bytes) {
    Heap* h = t_heap;
    if (h != &g_empty_heap)
        h->live += bytes;
}

/// Counts into the calling thread's shard, or the shared one when it has no heap.
ARENA_FAST_PATH void count(Counter c, uint64_t v = 1) {
    Heap* h = t_heap;
    if (ARENA_LIKELY(h != &g_empty_heap))
        bump(h->stats->events[c], v);
    else
        bump_shared(stats::shared_shard().events[c], v);
}

/// count() of an API call, if `api` has a call counter.
ARENA_FAST_PATH void count_call(Api api) {
    if (call_counter(api) != kCounterCount)
        count(call_counter(api));
}

// ---- Fast paths --------------------------------------------------------------------------------

/// n bytes from class cls, counted as a call of A. Never returns null without errno = ENOMEM.
template <Api A>
ARENA_FAST_PATH void* alloc_small(Heap* h, unsigned cls, size_t n) {
    Slab* s = h->current[cls];
    const uint32_t m = s->nonempty;
    if (ARENA_UNLIKELY(m == 0))
        return alloc_refill(h, cls, n, A);
    const unsigned wi = static_cast<unsigned>(__builtin_ctz(m));
    const uint64_t w = s->free_bits[wi].load(std::memory_order_relaxed);
    const uint64_t rest = w & (w - 1);
    s->free_bits[wi].store(rest, std::memory_order_relaxed);
    if (rest == 0)
        s->nonempty = m & (m - 1); // wi is the lowest set bit of m
    s->used++;
    h->live += s->size;
    StatShard* st = h->stats;
    if constexpr (call_counter(A) != kCounterCount)
        bump(st->events[call_counter(A)]);
    bump(st->class_alloc[cls]);
    bump(st->events[k_bytes_requested], n);
    const uintptr_t idx = uintptr_t{wi} * 64 + static_cast<unsigned>(__builtin_ctzll(w));
    return reinterpret_cast<void*>(s->base + idx * s->size);
}

/// Slot index of address a (inside s's pages) in s, or -1 when a is not the start of a slot.
/// Slabs have no tail, so an exact quotient is always a slot.
ARENA_FAST_PATH int64_t slot_index(const Slab* s, uintptr_t a) {
    const uint64_t p = (a - s->base) * s->recip;
    if (ARENA_UNLIKELY((p & kRecipMask) >= s->recip))
        return -1;
    return static_cast<int64_t>(p >> kRecipShift);
}

/// Free by the owning thread, counted as a call of A.
template <Api A>
ARENA_FAST_PATH void free_local(Heap* h, Slab* s, uintptr_t a) {
    const int64_t idx = slot_index(s, a);
    if (ARENA_UNLIKELY(idx < 0))
        return report_heap_error(HeapError::InvalidFree, reinterpret_cast<void*>(a), api_name(A));
    std::atomic<uint64_t>& word = s->free_bits[idx >> 6];
    const uint64_t bit = uint64_t{1} << (idx & 63);
    const uint64_t v = word.load(std::memory_order_relaxed);
    if (ARENA_UNLIKELY(v & bit))
        return report_heap_error(HeapError::DoubleFree, reinterpret_cast<void*>(a), api_name(A));
    word.store(v | bit, std::memory_order_relaxed);
    const uint32_t m = s->nonempty;
    s->nonempty = m | uint32_t{1} << (idx >> 6);
    h->live -= s->size;
    StatShard* st = h->stats;
    if constexpr (call_counter(A) != kCounterCount)
        bump(st->events[call_counter(A)]);
    bump(st->class_free[s->cls]);
    // m == 0: the slab had no free slot, so it may have to go back on the partial list.
    if (ARENA_UNLIKELY(--s->used == 0 || m == 0))
        free_local_slow(h, s);
}

} // namespace heap
} // namespace arena
