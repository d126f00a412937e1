#!/usr/bin/env bash
# Builds and runs the libFuzzer target for the cdef parser (bindings/ffi/fuzz_cdef.c).
#   bindings/ffi/fuzz.sh [SECONDS]       (default 60; CI runs it briefly, e.g. 20)
# Needs clang and libclang-rt-14-dev (Debian). Crashes are left as crash-* files in the
# working copy of the corpus (build-fuzz/corpus); the seed corpus is fuzz_corpus/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=${1:-60}
build=${FUZZ_BUILD:-$root/build-fuzz}
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DLASYNC_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target fuzz_cdef >/dev/null
mkdir -p "$build/corpus"
cp -n "$here"/fuzz_corpus/* "$build/corpus/" 2>/dev/null || true
cd "$build"
exec ./fuzz/fuzz_cdef -max_total_time="$secs" -max_len=4096 -timeout=10 -print_final_stats=1 corpus
