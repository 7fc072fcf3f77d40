#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# libarena.so's run-time dependencies (suite "unit", test "libarena-deps"):
#   - it needs libc only (no libstdc++, libgcc_s, libm, libpthread): it loads into C programs;
#   - it imports no libc wrapper of a system call it makes: libarena makes them itself
#     (libarena/src/os.cc), so that another preloaded library interposing open() or mmap()
#     (fakeroot, a tracer, ...) is never entered from inside malloc, and no more of libc's text
#     is faulted into every process than the few calls it does import.
# Usage: check_deps.sh LIBARENA_SO
set -euo pipefail
lib=${1:?usage: check_deps.sh LIBARENA_SO}
fail=0

needed=$(readelf -dW "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
for n in $needed; do
    case "$n" in
    libc.so.* | ld-linux*.so.*) ;;
    *) echo "check_deps: $lib needs $n (only libc is allowed)"; fail=1 ;;
    esac
done

imports=$(nm -D --undefined-only "$lib" | awk '{print $NF}' | sed 's/@.*//')
raw_syscalls=1 # os.cc has inline system calls for these; elsewhere it uses libc's syscall()
case "$(uname -m)" in x86_64 | aarch64) ;; *) raw_syscalls=0 ;; esac
for sym in $imports; do
    [ "$sym" = syscall ] && [ "$raw_syscalls" = 0 ] && continue
    case "$sym" in
    mmap | mmap64 | munmap | madvise | mincore | open | open64 | openat | read | write | close | \
        mkdir | chmod | fchmod | flock | ftruncate | ftruncate64 | rename | unlink | getenv | \
        syscall | sched_yield | getpid | getpagesize | sysconf)
        echo "check_deps: $lib imports $sym from libc (os.cc makes that system call itself)"
        fail=1
        ;;
    esac
done
if nm -D "$lib" | grep -q 'GLIBCXX\|CXXABI'; then
    echo "check_deps: $lib refers to libstdc++ symbols:"
    nm -D "$lib" | grep 'GLIBCXX\|CXXABI'
    fail=1
fi

[ "$fail" = 0 ] && echo "ok: $lib needs [$(echo $needed)] and imports $(echo "$imports" | wc -w) symbols, no system call wrappers"
exit "$fail"
