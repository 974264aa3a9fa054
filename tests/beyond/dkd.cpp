// SPDX-License-Identifier: MIT
// lskd::dkd_loss: PyTorch golden values, finite differences in double, two classes, a dominant
// target, row weights, in-place gradients and the errors a caller can act on.

#include "beyond_support.hpp"

#include <lskd/dkd_loss.hpp>

#include <utility>

using namespace beyond_test;

namespace {

/// Loss, gradients and d/dtau of one golden case through lskd, in T.
template <class T, class Arch>
struct dkd_run {
  double loss = 0;
  std::vector<double> row_losses;
  std::vector<T> grad_student, grad_teacher;
  double dtau = 0;
};

template <class T, class Arch>
dkd_run<T, Arch> run_case(const golden_case& c) {
  const lskd::dkd_loss<T, Arch> dkd(c.dkd());
  const auto student = converted<T>(c.student);
  const auto teacher = converted<T>(c.teacher);
  dkd_run<T, Arch> out;
  out.row_losses.resize(static_cast<std::size_t>(c.rows));
  out.grad_student.resize(student.size());
  out.grad_teacher.resize(teacher.size());
  out.loss = dkd.forward_backward({student.data(), c.rows, c.cols},
                                  {teacher.data(), c.rows, c.cols}, c.target.data(),
                                  {out.grad_student.data(), c.rows, c.cols},
                                  {out.grad_teacher.data(), c.rows, c.cols},
                                  out.row_losses.data(), &out.dtau);
  return out;
}

/// The loss of a double DKD with the given options, for finite differences.
double dkd_value(const lskd::dkd_options& o, const std::vector<double>& student,
                 const std::vector<double>& teacher, const std::vector<std::int64_t>& targets,
                 lskd::index rows, lskd::index cols) {
  const lskd::dkd_loss<double, lskd::simd::scalar> dkd(o);
  std::vector<double> row_losses(static_cast<std::size_t>(rows));
  return dkd.forward({student.data(), rows, cols}, {teacher.data(), rows, cols}, targets.data(),
                     row_losses.data());
}

}  // namespace

TEMPLATE_TEST_CASE("dkd_loss matches the PyTorch golden values", "[dkd][golden]", float_simd,
                   float_scalar, double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  const bool is_float = std::is_same<T, float>::value;
  for (const golden_case& c : golden_cases()) {
    if (c.kind != "dkd") continue;
    SECTION(c.name) {
      const auto got = run_case<T, Arch>(c);

      // Loss: relative to its size (per row for reduction none).
      const double loss_tolerance = is_float ? 2e-5 : 1e-11;
      if (c.reduction == lskd::reduction::none) {
        closeness rows("row losses");
        for (lskd::index r = 0; r < c.rows; ++r) {
          const double expected = c.loss[static_cast<std::size_t>(r)];
          rows.add(r, expected, got.row_losses[static_cast<std::size_t>(r)],
                   loss_tolerance * std::max(1.0, std::fabs(expected)));
        }
        rows.check();
      } else {
        closeness loss("loss");
        loss.add(0, c.loss[0], got.loss, loss_tolerance * std::max(1.0, std::fabs(c.loss[0])));
        loss.check();
      }

      // Gradients: relative to the row's largest entry, or to the mean row loss when that is
      // larger by 1000 times: with 2 standardized classes the Z-scores are +-1/sqrt(2) whatever
      // the logits, the gradient is an eps-sized effect and only its absolute error means much.
      const double grad_tolerance = is_float ? 3e-5 : 1e-10;
      double mean_loss = 0;
      for (double l : c.loss) mean_loss += std::fabs(l);
      mean_loss /= c.reduction == lskd::reduction::none ? static_cast<double>(c.rows) : 1.0;
      const double floor = 1e-3 * mean_loss;
      closeness student("grad_student");
      closeness teacher("grad_teacher");
      for (lskd::index r = 0; r < c.rows; ++r) {
        const double student_scale = std::max(row_scale(c.grad_student, c.cols, r), floor);
        const double teacher_scale = std::max(row_scale(c.grad_teacher, c.cols, r), floor);
        for (lskd::index j = 0; j < c.cols; ++j) {
          const auto i = static_cast<std::size_t>(r * c.cols + j);
          student.add(static_cast<lskd::index>(i), c.grad_student[i], got.grad_student[i],
                      grad_tolerance * student_scale);
          teacher.add(static_cast<lskd::index>(i), c.grad_teacher[i], got.grad_teacher[i],
                      grad_tolerance * teacher_scale);
        }
      }
      student.check();
      teacher.check();

      closeness dtau("d loss / d tau");
      const double loss_size = std::fabs(c.loss[0]) + std::fabs(c.dtau[0]) * c.temperature;
      dtau.add(0, c.dtau[0], got.dtau, (is_float ? 5e-5 : 1e-10) * std::max(1.0, loss_size));
      dtau.check();
    }
  }
}

