// SPDX-License-Identifier: MIT
// See server.h. The event loop, in three parts: the listener (caps and eviction), a session per
// connection (read head -> admit -> read body -> serve on a worker -> write -> next request or
// close), and the stop.
//
// Every session lives on the event-loop thread; the only hand-off is serve() on a worker, which
// owns the exchange until it posts the answer back. A session is in exactly one Phase; the
// phases before a complete head (and lingering) are the ones the caps may evict and the stop
// closes at once.
#include "server.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <array>
#include <atomic>
#include <list>
#include <strings.h>
#include <unordered_map>
#include <variant>

namespace cmon::front {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using error_code = beast::error_code;
using namespace std::chrono_literals;

// A lingering close reads and drops what the client still sends, for at most this long and
// this much, so that its TCP stack does not answer our close with a reset that destroys the
// answer before the client reads it.
constexpr auto kLingerTime = 2s;
constexpr std::size_t kLingerBytes = 1 << 20;
// How long an accept waits when the process is out of descriptors.
constexpr auto kAcceptRetry = 100ms;
// Rejections reported per second; the rest are counted and reported with the next one.
constexpr unsigned kRejectionsPerSecond = 10;

enum class Phase {
    Handshake, // TLS handshake
    Head,      // waiting for or reading a request head (also: idle keep-alive)
    Admitted,  // head in, the application decides
    Body,      // reading an admitted request's body
    Serving,   // on a worker
    Writing,   // the answer
    Lingering, // closing: reading and dropping
    Closed,
};

bool evictable(Phase p) {
    return p == Phase::Handshake || p == Phase::Head || p == Phase::Lingering;
}

// At most kRejectionsPerSecond reports a second; the rest are counted.
class Throttle {
public:
    // Returns the number left out since the last report, or nullopt to leave this one out.
    std::optional<unsigned> admit(Clock::time_point now) {
        if (now - window_ >= 1s) {
            window_ = now;
            used_ = 0;
        }
        if (used_ >= kRejectionsPerSecond) {
            ++suppressed_;
            return std::nullopt;
        }
        ++used_;
        return std::exchange(suppressed_, 0);
    }

private:
    Clock::time_point window_{};
    unsigned used_ = 0;
    unsigned suppressed_ = 0;
};

} // namespace

class SessionBase;

struct Server::Impl {
    Impl(Application& a, const Limits& l, asio::ssl::context* t)
        : app(a), limits(l), tls(t), workers(std::max(1u, l.workers)) {}

    Application& app;
    const Limits limits;
    asio::ssl::context* const tls;
    asio::io_context ioc{1};
    tcp::acceptor acceptor{ioc};
    asio::thread_pool workers;
    asio::steady_timer accept_retry{ioc};
    asio::steady_timer force_close{ioc};

    // Event-loop thread only.
    std::list<SessionBase*> sessions; // oldest first
    std::unordered_map<std::string, unsigned> per_address;
    bool stopping = false;
    bool failed = false;
    Throttle throttle;

    std::atomic<unsigned> open{0};
    std::atomic<bool> stop_called{false};

    void accept();
    void on_accept(const error_code& ec, tcp::socket socket);
    bool make_room(const std::string& remote);
    void enter(SessionBase& s);
    void leave(SessionBase& s);
    void begin_stop(std::chrono::milliseconds deadline);
    void report(const std::string& remote, int status, std::string_view reason);
};

// The part of a session the listener and the stop see.
class SessionBase : public std::enable_shared_from_this<SessionBase> {
public:
    SessionBase(Server::Impl& server, std::string remote)
        : server_(server), remote_(std::move(remote)) {}
    virtual ~SessionBase() = default;
    virtual void start() = 0;
    /// Cancels whatever is pending and closes the socket; the session then winds down.
    virtual void close_now() = 0;

    const std::string& remote() const { return remote_; }
    Phase phase() const { return phase_; }
    unsigned requests() const { return requests_; } // whole request heads received
    std::list<SessionBase*>::iterator where;

protected:
    Server::Impl& server_;
    const std::string remote_;
    Phase phase_ = Phase::Handshake;
    unsigned requests_ = 0;
};

