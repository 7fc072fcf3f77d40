// SPDX-License-Identifier: MIT
// The native arena API (arena/arena.h) through libarena-native.a: the seed's configurations,
// runs across bitmap words, no header (exact usable sizes), bad frees, trim, stats, threads.
#include "arena/arena.h"

#include "common.h"
#include "testing.h"

#include <doctest/doctest.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

namespace {

struct Arena {
    Arena(size_t chunk, size_t count) {
        const arena_config_t cfg = arena_config(chunk, count);
        REQUIRE(arena_init(&a, &cfg) == 0);
    }
    ~Arena() { arena_teardown(a); }
    arena_t* a = nullptr;
};

} // namespace

TEST_SUITE("native") {

    // The library's compiled-in string, the header's macros and meson's project() (passed by the
    // test table as ARENA_PROJECT_VERSION) are three separate products of the one version: a stale
    // header, a library built from another tree or macros that disagree with the string all fail
    // here.
    TEST_CASE("version: the library, its header and meson's project() agree") {
        const std::string project = testing::required_env("ARENA_PROJECT_VERSION");
        CHECK(std::string(arena_version()) == project);
        CHECK(std::string(ARENA_VERSION_STRING) == project);
        CHECK(std::to_string(ARENA_VERSION_MAJOR) + "." + std::to_string(ARENA_VERSION_MINOR) +
                  "." + std::to_string(ARENA_VERSION_PATCH) ==
              project);
    }

    TEST_CASE("bad configurations are refused with EINVAL") {
        arena_t* a = nullptr;
        for (auto [cs, n] : {std::pair<size_t, size_t>{0, 64},
                             {15, 64},
                             {100, 64},
                             {512, 0},
                             {size_t{1} << 31, 4},
                             {512, (size_t{1} << 32) + 1},
                             {size_t{1} << 30, size_t{1} << 20}}) {
            const arena_config_t cfg = arena_config(cs, n);
            CHECK_MESSAGE(arena_init(&a, &cfg) == EINVAL, cs, " x ", n);
        }
        CHECK(arena_init(nullptr, nullptr) == EINVAL);
    }

    TEST_CASE("the seed's default: 512 B x 64") {
        Arena ar(512, 64);
        std::vector<void*> ps;
        for (int i = 0; i < 64; ++i) {
            void* p = arena_alloc(ar.a, 1 + i % 512);
            REQUIRE(p != nullptr);
            CHECK(reinterpret_cast<uintptr_t>(p) % 16 == 0);
            CHECK(arena_usable_size(ar.a, p) == 512);
            memset(p, i, 512);
            ps.push_back(p);
        }
        errno = 0;
        CHECK(arena_alloc(ar.a, 1) == nullptr);
        CHECK(errno == ENOMEM);
        for (void* p : ps)
            CHECK(arena_free(ar.a, p) == 0);
        arena_stats_t st{};
        REQUIRE(arena_get_stats(ar.a, &st) == 0);
        CHECK(st.chunks_used == 0);
        CHECK(st.allocations == 0);
        CHECK(st.failed_allocs == 1);
    }

    TEST_CASE("an allocation may span many bitmap words, and whole arena") {
        Arena ar(512, 1000);
        void* small = arena_alloc(ar.a, 512 * 3); // 3 chunks at 0
        REQUIRE(small != nullptr);
        void* big = arena_alloc(ar.a, 512 * 700); // 700 chunks: crosses 11 words, starts mid-word
        REQUIRE(big != nullptr);
        CHECK(arena_usable_size(ar.a, big) == 512 * 700);
        memset(big, 0x5a, 512 * 700);
        CHECK(arena_alloc(ar.a, 512 * 297) != nullptr); // exactly what is left
        CHECK(arena_alloc(ar.a, 1) == nullptr);
        CHECK(arena_free(ar.a, big) == 0);
        void* again = arena_alloc(ar.a, 512 * 700);
        CHECK(again == big);
    }

    TEST_CASE("no header: usable size is exactly the chunks, and adjacent runs stay apart") {
        Arena ar(64 * 1024, 1024); // the seed benchmark's 64 MiB arena
        void* a = arena_alloc(ar.a, 256 * 1024);
        void* b = arena_alloc(ar.a, 256 * 1024);
        REQUIRE(a != nullptr);
        REQUIRE(b != nullptr);
        CHECK(static_cast<char*>(b) - static_cast<char*>(a) == 256 * 1024);
        CHECK(arena_usable_size(ar.a, a) == 256 * 1024);
        CHECK(arena_usable_size(ar.a, b) == 256 * 1024);
        CHECK(arena_free(ar.a, a) == 0);
        CHECK(arena_usable_size(ar.a, b) == 256 * 1024);
    }

    TEST_CASE("pointers are aligned to the chunk size, also for chunks larger than a page") {
        // The data of a 64 KiB-chunk arena was only page-aligned (fuzz-alloc, with ARENA_DEBUG:
        // RunMap::init's unit-alignment assertion).
        for (size_t chunk : {size_t{16}, size_t{4096}, size_t{64} << 10, size_t{2} << 20}) {
            Arena ar(chunk, 8);
            void* p = arena_alloc(ar.a, 1);
            void* q = arena_alloc(ar.a, chunk + 1);
            REQUIRE(p != nullptr);
            REQUIRE(q != nullptr);
            CHECK_MESSAGE(reinterpret_cast<uintptr_t>(p) % chunk == 0, chunk);
            CHECK_MESSAGE(reinterpret_cast<uintptr_t>(q) % chunk == 0, chunk);
            memset(q, 1, 2 * chunk); // the whole run is there
            CHECK(arena_free(ar.a, p) == 0);
            CHECK(arena_free(ar.a, q) == 0);
        }
    }

    TEST_CASE("bad frees are refused and change nothing") {
        Arena ar(512, 256);
        char* p = static_cast<char*>(arena_alloc(ar.a, 2048));
        REQUIRE(p != nullptr);
        int local = 0;
        CHECK(arena_free(ar.a, &local) == EINVAL);   // outside
        CHECK(arena_free(ar.a, p + 16) == EINVAL);   // not a chunk start
        CHECK(arena_free(ar.a, p + 512) == EINVAL);  // inside the run
        CHECK(arena_free(ar.a, p + 4096) == ENOENT); // a free chunk
        CHECK(arena_usable_size(ar.a, p) == 2048);
        CHECK(arena_free(ar.a, p) == 0);
        CHECK(arena_free(ar.a, p) == ENOENT); // double free
        CHECK(arena_free(ar.a, nullptr) == 0);
        arena_stats_t st{};
        arena_get_stats(ar.a, &st);
        CHECK(st.bad_frees == 5);
        CHECK(st.chunks_used == 0);
    }

    TEST_CASE("trim returns free memory to the kernel") {
        Arena ar(64 * 1024, 256);
        void* p = arena_alloc(ar.a, 8 * 1024 * 1024);
        REQUIRE(p != nullptr);
        memset(p, 1, 8 * 1024 * 1024);
        CHECK(arena_free(ar.a, p) == 0);
        CHECK(arena_trim(ar.a) >= 8 * 1024 * 1024);
        arena_stats_t st{};
        arena_get_stats(ar.a, &st);
        CHECK(st.bytes_dirty == 0);
        CHECK(st.bytes_purged >= 8 * 1024 * 1024);
        void* q = arena_alloc(ar.a, 8 * 1024 * 1024);
        REQUIRE(q == p);
        for (size_t i = 0; i < 8 * 1024 * 1024; i += 4096)
            REQUIRE(static_cast<char*>(q)[i] == 0);
    }

    TEST_CASE("instances are thread-safe") {
        Arena ar(256, 1 << 16);
        std::atomic<int> bad{0};
        std::vector<std::thread> ts;
        for (int t = 0; t < 4; ++t) {
            ts.emplace_back([&, t] {
                uint64_t rng = 1000 + t;
                std::vector<std::pair<unsigned char*, size_t>> live;
                for (int i = 0; i < 20000; ++i) {
                    if (live.size() > 50 && testing::next_random(rng) % 2 == 0) {
                        auto [p, n] = live.back();
                        live.pop_back();
                        for (size_t k = 0; k < n; k += 97)
                            if (p[k] != static_cast<unsigned char>(t))
                                ++bad;
                        if (arena_free(ar.a, p) != 0)
                            ++bad;
                    } else {
                        const size_t n = 1 + testing::next_random(rng) % 3000;
                        auto* p = static_cast<unsigned char*>(arena_alloc(ar.a, n));
                        if (p == nullptr)
                            continue;
                        memset(p, t, n);
                        live.emplace_back(p, n);
                    }
                }
                for (auto [p, n] : live)
                    if (arena_free(ar.a, p) != 0)
                        ++bad;
            });
        }
        for (auto& t : ts)
            t.join();
        CHECK(bad.load() == 0);
        arena_stats_t st{};
        arena_get_stats(ar.a, &st);
        CHECK(st.chunks_used == 0);
    }

} // TEST_SUITE
