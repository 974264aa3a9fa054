// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// What the benchmark translation units share. Declarations only: the per-architecture units
/// are compiled with different -m flags, so any inline function defined here could be merged
/// by the linker into a copy built for the wrong instruction set. Everything is defined once,
/// in main.cpp, which is compiled with the default flags.

#include <cstddef>
#include <cstdint>

namespace benchmark {
class State;
}  // namespace benchmark

namespace lskd_bench {

/// The inputs of one shape: student and teacher logits (random normal, fixed seed, the teacher
/// correlated with the student) and an output buffer for a gradient, each rows x cols,
/// row-major, 64-byte aligned. Generated on first use; one shape is kept at a time.
struct dataset {
  std::int64_t rows;
  std::int64_t cols;
  const float* student;
  const float* teacher;
  float* grad;
};

/// The data of a shape (regenerated when the shape changes; benchmarks run in registration
/// order, grouped by shape).
const dataset& data_for(std::int64_t rows, std::int64_t cols);

/// Sets items_per_second (logits) and bytes_per_second from `state.iterations()`, for a kernel
/// that reads and writes `buffers` rows x cols float buffers per iteration.
void set_throughput(benchmark::State& state, std::int64_t rows, std::int64_t cols, int buffers);

/// Records what the last iteration computed, so that the implementations can be compared in
/// the results: counter `loss`, and with `gradient`, `grad_abs_sum` = sum |grad| over the
/// gradient buffer of the current dataset (computed after timing).
void record_result(benchmark::State& state, double loss, bool gradient);

/// Heap tracking through the bench binary's replacement of global operator new and delete:
/// `heap_probe_begin()` records the bytes currently allocated and resets the high-water mark;
/// `heap_probe_peak_extra()` returns how far the high-water mark rose above that since. Counts
/// every operator new in the process (all threads), not malloc.
void heap_probe_begin();
std::size_t heap_probe_peak_extra();

/// One benchmark configuration, registered by each architecture's translation unit.
struct arch_registration {
  std::int64_t rows;
  std::int64_t cols;
  bool best;         ///< the best architecture of this CPU: also the 2-thread and roofline rows
  bool exp_probe;    ///< register this architecture's exp-throughput probe for this shape
};

// One per dispatch architecture (bench/lskd_arch.cpp, compiled once per instruction set).
void register_lskd_scalar(const arch_registration& what);
void register_lskd_sse2(const arch_registration& what);
void register_lskd_avx2(const arch_registration& what);
void register_lskd_avx512f(const arch_registration& what);

/// Asks the CPU, from the translation unit built without any -m flag.
bool cpu_has_arch(const char* suffix);

/// Baselines (bench/baselines.cpp).
void register_baselines(std::int64_t rows, std::int64_t cols);
const char* eigen_version();

/// libtorch (bench/torch_baseline.cpp), when built with it.
void register_libtorch(std::int64_t rows, std::int64_t cols);
const char* torch_version();

/// The reference hyper-parameters of every implementation: Sun et al.'s defaults.
constexpr double temperature = 2.0;
constexpr double std_eps = 1e-7;

}  // namespace lskd_bench
