#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Process start-up under each allocator: fork + exec of /bin/true, plain and preloaded.

bench_startup (a small, plain parent) times fork + execve + wait of the program; only the
children get LD_PRELOAD. Rows: glibc (no preload: the plain start), jemalloc, mimalloc,
tcmalloc, libarena, and libarena with ARENA_STATS=0, so the stats page's share of a start shows
as the difference between the last two. A round is one bench_startup process doing --starts
starts per allocator, the allocators taking turns start by start in an order shuffled per round
from a fixed seed. Per allocator we report the median over rounds of the round's median
microseconds per start, wall and the child's CPU time, the mean over all starts, and the time
relative to the plain start and libarena's stats-page share as medians of per-round (paired)
ratios and differences.

Every child gets ARENA_STATS_DIR set to a fresh directory on /dev/shm (tmpfs, as the default
base is), never the machine's /dev/shm/arena; pages left in it afterwards are counted.

Before timing anything, the preloads are proven on /bin/cat /proc/self/maps run with each
allocator's environment: its library mapped (none for glibc), the stats page mapped for
libarena and not for ARENA_STATS=0, and libarena's ARENA_VERBOSE=1 banner (printed when libarena
initialises, at a process's first allocation). Whether the timed program itself initialises
libarena (/bin/true never allocates, so it does not) is said in the report.

Writes startup.md and startup.json into --out.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (  # noqa: E402
    BANNER,
    SHUFFLE_SEED,
    Allocator,
    BenchError,
    allocator_env_vars,
    base_env,
    busy_warning,
    check_paths,
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
    tail,
    write_json,
)

RESULT_KEYS = ("starts", "seconds", "variants")
VARIANT_KEYS = ("name", "median_us", "mean_us", "min_us", "p10_us", "p90_us", "max_us",
                "cpu_median_us", "cpu_mean_us")
# Per start: the wall time around fork + execve + wait, and the child's CPU time (wait4), which
# the machine's other work disturbs less.
MEASURES = {"wall": "median_us", "cpu": "cpu_median_us"}
PLAIN = "glibc"  # the row without LD_PRELOAD
MAPS_PROGRAM = ["/bin/cat", "/proc/self/maps"]  # a coreutils program like /bin/true, that talks


# ---- Proving the preloads took ----


def mapped_paths(alloc: Allocator, extra: dict[str, str]) -> list[str]:
    """The files mapped by /bin/cat started with this allocator's environment."""
    what = f"{alloc.name} maps check"
    proc = run_child(MAPS_PROGRAM, child_env(alloc, extra), 30, what)
    if proc.returncode != 0:
        raise BenchError(f"{what}: {shlex.join(MAPS_PROGRAM)} exited {proc.returncode}\n"
                         f"{tail(proc.stderr)}")
    return [line[line.index("/"):] for line in proc.stdout.splitlines() if "/" in line]


