// SPDX-License-Identifier: MIT
// Benchmarks of the losses beyond plain KD, beside their plain baselines in the same binary, on
// the same seeded 32 x 8192 logits (float, standardized, tau 2, student gradient unless named):
//
//   BM_kd_forward_backward_lskd            one kd_loss call: the unit of cost, and the baseline
//                                          of the temperature-gradient rows
//   BM_kd_repeated_forward_backward_lskd   M kd_loss calls, one per temperature (the baseline)
//   BM_multi_temperature_forward_backward_lskd   one multi_temperature_kd_loss call over M
//   BM_dkd_forward_backward_lskd           DKD, standardized, student gradient
//
//   BM_kd_forward_backward_lskd_float_on_<t>_values   kd_loss<float> on the 16-bit logits
//                                          widened beforehand: the baseline of the two below
//   BM_kd_forward_backward_lskd_<t>_grad_float        half_precision_kd_loss<t>, float gradient
//   BM_kd_forward_backward_lskd_<t>_grad_<t>          half_precision_kd_loss<t>, gradient in t
//                                          (t: bf16 = Eigen::bfloat16, half = Eigen::half)
//
//   BM_multi_temperature_forward_backward_lskd_float_on_bf16_values   multi-temperature KD
//                                          (4 temperatures) on bf16 logits widened beforehand
//   BM_multi_temperature_forward_backward_lskd_bf16_grad_float        the 16-bit wrapper
//
//   BM_kd_forward_backward_ddof0_lskd          unweighted Z-score with ddof 0 (the baseline)
//   BM_kd_forward_backward_class_weights_lskd  kd_loss<float>::with_class_weights, ddof 0
//
//   BM_kd_forward_backward_tau_grad_lskd   student gradient and d(loss)/d(tau)
//   BM_kd_tau_grad_only_lskd               d(loss)/d(tau) alone (both gradient views empty)
//
// Items are logits (rows x classes) per call of the operation. Bytes are those the operation
// must move at least: the two input matrices read and the gradient matrices written, each at
// its storage size (2 bytes per 16-bit logit, 4 per float), once per call. The architecture and
// the xsimd version are recorded in the context.

#include <lskd/lskd.hpp>

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr lskd::index rows = 32;
constexpr lskd::index classes = 8192;

struct inputs {
  std::vector<float> student, teacher, grad_student;
  std::vector<std::int64_t> targets;
  inputs() : student(rows * classes), teacher(rows * classes), grad_student(rows * classes),
             targets(rows) {
    std::mt19937 engine(7);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    for (auto& x : student) x = normal(engine);
    for (auto& x : teacher) x = normal(engine);
    std::uniform_int_distribution<std::int64_t> pick(0, classes - 1);
    for (auto& t : targets) t = pick(engine);
  }
};

const inputs& data() {
  static const inputs shared;
  return shared;
}

/// Counts one call's logits, and its bytes: the two input matrices at `input_bytes` per logit
/// plus `gradient_bytes` per logit written (the sum over the gradient matrices asked for).
void account(benchmark::State& state, std::size_t input_bytes, std::size_t gradient_bytes) {
  const double logits = static_cast<double>(rows * classes);
  const double calls = static_cast<double>(state.iterations());
  const double bytes = static_cast<double>(2 * input_bytes + gradient_bytes);
  state.SetItemsProcessed(static_cast<std::int64_t>(calls * logits));
  state.SetBytesProcessed(static_cast<std::int64_t>(calls * logits * bytes));
}

std::vector<double> temperatures(std::int64_t count) {
  std::vector<double> list;
  for (std::int64_t k = 0; k < count; ++k) list.push_back(2.0 + static_cast<double>(k));
  return list;
}

void BM_kd_forward_backward_lskd(benchmark::State& state) {
  const auto& d = data();
  std::vector<float> grad(d.grad_student.size());
  const lskd::kd_loss<float> kd;
  for (auto _ : state) {
    benchmark::DoNotOptimize(kd.forward_backward({d.student.data(), rows, classes},
                                                 {d.teacher.data(), rows, classes},
                                                 {grad.data(), rows, classes}));
    benchmark::ClobberMemory();
  }
  account(state, sizeof(float), sizeof(float));
}

void BM_kd_repeated_forward_backward_lskd(benchmark::State& state) {
  const auto& d = data();
  std::vector<float> grad(d.grad_student.size());
  std::vector<float> sum(d.grad_student.size());
  std::vector<lskd::kd_loss<float>> losses;
  for (double tau : temperatures(state.range(0))) {
    lskd::kd_options o;
    o.temperature = tau;
    losses.emplace_back(o);
  }
  for (auto _ : state) {
    double total = 0;
    std::fill(sum.begin(), sum.end(), 0.0f);
    for (const auto& kd : losses) {
      total += kd.forward_backward({d.student.data(), rows, classes},
                                   {d.teacher.data(), rows, classes},
                                   {grad.data(), rows, classes});
      for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += grad[i];
    }
    benchmark::DoNotOptimize(total);
    benchmark::ClobberMemory();
  }
  account(state, sizeof(float), sizeof(float));
  state.counters["temperatures"] = static_cast<double>(state.range(0));
}

