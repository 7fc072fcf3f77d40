// SPDX-License-Identifier: MIT
// Regions and the page allocator: the only code that touches region bitmaps. Thread-safe
// (one lock; every caller is on a slow path: slab refill, large blocks, trim).
//
// Region 0 is reserved at initialisation. When no region has a fitting free run, another region
// at least as large as all existing ones is reserved, so a process whose first reservation is
// exhausted (or was cut down by the kernel) keeps getting memory. Under a finite RLIMIT_AS or
// RLIMIT_DATA, what is reserved ahead of need is bounded by the room the limit leaves
// (budget.h), and a limit lowered later first gets the never-used tails back (fit_limit).
//
// Free pages stay resident ("dirty") for ARENA_PURGE_DELAY_MS and are then returned to the
// kernel with madvise(MADV_DONTNEED) by a purge tick: run by the next page operation after the
// delay (every eighth looks at the clock), or, when the process makes none, by the background
// purger (purger.cc), which page operations wake when they leave dirty pages. malloc_trim
// returns all of them at once.
#pragma once

#include "macros.h"
#include "types.h"

#include <cstddef>
#include <cstdint>

namespace arena {

/// Region 0 as the free fast path sees it.
extern constinit ARENA_HIDDEN FastRegion g_region0;

namespace pages {

struct Run {
    Region* region;
    size_t first; // first page index in the region
    size_t npages;
    uintptr_t addr;
    bool clean; // every page reads as zero (never written, or purged)
};

/// Reserves region 0. False when not even kMinRegion can be reserved.
bool init();

/// A run of npages pages aligned to align_pages pages (a power of two). False when out of
/// address space.
bool alloc(size_t npages, size_t align_pages, Run* out);

/// Returns a run to the free pages.
void free(Region* r, size_t first, size_t npages);

// ---- The large-block cache -------------------------------------------------------------------
// A large block freed and then requested again at about its size (a buffer per request, the
// seed's 256 KiB blocks) costs two page operations, each a lock and bitmap updates: several
// times what the allocation itself does. One freed block of at most kCacheMaxPages pages is kept
// whole instead, its pages still used in the region, its pagemap entry tagged kCachedTag (a
// second free of it is a double free), and the next large request it fits takes it without the
// lock. It is kept only while the background purger is awake, and every purge tick (and trim)
// gives it back to the free pages: so it is returned to the kernel as late as any other freed
// page, between one and two delays after its free.

/// Largest block the cache keeps (1 MiB): more would hold memory a smaller request cannot use.
inline constexpr size_t kCacheMaxPages = 256;

/// Offers the large block at page `first` of r, whose pagemap entry the caller has tagged
/// kCachedTag, to the cache. False when it is not kept (no purger awake, too large, or not the
/// size of the last large request): the caller clears the entry and frees the pages itself. A
/// block the cache held before is freed.
bool cache_put(Region* r, size_t first, size_t npages);

/// For every large request of npages pages (unaligned): takes the cached block when it has
/// exactly npages pages, with its pagemap entry still tagged (the caller sets it). False when
/// it does not fit.
bool cache_take(size_t npages, Run* out);

/// Extends the run [first, first+old_np) in place to new_np pages if the pages after it are
/// free. `clean` tells whether the added pages read as zero.
bool try_grow(Region* r, size_t first, size_t old_np, size_t new_np, bool* clean);

/// Gives back the tail of a run, keeping new_np pages.
void shrink(Region* r, size_t first, size_t old_np, size_t new_np);

/// The region holding address a, or null.
Region* region_of(uintptr_t a);

/// RLIMIT_AS or RLIMIT_DATA (`resource`) of this process is about to become `soft`
/// (setrlimit and prlimit, override_limits.cc): gives back the never-used tails of the regions
/// and of their metadata until what stays reserved fits the share of the room that limit leaves
/// (budget.h), keeping each region's used extent and region 0 longest.
void fit_limit(int resource, uint64_t soft);

/// Returns every free dirty page to the kernel now. Returns the bytes released.
size_t trim();

/// One step of the background purger (purger.cc, on its own process: no TLS, raw system calls).
/// When a tick is due, or under way, takes one batch of old dirty runs (busy), returns them to
/// the kernel without the lock and frees them again, clean. Returns 0 when it should be called
/// again at once (the tick goes on), the milliseconds until the next tick is due, or -1 when
/// no page is dirty; `*seq` is then the wake word's value to sleep on (purger::idle_locked).
/// The pages lock is taken as `lock_id` (lock_ids::take: the purger has no TLS to read one).
int64_t background_step(uint64_t now_ms, uint32_t* seq, uint32_t lock_id);

/// In a fork child (single-threaded, before it returns from fork): a background batch that was
/// in flight in the parent is finished here, so its runs do not stay busy for ever.
void adopt_busy_after_fork();

struct Totals {
    size_t reserved; // bytes of address space in all regions
    size_t used;     // bytes of pages in slabs and large blocks
    size_t dirty;    // bytes of free pages not yet returned to the kernel (with those
                     // the background purger is returning right now)
    uint64_t purged; // bytes returned to the kernel so far
    uint64_t purges; // madvise calls that returned memory
    unsigned regions;
};
Totals totals();

/// Bytes of region memory resident in RAM (mincore over the part of each region ever used).
size_t resident_bytes();

/// In a fork child (fork.cc): releases the lock if a thread the child does not have held it, and
/// repairs the region maps it may have left half updated. True when the forking thread holds
/// the lock (a signal handler forked inside a critical section).
bool fork_child();

} // namespace pages
} // namespace arena
