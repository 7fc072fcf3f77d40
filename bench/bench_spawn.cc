// SPDX-License-Identifier: MIT
// bench_spawn — runs one command and writes its resource usage, for run_programs.py.
//
//   bench_spawn RESULT_FILE COMMAND [ARG...]
//
// Forks, execs COMMAND (searched on PATH), waits with wait4 and writes one JSON line to
// RESULT_FILE: the exit status (negative: killed by that signal), ru_maxrss in KiB and user and
// system seconds, of COMMAND and every descendant it waited for.
//
// Why not os.wait4 in the Python driver directly: Linux keeps the largest RSS a process had
// across execve (fs/exec.c keeps the old mm's high-water mark in signal->maxrss), so a child
// spawned by the driver starts with the driver's own ~20 MiB as its peak RSS, hiding small
// programs' peaks. This process is small, so the floor it passes on to COMMAND is ~1 MiB.
//
// If BENCH_CHILD_LD_PRELOAD is set, COMMAND gets it as LD_PRELOAD (this process runs without
// one, so the allocator under test does not change the floor either).

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: bench_spawn RESULT_FILE COMMAND [ARG...]\n");
        return 2;
    }
    const pid_t pid = fork();
    if (pid < 0) {
        std::perror("bench_spawn: fork");
        return 2;
    }
    if (pid == 0) {
        if (const char* preload = std::getenv("BENCH_CHILD_LD_PRELOAD")) {
            setenv("LD_PRELOAD", preload, 1);
            unsetenv("BENCH_CHILD_LD_PRELOAD");
        }
        execvp(argv[2], argv + 2);
        std::fprintf(stderr, "bench_spawn: cannot run %s: ", argv[2]);
        std::perror(nullptr);
        _exit(127);
    }
    int status = 0;
    rusage ru{};
    if (wait4(pid, &status, 0, &ru) != pid) {
        std::perror("bench_spawn: wait4");
        return 2;
    }
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    std::FILE* out = std::fopen(argv[1], "w");
    if (out == nullptr) {
        std::perror("bench_spawn: result file");
        return 2;
    }
    std::fprintf(out, "{\"exit\":%d,\"maxrss_kib\":%ld,\"user\":%.6f,\"sys\":%.6f}\n", code,
                 ru.ru_maxrss, ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
                 ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    return std::fclose(out) == 0 ? 0 : 2;
}
