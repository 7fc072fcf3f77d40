// SPDX-License-Identifier: MIT
// A library profile_target dlopens: its leak must be named in the profile (test_profile.cc).
#include <cstddef>
#include <cstdlib>

namespace {
void* volatile sink;
} // namespace

extern "C" __attribute__((noinline)) void plugin_leak() {
    for (size_t done = 0; done < (size_t{2} << 20); done += 64) {
        auto* p = static_cast<char*>(malloc(64));
        p[0] = 1;
        sink = p;
    }
}
