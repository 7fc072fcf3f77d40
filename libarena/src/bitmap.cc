// SPDX-License-Identifier: MIT
// Word-level bitmap primitives and the RunMap unit allocator (see bitmap.h).
#include "bitmap.h"

#include "os.h"

namespace arena {
namespace bits {
namespace {

/// Mask of bits [lo, hi) within one word, 0 <= lo < hi <= 64.
constexpr uint64_t word_mask(size_t lo, size_t hi) {
    const uint64_t upper = hi == 64 ? ~uint64_t{0} : (uint64_t{1} << hi) - 1;
    return upper & ~((uint64_t{1} << lo) - 1);
}

/// Applies op(word, mask) to every word overlapping [first, first+n).
template <class Op>
void for_range(uint64_t* w, size_t first, size_t n, Op op) {
    if (n == 0)
        return;
    size_t wi = first >> 6;
    const size_t last = first + n; // exclusive
    const size_t last_wi = (last - 1) >> 6;
    if (wi == last_wi) {
        op(w[wi], word_mask(first & 63, ((last - 1) & 63) + 1));
        return;
    }
    op(w[wi], word_mask(first & 63, 64));
    for (++wi; wi < last_wi; ++wi)
        op(w[wi], ~uint64_t{0});
    op(w[last_wi], word_mask(0, ((last - 1) & 63) + 1));
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

size_t find_clear_run(const uint64_t* w, size_t limit, size_t from, size_t n, size_t align,
                      size_t phase) {
    if (n == 0 || n > limit)
        return npos;
    const size_t amask = align - 1;
    size_t pos = from;
    while (pos + n <= limit) {
        size_t s = find_clear(w, pos, limit);
        // Round the candidate up so that (s + phase) is a multiple of align.
        s = ((s + phase + amask) & ~amask) - phase;
        if (s + n > limit || s < pos)
            return npos;
        const size_t used = find_set(w, s, s + n);
        if (used == s + n)
            return s;
        pos = used + 1; // the run [s, used) was too short; continue after the used bit
    }
    return npos;
}

} // namespace bits

void RunMap::init(void* meta, size_t nunits, uintptr_t base, unsigned unit_shift) {
    const size_t words = bits::words_for(nunits);
    used_ = static_cast<uint64_t*>(meta);
    dirty_ = used_ + words;
    young_ = dirty_ + words;
    nunits_ = nunits;
    hint_ = 0;
    top_ = 0;
    used_units_ = 0;
    dirty_units_ = 0;
    base_ = base;
    shift_ = unit_shift;
    // Units past the end of the last word are marked used so that no run can reach them.
    if ((nunits & 63) != 0)
        used_[words - 1] |= ~uint64_t{0} << (nunits & 63);
}

size_t RunMap::find(size_t n, size_t align_units) const {
    if (align_units == 0)
        align_units = 1;
    const size_t phase = static_cast<size_t>(base_ >> shift_) & (align_units - 1);
    return bits::find_clear_run(used_, nunits_, hint_, n, align_units, phase);
}

bool RunMap::claim(size_t first, size_t n) {
    bits::set_range(used_, first, n);
    const size_t dirty = bits::count(dirty_, first, n);
    if (dirty != 0) {
        bits::clear_range(dirty_, first, n);
        bits::clear_range(young_, first, n);
        dirty_units_ -= dirty;
    }
    used_units_ += n;
    if (first + n > top_)
        top_ = first + n;
    if (first == hint_)
        hint_ = bits::find_clear(used_, first + n, nunits_);
    return dirty == 0;
}

void RunMap::release(size_t first, size_t n) {
    bits::clear_range(used_, first, n);
    bits::set_range(dirty_, first, n);
    bits::set_range(young_, first, n);
    used_units_ -= n;
    dirty_units_ += n;
    if (first < hint_)
        hint_ = first;
}

bool RunMap::range_free(size_t first, size_t n) const {
    if (first >= nunits_ || n > nunits_ - first)
        return false;
    return bits::find_set(used_, first, first + n) == first + n;
}

size_t RunMap::purge_run(size_t first, size_t n) {
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

size_t RunMap::purge(bool everything) {
    size_t released = 0;
    bits::for_each_run(dirty_, everything ? nullptr : young_, top_,
                       [&](size_t first, size_t n) { released += purge_run(first, n); });
    bits::clear_range(young_, 0, top_);
    return released;
}

} // namespace arena
