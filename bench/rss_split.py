#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Where each allocator's resident memory is: the suite's peak RSS taken apart by mapping.

Runs bench_alloc workloads under glibc and libarena (and, with --peers, jemalloc, mimalloc
and tcmalloc) with `--smaps` (when the measured loop ends) and `--smaps-exit` (once every
worker thread has exited), and sums /proc/self/smaps `Rss:` by what is mapped:

  anonymous     private anonymous memory: the allocator's heap and data, thread stacks,
                the program's own data (brk [heap], [stack] and unnamed mappings)
  allocator     the preloaded library's own file pages (code, read-only data, .data)
  libc.so.6     the C library's file pages
  libstdc++     the C++ library's file pages
  other files   the program, the loader, libm, libgcc_s, [vdso], ...
  stats page    libarena's stats page, $ARENA_STATS_DIR/UID/PID (default /dev/shm/arena)

A file page counts once it is mapped into the process, and the kernel maps read faults on
file pages 64 KiB at a time (fault-around), so code one allocator runs and another does not
shows up here even when the file is in the page cache already.

Each cell is from the round whose total at exit is the median, so a column adds up. Writes
rss_split.md and rss_split.json (bench/results by default; --smoke: a temporary directory).

Only the Python standard library.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
from typing import Any

import benchlib
from benchlib import Allocator, BenchError

# The runs first (small-object throughput with 1 and 2 threads, with and without
# cross-thread frees), then two where the heap is most of the process.
CONFIGS = [("small", 1), ("small", 2), ("xthread", 2), ("powerlaw", 1), ("large", 1)]
PARTS = ["anonymous", "allocator", "libc.so.6", "libstdc++", "other files", "stats page"]
# Where libarena keeps its stats pages (<dir>/<uid>/<pid>).
STATS_DIR = os.environ.get("ARENA_STATS_DIR") or "/dev/shm/arena"
KEYS = ("peak_rss_kib", "vm_hwm_kib", "rss_end_kib")
MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$")


def part_of(path: str, allocator_lib: str | None) -> str:
    """Which PARTS entry a mapping (its smaps path column) belongs to."""
    if path == "" or path in ("[heap]", "[stack]") or path.startswith("[anon"):
        return "anonymous"
    if path.startswith(STATS_DIR + "/"):
        return "stats page"
    if allocator_lib is not None and path == allocator_lib:
        return "allocator"
    base = os.path.basename(path)
    if base.startswith("libc.so"):
        return "libc.so.6"
    if base.startswith("libstdc++.so"):
        return "libstdc++"
    return "other files"


def split_smaps(text: str, allocator_lib: str | None) -> dict[str, int]:
    """KiB resident per part, from the text of /proc/PID/smaps."""
    parts = dict.fromkeys(PARTS, 0)
    current = None
    for line in text.splitlines():
        m = MAPPING.match(line)
        if m:
            current = part_of(m.group(1).strip(), allocator_lib)
        elif line.startswith("Rss:") and current is not None:
            parts[current] += int(line.split()[1])
    return parts


