// SPDX-License-Identifier: MIT
// dlopen/dlclose of a plugin that allocates in constructors, thread_locals and destructors;
// blocks it allocated outlive it and are freed by the host afterwards.
#include "testing.h"

#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <string>
#include <vector>

TEST_CASE("the process runs on libarena") {
    REQUIRE(testing::on_libarena());
}

TEST_CASE("load, use and unload a plugin many times") {
    const char* path = getenv("ARENA_TEST_PLUGIN");
    REQUIRE_MESSAGE(path != nullptr, "ARENA_TEST_PLUGIN must name the plugin");
    std::vector<char*> kept;
    for (int i = 0; i < 50; ++i) {
        void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        REQUIRE_MESSAGE(h != nullptr, dlerror());
        auto make = reinterpret_cast<char* (*)(int)>(dlsym(h, "plugin_make_string"));
        auto work = reinterpret_cast<size_t (*)()>(dlsym(h, "plugin_work"));
        REQUIRE(static_cast<bool>(make));
        REQUIRE(static_cast<bool>(work));
        CHECK(work() == 50 + 50 + 199 * 200 / 2);
        kept.push_back(make(100 + i));
        CHECK(dlclose(h) == 0);
    }
    for (size_t i = 0; i < kept.size(); ++i) {
        CHECK(strlen(kept[i]) == 100 + i);
        free(kept[i]);
    }
}
