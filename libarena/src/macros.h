// SPDX-License-Identifier: MIT
// Attribute macros shared by every libarena file: branch hints, the fast/slow path markers, symbol
// visibility and the thread-local storage model. The fast path is always inlined and the slow
// path never is, so the common case stays a handful of instructions with no call.
#pragma once

#define ARENA_LIKELY(x) __builtin_expect(!!(x), 1)
#define ARENA_UNLIKELY(x) __builtin_expect(!!(x), 0)

/// Inlined into its caller: the few instructions of the common case.
#define ARENA_FAST_PATH inline __attribute__((always_inline))
/// Out of line: refills, locking, system calls.
#define ARENA_SLOW_PATH __attribute__((noinline))
/// Out of line and rarely taken: errors, initialisation.
#define ARENA_COLD __attribute__((noinline, cold))

/// A symbol of the public ABI (the malloc family and arena_*). Everything else is hidden.
#define ARENA_EXPORT extern "C" __attribute__((visibility("default")))

/// A global declared in one file's header and defined in another: reached with one rip-relative
/// access rather than through the GOT. (-fvisibility=hidden covers definitions only, so each
/// extern declaration says so itself.)
#define ARENA_HIDDEN __attribute__((visibility("hidden")))

/// Thread-locals use the initial-exec model: a %fs-relative load, no __tls_get_addr (which may
/// itself call malloc while the dynamic TLS block of a thread is being set up).
#define ARENA_TLS __thread __attribute__((tls_model("initial-exec")))

#define ARENA_CACHE_LINE 64

/// Spin-wait hint to the CPU.
#if defined(__x86_64__) || defined(__i386__)
#    define ARENA_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#    define ARENA_CPU_RELAX() __asm__ __volatile__("yield")
#else
#    define ARENA_CPU_RELAX() ((void)0)
#endif
