/* SPDX-License-Identifier: MIT */
/*
 * The libarena stats page: a versioned ABI between the allocator (the writer, one per process)
 * and its readers (arena-exporter, arena-stat, cmond).
 *
 * Every process running on libarena keeps one file, <dir>/<pid> (dir: ARENA_STATS_DIR, default
 * /dev/shm/arena), mapped MAP_SHARED, of `size` bytes laid out as struct arena_stats_page. The
 * file is created at start (and anew in a fork child), removed at normal exit, mode 0644 in a
 * sticky mode-1777 directory: anyone may read it, only its owner (and root) may write it.
 *
 * Liveness: the writer holds a shared flock() on the file for its whole life (the descriptor is
 * close-on-exec, and a fork child drops the parent's). A page whose lock can be taken
 * exclusively has no live writer: it is stale (the process died, or exec'd into a program not
 * on libarena). That works across PID namespaces (containers sharing the directory), where PIDs
 * and /proc do not. `start_time` (field 22 of /proc/<pid>/stat) tells a reused PID apart.
 *
 * Reading protocol (a consistent snapshot without stopping the writer):
 *  - Check magic, version, header_size and size against the file, and that `flags` has
 *    ARENA_STATS_READY (set last, after the header is complete).
 *  - global: seqlock. Read `seq` (acquire), copy the struct, read `seq` again; retry while it is
 *    odd or changed. The writer refreshes it on its slow paths, at most every 10 ms (resident
 *    bytes every second, or sooner when committed bytes moved by more than an eighth): a process
 *    that stopped allocating shows its values as of its last slow paths.
 *  - shards: each counter only grows and has one writer. Sum every shard's frees first, then
 *    (after an acquire fence) every shard's allocations: a block's allocation is counted before
 *    its free is, so live = allocations - frees is never negative and never counts a block whose
 *    allocation is not yet visible.
 *  - control: written by a reader with the owner's or root's permission (the file mode), polled
 *    by the allocator on its slow path (refills, large blocks).
 *
 * Versioning: a change that moves or reinterprets a field bumps ARENA_STATS_VERSION; readers
 * skip other versions. Fields are only ever appended inside the reserved space.
 */
#ifndef ARENA_STATS_PAGE_H
#define ARENA_STATS_PAGE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ARENA_STATS_MAGIC 0x3150535441524e41ull /* "ANRATSP1" read little-endian */
#define ARENA_STATS_VERSION 1u
#define ARENA_STATS_DEFAULT_DIR "/dev/shm/arena"

#define ARENA_STATS_COMM_LEN 16
#define ARENA_STATS_CMDLINE_LEN 256
#define ARENA_STATS_MAX_CLASSES 48 /* size classes the layout has room for (libarena uses 40) */
#define ARENA_STATS_EVENT_SLOTS 32 /* event counters the layout has room for */
#define ARENA_STATS_SHARDS 256     /* shard 0 is shared (atomic adds); 1.. belong to heaps */

#define ARENA_STATS_READY 1u /* flags: the page is complete */

/* Event counters of a shard: X(name, help). The index of each is ARENA_EV_<name>. Help texts
   are written for Prometheus ("Calls of malloc."). */
#define ARENA_STATS_EVENTS(X)                                                                     \
    X(malloc_calls, "Calls of malloc.")                                                           \
    X(calloc_calls, "Calls of calloc.")                                                           \
    X(realloc_calls, "Calls of realloc and reallocarray.")                                        \
    X(free_calls, "Calls of free and cfree.")                                                     \
    X(aligned_calls, "Calls of memalign, posix_memalign, aligned_alloc, valloc and pvalloc.")     \
    X(new_calls, "Calls of operator new, all forms.")                                             \
    X(delete_calls, "Calls of operator delete, all forms.")                                       \
    X(bytes_requested, "Bytes asked for by allocation calls.")                                    \
    X(large_allocs, "Large blocks (page runs) allocated.")                                        \
    X(large_frees, "Large blocks freed.")                                                         \
    X(large_alloc_bytes, "Bytes of large blocks allocated, whole pages.")                         \
    X(large_free_bytes, "Bytes of large blocks freed, whole pages.")                              \
    X(failed_allocs, "Allocation calls that failed with ENOMEM.")                                 \
    X(foreign_frees, "Frees of pointers the allocator does not own (ignored).")

enum arena_stats_event {
#define ARENA_STATS_EVENT_ENUM(name, help) ARENA_EV_##name,
    ARENA_STATS_EVENTS(ARENA_STATS_EVENT_ENUM)
#undef ARENA_STATS_EVENT_ENUM
        ARENA_EV_COUNT
};

/* Per-heap counters: one writer each (shard 0: several writers, atomic adds). 1 KiB. */
struct arena_stats_shard {
    uint64_t events[ARENA_STATS_EVENT_SLOTS];      /* indexed by enum arena_stats_event */
    uint64_t class_alloc[ARENA_STATS_MAX_CLASSES]; /* slots handed out, by size class */
    uint64_t class_free[ARENA_STATS_MAX_CLASSES];  /* slots freed, by size class */
};

