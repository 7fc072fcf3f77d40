#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A soak of cmond: legitimate load and a bounded hostile population, together, for a while.

One cmond (on libarena, as built) on 127.0.0.1 with a harmless command table: GET /health runs
`uptime` (coalesced, as by default), GET /logs runs `cat` of a small file (one process per
request), every other command is `true` and disabled. Then, in order:

1. Throughput: GET /health of cmond vs webhook's /hooks/health running the same `uptime`, as
   run_http_bench.py measures it (wrk -t2 -c10, rounds interleaved; median req/s). Target:
   cmond >= 2x webhook. Before the soak, so that neither the soak nor its hostile clients are
   in these figures.
2. The soak: the hostile population starts, and a second later the legitimate load, for
   --duration seconds, all at the same time:
   - legitimate load: one wrk process per route (GET /health, GET /metrics with
     `Authorization: Bearer`, GET /logs, and GET /health with a wrong key, which must be 401),
     one connection per wrk thread, each pausing between requests (a moderate rate); every
     answer must have the expected status, and no request may fail at the socket level, take
     longer than --legit-timeout, or be written and never answered;
   - a hostile population, each client holding at most one connection: slowloris clients (a
     partial head, then one header line every --slow-interval seconds, reconnecting when
     closed), silent clients (connect, send nothing, reconnect when closed), clients sending
     1 MiB of header lines, and clients sending bodies (64 KiB, 1 MiB, chunked 256 KiB) with a
     wrong key; the bytes they may send in all are capped (--hostile-mib);
   - cmond's VmRSS, thread count and open descriptors, every --rss-interval seconds. The start
     figure is taken after --warmup seconds of the soak, the end figure when the legitimate
     load ends (hostile clients still connected). Flat: end <= start * (1 + --rss-ratio) +
     --rss-slack-mib.
3. Shutdown: SIGTERM to cmond with the hostile population still connected; the time to exit.

Writes soak.json (every figure, the RSS samples, the environment) and soak.md (tables) into
--out, prints the tables. Exit status 1 when a check fails (legitimate errors, RSS not flat,
cmond died, shutdown not within shutdown_timeout + 5 s), 2 on a usage error, 77 when wrk,
webhook or uptime is missing. Every process it starts is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import logging
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from benchlib import (  # noqa: E402
    busy_warning,
    load_line,
    log,
    machine_info,
    machine_line,
    now_utc,
    write_json,
)
from common import (  # noqa: E402
    CONNECTIONS,
    THREADS,
    launch_cmond,
    run_wrk,
    start_webhook,
    stop,
    write_key,
)

HOST = "127.0.0.1"
SHUTDOWN_TIMEOUT = 10  # cmond's default shutdown_timeout, seconds; the soak does not change it
SHUTDOWN_GRACE = 5  # seconds past SHUTDOWN_TIMEOUT before the exit counts as late
THROUGHPUT_TARGET = 2.0  # cmond /health vs webhook, from issue 13
HOSTILE_HEAD_START = 1.0  # seconds the hostile clients run before the legitimate load starts


@dataclass
class Route:
    """One wrk process of the legitimate load."""

    name: str
    path: str
    credential: str  # access_token, bearer or wrong (a well-formed key that is not cmond's)
    expect: int  # the status every answer must have
    connections: int  # = wrk threads: one connection per thread (see LEGIT_LUA)
    pause_ms: int  # between an answer and the next request on the same connection


# About 90 + 10 + 20 + 10 requests/s when cmond keeps up: a busy operator's load, not a
# benchmark. The wrong-key route must stay 401: the soak raises auth_max_failures so that the
# address is never blocked (every client here is 127.0.0.1).
ROUTES = [
    Route("health", "/health", "access_token", 200, 2, 20),
    Route("metrics", "/metrics", "bearer", 200, 1, 100),
    Route("logs", "/logs", "access_token", 200, 1, 50),
    Route("wrong key", "/health", "wrong", 401, 1, 100),
]

# One connection per wrk thread, so that per thread a request written and not answered is
# either the one still in flight at the end (at most one) or lost: wrk itself counts neither
# (it reconnects silently when the server closes a connection, writing the request again, and
# stops without waiting for requests in flight). The credential comes from the environment,
# not the command line.
LEGIT_LUA = r"""
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    expect = tonumber(args[2])
    pause = tonumber(args[3])
    local headers = {}
    if args[4] ~= "" then
        headers[args[4]] = os.getenv("SOAK_CREDENTIAL")
    end
    req = wrk.format("GET", args[1], headers)
    sent, answered, unexpected, last_sent = 0, 0, 0, 0
    codes = {}
end

function delay()
    started = true
    return pause
end

-- wrk calls request() once in the first thread to check the script, before any connection;
-- every real first request on a connection comes after a delay() (wrk starts connections
-- delayed), so that call is the only one made before `started`.
function request()
    if started then
        sent = sent + 1
        last_sent = os.time()
    end
    return req
end

function response(status, headers, body)
    answered = answered + 1
    if status ~= expect then
        unexpected = unexpected + 1
    end
    local k = tostring(status)
    codes[k] = (codes[k] or 0) + 1
end

function done(summary, latency, requests)
    local per_thread = {}
    for _, t in ipairs(threads) do
        local c = {}
        for k, v in pairs(t:get("codes") or {}) do
            table.insert(c, string.format('"%s": %d', k, v))
        end
        table.insert(per_thread, string.format(
            '{"sent": %d, "answered": %d, "unexpected": %d, "last_sent": %d, "codes": {%s}}',
            t:get("sent"), t:get("answered"), t:get("unexpected"), t:get("last_sent"),
            table.concat(c, ", ")))
    end
    local lat = "null"
    if summary.requests > 0 then
        lat = string.format(
            '{"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, "mean": %.1f}',
            latency:percentile(50), latency:percentile(90), latency:percentile(99),
            latency:percentile(99.9), latency.max, latency.mean)
    end
    local e = summary.errors
    io.write(string.format(
        'SOAKJSON {"now": %d, "duration_us": %d, "requests": %d, "errors": {"connect": %d, ' ..
        '"read": %d, "write": %d, "status": %d, "timeout": %d}, "latency_us": %s, ' ..
        '"threads": [%s]}\n',
        os.time(), summary.duration, summary.requests, e.connect, e.read, e.write, e.status,
        e.timeout, lat, table.concat(per_thread, ", ")))
end
"""


