// SPDX-License-Identifier: MIT
// arena-stat: every process with a libarena stats page, as a table (once, or refreshed like
// top with --watch) or as JSON for scripts. Rates (allocation and free calls per second) are
// the difference between two refreshes, so the first frame, and --once, show them as '-'.
// The columns are one table below: header, width, how to print, how to sort. The JSON is the
// stats client library's (json.h), the same schema as cmond's GET /arena/<pid>, plus the rates.
#include "cli_option.h"
#include "json.h"
#include "reader.h"
#include "schema.h"
#include "terminal.h"
#include "text.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <unistd.h>
#include <vector>

#ifndef ARENA_VERSION
#    error "ARENA_VERSION must be defined by the build"
#endif

namespace {

using arena::cli::fit_width;
using arena::cli::kClear;
using arena::cli::parse_seconds;
using arena::cli::terminal_size;
using arena::cli::Watch;
using arena::cli::write_all;
using arena::client::human_bytes;
using arena::client::printable;
using arena::client::Process;
using arena::client::Scan;
using arena::client::Skip;

constexpr const char* kUsage =
    "Usage: arena-stat [OPTIONS]\n"
    "Shows every process running on libarena (with a stats page): pid, comm, live, peak,\n"
    "resident and reserved bytes, allocation and free calls per second, errors.\n"
    "\n"
    "  --stats-dir DIR     base directory of stats pages, <DIR>/<uid>/<pid> (default\n"
    "                      $ARENA_STATS_DIR or " ARENA_STATS_DEFAULT_DIR ")\n"
    "  --path.procfs DIR   procfs mount point that tells live processes (default /proc)\n"
    "  --watch [SECONDS]   refresh every SECONDS (default 2, 0.1 to 86400) until Ctrl-C\n"
    "  --count N           with --watch: stop after N refreshes\n"
    "  --once              show one snapshot and exit (the default without --watch)\n"
    "  --json              print JSON instead of a table: one array of processes with every\n"
    "                      counter, as cmond's GET /arena/PID (with --watch, one array per\n"
    "                      line and refresh)\n"
    "  --sort COLUMN       pid, comm, live, peak, resident, reserved, allocs, frees or errors\n"
    "                      (default live; numbers sort descending). allocs and frees sort by\n"
    "                      rate once rates are known, else by the call counts.\n"
    "  --help, --version\n"
    "\n"
    "allocs: calls of malloc, calloc, realloc, the aligned forms and operator new.\n"
    "frees: calls of free and operator delete.\n"
    "errors: double frees and invalid frees caught, and allocations that failed.\n"
    "Exit status: 0 on success, 1 if the stats directory cannot be read (--watch shows the\n"
    "error and keeps trying), 2 on a usage error.\n";

// ---- A process and its derived numbers ----

struct Row {
    const Process* p = nullptr;
    uint64_t allocs = 0; // allocation calls
    uint64_t frees = 0;  // free calls
    uint64_t errors = 0; // heap errors and failed allocations
    std::optional<double> alloc_rate;
    std::optional<double> free_rate;
};

/// The previous frame's counters, to compute rates. A process is the same one if its pid,
/// start time and page creation time all match (a reused pid is a new process).
struct Previous {
    struct Key {
        int pid;
        uint64_t start_time;
        uint64_t created;
        bool operator<(const Key& o) const {
            return std::tie(pid, start_time, created) < std::tie(o.pid, o.start_time, o.created);
        }
    };
    std::map<Key, std::pair<uint64_t, uint64_t>> counts; // allocs, frees
    std::chrono::steady_clock::time_point when;
    bool valid = false;
};

Previous::Key key_of(const Process& p) {
    return {p.pid, p.start_time, p.created_unix_ns()};
}

std::vector<Row> make_rows(const Scan& scan, const Previous& prev,
                           std::chrono::steady_clock::time_point now) {
    std::vector<Row> rows;
    const double dt = std::chrono::duration<double>(now - prev.when).count();
    for (const Process& p : scan.processes) {
        Row r;
        r.p = &p;
        r.allocs = arena::client::allocation_calls(p);
        r.frees = arena::client::free_calls(p);
        r.errors = arena::client::error_count(p);
        if (prev.valid && dt > 0) {
            const auto it = prev.counts.find(key_of(p));
            if (it != prev.counts.end()) {
                const auto [a, f] = it->second;
                r.alloc_rate = r.allocs >= a ? double(r.allocs - a) / dt : 0.0;
                r.free_rate = r.frees >= f ? double(r.frees - f) / dt : 0.0;
            }
        }
        rows.push_back(r);
    }
    return rows;
}

Previous remember(const std::vector<Row>& rows, std::chrono::steady_clock::time_point now) {
    Previous prev;
    prev.when = now;
    prev.valid = true;
    for (const Row& r : rows)
        prev.counts[key_of(*r.p)] = {r.allocs, r.frees};
    return prev;
}

// ---- Formatting ----

std::string rate_text(const std::optional<double>& rate) {
    if (!rate)
        return "-";
    char buf[32];
    if (*rate < 10000)
        snprintf(buf, sizeof buf, "%.0f", *rate);
    else if (*rate < 10e6)
        snprintf(buf, sizeof buf, "%.1fk", *rate / 1e3);
    else
        snprintf(buf, sizeof buf, "%.1fM", *rate / 1e6);
    return buf;
}

// ---- The columns ----

enum class Order { Ascending, Descending };

struct Column {
    const char* name;   // --sort value
    const char* header; // table header
    int width;          // negative: left-aligned
    Order order;
    std::string (*text)(const Row&);
    /// Sort key: numbers compare as doubles; comm compares as text (key_text).
    double (*key)(const Row&, bool rates_known);
};

double gbl(uint64_t v) {
    return static_cast<double>(v);
}

// clang-format off
const Column kColumns[] = {
    {"pid", "PID", 8, Order::Ascending,
     [](const Row& r) { return std::to_string(r.p->pid); },
     [](const Row& r, bool) { return double(r.p->pid); }},
    {"comm", "COMM", -16, Order::Ascending,
     [](const Row& r) { return printable(r.p->comm, 16); }, nullptr},
    {"live", "LIVE", 10, Order::Descending,
     [](const Row& r) { return human_bytes(r.p->live_bytes()); },
     [](const Row& r, bool) { return gbl(r.p->live_bytes()); }},
    {"peak", "PEAK", 10, Order::Descending,
     [](const Row& r) { return human_bytes(r.p->gauge(ARENA_G_peak_live_bytes)); },
     [](const Row& r, bool) { return gbl(r.p->gauge(ARENA_G_peak_live_bytes)); }},
    {"resident", "RESIDENT", 10, Order::Descending,
     [](const Row& r) { return human_bytes(r.p->gauge(ARENA_G_resident_bytes)); },
     [](const Row& r, bool) { return gbl(r.p->gauge(ARENA_G_resident_bytes)); }},
    {"reserved", "RESERVED", 10, Order::Descending,
     [](const Row& r) { return human_bytes(r.p->gauge(ARENA_G_reserved_bytes)); },
     [](const Row& r, bool) { return gbl(r.p->gauge(ARENA_G_reserved_bytes)); }},
    {"allocs", "ALLOCS/S", 9, Order::Descending,
     [](const Row& r) { return rate_text(r.alloc_rate); },
     [](const Row& r, bool rates) { return rates ? r.alloc_rate.value_or(-1) : gbl(r.allocs); }},
    {"frees", "FREES/S", 9, Order::Descending,
     [](const Row& r) { return rate_text(r.free_rate); },
     [](const Row& r, bool rates) { return rates ? r.free_rate.value_or(-1) : gbl(r.frees); }},
    {"errors", "ERRORS", 7, Order::Descending,
     [](const Row& r) { return std::to_string(r.errors); },
     [](const Row& r, bool) { return gbl(r.errors); }},
};
// clang-format on

const Column* find_column(const std::string& name) {
    for (const Column& c : kColumns)
        if (name == c.name)
            return &c;
    return nullptr;
}

void sort_rows(std::vector<Row>& rows, const Column& by) {
    const bool rates = std::any_of(rows.begin(), rows.end(),
                                   [](const Row& r) { return r.alloc_rate.has_value(); });
    std::stable_sort(rows.begin(), rows.end(), [&](const Row& a, const Row& b) {
        if (by.key == nullptr) { // comm
            if (a.p->comm != b.p->comm)
                return a.p->comm < b.p->comm;
        } else {
            const double ka = by.key(a, rates), kb = by.key(b, rates);
            if (ka != kb)
                return by.order == Order::Descending ? ka > kb : ka < kb;
        }
        return a.p->pid < b.p->pid;
    });
}

std::string cell(const std::string& text, int width) {
    const size_t w = static_cast<size_t>(std::abs(width));
    if (text.size() >= w)
        return text;
    const std::string pad(w - text.size(), ' ');
    return width < 0 ? text + pad : pad + text;
}

std::string table_line(const std::vector<std::string>& cells) {
    std::string line;
    for (size_t i = 0; i < cells.size(); ++i) {
        if (i > 0)
            line += ' ';
        line += cell(cells[i], kColumns[i].width);
    }
    while (!line.empty() && line.back() == ' ')
        line.pop_back();
    return line + '\n';
}

std::string skipped_text(const Scan& scan) {
    std::string s;
    for (size_t r = 0; r < size_t(Skip::Count); ++r) {
        if (scan.skipped[r] == 0)
            continue;
        s += s.empty() ? "" : ", ";
        s += std::to_string(scan.skipped[r]) + " " + arena::client::skip_name(Skip(r));
    }
    return s;
}

/// One frame: a summary header, the column headers and up to `max_rows` rows (0: all).
std::string render_table(const Scan& scan, const std::vector<Row>& rows, const Column& sort,
                         const std::string& dir, size_t max_rows) {
    uint64_t live = 0, resident = 0, reserved = 0, errors = 0;
    double alloc_rate = 0, free_rate = 0;
    bool rates = false;
    for (const Row& r : rows) {
        live += r.p->live_bytes();
        resident += r.p->gauge(ARENA_G_resident_bytes);
        reserved += r.p->gauge(ARENA_G_reserved_bytes);
        errors += r.errors;
        if (r.alloc_rate) {
            rates = true;
            alloc_rate += *r.alloc_rate;
            free_rate += r.free_rate.value_or(0);
        }
    }
    char when[32];
    const time_t t = time(nullptr);
    struct tm tm_local;
    localtime_r(&t, &tm_local);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm_local);

