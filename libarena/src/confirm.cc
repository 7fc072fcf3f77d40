// SPDX-License-Identifier: MIT
// Confirming a suspected double free (issue 14; glibc's tst-tcfree3, BZ #23907).
//
// The free key in a block's second word (types.h, "free key") is only a suspicion: a live block
// carries it when a program copies freed memory into it. A free of such a block must be done,
// and a real double free must still be reported and must not put a block on two lists. So a
// suspected free looks for the block everywhere a free block can be:
//   (a) a remote batch: of the thread that freed it (Heap::batch, never its slab's owner),
//   (b) the free cache of its slab's owner (Heap::cache),
//   (c) its slab's remote bits (published, not collected),
//   (d) its slab's bitmap.
// Blocks move (a) -> (c) -> (d) and (b) -> (d), never back without being handed out (which
// clears the key). where_is looks in that order, and each move makes the block visible in the
// later place before it leaves the earlier one (publish_batch sets remote bits before emptying
// the batch; collect_slab sets the bitmap before clearing remote bits; flush_caches sets the
// bitmap before unlinking), so a block that moves while it is looked for is found further on.
//
// What each look costs and how sure it is:
//   (c), (d)    atomic words any thread may read: exact.
//   own (a)/(b) the calling thread's own batch and cache: exact.
//   others' (a) a batch changes in place only by gaining slots; everything else (publishing,
//               which empties it and is followed by a restart) happens inside Heap::batch_seq's
//               odd bracket. A read between two equal even values of it is a state the batch
//               really had. Retried while the owner is inside the bracket; Unknown if it stays
//               there (a thread stopped or preempted for the whole of kBatchTries).
//   owner's (b) the list is linked through the blocks and its owner pushes and pops with plain
//               stores, no lock and no sequence word (the fast paths stay as they are), and a
//               popped block's first word becomes program data, so a walk may follow a program
//               pointer. But every push and pop counts in the owner's stat shard (class_free,
//               class_alloc: written by the owner only, the pop's count before malloc returns
//               the block), and flush_caches brackets itself with Heap::flush_seq. A program
//               pointer in a popped block was stored after the pop's count, so a walk that read
//               one reads the count changed afterwards (x86-64 keeps stores in program order for
//               every reader; causality holds across threads): a walk between equal counts and
//               an equal even flush_seq only followed links the list really had. A push stores
//               the link before the head (the same pointer type: the compiler keeps the order).
//               Retried kWalkTries times; Unknown while the owner keeps using the class. Not
//               attempted elsewhere than x86-64.
// A block found is Free (the free is a double free: reported, nothing changes); a block found
// nowhere by exact looks is Live (the free is done). Unknown is left to the one thread for
// which (b) is exact, the slab's owner: the free goes on its Heap::suspects list (a node from
// meta::suspect_alloc), which it settles on its next slow path (collect_remote), as it folds in
// remote frees. Meanwhile the owner may hand the block out from its cache (if it was there, the
// free was a double free); handing out clears the key, so the owner settles a block that no
// longer carries the key as a double free, and frees it only if it still carries the key and
// is nowhere free. Never a valid free dropped for good (a node kept for a batch that cannot be
// read yet is tried again next time), never a block on two lists.
//
// A heap lost at fork (HeapState::Lost) never publishes its batches or uses its cache again:
// its batch is read once, and a block in it is reported, but one it left half changed is not
// waited for.
#include "confirm.h"

#include "heap.h"
#include "meta.h"
#include "options.h"
#include "pages.h"
#include "report.h"

