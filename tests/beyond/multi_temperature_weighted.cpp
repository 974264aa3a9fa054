// SPDX-License-Identifier: MIT
// multi_temperature_kd_loss with class weights (the weighted Z-score): finite differences in
// double, all-ones weights against ddof 0, the sum of kd_loss::with_class_weights over the
// temperatures, in place, 16-bit logits, and the errors.

#include "beyond_support.hpp"

#include <lskd/half_precision.hpp>
#include <lskd/kd_loss.hpp>
#include <lskd/multi_temperature_kd_loss.hpp>

using namespace beyond_test;

namespace {

lskd::multi_temperature_kd_options weighted_options(std::vector<double> temperatures) {
  lskd::multi_temperature_kd_options o;
  o.temperatures = std::move(temperatures);
  o.ddof = 0;
  return o;
}

/// Positive weights around 1, seeded, with class 0 given weight 0: a class outside the
/// statistics that still takes part in the softmax.
std::vector<double> some_class_weights(unsigned seed, lskd::index classes) {
  std::vector<double> weights = random_rows<double>(seed, classes, 1.0, 0.5);
  for (double& w : weights) w = std::fabs(w);
  weights[0] = 0.0;
  return weights;
}

}  // namespace

TEMPLATE_TEST_CASE("multi_temperature_kd_loss with class weights matches finite differences",
                   "[multi_temperature][weighted][fd]", double_simd, double_scalar) {
  using Arch = typename TestType::arch;
  const lskd::index rows = 2;
  const lskd::index cols = GENERATE(as<lskd::index>{}, 3, 10, 37);
  auto student = random_rows<double>(141u + static_cast<unsigned>(cols), rows * cols, 1.0, 2.0);
  auto teacher = random_rows<double>(142u + static_cast<unsigned>(cols), rows * cols);
  const auto weights = some_class_weights(143, cols);
  auto o = weighted_options({0.5, 1.5, 4.0});
  o.reduction = lskd::reduction::sum;
  const auto loss = lskd::multi_temperature_kd_loss<double, Arch>::with_class_weights(o, weights);
  std::vector<double> gs(student.size()), gt(teacher.size()), dtau(o.temperatures.size());
  const double value = loss.forward_backward({student.data(), rows, cols},
                                             {teacher.data(), rows, cols},
                                             {gs.data(), rows, cols}, {gt.data(), rows, cols},
                                             nullptr, dtau.data());
  const auto loss_at = [&](const lskd::multi_temperature_kd_options& options) {
    return lskd::multi_temperature_kd_loss<double, Arch>::with_class_weights(options, weights)
        .forward({student.data(), rows, cols}, {teacher.data(), rows, cols});
  };
  const auto difference = [&](std::vector<double>& x, std::size_t i) {
    const double saved = x[i];
    const double h = 1e-6 * std::max(1.0, std::fabs(saved));
    x[i] = saved + h;
    const double up = loss_at(o);
    x[i] = saved - h;
    const double down = loss_at(o);
    x[i] = saved;
    return (up - down) / (2 * h);
  };
  double scale = 1e-4 * std::max(1.0, value);
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

  closeness tau_check("d loss / d tau_i vs finite differences");
  for (std::size_t k = 0; k < o.temperatures.size(); ++k) {
    const double tau = o.temperatures[k];
    const double h = 1e-6 * tau;
    auto up = o, down = o;
    up.temperatures[k] = tau + h;
    down.temperatures[k] = tau - h;
    const double numeric = (loss_at(up) - loss_at(down)) / (2 * h);
    tau_check.add(static_cast<lskd::index>(k), numeric, dtau[k],
                  1e-6 * std::max(1.0, std::fabs(value) / tau));
  }
  tau_check.check();
}

