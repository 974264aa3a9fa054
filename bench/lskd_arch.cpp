// SPDX-License-Identifier: MIT
//
// lskd's rows of the benchmark, and the roofline probes, for one instruction set. CMake compiles
// this file once per architecture (lskd_add_dispatch_objects) with that architecture's -m flags
// and LSKD_DISPATCH_ARCH / LSKD_DISPATCH_SUFFIX; main() registers an architecture's benchmarks
// only when the CPU has it. Nothing here may run before that check.

#include "common.hpp"

#include <lskd/kd_loss.hpp>
#include <lskd/simd/dispatch.hpp>

#include <benchmark/benchmark.h>
#include <xsimd/xsimd.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#define LSKD_BENCH_CAT_IMPL(a, b) a##b
#define LSKD_BENCH_CAT(a, b) LSKD_BENCH_CAT_IMPL(a, b)
#define LSKD_BENCH_STR_IMPL(a) #a
#define LSKD_BENCH_STR(a) LSKD_BENCH_STR_IMPL(a)

namespace {

using arch = LSKD_DISPATCH_ARCH;
const char* const suffix = LSKD_BENCH_STR(LSKD_DISPATCH_SUFFIX);

lskd::matrix_view<const float> student_of(const lskd_bench::dataset& d) {
  return {d.student, d.rows, d.cols};
}
lskd::matrix_view<const float> teacher_of(const lskd_bench::dataset& d) {
  return {d.teacher, d.rows, d.cols};
}

// The loss alone: reads student and teacher once each (2 buffers).
void kd_forward(benchmark::State& state) {
  const std::int64_t rows = state.range(0);
  const std::int64_t cols = state.range(1);
  const lskd_bench::dataset& d = lskd_bench::data_for(rows, cols);
  const lskd::kd_loss<float, arch> loss;

  lskd_bench::heap_probe_begin();
  benchmark::DoNotOptimize(loss.forward(student_of(d), teacher_of(d)));
  state.counters["extra_bytes"] = static_cast<double>(lskd_bench::heap_probe_peak_extra());

  double value = 0.0;
  for (auto _ : state) {
    value = loss.forward(student_of(d), teacher_of(d));
    benchmark::DoNotOptimize(value);
  }
  lskd_bench::set_throughput(state, rows, cols, 2);
  lskd_bench::record_result(state, value, false);
}

// Loss and gradient with respect to the student: reads both, writes one (3 buffers).
void kd_fwdbwd(benchmark::State& state, int threads) {
  const std::int64_t rows = state.range(0);
  const std::int64_t cols = state.range(1);
  const lskd_bench::dataset& d = lskd_bench::data_for(rows, cols);
  lskd::execution how;
  how.threads = threads;
  const lskd::kd_loss<float, arch> loss(lskd::kd_options{}, how);
  const lskd::matrix_view<float> grad(d.grad, rows, cols);

  lskd_bench::heap_probe_begin();
  benchmark::DoNotOptimize(loss.forward_backward(student_of(d), teacher_of(d), grad));
  state.counters["extra_bytes"] = static_cast<double>(lskd_bench::heap_probe_peak_extra());

  double value = 0.0;
  for (auto _ : state) {
    value = loss.forward_backward(student_of(d), teacher_of(d), grad);
    benchmark::DoNotOptimize(value);
    benchmark::ClobberMemory();
  }
  lskd_bench::set_throughput(state, rows, cols, 3);
  lskd_bench::record_result(state, value, true);
}

void kd_fwdbwd_one_thread(benchmark::State& state) { kd_fwdbwd(state, 1); }
void kd_fwdbwd_two_threads(benchmark::State& state) { kd_fwdbwd(state, 2); }

// Bandwidth probe: out = a - 0.5 b over the same three buffers the fused loss touches (reads
// student and teacher, writes the gradient buffer), vectorized for this architecture.
// out = a - 0.5 b over n floats; batches of A, then single floats.
template <class A>
void stream_kernel(const float* a, const float* b, float* out, std::int64_t n) {
  std::int64_t i = 0;
  if constexpr (!std::is_same<A, lskd::simd::scalar>::value) {
    using batch = xsimd::batch<float, A>;
    constexpr std::int64_t width = static_cast<std::int64_t>(batch::size);
    const batch half(0.5f);
    for (; i + width <= n; i += width) {
      const batch x = batch::load_unaligned(a + i);
      const batch y = batch::load_unaligned(b + i);
      (x - y * half).store_unaligned(out + i);
    }
  }
  for (; i < n; ++i) out[i] = a[i] - 0.5f * b[i];
}

void roofline_stream(benchmark::State& state) {
  const std::int64_t rows = state.range(0);
  const std::int64_t cols = state.range(1);
  const lskd_bench::dataset& d = lskd_bench::data_for(rows, cols);
  for (auto _ : state) {
    stream_kernel<arch>(d.student, d.teacher, d.grad, rows * cols);
    benchmark::ClobberMemory();
  }
  lskd_bench::set_throughput(state, rows, cols, 3);
}

// Exp-throughput probe: rows x cols exponentials per iteration, computed over a 2048-float
// chunk that stays in L1 (read 8 KB, write 8 KB), repeated. Arguments in [-12, 0], like the
// exponents of the KD sweep. items_per_second = exps per second. It times the exp the kernels
// use (lskd::detail::exp_of: on float batches lskd's own, faster than xsimd::exp, which the
// probe timed before; std::exp on the scalar path), so the roofline moves with it.
constexpr std::int64_t exp_chunk = 2048;
alignas(64) float exp_in[exp_chunk];
alignas(64) float exp_out[exp_chunk];

template <class A>
void exp_block(const float* in, float* out, std::int64_t count) {
  std::int64_t i = 0;
  if constexpr (!std::is_same<A, lskd::simd::scalar>::value) {
    using batch = xsimd::batch<float, A>;
    constexpr std::int64_t width = static_cast<std::int64_t>(batch::size);
    for (; i + width <= count; i += width) {
      lskd::detail::exp_of(batch::load_unaligned(in + i)).store_unaligned(out + i);
    }
  }
  for (; i < count; ++i) out[i] = std::exp(in[i]);
}

void roofline_exp(benchmark::State& state) {
  const std::int64_t rows = state.range(0);
  const std::int64_t cols = state.range(1);
  const std::int64_t n = rows * cols;
  for (std::int64_t i = 0; i < exp_chunk; ++i) {
    exp_in[i] = -12.0f * static_cast<float>(i) / static_cast<float>(exp_chunk);
  }
  // The buffers must escape: otherwise the compiler sees that nothing reads exp_out, drops
  // the stores, and keeps only the library call's errno side effect.
  float* in = exp_in;
  float* out = exp_out;
  benchmark::DoNotOptimize(in);
  benchmark::DoNotOptimize(out);
  for (auto _ : state) {
    std::int64_t done = 0;
    while (done < n) {
      const std::int64_t count = n - done < exp_chunk ? n - done : exp_chunk;
      exp_block<arch>(in, out, count);
      benchmark::ClobberMemory();  // the next block must recompute, not reuse
      done += count;
    }
  }
  state.SetItemsProcessed(state.iterations() * n);
}

std::string name_of(const char* operation, const char* tail = "") {
  return std::string("BM_") + operation + "_" + suffix + tail;
}

}  // namespace

