// SPDX-License-Identifier: MIT
// lskd::multi_temperature_kd_loss and kd_loss's temperature gradient: PyTorch golden values,
// finite differences in double, agreement with kd_loss, and errors.

#include "beyond_support.hpp"

#include <lskd/kd_loss.hpp>
#include <lskd/multi_temperature_kd_loss.hpp>

#include <cstring>
#include <utility>

using namespace beyond_test;

namespace {

/// Compares loss, gradients and temperature gradients of one golden case.
template <class T>
void compare_with_golden(const golden_case& c, double loss, const std::vector<double>& row_losses,
                         const std::vector<T>& grad_student, const std::vector<T>& grad_teacher,
                         const std::vector<double>& dtau) {
  const bool is_float = std::is_same<T, float>::value;
  const double loss_tolerance = is_float ? 2e-5 : 1e-11;
  closeness losses("loss");
  if (c.reduction == lskd::reduction::none) {
    for (lskd::index r = 0; r < c.rows; ++r) {
      const double expected = c.loss[static_cast<std::size_t>(r)];
      losses.add(r, expected, row_losses[static_cast<std::size_t>(r)],
                 loss_tolerance * std::max(1.0, std::fabs(expected)));
    }
  } else {
    losses.add(0, c.loss[0], loss, loss_tolerance * std::max(1.0, std::fabs(c.loss[0])));
  }
  losses.check();

  // Gradients: relative to the row's largest entry of either gradient. At tau 0.05 the teacher
  // softmax is almost one-hot and its gradient row tiny, but its absolute error comes from
  // terms of the student's size.
  const double grad_tolerance = is_float ? 3e-5 : 1e-10;
  closeness student("grad_student");
  closeness teacher("grad_teacher");
  for (lskd::index r = 0; r < c.rows; ++r) {
    const double row = std::max(row_scale(c.grad_student, c.cols, r),
                                row_scale(c.grad_teacher, c.cols, r));
    const double student_scale = row;
    const double teacher_scale = row;
    for (lskd::index j = 0; j < c.cols; ++j) {
      const auto i = static_cast<std::size_t>(r * c.cols + j);
      student.add(static_cast<lskd::index>(i), c.grad_student[i], grad_student[i],
                  grad_tolerance * student_scale);
      teacher.add(static_cast<lskd::index>(i), c.grad_teacher[i], grad_teacher[i],
                  grad_tolerance * teacher_scale);
    }
  }
  student.check();
  teacher.check();

  double loss_size = 0;
  for (double l : c.loss) loss_size += std::fabs(l);
  closeness taus("d loss / d tau_i");
  for (std::size_t k = 0; k < c.dtau.size(); ++k) {
    const double size = loss_size / c.temperatures[k] + std::fabs(c.dtau[k]);
    taus.add(static_cast<lskd::index>(k), c.dtau[k], dtau[k],
             (is_float ? 5e-5 : 1e-10) * std::max(1.0, size));
  }
  taus.check();
}

double multi_value(const lskd::multi_temperature_kd_options& o, const std::vector<double>& student,
                   const std::vector<double>& teacher, lskd::index rows, lskd::index cols) {
  std::vector<double> row_losses(static_cast<std::size_t>(rows));
  return lskd::multi_temperature_kd_loss<double, lskd::simd::scalar>(o).forward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols}, row_losses.data());
}

}  // namespace

TEMPLATE_TEST_CASE("multi_temperature_kd_loss matches the PyTorch golden values",
                   "[multi_temperature][golden]", float_simd, float_scalar, double_simd,
                   double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  for (const golden_case& c : golden_cases()) {
    if (c.kind != "mtkd") continue;
    SECTION(c.name) {
      const auto student = converted<T>(c.student);
      const auto teacher = converted<T>(c.teacher);
      std::vector<T> gs(student.size()), gt(teacher.size());
      std::vector<double> row_losses(static_cast<std::size_t>(c.rows));
      std::vector<double> dtau(c.temperatures.size());
      const lskd::multi_temperature_kd_loss<T, Arch> loss(c.multi_temperature());
      const double value = loss.forward_backward(
          {student.data(), c.rows, c.cols}, {teacher.data(), c.rows, c.cols},
          {gs.data(), c.rows, c.cols}, {gt.data(), c.rows, c.cols}, row_losses.data(),
          dtau.data());
      compare_with_golden(c, value, row_losses, gs, gt, dtau);

      // forward alone gives the same loss.
      std::vector<double> forward_rows(static_cast<std::size_t>(c.rows));
      const double forward = loss.forward({student.data(), c.rows, c.cols},
                                          {teacher.data(), c.rows, c.cols}, forward_rows.data());
      CHECK(forward == Approx(value).epsilon(std::is_same<T, float>::value ? 1e-6 : 1e-12));
    }
  }
}

