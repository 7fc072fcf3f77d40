#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Run the seed's 256 KiB benchmark (bench_seed) on the native arena and under every malloc.

Six rows, as the issue lists them: the native arena API (bench_seed_native, libarena-native.a,
arena_config(64 KiB, 1024)), libarena as malloc (bench_seed with LD_PRELOAD=libarena.so), glibc
(no preload), jemalloc, mimalloc and tcmalloc (LD_PRELOAD). Each process pins itself to one CPU,
builds the zombie pool, does its warm-up run(s) and then 5 measured runs (bench_seed.cc). The
driver repeats that for --rounds rounds, the allocators interleaved in a shuffled order per
round, and reports per allocator the median over rounds of: M ops/s (from summed cycles), P50,
P99, mean and standard deviation of cycles per operation, plus the max peak RSS, and the
throughput ratios to glibc and mimalloc as medians of per-round ratios.

Writes seed.md and seed.json into --out.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import statistics
import sys
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
    fmt_ratio,
    load_before,
    load_line,
    log,
    machine_info,
    machine_line,
    now_utc,
    paired_ratio,
    parse_json_line,
    results_dir,
    run_child,
    standard_allocators,
    write_json,
)

RESULT_KEYS = ("mops", "cycles", "runs", "peak_rss_kib", "checksum", "counter", "counter_hz")
ORDER = ["arena-native", "libarena", "glibc", "jemalloc", "mimalloc", "tcmalloc"]


def make_allocators(args: argparse.Namespace) -> list[Allocator]:
    allocs = {a.name: a for a in standard_allocators(args.arena)}
    allocs["arena-native"] = Allocator("arena-native", None, bench=args.native)
    return [allocs[n] for n in ORDER]


def seed_cmd(args: argparse.Namespace, alloc: Allocator) -> list[str]:
    cmd = [alloc.bench or args.bench, "--seed", str(args.seed)]
    if args.ops:
        cmd += ["--ops", str(args.ops)]
    return cmd + (["--smoke"] if args.smoke else [])


def run_rounds(args: argparse.Namespace, allocs: list[Allocator]) -> list[dict[str, Any]]:
    active = [a for a in allocs if not a.skipped]
    rng = random.Random(SHUFFLE_SEED)
    samples = []
    checksum: tuple[str, str] | None = None
    for rnd in range(args.rounds):
        order = active[:]
        rng.shuffle(order)
        line = []
        for pos, alloc in enumerate(order):
            what = f"{alloc.name} seed (round {rnd + 1})"
            proc = run_child(seed_cmd(args, alloc), child_env(alloc), 600, what)
            result = parse_json_line(proc, what, RESULT_KEYS)
            if result["mops"] <= 0:
                raise BenchError(f"{what}: non-positive throughput: {result}")
            checksum = checksum or (result["checksum"], alloc.name)
            if result["checksum"] != checksum[0]:
                raise BenchError(
                    f"{what}: checksum {result['checksum']} differs from {checksum[1]}'s "
                    f"{checksum[0]}: some allocator returned bad memory"
                )
            sample = {"round": rnd + 1, "position": pos, "allocator": alloc.name, **result}
            alloc.samples.setdefault("seed", []).append(sample)
            samples.append(sample)
            line.append(f"{alloc.name} {result['mops']:.2f}")
        log(f"round {rnd + 1}/{args.rounds} (M ops/s): " + ", ".join(line))
    return samples


def analyse(allocs: list[Allocator]) -> list[dict[str, Any]]:
    by = {a.name: a for a in allocs}

    def mops(a: Allocator) -> dict[int, float]:
        return {s["round"]: s["mops"] for s in a.samples.get("seed", [])}

    rows = []
    glibc_rss = None
    for alloc in allocs:
        ss = alloc.samples.get("seed")
        if not ss:
            continue
        row: dict[str, Any] = {
            "allocator": alloc.name,
            "mops": statistics.median(s["mops"] for s in ss),
            "mops_runs": [r["mops"] for s in ss for r in s["runs"]],
            "max_peak_rss_kib": max(s["peak_rss_kib"] for s in ss),
            "rounds": len(ss),
        }
        for k in ("p50", "p99", "mean", "stddev"):
            row[k] = statistics.median(s["cycles"][k] for s in ss)
        row["max_cycles"] = max(s["cycles"]["max"] for s in ss)
        best = None
        for ref in ("glibc", "jemalloc", "mimalloc", "tcmalloc"):
            other = by.get(ref)
            r = paired_ratio(mops(alloc), mops(other)) if other and not other.skipped else None
            row[f"speed_vs_{ref}"] = r[0] if r else None
            if r and ref != alloc.name and (best is None or r[0] < best[1]):
                best = (ref, r[0])
        # Against the fastest peer (for libarena and the native arena: where they stand).
        row["best_peer"], row["speed_vs_best"] = best if best else (None, None)
        if alloc.name == "glibc":
            glibc_rss = row["max_peak_rss_kib"]
        rows.append(row)
    for row in rows:
        row["rss_vs_glibc"] = row["max_peak_rss_kib"] / glibc_rss if glibc_rss else None
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| allocator | M ops/s | vs glibc | vs mimalloc | P50 cycles | P99 cycles | mean "
        "| stddev | peak RSS MiB | RSS vs glibc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['allocator']} | {r['mops']:.3f} | {fmt_ratio(r['speed_vs_glibc'])} "
            f"| {fmt_ratio(r['speed_vs_mimalloc'])} | {r['p50']:,.0f} | {r['p99']:,.0f} "
            f"| {r['mean']:,.0f} | {r['stddev']:,.0f} | {r['max_peak_rss_kib'] / 1024:.1f} "
            f"| {fmt_ratio(r['rss_vs_glibc'])} |"
        )
    return lines


