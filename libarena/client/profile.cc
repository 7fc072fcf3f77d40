// SPDX-License-Identifier: MIT
// Reading a heap profile region (profile.h, profile_page.h): the head with one pread, then the
// stack table copied twice with pread into bounded buffers (never mmap: a file cut under the
// reader cannot raise SIGBUS), each slot taken only when it passes the protocol's checks. The
// region is read from the page file read_pid judged (reader.h's open_page), and the profiling
// request is one of reader.h's control requests.
#include "profile.h"

#include "pread.h"

#include "arena/profile_page.h"

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

namespace arena::client::profile {
namespace {

constexpr size_t kTableBytes = sizeof(arena_profile_stack) * ARENA_PROFILE_STACKS;

ReadResult failure(Error e, std::string detail) {
    return {e, std::move(detail)};
}

/// What is wrong with a head that does not describe this version's region ("" when it does).
std::string head_problem(const arena_profile_head& h) {
    if (h.magic != ARENA_PROFILE_MAGIC)
        return "its magic is not a profile region's";
    if (h.version != ARENA_PROFILE_VERSION)
        return "it is version " + std::to_string(h.version) + ", this reader reads version " +
               std::to_string(ARENA_PROFILE_VERSION);
    if (h.header_size != sizeof(arena_profile_head) || h.nstacks != ARENA_PROFILE_STACKS ||
        h.depth != ARENA_PROFILE_DEPTH)
        return "its head's sizes do not match this version's layout";
    if (h.size < sizeof(arena_profile_region))
        return "its size does not cover the stack table";
    return "";
}

double objects(uint64_t scaled) {
    return static_cast<double>(scaled) / ARENA_PROFILE_OBJECT_SCALE;
}

/// A slot as the protocol takes it: frees from `first`, the rest from `second`. False when the
/// slot is empty, being written, or not consistent.
bool take_slot(size_t index, const arena_profile_stack& first, const arena_profile_stack& second,
               Stack* out) {
    if (second.alloc_samples == 0)
        return false;
    if (index != 0) { // slot 0 has no frames: "other stacks"
        if (second.depth < 1 || second.depth > ARENA_PROFILE_DEPTH ||
            arena_profile_hash(second.frames, second.depth) != second.hash)
            return false;
        out->frames.assign(second.frames, second.frames + second.depth);
    } else {
        out->frames.clear();
    }
    out->alloc_samples = second.alloc_samples;
    out->alloc_objects = objects(second.alloc_objects);
    out->alloc_bytes = second.alloc_bytes;
    // Never more freed than allocated (a bad file could say so): live is never negative.
    out->free_samples = std::min(first.free_samples, second.alloc_samples);
    out->free_objects = objects(std::min(first.free_objects, second.alloc_objects));
    out->free_bytes = std::min(first.free_bytes, second.alloc_bytes);
    return true;
}

void take_head(const arena_profile_head& h, Profile* out) {
    out->on = (h.flags & ARENA_PROFILE_ON) != 0;
    out->rate = h.rate;
    out->started_unix_ns = h.started_unix_ns;
    out->stopped_unix_ns = h.stopped_unix_ns;
    out->samples = h.samples;
    out->sampled_bytes = h.sampled_bytes;
    out->stacks_used = h.stacks_used;
    out->overflow = h.overflow;
    out->dropped = h.dropped;
    out->unmatched = h.unmatched;
}

} // namespace

ReadResult read_fd(int fd, Profile* out) {
    arena_profile_head head{};
    const ssize_t n = pread_full(fd, &head, sizeof head, ARENA_PROFILE_OFFSET);
    if (n < 0)
        return failure(Error::Io,
                       std::string("Cannot read the profile region: ") + strerror(errno) + ".");
    // Shorter: no region yet. A zero magic: its space is reserved and the head not written yet.
    if (static_cast<size_t>(n) < sizeof head || head.magic == 0)
        return failure(Error::NoProfile, "The page has no profile region: heap profiling was "
                                         "never turned on.");
    if (const std::string problem = head_problem(head); !problem.empty())
        return failure(Error::BadFile, "The profile region is not readable: " + problem + ".");

    // Two copies, read one after the other (profile_page.h): a slot's free counters from the
    // first, and its allocation counters from the second, so that live is never negative.
    std::vector<arena_profile_stack> copies[2];
    for (auto& copy : copies) {
        copy.resize(ARENA_PROFILE_STACKS);
        const ssize_t r = pread_full(fd, copy.data(), kTableBytes,
                                     ARENA_PROFILE_OFFSET + sizeof(arena_profile_head));
        if (r < 0)
            return failure(Error::Io,
                           std::string("Cannot read the profile region: ") + strerror(errno) + ".");
        if (static_cast<size_t>(r) < kTableBytes)
            return failure(Error::BadFile,
                           "The profile region is shorter than its head says (the file was cut).");
    }
    Profile p;
    take_head(head, &p);
    Stack s;
    for (size_t i = 0; i < ARENA_PROFILE_STACKS; ++i)
        if (take_slot(i, copies[0][i], copies[1][i], &s))
            p.stacks.push_back(s);
    *out = std::move(p);
    return {};
}

ReadResult read_pid(const std::string& base, int pid, const ScanOptions& options, Profile* out) {
    PageFile page;
    if (const ControlResult r = open_page(base, pid, options, false, &page); !r.ok())
        return failure(r.error == ControlError::Io ? Error::Io : Error::NoPage, r.detail);
    ReadResult r = read_fd(page.fd(), out);
    out->pid = pid;
    out->comm = page.process.comm;
    if (r.error == Error::NoProfile)
        r.detail = "Process " + std::to_string(pid) +
                   " has no heap profile: profiling was never turned on. Start it with "
                   "ARENA_PROFILE=1 in its environment, or turn it on now with "
                   "`arena-prof --on " +
                   std::to_string(pid) + "`.";
    return r;
}

ControlResult request_profile(const std::string& base, int pid, uint64_t rate,
                              const ScanOptions& options) {
    if (rate > ARENA_PROFILE_MAX_RATE) {
        ControlResult r;
        r.error = ControlError::Invalid;
        r.detail = "The profile rate must be 0 (off) or 1 to " +
                   std::to_string(ARENA_PROFILE_MAX_RATE) + " bytes, not " + std::to_string(rate) +
                   ".";
        return r;
    }
    ControlRequest req;
    req.value_field = offsetof(arena_stats_control, profile_rate);
    req.value = rate;
    req.requests_field = offsetof(arena_stats_control, profile_requests);
    req.served_field = offsetof(arena_stats_control, profile_served);
    return request_control(base, pid, options, req);
}

} // namespace arena::client::profile
