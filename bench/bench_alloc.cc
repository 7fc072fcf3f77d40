// SPDX-License-Identifier: MIT
// bench_alloc — the allocator suite: one workload per process, chosen from the table at the
// end (small objects, a power-law size mix, cross-thread frees, realloc growth, a larson-like
// server, large blocks, thread churn).
//
// The measured loops call nothing but plain malloc/realloc/free, so the allocator under test is
// whatever the dynamic linker binds: glibc when run bare, or jemalloc, mimalloc, tcmalloc or
// libarena when one is LD_PRELOADed. run_bench.py runs the same binary under each of them.
//
// Every workload is deterministic for a given (workload, threads, ops, seed): the same sizes
// are requested in the same order from every allocator, and the checksum printed at the end
// depends only on that sequence, never on addresses or timing. The driver compares checksums
// across allocators, so an allocator that hands out overlapping or clobbered memory shows up
// as a mismatch (and usually earlier, as a failed cookie check that aborts the run).
//
// Timing covers only the measured loop: threads are created and do their setup (filling the
// working set, sizing vectors) before a start barrier, and tear down after a stop barrier.
// Each worker reads the clock itself right after the start barrier and right before the
// stop barrier; the run's time is from the earliest start to the latest stop. (Reading the
// clock in the main thread instead was wrong by milliseconds: it woke from a blocking barrier
// long after the workers were already running.) The workers are always spawned threads, so
// a 1-thread and a 2-thread run exercise the same code path.
//
// Output: one JSON line on stdout (printed at the end of main); diagnostics go to stderr.

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string_view>
#include <thread>
#include <vector>

#include "proc.h"
#include "random.h"

