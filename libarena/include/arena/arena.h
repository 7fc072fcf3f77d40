/* SPDX-License-Identifier: MIT */
/*
 * libarena — the native API.
 *
 * libarena.so is first of all a malloc replacement: preload it (LD_PRELOAD, or `arena-run`) and
 * every malloc/free/new/delete of the process goes to it. This header is for code that wants
 * more than that:
 *
 *  - An arena instance: the original CMon "virtual-memory bitmap arena", done right. One
 *    reservation of chunk_size * chunk_count bytes (MAP_NORESERVE, demand paged), chunks
 *    tracked in 64-bit bitmaps. An allocation is a run of whole chunks that may cross any
 *    number of bitmap words; no header is stored next to it (run starts live in a second
 *    bitmap), and the arena starts on a multiple of the chunk size, so every pointer is
 *    aligned to the chunk size (16 bytes at least). Free chunks go back to the kernel after
 * ARENA_PURGE_DELAY_MS, or at once with arena_trim(). Instances are thread-safe (one lock each) and
 * independent of malloc: link libarena-native.a to use them without replacing the process
 * allocator.
 *
 *  - A few calls about the process allocator itself (arena_version, arena_owns).
 *
 * All functions are safe to call from any thread. None of them calls malloc.
 */
#ifndef ARENA_ARENA_H
#define ARENA_ARENA_H

#include "arena/version.h" /* ARENA_VERSION_MAJOR, _MINOR, _PATCH, _STRING (generated) */

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#    define ARENA_API __attribute__((visibility("default")))
#else
#    define ARENA_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** The library's version string, e.g. "0.1.0" (matches ARENA_VERSION_STRING it was built with). */
ARENA_API const char* arena_version(void);

/** Geometry of an arena instance. */
typedef struct arena_config_s {
    size_t chunk_size;  /**< bytes per chunk: a power of two from 16 to 1 GiB */
    size_t chunk_count; /**< chunks in the arena: 1 to 2^32 */
} arena_config_t;

/** An arena instance (opaque). */
typedef struct arena_s arena_t;

/**
 * Builds a configuration, as the seed's arena_config(chunk_size, chunk_count) did.
 * Examples: arena_config(512, 64) is 32 KiB, arena_config(64 << 10, 1024) is 64 MiB,
 * arena_config(1 << 20, 10000) is about 10 GiB of address space (memory is used only when
 * touched). Validation happens in arena_init().
 */
ARENA_API arena_config_t arena_config(size_t chunk_size, size_t chunk_count);

/**
 * Reserves the arena. Returns 0 and stores the instance in *out, or an errno value:
 * EINVAL for a bad configuration (chunk_size not a power of two in [16, 1 GiB], chunk_count
 * outside [1, 2^32], or a total that overflows), ENOMEM when the kernel refuses the reservation.
 */
ARENA_API int arena_init(arena_t** out, const arena_config_t* config);

/**
 * Allocates ceil(size / chunk_size) contiguous chunks (one chunk for size 0). Returns NULL and
 * sets errno to ENOMEM when no free run is long enough.
 */
ARENA_API void* arena_alloc(arena_t* arena, size_t size);

/**
 * Frees an allocation. Returns 0, or EINVAL when p is not the start of an allocation of this
 * arena (outside it, or inside a run), or ENOENT when p was already freed. Freeing NULL
 * returns 0. A bad pointer never corrupts the arena.
 */
ARENA_API int arena_free(arena_t* arena, void* p);

/** Bytes usable at p (its chunks times chunk_size), or 0 if p is not a live allocation. */
ARENA_API size_t arena_usable_size(const arena_t* arena, const void* p);

/** Returns every free chunk's memory to the kernel now. Returns the number of bytes released. */
ARENA_API size_t arena_trim(arena_t* arena);

/** Counters of an arena instance. */
typedef struct arena_stats_s {
    size_t chunk_size;
    size_t chunk_count;
    size_t chunks_used;    /**< chunks in live allocations */
    size_t allocations;    /**< live allocations */
    size_t bytes_reserved; /**< address space of the arena */
    size_t bytes_dirty;    /**< free chunks not yet returned to the kernel */
    uint64_t alloc_calls;
    uint64_t free_calls;
    uint64_t failed_allocs; /**< arena_alloc calls that returned NULL */
    uint64_t bad_frees;     /**< arena_free calls that returned EINVAL or ENOENT */
    uint64_t bytes_purged;  /**< bytes returned to the kernel so far */
} arena_stats_t;

/** Fills *out with a consistent snapshot. Returns 0, or EINVAL for a null argument. */
ARENA_API int arena_get_stats(const arena_t* arena, arena_stats_t* out);

/** Unmaps the arena. Every pointer it handed out becomes invalid. NULL is ignored. */
ARENA_API void arena_teardown(arena_t* arena);

/**
 * For the process allocator (libarena.so as malloc; not in libarena-native.a): 1 if p points
 * into memory the allocator manages (whether or not the block is live), 0 otherwise.
 */
ARENA_API int arena_owns(const void* p);

#ifdef __cplusplus
}
#endif

#endif /* ARENA_ARENA_H */
