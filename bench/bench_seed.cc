// SPDX-License-Identifier: MIT
// bench_seed — the original CMon arena benchmark (the seed's benchmark.c / bench_arm.c),
// reproduced: 256 KiB allocations, the native arena configured as 64 KiB chunks x 1024 (64 MiB
// of address space), a pool of 12,800 live "zombie" allocations for fragmentation, 128 random
// page touches per allocation to defeat locality, serialized cycle counts, the thread pinned
// to one CPU, malloc_trim(0) after each run, separate warm-up runs, then 5 measured runs
// reported as throughput, P50, P99 and standard deviation.
//
// One source, two programs (bench/meson.build):
//   bench_seed          calls plain malloc/free, so it measures whatever allocator the dynamic
//                       linker binds (glibc bare; jemalloc, mimalloc, tcmalloc or libarena
//                       under LD_PRELOAD).
//   bench_seed_native   built with BENCH_SEED_NATIVE and linked with libarena-native.a: the
//                       256 KiB blocks (and the chunk-sized zombies) come from an arena instance
//                       made with arena_config(64 KiB, 1024); malloc stays glibc's.
//
// The seed's numbers do not fit together as written (12,800 live 256 KiB blocks are 3.2 GiB,
// and the 64 MiB arena holds at most 256 of them), so the zombie pool is built to be feasible
// and to fragment the allocator under test the same way in both programs; bench/README.md
// ("The seed benchmark") gives the reasoning. In short:
//   - 256 zombies of 64 KiB (one arena chunk each) from the allocator under test, left from a
//     fill of 512 interleaved with 64 spacer blocks of 256 KiB, of which every other zombie and
//     every spacer were freed: single-chunk holes that a 256 KiB request must skip;
//   - 12,544 small zombies (16 B - 4 KiB, log-uniform) from malloc, interleaved with those;
//   - a working set of 64 live 256 KiB blocks (16 MiB) per run; each timed operation frees a
//     random one, allocates its replacement and writes 128 random bytes of it, each in a random
//     4 KiB page. The arena is then about half full (512 of 1,024 chunks).
//
// Timing: each operation is one sample, from a serialized begin (CPUID; RDTSC) to a serialized
// end (RDTSCP; CPUID) on x86-64, or between ISB-fenced reads of the virtual counter
// (cntvct_el0) on ARM64. The random offsets are drawn before the begin, and the tag checks
// happen after the end, so a sample holds only free + malloc + the page touches. On a VM, CPUID
// traps to the hypervisor (~5 us each here) — outside the samples, but not outside the wall
// clock, so throughput is computed from the summed samples: ops / (sum of cycles / counter Hz).
//
// Output: one JSON line on stdout; diagnostics on stderr.

#ifdef BENCH_SEED_NATIVE
#    include "arena/arena.h"
#endif

#include <malloc.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "proc.h"
#include "random.h"

