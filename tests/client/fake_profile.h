// SPDX-License-Identifier: MIT
// The profile reader's and arena-prof's tests: a FakePage of kPid, alive in a fake procfs, with a
// profile region (tests/lib/profile_fixture.h) written after it. Header-only: tests/client's
// programs include it.
#pragma once

#include "common.h"
#include "fake_page.h"
#include "profile_fixture.h"

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

/// Writes the page of kPid and `bytes` of `region` after it (all of it by default); returns the
/// page file's path.
inline std::string write_page(const ProfileEnv& env, const Region& region,
                              size_t bytes = sizeof(arena_profile_region)) {
    const std::string path = region.write(FakePage(kPid), env.base, bytes);
    REQUIRE(!path.empty());
    return path;
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
