// SPDX-License-Identifier: MIT
// The HTTP/1.1 front end of cmond and arena-exporter, built for clients that mean harm
// (../shared/SECURITY.md): Boost.Beast's parser over Asio, plain TCP or TLS.
//
// Threads: one event-loop thread (the caller of run()) owns every socket, reads every request
// head and body and writes every answer; idle, slow and silent connections cost a socket and a
// few KiB, never a thread. Only a request that the application admitted, with its body read,
// goes to a worker (Limits::workers), where Application::serve may block (a command run).
//
// Limits, each answered and logged with the client's address (Application::rejected):
//   head over max_head_bytes or more than max_fields fields    431, then close
//   target over max_target_bytes                               400, then close
//   malformed request, Content-Length and chunked together     400, then close
//   body over max_body_bytes, chunked or not                   413, then close
//   head and body not in within request_timeout of the start   408 (if anything came), close
//   keep-alive connection idle for request_timeout             closed
//   connection over max_connections or max_per_address         a connection waiting for a head
//       is closed to make room: the oldest that never sent a request, else the oldest idle
//       keep-alive one; if none, the new one is closed
// An answer made before the body was read (Application::admit) closes the connection after
// it, so a body is never parsed as the next request. Bytes a client sends after such an
// answer are read and dropped for a short while before the close (lingering close), so
// that the client sees the answer instead of a reset.
//
// Lifecycle: bind(), then run() until stop(); stop() closes the listener and every connection
// that has no request in progress at once, lets requests being served finish, and closes
// whatever remains at its deadline, so run() returns by then whatever clients do.
#pragma once

#include "message.h"
#include "request_parser.h"

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

namespace boost::asio::ssl {
class context;
}

namespace cmon::front {

struct Limits {
    ParseLimits parse;
    std::chrono::milliseconds request_timeout{10'000}; // head + body; also keep-alive idle
    std::chrono::milliseconds write_timeout{10'000};   // one answer
    unsigned max_connections = 512;
    unsigned max_per_address = 64;
    unsigned workers = 16;
};

/// What the server calls, and from where.
class Application {
public:
    virtual ~Application() = default;

    /// Event-loop thread, once the head is in and before any body is read: must not block.
    /// An answer here is sent at once (the body, if any, is never read); nullopt sends the
    /// request on to serve().
    virtual std::optional<Response> admit(Exchange& exchange) = 0;

    /// A worker thread, after the body is read; may block.
    virtual Response serve(Exchange& exchange) = 0;

    /// After the answer to an exchange is written (`delivered`), or the write failed or timed
    /// out (the client went away): for logs and metrics. Event-loop thread.
    virtual void finished(const Exchange& exchange, const Response& response, bool delivered) = 0;

    /// The server refused something without asking the application. Event-loop thread. `log`
    /// is false past a few reports a second (count them, do not log them); `suppressed` is how
    /// many were not logged since the last one that was.
    virtual void rejected(const Rejection& rejection, bool log, unsigned suppressed) = 0;

    /// The body of an answer the server makes itself (400, 408, 413, 431, 500, 503).
    virtual Response error_response(int status, std::string_view message) = 0;
};

/// bind() failed; what() says where and why.
class BindError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class Server {
public:
    /// `tls` null: plain HTTP. The application and the context must outlive the server.
    Server(Application& app, const Limits& limits, boost::asio::ssl::context* tls = nullptr);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    /// Listens on host:port (numeric; port 0 picks one) and returns the port. Throws BindError.
    int bind(const std::string& host, int port);

    /// Serves on the calling thread until stop() has run its course. Returns false when the
    /// listener failed for good (it has been logged through rejected()).
    bool run();

    /// Starts the stop described above; connections still open `deadline` from now are closed.
    /// Thread-safe; later calls do nothing.
    void stop(std::chrono::milliseconds deadline);

    /// Open connections (any thread; for tests and metrics).
    unsigned connections() const;

    struct Impl; // server.cc: the event loop and its sessions

private:
    std::unique_ptr<Impl> impl_;
};

} // namespace cmon::front
