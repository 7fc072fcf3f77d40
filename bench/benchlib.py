# SPDX-License-Identifier: MIT
"""What the benchmark drivers share: the allocators, running children, proving the preloads
took, paired ratios, machine information and formatting.

Used by run_bench.py (the suite), run_seed.py (the seed's 256 KiB benchmark) and report.py.
Only the Python standard library (Debian's python3 3.11).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterator

LIBDIR = "/usr/lib/x86_64-linux-gnu"

# Peers as Debian ships them (libjemalloc2, libmimalloc2.0, libtcmalloc-minimal4).
# glibc is the baseline: no LD_PRELOAD at all.
PEERS = [
    ("glibc", None),
    ("jemalloc", f"{LIBDIR}/libjemalloc.so.2"),
    ("mimalloc", f"{LIBDIR}/libmimalloc.so.2"),
    ("tcmalloc", f"{LIBDIR}/libtcmalloc_minimal.so.4"),
]
PEER_NAMES = [name for name, _ in PEERS if name != "glibc"]

BANNER = "arena: active"
BUSY_LOAD = 1.0  # 1-minute load average at start above which a report carries a warning
SHUFFLE_SEED = 20240601  # fixed, so a rerun uses the same allocator orders


class BenchError(Exception):
    """A child failed, printed garbage, or a preload did not take. Ends the run."""


@dataclass
class Allocator:
    """One row of a report: a library to preload (or none) and extra environment."""

    name: str
    lib: str | None  # None = no preload
    env: dict[str, str] = field(default_factory=dict)  # e.g. ARENA_STATS=0
    bench: str | None = None  # a different program than the driver's default (native arena)
    is_arena: bool = False  # libarena.so: also check its ARENA_VERBOSE banner
    skipped: str | None = None  # why it is not run (library missing), shown in every report
    samples: dict[Any, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def mapped_name(self) -> str | None:
        """What /proc/self/maps shows for the library: the file name after symlinks."""
        return os.path.basename(os.path.realpath(self.lib)) if self.lib else None

    def describe(self) -> str:
        how = f"LD_PRELOAD={self.lib} ({os.path.realpath(self.lib)})" if self.lib else (
            "no LD_PRELOAD"
        )
        if self.env:
            how += " with " + " ".join(f"{k}={v}" for k, v in self.env.items())
        if self.bench:
            how += f", program {os.path.basename(self.bench)}"
        return how


def standard_allocators(arena_lib: str, nostats: bool = False) -> list[Allocator]:
    """glibc, the peers, libarena (and libarena with ARENA_STATS=0); missing peers skipped."""
    allocs = [Allocator(name, lib) for name, lib in PEERS]
    allocs.append(Allocator("libarena", arena_lib, is_arena=True))
    if nostats:
        allocs.append(
            Allocator("libarena-nostats", arena_lib, env={"ARENA_STATS": "0"}, is_arena=True)
        )
    for a in allocs:
        if a.lib and not os.path.isfile(a.lib):
            a.skipped = f"{a.lib} not found"
            log(f"WARNING: SKIPPING {a.name}: {a.skipped} (install it to compare against it)")
    return allocs


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
    env.update(alloc.env)
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


def parse_json_line(
    proc: subprocess.CompletedProcess[str], what: str, keys: tuple[str, ...]
) -> dict[str, Any]:
    """The child's last stdout line as JSON, after checking the exit status and `keys`."""
    if proc.returncode != 0:
        raise BenchError(
            f"{what}: exit status {proc.returncode}\n  stderr:\n{tail(proc.stderr)}"
        )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
        missing = [k for k in keys if k not in result]
    except (IndexError, json.JSONDecodeError, TypeError) as e:
        raise BenchError(
            f"{what}: no JSON result line ({e})\n  stdout:\n{tail(proc.stdout)}"
        ) from e
    if not isinstance(result, dict) or missing:
        raise BenchError(f"{what}: result lacks {missing}: {lines[-1]}")
    return result


# ---- Proving the preloads took ----


def check_preloads(
    allocs: list[Allocator],
    default_bench: str,
    banner_cmd: list[str],
    keys: tuple[str, ...],
    no_banner_check: bool = False,
) -> list[str]:
    """Un-timed checks, once per allocator per driver run. Returns lines for the report.

    Each program must support `--print-maps-match SUBSTR` (exit 0: mapped, 3: not mapped).
    Without a preload, none of the preloaded libraries may be mapped; with one, its library
    must be; libarena must also print its banner under ARENA_VERBOSE=1 when running
    banner_cmd (arguments after the program).
    """
    notes = []
    preloaded = {a.mapped_name for a in allocs if a.lib}
    for alloc in allocs:
        bench = alloc.bench or default_bench
        if alloc.lib is None:
            for other in sorted(preloaded):
                cmd = [bench, "--print-maps-match", other]
                proc = run_child(cmd, child_env(alloc), 30, f"{alloc.name} maps check")
                if proc.returncode != 3:
                    raise BenchError(
                        f"{alloc.name}: expected no {other} in /proc/self/maps "
                        f"(exit 3), got exit {proc.returncode}: {proc.stdout.strip()}"
                        f"{proc.stderr.strip()}"
                    )
            notes.append(f"{alloc.name}: no preload; none of the preloaded libraries mapped")
            continue
        cmd = [bench, "--print-maps-match", alloc.mapped_name]
        proc = run_child(cmd, child_env(alloc), 30, f"{alloc.name} maps check")
        if proc.returncode != 0:
            raise BenchError(
                f"{alloc.name}: LD_PRELOAD={alloc.lib} did not take: {alloc.mapped_name} "
                f"not in the child's /proc/self/maps (exit {proc.returncode})\n"
                f"{tail(proc.stderr)}"
            )
        notes.append(f"{alloc.name}: {proc.stdout.strip()} mapped in the child")

        if alloc.is_arena:
            if no_banner_check:
                notes.append(f"{alloc.name}: banner check skipped (--no-banner-check: a stand-in)")
                continue
            what = f"{alloc.name} banner check (ARENA_VERBOSE=1)"
            proc = run_child(
                [bench] + banner_cmd, child_env(alloc, {"ARENA_VERBOSE": "1"}), 120, what
            )
            parse_json_line(proc, what, keys)
            banner = [ln for ln in proc.stderr.splitlines() if ln.startswith(BANNER)]
            if not banner:
                raise BenchError(
                    f"{what}: no stderr line starting with '{BANNER}', so the preload did "
                    f"not take (or the banner changed)\n  stderr:\n{tail(proc.stderr)}"
                )
            notes.append(f"{alloc.name}: banner seen: {banner[0].strip()}")
    return notes


