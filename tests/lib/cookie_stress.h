// SPDX-License-Identifier: MIT
// The multi-threaded stress of mimalloc's test-stress, once, for any malloc: threads allocate
// blocks of random sizes (mostly small, some large) that carry a cookie derived from their address
// and size, free some themselves and swap others through a shared transfer array so that other
// threads free them (cross-thread frees); rounds of threads start and exit (thread churn), leaving
// blocks live for later threads. Every free checks the cookie first.
//
// `Alloc` names the allocator: static malloc(n), free(p) and usable_size(p). tests/stress runs it
// on the process's malloc (libarena preloaded), tests/unit/test_heap_threads on arena::libc
// directly (for ThreadSanitizer).
#pragma once

#include "testing.h"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace testing {

/// How big a CookieStress is.
struct StressShape {
    size_t transfer_slots = 1000; // the shared array other threads free from
    size_t min_size = 16;         // smallest block (it holds the size and the head cookie)
    size_t big_span = 4u << 20;   // "big" blocks are 1 MiB plus up to this
    size_t max_live = 4000;       // a thread's working set is cut back past this ...
    size_t cut = 1000;            // ... by this many frees
    size_t pattern_bytes = 256;   // bytes after the head cookie filled with a pattern (checked)
};

template <class Alloc>
class CookieStress {
public:
    explicit CookieStress(const StressShape& shape = {})
        : shape_(shape), transfer_(shape.transfer_slots) {}
    ~CookieStress() { drain(); }
    CookieStress(const CookieStress&) = delete;
    CookieStress& operator=(const CookieStress&) = delete;

    /// A block of a random size: [size][cookie] pattern ... [cookie] (tail cookie when it fits).
    void* make_block(uint64_t& rng) {
        const size_t n = pick_size(rng);
        auto* p = static_cast<unsigned char*>(Alloc::malloc(n));
        if (p == nullptr)
            return nullptr;
        const uintptr_t c = cookie_of(p, n);
        std::memcpy(p, &n, sizeof n);
        std::memcpy(p + 8, &c, sizeof c);
        if (n >= 32)
            std::memcpy(p + n - 8, &c, sizeof c);
        for (size_t i = 16; i + 8 < n && i < 16 + shape_.pattern_bytes; ++i)
            p[i] = static_cast<unsigned char>(c >> (i % 8 * 8));
        blocks_.fetch_add(1, std::memory_order_relaxed);
        return p;
    }

    /// A block made with the same layout by other code (size n at least 32, no pattern).
    static void seal(void* block, size_t n) {
        auto* p = static_cast<unsigned char*>(block);
        const uintptr_t c = cookie_of(p, n);
        std::memcpy(p, &n, sizeof n);
        std::memcpy(p + 8, &c, sizeof c);
        std::memcpy(p + n - 8, &c, sizeof c);
    }

    /// Checks the cookies (and pattern) of `v`, counts a damaged block, frees it. Null is ignored.
    void check_and_free(void* v) {
        if (v == nullptr)
            return;
        auto* p = static_cast<unsigned char*>(v);
        size_t n = 0;
        uintptr_t c = 0;
        std::memcpy(&n, p, sizeof n);
        std::memcpy(&c, p + 8, sizeof c);
        bool ok = n >= 16 && c == cookie_of(p, n) && Alloc::usable_size(p) >= n;
        if (ok && n >= 32) {
            uintptr_t tail = 0;
            std::memcpy(&tail, p + n - 8, sizeof tail);
            ok = tail == c;
        }
        for (size_t i = 16; ok && i + 8 < n && i < 16 + shape_.pattern_bytes; ++i)
            ok = p[i] == static_cast<unsigned char>(c >> (i % 8 * 8));
        if (!ok)
            corrupt_.fetch_add(1, std::memory_order_relaxed);
        Alloc::free(p);
    }

    /// One thread's work: `iters` steps of allocate (50%), free one of its own (35%) or swap one
    /// through the transfer array (15%); at the end a quarter of its blocks go to the array.
    void worker(uint64_t seed, size_t iters) {
        uint64_t rng = seed;
        std::vector<void*> mine;
        mine.reserve(shape_.max_live);
        for (size_t i = 0; i < iters; ++i) {
            const uint64_t r = next_random(rng) % 100;
            if (r < 50 || mine.empty()) {
                if (void* p = make_block(rng))
                    mine.push_back(p);
            } else if (r < 85) {
                const size_t k = next_random(rng) % mine.size();
                check_and_free(mine[k]);
                mine[k] = mine.back();
                mine.pop_back();
            } else {
                const size_t k = next_random(rng) % mine.size();
                void* theirs = slot(rng).exchange(mine[k], std::memory_order_acq_rel);
                mine[k] = mine.back();
                mine.pop_back();
                if (theirs != nullptr)
                    mine.push_back(theirs);
            }
            if (mine.size() > shape_.max_live) {
                for (size_t k = 0; k < shape_.cut; ++k) {
                    check_and_free(mine.back());
                    mine.pop_back();
                }
            }
        }
        // Some blocks stay live for later threads: this thread's heap is abandoned with them.
        for (size_t k = 0; k < mine.size(); ++k) {
            if (k % 4 == 0)
                check_and_free(slot(rng).exchange(mine[k]));
            else
                check_and_free(mine[k]);
        }
    }

    /// Round `round`: `threads` workers, then `churn` short-lived threads that only allocate a
    /// block, hand it over and exit.
    void round(uint64_t round, size_t threads, size_t iters, size_t churn) {
        std::vector<std::thread> ts;
        for (uint64_t t = 0; t < threads; ++t)
            ts.emplace_back([this, seed = round * 1000 + t + 1, iters] { worker(seed, iters); });
        for (auto& t : ts)
            t.join();
        for (uint64_t k = 0; k < churn; ++k)
            std::thread([this, k, round] {
                uint64_t rng = 777 + round * 100 + k;
                check_and_free(transfer_[k % transfer_.size()].exchange(make_block(rng)));
            }).join();
    }

    /// Frees what the transfer array still holds.
    void drain() {
        for (auto& s : transfer_)
            check_and_free(s.exchange(nullptr));
    }

    uint64_t corrupt() const { return corrupt_.load(); }
    uint64_t blocks() const { return blocks_.load(); }

private:
    static uintptr_t cookie_of(const void* p, size_t n) {
        return (reinterpret_cast<uintptr_t>(p) * 0x9e3779b97f4a7c15ull) ^ n ^ 0x5bd1e995u;
    }

    size_t pick_size(uint64_t& rng) const {
        const uint64_t r = next_random(rng) % 1000;
        size_t n;
        if (r < 800)
            n = 1 + next_random(rng) % 128; // small
        else if (r < 980)
            n = 129 + next_random(rng) % 8000; // medium
        else if (r < 998)
            n = 8192 + next_random(rng) % 100000; // up to large
        else
            n = (size_t{1} << 20) + next_random(rng) % shape_.big_span; // big
        return n < shape_.min_size ? shape_.min_size : n;
    }

    std::atomic<void*>& slot(uint64_t& rng) {
        return transfer_[next_random(rng) % transfer_.size()];
    }

    StressShape shape_;
    std::vector<std::atomic<void*>> transfer_;
    std::atomic<uint64_t> corrupt_{0};
    std::atomic<uint64_t> blocks_{0};
};

} // namespace testing
