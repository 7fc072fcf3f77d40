// SPDX-License-Identifier: MIT
// Linux implementation of os.h. Every call is a raw system call (inline `syscall`/`svc` on
// x86-64 and AArch64, libc's syscall() elsewhere), never a libc wrapper: a wrapper could be
// interposed by another preloaded library (which may call malloc), is a cancellation point, and
// sets errno; and its code is one more stretch of libc text faulted into every process on
// libarena (64 KiB at a time, with the kernel's fault-around). The system call returns
// -errno on failure, which is what these functions report; errno is never touched. Only the
// clocks go through libc (clock_gettime reads the vDSO, no system call).
#include "os.h"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace arena::os {
namespace {

/// A raw system call returns -1 .. -4095 for an error (-errno); anything else is a result.
constexpr long kMaxErrno = 4095;
/// The page size when the auxiliary vector has none (AT_PAGESZ): x86-64's.
constexpr size_t kFallbackPageSize = 4096;
/// The clock tick of /proc's times (USER_HZ) when AT_CLKTCK is missing: Linux's on x86-64.
constexpr uint64_t kFallbackClockTicks = 100;
constexpr long kMsPerSec = 1000;
constexpr long kNsPerMs = 1'000'000;
constexpr long kNsPerSec = kMsPerSec * kNsPerMs;

/// System call n with up to six arguments; the result, or -errno.
long sys(long n, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) {
#if defined(__x86_64__)
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc 0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory");
    return x0;
#else
    const int saved = errno;
    const long ret = ::syscall(n, a, b, c, d, e, f);
    const long result = ret == -1 ? -errno : ret;
    errno = saved;
    return result;
#endif
}

template <typename T>
long arg(T* p) {
    return reinterpret_cast<long>(p);
}

/// A system call that fails with EINTR when a signal arrives is simply made again.
template <typename... A>
long sys_restart(long n, A... args) {
    long r;
    do {
        r = sys(n, static_cast<long>(args)...);
    } while (r == -EINTR);
    return r;
}

void* map(size_t size, int prot, int flags, int fd) {
    const long r = sys(SYS_mmap, 0, static_cast<long>(size), prot, flags, fd, 0);
    // Addresses in the top 4 KiB are error codes.
    return r < 0 && r >= -kMaxErrno ? nullptr : reinterpret_cast<void*>(r);
}

constinit std::atomic<size_t> g_page_size{0};

} // namespace

void* reserve(size_t size) {
    return map(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1);
}

void unreserve(void* p, size_t size) {
    sys(SYS_munmap, arg(p), static_cast<long>(size));
}

size_t purge(void* p, size_t size) {
    const size_t ps = page_size();
    const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + ps - 1) & ~(ps - 1);
    const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + size) & ~(ps - 1);
    if (hi <= lo)
        return 0;
    if (sys(SYS_madvise, static_cast<long>(lo), static_cast<long>(hi - lo), MADV_DONTNEED) != 0)
        return 0;
    return hi - lo;
}

size_t page_size() {
    size_t ps = g_page_size.load(std::memory_order_relaxed);
    if (ps != 0)
        return ps;
    const int saved = errno; // getauxval sets errno when the entry is missing
    const unsigned long v = getauxval(AT_PAGESZ);
    errno = saved;
    ps = v != 0 ? v : kFallbackPageSize;
    g_page_size.store(ps, std::memory_order_relaxed);
    return ps;
}

uint64_t now_ms() {
    const int saved = errno;
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    errno = saved;
    return static_cast<uint64_t>(ts.tv_sec) * kMsPerSec +
           static_cast<uint64_t>(ts.tv_nsec) / kNsPerMs;
}

void futex_wait(std::atomic<uint32_t>* word, uint32_t expected) {
    sys(SYS_futex, arg(word), FUTEX_WAIT_PRIVATE, expected, 0, 0, 0);
}

void futex_wake(std::atomic<uint32_t>* word, int count) {
    sys(SYS_futex, arg(word), FUTEX_WAKE_PRIVATE, count, 0, 0, 0);
}

void yield() {
    sys(SYS_sched_yield);
}

