// SPDX-License-Identifier: MIT
// The HTTP side of cmond: cpp-httplib wiring, the route table, per-request auth, 404/405 with
// Allow, JSON errors for everything the library rejects, the access log and the request
// metrics, command routes with their concurrency limits and shared runs (coalescer.h),
// /restart, /metrics (cmond_* and, through arena::client::ArenaCollector, arena_* families) and the
// /arena routes over the stats pages in config.stats_dir (arena_routes.h).
// Lifecycle: bind(), then run() until request_stop() or
// POST /restart; run() returns once in-flight requests are done, killing running commands at
// the shutdown deadline.
#pragma once

#include "auth.h"
#include "coalescer.h"
#include "config.h"
#include "metrics.h"
#include "runner.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace httplib {
class Server;
struct Request;
struct Response;
} // namespace httplib

namespace cmond {

/// The server cannot start (e.g. the address is in use). main exits with status 1.
class StartupError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

enum class RunOutcome {
    Stopped, // request_stop() (SIGINT/SIGTERM)
    Restart, // POST /restart
    Failed,  // the accept loop failed
};

class Server {
public:
    /// Builds the routes. With TLS configured, loads the certificate and key now and throws
    /// ConfigError when they are unusable.
    Server(const Config& config, Key key);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    /// Binds and listens on config.bind:config.port; returns the port (useful with port 0).
    /// Throws StartupError.
    int bind();

    /// Serves until stopped; see RunOutcome. Call once, after bind().
    RunOutcome run();

    /// Starts a graceful stop: no new connections or commands; in-flight requests finish, and
    /// commands still running after shutdown_timeout are killed. Thread-safe, idempotent.
    void request_stop();

    /// Kills every running command now (a second SIGINT/SIGTERM). Thread-safe.
    void kill_commands();

private:
    using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
    struct Route {
        std::string method;
        std::string pattern; // the path; a ":name" segment matches any one non-empty segment.
                             // Also the metrics and log label ("/arena/:pid/trim").
        std::string command; // command name for logs; empty for builtin routes
        Handler handler;
    };
    struct CommandSlot {
        const CommandSpec* spec;
        std::atomic<unsigned> in_progress{0}; // requests admitted: running or waiting for a run
        Coalescer coalescer;                  // used when spec->coalesce
    };

    void add_route(std::string method, std::string pattern, std::string command, Handler handler);
    void build_routes();
    void install_handlers();
    void handle_command(CommandSlot& slot, const httplib::Request& req, httplib::Response& res);
    void handle_restart(const httplib::Request& req, httplib::Response& res);
    void handle_metrics(const httplib::Request& req, httplib::Response& res);
    /// request_stop(), recording whether it is a restart; false when already stopping.
    bool start_stop(bool restart);
    void finish_request(const httplib::Request& req, const httplib::Response& res);

    const Config config_;
    const Key key_;
    Metrics metrics_;
    Runner runner_;
    FailureLimiter limiter_;
    std::unique_ptr<httplib::Server> http_;
    std::deque<CommandSlot> slots_;
    std::vector<Route> routes_;
    int listen_fd_ = -1;
    bool adopted_ = false; // listen_fd_ handed to httplib, which closes it

    std::mutex stop_mutex_;
    std::condition_variable stop_cv_;
    bool stop_requested_ = false;
    bool finished_ = false;
    std::thread stopper_;
    std::atomic<bool> restart_requested_{false};
};

} // namespace cmond
