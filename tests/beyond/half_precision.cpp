// SPDX-License-Identifier: MIT
// KD and DKD on bfloat16 and half logits: the gradient from 16-bit input equals the float
// gradient of the same converted values (the bf16 V = 32000 case), and a 16-bit gradient is that
// float gradient rounded once.

#include "beyond_support.hpp"

#include <lskd/half_precision.hpp>

using namespace beyond_test;

namespace {

template <class Storage>
std::vector<Storage> rounded(const std::vector<float>& values) {
  std::vector<Storage> out(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) out[i] = static_cast<Storage>(values[i]);
  return out;
}

template <class Storage>
std::vector<float> widened(const std::vector<Storage>& values) {
  std::vector<float> out(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) out[i] = static_cast<float>(values[i]);
  return out;
}

/// A double reference of the standardized KD student gradient of one row (ddof 1, eps, tau).
std::vector<double> reference_kd_gradient(const std::vector<float>& x, const std::vector<float>& v,
                                          double tau, double eps) {
  const std::size_t n = x.size();
  const auto zscore = [&](const std::vector<float>& a, double& std) {
    double mean = 0;
    for (float value : a) mean += value;
    mean /= static_cast<double>(n);
    double squares = 0;
    for (float value : a) squares += (value - mean) * (value - mean);
    std = std::sqrt(squares / static_cast<double>(n - 1));
    std::vector<double> z(n);
    for (std::size_t i = 0; i < n; ++i) z[i] = (a[i] - mean) / (std + eps);
    return z;
  };
  const auto softmax = [&](const std::vector<double>& z) {
    double high = z[0];
    for (double value : z) high = std::max(high, value);
    std::vector<double> p(n);
    double total = 0;
    for (std::size_t i = 0; i < n; ++i) total += p[i] = std::exp((z[i] - high) / tau);
    for (double& value : p) value /= total;
    return p;
  };
  double std_s = 0, std_t = 0;
  const auto zs = zscore(x, std_s);
  const auto zt = zscore(v, std_t);
  const auto ps = softmax(zs);
  const auto pt = softmax(zt);
  std::vector<double> g(n);
  double dot = 0;
  for (std::size_t i = 0; i < n; ++i) {
    g[i] = tau * (ps[i] - pt[i]);  // (tau^2 / tau)(p_s - p_t)
    dot += g[i] * zs[i];
  }
  std::vector<double> dx(n);
  for (std::size_t i = 0; i < n; ++i) {
    dx[i] = g[i] / (std_s + eps) - zs[i] * dot / (static_cast<double>(n - 1) * std_s);
  }
  return dx;
}

}  // namespace