# ---- Statistics ----


def geomean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def paired_ratio(
    mine: dict[int, float], theirs: dict[int, float]
) -> tuple[float, float, float] | None:
    """(median, min, max) over rounds of mine[round] / theirs[round], rounds paired.

    The two runs of a round are seconds apart, so a slow drift of the machine (another
    tenant's build, frequency changes) cancels out of each ratio; a ratio of medians taken
    over the whole run would keep it.
    """
    ratios = [mine[r] / theirs[r] for r in mine if r in theirs and theirs[r] > 0]
    if not ratios:
        return None
    return statistics.median(ratios), min(ratios), max(ratios)


# ---- Machine and formatting ----


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
    mem_gib = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                    break
    except (OSError, ValueError):
        pass
    load = os.getloadavg()
    # run_all.sh records the load before it starts anything: later drivers would otherwise
    # judge the machine by the load of the benchmarks that ran just before them.
    before = None
    try:
        before = [float(x) for x in os.environ.get("BENCH_LOADAVG_BEFORE", "").split()[:3]]
    except ValueError:
        pass
    before = before if before and len(before) == 3 else None
    verdict = before or load
    return {
        "hostname": platform.node(),
        "kernel": platform.uname().release,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "mem_gib": mem_gib,
        "libc": " ".join(platform.libc_ver()),
        "python": platform.python_version(),
        "loadavg_start": load,
        "loadavg_before_run_all": before,
        "busy": verdict[0] >= BUSY_LOAD,
        "date": now_utc(),
    }


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def machine_line(m: dict[str, Any]) -> str:
    mem = f", {m['mem_gib']} GiB" if m.get("mem_gib") else ""
    return (
        f"Linux {m['kernel']}, {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable)"
        f"{mem}, {m['libc']}"
    )


def allocator_env_vars() -> dict[str, str]:
    """Variables that tune allocators, passed through to every child: worth recording."""
    prefixes = ("MALLOC", "MIMALLOC_", "TCMALLOC_", "JEMALLOC", "ARENA_", "GLIBC_TUNABLES")
    env = base_env()
    return {k: v for k, v in env.items() if k.startswith(prefixes)}


def load_before(m: dict[str, Any]) -> float:
    """The 1-minute load average before the run: before run_all.sh if it ran us."""
    return (m.get("loadavg_before_run_all") or m["loadavg_start"])[0]


def load_line(m: dict[str, Any]) -> str:
    line = (
        f"- load average at start / end: {fmt_load(m['loadavg_start'])} / "
        f"{fmt_load(m['loadavg_end'])}"
    )
    if m.get("loadavg_before_run_all"):
        line += (
            f"; before `run_all.sh` started: {fmt_load(m['loadavg_before_run_all'])} (the "
            "later figures include this run's own earlier benchmarks)"
        )
    return line


def busy_warning(m: dict[str, Any]) -> list[str]:
    if not m["busy"]:
        return []
    return [
        f"**The machine was busy: load average {load_before(m):.2f} before the run, on "
        f"{m['cores']} cores. Other work competed for the cores; treat these numbers as "
        "indicative.**",
        "",
    ]


def fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def fmt_load(load: tuple[float, ...] | list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def check_paths(args: Any, executables: tuple[str, ...] = ("bench",)) -> bool:
    """Makes the paths of the named options (executables) and of --arena absolute in `args`;
    logs an error and returns False when one of them is not there."""
    for attr in executables:
        path = os.path.abspath(getattr(args, attr))
        setattr(args, attr, path)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            log(f"error: --{attr} {path}: not an executable file")
            return False
    args.arena = os.path.abspath(args.arena)
    if not os.path.isfile(args.arena):
        log(f"error: --arena {args.arena}: libarena.so not found (it is required)")
        return False
    return True


@contextlib.contextmanager
def results_dir(out: str | None, smoke: bool, prefix: str) -> Iterator[tuple[str, bool]]:
    """Where a runner writes its reports, and whether that is a temporary directory: `out`
    if given; else, for a smoke run, a temporary directory (removed on exit), so smoke runs
    never overwrite bench/results; else bench/results."""
    if out is not None:
        yield out, False
        return
    if not smoke:
        yield os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"), False
        return
    tmp = tempfile.mkdtemp(prefix=prefix)
    try:
        yield tmp, True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