TEMPLATE_TEST_CASE("kd_loss's temperature gradient matches the PyTorch golden values",
                   "[kd][temperature][golden]", float_simd, float_scalar, double_simd,
                   double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  for (const golden_case& c : golden_cases()) {
    if (c.kind != "mtkd" || c.temperatures.size() != 1) continue;
    SECTION(c.name) {
      const auto student = converted<T>(c.student);
      const auto teacher = converted<T>(c.teacher);
      std::vector<T> gs(student.size()), gt(teacher.size());
      std::vector<double> row_losses(static_cast<std::size_t>(c.rows));
      std::vector<double> dtau(1);
      const lskd::kd_loss<T, Arch> kd(c.kd());
      const double value = kd.forward_backward(
          {student.data(), c.rows, c.cols}, {teacher.data(), c.rows, c.cols},
          {gs.data(), c.rows, c.cols}, {gt.data(), c.rows, c.cols}, row_losses.data(),
          dtau.data());
      compare_with_golden(c, value, row_losses, gs, gt, dtau);

      // The temperature gradient alone, and with the student's gradient alone, is the same.
      double alone = 0, with_student = 0;
      kd.forward_backward({student.data(), c.rows, c.cols}, {teacher.data(), c.rows, c.cols}, {},
                          {}, row_losses.data(), &alone);
      std::vector<T> gs2(student.size());
      kd.forward_backward({student.data(), c.rows, c.cols}, {teacher.data(), c.rows, c.cols},
                          {gs2.data(), c.rows, c.cols}, {}, row_losses.data(), &with_student);
      CHECK(alone == dtau[0]);
      CHECK(with_student == dtau[0]);
      CHECK(gs2 == gs);
    }
  }
}

TEMPLATE_TEST_CASE("multi_temperature_kd_loss gradients match finite differences in double",
                   "[multi_temperature][fd]", double_simd, double_scalar) {
  using Arch = typename TestType::arch;
  const lskd::index rows = 2;
  const lskd::index cols = GENERATE(as<lskd::index>{}, 2, 9, 35);
  const bool standardize = GENERATE(false, true);
  lskd::multi_temperature_kd_options o;
  o.standardize = standardize;
  o.temperatures = {0.05, 1.0, 3.5};
  o.reduction = lskd::reduction::sum;
  // Small logits keep u = x / 0.05 moderate without standardization.
  const double spread = standardize ? 1.0 : 0.05;
  auto student = random_rows<double>(21u + static_cast<unsigned>(cols), rows * cols, 0.1, spread);
  auto teacher = random_rows<double>(22u + static_cast<unsigned>(cols), rows * cols, 0.0, spread);
  INFO("cols " << cols << ", standardize " << standardize);

  std::vector<double> gs(student.size()), gt(teacher.size()), dtau(3);
  const double loss = lskd::multi_temperature_kd_loss<double, Arch>(o).forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols}, {gs.data(), rows, cols},
      {gt.data(), rows, cols}, nullptr, dtau.data());
  const auto difference = [&](std::vector<double>& x, std::size_t i) {
    const double saved = x[i];
    // The loss has an absolute roundoff of about 1e-16 * tau^2 * log(classes) (a KL from log
    // sums), so steps of 1e-5 keep that noise below the tolerance.
    const double h = 1e-5 * std::max(spread, std::fabs(saved));
    x[i] = saved + h;
    const double up = multi_value(o, student, teacher, rows, cols);
    x[i] = saved - h;
    const double down = multi_value(o, student, teacher, rows, cols);
    x[i] = saved;
    return (up - down) / (2 * h);
  };
  // Differences carry about 1e-16 * loss / h of noise; with 2 standardized classes the true
  // gradient is an eps-sized effect below that, so the scale has a floor set by the loss.
  double scale = 1e-3 * std::max(1.0, std::fabs(loss));
  for (double g : gs) scale = std::max(scale, std::fabs(g));
  for (double g : gt) scale = std::max(scale, std::fabs(g));
  closeness student_check("grad_student vs finite differences");
  closeness teacher_check("grad_teacher vs finite differences");
  for (std::size_t i = 0; i < student.size(); ++i) {
    student_check.add(static_cast<lskd::index>(i), difference(student, i), gs[i], 2e-6 * scale);
    teacher_check.add(static_cast<lskd::index>(i), difference(teacher, i), gt[i], 2e-6 * scale);
  }
  student_check.check();
  teacher_check.check();

  closeness tau_check("d loss / d tau_i vs finite differences");
  for (std::size_t k = 0; k < o.temperatures.size(); ++k) {
    const double tau = o.temperatures[k];
    const double h = 1e-6 * tau;
    auto up = o, down = o;
    up.temperatures[k] = tau + h;
    down.temperatures[k] = tau - h;
    const double numeric = (multi_value(up, student, teacher, rows, cols) -
                            multi_value(down, student, teacher, rows, cols)) /
                           (2 * h);
    tau_check.add(static_cast<lskd::index>(k), numeric, dtau[k],
                  1e-6 * std::max(1.0, std::fabs(loss) / tau));
  }
  tau_check.check();
}

