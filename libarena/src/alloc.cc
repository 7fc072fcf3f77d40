// SPDX-License-Identifier: MIT
// Large blocks, the slow side of free, and the malloc-family semantics that are not a single
// fast path: calloc, realloc, the aligned forms, usable size and trim.
#include "alloc.h"

#include "confirm.h"
#include "init.h"
#include "options.h"
#include "os.h"
#include "profile.h"
#include "report.h"
#include "stats.h"

#include <cerrno>
#include <cstring>

namespace arena {

namespace {

constexpr size_t kMaxRequest = PTRDIFF_MAX; // larger requests fail with ENOMEM at once

size_t pages_for(size_t n) {
    return (n + kPageSize - 1) >> kPageShift;
}

uintptr_t large_entry(size_t npages) {
    return (uintptr_t{npages} << kLargeShift) | kLargeTag;
}

/// Frees the large block at page `page` of r whose pagemap entry was `entry`.
void large_free(Region* r, size_t page, uintptr_t entry, uintptr_t a, Api api) {
    uintptr_t expected = entry;
    // Exchange, so that two threads freeing the same block at once find one double free. The
    // entry stays, tagged, while the block waits in the large-block cache (pages.h).
    if ((entry & kCachedTag) != 0 || !r->pagemap[page].compare_exchange_strong(
                                         expected, entry | kCachedTag, std::memory_order_acq_rel)) {
        report_heap_error(HeapError::DoubleFree, reinterpret_cast<void*>(a), api_name(api));
        return;
    }
    if (ARENA_UNLIKELY(prof::g_live_large.load(std::memory_order_relaxed) != 0))
        prof::free_large(a); // before its pages can be handed out again
    const size_t npages = entry >> kLargeShift;
    if (!pages::cache_put(r, page, npages)) {
        r->pagemap[page].store(0, std::memory_order_release);
        pages::free(r, page, npages);
    }
    heap::count_call(api);
    heap::count(k_large_frees);
    heap::count(k_large_free_bytes, npages << kPageShift);
    const uint64_t bytes = npages << kPageShift;
    if (Heap* h = t_heap; h != &g_empty_heap) {
        h->live -= static_cast<int64_t>(bytes);
        heap::note_freed_large(h, bytes);
    } else {
        stats::note_live_change(-static_cast<int64_t>(bytes));
    }
    heap::maintenance();
}

/// free_local with the API known only at run time.
void free_local_as(Heap* h, Slab* s, uintptr_t a, Api api) {
    with_api<Api::Free, Api::Delete, Api::Realloc>(api,
                                                   [&]<Api A>() { heap::free_local<A>(h, s, a); });
}

/// A free of a in slab s (pagemap entry e) on behalf of api, as the fast path does it, after
/// matching it against its heap profile sample when s has any (profile.h).
void free_in_slab(Slab* s, uintptr_t e, uintptr_t a, Api api) {
    if ((e & kSampledTag) != 0)
        prof::free_small(s, a);
    Heap* h = t_heap;
    if (s->heap.load(std::memory_order_relaxed) == h)
        return free_local_as(h, s, a, api);
    return heap::free_remote_as(h, s, a, api);
}

/// A bad pointer inside a region: interior of a live block, or a block already freed.
ARENA_COLD void report_bad_pointer(Region* r, size_t page, uintptr_t a, Api api) {
    const bool live = r->runs.is_used_unlocked(page);
    report_heap_error(live ? HeapError::InvalidFree : HeapError::DoubleFree,
                      reinterpret_cast<void*>(a), api_name(api));
}

ARENA_COLD void note_foreign(uintptr_t a, Api api) {
    heap::count_call(api);
    heap::count(k_foreign_frees);
    if (option(Opt::VERBOSE) != 0) {
        Msg m;
        m.str("arena: ")
            .str(api_name(api))
            .str("() of ")
            .hex(a)
            .str(", which the arena does not own: ignored")
            .nl()
            .emit();
    }
}

} // namespace

// ---- Large blocks ------------------------------------------------------------------------------

void* large::alloc(size_t n, size_t align, bool zero, Api api) {
    if (n > kMaxRequest || !ensure_init())
        return heap::fail_enomem();
    Heap* h = heap::self(); // counts go to this thread's shard, for its live bytes and the peak
    const size_t npages = pages_for(n == 0 ? 1 : n);
    const size_t align_pages = align <= kPageSize ? 1 : align >> kPageShift;
    pages::Run run{};
    if ((align_pages != 1 || !pages::cache_take(npages, &run)) &&
        !pages::alloc(npages, align_pages, &run))
        return heap::fail_enomem();
    run.region->pagemap[run.first].store(large_entry(run.npages), std::memory_order_release);
    void* p = reinterpret_cast<void*>(run.addr);
    if (zero && !run.clean)
        memset(p, 0, n);
    else if (!run.clean)
        // The pages may have held a slab, whose freed slots keep the free key: clear its place
        // at the block's start, so that a realloc of this block into a size class
        // (realloc_move) never copies the key into a live small block (types.h, "free key").
        static_cast<CachedBlock*>(p)->key = 0;
    heap::count_call(api);
    heap::count(k_large_allocs);
    heap::count(k_large_alloc_bytes, run.npages << kPageShift);
    heap::count(k_bytes_requested, n);
    if (h != nullptr) {
        h->live += static_cast<int64_t>(run.npages << kPageShift);
        stats::note_live(heap::live_bytes_cached(h), &h->published_live);
    }
    heap::maintenance();
    if (h != nullptr)
        return heap::sample_check(h, p, n, api);
    return p;
}

// ---- free ---------------------------------------------------------------------------------------

void dealloc_slow(uintptr_t a, Api api) {
    if (a == 0)
        return heap::count_call(api);
    Region* r = pages::region_of(a);
    if (r == nullptr)
        return note_foreign(a, api);
    const size_t page = r->page_of(a);
    const uintptr_t e = r->pagemap[page].load(std::memory_order_acquire);
    // A slab in a region other than region 0 (with a live sampled block or not).
    if (Slab* s = slab_of_entry(e))
        return free_in_slab(s, e, a, api);
    if ((e & kLargeTag) != 0 && (a & (kPageSize - 1)) == 0)
        return large_free(r, page, e, a, api);
    report_bad_pointer(r, page, a, api);
}

void dealloc_sampled(uintptr_t a, uintptr_t e, Api api) {
    free_in_slab(slab_of_entry(e), e, a, api);
}

BlockInfo block_info(const void* p) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    BlockInfo bi{};
    if (a == 0) {
        bi.kind = BlockInfo::Null;
        return bi;
    }
    Region* r = pages::region_of(a);
    if (r == nullptr) {
        bi.kind = BlockInfo::Foreign;
        return bi;
    }
    bi.region = r;
    bi.page = r->page_of(a);
    bi.entry = r->pagemap[bi.page].load(std::memory_order_acquire);
    if (const Slab* s = slab_of_entry(bi.entry)) {
        const int64_t idx = heap::slot_index(s, a);
        if (idx < 0) {
            bi.kind = BlockInfo::Invalid;
            return bi;
        }
        const uint64_t bit = uint64_t{1} << (idx & 63);
        bi.usable = s->size;
        bi.kind = BlockInfo::Small;
        // Free: in the bitmap or freed remotely. Carrying the free key: on a free cache or in a
        // remote batch, or a live block with the key's bytes, which confirm.cc tells apart
        // (types.h, "free key").
        if (((s->free_bits[idx >> 6].load(std::memory_order_relaxed) |
              s->remote_bits[idx >> 6].load(std::memory_order_relaxed)) &
             bit) != 0) {
            bi.kind = BlockInfo::Freed;
        } else if (ARENA_UNLIKELY(reinterpret_cast<const CachedBlock*>(a)->key ==
                                  heap::g_free_key)) {
            switch (heap::where_is_block(s, a, static_cast<uint64_t>(idx))) {
            case heap::Where::Free:
                bi.kind = BlockInfo::Freed;
                break;
            case heap::Where::Unknown:
                bi.unsure = true;
                break;
            case heap::Where::Live:
                break;
            }
        }
        return bi;
    }
    if ((bi.entry & kCachedTag) != 0 && (a & (kPageSize - 1)) == 0) {
        bi.kind = BlockInfo::Freed; // in the large-block cache
        return bi;
    }
    if ((bi.entry & kLargeTag) != 0 && (a & (kPageSize - 1)) == 0) {
        bi.kind = BlockInfo::Large;
        bi.usable = (bi.entry >> kLargeShift) << kPageShift;
        return bi;
    }
    bi.kind = r->runs.is_used_unlocked(bi.page) ? BlockInfo::Invalid : BlockInfo::Freed;
    return bi;
}