namespace {

template <class Stream>
constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

template <class Stream>
class Session final : public SessionBase {
public:
    template <class... Args>
    Session(Server::Impl& server, std::string remote, Args&&... args)
        : SessionBase(server, std::move(remote)), stream_(std::forward<Args>(args)...),
          buffer_(server.limits.parse.max_head_bytes + server.limits.parse.max_body_bytes),
          deadline_(server.ioc) {}

    void start() override {
        if constexpr (kTls<Stream>) {
            phase_ = Phase::Handshake;
            arm_deadline(Clock::now() + server_.limits.request_timeout);
            stream_.async_handshake(asio::ssl::stream_base::server,
                                    [self = self()](const error_code& ec) {
                                        if (self->phase_ == Phase::Closed) {
                                            return;
                                        }
                                        if (ec) {
                                            self->server_.report(self->remote_, 0, "tls_handshake");
                                            return self->close_now();
                                        }
                                        self->read_head();
                                    });
        } else {
            read_head();
        }
    }

    void close_now() override {
        if (phase_ == Phase::Closed) {
            return;
        }
        phase_ = Phase::Closed;
        deadline_.cancel();
        error_code ignored;
        lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
        lowest().close();
        server_.leave(*this);
    }

private:
    std::shared_ptr<Session> self() {
        return std::static_pointer_cast<Session>(shared_from_this());
    }
    beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

    // ---- Reading ----

    // The deadline of a whole request head and body (and of a TLS handshake) is a timer of our
    // own, not the stream's: at the stream's timeout Beast closes the socket, and a client
    // that has begun a request is owed its 408.
    void arm_deadline(Clock::time_point when) {
        lowest().expires_never();
        timed_out_ = false;
        deadline_.expires_at(when);
        // A timer that fired just before being re-armed still runs its handler: the
        // generation tells it that it belongs to an earlier request.
        deadline_.async_wait([self = self(), gen = ++deadline_gen_](const error_code& ec) {
            const Phase p = self->phase_;
            if (ec || gen != self->deadline_gen_ ||
                (p != Phase::Handshake && p != Phase::Head && p != Phase::Body)) {
                return;
            }
            self->timed_out_ = true;
            error_code ignored;
            self->lowest().socket().cancel(ignored); // the read ends with operation_aborted
        });
    }

    void read_head() {
        phase_ = Phase::Head;
        exchange_ = Exchange{};
        exchange_.request.remote = remote_;
        parser_.emplace(exchange_.request, server_.limits.parse);
        arm_deadline(Clock::now() + server_.limits.request_timeout);
        http::async_read_header(
            stream_, buffer_, *parser_,
            [self = self()](const error_code& ec, std::size_t) { self->on_head(ec); });
    }

    void on_head(const error_code& ec) {
        if (phase_ == Phase::Closed) {
            return;
        }
        if (ec) {
            return read_failed(ec);
        }
        phase_ = Phase::Admitted;
        ++requests_;
        exchange_.start = Clock::now();
        std::optional<Response> early;
        try {
            early = server_.app.admit(exchange_);
        } catch (const std::exception&) {
            early = server_.app.error_response(500, "Internal Server Error");
        }
        if (early) {
            // The body, if any, stays unread: the connection cannot carry another request.
            early->close = early->close || !parser_->is_done();
            return write(std::move(*early), true);
        }
        if (parser_->is_done()) {
            return dispatch();
        }
        phase_ = Phase::Body;
        http::async_read(stream_, buffer_, *parser_,
                         [self = self()](const error_code& body_ec, std::size_t) {
                             if (self->phase_ == Phase::Closed) {
                                 return;
                             }
                             if (body_ec) {
                                 return self->read_failed(body_ec);
                             }
                             self->dispatch();
                         });
    }

