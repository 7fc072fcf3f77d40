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

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <dlfcn.h>
#include <pthread.h>
#include <sys/time.h>
#include <sys/wait.h>
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

std::atomic<bool> g_stop{false};

void on_timer(int) {
    void* p = malloc(40); // not async-signal-safe in general; libarena's is, as a test of it
    sink = p;
    free(p);
}

void* dlopen_loop(void*) {
    const char* path = getenv("ARENA_PROFILE_PLUGIN");
    while (!g_stop.load() && path != nullptr)
        if (void* h = dlopen(path, RTLD_NOW))
            dlclose(h);
    return nullptr;
}

void* churn_loop(void*) {
    while (!g_stop.load())
        for (int i = 0; i < 1000; i++) {
            void* p = malloc(static_cast<size_t>(i) * 8 + 1);
            sink = p;
            free(p);
        }
    return nullptr;
}

void* fork_loop(void*) {
    while (!g_stop.load()) {
        const pid_t pid = fork();
        if (pid == 0) {
            for (int i = 0; i < 100; i++)
                free(malloc(64));
            _exit(0);
        }
        while (pid > 0 && waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
        }
    }
    return nullptr;
}

bool hazards() {
    struct sigaction sa {};
    sa.sa_handler = on_timer;
    sigaction(SIGALRM, &sa, nullptr);
    const itimerval every{{0, 200}, {0, 200}};
    setitimer(ITIMER_REAL, &every, nullptr);
    pthread_t t[3];
    void* (*loops[3])(void*) = {dlopen_loop, churn_loop, fork_loop};
    for (int i = 0; i < 3; i++)
        if (pthread_create(&t[i], nullptr, loops[i], nullptr) != 0)
            return false;
    for (int i = 0; i < 1000; i++) // the main thread allocates too
        free(malloc(100));
    timespec left{1, 0}; // the timer interrupts the sleep: go on until the second is over
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
    g_stop.store(true);
    for (auto& thread : t)
        pthread_join(thread, nullptr);
    const itimerval off{};
    setitimer(ITIMER_REAL, &off, nullptr);
    return true;
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
        } else if (strcmp(line, "hazards") == 0) {
            answer(hazards() ? "ok" : "pthread_create failed");
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
