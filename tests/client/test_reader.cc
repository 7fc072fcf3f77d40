// SPDX-License-Identifier: MIT
// The stats client's reader (libarena/client/reader.h) against pages and processes made by hand:
// a fake procfs (testing::FakeProc) decides which pids are alive, so every verdict is
// deterministic. Each reason a page is refused is produced by the file that should produce it,
// next to a valid page that differs only in that respect; stale pages are removed, but never a
// page swapped in after judgement nor one of another PID namespace; a scan of 100,000 junk files
// keeps to its caps; pages truncated or sparse under the reader cannot crash it (no mmap); and
// control requests land in the page's bytes. Cases that need root (a second uid, a tmpfs mount,
// setuid) pass with a message saying what they did not check when run by another user.
#include "common.h"
#include "fake_page.h"
#include "reader.h"
#include "testing.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <functional>
#include <grp.h>
#include <optional>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace cl = arena::client;
using cl::Skip;

namespace {

constexpr int kPid = 4242;
constexpr uint64_t kStart = 12345; // FakePage's start time
constexpr uid_t kNobody = 65534;

/// A base directory and a fake procfs in a temp dir, and scan options that use both (no removal
/// unless a test asks for it).
struct Env {
    testing::TempDir tmp{"client"};
    std::string base = tmp.path() + "/base";
    testing::FakeProc proc{tmp.path() + "/proc"};
    cl::ScanOptions options;

