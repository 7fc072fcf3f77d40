// SPDX-License-Identifier: MIT
// Key file checks, credential parsing and the failure limiter.
#include "auth.h"
#include "helpers.h"
#include "http_env.h"

#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <future>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

using namespace cmond;
using testing::TempDir;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

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
        CHECK(load_error(dir.file("d")).find("not a regular file (a directory)") !=
              std::string::npos);
        CHECK(load_error("/dev/null") ==
              "key file '/dev/null': not a regular file (a character device)");
    }

    TEST_CASE("key file: a FIFO is refused at once, not waited on") {
        TempDir dir;
        const std::string fifo = dir.file("fifo");
        REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
        REQUIRE(::symlink(fifo.c_str(), dir.file("link").c_str()) == 0);
        // Directly, and through a symlink (what counts is the file at the end).
        for (const std::string& path : {fifo, dir.file("link")}) {
            CAPTURE(path);
            // On a thread, so that a loader that waits for a writer fails this test instead of
            // hanging it: after the bound, a writer comes and goes, which lets the loader return.
            auto loading = std::async(std::launch::async, [&] { return load_error(path); });
            const bool quick = loading.wait_for(2s) == std::future_status::ready;
            if (!quick) {
                const int w = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
                if (w >= 0) {
                    ::close(w);
                }
            }
            CHECK_MESSAGE(quick, "Key::load waited on a FIFO");
            CHECK(loading.get() == "key file '" + path + "': not a regular file (a FIFO)");
        }
    }

    TEST_CASE("key file: a symlink to a good key file is accepted") {
        // Secrets mounted by an orchestrator are often symlinks (Kubernetes' ..data/).
        TempDir dir;
        const auto real = dir.write("real.key", kHex + "\n", 0600);
        REQUIRE(::symlink(real.c_str(), dir.file("client_secret.key").c_str()) == 0);
        CHECK(Key::load(dir.file("client_secret.key")).matches(kHex));
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

// The real binary (CMOND_BIN): SIGINT/SIGTERM are taken from the first line of main(), so a
// start-up that does not finish can still be stopped.
TEST_SUITE("startup") {

    using cmond_test::Daemon;
    using cmond_test::Env;
    using cmond_test::Process;

    // cmond with `args`, not waited for (Daemon waits for the listening line).
    Process start_cmond(const TempDir& dir, std::vector<std::string> args) {
        args.insert(args.begin(), cmond_test::required_env("CMOND_BIN"));
        for (const char* a : {"--port", "0", "--syslog", "false"}) {
            args.emplace_back(a);
        }
        return Process(args, {}, dir.file("cmond.stderr"));
    }

    // True once `pid`'s main thread blocks SIGTERM: cmond's main() has begun. (Before that the
    // default action applies: a SIGTERM during exec or dynamic loading just kills it.)
    bool blocks_sigterm(pid_t pid) {
        const std::string status = testing::read_file("/proc/" + std::to_string(pid) + "/status");
        const auto pos = status.find("SigBlk:");
        if (pos == std::string::npos) {
            return false;
        }
        const unsigned long long mask = std::stoull(status.substr(pos + 7), nullptr, 16);
        return (mask >> (SIGTERM - 1) & 1) != 0;
    }

    TEST_CASE("a FIFO for a config is refused at once, not waited on") {
        // Opening a FIFO nobody writes used to hold start-up (SIGTERM still stopped it); the
        // config, key and TLS files are now stat'ed before they are opened and must be regular
        // files, so start-up cannot get stuck on one. Both modes refuse it within the limit.
        for (const bool check_only : {false, true}) {
            CAPTURE(check_only);
            TempDir dir;
            const std::string fifo = dir.file("cmond.conf");
            REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
            std::vector<std::string> args = {"--config", fifo};
            if (check_only) {
                args.emplace_back("--check-config");
            }
            Process p = start_cmond(dir, args);
            const auto t0 = Clock::now();
            CHECK(p.finish(5s).value_or(-1) == 2);
            CHECK(Clock::now() - t0 < 3s);
            const std::string err = testing::read_file(dir.file("cmond.stderr"));
            CHECK_MESSAGE(err.find("config '" + fifo + "': not a regular file (a FIFO)") !=
                              std::string::npos,
                          err);
        }
    }

    TEST_CASE("SIGTERM at any point of start-up is a clean stop") {
        TempDir dir;
        dir.write("client_secret.key", cmond_test::random_key_hex(), 0600);
        // Absolute paths: Process runs it in this test's working directory.
        const auto conf = dir.write("cmond.conf", "key_file = " + dir.file("client_secret.key") +
                                                      "\n[command health]\nargv = [\"true\"]\n");
        for (const int delay_ms : {0, 1, 2, 5, 10, 20, 40}) {
            CAPTURE(delay_ms);
            Process p = start_cmond(dir, {"--config", conf});
            REQUIRE(testing::eventually([&] { return blocks_sigterm(p.pid()); }, 5s));
            std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
            const auto t0 = Clock::now();
            ::kill(p.pid(), SIGTERM);
            CHECK(p.finish(5s).value_or(-1) == 0);
            CHECK(Clock::now() - t0 < 3s);
            const std::string err = testing::read_file(dir.file("cmond.stderr"));
            // "stopped during start-up", or "stopped" after serving.
            CHECK_MESSAGE(err.find(" info stopped") != std::string::npos, err);
        }
    }

    TEST_CASE("SIGTERM while a restart drains: cmond stops instead of coming back") {
        Env env;
        // /health runs long enough for the restart to be draining when the signal comes.
        env.dir.write("cmond.conf", R"(key_file = client_secret.key
shutdown_timeout = 10s
[command health]
argv = ["/bin/sleep", "2"]
)");
        Daemon d(env.dir, env.args());
        REQUIRE_MESSAGE(d.started(), d.err());
        auto slow = std::async(std::launch::async, [&] {
            auto r = cmond_test::client(d).Get("/health", env.auth());
            return r ? r->status : -1;
        });
        std::this_thread::sleep_for(500ms); // the GET is running its command
        auto restart = cmond_test::client(d).Post("/restart", env.auth(), "", "text/plain");
        REQUIRE(restart);
        CHECK(restart->status == 200);
        d.signal(SIGTERM);
        CHECK(d.wait_exit(15s).value_or(-1) == 0);
        CHECK(slow.get() == 200);
        const std::string err = d.err();
        CHECK_MESSAGE(err.find("restart: stop requested by a signal meanwhile: exiting") !=
                          std::string::npos,
                      err);
        CHECK(err.find("re-executing") == std::string::npos);
    }

} // TEST_SUITE
