// SPDX-License-Identifier: MIT
// fork() in any state: from any thread while others allocate, hold stdio locks or wait in the
// allocator, and from a signal handler that interrupted the allocator. The child's allocator
// works; the parent never notices.
//
// ---- No lock across fork ------------------------------------------------------------------------
// libarena registers no prepare and no parent handler: fork takes no allocator lock. A lock
// taken in a prepare handler is held while glibc's fork takes its own (the stream list lock,
// and through fflush(NULL) every FILE's): a thread inside getdelim holds its FILE's lock and
// waits in realloc for ours, and the four of us wait forever (glibc's tst-malloc-fork-deadlock).
// And a fork from a signal handler would wait for a lock held by the very code the handler
// interrupted (tst-mallocfork2). So the parent pays nothing at fork, and all the work is the
// child's, in its handler (fork_child below), which takes no lock either.
//
// ---- What the child finds ---------------------------------------------------------------------
// Memory as it was at the fork, with one thread: the one that forked. Every other thread stopped
// somewhere, perhaps inside a critical section; the child sees its stores in program order up
// to some instruction and none after (the kernel copies the address space under the mmap lock,
// which a store faulting on a page being copied waits for; x86-64 stores become visible in
// program order, and the orders that matter below are kept by release fences, free on x86-64,
// on weaker CPUs too). Locks record their holder (lock.h), so the child handler can tell:
//   - a lock held by a thread the child does not have (or by the background purger, a process
//     fork never copies, which locks with an id of its own: purger.cc): released. What it guards is
//     as that thread left it, so every critical section is written so that any prefix of its stores
//     is safe, at worst losing memory to the child, never handing a block out twice, never breaking
//     a list, never leaving a counter that misleads later code:
//       pages (pages.cc, bitmap.cc): a unit is marked used before its run is returned, free
//         only after its owner gave it up, used before clean and dirty before free; the
//         counters, hints, recent run and top are rebuilt from the bitmaps (RunMap::repair); a
//         region is counted (g_nregions) only once it is set up. Runs the purger had taken
//         (busy: used) are purged and freed again by the child (purger::fork_child).
//       descriptors and metadata (meta.cc): a new chunk is installed as empty before the cursor
//         moves into it, and a descriptor is linked before it becomes the list head.
//       heap registry (heap.cc): a heap is linked last, and adoption is one compare-exchange.
//       gauges (stats.cc): the seqlock word, odd, is made even.
//       instances of the native API (native.cc) are not known to the handler: a lock whose
//         holder is gone is taken over by the next thread that wants it (Mutex::lock), which
//         repairs the instance the same way.
//   - a lock held by the forking thread itself: left alone. The fork came from a signal handler
//     that interrupted that critical section, which finishes and unlocks when the handler
//     returns (in the child too). The child handler must then take no lock at all (it would
//     wait for itself): the stats page's file and the gauges are left to the next slow path.
// The heaps of other threads are marked Lost and never used again (they may be in the middle of
// anything, lock-free: a free cache half popped, a batch half published); their blocks are lost
// to the child, as with any allocator. What they did to shared state that survives is atomic
// step by step: a remote free into a slab of the forking thread's heap either set its bit or
// did not (the slot stays allocated), and a slab marked queued but not yet pushed is never
// collected again (its later remote frees are lost). Abandoned heaps are quiescent (only
// remote frees push onto them) and stay adoptable; one being drained or adopted by a lost
// thread is Lost.
//
// ---- The forking thread's own heap --------------------------------------------------------------
// Not touched by the handler, in the parent or the child: a signal handler may have interrupted
// its fast path anywhere (a free cache pop between its two stores, a remote batch being
// published), and only the interrupted code knows how far it got. It finishes when the handler
// returns. Its remote batches are therefore not published at fork: they stay in the heap on
// both sides and are published on each side's next slow path, as without a fork (publishing
// them here could publish a batch twice, a false double free). The handler itself must not
// allocate in the child before it returns, as for any async-signal-unsafe function.
//
// ---- The stats page ----------------------------------------------------------------------------
// The child gets a page of its own at the same address as the parent's (stats.cc, "After fork"),
// before anything else can count into the parent's.
#include "fork.h"

#include "heap.h"
#include "lock.h"
#include "meta.h"
#include "pages.h"
#include "profile.h"
#include "purger.h"
#include "stats.h"

#include <pthread.h>

namespace arena {
namespace {

void fork_child() {
    lock_ids::note_fork_child(); // first: the lock checks below use it
    bool interrupted = pages::fork_child();
    interrupted = meta::fork_child() || interrupted;
    interrupted = heap::fork_child() || interrupted;
    purger::fork_child(); // after pages: it may finish a purge batch that was in flight
    stats::fork_child(interrupted);
    prof::fork_child(); // after stats: the child's region goes in its page file
}

} // namespace

void install_fork_handler() {
    pthread_atfork(nullptr, nullptr, fork_child);
}

} // namespace arena
