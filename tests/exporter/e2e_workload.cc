// SPDX-License-Identifier: MIT
// The workload of the end-to-end test, run under LD_PRELOAD=libarena.so: it holds a growing
// amount of memory (STEPS steps of STEP_MS milliseconds, each keeping ~0.6 MiB of small and
// large blocks and making 1000 short-lived allocations), frees it all, prints "freed", and
// then waits for SIGTERM or SIGINT (at most 120 s) and exits normally, so that libarena
// removes its stats page.
//
//   e2e_workload [STEPS [STEP_MS]]       defaults: 40 steps of 250 ms
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

int main(int argc, char** argv) {
    const long steps = argc > 1 ? strtol(argv[1], nullptr, 10) : 40;
    const long step_ms = argc > 2 ? strtol(argv[2], nullptr, 10) : 250;
    if (steps <= 0 || step_ms <= 0) {
        fprintf(stderr, "usage: e2e_workload [STEPS [STEP_MS]]\n");
        return 2;
    }
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigprocmask(SIG_BLOCK, &stop, nullptr);

    std::vector<void*> held;
    held.reserve(static_cast<size_t>(steps) * 110);
    unsigned long checksum = 0;
    for (long s = 0; s < steps; ++s) {
        for (int i = 0; i < 100; ++i) { // small blocks (the 1 KiB class)
            void* p = malloc(1000);
            memset(p, int(s + i), 1000);
            held.push_back(p);
        }
        for (int i = 0; i < 8; ++i) { // large blocks (page runs)
            void* p = malloc(64 * 1024);
            memset(p, int(s), 64 * 1024);
            held.push_back(p);
        }
        void* temp[1000];
        for (int i = 0; i < 1000; ++i) {
            temp[i] = malloc(static_cast<size_t>(16 + (i % 64) * 8));
            static_cast<unsigned char*>(temp[i])[0] = static_cast<unsigned char>(i);
        }
        for (int i = 0; i < 1000; ++i) {
            checksum += static_cast<unsigned char*>(temp[i])[0];
            free(temp[i]);
        }
        printf("step %ld held %zu blocks\n", s + 1, held.size());
        fflush(stdout);
        const timespec ts{step_ms / 1000, (step_ms % 1000) * 1000000};
        if (sigtimedwait(&stop, nullptr, &ts) > 0)
            break;
    }
    for (void* p : held)
        free(p);
    held.clear();
    printf("freed (checksum %lu)\n", checksum);
    fflush(stdout);
    const timespec limit{120, 0};
    sigtimedwait(&stop, nullptr, &limit);
    return 0;
}