    Env() {
        mkdir(base.c_str(), 01777);
        chmod(base.c_str(), 01777);
        options.procfs = proc.root();
        options.remove_stale = false;
    }
    cl::Scan scan() const { return cl::scan(base, options); }
    /// <base>/<euid>, made if missing (as FakePage::write makes it).
    std::string user_dir() const {
        const std::string d = testing::FakePage::user_dir(base);
        if (mkdir(d.c_str(), 0700) == 0)
            chmod(d.c_str(), 0700);
        return d;
    }
    /// <base>/<uid>, owned by uid, mode 0700 (root only).
    std::string dir_of(uid_t uid) const {
        const std::string d = base + "/" + std::to_string(uid);
        mkdir(d.c_str(), 0700);
        chmod(d.c_str(), 0700);
        REQUIRE(chown(d.c_str(), uid, uid) == 0);
        return d;
    }
    std::string path(int pid) const { return user_dir() + "/" + std::to_string(pid); }
};

bool is_root() {
    return geteuid() == 0;
}

/// Writes `n` bytes to a new file `path` (replacing what is there), mode `mode`.
bool put(const std::string& path, const void* data, size_t n, mode_t mode = 0600) {
    unlink(path.c_str());
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return false;
    fchmod(fd, mode);
    const bool ok = write(fd, data, n) == static_cast<ssize_t>(n);
    close(fd);
    return ok;
}

/// Writes `page` as dir/name, owned by `owner`.
std::string put_page(const std::string& dir, const std::string& name, const testing::FakePage& page,
                     uid_t owner = geteuid()) {
    const std::string path = dir + "/" + name;
    REQUIRE(put(path, &page.page(), sizeof(arena_stats_page)));
    if (owner != geteuid())
        REQUIRE(chown(path.c_str(), owner, owner) == 0);
    return path;
}

uint64_t total_skipped(const cl::Scan& s) {
    uint64_t n = 0;
    for (const uint64_t k : s.skipped)
        n += k;
    return n;
}

/// The reason a scan skipped its one entry, by name; otherwise what it did instead.
std::string only_skip(const cl::Scan& s) {
    if (!s.error.empty())
        return "error: " + s.error;
    if (!s.processes.empty())
        return "reported pid " + std::to_string(s.processes[0].pid);
    if (total_skipped(s) != 1)
        return "skipped " + std::to_string(total_skipped(s)) + " entries";
    for (size_t r = 0; r < size_t(Skip::Count); ++r)
        if (s.skipped[r] != 0)
            return cl::skip_name(Skip(r));
    return "?";
}

uint64_t skipped(const cl::Scan& s, Skip why) {
    return s.skipped[size_t(why)];
}

bool exists(const std::string& path) {
    struct stat st {};
    return lstat(path.c_str(), &st) == 0;
}

ino_t inode(const std::string& path) {
    struct stat st {};
    return lstat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

/// The page's bytes as on disk now.
arena_stats_page load(const std::string& path) {
    arena_stats_page p{};
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(pread(fd, &p, sizeof p, 0) == static_cast<ssize_t>(sizeof p));
    close(fd);
    return p;
}

/// Runs `fn` in a forked child with uid and gid 65534; returns its exit code (or 100 + signal).
int as_nobody(const std::function<int()>& fn) {
    const pid_t pid = fork();
    if (pid == 0) {
        if (setgroups(0, nullptr) != 0 || setgid(kNobody) != 0 || setuid(kNobody) != 0)
            _exit(99);
        _exit(fn());
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

} // namespace

// ---- a valid page ----

TEST_CASE("a valid live page is read with its counters, and its comm comes from procfs") {
    Env env;
    env.proc.add(kPid, kStart, "new name) x");
    testing::FakePage page(kPid);
    arena_stats_page& p = page.page();
    p.shards[0].events[ARENA_EV_malloc_calls] = 10;
    p.shards[3].events[ARENA_EV_malloc_calls] = 5;
    p.shards[0].class_alloc[1] = 4; // 32-byte slots
    p.shards[2].class_free[1] = 1;
    p.shards[1].events[ARENA_EV_large_alloc_bytes] = 8192;
    p.shards[1].events[ARENA_EV_large_free_bytes] = 4096;
    p.shards[1].events[ARENA_EV_large_allocs] = 2;
    p.shards[1].events[ARENA_EV_large_frees] = 1;
    p.head.global.gauges[ARENA_G_committed_bytes] = 1 << 20;
    p.head.global.gauges[ARENA_G_purge_delay_ms] = static_cast<uint64_t>(int64_t{-1});
    const std::string path = page.write(env.base);
    REQUIRE(!path.empty());

    const cl::Scan s = env.scan();
    CHECK(s.error.empty());
    CHECK(total_skipped(s) == 0);
    CHECK_FALSE(s.truncated);
    REQUIRE(s.processes.size() == 1);
    const cl::Process& got = s.processes[0];
    CHECK(got.pid == kPid);
    CHECK(got.uid == geteuid());
    CHECK(got.start_time == kStart);
    CHECK(got.comm == "new name) x"); // procfs's, not the page's "fake"
    CHECK(got.cmdline == "fake --workload");
    CHECK(got.path == path);
    CHECK(got.event(ARENA_EV_malloc_calls) == 15);
    CHECK(got.live_bytes() == 3 * 32 + 4096);
    CHECK(got.live_blocks() == 3 + 1);
    CHECK(got.gauge(ARENA_G_committed_bytes) == 1 << 20);
    CHECK(got.snap.signed_gauge(ARENA_G_purge_delay_ms) == -1);
    CHECK(got.created_unix_ns() == page.head().created_unix_ns);
}

TEST_CASE("a page of this very process is read through the real /proc") {
    Env env;
    env.options.procfs = "/proc";
    testing::FakePage page = testing::self_page();
    REQUIRE(page.head().pid_ns != 0);
    page.write(env.base);
    const cl::Scan s = env.scan();
    REQUIRE(s.processes.size() == 1);
    CHECK(s.processes[0].pid == getpid());
    std::string comm;
    if (FILE* f = fopen("/proc/self/comm", "r")) {
        char buf[64] = {};
        if (fgets(buf, sizeof buf, f) != nullptr)
            comm.assign(buf, strcspn(buf, "\n"));
        fclose(f);
    }
    CHECK(s.processes[0].comm == comm);
    Skip why = Skip::Count;
    CHECK(cl::read_pid(env.base, getpid(), env.options, &why).has_value());
    // A page made later than the process started (the usual case) is its own; one made a tick
    // before the process started belongs to an earlier process with that pid.
    page.head().start_time += 100;
    page.write(env.base);
    CHECK(env.scan().processes.size() == 1);
    page.head().start_time = testing::self_start_time() - 1;
    page.write(env.base);
    CHECK(only_skip(env.scan()) == "pid_reused");
}

// ---- every reason a page is refused ----

TEST_CASE("a symlink named by a live pid is not followed: foreign") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    // A valid page of that pid, owned by the directory's owner, outside the directory.
    const std::string target = put_page(env.tmp.path(), "elsewhere", testing::FakePage(kPid));
    REQUIRE(symlink(target.c_str(), env.path(kPid).c_str()) == 0);
    CHECK(only_skip(env.scan()) == "foreign");
    // read_pid opens the name without a directory entry's type to go by.
    Skip why = Skip::Count;
    CHECK_FALSE(cl::read_pid(env.base, kPid, env.options, &why));
    CHECK(why == Skip::Foreign);
    env.options.remove_stale = true;
    env.proc.remove(kPid);
    CHECK(only_skip(env.scan()) == "foreign");
    CHECK(exists(target));
}

TEST_CASE("a hard-linked page (two links) is refused: foreign") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    const std::string path = testing::FakePage(kPid).write(env.base);
    REQUIRE(env.scan().processes.size() == 1);
    REQUIRE(link(path.c_str(), (env.tmp.path() + "/second-link").c_str()) == 0);
    CHECK(only_skip(env.scan()) == "foreign");
}

TEST_CASE("a fifo, a socket and a directory named by a live pid are foreign, and never block") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    const std::string path = env.path(kPid);
    SUBCASE("fifo") {
        REQUIRE(mkfifo(path.c_str(), 0600) == 0);
    }
    SUBCASE("directory") {
        REQUIRE(mkdir(path.c_str(), 0700) == 0);
    }
    SUBCASE("socket") {
        const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(fd >= 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        REQUIRE(path.size() < sizeof addr.sun_path);
        strcpy(addr.sun_path, path.c_str());
        REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        close(fd);
    }
    CHECK(only_skip(env.scan()) == "foreign");
}

TEST_CASE("names that are not canonical pids are foreign") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    const testing::FakePage page(kPid); // head.pid is kPid: only the name is wrong
    const std::string dir = env.user_dir();
    std::string name;
    SUBCASE("word") {
        name = "junk";
    }
    SUBCASE("leading zero") {
        name = "0" + std::to_string(kPid);
    }
    SUBCASE("sign") {
        name = "+" + std::to_string(kPid);
    }
    SUBCASE("dot name") {
        name = "." + std::to_string(kPid);
    }
    SUBCASE("temporary") {
        name = std::to_string(kPid) + ".tmp";
    }
    SUBCASE("too large for pid_t") {
        name = "4294971538";
    } // 2^32 + 4242
    SUBCASE("zero") {
        name = "0";
    }
    CAPTURE(name);
    put_page(dir, name, page);
    CHECK(only_skip(env.scan()) == "foreign");
}

TEST_CASE("a page shorter than a page is truncated") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    size_t bytes = 0;
    SUBCASE("empty") {
        bytes = 0;
    }
    SUBCASE("part of the magic") {
        bytes = 5;
    }
    SUBCASE("the head only") {
        bytes = sizeof(arena_stats_head);
    }
    SUBCASE("one byte short") {
        bytes = sizeof(arena_stats_page) - 1;
    }
    CAPTURE(bytes);
    REQUIRE(!testing::FakePage(kPid).write_truncated(env.base, bytes).empty());
    CHECK(only_skip(env.scan()) == "truncated");
}

TEST_CASE("a page with another magic is bad_magic") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    testing::FakePage page(kPid);
    page.head().magic = 0x1122334455667788ull;
    page.write(env.base);
    CHECK(only_skip(env.scan()) == "bad_magic");
    // Short junk too: the first bytes tell it from a cut page.
    page.write_truncated(env.base, 100);
    CHECK(only_skip(env.scan()) == "bad_magic");
}