namespace {

using bench::below;
using bench::SplitMix64;

/// Small-object size mix, skewed towards small as real programs are:
/// 60% in [8, 64], 30% in [65, 128], 10% in [129, 256] bytes.
/// The bucket comes from the high bits of r (via below), the size from the low 32 bits.
inline uint32_t pick_size(uint64_t r) {
    const uint64_t pct = below(r, 100);
    const auto lo = static_cast<uint32_t>(r);
    if (pct < 60) {
        return 8 + lo % 57;
    }
    if (pct < 90) {
        return 65 + lo % 64;
    }
    return 129 + lo % 128;
}

// ---- Touching and checking blocks ----
//
// Each block gets a tag byte at its first and (complemented) at its last byte, so the
// allocator has to hand out real, writable memory of at least the requested size, and an
// allocator that overlaps two live blocks is caught when the first of them is freed. This
// costs two stores and two loads per block — the same for every allocator.

[[noreturn]] void corrupted(const char* workload, const void* p, uint32_t size) {
    std::fprintf(stderr, "bench_alloc: %s: memory corruption in block %p (size %u)\n", workload, p,
                 size);
    std::abort();
}

[[noreturn]] void out_of_memory(uint32_t size) {
    std::fprintf(stderr, "bench_alloc: malloc(%u) returned NULL\n", size);
    std::abort();
}

inline uint8_t tag_for(uint64_t r) {
    return static_cast<uint8_t>(r >> 56);
}

inline unsigned char* alloc_tagged(uint32_t size, uint8_t tag) {
    auto* p = static_cast<unsigned char*>(std::malloc(size));
    if (p == nullptr) {
        out_of_memory(size);
    }
    p[0] = tag;
    p[size - 1] = static_cast<uint8_t>(~tag);
    return p;
}

/// Checks the tags, frees the block and returns a value for the checksum.
inline uint64_t free_tagged(const char* workload, unsigned char* p, uint32_t size, uint8_t tag) {
    if (p[0] != tag || p[size - 1] != static_cast<uint8_t>(~tag)) {
        corrupted(workload, p, size);
    }
    const uint64_t sum = size + p[0];
    std::free(p);
    return sum;
}

// ---- Threads and timing ----

using Clock = std::chrono::steady_clock;

/// Waiting on another thread: spin briefly (it is usually on the other core and about to
/// move), then yield so an oversubscribed machine doesn't burn our timeslice for nothing.
inline void backoff(unsigned& spins) {
    if (++spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else {
        std::this_thread::yield();
    }
}

/// One-shot spinning barrier. Not std::barrier: a thread that blocks in the kernel wakes up
/// late (milliseconds here), and then threads start their measured loops at different times.
class SpinBarrier {
public:
    explicit SpinBarrier(unsigned n) : n_(n) {}
    void arrive_and_wait() {
        arrived_.fetch_add(1, std::memory_order_acq_rel);
        unsigned spins = 0;
        while (arrived_.load(std::memory_order_acquire) < n_) {
            backoff(spins);
        }
    }

private:
    const unsigned n_;
    std::atomic<unsigned> arrived_{0};
};

class SpscRing;

/// State shared by all workers of one run.
struct Shared {
    unsigned threads;
    uint64_t ops_per_thread;
    SpinBarrier start;        // all workers have done their setup; measured loops begin
    SpinBarrier stop;         // all workers have left their measured loops
    SpinBarrier sampled;      // worker 0 has sampled the RSS; teardown (freeing) begins
    SpscRing* rings;          // xthread: rings[t] carries blocks from thread t to its peer;
                              // xthread-mp: rings[t] from producer t (t >= 1) to the consumer (0)
    const char* smaps;        // --smaps: where worker 0 saves /proc/self/smaps after the loop
    uint64_t rss_end_kib = 0; // exact RSS when the measured loops ended (worker 0)

    Shared(unsigned n, uint64_t ops)
        : threads(n), ops_per_thread(ops), start(n), stop(n), sampled(n), rings(nullptr),
          smaps(nullptr) {}
};

/// What each worker reports back. allocs == frees is checked for every workload, so the
/// benchmark's own bookkeeping can't leak or double-count without the run failing.
struct Tally {
    uint64_t ops = 0; // measured operations (what ops/s counts; see each workload)
    uint64_t allocs = 0;
    uint64_t frees = 0;
    uint64_t checksum = 0;
};

struct Worker {
    Shared& shared;
    unsigned id;
    SplitMix64 rng;

    Clock::time_point begin{};
    Clock::time_point end{};

    void begin_measured() {
        shared.start.arrive_and_wait();
        begin = Clock::now();
    }
    /// Every worker has left its measured loop when worker 0 samples the exact RSS (and saves
    /// --smaps), and none frees anything before it has: the sample sees every thread's working
    /// set as the loops left it. (Sampling while the other workers freed theirs read an
    /// allocator that returns memory at once, as glibc does, up to 940 KiB low in small x2.)
    void end_measured() {
        end = Clock::now();
        shared.stop.arrive_and_wait();
        if (id == 0) {
            shared.rss_end_kib = bench::rss_exact_kib();
            if (shared.smaps != nullptr && !bench::save_smaps("bench_alloc", shared.smaps)) {
                std::exit(1);
            }
        }
        shared.sampled.arrive_and_wait();
    }
};

// ---- Workload: small ----
//
// A working set of kSlots live blocks per thread; each op frees a random slot's block and
// mallocs a new one of a random small size in its place. Random replacement keeps the heap
// fragmented in the way a long-running program's is, rather than the perfect LIFO reuse a
// free-right-after-malloc loop would give every allocator for free.

constexpr size_t kSlots = 10'000;

Tally run_small(Worker& w) {
    Tally t;
    std::vector<unsigned char*> ptr(kSlots);
    std::vector<uint32_t> size(kSlots);
    std::vector<uint8_t> tag(kSlots);
    for (size_t i = 0; i < kSlots; ++i) {
        const uint64_t r = w.rng.next();
        size[i] = pick_size(r);
        tag[i] = tag_for(r);
        ptr[i] = alloc_tagged(size[i], tag[i]);
        ++t.allocs;
    }

    w.begin_measured();
    for (uint64_t op = 0; op < w.shared.ops_per_thread; ++op) {
        const uint64_t r = w.rng.next();
        const size_t i = below(r, kSlots);
        t.checksum += free_tagged("small", ptr[i], size[i], tag[i]);
        const uint64_t r2 = w.rng.next();
        size[i] = pick_size(r2);
        tag[i] = tag_for(r2);
        ptr[i] = alloc_tagged(size[i], tag[i]);
    }
    w.end_measured();

    t.ops = w.shared.ops_per_thread;
    t.allocs += w.shared.ops_per_thread;
    t.frees += w.shared.ops_per_thread;
    for (size_t i = 0; i < kSlots; ++i) {
        t.checksum += free_tagged("small", ptr[i], size[i], tag[i]);
        ++t.frees;
    }
    return t;
}

// ---- Workload: small-batch ----
//
// Allocate a batch of kBatch blocks, then free them all; batches alternate between freeing
// in allocation order (FIFO) and reverse order (LIFO). This is the phase behaviour of
// request/response code: build a lot of small objects, then drop them together. FIFO frees
// defeat a pure LIFO free-list cache, LIFO frees reward one; showing both is fairer than
// either. ops = allocations.

constexpr size_t kBatch = 1'000;

Tally run_small_batch(Worker& w) {
    Tally t;
    std::vector<unsigned char*> ptr(kBatch);
    std::vector<uint32_t> size(kBatch);
    std::vector<uint8_t> tag(kBatch);

    w.begin_measured();
    uint64_t left = w.shared.ops_per_thread;
    for (uint64_t batch = 0; left > 0; ++batch) {
        const size_t n = std::min<uint64_t>(left, kBatch);
        for (size_t i = 0; i < n; ++i) {
            const uint64_t r = w.rng.next();
            size[i] = pick_size(r);
            tag[i] = tag_for(r);
            ptr[i] = alloc_tagged(size[i], tag[i]);
        }
        if (batch % 2 == 0) {
            for (size_t i = 0; i < n; ++i) {
                t.checksum += free_tagged("small-batch", ptr[i], size[i], tag[i]);
            }
        } else {
            for (size_t i = n; i-- > 0;) {
                t.checksum += free_tagged("small-batch", ptr[i], size[i], tag[i]);
            }
        }
        left -= n;
    }
    w.end_measured();

    t.ops = t.allocs = t.frees = w.shared.ops_per_thread;
    return t;
}

// ---- Workload: xthread ----
//
// Every free is remote. Threads are paired (0<->1, 2<->3, ...); each thread mallocs blocks,
// writes a cookie, and passes them to its peer through a bounded single-producer /
// single-consumer ring; the peer checks the cookie and frees the block. Every thread is both
// a producer (of its own ring) and a consumer (of its peer's ring), so both directions of
// cross-thread free are exercised at once. ops = allocations.
//
// Blocks move in bursts of kBurst: a thread mallocs kBurst blocks, publishes them, then frees
// everything its peer has published so far. A first version handed blocks over one at a time
// and was bistable: once one ring ran full, the waiting producer polled the consumer's index
// on every attempt, the cache-line ping-pong slowed the consumer further, and the same run
// took anywhere from 0.16 s to 1.0 s with glibc. Publishing indices once per burst keeps the
// ring's own cost small and steady, so what varies between allocators is their remote-free
// path, which is what this workload is for.

constexpr uint64_t kBurst = 32;

struct Item {
    unsigned char* p;
    uint32_t size;
};

/// Bounded lock-free SPSC ring. Each side works on a private copy of its index and publishes
/// it (a release store to a line the other side reads) only once per burst, or when it has
/// to wait; each side also caches the other's index and reloads it (an acquire load) only
/// when its cached view says the ring is full or empty. Producer and consumer state live on
/// separate cache lines.
class SpscRing {
public:
    static constexpr uint64_t kCapacity = 1024; // power of two; bounds the blocks in flight
    static_assert((kCapacity & (kCapacity - 1)) == 0);
    static_assert(kCapacity >= 4 * kBurst, "room for a few bursts in flight");

    // -- producer side --

    /// Stores the item without publishing it; false if the ring is full.
    bool try_push(Item item) {
        if (p_tail_ - p_cached_head_ == kCapacity) {
            p_cached_head_ = head_.load(std::memory_order_acquire);
            if (p_tail_ - p_cached_head_ == kCapacity) {
                return false;
            }
        }
        items_[p_tail_ & (kCapacity - 1)] = item;
        ++p_tail_;
        return true;
    }

    /// Makes every stored item visible to the consumer.
    void publish() { tail_.store(p_tail_, std::memory_order_release); }

    /// No more pushes will follow. Publishes first, so a consumer that sees closed() and then
    /// finds the ring empty has seen every item.
    void close() {
        publish();
        done_.store(true, std::memory_order_release);
    }

    // -- consumer side --

    bool try_pop(Item& item) {
        if (c_head_ == c_cached_tail_) {
            // Looks empty: hand the freed slots back before asking for more, so a producer
            // waiting for room can't wait on us while we wait on it.
            head_.store(c_head_, std::memory_order_release);
            c_cached_tail_ = tail_.load(std::memory_order_acquire);
            if (c_head_ == c_cached_tail_) {
                return false;
            }
        }
        item = items_[c_head_ & (kCapacity - 1)];
        ++c_head_;
        if (c_head_ % kBurst == 0) {
            head_.store(c_head_, std::memory_order_release);
        }
        return true;
    }

    bool closed() const { return done_.load(std::memory_order_acquire); }

private:
    alignas(64) std::atomic<uint64_t> tail_{0}; // published by the producer
    alignas(64) std::atomic<uint64_t> head_{0}; // published by the consumer
    alignas(64) std::atomic<bool> done_{false};
    alignas(64) uint64_t p_tail_ = 0; // producer only: next slot to fill
    uint64_t p_cached_head_ = 0;      // producer only: last head_ seen
    alignas(64) uint64_t c_head_ = 0; // consumer only: next slot to read
    uint64_t c_cached_tail_ = 0;      // consumer only: last tail_ seen
    alignas(64) Item items_[kCapacity];
};

/// The cookie a producer writes into the first 8 bytes of its n-th block. The consumer
/// recomputes it (the ring is FIFO, so it knows n), which catches lost, duplicated,
/// reordered or overwritten blocks.
inline uint64_t cookie(unsigned producer, uint64_t n) {
    return (static_cast<uint64_t>(producer) << 48) ^ (n * 0x9E3779B97F4A7C15ull) ^ 0xC0FFEE;
}

/// Producer w's n-th block: a random small size, the cookie in its first 8 bytes, and the
/// cookie's last byte repeated in its last byte (Inbox::free_one checks both).
inline Item make_cookied(Worker& w, uint64_t n) {
    const uint32_t size = pick_size(w.rng.next());
    auto* p = static_cast<unsigned char*>(std::malloc(size));
    if (p == nullptr) {
        out_of_memory(size);
    }
    const uint64_t c = cookie(w.id, n);
    std::memcpy(p, &c, sizeof c); // size >= 8 always
    p[size - 1] = p[7];           // for an 8-byte block this is the cookie's own byte
    return Item{p, size};
}

/// The receiving half of a thread: checks and frees blocks from the peer's ring.
struct Inbox {
    SpscRing& ring;
    unsigned peer;
    Tally& tally;
    uint64_t received = 0;

    /// Pops, checks and frees one block; false if none is waiting.
    bool free_one() {
        Item item;
        if (!ring.try_pop(item)) {
            return false;
        }
        uint64_t c;
        std::memcpy(&c, item.p, sizeof c);
        if (c != cookie(peer, received) || item.p[item.size - 1] != item.p[7]) {
            corrupted("xthread", item.p, item.size);
        }
        tally.checksum += item.size + (c >> 56);
        std::free(item.p);
        ++received;
        ++tally.frees;
        return true;
    }

    /// Frees everything the peer has published; true if there was anything.
    bool free_all() {
        bool any = false;
        while (free_one()) {
            any = true;
        }
        return any;
    }
};

Tally run_xthread(Worker& w) {
    Tally t;
    const unsigned peer = w.id ^ 1u;
    SpscRing& out = w.shared.rings[w.id];
    Inbox inbox{w.shared.rings[peer], peer, t};

    w.begin_measured();
    for (uint64_t n = 0; n < w.shared.ops_per_thread; ++n) {
        const Item item = make_cookied(w, n);
        ++t.allocs;
        // Ring full (the peer was descheduled, or is slower): keep freeing the peer's blocks
        // while we wait, so two full rings can never deadlock.
        unsigned spins = 0;
        while (!out.try_push(item)) {
            out.publish();
            if (inbox.free_all()) {
                spins = 0;
            } else {
                backoff(spins);
            }
        }
        if ((n + 1) % kBurst == 0) {
            out.publish();
            inbox.free_all();
        }
    }
    out.close();
    // Drain: the peer may still be producing. Stop only once it has closed its ring and the
    // ring is empty (checked in that order, so no block published before close() is missed).
    unsigned spins = 0;
    for (;;) {
        if (inbox.free_all()) {
            spins = 0;
        } else if (inbox.ring.closed() && !inbox.free_one()) {
            break;
        } else {
            backoff(spins);
        }
    }
    w.end_measured();

    if (inbox.received != w.shared.ops_per_thread) {
        std::fprintf(stderr,
                     "bench_alloc: xthread: thread %u freed %" PRIu64 " of %" PRIu64
                     " blocks from its peer\n",
                     w.id, inbox.received, w.shared.ops_per_thread);
        std::abort();
    }
    t.ops = w.shared.ops_per_thread;
    return t;
}

// ---- Workload: xthread-mp ----
//
// Many producers, one consumer: thread 0 only frees, threads 1..N-1 only allocate, each into
// its own SPSC ring to thread 0. Every free is remote, and the consumer frees into N-1
// different owners' memory in an interleaved order. ops = allocations (the consumer's tally
// counts none). With more threads than CPUs nothing is pinned and waiting threads yield.

Tally run_xthread_mp(Worker& w) {
    Tally t;
    const unsigned n = w.shared.threads;
    if (w.id != 0) {
        SpscRing& out = w.shared.rings[w.id];
        w.begin_measured();
        for (uint64_t i = 0; i < w.shared.ops_per_thread; ++i) {
            const Item item = make_cookied(w, i);
            unsigned spins = 0;
            while (!out.try_push(item)) {
                out.publish();
                backoff(spins);
            }
            if ((i + 1) % kBurst == 0) {
                out.publish();
            }
        }
        out.close();
        w.end_measured();
        t.ops = t.allocs = w.shared.ops_per_thread;
        return t;
    }

    std::vector<Inbox> inboxes;
    std::vector<bool> done(n, false);
    for (unsigned p = 1; p < n; ++p) {
        inboxes.push_back(Inbox{w.shared.rings[p], p, t});
    }
    w.begin_measured();
    unsigned open = n - 1;
    unsigned spins = 0;
    while (open > 0) {
        bool any = false;
        for (unsigned p = 1; p < n; ++p) {
            Inbox& in = inboxes[p - 1];
            if (done[p]) {
                continue;
            }
            if (in.free_all()) {
                any = true;
            } else if (in.ring.closed() && !in.free_one()) {
                done[p] = true;
                --open;
            }
        }
        if (any) {
            spins = 0;
        } else {
            backoff(spins);
        }
    }
    w.end_measured();
    for (const Inbox& in : inboxes) {
        if (in.received != w.shared.ops_per_thread) {
            std::fprintf(stderr,
                         "bench_alloc: xthread-mp: consumer freed %" PRIu64 " of %" PRIu64
                         " blocks from producer %u\n",
                         in.received, w.shared.ops_per_thread, in.peer);
            std::abort();
        }
    }
    return t;
}

// ---- Slot arrays (powerlaw, larson, large) ----

/// A working set of tagged blocks: slot i holds ptr[i] of size[i] bytes tagged tag[i].
struct Slots {
    std::vector<unsigned char*> ptr;
    std::vector<uint32_t> size;
    std::vector<uint8_t> tag;

    explicit Slots(size_t n) : ptr(n), size(n), tag(n) {}
    size_t count() const { return ptr.size(); }

    void fill(size_t i, uint32_t bytes, uint8_t t, Tally& tally) {
        size[i] = bytes;
        tag[i] = t;
        ptr[i] = alloc_tagged(bytes, t);
        ++tally.allocs;
    }
    void release(const char* workload, size_t i, Tally& tally) {
        tally.checksum += free_tagged(workload, ptr[i], size[i], tag[i]);
        ++tally.frees;
    }
    void release_all(const char* workload, Tally& tally) {
        for (size_t i = 0; i < count(); ++i) {
            release(workload, i, tally);
        }
    }
};

// ---- Workload: powerlaw ----
//
// Random replacement in a working set of kPowerSlots blocks whose sizes follow a power law
// over 8 B .. 1 MiB: P(size > s) = (8 / s)^0.6. So 71% of requests are at most 64 B, 88% at
// most 256 B, 97.6% at most 4 KiB, 0.7% above 32 KiB and 0.09% hit the 1 MiB cap (mean about
// 2 KiB, so ~4 MiB live per thread). Small objects dominate the count and rare big ones the
// bytes, as in most programs; the big ones cross every allocator's small/large boundary and
// glibc's mmap threshold. Sizes come from a 65,536-entry inverse-CDF table built before the
// measured loop, so drawing one costs the same load for every allocator.

constexpr size_t kPowerSlots = 2'000;
constexpr size_t kPowerTable = 65'536;
constexpr double kPowerAlpha = 0.6;
constexpr double kPowerMin = 8;
constexpr double kPowerMax = 1 << 20;

std::vector<uint32_t> powerlaw_table() {
    std::vector<uint32_t> t(kPowerTable);
    for (size_t i = 0; i < kPowerTable; ++i) {
        const double u = (static_cast<double>(i) + 0.5) / kPowerTable; // P(size > s) = u
        const double s = kPowerMin * std::pow(u, -1.0 / kPowerAlpha);
        t[i] = static_cast<uint32_t>(std::min(s, kPowerMax));
    }
    return t;
}

Tally run_powerlaw(Worker& w) {
    Tally t;
    const std::vector<uint32_t> table = powerlaw_table();
    auto pick = [&](uint64_t r) { return table[(r >> 16) & (kPowerTable - 1)]; };
    Slots s(kPowerSlots);
    for (size_t i = 0; i < s.count(); ++i) {
        const uint64_t r = w.rng.next();
        s.fill(i, pick(r), tag_for(r), t);
    }

    w.begin_measured();
    for (uint64_t op = 0; op < w.shared.ops_per_thread; ++op) {
        const size_t i = below(w.rng.next(), kPowerSlots);
        s.release("powerlaw", i, t);
        const uint64_t r = w.rng.next();
        s.fill(i, pick(r), tag_for(r), t);
    }
    w.end_measured();

    t.ops = w.shared.ops_per_thread;
    s.release_all("powerlaw", t);
    return t;
}

// ---- Workload: realloc ----
//
// kReallocBufs buffers per thread grow by realloc, the way strings and vectors do: each op
// picks a buffer and either appends 1-64 bytes (string-like) or grows it by half (vector-like),
// 50/50. A buffer starts at 16 bytes with a target drawn log-uniformly from 1 KiB to 1 MiB;
// once it reaches the target it is freed and started again. So the sizes sweep through every
// small class and well into large blocks, where growing in place (or mremap) beats a copy.
// Each buffer keeps a cookie in its first 8 bytes and a tag in its last byte, checked before
// every realloc: a realloc that loses data aborts the run. ops = realloc calls (plus the rare
// free + malloc of a restart).

constexpr size_t kReallocBufs = 64;

struct Growing {
    unsigned char* p;
    uint32_t size;
    uint32_t target;
    uint64_t cookie;
    uint8_t tag;
};

void growing_start(Growing& g, uint64_t r, Tally& t) {
    const double u = static_cast<double>(r >> 11) * 0x1p-53;
    g.target = static_cast<uint32_t>(1024.0 * std::exp2(10.0 * u)); // 1 KiB .. 1 MiB
    g.size = 16;
    g.cookie = r;
    g.tag = tag_for(r);
    g.p = static_cast<unsigned char*>(std::malloc(g.size));
    if (g.p == nullptr) {
        out_of_memory(g.size);
    }
    std::memcpy(g.p, &g.cookie, sizeof g.cookie);
    g.p[g.size - 1] = g.tag;
    ++t.allocs;
}

void growing_check(const Growing& g) {
    uint64_t c;
    std::memcpy(&c, g.p, sizeof c);
    if (c != g.cookie || g.p[g.size - 1] != g.tag) {
        corrupted("realloc", g.p, g.size);
    }
}

Tally run_realloc(Worker& w) {
    Tally t;
    std::vector<Growing> bufs(kReallocBufs);
    for (Growing& g : bufs) {
        growing_start(g, w.rng.next(), t);
    }

    w.begin_measured();
    for (uint64_t op = 0; op < w.shared.ops_per_thread; ++op) {
        const uint64_t r = w.rng.next();
        Growing& g = bufs[below(r, kReallocBufs)];
        growing_check(g);
        if (g.size >= g.target) {
            t.checksum += g.size;
            std::free(g.p);
            ++t.frees;
            growing_start(g, w.rng.next(), t);
            continue;
        }
        const uint32_t grown =
            (r & 1) != 0 ? g.size + 1 + static_cast<uint32_t>(r >> 1) % 64 : g.size + g.size / 2;
        auto* q = static_cast<unsigned char*>(std::realloc(g.p, grown));
        if (q == nullptr) {
            out_of_memory(grown);
        }
        g.p = q;
        // The old last byte must have moved with the data; then tag the new last byte.
        if (q[g.size - 1] != g.tag) {
            corrupted("realloc", q, g.size);
        }
        g.size = grown;
        g.tag = static_cast<uint8_t>(r >> 56);
        q[grown - 1] = g.tag;
        t.checksum += grown;
    }
    w.end_measured();

    t.ops = w.shared.ops_per_thread;
    for (Growing& g : bufs) {
        growing_check(g);
        t.checksum += g.size;
        std::free(g.p);
        ++t.frees;
    }
    return t;
}

// ---- Workload: larson ----
//
// After Larson & Krishnan's server benchmark (as in mimalloc-bench's larson): each thread owns
// kLarsonSlots blocks of 8-1000 bytes and replaces random ones; every kLarsonGeneration ops it
// hands its whole slot array to a new thread and exits. So blocks are routinely freed by a
// thread other than the one that allocated them, after that thread is gone, and thread
// start/exit is part of the server's steady state. --threads is the number of concurrent
// lineages. ops = replacements; thread creation is inside the measured time, as in larson.

constexpr size_t kLarsonSlots = 5'000;
constexpr uint64_t kLarsonGeneration = 50'000;

inline uint32_t larson_size(uint64_t r) {
    return 8 + static_cast<uint32_t>(below(r, 993)); // 8..1000
}

Tally run_larson(Worker& w) {
    Tally t;
    Slots s(kLarsonSlots);
    for (size_t i = 0; i < s.count(); ++i) {
        const uint64_t r = w.rng.next();
        s.fill(i, larson_size(r), tag_for(r), t);
    }

    w.begin_measured();
    for (uint64_t left = w.shared.ops_per_thread; left > 0;) {
        const uint64_t n = std::min(left, kLarsonGeneration);
        // A new thread takes over the slots (and the random stream); its affinity is
        // inherited from this (possibly pinned) thread.
        std::thread generation([&s, &t, &w, n] {
            for (uint64_t op = 0; op < n; ++op) {
                const size_t i = below(w.rng.next(), kLarsonSlots);
                s.release("larson", i, t);
                const uint64_t r = w.rng.next();
                s.fill(i, larson_size(r), tag_for(r), t);
            }
        });
        generation.join();
        left -= n;
    }
    w.end_measured();

    t.ops = w.shared.ops_per_thread;
    s.release_all("larson", t);
    return t;
}

// ---- Workload: large ----
//
// Random replacement among kLargeSlots blocks of 1-32 MiB (log-uniform, so ~9 MiB on average
// and ~36 MiB live per thread), writing one byte in every 4 KiB page of each new block, as a
// program filling a buffer would. This is mostly a test of what an allocator does with freed
// big blocks: keep them resident for reuse (fast, more RSS), or return them to the kernel and
// pay page faults on the next touch. ops = replacements.

constexpr size_t kLargeSlots = 4;
constexpr size_t kTouchStride = 4096;

inline uint32_t large_size(uint64_t r) {
    const double u = static_cast<double>(r >> 11) * 0x1p-53;
    return static_cast<uint32_t>(static_cast<double>(1 << 20) * std::exp2(5.0 * u));
}

inline void touch_pages(unsigned char* p, uint32_t size, uint8_t v) {
    for (uint32_t off = 8; off < size; off += kTouchStride) {
        p[off] = v;
    }
}

Tally run_large(Worker& w) {
    Tally t;
    Slots s(kLargeSlots);
    for (size_t i = 0; i < s.count(); ++i) {
        const uint64_t r = w.rng.next();
        s.fill(i, large_size(r), tag_for(r), t);
        touch_pages(s.ptr[i], s.size[i], 1);
    }

    w.begin_measured();
    for (uint64_t op = 0; op < w.shared.ops_per_thread; ++op) {
        const size_t i = below(w.rng.next(), kLargeSlots);
        s.release("large", i, t);
        const uint64_t r = w.rng.next();
        const uint32_t size = large_size(r);
        auto* p = static_cast<unsigned char*>(std::malloc(size));
        if (p == nullptr) {
            out_of_memory(size);
        }
        touch_pages(p, size, static_cast<uint8_t>(op));
        p[0] = tag_for(r);
        p[size - 1] = static_cast<uint8_t>(~tag_for(r));
        s.ptr[i] = p;
        s.size[i] = size;
        s.tag[i] = tag_for(r);
        ++t.allocs;
    }
    w.end_measured();

    t.ops = w.shared.ops_per_thread;
    s.release_all("large", t);
    return t;
}

// ---- Workload: churn ----
//
// Short-lived threads, one after another in each of --threads lineages: each thread frees the
// blocks its predecessor handed over (the predecessor has exited by then), mallocs
// kChurnBlocks blocks (mostly 8-256 B, one in 16 of 257 B-4 KiB), frees every other one
// itself, hands the rest to its successor and exits. This is what thread pools that grow and
// shrink, and per-request threads, do to an allocator: a thread's first malloc (heap set-up),
// its exit (heap teardown or abandonment) and frees into a dead thread's memory all happen
// every few thousand operations. ops = blocks allocated (kChurnBlocks per thread).

constexpr uint32_t kChurnBlocks = 2'000;

struct Block {
    unsigned char* p;
    uint32_t size;
    uint8_t tag;
};

inline uint32_t churn_size(uint64_t r) {
    if ((r & 15) == 0) {
        return 257 + static_cast<uint32_t>(below(r, 4096 - 256));
    }
    return pick_size(r);
}

Tally run_churn(Worker& w) {
    Tally t;
    const uint64_t generations = std::max<uint64_t>(w.shared.ops_per_thread / kChurnBlocks, 1);
    // Both arrays are sized before the measured loop, so the benchmark's own bookkeeping never
    // allocates inside it.
    std::vector<Block> handed;
    handed.reserve(kChurnBlocks);
    std::vector<Block> mine(kChurnBlocks);

    w.begin_measured();
    for (uint64_t g = 0; g < generations; ++g) {
        std::thread generation([&] {
            for (const Block& b : handed) {
                t.checksum += free_tagged("churn", b.p, b.size, b.tag);
                ++t.frees;
            }
            handed.clear();
            for (Block& b : mine) {
                const uint64_t r = w.rng.next();
                b.size = churn_size(r);
                b.tag = tag_for(r);
                b.p = alloc_tagged(b.size, b.tag);
                ++t.allocs;
            }
            for (uint32_t i = 0; i < kChurnBlocks; ++i) {
                if (i % 2 == 0) {
                    t.checksum += free_tagged("churn", mine[i].p, mine[i].size, mine[i].tag);
                    ++t.frees;
                } else {
                    handed.push_back(mine[i]);
                }
            }
        });
        generation.join();
    }
    w.end_measured();

    t.ops = generations * kChurnBlocks;
    for (const Block& b : handed) {
        t.checksum += free_tagged("churn", b.p, b.size, b.tag);
        ++t.frees;
    }
    return t;
}

// ---- The workload table ----

struct Workload {
    std::string_view name;
    Tally (*run)(Worker&);
    unsigned default_threads;
    uint64_t default_ops; // per thread; --smoke divides by 100. Sized so that the fastest
                          // allocator takes at least ~0.3 s here (shorter runs are all noise)
    unsigned min_threads; // xthread-mp needs a consumer and a producer
    bool paired;          // threads must come in pairs (xthread)
    bool rings;           // needs one SpscRing per thread
    std::string_view what;
};

constexpr Workload kWorkloads[] = {
    {"small", run_small, 1, 30'000'000, 1, false, false,
     "random replacement in a 10,000-block working set, sizes 8-256 B"},
    {"small-batch", run_small_batch, 1, 30'000'000, 1, false, false,
     "malloc 1,000 blocks then free them all, FIFO and LIFO batches alternating"},
    {"xthread", run_xthread, 2, 10'000'000, 2, true, true,
     "paired threads pass every block through an SPSC ring; all frees are remote"},
    {"xthread-mp", run_xthread_mp, 4, 6'000'000, 2, false, true,
     "N-1 producer threads malloc, one consumer frees everything (ops/thread per producer)"},
    {"powerlaw", run_powerlaw, 1, 30'000'000, 1, false, false,
     "random replacement in a 2,000-block working set, power-law sizes 8 B-1 MiB"},
    {"realloc", run_realloc, 1, 3'000'000, 1, false, false,
     "64 buffers grown by realloc (append or x1.5) from 16 B to 1 KiB-1 MiB, then restarted"},
    {"larson", run_larson, 2, 30'000'000, 1, false, false,
     "5,000 slots of 8-1000 B per lineage; a new thread takes the slots every 50,000 ops"},
    {"large", run_large, 1, 1'500, 1, false, false,
     "random replacement among 4 blocks of 1-32 MiB, one write per 4 KiB page"},
    {"churn", run_churn, 2, 8'000'000, 1, false, false,
     "short-lived threads malloc 2,000 blocks, free half, hand half to the next thread"},
};

const Workload* find_workload(std::string_view name) {
    for (const Workload& w : kWorkloads) {
        if (w.name == name) {
            return &w;
        }
    }
    return nullptr;
}

// ---- Process-level helpers ----

/// The CPUs this process may run on, in order.
std::vector<int> allowed_cpus() {
    std::vector<int> cpus;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
            if (CPU_ISSET(cpu, &set)) {
                cpus.push_back(cpu);
            }
        }
    }
    return cpus;
}