# ---- cmond and the environment ----


def cmond_config(home):
    """Harmless commands only: the hostile clients call POST /reboot (with a wrong key), and a
    bug in authentication must not reboot the machine."""
    logs = os.path.join(home, "logs.txt")
    with open(logs, "w") as f:
        for i in range(60):
            f.write(f"soak log line {i:02d}: nothing happened here, as usual\n")
    harmless = "".join(f"[command {name}]\nargv = [\"true\"]\nenabled = false\n"
                       for name in ("reboot", "sync_upstream", "deploy_branch",
                                    "teardown_branch"))
    # threads and the health concurrency as run_http_bench.py has them (wrk -c10 must not see
    # 429); the limiter is out of the way (all clients share 127.0.0.1; see ROUTES).
    return ("key_file = client_secret.key\nsyslog = false\n"
            f"threads = {CONNECTIONS + 14}\n"
            "auth_max_failures = 1000000\nauth_failure_window = 1s\n"
            f"[command health]\nargv = [\"uptime\"]\nconcurrency = {CONNECTIONS + 2}\n"
            "coalesce = true\n"
            f"[command logs]\nargv = [\"cat\", {json.dumps(logs)}]\nconcurrency = 4\n"
            "coalesce = false\n" + harmless)


def git_commit():
    def git(*args):
        return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True,
                              check=False).stdout.strip()
    head = git("rev-parse", "HEAD") or None
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": head, "dirty": dirty}


