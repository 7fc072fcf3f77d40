// SPDX-License-Identifier: MIT
// The stats page's file (see stats_file.h). Everything here runs inside arbitrary programs, so
// every failure ends in "no file" and a verbose note, never in a changed program: no descriptor
// survives a call, none is ever 0, 1 or 2 (os.h), no lock another user could hold, no space
// that can run out after the page is in use (fallocate before mapping).
#include "stats_file.h"

#include "macros.h"
#include "options.h"
#include "os.h"
#include "report.h"

#include <cerrno>
#include <cstring>
#include <sys/auxv.h>
#include <sys/stat.h>

namespace arena::stats_file {
namespace {

constexpr size_t kPageBytes = sizeof(arena_stats_page);
constexpr unsigned kBaseMode = 01777;        // like /tmp: anyone may make a directory, sticky
constexpr unsigned kUserDirMode = 0700;      // the user's own
constexpr unsigned kUserDirGroupMode = 0750; // ... readable by ARENA_STATS_GROUP
constexpr unsigned kPageMode = 0600;
constexpr unsigned kPageGroupMode = 0640;
constexpr unsigned kOthersWrite = 0022; // group or world may write
// One new page in kCleanOneIn looks at kCleanChecks other entries of its directory for pages of
// dead processes: bounded work, four entries per start on average (so dead pages cannot pile up
// faster than processes start), and most starts skip even the directory read.
constexpr unsigned kCleanOneIn = 4;
constexpr unsigned kCleanChecks = 16;
constexpr size_t kCleanReadBytes = 2048; // one getdents64 read, about 80 entries
constexpr unsigned kCleanCandidates = 96;

/// Where this process's page is, for the exit unlink: no descriptor is kept, so the
/// directories are opened again and the inodes compared.
struct Placed {
    bool valid;
    char uid_name[24];
    char pid_name[24];
    uint64_t dir_dev, dir_ino;
    uint64_t page_dev, page_ino;
    char path[300]; // <base>/<uid>/<pid>: for messages, and the exit unlink
};
constinit Placed g_placed{};

/// A descriptor closed on scope exit.
class Fd {
public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() { os::close_fd(fd_); }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }
    bool ok() const { return fd_ >= 0; }

private:
    int fd_;
};

/// A canonical decimal pid (no sign, no leading zero); 0 for anything else.
int parse_pid(const char* s) {
    if (*s < '1' || *s > '9')
        return 0;
    uint64_t v = 0;
    for (; *s; ++s) {
        if (*s < '0' || *s > '9' || v > 0x7fffffff / 10)
            return 0;
        v = v * 10 + static_cast<uint64_t>(*s - '0');
    }
    return v <= 0x7fffffff ? static_cast<int>(v) : 0;
}

/// "arena: stats page off: <what> <where> (errno N)" with ARENA_VERBOSE=1.
ARENA_COLD void note(const char* what, const char* where, int err) {
    if (option(Opt::VERBOSE) == 0)
        return;
    Msg m;
    m.str("arena: stats page off: ").str(what);
    if (where != nullptr && *where != '\0')
        m.str(" ").str(where);
    if (err != 0)
        m.str(" (errno ").i64(err).str(")");
    m.nl().emit();
}

ARENA_COLD void note_private(const char* what, int err) {
    if (option(Opt::VERBOSE) == 0)
        return;
    Msg()
        .str("arena: stats page is private (mode 0600): ")
        .str(what)
        .str(" (errno ")
        .i64(err)
        .str(")")
        .nl()
        .emit();
}

// ---- ARENA_STATS_GROUP ----

/// Finds `name` in /etc/group ("name:password:gid:members" lines), reading it a chunk at a
/// time. -1 when it is not there.
int group_by_name(const char* name) {
    const int fd = os::open_dir(os::kCwd, "/etc"); // no symlink games for a system file
    if (fd < 0)
        return -1;
    Fd etc(fd);
    Fd file(os::open_read(etc.get(), "group"));
    if (!file.ok())
        return -1;
    const size_t name_len = strlen(name);
    char buf[1024];
    size_t have = 0;
    uint64_t offset = 0;
    bool skipping = false; // inside a line longer than the buffer
    for (;;) {
        const long r = os::read_at(file.get(), buf + have, sizeof buf - 1 - have, offset);
        if (r < 0)
            return -1;
        offset += static_cast<uint64_t>(r);
        have += static_cast<size_t>(r);
        buf[have] = '\0';
        size_t start = 0;
        for (;;) {
            char* nl = static_cast<char*>(memchr(buf + start, '\n', have - start));
            if (nl == nullptr && r != 0)
                break; // an incomplete line: read more
            const size_t end = nl != nullptr ? static_cast<size_t>(nl - buf) : have;
            if (!skipping && end - start > name_len + 1 &&
                memcmp(buf + start, name, name_len) == 0 && buf[start + name_len] == ':') {
                // Skip the password field, then read the gid.
                const char* p = static_cast<const char*>(
                    memchr(buf + start + name_len + 1, ':', end - start - name_len - 1));
                if (p == nullptr)
                    return -1;
                uint64_t gid = 0;
                bool digits = false;
                for (++p; p < buf + end && *p >= '0' && *p <= '9'; ++p) {
                    gid = gid * 10 + static_cast<uint64_t>(*p - '0');
                    digits = true;
                    if (gid > 0x7fffffff)
                        return -1;
                }
                return digits && p < buf + end && *p == ':' ? static_cast<int>(gid) : -1;
            }
            skipping = false;
            if (nl == nullptr)
                return -1; // the end of the file
            start = end + 1;
        }
        if (start == 0 && have == sizeof buf - 1) { // a line longer than the buffer
            have = 0;
            skipping = true;
            continue;
        }
        memmove(buf, buf + start, have - start);
        have -= start;
    }
}

/// ARENA_STATS_GROUP as a gid, or -1 when unset (or unknown: said verbosely).
int stats_group() {
    const char* spec = option_str(Opt::STATS_GROUP);
    if (spec == nullptr || *spec == '\0')
        return -1;
    int64_t number = -1;
    const bool numeric = parse_int(spec, &number) && number >= 0 && number <= 0x7fffffff;
    const int gid = numeric ? static_cast<int>(number) : group_by_name(spec);
    if (gid < 0 && option(Opt::VERBOSE) != 0)
        Msg()
            .str("arena: ARENA_STATS_GROUP=")
            .str(spec)
            .str(" is not a group in /etc/group nor a number; the stats page stays private")
            .nl()
            .emit();
    return gid;
}

// ---- The directories ----

/// Opens the base, making it (mode 1777) when missing, and checks that no other user can steer
/// it: owned by root or by us, and sticky if others may write it.
int open_base(const char* base, uint32_t uid) {
    int fd = os::open_dir(os::kCwd, base);
    bool made = false;
    if (fd == -ENOENT) {
        const int r = os::make_dir(os::kCwd, base, kBaseMode);
        if (r != 0 && r != -EEXIST) {
            note("cannot make", base, -r);
            return -1;
        }
        made = r == 0;
        fd = os::open_dir(os::kCwd, base);
    }
    if (fd < 0) {
        note(fd == -ELOOP || fd == -ENOTDIR ? "not a directory (or a symlink):" : "cannot open",
             base, -fd);
        return -1;
    }
    os::FileStat st{};
    if (os::stat_fd(fd, &st) != 0) {
        os::close_fd(fd);
        return -1;
    }
    if (made && st.uid == uid)
        os::chmod_fd(fd, kBaseMode); // mkdir applied the umask
    else if (st.uid != 0 && st.uid != uid) {
        note("the base directory belongs to another user:", base, 0);
        os::close_fd(fd);
        return -1;
    } else if ((st.mode & kOthersWrite) != 0 && (st.mode & S_ISVTX) == 0) {
        note("others may write the base directory and it is not sticky:", base, 0);
        os::close_fd(fd);
        return -1;
    }
    return fd;
}

/// Opens <base>/<uid>, making it when missing, and checks that it is ours and that nobody else
/// may write it. With a group, gives the directory to it (read and search) when we can.
/// *st is the directory's status.
int open_user_dir(int base_fd, const char* name, uint32_t uid, int gid, const char* base,
                  os::FileStat* st_out) {
    int fd = os::open_dir(base_fd, name);
    bool made = false;
    if (fd == -ENOENT) {
        const int r = os::make_dir(base_fd, name, kUserDirMode);
        made = r == 0;
        fd = os::open_dir(base_fd, name);
    }
    if (fd < 0) {
        note(fd == -ELOOP || fd == -ENOTDIR ? "the user directory is not a directory:"
                                            : "cannot open the user directory in",
             base, -fd);
        return -1;
    }
    os::FileStat st{};
    if (os::stat_fd(fd, &st) != 0 || st.uid != uid || (st.mode & kOthersWrite) != 0) {
        note(st.uid != uid ? "the user directory belongs to another user, in"
                           : "others may write the user directory, in",
             base, 0);
        os::close_fd(fd);
        return -1;
    }
    if (gid >= 0 && (st.gid != static_cast<uint32_t>(gid) || (st.mode & 0050) != 0050)) {
        const int r = os::chown_fd(fd, -1, gid);
        if (r == 0)
            os::chmod_fd(fd, made ? kUserDirGroupMode : ((st.mode & 07777) | 0050));
        else
            note_private("cannot give the user directory to ARENA_STATS_GROUP", -r);
    } else if (made) {
        os::chmod_fd(fd, kUserDirMode);
    }
    *st_out = st;
    return fd;
}

// ---- Dead pages ----

/// Removes dir/name if it is still the file (dev, ino).
void unlink_if_same(int dir, const char* name, uint64_t dev, uint64_t ino) {
    os::FileStat now{};
    if (os::stat_at(dir, name, &now, false) == 0 && now.dev == dev && now.ino == ino)
        os::unlink_at(dir, name);
}

/// Looks at a few entries of our directory, from a random one on, and removes pages whose
/// process no longer exists in our PID namespace (and temporary files of the fallback path).
void clean_some(int dir, int self_pid, uint64_t pid_ns) {
    alignas(8) char buf[kCleanReadBytes];
    const long n = os::read_dir(dir, buf, sizeof buf);
    if (n <= 0)
        return;
    // linux_dirent64: d_ino(8) d_off(8) d_reclen(2) d_type(1) d_name[]
    constexpr size_t kRecLenAt = 16, kNameAt = 19;
    uint16_t offsets[kCleanCandidates];
    unsigned count = 0;
    for (long at = 0; at < n && count < kCleanCandidates;) {
        uint16_t reclen;
        memcpy(&reclen, buf + at + kRecLenAt, sizeof reclen);
        const char* name = buf + at + kNameAt;
        if (name[0] != '.' || (name[1] != '\0' && name[1] != '.'))
            offsets[count++] = static_cast<uint16_t>(at + kNameAt);
        at += reclen;
    }
    if (count == 0)
        return;
    const unsigned start =
        static_cast<unsigned>((os::unix_ns() >> 12) ^ static_cast<uint64_t>(self_pid)) % count;
    for (unsigned k = 0; k < kCleanChecks && k < count; ++k) {
        const char* name = buf + offsets[(start + k) % count];
        // A page "<pid>", or a fallback temporary ".<pid>.<nonce>.tmp".
        char pid_text[12];
        const char* digits = name[0] == '.' ? name + 1 : name;
        size_t len = 0;
        while (digits[len] >= '0' && digits[len] <= '9' && len + 1 < sizeof pid_text) {
            pid_text[len] = digits[len];
            ++len;
        }
        pid_text[len] = '\0';
        const bool temporary = name[0] == '.';
        if ((!temporary && digits[len] != '\0') || (temporary && digits[len] != '.'))
            continue;
        const int pid = parse_pid(pid_text);
        if (pid == 0 || pid == self_pid || os::probe_pid(pid) != -ESRCH)
            continue; // alive (or not ours to judge: a reused pid is the readers' business)
        Fd file(os::open_read(dir, name));
        os::FileStat st{};
        if (!file.ok() || os::stat_fd(file.get(), &st) != 0 || !S_ISREG(st.mode))
            continue;
        if (!temporary) {
            // Only a page of this PID namespace: a pid elsewhere says nothing here.
            arena_stats_head head{};
            const size_t want = ARENA_STATS_OFFSET(pid_ns) + sizeof head.pid_ns;
            if (os::read_at(file.get(), &head, want, 0) != static_cast<long>(want) ||
                head.magic != ARENA_STATS_MAGIC || head.pid != pid ||
                (head.pid_ns != 0 && pid_ns != 0 && head.pid_ns != pid_ns))
                continue;
        }
        unlink_if_same(dir, name, st.dev, st.ino);
    }
}

// ---- The page ----

/// Reserves the page's space: fallocate, or zeros written where the filesystem lacks it.
int reserve(int fd) {
    const int r = os::reserve_file(fd, kPageBytes);
    if (r != -EOPNOTSUPP)
        return r;
    static constexpr char kZeros[1024] = {};
    for (size_t at = 0; at < kPageBytes; at += sizeof kZeros)
        if (const int w = os::write_at(fd, kZeros, sizeof kZeros, at); w != 0)
            return w;
    return 0;
}

Identity identify() {
    Identity who{};
    who.uid =
        static_cast<uint32_t>(os::geteuid()); // now, not at exec: a fork child may have changed it
    who.exec_entry = os::auxv(AT_ENTRY);
    who.exec_random = os::auxv(AT_RANDOM);
    return who;
}

} // namespace

