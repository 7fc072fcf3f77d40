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
// kernel with madvise(MADV_DONTNEED) within the next eight page operations; malloc_trim returns
// all of them.
#pragma once

#include "types.h"

#include <cstddef>
#include <cstdint>

namespace arena {

/// Region 0 as the free fast path sees it.
extern constinit FastRegion g_region0;

namespace pages {

struct Run {
    Region* region;
    size_t first;   // first page index in the region
    size_t npages;
    uintptr_t addr;
    bool clean;     // every page reads as zero (never written, or purged)
};

/// Reserves region 0. False when not even kMinRegion can be reserved.
bool init();

/// A run of npages pages aligned to align_pages pages (a power of two). False when out of
/// address space.
bool alloc(size_t npages, size_t align_pages, Run* out);

/// Returns a run to the free pages.
void free(Region* r, size_t first, size_t npages);

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

struct Totals {
    size_t reserved;        // bytes of address space in all regions
    size_t used;            // bytes of pages in slabs and large blocks
    size_t dirty;           // bytes of free pages not yet returned to the kernel
    uint64_t purged;        // bytes returned to the kernel so far
    uint64_t purges;        // madvise calls that returned memory
    unsigned regions;
};
Totals totals();

/// Bytes of region memory resident in RAM (mincore over the part of each region ever used).
size_t resident_bytes();

void fork_prepare();
void fork_parent();
void fork_child();

} // namespace pages
} // namespace arena
