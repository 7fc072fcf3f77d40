// SPDX-License-Identifier: MIT
// Thread heaps: slab refill, slab life cycle, remote frees, and the heap life cycle (create,
// abandon at thread exit, adopt, drain, fork).
//
// ---- Remote frees ---------------------------------------------------------------------------
// A thread freeing into a slab it does not own:
//   1. checks that the slot was handed out (Slab::handed) and that the block does not carry the
//      free key (a suspected double free, confirmed or refuted by confirm.cc: types.h, "free
//      key"), and writes the key into it. It does not
//      read the owner's bitmap: the owner writes that line on every malloc, and reading it here
//      cost a cache miss per remote free (bench xthread: +36% in paired runs without it). Every
//      free slot that was ever handed out carries the key, so the two checks see every double and
//      invalid free but one whose key was overwritten (a write after free), which publishing (3)
//      catches;
//   2. adds the slot to its heap's remote batch of the class (Heap::batch: pending bits of one
//      slab word) if the batch holds that word; otherwise publishes the batch (3, 4) and starts
//      a new one with this slot. A batch that reaches kBatchMax slots is published at once. A
//      thread with no heap (the sentinel) publishes each free at once.
// Publishing a batch:
//   3. sets its bits in remote_bits with fetch_or; a bit already set there (or already free in
//      the owner's bitmap) is a double free;
//   4. if `queued` was 0, sets it to 1 and pushes the slab on the owner heap's remote stack.
// The owner pops the whole stack at once (exchange with null), and for each slab first sets
// `queued` to 0, then for each remote word ORs it into free_bits and clears those bits in it
// (fetch_and). With sequentially consistent operations on both sides, a bit set after the
// owner read the word always finds `queued` at 0 and queues the slab again, so no remote free
// is ever lost.
//
// Batches are published when they move to another slab word or fill up, and all of a thread's
// batches on its alloc_refill slow path, in trim (malloc_trim; other threads on their next slow
// path after one) and at thread exit (heap_abandon). So a thread holds back at most kBatchMax
// slots per class, and only until its next refill. Not at fork: the forking thread's batches
// stay in its heap on both sides and are published on that side's next slow path (fork.cc says
// why the fork handlers never touch the forking thread's heap). Invariants:
//   - A slot in a batch still counts in its slab's `used`: the owner decrements `used` only when
//     it collects remote bits. So a slab with pending bits is never empty, is never released or
//     retired (Detached needs used == 0), and the batch's Slab* stays valid, also when its owner
//     exits (an abandoned heap keeps its slabs, and drain_abandoned releases only empty ones).
//     The one exception is a slot that was free already, its key overwritten (a write after
//     free, then a double free): its slab may be released meanwhile. Slab::gen changes on
//     release, and publish_batch reports such a batch's slots instead of publishing them. (A
//     release between that check and the fetch_or is not caught; descriptors are never
//     unmapped, so the stray bits land in a reused descriptor's remote bitmap.)
//   - A slab in a batch is never owned by the batch's heap: heaps change threads only by
//     adoption, by a thread without a heap, and an abandoned heap's batches are empty.
//   - While a slot is in a batch its bit is invisible, but its free key is not: a second free by
//     any thread (free_local, free_remote) and realloc (block_info) see the key, and find the
//     slot in the batch (confirm.cc reads other threads' batches between Heap::batch_seq
//     brackets, which publish_batch takes).
//   - The free is counted (class_free, call counter) when it is made; a double free found only
//     when its batch is published (its key was overwritten in between) takes back its class
//     count, and with it its live bytes (live_bytes derives them from the class counts).
//
// A slab is released (pages back to the region, descriptor to the pool) only when it is empty
// and the owner wins `queued.exchange(1) == 0`: the 1 stays as a tombstone, so a remote freer
// that is late with step 4 never pushes a released slab; if the owner loses, the slab is on the
// queue and is released when it comes off it. Descriptors are never unmapped (meta.h).
//
// ---- Fresh words ------------------------------------------------------------------------------
// A new slab opens only its first words (one page's worth of slots); the others are `fresh`:
// free in the bitmap, so the owner's free of one of their slots is caught as a double free (a
// remote one as an invalid free, by Slab::handed), but not in `nonempty`, so malloc does not
// take them. alloc_refill opens more only when the class has no
// other free slot: not in the current slab, not on the partial list. Without this, a current
// slab would move into pages never touched while older slabs have holes, and the class would
// end up touching every page of all its slabs. Invariant: fresh[cls] is the only slab of the
// class in the heap with fresh words (a slab is made only when fresh[cls] is null); it is
// cleared when the last word opens or the slab is retired.
//
// ---- Heap life cycle --------------------------------------------------------------------------
// A thread gets a heap on its first allocation: it adopts an abandoned one if there is any,
// else a new one is made. At thread exit (pthread key destructor) the heap is abandoned whole:
// its slabs stay where they are, still owned by the heap, and remote frees keep queueing on it.
// The next new thread adopts it, or any thread's malloc_trim drains it. Heaps are never freed.
#include "heap.h"

#include "check.h"
#include "confirm.h"
#include "init.h"
#include "lock.h"
#include "meta.h"
#include "options.h"
#include "os.h"
#include "pages.h"
#include "purger.h"
#include "stats.h"

#include <algorithm>
#include <cerrno>
#include <new>
#include <pthread.h>

