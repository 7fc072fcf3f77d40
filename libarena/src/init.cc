// SPDX-License-Identifier: MIT
// Process life cycle (init.h, which also gives the layer order): initialisation on first use
// and the exit report. fork is fork.cc's; the thread-exit hook is the heap's (heap::init).
//
// Start-up: the library constructor only records the program's arguments; everything else (the
// options, the reservation, the stats page, the fork handlers) waits for the first allocation,
// whose slow path calls ensure_init(). A program that never allocates (/bin/true, many a shell
// pipeline's `test` or `true`) pays only for loading the library. What one start cost, measured
// with /bin/true preloaded (issue 14; bench/README.md, "Process start-up", has the figures):
// loading and relocating libarena.so (~36,000 instructions in ld.so, as many page faults as
// mimalloc's load) and, before this change, the initialisation in the constructor: the 64 GiB
// reservation and its metadata mapping, the options (~7,000 instructions), the stats page (21
// system calls to make it, 5 at exit to remove it) and pthread_atfork. Allocating programs pay
// the same as before, at their first malloc instead of at load. One consequence: purger::init
// watches the main thread's tid word only when it runs on the main thread, so a process whose
// first allocation is on another thread has no such watch (its purger still stops at an exec
// through libc and at exit; only an exec by a raw system call goes unseen, purger.cc).
//
// Initialisation must not allocate: it may run inside the very first malloc of the process,
// before libc is fully set up. Its core (options, region 0, the thread-exit key) uses only
// system calls, environ and pthread_key_create. Only after the library is marked ready does it
// call things that may allocate (pthread_atfork, atexit), which then re-enter malloc safely.
#include "init.h"
#include "alloc.h"
#include "fork.h"
#include "heap.h"
#include "mallinfo.h"
#include "meta.h"
#include "options.h"
#include "os.h"
#include "pages.h"
#include "profile.h"
#include "purger.h"
#include "report.h"
#include "stats.h"

#include <atomic>
#include <cstdlib>
#include <sys/auxv.h>
#include <unistd.h>

namespace arena {

namespace {

enum InitState : int { kUninit, kRunning, kReady, kFailed };

constinit std::atomic<int> g_state{kUninit};
constinit std::atomic<long> g_init_tid{0};

/// 8 of the kernel's 16 random bytes for this process (AT_RANDOM), mixed with the clock.
uint64_t random_seed() {
    uint64_t seed = os::unix_ns();
    if (const auto* random = reinterpret_cast<const unsigned char*>(getauxval(AT_RANDOM)))
        for (size_t i = 0; i < sizeof seed; ++i)
            seed = (seed << 8 | seed >> 56) ^ random[i];
    return seed;
}

long current_tid() {
    return os::gettid();
}

void show_stats_at_exit() {
    libc::malloc_stats();
}

void print_banner() {
    char comm[64];
    if (os::read_small_file("/proc/self/comm", comm, sizeof comm) <= 0)
        comm[0] = '\0';
    for (char* c = comm; *c; ++c)
        if (*c == '\n')
            *c = '\0';
    const pages::Totals t = pages::totals();
    Msg m;
    const char* page = stats::page_path();
    m.str("arena: active in pid ")
        .i64(os::getpid())
        .str(" (")
        .str(comm)
        .str("), reserved ")
        .bytes(t.reserved)
        .str(" at ")
        .hex(g_region0.base)
        .str(", purge delay ")
        .i64(option(Opt::PURGE_DELAY_MS))
        .str(" ms, stats page ")
        .str(*page ? page : "off")
        .nl()
        .emit();
}

/// The parts that may allocate: run after the library is ready.
void init_late() {
    install_fork_handler();
    if (option(Opt::SHOW_STATS) != 0)
        atexit(show_stats_at_exit);
    if (option(Opt::VERBOSE) != 0)
        print_banner();
}

ARENA_COLD bool init_slow() {
    int expected = kUninit;
    if (g_state.compare_exchange_strong(expected, kRunning, std::memory_order_acq_rel)) {
        g_init_tid.store(current_tid(), std::memory_order_relaxed);
        options_load();
        purger::init();
        const bool ok = heap::init(random_seed()) && pages::init();
        if (ok) {
            stats::init(); // before any heap exists: heaps take their shard from the page
            prof::init();  // after: the profile region goes in the page's file
        }
        if (!ok) {
            Msg()
                .str("arena: error: cannot reserve address space; every allocation will fail\n")
                .emit();
        }
        g_state.store(ok ? kReady : kFailed, std::memory_order_release);
        if (ok)
            init_late();
        return ok;
    }
    if (expected == kRunning) {
        // Another thread is initialising (a few system calls): wait. Re-entry from this very
        // thread cannot happen, since the core initialisation never allocates; a signal handler
        // that allocates during it gets NULL rather than a deadlock.
        if (g_init_tid.load(std::memory_order_relaxed) == current_tid())
            return false;
        while (g_state.load(std::memory_order_acquire) == kRunning)
            os::yield();
    }
    return g_state.load(std::memory_order_acquire) == kReady;
}

/// glibc calls initialisers with the program's arguments: the stats page's command line, without
/// reading /proc. Nothing else: initialisation waits for the first allocation (see the top).
__attribute__((constructor)) void init_at_load(int argc, char** argv, char**) {
    stats::set_args(argc, argv);
}

/// Normal exit: the page goes away with the process (readers remove pages of processes that
/// died without this).
__attribute__((destructor)) void remove_page_at_exit() {
    prof::report_leaks();
    stats::remove_page();
}

} // namespace

bool ensure_init() {
    if (ARENA_LIKELY(g_state.load(std::memory_order_acquire) == kReady))
        return true;
    return init_slow();
}

} // namespace arena
