// SPDX-License-Identifier: MIT
// Key file checks, credential parsing and the failure limiter.
#include "auth.h"
#include "helpers.h"

#include <doctest/doctest.h>

#include <sys/stat.h>

using namespace cmond;
using cmond_test::TempDir;
using namespace std::chrono_literals;

namespace {

const std::string kHex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

std::string load_error(const std::string& path) {
    try {
        Key::load(path);
    } catch (const KeyError& e) {
        return e.what();
    }
    return "<loaded>";
}

} // namespace

TEST_SUITE("auth") {

    TEST_CASE("key file: accepted forms") {
        TempDir dir;
        for (const std::string& content : {kHex, kHex + "\n", kHex + "\r\n"}) {
            const auto path = dir.write("k", content, 0600);
            CHECK(Key::load(path).matches(kHex));
        }
        const auto upper = dir.write(
            "u", "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF", 0400);
        CHECK(Key::load(upper).matches(kHex));
    }

    TEST_CASE("key file: refused, with a clear message that never shows the content") {
        TempDir dir;
        struct Case {
            std::string content;
            unsigned mode;
            const char* expect;
        };
        const Case cases[] = {
            {kHex, 0644, "mode 0644 gives group or others access"},
            {kHex, 0640, "mode 0640"},
            {kHex, 0604, "mode 0604"},
            {kHex, 0620, "mode 0620"},
            {kHex.substr(0, 63), 0600, "malformed"},
            {kHex + "0", 0600, "malformed"},
            {kHex + "\n\n", 0600, "malformed"},
            {" " + kHex, 0600, "malformed"},
            {"zz" + kHex.substr(2), 0600, "malformed"},
            {"", 0600, "malformed"},
            {kHex + kHex, 0600, "malformed"},
        };
        for (const auto& tc : cases) {
            CAPTURE(tc.expect);
            const auto path = dir.write("key", tc.content, tc.mode);
            const std::string err = load_error(path);
            CHECK_MESSAGE(err.find(tc.expect) != std::string::npos, err);
            CHECK(err.find(path) != std::string::npos);
            CHECK(err.find("00112233") == std::string::npos);
        }
        CHECK(load_error(dir.file("missing")).find("cannot open") != std::string::npos);
        CHECK(load_error(dir.file("missing")).find("openssl rand -hex 32") != std::string::npos);
        ::mkdir(dir.file("d").c_str(), 0700);
        CHECK(load_error(dir.file("d")).find("not a regular file") != std::string::npos);
    }

    TEST_CASE("Key::matches is exact and case-insensitive in hex") {
        const Key key = Key::from_hex(kHex);
        CHECK(key.matches(kHex));
        std::string upper = kHex;
        for (auto& c : upper) {
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        }
        CHECK(key.matches(upper));
        std::string last = kHex;
        last.back() = '0';
        CHECK_FALSE(key.matches(last));
        std::string first = kHex;
        first.front() = '1';
        CHECK_FALSE(key.matches(first));
        CHECK_FALSE(key.matches(kHex.substr(0, 62)));
        CHECK_FALSE(key.matches(kHex + "00"));
        CHECK_FALSE(key.matches(""));
        CHECK_THROWS_AS(Key::from_hex("abc"), KeyError);
    }

    TEST_CASE("credentials: both headers, each checked") {
        const Key key = Key::from_hex(kHex);
        std::string wrong = kHex;
        wrong[10] = wrong[10] == 'f' ? 'e' : 'f';
        using V = std::vector<std::string>;
        CHECK(check_credentials(key, {}, {}) == AuthResult::Missing);
        CHECK(check_credentials(key, V{kHex}, {}) == AuthResult::Ok);
        CHECK(check_credentials(key, {}, V{"Bearer " + kHex}) == AuthResult::Ok);
        CHECK(check_credentials(key, {}, V{"bearer " + kHex}) == AuthResult::Ok);
        CHECK(check_credentials(key, {}, V{"BEARER   " + kHex}) == AuthResult::Ok);
        CHECK(check_credentials(key, V{kHex}, V{"Bearer " + kHex}) == AuthResult::Ok);
        CHECK(check_credentials(key, V{wrong}, {}) == AuthResult::Wrong);
        CHECK(check_credentials(key, V{kHex}, V{"Bearer " + wrong}) == AuthResult::Wrong);
        CHECK(check_credentials(key, V{wrong}, V{"Bearer " + kHex}) == AuthResult::Wrong);
        CHECK(check_credentials(key, V{kHex.substr(0, 63)}, {}) == AuthResult::Malformed);
        CHECK(check_credentials(key, V{kHex + "a"}, {}) == AuthResult::Malformed);
        CHECK(check_credentials(key, V{std::string(64, 'g')}, {}) == AuthResult::Malformed);
        CHECK(check_credentials(key, V{""}, {}) == AuthResult::Malformed);
        CHECK(check_credentials(key, V{kHex}, V{"Basic " + kHex}) == AuthResult::Malformed);
        CHECK(check_credentials(key, {}, V{"Bearer"}) == AuthResult::Malformed);
        CHECK(check_credentials(key, {}, V{"Bearer" + kHex}) == AuthResult::Malformed);
        CHECK(check_credentials(key, {}, V{kHex}) == AuthResult::Malformed);
        CHECK(check_credentials(key, V{kHex, kHex}, {}) == AuthResult::Ambiguous);
        CHECK(check_credentials(key, {}, V{"Bearer " + kHex, "Bearer " + kHex}) ==
              AuthResult::Ambiguous);
    }

    TEST_CASE("failure limiter: blocks after N failures in the window, then forgives") {
        FailureLimiter lim(3, 10s, 60s);
        const auto t0 = FailureLimiter::Clock::now();
        CHECK_FALSE(lim.blocked_for("a", t0));
        CHECK_FALSE(lim.record_failure("a", t0));
        CHECK_FALSE(lim.record_failure("a", t0 + 1s));
        CHECK(lim.record_failure("a", t0 + 2s)); // third: blocked now
        REQUIRE(lim.blocked_for("a", t0 + 3s));
        CHECK(*lim.blocked_for("a", t0 + 3s) == 59s);
        CHECK_FALSE(lim.blocked_for("b", t0 + 3s)); // per address
        CHECK(lim.blocked_count(t0 + 3s) == 1);
        CHECK_FALSE(lim.blocked_for("a", t0 + 63s)); // block over
        CHECK(lim.blocked_count(t0 + 63s) == 0);
    }

    TEST_CASE("failure limiter: failures outside the window do not add up") {
        FailureLimiter lim(3, 10s, 60s);
        const auto t0 = FailureLimiter::Clock::now();
        lim.record_failure("a", t0);
        lim.record_failure("a", t0 + 5s);
        CHECK_FALSE(lim.record_failure("a", t0 + 20s)); // new window
        CHECK_FALSE(lim.blocked_for("a", t0 + 20s));
    }

    TEST_CASE("failure limiter: a success clears the count") {
        FailureLimiter lim(2, 10s, 60s);
        const auto t0 = FailureLimiter::Clock::now();
        lim.record_failure("a", t0);
        lim.record_success("a");
        CHECK_FALSE(lim.record_failure("a", t0));
        CHECK(lim.record_failure("a", t0));
    }

    TEST_CASE("failure limiter: memory stays bounded under many addresses") {
        FailureLimiter lim(2, 10s, 60s, 16);
        const auto t0 = FailureLimiter::Clock::now();
        for (int i = 0; i < 1000; ++i) {
            lim.record_failure("10.0.0." + std::to_string(i), t0);
            lim.record_failure("10.0.0." + std::to_string(i), t0);
        }
        CHECK(lim.blocked_count(t0) <= 16);
        CHECK(lim.blocked_for("10.0.0.999", t0)); // the newest survive
    }

} // TEST_SUITE
