// SPDX-License-Identifier: MIT
// Suspected double frees: the free of a block that carries the free key (types.h, "free key")
// is confirmed before anything is reported or dropped, as glibc confirms its tcache key
// (BZ #23907). Slow paths only: the free fast paths compare one word and come here on a match.
#pragma once

#include "types.h"

#include <cstdint>

namespace arena::heap {

/// Where a block that carries the free key is.
enum class Where {
    Free,    // free: in a remote batch, on its owner's free cache, in its slab's remote bits or
             // bitmap. A free of it is a double free.
    Live,    // in none of them: allocated, and the key is program data. A free of it is valid.
    Unknown, // another thread's structure changed under every look; only the slab's owner can
             // tell (defer_free)
};

/// Looks for slot idx (address a) of slab s everywhere a free block can be, on behalf of the
/// calling thread, whose heap is `self` (the sentinel heap for a thread without one; a drainer
/// passes the abandoned heap it holds). Any thread; takes no lock.
Where where_is(const Heap* self, const Slab* s, uintptr_t a, uint64_t idx);

/// Leaves the free of a (in slab s, counted as a call of api) to the slab's owner, which
/// settles it on its next slow path (settle_suspects). Any thread.
void defer_free(const Slab* s, uintptr_t a, Api api);

/// The frees other threads left to h (Heap::suspects): each is reported as a double free, done,
/// or kept for the next time when a thread's remote batch cannot be read yet. Called by h's
/// owner, or the thread that drains the abandoned h (heap.cc: collect_remote).
void settle_suspects(Heap* h);

/// For block_info (realloc, malloc_usable_size): where_is for the calling thread.
Where where_is_block(const Slab* s, uintptr_t a, uint64_t idx);

} // namespace arena::heap
