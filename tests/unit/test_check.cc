// SPDX-License-Identifier: MIT
// The two check tiers (check.h): ARENA_CHECK aborts in every build, ARENA_ASSERT only in a
// debug build of libarena (-Darena_debug=true). Each breaks a RunMap invariant through the
// internal API in a child process and expects SIGABRT with the tier's message.
#include "bitmap.h"
#include "check.h"
#include "testing.h"

#include <doctest/doctest.h>

#include <csignal>

using arena::RunMap;

namespace {

constexpr size_t kUnits = 200; // not a multiple of 64: the padding bits are in play too
alignas(64) uint64_t g_meta[RunMap::metadata_bytes(kUnits) / 8];
RunMap g_map;

void make_map() {
    g_map.init(g_meta, kUnits, uintptr_t{1} << 30, 12);
}

void expect_abort(const testing::ChildResult& r, const char* tier, const char* cond) {
    CHECK(!r.exited);
    CHECK(r.signal == SIGABRT);
    INFO("stderr: ", r.err);
    CHECK(r.err.find(std::string("arena: ") + tier + " failed: bitmap.cc:") != std::string::npos);
    CHECK(r.err.find(cond) != std::string::npos);
}

} // namespace

// A run released twice: it would be handed out twice. Always checked.
ARENA_TEST_CHILD(release_twice) {
    make_map();
    g_map.claim(64, 8);
    g_map.release(64, 8);
    g_map.release(64, 8);
    return 0;
}

// A run claimed that is in use already. Always checked.
ARENA_TEST_CHILD(claim_used) {
    make_map();
    g_map.claim(10, 100);
    g_map.claim(100, 20);
    return 0;
}

// A run given back that take_old() never made busy: only the debug tier notices (in release the
// busy counter wraps, harmless in this child).
ARENA_TEST_CHILD(give_back_not_busy) {
    make_map();
    g_map.claim(0, 4);
    g_map.give_back(0, 4, true);
    return 0;
}

TEST_CASE("ARENA_CHECK aborts with file, line and condition in every build") {
    expect_abort(testing::run_child("release_twice"), "check", "(used_[wi] & m) == m");
    expect_abort(testing::run_child("claim_used"), "check", "(used_[wi] & m) == 0");
}

TEST_CASE("ARENA_ASSERT aborts in a debug build and is compiled out in release") {
    const testing::ChildResult r = testing::run_child("give_back_not_busy");
    if (!arena::kAssertsOn) {
        MESSAGE("ARENA_ASSERT is compiled out (release build; meson -Darena_debug=true enables "
                "it): the child must finish");
        CHECK(r.exited);
        CHECK(r.code == 0);
        return;
    }
    expect_abort(r, "assertion", "n <= busy_units_");
}

TEST_CASE("RunMap::check() holds through claims and releases") {
    make_map();
    CHECK(g_map.check());
    CHECK(g_map.claim(0, 70));
    g_map.claim(70, 3);
    g_map.release(10, 20);
    CHECK(g_map.check());
    g_map.release(0, 10);
    g_map.release(70, 3);
    CHECK(g_map.check());
    CHECK(g_map.counts_fit());
}
