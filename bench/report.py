#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Summary and plots of a benchmark run: reads suite.json, seed.json, startup.json,
idle_rss.json (and http.md) from a results directory, writes summary.md and the PNG plots
there, and optionally refreshes the results sections of bench/README.md and the top-level
README.md.

summary.md is what the top-level README shows: libarena against every peer per workload, the
seed benchmark, the stats-page cost, process start-up, RSS after a large free, and the plots,
with the machine and date. Plots are drawn by gnuplot (Debian's gnuplot-nox, pngcairo
terminal); without gnuplot the summary says so and no PNG is written. idle_rss.png is drawn
by run_idle_rss.py, not here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import PEER_NAMES, fmt_ratio, load_before, log, machine_line  # noqa: E402

README_BEGIN = "<!-- bench-results:begin (written by bench/report.py) -->"
README_END = "<!-- bench-results:end -->"

ALLOC_ORDER = ["glibc", "jemalloc", "mimalloc", "tcmalloc", "libarena", "libarena-nostats"]
SEED_ORDER = ["arena-native", "libarena", "glibc", "jemalloc", "mimalloc", "tcmalloc"]
COLOURS = {
    "glibc": "#8c8c8c",
    "jemalloc": "#4c72b0",
    "mimalloc": "#55a868",
    "tcmalloc": "#dd8452",
    "libarena": "#c44e52",
    "libarena-nostats": "#e8a0a2",
    "arena-native": "#8b1a1a",
}

PLOTS = {
    "suite_speed.png": "throughput of each allocator relative to glibc, per workload",
    "suite_rss.png": "peak RSS of each allocator relative to glibc, per workload",
    "seed.png": "the seed's 256 KiB benchmark: throughput and cycles per operation",
}


