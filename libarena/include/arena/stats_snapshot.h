// SPDX-License-Identifier: MIT
// The one snapshot routine of the stats page (see stats_page.h, "Reading protocol"), shared by
// the writer (malloc_stats, mallinfo2) and every reader (arena-exporter, arena-stat, cmond).
//
// take() reads a page through a Source, which copies bytes at an offset of the page: the writer
// passes its own mapping (MemorySource), readers a descriptor they pread (client/reader.cc).
// It validates the head, copies the gauges under their seqlock, and sums the shards in two
// passes (frees, then allocations), so that live = allocations - frees never counts a block
// whose allocation is not yet visible.
//
// Freestanding: no allocation, no exceptions, no library calls; safe inside malloc.
#pragma once

#include "arena/stats_page.h"

#include <cstddef>
#include <cstdint>

namespace arena::snapshot {

/// One process's page at one moment.
struct Snapshot {
    arena_stats_head head;                         // identity, layout, control; head.global is a
                                                   // consistent (seqlocked) copy
    uint64_t events[ARENA_EV_COUNT];               // summed over every shard in use
    uint64_t class_alloc[ARENA_STATS_MAX_CLASSES]; // slots handed out, by class
    uint64_t class_free[ARENA_STATS_MAX_CLASSES];  // slots freed, by class

    uint64_t event(arena_stats_event e) const { return events[e]; }
    uint64_t gauge(arena_stats_gauge g) const { return head.global.gauges[g]; }
    int64_t signed_gauge(arena_stats_gauge g) const {
        return static_cast<int64_t>(head.global.gauges[g]);
    }
    unsigned nclasses() const { return head.nclasses; }

    /// Bytes in live blocks: slots at their class size plus large blocks (whole pages).
    /// Summed modulo 2^64 (unsigned: a page's counters are anyone's bytes, and signed overflow
    /// would be undefined), then read as signed: a negative total (frees seen before their
    /// allocations) is 0.
    uint64_t live_bytes() const {
        uint64_t live = events[ARENA_EV_large_alloc_bytes] - events[ARENA_EV_large_free_bytes];
        for (unsigned c = 0; c < nclasses(); ++c)
            live += (class_alloc[c] - class_free[c]) * uint64_t{head.class_size[c]};
        return static_cast<int64_t>(live) > 0 ? live : 0;
    }