TEST_CASE("dkd_loss forward alone equals forward_backward's loss", "[dkd]") {
  const golden_case* chosen = nullptr;
  for (const auto& c : golden_cases()) {
    if (c.name == "dkd_odd_5x37_std") chosen = &c;
  }
  REQUIRE(chosen != nullptr);
  const auto& c = *chosen;
  const lskd::dkd_loss<double> dkd(c.dkd());
  const double forward = dkd.forward({c.student.data(), c.rows, c.cols},
                                     {c.teacher.data(), c.rows, c.cols}, c.target.data());
  CHECK(forward == Approx(c.loss[0]).epsilon(1e-12));
}

TEMPLATE_TEST_CASE("dkd_loss gradients match finite differences in double", "[dkd][fd]",
                   double_simd, double_scalar) {
  using Arch = typename TestType::arch;
  const lskd::index rows = 3;
  const lskd::index cols = GENERATE(as<lskd::index>{}, 2, 3, 11, 33);
  const bool standardize = GENERATE(false, true);
  const double temperature = GENERATE(0.05, 1.0, 4.0);
  lskd::dkd_options o;
  o.standardize = standardize;
  o.temperature = temperature;
  o.alpha = 1.5;
  o.beta = 3.0;
  o.reduction = lskd::reduction::sum;
  // Small logits at tau 0.05 keep u = x / tau moderate, so differences stay well conditioned.
  const double spread = temperature < 0.1 ? 0.05 : 1.0;
  auto student = random_rows<double>(11u + static_cast<unsigned>(cols), rows * cols, 0.3, spread);
  auto teacher = random_rows<double>(97u + static_cast<unsigned>(cols), rows * cols, -0.2, spread);
  const auto targets = random_targets(5u, rows, cols);
  INFO("cols " << cols << ", standardize " << standardize << ", tau " << temperature);

  const lskd::dkd_loss<double, Arch> dkd(o);
  std::vector<double> grad_student(student.size()), grad_teacher(teacher.size());
  double dtau = 0;
  const double loss = dkd.forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols}, targets.data(),
      {grad_student.data(), rows, cols}, {grad_teacher.data(), rows, cols}, nullptr, &dtau);

  const auto difference = [&](std::vector<double>& x, std::size_t i) {
    const double saved = x[i];
    const double h = 1e-6 * std::max(spread, std::fabs(saved));
    x[i] = saved + h;
    const double up = dkd_value(o, student, teacher, targets, rows, cols);
    x[i] = saved - h;
    const double down = dkd_value(o, student, teacher, targets, rows, cols);
    x[i] = saved;
    return (up - down) / (2 * h);
  };
  // Differences carry about 1e-16 * loss / h of noise; with 2 standardized classes the true
  // gradient is an eps-sized effect below that, so the scale has a floor set by the loss.
  double scale = 1e-4 * std::max(1.0, std::fabs(loss));
  for (double g : grad_student) scale = std::max(scale, std::fabs(g));
  for (double g : grad_teacher) scale = std::max(scale, std::fabs(g));
  closeness student_check("grad_student vs finite differences");
  closeness teacher_check("grad_teacher vs finite differences");
  for (std::size_t i = 0; i < student.size(); ++i) {
    student_check.add(static_cast<lskd::index>(i), difference(student, i), grad_student[i],
                      2e-6 * scale);
    teacher_check.add(static_cast<lskd::index>(i), difference(teacher, i), grad_teacher[i],
                      2e-6 * scale);
  }
  student_check.check();
  teacher_check.check();

  const double h = 1e-6 * temperature;
  lskd::dkd_options up = o, down = o;
  up.temperature = temperature + h;
  down.temperature = temperature - h;
  const double numeric = (dkd_value(up, student, teacher, targets, rows, cols) -
                          dkd_value(down, student, teacher, targets, rows, cols)) /
                         (2 * h);
  closeness tau_check("d loss / d tau vs finite differences");
  tau_check.add(0, numeric, dtau, 1e-6 * std::max(1.0, std::fabs(numeric)));
  tau_check.check();
}

