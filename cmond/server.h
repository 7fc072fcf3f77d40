// SPDX-License-Identifier: MIT
// cmond's HTTP application on the front end (front/server.h, which owns the sockets and their
// limits): one route table matched once per request, authentication before anything else is
// said, the failure limiter, the command routes with their concurrency limits and shared runs
// (coalescer.h), /restart, /metrics (cmond_* and, through arena::client::ArenaCollector,
// arena_* families), the /arena routes (arena_routes.h), the access log and request metrics.
//
// Request flow (front::Application):
//   admit   event loop, before any body is read: match the route (for labels only); check
//           the key; a bad or missing key gets 401, or 429 when its address has failed too
//           often (a valid key is always let through, so the limiter cannot lock it out);
//           then 404/405 and the query check (query.h). Everything not admitted here is
//           answered at once and its body never read.
//   serve   a worker: the route's handler (a command runs here).
//   finished / rejected   the access log and the metrics, with the client's address.
// Lifecycle: bind(), then run() until request_stop() or POST /restart; run() returns once
// in-flight requests are done, killing running commands at the shutdown deadline.
#pragma once

#include "auth.h"
#include "coalescer.h"
#include "config.h"
#include "metrics.h"
#include "runner.h"

#include "front/server.h"

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

class Server : private cmon::front::Application {
public:
    /// Builds the routes. With TLS configured, loads the certificate and key now and throws
    /// ConfigError when they are unusable.
    Server(const Config& config, Key key);
    ~Server() override;
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

    struct Route;
    struct CommandSlot;
    struct RequestState;

private:
    // front::Application
    std::optional<cmon::front::Response> admit(cmon::front::Exchange& exchange) override;
    cmon::front::Response serve(cmon::front::Exchange& exchange) override;
    void finished(const cmon::front::Exchange& exchange, const cmon::front::Response& response,
                  bool delivered) override;
    void rejected(const cmon::front::Rejection& rejection, bool log, unsigned suppressed) override;
    cmon::front::Response error_response(int status, std::string_view message) override;

    void build_routes();
    std::optional<cmon::front::Response> authenticate(cmon::front::Exchange& exchange,
                                                      RequestState& state);
    cmon::front::Response handle_command(CommandSlot& slot, RequestState& state);
    std::optional<cmon::front::Response>
    refuse_command(CommandSlot& slot, const RequestState& state, std::string& branch);
    Coalescer::Outcome run_command(CommandSlot& slot, std::string_view branch);
    cmon::front::Response command_reply(const CommandSpec& spec, const Coalescer::Outcome& got,
                                        RequestState& state);
    cmon::front::Response handle_restart();
    cmon::front::Response handle_metrics();
    /// request_stop(), recording whether it is a restart; false when already stopping.
    bool start_stop(bool restart);

    const Config config_;
    const Key key_;
    Metrics metrics_;
    Runner runner_;
    FailureLimiter limiter_;
    std::unique_ptr<boost::asio::ssl::context> tls_;
    std::unique_ptr<cmon::front::Server> front_;
    std::deque<CommandSlot> slots_;
    std::vector<Route> routes_;

    std::mutex stop_mutex_;
    std::condition_variable stop_cv_;
    bool stop_requested_ = false;
    bool finished_ = false;
    std::thread stopper_;
    std::atomic<bool> restart_requested_{false};
};

} // namespace cmond
