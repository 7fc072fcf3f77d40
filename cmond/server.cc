// SPDX-License-Identifier: MIT
// cpp-httplib wiring for cmond; see server.h.
//
// Request flow: the pre-routing handler authenticates (rate limiter first, then the key), then
// matches the path against the route table (404) and the method (405 with Allow), and only then
// lets httplib dispatch to the registered handler. So no route can skip authentication, and
// unknown paths reveal nothing to unauthenticated clients. Anything httplib itself rejects
// (bad request line, oversized URI or body) reaches the error handler, which gives it the same
// JSON shape. The logger, which httplib calls after a response is written, records the access
// log line and the request metrics from a per-thread context (httplib serves each request on
// one worker thread from pre-routing to logging).
#include "server.h"

#include "arena_routes.h"
#include "collector.h"
#include "log.h"
#include "reader.h"
#include "response.h"

#include <httplib.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <optional>
#include <sys/socket.h>
#include <unistd.h>

namespace cmond {

namespace {

using Clock = std::chrono::steady_clock;
using HandlerResponse = httplib::Server::HandlerResponse;

constexpr const char* kJson = "application/json";
constexpr std::size_t kMaxPayload = 64 * 1024; // no route takes a body

// What the logger needs to know about the request being served on this thread.
struct RequestContext {
    bool active = false;
    Clock::time_point start{};
    std::string route = "unmatched";
    std::string command;
    std::string note; // e.g. "auth=wrong"
    int exit_code = -1;
    double command_ms = -1;
    unsigned shared_by = 1; // requests that got the same command run
};
thread_local RequestContext t_ctx;

void send(httplib::Response& res, const ApiReply& reply) {
    res.status = reply.code;
    res.set_content(render_reply(reply), kJson);
}

// httplib keeps protected the listening socket it would otherwise create itself; cmond binds
// its own (exact errno in errors, SO_REUSEADDR without SO_REUSEPORT, so that a second instance
// cannot silently share the port) and hands it over here.
struct ListenSocketAccess : httplib::Server {
    static void adopt(httplib::Server& server, int fd) {
        (server.*(&ListenSocketAccess::svr_sock_)) = fd;
    }
};

std::vector<std::string> header_values(const httplib::Request& req, const char* name) {
    std::vector<std::string> out;
    const std::size_t n = req.get_header_value_count(name);
    for (std::size_t i = 0; i < n; ++i) {
        out.push_back(req.get_header_value(name, i));
    }
    return out;
}

void cleanse(std::vector<std::string>& values) {
    for (auto& v : values) {
        OPENSSL_cleanse(v.data(), v.size());
    }
}

std::string openssl_errors() {
    std::string out;
    while (const unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        out += out.empty() ? "" : "; ";
        out += buf;
    }
    return out.empty() ? "unknown OpenSSL error" : out;
}

// How the /arena routes and the arena_* families read the stats pages: the reader's defaults
// (caps, stale pages removed) with the configured procfs.
arena::client::ScanOptions arena_scan_options(const Config& config) {
    arena::client::ScanOptions options;
    options.procfs = config.procfs;
    return options;
}

// The segments of a path: "/arena/1/trim" -> {"arena", "1", "trim"}; "/" -> {""}.
std::vector<std::string_view> segments(std::string_view path) {
    std::vector<std::string_view> out;
    std::size_t start = path.empty() || path.front() != '/' ? 0 : 1;
    for (;;) {
        const std::size_t slash = path.find('/', start);
        out.push_back(path.substr(start, slash == std::string_view::npos ? slash : slash - start));
        if (slash == std::string_view::npos) {
            return out;
        }
        start = slash + 1;
    }
}

// True when `path` matches a route pattern: literal segments equal, ":name" segments non-empty.
bool path_matches(std::string_view pattern, std::string_view path) {
    if (pattern.find(':') == std::string_view::npos) {
        return pattern == path; // the common case: a literal route
    }
    if (path.empty() || path.front() != '/') {
        return false;
    }
    const auto want = segments(pattern);
    const auto have = segments(path);
    if (want.size() != have.size()) {
        return false;
    }
    for (std::size_t i = 0; i < want.size(); ++i) {
        const bool param = !want[i].empty() && want[i].front() == ':';
        if (param ? have[i].empty() : want[i] != have[i]) {
            return false;
        }
    }
    return true;
}

// The route pattern as httplib's (ECMAScript) path regex: literals escaped, ":name" segments as
// "([^/]+)".
std::string http_regex(const std::string& pattern) {
    static const std::string kSpecial = R"(\^$.|?*+()[]{})";
    std::string out;
    for (const std::string_view seg : segments(pattern)) {
        out += '/';
        if (!seg.empty() && seg.front() == ':') {
            out += "([^/]+)";
            continue;
        }
        for (const char c : seg) {
            if (kSpecial.find(c) != std::string::npos) {
                out += '\\';
            }
            out += c;
        }
    }
    return out;
}

// Human wording of a duration for messages: "2s", "1500ms".
std::string wording(Millis d) {
    return d.count() % 1000 == 0 ? std::to_string(d.count() / 1000) + "s"
                                 : std::to_string(d.count()) + "ms";
}

const char* result_label(const RunResult& r) {
    switch (r.outcome) {
    case RunResult::Outcome::Exited:
        return r.exit_code == 0 ? "ok" : "failed";
    case RunResult::Outcome::Signaled:
        return "signaled";
    case RunResult::Outcome::TimedOut:
        return "timeout";
    case RunResult::Outcome::Killed:
        return "killed";
    case RunResult::Outcome::SpawnFailed:
        return "spawn_failed";
    }
    return "failed";
}

// Refuses every query parameter except `allowed` (which may be given at most once).
// Returns false after answering 400.
bool check_params(const httplib::Request& req, httplib::Response& res, const char* allowed) {
    for (const auto& [key, value] : req.params) {
        if (allowed == nullptr || key != allowed) {
            send(res, error_reply(400, "Unknown query parameter '" + log::sanitize(key, 40) + "'" +
                                           (allowed ? " (only '" + std::string(allowed) +
                                                          "' is accepted here)"
                                                    : " (this route takes none)")));
            return false;
        }
    }
    if (allowed != nullptr && req.get_param_value_count(allowed) > 1) {
        send(res, error_reply(400, std::string("Query parameter '") + allowed +
                                       "' given more than once"));
        return false;
    }
    return true;
}

// The <pid> of a path matched by "/arena/:pid..." (handlers may run before httplib has
// filled Request::matches; see the pre-routing handler).
std::string pid_segment(const std::string& path) {
    constexpr std::string_view kPrefix = "/arena/";
    const std::string rest = path.substr(std::min(path.size(), kPrefix.size()));
    return rest.substr(0, rest.find('/'));
}

// A 400 or 413 for a request whose body framing is unacceptable, or nullopt.
std::optional<ApiReply> framing_error(const httplib::Request& req) {
    const std::size_t lengths = req.get_header_value_count("Content-Length");
    if (lengths == 0) {
        return std::nullopt;
    }
    const std::string value = req.get_header_value("Content-Length");
    if (lengths > 1 || value.empty() ||
        value.find_first_not_of("0123456789") != std::string::npos) {
        return error_reply(400, "Bad Request: invalid Content-Length");
    }
    if (req.has_header("Transfer-Encoding")) {
        return error_reply(400, "Bad Request: both Content-Length and Transfer-Encoding");
    }
    if (value.size() > 9 || std::stoul(value) > kMaxPayload) {
        return error_reply(413, "Payload Too Large: no route takes a body over 64 KiB");
    }
    return std::nullopt;
}

} // namespace

// ---- Construction ----

Server::Server(const Config& config, Key key)
    : config_(config), key_(std::move(key)),
      limiter_(config.auth_max_failures, config.auth_failure_window, config.auth_block_time) {
    if (config_.tls()) {
        std::string problem;
        ERR_clear_error();
        auto ssl = std::make_unique<httplib::SSLServer>([&](SSL_CTX& ctx) {
            SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
            if (SSL_CTX_use_certificate_chain_file(&ctx, config_.tls_cert.c_str()) != 1) {
                problem = "tls_cert: cannot load '" + config_.tls_cert + "': " + openssl_errors();
                return false;
            }
            if (SSL_CTX_use_PrivateKey_file(&ctx, config_.tls_key.c_str(), SSL_FILETYPE_PEM) != 1) {
                problem = "tls_key: cannot load '" + config_.tls_key + "': " + openssl_errors();
                return false;
            }
            if (SSL_CTX_check_private_key(&ctx) != 1) {
                problem = "tls_key: '" + config_.tls_key + "' does not match tls_cert '" +
                          config_.tls_cert + "'";
                return false;
            }
            return true;
        });
        if (!ssl->is_valid()) {
            throw ConfigError(problem.empty() ? "TLS setup failed: " + openssl_errors() : problem);
        }
        http_ = std::move(ssl);
    } else {
        http_ = std::make_unique<httplib::Server>();
    }
    // The same arena_* families as arena-exporter; the collector's own families get cmond's
    // prefix (cmond_arena_scrape_duration_seconds, ...) so the two programs never collide.
    metrics_.add_collectable(std::make_shared<arena::client::ArenaCollector>(
        config_.stats_dir, arena::client::GroupBy::Pid, arena_scan_options(config_),
        "cmond_arena"));
    unsigned busy_max = 0;
    for (const auto& spec : config_.commands) {
        busy_max += spec.enabled ? spec.concurrency : 0;
    }
    if (busy_max >= config_.threads) {
        log::warning("threads = " + std::to_string(config_.threads) + " but commands may take " +
                     std::to_string(busy_max) +
                     " requests at once: when they do, /metrics and 429 "
                     "answers wait for a free thread (raise threads above the sum of the "
                     "commands' concurrency)");
    }
    build_routes();
    install_handlers();
}

Server::~Server() {
    if (stopper_.joinable()) {
        {
            std::lock_guard lock(stop_mutex_);
            finished_ = true;
        }
        stop_cv_.notify_all();
        stopper_.join();
    }
    if (listen_fd_ >= 0 && !adopted_) {
        ::close(listen_fd_);
    }
}

void Server::add_route(std::string method, std::string pattern, std::string command,
                       Handler handler) {
    Route route;
    route.method = std::move(method);
    route.pattern = std::move(pattern);
    route.command = std::move(command);
    route.handler = std::move(handler);
    const std::string http_pattern = http_regex(route.pattern);
    if (route.method == "GET") {
        http_->Get(http_pattern, route.handler);
    } else if (route.method == "POST") {
        http_->Post(http_pattern, route.handler);
    } else if (route.method == "PUT") {
        http_->Put(http_pattern, route.handler);
    } else if (route.method == "DELETE") {
        http_->Delete(http_pattern, route.handler);
    } else {
        throw std::logic_error("route with unsupported method " + route.method);
    }
    routes_.push_back(std::move(route));
}

void Server::build_routes() {
    using Req = httplib::Request;
    using Res = httplib::Response;
    for (const auto& spec : config_.commands) {
        CommandSlot& slot = slots_.emplace_back();
        slot.spec = &spec;
        add_route(spec.method, spec.route, spec.name,
                  [this, &slot](const Req& req, Res& res) { handle_command(slot, req, res); });
    }
    add_route("POST", "/restart", "restart",
              [this](const Req& req, Res& res) { handle_restart(req, res); });
    add_route("GET", "/metrics", "",
              [this](const Req& req, Res& res) { handle_metrics(req, res); });
    add_route("GET", "/arena", "", [this](const Req& req, Res& res) {
        if (check_params(req, res, nullptr)) {
            send(res, arena_list_reply(config_.stats_dir, arena_scan_options(config_)));
        }
    });
    add_route("GET", "/arena/:pid", "", [this](const Req& req, Res& res) {
        if (check_params(req, res, nullptr)) {
            send(res, arena_get_reply(config_.stats_dir, arena_scan_options(config_),
                                      pid_segment(req.path)));
        }
    });
    add_route("POST", "/arena/:pid/trim", "", [this](const Req& req, Res& res) {
        if (check_params(req, res, nullptr)) {
            send(res, arena_trim_reply(config_.stats_dir, arena_scan_options(config_),
                                       pid_segment(req.path)));
        }
    });
}

void Server::install_handlers() {
    httplib::Server& http = *http_;
    http.set_tcp_nodelay(true); // see NOTES: without it small responses wait ~35 ms for Nagle
    http.new_task_queue = [n = config_.threads] { return new httplib::ThreadPool(n); };
    const auto secs = std::max<long long>(1, config_.http_timeout.count() / 1000);
    http.set_read_timeout(static_cast<time_t>(secs), 0);
    http.set_write_timeout(static_cast<time_t>(secs), 0);
    http.set_keep_alive_timeout(static_cast<time_t>(std::min<long long>(secs, 5)));
    http.set_keep_alive_max_count(1000); // the default, 5, reconnects every fifth request
    http.set_payload_max_length(kMaxPayload);

    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
        t_ctx = RequestContext{};
        t_ctx.active = true;
        t_ctx.start = Clock::now();

        // Framing problems that httplib would only notice while reading the body, after
        // waiting for http_timeout: answer them at once, and close the connection (its
        // remaining bytes cannot be trusted to be the next request).
        if (const auto framing = framing_error(req)) {
            send(res, *framing);
            res.set_header("Connection", "close");
            return HandlerResponse::Handled;
        }

        // Match the route first, only to label metrics and logs: the answer to an
        // unauthenticated client does not depend on it.
        const Route* match = nullptr;
        std::string allow;
        for (const auto& route : routes_) {
            if (!path_matches(route.pattern, req.path)) {
                continue;
            }
            t_ctx.route = route.pattern;
            if (route.method == req.method) {
                match = &route;
                break;
            }
            allow += allow.empty() ? "" : ", ";
            allow += route.method;
        }

        if (const auto left = limiter_.blocked_for(req.remote_addr, t_ctx.start)) {
            metrics_.rate_limited_request();
            t_ctx.note = "rate_limited";
            send(res, error_reply(429, "Too many authentication failures from this address; "
                                       "retry later"));
            res.set_header("Retry-After",
                           std::to_string(std::chrono::ceil<std::chrono::seconds>(*left).count()));
            return HandlerResponse::Handled;
        }
        auto tokens = header_values(req, "access_token");
        auto authorizations = header_values(req, "Authorization");
        const AuthResult auth = check_credentials(key_, tokens, authorizations);
        cleanse(tokens);
        cleanse(authorizations);
        if (auth != AuthResult::Ok) {
            const std::string_view reason = auth_result_name(auth);
            metrics_.auth_failure(reason);
            t_ctx.note = "auth=" + std::string(reason);
            if (limiter_.record_failure(req.remote_addr, t_ctx.start)) {
                metrics_.client_blocked();
                log::warning("client " + log::sanitize(req.remote_addr) + " blocked for " +
                             wording(config_.auth_block_time) + " after " +
                             std::to_string(config_.auth_max_failures) +
                             " authentication failures");
            }
            res.status = 401;
            res.set_content(std::string(kAuthErrorBody), kJson);
            res.set_header("WWW-Authenticate", R"(Bearer realm="cmond")");
            return HandlerResponse::Handled;
        }
        limiter_.record_success(req.remote_addr);

        if (match != nullptr) {
            t_ctx.command = match->command;
            if (!req.has_header("Content-Length") && !req.has_header("Transfer-Encoding")) {
                // No body (RFC 9112 6.3: its length is zero). Answer here: httplib would read
                // the body of a POST or PUT without framing until the client closes, and
                // `curl -X POST URL` would wait for the read timeout.
                match->handler(req, res);
                return HandlerResponse::Handled;
            }
            return HandlerResponse::Unhandled; // httplib reads the body, then dispatches
        }
        if (allow.empty()) {
            send(res, error_reply(404, "Not Found"));
        } else {
            send(res, error_reply(405, "Method Not Allowed"));
            res.set_header("Allow", allow);
        }
        return HandlerResponse::Handled;
    });

    // Every status >= 400 passes here; bodies we wrote ourselves are left alone.
    http.set_error_handler(
        httplib::Server::HandlerWithResponse([](const httplib::Request&, httplib::Response& res) {
            if (!res.body.empty()) {
                return HandlerResponse::Unhandled;
            }
            if (res.status == 414) {
                // httplib refuses URIs over 8192 bytes before routing. Say 400 like every other
                // unacceptable query value (a 10,000-character branch lands here).
                send(res, error_reply(400, "Bad Request: the request URI is longer than 8192 "
                                           "bytes"));
                return HandlerResponse::Handled;
            }
            send(res, error_reply(res.status, std::string(reason_phrase(res.status))));
            return HandlerResponse::Handled;
        }));

    http.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
            std::string what = "unknown exception";
            try {
                std::rethrow_exception(ep);
            } catch (const std::exception& e) {
                what = e.what();
            } catch (...) {
            }
            log::error("internal error: " + log::sanitize(what));
            send(res, error_reply(500, "Internal Server Error"));
        });

    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
        finish_request(req, res);
    });
}

