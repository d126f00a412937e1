#!/usr/bin/env bash
# lasync side-by-side benchmarks.  Benchmarks never pass or fail: they print ratios.
#
#   bench/run.sh                      # everything: spawn pingpong memory (+ queue, ffi)
#   bench/run.sh spawn memory         # a subset
#
# Environment knobs:
#   LASYNC_BUILD   build dir (default: build, relative to the repo root)
#   BENCH_RUNS     runs per peer, best one kept (default 3); runs are interleaved
#                  round-robin across peers so a noisy spell does not hit only one peer
#   SPAWN_N PINGPONG_N MEMORY_N      operation counts (200000 200000 100000)
#   MEMORY_BIG_N   the "a million sleeping tasks fit in 2 GB" check (1000000; 0 skips)
#   BENCH_TIMEOUT  seconds per single run (default 300)
#   LUA PYTHON NODE  interpreters (lua5.4, /usr/bin/python3, node)
set -u

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
cd "$ROOT" || exit 1
BUILD=${LASYNC_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
export LASYNC_BUILD=$BUILD
export LUA_CPATH="$BUILD/lua/?.so;;"
export LUA_PATH="$PWD/lua/?.lua;;"
PAGESIZE=$(getconf PAGESIZE 2>/dev/null || echo 4096)
export PAGESIZE

RUNS=${BENCH_RUNS:-3}
TIMEOUT=${BENCH_TIMEOUT:-300}
LUA=${LUA:-lua5.4}
PYTHON=${PYTHON:-/usr/bin/python3}
NODE=${NODE:-node}
export BENCH_RUNS=$RUNS LUA PYTHON NODE

declare -A N=([spawn]=${SPAWN_N:-200000} [pingpong]=${PINGPONG_N:-200000} [memory]=${MEMORY_N:-100000})
BIG_N=${MEMORY_BIG_N:-1000000}

declare -A TITLE=(
  [spawn]="spawn a task that does sleep(0), await it"
  [pingpong]="future ping-pong between two tasks (2 futures, 2 resolves, 2 resumes per round)"
  [memory]="memory per task sleeping on a timer"
)
# targets: "op value" -- for time benchmarks the ratio is how many times faster lasync is
# (peer time / lasync time); for memory it is lasync bytes per task / peer bytes per task
declare -A TARGET=(
  [spawn:cqueues]=">= 4" [spawn:uvloop]=">= 10" [spawn:node]=">= 2"
  [memory:coroutine]="<= 1.25"
)
# peer display order; a bench directory need not have every peer
ORDER="lasync coroutine cqueues luv asyncio uvloop node cqueues_promise"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lasync-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- peer availability -------------------------------------------------------------------
declare -A AVAIL=() WHY=() VERSION=()
probe() { # name -> sets AVAIL / WHY / VERSION
  local p=$1 v
  case $p in
    lasync)
      if [ -f "$BUILD/lua/lasync.so" ] && v=$($LUA -e 'local l = require "lasync"; io.write(tostring(l._VERSION or l.VERSION or "built"))' 2>"$WORK/probe.err"); then
        AVAIL[$p]=1; VERSION[$p]="lasync $v ($BUILD/lua/lasync.so, built $(date -u -r "$BUILD/lua/lasync.so" '+%Y-%m-%d %H:%M:%S UTC'))"
      elif [ -f "$BUILD/lua/lasync.so" ]; then
        WHY[$p]="$BUILD/lua/lasync.so does not load: $(head -c 300 "$WORK/probe.err")"
      else
        WHY[$p]="$BUILD/lua/lasync.so not built (cmake -S . -B build && cmake --build build)"
      fi ;;
    coroutine)
      if v=$($LUA -v 2>&1); then AVAIL[$p]=1; VERSION[$p]="$(echo "$v" | awk '{ print $1, $2 }') bare coroutines"; else WHY[$p]="$LUA not found"; fi ;;
    cqueues|cqueues_*)
      if v=$($LUA -e 'io.write(require"cqueues".VERSION)' 2>/dev/null); then
        AVAIL[$p]=1; VERSION[$p]="cqueues $v (package $(dpkg-query -W -f '${Version}' lua-cqueues 2>/dev/null || echo '?'))"
      else WHY[$p]="lua-cqueues not installed for $LUA"; fi ;;
    luv)
      if v=$($LUA -e 'io.write(require"luv".version_string())' 2>/dev/null); then
        AVAIL[$p]=1; VERSION[$p]="lua-luv $(dpkg-query -W -f '${Version}' lua-luv 2>/dev/null || echo '?'), libuv $v (scheduler: bench/lib/luvsched.lua)"
      else WHY[$p]="lua-luv not installed for $LUA"; fi ;;
    asyncio)
      if v=$($PYTHON -c 'import asyncio, sys; print(sys.version.split()[0])' 2>/dev/null); then
        AVAIL[$p]=1; VERSION[$p]="CPython $v asyncio ($PYTHON)"
      else WHY[$p]="$PYTHON not usable"; fi ;;
    uvloop)
      if v=$($PYTHON -c 'import uvloop; print(uvloop.__version__)' 2>/dev/null); then
        AVAIL[$p]=1; VERSION[$p]="uvloop $v on $PYTHON"
      else WHY[$p]="uvloop not importable by $PYTHON"; fi ;;
    node)
      if v=$($NODE --version 2>/dev/null); then AVAIL[$p]=1; VERSION[$p]="Node.js $v"
      else WHY[$p]="$NODE not found"; fi ;;
    *) WHY[$p]="unknown peer" ;;
  esac
}
for p in $ORDER; do probe "$p"; done

