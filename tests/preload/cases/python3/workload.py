# SPDX-License-Identifier: MIT
# Preload workload for CPython. Run with PYTHONMALLOC=malloc so that every object, not just
# the large ones, comes from the preloaded malloc. Each section prints a small digest so a
# difference between the plain and the preloaded run points at the section that broke.
# Everything is deterministic: fixed seeds, sorted iteration, results gathered in order.
import gc
import hashlib
import json
import random
import re
import sqlite3
import zlib
from concurrent.futures import ThreadPoolExecutor

total = hashlib.sha256()


def report(name, value):
    text = value if isinstance(value, str) else repr(value)
    total.update(name.encode() + b"\0" + text.encode() + b"\0")
    if len(text) > 96:
        text = "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]
    print(f"{name}: {text}")


def containers(rng):
    # Grow and shrink dicts, lists and sets so resizes (realloc) and frees interleave.
    d = {}
    for i in range(200_000):
        d[f"k{rng.randrange(50_000)}"] = [i] * (i % 7)
    for k in list(d)[::3]:
        del d[k]
    s = {x * x % 65_521 for x in range(100_000)}
    lst = sorted(d.items(), key=lambda kv: (len(kv[1]), kv[0]))
    report("dict.len", len(d))
    report("set.len", len(s))
    report("sorted.head", lst[:5])
    report("sorted.tail", lst[-3:])


def strings_and_bytes(rng):
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randrange(1, 12)))
             for _ in range(50_000)]
    text = " ".join(words)
    blob = bytearray()
    for w in words:
        blob += w.encode() * 3
    report("str.len", len(text))
    report("str.upper.count", text.upper().count("AB"))
    report("bytes.sha", hashlib.sha256(bytes(blob)).hexdigest())
    report("split.join", len("-".join(text.split(" ")[::-1])))


def json_round_trip(rng):
    doc = {f"n{i}": {"id": i, "tags": [rng.randrange(100) for _ in range(i % 9)],
                     "name": f"item-{i:05d}", "ok": i % 3 == 0, "w": i / 7}
           for i in range(20_000)}
    enc = json.dumps(doc, sort_keys=True)
    back = json.loads(enc)
    report("json.equal", back == doc)
    report("json.sha", hashlib.sha256(enc.encode()).hexdigest())
    report("json.indent.len", len(json.dumps(back, indent=2, sort_keys=True)))


def regexes(rng):
    lines = [f"{rng.randrange(1, 255)}.{rng.randrange(255)}.{rng.randrange(255)}.{i % 255}"
             f" - user{i % 97} [GET /path/{i}/x?q={rng.random():.6f}] {200 + i % 5}"
             for i in range(30_000)]
    pat = re.compile(r"^(\d+)\.(\d+)\.\d+\.\d+ - (user\d+) \[GET (/path/\d+)/x\?q=([\d.]+)\] (\d+)$")
    users = {}
    for line in lines:
        m = pat.match(line)
        users[m.group(3)] = users.get(m.group(3), 0) + int(m.group(6))
    report("re.users", sorted(users.items())[:4])
    report("re.sub", hashlib.sha256(re.sub(r"\d", "#", "\n".join(lines)).encode()).hexdigest())


def sql():
    con = sqlite3.connect(":memory:")
    con.execute("create table t(id integer primary key, grp int, name text, payload blob)")
    con.executemany("insert into t(grp, name, payload) values (?, ?, ?)",
                    ((i % 13, f"name{i}", bytes([i % 256]) * (i % 300)) for i in range(20_000)))
    con.execute("create index t_grp on t(grp, name)")
    rows = con.execute("select grp, count(*), sum(length(payload)), max(name) "
                       "from t group by grp order by grp").fetchall()
    report("sqlite.groups", rows)
    report("sqlite.integrity", con.execute("pragma integrity_check").fetchone()[0])
    con.close()


def compression(rng):
    data = b"".join(f"line {i} {rng.randrange(10**6)}\n".encode() for i in range(100_000))
    packed = zlib.compress(data, 6)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    streamed = b"".join(co.compress(data[i:i + 4096]) for i in range(0, len(data), 4096)) + co.flush()
    report("zlib.roundtrip", zlib.decompress(packed) == data)
    report("zlib.stream.roundtrip", zlib.decompress(streamed, -15) == data)
    report("zlib.crc", zlib.crc32(data))
    report("hash.md5", hashlib.md5(data).hexdigest())
    report("hash.blake2b", hashlib.blake2b(packed).hexdigest())


def worker(seed):
    # Each thread builds and drops its own structures; objects also die on other threads
    # when the results are collected by the main thread.
    rng = random.Random(seed)
    acc = hashlib.sha1()
    for _ in range(40):
        junk = {rng.randrange(10_000): [str(rng.random())] * rng.randrange(1, 20) for _ in range(500)}
        acc.update(json.dumps(sorted(junk.items())[:20]).encode())
        del junk
    return seed, acc.hexdigest(), [bytes(rng.randrange(256) for _ in range(64)) for _ in range(100)]


def threads():
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(worker, range(24)))
    report("threads", [(s, h[:12], len(b)) for s, h, b in results][:6])
    report("threads.all", hashlib.sha256(repr(results).encode()).hexdigest())


def cycles():
    class Node:
        def __init__(self, i):
            self.i, self.peer, self.data = i, None, [i] * 10

    # Automatic collections would take part of the garbage before the explicit one.
    gc.disable()
    nodes = [Node(i) for i in range(50_000)]
    for a, b in zip(nodes, nodes[1:] + nodes[:1]):
        a.peer = b
    del nodes, a, b
    report("gc.collected>=50000", gc.collect() >= 50_000)
    gc.enable()


def main():
    rng = random.Random(20240601)
    containers(rng)
    strings_and_bytes(rng)
    json_round_trip(rng)
    regexes(rng)
    sql()
    compression(rng)
    threads()
    cycles()
    print("digest:", total.hexdigest())


if __name__ == "__main__":
    main()
