// SPDX-License-Identifier: MIT
// The stats client's reader (reader.h): walks <base>/<uid>/<pid> with descriptors only (every
// open and stat relative to a directory descriptor, O_NOFOLLOW), judges each page against the
// process it names in procfs, copies it with pread through arena::snapshot::take (never mmap),
// and removes stale pages only after checking that the name still holds the inode judged.
//
// Order of the checks, cheapest first: the name (a canonical pid), the directory entry's type,
// the process in procfs (one open: no page is opened for a pid that does not exist unless it may
// be removed), then the file (type, links, owner, size), the snapshot, and the process's identity
// (pid, namespace, start time, uids, no exec since). Memory grows with valid pages only: junk costs
// a few system calls each and nothing is kept for it but a counter.
#include "reader.h"

#include "pread.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <elf.h>
#include <fcntl.h>
#include <iterator>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_map>

namespace arena::client {
namespace {

using Clock = std::chrono::steady_clock;

/// After a cap stops the scan, entries are still counted (as Limit) with readdir alone, so that
/// the skipped counts say how much was left: this many at least (a few milliseconds of readdir),
/// and more for this long.
constexpr size_t kCountAtLeast = 65536;
constexpr auto kCountGrace = std::chrono::milliseconds(100);

/// Bytes of /proc/<pid>/stat and /proc/<pid>/status read at most (stat is under 1 KiB even with
/// a 64-byte kernel thread name; status has its Uid: line in the first few hundred bytes).
constexpr size_t kProcFileBytes = 4096;

/// Every v2 magic is "ANRATSP" and a digit: a page whose magic differs in the last byte only is a
/// stats page of another version (v1: "ANRATSP1"), not junk.
constexpr uint64_t kMagicFamilyMask = 0x00ffffffffffffffull;

/// skip_name()'s answers, in the order of enum Skip.
constexpr const char* kSkipNames[] = {
    "foreign",    "unreadable", "unsafe_dir",      "truncated",     "bad_magic", "bad_version",
    "bad_size",   "not_ready",  "forged",          "foreign_owner", "duplicate", "dead",
    "pid_reused", "exec",       "other_namespace", "limit",
};
static_assert(std::size(kSkipNames) == size_t(Skip::Count), "a name for every Skip");

/// Closes a descriptor on scope exit.
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = o.fd_;
            o.fd_ = -1;
        }
        return *this;
    }
    ~Fd() { reset(); }
    int get() const { return fd_; }
    bool ok() const { return fd_ >= 0; }
    int release() {
        const int fd = fd_;
        fd_ = -1;
        return fd;
    }
    void reset() {
        if (fd_ >= 0)
            close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

/// A directory stream over a descriptor (fdopendir), closed on scope exit.
class DirStream {
public:
    DirStream() = default;
    /// Takes `fd` over (closes it on failure too).
    explicit DirStream(Fd fd) {
        dir_ = fdopendir(fd.get());
        if (dir_ != nullptr)
            fd.release();
    }
    DirStream(DirStream&& o) noexcept : dir_(o.dir_) { o.dir_ = nullptr; }
    DirStream& operator=(DirStream&& o) noexcept {
        std::swap(dir_, o.dir_);
        return *this;
    }
    ~DirStream() {
        if (dir_ != nullptr)
            closedir(dir_);
    }
    bool ok() const { return dir_ != nullptr; }
    int fd() const { return dir_ != nullptr ? dirfd(dir_) : -1; }
    const dirent* next() { return readdir(dir_); }

private:
    DIR* dir_ = nullptr;
};

/// take()'s Source over a page descriptor: pread, all the bytes asked for or failure.
struct PreadSource {
    int fd;
    bool read(size_t offset, void* to, size_t n) const {
        return pread_full(fd, to, n, static_cast<off_t>(offset)) == static_cast<ssize_t>(n);
    }
};

/// Reads up to `n` bytes at offset 0 of `fd`. Returns the count, or -1.
ssize_t read_prefix(int fd, void* to, size_t n) {
    return pread_full(fd, to, n, 0);
}

/// A canonical decimal number: digits only, no sign, no leading zero (except "0" itself when
/// `zero` is allowed), at most `max`.
bool parse_decimal(const char* s, uint64_t max, bool zero, uint64_t* out) {
    if (s[0] < '0' || s[0] > '9' || (s[0] == '0' && (s[1] != '\0' || !zero)))
        return false;
    uint64_t v = 0;
    for (; *s != '\0'; ++s) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + static_cast<uint64_t>(*s - '0');
        if (v > max)
            return false;
    }
    *out = v;
    return true;
}

bool parse_pid(const char* s, int* pid) {
    uint64_t v = 0;
    if (!parse_decimal(s, INT_MAX, false, &v))
        return false;
    *pid = static_cast<int>(v);
    return true;
}

