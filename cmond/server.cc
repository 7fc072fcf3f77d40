// SPDX-License-Identifier: MIT
// cmond's HTTP application; see server.h. The route table is built once (build_routes) and
// matched once per request (admit); a command request then goes through named steps: refuse
// (disabled, bad query, stopping, busy), run (alone or shared), answer (one table from run
// outcome to label, status and message).
#include "server.h"

#include "arena_routes.h"
#include "collector.h"
#include "log.h"
#include "query.h"
#include "reader.h"
#include "response.h"

#include "front/tls.h"

#include <boost/asio/ssl/context.hpp>
#include <openssl/crypto.h>

#include <cmath>
#include <optional>
#include <variant>

namespace cmond {

namespace front = cmon::front;

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kJson = "application/json";
constexpr const char* kMetricsType = "text/plain; version=0.0.4; charset=utf-8";
// After shutdown_timeout kills the commands, how long their answers may take to be written
// before the front end closes what is left.
constexpr Millis kAnswerGrace{1'000};

front::Response reply(const ApiReply& r) {
    front::Response res;
    res.status = r.code;
    res.content_type = kJson;
    res.body = render_reply(r);
    return res;
}

front::Response reply(std::variant<ApiReply, RawReply>&& r) {
    if (auto* raw = std::get_if<RawReply>(&r)) {
        front::Response res;
        res.content_type = std::move(raw->content_type);
        res.body = std::move(raw->body);
        return res;
    }
    return reply(std::get<ApiReply>(r));
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
// `param` receives the first ":name" segment's text.
bool path_matches(std::string_view pattern, std::string_view path, std::string_view& param) {
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
        const bool is_param = !want[i].empty() && want[i].front() == ':';
        if (is_param ? have[i].empty() : want[i] != have[i]) {
            return false;
        }
        if (is_param && param.empty()) {
            param = have[i];
        }
    }
    return true;
}

// Human wording of a duration for messages: "2s", "1500ms".
std::string wording(Millis d) {
    return d.count() % 1000 == 0 ? std::to_string(d.count() / 1000) + "s"
                                 : std::to_string(d.count()) + "ms";
}

// What a run's result means to a client and to the metrics: the one table from outcome to
// label, HTTP status and message.
struct Verdict {
    const char* label; // cmond_command_runs_total{result}
    int status;
    std::string message;
};

Verdict verdict(const RunResult& r, const CommandSpec& spec, bool stopping) {
    using O = RunResult::Outcome;
    if (r.ended_by_cap) {
        return {"output_cap", 500,
                "Command stopped at output_cap (" + std::to_string(spec.output_cap) +
                    " bytes): cmond closed its output pipe there, and it ended"};
    }
    switch (r.outcome) {
    case O::Exited:
        return r.exit_code == 0 ? Verdict{"ok", 200, "Command executed"}
                                : Verdict{"failed", 500, "Command failed"};
    case O::Signaled:
        return {"signaled", 500,
                "Command failed: killed by signal " + std::to_string(r.exit_code - 128)};
    case O::TimedOut:
        return {"timeout", 500, "Command timed out after " + wording(spec.timeout)};
    case O::Killed:
        return {"killed", 500, "Command killed: cmond is shutting down"};
    case O::SpawnFailed:
        return {"spawn_failed", stopping ? 503 : 500, "Command could not be started"};
    }
    return {"failed", 500, "Command failed"};
}

void cleanse_credentials(front::Request& request) {
    for (auto& [name, value] : request.headers) {
        if (strcasecmp(name.c_str(), "access_token") == 0 ||
            strcasecmp(name.c_str(), "Authorization") == 0) {
            OPENSSL_cleanse(value.data(), value.size());
        }
    }
}

} // namespace

// One entry of the route table.
struct Server::Route {
    std::string method;
    std::string pattern; // the path; a ":name" segment matches any one non-empty segment.
                         // Also the metrics and log label ("/arena/:pid/trim").
    std::string command; // command name for logs; empty for builtin routes
    std::vector<std::string_view> query; // the query parameters accepted (each at most once)
    std::function<front::Response(RequestState&)> handler;
};

struct Server::CommandSlot {
    const CommandSpec* spec;
    std::atomic<unsigned> in_progress{0}; // requests admitted: running or waiting for a run
    Coalescer coalescer;                  // used when spec->coalesce
};

// What admit() learned, for serve() and the access log.
struct Server::RequestState {
    const Route* route = nullptr; // the matched route, once authenticated
    std::string label = "unmatched";
    std::string path_param; // ":pid"
    QueryParams params;
    std::string note; // e.g. "auth=wrong"
    int exit_code = -1;
    double command_ms = -1;
    unsigned shared_by = 1; // requests that got the same command run
};

// ---- Construction ----

Server::Server(const Config& config, Key key)
    : config_(config), key_(std::move(key)),
      limiter_(config.auth_max_failures, config.auth_failure_window, config.auth_block_time) {
    if (config_.tls()) {
        try {
            tls_ = front::server_tls(config_.tls_cert, config_.tls_key, "tls_cert", "tls_key");
        } catch (const front::TlsError& e) {
            throw ConfigError(e.what());
        }
    }
    front::Limits limits;
    limits.request_timeout = config_.http_timeout;
    limits.write_timeout = config_.http_timeout;
    limits.max_connections = config_.max_connections;
    limits.max_per_address = config_.max_connections_per_address;
    limits.workers = config_.threads;
    front::Application& app = *this; // a private base: converted here, inside the class
    front_ = std::make_unique<front::Server>(app, limits, tls_.get());

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
                     " requests at once: when they do, /metrics and /arena answers wait for a "
                     "free thread (raise threads above the sum of the commands' concurrency)");
    }
    build_routes();
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
    front_.reset(); // joins the workers before the routes and slots go
}

