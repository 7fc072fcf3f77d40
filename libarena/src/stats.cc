// SPDX-License-Identifier: MIT
// The stats page writer (see stats.h and include/arena/stats_page.h for the protocol).
#include "stats.h"

#include "heap.h"
#include "lock.h"
#include "meta.h"
#include "options.h"
#include "os.h"
#include "pages.h"
#include "report.h"

#include <cstring>

namespace arena {

uint64_t StatTotals::live_bytes() const {
    int64_t live = static_cast<int64_t>(events[k_large_alloc_bytes] - events[k_large_free_bytes]);
    for (unsigned c = 0; c < kNumClasses; ++c)
        live += static_cast<int64_t>(class_alloc[c] - class_free[c]) * kClasses[c].size;
    return live > 0 ? static_cast<uint64_t>(live) : 0;
}

namespace stats {
namespace {

constexpr size_t kPageBytes = sizeof(arena_stats_page);
// Gauges are published at most every 10 ms, checked on every 16th slow path: so a burst of
// allocation that ends in idleness leaves the page close to where the burst ended (with a 100 ms
// limit, a program that allocated its memory in its first 50 ms showed it as never there).
constexpr uint64_t kPublishEveryNs = 10 * 1000 * 1000;
// Resident bytes (mincore over the regions' used extent) every second, and sooner when
// committed bytes moved by more than an eighth since the last sample: at most every 10 ms, and
// no sooner than 100 times the last sample took, so that sampling a large heap costs at most
// about 1% of the time.
constexpr uint64_t kResidentEveryNs = 1000 * 1000 * 1000;
constexpr uint64_t kResidentCostFactor = 100;

constinit arena_stats_page* g_page = nullptr;
constinit bool g_file_backed = false;
constinit int g_fd = -1;
constinit char g_path[512] = "";
constinit Mutex g_global_lock; // one seqlock writer at a time
constinit uint64_t g_last_publish_ns = 0;
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

/// Appends to a fixed buffer; false when it does not fit.
struct PathBuf {
    char buf[512];
    size_t len = 0;
    bool ok = true;
    PathBuf& add(const char* s) {
        while (*s && ok) {
            if (len + 1 >= sizeof buf)
                ok = false;
            else
                buf[len++] = *s++;
        }
        buf[len] = '\0';
        return *this;
    }
    PathBuf& num(uint64_t v) {
        char tmp[24];
        int n = 0;
        do {
            tmp[n++] = static_cast<char>('0' + v % 10);
            v /= 10;
        } while (v != 0);
        char out[24];
        for (int i = 0; i < n; ++i)
            out[i] = tmp[n - 1 - i];
        out[n] = '\0';
        return add(out);
    }
};

/// Field 22 of /proc/self/stat.
uint64_t read_start_time() {
    char buf[1024];
    if (os::read_small_file("/proc/self/stat", buf, sizeof buf) <= 0)
        return 0;
    const char* p = buf;
    for (const char* q = buf; *q; ++q)
        if (*q == ')')
            p = q; // the comm may contain ')': take the last one
    int field = 2;
    for (; *p && field < 22; ++p)
        if (*p == ' ')
            ++field;
    uint64_t v = 0;
    for (; *p >= '0' && *p <= '9'; ++p)
        v = v * 10 + static_cast<uint64_t>(*p - '0');
    return v;
}

/// Everything but the counters: identity of the process and the layout.
void fill_header(arena_stats_page* p) {
    p->magic = ARENA_STATS_MAGIC;
    p->version = ARENA_STATS_VERSION;
    p->header_size = offsetof(arena_stats_page, shards);
    p->size = kPageBytes;
    p->pid = os::getpid();
    p->start_time = read_start_time();
    p->created_unix_ns = os::unix_ns();
    char comm[64];
    if (os::read_small_file("/proc/self/comm", comm, sizeof comm) > 0) {
        size_t i = 0;
        for (; comm[i] && comm[i] != '\n' && i + 1 < ARENA_STATS_COMM_LEN; ++i)
            p->comm[i] = comm[i];
        p->comm[i] = '\0';
    }
    const long n = os::read_small_file("/proc/self/cmdline", p->cmdline, ARENA_STATS_CMDLINE_LEN);
    if (n > 0) { // arguments are NUL-separated: join them with spaces
        for (long i = 0; i < n - 1; ++i)
            if (p->cmdline[i] == '\0')
                p->cmdline[i] = ' ';
        p->cmdline[ARENA_STATS_CMDLINE_LEN - 1] = '\0';
    }
    p->nclasses = kNumClasses;
    p->nshards = ARENA_STATS_SHARDS;
    size_t used = size_t{heap::created()} + 1; // shard 0 and one per heap (kept across fork)
    p->shards_used = static_cast<uint32_t>(used < ARENA_STATS_SHARDS ? used : ARENA_STATS_SHARDS);
    p->nevents = ARENA_EV_COUNT;
    p->page_size = static_cast<uint32_t>(kPageSize);
    for (unsigned c = 0; c < kNumClasses; ++c)
        p->class_size[c] = kClasses[c].size;
    p->control.purge_delay_ms = ARENA_STATS_NO_REQUEST;
    p->global.purge_delay_ms = option(Opt::PURGE_DELAY_MS);
}

void verbose_note(const char* what, const char* path, int err) {
    if (option(Opt::VERBOSE) == 0)
        return;
    Msg m;
    m.str("arena: stats page off: ").str(what).str(" ").str(path).str(" failed (errno ")
        .i64(err).str(")").nl().emit();
}

/// Copies the gauges and the shards in use (shard 0 and one per heap made so far) of `from`:
/// a fork child starts from its parent's counters. Only those shards: the file is sparse, and a
/// child that execs at once should not pay for 256 KiB of zeros.
void copy_counters(arena_stats_page* to, const arena_stats_page* from) {
    memcpy(&to->global, &from->global, sizeof to->global);
    to->global.seq = 0;
    size_t used = size_t{heap::created()} + 1;
    if (used > ARENA_STATS_SHARDS)
        used = ARENA_STATS_SHARDS;
    memcpy(to->shards, from->shards, used * sizeof(arena_stats_shard));
}

/// Makes dir/<pid> under a temporary name, locked, sized and mapped, then renames it into place.
/// `copy` (may be null) provides counters to start from. Null on failure (reported verbosely).
arena_stats_page* create_file_page(const arena_stats_page* copy) {
    const char* dir = option_str(Opt::STATS_DIR);
    if (dir == nullptr || *dir == '\0')
        return nullptr;
    if (const int err = os::make_dir(dir, 01777); err != 0) {
        verbose_note("creating directory", dir, -err);
        return nullptr;
    }
    const int pid = os::getpid();
    PathBuf tmp;
    tmp.add(dir).add("/.").num(static_cast<uint64_t>(pid)).add(".tmp");
    PathBuf final_path;
    final_path.add(dir).add("/").num(static_cast<uint64_t>(pid));
    if (!tmp.ok || !final_path.ok)
        return nullptr;
    os::unlink_file(tmp.buf); // a leftover of a crashed process with our PID
    const int fd = os::create_file(tmp.buf, 0644);
    if (fd < 0) {
        verbose_note("creating", tmp.buf, -fd);
        return nullptr;
    }
    int err = os::lock_shared(fd);
    if (err == 0)
        err = os::resize_file(fd, kPageBytes);
    void* mem = err == 0 ? os::map_file(fd, kPageBytes) : nullptr;
    if (mem == nullptr) {
        verbose_note("preparing", tmp.buf, err != 0 ? -err : 12);
        os::close_fd(fd);
        os::unlink_file(tmp.buf);
        return nullptr;
    }
    auto* p = static_cast<arena_stats_page*>(mem);
    if (copy != nullptr)
        copy_counters(p, copy);
    fill_header(p);
    __atomic_store_n(&p->flags, ARENA_STATS_READY, __ATOMIC_RELEASE);
    if ((err = os::rename_file(tmp.buf, final_path.buf)) != 0) {
        verbose_note("renaming", tmp.buf, -err);
        os::unmap(mem, kPageBytes);
        os::close_fd(fd);
        os::unlink_file(tmp.buf);
        return nullptr;
    }
    g_fd = fd;
    memcpy(g_path, final_path.buf, final_path.len + 1);
    return p;
}

/// Anonymous memory with the page layout: counters without a file.
arena_stats_page* create_private_page(const arena_stats_page* copy) {
    auto* p = static_cast<arena_stats_page*>(meta::alloc(kPageBytes));
    if (p == nullptr)
        return nullptr;
    if (copy != nullptr)
        copy_counters(p, copy);
    fill_header(p);
    p->flags = ARENA_STATS_READY;
    return p;
}

/// Writes one field of the seqlocked section.
void put(uint64_t& field, uint64_t v) {
    __atomic_store_n(&field, v, __ATOMIC_RELAXED);
}

/// The backstop page for the short time before init(): counts must go somewhere.
constinit StatShard g_boot_shard;

} // namespace

void init() {
    arena_stats_page* p = nullptr;
    if (option(Opt::STATS) != 0)
        p = create_file_page(nullptr);
    g_file_backed = p != nullptr;
    if (p == nullptr)
        p = create_private_page(nullptr);
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
    if (id + 1 > __atomic_load_n(&g_page->shards_used, __ATOMIC_RELAXED))
        __atomic_store_n(&g_page->shards_used, id + 1, __ATOMIC_RELEASE);
    return shard(id);
}

StatTotals totals() {
    StatTotals t;
    if (g_page == nullptr)
        return t;
    // Frees before allocations (see the page protocol): live is never negative.
    for (unsigned i = 0; i < ARENA_STATS_SHARDS; ++i) {
        const StatShard& s = *shard(i);
        t.events[k_large_frees] += s.events[k_large_frees].load(std::memory_order_relaxed);
        t.events[k_large_free_bytes] += s.events[k_large_free_bytes].load(std::memory_order_relaxed);
        for (unsigned c = 0; c < kNumClasses; ++c)
            t.class_free[c] += s.class_free[c].load(std::memory_order_relaxed);
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    for (unsigned i = 0; i < ARENA_STATS_SHARDS; ++i) {
        const StatShard& s = *shard(i);
        for (unsigned e = 0; e < kCounterCount; ++e)
            if (e != k_large_frees && e != k_large_free_bytes)
                t.events[e] += s.events[e].load(std::memory_order_relaxed);
        for (unsigned c = 0; c < kNumClasses; ++c)
            t.class_alloc[c] += s.class_alloc[c].load(std::memory_order_relaxed);
    }
    return t;
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
                __atomic_store_n(&g_page->global.peak_live_bytes, static_cast<uint64_t>(live),
                                 __ATOMIC_RELAXED);
            break;
        }
    }
}

void publish_global() {
    if (g_page == nullptr)
        return;
    const uint64_t now = os::unix_ns();
    // Everything gathered before the seqlock section: pages::totals() takes the pages lock.
    const pages::Totals pt = pages::totals();
    unsigned active = 0, abandoned = 0;
    heap::count_heaps(&active, &abandoned);
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
        resident = pages::resident_bytes();
        const uint64_t done = os::unix_ns();
        cost = done > now ? done - now : 0; // the wall clock may step back
    }

