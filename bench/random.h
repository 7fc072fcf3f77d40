// SPDX-License-Identifier: MIT
// bench/random.h — the deterministic randomness bench_alloc and bench_seed share, so that a
// seed means the same stream in both.
#pragma once

#include <cstdint>

namespace bench {

/// splitmix64: tiny, fast and statistically good enough for picking sizes and slots. One
/// generator per thread, seeded from (seed, thread id), so runs are reproducible.
struct SplitMix64 {
    uint64_t state;
    uint64_t next() {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
};

/// Maps the high 32 bits of r onto [0, n), n < 2^32, with a multiply instead of a division
/// (Lemire's method).
inline uint64_t below(uint64_t r, uint32_t n) {
    return ((r >> 32) * n) >> 32;
}

} // namespace bench