    std::string out =
        "arena-stat " + std::string(when) + "  " + dir + "  sort: " + sort.name + "\n";
    out += std::to_string(rows.size()) + (rows.size() == 1 ? " process" : " processes") +
           ", live " + human_bytes(live) + ", resident " + human_bytes(resident) + ", reserved " +
           human_bytes(reserved) + ", allocs/s " +
           rate_text(rates ? std::optional(alloc_rate) : std::nullopt) + ", frees/s " +
           rate_text(rates ? std::optional(free_rate) : std::nullopt) + ", errors " +
           std::to_string(errors) + "\n";
    const std::string skipped = skipped_text(scan);
    if (!skipped.empty())
        out += "skipped: " + skipped + "\n";
    if (!scan.error.empty())
        out += "error: " + scan.error + "\n";
    std::vector<std::string> headers;
    for (const Column& c : kColumns)
        headers.push_back(c.header);
    out += '\n';
    out += table_line(headers);
    size_t shown = 0;
    for (const Row& r : rows) {
        if (max_rows != 0 && shown == max_rows) {
            out += '(';
            out += std::to_string(rows.size() - shown) + " more)\n";
            break;
        }
        std::vector<std::string> cells;
        for (const Column& c : kColumns)
            cells.push_back(c.text(r));
        out += table_line(cells);
        ++shown;
    }
    return out;
}