runner() { # file -> command prefix
  case $1 in
    *.lua) echo "$LUA" ;;
    *.py)  echo "$PYTHON" ;;
    *.js)  echo "$NODE --expose-gc" ;;
  esac
}

# --- one benchmark -------------------------------------------------------------------
declare -A BEST=()  # bench:peer -> the RESULT fields of the best run
declare -A NOTE=()

RES=
run_one() { # bench peer file n -> sets RES to the RESULT fields; status 1 if none
  local b=$1 p=$2 f=$3 n=$4 out=$WORK/$1.$2.out err=$WORK/$1.$2.err rc
  RES=
  # shellcheck disable=SC2046 # runner's output is a command plus options, split on purpose
  timeout "$TIMEOUT" $(runner "$f") "$f" "$n" >"$out" 2>"$err"
  rc=$?
  local line
  line=$(grep -m1 '^RESULT ' "$out" | cut -d' ' -f2-)
  if [ -z "$line" ]; then
    if [ $rc -eq 124 ]; then NOTE[$b:$p]="timed out after ${TIMEOUT}s"
    else NOTE[$b:$p]="failed (exit $rc): $(tail -n 3 "$err" | tr '\n' ' ' | head -c 400)"; fi
    return 1
  fi
  [ $rc -ne 0 ] && NOTE[$b:$p]="exit $rc after printing its result: $(tail -n 2 "$err" | tr '\n' ' ' | head -c 300)"
  RES=$line
}

better() { # bench new old -> 0 if new is better
  local b=$1 new=$2 old=$3
  [ -z "$old" ] && return 0
  if [ "$b" = memory ]; then # less RSS per task
    awk -v a="$new" -v b="$old" 'BEGIN { split(a, x, " "); split(b, y, " "); exit !(x[3] / x[1] < y[3] / y[1]) }'
  else # more ops per second
    awk -v a="$new" -v b="$old" 'BEGIN { split(a, x, " "); split(b, y, " "); exit !(x[1] / x[2] > y[1] / y[2]) }'
  fi
}

bench() {
  local b=$1 dir=$BENCH_DIR/$1 n=${N[$1]} peers=() p f r res
  for p in $ORDER; do
    f=$(ls "$dir/$p".bench.* 2>/dev/null | head -n1)
    [ -n "$f" ] && peers+=("$p")
  done
  echo
  echo "== $b: ${TITLE[$b]}, N=$n, best of $RUNS =="
  for ((r = 1; r <= RUNS; r++)); do
    for p in "${peers[@]}"; do
      [ -n "${AVAIL[$p]:-}" ] || continue
      [ -n "${NOTE[$b:$p]:-}" ] && [ -z "${BEST[$b:$p]:-}" ] && continue # failed before
      f=$(ls "$dir/$p".bench.* | head -n1)
      [ -t 2 ] && printf '  run %d/%d %-16s\r' "$r" "$RUNS" "$p" >&2
      if run_one "$b" "$p" "$f" "$n"; then
        better "$b" "$RES" "${BEST[$b:$p]:-}" && BEST[$b:$p]=$RES
      fi
    done
  done
  [ -t 2 ] && printf '%40s\r' '' >&2
  if [ "$b" = memory ]; then table_memory "$b" "${peers[@]}"; else table_time "$b" "${peers[@]}"; fi
}

