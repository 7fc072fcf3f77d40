// SPDX-License-Identifier: MIT
// A workload for cmond's /arena tests, run under LD_PRELOAD=libarena.so. It keeps HELD small
// blocks of 1000 bytes live (so /arena shows live bytes), allocates FREED_MIB MiB in 2 MiB
// blocks, touches and frees them (with ARENA_PURGE_DELAY_MS=-1 that memory stays committed
// until a trim), prints "ready <pid>", and then takes an allocator slow path (a 64 KiB block)
// every 10 ms, which is where libarena serves control-area requests. It exits normally (so
// libarena removes its stats page) when its stdin closes, or after 60 s.
//
//   arena_workload [HELD [FREED_MIB]]      defaults: 500 blocks, 32 MiB
// Built with -fno-builtin so that malloc/free pairs are not optimised away.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>
#include <vector>

int main(int argc, char** argv) {
    const long held_blocks = argc > 1 ? std::strtol(argv[1], nullptr, 10) : 500;
    const long freed_mib = argc > 2 ? std::strtol(argv[2], nullptr, 10) : 32;
    if (held_blocks < 0 || freed_mib < 0 || freed_mib > 4096) {
        std::fprintf(stderr, "usage: arena_workload [HELD [FREED_MIB]]\n");
        return 2;
    }
    std::vector<void*> held;
    for (long i = 0; i < held_blocks; ++i) {
        void* p = std::malloc(1000);
        std::memset(p, static_cast<int>(i), 1000);
        held.push_back(p);
    }
    std::vector<void*> big;
    for (long i = 0; i < freed_mib / 2; ++i) {
        void* p = std::malloc(2 << 20);
        std::memset(p, 1, 2 << 20);
        big.push_back(p);
    }
    for (void* p : big) {
        std::free(p);
    }
    std::printf("ready %d\n", static_cast<int>(::getpid()));
    std::fflush(stdout);

    const std::time_t give_up = std::time(nullptr) + 60;
    while (std::time(nullptr) < give_up) {
        void* p = std::malloc(64 << 10); // a large block: a slow path that polls the control area
        static_cast<volatile char*>(p)[0] = 1;
        std::free(p);
        pollfd in{0, POLLIN, 0};
        if (::poll(&in, 1, 10) > 0) {
            char c;
            if (::read(0, &c, 1) <= 0) {
                break; // stdin closed: the test is done with us
            }
        }
    }
    for (void* p : held) {
        std::free(p);
    }
    return 0;
}