def binary_info(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    st = os.stat(path)
    version = subprocess.run([path, "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    return {"path": path, "sha256": h.hexdigest(), "size": st.st_size,
            "mtime": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(st.st_mtime)),
            "version": version}


def tool_version(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).strip().splitlines()[0] if (out.stdout + out.stderr) else ""


def proc_sample(pid):
    """VmRSS and VmHWM (KiB), threads and open descriptors of a live process, else None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    return {"rss_kib": int(status["VmRSS"].split()[0]),
            "hwm_kib": int(status["VmHWM"].split()[0]),
            "threads": int(status["Threads"]), "fds": fds}


def http_counts(base, key, timeout=5.0):
    """cmond_http_requests_total by (route, code), or None when /metrics does not answer."""
    req = urllib.request.Request(base + "/metrics", headers={"access_token": key})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read().decode()
    except OSError as e:
        return {"error": str(e)}
    counts = {}
    for m in re.finditer(r'^cmond_http_requests_total\{(.*)\} (\S+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        counts[f"{labels.get('code')} {labels.get('route')}"] = float(m.group(2))
    return {"counts": counts}


# ---- Throughput: cmond vs webhook, before the soak ----


def throughput(base, key, tmp, seconds, rounds):
    """GET /health req/s of cmond (coalescing) and webhook, medians over interleaved rounds."""
    result: dict[str, Any] = {"seconds": seconds, "rounds": rounds,
                              "wrk": f"-t{THREADS} -c{CONNECTIONS}"}
    if rounds <= 0:
        result["skipped"] = True
        return result
    webhook = None
    try:
        webhook, webhook_url = start_webhook(tmp)
        auth = {"access_token": key}
        run_wrk(base + "/health", 1, auth)  # warm-up: page cache, thread pools
        run_wrk(webhook_url + "/hooks/health", 1)
        cm, wh = [], []
        for r in range(rounds):
            cm.append(run_wrk(base + "/health", seconds, auth))
            wh.append(run_wrk(webhook_url + "/hooks/health", seconds))
            log(f"throughput round {r + 1}/{rounds}: cmond {cm[-1][0]:.0f} req/s, "
                f"webhook {wh[-1][0]:.0f} req/s")
    except (RuntimeError, subprocess.CalledProcessError) as e:
        result["error"] = str(e)
        return result
    finally:
        if webhook is not None:
            stop(webhook)
    result["cmond_rps"] = [x[0] for x in cm]
    result["webhook_rps"] = [x[0] for x in wh]
    result["cmond_p99_ms"] = [x[1] for x in cm]
    result["webhook_p99_ms"] = [x[1] for x in wh]
    result["cmond_median_rps"] = statistics.median(result["cmond_rps"])
    result["webhook_median_rps"] = statistics.median(result["webhook_rps"])
    result["ratio"] = result["cmond_median_rps"] / result["webhook_median_rps"]
    return result


# ---- The hostile population ----


@dataclass
class Population:
    """Tallies of one kind of hostile client."""

    name: str
    clients: int
    what: str
    connects: int = 0
    connect_failures: int = 0
    open_now: int = 0
    max_open: int = 0
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    lifetimes: list = field(default_factory=list)  # connect -> the server's answer or close
    bytes_sent: int = 0
    bytes_received: int = 0
    open_at_end: int = 0

    def summary(self):
        life = sorted(self.lifetimes)
        return {
            "clients": self.clients, "what": self.what, "connects": self.connects,
            "connect_failures": self.connect_failures, "max_open": self.max_open,
            "open_at_end": self.open_at_end,
            "outcomes": dict(self.outcomes.most_common()),
            "server_ended": len(life),
            "seconds_to_server_end_median": statistics.median(life) if life else None,
            "seconds_to_server_end_max": life[-1] if life else None,
            "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
        }


class Hostile:
    """Runs the populations on the event loop until stop(); caps bytes sent in all."""

    def __init__(self, port, args, rng):
        self.port = port
        self.args = args
        self.rng = rng
        self.byte_cap = args.hostile_mib << 20
        self.bytes_sent = 0
        self.cap_reached_at = None
        self.t0 = time.monotonic()
        self.pops = {
            "slowloris": Population("slowloris", args.slowloris,
                                    f"partial head, one header line every {args.slow_interval} s"),
            "silent": Population("silent", args.silent, "connect, send nothing"),
            "oversize": Population("oversize", args.oversize,
                                   "1 MiB of header lines, then wait for the answer"),
            "bodies": Population("bodies", args.bodies,
                                 "wrong key with a body: 64 KiB, 1 MiB, chunked 256 KiB"),
        }
        self.tasks: list[asyncio.Task] = []
        self.stopped = False

    def start(self):
        workers = ([self.slowloris] * self.args.slowloris + [self.silent] * self.args.silent +
                   [self.oversize] * self.args.oversize + [self.bodies] * self.args.bodies)
        for i, w in enumerate(workers):
            self.tasks.append(asyncio.create_task(w(i)))

    async def stop(self):
        self.stopped = True
        for pop in self.pops.values():
            pop.open_at_end = pop.open_now
        # Cancel until every task is done: the workers also test `stopped`, in case a
        # cancellation is swallowed somewhere in the stack.
        pending = set(self.tasks)
        while pending:
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=1)

    def summary(self):
        return {"populations": {k: p.summary() for k, p in self.pops.items()},
                "bytes_sent": self.bytes_sent, "byte_cap": self.byte_cap,
                "byte_cap_reached_after_s": self.cap_reached_at,
                "reconnect_delay_s": self.args.reconnect_delay}

    # -- plumbing --

    def spend(self, pop, n):
        """Counts n bytes about to be sent; False once the cap is reached."""
        if self.bytes_sent + n > self.byte_cap:
            if self.cap_reached_at is None:
                self.cap_reached_at = round(time.monotonic() - self.t0, 1)
            return False
        self.bytes_sent += n
        pop.bytes_sent += n
        return True

    async def connect(self, pop):
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
            # that arrives as the connection completes (a soak once hung on it at the end).
            async with asyncio.timeout(10):
                reader, writer = await asyncio.open_connection(HOST, self.port)
        except (OSError, TimeoutError):
            pop.connect_failures += 1
            await asyncio.sleep(self.args.reconnect_delay)
            return None
        pop.connects += 1
        pop.open_now += 1
        pop.max_open = max(pop.max_open, pop.open_now)
        return reader, writer

    def close(self, pop, writer):
        pop.open_now -= 1
        writer.transport.abort()  # no lingering FIN handshake: the soak does not wait

    async def read_answer(self, pop, reader, head_only):
        """Reads until the server closes, or (head_only) until one response head is in.
        Returns (how, first bytes): how is eof, reset or head."""
        data = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return "eof", data
                pop.bytes_received += len(chunk)
                if len(data) < 4096:
                    data += chunk[:4096 - len(data)]
                if head_only and b"\r\n\r\n" in data:
                    return "head", data
        except OSError:  # ECONNRESET mostly
            return "reset", data

    def record(self, pop, how, data, t_connect):
        m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        if m:
            label = m.group(1).decode() + (", closed" if how == "eof" else
                                           ", reset" if how == "reset" else "")
        else:
            label = {"eof": "closed, no answer", "reset": "reset, no answer"}.get(how, how)
        pop.outcomes[label] += 1
        pop.lifetimes.append(round(time.monotonic() - t_connect, 3))

    async def pause(self, seconds):
        await asyncio.sleep(seconds * self.rng.uniform(0.8, 1.2))

    # -- the clients --

    async def slowloris(self, i):
        pop = self.pops["slowloris"]
        head = f"GET /health HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: soak-slowloris\r\n".encode()
        while not self.stopped:
            conn = await self.connect(pop)
            if conn is None:
                continue
            reader, writer = conn
            t = time.monotonic()
            answer = asyncio.create_task(self.read_answer(pop, reader, False))
            try:
                if self.spend(pop, len(head)):
                    writer.write(head)
                line = 0
                while not answer.done():
                    await asyncio.wait({answer}, timeout=self.args.slow_interval *
                                       self.rng.uniform(0.8, 1.2))
                    # A few thousand lines at most: far past any sane limit on the number of
                    # header fields, still small.
                    if answer.done() or line >= 4096:
                        continue
                    text = f"X-Slow-{line}: {i}\r\n".encode()
                    if self.spend(pop, len(text)):
                        writer.write(text)
                        await writer.drain()
                    line += 1
                self.record(pop, *answer.result(), t)
            except OSError:
                self.record(pop, "reset", b"", t)
            finally:
                answer.cancel()
                self.close(pop, writer)
            await self.pause(self.args.reconnect_delay)

    async def silent(self, i):
        pop = self.pops["silent"]
        while not self.stopped:
            conn = await self.connect(pop)
            if conn is None:
                continue
            reader, writer = conn
            t = time.monotonic()
            try:
                self.record(pop, *(await self.read_answer(pop, reader, False)), t)
            finally:
                self.close(pop, writer)
            await self.pause(self.args.reconnect_delay)

    async def send_then_answer(self, pop, pieces):
        """One connection: sends the pieces (stopping when the server answers or closes) and
        waits up to 15 s for the answer's head."""
        conn = await self.connect(pop)
        if conn is None:
            return
        reader, writer = conn
        t = time.monotonic()
        answer = asyncio.create_task(self.read_answer(pop, reader, True))

        async def send():
            for piece in pieces:
                if answer.done() or not self.spend(pop, len(piece)):
                    break
                writer.write(piece)
                await writer.drain()
        try:
            try:
                # A server that neither reads nor answers would block drain() for good.
                async with asyncio.timeout(20):
                    await send()
            except TimeoutError:
                pop.outcomes["server stopped reading for 20 s"] += 1
            done, _ = await asyncio.wait({answer}, timeout=15)
            if done:
                self.record(pop, *answer.result(), t)
            else:
                pop.outcomes["no answer in 15 s"] += 1
        except OSError:
            # The server stopped reading: its answer, if any, may still be readable.
            done, _ = await asyncio.wait({answer}, timeout=5)
            self.record(pop, *(answer.result() if done else ("reset", b"")), t)
        finally:
            answer.cancel()
            self.close(pop, writer)

    async def oversize(self, i):
        pop = self.pops["oversize"]
        line = b"X-Pad-%05d: " + b"a" * 1000 + b"\r\n"
        block = b"".join(line % n for n in range(64))  # ~64 KiB
        pieces = ([f"GET /health HTTP/1.1\r\nHost: {HOST}\r\n".encode()] +
                  [block] * 16 + [b"\r\n"])
        while not self.stopped:
            if self.cap_reached_at is not None:
                await asyncio.sleep(3600)
            await self.send_then_answer(pop, pieces)
            await self.pause(self.args.hostile_pause)

    async def bodies(self, i):
        pop = self.pops["bodies"]
        wrong = self.args.wrong_key
        n = i
        while not self.stopped:
            kind = n % 3
            n += 1
            if self.cap_reached_at is not None:
                await asyncio.sleep(3600)
            if kind == 0:  # a body no route takes, under the 64 KiB limit
                pieces = [(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\naccess_token: {wrong}\r\n"
                           "Content-Length: 65536\r\n\r\n").encode()] + [b"b" * 16384] * 4
            elif kind == 1:  # over the limit
                pieces = [(f"POST /reboot HTTP/1.1\r\nHost: {HOST}\r\naccess_token: {wrong}\r\n"
                           "Content-Length: 1048576\r\n\r\n").encode()] + [b"b" * 65536] * 16
            else:  # chunked, over the limit
                chunk = b"1000\r\n" + b"c" * 4096 + b"\r\n"
                pieces = [(f"POST /reboot HTTP/1.1\r\nHost: {HOST}\r\n"
                           f"Authorization: Bearer {wrong}\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n").encode()]
                pieces += [chunk * 16] * 4 + [b"0\r\n\r\n"]
            await self.send_then_answer(pop, pieces)
            await self.pause(self.args.hostile_pause)


# ---- The legitimate load ----


async def run_route(route, url, seconds, lua, key, wrong_key, timeout):
    credential = {"access_token": ("access_token", key),
                  "bearer": ("Authorization", f"Bearer {key}"),
                  "wrong": ("access_token", wrong_key)}[route.credential]
    cmd = ["wrk", f"-t{route.connections}", f"-c{route.connections}", f"-d{seconds}s",
           f"--timeout={timeout}s", "-s", lua, url + route.path, "--",
           route.path, str(route.expect), str(route.pause_ms), credential[0]]
    env = dict(os.environ, SOAK_CREDENTIAL=credential[1])
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    m = re.search(r"^SOAKJSON (.*)$", out.decode(errors="replace"), re.M)
    if proc.returncode != 0 or not m:
        return {"error": f"wrk exited {proc.returncode}: {err.decode(errors='replace')[-500:]}"}
    return json.loads(m.group(1))


def judge_route(route, raw, seconds, timeout):
    """Errors of one route: unexpected statuses, wrk's socket errors and timeouts, requests
    still unanswered at the end after longer than the timeout (stuck), and requests written
    and never answered (lost: the connection was closed under them)."""
    if "error" in raw:
        return {"route": route.name, "error": raw["error"], "errors_total": 1}
    codes = collections.Counter()
    sent = answered = unexpected = stuck = lost = 0
    stuck_s = 0
    for t in raw["threads"]:
        codes.update({int(k): v for k, v in t["codes"].items()})
        sent += t["sent"]
        answered += t["answered"]
        unexpected += t["unexpected"]
        pending = t["sent"] - t["answered"]
        in_flight = 1 if pending > 0 else 0
        if in_flight and raw["now"] - t["last_sent"] >= timeout:
            stuck += 1
            stuck_s = max(stuck_s, raw["now"] - t["last_sent"])
        lost += max(0, pending - in_flight)
    e = raw["errors"]
    socket_errors = e["connect"] + e["read"] + e["write"]
    errors = unexpected + socket_errors + e["timeout"] + stuck + lost
    if answered == 0:
        errors += 1  # nothing answered at all is a failure whatever else wrk says
    lat = raw["latency_us"] or {}
    ms = {k: (lat[k] / 1000 if k in lat else None) for k in ("p50", "p90", "p99", "p999", "max")}
    return {
        "route": route.name, "path": route.path, "credential": route.credential,
        "expect": route.expect, "connections": route.connections, "pause_ms": route.pause_ms,
        "sent": sent, "answered": answered, "rps": answered / seconds,
        "codes": {str(k): v for k, v in sorted(codes.items())}, "unexpected": unexpected,
        "socket_errors": {k: e[k] for k in ("connect", "read", "write")},
        "timeouts": e["timeout"], "stuck_at_end": stuck, "stuck_longest_s": stuck_s, "lost": lost,
        "latency_ms": ms, "errors_total": errors,
    }


# ---- The soak ----


async def soak(args, proc, base, key, tmp):
    port = int(base.rsplit(":", 1)[1])
    lua = os.path.join(tmp, "legit.lua")
    with open(lua, "w") as f:
        f.write(LEGIT_LUA)
    hostile = Hostile(port, args, random.Random(13))
    samples = []
    t0 = time.monotonic()
    result: dict[str, Any] = {}
    died = None

    def sample(tag=None):
        nonlocal died
        s = proc_sample(proc.pid) if proc.poll() is None else None
        if s is None:
            died = died or {"after_s": round(time.monotonic() - t0, 1),
                            "status": proc.poll()}
            return None
        s["t"] = round(time.monotonic() - t0, 1)
        if tag:
            s["tag"] = tag
        samples.append(s)
        return s

    async def sampler():
        while True:
            await asyncio.sleep(args.rss_interval)
            sample()

    routes: list[asyncio.Task] = []
    sampling = asyncio.create_task(sampler())
    try:
        sample("before the soak")
        # The attack is under way when the legitimate clients arrive, as it would be for an
        # operator's curl: no legitimate connection is in place before the hostile ones.
        hostile.start()
        await asyncio.sleep(HOSTILE_HEAD_START)
        routes = [asyncio.create_task(run_route(r, base, args.duration, lua, key,
                                                args.wrong_key, args.legit_timeout))
                  for r in ROUTES]
        sample("legitimate load starts")
        await asyncio.sleep(args.warmup)
        result["rss_start"] = sample("start (after warm-up)")
        log(f"warm-up over; soaking for {args.duration - args.warmup} s more")
        raws = await asyncio.gather(*routes)
        result["rss_end"] = sample("end")
        sampling.cancel()
        result["legit"] = [judge_route(r, raw, args.duration, args.legit_timeout)
                           for r, raw in zip(ROUTES, raws)]
        result["http_counts_end"] = await asyncio.to_thread(http_counts, base, key)
        # Shutdown with the hostile population still connected.
        t = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            limit = SHUTDOWN_TIMEOUT + SHUTDOWN_GRACE
            while proc.poll() is None and time.monotonic() - t < limit:
                await asyncio.sleep(0.05)
            exited = proc.poll() is not None
            result["shutdown"] = {"seconds": round(time.monotonic() - t, 2), "exited": exited,
                                  "status": proc.poll(), "limit_s": limit}
            if not exited:
                proc.kill()
                proc.wait()
    finally:
        sampling.cancel()
        await hostile.stop()
        for task in routes:
            task.cancel()
        await asyncio.gather(*routes, sampling, return_exceptions=True)
    result["hostile"] = hostile.summary()
    result["rss_samples"] = samples
    result["died"] = died
    return result


# ---- Report ----


def rss_verdict(res, args):
    start, end = res.get("rss_start"), res.get("rss_end")
    if not start or not end:
        return {"flat": False, "why": "cmond was not alive for both samples"}
    live = [s for s in res["rss_samples"] if s["t"] >= start["t"]]
    limit = start["rss_kib"] * (1 + args.rss_ratio) + args.rss_slack_mib * 1024
    slope = None
    if len(live) >= 3:
        ts = [s["t"] for s in live]
        ys = [s["rss_kib"] for s in live]
        tm, ym = statistics.mean(ts), statistics.mean(ys)
        den = sum((x - tm) ** 2 for x in ts)
        slope = sum((x - tm) * (y - ym) for x, y in zip(ts, ys)) / den * 60 if den else None
    return {
        "start_kib": start["rss_kib"], "end_kib": end["rss_kib"],
        "max_kib": max(s["rss_kib"] for s in live), "ratio": end["rss_kib"] / start["rss_kib"],
        "limit_kib": round(limit), "flat": end["rss_kib"] <= limit,
        "slope_kib_per_min": slope,
        "threshold": f"end <= start * {1 + args.rss_ratio:.2f} + {args.rss_slack_mib} MiB",
        "fds": {"start": start["fds"], "end": end["fds"], "max": max(s["fds"] for s in live)},
        "threads": {"start": start["threads"], "end": end["threads"],
                    "max": max(s["threads"] for s in live)},
        "hwm_kib_end": end["hwm_kib"],
    }


def mib(kib):
    return f"{kib / 1024:.1f}"


def fmt_ms(x):
    return "–" if x is None else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def render(report):
    r = report
    m = r["machine"]
    lines = [
        "# cmond soak",
        "",
        f"Generated by `{r['command']}` on {m['date']}: {machine_line(m)}.",
        load_line(m),
        f"- commit {r['git']['commit']}{' (with uncommitted changes)' if r['git']['dirty'] else ''}"
        f"; cmond {r['cmond']['path']} ({r['cmond']['version']}, built {r['cmond']['mtime']}, "
        f"sha256 {r['cmond']['sha256'][:12]})",
        f"- {r['duration_s']} s of mixed load on 127.0.0.1 (warm-up {r['warmup_s']} s), "
        f"hostile clients alongside for the whole time; cmond's settings are the defaults "
        f"except `threads = {CONNECTIONS + 14}`, /health's concurrency {CONNECTIONS + 2} (as in "
        "run_http_bench.py) and the authentication limiter out of the way (every client is "
        "127.0.0.1).",
    ]
    if r["note"]:
        lines.append(f"- note: {r['note']}")
    lines.append("")
    lines += busy_warning(m)
    lines += ["| check | result | figures |", "|---|---|---|"]
    for c in r["checks"]:
        lines.append(f"| {c['name']} | {'pass' if c['ok'] else '**FAIL**'}"
                     f"{'' if c['counts'] else ' (not counted)'} | {c['detail']} |")
    lines += [
        "",
        "## Legitimate load (wrk, one connection per thread, a pause between requests)",
        "",
        "| route | expect | conns, pause | answered | req/s | p50 ms | p99 ms | max ms | "
        "errors | answers |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for x in r["legit"]:
        if "error" in x:
            lines.append(f"| {x['route']} | | | | | | | | {x['error']} | |")
            continue
        errs = []
        if x["unexpected"]:
            errs.append(f"{x['unexpected']} unexpected status")
        errs += [f"{v} {k}" for k, v in x["socket_errors"].items() if v]
        if x["timeouts"]:
            errs.append(f"{x['timeouts']} over {r['legit_timeout_s']} s")
        if x["stuck_at_end"]:
            errs.append(f"{x['stuck_at_end']} stuck at the end (unanswered for up to "
                        f"{x['stuck_longest_s']} s)")
        if x["lost"]:
            errs.append(f"{x['lost']} lost")
        if x["answered"] == 0:
            errs.append("nothing answered")
        lat = x["latency_ms"]
        codes = ", ".join(f"{k} x{v}" for k, v in x["codes"].items()) or "none"
        lines.append(
            f"| GET {x['path']} ({x['route']}) | "
            f"{x['expect']} | {x['connections']}, {x['pause_ms']} ms | {x['answered']} | "
            f"{x['rps']:.1f} | {fmt_ms(lat['p50'])} | {fmt_ms(lat['p99'])} | "
            f"{fmt_ms(lat['max'])} | {', '.join(errs) or '0'} | {codes} |")
    lines += [
        "",
        "Latency percentiles are wrk's (corrected for coordinated omission, requests over the "
        "timeout excluded; those are counted as errors). Stuck: written, unanswered after the "
        "timeout when the run ended. Lost: written, never answered (connection closed).",
        "",
        "## Hostile population",
        "",
        "| clients | behaviour | connects | open at end | ended by cmond | median / max s to "
        "that | outcomes | MiB sent |",
        "|---|---|---:|---:|---:|---|---|---:|",
    ]
    for name, p in r["hostile"]["populations"].items():
        if not p["clients"]:
            continue
        outs = ", ".join(f"{k} x{v}" for k, v in p["outcomes"].items()) or "–"
        med, mx = p["seconds_to_server_end_median"], p["seconds_to_server_end_max"]
        span = "–" if med is None else f"{med:.1f} / {mx:.1f}"
        lines.append(f"| {p['clients']} {name} | {p['what']} | {p['connects']} | "
                     f"{p['open_at_end']} | {p['server_ended']} | {span} | {outs} | "
                     f"{p['bytes_sent'] / 2**20:.1f} |")
    h = r["hostile"]
    cap = ("" if h["byte_cap_reached_after_s"] is None else
           f" (reached after {h['byte_cap_reached_after_s']} s)")
    lines += ["", f"Bytes sent by hostile clients are capped at {h['byte_cap'] >> 20} MiB{cap}; "
              f"a client waits ~{h['reconnect_delay_s']} s before reconnecting.", ""]
    v = r["rss"]
    if "start_kib" in v:
        slope = v["slope_kib_per_min"]
        lines += [
            "## cmond's memory and descriptors",
            "",
            "| | start (after warm-up) | end | max | end / start |",
            "|---|---:|---:|---:|---:|",
            f"| VmRSS MiB | {mib(v['start_kib'])} | {mib(v['end_kib'])} | {mib(v['max_kib'])} | "
            f"{v['ratio']:.3f} |",
            f"| threads | {v['threads']['start']} | {v['threads']['end']} | "
            f"{v['threads']['max']} | |",
            f"| open fds | {v['fds']['start']} | {v['fds']['end']} | {v['fds']['max']} | |",
            "",
            f"Flat means {v['threshold']} (= {mib(v['limit_kib'])} MiB). Trend over the samples "
            f"after warm-up: {'–' if slope is None else f'{slope:+.0f} KiB/min'}; "
            f"{len(r['rss_samples'])} samples every {r['rss_interval_s']} s in soak.json.",
            "",
        ]
    t = r["throughput"]
    lines += ["## GET /health throughput, cmond vs webhook (before the soak)", ""]
    if t.get("skipped"):
        lines.append("Skipped (--bench-rounds 0).")
    elif "error" in t:
        lines.append(f"Failed: {t['error']}")
    else:
        lines += [
            f"`wrk {t['wrk']} -d{t['seconds']}s`, {t['rounds']} rounds interleaved, median:",
            "",
            "| target | req/s | per round | p99 ms (median) |",
            "|---|---:|---|---:|",
            f"| cmond GET /health (coalescing) | {t['cmond_median_rps']:.0f} | "
            + ", ".join(f"{x:.0f}" for x in t["cmond_rps"])
            + f" | {statistics.median(t['cmond_p99_ms']):.1f} |",
            f"| webhook GET /hooks/health | {t['webhook_median_rps']:.0f} | "
            + ", ".join(f"{x:.0f}" for x in t["webhook_rps"])
            + f" | {statistics.median(t['webhook_p99_ms']):.1f} |",
            "",
            f"Ratio {t['ratio']:.2f}x (target >= {THROUGHPUT_TARGET:.0f}x).",
        ]
    lines.append("")
    counts = r.get("http_counts_delta")
    if counts:
        lines += ["## cmond's own count of answers during the soak (cmond_http_requests_total)",
                  "", ", ".join(f"{k}: {v:.0f}" for k, v in counts.items()), ""]
    elif r.get("http_counts_end", {}).get("error"):
        lines += ["cmond's /metrics did not answer at the end of the soak "
                  f"({r['http_counts_end']['error']}).", ""]
    return "\n".join(lines)


def checks(report, args):
    out = []
    legit_errors = sum(x["errors_total"] for x in report["legit"])
    answered = sum(x.get("answered", 0) for x in report["legit"])
    silent_routes = [x["route"] for x in report["legit"] if not x.get("answered")]
    detail = f"{legit_errors} errors in {answered} answered requests"
    if silent_routes:
        detail += (f"; nothing answered on {len(silent_routes)} of {len(report['legit'])} "
                   f"routes ({', '.join(silent_routes)})")
    out.append({"name": "legitimate errors", "ok": legit_errors == 0, "counts": True,
                "detail": detail})
    v = report["rss"]
    if "start_kib" in v:
        detail = (f"{mib(v['start_kib'])} -> {mib(v['end_kib'])} MiB (x{v['ratio']:.3f}), "
                  f"max {mib(v['max_kib'])}; {v['threshold']}")
    else:
        detail = v["why"]
    out.append({"name": "RSS flat", "ok": v["flat"], "counts": True, "detail": detail})
    died = report["died"]
    out.append({"name": "cmond alive", "ok": died is None, "counts": True,
                "detail": "throughout" if died is None else
                f"gone after {died['after_s']} s (status {died['status']})"})
    s = report.get("shutdown")
    if s:
        out.append({"name": "shutdown with hostile clients connected", "counts": True,
                    "ok": s["exited"] and s["status"] == 0,
                    "detail": (f"exit {s['status']} after {s['seconds']} s" if s["exited"] else
                               f"still running after {s['limit_s']} s: killed")})
    t = report["throughput"]
    if "error" in t:
        out.append({"name": "throughput runs", "ok": False, "counts": True,
                    "detail": t["error"].splitlines()[0]})
    elif not t.get("skipped"):
        out.append({"name": f"/health >= {THROUGHPUT_TARGET:.0f}x webhook", "counts": False,
                    "ok": t["ratio"] >= THROUGHPUT_TARGET,
                    "detail": f"{t['cmond_median_rps']:.0f} vs {t['webhook_median_rps']:.0f} "
                              f"req/s = {t['ratio']:.2f}x"})
    return out


# ---- main ----


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cmond", default=os.path.join(ROOT, "build", "cmond", "cmond"))
    ap.add_argument("--duration", type=int, default=600,
                    help="seconds of mixed load, warm-up included (default 600)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="seconds before the start RSS sample (default min(30, duration / 6))")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"),
                    help="directory for soak.json and soak.md (default bench/results)")
    ap.add_argument("--rss-interval", type=float, default=5.0)
    ap.add_argument("--rss-ratio", type=float, default=0.10)
    ap.add_argument("--rss-slack-mib", type=float, default=2.0)
    ap.add_argument("--legit-timeout", type=int, default=10,
                    help="a legitimate request slower than this is an error (s)")
    ap.add_argument("--bench-seconds", type=int, default=10,
                    help="seconds per wrk run of the throughput comparison")
    ap.add_argument("--bench-rounds", type=int, default=3, help="0 skips the comparison")
    ap.add_argument("--slowloris", type=int, default=64)
    ap.add_argument("--silent", type=int, default=64)
    ap.add_argument("--oversize", type=int, default=4)
    ap.add_argument("--bodies", type=int, default=4)
    ap.add_argument("--slow-interval", type=float, default=3.0,
                    help="seconds between a slowloris client's header lines")
    ap.add_argument("--reconnect-delay", type=float, default=0.25)
    ap.add_argument("--hostile-pause", type=float, default=1.0,
                    help="seconds between attempts of oversize and body clients")
    ap.add_argument("--hostile-mib", type=int, default=8192,
                    help="cap on the bytes all hostile clients send (MiB)")
    ap.add_argument("--max-hostile", type=int, default=256,
                    help="refuse populations adding up to more connections than this")
    ap.add_argument("--note", default="",
                    help="a sentence for the report, e.g. which source the cmond binary is from")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (cmond's log) and print its path")
    args = ap.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(30, args.duration // 6)
    if args.duration < 10 or not 0 <= args.warmup < args.duration:
        ap.error("--duration must be >= 10 and --warmup below it")
    total = args.slowloris + args.silent + args.oversize + args.bodies
    if total > args.max_hostile:
        ap.error(f"{total} hostile connections exceed --max-hostile {args.max_hostile}")
    return args


class Interrupted(Exception):
    pass


def main(argv):
    args = parse_args(argv)
    command = shlex.join(["python3", os.path.relpath(os.path.abspath(__file__), ROOT)] + argv)
    for tool in ("wrk", "webhook", "uptime"):
        if shutil.which(tool) is None:
            log(f"{tool} is not installed: skipping (apt-get install wrk webhook procps)")
            return 77
    args.cmond = os.path.abspath(args.cmond)
    if not os.access(args.cmond, os.X_OK):
        log(f"error: --cmond {args.cmond}: not an executable file")
        return 2
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # writes to closed sockets: expected

    def on_sigterm(signum, frame):
        raise Interrupted()
    signal.signal(signal.SIGTERM, on_sigterm)

    machine = machine_info()
    report: dict[str, Any] = {
        "command": command, "machine": machine, "git": git_commit(),
        "cmond": binary_info(args.cmond), "wrk": tool_version(["wrk", "-v"]),
        "webhook": tool_version(["webhook", "-version"]),
        "duration_s": args.duration, "warmup_s": args.warmup,
        "rss_interval_s": args.rss_interval, "legit_timeout_s": args.legit_timeout,
        "routes": [r.__dict__ for r in ROUTES], "note": args.note,
    }
    tmp = tempfile.mkdtemp(prefix="cmond-soak-")
    cmond = None
    try:
        home = os.path.join(tmp, "cmond")
        os.makedirs(home)
        key = write_key(home)
        args.wrong_key = "0" * 63 + ("1" if key != "0" * 63 + "1" else "2")
        cmond, base = launch_cmond(args.cmond, home, cmond_config(home),
                                   os.path.join(tmp, "stats"))
        log(f"cmond pid {cmond.pid} at {base}")
        report["throughput"] = throughput(base, key, tmp, args.bench_seconds, args.bench_rounds)
        before = http_counts(base, key)
        log(f"soak: {args.duration} s; hostile: {args.slowloris} slowloris, {args.silent} "
            f"silent, {args.oversize} oversize, {args.bodies} bodies")

        async def run():
            task = asyncio.current_task()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
            return await soak(args, cmond, base, key, tmp)
        report.update(asyncio.run(run()))
        signal.signal(signal.SIGTERM, on_sigterm)  # the loop's handler went with the loop
        after = report.get("http_counts_end") or {}
        if "counts" in before and "counts" in after:
            report["http_counts_delta"] = {
                k: v - before["counts"].get(k, 0.0) for k, v in sorted(after["counts"].items())
                if v - before["counts"].get(k, 0.0) > 0}
        report["cmond_log_bytes"] = os.path.getsize(os.path.join(home, "cmond.stderr"))
    except (KeyboardInterrupt, Interrupted, asyncio.CancelledError):
        log("interrupted: stopping everything")
        return 130
    finally:
        if cmond is not None:
            stop(cmond, timeout=SHUTDOWN_TIMEOUT + SHUTDOWN_GRACE)
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    machine["loadavg_end"] = os.getloadavg()
    machine["date_end"] = now_utc()
    report["rss"] = rss_verdict(report, args)
    report["checks"] = checks(report, args)
    report["passed"] = all(c["ok"] for c in report["checks"] if c["counts"])
    text = render(report)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        write_json(os.path.join(args.out, "soak.json"), report)
        with open(os.path.join(args.out, "soak.md"), "w") as f:
            f.write(text + "\n")
        log(f"wrote soak.md and soak.json to {args.out}")
    failed = [c["name"] for c in report["checks"] if c["counts"] and not c["ok"]]
    log("PASS" if not failed else "FAIL: " + ", ".join(failed))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
