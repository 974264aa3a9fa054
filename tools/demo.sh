#!/usr/bin/env bash
# The main job: installs what is missing, builds, and distills on Fashion-MNIST.
# Extra arguments go to the program (try --help).
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
"$top/tools/deps.sh" core
build="${LSKD_BUILD_DIR:-$top/build}"
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLSKD_BUILD_TESTS=OFF \
  -DLSKD_BUILD_BENCHMARKS=OFF -DLSKD_BUILD_C_API=OFF >/dev/null
cmake --build "$build" --target fashion_mnist_distill -j"$(nproc)"
exec "$build/examples/fashion_mnist_distill/fashion_mnist_distill" "$@"
