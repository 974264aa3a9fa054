// SPDX-License-Identifier: MIT
// kd_loss's analytic gradients (student and teacher) against finite differences of its own
// forward(), in double, over shapes, standardization on and off, ddof, temperatures, eps,
// reductions and the tau^2 factor.
//
// Difference quotient: Richardson-extrapolated central differences,
//   D(h) = (L(x + h) - L(x - h)) / 2h,  G = (4 D(h/2) - D(h)) / 3,
// with h = 1e-3 times the length over which the loss changes shape (the row's std when
// standardizing, else the temperature, at most 1): truncation error O((h / length)^4), about
// 1e-12 relative; rounding error about u |L| / h (u = 1.1e-16).
//
// Tolerance: |G - g| <= 1e-8 * max|g| + 1e-14 * max(1, |L|) / h, with max|g| over the whole
// gradient (student or teacher) of that call; the second term is the quotient's rounding noise
// (L is computed to about 1e-14 relative, then divided by h). A wrong term of the gradient
// (the std path, ddof, the tau^2 factor, the reduction's weight) is off by orders of magnitude
// more.

#include "test_support.hpp"

namespace lskd_test {
namespace {

struct shape {
  index rows;
  index cols;
};

/// The loss as a function of one logit: forward() with that logit replaced.
class loss_function {
 public:
  loss_function(const lskd::kd_options& options, std::vector<double> student,
                std::vector<double> teacher, shape s)
      : kd_(options), student_(std::move(student)), teacher_(std::move(teacher)), shape_(s),
        row_losses_(static_cast<std::size_t>(s.rows)) {}

  double at(bool of_teacher, std::size_t k, double value) {
    std::vector<double>& x = of_teacher ? teacher_ : student_;
    const double saved = x[k];
    x[k] = value;
    const double loss = kd_.forward({student_.data(), shape_.rows, shape_.cols},
                                    {teacher_.data(), shape_.rows, shape_.cols},
                                    row_losses_.data());
    x[k] = saved;
    return loss;
  }

  /// Richardson-extrapolated central difference of the loss in logit k, and the step it
  /// used. The quotient divides by the true distance between x + h and x - h as rounded.
  struct difference {
    double value;
    double step;
  };
  difference derivative(bool of_teacher, std::size_t k) {
    const std::vector<double>& values = of_teacher ? teacher_ : student_;
    const double x = values[k];
    const double h = 1e-3 * step_scale(values, k / static_cast<std::size_t>(shape_.cols));
    const auto central = [&](double step) {
      const double up = x + step;
      const double down = x - step;
      return (at(of_teacher, k, up) - at(of_teacher, k, down)) / (up - down);
    };
    return {(4 * central(h / 2) - central(h)) / 3, h};
  }

 private:
  /// The length over which the loss changes shape in a logit of row r: the temperature
  /// without standardization, the row's std with it (a 2-class row whose logits differ by
  /// 1e-3 flips its Z-scores within 1e-3), never more than 1 or than the magnitude.
  double step_scale(const std::vector<double>& values, std::size_t r) const {
    const lskd::kd_options& o = kd_.options();
    double scale = std::min(1.0, o.temperature);
    if (o.standardize) {
      const reference_moments m = reference_row_moments(
          values.data() + r * static_cast<std::size_t>(shape_.cols), shape_.cols, 0);
      scale = std::min(scale, static_cast<double>(m.std));
    }
    return scale;
  }

