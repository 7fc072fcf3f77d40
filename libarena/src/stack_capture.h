// SPDX-License-Identifier: MIT
// The calling thread's stack, for heap profile samples (issue 16, "stacks safely, anywhere").
//
// On x86-64 the walk is its own (stack_capture.cc): from capture's registers it goes frame by
// frame with rules read from the DWARF call-frame information (cfi.h: the FDE found through
// glibc's _dl_find_object, lock-free and safe in signal handlers, never dl_iterate_phdr or dladdr,
// so no dynamic-loader lock that a dlopen in flight could hold) and kept in a fixed, lock-free
// cache of rules by pc in static memory: a hit costs a few loads, so it walks Debian's binaries,
// built without frame pointers, at a few nanoseconds a frame. A frame it does not understand (a
// signal trampoline, a CFA expression, JIT code without unwind information, a CFA that does not
// climb the stack or leaves it: past its top where that is known, a glibc thread's descriptor or
// the main thread's AT_EXECFN, else 8 MiB above the start) hands the rest of the walk to libgcc's
// _Unwind_Backtrace, which also serves the other architectures: the frames are those libgcc would
// give (tests/unit/test_stack_capture.cc compares them frame for frame). libgcc is linked
// statically into libarena.so (-static-libgcc: no new run-time dependency) and built against
// glibc 2.35 or later (Debian 12 has 2.36) it too finds objects with _dl_find_object.
//
// Neither path allocates through the public malloc (the test's counting malloc sees no call, the
// first capture included). One path of libgcc's can: objects registered at run time with
// __register_frame (JIT compilers) are sorted on first use, with malloc; so a caller inside the
// allocator must not sample on a thread that is already capturing (the recursion that would be).
// The cache is keyed by pc alone: a library unloaded and another loaded at the same address
// could meet the first one's rules (the walk's bounds keep its reads on the stack: the profile
// would get a wrong frame, not a crash, except on a stack whose top is not known, such as a
// coroutine's, where a wrong rule could read past its end, as libgcc could).
#pragma once

#include <cstdint>

namespace arena::unwind {

/// Writes up to `max` return addresses of the calling thread's stack into out, innermost first,
/// after skipping the `skip` innermost frames (capture's own is always skipped). Returns how many
/// it wrote (0 when the stack cannot be walked).
unsigned capture(uintptr_t* out, unsigned max, unsigned skip);

/// capture through libgcc's _Unwind_Backtrace alone: the reference the tests compare with.
unsigned capture_libgcc(uintptr_t* out, unsigned max, unsigned skip);

/// For tests: how many captures handed (part of) their walk to libgcc, and emptying the cache of
/// rules (the next capture starts cold).
uint64_t fallbacks();
void forget_rules();

} // namespace arena::unwind
