// SPDX-License-Identifier: MIT
// arena-exporter: serves the libarena stats pages of a directory as Prometheus metrics
// (GET /metrics), or prints them once (--once, for node_exporter's textfile collector).
// Flags become options, signals stop the server; the metrics are the stats client library's
// business (libarena/client: ArenaCollector over the reader and the schema).
#include "cli_option.h"
#include "collector.h"
#include "reader.h"

#include "front/server.h"
#include <prometheus/text_serializer.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <pthread.h>
#include <string>
#include <string_view>
#include <thread>

#ifndef ARENA_EXPORTER_VERSION
#    error "ARENA_EXPORTER_VERSION must be defined by the build"
#endif

namespace {

constexpr const char* kUsage =
    "Usage: arena-exporter [OPTIONS]\n"
    "Exports the allocator statistics of every process running on libarena as Prometheus\n"
    "metrics.\n"
    "\n"
    "  --listen HOST:PORT    address to serve /metrics on (default 127.0.0.1:9464; IPv6 as\n"
    "                        [::1]:9464; port 0 picks a free port)\n"
    "  --stats-dir DIR       base directory of stats pages, <DIR>/<uid>/<pid> (default\n"
    "                        $ARENA_STATS_DIR or " ARENA_STATS_DEFAULT_DIR ")\n"
    "  --path.procfs DIR     procfs mount point that tells live processes (default /proc;\n"
    "                        a host's /proc mounted elsewhere, as node_exporter's flag)\n"
    "  --group-by pid|comm   one series per process (default) or per command name\n"
    "  --once                print the metrics to stdout once and exit (for node_exporter's\n"
    "                        textfile collector)\n"
    "  --help                show this help\n"
    "  --version             show the version\n"
    "\n"
    "Exit status: 0 on success, 1 if the address cannot be served or the output cannot be\n"
    "written, 2 on a usage error.\n";

constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";
// A scrape in progress at SIGTERM may finish within this; the rest is closed.
constexpr std::chrono::milliseconds kStopDeadline{2000};

struct Options {
    std::string host = "127.0.0.1";
    int port = 9464;
    std::string stats_dir;
    arena::client::ScanOptions scan; // procfs
    arena::client::GroupBy group_by = arena::client::GroupBy::Pid;
    bool once = false;
};

[[noreturn]] void usage_error(const std::string& message) {
    fprintf(stderr, "arena-exporter: %s\nTry 'arena-exporter --help'.\n", message.c_str());
    exit(2);
}

/// HOST:PORT, [V6]:PORT. Returns false on anything else.
bool parse_listen(const std::string& text, std::string& host, int& port) {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0)
        return false;
    host = text.substr(0, colon);
    if (host.front() == '[') {
        if (host.size() < 3 || host.back() != ']')
            return false;
        host = host.substr(1, host.size() - 2);
    } else if (host.find(':') != std::string::npos) {
        return false; // an IPv6 address needs brackets
    }
    const std::string digits = text.substr(colon + 1);
    if (digits.empty() || digits.size() > 5 ||
        digits.find_first_not_of("0123456789") != std::string::npos)
        return false;
    port = std::atoi(digits.c_str());
    return port <= 65535;
}

Options parse(int argc, char** argv) {
    Options o;
    bool have_dir = false;
    for (int i = 1; i < argc; ++i) {
        arena::cli::Option arg(argc, argv, i, usage_error);
        arg.answer_help_and_version(kUsage, "arena-exporter", ARENA_EXPORTER_VERSION);
        if (arg == "--listen") {
            const std::string v = arg.value();
            if (!parse_listen(v, o.host, o.port))
                usage_error("invalid --listen '" + v +
                            "' (expected HOST:PORT, e.g. 127.0.0.1:9464)");
        } else if (arg == "--stats-dir") {
            o.stats_dir = arg.value();
            if (o.stats_dir.empty())
                usage_error("--stats-dir needs a directory");
            have_dir = true;
        } else if (arg == "--path.procfs") {
            o.scan.procfs = arg.value();
            if (o.scan.procfs.empty())
                usage_error("--path.procfs needs a directory");
        } else if (arg == "--group-by") {
            const std::string v = arg.value();
            const auto g = arena::client::parse_group_by(v);
            if (!g)
                usage_error("invalid --group-by '" + v + "' (expected pid or comm)");
            o.group_by = *g;
        } else if (arg == "--once") {
            arg.no_value();
            o.once = true;
        } else {
            usage_error("unknown argument '" + std::string(argv[i]) + "'");
        }
    }
    if (!have_dir)
        o.stats_dir = arena::client::default_dir();
    return o;
}