void Server::build_routes() {
    for (const auto& spec : config_.commands) {
        CommandSlot& slot = slots_.emplace_back();
        slot.spec = &spec;
        routes_.push_back({spec.method, spec.route, spec.name,
                           spec.takes_branch() ? std::vector<std::string_view>{"branch"}
                                               : std::vector<std::string_view>{},
                           [this, &slot](RequestState& s) { return handle_command(slot, s); }});
    }
    const auto arena_options = arena_scan_options(config_);
    routes_.push_back(
        {"POST", "/restart", "restart", {}, [this](RequestState&) { return handle_restart(); }});
    routes_.push_back(
        {"GET", "/metrics", "", {}, [this](RequestState&) { return handle_metrics(); }});
    routes_.push_back({"GET", "/arena", "", {}, [this, arena_options](RequestState&) {
                           return reply(arena_list_reply(config_.stats_dir, arena_options));
                       }});
    routes_.push_back({"GET", "/arena/:pid", "", {}, [this, arena_options](RequestState& s) {
                           return reply(
                               arena_get_reply(config_.stats_dir, arena_options, s.path_param));
                       }});
    routes_.push_back({"POST", "/arena/:pid/trim", "", {}, [this, arena_options](RequestState& s) {
                           return reply(
                               arena_trim_reply(config_.stats_dir, arena_options, s.path_param));
                       }});
    routes_.push_back(
        {"GET", "/arena/:pid/profile", "", {"format"}, [this, arena_options](RequestState& s) {
             return reply(arena_profile_reply(config_.stats_dir, arena_options, s.path_param,
                                              query_value(s.params, "format")));
         }});
    routes_.push_back({"POST",
                       "/arena/:pid/profile",
                       "",
                       {"state", "rate"},
                       [this, arena_options](RequestState& s) {
                           return reply(arena_profile_request_reply(
                               config_.stats_dir, arena_options, s.path_param,
                               query_value(s.params, "state"), query_value(s.params, "rate")));
                       }});
}

// ---- Admission: event loop, before any body ----

