// SPDX-License-Identifier: MIT
// Command runner; see runner.h for the contract.
//
// One run, as processes:
//
//   cmond thread in run() --clone--> supervisor (subreaper) --posix_spawn--> command --> ...
//   (suspended until the              reads the output, enforces the         (new session)
//    supervisor exits)                deadline, kills and reaps the tree
//
// Why the supervisor is a clone(CLONE_VM | CLONE_VFORK) and not a fork(): fork copies cmond's
// page tables, and while the child lives every page cmond writes faults once more (copy on
// write): per run, thousands of runs per second under /health load. Like glibc's posix_spawn
// child, the supervisor shares cmond's memory, and the calling thread is suspended until it
// exits, so nothing is copied and it writes its findings straight into run()'s frame. In
// exchange it lives by a vfork child's rules: no malloc, no locks, no exceptions, only
// async-signal-safe calls (run() prepares everything before the clone), on a stack of its own,
// with every signal blocked (cmond's handlers must never run on it). It also shares cmond's
// descriptor table (CLONE_FILES): it holds no copies of cmond's sockets (which would keep
// closed connections open for the length of a run), and the pipe ends it closes are closed for
// good, which is what makes end of file and the output cap work. Each Supervision field that
// holds a descriptor is set to -1 before the close, so that run() closes what is left exactly
// once even if the supervisor was killed.
//
// The supervisor waits in poll() on the output pipe and on a signalfd for SIGCHLD (the command
// or an orphan ended) and SIGTERM (kill_all(), an administrator, or cmond's death through
// PR_SET_PDEATHSIG). At the end it kills the command's group while the command is unreaped (so
// the group ID still names that group only), reaps the command, then SIGKILLs every child it
// still has (orphans reparented to it; their pids, listed in /proc/thread-self/children, cannot
// be reused before it reaps them), waits for one to end, and looks again, until it has no child
// left: a process that forks while it is being killed only adds a child to the next round. A
// run that leaves nothing behind pays one waitpid() for this.
#include "runner.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <memory>
#include <new>
#include <poll.h>
#include <sched.h>
#include <spawn.h>
#include <string_view>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace cmond {

using Clock = std::chrono::steady_clock;

// One run: what its supervisor needs (prepared by run(), as it must not allocate) and what it
// found. Lives in run()'s frame; the supervisor writes into it through the shared memory, and
// run() reads it once the supervisor has exited.
struct Supervision {
    // ---- prepared by run() ----
    const char* program = nullptr;
    char* const* argv = nullptr;
    char* const* envp = nullptr;
    const posix_spawn_file_actions_t* actions = nullptr;
    const posix_spawnattr_t* attr = nullptr;
    bool search_path = false; // argv[0] has no '/': posix_spawnp
    pid_t cmond = -1;         // getpid() of cmond: the supervisor's parent while cmond lives
    Clock::time_point deadline{};
    Clock::duration kill_grace{};
    const std::atomic<bool>* killed_all = nullptr; // Runner::killed_all_
    char* out = nullptr;                           // cap + 1 bytes: the extra byte shows excess
    std::size_t cap = 0;
    int read_fd = -1; // the output pipe (read end non-blocking); -1 once closed
    int write_fd = -1;
    int signal_fd = -1; // the supervisor's signalfd
    // ---- found by the supervisor ----
    int spawn_error = 0; // posix_spawn's error: the command was not started
    pid_t command = -1;
    int status = 0; // the command's wait status, when reaped
    bool reaped = false;
    std::size_t out_len = 0;
    bool truncated = false;
    bool term_sent = false;            // the deadline passed: SIGTERM went to the command's group
    bool stopped = false;              // kill_all(), SIGTERM to the supervisor, or cmond is gone
    const char* failed_call = nullptr; // a call that supervision needed and that failed
    int failed_errno = 0;
    // ---- found by run() ----
    int supervisor_status = 0;
};

