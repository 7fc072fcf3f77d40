// SPDX-License-Identifier: MIT
// A program linked with libarena.so (not preloaded: the loader ignores LD_PRELOAD paths in a
// setuid program). test_page_safety.cc runs a setuid-root copy of it as another user, with
// ARENA_* variables set, and reads what it prints: whether the kernel made it a secure-exec
// process, whether libarena is its malloc, and how many stats pages it has mapped (0: libarena
// ignored ARENA_STATS_DIR and kept no page at all).
//
// Usage: arena-secure-probe BASE   (BASE: the ARENA_STATS_DIR the caller set)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <sys/auxv.h>

int main(int argc, char** argv) {
    void* volatile p = malloc(1000);
    free(p);
    const char* base = argc > 1 ? argv[1] : "/nonexistent";
    int pages = 0;
    if (FILE* maps = fopen("/proc/self/maps", "r")) {
        char line[4096];
        while (fgets(line, sizeof line, maps) != nullptr)
            if (strstr(line, base) != nullptr || strstr(line, "/dev/shm/arena") != nullptr)
                ++pages;
        fclose(maps);
    }
    printf("secure %lu\n", getauxval(AT_SECURE));
    printf("on_libarena %d\n", dlsym(RTLD_DEFAULT, "arena_owns") != nullptr ? 1 : 0);
    printf("pages %d\n", pages);
    return 0;
}
