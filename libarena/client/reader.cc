// SPDX-License-Identifier: MIT
// The stats page reader (see stats_reader.h and include/arena/stats_page.h).
#include "stats_reader.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace arena::stats {

const EventInfo kEvents[ARENA_EV_COUNT] = {
#define ARENA_READER_EVENT(name, help) {#name, help},
    ARENA_STATS_EVENTS(ARENA_READER_EVENT)
#undef ARENA_READER_EVENT
};

namespace {

constexpr size_t kHeaderBytes = offsetof(arena_stats_page, shards);

/// Closes a descriptor on scope exit.
struct Fd {
    int fd = -1;
    explicit Fd(int f) : fd(f) {}
    ~Fd() {
        if (fd >= 0)
            close(fd);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
};

/// A read-only or read-write mapping of a whole page.
struct Mapping {
    void* p = MAP_FAILED;
    size_t size = 0;
    Mapping(int fd, size_t bytes, bool writable) : size(bytes) {
        p = mmap(nullptr, bytes, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    }
    ~Mapping() {
        if (p != MAP_FAILED)
            munmap(p, size);
    }
    bool ok() const { return p != MAP_FAILED; }
    arena_stats_page* page() const { return static_cast<arena_stats_page*>(p); }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
};

bool all_digits(const char* s) {
    if (*s == '\0')
        return false;
    for (; *s; ++s)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

template <class T>
T load(const T& field) {
    return __atomic_load_n(&field, __ATOMIC_RELAXED);
}

/// Start time (field 22 of /proc/<pid>/stat) of a process in our PID namespace, or 0.
uint64_t proc_start_time(int pid) {
    const std::string path = "/proc/" + std::to_string(pid) + "/stat";
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[1024];
    const ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char* p = strrchr(buf, ')');
    if (p == nullptr)
        return 0;
    int field = 2;
    for (; *p && field < 22; ++p)
        if (*p == ' ')
            ++field;
    return strtoull(p, nullptr, 10);
}

/// Validates the header of an open page. Returns false and sets *why when it is not a page of
/// this version, complete and whole.
bool check_header(int fd, const struct stat& st, Skip* why) {
    if (static_cast<size_t>(st.st_size) < kHeaderBytes) {
        *why = Skip::Truncated;
        return false;
    }
    arena_stats_page head;
    if (pread(fd, &head, kHeaderBytes, 0) != static_cast<ssize_t>(kHeaderBytes)) {
        *why = Skip::Unreadable;
        return false;
    }
    if (head.magic != ARENA_STATS_MAGIC) {
        *why = Skip::BadMagic;
        return false;
    }
    if (head.version != ARENA_STATS_VERSION) {
        *why = Skip::BadVersion;
        return false;
    }
    if (head.header_size != kHeaderBytes || head.size != sizeof(arena_stats_page) ||
        head.nshards != ARENA_STATS_SHARDS || head.nclasses > ARENA_STATS_MAX_CLASSES ||
        head.nevents > ARENA_STATS_EVENT_SLOTS || head.pid <= 0) {
        *why = Skip::BadSize;
        return false;
    }
    if (static_cast<uint64_t>(st.st_size) < head.size) {
        *why = Skip::Truncated;
        return false;
    }
    if ((head.flags & ARENA_STATS_READY) == 0) {
        *why = Skip::NotReady;
        return false;
    }
    return true;
}

/// True when no live writer holds the page's lock. Sets *why to Dead or PidReused.
bool is_stale(int fd, int pid, uint64_t start_time, Skip* why) {
    if (flock(fd, LOCK_EX | LOCK_NB) != 0)
        return false; // a writer holds it (EWOULDBLOCK), or locks are not supported: trust it
    flock(fd, LOCK_UN);
    const uint64_t now = proc_start_time(pid);
    *why = now != 0 && now != start_time ? Skip::PidReused : Skip::Dead;
    return true;
}

std::string copy_string(const char* s, size_t max) {
    return std::string(s, strnlen(s, max));
}

/// Copies the page into a Process (seqlocked gauges; frees before allocations).
Process snapshot(const arena_stats_page& p, const std::string& path) {
    Process out;
    out.pid = load(p.pid);
    out.start_time = load(p.start_time);
    out.created_unix_ns = load(p.created_unix_ns);
    out.comm = copy_string(p.comm, sizeof p.comm);
    out.cmdline = copy_string(p.cmdline, sizeof p.cmdline);
    out.path = path;
    out.page_size = load(p.page_size);
    const uint32_t nclasses = std::min<uint32_t>(load(p.nclasses), ARENA_STATS_MAX_CLASSES);
    const uint32_t nevents = std::min<uint32_t>(load(p.nevents), ARENA_EV_COUNT);
    // Only the shards in use: the rest of the file is a hole, and touching it costs a page
    // fault per 4 KiB. A heap made after this read counts nothing yet that we could miss.
    const uint32_t nshards = std::min<uint32_t>(__atomic_load_n(&p.shards_used, __ATOMIC_ACQUIRE),
                                                ARENA_STATS_SHARDS);

    // Gauges: retry while a write is in progress. A writer that died mid-write leaves an odd
    // sequence forever: after many tries take what is there.
    for (int attempt = 0; attempt < 10000; ++attempt) {
        const uint64_t s1 = __atomic_load_n(&p.global.seq, __ATOMIC_ACQUIRE);
        const uint64_t* from = reinterpret_cast<const uint64_t*>(&p.global);
        uint64_t* to = reinterpret_cast<uint64_t*>(&out.global);
        for (size_t i = 0; i < sizeof(arena_stats_global) / 8; ++i)
            to[i] = __atomic_load_n(&from[i], __ATOMIC_RELAXED);
        std::atomic_thread_fence(std::memory_order_acquire);
        const uint64_t s2 = __atomic_load_n(&p.global.seq, __ATOMIC_RELAXED);
        if (s1 == s2 && (s1 & 1) == 0)
            break;
    }
    const uint64_t* cfrom = reinterpret_cast<const uint64_t*>(&p.control);
    uint64_t* cto = reinterpret_cast<uint64_t*>(&out.control);
    for (size_t i = 0; i < sizeof(arena_stats_control) / 8; ++i)
        cto[i] = __atomic_load_n(&cfrom[i], __ATOMIC_ACQUIRE);

    out.classes.resize(nclasses);
    for (uint32_t c = 0; c < nclasses; ++c)
        out.classes[c].size = load(p.class_size[c]);
    // Frees first, then allocations: every free counted has its allocation counted too.
    for (uint32_t i = 0; i < nshards; ++i) {
        const arena_stats_shard& s = p.shards[i];
        for (uint32_t c = 0; c < nclasses; ++c)
            out.classes[c].frees += load(s.class_free[c]);
        out.events[ARENA_EV_large_frees] += load(s.events[ARENA_EV_large_frees]);
        out.events[ARENA_EV_large_free_bytes] += load(s.events[ARENA_EV_large_free_bytes]);
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    for (uint32_t i = 0; i < nshards; ++i) {
        const arena_stats_shard& s = p.shards[i];
        for (uint32_t c = 0; c < nclasses; ++c)
            out.classes[c].allocs += load(s.class_alloc[c]);
        for (uint32_t e = 0; e < nevents; ++e)
            if (e != ARENA_EV_large_frees && e != ARENA_EV_large_free_bytes)
                out.events[e] += load(s.events[e]);
    }
    // The writer raises the peak on its allocation slow paths only; what is live now is a
    // lower bound of the peak too.
    if (out.global.peak_live_bytes < out.live_bytes())
        out.global.peak_live_bytes = out.live_bytes();
    return out;
}

ControlResult control_error(ControlError e, std::string detail) {
    return ControlResult{e, std::move(detail)};
}

/// Opens dir/<pid> for writing a control request and checks it is a live page.
ControlResult open_for_control(const std::string& dir, int pid, int* fd_out) {
    if (pid <= 0)
        return control_error(ControlError::Invalid, "bad pid " + std::to_string(pid));
    const std::string path = dir + "/" + std::to_string(pid);
    const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return control_error(ControlError::NoPage,
                                 "no stats page for pid " + std::to_string(pid));
        if (errno == EACCES || errno == EPERM)
            return control_error(ControlError::Permission,
                                 "permission denied: the stats page of pid " +
                                     std::to_string(pid) + " belongs to another user");
        return control_error(ControlError::Io,
                             std::string("cannot open ") + path + ": " + strerror(errno));
    }
    struct stat st {};
    Skip why = Skip::Unreadable;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || !check_header(fd, st, &why)) {
        close(fd);
        return control_error(ControlError::Io,
                             "not a valid stats page: " + path + " (" + skip_name(why) + ")");
    }
    if (is_stale(fd, pid, 0, &why)) {
        close(fd);
        return control_error(ControlError::Stale,
                             "pid " + std::to_string(pid) + " is gone (stale stats page)");
    }
    *fd_out = fd;
    return {};
}

} // namespace

const char* skip_name(Skip why) {
    switch (why) {
    case Skip::Foreign:
        return "foreign";
    case Skip::Unreadable:
        return "unreadable";
    case Skip::Truncated:
        return "truncated";
    case Skip::BadMagic:
        return "bad_magic";
    case Skip::BadVersion:
        return "bad_version";
    case Skip::BadSize:
        return "bad_size";
    case Skip::NotReady:
        return "not_ready";
    case Skip::Dead:
        return "dead";
    case Skip::PidReused:
        return "pid_reused";
    case Skip::Count:
        break;
    }
    return "unknown";
}

uint64_t Process::live_bytes() const {
    int64_t live = static_cast<int64_t>(events[ARENA_EV_large_alloc_bytes] -
                                        events[ARENA_EV_large_free_bytes]);
    for (const SizeClass& c : classes)
        live += static_cast<int64_t>(c.allocs - c.frees) * c.size;
    return live > 0 ? static_cast<uint64_t>(live) : 0;
}

uint64_t Process::live_blocks() const {
    int64_t live = static_cast<int64_t>(events[ARENA_EV_large_allocs] - events[ARENA_EV_large_frees]);
    for (const SizeClass& c : classes)
        live += static_cast<int64_t>(c.allocs - c.frees);
    return live > 0 ? static_cast<uint64_t>(live) : 0;
}

std::optional<Process> read_page(const std::string& path, Skip* why) {
    Skip dummy = Skip::Unreadable;
    if (why == nullptr)
        why = &dummy;
    Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    if (fd.fd < 0) {
        *why = errno == ELOOP ? Skip::Foreign : Skip::Unreadable;
        return std::nullopt;
    }
    struct stat st {};
    if (fstat(fd.fd, &st) != 0) {
        *why = Skip::Unreadable;
        return std::nullopt;
    }
    if (!S_ISREG(st.st_mode)) {
        *why = Skip::Foreign;
        return std::nullopt;
    }
    if (!check_header(fd.fd, st, why))
        return std::nullopt;
    Mapping map(fd.fd, sizeof(arena_stats_page), false);
    if (!map.ok()) {
        *why = Skip::Unreadable;
        return std::nullopt;
    }
    const arena_stats_page& page = *map.page();
    if (is_stale(fd.fd, load(page.pid), load(page.start_time), why))
        return std::nullopt;
    return snapshot(page, path);
}

Scan scan(const std::string& dir, const ScanOptions& options) {
    Scan out;
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) {
        out.error = "cannot read " + dir + ": " + strerror(errno);
        return out;
    }
    while (const dirent* e = readdir(d)) {
        const char* name = e->d_name;
        if (name[0] == '.')
            continue; // ".", "..", and pages being created
        if (!all_digits(name)) {
            ++out.skipped[size_t(Skip::Foreign)];
            continue;
        }
        const std::string path = dir + "/" + name;
        Skip why = Skip::Unreadable;
        struct stat before {};
        const bool have_before = lstat(path.c_str(), &before) == 0;
        std::optional<Process> p = read_page(path, &why);
        if (p) {
            out.processes.push_back(std::move(*p));
            continue;
        }
        ++out.skipped[size_t(why)];
        if ((why == Skip::Dead || why == Skip::PidReused) && options.remove_stale) {
            // Remove only the file that was judged, not a new page renamed over it meanwhile.
            struct stat now {};
            if (have_before && lstat(path.c_str(), &now) == 0 && now.st_ino == before.st_ino &&
                now.st_dev == before.st_dev && unlink(path.c_str()) == 0)
                out.removed.push_back(path);
        }
    }
    closedir(d);
    std::sort(out.processes.begin(), out.processes.end(),
              [](const Process& a, const Process& b) { return a.pid < b.pid; });
    return out;
}

ControlResult request_trim(const std::string& dir, int pid) {
    int fd = -1;
    if (ControlResult r = open_for_control(dir, pid, &fd); !r.ok())
        return r;
    Fd guard(fd);
    Mapping map(fd, sizeof(arena_stats_page), true);
    if (!map.ok())
        return control_error(ControlError::Io,
                             std::string("cannot map the stats page: ") + strerror(errno));
    __atomic_fetch_add(&map.page()->control.trim_requests, 1, __ATOMIC_RELEASE);
    return {};
}

ControlResult request_purge_delay(const std::string& dir, int pid, int64_t ms) {
    if (ms < -1 || ms > 3600000)
        return control_error(ControlError::Invalid,
                             "purge delay must be between -1 and 3600000 ms, not " +
                                 std::to_string(ms));
    int fd = -1;
    if (ControlResult r = open_for_control(dir, pid, &fd); !r.ok())
        return r;
    Fd guard(fd);
    Mapping map(fd, sizeof(arena_stats_page), true);
    if (!map.ok())
        return control_error(ControlError::Io,
                             std::string("cannot map the stats page: ") + strerror(errno));
    __atomic_store_n(&map.page()->control.purge_delay_ms, ms, __ATOMIC_RELEASE);
    return {};
}

std::string default_dir() {
    const char* env = getenv("ARENA_STATS_DIR");
    return env != nullptr && *env != '\0' ? env : ARENA_STATS_DEFAULT_DIR;
}

} // namespace arena::stats