namespace {

// ---- The seed's configuration ----

constexpr size_t kBlockSize = 256 * 1024;              // the seed's allocation size
constexpr size_t kChunkSize = 64 * 1024;               // arena_config(64 KiB, ...)
constexpr size_t kChunkCount = 1024;                   // ... x 1024 = 64 MiB of address space
constexpr size_t kPage = 4096;                         // the unit of "page touches"
constexpr unsigned kTouches = 128;                     // random page touches per allocation
constexpr size_t kZombies = 12'800;                    // live zombie allocations, in all
constexpr size_t kChunkZombieFill = 512;               // chunk-sized zombies allocated ...
constexpr size_t kChunkZombies = kChunkZombieFill / 2; // ... and kept (every other one)
constexpr size_t kSpacers = 64;                        // 256 KiB spacers among them, all freed
constexpr size_t kSmallZombies = kZombies - kChunkZombies;
constexpr size_t kLive = 64; // 256 KiB blocks live during a run
constexpr unsigned kDefaultRuns = 5;
constexpr unsigned kDefaultWarmups = 1;
constexpr uint64_t kDefaultOps = 20'000; // timed operations per run
constexpr uint64_t kSmokeOps = 100;

static_assert(kBlockSize % kPage == 0 && kBlockSize % kChunkSize == 0);
static_assert((kLive * kBlockSize + kChunkZombies * kChunkSize) / kChunkSize <= kChunkCount,
              "the working set and the chunk zombies must fit the 64 MiB arena");

// ---- Serialized cycle counters ----

#if defined(__x86_64__)

constexpr const char* kCounter = "x86-64 TSC: cpuid; rdtsc .. rdtscp; cpuid";

/// Start of a measured interval: CPUID waits for every earlier instruction to retire and keeps
/// later ones from starting, then RDTSC reads the counter.
inline uint64_t cycles_begin() {
    uint32_t lo = 0;
    uint32_t hi = 0;
    asm volatile("cpuid\n\t"
                 "rdtsc"
                 : "=a"(lo), "=d"(hi)
                 : "a"(0)
                 : "rbx", "rcx", "memory");
    return (static_cast<uint64_t>(hi) << 32) | lo;
}

/// End of a measured interval: RDTSCP waits for the measured instructions to complete before
/// reading the counter; the CPUID after it keeps later instructions from moving above the read.
inline uint64_t cycles_end() {
    uint32_t lo = 0;
    uint32_t hi = 0;
    asm volatile("rdtscp\n\t"
                 "mov %%eax, %0\n\t"
                 "mov %%edx, %1\n\t"
                 "xor %%eax, %%eax\n\t"
                 "cpuid"
                 : "=r"(lo), "=r"(hi)
                 :
                 : "rax", "rbx", "rcx", "rdx", "memory");
    return (static_cast<uint64_t>(hi) << 32) | lo;
}

/// A cheap unserialized read, for calibrating the counter against the wall clock.
inline uint64_t counter_now() {
    uint32_t lo = 0;
    uint32_t hi = 0;
    asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (static_cast<uint64_t>(hi) << 32) | lo;
}

/// 0: unknown, calibrate against steady_clock.
inline uint64_t counter_hz_fixed() {
    return 0;
}

#elif defined(__aarch64__)

constexpr const char* kCounter = "ARM64 virtual counter: isb; mrs cntvct_el0; isb";

/// ISB before the read: every earlier instruction has completed; ISB after: no later one has
/// started. (cntvct_el0 ticks at cntfrq_el0, e.g. 54 MHz on a Raspberry Pi 5 — not CPU cycles.)
inline uint64_t cycles_begin() {
    uint64_t v = 0;
    asm volatile("isb\n\t"
                 "mrs %0, cntvct_el0\n\t"
                 "isb"
                 : "=r"(v)
                 :
                 : "memory");
    return v;
}

inline uint64_t cycles_end() {
    return cycles_begin();
}

inline uint64_t counter_now() {
    uint64_t v = 0;
    asm volatile("mrs %0, cntvct_el0" : "=r"(v));
    return v;
}

inline uint64_t counter_hz_fixed() {
    uint64_t hz = 0;
    asm volatile("mrs %0, cntfrq_el0" : "=r"(hz));
    return hz;
}

#else
#    error "bench_seed needs x86-64 (RDTSC) or ARM64 (cntvct_el0)"
#endif

// ---- The allocator under test ----

#ifdef BENCH_SEED_NATIVE

constexpr const char* kApi = "native";
arena_t* g_arena = nullptr;

void allocator_init() {
    const arena_config_t cfg = arena_config(kChunkSize, kChunkCount);
    const int err = arena_init(&g_arena, &cfg);
    if (err != 0) {
        std::fprintf(stderr, "bench_seed: arena_init(64 KiB x 1024): %s\n", std::strerror(err));
        std::exit(1);
    }
}

inline void* big_alloc(size_t n) {
    return arena_alloc(g_arena, n);
}

inline void big_free(void* p) {
    const int err = arena_free(g_arena, p);
    if (err != 0) {
        std::fprintf(stderr, "bench_seed: arena_free(%p): %s\n", p, std::strerror(err));
        std::abort();
    }
}

/// After each run: the arena's own trim, and malloc_trim(0) for the small zombies' heap, as
/// the malloc runs do.
void allocator_trim() {
    arena_trim(g_arena);
    malloc_trim(0);
}

#else

constexpr const char* kApi = "malloc";

void allocator_init() {}

inline void* big_alloc(size_t n) {
    return std::malloc(n);
}

inline void big_free(void* p) {
    std::free(p);
}

/// malloc_trim(0) after each run, as the seed did. jemalloc, mimalloc and tcmalloc do not
/// define it, so under them this is glibc's, trimming glibc's (unused) heap: a no-op.
void allocator_trim() {
    malloc_trim(0);
}

#endif

using bench::below;
using bench::SplitMix64;

[[noreturn]] void fail(const char* what, const void* p, size_t size) {
    std::fprintf(stderr, "bench_seed: %s (block %p, %zu bytes)\n", what, p, size);
    std::abort();
}

// ---- Blocks ----
//
// A 256 KiB block carries a tag in its first and last byte, written after the touches and
// checked before it is freed (outside the sample), so an allocator that hands out overlapping
// or unwritable memory aborts the run.

struct Big {
    unsigned char* p = nullptr;
    uint8_t tag = 0;
};

/// Offsets of one allocation's 128 touches: a random page, and a random byte in it.
struct Touches {
    uint32_t off[kTouches];
    void draw(SplitMix64& rng) {
        for (uint32_t& o : off) {
            const uint64_t r = rng.next();
            o = static_cast<uint32_t>(below(r, kBlockSize / kPage) * kPage + (r & (kPage - 1)));
        }
    }
};

inline void touch(unsigned char* p, const Touches& t, uint8_t v) {
    for (const uint32_t o : t.off) {
        p[o] = v;
    }
}

Big new_big(SplitMix64& rng, uint64_t* checksum) {
    Touches t;
    t.draw(rng);
    Big b;
    b.p = static_cast<unsigned char*>(big_alloc(kBlockSize));
    if (b.p == nullptr) {
        fail("allocation of 256 KiB failed", nullptr, kBlockSize);
    }
    b.tag = static_cast<uint8_t>(rng.next() >> 56);
    touch(b.p, t, b.tag);
    b.p[0] = b.tag;
    b.p[kBlockSize - 1] = static_cast<uint8_t>(~b.tag);
    *checksum += t.off[0] + b.tag;
    return b;
}

void check_big(const Big& b) {
    if (b.p[0] != b.tag || b.p[kBlockSize - 1] != static_cast<uint8_t>(~b.tag)) {
        fail("memory corruption in a 256 KiB block", b.p, kBlockSize);
    }
}

// ---- The zombie pool ----

struct Zombies {
    std::vector<unsigned char*> chunks; // kChunkZombies, from the allocator under test
    std::vector<unsigned char*> small;  // kSmallZombies, from malloc
    std::vector<uint32_t> small_size;
};

/// Builds the pool before any run (see the header comment); it stays live to the end.
Zombies make_zombies(SplitMix64& rng) {
    Zombies z;
    std::vector<unsigned char*> fill(kChunkZombieFill);
    std::vector<unsigned char*> spacers;
    z.small.reserve(kSmallZombies);
    z.small_size.reserve(kSmallZombies);
    const size_t per_chunk = (kSmallZombies + kChunkZombieFill - 1) / kChunkZombieFill;
    for (size_t i = 0; i < kChunkZombieFill; ++i) {
        fill[i] = static_cast<unsigned char*>(big_alloc(kChunkSize));
        if (fill[i] == nullptr) {
            fail("allocation of a 64 KiB zombie failed", nullptr, kChunkSize);
        }
        std::memset(fill[i], 0x5A, 64);
        if (i % (kChunkZombieFill / kSpacers) == kChunkZombieFill / kSpacers - 1) {
            auto* s = static_cast<unsigned char*>(big_alloc(kBlockSize));
            if (s == nullptr) {
                fail("allocation of a spacer failed", nullptr, kBlockSize);
            }
            spacers.push_back(s);
        }
        for (size_t k = 0; k < per_chunk && z.small.size() < kSmallZombies; ++k) {
            const double u = static_cast<double>(rng.next() >> 11) * 0x1p-53;
            const auto size = static_cast<uint32_t>(16.0 * std::exp2(8.0 * u)); // 16 B - 4 KiB
            auto* p = static_cast<unsigned char*>(std::malloc(size));
            if (p == nullptr) {
                fail("allocation of a small zombie failed", nullptr, size);
            }
            std::memset(p, 0xA5, size);
            z.small.push_back(p);
            z.small_size.push_back(size);
        }
    }
    for (unsigned char* s : spacers) {
        big_free(s);
    }
    for (size_t i = 0; i < kChunkZombieFill; ++i) {
        if (i % 2 == 1) {
            big_free(fill[i]);
        } else {
            z.chunks.push_back(fill[i]);
        }
    }
    return z;
}

void free_zombies(Zombies& z) {
    for (unsigned char* p : z.chunks) {
        if (p[0] != 0x5A || p[63] != 0x5A) {
            fail("a 64 KiB zombie was overwritten", p, kChunkSize);
        }
        big_free(p);
    }
    for (size_t i = 0; i < z.small.size(); ++i) {
        if (z.small[i][0] != 0xA5 || z.small[i][z.small_size[i] - 1] != 0xA5) {
            fail("a small zombie was overwritten", z.small[i], z.small_size[i]);
        }
        std::free(z.small[i]);
    }
}

// ---- Runs ----

struct RunResult {
    uint64_t ops = 0;
    double wall_seconds = 0; // the timed loop by steady_clock, counter reads included
    uint64_t cycles_sum = 0;
    uint64_t minor_faults = 0;     // page faults during the timed loop (getrusage)
    std::vector<uint64_t> samples; // cycles per operation
};

uint64_t minor_faults() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<uint64_t>(ru.ru_minflt);
}

