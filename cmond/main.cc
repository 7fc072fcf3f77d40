// SPDX-License-Identifier: MIT
// cmond's entry point: flags and config file -> Config, the key, signals, then the Server.
// Process-level plumbing only; the logic lives in the other files.
//
// Signals: SIGINT and SIGTERM are blocked in every thread and taken by a watcher thread with
// sigtimedwait: the first starts a graceful stop, a second kills running commands at once.
// SIGPIPE is ignored (a client that hangs up must not kill the daemon).
// POST /restart ends run() with RunOutcome::Restart: after every object (and the key) is gone,
// cmond re-executes /proc/self/exe with its original argv, or exits with restart_exit_code.
#include "auth.h"
#include "config.h"
#include "log.h"
#include "server.h"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <linux/close_range.h>
#include <optional>
#include <pthread.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

#ifndef CMOND_VERSION
#    define CMOND_VERSION "unknown"
#endif

namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitConfig = 2;

enum class Next { Exit, Reexec };

// Runs the daemon; returns what main does next and sets the exit status.
Next serve(const cmond::Config& config, bool check_only, const sigset_t& stop_signals,
           int& status) {
    using namespace cmond;
    std::optional<Key> key;
    try {
        key.emplace(Key::load(config.key_file));
    } catch (const KeyError& e) {
        log::error(e.what());
        status = kExitConfig;
        return Next::Exit;
    }
    std::optional<Server> server;
    try {
        server.emplace(config, std::move(*key));
    } catch (const ConfigError& e) {
        log::error(std::string("config error: ") + e.what());
        status = kExitConfig;
        return Next::Exit;
    }
    key.reset();
    if (check_only) {
        std::printf("cmond: configuration OK\n");
        status = 0;
        return Next::Exit;
    }
    int port = 0;
    try {
        port = server->bind();
    } catch (const StartupError& e) {
        log::error(e.what());
        status = kExitRuntime;
        return Next::Exit;
    }
    const bool v6 = config.bind.find(':') != std::string::npos;
    const std::string url = std::string(config.tls() ? "https" : "http") + "://" +
                            (v6 ? "[" + config.bind + "]" : config.bind) + ":" +
                            std::to_string(port);
    log::info("listening on " + url + " (pid " + std::to_string(::getpid()) + ")");
    // One machine-readable line on stdout, for launchers and tests (--port 0).
    std::printf("cmond: listening on %s\n", url.c_str());
    std::fflush(stdout);

    std::atomic<bool> done{false};
    std::thread watcher([&] {
        int seen = 0;
        const timespec tick{0, 100'000'000};
        while (!done.load()) {
            siginfo_t info{};
            const int sig = ::sigtimedwait(&stop_signals, &info, &tick);
            if (sig < 0) {
                continue;
            }
            if (++seen == 1) {
                log::info(std::string("received ") + ::strsignal(sig) + ": stopping");
                server->request_stop();
            } else {
                log::warning(std::string("received ") + ::strsignal(sig) +
                             " again: killing running commands");
                server->kill_commands();
            }
        }
    });
    const RunOutcome outcome = server->run();
    done = true;
    watcher.join();
    server.reset();

    switch (outcome) {
    case RunOutcome::Stopped:
        log::info("stopped");
        status = 0;
        return Next::Exit;
    case RunOutcome::Failed:
        status = kExitRuntime;
        return Next::Exit;
    case RunOutcome::Restart:
        if (config.restart_mode == RestartMode::Exit) {
            log::info("restart: exiting with status " + std::to_string(config.restart_exit_code) +
                      " for the supervisor");
            status = config.restart_exit_code;
            return Next::Exit;
        }
        return Next::Reexec;
    }
    return Next::Exit;
}

} // namespace

int main(int argc, char** argv) {
    // Before any thread exists, so that every thread inherits the mask.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    cmond::Invocation inv;
    try {
        inv = cmond::parse_command_line(argc, argv);
    } catch (const cmond::ConfigError& e) {
        std::fprintf(stderr, "cmond: %s\n", e.what());
        return kExitConfig;
    }
    switch (inv.action) {
    case cmond::Action::Help:
        std::fputs(cmond::help_text().c_str(), stdout);
        return 0;
    case cmond::Action::Version:
        std::printf("cmond %s\n", CMOND_VERSION);
        return 0;
    case cmond::Action::Run:
    case cmond::Action::CheckConfig:
        break;
    }
    const bool check_only = inv.action == cmond::Action::CheckConfig;
    cmond::log::init(inv.config.log_level, inv.config.syslog && !check_only);

    int status = 0;
    if (serve(inv.config, check_only, stop_signals, status) == Next::Exit) {
        cmond::log::shutdown();
        return status;
    }
    cmond::log::info("restart: re-executing /proc/self/exe");
    cmond::log::shutdown();
    // Descriptors above stderr must not leak into the new image (accepted sockets are not
    // close-on-exec). The signal mask and pending signals carry over, which is what we want.
    ::syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
    ::execv("/proc/self/exe", argv);
    std::fprintf(stderr, "cmond: restart: execv /proc/self/exe failed: %s\n", std::strerror(errno));
    return kExitRuntime;
}
