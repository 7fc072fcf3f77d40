// SPDX-License-Identifier: MIT
// Differential fuzzer of the allocator: a sequence of malloc-family calls decoded from the input
// runs against libarena's own code (arena::libc, the functions override.cc exports, on this
// thread's heap; or an arena instance of the native API, arena.h) and every answer is checked
// against a model of what the calls promise:
//   - a block is non-null (sizes stay far below the reservation), aligned as asked (16 bytes
//     at least), and malloc_usable_size / arena_usable_size >= the size asked for;
//   - live blocks never overlap (each one's whole usable size counts);
//   - calloc's bytes are zero; contents survive until free, and realloc keeps min(old, new)
//     bytes: every block is filled with its own pattern over its whole usable size, checked at
//     realloc and free;
//   - the error answers: calloc overflow and oversized requests give null and ENOMEM,
//     posix_memalign with a bad alignment EINVAL and *out untouched; the native arena's bad
//     frees EINVAL or ENOENT without corrupting anything.
// ASan cannot see inside the arena (its memory is one mmap to ASan), so these checks are what
// finds a block handed out twice or a copy cut short. A failed check prints the op and aborts.
//
// Input: byte 0 picks the target (even: the process heap, odd: a native arena whose geometry the
// next two bytes choose); then ops of 1 + a few bytes each until the input ends. Everything
// still live at the end is checked and freed, so inputs are independent.
#include "alloc.h"

#include "arena/arena.h"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <vector>

namespace {

// ---- Input ----

/// Reads the fuzz input a few bytes at a time; zeros once it is used up.
class Input {
public:
    Input(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
    bool done() const { return p_ >= end_; }
    uint8_t u8() { return p_ < end_ ? *p_++ : 0; }
    // Little-endian, one statement per byte: the operands of | are unsequenced.
    uint16_t u16() {
        const uint16_t lo = u8();
        return static_cast<uint16_t>(lo | u8() << 8);
    }
    uint32_t u32() {
        const uint32_t lo = u16();
        return lo | uint32_t{u16()} << 16;
    }

    /// A request size: mostly small, sometimes a few pages, rarely megabytes.
    size_t size() {
        const uint8_t kind = u8();
        switch (kind & 7) {
        case 0:
        case 1:
        case 2:
            return u8() % 65; // tiny, with 0
        case 3:
        case 4:
            return u16() % 1025; // the table-lookup classes
        case 5:
            return u16() % (32 * 1024 + 64); // medium classes, and the first large sizes
        case 6:
            return u32() % (256 * 1024); // large: runs of pages
        default: // megabytes, rarely: every page of a block is touched (filled), and faults cost
            return (kind & 0xf8) == 0xf8 ? u32() % (2 << 20) : u16();
        }
    }

private:
    const uint8_t* p_;
    const uint8_t* end_;
};

// ---- Model ----

[[noreturn]] void fail(const char* what, size_t op, const void* p, size_t a, size_t b) {
    fprintf(stderr, "fuzz_alloc: op %zu: %s (p=%p, %zu, %zu)\n", op, what, p, a, b);
    abort();
}

/// The model's loops over block contents carry no coverage feedback (their comparisons would
/// only teach the fuzzer about the pattern) and are most of the run time when instrumented.
#define FUZZ_NO_COVERAGE __attribute__((no_sanitize("coverage")))

/// The pattern of a block: 8-byte words seed * (i + 1), so that two blocks (or a block and a
/// shifted copy of itself) never agree for long.
FUZZ_NO_COVERAGE uint64_t word_at(uint64_t seed, size_t i) {
    return seed * (i + 1) + (seed >> 29);
}

FUZZ_NO_COVERAGE void fill(void* p, size_t n, uint64_t seed) {
    auto* w = static_cast<uint64_t*>(p); // blocks are 16-byte aligned
    for (size_t i = 0; i < n / 8; ++i)
        w[i] = word_at(seed, i);
    if (n % 8 != 0) {
        const uint64_t last = word_at(seed, n / 8);
        memcpy(static_cast<char*>(p) + n / 8 * 8, &last, n % 8);
    }
}

/// Whether the first n bytes at p still hold seed's pattern.
FUZZ_NO_COVERAGE bool holds(const void* p, size_t n, uint64_t seed) {
    const auto* w = static_cast<const uint64_t*>(p);
    for (size_t i = 0; i < n / 8; ++i)
        if (w[i] != word_at(seed, i))
            return false;
    if (n % 8 != 0) {
        const uint64_t last = word_at(seed, n / 8);
        return memcmp(static_cast<const char*>(p) + n / 8 * 8, &last, n % 8) == 0;
    }
    return true;
}

FUZZ_NO_COVERAGE bool all_zero(const void* p, size_t n) {
    const auto* c = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i)
        if (c[i] != 0)
            return false;
    return true;
}

struct Block {
    size_t requested;
    size_t usable;
    uint64_t seed;
};

/// Live blocks by address, and their total (kept under a cap so that RSS stays bounded).
class Model {
public:
    static constexpr size_t kMaxLiveBytes = 32 << 20;
    static constexpr size_t kMaxBlocks = 4096;