using Clock = std::chrono::steady_clock;

/// One run: fill the working set, time `ops` replacements, free the working set, trim.
RunResult run_once(SplitMix64& rng, uint64_t ops, uint64_t* checksum) {
    RunResult res;
    res.samples.resize(ops);
    Big live[kLive];
    for (Big& b : live) {
        b = new_big(rng, checksum);
    }

    Touches t;
    const uint64_t faults0 = minor_faults();
    const auto wall0 = Clock::now();
    for (uint64_t op = 0; op < ops; ++op) {
        const size_t i = below(rng.next(), kLive);
        check_big(live[i]);
        t.draw(rng);
        const auto tag = static_cast<uint8_t>(rng.next() >> 56);

        const uint64_t c0 = cycles_begin();
        big_free(live[i].p);
        auto* p = static_cast<unsigned char*>(big_alloc(kBlockSize));
        if (p != nullptr) {
            touch(p, t, tag);
        }
        const uint64_t c1 = cycles_end();

        if (p == nullptr) {
            fail("allocation of 256 KiB failed", nullptr, kBlockSize);
        }
        p[0] = tag;
        p[kBlockSize - 1] = static_cast<uint8_t>(~tag);
        live[i] = Big{p, tag};
        *checksum += t.off[kTouches - 1] + tag;
        res.samples[op] = c1 - c0;
        res.cycles_sum += c1 - c0;
    }
    res.wall_seconds = std::chrono::duration<double>(Clock::now() - wall0).count();
    res.minor_faults = minor_faults() - faults0;
    res.ops = ops;

    for (Big& b : live) {
        check_big(b);
        big_free(b.p);
    }
    allocator_trim();
    return res;
}

