// SPDX-License-Identifier: MIT
// The stats page writer (see stats.h and include/arena/stats_page.h for the protocol): the
// page's head, the gauges under their seqlock, the control area, and a new page after fork.
// The file itself (directories, creation, removal) is stats_file.cc's.
//
// ---- After fork --------------------------------------------------------------------------------
// The child inherits the parent's page as a MAP_SHARED mapping: every count it made there would
// be the parent's. Its fork handler (fork_child) puts a page of its own *at the same address*
// (mremap), so nothing that points into the page changes: heaps' shards, and the registers of
// code a signal handler interrupted in the middle of a count (the fork came from that handler;
// that code finishes when it returns, and its store lands in the child's page). The new page is
// a file made from the parent's contents, as at start-up; when the forking thread holds an
// allocator lock (a handler interrupted a critical section: fork.cc), the child only makes a
// private copy in place now, and the file on its first slow path (poll_control, under the
// gauges' lock: counts other threads of the child make during that copy may be lost). The
// gauges' seqlock is left odd by a writer the child does not have (made even here) or by an
// interrupted writer of this thread (left odd: it finishes the update and makes it even).
#include "stats.h"

#include "heap.h"
#include "lock.h"
#include "meta.h"
#include "options.h"
#include "os.h"
#include "pages.h"
#include "profile.h"
#include "report.h"
#include "stats_file.h"

#include <cstring>

