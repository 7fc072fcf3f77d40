// SPDX-License-Identifier: MIT
// Linux implementation of os.h. Each entry point saves and restores errno.
#include "os.h"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace arena::os {
namespace {

/// Restores errno on scope exit.
class ErrnoKeeper {
public:
    ErrnoKeeper() : saved_(errno) {}
    ~ErrnoKeeper() { errno = saved_; }
    ErrnoKeeper(const ErrnoKeeper&) = delete;
    ErrnoKeeper& operator=(const ErrnoKeeper&) = delete;

private:
    int saved_;
};

constinit std::atomic<size_t> g_page_size{0};

} // namespace

void* reserve(size_t size) {
    ErrnoKeeper keep;
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
}

void unreserve(void* p, size_t size) {
    ErrnoKeeper keep;
    munmap(p, size);
}

size_t purge(void* p, size_t size) {
    ErrnoKeeper keep;
    const size_t ps = page_size();
    const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + ps - 1) & ~(ps - 1);
    const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + size) & ~(ps - 1);
    if (hi <= lo)
        return 0;
    if (madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED) != 0)
        return 0;
    return hi - lo;
}

size_t page_size() {
    size_t ps = g_page_size.load(std::memory_order_relaxed);
    if (ps != 0)
        return ps;
    ErrnoKeeper keep;
    long v = ::getpagesize();
    ps = v > 0 ? static_cast<size_t>(v) : 4096;
    g_page_size.store(ps, std::memory_order_relaxed);
    return ps;
}

uint64_t now_ms() {
    ErrnoKeeper keep;
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

void futex_wait(std::atomic<uint32_t>* word, uint32_t expected) {
    ErrnoKeeper keep;
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr,
            nullptr, 0);
}

void futex_wake(std::atomic<uint32_t>* word, int count) {
    ErrnoKeeper keep;
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, count, nullptr,
            nullptr, 0);
}

void yield() {
    ErrnoKeeper keep;
    sched_yield();
}

void write_stderr(const char* s, size_t n) {
    ErrnoKeeper keep;
    while (n > 0) {
        ssize_t w = ::write(2, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        s += w;
        n -= static_cast<size_t>(w);
    }
}

long read_small_file(const char* path, char* buf, size_t n) {
    ErrnoKeeper keep;
    if (n == 0)
        return -1;
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got + 1 < n) {
        ssize_t r = ::read(fd, buf + got, n - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += static_cast<size_t>(r);
    }
    ::close(fd);
    buf[got] = '\0';
    return static_cast<long>(got);
}

int getpid() {
    return static_cast<int>(syscall(SYS_getpid));
}

uint64_t unix_ns() {
    ErrnoKeeper keep;
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

int make_dir(const char* path, unsigned mode) {
    ErrnoKeeper keep;
    if (::mkdir(path, mode) == 0)
        return ::chmod(path, mode) == 0 ? 0 : -errno;
    return errno == EEXIST ? 0 : -errno;
}

int create_file(const char* path, unsigned mode) {
    ErrnoKeeper keep;
    const int fd = ::open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return -errno;
    if (::fchmod(fd, mode) != 0) {
        const int err = errno;
        ::close(fd);
        return -err;
    }
    return fd;
}

int lock_shared(int fd) {
    ErrnoKeeper keep;
    while (::flock(fd, LOCK_SH) != 0)
        if (errno != EINTR)
            return -errno;
    return 0;
}

int resize_file(int fd, size_t size) {
    ErrnoKeeper keep;
    return ::ftruncate(fd, static_cast<off_t>(size)) == 0 ? 0 : -errno;
}

void* map_file(int fd, size_t size) {
    ErrnoKeeper keep;
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? nullptr : p;
}

void unmap(void* p, size_t size) {
    ErrnoKeeper keep;
    munmap(p, size);
}

int rename_file(const char* from, const char* to) {
    ErrnoKeeper keep;
    return ::rename(from, to) == 0 ? 0 : -errno;
}

int unlink_file(const char* path) {
    ErrnoKeeper keep;
    return ::unlink(path) == 0 ? 0 : -errno;
}

void close_fd(int fd) {
    ErrnoKeeper keep;
    ::close(fd);
}

size_t resident_pages(const void* p, size_t npages) {
    ErrnoKeeper keep;
    const size_t ps = page_size();
    unsigned char vec[4096];
    size_t resident = 0;
    auto* base = static_cast<const char*>(p);
    for (size_t done = 0; done < npages;) {
        const size_t n = npages - done < sizeof vec ? npages - done : sizeof vec;
        if (mincore(const_cast<char*>(base + done * ps), n * ps, vec) != 0)
            break;
        for (size_t i = 0; i < n; ++i)
            resident += vec[i] & 1;
        done += n;
    }
    return resident;
}

bool is_mapped(const void* p) {
    ErrnoKeeper keep;
    const size_t ps = page_size();
    void* page = reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(p) & ~(ps - 1));
    unsigned char vec = 0;
    return mincore(page, 1, &vec) == 0;
}

void abort_process() {
    ::abort();
}

} // namespace arena::os
