// SPDX-License-Identifier: MIT
// Heap profiling (issue 16; the region's ABI is include/arena/profile_page.h): sampled
// allocations with their call stacks, and the frees of those blocks matched against them, so
// that the profile holds what is still live by call site.
//
// Cost when off: each heap counts down the bytes it allocates (Heap::prof_left, heap.h:
// sample_check), one subtraction and a branch on the malloc fast path; off, the count starts so
// high that it never runs out. Frees cost nothing: the page where a live sampled block starts
// has kSampledTag in its pagemap entry (every page of the slab, once more than kSampledSlots of
// its blocks are live), which the free fast path does not accept, so only frees in such pages
// (and large frees while a large block is sampled) come here.
//
// Sampled path: draw the next interval (sampler.h), capture the stack (stack_capture.h) outside
// any lock, then under the profile lock add the sample to its stack's slot in the region and
// remember the block (address, slot, weight) in a private hash table, which the free of the block
// looks up to subtract exactly what was added. The profile lock is never held while calling
// anything that allocates or unwinds; a thread that re-enters (a signal handler's malloc while
// it samples) drops that sample (counted), and a free it makes of a sampled block is not matched
// (counted as unmatched; its record is retired when its address is sampled again).
//
// Turning on and off (ARENA_PROFILE at start, the page's control area at run time: set_rate):
// a new epoch, and every heap's countdown is reset; a heap that lost that store to its owner's
// own write notices the epoch on its next refill slow path (refresh).
#pragma once

#include "macros.h"
#include "stats.h"

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace arena {

struct Heap;
struct Slab;

namespace prof {

/// The countdown of a heap while profiling is off: more bytes than a process allocates.
inline constexpr int64_t kOff = int64_t{1} << 62;

/// At start-up, after the stats page exists: ARENA_PROFILE and ARENA_PROFILE_RATE.
void init();

/// The countdown of h ran out with the allocation p of n bytes on behalf of `api`: sample it
/// (or, when profiling is off, just reset the countdown). Returns p.
ARENA_SLOW_PATH void* sample(Heap* h, void* p, size_t n, Api api);

/// The free of a small block at a in slab s, whose pagemap entry has kSampledTag: matches it
/// against its sample. The caller then frees it as any other.
ARENA_SLOW_PATH void free_small(Slab* s, uintptr_t a);

/// Large blocks that are sampled and live; a large free calls free_large while any is.
extern ARENA_HIDDEN std::atomic<uint64_t> g_live_large;
void free_large(uintptr_t a);

/// Repairs a heap's countdown after set_rate (an alloc_refill slow path of its owner).
void refresh(Heap* h);

/// Serves a control request (stats.cc, poll_control) or ARENA_PROFILE: rate 0 turns sampling
/// off, 1 .. ARENA_PROFILE_MAX_RATE on with that mean interval.
void set_rate(uint64_t rate);

/// For the page's gauges (stats.cc, publish_global).
struct Totals {
    bool on;
    uint64_t rate, samples, sampled_bytes;
};
Totals totals();

/// In a fork child, after stats::fork_child: the region becomes the child's own (a private copy
/// now, its own page file's region on a later slow path).
void fork_child();

/// The region is in private memory and the page file it belongs in exists now (a fork child's,
/// or a page made after profiling started): attach_file moves it there. From poll_control.
bool attach_pending();
void attach_file();

/// At normal exit with ARENA_PROFILE_LEAKS=1: the sites of sampled blocks still live, on
/// stderr.
void report_leaks();

} // namespace prof
} // namespace arena
