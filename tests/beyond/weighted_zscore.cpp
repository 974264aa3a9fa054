// SPDX-License-Identifier: MIT
// The weighted Z-score: kd_loss with class weights against PyTorch golden values and finite
// differences; all-ones weights equal ddof 0; standardize and row_stats with class weights;
// masked classes; errors.

#include "beyond_support.hpp"

#include <lskd/kd_loss.hpp>
#include <lskd/row_stats.hpp>
#include <lskd/standardize.hpp>

using namespace beyond_test;

namespace {

lskd::kd_options weighted_options(double tau = 2.0) {
  lskd::kd_options o;
  o.temperature = tau;
  o.ddof = 0;
  return o;
}

}  // namespace

TEMPLATE_TEST_CASE("kd_loss with class weights matches the PyTorch golden values",
                   "[weighted][golden]", float_simd, float_scalar, double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  const bool is_float = std::is_same<T, float>::value;
  for (const golden_case& c : golden_cases()) {
    if (c.kind != "wkd") continue;
    SECTION(c.name) {
      const auto student = converted<T>(c.student);
      const auto teacher = converted<T>(c.teacher);
      const auto kd = lskd::kd_loss<T, Arch>::with_class_weights(c.kd(), c.class_weights);
      std::vector<T> gs(student.size()), gt(teacher.size());
      std::vector<double> row_losses(static_cast<std::size_t>(c.rows));
      double dtau = 0;
      const double loss = kd.forward_backward(
          {student.data(), c.rows, c.cols}, {teacher.data(), c.rows, c.cols},
          {gs.data(), c.rows, c.cols}, {gt.data(), c.rows, c.cols}, row_losses.data(), &dtau);

      closeness losses("loss");
      const double loss_tolerance = is_float ? 2e-5 : 1e-11;
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

      const double grad_tolerance = is_float ? 3e-5 : 1e-10;
      closeness student_check("grad_student");
      closeness teacher_check("grad_teacher");
      for (lskd::index r = 0; r < c.rows; ++r) {
        const double scale = std::max(row_scale(c.grad_student, c.cols, r),
                                      row_scale(c.grad_teacher, c.cols, r));
        for (lskd::index j = 0; j < c.cols; ++j) {
          const auto i = static_cast<std::size_t>(r * c.cols + j);
          student_check.add(static_cast<lskd::index>(i), c.grad_student[i], gs[i],
                            grad_tolerance * scale);
          teacher_check.add(static_cast<lskd::index>(i), c.grad_teacher[i], gt[i],
                            grad_tolerance * scale);
        }
      }
      student_check.check();
      teacher_check.check();

      double loss_size = 0;
      for (double l : c.loss) loss_size += std::fabs(l);
      closeness tau_check("d loss / d tau");
      tau_check.add(0, c.dtau[0], dtau,
                    (is_float ? 5e-5 : 1e-10) *
                        std::max(1.0, loss_size / c.temperature + std::fabs(c.dtau[0])));
      tau_check.check();
    }
  }
}

