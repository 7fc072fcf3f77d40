// SPDX-License-Identifier: MIT
// A bump allocator over chunks and a free list of slab descriptors, under one lock.
//
// A fork child may find the lock released by its fork handler in the middle of any of these
// critical sections (fork.cc), so every store sequence leaves a usable state at each step (kept
// in order by release fences, which cost nothing on x86-64): a new chunk is installed as "empty"
// (g_end = 0) before the cursor moves into it, so the cursor is never outside [.., g_end); a
// block is handed out only after the cursor moved past it; a descriptor is linked before it
// becomes the head. At worst a chunk's tail or a descriptor is lost to the child.
#include "meta.h"

#include "check.h"
#include "lock.h"
#include "os.h"

#include <atomic>

namespace arena::meta {
namespace {

inline constexpr size_t kChunk = 4 * MiB;

constinit Mutex g_lock;
constinit uintptr_t g_cursor = 0; // next free byte in the current chunk
constinit uintptr_t g_end = 0;    // end of the current chunk; 0 while one is being installed

void* bump(size_t bytes) {
    bytes = (bytes + ARENA_CACHE_LINE - 1) & ~size_t{ARENA_CACHE_LINE - 1};
    if (g_cursor >= g_end || g_end - g_cursor < bytes) {
        const size_t chunk = bytes > kChunk ? (bytes + kChunk - 1) & ~(kChunk - 1) : kChunk;
        void* p = os::reserve(chunk);
        if (p == nullptr)
            return nullptr;
        g_end = 0;
        std::atomic_thread_fence(std::memory_order_release);
        g_cursor = reinterpret_cast<uintptr_t>(p);
        std::atomic_thread_fence(std::memory_order_release);
        g_end = g_cursor + chunk;
    }
    void* p = reinterpret_cast<void*>(g_cursor);
    ARENA_ASSERT((g_cursor & (ARENA_CACHE_LINE - 1)) == 0 && g_end - g_cursor >= bytes);
    g_cursor += bytes;
    return p;
}

/// A free list of descriptors of type T linked through T::*Next, under g_lock. A node is linked
/// before it becomes the head (see the top); one being given back is never the head already.
template <class T, T* T::*Next>
class FreeList {
public:
    T* take_or_bump() {
        if (T* t = head_) {
            head_ = t->*Next;
            return t;
        }
        return static_cast<T*>(bump(sizeof(T)));
    }
    void give(T* t) {
        ARENA_ASSERT(t != nullptr && t != head_);
        t->*Next = head_;
        std::atomic_thread_fence(std::memory_order_release);
        head_ = t;
    }

private:
    T* head_ = nullptr;
};

constinit FreeList<Slab, &Slab::next_free> g_free_slabs;
constinit FreeList<Suspect, &Suspect::next> g_free_suspects;

} // namespace

void* alloc(size_t bytes) {
    LockGuard guard(g_lock);
    return bump(bytes);
}

Slab* slab_alloc() {
    LockGuard guard(g_lock);
    return g_free_slabs.take_or_bump();
}

void slab_free(Slab* s) {
    LockGuard guard(g_lock);
    g_free_slabs.give(s);
}

// A fork in the middle of either leaves the node on the list or taken by a thread the child
// does not have: at worst a node lost, never one handed out twice.
Suspect* suspect_alloc() {
    LockGuard guard(g_lock);
    return g_free_suspects.take_or_bump();
}

void suspect_free(Suspect* d) {
    LockGuard guard(g_lock);
    g_free_suspects.give(d);
}

bool fork_child() {
    g_lock.release_if_orphaned(); // nothing to repair: see the top
    return g_lock.held_by_self();
}

} // namespace arena::meta
