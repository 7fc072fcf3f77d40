// SPDX-License-Identifier: MIT
// cmond's entry point: flags and config file -> Config, the key, signals, then the Server.
// Process-level plumbing only; the logic lives in the other files.
//
// Signals: SIGINT and SIGTERM are blocked in every thread from the first line of main() and
// taken by a watcher thread with sigtimedwait, from before the config file or the key is opened
// until the server has stopped. Once the server exists, the first starts a graceful stop and a
// second kills running commands at once. Before that (start-up: reading the config and the key,
// loading TLS files, binding), a signal is a clean stop: main notices it at its next step and
// exits 0 (1 for --check-config, whose check did not finish); should start-up be stuck in a
// system call (a file on a hung file system), the watcher ends the process with that status
// after kStartupGrace. SIGPIPE is ignored (a client that hangs up must not kill the daemon).
// POST /restart ends run() with RunOutcome::Restart: after every object (and the key) is gone,
// cmond re-executes /proc/self/exe with its original argv, or exits with restart_exit_code. A
// SIGINT/SIGTERM received while a restart drains turns it into a stop.
#include "auth.h"
#include "config.h"
#include "log.h"
#include "server.h"

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <linux/close_range.h>
#include <mutex>
#include <optional>
#include <pthread.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

#ifndef CMOND_VERSION
#    error "CMOND_VERSION must be defined by the build (cmond/meson.build)"
#endif

namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitConfig = 2;

// How long start-up may take to notice a stop before the watcher ends the process itself.
constexpr std::chrono::seconds kStartupGrace{1};

// The thread that takes SIGINT and SIGTERM (blocked in every thread) from start-up until the
// server has stopped. The server it acts on is attached once it exists and detached (by
// finish()) before it is destroyed; the mutex makes "no server yet", "this server" and "done"
// the only states the watcher can see.
class SignalWatcher {
public:
    explicit SignalWatcher(const sigset_t& signals)
        : signals_(signals), thread_([this] { watch(); }) {}
    ~SignalWatcher() { finish(); }
    SignalWatcher(const SignalWatcher&) = delete;
    SignalWatcher& operator=(const SignalWatcher&) = delete;

    /// The exit status when start-up is stopped by a signal (default 0).
    void set_startup_status(int status) {
        std::lock_guard lock(mutex_);
        startup_status_ = status;
    }
    int startup_status() {
        std::lock_guard lock(mutex_);
        return startup_status_;
    }

    /// True once a signal has asked cmond to stop.
    bool stop_requested() {
        std::lock_guard lock(mutex_);
        return stop_requested_;
    }

    /// From now on a signal stops `server`. False (and nothing attached) when a stop was
    /// already requested: start-up ends there.
    bool attach(cmond::Server& server) {
        std::lock_guard lock(mutex_);
        if (stop_requested_) {
            return false;
        }
        server_ = &server;
        return true;
    }

    /// Stops watching (call before the server is destroyed). Signals that arrive later stay
    /// pending: they end the process at exit, or stop the re-executed image at its start.
    /// Returns stop_requested().
    bool finish() {
        {
            std::lock_guard lock(mutex_);
            done_ = true;
            server_ = nullptr;
        }
        done_cv_.notify_all();
        if (thread_.joinable()) {
            thread_.join();
        }
        return stop_requested();
    }

private:
    void watch() {
        int seen = 0;
        const timespec tick{0, 100'000'000};
        for (;;) {
            {
                std::lock_guard lock(mutex_);
                if (done_) {
                    return;
                }
            }
            siginfo_t info{};
            const int sig = ::sigtimedwait(&signals_, &info, &tick);
            if (sig < 0) {
                continue;
            }
            std::unique_lock lock(mutex_);
            if (done_) {
                ::kill(::getpid(), sig); // make it pending again; see finish()
                return;
            }
            const std::string name = ::strsignal(sig);
            stop_requested_ = true;
            if (server_ != nullptr) {
                if (++seen == 1) {
                    cmond::log::info("received " + name + ": stopping");
                    server_->request_stop();
                } else {
                    cmond::log::warning("received " + name + " again: killing running commands");
                    server_->kill_commands();
                }
                continue;
            }
            // Start-up: main stops at its next step and calls finish(). Should it be stuck in
            // a system call, there is nothing to drain yet (no connection, no command), so
            // end the process here.
            cmond::log::info("received " + name + " during start-up: stopping");
            if (!done_cv_.wait_for(lock, kStartupGrace, [this] { return done_; })) {
                cmond::log::warning("start-up did not stop within " +
                                    std::to_string(kStartupGrace.count()) + " s: exiting now");
                ::_exit(startup_status_);
            }
            return;
        }
    }

    const sigset_t signals_;
    std::mutex mutex_;
    std::condition_variable done_cv_;
    cmond::Server* server_ = nullptr;
    bool stop_requested_ = false;
    bool done_ = false;
    int startup_status_ = 0;
    std::thread thread_; // last: starts after every other member exists
};

enum class Next { Exit, Reexec };

// Logs a stop during start-up and sets the exit status for it.
Next stopped_at_startup(SignalWatcher& watcher, int& status) {
    cmond::log::info("stopped during start-up");
    status = watcher.startup_status();
    return Next::Exit;
}

// Runs the daemon; returns what main does next and sets the exit status.
Next serve(const cmond::Config& config, bool check_only, SignalWatcher& watcher, int& status) {
    using namespace cmond;
    if (watcher.stop_requested()) {
        return stopped_at_startup(watcher, status);
    }
    std::optional<Key> key;
    try {
        key.emplace(Key::load(config.key_file));
    } catch (const KeyError& e) {
        log::error(e.what());
        status = kExitConfig;
        return Next::Exit;
    }
    if (watcher.stop_requested()) {
        return stopped_at_startup(watcher, status);
    }
    std::optional<Server> server;
    // Declared after `server`, so destroyed first: on every way out, the watcher lets go of the
    // server before it is destroyed.
    struct Detach {
        SignalWatcher& watcher;
        ~Detach() { watcher.finish(); }
    } detach{watcher};
    try {
        server.emplace(config, std::move(*key));
    } catch (const ConfigError& e) {
        log::error(std::string("config error: ") + e.what());
        status = kExitConfig;
        return Next::Exit;
    }
    key.reset();
    if (check_only) {
        if (watcher.stop_requested()) {
            return stopped_at_startup(watcher, status);
        }
        std::printf("cmond: configuration OK\n");
        status = 0;
        return Next::Exit;
    }
    // Attached before bind(): a signal from here on is the server's request_stop(), which
    // run() honours even when it comes before run() starts.
    if (!watcher.attach(*server)) {
        return stopped_at_startup(watcher, status);
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

    const RunOutcome outcome = server->run();
    const bool signalled = watcher.finish();
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
        if (signalled) {
            // A SIGTERM during the drain (systemctl stop while a restart was in progress) is
            // the later instruction: stop, do not come back.
            log::info("restart: stop requested by a signal meanwhile: exiting");
            status = 0;
            return Next::Exit;
        }
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
    // Before the config file is read: from here on SIGINT/SIGTERM stop cmond whatever it does.
    SignalWatcher watcher(stop_signals);
    // A --check-config stopped before it finished must not pass for a good check (status 0).
    // Known before parsing, which may be what is stuck (a config file that does not open).
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--check-config") == 0) {
            watcher.set_startup_status(kExitRuntime);
        }
    }

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
    if (serve(inv.config, check_only, watcher, status) == Next::Exit) {
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