void write_stderr(const char* s, size_t n) {
    while (n > 0) {
        const long w = sys_restart(SYS_write, 2, arg(s), n);
        if (w <= 0)
            return;
        s += w;
        n -= static_cast<size_t>(w);
    }
}

int keep_high(int fd) {
    if (fd < 0 || fd > 2)
        return fd;
    const long high = sys(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 3);
    sys(SYS_close, fd);
    return static_cast<int>(high);
}

namespace {

/// openat, retried on EINTR, with the result kept above 2.
int open_at(int dir, const char* path, int flags, unsigned mode = 0) {
    const long fd = sys_restart(SYS_openat, dir, arg(path), flags | O_CLOEXEC, mode);
    return fd < 0 ? static_cast<int>(fd) : keep_high(static_cast<int>(fd));
}

int status(long r) {
    return static_cast<int>(r);
}

int stat_impl(int dir, const char* path, FileStat* out, int flags) {
    struct stat st {};
    const long r = sys(SYS_newfstatat, dir, arg(path), arg(&st), flags);
    if (r != 0)
        return status(r);
    out->dev = st.st_dev;
    out->ino = st.st_ino;
    out->mode = st.st_mode;
    out->nlink = static_cast<uint32_t>(st.st_nlink);
    out->uid = st.st_uid;
    out->gid = st.st_gid;
    out->size = st.st_size;
    return 0;
}

} // namespace

long read_small_file(const char* path, char* buf, size_t n) {
    if (n == 0)
        return -1;
    const int fd = open_at(AT_FDCWD, path, O_RDONLY);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got + 1 < n) {
        const size_t want = n - 1 - got;
        const long r = sys_restart(SYS_read, fd, arg(buf + got), want);
        if (r <= 0)
            break;
        got += static_cast<size_t>(r);
        if (static_cast<size_t>(r) < want)
            break; // a short read of a small file (or of /proc's one-record files) is its end
    }
    sys(SYS_close, fd);
    buf[got] = '\0';
    return static_cast<long>(got);
}

int getpid() {
    return static_cast<int>(sys(SYS_getpid));
}

long gettid() {
    return sys(SYS_gettid);
}

unsigned long auxv(unsigned long type) {
    const int saved = errno; // getauxval sets it when the entry is missing
    const unsigned long v = getauxval(type);
    errno = saved;
    return v;
}

bool secure_exec() {
    return auxv(AT_SECURE) != 0;
}

const char* env(const char* name) {
    if (environ == nullptr)
        return nullptr;
    for (char** e = environ; *e != nullptr; ++e) {
        const char* a = *e;
        const char* b = name;
        while (*b != '\0' && *a == *b) {
            ++a;
            ++b;
        }
        if (*b == '\0' && *a == '=')
            return a + 1;
    }
    return nullptr;
}