TEMPLATE_TEST_CASE("dkd_loss with 2 classes has NCKD exactly 0", "[dkd][cases]", float_simd,
                   double_simd) {
  using T = typename TestType::value_type;
  const bool standardize = GENERATE(false, true);
  const std::vector<T> student{T(0.5), T(-1.25), T(3), T(3), T(-2), T(7)};
  const std::vector<T> teacher{T(2), T(1), T(-1), T(4), T(0.5), T(0.5)};
  const std::vector<std::int64_t> targets{0, 1, 1};
  lskd::dkd_options with_beta;
  with_beta.standardize = standardize;
  lskd::dkd_options without_beta = with_beta;
  without_beta.beta = 0.0;
  std::vector<T> grad_a(6), grad_b(6);
  const double a = lskd::dkd_loss<T>(with_beta).forward_backward(
      {student.data(), 3, 2}, {teacher.data(), 3, 2}, targets.data(), {grad_a.data(), 3, 2});
  const double b = lskd::dkd_loss<T>(without_beta).forward_backward(
      {student.data(), 3, 2}, {teacher.data(), 3, 2}, targets.data(), {grad_b.data(), 3, 2});
  CHECK(std::isfinite(a));
  CHECK(a == b);
  for (std::size_t i = 0; i < grad_a.size(); ++i) {
    INFO("element " << i);
    CHECK(std::isfinite(grad_a[i]));
    CHECK(grad_a[i] == Approx(grad_b[i]).margin(1e-5));
  }
}

TEMPLATE_TEST_CASE("dkd_loss stays finite when the target dominates", "[dkd][cases]",
                   float_simd, float_scalar, double_simd) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  // 1 - p_k underflows far below the smallest normal number: the rest are 1e4 / tau lower.
  const lskd::index cols = 19;
  std::vector<T> student(cols, T(0));
  std::vector<T> teacher(cols, T(-1));
  student[4] = T(10000);
  teacher[4] = T(-5000);  // the teacher puts almost nothing on the target
  for (lskd::index c = 0; c < cols; ++c) student[static_cast<std::size_t>(c)] += T(0.01) * T(c);
  const std::int64_t target = 4;
  lskd::dkd_options o;
  o.temperature = 1.0;
  std::vector<T> grad_student(cols), grad_teacher(cols);
  double dtau = 0;
  const double loss = lskd::dkd_loss<T, Arch>(o).forward_backward(
      {student.data(), 1, cols}, {teacher.data(), 1, cols}, &target,
      {grad_student.data(), 1, cols}, {grad_teacher.data(), 1, cols}, nullptr, &dtau);
  CHECK(std::isfinite(loss));
  CHECK(std::isfinite(dtau));
  // TCKD ~ log((1 - p_t,k) / (1 - p_s,k)) ~ 1e4 - log(18) - the small spread of the rest.
  CHECK(loss > 9990.0);
  for (lskd::index c = 0; c < cols; ++c) {
    INFO("class " << c);
    CHECK(std::isfinite(grad_student[static_cast<std::size_t>(c)]));
    CHECK(std::isfinite(grad_teacher[static_cast<std::size_t>(c)]));
  }
  // d/dx_k = alpha * (p_s,k - p_t,k) = 1 with tau 1.
  CHECK(grad_student[4] == Approx(1.0).epsilon(1e-5));
}

TEMPLATE_TEST_CASE("dkd_loss in place equals out of place", "[dkd]", float_simd, double_simd) {
  using T = typename TestType::value_type;
  const lskd::index rows = 4, cols = 21;
  const auto student = random_rows<T>(3, rows * cols);
  const auto teacher = random_rows<T>(4, rows * cols);
  const auto targets = random_targets(6, rows, cols);
  lskd::dkd_options o;
  o.standardize = true;
  const lskd::dkd_loss<T> dkd(o);
  std::vector<T> gs(student.size()), gt(teacher.size());
  const double loss = dkd.forward_backward({student.data(), rows, cols},
                                           {teacher.data(), rows, cols}, targets.data(),
                                           {gs.data(), rows, cols}, {gt.data(), rows, cols});
  auto s = student, t = teacher;
  const double again = dkd.forward_backward({s.data(), rows, cols}, {t.data(), rows, cols},
                                            targets.data(), {s.data(), rows, cols},
                                            {t.data(), rows, cols});
  CHECK(loss == again);
  CHECK(s == gs);
  CHECK(t == gt);
}