std::optional<front::Response> Server::admit(front::Exchange& exchange) {
    RequestState& state = exchange.state.emplace<RequestState>();
    const front::Request& req = exchange.request;

    // Match once: the label for metrics and logs, the route and the methods for 405. The
    // answer to an unauthenticated client does not depend on it.
    const Route* match = nullptr;
    std::string allow;
    for (const auto& route : routes_) {
        std::string_view param;
        if (!path_matches(route.pattern, req.path, param)) {
            continue;
        }
        state.label = route.pattern;
        if (route.method == req.method) {
            match = &route;
            state.path_param = std::string(param);
            break;
        }
        allow += allow.empty() ? "" : ", ";
        allow += route.method;
    }

    if (auto refused = authenticate(exchange, state)) {
        return refused;
    }
    if (match == nullptr) {
        front::Response res = reply(error_reply(
            allow.empty() ? 404 : 405, allow.empty() ? "Not Found" : "Method Not Allowed"));
        if (!allow.empty()) {
            res.headers.emplace_back("Allow", allow);
        }
        return res;
    }
    auto parsed = parse_query(req.query);
    if (auto* bad = std::get_if<QueryError>(&parsed)) {
        return reply(error_reply(400, bad->message));
    }
    state.params = std::move(std::get<QueryParams>(parsed));
    if (auto problem = check_query(state.params, match->query)) {
        return reply(error_reply(400, *problem));
    }
    state.route = match;
    return std::nullopt;
}

// The key first: a valid key is served whatever the limiter thinks of its address. A bad or
// missing one is counted against the address, and an address over the limit gets 429.
std::optional<front::Response> Server::authenticate(front::Exchange& exchange,
                                                    RequestState& state) {
    front::Request& req = exchange.request;
    std::vector<std::string> tokens;
    std::vector<std::string> authorizations;
    for (const auto v : req.values("access_token")) {
        tokens.emplace_back(v);
    }
    for (const auto v : req.values("Authorization")) {
        authorizations.emplace_back(v);
    }
    const AuthResult auth = check_credentials(key_, tokens, authorizations);
    for (auto* list : {&tokens, &authorizations}) {
        for (auto& v : *list) {
            OPENSSL_cleanse(v.data(), v.size());
        }
    }
    cleanse_credentials(req);
    if (auth == AuthResult::Ok) {
        return std::nullopt;
    }

    const std::string_view reason = auth_result_name(auth);
    metrics_.auth_failure(reason);
    state.note = "auth=" + std::string(reason);
    if (const auto left = limiter_.blocked_for(req.remote, exchange.start)) {
        metrics_.rate_limited_request();
        state.note += " rate_limited";
        front::Response res = reply(
            error_reply(429, "Too many authentication failures from this address; retry later"));
        res.headers.emplace_back(
            "Retry-After", std::to_string(std::chrono::ceil<std::chrono::seconds>(*left).count()));
        return res;
    }
    if (limiter_.record_failure(req.remote, exchange.start)) {
        metrics_.client_blocked();
        log::warning("client " + log::sanitize(req.remote) + ": " +
                     std::to_string(config_.auth_max_failures) +
                     " authentication failures; its failed requests get 429 for " +
                     wording(config_.auth_block_time) + " (a valid key is still served)");
    }
    front::Response res;
    res.status = 401;
    res.content_type = kJson;
    res.body = std::string(kAuthErrorBody);
    res.headers.emplace_back("WWW-Authenticate", R"(Bearer realm="cmond")");
    return res;
}

// ---- Serving: a worker ----

front::Response Server::serve(front::Exchange& exchange) {
    RequestState& state = *std::any_cast<RequestState>(&exchange.state);
    return state.route->handler(state);
}

// A command request in three steps: refuse it (disabled, bad branch, stopping, busy) or take
// a concurrency slot; run (alone, or a shared run); answer from the verdict table.
front::Response Server::handle_command(CommandSlot& slot, RequestState& state) {
    std::string branch(kDefaultBranch);
    if (auto refused = refuse_command(slot, state, branch)) {
        return std::move(*refused);
    }
    struct Admitted {
        std::atomic<unsigned>& count;
        ~Admitted() { count.fetch_sub(1); }
    } admitted{slot.in_progress};
    const Coalescer::Outcome got = run_command(slot, branch);
    return command_reply(*slot.spec, got, state);
}

