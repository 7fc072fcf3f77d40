// SPDX-License-Identifier: MIT
// Size classes: the mapping picks the smallest class that fits, every class is 16-byte
// granular, slabs waste little, and the multiply-shift slot index is exact for every offset in
// a slab (that is what detects an interior pointer passed to free).
#include "size_class.h"

#include <doctest/doctest.h>

using namespace arena;

TEST_SUITE("size-class") {

    TEST_CASE("class_of is the smallest class that fits, for every small size") {
        for (size_t n = 0; n <= kSmallMax; ++n) {
            const unsigned c = class_of(n);
            REQUIRE(c < kNumClasses);
            REQUIRE(kClasses[c].size >= n);
            if (c > 0)
                REQUIRE(kClasses[c - 1].size < (n == 0 ? 1 : n));
        }
    }

    TEST_CASE("classes are 16-byte multiples, increasing; waste under 16 B or 25%") {
        for (unsigned c = 0; c < kNumClasses; ++c) {
            CHECK(kClasses[c].size % 16 == 0);
            if (c > 0) {
                CHECK(kClasses[c].size > kClasses[c - 1].size);
                // The worst request for class c is one byte above the previous class.
                const size_t worst = kClasses[c - 1].size + 1;
                if (kClasses[c].size <= 128)
                    CHECK(kClasses[c].size - worst < 16);
                else
                    CHECK(double(kClasses[c].size) / double(worst) < 1.25);
            }
        }
        CHECK(kClasses[0].size == 16);
        CHECK(kClasses[kNumClasses - 1].size == kSmallMax);
    }

    TEST_CASE("slabs hold 8 to 1024 whole slots: no tail") {
        for (const SizeClass& k : kClasses) {
            const size_t bytes = size_t{k.slab_pages} * kPageSize;
            CHECK(k.nslots <= kSlabMaxSlots);
            CHECK(k.nslots >= 8);
            CHECK(k.nslots * size_t{k.size} == bytes);
        }
    }

    TEST_CASE("one multiply gives the slot index and tells an exact slot start, at every offset") {
        for (const SizeClass& k : kClasses) {
            const size_t bytes = size_t{k.slab_pages} * kPageSize;
            for (size_t d = 0; d < bytes; ++d) {
                const uint64_t p = d * k.recip;
                const bool exact = (p & kRecipMask) < k.recip;
                if ((p >> kRecipShift) != d / k.size || exact != (d % k.size == 0))
                    FAIL("class ", k.size, " offset ", d);
            }
        }
    }

    TEST_CASE("power-of-two classes exist for every alignment up to a page") {
        for (size_t a = 16; a <= kSmallMax; a *= 2) {
            const unsigned c = class_of(a);
            CHECK(kClasses[c].size == a);
        }
    }

} // TEST_SUITE