// ---- JSON ----

nlohmann::ordered_json to_json(const std::vector<Row>& rows) {
    nlohmann::ordered_json all = nlohmann::ordered_json::array();
    for (const Row& r : rows)
        all.push_back(arena::client::process_json(*r.p, {r.alloc_rate, r.free_rate}));
    return all;
}

// ---- Options ----

struct Options {
    std::string dir;
    arena::client::ScanOptions scan; // procfs
    bool watch = false;
    bool once = false;
    double interval = 2.0;
    long count = 0; // 0: until interrupted
    bool json = false;
    const Column* sort = &kColumns[2]; // live
};

[[noreturn]] void usage_error(const std::string& message) {
    fprintf(stderr, "arena-stat: %s\nTry 'arena-stat --help'.\n", message.c_str());
    exit(2);
}

Options parse(int argc, char** argv) {
    Options o;
    o.dir = arena::client::default_dir();
    for (int i = 1; i < argc; ++i) {
        arena::cli::Option arg(argc, argv, i, usage_error);
        arg.answer_help_and_version(kUsage, "arena-stat", ARENA_VERSION);
        if (arg == "--stats-dir") {
            o.dir = arg.value();
            if (o.dir.empty())
                usage_error("--stats-dir needs a directory");
        } else if (arg == "--path.procfs") {
            o.scan.procfs = arg.value();
            if (o.scan.procfs.empty())
                usage_error("--path.procfs needs a directory");
        } else if (arg == "--watch") {
            o.watch = true;
            // The interval is optional: a following number is taken as it.
            const std::optional<std::string> v = arg.optional_value(
                [](const std::string& next) { return parse_seconds(next).has_value(); });
            if (v)
                o.interval = arena::cli::watch_interval(*v, usage_error);
        } else if (arg == "--count") {
            const std::string v = arg.value();
            char* end = nullptr;
            errno = 0;
            const long n = strtol(v.c_str(), &end, 10);
            if (v.empty() || errno != 0 || *end != '\0' || n < 1 || n > 1000000000)
                usage_error("invalid --count '" + v + "' (expected a positive number)");
            o.count = n;
        } else if (arg == "--once") {
            arg.no_value();
            o.once = true;
        } else if (arg == "--json") {
            arg.no_value();
            o.json = true;
        } else if (arg == "--sort") {
            const std::string v = arg.value();
            o.sort = find_column(v);
            if (o.sort == nullptr)
                usage_error("invalid --sort '" + v +
                            "' (expected pid, comm, live, peak, resident, reserved, allocs, "
                            "frees or errors)");
        } else {
            usage_error("unknown argument '" + std::string(argv[i]) + "'");
        }
    }
    if (o.once && o.watch)
        usage_error("--once and --watch exclude each other");
    if (o.count != 0 && !o.watch)
        usage_error("--count needs --watch");
    return o;
}

