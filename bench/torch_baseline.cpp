// SPDX-License-Identifier: MIT
//
// The reference: the logit-standardized KD loss as Sun et al. wrote it, in libtorch with
// autograd, on one intra-op thread:
//   standardize(x) = (x - mean(x)) / (1e-7 + std(x, unbiased))
//   loss = kl_div(log_softmax(s / tau), softmax(t / tau), none).sum(1).mean() * tau^2
// and the gradient with respect to the student logits (the teacher is detached). Compiled
// on its own, with libtorch's flags.

#include "common.hpp"

#include <benchmark/benchmark.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdint>
#include <cstring>

namespace {

torch::Tensor standardize(const torch::Tensor& logits) {
  const torch::Tensor mean = logits.mean(-1, /*keepdim=*/true);
  const torch::Tensor stdv = logits.std(-1, /*unbiased=*/true, /*keepdim=*/true);
  return (logits - mean) / (lskd_bench::std_eps + stdv);
}

torch::Tensor kd_loss(const torch::Tensor& student, const torch::Tensor& teacher) {
  const double tau = lskd_bench::temperature;
  const torch::Tensor log_ps = torch::log_softmax(standardize(student) / tau, 1);
  const torch::Tensor pt = torch::softmax(standardize(teacher) / tau, 1);
  return torch::kl_div(log_ps, pt, at::Reduction::None).sum(1).mean() * (tau * tau);
}

struct inputs {
  torch::Tensor student;
  torch::Tensor teacher;
};

inputs wrap(const lskd_bench::dataset& d) {
  const auto options = torch::TensorOptions().dtype(torch::kFloat32);
  // from_blob does not copy; the tensors are only read.
  return {torch::from_blob(const_cast<float*>(d.student), {d.rows, d.cols}, options),
          torch::from_blob(const_cast<float*>(d.teacher), {d.rows, d.cols}, options)};
}

void kd_forward_libtorch(benchmark::State& state) {
  at::set_num_threads(1);
  const lskd_bench::dataset& d = lskd_bench::data_for(state.range(0), state.range(1));
  const inputs in = wrap(d);
  const torch::NoGradGuard no_grad;
  double value = kd_loss(in.student, in.teacher).item<double>();  // warm-up
  for (auto _ : state) {
    value = kd_loss(in.student, in.teacher).item<double>();
    benchmark::DoNotOptimize(value);
  }
  lskd_bench::set_throughput(state, d.rows, d.cols, 2);
  lskd_bench::record_result(state, value, false);
}

void kd_fwdbwd_libtorch(benchmark::State& state) {
  at::set_num_threads(1);
  const lskd_bench::dataset& d = lskd_bench::data_for(state.range(0), state.range(1));
  const inputs in = wrap(d);
  double value = 0.0;
  torch::Tensor grad;
  {  // warm-up
    const torch::Tensor student = in.student.detach().requires_grad_(true);
    grad = torch::autograd::grad({kd_loss(student, in.teacher)}, {student})[0];
  }
  for (auto _ : state) {
    // A fresh leaf each time: the gradient is returned, not accumulated into .grad.
    const torch::Tensor student = in.student.detach().requires_grad_(true);
    const torch::Tensor loss = kd_loss(student, in.teacher);
    grad = torch::autograd::grad({loss}, {student})[0];
    value = loss.item<double>();
    benchmark::DoNotOptimize(grad.data_ptr());
  }
  lskd_bench::set_throughput(state, d.rows, d.cols, 3);
  // Copy the last gradient into the shared buffer so that record_result can compare it.
  std::memcpy(d.grad, grad.contiguous().data_ptr<float>(),
              static_cast<std::size_t>(d.rows * d.cols) * sizeof(float));
  lskd_bench::record_result(state, value, true);
}

}  // namespace

namespace lskd_bench {

void register_libtorch(std::int64_t rows, std::int64_t cols) {
  benchmark::RegisterBenchmark("BM_kd_forward_libtorch", kd_forward_libtorch)
      ->Args({rows, cols})
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_kd_fwdbwd_libtorch", kd_fwdbwd_libtorch)
      ->Args({rows, cols})
      ->Unit(benchmark::kMicrosecond);
}

const char* torch_version() { return TORCH_VERSION; }

}  // namespace lskd_bench