verdict() { # ratio "op value" -> yes/NO
  awk -v r="$1" -v t="$2" 'BEGIN { split(t, a, " "); ok = (a[1] == ">=") ? (r >= a[2]) : (r <= a[2]); print ok ? "yes" : "NO" }'
}

table_time() {
  local b=$1; shift
  local p res lres=${BEST[$b:lasync]:-} ratio tgt met
  printf '%-16s %9s %12s %9s %12s %9s %5s\n' peer "time(s)" "ops/s" "us/op" "lasync x" target met
  for p in "$@"; do
    tgt=${TARGET[$b:$p]:-}
    if [ -z "${AVAIL[$p]:-}" ]; then
      printf '%-16s skipped: %s\n' "$p" "${WHY[$p]}"; continue
    fi
    res=${BEST[$b:$p]:-}
    if [ -z "$res" ]; then printf '%-16s %s\n' "$p" "${NOTE[$b:$p]}"; continue; fi
    read -r ops secs _ <<<"$res"
    if [ -n "$lres" ]; then
      ratio=$(awk -v a="$lres" -v o="$ops" -v s="$secs" 'BEGIN { split(a, x, " "); printf "%.2f", (x[1] / x[2]) / (o / s) }')
      met=-; [ -n "$tgt" ] && met=$(verdict "$ratio" "$tgt")
      ratio="${ratio}x"
    else
      ratio="n/a"; met=-; [ -n "$tgt" ] && met="?"
    fi
    printf '%-16s %9.3f %12.0f %9.3f %12s %9s %5s\n' "$p" "$secs" \
      "$(awk -v o="$ops" -v s="$secs" 'BEGIN { printf "%.0f", o / s }')" \
      "$(awk -v o="$ops" -v s="$secs" 'BEGIN { printf "%.3f", s / o * 1e6 }')" \
      "$ratio" "${tgt:--}" "$met"
    [ -n "${NOTE[$b:$p]:-}" ] && printf '%-16s   note: %s\n' '' "${NOTE[$b:$p]}"
  done
  [ -z "$lres" ] && echo "(lasync x = how many times faster lasync is; n/a: ${NOTE[$b:lasync]:-${WHY[lasync]:-no lasync result}})"
  return 0
}

table_memory() {
  local b=$1; shift
  local p res lres=${BEST[$b:lasync]:-} tgt met rr lr
  printf '%-16s %12s %12s %10s %12s %12s %9s %5s\n' peer "RSS B/task" "Lua B/task" "park(s)" "lasync/peer" "(Lua heap)" target met
  for p in "$@"; do
    tgt=${TARGET[$b:$p]:-}
    if [ -z "${AVAIL[$p]:-}" ]; then
      printf '%-16s skipped: %s\n' "$p" "${WHY[$p]}"; continue
    fi
    res=${BEST[$b:$p]:-}
    if [ -z "$res" ]; then printf '%-16s %s\n' "$p" "${NOTE[$b:$p]}"; continue; fi
    read -r n secs rss lua _ <<<"$res"
    local rpt lpt
    rpt=$(awk -v r="$rss" -v n="$n" 'BEGIN { printf "%.0f", r / n }')
    if [ "$lua" = - ]; then lpt=-; else lpt=$(awk -v r="$lua" -v n="$n" 'BEGIN { printf "%.0f", r / n }'); fi
    rr=n/a lr=n/a met=-
    if [ -n "$lres" ]; then
      rr=$(awk -v a="$lres" -v r="$rss" -v n="$n" 'BEGIN { split(a, x, " "); printf "%.2f", (x[3] / x[1]) / (r / n) }')
      [ -n "$tgt" ] && met=$(verdict "$rr" "$tgt")
      rr="${rr}x"
      [ "$lua" != - ] && lr=$(awk -v a="$lres" -v r="$lua" -v n="$n" 'BEGIN { split(a, x, " "); printf "%.2fx", (x[4] / x[1]) / (r / n) }')
    else
      [ -n "$tgt" ] && met="?"
    fi
    printf '%-16s %12s %12s %10.3f %12s %12s %9s %5s\n' "$p" "$rpt" "$lpt" "$secs" "$rr" "$lr" "${tgt:--}" "$met"
    [ -n "${NOTE[$b:$p]:-}" ] && printf '%-16s   note: %s\n' '' "${NOTE[$b:$p]}"
  done
  echo "(RSS B/task: /proc/self/statm RSS delta / N, includes the C core's malloc; Lua B/task:"
  echo " collectgarbage(\"count\") delta / N; lasync/peer: lower is better; park = time to spawn N"
  echo " and let each reach its timer)"
  big_check
}

