// SPDX-License-Identifier: MIT
// bench_idle — resident memory over time after a large free, when the process then does
// little or nothing (issue 14: freed memory must go back within about the purge delay even
// when no allocation follows). One scenario per process; run_idle_rss.py runs it under each
// allocator and makes results/idle_rss.{md,json,png}.
//
//   bench_idle SCENARIO [--mib N] [--seconds S] [--interval-ms M] [--seed S] [--smoke]
//   bench_idle --print-maps-match SUBSTR
//
// Scenarios (the memory is written in full before it is freed):
//   mixed        N MiB (default 1024) in mixed sizes: 60% of the blocks 16 B - 32 KiB, 40%
//                64 KiB - 4 MiB; all freed (every 7th first, then the rest); then idle: the
//                process only sleeps and reads its RSS
//   mixed-light  the same, then light allocation: 100 malloc/free pairs of 16 - 256 bytes
//                every 10 ms (the "2 s of light allocation")
//   small4k      N MiB (default 256) of 4100-byte blocks (a cache of 4 KiB values: redis's
//                case), freed in random order; then idle
//   remote4k     like small4k, but allocated by a thread that then sleeps, and freed by the
//                main thread (the owner never sees the frees); then idle
//
// Prints one JSON line: the RSS before allocating, at the peak and right after the free, and
// samples [milliseconds since the free returned, RSS KiB] every --interval-ms for --seconds.
// RSS is /proc/self/statm's resident count (VmRSS), read with open/read: sampling allocates
// nothing.
#include "proc.h"
#include "random.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

// Through volatile pointers: the compiler may not pair a malloc with its free and drop both.
void* (*volatile do_malloc)(size_t) = malloc;
void (*volatile do_free)(void*) = free;

uint64_t rss_kib() {
    char buf[128];
    const int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    const ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char* p = std::strchr(buf, ' ');
    return p == nullptr ? 0
                        : std::strtoull(p + 1, nullptr, 10) *
                              static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) / 1024;
}

uint64_t now_us() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

void* touched(size_t n) {
    void* p = do_malloc(n);
    if (p == nullptr) {
        std::fprintf(stderr, "bench_idle: malloc(%zu) failed\n", n);
        std::exit(1);
    }
    std::memset(p, 0x5a, n);
    return p;
}

std::vector<void*> allocate_mixed(uint64_t bytes, uint64_t seed) {
    std::vector<void*> v;
    v.reserve(1 << 20);
    bench::SplitMix64 rng{seed};
    for (uint64_t got = 0; got < bytes;) {
        const uint64_t r = rng.next();
        const size_t n =
            r % 10 < 4 ? (64u << 10) + (r >> 8) % (4u << 20) : 16 + (r >> 8) % (32u << 10);
        v.push_back(touched(n));
        got += n;
    }
    return v;
}

std::vector<void*> allocate_4k(uint64_t bytes) {
    std::vector<void*> v;
    v.reserve(bytes / 4100 + 1);
    for (uint64_t got = 0; got < bytes; got += 4100)
        v.push_back(touched(4100));
    return v;
}

void free_mixed(std::vector<void*>& v) {
    for (size_t i = 0; i < v.size(); i += 7)
        do_free(v[i]);
    for (size_t i = 0; i < v.size(); ++i)
        if (i % 7 != 0)
            do_free(v[i]);
}

void free_shuffled(std::vector<void*>& v, uint64_t seed) {
    bench::SplitMix64 rng{seed};
    for (size_t i = v.size(); i > 1; --i)
        std::swap(v[i - 1], v[rng.next() % i]);
    for (void* p : v)
        do_free(p);
}

