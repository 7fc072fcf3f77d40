// SPDX-License-Identifier: MIT
// The operating-system layer: the only place that calls mmap, munmap, madvise, futex, clock and
// raw file I/O. Every function preserves errno (malloc must not disturb it on success and free
// must never change it), and reports failure through its return value instead.
//
// None of these functions allocate, so they are safe to call from inside malloc itself.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace arena::os {

/// Reserves `size` bytes of address space, readable and writable, MAP_NORESERVE (no commit
/// charge, demand paged). Returns nullptr when the kernel refuses. `size` is page aligned.
void* reserve(size_t size);

/// Unmaps a range obtained from reserve(). Used only for metadata of failed set-ups.
void unreserve(void* p, size_t size);

/// Returns the pages of [p, p+size) to the kernel (MADV_DONTNEED): they read as zero afterwards
/// and cost no memory until touched again. The range is rounded inward to whole OS pages.
/// Returns the number of bytes actually released.
size_t purge(void* p, size_t size);

/// Size of an OS page (sysconf is avoided: it may not be usable before libc is initialised).
size_t page_size();

/// CLOCK_MONOTONIC_COARSE in milliseconds (vDSO, no system call).
uint64_t now_ms();

/// Futex wait/wake on a process-private 32-bit word.
void futex_wait(std::atomic<uint32_t>* word, uint32_t expected);
void futex_wake(std::atomic<uint32_t>* word, int count);

/// Yields the CPU (sched_yield).
void yield();

/// Writes all of [s, s+n) to file descriptor 2, retrying on EINTR and short writes.
void write_stderr(const char* s, size_t n);

/// Reads at most n-1 bytes of a small file (e.g. /proc/self/comm) into buf, NUL-terminated.
/// Returns the number of bytes read, or -1.
long read_small_file(const char* path, char* buf, size_t n);

/// getpid() through the system call (never cached across fork).
int getpid();

/// True if [p, p+1) is mapped in this process (mincore). Used to bound copies of pointers the
/// allocator does not own.
bool is_mapped(const void* p);

[[noreturn]] void abort_process();

} // namespace arena::os
