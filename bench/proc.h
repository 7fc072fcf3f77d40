// SPDX-License-Identifier: MIT
// bench/proc.h — what bench_alloc and bench_seed share about their own process: peak RSS from
// /proc/self/status and its breakdown from /proc/self/smaps, the --print-maps-match check that
// an LD_PRELOAD took, and flag parsing.
// `prog` names the program in error messages.
#pragma once

#include <cstdint>

namespace bench {

/// A "Vm...:   1234 kB" field of /proc/self/status, in KiB; 0 if unreadable.
uint64_t proc_status_kib(const char* field);

/// Exit status for --print-maps-match: 0 if some mapped file's path contains `needle` (it is
/// printed; proves an LD_PRELOAD took), 3 if none does, 2 if /proc/self/maps can't be read.
int maps_match(const char* prog, const char* needle);

/// Copies /proc/self/smaps to `path` (for --smaps: where a peak RSS comes from, mapping by
/// mapping); false with a message on stderr if either file fails.
bool save_smaps(const char* prog, const char* path);

/// A flag's value as a non-negative integer (decimal, 0x hex or 0 octal); exits with 2 and a
/// message otherwise.
uint64_t parse_u64(const char* prog, const char* flag, const char* text);

} // namespace bench
