// SPDX-License-Identifier: MIT
// Memory for the allocator's own metadata: heaps, slab descriptors, stat shards. It comes from
// separate MAP_NORESERVE chunks, never from the regions, and is never unmapped: a descriptor that
// was freed stays readable, which the remote-free protocol relies on (a late remote freer may
// still look at a released slab's `queued` word; see heap.cc).
#pragma once

#include "types.h"

#include <cstddef>

namespace arena::meta {

/// Zeroed, 64-byte aligned, never freed. Returns nullptr when the address space is exhausted.
void* alloc(size_t bytes);

/// Slab descriptors: a free list over alloc(). Returned descriptors keep their old contents
/// (`queued` in particular) until the caller re-initialises them.
Slab* slab_alloc();
void slab_free(Slab* s);

/// Nodes of deferred suspected double frees (confirm.cc): a free list over alloc(). Null when
/// the address space is exhausted.
Suspect* suspect_alloc();
void suspect_free(Suspect* d);

void fork_prepare();
void fork_parent();
void fork_child();

} // namespace arena::meta