/// Pins the calling thread to one CPU. Why: left alone, the scheduler sometimes stacks two
/// workers on one core for a whole run (they wait on each other, so each looks half idle).
/// Then an xthread "remote" free never leaves the core's cache, and glibc's arena locks are
/// never contended: the same run measured 0.35 s stacked and 3 s spread out, at random.
void pin_to_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    const int err = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    if (err != 0) {
        std::fprintf(stderr, "bench_alloc: cannot pin a thread to CPU %d: %s\n", cpu,
                     std::strerror(err));
        std::exit(1);
    }
}

[[noreturn]] void usage(int rc) {
    FILE* out = rc == 0 ? stdout : stderr;
    std::fprintf(out, "usage: bench_alloc WORKLOAD [--threads N] [--ops N] [--smoke] [--seed S]\n"
                      "                  [--smaps FILE] [--smaps-exit FILE]\n"
                      "       bench_alloc --print-maps-match SUBSTR\n"
                      "  --ops N   operations per thread (default: per workload; --smoke: /100)\n"
                      "  --smaps FILE  save /proc/self/smaps there when the measured loop ends\n"
                      "  --smaps-exit FILE  and there once every worker thread has exited\n"
                      "  prints one JSON line; --print-maps-match exits 0 if a mapped file's path\n"
                      "  contains SUBSTR, 3 if not\n"
                      "workloads:\n");
    for (const Workload& w : kWorkloads) {
        std::fprintf(out, "  %-12s %u thread(s), %" PRIu64 " ops/thread: %.*s\n", w.name.data(),
                     w.default_threads, w.default_ops, static_cast<int>(w.what.size()),
                     w.what.data());
    }
    std::exit(rc);
}

} // namespace

