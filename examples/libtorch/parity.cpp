// SPDX-License-Identifier: MIT
// lskd_torch::KDLoss against the authors' formula written with libtorch operations under
// autograd (Sun et al., CVPR 2024): loss, student and teacher gradients, in float and double,
// over shapes, temperatures, standardization on and off and the three reductions.

#include "lskd_torch.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <tuple>
#include <utility>

namespace {

struct outcome {
  torch::Tensor loss, grad_student, grad_teacher;
};

// The reference: (x - mean) / (1e-7 + std) with the unbiased std, log_softmax and softmax at
// temperature T, kl_div summed over classes, times T^2; in double.
outcome reference(const torch::Tensor& student_data, const torch::Tensor& teacher_data,
                  double temperature, bool standardize, lskd::reduction reduction,
                  const torch::Tensor& row_weights) {
  auto student = student_data.to(torch::kDouble).detach().requires_grad_(true);
  auto teacher = teacher_data.to(torch::kDouble).detach().requires_grad_(true);
  const auto normalize = [](const torch::Tensor& logits) {
    const auto mean = logits.mean(-1, /*keepdim=*/true);
    const auto stdv = logits.std(-1, /*unbiased=*/true, /*keepdim=*/true);
    return (logits - mean) / (1e-7 + stdv);
  };
  const auto s = standardize ? normalize(student) : student;
  const auto t = standardize ? normalize(teacher) : teacher;
  const auto log_pred_student = torch::log_softmax(s / temperature, 1);
  const auto pred_teacher = torch::softmax(t / temperature, 1);
  const auto per_row = torch::kl_div(log_pred_student, pred_teacher, at::Reduction::None).sum(1) *
                       (temperature * temperature);
  torch::Tensor loss = reduction == lskd::reduction::batchmean ? per_row.mean()
                       : reduction == lskd::reduction::sum     ? per_row.sum()
                                                               : per_row;
  if (reduction == lskd::reduction::none) {
    loss.backward(row_weights.to(torch::kDouble));
  } else {
    loss.backward();
  }
  return {loss.detach(), student.grad(), teacher.grad()};
}

// Largest differences seen, by (dtype, quantity): absolute, and relative to the largest
// reference value.
std::map<std::pair<std::string, std::string>, std::pair<double, double>> worst;

int failures = 0, checks = 0;

void compare(const std::string& dtype, const std::string& what, const std::string& label,
             const torch::Tensor& got, const torch::Tensor& want, double floor,
             double tolerance) {
  const double scale = std::max(want.abs().max().item<double>(), floor);
  const double difference = (got.to(torch::kDouble) - want).abs().max().item<double>();
  auto& entry = worst[{dtype, what}];
  entry.first = std::max(entry.first, difference);
  entry.second = std::max(entry.second, difference / scale);
  ++checks;
  if (!(difference <= tolerance * scale)) {
    ++failures;
    std::printf("FAILED %s: %s differs by %.3g; tolerance %.3g x scale %.3g\n", label.c_str(),
                what.c_str(), difference, tolerance, scale);
  }
}

template <class T>
void run(torch::ScalarType dtype, double tolerance) {
  const std::string name = dtype == torch::kFloat ? "float32" : "float64";
  const std::pair<int64_t, int64_t> shapes[] = {{1, 2}, {3, 5}, {8, 10}, {4, 31}, {16, 100},
                                                {5, 257}};
  for (const auto& [rows, classes] : shapes) {
    for (const bool standardize : {true, false}) {
      for (const auto reduction :
           {lskd::reduction::batchmean, lskd::reduction::sum, lskd::reduction::none}) {
        for (const double temperature : {2.0, 4.0}) {
          torch::manual_seed(rows * 1000 + classes);
          const auto student_data = (torch::randn({rows, classes}) * 2 + 1).to(dtype);
          const auto teacher_data = (torch::randn({rows, classes}) * 3 - 1).to(dtype);
          const auto weights = torch::rand({rows}, torch::kDouble) + 0.5;
          const outcome want = reference(student_data, teacher_data, temperature, standardize,
                                         reduction, weights);

          lskd::kd_options options;
          options.temperature = temperature;
          options.standardize = standardize;
          options.reduction = reduction;
          auto student = student_data.clone().requires_grad_(true);
          auto teacher = teacher_data.clone().requires_grad_(true);
          const auto loss = lskd_torch::KDLoss::apply(student, teacher, options);
          if (reduction == lskd::reduction::none) {
            loss.backward(weights.to(dtype));
          } else {
            loss.backward();
          }

          const std::string label = name + " " + std::to_string(rows) + "x" +
                                    std::to_string(classes) + " standardize=" +
                                    std::to_string(standardize) + " reduction=" +
                                    lskd::to_string(reduction) +
                                    " T=" + std::to_string(temperature);
          // Floors for values that are 0 analytically (two standardized classes), where what
          // is left is the roundoff of terms of order T^2 (loss) or T / std (gradients).
          compare(name, "loss", label, loss.detach(), want.loss,
                  1e-2 * temperature * temperature, tolerance);
          compare(name, "grad_student", label, student.grad(), want.grad_student, 0.1, tolerance);
          compare(name, "grad_teacher", label, teacher.grad(), want.grad_teacher, 0.1, tolerance);
        }
      }
    }
  }
}

// A teacher without requires_grad gets no gradient; a column-strided student is copied.
void check_edge_cases() {
  auto student = torch::randn({7, 3}, torch::kDouble).t().requires_grad_(true);  // 3 x 7
  const auto teacher = torch::randn({3, 7}, torch::kDouble);
  const auto loss = lskd_torch::KDLoss::apply(student, teacher, lskd::kd_options{});
  loss.backward();
  const outcome want = reference(student.detach(), teacher, 2.0, true, lskd::reduction::batchmean,
                                 torch::Tensor());
  compare("float64", "edge cases", "column-strided student", student.grad(), want.grad_student,
          0.1, 1e-10);
  ++checks;
  if (teacher.grad().defined()) {
    ++failures;
    std::printf("FAILED: a teacher without requires_grad got a gradient\n");
  }
  // Errors come through as C++ exceptions with lskd's message.
  ++checks;
  try {
    auto bad = teacher.clone();
    bad[1][2] = std::numeric_limits<double>::quiet_NaN();
    lskd_torch::KDLoss::apply(student, bad, lskd::kd_options{});
    ++failures;
    std::printf("FAILED: a NaN teacher logit was accepted\n");
  } catch (const std::domain_error& error) {
    std::printf("NaN teacher logit refused: %s\n", error.what());
  }
}

}  // namespace

int main() {
  at::set_num_threads(2);
  run<double>(torch::kDouble, 1e-10);
  run<float>(torch::kFloat, 5e-5);
  check_edge_cases();
  std::printf("largest differences from the libtorch reference (abs, rel to the largest "
              "reference value):\n");
  for (const auto& [key, value] : worst) {
    std::printf("  %-8s %-13s abs %.3e  rel %.3e\n", key.first.c_str(), key.second.c_str(),
                value.first, value.second);
  }
  std::printf("%d passed, %d failed\n", checks - failures, failures);
  return failures == 0 ? 0 : 1;
}
