// SPDX-License-Identifier: MIT
#include "process.h"

#include "common.h"

#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <stdexcept>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace testing {

namespace {

std::vector<char*> pointers(const std::vector<std::string>& strings) {
    std::vector<char*> out;
    out.reserve(strings.size() + 1);
    for (const std::string& s : strings)
        out.push_back(const_cast<char*>(s.c_str()));
    out.push_back(nullptr);
    return out;
}

/// A pipe whose two ends are close-on-exec; throws when it cannot be made.
std::pair<int, int> make_pipe() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        throw std::runtime_error("pipe2 failed");
    return {fds[0], fds[1]};
}

void close_if_open(int fd) {
    if (fd >= 0)
        close(fd);
}

/// In the forked child (async-signal-safe calls only): `fd` becomes `target`, opened from `path`
/// ("" means /dev/null) when `fd` is -1.
bool redirect(int fd, const char* path, int flags, int target) {
    const int f = fd >= 0 ? fd : open(*path != '\0' ? path : "/dev/null", flags | O_CLOEXEC, 0644);
    return f >= 0 && dup2(f, target) >= 0;
}

} // namespace

std::vector<std::string> merged_environment(const std::vector<std::string>& changes) {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
        const std::string entry(*e);
        const std::string key = entry.substr(0, entry.find('=') + 1);
        bool changed = false;
        for (const std::string& c : changes)
            changed = changed || c.rfind(key, 0) == 0;
        if (!changed)
            env.push_back(entry);
    }
    for (const std::string& c : changes)
        if (!c.empty() && c.back() != '=') // "K=" removes K
            env.push_back(c);
    return env;
}

Spawned spawn(const Spawn& s) {
    const std::vector<std::string> env = merged_environment(s.env);
    const std::vector<char*> argv = pointers(s.argv);
    const std::vector<char*> envp = pointers(env);
    std::pair<int, int> in{-1, -1};
    std::pair<int, int> out{-1, -1};
    if (s.in_pipe)
        in = make_pipe();
    if (s.out_pipe) {
        try {
            out = make_pipe();
        } catch (...) {
            close_if_open(in.first);
            close_if_open(in.second);
            throw;
        }
    }
    const pid_t pid = fork();
    if (pid == 0) {
        if (!redirect(in.first, s.in.c_str(), O_RDONLY, 0) ||
            !redirect(out.second, s.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 1) ||
            !redirect(-1, s.err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 2) ||
            (!s.cwd.empty() && chdir(s.cwd.c_str()) != 0))
            _exit(126);
        if (s.run_as && (setgroups(0, nullptr) != 0 || setgid(s.run_as->second) != 0 ||
                         setuid(s.run_as->first) != 0))
            _exit(125);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        signal(SIGPIPE, SIG_DFL);
        execve(argv[0], argv.data(), envp.data());
        static const char kMsg[] = "test helper: execve failed\n";
        [[maybe_unused]] const ssize_t n = write(2, kMsg, sizeof kMsg - 1);
        _exit(127);
    }
    close_if_open(in.first);
    close_if_open(out.second);
    if (pid < 0) {
        close_if_open(in.second);
        close_if_open(out.first);
        throw std::runtime_error("fork failed");
    }
    return Spawned{pid, in.second, out.first};
}

int exit_code(int wait_status) {
    return WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
}

std::optional<std::string> LineReader::next(std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    for (;;) {
        const size_t nl = buffered_.find('\n');
        if (nl != std::string::npos) {
            std::string line = buffered_.substr(0, nl);
            buffered_.erase(0, nl + 1);
            return line;
        }
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            end - std::chrono::steady_clock::now());
        if (fd_ < 0 || left.count() <= 0)
            return std::nullopt;
        pollfd p{fd_, POLLIN, 0};
        const int ready = poll(&p, 1, static_cast<int>(left.count()));
        if (ready < 0 && errno != EINTR)
            return std::nullopt;
        if (ready <= 0)
            continue;
        char buf[1024];
        const ssize_t n = read(fd_, buf, sizeof buf);
        if (n <= 0)
            return std::nullopt;
        buffered_.append(buf, static_cast<size_t>(n));
    }
}

RunResult run(const std::vector<std::string>& argv, const RunOptions& options) {
    TempDir tmp("run");
    const Spawn s{.argv = argv,
                  .env = options.env,
                  .cwd = options.cwd,
                  .in = tmp.write("stdin", options.input),
                  .out = tmp.file("stdout"),
                  .err = tmp.file("stderr")};
    const pid_t pid = spawn(s).pid;
    RunResult r;
    int status = 0;
    const bool exited = eventually([&] { return waitpid(pid, &status, WNOHANG) == pid; },
                                   options.limit, std::chrono::milliseconds(5));
    if (exited) {
        r.status = exit_code(status);
        r.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    } else {
        kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        r.timed_out = true;
    }
    r.out = read_file(s.out);
    r.err = read_file(s.err);
    return r;
}

RunResult go_pprof_top(const std::string& file, const std::string& home) {
    RunOptions o;
    o.env = {"HOME=" + home,
             "GOCACHE=" + home + "/gocache",
             "GOPATH=" + home + "/go",
             "GOTOOLCHAIN=local",
             "GOFLAGS=",
             "PPROF_TMPDIR=" + home};
    o.limit = std::chrono::seconds(60);
    return run({"/usr/bin/go", "tool", "pprof", "-top", "-sample_index=inuse_space", file}, o);
}

} // namespace testing