// ---- Handlers ----

void Server::handle_command(CommandSlot& slot, const httplib::Request& req,
                            httplib::Response& res) {
    const CommandSpec& spec = *slot.spec;
    if (!spec.enabled) {
        metrics_.command_rejected(spec.name, "disabled");
        send(res, error_reply(403, "Command '" + spec.name +
                                       "' is disabled in this cmond's configuration"));
        return;
    }
    if (!check_params(req, res, spec.takes_branch() ? "branch" : nullptr)) {
        metrics_.command_rejected(spec.name, "bad_request");
        return;
    }
    std::string branch(kDefaultBranch);
    if (req.has_param("branch")) {
        branch = req.get_param_value("branch");
        if (const auto problem = branch_error(branch)) {
            metrics_.command_rejected(spec.name, "bad_request");
            send(res, error_reply(400, "Invalid branch: " + *problem));
            return;
        }
    }
    if (runner_.stopping()) {
        metrics_.command_rejected(spec.name, "shutting_down");
        send(res, error_reply(503, "cmond is shutting down"));
        return;
    }
    unsigned in_progress = slot.in_progress.load();
    do {
        if (in_progress >= spec.concurrency) {
            metrics_.command_rejected(spec.name, "busy");
            send(res, error_reply(429, "Command '" + spec.name + "' is busy (" +
                                           std::to_string(in_progress) + " in progress, limit " +
                                           std::to_string(spec.concurrency) + "); retry later"));
            res.set_header("Retry-After", "1");
            return;
        }
    } while (!slot.in_progress.compare_exchange_weak(in_progress, in_progress + 1));
    struct Admitted {
        std::atomic<unsigned>& count;
        ~Admitted() { count.fetch_sub(1); }
    } admitted{slot.in_progress};

    // One process per call: metrics and the error log count runs, not requests.
    const std::vector<std::string> argv = expand_argv(spec, branch);
    const auto execute = [&]() -> RunResult {
        metrics_.command_started(spec.name);
        RunResult r = runner_.run({argv, spec.workdir, spec.timeout, config_.kill_grace,
                                   spec.output_cap, config_.command_ld_preload});
        metrics_.command_finished(spec.name);
        metrics_.command_run(spec.name, result_label(r),
                             std::chrono::duration<double>(r.duration).count());
        if (r.outcome == RunResult::Outcome::SpawnFailed) {
            log::error("command " + spec.name + ": " + log::sanitize(r.error));
        }
        return r;
    };
    Coalescer::Outcome got;
    if (spec.coalesce) {
        std::string key;
        for (const auto& a : argv) {
            key.append(a).push_back('\0'); // arguments never contain NUL (argv_template_error)
        }
        got = slot.coalescer.run(key, execute);
        if (!got.ran_here) {
            metrics_.command_coalesced(spec.name);
        }
    } else {
        got.result = execute();
        got.ran_here = true;
    }
    const RunResult& r = got.result;

    const double seconds = std::chrono::duration<double>(r.duration).count();
    const double ms = std::round(seconds * 1e6) / 1e3;
    t_ctx.exit_code = r.exit_code;
    t_ctx.command_ms = ms;
    t_ctx.shared_by = got.shared_by;

    ApiReply reply;
    reply.data = r.output;
    switch (r.outcome) {
    case RunResult::Outcome::Exited:
        reply.code = r.exit_code == 0 ? 200 : 500;
        reply.message = r.exit_code == 0 ? "Command executed" : "Command failed";
        break;
    case RunResult::Outcome::Signaled:
        reply.code = 500;
        reply.message = "Command failed: killed by signal " + std::to_string(r.exit_code - 128);
        break;
    case RunResult::Outcome::TimedOut:
        reply.code = 500;
        reply.message = "Command timed out after " + wording(spec.timeout);
        break;
    case RunResult::Outcome::Killed:
        reply.code = 500;
        reply.message = "Command killed: cmond is shutting down";
        break;
    case RunResult::Outcome::SpawnFailed:
        reply.code = runner_.stopping() ? 503 : 500;
        reply.message = "Command could not be started";
        reply.data = r.error;
        break;
    }
    reply.extra["exit_code"] = r.exit_code;
    reply.extra["duration_ms"] = ms;
    reply.extra["timed_out"] = r.outcome == RunResult::Outcome::TimedOut;
    reply.extra["truncated"] = r.truncated;
    reply.extra["shared_by"] = got.shared_by;
    send(res, reply);
}