/// Median cycles of an empty begin/end pair: what the counter itself adds to every sample.
uint64_t timer_overhead() {
    std::vector<uint64_t> v(200);
    for (uint64_t& x : v) {
        const uint64_t c0 = cycles_begin();
        x = cycles_end() - c0;
    }
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
}

struct Summary {
    double p50 = 0, p99 = 0, mean = 0, stddev = 0;
    uint64_t min = 0, max = 0;
};

/// Nearest-rank percentiles, mean and population standard deviation of the samples.
Summary summarize(std::vector<uint64_t> v) {
    Summary s;
    if (v.empty()) {
        return s;
    }
    std::sort(v.begin(), v.end());
    auto rank = [&](double q) {
        const auto k = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
        return static_cast<double>(v[std::min(v.size() - 1, k == 0 ? 0 : k - 1)]);
    };
    s.p50 = rank(0.50);
    s.p99 = rank(0.99);
    s.min = v.front();
    s.max = v.back();
    double sum = 0;
    for (const uint64_t x : v) {
        sum += static_cast<double>(x);
    }
    s.mean = sum / static_cast<double>(v.size());
    double sq = 0;
    for (const uint64_t x : v) {
        const double d = static_cast<double>(x) - s.mean;
        sq += d * d;
    }
    s.stddev = std::sqrt(sq / static_cast<double>(v.size()));
    return s;
}