def check_preloads(
    allocs: list[Allocator], program: str, stats_dir: str, no_banner_check: bool
) -> list[str]:
    """Un-timed checks, once per allocator. Returns lines for the report."""
    notes = []
    extra = {"ARENA_STATS_DIR": stats_dir}
    preloaded = sorted({a.mapped_name for a in allocs if a.lib})
    for alloc in allocs:
        paths = mapped_paths(alloc, extra)
        names = {os.path.basename(p.split(" (deleted)")[0]) for p in paths}
        if alloc.lib is None:
            found = [n for n in preloaded if n in names]
            if found:
                raise BenchError(f"{alloc.name}: expected none of {preloaded} mapped, found "
                                 f"{found}: the plain start is not plain")
            notes.append(f"{alloc.name}: no preload; none of the preloaded libraries mapped")
            continue
        if alloc.mapped_name not in names:
            raise BenchError(f"{alloc.name}: LD_PRELOAD={alloc.lib} did not take: "
                             f"{alloc.mapped_name} not in /bin/cat's /proc/self/maps")
        note = f"{alloc.name}: {alloc.mapped_name} mapped in /bin/cat"
        if alloc.is_arena:
            # The stats row and the ARENA_STATS=0 row must differ by the page, or their
            # difference measures nothing.
            page = [p for p in paths if p.startswith(stats_dir + "/")]
            want_page = alloc.env.get("ARENA_STATS") != "0"
            if bool(page) != want_page:
                raise BenchError(
                    f"{alloc.name}: expected {'a' if want_page else 'no'} stats page under "
                    f"{stats_dir} in /bin/cat's /proc/self/maps, found {page or 'none'}"
                )
            note += f"; stats page {'mapped: ' + page[0] if page else 'not mapped'}"
            if not no_banner_check:
                what = f"{alloc.name} banner check (ARENA_VERBOSE=1)"
                verbose = child_env(alloc, {**extra, "ARENA_VERBOSE": "1"})
                proc = run_child(MAPS_PROGRAM, verbose, 30, what)
                banner = [ln for ln in proc.stderr.splitlines() if ln.startswith(BANNER)]
                if proc.returncode != 0 or not banner:
                    raise BenchError(
                        f"{what}: exit {proc.returncode}, no stderr line starting with "
                        f"'{BANNER}': the preload did not take (or the banner changed)\n"
                        f"{tail(proc.stderr)}"
                    )
                note += f"; banner: {banner[0].strip()}"
                # libarena initialises at the first allocation: say whether the timed program
                # makes one (a program that never allocates pays only for loading libarena).
                timed = run_child([program], verbose, 30, f"{alloc.name} {program} banner")
                inits = any(ln.startswith(BANNER) for ln in timed.stderr.splitlines())
                note += (f"; `{program}` {'initialises libarena' if inits else 'never allocates, so libarena does not initialise in it (loading only)'}")
        notes.append(note)
    return notes


# ---- Measuring ----


def startup_cmd(args: argparse.Namespace, order: list[Allocator], stats_dir: str) -> list[str]:
    """bench_startup with one variant per allocator, in this order: each allocator's settings
    go to its children only."""
    cmd = [args.bench, "--starts", str(args.starts), "--program", args.program]
    for alloc in order:
        sets = {"ARENA_STATS_DIR": stats_dir, **alloc.env}
        if alloc.lib:
            sets["LD_PRELOAD"] = alloc.lib
        cmd += ["--variant", alloc.name]
        for k, v in sets.items():
            cmd += ["--env", f"{k}={v}"]
    return cmd


def run_rounds(
    args: argparse.Namespace, allocs: list[Allocator], stats_dir: str
) -> list[dict[str, Any]]:
    active = [a for a in allocs if not a.skipped]
    rng = random.Random(SHUFFLE_SEED)
    samples = []
    # The parent runs plain: only its children get the allocator (startup_cmd's --env).
    env = base_env()
    for rnd in range(args.rounds):
        order = active[:]
        rng.shuffle(order)
        line = []
        what = f"start-up round {rnd + 1}"
        proc = run_child(startup_cmd(args, order, stats_dir), env, 600, what)
        result = parse_json_line(proc, what, RESULT_KEYS)
        got = result["variants"]
        if [v.get("name") for v in got] != [a.name for a in order] or any(
            k not in v for v in got for k in VARIANT_KEYS
        ):
            raise BenchError(f"{what}: unexpected variants in the result: {got}")
        for pos, (alloc, v) in enumerate(zip(order, got)):
            sample = {"round": rnd + 1, "position": pos, "allocator": alloc.name,
                      "starts": result["starts"], **{k: v[k] for k in VARIANT_KEYS[1:]}}
            alloc.samples.setdefault("startup", []).append(sample)
            samples.append(sample)
            line.append(f"{alloc.name} {v['median_us']:.0f}/{v['cpu_median_us']:.0f}")
        log(f"round {rnd + 1}/{args.rounds} (median us per start, wall/CPU): " + ", ".join(line))
    return samples


def per_round(alloc: Allocator | None, key: str) -> dict[int, float]:
    if alloc is None or alloc.skipped:
        return {}
    return {s["round"]: s[key] for s in alloc.samples.get("startup", [])}