namespace lskd_bench {

void LSKD_BENCH_CAT(register_lskd_, LSKD_DISPATCH_SUFFIX)(const arch_registration& what) {
  // One-thread rows are timed in CPU time of the calling thread (robust on a shared machine);
  // the 2-thread row in wall-clock time, which is what threads shorten, and its cpu_time is
  // that of the whole process (both threads, including OpenMP's spin-waiting), so that the
  // work added by threading can be told apart from time lost waiting for a busy core.
  const auto shape = [&](benchmark::internal::Benchmark* b) {
    return b->Args({what.rows, what.cols})->Unit(benchmark::kMicrosecond);
  };
  shape(benchmark::RegisterBenchmark(name_of("kd_forward_lskd").c_str(), kd_forward));
  shape(benchmark::RegisterBenchmark(name_of("kd_fwdbwd_lskd").c_str(), kd_fwdbwd_one_thread));
  if (what.best) {
    shape(benchmark::RegisterBenchmark(name_of("kd_fwdbwd_lskd", "_2threads").c_str(),
                                       kd_fwdbwd_two_threads))
        ->UseRealTime()
        ->MeasureProcessCPUTime();
    shape(benchmark::RegisterBenchmark(name_of("roofline_stream").c_str(), roofline_stream));
  }
  if (what.exp_probe) {
    shape(benchmark::RegisterBenchmark(name_of("roofline_exp").c_str(), roofline_exp));
  }
}

}  // namespace lskd_bench

#if defined(LSKD_BENCH_PROBE_CPU)
// Defined only in the unit built without -m flags, so asking the CPU runs no instruction it
// might lack.
bool lskd_bench::cpu_has_arch(const char* name) {
  if (std::strcmp(name, "scalar") == 0) return true;
  if (std::strcmp(name, "sse2") == 0) return lskd::simd::cpu_supports<xsimd::sse2>();
  if (std::strcmp(name, "avx2") == 0) return lskd::simd::cpu_supports<xsimd::fma3<xsimd::avx2>>();
  if (std::strcmp(name, "avx512f") == 0) {
    // The avx512f unit is built with AVX512DQ as well (see bench/CMakeLists.txt).
    return lskd::simd::cpu_supports<xsimd::avx512f>() && xsimd::available_architectures().avx512dq;
  }
  return false;
}
#endif
