// SPDX-License-Identifier: MIT
#include "pages.h"

#include "lock.h"
#include "options.h"
#include "os.h"

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

/// Runs a purge tick when the delay has passed, looking at the clock on every 8th page
/// operation only (a clock read costs as much as the rest of a page operation's bookkeeping).
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
    LockGuard guard(g_lock);
    r->runs.release(first, npages);
    if (option(Opt::PURGE_DELAY_MS) == 0) {
        const size_t got = r->runs.purge_run(first, npages);
        if (got != 0) {
            g_purged += got;
            ++g_purges;
        }
        return;
    }
    maybe_tick();
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
        t.dirty += g_regions[i].runs.dirty_units() << kPageShift;
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

bool fork_child() {
    // A thread the child does not have held the lock: the bitmaps are safe as it left them
    // (RunMap::repair), the counters and hints are made consistent again. A region it was
    // making is not counted in g_nregions yet (stored last): its reservation is lost.
    if (g_lock.release_if_orphaned()) {
        const unsigned n = g_nregions.load(std::memory_order_relaxed);
        for (unsigned i = 0; i < n; ++i)
            g_regions[i].runs.repair();
    }
    return g_lock.held_by_self();
}

} // namespace pages
} // namespace arena
