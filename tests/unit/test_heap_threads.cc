// SPDX-License-Identifier: MIT
// libarena's concurrency without the preload: the malloc family of arena_core (arena::libc),
// called directly from threads, in a process whose own malloc stays glibc's (or a sanitizer's).
// It exists for ThreadSanitizer (scripts/check_sanitize.sh builds it with -fsanitize=thread),
// which cannot run a preloaded allocator, and is an ordinary unit test in other builds.
//
// What runs concurrently: the stress test's pattern (tests/stress/test_stress.cc: random sizes,
// cookies checked on free, blocks swapped between threads so that other threads free them,
// thread churn that leaves heaps abandoned with remote frees still coming), a producer/consumer
// pair on one size class (every free remote: the remote queues and their collection), trims, and
// requests through the stats page's control area (trims and purge delays, served on whichever
// thread's slow path sees them, as cmond's POST /arena/<pid>/trim is) with snapshots of the page
// read in the process meanwhile, and a stand-in for the background purger: a thread that runs the
// purger's loop body, pages::background_step, as the purger does (its own lock id, no TLS). The
// real purger is a clone(CLONE_VM) process on a thread pointer of its own, which no sanitizer can
// follow: it is kept from starting (purger::before_exec here; os::helpers_supported says no in
// sanitizer builds), so that the stand-in is the only one, as the real one is.
//
// Size: HEAP_THREADS_ITER (default 20000) per thread per round.
#include "alloc.h"
#include "cookie_stress.h"
#include "heap.h"
#include "lock.h"
#include "os.h"
#include "pages.h"
#include "purger.h"
#include "stats.h"
#include "testing.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

namespace libc = arena::libc;

/// arena_core's malloc family, called directly.
struct CoreMalloc {
    static void* malloc(size_t n) { return libc::malloc(n); }
    static void free(void* p) { libc::free(p); }
    static size_t usable_size(void* p) { return libc::malloc_usable_size(p); }
};

/// tests/stress's shape, smaller: ThreadSanitizer runs it too.
constexpr testing::StressShape kShape{.transfer_slots = 256,
                                      .min_size = 16,
                                      .big_span = size_t{1} << 20,
                                      .max_live = 1000,
                                      .cut = 250,
                                      .pattern_bytes = 0};

/// The purger's loop body on a thread, until stopped (see the top).
class PurgerStandIn {
public:
    PurgerStandIn()
        : t_([this] {
              const uint32_t id = arena::lock_ids::take();
              uint32_t steps = 0;
              while (!stop_.load(std::memory_order_acquire)) {
                  uint32_t seq = 0;
                  if (arena::pages::background_step(arena::os::now_ms_raw(), &seq, id) != 0)
                      std::this_thread::yield();
                  ++steps;
              }
              steps_ = steps;
          }) {}
    ~PurgerStandIn() { stop(); }
    uint32_t stop() {
        if (t_.joinable()) {
            stop_.store(true, std::memory_order_release);
            t_.join();
        }
        return steps_;
    }

private:
    std::atomic<bool> stop_{false};
    uint32_t steps_ = 0;
    std::thread t_;
};

/// What a reader allowed to write does to the page (stats_page.h, control): pwrite requests for
/// a trim, and now and then for a purge delay, while this process snapshots its own page.
class Controller {
public:
    Controller()
        : t_([this] {
              const int fd = open(arena::stats::page_path(), O_RDWR | O_CLOEXEC);
              auto snap = std::make_unique<arena::snapshot::Snapshot>();
              constexpr off_t kControl = offsetof(arena_stats_head, control);
              for (uint64_t k = 1; !stop_.load(std::memory_order_acquire); ++k) {
                  if (fd >= 0) {
                      put(fd, kControl + offsetof(arena_stats_control, trim_requests), k);
                      if (k % 8 == 0) {
                          const int64_t delay = k % 16 == 0 ? 5 : 0;
                          put(fd, kControl + offsetof(arena_stats_control, purge_delay_ms), delay);
                          put(fd, kControl + offsetof(arena_stats_control, purge_requests), k / 8);
                      }
                  }
                  arena::stats::snapshot(snap.get());
                  std::this_thread::sleep_for(std::chrono::milliseconds(1));
              }
              if (fd >= 0) {
                  uint64_t served = 0;
                  constexpr off_t kServed = kControl + offsetof(arena_stats_control, trims_served);
                  if (pread(fd, &served, sizeof served, kServed) == sizeof served)
                      served_ = served;
                  close(fd);
              }
          }) {}
    ~Controller() { stop(); }
    /// Stops it; the trim requests the allocator served (0 without a page).
    uint64_t stop() {
        if (t_.joinable()) {
            stop_.store(true, std::memory_order_release);
            t_.join();
        }
        return served_;
    }

private:
    template <class T>
    static void put(int fd, off_t at, T value) {
        if (pwrite(fd, &value, sizeof value, at) != static_cast<ssize_t>(sizeof value))
            abort();
    }

    std::atomic<bool> stop_{false};
    uint64_t served_ = 0;
    std::thread t_;
};

/// Once per process, before any allocation: no real purger (see the top).
void setup() {
    static const bool once = [] {
        libc::free(libc::malloc(1)); // initialises the library
        arena::purger::before_exec();
        return true;
    }();
    (void)once;
}

} // namespace

