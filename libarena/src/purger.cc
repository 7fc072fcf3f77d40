// SPDX-License-Identifier: MIT
// The background purger.
//
// Free pages stay resident for ARENA_PURGE_DELAY_MS and are then returned to the kernel by a
// purge tick (pages.cc). The allocator's own page operations run that tick, so a process that
// frees a lot and then goes quiet would keep the memory for as long as it stays quiet. The
// purger is what runs the tick then. What it is, and why:
//
// - A process, not a thread: clone(CLONE_VM) without CLONE_THREAD. It shares the program's
//   memory and nothing else the program can observe: it is not in /proc/self/task nor in the
//   `Threads:` count, not a pthread (pthread enumeration, pthread_kill, setxid broadcasts never
//   reach it), and fork does not copy it (fork copies the calling thread only). Its exit
//   signal is 0, so the program gets no SIGCHLD for it, and wait/waitpid/waitid without
//   __WALL or __WCLONE never see it, running or ended: waitpid(-1, WNOHANG) still answers
//   ECHILD. (A program that waits with __WALL, like a tracer, can see it; see "Limits".)
// - Started lazily: by the first page operation that leaves at least kStartBytes of free pages
//   to purge (pages.cc: free), by the first free after a process that lives past a delay would
//   have made an in-band tick (maybe_tick), or after kStartPushes remote frees; and only when
//   the delay is > 0, the process is not secure-exec (AT_SECURE) and the kernel has what it
//   needs (os::helpers_supported: not under Valgrind either). Otherwise the in-band tick is all
//   there is, as before.
// - It sleeps on a futex word: until the next tick is due while pages are dirty, without any
//   timeout when none are (no wake-up at all in an idle process). Freeing pages wakes it only
//   if it sleeps without timeout (idle_locked, want_poke_locked: both under the pages lock, so
//   no wake is lost).
// - Its work is pages::background_step: the same tick as the in-band one (one tick per delay,
//   whoever runs it), but madvise runs without the pages lock: the runs to purge are marked
//   busy under the lock, purged unlocked, and freed again under the lock, so program threads
//   never wait for a purge of a gigabyte. Every step leaves fork-safe states (bitmap.h,
//   pages.cc): a fork in the middle leaks at worst, and the child takes over a batch that
//   was in flight (fork_child). The first tick after a start or an idle spell comes a quarter
//   of a delay later (pages.cc, settle_locked), so that a burst of frees is returned after
//   about 1.25 delays, not 2. Each tick also returns the pages of blocks that other threads
//   freed into the slabs of a thread gone quiet (heap.cc, "Pages of remote frees"); a remote
//   free wakes a sleeping purger for that (note_remote_push).
//
// What it must never do to the program, and how:
// - Descriptors: CLONE_FILES at clone time and, as its first call, close_range(0, ~0,
//   CLOSE_RANGE_UNSHARE): it gets an empty table of its own without ever having held a
//   reference to one of the program's files (a copied table would keep pipes and sockets the
//   program closes open). It opens nothing. Its working directory becomes "/".
// - Signals: it sends none. Every signal is blocked in it but one (kDeathSignal), whose
//   handler (in its own copy of the handler table) does nothing: it only interrupts a sleep.
//   A signal to the program's process group (a terminal's ^C, ^Z) does not touch it.
// - Credentials: it keeps those it was made with, also when the program later drops
//   privileges. So it makes itself unable to use them: no_new_privs and a seccomp filter
//   that allows futex, madvise(MADV_DONTNEED), getppid, the clock and exit only.
// - Its own state: it never touches TLS or errno (it runs libc-free code on a thread pointer
//   of its own, os.cc), and holds the pages lock only for bitmap updates, as a lock id of its
//   own (lock_ids::take, not the TLS one a thread gets) so that a fork child, which has no
//   purger, releases the lock if the purger held it at the fork (fork.cc).
//
// Lifetime: it must not outlive the program image it serves.
// - Process exit: its parent is the thread that made it; when that thread exits, the kernel
//   moves it to another thread of the process (and sends kDeathSignal, PR_SET_PDEATHSIG) or,
//   when the whole process is gone, to a reaper. On every wake it compares getppid() with the
//   process's pid and ends when they differ. The kernel also wakes it when the main thread
//   exits (next point).
// - exec: the kernel gives the execing process a new memory image, but the purger keeps the
//   old one alive (and its resident pages with it). The exec family is interposed (exec.cc):
//   before_exec() stops the purger and reaps it before the image is replaced, and no other one
//   starts until the exec has failed. An exec that bypasses libc (a raw system call) is
//   caught by the purger itself: it also waits on the main thread's tid word, which the
//   kernel clears and wakes when that thread exits or execs (or is killed by another
//   thread's exec); a cleared word ends the purger. If the main thread merely ended
//   (pthread_exit) while the process lives on, the program finds its purger gone at the next
//   poke, reaps it and starts one that does not watch that word (the word was spent).
// - fork: the child has no purger (fork_child); it starts one when it needs one.
//
// Limits (said here so nobody has to rediscover them): it is a process, so `ps` lists it (as
// arena-purger, with the program's command line and, since it is the same memory, the same
// RSS), it counts against RLIMIT_NPROC and a cgroup's pids.max (a failed clone leaves the
// in-band tick in charge), a __WALL waiter sees it, and a raw-syscall exec while the main
// thread's word is not watched (kernel < 5.16, or main thread gone) leaves it with the old
// image until the new one exits. When it ends after a raw-syscall exec, the new image gets a
// SIGCHLD and a child to reap (the kernel turns the exit signal of a child whose parent has
// exec'd into SIGCHLD); the libc exec family never lets that happen. A process under a
// seccomp filter of its own (a systemd SystemCallFilter=, a container's default profile) gets
// no purger: a system call its filter does not list could kill it. A process whose purger was
// SIGKILLed alone while it held the pages lock would hang: nothing in the program can name
// it, and a kill of the whole process group kills the program too.
#include "purger.h"

