#!/usr/bin/env bash
# Side-by-side numbers for the FFI bridge (issue 4): call overhead against a hand-written
# lua_CFunction and LuaJIT's FFI, and completions from 4 foreign threads against a plain
# libuv program doing the same handoff. Needs a configured build (default ./build) and,
# for the LuaJIT column, the luajit package.
#   bench/ffi/run.sh [BUILD_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" && pwd)
cmake --build "$build" --target lasync_ffi lasync_ffi_fixture lasync_ffi_bench_add lasync_ffi_bench_uv >/dev/null
export LUA_PATH="$here/../../lua/?.lua;;"

declare -A ns
while read -r name v; do ns[$name]=$v; done < <(lua5.4 "$here/call.lua" "$build")
if command -v luajit >/dev/null; then
  while read -r name v; do ns[$name]=$v; done < <(luajit "$here/call.lua" "$build")
fi
echo "call overhead, int add(int, int), ns per call (lower is better)"
printf '  %-28s %8s %10s\n' "variant" "ns/call" "vs hand"
for k in lua-loop hand-binding lasync-ffi luajit-ffi; do
  [ -n "${ns[$k]:-}" ] || continue
  printf '  %-28s %8.1f %9.2fx\n' "$k" "${ns[$k]}" "$(awk "BEGIN{print ${ns[$k]} / ${ns[hand-binding]}}")"
done

N=${N:-1000000}
ceiling=$("$build/bench/ffi/uv_handoff" $((N / 4)))
declare -A rate
while read -r name v; do rate[$name]=$v; done < <(lua5.4 "$here/completions.lua" "$build" "$N")
echo
echo "completions from 4 foreign threads, per second (higher is better)"
printf '  %-28s %12s %10s\n' "variant" "per second" "vs ceiling"
printf '  %-28s %12.0f %9.2fx\n' "plain libuv C (ceiling)" "$ceiling" 1
for k in callbacks oneshots round-trip; do
  printf '  %-28s %12.0f %9.2fx\n' "lasync.ffi $k" "${rate[$k]}" "$(awk "BEGIN{print ${rate[$k]} / $ceiling}")"
done
printf '  (arming a one-shot: %.0f per second)\n' "${rate[arm]}"
