# SPDX-License-Identifier: MIT
"""What the HTTP benchmarks share (run_http_bench.py, soak.py): starting cmond with a throwaway
key and a given configuration, starting Debian's webhook with the same `uptime` hook, running
wrk, reading one sample of cmond's /metrics, and stopping what they started.

Everything listens on 127.0.0.1 on ports chosen at run time. Only the Python standard library.
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request

# wrk's shape for the throughput figures (run_http_bench.py, and soak.py's comparison).
THREADS = 2
CONNECTIONS = 10


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, headers, limit=10.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            req = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == 200:
                    return resp.read().decode(errors="replace")
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer 200 within {limit} s")


def write_key(home):
    """A fresh 256-bit key in home/client_secret.key (mode 0600, as cmond requires)."""
    key = secrets.token_hex(32)
    key_path = os.path.join(home, "client_secret.key")
    with open(key_path, "w") as f:
        f.write(key + "\n")
    os.chmod(key_path, 0o600)
    return key


def launch_cmond(cmond, home, config, stats_dir):
    """Starts cmond in `home` (which must hold client_secret.key) with the configuration text
    `config`, on 127.0.0.1 and a free port (--port 0), and waits for its GET /health to answer
    200 with `uptime`'s output. Its stats page (it runs on libarena) and the pages its /metrics
    reads are in stats_dir, not the machine's /dev/shm/arena; stderr (the access log) goes to
    home/cmond.stderr. Returns (process, base URL)."""
    conf = os.path.join(home, "cmond.conf")
    with open(conf, "w") as f:
        f.write(config)
    with open(os.path.join(home, "client_secret.key")) as f:
        key = f.read().strip()
    err_path = os.path.join(home, "cmond.stderr")
    err = open(err_path, "w")
    env = dict(os.environ, ARENA_STATS_DIR=stats_dir)
    # Absolute: a relative path would be looked up from `home`, cmond's working directory.
    proc = subprocess.Popen([os.path.abspath(cmond), "--config", conf, "--port", "0"],
                            cwd=home, env=env,
                            stdout=subprocess.PIPE, stderr=err, text=True)
    err.close()
    line = proc.stdout.readline()
    m = re.match(r"cmond: listening on (http://127\.0\.0\.1:(\d+))", line)
    if not m:
        stop(proc)
        raise RuntimeError("cmond did not start: " + line + open(err_path).read())
    base = m.group(1)
    try:
        body = wait_http(base + "/health", {"access_token": key})
    except RuntimeError:
        stop(proc)
        raise
    if "load average" not in body:
        stop(proc)
        raise RuntimeError("cmond /health does not run uptime: " + body)
    return proc, base


def start_webhook(tmp):
    uptime = shutil.which("uptime")
    hooks = os.path.join(tmp, "hooks.json")
    with open(hooks, "w") as f:
        json.dump([{"id": "health", "execute-command": uptime,
                    "include-command-output-in-response": True}], f)
    for _ in range(5):
        port = free_port()
        log = open(os.path.join(tmp, "webhook.log"), "w")
        proc = subprocess.Popen(["webhook", "-hooks", hooks, "-ip", "127.0.0.1",
                                 "-port", str(port)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            body = wait_http(f"http://127.0.0.1:{port}/hooks/health", {}, limit=5)
        except RuntimeError:
            stop(proc)
            continue  # port taken in between: try another
        if "load average" not in body:
            stop(proc)
            raise RuntimeError("webhook hook does not run uptime: " + body)
        return proc, f"http://127.0.0.1:{port}"
    raise RuntimeError("webhook did not start; see " + os.path.join(tmp, "webhook.log"))


def stop(proc, timeout=10):
    """SIGTERM, then SIGKILL after `timeout` seconds; always reaps. Returns the exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)$", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(url, seconds, headers=None, threads=THREADS, connections=CONNECTIONS):
    """wrk with --latency; returns (requests/s, p99 in ms). Raises when any answer is not 2xx
    or wrk saw a socket error or timeout."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        raise RuntimeError(f"wrk against {url} saw failures:\n{out}")
    return rps, p99


def metric(base, key, series, timeout=5):
    """The value of one sample of cmond's /metrics."""
    req = urllib.request.Request(base + "/metrics", headers={"access_token": key})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        text = resp.read().decode()
    m = re.search("^" + re.escape(series) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0
