// SPDX-License-Identifier: MIT
// bench_startup — process start-up: times fork + execve + wait of one program (default
// /bin/true) under one or more environments ("variants"), and prints one JSON line with each
// variant's per-start times: the wall time around the start, and the child's CPU time (user +
// system, from wait4), which covers the execve, the loading and everything the child ran, and
// which other work on the machine disturbs less than the wall time.
//
// The variants take turns start by start (A B C A B C ...), so a drift of the machine lands on
// all of them alike. This process itself runs with whatever environment it got (run_startup.py
// gives it no LD_PRELOAD); only the children get a variant's `--env NAME=VALUE` settings, so
// what is measured is a program starting on the allocator under test (loading it, initialising
// it, its stats page, exit), while the parent's fork is the same for every variant. The parent
// is small, so fork copies few page tables. Every child must exit 0, or the run fails: a start
// that broke is not a fast start.

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "proc.h"

extern char** environ;

namespace {

constexpr uint64_t kDefaultStarts = 200;
constexpr uint64_t kSmokeStarts = 20;

using Clock = std::chrono::steady_clock;

[[noreturn]] void usage(int rc) {
    std::fprintf(rc == 0 ? stdout : stderr,
                 "usage: bench_startup [--starts N] [--smoke] [--program PATH]\n"
                 "                     [--variant NAME] [--env NAME=VALUE]... [--variant ...]\n"
                 "  times N fork + execve + wait4 of PATH (default /bin/true) per variant, the\n"
                 "  variants taking turns start by start; a variant's children get this\n"
                 "  process's environment with each of its --env set (an empty VALUE is kept,\n"
                 "  not removed); --env before any --variant makes one variant 'default'.\n"
                 "  Prints one JSON line of per-start microseconds per variant.\n"
                 "  --starts N   starts per variant (default %" PRIu64 ", --smoke %" PRIu64 ")\n",
                 kDefaultStarts, kSmokeStarts);
    std::exit(rc);
}

/// One environment to start the program in, and what its starts took.
struct Variant {
    std::string name;
    std::vector<std::string> sets; // NAME=VALUE, replacing NAME= in the inherited environment
    std::vector<std::string> env;
    std::vector<char*> envp;
    std::vector<double> wall_us;
    std::vector<double> cpu_us;
};

/// This process's environment with each NAME=VALUE of `sets` replacing any NAME= entry.
std::vector<std::string> child_environment(const std::vector<std::string>& sets) {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
        const std::string_view entry = *e;
        const bool replaced = std::any_of(sets.begin(), sets.end(), [&](const std::string& s) {
            const size_t eq = s.find('=');
            return entry.substr(0, eq + 1) == std::string_view(s).substr(0, eq + 1);
        });
        if (!replaced) {
            env.emplace_back(entry);
        }
    }
    env.insert(env.end(), sets.begin(), sets.end());
    return env;
}

/// One start: fork, execve in the child, wait. Returns the child's wait status and stores its
/// CPU time in *cpu_us, or returns -1 (with a message) when fork or wait4 failed.
int start_once(const char* program, char* const* argv, char* const* envp, double* cpu_us) {
    const pid_t pid = fork();
    if (pid < 0) {
        std::fprintf(stderr, "bench_startup: fork: %s\n", std::strerror(errno));
        return -1;
    }
    if (pid == 0) {
        execve(program, argv, envp);
        // Only async-signal-safe calls between fork and _exit.
        static const char msg[] = "bench_startup: execve failed\n";
        (void)!write(2, msg, sizeof msg - 1);
        _exit(127);
    }
    int status = 0;
    rusage ru{};
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            std::fprintf(stderr, "bench_startup: wait4: %s\n", std::strerror(errno));
            return -1;
        }
    }
    auto us = [](const timeval& tv) { return tv.tv_sec * 1e6 + static_cast<double>(tv.tv_usec); };
    *cpu_us = us(ru.ru_utime) + us(ru.ru_stime);
    return status;
}

/// The p-quantile (0..1) of `v` (not empty), nearest rank.
double percentile(std::vector<double> v, double p) {
    std::sort(v.begin(), v.end());
    const size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(i, v.size() - 1)];
}

