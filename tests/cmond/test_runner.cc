// SPDX-License-Identifier: MIT
// The command runner: exit codes, capture, caps, timeouts that take the whole process group,
// exec failures, descriptor and signal hygiene. Test scripts use /bin/sh; cmond itself never does.
#include "helpers.h"
#include "runner.h"

#include <doctest/doctest.h>

#include <atomic>
#include <csignal>
#include <sstream>
#include <thread>

using namespace cmond;
using cmond_test::TempDir;
using namespace std::chrono_literals;

namespace {

RunSpec sh(const std::string& script, std::chrono::milliseconds timeout = 10s,
           std::size_t cap = 1 << 20) {
    return {{"/bin/sh", "-c", script}, "", timeout, 500ms, cap};
}

pid_t read_pid(const std::string& path) {
    const std::string s = cmond_test::read_file(path);
    return s.empty() ? -1 : static_cast<pid_t>(std::stol(s));
}

} // namespace

TEST_SUITE("runner") {

    TEST_CASE("exit status and interleaved stdout/stderr") {
        Runner r;
        auto ok = r.run(sh("echo out; echo err >&2"));
        CHECK(ok.outcome == RunResult::Outcome::Exited);
        CHECK(ok.exit_code == 0);
        CHECK(ok.ok());
        CHECK(ok.output == "out\nerr\n");
        CHECK_FALSE(ok.truncated);
        CHECK(ok.duration > 0ns);

        auto three = r.run(sh("echo failing; exit 3"));
        CHECK(three.outcome == RunResult::Outcome::Exited);
        CHECK(three.exit_code == 3);
        CHECK_FALSE(three.ok());
        CHECK(three.output == "failing\n");
    }

    TEST_CASE("arguments reach the program verbatim, no shell in between") {
        Runner r;
        auto res = r.run({{"/usr/bin/printf", "%s|", "main; rm -rf /", "$(id)", "`id`", "a b", "*"},
                          "",
                          5s,
                          500ms,
                          4096});
        CHECK(res.ok());
        CHECK(res.output == "main; rm -rf /|$(id)|`id`|a b|*|");
    }

    TEST_CASE("PATH lookup for a bare program name") {
        Runner r;
        auto res = r.run({{"echo", "found"}, "", 5s, 500ms, 4096});
        CHECK(res.ok());
        CHECK(res.output == "found\n");
    }

    TEST_CASE("a program that cannot be started gives 127 and a reason") {
        Runner r;
        auto res = r.run({{"/nonexistent/program"}, "", 5s, 500ms, 4096});
        CHECK(res.outcome == RunResult::Outcome::SpawnFailed);
        CHECK(res.exit_code == 127);
        CHECK(res.error.find("/nonexistent/program") != std::string::npos);
        CHECK(res.error.find("No such file") != std::string::npos);

        auto bare = r.run({{"no-such-program-cmond-test"}, "", 5s, 500ms, 4096});
        CHECK(bare.outcome == RunResult::Outcome::SpawnFailed);
        CHECK(bare.exit_code == 127);

        TempDir dir;
        const auto noexec = dir.write("noexec.sh", "#!/bin/sh\necho hi\n", 0644);
        auto denied = r.run({{noexec}, "", 5s, 500ms, 4096});
        CHECK(denied.outcome == RunResult::Outcome::SpawnFailed);
        CHECK(denied.error.find("Permission denied") != std::string::npos);

        auto nodir = r.run({{"/bin/true"}, "/nonexistent/dir", 5s, 500ms, 4096});
        CHECK(nodir.outcome == RunResult::Outcome::SpawnFailed);
        CHECK(nodir.error.find("/nonexistent/dir") != std::string::npos);
    }

    TEST_CASE("working directory and relative scripts") {
        TempDir dir;
        dir.write("deploy.sh", "#!/bin/sh\necho \"deploy $1 in $(pwd)\"\n", 0755);
        Runner r;
        auto res = r.run({{"./deploy.sh", "main"}, dir.path(), 5s, 500ms, 4096});
        CHECK(res.ok());
        CHECK(res.output == "deploy main in " + dir.path() + "\n");
    }

    TEST_CASE("output over the cap is dropped, the command still completes") {
        Runner r;
        auto res = r.run(sh("head -c 1000000 /dev/zero | tr '\\0' a; echo; exit 4", 10s, 1024));
        CHECK(res.outcome == RunResult::Outcome::Exited);
        CHECK(res.exit_code == 4);
        CHECK(res.output == std::string(1024, 'a'));
        CHECK(res.truncated);
    }

    TEST_CASE("timeout: the whole process group dies, grandchildren included") {
        TempDir dir;
        const std::string pidfile = dir.file("grandchild.pid");
        Runner r;
        const auto t0 = std::chrono::steady_clock::now();
        // The grandchild ignores SIGTERM, so only the SIGKILL to the group can end it.
        auto res = r.run(
            sh("(trap '' TERM; exec sleep 30) & echo $! > " + pidfile + "; echo started; wait",
               300ms));
        const auto took = std::chrono::steady_clock::now() - t0;
        CHECK(res.outcome == RunResult::Outcome::TimedOut);
        CHECK(res.exit_code > 128);
        CHECK(res.output == "started\n");
        CHECK(took < 5s);
        CHECK(took >= 300ms);
        const pid_t grandchild = read_pid(pidfile);
        REQUIRE(grandchild > 0);
        CHECK(cmond_test::eventually([&] { return !cmond_test::process_alive(grandchild); }, 2s));
    }

    TEST_CASE("timeout: SIGTERM first, so a cooperative command can clean up") {
        Runner r;
        auto res = r.run(sh("trap 'echo cleaned; exit 0' TERM; sleep 30 & wait", 200ms));
        CHECK(res.outcome == RunResult::Outcome::TimedOut);
        CHECK(res.output == "cleaned\n");
        CHECK(res.duration < 2s);
    }

    TEST_CASE("leftovers of a finished command are killed; the runner does not wait for them") {
        TempDir dir;
        const std::string pidfile = dir.file("bg.pid");
        Runner r;
        const auto t0 = std::chrono::steady_clock::now();
        auto res = r.run(sh("sleep 30 & echo $! > " + pidfile + "; echo done"));
        CHECK(res.ok());
        CHECK(res.output == "done\n");
        CHECK(std::chrono::steady_clock::now() - t0 < 3s);
        const pid_t bg = read_pid(pidfile);
        REQUIRE(bg > 0);
        CHECK(cmond_test::eventually([&] { return !cmond_test::process_alive(bg); }, 2s));
    }

    TEST_CASE("killed by a signal it raised itself") {
        Runner r;
        auto res = r.run(sh("kill -9 $$"));
        CHECK(res.outcome == RunResult::Outcome::Signaled);
        CHECK(res.exit_code == 128 + SIGKILL);
    }

    TEST_CASE("children start clean: stdin empty, no inherited descriptors, default signals") {
        Runner r;
        CHECK(r.run(sh("cat")).output.empty()); // stdin is /dev/null, not a hang
        // Only 0, 1, 2 (and ls's own directory handle) are open in the child.
        auto fds = r.run({{"/bin/ls", "/proc/self/fd"}, "", 5s, 500ms, 4096});
        CHECK(fds.output == "0\n1\n2\n3\n");
        // An ignored SIGPIPE or a blocked SIGTERM in the parent must not reach the child.
        std::signal(SIGPIPE, SIG_IGN);
        sigset_t term;
        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &term, nullptr);
        auto sig = r.run(sh("grep -E '^(SigBlk|SigIgn)' /proc/self/status"));
        pthread_sigmask(SIG_UNBLOCK, &term, nullptr);
        std::signal(SIGPIPE, SIG_DFL);
        CHECK(sig.output.find("SigBlk:\t0000000000000000") != std::string::npos);
        // Signals 1..31 only: glibc's posix_spawn leaves its two internal real-time signals (32,
        // 33) ignored, and no program uses those.
        const auto ign = sig.output.find("SigIgn:\t");
        REQUIRE(ign != std::string::npos);
        CHECK_MESSAGE((std::stoull(sig.output.substr(ign + 8, 16), nullptr, 16) & 0x7fffffffULL) ==
                          0,
                      sig.output);
        // Its own session: no controlling terminal to prompt on.
        auto sid = r.run(sh("awk '{print $6}' /proc/$$/stat; echo $$"));
        std::istringstream in(sid.output);
        long s = 0, p = 0;
        in >> s >> p;
        CHECK(s == p);
    }

    TEST_CASE("environment: inherited, except LD_PRELOAD, which comes only from the spec") {
        // As when cmond is started preloaded (arena-run, LD_PRELOAD=libarena.so).
        REQUIRE(::setenv("LD_PRELOAD", "/nonexistent/cmond-test-preload.so", 1) == 0);
        REQUIRE(::setenv("CMOND_TEST_MARK", "kept", 1) == 0);
        Runner r;
        const std::string script = "echo \"[${LD_PRELOAD-unset}] [$CMOND_TEST_MARK]\"";
        auto plain = r.run(sh(script));
        CHECK(plain.ok());
        CHECK(plain.output == "[unset] [kept]\n");

        RunSpec spec = sh(script);
        spec.ld_preload = "/nonexistent/configured.so";
        auto configured = r.run(spec);
        CHECK(configured.ok());
        // ld.so complains that it cannot load it, then the shell runs and shows the value.
        CHECK(configured.output.find("[/nonexistent/configured.so] [kept]\n") != std::string::npos);
        CHECK(configured.output.find("cmond-test-preload") == std::string::npos);
        ::unsetenv("LD_PRELOAD");
        ::unsetenv("CMOND_TEST_MARK");
    }

    TEST_CASE("kill_all ends running commands as Killed; stop_accepting refuses new ones") {
        Runner r;
        RunResult res;
        std::thread t([&] { res = r.run(sh("sleep 30")); });
        REQUIRE(cmond_test::eventually([&] { return r.running() == 1; }, 5s));
        r.stop_accepting();
        r.kill_all();
        t.join();
        CHECK(res.outcome == RunResult::Outcome::Killed);
        CHECK(res.exit_code == 128 + SIGKILL);
        CHECK(r.running() == 0);
        auto refused = r.run(sh("echo hi"));
        CHECK(refused.outcome == RunResult::Outcome::SpawnFailed);
        CHECK(refused.error == "cmond is shutting down");
    }

    TEST_CASE("many commands at once, from many threads") {
        Runner r;
        std::vector<std::thread> threads;
        std::atomic<int> good{0};
        for (int i = 0; i < 16; ++i) {
            threads.emplace_back([&, i] {
                for (int j = 0; j < 10; ++j) {
                    auto res =
                        r.run({{"/bin/echo", std::to_string(i * 100 + j)}, "", 5s, 500ms, 64});
                    good += res.ok() && res.output == std::to_string(i * 100 + j) + "\n";
                }
            });
        }
        for (auto& t : threads) {
            t.join();
        }
        CHECK(good == 160);
        CHECK(r.running() == 0);
    }

} // TEST_SUITE
