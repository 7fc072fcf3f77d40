/* SPDX-License-Identifier: MIT */
/*
 * The libarena stats page: a versioned ABI between the allocator (the writer, one per process)
 * and its readers (arena-exporter, arena-stat, cmond), and the one declaration of every field
 * it holds: the tables below name each counter and gauge with its Prometheus family, and every
 * program that prints or exports a field iterates them.
 *
 * Where pages live (SECURITY.md): <base>/<uid>/<pid>. The base (ARENA_STATS_DIR, default
 * /dev/shm/arena, made at boot by libarena's tmpfiles.d line, mode 1777) must be owned by root
 * or by the writer and, when others may write it, sticky. <uid> is the writer's effective uid;
 * that directory must be owned by it and writable by nobody else (mode 0700, or 0750 with the
 * group of ARENA_STATS_GROUP). The writer opens both with O_NOFOLLOW, checks them with fstat and
 * does everything later relative to those descriptors. The page is made unnamed (O_TMPFILE),
 * its space reserved (fallocate: a full tmpfs can never SIGBUS the writer), mapped, filled and
 * then linked as <pid>, mode 0600 (0640 with ARENA_STATS_GROUP). The process keeps no
 * descriptor for it. It is removed at normal exit (after checking its inode); pages of dead
 * processes are removed by readers and, a few at a time, by each new process of the same user.
 * A secure-exec process (setuid, setgid, file capabilities) has no page.
 *
 * What a page reveals to whoever may read it: the process's pid, uid, comm, command line (its
 * first 255 bytes), start time, two addresses of its auxiliary vector (its program's entry point
 * and where its AT_RANDOM bytes are, not the bytes), and its allocation profile.
 *
 * Liveness: a page is its process's while /proc/<pid> exists with a start time (field 22 of
 * /proc/<pid>/stat) no later than the page's start_time (when the page was made: a process that
 * started later took the pid of a dead one), one of its uids owns the page (or root does), and
 * it has not
 * exec'd since (exec_entry/exec_random against /proc/<pid>/auxv: a process that exec'd a program
 * not on libarena, or one with ARENA_STATS=0, left a page that nobody writes).
 *
 * Reading protocol (a consistent snapshot without stopping the writer; readers use pread, never
 * mmap, so a page truncated under them cannot hurt them; the file may be longer than the page:
 * a heap profile follows it, profile_page.h):
 *  - Check magic, version, header_size and size, that `flags` has ARENA_STATS_READY, and that
 *    `pid` is the file's name.
 *  - global: seqlock. Copy the section, read `seq` again; retry while it is odd or changed.
 *    The writer refreshes it on its slow paths, at most every 10 ms (resident bytes every
 *    second, or sooner when committed bytes moved by more than an eighth).
 *  - shards: each counter only grows and has one writer. Sum every shard's frees first, then
 *    (from a second copy) every shard's allocations: a block's allocation is counted before its
 *    free is, so live = allocations - frees is never negative.
 *  - control: requests to the allocator, written (with pwrite) by a reader allowed to write the
 *    file (its owner or root) and polled by the allocator on its slow path.
 *
 * Versioning: a change that moves or reinterprets a field bumps ARENA_STATS_VERSION; readers
 * skip other versions (and say so). Fields are only appended inside the reserved space.
 */
#ifndef ARENA_STATS_PAGE_H
#define ARENA_STATS_PAGE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ARENA_STATS_MAGIC 0x3250535441524e41ull /* "ANRATSP2" read little-endian */
#define ARENA_STATS_VERSION 2u
#define ARENA_STATS_DEFAULT_DIR "/dev/shm/arena"

#define ARENA_STATS_COMM_LEN 16
#define ARENA_STATS_CMDLINE_LEN 256
#define ARENA_STATS_MAX_CLASSES 48 /* size classes the layout has room for (libarena uses 48) */
#define ARENA_STATS_EVENT_SLOTS 32 /* event counters the layout has room for */
#define ARENA_STATS_GAUGE_SLOTS 31 /* gauges the layout has room for */
/* Shard 0 is shared (atomic adds); 1.. belong to thread heaps. Heaps beyond count privately and
   add to shard 0 on their slow paths. 31 keeps the whole page at 32 KiB, all of it reserved. */
#define ARENA_STATS_SHARDS 31

#define ARENA_STATS_READY 1u /* flags: the page is complete */

/* The purge delays a control request may ask for, in ms (-1: only on trim); also the range of
   ARENA_PURGE_DELAY_MS. */
#define ARENA_STATS_PURGE_DELAY_MIN_MS (-1)
#define ARENA_STATS_PURGE_DELAY_MAX_MS 3600000

/* ---- The schema -------------------------------------------------------------------------- */

