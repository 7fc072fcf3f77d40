// SPDX-License-Identifier: MIT
// Heap profiling: the sampled path, the matching of frees, and the region (profile.h).
#include "profile.h"

#include "arena/profile_page.h"
#include "heap.h"
#include "lock.h"
#include "options.h"
#include "os.h"
#include "pages.h"
#include "report.h"
#include "sampler.h"
#include "stack_capture.h"
#include "stats_file.h"
#include "types.h"

#include <dlfcn.h>
#include <link.h>

#include <cstring>

namespace arena {

namespace prof {

std::atomic<uint64_t> g_live_large{0};

namespace {

constexpr size_t kRegionBytes = sizeof(arena_profile_region);
constexpr size_t kFileBytes = ARENA_PROFILE_OFFSET + kRegionBytes;
constexpr unsigned kProbes = 256; // stack slots tried before a sample goes to slot 0
// Frames captured: the profile's depth plus the allocator's own, which are dropped.
constexpr unsigned kCaptureMax = ARENA_PROFILE_DEPTH + 8;

// ---- Block records: a private open-addressing table (address -> slot, weight) ----------------

struct Record {
    uintptr_t addr; // 0: empty
    uint32_t slot;
    uint32_t large;
    uint64_t bytes;
    uint64_t objects;
};

/// Linear probing with backward-shift deletion: no tombstones, so a table whose samples come and
/// go (most frees of sampled blocks) is never rebuilt, only grown (each rebuild would fault in a
/// fresh mapping: larson x2 paid about 600 page faults a run for it).
struct Records {
    Record* table = nullptr;
    size_t cap = 0;  // a power of two
    size_t used = 0; // records

    size_t home(uintptr_t a) const { return ((a >> 4) * 0x9e3779b97f4a7c15ull) >> 20 & (cap - 1); }

    Record* find(uintptr_t a) {
        if (cap == 0)
            return nullptr;
        for (size_t i = home(a);; i = (i + 1) & (cap - 1)) {
            if (table[i].addr == a)
                return &table[i];
            if (table[i].addr == 0)
                return nullptr;
        }
    }

    /// Room for one more: the table doubles at half full.
    bool reserve() {
        if ((used + 1) * 2 <= cap)
            return true;
        const size_t ncap = cap == 0 ? 4096 : cap * 2;
        auto* nt = static_cast<Record*>(os::reserve(ncap * sizeof(Record)));
        if (nt == nullptr)
            return false;
        Record* old = table;
        const size_t ocap = cap;
        table = nt;
        cap = ncap;
        for (size_t i = 0; i < ocap; ++i)
            if (old[i].addr != 0)
                *slot_for(old[i].addr) = old[i];
        if (old != nullptr)
            os::unreserve(old, ocap * sizeof(Record));
        return true;
    }

    /// The empty entry for a (not present). reserve() first.
    Record* slot_for(uintptr_t a) {
        size_t i = home(a);
        while (table[i].addr != 0)
            i = (i + 1) & (cap - 1);
        return &table[i];
    }

    void insert(const Record& r) {
        *slot_for(r.addr) = r;
        ++used;
    }