TEMPLATE_TEST_CASE("kd_loss with class weights matches finite differences in double",
                   "[weighted][fd]", double_simd, double_scalar) {
  using Arch = typename TestType::arch;
  const lskd::index rows = 2;
  const lskd::index cols = GENERATE(as<lskd::index>{}, 3, 10, 37);
  auto student = random_rows<double>(81u + static_cast<unsigned>(cols), rows * cols, 1.0, 2.0);
  auto teacher = random_rows<double>(82u + static_cast<unsigned>(cols), rows * cols);
  std::vector<double> weights = random_rows<double>(83, cols, 1.0, 0.5);
  for (double& w : weights) w = std::fabs(w);
  weights[0] = 0.0;  // a class outside the statistics still gets a softmax gradient
  auto o = weighted_options(1.5);
  o.reduction = lskd::reduction::sum;
  const auto kd = lskd::kd_loss<double, Arch>::with_class_weights(o, weights);
  std::vector<double> gs(student.size()), gt(teacher.size());
  const double loss = kd.forward_backward({student.data(), rows, cols},
                                          {teacher.data(), rows, cols}, {gs.data(), rows, cols},
                                          {gt.data(), rows, cols});
  const auto value = [&] {
    return kd.forward({student.data(), rows, cols}, {teacher.data(), rows, cols});
  };
  const auto difference = [&](std::vector<double>& x, std::size_t i) {
    const double saved = x[i];
    const double h = 1e-6 * std::max(1.0, std::fabs(saved));
    x[i] = saved + h;
    const double up = value();
    x[i] = saved - h;
    const double down = value();
    x[i] = saved;
    return (up - down) / (2 * h);
  };
  double scale = 1e-4 * std::max(1.0, loss);
  for (double g : gs) scale = std::max(scale, std::fabs(g));
  for (double g : gt) scale = std::max(scale, std::fabs(g));
  INFO("cols " << cols);
  closeness student_check("grad_student vs finite differences");
  closeness teacher_check("grad_teacher vs finite differences");
  for (std::size_t i = 0; i < student.size(); ++i) {
    student_check.add(static_cast<lskd::index>(i), difference(student, i), gs[i], 2e-6 * scale);
    teacher_check.add(static_cast<lskd::index>(i), difference(teacher, i), gt[i], 2e-6 * scale);
  }
  student_check.check();
  teacher_check.check();
}

TEMPLATE_TEST_CASE("all-ones class weights give the ddof-0 Z-score", "[weighted]", float_simd,
                   double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  const bool is_float = std::is_same<T, float>::value;
  const lskd::index rows = 3, cols = 45;
  const auto student = random_rows<T>(91, rows * cols, 1000.0, 1.0);  // a large offset
  const auto teacher = random_rows<T>(92, rows * cols);
  const std::vector<double> ones(static_cast<std::size_t>(cols), 1.0);
  const auto o = weighted_options();
  std::vector<T> gs_plain(student.size()), gs_weighted(student.size());
  std::vector<T> gt_plain(student.size()), gt_weighted(student.size());
  const double plain = lskd::kd_loss<T, Arch>(o).forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols}, {gs_plain.data(), rows, cols},
      {gt_plain.data(), rows, cols});
  const double weighted = lskd::kd_loss<T, Arch>::with_class_weights(o, ones).forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols},
      {gs_weighted.data(), rows, cols}, {gt_weighted.data(), rows, cols});
  CHECK(weighted == Approx(plain).epsilon(is_float ? 1e-5 : 1e-12));
  double largest = 0;
  for (T g : gs_plain) largest = std::max(largest, static_cast<double>(std::fabs(g)));
  for (std::size_t i = 0; i < gs_plain.size(); ++i) {
    INFO("element " << i);
    CHECK(gs_weighted[i] == Approx(gs_plain[i]).margin((is_float ? 3e-5 : 1e-12) * largest));
    CHECK(gt_weighted[i] == Approx(gt_plain[i]).margin((is_float ? 3e-5 : 1e-12) * largest));
  }

  // standardize and row_stats with all-ones weights equal their ddof-0 results.
  lskd::standardize_options so;
  so.ddof = 0;
  std::vector<T> z_plain(student.size()), z_weighted(student.size());
  lskd::standardize<T, Arch>{so}({student.data(), rows, cols}, {z_plain.data(), rows, cols});
  so.class_weights = ones;
  lskd::standardize<T, Arch>{so}({student.data(), rows, cols}, {z_weighted.data(), rows, cols});
  for (std::size_t i = 0; i < z_plain.size(); ++i) {
    CHECK(z_weighted[i] == Approx(z_plain[i]).margin(is_float ? 1e-4 : 1e-11));
  }
  lskd::row_stats_options ro;
  ro.ddof = 0;
  std::vector<T> mean_plain(rows), std_plain(rows), mean_weighted(rows), std_weighted(rows);
  lskd::row_stats<T, Arch>{ro}({student.data(), rows, cols}, mean_plain.data(), std_plain.data());
  ro.class_weights = ones;
  lskd::row_stats<T, Arch>{ro}({student.data(), rows, cols}, mean_weighted.data(),
                               std_weighted.data());
  for (lskd::index r = 0; r < rows; ++r) {
    const auto i = static_cast<std::size_t>(r);
    CHECK(mean_weighted[i] == Approx(mean_plain[i]).epsilon(is_float ? 1e-6 : 1e-14));
    CHECK(std_weighted[i] == Approx(std_plain[i]).epsilon(is_float ? 1e-5 : 1e-12));
  }
}