    LockGuard guard(g_global_lock);
    arena_stats_global& g = g_page->global;
    const uint64_t seq = __atomic_load_n(&g.seq, __ATOMIC_RELAXED);
    __atomic_store_n(&g.seq, seq + 1, __ATOMIC_RELAXED);
    std::atomic_thread_fence(std::memory_order_release);
    put(g.updated_unix_ns, now);
    put(g.reserved_bytes, pt.reserved);
    put(g.committed_bytes, committed);
    if (sample_resident) {
        put(g.resident_bytes, resident);
        put(g.resident_unix_ns, now);
        g_resident_ns.store(now, std::memory_order_relaxed);
        g_resident_cost_ns.store(cost, std::memory_order_relaxed);
        g_resident_committed.store(committed, std::memory_order_relaxed);
    }
    put(g.purged_bytes, pt.purged);
    put(g.purges, pt.purges);
    put(g.trims, g_trims.load(std::memory_order_relaxed));
    put(g.regions, pt.regions);
    put(g.heaps_active, active);
    put(g.heaps_abandoned, abandoned);
    put(g.peak_live_bytes, g_peak.load(std::memory_order_relaxed)); // also written by note_live
    put(g.double_frees, heap_error_count(HeapError::DoubleFree));
    put(g.invalid_frees, heap_error_count(HeapError::InvalidFree));
    __atomic_store_n(&g.purge_delay_ms, option(Opt::PURGE_DELAY_MS), __ATOMIC_RELAXED);
    __atomic_store_n(&g.seq, seq + 2, __ATOMIC_RELEASE);
    g_last_publish_ns = now;
}