TEST_CASE("dkd_loss row weights: a weight-0 row is not read and others scale", "[dkd]") {
  const lskd::index rows = 3, cols = 7;
  auto student = random_rows<double>(8, rows * cols);
  auto teacher = random_rows<double>(9, rows * cols);
  std::vector<std::int64_t> targets{2, -7, 6};  // row 1 is masked: its target is not checked
  student[cols + 3] = std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> weights{2.0, 0.0, 0.5};
  lskd::dkd_options o;
  o.reduction = lskd::reduction::sum;
  const lskd::dkd_loss<double> dkd(o);
  std::vector<double> gs(student.size(), 99.0);
  std::vector<double> row_losses(rows);
  const double weighted = dkd.forward_backward({student.data(), rows, cols},
                                               {teacher.data(), rows, cols}, targets.data(),
                                               lskd::row_weights<double>{weights.data()},
                                               {gs.data(), rows, cols}, {},
                                               row_losses.data());
  CHECK(row_losses[1] == 0.0);
  for (lskd::index c = 0; c < cols; ++c) CHECK(gs[static_cast<std::size_t>(cols + c)] == 0.0);

  // Row 0 alone, weight 1.
  const double row0 = dkd.forward({student.data(), 1, cols}, {teacher.data(), 1, cols},
                                  targets.data());
  CHECK(row_losses[0] == Approx(2.0 * row0).epsilon(1e-14));
  CHECK(weighted == Approx(row_losses[0] + row_losses[2]).epsilon(1e-14));
}

TEST_CASE("dkd_loss refuses what it cannot compute, naming the argument", "[dkd][errors]") {
  const lskd::index rows = 2, cols = 5;
  auto student = random_rows<float>(1, rows * cols);
  auto teacher = random_rows<float>(2, rows * cols);
  std::vector<std::int64_t> targets{1, 5};
  const lskd::dkd_loss<float> dkd;
  const lskd::matrix_view<const float> s(student.data(), rows, cols);
  const lskd::matrix_view<const float> t(teacher.data(), rows, cols);

  CHECK_THROWS_WITH(dkd.forward(s, t, targets.data()),
                    Catch::Contains("row 1") && Catch::Contains("[0, 5)"));
  targets[1] = -1;
  CHECK_THROWS_AS(dkd.forward(s, t, targets.data()), std::invalid_argument);
  targets[1] = 4;
  CHECK_THROWS_WITH(dkd.forward(s, t, nullptr), Catch::Contains("'targets' is null"));
  CHECK_THROWS_WITH(dkd.forward({student.data(), rows * cols, 1}, {teacher.data(), rows * cols, 1},
                                targets.data()),
                    Catch::Contains("at least 2 classes"));
  lskd::dkd_options bad;
  bad.beta = -1.0;
  CHECK_THROWS_WITH(lskd::dkd_loss<float>(bad), Catch::Contains("'beta'"));
  bad = {};
  bad.temperature = 0.0;
  CHECK_THROWS_WITH(lskd::dkd_loss<float>(bad), Catch::Contains("'temperature'"));

  teacher[7] = std::numeric_limits<float>::infinity();
  std::vector<float> gs(student.size(), 5.0f);
  CHECK_THROWS_WITH(dkd.forward_backward(s, t, targets.data(), {gs.data(), rows, cols}),
                    Catch::Contains("teacher logits row 1") && Catch::Contains("class 2"));
  CHECK(gs[0] == 5.0f);  // nothing written
  CHECK_THROWS_WITH(dkd.forward_backward(s, t, targets.data(), {}),
                    Catch::Contains("all empty"));

  // Zero rows: loss 0, d/dtau 0.
  double dtau = 1.0;
  CHECK(dkd.forward_backward({student.data(), 0, cols}, {teacher.data(), 0, cols}, nullptr, {},
                             {}, nullptr, &dtau) == 0.0);
  CHECK(dtau == 0.0);
}

