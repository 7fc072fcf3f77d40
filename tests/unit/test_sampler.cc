// SPDX-License-Identifier: MIT
// Sampling by bytes (sampler.h): ln and exp without libm against the C library's, intervals
// exponential with the asked mean, and the weight that makes sampled byte totals unbiased.
#include "sampler.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>

namespace sampler = arena::sampler;

TEST_CASE("ln and exp agree with libm to 1e-9 relative over the ranges the sampler uses") {
    double worst_ln = 0, worst_exp = 0;
    for (double x = 1e-16; x <= 1.0; x *= 1.0007) {
        worst_ln = std::fmax(worst_ln, std::fabs(sampler::ln(x) - std::log(x)) /
                                           std::fmax(std::fabs(std::log(x)), 1e-300));
    }
    // Near 1, where ln is near 0: absolute error (relative error is meaningless there).
    for (double x = 0.999; x < 1.0; x += 1e-6)
        CHECK(std::fabs(sampler::ln(x) - std::log(x)) < 1e-15);
    for (double x = -700; x <= 0; x += 0.0137)
        worst_exp =
            std::fmax(worst_exp, std::fabs(sampler::exp_neg(x) - std::exp(x)) / std::exp(x));
    CHECK(worst_ln < 1e-9);
    CHECK(worst_exp < 1e-9);
    CHECK(sampler::exp_neg(0) == doctest::Approx(1.0));
    CHECK(sampler::exp_neg(-800) == 0);
}

TEST_CASE("intervals: exponential with mean `rate`, never negative; rate 1 samples everything") {
    sampler::Rng rng(12345);
    constexpr uint64_t kRate = 512 * 1024;
    constexpr int kDraws = 400000;
    double sum = 0;
    int below_mean = 0, below_tenth = 0;
    for (int i = 0; i < kDraws; ++i) {
        const int64_t v = sampler::next_interval(rng, kRate);
        REQUIRE(v >= 0);
        sum += static_cast<double>(v);
        below_mean += static_cast<uint64_t>(v) < kRate;
        below_tenth += static_cast<uint64_t>(v) < kRate / 10;
    }
    // Mean within 1% (its standard error is 0.16% here); P(X < mean) = 1 - 1/e = 0.632,
    // P(X < mean / 10) = 1 - e^-0.1 = 0.0952: the shape, not only the mean.
    CHECK(sum / kDraws == doctest::Approx(double{kRate}).epsilon(0.01));
    CHECK(static_cast<double>(below_mean) / kDraws == doctest::Approx(0.6321).epsilon(0.01));
    CHECK(static_cast<double>(below_tenth) / kDraws == doctest::Approx(0.0952).epsilon(0.03));
    sampler::Rng one(1);
    for (int i = 0; i < 100; ++i)
        CHECK(sampler::next_interval(one, 1) == 0);
}

TEST_CASE("weights: n over the chance of being sampled; exact at rate 1 and for huge blocks") {
    constexpr uint64_t kRate = 512 * 1024;
    CHECK(sampler::weight(100, 1) == 100);
    CHECK(sampler::weight(0, kRate) == 0);
    // A 16-byte block is sampled with chance about 16 / rate: it stands for about `rate` bytes.
    CHECK(static_cast<double>(sampler::weight(16, kRate)) ==
          doctest::Approx(16.0 / -std::expm1(-16.0 / kRate)).epsilon(1e-6));
    CHECK(static_cast<double>(sampler::weight(16, kRate)) ==
          doctest::Approx(double{kRate}).epsilon(1e-4));
    CHECK(sampler::weight(uint64_t{1} << 40, kRate) == uint64_t{1} << 40); // always sampled
    const uint64_t mid = sampler::weight(kRate, kRate);                    // chance 1 - 1/e
    CHECK(static_cast<double>(mid) == doctest::Approx(kRate / (1 - std::exp(-1.0))).epsilon(1e-6));
}

TEST_CASE("the estimate is unbiased: simulated sampling of a known mix recovers its bytes") {
    // 1 GiB in a mix of sizes, sampled as the allocator samples (countdown, crossing, new
    // interval): the weighted sum of the samples estimates the bytes within a few percent.
    sampler::Rng rng(777);
    constexpr uint64_t kRate = 512 * 1024;
    const uint64_t sizes[] = {16, 48, 256, 4000, 70000, 1 << 20};
    int64_t left = sampler::next_interval(rng, kRate);
    uint64_t total = 0;
    double estimate = 0;
    for (uint64_t i = 0; total < (uint64_t{1} << 30); ++i) {
        const uint64_t n = sizes[i % 6];
        total += n;
        left -= static_cast<int64_t>(n);
        if (left < 0) {
            estimate += static_cast<double>(sampler::weight(n, kRate));
            left = sampler::next_interval(rng, kRate);
        }
    }
    CHECK(estimate == doctest::Approx(static_cast<double>(total)).epsilon(0.05));
}