    /// Live blocks: small slots plus large blocks (summed as live_bytes() is).
    uint64_t live_blocks() const {
        uint64_t live = events[ARENA_EV_large_allocs] - events[ARENA_EV_large_frees];
        for (unsigned c = 0; c < nclasses(); ++c)
            live += class_alloc[c] - class_free[c];
        return static_cast<int64_t>(live) > 0 ? live : 0;
    }
};

/// Why take() refused a page.
enum class Error : unsigned {
    None,
    Io,         // the source could not be read (short file, I/O error)
    BadMagic,   // not a stats page
    BadVersion, // a page of another ABI version
    BadLayout,  // sizes or counts that do not match this version's layout
    NotReady,   // being made: ARENA_STATS_READY is not set yet
    Torn,       // the gauges changed under every attempt to copy them
};

/// 1 for the event counters read in the free pass, 0 for the others (stats_page.h's table).
inline constexpr unsigned char kFreePass[ARENA_EV_COUNT] = {
#define ARENA_SNAPSHOT_PASS(name, family, label, pass) pass,
    ARENA_STATS_EVENTS(ARENA_SNAPSHOT_PASS)
#undef ARENA_SNAPSHOT_PASS
};

/// A Source over memory the caller maps (the writer's own page): 8-byte relaxed atomic loads,
/// so that concurrent writers make no data race and no word is torn.
class MemorySource {
public:
    explicit MemorySource(const void* page) : base_(static_cast<const unsigned char*>(page)) {}
    bool read(size_t offset, void* to, size_t n) const {
        const auto* from = reinterpret_cast<const uint64_t*>(base_ + offset);
        auto* dst = static_cast<uint64_t*>(to);
        for (size_t i = 0; i < n / 8; ++i)
            dst[i] = __atomic_load_n(&from[i], __ATOMIC_RELAXED);
        return true;
    }

private:
    const unsigned char* base_;
};

namespace detail {

inline constexpr size_t kSeqOffset =
    offsetof(arena_stats_head, global) + offsetof(arena_stats_global, seq);
inline constexpr size_t kShardBytes = sizeof(arena_stats_shard);

/// Layout checks of a head read from a page of this version.
inline Error check_head(const arena_stats_head& h) {
    if (h.magic != ARENA_STATS_MAGIC)
        return Error::BadMagic;
    if (h.version != ARENA_STATS_VERSION)
        return Error::BadVersion;
    if (h.header_size != sizeof(arena_stats_head) || h.size != sizeof(arena_stats_page) ||
        h.nshards != ARENA_STATS_SHARDS || h.nclasses > ARENA_STATS_MAX_CLASSES ||
        h.nevents > ARENA_STATS_EVENT_SLOTS || h.ngauges > ARENA_STATS_GAUGE_SLOTS ||
        h.shards_used > ARENA_STATS_SHARDS)
        return Error::BadLayout;
    if ((h.flags & ARENA_STATS_READY) == 0)
        return Error::NotReady;
    return Error::None;
}

} // namespace detail

/// Reads the page behind `src` into *out, a shard at a time (about 3 KiB of stack in all).
/// Returns Error::None, or why the page was refused (then *out is partly written).
template <class Source>
Error take(const Source& src, Snapshot* out) {
    arena_stats_head& h = out->head;
    if (!src.read(0, &h, sizeof h))
        return Error::Io;
    if (const Error e = detail::check_head(h); e != Error::None)
        return e;
    // A writer that died inside its update leaves an odd sequence for good: after this many
    // tries the copy stands as it is (its fields are single words, each of them whole).
    constexpr int kAttempts = 64;
    for (int attempt = 0;; ++attempt) {
        uint64_t before = 0, after = 0;
        if (!src.read(detail::kSeqOffset, &before, sizeof before) ||
            !src.read(offsetof(arena_stats_head, global), &h.global, sizeof h.global))
            return Error::Io;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (!src.read(detail::kSeqOffset, &after, sizeof after))
            return Error::Io;
        if ((before == after && (before & 1) == 0) || attempt + 1 == kAttempts)
            break;
    }
    const unsigned nshards = h.shards_used;
    const unsigned nclasses = h.nclasses;
    const unsigned nevents =
        h.nevents < unsigned{ARENA_EV_COUNT} ? h.nevents : unsigned{ARENA_EV_COUNT};
    for (unsigned e = 0; e < ARENA_EV_COUNT; ++e)
        out->events[e] = 0;
    for (unsigned c = 0; c < ARENA_STATS_MAX_CLASSES; ++c)
        out->class_alloc[c] = out->class_free[c] = 0;
    // Pass 1, frees; pass 2, allocations (and every other counter).
    arena_stats_shard s;
    for (int pass = 1; pass >= 0; --pass) {
        for (unsigned i = 0; i < nshards; ++i) {
            if (!src.read(sizeof(arena_stats_head) + i * detail::kShardBytes, &s, sizeof s))
                return Error::Io;
            for (unsigned e = 0; e < nevents; ++e)
                if (kFreePass[e] == pass)
                    out->events[e] += s.events[e];
            const uint64_t* classes = pass == 1 ? s.class_free : s.class_alloc;
            uint64_t* sums = pass == 1 ? out->class_free : out->class_alloc;
            for (unsigned c = 0; c < nclasses; ++c)
                sums[c] += classes[c];
        }
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
    }
    // The writer raises the peak on its allocation slow paths only; what is live now is a
    // lower bound of the peak too.
    uint64_t& peak = h.global.gauges[ARENA_G_peak_live_bytes];
    const uint64_t live = out->live_bytes();
    if (peak < live)
        peak = live;
    return Error::None;
}

} // namespace arena::snapshot
