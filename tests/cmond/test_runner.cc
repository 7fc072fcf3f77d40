// SPDX-License-Identifier: MIT
// The command runner: exit codes, capture, caps, timeouts that take the whole process group,
// exec failures, descriptor and signal hygiene, and descendants that leave the command's group or
// session (setsid, daemons), which must die with their run all the same. Test scripts use
// /bin/sh; cmond itself never does.
#include "helpers.h"
#include "runner.h"

#include <doctest/doctest.h>

#include <atomic>
#include <csignal>
#include <dirent.h>
#include <sstream>
#include <sys/wait.h>
#include <thread>

using namespace cmond;
using testing::TempDir;
using namespace std::chrono_literals;

namespace {

RunSpec sh(const std::string& script, std::chrono::milliseconds timeout = 10s,
           std::size_t cap = 1 << 20) {
    return {{"/bin/sh", "-c", script}, "", timeout, 500ms, cap};
}

pid_t read_pid(const std::string& path) {
    const std::string s = testing::read_file(path);
    return s.empty() ? -1 : static_cast<pid_t>(std::stol(s));
}

// Live (not zombie) processes whose session is `sid`, from /proc/PID/stat.
std::vector<pid_t> session_members(pid_t sid) {
    std::vector<pid_t> found;
    DIR* proc = ::opendir("/proc");
    if (proc == nullptr) {
        return found;
    }
    while (const dirent* e = ::readdir(proc)) {
        const std::string name = e->d_name;
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        const std::string stat = testing::read_file("/proc/" + name + "/stat");
        const auto paren = stat.rfind(')');
        if (paren == std::string::npos) {
            continue;
        }
        std::istringstream in(stat.substr(paren + 2));
        char state = 0;
        long ppid = 0, pgrp = 0, session = 0;
        in >> state >> ppid >> pgrp >> session;
        if (in && session == sid && state != 'Z' && state != 'X') {
            found.push_back(static_cast<pid_t>(std::stol(name)));
        }
    }
    ::closedir(proc);
    return found;
}

// A shell snippet that starts `body` in a new session (setsid) in the background, with the pid
// of that session's first process written to `pidfile` (`body` runs as that process), and
// returns only once the pid file is there.
std::string escapee(const std::string& pidfile, const std::string& body = "exec sleep 300") {
    return "setsid sh -c 'echo $$ > " + pidfile + "; " + body + "' & while [ ! -s " + pidfile +
           " ]; do sleep 0.01; done; ";
}

// Kills, at the end of a test, whatever is left of the sessions a test's commands started, so
// that a failing test (or the runner before issue 13) leaves nothing running. Also the check:
// gone() says whether every process of a session has ended.
class Sessions {
public:
    Sessions() = default;
    Sessions(const Sessions&) = delete;
    Sessions& operator=(const Sessions&) = delete;
    ~Sessions() {
        for (const pid_t sid : sids_) {
            for (const pid_t p : session_members(sid)) {
                ::kill(p, SIGKILL);
            }
        }
    }
    /// Remembers the session whose leader's pid is in `pidfile`; returns it (-1: none).
    pid_t add(const std::string& pidfile) { return add_sid(read_pid(pidfile)); }
    pid_t add_sid(pid_t sid) {
        if (sid > 0) {
            sids_.push_back(sid);
        }
        return sid;
    }
    /// True when no process of session `sid` is left (polled for up to `limit`).
    static bool gone(pid_t sid, std::chrono::milliseconds limit = std::chrono::seconds(2)) {
        return testing::eventually([&] { return session_members(sid).empty(); }, limit);
    }

private:
    std::vector<pid_t> sids_;
};

// Open descriptors of this process.
std::size_t open_fds() {
    std::size_t n = 0;
    DIR* d = ::opendir("/proc/self/fd");
    while (d != nullptr && ::readdir(d) != nullptr) {
        ++n;
    }
    if (d != nullptr) {
        ::closedir(d);
    }
    return n;
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

    TEST_CASE("output cap: reading stops there, the pipe is closed as by `| head -c N`") {
        Runner r;
        // A command that ignores SIGPIPE gets EPIPE and keeps its own exit status.
        auto res = r.run(sh(
            "trap '' PIPE; head -c 1000000 /dev/zero | tr '\\0' a; echo more; exit 4", 10s, 1024));
        CHECK(res.outcome == RunResult::Outcome::Exited);
        CHECK(res.exit_code == 4);
        CHECK(res.output == std::string(1024, 'a'));
        CHECK(res.truncated);
        CHECK_FALSE(res.ended_by_cap);

        // Exactly the cap is not truncated.
        auto exact = r.run(sh("head -c 1024 /dev/zero | tr '\\0' b", 10s, 1024));
        CHECK(exact.ok());
        CHECK(exact.output == std::string(1024, 'b'));
        CHECK_FALSE(exact.truncated);
        CHECK_FALSE(exact.ended_by_cap);
    }

    TEST_CASE("output cap: an endless writer ends at once, not at its timeout") {
        Runner r;
        const auto t0 = std::chrono::steady_clock::now();
        auto res = r.run({{"yes"}, "", 20s, 500ms, 4096});
        CHECK(std::chrono::steady_clock::now() - t0 < 3s);
        CHECK(res.output.size() == 4096);
        CHECK(res.output.substr(0, 4) == "y\ny\n");
        CHECK(res.truncated);
        CHECK(res.outcome == RunResult::Outcome::Signaled);
        CHECK(res.exit_code == 128 + SIGPIPE);
        CHECK(res.ended_by_cap);

        // Through a shell, which reports its child's SIGPIPE as exit status 141.
        const auto t1 = std::chrono::steady_clock::now();
        auto shell = r.run(sh("yes; exit $?", 20s, 100));
        CHECK(std::chrono::steady_clock::now() - t1 < 3s);
        CHECK(shell.output.size() == 100);
        CHECK(shell.truncated);
        CHECK(shell.outcome == RunResult::Outcome::Exited);
        CHECK(shell.exit_code == 128 + SIGPIPE);
        CHECK(shell.ended_by_cap);
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
        CHECK(testing::eventually([&] { return !cmond_test::process_alive(grandchild); }, 2s));
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
        CHECK(testing::eventually([&] { return !cmond_test::process_alive(bg); }, 2s));
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
        REQUIRE(testing::eventually([&] { return r.running() == 1; }, 5s));
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

    // ---- Descendants that leave the command's process group or session (issue 13) ----

    TEST_CASE("a setsid background child dies when the command ends") {
        TempDir dir;
        const std::string pidfile = dir.file("escapee.pid");
        Sessions sessions;
        Runner r;
        const auto t0 = std::chrono::steady_clock::now();
        // The escapee keeps the output pipe open, so the runner lingers kLinger first.
        auto res = r.run(sh(escapee(pidfile) + "echo done"));
        const pid_t sid = sessions.add(pidfile);
        CHECK(res.ok());
        CHECK(res.output == "done\n");
        CHECK(std::chrono::steady_clock::now() - t0 < 3s);
        REQUIRE(sid > 0);
        CHECK(Sessions::gone(sid));
    }

    TEST_CASE("a daemon (fork, setsid, fork, middle exits) dies when the command ends") {
        TempDir dir;
        const std::string pidfile = dir.file("daemon.pid");
        // $1: the pid file; $2: the stage. The daemon's parent exits, so it is an orphan in a
        // session of its own, with its descriptors closed: nothing links it to the command.
        const auto daemon = dir.write("daemon.sh",
                                      "#!/bin/sh\n"
                                      "if [ \"$2\" = daemon ]; then\n"
                                      "    echo $$ > \"$1\"; exec sleep 300\n"
                                      "elif [ \"$2\" = middle ]; then\n"
                                      "    \"$0\" \"$1\" daemon </dev/null >/dev/null 2>&1 &\n"
                                      "    while [ ! -s \"$1\" ]; do sleep 0.01; done\n"
                                      "else\n"
                                      "    setsid \"$0\" \"$1\" middle\n"
                                      "    echo started\n"
                                      "fi\n",
                                      0755);
        Sessions sessions;
        Runner r;
        const auto t0 = std::chrono::steady_clock::now();
        auto res = r.run({{daemon, pidfile}, "", 10s, 500ms, 4096});
        const pid_t pid = read_pid(pidfile);
        CHECK(res.ok());
        CHECK(res.output == "started\n");
        // Nothing holds the pipe: no linger.
        CHECK(std::chrono::steady_clock::now() - t0 < Runner::kLinger + 1s);
        REQUIRE(pid > 0);
        const std::string stat = testing::read_file("/proc/" + std::to_string(pid) + "/stat");
        // The daemon's session is the one its middle process made; kill that at the end.
        const auto paren = stat.rfind(')');
        if (paren != std::string::npos) {
            std::istringstream in(stat.substr(paren + 2));
            char state = 0;
            long ppid = 0, pgrp = 0, session = 0;
            in >> state >> ppid >> pgrp >> session;
            sessions.add_sid(static_cast<pid_t>(session));
        }
        CHECK(testing::eventually([&] { return !cmond_test::process_alive(pid); }, 2s));
    }

    TEST_CASE("a timeout takes the escaped descendants too") {
        TempDir dir;
        const std::string pidfile = dir.file("escapee.pid");
        Sessions sessions;
        Runner r;
        auto res = r.run(sh(escapee(pidfile, "trap \"\" TERM; exec sleep 300 >/dev/null 2>&1") +
                                "echo started; sleep 30",
                            500ms));
        const pid_t sid = sessions.add(pidfile);
        CHECK(res.outcome == RunResult::Outcome::TimedOut);
        CHECK(res.output == "started\n");
        CHECK(res.duration < 5s);
        REQUIRE(sid > 0);
        CHECK(Sessions::gone(sid));
    }

    TEST_CASE("kill_all takes the escaped descendants too") {
        TempDir dir;
        const std::string pidfile = dir.file("escapee.pid");
        Sessions sessions;
        Runner r;
        RunResult res;
        std::thread t([&] { res = r.run(sh(escapee(pidfile) + "sleep 30")); });
        REQUIRE(testing::eventually([&] { return read_pid(pidfile) > 0; }, 5s));
        const pid_t sid = sessions.add(pidfile);
        r.kill_all();
        t.join();
        CHECK(res.outcome == RunResult::Outcome::Killed);
        CHECK(res.exit_code == 128 + SIGKILL);
        CHECK(r.running() == 0);
        CHECK(Sessions::gone(sid));
    }

    TEST_CASE("an escaped descendant that keeps forking while it is killed") {
        TempDir dir;
        const std::string pidfile = dir.file("forker.pid");
        Sessions sessions;
        Runner r;
        // 300 children, started as fast as the shell can; the run ends while it is at it.
        auto res = r.run(sh(escapee(pidfile, "i=0; while [ $i -lt 300 ]; do sleep 300 & "
                                             "i=$((i+1)); done >/dev/null 2>&1; wait") +
                            "echo done"));
        const pid_t sid = sessions.add(pidfile);
        CHECK(res.ok());
        REQUIRE(sid > 0);
        CHECK(Sessions::gone(sid, 5s));
    }

    TEST_CASE("when cmond dies, the processes of its runs die too") {
        TempDir dir;
        const std::string command_pid = dir.file("command.pid");
        const std::string escapee_pid = dir.file("escapee.pid");
        Sessions sessions;
        // A stand-in for cmond: a child of this test (single-threaded here) that runs a command
        // and is killed with SIGKILL while it runs.
        const pid_t daemon = ::fork();
        REQUIRE(daemon >= 0);
        if (daemon == 0) {
            Runner r;
            r.run(sh("echo $$ > " + command_pid + "; " + escapee(escapee_pid) + "sleep 30"));
            ::_exit(0);
        }
        const bool started = testing::eventually(
            [&] { return read_pid(command_pid) > 0 && read_pid(escapee_pid) > 0; }, 5s);
        const pid_t command_sid = sessions.add(command_pid); // the command leads its session
        const pid_t escapee_sid = sessions.add(escapee_pid);
        ::kill(daemon, SIGKILL);
        int status = 0;
        ::waitpid(daemon, &status, 0);
        REQUIRE(started);
        CHECK(Sessions::gone(command_sid));
        CHECK(Sessions::gone(escapee_sid));
    }

    TEST_CASE("concurrent runs: ending one run kills its tree only") {
        TempDir dir;
        Sessions sessions;
        Runner r;
        // A long run with an escapee, which waits for `release`.
        const std::string long_pid = dir.file("long.pid");
        const std::string release = dir.file("release");
        RunResult long_res;
        std::thread long_run([&] {
            long_res = r.run(sh(escapee(long_pid) + "while [ ! -e " + release +
                                " ]; do sleep 0.01; done; echo long"));
        });
        REQUIRE(testing::eventually([&] { return read_pid(long_pid) > 0; }, 5s));
        const pid_t long_sid = sessions.add(long_pid);

        // Short runs on four threads at once, each with its own escapee.
        constexpr int kShort = 4;
        std::vector<RunResult> short_res(kShort);
        std::vector<std::thread> threads;
        for (int i = 0; i < kShort; ++i) {
            threads.emplace_back([&, i] {
                const std::string pidfile = dir.file("short" + std::to_string(i) + ".pid");
                short_res[i] = r.run(sh(escapee(pidfile) + "echo short " + std::to_string(i)));
            });
        }
        for (auto& t : threads) {
            t.join();
        }
        for (int i = 0; i < kShort; ++i) {
            CHECK(short_res[i].ok());
            CHECK(short_res[i].output == "short " + std::to_string(i) + "\n");
            const pid_t sid = sessions.add(dir.file("short" + std::to_string(i) + ".pid"));
            REQUIRE(sid > 0);
            CHECK(Sessions::gone(sid));
        }
        // The long run and its escapee are untouched.
        CHECK(r.running() == 1);
        CHECK_FALSE(session_members(long_sid).empty());

        dir.write("release", "");
        long_run.join();
        CHECK(long_res.ok());
        CHECK(long_res.output == "long\n");
        CHECK(Sessions::gone(long_sid));
        CHECK(r.running() == 0);
    }

    TEST_CASE("no descriptor is left behind") {
        Runner r;
        const std::size_t before = open_fds();
        for (int i = 0; i < 20; ++i) {
            r.run(sh("echo hi"));
            r.run({{"yes"}, "", 5s, 500ms, 16});
            r.run({{"/nonexistent/program"}, "", 5s, 500ms, 16});
            r.run(sh("sleep 5", 50ms));
        }
        CHECK(open_fds() == before);
    }

} // TEST_SUITE