namespace libc {

void* calloc(size_t count, size_t size) {
    size_t n = 0;
    if (__builtin_mul_overflow(count, size, &n))
        return heap::fail_enomem();
    if (n > kSmallMax)
        return large::alloc(n, kMinAlign, true, Api::Calloc);
    void* p = heap::alloc_small<Api::Calloc>(t_heap, class_of(n), n);
    if (p != nullptr)
        memset(p, 0, n);
    return p;
}

namespace {

/// realloc of a pointer the arena does not own: copy what is readable, leave the old block.
ARENA_COLD void* realloc_foreign(void* p, size_t n) {
    note_foreign(reinterpret_cast<uintptr_t>(p), Api::Realloc);
    void* q = alloc<Api::Realloc>(n);
    if (q == nullptr)
        return nullptr;
    // Copy page by page while the source stays mapped: its size is unknown.
    const size_t ps = os::page_size();
    size_t done = 0;
    const char* src = static_cast<const char*>(p);
    while (done < n && os::is_mapped(src + done)) {
        const uintptr_t here = reinterpret_cast<uintptr_t>(src + done);
        size_t chunk = ps - (here & (ps - 1));
        if (chunk > n - done)
            chunk = n - done;
        memcpy(static_cast<char*>(q) + done, src + done, chunk);
        done += chunk;
    }
    return q;
}

/// Moves a block to a new one of n bytes, copying `keep` bytes.
void* realloc_move(void* p, size_t n, size_t keep) {
    void* q = alloc<Api::Realloc>(n);
    if (q == nullptr)
        return nullptr;
    memcpy(q, p, keep < n ? keep : n);
    dealloc<Api::Realloc>(p);
    return q;
}

void* realloc_large(void* p, size_t n, const BlockInfo& bi) {
    const size_t old_np = bi.entry >> kLargeShift;
    if (n <= kSmallMax && n <= bi.usable / 2)
        return realloc_move(p, n, n); // much smaller: into a size class
    const size_t new_np = pages_for(n);
    Region* r = bi.region;
    if (new_np == old_np)
        return p;
    if (new_np < old_np) {
        r->pagemap[bi.page].store(large_entry(new_np), std::memory_order_release);
        pages::shrink(r, bi.page, old_np, new_np);
        heap::count(k_large_free_bytes, (old_np - new_np) << kPageShift);
        heap::add_live(-static_cast<int64_t>((old_np - new_np) << kPageShift));
        return p;
    }
    bool clean = false;
    if (pages::try_grow(r, bi.page, old_np, new_np, &clean)) {
        r->pagemap[bi.page].store(large_entry(new_np), std::memory_order_release);
        heap::count(k_large_alloc_bytes, (new_np - old_np) << kPageShift);
        heap::add_live(static_cast<int64_t>((new_np - old_np) << kPageShift));
        return p;
    }
    return realloc_move(p, n, bi.usable);
}

} // namespace

void* realloc(void* p, size_t n) {
    heap::count(k_realloc_calls);
    if (p == nullptr)
        return alloc<Api::Realloc>(n);
    if (n == 0) { // glibc: realloc(p, 0) frees p and returns NULL
        dealloc<Api::Realloc>(p);
        return nullptr;
    }
    if (n > kMaxRequest)
        return heap::fail_enomem();
    const BlockInfo bi = block_info(p);
    switch (bi.kind) {
    case BlockInfo::Small:
        // Stay in place while the new size fits and does not waste more than half the slot.
        if (n <= bi.usable && (n > bi.usable / 2 || bi.usable <= 2 * kMinAlign) && !bi.unsure)
            return p;
        return realloc_move(p, n, bi.usable);
    case BlockInfo::Large:
        return realloc_large(p, n, bi);
    case BlockInfo::Foreign:
        return realloc_foreign(p, n);
    case BlockInfo::Freed:
        report_heap_error(HeapError::DoubleFree, p, "realloc");
        errno = EINVAL;
        return nullptr;
    case BlockInfo::Invalid:
    case BlockInfo::Null:
        break;
    }
    report_heap_error(HeapError::InvalidFree, p, "realloc");
    errno = EINVAL;
    return nullptr;
}

void* reallocarray(void* p, size_t count, size_t size) {
    size_t n = 0;
    if (__builtin_mul_overflow(count, size, &n)) {
        heap::count(k_realloc_calls);
        return heap::fail_enomem();
    }
    return realloc(p, n);
}

namespace {

/// memalign's handling of the alignment argument (glibc 2.36): anything not a power of two is
/// rounded up to one; more than half the address space is EINVAL.
void* memalign_common(size_t align, size_t n) {
    if (align > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return nullptr;
    }
    if ((align & (align - 1)) != 0)
        align = size_t{1} << (64 - __builtin_clzll(align));
    if (n > kMaxRequest)
        return heap::fail_enomem();
    return alloc_aligned<Api::Aligned>(align, n);
}

} // namespace

void* memalign(size_t align, size_t n) {
    return memalign_common(align, n);
}

void* aligned_alloc(size_t align, size_t n) {
    return memalign_common(align, n);
}

int posix_memalign(void** out, size_t align, size_t n) {
    if (align < sizeof(void*) || (align & (align - 1)) != 0 || align % sizeof(void*) != 0)
        return EINVAL; // *out untouched
    const int saved = errno;
    void* p = memalign_common(align, n);
    if (p == nullptr) {
        errno = saved; // posix_memalign reports through its result only
        return ENOMEM;
    }
    *out = p;
    return 0;
}

void* valloc(size_t n) {
    return memalign_common(os::page_size(), n);
}

void* pvalloc(size_t n) {
    const size_t ps = os::page_size();
    if (n > kMaxRequest)
        return heap::fail_enomem();
    const size_t rounded = n == 0 ? ps : (n + ps - 1) & ~(ps - 1);
    return memalign_common(ps, rounded);
}

size_t malloc_usable_size(const void* p) {
    const BlockInfo bi = block_info(p);
    return bi.kind == BlockInfo::Small || bi.kind == BlockInfo::Large ? bi.usable : 0;
}

int malloc_trim(size_t) {
    heap::trim();
    return pages::trim() != 0 ? 1 : 0;
}

} // namespace libc
} // namespace arena