TEMPLATE_TEST_CASE("kd_loss's temperature gradient matches finite differences down to tau 0.05",
                   "[kd][temperature][fd]", double_simd, double_scalar) {
  using Arch = typename TestType::arch;
  const lskd::index rows = 3, cols = 40;
  const double tau = GENERATE(0.05, 0.3, 2.0, 8.0);
  const bool standardize = GENERATE(false, true);
  const bool scale = GENERATE(false, true);
  lskd::kd_options o;
  o.temperature = tau;
  o.standardize = standardize;
  o.scale_by_t2 = scale;
  const auto student = random_rows<double>(31, rows * cols);
  const auto teacher = random_rows<double>(32, rows * cols);
  const auto value = [&](double temperature) {
    auto p = o;
    p.temperature = temperature;
    return lskd::kd_loss<double, Arch>(p).forward({student.data(), rows, cols},
                                                  {teacher.data(), rows, cols});
  };
  double dtau = 0;
  const double loss = lskd::kd_loss<double, Arch>(o).forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols}, {}, {}, nullptr, &dtau);
  const double h = 1e-6 * tau;
  const double numeric = (value(tau + h) - value(tau - h)) / (2 * h);
  INFO("tau " << tau << ", standardize " << standardize << ", scale_by_t2 " << scale);
  CHECK(std::isfinite(dtau));
  closeness check("d loss / d tau vs finite differences");
  check.add(0, numeric, dtau, 1e-6 * std::max(1.0, std::fabs(loss) / tau + std::fabs(numeric)));
  check.check();
}

TEMPLATE_TEST_CASE("multi_temperature_kd_loss with one temperature equals kd_loss",
                   "[multi_temperature]", float_simd, double_simd) {
  using T = typename TestType::value_type;
  const lskd::index rows = 5, cols = 29;
  const auto student = random_rows<T>(41, rows * cols, 2.0, 3.0);
  const auto teacher = random_rows<T>(42, rows * cols);
  lskd::kd_options kd_options;
  kd_options.temperature = 3.0;
  lskd::multi_temperature_kd_options multi_options;
  multi_options.temperatures = {3.0};
  std::vector<T> gs_kd(student.size()), gt_kd(student.size());
  std::vector<T> gs_multi(student.size()), gt_multi(student.size());
  const double a = lskd::kd_loss<T>(kd_options).forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols}, {gs_kd.data(), rows, cols},
      {gt_kd.data(), rows, cols});
  const double b = lskd::multi_temperature_kd_loss<T>(multi_options).forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols}, {gs_multi.data(), rows, cols},
      {gt_multi.data(), rows, cols});
  CHECK(b == Approx(a).epsilon(1e-6));
  double largest = 0;
  for (T g : gs_kd) largest = std::max(largest, static_cast<double>(std::fabs(g)));
  for (std::size_t i = 0; i < gs_kd.size(); ++i) {
    INFO("element " << i);
    CHECK(gs_multi[i] == Approx(gs_kd[i]).margin(1e-5 * largest));
    CHECK(gt_multi[i] == Approx(gt_kd[i]).margin(1e-5 * largest));
  }
}