/* Process-wide gauges, written by the allocator's slow path under its lock. 256 bytes. */
struct arena_stats_global {
    uint64_t seq;               /* seqlock: odd while being written */
    uint64_t updated_unix_ns;   /* when these were last written */
    uint64_t reserved_bytes;    /* address space of all regions */
    uint64_t committed_bytes;   /* pages in use plus free pages not yet returned to the kernel */
    uint64_t resident_bytes;    /* of those, resident (mincore), sampled as said above */
    uint64_t resident_unix_ns;  /* when resident_bytes was sampled */
    uint64_t purged_bytes;      /* returned to the kernel (madvise) in total */
    uint64_t purges;            /* madvise passes that returned memory */
    uint64_t trims;             /* malloc_trim calls and control-area trims served */
    uint64_t regions;           /* reservations made */
    uint64_t heaps_active;      /* thread heaps owned by a live thread */
    uint64_t heaps_abandoned;   /* heaps of exited threads, waiting for adoption */
    uint64_t peak_live_bytes;   /* highest live bytes seen on an allocation slow path; also
                                   stored outside the seqlock as it grows (it only grows) */
    uint64_t double_frees;      /* double frees caught */
    uint64_t invalid_frees;     /* frees of pointers inside the arena but not a live block */
    int64_t purge_delay_ms;     /* the purge delay in force */
    uint64_t reserved[16];
};

/* Requests to the allocator. Written by readers allowed to write the file; see the protocol. */
struct arena_stats_control {
    uint64_t trim_requests;   /* a reader increments this to ask for a trim (malloc_trim(0)) */
    uint64_t trims_served;    /* the allocator sets it to the trim_requests value it served */
    int64_t purge_delay_ms;   /* ARENA_STATS_NO_REQUEST, or a new purge delay (-1..3600000) */
    uint64_t reserved[5];
};
#define ARENA_STATS_NO_REQUEST INT64_MIN

struct arena_stats_page {
    /* Header (offsets fixed for every version). */
    uint64_t magic;                         /* ARENA_STATS_MAGIC */
    uint32_t version;                       /* ARENA_STATS_VERSION */
    uint32_t header_size;                   /* offsetof(struct arena_stats_page, shards) */
    uint64_t size;                          /* bytes of the whole file */
    int32_t pid;                            /* writer's PID in its own namespace */
    uint32_t flags;                         /* ARENA_STATS_READY once complete */
    uint64_t start_time;                    /* /proc/<pid>/stat field 22 (clock ticks) */
    uint64_t created_unix_ns;               /* when the page was made */
    char comm[ARENA_STATS_COMM_LEN];        /* /proc/<pid>/comm, NUL-terminated */
    char cmdline[ARENA_STATS_CMDLINE_LEN];  /* arguments joined by spaces, truncated */
    uint32_t nclasses;                      /* size classes in use (<= MAX_CLASSES) */
    uint32_t nshards;                       /* ARENA_STATS_SHARDS */
    uint32_t nevents;                       /* ARENA_EV_COUNT of the writer */
    uint32_t page_size;                     /* the allocator's page (large blocks are runs) */
    uint32_t class_size[ARENA_STATS_MAX_CLASSES]; /* slot size of each class, bytes */
    uint32_t shards_used;                   /* shards [0, shards_used) may be nonzero (readers
                                               need not read the others); only grows */
    uint8_t pad0[44];
    struct arena_stats_control control;     /* 64-byte aligned */
    struct arena_stats_global global;       /* 64-byte aligned */
    uint8_t pad1[128];
    struct arena_stats_shard shards[ARENA_STATS_SHARDS];
};

#ifdef __cplusplus
} /* extern "C" */

#    include <cstddef>
#    define ARENA_STATS_OFFSET(field) offsetof(arena_stats_page, field)
#    define ARENA_STATS_STATIC_ASSERT static_assert
#else
#    include <stddef.h>
#    define ARENA_STATS_OFFSET(field) offsetof(struct arena_stats_page, field)
#    define ARENA_STATS_STATIC_ASSERT _Static_assert
#endif

/* The layout is the ABI: these never change within a version. */
ARENA_STATS_STATIC_ASSERT(sizeof(struct arena_stats_shard) == 1024, "shard size");
ARENA_STATS_STATIC_ASSERT(sizeof(struct arena_stats_global) == 256, "global size");
ARENA_STATS_STATIC_ASSERT(sizeof(struct arena_stats_control) == 64, "control size");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(magic) == 0, "magic");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(version) == 8, "version");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(header_size) == 12, "header_size");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(size) == 16, "size");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(pid) == 24, "pid");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(flags) == 28, "flags");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(start_time) == 32, "start_time");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(created_unix_ns) == 40, "created");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(comm) == 48, "comm");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(cmdline) == 64, "cmdline");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(nclasses) == 320, "nclasses");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(class_size) == 336, "class_size");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(shards_used) == 528, "shards_used");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(control) == 576, "control");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(global) == 640, "global");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(shards) == 1024, "shards");
ARENA_STATS_STATIC_ASSERT(sizeof(struct arena_stats_page) == 1024 + 1024 * ARENA_STATS_SHARDS, "page size");
ARENA_STATS_STATIC_ASSERT(ARENA_EV_COUNT <= ARENA_STATS_EVENT_SLOTS, "event slots");

#endif /* ARENA_STATS_PAGE_H */
