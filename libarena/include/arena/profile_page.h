/* SPDX-License-Identifier: MIT */
/*
 * The heap profile region: what a process on libarena has sampled of its allocations, by call
 * stack, readable from outside while it runs (DESIGN.md "Heap profiles"; issue 16). An ABI like
 * the stats page (stats_page.h), and under the same rules: it is a part of the page's own file,
 * so it has the page's owner, mode, liveness and directory checks, and nothing else to trust.
 *
 * Where: the region starts at byte ARENA_PROFILE_OFFSET (the end of the 32 KiB page) of the
 * process's stats page file, and is there only once profiling was turned on (ARENA_PROFILE=1 at
 * start, or a control request: stats_page.h, control.profile_*). The writer then opens its page
 * file again by name, checks that it is the file it made (device and inode), reserves the
 * region's space (fallocate: a full tmpfs never SIGBUSes the writer) and maps it. A page file of
 * exactly ARENA_PROFILE_OFFSET bytes has no profile yet. Turning profiling off keeps the region
 * (what was sampled stays readable; live blocks that were sampled are still matched when freed);
 * turning it on again adds to it. A fork child gets a region of its own, a copy of its parent's
 * at the fork (the blocks it inherited are live in it too).
 *
 * What it holds: a head, then a table of ARENA_PROFILE_STACKS stacks. A sampled allocation is
 * added to the slot of its call stack (deduplicated by the frames' hash, open addressing); when
 * the table is full it goes to slot 0, which has no frames ("other stacks") and counts the
 * overflow. Each slot's allocation and free counters only grow and have one writer at a time
 * (the writer holds its profile lock); a sample's weight (the bytes and objects it stands for,
 * sampler.h) is recorded with the block, and its free subtracts exactly what its allocation
 * added, so live = alloc - free per slot.
 *
 * Frames are return addresses, innermost first: frames[0] is in the function that called the
 * allocator (the allocator's own frames are not recorded). A reader symbolising them looks up
 * address - 1 (the call instruction), as pprof and addr2line users do.
 *
 * Reading protocol (readers use pread, never mmap, as for the page):
 *  - Check magic, version, header_size, nstacks, depth, and that size covers the table; take
 *    the head's counters as they are (each is one aligned word).
 *  - Copy the whole table twice: take every slot's free counters from the first copy and its
 *    allocation counters, hash and frames from the second (a block's allocation is counted
 *    before its free, so live is never negative).
 *  - A slot is filled once and never changes stack: its frames and hash are written before its
 *    depth, which is 0 until then. Take a slot only when its depth is in 1..depth and
 *    ARENA_PROFILE_HASH of its frames equals its hash (anything else: being written, or a bad
 *    file; skip it).
 *
 * Versioning as the page's: a change that moves or reinterprets a field bumps
 * ARENA_PROFILE_VERSION.
 */
#ifndef ARENA_PROFILE_PAGE_H
#define ARENA_PROFILE_PAGE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ARENA_PROFILE_MAGIC 0x31465250414e5241ull /* "ARNAPRF1" read little-endian */
#define ARENA_PROFILE_VERSION 1u
#define ARENA_PROFILE_OFFSET 32768u /* sizeof(struct arena_stats_page) */
#define ARENA_PROFILE_STACKS 8192u  /* slots in the stack table, slot 0 included */
#define ARENA_PROFILE_DEPTH 32u     /* frames kept per stack (the innermost ones) */
#define ARENA_PROFILE_ON 1u         /* flags: sampling now */
/* Object counts are fixed point: a sample of n bytes at rate r stands for 1 / (1 - exp(-n / r))
   objects, kept in units of 1 / ARENA_PROFILE_OBJECT_SCALE. */
#define ARENA_PROFILE_OBJECT_SCALE 256u
/* The default mean sampling interval (ARENA_PROFILE_RATE), and the largest a request may ask. */
#define ARENA_PROFILE_DEFAULT_RATE 524288ull
#define ARENA_PROFILE_MAX_RATE (1ull << 40)

/* The region's head. 256 bytes. */
struct arena_profile_head {
    uint64_t magic;       /* ARENA_PROFILE_MAGIC */
    uint32_t version;     /* ARENA_PROFILE_VERSION */
    uint32_t header_size; /* sizeof(struct arena_profile_head): the table follows */
    uint64_t size;        /* bytes of the region */
    uint32_t nstacks;     /* ARENA_PROFILE_STACKS */
    uint32_t depth;       /* ARENA_PROFILE_DEPTH */
    uint32_t flags;       /* ARENA_PROFILE_ON while sampling */
    uint32_t pad0;
    uint64_t rate;            /* mean bytes between samples, last in force (1: every one) */
    uint64_t started_unix_ns; /* when sampling was last turned on */
    uint64_t stopped_unix_ns; /* when it was last turned off (0: not since it was on) */
    uint64_t samples;         /* allocations sampled, in all */
    uint64_t sampled_bytes;   /* bytes asked for by those allocations */
    uint64_t stacks_used;     /* slots 1.. filled */
    uint64_t overflow;        /* samples that went to slot 0: the table was full */
    uint64_t dropped;         /* allocations picked for a sample but not recorded (the
                                 allocator was re-entered while capturing, or had no memory
                                 for its block records) */
    uint64_t unmatched;       /* frees of sampled blocks that found no record (not expected) */
    uint64_t reserved[18];
};

/* One call stack and what was sampled there. 320 bytes. */
struct arena_profile_stack {
    uint64_t hash;  /* ARENA_PROFILE_HASH(frames, depth) */
    uint32_t depth; /* frames in use, 1..ARENA_PROFILE_DEPTH; 0: empty (written last) */
    uint32_t pad0;
    uint64_t alloc_samples; /* sampled allocations */
    uint64_t alloc_objects; /* the objects they stand for, x ARENA_PROFILE_OBJECT_SCALE */
    uint64_t alloc_bytes;   /* the bytes they stand for */
    uint64_t free_samples;  /* of those, freed since */
    uint64_t free_objects;
    uint64_t free_bytes;
    uint64_t frames[ARENA_PROFILE_DEPTH]; /* return addresses, innermost first */
};

struct arena_profile_region {
    struct arena_profile_head head;
    struct arena_profile_stack stacks[ARENA_PROFILE_STACKS];
};

/* The hash of a stack (FNV-1a over the frames' 64-bit words, then a final mix; never 0). */
static inline uint64_t arena_profile_hash(const uint64_t* frames, uint32_t depth) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint32_t i = 0; i < depth; i++) {
        h ^= frames[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h != 0 ? h : 1;
}
#define ARENA_PROFILE_HASH(frames, depth) arena_profile_hash((frames), (depth))

#ifdef __cplusplus
} /* extern "C" */
#    define ARENA_PROFILE_STATIC_ASSERT static_assert
#else
#    define ARENA_PROFILE_STATIC_ASSERT _Static_assert
#endif

ARENA_PROFILE_STATIC_ASSERT(sizeof(struct arena_profile_head) == 256, "profile head size");
ARENA_PROFILE_STATIC_ASSERT(sizeof(struct arena_profile_stack) == 320, "profile stack size");
ARENA_PROFILE_STATIC_ASSERT(sizeof(struct arena_profile_region) ==
                                256 + 320ull * ARENA_PROFILE_STACKS,
                            "profile region size");

#endif /* ARENA_PROFILE_PAGE_H */
