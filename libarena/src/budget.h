// SPDX-License-Identifier: MIT
// How much address space the allocator may hold ahead of need when the process has a finite
// RLIMIT_AS or RLIMIT_DATA (issue 14).
//
// Both limits count every byte of a reservation, touched or not (RLIMIT_DATA counts private
// writable mappings, which a MAP_NORESERVE region is). A 64 GiB region 0 in a process that
// lowers RLIMIT_AS to 1 GiB leaves it no room for a thread stack, an mmap or a FILE buffer,
// while glibc's malloc, which holds little address space it does not use, lives with the limit.
//
// The rule: under a finite limit, what the allocator holds ahead of need (region space above
// each region's used extent) is at most a quarter (1/kShareDiv) of the room the limit leaves;
// the other three quarters stay for the program. It bounds region 0 at initialisation (a
// process started under `ulimit -v`), every new region (regions grow on demand, each taking up
// to a quarter of the room left, or what the allocation needs, until the kernel refuses: then
// malloc fails with ENOMEM as it does without a limit), and what a region keeps when the limit
// is lowered later (pages.cc: fit_limit). Memory in use is never given back for it.
//
// Without a finite limit (the usual case) nothing here costs more than reading the two limits:
// two prlimit64 calls at initialisation and when a region is made.
#pragma once

#include <cstddef>
#include <cstdint>

namespace arena::budget {

/// The share of the room under a limit that the allocator may hold ahead of need: 1/kShareDiv.
inline constexpr size_t kShareDiv = 4;

/// The soft limits that bound the reservation (os::kNoLimit when unlimited).
struct Limits {
    uint64_t as;   // RLIMIT_AS
    uint64_t data; // RLIMIT_DATA
    bool finite() const;
};

/// True for the limits that count the reservation: RLIMIT_AS and RLIMIT_DATA.
bool bounds_reservation(int resource);

/// The current soft limits of this process.
Limits limits();

/// Bytes the tighter of `lim` leaves beyond what the process maps now (/proc/self/statm: its
/// size for RLIMIT_AS, its data and stack for RLIMIT_DATA), counting the `held` bytes the
/// allocator could give back as room too; 0 when it is used up or the sizes cannot be read.
/// SIZE_MAX when neither limit is finite. Does not allocate.
size_t room(const Limits& lim, size_t held = 0);

/// room() for one limit, given the size `vm` of the kind it counts. Pure: for the unit tests.
size_t room_under(uint64_t limit, size_t vm, size_t held);

/// What the allocator may hold ahead of need when the room left is `room` bytes.
constexpr size_t share(size_t room) {
    return room / kShareDiv;
}

} // namespace arena::budget