def analyse(allocs: list[Allocator]) -> dict[str, Any]:
    by = {a.name: a for a in allocs}
    rows = []
    for alloc in allocs:
        ss = alloc.samples.get("startup")
        if not ss:
            continue
        starts = sum(s["starts"] for s in ss)
        row: dict[str, Any] = {"allocator": alloc.name, "starts": starts, "rounds": len(ss)}
        for measure, key in MEASURES.items():
            prefix = "" if measure == "wall" else "cpu_"
            medians = [s[key] for s in ss]
            med = statistics.median(medians)
            ratio = paired_ratio(per_round(alloc, key), per_round(by.get(PLAIN), key))
            row[f"{prefix}median_us"] = med
            row[f"{prefix}mean_us"] = sum(s[f"{prefix}mean_us"] * s["starts"] for s in ss) / starts
            row[f"{prefix}spread"] = (max(medians) - min(medians)) / med if med > 0 else 0.0
            row[f"{prefix}vs_plain"] = ratio[0] if ratio else None
            row[f"{prefix}vs_plain_range"] = [ratio[1], ratio[2]] if ratio else None
        row["p90_us"] = statistics.median(s["p90_us"] for s in ss)
        rows.append(row)
    # What the stats page adds to a start: libarena with it on minus with ARENA_STATS=0, in
    # the same round.
    stats_page = {}
    for measure, key in MEASURES.items():
        on = per_round(by.get("libarena"), key)
        off = per_round(by.get("libarena-nostats"), key)
        diffs = [on[r] - off[r] for r in on if r in off]
        shares = [(on[r] - off[r]) / on[r] for r in on if r in off and on[r] > 0]
        if diffs:
            stats_page[measure] = {
                "us": statistics.median(diffs),
                "us_min": min(diffs),
                "us_max": max(diffs),
                "share": statistics.median(shares),
                "rounds": len(diffs),
            }
    return {"rows": rows, "stats_page": stats_page or None}


# ---- Reporting ----


def vs_plain(r: dict[str, Any], prefix: str) -> str:
    text = fmt_ratio(r[f"{prefix}vs_plain"])
    if r[f"{prefix}vs_plain_range"] and r["allocator"] != PLAIN:
        lo, hi = r[f"{prefix}vs_plain_range"]
        text += f" ({lo:.2f} .. {hi:.2f})"
    return text


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| allocator | median µs per start | vs plain (range) | CPU µs per start "
        "| CPU vs plain (range) | mean µs | P90 µs | spread | starts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['allocator']} | {r['median_us']:,.0f} | {vs_plain(r, '')} "
            f"| {r['cpu_median_us']:,.0f} | {vs_plain(r, 'cpu_')} | {r['mean_us']:,.0f} "
            f"| {r['p90_us']:,.0f} | {r['spread'] * 100:.0f}% | {r['starts']:,} |"
        )
    return lines


def stats_page_line(a: dict[str, Any]) -> str | None:
    if not a["stats_page"]:
        return None
    parts = []
    for measure, label in (("wall", "wall time"), ("cpu", "the child's CPU time")):
        s = a["stats_page"].get(measure)
        if s:
            parts.append(
                f"{label} {s['us']:+,.0f} µs per start, {s['share'] * 100:+.1f}% (range "
                f"{s['us_min']:+,.0f} .. {s['us_max']:+,.0f} µs)"
            )
    rounds = max(s["rounds"] for s in a["stats_page"].values())
    return (
        "The stats page's share of libarena's start-up (libarena minus `ARENA_STATS=0` in the "
        f"same round, median over {rounds} round(s)): " + "; ".join(parts) + "."
    )