namespace {

constexpr std::size_t kSupervisorStack = std::size_t{64} << 10;

// ---- Helpers of both sides ----

// Marks `fd` closed, then closes it (see the top of the file for the order).
void close_fd(int& fd) noexcept {
    const int f = fd;
    fd = -1;
    if (f >= 0) {
        ::close(f);
    }
}

// Poll timeout in ms until `t`, rounded up, at least 0.
int ms_until(Clock::time_point t, Clock::time_point now) noexcept {
    if (t <= now) {
        return 0;
    }
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(t - now).count();
    return static_cast<int>(std::min<long long>(ms, 60'000));
}

// ---- The supervisor (async-signal-safe code only: see the top of the file) ----

bool fail(Supervision& s, const char* call) noexcept {
    if (s.failed_call == nullptr) {
        s.failed_call = call;
        s.failed_errno = errno;
    }
    return false;
}

// Becomes the subreaper, arranges to hear of cmond's death, and starts the command.
bool start_command(Supervision& s) noexcept {
    // cmond may ignore SIGCHLD, which would reap the command behind our back.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGCHLD, &dfl, nullptr);
    if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
        return fail(s, "prctl(PR_SET_CHILD_SUBREAPER)");
    }
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    sigset_t watched;
    sigemptyset(&watched);
    sigaddset(&watched, SIGCHLD);
    sigaddset(&watched, SIGTERM);
    s.signal_fd = ::signalfd(-1, &watched, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s.signal_fd < 0) {
        return fail(s, "signalfd");
    }
    if (::getppid() != s.cmond) {
        s.stopped = true; // cmond died before the prctl: nobody is waiting for this run
        return false;
    }
    pid_t pid = -1;
    s.spawn_error = s.search_path
                        ? ::posix_spawnp(&pid, s.program, s.actions, s.attr, s.argv, s.envp)
                        : ::posix_spawn(&pid, s.program, s.actions, s.attr, s.argv, s.envp);
    close_fd(s.write_fd); // only the command's processes hold it now: their end is our EOF
    if (s.spawn_error != 0) {
        return false;
    }
    s.command = pid;
    return true;
}

// Empties the signalfd. Returns true when SIGCHLD was among the signals.
bool take_signals(Supervision& s) noexcept {
    bool child = false;
    signalfd_siginfo info[8];
    for (;;) {
        const ssize_t n = ::read(s.signal_fd, info, sizeof info);
        if (n <= 0) {
            return child; // EAGAIN: empty
        }
        for (std::size_t i = 0; i < static_cast<std::size_t>(n) / sizeof info[0]; ++i) {
            if (info[i].ssi_signo == SIGTERM) {
                s.stopped = true;
            } else {
                child = true;
            }
        }
    }
}

bool command_exited(const Supervision& s) noexcept {
    siginfo_t si{};
    return ::waitid(P_PID, static_cast<id_t>(s.command), &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           si.si_pid == s.command;
}

// Reaps orphans that have ended, so that a long run does not collect zombies. The command stays
// unreaped until kill_tree().
void reap_orphans(const Supervision& s) noexcept {
    for (;;) {
        siginfo_t si{};
        if (::waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid == 0 ||
            si.si_pid == s.command) {
            return;
        }
        ::waitpid(si.si_pid, nullptr, WNOHANG);
    }
}

// Reads what the pipe has, at most `rounds` reads. Past the cap, closes the pipe: the command's
// next write gets EPIPE or SIGPIPE.
void read_output(Supervision& s, int rounds) noexcept {
    for (int round = 0; round < rounds && s.read_fd >= 0; ++round) {
        const ssize_t n = ::read(s.read_fd, s.out + s.out_len, s.cap + 1 - s.out_len);
        if (n > 0) {
            s.out_len += static_cast<std::size_t>(n);
            if (s.out_len > s.cap) {
                s.out_len = s.cap;
                s.truncated = true;
                close_fd(s.read_fd);
            }
        } else if (n < 0 && errno == EAGAIN) {
            return;
        } else if (n == 0 || errno != EINTR) {
            close_fd(s.read_fd); // end of file, or an error: no more output either way
        }
    }
}

// The wait/read loop. Returns when the run is over: the command has exited (and its output has
// ended or kLinger has passed), it outlived its grace period, or the run was stopped.
void watch(Supervision& s) noexcept {
    bool exited = false;
    Clock::time_point kill_at{};
    Clock::time_point linger_until{};
    for (;;) {
        if (take_signals(s)) {
            if (!exited && command_exited(s)) {
                exited = true;
                linger_until = Clock::now() + Runner::kLinger;
            }
            reap_orphans(s);
        }
        if (s.stopped || s.killed_all->load()) {
            s.stopped = true;
            return;
        }
        const auto now = Clock::now();
        Clock::time_point next;
        if (exited) {
            if (s.read_fd < 0 || s.term_sent || now >= linger_until) {
                return; // after a timeout, do not wait for the descendants' output either
            }
            next = linger_until;
        } else if (!s.term_sent) {
            if (now >= s.deadline) {
                ::kill(-s.command, SIGTERM);
                s.term_sent = true;
                kill_at = now + s.kill_grace;
                continue;
            }
            next = s.deadline;
        } else {
            if (now >= kill_at) {
                return; // kill_tree() sends the SIGKILL
            }
            next = kill_at;
        }
        pollfd pfd[2] = {{s.signal_fd, POLLIN, 0}, {s.read_fd, POLLIN, 0}};
        const nfds_t n = s.read_fd >= 0 ? 2 : 1;
        if (::poll(pfd, n, ms_until(next, now)) < 0 && errno != EINTR) {
            fail(s, "poll");
            return; // cannot supervise it any more: end it
        }
        if (n == 2 && pfd[1].revents != 0) {
            read_output(s, 8); // a few reads, so that a fast writer does not delay the deadline
        }
    }
}

// SIGKILLs every child of the supervisor. False when there is none, or they cannot be listed.
bool kill_children() noexcept {
    const int fd = ::open("/proc/thread-self/children", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    char buf[4096];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    ::close(fd);
    // "PID PID ... ". A list longer than buf: the rest is killed in the next round (its last,
    // maybe cut, number is not used).
    const std::size_t end = n > 0 ? static_cast<std::size_t>(n) : 0;
    bool any = false;
    pid_t pid = 0;
    for (std::size_t i = 0; i <= end; ++i) {
        if (i < end && buf[i] >= '0' && buf[i] <= '9') {
            pid = pid * 10 + (buf[i] - '0');
            continue;
        }
        if (pid > 0 && (i < end || end < sizeof buf)) {
            ::kill(pid, SIGKILL);
            any = true;
        }
        pid = 0;
    }
    return any;
}

// Kills and reaps the command and every process left below the supervisor.
void kill_tree(Supervision& s) noexcept {
    ::kill(-s.command, SIGKILL);
    while (!s.reaped) {
        if (::waitpid(s.command, &s.status, 0) == s.command) {
            s.reaped = true;
        } else if (errno != EINTR) {
            fail(s, "waitpid");
            break;
        }
    }
    for (;;) {
        const pid_t p = ::waitpid(-1, nullptr, WNOHANG);
        if (p > 0 || (p < 0 && errno == EINTR)) {
            continue; // one that had ended
        }
        if (p < 0) {
            return; // ECHILD: nothing is left
        }
        // Children remain, all running: kill them, wait for one to end, and look again.
        if (!kill_children()) {
            fail(s, "/proc/thread-self/children");
            return; // they are left to cmond's reaper (init)
        }
        ::waitpid(-1, nullptr, 0);
    }
}

// The supervisor's entry point (clone()).
int supervisor_main(void* arg) noexcept {
    Supervision& s = *static_cast<Supervision*>(arg);
    if (start_command(s)) {
        watch(s);
        kill_tree(s);
        read_output(s, std::numeric_limits<int>::max()); // what the pipe still holds
    }
    close_fd(s.read_fd);
    close_fd(s.write_fd);
    close_fd(s.signal_fd);
    return 0;
}

// ---- run()'s side ----

struct SpawnActions {
    posix_spawn_file_actions_t a;
    SpawnActions() { posix_spawn_file_actions_init(&a); }
    ~SpawnActions() { posix_spawn_file_actions_destroy(&a); }
    SpawnActions(const SpawnActions&) = delete;
    SpawnActions& operator=(const SpawnActions&) = delete;
};

struct SpawnAttr {
    posix_spawnattr_t a;
    SpawnAttr() { posix_spawnattr_init(&a); }
    ~SpawnAttr() { posix_spawnattr_destroy(&a); }
    SpawnAttr(const SpawnAttr&) = delete;
    SpawnAttr& operator=(const SpawnAttr&) = delete;
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

// Everything the supervisor will need, allocated before the clone.
class Launch {
public:
    // Empty error(): ready.
    explicit Launch(const RunSpec& spec) {
        for (const auto& a : spec.argv) {
            argv_.push_back(const_cast<char*>(a.c_str()));
        }
        argv_.push_back(nullptr);
        envp_ = child_environment(spec.ld_preload, preload_entry_);
        const std::size_t cap = std::min(spec.output_cap, std::size_t{1} << 40);
        try {
            out_ = std::make_unique_for_overwrite<char[]>(cap + 1);
        } catch (const std::bad_alloc&) {
            error_ = "cannot allocate " + std::to_string(cap) + " bytes for its output";
            return;
        }
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) {
            error_ = std::string("pipe: ") + std::strerror(errno);
            return;
        }
        s_.read_fd = fds[0];
        s_.write_fd = fds[1];
        ::fcntl(s_.read_fd, F_SETFL, ::fcntl(s_.read_fd, F_GETFL) | O_NONBLOCK);
        set_actions(spec.workdir);
        set_attributes();
        s_.program = argv_[0];
        s_.argv = argv_.data();
        s_.envp = envp_.data();
        s_.actions = &actions_.a;
        s_.attr = &attr_.a;
        s_.search_path = spec.argv.front().find('/') == std::string::npos;
        s_.cmond = ::getpid();
        s_.out = out_.get();
        s_.cap = cap;
    }
    ~Launch() {
        close_fd(s_.read_fd); // whatever the supervisor did not close (it was killed)
        close_fd(s_.write_fd);
        close_fd(s_.signal_fd);
    }
    Launch(const Launch&) = delete;
    Launch& operator=(const Launch&) = delete;

    const std::string& error() const { return error_; }
    Supervision& supervision() { return s_; }

private:
    void set_actions(const std::string& workdir) {
        posix_spawn_file_actions_addopen(&actions_.a, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&actions_.a, s_.write_fd, STDOUT_FILENO);
        posix_spawn_file_actions_adddup2(&actions_.a, s_.write_fd, STDERR_FILENO);
        if (!workdir.empty()) {
            posix_spawn_file_actions_addchdir_np(&actions_.a, workdir.c_str());
        }
        // Sockets accepted by the HTTP library are not close-on-exec: close everything above 2.
        posix_spawn_file_actions_addclosefrom_np(&actions_.a, STDERR_FILENO + 1);
    }

    void set_attributes() {
        sigset_t none;
        sigset_t all;
        sigemptyset(&none);
        sigfillset(&all);
        // New session: a new process group to signal as one, and no controlling terminal for
        // a program (git) to prompt on. Signals: cmond blocks SIGINT/SIGTERM and ignores
        // SIGPIPE, the supervisor blocks everything, and all of it would pass through exec.
        posix_spawnattr_setflags(&attr_.a, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
                                               POSIX_SPAWN_SETSIGDEF);
        posix_spawnattr_setsigmask(&attr_.a, &none);
        posix_spawnattr_setsigdefault(&attr_.a, &all);
    }

    std::vector<char*> argv_;
    std::string preload_entry_;
    std::vector<char*> envp_;
    std::unique_ptr<char[]> out_;
    SpawnActions actions_;
    SpawnAttr attr_;
    Supervision s_;
    std::string error_;
};

// The supervisor's stack, with a guard page below it. One per thread, kept: a thread runs one
// supervisor at a time (it is suspended while it runs), and /health may start thousands a second.
class Stack {
public:
    Stack() = default;
    ~Stack() {
        if (base_ != nullptr) {
            ::munmap(base_, size_);
        }
    }
    Stack(const Stack&) = delete;
    Stack& operator=(const Stack&) = delete;

    /// The top of the stack (allocated at first use), or nullptr (errno tells why).
    void* top() {
        if (base_ == nullptr) {
            const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
            void* p = ::mmap(nullptr, kSupervisorStack + page, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
            if (p == MAP_FAILED) {
                return nullptr;
            }
            base_ = static_cast<char*>(p);
            size_ = kSupervisorStack + page;
            ::mprotect(base_, page, PROT_NONE);
        }
        return base_ + size_;
    }

private:
    char* base_ = nullptr;
    std::size_t size_ = 0;
};

// Blocks every signal in the calling thread, glibc's internal ones included (as posix_spawn
// does), so that the supervisor starts with all of them blocked. The raw system call, because
// sigfillset() and pthread_sigmask() leave glibc's own out.
class AllSignalsBlocked {
public:
    AllSignalsBlocked() {
        sigset_t all;
        std::memset(&all, 0xff, sizeof all);
        ::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old_, _NSIG / 8);
    }
    ~AllSignalsBlocked() { ::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old_, nullptr, _NSIG / 8); }
    AllSignalsBlocked(const AllSignalsBlocked&) = delete;
    AllSignalsBlocked& operator=(const AllSignalsBlocked&) = delete;

private:
    sigset_t old_{};
};

std::string errno_text(const char* what, int err) {
    return std::string(what) + ": " + std::strerror(err);
}

// Turns what the supervisor found into the result (output, status, outcome).
void fill_result(const RunSpec& spec, const Supervision& s, RunResult& result) {
    if (s.spawn_error != 0) {
        result.error = "cannot start '" + spec.argv.front() + "'" +
                       (spec.workdir.empty() ? "" : " in '" + spec.workdir + "'") + ": " +
                       std::strerror(s.spawn_error);
        return;
    }
    if (s.command < 0) {
        result.error = "cannot supervise '" + spec.argv.front() + "': " +
                       (s.failed_call != nullptr ? errno_text(s.failed_call, s.failed_errno)
                                                 : std::string("cmond is shutting down"));
        return;
    }
    result.output.assign(s.out, s.out_len);
    result.truncated = s.truncated;
    if (!s.reaped) {
        // The supervisor itself was killed (from outside: OOM killer, kill -9).
        const int sig = WIFSIGNALED(s.supervisor_status) ? WTERMSIG(s.supervisor_status) : 0;
        result.outcome = RunResult::Outcome::Killed;
        result.exit_code = 128 + sig;
        result.error = "the run's supervisor process was killed (signal " + std::to_string(sig) +
                       "): its processes may have been left running";
        return;
    }
    if (s.failed_call != nullptr) {
        result.error = "supervision: " + errno_text(s.failed_call, s.failed_errno);
    }
    const int st = s.status;
    result.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    if (s.stopped) {
        result.outcome = RunResult::Outcome::Killed;
    } else if (s.term_sent) {
        result.outcome = RunResult::Outcome::TimedOut;
    } else if (WIFEXITED(st)) {
        result.outcome = RunResult::Outcome::Exited;
    } else {
        result.outcome = RunResult::Outcome::Signaled;
    }
    // 128 + SIGPIPE: the signal itself, or a shell's report of a child that died of it.
    result.ended_by_cap = result.truncated && result.exit_code == 128 + SIGPIPE &&
                          (result.outcome == RunResult::Outcome::Exited ||
                           result.outcome == RunResult::Outcome::Signaled);
}

} // namespace

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
    killed_all_.store(true);
    // A supervisor whose pid is not known yet sees killed_all_ before it first waits.
    for (pid_t* cell : supervisors_) {
        const pid_t pid = std::atomic_ref<pid_t>(*cell).load();
        if (pid > 0) {
            ::kill(pid, SIGTERM);
        }
    }
}

std::size_t Runner::running() const {
    std::lock_guard lock(mutex_);
    return supervisors_.size();
}

int Runner::supervise(Supervision& s) {
    thread_local Stack stack;
    void* const stack_top = stack.top();
    if (stack_top == nullptr) {
        return errno;
    }
    pid_t pid = 0; // clone writes it (CLONE_PARENT_SETTID) before the supervisor runs
    {
        std::lock_guard lock(mutex_);
        supervisors_.insert(&pid);
    }
    int err = 0;
    int supervisor = -1;
    {
        AllSignalsBlocked blocked;
        // Returns when the supervisor has exited (CLONE_VFORK).
        supervisor =
            ::clone(supervisor_main, stack_top,
                    CLONE_VM | CLONE_VFORK | CLONE_FILES | CLONE_PARENT_SETTID | SIGCHLD, &s, &pid);
        err = errno;
    }
    {
        std::lock_guard lock(mutex_);
        supervisors_.erase(&pid); // before the reaping: kill_all() must not signal a reused pid
    }
    if (supervisor < 0) {
        return err;
    }
    while (::waitpid(supervisor, &s.supervisor_status, 0) < 0 && errno == EINTR) {
    }
    return 0;
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
    Launch launch(spec);
    if (!launch.error().empty()) {
        result.error = launch.error();
        return finish();
    }
    Supervision& s = launch.supervision();
    s.deadline = start + spec.timeout;
    s.kill_grace = spec.kill_grace;
    s.killed_all = &killed_all_;
    if (const int err = supervise(s); err != 0) {
        result.error = errno_text("cannot start a supervisor process", err);
        return finish();
    }
    fill_result(spec, s, result);
    return finish();
}

} // namespace cmond
