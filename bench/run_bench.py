#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Run bench_alloc under glibc, jemalloc, mimalloc, tcmalloc and libarena, side by side.

Every workload config is run once per allocator per round, interleaved (A B C D E, then the
next config, ...), with the allocator order shuffled per round from a fixed seed, so drift on
a shared, noisy machine lands on all allocators alike. Per (config, allocator) we report the
median throughput and the maximum peak RSS over the rounds, ratios against glibc and
mimalloc, and a geometric mean per allocator across configs.

Before timing anything, each preload is proven to have taken: peers by finding their library
in the child's /proc/self/maps, libarena also by its ARENA_VERBOSE=1 banner; the glibc
baseline by finding none of the libraries mapped. Every child must exit 0 and print one JSON
line, and all allocators must produce the same checksum for a config (they were asked for the
same sequence of sizes, so a different checksum means some allocator returned bad memory).

Only the Python standard library is used (Debian's python3 3.11).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

LIBDIR = "/usr/lib/x86_64-linux-gnu"

# Peers as Debian ships them (libjemalloc2, libmimalloc2.0, libtcmalloc-minimal4).
# glibc is the baseline: no LD_PRELOAD at all.
PEERS = [
    ("glibc", None),
    ("jemalloc", f"{LIBDIR}/libjemalloc.so.2"),
    ("mimalloc", f"{LIBDIR}/libmimalloc.so.2"),
    ("tcmalloc", f"{LIBDIR}/libtcmalloc_minimal.so.4"),
]

# (workload, threads): what the issue asks for — small-object throughput with 1 and 2
# threads, without (small, small-batch) and with (xthread) cross-thread frees.
CONFIGS = [
    ("small", 1),
    ("small", 2),
    ("small-batch", 1),
    ("small-batch", 2),
    ("xthread", 2),
]

BANNER = "arena: active"
BUSY_LOAD = 1.0  # 1-minute load average at start above which the report carries a warning
SHUFFLE_SEED = 20240601  # fixed, so a rerun uses the same allocator orders
RESULT_KEYS = ("workload", "threads", "ops", "seconds", "ops_per_sec", "peak_rss_kib", "checksum")


class BenchError(Exception):
    """A child failed, printed garbage, or a preload did not take. Ends the run."""


@dataclass
class Allocator:
    name: str
    lib: str | None  # None = glibc, no preload
    skipped: str | None = None  # why it is not run (library missing), shown in every report
    samples: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def mapped_name(self) -> str | None:
        """What /proc/self/maps shows for the library: the file name after symlinks."""
        return os.path.basename(os.path.realpath(self.lib)) if self.lib else None


# ---- Running children ----


def base_env() -> dict[str, str]:
    """The driver's environment, minus what would skew the comparison."""
    env = dict(os.environ)
    # meson test sets MALLOC_PERTURB_; glibc then fills every malloc/free with a byte
    # pattern (slower), while preloaded allocators ignore it.
    env.pop("MALLOC_PERTURB_", None)
    # An inherited preload would silently turn the glibc baseline into something else.
    env.pop("LD_PRELOAD", None)
    env.pop("ARENA_VERBOSE", None)  # only the un-timed banner check sets it
    return env


def child_env(alloc: Allocator, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = base_env()
    if alloc.lib:
        env["LD_PRELOAD"] = alloc.lib
    env.update(extra or {})
    return env


def run_child(
    cmd: list[str], env: dict[str, str], timeout: float, what: str
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{what}: timed out after {timeout:.0f} s: {shlex.join(cmd)}") from e
    except OSError as e:
        raise BenchError(f"{what}: cannot run {shlex.join(cmd)}: {e}") from e


def tail(text: str, lines: int = 15) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines()[-lines:])


def parse_result(proc: subprocess.CompletedProcess[str], what: str) -> dict[str, Any]:
    """The child's JSON line, after checking the exit status and the fields we use."""
    if proc.returncode != 0:
        raise BenchError(
            f"{what}: exit status {proc.returncode}\n  stderr:\n{tail(proc.stderr)}"
        )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
        missing = [k for k in RESULT_KEYS if k not in result]
    except (IndexError, json.JSONDecodeError, TypeError) as e:
        raise BenchError(
            f"{what}: no JSON result line ({e})\n  stdout:\n{tail(proc.stdout)}"
        ) from e
    if not isinstance(result, dict) or missing:
        raise BenchError(f"{what}: result lacks {missing}: {lines[-1]}")
    if result["seconds"] <= 0:
        raise BenchError(f"{what}: non-positive time: {lines[-1]}")
    return result


def bench_cmd(args: argparse.Namespace, workload: str, threads: int) -> list[str]:
    cmd = [args.bench, workload, "--threads", str(threads), "--seed", str(args.seed)]
    return cmd + (["--smoke"] if args.smoke else [])


# ---- Proving the preloads took ----


def check_preloads(args: argparse.Namespace, allocs: list[Allocator]) -> list[str]:
    """Un-timed checks, once per allocator per driver run. Returns lines for the report."""
    notes = []
    preloaded = [a for a in allocs if a.lib]
    for alloc in allocs:
        if alloc.lib is None:
            # Baseline: none of the other allocators may be mapped.
            for other in preloaded:
                cmd = [args.bench, "--print-maps-match", other.mapped_name]
                proc = run_child(cmd, child_env(alloc), 30, f"{alloc.name} maps check")
                if proc.returncode != 3:
                    raise BenchError(
                        f"{alloc.name}: expected no {other.mapped_name} in /proc/self/maps "
                        f"(exit 3), got exit {proc.returncode}: {proc.stdout.strip()}"
                        f"{proc.stderr.strip()}"
                    )
            notes.append(f"{alloc.name}: no preload; none of the other libraries mapped")
            continue
        cmd = [args.bench, "--print-maps-match", alloc.mapped_name]
        proc = run_child(cmd, child_env(alloc), 30, f"{alloc.name} maps check")
        if proc.returncode != 0:
            raise BenchError(
                f"{alloc.name}: LD_PRELOAD={alloc.lib} did not take: {alloc.mapped_name} "
                f"not in the child's /proc/self/maps (exit {proc.returncode})\n"
                f"{tail(proc.stderr)}"
            )
        notes.append(f"{alloc.name}: {proc.stdout.strip()} mapped in the child")

        if alloc.name == "libarena":
            if args.no_banner_check:
                notes.append("libarena: banner check skipped (--no-banner-check: a stand-in)")
                continue
            workload, threads = CONFIGS[0]
            cmd = [args.bench, workload, "--threads", str(threads), "--smoke"]
            what = "libarena banner check (ARENA_VERBOSE=1)"
            proc = run_child(cmd, child_env(alloc, {"ARENA_VERBOSE": "1"}), 60, what)
            parse_result(proc, what)
            if not any(line.startswith(BANNER) for line in proc.stderr.splitlines()):
                raise BenchError(
                    f"{what}: no stderr line starting with '{BANNER}', so the preload did "
                    f"not take (or the banner changed)\n  stderr:\n{tail(proc.stderr)}"
                )
            banner = next(ln for ln in proc.stderr.splitlines() if ln.startswith(BANNER))
            notes.append(f"libarena: banner seen: {banner.strip()}")
    return notes


# ---- Measuring ----


def run_rounds(
    args: argparse.Namespace, allocs: list[Allocator], configs: list[tuple[str, int]]
) -> list[dict[str, Any]]:
    """All timed runs, interleaved. Returns the raw samples in run order."""
    active = [a for a in allocs if not a.skipped]
    rng = random.Random(SHUFFLE_SEED)
    checksums: dict[tuple[str, int], tuple[str, str]] = {}
    samples = []
    timeout = 60 if args.smoke else 300
    for rnd in range(args.rounds):
        order = active[:]
        rng.shuffle(order)
        log(f"round {rnd + 1}/{args.rounds}: order {' '.join(a.name for a in order)}")
        for cfg in configs:
            workload, threads = cfg
            line = []
            for pos, alloc in enumerate(order):
                what = f"{alloc.name} {workload} x{threads} (round {rnd + 1})"
                proc = run_child(
                    bench_cmd(args, workload, threads), child_env(alloc), timeout, what
                )
                result = parse_result(proc, what)
                if (result["workload"], result["threads"]) != cfg:
                    raise BenchError(f"{what}: ran the wrong config: {result}")
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
            log(f"  {workload} x{threads}: " + ", ".join(line))
    return samples


@dataclass
class Cell:
    """One (config, allocator) summary."""

    seconds: float  # median
    ops_per_sec: float  # median
    spread: float  # (max - min) / median of ops/s, a noise indicator
    peak_rss_kib: int  # max over rounds
    n: int


def summarize(alloc: Allocator, cfg: tuple[str, int]) -> Cell | None:
    samples = alloc.samples.get(cfg)
    if not samples:
        return None
    rates = [s["ops_per_sec"] for s in samples]
    med = statistics.median(rates)
    return Cell(
        seconds=statistics.median(s["seconds"] for s in samples),
        ops_per_sec=med,
        spread=(max(rates) - min(rates)) / med,
        peak_rss_kib=max(s["peak_rss_kib"] for s in samples),
        n=len(samples),
    )


def paired_ratio(alloc: Allocator, ref: Allocator, cfg: tuple[str, int]) -> float | None:
    """Median over rounds of alloc's ops/s divided by ref's ops/s in the same round.

    The two runs of a round are seconds apart, so a slow drift of the machine (another
    tenant's build, frequency changes) cancels out of each ratio; a ratio of medians taken
    over the whole run would keep it.
    """
    if ref.skipped:
        return None
    mine = {s["round"]: s["ops_per_sec"] for s in alloc.samples.get(cfg, [])}
    theirs = {s["round"]: s["ops_per_sec"] for s in ref.samples.get(cfg, [])}
    ratios = [mine[r] / theirs[r] for r in mine if r in theirs]
    return statistics.median(ratios) if ratios else None


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


# ---- Reporting ----


def fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def build_tables(
    allocs: list[Allocator], configs: list[tuple[str, int]]
) -> tuple[list[str], list[dict[str, Any]], dict[str, dict[str, float | None]]]:
    """Markdown lines, summary rows for the JSON, and the geometric means per allocator."""
    by_name = {a.name: a for a in allocs}
    active = [a for a in allocs if not a.skipped]
    rows = []
    lines = [
        "| workload | threads | allocator | Mops/s | vs glibc | vs mimalloc | spread "
        "| peak RSS MiB | RSS vs glibc |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    ratios: dict[str, dict[str, list[float]]] = {
        a.name: {"glibc": [], "mimalloc": [], "rss": []} for a in active
    }
    for cfg in configs:
        base = summarize(by_name["glibc"], cfg)
        for alloc in active:
            cell = summarize(alloc, cfg)
            if cell is None:
                continue
            vs_glibc = paired_ratio(alloc, by_name["glibc"], cfg)
            vs_mi = paired_ratio(alloc, by_name["mimalloc"], cfg)
            rss_vs = cell.peak_rss_kib / base.peak_rss_kib if base else None
            for key, val in (("glibc", vs_glibc), ("mimalloc", vs_mi), ("rss", rss_vs)):
                if val is not None:
                    ratios[alloc.name][key].append(val)
            lines.append(
                f"| {cfg[0]} | {cfg[1]} | {alloc.name} | {cell.ops_per_sec / 1e6:.1f} "
                f"| {fmt_ratio(vs_glibc)} | {fmt_ratio(vs_mi)} | {cell.spread * 100:.0f}% "
                f"| {cell.peak_rss_kib / 1024:.1f} | {fmt_ratio(rss_vs)} |"
            )
            rows.append(
                {
                    "workload": cfg[0],
                    "threads": cfg[1],
                    "allocator": alloc.name,
                    "median_seconds": cell.seconds,
                    "median_ops_per_sec": cell.ops_per_sec,
                    "spread": cell.spread,
                    "max_peak_rss_kib": cell.peak_rss_kib,
                    "ops_ratio_vs_glibc": vs_glibc,
                    "ops_ratio_vs_mimalloc": vs_mi,
                    "rss_ratio_vs_glibc": rss_vs,
                    "rounds": cell.n,
                }
            )
    for alloc in allocs:
        if alloc.skipped:
            lines.append(f"| (all) | | {alloc.name} | SKIPPED: {alloc.skipped} | | | | | |")

    means = {
        name: {key: geomean(vals) for key, vals in r.items()} for name, r in ratios.items()
    }
    lines += [
        "",
        f"Geometric mean over the {len(configs)} config(s):",
        "",
        "| allocator | ops/s vs glibc | ops/s vs mimalloc | peak RSS vs glibc |",
        "|---|---:|---:|---:|",
    ]
    for name, m in means.items():
        lines.append(
            f"| {name} | {fmt_ratio(m['glibc'])} | {fmt_ratio(m['mimalloc'])} "
            f"| {fmt_ratio(m['rss'])} |"
        )
    return lines, rows, means


def target_lines(means: dict[str, dict[str, float | None]]) -> list[str]:
    """The issue's targets for libarena, read off the geometric means. Informational."""
    m = means.get("libarena")
    if not m:
        return []

    def verdict(val: float | None, ok: bool) -> str:
        return "n/a" if val is None else ("met" if ok else "NOT met")

    g, mi, rss = m["glibc"], m["mimalloc"], m["rss"]
    return [
        "Targets for libarena (geometric means above):",
        "",
        f"- throughput >= 1.5x glibc: {fmt_ratio(g)}, "
        f"{verdict(g, g is not None and g >= 1.5)}",
        f"- throughput >= 0.8x mimalloc: {fmt_ratio(mi)}, "
        f"{verdict(mi, mi is not None and mi >= 0.8)}",
        f"- peak RSS <= glibc: {fmt_ratio(rss)}, {verdict(rss, rss is not None and rss <= 1.0)}",
    ]


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "kernel": platform.uname().release,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "libc": " ".join(platform.libc_ver()),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def allocator_env_vars() -> dict[str, str]:
    """Variables that tune allocators, passed through to every child: worth recording."""
    prefixes = ("MALLOC", "MIMALLOC_", "TCMALLOC_", "JEMALLOC", "ARENA_", "GLIBC_TUNABLES")
    env = base_env()
    return {k: v for k, v in env.items() if k.startswith(prefixes)}


def write_reports(
    out_dir: str,
    args: argparse.Namespace,
    command: str,
    machine: dict[str, Any],
    allocs: list[Allocator],
    configs: list[tuple[str, int]],
    notes: list[str],
    samples: list[dict[str, Any]],
    elapsed: float,
) -> str:
    table, rows, means = build_tables(allocs, configs)
    header = [
        "# Allocator benchmark: small objects",
        "",
        "Generated by `bench/run_bench.py`; do not edit by hand.",
        "",
    ]
    if args.smoke:
        header += ["**SMOKE RUN: sizes are 100x smaller; the numbers mean nothing.**", ""]
    if machine["busy"]:
        header += [
            f"**The machine was busy: load average {machine['loadavg_start'][0]:.2f} at the "
            f"start, on {machine['cores']} cores. Other work competed for the cores, "
            "2-thread configs most; treat these numbers as indicative.**",
            "",
        ]
    if args.no_banner_check:
        header += [
            f"**'libarena' in this report is a stand-in (`{args.arena}`, run with "
            "--no-banner-check): these are not libarena's numbers.**",
            "",
        ]
    header += [
        f"- date: {machine['date']}",
        f"- command: `{command}`",
        f"- machine: Linux {machine['kernel']}, {machine['cpu']}, {machine['cores']} cores "
        f"({machine['cores_usable']} usable), {machine['libc']}",
        f"- load average at start / end: {fmt_load(machine['loadavg_start'])} / "
        f"{fmt_load(machine['loadavg_end'])}",
        f"- rounds: {args.rounds}, interleaved, allocator order shuffled per round "
        f"(seed {SHUFFLE_SEED}); bench seed {args.seed}; wall time {elapsed:.1f} s",
        f"- allocator environment passed through: {allocator_env_vars() or 'none'}",
        "",
        "Allocators:",
        "",
    ]
    for a in allocs:
        if a.skipped:
            header.append(f"- {a.name}: SKIPPED ({a.skipped})")
        elif a.lib:
            header.append(f"- {a.name}: LD_PRELOAD={a.lib} ({os.path.realpath(a.lib)})")
        else:
            header.append(f"- {a.name}: no LD_PRELOAD (the system allocator)")
    header += ["", "Preload checks:", ""] + [f"- {n}" for n in notes]
    header += [
        "",
        "Mops/s is the median over rounds of million malloc+free operations per second, all",
        "threads together. Throughput ratios are medians of per-round ratios (each run against",
        "the glibc or mimalloc run of the same round, seconds apart, which cancels the",
        "machine's drift); >1 means faster. spread = (max - min) / median of Mops/s over rounds.",
        "Peak RSS is the maximum VmHWM of the whole process over rounds (includes the",
        "benchmark's own ~3 MiB baseline); a ratio <1 means less memory than glibc.",
        "Workloads: see bench/README.md.",
        "",
    ]
    targets = target_lines(means)
    md = "\n".join(header + table + ([""] + targets if targets else [])) + "\n"

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "alloc.md"), "w", encoding="utf-8") as f:
        f.write(md)
    raw = {
        "command": command,
        "machine": machine,
        "rounds": args.rounds,
        "smoke": args.smoke,
        "bench_seed": args.seed,
        "shuffle_seed": SHUFFLE_SEED,
        "allocator_env": allocator_env_vars(),
        "allocators": [
            {
                "name": a.name,
                "lib": a.lib,
                "realpath": os.path.realpath(a.lib) if a.lib else None,
                "skipped": a.skipped,
            }
            for a in allocs
        ],
        "configs": [{"workload": w, "threads": t} for w, t in configs],
        "preload_checks": notes,
        "summary": rows,
        "geomean": means,
        "samples": samples,
    }
    with open(os.path.join(out_dir, "alloc.json"), "w", encoding="utf-8") as f:
        json.dump(raw, f, indent=1)
        f.write("\n")
    return md


