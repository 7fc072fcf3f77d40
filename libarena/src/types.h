// SPDX-License-Identifier: MIT
// The allocator's data structures, in one place.
//
// Glossary
//   region  : one large MAP_NORESERVE reservation. Region 0 is made at start (ARENA_RESERVE);
//             more are made only when it is exhausted. Its memory is handed out in 4 KiB pages
//             tracked by a RunMap (bitmap.h): used/dirty/young bitmaps, runs may cross words.
//   pagemap : one word per page of a region, out of band (no header next to any block):
//             a Slab* for every page of a slab, (npages << kLargeShift) | kLargeTag for the first
//             page of a large block, 0 otherwise. free() finds any block's metadata with one load.
//   slab    : a run of pages cut into equal slots of one size class. Its slot bitmap (1 = free)
//             is the truth about which slots are allocated, which is what makes a double or
//             invalid free detectable at no cost.
//   heap    : per-thread state: for each size class a current slab, a list of
//             partially free slabs and one cached empty slab. Heaps are never destroyed; when a
//             thread exits its heap is abandoned and the next new thread adopts it whole.
//   current : the slab a heap allocates a class from. Its `nonempty` summary (one bit per
//             bitmap word that has a free slot) makes finding a free slot two tzcnt, however
//             scattered the free slots are.
//   fresh word : a word of a slab's bitmap not opened for allocation yet (Slab::fresh): a slab
//             opens its words one page's worth at a time, and only when the class has no free
//             slot in pages already touched (heap.cc, "Fresh words").
//   free cache : per heap and class, a short LIFO list of blocks the thread freed, linked
//             through the blocks (CachedBlock), that malloc hands out again first. Cached
//             blocks are still allocated in the slab bitmap; each carries a process-wide secret
//             key, so a second free of one is recognised (heap.h: free_local).
//   free key : g_free_key in the second word of a block (CachedBlock::key) means "freed and not
//             handed out since": set by every free of a small block (to the cache, to the
//             bitmap, remote), cleared by the one path that hands a block out (alloc_small). A
//             free of a block carrying it is a suspected double free, confirmed before it is
//             reported (confirm.cc): the key is random per process, but a live block carries it
//             when a program copies freed memory (glibc's tst-tcfree3 does; BZ #23907). A
//             block not carrying it is not free in a cache or a remote batch, so the free fast
//             paths compare one word, and only a match looks further. A remote free checks the
//             key and Slab::handed, not the owner's bitmap (a line the owner writes on every
//             malloc); the bitmap is checked again when its batch is published (a key
//             overwritten by a write after free).
//   remote free : a free by a thread that does not own the slab. It is batched in the freeing
//             thread's heap (a remote batch per size class: one slab word's pending bits), and a
//             batch is published with one atomic OR into the slab's remote bitmap and, if the
//             slab is not queued yet, a push on the owner's remote stack; the owner folds remote
//             bits into its bitmap on its slow path (heap.cc: "Remote frees", collect_remote).
//   large block : a request above kSmallMax: a run of pages, owned by no thread.
#pragma once

