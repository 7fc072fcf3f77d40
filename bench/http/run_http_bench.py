#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""HTTP load figures for cmond, side by side with Debian's webhook, in one run.

Starts two cmonds (a throwaway key, the real `uptime` behind GET /health; one with coalescing
on, its default for /health, one with `coalesce = false`) and webhook with a hook running the
same `uptime`, all on 127.0.0.1, then runs wrk against
  - cmond  GET /health, coalesce on  (requests that arrive during a run share the next run)
  - cmond  GET /health, coalesce off (one uptime per request)
  - webhook GET /hooks/health        (one uptime per request)
  - cmond  GET /metrics              (no process; includes the arena_* families)
interleaved for several rounds, so that background load on the machine hits all alike, plus
(optionally) spawn_ceiling: posix_spawn of uptime in a loop with no HTTP at all, the ceiling of
any daemon that runs a program per request. Every wrk run must see only 2xx answers.

Prints a Markdown table; writes it to --out when given. --smoke: 1 s runs, one round, for CI.
Exit status 77 (meson: skipped) when wrk or webhook is missing.
"""

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    CONNECTIONS,
    THREADS,
    launch_cmond,
    metric,
    run_wrk,
    start_webhook,
    stop,
    write_key,
)


def start_cmond(cmond, tmp, coalesce):
    """cmond with the real uptime behind /health; its stats page (it runs on libarena) and the
    pages its /metrics reads are in tmp/stats, not the machine's /dev/shm/arena."""
    name = "coalesce-on" if coalesce else "coalesce-off"
    home = os.path.join(tmp, name)
    os.makedirs(home)
    key = write_key(home)
    # The real command; concurrency above wrk's connection count so that no request is
    # refused with 429 (the default limit for health is 8; waiting requests count too),
    # and threads above the sum of all commands' limits.
    config = ("key_file = client_secret.key\nsyslog = false\n"
              f"threads = {CONNECTIONS + 14}\n"
              f"[command health]\nargv = [\"uptime\"]\nconcurrency = {CONNECTIONS + 2}\n"
              f"coalesce = {'true' if coalesce else 'false'}\n")
    proc, base = launch_cmond(cmond, home, config, os.path.join(tmp, "stats"))
    return proc, base, key