/* Metric types of the families below. */
#define ARENA_METRIC_NONE 0    /* not exported as a metric (JSON and malloc_stats only) */
#define ARENA_METRIC_COUNTER 1 /* only grows */
#define ARENA_METRIC_GAUGE 2   /* goes up and down */

/* Prometheus families that page fields belong to:
   X(id, type, name, label (the label that tells a family's fields apart, or ""), help).
   Names end in their unit (_bytes, _total). Derived families (live bytes, the size histogram)
   are computed by the readers and declared in libarena/client/schema.cc. */
#define ARENA_STATS_FAMILIES(X)                                                                    \
    X(none, ARENA_METRIC_NONE, "", "", "")                                                         \
    X(calls, ARENA_METRIC_COUNTER, "arena_calls_total", "api",                                     \
      "Calls of the allocator's entry points, by API (aligned: memalign, posix_memalign, "         \
      "aligned_alloc, valloc and pvalloc; new and delete: every C++ operator form).")              \
    X(requested, ARENA_METRIC_COUNTER, "arena_requested_bytes_total", "",                          \
      "Bytes asked for by allocation calls.")                                                      \
    X(large_allocs, ARENA_METRIC_COUNTER, "arena_large_allocations_total", "",                     \
      "Large blocks (page runs) allocated.")                                                       \
    X(large_frees, ARENA_METRIC_COUNTER, "arena_large_frees_total", "", "Large blocks freed.")     \
    X(large_alloc_bytes, ARENA_METRIC_COUNTER, "arena_large_allocated_bytes_total", "",            \
      "Bytes of large blocks allocated, in whole pages.")                                          \
    X(large_free_bytes, ARENA_METRIC_COUNTER, "arena_large_freed_bytes_total", "",                 \
      "Bytes of large blocks freed, in whole pages.")                                              \
    X(failed, ARENA_METRIC_COUNTER, "arena_failed_allocations_total", "",                          \
      "Allocation calls that failed with ENOMEM.")                                                 \
    X(foreign, ARENA_METRIC_COUNTER, "arena_foreign_frees_total", "",                              \
      "Frees of pointers the allocator does not own (ignored).")                                   \
    X(reserved, ARENA_METRIC_GAUGE, "arena_reserved_bytes", "",                                    \
      "Address space reserved by the allocator.")                                                  \
    X(committed, ARENA_METRIC_GAUGE, "arena_committed_bytes", "",                                  \
      "Pages in use plus free pages not yet returned to the kernel.")                              \
    X(resident, ARENA_METRIC_GAUGE, "arena_resident_bytes", "",                                    \
      "Resident bytes of the allocator's memory, as last sampled by the allocator.")               \
    X(purged, ARENA_METRIC_COUNTER, "arena_purged_bytes_total", "",                                \
      "Bytes returned to the kernel.")                                                             \
    X(purges, ARENA_METRIC_COUNTER, "arena_purges_total", "",                                      \
      "Passes that returned memory to the kernel.")                                                \
    X(trims, ARENA_METRIC_COUNTER, "arena_trims_total", "",                                        \
      "Trims served (malloc_trim calls and trim requests).")                                       \
    X(regions, ARENA_METRIC_GAUGE, "arena_regions", "", "Address-space reservations made.")        \
    X(heaps, ARENA_METRIC_GAUGE, "arena_heaps", "state",                                           \
      "Thread heaps, by state (abandoned: of an exited thread, waiting for adoption).")            \
    X(peak, ARENA_METRIC_GAUGE, "arena_peak_live_bytes", "",                                       \
      "Highest live bytes seen by the allocator (summed over the processes when grouped by "       \
      "comm).")                                                                                    \
    X(heap_errors, ARENA_METRIC_COUNTER, "arena_heap_errors_total", "kind",                        \
      "Heap errors caught, by kind (invalid_free: a pointer inside the arena that is not a "       \
      "live block).")                                                                              \
    X(profiling, ARENA_METRIC_GAUGE, "arena_profiling", "",                                        \
      "1 while heap profiling samples this process's allocations, else 0.")                        \
    X(profile_rate, ARENA_METRIC_GAUGE, "arena_profile_rate_bytes", "",                            \
      "Mean bytes allocated between heap profile samples, last in force (1: every allocation).")   \
    X(profile_samples, ARENA_METRIC_COUNTER, "arena_profile_samples_total", "",                    \
      "Allocations sampled by the heap profiler.")                                                 \
    X(profile_sampled_bytes, ARENA_METRIC_COUNTER, "arena_profile_sampled_bytes_total", "",        \
      "Bytes asked for by the allocations the heap profiler sampled.")