    // A request that could not be read: an answer for the client where one helps, a report,
    // and the close. A client that simply went away, or an idle keep-alive connection at its
    // deadline, is closed quietly.
    void read_failed(const error_code& ec) {
        const bool started = parser_->got_some();
        if (timed_out_) {
            if (!started) {
                return close_now();
            }
            return reject(408, "timeout", "Request Timeout: the request did not arrive in time");
        }
        if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
            ec == asio::error::eof || ec == asio::error::connection_reset ||
            ec == asio::error::operation_aborted || ec == asio::ssl::error::stream_truncated) {
            return close_now();
        }
        if (parser_->problem() == RequestParser::Problem::TargetTooLong) {
            return reject(400, "target_too_long",
                          "Bad Request: the request URI is longer than " +
                              std::to_string(server_.limits.parse.max_target_bytes) + " bytes");
        }
        if (parser_->problem() == RequestParser::Problem::TooManyFields) {
            return reject(431, "too_many_fields",
                          "Request Header Fields Too Large: more than " +
                              std::to_string(server_.limits.parse.max_fields) + " fields");
        }
        if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
            return reject(431, "head_too_large",
                          "Request Header Fields Too Large: the request head is over " +
                              std::to_string(server_.limits.parse.max_head_bytes / 1024) + " KiB");
        }
        if (ec == http::error::body_limit ||
            (ec == http::error::bad_content_length && huge_length())) {
            return reject(413, "body_too_large",
                          "Payload Too Large: no route takes a body over " +
                              std::to_string(server_.limits.parse.max_body_bytes / 1024) + " KiB");
        }
        if (ec == http::error::bad_transfer_encoding || ec == http::error::bad_content_length ||
            ec == http::error::multiple_content_length) {
            return reject(400, "bad_framing", "Bad Request: invalid body framing");
        }
        return reject(400, "malformed", "Bad Request");
    }

    // Beast refuses a Content-Length that overflows 64 bits before our parser sees it; all
    // digits is still a length, just a large one (413 like any other, not 400). The buffer
    // still holds the head from the field that failed.
    bool huge_length() const {
        const auto data = buffer_.cdata();
        const std::string_view head(static_cast<const char*>(data.data()), data.size());
        constexpr std::string_view kName = "content-length:";
        for (std::size_t i = 0; i + kName.size() <= head.size(); ++i) {
            if (::strncasecmp(head.data() + i, kName.data(), kName.size()) != 0) {
                continue;
            }
            const std::size_t from = head.find_first_not_of(" \t", i + kName.size());
            const std::size_t to = head.find_first_not_of("0123456789", from);
            return from != std::string_view::npos && to != from && to != std::string_view::npos &&
                   head.compare(to, 2, "\r\n") == 0 && to - from > 19;
        }
        return false;
    }

    void reject(int status, std::string_view reason, const std::string& message) {
        server_.report(remote_, status, reason);
        Response res = server_.app.error_response(status, message);
        res.close = true;
        write(std::move(res), false);
    }

    // ---- Serving ----

    void dispatch() {
        phase_ = Phase::Serving;
        asio::post(server_.workers, [self = self(), guard = asio::make_work_guard(server_.ioc)] {
            Response res;
            try {
                res = self->server_.app.serve(self->exchange_);
            } catch (const std::exception&) {
                res = self->server_.app.error_response(500, "Internal Server Error");
            }
            asio::post(self->server_.ioc, [self, res = std::move(res)]() mutable {
                if (self->phase_ == Phase::Closed) {
                    self->server_.app.finished(self->exchange_, res, false);
                    return;
                }
                self->write(std::move(res), true);
            });
        });
    }

    // ---- Writing ----

    template <class Body>
    void send(http::response<Body>& msg) {
        lowest().expires_after(server_.limits.write_timeout);
        http::async_write(stream_, msg, [self = self()](const error_code& ec, std::size_t) {
            self->on_written(ec);
        });
    }

    void write(Response res, bool for_exchange) {
        phase_ = Phase::Writing;
        for_exchange_ = for_exchange;
        close_after_ = res.close || server_.stopping || !exchange_.request.keep_alive;
        const auto status = static_cast<http::status>(res.status);
        const unsigned version = exchange_.request.version == 10 ? 10 : 11;
        const auto fill = [&](auto& msg) {
            if (!res.content_type.empty()) {
                msg.set(http::field::content_type, res.content_type);
            }
            for (const auto& [name, value] : res.headers) {
                msg.insert(name, value);
            }
            msg.keep_alive(!close_after_);
        };
        if (exchange_.request.method == "HEAD") {
            auto& msg = head_.emplace(status, version);
            fill(msg);
            msg.content_length(res.body.size());
            res.body.clear();
            answered_ = std::move(res);
            return send(msg);
        }
        auto& msg = full_.emplace(status, version);
        fill(msg);
        msg.body() = std::move(res.body);
        msg.prepare_payload();
        answered_ = std::move(res);
        send(msg);
    }

    void on_written(const error_code& ec) {
        if (phase_ == Phase::Closed) {
            if (for_exchange_) {
                server_.app.finished(exchange_, answered_, false);
            }
            return;
        }
        full_.reset();
        head_.reset();
        if (for_exchange_) {
            server_.app.finished(exchange_, answered_, !ec);
        }
        if (ec) {
            return close_now();
        }
        if (close_after_) {
            return linger();
        }
        read_head();
    }

    // ---- Closing ----

    void linger() {
        phase_ = Phase::Lingering;
        lowest().expires_after(kLingerTime);
        if constexpr (kTls<Stream>) {
            stream_.async_shutdown([self = self()](const error_code&) { self->close_now(); });
        } else {
            error_code ignored;
            lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
            drain();
        }
    }

    void drain() {
        lowest().async_read_some(asio::buffer(scratch_),
                                 [self = self()](const error_code& ec, std::size_t n) {
                                     if (self->phase_ == Phase::Closed) {
                                         return;
                                     }
                                     self->lingered_ += n;
                                     if (ec || self->lingered_ >= kLingerBytes) {
                                         return self->close_now();
                                     }
                                     self->drain();
                                 });
    }

    Stream stream_;
    beast::flat_buffer buffer_;
    std::optional<RequestParser> parser_;
    Exchange exchange_;
    asio::steady_timer deadline_;
    bool timed_out_ = false;
    unsigned deadline_gen_ = 0;
    std::optional<http::response<http::string_body>> full_;
    std::optional<http::response<http::empty_body>> head_;
    Response answered_;
    bool for_exchange_ = false;
    bool close_after_ = false;
    std::size_t lingered_ = 0;
    std::array<char, 4096> scratch_{};
};

