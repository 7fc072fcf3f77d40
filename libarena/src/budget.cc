// SPDX-License-Identifier: MIT
// The address-space budget under RLIMIT_AS / RLIMIT_DATA (see budget.h).
#include "budget.h"

#include "os.h"

#include <sys/resource.h>

namespace arena::budget {

bool Limits::finite() const {
    return as != os::kNoLimit || data != os::kNoLimit;
}

bool bounds_reservation(int resource) {
    return resource == RLIMIT_AS || resource == RLIMIT_DATA;
}

Limits limits() {
    return Limits{os::soft_limit(RLIMIT_AS), os::soft_limit(RLIMIT_DATA)};
}

size_t room_under(uint64_t limit, size_t vm, size_t held) {
    if (limit == os::kNoLimit)
        return SIZE_MAX;
    const size_t rest = vm > held ? vm - held : 0; // what stays mapped if `held` is given back
    return limit > rest ? static_cast<size_t>(limit - rest) : 0;
}

size_t room(const Limits& lim, size_t held) {
    if (!lim.finite())
        return SIZE_MAX;
    size_t total = 0, data = 0;
    if (!os::vm_size(&total, &data))
        return 0; // no /proc: hold nothing ahead of need (the kernel has the last word)
    const size_t a = room_under(lim.as, total, held);
    const size_t d = room_under(lim.data, data, held);
    return a < d ? a : d;
}

} // namespace arena::budget