TEST_CASE("a version 1 page (its magic \"ANRATSP1\", version 1) is bad_version, short or whole") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    std::vector<unsigned char> old(sizeof(arena_stats_page), 0);
    const uint64_t magic_v1 = 0x3150535441524e41ull;
    const uint32_t version_1 = 1;
    memcpy(old.data(), &magic_v1, 8);
    memcpy(old.data() + 8, &version_1, 4);
    size_t bytes = 0;
    SUBCASE("smaller than a v2 page") {
        bytes = 4096;
    }
    SUBCASE("as large as a v2 page") {
        bytes = old.size();
    }
    CAPTURE(bytes);
    put(env.path(kPid), old.data(), bytes);
    CHECK(only_skip(env.scan()) == "bad_version");
}

TEST_CASE("a v2 magic with another version number is bad_version") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    testing::FakePage page(kPid);
    page.head().version = 3;
    page.write(env.base);
    CHECK(only_skip(env.scan()) == "bad_version");
}

TEST_CASE("a page whose sizes or counts do not match the layout is bad_size") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    testing::FakePage page(kPid);
    SUBCASE("header_size") {
        page.head().header_size = 512;
    }
    SUBCASE("size") {
        page.head().size = 65536;
    }
    SUBCASE("nshards") {
        page.head().nshards = 64;
    }
    SUBCASE("nclasses") {
        page.head().nclasses = ARENA_STATS_MAX_CLASSES + 1;
    }
    SUBCASE("shards_used") {
        page.head().shards_used = ARENA_STATS_SHARDS + 1;
    }
    page.write(env.base);
    CHECK(only_skip(env.scan()) == "bad_size");
}

TEST_CASE("a page without the READY flag is not_ready") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    testing::FakePage page(kPid);
    page.head().flags = 0;
    page.write(env.base);
    CHECK(only_skip(env.scan()) == "not_ready");
}

TEST_CASE("a page whose pid is not its name is forged") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    env.proc.add(kPid + 1, kStart, "victim");
    testing::FakePage page(kPid + 1); // claims pid 4243, named 4242: both processes are alive
    put_page(env.user_dir(), std::to_string(kPid), page);
    CHECK(only_skip(env.scan()) == "forged");
}

TEST_CASE("a page of a process that is gone is dead, and stays without remove_stale") {
    Env env;
    const std::string path = testing::FakePage(kPid).write(env.base);
    CHECK(only_skip(env.scan()) == "dead");
    CHECK(exists(path));
}

TEST_CASE("a page whose pid now belongs to a process with another start time is pid_reused") {
    Env env;
    env.proc.add(kPid, kStart + 1, "fake");
    const std::string path = testing::FakePage(kPid).write(env.base);
    CHECK(only_skip(env.scan()) == "pid_reused");
    CHECK(exists(path));
}

TEST_CASE("a page made before its process exec'd is exec") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    env.proc.set_auxv(kPid, 0x401000, 0x7ffd0010);
    testing::FakePage page(kPid);
    SUBCASE("another exec: AT_ENTRY and AT_RANDOM differ") {
        page.head().exec_entry = 0x55550000;
        page.head().exec_random = 0x7ffe0020;
        page.write(env.base);
        CHECK(only_skip(env.scan()) == "exec");
    }
    SUBCASE("another exec of the same program: AT_RANDOM differs") {
        page.head().exec_entry = 0x401000;
        page.head().exec_random = 0x7ffe0020;
        page.write(env.base);
        CHECK(only_skip(env.scan()) == "exec");
    }
    SUBCASE("the same exec") {
        page.head().exec_entry = 0x401000;
        page.head().exec_random = 0x7ffd0010;
        page.write(env.base);
        CHECK(env.scan().processes.size() == 1);
    }
    SUBCASE("auxv cannot be read: accepted") {
        REQUIRE(unlink((env.proc.dir(kPid) + "/auxv").c_str()) == 0);
        page.head().exec_entry = 1;
        page.write(env.base);
        CHECK(env.scan().processes.size() == 1);
    }
}

TEST_CASE("a page of another PID namespace is other_namespace, and is never removed") {
    Env env;
    // The fake procfs's namespace: the inode of <procfs>/1/ns/pid.
    const std::string ns_dir = env.proc.root() + "/1/ns";
    std::filesystem::create_directories(ns_dir);
    REQUIRE(put(ns_dir + "/pid", "", 0));
    struct stat ns {};
    REQUIRE(stat((ns_dir + "/pid").c_str(), &ns) == 0);
    env.options.remove_stale = true;

    testing::FakePage page(kPid);
    page.head().pid_ns = ns.st_ino + 1;
    SUBCASE("its pid is alive here") {
        env.proc.add(kPid, kStart, "fake");
        const std::string path = page.write(env.base);
        CHECK(only_skip(env.scan()) == "other_namespace");
        CHECK(exists(path));
    }
    SUBCASE("its pid has another start time here") {
        env.proc.add(kPid, kStart + 1, "fake");
        const std::string path = page.write(env.base);
        CHECK(only_skip(env.scan()) == "other_namespace");
        CHECK(exists(path));
    }
    SUBCASE("its pid does not exist here") {
        const std::string path = page.write(env.base);
        CHECK(only_skip(env.scan()) == "other_namespace");
        CHECK(exists(path));
    }
    SUBCASE("a page of this namespace is read") {
        env.proc.add(kPid, kStart, "fake");
        page.head().pid_ns = ns.st_ino;
        page.write(env.base);
        CHECK(env.scan().processes.size() == 1);
    }
    SUBCASE("a dead page of this namespace is removed") {
        page.head().pid_ns = ns.st_ino;
        const std::string path = page.write(env.base);
        const cl::Scan s = env.scan();
        CHECK(only_skip(s) == "dead");
        CHECK(s.removed == 1);
        CHECK_FALSE(exists(path));
    }
}

TEST_CASE("a page owned by none of its process's uids (and not by root) is foreign_owner") {
    Env env;
    testing::FakePage page(kPid);
    if (is_root()) {
        // The page and its directory belong to nobody; the process runs as 1000 throughout.
        env.proc.add(kPid, kStart, "fake", 1000);
        put_page(env.dir_of(kNobody), std::to_string(kPid), page, kNobody);
        CHECK(only_skip(env.scan()) == "foreign_owner");
        env.proc.add(kPid, kStart, "fake", 1000, 1000, kNobody, 1000); // saved uid: its own
        CHECK(env.scan().processes.size() == 1);
    } else {
        env.proc.add(kPid, kStart, "fake", geteuid() + 1);
        page.write(env.base);
        CHECK(only_skip(env.scan()) == "foreign_owner");
        env.proc.add(kPid, kStart, "fake", geteuid() + 1, geteuid(), geteuid() + 1, geteuid() + 1);
        CHECK(env.scan().processes.size() == 1);
    }
}

