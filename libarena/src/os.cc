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
#include <cstdlib>
#include <ctime>
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace arena::os {
namespace {

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
    return r < 0 && r > -4096 ? nullptr : reinterpret_cast<void*>(r);
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
    ps = v != 0 ? v : 4096;
    g_page_size.store(ps, std::memory_order_relaxed);
    return ps;
}

uint64_t now_ms() {
    const int saved = errno;
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    errno = saved;
    return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
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
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

int open_dir(int dir, const char* path) {
    return open_at(dir, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
}

uint64_t boot_ticks() {
    const int saved = errno;
    timespec ts{};
    clock_gettime(CLOCK_BOOTTIME, &ts);
    errno = saved;
    const uint64_t hz = auxv(AT_CLKTCK) != 0 ? auxv(AT_CLKTCK) : 100;
    return static_cast<uint64_t>(ts.tv_sec) * hz +
           static_cast<uint64_t>(ts.tv_nsec) / (1000000000ull / hz);
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
        char path[32] = "/proc/self/fd/";
        size_t len = 14;
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

} // namespace arena::os
