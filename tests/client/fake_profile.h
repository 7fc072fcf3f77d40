// SPDX-License-Identifier: MIT
// Heap profile regions made by hand, for the tests of the profile reader and arena-prof: a
// FakePage of kPid, alive in a fake procfs, with a profile region (profile_page.h) written after
// it. Header-only: tests/client's programs include it.
#pragma once

#include "common.h"
#include "fake_page.h"

#include "arena/profile_page.h"
#include "reader.h"

#include <doctest/doctest.h>

#include <cstring>
#include <fcntl.h>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace testing {

inline constexpr int kPid = 4243;
inline constexpr uint64_t kStart = 12345; // FakePage's start time

/// A base directory and a fake procfs in which kPid is alive.
struct ProfileEnv {
    TempDir tmp{"profile"};
    std::string base = tmp.path() + "/base";
    FakeProc proc{tmp.path() + "/proc"};
    arena::client::ScanOptions options;

    ProfileEnv() {
        mkdir(base.c_str(), 01777);
        chmod(base.c_str(), 01777);
        options.procfs = proc.root();
        options.remove_stale = false;
        proc.add(kPid, kStart, "profiled");
    }
};

/// A profile region, valid and empty until stacks are added.
struct Region {
    std::unique_ptr<arena_profile_region> r = std::make_unique<arena_profile_region>();

    Region() {
        memset(r.get(), 0, sizeof *r);
        arena_profile_head& h = r->head;
        h.magic = ARENA_PROFILE_MAGIC;
        h.version = ARENA_PROFILE_VERSION;
        h.header_size = sizeof(arena_profile_head);
        h.size = sizeof(arena_profile_region);
        h.nstacks = ARENA_PROFILE_STACKS;
        h.depth = ARENA_PROFILE_DEPTH;
        h.flags = ARENA_PROFILE_ON;
        h.rate = 4096;
        h.started_unix_ns = 1'700'000'000'000'000'000ull;
    }

    /// Fills slot `i` with `frames` (innermost first) and counters; objects are in units.
    arena_profile_stack& add(size_t i, const std::vector<uint64_t>& frames, uint64_t samples,
                             uint64_t bytes, uint64_t freed_samples = 0, uint64_t freed_bytes = 0) {
        arena_profile_stack& s = r->stacks[i];
        s.depth = static_cast<uint32_t>(frames.size());
        for (size_t k = 0; k < frames.size(); ++k)
            s.frames[k] = frames[k];
        s.hash = arena_profile_hash(s.frames, s.depth);
        s.alloc_samples = samples;
        s.alloc_objects = samples * ARENA_PROFILE_OBJECT_SCALE;
        s.alloc_bytes = bytes;
        s.free_samples = freed_samples;
        s.free_objects = freed_samples * ARENA_PROFILE_OBJECT_SCALE;
        s.free_bytes = freed_bytes;
        r->head.samples += samples;
        r->head.sampled_bytes += bytes;
        if (i != 0)
            ++r->head.stacks_used;
        return s;
    }
};

/// Writes the page of kPid and `bytes` of `region` after it (all of it by default); returns the
/// page file's path.
inline std::string write_page(const ProfileEnv& env, const Region& region,
                              size_t bytes = sizeof(arena_profile_region)) {
    const std::string path = FakePage(kPid).write(env.base);
    REQUIRE(!path.empty());
    const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(pwrite(fd, region.r.get(), bytes, ARENA_PROFILE_OFFSET) == static_cast<ssize_t>(bytes));
    close(fd);
    return path;
}

/// The three stacks most tests use: main -> a -> malloc site, main -> b, and overflow.
inline Region sample_region() {
    Region g;
    g.add(0, {}, 2, 200); // overflow: no frames
    g.add(17, {0x1003, 0x2003, 0x3003}, 10, 10000, 4, 4000);
    g.add(400, {0x1503, 0x3003}, 5, 50000, 1, 10000);
    g.r->head.overflow = 2;
    return g;
}

/// The control area of the page file at `path`, as on disk now.
inline arena_stats_control control_of(const std::string& path) {
    arena_stats_page now{};
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(pread(fd, &now, sizeof now, 0) == static_cast<ssize_t>(sizeof now));
    close(fd);
    return now.head.control;
}

} // namespace testing
