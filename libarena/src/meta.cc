// SPDX-License-Identifier: MIT
#include "meta.h"

#include "lock.h"
#include "os.h"

namespace arena::meta {
namespace {

inline constexpr size_t kChunk = 4 * MiB;

constinit Mutex g_lock;
constinit uintptr_t g_cursor = 0; // next free byte in the current chunk
constinit uintptr_t g_end = 0;
constinit Slab* g_free_slabs = nullptr;
constinit Suspect* g_free_suspects = nullptr;

void* bump(size_t bytes) {
    bytes = (bytes + ARENA_CACHE_LINE - 1) & ~size_t{ARENA_CACHE_LINE - 1};
    if (g_end - g_cursor < bytes) {
        const size_t chunk = bytes > kChunk ? (bytes + kChunk - 1) & ~(kChunk - 1) : kChunk;
        void* p = os::reserve(chunk);
        if (p == nullptr)
            return nullptr;
        g_cursor = reinterpret_cast<uintptr_t>(p);
        g_end = g_cursor + chunk;
    }
    void* p = reinterpret_cast<void*>(g_cursor);
    g_cursor += bytes;
    return p;
}

} // namespace

void* alloc(size_t bytes) {
    LockGuard guard(g_lock);
    return bump(bytes);
}

Slab* slab_alloc() {
    LockGuard guard(g_lock);
    if (Slab* s = g_free_slabs) {
        g_free_slabs = s->next_free;
        return s;
    }
    return static_cast<Slab*>(bump(sizeof(Slab)));
}

void slab_free(Slab* s) {
    LockGuard guard(g_lock);
    s->next_free = g_free_slabs;
    g_free_slabs = s;
}

// A fork in the middle of either leaves the node on the list or taken by a thread the child
// does not have: at worst a node lost, never one handed out twice.
Suspect* suspect_alloc() {
    LockGuard guard(g_lock);
    if (Suspect* d = g_free_suspects) {
        g_free_suspects = d->next;
        return d;
    }
    return static_cast<Suspect*>(bump(sizeof(Suspect)));
}

void suspect_free(Suspect* d) {
    LockGuard guard(g_lock);
    d->next = g_free_suspects;
    g_free_suspects = d;
}

void fork_prepare() {
    g_lock.lock();
}

void fork_parent() {
    g_lock.unlock();
}

void fork_child() {
    g_lock.reset_after_fork();
}

} // namespace arena::meta