// The answer for a command request that must not run, or nullopt with a concurrency slot taken
// (released by the caller) and `branch` set.
std::optional<front::Response> Server::refuse_command(CommandSlot& slot, const RequestState& state,
                                                      std::string& branch) {
    const CommandSpec& spec = *slot.spec;
    const auto refuse = [&](const char* reason, int status, std::string message) {
        metrics_.command_rejected(spec.name, reason);
        return reply(error_reply(status, std::move(message)));
    };
    if (!spec.enabled) {
        return refuse("disabled", 403,
                      "Command '" + spec.name + "' is disabled in this cmond's configuration");
    }
    if (const auto given = query_value(state.params, "branch")) {
        branch = std::string(*given);
        if (const auto problem = branch_error(branch)) {
            return refuse("bad_request", 400, "Invalid branch: " + *problem);
        }
    }
    if (runner_.stopping()) {
        return refuse("shutting_down", 503, "cmond is shutting down");
    }
    unsigned in_progress = slot.in_progress.load();
    do {
        if (in_progress >= spec.concurrency) {
            front::Response res = refuse("busy", 429,
                                         "Command '" + spec.name + "' is busy (" +
                                             std::to_string(in_progress) + " in progress, limit " +
                                             std::to_string(spec.concurrency) + "); retry later");
            res.headers.emplace_back("Retry-After", "1");
            return res;
        }
    } while (!slot.in_progress.compare_exchange_weak(in_progress, in_progress + 1));
    return std::nullopt;
}

// One process per call of `execute`: metrics and the error log count runs, not requests.
Coalescer::Outcome Server::run_command(CommandSlot& slot, std::string_view branch) {
    const CommandSpec& spec = *slot.spec;
    const std::vector<std::string> argv = expand_argv(spec, branch);
    const auto execute = [&]() -> RunResult {
        metrics_.command_started(spec.name);
        RunResult r = runner_.run({argv, spec.workdir, spec.timeout, config_.kill_grace,
                                   spec.output_cap, config_.command_ld_preload});
        metrics_.command_finished(spec.name);
        metrics_.command_run(spec.name, verdict(r, spec, runner_.stopping()).label,
                             std::chrono::duration<double>(r.duration).count());
        if (r.outcome == RunResult::Outcome::SpawnFailed) {
            log::error("command " + spec.name + ": " + log::sanitize(r.error));
        }
        return r;
    };
    if (!spec.coalesce) {
        return Coalescer::Outcome{execute(), 1, true};
    }
    std::string key;
    for (const auto& a : argv) {
        key.append(a).push_back('\0'); // arguments never contain NUL (argv_template_error)
    }
    Coalescer::Outcome got = slot.coalescer.run(key, execute);
    if (!got.ran_here) {
        metrics_.command_coalesced(spec.name);
    }
    return got;
}

front::Response Server::command_reply(const CommandSpec& spec, const Coalescer::Outcome& got,
                                      RequestState& state) {
    const RunResult& r = got.result;
    const double ms = std::round(std::chrono::duration<double>(r.duration).count() * 1e6) / 1e3;
    state.exit_code = r.exit_code;
    state.command_ms = ms;
    state.shared_by = got.shared_by;
    const Verdict v = verdict(r, spec, runner_.stopping());
    ApiReply out;
    out.code = v.status;
    out.message = v.message;
    out.data = r.outcome == RunResult::Outcome::SpawnFailed ? Json(r.error) : Json(r.output);
    out.extra["exit_code"] = r.exit_code;
    out.extra["duration_ms"] = ms;
    out.extra["timed_out"] = r.outcome == RunResult::Outcome::TimedOut;
    out.extra["truncated"] = r.truncated;
    out.extra["shared_by"] = got.shared_by;
    return reply(out);
}