void poll_control() {
    if (g_page == nullptr)
        return;
    static constinit ARENA_TLS unsigned calls = 0; // the clock is read every 16th call
    arena_stats_control& c = g_page->control;
    bool changed = false;
    const uint64_t want = __atomic_load_n(&c.trim_requests, __ATOMIC_ACQUIRE);
    if (want != __atomic_load_n(&c.trims_served, __ATOMIC_RELAXED)) {
        heap::trim(); // counts the trim
        pages::trim();
        __atomic_store_n(&c.trims_served, want, __ATOMIC_RELEASE);
        changed = true;
    }
    const int64_t delay = __atomic_load_n(&c.purge_delay_ms, __ATOMIC_ACQUIRE);
    if (delay != ARENA_STATS_NO_REQUEST) {
        const OptionInfo& info = kOptionTable[static_cast<unsigned>(Opt::PURGE_DELAY_MS)];
        if (delay >= info.min && delay <= info.max)
            set_option(Opt::PURGE_DELAY_MS, delay);
        __atomic_store_n(&c.purge_delay_ms, ARENA_STATS_NO_REQUEST, __ATOMIC_RELEASE);
        changed = true;
    }
    if (changed || ((++calls & 15) == 0 && os::unix_ns() - g_last_publish_ns >= kPublishEveryNs))
        publish_global();
}