TEST_CASE("a page owned by someone else than its directory's owner is foreign_owner") {
    if (!is_root()) {
        MESSAGE("not root: cannot give a page to another uid; the owner check is not tested");
        return;
    }
    Env env;
    // Root's process, so that only the directory's owner can refuse the page.
    env.proc.add(kPid, kStart, "fake", 0);
    const std::string dir = env.dir_of(kNobody);
    put_page(dir, std::to_string(kPid), testing::FakePage(kPid), 0);
    CHECK(only_skip(env.scan()) == "foreign_owner");
}

TEST_CASE("a user directory that others may write is unsafe_dir") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    testing::FakePage(kPid).write(env.base);
    REQUIRE(env.scan().processes.size() == 1);
    mode_t mode = 0700;
    SUBCASE("group-writable") {
        mode = 0770;
    }
    SUBCASE("world-writable") {
        mode = 0703;
    }
    SUBCASE("sticky and world-writable") {
        mode = 01777;
    }
    CAPTURE(mode);
    REQUIRE(chmod(env.user_dir().c_str(), mode) == 0);
    CHECK(only_skip(env.scan()) == "unsafe_dir");
}

TEST_CASE("a user directory that is a symlink, a file, or not named by its owner is refused") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    const std::string real = env.tmp.path() + "/real";
    REQUIRE(mkdir(real.c_str(), 0700) == 0);
    put_page(real, std::to_string(kPid), testing::FakePage(kPid));
    const std::string own = std::to_string(geteuid());
    SUBCASE("symlink to a directory of pages") {
        REQUIRE(symlink(real.c_str(), (env.base + "/" + own).c_str()) == 0);
        CHECK(only_skip(env.scan()) == "foreign");
    }
    SUBCASE("a file in the base") {
        put_page(env.base, std::to_string(kPid), testing::FakePage(kPid)); // a v1-style layout
        CHECK(only_skip(env.scan()) == "foreign");
    }
    SUBCASE("a directory named by no uid") {
        REQUIRE(rename(real.c_str(), (env.base + "/pages").c_str()) == 0);
        CHECK(only_skip(env.scan()) == "foreign");
    }
    SUBCASE("a directory named by another uid than its owner's") {
        // Two pages in it: the directory is refused as a whole, once.
        put_page(real, std::to_string(kPid + 1), testing::FakePage(kPid + 1));
        const std::string name = std::to_string(geteuid() + 1);
        REQUIRE(rename(real.c_str(), (env.base + "/" + name).c_str()) == 0);
        CHECK(only_skip(env.scan()) == "foreign_owner");
    }
}

TEST_CASE("two valid pages of one pid: root's is kept, the other counts as duplicate") {
    if (!is_root()) {
        MESSAGE("not root: cannot make a second uid's directory; duplicates are not tested");
        return;
    }
    Env env;
    // A daemon started as root (page in 0/) that then switched to nobody (page in 65534/).
    env.proc.add(kPid, kStart, "daemon", kNobody);
    const std::string root_page =
        put_page(env.dir_of(0), std::to_string(kPid), testing::FakePage(kPid), 0);
    put_page(env.dir_of(kNobody), std::to_string(kPid), testing::FakePage(kPid), kNobody);
    // Both directories are read, in whatever order readdir gives.
    for (int round = 0; round < 2; ++round) {
        const cl::Scan s = env.scan();
        REQUIRE(s.processes.size() == 1);
        CHECK(s.processes[0].uid == 0);
        CHECK(s.processes[0].path == root_page);
        CHECK(skipped(s, Skip::Duplicate) == 1);
        CHECK(total_skipped(s) == 1);
    }
    // Without root's page, the one in the process's effective uid's directory wins over one in
    // another of its uids' (both valid: 1000 is its real uid).
    REQUIRE(unlink(root_page.c_str()) == 0);
    env.proc.add(kPid, kStart, "daemon", 1000, kNobody, 1000, 1000);
    const std::string real_uid_page =
        put_page(env.dir_of(1000), std::to_string(kPid), testing::FakePage(kPid), 1000);
    const cl::Scan s = env.scan();
    REQUIRE(s.processes.size() == 1);
    CHECK(s.processes[0].uid == kNobody);
    CHECK(skipped(s, Skip::Duplicate) == 1);
    CHECK(exists(real_uid_page));
}

// ---- stale pages ----

TEST_CASE("stale pages are removed and counted when remove_stale is set, and only those") {
    Env env;
    env.options.remove_stale = true;
    // 5001: gone. 5002: pid reused. 5003: exec'd another program. 5004: junk named by a dead
    // pid. 5005: alive.
    const std::string dead = testing::FakePage(5001).write(env.base);
    env.proc.add(5002, kStart + 1, "fake");
    const std::string reused = testing::FakePage(5002).write(env.base);
    env.proc.add(5003, kStart, "fake");
    env.proc.set_auxv(5003, 0x1000, 0x2000);
    testing::FakePage exec_page(5003);
    exec_page.head().exec_entry = 1; // made before an exec
    const std::string exec = exec_page.write(env.base);
    const std::string junk = env.path(5004);
    REQUIRE(put(junk, "not a page", 10));
    env.proc.add(5005, kStart, "fake");
    const std::string alive = testing::FakePage(5005).write(env.base);

    cl::Scan s = env.scan();
    CHECK(s.removed == 3);
    CHECK_FALSE(exists(dead));
    CHECK_FALSE(exists(reused));
    CHECK_FALSE(exists(exec));
    CHECK(exists(junk)); // not a page of that pid: left alone
    CHECK(exists(alive));
    CHECK(skipped(s, Skip::Dead) == 2);
    CHECK(skipped(s, Skip::PidReused) == 1);
    CHECK(skipped(s, Skip::Exec) == 1);
    REQUIRE(s.processes.size() == 1);
    CHECK(s.processes[0].pid == 5005);

    s = env.scan();
    CHECK(s.removed == 0);
    CHECK(skipped(s, Skip::Dead) == 1);
}