namespace arena {
namespace stats {
namespace {

constexpr size_t kPageBytes = sizeof(arena_stats_page);
// Gauges are published at most every 10 ms, checked on every 16th slow path: so a burst of
// allocation that ends in idleness leaves the page close to where the burst ended (with a 100 ms
// limit, a program that allocated its memory in its first 50 ms showed it as never there).
constexpr uint64_t kPublishEveryNs = 10'000'000;
constexpr unsigned kPublishCheckEvery = 16; // slow paths per clock read
// Resident bytes (mincore over the regions' used extent) every second, and sooner when
// committed bytes moved by more than an eighth since the last sample: at most every 10 ms, and
// no sooner than 100 times the last sample took, so that sampling a large heap costs at most
// about 1% of the time. What a sample took is the sampling thread's CPU time: in wall time, a
// preemption in the middle of one (a loaded machine) held back the next for seconds, and a
// burst of allocation that then went idle kept the resident bytes of its first milliseconds.
constexpr uint64_t kResidentEveryNs = 1'000'000'000;
constexpr uint64_t kResidentCostFactor = 100;

constinit arena_stats_page* g_page = nullptr;
constinit bool g_file_backed = false;
constinit Mutex g_global_lock; // one seqlock writer at a time
// When publish_global last ran: written under g_global_lock, read by every poll_control without
// it, so atomic (relaxed: it only paces publishing).
constinit std::atomic<uint64_t> g_last_publish_ns{0};
// The last resident sample: when, how long it took, and committed bytes then. Read by any
// thread before it decides to sample, written under g_global_lock.
constinit std::atomic<uint64_t> g_resident_ns{0};
constinit std::atomic<uint64_t> g_resident_cost_ns{0};
constinit std::atomic<uint64_t> g_resident_committed{0};
constinit std::atomic<int64_t> g_live{0};
constinit std::atomic<uint64_t> g_peak{0};
constinit std::atomic<uint64_t> g_trims{0};

StatShard* shard(unsigned i) {
    return reinterpret_cast<StatShard*>(&g_page->shards[i]);
}

/// The program's arguments, as the library constructor received them (null until then).
constinit int g_argc = 0;
constinit char** g_argv = nullptr;
/// The pid namespace and a first look for dead pages are for later than start-up (stats_file.h).
constinit std::atomic<bool> g_later_pending{false};

/// The arguments joined by spaces into out[cap], truncated; "" when they are not known yet.
void join_args(char* out, size_t cap) {
    size_t n = 0;
    for (int i = 0; i < g_argc && g_argv != nullptr && g_argv[i] != nullptr; ++i) {
        if (i > 0 && n + 1 < cap)
            out[n++] = ' ';
        for (const char* c = g_argv[i]; *c != '\0' && n + 1 < cap; ++c)
            out[n++] = *c;
    }
    out[n] = '\0';
}

/// Shards in use: shard 0 and one per heap made so far (kept across fork).
size_t shards_in_use() {
    const size_t used = size_t{heap::created()} + 1;
    return used < ARENA_STATS_SHARDS ? used : ARENA_STATS_SHARDS;
}

/// The layout part of the head: what every page, file or private, needs for snapshots.
void fill_layout(arena_stats_head& h) {
    h.magic = ARENA_STATS_MAGIC;
    h.version = ARENA_STATS_VERSION;
    h.header_size = sizeof(arena_stats_head);
    h.size = kPageBytes;
    h.pid = os::getpid();
    h.nclasses = kNumClasses;
    h.nshards = ARENA_STATS_SHARDS;
    h.nevents = ARENA_EV_COUNT;
    h.ngauges = ARENA_G_COUNT;
    h.page_size = static_cast<uint32_t>(kPageSize);
    for (unsigned c = 0; c < kNumClasses; ++c)
        h.class_size[c] = kClasses[c].size;
    h.shards_used = static_cast<uint32_t>(shards_in_use());
    h.global.gauges[ARENA_G_purge_delay_ms] = static_cast<uint64_t>(option(Opt::PURGE_DELAY_MS));
}

/// The identity part: who the process is, for readers to check the page against /proc. None of
/// it reads /proc (stats_file.h says why): the start time is the boot clock now, which is never
/// earlier than the process's start; pid_ns comes later (poll_control).
void fill_identity(arena_stats_head& h, const stats_file::Identity& who, bool fork_child) {
    h.start_time = os::boot_ticks();
    h.created_unix_ns = os::unix_ns();
    h.uid = who.uid;
    h.exec_entry = who.exec_entry;
    h.exec_random = who.exec_random;
    h.pid_ns = 0;
    os::thread_name(h.comm);
    if (!fork_child) // a fork child keeps its parent's command line (copied with the head)
        join_args(h.cmdline, sizeof h.cmdline);
}

/// Copies the gauges of `from` (a fork child starts from its parent's), seqlock word included
/// (see "After fork" at the top).
void copy_gauges(arena_stats_head& to, const arena_stats_head& from) {
    memcpy(&to.global, &from.global, sizeof to.global);
}

/// stats_file::Content::fill_head: the whole head of a new file page, its gauges from the
/// parent's page after fork (`context`, or null).
void fill_file_head(arena_stats_head* h, const stats_file::Identity& who, const void* context) {
    const auto* parent = static_cast<const arena_stats_page*>(context);
    if (parent != nullptr) { // its shards are Content::shards
        copy_gauges(*h, parent->head);
        memcpy(h->cmdline, parent->head.cmdline, sizeof h->cmdline);
    }
    fill_layout(*h);
    fill_identity(*h, who, parent != nullptr);
    h->flags = ARENA_STATS_READY;
}

/// Anonymous memory with the page layout: counters without a file.
arena_stats_page* create_private_page() {
    auto* p = static_cast<arena_stats_page*>(meta::alloc(kPageBytes));
    if (p == nullptr)
        return nullptr;
    fill_layout(p->head);
    p->head.flags = ARENA_STATS_READY;
    return p;
}

/// The backstop page for the short time before init(): counts must go somewhere.
constinit StatShard g_boot_shard;

/// What start-up leaves for a slow path: the pid namespace in the page, and a few dead pages of
/// this user removed.
void later() {
    if (!g_file_backed || g_page == nullptr)
        return;
    const uint64_t ns = stats_file::pid_namespace();
    __atomic_store_n(&g_page->head.pid_ns, ns, __ATOMIC_RELAXED);
    stats_file::clean_some_later(ns);
}

/// A file page when stats are on and the directory allows it, else null.
arena_stats_page* create_file_page(const arena_stats_page* copy) {
    if (option(Opt::STATS) == 0)
        return nullptr;
    const stats_file::Content content{
        fill_file_head, copy, copy != nullptr ? copy->shards : nullptr,
        copy != nullptr ? shards_in_use() * sizeof(arena_stats_shard) : 0};
    return stats_file::create(option_str(Opt::STATS_DIR), content);
}

/// A fork child's page is still to be made as a file (see "After fork" at the top).
constinit std::atomic<bool> g_child_page_pending{false};
/// The process had a file page at start-up: its fork children want one too.
constinit bool g_file_wanted = false;

/// Puts `p`, a new page of this process, in the place of g_page (same address), which becomes
/// this process's own. False (p unmapped, its file removed) when the kernel refuses.
bool take_place(arena_stats_page* p) {
    if (os::move_mapping(p, g_page, kPageBytes))
        return true;
    os::unmap(p, kPageBytes);
    stats_file::remove();
    return false;
}

/// The deferred part of a fork child's page: the file, from what the private copy holds now.
/// Under the gauges' lock, so that no seqlock update is split between the copy and the page.
void make_child_page() {
    LockGuard guard(g_global_lock);
    arena_stats_page* p = create_file_page(g_page);
    if (p == nullptr || !take_place(p))
        return;
    g_file_backed = true;
    g_later_pending.store(true, std::memory_order_relaxed);
}

/// Writes one gauge of the seqlocked section.
void put(arena_stats_gauge g, uint64_t v) {
    __atomic_store_n(&g_page->head.global.gauges[g], v, __ATOMIC_RELAXED);
}

} // namespace

void init() {
    arena_stats_page* p = create_file_page(nullptr);
    g_file_backed = p != nullptr;
    g_file_wanted = g_file_backed;
    g_later_pending.store(g_file_backed, std::memory_order_relaxed);
    if (p == nullptr)
        p = create_private_page();
    g_page = p; // null only when out of address space: shared_shard() falls back
    publish_global();
}

StatShard& shared_shard() {
    return g_page != nullptr ? *shard(0) : g_boot_shard;
}

StatShard* heap_shard(uint32_t id) {
    if (g_page == nullptr || id >= ARENA_STATS_SHARDS)
        return nullptr;
    // Heaps are made one at a time (under the heaps lock), in id order.
    uint32_t& used = g_page->head.shards_used;
    if (id + 1 > __atomic_load_n(&used, __ATOMIC_RELAXED))
        __atomic_store_n(&used, id + 1, __ATOMIC_RELEASE);
    return shard(id);
}

void snapshot(snapshot::Snapshot* out) {
    if (g_page == nullptr) {
        *out = snapshot::Snapshot{};
        return;
    }
    snapshot::take(snapshot::MemorySource(g_page), out);
}

void note_live(int64_t net, int64_t* published) {
    const int64_t delta = net - *published;
    *published = net;
    const int64_t live = g_live.fetch_add(delta, std::memory_order_relaxed) + delta;
    if (live <= 0)
        return;
    uint64_t peak = g_peak.load(std::memory_order_relaxed);
    while (static_cast<uint64_t>(live) > peak) {
        if (g_peak.compare_exchange_weak(peak, static_cast<uint64_t>(live),
                                         std::memory_order_relaxed)) {
            // The peak only grows: readers see it at once, outside the seqlock.
            if (g_page != nullptr)
                put(ARENA_G_peak_live_bytes, static_cast<uint64_t>(live));
            break;
        }
    }
}

void note_live_change(int64_t delta) {
    g_live.fetch_add(delta, std::memory_order_relaxed);
}

void publish_global() {
    if (g_page == nullptr)
        return;
    const uint64_t now = os::unix_ns();
    // Everything gathered before the seqlock section: pages::totals() takes the pages lock.
    const pages::Totals pt = pages::totals();
    unsigned active = 0, abandoned = 0;
    heap::count_heaps(&active, &abandoned);
    const prof::Totals prof_now = prof::totals();
    const uint64_t committed = pt.used + pt.dirty;
    const uint64_t last = g_resident_ns.load(std::memory_order_relaxed);
    const uint64_t at = g_resident_committed.load(std::memory_order_relaxed);
    const uint64_t since = now - last;
    const uint64_t moved = committed > at ? committed - at : at - committed;
    const bool sample_resident =
        since >= kResidentEveryNs ||
        (moved > at / 8 && since >= kPublishEveryNs &&
         since >= kResidentCostFactor * g_resident_cost_ns.load(std::memory_order_relaxed));
    uint64_t resident = 0;
    uint64_t cost = 0;
    if (sample_resident) {
        const uint64_t cpu = os::thread_cpu_ns();
        resident = pages::resident_bytes();
        cost = os::thread_cpu_ns() - cpu;
    }

    LockGuard guard(g_global_lock);
    uint64_t& seq_word = g_page->head.global.seq;
    const uint64_t seq = __atomic_load_n(&seq_word, __ATOMIC_RELAXED);
    __atomic_store_n(&seq_word, seq + 1, __ATOMIC_RELAXED);
    std::atomic_thread_fence(std::memory_order_release);
    put(ARENA_G_updated_unix_ns, now);
    put(ARENA_G_reserved_bytes, pt.reserved);
    put(ARENA_G_committed_bytes, committed);
    if (sample_resident) {
        put(ARENA_G_resident_bytes, resident);
        put(ARENA_G_resident_unix_ns, now);
        g_resident_ns.store(now, std::memory_order_relaxed);
        g_resident_cost_ns.store(cost, std::memory_order_relaxed);
        g_resident_committed.store(committed, std::memory_order_relaxed);
    }
    put(ARENA_G_purged_bytes, pt.purged);
    put(ARENA_G_purges, pt.purges);
    put(ARENA_G_trims, g_trims.load(std::memory_order_relaxed));
    put(ARENA_G_regions, pt.regions);
    put(ARENA_G_heaps_active, active);
    put(ARENA_G_heaps_abandoned, abandoned);
    put(ARENA_G_peak_live_bytes, g_peak.load(std::memory_order_relaxed)); // also by note_live
    put(ARENA_G_double_frees, heap_error_count(HeapError::DoubleFree));
    put(ARENA_G_invalid_frees, heap_error_count(HeapError::InvalidFree));
    put(ARENA_G_purge_delay_ms, static_cast<uint64_t>(option(Opt::PURGE_DELAY_MS)));
    put(ARENA_G_profiling, prof_now.on ? 1 : 0);
    put(ARENA_G_profile_rate, prof_now.rate);
    put(ARENA_G_profile_samples, prof_now.samples);
    put(ARENA_G_profile_sampled_bytes, prof_now.sampled_bytes);
    __atomic_store_n(&seq_word, seq + 2, __ATOMIC_RELEASE);
    g_last_publish_ns.store(now, std::memory_order_relaxed);
}

uint64_t poll_control() {
    if (g_page == nullptr)
        return 0;
    static constinit ARENA_TLS unsigned calls = 0; // the clock is read every kPublishCheckEvery
    arena_stats_control& c = g_page->head.control;
    bool changed = false;
    if (ARENA_UNLIKELY(g_child_page_pending.load(std::memory_order_relaxed)) &&
        g_child_page_pending.exchange(false, std::memory_order_relaxed)) {
        make_child_page();
        changed = true; // and publish the child's gauges
    }
    // A request is served when its counter differs from what was served (stats_page.h); the
    // value of a purge request is written before its counter, so it is whole once seen.
    const uint64_t purges = __atomic_load_n(&c.purge_requests, __ATOMIC_ACQUIRE);
    if (purges != __atomic_load_n(&c.purges_served, __ATOMIC_RELAXED)) {
        const int64_t delay = __atomic_load_n(&c.purge_delay_ms, __ATOMIC_ACQUIRE);
        const OptionInfo& info = kOptionTable[static_cast<unsigned>(Opt::PURGE_DELAY_MS)];
        if (delay >= info.min && delay <= info.max)
            set_option(Opt::PURGE_DELAY_MS, delay);
        __atomic_store_n(&c.purges_served, purges, __ATOMIC_RELEASE);
        changed = true;
    }
    const uint64_t profiles = __atomic_load_n(&c.profile_requests, __ATOMIC_ACQUIRE);
    if (profiles != __atomic_load_n(&c.profile_served, __ATOMIC_RELAXED)) {
        prof::set_rate(__atomic_load_n(&c.profile_rate, __ATOMIC_ACQUIRE)); // ignores bad rates
        __atomic_store_n(&c.profile_served, profiles, __ATOMIC_RELEASE);
        changed = true;
    }
    if (ARENA_UNLIKELY(prof::attach_pending()))
        prof::attach_file();
    if (changed ||
        (++calls % kPublishCheckEvery == 0 &&
         os::unix_ns() - g_last_publish_ns.load(std::memory_order_relaxed) >= kPublishEveryNs)) {
        publish_global();
        if (ARENA_UNLIKELY(g_later_pending.load(std::memory_order_relaxed)) &&
            g_later_pending.exchange(false, std::memory_order_relaxed))
            later();
    }
    // A trim request is the caller's to serve (heap::maintenance): its counter is the ticket.
    // Read last, so that no register has to keep it across the calls above.
    const uint64_t trims = __atomic_load_n(&c.trim_requests, __ATOMIC_ACQUIRE);
    return trims != __atomic_load_n(&c.trims_served, __ATOMIC_RELAXED) ? trims : 0;
}

void trim_served(uint64_t ticket) {
    __atomic_store_n(&g_page->head.control.trims_served, ticket, __ATOMIC_RELEASE);
    publish_global();
}

void set_args(int argc, char** argv) {
    g_argc = argc;
    g_argv = argv;
    // A page made before the constructor ran (another library's constructor allocated first)
    // has no command line yet: give it one. A reader may copy it half written; it only shows it.
    if (g_file_backed && g_page != nullptr && g_page->head.cmdline[0] == '\0') {
        char line[ARENA_STATS_CMDLINE_LEN];
        join_args(line, sizeof line);
        memcpy(g_page->head.cmdline, line, sizeof line);
    }
}

void count_trim() {
    g_trims.fetch_add(1, std::memory_order_relaxed);
}

const char* page_path() {
    return g_file_backed ? stats_file::path() : "";
}

void fork_child(bool interrupted) {
    arena_stats_page* page = g_page;
    if (page == nullptr)
        return;
    const bool writer_gone = g_global_lock.release_if_orphaned();
    interrupted = interrupted || g_global_lock.held_by_self();
    if (g_file_backed) {
        // Nothing below writes into the page before it is the child's: it is the parent's.
        stats_file::forget(); // the parent's file: never to be removed by the child
        g_file_backed = false;
        arena_stats_page* p = interrupted ? nullptr : create_file_page(page);
        if (p != nullptr && take_place(p)) {
            g_file_backed = true;
        } else {
            // The parent's page must not be written any more: a private copy in its place.
            if (!os::make_private(page, kPageBytes)) { // zeros: the counts start again
                fill_layout(page->head);
                page->head.flags = ARENA_STATS_READY;
            }
        }
    }
    // The file is for later when it was deferred here, or in the parent (which forked before
    // its first slow path made its page, or while a thread that is not here was making it).
    g_child_page_pending.store(g_file_wanted && !g_file_backed, std::memory_order_relaxed);
    // The page is the child's own now.
    __atomic_store_n(&page->head.pid, os::getpid(), __ATOMIC_RELAXED);
    uint64_t& seq = page->head.global.seq;
    if (writer_gone && (seq & 1) != 0)
        ++seq; // its writer is not in the child: the update ends here
    g_later_pending.store(g_file_backed, std::memory_order_relaxed);
    if (interrupted)
        // publish_global takes locks: the next poll_control does it
        g_last_publish_ns.store(0, std::memory_order_relaxed);
    else
        publish_global();
}

void remove_page() {
    if (g_file_backed)
        stats_file::remove();
}

} // namespace stats
} // namespace arena