TEST_CASE("threads, cross-thread frees, churn, trims and the purger's step keep blocks intact") {
    setup();
    const size_t iters = testing::env_or("HEAP_THREADS_ITER", 20000);
    PurgerStandIn purger;
    Controller controller;
    std::atomic<bool> stop_trim{false};
    std::thread trimmer([&] {
        while (!stop_trim.load(std::memory_order_acquire)) {
            libc::malloc_trim(0);
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
    });
    testing::CookieStress<CoreMalloc> stress(kShape);
    for (uint64_t round = 0; round < 3; ++round)
        stress.round(round, 3, iters, 8);
    stress.drain();
    stop_trim.store(true, std::memory_order_release);
    trimmer.join();
    CHECK(purger.stop() > 0);
    CHECK(*arena::stats::page_path() != '\0'); // ARENA_STATS_DIR: tests/meson.build
    CHECK(controller.stop() > 0);              // trim requests were served
    CHECK(stress.corrupt() == 0);
}

TEST_CASE("a slab pushed on the remote queue again after its frees were collected stays full") {
    // The race, made deterministic: a remote freer publishes a slot of a full slab just after
    // the owner cleared `queued` while collecting it, so it pushes the slab again; the owner's
    // collection takes that bit too, and the slab comes off the queue later with nothing in its
    // remote bitmap. Before the fix the owner then put it on the partial list with no free
    // slot, and its next refill aborted ("check failed: s->fresh != 0"; seen in bench larson x2
    // and bench_prodcons). Here the stale push is made by hand, on the owner's own thread.
    setup();
    libc::malloc_trim(0); // no cached blocks of the class: the slab fills from its bitmap
    constexpr size_t kSize = 32 * 1024;
    const unsigned cls = arena::class_of(kSize);
    const uint32_t nslots = arena::kClasses[cls].nslots;
    auto slab_of = [](void* p) {
        const uintptr_t off = reinterpret_cast<uintptr_t>(p) - arena::g_region0.base;
        REQUIRE(off < arena::g_region0.size);
        const uintptr_t e = arena::g_region0.pagemap[off >> arena::kPageShift].load();
        REQUIRE((e & arena::kTagMask) == 0);
        return reinterpret_cast<arena::Slab*>(e);
    };
    std::vector<void*> blocks;
    // Fill the slab of the first block (its owner allocates the lowest free slot first).
    blocks.push_back(libc::malloc(kSize));
    arena::Slab* full = slab_of(blocks.back());
    for (uint32_t i = 0; i < 4 * nslots && (full->nonempty != 0 || full->fresh != 0); ++i)
        blocks.push_back(libc::malloc(kSize));
    REQUIRE(full->used == full->nslots);
    // One more moves the class to another slab, and marks this one Full.
    blocks.push_back(libc::malloc(kSize));
    REQUIRE(slab_of(blocks.back()) != full);
    REQUIRE(full->where == arena::SlabWhere::Full);
    // The stale push: queued, nothing in its remote bitmap.
    arena::Heap* h = arena::t_heap;
    for (unsigned wi = 0; wi < full->nwords; ++wi)
        REQUIRE(full->remote_bits[wi].load() == 0);
    full->queued.store(1);
    full->next_remote = h->remote.load();
    h->remote.store(full);
    // Enough allocations to run the class's refill (which collects the queue) several times.
    for (uint32_t i = 0; i < 3 * nslots; ++i) {
        blocks.push_back(libc::malloc(kSize));
        REQUIRE(blocks.back() != nullptr);
    }
    CHECK(full->where == arena::SlabWhere::Full);
    CHECK(full->queued.load() == 0);
    for (void* p : blocks)
        libc::free(p);
}

TEST_CASE("producer/consumer: every free is remote, the owner keeps allocating, then exits") {
    setup();
    constexpr size_t kSlots = 64;
    const size_t iters = testing::env_or("HEAP_THREADS_ITER", 20000) * 2;
    std::atomic<void*> slots[kSlots] = {};
    std::atomic<bool> done{false};
    std::atomic<uint64_t> freed{0};
    testing::CookieStress<CoreMalloc> checker(kShape);
    PurgerStandIn purger;
    std::thread consumer([&] {
        size_t i = 0;
        for (;;) {
            void* p = slots[i % kSlots].exchange(nullptr, std::memory_order_acq_rel);
            if (p != nullptr) {
                checker.check_and_free(p);
                freed.fetch_add(1, std::memory_order_relaxed);
            } else if (done.load(std::memory_order_acquire)) {
                bool empty = true;
                for (auto& s : slots)
                    empty = empty && s.load(std::memory_order_acquire) == nullptr;
                if (empty)
                    return;
            }
            ++i;
        }
    });
    std::thread producer([&] {
        uint64_t rng = 4242;
        for (size_t i = 0; i < iters; ++i) {
            // One small class and one medium: the consumer frees every block remotely.
            const size_t n = (i & 1) != 0 ? 48 : 3000;
            auto* p = static_cast<unsigned char*>(libc::malloc(n));
            if (p == nullptr)
                abort(); // not REQUIRE: this is not the test's thread
            testing::CookieStress<CoreMalloc>::seal(p, n);
            // A block of its own freed locally now and then: local and remote frees meet.
            if (testing::next_random(rng) % 8 == 0)
                libc::free(libc::malloc(n));
            while (slots[i % kSlots].load(std::memory_order_relaxed) != nullptr)
                std::this_thread::yield();
            slots[i % kSlots].store(p, std::memory_order_release);
        }
        done.store(true, std::memory_order_release);
        // The producer exits here while the consumer still frees into its slabs.
    });
    producer.join();
    consumer.join();
    CHECK(purger.stop() > 0);
    CHECK(freed.load() == iters);
    CHECK(checker.corrupt() == 0);
}