namespace arena::heap {
namespace {

enum class Found { Yes, No, Unknown };

/// Reads of another thread's batch while it publishes it (a few dozen instructions).
constexpr int kBatchTries = 1000;
/// Walks of another thread's free cache while it allocates or frees in the class.
constexpr int kWalkTries = 8;

/// Whether c is the start of a slot of a slab of heap o and class cls, by the page map: what a
/// link of o's free cache must be before it is followed.
bool is_slot_of(const Heap* o, unsigned cls, uintptr_t c) {
    if ((c & (kMinAlign - 1)) != 0)
        return false;
    const Region* r = pages::region_of(c);
    if (r == nullptr)
        return false;
    const Slab* s = slab_of_entry(r->pagemap[r->page_of(c)].load(std::memory_order_acquire));
    return s != nullptr && s->heap.load(std::memory_order_relaxed) == o && s->cls == cls &&
           slot_index(s, c) >= 0;
}

// ---- (a) Remote batches
// --------------------------------------------------------------------------

/// Whether heap t's batch of class cls holds `bit` of slab word `tag`, t owned by another thread.
Found in_batch_of(const Heap* t, unsigned cls, uintptr_t tag, uint64_t bit, int tries) {
    const RemoteBatch& b = t->batch[cls];
    for (int i = 0; i < tries; ++i) {
        const uint64_t q = t->batch_seq.load(std::memory_order_acquire);
        if ((q & 1) == 0) {
            const uintptr_t btag = __atomic_load_n(&b.tag, __ATOMIC_RELAXED);
            const uint64_t bits = __atomic_load_n(&b.bits, __ATOMIC_RELAXED);
            std::atomic_thread_fence(std::memory_order_acquire);
            if (t->batch_seq.load(std::memory_order_relaxed) == q)
                return btag == tag && (bits & bit) != 0 ? Found::Yes : Found::No;
        }
        ARENA_CPU_RELAX();
    }
    return Found::Unknown;
}

/// Whether any heap's batch holds the slot; `owner`'s never does (it batches frees into other
/// heaps' slabs only).
Found in_batches(const Heap* self, const Heap* owner, unsigned cls, uintptr_t tag, uint64_t bit) {
    Found r = Found::No;
    for (const Heap* t = all_heaps(); t != nullptr; t = t->next_all) {
        if (t == owner)
            continue;
        if (t == self) {
            if (t->batch[cls].tag == tag && (t->batch[cls].bits & bit) != 0)
                return Found::Yes;
            continue;
        }
        const bool lost = t->state.load(std::memory_order_acquire) == HeapState::Lost;
        const Found f = in_batch_of(t, cls, tag, bit, lost ? 1 : kBatchTries);
        if (f == Found::Yes)
            return Found::Yes;
        if (f == Found::Unknown && !lost)
            r = Found::Unknown;
    }
    return r;
}

// ---- (b) Free caches
// -----------------------------------------------------------------------------

/// Whether a is on h's free cache of class cls, h being the calling thread's (or held by it).
Found in_own_cache(const Heap* h, unsigned cls, uintptr_t a) {
    const FreeCache& c = h->cache[cls];
    uintptr_t x = reinterpret_cast<uintptr_t>(c.head);
    for (uint32_t n = 0; n <= cache_cap(cls) - c.room; ++n) {
        if (x == 0)
            return Found::No;
        if (x == a)
            return Found::Yes;
        if (!is_slot_of(h, cls, x)) // a link overwritten by a write after free
            return Found::Unknown;
        x = reinterpret_cast<uintptr_t>(reinterpret_cast<const CachedBlock*>(x)->next);
    }
    return Found::Unknown;
}

/// Whether a is on the free cache of class cls of o, which another thread owns (see the top).
Found in_cache_of(const Heap* o, unsigned cls, uintptr_t a) {
#if defined(__x86_64__)
    const StatShard* st = o->stats;
    const FreeCache& c = o->cache[cls];
    for (int i = 0; i < kWalkTries; ++i) {
        const uint64_t q = o->flush_seq.load(std::memory_order_acquire);
        const uint64_t pops = st->class_alloc[cls].load(std::memory_order_acquire);
        const uint64_t pushes = st->class_free[cls].load(std::memory_order_acquire);
        Found r = Found::Unknown;
        if ((q & 1) == 0) {
            uintptr_t x = reinterpret_cast<uintptr_t>(__atomic_load_n(&c.head, __ATOMIC_RELAXED));
            const uint32_t cap = cache_cap(cls);
            for (uint32_t n = 0; n <= cap; ++n) {
                if (x == 0) {
                    r = Found::No;
                    break;
                }
                if (x == a) {
                    r = Found::Yes;
                    break;
                }
                if (!is_slot_of(o, cls, x))
                    break;
                x = reinterpret_cast<uintptr_t>(__atomic_load_n(
                    &reinterpret_cast<const CachedBlock*>(x)->next, __ATOMIC_RELAXED));
            }
        }
        std::atomic_thread_fence(std::memory_order_acquire);
        if (r != Found::Unknown && st->class_alloc[cls].load(std::memory_order_relaxed) == pops &&
            st->class_free[cls].load(std::memory_order_relaxed) == pushes &&
            o->flush_seq.load(std::memory_order_relaxed) == q)
            return r;
        ARENA_CPU_RELAX();
    }
#else
    (void)o, (void)cls, (void)a;
#endif
    return Found::Unknown;
}

// ---- Deferred frees
// ------------------------------------------------------------------------------

void push_suspect(Heap* h, Suspect* d) {
    Suspect* head = h->suspects.load(std::memory_order_relaxed);
    do {
        d->next = head;
    } while (!h->suspects.compare_exchange_weak(head, d, std::memory_order_release,
                                                std::memory_order_relaxed));
}

void report_double(uintptr_t a, Api api) {
    report_heap_error(HeapError::DoubleFree, reinterpret_cast<void*>(a), api_name(api));
}

/// Settles one deferred free of a in a slab of h. False to keep it for the next time.
bool settle(Heap* h, uintptr_t a, Api api) {
    const Region* r = pages::region_of(a);
    const uintptr_t e =
        r != nullptr ? r->pagemap[r->page_of(a)].load(std::memory_order_acquire) : 0;
    Slab* s = slab_of_entry(e);
    const int64_t idx = s != nullptr ? slot_index(s, a) : -1;
    // Handed out since (the key cleared) or its slab released: it was free when it was freed.
    if (idx < 0 || s->heap.load(std::memory_order_relaxed) != h ||
        reinterpret_cast<const CachedBlock*>(a)->key != g_free_key) {
        report_double(a, api);
        return true;
    }
    switch (where_is(h, s, a, static_cast<uint64_t>(idx))) {
    case Where::Free:
        report_double(a, api);
        return true;
    case Where::Unknown:
        return false;
    case Where::Live:
        break;
    }
    free_to_slab(h, s, static_cast<uint64_t>(idx));
    count_free_as(h, s, api);
    return true;
}

} // namespace

Where where_is(const Heap* self, const Slab* s, uintptr_t a, uint64_t idx) {
    const Heap* owner = s->heap.load(std::memory_order_acquire);
    if (owner == nullptr) // released: every slot was free
        return Where::Free;
    const unsigned cls = s->cls;
    const auto wi = static_cast<unsigned>(idx >> 6);
    const uint64_t bit = uint64_t{1} << (idx & 63);
    // (a) and (b) first: the places blocks leave for (c) and (d).
    const Found batch = in_batches(self, owner, cls, reinterpret_cast<uintptr_t>(s) | wi, bit);
    if (batch == Found::Yes)
        return Where::Free;
    const Found cache = owner == self ? in_own_cache(owner, cls, a) : in_cache_of(owner, cls, a);
    if (cache == Found::Yes)
        return Where::Free;
    if ((s->remote_bits[wi].load(std::memory_order_seq_cst) & bit) != 0 ||
        (s->free_bits[wi].load(std::memory_order_acquire) & bit) != 0)
        return Where::Free;
    return batch == Found::Unknown || cache == Found::Unknown ? Where::Unknown : Where::Live;
}

Where where_is_block(const Slab* s, uintptr_t a, uint64_t idx) {
    return where_is(t_heap, s, a, idx);
}

void defer_free(const Slab* s, uintptr_t a, Api api) {
    Heap* owner = s->heap.load(std::memory_order_acquire);
    if (owner == nullptr)
        return report_double(a, api);
    if (option(Opt::VERBOSE) != 0) {
        Msg m;
        m.str("arena: ")
            .str(api_name(api))
            .str("() of ")
            .hex(a)
            .str(", which carries the free key, left to its owner to confirm")
            .nl()
            .emit();
    }
    Suspect* d = meta::suspect_alloc();
    if (d == nullptr)
        return; // no metadata left: the block stays allocated (a leak, never two lists)
    d->addr = a;
    d->api = api;
    push_suspect(owner, d);
}

void settle_suspects(Heap* h) {
    Suspect* list = h->suspects.exchange(nullptr, std::memory_order_acquire);
    Suspect* keep = nullptr;
    while (list != nullptr) {
        Suspect* d = list;
        list = d->next;
        if (settle(h, d->addr, d->api)) {
            meta::suspect_free(d);
        } else {
            d->next = keep;
            keep = d;
        }
    }
    while (keep != nullptr) {
        Suspect* d = keep;
        keep = d->next;
        push_suspect(h, d);
    }
}

void free_local_suspect(Heap* h, Slab* s, uint64_t idx, Api api) {
    const uintptr_t a = s->base + idx * s->size;
    switch (where_is(h, s, a, idx)) {
    case Where::Free:
        return report_double(a, api);
    case Where::Unknown:
        return defer_free(s, a, api);
    case Where::Live:
        break;
    }
    // What free_local does after its checks; the block carries the key already.
    FreeCache& c = h->cache[s->cls];
    if (c.room == 0)
        return free_uncached_as(h, s, idx, api);
    auto* b = reinterpret_cast<CachedBlock*>(a);
    b->next = c.head;
    c.head = b;
    c.room--;
    count_free_as(h, s, api);
}

} // namespace arena::heap
