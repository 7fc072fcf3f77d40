// SPDX-License-Identifier: MIT
// The heap profile reader (libarena/client/profile.h) on a hostile profile region: the input is
// written after a stats page, where the region is (profile_page.h), and read_fd and every format
// (table, JSON, pprof, folded) consume what it accepted. Nothing in the file may make them crash,
// throw or read outside a buffer, and every stack taken must obey the reading protocol.
//
// Input: byte 0 chooses how the head is taken. Bit 0 clear: the bytes after it are the region
// as they are (its head first: most inputs are refused as too short or of another layout). Bit 0
// set: the head is made valid (magic, version, sizes) with the input's counters, and the bytes
// after the head fill the stack table from slot 0, the rest of it zero (a sparse file), so that
// the fuzzer reaches the slots' checks.
#include "profile.h"
#include "temp_dir.h"

#include "arena/profile_page.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <unistd.h>

namespace {

std::string g_file; // <dir>/page

[[noreturn]] void fail(const char* what) {
    fprintf(stderr, "fuzz_profile_reader: %s\n", what);
    abort();
}

void pwrite_all(int fd, const void* data, size_t size, off_t offset) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (size > 0) {
        const ssize_t w = pwrite(fd, p, size, offset);
        if (w <= 0)
            fail("cannot write the page file");
        p += w;
        offset += w;
        size -= static_cast<size_t>(w);
    }
}

/// Writes the page file: zeros for the stats page, then the region the input makes.
void write_region(const uint8_t* data, size_t size) {
    const int fd = open(g_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        fail("cannot open the page file");
    const bool valid_head = size > 0 && (data[0] & 1) != 0;
    if (size > 0) {
        ++data;
        --size;
    }
    if (!valid_head) {
        if (ftruncate(fd, ARENA_PROFILE_OFFSET) != 0)
            fail("ftruncate");
        pwrite_all(fd, data, size, ARENA_PROFILE_OFFSET);
    } else {
        arena_profile_head head{};
        memcpy(&head, data, std::min(size, sizeof head));
        head.magic = ARENA_PROFILE_MAGIC;
        head.version = ARENA_PROFILE_VERSION;
        head.header_size = sizeof head;
        head.size = sizeof(arena_profile_region);
        head.nstacks = ARENA_PROFILE_STACKS;
        head.depth = ARENA_PROFILE_DEPTH;
        if (ftruncate(fd, ARENA_PROFILE_OFFSET + sizeof(arena_profile_region)) != 0)
            fail("ftruncate");
        pwrite_all(fd, &head, sizeof head, ARENA_PROFILE_OFFSET);
        if (size > sizeof head)
            pwrite_all(fd, data + sizeof head,
                       std::min(size - sizeof head, sizeof(arena_profile_region) - sizeof head),
                       ARENA_PROFILE_OFFSET + sizeof head);
    }
    close(fd);
}

/// Every stack taken obeys the protocol: frames 1..depth (none in slot 0's), no more freed
/// than allocated.
void check_accepted(const arena::client::profile::Profile& p) {
    if (p.stacks.size() > ARENA_PROFILE_STACKS)
        fail("more stacks than slots");
    for (const auto& s : p.stacks) {
        if (s.frames.size() > ARENA_PROFILE_DEPTH)
            fail("a stack deeper than ARENA_PROFILE_DEPTH");
        if (!s.frames.empty() &&
            arena_profile_hash(s.frames.data(), static_cast<uint32_t>(s.frames.size())) == 0)
            fail("a hash of 0");
        if (s.alloc_samples == 0 || s.free_samples > s.alloc_samples ||
            s.free_bytes > s.alloc_bytes || s.free_objects > s.alloc_objects)
            fail("a stack with no samples, or more freed than allocated");
    }
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    const std::string dir = fuzz::temp_dir("fuzz-profile");
    if (dir.empty())
        fail("mkdtemp");
    g_file = dir + "/page";
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    namespace pr = arena::client::profile;
    write_region(data, size);
    const int fd = open(g_file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        fail("cannot open the page file");
    pr::Profile p;
    const pr::ReadResult r = pr::read_fd(fd, &p);
    close(fd);
    if (!r.ok()) {
        if (r.detail.empty())
            fail("refused without a reason");
        return 0;
    }
    check_accepted(p);
    p.comm = "fuzz";
    if (pr::to_table(p, nullptr, pr::Order::LiveBytes, 20).empty() ||
        pr::to_json(p, nullptr).empty() || pr::to_pprof(p, nullptr).empty())
        fail("empty output");
    for (const auto order : {pr::Order::LiveBytes, pr::Order::AllocBytes, pr::Order::AllocObjects})
        pr::to_folded(p, nullptr, order);
    return 0;
}