uint64_t unix_ns() {
    const int saved = errno;
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    errno = saved;
    return static_cast<uint64_t>(ts.tv_sec) * kNsPerSec + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t thread_cpu_ns() {
    const int saved = errno;
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    errno = saved;
    return static_cast<uint64_t>(ts.tv_sec) * kNsPerSec + static_cast<uint64_t>(ts.tv_nsec);
}

int open_dir(int dir, const char* path) {
    return open_at(dir, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
}

uint64_t boot_ticks() {
    const int saved = errno;
    timespec ts{};
    clock_gettime(CLOCK_BOOTTIME, &ts);
    errno = saved;
    const uint64_t hz = auxv(AT_CLKTCK) != 0 ? auxv(AT_CLKTCK) : kFallbackClockTicks;
    return static_cast<uint64_t>(ts.tv_sec) * hz +
           static_cast<uint64_t>(ts.tv_nsec) / (kNsPerSec / hz);
}

void thread_name(char out[16]) {
    out[0] = '\0';
    sys(SYS_prctl, PR_GET_NAME, arg(out));
    out[15] = '\0';
}

int make_dir(int dir, const char* path, unsigned mode) {
    return status(sys(SYS_mkdirat, dir, arg(path), mode));
}

int stat_fd(int fd, FileStat* st) {
    return stat_impl(fd, "", st, AT_EMPTY_PATH);
}

int stat_at(int dir, const char* path, FileStat* st, bool follow) {
    return stat_impl(dir, path, st, follow ? 0 : AT_SYMLINK_NOFOLLOW);
}

int chmod_fd(int fd, unsigned mode) {
    return status(sys(SYS_fchmod, fd, mode));
}

int chown_fd(int fd, int uid, int gid) {
    return status(sys(SYS_fchown, fd, uid, gid));
}

int open_unnamed(int dir, unsigned mode) {
    return open_at(dir, ".", O_TMPFILE | O_RDWR, mode);
}

int create_file(int dir, const char* path, unsigned mode) {
    return open_at(dir, path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
}

int open_read(int dir, const char* path) {
    return open_at(dir, path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
}

int open_rw(int dir, const char* path) {
    return open_at(dir, path, O_RDWR | O_NOFOLLOW | O_NONBLOCK);
}

int reserve_file(int fd, size_t size) {
    return status(sys_restart(SYS_fallocate, fd, 0, 0, static_cast<long>(size)));
}

int write_at(int fd, const void* p, size_t n, uint64_t offset) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
        const long w = sys_restart(SYS_pwrite64, fd, arg(c), n, static_cast<long>(offset));
        if (w < 0)
            return status(w);
        if (w == 0)
            return -EIO;
        c += w;
        n -= static_cast<size_t>(w);
        offset += static_cast<uint64_t>(w);
    }
    return 0;
}

long read_at(int fd, void* p, size_t n, uint64_t offset) {
    return sys_restart(SYS_pread64, fd, arg(p), n, static_cast<long>(offset));
}

int link_unnamed(int fd, int dir, const char* name) {
    // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH on older kernels; the /proc/self/fd link works for
    // anyone (where /proc is mounted).
    long r = sys(SYS_linkat, fd, arg(""), dir, arg(name), AT_EMPTY_PATH);
    if (r == -EPERM || r == -ENOENT || r == -EINVAL) {
        constexpr char kFdDir[] = "/proc/self/fd/";
        char path[32] = "/proc/self/fd/";
        size_t len = sizeof kFdDir - 1;
        char digits[12];
        int n = 0;
        for (unsigned v = static_cast<unsigned>(fd); n == 0 || v != 0; v /= 10)
            digits[n++] = static_cast<char>('0' + v % 10);
        while (n > 0)
            path[len++] = digits[--n];
        path[len] = '\0';
        r = sys(SYS_linkat, AT_FDCWD, arg(path), dir, arg(name), AT_SYMLINK_FOLLOW);
    }
    return status(r);
}

int rename_at(int dir, const char* from, const char* to) {
    return status(sys(SYS_renameat2, dir, arg(from), dir, arg(to), 0));
}

int unlink_at(int dir, const char* name) {
    return status(sys(SYS_unlinkat, dir, arg(name), 0));
}

long read_dir(int fd, void* buf, size_t n) {
    return sys_restart(SYS_getdents64, fd, arg(buf), n);
}

void* map_file(int fd, size_t size) {
    return map(size, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
}

void unmap(void* p, size_t size) {
    sys(SYS_munmap, arg(p), static_cast<long>(size));
}

bool move_mapping(void* from, void* to, size_t size) {
    const long r = sys(SYS_mremap, arg(from), static_cast<long>(size), static_cast<long>(size),
                       MREMAP_MAYMOVE | MREMAP_FIXED, arg(to));
    return r == arg(to);
}

bool make_private(void* p, size_t size) {
    if (void* copy = map(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1)) {
        memcpy(copy, p, size);
        if (move_mapping(copy, p, size))
            return true;
        unreserve(copy, size);
    }
    sys(SYS_mmap, arg(p), static_cast<long>(size), PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    return false;
}

void close_fd(int fd) {
    if (fd >= 0)
        sys(SYS_close, fd);
}

int probe_pid(int pid) {
    return status(sys(SYS_kill, pid, 0));
}

int geteuid() {
    return static_cast<int>(sys(SYS_geteuid));
}

uint64_t soft_limit(int resource) {
    uint64_t lim[2] = {kNoLimit, kNoLimit}; // struct rlimit64: soft, hard
    if (sys(SYS_prlimit64, 0, resource, 0, arg(lim)) != 0)
        return kNoLimit;
    return lim[0];
}

int prlimit(int pid, int resource, const void* new_limit, void* old_limit) {
    return status(sys(SYS_prlimit64, pid, resource, arg(new_limit), arg(old_limit)));
}

bool is_this_process(int pid) {
    // tgkill with signal 0 checks that the thread exists in this thread group, and sends nothing.
    if (pid == 0 || pid == getpid())
        return true;
    return pid > 0 && sys(SYS_tgkill, getpid(), pid, 0) == 0;
}

bool is_mapped(const void* p, size_t n) {
    const uintptr_t ps = page_size();
    const uintptr_t lo = reinterpret_cast<uintptr_t>(p) & ~(ps - 1);
    const uintptr_t hi = reinterpret_cast<uintptr_t>(p) + n;
    if (p == nullptr || n == 0 || hi < lo || hi - lo > 2 * ps)
        return false;
    unsigned char vec[2];
    return sys(SYS_mincore, static_cast<long>(lo), static_cast<long>(hi - lo), arg(vec)) == 0;
}

bool vm_size(size_t* total, size_t* data) {
    // "size resident shared text lib data dt", in pages; data is data_vm + stack_vm.
    char buf[128];
    if (read_small_file("/proc/self/statm", buf, sizeof buf) <= 0)
        return false;
    uint64_t field[6] = {};
    const char* c = buf;
    for (unsigned i = 0; i < 6; ++i) {
        while (*c == ' ')
            ++c;
        if (*c < '0' || *c > '9')
            return false;
        for (; *c >= '0' && *c <= '9'; ++c)
            field[i] = field[i] * 10 + static_cast<uint64_t>(*c - '0');
    }
    *total = field[0] * page_size();
    *data = field[5] * page_size();
    return true;
}

size_t resident_pages(const void* p, size_t npages) {
    const size_t ps = page_size();
    unsigned char vec[4096];
    size_t resident = 0;
    auto* base = static_cast<const char*>(p);
    for (size_t done = 0; done < npages;) {
        const size_t n = npages - done < sizeof vec ? npages - done : sizeof vec;
        if (sys(SYS_mincore, arg(base + done * ps), static_cast<long>(n * ps), arg(vec)) != 0)
            break;
        for (size_t i = 0; i < n; ++i)
            resident += vec[i] & 1;
        done += n;
    }
    return resident;
}

bool is_mapped(const void* p) {
    const size_t ps = page_size();
    const uintptr_t page = reinterpret_cast<uintptr_t>(p) & ~(ps - 1);
    unsigned char vec = 0;
    return sys(SYS_mincore, static_cast<long>(page), 1, arg(&vec)) == 0;
}

void abort_process() {
    ::abort();
}

// ---- The purger's process ----------------------------------------------------------------------
//
// Layout of a helper's area (one reserve()): its stack, then 64 KiB of zeroed scratch, the
// thread pointer, and 64 KiB more. The helper gets a thread pointer of its own (CLONE_SETTLS):
// inheriting the creator's would leave it reading that thread's TLS (the stack-protector guard
// at %fs:0x28) after the thread exited and glibc unmapped its stack. The block at the thread
// pointer carries what compiled code may read there (x86-64: the self pointers and the stack
// and pointer guards, copied from the creating thread); a TLS access, which the helper's code
// never makes, would land in the scratch on either side (static TLS lies below the thread
// pointer on x86-64, above it on AArch64) instead of in another thread's variables.

namespace {

constexpr size_t kHelperStack = size_t{64} << 10;
constexpr size_t kHelperScratch = size_t{64} << 10;

#if defined(__x86_64__) || defined(__aarch64__)
constexpr bool kHelperArch = true;
#else
constexpr bool kHelperArch = false;
#endif

#ifndef SYS_close_range
#    define SYS_close_range 436
#endif
#ifndef SYS_futex_waitv
#    define SYS_futex_waitv 449
#endif
constexpr unsigned kCloseRangeUnshare = 1u << 1; // CLOSE_RANGE_UNSHARE
constexpr unsigned kPrGetTidAddress = 40;        // PR_GET_TID_ADDRESS
constexpr unsigned kFutex2SizeU32 = 0x02;        // FUTEX2_SIZE_U32
constexpr unsigned kFutex2Private = 128;         // FUTEX2_PRIVATE

/// clone() that runs fn(arg) on `stack_top` in the child and never returns there.
long clone_call(unsigned long flags, void* stack_top, uint32_t* ptid, uint32_t* ctid, void* tls,
                void (*fn)(void*), void* fn_arg) {
#if defined(__x86_64__)
    register long r10 __asm__("r10") = reinterpret_cast<long>(ctid);
    register long r8 __asm__("r8") = reinterpret_cast<long>(tls);
    register long r9 __asm__("r9") = reinterpret_cast<long>(fn);
    register long r12 __asm__("r12") = reinterpret_cast<long>(fn_arg);
    long ret;
    // The child returns from the system call on the new stack with every register as in the
    // parent but rax (0): it calls fn(arg) at once and exits if fn ever returns.
    __asm__ volatile("syscall\n\t"
                     "test %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "xor %%ebp, %%ebp\n\t"
                     "mov %%r12, %%rdi\n\t"
                     "call *%%r9\n\t"
                     "mov $60, %%eax\n\t"
                     "xor %%edi, %%edi\n\t"
                     "syscall\n\t"
                     "hlt\n\t"
                     "1:\n\t"
                     : "=a"(ret)
                     : "a"(SYS_clone), "D"(flags), "S"(stack_top), "d"(ptid), "r"(r10), "r"(r8),
                       "r"(r9), "r"(r12)
                     : "rcx", "r11", "memory");
    return ret;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = SYS_clone;
    register long x0 __asm__("x0") = static_cast<long>(flags);
    register long x1 __asm__("x1") = reinterpret_cast<long>(stack_top);
    register long x2 __asm__("x2") = reinterpret_cast<long>(ptid);
    register long x3 __asm__("x3") = reinterpret_cast<long>(tls);
    register long x4 __asm__("x4") = reinterpret_cast<long>(ctid);
    register long x10 __asm__("x10") = reinterpret_cast<long>(fn);
    register long x11 __asm__("x11") = reinterpret_cast<long>(fn_arg);
    __asm__ volatile("svc 0\n\t"
                     "cbnz x0, 1f\n\t"
                     "mov x29, xzr\n\t"
                     "mov x30, xzr\n\t"
                     "mov x0, x11\n\t"
                     "blr x10\n\t"
                     "mov x8, #93\n\t"
                     "mov x0, xzr\n\t"
                     "svc 0\n\t"
                     "1:\n\t"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x10), "r"(x11)
                     : "memory");
    return x0;
#else
    (void)flags, (void)stack_top, (void)ptid, (void)ctid, (void)tls, (void)fn, (void)fn_arg;
    return -ENOSYS;
#endif
}

/// Prepares the thread-pointer block at `tp` (see the top of this section); returns tp.
void* make_thread_pointer(char* tp) {
#if defined(__x86_64__)
    auto* w = reinterpret_cast<uintptr_t*>(tp);
    uintptr_t guard, pointer_guard;
    __asm__("mov %%fs:0x28, %0" : "=r"(guard));
    __asm__("mov %%fs:0x30, %0" : "=r"(pointer_guard));
    w[0] = reinterpret_cast<uintptr_t>(tp); // tcbhead_t.tcb
    w[2] = reinterpret_cast<uintptr_t>(tp); // tcbhead_t.self
    w[5] = guard;                           // tcbhead_t.stack_guard (0x28)
    w[6] = pointer_guard;                   // tcbhead_t.pointer_guard (0x30)
#endif
    return tp;
}

/// The kernel's sigaction (rt_sigaction), the same layout on x86-64 and AArch64.
struct KernelSigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)();
    uint64_t mask;
};

void helper_signal_noop(int) {}

} // namespace

#if defined(__x86_64__)
// The return path from a signal handler on x86-64 (SA_RESTORER is required there).
extern "C" void arena_helper_restore_rt();
__asm__(".text\n"
        ".p2align 4\n"
        ".hidden arena_helper_restore_rt\n"
        ".globl arena_helper_restore_rt\n"
        ".type arena_helper_restore_rt, @function\n"
        "arena_helper_restore_rt:\n"
        "    mov $15, %rax\n" // rt_sigreturn
        "    syscall\n"
        "    hlt\n"
        ".size arena_helper_restore_rt, .-arena_helper_restore_rt\n");
#endif

namespace {

/// Valgrind's RUNNING_ON_VALGRIND client request (valgrind.h, without the header): a sequence
/// of rotations that is a no-op on a real CPU, and that Valgrind recognises and answers. Its
/// core does not emulate a clone(CLONE_VM) without CLONE_THREAD: it would end the program.
bool under_valgrind() {
    unsigned long request[6] = {0x1001, 0, 0, 0, 0, 0}; // VG_USERREQ__RUNNING_ON_VALGRIND
    unsigned long result = 0;
#if defined(__x86_64__)
    __asm__ volatile("rolq $3, %%rdi\n\t"
                     "rolq $13, %%rdi\n\t"
                     "rolq $61, %%rdi\n\t"
                     "rolq $51, %%rdi\n\t"
                     "xchgq %%rbx, %%rbx"
                     : "=d"(result)
                     : "a"(request), "0"(result)
                     : "cc", "memory");
#elif defined(__aarch64__)
    register unsigned long x3 __asm__("x3") = 0;
    register unsigned long* x4 __asm__("x4") = request;
    __asm__ volatile("ror x12, x12, #3\n\t"
                     "ror x12, x12, #13\n\t"
                     "ror x12, x12, #51\n\t"
                     "ror x12, x12, #61\n\t"
                     "orr x10, x10, x10"
                     : "+r"(x3)
                     : "r"(x4)
                     : "cc", "memory");
    result = x3;
#endif
    return result != 0;
}

/// A sanitizer build (scripts/check_sanitize.sh): a helper runs instrumented code on a thread
/// pointer of its own, which the sanitizer runtime never saw (ThreadSanitizer keeps its thread
/// state in TLS, AddressSanitizer its fake stacks), so there is none. tests/unit/test_heap_threads
/// runs the purger's loop body on a thread instead.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#    if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#    else
constexpr bool kSanitized = false;
#    endif
#else
constexpr bool kSanitized = false;
#endif

} // namespace

bool helpers_supported() {
    // Not in a process under a seccomp filter (PR_GET_SECCOMP answers 2; 0 when none): the
    // filter's author listed the system calls the program makes, and one not listed may kill
    // it (systemd's SystemCallFilter= does, with SIGSYS) rather than fail. Asked every time: a
    // program may install one after start-up (sandboxes do). The question is a prctl, which
    // glibc makes anyway.
    if (!kHelperArch || kSanitized || sys(SYS_prctl, PR_GET_SECCOMP) != 0)
        return false;
    // 0 unknown, 1 yes, 2 no.
    static constinit std::atomic<int> known{0};
    int k = known.load(std::memory_order_relaxed);
    if (k != 0)
        return k == 1;
    // close_range of one descriptor number nobody can have: a no-op where the call exists.
    // (qemu-user refuses the clone itself with EINVAL: start_helper then fails, harmlessly.)
    const bool ok = !under_valgrind() && sys(SYS_close_range, ~0u, ~0u, 0) == 0;
    known.store(ok ? 1 : 2, std::memory_order_relaxed);
    return ok;
}

size_t helper_area_bytes() {
    return kHelperStack + 2 * kHelperScratch + page_size();
}

int start_helper(void (*fn)(void*), void* fn_arg, void* area, std::atomic<uint32_t>* alive) {
    if (!kHelperArch)
        return -ENOSYS;
    char* base = static_cast<char*>(area);
    void* stack_top = base + kHelperStack; // 16-byte aligned: the area is page aligned
    void* tp = make_thread_pointer(base + kHelperStack + kHelperScratch);
    // CLONE_FILES: the descriptor table is shared, not copied, until the helper's first call
    // replaces it by an empty one (close_range with CLOSE_RANGE_UNSHARE copies nothing), so
    // no descriptor of the program is ever held open by it. No CLONE_FS (a shared fs_struct
    // makes the kernel refuse setuid execs of the program: check_unsafe_exec), no
    // CLONE_SIGHAND (the program's handlers must never run on the helper). Exit signal 0: the
    // parent is never signalled and waits without __WALL/__WCLONE never see it. The kernel
    // writes the pid to `alive` before clone returns and clears it when the helper is done
    // with the memory (CLONE_CHILD_CLEARTID).
    const unsigned long flags = CLONE_VM | CLONE_FILES | CLONE_SETTLS | CLONE_UNTRACED |
                                CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;
    auto* word = reinterpret_cast<uint32_t*>(alive);
    // Every signal blocked across the clone: the helper starts with all of them blocked.
    uint64_t all = ~uint64_t{0}, old = 0;
    sys(SYS_rt_sigprocmask, SIG_SETMASK, arg(&all), arg(&old), 8);
    const long pid = clone_call(flags, stack_top, word, word, tp, fn, fn_arg);
    sys(SYS_rt_sigprocmask, SIG_SETMASK, arg(&old), 0, 8);
    return static_cast<int>(pid);
}

bool helper_isolate(const char* name, int death_signal) {
    if (sys(SYS_close_range, 0, ~0u, kCloseRangeUnshare) != 0)
        return false;
    sys(SYS_chdir, arg("/")); // hold no directory of the program's (a mount could not go away)
    sys(SYS_prctl, PR_SET_NAME, arg(name));
    KernelSigaction sa{};
    sa.handler = helper_signal_noop; // only to interrupt a sleep
    sa.mask = ~uint64_t{0};
#if defined(__x86_64__)
    sa.flags = 0x04000000; // SA_RESTORER
    sa.restorer = arena_helper_restore_rt;
#endif
    if (sys(SYS_rt_sigaction, death_signal, arg(&sa), 0, 8) != 0)
        return false;
    if (sys(SYS_prctl, PR_SET_PDEATHSIG, death_signal) != 0)
        return false;
    uint64_t mask = ~(uint64_t{1} << (death_signal - 1));
    sys(SYS_rt_sigprocmask, SIG_SETMASK, arg(&mask), 0, 8);
    // The helper shares the program's memory but keeps the credentials it was made with: if the
    // program drops privileges later (setuid after start-up), the helper does not. So it gives
    // itself nothing to use them for: no new privileges, and only these system calls.
    if (sys(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return false;
#if defined(__x86_64__)
    constexpr uint32_t kArch = AUDIT_ARCH_X86_64;
#else
    constexpr uint32_t kArch = AUDIT_ARCH_AARCH64;
#endif
    constexpr uint32_t kAllowed[] = {
        SYS_futex, SYS_futex_waitv,  SYS_getppid,         SYS_clock_gettime,
        SYS_exit,  SYS_rt_sigreturn, SYS_restart_syscall, SYS_sched_yield,
    };
    constexpr unsigned kN = sizeof kAllowed / sizeof kAllowed[0];
    // Instructions, in order: arch check (2), load nr (1), [x86-64: x32 check (1)], one test per
    // allowed call, madvise test, advice low and high words (4), deny, allow.
    sock_filter f[3 + 1 + kN + 5 + 2];
    unsigned i = 0;
    const unsigned total = sizeof f / sizeof f[0];
    const unsigned deny = total - 2, allow = total - 1;
    auto jump = [&](unsigned to) { return static_cast<uint8_t>(to - (i + 1)); };
    f[i] = BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)), ++i;
    f[i] = BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kArch, 0, jump(deny)), ++i;
    f[i] = BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)), ++i;