// ---- Process-level helpers ----

/// Pins the whole process (it has one thread) to `cpu`, or by default to the last CPU it may
/// run on (CPU 0 usually takes more interrupts). Returns the CPU.
int pin(int cpu) {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) {
        std::perror("bench_seed: sched_getaffinity");
        std::exit(1);
    }
    if (cpu < 0) {
        for (int c = 0; c < CPU_SETSIZE; ++c) {
            if (CPU_ISSET(c, &allowed)) {
                cpu = c;
            }
        }
    }
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) {
        std::fprintf(stderr, "bench_seed: cannot pin to CPU %d: %s\n", cpu, std::strerror(errno));
        std::exit(1);
    }
    return cpu;
}

[[noreturn]] void usage(int rc) {
    std::fprintf(rc == 0 ? stdout : stderr,
                 "usage: bench_seed [--runs N] [--warmups N] [--ops N] [--cpu C] [--seed S] "
                 "[--smoke]\n"
                 "       bench_seed --print-maps-match SUBSTR\n"
                 "  the seed's 256 KiB benchmark (%s API); prints one JSON line\n"
                 "  --runs N     measured runs (default %u)\n"
                 "  --warmups N  unrecorded runs before them (default %u)\n"
                 "  --ops N      timed operations per run (default %" PRIu64 ", --smoke %" PRIu64
                 ")\n"
                 "  --cpu C      pin to CPU C (default: the last allowed CPU)\n",
                 kApi, kDefaultRuns, kDefaultWarmups, kDefaultOps, kSmokeOps);
    std::exit(rc);
}

void print_summary(const char* key, const Summary& s) {
    std::printf("\"%s\": {\"p50\": %.0f, \"p99\": %.0f, \"mean\": %.1f, \"stddev\": %.1f, "
                "\"min\": %" PRIu64 ", \"max\": %" PRIu64 "}",
                key, s.p50, s.p99, s.mean, s.stddev, s.min, s.max);
}

} // namespace

