// SPDX-License-Identifier: MIT
#include "fake_page.h"

#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <new>
#include <sys/file.h>
#include <unistd.h>

namespace testing {

FakePage::FakePage(int pid) : page_(new arena_stats_page{}) {
    arena_stats_page& p = *page_;
    p.magic = ARENA_STATS_MAGIC;
    p.version = ARENA_STATS_VERSION;
    p.header_size = offsetof(arena_stats_page, shards);
    p.size = sizeof(arena_stats_page);
    p.pid = pid;
    p.flags = ARENA_STATS_READY;
    p.start_time = 12345;
    p.created_unix_ns = 1700000000000000000ull;
    strcpy(p.comm, "fake");
    strcpy(p.cmdline, "fake --workload");
    p.nclasses = 4;
    p.nshards = ARENA_STATS_SHARDS;
    p.shards_used = ARENA_STATS_SHARDS; // tests set counters in any shard
    p.nevents = ARENA_EV_COUNT;
    p.page_size = 4096;
    const uint32_t sizes[] = {16, 32, 48, 64};
    for (unsigned i = 0; i < 4; ++i)
        p.class_size[i] = sizes[i];
    p.control.purge_delay_ms = ARENA_STATS_NO_REQUEST;
}

FakePage::~FakePage() {
    if (fd_ >= 0)
        close(fd_);
    delete page_;
}

std::string FakePage::write(const std::string& dir, bool alive) {
    const std::string path = dir + "/" + std::to_string(page_->pid);
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return {};
    const char* bytes = reinterpret_cast<const char*>(page_);
    size_t done = 0;
    while (done < sizeof(arena_stats_page)) {
        const ssize_t n = ::write(fd, bytes + done, sizeof(arena_stats_page) - done);
        if (n <= 0)
            break;
        done += static_cast<size_t>(n);
    }
    if (alive) {
        flock(fd, LOCK_SH);
        if (fd_ >= 0)
            close(fd_);
        fd_ = fd;
    } else {
        close(fd);
    }
    return path;
}

std::string FakePage::write_truncated(const std::string& dir, size_t bytes) {
    const std::string path = dir + "/" + std::to_string(page_->pid);
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return {};
    const ssize_t n = ::write(fd, page_, bytes);
    (void)n;
    flock(fd, LOCK_SH);
    if (fd_ >= 0)
        close(fd_);
    fd_ = fd;
    return path;
}

uint64_t self_start_time() {
    FILE* f = fopen("/proc/self/stat", "r");
    if (f == nullptr)
        return 0;
    char buf[1024];
    const size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char* p = strrchr(buf, ')');
    if (p == nullptr)
        return 0;
    // Fields after the comm: state is field 3; start_time is field 22.
    int field = 2;
    for (; *p && field < 22; ++p)
        if (*p == ' ')
            ++field;
    return strtoull(p, nullptr, 10);
}

} // namespace testing
