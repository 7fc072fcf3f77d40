// SPDX-License-Identifier: MIT
// Heap profile regions made by hand (profile_page.h), for every test of a profile reader (the
// client library, arena-prof, cmond): a valid head and chosen stacks, each with its frames,
// hash and counters as a writer leaves them, written after a FakePage in the same file, where a
// profiling process keeps its region (byte ARENA_PROFILE_OFFSET). A test breaks a field through
// `r` to make a bad region.
#pragma once

#include "fake_page.h"

#include "arena/profile_page.h"

#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace testing {

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

    /// Writes `page` (FakePage::write) with the region's first `bytes` after it (all of it by
    /// default; fewer: a file cut short). Returns the path, or "".
    std::string write(const FakePage& page, const std::string& base,
                      size_t bytes = sizeof(arena_profile_region)) const {
        return page.write(base, std::string_view(reinterpret_cast<const char*>(r.get()), bytes));
    }
};

/// The three stacks most tests use: main -> a -> malloc site, main -> b, and overflow.
inline Region sample_region() {
    Region g;
    g.add(0, {}, 2, 200); // overflow: no frames
    g.add(17, {0x1003, 0x2003, 0x3003}, 10, 10000, 4, 4000);
    g.add(400, {0x1503, 0x3003}, 5, 50000, 1, 10000);
    g.r->head.overflow = 2;
    return g;
}

} // namespace testing
