#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Run real programs (g++, CPython, perl, ruby, sqlite3, z3, xz, zstd, git and a
producer/consumer) under glibc, jemalloc, mimalloc, tcmalloc and libarena (issue 17).

Each round runs every program under every allocator, with the allocator order shuffled per
round from a fixed seed (as run_bench.py does), so drift on a shared, noisy machine lands on
all allocators alike. Per (program, allocator) we report the median wall time, user+sys time
and peak RSS over the rounds, paired per-round ratios against glibc and mimalloc, and
geometric means over the programs. `--variant NAME=PATH` adds other libarena builds as more
columns of the same interleaved run.

The inputs are made by the benchmark itself in a temporary directory (a generated C++
translation unit, scripts, SQL, an SMT-LIB2 problem, text to compress, a git fast-import
stream), before anything is timed. Every run must exit 0 and print what its check expects
(z3's unsat, sqlite's row count, a script's checksum, ...), and that result must be the same
under every allocator; a failure ends the run naming the program and the allocator.

Before timing anything, each preload is proven to have taken, once per allocator per program
(un-timed, at smoke size): under LD_DEBUG=files the dynamic linker logs a "calling init:" line
for the preloaded library in each process it starts (g++: the driver, cc1plus and as), and
libarena also prints its ARENA_VERBOSE=1 banner; under glibc none of the libraries may appear.

Wall time is time.perf_counter around spawn and wait; peak RSS, user and sys time come from
wait4 in bench_spawn, a small launcher (see bench_spawn.cc for why): ru_maxrss is the largest
resident set of the program and of every descendant it waited for (for g++ the largest of the
driver, cc1plus and as; for git the largest process of the script).

Writes programs.md, programs.json and (with gnuplot) programs.png and programs_rss.png into
--out.
"""

from __future__ import annotations

import argparse
import json
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
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (  # noqa: E402
    BANNER,
    SHUFFLE_SEED,
    Allocator,
    BenchError,
    allocator_env_vars,
    base_env,
    busy_warning,
    fmt_ratio,
    geomean,
    load_before,
    load_line,
    log,
    machine_info,
    machine_line,
    now_utc,
    paired_ratio,
    results_dir,
    standard_allocators,
    tail,
    write_json,
)

DEFAULT_BUILD_BENCH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build-bench", "bench"
)

# ---- Inputs: each writes its program's input into a directory, scaled by n ----


def write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def make_cxx(d: str, n: int) -> None:
    """A translation unit that makes cc1plus allocate: many std headers, n generated class
    templates instantiated with several types, and functions that use containers."""
    if n == 0:  # --smoke and the preload checks: the std headers alone take seconds
        write(os.path.join(d, "gen.cc"), "int total() { return 42; }\n")
        return
    headers = ["algorithm", "array", "deque", "functional", "map", "memory", "optional",
               "set", "sstream", "string", "tuple", "unordered_map", "variant",
               "vector"]
    out = [f"#include <{h}>" for h in headers]
    for i in range(n):
        out.append(f"""
template <typename T> struct Box{i} {{
    std::vector<T> items; std::map<std::string, T> named; std::optional<T> last;
    void add(const std::string& k, T v) {{ items.push_back(v); named[k] = v; last = v; }}
    T sum() const {{ T s{{}}; for (const auto& x : items) s = s + x; return s; }}
    template <typename F> auto map(F f) const {{
        std::vector<decltype(f(std::declval<T>()))> r;
        for (const auto& x : items) r.push_back(f(x));
        return r; }}
}};
std::string fn{i}(int k) {{
    Box{i}<int> a; Box{i}<double> b; Box{i}<std::string> c;
    std::unordered_map<int, std::variant<int, double, std::string>> u;
    for (int j = 0; j < k; ++j) {{ a.add(std::to_string(j), j * {i}); b.add("b", j * 0.5);
        c.add("c", std::to_string(j)); u[j] = j % 3 ? std::variant<int, double, std::string>(j)
        : std::variant<int, double, std::string>(std::to_string(j)); }}
    auto m = a.map([](int x) {{ return std::to_string(x) + "{i}"; }});
    std::sort(m.begin(), m.end());
    std::ostringstream os; os << a.sum() << b.sum() << c.sum().size() << m.size() << u.size();
    return os.str();
}}""")
    out.append("int total() { int t = 0;")
    out += [f"  t += static_cast<int>(fn{i}({i % 7}).size());" for i in range(n)]
    out.append("  return t; }")
    write(os.path.join(d, "gen.cc"), "\n".join(out) + "\n")


PYTHON_SCRIPT = r"""
import json, sys
n = int(sys.argv[1])  # items in all: rounds of at most 20,000
size = min(n, 20000)

class Node:
    def __init__(self, i, name, tags):
        self.i, self.name, self.tags = i, name, tags

total = 0
for rep in range(n // size):
    d = {f"k{i}-{rep}": [i, str(i * 7), {"x": i, "y": [i] * 3}] for i in range(size)}
    objs = [Node(i, "n%d" % i, [i % 7, i % 11]) for i in range(size)]
    objs.sort(key=lambda o: (o.tags[1], o.name))
    s = json.dumps(d)
    d2 = json.loads(s)
    total += len(s) + len(d2) + sum(o.i for o in objs[:100])
    b = b"".join(("%x" % i).encode() * 3 for i in range(size))
    words = s.split(",")
    total += len(b) + len(set(words)) + len(" ".join(sorted(words[:5000])))
print("checksum", total)
"""


def make_python(d: str, _n: int) -> None:
    write(os.path.join(d, "work.py"), PYTHON_SCRIPT)


PERL_SCRIPT = r"""
use strict; use warnings;
my $n = shift; my $total = 0;  # items in all: rounds of at most 20,000
my $size = $n < 20000 ? $n : 20000;
for my $rep (1 .. int($n / $size)) {
    my %h;
    $h{"k$_-$rep"} = [ $_, "v" x ($_ % 50), { a => $_ } ] for 1 .. $size;
    my @keys = sort keys %h;
    my $s = join(",", map { $_ . "=" . $h{$_}[0] } @keys);
    my @m = ($s =~ /k(\d+)-\d+=(\d+)/g);
    $total += scalar(@m) + length($s);
    my @arr = sort { $b->[1] cmp $a->[1] } map { [ $_, "x$_" ] } 1 .. $size;
    $total += $arr[0][0];
    (my $t = $s) =~ s/(\d+)/<$1>/g;
    $total += length $t;
}
print "checksum $total\n";
"""


def make_perl(d: str, _n: int) -> None:
    write(os.path.join(d, "work.pl"), PERL_SCRIPT)


RUBY_SCRIPT = r"""
Item = Struct.new(:i, :name, :tags)
n = ARGV[0].to_i # items in all: rounds of at most 20,000
size = [n, 20000].min
total = 0
(n / size).times do |rep|
  h = {}
  size.times { |i| h["k#{i}-#{rep}"] = [i, "v" * (i % 50), { a: i }] }
  s = h.keys.sort.map { |k| "#{k}=#{h[k][0]}" }.join(",")
  total += s.scan(/k(\d+)-\d+=(\d+)/).size + s.size
  items = (0...size).map { |i| Item.new(i, "n#{i}", [i % 7, i % 11]) }
  items.sort_by! { |o| [o.tags[1], o.name] }
  total += items[0].i + s.gsub(/\d+/) { |m| "<#{m}>" }.size
end
puts "checksum #{total}"
"""


def make_ruby(d: str, _n: int) -> None:
    write(os.path.join(d, "work.rb"), RUBY_SCRIPT)


def make_sql(d: str, n: int) -> None:
    """A table of n rows and one of n/2 rows referring to it, indexed, then joins, group by,
    order by. The first line printed is count(*) of the big table."""
    write(os.path.join(d, "work.sql"), f"""
CREATE TABLE a(id INTEGER PRIMARY KEY, k INTEGER, v TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n})
INSERT INTO a SELECT x, (x * 7919) % 1000, printf('%08x-%d', (x * 2654435761) % 4294967296, x)
FROM c;
CREATE INDEX a_k ON a(k);
CREATE INDEX a_v ON a(v);
CREATE TABLE b(id INTEGER PRIMARY KEY, a_id INTEGER, w TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n // 2})
INSERT INTO b SELECT x, (x * 31) % {n} + 1, printf('w%d', x % 977) FROM c;
CREATE INDEX b_a ON b(a_id);
SELECT count(*) FROM a;
SELECT count(*), sum(cnt) FROM (SELECT a.k, count(*) AS cnt FROM a JOIN b ON b.a_id = a.id
  GROUP BY a.k ORDER BY cnt DESC);
SELECT w, count(*), max(a.v) FROM b JOIN a ON a.id = b.a_id GROUP BY w ORDER BY 2 DESC, 1
  LIMIT 3;
SELECT v FROM a ORDER BY v LIMIT 1 OFFSET {n // 2};
SELECT count(DISTINCT substr(v, 1, 4)) FROM a;
""")


def make_smt(d: str, n: int) -> None:
    """n pigeonhole problems (9 pigeons, 8 holes) in propositional SMT-LIB2, each in its own
    push/pop scope: unsat, and hard for CDCL (about 0.4 s each here; 10 pigeons take 10x)."""
    holes = 8
    lines = ["(set-logic QF_UF)"]
    for c in range(n):
        var = [[f"p{c}_{i}_{j}" for j in range(holes)] for i in range(holes + 1)]
        lines.append("(push 1)")
        lines += [f"(declare-const {v} Bool)" for row in var for v in row]
        lines += ["(assert (or " + " ".join(row) + "))" for row in var]
        for j in range(holes):
            for i in range(holes + 1):
                for k in range(i + 1, holes + 1):
                    lines.append(f"(assert (not (and {var[i][j]} {var[k][j]})))")
        lines += ["(check-sat)", "(pop 1)"]
    write(os.path.join(d, "work.smt2"), "\n".join(lines) + "\n")


def make_text(d: str, n: int) -> None:
    """n KiB of deterministic pseudo-random text from a few thousand words (compresses ~3x)."""
    rng = random.Random(17)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
             for _ in range(3000)]
    with open(os.path.join(d, "data.txt"), "w", encoding="ascii") as f:
        written = 0
        while written < n << 10:
            line = " ".join(rng.choice(words) for _ in range(12)) + f" {rng.getrandbits(32)}\n"
            f.write(line)
            written += len(line)


GIT_SCRIPT = """set -e
rm -rf repo
git init -q -b main repo
cd repo
git fast-import --quiet < ../stream
git repack -adf -q
git log -p --stat HEAD > /dev/null
git blame HEAD -- f0.txt > /dev/null
git diff $(git rev-list --max-parents=0 HEAD) HEAD > /dev/null
git gc -q --prune=now
git rev-list --count HEAD
"""


def make_git(d: str, n: int) -> None:
    """A fast-import stream of n commits over 40 files (each commit rewrites a few lines of a
    few files), and the script that imports, repacks, logs, blames and diffs it."""
    rng = random.Random(23)
    files = {f"f{i}.txt": [f"line {j} of file {i}\n" for j in range(200)] for i in range(40)}
    out = []
    for c in range(n):
        out.append("commit refs/heads/main\n")
        out.append(f"committer Bench <bench@example.com> {1700000000 + c} +0000\n")
        msg = f"commit {c}\n"
        out.append(f"data {len(msg)}\n{msg}")
        for name in (rng.sample(sorted(files), 3) if c else sorted(files)):
            body = files[name]
            for _ in range(5):
                body[rng.randrange(len(body))] = f"changed in {c}: {rng.getrandbits(40):x}\n"
            if rng.random() < 0.3:
                body.append(f"appended in {c}\n")
            data = "".join(body)
            out.append(f"M 100644 inline {name}\ndata {len(data.encode())}\n{data}\n")
    write(os.path.join(d, "stream"), "".join(out))
    write(os.path.join(d, "work.sh"), GIT_SCRIPT)


def make_nothing(_d: str, _n: int) -> None:
    pass


# ---- Checks: each reads a run's stdout (and its directory) and returns the result that must
# be the same under every allocator, or raises ValueError saying what is wrong ----


def check_checksum(out: str, _d: str, _n: int) -> str:
    m = re.fullmatch(r"checksum (\d+)\s*", out)
    if not m:
        raise ValueError(f"expected one line 'checksum N', got {out[-200:]!r}")
    return m.group(1)


def check_object(_out: str, d: str, n: int) -> str:
    size = os.path.getsize(os.path.join(d, "gen.o"))
    if size < (1000 if n else 100):
        raise ValueError(f"gen.o is only {size} bytes")
    return f"gen.o {size} bytes"


def check_sqlite(out: str, _d: str, n: int) -> str:
    lines = out.splitlines()
    if not lines or lines[0].strip() != str(n) or len(lines) != 7:
        raise ValueError(f"expected 7 lines starting with the row count {n}, got {out[-300:]!r}")
    return out.strip().replace("\n", " / ")


def check_unsat(out: str, _d: str, n: int) -> str:
    if out.split() != ["unsat"] * n:
        raise ValueError(f"expected {n} lines 'unsat' (pigeonhole), got {out[-200:]!r}")
    return f"{n} x unsat"


def check_compressed(suffix: str) -> Callable[[str, str, int], str]:
    def check(_out: str, d: str, n: int) -> str:
        size = os.path.getsize(os.path.join(d, "data.txt" + suffix))
        if not 0 < size < (n << 10) // 2:
            raise ValueError(f"data.txt{suffix} has {size} bytes from {n} KiB of text")
        return f"data.txt{suffix} {size} bytes"

    return check


def check_git(out: str, _d: str, n: int) -> str:
    if out.strip() != str(n):
        raise ValueError(f"expected rev-list --count {n}, got {out[-200:]!r}")
    return f"{n} commits"


def check_prodcons(out: str, _d: str, _n: int) -> str:
    m = re.search(r'"checksum":(\d+)', out)
    if not m:
        raise ValueError(f"no JSON result line with a checksum: {out[-200:]!r}")
    return m.group(1)


# ---- The programs, in report order ----


@dataclass(frozen=True)
class Program:
    """One row of the report: how to make its input, run it and check its output."""

    name: str
    what: str  # one line for the report
    binary: str  # must exist (absolute, or found on PATH), else the program is skipped
    full: int  # the size parameter n at full size (about 1-3 s on glibc here) ...
    smoke: int  # ... and for --smoke and the preload checks
    make: Callable[[str, int], None]  # writes the input for size n into a directory
    argv: Callable[[str, int], list[str]]  # (bench dir, n) -> command, run in the input dir
    check: Callable[[str, str, int], str]  # (stdout, input dir, n) -> result, or ValueError
    env: dict[str, str] = field(default_factory=dict)
    processes: int = 1  # processes that must show the preload under LD_DEBUG


PROGRAMS = [
    Program(
        "g++", "g++ -O2 -c of a generated TU (std headers, n templates over containers)",
        binary="g++", full=6, smoke=0, make=make_cxx,
        argv=lambda _b, _n: ["g++", "-std=c++20", "-O2", "-c", "gen.cc", "-o", "gen.o"],
        check=check_object, processes=3),  # the driver, cc1plus and as
    Program(
        "python", "Debian's CPython, PYTHONMALLOC=malloc: dicts, objects, json, sorting",
        binary="/usr/bin/python3", full=60_000, smoke=1000, make=make_python,
        argv=lambda _b, n: ["/usr/bin/python3", "-S", "work.py", str(n)],
        check=check_checksum, env={"PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0"}),
    Program(
        "perl", "hashes, strings, regexes, arrays of refs, sorting",
        binary="/usr/bin/perl", full=200_000, smoke=1000, make=make_perl,
        argv=lambda _b, n: ["/usr/bin/perl", "work.pl", str(n)], check=check_checksum),
    Program(
        "ruby", "objects (Struct), hashes, strings, arrays, gsub",
        binary="/usr/bin/ruby", full=200_000, smoke=1000, make=make_ruby,
        argv=lambda _b, n: ["/usr/bin/ruby", "work.rb", str(n)], check=check_checksum),
    Program(
        "sqlite3", "in-memory tables of n and n/2 rows, indexes, joins, group/order by",
        binary="/usr/bin/sqlite3", full=600_000, smoke=3000, make=make_sql,
        argv=lambda _b, _n: ["/usr/bin/sqlite3", "-batch", ":memory:", ".read work.sql"],
        check=check_sqlite),
    Program(
        "z3", "z3 on n generated pigeonhole problems (9 pigeons, 8 holes; unsat)",
        binary="/usr/bin/z3", full=4, smoke=1, make=make_smt,
        argv=lambda _b, _n: ["/usr/bin/z3", "work.smt2"], check=check_unsat),
    Program(
        "xz", "xz -T2 -6 --block-size=1MiB of n KiB of generated text",
        binary="/usr/bin/xz", full=3072, smoke=128, make=make_text,
        argv=lambda _b, _n: ["/usr/bin/xz", "-T2", "-6", "--block-size=1MiB", "-k", "-f",
                             "data.txt"],
        check=check_compressed(".xz")),
    Program(
        "zstd", "zstd -T2 -15 of n KiB of generated text",
        binary="/usr/bin/zstd", full=4096, smoke=128, make=make_text,
        argv=lambda _b, _n: ["/usr/bin/zstd", "-q", "-T2", "-15", "-f", "data.txt", "-o",
                             "data.txt.zst"],
        check=check_compressed(".zst")),
    Program(
        "git", "fast-import n commits, repack -adf, log -p, blame, diff, gc (a sh script)",
        binary="/usr/bin/git", full=800, smoke=20, make=make_git,
        argv=lambda _b, _n: ["/bin/sh", "work.sh"], check=check_git,
        env={"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"},
        processes=6),  # sh and at least the five git commands
    Program(
        "prodcons", "bench_prodcons: 1 producer, 1 consumer, batches of 1..256, every free "
        "remote", binary="bench_prodcons", full=2_000_000, smoke=20_000, make=make_nothing,
        argv=lambda b, n: [os.path.join(b, "bench_prodcons"), "--blocks", str(n)],
        check=check_prodcons),
    Program(
        "prodcons-x2", "bench_prodcons --pairs 2: 2 producers, 2 consumers, one queue",
        binary="bench_prodcons", full=800_000, smoke=10_000, make=make_nothing,
        argv=lambda b, n: [os.path.join(b, "bench_prodcons"), "--pairs", "2", "--blocks",
                           str(n)],
        check=check_prodcons),
]
PROGRAM_NAMES = [p.name for p in PROGRAMS]


def missing_binary(prog: Program, bench_dir: str) -> str | None:
    """Why the program can't run here, or None. (bench_spawn is checked once, in main.)"""
    if prog.binary == "bench_prodcons":  # ours, built with bench/
        path = os.path.join(bench_dir, prog.binary)
        return None if os.access(path, os.X_OK) else f"{path} not found (build bench/)"
    return None if shutil.which(prog.binary) else f"{prog.binary} not found (not installed)"


# ---- Running one program once ----


@dataclass
class Run:
    returncode: int
    wall: float  # seconds
    cpu: float  # user + sys seconds, of the process and its waited-for descendants
    maxrss_kib: int  # ru_maxrss
    stdout: str
    stderr: str


def run_measured(
    spawn: str, cmd: list[str], env: dict[str, str], cwd: str, timeout: float
) -> Run:
    """Runs cmd in cwd through bench_spawn (which reports its ru_maxrss, user and sys time;
    see bench_spawn.cc for why not os.wait4 here) and times it with perf_counter; kills the
    whole process group after `timeout`."""
    out_path, err_path, usage_path = (os.path.join(cwd, f) for f in
                                      (".stdout", ".stderr", ".usage"))
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([spawn, usage_path] + cmd, cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True)
        timer = threading.Timer(timeout, os.killpg, (proc.pid, signal.SIGKILL))
        timer.start()
        try:
            spawn_rc = proc.wait()
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
    with open(out_path, encoding="utf-8", errors="replace") as f:
        stdout = f.read()
    with open(err_path, encoding="utf-8", errors="replace") as f:
        stderr = f.read()
    try:
        with open(usage_path, encoding="utf-8") as f:
            usage = json.load(f)
        os.unlink(usage_path)
    except (OSError, ValueError):
        usage = {"exit": spawn_rc if spawn_rc else -1, "maxrss_kib": 0, "user": 0, "sys": 0}
    return Run(usage["exit"], wall, usage["user"] + usage["sys"], usage["maxrss_kib"], stdout,
               stderr)


def env_for(alloc: Allocator, prog: Program, extra: dict[str, str] | None = None) -> dict:
    """bench_spawn's environment: the allocator's library goes to the program only."""
    env = base_env()
    env.update(prog.env)
    if alloc.lib:
        env["BENCH_CHILD_LD_PRELOAD"] = alloc.lib
    env.update(alloc.env)
    env.update(extra or {})
    return env


def run_checked(
    prog: Program, alloc: Allocator, d: str, n: int, bench_dir: str, timeout: float,
    what: str, extra: dict[str, str] | None = None,
) -> tuple[Run, str]:
    """One run that must exit 0 and pass the program's check: (the run, its result)."""
    cmd = prog.argv(bench_dir, n)
    try:
        run = run_measured(os.path.join(bench_dir, "bench_spawn"), cmd,
                           env_for(alloc, prog, extra), d, timeout)
    except OSError as e:
        raise BenchError(f"{what}: cannot run {shlex.join(cmd)}: {e}") from e
    if run.returncode != 0:
        raise BenchError(
            f"{what}: exit status {run.returncode} from {shlex.join(cmd)}"
            f"{' (timed out?)' if run.returncode == -signal.SIGKILL else ''}\n"
            f"  stderr:\n{tail(run.stderr)}"
        )
    try:
        result = prog.check(run.stdout, d, n)
    except (ValueError, OSError) as e:
        raise BenchError(f"{what}: bad output: {e}\n  stderr:\n{tail(run.stderr)}") from e
    return run, result


# ---- Proving the preloads took ----

INIT_LINE = re.compile(r"^\s*(\d+):\s+calling init: (\S+)")


def check_preload(
    prog: Program, alloc: Allocator, allocs: list[Allocator], d: str, bench_dir: str
) -> str:
    """One un-timed smoke-size run under LD_DEBUG=files (and ARENA_VERBOSE=1 for libarena
    builds); returns a line for the report."""
    what = f"{prog.name} under {alloc.name}: preload check"
    extra = {"LD_DEBUG": "files"}
    if alloc.is_arena:
        extra["ARENA_VERBOSE"] = "1"
    run, _ = run_checked(prog, alloc, d, prog.smoke, bench_dir, 300, what, extra)
    inits: dict[str, set[str]] = {}  # library file name -> pids that called its init
    for line in run.stderr.splitlines():
        m = INIT_LINE.match(line)
        if m:
            lib = os.path.basename(os.path.realpath(m.group(2)))
            inits.setdefault(lib, set()).add(m.group(1))
    # Every dynamically linked process logs libc's init: bench_spawn and at least `processes`
    # of the program's. Fewer means a static binary or an ignored LD_DEBUG: nothing is proven.
    libc = len(inits.get("libc.so.6", ()))
    if libc < 1 + prog.processes:
        raise BenchError(f"{what}: 'calling init: ...libc.so.6' in {libc} process(es) under "
                         f"LD_DEBUG=files, expected at least {1 + prog.processes}\n"
                         f"  stderr:\n{tail(run.stderr)}")
    if alloc.lib is None:
        seen = sorted({a.mapped_name for a in allocs if a.lib} & set(inits))
        if seen:
            raise BenchError(f"{what}: no preload, yet {', '.join(seen)} initialised")
        return (f"{prog.name} / {alloc.name}: none of the preloaded libraries initialised in "
                f"the program's {libc - 1} process(es)")
    pids = inits.get(alloc.mapped_name, set())
    if len(pids) < prog.processes:
        raise BenchError(
            f"{what}: LD_PRELOAD={alloc.lib} did not take: 'calling init: ...{alloc.mapped_name}'"
            f" in {len(pids)} process(es), expected at least {prog.processes}\n"
            f"  stderr:\n{tail(run.stderr)}"
        )
    note = (f"{prog.name} / {alloc.name}: {alloc.mapped_name} initialised in {len(pids)} of "
            f"the program's {libc - 1} process(es)")
    if alloc.is_arena:
        banners = [ln for ln in run.stderr.splitlines() if ln.startswith(BANNER)]
        if not banners:
            raise BenchError(f"{what}: no '{BANNER}' line under ARENA_VERBOSE=1\n"
                             f"  stderr:\n{tail(run.stderr)}")
        note += f", {len(banners)} '{BANNER}' banner(s)"
    return note


# ---- The rounds ----


def prepare(progs: list[Program], root: str, smoke: bool) -> dict[tuple[str, str], str]:
    """Makes every input: {(program, 'run' or 'probe'): directory}."""
    dirs = {}
    for prog in progs:
        for kind, n in (("run", prog.smoke if smoke else prog.full), ("probe", prog.smoke)):
            d = os.path.join(root, prog.name, kind)
            os.makedirs(d)
            prog.make(d, n)
            dirs[(prog.name, kind)] = d
    return dirs


def run_rounds(
    args: argparse.Namespace, allocs: list[Allocator], progs: list[Program],
    dirs: dict[tuple[str, str], str],
) -> list[dict[str, Any]]:
    """All timed runs: each round every program under every allocator, the allocator order
    shuffled per round. Returns the samples in run order (also kept in alloc.samples)."""
    rng = random.Random(SHUFFLE_SEED)
    results: dict[str, tuple[str, str]] = {}
    samples = []
    timeout = 300 if args.smoke else 900
    for rnd in range(1, args.rounds + 1):
        order = allocs[:]
        rng.shuffle(order)
        log(f"round {rnd}/{args.rounds}: order {' '.join(a.name for a in order)}")
        for prog in progs:
            n = prog.smoke if args.smoke else prog.full
            line = []
            for pos, alloc in enumerate(order):
                what = f"{prog.name} under {alloc.name} (round {rnd})"
                run, result = run_checked(prog, alloc, dirs[(prog.name, "run")], n,
                                          args.bench_dir, timeout, what)
                first = results.setdefault(prog.name, (result, alloc.name))
                if result != first[0]:
                    raise BenchError(f"{what}: result {result!r} differs from {first[1]}'s "
                                     f"{first[0]!r}: the same work gave a different answer")
                sample = {"round": rnd, "position": pos, "program": prog.name,
                          "allocator": alloc.name, "seconds": run.wall, "cpu_seconds": run.cpu,
                          "peak_rss_kib": run.maxrss_kib, "result": result}
                alloc.samples.setdefault(prog.name, []).append(sample)
                samples.append(sample)
                line.append(f"{alloc.name} {run.wall:.2f}s")
            log(f"  {prog.name}: " + ", ".join(line))
    return samples


# ---- Summaries ----


def per_round(alloc: Allocator, prog: str, key: str) -> dict[int, float]:
    return {s["round"]: s[key] for s in alloc.samples.get(prog, [])}


def ratio(a: Allocator | None, b: Allocator | None, prog: str, key: str) -> float | None:
    """Median over rounds of a's key / b's key, rounds paired (time: <1 means a is faster)."""
    if a is None or b is None:
        return None
    r = paired_ratio(per_round(a, prog, key), per_round(b, prog, key))
    return r[0] if r else None


def analyse(allocs: list[Allocator], progs: list[Program]) -> dict[str, Any]:
    """Every number the report and plots use, as plain data (also written to programs.json)."""
    by = {a.name: a for a in allocs}
    glibc, mimalloc = by.get("glibc"), by.get("mimalloc")
    rows = []
    for prog in progs:
        for alloc in allocs:
            samples = alloc.samples.get(prog.name)
            if not samples:
                continue
            row = {
                "program": prog.name,
                "allocator": alloc.name,
                "median_seconds": statistics.median(s["seconds"] for s in samples),
                "median_cpu_seconds": statistics.median(s["cpu_seconds"] for s in samples),
                "median_peak_rss_kib": statistics.median(s["peak_rss_kib"] for s in samples),
                "rounds": len(samples),
            }
            for ref_name, ref in (("glibc", glibc), ("mimalloc", mimalloc)):
                row[f"time_vs_{ref_name}"] = ratio(alloc, ref, prog.name, "seconds")
                row[f"rss_vs_{ref_name}"] = ratio(alloc, ref, prog.name, "peak_rss_kib")
            rows.append(row)
    means = {}
    for alloc in allocs:
        mine = [r for r in rows if r["allocator"] == alloc.name]
        means[alloc.name] = {
            k: geomean([r[k] for r in mine if r[k] is not None])
            for k in ("time_vs_glibc", "time_vs_mimalloc", "rss_vs_glibc", "rss_vs_mimalloc")
        }
        means[alloc.name]["programs"] = len(mine)
    return {"rows": rows, "geomean": means,
            "targets": {a.name: targets(a.name, rows, means) for a in allocs if a.is_arena}}


def targets(name: str, rows: list[dict[str, Any]], means: dict[str, Any]) -> list[dict]:
    """Issue 17's targets for one libarena build, each met or missed, with its figure."""
    mine = {r["program"]: r for r in rows if r["allocator"] == name}
    g = means.get(name, {})
    mi_vs_glibc = means.get("mimalloc", {}).get("time_vs_glibc")
    slower = sorted((p, r["time_vs_glibc"]) for p, r in mine.items()
                    if r["time_vs_glibc"] is not None and r["time_vs_glibc"] > 1.0)
    prodcons = [(p, mine[p]["time_vs_mimalloc"]) for p in ("prodcons", "prodcons-x2")
                if p in mine and mine[p]["time_vs_mimalloc"] is not None]

    def target(what: str, met: bool | None, figure: str) -> dict[str, Any]:
        return {"target": what, "met": met, "figure": figure}

    out = [
        target("time geomean <= mimalloc's (paired libarena/mimalloc geomean <= 1.00)",
               None if g.get("time_vs_mimalloc") is None else g["time_vs_mimalloc"] <= 1.0,
               f"{fmt_ratio(g.get('time_vs_mimalloc'))} of mimalloc (time vs glibc: "
               f"{fmt_ratio(g.get('time_vs_glibc'))}, mimalloc's {fmt_ratio(mi_vs_glibc)})"),
        target("time geomean <= 0.85x glibc",
               None if g.get("time_vs_glibc") is None else g["time_vs_glibc"] <= 0.85,
               fmt_ratio(g.get("time_vs_glibc"))),
        target("no program slower than glibc", not slower if mine else None,
               ", ".join(f"{p} {fmt_ratio(r)}" for p, r in slower) or "none slower"),
        target("producer/consumer at or ahead of mimalloc",
               all(r <= 1.0 for _, r in prodcons) if prodcons else None,
               ", ".join(f"{p} {fmt_ratio(r)} of mimalloc's time" for p, r in prodcons)
               or "not run"),
        target("peak RSS geomean <= glibc's",
               None if g.get("rss_vs_glibc") is None else g["rss_vs_glibc"] <= 1.0,
               fmt_ratio(g.get("rss_vs_glibc"))),
    ]
    return out


# ---- Reporting ----


def tables(allocs: list[Allocator], progs: list[Program], a: dict[str, Any]) -> list[str]:
    names = [al.name for al in allocs]
    arenas = [al.name for al in allocs if al.is_arena] if "mimalloc" in names else []
    rows = {(r["program"], r["allocator"]): r for r in a["rows"]}
    ran = [p.name for p in progs if any((p.name, n) in rows for n in names)]
    g = a["geomean"]

    def cells(prog: str, fmt: Callable[[dict[str, Any]], str], keys: list[str]) -> str:
        return " | ".join(fmt(rows[(prog, n)]) if (prog, n) in rows else "n/a" for n in keys)

    def header(extra: list[str]) -> list[str]:
        return ["| program | " + " | ".join(names + extra) + " |",
                "|---|" + "---:|" * (len(names) + len(extra))]

    lines = [
        "### Wall time",
        "",
        "Median seconds over rounds, and in brackets the median of per-round ratios to glibc "
        "(<1: faster than glibc). The last column(s): each libarena build's time over "
        "mimalloc's, paired per round.",
        "",
        *header([f"{n}/mimalloc" for n in arenas]),
    ]
    for p in ran:
        line = cells(p, lambda r: f"{r['median_seconds']:.2f} ({fmt_ratio(r['time_vs_glibc'])})",
                     names)
        if arenas:
            line += " | " + cells(p, lambda r: fmt_ratio(r["time_vs_mimalloc"]), arenas)
        lines.append(f"| {p} | {line} |")
    lines.append("| **geometric mean** | " + " | ".join(
        [f"**{fmt_ratio(g[n]['time_vs_glibc'])}**" for n in names]
        + [f"**{fmt_ratio(g[n]['time_vs_mimalloc'])}**" for n in arenas]) + " |")
    lines += [
        "",
        "### Peak RSS",
        "",
        "Median over rounds of ru_maxrss (wait4 in bench_spawn), MiB, and in brackets the "
        "median of per-round ratios to glibc (<1: less memory). It is the largest resident set "
        "of the program or of any descendant it waited for: for g++ the largest of the driver, "
        "cc1plus and as; for git the largest process of the script.",
        "",
        *header([]),
    ]
    for p in ran:
        line = cells(p, lambda r: f"{r['median_peak_rss_kib'] / 1024:.1f} "
                     f"({fmt_ratio(r['rss_vs_glibc'])})", names)
        lines.append(f"| {p} | {line} |")
    lines.append("| **geometric mean** | " + " | ".join(
        f"**{fmt_ratio(g[n]['rss_vs_glibc'])}**" for n in names) + " |")
    lines += [
        "",
        "### CPU time",
        "",
        "Median user+sys seconds over rounds, of the program and its waited-for descendants.",
        "",
        *header([]),
    ]
    for p in ran:
        line = cells(p, lambda r: f"{r['median_cpu_seconds']:.2f}", names)
        lines.append(f"| {p} | {line} |")
    return lines


def target_lines(a: dict[str, Any]) -> list[str]:
    lines = []
    for name, ts in a["targets"].items():
        lines += [f"{name}:", ""]
        for t in ts:
            verdict = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
            lines.append(f"- {t['target']}: {verdict} ({t['figure']})")
        lines.append("")
    return lines


def write_reports(
    out_dir: str, args: argparse.Namespace, command: str, machine: dict[str, Any],
    allocs: list[Allocator], progs: list[Program], skipped: dict[str, str], notes: list[str],
    samples: list[dict[str, Any]], elapsed: float,
) -> str:
    a = analyse(allocs, progs)
    lines = ["# Real programs under each allocator", "",
             "Generated by `bench/run_programs.py`; do not edit by hand.", ""]
    if args.smoke:
        lines += ["**SMOKE RUN: tiny inputs, one round; the numbers mean nothing.**", ""]
    lines += busy_warning(machine)
    lines += [
        f"- date: {machine['date']}",
        f"- command: `{command}`",
        f"- machine: {machine_line(machine)}",
        load_line(machine),
        f"- rounds: {args.rounds}, interleaved (each round runs every program under every "
        f"allocator, allocator order shuffled per round, seed {SHUFFLE_SEED}); wall time "
        f"{elapsed:.0f} s",
        f"- allocator environment passed through: {allocator_env_vars() or 'none'}",
        "",
        "Allocators:",
        "",
    ]
    lines += [f"- {al.name}: {al.describe()}" for al in allocs]
    lines += ["", "Programs:", ""]
    for p in progs:
        lines.append(f"- {p.name}: {p.what} (n = {p.smoke if args.smoke else p.full})")
    for name, why in skipped.items():
        lines.append(f"- {name}: **SKIPPED** ({why})")
    lines += ["", "## Targets", ""] + target_lines(a)
    lines += ["## Results", ""] + tables(allocs, progs, a)
    lines += ["", "## Preload checks", "",
              "One un-timed smoke-size run per program and allocator under `LD_DEBUG=files` "
              "(the dynamic linker's `calling init:` lines, counted per process) and, for "
              "libarena builds, `ARENA_VERBOSE=1`:", ""]
    lines += [f"- {n}" for n in notes]
    md = "\n".join(lines) + "\n"

    os.makedirs(out_dir, exist_ok=True)
    write(os.path.join(out_dir, "programs.md"), md)
    write_json(os.path.join(out_dir, "programs.json"), {
        "command": command, "machine": machine, "rounds": args.rounds, "smoke": args.smoke,
        "shuffle_seed": SHUFFLE_SEED, "elapsed_seconds": elapsed,
        "allocator_env": allocator_env_vars(),
        "allocators": [{"name": al.name, "lib": al.lib, "env": al.env, "is_arena": al.is_arena}
                       for al in allocs],
        "programs": [{"name": p.name, "what": p.what, "n": p.smoke if args.smoke else p.full}
                     for p in progs],
        "skipped": skipped, "preload_checks": notes, **a, "samples": samples,
    })
    plot(out_dir, allocs, progs, a, machine, args.smoke)
    return md


def plot(out_dir: str, allocs: list[Allocator], progs: list[Program], a: dict[str, Any],
         machine: dict[str, Any], smoke: bool) -> None:
    """programs.png (time vs glibc) and programs_rss.png, drawn as report.py draws the suite."""
    import report  # bench/report.py: its gnuplot bar charts

    if shutil.which("gnuplot") is None:
        log("gnuplot not found: no programs.png")
        return
    names = [al.name for al in allocs]
    labels = [p.name for p in progs if any(r["program"] == p.name for r in a["rows"])]
    colours = dict(report.COLOURS)
    spare = ["#8172b2", "#937860", "#da8bc3", "#64b5cd", "#ccb974"]
    for al in allocs:
        if al.name not in colours:
            colours[al.name] = spare[len([c for c in colours if c not in report.COLOURS])
                                     % len(spare)]
    tag = " (SMOKE)" if smoke else ""
    date = machine["date"][:10]
    for png, key, title, ylabel, log2 in (
        ("programs.png", "time_vs_glibc",
         f"Real programs: wall time relative to glibc (lower is better, log scale) - {date}{tag}",
         "wall time divided by glibc's", True),
        ("programs_rss.png", "rss_vs_glibc",
         f"Real programs: peak RSS relative to glibc (lower is better) - {date}{tag}",
         "peak RSS divided by glibc's", False),
    ):
        values = {(r["program"], r["allocator"]): r[key] for r in a["rows"]}
        script = report.clustered(os.path.join(out_dir, png), title, ylabel, labels, names,
                                  values, log2, colours)
        try:
            report.gnuplot(script)
        except subprocess.CalledProcessError as e:
            log(f"gnuplot failed for {png}: {e.stderr.strip()}")


# ---- main ----


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arena", required=True, help="path to libarena.so (required)")
    p.add_argument("--bench-dir", default=DEFAULT_BUILD_BENCH,
                   help="directory holding bench_prodcons (default build-bench/bench)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5; "
                   "1 with --smoke)")
    p.add_argument("--smoke", action="store_true", help="tiny inputs, for the test suite")
    p.add_argument("--only", help="comma-separated programs to run: " + ",".join(PROGRAM_NAMES))
    p.add_argument("--allocators", help="comma-separated allocators to run (default all: "
                   "glibc,jemalloc,mimalloc,tcmalloc,libarena and the variants)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                   help="another libarena build as an extra column (repeatable)")
    p.add_argument("--out", help="directory for programs.{md,json,png} (default bench/results "
                   "next to this script; with --smoke a temporary directory, removed)")
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.smoke else 5
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    args.only = args.only.split(",") if args.only else None
    bad = [n for n in args.only or [] if n not in PROGRAM_NAMES]
    if bad:
        p.error(f"--only: unknown program(s) {', '.join(bad)}; known: {', '.join(PROGRAM_NAMES)}")
    variants = []
    for v in args.variant:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            p.error(f"--variant {v}: expected NAME=PATH")
        if not os.path.isfile(path):
            p.error(f"--variant {v}: {path} not found")
        variants.append((name, os.path.abspath(path)))
    args.variant = variants
    args.arena = os.path.abspath(args.arena)
    if not os.path.isfile(args.arena):
        p.error(f"--arena {args.arena}: libarena.so not found (it is required)")
    args.bench_dir = os.path.abspath(args.bench_dir)
    args.allocators = args.allocators.split(",") if args.allocators else None
    return args


def pick_allocators(args: argparse.Namespace) -> list[Allocator]:
    allocs = standard_allocators(args.arena)
    allocs += [Allocator(name, path, is_arena=True) for name, path in args.variant]
    names = [a.name for a in allocs]
    if len(set(names)) != len(names):
        raise BenchError(f"allocator names must differ: {names}")
    if args.allocators:
        unknown = [n for n in args.allocators if n not in names]
        if unknown:
            raise BenchError(f"--allocators: unknown {unknown}; known: {names}")
        allocs = [a for a in allocs if a.name in args.allocators]
    for a in allocs:
        if a.skipped:
            raise BenchError(f"{a.name}: {a.skipped} (leave it out with --allocators)")
    return allocs


def pick_programs(args: argparse.Namespace) -> tuple[list[Program], dict[str, str]]:
    progs, skipped = [], {}
    for prog in PROGRAMS:
        if args.only and prog.name not in args.only:
            continue
        why = missing_binary(prog, args.bench_dir)
        if why:
            log(f"WARNING: SKIPPING {prog.name}: {why}")
            skipped[prog.name] = why
        else:
            progs.append(prog)
    return progs, skipped


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = shlex.join([sys.executable] + sys.argv)
    if os.environ.get("LD_PRELOAD"):
        log("note: ignoring LD_PRELOAD from the environment; each allocator sets its own")
    machine = machine_info()
    if machine["busy"]:
        log(f"WARNING: load average {load_before(machine):.2f} on {machine['cores']} cores: "
            "the machine is busy, results will be noisy")
    spawn = os.path.join(args.bench_dir, "bench_spawn")
    if not os.access(spawn, os.X_OK):
        log(f"error: {spawn} not found: build bench/ and pass its directory as --bench-dir")
        return 2
    start = time.monotonic()
    try:
        allocs = pick_allocators(args)
        progs, skipped = pick_programs(args)
        if not progs:
            raise BenchError("no program to run")
        with tempfile.TemporaryDirectory(prefix="bench-programs-") as root:
            log(f"making the inputs in {root}")
            dirs = prepare(progs, root, args.smoke)
            notes = []
            for prog in progs:
                for alloc in allocs:
                    notes.append(check_preload(prog, alloc, allocs, dirs[(prog.name, "probe")],
                                               args.bench_dir))
                    log(f"check: {notes[-1]}")
            samples = run_rounds(args, allocs, progs, dirs)
    except BenchError as e:
        log(f"FAILED: {e}")
        return 1
    elapsed = time.monotonic() - start
    machine["loadavg_end"] = os.getloadavg()
    machine["date_end"] = now_utc()
    with results_dir(args.out, args.smoke, "bench-programs-smoke-") as (out_dir, tmp):
        md = write_reports(out_dir, args, command, machine, allocs, progs, skipped, notes,
                           samples, elapsed)
    print(md, end="")
    where = "a temporary directory (removed)" if tmp else out_dir
    log(f"wrote programs.md, programs.json and the plots to {where} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
