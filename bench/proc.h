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

/// Resident memory now, exactly: Rss of /proc/self/smaps_rollup (a walk of the page tables), in
/// KiB; 0 if unreadable. /proc/self/status is not exact: since Linux 6.2 its counters are per-CPU
/// and read without their per-CPU parts, so VmRSS and VmHWM can be short by up to 31 pages per
/// CPU (measured here: glibc's small x2 run, VmHWM 4,856 KiB while smaps_rollup had 5,032).
uint64_t rss_exact_kib();

/// The peak RSS a benchmark reports: VmHWM, or the exact sample taken where the benchmark's
/// memory is at its largest (the end of its measured loop) if that is higher. Stores the
/// VmHWM it read in *vm_hwm_kib when that is given.
uint64_t peak_rss_kib(uint64_t exact_sample_kib, uint64_t* vm_hwm_kib = nullptr);

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
