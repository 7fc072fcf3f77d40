// SPDX-License-Identifier: MIT
// Run-time options: every ARENA_* environment variable, in one table. The README's option list
// is this table (tests/unit/test_options.cc checks that the two agree).
//
// Options are read once, during initialisation, from environ (os::env) with a hand-written
// parser: no allocation, no locale. A malformed or out-of-range value is reported on stderr and
// the default is used (a library cannot refuse to start the program it is preloaded into).
// A secure-exec process (setuid, setgid, capabilities) ignores every ARENA_* variable, as glibc
// ignores MALLOC_* there, and has no stats page: its environment is another user's choice.
#pragma once

#include "arena/profile_page.h"
#include "arena/stats_page.h"
#include "config.h"
#include "macros.h"

#include <cstddef>
#include <cstdint>

namespace arena {

enum class OptionKind : uint8_t { Bool, Int, Size, String };

// X(id, kind, default, min, max, default string, help)
#define ARENA_OPTION_TABLE(X)                                                                      \
    X(RESERVE, Size, kDefaultReserve, kMinRegion, kMaxReserve, nullptr,                            \
      "Bytes of virtual address space reserved up front (suffixes K, M, G, T). Costs no memory "   \
      "until used; halved until the kernel accepts it.")                                           \
    X(PURGE_DELAY_MS, Int, 500, ARENA_STATS_PURGE_DELAY_MIN_MS, ARENA_STATS_PURGE_DELAY_MAX_MS,    \
      nullptr,                                                                                     \
      "Milliseconds a free page stays resident before it is returned to the kernel with "          \
      "madvise; 0 returns pages at once, -1 only on malloc_trim.")                                 \
    X(ABORT_ON_ERROR, Bool, 0, 0, 1, nullptr,                                                      \
      "Abort the process (after the report) on a double free or an invalid free.")                 \
    X(VERBOSE, Bool, 0, 0, 1, nullptr,                                                             \
      "Report initialisation (an `arena: active` line), every heap error rather than the first "   \
      "of each kind, and stats-page problems on stderr.")                                          \
    X(SHOW_STATS, Bool, 0, 0, 1, nullptr,                                                          \
      "Print malloc_stats() on stderr when the process exits.")                                    \
    X(STATS, Bool, 1, 0, 1, nullptr,                                                               \
      "Keep this process's counters in a stats page that arena-exporter, arena-stat and cmond "    \
      "read; 0 turns it off.")                                                                     \
    X(STATS_DIR, String, 0, 0, 0, ARENA_STATS_DEFAULT_DIR,                                         \
      "Base directory of the stats pages: a process keeps its page in <dir>/<uid>/<pid>. Refused " \
      "(stats off) unless owned by root or the process's user, and sticky if others may write "    \
      "it; made mode 1777 when missing.")                                                          \
    X(STATS_GROUP, String, 0, 0, 0, nullptr,                                                       \
      "A group (name in /etc/group, or number) that may read this process's stats page: the "      \
      "page becomes mode 0640 and its user's directory 0750, in that group (the process must "     \
      "belong to it).")                                                                            \
    X(PROFILE, Bool, 0, 0, 1, nullptr,                                                             \
      "Sample allocations with their call stacks for a heap profile from the start (arena-prof, "  \
      "cmond's /arena/<pid>/profile); it can also be turned on and off at run time.")              \
    X(PROFILE_RATE, Size, ARENA_PROFILE_DEFAULT_RATE, 1, ARENA_PROFILE_MAX_RATE, nullptr,          \
      "Mean bytes allocated between heap profile samples (exponentially distributed; suffixes "    \
      "K, M, G); 1 records every allocation.")                                                     \
    X(PROFILE_LEAKS, Bool, 0, 0, 1, nullptr,                                                       \
      "At exit, list on stderr the call sites of sampled blocks still live (needs "                \
      "ARENA_PROFILE=1 "                                                                           \
      "or profiling turned on meanwhile).")

enum class Opt : unsigned {
#define ARENA_OPTION_ENUM(id, kind, def, lo, hi, str, help) id,
    ARENA_OPTION_TABLE(ARENA_OPTION_ENUM)
#undef ARENA_OPTION_ENUM
        Count
};

struct OptionInfo {
    const char* env; // environment variable, "ARENA_" + id
    OptionKind kind;
    int64_t def;         // default (strings: unused)
    int64_t min, max;    // accepted range for Int and Size
    const char* def_str; // default of a String option
    const char* help;    // one sentence for the README and --help
};

inline constexpr unsigned kOptionCount = static_cast<unsigned>(Opt::Count);
extern ARENA_HIDDEN const OptionInfo kOptionTable[kOptionCount];

/// Reads every option from the environment; later calls do nothing.
void options_load();

/// Current value of a Bool, Int or Size option.
int64_t option(Opt o);

/// Current value of a String option (the environment's string, or the default).
const char* option_str(Opt o);

/// Changes an option at run time (the stats page's control area sets the purge delay).
void set_option(Opt o, int64_t v);

/// Parses a size with an optional K/M/G/T suffix (powers of 1024, optional "B"/"iB").
/// Returns false on anything else. Exposed for the unit tests.
bool parse_size(const char* s, int64_t* out);
bool parse_int(const char* s, int64_t* out);
bool parse_bool(const char* s, int64_t* out);

} // namespace arena