void BM_multi_temperature_forward_backward_lskd(benchmark::State& state) {
  const auto& d = data();
  std::vector<float> grad(d.grad_student.size());
  lskd::multi_temperature_kd_options o;
  o.temperatures = temperatures(state.range(0));
  const lskd::multi_temperature_kd_loss<float> loss(o);
  for (auto _ : state) {
    benchmark::DoNotOptimize(loss.forward_backward({d.student.data(), rows, classes},
                                                   {d.teacher.data(), rows, classes},
                                                   {grad.data(), rows, classes}));
    benchmark::ClobberMemory();
  }
  account(state, sizeof(float), sizeof(float));
  state.counters["temperatures"] = static_cast<double>(state.range(0));
}

void BM_dkd_forward_backward_lskd(benchmark::State& state) {
  const auto& d = data();
  std::vector<float> grad(d.grad_student.size());
  lskd::dkd_options o;
  o.standardize = true;
  o.temperature = 2.0;
  const lskd::dkd_loss<float> dkd(o);
  for (auto _ : state) {
    benchmark::DoNotOptimize(dkd.forward_backward({d.student.data(), rows, classes},
                                                  {d.teacher.data(), rows, classes},
                                                  d.targets.data(), {grad.data(), rows, classes}));
    benchmark::ClobberMemory();
  }
  account(state, sizeof(float), sizeof(float));
}

/// The shared logits rounded to 16-bit storage, and the same values widened back to float
/// (exact), so the 16-bit rows and their float baseline see identical numbers.
template <class Storage>
struct narrow_inputs {
  std::vector<Storage> student, teacher;
  std::vector<float> student_values, teacher_values;
  narrow_inputs() {
    const auto& d = data();
    for (float x : d.student) student.push_back(static_cast<Storage>(x));
    for (float x : d.teacher) teacher.push_back(static_cast<Storage>(x));
    for (Storage x : student) student_values.push_back(static_cast<float>(x));
    for (Storage x : teacher) teacher_values.push_back(static_cast<float>(x));
  }
};

template <class Storage>
const narrow_inputs<Storage>& narrow_data() {
  static const narrow_inputs<Storage> shared;
  return shared;
}

template <class Storage>
void BM_kd_forward_backward_float_on_values(benchmark::State& state) {
  const auto& d = narrow_data<Storage>();
  std::vector<float> grad(d.student_values.size());
  const lskd::kd_loss<float> kd;
  for (auto _ : state) {
    benchmark::DoNotOptimize(kd.forward_backward({d.student_values.data(), rows, classes},
                                                 {d.teacher_values.data(), rows, classes},
                                                 {grad.data(), rows, classes}));
    benchmark::ClobberMemory();
  }
  account(state, sizeof(float), sizeof(float));
}

template <class Storage, class Gradient>
void BM_kd_forward_backward_16bit(benchmark::State& state) {
  const auto& d = narrow_data<Storage>();
  std::vector<Gradient> grad(d.student.size());
  const lskd::half_precision_kd_loss<Storage> kd;
  for (auto _ : state) {
    benchmark::DoNotOptimize(kd.forward_backward({d.student.data(), rows, classes},
                                                 {d.teacher.data(), rows, classes},
                                                 lskd::matrix_view<Gradient>(grad.data(), rows,
                                                                             classes)));
    benchmark::ClobberMemory();
  }
  account(state, sizeof(Storage), sizeof(Gradient));
}

/// Multi-temperature KD over 4 temperatures on the 16-bit logits widened beforehand (the
/// baseline), and on the 16-bit storage itself with a float gradient.
template <class Storage>
void BM_multi_temperature_forward_backward_float_on_values(benchmark::State& state) {
  const auto& d = narrow_data<Storage>();
  std::vector<float> grad(d.student_values.size());
  lskd::multi_temperature_kd_options o;
  o.temperatures = temperatures(4);
  const lskd::multi_temperature_kd_loss<float> loss(o);
  for (auto _ : state) {
    benchmark::DoNotOptimize(loss.forward_backward({d.student_values.data(), rows, classes},
                                                   {d.teacher_values.data(), rows, classes},
                                                   {grad.data(), rows, classes}));
    benchmark::ClobberMemory();
  }
  account(state, sizeof(float), sizeof(float));
}

template <class Storage>
void BM_multi_temperature_forward_backward_16bit(benchmark::State& state) {
  const auto& d = narrow_data<Storage>();
  std::vector<float> grad(d.student.size());
  lskd::multi_temperature_kd_options o;
  o.temperatures = temperatures(4);
  const lskd::half_precision_multi_temperature_kd_loss<Storage> loss(o);
  for (auto _ : state) {
    benchmark::DoNotOptimize(loss.forward_backward({d.student.data(), rows, classes},
                                                   {d.teacher.data(), rows, classes},
                                                   lskd::matrix_view<float>(grad.data(), rows,
                                                                            classes)));
    benchmark::ClobberMemory();
  }
  account(state, sizeof(Storage), sizeof(float));
}

