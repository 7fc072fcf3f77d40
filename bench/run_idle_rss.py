#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Resident memory over time after a large free, when the process then does little or nothing.

Issue 14: freed memory must go back to the kernel within about the purge delay even when the
process allocates little or nothing afterwards. bench_idle (one scenario per process) allocates
and writes a lot, frees it, and samples its RSS (/proc/self/statm: VmRSS) every 50 ms for 3 s;
this driver runs it under glibc (no preload), jemalloc, mimalloc, tcmalloc and libarena (its
defaults: ARENA_PURGE_DELAY_MS=500), the allocators in an order shuffled per round from a fixed
seed. Scenarios: `mixed` (1 GiB of mixed sizes, then idle), `mixed-light` (the same, then 100
small malloc/free pairs every 10 ms), `small4k` (256 MiB of 4100-byte blocks freed in random
order, then idle: a cache of 4 KiB values) and `remote4k` (the same blocks allocated by a thread
that then sleeps, freed by the main thread).

Per allocator and scenario we report the median over rounds of the RSS at each sample time,
the time until the RSS came within 10% of the freed amount of where it started (baseline +
freed/10), and the RSS at the end. Writes idle_rss.md, idle_rss.json and (with gnuplot)
idle_rss.png into --out.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (  # noqa: E402
    SHUFFLE_SEED,
    Allocator,
    BenchError,
    allocator_env_vars,
    busy_warning,
    check_paths,
    check_preloads,
    child_env,
    load_before,
    load_line,
    log,
    machine_info,
    machine_line,
    now_utc,
    parse_json_line,
    results_dir,
    run_child,
    standard_allocators,
    write_json,
)

SCENARIOS = ["mixed", "mixed-light", "small4k", "remote4k"]
RESULT_KEYS = ("scenario", "baseline_kib", "peak_kib", "after_free_kib", "samples")
TABLE_MS = [0, 250, 500, 750, 1000, 1500, 2000, 3000]  # columns of the markdown tables
COLOURS = {"glibc": "#444444", "jemalloc": "#1f77b4", "mimalloc": "#2ca02c",
           "tcmalloc": "#9467bd", "libarena": "#d62728"}


def run_rounds(args: argparse.Namespace, allocs: list[Allocator], stats_dir: str) -> None:
    active = [a for a in allocs if not a.skipped]
    rng = random.Random(SHUFFLE_SEED)
    for rnd in range(args.rounds):
        for scenario in args.scenarios:
            order = active[:]
            rng.shuffle(order)
            line = []
            for alloc in order:
                cmd = [args.bench, scenario, "--seconds", str(args.seconds)]
                if args.smoke:
                    cmd.append("--smoke")
                what = f"{alloc.name} {scenario} round {rnd + 1}"
                proc = run_child(cmd, child_env(alloc, {"ARENA_STATS_DIR": stats_dir}),
                                 120 + args.seconds, what)
                result = parse_json_line(proc, what, RESULT_KEYS)
                result["round"] = rnd + 1
                alloc.samples.setdefault(scenario, []).append(result)
                line.append(f"{alloc.name} {result['samples'][-1][1] // 1024} MiB")
            log(f"round {rnd + 1}/{args.rounds} {scenario} (RSS at the end): " + ", ".join(line))


def rss_at(result: dict[str, Any], ms: int) -> int | None:
    """The RSS of the last sample taken at or before `ms` after the free."""
    got = None
    for t, kib in result["samples"]:
        if t <= ms + 10:  # a sample is taken a few ms after its tick
            got = kib
    return got


def back_ms(result: dict[str, Any]) -> int | None:
    """Milliseconds after the free until RSS came within 10% of the freed amount of the
    baseline (and stayed there to the end); None if it never did."""
    freed = max(result["peak_kib"] - result["baseline_kib"], 0)
    target = result["baseline_kib"] + freed / 10
    when = None
    for t, kib in result["samples"]:
        if kib <= target:
            if when is None:
                when = t
        else:
            when = None
    return when