#if defined(__x86_64__)
    f[i] = BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, jump(deny), 0), ++i; // x32 calls
#else
    f[i] = BPF_JUMP(BPF_JMP | BPF_JA, 0, 0, 0), ++i; // keeps the layout the same
#endif
    for (uint32_t nr : kAllowed)
        f[i] = BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, jump(allow), 0), ++i;
    f[i] = BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_madvise, 0, jump(deny)), ++i;
    f[i] = BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[2])), ++i;
    f[i] = BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, MADV_DONTNEED, 0, jump(deny)), ++i;
    f[i] = BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[2]) + 4), ++i;
    f[i] = BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, jump(allow), jump(deny)), ++i;
    f[i++] = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
    f[i++] = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    sock_fprog prog{static_cast<unsigned short>(i), f};
    return i == total && sys(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, arg(&prog)) == 0;
}

int parent_pid() {
    return static_cast<int>(sys(SYS_getppid));
}

void helper_exit() {
    for (;;)
        sys(SYS_exit, 0);
}

uint64_t now_ms_raw() {
    timespec ts{};
    sys(SYS_clock_gettime, CLOCK_MONOTONIC_COARSE, arg(&ts));
    return static_cast<uint64_t>(ts.tv_sec) * kMsPerSec +
           static_cast<uint64_t>(ts.tv_nsec) / kNsPerMs;
}

