#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Preload test driver: `run_case.sh CASE` runs one case of real programs twice, each time in a
# fresh work dir with its own HOME: once plainly, and once with libarena preloaded into every
# process of the case. The bash that runs the case's steps is itself started under the preload,
# so the shell, coreutils, git's subprocesses, compilers... all allocate from libarena.
#
# The case passes when every step exits 0 in both runs, the normalised stdout of both runs is
# identical, the preloaded run's stderr shows no refused preload (`ERROR: ld.so`) and no heap
# error (`arena: error...`), and the allocator was really in use: libarena is mapped in the
# step-running shell, and (unless PRELOAD_EXPECT_BANNER=0) at least one `arena: active` line
# was printed under ARENA_VERBOSE=1.
#
# Environment:
#   ARENA_LIB              libarena.so to preload (required)
#   ARENA_RUN              the arena-run launcher (the arena-run case only)
#   PRELOAD_EXPECT_BANNER  0 when ARENA_LIB is a stand-in allocator that prints no banner
# Exit status: 0 pass, 1 fail, 2 usage, 77 skip (a program the case needs is missing).
#
# Internally the script re-executes itself as `run_case.sh --steps CASE RUNDIR`: that is the
# step runner, started plainly or under the preload.
# The sh_step pipelines are single-quoted on purpose: they expand when the step runs.
# shellcheck disable=SC2016
set -uo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
CASES=$(dirname "$SELF")/cases

# Every case starts its timestamps here, so commit ids and archive bytes never change.
readonly EPOCH=1700000000

# Programs each case needs. A missing one makes the case SKIP (77), so a machine without node
# reports a skip instead of a silent pass.
COREUTILS_NEEDS="seq sort uniq tr cut paste join sed grep awk xargs wc head tail md5sum sha256sum
  find stat touch tar gzip xz"
declare -A NEEDS=(
  [coreutils]=$COREUTILS_NEEDS
  [sort-large]="awk sort split sha256sum wc"
  [git]="git tar sha256sum"
  [python3]="python3"
  [perl]="perl"
  [gxx]="g++ sha256sum"
  [sqlite3]="sqlite3"
  [node]="node"
  [cmake]="cmake cc c++"
  [arena-run]=$COREUTILS_NEEDS
  [cpython-posix]="env"
  [cpython-subprocess]="env"
)

# =============================================================================================
# Step runner: everything from here to the harness runs inside `--steps`, i.e. possibly under
# the preload. Each step runs in a subshell started in the work dir, so steps share state only
# through files.
# =============================================================================================

# step LABEL CMD [ARG...]: runs CMD with errexit on, so any failing command inside a
# multi-command step fails the step. The label goes to stdout and stderr (to find a step's
# messages), and a non-zero status also goes into stdout so the diff shows it.
step() {
  local label=$1 rc
  shift
  printf '### %s\n' "$label"
  printf '### %s\n' "$label" >&2
  # Not `( ... ) || rc=$?`: bash ignores errexit in anything on the left of `||`.
  (set -e; "$@")
  rc=$?
  printf '%s %d\n' "$label" "$rc" >>"$STATUS_FILE"
  if ((rc != 0)); then
    printf '### %s exited %d\n' "$label" "$rc"
  fi
  return 0
}

# sh_step LABEL 'PIPELINE': a one-line shell pipeline as a step (pipefail is on).
sh_step() {
  step "$1" eval "$2"
}

# quiet LOG CMD [ARG...]: for tools whose own output has paths and timings (cmake, the build):
# keep it out of the comparison, but show it when the command fails.
quiet() {
  local log=$1 rc=0
  shift
  "$@" >"$log" 2>&1 || rc=$?
  forward_alerts "$log"
  if ((rc != 0)); then
    cat "$log" >&2
  fi
  return "$rc"
}