def analyse(allocs: list[Allocator], scenarios: list[str]) -> list[dict[str, Any]]:
    rows = []
    for scenario in scenarios:
        for alloc in allocs:
            results = alloc.samples.get(scenario)
            if not results:
                continue
            times = sorted({t for r in results for t, _ in r["samples"]})
            grid = list(range(0, int(times[-1]) + 1, 50)) if times else []
            curve = []
            for ms in grid:
                vals = [v for v in (rss_at(r, ms) for r in results) if v is not None]
                if vals:
                    curve.append([ms, int(statistics.median(vals))])
            backs = [back_ms(r) for r in results]
            row = {
                "scenario": scenario,
                "allocator": alloc.name,
                "rounds": len(results),
                "baseline_kib": int(statistics.median(r["baseline_kib"] for r in results)),
                "peak_kib": int(statistics.median(r["peak_kib"] for r in results)),
                "after_free_kib": int(statistics.median(r["after_free_kib"] for r in results)),
                "end_kib": int(statistics.median(r["samples"][-1][1] for r in results)),
                "back_ms": None if any(b is None for b in backs)
                else int(statistics.median(backs)),
                "back_rounds": sum(b is not None for b in backs),
                "curve": curve,
            }
            rows.append(row)
    return rows


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f}"


def markdown(args: argparse.Namespace, command: str, machine: dict[str, Any],
             allocs: list[Allocator], notes: list[str], rows: list[dict[str, Any]],
             elapsed: float) -> str:
    tag = " (SMOKE: tiny sizes, not a result)" if args.smoke else ""
    out = [f"# RSS over time after a large free, then idle{tag}", ""]
    out += [
        "How quickly freed memory goes back to the kernel when the process then allocates "
        "little or nothing (issue 14, item 4). bench_idle allocates and writes the memory, "
        "frees it, and reads its VmRSS every 50 ms. Each cell is the median over "
        f"{args.rounds} rounds of RSS in MiB at that time after the free returned. \"Back\" is "
        "when RSS came within 10% of the freed amount of where it started, and stayed: the "
        "median over rounds, '-' when it did not in some round. libarena runs with its "
        "defaults (ARENA_PURGE_DELAY_MS=500).",
        "",
        f"- {machine_line(machine)}",
        load_line(machine),
        f"- command: `{command}`",
        f"- {now_utc()}, {elapsed:.0f} s",
    ]
    out += [f"- {w}" for w in busy_warning(machine) if w]
    for a in allocs:
        out.append(f"- {a.name}: {a.skipped if a.skipped else a.describe()}")
    out.append("")
    for scenario in args.scenarios:
        srows = [r for r in rows if r["scenario"] == scenario]
        if not srows:
            continue
        out += [f"## {scenario}", ""]
        head = ["allocator", "peak", "after free"] + [f"{ms / 1000:g} s" for ms in TABLE_MS
                                                      if ms <= args.seconds * 1000]
        head += ["back (ms)"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for r in srows:
            by_ms = dict((t, kib) for t, kib in r["curve"])
            cells = [r["allocator"], mib(r["peak_kib"]), mib(r["after_free_kib"])]
            cells += [mib(by_ms.get(ms)) for ms in TABLE_MS if ms <= args.seconds * 1000]
            cells.append("-" if r["back_ms"] is None else str(r["back_ms"]))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    out += ["## Checks", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


def plot(path: str, rows: list[dict[str, Any]], scenarios: list[str], smoke: bool) -> bool:
    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        log("gnuplot not found: no idle_rss.png")
        return False
    blocks, panels = [], []
    for i, scenario in enumerate(scenarios):
        srows = [r for r in rows if r["scenario"] == scenario]
        lines = []
        for j, r in enumerate(srows):
            name = f"$d{i}_{j}"
            data = "\n".join(f"{t / 1000:.3f} {kib / 1024:.1f}" for t, kib in r["curve"])
            blocks.append(f"{name} << EOD\n{data}\nEOD")
            lines.append(f"{name} using 1:2 with lines lw 2 lc rgb "
                         f"'{COLOURS.get(r['allocator'], '#888888')}' title '{r['allocator']}'")
        if lines:
            panels.append(f"set title '{scenario}'\nplot " + ", ".join(lines))
    if not panels:
        return False
    cols = 2 if len(panels) > 1 else 1
    rows_n = (len(panels) + cols - 1) // cols
    tag = " (SMOKE)" if smoke else ""
    script = "\n".join(blocks) + f"""
set terminal pngcairo size {560 * cols},{380 * rows_n} font "sans,10"
set output '{path}'
set multiplot layout {rows_n},{cols} title "RSS after a large free (seconds after the free, MiB){tag}"
set xlabel "seconds after the free"
set ylabel "RSS (MiB)"
set grid
set key top right
set yrange [0:*]
""" + "\n".join(panels) + "\nunset multiplot\n"
    proc = subprocess.run([gnuplot], input=script, text=True, capture_output=True, check=False)
    if proc.returncode != 0:
        log(f"gnuplot failed: {proc.stderr.strip()}")
        return False
    return True


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", required=True, help="path to the bench_idle executable")
    p.add_argument("--arena", required=True, help="path to libarena.so (required)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--seconds", type=int, default=3, help="sampling time after the free")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma-separated, from {', '.join(SCENARIOS)}")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    p.add_argument("--out", default=None,
                   help="results directory (default bench/results; --smoke: a temporary one)")
    p.add_argument("--no-banner-check", action="store_true",
                   help="skip libarena's ARENA_VERBOSE banner check (a stand-in library)")
    args = p.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    bad = [s for s in args.scenarios if s not in SCENARIOS]
    if bad or args.rounds < 1 or args.seconds < 1:
        p.error(f"bad --scenarios {bad}, --rounds or --seconds")
    if args.smoke:
        args.seconds = min(args.seconds, 1)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = shlex.join([sys.executable] + sys.argv)
    if not check_paths(args):
        return 2
    allocs = standard_allocators(args.arena)
    machine = machine_info()
    if machine["busy"]:
        log(f"WARNING: load average {load_before(machine):.2f} on {machine['cores']} cores: "
            "the machine is busy, results will be noisy")
    stats_dir = tempfile.mkdtemp(prefix="bench-idle.")
    start = time.monotonic()
    try:
        notes = check_preloads([a for a in allocs if not a.skipped], args.bench,
                               ["small4k", "--smoke", "--seconds", "1"], RESULT_KEYS,
                               args.no_banner_check)
        for n in notes:
            log(f"check: {n}")
        run_rounds(args, allocs, stats_dir)
    except BenchError as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        shutil.rmtree(stats_dir, ignore_errors=True)
    elapsed = time.monotonic() - start
    machine["loadavg_end"] = os.getloadavg()
    machine["date_end"] = now_utc()
    rows = analyse(allocs, args.scenarios)
    with results_dir(args.out, args.smoke, "bench-idle-smoke-") as (out_dir, tmp):
        text = markdown(args, command, machine, allocs, notes, rows, elapsed)
        with open(os.path.join(out_dir, "idle_rss.md"), "w", encoding="utf-8") as f:
            f.write(text)
        write_json(os.path.join(out_dir, "idle_rss.json"), {
            "command": command, "machine": machine, "smoke": args.smoke,
            "rounds": args.rounds, "seconds": args.seconds, "scenarios": args.scenarios,
            "env": allocator_env_vars(),
            "allocators": [{"name": a.name, "how": a.describe(), "skipped": a.skipped}
                           for a in allocs],
            "rows": rows,
            "samples": {a.name: a.samples for a in allocs if not a.skipped},
        })
        plotted = plot(os.path.join(out_dir, "idle_rss.png"), rows, args.scenarios, args.smoke)
    print(text, end="")
    log(f"wrote idle_rss.md, idle_rss.json{', idle_rss.png' if plotted else ''} to "
        f"{'a temporary directory' if tmp else out_dir} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
