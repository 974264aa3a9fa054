#!/usr/bin/env bash
# Installs the Debian packages lskd's builds need, only those missing. Run by demo.sh and
# test.sh; run as root (or with sudo available) on Debian 12.
# usage: tools/deps.sh core|test
set -euo pipefail

core=(cmake make g++ pkg-config libeigen3-dev libxsimd-dev zlib1g-dev dataset-fashion-mnist)
# Tests also build the benchmarks and run the integration tests that have their packages.
test=(catch2 libbenchmark-dev clang libclang-rt-14-dev python3 python3-numpy python3-torch
      libtorch-dev libopenmpi-dev openmpi-bin)

case "${1:-core}" in
  core) wanted=("${core[@]}") ;;
  test) wanted=("${core[@]}" "${test[@]}") ;;
  *) echo "usage: $0 core|test" >&2; exit 2 ;;
esac

missing=()
for package in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "lskd: installing ${missing[*]}" >&2
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