TEMPLATE_TEST_CASE("multi_temperature_kd_loss: all-ones class weights give the ddof-0 loss",
                   "[multi_temperature][weighted]", float_simd, double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  const bool is_float = std::is_same<T, float>::value;
  const lskd::index rows = 3, cols = 45;
  const auto student = random_rows<T>(151, rows * cols, 1000.0, 1.0);  // a large offset
  const auto teacher = random_rows<T>(152, rows * cols);
  const std::vector<double> ones(static_cast<std::size_t>(cols), 1.0);
  const auto o = weighted_options({1.0, 2.0, 5.0});
  std::vector<T> gs_plain(student.size()), gs_weighted(student.size());
  std::vector<T> gt_plain(student.size()), gt_weighted(student.size());
  std::vector<double> dtau_plain(3), dtau_weighted(3);
  const double plain = lskd::multi_temperature_kd_loss<T, Arch>(o).forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols}, {gs_plain.data(), rows, cols},
      {gt_plain.data(), rows, cols}, nullptr, dtau_plain.data());
  const auto weighted_loss = lskd::multi_temperature_kd_loss<T, Arch>::with_class_weights(o, ones);
  CHECK(weighted_loss.class_weights().size() == static_cast<std::size_t>(cols));
  const double weighted = weighted_loss.forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols},
      {gs_weighted.data(), rows, cols}, {gt_weighted.data(), rows, cols}, nullptr,
      dtau_weighted.data());
  CHECK(weighted == Approx(plain).epsilon(is_float ? 1e-5 : 1e-12));
  // d/dtau_i is a difference of terms of the loss's size over tau_i: its error is absolute, on
  // that scale (as in the golden comparisons).
  closeness tau_check("d loss / d tau_i, all-ones weights vs ddof 0");
  for (std::size_t k = 0; k < 3; ++k) {
    const double size = std::fabs(plain) / o.temperatures[k] + std::fabs(dtau_plain[k]);
    tau_check.add(static_cast<lskd::index>(k), dtau_plain[k], dtau_weighted[k],
                  (is_float ? 5e-5 : 1e-11) * std::max(1.0, size));
  }
  tau_check.check();
  double largest = 0;
  for (T g : gs_plain) largest = std::max(largest, static_cast<double>(std::fabs(g)));
  closeness student_check("grad_student, all-ones weights vs ddof 0");
  closeness teacher_check("grad_teacher, all-ones weights vs ddof 0");
  for (std::size_t i = 0; i < gs_plain.size(); ++i) {
    student_check.add(static_cast<lskd::index>(i), gs_plain[i], gs_weighted[i],
                      (is_float ? 3e-5 : 1e-12) * largest);
    teacher_check.add(static_cast<lskd::index>(i), gt_plain[i], gt_weighted[i],
                      (is_float ? 3e-5 : 1e-12) * largest);
  }
  student_check.check();
  teacher_check.check();
}

TEMPLATE_TEST_CASE("multi_temperature_kd_loss with class weights equals the sum of "
                   "kd_loss::with_class_weights over its temperatures",
                   "[multi_temperature][weighted][masked]", float_simd, double_simd,
                   double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  const bool is_float = std::is_same<T, float>::value;
  const lskd::index rows = 4, cols = 26;
  auto student = random_rows<T>(161, rows * cols, 0.0, 2.0);
  auto teacher = random_rows<T>(162, rows * cols, 0.0, 2.0);
  const T inf = std::numeric_limits<T>::infinity();
  for (lskd::index c : {3, 17}) {  // row 1 masks two classes
    student[static_cast<std::size_t>(cols + c)] = -inf;
    teacher[static_cast<std::size_t>(cols + c)] = -inf;
  }
  student[static_cast<std::size_t>(2 * cols + 4)] = std::numeric_limits<T>::quiet_NaN();
  const std::vector<T> weights_of_rows{T(1), T(0.5), T(0), T(2)};  // row 2 is not read
  const auto class_weights = some_class_weights(163, cols);
  const std::vector<double> temperatures{1.0, 2.0, 5.0};

  const auto loss = lskd::multi_temperature_kd_loss<T, Arch>::with_class_weights(
      weighted_options(temperatures), class_weights);
  std::vector<T> gs(student.size()), gt(student.size());
  std::vector<double> dtau(temperatures.size()), row_losses(rows);
  const double value = loss.forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols},
      lskd::row_weights<T>{weights_of_rows.data()}, {gs.data(), rows, cols},
      {gt.data(), rows, cols}, row_losses.data(), dtau.data());

  double expected = 0;
  std::vector<double> expected_gs(student.size()), expected_gt(student.size());
  std::vector<double> expected_rows(rows);
  for (std::size_t k = 0; k < temperatures.size(); ++k) {
    lskd::kd_options kd_options;
    kd_options.temperature = temperatures[k];
    kd_options.ddof = 0;
    std::vector<T> part_gs(student.size()), part_gt(student.size());
    std::vector<double> part_rows(rows);
    double part_dtau = 0;
    expected += lskd::kd_loss<T, Arch>::with_class_weights(kd_options, class_weights)
                    .forward_backward({student.data(), rows, cols},
                                      {teacher.data(), rows, cols},
                                      lskd::row_weights<T>{weights_of_rows.data()},
                                      {part_gs.data(), rows, cols}, {part_gt.data(), rows, cols},
                                      part_rows.data(), &part_dtau);
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
  CHECK(value == Approx(expected).epsilon(is_float ? 1e-5 : 1e-12));
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

TEST_CASE("multi_temperature_kd_loss with class weights: in place and 16-bit logits give the "
          "same bits", "[multi_temperature][weighted][in_place][half]") {
  const lskd::index rows = 3, cols = 33;
  const auto student16 = [&] {
    std::vector<Eigen::bfloat16> values;
    for (float x : random_rows<float>(171, rows * cols, 0.0, 2.0)) {
      values.push_back(static_cast<Eigen::bfloat16>(x));
    }
    return values;
  }();
  std::vector<Eigen::bfloat16> teacher16;
  for (float x : random_rows<float>(172, rows * cols)) {
    teacher16.push_back(static_cast<Eigen::bfloat16>(x));
  }
  std::vector<float> student, teacher;
  for (auto x : student16) student.push_back(static_cast<float>(x));
  for (auto x : teacher16) teacher.push_back(static_cast<float>(x));
  const auto o = weighted_options({2.0, 4.0});
  const auto loss =
      lskd::multi_temperature_kd_loss<float>::with_class_weights(o, some_class_weights(173, cols));

  std::vector<float> gs(student.size()), gt(student.size());
  std::vector<double> dtau(2);
  const double expected = loss.forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols}, {gs.data(), rows, cols},
      {gt.data(), rows, cols}, nullptr, dtau.data());

  // In place: the weighted path re-reads the logits after the temperature passes; it reads the
  // copy kept before the first write.
  auto s = student;
  auto t = teacher;
  std::vector<double> dtau_in_place(2);
  CHECK(loss.forward_backward({s.data(), rows, cols}, {t.data(), rows, cols},
                              {s.data(), rows, cols}, {t.data(), rows, cols}, nullptr,
                              dtau_in_place.data()) == expected);
  CHECK(s == gs);
  CHECK(t == gt);
  CHECK(dtau_in_place == dtau);

  // 16-bit logits through the wrapped weighted float loss: the same bits.
  const lskd::half_precision_multi_temperature_kd_loss<Eigen::bfloat16> half_loss(loss);
  std::vector<float> gs16(student.size()), gt16(student.size());
  std::vector<double> dtau16(2);
  CHECK(half_loss.forward_backward({student16.data(), rows, cols}, {teacher16.data(), rows, cols},
                                   {gs16.data(), rows, cols}, {gt16.data(), rows, cols}, nullptr,
                                   dtau16.data()) == expected);
  CHECK(gs16 == gs);
  CHECK(gt16 == gt);
  CHECK(dtau16 == dtau);
}