big_check() {
  [ "$BIG_N" -gt 0 ] 2>/dev/null || return 0
  echo
  echo "-- $BIG_N sleeping tasks: must fit in 2 GB (one run each) --"
  local p f res n secs rss lua total peak rc
  for p in lasync coroutine; do
    if [ -z "${AVAIL[$p]:-}" ]; then printf '%-16s skipped: %s\n' "$p" "${WHY[$p]}"; continue; fi
    f=$(ls "$BENCH_DIR/memory/$p".bench.* | head -n1)
    local timecmd=()
    [ -x /usr/bin/time ] && timecmd=(/usr/bin/time -f 'PEAK %M' -o "$WORK/big.time")
    rm -f "$WORK/big.time"
    # shellcheck disable=SC2046 # runner's output is a command plus options, split on purpose
    timeout "$TIMEOUT" "${timecmd[@]}" $(runner "$f") "$f" "$BIG_N" >"$WORK/big.out" 2>"$WORK/big.err"
    rc=$?
    res=$(grep -m1 '^RESULT ' "$WORK/big.out" | cut -d' ' -f2-)
    if [ -z "$res" ]; then
      printf '%-16s failed (exit %s): %s\n' "$p" "$rc" "$(tail -n 3 "$WORK/big.err" | tr '\n' ' ' | head -c 300)"; continue
    fi
    read -r n secs rss lua total <<<"$res"
    peak=$(awk '/^PEAK/ { print $2 * 1024 }' "$WORK/big.time" 2>/dev/null)
    awk -v p="$p" -v n="$n" -v s="$secs" -v r="$rss" -v t="$total" -v k="${peak:-0}" -v rc="$rc" 'BEGIN {
      lim = 2 * 1024 * 1024 * 1024; m = (k > t) ? k : t
      pk = (k > 0) ? sprintf("%7.1f MiB", k / 1048576) : "n/a"
      printf "%-16s RSS with all parked %7.1f MiB (%.0f B/task), peak RSS of the whole run %s, park %.2fs -> %s%s\n",
        p, t / 1048576, r / n, pk, s, (m <= lim) ? "fits in 2 GB" : "DOES NOT fit in 2 GB",
        (rc != 0) ? sprintf(" (exit %d)", rc) : "" }'
  done
}

# --- main ----------------------------------------------------------------------------
SELECT=("$@")
[ ${#SELECT[@]} -eq 0 ] && SELECT=(spawn pingpong memory queue ffi)

echo "lasync benchmarks  $(date -u '+%Y-%m-%d %H:%M UTC')  $(uname -srm), $(nproc) cpu(s)"
echo "build: $BUILD   load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for p in $ORDER; do
  if [ -n "${AVAIL[$p]:-}" ]; then printf '  %-16s %s\n' "$p" "${VERSION[$p]}"
  else printf '  %-16s SKIPPED: %s\n' "$p" "${WHY[$p]}"; fi
done
echo "(ratios: 'lasync x' = peer time / lasync time, i.e. how many times faster lasync is)"

for b in "${SELECT[@]}"; do
  case $b in
    spawn|pingpong|memory) bench "$b" ;;
    *)
      if [ -f "$BENCH_DIR/$b/run.sh" ]; then
        echo
        echo "== $b (bench/$b/run.sh) =="
        bash "$BENCH_DIR/$b/run.sh" || echo "(bench/$b/run.sh exited with status $?)"
      elif [ $# -gt 0 ]; then
        echo; echo "== $b: no such benchmark (bench/$b/run.sh not found) =="
      fi ;;
  esac
done
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)  (above ~1 on 2 cpus, other work was competing: re-run)"