TEST_CASE("multi_temperature_kd_loss reports its options and execution as kd_loss does",
          "[multi_temperature]") {
  lskd::multi_temperature_kd_options o;
  o.temperatures = {1.0, 4.0};
  lskd::execution how;
  how.threads = 3;
  const lskd::multi_temperature_kd_loss<float> kd(o, how);
  CHECK(kd.options().temperatures == std::vector<double>{1.0, 4.0});
  CHECK(kd.how().threads == 3);
}

TEST_CASE("multi_temperature_kd_loss refuses what it cannot compute", "[multi_temperature]") {
  lskd::multi_temperature_kd_options o;
  o.temperatures = {};
  CHECK_THROWS_WITH(lskd::multi_temperature_kd_loss<float>(o), Catch::Contains("empty"));
  // A bad temperature is named by its index.
  o.temperatures = {2.0, -1.0};
  CHECK_THROWS_WITH(lskd::multi_temperature_kd_loss<float>(o),
                    Catch::Contains("'temperatures[1]' must be finite and > 0 (got -1)"));
  o.temperatures = {2.0, 3.0, std::numeric_limits<double>::quiet_NaN(), 0.0};
  CHECK_THROWS_WITH(lskd::multi_temperature_kd_loss<double>(o),
                    Catch::Contains("'temperatures[2]' must be finite and > 0"));
  o.temperatures = {2.0};
  const lskd::multi_temperature_kd_loss<float> loss(o);
  std::vector<float> x = random_rows<float>(1, 12), v = random_rows<float>(2, 12);
  // In place is allowed (see below); any other overlap is not.
  CHECK_THROWS_WITH(loss.forward_backward({x.data(), 2, 4}, {v.data(), 2, 4},
                                          {x.data() + 1, 2, 4}),
                    Catch::Contains("'grad_student' overlaps 'student'"));
  CHECK_THROWS_WITH(loss.forward_backward({x.data(), 2, 4, 5}, {v.data(), 2, 4},
                                          {x.data(), 2, 4, 4}),
                    Catch::Contains("'grad_student' overlaps 'student' without being exactly"));
  CHECK_THROWS_WITH(loss.forward_backward({x.data(), 3, 4}, {v.data(), 3, 4},
                                          lskd::matrix_view<float>{}, {x.data(), 3, 4}),
                    Catch::Contains("'grad_teacher' overlaps 'student'"));
  CHECK_THROWS_WITH(loss.forward_backward({x.data(), 3, 4}, {v.data(), 3, 4}, {v.data(), 3, 4}),
                    Catch::Contains("'grad_student' overlaps 'teacher'"));
  v[5] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(loss.forward({x.data(), 3, 4}, {v.data(), 3, 4}),
                    Catch::Contains("row 1") && Catch::Contains("NaN"));
}