void helper_sleep(const std::atomic<uint32_t>* word, uint32_t seq, int64_t timeout_ms,
                  const uint32_t* watch, uint32_t watch_value, bool* watch_ok) {
    if (watch != nullptr) {
        struct Waiter {
            uint64_t val, uaddr;
            uint32_t flags, reserved;
        };
        Waiter w[2] = {{seq, reinterpret_cast<uint64_t>(word), kFutex2SizeU32 | kFutex2Private, 0},
                       // The kernel's wake of a cleared tid is a shared-futex wake.
                       {watch_value, reinterpret_cast<uint64_t>(watch), kFutex2SizeU32, 0}};
        timespec deadline{};
        if (timeout_ms >= 0) {
            sys(SYS_clock_gettime, CLOCK_MONOTONIC, arg(&deadline));
            deadline.tv_sec += timeout_ms / kMsPerSec;
            deadline.tv_nsec += (timeout_ms % kMsPerSec) * kNsPerMs;
            if (deadline.tv_nsec >= kNsPerSec) {
                deadline.tv_sec += 1;
                deadline.tv_nsec -= kNsPerSec;
            }
        }
        const long r = sys(SYS_futex_waitv, arg(w), 2, 0, timeout_ms >= 0 ? arg(&deadline) : 0,
                           CLOCK_MONOTONIC);
        if (r != -ENOSYS)
            return;
        *watch_ok = false;
    }
    timespec rel{timeout_ms / kMsPerSec, (timeout_ms % kMsPerSec) * kNsPerMs};
    sys(SYS_futex, arg(word), FUTEX_WAIT_PRIVATE, seq, timeout_ms >= 0 ? arg(&rel) : 0, 0, 0);
}