void count_trim() {
    g_trims.fetch_add(1, std::memory_order_relaxed);
}

const char* page_path() {
    return g_file_backed ? g_path : "";
}

void fork_child() {
    arena_stats_page* old = g_page;
    if (old == nullptr)
        return;
    const bool was_file = g_file_backed;
    const int old_fd = g_fd;
    g_global_lock.reset_after_fork();
    arena_stats_page* p = was_file ? create_file_page(old) : nullptr;
    g_file_backed = p != nullptr;
    if (p == nullptr)
        p = create_private_page(old);
    if (p == nullptr)
        return; // keep counting into the old page: better than losing the counters
    heap::rebase_stats(reinterpret_cast<char*>(old->shards), reinterpret_cast<char*>(p->shards),
                       sizeof old->shards);
    g_page = p;
    if (was_file) {
        // Drop the parent's page: its mapping, and our copy of its descriptor (the parent's
        // lock must not outlive the parent because a child still holds the file open).
        os::unmap(old, kPageBytes);
        os::close_fd(old_fd);
        if (!g_file_backed)
            g_fd = -1;
    }
    publish_global();
}

void remove_page() {
    if (g_file_backed && g_path[0] != '\0')
        os::unlink_file(g_path);
}

} // namespace stats
} // namespace arena
