// SPDX-License-Identifier: MIT
// A program linked with libarena.so (not preloaded: the loader ignores LD_PRELOAD paths in a
// setuid program). test_page_safety.cc runs a setuid-root copy of it as another user, with
// ARENA_* variables set, and reads what it prints: whether the kernel made it a secure-exec
// process, whether libarena is its malloc, and how many stats pages it has mapped (0: libarena
// ignored ARENA_STATS_DIR and kept no page at all), and how many child processes it has after
// freeing 8 MiB (0: no background purger, which is off in secure-exec).
//
// Usage: arena-secure-probe BASE   (BASE: the ARENA_STATS_DIR the caller set)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <dlfcn.h>
#include <sys/auxv.h>
#include <unistd.h>

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
    void* volatile big = malloc(8 << 20);
    memset(big, 1, 8 << 20);
    free(big);
    int children = 0;
    if (DIR* d = opendir("/proc")) {
        while (dirent* e = readdir(d)) {
            char path[300], stat[512];
            snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
            FILE* f = e->d_name[0] >= '1' && e->d_name[0] <= '9' ? fopen(path, "r") : nullptr;
            if (f == nullptr)
                continue;
            const size_t n = fread(stat, 1, sizeof stat - 1, f);
            fclose(f);
            stat[n] = '\0';
            const char* close_paren = strrchr(stat, ')');
            int ppid = 0;
            if (close_paren != nullptr && sscanf(close_paren + 2, "%*c %d", &ppid) == 1 &&
                ppid == getpid())
                ++children;
        }
        closedir(d);
    }
    printf("children %d\n", children);
    return 0;
}
