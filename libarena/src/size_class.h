// SPDX-License-Identifier: MIT
// Size classes: 16-byte steps up to 128 bytes, then four classes per doubling up to 4 KiB (160,
// 192, 224, 256, 320, ...), eight per doubling up to 16 KiB (4608, 5120, 5632, ...) and four
// again up to 32 KiB: 48 classes in all. Internal waste is under 16 bytes up to 128, under 25%
// up to 4 KiB and above 16 KiB, and under 12.5% in between, where page-sized buffers plus a
// header land (SQLite's page cache asks for 4368 bytes: 17% waste in a class of 5120, 5% in one
// of 4608). Every class is a multiple of 16, so every slot is 16-byte aligned; power-of-two
// classes give power-of-two alignment (used by memalign).
//
// Each class lives in slabs: runs of pages holding at most kSlabMaxSlots slots, sized to at
// least 64 KiB or 8 slots so refills are rare, and to a whole number of slots: no slab has a
// tail, so every offset in a slab belongs to a slot and free() needs no bounds check. The table
// is computed at compile time and checked by static_asserts below.
#pragma once

#include "config.h"

#include <array>
#include <cstddef>
#include <cstdint>

namespace arena {

inline constexpr unsigned kNumClasses = 48;

struct SizeClass {
    uint32_t size;       // slot size in bytes (multiple of 16)
    uint32_t slab_pages; // pages per slab
    uint32_t nslots;     // slots per slab (<= kSlabMaxSlots); nslots * size == slab bytes
    uint64_t recip;      // ceil(2^48 / size); see slot_of
};

/// Division of an offset in a slab by the slot size, and the test that it is exact, with one
/// multiply: for p = offset * recip, offset / size == p >> 48, and offset is a multiple of size
/// exactly when (p mod 2^48) < recip. Holds while (slots + 1) * size^2 < 2^48 and
/// offset * recip < 2^64 (checked below for every class).
inline constexpr unsigned kRecipShift = 48;
inline constexpr uint64_t kRecipMask = (uint64_t{1} << kRecipShift) - 1;

namespace detail {

constexpr uint32_t class_size(unsigned c) {
    if (c < 8)
        return 16 * (c + 1);
    if (c < 28) { // four per doubling: (2^k, 2^(k+1)] for k = 7..11
        const unsigned k = 7 + (c - 8) / 4;
        const unsigned j = (c - 8) % 4 + 1;
        return (uint32_t{1} << k) + j * (uint32_t{1} << (k - 2));
    }
    if (c < 44) { // eight per doubling: k = 12, 13
        const unsigned k = 12 + (c - 28) / 8;
        const unsigned j = (c - 28) % 8 + 1;
        return (uint32_t{1} << k) + j * (uint32_t{1} << (k - 3));
    }
    return (uint32_t{1} << 14) + (c - 43) * (uint32_t{1} << 12); // four: k = 14
}

constexpr size_t gcd(size_t a, size_t b) {
    while (b != 0) {
        const size_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

constexpr SizeClass make_class(unsigned c) {
    const uint32_t size = class_size(c);
    // The smallest run of pages that holds a whole number of slots, then as many of those as
    // reach the target size without passing the slot limit.
    const size_t unit = size / gcd(size, kPageSize);
    const size_t want = size_t{size} * 8 > 64 * KiB ? size_t{size} * 8 : 64 * KiB;
    size_t pages = unit;
    while (pages * kPageSize < want && (pages + unit) * kPageSize / size <= kSlabMaxSlots)
        pages += unit;
    const size_t nslots = pages * kPageSize / size;
    const uint64_t recip = ((uint64_t{1} << kRecipShift) + size - 1) / size;
    return SizeClass{size, static_cast<uint32_t>(pages), static_cast<uint32_t>(nslots), recip};
}

constexpr std::array<SizeClass, kNumClasses> make_classes() {
    std::array<SizeClass, kNumClasses> t{};
    for (unsigned c = 0; c < kNumClasses; ++c)
        t[c] = make_class(c);
    return t;
}

/// Class of every size <= 1024, indexed by (size + 15) / 16.
constexpr std::array<uint8_t, 65> make_small_lookup();

} // namespace detail

inline constexpr std::array<SizeClass, kNumClasses> kClasses = detail::make_classes();

/// Blocks a heap's free cache keeps per class: about 64 KiB of each class, at most 256 and at
/// least 4 blocks. Big enough to absorb a burst of frees that is reallocated right after (the
/// batch phase of request handling); bounded so that a class cannot hoard memory.
constexpr uint32_t cache_cap(unsigned cls) {
    const uint32_t n = static_cast<uint32_t>(64 * KiB / kClasses[cls].size);
    return n > 256 ? 256 : n < 4 ? 4 : n;
}

/// The smallest class that holds n bytes (n <= kSmallMax), by search: for building the lookup
/// tables below at compile time.
constexpr unsigned class_search(size_t n) {
    unsigned c = 0;
    while (kClasses[c].size < n)
        ++c;
    return c;
}

namespace detail {
constexpr std::array<uint8_t, 65> make_small_lookup() {
    std::array<uint8_t, 65> t{};
    for (size_t i = 0; i <= 64; ++i) {
        const size_t n = i * 16;
        t[i] = static_cast<uint8_t>(class_search(n));
    }
    return t;
}
} // namespace detail

inline constexpr std::array<uint8_t, 65> kSmallLookup = detail::make_small_lookup();

/// Class of every size in (1024, kSmallMax], indexed by (size + 127) / 128: above 1 KiB the
/// classes step by 256 bytes or more, and every boundary is a multiple of 128, so each
/// 128-byte bucket lies in one class (checked below). One load, like kSmallLookup.
inline constexpr std::array<uint8_t, kSmallMax / 128 + 1> kMediumLookup = [] {
    std::array<uint8_t, kSmallMax / 128 + 1> t{};
    for (size_t i = 9; i < t.size(); ++i)
        t[i] = static_cast<uint8_t>(class_search(i * 128));
    return t;
}();

/// Size class of a request of n bytes, n <= kSmallMax.
constexpr unsigned class_of(size_t n) {
    if (n <= 1024)
        return kSmallLookup[(n + 15) >> 4];
    return kMediumLookup[(n + 127) >> 7];
}

// ---- Compile-time checks of the table -------------------------------------------------------

constexpr bool classes_are_valid() {
    for (unsigned c = 0; c < kNumClasses; ++c) {
        const SizeClass& k = kClasses[c];
        if (k.size % kMinAlign != 0 || k.nslots == 0 || k.nslots > kSlabMaxSlots)
            return false;
        if (c > 0 && k.size <= kClasses[c - 1].size)
            return false;
        const size_t bytes = size_t{k.slab_pages} * kPageSize;
        if (size_t{k.nslots} * k.size != bytes || k.nslots < 8)
            return false; // a tail, or too few slots per slab
        const uint64_t bound = uint64_t{k.nslots + 1} * k.size * k.size; // < 2^41: no overflow
        if (bound >= (uint64_t{1} << kRecipShift) || bytes > UINT64_MAX / k.recip)
            return false; // the multiply-shift division would not be exact
    }
    return true;
}

constexpr bool lookup_is_exact() {
    for (size_t n = 0; n <= kSmallMax; ++n) {
        const unsigned c = class_of(n);
        if (c >= kNumClasses || kClasses[c].size < n || (c > 0 && kClasses[c - 1].size >= n))
            return false;
    }
    return true;
}

static_assert(classes_are_valid());
static_assert(kClasses[kNumClasses - 1].size == kSmallMax);
static_assert(lookup_is_exact(), "class_of must pick the smallest class that fits");

} // namespace arena
