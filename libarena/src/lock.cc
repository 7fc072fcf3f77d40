// SPDX-License-Identifier: MIT
// Lock ids (lock.h): who holds a Mutex, and which holders a fork left behind.
//
// Ids come from one counter and are never reused, so that "below the counter's value at the
// fork" is "made before the fork". In a fork child, note_fork_child records that value and the
// forking thread's id: any other id below it belongs to a thread the child does not have. The
// counter has 31 bits (the lock word's top bit is kWaiters): it would take about 2^31 threads
// that lock, over the life of one process, to wrap it.
#include "lock.h"

namespace arena {

ARENA_TLS uint32_t t_lock_id = 0;

namespace lock_ids {

constinit std::atomic<uint32_t> g_first{0};
constinit std::atomic<uint32_t> g_survivor{0};

namespace {
constinit std::atomic<uint32_t> g_next{1};
constexpr uint32_t kIdMask = Mutex::kWaiters - 1;
} // namespace

uint32_t take() {
    uint32_t id;
    do {
        id = g_next.fetch_add(1, std::memory_order_relaxed) & kIdMask;
    } while (id == 0);
    return id;
}

uint32_t assign() {
    const uint32_t id = take();
    // One instruction: a signal handler that interrupted this and forked (note_fork_child gave
    // this thread an id then) must not have its id overwritten by this one.
    uint32_t none = 0;
    if (!__atomic_compare_exchange_n(&t_lock_id, &none, id, false, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED))
        return none;
    return id;
}

void note_fork_child() {
    g_survivor.store(self(), std::memory_order_relaxed);
    g_first.store(g_next.load(std::memory_order_relaxed) & kIdMask, std::memory_order_relaxed);
}

} // namespace lock_ids
} // namespace arena
