# SPDX-License-Identifier: MIT
"""Where the real programs' allocation time goes: callgrind, with cache and branch simulation,
of run_programs.py's programs under glibc, mimalloc and libarena (issue 17, part 2).

For each program and allocator it reports the whole run's instructions, the instructions spent
inside the allocator (libarena.so's or libmimalloc's functions; glibc's functions from
malloc/*.c), those per call of malloc, free, calloc and realloc, and the simulated D1 and
last-level cache misses and branch mispredictions of the whole run. This VM has no hardware
counters (`perf stat` reports them as not supported), so the cache and branch figures are
callgrind's simulation, not measurements.

    python3 bench/profile_programs.py --arena build-bench/libarena/libarena.so \\
        [--only perl,python] [--scale 0.2] [--out bench/results/programs_profile.md]

Sizes are run_programs.py's full sizes times --scale (callgrind runs about 50 times slower).
Needs valgrind (scripts/deps.sh bench). Python standard library only.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import run_programs  # noqa: E402

ENTRY_POINTS = ("malloc", "free", "calloc", "realloc")


def calls_to(path: str, names: tuple[str, ...]) -> int:
    """Calls recorded in a callgrind file to functions with these names."""
    fn_names: dict[str, str] = {}
    counts: collections.Counter[str] = collections.Counter()
    callee = None
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
            if m:
                if m.group(3):
                    fn_names[m.group(2)] = m.group(3)
                if m.group(1) == "cfn":
                    callee = m.group(2)
                continue
            m = re.match(r"calls=(\d+)", line)
            if m and callee:
                counts[fn_names.get(callee, callee)] += int(m.group(1))
    return sum(counts[n] for n in names)


def in_allocator(where: str) -> bool:
    """A callgrind_annotate row ("file:function [object]") that is allocator code."""
    return "libarena" in where or "mimalloc" in where or (
        "malloc/" in where and "libc.so" in where
    )


def summarise(path: str) -> dict[str, int]:
    events: list[str] = []
    totals: list[int] = []
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith(("totals:", "summary:")):
                totals = [int(x) for x in line.split()[1:]]
    d = dict(zip(events, totals))
    table = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", path],
        capture_output=True, text=True, check=True,
    ).stdout
    own = 0
    for line in table.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$", line)
        if m and in_allocator(m.group(2)):
            own += int(m.group(1).replace(",", ""))
    d["own"] = own
    d["calls"] = calls_to(path, ENTRY_POINTS)
    return d


def profile(prog: run_programs.Program, alloc: benchlib.Allocator, n: int, bench_dir: str,
            out_dir: str) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="arena-prof-") as d:
        prog.make(d, n)
        out = os.path.join(out_dir, f"callgrind.{prog.name}.{alloc.name}")
        env = benchlib.child_env(alloc, prog.env)
        cmd = ["valgrind", "--tool=callgrind", "--cache-sim=yes", "--branch-sim=yes",
               f"--callgrind-out-file={out}"] + prog.argv(bench_dir, n)
        # In the input directory, as run_programs.py runs it.
        proc = subprocess.run(cmd, env=env, cwd=d, capture_output=True, text=True,
                              timeout=3600, check=False)
        if alloc.lib and "cannot be preloaded" in proc.stderr:
            raise benchlib.BenchError(f"{prog.name} / {alloc.name}: {alloc.lib} was not "
                                      f"preloaded\n{benchlib.tail(proc.stderr)}")
        if proc.returncode != 0:
            raise benchlib.BenchError(
                f"{prog.name} / {alloc.name} under callgrind: exit {proc.returncode}\n"
                f"{benchlib.tail(proc.stderr)}")
        return summarise(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arena", required=True, help="path to libarena.so")
    ap.add_argument("--bench-dir", default="build-bench/bench")
    ap.add_argument("--only", default="perl,python,ruby,sqlite3",
                    help="comma-separated programs (run_programs.py's names)")
    ap.add_argument("--scale", type=float, default=0.1,
                    help="fraction of run_programs.py's full size (default 0.1)")
    ap.add_argument("--out", default=None, help="write the table here (markdown) too")
    args = ap.parse_args()
    wanted = args.only.split(",")
    progs = [p for p in run_programs.PROGRAMS if p.name in wanted]
    unknown = sorted(set(wanted) - {p.name for p in progs})
    if unknown:
        print(f"profile_programs.py: unknown program(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    # Absolute: the programs run in their input directory.
    allocs = [a for a in benchlib.standard_allocators(os.path.abspath(args.arena))
              if a.name in ("glibc", "mimalloc", "libarena") and not a.skipped]
    rows = ["| program | allocator | instructions | in the allocator | per call | "
            "D1 misses | LL misses | branch mispredictions |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory(prefix="arena-cg-") as out_dir:
        for prog in progs:
            n = max(prog.smoke, int(prog.full * args.scale))
            for alloc in allocs:
                benchlib.log(f"{prog.name} (n = {n}) / {alloc.name} under callgrind")
                d = profile(prog, alloc, n, args.bench_dir, out_dir)
                d1 = d.get("D1mr", 0) + d.get("D1mw", 0)
                ll = d.get("DLmr", 0) + d.get("DLmw", 0)
                bm = d.get("Bcm", 0) + d.get("Bim", 0)
                per = d["own"] / d["calls"] if d["calls"] else 0.0
                rows.append(f"| {prog.name} | {alloc.name} | {d['Ir']:,} | {d['own']:,} | "
                            f"{per:.1f} | {d1:,} | {ll:,} | {bm:,} |")
    text = "\n".join(rows) + "\n"
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except benchlib.BenchError as e:
        print(f"profile_programs.py: {e}", file=sys.stderr)
        sys.exit(1)