enum arena_stats_family {
#define ARENA_STATS_FAMILY_ENUM(id, type, name, label, help) ARENA_FAMILY_##id,
    ARENA_STATS_FAMILIES(ARENA_STATS_FAMILY_ENUM)
#undef ARENA_STATS_FAMILY_ENUM
        ARENA_FAMILY_COUNT
};

/* Event counters, one per shard and summed by readers: X(name, family, label value, pass).
   The index of each is ARENA_EV_<name>. pass 1: read in the free pass of the reading protocol
   (live bytes subtract it); pass 0: in the allocation pass. */
#define ARENA_STATS_EVENTS(X)                                                                      \
    X(malloc_calls, calls, "malloc", 0)                                                            \
    X(calloc_calls, calls, "calloc", 0)                                                            \
    X(realloc_calls, calls, "realloc", 0) /* realloc and reallocarray */                           \
    X(free_calls, calls, "free", 0)       /* free and cfree */                                     \
    X(aligned_calls, calls, "aligned", 0)                                                          \
    X(new_calls, calls, "new", 0)                                                                  \
    X(delete_calls, calls, "delete", 0)                                                            \
    X(bytes_requested, requested, "", 0)                                                           \
    X(large_allocs, large_allocs, "", 0)                                                           \
    X(large_frees, large_frees, "", 1)                                                             \
    X(large_alloc_bytes, large_alloc_bytes, "", 0)                                                 \
    X(large_free_bytes, large_free_bytes, "", 1)                                                   \
    X(failed_allocs, failed, "", 0)                                                                \
    X(foreign_frees, foreign, "", 0)

enum arena_stats_event {
#define ARENA_STATS_EVENT_ENUM(name, family, label, pass) ARENA_EV_##name,
    ARENA_STATS_EVENTS(ARENA_STATS_EVENT_ENUM)
#undef ARENA_STATS_EVENT_ENUM
        ARENA_EV_COUNT
};

/* Process-wide gauges, written under the seqlock: X(name, family, label value, signed). The
   index of each is ARENA_G_<name>; a signed gauge holds an int64_t in two's complement. */
#define ARENA_STATS_GAUGES(X)                                                                      \
    X(updated_unix_ns, none, "", 0) /* when these were last written */                             \
    X(reserved_bytes, reserved, "", 0)                                                             \
    X(committed_bytes, committed, "", 0)                                                           \
    X(resident_bytes, resident, "", 0)                                                             \
    X(resident_unix_ns, none, "", 0) /* when resident_bytes was sampled */                         \
    X(purged_bytes, purged, "", 0)                                                                 \
    X(purges, purges, "", 0)                                                                       \
    X(trims, trims, "", 0)                                                                         \
    X(regions, regions, "", 0)                                                                     \
    X(heaps_active, heaps, "active", 0)                                                            \
    X(heaps_abandoned, heaps, "abandoned", 0)                                                      \
    X(peak_live_bytes, peak, "", 0) /* also raised outside the seqlock as it grows */              \
    X(double_frees, heap_errors, "double_free", 0)                                                 \
    X(invalid_frees, heap_errors, "invalid_free", 0)                                               \
    X(purge_delay_ms, none, "", 1) /* the purge delay in force; -1: only on trim */                \
    X(profiling, profiling, "", 0)                                                                 \
    X(profile_rate, profile_rate, "", 0)                                                           \
    X(profile_samples, profile_samples, "", 0)                                                     \
    X(profile_sampled_bytes, profile_sampled_bytes, "", 0)

enum arena_stats_gauge {
#define ARENA_STATS_GAUGE_ENUM(name, family, label, is_signed) ARENA_G_##name,
    ARENA_STATS_GAUGES(ARENA_STATS_GAUGE_ENUM)
#undef ARENA_STATS_GAUGE_ENUM
        ARENA_G_COUNT
};

/* ---- The layout -------------------------------------------------------------------------- */

/* Per-heap counters: one writer each (shard 0: several writers, atomic adds). 1 KiB. */
struct arena_stats_shard {
    uint64_t events[ARENA_STATS_EVENT_SLOTS];      /* indexed by enum arena_stats_event */
    uint64_t class_alloc[ARENA_STATS_MAX_CLASSES]; /* slots handed out, by size class */
    uint64_t class_free[ARENA_STATS_MAX_CLASSES];  /* slots freed, by size class */
};

/* Process-wide gauges, written by the allocator's slow path under its lock. 256 bytes. */
struct arena_stats_global {
    uint64_t seq;                             /* seqlock: odd while being written */
    uint64_t gauges[ARENA_STATS_GAUGE_SLOTS]; /* indexed by enum arena_stats_gauge */
};