#include "bitmap.h"
#include "config.h"
#include "macros.h"
#include "profile.h"
#include "size_class.h"
#include "stats.h"

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace arena {

struct Heap;
struct Region;

// ---- Page map entries --------------------------------------------------------------------------

inline constexpr uintptr_t kLargeTag = 1;   // first page of a large block
inline constexpr uintptr_t kSampledTag = 2; // a slab page where a live sampled block starts
                                            // (profile.h): its frees leave the fast path
inline constexpr uintptr_t kCachedTag = 4;  // with kLargeTag: a freed large block kept whole
                                            // in the large-block cache (pages.h: cache_put)
inline constexpr uintptr_t kTagMask = 63;   // slab descriptors are 64-byte aligned
inline constexpr unsigned kLargeShift = 6;  // entry >> kLargeShift = pages of the large block

// ---- Slab --------------------------------------------------------------------------------------

inline constexpr unsigned kSampledSlots = 4;    // Slab::sampled_slot
inline constexpr uint16_t kNoSlot = UINT16_MAX; // an empty entry of it
static_assert(kSlabMaxWords * 64 <= kNoSlot);

/// Where a slab is in its owner's lists.
enum class SlabWhere : uint8_t {
    Current,  // heap->current[cls]: malloc allocates from it
    Partial,  // on heap->partial[cls]: has free slots
    Full,     // on no list: no free slot in the owner's view
    Empty,    // heap->empty[cls]: all slots free, kept for reuse
    Detached, // all slots free, waiting to come off the remote queue before release
};

struct alignas(ARENA_CACHE_LINE) Slab {
    // Line 0: read by every thread that frees into it; fixed while the slab lives, but for
    // `handed`, which the owner raises only while the slab fills up for the first time.
    uintptr_t base = 0;               // address of slot 0 (the slab's first page)
    uint64_t recip = 0;               // kClasses[cls].recip: slot index = (offset * recip) >> 40
    uint32_t size = 0;                // slot size in bytes
    uint32_t nslots = 0;              // slots in the slab
    uint16_t cls = 0;                 // size class
    uint8_t nwords = 0;               // bitmap words in use: ceil(nslots / 64)
    std::atomic<Heap*> heap{nullptr}; // owning heap (null once released)
    Region* region = nullptr;         // region holding the pages
    uint32_t first_page = 0;          // index of the first page in the region
    uint32_t npages = 0;              // pages in the slab
    // Slots [0, handed) were handed out at least once; the others never were (malloc always
    // takes the lowest free slot, so what it ever handed out is a prefix). A remote free of a
    // slot at or above it is an invalid free, caught without reading the owner's bitmap.
    std::atomic<uint32_t> handed{0};
    std::atomic<uint32_t> gen{0}; // bumped when the slab is released (heap.cc, publish_batch)

    // Line 1: the owner's allocation state. malloc reads `nonempty`, takes the lowest set bit of
    // the first word it names, and never scans.
    alignas(ARENA_CACHE_LINE) uint32_t nonempty = 0; // bit i set <=> free_bits[i] != 0 and
                                                     // word i is open (not in `fresh`)
    uint32_t fresh = 0; // words not opened yet: all their slots free, never handed out,
                        // their pages maybe never touched (heap.cc, "Fresh words")
    uint32_t used = 0;  // slots allocated in the owner's view (a remote free not yet
                        // collected still counts as used)
    SlabWhere where = SlabWhere::Detached;
    Slab* next = nullptr; // heap->partial[cls] list
    Slab* prev = nullptr;

    // Lines 2-3: slot bitmap, 1 = free. Written only by the owner; other threads read a word to
    // detect a double free (hence relaxed atomics, which compile to plain moves).
    alignas(ARENA_CACHE_LINE) std::atomic<uint64_t> free_bits[kSlabMaxWords] = {};

    // Lines 4-5: frees by other threads not yet collected, 1 = freed. Only atomic OR (remote
    // threads) and AND (the owner, clearing what it collected).
    alignas(ARENA_CACHE_LINE) std::atomic<uint64_t> remote_bits[kSlabMaxWords] = {};

    // Line 6: the owner's remote queue. `queued` is 1 while the slab is on heap->remote, and
    // stays 1 after the slab is released (a tombstone: a late remote freer never pushes a
    // released slab). See heap.cc, "Remote frees".
    alignas(ARENA_CACHE_LINE) std::atomic<uint32_t> queued{0};
    // The background purger's look at remote_bits while the slab waits on the queue: the slots
    // counted there at its last tick (<< 1), and bit 0 once it returned their pages to the
    // kernel. Written by whoever holds the slab off the queue (heap.cc, "Pages of remote frees").
    uint32_t remote_mark = 0;
    Slab* next_remote = nullptr; // heap->remote stack link
    Slab* next_free = nullptr;   // descriptor pool link (meta.cc)
    // Heap profiling (profile.cc; written under the profile lock): live sampled blocks in the
    // slab, and the slots of up to kSampledSlots of them (the pages they start in carry
    // kSampledTag), so that a free in a tagged page knows without the lock whether its block is
    // one; `sampled_overflow` once more were live at a time (then every page is tagged, until
    // none are live).
    uint32_t sampled = 0;
    std::atomic<uint16_t> sampled_slot[kSampledSlots] = {kNoSlot, kNoSlot, kNoSlot, kNoSlot};
    std::atomic<uint8_t> sampled_overflow{0};

    constexpr Slab() = default;
    Slab(const Slab&) = delete;
    Slab& operator=(const Slab&) = delete;
};

// ---- Heap --------------------------------------------------------------------------------------

enum class HeapState : uint32_t {
    Active,    // owned by a live thread
    Abandoned, // its thread exited; adoptable, and drainable by any thread
    Draining,  // another thread is folding its remote frees and releasing empty slabs
    Lost,      // owned by a thread that did not survive fork(); never touched again
};

/// The head of a free block in a free cache (the first 16 bytes of the block; the smallest
/// class is 16 bytes).
struct CachedBlock {
    CachedBlock* next;
    uint64_t key; // g_free_key while the block is free; cleared when it is handed out
};

/// A free that could not be confirmed or refuted as a double free when it was made, left to the
/// owner of its slab (Heap::suspects; confirm.cc). Made by meta::suspect_alloc.
/// The slab a pagemap entry names, whether or not it carries kSampledTag; null for anything else
/// (0, a large block's first page).
inline Slab* slab_of_entry(uintptr_t e) {
    return (e & ~kSampledTag & kTagMask) == 0 && e > kTagMask
               ? reinterpret_cast<Slab*>(e & ~kTagMask)
               : nullptr;
}

struct Suspect {
    Suspect* next;
    uintptr_t addr; // the block
    Api api;        // the call that freed it, for the report
};

/// A heap's free cache of one class: at most cache_cap(cls) blocks (size_class.h).
struct FreeCache {
    CachedBlock* head = nullptr;
    uint32_t room = 0; // blocks it may still take: cache_cap(cls) minus those on the list (one
                       // field that free tests and decrements; 0 in the sentinel heap)
};

/// Remote frees by a heap's thread not published yet: slots of one bitmap word of one slab
/// (heap.cc, "Remote frees"). Empty when `tag` is 0; otherwise `bits` is not 0.
struct RemoteBatch {
    uintptr_t tag = 0;  // Slab* | word index (descriptors are 64-byte aligned; words < 64)
    uint64_t bits = 0;  // slots freed, 1 = freed; the slab's owner still counts them as used
    uintptr_t base = 0; // the slab's Slab::base and Slab::gen when the batch started: a
    uint32_t gen = 0;   // released slab is recognised, and its slots still named
    uint32_t count = 0; // bits set in `bits`
};
/// A batch is published once it holds this many slots, even if the next free is to the same
/// word: its slots cannot be reused by their owner, which meanwhile opens new memory. (bench
/// xthread, blocks freed in the order they were allocated: a whole word per class held back,
/// peak RSS 3.6 MiB; with 32, 3.5 MiB, for 0.4% more instructions; with 16, 1.3% more.)
inline constexpr uint32_t kBatchMax = 32;
static_assert(kSlabMaxWords <= kTagMask + 1);
static_assert(kNumClasses <= 64); // Heap::batch_pending has a bit per class

struct alignas(ARENA_CACHE_LINE) Heap {
    /// The malloc fast path reads these first: recently freed blocks of each class.
    FreeCache cache[kNumClasses];
    /// Then these: the slab each class allocates from, or the empty sentinel slab
    /// (heap.cc: g_empty_slab, nonempty == 0) when there is none.
    Slab* current[kNumClasses] = {};
    StatShard* stats = nullptr; // counters of this heap (written by the owner only):
                                // its shard of the stats page, or a private one
    int64_t live = 0;           // page bytes of large blocks this thread allocated minus
                                // those it freed (negative when it frees other threads'
                                // blocks); small blocks' come from the class counters
                                // (heap::live_bytes), summed for the peak
    /// Bytes this thread may still allocate before its next heap profile sample (profile.h).
    /// The owner counts it down; set_rate stores into it from another thread (hence atomic).
    std::atomic<int64_t> prof_left{prof::kOff};
    /// Remote frees by this heap's thread, one batch per size class, and which are not empty
    /// (bit c: batch[c]). Written by the owner only; empty in an abandoned heap.
    uint64_t batch_pending = 0;
    RemoteBatch batch[kNumClasses];
    /// Odd while the owner publishes a batch (its only change besides adding a slot), so that
    /// another thread can read a batch it does not own (confirm.cc); flush_seq the same for
    /// flushing the free caches into the slab bitmaps. Written by the owner only.
    std::atomic<uint64_t> batch_seq{0};
    std::atomic<uint64_t> flush_seq{0};

    // Owner-only slow-path state.
    Slab* partial[kNumClasses] = {}; // slabs with free slots, doubly linked
    Slab* empty[kNumClasses] = {};   // one empty slab kept per class
    Slab* fresh[kNumClasses] = {};   // the one slab of each class with fresh words
    uint64_t trim_epoch = 0;         // last malloc_trim epoch seen (heap.cc: maybe_trim)
    StatShard* flushed = nullptr;    // overflow heaps (no page shard left): what of the
                                     // private `stats` was already added to shard 0
    int64_t published_live = 0;      // `live` as last given to stats::note_live
    uint64_t freed_unnoted = 0;      // bytes freed since then (heap.cc: note_freed)
    int64_t small_live = 0;          // small blocks' part of the last live_bytes(): what
                                     // large-block operations add `live` to (no class sum)
    uint64_t prof_epoch = 0;         // profile.cc: the set_rate this heap's countdown follows
    uint64_t prof_rng = 0;           // its sampling intervals' generator state

    // Shared with other threads.
    alignas(ARENA_CACHE_LINE) std::atomic<Slab*> remote{nullptr}; // slabs with remote frees
    std::atomic<Suspect*> suspects{nullptr}; // frees of blocks of its slabs left to it to
                                             // confirm (confirm.cc); pushed by any thread
    std::atomic<HeapState> state{HeapState::Active};
    Heap* next_all = nullptr; // registry of every heap ever made (never unlinked)
    uint32_t id = 0;          // creation order, 1-based

    constexpr Heap() = default;
    /// A heap whose classes all point at `none`, a slab without free slots.
    constexpr explicit Heap(Slab* none) {
        for (Slab*& s : current)
            s = none;
    }
    Heap(const Heap&) = delete;
    Heap& operator=(const Heap&) = delete;
};

// ---- Region ------------------------------------------------------------------------------------

struct Region {
    RunMap runs;                               // page bitmaps (guarded by the pages lock)
    std::atomic<uintptr_t>* pagemap = nullptr; // one entry per page (see above)
    uintptr_t base = 0;
    size_t size = 0;      // bytes; a lowered RLIMIT_AS cuts it, never below
                          // the used extent (pages.cc: fit_limit)
    void* meta = nullptr; // mapping holding the bitmaps and the pagemap
    size_t meta_size = 0;

    bool contains(uintptr_t a) const { return a - base < size; }
    size_t page_of(uintptr_t a) const { return (a - base) >> kPageShift; }
    uintptr_t page_address(size_t page) const { return base + (uintptr_t{page} << kPageShift); }
};

/// What the free fast path needs of region 0, in one line (read-only after initialisation, but
/// for `size`, which a lowered RLIMIT_AS may shrink: pages.cc, cut_region).
struct alignas(ARENA_CACHE_LINE) FastRegion {
    uintptr_t base = 0;
    size_t size = 0; // 0 until initialised: every pointer then takes the slow path
    std::atomic<uintptr_t>* pagemap = nullptr;
    Region* region = nullptr;
};

} // namespace arena
