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

namespace arena {
// malloc_stats's printer is in override.cc, with the exported malloc family, which this test
// must not link (that would make libarena the process's malloc). init.cc calls it only for
// ARENA_SHOW_STATS, which this test does not set.
void print_stats() {}
} // namespace arena

namespace {

namespace libc = arena::libc;

constexpr size_t kTransfer = 256;
std::atomic<void*> g_transfer[kTransfer];
std::atomic<uint64_t> g_corrupt{0};

size_t env_or(const char* name, size_t def) {
    const char* v = getenv(name);
    return v != nullptr && *v != '\0' ? strtoull(v, nullptr, 10) : def;
}

size_t pick_size(uint64_t& rng) {
    const uint64_t r = testing::next_random(rng) % 1000;
    if (r < 800)
        return 16 + testing::next_random(rng) % 128; // small
    if (r < 980)
        return 129 + testing::next_random(rng) % 8000; // medium
    if (r < 998)
        return 8192 + testing::next_random(rng) % 100000;                     // up to large
    return (size_t{1} << 20) + testing::next_random(rng) % (size_t{1} << 20); // big
}

uintptr_t cookie_of(const void* p, size_t n) {
    return (reinterpret_cast<uintptr_t>(p) * 0x9e3779b97f4a7c15ull) ^ n ^ 0x5bd1e995u;
}

/// [size][cookie] ... [cookie]: written by the allocating thread, checked by the freeing one.
void* make_block(uint64_t& rng) {
    const size_t n = pick_size(rng);
    auto* p = static_cast<unsigned char*>(libc::malloc(n));
    if (p == nullptr)
        return nullptr;
    const uintptr_t c = cookie_of(p, n);
    memcpy(p, &n, sizeof n);
    memcpy(p + 8, &c, sizeof c);
    if (n >= 32)
        memcpy(p + n - 8, &c, sizeof c);
    return p;
}

void check_and_free(void* v) {
    if (v == nullptr)
        return;
    auto* p = static_cast<unsigned char*>(v);
    size_t n = 0;
    uintptr_t c = 0;
    memcpy(&n, p, sizeof n);
    memcpy(&c, p + 8, sizeof c);
    bool ok = n >= 16 && c == cookie_of(p, n) && libc::malloc_usable_size(p) >= n;
    if (ok && n >= 32) {
        uintptr_t tail = 0;
        memcpy(&tail, p + n - 8, sizeof tail);
        ok = tail == c;
    }
    if (!ok)
        g_corrupt.fetch_add(1, std::memory_order_relaxed);
    libc::free(p);
}

/// tests/stress/test_stress.cc's worker, on arena::libc.
void worker(uint64_t seed, size_t iters) {
    uint64_t rng = seed;
    std::vector<void*> mine;
    mine.reserve(1024);
    for (size_t i = 0; i < iters; ++i) {
        const uint64_t r = testing::next_random(rng) % 100;
        if (r < 50 || mine.empty()) {
            if (void* p = make_block(rng))
                mine.push_back(p);
        } else if (r < 85) {
            const size_t k = testing::next_random(rng) % mine.size();
            check_and_free(mine[k]);
            mine[k] = mine.back();
            mine.pop_back();
        } else {
            const size_t k = testing::next_random(rng) % mine.size();
            const size_t t = testing::next_random(rng) % kTransfer;
            void* theirs = g_transfer[t].exchange(mine[k], std::memory_order_acq_rel);
            mine[k] = mine.back();
            mine.pop_back();
            if (theirs != nullptr)
                mine.push_back(theirs);
        }
        if (mine.size() > 1000) {
            for (size_t k = 0; k < 250; ++k) {
                check_and_free(mine.back());
                mine.pop_back();
            }
        }
    }
    // Some blocks stay live for later threads: this heap is abandoned with them.
    for (size_t k = 0; k < mine.size(); ++k) {
        if (k % 4 == 0)
            check_and_free(g_transfer[testing::next_random(rng) % kTransfer].exchange(mine[k]));
        else
            check_and_free(mine[k]);
    }
}

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
    const size_t iters = env_or("HEAP_THREADS_ITER", 20000);
    PurgerStandIn purger;
    Controller controller;
    std::atomic<bool> stop_trim{false};
    std::thread trimmer([&] {
        while (!stop_trim.load(std::memory_order_acquire)) {
            libc::malloc_trim(0);
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
    });
    for (uint64_t round = 0; round < 3; ++round) {
        std::vector<std::thread> ts;
        for (uint64_t t = 0; t < 3; ++t)
            ts.emplace_back(worker, round * 1000 + t + 1, iters);
        for (auto& t : ts)
            t.join();
        for (uint64_t k = 0; k < 8; ++k) // pure churn: allocate, hand over, exit
            std::thread([k, round] {
                uint64_t rng = 777 + round * 100 + k;
                check_and_free(g_transfer[k].exchange(make_block(rng)));
            }).join();
    }
    for (auto& slot : g_transfer)
        check_and_free(slot.exchange(nullptr));
    stop_trim.store(true, std::memory_order_release);
    trimmer.join();
    CHECK(purger.stop() > 0);
    CHECK(*arena::stats::page_path() != '\0'); // ARENA_STATS_DIR: tests/meson.build
    CHECK(controller.stop() > 0);              // trim requests were served
    CHECK(g_corrupt.load() == 0);
}

TEST_CASE("producer/consumer: every free is remote, the owner keeps allocating, then exits") {
    setup();
    constexpr size_t kSlots = 64;
    const size_t iters = env_or("HEAP_THREADS_ITER", 20000) * 2;
    std::atomic<void*> slots[kSlots] = {};
    std::atomic<bool> done{false};
    std::atomic<uint64_t> freed{0};
    PurgerStandIn purger;
    std::thread consumer([&] {
        size_t i = 0;
        for (;;) {
            void* p = slots[i % kSlots].exchange(nullptr, std::memory_order_acq_rel);
            if (p != nullptr) {
                check_and_free(p);
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
            const uintptr_t c = cookie_of(p, n);
            memcpy(p, &n, sizeof n);
            memcpy(p + 8, &c, sizeof c);
            memcpy(p + n - 8, &c, sizeof c);
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
    CHECK(g_corrupt.load() == 0);
}
