// SPDX-License-Identifier: MIT
// Every C++ operator new/delete form goes to libarena, aligned forms are aligned, and failure
// follows the standard (new-handler, std::bad_alloc, nullptr for nothrow).
#include "testing.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <dlfcn.h>
#include <malloc.h>
#include <memory>
#include <new>
#include <string>
#include <vector>

namespace {

int owns(const void* p) {
    using OwnsFn = int (*)(const void*);
    static auto fn = reinterpret_cast<OwnsFn>(dlsym(RTLD_DEFAULT, "arena_owns"));
    return fn != nullptr ? fn(p) : -1;
}

struct alignas(256) Wide {
    char bytes[300];
};

// Through volatile pointers, so that nothing is elided.
void* (*volatile op_new)(size_t) = &::operator new;
void* (*volatile op_new_nothrow)(size_t, const std::nothrow_t&) noexcept = &::operator new;
void* (*volatile op_new_aligned)(size_t, std::align_val_t) = &::operator new;

int g_handler_calls = 0;
void handler_gives_up() {
    ++g_handler_calls;
    std::set_new_handler(nullptr);
}

} // namespace

TEST_CASE("the process runs on libarena") {
    REQUIRE(testing::on_libarena());
}

TEST_SUITE("cxx") {

    TEST_CASE("plain, array and nothrow forms") {
        int* a = new int(5);
        int* b = new int[100];
        int* c = new (std::nothrow) int(6);
        int* d = new (std::nothrow) int[7];
        for (void* p : {static_cast<void*>(a), static_cast<void*>(b), static_cast<void*>(c),
                        static_cast<void*>(d)})
            CHECK(owns(p) == 1);
        delete a;
        delete[] b;
        ::operator delete(c, std::nothrow);
        ::operator delete[](d, std::nothrow);
    }

    TEST_CASE("sized delete") {
        auto* p = static_cast<char*>(::operator new(123));
        CHECK(owns(p) == 1);
        ::operator delete(p, 123);
        auto* q = static_cast<char*>(::operator new[](456));
        ::operator delete[](q, 456);
    }

    TEST_CASE("aligned forms for every power-of-two alignment up to 4 MiB") {
        for (size_t a = 1; a <= (size_t{4} << 20); a *= 2) {
            const auto al = std::align_val_t{a};
            void* p = ::operator new(100, al);
            CHECK(reinterpret_cast<uintptr_t>(p) % a == 0);
            CHECK(owns(p) == 1);
            ::operator delete(p, al);
            void* q = ::operator new[](a + 1, al);
            CHECK(reinterpret_cast<uintptr_t>(q) % a == 0);
            ::operator delete[](q, a + 1, al);
            void* r = ::operator new(5, al, std::nothrow);
            CHECK(reinterpret_cast<uintptr_t>(r) % a == 0);
            ::operator delete(r, al, std::nothrow);
            void* s = ::operator new[](7, al, std::nothrow);
            ::operator delete[](s, al, std::nothrow);
            void* t = ::operator new(9, al);
            ::operator delete(t, 9, al);
        }
        Wide* w = new Wide;
        CHECK(reinterpret_cast<uintptr_t>(w) % 256 == 0);
        delete w;
        auto* ws = new Wide[3];
        CHECK(reinterpret_cast<uintptr_t>(ws) % 256 == 0);
        delete[] ws;
    }

    TEST_CASE("standard containers work on it") {
        std::vector<std::string> v;
        for (int i = 0; i < 10000; ++i)
            v.push_back(std::string(static_cast<size_t>(i % 300), 'a' + i % 26));
        size_t total = 0;
        for (const auto& s : v)
            total += s.size();
        CHECK(total > 0);
        auto sp = std::make_shared<std::vector<int>>(1000, 3);
        CHECK(owns(sp.get()) == 1);
    }

    TEST_CASE("failure: nothrow returns null, plain new throws std::bad_alloc") {
        CHECK(op_new_nothrow(SIZE_MAX / 2, std::nothrow) == nullptr);
        CHECK_THROWS_AS(::operator delete(op_new(SIZE_MAX / 2)), std::bad_alloc);
        CHECK_THROWS_AS(::operator delete (op_new_aligned(SIZE_MAX / 2, std::align_val_t{64}),
                                           std::align_val_t{64}),
                        std::bad_alloc);
    }

    TEST_CASE("failure calls the new-handler before giving up") {
        g_handler_calls = 0;
        std::set_new_handler(handler_gives_up);
        CHECK_THROWS_AS(::operator delete(op_new(SIZE_MAX / 2)), std::bad_alloc);
        CHECK(g_handler_calls == 1);
    }

} // TEST_SUITE