# forward_alerts FILE...: some tools capture their children's stderr (ninja, cmake's compiler
# checks); copy heap errors and loader errors found there to our stderr, where the harness
# looks for them.
forward_alerts() {
  grep -ahoE 'arena: error.*|ERROR: ld\.so.*' "$@" >&2 || true
}

# Park-Miller LCG in awk: exact in doubles (16807 * 2^31 < 2^53), so mawk and gawk agree.
# lcg_text LINES SEED: deterministic lines of three fields, "tagNN number word".
lcg_text() {
  awk -v n="$1" -v x="$2" 'BEGIN {
    syll = "alphabetagammadeltaepsilonzetaetathetaiotakappalambdamu"
    for (i = 1; i <= n; i++) {
      x = (x * 16807) % 2147483647
      printf "%s%d %d %s\n", substr(syll, x % 40 + 1, 3 + x % 5), x % 97, x % 10007, substr(syll, x % 23 + 1, 2 + x % 9)
    }
  }'
}

# ---- coreutils ------------------------------------------------------------------------------

cu_inputs() {
  seq 1 20000 >nums
  # sort -R reads its key from here; any fixed bytes make the shuffle repeatable.
  seq 1 100000 >random-source
  lcg_text 20000 7 >table
  cut -d' ' -f1,2 table | sort -u -k1,1 >keys-a
  cut -d' ' -f1,3 table | sort -r | sort -u -k1,1 >keys-b
  cu_tree
}

# A small tree of deterministic files with fixed modes and times, for find/stat/tar.
cu_tree() {
  local d f n=0
  for d in tree/{src,doc,data}/{alpha,beta,gamma}; do
    mkdir -p "$d"
    for f in 1 2 3 4; do
      n=$((n + 1))
      lcg_text $((n * 37 % 400 + 1)) "$n" >"$d/file$f.txt"
    done
    printf '#!/bin/sh\necho %s\n' "$d" >"$d/run.sh"
    chmod 755 "$d/run.sh"
  done
  ln -s ../src/alpha/file1.txt tree/doc/link.txt
  find tree -exec touch -h -d "@$EPOCH" {} +
}

steps_coreutils() {
  step    inputs         cu_inputs
  sh_step sort-n         'sort -rn nums | sed -n "1,3p;\$p"'
  sh_step sort-R         'sort -R --random-source=random-source nums >shuffled; head -n 5 shuffled; md5sum <shuffled'
  sh_step sort-k         'sort -t" " -k2,2n -k1,1 table | md5sum; sort -k3,3 -k2,2nr table | sed -n 1,4p'
  sh_step sort-u         'cut -d" " -f3 table | sort -u | wc -l'
  sh_step uniq-c         'cut -d" " -f1 table | sed "s/[0-9]*\$//" | sort | uniq -c | sort -k1,1nr -k2,2 | sed -n 1,8p'
  sh_step tr             'tr a-z A-Z <table | tr -s " " | tr -d 0-9 | md5sum'
  sh_step cut-paste      'cut -d" " -f2 table >c2; cut -d" " -f3 table >c3; paste -d, c3 c2 nums | sed -n "1,3p;19998,\$p"'
  sh_step join           'join keys-a keys-b | wc -l; join keys-a keys-b | md5sum; join -v1 keys-a keys-b | wc -l'
  sh_step sed            'sed -E "s/([a-z]+)([0-9]+)/\2-\1/; /^9/d" table | sed -n "100,103p"'
  sh_step grep-E         'grep -cE "^(alp|bet)[a-z]*[0-9]{2} " table; grep -vE "[13579]\$" table | md5sum; grep -nE "^zeta" table | sed -n 1,3p'
  sh_step awk            'awk "{ s[\$3] += \$2; n[\$3]++ } END { for (k in s) printf \"%s %d %.3f\n\", k, s[k], s[k] / n[k] }" table | sort | md5sum'
  sh_step xargs          'seq 1 500 | xargs -n 7 echo | md5sum; find tree -type f -print0 | xargs -0 -P 2 -n 3 md5sum | sort -k2'
  sh_step wc             'wc -l -w -c table nums random-source'
  sh_step head-tail      'head -n 3 table; tail -n 3 table; head -c 40 random-source | md5sum; tail -c 13 nums'
  sh_step sums           'md5sum table nums; sha256sum table nums shuffled'
  sh_step find           'find tree | sort; find tree -type f -size +4k | sort; find tree -name "*.sh" -perm -u+x | sort'
  # Not the size of directories: that depends on the file system.
  sh_step stat           'find tree ! -type d -print0 | sort -z | xargs -0 stat -c "%n %s %a %F %Y"; find tree -type d | sort | xargs stat -c "%n %a %Y"'
  sh_step tar            'tar --sort=name --owner=0 --group=0 --numeric-owner -cf tree.tar tree; sha256sum tree.tar; tar -tvf tree.tar | md5sum'
  sh_step tar-gz         'tar --sort=name --owner=0 --group=0 --numeric-owner -I "gzip -n -9" -cf tree.tgz tree; sha256sum tree.tgz; tar -tvzf tree.tgz'
  # Several xz blocks so that -T2 really compresses on two threads.
  sh_step tar-xz         'tar --sort=name --owner=0 --group=0 --numeric-owner -I "xz -T2 --block-size=64KiB" -cf tree.txz tree; sha256sum tree.txz; tar -tJf tree.txz | wc -l'
  sh_step untar          'mkdir out; tar -xJf tree.txz -C out; diff -r tree out/tree; echo same'
}

