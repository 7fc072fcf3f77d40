// SPDX-License-Identifier: MIT
// glibc's <malloc.h> introspection and tuning calls (arena::libc, like alloc.h's): mallinfo2,
// mallinfo, malloc_stats, malloc_info and mallopt, answered from the stats page and the regions'
// totals. override.cc exports them; init.cc prints malloc_stats at exit (ARENA_SHOW_STATS=1).
#pragma once

#include <cstdio>
#include <malloc.h>

namespace arena::libc {

/// Bytes from the regions, live bytes and large blocks, in glibc's fields (the others are 0).
struct ::mallinfo2 mallinfo2();

/// mallinfo2() truncated to int, the deprecated form that glibc still exports.
struct ::mallinfo mallinfo();

/// glibc's lines on stderr (some tools parse them), then every counter and gauge of the stats
/// page by its name in stats_page.h's tables, a few to a line. Writes with write(2) only.
void malloc_stats();

/// glibc's XML with one heap: 0, or -1 with errno = EINVAL for options != 0 or no stream.
int malloc_info(int options, FILE* fp);

/// Accepted and ignored: glibc's tunables have no meaning here (ARENA_* options instead).
int mallopt(int param, int value);

} // namespace arena::libc
