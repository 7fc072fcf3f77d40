// SPDX-License-Identifier: MIT
#include "proc.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace bench {

namespace {

/// The number after "field:" in a /proc file of "Name:   1234 kB" lines; 0 if absent or
/// unreadable.
uint64_t kib_field(const char* path, const char* field) {
    FILE* f = std::fopen(path, "r");
    if (f == nullptr) {
        return 0;
    }
    char line[256];
    uint64_t kib = 0;
    const size_t len = std::strlen(field);
    while (std::fgets(line, sizeof line, f) != nullptr) {
        if (std::strncmp(line, field, len) == 0 && line[len] == ':') {
            kib = std::strtoull(line + len + 1, nullptr, 10);
            break;
        }
    }
    std::fclose(f);
    return kib;
}

} // namespace

uint64_t proc_status_kib(const char* field) {
    return kib_field("/proc/self/status", field);
}

uint64_t rss_exact_kib() {
    return kib_field("/proc/self/smaps_rollup", "Rss");
}

uint64_t peak_rss_kib(uint64_t exact_sample_kib, uint64_t* vm_hwm_kib) {
    const uint64_t hwm = proc_status_kib("VmHWM");
    if (vm_hwm_kib != nullptr) {
        *vm_hwm_kib = hwm;
    }
    return hwm > exact_sample_kib ? hwm : exact_sample_kib;
}

int maps_match(const char* prog, const char* needle) {
    FILE* f = std::fopen("/proc/self/maps", "r");
    if (f == nullptr) {
        std::fprintf(stderr, "%s: /proc/self/maps: %s\n", prog, std::strerror(errno));
        return 2;
    }
    char line[4096];
    int rc = 3;
    while (std::fgets(line, sizeof line, f) != nullptr) {
        const char* path = std::strchr(line, '/'); // the path is the only field with a '/'
        if (path != nullptr && std::strstr(path, needle) != nullptr) {
            std::fputs(path, stdout);
            rc = 0;
            break;
        }
    }
    std::fclose(f);
    return rc;
}

bool save_smaps(const char* prog, const char* path) {
    FILE* in = std::fopen("/proc/self/smaps", "r");
    if (in == nullptr) {
        std::fprintf(stderr, "%s: /proc/self/smaps: %s\n", prog, std::strerror(errno));
        return false;
    }
    FILE* out = std::fopen(path, "w");
    if (out == nullptr) {
        std::fprintf(stderr, "%s: %s: %s\n", prog, path, std::strerror(errno));
        std::fclose(in);
        return false;
    }
    char buf[8192];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, in)) > 0) {
        std::fwrite(buf, 1, n, out);
    }
    const bool ok = !std::ferror(in) && std::fclose(out) == 0;
    std::fclose(in);
    if (!ok) {
        std::fprintf(stderr, "%s: cannot write %s\n", prog, path);
    }
    return ok;
}

uint64_t parse_u64(const char* prog, const char* flag, const char* text) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(text, &end, 0);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-') {
        std::fprintf(stderr, "%s: %s: not a non-negative integer: '%s'\n", prog, flag, text);
        std::exit(2);
    }
    return v;
}

} // namespace bench