arena_stats_page* create(const char* base, const Content& content) {
    g_placed.valid = false;
    if (base == nullptr || *base == '\0')
        return nullptr;
    Placed placed{};
    const Identity who = identify();
    const int pid = os::getpid();
    format_decimal(who.uid, placed.uid_name);
    format_decimal(static_cast<uint64_t>(pid), placed.pid_name);
    if (strlen(base) + 2 * sizeof placed.pid_name + 2 > sizeof placed.path) {
        note("the base directory's name is too long:", base, 0);
        return nullptr;
    }

    Fd base_fd(open_base(base, who.uid));
    if (!base_fd.ok())
        return nullptr;
    const int gid = stats_group();
    os::FileStat dir_st{};
    Fd dir(open_user_dir(base_fd.get(), placed.uid_name, who.uid, gid, base, &dir_st));
    if (!dir.ok())
        return nullptr;

    // Unnamed while it is made (O_TMPFILE); where the filesystem cannot, a temporary name in our
    // own directory, which nobody else may write.
    unsigned mode = gid >= 0 ? kPageGroupMode : kPageMode;
    char temp[40] = "";
    int fd = os::open_unnamed(dir.get(), mode);
    if (fd == -EOPNOTSUPP || fd == -EISDIR || fd == -EINVAL) {
        char nonce[24];
        format_decimal(os::unix_ns() & 0xffffffffffull, nonce);
        temp[0] = '.';
        format_decimal(static_cast<uint64_t>(pid), temp + 1);
        strcat(temp, ".");
        strcat(temp, nonce);
        strcat(temp, ".tmp");
        fd = os::create_file(dir.get(), temp, mode);
    }
    if (fd < 0) {
        note("cannot make a page in", base, -fd);
        return nullptr;
    }
    Fd file(fd);
    if (gid >= 0) {
        if (const int r = os::chown_fd(fd, -1, gid); r != 0) {
            note_private("cannot give the page to ARENA_STATS_GROUP", -r);
            mode = kPageMode;
        }
    }
    os::FileStat st{};
    int r = os::stat_fd(fd, &st);
    if (r == 0 && (st.mode & 07777) != mode)
        os::chmod_fd(fd, mode); // exactly: open applied the umask
    if (r == 0)
        r = reserve(fd);
    if (r != 0) {
        note("cannot reserve the page's space (a full filesystem?) in", base, -r);
        if (temp[0] != '\0')
            os::unlink_at(dir.get(), temp);
        return nullptr;
    }
    // The content goes in before the name: a reader never sees the page half made.
    arena_stats_head head{};
    content.fill_head(&head, who, content.context);
    if (content.shards != nullptr)
        r = os::write_at(fd, content.shards, content.shard_bytes, sizeof head);
    if (r == 0)
        r = os::write_at(fd, &head, sizeof head, 0);
    if (r == 0) {
        r = temp[0] != '\0' ? os::rename_at(dir.get(), temp, placed.pid_name)
                            : os::link_unnamed(fd, dir.get(), placed.pid_name);
        if (r == -EEXIST) {
            // A page with our pid: of this very process before an exec, or of a dead process
            // whose pid we reuse. The directory is ours: replace it.
            os::unlink_at(dir.get(), placed.pid_name);
            r = os::link_unnamed(fd, dir.get(), placed.pid_name);
        }
    }
    if (r != 0) {
        note("cannot write or name the page in", base, -r);
        if (temp[0] != '\0')
            os::unlink_at(dir.get(), temp);
        return nullptr;
    }
    // Mapped by its name, not through the unnamed file (whose mapping /proc/<pid>/maps and lsof
    // would show as a deleted "#<inode>"): the same file, checked by its inode.
    Fd named(os::open_rw(dir.get(), placed.pid_name));
    os::FileStat named_st{};
    void* mem = nullptr;
    if (named.ok() && os::stat_fd(named.get(), &named_st) == 0 && named_st.ino == st.ino &&
        named_st.dev == st.dev)
        mem = os::map_file(named.get(), kPageBytes);
    if (mem == nullptr) {
        note("cannot map the page in", base, named.ok() ? ENOMEM : -named.get());
        unlink_if_same(dir.get(), placed.pid_name, st.dev, st.ino);
        return nullptr;
    }
    placed.page_dev = st.dev;
    placed.page_ino = st.ino;
    placed.dir_dev = dir_st.dev;
    placed.dir_ino = dir_st.ino;
    placed.valid = true;
    size_t len = strlen(base);
    memcpy(placed.path, base, len);
    placed.path[len++] = '/';
    memcpy(placed.path + len, placed.uid_name, strlen(placed.uid_name));
    len += strlen(placed.uid_name);
    placed.path[len++] = '/';
    memcpy(placed.path + len, placed.pid_name, strlen(placed.pid_name) + 1);
    g_placed = placed;

    return static_cast<arena_stats_page*>(mem);
}