# ---- sort-large -----------------------------------------------------------------------------

# ~50 MB of LCG lines: many equal keys in field 2, spread numbers in field 1.
sl_generate() {
  awk 'BEGIN {
    x = 20240601
    syll = "alphabetagammadeltaepsilonzetaetathetaiotakappalambdamuomicron"
    for (i = 1; i <= 1120000; i++) {
      x = (x * 16807) % 2147483647
      printf "%010d %s %d %s\n", x, substr(syll, x % 50 + 1, 4 + x % 6), x % 100003, substr(syll, x % 31 + 1, 10 + x % 20)
    }
  }' >big
}

steps_sort_large() {
  step    generate       sl_generate
  sh_step input          'wc -l -c big; sha256sum big'
  sh_step sort           'sort big | sha256sum'
  # -S 16M makes sort spill ~50 MB in sorted runs to temp files and merge them back.
  sh_step sort-S16M      'mkdir -p sorttmp; sort -S 16M -T sorttmp big | sha256sum'
  sh_step sort-keys      'sort -S 16M -T sorttmp --parallel=2 -k2,2 -k3,3n big | sha256sum'
  sh_step sort-nr        'sort -S 16M -T sorttmp -nr -k3,3 -s big | sha256sum'
  sh_step sort-u         'sort -S 16M -T sorttmp -u -k2,2 big | wc -l'
  sh_step split-merge    'split -l 250000 big part.; for p in part.*; do sort -o "$p" "$p"; done; sort -m part.* | sha256sum'
}

# ---- git ------------------------------------------------------------------------------------

# at N CMD [ARG...]: run CMD with the author and committer dates at EPOCH + N hours, so every
# commit, tag and rebase gets the same object id in every run.
at() {
  local date="@$((EPOCH + $1 * 3600)) +0000"
  shift
  GIT_AUTHOR_DATE=$date GIT_COMMITTER_DATE=$date "$@"
}

# A few hundred lines in which line numbers matching the seed change, so that successive
# versions delta well against each other (git gc has real work to do).
git_file() {
  awk -v s="$1" 'BEGIN { for (l = 1; l <= 300; l++) print (l % 13 == s % 13 ? "changed by " s : "line " l " of the file") }'
}

git_setup() {
  git config --global user.name "Preload Test"
  git config --global user.email "preload@example.invalid"
  git config --global init.defaultBranch main
  # No background gc or maintenance: they would race with the temp dir's removal.
  git config --global gc.auto 0
  git config --global maintenance.auto false
  git init -q repo
  mkdir repo/src repo/docs
}

