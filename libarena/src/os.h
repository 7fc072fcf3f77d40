// SPDX-License-Identifier: MIT
// The operating-system layer: the only place that calls mmap, munmap, madvise, futex, clock and
// raw file I/O, or reads the environment. Every function preserves errno (malloc must not
// disturb it on success and free must never change it), and reports failure through its return
// value instead. System calls are made directly, not through libc's wrappers (os.cc says why).
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

/// gettid() through the system call.
long gettid();

/// The value of environment variable `name`, or nullptr: getenv without libc (reads environ).
const char* env(const char* name);

/// CLOCK_REALTIME in nanoseconds.
uint64_t unix_ns();

// ---- Files, for the stats page (each returns -errno on failure, like the system calls) -------

/// mkdir; when it created the directory, also sets `mode` exactly (the umask is not applied).
/// 0 when the directory exists or was made.
int make_dir(const char* path, unsigned mode);
/// open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW) with `mode` set exactly.
int create_file(const char* path, unsigned mode);
/// A shared flock on fd, held until the descriptor's last copy is closed.
int lock_shared(int fd);
/// ftruncate.
int resize_file(int fd, size_t size);
/// mmap(MAP_SHARED) of the first `size` bytes of fd; nullptr on failure.
void* map_file(int fd, size_t size);
void unmap(void* p, size_t size);
int rename_file(const char* from, const char* to);
int unlink_file(const char* path);
void close_fd(int fd);

/// Number of resident pages among the `npages` pages from `p` (mincore).
size_t resident_pages(const void* p, size_t npages);

/// True if [p, p+1) is mapped in this process (mincore). Used to bound copies of pointers the
/// allocator does not own.
bool is_mapped(const void* p);

[[noreturn]] void abort_process();

} // namespace arena::os
