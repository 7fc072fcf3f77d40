// SPDX-License-Identifier: MIT
// The native arena instance (include/arena/arena.h): the seed's configurable chunk arena on a
// RunMap. Allocation starts are kept in a fourth bitmap, `starts`, so no header is stored in
// the arena: the length of an allocation is the distance from its start bit to the next unit
// that is free or starts another allocation.
//
// fork: an instance's lock held by a thread that did not survive a fork is taken over by the
// next thread that locks it (lock.h), which repairs the instance (repair below; fork.cc has the
// argument). A run is claimed before its start bit is set and its start bit cleared before it
// is released, so a call cut short leaves at worst a run that belongs to no allocation (or that
// the allocation below it appears to extend over, and frees with it).
#include "arena/arena.h"

#include "bitmap.h"
#include "lock.h"
#include "options.h"
#include "os.h"

#include <atomic>
#include <cerrno>
#include <new>
#include <pthread.h>

struct arena_s {
    arena::Mutex lock;
    arena::RunMap runs;
    uint64_t* starts; // 1 = first chunk of a live allocation
    size_t chunk_size;
    unsigned chunk_shift;
    size_t chunk_count;
    void* data; // chunk_size * chunk_count bytes (page-rounded)
    size_t data_size;
    size_t meta_size; // this struct plus its bitmaps
    size_t allocations;
    uint64_t alloc_calls, free_calls, failed_allocs, bad_frees, purged;
    uint64_t last_tick; // last purge tick, ms
};

namespace {

using arena::RunMap;
namespace bits = arena::bits;

constexpr size_t kMinChunk = 16;
constexpr size_t kMaxChunk = size_t{1} << 30;
constexpr size_t kMaxChunks = size_t{1} << 32;

size_t round_to_page(size_t n) {
    const size_t ps = arena::os::page_size();
    return (n + ps - 1) & ~(ps - 1);
}

/// Length in chunks of the allocation starting at chunk i (used, start bit set).
size_t run_length(const arena_t* a, size_t i) {
    const size_t end_used = bits::find_clear(a->runs.used_bits(), i + 1, a->chunk_count);
    const size_t next_start = bits::find_set(a->starts, i + 1, a->chunk_count);
    return (end_used < next_start ? end_used : next_start) - i;
}

/// Chunk index of p if it is the start of a live allocation; otherwise the errno to return.
int locate(const arena_t* a, const void* p, size_t* index) {
    const uintptr_t off = reinterpret_cast<uintptr_t>(p) - reinterpret_cast<uintptr_t>(a->data);
    if (off >= a->chunk_count << a->chunk_shift || (off & (a->chunk_size - 1)) != 0)
        return EINVAL;
    const size_t i = off >> a->chunk_shift;
    if (bits::test(a->starts, i))
        return (*index = i), 0;
    return a->runs.is_used(i) ? EINVAL : ENOENT;
}

/// After a take-over of the lock from a thread that did not survive a fork: the map's counters
/// and hints, and the count of allocations, rebuilt from the bitmaps.
ARENA_COLD void repair(arena_t* a) {
    a->runs.repair();
    a->allocations = bits::count(a->starts, 0, a->chunk_count);
}

/// The instance's lock, repairing the instance when it was taken over.
class Guard {
public:
    explicit Guard(const arena_t* a) : g_(const_cast<arena_t*>(a)->lock) {
        if (ARENA_UNLIKELY(g_.taken_over()))
            repair(const_cast<arena_t*>(a));
    }

private:
    arena::LockGuard g_;
};

/// In a fork child: lets locks tell holders that did not survive (libarena.so's own fork
/// handler does the same; a second call changes nothing).
void note_fork_child() {
    arena::lock_ids::note_fork_child();
}

constinit std::atomic<bool> g_fork_handler{false};

void maybe_purge(arena_t* a) {
    const int64_t delay = arena::option(arena::Opt::PURGE_DELAY_MS);
    if (delay < 0)
        return;
    const uint64_t now = arena::os::now_ms();
    if (delay > 0 && now - a->last_tick < static_cast<uint64_t>(delay))
        return;
    a->last_tick = now;
    a->purged += a->runs.purge(delay == 0);
}

} // namespace

