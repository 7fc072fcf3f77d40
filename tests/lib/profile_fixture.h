// SPDX-License-Identifier: MIT
// Heap profile regions made by hand (profile_page.h), for the tests of the profile readers
// (client library, arena-prof, cmond): a valid head and chosen stacks, each with its frames,
// hash and counters as a writer leaves them, written after a FakePage in the same file, where a
// profiling process keeps its region (byte ARENA_PROFILE_OFFSET). A test breaks a field through
// head() or the slot add_stack() returns to make a bad region.
#pragma once

#include "fake_page.h"

#include "arena/profile_page.h"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace testing {

/// A stack's allocation or free counters: samples, and the objects and bytes they stand for.
struct ProfileCounts {
    uint64_t samples = 0;
    double objects = 0; // written in units of 1 / ARENA_PROFILE_OBJECT_SCALE
    uint64_t bytes = 0;
};

class FakeProfile {
public:
    /// A valid region: sampling (ARENA_PROFILE_ON), rate ARENA_PROFILE_DEFAULT_RATE, started at
    /// 1700000000000000000 ns, no stacks.
    FakeProfile();
    FakeProfile(const FakeProfile& other);
    FakeProfile& operator=(const FakeProfile& other);

    /// One with something in every part: rate 4096, sampled_bytes 5000; slot 1 three frames
    /// (0x401000, 0x402000, 0x403000) with 4 samples (4 objects, 16384 bytes), none freed;
    /// slot 2 one frame (0x405000) with 2 (2, 8192), 1 of them freed (1, 4096); slot 0 (the
    /// overflow) 1 (1, 4096). Made-up addresses: nothing resolves them.
    static FakeProfile example();

    arena_profile_region& region() { return *region_; }
    arena_profile_head& head() { return region_->head; }

    /// Fills slot stacks_used + 1 with `frames` (return addresses, innermost first; the first
    /// ARENA_PROFILE_DEPTH are kept), its hash and the counters; adds alloc.samples to the
    /// head's samples and counts the slot in stacks_used. Returns the slot; throws
    /// std::length_error when the table is full.
    arena_profile_stack& add_stack(const std::vector<uint64_t>& frames, ProfileCounts alloc,
                                   ProfileCounts freed = {});
    /// The same in slot `slot` (1 .. ARENA_PROFILE_STACKS - 1; std::out_of_range otherwise),
    /// where a writer's hash put it.
    arena_profile_stack& add_stack_at(size_t slot, const std::vector<uint64_t>& frames,
                                      ProfileCounts alloc, ProfileCounts freed = {});
    /// Slot 0's counters: samples whose stack found no free slot (the head's overflow and
    /// samples grow by alloc.samples).
    arena_profile_stack& set_overflow(ProfileCounts alloc, ProfileCounts freed = {});

    /// The region as a writer leaves it in the file.
    std::string_view bytes() const;

    /// Writes `page` (FakePage::write) with the region's first `bytes` after it (all of it by
    /// default; fewer: a file cut short). Returns the path, or "".
    std::string write(const FakePage& page, const std::string& base,
                      size_t bytes = sizeof(arena_profile_region)) const;

private:
    std::unique_ptr<arena_profile_region> region_;
};

} // namespace testing
