// SPDX-License-Identifier: MIT
// What the stats page writer must withstand (SECURITY.md), each case with the real libarena in
// a child process: directories planted or swapped by another user (a symlink, a foreign owner,
// group-writable, a base swapped before exit), a full filesystem, programs started with their
// standard descriptors closed or counting their descriptors, a setuid program given ARENA_*
// variables by its caller, pages that must stay private (or readable by one group only), and
// pages of dead processes cleaned up by new processes without any reader running. Every case
// leaves the program running normally.
//
// Cases that need root (chown to another user, a small tmpfs, a setuid copy) say so and skip
// without it.
#include "common.h"
#include "fake_page.h"
#include "testing.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <set>
#include <string>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace {

/// A temporary directory that other users (the setuid case) can pass through.
struct OpenTempDir : testing::TempDir {
    OpenTempDir() : testing::TempDir("safety") { chmod(path().c_str(), 0755); }
};

bool is_root() {
    return geteuid() == 0;
}

bool exists(const std::string& p) {
    struct stat s {};
    return lstat(p.c_str(), &s) == 0;
}

/// Names in a directory, without "." and "..".
std::set<std::string> entries(const std::string& dir) {
    std::set<std::string> out;
    DIR* d = opendir(dir.c_str());
    if (d == nullptr)
        return out;
    while (const dirent* e = readdir(d))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            out.insert(e->d_name);
    closedir(d);
    return out;
}

std::string uid_dir(const std::string& base) {
    return base + "/" + std::to_string(geteuid());
}

/// Runs child `name` with the stats base `base` and ARENA_VERBOSE=1.
testing::ChildResult run_with_base(const std::string& name, const std::string& base,
                                   std::vector<std::string> env = {}) {
    env.push_back("ARENA_STATS_DIR=" + base);
    env.push_back("ARENA_VERBOSE=1");
    return testing::run_child(name, env);
}

/// Forks; in the child, `prepare` runs (closing descriptors, ...), then the registered child
/// `name` is exec'd with `env`. Returns what it wrote on the pipe it was given as fd 10, and
/// its exit status in *status.
std::string run_reporting(const std::string& name, const std::vector<std::string>& env,
                          void (*prepare)(), int* status) {
    int pipefd[2];
    REQUIRE(pipe(pipefd) == 0);
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        if (dup2(pipefd[1], 10) != 10)
            _exit(126);
        close(pipefd[0]);
        close(pipefd[1]);
        prepare();
        testing::exec_child(name, env);
    }
    close(pipefd[1]);
    std::string out;
    char buf[512];
    for (ssize_t n; (n = read(pipefd[0], buf, sizeof buf)) > 0;)
        out.append(buf, static_cast<size_t>(n));
    close(pipefd[0]);
    REQUIRE(waitpid(pid, status, 0) == pid);
    return out;
}

/// The descriptors open in this process, without the one that lists them.
std::string open_fds() {
    std::string out;
    DIR* d = opendir("/proc/self/fd");
    if (d == nullptr)
        return "?";
    const int own = dirfd(d);
    std::vector<int> fds;
    while (const dirent* e = readdir(d))
        if (e->d_name[0] != '.' && atoi(e->d_name) != own)
            fds.push_back(atoi(e->d_name));
    closedir(d);
    std::sort(fds.begin(), fds.end());
    for (int fd : fds) {
        if (!out.empty())
            out += ',';
        out += std::to_string(fd);
    }
    return out;
}

void report(const std::string& s) {
    const ssize_t n = write(10, s.data(), s.size());
    (void)n;
}

/// Unmounts on scope exit.
struct Mount {
    std::string where;
    bool mounted = false;
    ~Mount() {
        if (mounted)
            umount2(where.c_str(), MNT_DETACH);
    }
};

void* (*volatile do_malloc)(size_t) = malloc;
void (*volatile do_free)(void*) = free;

} // namespace

// ---- Children ----------------------------------------------------------------------------------