def write_reports(
    out_dir: str,
    args: argparse.Namespace,
    command: str,
    machine: dict[str, Any],
    allocs: list[Allocator],
    notes: list[str],
    samples: list[dict[str, Any]],
    elapsed: float,
) -> str:
    rows = analyse(allocs)
    first = samples[0] if samples else {}
    md = [
        "# The seed benchmark: 256 KiB allocations",
        "",
        "Generated by `bench/run_seed.py` (part of `bench/run_all.sh`); do not edit by hand.",
        "",
    ]
    if args.smoke:
        md += ["**SMOKE RUN: 100 operations per run; the numbers mean nothing.**", ""]
    md += busy_warning(machine)
    md += [
        f"- date: {machine['date']}",
        f"- command: `{command}`",
        f"- machine: {machine_line(machine)}",
        load_line(machine),
        f"- counter: {first.get('counter')}, {first.get('counter_hz', 0) / 1e9:.3f} GHz "
        f"(calibrated), empty begin/end pair {first.get('timer_overhead')} cycles",
        f"- per process: pinned to CPU {first.get('cpu')}, {first.get('warmups')} warm-up "
        f"run(s), then {len(first.get('runs', []))} measured runs of "
        f"{first.get('ops_per_run')} operations; {args.rounds} round(s) of processes, "
        f"allocators interleaved (shuffled, seed {SHUFFLE_SEED}); wall time {elapsed:.0f} s",
        f"- allocator environment passed through: {allocator_env_vars() or 'none'}",
        "",
        "One operation: free a random one of the 64 live 256 KiB blocks, allocate its "
        "replacement, write a byte in 128 random 4 KiB pages of it; timed by serialized "
        "counter reads around exactly that. 12,800 zombie allocations stay live throughout "
        "(bench/README.md, 'The seed benchmark').",
        "",
        "M ops/s: operations per second of summed sample time (median over the runs of a "
        "process, then over rounds). Cycles: P50, P99, mean and standard deviation over all "
        "measured operations of a process (median over rounds). Ratios: medians of per-round "
        "ratios of M ops/s, >1 is faster. Peak RSS: max over rounds of VmHWM, or of the exact RSS "
        "(smaps_rollup) before the zombies are freed when that is higher (bench/proc.h).",
        "",
        *table(rows),
        "",
        "Allocators:",
        "",
    ]
    for a in allocs:
        md.append(f"- {a.name}: SKIPPED ({a.skipped})" if a.skipped else f"- {a.name}: {a.describe()}")
    md += ["", "Preload checks:", ""] + [f"- {n}" for n in notes]
    text = "\n".join(md) + "\n"
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "seed.md"), "w", encoding="utf-8") as f:
        f.write(text)
    write_json(
        os.path.join(out_dir, "seed.json"),
        {
            "command": command,
            "machine": machine,
            "rounds": args.rounds,
            "smoke": args.smoke,
            "elapsed_seconds": elapsed,
            "allocators": [
                {"name": a.name, "lib": a.lib, "bench": a.bench, "skipped": a.skipped}
                for a in allocs
            ],
            "preload_checks": notes,
            "rows": rows,
            "samples": samples,
        },
    )
    return text


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", required=True, help="path to bench_seed (plain malloc)")
    p.add_argument("--native", required=True, help="path to bench_seed_native (arena API)")
    p.add_argument("--arena", required=True, help="path to libarena.so")
    p.add_argument("--rounds", type=int, default=3, help="rounds of processes (default 3)")
    p.add_argument("--ops", type=int, help="operations per run (default: bench_seed's)")
    p.add_argument("--smoke", action="store_true", help="tiny runs, for the test suite")
    p.add_argument("--seed", type=int, default=42, help="bench_seed --seed (default 42)")
    p.add_argument(
        "--out",
        help="directory for seed.md and seed.json (default bench/results; with --smoke a "
        "temporary directory that is removed afterwards)",
    )
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = shlex.join([sys.executable] + sys.argv)
    if not check_paths(args, ("bench", "native")):
        return 2

    allocs = make_allocators(args)
    machine = machine_info()
    if machine["busy"]:
        log(f"WARNING: load average {load_before(machine):.2f}: results will be noisy")
    start = time.monotonic()
    try:
        notes = check_preloads(
            [a for a in allocs if not a.skipped],
            args.bench,
            ["--smoke", "--runs", "1", "--warmups", "0"],
            RESULT_KEYS,
        )
        for n in notes:
            log(f"check: {n}")
        samples = run_rounds(args, allocs)
    except BenchError as e:
        log(f"FAILED: {e}")
        return 1
    elapsed = time.monotonic() - start
    machine["loadavg_end"] = os.getloadavg()
    machine["date_end"] = now_utc()

    with results_dir(args.out, args.smoke, "bench-seed-smoke-") as (out_dir, tmp):
        text = write_reports(out_dir, args, command, machine, allocs, notes, samples, elapsed)
    print(text, end="")
    log(f"wrote seed.md and seed.json to {'a temporary directory' if tmp else out_dir} "
        f"in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
