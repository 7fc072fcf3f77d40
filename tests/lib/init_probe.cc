// SPDX-License-Identifier: MIT
// Preloaded next to libarena by test_init: allocates from its constructor, the earliest code
// that can run in a process, through calls that allocate inside libc themselves (dlsym and
// dlerror, a thread with static TLS, asprintf), and records what happened for the test to check.
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace {
__thread char t_buffer[64];
void* g_kept[4];
int g_status = -1;

void* thread_main(void* arg) {
    (void)arg;
    strcpy(t_buffer, "tls");
    void* p = malloc(4096);
    if (p != nullptr)
        memset(p, 1, 4096);
    return p;
}

__attribute__((constructor)) void probe_init() {
    int failures = 0;
    /* dlsym of a missing symbol makes dlerror allocate its message buffer. */
    if (dlsym(RTLD_DEFAULT, "arena_no_such_symbol") != nullptr)
        ++failures;
    if (dlerror() == nullptr)
        ++failures;
    g_kept[0] = malloc(24);
    g_kept[1] = calloc(10, 100);
    g_kept[2] = realloc(malloc(10), 100000);
    pthread_t t;
    void* from_thread = nullptr;
    if (pthread_create(&t, nullptr, thread_main, nullptr) != 0 ||
        pthread_join(t, &from_thread) != 0)
        ++failures;
    g_kept[3] = from_thread;
    for (int i = 0; i < 4; ++i)
        if (g_kept[i] == nullptr)
            ++failures;
    char* s = nullptr;
    if (asprintf(&s, "%s-%d", "probe", 42) < 0 || strcmp(s, "probe-42") != 0)
        ++failures;
    free(s);
    g_status = failures;
}
} // namespace

// For the test: 0 when the constructor ran without a failure, and its four kept blocks.
extern "C" int init_probe_status() {
    return g_status;
}

extern "C" void* init_probe_block(int i) {
    return i >= 0 && i < 4 ? g_kept[i] : nullptr;
}
