// SPDX-License-Identifier: MIT
// Allocation counters and the stats page (include/arena/stats_page.h).
//
// Each thread heap owns one shard of the page and is its only writer, so a counter update is a
// single add to memory on a line no other thread writes. Threads without a heap (a thread that
// only frees) use shard 0 with atomic adds; heaps beyond the page's shards count in a private
// shard and add it to shard 0 on their slow paths. Readers sum all shards. The page is a shared
// file mapping when stats are on (stats_file.h makes it), and anonymous memory with the same
// layout when they are off (ARENA_STATS=0, a secure-exec process, an unusable directory, a full
// filesystem), so the fast path is the same either way.
#pragma once

#include "arena/stats_page.h"
#include "arena/stats_snapshot.h"
#include "macros.h"
#include "size_class.h"

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace arena {

enum Counter : unsigned {
#define ARENA_COUNTER_ENUM(name, family, label, pass) k_##name,
    ARENA_STATS_EVENTS(ARENA_COUNTER_ENUM)
#undef ARENA_COUNTER_ENUM
        kCounterCount
};
static_assert(unsigned{kCounterCount} == unsigned{ARENA_EV_COUNT});
static_assert(kNumClasses <= ARENA_STATS_MAX_CLASSES);

/// The API entry points, for counting calls and naming the caller in error reports.
enum class Api : unsigned { Malloc, Calloc, Realloc, Free, Aligned, New, Delete };

/// The call counter an allocation or free made on behalf of `a` bumps, or kCounterCount for
/// none: realloc counts its call once at entry, not in the allocation and free it may do.
inline constexpr Counter call_counter(Api a) {
    return a == Api::Realloc ? kCounterCount : static_cast<Counter>(static_cast<unsigned>(a));
}
static_assert(call_counter(Api::Malloc) == k_malloc_calls);
static_assert(call_counter(Api::Delete) == k_delete_calls);
static_assert(call_counter(Api::Aligned) == k_aligned_calls);

inline constexpr const char* api_name(Api a) {
    constexpr const char* kNames[] = {"malloc",   "calloc",       "realloc",        "free",
                                      "memalign", "operator new", "operator delete"};
    return kNames[static_cast<unsigned>(a)];
}

/// f.template operator()<A>() for the A among `As` that equals `api`, or the last of `As` when
/// none does: how a slow path that knows the API only at run time reaches a fast-path template
/// (instantiated for the listed APIs only). For example
///     with_api<Api::Free, Api::Delete, Api::Realloc>(api, [&]<Api A>() { ... });
template <Api A, Api... Rest, typename F>
ARENA_FAST_PATH decltype(auto) with_api(Api api, F&& f) {
    if constexpr (sizeof...(Rest) != 0) {
        if (api != A)
            return with_api<Rest...>(api, static_cast<F&&>(f));
    }
    return f.template operator()<A>();
}

/// arena_stats_shard with atomic counters (same layout; relaxed atomics are plain loads and
/// stores, and make the concurrent reads well defined).
struct StatShard {
    std::atomic<uint64_t> events[ARENA_STATS_EVENT_SLOTS];
    std::atomic<uint64_t> class_alloc[ARENA_STATS_MAX_CLASSES];
    std::atomic<uint64_t> class_free[ARENA_STATS_MAX_CLASSES];
};
static_assert(sizeof(StatShard) == sizeof(arena_stats_shard));
static_assert(offsetof(StatShard, class_alloc) == offsetof(arena_stats_shard, class_alloc));
static_assert(offsetof(StatShard, class_free) == offsetof(arena_stats_shard, class_free));

/// Owner-only increment: one add to memory, no lock prefix, no contention. Readers load the
/// counter with relaxed atomics; an aligned 8-byte store is never torn.
inline void bump(std::atomic<uint64_t>& c, uint64_t v = 1) {
#if defined(__x86_64__)
    __asm__ __volatile__("addq %1, %0" : "+m"(*reinterpret_cast<uint64_t*>(&c)) : "er"(v));
#else
    c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
#endif
}

/// Increment of shard 0, which several threads write.
inline void bump_shared(std::atomic<uint64_t>& c, uint64_t v = 1) {
    c.fetch_add(v, std::memory_order_relaxed);
}

namespace stats {

/// Creates the page (or the anonymous stand-in). Called once, from initialisation.
void init();

/// Shard 0, shared by threads without a heap and heaps without a shard of their own.
StatShard& shared_shard();

/// A shard for the heap with creation number `id` (1-based), or null when the page has no
/// more shards (the heap then uses shard 0 through its private overflow shard).
StatShard* heap_shard(uint32_t id);

/// A consistent copy of this process's page (stats_snapshot.h, the readers' routine too).
void snapshot(snapshot::Snapshot* out);

/// A heap's live bytes are now `live` (last given as *published): adds the change to the
/// process's live bytes and raises the peak. Called from allocation slow paths.
void note_live(int64_t live, int64_t* published);

/// Adds delta to the process's live bytes: frees by a thread without a heap (a heap's own are
/// in its live bytes, given by note_live).
void note_live_change(int64_t delta);

/// Writes the process-wide gauges (seqlock). Cheap enough for any slow path; callers are
/// region creation, purge ticks, trims, heap creation and abandonment, heap errors.
void publish_global();

/// Reads the page's control area: serves a purge-delay request, and republishes the gauges when
/// they are older than 10 ms (stats.cc); the first such republish also does what start-up left
/// (stats_file.h: the pid namespace, dead pages). A trim request is the caller's to serve (the
/// stats page only records it: heap::maintenance trims): returns its counter, the ticket to
/// give trim_served, or 0 when none waits (counters start at 0). Called from slow paths.
uint64_t poll_control();

/// The trim request `ticket` (from poll_control) is served: marks it so and publishes.
void trim_served(uint64_t ticket);

/// The program's arguments (from the library constructor), for the page's command line.
void set_args(int argc, char** argv);

/// A malloc_trim call, for the trims counter.
void count_trim();

/// The page's file path, or "" when stats are off.
const char* page_path();

/// In a fork child (fork.cc): a page of its own in place of the parent's (stats.cc, "After
/// fork"). `interrupted`: the forking thread holds an allocator lock (the fork came from a
/// signal handler), so no lock may be taken; the file is made on a later slow path.
void fork_child(bool interrupted);
void remove_page(); // at normal exit

} // namespace stats
} // namespace arena
