// SPDX-License-Identifier: MIT
// bench_prodcons — producer/consumer with remote frees, one of run_programs.py's programs.
//
// Each producer thread mallocs blocks (mostly 8..1024 bytes, 2% of 4..64 KiB) and hands them
// over in batches whose size is drawn per batch from 1..256, through one bounded queue, to the
// consumer threads, which free them. So every free is remote: no block is freed by the thread
// that allocated it. The queue holds at most kQueueBatches batches, so memory stays bounded
// however the threads are scheduled. The batch vectors themselves come from malloc too and are
// freed by the consumer (remote as well).
//
// Deterministic for a given (pairs, blocks, seed): each producer has its own splitmix64 stream;
// it writes a byte derived from that stream into the first and last byte of each block, and the
// consumers add both bytes to a checksum, so the printed checksum depends only on the stream
// (a sum is independent of which consumer got which batch). The driver compares it across
// allocators.
//
// Output: one JSON line on stdout; diagnostics go to stderr.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#include "proc.h"
#include "random.h"

namespace {

constexpr size_t kQueueBatches = 64; // bound: at most 64 x 256 blocks in flight
constexpr uint32_t kMaxBatch = 256;
constexpr uint64_t kDefaultBlocks = 2'000'000; // per producer; about 2 s on glibc here, 1 pair

using Batch = std::vector<unsigned char*>;

/// The bounded multi-producer, multi-consumer queue of batches. An empty batch is the end
/// marker: main pushes one per consumer once every producer has finished.
class Queue {
public:
    void push(Batch batch) {
        std::unique_lock lock(mu_);
        not_full_.wait(lock, [&] { return q_.size() < kQueueBatches; });
        q_.push_back(std::move(batch));
        not_empty_.notify_one();
    }

    Batch pop() {
        std::unique_lock lock(mu_);
        not_empty_.wait(lock, [&] { return !q_.empty(); });
        Batch batch = std::move(q_.front());
        q_.pop_front();
        not_full_.notify_one();
        return batch;
    }

private:
    std::mutex mu_;
    std::condition_variable not_full_, not_empty_;
    std::deque<Batch> q_;
};

/// A block size: 98% uniform in 8..1024 bytes, 2% in 4..64 KiB.
size_t block_size(bench::SplitMix64& rng) {
    const uint64_t r = rng.next();
    if (bench::below(r, 100) < 2) {
        return 4096 + bench::below(rng.next(), 60 * 1024 + 1);
    }
    return 8 + bench::below(rng.next(), 1024 - 8 + 1);
}

void produce(Queue& queue, uint64_t blocks, uint64_t seed, unsigned id) {
    bench::SplitMix64 rng{seed * 0x100000001B3ull + id};
    uint64_t made = 0;
    while (made < blocks) {
        const uint64_t want = 1 + bench::below(rng.next(), kMaxBatch);
        const uint64_t n = std::min(want, blocks - made);
        Batch batch;
        batch.reserve(n);
        for (uint64_t i = 0; i < n; ++i) {
            const size_t size = block_size(rng);
            auto* p = static_cast<unsigned char*>(std::malloc(size));
            if (p == nullptr) {
                std::fprintf(stderr, "bench_prodcons: malloc(%zu) failed\n", size);
                std::abort();
            }
            const auto tag = static_cast<unsigned char>(rng.next());
            p[0] = tag;
            p[size - 1] = tag;
            batch.push_back(p);
        }
        made += n;
        queue.push(std::move(batch));
    }
}

uint64_t consume(Queue& queue) {
    uint64_t sum = 0;
    for (;;) {
        Batch batch = queue.pop();
        if (batch.empty()) {
            return sum; // the end marker
        }
        for (unsigned char* p : batch) {
            sum += p[0];
            std::free(p);
        }
    }
}

[[noreturn]] void usage(int rc) {
    std::fprintf(rc == 0 ? stdout : stderr,
                 "usage: bench_prodcons [--pairs N] [--blocks N] [--seed N] [--smoke]\n"
                 "       bench_prodcons --print-maps-match SUBSTR\n"
                 "  --pairs N   producer threads and as many consumer threads (default 1)\n"
                 "  --blocks N  blocks per producer (default %llu; --smoke: /100)\n"
                 "  prints one JSON line; --print-maps-match exits 0 if a mapped file's path\n"
                 "  contains SUBSTR, 3 if not\n",
                 static_cast<unsigned long long>(kDefaultBlocks));
    std::exit(rc);
}

} // namespace

int main(int argc, char** argv) {
    unsigned pairs = 1;
    uint64_t blocks = 0;
    uint64_t seed = 42;
    bool smoke = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) {
                usage(2);
            }
            return argv[++i];
        };
        if (arg == "--print-maps-match") {
            return bench::maps_match("bench_prodcons", value());
        } else if (arg == "--pairs") {
            const uint64_t n = bench::parse_u64("bench_prodcons", "--pairs", value());
            if (n == 0 || n > 64) {
                std::fprintf(stderr, "bench_prodcons: --pairs must be 1..64\n");
                return 2;
            }
            pairs = static_cast<unsigned>(n);
        } else if (arg == "--blocks") {
            blocks = bench::parse_u64("bench_prodcons", "--blocks", value());
        } else if (arg == "--seed") {
            seed = bench::parse_u64("bench_prodcons", "--seed", value());
        } else if (arg == "--smoke") {
            smoke = true;
        } else if (arg == "--help" || arg == "-h") {
            usage(0);
        } else {
            usage(2);
        }
    }
    if (blocks == 0) {
        blocks = smoke ? kDefaultBlocks / 100 : kDefaultBlocks;
    }

    Queue queue;
    std::vector<uint64_t> sums(pairs);
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> consumers, producers;
    for (unsigned c = 0; c < pairs; ++c) {
        consumers.emplace_back([&, c] { sums[c] = consume(queue); });
    }
    for (unsigned p = 0; p < pairs; ++p) {
        producers.emplace_back([&, p] { produce(queue, blocks, seed, p); });
    }
    for (auto& t : producers) {
        t.join();
    }
    for (unsigned c = 0; c < pairs; ++c) {
        queue.push(Batch{}); // one end marker per consumer, after every real batch
    }
    for (auto& t : consumers) {
        t.join();
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    uint64_t checksum = 0;
    for (uint64_t s : sums) {
        checksum += s;
    }
    std::printf("{\"program\":\"bench_prodcons\",\"pairs\":%u,\"blocks\":%llu,\"seconds\":%.6f,"
                "\"checksum\":%llu,\"peak_rss_kib\":%llu}\n",
                pairs, static_cast<unsigned long long>(blocks), seconds,
                static_cast<unsigned long long>(checksum),
                static_cast<unsigned long long>(bench::proc_status_kib("VmHWM")));
    return 0;
}