def fmt_load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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
        choices=sorted({w for w, _ in CONFIGS}),
        help="run only this workload (repeatable)",
    )
    p.add_argument(
        "--out",
        help="directory for alloc.md and alloc.json (default bench/results next to this "
        "script; with --smoke a temporary directory that is removed afterwards)",
    )
    p.add_argument("--seed", type=int, default=42, help="bench_alloc --seed (default 42)")
    p.add_argument(
        "--no-banner-check",
        action="store_true",
        help="skip the ARENA_VERBOSE banner check; only for stand-ins passed as --arena "
        "(e.g. another allocator while libarena does not build)",
    )
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = shlex.join([sys.executable] + sys.argv)
    args.bench = os.path.abspath(args.bench)
    args.arena = os.path.abspath(args.arena)
    if not (os.path.isfile(args.bench) and os.access(args.bench, os.X_OK)):
        log(f"error: --bench {args.bench}: not an executable file")
        return 2
    if not os.path.isfile(args.arena):
        log(f"error: --arena {args.arena}: libarena.so not found (it is required)")
        return 2

    if os.environ.get("LD_PRELOAD"):
        log("note: ignoring LD_PRELOAD from the environment; each allocator sets its own")
    allocs = [Allocator(name, lib) for name, lib in PEERS] + [Allocator("libarena", args.arena)]
    for a in allocs:
        if a.lib and not os.path.isfile(a.lib):
            a.skipped = f"{a.lib} not found"
            log(f"WARNING: SKIPPING {a.name}: {a.skipped} (install it to compare against it)")
    configs = [c for c in CONFIGS if not args.only or c[0] in args.only]

    machine = machine_info()
    # Before our first child the 1-minute load is other people's work (unless we ran just
    # before); at 1.0 a whole core is taken, which the 2-thread configs feel directly.
    machine["busy"] = machine["loadavg_start"][0] >= BUSY_LOAD
    if machine["busy"]:
        log(
            f"WARNING: load average {machine['loadavg_start'][0]:.2f} on {machine['cores']} "
            "cores: the machine is busy, results will be noisy"
        )
    machine["date"] = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )
    start = time.monotonic()
    try:
        notes = check_preloads(args, [a for a in allocs if not a.skipped])
        for n in notes:
            log(f"check: {n}")
        samples = run_rounds(args, allocs, configs)
    except BenchError as e:
        log(f"FAILED: {e}")
        return 1
    elapsed = time.monotonic() - start
    machine["loadavg_end"] = os.getloadavg()

    tmp = None
    out_dir = args.out
    if out_dir is None and args.smoke:
        out_dir = tmp = tempfile.mkdtemp(prefix="bench-alloc-smoke-")
    elif out_dir is None:
        out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    try:
        md = write_reports(
            out_dir, args, command, machine, allocs, configs, notes, samples, elapsed
        )
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(md, end="")
    where = "a temporary directory (removed)" if tmp else out_dir
    log(f"wrote alloc.md and alloc.json to {where} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
