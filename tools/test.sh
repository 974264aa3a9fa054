#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds everything (tests, examples,
# benchmarks, the C ABI) and runs ctest.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
"$top/tools/deps.sh" test
build="${LSKD_BUILD_DIR:-$top/build}"
# Every part on, explicitly: tools/demo.sh shares this build folder with them turned off, and
# CMake keeps cached options.
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLSKD_WERROR=ON -DLSKD_BUILD_TESTS=ON \
  -DLSKD_BUILD_EXAMPLES=ON -DLSKD_BUILD_BENCHMARKS=ON -DLSKD_BUILD_C_API=ON >/dev/null
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure --no-tests=error -j"$(nproc)"
