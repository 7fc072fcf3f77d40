// SPDX-License-Identifier: MIT
// glibc's <malloc.h> introspection calls (mallinfo.h), from one consistent copy of the stats page
// (the same snapshot a reader takes) and the regions' totals. Only malloc_info uses stdio: its
// caller handed it a FILE.
#include "mallinfo.h"

#include "os.h"
#include "pages.h"
#include "report.h"
#include "stats.h"

#include <cerrno>

namespace arena {

namespace {

struct Snapshot {
    snapshot::Snapshot page; // the same consistent copy a reader takes
    pages::Totals pages;
};

Snapshot take_snapshot() {
    Snapshot s{};
    stats::snapshot(&s.page);
    s.pages = pages::totals();
    return s;
}

/// Fields of the stats page malloc_stats prints on one line.
constexpr unsigned kStatsPerLine = 4;

} // namespace

namespace libc {

struct ::mallinfo2 mallinfo2() {
    const Snapshot s = take_snapshot();
    const uint64_t live = s.page.live_bytes();
    struct ::mallinfo2 mi {};
    mi.arena = s.pages.used + s.pages.dirty; // bytes obtained from the regions and not returned
    mi.ordblks = 0;
    mi.smblks = 0;
    mi.hblks = s.page.event(ARENA_EV_large_allocs) - s.page.event(ARENA_EV_large_frees);
    mi.hblkhd = s.page.event(ARENA_EV_large_alloc_bytes) - s.page.event(ARENA_EV_large_free_bytes);
    mi.usmblks = 0;
    mi.fsmblks = 0;
    mi.uordblks = live;
    mi.fordblks = mi.arena > live ? mi.arena - live : 0;
    mi.keepcost = s.pages.dirty;
    return mi;
}

// mallinfo() is deprecated in glibc (its int fields overflow) but still part of the ABI.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
struct ::mallinfo mallinfo() {
    const struct ::mallinfo2 m2 = mallinfo2();
    struct ::mallinfo mi {};
    mi.arena = static_cast<int>(m2.arena);
    mi.ordblks = static_cast<int>(m2.ordblks);
    mi.smblks = static_cast<int>(m2.smblks);
    mi.hblks = static_cast<int>(m2.hblks);
    mi.hblkhd = static_cast<int>(m2.hblkhd);
    mi.usmblks = static_cast<int>(m2.usmblks);
    mi.fsmblks = static_cast<int>(m2.fsmblks);
    mi.uordblks = static_cast<int>(m2.uordblks);
    mi.fordblks = static_cast<int>(m2.fordblks);
    mi.keepcost = static_cast<int>(m2.keepcost);
    return mi;
}
#pragma GCC diagnostic pop

void malloc_stats() {
    stats::publish_global(); // gauges as of now, not of the last slow path
    const Snapshot s = take_snapshot();
    const uint64_t live = s.page.live_bytes();
    const uint64_t system = s.pages.used + s.pages.dirty;
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "Arena 0:\nsystem bytes     = %10llu\nin use bytes     = %10llu\n"
                     "Total (incl. mmap):\nsystem bytes     = %10llu\nin use bytes     = %10llu\n"
                     "max mmap regions = %10u\nmax mmap bytes   = %10llu\n",
                     static_cast<unsigned long long>(system), static_cast<unsigned long long>(live),
                     static_cast<unsigned long long>(system), static_cast<unsigned long long>(live),
                     0u, 0ull);
    if (n > 0)
        os::write_stderr(buf, static_cast<size_t>(n) < sizeof buf ? static_cast<size_t>(n)
                                                                  : sizeof buf - 1);
    Msg m;
    m.str("arena: live_bytes ")
        .u64(live)
        .str(" live_blocks ")
        .u64(s.page.live_blocks())
        .nl()
        .emit();
    struct Field {
        const char* name;
        uint64_t value;
        bool is_signed;
    };
    const Field fields[] = {
#define ARENA_PRINT_EVENT(name, family, label, pass) {#name, s.page.event(ARENA_EV_##name), false},
        ARENA_STATS_EVENTS(ARENA_PRINT_EVENT)
#undef ARENA_PRINT_EVENT
#define ARENA_PRINT_GAUGE(name, family, label, is_signed)                                          \
    {#name, s.page.gauge(ARENA_G_##name), (is_signed) != 0},
            ARENA_STATS_GAUGES(ARENA_PRINT_GAUGE)
#undef ARENA_PRINT_GAUGE
    };
    unsigned on_line = 0;
    for (const Field& f : fields) {
        if (on_line == 0)
            m.str("arena:");
        m.chr(' ').str(f.name).chr(' ');
        if (f.is_signed)
            m.i64(static_cast<int64_t>(f.value));
        else
            m.u64(f.value);
        if (++on_line == kStatsPerLine) {
            m.nl().emit();
            on_line = 0;
        }
    }
    if (on_line != 0)
        m.nl().emit();
}

int malloc_info(int options, FILE* fp) {
    if (options != 0 || fp == nullptr) {
        errno = EINVAL;
        return -1;
    }
    const struct ::mallinfo2 mi = mallinfo2();
    const pages::Totals t = pages::totals();
    fprintf(fp,
            "<malloc version=\"1\">\n<heap nr=\"0\">\n"
            "<system type=\"current\" size=\"%zu\"/>\n<system type=\"max\" size=\"%zu\"/>\n"
            "<aspace type=\"total\" size=\"%zu\"/>\n<aspace type=\"mprotect\" size=\"0\"/>\n"
            "</heap>\n<total type=\"fast\" count=\"0\" size=\"0\"/>\n"
            "<total type=\"rest\" count=\"0\" size=\"%zu\"/>\n"
            "<total type=\"mmap\" count=\"%zu\" size=\"%zu\"/>\n"
            "<system type=\"current\" size=\"%zu\"/>\n<system type=\"max\" size=\"%zu\"/>\n"
            "<aspace type=\"total\" size=\"%zu\"/>\n<aspace type=\"mprotect\" size=\"0\"/>\n"
            "</malloc>\n",
            mi.arena, mi.arena, t.reserved, mi.fordblks, mi.hblks, mi.hblkhd, mi.arena, mi.arena,
            t.reserved);
    return 0;
}

int mallopt(int, int) {
    return 1;
}

} // namespace libc
} // namespace arena
