// SPDX-License-Identifier: MIT
// Inputs that broke other distillation code (../shared/cases/README.md), each pinned to its
// right value computed here from the definition in long double, not with lskd:
//   case 7: each reduction on a 2 x 3 example;
//   case 8: KL(teacher || student), not the reverse;
//   case 10: rows of equal logits;
//   case 3: classic KD with a teacher probability that underflows.
// Case 9 (vocabularies of 151936 and 152064 classes) is in bad_input.cpp.

#include "golden_data.hpp"
#include "test_support.hpp"

namespace lskd_test {
namespace {

/// softmax(x / temperature) of a short row, in long double, from the definition.
std::vector<wide> probabilities(const std::vector<wide>& x, wide temperature) {
  wide total = 0;
  for (wide value : x) total += std::exp(value / temperature);
  std::vector<wide> p;
  for (wide value : x) p.push_back(std::exp(value / temperature) / total);
  return p;
}

/// KL(p || q) = sum p log(p / q).
wide kl(const std::vector<wide>& p, const std::vector<wide>& q) {
  wide total = 0;
  for (std::size_t c = 0; c < p.size(); ++c) total += p[c] * std::log(p[c] / q[c]);
  return total;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Case 7: sum, batchmean and none on a 2 x 3 example

TEMPLATE_TEST_CASE("case 7: each reduction is pinned on a 2 x 3 example", "[cases]",
                   float_simd, float_scalar, double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  // Exact in float and double.
  const std::vector<T> student = {T(1), T(2), T(0.5), T(-1), T(0.25), T(3)};
  const std::vector<T> teacher = {T(0.5), T(1.5), T(-0.5), T(2), T(-2), T(0)};

  // Classic KD at temperature 2 (so tau^2 = 4 shows): row r's loss is 4 KL(p_t || p_s).
  const wide tau = 2;
  wide row_loss[2];
  std::vector<wide> grad_sum;  // gradient of the sum: (f / tau)(p_s - p_t) = 2 (p_s - p_t)
  for (int r = 0; r < 2; ++r) {
    const std::vector<wide> s(student.begin() + 3 * r, student.begin() + 3 * r + 3);
    const std::vector<wide> t(teacher.begin() + 3 * r, teacher.begin() + 3 * r + 3);
    const std::vector<wide> ps = probabilities(s, tau);
    const std::vector<wide> pt = probabilities(t, tau);
    row_loss[r] = tau * tau * kl(pt, ps);
    for (int c = 0; c < 3; ++c) grad_sum.push_back(tau * (ps[c] - pt[c]));
  }
  const wide sum = row_loss[0] + row_loss[1];
  // The same formula evaluated once elsewhere (Python, float64), to 12 digits:
  CHECK(std::fabs(row_loss[0] - 0.019947861385L) < 1e-11L);
  CHECK(std::fabs(row_loss[1] - 3.799472862051L) < 1e-11L);

  const wide tolerance = 16 * roundoff<T>();  // relative; the values are O(1)
  const auto run = [&](lskd::reduction reduction) {
    lskd::kd_options options;
    options.standardize = false;
    options.temperature = 2.0;
    options.reduction = reduction;
    return run_kd<T, Arch>(options, student, teacher, 2, 3, kd_call::student_gradient);
  };

  SECTION("sum adds the rows") {
    const kd_outputs<T> out = run(lskd::reduction::sum);
    LSKD_CHECK_NEAR(sum, out.loss, tolerance * sum);
    closeness grad("grad_student");
    for (std::size_t j = 0; j < 6; ++j) {
      grad.add(static_cast<index>(j), grad_sum[j], out.grad_student[j], tolerance);
    }
    LSKD_CHECK_CLOSE(grad);
  }
  SECTION("batchmean divides by the rows, not by rows x classes") {
    const kd_outputs<T> out = run(lskd::reduction::batchmean);
    LSKD_CHECK_NEAR(sum / 2, out.loss, tolerance * sum);
    CHECK(std::fabs(out.loss - static_cast<double>(sum / 6)) > 0.1);
    closeness grad("grad_student");
    for (std::size_t j = 0; j < 6; ++j) {
      grad.add(static_cast<index>(j), grad_sum[j] / 2, out.grad_student[j], tolerance);
    }
    LSKD_CHECK_CLOSE(grad);
  }
  SECTION("none returns each row's loss and their sum") {
    const kd_outputs<T> out = run(lskd::reduction::none);
    LSKD_CHECK_NEAR(row_loss[0], out.row_losses[0], tolerance * sum);
    LSKD_CHECK_NEAR(row_loss[1], out.row_losses[1], tolerance * sum);
    LSKD_CHECK_NEAR(sum, out.loss, tolerance * sum);
    closeness grad("grad_student (of the sum)");
    for (std::size_t j = 0; j < 6; ++j) {
      grad.add(static_cast<index>(j), grad_sum[j], out.grad_student[j], tolerance);
    }
    LSKD_CHECK_CLOSE(grad);
  }
}

// ---------------------------------------------------------------------------------------------
// Case 8: KL(teacher || student), not KL(student || teacher)

TEMPLATE_TEST_CASE("case 8: the loss is KL(teacher || student), about 0.58381", "[cases]",
                   float_simd, float_scalar, double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  const wide pt[] = {0.7L, 0.2L, 0.1L};
  const wide ps[] = {0.2L, 0.5L, 0.3L};
  // Log-probabilities as logits: softmax gives the probabilities back.
  std::vector<T> teacher;
  std::vector<T> student;
  for (int c = 0; c < 3; ++c) {
    teacher.push_back(static_cast<T>(std::log(pt[c])));
    student.push_back(static_cast<T>(std::log(ps[c])));
  }
  lskd::kd_options options;
  options.standardize = false;
  options.temperature = 1.0;
  const double loss = lskd::kd_loss<T, Arch>(options).forward({student.data(), 1, 3},
                                                             {teacher.data(), 1, 3});

  const wide expected = 0.7L * std::log(3.5L) + 0.2L * std::log(0.4L) + 0.1L * std::log(1 / 3.0L);
  const wide reverse = 0.2L * std::log(0.2L / 0.7L) + 0.5L * std::log(0.5L / 0.2L) +
                       0.3L * std::log(0.3L / 0.1L);
  CHECK(std::fabs(expected - 0.58381L) < 1e-5L);
  // The logits are log p rounded to T, which moves the probabilities by about u relative and
  // the loss by a few u: 16 u.
  LSKD_CHECK_NEAR(expected, loss, 16 * roundoff<T>());
  INFO("KL(student || teacher) would be " << show(reverse));
  CHECK(std::fabs(loss - static_cast<double>(reverse)) > 0.04);
}

// ---------------------------------------------------------------------------------------------
// Case 10: rows of equal logits

TEMPLATE_TEST_CASE("case 10: constant rows give a finite loss and the reference gradient",
                   "[cases]", float_simd, float_scalar, double_simd, double_scalar) {
  // A constant row has std 0: its Z-score is 0 / (0 + eps) = 0 and its gradient
  // (g - mean g) / eps, about 1e7 times the softmax-level gradient. The golden cases hold a
  // student row of 3.0, a teacher row of -1.5, a row where both are float(0.1), and a random
  // row, with ddof 1 and 0; torch computed them with the same formula.
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  for (const char* name : {"const_rows_4x9_std", "const_rows_4x9_std_ddof0"}) {
    const golden_case& g = golden_case_named(name);
    INFO("golden case " << name);
    const kd_outputs<T> out = run_kd<T, Arch>(g.options, converted<T>(g.student),
                                              converted<T>(g.teacher), g.rows, g.cols);
    CHECK(std::isfinite(out.loss));
    bool finite = true;
    for (std::size_t j = 0; j < out.grad_student.size(); ++j) {
      finite = finite && std::isfinite(out.grad_student[j]) && std::isfinite(out.grad_teacher[j]);
    }
    CHECK(finite);

    // Against torch, at the golden tolerance (k = 1e-6 in float, 1e-13 in double, times the
    // magnitude of the terms, which for a constant row includes the 1 / eps).
    const reference_kd ref =
        reference_kd_loss(g.student.data(), g.teacher.data(), g.rows, g.cols, g.options);
    const wide k = tolerance_factor<T>();
    LSKD_CHECK_NEAR(g.loss[0], out.loss, k * ref.loss_scale);
    closeness gs("grad_student");
    closeness gt("grad_teacher");
    for (std::size_t j = 0; j < g.grad_student.size(); ++j) {
      gs.add(static_cast<index>(j), g.grad_student[j], out.grad_student[j],
             k * ref.grad_student_scale[j]);
      gt.add(static_cast<index>(j), g.grad_teacher[j], out.grad_teacher[j],
             k * ref.grad_teacher_scale[j]);
    }
    LSKD_CHECK_CLOSE(gs);
    LSKD_CHECK_CLOSE(gt);

    // The student's constant row 0 really is at the 1 / eps scale.
    CHECK(max_abs(out.grad_student, 0, static_cast<std::size_t>(g.cols)) > 1e4);
    // Row 2 is constant in both: uniform against uniform, loss 0.
    LSKD_CHECK_NEAR(0, out.row_losses[2], k * ref.row_loss_scale[2]);
  }
}

// ---------------------------------------------------------------------------------------------
// Case 3: a teacher probability of e^-100, a student log-probability of -700

TEMPLATE_TEST_CASE("case 3: classic KD with an underflowing teacher class is finite and exact",
                   "[cases]", float_simd, float_scalar, double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  const std::vector<T> student = {T(0), T(-700)};
  const std::vector<T> teacher = {T(50), T(-50)};
  lskd::kd_options options;
  options.standardize = false;
  options.temperature = 1.0;

  // Analytically, with a = e^-100 and b = e^-700 (log1p keeps what 1 + a would round away):
  //   p_t = [1, a] / (1 + a),  p_s = [1, b] / (1 + b),
  //   log p_t = [0, -100] - log1p(a),  log p_s = [0, -700] - log1p(b),
  //   KL = sum p_t (log p_t - log p_s) = 599 a + O(a^2),
  //   grad_student = p_s - p_t,  grad_teacher = p_t (log p_t - log p_s - KL).
  const wide a = std::exp(-100.0L);
  const wide b = std::exp(-700.0L);
  const wide pt[] = {1 / (1 + a), a / (1 + a)};
  const wide ps[] = {1 / (1 + b), b / (1 + b)};
  const wide log_pt[] = {-std::log1p(a), -100 - std::log1p(a)};
  const wide log_ps[] = {-std::log1p(b), -700 - std::log1p(b)};
  const wide loss = pt[0] * (log_pt[0] - log_ps[0]) + pt[1] * (log_pt[1] - log_ps[1]);
  // p_s,0 - p_t,0 = p_t,1 - p_s,1: the same number without rounding 1 / (1 + a) to 1.
  const wide grad_student[] = {pt[1] - ps[1], ps[1] - pt[1]};
  const wide grad_teacher[] = {pt[0] * (log_pt[0] - log_ps[0] - loss),
                               pt[1] * (log_pt[1] - log_ps[1] - loss)};
  CHECK(std::fabs(loss / a - 599) < 1e-6L);

  const kd_outputs<T> out = run_kd<T, Arch>(options, student, teacher, 1, 2);
  CHECK(std::isfinite(out.loss));
  CHECK(std::isfinite(out.grad_student[0]));
  CHECK(std::isfinite(out.grad_student[1]));
  CHECK(std::isfinite(out.grad_teacher[0]));
  CHECK(std::isfinite(out.grad_teacher[1]));

  // Tolerance: relative 1e-13 in double (1e-6 in float), plus, where a value is the
  // difference of two numbers of size 1 (p_s,0 - p_t,0, and the loss, whose -a term is
  // log p_t,0 = -log(1 + a)), the size a of what rounding 1 + a to 1 drops. In float every
  // value here is below the smallest normal float (a is subnormal, b is 0), so only an
  // absolute floor of that size applies.
  const wide k = tolerance_factor<T>();
  const wide floor = underflow_floor<T>();
  LSKD_CHECK_NEAR(loss, out.loss, k * std::fabs(loss) + 1.01L * a + floor);
  LSKD_CHECK_NEAR(grad_student[0], out.grad_student[0],
                  k * std::fabs(grad_student[0]) + 1.01L * a + floor);
  LSKD_CHECK_NEAR(grad_student[1], out.grad_student[1], k * std::fabs(grad_student[1]) + floor);
  LSKD_CHECK_NEAR(grad_teacher[0], out.grad_teacher[0], k * std::fabs(grad_teacher[0]) + floor);
  LSKD_CHECK_NEAR(grad_teacher[1], out.grad_teacher[1], k * std::fabs(grad_teacher[1]) + floor);
}

}  // namespace lskd_test
