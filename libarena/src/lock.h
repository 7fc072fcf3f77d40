// SPDX-License-Identifier: MIT
// A futex mutex that never allocates and is constant-initialised (usable before any constructor
// runs, and from inside malloc). Its word holds the owner's lock id (below) while it is held,
// with kWaiters set when a thread may be sleeping on it: 0 is unlocked. A short spin covers the
// common case of a lock held for a few hundred nanoseconds (bitmap updates) before sleeping in
// the kernel.
//
// Owners are recorded so that a fork child can tell the locks of threads it does not have from
// those of the thread that forked (fork.cc): the first are released (what they guard is as the
// holder left it, between two instructions of its critical section: each critical section is
// written so that any such state is safe, see fork.cc), the second are left alone (the fork came
// from a signal handler that interrupted the critical section, which finishes and unlocks when
// the handler returns).
//
// A lock id is a number taken from a process-wide counter by a thread's first lock, kept in an
// initial-exec thread-local (no allocation, no __tls_get_addr). Not gettid(): a fork child's
// thread keeps its parent's TLS, so its cached tid would be the parent thread's, which another
// thread of the child could be given later. Ids are never reused, so after a fork every thread
// made in the child has an id above every id of the parent (lock.cc).
#pragma once

#include "macros.h"
#include "os.h"

#include <atomic>
#include <cstdint>

namespace arena {

extern ARENA_TLS ARENA_HIDDEN uint32_t t_lock_id; // 0 until the thread's first lock

namespace lock_ids {
/// Set in a fork child (note_fork_child): every id below `first`, but `survivor`'s, is of a
/// thread that did not survive the fork. Both 0 in a process that never forked.
extern constinit ARENA_HIDDEN std::atomic<uint32_t> g_first;
extern constinit ARENA_HIDDEN std::atomic<uint32_t> g_survivor;

/// The next id from the counter (1 .. 2^31-1), made the calling thread's.
ARENA_COLD uint32_t assign();

/// The next id from the counter, without touching thread-local storage: for the background
/// purger (purger.cc), which runs on a thread pointer of its own and never reads TLS. It takes
/// locks with lock_as() and this id; a fork child, which never has the purger, then releases
/// a lock the purger held like one of any thread it does not have.
uint32_t take();

/// The calling thread's lock id.
ARENA_FAST_PATH uint32_t self() {
    const uint32_t id = t_lock_id;
    return ARENA_LIKELY(id != 0) ? id : assign();
}

/// True when `id` belongs to a thread that did not survive the last fork into this process.
inline bool lost(uint32_t id) {
    return id < g_first.load(std::memory_order_relaxed) &&
           id != g_survivor.load(std::memory_order_relaxed);
}

/// In a fork child, before anything else of the allocator runs there: the calling thread is the
/// only one. Async-signal-safe, idempotent.
void note_fork_child();
} // namespace lock_ids

class Mutex {
public:
    static constexpr uint32_t kWaiters = uint32_t{1} << 31;

    constexpr Mutex() = default;
    Mutex(const Mutex&) = delete;
    Mutex& operator=(const Mutex&) = delete;

    /// Takes the lock. True when it was taken over from a thread that did not survive a fork:
    /// what it guards is as that thread left it (a fork child's own locks are released by its
    /// fork handler before this can happen; instances of the native API rely on it).
    bool lock() { return lock_as(lock_ids::self()); }

    /// lock() as the holder `me` (an id from lock_ids::take()).
    bool lock_as(uint32_t me) {
        uint32_t c = 0;
        if (ARENA_LIKELY(word_.compare_exchange_strong(c, me, std::memory_order_acquire,
                                                       std::memory_order_relaxed)))
            return false;
        return lock_slow(me);
    }

    bool try_lock() {
        uint32_t c = 0;
        return word_.compare_exchange_strong(c, lock_ids::self(), std::memory_order_acquire,
                                             std::memory_order_relaxed);
    }

    void unlock() {
        if ((word_.exchange(0, std::memory_order_release) & kWaiters) != 0)
            os::futex_wake(&word_, 1);
    }

    /// True while the calling thread holds it.
    bool held_by_self() const {
        const uint32_t c = word_.load(std::memory_order_relaxed);
        return c != 0 && (c & ~kWaiters) == lock_ids::self();
    }

    /// In a fork child (after lock_ids::note_fork_child): releases the lock when a thread that
    /// is not in the child holds it. True when it did.
    bool release_if_orphaned() {
        const uint32_t c = word_.load(std::memory_order_relaxed);
        if (c == 0 || !lock_ids::lost(c & ~kWaiters))
            return false;
        word_.store(0, std::memory_order_relaxed);
        return true;
    }

private:
    ARENA_SLOW_PATH bool lock_slow(uint32_t me) {
        for (int i = 0; i < 100; ++i) {
            uint32_t c = word_.load(std::memory_order_relaxed);
            if (c == 0 && word_.compare_exchange_weak(c, me, std::memory_order_acquire,
                                                      std::memory_order_relaxed))
                return false;
            ARENA_CPU_RELAX();
        }
        for (;;) {
            uint32_t c = word_.load(std::memory_order_relaxed);
            if (c == 0) {
                // Others may be asleep: keep kWaiters, so that unlock wakes the next one.
                if (word_.compare_exchange_weak(c, me | kWaiters, std::memory_order_acquire,
                                                std::memory_order_relaxed))
                    return false;
                continue;
            }
            if (ARENA_UNLIKELY(lock_ids::lost(c & ~kWaiters))) {
                if (word_.compare_exchange_strong(c, me | (c & kWaiters), std::memory_order_acquire,
                                                  std::memory_order_relaxed))
                    return true;
                continue;
            }
            if ((c & kWaiters) == 0 &&
                !word_.compare_exchange_weak(c, c | kWaiters, std::memory_order_relaxed,
                                             std::memory_order_relaxed))
                continue;
            os::futex_wait(&word_, c | kWaiters);
        }
    }

    std::atomic<uint32_t> word_{0};
};

/// Scoped lock.
class LockGuard {
public:
    explicit LockGuard(Mutex& m) : m_(m), taken_over_(m_.lock()) {}
    /// Held as `id` (Mutex::lock_as).
    LockGuard(Mutex& m, uint32_t id) : m_(m), taken_over_(m_.lock_as(id)) {}
    ~LockGuard() { m_.unlock(); }
    LockGuard(const LockGuard&) = delete;
    LockGuard& operator=(const LockGuard&) = delete;

    /// The lock was taken over from a thread that did not survive a fork (Mutex::lock).
    bool taken_over() const { return taken_over_; }

private:
    Mutex& m_;
    bool taken_over_;
};

} // namespace arena