// Row weights or targets inside a gradient, and the temperature gradient inside any buffer,
// were accepted (kd_loss refused them) and silently changed the caller's buffers or the
// results: now refused before anything is written.
TEST_CASE("dkd_loss: row weights, targets and the temperature gradient may not share memory "
          "with the buffers",
          "[dkd][errors]") {
  overlap_case c;
  std::vector<std::int64_t> targets{1, 3};
  const auto untouched = [&] {
    return c.untouched() && targets == std::vector<std::int64_t>{1, 3};
  };
  const lskd::dkd_loss<double> dkd;

  // Row weights (read while gradients are written) inside either gradient.
  CHECK_THROWS_WITH(dkd.forward_backward(c.s(), c.t(), targets.data(),
                                         lskd::row_weights<double>{c.grad.data() + 4}, c.gs()),
                    Catch::Contains("'grad_student' overlaps 'row_weights'"));
  CHECK_THROWS_WITH(dkd.forward_backward(c.s(), c.t(), targets.data(),
                                         lskd::row_weights<double>{c.grad.data() + c.size},
                                         c.gs(), c.gt()),
                    Catch::Contains("'grad_teacher' overlaps 'row_weights'"));
  CHECK(untouched());

  // The row losses over the row weights or the targets (written after both are read, but
  // still the caller's inputs).
  CHECK_THROWS_WITH(dkd.forward_backward(c.s(), c.t(), targets.data(),
                                         lskd::row_weights<double>{c.row_losses.data()}, c.gs(),
                                         {}, c.row_losses.data()),
                    Catch::Contains("'row_losses' overlaps 'row_weights'"));
  CHECK_THROWS_WITH(dkd.forward(c.s(), c.t(), targets.data(), c.weighted(),
                                reinterpret_cast<double*>(targets.data())),
                    Catch::Contains("'row_losses' overlaps 'targets'"));
  CHECK(untouched());

  // Targets inside the student's gradient (in its last row, whose target is read before the
  // row is written: nothing but the caller's targets would change).
  {
    std::vector<std::int64_t> shared(static_cast<std::size_t>(c.size), 0);
    const lskd::matrix_view<double> over(reinterpret_cast<double*>(shared.data()), c.rows,
                                         c.cols);
    CHECK_THROWS_WITH(dkd.forward_backward(c.s(), c.t(), shared.data() + c.cols, over),
                      Catch::Contains("'grad_student' overlaps 'targets'"));
    CHECK(shared == std::vector<std::int64_t>(static_cast<std::size_t>(c.size), 0));
  }

  // The temperature gradient inside any input or output.
  const std::pair<const char*, double*> places[] = {
      {"'student'", c.student.data() + 3},
      {"'teacher'", c.teacher.data() + 5},
      {"'grad_student'", c.grad.data() + 2},
      {"'grad_teacher'", c.grad.data() + c.size + 1},
      {"'row_losses'", c.row_losses.data() + 1},
      {"'row_weights'", c.weights.data()},
      {"'targets'", reinterpret_cast<double*>(targets.data() + 1)}};
  for (const auto& place : places) {
    INFO("grad_temperature inside " << place.first);
    CHECK_THROWS_WITH(dkd.forward_backward(c.s(), c.t(), targets.data(), c.weighted(), c.gs(),
                                           c.gt(), c.row_losses.data(), place.second),
                      Catch::Contains(std::string("'grad_temperature' overlaps ") + place.first));
    CHECK(untouched());
  }
  double dtau = 0.0;
  CHECK_NOTHROW(dkd.forward_backward(c.s(), c.t(), targets.data(), c.weighted(), c.gs(), c.gt(),
                                     c.row_losses.data(), &dtau));
}

