// SPDX-License-Identifier: MIT
#include "testing.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <csignal>
#include <map>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

namespace testing {
namespace {

std::map<std::string, ChildFn>& registry() {
    static std::map<std::string, ChildFn> r;
    return r;
}

std::string slurp_fd(int fd) {
    std::string s;
    char buf[4096];
    lseek(fd, 0, SEEK_SET);
    for (;;) {
        const ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        s.append(buf, static_cast<size_t>(n));
    }
    return s;
}

int temp_fd() {
    char path[] = "/tmp/arena-test-XXXXXX";
    const int fd = mkstemp(path);
    if (fd >= 0)
        unlink(path);
    return fd;
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
    ChildResult r;
    const int out_fd = temp_fd();
    const int err_fd = temp_fd();
    if (out_fd < 0 || err_fd < 0)
        return r;
    const std::string exe = self_exe();
    if (exe.empty())
        return r;
    const pid_t pid = fork();
    if (pid == 0) {
        dup2(out_fd, 1);
        dup2(err_fd, 2);
        exec_child(exe, name, env);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
    }
    r.exited = WIFEXITED(status);
    r.code = r.exited ? WEXITSTATUS(status) : -1;
    r.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    r.out = slurp_fd(out_fd);
    r.err = slurp_fd(err_fd);
    close(out_fd);
    close(err_fd);
    return r;
}

Child::Child(const std::string& name, const std::vector<std::string>& env) {
    int to_child[2], from_child[2];
    if (pipe2(to_child, O_CLOEXEC) != 0 || pipe2(from_child, O_CLOEXEC) != 0)
        return;
    const std::string exe = self_exe();
    if (exe.empty())
        return;
    pid_ = fork();
    if (pid_ == 0) {
        dup2(to_child[0], 0);
        dup2(from_child[1], 1);
        exec_child(exe, name, env);
    }
    close(to_child[0]);
    close(from_child[1]);
    in_ = to_child[1];
    out_ = from_child[0];
}

Child::~Child() {
    if (pid_ > 0) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }
    if (in_ >= 0)
        close(in_);
    if (out_ >= 0)
        close(out_);
}

std::string Child::read_line(int timeout_ms) {
    for (;;) {
        const size_t nl = buffered_.find('\n');
        if (nl != std::string::npos) {
            std::string line = buffered_.substr(0, nl);
            buffered_.erase(0, nl + 1);
            return line;
        }
        pollfd pfd{out_, POLLIN, 0};
        if (out_ < 0 || poll(&pfd, 1, timeout_ms) <= 0)
            return {};
        char buf[512];
        const ssize_t got = read(out_, buf, sizeof buf);
        if (got <= 0)
            return {};
        buffered_.append(buf, static_cast<size_t>(got));
    }
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
