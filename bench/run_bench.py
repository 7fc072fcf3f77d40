#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Run the allocator suite (bench_alloc) under glibc, jemalloc, mimalloc, tcmalloc and libarena.

Every workload config is run once per allocator per round, interleaved (A B C D E, then the
next config, ...), with the allocator order shuffled per round from a fixed seed, so drift on
a shared, noisy machine lands on all allocators alike. libarena also runs with ARENA_STATS=0
(a sixth row, "libarena-nostats") on the configs that measure what the stats page costs. Per
(config, allocator) we report the median time and throughput and the maximum peak RSS over
the rounds, paired per-round ratios against glibc and mimalloc (and, for libarena, against
every peer), and a geometric mean per allocator across configs.

Before timing anything, each preload is proven to have taken: peers by finding their library
in the child's /proc/self/maps, libarena also by its ARENA_VERBOSE=1 banner; the glibc
baseline by finding none of the libraries mapped. Every child must exit 0 and print one JSON
line, and all allocators must produce the same checksum for a config (they were asked for the
same sequence of sizes, so a different checksum means some allocator returned bad memory).

Writes suite.md (tables) and suite.json (raw samples and summaries) into --out.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (  # noqa: E402
    PEER_NAMES,
    SHUFFLE_SEED,
    Allocator,
    BenchError,
    allocator_env_vars,
    busy_warning,
    check_paths,
    check_preloads,
    child_env,
    fmt_ratio,
    geomean,
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

RESULT_KEYS = ("workload", "threads", "ops", "seconds", "ops_per_sec", "peak_rss_kib", "checksum")


@dataclass(frozen=True)
class Config:
    """One row group of the report: a workload at a thread count."""

    workload: str
    threads: int
    stats: bool = False  # also run libarena with ARENA_STATS=0 (the stats-cost rows)

    @property
    def key(self) -> str:
        return f"{self.workload} x{self.threads}"


# The suite, in report order. Workloads are described in bench/README.md and in
# bench_alloc.cc; sizes are bench_alloc's defaults (about 0.3-1.5 s each on glibc here).
CONFIGS = [
    Config("small", 1, stats=True),
    Config("small", 2, stats=True),
    Config("small-batch", 1),
    Config("small-batch", 2),
    Config("xthread", 2),
    Config("xthread-mp", 4),
    Config("powerlaw", 1),
    Config("powerlaw", 2),
    Config("realloc", 1),
    Config("larson", 2, stats=True),
    Config("large", 1),
    Config("churn", 2),
]
WORKLOADS = sorted({c.workload for c in CONFIGS})


# ---- Measuring ----


def bench_cmd(args: argparse.Namespace, cfg: Config) -> list[str]:
    cmd = [args.bench, cfg.workload, "--threads", str(cfg.threads), "--seed", str(args.seed)]
    return cmd + (["--smoke"] if args.smoke else [])


def runs_config(alloc: Allocator, cfg: Config) -> bool:
    return alloc.name != "libarena-nostats" or cfg.stats


def run_rounds(
    args: argparse.Namespace, allocs: list[Allocator], configs: list[Config]
) -> list[dict[str, Any]]:
    """All timed runs, interleaved. Returns the raw samples in run order."""
    active = [a for a in allocs if not a.skipped]
    rng = random.Random(SHUFFLE_SEED)
    checksums: dict[Config, tuple[str, str]] = {}
    samples = []
    timeout = 120 if args.smoke else 600
    for rnd in range(args.rounds):
        order = active[:]
        rng.shuffle(order)
        log(f"round {rnd + 1}/{args.rounds}: order {' '.join(a.name for a in order)}")
        for cfg in configs:
            line = []
            for pos, alloc in enumerate(order):
                if not runs_config(alloc, cfg):
                    continue
                what = f"{alloc.name} {cfg.key} (round {rnd + 1})"
                proc = run_child(bench_cmd(args, cfg), child_env(alloc), timeout, what)
                result = parse_json_line(proc, what, RESULT_KEYS)
                if (result["workload"], result["threads"]) != (cfg.workload, cfg.threads):
                    raise BenchError(f"{what}: ran the wrong config: {result}")
                if result["seconds"] <= 0:
                    raise BenchError(f"{what}: non-positive time: {result}")
                first = checksums.setdefault(cfg, (result["checksum"], alloc.name))
                if result["checksum"] != first[0]:
                    raise BenchError(
                        f"{what}: checksum {result['checksum']} differs from {first[1]}'s "
                        f"{first[0]}: the same work gave a different result, so some "
                        f"allocator returned bad memory"
                    )
                sample = {"round": rnd + 1, "position": pos, "allocator": alloc.name, **result}
                alloc.samples.setdefault(cfg, []).append(sample)
                samples.append(sample)
                line.append(f"{alloc.name} {result['seconds']:.3f}s")
            log(f"  {cfg.key}: " + ", ".join(line))
    return samples


def run_stats_pairs(
    args: argparse.Namespace, allocs: list[Allocator], configs: list[Config]
) -> dict[str, list[float]]:
    """The cost of the stats page, measured on its own: for each stats config, back-to-back
    pairs of libarena with the page on and with ARENA_STATS=0 (the order alternating), so that
    the two runs of a pair are never separated by other allocators' runs. Returns the
    time-on / time-off ratios per config key.

    The interleaved rounds put other allocators between the on and off runs, and on this noisy
    machine that made a difference of a few percent look like +25% or -10% in single rounds.
    """
    by = {a.name: a for a in allocs if not a.skipped}
    on, off = by.get("libarena"), by.get("libarena-nostats")
    ratios: dict[str, list[float]] = {}
    if on is None or off is None or args.stats_pairs < 1:
        return ratios
    timeout = 120 if args.smoke else 600
    for cfg in configs:
        if not cfg.stats:
            continue
        got = ratios.setdefault(cfg.key, [])
        for i in range(args.stats_pairs):
            times = {}
            for alloc in (on, off) if i % 2 == 0 else (off, on):
                what = f"{alloc.name} {cfg.key} (stats pair {i + 1})"
                proc = run_child(bench_cmd(args, cfg), child_env(alloc), timeout, what)
                times[alloc.name] = parse_json_line(proc, what, RESULT_KEYS)["seconds"]
            got.append(times[on.name] / times[off.name])
        log(f"  stats cost {cfg.key}: on/off median {statistics.median(got):.3f} "
            f"over {len(got)} pairs")
    return ratios


# ---- Summaries ----


@dataclass
class Cell:
    """One (config, allocator) summary."""

    seconds: float  # median
    ops_per_sec: float  # median
    spread: float  # (max - min) / median of ops/s, a noise indicator
    peak_rss_kib: int  # max over rounds
    n: int


def summarize(alloc: Allocator, cfg: Config) -> Cell | None:
    samples = alloc.samples.get(cfg)
    if not samples:
        return None
    rates = [s["ops_per_sec"] for s in samples]
    med = statistics.median(rates)
    return Cell(
        seconds=statistics.median(s["seconds"] for s in samples),
        ops_per_sec=med,
        spread=(max(rates) - min(rates)) / med if med > 0 else 0.0,
        peak_rss_kib=max(s["peak_rss_kib"] for s in samples),
        n=len(samples),
    )


def per_round(alloc: Allocator, cfg: Config, key: str) -> dict[int, float]:
    return {s["round"]: s[key] for s in alloc.samples.get(cfg, [])}


def speed_ratio(a: Allocator, b: Allocator, cfg: Config) -> tuple[float, float, float] | None:
    """a's throughput over b's, paired by round (>1: a is faster)."""
    if b.skipped or a.skipped:
        return None
    return paired_ratio(per_round(a, cfg, "ops_per_sec"), per_round(b, cfg, "ops_per_sec"))


def rss_ratio(a: Allocator, b: Allocator, cfg: Config) -> float | None:
    ca, cb = summarize(a, cfg), summarize(b, cfg)
    return ca.peak_rss_kib / cb.peak_rss_kib if ca and cb and cb.peak_rss_kib else None


def analyse(
    allocs: list[Allocator], configs: list[Config], stats_pairs: dict[str, list[float]]
) -> dict[str, Any]:
    """Every number the reports and plots use, as plain data (also written to suite.json)."""
    by = {a.name: a for a in allocs}
    active = [a for a in allocs if not a.skipped]
    rows = []
    for cfg in configs:
        for alloc in active:
            cell = summarize(alloc, cfg)
            if cell is None:
                continue
            row = {
                "config": cfg.key,
                "workload": cfg.workload,
                "threads": cfg.threads,
                "allocator": alloc.name,
                "median_seconds": cell.seconds,
                "median_ops_per_sec": cell.ops_per_sec,
                "spread": cell.spread,
                "max_peak_rss_kib": cell.peak_rss_kib,
                "rounds": cell.n,
            }
            for ref in ("glibc", "mimalloc"):
                r = speed_ratio(alloc, by[ref], cfg) if ref in by else None
                row[f"speed_vs_{ref}"] = r[0] if r else None
                row[f"rss_vs_{ref}"] = rss_ratio(alloc, by[ref], cfg) if ref in by else None
            rows.append(row)

    # libarena against every peer, per config: where it stands.
    standing = []
    arena = by.get("libarena")
    for cfg in configs:
        if arena is None or arena.skipped or not arena.samples.get(cfg):
            continue
        entry: dict[str, Any] = {"config": cfg.key}
        best = None
        for peer in ["glibc"] + PEER_NAMES:
            p = by.get(peer)
            r = speed_ratio(arena, p, cfg) if p else None
            entry[f"speed_vs_{peer}"] = r[0] if r else None
            entry[f"rss_vs_{peer}"] = rss_ratio(arena, p, cfg) if p and not p.skipped else None
            if r and (best is None or r[0] < best[1]):
                best = (peer, r[0])
        entry["best_peer"], entry["speed_vs_best"] = best if best else (None, None)
        standing.append(entry)

    means = {}
    for alloc in active:
        mine = [r for r in rows if r["allocator"] == alloc.name]
        means[alloc.name] = {
            k: geomean([r[k] for r in mine if r[k] is not None])
            for k in ("speed_vs_glibc", "speed_vs_mimalloc", "rss_vs_glibc", "rss_vs_mimalloc")
        }
        means[alloc.name]["configs"] = len(mine)

    stats_cost = []
    for cfg in configs:
        # time with stats on / time with stats off over back-to-back pairs: 1.02 = 2% cost.
        got = stats_pairs.get(cfg.key)
        if got:
            stats_cost.append(
                {"config": cfg.key, "on_over_off": statistics.median(got), "min": min(got),
                 "max": max(got), "pairs": len(got)}
            )

    standing_mean = {
        k: geomean([s[k] for s in standing if s.get(k) is not None])
        for k in [f"{m}_vs_{p}" for m in ("speed", "rss") for p in ["glibc"] + PEER_NAMES]
        + ["speed_vs_best"]
    }

    behind = sorted(
        (s for s in standing if s["speed_vs_best"] is not None), key=lambda s: s["speed_vs_best"]
    )[:3]
    return {
        "rows": rows,
        "standing": standing,
        "standing_geomean": standing_mean,
        "geomean": means,
        "stats_cost": stats_cost,
        "furthest_behind": behind,
    }


# ---- Reporting ----


def standing_table(a: dict[str, Any]) -> list[str]:
    """libarena's throughput and peak-RSS ratio against each allocator, one row per config."""
    peers = ["glibc"] + PEER_NAMES
    lines = [
        "| workload | " + " | ".join(f"vs {p}" for p in peers) + " | slowest vs (peer) "
        "| RSS vs glibc | RSS vs mimalloc |",
        "|---|" + "---:|" * len(peers) + "---:|---:|---:|",
    ]
    for s in a["standing"]:
        cells = [fmt_ratio(s[f"speed_vs_{p}"]) for p in peers]
        best = f"{fmt_ratio(s['speed_vs_best'])} ({s['best_peer']})" if s["best_peer"] else "n/a"
        lines.append(
            f"| {s['config']} | " + " | ".join(cells) + f" | {best} "
            f"| {fmt_ratio(s['rss_vs_glibc'])} | {fmt_ratio(s['rss_vs_mimalloc'])} |"
        )
    m = a["standing_geomean"]
    if a["standing"]:
        cells = [fmt_ratio(m[f"speed_vs_{p}"]) for p in peers]
        lines.append(
            "| **geometric mean** | " + " | ".join(cells) + f" | {fmt_ratio(m['speed_vs_best'])} "
            f"| {fmt_ratio(m['rss_vs_glibc'])} | {fmt_ratio(m['rss_vs_mimalloc'])} |"
        )
    return lines


def stats_cost_lines(a: dict[str, Any]) -> list[str]:
    if not a["stats_cost"]:
        return []
    lines = [
        "| workload | time, stats on / off (median) | pairs | range |",
        "|---|---:|---:|---|",
    ]
    for s in a["stats_cost"]:
        lines.append(
            f"| {s['config']} | {s['on_over_off']:.3f} ({(s['on_over_off'] - 1) * 100:+.1f}%) "
            f"| {s['pairs']} | {s['min']:.3f} .. {s['max']:.3f} |"
        )
    return lines


def full_tables(allocs: list[Allocator], a: dict[str, Any]) -> list[str]:
    lines = [
        "| workload | allocator | median s | Mops/s | vs glibc | vs mimalloc | spread "
        "| peak RSS MiB | RSS vs glibc |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in a["rows"]:
        lines.append(
            f"| {r['config']} | {r['allocator']} | {r['median_seconds']:.3f} "
            f"| {r['median_ops_per_sec'] / 1e6:.2f} | {fmt_ratio(r['speed_vs_glibc'])} "
            f"| {fmt_ratio(r['speed_vs_mimalloc'])} | {r['spread'] * 100:.0f}% "
            f"| {r['max_peak_rss_kib'] / 1024:.1f} | {fmt_ratio(r['rss_vs_glibc'])} |"
        )
    for alloc in allocs:
        if alloc.skipped:
            lines.append(f"| (all) | {alloc.name} | SKIPPED: {alloc.skipped} | | | | | | |")
    lines += [
        "",
        "Geometric means over the configs each allocator ran:",
        "",
        "| allocator | configs | speed vs glibc | speed vs mimalloc | peak RSS vs glibc "
        "| peak RSS vs mimalloc |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in a["geomean"].items():
        lines.append(
            f"| {name} | {m['configs']} | {fmt_ratio(m['speed_vs_glibc'])} "
            f"| {fmt_ratio(m['speed_vs_mimalloc'])} | {fmt_ratio(m['rss_vs_glibc'])} "
            f"| {fmt_ratio(m['rss_vs_mimalloc'])} |"
        )
    return lines


def write_reports(
    out_dir: str,
    args: argparse.Namespace,
    command: str,
    machine: dict[str, Any],
    allocs: list[Allocator],
    configs: list[Config],
    notes: list[str],
    samples: list[dict[str, Any]],
    stats_pairs: dict[str, list[float]],
    elapsed: float,
) -> str:
    a = analyse(allocs, configs, stats_pairs)
    header = [
        "# Allocator suite",
        "",
        "Generated by `bench/run_bench.py` (part of `bench/run_all.sh`); do not edit by hand.",
        "",
    ]
    if args.smoke:
        header += ["**SMOKE RUN: sizes are 100x smaller; the numbers mean nothing.**", ""]
    header += busy_warning(machine)
    if args.no_banner_check:
        header += [
            f"**'libarena' in this report is a stand-in (`{args.arena}`, run with "
            "--no-banner-check): these are not libarena's numbers.**",
            "",
        ]
    header += [
        f"- date: {machine['date']}",
        f"- command: `{command}`",
        f"- machine: {machine_line(machine)}",
        load_line(machine),
        f"- rounds: {args.rounds}, interleaved, allocator order shuffled per round "
        f"(seed {SHUFFLE_SEED}); bench seed {args.seed}; wall time {elapsed:.0f} s",
        f"- allocator environment passed through: {allocator_env_vars() or 'none'}",
        "",
        "Allocators:",
        "",
    ]
    for al in allocs:
        header.append(
            f"- {al.name}: SKIPPED ({al.skipped})" if al.skipped else f"- {al.name}: {al.describe()}"
        )
    header += ["", "Preload checks:", ""] + [f"- {n}" for n in notes]
    body = [
        "",
        "## Where libarena stands",
        "",
        "libarena's throughput divided by each allocator's (>1: libarena is faster), the median",
        "of per-round ratios; 'slowest vs' is the ratio to the fastest allocator of that",
        "workload. Peak RSS ratios: <1 means libarena used less memory.",
        "",
        *standing_table(a),
        "",
    ]
    if a["furthest_behind"]:
        body += [
            "Furthest behind (lowest ratio to the fastest allocator): "
            + ", ".join(
                f"{s['config']} ({fmt_ratio(s['speed_vs_best'])} of {s['best_peer']})"
                for s in a["furthest_behind"]
            )
            + ". See profiles.md.",
            "",
        ]
    cost = stats_cost_lines(a)
    if cost:
        body += [
            "## What the stats page costs",
            "",
            "libarena's time with the stats page on (the default) over its time with",
            "ARENA_STATS=0: the median over back-to-back pairs of runs (order alternating);",
            "the target is under 2% (1.020). With the page off the counters still run, into",
            "private memory, so the two differ only in where the counters live.",
            "",
            *cost,
            "",
        ]
    body += [
        "## All allocators",
        "",
        "Median over rounds of the measured loop's wall time and of million operations per",
        "second (all threads; an operation is one malloc+free pair, one realloc, ... — see",
        "bench/README.md). Throughput ratios are medians of per-round ratios; >1 means faster.",
        "spread = (max - min) / median of Mops/s over rounds. Peak RSS is the maximum over",
        "rounds of the whole process's peak (it includes the benchmark's own ~3 MiB): VmHWM, or",
        "the exact RSS (smaps_rollup) at the end of the measured loop when that is higher",
        "(VmHWM can be short by up to 31 pages per CPU; bench/proc.h).",
        "",
        *full_tables(allocs, a),
    ]
    md = "\n".join(header + body) + "\n"

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "suite.md"), "w", encoding="utf-8") as f:
        f.write(md)
    write_json(
        os.path.join(out_dir, "suite.json"),
        {
            "command": command,
            "machine": machine,
            "rounds": args.rounds,
            "smoke": args.smoke,
            "stand_in": args.no_banner_check,
            "bench_seed": args.seed,
            "shuffle_seed": SHUFFLE_SEED,
            "elapsed_seconds": elapsed,
            "allocator_env": allocator_env_vars(),
            "allocators": [
                {"name": al.name, "lib": al.lib, "env": al.env, "skipped": al.skipped}
                for al in allocs
            ],
            "configs": [
                {"config": c.key, "workload": c.workload, "threads": c.threads, "stats": c.stats}
                for c in configs
            ],
            "preload_checks": notes,
            **a,
            "samples": samples,
        },
    )
    return md


# ---- main ----


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", required=True, help="path to the bench_alloc executable")
    p.add_argument("--arena", required=True, help="path to libarena.so (required)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--smoke", action="store_true", help="100x smaller runs, for the test suite")
    p.add_argument(
        "--only",
        action="append",
        choices=WORKLOADS,
        help="run only this workload (repeatable)",
    )
    p.add_argument(
        "--out",
        help="directory for suite.md and suite.json (default bench/results next to this "
        "script; with --smoke a temporary directory that is removed afterwards)",
    )
    p.add_argument("--seed", type=int, default=42, help="bench_alloc --seed (default 42)")
    p.add_argument(
        "--stats-pairs",
        type=int,
        default=None,
        help="back-to-back on/off pairs per stats config for the stats-page cost "
        "(default 10; 1 with --smoke)",
    )
    p.add_argument(
        "--no-banner-check",
        action="store_true",
        help="skip the ARENA_VERBOSE banner check; only for stand-ins passed as --arena "
        "(e.g. another allocator while libarena does not build)",
    )
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.stats_pairs is None:
        args.stats_pairs = 1 if args.smoke else 10
    if args.stats_pairs < 0:
        p.error("--stats-pairs must not be negative")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = shlex.join([sys.executable] + sys.argv)
    if not check_paths(args):
        return 2
    if os.environ.get("LD_PRELOAD"):
        log("note: ignoring LD_PRELOAD from the environment; each allocator sets its own")

    configs = [c for c in CONFIGS if not args.only or c.workload in args.only]
    allocs = standard_allocators(args.arena, nostats=any(c.stats for c in configs))
    machine = machine_info()
    if machine["busy"]:
        log(
            f"WARNING: load average {load_before(machine):.2f} on {machine['cores']} "
            "cores: the machine is busy, results will be noisy"
        )
    start = time.monotonic()
    try:
        notes = check_preloads(
            [a for a in allocs if not a.skipped],
            args.bench,
            ["small", "--threads", "1", "--smoke"],
            RESULT_KEYS,
            args.no_banner_check,
        )
        for n in notes:
            log(f"check: {n}")
        samples = run_rounds(args, allocs, configs)
        stats_pairs = run_stats_pairs(args, allocs, configs)
    except BenchError as e:
        log(f"FAILED: {e}")
        return 1
    elapsed = time.monotonic() - start
    machine["loadavg_end"] = os.getloadavg()
    machine["date_end"] = now_utc()

    with results_dir(args.out, args.smoke, "bench-suite-smoke-") as (out_dir, tmp):
        md = write_reports(
            out_dir, args, command, machine, allocs, configs, notes, samples, stats_pairs,
            elapsed,
        )
    print(md, end="")
    where = "a temporary directory (removed)" if tmp else out_dir
    log(f"wrote suite.md and suite.json to {where} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
