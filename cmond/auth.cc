// SPDX-License-Identifier: MIT
// Key loading, constant-time credential checks and the failure limiter; see auth.h.
#include "auth.h"

#include "hex.h"

#include "common/regular_file.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <sys/stat.h>

namespace cmond {

namespace {

// Decodes exactly 64 hex digits into out; false for anything else. Not constant-time: it only
// ever sees the client's own input or is followed by cleansing of the key file buffer.
bool decode_hex(std::string_view hex, std::array<unsigned char, kKeyBytes>& out) {
    if (hex.size() != kKeyHexChars) {
        return false;
    }
    for (std::size_t i = 0; i < kKeyBytes; ++i) {
        const int hi = hex_value(hex[2 * i]);
        const int lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        out[i] = static_cast<unsigned char>(hi << 4 | lo);
    }
    return true;
}

// Cleanses a buffer on every way out of a scope.
struct Cleanser {
    void* p;
    std::size_t n;
    ~Cleanser() { OPENSSL_cleanse(p, n); }
};

std::string_view ltrim_spaces(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
        s.remove_prefix(1);
    }
    return s;
}

} // namespace

// ---- Key ----

Key Key::load(const std::string& path) {
    const std::string where = "key file '" + path + "': ";
    // 64 hex digits plus an optional "\r\n": anything longer is malformed, so read one more
    // byte and no further (the read is capped whatever the file's size).
    char buf[kKeyHexChars + 3];
    Cleanser clean_buf{buf, sizeof buf};
    std::size_t len = 0;
    try {
        cmon::RegularFile file(path);
        const mode_t mode = file.status().st_mode;
        if ((mode & (S_IRWXG | S_IRWXO)) != 0) {
            char shown[8];
            std::snprintf(shown, sizeof shown, "%04o", static_cast<unsigned>(mode & 07777));
            throw KeyError(where + "mode " + shown +
                           " gives group or others access; it must be readable by its owner "
                           "only (chmod 600 " +
                           path + ")");
        }
        len = file.read_into(buf, sizeof buf);
    } catch (const cmon::FileError& e) {
        throw KeyError(where + e.what() +
                       (e.at_open() ? " (create one with: openssl rand -hex 32 > " + path +
                                          "; chmod 600 " + path + ")"
                                    : std::string()));
    }
    std::string_view text(buf, len);
    if (text.size() > kKeyHexChars && text.back() == '\n') {
        text.remove_suffix(1);
        if (text.size() > kKeyHexChars && text.back() == '\r') {
            text.remove_suffix(1);
        }
    }
    Key key;
    if (!decode_hex(text, key.bytes_)) {
        throw KeyError(where + "malformed: expected exactly 64 hex digits (a 256-bit key) and "
                               "at most a trailing newline");
    }
    return key;
}

Key Key::from_hex(std::string_view hex) {
    Key key;
    if (!decode_hex(hex, key.bytes_)) {
        throw KeyError("key: expected exactly 64 hex digits");
    }
    return key;
}

Key::Key(Key&& other) noexcept : bytes_(other.bytes_) {
    OPENSSL_cleanse(other.bytes_.data(), other.bytes_.size());
}

Key::~Key() {
    OPENSSL_cleanse(bytes_.data(), bytes_.size());
}

bool Key::matches(std::string_view hex) const {
    std::array<unsigned char, kKeyBytes> given{};
    Cleanser clean_given{given.data(), given.size()};
    if (!decode_hex(hex, given)) {
        return false;
    }
    return CRYPTO_memcmp(given.data(), bytes_.data(), kKeyBytes) == 0;
}

// ---- Request credentials ----

