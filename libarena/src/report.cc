// SPDX-License-Identifier: MIT
#include "report.h"

#include "check.h"
#include "macros.h"
#include "options.h"
#include "os.h"

#include <atomic>

namespace arena {

Msg& Msg::str(const char* s) {
    while (*s && len_ < sizeof buf_ - 1)
        buf_[len_++] = *s++;
    return *this;
}

Msg& Msg::chr(char c) {
    if (len_ < sizeof buf_ - 1)
        buf_[len_++] = c;
    return *this;
}

size_t format_decimal(uint64_t v, char* out) {
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; ++i)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
    return n;
}

Msg& Msg::u64(uint64_t v) {
    char digits[24];
    format_decimal(v, digits);
    return str(digits);
}

Msg& Msg::i64(int64_t v) {
    if (v < 0) {
        chr('-');
        return u64(static_cast<uint64_t>(-(v + 1)) + 1);
    }
    return u64(static_cast<uint64_t>(v));
}

Msg& Msg::hex(uintptr_t v) {
    static constexpr char kDigits[] = "0123456789abcdef";
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = kDigits[v & 15];
        v >>= 4;
    } while (v != 0);
    str("0x");
    while (n > 0)
        chr(tmp[--n]);
    return *this;
}

Msg& Msg::bytes(uint64_t v) {
    static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    unsigned u = 0;
    uint64_t scaled = v;
    uint64_t rem = 0;
    while (scaled >= 1024 && u < 4) {
        rem = scaled % 1024;
        scaled /= 1024;
        ++u;
    }
    u64(scaled);
    if (rem != 0 && scaled < 100)
        chr('.').u64(rem * 10 / 1024);
    return chr(' ').str(kUnits[u]);
}

void Msg::emit() {
    os::write_stderr(buf_, len_);
    len_ = 0;
}

namespace {

constinit std::atomic<uint64_t> g_error_counts[static_cast<unsigned>(HeapError::Count)] = {};

const char* error_name(HeapError kind) {
    switch (kind) {
    case HeapError::DoubleFree:
        return "double free";
    case HeapError::InvalidFree:
        return "invalid free";
    case HeapError::Count:
        break;
    }
    return "heap error";
}

const char* error_detail(HeapError kind) {
    switch (kind) {
    case HeapError::DoubleFree:
        return "the block is already free";
    case HeapError::InvalidFree:
        return "not the start of a live block";
    case HeapError::Count:
        break;
    }
    return "";
}

} // namespace

ARENA_COLD void report_heap_error(HeapError kind, const void* p, const char* func) {
    const uint64_t n =
        g_error_counts[static_cast<unsigned>(kind)].fetch_add(1, std::memory_order_relaxed) + 1;
    const bool abort_now = option(Opt::ABORT_ON_ERROR) != 0;
    if (n == 1 || option(Opt::VERBOSE) != 0 || abort_now) {
        Msg m;
        m.str("arena: error: ")
            .str(error_name(kind))
            .str(" of ")
            .hex(reinterpret_cast<uintptr_t>(p))
            .str(" in ")
            .str(func)
            .str("(): ")
            .str(error_detail(kind))
            .str(" (pid ")
            .i64(os::getpid())
            .str(")");
        if (!abort_now && option(Opt::VERBOSE) == 0)
            m.str("; further errors of this kind are counted, not reported");
        m.nl().emit();
    }
    if (abort_now) {
        Msg().str("arena: aborting (ARENA_ABORT_ON_ERROR=1)\n").emit();
        os::abort_process();
    }
}

ARENA_COLD void check_failed(const char* tier, const char* file, int line, const char* cond) {
    const char* base = file; // the file name without its directories
    for (const char* c = file; *c; ++c)
        if (*c == '/')
            base = c + 1;
    Msg()
        .str("arena: ")
        .str(tier)
        .str(" failed: ")
        .str(base)
        .chr(':')
        .u64(static_cast<uint64_t>(line))
        .str(": ")
        .str(cond)
        .str(" (pid ")
        .i64(os::getpid())
        .str(")")
        .nl()
        .emit();
    os::abort_process();
}

uint64_t heap_error_count(HeapError kind) {
    return g_error_counts[static_cast<unsigned>(kind)].load(std::memory_order_relaxed);
}

} // namespace arena
