// SPDX-License-Identifier: MIT
// arena-demo: the demo workload, run on libarena (LD_PRELOAD or arena-run) by scripts/demo.sh
// and by docker/compose.yaml. It makes an allocator pattern that is easy to see in arena-stat
// and Prometheus: a sawtooth of live bytes. Each cycle (default 60 s) grows the heap in equal
// steps to --peak, frees everything and stays empty for one step; every step also makes
// short-lived allocations, so call rates stay visible. Block sizes are log-uniform from 16 B to 1
// MiB, so the size histogram has every bucket populated. Every API family is used: malloc, calloc,
// realloc, posix_memalign, operator new[] and their frees.
//
// Each block is filled with a pattern derived from its address and checked before it is freed
// (the allocator is under test too): a mismatch aborts with a message. SIGTERM and SIGINT free
// everything and exit 0, so libarena removes the stats page.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <new>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

constexpr const char* kUsage =
    "Usage: arena-demo [OPTIONS]\n"
    "Allocates in a sawtooth: live bytes grow in steps up to PEAK, then everything is freed;\n"
    "repeats until SIGTERM or SIGINT. Run it on libarena: arena-run arena-demo\n"
    "\n"
    "  --period SECONDS   length of one cycle (default 60, 1 to 3600)\n"
    "  --steps N          steps per cycle (default 20, 1 to 1000)\n"
    "  --peak SIZE        live bytes at the top of a cycle (default 48M; suffixes K, M, G;\n"
    "                     64K to 4G)\n"
    "  --cycles N         stop after N cycles (default 0: until a signal)\n"
    "  --quiet            print one line per cycle instead of one per step\n"
    "  --help\n";

// ---- Options ----

struct Options {
    double period_s = 60;
    long steps = 20;
    uint64_t peak = 48ULL << 20;
    long cycles = 0;
    bool quiet = false;
};

[[noreturn]] void usage_error(const std::string& message) {
    fprintf(stderr, "arena-demo: %s\nTry 'arena-demo --help'.\n", message.c_str());
    exit(2);
}

bool parse_number(const char* text, double lo, double hi, double& out) {
    char* end = nullptr;
    errno = 0;
    const double v = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(v >= lo && v <= hi))
        return false;
    out = v;
    return true;
}

bool parse_size(const char* text, uint64_t& out) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || text[0] == '-')
        return false;
    unsigned shift = 0;
    if (*end == 'K' || *end == 'k')
        shift = 10;
    else if (*end == 'M' || *end == 'm')
        shift = 20;
    else if (*end == 'G' || *end == 'g')
        shift = 30;
    if (shift != 0)
        ++end;
    if (*end != '\0' || v > (4ULL << 30) >> shift)
        return false;
    out = v << shift;
    return out >= (64ULL << 10) && out <= (4ULL << 30);
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc)
                usage_error("option '" + arg + "' needs a value");
            return argv[++i];
        };
        double n = 0;
        if (arg == "--help" || arg == "-h") {
            fputs(kUsage, stdout);
            exit(0);
        } else if (arg == "--period") {
            const char* v = value();
            if (!parse_number(v, 1, 3600, o.period_s))
                usage_error("invalid --period '" + std::string(v) + "' (1 to 3600 seconds)");
        } else if (arg == "--steps") {
            const char* v = value();
            if (!parse_number(v, 1, 1000, n) || n != static_cast<long>(n))
                usage_error("invalid --steps '" + std::string(v) + "' (1 to 1000)");
            o.steps = static_cast<long>(n);
        } else if (arg == "--peak") {
            const char* v = value();
            if (!parse_size(v, o.peak))
                usage_error("invalid --peak '" + std::string(v) + "' (64K to 4G)");
        } else if (arg == "--cycles") {
            const char* v = value();
            if (!parse_number(v, 0, 1e9, n) || n != static_cast<long>(n))
                usage_error("invalid --cycles '" + std::string(v) + "'");
            o.cycles = static_cast<long>(n);
        } else if (arg == "--quiet") {
            o.quiet = true;
        } else {
            usage_error("unknown argument '" + arg + "'");
        }
    }
    return o;
}

// ---- Blocks ----