TEST_CASE("a page swapped in after judgement is not removed") {
    // The reader reads <procfs>/<pid>/status after it has judged the page's file and before it
    // removes it as exec'd: here status is a fifo, so the test can replace the page right then.
    Env env;
    env.options.remove_stale = true;
    env.proc.add(kPid, kStart, "fake");
    env.proc.set_auxv(kPid, 0x1000, 0x2000);
    testing::FakePage page(kPid);
    page.head().exec_entry = 1; // made before an exec: stale
    const std::string path = page.write(env.base);
    const std::string status = env.proc.dir(kPid) + "/status";
    std::string status_text;
    {
        FILE* f = fopen(status.c_str(), "r");
        REQUIRE(f != nullptr);
        char buf[4096];
        status_text.assign(buf, fread(buf, 1, sizeof buf, f));
        fclose(f);
    }
    REQUIRE(unlink(status.c_str()) == 0);
    REQUIRE(mkfifo(status.c_str(), 0600) == 0);
    const std::string fresh = env.tmp.path() + "/fresh";
    put_page(env.tmp.path(), "fresh", testing::FakePage(kPid));
    const ino_t fresh_ino = inode(fresh);

    cl::Scan s;
    std::thread reader([&] { s = env.scan(); });
    // The reader opens status for reading once it has judged the file: then swap the page.
    int fd = -1;
    for (int i = 0; i < 10000 && fd < 0; ++i) {
        fd = open(status.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
            usleep(1000);
    }
    CHECK(fd >= 0);
    CHECK(rename(fresh.c_str(), path.c_str()) == 0);
    if (fd >= 0) {
        CHECK(write(fd, status_text.data(), status_text.size()) ==
              static_cast<ssize_t>(status_text.size()));
        close(fd);
    }
    reader.join();
    CHECK(skipped(s, Skip::Exec) == 1);
    CHECK(s.removed == 0);
    CHECK(inode(path) == fresh_ino);
}

// ---- caps ----

namespace {

/// Fills `dir` with `n` empty files: half of them named by words, half by pids that do not exist
/// (above any pid_max). Returns false on a failure.
bool make_junk(const std::string& dir, int n) {
    const int d = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0)
        return false;
    bool ok = true;
    for (int i = 0; i < n && ok; ++i) {
        const std::string name =
            i % 2 == 0 ? "junk-" + std::to_string(i) : std::to_string(5000000 + i);
        const int fd = openat(d, name.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        ok = fd >= 0;
        if (fd >= 0)
            close(fd);
    }
    close(d);
    return ok;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

} // namespace

TEST_CASE("100,000 junk files are scanned within the caps and counted by reason") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    testing::FakePage(kPid).write(env.base);
    REQUIRE(make_junk(env.user_dir(), 100000));
    // Well under Prometheus's 10 s; how fast it really is belongs in the benchmarks.
    env.options.deadline = std::chrono::milliseconds(8000);
    // All of it is examined here, in the page's own directory (by default a directory gets
    // 32,768 entries: the next case).
    env.options.max_entries_per_dir = 200000;

    for (const bool remove : {false, true}) {
        CAPTURE(remove);
        env.options.remove_stale = remove; // with it, dead pids' files are opened and read
        const size_t rss_before = testing::rss_bytes();
        const auto t0 = std::chrono::steady_clock::now();
        const cl::Scan s = env.scan();
        const double took = seconds_since(t0);
        MESSAGE("100,000 junk files, remove_stale=", remove, ": ", took, " s");
        CHECK_FALSE(s.truncated);
        REQUIRE(s.processes.size() == 1);
        CHECK(s.processes[0].pid == kPid);
        CHECK(skipped(s, Skip::Foreign) == 50000);
        CHECK(skipped(s, Skip::Dead) == 50000);
        CHECK(total_skipped(s) == 100000);
        CHECK(s.removed == 0); // empty files: not pages of those pids
        // Nothing is kept for junk: the reader's memory does not grow with it.
        const size_t rss_after = testing::rss_bytes();
        CHECK(rss_after < rss_before + 8 * 1024 * 1024);
    }
}

TEST_CASE("a user who fills their own directory with junk cannot hide other users' pages") {
    if (!is_root()) {
        MESSAGE("not root: cannot make a second uid's directory; the per-directory cap is not "
                "tested");
        return;
    }
    Env env;
    env.options.max_entries = 1000; // less than the junk: read first, it would use up the scan
    env.options.max_entries_per_dir = 200;
    // nobody's directory: 2,000 pid-named junk files (more than its share)...
    const std::string junk_dir = env.dir_of(kNobody);
    for (int i = 0; i < 2000; ++i)
        REQUIRE(put(junk_dir + "/" + std::to_string(20000 + i), "junk", 4));
    // ...and root's page of a live process, in a directory read before or after it.
    env.proc.add(kPid, kStart, "victim", 0);
    put_page(env.dir_of(0), std::to_string(kPid), testing::FakePage(kPid), 0);
    const cl::Scan s = env.scan();
    CHECK(s.truncated);
    CHECK(skipped(s, Skip::Limit) >= 1);
    REQUIRE(s.processes.size() == 1);
    CHECK(s.processes[0].pid == kPid);
}

TEST_CASE("a small max_entries stops the scan: truncated, the rest counted as limit") {
    Env env;
    REQUIRE(make_junk(env.user_dir(), 10000));
    env.options.max_entries = 1000;
    const cl::Scan s = env.scan();
    CHECK(s.truncated);
    // The user directory is an entry too: 999 files examined, the 9,001 others counted.
    CHECK(skipped(s, Skip::Foreign) + skipped(s, Skip::Dead) == 999);
    CHECK(skipped(s, Skip::Limit) == 9001);
}

TEST_CASE("max_pages and the deadline cap a scan") {
    Env env;
    for (int pid = 100; pid < 110; ++pid) {
        env.proc.add(pid, kStart, "fake");
        testing::FakePage(pid).write(env.base);
    }
    SUBCASE("max_pages") {
        env.options.max_pages = 3;
        const cl::Scan s = env.scan();
        CHECK(s.truncated);
        CHECK(s.processes.size() == 3);
        CHECK(skipped(s, Skip::Limit) == 7);
        CHECK(total_skipped(s) == 7);
    }
    SUBCASE("deadline") {
        env.options.deadline = std::chrono::milliseconds(0);
        const cl::Scan s = env.scan();
        CHECK(s.truncated);
        CHECK(s.processes.empty());
        CHECK(skipped(s, Skip::Limit) >= 1); // the directory not visited
    }
    SUBCASE("no cap reached") {
        const cl::Scan s = env.scan();
        CHECK_FALSE(s.truncated);
        CHECK(s.processes.size() == 10);
    }
}

// ---- pages that change under the reader ----

TEST_CASE("a reader survives a page truncated and rewritten under it") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    const testing::FakePage page(kPid);
    const std::string path = page.write(env.base);
    std::atomic<bool> done{false};
    std::thread writer([&] {
        const size_t sizes[] = {
            0, 16, 1000, sizeof(arena_stats_head), 20000, sizeof(arena_stats_page) - 1};
        for (int i = 0; !done.load(); ++i) {
            const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
            if (fd < 0)
                continue;
            if (i % 2 == 0) {
                if (ftruncate(fd, static_cast<off_t>(sizes[(i / 2) % 6])) != 0)
                    break;
            } else if (pwrite(fd, &page.page(), sizeof(arena_stats_page), 0) !=
                       static_cast<ssize_t>(sizeof(arena_stats_page))) {
                break;
            }
            close(fd);
        }
    });
    int valid = 0, refused = 0, odd = 0;
    const auto t0 = std::chrono::steady_clock::now();
    while (seconds_since(t0) < 1.0) {
        const cl::Scan s = env.scan();
        if (s.processes.size() == 1 && total_skipped(s) == 0 && s.processes[0].pid == kPid)
            ++valid;
        else if (s.processes.empty() && total_skipped(s) == 1)
            ++refused;
        else
            ++odd;
        Skip why = Skip::Count;
        const std::optional<cl::Process> p = cl::read_pid(env.base, kPid, env.options, &why);
        if (p ? p->pid != kPid : why == Skip::Count)
            ++odd;
    }
    done = true;
    writer.join();
    MESSAGE("scans while the page changed: ", valid, " valid, ", refused, " refused");
    CHECK(odd == 0);
    CHECK(valid + refused > 0);
}