git_history() {
  local i
  for i in $(seq 1 20); do
    git_file "$i" >"repo/src/file$((i % 4)).txt"
    lcg_text $((i * 20)) "$i" >"repo/docs/notes$((i % 3)).txt"
    printf 'change %d\n' "$i" >>repo/CHANGELOG
    git -C repo add -A
    at "$i" git -C repo commit -q -m "change $i"
  done
  at 20 git -C repo tag -a v1 -m "version 1"
}

# A feature branch merged with --no-ff, and a topic branch rebased onto the merge.
git_branches() {
  local i
  git -C repo switch -q -c feature v1~6
  for i in 21 22 23; do
    git_file "$i" >"repo/src/feature$i.txt"
    git -C repo add -A
    at "$i" git -C repo commit -q -m "feature $i"
  done
  git -C repo switch -q -c topic main
  git_file 24 >repo/src/topic.txt
  git -C repo add -A
  at 24 git -C repo commit -q -m "topic 24"
  git -C repo switch -q main
  git_file 25 >repo/src/file1.txt
  at 25 git -C repo commit -q -a -m "main 25"
  at 26 git -C repo merge -q --no-ff -m "merge feature" feature
  git -C repo switch -q topic
  at 27 git -C repo rebase -q main
  git -C repo switch -q main
  git -C repo merge -q --ff-only topic
}

steps_git() {
  step    setup          git_setup
  step    history        git_history
  step    branches       git_branches
  sh_step log-stat       'git -C repo log --stat'
  sh_step log-graph      'git -C repo log --graph --oneline --decorate --all'
  sh_step diff           'git -C repo diff --stat v1 HEAD; git -C repo diff v1~6 HEAD | sha256sum; git -C repo diff v1 HEAD -- src/file1.txt | sed -n 1,24p'
  sh_step show           'git -C repo show --format=fuller --stat HEAD~1'
  sh_step blame-grep     'git -C repo blame -s src/file1.txt | sha256sum; git -C repo grep -c "changed by"'
  sh_step archive        'git -C repo archive --format=tar HEAD | sha256sum'
  sh_step gc             'git -C repo gc -q --aggressive'
  # Sizes depend on delta search, which runs on several threads; object counts do not.
  sh_step count-objects  'git -C repo count-objects -v | grep -v "^size"'
  sh_step fsck           'git -C repo fsck --full --strict'
  # --no-local makes clone go through upload-pack/pack-objects instead of copying files.
  sh_step clone          'git clone -q --no-local repo clone; git -C clone log --oneline; git -C clone branch -a; git -C clone fsck --full'
}

# ---- python3 --------------------------------------------------------------------------------

steps_python3() {
  # Every Python object through malloc, not pymalloc's arenas.
  export PYTHONMALLOC=malloc PYTHONDONTWRITEBYTECODE=1
  step python3 python3 "$CASES/python3/workload.py"
  # The system interpreter too, when PATH's python3 (e.g. a pyenv shim) is another one.
  if [[ -x /usr/bin/python3 ]] && ! [[ "$(python3 -c 'import sys; print(sys.executable)')" -ef /usr/bin/python3 ]]; then
    step usr-bin-python3 /usr/bin/python3 "$CASES/python3/workload.py"
  fi
}

# ---- cpython-posix, cpython-subprocess -------------------------------------------------------

# CPython's own regression tests of the process interfaces a preloaded library can disturb:
# descriptors (posix_spawn with stdin closed, pass_fds, close_fds), fork, exec, signals,
# environments. Debian's interpreter and its tests (libpython3.X-testsuite), not PATH's python3,
# which may be a pyenv shim without them. Each runs in one regrtest process, which starts a few
# hundred children, all on the preload.
readonly CPYTHON=/usr/bin/python3

