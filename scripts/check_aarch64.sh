#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# libarena on AArch64, emulated: cross-builds libarena.so with the native build's own compile
# flags (build/compile_commands.json, build/build.ninja), then bench_alloc and the in-process
# test programs, and runs them under qemu-user with the library preloaded. The x86-64 machine
# this project is developed on never runs libarena's AArch64 code otherwise (its system calls
# are inline `svc 0`, os.cc).
#
#   scripts/check_aarch64.sh [BUILD_DIR]     (default build/, made by scripts/build.sh)
#
# Installs g++-aarch64-linux-gnu and qemu-user-static when missing (scripts/deps.sh aarch64).
# Not part of scripts/test.sh: a manual check, a few minutes. What qemu-user cannot do is left
# out, each with its reason below; everything else must pass.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=$(cd "${1:-build}" && pwd)
scripts/deps.sh aarch64
[ -f "$build/compile_commands.json" ] || scripts/build.sh
out=$(mktemp -d "${TMPDIR:-/tmp}/arena-aarch64.XXXXXX")
trap 'rm -rf "$out"' EXIT
cxx=aarch64-linux-gnu-g++
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
qemu=$(command -v qemu-aarch64-static)

# ---- libarena.so: every object of the native build, recompiled by the cross compiler ----
python3 - "$build" "$out" "$cxx" <<'EOF'
import json, os, re, shlex, subprocess, sys
build, out, cxx = sys.argv[1:]
objs = []
for e in json.load(open(os.path.join(build, "compile_commands.json"))):
    if not re.search(r"libarena/(libarena\.so|libarena_core\.a)\.p/", e["output"]):
        continue
    args = shlex.split(e["command"])
    args[0] = cxx
    obj = os.path.join(out, os.path.basename(e["output"]))
    args[args.index("-o") + 1] = obj
    if "-MD" in args:  # no dependency files
        i = args.index("-MD")
        del args[i:i + 5]  # -MD -MQ X -MF Y
    subprocess.run(args, cwd=e["directory"], check=True)
    objs.append(obj)
ninja = open(os.path.join(build, "build.ninja")).read()
m = re.search(r"^build libarena/libarena\.so: .*\n LINK_ARGS = (.*)$", ninja, re.M)
if not objs or not m:
    sys.exit("check_aarch64: libarena's objects or link flags not found in " + build)
link = [a for a in shlex.split(m.group(1)) if not a.endswith(".a")]  # the archive is in objs
subprocess.run([cxx, "-o", os.path.join(out, "libarena.so")] + objs + link, cwd=build,
               check=True)
EOF
echo "check_aarch64: built $(file -b "$out/libarena.so" | cut -d, -f1-2)"

# ---- Test programs ----
"$cxx" -O2 -std=c++20 -pthread bench/bench_alloc.cc bench/proc.cc -o "$out/bench_alloc"
mkdir -p "$out/include"
ln -s "$(dirname "$(find /usr/include -name doctest.h -path '*doctest/*' | head -1)")" \
    "$out/include/doctest"
tests=(api cxx errors threads)
for t in "${tests[@]}"; do
    "$cxx" -O2 -std=c++20 -pthread -isystem "$out/include" -Itests/lib -Ilibarena/include \
        "tests/integration/test_$t.cc" tests/doctest_main.cc tests/lib/testing.cc \
        tests/lib/fake_page.cc -ldl -o "$out/test-$t"
done

# ---- Runs ----
fail=0
run() { # NAME COMMAND...: one emulated run with libarena preloaded
    local name=$1
    shift
    if "$qemu" -E LD_PRELOAD="$out/libarena.so" -E ARENA_STATS_DIR="$out/stats" \
        -E ARENA_ABORT_ON_ERROR=0 -E ARENA_TEST_EXEC_WRAPPER="$qemu" "$@" >"$out/log" 2>&1; then
        echo "ok    $name"
    else
        echo "FAIL  $name"
        tail -20 "$out/log" | sed 's/^/      /'
        fail=1
    fi
}
for w in small small-batch xthread xthread-mp powerlaw realloc larson large churn; do
    run "bench_alloc $w --smoke" "$out/bench_alloc" "$w" --smoke
done
# Left out: tests/integration/test_fork.cc, whose forks in a multi-threaded process abort
# qemu-user itself ("cpu_exec: assertion failed").
for t in "${tests[@]}"; do
    run "test-$t" "$out/test-$t"
done
echo "check_aarch64: left out: test-fork (qemu-user aborts on fork in a threaded guest)"
exit $fail