def run_ceiling(binary, seconds):
    out = subprocess.run([binary, "4", str(seconds), "uptime"], capture_output=True, text=True,
                         check=True).stdout
    return float(out.strip())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cmond", required=True, help="path to the cmond binary")
    ap.add_argument("--spawn-ceiling", help="path to the spawn_ceiling helper (optional)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="1 s runs, one round, nothing written")
    ap.add_argument("--out", help="write the Markdown report here")
    args = ap.parse_args()
    if args.smoke:
        args.duration, args.rounds = 1, 1
    for tool in ("wrk", "webhook", "uptime"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: skipping (apt-get install wrk webhook procps)")
            return 77

    on, off = "cmond GET /health, coalesce on", "cmond GET /health, coalesce off"
    hook, scrape, spawn = ("webhook GET /hooks/health", "cmond GET /metrics",
                           "posix_spawn(uptime) loop, no HTTP")
    rows = {on: [], off: [], hook: [], scrape: [], spawn: []}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="cmond-bench-") as tmp:
        daemons = []
        try:
            cmond_on, on_url, on_key = start_cmond(args.cmond, tmp, True)
            daemons.append(cmond_on)
            cmond_off, off_url, off_key = start_cmond(args.cmond, tmp, False)
            daemons.append(cmond_off)
            webhook, webhook_url = start_webhook(tmp)
            daemons.append(webhook)
            on_auth, off_auth = {"access_token": on_key}, {"access_token": off_key}
            # Warm everything up (page cache, thread pools) before measuring.
            run_wrk(on_url + "/health", 1, on_auth)
            run_wrk(off_url + "/health", 1, off_auth)
            run_wrk(webhook_url + "/hooks/health", 1)
            requests_series = 'cmond_http_requests_total{code="200",route="/health"}'
            runs_series = 'cmond_command_runs_total{command="health",result="ok"}'
            requests0 = metric(on_url, on_key, requests_series)
            runs0 = metric(on_url, on_key, runs_series)
            for r in range(args.rounds):
                rows[on].append(run_wrk(on_url + "/health", args.duration, on_auth))
                rows[off].append(run_wrk(off_url + "/health", args.duration, off_auth))
                rows[hook].append(run_wrk(webhook_url + "/hooks/health", args.duration))
                rows[scrape].append(run_wrk(on_url + "/metrics", args.duration, on_auth))
                if args.spawn_ceiling:
                    rows[spawn].append((run_ceiling(args.spawn_ceiling, args.duration), None))
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
            shared_requests = metric(on_url, on_key, requests_series) - requests0
            shared_runs = metric(on_url, on_key, runs_series) - runs0
            # What one scrape spends reading the stats pages (the arena_* families).
            scrape_ms = statistics.median(
                metric(on_url, on_key, "cmond_arena_scrape_duration_seconds") * 1e3
                for _ in range(21))
            pages = metric(on_url, on_key, "cmond_arena_pages_read")
        finally:
            for proc in daemons:
                stop(proc)
        for proc in (cmond_on, cmond_off):
            if proc.returncode != 0:
                raise RuntimeError(f"cmond exited with {proc.returncode} after SIGTERM")

    load_after = os.getloadavg()[0]
    median_rps = {k: statistics.median(x[0] for x in v) for k, v in rows.items() if v}
    webhook_rps = median_rps[hook]
    lines = [
        "| target | req/s (median) | req/s per round | p99 ms (median) | vs webhook |",
        "|---|---:|---|---:|---:|",
    ]
    for name, results in rows.items():
        if not results:
            continue
        per_round = ", ".join(f"{x[0]:.0f}" for x in results)
        p99s = [x[1] for x in results if x[1] is not None]
        p99 = f"{statistics.median(p99s):.2f}" if p99s else "–"
        ratio = f"{median_rps[name] / webhook_rps:.2f}x" if name != scrape else "–"
        lines.append(f"| {name} | {median_rps[name]:.0f} | {per_round} | {p99} | {ratio} |")
    table = "\n".join(lines)
    per_run = shared_requests / shared_runs if shared_runs else 0
    notes = [f"With coalescing, {shared_requests:.0f} requests to /health were answered by "
             f"{shared_runs:.0f} runs of uptime ({per_run:.1f} requests per run), every one "
             "from a run that started after the request arrived."]
    notes.append(f"Each /metrics scrape reads {pages:.0f} stats pages (both cmonds run on "
                 f"libarena) through the shared reader: {scrape_ms:.2f} ms of every scrape "
                 "(median of cmond_arena_scrape_duration_seconds).")
    ceiling = median_rps.get(spawn)
    if ceiling:
        notes.append(
            f"Without coalescing, cmond's /health reaches {median_rps[off] / ceiling:.0%} of the "
            f"spawn ceiling, webhook {webhook_rps / ceiling:.0%}. Twice webhook is "
            f"{2 * webhook_rps:.0f} req/s, "
            + ("above" if 2 * webhook_rps > ceiling else "below")
            + f" the ceiling of {ceiling:.0f} spawns/s measured in the same run.")
    notes = "\n\n".join(notes)
    print(table)
    print(notes)

    if args.out and not args.smoke:
        uname = platform.uname()
        report = f"""# HTTP load figures: cmond vs webhook

Generated by `bench/http/run_http_bench.py` (`meson test -C build --benchmark http_load`) on
{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')},
{os.cpu_count()} CPUs, Linux {uname.release}; 1-minute load average {load_before:.2f} before the
run and {load_after:.2f} after it (other work on the machine moves single rounds).

Each row: `wrk -t{THREADS} -c{CONNECTIONS} -d{args.duration}s --latency` on 127.0.0.1,
{args.rounds} rounds interleaved (cmond /health with coalescing on, the same with it off,
webhook, cmond /metrics, spawn loop), so background load hits every target alike. Every
request is answered from a run of the real `uptime` that started after the request arrived:
webhook (Debian's package, with `include-command-output-in-response`) and cmond with
`coalesce = false` start one per request; cmond with coalescing (its default for /health)
lets the requests that arrive while `uptime` runs share the next run (see cmond/README.md,
"Shared runs"). Both cmonds run on libarena, log every request to a file and have
`concurrency = {CONNECTIONS + 2}` for health (above wrk's {CONNECTIONS} connections; the
default of 8 would answer some requests 429). Every run saw only 2xx answers. The last row is
no daemon at all: 4 threads running `posix_spawn(uptime)` back to back, the ceiling of anything
that runs a program per request on this machine.

{table}

{notes}
"""
        with open(args.out, "w") as f:
            f.write(report)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