// With 0 rows and no output asked for, multi_temperature_kd_loss threw where kd_loss returns
// 0: both now return 0, with or without outputs, and write 0 to the temperature gradients.
TEMPLATE_TEST_CASE("multi_temperature_kd_loss on zero rows returns 0 as kd_loss does",
                   "[multi_temperature]", float_simd, double_simd) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  const lskd::index cols = 6;
  std::vector<T> logits(2 * cols, T(1));  // views of no rows, on real memory
  std::vector<T> grad(2 * cols, T(5));
  const lskd::matrix_view<const T> s(logits.data(), 0, cols), t(logits.data() + cols, 0, cols);
  const lskd::matrix_view<T> gs(grad.data(), 0, cols), gt(grad.data() + cols, 0, cols);
  lskd::multi_temperature_kd_options per_row;
  per_row.reduction = lskd::reduction::none;
  for (const auto& options : {lskd::multi_temperature_kd_options{}, per_row}) {
    INFO("reduction " << lskd::to_string(options.reduction));
    lskd::kd_options kd_options;
    kd_options.reduction = options.reduction;
    const lskd::kd_loss<T, Arch> kd(kd_options);
    const lskd::multi_temperature_kd_loss<T, Arch> multi(options);

    // No outputs.
    CHECK(kd.forward(s, t) == 0.0);
    CHECK(multi.forward(s, t) == 0.0);
    CHECK(kd.forward_backward(s, t, lskd::matrix_view<T>{}) == 0.0);
    CHECK(multi.forward_backward(s, t, lskd::matrix_view<T>{}) == 0.0);
    CHECK(multi.forward_backward(s, t, lskd::row_weights<T>{}, lskd::matrix_view<T>{}) == 0.0);

    // Gradient views of no rows and the temperature gradients: 0 written to each.
    double kd_dtau = -1.0;
    std::vector<double> dtau(options.temperatures.size(), -1.0);
    CHECK(kd.forward_backward(s, t, gs, gt, nullptr, &kd_dtau) == 0.0);
    CHECK(multi.forward_backward(s, t, gs, gt, nullptr, dtau.data()) == 0.0);
    CHECK(kd_dtau == 0.0);
    CHECK(dtau == std::vector<double>(dtau.size(), 0.0));
    CHECK(multi.forward_backward(s, t, lskd::matrix_view<T>{}, {}, nullptr, dtau.data()) == 0.0);
    CHECK(grad == std::vector<T>(grad.size(), T(5)));
  }
}

// Row weights inside a gradient, and the temperature gradients inside any buffer, were
// accepted (kd_loss refused them) and silently changed the caller's buffers or the results:
// now refused before anything is written.
TEST_CASE("multi_temperature_kd_loss: row weights and the temperature gradients may not share "
          "memory with the buffers",
          "[multi_temperature][errors]") {
  overlap_case c;
  lskd::multi_temperature_kd_options o;
  o.temperatures = {2.0, 4.0};
  const lskd::multi_temperature_kd_loss<double> multi(o);

  CHECK_THROWS_WITH(multi.forward_backward(c.s(), c.t(),
                                           lskd::row_weights<double>{c.grad.data() + 4}, c.gs()),
                    Catch::Contains("'grad_student' overlaps 'row_weights'"));
  CHECK_THROWS_WITH(multi.forward_backward(c.s(), c.t(),
                                           lskd::row_weights<double>{c.grad.data() + c.size},
                                           c.gs(), c.gt()),
                    Catch::Contains("'grad_teacher' overlaps 'row_weights'"));
  CHECK(c.untouched());

  // Two temperature gradients, each pair wholly inside one buffer.
  const std::pair<const char*, double*> places[] = {
      {"'student'", c.student.data() + 6},
      {"'teacher'", c.teacher.data()},
      {"'grad_student'", c.grad.data() + 2},
      {"'grad_teacher'", c.grad.data() + c.size + 3},
      {"'row_losses'", c.row_losses.data()},
      {"'row_weights'", c.weights.data()}};
  for (const auto& place : places) {
    INFO("grad_temperatures inside " << place.first);
    CHECK_THROWS_WITH(multi.forward_backward(c.s(), c.t(), c.weighted(), c.gs(), c.gt(),
                                             c.row_losses.data(), place.second),
                      Catch::Contains(std::string("'grad_temperatures' overlaps ") + place.first));
    CHECK(c.untouched());
  }
  std::vector<double> dtau(2, 0.0);
  CHECK_NOTHROW(multi.forward_backward(c.s(), c.t(), c.weighted(), c.gs(), c.gt(),
                                       c.row_losses.data(), dtau.data()));
}