void Server::handle_restart(const httplib::Request& req, httplib::Response& res) {
    if (!check_params(req, res, nullptr)) {
        return;
    }
    // The response is written by this worker before run() can return: httplib's stop() closes
    // only the listening socket, and its thread pool finishes every accepted connection.
    if (!start_stop(true)) {
        send(res, error_reply(503, "cmond is already stopping"));
        return;
    }
    const bool reexec = config_.restart_mode == RestartMode::Reexec;
    ApiReply reply;
    reply.message = "Restarting";
    reply.data = reexec ? "cmond re-executes itself once in-flight requests are done"
                        : "cmond exits with status " + std::to_string(config_.restart_exit_code) +
                              " once in-flight requests are done, for its supervisor to restart it";
    send(res, reply);
    res.set_header("Connection", "close");
}

void Server::handle_metrics(const httplib::Request& req, httplib::Response& res) {
    if (!check_params(req, res, nullptr)) {
        return;
    }
    metrics_.set_blocked_clients(limiter_.blocked_count(Clock::now()));
    for (const CommandSlot& slot : slots_) {
        if (slot.spec->coalesce) {
            metrics_.set_waiting(slot.spec->name, slot.coalescer.waiting());
        }
    }
    res.set_content(metrics_.render(), "text/plain; version=0.0.4; charset=utf-8");
}

