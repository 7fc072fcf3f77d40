// SPDX-License-Identifier: MIT
// The exported setrlimit, setrlimit64, prlimit and prlimit64 (issue 14): a lower RLIMIT_AS or
// RLIMIT_DATA on this process first makes the allocator give back the address space it holds
// ahead of need beyond what the new limit leaves room for (pages.cc: fit_limit), and only then
// takes effect. Without that, region 0 (64 GiB by default) alone exceeds any such limit a
// program sets for itself, and its next thread stack, mmap or FILE buffer fails.
//
// Why interpose, and not only size the reservation by the limit (which init does too, for a
// process started under `ulimit -v`): the kernel accepts a limit below the current size and
// refuses only later mappings, which are the program's, not ours; and a program that lowers
// its limit expects to go on as it did under glibc's malloc, which holds almost no address
// space it does not use. Giving back before the limit is set means no other thread's mapping can
// fail in between. If the kernel then refuses the new limit (raising the hard limit without the
// privilege), the address space given back is simply reserved again on demand.
//
// The limit is set with the prlimit64 system call, as glibc does for all four (os.cc), not
// through the next definition of the symbol: nothing to look up (dlsym may allocate) and nothing
// that could lead back here. A limit set on this process by another one (prlimit(1), or
// prlimit(2) with our pid) cannot be seen; the regions made after it still fit it, since every
// new region reads the limits (budget.h).
#include "budget.h"
#include "macros.h"
#include "os.h"
#include "pages.h"

#include <cerrno>
#include <cstring>
#include <sys/types.h>

// <sys/resource.h> is not included: built with _FILE_OFFSET_BITS=64 (meson's default), it
// declares setrlimit and prlimit as asm aliases of setrlimit64 and prlimit64, and the four
// symbols could not be defined side by side. On every 64-bit ABI the two layouts are one, so
// each name gets its own definition over this struct.
struct RawLimit {
    uint64_t soft;
    uint64_t hard;
};

using namespace arena;

namespace {

/// What to do before `new_limit` for `resource` of process `pid` takes effect.
void before_limit(pid_t pid, int resource, const RawLimit* new_limit) {
    if (new_limit == nullptr || !budget::bounds_reservation(resource))
        return;
    // A pointer the kernel would answer with EFAULT is not read here (the call must not crash
    // where glibc's returns -1): it is passed on unread.
    if (!os::is_mapped(new_limit, sizeof *new_limit))
        return;
    if (new_limit->soft == os::kNoLimit || new_limit->soft > new_limit->hard ||
        !os::is_this_process(pid))
        return; // unlimited, or refused by the kernel (EINVAL), or another process's
    pages::fit_limit(resource, new_limit->soft);
}

int set_limit(pid_t pid, int resource, const RawLimit* new_limit, RawLimit* old_limit) {
    before_limit(pid, resource, new_limit);
    const int r = os::prlimit(pid, resource, new_limit, old_limit);
    if (r < 0) {
        errno = -r;
        return -1;
    }
    return 0;
}

} // namespace

ARENA_EXPORT int setrlimit(int resource, const RawLimit* rlim) {
    return set_limit(0, resource, rlim, nullptr);
}

ARENA_EXPORT int setrlimit64(int resource, const RawLimit* rlim) {
    return set_limit(0, resource, rlim, nullptr);
}

ARENA_EXPORT int prlimit(pid_t pid, int resource, const RawLimit* new_limit, RawLimit* old_limit) {
    return set_limit(pid, resource, new_limit, old_limit);
}

ARENA_EXPORT int prlimit64(pid_t pid, int resource, const RawLimit* new_limit,
                           RawLimit* old_limit) {
    return set_limit(pid, resource, new_limit, old_limit);
}
