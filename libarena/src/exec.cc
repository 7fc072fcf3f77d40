// SPDX-License-Identifier: MIT
// The exec family, interposed: before the process image is replaced, the background purger
// (purger.cc) is stopped and reaped. It shares this image's memory, so left running it would
// keep every resident page of the old image alive next to the new one, and its end would then
// be reported to the new image (SIGCHLD: the kernel turns a child's exit signal into SIGCHLD
// once its parent has exec'd). When the exec fails, the process goes on and may start a purger
// again.
//
// execve, execv, execl, execle, fexecve and execveat are the system calls themselves (what
// glibc's are), so they stay async-signal-safe and need no symbol lookup; execvp, execvpe and
// execlp search PATH, which glibc's do (found with dlsym(RTLD_NEXT)). A vfork child that execs
// (posix_spawn's does not come here) leaves the parent's purger alone: purger::before_exec
// checks that the caller is the process that owns it.
#include "macros.h"
#include "os.h"
#include "purger.h"

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

using namespace arena;

namespace {

/// errno and -1 from a failed exec system call; the purger may start again.
int failed_exec(int r) {
    purger::exec_failed();
    errno = -r;
    return -1;
}

/// The next definition of `name` (libc's), looked up once.
template <typename F>
F next_symbol(std::atomic<void*>& cache, const char* name) {
    void* f = cache.load(std::memory_order_acquire);
    if (f == nullptr) {
        f = dlsym(RTLD_NEXT, name);
        cache.store(f, std::memory_order_release);
    }
    return reinterpret_cast<F>(f);
}

using ExecvpeFn = int (*)(const char*, char* const[], char* const[]);
constinit std::atomic<void*> g_execvpe{nullptr};

int path_exec(const char* file, char* const argv[], char* const envp[]) {
    const auto real = next_symbol<ExecvpeFn>(g_execvpe, "execvpe");
    if (real == nullptr) {
        errno = ENOSYS;
        return -1;
    }
    purger::before_exec();
    const int r = real(file, argv, envp);
    const int saved = errno;
    purger::exec_failed();
    errno = saved;
    return r;
}

/// The number of arguments of execl, execle or execlp: arg0 and those after it, up to the null
/// that ends them.
size_t count_args(const char* arg0, va_list ap) {
    size_t n = 1;
    if (arg0 == nullptr)
        return 0;
    while (va_arg(ap, const char*) != nullptr)
        ++n;
    return n;
}

} // namespace

ARENA_EXPORT int execve(const char* path, char* const argv[], char* const envp[]) {
    purger::before_exec();
    return failed_exec(os::exec_call(path, argv, envp));
}

ARENA_EXPORT int execv(const char* path, char* const argv[]) {
    return execve(path, argv, environ);
}

ARENA_EXPORT int execveat(int dir, const char* path, char* const argv[], char* const envp[],
                          int flags) {
    purger::before_exec();
    return failed_exec(os::exec_at_call(dir, path, argv, envp, flags));
}

ARENA_EXPORT int fexecve(int fd, char* const argv[], char* const envp[]) {
    if (fd < 0) {
        errno = EINVAL;
        return -1;
    }
    return execveat(fd, "", argv, envp, AT_EMPTY_PATH);
}

ARENA_EXPORT int execvpe(const char* file, char* const argv[], char* const envp[]) {
    return path_exec(file, argv, envp);
}

ARENA_EXPORT int execvp(const char* file, char* const argv[]) {
    return path_exec(file, argv, environ);
}

// The variadic ones collect their arguments on the stack, as glibc's do. A macro, not a function:
// va_start and alloca act on the caller's frame. Its arguments are names it declares or assigns
// (and a statement), which parentheses would break.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define ARENA_COLLECT_ARGS(arg0, argv, envp_out)                                                   \
    va_list ap;                                                                                    \
    va_start(ap, arg0);                                                                            \
    const size_t argc = count_args(arg0, ap);                                                      \
    va_end(ap);                                                                                    \
    auto** argv = static_cast<char**>(__builtin_alloca((argc + 1) * sizeof(char*)));               \
    va_start(ap, arg0);                                                                            \
    if (argc != 0)                                                                                 \
        argv[0] = const_cast<char*>(arg0);                                                         \
    for (size_t i = 1; i < argc; ++i)                                                              \
        argv[i] = va_arg(ap, char*);                                                               \
    argv[argc] = nullptr;                                                                          \
    if (argc != 0)                                                                                 \
        (void)va_arg(ap, char*);                                                                   \
    envp_out;                                                                                      \
    va_end(ap)
// NOLINTEND(bugprone-macro-parentheses)

ARENA_EXPORT int execl(const char* path, const char* arg0, ...) {
    ARENA_COLLECT_ARGS(arg0, argv, (void)0);
    return execve(path, argv, environ);
}

ARENA_EXPORT int execle(const char* path, const char* arg0, ...) {
    char* const* envp = nullptr;
    ARENA_COLLECT_ARGS(arg0, argv, envp = va_arg(ap, char* const*));
    return execve(path, argv, envp);
}

ARENA_EXPORT int execlp(const char* file, const char* arg0, ...) {
    ARENA_COLLECT_ARGS(arg0, argv, (void)0);
    return path_exec(file, argv, environ);
}