/// splitmix64: deterministic, so every run makes the same pattern.
struct Rng {
    uint64_t state;
    uint64_t next() {
        uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

enum class Api : uint8_t { Malloc, Calloc, Realloc, Aligned, New };

struct Block {
    unsigned char* p;
    size_t size;
    Api api;
};

/// Log-uniform between 16 B and 1 MiB: as many blocks of 16-32 B as of 512 KiB-1 MiB.
size_t draw_size(Rng& rng) {
    const double log2_size = 4.0 + 16.0 * rng.unit();
    return static_cast<size_t>(std::exp2(log2_size));
}

unsigned char cookie(const Block& b) {
    return static_cast<unsigned char>((reinterpret_cast<uintptr_t>(b.p) >> 4) ^ b.size);
}

/// Fills the first and last 64 bytes with the cookie and touches every page in between, so
/// resident memory follows live bytes.
void fill(const Block& b) {
    const unsigned char c = cookie(b);
    const size_t edge = b.size < 64 ? b.size : 64;
    memset(b.p, c, edge);
    memset(b.p + b.size - edge, c, edge);
    for (size_t off = 4096; off < b.size; off += 4096)
        b.p[off] = c;
}

void check(const Block& b) {
    const unsigned char c = cookie(b);
    const size_t edge = b.size < 64 ? b.size : 64;
    for (size_t i = 0; i < edge; ++i) {
        if (b.p[i] != c || b.p[b.size - 1 - i] != c) {
            fprintf(stderr, "arena-demo: memory corruption in the block at %p (%zu bytes)\n",
                    static_cast<void*>(b.p), b.size);
            abort();
        }
    }
}

Block allocate(Rng& rng, size_t size) {
    Block b{nullptr, size, Api::Malloc};
    const uint64_t pick = rng.next() % 16;
    if (pick == 0) {
        b.api = Api::Calloc;
        b.p = static_cast<unsigned char*>(calloc(1, size));
    } else if (pick == 1) {
        // Grown in two steps, as a buffer that learns its final size late.
        b.api = Api::Realloc;
        void* p = malloc(size / 2 + 1);
        b.p = p ? static_cast<unsigned char*>(realloc(p, size)) : nullptr;
        if (!b.p)
            free(p);
    } else if (pick == 2) {
        b.api = Api::Aligned;
        void* p = nullptr;
        b.p = posix_memalign(&p, 64, size) == 0 ? static_cast<unsigned char*>(p) : nullptr;
    } else if (pick <= 5) {
        b.api = Api::New;
        b.p = new (std::nothrow) unsigned char[size];
    } else {
        b.p = static_cast<unsigned char*>(malloc(size));
    }
    if (!b.p) {
        fprintf(stderr, "arena-demo: out of memory allocating %zu bytes\n", size);
        exit(1);
    }
    fill(b);
    return b;
}

void release(const Block& b) {
    check(b);
    if (b.api == Api::New)
        delete[] b.p;
    else
        free(b.p);
}

/// Short-lived allocations: small objects made and dropped within the step, as a request
/// handler would.
void churn(Rng& rng, int count) {
    Block temp[64];
    int n = 0;
    for (int i = 0; i < count; ++i) {
        temp[n++] = allocate(rng, 16 + rng.next() % 496);
        if (n == 64) {
            for (int j = 0; j < n; ++j)
                release(temp[j]);
            n = 0;
        }
    }
    for (int j = 0; j < n; ++j)
        release(temp[j]);
}

std::string mib(uint64_t bytes) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
    return buf;
}

} // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    setvbuf(stdout, nullptr, _IOLBF, 0);

    // Stop signals are awaited, not handled: the sleep between ticks is the wait.
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigprocmask(SIG_BLOCK, &stop, nullptr);

    const uint64_t step_bytes = o.peak / static_cast<uint64_t>(o.steps);
    // One step more than --steps: the empty one after the drop. A step is ticks of about
    // 100 ms, each with its short-lived allocations, so the call rates are steady.
    const double step_s = o.period_s / static_cast<double>(o.steps + 1);
    const long ticks = std::max(1L, std::lround(step_s / 0.1));
    const double tick_s = step_s / static_cast<double>(ticks);
    const timespec tick{
        static_cast<time_t>(tick_s),
        static_cast<long>((tick_s - static_cast<double>(static_cast<time_t>(tick_s))) * 1e9)};
    printf("arena-demo: pid %d, a sawtooth to %s in %ld steps of %.1f s\n", getpid(),
           mib(o.peak).c_str(), o.steps, step_s);

    Rng rng{0x5eed};
    int signal = 0;
    // One step's wait: the ticks, with their churn; false once a stop signal came.
    auto wait_step = [&] {
        for (long t = 0; t < ticks && signal == 0; ++t) {
            churn(rng, 200);
            const int s = sigtimedwait(&stop, nullptr, &tick);
            if (s > 0)
                signal = s;
        }
        return signal == 0;
    };

    std::vector<Block> held;
    uint64_t live = 0;
    for (long cycle = 1; signal == 0 && (o.cycles == 0 || cycle <= o.cycles); ++cycle) {
        for (long step = 1; step <= o.steps && signal == 0; ++step) {
            const uint64_t target = step_bytes * static_cast<uint64_t>(step);
            while (live < target) {
                size_t size = draw_size(rng);
                if (size > target - live && target - live >= 16)
                    size = static_cast<size_t>(target - live);
                held.push_back(allocate(rng, size));
                live += size;
            }
            if (!o.quiet)
                printf("cycle %ld step %2ld/%ld: %s live in %zu blocks\n", cycle, step, o.steps,
                       mib(live).c_str(), held.size());
            wait_step();
        }
        // The drop of the sawtooth, freed in allocation order.
        for (const Block& b : held)
            release(b);
        printf("cycle %ld: freed %s in %zu blocks\n", cycle, mib(live).c_str(), held.size());
        held.clear();
        live = 0;
        // Stay at the bottom for one step, so that a 5 s scrape sees the drop.
        if (o.cycles == 0 || cycle < o.cycles)
            wait_step();
    }
    if (signal != 0)
        printf("arena-demo: %s, exiting\n", strsignal(signal));
    return 0;
}
