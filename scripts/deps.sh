#!/usr/bin/env bash
# Installs the Debian 12 packages lasync needs that are missing (apt-get, as root or through
# sudo). Idempotent and quick when everything is there. With --bench, also the benchmark
# peers (cqueues, luv, uvloop, node, luajit).
set -euo pipefail
pkgs=(gcc make cmake pkg-config libuv1-dev libffi-dev lua5.4 liblua5.4-dev lua-busted zlib1g-dev
      clang libclang-rt-14-dev)
if [ "${1:-}" = "--bench" ]; then
  pkgs+=(lua-cqueues lua-luv python3-uvloop nodejs luajit valgrind)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs may come from elsewhere than Debian (a newer build); any working node will do.
if [ ${#missing[@]} -gt 0 ] && command -v node >/dev/null; then
  missing=("${missing[@]/nodejs}")
  read -r -a missing <<< "${missing[*]}"
fi
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
