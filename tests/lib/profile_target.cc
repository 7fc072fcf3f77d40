// SPDX-License-Identifier: MIT
// A program with known allocation sites, for the heap profile tests (tests/integration/
// test_profile.cc): built as Debian builds its programs (a PIE, no frame pointers, -g), run on
// libarena, driven by one command per line on stdin, answering each with a line on stdout:
//
//   leaks    leak_1mib, leak_4mib, leak_16mib leak that many bytes in 64-, 128- and 256-byte
//            blocks; churn allocates and frees 1 GiB in 512-byte blocks        -> "ok"
//   threads  4 threads, each leaking 2 MiB in thread_leak (128-byte blocks) -> "ok" plugin
//   dlopen($ARENA_PROFILE_PLUGIN) and call its plugin_leak (2 MiB)    -> "ok" fork     a child that
//   leaks 3 MiB in child_leak and then waits for SIGTERM -> "child PID" pid      -> "PID" exit
//   frees nothing, exits 0

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

namespace {

void* volatile sink; // keeps the compiler from removing allocations nobody reads

// Inlined into each leaker, so that the leaker is the innermost frame of its samples.
inline __attribute__((always_inline)) void leak_blocks(size_t total, size_t size) {
    for (size_t done = 0; done < total; done += size) {
        auto* p = static_cast<char*>(malloc(size));
        p[0] = 1;
        sink = p;
    }
}

__attribute__((noinline)) void leak_1mib() {
    leak_blocks(size_t{1} << 20, 64);
}
__attribute__((noinline)) void leak_4mib() {
    leak_blocks(size_t{4} << 20, 128);
}
__attribute__((noinline)) void leak_16mib() {
    leak_blocks(size_t{16} << 20, 256);
}

__attribute__((noinline)) void churn() {
    for (long i = 0; i < (1L << 30) / 512; i++) {
        auto* p = static_cast<char*>(malloc(512));
        p[0] = 1;
        sink = p;
        free(p);
    }
}

__attribute__((noinline)) void* thread_leak(void* arg) {
    static_cast<void>(arg);
    leak_blocks(size_t{2} << 20, 128);
    return nullptr;
}

__attribute__((noinline)) void child_leak() {
    leak_blocks(size_t{3} << 20, 48);
}

void answer(const char* line) {
    fputs(line, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

} // namespace

int main() {
    char line[256];
    while (fgets(line, sizeof line, stdin) != nullptr) {
        line[strcspn(line, "\n")] = '\0';
        if (strcmp(line, "leaks") == 0) {
            leak_4mib();
            churn();
            leak_16mib();
            leak_1mib();
            answer("ok");
        } else if (strcmp(line, "threads") == 0) {
            pthread_t t[4];
            for (int i = 0; i < 4; i++)
                if (pthread_create(&t[i], nullptr, thread_leak, nullptr) != 0)
                    return 2;
            for (int i = 0; i < 4; i++)
                pthread_join(t[i], nullptr);
            answer("ok");
        } else if (strcmp(line, "plugin") == 0) {
            const char* path = getenv("ARENA_PROFILE_PLUGIN");
            void* h = path != nullptr ? dlopen(path, RTLD_NOW) : nullptr;
            auto* leak =
                h != nullptr ? reinterpret_cast<void (*)()>(dlsym(h, "plugin_leak")) : nullptr;
            if (leak == nullptr) {
                answer(dlerror());
                continue;
            }
            leak();
            answer("ok");
        } else if (strcmp(line, "fork") == 0) {
            const pid_t pid = fork();
            if (pid == 0) {
                child_leak();
                char msg[64];
                snprintf(msg, sizeof msg, "child %d", static_cast<int>(getpid()));
                answer(msg);
                for (;;)
                    pause(); // until the test's SIGTERM
            }
            if (pid < 0)
                return 3;
        } else if (strcmp(line, "pid") == 0) {
            char msg[32];
            snprintf(msg, sizeof msg, "%d", static_cast<int>(getpid()));
            answer(msg);
        } else if (strcmp(line, "exit") == 0) {
            return 0;
        } else {
            answer("unknown command");
        }
    }
    return 0;
}