[[noreturn]] void usage(int rc) {
    std::fprintf(rc == 0 ? stdout : stderr,
                 "usage: bench_idle SCENARIO [--mib N] [--seconds S] [--interval-ms M] "
                 "[--seed S] [--smoke]\n"
                 "       bench_idle --print-maps-match SUBSTR\n"
                 "scenarios: mixed, mixed-light (1024 MiB), small4k, remote4k (256 MiB);\n"
                 "--smoke: 64 MiB, 1 s. Prints one JSON line.\n");
    std::exit(rc);
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2)
        usage(2);
    const std::string scenario = argv[1];
    if (scenario == "--help" || scenario == "-h")
        usage(0);
    if (scenario == "--print-maps-match") {
        if (argc != 3)
            usage(2);
        return bench::maps_match("bench_idle", argv[2]);
    }
    const bool mixed = scenario == "mixed" || scenario == "mixed-light";
    if (!mixed && scenario != "small4k" && scenario != "remote4k") {
        std::fprintf(stderr, "bench_idle: unknown scenario '%s'\n", scenario.c_str());
        usage(2);
    }
    uint64_t mib = mixed ? 1024 : 256, seconds_ms = 3000, interval_ms = 50, seed = 42;
    bool smoke = false, mib_set = false, seconds_set = false;
    for (int i = 2; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc)
                usage(2);
            return argv[++i];
        };
        if (arg == "--mib") {
            mib = bench::parse_u64("bench_idle", "--mib", value());
            mib_set = true;
        } else if (arg == "--seconds") {
            seconds_ms = bench::parse_u64("bench_idle", "--seconds", value()) * 1000;
            seconds_set = true;
        } else if (arg == "--interval-ms") {
            interval_ms = bench::parse_u64("bench_idle", "--interval-ms", value());
        } else if (arg == "--seed") {
            seed = bench::parse_u64("bench_idle", "--seed", value());
        } else if (arg == "--smoke") {
            smoke = true;
        } else {
            usage(2);
        }
    }
    if (smoke) {
        mib = mib_set ? mib : 64;
        seconds_ms = seconds_set ? seconds_ms : 1000;
    }
    if (mib == 0 || interval_ms == 0 || seconds_ms == 0)
        usage(2);
    const uint64_t bytes = mib << 20;

    const uint64_t baseline = rss_kib();
    std::vector<void*> blocks;
    std::atomic<int> owner_step{0}; // remote4k: 1 = allocated, 2 = may exit
    std::thread owner;
    if (mixed) {
        blocks = allocate_mixed(bytes, seed);
    } else if (scenario == "small4k") {
        blocks = allocate_4k(bytes);
    } else {
        owner = std::thread([&] {
            blocks = allocate_4k(bytes);
            owner_step.store(1);
            while (owner_step.load() != 2)
                usleep(20000);
        });
        while (owner_step.load() != 1)
            usleep(1000);
    }
    const uint64_t peak = rss_kib();
    const uint64_t t_free = now_us();
    if (mixed)
        free_mixed(blocks);
    else
        free_shuffled(blocks, seed);
    const uint64_t t0 = now_us();
    const uint64_t after_free = rss_kib();
    // The pointer array is the program's, not the allocator's: kept until the end, so that
    // its own free is no page operation during the samples.
    std::vector<std::pair<uint64_t, uint64_t>> samples;
    samples.reserve(seconds_ms / interval_ms + 2);
    samples.emplace_back(0, after_free);
    const bool light = scenario == "mixed-light";
    uint64_t light_ops = 0;
    for (uint64_t next = interval_ms; next <= seconds_ms; next += interval_ms) {
        for (;;) {
            const uint64_t elapsed = (now_us() - t0) / 1000;
            if (elapsed >= next)
                break;
            if (light) {
                bench::SplitMix64 rng{light_ops + 1};
                for (int k = 0; k < 100; ++k, ++light_ops)
                    do_free(touched(16 + rng.next() % 241));
                usleep(static_cast<useconds_t>(std::min<uint64_t>(10000, (next - elapsed) * 1000)));
            } else {
                usleep(static_cast<useconds_t>((next - elapsed) * 1000));
            }
        }
        samples.emplace_back((now_us() - t0) / 1000, rss_kib());
    }
    if (owner.joinable()) {
        owner_step.store(2);
        owner.join();
    }
    std::printf("{\"scenario\": \"%s\", \"mib\": %" PRIu64 ", \"smoke\": %s, "
                "\"baseline_kib\": %" PRIu64 ", \"peak_kib\": %" PRIu64 ", "
                "\"after_free_kib\": %" PRIu64 ", \"free_ms\": %.1f, \"light_ops\": %" PRIu64
                ", \"interval_ms\": %" PRIu64 ", \"samples\": [",
                scenario.c_str(), mib, smoke ? "true" : "false", baseline, peak, after_free,
                static_cast<double>(t0 - t_free) / 1000.0, light_ops, interval_ms);
    for (size_t i = 0; i < samples.size(); ++i)
        std::printf("%s[%" PRIu64 ", %" PRIu64 "]", i ? ", " : "", samples[i].first,
                    samples[i].second);
    std::printf("]}\n");
    return 0;
}
