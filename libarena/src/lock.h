// SPDX-License-Identifier: MIT
// A futex mutex that never allocates and is constant-initialised (usable before any constructor
// runs, and from inside malloc). Three states after Drepper, "Futexes Are Tricky": 0 unlocked,
// 1 locked, 2 locked with waiters. A short spin covers the common case of a lock held for a few
// hundred nanoseconds (bitmap updates) before sleeping in the kernel.
#pragma once

#include "macros.h"
#include "os.h"

#include <atomic>
#include <cstdint>

namespace arena {

class Mutex {
public:
    constexpr Mutex() = default;
    Mutex(const Mutex&) = delete;
    Mutex& operator=(const Mutex&) = delete;

    void lock() {
        uint32_t c = 0;
        if (ARENA_LIKELY(state_.compare_exchange_strong(c, 1, std::memory_order_acquire,
                                                        std::memory_order_relaxed)))
            return;
        lock_slow();
    }

    bool try_lock() {
        uint32_t c = 0;
        return state_.compare_exchange_strong(c, 1, std::memory_order_acquire,
                                              std::memory_order_relaxed);
    }

    void unlock() {
        if (state_.exchange(0, std::memory_order_release) == 2)
            os::futex_wake(&state_, 1);
    }

    /// In a fork child: the only thread left is the one that locked it in the prepare handler.
    void reset_after_fork() { state_.store(0, std::memory_order_relaxed); }

private:
    ARENA_SLOW_PATH void lock_slow() {
        for (int i = 0; i < 100; ++i) {
            uint32_t c = 0;
            if (state_.load(std::memory_order_relaxed) == 0 &&
                state_.compare_exchange_weak(c, 1, std::memory_order_acquire,
                                             std::memory_order_relaxed))
                return;
            ARENA_CPU_RELAX();
        }
        while (state_.exchange(2, std::memory_order_acquire) != 0)
            os::futex_wait(&state_, 2);
    }

    std::atomic<uint32_t> state_{0};
};

/// Scoped lock.
class LockGuard {
public:
    explicit LockGuard(Mutex& m) : m_(m) { m_.lock(); }
    ~LockGuard() { m_.unlock(); }
    LockGuard(const LockGuard&) = delete;
    LockGuard& operator=(const LockGuard&) = delete;

private:
    Mutex& m_;
};

} // namespace arena
