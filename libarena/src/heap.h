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
#include "profile.h"
#include "report.h"
#include "types.h"

#include <cstddef>
#include <cstdint>

namespace arena {

/// The sentinel heap of threads that have none (yet, or any more): every class is empty.
extern constinit ARENA_HIDDEN Heap g_empty_heap;
/// This thread's heap; &g_empty_heap until its first allocation.
extern __thread Heap* t_heap __attribute__((tls_model("initial-exec"), visibility("hidden")));

namespace heap {

// ---- Slow paths (heap.cc) ----------------------------------------------------------------------

/// The current slab of `cls` has no free slot: find another (or create this thread's heap when
/// h is the sentinel) and allocate, counting the call as `api`. On failure sets errno to ENOMEM,
/// counts it and returns null.
ARENA_SLOW_PATH void* alloc_refill(Heap* h, unsigned cls, size_t n, Api api);

/// Sets errno to ENOMEM, counts a failed allocation and returns null.
ARENA_COLD void* fail_enomem();

/// free_remote (below) with the API known only at run time.
void free_remote_as(Heap* h, Slab* s, uintptr_t a, Api api);

/// Publishes every remote batch of h (heap.cc, "Remote frees"): the alloc_refill slow path,
/// trim and thread exit do, so that a free is never held back for long.
void flush_remote(Heap* h);

/// Releases the empty slabs this thread keeps, folds in remote frees, drains abandoned heaps,
/// and makes every other thread drop its cached empty slabs on its next slow path.
void trim();

/// Serves the stats page's trim request `ticket` (maintenance): trim, then pages::trim, as
/// malloc_trim does, then stats::trim_served.
ARENA_COLD void serve_trim(uint64_t ticket);

/// The slow paths' maintenance step (the allocation refill, large blocks): serves the stats
/// page's control requests (stats::poll_control; a trim by serve_trim) and keeps its gauges
/// fresh. Never from inside a cache flush or a remote collection: a trim runs both on this
/// thread's heap. Inline: one call (poll_control) on every large-block operation.
ARENA_FAST_PATH void maintenance() {
    if (const uint64_t ticket = stats::poll_control(); ARENA_UNLIKELY(ticket != 0))
        serve_trim(ticket);
}

/// This thread's heap, made now if it has none; null for a thread past its exit destructor or
/// when out of memory. For slow paths that need a heap to count into (large blocks).
Heap* self();

/// The registry of every heap ever made (linked by Heap::next_all; heaps are never freed).
Heap* all_heaps();

/// Heaps made so far (their ids are 1..created()).
uint32_t created();

/// Heaps that exist, by state (for malloc_stats).
void count_heaps(unsigned* active, unsigned* abandoned);

/// In a fork child (fork.cc): releases the heaps lock if a thread the child does not have held
/// it, and marks the heaps of such threads Lost. True when the forking thread holds the lock.
bool fork_child();

/// For the background purger (on its own process: no TLS): returns to the kernel the pages of slabs
/// waiting on their owners' remote queues that only slots freed by other threads cover, once those
/// have not changed for a tick (heap.cc, "Pages of remote frees"). Returns the bytes released; sets
/// *pending when some slab changed since the last tick (it is looked at again at the next).
size_t purge_remote_pages(bool* pending);

/// In a fork child: a remote queue the purger held at the fork goes back to its heap.
void adopt_held_after_fork();

/// pthread key destructor: abandons the exiting thread's heap.
void thread_exit(void* heap);

/// Initialisation (init.cc): sets the free key from random bits and creates the pthread key
/// whose destructor (thread_exit) abandons an exiting thread's heap. False when no pthread key
/// is left.
bool init(uint64_t seed);

// ---- Counting
// ------------------------------------------------------------------------------------

/// Adds to the calling thread's live bytes of large blocks (for the peak), when it has a heap.
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

/// The secret that marks a cached (free) block; random per process, never 0 (heap.cc).
extern ARENA_HIDDEN uint64_t g_free_key;

/// free_local of a block that carries the free key (slot idx of s, owned by h): a suspected
/// double free, confirmed (reported) or refuted (freed) out of line (confirm.cc).
ARENA_SLOW_PATH void free_local_suspect(Heap* h, Slab* s, uint64_t idx, Api api);

/// count_free with the API known only at run time.
void count_free_as(Heap* h, const Slab* s, Api api);

/// The bytes h's thread allocated minus those it freed: small blocks from its shard's class
/// counters (the fast paths count nothing else; a sum over the classes, kept in
/// Heap::small_live), large ones from Heap::live. For the peak, on allocation slow paths.
int64_t live_bytes(Heap* h);

/// live_bytes with the small blocks' part as the last live_bytes found it: for large-block
/// operations, which would otherwise pay the class sum each (the seed's 256 KiB benchmark: about
/// 300 instructions per free + malloc).
inline int64_t live_bytes_cached(const Heap* h) {
    return h->live + h->small_live;
}

/// h's thread freed `bytes` more (remote frees as their batch is published, large blocks). A
/// thread that mostly frees what others allocate (a consumer) seldom takes an allocation slow
/// path, where its live bytes reach the process's: every 1 MiB freed they do here too, so
/// that the peak of live bytes does not count the same bytes as live twice.
void note_freed(Heap* h, uint64_t bytes);

/// note_freed of a large block (`live` already lowered): publishes live_bytes_cached.
void note_freed_large(Heap* h, uint64_t bytes);

/// The slab's bitmap gained a free slot and it had none before, or has nothing allocated now:
/// move it between the owner's lists.
ARENA_SLOW_PATH void slab_gained_free(Heap* h, Slab* s);

/// Frees slot idx of s into the slab bitmap (the free cache is full, or is being flushed). The
/// block carries the free key already, or its caller sets it.
ARENA_FAST_PATH void free_to_slab(Heap* h, Slab* s, uint64_t idx) {
    std::atomic<uint64_t>& word = s->free_bits[idx >> 6];
    word.store(word.load(std::memory_order_relaxed) | uint64_t{1} << (idx & 63),
               std::memory_order_relaxed);
    const uint32_t m = s->nonempty;
    s->nonempty = m | uint32_t{1} << (idx >> 6);
    // m == 0: the slab had no free slot, so it may have to go back on the partial list.
    if (ARENA_UNLIKELY(--s->used == 0 || m == 0))
        slab_gained_free(h, s);
}

/// Bookkeeping of a free of slab s's class on behalf of A. (Its live bytes follow from the class
/// counters: live_bytes.)
template <Api A>
ARENA_FAST_PATH void count_free(Heap* h, const Slab* s) {
    StatShard* st = h->stats;
    if constexpr (call_counter(A) != kCounterCount)
        bump(st->events[call_counter(A)]);
    bump(st->class_free[s->cls]);
}

/// Bookkeeping of an allocation of class cls on behalf of A. (Its live bytes follow from the
/// class counters: live_bytes.)
template <Api A>
ARENA_FAST_PATH void count_alloc(Heap* h, unsigned cls, size_t n) {
    StatShard* st = h->stats;
    if constexpr (call_counter(A) != kCounterCount)
        bump(st->events[call_counter(A)]);
    bump(st->class_alloc[cls]);
    bump(st->events[k_bytes_requested], n);
}

/// free_local when the free cache of the class is full: counts, and frees into the bitmap. Out
/// of line, but one per API, so that counting needs no dispatch on it.
template <Api A>
ARENA_SLOW_PATH void free_uncached(Heap* h, Slab* s, uint64_t idx) {
    count_free<A>(h, s);
    free_to_slab(h, s, idx);
}

/// free_uncached with the API known only at run time.
void free_uncached_as(Heap* h, Slab* s, uint64_t idx, Api api);

/// The heap profile's countdown (profile.h): h's thread allocated n more bytes, at p. The
/// allocation that runs the count out is sampled; while profiling is off it never runs out.
ARENA_FAST_PATH void* sample_check(Heap* h, void* p, size_t n, Api api) {
    bool ran_out = false;
#if defined(__x86_64__)
    // One subtraction from memory, whose sign is the branch: two instructions (callgrind: a
    // load, subtract and store cost three, 1.6% of bench small's instructions).
    __asm__("subq %2, %0"
            : "+m"(*reinterpret_cast<int64_t*>(&h->prof_left)), "=@ccs"(ran_out)
            : "er"(static_cast<int64_t>(n)));
#else
    const int64_t left = h->prof_left.load(std::memory_order_relaxed) - static_cast<int64_t>(n);
    h->prof_left.store(left, std::memory_order_relaxed);
    ran_out = left < 0;
#endif
    if (ARENA_UNLIKELY(ran_out))
        return prof::sample(h, p, n, api);
    return p;
}

/// n bytes from class cls, counted as a call of A: the most recently freed block of the class if
/// there is one, else the lowest free slot of the current slab. Never returns null without
/// setting errno to ENOMEM.
template <Api A>
ARENA_FAST_PATH void* alloc_small(Heap* h, unsigned cls, size_t n) {
    FreeCache& c = h->cache[cls];
    CachedBlock* b = c.head;
    if (ARENA_LIKELY(b != nullptr)) {
        c.head = b->next;
        c.room++;
        b->key = 0; // allocated again
        count_alloc<A>(h, cls, n);
        return sample_check(h, b, n, A);
    }
    Slab* s = h->current[cls];
    const uint32_t m = s->nonempty;
    if (ARENA_UNLIKELY(m == 0))
        return alloc_refill(h, cls, n, A);
    const unsigned wi = static_cast<unsigned>(__builtin_ctz(m));
    const uint64_t w = s->free_bits[wi].load(std::memory_order_relaxed);
    const uint64_t rest = w & (w - 1);
    s->free_bits[wi].store(rest, std::memory_order_relaxed);
    // Branch-free: with scattered free slots a word empties about every other malloc, and a
    // branch on it would mispredict half the time (callgrind --branch-sim: 0.5 per malloc).
    s->nonempty = m & ~(static_cast<uint32_t>(rest == 0) << wi);
    s->used++;
    count_alloc<A>(h, cls, n);
    const uintptr_t idx = uintptr_t{wi} * 64 + static_cast<unsigned>(__builtin_ctzll(w));
    if (ARENA_UNLIKELY(idx >= s->handed.load(std::memory_order_relaxed))) // first time
        s->handed.store(static_cast<uint32_t>(idx + 1), std::memory_order_relaxed);
    auto* block = reinterpret_cast<CachedBlock*>(s->base + idx * s->size);
    block->key = 0; // a slot freed before carries the free key
    return sample_check(h, block, n, A);
}

/// Slot index of address a (inside s's pages) in s, or -1 when a is not the start of a slot.
/// Slabs have no tail, so an exact quotient is always a slot.
ARENA_FAST_PATH int64_t slot_index(const Slab* s, uintptr_t a) {
    const uint64_t p = (a - s->base) * s->recip;
    if (ARENA_UNLIKELY((p & kRecipMask) >= s->recip))
        return -1;
    return static_cast<int64_t>(p >> kRecipShift);
}

/// Free by the owning thread, counted as a call of A: marked with the free key, onto the
/// class's free cache, or into the slab bitmap when the cache is full. A block whose bitmap bit
/// is set is a double free; one that carries the free key is suspected of being one, and
/// confirmed out of line (types.h, "free key"). The rare cases leave by tail calls, so that the
/// common one needs no saved registers.
template <Api A>
ARENA_FAST_PATH void free_local(Heap* h, Slab* s, uintptr_t a) {
    const int64_t idx = slot_index(s, a);
    if (ARENA_UNLIKELY(idx < 0))
        return report_heap_error(HeapError::InvalidFree, reinterpret_cast<void*>(a), api_name(A));
    auto* b = reinterpret_cast<CachedBlock*>(a);
    const uint64_t bit = uint64_t{1} << (idx & 63);
    if (ARENA_UNLIKELY((s->free_bits[idx >> 6].load(std::memory_order_relaxed) & bit) != 0))
        return report_heap_error(HeapError::DoubleFree, reinterpret_cast<void*>(a), api_name(A));
    if (ARENA_UNLIKELY(b->key == g_free_key))
        return free_local_suspect(h, s, static_cast<uint64_t>(idx), A);
    b->key = g_free_key;
    FreeCache& c = h->cache[s->cls];
    if (ARENA_UNLIKELY(c.room == 0))
        return free_uncached<A>(h, s, static_cast<uint64_t>(idx));
    b->next = c.head;
    c.head = b;
    c.room--;
    count_free<A>(h, s);
}

// ---- Remote frees (heap.cc, "Remote frees") -----------------------------------------------------

/// report_heap_error naming the API (out of line, so that a fast path does not build the table
/// of names).
ARENA_COLD void report_free_error(HeapError kind, uintptr_t a, Api api);

/// The batch of class cls holds kBatchMax slots: publishes it now.
ARENA_SLOW_PATH void batch_full(Heap* h, unsigned cls);

/// A remote free of slot idx of s at a, known not to be free (steps 1 and 2): to h's batch of
/// the class, or published at once when h is the sentinel.
ARENA_SLOW_PATH void free_remote_checked(Heap* h, Slab* s, uintptr_t a, uint64_t idx, Api api);

/// A remote free of a block that carries the free key: a suspected double free (confirm.cc).
ARENA_SLOW_PATH void free_remote_suspect(Heap* h, Slab* s, uintptr_t a, uint64_t idx, Api api);

/// A free of address a in slab s by a thread (heap h, or the sentinel) that does not own the
/// slab, counted as a call of A: checked, marked with the free key, and added to h's remote
/// batch of the class, which is published when it moves to another slab word or fills up. The
/// common case, a slot of the word the batch holds, is here; anything else leaves by a tail call
/// (the sentinel's batches are always empty, so it never matches one).
template <Api A>
ARENA_SLOW_PATH void free_remote(Heap* h, Slab* s, uintptr_t a) {
    const int64_t idx = slot_index(s, a);
    // Not a slot start, or never handed out: an invalid free ("Remote frees", step 1).
    if (ARENA_UNLIKELY(idx < 0 ||
                       static_cast<uint64_t>(idx) >= s->handed.load(std::memory_order_relaxed)))
        return report_free_error(HeapError::InvalidFree, a, A);
    auto* block = reinterpret_cast<CachedBlock*>(a);
    if (ARENA_UNLIKELY(block->key == g_free_key))
        return free_remote_suspect(h, s, a, static_cast<uint64_t>(idx), A);
    const unsigned cls = s->cls;
    RemoteBatch& b = h->batch[cls];
    if (ARENA_UNLIKELY(b.tag !=
                       (reinterpret_cast<uintptr_t>(s) | static_cast<uintptr_t>(idx >> 6))))
        return free_remote_checked(h, s, a, static_cast<uint64_t>(idx), A);
    const uint64_t bit = uint64_t{1} << (idx & 63);
    // In the batch already: freed twice by this thread, its key overwritten in between.
    if (ARENA_UNLIKELY((b.bits & bit) != 0))
        return report_free_error(HeapError::DoubleFree, a, A);
    // The free key, as the owner's cache sets it: a second free by any thread sees it before
    // the owner collects the slot (its bit is not visible until then).
    block->key = g_free_key;
    StatShard* st = h->stats;
    bump(st->class_free[cls]);
    if constexpr (call_counter(A) != kCounterCount)
        bump(st->events[call_counter(A)]);
    b.bits |= bit;
    if (ARENA_UNLIKELY(++b.count == kBatchMax))
        return batch_full(h, cls);
}

} // namespace heap
} // namespace arena