# cpython_regrtest MODULE SECONDS: the step passes when regrtest does (its exit status); stdout
# gets the per-test outcomes (outcomes.py), so a test failing only under the preload is named in
# the diff. SECONDS bounds the module (regrtest --timeout: it dumps the tracebacks and exits);
# meson's timeout for the case is more than twice that, so this fires first.
cpython_regrtest() {
  local module=$1 seconds=$2 rc=0
  export PYTHONMALLOC=malloc PYTHONDONTWRITEBYTECODE=1
  # test_subprocess compares its children's stderr byte for byte, so a banner in every child
  # would fail it; the step runner has printed the one the harness looks for already.
  unset ARENA_VERBOSE
  # env --default-signal: a runner started in the background inherits SIGINT ignored, and
  # Python then installs no KeyboardInterrupt handler; neither module failed that way here, but
  # the run should not depend on how meson was started. The log (timings, load averages) stays
  # out of the diff.
  env --default-signal=INT "$CPYTHON" -m test --timeout "$seconds" --junit-xml "$PWD/$module.xml" -v \
    "$module" >"$module.log" 2>&1 || rc=$?
  forward_alerts "$module.log"
  "$CPYTHON" "$CASES/cpython/outcomes.py" "$module.xml"
  if ((rc != 0)); then
    tail -n 4 "$module.log" >&2
  fi
  return "$rc"
}

steps_cpython_posix() {
  # About 2 s of 159 tests here.
  step test_posix cpython_regrtest test_posix 60
}

steps_cpython_subprocess() {
  # About 31 s of 330 tests here, mostly waiting: its tests sleep and time out on purpose.
  step test_subprocess cpython_regrtest test_subprocess 150
}

# ---- perl, node, sqlite3 ----------------------------------------------------------------------

steps_perl() {
  step perl perl "$CASES/perl/workload.pl"
}

steps_node() {
  step node node "$CASES/node/workload.js"
}

steps_sqlite3() {
  sh_step workload       'sqlite3 work.db <"$CASES/sqlite3/workload.sql"'
  # A dump loaded into a second database must hold the same data.
  sh_step dump-restore   'sqlite3 work.db .dump | sqlite3 copy.db; sqlite3 copy.db "SELECT count(*), total(amount) FROM orders; PRAGMA integrity_check;"'
  sh_step json           'sqlite3 -json work.db "SELECT region, count(*) AS n FROM customer GROUP BY region ORDER BY region"'
}

# ---- gxx --------------------------------------------------------------------------------------

steps_gxx() {
  # A relative source path and -frandom-seed make the object file identical byte for byte.
  step    copy           cp "$CASES/gxx/workload.cc" .
  # The compile itself is the main workload here: cc1plus on <regex> allocates a lot.
  step    compile        g++ -O2 -std=c++20 -pthread -frandom-seed=1 -Wall -Wextra -c workload.cc -o workload.o
  step    link           g++ -pthread workload.o -o workload
  sh_step hashes         'sha256sum workload.o workload'
  step    run            ./workload
}

# ---- cmake ------------------------------------------------------------------------------------

