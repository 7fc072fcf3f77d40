// SPDX-License-Identifier: MIT
// A plugin for test_dlopen: allocates in its constructor and destructor, keeps C++ globals and
// thread_local objects with destructors, and hands out blocks the host frees after dlclose.
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace {

std::map<std::string, std::vector<int>> g_table; // built in the constructor, freed at dlclose

struct PerThread {
    std::vector<std::string> strings;
    PerThread() {
        for (int i = 0; i < 50; ++i)
            strings.push_back(std::string(static_cast<size_t>(i * 3), 'z'));
    }
};
thread_local PerThread t_state;

// A static constructor (after g_table in this file, so it runs after g_table is built).
struct Init {
    Init() {
        for (int i = 0; i < 200; ++i)
            g_table["key" + std::to_string(i)] = std::vector<int>(static_cast<size_t>(i), i);
    }
} g_init;

} // namespace

extern "C" char* plugin_make_string(int n) {
    auto* p = static_cast<char*>(malloc(static_cast<size_t>(n) + 1));
    memset(p, 'q', static_cast<size_t>(n));
    p[n] = '\0';
    return p;
}

extern "C" size_t plugin_work() {
    size_t total = t_state.strings.size();
    std::thread t([&total] { total += t_state.strings.size(); });
    t.join();
    for (const auto& [k, v] : g_table)
        total += v.size();
    return total;
}