void Server::finish_request(const httplib::Request& req, const httplib::Response& res) {
    const RequestContext ctx = std::exchange(t_ctx, RequestContext{});
    const double seconds =
        ctx.active ? std::chrono::duration<double>(Clock::now() - ctx.start).count() : 0.0;
    metrics_.request(ctx.route, res.status, seconds);

    const log::Level level = res.status >= 500   ? log::Level::Warning
                             : res.status == 401 ? log::Level::Warning
                             : res.status == 429 ? log::Level::Warning
                                                 : log::Level::Info;
    if (!log::enabled(level)) {
        return;
    }
    char duration[32];
    std::snprintf(duration, sizeof duration, "%.3f", seconds * 1e3);
    std::string line = "request client=" + log::sanitize(req.remote_addr) +
                       " method=" + log::sanitize(req.method, 16) + " route=" + ctx.route;
    if (ctx.route == "unmatched") {
        line += " path=\"" + log::sanitize(req.path, 120) + "\"";
    }
    line += " code=" + std::to_string(res.status);
    if (!ctx.command.empty()) {
        line += " command=" + ctx.command;
    }
    if (ctx.exit_code >= 0) {
        char cmd_ms[32];
        std::snprintf(cmd_ms, sizeof cmd_ms, "%.3f", ctx.command_ms);
        line += " exit_code=" + std::to_string(ctx.exit_code) + " command_ms=" + cmd_ms;
        if (ctx.shared_by > 1) {
            line += " shared_by=" + std::to_string(ctx.shared_by);
        }
    }
    if (!ctx.note.empty()) {
        line += " " + ctx.note;
    }
    line += std::string(" duration_ms=") + duration;
    log::write(level, line);
}

