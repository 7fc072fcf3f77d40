// SPDX-License-Identifier: MIT
// The reader fuzz targets' scratch directory: one per process, under $TMPDIR (or /tmp), removed
// at exit.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace fuzz {

/// Makes <$TMPDIR or /tmp>/<name>-XXXXXX and has it removed at exit; "" when mkdtemp fails.
/// Call once per process.
inline std::string temp_dir(const char* name) {
    static std::string made;
    const char* tmp = getenv("TMPDIR");
    std::string dir =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/" + name + "-XXXXXX";
    if (mkdtemp(dir.data()) == nullptr)
        return "";
    made = dir;
    atexit([] {
        std::error_code ec;
        std::filesystem::remove_all(made, ec);
    });
    return dir;
}

} // namespace fuzz
