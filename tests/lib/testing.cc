// SPDX-License-Identifier: MIT
#include "testing.h"

#include "process.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <map>
#include <poll.h>
#include <stdexcept>
#include <sys/wait.h>
#include <unistd.h>

namespace testing {
namespace {

std::map<std::string, ChildFn>& registry() {
    static std::map<std::string, ChildFn> r;
    return r;
}

/// This binary's path (for re-running it as a child), or "" if /proc/self/exe can't be read.
std::string self_exe() {
    char exe[4096];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    return n > 0 ? std::string(exe, static_cast<size_t>(n)) : std::string();
}

/// In a forked child: adds `env`, then runs `exe --child=NAME`, through the program named by
/// ARENA_TEST_EXEC_WRAPPER when that is set (an emulator such as qemu-aarch64-static, which
/// scripts/check_aarch64.sh uses: a child of an emulated test must be emulated too). Exit
/// status 127 when the exec fails.
[[noreturn]] void exec_child(const std::string& exe, const std::string& name,
                             const std::vector<std::string>& env) {
    for (const std::string& kv : env)
        putenv(strdup(kv.c_str()));
    const std::string arg = "--child=" + name;
    const char* wrapper = getenv("ARENA_TEST_EXEC_WRAPPER");
    if (wrapper != nullptr && *wrapper != '\0')
        execl(wrapper, wrapper, exe.c_str(), arg.c_str(), static_cast<char*>(nullptr));
    else
        execl(exe.c_str(), exe.c_str(), arg.c_str(), static_cast<char*>(nullptr));
    _exit(127);
}

/// The command line of this binary's child NAME, through ARENA_TEST_EXEC_WRAPPER when set (as
/// exec_child runs it).
std::vector<std::string> child_argv(const std::string& name) {
    const std::string exe = self_exe();
    if (exe.empty())
        throw std::runtime_error("/proc/self/exe cannot be read");
    const char* wrapper = getenv("ARENA_TEST_EXEC_WRAPPER");
    if (wrapper != nullptr && *wrapper != '\0')
        return {wrapper, exe, "--child=" + name};
    return {exe, "--child=" + name};
}

} // namespace

void exec_child(const std::string& name, const std::vector<std::string>& env) {
    const std::string exe = self_exe();
    if (exe.empty())
        _exit(127);
    exec_child(exe, name, env);
}

ChildRegistrar::ChildRegistrar(const char* name, ChildFn fn) {
    registry()[name] = fn;
}

namespace {

int wait_for_stdin() {
    void* (*volatile do_malloc)(size_t) = malloc; // never elided
    void* p = do_malloc(1000);
    printf("ready %d\n", getpid());
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    free(p);
    return 0;
}
const ChildRegistrar wait_for_stdin_child("wait_for_stdin", wait_for_stdin);

} // namespace

int run_registered_child(const char* name) {
    auto it = registry().find(name);
    if (it == registry().end()) {
        fprintf(stderr, "unknown child '%s'\n", name);
        return 99;
    }
    return it->second();
}

ChildResult run_child(const std::string& name, const std::vector<std::string>& env) {
    // No limit of its own: the test's (meson's) timeout comes first.
    const RunResult run_result =
        run(child_argv(name), {.env = env, .limit = std::chrono::hours(1)});
    ChildResult r;
    r.exited = !run_result.timed_out && run_result.signal == 0;
    r.code = r.exited ? run_result.status : -1;
    r.signal = run_result.signal;
    r.out = run_result.out;
    r.err = run_result.err;
    return r;
}

Child::Child(const std::string& name, const std::vector<std::string>& env) {
    const Spawned child =
        spawn({.argv = child_argv(name), .env = env, .in_pipe = true, .out_pipe = true});
    pid_ = child.pid;
    in_ = child.in;
    out_ = LineReader(child.out);
}

Child::~Child() {
    if (pid_ > 0) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }
    if (in_ >= 0)
        close(in_);
    if (out_.fd() >= 0)
        close(out_.fd());
}

std::string Child::read_line(int timeout_ms) {
    return out_.next(std::chrono::milliseconds(timeout_ms)).value_or("");
}

void Child::write_line(const std::string& line) {
    const std::string l = line + "\n";
    if (in_ >= 0 && ::write(in_, l.data(), l.size()) < 0)
        return;
}

int Child::wait() {
    if (in_ >= 0) {
        close(in_);
        in_ = -1;
    }
    int status = 0;
    if (pid_ <= 0 || waitpid(pid_, &status, 0) < 0)
        return -1;
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

size_t env_or(const char* name, size_t def) {
    const char* v = getenv(name);
    return v != nullptr && *v != '\0' ? strtoull(v, nullptr, 10) : def;
}

int rounds(int full) {
    const char* quick = getenv("ARENA_TEST_QUICK");
    if (quick == nullptr || std::string(quick) != "1")
        return full;
    return full / 4 > 0 ? full / 4 : 1;
}

bool on_libarena() {
    using OwnsFn = int (*)(const void*);
    auto owns = reinterpret_cast<OwnsFn>(dlsym(RTLD_DEFAULT, "arena_owns"));
    if (owns == nullptr)
        return false;
    void* p = malloc(24);
    const bool ours = owns(p) == 1;
    free(p);
    return ours;
}

size_t rss_bytes() {
    FILE* f = fopen("/proc/self/statm", "r");
    if (f == nullptr)
        return 0;
    unsigned long size = 0, resident = 0;
    const int got = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return got == 2 ? resident * static_cast<size_t>(sysconf(_SC_PAGESIZE)) : 0;
}

size_t count_occurrences(const std::string& hay, const std::string& needle) {
    size_t n = 0;
    for (size_t pos = hay.find(needle); pos != std::string::npos;
         pos = hay.find(needle, pos + needle.size()))
        ++n;
    return n;
}

void own_heap() {
    void* volatile q = malloc(3000); // volatile: a malloc only freed may be dropped
    free(q);
}

IdleThread::IdleThread(std::function<void()> work)
    : thread_([this, work = std::move(work)] {
          own_heap();
          work();
          step_ = 1;
          while (step_.load() != 2) { // waits without calling into the allocator
          }
      }) {
    while (step_.load() != 1) {
    }
}

IdleThread::~IdleThread() {
    step_ = 2;
    thread_.join();
}

bool comes_back(void* p, size_t n, int tries) {
    std::vector<void*> v;
    bool seen = false;
    for (int i = 0; i < tries && !seen; ++i) {
        v.push_back(malloc(n));
        seen = v.back() == p;
    }
    for (void* q : v)
        free(q);
    return seen;
}

} // namespace testing
