// SPDX-License-Identifier: MIT
//
// Baselines for the fused KD loss and student gradient, same formula as lskd::kd_loss with its
// defaults (Z-score with the unbiased std + 1e-7, softmax at tau = 2, KL(p_t || p_s) per row,
// mean over rows, x tau^2):
//   - naive: plain loops, std::exp, double everywhere;
//   - eigen: the textbook array expression, one whole-batch temporary per step.
// Both write the gradient with respect to the student:
//   g = (tau / B) (p_s - p_t) at the Z-score, then
//   dx = (g - mean g) / (std + eps) - z (g . z) / ((C - 1) std).

#include "common.hpp"

#include <Eigen/Core>
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace {

using lskd_bench::std_eps;
using lskd_bench::temperature;

double kd_fwdbwd_naive(const float* student, const float* teacher, float* grad,
                       std::int64_t rows, std::int64_t cols) {
  std::vector<double> zs(static_cast<std::size_t>(cols));
  std::vector<double> zt(static_cast<std::size_t>(cols));
  std::vector<double> ps(static_cast<std::size_t>(cols));
  std::vector<double> pt(static_cast<std::size_t>(cols));
  const double n = static_cast<double>(cols);
  double total = 0.0;

  for (std::int64_t r = 0; r < rows; ++r) {
    const float* s = student + r * cols;
    const float* t = teacher + r * cols;
    float* g = grad + r * cols;

    // Mean and unbiased std of each row.
    double mean_s = 0.0;
    double mean_t = 0.0;
    for (std::int64_t c = 0; c < cols; ++c) {
      mean_s += s[c];
      mean_t += t[c];
    }
    mean_s /= n;
    mean_t /= n;
    double var_s = 0.0;
    double var_t = 0.0;
    for (std::int64_t c = 0; c < cols; ++c) {
      var_s += (s[c] - mean_s) * (s[c] - mean_s);
      var_t += (t[c] - mean_t) * (t[c] - mean_t);
    }
    const double std_s = std::sqrt(var_s / (n - 1.0));
    const double std_t = std::sqrt(var_t / (n - 1.0));

    // Z-scores, and their maxima over tau for a stable softmax.
    double max_s = -HUGE_VAL;
    double max_t = -HUGE_VAL;
    for (std::int64_t c = 0; c < cols; ++c) {
      zs[c] = (s[c] - mean_s) / (std_s + std_eps);
      zt[c] = (t[c] - mean_t) / (std_t + std_eps);
      max_s = std::max(max_s, zs[c] / temperature);
      max_t = std::max(max_t, zt[c] / temperature);
    }

    // Softmaxes at tau.
    double sum_s = 0.0;
    double sum_t = 0.0;
    for (std::int64_t c = 0; c < cols; ++c) {
      ps[c] = std::exp(zs[c] / temperature - max_s);
      pt[c] = std::exp(zt[c] / temperature - max_t);
      sum_s += ps[c];
      sum_t += pt[c];
    }
    const double log_sum_s = std::log(sum_s);
    const double log_sum_t = std::log(sum_t);

    // KL(p_t || p_s) = sum p_t (log p_t - log p_s).
    double kl = 0.0;
    for (std::int64_t c = 0; c < cols; ++c) {
      const double log_ps = zs[c] / temperature - max_s - log_sum_s;
      const double log_pt = zt[c] / temperature - max_t - log_sum_t;
      ps[c] /= sum_s;
      pt[c] /= sum_t;
      kl += pt[c] * (log_pt - log_ps);
    }
    total += kl;

    // Gradient at the Z-score, then through the mean and the std.
    const double scale = temperature * temperature / static_cast<double>(rows) / temperature;
    double g_mean = 0.0;
    double g_dot_z = 0.0;
    for (std::int64_t c = 0; c < cols; ++c) {
      const double gc = scale * (ps[c] - pt[c]);
      g_mean += gc;
      g_dot_z += gc * zs[c];
    }
    g_mean /= n;
    for (std::int64_t c = 0; c < cols; ++c) {
      const double gc = scale * (ps[c] - pt[c]);
      g[c] = static_cast<float>((gc - g_mean) / (std_s + std_eps) -
                                zs[c] * g_dot_z / ((n - 1.0) * std_s));
    }
  }
  return total / static_cast<double>(rows) * temperature * temperature;
}

using array_rm = Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

double kd_fwdbwd_eigen(const float* student, const float* teacher, float* grad,
                       std::int64_t rows, std::int64_t cols) {
  const Eigen::Map<const array_rm> s(student, rows, cols);
  const Eigen::Map<const array_rm> t(teacher, rows, cols);
  Eigen::Map<array_rm> g(grad, rows, cols);
  const float tau = static_cast<float>(temperature);
  const float eps = static_cast<float>(std_eps);

  const Eigen::ArrayXf mean_s = s.rowwise().mean();
  const Eigen::ArrayXf mean_t = t.rowwise().mean();
  const array_rm cs = s.colwise() - mean_s;
  const array_rm ct = t.colwise() - mean_t;
  const Eigen::ArrayXf std_s = (cs.square().rowwise().sum() / static_cast<float>(cols - 1)).sqrt();
  const Eigen::ArrayXf std_t = (ct.square().rowwise().sum() / static_cast<float>(cols - 1)).sqrt();
  const array_rm zs = cs.colwise() / (std_s + eps);
  const array_rm zt = ct.colwise() / (std_t + eps);

  const array_rm as = (zs / tau).colwise() - (zs / tau).rowwise().maxCoeff();
  const array_rm at = (zt / tau).colwise() - (zt / tau).rowwise().maxCoeff();
  const array_rm es = as.exp();
  const array_rm et = at.exp();
  const Eigen::ArrayXf sum_s = es.rowwise().sum();
  const Eigen::ArrayXf sum_t = et.rowwise().sum();
  const array_rm ps = es.colwise() / sum_s;
  const array_rm pt = et.colwise() / sum_t;
  const array_rm log_ps = as.colwise() - sum_s.log();
  const array_rm log_pt = at.colwise() - sum_t.log();
  const double loss =
      static_cast<double>((pt * (log_pt - log_ps)).rowwise().sum().mean()) * tau * tau;

  const array_rm gz = (ps - pt) * (tau / static_cast<float>(rows));
  const Eigen::ArrayXf g_mean = gz.rowwise().mean();
  const Eigen::ArrayXf g_dot_z = (gz * zs).rowwise().sum();
  g = (gz.colwise() - g_mean).colwise() / (std_s + eps) -
      zs.colwise() * (g_dot_z / (static_cast<float>(cols - 1) * std_s));
  return loss;
}

template <double (*Kernel)(const float*, const float*, float*, std::int64_t, std::int64_t)>
void kd_fwdbwd_baseline(benchmark::State& state) {
  const std::int64_t rows = state.range(0);
  const std::int64_t cols = state.range(1);
  const lskd_bench::dataset& d = lskd_bench::data_for(rows, cols);
  double loss = Kernel(d.student, d.teacher, d.grad, rows, cols);  // warm-up
  for (auto _ : state) {
    loss = Kernel(d.student, d.teacher, d.grad, rows, cols);
    benchmark::DoNotOptimize(loss);
    benchmark::ClobberMemory();
  }
  lskd_bench::set_throughput(state, rows, cols, 3);
  lskd_bench::record_result(state, loss, true);
}

}  // namespace

namespace lskd_bench {

void register_baselines(std::int64_t rows, std::int64_t cols) {
  benchmark::RegisterBenchmark("BM_kd_fwdbwd_naive", kd_fwdbwd_baseline<kd_fwdbwd_naive>)
      ->Args({rows, cols})
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_kd_fwdbwd_eigen", kd_fwdbwd_baseline<kd_fwdbwd_eigen>)
      ->Args({rows, cols})
      ->Unit(benchmark::kMicrosecond);
}

const char* eigen_version() {
  static const std::string version = std::to_string(EIGEN_WORLD_VERSION) + "." +
                                     std::to_string(EIGEN_MAJOR_VERSION) + "." +
                                     std::to_string(EIGEN_MINOR_VERSION);
  return version.c_str();
}
}  // namespace lskd_bench
