// SPDX-License-Identifier: MIT
// The stats page's file: the directories it lives in, making it so that nobody sees or blocks it
// half made, removing it at exit, and clearing away a few dead pages of the same user each time
// a page is made (stats_page.h "Where pages live"; SECURITY.md).
//
// The base and the per-user directory are opened with O_NOFOLLOW and checked with fstat before
// anything is made in them; every later create, link and unlink is relative to those
// descriptors. The process keeps no descriptor: the page is mapped and its file closed, and
// the exit unlink opens the directories again and checks the inodes it recorded. Anything
// wrong turns the file off (the counters stay in private memory) and is said on stderr with
// ARENA_VERBOSE=1; the program runs on either way.
//
// Not thread-safe: called from initialisation, a fork child and the exit destructor, each of
// which runs on one thread.
#pragma once

#include "arena/stats_page.h"

#include <cstddef>
#include <cstdint>

namespace arena::stats_file {

/// Who the process is, for the page's head (stats_page.h). Nothing here reads /proc: the first
/// look at /proc/self in a new process costs more than the rest of the page together.
struct Identity {
    uint32_t uid;        // effective uid: the user directory's name and owner
    uint64_t exec_entry; // AT_ENTRY and AT_RANDOM: what tells this exec from any other
    uint64_t exec_random;
};

/// What a new page starts with: its head, written by `fill_head` (ARENA_STATS_READY included),
/// and optionally the first `shard_bytes` of its shards (a fork child starts from its parent's
/// counters).
struct Content {
    void (*fill_head)(arena_stats_head* head, const Identity& who, const void* context);
    const void* context;
    const void* shards;
    size_t shard_bytes;
};

/// Makes this process's page file, writes `content` while it has no name, links it as
/// <base>/<uid>/<pid>, and maps it (by that name, so that /proc/<pid>/maps shows it). Returns
/// the shared mapping (sizeof(arena_stats_page) bytes), or nullptr when the page cannot be a
/// file (then nothing is left behind).
arena_stats_page* create(const char* base, const Content& content);

/// The inode of /proc/self/ns/pid, 0 if unknown. For later than start-up (stats_page.h pid_ns).
uint64_t pid_namespace();

/// Looks at a few entries of the page's directory for pages of dead processes of the PID
/// namespace `pid_ns` and removes them (one call in four does; see stats_file.cc). For a slow path
/// of a process that has a page, once, some time after start-up: short-lived processes skip it.
void clean_some_later(uint64_t pid_ns);

/// The page's file mapped again, its first `total` bytes (more than the page: its space is
/// reserved first), for what follows the page in it (the heap profile, profile_page.h). Opened
/// by name and accepted only if it is still the file this process made (device and inode);
/// nullptr when there is no such file, or on any failure.
void* map_extended(size_t total);

/// The page's path, for messages; "" when there is none.
const char* path();

/// At normal exit: removes the page this process made, if it is still the one in its place.
void remove();

/// In a fork child, before it makes its own page: the recorded page is the parent's.
void forget();

} // namespace arena::stats_file
