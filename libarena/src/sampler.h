// SPDX-License-Identifier: MIT
// Sampling by bytes, for heap profiles (DESIGN.md "Heap profiles"; issue 16): the arithmetic,
// kept apart from the allocator so that it is tested on its own.
//
// A thread counts down the bytes it allocates; when the count passes zero the allocation that
// crossed it is sampled and a new interval is drawn. Intervals are exponentially distributed with
// mean `rate` (a Poisson process over the bytes allocated, as tcmalloc and jemalloc sample), so
// every byte has the same chance 1/rate of being the one sampled, whatever the sizes and order
// of the allocations. A sampled n-byte allocation then stands for n / (1 - exp(-n / rate)) bytes
// (the inverse of its chance of being sampled), which makes the profile's byte totals unbiased
// estimates. Rate 1 samples every allocation and each stands for exactly itself.
//
// No libm: libarena's run-time dependencies stay libc's (and it runs inside programs that may not
// have libm loaded). ln and exp are computed here to about 1e-9 relative error, far below the
// sampling noise, with no table and no allocation.
#pragma once

#include <cstdint>
#include <cstring>

namespace arena::sampler {

/// xorshift64*: a per-thread generator (seeded from the process's random bits and the heap id).
/// Never 0 once seeded; 0 seeds as a fixed odd constant.
struct Rng {
    uint64_t state;

    explicit constexpr Rng(uint64_t seed) : state(seed != 0 ? seed : 0x9e3779b97f4a7c15ull) {}

    constexpr uint64_t next() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return state * 0x2545f4914f6cdd1dull;
    }
};

inline constexpr double kLn2 = 0.69314718055994530942;

/// ln(x) for x > 0 (finite, normal): x = m * 2^e with m in [sqrt(1/2), sqrt(2)), and
/// ln(m) = 2 atanh(t), t = (m - 1) / (m + 1), |t| < 0.172, by its series to t^13.
inline double ln(double x) {
    uint64_t bits = 0;
    memcpy(&bits, &x, sizeof bits);
    int e = static_cast<int>((bits >> 52) & 0x7ff) - 1023;
    bits = (bits & ((uint64_t{1} << 52) - 1)) | (uint64_t{1023} << 52); // m in [1, 2)
    double m = 0;
    memcpy(&m, &bits, sizeof m);
    if (m > 1.41421356237309504880) {
        m *= 0.5;
        ++e;
    }
    const double t = (m - 1) / (m + 1);
    const double t2 = t * t;
    const double series =
        1 +
        t2 * (1.0 / 3 +
              t2 * (1.0 / 5 + t2 * (1.0 / 7 + t2 * (1.0 / 9 + t2 * (1.0 / 11 + t2 * (1.0 / 13))))));
    return 2 * t * series + e * kLn2;
}

/// exp(x) for x in [-700, 0]: x = k ln2 + r with |r| <= ln2 / 2, exp(r) by its series to r^11,
/// times 2^k built in the exponent bits. Below -700: 0.
inline double exp_neg(double x) {
    if (x < -700)
        return 0;
    const int k = static_cast<int>(x / kLn2 - 0.5); // rounds toward the nearest for x <= 0
    const double r = x - k * kLn2;
    double term = 1, sum = 1;
    for (int i = 1; i <= 11; ++i) {
        term *= r / i;
        sum += term;
    }
    const uint64_t scale_bits = static_cast<uint64_t>(k + 1023) << 52;
    double scale = 0;
    memcpy(&scale, &scale_bits, sizeof scale);
    return sum * scale;
}

/// Bytes to allocate before the next sample: exponential with mean `rate` (>= 1), at least 0.
/// Rate 1 samples every allocation: the interval is 0 and the next allocation crosses it.
inline int64_t next_interval(Rng& rng, uint64_t rate) {
    if (rate <= 1)
        return 0;
    // u uniform in (0, 1]: 53 random bits plus one, over 2^53.
    const double u = static_cast<double>((rng.next() >> 11) + 1) * (1.0 / 9007199254740992.0);
    const double interval = -ln(u) * static_cast<double>(rate);
    constexpr double kMax = 4.0e18; // < INT64_MAX: a countdown never overflows
    return interval >= kMax ? static_cast<int64_t>(kMax) : static_cast<int64_t>(interval);
}

/// x >= 0 (and below 2^64) to the nearest integer, halves up: no libm (lround).
inline uint64_t round_nonnegative(double x) {
    const auto whole = static_cast<uint64_t>(x);
    return whole + (x - static_cast<double>(whole) >= 0.5 ? 1 : 0);
}

/// The bytes an n-byte allocation sampled at mean interval `rate` stands for: n divided by its
/// chance of being sampled, 1 - exp(-n / rate). Exactly n at rate 1 (every allocation sampled)
/// and for allocations so large that they are always sampled.
inline uint64_t weight(uint64_t n, uint64_t rate) {
    if (rate <= 1 || n == 0)
        return n;
    const double chance = 1 - exp_neg(-static_cast<double>(n) / static_cast<double>(rate));
    if (chance >= 1)
        return n;
    const double w = static_cast<double>(n) / chance;
    return w >= 1.8e19 ? UINT64_MAX : round_nonnegative(w);
}

} // namespace arena::sampler
