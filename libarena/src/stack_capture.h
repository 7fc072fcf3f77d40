// SPDX-License-Identifier: MIT
// The calling thread's stack, for heap profile samples (issue 16, "stacks safely, anywhere").
//
// The unwinder is libgcc's _Unwind_Backtrace, linked statically into libarena.so (-static-libgcc:
// no new run-time dependency). It reads DWARF call-frame information, so it walks Debian's
// binaries, which are built without frame pointers. Built against glibc 2.35 or later (Debian 12
// has 2.36) it finds a pc's object with _dl_find_object, which is lock-free and safe in signal
// handlers: no dl_iterate_phdr, so no dynamic-loader lock that a dlopen in flight could hold, and
// no allocation through the public malloc (tests/unit/test_stack_capture.cc: the walk without
// frame pointers, and a counting malloc that sees no call). One path of libgcc's can allocate:
// objects registered at run time with __register_frame (JIT compilers) are sorted on first use,
// with malloc; so a caller inside the allocator must not sample on a thread that is already
// capturing (the recursion that would be).
#pragma once

#include <cstdint>

namespace arena::unwind {

/// Writes up to `max` return addresses of the calling thread's stack into out, innermost first,
/// after skipping the `skip` innermost frames (capture's own is always skipped). Returns how many
/// it wrote (0 when the stack cannot be walked).
unsigned capture(uintptr_t* out, unsigned max, unsigned skip);

} // namespace arena::unwind