// ---- Lifecycle ----

int Server::bind() {
    addrinfo hints{};
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* ai = nullptr;
    const std::string where = config_.bind + " port " + std::to_string(config_.port);
    if (const int rc =
            ::getaddrinfo(config_.bind.c_str(), std::to_string(config_.port).c_str(), &hints, &ai);
        rc != 0) {
        throw StartupError("cannot resolve " + where + ": " + gai_strerror(rc));
    }
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(ai, freeaddrinfo);
    const int fd = ::socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        throw StartupError("socket: " + std::string(std::strerror(errno)));
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); // inherited by accepted sockets
    if (ai->ai_family == AF_INET6) {
        ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, SOMAXCONN) != 0) {
        const int err = errno;
        ::close(fd);
        throw StartupError("cannot listen on " + where + ": " + std::strerror(err));
    }
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    const int port = addr.ss_family == AF_INET6
                         ? ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port)
                         : ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);
    listen_fd_ = fd;
    return port;
}

RunOutcome Server::run() {
    if (listen_fd_ < 0) {
        throw std::logic_error("Server::run() before bind()");
    }
    ListenSocketAccess::adopt(*http_, listen_fd_);
    adopted_ = true;
    const bool ok = http_->listen_after_bind();
    bool stopped = false;
    {
        std::lock_guard lock(stop_mutex_);
        finished_ = true;
        stopped = stop_requested_;
    }
    stop_cv_.notify_all();
    if (stopper_.joinable()) {
        stopper_.join();
    }
    runner_.stop_accepting();
    runner_.kill_all(); // every handler has returned, so nothing should be left; be sure
    if (!ok && !stopped) {
        log::error("the accept loop failed: " + std::string(std::strerror(errno)));
        return RunOutcome::Failed;
    }
    return restart_requested_ ? RunOutcome::Restart : RunOutcome::Stopped;
}

