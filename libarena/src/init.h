// SPDX-License-Identifier: MIT
// The process life cycle (init.cc): initialisation on first use.
//
// Layers, bottom up (a file calls only into its own layer and those below):
//   os, options, report            system calls, ARENA_* settings, messages
//   bitmap, lock, meta, budget     building blocks: run bitmaps, locks, metadata memory
//   pages, purger                  regions, page runs and their purging
//   stats                          the stats page, a passive writer (heap::maintenance serves
//                                  its control requests)
//   heap, confirm                  thread heaps: the small-block paths
//   alloc                          arena::libc: large blocks and the malloc family's semantics
//   mallinfo, fork                 glibc's introspection calls; the fork child handler
//   init                           the life cycle: initialisation, the exit report
//   override*, exec                the exported symbols, thin forwarders
// Calls that still go up, into heap: the purge tick's pages of remote frees (pages.cc, and
// purger.cc after fork) and the heap counts on the stats page (stats.cc).
// One call goes up by design: the first allocation's slow path (heap.cc, a thread's first
// small block; alloc.cc, a large one) starts the life cycle through ensure_init below. It
// cannot be a hook registered at run time, since the first malloc of a process may come before
// any constructor (another library's); it is this one declaration, bound at link time.
#pragma once

namespace arena {

/// Initialises the library on first use: options, region 0, the heaps' keys, the stats page,
/// then (once ready, since they may allocate) the fork handler and the exit report. Returns at
/// once after the first time. False when the library cannot work (no address space); every
/// allocation then fails. Thread-safe: a second thread waits for the first.
bool ensure_init();

} // namespace arena
