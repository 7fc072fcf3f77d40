#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""What libarena's heap profiling costs (issue 16): off, at the default rate and in exact mode,
side by side with heaptrack on glibc in the same run.

For each bench_alloc workload (its suite config, run_bench.py CONFIGS), every round runs, in an
order shuffled per round from a fixed seed:

- at the suite size: libarena with profiling off (the default), libarena with ARENA_PROFILE=1
  (the default rate, 512 KiB mean between samples) and, with --baseline-lib, a libarena.so
  built without the countdown (libarena-baseline: off / baseline is what the countdown costs);
- at the traced size (--traced-scale of the suite's operations; tracing every allocation is
  20-50 times slower): glibc, glibc under `heaptrack -o FILE`, libarena off and libarena in
  exact mode (ARENA_PROFILE=1 ARENA_PROFILE_RATE=1: every allocation sampled).

Reported per workload: the median loop time of each row, and paired ratios (medians of
per-round ratios, with their range): default / off, off / baseline, exact / off, heaptrack /
glibc, exact libarena / heaptrack, the latter two also in CPU time (user + system of the whole
process tree: heaptrack_interpret runs beside the program) and wall time; heaptrack's output
size (its own file, compressed as heaptrack writes it); and the size of libarena's profile (the
page file's mappings in /proc/self/smaps at the end of the loop, profiling off and on).

--callgrind adds instruction counts (valgrind --tool=callgrind, the total Ir of the whole
process) on the small workloads: baseline, off and the default rate at --cg-ops, and off and
exact at --cg-exact-ops and twice that, giving off vs baseline in % and the instructions exact
mode adds per operation. Instruction counts repeat from run to run, so they resolve what the
paired timings on this shared machine cannot.

Every child must exit 0 and print its JSON line; all rows of one size must give the same
checksum. libarena's preloads are proven by their ARENA_VERBOSE=1 banner, and profiling by the
profile region's mapping (present when on, absent when off). heaptrack and valgrind are
optional: without them their rows are left out and the report says so.

Writes profile.md and profile.json into --out (default bench/results; --smoke: a temporary
directory).
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
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
    write_json,
)
from run_bench import CONFIGS, RESULT_KEYS, Config  # noqa: E402

# The workloads, each at its first config in the suite (run_bench.py CONFIGS).
WORKLOADS = ["small", "small-batch", "powerlaw", "churn", "realloc", "larson", "xthread"]
# bench_alloc's default operations per thread (bench_alloc.cc, kWorkloads): the suite size.
SUITE_OPS = {
    "small": 30_000_000,
    "small-batch": 30_000_000,
    "xthread": 10_000_000,
    "powerlaw": 30_000_000,
    "realloc": 3_000_000,
    "larson": 30_000_000,
    "churn": 8_000_000,
}
CALLGRIND_WORKLOADS = ["small", "small-batch"]

PROFILE_ON = {"ARENA_PROFILE": "1"}
PROFILE_EXACT = {"ARENA_PROFILE": "1", "ARENA_PROFILE_RATE": "1"}
HEAPTRACK = "heaptrack"
VALGRIND = "valgrind"


@dataclass
class Row:
    """One kind of run: an allocator (or heaptrack on glibc) at the suite or the traced size."""

    key: str
    label: str
    alloc: Allocator
    traced: bool  # at the traced size
    heaptrack: bool = False
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by workload


def make_rows(args: argparse.Namespace) -> list[Row]:
    off = Allocator("libarena", args.arena, is_arena=True)
    default = Allocator("libarena-profile", args.arena, env=dict(PROFILE_ON), is_arena=True)
    exact = Allocator("libarena-exact", args.arena, env=dict(PROFILE_EXACT), is_arena=True)
    glibc = Allocator("glibc", None)
    rows = [
        Row("off", "libarena, profiling off", off, False),
        Row("default", "libarena, ARENA_PROFILE=1 (default rate)", default, False),
    ]
    if args.baseline_lib:
        base = Allocator("libarena-baseline", args.baseline_lib, is_arena=True)
        rows.append(Row("baseline", "libarena-baseline (no countdown)", base, False))
    rows += [
        Row("t-glibc", "glibc", glibc, True),
        Row("t-off", "libarena, profiling off", off, True),
        Row("t-exact", "libarena, exact (ARENA_PROFILE_RATE=1)", exact, True),
    ]
    if args.heaptrack:
        rows.append(Row("t-heaptrack", "glibc under heaptrack", glibc, True, heaptrack=True))
    return rows


def ops_for(args: argparse.Namespace, workload: str, traced: bool) -> int:
    n = SUITE_OPS[workload] * (args.traced_scale if traced else args.ops_scale)
    if args.smoke:
        n /= 100
    return max(int(n), 1)


