// SPDX-License-Identifier: MIT
// The address-space budget under RLIMIT_AS / RLIMIT_DATA (budget.h): the room a limit leaves,
// counting what the allocator could give back.
#include "budget.h"
#include "os.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <sys/resource.h>

namespace budget = arena::budget;

TEST_CASE("the room a limit leaves, counting what the allocator holds ahead of need") {
    constexpr size_t MiB = size_t{1} << 20;
    CHECK(budget::room_under(arena::os::kNoLimit, 100 * MiB, 0) == SIZE_MAX);
    CHECK(budget::room_under(1024 * MiB, 100 * MiB, 0) == 924 * MiB);
    CHECK(budget::room_under(1024 * MiB, 2048 * MiB, 0) == 0);                  // over it already
    CHECK(budget::room_under(1024 * MiB, 2048 * MiB, 1500 * MiB) == 476 * MiB); // after a cut
    CHECK(budget::room_under(1024 * MiB, 100 * MiB, 200 * MiB) == 1024 * MiB);
    CHECK(budget::share(1000) == 250);
}

TEST_CASE("limits: the process's own, unlimited here; room is then SIZE_MAX") {
    rlimit as{}, data{};
    REQUIRE(getrlimit(RLIMIT_AS, &as) == 0);
    REQUIRE(getrlimit(RLIMIT_DATA, &data) == 0);
    const budget::Limits lim = budget::limits();
    CHECK(lim.as == as.rlim_cur);
    CHECK(lim.data == data.rlim_cur);
    CHECK(budget::bounds_reservation(RLIMIT_AS));
    CHECK(budget::bounds_reservation(RLIMIT_DATA));
    CHECK_FALSE(budget::bounds_reservation(RLIMIT_NOFILE));
    if (!lim.finite())
        CHECK(budget::room(lim) == SIZE_MAX);
    // A data limit 1 TiB above what the process maps now: not 1 TiB flat, which a sanitizer's
    // shadow mappings (tens of TiB of VmData) exceed on their own.
    size_t vm_total = 0, vm_data = 0;
    REQUIRE(arena::os::vm_size(&vm_total, &vm_data));
    const size_t limit = vm_data + (size_t{1} << 40);
    const budget::Limits low{arena::os::kNoLimit, limit};
    CHECK(budget::room(low) > 0);
    CHECK(budget::room(low) < limit);
}
