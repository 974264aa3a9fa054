#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds everything (tests, examples,
# benchmarks, the C ABI) and runs ctest.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
"$top/tools/deps.sh" test
build="${LSKD_BUILD_DIR:-$top/build}"
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLSKD_WERROR=ON >/dev/null
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j"$(nproc)"