def run_once(
    bench: str, alloc: Allocator, workload: str, threads: int, smoke: bool, tmp: str
) -> dict[str, Any]:
    end_path = os.path.join(tmp, "end.smaps")
    exit_path = os.path.join(tmp, "exit.smaps")
    for path in (end_path, exit_path):  # never read an earlier run's
        if os.path.exists(path):
            os.unlink(path)
    cmd = [bench, workload, "--threads", str(threads), "--smaps", end_path,
           "--smaps-exit", exit_path]
    if smoke:
        cmd.append("--smoke")
    what = f"{alloc.name} {workload} x{threads}"
    result = benchlib.parse_json_line(
        benchlib.run_child(cmd, benchlib.child_env(alloc), 600, what), what, KEYS
    )
    lib = os.path.realpath(alloc.lib) if alloc.lib else None
    splits = {}
    for point, path in (("end", end_path), ("exit", exit_path)):
        try:
            with open(path, encoding="utf-8") as f:
                splits[point] = split_smaps(f.read(), lib)
        except OSError as e:
            raise BenchError(f"{what}: no smaps written to {path}: {e}") from e
    # Both are read right after the loop (smaps_rollup, then smaps): they must agree, or a
    # mapping was missed or counted twice.
    total = sum(splits["end"].values())
    if abs(total - result["rss_end_kib"]) > max(256, result["rss_end_kib"] // 20):
        raise BenchError(
            f"{what}: the smaps parts add up to {total} KiB, but bench_alloc read "
            f"{result['rss_end_kib']} KiB in smaps_rollup at the same point"
        )
    return {
        "end": splits["end"],
        "exit": splits["exit"],
        "peak_rss_kib": result["peak_rss_kib"],
        "ops_per_sec": result["ops_per_sec"],
    }


def median_round(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The sample whose total at exit is the median (the lower one of an even count)."""
    ranked = sorted(samples, key=lambda s: sum(s["exit"].values()))
    return ranked[(len(ranked) - 1) // 2]


def kib(n: int) -> str:
    return f"{n:,}"


def signed(n: int) -> str:
    return f"{n:+,}" if n else "0"


def table(name: str, rows: dict[str, dict[str, Any]], allocs: list[Allocator]) -> list[str]:
    names = [a.name for a in allocs]
    head = "| KiB | " + " | ".join(names) + " | libarena - glibc |"
    out = [f"### {name}", "", head, "|---|" + "---:|" * (len(names) + 1)]

    def line(label: str, get) -> str:
        cells = [kib(get(rows[n])) for n in names]
        diff = get(rows["libarena"]) - get(rows["glibc"])
        return f"| {label} | " + " | ".join(cells) + f" | {signed(diff)} |"

    for part in PARTS:
        out.append(line(part, lambda r, p=part: r["end"][p]))
    out.append(line("**when the loop ends**", lambda r: sum(r["end"].values())))
    for part in PARTS:
        added = [rows[n]["exit"][part] - rows[n]["end"][part] for n in names]
        if any(added):
            out.append(
                line(f"+ {part} at thread exit", lambda r, p=part: r["exit"][p] - r["end"][p])
            )
    out.append(line("**after the workers exit**", lambda r: sum(r["exit"].values())))
    out.append(line("peak RSS (bench_alloc)", lambda r: r["peak_rss_kib"]))
    out.append("")
    return out


def summary(name: str, rows: dict[str, dict[str, Any]]) -> str:
    """One line: libarena - glibc by part when the loop ends, then what the workers' exit
    changed for each, and the two peaks."""
    a, g = rows["libarena"], rows["glibc"]
    d = {p: a["end"][p] - g["end"][p] for p in PARTS}
    parts = ", ".join(f"{p} {signed(d[p])}" for p in PARTS if d[p])

    def exit_change(r: dict[str, Any]) -> str:
        by = {p: r["exit"][p] - r["end"][p] for p in PARTS}
        inner = ", ".join(f"{p} {signed(v)}" for p, v in by.items() if v)
        return f"{signed(sum(by.values()))}" + (f" ({inner})" if inner else "")

    return (
        f"- {name}: when the loop ends, libarena {signed(sum(d.values()))} KiB against glibc: "
        f"{parts or 'no difference'}. The workers' exit changes libarena by "
        f"{exit_change(a)} KiB and glibc by {exit_change(g)} KiB. Peak RSS: libarena "
        f"{kib(a['peak_rss_kib'])}, glibc {kib(g['peak_rss_kib'])} KiB "
        f"({signed(a['peak_rss_kib'] - g['peak_rss_kib'])})."
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", required=True, help="path to the bench_alloc executable")
    ap.add_argument("--arena", required=True, help="path to libarena.so")
    ap.add_argument("--rounds", type=int, default=3, help="runs per allocator (default 3)")
    ap.add_argument("--smoke", action="store_true", help="100x smaller runs, for the tests")
    ap.add_argument("--peers", action="store_true",
                    help="also jemalloc, mimalloc and tcmalloc (if installed)")
    ap.add_argument("--only", action="append", choices=sorted({w for w, _ in CONFIGS}),
                    help="only this workload (repeatable)")
    ap.add_argument("--out", help="directory for rss_split.md and rss_split.json "
                    "(default bench/results; with --smoke a temporary directory)")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    for path, what in ((args.bench, "--bench"), (args.arena, "--arena")):
        if not os.path.isfile(path):
            ap.error(f"{what} {path}: no such file")

    allocs = [a for a in benchlib.standard_allocators(args.arena) if not a.skipped]
    if not args.peers:
        allocs = [a for a in allocs if a.name in ("glibc", "libarena")]
    configs = [c for c in CONFIGS if not args.only or c[0] in args.only]
    machine = benchlib.machine_info()
    try:
        notes = benchlib.check_preloads(
            allocs, args.bench, ["small", "--smoke"], KEYS
        )
        rows: dict[str, dict[str, dict[str, Any]]] = {}
        with tempfile.TemporaryDirectory(prefix="rss-split.") as tmp:
            for workload, threads in configs:
                name = f"{workload} x{threads}"
                rows[name] = {}
                for alloc in allocs:
                    samples = [
                        run_once(args.bench, alloc, workload, threads, args.smoke, tmp)
                        for _ in range(args.rounds)
                    ]
                    rows[name][alloc.name] = median_round(samples)
                    benchlib.log(f"{name} {alloc.name}: exit total "
                                 f"{sum(rows[name][alloc.name]['exit'].values())} KiB")
    except BenchError as e:
        benchlib.log(f"rss_split.py: {e}")
        return 1

    md = [
        "# Resident memory by mapping",
        "",
        "Generated by `bench/rss_split.py` (part of `bench/run_all.sh`); do not edit by hand.",
        "",
        *benchlib.busy_warning(machine),
        f"- date: {benchlib.now_utc()}",
        f"- command: `{' '.join([os.path.basename(sys.executable)] + sys.argv)}`",
        f"- machine: {benchlib.machine_line(machine)}",
        f"- {args.rounds} run(s) per allocator and workload; each column is the run with the "
        "median total after the workers exit",
        *[f"- {n}" for n in notes],
        "",
        "KiB of `Rss:` in /proc/self/smaps, summed by mapping, when the measured loop ends "
        "(`bench_alloc --smaps`) and once every worker thread has exited (`--smaps-exit`). "
        "The last line is the suite's peak RSS of the same run: max(VmHWM, the exact RSS when "
        "the loop ends).",
        "",
        "## libarena against glibc",
        "",
        *[summary(name, r) for name, r in rows.items()],
        "",
        "## By workload",
        "",
    ]
    for name, r in rows.items():
        md += table(name, r, allocs)
    data = {
        "command": sys.argv,
        "machine": machine,
        "rounds": args.rounds,
        "smoke": args.smoke,
        "parts": PARTS,
        "rows": rows,
    }
    with benchlib.results_dir(args.out, args.smoke, "rss-split.") as (out, _):
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "rss_split.md"), "w", encoding="utf-8") as f:
            f.write("\n".join(md).rstrip() + "\n")
        benchlib.write_json(os.path.join(out, "rss_split.json"), data)
        benchlib.log(f"wrote {out}/rss_split.md")
        if args.smoke:
            print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