    size_t op = 0;

    bool full(size_t more) const {
        return live_bytes_ + more > kMaxLiveBytes || blocks_.size() >= kMaxBlocks;
    }
    bool empty() const { return blocks_.empty(); }
    size_t count() const { return blocks_.size(); }

    /// Checks a new block and fills it with a fresh pattern.
    void add(void* p, size_t requested, size_t usable, size_t align, bool zeroed) {
        const auto a = reinterpret_cast<uintptr_t>(p);
        if (p == nullptr)
            fail("null for a size that fits", op, p, requested, align);
        if (a % align != 0 || a % 16 != 0)
            fail("misaligned", op, p, requested, align);
        if (usable < requested)
            fail("usable size below the request", op, p, requested, usable);
        if (zeroed && !all_zero(p, requested))
            fail("calloc block not zeroed", op, p, requested, usable);
        // No overlap: the next block must start at or after our end, the previous end at or
        // before our start.
        auto next = blocks_.lower_bound(a);
        if (next != blocks_.end() && next->first < a + (usable ? usable : 1))
            fail("overlaps a live block", op, p, usable, next->first);
        if (next != blocks_.begin()) {
            auto prev = std::prev(next);
            if (prev->first + prev->second.usable > a)
                fail("overlaps a live block", op, p, usable, prev->first);
        }
        const uint64_t seed = (uint64_t{++serial_} << 20 ^ a) * 0x9e3779b97f4a7c15ull | 1;
        fill(p, usable, seed);
        blocks_.emplace(a, Block{requested, usable, seed});
        live_bytes_ += usable;
    }

    /// The block at index i (in address order) of the live ones.
    std::map<uintptr_t, Block>::iterator pick(size_t i) {
        auto it = blocks_.begin();
        std::advance(it, i % blocks_.size());
        return it;
    }

    /// Checks that a block's whole usable size still holds its pattern, and forgets it.
    Block remove(std::map<uintptr_t, Block>::iterator it) {
        const Block b = it->second;
        if (!holds(reinterpret_cast<void*>(it->first), b.usable, b.seed))
            fail("contents changed while live", op, reinterpret_cast<void*>(it->first), b.usable,
                 b.requested);
        live_bytes_ -= b.usable;
        blocks_.erase(it);
        return b;
    }

