// SPDX-License-Identifier: MIT
// Compile-time constants of the allocator, with the reason for each value. Run-time settings
// (ARENA_* environment variables) are in options.h; these are the fixed geometry.
#pragma once

#include <cstddef>
#include <cstdint>

namespace arena {

inline constexpr size_t KiB = 1024;
inline constexpr size_t MiB = 1024 * KiB;
inline constexpr size_t GiB = 1024 * MiB;

/// The allocator's page: the unit of the region's page bitmap and of large blocks. 4 KiB is the
/// x86-64 page; on kernels with bigger pages, purging rounds inward to whole OS pages (os.cc).
inline constexpr unsigned kPageShift = 12;
inline constexpr size_t kPageSize = size_t{1} << kPageShift;

/// Every pointer returned is aligned to this (the C and C++ max_align_t guarantee on x86-64).
inline constexpr size_t kMinAlign = 16;

/// Largest size served from size-class slabs; bigger requests are page runs (large blocks).
inline constexpr size_t kSmallMax = 32 * KiB;

/// A slab has at most this many 64-bit words of slot bitmap (1024 slots). Bounds the slab
/// descriptor to a few cache lines while keeping a 64 KiB slab of 64-byte slots in one piece.
inline constexpr unsigned kSlabMaxWords = 16;
inline constexpr unsigned kSlabMaxSlots = kSlabMaxWords * 64;

/// Default virtual reservation (ARENA_RESERVE). Costs no memory until touched: MAP_NORESERVE,
/// demand paged. The kernel may refuse it (overcommit_memory=2, RLIMIT_AS), so it halves down to
/// kMinRegion before giving up.
inline constexpr size_t kDefaultReserve = 64 * GiB;
inline constexpr size_t kMinRegion = 16 * MiB;
/// The largest ARENA_RESERVE: 64 TiB, half of x86-64's 47-bit user address space.
inline constexpr size_t kMaxReserve = size_t{1} << 46;

/// Region sizes are multiples of this (and of kMinRegion when nothing limits them): sizes under
/// a finite RLIMIT_AS and the cuts of a lowered one (pages.cc: fit_limit) keep whole pagemap
/// pages (512 entries) and whole bitmap words.
inline constexpr size_t kRegionGranule = 2 * MiB;

/// When a region is exhausted another one is reserved; this many can exist. Each new region is
/// at least as large as all earlier ones together, so 64 covers any address space. Under a
/// finite RLIMIT_AS a new region takes a quarter of the room left (budget.h), which shrinks
/// geometrically: some 20 regions reach the last kMinRegion of any limit.
inline constexpr unsigned kMaxRegions = 64;

/// Alignments at or below a page come from size classes; above that from aligned page runs.
inline constexpr size_t kMaxClassAlign = kPageSize;

} // namespace arena