  lskd::kd_loss<double> kd_;
  std::vector<double> student_;
  std::vector<double> teacher_;
  shape shape_;
  std::vector<double> row_losses_;
};

/// Up to `limit` entries of a rows x cols matrix: all of them for small shapes, else the
/// first and last class of every row plus a seeded sample.
std::vector<std::size_t> entries_to_check(shape s, std::size_t limit, random_logits& random) {
  const auto count = static_cast<std::size_t>(s.rows * s.cols);
  std::vector<std::size_t> entries;
  if (count <= limit) {
    for (std::size_t k = 0; k < count; ++k) entries.push_back(k);
    return entries;
  }
  for (index r = 0; r < s.rows; ++r) {
    entries.push_back(static_cast<std::size_t>(r * s.cols));
    entries.push_back(static_cast<std::size_t>(r * s.cols + s.cols - 1));
  }
  while (entries.size() < limit) {
    entries.push_back(static_cast<std::size_t>(random.integer(0, static_cast<index>(count) - 1)));
  }
  return entries;
}

void check_gradients_by_differences(const lskd::kd_options& options, shape s,
                                    std::uint64_t seed) {
  INFO(s.rows << " x " << s.cols << "; " << describe(options) << "; seed " << seed);
  random_logits random(seed);
  const std::vector<double> student = random.normal<double>(s.rows, s.cols, 0.3, 1.5);
  const std::vector<double> teacher = random.normal<double>(s.rows, s.cols, -0.2, 2.0);
  const auto count = static_cast<std::size_t>(s.rows * s.cols);

  const lskd::kd_loss<double> kd(options);
  std::vector<double> grad_student(count);
  std::vector<double> grad_teacher(count);
  std::vector<double> row_losses(static_cast<std::size_t>(s.rows));
  const double loss = kd.forward_backward({student.data(), s.rows, s.cols},
                                          {teacher.data(), s.rows, s.cols},
                                          {grad_student.data(), s.rows, s.cols},
                                          {grad_teacher.data(), s.rows, s.cols}, row_losses.data());

  loss_function f(options, student, teacher, s);
  const std::vector<std::size_t> entries = entries_to_check(s, 48, random);
  for (const bool of_teacher : {false, true}) {
    const std::vector<double>& gradient = of_teacher ? grad_teacher : grad_student;
    const wide largest = max_abs(gradient, 0, count);
    closeness comparison(of_teacher ? "grad_teacher vs finite differences"
                                    : "grad_student vs finite differences");
    for (std::size_t k : entries) {
      const auto d = f.derivative(of_teacher, k);
      comparison.add(static_cast<index>(k), d.value, gradient[k],
                     1e-8 * largest + 1e-14 * std::max(1.0, std::fabs(loss)) / d.step);
    }
    LSKD_CHECK_CLOSE(comparison);
  }
}

}  // namespace

TEST_CASE("kd_loss gradients match finite differences of its loss", "[gradient]") {
  const shape shapes[] = {{3, 7}, {4, 2}, {2, 33}, {5, 100}};
  std::uint64_t seed = 1000;
  for (const bool standardize : {true, false}) {
    for (const int ddof : {0, 1}) {
      for (const double temperature : {0.5, 2.0, 4.0}) {
        for (const double eps : {1e-7, 1e-2}) {
          // Without standardization ddof and eps play no part: one combination of them.
          if (!standardize && (ddof != 1 || eps != 1e-7)) continue;
          for (const lskd::reduction reduction :
               {lskd::reduction::none, lskd::reduction::sum, lskd::reduction::batchmean}) {
            for (const bool scale_by_t2 : {true, false}) {
              lskd::kd_options options;
              options.standardize = standardize;
              options.ddof = ddof;
              options.temperature = temperature;
              options.eps = eps;
              options.reduction = reduction;
              options.scale_by_t2 = scale_by_t2;
              for (const shape s : shapes) check_gradients_by_differences(options, s, ++seed);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("kd_loss gradients match finite differences for rows with a large offset",
          "[gradient]") {
  // Rows like 1000 + N(0, 1): the Z-score must keep the digits below the offset, in the loss
  // and in both gradients.
  lskd::kd_options options;
  const shape s{3, 40};
  random_logits random(77);
  std::vector<double> student = random.normal<double>(s.rows, s.cols, 1000.0, 1.0);
  std::vector<double> teacher = random.normal<double>(s.rows, s.cols, -500.0, 3.0);
  const auto count = static_cast<std::size_t>(s.rows * s.cols);
  std::vector<double> grad_student(count);
  std::vector<double> grad_teacher(count);
  const lskd::kd_loss<double> kd(options);
  const double loss = kd.forward_backward(
      {student.data(), s.rows, s.cols}, {teacher.data(), s.rows, s.cols},
      {grad_student.data(), s.rows, s.cols}, {grad_teacher.data(), s.rows, s.cols});

  loss_function f(options, student, teacher, s);
  for (const bool of_teacher : {false, true}) {
    const std::vector<double>& gradient = of_teacher ? grad_teacher : grad_student;
    const wide largest = max_abs(gradient, 0, count);
    closeness comparison(of_teacher ? "grad_teacher vs finite differences"
                                    : "grad_student vs finite differences");
    for (std::size_t k = 0; k < count; k += 3) {
      const auto d = f.derivative(of_teacher, k);
      comparison.add(static_cast<index>(k), d.value, gradient[k],
                     1e-8 * largest + 1e-14 * std::max(1.0, loss) / d.step);
    }
    LSKD_CHECK_CLOSE(comparison);
  }
}

}  // namespace lskd_test
