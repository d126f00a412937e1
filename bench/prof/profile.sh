#!/usr/bin/env bash
# Profile one benchmark program under an interpreter that keeps the Lua core's symbols
# (bench/prof/luaprof.c linked with Debian's liblua5.4.a; /usr/bin/lua5.4 is stripped).
#   bench/prof/profile.sh [bench/spawn/lasync.bench.lua [N]]
# 1. perf record -g: top 25 functions by self time, and the split by shared object
#    (falls back to callgrind's instruction counts if perf does not work here);
# 2. callgrind on min(N, 20000) ops: calls per op of malloc/free/epoll_wait/lua_resume...
#    (PROF_CALLS=0 skips it).
# Data stays in $PROF_OUT (default /tmp/lasync-prof): perf report -i $PROF_OUT/perf.data
set -eu
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
cd "$ROOT"
BUILD=${LASYNC_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
export LUA_CPATH="$BUILD/lua/?.so;;" LUA_PATH="$PWD/lua/?.lua;;"
OUT=${PROF_OUT:-/tmp/lasync-prof}
mkdir -p "$OUT"
SCRIPT=${1:-bench/spawn/lasync.bench.lua}
N=${2:-200000}

LUA=$OUT/luaprof
if [ -f /usr/lib/x86_64-linux-gnu/liblua5.4.a ]; then
  gcc -O2 -g -I/usr/include/lua5.4 "$BENCH_DIR/prof/luaprof.c" \
    /usr/lib/x86_64-linux-gnu/liblua5.4.a -lm -ldl -Wl,-E -o "$LUA"
else
  echo "liblua5.4.a not found (liblua5.4-dev): profiling with the stripped lua5.4" >&2
  LUA=lua5.4
fi

echo "== perf record -g: $SCRIPT $N"
if perf record -g -o "$OUT/perf.data" -- "$LUA" "$SCRIPT" "$N" >"$OUT/run.out" 2>"$OUT/perf.err"; then
  cat "$OUT/run.out"
  echo "-- self time by function (top 25)"
  perf report -i "$OUT/perf.data" --no-children --sort symbol,dso --stdio 2>/dev/null |
    grep -E '^ +[0-9.]+%' | awk '{ printf "%8s  %-44s %s\n", $1, $3, $4 }' | head -n 25
  echo "-- self time by shared object"
  perf report -i "$OUT/perf.data" --no-children --sort dso --stdio 2>/dev/null |
    grep -E '^ +[0-9.]+%' | awk '{ printf "%8s  %s\n", $1, $2 }'
else
  echo "perf failed ($(tail -n 1 "$OUT/perf.err")); using callgrind instruction counts" >&2
  valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.full.out" "$LUA" "$SCRIPT" "$N"
  callgrind_annotate "$OUT/callgrind.full.out" 2>/dev/null | head -n 50
fi

if [ "${PROF_CALLS:-1}" != 0 ] && command -v valgrind >/dev/null; then
  CN=$((N < 20000 ? N : 20000))
  echo "== callgrind: calls per op ($SCRIPT $CN; startup included, so ~0.0x noise)"
  valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" "$LUA" "$SCRIPT" "$CN" \
    2>"$OUT/callgrind.err"
  /usr/bin/python3 "$BENCH_DIR/prof/cgcalls.py" "$OUT/callgrind.out" "$CN"
  echo "-- instructions per op: $(awk -v n="$CN" '/^summary:|^totals:/ { printf "%.0f", $2 / n; exit }' "$OUT/callgrind.out")"
fi