TEST_CASE("row_stats and standardize with class weights: the weighted formulas", "[weighted]") {
  // Row [1, 2, 4, 8] with weights [1, 0, 3, 0]: W = 4, mean = (1 + 12) / 4 = 3.25,
  // var = (1 * 2.25^2 + 3 * 0.75^2) / 4 = 1.6875.
  const std::vector<double> row{1, 2, 4, 8};
  lskd::row_stats_options ro;
  ro.ddof = 0;
  ro.class_weights = {1, 0, 3, 0};
  double mean = 0, std = 0;
  lskd::row_stats<double>{ro}({row.data(), 1, 4}, &mean, &std);
  CHECK(mean == Approx(3.25).epsilon(1e-15));
  CHECK(std == Approx(std::sqrt(1.6875)).epsilon(1e-15));

  lskd::standardize_options so;
  so.ddof = 0;
  so.eps = 1e-7;
  so.temperature = 2.0;
  so.class_weights = ro.class_weights;
  std::vector<double> z(4);
  lskd::standardize<double>{so}({row.data(), 1, 4}, {z.data(), 1, 4});
  for (std::size_t j = 0; j < 4; ++j) {
    CHECK(z[j] == Approx((row[j] - 3.25) / ((std::sqrt(1.6875) + 1e-7) * 2.0)).epsilon(1e-14));
  }
}

TEST_CASE("kd_loss with class weights: masked classes get a zero gradient", "[weighted]") {
  const lskd::index cols = 12;
  auto student = random_rows<double>(101, cols);
  auto teacher = random_rows<double>(102, cols);
  const double inf = std::numeric_limits<double>::infinity();
  student[5] = teacher[5] = -inf;
  std::vector<double> weights(static_cast<std::size_t>(cols), 0.5);
  const auto kd = lskd::kd_loss<double>::with_class_weights(weighted_options(), weights);
  std::vector<double> gs(cols), gt(cols);
  const double loss = kd.forward_backward({student.data(), 1, cols}, {teacher.data(), 1, cols},
                                          {gs.data(), 1, cols}, {gt.data(), 1, cols});
  CHECK(std::isfinite(loss));
  CHECK(gs[5] == 0.0);
  CHECK(gt[5] == 0.0);

  // Equal to the row without the masked class.
  auto s11 = student, t11 = teacher, w11 = weights;
  s11.erase(s11.begin() + 5);
  t11.erase(t11.begin() + 5);
  w11.erase(w11.begin() + 5);
  std::vector<double> gs11(cols - 1), gt11(cols - 1);
  const double loss11 = lskd::kd_loss<double>::with_class_weights(weighted_options(), w11)
                            .forward_backward({s11.data(), 1, cols - 1}, {t11.data(), 1, cols - 1},
                                              {gs11.data(), 1, cols - 1},
                                              {gt11.data(), 1, cols - 1});
  CHECK(loss == Approx(loss11).epsilon(1e-13));
  for (lskd::index j = 0; j < cols - 1; ++j) {
    const auto k = static_cast<std::size_t>(j < 5 ? j : j + 1);
    CHECK(gs[k] == Approx(gs11[static_cast<std::size_t>(j)]).margin(1e-13));
    CHECK(gt[k] == Approx(gt11[static_cast<std::size_t>(j)]).margin(1e-13));
  }

  // A row whose masked classes hold all the weight is refused.
  std::vector<double> only_five(static_cast<std::size_t>(cols), 0.0);
  only_five[5] = 1.0;
  CHECK_THROWS_WITH(lskd::kd_loss<double>::with_class_weights(weighted_options(), only_five)
                        .forward({student.data(), 1, cols}, {teacher.data(), 1, cols}),
                    Catch::Contains("row 0"));
}