using PlainSession = Session<beast::tcp_stream>;
using TlsSession = Session<beast::ssl_stream<beast::tcp_stream>>;

} // namespace

// ---- The listener ----

void Server::Impl::accept() {
    acceptor.async_accept(ioc, [this](const error_code& ec, tcp::socket socket) {
        on_accept(ec, std::move(socket));
    });
}

void Server::Impl::on_accept(const error_code& ec, tcp::socket socket) {
    if (stopping || ec == asio::error::operation_aborted) {
        return;
    }
    if (ec) {
        const bool starved = ec == asio::error::no_descriptors || ec.value() == ENFILE ||
                             ec == asio::error::no_buffer_space || ec == asio::error::no_memory;
        report("", 0, starved ? "accept_starved" : "accept_failed");
        // A listener that is no longer one (EBADF, EINVAL, ENOTSOCK) will never accept again:
        // stop, and let run() say so. Everything else (an aborted connection, a firewall's
        // EPERM, a lack of descriptors) passes.
        if (ec == asio::error::bad_descriptor || ec == asio::error::invalid_argument ||
            ec == asio::error::not_socket) {
            failed = true;
            return begin_stop(limits.write_timeout);
        }
        accept_retry.expires_after(starved ? kAcceptRetry : 1ms);
        accept_retry.async_wait([this](const error_code& e) {
            if (!e && !stopping) {
                accept();
            }
        });
        return;
    }
    error_code peer_ec;
    const auto peer = socket.remote_endpoint(peer_ec);
    if (peer_ec) {
        return accept(); // gone already; the socket closes here
    }
    std::string remote = peer.address().to_string();
    socket.set_option(tcp::no_delay(true), peer_ec);
    if (!make_room(remote)) {
        report(remote, 0, "connection_refused");
        return accept();
    }
    std::shared_ptr<SessionBase> session;
    if (tls != nullptr) {
        session = std::make_shared<TlsSession>(*this, std::move(remote), std::move(socket), *tls);
    } else {
        session = std::make_shared<PlainSession>(*this, std::move(remote), std::move(socket));
    }
    enter(*session);
    session->start();
    accept();
}

