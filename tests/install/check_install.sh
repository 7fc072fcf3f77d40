#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the build tree into a temporary DESTDIR and checks the result (tests/install/meson.build
# passes the build's directories and version in the environment):
#   - every file meson install should put there, and no /etc/cmond/cmond.conf;
#   - the unit's paths filled in; the Dockerfile with no version literal; scripts/version.sh;
#   - pkg-config with that sysroot: arena-native's --cflags --libs build and link a small program
#     from the installed header and library only, which runs and reports the version;
#     arena's preload variable; arena-client found with its requirements;
#   - every installed program's --version is the project version.
set -euo pipefail

fail() { echo "FAIL: $*" >&2; exit 1; }
: "${MESON:?}" "${BUILD_ROOT:?}" "${SOURCE_ROOT:?}" "${VERSION:?}" "${CXX:?}" "${PREFIX:?}"
: "${BINDIR:?}" "${LIBDIR:?}" "${INCLUDEDIR:?}" "${DATADIR:?}" "${UNITDIR:?}"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cmon-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
dest=$tmp/dest

# A directory option as an absolute path (meson allows both forms).
abs() { case $1 in /*) echo "$1" ;; *) echo "$PREFIX/$1" ;; esac; }
bindir=$(abs "$BINDIR") libdir=$(abs "$LIBDIR") includedir=$(abs "$INCLUDEDIR")
docdir=$(abs "$DATADIR")/doc/cmond

if ! "$MESON" install -C "$BUILD_ROOT" --no-rebuild --destdir "$dest" >"$tmp/install.log" 2>&1; then
    cat "$tmp/install.log"
    fail "meson install --destdir failed"
fi

# ---- The files ----
expected=(
    "$bindir/cmond" "$bindir/arena-exporter" "$bindir/arena-stat" "$bindir/arena-prof"
    "$bindir/arena-run"
    "$libdir/libarena.so" "$libdir/libarena-native.a" "$libdir/libarena-client.a"
    "$libdir/pkgconfig/arena.pc" "$libdir/pkgconfig/arena-native.pc"
    "$libdir/pkgconfig/arena-client.pc"
    "$includedir/arena/arena.h" "$includedir/arena/version.h" "$includedir/arena/stats_page.h"
    "$includedir/arena/stats_snapshot.h" "$includedir/arena/profile_page.h"
    "$includedir/arena/client/reader.h" "$includedir/arena/client/schema.h"
    "$includedir/arena/client/collector.h" "$includedir/arena/client/json.h"
    "$includedir/arena/client/profile.h" "$includedir/arena/client/text.h"
    "$UNITDIR/cmond.service" "$PREFIX/lib/tmpfiles.d/arena.conf"
    "$docdir/cmond.conf.example" "$docdir/README.md"
)
for f in "${expected[@]}"; do
    [ -f "$dest$f" ] || fail "not installed: $f"
done
for f in /etc/cmond/cmond.conf "$PREFIX/etc/cmond/cmond.conf"; do
    [ ! -e "$dest$f" ] || fail "installed over a real config: $f"
done

unit=$dest$UNITDIR/cmond.service
grep -qxF "ExecStart=$bindir/cmond --config /etc/cmond/cmond.conf" "$unit" ||
    fail "cmond.service: no ExecStart=$bindir/cmond"
grep -qxF "Documentation=file://$docdir/cmond.conf.example" "$unit" ||
    fail "cmond.service: Documentation= is not $docdir/cmond.conf.example"
! grep -nE '@[A-Z_]+@' "$unit" || fail "cmond.service: placeholders left"

# ---- The version, one literal ----
[ "$("$SOURCE_ROOT/scripts/version.sh")" = "$VERSION" ] || fail "scripts/version.sh is not $VERSION"
! grep -nF "$VERSION" "$SOURCE_ROOT/docker/Dockerfile" ||
    fail "docker/Dockerfile has the version $VERSION as a literal"
grep -qxF "#define ARENA_VERSION_STRING \"$VERSION\"" "$dest$includedir/arena/version.h" ||
    fail "arena/version.h is not $VERSION"

# ---- pkg-config against the DESTDIR sysroot ----
export PKG_CONFIG_SYSROOT_DIR=$dest
export PKG_CONFIG_LIBDIR=$dest$libdir/pkgconfig # ours only: never a system-wide arena-native.pc
[ "$(pkg-config --modversion arena-native)" = "$VERSION" ] || fail "arena-native.pc: not $VERSION"
flags=$(pkg-config --cflags --libs arena-native) || fail "pkg-config --cflags --libs arena-native"
for want in "-I$dest$includedir" "-L$dest$libdir" -larena-native; do
    case " $flags " in *" $want "*) ;; *) fail "arena-native flags without $want: $flags" ;; esac
done
preload=$(pkg-config --variable=preload arena) || fail "pkg-config --variable=preload arena"
[ "${preload#"$dest"}" = "$libdir/libarena.so" ] || fail "arena.pc: preload=$preload"

cat >"$tmp/use_native.cc" <<'CC'
#include <arena/arena.h>
#include <cstdio>
#include <cstring>
int main() {
    arena_config_t config = arena_config(4096, 64);
    arena_t* arena = nullptr;
    if (arena_init(&arena, &config) != 0) return 2;
    void* p = arena_alloc(arena, 10000);
    if (p == nullptr || arena_free(arena, p) != 0) return 3;
    arena_teardown(arena);
    if (std::strcmp(arena_version(), ARENA_VERSION_STRING) != 0) return 4;
    std::printf("%s\n", arena_version());
}
CC
# shellcheck disable=SC2086 # the flags are words
"$CXX" -std=c++20 -o "$tmp/use_native" "$tmp/use_native.cc" $flags >"$tmp/cxx.log" 2>&1 ||
    { cat "$tmp/cxx.log"; fail "a program on the installed arena.h and arena-native does not build"; }
[ "$("$tmp/use_native")" = "$VERSION" ] || fail "the arena-native program does not report $VERSION"

# arena-client needs prometheus-cpp-core and nlohmann_json from the system: no sysroot for those.
unset PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_LIBDIR
PKG_CONFIG_PATH=$dest$libdir/pkgconfig pkg-config --print-errors --exists arena-client ||
    fail "arena-client.pc or its requirements not found"

# ---- Every program reports the project version ----
export LD_LIBRARY_PATH=$dest$libdir ARENA_STATS_DIR=$tmp/stats # cmond runs on libarena
check_version() { # program, expected first line
    local out
    out=$("$dest$bindir/$1" --version 2>&1 | head -n 1) || fail "$1 --version failed"
    [ "$out" = "$2" ] || fail "$1 --version: '$out', expected '$2'"
}
check_version cmond "cmond $VERSION"
check_version arena-exporter "arena-exporter $VERSION"
check_version arena-stat "arena-stat $VERSION"
check_version arena-run "arena-run (libarena) $VERSION"

echo "ok: $(cd "$dest" && find . -type f | wc -l) files installed, version $VERSION"