def write_reports(
    out_dir: str,
    args: argparse.Namespace,
    command: str,
    machine: dict[str, Any],
    allocs: list[Allocator],
    notes: list[str],
    samples: list[dict[str, Any]],
    leftover: int,
    elapsed: float,
) -> str:
    a = analyse(allocs)
    md = [
        "# Process start-up",
        "",
        "Generated by `bench/run_startup.py` (part of `bench/run_all.sh`); do not edit by hand.",
        "",
    ]
    if args.smoke:
        md += [f"**SMOKE RUN: {args.starts} starts per round; the numbers mean little.**", ""]
    md += busy_warning(machine)
    md += [
        f"- date: {machine['date']}",
        f"- command: `{command}`",
        f"- machine: {machine_line(machine)}",
        load_line(machine),
        f"- {args.rounds} round(s) of {args.starts} starts of `{args.program}` per allocator, "
        f"the allocators taking turns start by start (order shuffled per round, seed "
        f"{SHUFFLE_SEED}); wall time {elapsed:.0f} s",
        f"- allocator environment passed through: {allocator_env_vars() or 'none'}",
        f"- stats pages left in the temporary ARENA_STATS_DIR afterwards: {leftover}",
        "",
        "One start: `fork`, `execve` of the program in the child, `wait4` in the parent, "
        "timed by the parent (bench_startup.cc). The parent runs plain; only the child gets "
        "LD_PRELOAD. Median µs: the median over rounds of each round's median start, wall "
        "time; CPU µs: the same of the child's user + system time (wait4), which covers the "
        "execve, the loading and the program, and which other work on the machine disturbs "
        "less. vs plain: the median of per-round ratios to glibc's start without a preload "
        "(>1: slower), with their range. spread: (max - min) / median of the rounds' wall "
        "medians.",
        "",
        *table(a["rows"]),
        "",
    ]
    line = stats_page_line(a)
    if line:
        md += [line, ""]
    md += ["Allocators:", ""]
    for al in allocs:
        md.append(f"- {al.name}: SKIPPED ({al.skipped})" if al.skipped else
                  f"- {al.name}: {al.describe()}")
    md += ["", "Preload checks:", ""] + [f"- {n}" for n in notes]
    text = "\n".join(md) + "\n"
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "startup.md"), "w", encoding="utf-8") as f:
        f.write(text)
    write_json(
        os.path.join(out_dir, "startup.json"),
        {
            "command": command,
            "machine": machine,
            "program": args.program,
            "rounds": args.rounds,
            "starts_per_round": args.starts,
            "smoke": args.smoke,
            "elapsed_seconds": elapsed,
            "pages_left": leftover,
            "allocators": [
                {"name": al.name, "lib": al.lib, "env": al.env, "skipped": al.skipped}
                for al in allocs
            ],
            "preload_checks": notes,
            **a,
            "samples": samples,
        },
    )
    return text


# ---- main ----


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", required=True, help="path to the bench_startup executable")
    p.add_argument("--arena", required=True, help="path to libarena.so (required)")
    p.add_argument("--rounds", type=int, default=40, help="interleaved rounds (default 40)")
    p.add_argument("--starts", type=int, default=None,
                   help="starts per allocator per round (default 50; 20 with --smoke)")
    p.add_argument("--program", default="/bin/true", help="what to start (default /bin/true)")
    p.add_argument("--smoke", action="store_true", help="small batches, for the test suite")
    p.add_argument(
        "--out",
        help="directory for startup.md and startup.json (default bench/results next to this "
        "script; with --smoke a temporary directory that is removed afterwards)",
    )
    p.add_argument("--no-banner-check", action="store_true",
                   help="skip the ARENA_VERBOSE banner check (a stand-in passed as --arena)")
    args = p.parse_args(argv)
    if args.starts is None:
        args.starts = 20 if args.smoke else 50
    if args.rounds < 1 or args.starts < 1:
        p.error("--rounds and --starts must be at least 1")
    return args


def count_files(top: str) -> int:
    return sum(len(files) for _, _, files in os.walk(top))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = shlex.join([sys.executable] + sys.argv)
    if not check_paths(args, ("bench", "program")):
        return 2

    allocs = standard_allocators(args.arena, nostats=True)
    machine = machine_info()
    if machine["busy"]:
        log(f"WARNING: load average {load_before(machine):.2f} on {machine['cores']} cores: "
            "the machine is busy, results will be noisy")
    # On tmpfs, as the default base is, so a page costs what it costs there.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    stats_dir = tempfile.mkdtemp(prefix="bench-startup.", dir=shm)
    start = time.monotonic()
    try:
        notes = check_preloads([a for a in allocs if not a.skipped], args.program, stats_dir,
                               args.no_banner_check)
        for n in notes:
            log(f"check: {n}")
        samples = run_rounds(args, allocs, stats_dir)
        leftover = count_files(stats_dir)
    except BenchError as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        shutil.rmtree(stats_dir, ignore_errors=True)
    elapsed = time.monotonic() - start
    machine["loadavg_end"] = os.getloadavg()
    machine["date_end"] = now_utc()

    with results_dir(args.out, args.smoke, "bench-startup-smoke-") as (out_dir, tmp):
        text = write_reports(out_dir, args, command, machine, allocs, notes, samples, leftover,
                             elapsed)
    print(text, end="")
    log(f"wrote startup.md and startup.json to {'a temporary directory' if tmp else out_dir} "
        f"in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