// Makes room for one more connection from `remote` under both caps, closing the oldest
// connections that have not delivered a head. False when there is no such connection.
bool Server::Impl::make_room(const std::string& remote) {
    // Connections that never completed a request (silent, slow, a failed handshake) go first,
    // oldest first; a legitimate keep-alive connection idle between requests only after them.
    const auto oldest_idle = [this](const std::string* from) -> SessionBase* {
        SessionBase* idle_client = nullptr;
        for (SessionBase* s : sessions) {
            if (!evictable(s->phase()) || (from != nullptr && s->remote() != *from)) {
                continue;
            }
            if (s->requests() == 0) {
                return s;
            }
            idle_client = idle_client != nullptr ? idle_client : s;
        }
        return idle_client;
    };
    const auto it = per_address.find(remote);
    if (it != per_address.end() && it->second >= limits.max_per_address) {
        SessionBase* victim = oldest_idle(&remote);
        if (victim == nullptr) {
            return false;
        }
        report(remote, 0, "address_cap_eviction");
        victim->close_now();
    }
    if (sessions.size() >= limits.max_connections) {
        SessionBase* victim = oldest_idle(nullptr);
        if (victim == nullptr) {
            return false;
        }
        report(victim->remote(), 0, "connection_cap_eviction");
        victim->close_now();
    }
    return true;
}

void Server::Impl::enter(SessionBase& s) {
    s.where = sessions.insert(sessions.end(), &s);
    ++per_address[s.remote()];
    open.fetch_add(1);
}

void Server::Impl::leave(SessionBase& s) {
    sessions.erase(s.where);
    const auto it = per_address.find(s.remote());
    if (it != per_address.end() && --it->second == 0) {
        per_address.erase(it);
    }
    open.fetch_sub(1);
    if (stopping && sessions.empty()) {
        force_close.cancel(); // nothing left to wait for
    }
}

void Server::Impl::report(const std::string& remote, int status, std::string_view reason) {
    const auto suppressed = throttle.admit(Clock::now());
    app.rejected(Rejection{remote, status, reason}, suppressed.has_value(), suppressed.value_or(0));
}

// ---- The stop ----

void Server::Impl::begin_stop(std::chrono::milliseconds deadline) {
    stopping = true;
    error_code ignored;
    acceptor.close(ignored);
    accept_retry.cancel();
    // Copies: close_now() unlinks sessions from the list.
    const std::vector<SessionBase*> now(sessions.begin(), sessions.end());
    for (SessionBase* s : now) {
        if (evictable(s->phase())) {
            s->close_now();
        }
    }
    if (sessions.empty()) {
        return;
    }
    force_close.expires_after(deadline);
    force_close.async_wait([this](const error_code& ec) {
        if (ec) {
            return;
        }
        const std::vector<SessionBase*> left(sessions.begin(), sessions.end());
        for (SessionBase* s : left) {
            s->close_now();
        }
        ioc.stop(); // answers still being made on workers are abandoned
    });
}

// ---- Public ----

Server::Server(Application& app, const Limits& limits, asio::ssl::context* tls)
    : impl_(std::make_unique<Impl>(app, limits, tls)) {}

Server::~Server() {
    impl_->workers.join();
}

int Server::bind(const std::string& host, int port) {
    error_code ec;
    const auto address = asio::ip::make_address(host, ec);
    const bool v6 = host.find(':') != std::string::npos;
    const std::string where = (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
    if (ec) {
        throw BindError("cannot listen on " + where + ": not a numeric address");
    }
    tcp::acceptor& a = impl_->acceptor;
    const tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
    a.open(endpoint.protocol(), ec);
    if (!ec) {
        // SO_REUSEADDR without SO_REUSEPORT: a second instance cannot silently share the port.
        a.set_option(tcp::acceptor::reuse_address(true), ec);
        if (address.is_v6()) {
            a.set_option(asio::ip::v6_only(true), ec);
        }
        a.bind(endpoint, ec);
    }
    if (!ec) {
        a.listen(asio::socket_base::max_listen_connections, ec);
    }
    if (ec) {
        a.close();
        throw BindError("cannot listen on " + where + ": " + ec.message());
    }
    return a.local_endpoint().port();
}

bool Server::run() {
    impl_->accept();
    impl_->ioc.run();
    impl_->workers.join();
    return !impl_->failed;
}

void Server::stop(std::chrono::milliseconds deadline) {
    if (impl_->stop_called.exchange(true)) {
        return;
    }
    asio::post(impl_->ioc, [this, deadline] { impl_->begin_stop(deadline); });
}

unsigned Server::connections() const {
    return impl_->open.load();
}

} // namespace cmon::front
