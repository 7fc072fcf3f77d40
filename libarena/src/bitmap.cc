// SPDX-License-Identifier: MIT
// Word-level bitmap primitives and the RunMap unit allocator (see bitmap.h).
#include "bitmap.h"

#include "check.h"
#include "macros.h"
#include "os.h"

#include <algorithm>
#include <atomic>

namespace arena {
namespace bits {
namespace {

/// Mask of bits [lo, hi) within one word, 0 <= lo < hi <= 64.
constexpr uint64_t word_mask(size_t lo, size_t hi) {
    const uint64_t upper = hi == 64 ? ~uint64_t{0} : (uint64_t{1} << hi) - 1;
    return upper & ~((uint64_t{1} << lo) - 1);
}

/// Calls op(wi, mask, bits) for every word wi overlapping [first, first+n): mask selects the
/// range's bits in that word, and `bits` is how many there are.
template <class Op>
ARENA_FAST_PATH void for_words(size_t first, size_t n, Op op) {
    if (n == 0)
        return;
    size_t wi = first >> 6;
    const size_t last = first + n; // exclusive
    const size_t last_wi = (last - 1) >> 6;
    const size_t lo = first & 63, hi = ((last - 1) & 63) + 1;
    if (wi == last_wi) {
        op(wi, word_mask(lo, hi), hi - lo);
        return;
    }
    op(wi, word_mask(lo, 64), 64 - lo);
    for (++wi; wi < last_wi; ++wi)
        op(wi, ~uint64_t{0}, size_t{64});
    op(last_wi, word_mask(0, hi), hi);
}

/// Applies op(word, mask) to every word overlapping [first, first+n).
template <class Op>
ARENA_FAST_PATH void for_range(uint64_t* w, size_t first, size_t n, Op op) {
    for_words(first, n, [&](size_t wi, uint64_t m, size_t) { op(w[wi], m); });
}

} // namespace

void set_range(uint64_t* w, size_t first, size_t n) {
    for_range(w, first, n, [](uint64_t& word, uint64_t m) { word |= m; });
}

void clear_range(uint64_t* w, size_t first, size_t n) {
    for_range(w, first, n, [](uint64_t& word, uint64_t m) { word &= ~m; });
}

size_t count(const uint64_t* w, size_t first, size_t n) {
    size_t c = 0;
    for_range(const_cast<uint64_t*>(w), first, n, [&c](uint64_t& word, uint64_t m) {
        c += static_cast<size_t>(__builtin_popcountll(word & m));
    });
    return c;
}

size_t find_set(const uint64_t* w, size_t from, size_t limit) {
    if (from >= limit)
        return limit;
    size_t wi = from >> 6;
    uint64_t m = w[wi] & (~uint64_t{0} << (from & 63));
    const size_t nwords = words_for(limit);
    for (;;) {
        if (m != 0) {
            const size_t i = wi * 64 + static_cast<size_t>(__builtin_ctzll(m));
            return i < limit ? i : limit;
        }
        if (++wi >= nwords)
            return limit;
        m = w[wi];
    }
}

size_t find_set_before(const uint64_t* w, size_t before) {
    if (before == 0)
        return npos;
    size_t wi = (before - 1) >> 6;
    uint64_t m = w[wi] & (~uint64_t{0} >> (63 - ((before - 1) & 63)));
    for (;;) {
        if (m != 0)
            return wi * 64 + 63 - static_cast<size_t>(__builtin_clzll(m));
        if (wi == 0)
            return npos;
        m = w[--wi];
    }
}

size_t find_clear(const uint64_t* w, size_t from, size_t limit) {
    if (from >= limit)
        return limit;
    size_t wi = from >> 6;
    uint64_t m = ~w[wi] & (~uint64_t{0} << (from & 63));
    const size_t nwords = words_for(limit);
    for (;;) {
        if (m != 0) {
            const size_t i = wi * 64 + static_cast<size_t>(__builtin_ctzll(m));
            return i < limit ? i : limit;
        }
        if (++wi >= nwords)
            return limit;
        m = ~w[wi];
    }
}

namespace {

/// Bits b of the word at bit offset `base` where (base + b + phase) is a multiple of align.
uint64_t aligned_starts(size_t base, size_t align, size_t phase) {
    if (align == 1)
        return ~uint64_t{0};
    const size_t amask = align - 1;
    const size_t first = (align - ((base + phase) & amask)) & amask; // first aligned bit
    if (first >= 64)
        return 0;
    if (align >= 64)
        return uint64_t{1} << first;
    uint64_t pattern = 0; // one bit every `align` bits
    for (size_t b = 0; b < 64; b += align)
        pattern |= uint64_t{1} << b;
    return pattern << first;
}

/// Bits p of f where f has n set bits in a row from p up (within the word), n <= 64:
/// log2(n) shift-and steps (the seed design's "bit smearing", without its word boundary).
uint64_t run_starts(uint64_t f, size_t n) {
    size_t len = 1;
    while (len < n && f != 0) {
        const size_t step = len < n - len ? len : n - len;
        f &= f >> step;
        len += step;
    }
    return f;
}

} // namespace

size_t find_clear_run(const uint64_t* w, size_t limit, size_t from, size_t n, size_t align,
                      size_t phase) {
    if (n == 0 || n > limit || from >= limit)
        return npos;
    const size_t amask = align - 1;
    auto align_up = [&](size_t s) { return ((s + phase + amask) & ~amask) - phase; };
    const size_t nwords = words_for(limit);
    // Free runs are found a word at a time, never a bit at a time: a run that continues from
    // earlier words (run_start), runs inside the word (run_starts), and a run that reaches the
    // top of the word and may continue into the next. O(words * log n), however fragmented.
    size_t run_start = npos;
    for (size_t wi = from >> 6; wi < nwords; ++wi) {
        uint64_t f = ~w[wi]; // 1 = free
        if (wi == from >> 6)
            f &= ~uint64_t{0} << (from & 63);
        if (wi == nwords - 1 && (limit & 63) != 0)
            f &= (uint64_t{1} << (limit & 63)) - 1;
        const size_t base = wi * 64;
        if (f == ~uint64_t{0}) {
            if (run_start == npos)
                run_start = base;
            const size_t s = align_up(run_start);
            if (s + n <= base + 64)
                return s;
            continue;
        }
        if (run_start != npos) { // the run from earlier words ends in this word's low bits
            const size_t low = static_cast<size_t>(__builtin_ctzll(~f));
            const size_t s = align_up(run_start);
            if (s + n <= base + low)
                return s;
            run_start = npos;
        }
        if (n < 64 && f != 0) { // (a run of 64 inside one word is the full word, done above)
            const uint64_t starts = run_starts(f, n) & aligned_starts(base, align, phase);
            if (starts != 0)
                return base + static_cast<size_t>(__builtin_ctzll(starts));
        }
        if (f >> 63) // free bits at the top of the word start a run into the next one
            run_start = base + 64 - static_cast<size_t>(__builtin_clzll(~f));
    }
    return npos;
}

} // namespace bits

void RunMap::init(void* meta, size_t nunits, uintptr_t base, unsigned unit_shift) {
    ARENA_ASSERT(meta != nullptr && unit_shift < 64);
    ARENA_ASSERT((base & ((uintptr_t{1} << unit_shift) - 1)) == 0); // aligned to the unit
    const size_t words = bits::words_for(nunits);
    used_ = static_cast<uint64_t*>(meta);
    dirty_ = used_ + words;
    young_ = dirty_ + words;
    nunits_ = nunits;
    for (size_t& h : hints_)
        h = 0;
    levels_ = 64u - static_cast<unsigned>(__builtin_clzll(nunits | 1));
    top_ = 0;
    used_units_ = 0;
    dirty_units_ = 0;
    base_ = base;
    shift_ = unit_shift;
    // Units past the end of the last word are marked used so that no run can reach them.
    if ((nunits & 63) != 0)
        used_[words - 1] |= ~uint64_t{0} << (nunits & 63);
    ARENA_ASSERT(check());
}

bool RunMap::counts_fit() const {
    return top_ <= nunits_ && used_units_ <= nunits_ && dirty_units_ <= nunits_ &&
           busy_units_ <= nunits_ && used_units_ + dirty_units_ + busy_units_ <= nunits_ &&
           recent_first_ <= nunits_ && recent_n_ <= nunits_ - recent_first_ && levels_ <= 64;
}

bool RunMap::check() const {
    if (!counts_fit())
        return false;
    // The counters are the bitmaps' (busy units are used in the bitmap, in neither count; the
    // padding past the last unit is used), and a unit is never both used and dirty.
    size_t used = 0, dirty = 0;
    const size_t words = bits::words_for(nunits_);
    for (size_t wi = 0; wi < words; ++wi) {
        if ((used_[wi] & dirty_[wi]) != 0)
            return false;
        used += static_cast<size_t>(__builtin_popcountll(used_[wi]));
        dirty += static_cast<size_t>(__builtin_popcountll(dirty_[wi]));
    }
    if ((nunits_ & 63) != 0)
        used -= 64 - (nunits_ & 63);
    if (used != used_units_ + busy_units_ || dirty != dirty_units_)
        return false;
    // No unit at or above top was ever used, so none is used or dirty.
    if (bits::find_set(used_, top_, nunits_) != nunits_ ||
        bits::find_set(dirty_, top_, nunits_) != nunits_)
        return false;
    // Hints are ordered, and no free run of 2^k units or more starts below hints_[k].
    for (unsigned k = 0; k < levels_; ++k) {
        if (k + 1 < levels_ && hints_[k] > hints_[k + 1])
            return false;
        const size_t first = bits::find_clear_run(used_, nunits_, 0, size_t{1} << k, 1, 0);
        if (first != bits::npos && first < hints_[k])
            return false;
    }
    return true;
}

size_t RunMap::find(size_t n, size_t align_units) {
    if (align_units == 0)
        align_units = 1;
    ARENA_ASSERT(n != 0 && (align_units & (align_units - 1)) == 0);
    const size_t phase = static_cast<size_t>(base_ >> shift_) & (align_units - 1);
    if (recent_n_ >= n && ((recent_first_ + phase) & (align_units - 1)) == 0 &&
        bits::find_set(used_, recent_first_, recent_first_ + n) == recent_first_ + n)
        return recent_first_;
    const unsigned k = 63u - static_cast<unsigned>(__builtin_clzll(n)); // 2^k <= n < 2^(k+1)
    const size_t s = bits::find_clear_run(used_, nunits_, hints_[k], n, align_units, phase);
    if (align_units == 1) {
        // Nothing of n units or more starts below s (or anywhere, when s is npos): so nothing of
        // 2^(k+1) or more does either, nor 2^k when n is a power of two. Hints are ordered, so
        // the ones to raise are the levels from there up to the first at or above `floor`.
        const size_t floor = s == bits::npos ? nunits_ : s;
        for (unsigned j = (n & (n - 1)) == 0 ? k : k + 1; j < levels_ && hints_[j] < floor; ++j)
            hints_[j] = floor;
    }
    ARENA_ASSERT(s == bits::npos || range_free(s, n));
    return s;
}

bool RunMap::claim(size_t first, size_t n) {
    // A run past the map or one already used would be handed out twice: checked always, as
    // the words are read anyway.
    ARENA_CHECK(n != 0 && first <= nunits_ && n <= nunits_ - first);
    // One pass over the run's words for all three bitmaps. A word wholly dirty (a run reused
    // as a whole, the common case) is counted without a popcount.
    size_t dirty = 0;
    bits::for_words(first, n, [&](size_t wi, uint64_t m, size_t nbits) {
        ARENA_CHECK((used_[wi] & m) == 0);
        used_[wi] |= m;
        // Used before clean: a fork child must never see a unit free and clean (read as zero)
        // that is dirty (see repair; release fences are free on x86-64).
        std::atomic_thread_fence(std::memory_order_release);
        const uint64_t d = dirty_[wi] & m;
        if (d != 0) {
            dirty += d == m ? nbits : static_cast<size_t>(__builtin_popcountll(d));
            dirty_[wi] &= ~m;
            young_[wi] &= ~m;
        }
    });
    dirty_units_ -= dirty;
    used_units_ += n;
    if (first + n > top_)
        top_ = first + n;
    if (first == hints_[0]) {
        // The lowest free unit was taken: the next one is a bound for every level. The scan
        // for it is bounded (kClaimScan): above a long used stretch it would walk every word of
        // it on each claim of a run that is freed and taken again, the large-block pattern
        // (256 KiB blocks among 12,800 live ones, as in bench_seed: 460 of the 1,250
        // instructions of a free + malloc; 200 with the bound). Where it stops, no unit below
        // is free: that is a bound too, and a search that needs more moves it further.
        const size_t scan_end =
            nunits_ - (first + n) > kClaimScan ? first + n + kClaimScan : nunits_;
        const size_t next = bits::find_clear(used_, first + n, scan_end);
        for (unsigned j = 0; j < levels_ && hints_[j] < next; ++j)
            hints_[j] = next;
    }
    // No free run starts inside a used range: hints that point into it move past it. They are
    // the consecutive levels from the first whose hint is at or above `first`.
    const size_t* lo = std::lower_bound(hints_, hints_ + levels_, first);
    for (unsigned j = static_cast<unsigned>(lo - hints_); j < levels_ && hints_[j] < first + n; ++j)
        hints_[j] = first + n;
    if (first <= recent_first_ && recent_first_ < first + n) { // took the front of the recent run
        const size_t end = recent_first_ + recent_n_;
        recent_first_ = first + n;
        recent_n_ = end > recent_first_ ? end - recent_first_ : 0;
    }
    ARENA_ASSERT(counts_fit());
    return dirty == 0;
}

void RunMap::release(size_t first, size_t n) {
    // A run not wholly used (released twice, or never claimed) would be handed out twice.
    ARENA_CHECK(n != 0 && first <= nunits_ && n <= nunits_ - first && first + n <= top_);
    bits::for_words(first, n, [&](size_t wi, uint64_t m, size_t) {
        ARENA_CHECK((used_[wi] & m) == m);
        dirty_[wi] |= m;
        young_[wi] |= m;
        // Dirty before free, as in claim.
        std::atomic_thread_fence(std::memory_order_release);
        used_[wi] &= ~m;
    });
    used_units_ -= n;
    dirty_units_ += n;
    recent_first_ = first;
    recent_n_ = n;
    lower_hints(first, n);
    ARENA_ASSERT(counts_fit());
}

void RunMap::lower_hints(size_t first, size_t n) {
    // The released run joins the free runs around it into one, [start, end): hints go down to
    // its start, but only for the runs it can hold. A level 2^j longer than the merged run gets
    // no new run and keeps its hint. The run above is measured only up to kMergeScan units;
    // beyond that every level is lowered, as if the run were endless.
    const size_t below = bits::find_set_before(used_, first);
    const size_t start = below == bits::npos ? 0 : below + 1;
    const size_t limit = nunits_ - (first + n) > kMergeScan ? first + n + kMergeScan : nunits_;
    const size_t end = bits::find_set(used_, first + n, limit);
    unsigned j = levels_;
    if (end < limit) { // the merged run is end - start units long: levels 0 .. log2 of that
        const unsigned top = 64u - static_cast<unsigned>(__builtin_clzll(end - start));
        j = top < levels_ ? top : levels_;
    }
    // Hints are ordered: lower them from the highest level concerned until one is low enough.
    while (j-- > 0 && hints_[j] > start)
        hints_[j] = start;
}

void RunMap::truncate(size_t nunits, Storage unused[3]) {
    for (unsigned i = 0; i < 3; ++i)
        unused[i] = Storage{nullptr, 0};
    if (nunits % 64 != 0 || nunits < top_ || nunits >= nunits_)
        return; // not a cut the map can make: nothing changes
    const size_t old_words = bits::words_for(nunits_);
    const size_t words = bits::words_for(nunits);
    // Every search is bounded by nunits_, hints and the recent run lie below it, and claim and
    // release update levels_ hints: once these are stored no word of the tails is read. They
    // are stored so that each prefix is a valid map (a fork may copy any, pages.cc): hints come
    // down first (a lower hint is always a valid one; they stay ordered), then the levels, then
    // the bound. The recent run lies below top_ and needs nothing.
    for (size_t& h : hints_)
        if (h > nunits)
            h = nunits;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    levels_ = 64u - static_cast<unsigned>(__builtin_clzll(nunits | 1));
    std::atomic_signal_fence(std::memory_order_seq_cst);
    nunits_ = nunits;
    ARENA_ASSERT(check());
    const uintptr_t ps = os::page_size();
    uint64_t* const maps[3] = {used_, dirty_, young_};
    for (unsigned i = 0; i < 3; ++i) {
        // The tail [words, old_words) of each bitmap, shrunk to the OS pages it fills alone.
        const uintptr_t lo = (reinterpret_cast<uintptr_t>(maps[i] + words) + ps - 1) & ~(ps - 1);
        const uintptr_t hi = reinterpret_cast<uintptr_t>(maps[i] + old_words) & ~(ps - 1);
        if (hi > lo)
            unused[i] = Storage{reinterpret_cast<void*>(lo), hi - lo};
    }
}

bool RunMap::range_free(size_t first, size_t n) const {
    if (first >= nunits_ || n > nunits_ - first)
        return false;
    return bits::find_set(used_, first, first + n) == first + n;
}

size_t RunMap::purge_run(size_t first, size_t n) {
    // Purging a unit in use would zero a live block: checked always (next to an madvise).
    ARENA_CHECK(range_free(first, n));
    const size_t ps = os::page_size();
    const size_t unit = size_t{1} << shift_;
    const uintptr_t lo = address(first);
    const uintptr_t hi = address(first + n);
    const size_t got = os::purge(reinterpret_cast<void*>(lo), hi - lo);
    if (got == 0)
        return 0;
    // Only units lying wholly inside purged OS pages became clean (units can be smaller than a
    // page in a native arena).
    const uintptr_t plo = (lo + ps - 1) & ~(ps - 1);
    const uintptr_t phi = hi & ~(ps - 1);
    const size_t ufirst = (plo - base_ + unit - 1) >> shift_;
    const size_t uend = (phi - base_) >> shift_;
    if (uend > ufirst) {
        dirty_units_ -= bits::count(dirty_, ufirst, uend - ufirst);
        bits::clear_range(dirty_, ufirst, uend - ufirst);
        bits::clear_range(young_, ufirst, uend - ufirst);
    }
    return got;
}

void RunMap::repair() {
    // `top` first, from the highest used or dirty unit (top_ is only ever raised, and a claim
    // cut short may not have raised it yet): the words above it are all clear and are neither
    // read again nor written, so that bitmap pages never touched stay untouched.
    size_t top = top_;
    const size_t last_used = bits::find_set_before(used_, nunits_);
    const size_t last_dirty = bits::find_set_before(dirty_, nunits_);
    if (last_used != bits::npos && last_used + 1 > top)
        top = last_used + 1;
    if (last_dirty != bits::npos && last_dirty + 1 > top)
        top = last_dirty + 1;
    top_ = top;
    size_t used = 0, dirty = 0;
    for (size_t wi = 0; wi < bits::words_for(top); ++wi) {
        const uint64_t d = dirty_[wi] & ~used_[wi];
        if (d != dirty_[wi])
            dirty_[wi] = d;
        if ((young_[wi] & ~d) != 0)
            young_[wi] &= d;
        used += static_cast<size_t>(__builtin_popcountll(used_[wi]));
        dirty += static_cast<size_t>(__builtin_popcountll(d));
    }
    if (bits::words_for(top) == bits::words_for(nunits_) && (nunits_ & 63) != 0)
        used -= 64 - (nunits_ & 63); // the padding past the last unit is marked used (init)
    used_units_ = used;
    dirty_units_ = dirty;
    busy_units_ = 0; // a run still busy (taken by a purger the child does not have) is used
    for (size_t& h : hints_)
        h = 0; // "no free run of any length starts below 0" is always true
    recent_first_ = 0;
    recent_n_ = 0;
    ARENA_ASSERT(check());
}

size_t RunMap::purge(bool everything) {
    size_t released = 0;
    bits::for_each_run(dirty_, everything ? nullptr : young_, top_,
                       [&](size_t first, size_t n) { released += purge_run(first, n); });
    bits::clear_range(young_, 0, top_);
    ARENA_ASSERT(check());
    return released;
}

size_t RunMap::take_old(size_t from, Span* out, size_t max_spans, size_t max_units,
                        size_t* nspans) {
    *nspans = 0;
    if (from >= top_)
        return top_;
    size_t got = 0, units = 0, next = top_;
    const size_t w0 = from >> 6; // the scan starts at the cursor's word
    bits::for_each_run(dirty_ + w0, young_ + w0, top_ - w0 * 64, [&](size_t first, size_t n) {
        first += w0 * 64;
        if (first + n <= from || next != top_)
            return; // before the cursor, or the batch is full (for_each_run has no early exit)
        if (first < from) {
            n -= from - first;
            first = from;
        }
        if (got == max_spans || units >= max_units) {
            next = first;
            return;
        }
        if (n > max_units - units) {
            n = max_units - units;
            next = first + n;
        }
        ARENA_ASSERT(bits::count(used_, first, n) == 0); // old dirty units are free
        // Used first, then not dirty (see the file comment): a fork in between leaks the run.
        bits::set_range(used_, first, n);
        std::atomic_signal_fence(std::memory_order_seq_cst);
        bits::clear_range(dirty_, first, n);
        dirty_units_ -= n;
        busy_units_ += n;
        out[got++] = Span{first, n};
        units += n;
    });
    *nspans = got;
    ARENA_ASSERT(got <= max_spans && next <= top_ && counts_fit());
    return next;
}

void RunMap::give_back(size_t first, size_t n, bool purged) {
    // Only a busy run (take_old) comes back: used, not dirty, counted in busy_units_.
    ARENA_CHECK(n != 0 && first <= nunits_ && n <= nunits_ - first);
    ARENA_ASSERT(n <= busy_units_ && bits::count(used_, first, n) == n);
    if (!purged) { // still holds data: dirty, and old, so the next tick tries again
        bits::set_range(dirty_, first, n);
        dirty_units_ += n;
    }
    lower_hints(first, n); // before the units are free: a hint too low is harmless
    std::atomic_signal_fence(std::memory_order_seq_cst);
    bits::clear_range(used_, first, n);
    busy_units_ -= n;
    ARENA_ASSERT(counts_fit());
}

void RunMap::end_tick() {
    bits::clear_range(young_, 0, top_);
    ARENA_ASSERT(check());
}

} // namespace arena
