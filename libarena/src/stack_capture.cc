// SPDX-License-Identifier: MIT
// Stack capture (stack_capture.h): the walk by cached CFI rules on x86-64, libgcc's unwinder for
// the rest.
#include "stack_capture.h"

#include "cfi.h"
#include "macros.h"
#include "os.h"

#include <atomic>
#include <elf.h>
#include <unwind.h>

namespace arena::unwind {
namespace {

struct Walk {
    uintptr_t* out;
    unsigned max;
    unsigned skip; // frames still to skip, capture's own included
    unsigned n;
    unsigned already; // frames the fast walk has visited already, which libgcc passes over
};

std::atomic<uint64_t> g_fallbacks{0};

_Unwind_Reason_Code step(_Unwind_Context* ctx, void* arg) {
    auto* w = static_cast<Walk*>(arg);
    const uintptr_t ip = _Unwind_GetIP(ctx);
    if (ip == 0)
        return _URC_END_OF_STACK;
    if (w->already > 0) {
        --w->already;
        return _URC_NO_REASON;
    }
    if (w->skip > 0) {
        --w->skip;
        return _URC_NO_REASON;
    }
    w->out[w->n++] = ip;
    return w->n == w->max ? _URC_END_OF_STACK : _URC_NO_REASON;
}

#if defined(__x86_64__)

// The cache of rules: direct mapped, one 64-bit word an entry, written and read whole (relaxed
// atomics), so a reader sees an entry entirely or not at all; a conflict only costs a recompute.
// A word: the pc's bits 14..46 (the tag: with the index, they name the pc), the kind plus 1 (0 is
// an empty entry), the CFA offset / 8 and rbp's save slot below the CFA / 8. Rules that do not fit
// (or pcs above 2^47) are not cached.
constexpr unsigned kCacheBits = 14;
constexpr uint64_t kCacheMask = (uint64_t{1} << kCacheBits) - 1;
constexpr unsigned kTagBits = 47 - kCacheBits;
constexpr uint64_t kTagMask = (uint64_t{1} << kTagBits) - 1;
constexpr unsigned kKindShift = kTagBits;      // 3 bits
constexpr unsigned kCfaShift = kKindShift + 3; // 16 bits
constexpr unsigned kCfaBits = 16;
constexpr unsigned kRbpShift = kCfaShift + kCfaBits; // 12 bits
constexpr unsigned kRbpBits = 64 - kRbpShift;

std::atomic<uint64_t> g_cache[uint64_t{1} << kCacheBits];

// The walk stops (and libgcc takes over) where a CFA leaves this span above the starting stack
// pointer: a bound on what a wrong rule could make it read.
constexpr uintptr_t kStackSpan = uintptr_t{8} << 20;

std::atomic<uintptr_t> g_main_top{0}; // AT_EXECFN, or 1 when the kernel gave none

/// Where the walk must stop reading, from the starting sp: the top of the stack when it is known
/// (a glibc thread's descriptor, the thread pointer, sits just above its stack; the main thread's
/// stack holds the executable's name, AT_EXECFN, near its top), so that even a wrong rule never
/// reads past the mapped stack; else the span above sp.
uintptr_t stack_limit(uintptr_t sp) {
    uintptr_t limit = sp + kStackSpan;
    uintptr_t tp = 0;
    __asm__("mov %%fs:0, %0" : "=r"(tp));
    uintptr_t top = g_main_top.load(std::memory_order_relaxed);
    if (ARENA_UNLIKELY(top == 0)) {
        top = os::auxv(AT_EXECFN);
        top = top == 0 ? 1 : top;
        g_main_top.store(top, std::memory_order_relaxed);
    }
    if (tp > sp && tp < limit)
        limit = tp;
    else if (top > sp && top < limit)
        limit = top;
    return limit;
}

bool pack(uintptr_t pc, const cfi::Rule& r, uint64_t& word) {
    const int64_t cfa = r.cfa_off;
    const int64_t rbp = -static_cast<int64_t>(r.rbp_off);
    if (cfa < 0 || cfa % 8 != 0 || cfa / 8 >= (int64_t{1} << kCfaBits))
        return false;
    if (rbp < 0 || rbp % 8 != 0 || rbp / 8 >= (int64_t{1} << kRbpBits))
        return false;
    word = (pc >> kCacheBits) | (uint64_t{static_cast<uint8_t>(r.kind)} + 1) << kKindShift |
           static_cast<uint64_t>(cfa / 8) << kCfaShift |
           static_cast<uint64_t>(rbp / 8) << kRbpShift;
    return true;
}

cfi::Rule unpack(uint64_t word) {
    cfi::Rule r;
    r.kind = static_cast<cfi::Kind>(((word >> kKindShift) & 7) - 1);
    r.cfa_off = static_cast<int32_t>(((word >> kCfaShift) & ((uint64_t{1} << kCfaBits) - 1)) * 8);
    r.rbp_off = -static_cast<int32_t>((word >> kRbpShift) * 8);
    return r;
}

ARENA_FAST_PATH cfi::Rule rule_at(uintptr_t pc) {
    if (ARENA_UNLIKELY(pc >> 47 != 0))
        return cfi::rule_for(pc);
    std::atomic<uint64_t>& slot = g_cache[(pc ^ (pc >> kCacheBits)) & kCacheMask];
    const uint64_t word = slot.load(std::memory_order_relaxed);
    if (ARENA_LIKELY(word != 0 && (word & kTagMask) == pc >> kCacheBits))
        return unpack(word);
    const cfi::Rule r = cfi::rule_for(pc);
    uint64_t fresh = 0;
    if (pack(pc, r, fresh))
        slot.store(fresh, std::memory_order_relaxed);
    return r;
}

/// Walks from capture's frame (pc, sp, bp as of one instruction in it). Returns true when the
/// walk is complete (the end of the stack, or max frames), false when libgcc must walk on from
/// the frame after the w.already frames it visited. Reads the stack only in [sp, stack_limit(sp)).
__attribute__((no_sanitize("address", "thread", "undefined"))) bool
fast_walk(uintptr_t pc, uintptr_t sp, uintptr_t bp, Walk& w) {
    const uintptr_t limit = stack_limit(sp);
    for (;;) {
        if (pc == 0)
            return true;
        if (w.skip > 0) {
            --w.skip;
        } else {
            w.out[w.n++] = pc;
            if (w.n == w.max)
                return true;
        }
        ++w.already;
        const cfi::Rule r = rule_at(pc);
        if (r.kind == cfi::Kind::End)
            return true;
        if (r.kind == cfi::Kind::Unknown)
            return false;
        const uintptr_t cfa = (r.kind == cfi::Kind::Rsp ? sp : bp) +
                              static_cast<uintptr_t>(static_cast<int64_t>(r.cfa_off));
        if (cfa <= sp || cfa > limit || (cfa & 7) != 0)
            return false;
        const uintptr_t next = *reinterpret_cast<const uintptr_t*>(cfa - 8);
        if (r.rbp_off != 0) {
            const uintptr_t at = cfa + static_cast<uintptr_t>(static_cast<int64_t>(r.rbp_off));
            if (at < sp || at >= cfa || (at & 7) != 0)
                return false;
            bp = *reinterpret_cast<const uintptr_t*>(at);
        }
        sp = cfa;
        pc = next;
    }
}

#endif // __x86_64__

} // namespace

ARENA_SLOW_PATH unsigned capture(uintptr_t* out, unsigned max, unsigned skip) {
    if (max == 0)
        return 0;
    Walk w{out, max, skip + 1, 0, 0};
#if defined(__x86_64__)
    // This frame's registers as of the lea: its CFI row there tells how to reach the caller.
    uintptr_t pc = 0;
    uintptr_t sp = 0;
    uintptr_t bp = 0;
    __asm__ __volatile__("lea 0(%%rip), %0\n\tmov %%rsp, %1\n\tmov %%rbp, %2"
                         : "=&r"(pc), "=&r"(sp), "=&r"(bp));
    if (fast_walk(pc, sp, bp, w))
        return w.n;
    g_fallbacks.fetch_add(1, std::memory_order_relaxed);
#endif
    _Unwind_Backtrace(step, &w);
    return w.n;
}

ARENA_SLOW_PATH unsigned capture_libgcc(uintptr_t* out, unsigned max, unsigned skip) {
    if (max == 0)
        return 0;
    Walk w{out, max, skip + 1, 0, 0};
    _Unwind_Backtrace(step, &w);
    return w.n;
}

uint64_t fallbacks() {
    return g_fallbacks.load(std::memory_order_relaxed);
}

void forget_rules() {
#if defined(__x86_64__)
    for (auto& slot : g_cache)
        slot.store(0, std::memory_order_relaxed);
#endif
}

} // namespace arena::unwind
