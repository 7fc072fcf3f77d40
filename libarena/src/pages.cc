// SPDX-License-Identifier: MIT
#include "pages.h"

#include "heap.h"
#include "lock.h"
#include "options.h"
#include "os.h"
#include "purger.h"

namespace arena {

constinit FastRegion g_region0;

namespace pages {
namespace {

constinit Mutex g_lock;
constinit Region g_regions[kMaxRegions];
constinit std::atomic<unsigned> g_nregions{0};
constinit uint64_t g_last_tick = 0;     // time of the last purge tick (ms)
constinit unsigned g_tick_polls = 0;    // maybe_tick calls
constinit uint64_t g_purged = 0;        // bytes purged in total
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

struct Batch {
    Region* region = nullptr;
    RunMap::Span spans[kBatchSpans] = {};
    size_t count = 0;                  // runs taken (A)
    std::atomic<size_t> done{0};       // runs given back (C)
    std::atomic<bool> live{false};     // between the end of A and the end of C
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

/// Reserves a region of at least min_bytes (and at least `want`, halving towards min_bytes
/// while the kernel refuses). Called with the lock held.
Region* create_region(size_t want, size_t min_bytes) {
    const unsigned n = g_nregions.load(std::memory_order_relaxed);
    if (n == kMaxRegions)
        return nullptr;
    min_bytes = round_up(min_bytes < kMinRegion ? kMinRegion : min_bytes, kMinRegion);
    size_t size = round_up(want < min_bytes ? min_bytes : want, kMinRegion);
    void* base = nullptr;
    for (;;) {
        base = os::reserve(size);
        if (base != nullptr)
            break;
        if (size / 2 < min_bytes)
            return nullptr;
        size = round_up(size / 2, kMinRegion);
    }
    const size_t npages = size >> kPageShift;
    const size_t bitmap_bytes = round_up(RunMap::metadata_bytes(npages), ARENA_CACHE_LINE);
    const size_t meta_size = round_up(bitmap_bytes + npages * sizeof(uintptr_t), kPageSize);
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
    const uint64_t t = now - delay + delay / 4;
    if (t > g_last_tick && !g_tick_open)
        g_last_tick = t;
}

bool claim_in(Region& r, size_t npages, size_t align_pages, Run* out) {
    const size_t first = r.runs.find(npages, align_pages);
    if (first == bits::npos)
        return false;
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
    return create_region(static_cast<size_t>(option(Opt::RESERVE)), kMinRegion) != nullptr;
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
    Region* r = create_region(total, need);
    return r != nullptr && claim_in(*r, npages, align_pages, out);
}

void free(Region* r, size_t first, size_t npages) {
    bool poke = false;
    {
        LockGuard guard(g_lock);
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
        poke = delay > 0 &&
               (g_start_wanted ||
                purger::want_poke_locked([] { return dirty_pages_locked() << kPageShift; }));
        g_start_wanted = false;
        if (poke)
            settle_locked(static_cast<uint64_t>(delay));
    }
    if (poke)
        purger::poke();
}

bool try_grow(Region* r, size_t first, size_t old_np, size_t new_np, bool* clean) {
    LockGuard guard(g_lock);
    if (!r->runs.range_free(first + old_np, new_np - old_np))
        return false;
    *clean = r->runs.claim(first + old_np, new_np - old_np);
    return true;
}

void shrink(Region* r, size_t first, size_t old_np, size_t new_np) {
    free(r, first + new_np, old_np - new_np);
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
        t.dirty += (g_regions[i].runs.dirty_units() + g_regions[i].runs.busy_units())
                   << kPageShift;
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
    // Regions are never unmapped, so mincore needs no lock.
    const size_t ps = os::page_size();
    size_t total = 0;
    for (unsigned i = 0; i < n; ++i)
        total += os::resident_pages(reinterpret_cast<void*>(base[i]), (bytes[i] + ps - 1) / ps) * ps;
    return total;
}

int64_t background_step(uint64_t now, uint32_t* seq) {
    bool remote = false;
    {
        LockGuard guard(g_lock);
        if (!g_tick_open) {
            const int64_t delay = option(Opt::PURGE_DELAY_MS);
            g_remote_pending = purger::take_remote_note() || g_remote_pending;
            if (delay <= 0 || (dirty_pages_locked() == 0 && !g_remote_pending)) {
                *seq = purger::idle_locked();
                g_after_idle = true;
                return -1;
            }
            if (g_after_idle) { // the first tick after a start or an idle spell: settle_locked
                g_after_idle = false;
                const uint64_t d = static_cast<uint64_t>(delay);
                if (now >= d && now - d + d / 4 > g_last_tick)
                    g_last_tick = now - d + d / 4;
            }
            if (now - g_last_tick < static_cast<uint64_t>(delay))
                return static_cast<int64_t>(static_cast<uint64_t>(delay) - (now - g_last_tick));
            g_last_tick = now;
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
        LockGuard guard(g_lock);
        g_remote_pending = pending;
        if (bytes != 0) {
            g_purged += bytes;
            ++g_purges;
        }
        return 0;
    }
    {
        LockGuard guard(g_lock);
        // A: the next batch from the scan position, or the end of the tick.
        const unsigned n = g_nregions.load(std::memory_order_relaxed);
        size_t got = 0;
        while (g_scan_region < n) {
            Region& r = g_regions[g_scan_region];
            g_batch.region = &r;
            g_batch.done.store(0, std::memory_order_relaxed);
            g_scan_page = r.runs.take_old(g_scan_page, g_batch.spans, kBatchSpans, kBatchPages,
                                          &got);
            if (g_scan_page >= r.runs.top()) {
                ++g_scan_region;
                g_scan_page = 0;
            }
            if (got != 0)
                break;
        }
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
    LockGuard guard(g_lock);
    give_back_batch(purged);
    if (bytes != 0) {
        g_purged += bytes;
        ++g_purges;
    }
    return 0;
}

void adopt_busy_after_fork() {
    if (!g_batch.live.load(std::memory_order_relaxed) || !g_lock.try_lock())
        return; // nothing in flight; or this thread holds the lock (a fork from a signal
                // handler that interrupted a page operation): the runs stay busy, a leak
    g_tick_open = false;
    bool purged[kBatchSpans];
    g_purged += purge_batch(purged); // this child's copies of the pages
    give_back_batch(purged);
    g_lock.unlock();
}

void fork_prepare() {
    g_lock.lock();
}

void fork_parent() {
    g_lock.unlock();
}

void fork_child() {
    g_lock.reset_after_fork();
}

} // namespace pages
} // namespace arena
