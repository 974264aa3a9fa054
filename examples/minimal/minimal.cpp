// The API tour of the README, compiled and run as a test: a trainer hands lskd raw row-major
// buffers and gets the logit-standardized KD loss and its gradient back.
#include <lskd/lskd.hpp>

#include <cstdio>
#include <vector>

int main() {
  // Two samples, four classes; the teacher's buffer has a leading dimension of 5 (padding).
  const std::vector<float> student = {1.0f, 2.0f, 0.5f, -1.0f,   //
                                      0.0f, 0.1f, 0.2f, 3.0f};
  const std::vector<float> teacher = {2.0f, 5.0f, 1.0f, -3.0f, 0.0f,  //
                                      1.0f, 1.0f, 1.0f, 9.0f, 0.0f};
  std::vector<float> grad(8);

  lskd::kd_options options;  // standardize, tau = 2, ddof = 1, eps = 1e-7, batchmean, tau^2
  const lskd::kd_loss<float> kd(options);
  const double loss = kd.forward_backward({student.data(), 2, 4, 4}, {teacher.data(), 2, 4, 5},
                                          {grad.data(), 2, 4, 4});
  std::printf("arch %s, loss %.6f, grad[0] %.6f\n", kd.arch_name(), loss, grad[0]);

  // The pieces stand alone: per-row statistics and the Z-score with a temperature.
  float mean[2];
  float std[2];
  lskd::row_stats<float>{}({student.data(), 2, 4}, mean, std);
  std::vector<float> z(8);
  lskd::standardize_options z_options;  // ddof = 1, eps = 1e-7
  z_options.temperature = 2.0;
  lskd::standardize<float>{z_options}({student.data(), 2, 4}, {z.data(), 2, 4});
  std::printf("row 0: mean %.4f, std %.4f, z[0] / tau = %.4f\n", mean[0], std[0], z[0]);

  // Bad input is an exception that names the argument; nothing is written.
  try {
    kd.forward({student.data(), 2, 4, 3}, {teacher.data(), 2, 4, 5});
  } catch (const std::invalid_argument& error) {
    std::printf("refused: %s\n", error.what());
  }
  return loss > 0.0 ? 0 : 1;
}
