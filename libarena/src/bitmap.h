// SPDX-License-Identifier: MIT
// Arrays of 64-bit bitmaps, the allocator's one data structure for free/used state.
//
// `bits::` has the word-level primitives: setting and clearing ranges, finding the next set or
// clear bit, and finding a run of n clear bits with an alignment constraint. Runs may start and
// end anywhere and cross any number of 64-bit words (the seed design could not cross a word,
// which capped an allocation at 64 chunks and wasted the tail of every word).
//
// `RunMap` is a unit allocator built on three such bitmaps over one address range:
//   used  - 1 = unit handed out
//   dirty - 1 = free unit that was written since the last purge (may be resident)
//   young - 1 = became dirty since the previous purge tick
// A purge tick returns `dirty & ~young` to the kernel (free for at least one whole tick), then
// clears `young`; so freed memory goes back after between one and two purge delays, and memory
// that is freed and reused quickly never pays for a page fault.
//
// A purge can also be made without holding the owner's lock across madvise (the background
// purger, pages.cc): take_old() marks old dirty runs *busy* (used, not dirty: nobody can claim
// them, and a tick or trim skips them), the caller returns them to the kernel unlocked, and
// give_back() frees them again, clean. Each step writes its bits in an order that leaves only
// safe states to a fork child that copies the map in the middle of it (pages.cc says why that
// matters): a unit is made used before it stops being dirty, and stops being used only after
// its hints are lowered and its dirty bit says the truth. A unit can thus be seen used and
// owned by nobody (a leak), never free and clean while its page still holds data.
//
// Nothing here locks: RunMap's owner serialises access (pages.cc's lock, native.cc's lock).
#pragma once

#include <cstddef>
#include <cstdint>

namespace arena {
namespace bits {

inline constexpr size_t npos = ~size_t{0};

constexpr size_t words_for(size_t nbits) {
    return (nbits + 63) / 64;
}

inline bool test(const uint64_t* w, size_t i) {
    return (w[i >> 6] >> (i & 63)) & 1;
}

/// Sets bits [first, first+n).
void set_range(uint64_t* w, size_t first, size_t n);
/// Clears bits [first, first+n).
void clear_range(uint64_t* w, size_t first, size_t n);
/// Number of set bits in [first, first+n).
size_t count(const uint64_t* w, size_t first, size_t n);
/// First set bit in [from, limit), or `limit`.
size_t find_set(const uint64_t* w, size_t from, size_t limit);
/// Last set bit below `before`, or npos.
size_t find_set_before(const uint64_t* w, size_t before);
/// First clear bit in [from, limit), or `limit`.
size_t find_clear(const uint64_t* w, size_t from, size_t limit);
/// Lowest s >= from with [s, s+n) clear, s+n <= limit and (s + phase) % align == 0 (align is a
/// power of two, counted in bits). npos when there is none. O(words scanned).
size_t find_clear_run(const uint64_t* w, size_t limit, size_t from, size_t n, size_t align,
                      size_t phase);

/// Calls f(first, n) for every maximal run of bits set in `a` and clear in `b` (b may be null),
/// within [0, limit), in increasing order. Runs are merged across word boundaries.
template <class F>
void for_each_run(const uint64_t* a, const uint64_t* b, size_t limit, F&& f) {
    size_t run_start = npos;
    const size_t nwords = words_for(limit);
    for (size_t wi = 0; wi < nwords; ++wi) {
        uint64_t m = a[wi] & (b ? ~b[wi] : ~uint64_t{0});
        if (wi == nwords - 1 && (limit & 63) != 0)
            m &= (uint64_t{1} << (limit & 63)) - 1;
        const size_t base = wi * 64;
        if (m == ~uint64_t{0}) { // the whole word continues or starts a run
            if (run_start == npos)
                run_start = base;
            continue;
        }
        size_t bit = 0; // invariant: bit < 64
        for (;;) {
            if (run_start == npos) {
                const uint64_t rest = m >> bit;
                if (rest == 0)
                    break;
                bit += static_cast<size_t>(__builtin_ctzll(rest));
                run_start = base + bit;
            } else {
                const uint64_t rest = ~m >> bit;
                if (rest == 0)
                    break; // the run continues into the next word
                bit += static_cast<size_t>(__builtin_ctzll(rest));
                f(run_start, base + bit - run_start);
                run_start = npos;
            }
        }
    }
    if (run_start != npos)
        f(run_start, limit - run_start);
}

} // namespace bits

/// A first-fit allocator of runs of equal units (pages of a region, chunks of a native arena)
/// with delayed return of free units to the kernel. Not thread-safe; see the file comment.
class RunMap {
public:
    /// Bytes of bitmap storage init() needs for `nunits` units.
    static constexpr size_t metadata_bytes(size_t nunits) {
        return 3 * bits::words_for(nunits) * 8;
    }

    /// `meta` is zeroed storage of metadata_bytes(nunits); units are 2^unit_shift bytes from
    /// `base`, which is aligned to the unit.
    void init(void* meta, size_t nunits, uintptr_t base, unsigned unit_shift);

    /// A free run of n units whose address is aligned to `align_units` units (power of two):
    /// the run released last if it fits, else the first one. bits::npos when there is none.
    size_t find(size_t n, size_t align_units);

    /// Marks [first, first+n) used. Returns true when every unit was clean, i.e. reads as zero
    /// (never written since it was reserved or purged).
    bool claim(size_t first, size_t n);

    /// Marks [first, first+n) free and dirty.
    void release(size_t first, size_t n);

    /// True if all of [first, first+n) is free (and within the map).
    bool range_free(size_t first, size_t n) const;

