// SPDX-License-Identifier: MIT
// arena-prof: the heap profile of one process on libarena (profile.h; issue 16): its top call
// stacks as a table (once, or redrawn with --watch), as JSON (cmond's schema), as a pprof file or
// as folded stacks for flame graphs; --on and --off ask the process to start or stop sampling.
// Frames are resolved here, from the process's mappings and the files they name (libdw), never
// by the profiled process.
#include "cli_option.h"
#include "profile.h"
#include "reader.h"
#include "terminal.h"

#include "arena/profile_page.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unistd.h>

#ifndef ARENA_VERSION
#    error "ARENA_VERSION must be defined by the build"
#endif

namespace {

namespace cl = arena::client;
namespace pr = arena::client::profile;

constexpr const char* kUsage =
    "Usage: arena-prof [OPTIONS] PID\n"
    "Shows the heap profile of process PID (running on libarena): the call stacks of sampled\n"
    "allocations with their live and allocated bytes and objects, largest first.\n"
    "\n"
    "  --by live|alloc|count  order by live bytes (default), allocated bytes, or allocated\n"
    "                         objects\n"
    "  --top N                show the N first stacks (default 20; 0: all)\n"
    "  --watch [SECONDS]      redraw every SECONDS (default 2, 0.1 to 86400) until Ctrl-C\n"
    "  --count N              with --watch: stop after N redraws\n"
    "  --json                 print JSON (the schema of cmond's profile route)\n"
    "  --pprof FILE           write a gzip'd pprof profile to FILE ('-': stdout); read it with\n"
    "                         go tool pprof -http=: FILE (inuse_space is the default sample)\n"
    "  --folded               print folded stacks (\"outer;...;inner VALUE\", VALUE by --by)\n"
    "                         for flamegraph.pl and speedscope\n"
    "  --on [RATE]            ask PID to sample one allocation per RATE bytes on average\n"
    "                         (default 524288; 1 to 2^40; k, M, G: KiB, MiB, GiB)\n"
    "  --off                  ask PID to stop sampling (what it sampled stays readable)\n"
    "  --no-symbols           show addresses, do not resolve them\n"
    "  --dir BASE             base directory of stats pages (default $ARENA_STATS_DIR or\n"
    "                         " ARENA_STATS_DEFAULT_DIR ")\n"
    "  --path.procfs DIR      procfs mount point (default /proc; another one: no symbols)\n"
    "  --help, --version\n"
    "\n"
    "A process is profiled when started with ARENA_PROFILE=1 (ARENA_PROFILE_RATE=BYTES), or\n"
    "after --on. Reading its profile and resolving its frames needs its owner or root.\n"
    "Exit status: 0 on success, 1 when the profile cannot be read or the request made,\n"
    "2 on a usage error.\n";

enum class Output { Table, Json, Pprof, Folded };

struct Options {
    int pid = 0;
    std::string dir;
    cl::ScanOptions scan;
    pr::Order order = pr::Order::LiveBytes;
    size_t top = 20;
    bool watch = false;
    double interval = 2.0;
    long count = 0; // 0: until interrupted
    Output output = Output::Table;
    std::string pprof_file;
    std::optional<uint64_t> request; // --on RATE or --off (0)
    bool symbols = true;
};

[[noreturn]] void usage_error(const std::string& message) {
    fprintf(stderr, "arena-prof: %s\nTry 'arena-prof --help'.\n", message.c_str());
    exit(2);
}

/// A canonical positive decimal number no larger than `max`.
std::optional<uint64_t> parse_count(const std::string& s, uint64_t max) {
    if (s.empty() || s.size() > 20 || s.find_first_not_of("0123456789") != std::string::npos)
        return std::nullopt;
    errno = 0;
    const unsigned long long v = strtoull(s.c_str(), nullptr, 10);
    if (errno != 0 || v > max)
        return std::nullopt;
    return v;
}

/// Bytes, with an optional binary suffix: "4096", "512k", "1M", "2G".
std::optional<uint64_t> parse_rate(std::string s) {
    uint64_t unit = 1;
    if (!s.empty()) {
        switch (s.back()) {
        case 'k':
        case 'K':
            unit = 1ull << 10;
            break;
        case 'm':
        case 'M':
            unit = 1ull << 20;
            break;
        case 'g':
        case 'G':
            unit = 1ull << 30;
            break;
        default:
            break;
        }
        if (unit != 1)
            s.pop_back();
    }
    const std::optional<uint64_t> v = parse_count(s, ARENA_PROFILE_MAX_RATE);
    if (!v || *v == 0 || *v > ARENA_PROFILE_MAX_RATE / unit)
        return std::nullopt;
    return *v * unit;
}

bool is_pid(const std::string& s) {
    return !s.empty() && s[0] != '0' && parse_count(s, INT_MAX).has_value();
}

Options parse(int argc, char** argv) {
    Options o;
    o.dir = cl::default_dir();
    bool have_pid = false;
    int outputs = 0;
    // An optional value (--watch's, --on's) is the next argument when that is a number and a
    // pid is given elsewhere: `--watch 5 1234` and `1234 --watch 5`, but `--watch 1234`.
    const auto optional_number = [&](int i) {
        return [&, i](const std::string& next) {
            if (next.empty() || next.find_first_not_of("0123456789.kKmMgG") != std::string::npos)
                return false;
            bool pid_later = have_pid;
            for (int j = i + 2; j < argc && !pid_later; ++j)
                pid_later = is_pid(argv[j]);
            return pid_later;
        };
    };
    for (int i = 1; i < argc; ++i) {
        arena::cli::Option arg(argc, argv, i, usage_error);
        arg.answer_help_and_version(kUsage, "arena-prof", ARENA_VERSION);
        if (arg == "--by") {
            const std::string v = arg.value();
            if (v == "live")
                o.order = pr::Order::LiveBytes;
            else if (v == "alloc")
                o.order = pr::Order::AllocBytes;
            else if (v == "count")
                o.order = pr::Order::AllocObjects;
            else
                usage_error("invalid --by '" + v + "' (expected live, alloc or count)");
        } else if (arg == "--top") {
            const std::string v = arg.value();
            const auto n = parse_count(v, 1000000);
            if (!n)
                usage_error("invalid --top '" + v + "' (expected a number, 0 for all)");
            o.top = *n;
        } else if (arg == "--watch") {
            o.watch = true;
            if (const auto v = arg.optional_value(optional_number(i)))
                o.interval = arena::cli::watch_interval(*v, usage_error);
        } else if (arg == "--count") {
            const std::string v = arg.value();
            const auto n = parse_count(v, 1000000000);
            if (!n || *n == 0)
                usage_error("invalid --count '" + v + "' (expected a positive number)");
            o.count = static_cast<long>(*n);
        } else if (arg == "--json") {
            arg.no_value();
            o.output = Output::Json;
            ++outputs;
        } else if (arg == "--folded") {
            arg.no_value();
            o.output = Output::Folded;
            ++outputs;
        } else if (arg == "--pprof") {
            o.pprof_file = arg.value();
            if (o.pprof_file.empty())
                usage_error("--pprof needs a file name ('-' for stdout)");
            o.output = Output::Pprof;
            ++outputs;
        } else if (arg == "--on") {
            if (o.request)
                usage_error("give one of --on and --off, once");
            o.request = ARENA_PROFILE_DEFAULT_RATE;
            if (const auto v = arg.optional_value(optional_number(i))) {
                o.request = parse_rate(*v);
                if (!o.request)
                    usage_error("invalid --on rate '" + *v + "' (expected bytes, 1 to " +
                                std::to_string(ARENA_PROFILE_MAX_RATE) +
                                ", with an optional k, M or G)");
            }
        } else if (arg == "--off") {
            arg.no_value();
            if (o.request)
                usage_error("give one of --on and --off, once");
            o.request = 0;
        } else if (arg == "--no-symbols") {
            arg.no_value();
            o.symbols = false;
        } else if (arg == "--dir") {
            o.dir = arg.value();
            if (o.dir.empty())
                usage_error("--dir needs a directory");
        } else if (arg == "--path.procfs") {
            o.scan.procfs = arg.value();
            if (o.scan.procfs.empty())
                usage_error("--path.procfs needs a directory");
        } else if (arg.name().rfind("-", 0) == 0 && arg.name() != "-") {
            usage_error("unknown option '" + std::string(argv[i]) + "'");
        } else {
            if (have_pid)
                usage_error("one PID only ('" + std::string(argv[i]) + "' is a second one)");
            if (!is_pid(argv[i]))
                usage_error("invalid PID '" + std::string(argv[i]) + "'");
            o.pid = static_cast<int>(*parse_count(argv[i], INT_MAX));
            have_pid = true;
        }
    }
    if (!have_pid)
        usage_error("which process? Give its PID");
    if (outputs > 1)
        usage_error("give one of --json, --pprof and --folded");
    if (o.request && (outputs > 0 || o.watch))
        usage_error("--on and --off only send the request: run arena-prof again to read");
    if (o.watch && (o.output == Output::Pprof || o.output == Output::Folded))
        usage_error("--watch redraws the table or JSON, not --pprof or --folded");
    if (o.count != 0 && !o.watch)
        usage_error("--count needs --watch");
    return o;
}

// ---- Requests ----

int send_request(const Options& o) {
    const uint64_t rate = *o.request;
    const cl::ControlResult r = pr::request_profile(o.dir, o.pid, rate, o.scan);
    if (!r.ok()) {
        fprintf(stderr, "arena-prof: %s\n", r.detail.c_str());
        return 1;
    }
    // The process serves it on its next allocator slow path: wait a moment to say whether it has.
    bool served = false;
    for (int i = 0; i < 20 && !served; ++i) {
        cl::Skip why{};
        const auto p = cl::read_pid(o.dir, o.pid, o.scan, &why);
        served = p && p->control().profile_served >= r.requests;
        if (!served)
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const std::string what =
        rate == 0 ? "stop heap profiling"
                  : "heap profile at one sample per " + std::to_string(rate) + " bytes";
    printf("Asked pid %d to %s: %s.\n", o.pid, what.c_str(),
           served ? "done"
                  : "pending (served when the process next allocates; a process that does not "
                    "allocate does not see it)");
    return 0;
}

// ---- Reading ----

/// A Symbolizer of the process, or null (a warning says why, once).
std::unique_ptr<pr::Symbolizer> symbolizer(const Options& o, bool* warned) {
    if (!o.symbols || o.scan.procfs != "/proc")
        return nullptr;
    std::string error;
    auto sym = pr::Symbolizer::for_pid(o.pid, &error);
    if (!sym && !*warned) {
        fprintf(stderr, "arena-prof: frames stay addresses: %s\n", error.c_str());
        *warned = true;
    }
    return sym;
}

bool write_file(const std::string& path, const std::string& data) {
    if (path == "-")
        return arena::cli::write_all(data);
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0644);
    if (fd < 0)
        return false;
    size_t done = 0;
    while (done < data.size()) {
        const ssize_t w = write(fd, data.data() + done, data.size() - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += static_cast<size_t>(w);
    }
    const int saved = errno;
    const bool ok = close(fd) == 0 && done == data.size();
    errno = saved;
    return ok;
}

/// The profile of o.pid; prints why not and returns false.
bool read(const Options& o, pr::Profile* p) {
    const pr::ReadResult r = pr::read_pid(o.dir, o.pid, o.scan, p);
    if (!r.ok())
        fprintf(stderr, "arena-prof: %s\n", r.detail.c_str());
    return r.ok();
}

int show_once(const Options& o) {
    pr::Profile p;
    if (!read(o, &p))
        return 1;
    bool warned = false;
    const std::unique_ptr<pr::Symbolizer> sym = symbolizer(o, &warned);
    switch (o.output) {
    case Output::Table:
        return arena::cli::write_all(pr::to_table(p, sym.get(), o.order, o.top)) ? 0 : 1;
    case Output::Json:
        return arena::cli::write_all(pr::to_json(p, sym.get())) ? 0 : 1;
    case Output::Folded:
        return arena::cli::write_all(pr::to_folded(p, sym.get(), o.order)) ? 0 : 1;
    case Output::Pprof:
        if (!write_file(o.pprof_file, pr::to_pprof(p, sym.get()))) {
            fprintf(stderr, "arena-prof: cannot write %s: %s\n", o.pprof_file.c_str(),
                    strerror(errno));
            return 1;
        }
        if (o.pprof_file != "-")
            fprintf(stderr,
                    "arena-prof: wrote %s (%zu stacks); view it with: go tool pprof "
                    "-http=: %s\n",
                    o.pprof_file.c_str(), p.stacks.size(), o.pprof_file.c_str());
        return 0;
    }
    return 1;
}

/// One --watch table: on a terminal, as many stacks as fit (two lines each, under a four-line
/// header), each line cut to its width.
std::string table_frame(const Options& o, const pr::Profile& p, pr::Symbolizer* sym, bool tty) {
    if (!tty)
        return pr::to_table(p, sym, o.order, o.top);
    const auto [lines, columns] = arena::cli::terminal_size();
    size_t top = o.top;
    if (lines > 6)
        top = std::min(top == 0 ? SIZE_MAX : top, (lines - 5) / 2);
    return arena::cli::fit_width(pr::to_table(p, sym, o.order, top), columns);
}

int watch(const Options& o) {
    const bool tty = o.output == Output::Table && isatty(STDOUT_FILENO);
    arena::cli::Watch w(tty);
    bool warned = false;
    std::unique_ptr<pr::Symbolizer> sym = symbolizer(o, &warned);
    for (long frame = 0; o.count == 0 || frame < o.count; ++frame) {
        pr::Profile p;
        if (!read(o, &p)) // gone, or never profiled: nothing more to show
            return 1;
        if (sym && sym->stale()) // a library loaded or unloaded since
            sym = symbolizer(o, &warned);
        const std::string out = o.output == Output::Json ? pr::to_json(p, sym.get())
                                                         : (tty ? std::string(arena::cli::kClear)
                                                            : frame > 0 ? "\n"
                                                                        : "") +
                                                               table_frame(o, p, sym.get(), tty);
        if (!arena::cli::write_all(out))
            return 1;
        if (o.count != 0 && frame + 1 == o.count)
            break;
        if (!w.wait(o.interval))
            break;
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    if (o.request)
        return send_request(o);
    return o.watch ? watch(o) : show_once(o);
}