uint32_t* tid_address() {
    uint32_t* p = nullptr;
    if (sys(SYS_prctl, kPrGetTidAddress, arg(&p), 0, 0, 0) != 0)
        return nullptr;
    return p;
}

int exec_call(const char* path, char* const argv[], char* const envp[]) {
    return static_cast<int>(sys(SYS_execve, arg(path), arg(argv), arg(envp)));
}

int exec_at_call(int dir, const char* path, char* const argv[], char* const envp[], int flags) {
    return static_cast<int>(sys(SYS_execveat, dir, arg(path), arg(argv), arg(envp), flags));
}

bool reap_helper(int pid, std::atomic<uint32_t>* alive, int64_t timeout_ms) {
    const uint64_t end = now_ms_raw() + static_cast<uint64_t>(timeout_ms);
    for (;;) {
        const uint32_t v = alive->load(std::memory_order_acquire);
        if (v == 0)
            break;
        const uint64_t now = now_ms_raw();
        if (now >= end)
            return false;
        const uint64_t left = end - now;
        timespec rel{static_cast<time_t>(left / kMsPerSec),
                     static_cast<long>(left % kMsPerSec) * kNsPerMs};
        // Shared: the kernel's wake at the helper's exit is not a private-futex wake.
        sys(SYS_futex, arg(alive), FUTEX_WAIT, v, arg(&rel), 0, 0);
    }
    siginfo_t si{};
    sys_restart(SYS_waitid, P_PID, pid, arg(&si), WEXITED | __WCLONE, 0);
    return true;
}

} // namespace arena::os
