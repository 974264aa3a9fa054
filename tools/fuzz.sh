#!/usr/bin/env bash
# Runs the libFuzzer harness (tests/fuzz/kd_fuzz.cpp) under ASan and UBSan for N seconds
# (default 60), starting from the committed corpus. A crash or a disagreement stops it with
# the input saved under build-fuzz/; copy it to tests/fuzz/regressions/ once fixed.
# usage: tools/fuzz.sh [seconds] [extra libFuzzer flags...]
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-60}"
shift || true
"$top/tools/deps.sh" test
out="$top/build-fuzz"
mkdir -p "$out/corpus"
clang++-14 -std=c++17 -O1 -g -march=native -fsanitize=fuzzer,address,undefined \
  -fno-sanitize-recover=undefined -I"$top/include" -isystem /usr/include/eigen3 \
  "$top/tests/fuzz/kd_fuzz.cpp" -o "$out/kd_fuzz"
cp -n "$top"/tests/fuzz/corpus/* "$out/corpus/" 2>/dev/null || true
cd "$out"
./kd_fuzz -max_total_time="$seconds" -print_final_stats=1 "$@" corpus \
  "$top/tests/fuzz/regressions" 2>&1 | grep -E "^(stat::|#[0-9]+ +DONE|kd_fuzz:|SUMMARY|==)" || true
test "${PIPESTATUS[0]}" -eq 0