ARENA_TEST_CHILD(allocate_and_exit) {
    for (int i = 0; i < 1000; ++i)
        do_free(do_malloc(static_cast<size_t>(16 + i * 40)));
    printf("%d\n", getpid());
    return 0;
}

ARENA_TEST_CHILD(allocate_for_a_while) {
    // Slow paths for about 50 ms: what start-up leaves for later (dead pages) gets done.
    for (int i = 0; i < 50; ++i) {
        for (int j = 0; j < 16; ++j)
            do_free(do_malloc(1 << 20));
        usleep(1000);
    }
    return 0;
}

ARENA_TEST_CHILD(first_opens) {
    // Started with 0, 1 and 2 closed (after libarena made its page): the program's own opens
    // must get 0, 1, 2, and its "stdout" must be its own file.
    const int a = open("/dev/null", O_RDONLY);
    const char* out_path = getenv("ARENA_TEST_OUT");
    const int b = out_path != nullptr ? open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600) : -1;
    const int c = open("/dev/null", O_RDONLY);
    for (int i = 0; i < 100; ++i) {
        do_free(do_malloc(1 << 20)); // slow paths: the writer publishes into its page
        const ssize_t n = write(1, "to stdout\n", 10);
        (void)n;
    }
    report(std::to_string(a) + " " + std::to_string(b) + " " + std::to_string(c) + " " +
           open_fds());
    return 0;
}

ARENA_TEST_CHILD(list_fds) {
    do_free(do_malloc(100));
    report(open_fds());
    return 0;
}

// ---- Tests
// ----------------------------------------------------------------------------------------

TEST_CASE("the process runs on libarena") {
    REQUIRE(testing::on_libarena());
}

