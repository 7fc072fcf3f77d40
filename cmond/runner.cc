// SPDX-License-Identifier: MIT
// posix_spawn-based command runner; see runner.h for the contract.
//
// glibc's posix_spawn uses clone(CLONE_VM | CLONE_VFORK): no page tables are copied, so spawning
// stays cheap however large cmond grows, and an exec failure comes back as posix_spawn's return
// value instead of a child that exits 127 behind our back. Completion is detected on a pidfd
// (Linux >= 5.3) without reaping, so the process group can still be killed safely: a group ID
// cannot be reused while its leader is an unreaped zombie.
#include "runner.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <string_view>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace cmond {

namespace {

using Clock = std::chrono::steady_clock;

class Fd {
public:
    explicit Fd(int fd = -1) : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    int get() const { return fd_; }
    void reset() {
        if (fd_ >= 0) {
            ::close(fd_);
            fd_ = -1;
        }
    }

private:
    int fd_;
};

struct SpawnActions {
    posix_spawn_file_actions_t a;
    SpawnActions() { posix_spawn_file_actions_init(&a); }
    ~SpawnActions() { posix_spawn_file_actions_destroy(&a); }
};

struct SpawnAttr {
    posix_spawnattr_t a;
    SpawnAttr() { posix_spawnattr_init(&a); }
    ~SpawnAttr() { posix_spawnattr_destroy(&a); }
};

// The command's environment: cmond's without LD_PRELOAD, plus `ld_preload` when not empty.
// The pointers refer into `environ` and `storage`, which must outlive the spawn.
std::vector<char*> child_environment(const std::string& ld_preload, std::string& storage) {
    static constexpr std::string_view kPreload = "LD_PRELOAD=";
    std::vector<char*> env;
    for (char** e = environ; *e != nullptr; ++e) {
        if (std::string_view(*e).substr(0, kPreload.size()) != kPreload) {
            env.push_back(*e);
        }
    }
    if (!ld_preload.empty()) {
        storage = std::string(kPreload) + ld_preload;
        env.push_back(storage.data());
    }
    env.push_back(nullptr);
    return env;
}

// Poll timeout in ms until `t`, rounded up, at least 0.
int ms_until(Clock::time_point t, Clock::time_point now) {
    if (t <= now) {
        return 0;
    }
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(t - now).count();
    return static_cast<int>(std::min<long long>(ms, 60'000));
}

// Reads what the pipe has now, at most a few chunks so that deadlines are checked between
// bursts of a fast writer. Returns false at end of file.
bool drain(int fd, std::string& out, std::size_t cap, bool& truncated) {
    char buf[16384];
    for (int round = 0; round < 8; ++round) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
            const auto got = static_cast<std::size_t>(n);
            const std::size_t room = cap > out.size() ? cap - out.size() : 0;
            out.append(buf, std::min(room, got));
            truncated = truncated || got > room;
            continue;
        }
        if (n == 0) {
            return false;
        }
        if (errno == EINTR) {
            continue;
        }
        // EAGAIN: nothing more for now. Any other error: treat as end of output.
        return errno == EAGAIN;
    }
    return true;
}

bool leader_has_exited(pid_t pid) {
    siginfo_t si{};
    return ::waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           si.si_pid == pid;
}

} // namespace

const char* outcome_name(RunResult::Outcome outcome) {
    switch (outcome) {
    case RunResult::Outcome::Exited:
        return "exited";
    case RunResult::Outcome::Signaled:
        return "signaled";
    case RunResult::Outcome::TimedOut:
        return "timeout";
    case RunResult::Outcome::Killed:
        return "killed";
    case RunResult::Outcome::SpawnFailed:
        return "spawn_failed";
    }
    return "unknown";
}

void Runner::stop_accepting() {
    std::lock_guard lock(mutex_);
    stopping_ = true;
}

bool Runner::stopping() const {
    std::lock_guard lock(mutex_);
    return stopping_;
}

void Runner::kill_all() {
    std::lock_guard lock(mutex_);
    killed_all_ = true;
    for (const pid_t g : groups_) {
        ::kill(-g, SIGKILL);
        killed_groups_.insert(g);
    }
}

std::size_t Runner::running() const {
    std::lock_guard lock(mutex_);
    return groups_.size();
}