double mean(const std::vector<double>& v) {
    double sum = 0;
    for (double x : v) {
        sum += x;
    }
    return sum / static_cast<double>(v.size());
}

/// The variant's name as a JSON string body: printable ASCII only, quotes and backslashes
/// escaped (names come from the driver, but the output must stay JSON whatever they are).
std::string json_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
        }
        out += (c >= 0x20 && c < 0x7f) ? c : '?';
    }
    return out;
}

} // namespace

int main(int argc, char** argv) {
    uint64_t starts = 0;
    bool smoke = false;
    const char* program = "/bin/true";
    std::vector<Variant> variants;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "bench_startup: %s needs a value\n", argv[i]);
                std::exit(2);
            }
            return argv[++i];
        };
        if (arg == "--help" || arg == "-h") {
            usage(0);
        } else if (arg == "--starts") {
            starts = std::max<uint64_t>(bench::parse_u64("bench_startup", "--starts", value()), 1);
        } else if (arg == "--smoke") {
            smoke = true;
        } else if (arg == "--program") {
            program = value();
        } else if (arg == "--variant") {
            variants.push_back(Variant{value()});
        } else if (arg == "--env") {
            const char* set = value();
            if (std::strchr(set, '=') == nullptr || set[0] == '=') {
                std::fprintf(stderr, "bench_startup: --env needs NAME=VALUE, got '%s'\n", set);
                return 2;
            }
            if (variants.empty()) {
                variants.push_back(Variant{"default"});
            }
            variants.back().sets.emplace_back(set);
        } else {
            std::fprintf(stderr, "bench_startup: unexpected argument '%s'\n", argv[i]);
            usage(2);
        }
    }
    if (starts == 0) {
        starts = smoke ? kSmokeStarts : kDefaultStarts;
    }
    if (variants.empty()) {
        variants.push_back(Variant{"default"});
    }
    if (access(program, X_OK) != 0) {
        std::fprintf(stderr, "bench_startup: %s: not an executable file (%s)\n", program,
                     std::strerror(errno));
        return 2;
    }

    // Everything the children get is built before the first start: nothing but the start
    // itself is timed.
    for (Variant& v : variants) {
        v.env = child_environment(v.sets);
        for (std::string& e : v.env) {
            v.envp.push_back(e.data());
        }
        v.envp.push_back(nullptr);
        v.wall_us.reserve(starts);
        v.cpu_us.reserve(starts);
    }
    char* child_argv[] = {const_cast<char*>(program), nullptr};

    const auto begin = Clock::now();
    for (uint64_t n = 0; n < starts; ++n) {
        for (Variant& v : variants) {
            double cpu_us = 0;
            const auto t0 = Clock::now();
            const int status = start_once(program, child_argv, v.envp.data(), &cpu_us);
            const auto t1 = Clock::now();
            if (status < 0) {
                return 1;
            }
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                std::fprintf(stderr, "bench_startup: variant %s, start %" PRIu64 " of %s: %s %d\n",
                             v.name.c_str(), n + 1, program,
                             WIFSIGNALED(status) ? "killed by signal" : "exit status",
                             WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
                return 1;
            }
            v.wall_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
            v.cpu_us.push_back(cpu_us);
        }
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - begin).count();

    std::printf("{\"starts\": %" PRIu64 ", \"seconds\": %.6f, \"variants\": [", starts, seconds);
    for (size_t i = 0; i < variants.size(); ++i) {
        const Variant& v = variants[i];
        std::printf("%s{\"name\": \"%s\", \"median_us\": %.1f, \"mean_us\": %.1f, "
                    "\"min_us\": %.1f, \"p10_us\": %.1f, \"p90_us\": %.1f, \"max_us\": %.1f, "
                    "\"cpu_median_us\": %.1f, \"cpu_mean_us\": %.1f}",
                    i == 0 ? "" : ", ", json_escape(v.name).c_str(), percentile(v.wall_us, 0.5),
                    mean(v.wall_us), percentile(v.wall_us, 0), percentile(v.wall_us, 0.1),
                    percentile(v.wall_us, 0.9), percentile(v.wall_us, 1), percentile(v.cpu_us, 0.5),
                    mean(v.cpu_us));
    }
    std::printf("]}\n");
    return 0;
}