def load(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


# ---- The summary ----


def http_line(results: str) -> str | None:
    """cmond's /health rows of http.md (another engineer's report), if it is there."""
    try:
        with open(os.path.join(results, "http.md"), encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    # Rows like "| cmond GET /health, coalesce on | 2481 | ... | 2.55x |".
    rows = re.findall(r"^\| cmond GET /health([^|]*)\| (\d+) \|.*\| ([\d.]+x) \|$", text, re.M)
    if not rows:
        return "HTTP load (cmond vs webhook): see `bench/results/http.md`."
    parts = [
        f"{req} req/s{(' (' + label.strip(' ,') + ')') if label.strip(' ,') else ''}, "
        f"{vs} webhook's"
        for label, req, vs in rows
    ]
    return f"HTTP load, cmond `GET /health`: {'; '.join(parts)} (`bench/results/http.md`)."


def rss_split_line(results: str, prefix: str) -> str | None:
    """libarena - glibc by mapping when the loop ends, from rss_split.json, if it is there."""
    split = load(os.path.join(results, "rss_split.json"))
    if not split or not split.get("rows"):
        return None
    parts = []
    for name, rows in split["rows"].items():
        if "libarena" not in rows or "glibc" not in rows:
            continue
        a, g = rows["libarena"]["end"], rows["glibc"]["end"]
        d = {p: a[p] - g[p] for p in split["parts"]}
        inner = ", ".join(f"{p} {v:+,}" for p, v in d.items() if v)
        parts.append(f"{name} {sum(d.values()):+,} ({inner})")
    return (
        "Where the resident memory differs (libarena - glibc, KiB, when the measured loop "
        f"ends): {'; '.join(parts)} ([{prefix}rss_split.md]({prefix}rss_split.md))."
    )


def startup_line(startup: dict | None, prefix: str) -> str | None:
    """Per-start microseconds of fork + exec of the program, plain and under each allocator,
    from startup.json (run_startup.py), if it is there."""
    if not startup or not startup.get("rows"):
        return None
    rows = {r["allocator"]: r for r in startup["rows"]}
    plain = rows.get("glibc")
    parts = [f"plain {plain['median_us']:,.0f} µs" if plain else "plain: not measured"]
    for name in ALLOC_ORDER:
        r = rows.get(name)
        if r is None or name == "glibc":
            continue
        label = "libarena with `ARENA_STATS=0`" if name == "libarena-nostats" else name
        parts.append(f"{label} {r['median_us']:,.0f} µs ({fmt_ratio(r['vs_plain'])})")
    page = (startup.get("stats_page") or {}).get("wall")
    share = (
        f"; the stats page's share of libarena's start-up: {page['us']:+,.0f} µs "
        f"({page['share'] * 100:+.1f}%)" if page else ""
    )
    note = " **(smoke run)**" if startup.get("smoke") else ""
    return (
        f"Process start-up (fork + exec of `{startup['program']}`, median per start, time vs "
        f"plain; {startup['rounds']} interleaved rounds of {startup['starts_per_round']}){note}: "
        f"{', '.join(parts)}{share} ([{prefix}startup.md]({prefix}startup.md))."
    )


IDLE_SCENARIOS = {
    "mixed": "1 GiB of mixed sizes, then idle",
    "mixed-light": "the same, then light allocation",
    "small4k": "256 MiB of 4100-byte blocks, then idle",
    "remote4k": "the same, freed by another thread",
}


def idle_line(idle: dict | None, prefix: str) -> str | None:
    """RSS at the end of the sampling after a large free, per scenario and allocator, and
    libarena's time to return the memory, from idle_rss.json (run_idle_rss.py), if it is
    there."""
    if not idle or not idle.get("rows"):
        return None
    parts = []
    for scenario in idle["scenarios"]:
        rows = {r["allocator"]: r for r in idle["rows"] if r["scenario"] == scenario}
        cells = []
        for name in (n for n in ALLOC_ORDER if n in rows):
            cell = f"{name} {rows[name]['end_kib'] / 1024:,.0f}"
            if name == "libarena":
                back = rows[name]["back_ms"]
                cell += (f" (back in {back:,} ms)" if back is not None
                         else " (not back in every round)")
            cells.append(cell)
        if not cells:
            continue
        what = None if idle.get("smoke") else IDLE_SCENARIOS.get(scenario)  # smoke: not its sizes
        parts.append(f"`{scenario}`{f' ({what})' if what else ''}: {', '.join(cells)}")
    busy = (f"; load average {load_before(idle['machine']):.2f} before the run"
            if idle["machine"].get("busy") else "")
    note = " **(smoke run)**" if idle.get("smoke") else ""
    return (
        f"RSS {idle['seconds']} s after a large free (MiB, medians of {idle['rounds']} "
        "interleaved rounds; libarena is back when its RSS has come within 10% of the freed "
        f"amount of where it started, and stays{busy}){note}: {'; '.join(parts)} "
        f"([{prefix}idle_rss.md]({prefix}idle_rss.md))."
    )


def summary(
    suite: dict | None,
    seed: dict | None,
    startup: dict | None,
    idle: dict | None,
    results: str,
    prefix: str,
) -> list[str]:
    """Markdown lines; plot paths start with `prefix` (e.g. 'bench/results/')."""
    out: list[str] = []
    if suite:
        m = suite["machine"]
        note = " **(smoke run: meaningless numbers)**" if suite.get("smoke") else ""
        if suite.get("stand_in"):
            note += " **(libarena was a stand-in: not libarena's numbers)**"
        out += [
            f"Measured {m['date'][:10]} on {machine_line(m)}, load average "
            f"{load_before(m):.2f} before the run; `bench/run_all.sh`, "
            f"{suite['rounds']} interleaved rounds{note}.",
            "",
            "libarena's throughput relative to each allocator (>1: libarena is faster; medians "
            "of per-round ratios) and its peak RSS relative to glibc and mimalloc (<1: less "
            "memory):",
            "",
        ]
        peers = ["glibc"] + PEER_NAMES
        out += [
            "| workload | " + " | ".join(f"vs {p}" for p in peers)
            + " | RSS vs glibc | RSS vs mimalloc |",
            "|---|" + "---:|" * (len(peers) + 2),
        ]
        for s in suite["standing"]:
            out.append(
                f"| {s['config']} | "
                + " | ".join(fmt_ratio(s[f"speed_vs_{p}"]) for p in peers)
                + f" | {fmt_ratio(s['rss_vs_glibc'])} | {fmt_ratio(s['rss_vs_mimalloc'])} |"
            )
        g = suite.get("standing_geomean", {})
        if suite["standing"]:
            out.append(
                "| **geometric mean** | "
                + " | ".join(f"**{fmt_ratio(g.get(f'speed_vs_{p}'))}**" for p in peers)
                + f" | **{fmt_ratio(g.get('rss_vs_glibc'))}** "
                f"| **{fmt_ratio(g.get('rss_vs_mimalloc'))}** |"
            )
        out.append("")
        if suite.get("stats_cost"):
            costs = ", ".join(
                f"{c['config']} {(c['on_over_off'] - 1) * 100:+.1f}%" for c in suite["stats_cost"]
            )
            out += [f"Cost of the stats page (time with it on vs `ARENA_STATS=0`): {costs} "
                    "(target: under 2%).", ""]
    r = rss_split_line(results, prefix)
    if r:
        out += [r, ""]
    if seed and seed.get("rows"):
        rows = {r["allocator"]: r for r in seed["rows"]}
        names = [n for n in SEED_ORDER if n in rows]
        out += [
            "The seed's benchmark (256 KiB blocks, 128 random page touches each, 12,800 zombie "
            "allocations; cycles per free + malloc + touches):",
            "",
            "| | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
            "| M ops/s | " + " | ".join(f"{rows[n]['mops']:.2f}" for n in names) + " |",
            "| vs glibc | " + " | ".join(fmt_ratio(rows[n]["speed_vs_glibc"]) for n in names)
            + " |",
            "| P50 / P99 cycles | "
            + " | ".join(f"{rows[n]['p50']:,.0f} / {rows[n]['p99']:,.0f}" for n in names)
            + " |",
            "",
        ]
    up = startup_line(startup, prefix)
    if up:
        out += [up, ""]
    idl = idle_line(idle, prefix)
    if idl:
        out += [idl, ""]
    behind = furthest_behind(suite, seed)
    if behind:
        out += [
            "Furthest behind the fastest allocator: "
            + ", ".join(f"{name} ({fmt_ratio(r)} of {peer})" for name, peer, r in behind)
            + f"; profiles in [{prefix}profiles.md]({prefix}profiles.md).",
            "",
        ]
    h = http_line(results)
    if h:
        out += [h, ""]
    pngs = [p for p in PLOTS if os.path.isfile(os.path.join(results, p))]
    for p in pngs:
        out.append(f"![{PLOTS[p]}]({prefix}{p})")
    if pngs:
        out.append("")
    out.append(
        f"Full tables: [{prefix}suite.md]({prefix}suite.md), [{prefix}seed.md]({prefix}seed.md)"
        + (f", [{prefix}startup.md]({prefix}startup.md)" if up else "")
        + (f", [{prefix}idle_rss.md]({prefix}idle_rss.md)" if idl else "")
        + (f", [{prefix}http.md]({prefix}http.md)" if h else "")
        + "."
    )
    return out


def furthest_behind(suite: dict | None, seed: dict | None) -> list[tuple[str, str, float]]:
    """The three workloads where libarena's throughput is lowest relative to the fastest
    allocator of that workload, the seed benchmark included: (workload, peer, ratio)."""
    entries = []
    for s in (suite or {}).get("standing", []):
        if s.get("speed_vs_best") is not None:
            entries.append((s["config"], s["best_peer"], s["speed_vs_best"]))
    for r in (seed or {}).get("rows", []):
        if r["allocator"] == "libarena" and r.get("speed_vs_best") is not None:
            entries.append(("seed (256 KiB)", r["best_peer"], r["speed_vs_best"]))
    return sorted(entries, key=lambda e: e[2])[:3]


# ---- Plots ----


def gnuplot(script: str) -> None:
    subprocess.run(["gnuplot"], input=script, text=True, check=True, capture_output=True)


def clustered(
    path: str,
    title: str,
    ylabel: str,
    labels: list[str],
    series: list[str],
    values: dict[tuple[str, str], float | None],
    log2: bool,
    colours: dict[str, str] | None = None,
) -> str:
    """A gnuplot script for a clustered bar chart of values[(label, series)]; bar colours
    from `colours` (default COLOURS)."""
    rows = ["label " + " ".join(f'"{s}"' for s in series)]
    for lab in labels:
        cells = []
        for s in series:
            v = values.get((lab, s))
            cells.append("NaN" if v is None else f"{v:.5g}")
        rows.append(f'"{lab}" ' + " ".join(cells))
    data = "\n".join(rows)
    plots = ", ".join(
        f"$data using {i + 2}:xtic(1) title columnheader({i + 2}) lc rgb '{(colours or COLOURS).get(s, '#444444')}'"
        for i, s in enumerate(series)
    )
    width = max(900, 110 * len(labels))
    return f"""
$data << EOD
{data}
EOD
set terminal pngcairo size {width},520 font "sans,10"
set output '{path}'
set title "{title}"
set ylabel "{ylabel}"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border rgb '#333333'
set boxwidth 0.9
set grid ytics
set key top left horizontal
set xtics rotate by -30 nomirror
set xrange [-0.6:{len(labels) - 0.4}]
{"set logscale y 2" if log2 else ""}
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5
plot {plots}
"""


def plot_suite(suite: dict, results: str) -> list[str]:
    configs = [c["config"] for c in suite["configs"]]
    names = [n for n in ALLOC_ORDER if any(r["allocator"] == n for r in suite["rows"])]
    speed = {(r["config"], r["allocator"]): r["speed_vs_glibc"] for r in suite["rows"]}
    rss = {(r["config"], r["allocator"]): r["rss_vs_glibc"] for r in suite["rows"]}
    tag = " (SMOKE)" if suite.get("smoke") else ""
    date = suite["machine"]["date"][:10]
    scripts = [
        clustered(
            os.path.join(results, "suite_speed.png"),
            f"Throughput relative to glibc (higher is better, log scale) - {date}{tag}",
            "ops/s divided by glibc's",
            configs,
            names,
            speed,
            True,
        ),
        clustered(
            os.path.join(results, "suite_rss.png"),
            f"Peak RSS relative to glibc (lower is better) - {date}{tag}",
            "peak RSS divided by glibc's",
            configs,
            names,
            rss,
            False,
        ),
    ]
    return scripts


def plot_seed(seed: dict, results: str) -> str:
    rows = {r["allocator"]: r for r in seed["rows"]}
    names = [n for n in SEED_ORDER if n in rows]
    tag = " (SMOKE)" if seed.get("smoke") else ""
    # Columns: index, name, M ops/s, P50, P99, colour as 0xRRGGBB (for `lc rgb variable`).
    bars = "\n".join(
        f'{i} "{n}" {rows[n]["mops"]:.5g} {rows[n]["p50"]:.0f} {rows[n]["p99"]:.0f} '
        f'{int(COLOURS.get(n, "#444444")[1:], 16)}'
        for i, n in enumerate(names)
    )
    path = os.path.join(results, "seed.png")
    return f"""
$bars << EOD
{bars}
EOD
set terminal pngcairo size 1100,450 font "sans,10"
set output '{path}'
set multiplot layout 1,2 title "The seed benchmark: 256 KiB blocks, 128 random page touches{tag}"
set style fill solid 0.9 border rgb '#333333'
set boxwidth 0.7
set grid ytics
set xtics rotate by -30 nomirror
set xrange [-0.6:{len(names) - 0.4}]
set yrange [0:*]
unset key
set title "M ops/s (higher is better)"
plot $bars using 1:3:6:xtic(2) with boxes lc rgb variable
set title "cycles per operation: P50 (solid) and P99 (outline), log scale"
set logscale y
set yrange [*:*]
set boxwidth 0.35
plot $bars using ($1-0.18):4:6:xtic(2) with boxes lc rgb variable, \\
     $bars using ($1+0.18):5:6 with boxes fs empty lw 2 lc rgb variable
unset multiplot
"""


def draw(suite: dict | None, seed: dict | None, results: str) -> list[str]:
    """Draws the plots; returns problems (empty when all went well)."""
    if shutil.which("gnuplot") is None:
        return ["gnuplot not found (apt-get install gnuplot-nox): no plots drawn"]
    scripts = []
    if suite and suite.get("rows"):
        scripts += plot_suite(suite, results)
    if seed and seed.get("rows"):
        scripts.append(plot_seed(seed, results))
    problems = []
    for s in scripts:
        try:
            gnuplot(s)
        except subprocess.CalledProcessError as e:
            problems.append(f"gnuplot failed: {e.stderr.strip()[-500:]}")
    return problems


# ---- main ----


def update_readme(readme: str, lines: list[str]) -> None:
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    if README_BEGIN not in text or README_END not in text:
        raise SystemExit(f"{readme}: no results markers ({README_BEGIN} ... {README_END})")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    new = head + README_BEGIN + "\n" + "\n".join(lines) + "\n" + README_END + tail
    tmp = readme + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(tmp, readme)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", required=True,
                   help="directory with suite.json, seed.json, startup.json and idle_rss.json")
    p.add_argument(
        "--readme",
        action="append",
        default=[],
        help="also rewrite the results section of this README (repeatable: bench/README.md, "
        "README.md); links are made relative to the README's directory",
    )
    p.add_argument(
        "--require",
        action="store_true",
        help="fail unless all inputs and plots exist (exit 77, 'skipped', without gnuplot)",
    )
    args = p.parse_args(argv)
    suite = load(os.path.join(args.results, "suite.json"))
    seed = load(os.path.join(args.results, "seed.json"))
    startup = load(os.path.join(args.results, "startup.json"))
    idle = load(os.path.join(args.results, "idle_rss.json"))
    if suite is None and seed is None:
        log(f"error: neither suite.json nor seed.json in {args.results}")
        return 1
    problems = draw(suite, seed, args.results)
    for prob in problems:
        log(f"WARNING: {prob}")
    text = summary(suite, seed, startup, idle, args.results, "bench/results/")
    with open(os.path.join(args.results, "summary.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(text) + "\n")
    for readme in args.readme:
        prefix = os.path.relpath(args.results, os.path.dirname(os.path.abspath(readme))) + "/"
        update_readme(readme, summary(suite, seed, startup, idle, args.results, prefix))
    print("\n".join(text))
    if args.require:
        if shutil.which("gnuplot") is None:
            return 77  # meson's "skipped": everything but the plots was written
        inputs = (("suite.json", suite), ("seed.json", seed), ("startup.json", startup),
                  ("idle_rss.json", idle))
        missing = [n for n, d in inputs if d is None]
        missing += [png for png in PLOTS if not os.path.isfile(os.path.join(args.results, png))]
        if missing or problems:
            log(f"error: missing {missing}, problems {problems}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
