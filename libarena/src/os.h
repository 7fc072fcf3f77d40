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

/// Reads at most n-1 bytes of a small file (e.g. /proc/self/comm) into buf, NUL-terminated,
/// until a read returns less than asked. Returns the number of bytes read, or -1.
long read_small_file(const char* path, char* buf, size_t n);

/// getpid() through the system call (never cached across fork).
int getpid();

/// gettid() through the system call.
long gettid();

/// An entry of the auxiliary vector (getauxval, errno kept); 0 when absent.
unsigned long auxv(unsigned long type);

/// True in a secure-exec process (setuid, setgid, file capabilities: AT_SECURE), where the
/// environment belongs to a less privileged user.
bool secure_exec();

/// The value of environment variable `name`, or nullptr: getenv without libc (reads environ).
const char* env(const char* name);

/// CLOCK_REALTIME in nanoseconds.
uint64_t unix_ns();

/// CLOCK_THREAD_CPUTIME_ID in nanoseconds: the calling thread's CPU time, which a preemption
/// does not advance.
uint64_t thread_cpu_ns();

/// CLOCK_BOOTTIME in clock ticks (AT_CLKTCK, USER_HZ): the unit and clock of a process's start
/// time in /proc/<pid>/stat.
uint64_t boot_ticks();

/// The calling thread's name (prctl PR_GET_NAME: the comm), NUL-terminated, in out[16].
void thread_name(char out[16]);

// ---- Files, for the stats page (each returns -errno on failure, like the system calls) -------
// Every descriptor these return is close-on-exec and never 0, 1 or 2: a program that started
// with its standard descriptors closed must get them back from its own first open(), and must
// not find its stdout writing into a stats page (keep_high() moves a descriptor above 2).

/// File status, the kernel's layout (the same as glibc's struct stat on x86-64 and AArch64).
struct FileStat {
    uint64_t dev, ino;
    uint32_t mode, nlink, uid, gid;
    int64_t size;
};

/// openat(dir, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW): a directory that is not a symlink.
/// `dir` may be kCwd.
inline constexpr int kCwd = -100; // AT_FDCWD
int open_dir(int dir, const char* path);
/// mkdirat(dir, path, mode); 0 when made, -EEXIST when it was there.
int make_dir(int dir, const char* path, unsigned mode);
/// fstat of a descriptor, or (with `path`) fstatat(dir, path, AT_SYMLINK_NOFOLLOW), or with
/// `follow`, of what the path leads to.
int stat_fd(int fd, FileStat* st);
int stat_at(int dir, const char* path, FileStat* st, bool follow);
int chmod_fd(int fd, unsigned mode);
int chown_fd(int fd, int uid, int gid); // -1 leaves that id as it is
/// An unnamed regular file in directory `dir` (O_TMPFILE), mode `mode`, read-write.
int open_unnamed(int dir, unsigned mode);
/// openat(dir, path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, mode).
int create_file(int dir, const char* path, unsigned mode);
/// openat(dir, path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK).
int open_read(int dir, const char* path);
/// openat(dir, path, O_RDWR | O_NOFOLLOW | O_NONBLOCK).
int open_rw(int dir, const char* path);
/// Reserves [0, size) of the file (fallocate): writes into it can never fail for want of space.
int reserve_file(int fd, size_t size);
/// pwrite of all of [p, p+n) at `offset`.
int write_at(int fd, const void* p, size_t n, uint64_t offset);
/// pread into [p, p+n) at `offset`: the bytes read, or -errno.
long read_at(int fd, void* p, size_t n, uint64_t offset);
/// Links the unnamed file `fd` as dir/name (linkat with AT_EMPTY_PATH, or through
/// /proc/self/fd where that needs a privilege the process lacks).
int link_unnamed(int fd, int dir, const char* name);
int rename_at(int dir, const char* from, const char* to);
int unlink_at(int dir, const char* name);
/// getdents64: fills buf with linux_dirent64 records; the bytes filled, 0 at the end, or -errno.
long read_dir(int fd, void* buf, size_t n);
/// mmap(MAP_SHARED) of the first `size` bytes of fd; nullptr on failure.
void* map_file(int fd, size_t size);
void unmap(void* p, size_t size);
/// Moves the mapping [from, from+size) to `to` (mremap MREMAP_FIXED), replacing whatever is
/// mapped there. False when the kernel refuses (nothing changed).
bool move_mapping(void* from, void* to, size_t size);
/// Replaces the mapping [p, p+size) (a shared one) with private anonymous memory at the same
/// address, holding the same bytes; false when they could not be kept (no memory for the copy:
/// the range then reads as zeros). Either way the range is private afterwards.
bool make_private(void* p, size_t size);
void close_fd(int fd);
/// Moves fd above 2 (F_DUPFD_CLOEXEC) when it is 0, 1 or 2; returns the descriptor to use.
int keep_high(int fd);
/// kill(pid, 0): 0 when the process exists, -ESRCH when it does not, -EPERM when it is
/// another user's.
int probe_pid(int pid);
/// The effective uid.
int geteuid();