extern "C" {

const char* arena_version(void) {
    return ARENA_VERSION_STRING;
}

arena_config_t arena_config(size_t chunk_size, size_t chunk_count) {
    return arena_config_t{chunk_size, chunk_count};
}

int arena_init(arena_t** out, const arena_config_t* config) {
    if (out == nullptr || config == nullptr)
        return EINVAL;
    const size_t cs = config->chunk_size;
    const size_t n = config->chunk_count;
    if (cs < kMinChunk || cs > kMaxChunk || (cs & (cs - 1)) != 0 || n == 0 || n > kMaxChunks)
        return EINVAL;
    size_t bytes = 0;
    if (__builtin_mul_overflow(cs, n, &bytes) || bytes > arena::kMaxReserve)
        return EINVAL;
    arena::options_load(); // once per process; the purge delay applies to instances too
    if (!g_fork_handler.exchange(true, std::memory_order_relaxed))
        pthread_atfork(nullptr, nullptr, note_fork_child);
    const size_t words = bits::words_for(n);
    const size_t header = (sizeof(arena_s) + ARENA_CACHE_LINE - 1) & ~size_t{ARENA_CACHE_LINE - 1};
    const size_t meta_size = round_to_page(header + RunMap::metadata_bytes(n) + words * 8);
    void* meta = arena::os::reserve(meta_size);
    if (meta == nullptr)
        return ENOMEM;
    // The data starts on a multiple of the chunk size: the RunMap's units are aligned to the
    // unit (bitmap.h). A page-aligned reservation is that for chunks up to a page; larger ones
    // reserve a chunk more and return the ends around the aligned part.
    const size_t data_size = round_to_page(bytes);
    const size_t ps = arena::os::page_size();
    const size_t slack = cs > ps ? cs - ps : 0;
    void* raw = arena::os::reserve(data_size + slack);
    if (raw == nullptr) {
        arena::os::unreserve(meta, meta_size);
        return ENOMEM;
    }
    const uintptr_t lo = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t start = slack != 0 ? (lo + cs - 1) & ~uintptr_t{cs - 1} : lo;
    if (start > lo)
        arena::os::unreserve(raw, start - lo);
    if (lo + slack > start)
        arena::os::unreserve(reinterpret_cast<void*>(start + data_size), lo + slack - start);
    void* data = reinterpret_cast<void*>(start);
    arena_t* a = new (meta) arena_s{};
    char* bitmaps = static_cast<char*>(meta) + header;
    a->chunk_size = cs;
    a->chunk_shift = static_cast<unsigned>(__builtin_ctzll(cs));
    a->chunk_count = n;
    a->data = data;
    a->data_size = data_size;
    a->meta_size = meta_size;
    a->runs.init(bitmaps, n, reinterpret_cast<uintptr_t>(data), a->chunk_shift);
    a->starts = reinterpret_cast<uint64_t*>(bitmaps + RunMap::metadata_bytes(n));
    a->last_tick = arena::os::now_ms();
    *out = a;
    return 0;
}

void* arena_alloc(arena_t* a, size_t size) {
    if (a == nullptr) {
        errno = EINVAL;
        return nullptr;
    }
    Guard guard(a);
    ++a->alloc_calls;
    const size_t k = size == 0 ? 1 : (size - 1) / a->chunk_size + 1;
    const size_t first = k <= a->chunk_count ? a->runs.find(k, 1) : bits::npos;
    if (first == bits::npos) {
        ++a->failed_allocs;
        errno = ENOMEM;
        return nullptr;
    }
    a->runs.claim(first, k);
    std::atomic_thread_fence(std::memory_order_release); // claimed, then started (see the top)
    a->starts[first >> 6] |= uint64_t{1} << (first & 63);
    ++a->allocations;
    return reinterpret_cast<void*>(a->runs.address(first));
}

int arena_free(arena_t* a, void* p) {
    if (a == nullptr)
        return EINVAL;
    if (p == nullptr)
        return 0;
    Guard guard(a);
    ++a->free_calls;
    size_t i = 0;
    if (const int err = locate(a, p, &i)) {
        ++a->bad_frees;
        return err;
    }
    const size_t len = run_length(a, i);
    a->starts[i >> 6] &= ~(uint64_t{1} << (i & 63));
    std::atomic_thread_fence(std::memory_order_release); // ended, then released
    a->runs.release(i, len);
    --a->allocations;
    maybe_purge(a);
    return 0;
}

size_t arena_usable_size(const arena_t* a, const void* p) {
    if (a == nullptr || p == nullptr)
        return 0;
    Guard guard(a);
    size_t i = 0;
    if (locate(a, p, &i) != 0)
        return 0;
    return run_length(a, i) << a->chunk_shift;
}

size_t arena_trim(arena_t* a) {
    if (a == nullptr)
        return 0;
    Guard guard(a);
    const size_t got = a->runs.purge(true);
    a->purged += got;
    a->last_tick = arena::os::now_ms();
    return got;
}

int arena_get_stats(const arena_t* a, arena_stats_t* out) {
    if (a == nullptr || out == nullptr)
        return EINVAL;
    Guard guard(a);
    out->chunk_size = a->chunk_size;
    out->chunk_count = a->chunk_count;
    out->chunks_used = a->runs.used_units();
    out->allocations = a->allocations;
    out->bytes_reserved = a->data_size;
    out->bytes_dirty = a->runs.dirty_units() << a->chunk_shift;
    out->alloc_calls = a->alloc_calls;
    out->free_calls = a->free_calls;
    out->failed_allocs = a->failed_allocs;
    out->bad_frees = a->bad_frees;
    out->bytes_purged = a->purged;
    return 0;
}

void arena_teardown(arena_t* a) {
    if (a == nullptr)
        return;
    void* data = a->data;
    const size_t data_size = a->data_size;
    const size_t meta_size = a->meta_size;
    a->~arena_s();
    arena::os::unreserve(data, data_size);
    arena::os::unreserve(a, meta_size);
}

} // extern "C"