/// Class weights U(0, 2), seeded: the weighted Z-score's cost does not depend on their values.
std::vector<double> class_weights() {
  std::mt19937 engine(11);
  std::uniform_real_distribution<double> uniform(0.0, 2.0);
  std::vector<double> weights(static_cast<std::size_t>(classes));
  for (auto& w : weights) w = uniform(engine);
  return weights;
}

void kd_forward_backward(benchmark::State& state, const lskd::kd_loss<float>& kd) {
  const auto& d = data();
  std::vector<float> grad(d.grad_student.size());
  for (auto _ : state) {
    benchmark::DoNotOptimize(kd.forward_backward({d.student.data(), rows, classes},
                                                 {d.teacher.data(), rows, classes},
                                                 {grad.data(), rows, classes}));
    benchmark::ClobberMemory();
  }
  account(state, sizeof(float), sizeof(float));
}

void BM_kd_forward_backward_ddof0_lskd(benchmark::State& state) {
  lskd::kd_options o;
  o.ddof = 0;
  kd_forward_backward(state, lskd::kd_loss<float>(o));
}

void BM_kd_forward_backward_class_weights_lskd(benchmark::State& state) {
  lskd::kd_options o;
  o.ddof = 0;
  kd_forward_backward(state, lskd::kd_loss<float>::with_class_weights(o, class_weights()));
}

void BM_kd_forward_backward_tau_grad_lskd(benchmark::State& state) {
  const auto& d = data();
  std::vector<float> grad(d.grad_student.size());
  const lskd::kd_loss<float> kd;
  double grad_temperature = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(kd.forward_backward({d.student.data(), rows, classes},
                                                 {d.teacher.data(), rows, classes},
                                                 {grad.data(), rows, classes}, {}, nullptr,
                                                 &grad_temperature));
    benchmark::DoNotOptimize(grad_temperature);
    benchmark::ClobberMemory();
  }
  account(state, sizeof(float), sizeof(float));
}

void BM_kd_tau_grad_only_lskd(benchmark::State& state) {
  const auto& d = data();
  const lskd::kd_loss<float> kd;
  double grad_temperature = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(kd.forward_backward({d.student.data(), rows, classes},
                                                 {d.teacher.data(), rows, classes}, {}, {},
                                                 nullptr, &grad_temperature));
    benchmark::DoNotOptimize(grad_temperature);
    benchmark::ClobberMemory();
  }
  account(state, sizeof(float), 0);
}

}  // namespace

BENCHMARK(BM_kd_forward_backward_lskd)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_kd_repeated_forward_backward_lskd)->DenseRange(1, 6)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_multi_temperature_forward_backward_lskd)
    ->DenseRange(1, 6)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_dkd_forward_backward_lskd)->Unit(benchmark::kMicrosecond);

BENCHMARK_TEMPLATE(BM_kd_forward_backward_float_on_values, Eigen::bfloat16)
    ->Name("BM_kd_forward_backward_lskd_float_on_bf16_values")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_kd_forward_backward_16bit, Eigen::bfloat16, float)
    ->Name("BM_kd_forward_backward_lskd_bf16_grad_float")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_kd_forward_backward_16bit, Eigen::bfloat16, Eigen::bfloat16)
    ->Name("BM_kd_forward_backward_lskd_bf16_grad_bf16")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_kd_forward_backward_float_on_values, Eigen::half)
    ->Name("BM_kd_forward_backward_lskd_float_on_half_values")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_kd_forward_backward_16bit, Eigen::half, float)
    ->Name("BM_kd_forward_backward_lskd_half_grad_float")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_kd_forward_backward_16bit, Eigen::half, Eigen::half)
    ->Name("BM_kd_forward_backward_lskd_half_grad_half")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_multi_temperature_forward_backward_float_on_values, Eigen::bfloat16)
    ->Name("BM_multi_temperature_forward_backward_lskd_float_on_bf16_values")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_multi_temperature_forward_backward_16bit, Eigen::bfloat16)
    ->Name("BM_multi_temperature_forward_backward_lskd_bf16_grad_float")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_kd_forward_backward_ddof0_lskd)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_kd_forward_backward_class_weights_lskd)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_kd_forward_backward_tau_grad_lskd)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_kd_tau_grad_only_lskd)->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) {
  benchmark::AddCustomContext("lskd_arch", lskd::kd_loss<float>::arch_name());
  benchmark::AddCustomContext("xsimd", std::to_string(XSIMD_VERSION_MAJOR) + "." +
                                           std::to_string(XSIMD_VERSION_MINOR) + "." +
                                           std::to_string(XSIMD_VERSION_PATCH));
  benchmark::AddCustomContext("lskd", std::to_string(LSKD_VERSION_MAJOR) + "." +
                                          std::to_string(LSKD_VERSION_MINOR) + "." +
                                          std::to_string(LSKD_VERSION_PATCH));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