bool parse_uid(const char* s, uid_t* uid) {
    uint64_t v = 0;
    if (!parse_decimal(s, uid_t(-1) - 1, true, &v)) // (uid_t)-1 is nobody's
        return false;
    *uid = static_cast<uid_t>(v);
    return true;
}

bool is_dot_or_dotdot(const char* name) {
    return name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

bool same_file(const struct stat& a, const struct stat& b) {
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

std::string errno_text(int err) {
    return strerror(err);
}

// ---- procfs ----

/// Whether a process exists, as procfs answered.
enum class Life { Alive, Gone, Unknown };

/// What /proc/<pid>/stat says.
struct ProcStat {
    uint64_t start_time = 0;
    char comm[256];
    size_t comm_len = 0;
};

/// Reads <procfs>/<pid>/<file> (at most kProcFileBytes - 1 bytes, NUL-terminated) into buf.
Life read_proc_file(int proc, int pid, const char* file, char* buf, size_t* len) {
    char path[64];
    snprintf(path, sizeof path, "%d/%s", pid, file);
    Fd fd(openat(proc, path, O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!fd.ok())
        return errno == ENOENT || errno == ESRCH ? Life::Gone : Life::Unknown;
    size_t done = 0;
    while (done + 1 < kProcFileBytes) {
        const ssize_t r = read(fd.get(), buf + done, kProcFileBytes - 1 - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno == ESRCH ? Life::Gone : Life::Unknown;
        if (r == 0)
            break;
        done += static_cast<size_t>(r);
    }
    buf[done] = '\0';
    *len = done;
    return Life::Alive;
}

/// The start time (field 22) and comm of process `pid`. The comm is what lies between the first
/// '(' and the last ')': it may itself hold spaces and parentheses.
Life read_stat(int proc, int pid, ProcStat* out) {
    char buf[kProcFileBytes];
    size_t len = 0;
    const Life life = read_proc_file(proc, pid, "stat", buf, &len);
    if (life != Life::Alive)
        return life;
    const char* open = static_cast<const char*>(memchr(buf, '(', len));
    const char* close = static_cast<const char*>(memrchr(buf, ')', len));
    if (open == nullptr || close == nullptr || close < open)
        return Life::Unknown;
    out->comm_len = std::min<size_t>(static_cast<size_t>(close - open - 1), sizeof out->comm);
    memcpy(out->comm, open + 1, out->comm_len);
    // ") S ppid ...": field 3 starts after the space that follows ')'.
    const char* p = close + 1;
    for (int field = 2; field < 22; ++field) {
        p = strchr(p, ' ');
        if (p == nullptr)
            return Life::Unknown;
        ++p;
    }
    if (*p < '0' || *p > '9')
        return Life::Unknown;
    char* end = nullptr;
    out->start_time = strtoull(p, &end, 10);
    return *end == ' ' || *end == '\n' || *end == '\0' ? Life::Alive : Life::Unknown;
}

/// The four uids of process `pid` (real, effective, saved, filesystem) from its status file.
Life read_uids(int proc, int pid, uid_t uids[4]) {
    char buf[kProcFileBytes];
    size_t len = 0;
    const Life life = read_proc_file(proc, pid, "status", buf, &len);
    if (life != Life::Alive)
        return life;
    const char* line = strstr(buf, "\nUid:");
    if (line == nullptr)
        return Life::Unknown;
    const char* p = line + 5;
    for (int i = 0; i < 4; ++i) {
        while (*p == '\t' || *p == ' ')
            ++p;
        if (*p < '0' || *p > '9')
            return Life::Unknown;
        char* end = nullptr;
        const unsigned long long v = strtoull(p, &end, 10);
        if (v > uid_t(-1))
            return Life::Unknown;
        uids[i] = static_cast<uid_t>(v);
        p = end;
    }
    return Life::Alive;
}

/// Whether process `pid` has exec'd since it made a page with (entry, random): its auxiliary
/// vector's AT_ENTRY and AT_RANDOM are new at every exec (with ASLR, even of the same program).
/// False when the vector cannot be read (another user's process, for a reader that is neither
/// that user nor root): then the page stands.
bool exec_since(int proc, int pid, uint64_t entry, uint64_t random) {
    char path[64];
    snprintf(path, sizeof path, "%d/auxv", pid);
    Fd fd(openat(proc, path, O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!fd.ok())
        return false;
    uint64_t words[2 * 64]; // (type, value) pairs; Linux has about 30 entries
    size_t got = 0;
    while (got < sizeof words) {
        const ssize_t r = read(fd.get(), reinterpret_cast<char*>(words) + got, sizeof words - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += static_cast<size_t>(r);
    }
    uint64_t now_entry = 0, now_random = 0;
    for (size_t i = 0; i + 1 < got / sizeof(uint64_t); i += 2) {
        if (words[i] == AT_ENTRY)
            now_entry = words[i + 1];
        else if (words[i] == AT_RANDOM)
            now_random = words[i + 1];
    }
    if (now_entry == 0 && now_random == 0)
        return false; // nothing to compare with
    return now_entry != entry || now_random != random;
}

/// The PID namespace whose pids `procfs` shows: the inode of <procfs>/1/ns/pid (the namespace of
/// its init), else of <procfs>/self/ns/pid (reading init's needs root), else 0 (unknown).
uint64_t procfs_pid_ns(int proc) {
    struct stat st {};
    if (fstatat(proc, "1/ns/pid", &st, 0) == 0 || fstatat(proc, "self/ns/pid", &st, 0) == 0)
        return st.st_ino;
    return 0;
}

// ---- judging one page ----

/// What every judgement of a scan (or a read_pid) shares.
struct Context {
    const ScanOptions& options;
    std::string base;
    Fd proc;             // options.procfs
    uint64_t pid_ns = 0; // procfs_pid_ns(), 0: unknown
    uid_t euid = geteuid();
    std::string error; // why the context could not be made

    Context(const std::string& base_dir, const ScanOptions& o) : options(o), base(base_dir) {
        proc = Fd(open(o.procfs.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!proc.ok()) {
            error = "cannot read " + o.procfs + ": " + errno_text(errno);
            return;
        }
        pid_ns = procfs_pid_ns(proc.get());
    }
};

/// An open user directory <base>/<uid>.
struct UserDir {
    Fd fd;
    std::string name;
    uid_t uid = 0;           // its owner (= its name)
    bool may_remove = false; // stale pages in it may be deleted (by its owner or root)
};

/// Why open_user_dir() gave no directory. `Denied` and `Absent` are not skips of a scan: a
/// private directory of another user is normal for a reader that is not root.
enum class DirResult { Ok, Skipped, Denied, Absent };

/// Opens <base>/<name> as a user directory: a real directory, named by its owner's uid, that no
/// one but its owner may write. Sets *why when Skipped.
DirResult open_user_dir(const Context& cx, int base, const char* name, UserDir* out, Skip* why) {
    struct stat st {};
    if (fstatat(base, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT)
            return DirResult::Absent;
        *why = Skip::Unreadable;
        return DirResult::Skipped;
    }
    uid_t uid = 0;
    if (!S_ISDIR(st.st_mode) || !parse_uid(name, &uid)) {
        *why = Skip::Foreign;
        return DirResult::Skipped;
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        *why = Skip::UnsafeDir;
        return DirResult::Skipped;
    }
    if (st.st_uid != uid) {
        *why = Skip::ForeignOwner;
        return DirResult::Skipped;
    }
    Fd fd(openat(base, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.ok()) {
        if (errno == EACCES || errno == EPERM)
            return DirResult::Denied;
        if (errno == ENOENT)
            return DirResult::Absent;
        *why = errno == ELOOP || errno == ENOTDIR ? Skip::Foreign : Skip::Unreadable;
        return DirResult::Skipped;
    }
    // What was opened is what was checked (not a directory swapped in meanwhile).
    struct stat now {};
    if (fstat(fd.get(), &now) != 0 || !same_file(now, st) || now.st_mode != st.st_mode ||
        now.st_uid != st.st_uid) {
        *why = Skip::Unreadable;
        return DirResult::Skipped;
    }
    out->fd = std::move(fd);
    out->name = name;
    out->uid = uid;
    out->may_remove = cx.options.remove_stale && (cx.euid == 0 || cx.euid == uid);
    return DirResult::Ok;
}

/// Deletes dir/name if it is still the file judged (a page linked there since is left alone).
bool remove_if_same(int dir, const char* name, const struct stat& judged) {
    struct stat now {};
    return fstatat(dir, name, &now, AT_SYMLINK_NOFOLLOW) == 0 && same_file(now, judged) &&
           unlinkat(dir, name, 0) == 0;
}

/// The outcome of judging one page.
struct Verdict {
    bool valid = false;
    Skip why = Skip::Unreadable; // when not valid
    bool absent = false;         // the file was not there (only read_pid cares)
    bool removed = false;        // stale, and deleted
    struct stat st {};           // the file judged (valid when opened)
    uid_t proc_euid = 0;         // the process's effective uid (valid pages)
};

Verdict refuse(Skip why) {
    Verdict v;
    v.why = why;
    return v;
}

/// A stale page (Dead, PidReused, Exec) of this PID namespace: removed when allowed.
Verdict stale(const UserDir& dir, const char* name, const struct stat& st, Skip why) {
    Verdict v = refuse(why);
    v.st = st;
    v.removed = dir.may_remove && remove_if_same(dir.fd.get(), name, st);
    return v;
}

/// The verdict on a page whose process procfs shows gone (stale) or cannot show (unreadable);
/// nullopt while it is alive.
std::optional<Verdict> unless_alive(Life life, const UserDir& dir, const char* name,
                                    const struct stat& st) {
    if (life == Life::Gone)
        return stale(dir, name, st, Skip::Dead);
    if (life == Life::Unknown)
        return refuse(Skip::Unreadable);
    return std::nullopt;
}

bool other_namespace(const Context& cx, const arena_stats_head& head) {
    return head.pid_ns != 0 && cx.pid_ns != 0 && head.pid_ns != cx.pid_ns;
}

/// Why a file shorter than a page is refused: another version's page or junk tell themselves
/// apart by their first bytes; anything else is a cut page.
Skip classify_short(int fd) {
    arena_stats_head head{};
    const ssize_t n = read_prefix(fd, &head, ARENA_STATS_OFFSET(header_size));
    if (n < static_cast<ssize_t>(ARENA_STATS_OFFSET(header_size)))
        return Skip::Truncated;
    if ((head.magic & kMagicFamilyMask) != (ARENA_STATS_MAGIC & kMagicFamilyMask))
        return Skip::BadMagic;
    if (head.magic != ARENA_STATS_MAGIC || head.version != ARENA_STATS_VERSION)
        return Skip::BadVersion;
    return Skip::Truncated;
}

/// A page whose process is gone: deleted when it may be, and only when it is a page of this
/// namespace naming that pid; anything else is counted Dead and left alone. Returns nullopt when
/// the process turned out to exist after all (a new process took the pid meanwhile: judge the
/// page as a live one's, from `*ps`).
std::optional<Verdict> judge_gone(const Context& cx, const UserDir& dir, const char* name, int pid,
                                  int fd, const struct stat& st, ProcStat* ps) {
    arena_stats_head head{};
    if (read_prefix(fd, &head, sizeof head) != static_cast<ssize_t>(sizeof head) ||
        head.magic != ARENA_STATS_MAGIC || head.version != ARENA_STATS_VERSION || head.pid != pid) {
        Verdict v = refuse(Skip::Dead);
        v.st = st;
        return v;
    }
    if (other_namespace(cx, head))
        return refuse(Skip::OtherNamespace);
    return unless_alive(read_stat(cx.proc.get(), pid, ps), dir, name, st);
}

/// Judges dir/name (a canonical pid `pid`; `type` is the entry's d_type or DT_UNKNOWN). When the
/// page is valid, fills *out.
Verdict judge(const Context& cx, const UserDir& dir, const char* name, int pid, unsigned char type,
              Process* out) {
    if (type != DT_UNKNOWN && type != DT_REG)
        return refuse(Skip::Foreign);
    ProcStat ps;
    Life life = read_stat(cx.proc.get(), pid, &ps);
    if (life == Life::Unknown)
        return refuse(Skip::Unreadable);
    // No such process: the page is stale whatever it holds. It is only opened to be removed.
    if (life == Life::Gone && !dir.may_remove)
        return refuse(Skip::Dead);

    Fd fd(openat(dir.fd.get(), name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
    if (!fd.ok()) {
        if (errno == ENOENT) {
            Verdict v = refuse(life == Life::Gone ? Skip::Dead : Skip::Unreadable);
            v.absent = true;
            return v;
        }
        // ELOOP: a symlink; ENXIO: a socket (or a fifo swapped in).
        if (errno == ELOOP || errno == ENXIO || errno == ENODEV)
            return refuse(Skip::Foreign);
        return refuse(life == Life::Gone ? Skip::Dead : Skip::Unreadable);
    }
    struct stat st {};
    if (fstat(fd.get(), &st) != 0)
        return refuse(Skip::Unreadable);
    if (!S_ISREG(st.st_mode) || st.st_nlink != 1)
        return refuse(Skip::Foreign);
    if (st.st_uid != dir.uid)
        return refuse(Skip::ForeignOwner);
    if (life == Life::Gone) {
        if (std::optional<Verdict> v = judge_gone(cx, dir, name, pid, fd.get(), st, &ps))
            return *v;
    }

    if (static_cast<uint64_t>(st.st_size) < sizeof(arena_stats_page))
        return refuse(classify_short(fd.get()));
    snapshot::Snapshot& snap = out->snap;
    switch (snapshot::take(PreadSource{fd.get()}, &snap)) {
    case snapshot::Error::None:
    case snapshot::Error::Torn: // the copy stands as it is (stats_snapshot.h)
        break;
    case snapshot::Error::Io: {
        struct stat now {};
        const bool cut = fstat(fd.get(), &now) == 0 &&
                         static_cast<uint64_t>(now.st_size) < sizeof(arena_stats_page);
        return refuse(cut ? Skip::Truncated : Skip::Unreadable);
    }
    case snapshot::Error::BadMagic:
        return refuse((snap.head.magic & kMagicFamilyMask) == (ARENA_STATS_MAGIC & kMagicFamilyMask)
                          ? Skip::BadVersion
                          : Skip::BadMagic);
    case snapshot::Error::BadVersion:
        return refuse(Skip::BadVersion);
    case snapshot::Error::BadLayout:
        return refuse(Skip::BadSize);
    case snapshot::Error::NotReady:
        return refuse(Skip::NotReady);
    }
    const arena_stats_head& head = snap.head;
    if (head.pid != pid)
        return refuse(Skip::Forged);
    // Before any staleness verdict: a pid of another namespace says nothing about ours, and its
    // page must never be removed from here.
    if (other_namespace(cx, head))
        return refuse(Skip::OtherNamespace);
    // The page was made at head.start_time (boot clock ticks), never before its process
    // started: a process that started later has taken the pid of a dead one.
    if (ps.start_time > head.start_time) {
        // The pid may have been taken by the page's own (new) process between the two reads.
        if (std::optional<Verdict> v =
                unless_alive(read_stat(cx.proc.get(), pid, &ps), dir, name, st))
            return *v;
        if (ps.start_time > head.start_time)
            return stale(dir, name, st, Skip::PidReused);
    }
    uid_t uids[4];
    if (std::optional<Verdict> v = unless_alive(read_uids(cx.proc.get(), pid, uids), dir, name, st))
        return *v;
    if (st.st_uid != 0 && std::find(uids, uids + 4, st.st_uid) == uids + 4)
        return refuse(Skip::ForeignOwner);
    if ((head.exec_entry != 0 || head.exec_random != 0) &&
        exec_since(cx.proc.get(), pid, head.exec_entry, head.exec_random))
        return stale(dir, name, st, Skip::Exec);

    Verdict v;
    v.valid = true;
    v.st = st;
    v.proc_euid = uids[1];
    out->pid = pid;
    out->uid = st.st_uid;
    out->start_time = ps.start_time;
    out->comm.assign(ps.comm, ps.comm_len);
    out->cmdline.assign(head.cmdline, strnlen(head.cmdline, sizeof head.cmdline));
    out->path = cx.base + "/" + dir.name + "/" + name;
    return v;
}

/// Which of two valid pages of one pid is kept: root's, then the one owned by the process's
/// effective uid, then the first found.
int rank(uid_t owner, uid_t proc_euid) {
    return owner == 0 ? 2 : owner == proc_euid ? 1 : 0;
}

// ---- the scan's caps ----

/// Entries and time a scan may spend, and what it counts once they are spent.
class Budget {
public:
    explicit Budget(const ScanOptions& o)
        : max_entries_(o.max_entries), end_(Clock::now() + o.deadline) {}

    /// Whether one more entry may be examined. False once a cap is reached (and from then on).
    bool take() {
        if (stopped_)
            return false;
        if (++entries_ > max_entries_ || Clock::now() >= end_)
            stop();
        return !stopped_;
    }
    /// Ends the examination (the page cap); what follows is only counted.
    void stop() {
        if (!stopped_) {
            stopped_ = true;
            count_until_ = Clock::now() + kCountGrace;
        }
    }
    bool stopped() const { return stopped_; }
    /// Whether entries after the stop may still be counted one by one (readdir alone, for a
    /// short while).
    bool may_count() {
        if (exhausted_)
            return false;
        if (++counted_ > kCountAtLeast && (counted_ & 255) == 0 && Clock::now() >= count_until_)
            exhausted_ = true;
        return !exhausted_;
    }

private:
    size_t max_entries_;
    size_t entries_ = 0;
    Clock::time_point end_;
    bool stopped_ = false;
    Clock::time_point count_until_{};
    size_t counted_ = 0;
    bool exhausted_ = false;
};

/// A scan in progress: the pages kept so far, one per pid.
struct Collector {
    Scan& out;
    size_t max_pages;
    std::unordered_map<int, size_t> index; // pid -> processes[i]
    std::vector<int> ranks;                // of processes[i]

    /// Adds a valid page, or counts it Duplicate (or Limit: false when max_pages is reached).
    bool add(Process& p, const Verdict& v) {
        const int r = rank(p.uid, v.proc_euid);
        if (const auto it = index.find(p.pid); it != index.end()) {
            ++out.skipped[size_t(Skip::Duplicate)];
            if (r > ranks[it->second]) {
                out.processes[it->second] = std::move(p);
                ranks[it->second] = r;
            }
            return true;
        }
        if (out.processes.size() >= max_pages) {
            ++out.skipped[size_t(Skip::Limit)];
            return false;
        }
        index.emplace(p.pid, out.processes.size());
        ranks.push_back(r);
        out.processes.push_back(std::move(p));
        return true;
    }
};

/// Counts the rest of a directory stream as Limit, while that is cheap.
void count_rest(DirStream& d, Budget& budget, Scan& out) {
    while (const dirent* e = d.next()) {
        if (is_dot_or_dotdot(e->d_name))
            continue;
        if (!budget.may_count())
            return;
        ++out.skipped[size_t(Skip::Limit)];
    }
}

/// Examines the pages of one user directory.
void scan_user_dir(const Context& cx, UserDir& dir, Budget& budget, Collector& keep,
                   Process& scratch) {
    Scan& out = keep.out;
    DirStream d(Fd(fcntl(dir.fd.get(), F_DUPFD_CLOEXEC, 0)));
    if (!d.ok()) {
        ++out.skipped[size_t(Skip::Unreadable)];
        return;
    }
    size_t examined = 0;
    while (const dirent* e = d.next()) {
        const char* name = e->d_name;
        if (is_dot_or_dotdot(name))
            continue;
        if (++examined > cx.options.max_entries_per_dir || !budget.take()) {
            out.truncated = true;
            ++out.skipped[size_t(Skip::Limit)];
            count_rest(d, budget, out);
            return;
        }
        int pid = 0;
        if (!parse_pid(name, &pid)) {
            ++out.skipped[size_t(Skip::Foreign)];
            continue;
        }
        const Verdict v = judge(cx, dir, name, pid, e->d_type, &scratch);
        if (v.removed)
            ++out.removed;
        if (!v.valid) {
            ++out.skipped[size_t(v.why)];
            continue;
        }
        if (!keep.add(scratch, v)) {
            out.truncated = true;
            budget.stop();
            count_rest(d, budget, out);
            return;
        }
    }
}

/// The candidate directories of a process: its effective, real, saved and filesystem uids, and
/// root's, each once.
std::vector<uid_t> candidate_uids(const uid_t uids[4]) {
    std::vector<uid_t> c;
    for (const uid_t u : {uids[1], uids[0], uids[2], uids[3], uid_t{0}})
        if (std::find(c.begin(), c.end(), u) == c.end())
            c.push_back(u);
    return c;
}

/// A page found for one pid (read_pid and the control requests).
struct Found {
    std::optional<Process> process;
    Skip why = Skip::Foreign;
    bool no_process = false; // the pid is not running (why: Dead)
    uid_t denied_uid = 0;    // a candidate directory we may not read...
    bool denied = false;     // ...exists
    UserDir dir;             // where the page is (valid pages)
    struct stat st {};       // the page judged
};

Found find_page(const std::string& base, int pid, const ScanOptions& options) {
    Found f;
    if (pid <= 0) {
        f.why = Skip::Dead;
        f.no_process = true;
        return f;
    }
    const Context cx(base, options);
    if (!cx.error.empty()) {
        f.why = Skip::Unreadable;
        return f;
    }
    uid_t uids[4];
    switch (read_uids(cx.proc.get(), pid, uids)) {
    case Life::Gone:
        f.why = Skip::Dead;
        f.no_process = true;
        return f;
    case Life::Unknown:
        f.why = Skip::Unreadable;
        return f;
    case Life::Alive:
        break;
    }
    Fd base_fd(open(base.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!base_fd.ok()) {
        f.why = errno == ENOENT ? Skip::Foreign : Skip::Unreadable;
        return f;
    }
    const std::string page_name = std::to_string(pid);
    bool have_reason = false;
    int best_rank = -1;
    for (const uid_t uid : candidate_uids(uids)) {
        UserDir dir;
        Skip why = Skip::Unreadable;
        switch (open_user_dir(cx, base_fd.get(), std::to_string(uid).c_str(), &dir, &why)) {
        case DirResult::Ok:
            break;
        case DirResult::Denied:
            if (!f.denied) {
                f.denied = true;
                f.denied_uid = uid;
            }
            continue;
        case DirResult::Absent:
            continue;
        case DirResult::Skipped:
            if (!have_reason) {
                f.why = why;
                have_reason = true;
            }
            continue;
        }
        Process p;
        const Verdict v = judge(cx, dir, page_name.c_str(), pid, DT_UNKNOWN, &p);
        if (v.valid) {
            const int r = rank(p.uid, v.proc_euid);
            if (r > best_rank) {
                best_rank = r;
                f.process = std::move(p);
                f.dir = std::move(dir);
                f.st = v.st;
            }
        } else if (!v.absent && !have_reason) {
            f.why = v.why;
            have_reason = true;
        }
    }
    if (!f.process && !have_reason && f.denied)
        f.why = Skip::Unreadable;
    return f;
}

// ---- control requests ----

ControlResult control_error(ControlError e, std::string detail) {
    ControlResult r;
    r.error = e;
    r.detail = std::move(detail);
    return r;
}

/// The reason a page could not be used for a request, as a ControlResult.
ControlResult not_found(const Found& f, const std::string& base, int pid) {
    const std::string who = "pid " + std::to_string(pid);
    if (f.no_process)
        return control_error(ControlError::NoPage,
                             "There is no process " + std::to_string(pid) + ".");
    switch (f.why) {
    case Skip::Dead:
        return control_error(ControlError::Stale, who + " has exited; its stats page is stale.");
    case Skip::PidReused:
        return control_error(ControlError::Stale,
                             "The stats page of " + who +
                                 " is stale: that pid now belongs to another process.");
    case Skip::Exec:
        return control_error(ControlError::Stale,
                             "The stats page of " + who +
                                 " is stale: the process now runs a program without libarena.");
    default:
        break;
    }
    if (f.denied && f.why == Skip::Unreadable)
        return control_error(ControlError::Permission,
                             "The stats directory " + base + "/" + std::to_string(f.denied_uid) +
                                 " of " + who + " belongs to uid " + std::to_string(f.denied_uid) +
                                 "; this program runs as uid " + std::to_string(geteuid()) + ".");
    if (f.why == Skip::Foreign)
        return control_error(ControlError::NoPage, who + " has no stats page under " + base + ".");
    return control_error(ControlError::NoPage,
                         "The stats page of " + who + " was refused (" + skip_name(f.why) + ").");
}

/// Opens the page `f` found again (O_RDONLY or O_RDWR) and checks that it is the file judged.
ControlResult open_found(Found& f, int pid, bool writable, PageFile* out) {
    const std::string name = std::to_string(pid);
    Fd fd(openat(f.dir.fd.get(), name.c_str(),
                 (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
    if (!fd.ok()) {
        if (writable && (errno == EACCES || errno == EPERM))
            return control_error(ControlError::Permission,
                                 "The stats page of pid " + name + " belongs to uid " +
                                     std::to_string(f.st.st_uid) + "; this program runs as uid " +
                                     std::to_string(geteuid()) +
                                     ", and only the page's owner or root may send requests.");
        return control_error(ControlError::Io, "Cannot open " + f.process->path +
                                                   (writable ? " for writing: " : ": ") +
                                                   errno_text(errno) + ".");
    }
    struct stat now {};
    if (fstat(fd.get(), &now) != 0 || !same_file(now, f.st))
        return control_error(ControlError::Stale,
                             "The stats page of pid " + name + " was replaced while being opened.");
    out->reset(fd.release());
    out->process = std::move(*f.process);
    return {};
}

/// Writes one 8-byte field of the control area.
bool write_field(int fd, size_t offset, const void* value) {
    return pwrite(fd, value, 8, static_cast<off_t>(offset)) == 8;
}

constexpr size_t control_offset(size_t field) {
    return ARENA_STATS_OFFSET(control) + field;
}

} // namespace

const char* skip_name(Skip why) {
    return size_t(why) < size_t(Skip::Count) ? kSkipNames[size_t(why)] : "unknown";
}

Scan scan(const std::string& base, const ScanOptions& options) {
    Scan out;
    const Context cx(base, options);
    if (!cx.error.empty()) {
        out.error = cx.error;
        return out;
    }
    Fd base_fd(open(base.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!base_fd.ok()) {
        out.error = "cannot read " + base + ": " + errno_text(errno);
        return out;
    }
    DirStream top(std::move(base_fd));
    if (!top.ok()) {
        out.error = "cannot read " + base + ": " + errno_text(errno);
        return out;
    }
    Budget budget(options);
    Collector keep{out, options.max_pages, {}, {}};
    Process scratch;
    while (const dirent* e = top.next()) {
        const char* name = e->d_name;
        if (name[0] == '.')
            continue;
        if (!budget.take()) {
            // Each directory not visited counts once (its pages are not even listed).
            out.truncated = true;
            if (!budget.may_count())
                break;
            ++out.skipped[size_t(Skip::Limit)];
            continue;
        }
        if (e->d_type != DT_UNKNOWN && e->d_type != DT_DIR) {
            ++out.skipped[size_t(Skip::Foreign)];
            continue;
        }
        UserDir dir;
        Skip why = Skip::Unreadable;
        switch (open_user_dir(cx, top.fd(), name, &dir, &why)) {
        case DirResult::Ok:
            scan_user_dir(cx, dir, budget, keep, scratch);
            break;
        case DirResult::Skipped:
            ++out.skipped[size_t(why)];
            break;
        case DirResult::Denied: // another user's private directory: normal, not a skip
        case DirResult::Absent: // removed meanwhile
            break;
        }
    }
    std::sort(out.processes.begin(), out.processes.end(),
              [](const Process& a, const Process& b) { return a.pid < b.pid; });
    return out;
}

std::optional<Process> read_pid(const std::string& base, int pid, const ScanOptions& options,
                                Skip* why) {
    Found f = find_page(base, pid, options);
    if (!f.process && why != nullptr)
        *why = f.why;
    return std::move(f.process);
}

PageFile::~PageFile() {
    reset();
}

PageFile& PageFile::operator=(PageFile&& o) noexcept {
    if (this != &o) {
        reset(o.fd_);
        o.fd_ = -1;
        process = std::move(o.process);
    }
    return *this;
}

void PageFile::reset(int fd) {
    if (fd_ >= 0)
        close(fd_);
    fd_ = fd;
}

ControlResult open_page(const std::string& base, int pid, const ScanOptions& options, bool writable,
                        PageFile* out) {
    if (pid <= 0)
        return control_error(ControlError::Invalid, std::to_string(pid) + " is not a process id.");
    Found f = find_page(base, pid, options);
    if (!f.process)
        return not_found(f, base, pid);
    return open_found(f, pid, writable, out);
}

ControlResult request_control(const std::string& base, int pid, const ScanOptions& options,
                              const ControlRequest& request) {
    const auto fits = [](size_t field) { return field + 8 <= sizeof(arena_stats_control); };
    if (!fits(request.requests_field) || !fits(request.served_field) ||
        (request.value_field && !fits(*request.value_field)))
        return control_error(ControlError::Invalid, "A control field is outside the control area.");
    PageFile page;
    if (ControlResult r = open_page(base, pid, options, true, &page); !r.ok())
        return r;
    arena_stats_control c{};
    if (!PreadSource{page.fd()}.read(ARENA_STATS_OFFSET(control), &c, sizeof c))
        return control_error(ControlError::Io,
                             "Cannot read " + page.process.path + ": " + errno_text(errno) + ".");
    ControlResult r;
    memcpy(&r.requests, reinterpret_cast<const char*>(&c) + request.requests_field, 8);
    memcpy(&r.served, reinterpret_cast<const char*>(&c) + request.served_field, 8);
    ++r.requests;
    // The argument first, then the request that makes the allocator read it.
    if ((request.value_field &&
         !write_field(page.fd(), control_offset(*request.value_field), &request.value)) ||
        !write_field(page.fd(), control_offset(request.requests_field), &r.requests))
        return control_error(ControlError::Io,
                             "Cannot write " + page.process.path + ": " + errno_text(errno) + ".");
    return r;
}

ControlResult request_trim(const std::string& base, int pid, const ScanOptions& options) {
    ControlRequest req;
    req.requests_field = offsetof(arena_stats_control, trim_requests);
    req.served_field = offsetof(arena_stats_control, trims_served);
    return request_control(base, pid, options, req);
}

ControlResult request_purge_delay(const std::string& base, int pid, int64_t ms,
                                  const ScanOptions& options) {
    if (ms < ARENA_STATS_PURGE_DELAY_MIN_MS || ms > ARENA_STATS_PURGE_DELAY_MAX_MS)
        return control_error(ControlError::Invalid,
                             "The purge delay must be between " +
                                 std::to_string(ARENA_STATS_PURGE_DELAY_MIN_MS) + " and " +
                                 std::to_string(ARENA_STATS_PURGE_DELAY_MAX_MS) + " ms, not " +
                                 std::to_string(ms) + ".");
    ControlRequest req;
    req.value_field = offsetof(arena_stats_control, purge_delay_ms);
    req.value = static_cast<uint64_t>(ms);
    req.requests_field = offsetof(arena_stats_control, purge_requests);
    req.served_field = offsetof(arena_stats_control, purges_served);
    return request_control(base, pid, options, req);
}

std::optional<std::array<uid_t, 4>> process_uids(const std::string& procfs, int pid) {
    const Fd proc(open(procfs.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    std::array<uid_t, 4> uids{};
    if (!proc.ok() || pid <= 0 || read_uids(proc.get(), pid, uids.data()) != Life::Alive)
        return std::nullopt;
    return uids;
}

std::string default_dir() {
    const char* env = getenv("ARENA_STATS_DIR");
    return env != nullptr && *env != '\0' ? env : ARENA_STATS_DEFAULT_DIR;
}

} // namespace arena::client
