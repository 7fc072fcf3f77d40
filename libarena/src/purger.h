// SPDX-License-Identifier: MIT
// The background purger: returns free pages to the kernel on time when the process has gone
// quiet (purger.cc explains the design). pages.cc asks for it when pages become dirty; init.cc
// and exec.cc tell it about the process's life cycle.
#pragma once

#include <cstddef>
#include <cstdint>

namespace arena::purger {

/// At initialisation: this process owns the purger it may start later.
void init();

/// Called with the pages lock held after free pages became dirty and a purge delay > 0 is set;
/// `dirty_bytes` are the free pages now waiting for a purge. True when the caller must call
/// poke() once it has dropped the lock: there is no purger yet and at least kStartBytes wait,
/// or it sleeps with nothing to do, or it has ended.
bool want_poke_locked(size_t dirty_bytes);

/// The purger is started once this much free memory waits for a purge: a short-lived program
/// that frees a few pages (most commands in a shell pipeline) does not pay for a clone, and a
/// process that goes quiet keeps less than this resident for it.
inline constexpr size_t kStartBytes = size_t{1} << 20;

/// Starts the purger, or wakes it. Never called with the pages lock held.
void poke();

/// True while a purger runs: the in-band tick then leaves it the madvise (pages.cc).
bool running();

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
