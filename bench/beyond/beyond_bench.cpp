// SPDX-License-Identifier: MIT
// Benchmarks of the losses beyond plain KD, beside their plain baselines in the same binary:
//
//   BM_kd_forward_backward_lskd            one kd_loss call (the unit of cost)
//   BM_kd_repeated_forward_backward_lskd   M kd_loss calls, one per temperature (the baseline)
//   BM_multi_temperature_forward_backward_lskd   one multi_temperature_kd_loss call over M
//   BM_dkd_forward_backward_lskd           DKD, standardized, student gradient
//
// Items are logits (rows x classes) per call; bytes are those of the two input matrices. The
// architecture and the xsimd version are recorded in the context.

#include <lskd/lskd.hpp>

#include <benchmark/benchmark.h>

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

void account(benchmark::State& state, double calls_per_iteration) {
  const double logits = static_cast<double>(rows * classes) * calls_per_iteration;
  state.SetItemsProcessed(static_cast<std::int64_t>(static_cast<double>(state.iterations()) * logits));
  state.SetBytesProcessed(
      static_cast<std::int64_t>(static_cast<double>(state.iterations()) * logits * 2 * sizeof(float)));
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
  account(state, 1);
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
  account(state, 1);
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
  account(state, 1);
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
  account(state, 1);
}

}  // namespace

BENCHMARK(BM_kd_forward_backward_lskd)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_kd_repeated_forward_backward_lskd)->DenseRange(1, 6)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_multi_temperature_forward_backward_lskd)
    ->DenseRange(1, 6)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_dkd_forward_backward_lskd)->Unit(benchmark::kMicrosecond);

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