    /// The block that contains address a, if any.
    const Block* containing(uintptr_t a, uintptr_t* start) const {
        auto it = blocks_.upper_bound(a);
        if (it == blocks_.begin())
            return nullptr;
        --it;
        if (a >= it->first + it->second.usable)
            return nullptr;
        *start = it->first;
        return &it->second;
    }

private:
    std::map<uintptr_t, Block> blocks_;
    size_t live_bytes_ = 0;
    uint64_t serial_ = 0;
};

// ---- The process heap (arena::libc) ----

void run_heap(Input& in) {
    namespace libc = arena::libc;
    Model m;
    while (!in.done()) {
        ++m.op;
        const uint8_t op = in.u8();
        switch (op % 12) {
        case 0:
        case 1: { // malloc
            const size_t n = in.size();
            if (m.full(n))
                break;
            void* p = libc::malloc(n);
            m.add(p, n, libc::malloc_usable_size(p), 16, false);
            break;
        }
        case 2: { // calloc, sometimes one that overflows
            const size_t count = 1 + in.u8() % 32;
            const size_t each = in.size() / count;
            if ((op & 0x80) != 0) {
                errno = 0;
                const size_t c = count + 1; // >= 2, so (SIZE_MAX / c + 1) * c overflows
                void* p = libc::calloc(SIZE_MAX / c + 1, c);
                if (p != nullptr || errno != ENOMEM)
                    fail("calloc overflow not refused with ENOMEM", m.op, p, count, errno);
                break;
            }
            if (m.full(count * each))
                break;
            void* p = libc::calloc(count, each);
            m.add(p, count * each, libc::malloc_usable_size(p), 16, true);
            break;
        }
        case 3:
        case 4: { // realloc of a live block (to 0: a free), or of null
            const size_t n = in.size();
            const size_t which = in.u16();
            if (m.empty() || (op & 0x40) != 0) {
                if (m.full(n))
                    break;
                void* p = libc::realloc(nullptr, n);
                m.add(p, n, libc::malloc_usable_size(p), 16, false);
                break;
            }
            auto it = m.pick(which);
            void* old = reinterpret_cast<void*>(it->first);
            if (m.full(n))
                break;
            const Block b = m.remove(it);
            void* p = libc::realloc(old, n);
            if (n == 0) {
                if (p != nullptr)
                    fail("realloc(p, 0) did not free", m.op, p, b.usable, 0);
                break;
            }
            if (p == nullptr)
                fail("realloc failed", m.op, old, b.usable, n);
            const size_t keep = b.requested < n ? b.requested : n;
            if (!holds(p, keep, b.seed))
                fail("realloc lost contents", m.op, p, keep, b.requested);
            m.add(p, n, libc::malloc_usable_size(p), 16, false);
            break;
        }
        case 5: { // aligned allocations, each entry point
            const size_t align = size_t{1} << (in.u8() % 21); // up to 1 MiB
            const size_t n = in.size();
            if (m.full(n + align))
                break;
            void* p = nullptr;
            switch (in.u8() % 5) {
            case 0:
                p = libc::aligned_alloc(align, n);
                break;
            case 1:
                p = libc::memalign(align, n);
                break;
            case 2: {
                void* out = nullptr;
                const int rc = libc::posix_memalign(&out, align < 8 ? 8 : align, n);
                if (rc != 0)
                    fail("posix_memalign failed", m.op, out, align, n);
                p = out;
                break;
            }
            case 3: { // not a power of two: memalign rounds up
                const size_t odd = align + 1 + in.u8() % (align > 1 ? align - 1 : 1);
                size_t want = 1;
                while (want < odd)
                    want <<= 1;
                p = libc::memalign(odd, n);
                m.add(p, n, libc::malloc_usable_size(p), want, false);
                continue;
            }
            default:
                p = libc::valloc(n);
                m.add(p, n, libc::malloc_usable_size(p), 4096, false);
                continue;
            }
            m.add(p, n, libc::malloc_usable_size(p), align < 8 ? 16 : align, false);
            break;
        }
        case 6:
        case 7:
        case 8: { // free
            const size_t which = in.u16();
            if (m.empty()) {
                libc::free(nullptr);
                break;
            }
            auto it = m.pick(which);
            void* p = reinterpret_cast<void*>(it->first);
            m.remove(it);
            libc::free(p);
            break;
        }
        case 9: { // usable size of a live block, again
            if (m.empty())
                break;
            auto it = m.pick(in.u16());
            const size_t u = libc::malloc_usable_size(reinterpret_cast<void*>(it->first));
            if (u != it->second.usable)
                fail("usable size changed while live", m.op, reinterpret_cast<void*>(it->first),
                     it->second.usable, u);
            break;
        }
        case 10: { // errors: too large, bad posix_memalign alignment
            errno = 0;
            void* p = libc::malloc(SIZE_MAX - in.u8());
            if (p != nullptr || errno != ENOMEM)
                fail("a huge malloc did not fail with ENOMEM", m.op, p, 0, errno);
            void* out = &m;
            const size_t bad[] = {0, 1, 4, 24, 48, 4097};
            const int rc = libc::posix_memalign(&out, bad[in.u8() % std::size(bad)], 16);
            if (rc != EINVAL || out != &m)
                fail("posix_memalign accepted a bad alignment", m.op, out, rc, 0);
            break;
        }
        default: // trim: returns free pages to the kernel; live blocks must not notice
            if ((op & 0xf0) == 0)
                libc::malloc_trim(0);
            break;
        }
    }
    while (!m.empty()) {
        auto it = m.pick(0);
        void* p = reinterpret_cast<void*>(it->first);
        m.remove(it);
        libc::free(p);
    }
}

// ---- A native arena (arena.h) ----

void run_native(Input& in) {
    const size_t chunk = size_t{16} << (in.u8() % 13); // 16 B .. 64 KiB
    const size_t count = 1 + in.u16() % 2048;
    const arena_config_t cfg = arena_config(chunk, count);
    arena_t* a = nullptr;
    if (arena_init(&a, &cfg) != 0)
        fail("arena_init refused a good geometry", 0, nullptr, chunk, count);
    Model m;
    std::vector<uintptr_t> freed;
    size_t used = 0; // chunks in live allocations, as the model counts them
    while (!in.done()) {
        ++m.op;
        const uint8_t op = in.u8();
        switch (op % 6) {
        case 0:
        case 1: { // alloc: fails only when no run of free chunks is long enough
            size_t n = in.size();
            if (n > chunk * count * 2)
                n %= chunk * count * 2;
            const size_t chunks = n == 0 ? 1 : (n + chunk - 1) / chunk;
            if (m.full(chunks * chunk))
                break;
            errno = 0;
            void* p = arena_alloc(a, n);
            if (p == nullptr) {
                if (errno != ENOMEM)
                    fail("arena_alloc failed without ENOMEM", m.op, p, n, errno);
                if (used + chunks <= count && m.empty())
                    fail("arena_alloc failed in an empty arena", m.op, p, n, count);
                break;
            }
            const size_t u = arena_usable_size(a, p);
            if (u != chunks * chunk)
                fail("usable size is not whole chunks", m.op, p, n, u);
            m.add(p, n, u, chunk, false); // the arena starts on a multiple of the chunk size
            used += chunks;
            break;
        }
        case 2:
        case 3: { // free
            if (m.empty())
                break;
            auto it = m.pick(in.u16());
            void* p = reinterpret_cast<void*>(it->first);
            const Block b = m.remove(it);
            if (const int rc = arena_free(a, p); rc != 0)
                fail("arena_free of a live block failed", m.op, p, b.usable, rc);
            if (arena_usable_size(a, p) != 0)
                fail("a freed block has a usable size", m.op, p, b.usable, 0);
            used -= b.usable / chunk;
            freed.push_back(reinterpret_cast<uintptr_t>(p));
            if (freed.size() > 64)
                freed.erase(freed.begin(), freed.begin() + 32);
            break;
        }
        case 4: { // bad frees: inside a live block, a freed block, outside
            uintptr_t addr = 0;
            const uint8_t kind = in.u8() % 3;
            if (kind == 0 && !m.empty()) {
                auto it = m.pick(in.u16());
                addr = it->first + 1 + in.u16() % it->second.usable;
                if (addr >= it->first + it->second.usable)
                    break;
            } else if (kind == 1 && !freed.empty()) {
                addr = freed[in.u8() % freed.size()];
            } else {
                addr = reinterpret_cast<uintptr_t>(&m) + in.u8();
            }
            uintptr_t start = 0;
            const Block* live = m.containing(addr, &start);
            if (live != nullptr && start == addr)
                break; // handed out again: a real free, not a bad one
            const int rc = arena_free(a, reinterpret_cast<void*>(addr));
            if (rc != EINVAL && rc != ENOENT)
                fail("a bad free was not refused", m.op, reinterpret_cast<void*>(addr), rc, 0);
            break;
        }
        default: { // trim and stats: the counts agree with the model
            if ((op & 0x80) != 0)
                arena_trim(a);
            arena_stats_t st;
            if (arena_get_stats(a, &st) != 0 || st.allocations != m.count() ||
                st.chunks_used != used)
                fail("stats disagree with the model", m.op, nullptr, st.allocations,
                     st.chunks_used);
            break;
        }
        }
    }
    while (!m.empty()) {
        auto it = m.pick(0);
        void* p = reinterpret_cast<void*>(it->first);
        m.remove(it);
        if (arena_free(a, p) != 0)
            fail("arena_free of a live block failed at the end", m.op, p, 0, 0);
    }
    arena_teardown(a);
}

} // namespace

// override.cc (not linked: it would replace this process's malloc) has malloc_stats; init.cc
// calls it at exit only with ARENA_SHOW_STATS=1.
namespace arena {
void print_stats();
void print_stats() {}
} // namespace arena

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    // Before the heap's first use (its options are read once): no stats page, errors abort,
    // free pages stay until malloc_trim (so that trim ops purge and dirty reuse happens).
    setenv("ARENA_STATS", "0", 1);
    setenv("ARENA_ABORT_ON_ERROR", "1", 1);
    setenv("ARENA_PURGE_DELAY_MS", "-1", 1);
    // 1 GiB of address space (not 64): the debug build's checks walk the region's bitmaps on
    // every purge, and the model keeps at most 32 MiB live.
    setenv("ARENA_RESERVE", "1G", 1);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Input in(data, size);
    if ((in.u8() & 1) == 0)
        run_heap(in);
    else
        run_native(in);
    return 0;
}
