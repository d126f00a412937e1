#!/usr/bin/env bash
# Queue benchmarks (issue 3): lasync.Queue against the queues of cqueues, asyncio, uvloop
# and Node, printed as one table with ratios. Never fails: it prints numbers.
#
#   bench/queue/run.sh                 # or via bench/run.sh (which calls this)
#
#   pingpong  two tasks, two unbounded queues; per round trip each task does one put and
#             one get (QUEUE_PINGPONG_N round trips, default 200000)
#   pipeline  producer -> Queue(64) -> worker (x*2) -> Queue(64) -> consumer
#             (QUEUE_PIPELINE_N items, default 200000)
# Knobs (shared with bench/run.sh): LASYNC_BUILD, BENCH_RUNS (best of, default 3; runs are
# interleaved round-robin across peers), BENCH_TIMEOUT, LUA, PYTHON, NODE.
set -u
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$DIR/../.." && pwd)
cd "$ROOT" || exit 1
BUILD=${LASYNC_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
export LUA_CPATH="$BUILD/lua/?.so;;"
export LUA_PATH="$ROOT/lua/?.lua;;"
RUNS=${BENCH_RUNS:-3}
TIMEOUT=${BENCH_TIMEOUT:-300}
LUA=${LUA:-lua5.4}
PYTHON=${PYTHON:-/usr/bin/python3}
NODE=${NODE:-node}
declare -A N=([pingpong]=${QUEUE_PINGPONG_N:-200000} [pipeline]=${QUEUE_PIPELINE_N:-200000})
MODES="pingpong pipeline"
PEERS="lasync cqueues asyncio uvloop node"
# Targets from issue 3: how many times faster lasync must be (peer time / lasync time).
declare -A TARGET=([pingpong:cqueues]=2 [pingpong:uvloop]=5)

declare -A AVAIL=() WHY=()
[ -f "$BUILD/lua/lasync.so" ] && $LUA -e 'require "lasync"' 2>/dev/null && AVAIL[lasync]=1 || WHY[lasync]="$BUILD/lua/lasync.so missing or not loadable"
$LUA -e 'require "cqueues"' 2>/dev/null && AVAIL[cqueues]=1 || WHY[cqueues]="lua-cqueues not installed"
$PYTHON -c 'import asyncio' 2>/dev/null && AVAIL[asyncio]=1 || WHY[asyncio]="$PYTHON not usable"
$PYTHON -c 'import uvloop' 2>/dev/null && AVAIL[uvloop]=1 || WHY[uvloop]="uvloop not importable by $PYTHON"
$NODE --version >/dev/null 2>&1 && AVAIL[node]=1 || WHY[node]="$NODE not found"

cmd() { # peer -> interpreter and file
  case $1 in
    lasync|cqueues) echo "$LUA $DIR/$1.bench.lua" ;;
    asyncio|uvloop) echo "$PYTHON $DIR/$1.bench.py" ;;
    node) echo "$NODE $DIR/node.bench.js" ;;
  esac
}

declare -A BEST=() NOTE=()
for ((r = 1; r <= RUNS; r++)); do
  for m in $MODES; do
    for p in $PEERS; do
      [ -n "${AVAIL[$p]:-}" ] || continue
      out=$(timeout "$TIMEOUT" $(cmd "$p") "${N[$m]}" "$m" 2>&1)
      line=$(grep -m1 '^RESULT ' <<<"$out")
      if [ -z "$line" ]; then NOTE[$m:$p]="failed: $(tail -n 2 <<<"$out" | tr '\n' ' ' | head -c 200)"; continue; fi
      secs=$(cut -d' ' -f3 <<<"$line")
      old=${BEST[$m:$p]:-}
      if [ -z "$old" ] || awk -v a="$secs" -v b="$old" 'BEGIN { exit !(a < b) }'; then BEST[$m:$p]=$secs; fi
    done
  done
done

echo "queue: pingpong = ${N[pingpong]} round trips (2 puts + 2 gets each), pipeline = ${N[pipeline]} items"
echo "through 2 bounded queues (64); best of $RUNS; 'x' = peer time / lasync time (how many times faster lasync is)"
printf '%-9s %12s %9s %8s %9s %6s   %12s %9s %8s\n' peer "pingpong(s)" "us/trip" "x" target met "pipeline(s)" "us/item" "x"
for p in $PEERS; do
  if [ -z "${AVAIL[$p]:-}" ]; then printf '%-9s skipped: %s\n' "$p" "${WHY[$p]}"; continue; fi
  row=$(printf '%-9s' "$p")
  for m in $MODES; do
    s=${BEST[$m:$p]:-}
    l=${BEST[$m:lasync]:-}
    if [ -z "$s" ]; then
      cell=$(printf '%12s %9s %8s' "-" "-" "-")
    else
      us=$(awk -v s="$s" -v n="${N[$m]}" 'BEGIN { printf "%.3f", s / n * 1e6 }')
      if [ -n "$l" ]; then x=$(awk -v s="$s" -v l="$l" 'BEGIN { printf "%.2fx", s / l }'); else x=n/a; fi
      cell=$(printf '%12.3f %9s %8s' "$s" "$us" "$x")
    fi
    row="$row $cell"
    if [ "$m" = pingpong ]; then
      t=${TARGET[$m:$p]:-}
      met=-
      if [ -n "$t" ] && [ -n "$s" ] && [ -n "$l" ]; then
        met=$(awk -v s="$s" -v l="$l" -v t="$t" 'BEGIN { print (s / l >= t) ? "yes" : "NO" }')
      fi
      row="$row $(printf '%9s %6s  ' "${t:+>= ${t}x}" "$met")"
    fi
  done
  echo "$row"
  for m in $MODES; do [ -n "${NOTE[$m:$p]:-}" ] && echo "          note ($m): ${NOTE[$m:$p]}"; done
done
exit 0