#include "heap.h"
#include "lock.h"
#include "options.h"
#include "os.h"
#include "pages.h"

#include <atomic>
#include <csignal>

namespace arena::purger {
namespace {

/// The one signal the purger takes (PR_SET_PDEATHSIG): it only interrupts its sleep.
constexpr int kDeathSignal = SIGUSR2;
/// How long before_exec() waits for the purger to end (it is at most in one madvise).
constexpr int64_t kStopTimeoutMs = 2000;
/// Purgers a process starts at most (one that ends because its main thread ended is replaced;
/// anything that keeps ending them must not turn into a clone per page operation).
constexpr unsigned kMaxStarts = 8;

enum State : uint32_t {
    kNone,     // no purger; poke() starts one
    kStarting, // a thread is starting, reaping or stopping it (it owns the fields below)
    kRunning,  // started (it may have ended since: g_alive is 0 then)
    kFailed,   // this process does not get one (secure-exec, no kernel support, clone failed)
};

constinit std::atomic<uint32_t> g_state{kNone};
constinit std::atomic<uint32_t> g_word{0};  // futex: bumped to wake the purger
constinit std::atomic<uint32_t> g_alive{0}; // its pid, cleared by the kernel when it ends
constinit std::atomic<bool> g_quit{false};  // before_exec asks it to end
constinit std::atomic<bool> g_exec_pending{false};
constinit std::atomic<bool> g_setup_failed{false};    // it ended because helper_isolate failed
constinit std::atomic<uint32_t*> g_main_tid{nullptr}; // the main thread's tid word, or null
// Written under the pages lock: it sleeps without timeout until poked. Atomic, because
// awake() reads it without the lock (pages.cc, "The large-block cache").
constinit std::atomic<bool> g_idle{false};
constinit int g_owner = 0; // the process it works for (getpid at init or fork)
constinit int g_pid = 0;
constinit void* g_area = nullptr; // its stack and thread pointer, reused by the next purger
constinit unsigned g_starts = 0;

/// The purger's body (on its own process: raw system calls only, see the top).
void purger_main(void*) {
    if (!os::helper_isolate("arena-purger", kDeathSignal)) {
        g_setup_failed.store(true, std::memory_order_release);
        os::helper_exit();
    }
    const uint32_t lock_id = lock_ids::take(); // its own: a fork child releases what it held
    const int owner = g_owner;
    const uint32_t* tid = g_main_tid.load(std::memory_order_acquire);
    bool watch = tid != nullptr;
    while (!g_quit.load(std::memory_order_acquire)) {
        if (os::parent_pid() != owner)
            break; // the process exited: its threads are gone, we were handed to a reaper
        if (watch && __atomic_load_n(tid, __ATOMIC_ACQUIRE) != static_cast<uint32_t>(owner)) {
            g_main_tid.store(nullptr, std::memory_order_release); // spent: not watched again
            break; // the main thread exited or exec'd (see the top)
        }
        uint32_t seq = g_word.load(std::memory_order_acquire);
        const int64_t wait = pages::background_step(os::now_ms_raw(), &seq, lock_id);
        if (wait == 0)
            continue; // a tick is under way: its next batch
        if (g_quit.load(std::memory_order_acquire))
            break;
        os::helper_sleep(&g_word, seq, wait, watch ? tid : nullptr, static_cast<uint32_t>(owner),
                         &watch);
    }
    os::helper_exit();
}

/// Whether this process may start a purger now: kNone to try later, kFailed never, kRunning yes.
State may_start() {
    if (os::getpid() != g_owner)
        return kNone; // a vfork or CLONE_VM child of the process: not its purger to start
    if (g_exec_pending.load(std::memory_order_seq_cst) || option(Opt::PURGE_DELAY_MS) <= 0)
        return kNone;
    if (os::secure_exec() || !os::helpers_supported() || g_starts >= kMaxStarts)
        return kFailed;
    return kRunning;
}

/// Starts a purger; the caller moved g_state to kStarting.
void start_claimed() {
    const State verdict = may_start();
    if (verdict != kRunning) {
        g_state.store(verdict, std::memory_order_release);
        return;
    }
    if (g_area == nullptr && (g_area = os::reserve(os::helper_area_bytes())) == nullptr) {
        g_state.store(kNone, std::memory_order_release);
        return;
    }
    os::page_size(); // cached now: its first call reads errno, which the purger must not
    // A main thread that has already ended (pthread_exit) has nothing left to watch.
    const uint32_t* tid = g_main_tid.load(std::memory_order_relaxed);
    if (tid != nullptr && __atomic_load_n(tid, __ATOMIC_ACQUIRE) != static_cast<uint32_t>(g_owner))
        g_main_tid.store(nullptr, std::memory_order_relaxed);
    g_quit.store(false, std::memory_order_relaxed);
    g_setup_failed.store(false, std::memory_order_relaxed);
    ++g_starts;
    const int pid = os::start_helper(purger_main, nullptr, g_area, &g_alive);
    if (pid <= 0) {
        g_state.store(kFailed, std::memory_order_release); // EAGAIN: RLIMIT_NPROC, pids.max
        return;
    }
    g_pid = pid;
    g_state.store(kRunning, std::memory_order_release);
}

} // namespace

constinit std::atomic<uint32_t> g_remote_listen{1};

namespace {
constinit std::atomic<uint32_t> g_remote_pushes{0}; // before the first purger: toward kStartPushes
constinit std::atomic<bool> g_remote_note{false};
} // namespace

void note_remote_push_slow() {
    g_remote_note.store(true, std::memory_order_release);
    switch (g_state.load(std::memory_order_acquire)) {
    case kRunning:
        if (g_remote_listen.exchange(0, std::memory_order_acq_rel) != 0 &&
            g_alive.load(std::memory_order_acquire) != 0) {
            g_word.fetch_add(1, std::memory_order_release);
            os::futex_wake(&g_word, 1);
        }
        return;
    case kNone:
        if (g_remote_pushes.fetch_add(1, std::memory_order_relaxed) + 1 >= kStartPushes) {
            g_remote_listen.store(0, std::memory_order_relaxed);
            poke();
        }
        return;
    case kFailed:
        g_remote_listen.store(0, std::memory_order_relaxed);
        return;
    default:
        return;
    }
}

void listen_remote() {
    g_remote_listen.store(1, std::memory_order_release);
}

bool take_remote_note() {
    return g_remote_note.exchange(false, std::memory_order_acq_rel);
}

void init() {
    g_owner = os::getpid();
    // Only the main thread's word: it lives as long as the process (the initial thread's TCB is
    // never unmapped), where another thread's goes with its stack.
    if (os::gettid() == g_owner)
        g_main_tid.store(os::tid_address(), std::memory_order_relaxed);
}

bool want_poke_locked(size_t (*dirty_bytes)()) {
    switch (g_state.load(std::memory_order_acquire)) {
    case kNone:
        return dirty_bytes() >= kStartBytes;
    case kRunning:
        if (g_alive.load(std::memory_order_acquire) == 0)
            return true; // it ended: reap it, start another
        if (!g_idle.load(std::memory_order_relaxed))
            return false; // awake, or sleeping until its next tick
        g_idle.store(false, std::memory_order_seq_cst);
        g_word.fetch_add(1, std::memory_order_release);
        return true;
    default:
        return false;
    }
}

void poke() {
    uint32_t st = g_state.load(std::memory_order_acquire);
    if (st == kRunning && g_alive.load(std::memory_order_acquire) != 0) {
        os::futex_wake(&g_word, 1);
        return;
    }
    if ((st != kRunning && st != kNone) ||
        !g_state.compare_exchange_strong(st, kStarting, std::memory_order_acq_rel))
        return;
    if (st == kRunning) { // it ended by itself (its main thread ended, or setup failed)
        os::reap_helper(g_pid, &g_alive, kStopTimeoutMs);
        if (g_setup_failed.load(std::memory_order_acquire)) {
            g_state.store(kFailed, std::memory_order_release);
            return;
        }
    }
    start_claimed();
}

bool running() {
    return g_state.load(std::memory_order_relaxed) == kRunning &&
           g_alive.load(std::memory_order_relaxed) != 0;
}

bool awake() {
    return g_state.load(std::memory_order_relaxed) == kRunning &&
           g_alive.load(std::memory_order_relaxed) != 0 && !g_idle.load(std::memory_order_seq_cst);
}

void not_idle_locked() {
    g_idle.store(false, std::memory_order_relaxed);
}

bool sleeping_locked() {
    return g_idle.load(std::memory_order_relaxed);
}

bool startable_locked() {
    return g_state.load(std::memory_order_relaxed) == kNone;
}

uint32_t idle_locked() {
    g_idle.store(true, std::memory_order_seq_cst);
    g_remote_listen.store(1, std::memory_order_release);
    return g_word.load(std::memory_order_acquire);
}

void before_exec() {
    if (os::getpid() != g_owner)
        return; // a vfork child's exec replaces its own image, not this one
    g_exec_pending.store(true, std::memory_order_seq_cst);
    // A thread may be starting one right now (it saw no exec pending): let it finish. Bounded,
    // because a signal handler may exec while this very thread is in start_claimed().
    for (int i = 0; i < 1000 && g_state.load(std::memory_order_acquire) == kStarting; ++i)
        os::yield();
    uint32_t st = kRunning;
    if (!g_state.compare_exchange_strong(st, kStarting, std::memory_order_acq_rel))
        return;
    g_quit.store(true, std::memory_order_release);
    g_word.fetch_add(1, std::memory_order_release);
    os::futex_wake(&g_word, 1);
    // Ends within one madvise; one that does not (stopped by SIGSTOP) is left to end later.
    const bool gone = os::reap_helper(g_pid, &g_alive, kStopTimeoutMs);
    g_state.store(gone ? kNone : kRunning, std::memory_order_release);
}

void exec_failed() {
    if (os::getpid() == g_owner)
        g_exec_pending.store(false, std::memory_order_seq_cst);
}

void fork_child() {
    g_state.store(kNone, std::memory_order_relaxed);
    g_alive.store(0, std::memory_order_relaxed);
    g_quit.store(false, std::memory_order_relaxed);
    g_exec_pending.store(false, std::memory_order_relaxed);
    g_setup_failed.store(false, std::memory_order_relaxed);
    g_idle.store(false, std::memory_order_relaxed);
    g_starts = 0;
    g_remote_listen.store(1, std::memory_order_relaxed);
    g_remote_pushes.store(0, std::memory_order_relaxed);
    g_remote_note.store(false, std::memory_order_relaxed);
    g_owner = os::getpid();
    // The parent's main thread made this child: its word (now holding the child's pid) is
    // still the one that lives as long as the process. Any other thread's is not watched.
    uint32_t* mine = os::tid_address();
    if (mine == nullptr || mine != g_main_tid.load(std::memory_order_relaxed))
        g_main_tid.store(nullptr, std::memory_order_relaxed);
    pages::adopt_busy_after_fork();
    heap::adopt_held_after_fork();
}

} // namespace arena::purger