int main(int argc, char** argv) {
    unsigned runs = kDefaultRuns;
    unsigned warmups = kDefaultWarmups;
    uint64_t ops = 0;
    uint64_t seed = 42;
    int cpu = -1;
    bool smoke = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "bench_seed: %s needs a value\n", argv[i]);
                std::exit(2);
            }
            return argv[++i];
        };
        if (arg == "--help" || arg == "-h") {
            usage(0);
        } else if (arg == "--print-maps-match") {
            return bench::maps_match("bench_seed", value());
        } else if (arg == "--runs") {
            runs = static_cast<unsigned>(
                std::clamp<uint64_t>(bench::parse_u64("bench_seed", "--runs", value()), 1, 1000));
        } else if (arg == "--warmups") {
            warmups = static_cast<unsigned>(
                std::min<uint64_t>(bench::parse_u64("bench_seed", "--warmups", value()), 100));
        } else if (arg == "--ops") {
            ops = std::max<uint64_t>(bench::parse_u64("bench_seed", "--ops", value()), 1);
        } else if (arg == "--cpu") {
            cpu = static_cast<int>(std::min<uint64_t>(
                bench::parse_u64("bench_seed", "--cpu", value()), CPU_SETSIZE - 1));
        } else if (arg == "--seed") {
            seed = bench::parse_u64("bench_seed", "--seed", value());
        } else if (arg == "--smoke") {
            smoke = true;
        } else {
            std::fprintf(stderr, "bench_seed: unexpected argument '%s'\n", argv[i]);
            usage(2);
        }
    }
    if (ops == 0) {
        ops = smoke ? kSmokeOps : kDefaultOps;
    }

    cpu = pin(cpu);
    allocator_init();
    const uint64_t overhead = timer_overhead();
    const uint64_t cal_c0 = counter_now();
    const auto cal_t0 = Clock::now();

    SplitMix64 rng{seed};
    uint64_t checksum = 0;
    Zombies zombies = make_zombies(rng);
    for (unsigned w = 0; w < warmups; ++w) {
        run_once(rng, ops, &checksum);
    }
    std::vector<RunResult> results;
    for (unsigned r = 0; r < runs; ++r) {
        results.push_back(run_once(rng, ops, &checksum));
    }
    const uint64_t rss_end_kib = bench::rss_exact_kib(); // the zombies still live
    free_zombies(zombies);

    uint64_t hz = counter_hz_fixed();
    if (hz == 0) {
        const double secs = std::chrono::duration<double>(Clock::now() - cal_t0).count();
        hz = static_cast<uint64_t>(static_cast<double>(counter_now() - cal_c0) / secs);
    }

    // Per run: throughput from the summed samples, and its own percentiles.
    std::vector<double> mops;
    std::vector<uint64_t> all;
    uint64_t faults = 0;
    uint64_t total_ops = 0;
    for (const RunResult& r : results) {
        faults += r.minor_faults;
        total_ops += r.ops;
        mops.push_back(static_cast<double>(r.ops) /
                       (static_cast<double>(r.cycles_sum) / static_cast<double>(hz)) / 1e6);
        all.insert(all.end(), r.samples.begin(), r.samples.end());
    }
    std::vector<double> sorted = mops;
    std::sort(sorted.begin(), sorted.end());
    const double median_mops =
        sorted.size() % 2 == 1 ? sorted[sorted.size() / 2]
                               : (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]) / 2;

    std::printf(
        "{\"bench\": \"seed\", \"api\": \"%s\", \"counter\": \"%s\", \"counter_hz\": %" PRIu64
        ", \"timer_overhead\": %" PRIu64 ", \"cpu\": %d, \"block_size\": %zu"
        ", \"touches\": %u, \"zombies\": %zu, \"live_blocks\": %zu"
        ", \"arena_chunk_size\": %zu, \"arena_chunk_count\": %zu"
        ", \"warmups\": %u, \"ops_per_run\": %" PRIu64 ", \"mops\": %.4f"
        ", \"faults_per_op\": %.3f, ",
        kApi, kCounter, hz, overhead, cpu, kBlockSize, kTouches, kZombies, kLive, kChunkSize,
        kChunkCount, warmups, ops, median_mops,
        static_cast<double>(faults) / static_cast<double>(total_ops));
    print_summary("cycles", summarize(all));
    std::printf(", \"runs\": [");
    for (size_t r = 0; r < results.size(); ++r) {
        std::printf("%s{\"mops\": %.4f, \"wall_seconds\": %.6f, \"cycles_sum\": %" PRIu64
                    ", \"minor_faults\": %" PRIu64 ", ",
                    r == 0 ? "" : ", ", mops[r], results[r].wall_seconds, results[r].cycles_sum,
                    results[r].minor_faults);
        print_summary("cycles", summarize(results[r].samples));
        std::printf("}");
    }
    std::printf("], \"peak_rss_kib\": %" PRIu64 ", \"checksum\": \"%016" PRIx64
                "\", \"seed\": %" PRIu64 ", \"smoke\": %s}\n",
                bench::peak_rss_kib(rss_end_kib), checksum, seed, smoke ? "true" : "false");
    return 0;
}
