// SPDX-License-Identifier: MIT
#include "fake_page.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <elf.h>
#include <fcntl.h>
#include <filesystem>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

namespace testing {
namespace {

/// Writes `text` to `path` whole (replacing it). False on any error.
bool write_file(const std::string& path, const std::string& text) {
    FILE* f = fopen(path.c_str(), "w");
    if (f == nullptr)
        return false;
    const bool ok = fwrite(text.data(), 1, text.size(), f) == text.size();
    return fclose(f) == 0 && ok;
}

/// Makes `dir` with `mode` (chmod'ed, past the umask) unless it already exists.
void make_dir(const std::string& dir, mode_t mode) {
    if (mkdir(dir.c_str(), mode) == 0)
        chmod(dir.c_str(), mode);
}

} // namespace

// ---- FakeProc ----

FakeProc::FakeProc(std::string root) : root_(std::move(root)) {
    std::error_code ec;
    std::filesystem::create_directories(root_, ec);
}

void FakeProc::add(int pid, uint64_t start_time, const std::string& comm, uid_t uid) {
    add(pid, start_time, comm, uid, uid, uid, uid);
}

void FakeProc::add(int pid, uint64_t start_time, const std::string& comm, uid_t ruid, uid_t euid,
                   uid_t suid, uid_t fsuid) {
    const std::string d = dir(pid);
    mkdir(d.c_str(), 0755);
    // proc_pid_stat(5): pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt
    // majflt cmajflt utime stime cutime cstime priority nice num_threads itrealvalue starttime
    // vsize rss ... The comm is raw: it may hold spaces and ')'.
    const std::string stat = std::to_string(pid) + " (" + comm + ") S 1 " + std::to_string(pid) +
                             " " + std::to_string(pid) +
                             " 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 " +
                             std::to_string(start_time) +
                             " 12345678 300 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 "
                             "0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
    const std::string pid_text = std::to_string(pid);
    const std::string status = "Name:\t" + comm + "\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t" +
                               pid_text + "\nNgid:\t0\nPid:\t" + pid_text +
                               "\nPPid:\t1\nTracerPid:\t0\nUid:\t" + std::to_string(ruid) + "\t" +
                               std::to_string(euid) + "\t" + std::to_string(suid) + "\t" +
                               std::to_string(fsuid) +
                               "\nGid:\t0\t0\t0\t0\nFDSize:\t64\n"
                               "Groups:\t\nThreads:\t1\n";
    write_file(d + "/stat", stat);
    write_file(d + "/status", status);
}

void FakeProc::set_auxv(int pid, uint64_t entry, uint64_t random) {
    const uint64_t words[] = {AT_PAGESZ, 4096, AT_ENTRY, entry, AT_RANDOM, random, AT_NULL, 0};
    write_file(dir(pid) + "/auxv", std::string(reinterpret_cast<const char*>(words), sizeof words));
}

void FakeProc::remove(int pid) {
    std::error_code ec;
    std::filesystem::remove_all(dir(pid), ec);
}

// ---- FakePage ----

FakePage::FakePage(int pid) : page_(new arena_stats_page{}) {
    arena_stats_head& h = page_->head;
    h.magic = ARENA_STATS_MAGIC;
    h.version = ARENA_STATS_VERSION;
    h.header_size = sizeof(arena_stats_head);
    h.size = sizeof(arena_stats_page);
    h.pid = pid;
    h.flags = ARENA_STATS_READY;
    h.start_time = 12345;
    h.created_unix_ns = 1700000000000000000ull;
    strcpy(h.comm, "fake");
    strcpy(h.cmdline, "fake --workload");
    h.nclasses = 4;
    h.nshards = ARENA_STATS_SHARDS;
    h.nevents = ARENA_EV_COUNT;
    h.page_size = 4096;
    const uint32_t sizes[] = {16, 32, 48, 64};
    for (unsigned i = 0; i < 4; ++i)
        h.class_size[i] = sizes[i];
    h.shards_used = ARENA_STATS_SHARDS; // tests set counters in any shard
    h.ngauges = ARENA_G_COUNT;
    h.uid = static_cast<uint32_t>(geteuid());
}

FakePage::FakePage(const FakePage& other) : page_(new arena_stats_page(*other.page_)) {}

FakePage& FakePage::operator=(const FakePage& other) {
    if (this != &other)
        *page_ = *other.page_;
    return *this;
}

std::string FakePage::user_dir(const std::string& base) {
    return base + "/" + std::to_string(geteuid());
}

std::string FakePage::write(const std::string& base) const {
    return write_file(base, sizeof(arena_stats_page), {});
}

std::string FakePage::write_truncated(const std::string& base, size_t bytes) const {
    return write_file(base, bytes < sizeof(arena_stats_page) ? bytes : sizeof(arena_stats_page),
                      {});
}

std::string FakePage::write(const std::string& base, std::string_view tail) const {
    return write_file(base, sizeof(arena_stats_page), tail);
}

std::string FakePage::write_file(const std::string& base, size_t bytes,
                                 std::string_view tail) const {
    make_dir(base, 01777);
    const std::string dir = user_dir(base);
    make_dir(dir, 0700);
    const std::string path = dir + "/" + std::to_string(page_->head.pid);
    if (unlink(path.c_str()) != 0 && errno != ENOENT)
        return {};
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return {};
    fchmod(fd, 0600);
    bool ok = true;
    for (const std::string_view part :
         {std::string_view(reinterpret_cast<const char*>(page_.get()), bytes), tail}) {
        size_t done = 0;
        while (ok && done < part.size()) {
            const ssize_t n = ::write(fd, part.data() + done, part.size() - done);
            ok = n > 0;
            done += ok ? static_cast<size_t>(n) : 0;
        }
    }
    return close(fd) == 0 && ok ? path : std::string();
}

uint64_t self_start_time() {
    FILE* f = fopen("/proc/self/stat", "r");
    if (f == nullptr)
        return 0;
    char buf[2048];
    const size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    // The comm (field 2) may hold spaces and ')': the fields after it start after the last ')'.
    const char* p = strrchr(buf, ')');
    if (p == nullptr)
        return 0;
    int field = 2;
    for (; *p != '\0' && field < 22; ++p)
        if (*p == ' ')
            ++field;
    return strtoull(p, nullptr, 10);
}

FakePage self_page() {
    FakePage page(getpid());
    page.head().start_time = self_start_time();
    page.head().exec_entry = getauxval(AT_ENTRY);
    page.head().exec_random = getauxval(AT_RANDOM);
    struct stat st {};
    if (stat("/proc/self/ns/pid", &st) == 0)
        page.head().pid_ns = st.st_ino;
    return page;
}

} // namespace testing
