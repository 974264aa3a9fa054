// SPDX-License-Identifier: MIT
// Distilling a fixed random teacher into a linear student with lskd's loss as a libtorch
// autograd function: synthetic inputs, the teacher a small frozen MLP, the student one linear
// layer trained with Adam. Prints the loss and the student's agreement with the teacher's
// top-1 class on held-out inputs; exits non-zero if training did not reduce the loss.

#include "lskd_torch.hpp"

#include <torch/torch.h>

#include <cstdio>

int main() {
  torch::manual_seed(0);
  constexpr int64_t features = 32, hidden = 64, classes = 10, batch = 128, steps = 300;

  // The teacher: fixed random weights, never trained.
  torch::nn::Sequential teacher(torch::nn::Linear(features, hidden), torch::nn::ReLU(),
                                torch::nn::Linear(hidden, classes));
  for (auto& parameter : teacher->parameters()) parameter.requires_grad_(false);

  torch::nn::Linear student(features, classes);
  torch::optim::Adam optimizer(student->parameters(), torch::optim::AdamOptions(1e-2));

  lskd::kd_options options;  // Sun et al.'s defaults: standardized logits, temperature 2
  const torch::Tensor held_out = torch::randn({1024, features});
  const auto agreement = [&] {
    torch::NoGradGuard no_grad;
    return (student->forward(held_out).argmax(1) == teacher->forward(held_out).argmax(1))
        .to(torch::kDouble).mean().item<double>();
  };

  double first = 0.0, last = 0.0, window = 0.0;
  std::printf("agreement with the teacher before training: %.3f\n", agreement());
  for (int64_t step = 1; step <= steps; ++step) {
    const torch::Tensor inputs = torch::randn({batch, features});
    const torch::Tensor teacher_logits = teacher->forward(inputs);
    const torch::Tensor student_logits = student->forward(inputs);
    const torch::Tensor loss = lskd_torch::KDLoss::apply(student_logits, teacher_logits, options);

    optimizer.zero_grad();
    loss.backward();
    optimizer.step();

    // Averages over 25 steps, since each batch is new.
    window += loss.item<double>();
    if (step % 25 == 0) {
      window /= 25.0;
      if (step == 25) first = window;
      last = window;
      std::printf("step %3lld  loss %.5f\n", static_cast<long long>(step), window);
      window = 0.0;
    }
  }
  const double final_agreement = agreement();
  std::printf("agreement with the teacher after training: %.3f\n", final_agreement);
  if (!(last < 0.8 * first)) {
    std::printf("FAILED: the loss went from %.5f to %.5f\n", first, last);
    return 1;
  }
  return 0;
}