TEST_CASE("multi_temperature_kd_loss with class weights: the errors say what to change",
          "[multi_temperature][weighted][errors]") {
  const lskd::index rows = 2, cols = 6;
  const std::vector<double> weights{0.0, 1.0, 2.0, 0.0, 1.0, 1.0};
  auto o = weighted_options({1.0, 2.0});
  using loss_type = lskd::multi_temperature_kd_loss<float>;

  auto plain = o;
  plain.standardize = false;
  CHECK_THROWS_WITH(loss_type::with_class_weights(plain, weights),
                    Catch::Contains("standardize = true"));
  auto ddof1 = o;
  ddof1.ddof = 1;
  CHECK_THROWS_WITH(loss_type::with_class_weights(ddof1, weights), Catch::Contains("ddof = 0"));
  auto eps0 = o;
  eps0.eps = 0.0;
  CHECK_THROWS_WITH(loss_type::with_class_weights(eps0, weights), Catch::Contains("eps"));
  CHECK_THROWS_WITH(loss_type::with_class_weights(o, {1.0, -1.0, 1.0, 1.0, 1.0, 1.0}),
                    Catch::Contains("'class_weights' [1]"));
  CHECK_THROWS_WITH(loss_type::with_class_weights(o, std::vector<double>(6, 0.0)),
                    Catch::Contains("sum to 0"));

  const auto loss = loss_type::with_class_weights(o, weights);
  auto student = random_rows<float>(181, rows * (cols + 1));
  auto teacher = random_rows<float>(182, rows * (cols + 1));
  std::vector<float> gs(student.size(), 4.0f);
  std::vector<double> dtau(2, -3.0);
  CHECK_THROWS_WITH(loss.forward_backward({student.data(), rows, cols + 1},
                                          {teacher.data(), rows, cols + 1},
                                          {gs.data(), rows, cols + 1}),
                    Catch::Contains("'class_weights' has 6 values") &&
                        Catch::Contains("7 classes"));

  // Row 1 masks every class of weight > 0 (1, 2, 4 and 5): the classes it keeps all have
  // weight 0, so its weighted statistics are 0/0.
  const float inf = std::numeric_limits<float>::infinity();
  for (lskd::index c : {1, 2, 4, 5}) {
    student[static_cast<std::size_t>(cols + c)] = -inf;
    teacher[static_cast<std::size_t>(cols + c)] = -inf;
  }
  CHECK_THROWS_WITH(loss.forward_backward({student.data(), rows, cols},
                                          {teacher.data(), rows, cols}, {gs.data(), rows, cols},
                                          {}, nullptr, dtau.data()),
                    Catch::Contains("row 1") && Catch::Contains("class weight"));
  CHECK(std::all_of(gs.begin(), gs.end(), [](float g) { return g == 4.0f; }));
  CHECK(std::all_of(dtau.begin(), dtau.end(), [](double d) { return d == -3.0; }));
}
