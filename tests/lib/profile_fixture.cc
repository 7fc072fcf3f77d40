// SPDX-License-Identifier: MIT
#include "profile_fixture.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace testing {
namespace {

void set_counts(arena_profile_stack& s, const ProfileCounts& alloc, const ProfileCounts& freed) {
    s.alloc_samples = alloc.samples;
    s.alloc_objects =
        static_cast<uint64_t>(std::llround(alloc.objects * ARENA_PROFILE_OBJECT_SCALE));
    s.alloc_bytes = alloc.bytes;
    s.free_samples = freed.samples;
    s.free_objects =
        static_cast<uint64_t>(std::llround(freed.objects * ARENA_PROFILE_OBJECT_SCALE));
    s.free_bytes = freed.bytes;
}

} // namespace

FakeProfile::FakeProfile() : region_(new arena_profile_region{}) {
    arena_profile_head& h = region_->head;
    h.magic = ARENA_PROFILE_MAGIC;
    h.version = ARENA_PROFILE_VERSION;
    h.header_size = sizeof(arena_profile_head);
    h.size = sizeof(arena_profile_region);
    h.nstacks = ARENA_PROFILE_STACKS;
    h.depth = ARENA_PROFILE_DEPTH;
    h.flags = ARENA_PROFILE_ON;
    h.rate = ARENA_PROFILE_DEFAULT_RATE;
    h.started_unix_ns = 1700000000000000000ull;
}

FakeProfile::FakeProfile(const FakeProfile& other)
    : region_(new arena_profile_region(*other.region_)) {}

FakeProfile& FakeProfile::operator=(const FakeProfile& other) {
    if (this != &other)
        *region_ = *other.region_;
    return *this;
}

FakeProfile FakeProfile::example() {
    FakeProfile profile;
    profile.head().rate = 4096;
    profile.head().sampled_bytes = 5000;
    profile.add_stack({0x401000, 0x402000, 0x403000}, {4, 4, 16384});
    profile.add_stack({0x405000}, {2, 2, 8192}, {1, 1, 4096});
    profile.set_overflow({1, 1, 4096});
    return profile;
}

arena_profile_stack& FakeProfile::add_stack(const std::vector<uint64_t>& frames,
                                            ProfileCounts alloc, ProfileCounts freed) {
    if (region_->head.stacks_used + 1 >= ARENA_PROFILE_STACKS)
        throw std::length_error("FakeProfile: the stack table is full");
    return add_stack_at(region_->head.stacks_used + 1, frames, alloc, freed);
}

arena_profile_stack& FakeProfile::add_stack_at(size_t slot, const std::vector<uint64_t>& frames,
                                               ProfileCounts alloc, ProfileCounts freed) {
    if (slot == 0 || slot >= ARENA_PROFILE_STACKS)
        throw std::out_of_range("FakeProfile: no such slot");
    arena_profile_stack& s = region_->stacks[slot];
    const auto depth = static_cast<uint32_t>(std::min<size_t>(frames.size(), ARENA_PROFILE_DEPTH));
    std::copy_n(frames.begin(), depth, s.frames);
    s.hash = ARENA_PROFILE_HASH(s.frames, depth);
    s.depth = depth;
    set_counts(s, alloc, freed);
    region_->head.samples += alloc.samples;
    region_->head.stacks_used += 1;
    return s;
}

arena_profile_stack& FakeProfile::set_overflow(ProfileCounts alloc, ProfileCounts freed) {
    arena_profile_stack& s = region_->stacks[0];
    set_counts(s, alloc, freed);
    region_->head.samples += alloc.samples;
    region_->head.overflow += alloc.samples;
    return s;
}

std::string_view FakeProfile::bytes() const {
    return {reinterpret_cast<const char*>(region_.get()), sizeof(arena_profile_region)};
}

std::string FakeProfile::write(const FakePage& page, const std::string& base, size_t bytes) const {
    return page.write(base, this->bytes().substr(0, bytes));
}

} // namespace testing