TEMPLATE_TEST_CASE("dkd_loss: a class masked in both equals the row without it",
                   "[dkd][masked]", float_simd, double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  const bool is_float = std::is_same<T, float>::value;
  const bool standardize = GENERATE(false, true);
  const lskd::index cols = 23, masked = 9;
  const T inf = std::numeric_limits<T>::infinity();
  auto student = random_rows<T>(111, cols, 0.0, 2.0);
  auto teacher = random_rows<T>(112, cols, 0.0, 2.0);
  student[masked] = -inf;
  teacher[masked] = -inf;
  lskd::dkd_options o;
  o.standardize = standardize;
  o.temperature = 2.0;
  for (std::int64_t target : {std::int64_t{0}, std::int64_t{12}, std::int64_t{22}}) {
    std::vector<T> gs(cols), gt(cols);
    double dtau = 0;
    const double loss = lskd::dkd_loss<T, Arch>(o).forward_backward(
        {student.data(), 1, cols}, {teacher.data(), 1, cols}, &target, {gs.data(), 1, cols},
        {gt.data(), 1, cols}, nullptr, &dtau);
    auto s22 = student, t22 = teacher;
    s22.erase(s22.begin() + masked);
    t22.erase(t22.begin() + masked);
    const std::int64_t target22 = target > masked ? target - 1 : target;
    std::vector<T> gs22(cols - 1), gt22(cols - 1);
    double dtau22 = 0;
    const double loss22 = lskd::dkd_loss<T, Arch>(o).forward_backward(
        {s22.data(), 1, cols - 1}, {t22.data(), 1, cols - 1}, &target22,
        {gs22.data(), 1, cols - 1}, {gt22.data(), 1, cols - 1}, nullptr, &dtau22);
    INFO("target " << target << ", standardize " << standardize);
    const double tolerance = is_float ? 1e-5 : 1e-12;
    CHECK(loss == Approx(loss22).epsilon(tolerance));
    CHECK(dtau == Approx(dtau22).epsilon(tolerance).margin(tolerance));
    CHECK(gs[masked] == T(0));
    CHECK(gt[masked] == T(0));
    for (lskd::index j = 0; j < cols - 1; ++j) {
      const auto k = static_cast<std::size_t>(j < masked ? j : j + 1);
      CHECK(gs[k] == Approx(gs22[static_cast<std::size_t>(j)]).margin(tolerance));
      CHECK(gt[k] == Approx(gt22[static_cast<std::size_t>(j)]).margin(tolerance));
    }
  }

  // A masked target, or a row with no usable class but the target, is refused.
  const lskd::dkd_loss<T, Arch> dkd(o);
  const std::int64_t masked_target = masked;
  CHECK_THROWS_WITH(dkd.forward({student.data(), 1, cols},
                                                       {teacher.data(), 1, cols}, &masked_target),
                    Catch::Contains("target class 9 is masked"));
  std::vector<T> lonely_s(4, -inf), lonely_t(4, -inf);
  lonely_s[1] = T(1);
  lonely_t[1] = T(2);
  const std::int64_t one = 1;
  CHECK_THROWS_WITH(dkd.forward({lonely_s.data(), 1, 4},
                                                       {lonely_t.data(), 1, 4}, &one),
                    Catch::Contains("1 usable classes"));
  // -inf in the student only is not a mask.
  teacher[masked] = T(0);
  CHECK_THROWS_WITH(dkd.forward({student.data(), 1, cols},
                                                       {teacher.data(), 1, cols}, &one),
                    Catch::Contains("student logits row 0") && Catch::Contains("class 9"));
}

namespace {

// With eps = 0, rows whose values differ by subnormal amounts have gradients beyond the largest
// float: refused with the row named, as kd_loss does, and nothing written (a new user's trial
// found NaN gradients here).
TEST_CASE("dkd and multi-temperature KD refuse gradients that would overflow (eps 0)",
          "[dkd][multi_temperature]") {
  const lskd::index cols = 50;
  std::vector<float> student(cols), teacher(cols);
  for (lskd::index c = 0; c < cols; ++c) {
    student[static_cast<std::size_t>(c)] = 1e-40f * static_cast<float>((c * 7) % 11 - 5);
    teacher[static_cast<std::size_t>(c)] = 1e-40f * static_cast<float>((c * 5) % 13 - 6);
  }
  std::vector<float> grad(cols, 7.0f);
  const std::vector<std::int64_t> targets = {3};
  lskd::dkd_options d;
  d.standardize = true;
  d.eps = 0.0;
  CHECK_THROWS_WITH(lskd::dkd_loss<float>(d).forward_backward(
                        {student.data(), 1, cols}, {teacher.data(), 1, cols}, targets.data(),
                        {grad.data(), 1, cols}),
                    Catch::Contains("lskd::dkd_loss: student logits row 0: its gradient could"));
  lskd::multi_temperature_kd_options m;
  m.eps = 0.0;
  CHECK_THROWS_WITH(lskd::multi_temperature_kd_loss<float>(m).forward_backward(
                        {student.data(), 1, cols}, {teacher.data(), 1, cols},
                        {grad.data(), 1, cols}),
                    Catch::Contains("student logits row 0: its gradient could"));
  CHECK(grad == std::vector<float>(static_cast<std::size_t>(cols), 7.0f));
  // In double the same rows are fine.
  std::vector<double> s64(student.begin(), student.end()), t64(teacher.begin(), teacher.end());
  std::vector<double> g64(cols);
  lskd::dkd_options d64 = d;
  CHECK_NOTHROW(lskd::dkd_loss<double>(d64).forward_backward(
      {s64.data(), 1, cols}, {t64.data(), 1, cols}, targets.data(), {g64.data(), 1, cols}));
  for (double g : g64) CHECK(std::isfinite(g));
}

}  // namespace