AuthResult check_credentials(const Key& key, const std::vector<std::string>& access_tokens,
                             const std::vector<std::string>& authorizations) {
    if (access_tokens.empty() && authorizations.empty()) {
        return AuthResult::Missing;
    }
    if (access_tokens.size() > 1 || authorizations.size() > 1) {
        return AuthResult::Ambiguous;
    }
    // Check every header present, without stopping at the first failure, so that the work done
    // does not depend on which one is wrong.
    bool malformed = false;
    bool wrong = false;
    auto check = [&](std::string_view hex) {
        if (hex.size() != kKeyHexChars ||
            !std::all_of(hex.begin(), hex.end(), [](char c) { return hex_value(c) >= 0; })) {
            malformed = true;
        } else if (!key.matches(hex)) {
            wrong = true;
        }
    };
    if (!access_tokens.empty()) {
        check(access_tokens.front());
    }
    if (!authorizations.empty()) {
        // RFC 7235: the scheme is case-insensitive; one or more spaces before the token.
        const std::string_view value = authorizations.front();
        constexpr std::string_view kScheme = "bearer";
        const bool bearer =
            value.size() > kScheme.size() && (value[kScheme.size()] == ' ') &&
            std::equal(kScheme.begin(), kScheme.end(), value.begin(), [](char a, char b) {
                return a == static_cast<char>(std::tolower(static_cast<unsigned char>(b)));
            });
        if (bearer) {
            check(ltrim_spaces(value.substr(kScheme.size())));
        } else {
            malformed = true;
        }
    }
    if (malformed) {
        return AuthResult::Malformed;
    }
    return wrong ? AuthResult::Wrong : AuthResult::Ok;
}

std::string_view auth_result_name(AuthResult r) {
    switch (r) {
    case AuthResult::Ok:
        return "ok";
    case AuthResult::Missing:
        return "missing";
    case AuthResult::Malformed:
        return "malformed";
    case AuthResult::Wrong:
        return "wrong";
    case AuthResult::Ambiguous:
        return "ambiguous";
    }
    return "unknown";
}

// ---- FailureLimiter ----

FailureLimiter::FailureLimiter(unsigned max_failures, std::chrono::milliseconds window,
                               std::chrono::milliseconds block_time, std::size_t max_tracked)
    : max_failures_(max_failures), window_(window), block_time_(block_time),
      max_tracked_(max_tracked) {}

std::optional<std::chrono::milliseconds> FailureLimiter::blocked_for(const std::string& addr,
                                                                     Clock::time_point now) {
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(addr);
    if (it == entries_.end() || it->second.blocked_until <= now) {
        return std::nullopt;
    }
    return std::chrono::ceil<std::chrono::milliseconds>(it->second.blocked_until - now);
}

bool FailureLimiter::record_failure(const std::string& addr, Clock::time_point now) {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(addr);
    if (it == entries_.end()) {
        make_room(now);
        it = entries_.emplace(addr, Entry{}).first;
    }
    Entry& e = it->second;
    e.last_seen = now;
    if (e.failures == 0 || now - e.window_start > window_) {
        e.failures = 0;
        e.window_start = now;
    }
    ++e.failures;
    if (e.failures >= max_failures_ && e.blocked_until <= now) {
        e.blocked_until = now + block_time_;
        e.failures = 0;
        return true;
    }
    return false;
}

void FailureLimiter::record_success(const std::string& addr) {
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(addr);
    if (it != entries_.end() && it->second.blocked_until <= Clock::now()) {
        entries_.erase(it);
    }
}

std::size_t FailureLimiter::blocked_count(Clock::time_point now) {
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(
        std::count_if(entries_.begin(), entries_.end(),
                      [&](const auto& kv) { return kv.second.blocked_until > now; }));
}

void FailureLimiter::make_room(Clock::time_point now) {
    if (entries_.size() < max_tracked_) {
        return;
    }
    std::erase_if(entries_, [&](const auto& kv) {
        return kv.second.blocked_until <= now && now - kv.second.window_start > window_;
    });
    if (entries_.size() < max_tracked_) {
        return;
    }
    const auto oldest =
        std::min_element(entries_.begin(), entries_.end(), [](const auto& a, const auto& b) {
            return a.second.last_seen < b.second.last_seen;
        });
    entries_.erase(oldest);
}

} // namespace cmond