    /// Empties entry r, moving back the entries after it that probing would no longer reach.
    void remove(Record* r) {
        size_t hole = static_cast<size_t>(r - table);
        for (size_t i = (hole + 1) & (cap - 1); table[i].addr != 0; i = (i + 1) & (cap - 1)) {
            // Entry i may fill the hole unless its home lies cyclically in (hole, i].
            const size_t h = home(table[i].addr);
            const bool reaches = hole <= i ? (h <= hole || h > i) : (h <= hole && h > i);
            if (reaches) {
                table[hole] = table[i];
                hole = i;
            }
        }
        table[hole].addr = 0;
        --used;
    }
};

// ---- State ------------------------------------------------------------------------------------

constinit Mutex g_lock; // guards everything below but the atomics
constinit arena_profile_region* g_region = nullptr;
constinit void* g_mapping = nullptr;     // what to unmap: the page file from byte 0, or the
constinit size_t g_mapping_bytes = 0;    // region alone when it is private
constinit bool g_shared = false;         // g_region is the page file's
constinit bool g_attach_pending = false; // a fork child's region waits for its own page file
constinit Records g_records;
constinit std::atomic<uint64_t> g_rate{0}; // 0: off
constinit std::atomic<uint64_t> g_epoch{1};
constinit std::atomic<uint64_t> g_samples{0};
constinit std::atomic<uint64_t> g_sampled_bytes{0};
constinit uint64_t g_last_rate = 0; // the last rate in force (the gauge, once off)
constinit sampler::Rng g_rng{0};    // first intervals after set_rate
constinit bool g_rng_seeded = false;
constinit uintptr_t g_self_lo = 0, g_self_hi = 0; // libarena's mapping: frames to drop
constinit ARENA_TLS bool t_inside = false;        // this thread is sampling

/// The region: the page file's when it has one, else private memory (still read by the leak
/// report). Under g_lock.
arena_profile_region* region() {
    if (g_region != nullptr)
        return g_region;
    void* file = stats::page_path()[0] != '\0' ? stats_file::map_extended(kFileBytes) : nullptr;
    if (file != nullptr) {
        g_mapping = file;
        g_mapping_bytes = kFileBytes;
        g_shared = true;
        g_region = reinterpret_cast<arena_profile_region*>(static_cast<char*>(file) +
                                                           ARENA_PROFILE_OFFSET);
    } else {
        // No page file yet (it is made on the first slow path after start-up), or none at all:
        // private memory, moved into the file when there is one (attach_file).
        g_mapping_bytes = (kRegionBytes + os::page_size() - 1) & ~(os::page_size() - 1);
        g_mapping = os::reserve(g_mapping_bytes);
        if (g_mapping == nullptr)
            return nullptr;
        g_region = static_cast<arena_profile_region*>(g_mapping);
        __atomic_store_n(&g_attach_pending, true, __ATOMIC_RELAXED);
    }
    arena_profile_head& h = g_region->head;
    if (h.magic != ARENA_PROFILE_MAGIC) { // new: a fork child's copy keeps its parent's
        h.version = ARENA_PROFILE_VERSION;
        h.header_size = sizeof(arena_profile_head);
        h.size = kRegionBytes;
        h.nstacks = ARENA_PROFILE_STACKS;
        h.depth = ARENA_PROFILE_DEPTH;
        __atomic_store_n(&h.magic, ARENA_PROFILE_MAGIC, __ATOMIC_RELEASE);
    }
    if (g_self_hi == 0) {
        dl_find_object found{};
        if (_dl_find_object(reinterpret_cast<void*>(&sample), &found) == 0) {
            g_self_lo = reinterpret_cast<uintptr_t>(found.dlfo_map_start);
            g_self_hi = reinterpret_cast<uintptr_t>(found.dlfo_map_end);
        }
    }
    return g_region;
}

/// A relaxed add to a region counter (one writer at a time: g_lock; readers copy words).
void add(uint64_t& field, uint64_t v) {
    __atomic_store_n(&field, field + v, __ATOMIC_RELAXED);
}

/// The slot of a stack: found, or filled now; 0 when the table has no room near its hash.
uint32_t slot_of(arena_profile_region* r, const uintptr_t* frames, uint32_t depth) {
    const uint64_t hash = arena_profile_hash(frames, depth);
    uint32_t i = static_cast<uint32_t>(hash % (ARENA_PROFILE_STACKS - 1)) + 1;
    for (unsigned probe = 0; probe < kProbes; ++probe) {
        arena_profile_stack& s = r->stacks[i];
        if (s.depth == 0) {
            memcpy(s.frames, frames, depth * sizeof(uint64_t));
            s.hash = hash;
            __atomic_store_n(&s.depth, depth, __ATOMIC_RELEASE); // last: the slot is whole
            add(r->head.stacks_used, 1);
            return i;
        }
        if (s.hash == hash && s.depth == depth &&
            memcmp(s.frames, frames, depth * sizeof(uint64_t)) == 0)
            return i;
        i = i + 1 < ARENA_PROFILE_STACKS ? i + 1 : 1;
    }
    add(r->head.overflow, 1);
    return 0;
}

/// Pagemap entry `page` of slab s, with or without kSampledTag. Under g_lock, the only writer
/// of the tag; the slab cannot be released meanwhile (a sampled block in it is live).
void set_tag(const Slab* s, size_t page, bool tagged) {
    const uintptr_t e = reinterpret_cast<uintptr_t>(s) | (tagged ? kSampledTag : 0);
    s->region->pagemap[page].store(e, std::memory_order_release);
}

void tag_pages(const Slab* s, bool tagged) {
    for (uint32_t i = 0; i < s->npages; ++i)
        set_tag(s, s->first_page + i, tagged);
}

/// The page where slot idx of s starts: the one free looks the block up by.
size_t page_of_slot(const Slab* s, uint64_t idx) {
    return s->region->page_of(s->base + idx * s->size);
}

/// Retires record `rec`: its stack's free counters. Under g_lock.
void retire(arena_profile_region* r, Record* rec) {
    arena_profile_stack& s = r->stacks[rec->slot];
    add(s.free_bytes, rec->bytes);
    add(s.free_objects, rec->objects);
    add(s.free_samples, 1);
    if (rec->large != 0)
        g_live_large.fetch_sub(1, std::memory_order_relaxed);
    g_records.remove(rec);
}

/// The slab of a record's block, when it is a small block in a tagged slab.
Slab* tagged_slab(uintptr_t a) {
    Region* r = pages::region_of(a);
    if (r == nullptr)
        return nullptr;
    const uintptr_t e = r->pagemap[r->page_of(a)].load(std::memory_order_acquire);
    return (e & kSampledTag) != 0 ? slab_of_entry(e) : nullptr;
}

/// Slab s has one more live sampled block, at slot idx. While at most kSampledSlots are live
/// they are listed, and only the pages where they start are tagged (the frees of other blocks
/// keep the fast path); past that, every page of the slab, until none is live.
void tag_one(Slab* s, uint16_t idx) {
    ++s->sampled;
    if (s->sampled_overflow.load(std::memory_order_relaxed) == 0) {
        for (auto& slot : s->sampled_slot)
            if (slot.load(std::memory_order_relaxed) == kNoSlot) {
                slot.store(idx, std::memory_order_relaxed);
                set_tag(s, page_of_slot(s, idx), true);
                return;
            }
        s->sampled_overflow.store(1, std::memory_order_relaxed);
    }
    tag_pages(s, true);
}

/// The sampled block at slot idx of s was freed (or its record retired).
void untag_one(Slab* s, int64_t idx) {
    if (s == nullptr || s->sampled == 0 || idx < 0)
        return;
    for (auto& slot : s->sampled_slot)
        if (slot.load(std::memory_order_relaxed) == idx)
            slot.store(kNoSlot, std::memory_order_relaxed);
    if (--s->sampled == 0) {
        s->sampled_overflow.store(0, std::memory_order_relaxed);
        tag_pages(s, false);
        return;
    }
    if (s->sampled_overflow.load(std::memory_order_relaxed) != 0)
        return;
    // Its page keeps the tag while another listed block starts in it.
    const size_t page = page_of_slot(s, static_cast<uint64_t>(idx));
    for (const auto& slot : s->sampled_slot) {
        const uint16_t other = slot.load(std::memory_order_relaxed);
        if (other != kNoSlot && page_of_slot(s, other) == page)
            return;
    }
    set_tag(s, page, false);
}

/// Whether the block at a in tagged slab s may be a sampled one: listed, or the list overflowed.
/// Without the lock: a block's slot is listed before the malloc that returns it returns, and
/// only its own free unlists it.
bool maybe_sampled(const Slab* s, uintptr_t a) {
    if (s->sampled_overflow.load(std::memory_order_relaxed) != 0)
        return true;
    const int64_t idx = heap::slot_index(s, a);
    for (const auto& slot : s->sampled_slot)
        if (idx >= 0 && slot.load(std::memory_order_relaxed) == idx)
            return true;
    return false;
}

/// Records the sample (a, n bytes, its stack) under g_lock.
void record(uintptr_t a, size_t n, uint64_t rate, const uintptr_t* frames, uint32_t depth) {
    LockGuard guard(g_lock);
    arena_profile_region* r = region();
    if (r == nullptr || !g_records.reserve()) {
        if (r != nullptr)
            add(r->head.dropped, 1);
        return;
    }
    if (Record* stale = g_records.find(a)) { // its free was not matched (profile.h)
        if (Slab* s = stale->large == 0 ? tagged_slab(a) : nullptr)
            untag_one(s, heap::slot_index(s, a));
        retire(r, stale);
    }
    Region* reg = pages::region_of(a);
    const uintptr_t e = reg->pagemap[reg->page_of(a)].load(std::memory_order_acquire);
    const bool large = (e & kLargeTag) != 0;
    const uint32_t slot = slot_of(r, frames, depth);
    const uint64_t bytes = sampler::weight(n, rate);
    const uint64_t objects =
        n == 0 ? ARENA_PROFILE_OBJECT_SCALE
               : sampler::round_nonnegative(static_cast<double>(bytes) *
                                            ARENA_PROFILE_OBJECT_SCALE / static_cast<double>(n));
    g_records.insert(Record{a, slot, large ? 1u : 0u, bytes, objects});
    arena_profile_stack& s = r->stacks[slot];
    add(s.alloc_bytes, bytes);
    add(s.alloc_objects, objects);
    add(s.alloc_samples, 1);
    add(r->head.samples, 1);
    add(r->head.sampled_bytes, n);
    g_samples.fetch_add(1, std::memory_order_relaxed);
    g_sampled_bytes.fetch_add(n, std::memory_order_relaxed);
    if (large) {
        g_live_large.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    Slab* sl = slab_of_entry(e);
    tag_one(sl, static_cast<uint16_t>(heap::slot_index(sl, a)));
}

/// The frees' side: retires the record of a, if there is one.
void match_free(uintptr_t a, Slab* s) {
    if (t_inside) { // a signal handler's free while this thread samples: not matched
        if (g_region != nullptr)
            __atomic_fetch_add(&g_region->head.unmatched, 1, __ATOMIC_RELAXED);
        return;
    }
    t_inside = true;
    {
        LockGuard guard(g_lock);
        if (Record* rec = g_records.find(a)) {
            retire(g_region, rec);
            if (s != nullptr)
                untag_one(s, heap::slot_index(s, a));
        }
    }
    t_inside = false;
}

void reset_countdown(Heap* h, uint64_t rate) {
    sampler::Rng rng(h->prof_rng);
    const int64_t left = rate == 0 ? kOff : sampler::next_interval(rng, rate) - 1;
    h->prof_rng = rng.state;
    h->prof_left.store(left, std::memory_order_relaxed);
}

} // namespace

void init() {
    const int64_t on = option(Opt::PROFILE);
    if (on != 0)
        set_rate(static_cast<uint64_t>(option(Opt::PROFILE_RATE)));
}

void* sample(Heap* h, void* p, size_t n, Api) {
    const uint64_t rate = g_rate.load(std::memory_order_acquire);
    reset_countdown(h, rate);
    if (rate == 0 || p == nullptr)
        return p;
    if (t_inside) { // re-entered: a signal handler, or the unwinder's own allocation
        if (g_region != nullptr)
            __atomic_fetch_add(&g_region->head.dropped, 1, __ATOMIC_RELAXED);
        return p;
    }
    t_inside = true;
    uintptr_t frames[kCaptureMax];
    const unsigned got = unwind::capture(frames, kCaptureMax, 0);
    unsigned first = 0; // the allocator's own frames are not the caller's
    while (first < got && frames[first] - g_self_lo < g_self_hi - g_self_lo)
        ++first;
    const unsigned depth = got - first < ARENA_PROFILE_DEPTH ? got - first : ARENA_PROFILE_DEPTH;
    record(reinterpret_cast<uintptr_t>(p), n, rate, frames + first, depth);
    t_inside = false;
    return p;
}

void free_small(Slab* s, uintptr_t a) {
    if (maybe_sampled(s, a))
        match_free(a, s);
}

void free_large(uintptr_t a) {
    match_free(a, nullptr);
}

void refresh(Heap* h) {
    const uint64_t epoch = g_epoch.load(std::memory_order_acquire);
    if (h->prof_epoch == epoch)
        return;
    h->prof_epoch = epoch;
    if (h->prof_rng == 0) // a sequence of its own
        h->prof_rng = heap::g_free_key ^ (uint64_t{h->id} * 0x9e3779b97f4a7c15ull);
    reset_countdown(h, g_rate.load(std::memory_order_relaxed));
}

void set_rate(uint64_t rate) {
    if (rate > ARENA_PROFILE_MAX_RATE)
        return;
    {
        LockGuard guard(g_lock);
        // Off when it was never on: nothing to make.
        arena_profile_region* r = rate != 0 || g_region != nullptr ? region() : nullptr;
        const bool was_on = g_rate.load(std::memory_order_relaxed) != 0;
        if (rate != 0)
            g_last_rate = rate;
        g_rate.store(rate, std::memory_order_release); // after region(): g_self_lo, g_self_hi
        if (r != nullptr) {
            if (rate != 0)
                __atomic_store_n(&r->head.rate, rate, __ATOMIC_RELAXED);
            if (rate != 0 && !was_on) {
                __atomic_store_n(&r->head.started_unix_ns, os::unix_ns(), __ATOMIC_RELAXED);
                __atomic_store_n(&r->head.stopped_unix_ns, uint64_t{0}, __ATOMIC_RELAXED);
            } else if (rate == 0 && was_on) {
                __atomic_store_n(&r->head.stopped_unix_ns, os::unix_ns(), __ATOMIC_RELAXED);
            }
            __atomic_store_n(&r->head.flags, rate != 0 ? ARENA_PROFILE_ON : 0u, __ATOMIC_RELEASE);
        }
        g_epoch.fetch_add(1, std::memory_order_release);
        // Every heap's countdown starts again now, with an interval of its own; an owner's write
        // racing with this store is repaired by refresh on its next refill.
        if (!g_rng_seeded) {
            g_rng = sampler::Rng(heap::g_free_key);
            g_rng_seeded = true;
        }
        for (Heap* h = heap::all_heaps(); h != nullptr; h = h->next_all)
            h->prof_left.store(rate == 0 ? kOff : sampler::next_interval(g_rng, rate) - 1,
                               std::memory_order_relaxed);
    }
}

Totals totals() {
    return Totals{g_rate.load(std::memory_order_relaxed) != 0, g_last_rate,
                  g_samples.load(std::memory_order_relaxed),
                  g_sampled_bytes.load(std::memory_order_relaxed)};
}

void fork_child() {
    g_lock.release_if_orphaned();
    if (g_region == nullptr || !g_shared)
        return;
    // The parent's file: never written by the child again. A private copy in its place, and
    // the child's own page file's region later (attach_child), when the child has one.
    if (!os::make_private(g_mapping, g_mapping_bytes)) {
        // No memory for the copy: the profile starts again, empty.
        memset(g_mapping, 0, g_mapping_bytes);
        g_records = Records{};
        g_live_large.store(0, std::memory_order_relaxed);
    }
    g_shared = false;
    __atomic_store_n(&g_attach_pending, true, __ATOMIC_RELAXED);
}

bool attach_pending() {
    return __atomic_load_n(&g_attach_pending, __ATOMIC_RELAXED) && stats::page_path()[0] != '\0';
}

void attach_file() {
    LockGuard guard(g_lock);
    if (!g_attach_pending || g_region == nullptr)
        return;
    g_attach_pending = false;
    void* file = stats_file::map_extended(kFileBytes);
    if (file == nullptr)
        return; // stays private: the leak report still has it
    auto* mine =
        reinterpret_cast<arena_profile_region*>(static_cast<char*>(file) + ARENA_PROFILE_OFFSET);
    memcpy(&mine->head.version, &g_region->head.version, kRegionBytes - sizeof mine->head.magic);
    __atomic_store_n(&mine->head.magic, ARENA_PROFILE_MAGIC, __ATOMIC_RELEASE);
    os::unmap(g_mapping, g_mapping_bytes);
    g_mapping = file;
    g_mapping_bytes = kFileBytes;
    g_region = mine;
    g_shared = true;
}

void report_leaks() {
    if (option(Opt::PROFILE_LEAKS) == 0 || g_region == nullptr)
        return;
    const arena_profile_region* r = g_region;
    // The 20 sites with the most live bytes, largest first: a selection, no allocation.
    constexpr unsigned kTop = 20;
    uint32_t top[kTop];
    unsigned ntop = 0;
    uint64_t live_total = 0, sites = 0;
    for (uint32_t i = 0; i < ARENA_PROFILE_STACKS; ++i) {
        const arena_profile_stack& s = r->stacks[i];
        const uint64_t live = s.alloc_bytes - s.free_bytes;
        if (s.alloc_samples == s.free_samples)
            continue;
        live_total += live;
        ++sites;
        unsigned at = ntop < kTop ? ntop++ : kTop;
        while (at > 0 &&
               r->stacks[top[at - 1]].alloc_bytes - r->stacks[top[at - 1]].free_bytes < live) {
            if (at < kTop)
                top[at] = top[at - 1];
            --at;
        }
        if (at < kTop)
            top[at] = i;
    }
    Msg()
        .str("arena: leak report (ARENA_PROFILE_LEAKS, sampled at ")
        .u64(r->head.rate)
        .str(" bytes): ")
        .bytes(live_total)
        .str(" still live at exit from ")
        .u64(sites)
        .str(" call sites")
        .nl()
        .emit();
    for (unsigned k = 0; k < ntop; ++k) {
        const arena_profile_stack& s = r->stacks[top[k]];
        Msg m;
        m.str("arena: leak: ")
            .bytes(s.alloc_bytes - s.free_bytes)
            .str(" in ")
            .u64((s.alloc_objects - s.free_objects + ARENA_PROFILE_OBJECT_SCALE / 2) /
                 ARENA_PROFILE_OBJECT_SCALE)
            .str(" blocks (")
            .u64(s.alloc_samples - s.free_samples)
            .str(" samples), allocated at");
        if (s.depth == 0)
            m.str(" (stacks the table had no room for)");
        m.nl().emit();
        for (uint32_t f = 0; f < s.depth && f < ARENA_PROFILE_DEPTH; ++f) {
            Msg line;
            line.str("    #").u64(f).str(" ").hex(s.frames[f]);
            // Names from the dynamic symbol tables only (arena-prof reads debug information);
            // the object and the offset in it always, for addr2line.
            Dl_info info{};
            if (dladdr(reinterpret_cast<void*>(s.frames[f] - 1), &info) != 0) {
                if (info.dli_sname != nullptr)
                    line.str(" ")
                        .str(info.dli_sname)
                        .str("+")
                        .hex(s.frames[f] - reinterpret_cast<uintptr_t>(info.dli_saddr));
                if (info.dli_fname != nullptr)
                    line.str(" (")
                        .str(info.dli_fname)
                        .str("+")
                        .hex(s.frames[f] - reinterpret_cast<uintptr_t>(info.dli_fbase))
                        .str(")");
            }
            line.nl().emit();
        }
    }
}

} // namespace prof
} // namespace arena