// ---- Resource limits (budget.h decides what they mean for the reservation) -----------------

/// The soft limit of `resource` (RLIMIT_AS, RLIMIT_DATA) of this process, in bytes;
/// kNoLimit when it is unlimited or cannot be read.
inline constexpr uint64_t kNoLimit = ~uint64_t{0}; // RLIM_INFINITY
uint64_t soft_limit(int resource);
/// prlimit64(pid, resource, new_limit, old_limit), the system call behind setrlimit and prlimit
/// (both arguments point at two 64-bit words, soft then hard, or are null): 0 or -errno.
int prlimit(int pid, int resource, const void* new_limit, void* old_limit);
/// True when `pid` names this process (0, its pid, or the id of one of its threads: limits
/// belong to the whole thread group), as prlimit reads it.
bool is_this_process(int pid);
/// True when all of [p, p+n) (two pages at most) lies in mappings, so reading it cannot fault
/// unless they deny reading (mincore; no mapping is made or changed).
bool is_mapped(const void* p, size_t n);
/// This process's virtual size and its data + stack size in bytes, what RLIMIT_AS and
/// RLIMIT_DATA are checked against (/proc/self/statm). False when it cannot be read.
bool vm_size(size_t* total, size_t* data);

/// Number of resident pages among the `npages` pages from `p` (mincore).
size_t resident_pages(const void* p, size_t npages);

/// True if [p, p+1) is mapped in this process (mincore). Used to bound copies of pointers the
/// allocator does not own.
bool is_mapped(const void* p);

[[noreturn]] void abort_process();

// ---- The purger's process (purger.cc says what it is and why) ----------------------------------
// A helper process sharing the caller's memory (CLONE_VM) but nothing else the program can see:
// no thread of its thread group, no descriptor, no signal to anyone. The functions marked
// "helper side" run on it: they make raw system calls only and never touch TLS or errno.

/// True when helpers can be made here: x86-64 or AArch64, close_range (Linux 5.9) and seccomp
/// filters are available, the process is under no seccomp filter of its own (which may kill it
/// for a system call it does not list: asked every time), and not under Valgrind (which cannot
/// run one), and not in a sanitizer build (os.cc: kSanitized). The rest is probed once.
bool helpers_supported();

/// Where the helper runs: a private stack and thread-pointer area (helper_area_bytes, from
/// reserve()).
size_t helper_area_bytes();

/// Starts fn(arg) on a new helper process (clone: CLONE_VM, exit signal 0, untraced) using
/// `area`. `alive` is set to its pid before this returns, and cleared (with a futex wake) by the
/// kernel when the helper has let go of the memory. Every signal is blocked in the helper.
/// Returns the pid, or -errno.
int start_helper(void (*fn)(void*), void* arg, void* area, std::atomic<uint32_t>* alive);

/// Helper side, first thing: an empty descriptor table of its own (no copy of the program's was
/// ever taken), "/" as its working directory, the name `name` (ps), `death_signal` on the
/// death of its parent (it then interrupts a sleep; every other signal stays blocked), no new
/// privileges, and a seccomp filter that allows only what a purger does (futex, madvise
/// MADV_DONTNEED, getppid, the clock, exit). False when any step failed.
bool helper_isolate(const char* name, int death_signal);

/// Helper side: the tgid of its parent process (getppid).
int parent_pid();

/// Helper side: ends the helper (exit, this task only).
[[noreturn]] void helper_exit();

/// Helper side: CLOCK_MONOTONIC_COARSE in milliseconds, through the system call (no vDSO data
/// that the libc might reach through TLS, no errno).
uint64_t now_ms_raw();

/// Helper side: sleeps until `word` is not `seq` (a futex wake), `timeout_ms` passes (-1: no
/// timeout), a signal arrives, or, when `watch` is not null, the kernel clears `*watch` from
/// `watch_value` (futex_waitv, Linux 5.16; without it `watch` is not watched and *watch_ok is
/// set to false).
void helper_sleep(const std::atomic<uint32_t>* word, uint32_t seq, int64_t timeout_ms,
                  const uint32_t* watch, uint32_t watch_value, bool* watch_ok);

/// The address the kernel clears and wakes when the calling thread exits or execs
/// (PR_GET_TID_ADDRESS: glibc points it at the thread's tid), or null.
uint32_t* tid_address();

/// execve and execveat as system calls: they return only on failure, with -errno.
int exec_call(const char* path, char* const argv[], char* const envp[]);
int exec_at_call(int dir, const char* path, char* const argv[], char* const envp[], int flags);

/// Waits up to timeout_ms for a helper's `alive` word (start_helper) to be cleared, then reaps
/// the helper (waitid __WCLONE). False when it is still running.
bool reap_helper(int pid, std::atomic<uint32_t>* alive, int64_t timeout_ms);

} // namespace arena::os