TEST_SUITE("page-safety") {

    TEST_CASE("the page lives in <base>/<uid>/<pid>, with no temporary file left") {
        OpenTempDir t;
        const std::string base = t.file("base");
        for (int i = 0; i < 3; ++i) {
            const testing::ChildResult r = run_with_base("allocate_and_exit", base);
            REQUIRE(r.code == 0);
            CHECK(r.err.find("stats page off") == std::string::npos);
            CHECK(r.err.find(base + "/" + std::to_string(geteuid()) + "/") != std::string::npos);
        }
        // Only user directories in the base; only pages (named by a pid) in them, none left by
        // processes that exited normally.
        CHECK(entries(base) == std::set<std::string>{std::to_string(geteuid())});
        for (const std::string& name : entries(uid_dir(base)))
            CHECK_MESSAGE(name.find_first_not_of("0123456789") == std::string::npos, name);
    }

    TEST_CASE("a symlink planted as the base or the user directory is refused; the program runs") {
        OpenTempDir t;
        const std::string target = t.file("target");
        REQUIRE(mkdir(target.c_str(), 01777) == 0);
        chmod(target.c_str(), 01777);
        SUBCASE("the base is a symlink") {
            REQUIRE(symlink(target.c_str(), t.file("base").c_str()) == 0);
        }
        SUBCASE("the user directory is a symlink") {
            REQUIRE(mkdir(t.file("base").c_str(), 01777) == 0);
            chmod(t.file("base").c_str(), 01777);
            REQUIRE(symlink(target.c_str(), uid_dir(t.file("base")).c_str()) == 0);
        }
        const testing::ChildResult r = run_with_base("allocate_and_exit", t.file("base"));
        CHECK(r.code == 0);
        CHECK(r.err.find("arena: stats page off:") != std::string::npos);
        CHECK(entries(target).empty());
    }

    TEST_CASE("a base or user directory owned by another user is refused; the program runs") {
        if (!is_root()) {
            MESSAGE("skipped: making a directory owned by another user needs root");
            return;
        }
        OpenTempDir t;
        const std::string base = t.file("base");
        REQUIRE(mkdir(base.c_str(), 01777) == 0);
        chmod(base.c_str(), 01777);
        SUBCASE("the base") {
            REQUIRE(chown(base.c_str(), 65534, 65534) == 0);
        }
        SUBCASE("the user directory") {
            REQUIRE(mkdir(uid_dir(base).c_str(), 0700) == 0);
            REQUIRE(chown(uid_dir(base).c_str(), 65534, 65534) == 0);
        }
        const testing::ChildResult r = run_with_base("allocate_and_exit", base);
        CHECK(r.code == 0);
        CHECK(r.err.find("arena: stats page off:") != std::string::npos);
        CHECK(r.err.find("another user") != std::string::npos);
        const std::set<std::string> in_base = entries(base);
        for (const std::string& name : in_base) // nothing but the planted directory
            CHECK(name == std::to_string(geteuid()));
        CHECK(entries(uid_dir(base)).empty());
    }

    TEST_CASE("directories others may write are refused; the program runs") {
        OpenTempDir t;
        const std::string base = t.file("base");
        SUBCASE("a group-writable user directory") {
            REQUIRE(mkdir(base.c_str(), 01777) == 0);
            chmod(base.c_str(), 01777);
            REQUIRE(mkdir(uid_dir(base).c_str(), 0770) == 0);
            chmod(uid_dir(base).c_str(), 0770);
        }
        SUBCASE("a world-writable base without the sticky bit") {
            REQUIRE(mkdir(base.c_str(), 0777) == 0);
            chmod(base.c_str(), 0777);
        }
        const testing::ChildResult r = run_with_base("allocate_and_exit", base);
        CHECK(r.code == 0);
        CHECK(r.err.find("arena: stats page off:") != std::string::npos);
        CHECK(r.err.find("others may write") != std::string::npos);
        CHECK(entries(uid_dir(base)).empty());
    }

    TEST_CASE(
        "a base swapped for a symlink while the process runs: its exit removes nothing there") {
        OpenTempDir t;
        const std::string base = t.file("base");
        testing::Child child("wait_for_stdin", {"ARENA_STATS_DIR=" + base});
        REQUIRE(child.read_line().rfind("ready ", 0) == 0);
        const std::string pid = std::to_string(child.pid());
        REQUIRE(exists(uid_dir(base) + "/" + pid));
        // Another user's move: the base renamed away, a symlink to a victim directory in its place,
        // holding files with the names the exit would remove (in this layout and the old one).
        const std::string victim = t.file("victim");
        REQUIRE(mkdir(victim.c_str(), 0755) == 0);
        REQUIRE(mkdir((victim + "/" + std::to_string(geteuid())).c_str(), 0700) == 0);
        const std::string bait = victim + "/" + std::to_string(geteuid()) + "/" + pid;
        const std::string old_bait = victim + "/" + pid;
        for (const std::string& f : {bait, old_bait}) {
            const int fd = open(f.c_str(), O_WRONLY | O_CREAT, 0600);
            REQUIRE(fd >= 0);
            close(fd);
        }
        REQUIRE(rename(base.c_str(), t.file("moved").c_str()) == 0);
        REQUIRE(symlink(victim.c_str(), base.c_str()) == 0);
        CHECK(child.wait() == 0);
        CHECK(exists(bait));
        CHECK(exists(old_bait));
    }

    TEST_CASE("a full filesystem: the program runs, its counters stay private") {
        if (!is_root()) {
            MESSAGE("skipped: mounting a small tmpfs needs root");
            return;
        }
        OpenTempDir t;
        Mount m{t.file("mnt")};
        REQUIRE(mkdir(m.where.c_str(), 0755) == 0);
        if (mount("tmpfs", m.where.c_str(), "tmpfs", 0, "size=64k,mode=0755") != 0) {
            MESSAGE("skipped: cannot mount a tmpfs here: ", strerror(errno));
            return;
        }
        m.mounted = true;
        const std::string base = m.where + "/base";
        REQUIRE(mkdir(base.c_str(), 01777) == 0);
        chmod(base.c_str(), 01777);
        REQUIRE(mkdir(uid_dir(base).c_str(), 0700) == 0);
        // Fill it.
        const int fd = open((m.where + "/fill").c_str(), O_WRONLY | O_CREAT, 0600);
        REQUIRE(fd >= 0);
        static const char kBlock[4096] = {};
        while (write(fd, kBlock, sizeof kBlock) > 0) {
        }
        close(fd);
        for (int i = 0; i < 3; ++i) {
            const testing::ChildResult r = run_with_base("allocate_and_exit", base);
            CHECK(r.exited);
            CHECK(r.signal == 0); // the old sparse page: SIGBUS at the first counter
            CHECK(r.code == 0);
            CHECK(r.err.find("cannot reserve") != std::string::npos);
        }
        CHECK(entries(uid_dir(base)).empty());
    }

    TEST_CASE(
        "started with 0, 1 and 2 closed: the program's first opens get them, stdout is its own") {
        OpenTempDir t;
        const std::string out = t.file("stdout");
        int status = 0;
        const std::string got = run_reporting(
            "first_opens", {"ARENA_STATS_DIR=" + t.file("base"), "ARENA_TEST_OUT=" + out},
            [] {
                for (int fd = 0; fd < 1024; ++fd)
                    if (fd != 10)
                        close(fd);
            },
            &status);
        REQUIRE(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
        // fds 0, 1, 2 in order, and nothing else open but the report pipe (10).
        CHECK(got == "0 1 2 0,1,2,10");
        // Every write to fd 1 reached the program's file, none a stats page.
        struct stat s {};
        REQUIRE(stat(out.c_str(), &s) == 0);
        CHECK(s.st_size == 100 * 10);
    }

    TEST_CASE("no descriptor of libarena's stays open in the program") {
        OpenTempDir t;
        int status = 0;
        const std::string got = run_reporting(
            "list_fds", {"ARENA_STATS_DIR=" + t.file("base")},
            [] {
                for (int fd = 3; fd < 1024; ++fd)
                    if (fd != 10)
                        close(fd);
            },
            &status);
        REQUIRE(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
        CHECK(got == "0,1,2,10");
    }

    TEST_CASE(
        "pages are private: 0600 in a 0700 directory; ARENA_STATS_GROUP opens them to a group") {
        OpenTempDir t;
        const std::string base = t.file("base");
        struct Case {
            const char* group; // ARENA_STATS_GROUP, or null
            unsigned page_mode, dir_mode;
        };
        // Root may give a page to any group; others to their own.
        const gid_t gid = is_root() ? 65534 : getegid();
        const std::string by_number = std::to_string(gid);
        const bool nogroup_named =
            is_root() && system("grep -q '^nogroup:x:65534:' /etc/group") == 0;
        std::vector<Case> cases = {{nullptr, 0600, 0700}, {by_number.c_str(), 0640, 0750}};
        if (nogroup_named)
            cases.push_back({"nogroup", 0640, 0750});
        for (const Case& c : cases) {
            CAPTURE(c.group);
            REQUIRE(system(("rm -rf '" + base + "'").c_str()) == 0);
            std::vector<std::string> env = {"ARENA_STATS_DIR=" + base};
            if (c.group != nullptr)
                env.push_back(std::string("ARENA_STATS_GROUP=") + c.group);
            testing::Child child("wait_for_stdin", env);
            REQUIRE(child.read_line().rfind("ready ", 0) == 0);
            const std::string page = uid_dir(base) + "/" + std::to_string(child.pid());
            struct stat s {};
            REQUIRE(stat(page.c_str(), &s) == 0);
            CHECK((s.st_mode & 07777) == c.page_mode);
            CHECK(s.st_uid == geteuid());
            if (c.group != nullptr)
                CHECK(s.st_gid == gid);
            REQUIRE(stat(uid_dir(base).c_str(), &s) == 0);
            CHECK((s.st_mode & 07777) == c.dir_mode);
            if (c.group != nullptr)
                CHECK(s.st_gid == gid);
            CHECK(child.wait() == 0);
        }
    }

    TEST_CASE("pages of dead processes are cleaned by new processes, with no reader running") {
        OpenTempDir t;
        const std::string base = t.file("base");
        // 24 pages of processes that are gone (pids above pid_max never exist), one of another PID
        // namespace (its pid says nothing here), and one of a live process (this one).
        constexpr int kDead = 24;
        for (int i = 0; i < kDead; ++i)
            testing::FakePage(4000000 + i).write(base);
        testing::FakePage elsewhere(4000100);
        elsewhere.head().pid_ns = 1; // no namespace has inode 1
        elsewhere.write(base);
        testing::FakePage alive(getpid());
        alive.head().start_time = testing::self_start_time();
        alive.write(base);
        auto dead_left = [&] {
            int n = 0;
            for (const std::string& name : entries(uid_dir(base)))
                if (name.rfind("40000", 0) == 0)
                    ++n;
            return n;
        };
        REQUIRE(dead_left() == kDead);
        // One process in four that lives past start-up looks at 16 entries (stats_file.cc).
        int runs = 0;
        for (; runs < 100 && dead_left() > 0; ++runs)
            REQUIRE(run_with_base("allocate_for_a_while", base).code == 0);
        MESSAGE("dead pages cleaned by ", runs, " process starts");
        CHECK(dead_left() == 0);
        CHECK(exists(uid_dir(base) + "/4000100"));
        CHECK(exists(uid_dir(base) + "/" + std::to_string(getpid())));
        for (const std::string& name : entries(uid_dir(base)))
            CHECK_MESSAGE(name[0] != '.', name); // no temporary files
    }

    TEST_CASE("a setuid program ignores ARENA_* and has no page and no purger") {
        if (!is_root()) {
            MESSAGE("skipped: making a setuid-root copy and running it as another user needs root");
            return;
        }
        const char* probe = getenv("ARENA_SECURE_PROBE");
        REQUIRE(probe != nullptr);
        OpenTempDir t;
        const std::string copy = t.file("probe");
        REQUIRE(system(("cp '" + std::string(probe) + "' '" + copy + "'").c_str()) == 0);
        REQUIRE(chown(copy.c_str(), 0, 0) == 0);
        REQUIRE(chmod(copy.c_str(), 04755) == 0);
        const std::string base = t.file("base");
        REQUIRE(mkdir(base.c_str(), 01777) == 0);
        chmod(base.c_str(), 01777);
        int out[2];
        REQUIRE(pipe(out) == 0);
        const pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            dup2(out[1], 1);
            dup2(out[1], 2);
            if (setgid(65534) != 0 || setuid(65534) != 0)
                _exit(125);
            const std::string dir_env = "ARENA_STATS_DIR=" + base;
            char* const argv[] = {const_cast<char*>(copy.c_str()), const_cast<char*>(base.c_str()),
                                  nullptr};
            char* const envp[] = {const_cast<char*>(dir_env.c_str()),
                                  const_cast<char*>("ARENA_VERBOSE=1"),
                                  const_cast<char*>("ARENA_SHOW_STATS=1"), nullptr};
            execve(copy.c_str(), argv, envp);
            _exit(127);
        }
        close(out[1]);
        std::string got;
        char buf[512];
        for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;)
            got.append(buf, static_cast<size_t>(n));
        close(out[0]);
        int status = 0;
        REQUIRE(waitpid(pid, &status, 0) == pid);
        INFO("probe output: ", got);
        REQUIRE(WIFEXITED(status));
        REQUIRE(WEXITSTATUS(status) == 0);
        if (got.find("secure 1") == std::string::npos) {
            MESSAGE("skipped: the setuid copy did not run in secure-exec mode (a nosuid mount?)");
            return;
        }
        CHECK(got.find("on_libarena 1") != std::string::npos);
        CHECK(got.find("pages 0") != std::string::npos);
        CHECK(got.find("children 0") != std::string::npos); // no background purger
        CHECK(got.find("arena:") ==
              std::string::npos); // ARENA_VERBOSE and ARENA_SHOW_STATS ignored
        CHECK(entries(base).empty());
    }

} // TEST_SUITE