int print_once(const arena::client::ArenaCollector& collector) {
    const std::string text = prometheus::TextSerializer().Serialize(collector.Collect());
    const std::string error = collector.last_error();
    if (!error.empty())
        fprintf(stderr, "arena-exporter: %s\n", error.c_str());
    if (fwrite(text.data(), 1, text.size(), stdout) != text.size() || fflush(stdout) != 0) {
        fprintf(stderr, "arena-exporter: cannot write the metrics: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

constexpr const char* kIndex =
    "<!DOCTYPE html>\n<html><head><title>arena-exporter</title></head><body>\n"
    "<h1>arena-exporter</h1>\n<p>libarena allocator statistics of every process with a stats "
    "page.</p>\n<p><a href=\"/metrics\">Metrics</a></p>\n</body></html>\n";

// The HTTP side: read-only, GET and HEAD on / and /metrics; the front end (front/server.h)
// holds the connection limits, so a scanner or a slow client cannot starve Prometheus.
class Exporter final : public cmon::front::Application {
public:
    explicit Exporter(const arena::client::ArenaCollector& collector) : collector_(collector) {}

    std::optional<cmon::front::Response> admit(cmon::front::Exchange& ex) override {
        const auto& req = ex.request;
        if (req.method != "GET" && req.method != "HEAD") {
            cmon::front::Response res = text(405, "405 Method Not Allowed\n");
            res.headers.emplace_back("Allow", "GET, HEAD");
            return res;
        }
        if (req.path != "/" && req.path != "/metrics") {
            return text(404, "404 Not Found: see /metrics\n");
        }
        return std::nullopt;
    }

    cmon::front::Response serve(cmon::front::Exchange& ex) override {
        if (ex.request.path == "/") {
            cmon::front::Response res = text(200, kIndex);
            res.content_type = "text/html; charset=utf-8";
            return res;
        }
        cmon::front::Response res;
        res.content_type = kContentType;
        res.body = prometheus::TextSerializer().Serialize(collector_.Collect());
        return res;
    }

    void finished(const cmon::front::Exchange& ex, const cmon::front::Response& res,
                  bool delivered) override {
        if (!delivered) {
            fprintf(stderr, "arena-exporter: client %s: answer %d to %s not delivered\n",
                    ex.request.remote.c_str(), res.status,
                    ex.request.path == "/" ? "/" : "/metrics");
        }
    }

    void rejected(const cmon::front::Rejection& r, bool log, unsigned suppressed) override {
        if (log) {
            fprintf(
                stderr, "arena-exporter: rejected client=%s reason=%.*s%s%s\n",
                r.remote.empty() ? "-" : r.remote.c_str(), static_cast<int>(r.reason.size()),
                r.reason.data(), r.status != 0 ? (" code=" + std::to_string(r.status)).c_str() : "",
                suppressed != 0 ? (" (" + std::to_string(suppressed) + " more not logged)").c_str()
                                : "");
        }
    }

    cmon::front::Response error_response(int status, std::string_view message) override {
        return text(status, std::string(message) + "\n");
    }

private:
    static cmon::front::Response text(int status, std::string body) {
        cmon::front::Response res;
        res.status = status;
        res.content_type = "text/plain; charset=utf-8";
        res.body = std::move(body);
        return res;
    }

    const arena::client::ArenaCollector& collector_;
};

int serve(const Options& o, const arena::client::ArenaCollector& collector) {
    // SIGINT and SIGTERM are taken by one thread with sigwait, which stops the server; every
    // other thread (the server's loop and workers) inherits the blocked mask.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    Exporter app(collector);
    cmon::front::Limits limits;
    limits.workers = 4; // scrapes; each is bounded by the reader's deadline
    cmon::front::Server server(app, limits);
    int port = 0;
    try {
        port = server.bind(o.host, o.port);
    } catch (const cmon::front::BindError& e) {
        fprintf(stderr, "arena-exporter: %s\n", e.what());
        return 1;
    }
    const bool v6 = o.host.find(':') != std::string::npos;
    fprintf(stderr,
            "arena-exporter: serving http://%s%s%s:%d/metrics (stats dir %s, procfs %s, group by "
            "%s)\n",
            v6 ? "[" : "", o.host.c_str(), v6 ? "]" : "", port, o.stats_dir.c_str(),
            o.scan.procfs.c_str(), arena::client::group_by_name(o.group_by));
    std::atomic<bool> serving{true};
    std::thread stopper([&] {
        int sig = 0;
        sigwait(&stop_signals, &sig);
        if (serving.load()) {
            fprintf(stderr, "arena-exporter: %s, stopping\n", strsignal(sig));
        }
        server.stop(kStopDeadline);
    });
    const bool ok = server.run();
    // run() returns after stop(), or when the listener failed: then wake the signal thread (the
    // signal stays pending for its sigwait, as it is blocked everywhere).
    serving.store(false);
    // Not a kill: SIGTERM is blocked in every thread and the stopper takes it with sigwait.
    pthread_kill(stopper.native_handle(), SIGTERM); // NOLINT(bugprone-bad-signal-to-kill-thread)
    stopper.join();
    if (!ok) {
        fprintf(stderr, "arena-exporter: the server stopped accepting connections\n");
        return 1;
    }
    return 0;
}
} // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    const arena::client::ArenaCollector collector(o.stats_dir, o.group_by, o.scan);
    return o.once ? print_once(collector) : serve(o, collector);
}