int main(int argc, char** argv) {
    const Workload* workload = nullptr;
    unsigned threads = 0;
    uint64_t ops = 0;
    uint64_t seed = 42;
    bool smoke = false;
    const char* smaps = nullptr;
    const char* smaps_exit = nullptr;

    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "bench_alloc: %s needs a value\n", argv[i]);
                std::exit(2);
            }
            return argv[++i];
        };
        if (arg == "--help" || arg == "-h") {
            usage(0);
        } else if (arg == "--print-maps-match") {
            return bench::maps_match("bench_alloc", value());
        } else if (arg == "--threads") {
            const uint64_t n = bench::parse_u64("bench_alloc", "--threads", value());
            if (n == 0 || n > 256) {
                std::fprintf(stderr, "bench_alloc: --threads must be 1..256\n");
                return 2;
            }
            threads = static_cast<unsigned>(n);
        } else if (arg == "--ops") {
            ops = bench::parse_u64("bench_alloc", "--ops", value());
            if (ops == 0) {
                std::fprintf(stderr, "bench_alloc: --ops must be at least 1\n");
                return 2;
            }
        } else if (arg == "--seed") {
            seed = bench::parse_u64("bench_alloc", "--seed", value());
        } else if (arg == "--smoke") {
            smoke = true;
        } else if (arg == "--smaps") {
            smaps = value();
        } else if (arg == "--smaps-exit") {
            smaps_exit = value();
        } else if (!arg.starts_with("-") && workload == nullptr) {
            workload = find_workload(arg);
            if (workload == nullptr) {
                std::fprintf(stderr, "bench_alloc: unknown workload '%s'\n", argv[i]);
                usage(2);
            }
        } else {
            std::fprintf(stderr, "bench_alloc: unexpected argument '%s'\n", argv[i]);
            usage(2);
        }
    }
    if (workload == nullptr) {
        usage(2);
    }
    if (threads == 0) {
        threads = workload->default_threads;
    }
    if (ops == 0) {
        ops = smoke ? std::max<uint64_t>(workload->default_ops / 100, 1) : workload->default_ops;
    }
    if (threads < workload->min_threads) {
        std::fprintf(stderr, "bench_alloc: %s needs at least %u threads\n", workload->name.data(),
                     workload->min_threads);
        return 2;
    }
    if (workload->paired && threads % 2 != 0) {
        std::fprintf(stderr, "bench_alloc: %s needs an even number of threads\n",
                     workload->name.data());
        return 2;
    }

    Shared shared(threads, ops);
    shared.smaps = smaps;
    std::unique_ptr<SpscRing[]> rings;
    if (workload->rings) {
        rings = std::make_unique<SpscRing[]>(threads);
        shared.rings = rings.get();
    }

    struct Report {
        Tally tally;
        Clock::time_point begin, end;
    };
    std::vector<Report> reports(threads);
    // With more than one worker, give each its own CPU (see pin_to_cpu); with more workers
    // than CPUs that is impossible, and the scheduler decides.
    const std::vector<int> cpus = allowed_cpus();
    const bool pinned = threads > 1 && threads <= cpus.size();
    std::vector<std::thread> workers;
    workers.reserve(threads);
    for (unsigned id = 0; id < threads; ++id) {
        workers.emplace_back([&, id] {
            if (pinned) {
                pin_to_cpu(cpus[id]);
            }
            // Decorrelate the threads' streams: seed each from the run seed and the thread id.
            SplitMix64 mix{seed ^ (0xA5A5A5A5ull * (id + 1))};
            Worker w{shared, id, SplitMix64{mix.next()}};
            reports[id].tally = workload->run(w);
            reports[id].begin = w.begin;
            reports[id].end = w.end;
        });
    }
    for (std::thread& t : workers) {
        t.join();
    }
    // What the workers' exit added (the C library's thread clean-up runs whatever the
    // allocator: bench/rss_split.py).
    if (smaps_exit != nullptr && !bench::save_smaps("bench_alloc", smaps_exit)) {
        return 1;
    }

    Tally total;
    Clock::time_point t0 = reports[0].begin;
    Clock::time_point t1 = reports[0].end;
    for (const Report& r : reports) {
        total.ops += r.tally.ops;
        total.allocs += r.tally.allocs;
        total.frees += r.tally.frees;
        total.checksum += r.tally.checksum;
        t0 = std::min(t0, r.begin);
        t1 = std::max(t1, r.end);
    }
    if (total.allocs != total.frees) {
        std::fprintf(stderr,
                     "bench_alloc: %s: %" PRIu64 " blocks allocated but %" PRIu64 " freed\n",
                     workload->name.data(), total.allocs, total.frees);
        return 1;
    }

    const double seconds = std::chrono::duration<double>(t1 - t0).count();
    const uint64_t total_ops = total.ops;
    uint64_t vm_hwm_kib = 0;
    const uint64_t peak_kib = bench::peak_rss_kib(shared.rss_end_kib, &vm_hwm_kib);
    std::printf("{\"workload\": \"%s\", \"threads\": %u, \"ops\": %" PRIu64
                ", \"ops_per_thread\": %" PRIu64 ", \"seconds\": %.6f, \"ops_per_sec\": %.1f"
                ", \"peak_rss_kib\": %" PRIu64 ", \"vm_hwm_kib\": %" PRIu64
                ", \"rss_end_kib\": %" PRIu64 ", \"checksum\": \"%016" PRIx64
                "\", \"seed\": %" PRIu64 ", \"pinned\": %s, \"smoke\": %s}\n",
                workload->name.data(), threads, total_ops, ops, seconds,
                seconds > 0 ? static_cast<double>(total_ops) / seconds : 0.0, peak_kib, vm_hwm_kib,
                shared.rss_end_kib, total.checksum, seed, pinned ? "true" : "false",
                smoke ? "true" : "false");
    return 0;
}
