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
# The fuzzer's own exit status decides (a crash or a disagreement is non-zero). Its output goes
# to a log first: a pipeline's status would be the filter's, and `|| true` after it would reset
# PIPESTATUS, so a crashing run once passed here.
status=0
./kd_fuzz -max_total_time="$seconds" -print_final_stats=1 "$@" corpus \
  "$top/tests/fuzz/regressions" > fuzz.log 2>&1 || status=$?
grep -E "^(stat::|#[0-9]+ +DONE|kd_fuzz:|SUMMARY|==)" fuzz.log || true
if [ "$status" -ne 0 ]; then
  tail -n 40 fuzz.log
  echo "fuzz: kd_fuzz exited with status $status" >&2
fi
exit "$status"