steps_cmake() {
  local generator="Unix Makefiles"
  if command -v ninja >/dev/null; then
    generator=Ninja
  fi
  # Only the exit statuses and the program's output are compared.
  step configure quiet configure.log cmake -S "$CASES/cmake" -B build -G "$generator"
  step build     quiet build.log cmake --build build --parallel 2
  step run       ./build/demo
  step cmake-logs forward_alerts build/CMakeFiles/*.log
}

# ---- arena-run --------------------------------------------------------------------------------

# The same steps as coreutils; the harness starts the step runner through arena-run.
steps_arena_run() {
  steps_coreutils
}

# Entry point of the step runner.
run_steps() {
  local case=$1 rundir=$2
  STATUS_FILE=$rundir/status
  : >"$STATUS_FILE"
  # What this shell has mapped, so the harness can see whether the allocator really got loaded.
  awk 'NF >= 6 { print $5, $6 }' "/proc/$$/maps" | sort -u >"$rundir/maps"
  umask 022
  "steps_${case//-/_}"
  # The run's exit status: 0 only when every step succeeded.
  ! grep -qv ' 0$' "$STATUS_FILE"
}

# =============================================================================================
# Harness
# =============================================================================================

case_list() {
  printf '%s\n' "${!NEEDS[@]}" | sort | paste -sd' '
}

die() {
  printf 'run_case.sh: %s\n' "$*" >&2
  exit 2
}

skip() {
  printf 'SKIP preload-%s: %s\n' "$CASE" "$*"
  exit 77
}

# An environment that is the same for both runs and for every machine.
clean_env() {
  local v
  # meson test sets MALLOC_PERTURB_, which only glibc's malloc honours; a git hook running the
  # tests would leave GIT_DIR and friends; BASH_ENV would run code in every bash we start.
  unset MALLOC_PERTURB_ MALLOC_CHECK_ LD_PRELOAD BASH_ENV ENV CDPATH
  for v in $(compgen -e); do
    case $v in
      GIT_* | XDG_* | ARENA_VERBOSE | ARENA_ABORT_ON_ERROR) unset "$v" ;;
    esac
  done
  export LC_ALL=C TZ=UTC SOURCE_DATE_EPOCH=$EPOCH
  export GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME="Preload Test" GIT_AUTHOR_EMAIL=preload@example.invalid
  export GIT_COMMITTER_NAME="Preload Test" GIT_COMMITTER_EMAIL=preload@example.invalid
  export GIT_AUTHOR_DATE="@$EPOCH +0000" GIT_COMMITTER_DATE="@$EPOCH +0000" GIT_PAGER=cat PAGER=cat
  export PYTHONHASHSEED=0 PERL_HASH_SEED=0 PERL_PERTURB_KEYS=0
  export CASES EPOCH
}

check_needs() {
  local prog
  for prog in ${NEEDS[$CASE]}; do
    command -v "$prog" >/dev/null || skip "needs '$prog', which is not on PATH"
  done
  case $CASE in
    cmake)
      command -v ninja >/dev/null || command -v make >/dev/null || skip "needs 'ninja' or 'make', neither is on PATH"
      ;;
    python3)
      python3 -c 'import sqlite3, zlib, hashlib, concurrent.futures' 2>/dev/null ||
        skip "python3 ($(command -v python3)) lacks one of the modules sqlite3, zlib, hashlib"
      ;;
    cpython-*)
      local module=test_${CASE#cpython-}
      [[ -x $CPYTHON ]] || skip "needs Debian's interpreter $CPYTHON, which is missing"
      "$CPYTHON" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec(sys.argv[1]) is None)' \
        "test.$module" 2>/dev/null ||
        skip "needs CPython's test.$module for $CPYTHON (Debian: libpython$("$CPYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-testsuite, or scripts/deps.sh test)"
      ;;
    arena-run)
      [[ -n ${ARENA_RUN:-} ]] || skip "needs the arena-run launcher, but ARENA_RUN is not set"
      [[ -x $ARENA_RUN ]] || skip "needs the arena-run launcher, but ARENA_RUN=$ARENA_RUN is not executable"
      ;;
  esac
}

now_ms() {
  local t=${EPOCHREALTIME/./}
  echo $((t / 1000))
}

# run_one plain|preload: one full run of the case in $TMP/<mode>; sets RC[mode] and MS[mode].
run_one() {
  local mode=$1 dir=$TMP/$1 start rc=0
  mkdir -p "$dir/work" "$dir/home" "$dir/tmp"
  : >"$dir/status"
  : >"$dir/maps"
  local -a vars=("HOME=$dir/home" "TMPDIR=$dir/tmp") cmd=(bash "$SELF" --steps "$CASE" "$dir")
  if [[ $mode == preload ]]; then
    vars+=(ARENA_VERBOSE=1 ARENA_ABORT_ON_ERROR=1)
    if [[ $CASE == arena-run ]]; then
      cmd=("$ARENA_RUN" "${cmd[@]}")
    else
      vars+=("LD_PRELOAD=$ARENA_LIB")
    fi
  fi
  start=$(now_ms)
  # The braces send bash's own "Aborted (core dumped)" notice for a runner killed by a signal
  # to /dev/null; check_run reports that death in its own words.
  { env -C "$dir/work" "${vars[@]}" "${cmd[@]}" >"$dir/stdout" 2>"$dir/stderr" || rc=$?; } 2>/dev/null
  RC[$mode]=$rc
  MS[$mode]=$(($(now_ms) - start))
}

# The run's own paths differ between runs; replace them with a placeholder.
normalise() {
  local dir=$1 pattern
  pattern=$(printf '%s' "$dir" | sed 's/[][\.*^$|]/\\&/g')
  sed "s|$pattern|@RUN@|g" "$dir/stdout" >"$dir/stdout.norm"
}

# Stderr as shown to a human: without libarena's verbose lines, but with its errors.
shown_stderr() {
  grep -v -e '^arena: ' -e '^[[:space:]]*$' "$1"
  grep '^arena: error' "$1"
}

# stderr_of_step DIR LABEL: the last lines of what one step wrote to stderr.
stderr_of_step() {
  awk -v want="### $2" '/^### / { on = ($0 == want); next } on' "$1/stderr" >"$1/step.err"
  if [[ -s $1/step.err ]]; then
    shown_stderr "$1/step.err" | tail -n 25 | sed 's/^/    | /'
  else
    echo '    (no stderr)'
  fi
}

# grep_by_step FILE PATTERN: matching stderr lines, each prefixed by the step that printed it.
grep_by_step() {
  awk -v re="$2" 'BEGIN { step = "startup" } /^### / { step = substr($0, 5); next } $0 ~ re { print "    | [" step "] " $0 }' "$1" | head -n 10
}

# "134 (SIGABRT)" for a status that means death by a signal.
describe_status() {
  if (($1 > 128 && $1 < 160)); then
    printf '%d (SIG%s)' "$1" "$(kill -l $(($1 - 128)))"
  else
    printf '%d' "$1"
  fi
}

# Whether the step runner had ARENA_LIB mapped: the same file by path, or by inode (arena-run
# may reach the same library through another path).
lib_mapped() {
  local real ino
  real=$(readlink -f "$ARENA_LIB")
  ino=$(stat -L -c %i "$ARENA_LIB")
  awk -v path="$real" -v ino="$ino" '$2 == path || $1 == ino { found = 1 } END { exit !found }' "$1/maps"
}

FAILURES=()
fail() {
  FAILURES+=("$*")
}

check_run() {
  local mode=$1 dir=$TMP/$1 label rc shown=0
  while read -r label rc; do
    [[ $rc == 0 ]] && continue
    fail "$mode run: step '$label' exited $(describe_status "$rc")"
    # A broken allocator fails most steps the same way; the first few tell the story.
    if ((shown++ < 3)); then
      printf -- '--- %s run: step %s exited %s; its stderr:\n' "$mode" "$label" "$(describe_status "$rc")"
      stderr_of_step "$dir" "$label"
    fi
  done <"$dir/status"
  # The shell running the steps can die too (it is on the preload as well); then the last
  # step header on stdout says where.
  if ((RC[$mode] > 128)) || [[ ! -s $dir/status ]]; then
    fail "$mode run: the step runner itself exited $(describe_status "${RC[$mode]}") after $(wc -l <"$dir/status") steps"
    printf -- '--- %s run: last lines of its stderr:\n' "$mode"
    shown_stderr "$dir/stderr" | tail -n 25 | sed 's/^/    | /'
  fi
}

check_preload_stderr() {
  local err=$TMP/preload/stderr
  if grep -q 'ERROR: ld.so' "$err"; then
    fail "the dynamic loader refused the preload"
    printf -- '--- preload run: loader errors (first 10):\n'
    grep_by_step "$err" 'ERROR: ld[.]so'
  fi
  if grep -q '^arena: error' "$err"; then
    fail "libarena reported heap errors ($(grep -c '^arena: error' "$err") lines)"
    printf -- '--- preload run: heap errors (first 10):\n'
    grep_by_step "$err" '^arena: error'
  fi
  BANNERS=$(grep -c '^arena: active' "$err")
  if [[ ${PRELOAD_EXPECT_BANNER:-1} != 0 ]] && ((BANNERS == 0)); then
    fail "no 'arena: active' line on stderr under ARENA_VERBOSE=1: was libarena in use?"
  fi
  # (An empty list means the runner died before it could look; check_run reports that.)
  if [[ -s $TMP/preload/maps ]] && ! lib_mapped "$TMP/preload"; then
    fail "the preloaded step runner did not have $ARENA_LIB mapped"
  fi
  if lib_mapped "$TMP/plain"; then
    fail "the plain step runner had $ARENA_LIB mapped: the plain run was not plain"
  fi
}

compare_outputs() {
  normalise "$TMP/plain"
  normalise "$TMP/preload"
  BYTES=$(wc -c <"$TMP/plain/stdout.norm")
  if ! cmp -s "$TMP/plain/stdout.norm" "$TMP/preload/stdout.norm"; then
    fail "stdout differs between the plain and the preloaded run"
    printf -- '--- stdout diff (plain vs preload, first 120 lines):\n'
    diff -a -u --label plain --label preload "$TMP/plain/stdout.norm" "$TMP/preload/stdout.norm" | head -n 120
  fi
}

seconds() {
  printf '%d.%01d' $(($1 / 1000)) $(($1 % 1000 / 100))
}

harness() {
  CASE=$1
  declare -F "steps_${CASE//-/_}" >/dev/null || die "unknown case '$CASE' (cases: $(case_list))"
  [[ -n ${ARENA_LIB:-} ]] || die "ARENA_LIB must name the allocator to preload"
  [[ -f $ARENA_LIB ]] || die "ARENA_LIB=$ARENA_LIB does not exist"
  ARENA_LIB=$(readlink -f "$ARENA_LIB")
  clean_env
  check_needs

  TMP=$(mktemp -d "${TMPDIR:-/tmp}/preload-$CASE.XXXXXX")
  trap 'rm -rf "$TMP"' EXIT
  # Turn signals into a normal exit so the EXIT trap still cleans up.
  trap 'echo "preload-$CASE: interrupted" >&2; exit 130' INT
  trap 'echo "preload-$CASE: terminated (timeout?)" >&2; exit 143' TERM

  declare -gA RC=() MS=()
  run_one plain
  run_one preload
  BYTES=0 BANNERS=0
  check_run plain
  check_run preload
  check_preload_stderr
  compare_outputs

  local verdict=PASS
  ((${#FAILURES[@]} == 0)) || verdict=FAIL
  printf '%s preload-%s: plain exit %d (%ss), preload exit %d (%ss), compared %d bytes over %d steps, %d banner lines, lib %s\n' \
    "$verdict" "$CASE" "${RC[plain]}" "$(seconds "${MS[plain]}")" "${RC[preload]}" "$(seconds "${MS[preload]}")" \
    "$BYTES" "$(wc -l <"$TMP/plain/status")" "$BANNERS" "$(basename "$ARENA_LIB")"
  if [[ $verdict == FAIL ]]; then
    printf '  - %s\n' "${FAILURES[@]}"
    exit 1
  fi
}

case ${1:-} in
  --steps) run_steps "$2" "$3" ;;
  "" | -h | --help) die "usage: run_case.sh CASE   (cases: $(case_list))" ;;
  *) harness "$1" ;;
esac