TEMPLATE_TEST_CASE("16-bit KD: the gradient equals the float gradient of the converted values",
                   "[half][kd][cases]", Eigen::bfloat16, Eigen::half) {
  using Storage = TestType;
  // The bf16 case of the bad-input table: V = 32000, standardized KD, tau 2.
  const lskd::index rows = 2, cols = 32000;
  const auto student = rounded<Storage>(random_rows<float>(51, rows * cols, 0.5, 3.0));
  const auto teacher = rounded<Storage>(random_rows<float>(52, rows * cols, -1.0, 2.0));
  const auto student_float = widened(student);
  const auto teacher_float = widened(teacher);

  const lskd::kd_loss<float> kd;
  std::vector<float> gs_float(student.size()), gt_float(student.size());
  double dtau_float = 0;
  const double loss_float = kd.forward_backward(
      {student_float.data(), rows, cols}, {teacher_float.data(), rows, cols},
      {gs_float.data(), rows, cols}, {gt_float.data(), rows, cols}, nullptr, &dtau_float);

  const lskd::half_precision_kd_loss<Storage> half_kd;
  std::vector<float> gs(student.size()), gt(student.size());
  double dtau = 0;
  const double loss = half_kd.forward_backward({student.data(), rows, cols},
                                               {teacher.data(), rows, cols},
                                               {gs.data(), rows, cols}, {gt.data(), rows, cols},
                                               nullptr, &dtau);
  // The same float values through the same float kernels: the same bits.
  CHECK(loss == loss_float);
  CHECK(dtau == dtau_float);
  CHECK(gs == gs_float);
  CHECK(gt == gt_float);
  CHECK(half_kd.forward({student.data(), rows, cols}, {teacher.data(), rows, cols}) ==
        Approx(loss_float).epsilon(1e-6));

  // And within float tolerance of a double reference on the converted values.
  for (lskd::index r = 0; r < rows; ++r) {
    const std::vector<float> x(student_float.begin() + r * cols,
                               student_float.begin() + (r + 1) * cols);
    const std::vector<float> v(teacher_float.begin() + r * cols,
                               teacher_float.begin() + (r + 1) * cols);
    const auto expected = reference_kd_gradient(x, v, 2.0, 1e-7);
    double largest = 0;
    for (double g : expected) largest = std::max(largest, std::fabs(g));
    closeness check("row " + std::to_string(r) + " gradient vs double reference");
    for (lskd::index c = 0; c < cols; ++c) {
      check.add(c, expected[static_cast<std::size_t>(c)] / rows,
                gs[static_cast<std::size_t>(r * cols + c)], 1e-5 * largest / rows);
    }
    check.check();
  }

  // A gradient in the input type is the float gradient rounded once.
  std::vector<Storage> gs16(student.size()), gt16(student.size());
  const double loss16 = half_kd.forward_backward({student.data(), rows, cols},
                                                 {teacher.data(), rows, cols},
                                                 {gs16.data(), rows, cols},
                                                 {gt16.data(), rows, cols});
  CHECK(loss16 == loss_float);
  lskd::index mismatches = 0;
  for (std::size_t i = 0; i < gs16.size(); ++i) {
    if (!(gs16[i] == static_cast<Storage>(gs_float[i]))) ++mismatches;
    if (!(gt16[i] == static_cast<Storage>(gt_float[i]))) ++mismatches;
  }
  CHECK(mismatches == 0);

  // In place: the 16-bit gradient replaces the logits.
  auto s_in_place = student;
  half_kd.forward_backward({s_in_place.data(), rows, cols}, {teacher.data(), rows, cols},
                           lskd::matrix_view<Storage>(s_in_place.data(), rows, cols));
  CHECK(s_in_place == gs16);
}

TEMPLATE_TEST_CASE("16-bit DKD equals float DKD on the converted values", "[half][dkd]",
                   Eigen::bfloat16, Eigen::half) {
  using Storage = TestType;
  const lskd::index rows = 3, cols = 1000;
  const auto student = rounded<Storage>(random_rows<float>(61, rows * cols, 0.0, 2.0));
  const auto teacher = rounded<Storage>(random_rows<float>(62, rows * cols, 0.0, 2.0));
  const auto targets = random_targets(63, rows, cols);
  const auto student_float = widened(student);
  const auto teacher_float = widened(teacher);
  lskd::dkd_options o;
  o.standardize = true;
  o.temperature = 2.0;
  std::vector<float> gs_float(student.size()), gs(student.size());
  const double expected = lskd::dkd_loss<float>(o).forward_backward(
      {student_float.data(), rows, cols}, {teacher_float.data(), rows, cols}, targets.data(),
      {gs_float.data(), rows, cols});
  const lskd::half_precision_dkd_loss<Storage> half_dkd(o);
  const double got = half_dkd.forward_backward({student.data(), rows, cols},
                                               {teacher.data(), rows, cols}, targets.data(),
                                               lskd::matrix_view<float>(gs.data(), rows, cols));
  CHECK(got == expected);
  CHECK(gs == gs_float);
  std::vector<Storage> gs16(student.size());
  half_dkd.forward_backward({student.data(), rows, cols}, {teacher.data(), rows, cols},
                            targets.data(), lskd::matrix_view<Storage>(gs16.data(), rows, cols));
  lskd::index mismatches = 0;
  for (std::size_t i = 0; i < gs16.size(); ++i) {
    if (!(gs16[i] == static_cast<Storage>(gs_float[i]))) ++mismatches;
  }
  CHECK(mismatches == 0);
  CHECK(half_dkd.forward({student.data(), rows, cols}, {teacher.data(), rows, cols},
                         targets.data()) == Approx(expected).epsilon(1e-6));

  // In place, one row at a time: the 16-bit gradient replaces the logits.
  auto s_in_place = student;
  half_dkd.forward_backward({s_in_place.data(), rows, cols}, {teacher.data(), rows, cols},
                            targets.data(),
                            lskd::matrix_view<Storage>(s_in_place.data(), rows, cols));
  CHECK(s_in_place == gs16);
}

