#!/usr/bin/env bash
# Builds the test suite with AddressSanitizer and UndefinedBehaviorSanitizer and runs it.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
"$top/tools/deps.sh" test
build="$top/build-sanitize"
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DLSKD_BUILD_BENCHMARKS=OFF \
  -DLSKD_BUILD_C_API=OFF -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  >/dev/null
# Every test executable of the library itself; the integrations that load lskd into another
# runtime (Python, libtorch, MPI launchers, consumer projects) are left to tools/test.sh.
cmake --build "$build" -j"$(nproc)" --target lskd_tests lskd_tests_beyond \
  lskd_vocab_parallel_tests kd_fuzz_replay minimal
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" \
  -R "^(lskd_tests|lskd_tests_beyond|vocab_parallel_tests|fuzz_regressions|example_minimal)$"