/* Requests to the allocator (see the protocol). A reader asks by writing a new value and then
   incrementing the matching *_requests counter; the allocator serves a request when *_requests
   differs from *_served, and then sets *_served to the *_requests it saw. 64 bytes. */
struct arena_stats_control {
    uint64_t trim_requests;    /* a reader increments this to ask for malloc_trim(0) */
    uint64_t trims_served;     /* written by the allocator */
    int64_t purge_delay_ms;    /* the purge delay asked for (ARENA_STATS_PURGE_DELAY_*), first */
    uint64_t purge_requests;   /* then this is incremented */
    uint64_t purges_served;    /* written by the allocator */
    uint64_t profile_rate;     /* heap profiling asked for (profile_page.h): the mean sampling
                                  interval in bytes (1 .. ARENA_PROFILE_MAX_RATE; 1: every
                                  allocation), or 0 for off; first */
    uint64_t profile_requests; /* then this is incremented */
    uint64_t profile_served;   /* written by the allocator */
};

/* The first KiB: identity, layout, control and gauges. */
struct arena_stats_head {
    /* The first four fields keep their offsets in every version. */
    uint64_t magic;                        /* ARENA_STATS_MAGIC */
    uint32_t version;                      /* ARENA_STATS_VERSION */
    uint32_t header_size;                  /* sizeof(struct arena_stats_head): shards follow */
    uint64_t size;                         /* bytes of the whole file */
    int32_t pid;                           /* writer's PID; also the file's name */
    uint32_t flags;                        /* ARENA_STATS_READY once complete */
    uint64_t start_time;                   /* when the page was made, in clock ticks after boot
                                              (CLOCK_BOOTTIME, the unit of /proc/<pid>/stat
                                              field 22): not before the process started */
    uint64_t created_unix_ns;              /* when the page was made */
    char comm[ARENA_STATS_COMM_LEN];       /* the comm then, NUL-terminated */
    char cmdline[ARENA_STATS_CMDLINE_LEN]; /* arguments joined by spaces, truncated */
    uint32_t nclasses;                     /* size classes in use (<= MAX_CLASSES) */
    uint32_t nshards;                      /* ARENA_STATS_SHARDS */
    uint32_t nevents;                      /* ARENA_EV_COUNT of the writer */
    uint32_t page_size;                    /* the allocator's page (large blocks are runs) */
    uint32_t class_size[ARENA_STATS_MAX_CLASSES]; /* slot size of each class, bytes */
    uint32_t shards_used; /* shards [0, shards_used) may be nonzero; grows */
    uint32_t ngauges;     /* ARENA_G_COUNT of the writer */
    uint32_t uid;         /* the writer's effective uid when it made the page */
    uint32_t pad0;
    uint64_t exec_entry;  /* AT_ENTRY and AT_RANDOM of the auxiliary vector */
    uint64_t exec_random; /* (0: unknown): new at every exec, with ASLR */
    uint64_t pid_ns;      /* inode of /proc/self/ns/pid (0: unknown; written
                             on a slow path after start-up) */
    uint8_t pad1[8];
    struct arena_stats_control control; /* 64-byte aligned */
    struct arena_stats_global global;   /* 64-byte aligned */
    uint8_t pad2[128];
};

struct arena_stats_page {
    struct arena_stats_head head;
    struct arena_stats_shard shards[ARENA_STATS_SHARDS];
};

#ifdef __cplusplus
} /* extern "C" */

#    include <cstddef>
#    define ARENA_STATS_OFFSET(field) offsetof(arena_stats_head, field)
#    define ARENA_STATS_STATIC_ASSERT static_assert
#else
#    include <stddef.h>
#    define ARENA_STATS_OFFSET(field) offsetof(struct arena_stats_head, field)
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
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(exec_entry) == 544, "exec_entry");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(pid_ns) == 560, "pid_ns");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(control) == 576, "control");
ARENA_STATS_STATIC_ASSERT(ARENA_STATS_OFFSET(global) == 640, "global");
ARENA_STATS_STATIC_ASSERT(sizeof(struct arena_stats_head) == 1024, "head size");
ARENA_STATS_STATIC_ASSERT(sizeof(struct arena_stats_page) == 1024 + 1024 * ARENA_STATS_SHARDS,
                          "page size");
ARENA_STATS_STATIC_ASSERT(sizeof(struct arena_stats_page) == 32768, "a 32 KiB page");
ARENA_STATS_STATIC_ASSERT(ARENA_EV_COUNT <= ARENA_STATS_EVENT_SLOTS, "event slots");
ARENA_STATS_STATIC_ASSERT(ARENA_G_COUNT <= ARENA_STATS_GAUGE_SLOTS, "gauge slots");

#endif /* ARENA_STATS_PAGE_H */