void Server::request_stop() {
    start_stop(false);
}

bool Server::start_stop(bool restart) {
    {
        std::lock_guard lock(stop_mutex_);
        if (stop_requested_ || finished_) {
            return false;
        }
        stop_requested_ = true;
        restart_requested_ = restart;
        runner_.stop_accepting();
        log::info("stopping: in-flight requests finish; commands still running in " +
                  wording(config_.shutdown_timeout) + " are killed (" +
                  std::to_string(runner_.running()) + " running now)");
        // httplib's stop() does nothing until listen has started, so repeat it until run()
        // returns; at the deadline, kill what is still running.
        stopper_ = std::thread([this] {
            const auto deadline = Clock::now() + config_.shutdown_timeout;
            bool killed = false;
            std::unique_lock held(stop_mutex_);
            while (!finished_) {
                held.unlock();
                http_->stop();
                if (!killed && Clock::now() >= deadline) {
                    if (runner_.running() > 0) {
                        log::warning("stopping: deadline reached, killing " +
                                     std::to_string(runner_.running()) + " running command(s)");
                    }
                    runner_.kill_all();
                    killed = true;
                }
                held.lock();
                stop_cv_.wait_for(held, std::chrono::milliseconds(50),
                                  [this] { return finished_; });
            }
        });
    }
    return true;
}

void Server::kill_commands() {
    runner_.kill_all();
}

} // namespace cmond