front::Response Server::handle_restart() {
    // The answer is written before run() returns: the front end finishes requests in flight.
    if (!start_stop(true)) {
        return reply(error_reply(503, "cmond is already stopping"));
    }
    const bool reexec = config_.restart_mode == RestartMode::Reexec;
    ApiReply out;
    out.message = "Restarting";
    out.data = reexec ? "cmond re-executes itself once in-flight requests are done"
                      : "cmond exits with status " + std::to_string(config_.restart_exit_code) +
                            " once in-flight requests are done, for its supervisor to restart it";
    front::Response res = reply(out);
    res.close = true;
    return res;
}

front::Response Server::handle_metrics() {
    metrics_.set_blocked_clients(limiter_.blocked_count(Clock::now()));
    metrics_.set_connections(front_->connections());
    for (const CommandSlot& slot : slots_) {
        if (slot.spec->coalesce) {
            metrics_.set_waiting(slot.spec->name, slot.coalescer.waiting());
        }
    }
    front::Response res;
    res.content_type = kMetricsType;
    res.body = metrics_.render();
    return res;
}

// ---- Logs and metrics ----

front::Response Server::error_response(int status, std::string_view message) {
    return reply(error_reply(status, std::string(message)));
}

void Server::rejected(const front::Rejection& rejection, bool log, unsigned suppressed) {
    metrics_.http_rejected(rejection.reason);
    if (!log) {
        return;
    }
    std::string line =
        "rejected client=" +
        (rejection.remote.empty() ? std::string("-") : log::sanitize(rejection.remote)) +
        " reason=" + std::string(rejection.reason);
    if (rejection.status != 0) {
        line += " code=" + std::to_string(rejection.status);
    }
    if (suppressed > 0) {
        line += " (" + std::to_string(suppressed) + " more rejections not logged)";
    }
    log::warning(line);
}

void Server::finished(const front::Exchange& exchange, const front::Response& res, bool delivered) {
    const auto* state = std::any_cast<RequestState>(&exchange.state);
    const RequestState empty;
    const RequestState& ctx = state != nullptr ? *state : empty;
    const front::Request& req = exchange.request;
    const double seconds = std::chrono::duration<double>(Clock::now() - exchange.start).count();
    metrics_.request(ctx.label, res.status, seconds);

    const log::Level level =
        !delivered || res.status >= 500 || res.status == 401 || res.status == 429
            ? log::Level::Warning
            : log::Level::Info;
    if (!log::enabled(level)) {
        return;
    }
    char duration[32];
    std::snprintf(duration, sizeof duration, "%.3f", seconds * 1e3);
    std::string line = "request client=" + log::sanitize(req.remote) +
                       " method=" + log::sanitize(req.method, 16) + " route=" + ctx.label;
    if (ctx.label == "unmatched") {
        line += " path=\"" + log::sanitize(req.path, 120) + "\"";
    }
    line += " code=" + std::to_string(res.status);
    if (ctx.route != nullptr && !ctx.route->command.empty()) {
        line += " command=" + ctx.route->command;
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
    if (!delivered) {
        line += " answer_not_delivered (the client closed or stopped reading)";
    }
    log::write(level, line);
}

// ---- Lifecycle ----

int Server::bind() {
    try {
        return front_->bind(config_.bind, config_.port);
    } catch (const front::BindError& e) {
        throw StartupError(e.what());
    }
}

RunOutcome Server::run() {
    const bool ok = front_->run();
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
        log::error("the accept loop failed");
        return RunOutcome::Failed;
    }
    return restart_requested_ ? RunOutcome::Restart : RunOutcome::Stopped;
}

void Server::request_stop() {
    start_stop(false);
}

bool Server::start_stop(bool restart) {
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
    front_->stop(config_.shutdown_timeout + kAnswerGrace);
    // At the deadline, kill what is still running, so that its requests can be answered.
    stopper_ = std::thread([this] {
        std::unique_lock held(stop_mutex_);
        if (!stop_cv_.wait_for(held, config_.shutdown_timeout, [this] { return finished_; })) {
            if (runner_.running() > 0) {
                log::warning("stopping: deadline reached, killing " +
                             std::to_string(runner_.running()) + " running command(s)");
            }
            runner_.kill_all();
        }
    });
    return true;
}

void Server::kill_commands() {
    runner_.kill_all();
}

} // namespace cmond