TEST_CASE("class weights: the errors say what to change", "[weighted][errors]") {
  const std::vector<double> weights{1.0, 2.0, 3.0};
  auto o = weighted_options();
  o.ddof = 1;
  CHECK_THROWS_WITH(lskd::kd_loss<float>::with_class_weights(o, weights),
                    Catch::Contains("ddof = 0"));
  o = weighted_options();
  o.standardize = false;
  CHECK_THROWS_WITH(lskd::kd_loss<float>::with_class_weights(o, weights),
                    Catch::Contains("standardize"));
  o = weighted_options();
  o.eps = 0.0;
  CHECK_THROWS_WITH(lskd::kd_loss<float>::with_class_weights(o, weights), Catch::Contains("eps"));
  CHECK_THROWS_WITH(lskd::kd_loss<float>::with_class_weights(weighted_options(), {1.0, -1.0}),
                    Catch::Contains("'class_weights' [1]"));
  CHECK_THROWS_WITH(lskd::kd_loss<float>::with_class_weights(weighted_options(), {0.0, 0.0}),
                    Catch::Contains("sum to 0"));
  const auto kd = lskd::kd_loss<float>::with_class_weights(weighted_options(), weights);
  std::vector<float> x(8, 1.0f), v(8, 2.0f), g(8);
  x[1] = 3.0f;
  CHECK_THROWS_WITH(kd.forward({x.data(), 2, 4}, {v.data(), 2, 4}),
                    Catch::Contains("3 values") && Catch::Contains("4 classes"));
  CHECK_THROWS_WITH(kd.forward_backward({x.data(), 2, 3}, {v.data(), 2, 3}, {x.data(), 2, 3}),
                    Catch::Contains("overlaps"));
  lskd::standardize_options so;
  so.class_weights = weights;
  CHECK_THROWS_WITH(lskd::standardize<float>(so), Catch::Contains("ddof = 0"));
}

namespace {

// Class weights valid as doubles but not as floats (1e300; 1e-300 beside zeros) are scaled by a
// power of two before rounding: the statistics depend only on their ratios, so the result is
// that of the same weights scaled to 1 (a new user's trial found a loss of 2^32 and NaN).
TEST_CASE("class weights far outside float's range give the result of their ratios",
          "[weighted_zscore]") {
  const std::vector<float> student = {0.5f, -1.0f, 2.0f, 0.25f};
  const std::vector<float> teacher = {1.0f, 0.0f, -0.5f, 0.75f};
  lskd::kd_options o;
  o.ddof = 0;
  const auto run = [&](const std::vector<double>& weights) {
    std::vector<float> grad(4);
    const double loss = lskd::kd_loss<float>::with_class_weights(o, weights).forward_backward(
        {student.data(), 1, 4}, {teacher.data(), 1, 4}, {grad.data(), 1, 4});
    return std::make_pair(loss, grad);
  };
  const auto huge = run({1e300, 2e300, 1e300, 0.5e300});
  const auto unit = run({1.0, 2.0, 1.0, 0.5});
  CHECK(huge.first == Approx(unit.first).epsilon(1e-6));
  for (std::size_t j = 0; j < 4; ++j) CHECK(huge.second[j] == Approx(unit.second[j]).margin(1e-6));
  const auto tiny = run({1e-300, 0.0, 3e-300, 0.0});
  const auto tiny_unit = run({1.0, 0.0, 3.0, 0.0});
  CHECK(tiny.first == Approx(tiny_unit.first).epsilon(1e-6));
  for (std::size_t j = 0; j < 4; ++j) {
    CHECK(std::isfinite(tiny.second[j]));
    CHECK(tiny.second[j] == Approx(tiny_unit.second[j]).margin(1e-6));
  }
}

}  // namespace