const char* path() {
    return g_placed.valid ? g_placed.path : "";
}

uint64_t pid_namespace() {
    os::FileStat st{};
    return os::stat_at(os::kCwd, "/proc/self/ns/pid", &st, true) == 0 ? st.ino : 0;
}

namespace {

/// Opens the directory the page was made in, by its path, if it is still that directory.
int open_page_dir() {
    char dir_path[sizeof g_placed.path];
    const size_t len = strlen(g_placed.path) - strlen(g_placed.pid_name) - 1;
    memcpy(dir_path, g_placed.path, len);
    dir_path[len] = '\0';
    const int fd = os::open_dir(os::kCwd, dir_path);
    os::FileStat st{};
    if (fd >= 0 &&
        (os::stat_fd(fd, &st) != 0 || st.dev != g_placed.dir_dev || st.ino != g_placed.dir_ino)) {
        os::close_fd(fd);
        return -1;
    }
    return fd;
}

} // namespace

void clean_some_later(uint64_t pid_ns) {
    if (!g_placed.valid || (os::unix_ns() >> 10) % kCleanOneIn != 0)
        return;
    Fd dir(open_page_dir());
    if (dir.ok())
        clean_some(dir.get(), os::getpid(), pid_ns);
}

void* map_extended(size_t total) {
    if (!g_placed.valid)
        return nullptr;
    Fd dir(open_page_dir());
    if (!dir.ok())
        return nullptr;
    Fd file(os::open_rw(dir.get(), g_placed.pid_name));
    os::FileStat st{};
    if (!file.ok() || os::stat_fd(file.get(), &st) != 0 || st.dev != g_placed.page_dev ||
        st.ino != g_placed.page_ino)
        return nullptr;
    if (const int r = os::reserve_file(file.get(), total); r != 0) {
        note("cannot reserve the heap profile's space (a full filesystem?) in", g_placed.path, -r);
        return nullptr;
    }
    return os::map_file(file.get(), total);
}

void remove() {
    if (!g_placed.valid)
        return;
    g_placed.valid = false;
    // By path: whatever the path leads to now, only the directory the page was made in (its
    // inode recorded then) is touched, so a base swapped for a symlink meanwhile is harmless.
    Fd dir(open_page_dir());
    if (dir.ok())
        unlink_if_same(dir.get(), g_placed.pid_name, g_placed.page_dev, g_placed.page_ino);
}

void forget() {
    g_placed.valid = false;
}

} // namespace arena::stats_file