    /// Returns free dirty units to the kernel: those dirty for a whole tick, or all of them when
    /// `everything`. Starts a new tick. Returns the number of bytes released.
    size_t purge(bool everything);

    /// Returns the free run [first, first+n) to the kernel now. Returns the bytes released.
    size_t purge_run(size_t first, size_t n);

    /// A run taken by take_old(), to be returned to the kernel without the owner's lock.
    struct Span {
        size_t first;
        size_t n;
    };
    /// From unit `from` up, takes runs of units dirty for a whole tick (dirty & ~young), at most
    /// `max_spans` runs and about `max_units` units (a run is cut to what is left of it), and
    /// marks them busy: used, not dirty. Returns the unit to continue from, top() when the scan
    /// is done. Young bits are left alone: end_tick() clears them when the scan is done.
    size_t take_old(size_t from, Span* out, size_t max_spans, size_t max_units, size_t* nspans);
    /// Frees a busy run again: clean when `purged` (its pages were returned), else dirty and old
    /// (the next tick tries again).
    void give_back(size_t first, size_t n, bool purged);
    /// The end of a tick made with take_old(): every dirty unit becomes old.
    void end_tick();

    /// Makes the map consistent again after its owner's lock was released in a fork child while
    /// a thread the child does not have was inside one of the calls above (fork.cc): the
    /// counters and `top` are recounted from the bitmaps, the hints and the recent run
    /// forgotten, and units both used and dirty (a claim cut short) become only used. The
    /// bitmaps themselves are the truth at every instruction boundary: a unit is marked used
    /// before its run is returned and marked free only after its owner gave it up, so a run
    /// half claimed or half released is at worst lost to the child, never handed out twice; and
    /// a unit is marked used before it is marked clean (claim) and dirty before it is marked
    /// free (release), so a free unit that reads as clean is zero. A run left busy (take_old)
    /// counts as used, a leak: the caller gives back the runs it can first (pages.cc,
    /// fork_child). O(units / 64).
    void repair();

    /// Bitmap storage a truncate() left without a unit: whole OS pages, for the owner to unmap.
    struct Storage {
        void* p;
        size_t bytes; // 0: nothing
    };
    /// Cuts the map down to its first `nunits` units, a multiple of 64 no lower than top(): the
    /// units cut off were never used, so nothing refers to them. The storage of each bitmap's
    /// tail is named in `unused` (the bitmaps stay where init() put them); the map no longer
    /// reads it.
    void truncate(size_t nunits, Storage unused[3]);

    bool is_used(size_t i) const { return bits::test(used_, i); }
    /// is_used() without the owner's lock, for classifying a bad pointer in an error report.
    bool is_used_unlocked(size_t i) const {
        return (__atomic_load_n(&used_[i >> 6], __ATOMIC_RELAXED) >> (i & 63)) & 1;
    }
    const uint64_t* used_bits() const { return used_; }

    /// The map's invariants, recounted from the bitmaps (O(units / 64) and a run search per
    /// hint level): counters equal to the bitmaps, no unit used and dirty, nothing used or dirty
    /// at or above top, hints ordered and true. For ARENA_ASSERT at coarse points (init, purge
    /// ticks, repair, truncate) and tests; false while a caller is between two bitmap writes.
    bool check() const;
    /// The counters within the map (O(1)): for ARENA_ASSERT after every change.
    bool counts_fit() const;
    size_t nunits() const { return nunits_; }
    size_t used_units() const { return used_units_; }
    size_t dirty_units() const { return dirty_units_; }
    size_t busy_units() const { return busy_units_; }
    size_t top() const { return top_; }
    uintptr_t base() const { return base_; }
    unsigned unit_shift() const { return shift_; }
    uintptr_t address(size_t unit) const { return base_ + (uintptr_t{unit} << shift_); }

private:
    uint64_t* used_ = nullptr;
    uint64_t* dirty_ = nullptr;
    uint64_t* young_ = nullptr;
    size_t nunits_ = 0;
    // hints_[k]: no free run of 2^k or more units starts below this. A search for n units starts
    // at the hint of n's power of two, so that the fragmented low end of the map (holes left
    // by small blocks) is not scanned again for every large block. Hints move up as searches
    // find nothing below, and down to the start of the merged run as runs are released.
    // They are kept ordered (hints_[k] <= hints_[k+1]; a bound for 2^k is one for 2^(k+1)), so
    // that claim and release visit only the levels they change, not all of them.
    static constexpr unsigned kHintLevels = 64;
    static constexpr size_t kMergeScan = 4096; // release: how far up it measures the merged run
    static constexpr size_t kClaimScan = 256;  // claim: how far up it looks for the next free unit
    size_t hints_[kHintLevels] = {};
    unsigned levels_ = 0; // hints in use: runs are at most nunits_ long
    // The run released last (or what is left of it): a request it fits takes it at once,
    // without a search. Freeing a block and allocating one of the same size is the common
    // case for large blocks, and the memory reused this way is still resident.
    size_t recent_first_ = 0;
    size_t recent_n_ = 0;
    size_t top_ = 0; // no unit at or above this was ever used
    size_t used_units_ = 0;
    size_t dirty_units_ = 0;
    size_t busy_units_ = 0; // taken by take_old() and not given back yet (neither used nor dirty
                            // in the counts, used in the bitmap)
    uintptr_t base_ = 0;
    unsigned shift_ = 0;

    /// Lowers the hints for a run [first, first+n) that becomes free (release, give_back).
    void lower_hints(size_t first, size_t n);
};

} // namespace arena