TEST_CASE("a sparse page on a full tmpfs does not crash the reader") {
    if (!is_root()) {
        MESSAGE("not root: cannot mount a tmpfs; the full-tmpfs case is not tested");
        return;
    }
    Env env;
    const std::string mnt = env.tmp.path() + "/mnt";
    REQUIRE(mkdir(mnt.c_str(), 0755) == 0);
    if (mount("tmpfs", mnt.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=256k") != 0) {
        MESSAGE("cannot mount a tmpfs here (", strerror(errno),
                "): the full-tmpfs case is not tested");
        return;
    }
    struct Unmount {
        std::string at;
        ~Unmount() { umount2(at.c_str(), MNT_DETACH); }
    } unmount{mnt};

    env.base = mnt + "/base";
    REQUIRE(mkdir(env.base.c_str(), 01777) == 0);
    env.proc.add(kPid, kStart, "fake");
    // The page as the old writer made it: ftruncate'd, only its first KiB written.
    const std::string path = env.path(kPid);
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(ftruncate(fd, sizeof(arena_stats_page)) == 0);
    const testing::FakePage page(kPid);
    REQUIRE(pwrite(fd, &page.page().head, sizeof(arena_stats_head), 0) ==
            static_cast<ssize_t>(sizeof(arena_stats_head)));
    close(fd);
    // Fill the tmpfs.
    const int filler = open((mnt + "/filler").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    REQUIRE(filler >= 0);
    static char chunk[4096];
    while (write(filler, chunk, sizeof chunk) > 0) {
    }
    CHECK(errno == ENOSPC);
    close(filler);

    // The holes read as zeros (no shard counted anything): a valid page, and no SIGBUS.
    const cl::Scan s = env.scan();
    CHECK(s.processes.size() + total_skipped(s) == 1);
    CHECK(s.processes.size() == 1);
    Skip why = Skip::Count;
    CHECK(cl::read_pid(env.base, kPid, env.options, &why).has_value());
    const cl::ControlResult r = cl::request_trim(env.base, kPid, env.options);
    CHECK((r.error == cl::ControlError::None || r.error == cl::ControlError::Io));
}

// ---- control requests ----

TEST_CASE("trim and purge requests are written into the page") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    testing::FakePage page(kPid);
    page.head().control.trims_served = 7;
    page.head().control.trim_requests = 7;
    page.head().control.purges_served = 2;
    page.head().control.purge_requests = 2;
    const std::string path = page.write(env.base);

    cl::ControlResult r = cl::request_trim(env.base, kPid, env.options);
    CHECK(r.ok());
    CHECK(r.detail.empty());
    CHECK(r.requests == 8);
    CHECK(r.served == 7);
    CHECK(load(path).head.control.trim_requests == 8);
    CHECK(cl::request_trim(env.base, kPid, env.options).requests == 9);

    r = cl::request_purge_delay(env.base, kPid, 250, env.options);
    CHECK(r.ok());
    CHECK(r.requests == 3);
    CHECK(r.served == 2);
    arena_stats_page now = load(path);
    CHECK(now.head.control.purge_delay_ms == 250);
    CHECK(now.head.control.purge_requests == 3);
    CHECK(now.head.control.trim_requests == 9);
    r = cl::request_purge_delay(env.base, kPid, -1, env.options);
    CHECK(r.ok());
    now = load(path);
    CHECK(now.head.control.purge_delay_ms == -1);
    CHECK(now.head.control.purge_requests == 4);
    // Nothing else moved.
    now.head.control = page.page().head.control;
    CHECK(memcmp(&now, &page.page(), sizeof now) == 0);
}

TEST_CASE("control requests refuse bad arguments, missing pages and stale pages") {
    Env env;
    SUBCASE("invalid arguments") {
        cl::ControlResult r = cl::request_purge_delay(env.base, kPid, -2, env.options);
        CHECK(r.error == cl::ControlError::Invalid);
        CHECK(r.detail.find("-2") != std::string::npos);
        r = cl::request_purge_delay(env.base, kPid, 3600001, env.options);
        CHECK(r.error == cl::ControlError::Invalid);
        CHECK(cl::request_purge_delay(env.base, kPid, 3600000, env.options).error !=
              cl::ControlError::Invalid);
        CHECK(cl::request_trim(env.base, 0, env.options).error == cl::ControlError::Invalid);
        CHECK(cl::request_trim(env.base, -5, env.options).error == cl::ControlError::Invalid);
    }
    SUBCASE("no process") {
        const cl::ControlResult r = cl::request_trim(env.base, kPid, env.options);
        CHECK(r.error == cl::ControlError::NoPage);
        CHECK(r.detail.find("no process") != std::string::npos);
    }
    SUBCASE("a process without a page") {
        env.proc.add(kPid, kStart, "fake");
        const cl::ControlResult r = cl::request_trim(env.base, kPid, env.options);
        CHECK(r.error == cl::ControlError::NoPage);
        CHECK(r.detail.find("no stats page") != std::string::npos);
    }
    SUBCASE("a refused page: the detail says why") {
        env.proc.add(kPid, kStart, "fake");
        testing::FakePage page(kPid);
        page.head().magic = 1;
        page.write(env.base);
        const cl::ControlResult r = cl::request_trim(env.base, kPid, env.options);
        CHECK(r.error == cl::ControlError::NoPage);
        CHECK(r.detail.find("bad_magic") != std::string::npos);
    }
    SUBCASE("stale: pid reused, or another program") {
        const std::string path = testing::FakePage(kPid).write(env.base);
        env.proc.add(kPid, kStart + 1, "fake");
        CHECK(cl::request_trim(env.base, kPid, env.options).error == cl::ControlError::Stale);
        CHECK(cl::request_purge_delay(env.base, kPid, 5, env.options).error ==
              cl::ControlError::Stale);
        env.proc.add(kPid, kStart, "fake");
        env.proc.set_auxv(kPid, 0x1000, 0x2000);
        testing::FakePage exec_page(kPid);
        exec_page.head().exec_entry = 1;
        exec_page.write(env.base);
        const cl::ControlResult r = cl::request_trim(env.base, kPid, env.options);
        CHECK(r.error == cl::ControlError::Stale);
        CHECK(load(path).head.control.trim_requests == 0); // nothing written
    }
}

TEST_CASE("a control request to a page of another user is refused with permission") {
    if (!is_root()) {
        MESSAGE("not root: cannot run a request as another uid; permission is not tested");
        return;
    }
    Env env;
    // nobody must reach the base, the fake procfs and (in the first case) root's page.
    REQUIRE(chmod(env.tmp.path().c_str(), 0755) == 0);
    env.proc.add(kPid, kStart, "root daemon", 0);
    const std::string dir = env.dir_of(0);
    const std::string path = testing::FakePage(kPid).write(env.base);
    SUBCASE("a page nobody may read but not write") {
        REQUIRE(chmod(dir.c_str(), 0755) == 0);
        REQUIRE(chmod(path.c_str(), 0644) == 0);
        const int code = as_nobody([&] {
            const cl::ControlResult r = cl::request_trim(env.base, kPid, env.options);
            if (r.error != cl::ControlError::Permission)
                return 10 + int(r.error);
            return r.detail.find("uid 0") != std::string::npos &&
                           r.detail.find("uid 65534") != std::string::npos
                       ? 0
                       : 20;
        });
        CHECK(code == 0);
    }
    SUBCASE("a private directory") {
        const int code = as_nobody([&] {
            const cl::ControlResult r = cl::request_purge_delay(env.base, kPid, 10, env.options);
            return r.error == cl::ControlError::Permission ? 0 : 10 + int(r.error);
        });
        CHECK(code == 0);
        // A scan by nobody skips root's private directory without counting it anywhere.
        const int scan_code = as_nobody([&] {
            const cl::Scan s = cl::scan(env.base, env.options);
            return s.error.empty() && s.processes.empty() && total_skipped(s) == 0 ? 0 : 30;
        });
        CHECK(scan_code == 0);
    }
    CHECK(load(path).head.control.trim_requests == 0);
    CHECK(load(path).head.control.purge_requests == 0);
}

// ---- read_pid ----

TEST_CASE("read_pid finds a page in the euid's directory and in root's") {
    Env env;
    Skip why = Skip::Count;
    SUBCASE("no process: dead") {
        CHECK_FALSE(cl::read_pid(env.base, kPid, env.options, &why));
        CHECK(why == Skip::Dead);
    }
    SUBCASE("a process without a page: foreign") {
        env.proc.add(kPid, kStart, "fake");
        CHECK_FALSE(cl::read_pid(env.base, kPid, env.options, &why));
        CHECK(why == Skip::Foreign);
    }
    SUBCASE("a refused page: its reason") {
        env.proc.add(kPid, kStart, "fake");
        testing::FakePage page(kPid);
        page.head().flags = 0;
        page.write(env.base);
        CHECK_FALSE(cl::read_pid(env.base, kPid, env.options, &why));
        CHECK(why == Skip::NotReady);
    }
    SUBCASE("the page in the process's own directory") {
        env.proc.add(kPid, kStart, "fake");
        const std::string path = testing::FakePage(kPid).write(env.base);
        const std::optional<cl::Process> p = cl::read_pid(env.base, kPid, env.options, &why);
        REQUIRE(p);
        CHECK(p->pid == kPid);
        CHECK(p->path == path);
    }
    SUBCASE("the euid's directory and root's, as root") {
        if (!is_root()) {
            MESSAGE("not root: cannot make other uids' directories; only the own one is tested");
            return;
        }
        // Effective uid nobody, the other uids 1000: its page is in 65534/.
        env.proc.add(kPid, kStart, "fake", 1000, kNobody, 1000, 1000);
        put_page(env.dir_of(kNobody), std::to_string(kPid), testing::FakePage(kPid), kNobody);
        std::optional<cl::Process> p = cl::read_pid(env.base, kPid, env.options, &why);
        REQUIRE(p);
        CHECK(p->path == env.base + "/65534/" + std::to_string(kPid));
        CHECK(p->uid == kNobody);
        // A process of 1000 whose page is root's (it was made before a setuid).
        env.proc.add(kPid + 1, kStart, "fake", 1000);
        put_page(env.dir_of(0), std::to_string(kPid + 1), testing::FakePage(kPid + 1), 0);
        p = cl::read_pid(env.base, kPid + 1, env.options, &why);
        REQUIRE(p);
        CHECK(p->path == env.base + "/0/" + std::to_string(kPid + 1));
        // Pages in both: root's, as a scan keeps it.
        put_page(env.dir_of(0), std::to_string(kPid), testing::FakePage(kPid), 0);
        p = cl::read_pid(env.base, kPid, env.options, &why);
        REQUIRE(p);
        CHECK(p->path == env.base + "/0/" + std::to_string(kPid));
        // A page in a directory of none of its uids is not looked for.
        env.proc.add(kPid + 2, kStart, "fake", 1000);
        put_page(env.dir_of(kNobody), std::to_string(kPid + 2), testing::FakePage(kPid + 2),
                 kNobody);
        CHECK_FALSE(cl::read_pid(env.base, kPid + 2, env.options, &why));
        CHECK(why == Skip::Foreign);
    }
}

// ---- the rest of the API ----

namespace {

size_t open_fds() {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
        ++n;
    return n;
}

} // namespace

TEST_CASE("no descriptor is left open, whatever the reader met") {
    Env env;
    env.options.remove_stale = true;
    const std::string dir = env.user_dir();
    // One of each: valid, refused in every way that opens the file, stale, junk.
    env.proc.add(100, kStart, "fake");
    testing::FakePage(100).write(env.base);
    for (int pid = 101; pid <= 110; ++pid)
        env.proc.add(pid, kStart, "fake");
    testing::FakePage(101).write_truncated(env.base, 100);
    testing::FakePage bad(102);
    bad.head().magic = 7;
    bad.write(env.base);
    testing::FakePage forged(104);
    put_page(dir, "103", forged);
    testing::FakePage unready(104);
    unready.head().flags = 0;
    unready.write(env.base);
    env.proc.add(105, kStart + 1, "fake");
    testing::FakePage(105).write(env.base);
    REQUIRE(mkfifo((dir + "/106").c_str(), 0600) == 0);
    REQUIRE(symlink("100", (dir + "/107").c_str()) == 0);
    testing::FakePage(120).write(env.base); // dead
    put(dir + "/121", "junk", 4);           // dead, not a page
    put(dir + "/junk", "junk", 4);
    const size_t before = open_fds();
    for (int round = 0; round < 3; ++round) {
        const cl::Scan s = env.scan();
        CHECK(s.processes.size() == 1);
        Skip why = Skip::Count;
        for (int pid = 100; pid <= 122; ++pid) {
            cl::read_pid(env.base, pid, env.options, &why);
            cl::request_trim(env.base, pid, env.options);
            cl::request_purge_delay(env.base, pid, 1, env.options);
        }
        cl::scan(env.tmp.path() + "/none", env.options);
    }
    CHECK(open_fds() == before);
}

TEST_CASE("scan reports an unreadable base or procfs as an error sentence") {
    Env env;
    env.proc.add(kPid, kStart, "fake");
    testing::FakePage(kPid).write(env.base);
    SUBCASE("missing base") {
        const cl::Scan s = cl::scan(env.tmp.path() + "/none", env.options);
        CHECK(s.error == "cannot read " + env.tmp.path() + "/none: No such file or directory");
    }
    SUBCASE("base is a symlink") {
        const std::string link_path = env.tmp.path() + "/link";
        REQUIRE(symlink(env.base.c_str(), link_path.c_str()) == 0);
        const cl::Scan s = cl::scan(link_path, env.options);
        CHECK(s.error.find("cannot read " + link_path) == 0);
        CHECK(s.processes.empty());
    }
    SUBCASE("missing procfs: nothing is judged (nor removed)") {
        env.options.procfs = env.tmp.path() + "/no-proc";
        env.options.remove_stale = true;
        const cl::Scan s = env.scan();
        CHECK(s.error.find("cannot read " + env.options.procfs) == 0);
        CHECK(exists(env.path(kPid)));
    }
}

TEST_CASE("skip names are distinct lower_snake words, and default_dir follows ARENA_STATS_DIR") {
    std::vector<std::string> seen;
    for (size_t r = 0; r < size_t(Skip::Count); ++r) {
        const std::string name = cl::skip_name(Skip(r));
        CAPTURE(name);
        CHECK(!name.empty());
        CHECK(name.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") == std::string::npos);
        CHECK(std::find(seen.begin(), seen.end(), name) == seen.end());
        seen.push_back(name);
    }
    CHECK(std::string(cl::skip_name(Skip::OtherNamespace)) == "other_namespace");
    CHECK(std::string(cl::skip_name(Skip::PidReused)) == "pid_reused");
    CHECK(std::string(cl::skip_name(Skip::UnsafeDir)) == "unsafe_dir");
    CHECK(std::string(cl::skip_name(Skip::ForeignOwner)) == "foreign_owner");
    CHECK(std::string(cl::skip_name(Skip::Limit)) == "limit");

    const char* old = getenv("ARENA_STATS_DIR");
    const std::string saved = old != nullptr ? old : "";
    setenv("ARENA_STATS_DIR", "/somewhere/else", 1);
    CHECK(cl::default_dir() == "/somewhere/else");
    unsetenv("ARENA_STATS_DIR");
    CHECK(cl::default_dir() == ARENA_STATS_DEFAULT_DIR);
    if (old != nullptr)
        setenv("ARENA_STATS_DIR", saved.c_str(), 1);
}