// ---- Output ----

std::string json_text(const std::vector<Row>& rows, int indent) {
    // A comm or cmdline may hold any bytes: replace invalid UTF-8 instead of throwing.
    return to_json(rows).dump(indent, ' ', false,
                              nlohmann::ordered_json::error_handler_t::replace) +
           "\n";
}

int run_once(const Options& o) {
    const Scan scan = arena::client::scan(o.dir, o.scan);
    if (!scan.error.empty()) {
        fprintf(stderr, "arena-stat: %s\n", scan.error.c_str());
        return 1;
    }
    std::vector<Row> rows = make_rows(scan, Previous{}, std::chrono::steady_clock::now());
    sort_rows(rows, *o.sort);
    const std::string out =
        o.json ? json_text(rows, 2) : render_table(scan, rows, *o.sort, o.dir, 0);
    if (!write_all(out)) {
        fprintf(stderr, "arena-stat: cannot write the output: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

int run_watch(const Options& o) {
    const bool tty = !o.json && isatty(STDOUT_FILENO);
    Watch watch(tty);
    Previous prev;
    int status = 0;
    for (long frame = 0; o.count == 0 || frame < o.count; ++frame) {
        const Scan scan = arena::client::scan(o.dir, o.scan);
        const auto now = std::chrono::steady_clock::now();
        std::vector<Row> rows = make_rows(scan, prev, now);
        prev = remember(rows, now);
        sort_rows(rows, *o.sort);
        std::string out;
        if (o.json) {
            if (!scan.error.empty())
                fprintf(stderr, "arena-stat: %s\n", scan.error.c_str());
            out = json_text(rows, -1);
        } else if (tty) {
            // As many rows as fit under the header, keeping a line for "(N more)".
            const auto [lines, columns] = terminal_size();
            const size_t header =
                4 + (skipped_text(scan).empty() ? 0 : 1) + (scan.error.empty() ? 0 : 1);
            const size_t max_rows = lines > header + 2 ? lines - header - 1 : 1;
            out = kClear + fit_width(render_table(scan, rows, *o.sort, o.dir, max_rows), columns);
        } else {
            out = frame > 0 ? "\n" : "";
            out += render_table(scan, rows, *o.sort, o.dir, 0);
        }
        if (!write_all(out)) {
            status = 1;
            break;
        }
        if (o.count != 0 && frame + 1 == o.count)
            break;
        if (!watch.wait(o.interval))
            break;
    }
    return status;
}

} // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    return o.watch ? run_watch(o) : run_once(o);
}
