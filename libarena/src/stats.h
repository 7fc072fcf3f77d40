// SPDX-License-Identifier: MIT
// Allocation counters. Each thread heap owns one shard and is its only writer, so a counter
// update is a plain load-add-store on a line no other thread writes (relaxed atomics make the
// concurrent reads by stats readers well defined). Threads without a heap (a thread that only
// frees) use one shared shard with atomic adds. Readers sum all shards.
#pragma once

#include "size_class.h"

#include <atomic>
#include <cstdint>

namespace arena {

// X(name, help) — per-shard event counters. The first six are the API call counters, in the
// order of enum Api below.
#define ARENA_SHARD_COUNTERS(X)                                                                   \
    X(malloc_calls, "Calls of malloc.")                                                           \
    X(calloc_calls, "Calls of calloc.")                                                           \
    X(realloc_calls, "Calls of realloc and reallocarray.")                                        \
    X(free_calls, "Calls of free and cfree.")                                                     \
    X(aligned_calls, "Calls of memalign, posix_memalign, aligned_alloc, valloc and pvalloc.")     \
    X(new_calls, "Calls of operator new (all forms).")                                            \
    X(delete_calls, "Calls of operator delete (all forms).")                                      \
    X(bytes_requested, "Bytes asked for by all allocation calls.")                                \
    X(large_allocs, "Large blocks (page runs) allocated.")                                        \
    X(large_frees, "Large blocks freed.")                                                         \
    X(large_alloc_bytes, "Bytes of large blocks allocated (whole pages).")                        \
    X(large_free_bytes, "Bytes of large blocks freed.")                                           \
    X(failed_allocs, "Allocation calls that returned NULL (ENOMEM).")                             \
    X(foreign_frees, "Frees of pointers the arena does not own (ignored).")

enum Counter : unsigned {
#define ARENA_COUNTER_ENUM(name, help) k_##name,
    ARENA_SHARD_COUNTERS(ARENA_COUNTER_ENUM)
#undef ARENA_COUNTER_ENUM
        kCounterCount
};

/// The API entry points, for counting calls and naming the caller in error reports.
enum class Api : unsigned { Malloc, Calloc, Realloc, Free, Aligned, New, Delete };

/// The call counter an allocation or free made on behalf of `a` bumps, or kCounterCount for
/// none: realloc counts its call once at entry, not in the allocation and free it may do.
inline constexpr Counter call_counter(Api a) {
    return a == Api::Realloc ? kCounterCount : static_cast<Counter>(static_cast<unsigned>(a));
}
static_assert(call_counter(Api::Delete) == k_delete_calls);
static_assert(call_counter(Api::Aligned) == k_aligned_calls);

inline constexpr const char* api_name(Api a) {
    constexpr const char* kNames[] = {"malloc",  "calloc",       "realloc",        "free",
                                      "memalign", "operator new", "operator delete"};
    return kNames[static_cast<unsigned>(a)];
}

struct alignas(64) StatShard {
    std::atomic<uint64_t> events[kCounterCount] = {};
    std::atomic<uint64_t> class_alloc[kNumClasses] = {}; // slots handed out, by size class
    std::atomic<uint64_t> class_free[kNumClasses] = {};  // slots freed, by size class
};

/// Owner-only increment: one add to memory, no lock prefix, no contention. Readers load the
/// counter with relaxed atomics; an aligned 8-byte store is never torn.
inline void bump(std::atomic<uint64_t>& c, uint64_t v = 1) {
#if defined(__x86_64__)
    __asm__ __volatile__("addq %1, %0" : "+m"(*reinterpret_cast<uint64_t*>(&c)) : "er"(v));
#else
    c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
#endif
}

/// Increment of a shard that several threads may write.
inline void bump_shared(std::atomic<uint64_t>& c, uint64_t v = 1) {
    c.fetch_add(v, std::memory_order_relaxed);
}

/// The sum of all shards.
struct StatTotals {
    uint64_t events[kCounterCount] = {};
    uint64_t class_alloc[kNumClasses] = {};
    uint64_t class_free[kNumClasses] = {};

    void add(const StatShard& s);
    /// Bytes in live blocks: slots at their class size plus large blocks.
    uint64_t live_bytes() const;
};

} // namespace arena
