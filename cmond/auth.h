// SPDX-License-Identifier: MIT
// Authentication: the 256-bit key from client_secret.key, the constant-time check of the
// `access_token` and `Authorization: Bearer` headers, and the per-address failure limiter.
// Key material lives only in Key (cleansed with OPENSSL_cleanse on destruction) and in
// short-lived buffers that are cleansed before they are released. Nothing here logs.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace cmond {

inline constexpr std::size_t kKeyBytes = 32;
inline constexpr std::size_t kKeyHexChars = 2 * kKeyBytes;

/// The key file is missing, unreadable, too open, or not 64 hex digits. what() names the file
/// and the problem, never any of its content.
class KeyError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// The server's 256-bit key. Not copyable; cleansed when destroyed.
class Key {
public:
    /// Loads `path`: a regular file (a symlink to one is fine), no permission bits for group or
    /// others, containing exactly 64 hex digits optionally followed by one newline ("\n" or
    /// "\r\n"). Anything else (a FIFO, a device, a directory) is refused at once, without
    /// waiting for or reading from it; at most 67 bytes are read. Throws KeyError.
    static Key load(const std::string& path);

    /// A key from 64 hex digits (tests). Throws KeyError when `hex` is not that.
    static Key from_hex(std::string_view hex);

    Key(Key&& other) noexcept;
    Key& operator=(Key&&) = delete;
    Key(const Key&) = delete;
    Key& operator=(const Key&) = delete;
    ~Key();

    /// True when `hex` is 64 hex digits (either case) encoding this key. The comparison of the
    /// decoded bytes uses CRYPTO_memcmp, so its time does not depend on where they differ.
    bool matches(std::string_view hex) const;

private:
    Key() = default;
    std::array<unsigned char, kKeyBytes> bytes_{};
};

enum class AuthResult {
    Ok,
    Missing,   // neither header
    Malformed, // a header whose value is not 64 hex digits (or not "Bearer <64 hex>")
    Wrong,     // well-formed but not the key
    Ambiguous, // the same header more than once
};

/// Checks a request's credentials. `access_tokens` and `authorizations` are every value of the
/// `access_token` and `Authorization` headers. Each header present must carry the key (so a
/// request with both headers needs both right); at least one must be present; repeating a
/// header is refused. Thread-safe (Key is immutable).
AuthResult check_credentials(const Key& key, const std::vector<std::string>& access_tokens,
                             const std::vector<std::string>& authorizations);

/// A short name for metrics labels and logs ("missing", "malformed", "wrong", "ambiguous").
std::string_view auth_result_name(AuthResult r);

/// Counts authentication failures per client address. After `max_failures` failures within
/// `window`, the address is refused for `block_time`. A success clears an address's count.
/// At most `max_tracked` addresses are remembered (expired entries go first, then the oldest),
/// so a flood of addresses cannot grow memory without bound. Thread-safe.
class FailureLimiter {
public:
    using Clock = std::chrono::steady_clock;

    FailureLimiter(unsigned max_failures, std::chrono::milliseconds window,
                   std::chrono::milliseconds block_time, std::size_t max_tracked = 4096);

    /// When `addr` is refused at `now`, the time left; otherwise nullopt.
    std::optional<std::chrono::milliseconds> blocked_for(const std::string& addr,
                                                         Clock::time_point now);

    /// Records a failure; returns true when this failure starts a block.
    bool record_failure(const std::string& addr, Clock::time_point now);

    /// Records a success (clears the failure count).
    void record_success(const std::string& addr);

    /// Addresses refused at `now`.
    std::size_t blocked_count(Clock::time_point now);

private:
    struct Entry {
        unsigned failures = 0;
        Clock::time_point window_start{};
        Clock::time_point blocked_until{};
        Clock::time_point last_seen{};
    };
    void make_room(Clock::time_point now);

    const unsigned max_failures_;
    const std::chrono::milliseconds window_;
    const std::chrono::milliseconds block_time_;
    const std::size_t max_tracked_;
    std::mutex mutex_;
    std::unordered_map<std::string, Entry> entries_;
};

} // namespace cmond