TEMPLATE_TEST_CASE("multi_temperature_kd_loss with masked classes and row weights equals the "
                   "sum of kd_loss over its temperatures",
                   "[multi_temperature][masked]", float_simd, double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  const bool is_float = std::is_same<T, float>::value;
  const bool standardize = GENERATE(false, true);
  const lskd::index rows = 4, cols = 26;
  auto student = random_rows<T>(121, rows * cols, 0.0, 2.0);
  auto teacher = random_rows<T>(122, rows * cols, 0.0, 2.0);
  const T inf = std::numeric_limits<T>::infinity();
  for (lskd::index c : {3, 17}) {  // row 1 masks two classes
    student[static_cast<std::size_t>(cols + c)] = -inf;
    teacher[static_cast<std::size_t>(cols + c)] = -inf;
  }
  student[static_cast<std::size_t>(2 * cols + 4)] = std::numeric_limits<T>::quiet_NaN();
  const std::vector<T> weights{T(1), T(0.5), T(0), T(2)};  // row 2 is not read
  const std::vector<double> temperatures{1.0, 2.0, 5.0};

  lskd::multi_temperature_kd_options o;
  o.temperatures = temperatures;
  o.standardize = standardize;
  std::vector<T> gs(student.size()), gt(student.size());
  std::vector<double> dtau(temperatures.size()), row_losses(rows);
  const double loss = lskd::multi_temperature_kd_loss<T, Arch>(o).forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols},
      lskd::row_weights<T>{weights.data()}, {gs.data(), rows, cols}, {gt.data(), rows, cols},
      row_losses.data(), dtau.data());

  double expected = 0;
  std::vector<double> expected_gs(student.size()), expected_gt(student.size());
  std::vector<double> expected_rows(rows);
  for (std::size_t k = 0; k < temperatures.size(); ++k) {
    lskd::kd_options kd_options;
    kd_options.temperature = temperatures[k];
    kd_options.standardize = standardize;
    std::vector<T> part_gs(student.size()), part_gt(student.size());
    std::vector<double> part_rows(rows);
    double part_dtau = 0;
    expected += lskd::kd_loss<T, Arch>(kd_options).forward_backward(
        {student.data(), rows, cols}, {teacher.data(), rows, cols},
        lskd::row_weights<T>{weights.data()}, {part_gs.data(), rows, cols},
        {part_gt.data(), rows, cols}, part_rows.data(), &part_dtau);
    for (std::size_t i = 0; i < student.size(); ++i) {
      expected_gs[i] += part_gs[i];
      expected_gt[i] += part_gt[i];
    }
    for (std::size_t r = 0; r < static_cast<std::size_t>(rows); ++r) {
      expected_rows[r] += part_rows[r];
    }
    INFO("temperature " << temperatures[k]);
    CHECK(dtau[k] == Approx(part_dtau).epsilon(is_float ? 1e-5 : 1e-12).margin(1e-12));
  }
  INFO("standardize " << standardize);
  CHECK(loss == Approx(expected).epsilon(is_float ? 1e-5 : 1e-12));
  for (std::size_t r = 0; r < static_cast<std::size_t>(rows); ++r) {
    CHECK(row_losses[r] == Approx(expected_rows[r]).epsilon(is_float ? 1e-5 : 1e-12));
  }
  double largest = 0;
  for (double g : expected_gs) largest = std::max(largest, std::fabs(g));
  closeness student_check("grad_student");
  closeness teacher_check("grad_teacher");
  for (std::size_t i = 0; i < student.size(); ++i) {
    student_check.add(static_cast<lskd::index>(i), expected_gs[i], gs[i],
                      (is_float ? 3e-5 : 1e-12) * largest);
    teacher_check.add(static_cast<lskd::index>(i), expected_gt[i], gt[i],
                      (is_float ? 3e-5 : 1e-12) * largest);
  }
  student_check.check();
  teacher_check.check();
  CHECK(gs[static_cast<std::size_t>(cols + 3)] == T(0));
  CHECK(gt[static_cast<std::size_t>(cols + 17)] == T(0));
  CHECK(gs[static_cast<std::size_t>(2 * cols + 4)] == T(0));
}