RunResult Runner::run(const RunSpec& spec) {
    const auto start = Clock::now();
    RunResult result;
    auto finish = [&]() -> RunResult {
        result.duration = Clock::now() - start;
        return std::move(result);
    };
    if (stopping()) {
        result.error = "cmond is shutting down";
        return finish();
    }
    if (spec.argv.empty() || spec.argv.front().empty()) {
        result.error = "empty argv";
        return finish();
    }

    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        result.error = std::string("pipe: ") + std::strerror(errno);
        return finish();
    }
    Fd read_end(fds[0]);
    Fd write_end(fds[1]);

    SpawnActions actions;
    posix_spawn_file_actions_addopen(&actions.a, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions.a, write_end.get(), STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions.a, write_end.get(), STDERR_FILENO);
    if (!spec.workdir.empty()) {
        posix_spawn_file_actions_addchdir_np(&actions.a, spec.workdir.c_str());
    }
    // Sockets accepted by the HTTP library are not close-on-exec: close everything above 2.
    posix_spawn_file_actions_addclosefrom_np(&actions.a, STDERR_FILENO + 1);

    SpawnAttr attr;
    sigset_t none;
    sigset_t all;
    sigemptyset(&none);
    sigfillset(&all);
    // New session: a new process group to kill as one, and no controlling terminal for a
    // program (git) to prompt on. Signals: cmond blocks SIGINT/SIGTERM and ignores SIGPIPE, and
    // both would be inherited through exec.
    posix_spawnattr_setflags(&attr.a,
                             POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setsigmask(&attr.a, &none);
    posix_spawnattr_setsigdefault(&attr.a, &all);

    std::vector<char*> argv;
    argv.reserve(spec.argv.size() + 1);
    for (const auto& a : spec.argv) {
        argv.push_back(const_cast<char*>(a.c_str()));
    }
    argv.push_back(nullptr);

    std::string preload_entry;
    const std::vector<char*> envp = child_environment(spec.ld_preload, preload_entry);

    pid_t pid = -1;
    const bool search_path = spec.argv.front().find('/') == std::string::npos;
    const int err =
        search_path ? ::posix_spawnp(&pid, argv[0], &actions.a, &attr.a, argv.data(), envp.data())
                    : ::posix_spawn(&pid, argv[0], &actions.a, &attr.a, argv.data(), envp.data());
    write_end.reset(); // our copy: EOF arrives when every process holding it is gone
    if (err != 0) {
        result.error = "cannot start '" + spec.argv.front() + "'" +
                       (spec.workdir.empty() ? "" : " in '" + spec.workdir + "'") + ": " +
                       std::strerror(err);
        return finish();
    }
    {
        std::lock_guard lock(mutex_);
        groups_.insert(pid);
        if (killed_all_) {
            ::kill(-pid, SIGKILL);
            killed_groups_.insert(pid);
        }
    }

    Fd pidfd(static_cast<int>(
        ::syscall(SYS_pidfd_open, pid, 0))); // -1 on old kernels: then exit is polled every 10 ms
    ::fcntl(read_end.get(), F_SETFL, ::fcntl(read_end.get(), F_GETFL) | O_NONBLOCK);

    const auto deadline = start + spec.timeout;
    bool pipe_open = true;
    bool leader_exited = false;
    bool term_sent = false;
    bool kill_sent = false;
    Clock::time_point kill_at{};
    Clock::time_point linger_until{};
    for (;;) {
        if (!leader_exited && leader_has_exited(pid)) {
            leader_exited = true;
            linger_until = Clock::now() + kLinger;
        }
        if (leader_exited && (!pipe_open || term_sent)) {
            break; // done; after a timeout, do not wait for the group's output either
        }
        const auto now = Clock::now();
        Clock::time_point next;
        if (leader_exited) {
            if (now >= linger_until) {
                break; // group members still hold the pipe: they are killed below
            }
            next = linger_until;
        } else if (!term_sent) {
            if (now >= deadline) {
                ::kill(-pid, SIGTERM);
                term_sent = true;
                kill_at = now + spec.kill_grace;
                continue;
            }
            next = deadline;
        } else if (!kill_sent) {
            if (now >= kill_at) {
                ::kill(-pid, SIGKILL);
                kill_sent = true;
                continue;
            }
            next = kill_at;
        } else {
            next = now + std::chrono::seconds(1); // SIGKILL sent: the exit is imminent
        }
        int timeout = ms_until(next, now);
        pollfd pfd[2];
        nfds_t n = 0;
        if (pipe_open) {
            pfd[n++] = {read_end.get(), POLLIN, 0};
        }
        if (!leader_exited) {
            if (pidfd.get() >= 0) {
                pfd[n++] = {pidfd.get(), POLLIN, 0};
            } else {
                timeout = std::min(timeout, 10);
            }
        }
        const int r = ::poll(pfd, n, timeout);
        if (r < 0 && errno != EINTR) {
            result.error = std::string("poll: ") + std::strerror(errno);
            ::kill(-pid, SIGKILL); // cannot supervise it any more
            break;
        }
        if (r > 0 && pipe_open && pfd[0].revents != 0) {
            pipe_open = drain(read_end.get(), result.output, spec.output_cap, result.truncated);
        }
    }

    // The leader is a zombie (or, after a poll error, killed): its group ID is still reserved,
    // so this reaches exactly the command's own leftovers.
    ::kill(-pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (pipe_open) {
        bool ignored = false;
        drain(read_end.get(), result.output, spec.output_cap, ignored);
        result.truncated = result.truncated || ignored;
    }
    bool killed = false;
    {
        std::lock_guard lock(mutex_);
        groups_.erase(pid);
        killed = killed_groups_.erase(pid) > 0;
    }

    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status)
                                         : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    if (killed) {
        result.outcome = RunResult::Outcome::Killed;
    } else if (term_sent) {
        result.outcome = RunResult::Outcome::TimedOut;
    } else if (WIFEXITED(status)) {
        result.outcome = RunResult::Outcome::Exited;
    } else {
        result.outcome = RunResult::Outcome::Signaled;
    }
    return finish();
}

} // namespace cmond
