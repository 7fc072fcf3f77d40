// SPDX-License-Identifier: MIT
// Thread heaps: the small-object fast paths (inline here) and their slow paths (heap.cc).
//
// malloc fast path: load the bin's current bitmap word; if it has a free slot, clear the lowest
// set bit and return base + index * size. A thread that has no heap yet points at g_empty_heap,
// whose bins all read a zero word, so its first malloc falls into the slow path by itself and no
// "initialised?" test is ever made on the fast path.
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

/// The sentinel heap of threads that have none (yet, or any more): every bin is empty.
extern constinit Heap g_empty_heap;
/// Counters of threads without a heap (atomic adds).
extern constinit StatShard g_shared_stats;
/// This thread's heap; &g_empty_heap until its first allocation.
extern __thread Heap* t_heap __attribute__((tls_model("initial-exec")));

namespace heap {

// ---- Slow paths (heap.cc) ----------------------------------------------------------------------

/// The bin of `cls` has no free slot in its word: refill it (or create this thread's heap when h
/// is the sentinel) and allocate. Returns null when out of memory.
ARENA_SLOW_PATH void* alloc_refill(Heap* h, unsigned cls, size_t n);

/// A local free emptied the slab or was the first free into a full slab.
ARENA_SLOW_PATH void free_local_slow(Heap* h, Slab* s);

/// A free by a thread that does not own the slab. `api` names the caller in error reports.
ARENA_SLOW_PATH void free_remote(Slab* s, uintptr_t a, Api api);

/// Releases the empty slabs this thread keeps, folds in remote frees, drains abandoned heaps,
/// and makes every other thread drop its cached empty slabs on its next slow path.
void trim();

/// Adds every heap's counters (and the shared shard) to `t`.
void sum_stats(StatTotals* t);

/// Heaps that exist, by state (for malloc_stats).
void count_heaps(unsigned* active, unsigned* abandoned);

void fork_prepare();
void fork_parent();
void fork_child();

/// pthread key destructor: abandons the exiting thread's heap.
void thread_exit(void* heap);

// ---- Fast paths --------------------------------------------------------------------------------

/// Counters of the calling thread: its heap's shard, or the shared one.
ARENA_FAST_PATH void count(Counter c, uint64_t v = 1) {
    Heap* h = t_heap;
    if (ARENA_LIKELY(h != &g_empty_heap))
        bump(h->stats->events[c], v);
    else
        bump_shared(g_shared_stats.events[c], v);
}

ARENA_FAST_PATH void* alloc_small(Heap* h, unsigned cls, size_t n) {
    Bin& b = h->bins[cls];
    const uint64_t w = b.word->load(std::memory_order_relaxed);
    if (ARENA_UNLIKELY(w == 0))
        return alloc_refill(h, cls, n);
    b.word->store(w & (w - 1), std::memory_order_relaxed);
    b.slab->used++;
    bump(h->stats->class_alloc[cls]);
    bump(h->stats->events[k_bytes_requested], n);
    return reinterpret_cast<void*>(b.base + static_cast<uintptr_t>(__builtin_ctzll(w)) * b.size);
}

/// Slot index of address a in s, or -1 when a is not the start of a slot.
ARENA_FAST_PATH int64_t slot_index(const Slab* s, uintptr_t a) {
    const uintptr_t d = a - s->base;
    const uint64_t idx = (d * s->recip) >> kRecipShift;
    if (ARENA_UNLIKELY(idx * s->size != d || idx >= s->nslots))
        return -1;
    return static_cast<int64_t>(idx);
}

ARENA_FAST_PATH void free_local(Heap* h, Slab* s, uintptr_t a, Api api) {
    const int64_t idx = slot_index(s, a);
    if (ARENA_UNLIKELY(idx < 0))
        return report_heap_error(HeapError::InvalidFree, reinterpret_cast<void*>(a), api_name(api));
    std::atomic<uint64_t>& word = s->free_bits[idx >> 6];
    const uint64_t bit = uint64_t{1} << (idx & 63);
    const uint64_t v = word.load(std::memory_order_relaxed);
    if (ARENA_UNLIKELY(v & bit))
        return report_heap_error(HeapError::DoubleFree, reinterpret_cast<void*>(a), api_name(api));
    word.store(v | bit, std::memory_order_relaxed);
    bump(h->stats->class_free[s->cls]);
    if (ARENA_UNLIKELY(--s->used == 0 || s->where == SlabWhere::Full))
        free_local_slow(h, s);
}

} // namespace heap
} // namespace arena
