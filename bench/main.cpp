// SPDX-License-Identifier: MIT
//
// lskd_bench: the KD loss with logit standardization, forward and fused forward + student
// gradient, for every instruction set this CPU has, against a plain scalar loop, a
// straightforward Eigen expression and (when built with it) libtorch autograd; with two
// roofline probes (streaming bandwidth, exp throughput) to put the numbers in scale.
//
// Compiled with the default flags: the per-architecture kernels live in lskd_arch.cpp.

#include "common.hpp"

#include <lskd/version.hpp>
#include <xsimd/config/xsimd_config.hpp>

#include <benchmark/benchmark.h>

#include <malloc.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <new>
#include <random>
#include <string>

// ---------------------------------------------------------------------------------------------
// Heap tracking: every global operator new / delete of the process goes through here. Sizes come
// from malloc_usable_size, so the sized and unsized forms agree.

namespace {

std::atomic<std::size_t> heap_current{0};
std::atomic<std::size_t> heap_peak{0};

void* tracked_allocate(std::size_t size, std::size_t alignment) {
  if (size == 0) size = 1;
  void* p = nullptr;
  if (alignment <= alignof(std::max_align_t)) {
    p = std::malloc(size);
  } else {
    // aligned_alloc wants a multiple of the alignment.
    p = std::aligned_alloc(alignment, (size + alignment - 1) / alignment * alignment);
  }
  if (p == nullptr) return nullptr;
  const std::size_t now = heap_current.fetch_add(malloc_usable_size(p)) + malloc_usable_size(p);
  std::size_t peak = heap_peak.load();
  while (now > peak && !heap_peak.compare_exchange_weak(peak, now)) {
  }
  return p;
}

void tracked_free(void* p) noexcept {
  if (p == nullptr) return;
  heap_current.fetch_sub(malloc_usable_size(p));
  std::free(p);
}

void* allocate_or_throw(std::size_t size, std::size_t alignment) {
  void* p = tracked_allocate(size, alignment);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace

void* operator new(std::size_t size) { return allocate_or_throw(size, 0); }
void* operator new[](std::size_t size) { return allocate_or_throw(size, 0); }
void* operator new(std::size_t size, std::align_val_t a) {
  return allocate_or_throw(size, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t size, std::align_val_t a) {
  return allocate_or_throw(size, static_cast<std::size_t>(a));
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return tracked_allocate(size, 0);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return tracked_allocate(size, 0);
}
void* operator new(std::size_t size, std::align_val_t a, const std::nothrow_t&) noexcept {
  return tracked_allocate(size, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t size, std::align_val_t a, const std::nothrow_t&) noexcept {
  return tracked_allocate(size, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { tracked_free(p); }
void operator delete[](void* p) noexcept { tracked_free(p); }
void operator delete(void* p, std::size_t) noexcept { tracked_free(p); }
void operator delete[](void* p, std::size_t) noexcept { tracked_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { tracked_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { tracked_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { tracked_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { tracked_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { tracked_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { tracked_free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { tracked_free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  tracked_free(p);
}

namespace lskd_bench {

namespace {
std::atomic<std::size_t> heap_base{0};
}  // namespace

void heap_probe_begin() {
  heap_base.store(heap_current.load());
  heap_peak.store(heap_current.load());
}

std::size_t heap_probe_peak_extra() {
  const std::size_t peak = heap_peak.load();
  const std::size_t base = heap_base.load();
  return peak > base ? peak - base : 0;
}

// ---------------------------------------------------------------------------------------------
// Data.

namespace {

struct aligned_deleter {
  void operator()(float* p) const noexcept { std::free(p); }
};
using buffer = std::unique_ptr<float[], aligned_deleter>;

buffer make_buffer(std::int64_t count) {
  const std::size_t bytes = (static_cast<std::size_t>(count) * sizeof(float) + 63) / 64 * 64;
  auto* p = static_cast<float*>(std::aligned_alloc(64, bytes == 0 ? 64 : bytes));
  if (p == nullptr) throw std::bad_alloc();
  return buffer(p);
}

struct owned_dataset {
  dataset view{0, 0, nullptr, nullptr, nullptr};
  buffer student;
  buffer teacher;
  buffer grad;
};

}  // namespace

const dataset& data_for(std::int64_t rows, std::int64_t cols) {
  static owned_dataset current;
  if (current.view.rows == rows && current.view.cols == cols && current.student) {
    return current.view;
  }
  current = owned_dataset{};  // free the previous shape first: the largest is 3 x 262 MB
  const std::int64_t count = rows * cols;
  current.student = make_buffer(count);
  current.teacher = make_buffer(count);
  current.grad = make_buffer(count);

  // Per row: the student is N(offset, spread^2) with a row-dependent offset and spread; the
  // teacher is an affine map of 0.8 * student + 0.6 * fresh noise (correlation 0.8), with its
  // own offset and scale, so standardization matters and the two softmaxes differ.
  std::mt19937_64 engine(20240617u);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float s_offset = 4.0f * uniform(engine) - 2.0f;
    const float s_spread = 0.5f + 2.5f * uniform(engine);
    const float t_offset = 6.0f * uniform(engine) - 3.0f;
    const float t_spread = 1.0f + 3.0f * uniform(engine);
    float* s = current.student.get() + r * cols;
    float* t = current.teacher.get() + r * cols;
    for (std::int64_t c = 0; c < cols; ++c) {
      const float base = normal(engine);
      s[c] = s_offset + s_spread * base;
      t[c] = t_offset + t_spread * (0.8f * base + 0.6f * normal(engine));
    }
  }
  std::fill(current.grad.get(), current.grad.get() + count, 0.0f);
  current.view = {rows, cols, current.student.get(), current.teacher.get(), current.grad.get()};
  return current.view;
}

void set_throughput(benchmark::State& state, std::int64_t rows, std::int64_t cols, int buffers) {
  const std::int64_t logits = rows * cols;
  state.SetItemsProcessed(state.iterations() * logits);
  state.SetBytesProcessed(state.iterations() * logits * buffers *
                          static_cast<std::int64_t>(sizeof(float)));
}

void record_result(benchmark::State& state, double loss, bool gradient) {
  state.counters["loss"] = loss;
  if (!gradient) return;
  const dataset& d = data_for(state.range(0), state.range(1));
  double sum = 0.0;
  for (std::int64_t i = 0; i < d.rows * d.cols; ++i) sum += std::fabs(static_cast<double>(d.grad[i]));
  state.counters["grad_abs_sum"] = sum;
}

}  // namespace lskd_bench

// ---------------------------------------------------------------------------------------------

namespace {

struct shape {
  std::int64_t rows;
  std::int64_t cols;
};

// CIFAR-100, ImageNet-1k, a 32k vocabulary, a 128k vocabulary, and a batch that does not fit
// in any cache (3 x 262 MB).
constexpr std::array<shape, 5> shapes{{{256, 100}, {512, 1000}, {64, 32000}, {16, 128256},
                                       {2048, 32000}}};

using register_fn = void (*)(const lskd_bench::arch_registration&);

struct arch_entry {
  const char* suffix;
  register_fn reg;
};

// Worst to best.
constexpr std::array<arch_entry, 4> archs{{{"scalar", &lskd_bench::register_lskd_scalar},
                                           {"sse2", &lskd_bench::register_lskd_sse2},
                                           {"avx2", &lskd_bench::register_lskd_avx2},
                                           {"avx512f", &lskd_bench::register_lskd_avx512f}}};

}  // namespace

int main(int argc, char** argv) {
  std::string available;
  const char* best = "scalar";
  for (const arch_entry& a : archs) {
    if (!lskd_bench::cpu_has_arch(a.suffix)) continue;
    if (!available.empty()) available += ",";
    available += a.suffix;
    best = a.suffix;
  }

  benchmark::AddCustomContext("lskd_version", LSKD_VERSION_STRING);
  benchmark::AddCustomContext("xsimd_version", std::to_string(XSIMD_VERSION_MAJOR) + "." +
                                                   std::to_string(XSIMD_VERSION_MINOR) + "." +
                                                   std::to_string(XSIMD_VERSION_PATCH));
  benchmark::AddCustomContext("eigen_version", lskd_bench::eigen_version());
#if defined(__clang__)
  benchmark::AddCustomContext("compiler", std::string("clang ") + __VERSION__);
#elif defined(__GNUC__)
  benchmark::AddCustomContext("compiler", std::string("gcc ") + __VERSION__);
#else
  benchmark::AddCustomContext("compiler", __VERSION__);
#endif
  benchmark::AddCustomContext("cpu_archs", available);
  benchmark::AddCustomContext("best_arch", best);
#if defined(LSKD_BENCH_WITH_TORCH)
  benchmark::AddCustomContext("torch_version", lskd_bench::torch_version());
#endif
  benchmark::AddCustomContext("loss", "lskd::kd_loss<float> defaults: standardize, ddof 1, "
                                      "eps 1e-7, tau 2, batchmean, x tau^2; gradient wrt the "
                                      "student");

  for (const shape& s : shapes) {
    for (const arch_entry& a : archs) {
      if (!lskd_bench::cpu_has_arch(a.suffix)) continue;
      const bool is_best = std::string(a.suffix) == best;
      // The exp rate does not depend on the shape: every architecture once (smallest shape), the
      // best one at every shape (the roofline of that shape).
      const bool exp_probe = is_best || (s.rows == shapes[0].rows && s.cols == shapes[0].cols);
      a.reg({s.rows, s.cols, is_best, exp_probe});
    }
    lskd_bench::register_baselines(s.rows, s.cols);
#if defined(LSKD_BENCH_WITH_TORCH)
    lskd_bench::register_libtorch(s.rows, s.cols);
#endif
  }

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
