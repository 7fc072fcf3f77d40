// SPDX-License-Identifier: MIT
// Two tiers of checks (STYLE: "Checks come in two tiers"; snmalloc's SNMALLOC_ASSERT/_CHECK).
//
//   ARENA_ASSERT(cond)  a debug invariant: compiled in only by a debug build of libarena
//                       (meson -Darena_debug=true, which defines ARENA_DEBUG=1). In release the
//                       condition is still type-checked but generates no code, so an assert may
//                       be as costly as it likes (RunMap::check() recounts whole bitmaps).
//   ARENA_CHECK(cond)   always on: for a condition whose violation would corrupt memory (a run
//                       released that is not in use, an index past the end of a bitmap). One
//                       compare and a never-taken branch; keep it off the malloc/free fast path.
//
// A failure writes "arena: <tier> failed: file:line: cond (pid N)" with one write(2) and aborts;
// neither tier allocates. Heap errors a program makes (double and invalid frees) are not
// checks: report.h reports them and goes on unless ARENA_ABORT_ON_ERROR=1.
#pragma once

#include "macros.h"

namespace arena {

/// Writes the failure line and aborts the process. `tier` is "assertion" or "check".
[[noreturn]] ARENA_COLD void check_failed(const char* tier, const char* file, int line,
                                          const char* cond);

} // namespace arena

#define ARENA_CHECK(cond)                                                                          \
    do {                                                                                           \
        if (ARENA_UNLIKELY(!(cond)))                                                               \
            ::arena::check_failed("check", __FILE__, __LINE__, #cond);                             \
    } while (0)

#if defined(ARENA_DEBUG) && ARENA_DEBUG
#    define ARENA_ASSERT(cond)                                                                     \
        do {                                                                                       \
            if (ARENA_UNLIKELY(!(cond)))                                                           \
                ::arena::check_failed("assertion", __FILE__, __LINE__, #cond);                     \
        } while (0)
#else
// Never evaluated: the condition only has to compile (so it cannot rot in release builds).
#    define ARENA_ASSERT(cond)                                                                     \
        do {                                                                                       \
            if (false)                                                                             \
                (void)(cond);                                                                      \
        } while (0)
#endif

namespace arena {
/// True in a build where ARENA_ASSERT is compiled in (for tests).
#if defined(ARENA_DEBUG) && ARENA_DEBUG
inline constexpr bool kAssertsOn = true;
#else
inline constexpr bool kAssertsOn = false;
#endif
} // namespace arena
