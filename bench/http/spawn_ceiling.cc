// SPDX-License-Identifier: MIT
// The ceiling for any daemon that answers a request by running a program: THREADS threads each
// posix_spawn PROGRAM (stdout to a pipe, read to EOF, reaped), back to back, for SECONDS; prints
// the spawns per second. No HTTP at all. Used by run_http_bench.py next to cmond and webhook.
//   spawn_ceiling THREADS SECONDS PROGRAM [ARGS...]
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char** environ;

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: %s THREADS SECONDS PROGRAM [ARGS...]\n", argv[0]);
        return 2;
    }
    const int threads = std::atoi(argv[1]);
    const int seconds = std::atoi(argv[2]);
    if (threads < 1 || seconds < 1) {
        std::fprintf(stderr, "THREADS and SECONDS must be positive\n");
        return 2;
    }
    std::atomic<long> spawns{0};
    std::atomic<bool> failed{false};
    std::atomic<bool> stop{false};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&] {
            while (!stop.load()) {
                int fds[2];
                if (::pipe2(fds, O_CLOEXEC) != 0) {
                    failed = true;
                    return;
                }
                posix_spawn_file_actions_t fa;
                posix_spawn_file_actions_init(&fa);
                posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
                pid_t pid = -1;
                const int err = ::posix_spawnp(&pid, argv[3], &fa, nullptr, argv + 3, environ);
                posix_spawn_file_actions_destroy(&fa);
                ::close(fds[1]);
                if (err != 0) {
                    std::fprintf(stderr, "posix_spawnp %s: %s\n", argv[3], std::strerror(err));
                    ::close(fds[0]);
                    failed = true;
                    return;
                }
                char buf[4096];
                while (::read(fds[0], buf, sizeof buf) > 0) {
                }
                ::close(fds[0]);
                int status = 0;
                ::waitpid(pid, &status, 0);
                ++spawns;
            }
        });
    }
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    stop = true;
    for (auto& t : pool) {
        t.join();
    }
    if (failed) {
        return 1;
    }
    std::printf("%.1f\n", static_cast<double>(spawns.load()) / seconds);
    return 0;
}