def bench_cmd(args: argparse.Namespace, cfg: Config, ops: int) -> list[str]:
    return [args.bench, cfg.workload, "--threads", str(cfg.threads), "--ops", str(ops),
            "--seed", str(args.seed)]


def json_result(proc: subprocess.CompletedProcess[str], what: str) -> dict[str, Any]:
    """bench_alloc's JSON line; heaptrack prints its own lines around it, so only lines that
    look like JSON are looked at."""
    only = "\n".join(ln for ln in proc.stdout.splitlines() if ln.startswith("{"))
    proc = subprocess.CompletedProcess(proc.args, proc.returncode, only or proc.stdout,
                                       proc.stderr)
    return parse_json_line(proc, what, RESULT_KEYS)


def timed_run(
    cmd: list[str], env: dict[str, str], timeout: float, what: str
) -> tuple[dict[str, Any], float, float]:
    """(the JSON result, wall seconds of the whole child, its CPU seconds: user + system of
    the child and everything it waited for)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = run_child(cmd, env, timeout, what)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return json_result(proc, what), wall, cpu


# ---- Checks (untimed) ----


def smaps_mappings(path: str, under: str) -> list[dict[str, int]]:
    """The mappings of files under `under` in a saved /proc/self/smaps: Size and Rss in KiB."""
    maps: list[dict[str, int]] = []
    current: dict[str, int] | None = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                current = None
                if len(parts) >= 6 and parts[5].startswith(under):
                    current = {"size_kib": 0, "rss_kib": 0}
                    maps.append(current)
            elif current is not None and parts[0] in ("Size:", "Rss:"):
                current["size_kib" if parts[0] == "Size:" else "rss_kib"] = int(parts[1])
    return maps


def profile_size(args: argparse.Namespace, alloc: Allocator, stats_dir: str, tmp: str,
                 cfg: Config) -> dict[str, Any]:
    """The page file's mappings at the end of a traced-size loop, and whether the profile
    region (a mapping beyond the 32 KiB page) is there."""
    smaps = os.path.join(tmp, f"smaps.{alloc.name}")
    what = f"{alloc.name} {cfg.key} profile size (--smaps)"
    cmd = bench_cmd(args, cfg, ops_for(args, cfg.workload, True)) + ["--smaps", smaps]
    proc = run_child(cmd, child_env(alloc, {"ARENA_STATS_DIR": stats_dir}), 600, what)
    json_result(proc, what)
    maps = smaps_mappings(smaps, stats_dir)
    os.unlink(smaps)
    page = [m for m in maps if m["size_kib"] <= 32]
    region = [m for m in maps if m["size_kib"] > 32]
    return {
        "allocator": alloc.name,
        "config": cfg.key,
        "mappings": maps,
        "page_kib": sum(m["size_kib"] for m in page),
        "region_kib": sum(m["size_kib"] for m in region),
        "region_rss_kib": sum(m["rss_kib"] for m in region),
    }


def run_checks(args: argparse.Namespace, rows: list[Row], configs: list[Config],
               stats_dir: str, tmp: str) -> tuple[list[str], list[dict[str, Any]]]:
    allocs: dict[str, Allocator] = {}
    for r in rows:
        allocs.setdefault(r.alloc.name, r.alloc)
    notes = check_preloads(list(allocs.values()), args.bench,
                           ["small", "--threads", "1", "--smoke"], RESULT_KEYS)
    # The profile region must be mapped with profiling on, and only then.
    sizes = []
    cfg = configs[0]
    for name in ("libarena", "libarena-profile", "libarena-exact"):
        if name not in allocs:
            continue
        s = profile_size(args, allocs[name], stats_dir, tmp, cfg)
        on = name != "libarena"
        if s["page_kib"] == 0 or (s["region_kib"] > 0) != on:
            raise BenchError(f"{name}: expected the stats page and {'a' if on else 'no'} profile "
                             f"region mapped at the end of the loop, got {s['mappings']}")
        sizes.append(s)
        notes.append(f"{name}: page file mapped, profile region {s['region_kib']} KiB"
                     f" ({s['region_rss_kib']} KiB resident) on {cfg.key}")
    if args.heaptrack:
        prefix = os.path.join(tmp, "ht-check")
        cmd = [args.heaptrack, "-o", prefix, args.bench, "--print-maps-match",
               "libheaptrack_preload"]
        proc = run_child(cmd, child_env(allocs["glibc"]), 120, "heaptrack preload check")
        for f in glob.glob(prefix + "*"):
            os.unlink(f)
        if proc.returncode != 0:
            raise BenchError(f"heaptrack: libheaptrack_preload not mapped in the child (exit "
                             f"{proc.returncode}): {proc.stdout.strip()} {proc.stderr.strip()}")
        notes.append("glibc under heaptrack: libheaptrack_preload.so mapped in the child")
    return notes, sizes


# ---- Measuring ----


FAILURES: list[dict[str, Any]] = []  # children that crashed: reported, the run goes on


def failed(what: str, e: BenchError) -> None:
    """A child that exited badly (a crash, a failed check) is recorded and reported instead of
    ending the run: one rare failure would otherwise lose every figure of a 15-minute run."""
    log(f"  FAILED (recorded, going on): {e}")
    FAILURES.append({"what": what, "error": str(e)})


def run_rounds(args: argparse.Namespace, rows: list[Row], configs: list[Config],
               stats_dir: str, tmp: str) -> list[dict[str, Any]]:
    rng = random.Random(SHUFFLE_SEED)
    checksums: dict[tuple[str, bool], tuple[str, str]] = {}
    samples = []
    timeout = 300 if args.smoke else 1200
    for rnd in range(args.rounds):
        order = rows[:]
        rng.shuffle(order)
        log(f"round {rnd + 1}/{args.rounds}: order {' '.join(r.key for r in order)}")
        for cfg in configs:
            line = []
            for pos, row in enumerate(order):
                ops = ops_for(args, cfg.workload, row.traced)
                what = f"{row.key} {cfg.key} (round {rnd + 1})"
                cmd = bench_cmd(args, cfg, ops)
                out = None
                if row.heaptrack:
                    out = os.path.join(tmp, f"ht.{cfg.workload}.{rnd + 1}")
                    cmd = [args.heaptrack, "-o", out] + cmd
                env = child_env(row.alloc, {"ARENA_STATS_DIR": stats_dir})
                try:
                    result, wall, cpu = timed_run(cmd, env, timeout, what)
                except BenchError as e:
                    failed(what, e)
                    for f in glob.glob(out + ".*") if out else []:
                        os.unlink(f)
                    line.append(f"{row.key} FAILED")
                    continue
                if (result["workload"], result["threads"]) != (cfg.workload, cfg.threads):
                    raise BenchError(f"{what}: ran the wrong config: {result}")
                if result["seconds"] <= 0:
                    raise BenchError(f"{what}: non-positive time: {result}")
                first = checksums.setdefault((cfg.key, row.traced), (result["checksum"], row.key))
                if result["checksum"] != first[0]:
                    raise BenchError(f"{what}: checksum {result['checksum']} differs from "
                                     f"{first[1]}'s {first[0]}: some run returned bad memory")
                sample = {"round": rnd + 1, "position": pos, "row": row.key,
                          "allocator": row.alloc.name, "wall_seconds": wall, "cpu_seconds": cpu,
                          **result}
                if out is not None:
                    files = sorted(glob.glob(out + ".*"))
                    if not files:
                        raise BenchError(f"{what}: heaptrack wrote no {out}.*")
                    sample["heaptrack_file"] = os.path.basename(files[0])
                    sample["heaptrack_bytes"] = sum(os.path.getsize(f) for f in files)
                    for f in files:
                        os.unlink(f)
                row.samples.setdefault(cfg.key, []).append(sample)
                samples.append(sample)
                line.append(f"{row.key} {result['seconds']:.3f}s")
            log(f"  {cfg.key}: " + ", ".join(line))
    return samples


def run_pairs(args: argparse.Namespace, rows: list[Row], configs: list[Config],
              stats_dir: str) -> dict[str, dict[str, list[float]]]:
    """The small differences measured on their own: per workload, --pairs back-to-back runs
    of off, the default rate and (if given) the baseline, the order rotating, so the runs
    compared are never separated by the traced rows (heaptrack and exact mode load both cores
    for seconds). Returns per config key the time ratios default / off and off / baseline."""
    by = {r.key: r for r in rows}
    keys = [k for k in ("off", "default", "baseline") if k in by]
    out: dict[str, dict[str, list[float]]] = {}
    timeout = 300 if args.smoke else 1200
    for cfg in configs:
        got = out.setdefault(cfg.key, {"default_over_off": [], "off_over_baseline": []})
        for i in range(args.pairs):
            order = keys[i % len(keys):] + keys[:i % len(keys)]
            times = {}
            for key in order:
                row = by[key]
                what = f"{key} {cfg.key} (pair {i + 1})"
                env = child_env(row.alloc, {"ARENA_STATS_DIR": stats_dir})
                cmd = bench_cmd(args, cfg, ops_for(args, cfg.workload, False))
                try:
                    times[key] = timed_run(cmd, env, timeout, what)[0]["seconds"]
                except BenchError as e:
                    failed(what, e)
            if "off" not in times:
                continue
            if "default" in times:
                got["default_over_off"].append(times["default"] / times["off"])
            if "baseline" in times:
                got["off_over_baseline"].append(times["off"] / times["baseline"])
        log(f"  pairs {cfg.key}: " + ", ".join(
            f"{k} {statistics.median(v):.3f}" for k, v in got.items() if v))
    return out


def callgrind(args: argparse.Namespace, rows: list[Row], configs: list[Config],
              stats_dir: str, tmp: str) -> list[dict[str, Any]]:
    """Total Ir of whole processes under callgrind: deterministic, so one run each."""
    by = {r.key: r.alloc for r in rows}
    plan = []
    for cfg in configs:
        if cfg.workload not in CALLGRIND_WORKLOADS:
            continue
        for key in ("baseline", "off", "default"):
            if key in by:
                plan.append((cfg, key, args.cg_ops))
        for ops in (args.cg_exact_ops, 2 * args.cg_exact_ops):
            for key in ("off", "t-exact"):
                plan.append((cfg, key, ops))
    results = []
    for cfg, key, ops in plan:
        alloc = by[key]
        out = os.path.join(tmp, f"callgrind.out.{alloc.name}.{cfg.workload}.{ops}")
        cmd = [args.valgrind, "--tool=callgrind", f"--callgrind-out-file={out}"]
        cmd += bench_cmd(args, cfg, ops)
        what = f"callgrind {alloc.name} {cfg.key} --ops {ops}"
        proc = run_child(cmd, child_env(alloc, {"ARENA_STATS_DIR": stats_dir}), 1800, what)
        result = json_result(proc, what)
        ir = None
        with open(out, encoding="utf-8") as f:
            for line in f:
                if line.startswith(("totals:", "summary:")):
                    ir = int(line.split()[1])
        os.unlink(out)
        if ir is None:
            raise BenchError(f"{what}: no totals/summary line in the callgrind output")
        results.append({"config": cfg.key, "allocator": alloc.name, "ops": result["ops"],
                        "ir": ir, "checksum": result["checksum"]})
        log(f"  {what}: {ir:,} Ir ({ir / result['ops']:.1f} per op)")
    return results


# ---- Summaries ----


def per_round(row: Row | None, cfg: Config, key: str) -> dict[int, float]:
    if row is None:
        return {}
    return {s["round"]: s[key] for s in row.samples.get(cfg.key, [])}


def ratio(rows: dict[str, Row], a: str, b: str, cfg: Config,
          key: str = "seconds") -> tuple[float, float, float] | None:
    """Paired per-round ratio of a's over b's `key` (time: >1 means a is slower)."""
    return paired_ratio(per_round(rows.get(a), cfg, key), per_round(rows.get(b), cfg, key))


PAIRED = ("default_over_off", "off_over_baseline")  # also measured in back-to-back runs
RATIOS = {
    # name: (numerator row, denominator row, measure)
    "default_over_off": ("default", "off", "seconds"),
    "off_over_baseline": ("off", "baseline", "seconds"),
    "exact_over_off": ("t-exact", "t-off", "seconds"),
    "heaptrack_over_glibc": ("t-heaptrack", "t-glibc", "seconds"),
    "heaptrack_over_glibc_cpu": ("t-heaptrack", "t-glibc", "cpu_seconds"),
    "heaptrack_over_glibc_wall": ("t-heaptrack", "t-glibc", "wall_seconds"),
    "exact_over_heaptrack": ("t-exact", "t-heaptrack", "seconds"),
    "exact_over_heaptrack_cpu": ("t-exact", "t-heaptrack", "cpu_seconds"),
    "exact_over_heaptrack_wall": ("t-exact", "t-heaptrack", "wall_seconds"),
}


def analyse(args: argparse.Namespace, rows: list[Row], configs: list[Config],
            cg: list[dict[str, Any]], pairs: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    by = {r.key: r for r in rows}
    table = []
    for cfg in configs:
        entry: dict[str, Any] = {"config": cfg.key,
                                 "ops_per_thread": ops_for(args, cfg.workload, False),
                                 "traced_ops_per_thread": ops_for(args, cfg.workload, True)}
        for r in rows:
            got = r.samples.get(cfg.key, [])
            if got:
                entry[f"{r.key}_seconds"] = statistics.median(s["seconds"] for s in got)
                entry[f"{r.key}_cpu_seconds"] = statistics.median(s["cpu_seconds"] for s in got)
        for name, (a, b, measure) in RATIOS.items():
            got = ratio(by, a, b, cfg, measure)
            entry[name] = got[0] if got else None
            entry[f"{name}_range"] = [got[1], got[2]] if got else None
        for name, got in pairs.get(cfg.key, {}).items():
            entry[f"{name}_pairs"] = statistics.median(got) if got else None
            entry[f"{name}_pairs_range"] = [min(got), max(got)] if got else None
            entry[f"{name}_pairs_n"] = len(got)
        ht = by.get("t-heaptrack")
        if ht and ht.samples.get(cfg.key):
            entry["heaptrack_bytes"] = statistics.median(
                s["heaptrack_bytes"] for s in ht.samples[cfg.key])
            entry["heaptrack_file"] = ht.samples[cfg.key][0]["heaptrack_file"]
        table.append(entry)
    means = {name: geomean([e[name] for e in table if e.get(name)])
             for name in list(RATIOS) + [f"{n}_pairs" for n in PAIRED]}

    cg_rows = []
    for cfg in configs:
        mine = {(c["allocator"], c["ops"]): c["ir"] for c in cg if c["config"] == cfg.key}
        if not mine:
            continue
        full = cfg.threads * args.cg_ops
        small = cfg.threads * args.cg_exact_ops
        base, off, on = (mine.get((n, full)) for n in
                         ("libarena-baseline", "libarena", "libarena-profile"))
        off_s, exact_s = mine.get(("libarena", small)), mine.get(("libarena-exact", small))
        off_2, exact_2 = (mine.get((n, 2 * small)) for n in ("libarena", "libarena-exact"))
        # The marginal cost: what the second `small` operations added, so the working set's
        # set-up (sampled too in exact mode) drops out.
        extra = None
        if off_s and exact_s and off_2 and exact_2:
            extra = ((exact_2 - exact_s) - (off_2 - off_s)) / small
        cg_rows.append({
            "config": cfg.key, "ops": full, "exact_ops": small,
            "baseline_ir": base, "off_ir": off, "default_ir": on,
            "off_vs_baseline_pct": (off / base - 1) * 100 if base and off else None,
            "off_minus_baseline_per_op": (off - base) / full if base and off else None,
            "default_vs_off_pct": (on / off - 1) * 100 if on and off else None,
            "exact_off_ir": off_s, "exact_ir": exact_s, "exact_off_ir_2x": off_2,
            "exact_ir_2x": exact_2, "exact_extra_per_op": extra,
        })
    return {"table": table, "geomean": means, "callgrind": cg_rows}


# ---- Reporting ----


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{(x - 1) * 100:+.1f}%"


def rng_(x: list[float] | None) -> str:
    return "" if not x else f" ({x[0]:.3f}..{x[1]:.3f})"


def fmt_s(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def fmt_mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x / 1e6:.1f}"


def tables(a: dict[str, Any], have_base: bool, have_ht: bool) -> list[str]:
    g = a["geomean"]
    lines = [
        "## Off and at the default rate (suite size)",
        "",
        "Median loop time (s) over the interleaved rounds. Ratios of times (>1: slower):",
        "'pairs' is the median over back-to-back runs of off, default and baseline (order",
        "rotating; the figure to read), 'rounds' the median of per-round ratios in the",
        "interleaved rounds, where the traced rows' heavy runs fall between; their range in",
        "brackets.",
        "",
        "| workload | ops/thread | off s | default s | default / off, pairs | rounds |"
        + (" baseline s | off / baseline, pairs | rounds |" if have_base else ""),
        "|---|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if have_base else ""),
    ]
    for e in a["table"]:
        line = (f"| {e['config']} | {e['ops_per_thread']:,} | {fmt_s(e.get('off_seconds'))} "
                f"| {fmt_s(e.get('default_seconds'))} | {pct(e.get('default_over_off_pairs'))}"
                f"{rng_(e.get('default_over_off_pairs_range'))} | {pct(e['default_over_off'])}"
                f"{rng_(e['default_over_off_range'])} |")
        if have_base:
            line += (f" {fmt_s(e.get('baseline_seconds'))} "
                     f"| {pct(e.get('off_over_baseline_pairs'))}"
                     f"{rng_(e.get('off_over_baseline_pairs_range'))} "
                     f"| {pct(e['off_over_baseline'])}{rng_(e['off_over_baseline_range'])} |")
        lines.append(line)
    lines.append(f"| **geometric mean** | | | | {pct(g['default_over_off_pairs'])} "
                 f"| {pct(g['default_over_off'])} |"
                 + (f" | {pct(g['off_over_baseline_pairs'])} | {pct(g['off_over_baseline'])} |"
                    if have_base else ""))
    lines += [
        "",
        "## Exact mode and heaptrack (traced size)",
        "",
        "glibc, glibc under heaptrack, libarena off and libarena in exact mode, at the traced",
        "size. Loop time is the program's measured loop (bench_alloc's own clock); CPU is user +",
        "system of the whole process tree (heaptrack's heaptrack_interpret included); wall is",
        "the whole child, start-up and heaptrack's finishing included. heaptrack output: the",
        "size of the file it wrote (median over rounds).",
        "",
        "| workload | ops/thread | glibc s | heaptrack s | heaptrack / glibc | libarena off s "
        "| exact s | exact / off | exact / heaptrack (loop) | (CPU) | (wall) "
        "| heaptrack output MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in a["table"]:
        ht = "n/a" if e.get("heaptrack_over_glibc") is None else fmt_ratio(
            e["heaptrack_over_glibc"])
        lines.append(
            f"| {e['config']} | {e['traced_ops_per_thread']:,} | {fmt_s(e.get('t-glibc_seconds'))} "
            f"| {fmt_s(e.get('t-heaptrack_seconds'))} | {ht} "
            f"| {fmt_s(e.get('t-off_seconds'))} | {fmt_s(e.get('t-exact_seconds'))} "
            f"| {fmt_ratio(e['exact_over_off'])} | {fmt_ratio(e['exact_over_heaptrack'])}"
            f"{rng_(e['exact_over_heaptrack_range'])} "
            f"| {fmt_ratio(e['exact_over_heaptrack_cpu'])} "
            f"| {fmt_ratio(e['exact_over_heaptrack_wall'])} "
            f"| {fmt_mb(e.get('heaptrack_bytes'))} |")
    lines.append(
        f"| **geometric mean** | | | | {fmt_ratio(g['heaptrack_over_glibc'])} | | "
        f"| {fmt_ratio(g['exact_over_off'])} | {fmt_ratio(g['exact_over_heaptrack'])} "
        f"| {fmt_ratio(g['exact_over_heaptrack_cpu'])} "
        f"| {fmt_ratio(g['exact_over_heaptrack_wall'])} | |")
    if not have_ht:
        lines += ["", "heaptrack was not found: its columns are n/a."]
    lines += [""]
    return lines


def callgrind_lines(a: dict[str, Any]) -> list[str]:
    if not a["callgrind"]:
        return []

    def n(x: int | None) -> str:
        return "n/a" if x is None else f"{x:,}"

    def p(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.2f}%"

    lines = [
        "## Instructions (callgrind)",
        "",
        "Total Ir of the whole process (start-up included) under `valgrind --tool=callgrind`;",
        "one run each, as the counts repeat almost exactly. The last column is what exact mode",
        "adds per operation (one malloc and one free, every malloc sampled): off and exact ran",
        "at the ops in the 'exact: ops' column and at twice that, and the column is the",
        "difference of the two increments over those ops (so the set-up drops out).",
        "",
        "| workload | ops | baseline Ir | off Ir | off vs baseline | per op | default Ir "
        "| default vs off | exact: ops | off Ir | exact Ir | extra Ir per op |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in a["callgrind"]:
        per = c["off_minus_baseline_per_op"]
        extra = c["exact_extra_per_op"]
        lines.append(
            f"| {c['config']} | {c['ops']:,} | {n(c['baseline_ir'])} | {n(c['off_ir'])} "
            f"| {p(c['off_vs_baseline_pct'])} | {'n/a' if per is None else f'{per:+.2f}'} "
            f"| {n(c['default_ir'])} | {p(c['default_vs_off_pct'])} | {c['exact_ops']:,} "
            f"| {n(c['exact_off_ir'])} | {n(c['exact_ir'])} "
            f"| {'n/a' if extra is None else f'{extra:,.0f}'} |")
    return lines + [""]


def size_lines(sizes: list[dict[str, Any]]) -> list[str]:
    if not sizes:
        return []
    lines = [
        "## The profile's own size",
        "",
        "The page file's mappings at the end of the loop (`bench_alloc --smaps`, traced size,",
        f"{sizes[0]['config']}): the 32 KiB stats page, and the profile region after it, which",
        "is there only once profiling is on (its space is reserved with fallocate, on the",
        "page's tmpfs).",
        "",
        "| row | page KiB | profile region KiB | of it resident KiB |",
        "|---|---:|---:|---:|",
    ]
    for s in sizes:
        lines.append(f"| {s['allocator']} | {s['page_kib']} | {s['region_kib']:,} "
                     f"| {s['region_rss_kib']:,} |")
    return lines + [""]


def verdict_lines(a: dict[str, Any], have_base: bool, have_ht: bool) -> list[str]:
    g = a["geomean"]
    out = ["## Against the targets", ""]
    if have_base:
        worst = max((abs(c["off_vs_baseline_pct"]) for c in a["callgrind"]
                     if c["off_vs_baseline_pct"] is not None), default=None)
        out.append(f"- Off within noise: off / baseline time {pct(g['off_over_baseline_pairs'])} "
                   "(geometric mean of the per-workload medians of back-to-back pairs)"
                   + (f"; instructions within {worst:.2f}% (target 1%)"
                      if worst is not None else "") + ".")
    out.append(f"- Default rate under 3%: default / off {pct(g['default_over_off_pairs'])} "
               "(geometric mean of back-to-back pairs); per workload in the first table.")
    if have_ht:
        out.append(f"- Exact mode faster than heaptrack: exact / heaptrack loop time "
                   f"{fmt_ratio(g['exact_over_heaptrack'])} (<1: libarena faster), CPU "
                   f"{fmt_ratio(g['exact_over_heaptrack_cpu'])}, wall "
                   f"{fmt_ratio(g['exact_over_heaptrack_wall'])} (geometric means).")
    return out + [""]


def write_reports(out_dir: str, args: argparse.Namespace, command: str,
                  machine: dict[str, Any], rows: list[Row], configs: list[Config],
                  notes: list[str], sizes: list[dict[str, Any]], samples: list[dict[str, Any]],
                  cg: list[dict[str, Any]], pairs: dict[str, dict[str, list[float]]],
                  elapsed: float) -> str:
    a = analyse(args, rows, configs, cg, pairs)
    have_base = any(r.key == "baseline" for r in rows)
    have_ht = any(r.heaptrack for r in rows)
    header = [
        "# What heap profiling costs",
        "",
        "Generated by `bench/run_profile.py`; do not edit by hand.",
        "",
    ]
    if args.smoke:
        header += ["**SMOKE RUN: tiny sizes, one round; the numbers mean nothing.**", ""]
    header += busy_warning(machine)
    header += [
        f"- date: {machine['date']}",
        f"- command: `{command}`",
        f"- machine: {machine_line(machine)}",
        load_line(machine),
        f"- rounds: {args.rounds}, interleaved, row order shuffled per round (seed "
        f"{SHUFFLE_SEED}); then {args.pairs} back-to-back runs of off, default and baseline "
        f"per workload; bench seed {args.seed}; wall time {elapsed:.0f} s",
        f"- sizes: the suite's operations x {args.ops_scale:g} (suite size), x "
        f"{args.traced_scale:g} (traced size){'; /100 for --smoke' if args.smoke else ''}",
        f"- allocator environment passed through: {allocator_env_vars() or 'none'}",
        f"- heaptrack: {args.heaptrack or 'not found: its rows are left out'}; valgrind: "
        f"{args.valgrind if args.callgrind else 'not run (--callgrind not given or not found)'}",
        "",
        "Rows:",
        "",
    ]
    for r in rows:
        how = r.alloc.describe()
        if r.heaptrack:
            how = f"`heaptrack -o FILE bench_alloc ...`, {how}"
        header.append(f"- {r.key}: {r.label}; {how}; "
                      f"{'traced' if r.traced else 'suite'} size")
    header += ["", "Checks:", ""] + [f"- {n}" for n in notes] + [""]
    if FAILURES:
        header += [f"**{len(FAILURES)} run(s) FAILED** (left out of the figures):", ""]
        for f in FAILURES:
            err = " ".join(f["error"].split())
            header.append(f"- {f['what']}: {err}")
        header.append("")
    body = (verdict_lines(a, have_base, have_ht) + tables(a, have_base, have_ht)
            + callgrind_lines(a) + size_lines(sizes))
    md = "\n".join(header + body)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "profile.md"), "w", encoding="utf-8") as f:
        f.write(md)
    write_json(os.path.join(out_dir, "profile.json"), {
        "command": command,
        "machine": machine,
        "rounds": args.rounds,
        "smoke": args.smoke,
        "ops_scale": args.ops_scale,
        "traced_scale": args.traced_scale,
        "bench_seed": args.seed,
        "shuffle_seed": SHUFFLE_SEED,
        "elapsed_seconds": elapsed,
        "allocator_env": allocator_env_vars(),
        "rows": [{"key": r.key, "label": r.label, "lib": r.alloc.lib, "env": r.alloc.env,
                  "traced": r.traced, "heaptrack": r.heaptrack} for r in rows],
        "configs": [c.key for c in configs],
        "checks": notes,
        "profile_size": sizes,
        **a,
        "callgrind_runs": cg,
        "pairs": pairs,
        "failures": FAILURES,
        "samples": samples,
    })
    return md


# ---- main ----


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", required=True, help="path to the bench_alloc executable")
    p.add_argument("--arena", required=True, help="path to libarena.so (required)")
    p.add_argument("--baseline-lib", help="a libarena.so built without the profiling "
                   "countdown (e.g. from commit eaf385e): adds the libarena-baseline row")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--pairs", type=int, default=None,
                   help="back-to-back runs of off, default and baseline per workload, after "
                   "the rounds (default 6; 1 with --smoke)")
    p.add_argument("--only", action="append", choices=WORKLOADS,
                   help="run only this workload (repeatable)")
    p.add_argument("--ops-scale", type=float, default=1.0,
                   help="suite-size rows: the suite's operations times this (default 1)")
    p.add_argument("--traced-scale", type=float, default=0.05,
                   help="traced rows (exact mode, heaptrack and their references): the "
                   "suite's operations times this (default 0.05)")
    p.add_argument("--callgrind", action="store_true",
                   help="add the callgrind instruction counts (small workloads)")
    p.add_argument("--cg-ops", type=int, default=None,
                   help="ops/thread of the callgrind runs (default 2,000,000; smoke 20,000)")
    p.add_argument("--cg-exact-ops", type=int, default=None,
                   help="ops/thread of the callgrind runs in exact mode (default --cg-ops/20)")
    p.add_argument("--no-heaptrack", action="store_true", help="leave heaptrack out")
    p.add_argument("--smoke", action="store_true",
                   help="sizes /100, one round, results in a temporary directory")
    p.add_argument("--out", help="directory for profile.md and profile.json (default "
                   "bench/results; with --smoke a temporary directory, removed afterwards)")
    p.add_argument("--seed", type=int, default=42, help="bench_alloc --seed (default 42)")
    args = p.parse_args(argv)
    if args.smoke:
        args.rounds = 1
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.ops_scale <= 0 or args.traced_scale <= 0:
        p.error("the scales must be positive")
    if args.pairs is None:
        args.pairs = 1 if args.smoke else 6
    if args.pairs < 0:
        p.error("--pairs must not be negative")
    if args.cg_ops is None:
        args.cg_ops = 20_000 if args.smoke else 2_000_000
    if args.cg_exact_ops is None:
        args.cg_exact_ops = max(args.cg_ops // 20, 1)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = shlex.join([sys.executable] + sys.argv)
    if not check_paths(args):
        return 2
    if args.baseline_lib:
        args.baseline_lib = os.path.abspath(args.baseline_lib)
        if not os.path.isfile(args.baseline_lib):
            log(f"error: --baseline-lib {args.baseline_lib}: not found")
            return 2
    args.heaptrack = None if args.no_heaptrack else shutil.which(HEAPTRACK)
    if args.heaptrack is None:
        log("WARNING: heaptrack not found (or --no-heaptrack): its rows are left out")
    args.valgrind = shutil.which(VALGRIND) if args.callgrind else None
    if args.callgrind and args.valgrind is None:
        log("WARNING: valgrind not found: no instruction counts")
        args.callgrind = False

    configs = []
    for w in WORKLOADS:
        if args.only and w not in args.only:
            continue
        configs.append(next(c for c in CONFIGS if c.workload == w))
    rows = make_rows(args)
    machine = machine_info()
    if machine["busy"]:
        log(f"WARNING: load average {load_before(machine):.2f} on {machine['cores']} cores: "
            "the machine is busy, results will be noisy")
    # On tmpfs, as the default base is, so the page and the profile region cost what they
    # cost there; never the machine's /dev/shm/arena.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    stats_dir = tempfile.mkdtemp(prefix="bench-profile.", dir=shm)
    tmp = tempfile.mkdtemp(prefix="bench-profile-work.")
    start = time.monotonic()
    cg: list[dict[str, Any]] = []
    pairs: dict[str, dict[str, list[float]]] = {}
    try:
        notes, sizes = run_checks(args, rows, configs, stats_dir, tmp)
        for n in notes:
            log(f"check: {n}")
        samples = run_rounds(args, rows, configs, stats_dir, tmp)
        pairs = run_pairs(args, rows, configs, stats_dir)
        if args.callgrind:
            cg = callgrind(args, rows, configs, stats_dir, tmp)
    except BenchError as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        shutil.rmtree(stats_dir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - start
    machine["loadavg_end"] = os.getloadavg()
    machine["date_end"] = now_utc()

    with results_dir(args.out, args.smoke, "bench-profile-smoke-") as (out_dir, is_tmp):
        md = write_reports(out_dir, args, command, machine, rows, configs, notes, sizes,
                           samples, cg, pairs, elapsed)
    print(md, end="")
    log(f"wrote profile.md and profile.json to "
        f"{'a temporary directory (removed)' if is_tmp else out_dir} in {elapsed:.1f} s")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
