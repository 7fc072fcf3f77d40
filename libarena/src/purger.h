// SPDX-License-Identifier: MIT
// The background purger: returns free pages to the kernel on time when the process has gone
// quiet (purger.cc explains the design). pages.cc asks for it when pages become dirty; init.cc
// and exec.cc tell it about the process's life cycle.
#pragma once

#include "macros.h"

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace arena::purger {

/// At initialisation: this process owns the purger it may start later.
void init();

/// Called with the pages lock held after free pages became dirty and a purge delay > 0 is set;
/// `dirty_bytes()` tells how many bytes of free pages wait for a purge (asked only while there
/// is no purger). True when the caller must call
/// poke() once it has dropped the lock: there is no purger yet and at least kStartBytes wait,
/// or it sleeps with nothing to do, or it has ended.
bool want_poke_locked(size_t (*dirty_bytes)());

/// The purger is started once this much free memory waits for a purge: a short-lived program
/// that frees a few pages (most commands in a shell pipeline) does not pay for a clone, and a
/// process that goes quiet keeps less than this resident for it.
inline constexpr size_t kStartBytes = size_t{1} << 20;

/// Starts the purger, or wakes it. Never called with the pages lock held.
void poke();

/// True while a purger runs: the in-band tick then leaves it the madvise (pages.cc).
bool running();

/// With the pages lock held: the purger sleeps with nothing to do (idle_locked).
bool sleeping_locked();

/// Without a lock: a purger runs and is not asleep without a timeout, so it makes the next tick
/// (pages.cc, "The large-block cache": the tick empties the cache). Sequentially consistent
/// with idle_locked, so that a thread caching a block and a purger going to sleep see each
/// other's write.
bool awake();

/// With the pages lock held, after idle_locked: the purger does not sleep after all.
void not_idle_locked();

/// With the pages lock held: there is no purger, and this process has not given up on one
/// (poke may start it).
bool startable_locked();

/// After a remote free put a slab on its owner's remote queue (heap.cc, publish_remote): the
/// owner may never collect it, so the purger looks at such slabs (heap.cc, "Pages of remote
/// frees"). Wakes a sleeping purger, or starts one after kStartPushes of them. One relaxed
/// load while the purger is awake (the flag is set only while it sleeps, or before it exists).
extern ARENA_HIDDEN std::atomic<uint32_t> g_remote_listen;
void note_remote_push_slow();
inline void note_remote_push() {
    if (g_remote_listen.load(std::memory_order_relaxed) != 0)
        note_remote_push_slow();
}
inline constexpr uint32_t kStartPushes = 64;

/// Called by the purger before it looks at the remote queues: pushes from now on are noted
/// (and the first wakes it), so that none made during or after the look is missed.
void listen_remote();

/// Called by the purger (pages lock held): whether a remote push was noted since the last call.
bool take_remote_note();

/// Called by the purger with the pages lock held when nothing is dirty: it will sleep until
/// poked. Returns the wake word's value to sleep on.
uint32_t idle_locked();

/// Before the process image is replaced (the exec family, exec.cc): stops and reaps the purger,
/// so that no process outlives the image it served, and starts no other one until
/// exec_failed() is called.
void before_exec();
void exec_failed();

/// In a fork child: it has no purger (only the forking thread was copied); one is started
/// when needed. Runs after the pages lock was made usable in the child.
void fork_child();

} // namespace arena::purger
