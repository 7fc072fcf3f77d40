// SPDX-License-Identifier: MIT
// Helpers every test program shares (libarena's, the exporter's, the client's and cmond's): a
// temporary directory that removes itself, the environment the test table sets, reading a whole
// file, and waiting for a condition.
// No static objects: preloaded tests link this too, and nothing here runs before main().
#pragma once

#include <chrono>
#include <string>
#include <thread>

namespace testing {

/// A fresh directory $TMPDIR/arena-<tag>-XXXXXX (/tmp without TMPDIR), mode 0700, removed with
/// everything in it on destruction. Throws std::runtime_error when it cannot be made.
class TempDir {
public:
    explicit TempDir(const std::string& tag = "test");
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::string& path() const { return path_; }
    /// The path of `name` in this directory (nothing is made).
    std::string file(const std::string& name) const { return path_ + "/" + name; }
    /// Writes `content` to file(name) (mode applied with chmod, so the umask does not
    /// interfere); returns its path.
    std::string write(const std::string& name, const std::string& content,
                      unsigned mode = 0644) const;

private:
    std::string path_;
};

/// The value of environment variable `name`, set by the test table in meson.build. Throws
/// std::runtime_error naming it when it is unset or empty (the test was not run by meson test).
std::string required_env(const char* name);

/// A whole file ("" when it cannot be read).
std::string read_file(const std::string& path);

/// Polls `pred` every `every` until it holds or `limit` passes, then once more; returns its last
/// value.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(5),
                std::chrono::milliseconds every = std::chrono::milliseconds(10)) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
        if (pred())
            return true;
        std::this_thread::sleep_for(every);
    }
    return pred();
}

} // namespace testing
