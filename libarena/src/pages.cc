// SPDX-License-Identifier: MIT
#include "pages.h"

#include "budget.h"
#include "check.h"
#include "heap.h"
#include "lock.h"
#include "options.h"
#include "os.h"
#include "purger.h"
#include "report.h"

#include <sys/resource.h>

namespace arena {

constinit FastRegion g_region0;

namespace pages {
namespace {

constinit Mutex g_lock;
constinit Region g_regions[kMaxRegions];
constinit std::atomic<unsigned> g_nregions{0};
constinit uint64_t g_last_tick = 0;  // time of the last purge tick (ms)
constinit unsigned g_tick_polls = 0; // maybe_tick calls
constinit uint64_t g_purged = 0;     // bytes purged in total
constinit uint64_t g_purges = 0;

// ---- The background tick (purger.cc) ----------------------------------------------------------
// The purger's tick is the in-band tick cut into batches, so that madvise runs without the lock:
//   A (locked)   take_old: up to kBatchSpans runs, about kBatchPages pages, of the pages dirty
//                for a whole tick become busy (used in the bitmap, not dirty), recorded in
//                g_batch, which is then marked live;
//   B (unlocked) madvise of each run;
//   C (locked)   give_back of each run, counted in g_batch.done as it goes; then not live.
// The tick starts (g_last_tick = now) with the first batch and ends, clearing the young bits,
// when the scan reaches the top of the last region: one tick per delay, whoever runs it (the
// in-band tick looks at the same g_last_tick). The batch bounds how many pages are out of
// reach at once: a program allocating while a gigabyte is purged finds the rest of the freed
// memory as it was.
// Fork: a child copies all of this as a thread left it at any instruction. During A it finds
// some runs busy and not in a live batch: a leak. After A, g_batch is complete and live, and
// runs from g_batch.done on are still busy (the one at g_batch.done maybe partly given back):
// adopt_busy_after_fork purges and frees them in the child, where nobody has allocated since
// the fork. After C the batch is not live.
constexpr size_t kBatchSpans = 64;
constexpr size_t kBatchPages = (32 * MiB) >> kPageShift;
/// A tick settled after an idle spell (settle_locked) comes this part of a delay from now.
constexpr uint64_t kSettleLeadParts = 4;

struct Batch {
    Region* region = nullptr;
    RunMap::Span spans[kBatchSpans] = {};
    size_t count = 0;              // runs taken (A)
    std::atomic<size_t> done{0};   // runs given back (C)
    std::atomic<bool> live{false}; // between the end of A and the end of C
};
constinit Batch g_batch;
constinit bool g_start_wanted = false;   // maybe_tick: the next free starts the purger
constinit bool g_after_idle = true;      // the purger's next tick is its first after idling
constinit bool g_tick_open = false;      // a background tick is under way: its scan position
constinit bool g_remote_due = false;     // its first step: the pages of remote frees (heap.cc)
constinit bool g_remote_pending = false; // slabs with remote frees changed at the last look
constinit unsigned g_scan_region = 0;
constinit size_t g_scan_page = 0;

size_t round_up(size_t v, size_t to) {
    return (v + to - 1) & ~(to - 1);
}

/// Bytes of metadata (bitmaps, then the pagemap, in one mapping) for a region of `size` bytes.
size_t meta_bytes(size_t size) {
    const size_t npages = size >> kPageShift;
    const size_t bitmap_bytes = round_up(RunMap::metadata_bytes(npages), ARENA_CACHE_LINE);
    return round_up(bitmap_bytes + npages * sizeof(uintptr_t), kPageSize);
}

/// The largest region (a multiple of kRegionGranule) that fits in `budget` bytes together with
/// its metadata; 0 when none does.
size_t region_within(size_t budget) {
    // The metadata is 1/512 of the region (pagemap) plus 3 bits a page (bitmaps) and rounding.
    size_t size = (budget / 513 * 512) & ~(kRegionGranule - 1);
    while (size != 0 && size + meta_bytes(size) > budget)
        size -= kRegionGranule;
    return size;
}

/// `want` bytes of new region, cut to the share of the room that a finite RLIMIT_AS or
/// RLIMIT_DATA leaves for reserving ahead of need (budget.h). Called with the lock held.
size_t within_limits(size_t want) {
    const budget::Limits lim = budget::limits();
    if (!lim.finite())
        return want;
    const size_t cap = region_within(budget::share(budget::room(lim)));
    return want < cap ? want : cap;
}

/// Reserves a region of at least min_bytes (and at least `want`, halving towards min_bytes
/// while the kernel refuses). Called with the lock held.
Region* create_region(size_t want, size_t min_bytes) {
    const unsigned n = g_nregions.load(std::memory_order_relaxed);
    if (n == kMaxRegions)
        return nullptr;
    min_bytes = round_up(min_bytes < kMinRegion ? kMinRegion : min_bytes, kRegionGranule);
    size_t size = round_up(want < min_bytes ? min_bytes : want, kRegionGranule);
    void* base = nullptr;
    for (;;) {
        base = os::reserve(size);
        if (base != nullptr)
            break;
        if (size / 2 < min_bytes)
            return nullptr;
        size = round_up(size / 2, kRegionGranule);
    }
    const size_t npages = size >> kPageShift;
    const size_t bitmap_bytes = round_up(RunMap::metadata_bytes(npages), ARENA_CACHE_LINE);
    const size_t meta_size = meta_bytes(size);
    void* meta = os::reserve(meta_size);
    if (meta == nullptr) {
        os::unreserve(base, size);
        return nullptr;
    }
    Region& r = g_regions[n];
    r.base = reinterpret_cast<uintptr_t>(base);
    r.size = size;
    r.meta = meta;
    r.meta_size = meta_size;
    r.runs.init(meta, npages, r.base, kPageShift);
    r.pagemap = reinterpret_cast<std::atomic<uintptr_t>*>(static_cast<char*>(meta) + bitmap_bytes);
    if (n == 0) {
        g_region0.base = r.base;
        g_region0.pagemap = r.pagemap;
        g_region0.region = &r;
        g_region0.size = size; // last: a nonzero size enables the fast path
    }
    g_nregions.store(n + 1, std::memory_order_release);
    return &r;
}

// ---- Giving address space back under a lowered limit -----------------------------------------
//
// A region's pages at and above RunMap::top() were never handed out, so nothing refers to them
// or to their pagemap entries and bitmap bits: that tail of the reservation and of its metadata
// can be unmapped. Other threads read a region's size without the lock (the free fast path reads
// g_region0.size; region_of reads Region::size): the size is stored first, and the tail unmapped
// after. A valid pointer lies below top() and so below either size. Only an invalid pointer into
// the cut tail, freed in the instant between a thread's size check and its pagemap load, could
// read an unmapped pagemap page; keeping that tail mapped would keep part of the address space
// the limit asks back (1/512 of the region: 128 MiB of a 64 GiB one).
//
// What a fork at each step leaves (the child may inherit this state as of any instruction; the
// fork handlers need not hold the lock): RunMap::truncate stores its bounds so that each partial
// state is a valid smaller map (bitmap.cc); then the sizes are stored, then the tails unmapped
// (a system call is a compiler barrier, and the signal fence keeps the stores before it). So a
// child sees the old map, a smaller map inside the old sizes (the tail still mapped: address
// space it holds for nothing), the new sizes with the tails still mapped, or the final state;
// never a unit handed out twice. A munmap cannot be half done at a fork (both hold the mm lock).

/// Bytes of region r that it must keep: its used extent, at least kMinRegion.
size_t extent(const Region& r) {
    const size_t e = round_up(r.runs.top() << kPageShift, kRegionGranule);
    return e < kMinRegion ? kMinRegion : e;
}

/// Address space the regions hold ahead of need (above their extents). Called with the lock held.
size_t ahead_bytes() {
    size_t total = 0;
    const unsigned n = g_nregions.load(std::memory_order_relaxed);
    for (unsigned i = 0; i < n; ++i)
        total += g_regions[i].size - extent(g_regions[i]);
    return total;
}

/// Cuts region r down to `size` bytes (a multiple of kRegionGranule, at least extent(r)), with
/// the bitmap and pagemap storage of the pages cut off. Called with the lock held.
void cut_region(Region& r, size_t size) {
    const size_t old = r.size;
    if (size >= old || size < extent(r))
        return;
    ARENA_ASSERT(size % kRegionGranule == 0 && (size >> kPageShift) >= r.runs.top());
    RunMap::Storage unused[3];
    r.runs.truncate(size >> kPageShift, unused);
    if (g_region0.region == &r)
        __atomic_store_n(&g_region0.size, size, __ATOMIC_RELEASE);
    __atomic_store_n(&r.size, size, __ATOMIC_RELEASE);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    os::unreserve(reinterpret_cast<void*>(r.base + size), old - size);
    for (const RunMap::Storage& s : unused)
        if (s.bytes != 0)
            os::unreserve(s.p, s.bytes);
    // The pagemap is last in the metadata mapping. Earlier cuts unmapped its pages above the
    // end they left (`old`); this one unmaps the whole pages between the new end and that one.
    const size_t ps = os::page_size();
    const uintptr_t map_end = reinterpret_cast<uintptr_t>(r.meta) + r.meta_size;
    const uintptr_t map = reinterpret_cast<uintptr_t>(r.pagemap);
    const uintptr_t keep = round_up(map + (size >> kPageShift) * sizeof(uintptr_t), ps);
    uintptr_t was = round_up(map + (old >> kPageShift) * sizeof(uintptr_t), ps);
    if (was > map_end)
        was = map_end;
    if (was > keep)
        os::unreserve(reinterpret_cast<void*>(keep), was - keep);
}

void drain_cache_locked(); // the large-block cache, below

/// Runs a purge tick when the delay has passed (and the background purger has not), looking at
/// the clock on every 8th page operation only (a clock read costs as much as the rest of a page
/// operation's bookkeeping).
/// Called with the lock held.
void maybe_tick() {
    const int64_t delay = option(Opt::PURGE_DELAY_MS);
    if (delay <= 0)
        return; // 0 purges in free(); -1 never purges on its own
    if ((++g_tick_polls & 7) != 0)
        return;
    const uint64_t now = os::now_ms();
    if (now - g_last_tick < static_cast<uint64_t>(delay))
        return;
    // A running purger makes this tick on time, and without madvise under the lock in a
    // program thread: this one runs only when that is late by a whole delay. A purger that
    // sleeps has nothing to do (the page operation that changes that wakes it).
    if (purger::running() &&
        (purger::sleeping_locked() || now - g_last_tick < 2 * static_cast<uint64_t>(delay)))
        return;
    // A process that lives past a delay and keeps freeing pages gets a purger now (the next
    // free starts it) rather than this tick: a tick made here would leave the purger's first
    // one a delay later with what was freed since (settle_locked). If no free comes before the
    // next look at the clock, the tick is made here after all.
    if (purger::startable_locked() && !g_start_wanted) {
        g_start_wanted = true;
        return;
    }
    g_last_tick = now;
    drain_cache_locked();
    const unsigned n = g_nregions.load(std::memory_order_relaxed);
    for (unsigned i = 0; i < n; ++i) {
        if (g_regions[i].runs.dirty_units() == 0)
            continue;
        const size_t got = g_regions[i].runs.purge(false);
        if (got != 0) {
            g_purged += got;
            ++g_purges;
        }
    }
}

/// Dirty pages in all regions, busy ones included. Called with the lock held.
size_t dirty_pages_locked() {
    size_t d = 0;
    const unsigned n = g_nregions.load(std::memory_order_relaxed);
    for (unsigned i = 0; i < n; ++i)
        d += g_regions[i].runs.dirty_units() + g_regions[i].runs.busy_units();
    return d;
}

/// Frees the runs of g_batch from g_batch.done on: clean where purged[i], else dirty and old.
/// Called with the lock held.
void give_back_batch(const bool* purged) {
    ARENA_ASSERT(g_batch.live.load(std::memory_order_relaxed) && g_batch.region != nullptr &&
                 g_batch.count <= kBatchSpans &&
                 g_batch.done.load(std::memory_order_relaxed) <= g_batch.count);
    RunMap& runs = g_batch.region->runs;
    for (size_t i = g_batch.done.load(std::memory_order_relaxed); i < g_batch.count; ++i) {
        const RunMap::Span sp = g_batch.spans[i];
        runs.give_back(sp.first, sp.n, purged[i]);
        std::atomic_signal_fence(std::memory_order_seq_cst);
        g_batch.done.store(i + 1, std::memory_order_relaxed);
    }
    std::atomic_signal_fence(std::memory_order_seq_cst);
    g_batch.live.store(false, std::memory_order_relaxed);
}

/// madvise of the runs of g_batch from g_batch.done on. Returns the bytes released; purged[i]
/// says whether run i was released whole (kernels with pages larger than ours round inward:
/// such a run stays dirty, as in purge_run).
size_t purge_batch(bool* purged) {
    size_t bytes = 0;
    const Region* r = g_batch.region;
    ARENA_ASSERT(g_batch.live.load(std::memory_order_relaxed) && g_batch.count <= kBatchSpans);
    for (size_t i = g_batch.done.load(std::memory_order_relaxed); i < g_batch.count; ++i) {
        const size_t len = g_batch.spans[i].n << kPageShift;
        const size_t got =
            os::purge(reinterpret_cast<void*>(r->page_address(g_batch.spans[i].first)), len);
        purged[i] = got == len;
        bytes += got;
    }
    return bytes;
}

/// The purger is woken (or started) because pages became dirty in a process that had none
/// waiting: the next tick comes a quarter of a delay from now, not at once. After an idle
/// spell every dirty page is young (freed since), so that tick returns nothing and only makes
/// them old; made at once, it would come in the middle of a burst of frees (a cache dropped,
/// a gigabyte freed block by block), and what the burst freed after it would wait two delays
/// instead of one and a quarter. Moving a tick later never purges anything sooner. Called
/// with the lock held.
void settle_locked(uint64_t delay) {
    const uint64_t now = os::now_ms();
    if (now < delay)
        return;
    const uint64_t t = now - delay + delay / kSettleLeadParts;
    if (t > g_last_tick && !g_tick_open)
        g_last_tick = t;
}

// ---- The large-block cache (pages.h) ----------------------------------------------------------

/// The cached block's address, 0 when empty. Exchanged, never written plainly: whoever takes a
/// nonzero value owns that block.
constinit std::atomic<uintptr_t> g_cached{0};
/// The page count of the last large request (cache_take): a block is kept only when it has that
/// many pages. Where sizes vary, a kept block would rarely be taken, and meanwhile its pages
/// could serve nothing else (bench powerlaw: +4% peak RSS when every block up to 1 MiB was kept).
constinit std::atomic<size_t> g_last_request{0};

/// A block taken from the cache, out of the cache's hands: its pagemap entry cleared. Returns
/// its pages, for the caller to give back.
Run uncache(uintptr_t a) {
    Region* r = region_of(a);
    ARENA_CHECK(r != nullptr);
    const size_t first = r->page_of(a);
    const uintptr_t e = r->pagemap[first].load(std::memory_order_relaxed);
    // Only a cached block is ever in the cache; anything else would free a live block.
    ARENA_CHECK((e & (kLargeTag | kCachedTag)) == (kLargeTag | kCachedTag));
    r->pagemap[first].store(0, std::memory_order_release);
    return Run{r, first, e >> kLargeShift, a, false};
}

/// Gives a block taken from the cache back to the free pages, as large_free does. Called with
/// the lock held.
void release_cached_locked(uintptr_t a) {
    const Run run = uncache(a);
    run.region->runs.release(run.first, run.npages);
}

/// Empties the cache into the free pages (purge ticks, trim). Called with the lock held.
void drain_cache_locked() {
    if (g_cached.load(std::memory_order_relaxed) == 0)
        return;
    if (const uintptr_t a = g_cached.exchange(0, std::memory_order_acq_rel))
        release_cached_locked(a);
}

/// A block taken from the cache that is not used after all: freed as large_free frees.
void free_cached(uintptr_t a) {
    const Run run = uncache(a);
    free(run.region, run.first, run.npages);
}

bool claim_in(Region& r, size_t npages, size_t align_pages, Run* out) {
    const size_t first = r.runs.find(npages, align_pages);
    if (first == bits::npos)
        return false;
    ARENA_ASSERT(first + npages <= r.runs.nunits() &&
                 ((first << kPageShift) + (npages << kPageShift)) <= r.size);
    out->region = &r;
    out->first = first;
    out->npages = npages;
    out->addr = r.page_address(first);
    out->clean = r.runs.claim(first, npages);
    return true;
}

} // namespace

bool init() {
    LockGuard guard(g_lock);
    if (g_nregions.load(std::memory_order_relaxed) != 0)
        return true;
    g_last_tick = os::now_ms();
    // Under a finite RLIMIT_AS (a process started under `ulimit -v`), region 0 is what the limit
    // leaves room for (budget.h), not ARENA_RESERVE halved until the kernel takes it: that would
    // take all but the last halving step of the room.
    return create_region(within_limits(static_cast<size_t>(option(Opt::RESERVE))), kMinRegion) !=
           nullptr;
}

bool alloc(size_t npages, size_t align_pages, Run* out) {
    LockGuard guard(g_lock);
    maybe_tick();
    const unsigned n = g_nregions.load(std::memory_order_relaxed);
    for (unsigned i = 0; i < n; ++i)
        if (claim_in(g_regions[i], npages, align_pages, out))
            return true;
    // Every region is full (or too fragmented): reserve one at least as large as all of them
    // together, so the number of regions stays logarithmic in the memory used.
    size_t total = 0;
    for (unsigned i = 0; i < n; ++i)
        total += g_regions[i].size;
    if (total < static_cast<size_t>(option(Opt::RESERVE)))
        total = static_cast<size_t>(option(Opt::RESERVE));
    const size_t need = (npages + align_pages) << kPageShift;
    if (need >> kPageShift != npages + align_pages)
        return false; // overflow: no such run can exist
    // Under a limit, what the limit leaves room for, but always what this allocation needs: the
    // kernel says whether that fits.
    Region* r = create_region(within_limits(total), need);
    return r != nullptr && claim_in(*r, npages, align_pages, out);
}

void free(Region* r, size_t first, size_t npages) {
    bool poke = false;
    {
        LockGuard guard(g_lock);
        ARENA_ASSERT(r != nullptr && first + npages <= r->runs.top());
        r->runs.release(first, npages);
        const int64_t delay = option(Opt::PURGE_DELAY_MS);
        if (delay == 0) {
            const size_t got = r->runs.purge_run(first, npages);
            if (got != 0) {
                g_purged += got;
                ++g_purges;
            }
            return;
        }
        maybe_tick();
        // Dirty pages now wait for a tick: the background purger makes sure one comes even if
        // this was the process's last page operation for a while.
        poke = delay > 0 && (g_start_wanted || purger::want_poke_locked([] {
                                 return dirty_pages_locked() << kPageShift;
                             }));
        g_start_wanted = false;
        if (poke)
            settle_locked(static_cast<uint64_t>(delay));
    }
    if (poke)
        purger::poke();
}

bool try_grow(Region* r, size_t first, size_t old_np, size_t new_np, bool* clean) {
    ARENA_ASSERT(new_np > old_np && old_np != 0);
    LockGuard guard(g_lock);
    if (!r->runs.range_free(first + old_np, new_np - old_np)) {
        // The pages after the block may be a freed block waiting in the large-block cache:
        // they are free pages to anyone else, so to a growing neighbour too.
        if (g_cached.load(std::memory_order_relaxed) == 0)
            return false;
        drain_cache_locked();
        if (!r->runs.range_free(first + old_np, new_np - old_np))
            return false;
    }
    *clean = r->runs.claim(first + old_np, new_np - old_np);
    return true;
}

void shrink(Region* r, size_t first, size_t old_np, size_t new_np) {
    ARENA_ASSERT(new_np != 0 && new_np < old_np);
    free(r, first + new_np, old_np - new_np);
}

bool cache_put(Region* r, size_t first, size_t npages) {
    if (npages > kCacheMaxPages || npages != g_last_request.load(std::memory_order_relaxed) ||
        !purger::awake())
        return false;
    const uintptr_t a = r->page_address(first);
    const uintptr_t old = g_cached.exchange(a, std::memory_order_seq_cst);
    // The purger may have gone to sleep meanwhile, without a tick to come: it looks at the
    // cache after it says so (background_step), and this looks at what it says after filling
    // the cache, so one of the two sees the other. Here the block goes to the free pages,
    // which wakes it.
    if (ARENA_UNLIKELY(!purger::awake()))
        if (const uintptr_t back = g_cached.exchange(0, std::memory_order_seq_cst))
            free_cached(back);
    if (old != 0)
        free_cached(old);
    return true;
}

bool cache_take(size_t npages, Run* out) {
    if (g_last_request.load(std::memory_order_relaxed) != npages)
        g_last_request.store(npages, std::memory_order_relaxed);
    uintptr_t a = g_cached.load(std::memory_order_relaxed);
    if (a == 0)
        return false;
    // Only an exact fit: a larger block would hold pages the request does not need (and a
    // growing buffer would keep taking the last one's place: bench realloc, +5% peak RSS).
    auto fits = [npages](uintptr_t e) {
        return (e & kCachedTag) != 0 && e >> kLargeShift == npages;
    };
    Region* r = region_of(a);
    if (r == nullptr || !fits(r->pagemap[r->page_of(a)].load(std::memory_order_acquire)))
        return false; // (a block cached since would be looked at by the next request)
    if (!g_cached.compare_exchange_strong(a, 0, std::memory_order_acq_rel,
                                          std::memory_order_relaxed))
        return false;
    // Owned now. The one read above may be of an earlier stay of the same block in the cache
    // (taken, shrunk by realloc, freed again in between): read again.
    const size_t first = r->page_of(a);
    const uintptr_t e = r->pagemap[first].load(std::memory_order_acquire);
    if (!fits(e)) {
        free_cached(a);
        return false;
    }
    *out = Run{r, first, e >> kLargeShift, a, false};
    return true;
}

Region* region_of(uintptr_t a) {
    const unsigned n = g_nregions.load(std::memory_order_acquire);
    for (unsigned i = 0; i < n; ++i)
        if (g_regions[i].contains(a))
            return &g_regions[i];
    return nullptr;
}

size_t trim() {
    LockGuard guard(g_lock);
    drain_cache_locked();
    size_t total = 0;
    const unsigned n = g_nregions.load(std::memory_order_relaxed);
    for (unsigned i = 0; i < n; ++i)
        total += g_regions[i].runs.purge(true);
    if (total != 0) {
        g_purged += total;
        ++g_purges;
    }
    g_last_tick = os::now_ms();
    return total;
}

Totals totals() {
    LockGuard guard(g_lock);
    Totals t{};
    const unsigned n = g_nregions.load(std::memory_order_relaxed);
    for (unsigned i = 0; i < n; ++i) {
        t.reserved += g_regions[i].size;
        t.used += g_regions[i].runs.used_units() << kPageShift;
        t.dirty += (g_regions[i].runs.dirty_units() + g_regions[i].runs.busy_units()) << kPageShift;
    }
    t.purged = g_purged;
    t.purges = g_purges;
    t.regions = n;
    return t;
}

size_t resident_bytes() {
    uintptr_t base[kMaxRegions];
    size_t bytes[kMaxRegions];
    unsigned n = 0;
    {
        LockGuard guard(g_lock);
        n = g_nregions.load(std::memory_order_relaxed);
        for (unsigned i = 0; i < n; ++i) {
            base[i] = g_regions[i].base;
            bytes[i] = g_regions[i].runs.top() << kPageShift;
        }
    }
    // Regions are never unmapped below their used extent (fit_limit cuts only above it), so
    // mincore needs no lock.
    const size_t ps = os::page_size();
    size_t total = 0;
    for (unsigned i = 0; i < n; ++i)
        total +=
            os::resident_pages(reinterpret_cast<void*>(base[i]), (bytes[i] + ps - 1) / ps) * ps;
    return total;
}

int64_t background_step(uint64_t now, uint32_t* seq, uint32_t lock_id) {
    bool remote = false;
    {
        LockGuard guard(g_lock, lock_id);
        if (!g_tick_open) {
            const int64_t delay = option(Opt::PURGE_DELAY_MS);
            g_remote_pending = purger::take_remote_note() || g_remote_pending;
            if (delay <= 0 || (dirty_pages_locked() == 0 && !g_remote_pending &&
                               g_cached.load(std::memory_order_relaxed) == 0)) {
                if (delay <= 0)
                    drain_cache_locked(); // purging was turned off: no tick comes for it
                *seq = purger::idle_locked();
                // A block cached meanwhile: see cache_put.
                if (delay > 0 && g_cached.load(std::memory_order_seq_cst) != 0) {
                    purger::not_idle_locked();
                    return 0;
                }
                g_after_idle = true;
                return -1;
            }
            if (g_after_idle) { // the first tick after a start or an idle spell: settle_locked
                g_after_idle = false;
                const uint64_t d = static_cast<uint64_t>(delay);
                if (now >= d && now - d + d / kSettleLeadParts > g_last_tick)
                    g_last_tick = now - d + d / kSettleLeadParts;
            }
            if (now - g_last_tick < static_cast<uint64_t>(delay))
                return static_cast<int64_t>(static_cast<uint64_t>(delay) - (now - g_last_tick));
            g_last_tick = now;
            drain_cache_locked();
            g_tick_open = true;
            g_remote_due = true;
            g_scan_region = 0;
            g_scan_page = 0;
        }
        if (g_remote_due) {
            g_remote_due = false;
            remote = true;
        }
    }
    if (remote) { // no lock needed: heap.cc's queues are lock-free
        purger::listen_remote();
        bool pending = false;
        const size_t bytes = heap::purge_remote_pages(&pending);
        LockGuard guard(g_lock, lock_id);
        g_remote_pending = pending;
        if (bytes != 0) {
            g_purged += bytes;
            ++g_purges;
        }
        return 0;
    }
    {
        LockGuard guard(g_lock, lock_id);
        // A: the next batch from the scan position, or the end of the tick.
        const unsigned n = g_nregions.load(std::memory_order_relaxed);
        size_t got = 0;
        while (g_scan_region < n) {
            Region& r = g_regions[g_scan_region];
            g_batch.region = &r;
            g_batch.done.store(0, std::memory_order_relaxed);
            g_scan_page =
                r.runs.take_old(g_scan_page, g_batch.spans, kBatchSpans, kBatchPages, &got);
            if (g_scan_page >= r.runs.top()) {
                ++g_scan_region;
                g_scan_page = 0;
            }
            if (got != 0)
                break;
        }
        ARENA_ASSERT(got <= kBatchSpans);
        if (got == 0) { // the scan is done: every page dirty now waits one more tick
            for (unsigned i = 0; i < n; ++i)
                g_regions[i].runs.end_tick();
            g_tick_open = false;
            return 0;
        }
        g_batch.count = got;
        std::atomic_signal_fence(std::memory_order_seq_cst);
        g_batch.live.store(true, std::memory_order_relaxed);
    }
    // B: without the lock. The runs are busy: nobody claims, grows into, trims or ticks them.
    bool purged[kBatchSpans];
    const size_t bytes = purge_batch(purged);
    // C
    LockGuard guard(g_lock, lock_id);
    give_back_batch(purged);
    if (bytes != 0) {
        g_purged += bytes;
        ++g_purges;
    }
    return 0;
}

void fit_limit(int resource, uint64_t soft) {
    budget::Limits lim = budget::limits();
    if (resource == RLIMIT_AS)
        lim.as = soft;
    else if (resource == RLIMIT_DATA)
        lim.data = soft;
    if (!lim.finite())
        return;
    LockGuard guard(g_lock);
    const size_t ahead = ahead_bytes();
    if (ahead == 0)
        return;
    // The share of the room the new limit leaves, were nothing held ahead of need (with the
    // pagemap of those pages, 8 bytes a page).
    const size_t allowed = budget::share(budget::room(lim, ahead + (ahead >> (kPageShift - 3))));
    if (ahead <= allowed)
        return;
    // The newest regions first, region 0 last: it is the one the free fast path knows, so it is
    // the one to keep large.
    size_t excess = ahead - allowed;
    const unsigned n = g_nregions.load(std::memory_order_relaxed);
    for (unsigned i = n; i-- > 0 && excess != 0;) {
        Region& r = g_regions[i];
        const size_t spare = r.size - extent(r);
        const size_t cut = excess < spare ? round_up(excess, kRegionGranule) : spare;
        cut_region(r, r.size - cut);
        excess = cut < excess ? excess - cut : 0;
    }
    if (option(Opt::VERBOSE) != 0) {
        Msg()
            .str("arena: ")
            .str(resource == RLIMIT_AS ? "RLIMIT_AS" : "RLIMIT_DATA")
            .str(" lowered to ")
            .bytes(soft)
            .str(": address space held ahead of need cut from ")
            .bytes(ahead)
            .str(" to ")
            .bytes(ahead_bytes())
            .nl()
            .emit();
    }
}

namespace {

/// In a fork child: purges the child's copies of the runs of a batch in flight and frees them
/// (g_batch.done on; the run at done may be partly given back already: give_back only sets and
/// clears bits, so doing it again leaves the same bits). The caller holds the lock, or the
/// thread that held it is gone; the counters are right when the batch was not being given
/// back at the fork, else RunMap::repair recounts them.
void finish_batch_in_child() {
    if (!g_batch.live.load(std::memory_order_relaxed))
        return;
    g_tick_open = false;
    bool purged[kBatchSpans];
    g_purged += purge_batch(purged);
    give_back_batch(purged);
}

} // namespace

void adopt_busy_after_fork() {
    if (!g_batch.live.load(std::memory_order_relaxed) || !g_lock.try_lock())
        return; // nothing in flight; or this thread holds the lock (a fork from a signal
                // handler that interrupted a page operation): the runs stay busy, a leak
    finish_batch_in_child();
    g_lock.unlock();
}

bool fork_child() {
    // A thread the child does not have held the lock, or the purger did (a batch of busy runs
    // half taken or half given back): the batch is finished on the bitmaps first, then the
    // bitmaps are safe as they were left (RunMap::repair) and the counters and hints are made
    // consistent again from them. A region being made is not counted in g_nregions yet
    // (stored last): its reservation is lost.
    if (g_lock.release_if_orphaned()) {
        finish_batch_in_child();
        const unsigned n = g_nregions.load(std::memory_order_relaxed);
        for (unsigned i = 0; i < n; ++i)
            g_regions[i].runs.repair(); // ARENA_ASSERT(check()) at its end
    }
    return g_lock.held_by_self();
}

} // namespace pages
} // namespace arena
