// SPDX-License-Identifier: MIT
// arena-run: runs a program with libarena.so preloaded, so that nobody has to spell out
// LD_PRELOAD. Also lists the ARENA_* options (--options), from the same table libarena reads.
//
//   arena-run [--lib PATH] [--] PROGRAM [ARGS...]
//
// The library is found, in order: --lib, $ARENA_LIB, next to this executable (the build tree),
// ../lib/<multiarch>/ and ../lib/ relative to it (an install), and the configured libdir.
#include "options.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unistd.h>

#ifndef ARENA_INSTALL_LIBDIR
#    error "ARENA_INSTALL_LIBDIR must be defined by the build"
#endif

namespace {

void usage(FILE* to) {
    fprintf(to, "usage: arena-run [--lib PATH] [--] PROGRAM [ARGS...]\n"
                "       arena-run --options | --version | --help\n"
                "Runs PROGRAM with libarena.so preloaded (LD_PRELOAD), so that every malloc,\n"
                "free, new and delete of the program and its children goes to libarena.\n"
                "  --lib PATH   use this libarena.so (default: $ARENA_LIB, then next to\n"
                "               arena-run, then the installed library)\n"
                "  --options    list the ARENA_* environment variables libarena reads\n"
                "  --version    print the version\n");
}

bool is_file(const std::string& path) {
    return access(path.c_str(), R_OK) == 0;
}

std::string self_dir() {
    char buf[4096];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0)
        return ".";
    buf[n] = '\0';
    std::string path(buf);
    const auto slash = path.rfind('/');
    return slash == std::string::npos ? "." : path.substr(0, slash);
}

std::string find_library(const char* explicit_lib) {
    if (explicit_lib != nullptr)
        return explicit_lib;
    if (const char* env = getenv("ARENA_LIB"); env != nullptr && *env != '\0')
        return env;
    const std::string dir = self_dir();
    for (const std::string& candidate :
         {dir + "/libarena.so", dir + "/../lib/" ARENA_MULTIARCH "/libarena.so",
          dir + "/../lib/libarena.so", std::string(ARENA_INSTALL_LIBDIR "/libarena.so")})
        if (is_file(candidate))
            return candidate;
    return {};
}

std::string format_default(const arena::OptionInfo& o) {
    if (o.kind == arena::OptionKind::String)
        return o.def_str != nullptr ? o.def_str : "";
    long long v = static_cast<long long>(o.def);
    if (o.kind == arena::OptionKind::Size) {
        for (const char* unit : {"", "K", "M", "G", "T"}) {
            if (v % 1024 != 0 || *unit == 'T' || v == 0)
                return std::to_string(v) + unit;
            if (v < 1024)
                return std::to_string(v) + unit;
            v /= 1024;
        }
    }
    return std::to_string(v);
}

void list_options() {
    printf("| variable | default | meaning |\n|---|---|---|\n");
    for (const arena::OptionInfo& o : arena::kOptionTable)
        printf("| `%s` | %s | %s |\n", o.env, format_default(o).c_str(), o.help);
}

} // namespace

int main(int argc, char** argv) {
    const char* lib_arg = nullptr;
    int i = 1;
    for (; i < argc; ++i) {
        const char* a = argv[i];
        if (strcmp(a, "--") == 0) {
            ++i;
            break;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            printf("arena-run (libarena) " ARENA_VERSION "\n");
            return 0;
        }
        if (strcmp(a, "--options") == 0) {
            list_options();
            return 0;
        }
        if (strcmp(a, "--lib") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "arena-run: --lib needs a path\n");
                return 2;
            }
            lib_arg = argv[++i];
            continue;
        }
        if (a[0] == '-') {
            fprintf(stderr, "arena-run: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        break;
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    const std::string lib = find_library(lib_arg);
    if (lib.empty() || !is_file(lib)) {
        fprintf(stderr,
                "arena-run: cannot find libarena.so%s%s; pass --lib PATH or set ARENA_LIB\n",
                lib.empty() ? "" : " at ", lib.c_str());
        return 127;
    }
    std::string preload = lib;
    if (const char* old = getenv("LD_PRELOAD"); old != nullptr && *old != '\0')
        preload += std::string(":") + old;
    if (setenv("LD_PRELOAD", preload.c_str(), 1) != 0) {
        fprintf(stderr, "arena-run: cannot set LD_PRELOAD: %s\n", strerror(errno));
        return 127;
    }
    execvp(argv[i], argv + i);
    const int err = errno;
    fprintf(stderr, "arena-run: cannot run '%s': %s\n", argv[i], strerror(err));
    return err == ENOENT ? 127 : 126;
}