namespace arena {

namespace {
/// The slab every class of a heap points at when it has no current slab: `nonempty` is 0, so
/// malloc goes to the slow path. Never written (the fast path writes only when nonempty != 0).
constinit Slab g_empty_slab;
} // namespace

constinit Heap g_empty_heap{&g_empty_slab};
namespace heap {
uint64_t g_free_key = 0x9e3779b97f4a7c15ull; // replaced by a random value at initialisation
}
__thread Heap* t_heap __attribute__((tls_model("initial-exec"))) = &g_empty_heap;

namespace heap {
namespace {

/// Set once this thread's heap was abandoned at exit: later allocations by this thread (other
/// destructors) borrow a heap for the one call.
ARENA_TLS bool t_dead = false;

constinit Mutex g_heaps_lock; // creation and adoption of heaps
constinit std::atomic<Heap*> g_all_heaps{nullptr};
constinit uint32_t g_heap_count = 0;
constinit std::atomic<uint64_t> g_trim_epoch{0};
constinit pthread_key_t g_thread_key = 0; // its destructor is thread_exit (init)

// ---- Invariants (ARENA_ASSERT) --------------------------------------------------------------

/// A slab's owner-side state as types.h states it: its shape within the descriptor, the open
/// words named in `nonempty` all holding a free slot and none of them fresh, and its bitmap
/// counting exactly the slots `used` does not. Called by the owner (or a drainer) only.
bool slab_ok(const Slab* s) {
    const uint32_t words = s->nwords >= 32 ? ~uint32_t{0} : (uint32_t{1} << s->nwords) - 1;
    if (s->nwords == 0 || s->nwords > kSlabMaxWords || s->nslots > s->nwords * 64u ||
        s->nslots <= (s->nwords - 1) * 64u || s->cls >= kNumClasses ||
        s->size != kClasses[s->cls].size || s->used > s->nslots ||
        s->handed.load(std::memory_order_relaxed) > s->nslots || (s->nonempty & ~words) != 0 ||
        (s->fresh & ~words) != 0 || (s->nonempty & s->fresh) != 0)
        return false;
    uint32_t free = 0;
    for (unsigned wi = 0; wi < s->nwords; ++wi) {
        const uint64_t w = s->free_bits[wi].load(std::memory_order_relaxed);
        if (((s->nonempty >> wi) & 1) != 0 && w == 0)
            return false;
        free += static_cast<uint32_t>(__builtin_popcountll(w));
    }
    return free + s->used == s->nslots;
}

/// A free cache's list of class cls holds as many blocks as its room says, at most
/// cache_cap(cls). O(blocks).
bool cache_ok(const FreeCache& fc, unsigned cls) {
    const uint32_t cap = cache_cap(cls);
    uint32_t n = 0;
    for (const CachedBlock* b = fc.head; b != nullptr && n <= cap; b = b->next)
        ++n;
    return n <= cap && fc.room == cap - n;
}

// ---- Lists --------------------------------------------------------------------------------------

bool has_current(const Heap* h, unsigned cls) {
    return h->current[cls] != &g_empty_slab;
}

void clear_current(Heap* h, unsigned cls) {
    h->current[cls] = &g_empty_slab;
}

void list_push(Slab*& head, Slab* s) {
    s->prev = nullptr;
    s->next = head;
    if (head != nullptr)
        head->prev = s;
    head = s;
}

void list_remove(Slab*& head, Slab* s) {
    if (s->prev != nullptr)
        s->prev->next = s->next;
    else
        head = s->next;
    if (s->next != nullptr)
        s->next->prev = s->prev;
    s->next = s->prev = nullptr;
}

Slab* list_pop(Slab*& head) {
    Slab* s = head;
    if (s != nullptr)
        list_remove(head, s);
    return s;
}

// ---- Sequence words -------------------------------------------------------------------------

/// Brackets a change that another thread reading without a lock must not see half done
/// (Heap::batch_seq, Heap::flush_seq; confirm.cc is the reader): the word is odd while it lasts.
void seq_open(std::atomic<uint64_t>& q) {
    q.store(q.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
}

void seq_close(std::atomic<uint64_t>& q) {
    q.store(q.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

// ---- Free caches -------------------------------------------------------------------------------

/// The slab holding a small block (the pagemap entry of its page).
Slab* slab_of(uintptr_t a) {
    const Region* r = a - g_region0.base < g_region0.size ? g_region0.region : pages::region_of(a);
    return slab_of_entry(r->pagemap[r->page_of(a)].load(std::memory_order_relaxed));
}

/// Returns every cached block to its slab's bitmap (trim, thread exit). A block is set free in
/// its bitmap before it leaves the list, so that a thread looking for it (confirm.cc: the list,
/// then the bitmap) finds it in one or the other; its link is read first, as freeing the last
/// slot may release the slab.
void flush_caches(Heap* h) {
    seq_open(h->flush_seq);
    for (unsigned c = 0; c < kNumClasses; ++c) {
        FreeCache& fc = h->cache[c];
        ARENA_ASSERT(cache_ok(fc, c));
        while (CachedBlock* b = fc.head) {
            CachedBlock* next = b->next; // b keeps the free key: it stays free
            const uintptr_t a = reinterpret_cast<uintptr_t>(b);
            Slab* s = slab_of(a);
            ARENA_ASSERT(s != nullptr && s->cls == c && s->heap.load() == h);
            const int64_t idx = slot_index(s, a);
            // A slot past the slab would set a bit in the next word or the remote bitmap.
            ARENA_CHECK(idx >= 0 && static_cast<uint64_t>(idx) < s->nslots);
            free_to_slab(h, s, static_cast<uint64_t>(idx));
            std::atomic_signal_fence(std::memory_order_seq_cst);
            fc.head = next;
        }
        fc.room = cache_cap(c);
    }
    seq_close(h->flush_seq);
}

// ---- Slab life cycle ---------------------------------------------------------------------------

Slab* slab_new(Heap* h, unsigned cls) {
    ARENA_ASSERT(cls < kNumClasses && h->fresh[cls] == nullptr);
    const SizeClass& k = kClasses[cls];
    pages::Run run{};
    if (!pages::alloc(k.slab_pages, 1, &run))
        return nullptr;
    Slab* s = meta::slab_alloc();
    if (s == nullptr) {
        pages::free(run.region, run.first, run.npages);
        return nullptr;
    }
    s->base = run.addr;
    s->recip = k.recip;
    s->size = k.size;
    s->nslots = k.nslots;
    s->cls = static_cast<uint16_t>(cls);
    s->nwords = static_cast<uint8_t>((k.nslots + 63) / 64);
    s->region = run.region;
    s->first_page = static_cast<uint32_t>(run.first);
    s->npages = static_cast<uint32_t>(run.npages);
    s->used = 0;
    s->sampled = 0;
    for (auto& slot : s->sampled_slot)
        slot.store(kNoSlot, std::memory_order_relaxed);
    s->sampled_overflow.store(0, std::memory_order_relaxed);
    s->handed.store(0, std::memory_order_relaxed);
    s->nonempty = 0;
    s->fresh = (uint32_t{1} << s->nwords) - 1;
    s->where = SlabWhere::Detached;
    s->next = s->prev = nullptr;
    for (unsigned wi = 0; wi < kSlabMaxWords; ++wi) {
        const unsigned lo = wi * 64;
        uint64_t m = 0;
        if (lo + 64 <= k.nslots)
            m = ~uint64_t{0};
        else if (lo < k.nslots)
            m = (uint64_t{1} << (k.nslots - lo)) - 1;
        s->free_bits[wi].store(m, std::memory_order_relaxed);
        s->remote_bits[wi].store(0, std::memory_order_relaxed);
    }
    s->next_remote = nullptr;
    s->remote_mark = 0;
    s->queued.store(0, std::memory_order_relaxed);
    s->heap.store(h, std::memory_order_release);
    for (size_t i = 0; i < run.npages; ++i)
        run.region->pagemap[run.first + i].store(reinterpret_cast<uintptr_t>(s),
                                                 std::memory_order_release);
    h->fresh[cls] = s;
    ARENA_ASSERT(slab_ok(s) && s->npages == k.slab_pages);
    return s;
}

/// Opens the next fresh words of s (at least one, about a page of slots) for malloc.
void slab_open(Heap* h, Slab* s) {
    // No fresh word left would open a word past the bitmap (ctz of 0): checked always.
    ARENA_CHECK(s->fresh != 0);
    const uint32_t word_bytes = 64 * s->size;
    uint32_t opened = 0;
    do {
        const unsigned wi = static_cast<unsigned>(__builtin_ctz(s->fresh));
        s->fresh &= s->fresh - 1;
        s->nonempty |= uint32_t{1} << wi;
        opened += word_bytes;
    } while (s->fresh != 0 && opened < kPageSize);
    if (s->fresh == 0)
        h->fresh[s->cls] = nullptr;
}

/// Gives an empty slab's pages back to the region and its descriptor to the pool.
void slab_release(Slab* s) {
    ARENA_ASSERT(slab_ok(s) && s->used == 0);
    Region* r = s->region;
    for (size_t i = 0; i < s->npages; ++i)
        r->pagemap[s->first_page + i].store(0, std::memory_order_release);
    s->heap.store(nullptr, std::memory_order_release);
    s->gen.store(s->gen.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    const size_t first = s->first_page;
    const size_t npages = s->npages;
    meta::slab_free(s);
    pages::free(r, first, npages);
}

/// Takes an empty slab from its owner h: releases it now, or marks it Detached when a remote
/// freer queued it meanwhile (it is released when it comes off the queue).
void slab_retire(Heap* h, Slab* s) {
    if (h->fresh[s->cls] == s)
        h->fresh[s->cls] = nullptr;
    if (s->queued.exchange(1, std::memory_order_seq_cst) == 0) {
        slab_release(s);
        return;
    }
    s->where = SlabWhere::Detached;
}

/// An empty slab that is not current: keep one per class, retire the rest.
void slab_emptied(Heap* h, Slab* s) {
    ARENA_ASSERT(s->used == 0 && s->where != SlabWhere::Empty && s->where != SlabWhere::Current);
    if (h->empty[s->cls] == nullptr) {
        h->empty[s->cls] = s;
        s->where = SlabWhere::Empty;
        return;
    }
    slab_retire(h, s);
}

/// Moves a slab between lists after frees made slots available.
void slab_after_free(Heap* h, Slab* s) {
    if (s->where == SlabWhere::Full) {
        ARENA_ASSERT(s->nonempty != 0 || s->fresh != 0); // it has a slot to hand out
        s->where = SlabWhere::Partial;
        list_push(h->partial[s->cls], s);
    }
    if (s->used == 0 && s->where == SlabWhere::Partial) {
        list_remove(h->partial[s->cls], s);
        slab_emptied(h, s);
    }
}

void release_cached_empties(Heap* h) {
    flush_caches(h); // cached blocks keep their slabs from looking empty
    for (unsigned c = 0; c < kNumClasses; ++c) {
        if (Slab* s = h->empty[c]) {
            h->empty[c] = nullptr;
            slab_retire(h, s);
        }
        // A current slab with nothing allocated is released too (trim and thread exit).
        if (has_current(h, c) && h->current[c]->used == 0) {
            Slab* s = h->current[c];
            clear_current(h, c);
            slab_retire(h, s);
        }
    }
}

// ---- Remote frees (owner side) ---------------------------------------------------------------

ARENA_COLD void report_remote_double_frees(uintptr_t base, uint32_t size, unsigned wi,
                                           uint64_t dbl) {
    while (dbl != 0) {
        const unsigned bit = static_cast<unsigned>(__builtin_ctzll(dbl));
        dbl &= dbl - 1;
        const uintptr_t a = base + (uintptr_t{wi} * 64 + bit) * size;
        report_heap_error(HeapError::DoubleFree, reinterpret_cast<void*>(a), "free");
    }
}

/// Folds a slab's remote frees into its bitmap. Returns the slots freed. A bit is set in the
/// bitmap before it is cleared in the remote word, so that a thread looking for the slot
/// (confirm.cc: remote bits, then the bitmap) sees it in one or the other.
uint32_t collect_slab(Slab* s) {
    uint32_t freed = 0;
    for (unsigned wi = 0; wi < s->nwords; ++wi) {
        const uint64_t r = s->remote_bits[wi].load(std::memory_order_seq_cst);
        if (r == 0)
            continue;
        const uint64_t cur = s->free_bits[wi].load(std::memory_order_relaxed);
        const uint64_t dbl = cur & r;
        s->free_bits[wi].store(cur | r, std::memory_order_release);
        s->remote_bits[wi].fetch_and(~r, std::memory_order_seq_cst); // bits set since stay
        if (ARENA_UNLIKELY(dbl != 0))
            report_remote_double_frees(s->base, s->size, wi, dbl);
        s->nonempty |= uint32_t{1} << wi;
        freed += static_cast<uint32_t>(__builtin_popcountll(r & ~dbl));
    }
    ARENA_ASSERT(freed <= s->used);
    s->used -= freed;
    return freed;
}

/// Folds in the remote frees of every slab on h's remote queue.
void collect_queued(Heap* h) {
    Slab* list = h->remote.exchange(nullptr, std::memory_order_acquire);
    while (list != nullptr) {
        Slab* s = list;
        list = s->next_remote; // read before `queued` drops: a freer may push s again at once
        s->remote_mark = 0;
        s->queued.exchange(0, std::memory_order_seq_cst);
        const uint32_t freed = collect_slab(s);
        if (s->where == SlabWhere::Detached)
            slab_retire(h, s);
        else if (freed != 0)
            // Not when nothing came in: a freer that published just after an earlier
            // collection had cleared `queued` pushed the slab again, and that collection took
            // its bits. A Full slab moved to the partial list without a free slot would be
            // opened by alloc_refill with no fresh word left (the "s->fresh != 0" abort).
            slab_after_free(h, s);
    }
}

/// The owner's (or drainer's) side of remote frees: folds in remote bits, then settles the
/// suspected double frees other threads left to it (confirm.cc).
void collect_remote(Heap* h) {
    if (h->remote.load(std::memory_order_relaxed) != nullptr)
        collect_queued(h);
    if (ARENA_UNLIKELY(h->suspects.load(std::memory_order_relaxed) != nullptr))
        settle_suspects(h);
}

// ---- Heap life cycle ---------------------------------------------------------------------------

void heap_init(Heap* h, StatShard* shard, StatShard* flushed) {
    for (unsigned c = 0; c < kNumClasses; ++c) {
        clear_current(h, c);
        h->cache[c] = FreeCache{nullptr, cache_cap(c)};
        h->partial[c] = nullptr;
        h->empty[c] = nullptr;
        h->fresh[c] = nullptr;
    }
    h->stats = shard;
    h->flushed = flushed;
    h->published_live = 0;
    h->trim_epoch = g_trim_epoch.load(std::memory_order_relaxed);
    h->remote.store(nullptr, std::memory_order_relaxed);
    h->state.store(HeapState::Active, std::memory_order_relaxed);
}

/// Adopts an abandoned heap, or makes a new one. Returns null when out of memory.
Heap* heap_acquire() {
    LockGuard guard(g_heaps_lock);
    for (Heap* h = g_all_heaps.load(std::memory_order_acquire); h != nullptr; h = h->next_all) {
        HeapState st = HeapState::Abandoned;
        if (h->state.compare_exchange_strong(st, HeapState::Active, std::memory_order_acquire))
            return h;
    }
    void* hmem = meta::alloc(sizeof(Heap));
    if (hmem == nullptr)
        return nullptr;
    const uint32_t id = g_heap_count + 1;
    StatShard* shard = stats::heap_shard(id);
    StatShard* flushed = nullptr;
    if (shard == nullptr) { // no page shard left: count privately, add to shard 0 now and then
        shard = static_cast<StatShard*>(meta::alloc(sizeof(StatShard)));
        flushed = static_cast<StatShard*>(meta::alloc(sizeof(StatShard)));
        if (shard == nullptr || flushed == nullptr)
            return nullptr; // out of address space; the metadata bytes are lost
    }
    Heap* h = new (hmem) Heap();
    heap_init(h, shard, flushed);
    h->id = id;
    __atomic_store_n(&g_heap_count, id, __ATOMIC_RELAXED);
    h->next_all = g_all_heaps.load(std::memory_order_relaxed);
    g_all_heaps.store(h, std::memory_order_release);
    return h;
}

/// Overflow heaps: adds what their private shard counted since the last flush to shard 0.
void flush_overflow(Heap* h) {
    if (h->flushed == nullptr)
        return;
    auto flush = [](std::atomic<uint64_t>& from, std::atomic<uint64_t>& done,
                    std::atomic<uint64_t>& to) {
        const uint64_t now = from.load(std::memory_order_relaxed);
        const uint64_t before = done.load(std::memory_order_relaxed);
        if (now != before) {
            bump_shared(to, now - before);
            done.store(now, std::memory_order_relaxed);
        }
    };
    StatShard& shared = stats::shared_shard();
    for (unsigned e = 0; e < kCounterCount; ++e)
        flush(h->stats->events[e], h->flushed->events[e], shared.events[e]);
    for (unsigned c = 0; c < kNumClasses; ++c) {
        flush(h->stats->class_alloc[c], h->flushed->class_alloc[c], shared.class_alloc[c]);
        flush(h->stats->class_free[c], h->flushed->class_free[c], shared.class_free[c]);
    }
}

/// Allocation slow path bookkeeping: live bytes for the peak, overflow counters, control area.
void note_slow_path(Heap* h) {
    h->freed_unnoted = 0;
    stats::note_live(live_bytes(h), &h->published_live);
    flush_overflow(h);
    maintenance();
}

void heap_abandon(Heap* h) {
    ARENA_ASSERT(h->state.load(std::memory_order_relaxed) == HeapState::Active);
    flush_remote(h);
    collect_remote(h);
    release_cached_empties(h);
    flush_overflow(h);
    // An abandoned heap has no remote batch and nothing in its caches (types.h, Heap).
    ARENA_ASSERT(h->batch_pending == 0);
    h->state.store(HeapState::Abandoned, std::memory_order_release);
}

/// Folds the remote frees of every abandoned heap and releases its empty slabs.
void drain_abandoned() {
    for (Heap* h = g_all_heaps.load(std::memory_order_acquire); h != nullptr; h = h->next_all) {
        HeapState st = HeapState::Abandoned;
        if (!h->state.compare_exchange_strong(st, HeapState::Draining, std::memory_order_acquire))
            continue;
        collect_remote(h);
        release_cached_empties(h);
        h->state.store(HeapState::Abandoned, std::memory_order_release);
    }
}

/// This thread's first allocation: initialise the library if needed and get a heap.
Heap* thread_heap_init() {
    if (t_dead || !ensure_init())
        return nullptr;
    Heap* h = heap_acquire();
    if (h == nullptr)
        return nullptr;
    t_heap = h;
    // A fork from a signal handler between heap_acquire and the line above marked h Lost in the
    // child, not knowing it was this thread's (fork_child): it is, and is Active. Once t_heap is
    // set, a fork_child sees it.
    if (h->state.load(std::memory_order_relaxed) == HeapState::Lost)
        h->state.store(HeapState::Active, std::memory_order_relaxed);
    pthread_setspecific(g_thread_key, h); // arms the thread-exit destructor
    return h;
}

/// alloc_small with the API known only at run time (slow paths).
void* alloc_small_as(Heap* h, unsigned cls, size_t n, Api api) {
    return with_api<Api::Malloc, Api::Calloc, Api::Aligned, Api::New, Api::Realloc>(
        api, [&]<Api A>() { return alloc_small<A>(h, cls, n); });
}

/// An allocation by a thread whose heap is gone (its exit destructors are running).
ARENA_COLD void* alloc_borrowed(unsigned cls, size_t n, Api api) {
    Heap* h = heap_acquire();
    if (h == nullptr)
        return fail_enomem();
    void* p = alloc_small_as(h, cls, n, api);
    heap_abandon(h);
    return p;
}

void maybe_trim(Heap* h) {
    const uint64_t epoch = g_trim_epoch.load(std::memory_order_relaxed);
    if (ARENA_LIKELY(h->trim_epoch == epoch))
        return;
    h->trim_epoch = epoch;
    release_cached_empties(h);
}

} // namespace

// ---- Slow paths --------------------------------------------------------------------------------

void* fail_enomem() {
    count(k_failed_allocs);
    errno = ENOMEM;
    return nullptr;
}

void* alloc_refill(Heap* h, unsigned cls, size_t n, Api api) {
    if (ARENA_UNLIKELY(h == &g_empty_heap)) {
        if (!ensure_init())
            return fail_enomem();
        Heap* mine = thread_heap_init();
        if (mine == nullptr)
            return t_dead ? alloc_borrowed(cls, n, api) : fail_enomem();
        return alloc_small_as(mine, cls, n, api);
    }
    flush_remote(h);
    collect_remote(h);
    maybe_trim(h);
    note_slow_path(h);
    prof::refresh(h);
    if (has_current(h, cls)) {
        Slab* cur = h->current[cls];
        if (cur->nonempty != 0) // remote frees just came in
            return alloc_small_as(h, cls, n, api);
        cur->where = SlabWhere::Full;
        clear_current(h, cls);
    }
    // Free slots in touched pages first: a partial slab, the empty one. Then fresh words (see
    // "Fresh words" at the top), of the class's fresh slab or of a new one.
    Slab* s = list_pop(h->partial[cls]);
    if (s == nullptr && (s = h->empty[cls]) != nullptr)
        h->empty[cls] = nullptr;
    if (s == nullptr && (s = h->fresh[cls]) == nullptr && (s = slab_new(h, cls)) == nullptr)
        return fail_enomem();
    if (s->nonempty == 0)
        slab_open(h, s);
    ARENA_ASSERT(slab_ok(s) && s->cls == cls && s->heap.load() == h && s->nonempty != 0);
    s->where = SlabWhere::Current;
    h->current[cls] = s;
    return alloc_small_as(h, cls, n, api); // s has a free slot: partial, empty, new all do
}

void slab_gained_free(Heap* h, Slab* s) {
    slab_after_free(h, s);
    // No maintenance() here: this runs inside flush_caches and collect_remote, and a trim
    // request served from it would run heap::trim (flush_caches, collect_remote) nested in
    // them on the same heap, a cache list emptied under the outer loop (found by the debug
    // build's cache_ok assertion). Requests are served at the top of slow paths only
    // (note_slow_path, the large-block paths).
}

void count_free_as(Heap* h, const Slab* s, Api api) {
    with_api<Api::Free, Api::Delete, Api::Realloc>(api, [&]<Api A>() { count_free<A>(h, s); });
}

void free_uncached_as(Heap* h, Slab* s, uint64_t idx, Api api) {
    with_api<Api::Free, Api::Delete, Api::Realloc>(api,
                                                   [&]<Api A>() { free_uncached<A>(h, s, idx); });
}

/// How far a heap's frees may run ahead of the process's live bytes (note_freed): the peak
/// overstates by at most this much per thread that only frees.
constexpr uint64_t kFreedSlack = 1 * MiB;

void note_freed(Heap* h, uint64_t bytes) {
    h->freed_unnoted += bytes;
    if (ARENA_LIKELY(h->freed_unnoted < kFreedSlack))
        return;
    h->freed_unnoted = 0;
    stats::note_live(live_bytes(h), &h->published_live);
}

void note_freed_large(Heap* h, uint64_t bytes) {
    h->freed_unnoted += bytes;
    if (ARENA_LIKELY(h->freed_unnoted < kFreedSlack))
        return;
    h->freed_unnoted = 0;
    stats::note_live(live_bytes_cached(h), &h->published_live);
}

int64_t live_bytes(Heap* h) {
    const StatShard* st = h->stats;
    int64_t small = 0;
#pragma GCC unroll 64 // the sizes become immediates: about five instructions a class
    for (unsigned c = 0; c < kNumClasses; ++c) {
        const uint64_t blocks = st->class_alloc[c].load(std::memory_order_relaxed) -
                                st->class_free[c].load(std::memory_order_relaxed);
        small += static_cast<int64_t>(blocks * kClasses[c].size); // wraps to < 0 if freed more
    }
    h->small_live = small;
    return h->live + small;
}

namespace {

/// Steps 3 and 4 of a remote free (see the top): makes `bits` of word wi of s visible to the
/// owner. Returns the bits that were set already (double frees, for the caller to report).
ARENA_FAST_PATH uint64_t publish_remote(Slab* s, unsigned wi, uint64_t bits) {
    const uint64_t old = s->remote_bits[wi].fetch_or(bits, std::memory_order_seq_cst);
    if (s->queued.load(std::memory_order_seq_cst) == 0 &&
        s->queued.exchange(1, std::memory_order_seq_cst) == 0) {
        if (Heap* owner = s->heap.load(std::memory_order_acquire)) {
            Slab* head = owner->remote.load(std::memory_order_relaxed);
            do {
                s->next_remote = head;
            } while (!owner->remote.compare_exchange_weak(head, s, std::memory_order_release,
                                                          std::memory_order_relaxed));
            purger::note_remote_push(); // the owner may be idle: its pages are the purger's
        }
    }
    return old & bits;
}

/// Publishes h's batch of class cls and empties it (it stays marked in h->batch_pending). The
/// bits are set in the slab before the batch is emptied, and both inside h->batch_seq's
/// bracket, so that a thread reading the batch (confirm.cc: the batches, then the remote bits)
/// finds a slot in one or the other.
void publish_batch(Heap* h, unsigned cls) {
    seq_open(h->batch_seq);
    RemoteBatch& b = h->batch[cls];
    Slab* s = reinterpret_cast<Slab*>(b.tag & ~kTagMask);
    const auto wi = static_cast<unsigned>(b.tag & kTagMask);
    // A batch names one word of a slab of its class, and counts its bits (types.h).
    ARENA_ASSERT(b.tag != 0 && b.bits != 0 && wi < kSlabMaxWords &&
                 static_cast<uint32_t>(__builtin_popcountll(b.bits)) == b.count &&
                 b.count <= kBatchMax);
    uint64_t bits = b.bits;
    uint64_t dbl = 0;
    if (ARENA_UNLIKELY(s->gen.load(std::memory_order_acquire) != b.gen)) {
        // The slab was released since the batch started. A live slot keeps its slab alive
        // until its batch is published, so every slot here was free already: freed twice,
        // with the key overwritten in between (a write after free).
        dbl = bits;
        bits = 0;
    } else {
        // Slots the owner has free already: freed twice, with the key overwritten in between.
        dbl = bits & s->free_bits[wi].load(std::memory_order_relaxed);
        bits &= ~dbl;
    }
    if (bits != 0) {
        dbl |= publish_remote(s, wi, bits);
        note_freed(h, static_cast<uint64_t>(__builtin_popcountll(bits)) * kClasses[cls].size);
    }
    const uintptr_t base = b.base;
    b.tag = 0;
    b.bits = 0;
    b.count = 0;
    seq_close(h->batch_seq);
    if (ARENA_UNLIKELY(dbl != 0)) { // reported outside the bracket: stderr may block
        const uint32_t size = kClasses[cls].size;
        report_remote_double_frees(base, size, wi, dbl);
        const auto n = static_cast<uint64_t>(__builtin_popcountll(dbl));
        bump(h->stats->class_free[cls], -n); // not freed after all
    }
}

/// The batch of class cls holds another slab word (or none): publish it, start one with `bit`.
ARENA_SLOW_PATH void batch_restart(Heap* h, unsigned cls, uintptr_t tag, uint64_t bit) {
    RemoteBatch& b = h->batch[cls];
    if (b.tag != 0)
        publish_batch(h, cls);
    const Slab* s = reinterpret_cast<const Slab*>(tag & ~kTagMask);
    b.tag = tag;
    b.bits = bit;
    b.base = s->base;
    b.gen = s->gen.load(std::memory_order_relaxed);
    b.count = 1;
    h->batch_pending |= uint64_t{1} << cls;
}

/// A remote free by a thread without a heap: published at once, counted in the shared shard.
ARENA_SLOW_PATH void free_remote_now(Slab* s, uintptr_t a, unsigned wi, uint64_t bit, Api api) {
    const unsigned cls = s->cls; // read while the slot is live: s cannot be released yet
    reinterpret_cast<CachedBlock*>(a)->key = g_free_key;
    if (ARENA_UNLIKELY(publish_remote(s, wi, bit) != 0))
        return report_free_error(HeapError::DoubleFree, a, api);
    StatShard& shared = stats::shared_shard();
    bump_shared(shared.class_free[cls]);
    stats::note_live_change(-static_cast<int64_t>(kClasses[cls].size));
    if (call_counter(api) != kCounterCount)
        bump_shared(shared.events[call_counter(api)]);
}

} // namespace

void report_free_error(HeapError kind, uintptr_t a, Api api) {
    report_heap_error(kind, reinterpret_cast<void*>(a), api_name(api));
}

void batch_full(Heap* h, unsigned cls) {
    publish_batch(h, cls);
    h->batch_pending &= ~(uint64_t{1} << cls);
}

void free_remote_checked(Heap* h, Slab* s, uintptr_t a, uint64_t idx, Api api) {
    const auto wi = static_cast<unsigned>(idx >> 6);
    const uint64_t bit = uint64_t{1} << (idx & 63);
    auto* block = reinterpret_cast<CachedBlock*>(a);
    if (ARENA_UNLIKELY(h == &g_empty_heap))
        return free_remote_now(s, a, wi, bit, api);
    const unsigned cls = s->cls;
    RemoteBatch& b = h->batch[cls];
    const uintptr_t tag = reinterpret_cast<uintptr_t>(s) | wi;
    const bool same = b.tag == tag;
    // In the batch already: freed twice by this thread, its key overwritten in between.
    if (ARENA_UNLIKELY(same && (b.bits & bit) != 0))
        return report_free_error(HeapError::DoubleFree, a, api);
    // Mark the block free, as the owner's cache does, so that a second free of it by any thread
    // is seen before the owner collects it (its bit is not visible until then).
    block->key = g_free_key;
    StatShard* st = h->stats;
    bump(st->class_free[cls]);
    if (call_counter(api) != kCounterCount)
        bump(st->events[call_counter(api)]);
    if (ARENA_LIKELY(same)) {
        b.bits |= bit;
        if (ARENA_UNLIKELY(++b.count == kBatchMax))
            return batch_full(h, cls);
        return;
    }
    return batch_restart(h, cls, tag, bit);
}

void free_remote_suspect(Heap* h, Slab* s, uintptr_t a, uint64_t idx, Api api) {
    switch (where_is(h, s, a, idx)) {
    case Where::Free:
        return report_free_error(HeapError::DoubleFree, a, api);
    case Where::Unknown:
        return defer_free(s, a, api);
    case Where::Live:
        break;
    }
    return free_remote_checked(h, s, a, idx, api);
}

void free_remote_as(Heap* h, Slab* s, uintptr_t a, Api api) {
    with_api<Api::Free, Api::Delete, Api::Realloc>(api, [&]<Api A>() { free_remote<A>(h, s, a); });
}

void flush_remote(Heap* h) {
    for (uint64_t m = h->batch_pending; m != 0; m &= m - 1)
        publish_batch(h, static_cast<unsigned>(__builtin_ctzll(m)));
    h->batch_pending = 0;
}

void trim() {
    Heap* h = t_heap;
    if (h != &g_empty_heap) {
        flush_remote(h);
        collect_remote(h);
        release_cached_empties(h);
        h->trim_epoch = g_trim_epoch.load(std::memory_order_relaxed) + 1;
    }
    g_trim_epoch.fetch_add(1, std::memory_order_relaxed);
    drain_abandoned();
    stats::count_trim();
}

void serve_trim(uint64_t ticket) {
    trim(); // counts the trim
    pages::trim();
    stats::trim_served(ticket);
}

void thread_exit(void* heap) {
    Heap* h = static_cast<Heap*>(heap);
    t_heap = &g_empty_heap;
    t_dead = true;
    heap_abandon(h);
}

Heap* self() {
    Heap* h = t_heap;
    if (ARENA_LIKELY(h != &g_empty_heap))
        return h;
    return thread_heap_init();
}

Heap* all_heaps() {
    return g_all_heaps.load(std::memory_order_acquire);
}

uint32_t created() {
    return __atomic_load_n(&g_heap_count, __ATOMIC_RELAXED);
}

void count_heaps(unsigned* active, unsigned* abandoned) {
    *active = *abandoned = 0;
    for (Heap* h = g_all_heaps.load(std::memory_order_acquire); h != nullptr; h = h->next_all) {
        const HeapState st = h->state.load(std::memory_order_relaxed);
        if (st == HeapState::Active)
            ++*active;
        else if (st == HeapState::Abandoned || st == HeapState::Draining)
            ++*abandoned;
    }
}

bool init(uint64_t seed) {
    // splitmix64 of the seed: any nonzero value works; unpredictable ones make it unlikely that
    // a program's data looks like a freed block.
    uint64_t z = seed + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    g_free_key = z != 0 ? z : 1;
    return pthread_key_create(&g_thread_key, thread_exit) == 0;
}

bool fork_child() {
    g_heaps_lock.release_if_orphaned(); // heaps are linked last (heap_acquire): nothing to repair
    // Only the forking thread survives. Heaps of other threads may be mid-update: never touch
    // them again (their memory is lost to the child, as with any allocator), and so are heaps
    // being drained by another thread. Their remote batches are lost with them: those slots stay
    // allocated in the child, as would a free that was in progress in another thread. This
    // thread's own heap is not touched at all (fork.cc); a heap this very thread was adopting
    // or draining when a signal handler forked is marked Lost here, and set right by the
    // interrupted code when the handler returns (thread_heap_init, drain_abandoned).
    for (Heap* h = g_all_heaps.load(std::memory_order_relaxed); h != nullptr; h = h->next_all) {
        if (h == t_heap)
            continue;
        const HeapState st = h->state.load(std::memory_order_relaxed);
        if (st == HeapState::Active || st == HeapState::Draining)
            h->state.store(HeapState::Lost, std::memory_order_relaxed);
    }
    return g_heaps_lock.held_by_self();
}

// ---- Pages of remote frees ---------------------------------------------------------------------
// Slots freed by other threads reach their slab's owner only when it collects them, on its
// slow path. An owner that has gone quiet (or only allocates from its free caches) never does,
// and its slabs keep every page resident, however much was freed into them (a thread that
// fills a cache which another thread empties, then waits). The background purger cannot
// collect for it (the owner's lists and bitmap are its own, without a lock), but it can return
// the pages that only such slots cover: while a slab waits on its owner's remote queue, a slot
// whose remote bit is set is free and out of everybody's reach. The owner allocates only
// slots of its own bitmap, and remote bits reach that bitmap only through collect_remote,
// which takes slabs off the queue. So the purger takes a heap's whole queue (the exchange the
// owner does), returns the pages of every slab whose remote slots have not changed for a
// whole tick (the same delay as free pages get), and pushes the queue back. The owner meanwhile
// finds its queue empty or shorter, and collects those slabs at a later slow path; their
// slots read as zero then. (The free key in those slots is gone too: a second free of such
// a slot by the owner before it collects is no longer recognised as a double free; by any
// other thread it still is, when its batch is published.)
// A fork child that copies the queue while the purger holds it pushes it back
// (adopt_held_after_fork), unless the fork fell between the exchange and the note of it, or
// between the note's clearing and the push: those slabs stay off their queue in the child
// (their remote frees are lost to it: a leak).

namespace {

struct Held {
    Heap* heap = nullptr;
    Slab* head = nullptr;
    Slab* tail = nullptr;
};
constinit Held g_held; // the queue the purger holds right now

void push_back_queue(Heap* h, Slab* head, Slab* tail) {
    Slab* top = h->remote.load(std::memory_order_relaxed);
    do {
        tail->next_remote = top;
    } while (!h->remote.compare_exchange_weak(top, head, std::memory_order_release,
                                              std::memory_order_relaxed));
}

/// Page ranges to return, merged where they touch before each madvise: neighbouring slabs
/// usually lie next to each other, and one madvise per slab costs a TLB shootdown each.
class PurgeRanges {
public:
    void add(uintptr_t a, size_t n) {
        if (count_ == kMax)
            flush();
        r_[count_++] = Range{a, n};
    }
    /// Returns the bytes released so far and starts again.
    size_t flush() {
        std::sort(r_, r_ + count_, [](const Range& x, const Range& y) { return x.a < y.a; });
        for (size_t i = 0; i < count_;) {
            const uintptr_t a = r_[i].a;
            uintptr_t end = a + r_[i].n;
            for (++i; i < count_ && r_[i].a == end; ++i)
                end += r_[i].n;
            released_ += os::purge(reinterpret_cast<void*>(a), end - a);
        }
        count_ = 0;
        return released_;
    }

private:
    struct Range {
        uintptr_t a;
        size_t n;
    };
    static constexpr size_t kMax = 4096;
    Range* r_ = g_ranges;
    size_t count_ = 0;
    size_t released_ = 0;
    // Static, not on the purger's stack (64 KiB); only the purger uses it.
    static Range g_ranges[kMax];
};
constinit PurgeRanges::Range PurgeRanges::g_ranges[PurgeRanges::kMax] = {};

/// Adds to `out` the pages of s that only remote-freed slots cover, once its remote slots have
/// been the same for a whole tick; sets *pending when s changed since the last look.
void purge_remote_slab(Slab* s, PurgeRanges& out, bool* pending) {
    uint64_t bits[kSlabMaxWords];
    uint32_t count = 0;
    for (unsigned wi = 0; wi < s->nwords; ++wi) {
        bits[wi] = s->remote_bits[wi].load(std::memory_order_acquire);
        count += static_cast<uint32_t>(__builtin_popcountll(bits[wi]));
    }
    if (count == 0 || s->remote_mark == (count << 1 | 1))
        return; // nothing freed, or its pages went back already
    if (s->remote_mark >> 1 != count) {
        s->remote_mark = count << 1; // seen now; returned at the next tick if it stays so
        *pending = true;
        return;
    }
    s->remote_mark = count << 1 | 1;
    auto slot_free = [&](size_t slot) { return (bits[slot >> 6] >> (slot & 63)) & 1; };
    size_t run = 0;
    for (size_t p = 0; p <= s->npages; ++p) {
        bool all = p < s->npages;
        if (all) {
            const size_t first = (p << kPageShift) / s->size;
            const size_t last = (((p + 1) << kPageShift) - 1) / s->size;
            for (size_t slot = first; slot <= last && all; ++slot)
                all = slot_free(slot);
        }
        if (all) {
            ++run;
        } else if (run != 0) {
            out.add(s->base + ((p - run) << kPageShift), run << kPageShift);
            run = 0;
        }
    }
}

} // namespace

size_t purge_remote_pages(bool* pending) {
    PurgeRanges ranges;
    for (Heap* h = g_all_heaps.load(std::memory_order_acquire); h != nullptr; h = h->next_all) {
        if (h->state.load(std::memory_order_relaxed) == HeapState::Lost ||
            h->remote.load(std::memory_order_relaxed) == nullptr)
            continue;
        Slab* head = h->remote.exchange(nullptr, std::memory_order_acquire);
        if (head == nullptr)
            continue;
        Slab* tail = head;
        while (tail->next_remote != nullptr)
            tail = tail->next_remote;
        g_held = Held{h, head, tail};
        std::atomic_signal_fence(std::memory_order_seq_cst);
        for (Slab* s = head; s != nullptr; s = s->next_remote)
            purge_remote_slab(s, ranges, pending);
        ranges.flush();        // before the slabs go back: the owner may collect them at once
        g_held.head = nullptr; // a fork from here on leaks the queue in the child (see above)
        std::atomic_signal_fence(std::memory_order_seq_cst);
        push_back_queue(h, head, tail);
    }
    return ranges.flush();
}

void adopt_held_after_fork() {
    if (g_held.head != nullptr)
        push_back_queue(g_held.heap, g_held.head, g_held.tail);
    g_held.head = nullptr;
}

} // namespace heap
} // namespace arena