TEMPLATE_TEST_CASE("multi_temperature_kd_loss in place equals out of place, bit for bit",
                   "[multi_temperature][in_place]", float_simd, float_scalar, double_simd,
                   double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  const bool standardize = GENERATE(true, false);
  const bool weighted = GENERATE(false, true);
  // Padded rows (ld > cols), a length that is not a multiple of the vector width, a row with a
  // masked class, and (weighted) a row of weight 0 whose NaN is not read.
  const lskd::index rows = 4, cols = 37, ld = 40;
  auto student = random_rows<T>(131, rows * ld, 0.0, 2.0);
  auto teacher = random_rows<T>(132, rows * ld, 0.0, 2.0);
  const T inf = std::numeric_limits<T>::infinity();
  student[static_cast<std::size_t>(ld + 6)] = -inf;
  teacher[static_cast<std::size_t>(ld + 6)] = -inf;
  if (weighted) student[static_cast<std::size_t>(2 * ld + 1)] = std::numeric_limits<T>::quiet_NaN();
  const std::vector<T> weights{T(1), T(0.5), T(0), T(3)};
  const lskd::row_weights<T> weighting{weighted ? weights.data() : nullptr};
  lskd::multi_temperature_kd_options o;
  o.temperatures = {1.0, 2.5, 4.0};
  o.standardize = standardize;
  const lskd::multi_temperature_kd_loss<T, Arch> loss(o);
  INFO("standardize " << standardize << ", weighted " << weighted);

  // Out of place: the reference. Padding of the outputs is left as it was.
  std::vector<T> gs(student.size(), T(0)), gt(teacher.size(), T(0));
  std::vector<double> rows_out(rows), dtau_out(3);
  const double expected = loss.forward_backward(
      {student.data(), rows, cols, ld}, {teacher.data(), rows, cols, ld}, weighting,
      {gs.data(), rows, cols, ld}, {gt.data(), rows, cols, ld}, rows_out.data(), dtau_out.data());
  // The padding of the in-place buffers holds logits; compare the gradients on the columns.
  const auto same_gradient = [&](const std::vector<T>& got, const std::vector<T>& want,
                                 const std::vector<T>& original) {
    lskd::index mismatches = 0;
    for (lskd::index r = 0; r < rows; ++r) {
      for (lskd::index c = 0; c < ld; ++c) {
        const auto i = static_cast<std::size_t>(r * ld + c);
        const T reference = c < cols ? want[i] : original[i];
        const bool same = std::memcmp(&got[i], &reference, sizeof(T)) == 0;
        if (!same) ++mismatches;
      }
    }
    return mismatches;
  };

  SECTION("student and teacher in place in one call") {
    auto s = student;
    auto t = teacher;
    std::vector<double> rows_in(rows), dtau_in(3);
    const double got = loss.forward_backward(
        {s.data(), rows, cols, ld}, {t.data(), rows, cols, ld}, weighting,
        {s.data(), rows, cols, ld}, {t.data(), rows, cols, ld}, rows_in.data(), dtau_in.data());
    CHECK(got == expected);
    CHECK(rows_in == rows_out);
    CHECK(dtau_in == dtau_out);
    CHECK(same_gradient(s, gs, student) == 0);
    CHECK(same_gradient(t, gt, teacher) == 0);
  }
  SECTION("the student's gradient alone in place") {
    auto s = student;
    std::vector<T> gs_alone(student.size(), T(0));
    std::vector<double> dtau_alone(3), dtau_in(3);
    const double out_of_place = loss.forward_backward(
        {student.data(), rows, cols, ld}, {teacher.data(), rows, cols, ld}, weighting,
        {gs_alone.data(), rows, cols, ld}, {}, nullptr, dtau_alone.data());
    const double got = loss.forward_backward({s.data(), rows, cols, ld},
                                             {teacher.data(), rows, cols, ld}, weighting,
                                             {s.data(), rows, cols, ld}, {}, nullptr,
                                             dtau_in.data());
    CHECK(got == out_of_place);
    CHECK(dtau_in == dtau_alone);
    CHECK(same_gradient(s, gs_alone, student) == 0);
  }
  SECTION("the teacher's gradient alone in place") {
    auto t = teacher;
    std::vector<T> gt_alone(teacher.size(), T(0));
    const double out_of_place = loss.forward_backward(
        {student.data(), rows, cols, ld}, {teacher.data(), rows, cols, ld}, weighting, {},
        {gt_alone.data(), rows, cols, ld});
    const double got = loss.forward_backward({student.data(), rows, cols, ld},
                                             {t.data(), rows, cols, ld}, weighting, {},
                                             {t.data(), rows, cols, ld});
    CHECK(got == out_of_place);
    CHECK(same_gradient(t, gt_alone, teacher) == 0);
  }
}