TEST_CASE("16-bit logits: NaN is reported, nothing is written", "[half][errors]") {
  const lskd::index rows = 2, cols = 8;
  auto student = rounded<Eigen::bfloat16>(random_rows<float>(71, rows * cols));
  const auto teacher = rounded<Eigen::bfloat16>(random_rows<float>(72, rows * cols));
  student[11] = Eigen::bfloat16(std::numeric_limits<float>::quiet_NaN());
  std::vector<float> gs(student.size(), 3.0f);
  const lskd::half_precision_kd_loss<Eigen::bfloat16> kd;
  CHECK_THROWS_WITH(kd.forward_backward({student.data(), rows, cols}, {teacher.data(), rows, cols},
                                        lskd::matrix_view<float>(gs.data(), rows, cols)),
                    Catch::Contains("row 1") && Catch::Contains("NaN"));
  CHECK(gs[0] == 3.0f);
  // A float gradient may not alias the 16-bit logits.
  CHECK_THROWS_AS(kd.forward_backward({student.data(), rows, cols}, {teacher.data(), rows, cols},
                                      lskd::matrix_view<float>(
                                          reinterpret_cast<float*>(student.data()), 1, cols)),
                  std::invalid_argument);
}

TEST_CASE("16-bit KD: row weights, masked classes, class weights and threads as kd_loss",
          "[half][kd]") {
  using Storage = Eigen::bfloat16;
  const lskd::index rows = 4, cols = 37;
  auto student = rounded<Storage>(random_rows<float>(81, rows * cols, 0.0, 2.0));
  auto teacher = rounded<Storage>(random_rows<float>(82, rows * cols, 0.0, 2.0));
  const float inf = std::numeric_limits<float>::infinity();
  // Row 1: class 3 masked in both. Row 2: weight 0 and NaN (not read).
  student[static_cast<std::size_t>(cols + 3)] = Storage(-inf);
  teacher[static_cast<std::size_t>(cols + 3)] = Storage(-inf);
  student[static_cast<std::size_t>(2 * cols + 5)] = Storage(std::numeric_limits<float>::quiet_NaN());
  const std::vector<float> weights{1.0f, 2.0f, 0.0f, 0.5f};
  const auto student_float = widened(student);
  const auto teacher_float = widened(teacher);

  lskd::execution how;
  how.parallel_for = [](std::ptrdiff_t count,
                        const std::function<void(std::ptrdiff_t, std::ptrdiff_t)>& body) {
    for (std::ptrdiff_t r = count; r > 0; --r) body(r - 1, r);  // one row at a time, backwards
  };
  lskd::kd_options o;
  o.ddof = 0;
  std::vector<double> class_weights(static_cast<std::size_t>(cols), 1.0);
  class_weights[7] = 0.25;
  const auto float_loss = lskd::kd_loss<float>::with_class_weights(o, class_weights, how);
  const lskd::half_precision_kd_loss<Storage> half_loss(float_loss);

  std::vector<float> gs_float(student.size()), gs(student.size(), 9.0f);
  std::vector<double> rows_float(rows), rows_half(rows);
  double dtau_float = 0, dtau = 0;
  const double expected = float_loss.forward_backward(
      {student_float.data(), rows, cols}, {teacher_float.data(), rows, cols},
      lskd::row_weights<float>{weights.data()}, {gs_float.data(), rows, cols}, {},
      rows_float.data(), &dtau_float);
  const double got = half_loss.forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols},
      lskd::matrix_view<float>(gs.data(), rows, cols), {}, rows_half.data(), &dtau,
      lskd::row_weights<float>{weights.data()});
  CHECK(got == expected);
  CHECK(dtau == dtau_float);
  CHECK(rows_half == rows_float);
  CHECK(gs == gs_float);
  CHECK(gs[static_cast<std::size_t>(cols + 3)] == 0.0f);
  CHECK(gs[static_cast<std::size_t>(2 * cols + 5)] == 0.0f);

  // Without the row weights, the NaN row is an error and nothing is written.
  std::vector<Storage> gs16(student.size(), Storage(7.0f));
  CHECK_THROWS_WITH(half_loss.forward_backward({student.data(), rows, cols},
                                               {teacher.data(), rows, cols},
                                               lskd::matrix_view<Storage>(gs16.data(), rows, cols)),
                    Catch::Contains("row 2"));
  CHECK(static_cast<float>(gs16[0]) == 7.0f);
}
