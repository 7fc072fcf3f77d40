// SPDX-License-Identifier: MIT
// arena-exporter: serves the libarena stats pages of a directory as Prometheus metrics
// (GET /metrics), or prints them once (--once, for node_exporter's textfile collector).
// Flags become options, signals stop the server; the metrics are the stats client library's
// business (libarena/client: ArenaCollector over the reader and the schema).
#include "cli_option.h"
#include "collector.h"
#include "reader.h"

#include <httplib.h>
#include <prometheus/text_serializer.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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
        if (arg == "--help" || arg == "-h") {
            arg.no_value();
            fputs(kUsage, stdout);
            exit(0);
        } else if (arg == "--version") {
            arg.no_value();
            printf("arena-exporter %s\n", ARENA_EXPORTER_VERSION);
            exit(0);
        } else if (arg == "--listen") {
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

int serve(const Options& o, const arena::client::ArenaCollector& collector) {
    // SIGINT and SIGTERM are taken by one thread with sigwait, which stops the server; every
    // other thread (the server's pool included) inherits the blocked mask.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    httplib::Server server;
    server.set_tcp_nodelay(true);
    // Read-only: every other method is 405, on every path.
    server.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
        if (req.method == "GET" || req.method == "HEAD")
            return httplib::Server::HandlerResponse::Unhandled;
        res.status = 405;
        res.set_header("Allow", "GET, HEAD");
        res.set_content("405 Method Not Allowed\n", "text/plain; charset=utf-8");
        return httplib::Server::HandlerResponse::Handled;
    });
    server.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
        res.set_content(prometheus::TextSerializer().Serialize(collector.Collect()), kContentType);
    });
    server.Get("/", [](const httplib::Request&, httplib::Response& res) {
        res.set_content(kIndex, "text/html; charset=utf-8");
    });
    server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
        if (res.body.empty())
            res.set_content(res.status == 404 ? "404 Not Found: see /metrics\n"
                                              : std::to_string(res.status) + "\n",
                            "text/plain; charset=utf-8");
    });

    errno = 0;
    const int port = o.port == 0 ? server.bind_to_any_port(o.host.c_str())
                                 : (server.bind_to_port(o.host.c_str(), o.port) ? o.port : -1);
    if (port < 0) {
        fprintf(stderr, "arena-exporter: cannot listen on %s:%d: %s\n", o.host.c_str(), o.port,
                errno != 0 ? strerror(errno) : "bind failed");
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
        if (serving.load())
            fprintf(stderr, "arena-exporter: %s, stopping\n", strsignal(sig));
        // stop() does nothing until the server runs: a signal right after start waits for it.
        while (serving.load() && !server.is_running())
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        server.stop();
    });
    const bool ok = server.listen_after_bind();
    // listen_after_bind returns after stop(), or on an accept failure: then wake the signal
    // thread (the signal stays pending for its sigwait, as it is blocked everywhere).
    serving.store(false);
    pthread_kill(stopper.native_handle(), SIGTERM);
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
