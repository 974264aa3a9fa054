// SPDX-License-Identifier: MIT
// KD and DKD on bfloat16 and half logits: the gradient from 16-bit input equals the float
// gradient of the same converted values (the bf16 V = 32000 case), and a 16-bit gradient is that
// float gradient rounded once.

#include "beyond_support.hpp"

#include <lskd/half_precision.hpp>

#include <cstring>

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
  // A float gradient may not alias the 16-bit logits (a view of the right shape, so that the
  // overlap, not the shape, is what is refused).
  CHECK_THROWS_WITH(kd.forward_backward({student.data(), rows, cols}, {teacher.data(), rows, cols},
                                        lskd::matrix_view<float>(
                                            reinterpret_cast<float*>(student.data()), rows, cols)),
                    Catch::Contains("'grad_student' overlaps 'student'"));
}

// An int cast to lskd::reduction, or a negative thread count, was accepted by every loss (the
// reduction then behaved as sum): each now refuses them when it is built, naming the option.
TEST_CASE("DKD, multi-temperature and 16-bit losses refuse a reduction outside the enum and a "
          "negative thread count",
          "[half][dkd][multi_temperature][errors]") {
  const auto outside = static_cast<lskd::reduction>(7);
  lskd::execution negative, openmp_default;
  negative.threads = -3;
  openmp_default.threads = 0;
  lskd::kd_options kd;
  kd.reduction = outside;
  lskd::dkd_options dkd;
  dkd.reduction = outside;
  lskd::multi_temperature_kd_options multi;
  multi.reduction = outside;
  // (Single matchers: a combined one would keep pointers to temporaries.)
  const auto names_reduction = Catch::Contains("'reduction' must be reduction::none");
  const auto names_threads = Catch::Contains("'execution::threads' is -3");

  CHECK_THROWS_WITH(lskd::dkd_loss<float>(dkd), names_reduction);
  CHECK_THROWS_WITH(lskd::dkd_loss<double>({}, negative), names_threads);
  CHECK_THROWS_WITH(lskd::multi_temperature_kd_loss<float>(multi), names_reduction);
  CHECK_THROWS_WITH(lskd::multi_temperature_kd_loss<double>({}, negative), names_threads);
  CHECK_THROWS_WITH(lskd::half_precision_kd_loss<Eigen::half>(kd), names_reduction);
  CHECK_THROWS_WITH(lskd::half_precision_kd_loss<Eigen::bfloat16>({}, negative), names_threads);
  CHECK_THROWS_WITH(lskd::half_precision_dkd_loss<Eigen::bfloat16>(dkd), names_reduction);
  CHECK_THROWS_WITH(lskd::half_precision_dkd_loss<Eigen::half>({}, negative), names_threads);
  CHECK_THROWS_WITH(lskd::half_precision_multi_temperature_kd_loss<Eigen::half>(multi),
                    names_reduction);
  CHECK_THROWS_WITH(lskd::half_precision_multi_temperature_kd_loss<Eigen::bfloat16>({}, negative),
                    names_threads);

  // 0 threads is OpenMP's default.
  CHECK_NOTHROW(lskd::dkd_loss<float>({}, openmp_default));
  CHECK_NOTHROW(lskd::multi_temperature_kd_loss<float>({}, openmp_default));
}

// On 0 rows, a 16-bit gradient overload with no output asked for threw where the float
// overload and kd_loss return 0: every 16-bit loss now returns 0 there.
TEST_CASE("16-bit losses on zero rows return 0 with or without outputs", "[half][errors]") {
  using Storage = Eigen::half;
  const lskd::index cols = 6;
  std::vector<Storage> logits(cols, Storage(1.0f));
  const lskd::matrix_view<const Storage> s(logits.data(), 0, cols), t(logits.data(), 0, cols);
  const lskd::matrix_view<float> none32{};
  const lskd::matrix_view<Storage> none16{};
  const std::int64_t* const no_targets = nullptr;
  const lskd::half_precision_kd_loss<Storage> kd;
  const lskd::half_precision_dkd_loss<Storage> dkd;
  const lskd::half_precision_multi_temperature_kd_loss<Storage> multi;

  CHECK(kd.forward_backward(s, t, none32) == 0.0);
  CHECK(kd.forward_backward(s, t, none16) == 0.0);
  CHECK(dkd.forward_backward(s, t, no_targets, none32) == 0.0);
  CHECK(dkd.forward_backward(s, t, no_targets, none16) == 0.0);
  CHECK(multi.forward_backward(s, t, none32) == 0.0);
  CHECK(multi.forward_backward(s, t, none16) == 0.0);

  double dtau = -1.0;
  std::vector<double> dtaus(multi.options().temperatures.size(), -1.0);
  CHECK(dkd.forward_backward(s, t, no_targets, none16, {}, nullptr, &dtau) == 0.0);
  CHECK(dtau == 0.0);
  CHECK(multi.forward_backward(s, t, none16, {}, nullptr, dtaus.data()) == 0.0);
  CHECK(dtaus == std::vector<double>(dtaus.size(), 0.0));
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

namespace {

/// A parallel-for that runs one row at a time, last row first: results must not depend on it.
lskd::execution backwards_one_row_at_a_time() {
  lskd::execution how;
  how.parallel_for = [](std::ptrdiff_t count,
                        const std::function<void(std::ptrdiff_t, std::ptrdiff_t)>& body) {
    for (std::ptrdiff_t r = count; r > 0; --r) body(r - 1, r);
  };
  return how;
}

template <class Storage>
bool all_rounded_from(const std::vector<Storage>& narrow, const std::vector<float>& wide) {
  if (narrow.size() != wide.size()) return false;
  for (std::size_t i = 0; i < narrow.size(); ++i) {
    if (!(narrow[i] == static_cast<Storage>(wide[i]))) return false;
  }
  return true;
}

}  // namespace

TEMPLATE_TEST_CASE("16-bit multi-temperature KD equals the float loss on the converted values",
                   "[half][multi_temperature]", Eigen::bfloat16, Eigen::half) {
  using Storage = TestType;
  // A long row, and a short one whose length is not a multiple of the vector width.
  const lskd::index rows = GENERATE(as<lskd::index>{}, 3, 4);
  const lskd::index cols = rows == 3 ? 1000 : 37;
  const bool standardize = GENERATE(true, false);
  INFO(rows << " x " << cols << ", standardize " << standardize);
  const auto student = rounded<Storage>(random_rows<float>(91, rows * cols, 0.5, 2.0));
  const auto teacher = rounded<Storage>(random_rows<float>(92, rows * cols, -0.5, 1.5));
  const auto student_float = widened(student);
  const auto teacher_float = widened(teacher);
  lskd::multi_temperature_kd_options o;
  o.temperatures = {1.0, 2.0, 4.0};
  o.standardize = standardize;
  const std::size_t count = o.temperatures.size();
  const auto size = student.size();

  const lskd::multi_temperature_kd_loss<float> float_loss(o);
  std::vector<float> gs_float(size), gt_float(size);
  std::vector<double> rows_float(static_cast<std::size_t>(rows)), dtau_float(count);
  const double loss_float = float_loss.forward_backward(
      {student_float.data(), rows, cols}, {teacher_float.data(), rows, cols},
      {gs_float.data(), rows, cols}, {gt_float.data(), rows, cols}, rows_float.data(),
      dtau_float.data());

  // Float gradients: the same float values through the same float kernels, the same bits.
  const lskd::half_precision_multi_temperature_kd_loss<Storage> half_loss(o);
  std::vector<float> gs(size, 5.0f), gt(size, 5.0f);
  std::vector<double> rows_half(static_cast<std::size_t>(rows)), dtau(count);
  const double loss = half_loss.forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols}, {gs.data(), rows, cols},
      {gt.data(), rows, cols}, rows_half.data(), dtau.data());
  CHECK(loss == loss_float);
  CHECK(rows_half == rows_float);
  CHECK(dtau == dtau_float);
  CHECK(gs == gs_float);
  CHECK(gt == gt_float);
  CHECK(half_loss.forward({student.data(), rows, cols}, {teacher.data(), rows, cols}) ==
        float_loss.forward({student_float.data(), rows, cols},
                           {teacher_float.data(), rows, cols}));

  // The temperature gradients alone are those computed with the float gradients.
  std::vector<double> dtau_alone(count);
  half_loss.forward_backward({student.data(), rows, cols}, {teacher.data(), rows, cols},
                             lskd::matrix_view<float>{}, {}, nullptr, dtau_alone.data());
  CHECK(dtau_alone == dtau_float);

  // Gradients in the input type: the float gradients rounded once.
  std::vector<Storage> gs16(size), gt16(size);
  std::vector<double> dtau16(count);
  const double loss16 = half_loss.forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols}, {gs16.data(), rows, cols},
      {gt16.data(), rows, cols}, nullptr, dtau16.data());
  CHECK(loss16 == loss_float);
  CHECK(dtau16 == dtau_float);
  CHECK(all_rounded_from(gs16, gs_float));
  CHECK(all_rounded_from(gt16, gt_float));

  // In place, both sides at once: each 16-bit gradient replaces its own logits.
  auto student_in_place = student;
  auto teacher_in_place = teacher;
  const double loss_in_place = half_loss.forward_backward(
      {student_in_place.data(), rows, cols}, {teacher_in_place.data(), rows, cols},
      lskd::matrix_view<Storage>(student_in_place.data(), rows, cols),
      lskd::matrix_view<Storage>(teacher_in_place.data(), rows, cols));
  CHECK(loss_in_place == loss_float);
  CHECK(student_in_place == gs16);
  CHECK(teacher_in_place == gt16);
}

TEST_CASE("16-bit multi-temperature KD: row weights, masked classes and threads as the float "
          "loss", "[half][multi_temperature]") {
  using Storage = Eigen::half;
  const lskd::index rows = 4, cols = 29, ld = 32;  // padded rows: each starts 32 apart
  std::vector<Storage> student(static_cast<std::size_t>(rows * ld), Storage(0.0f));
  std::vector<Storage> teacher(student.size(), Storage(0.0f));
  const auto s = rounded<Storage>(random_rows<float>(101, rows * cols, 0.0, 2.0));
  const auto t = rounded<Storage>(random_rows<float>(102, rows * cols, 0.0, 2.0));
  for (lskd::index r = 0; r < rows; ++r) {
    for (lskd::index c = 0; c < cols; ++c) {
      student[static_cast<std::size_t>(r * ld + c)] = s[static_cast<std::size_t>(r * cols + c)];
      teacher[static_cast<std::size_t>(r * ld + c)] = t[static_cast<std::size_t>(r * cols + c)];
    }
  }
  const float inf = std::numeric_limits<float>::infinity();
  // Row 1: class 3 masked in both. Row 2: weight 0 and NaN (not read).
  student[static_cast<std::size_t>(ld + 3)] = Storage(-inf);
  teacher[static_cast<std::size_t>(ld + 3)] = Storage(-inf);
  student[static_cast<std::size_t>(2 * ld + 5)] = Storage(std::numeric_limits<float>::quiet_NaN());
  const std::vector<float> weights{1.0f, 2.0f, 0.0f, 0.5f};
  const auto student_float = widened(student);
  const auto teacher_float = widened(teacher);

  lskd::multi_temperature_kd_options o;
  o.temperatures = {2.0, 3.0};
  o.reduction = lskd::reduction::sum;
  const lskd::multi_temperature_kd_loss<float> float_loss(o, backwards_one_row_at_a_time());
  const lskd::half_precision_multi_temperature_kd_loss<Storage> half_loss(
      o, backwards_one_row_at_a_time());
  std::vector<float> gs_float(student.size()), gs(student.size());
  std::vector<double> rows_float(rows), rows_half(rows), dtau_float(2), dtau(2);
  const double expected = float_loss.forward_backward(
      {student_float.data(), rows, cols, ld}, {teacher_float.data(), rows, cols, ld},
      lskd::row_weights<float>{weights.data()}, {gs_float.data(), rows, cols, ld}, {},
      rows_float.data(), dtau_float.data());
  const double got = half_loss.forward_backward(
      {student.data(), rows, cols, ld}, {teacher.data(), rows, cols, ld},
      lskd::row_weights<float>{weights.data()},
      lskd::matrix_view<float>(gs.data(), rows, cols, ld), {}, rows_half.data(), dtau.data());
  CHECK(got == expected);
  CHECK(rows_half == rows_float);
  CHECK(dtau == dtau_float);
  CHECK(gs == gs_float);
  CHECK(gs[static_cast<std::size_t>(ld + 3)] == 0.0f);
  CHECK(gs[static_cast<std::size_t>(2 * ld + 5)] == 0.0f);

  std::vector<Storage> gs16(student.size());
  half_loss.forward_backward({student.data(), rows, cols, ld}, {teacher.data(), rows, cols, ld},
                             lskd::row_weights<float>{weights.data()},
                             lskd::matrix_view<Storage>(gs16.data(), rows, cols, ld));
  for (lskd::index r = 0; r < rows; ++r) {
    for (lskd::index c = 0; c < cols; ++c) {
      const auto i = static_cast<std::size_t>(r * ld + c);
      INFO("row " << r << ", class " << c);
      CHECK(gs16[i] == static_cast<Storage>(gs_float[i]));
    }
  }
}

TEST_CASE("16-bit multi-temperature KD: bad input is refused and nothing is written",
          "[half][multi_temperature][errors]") {
  using Storage = Eigen::bfloat16;
  const lskd::index rows = 3, cols = 10;
  auto student = rounded<Storage>(random_rows<float>(111, rows * cols));
  auto teacher = rounded<Storage>(random_rows<float>(112, rows * cols));
  lskd::multi_temperature_kd_options o;
  o.temperatures = {1.0, 3.0};
  const lskd::half_precision_multi_temperature_kd_loss<Storage> loss(o);
  std::vector<float> gs(student.size(), 3.0f), gt(student.size(), 3.0f);
  std::vector<Storage> gs16(student.size(), Storage(7.0f));
  std::vector<double> row_losses(rows, -1.0), dtau(2, -2.0);
  const auto untouched = [&] {
    return std::all_of(gs.begin(), gs.end(), [](float g) { return g == 3.0f; }) &&
           std::all_of(gt.begin(), gt.end(), [](float g) { return g == 3.0f; }) &&
           std::all_of(gs16.begin(), gs16.end(),
                       [](Storage g) { return static_cast<float>(g) == 7.0f; }) &&
           std::all_of(row_losses.begin(), row_losses.end(), [](double l) { return l == -1.0; }) &&
           std::all_of(dtau.begin(), dtau.end(), [](double d) { return d == -2.0; });
  };

  // NaN in the last row of the teacher: every row is checked before anything is written.
  teacher[static_cast<std::size_t>(2 * cols + 4)] =
      Storage(std::numeric_limits<float>::quiet_NaN());
  CHECK_THROWS_WITH(loss.forward_backward({student.data(), rows, cols},
                                          {teacher.data(), rows, cols}, {gs.data(), rows, cols},
                                          {gt.data(), rows, cols}, row_losses.data(), dtau.data()),
                    Catch::Contains("row 2") && Catch::Contains("NaN") &&
                        Catch::Contains("teacher"));
  CHECK_THROWS_AS(loss.forward_backward({student.data(), rows, cols},
                                        {teacher.data(), rows, cols}, {gs16.data(), rows, cols},
                                        {}, row_losses.data(), dtau.data()),
                  std::domain_error);
  CHECK(untouched());
  teacher[static_cast<std::size_t>(2 * cols + 4)] = Storage(0.25f);

  // Wrong shapes, naming the argument.
  CHECK_THROWS_WITH(loss.forward_backward({student.data(), rows, cols},
                                          {teacher.data(), rows, cols - 1},
                                          {gs.data(), rows, cols}),
                    Catch::Contains("'teacher'") && Catch::Contains("classes"));
  CHECK_THROWS_WITH(loss.forward_backward({student.data(), rows, cols},
                                          {teacher.data(), rows, cols},
                                          {gs.data(), rows - 1, cols}),
                    Catch::Contains("'grad_student'") && Catch::Contains("rows"));
  CHECK_THROWS_WITH(loss.forward({student.data(), rows, cols, cols - 1},
                                 {teacher.data(), rows, cols}),
                    Catch::Contains("'student'") && Catch::Contains("leading dimension"));
  CHECK(untouched());

  // Overlapping outputs: a float gradient over the 16-bit logits, a 16-bit gradient shifted by
  // one element from its logits, a teacher gradient over the student gradient.
  CHECK_THROWS_WITH(loss.forward_backward({student.data(), rows, cols},
                                          {teacher.data(), rows, cols},
                                          lskd::matrix_view<float>(
                                              reinterpret_cast<float*>(student.data()), rows,
                                              cols)),
                    Catch::Contains("'grad_student' overlaps 'student'"));
  auto shifted = student;
  shifted.push_back(Storage(0.0f));
  CHECK_THROWS_WITH(loss.forward_backward({shifted.data(), rows, cols},
                                          {teacher.data(), rows, cols},
                                          lskd::matrix_view<Storage>(shifted.data() + 1, rows,
                                                                     cols)),
                    Catch::Contains("'grad_student' overlaps 'student'"));
  CHECK_THROWS_WITH(loss.forward_backward({student.data(), rows, cols},
                                          {teacher.data(), rows, cols}, {gs.data(), rows, cols},
                                          {gs.data(), rows, cols}),
                    Catch::Contains("'grad_teacher' overlaps 'grad_student'"));
  CHECK_THROWS_WITH(loss.forward_backward({student.data(), rows, cols},
                                          {teacher.data(), rows, cols}, {gs.data(), rows, cols},
                                          {}, reinterpret_cast<double*>(gs.data())),
                    Catch::Contains("'row_losses' overlaps 'grad_student'"));
  CHECK_THROWS_WITH(loss.forward_backward({student.data(), rows, cols},
                                          {teacher.data(), rows, cols},
                                          lskd::matrix_view<Storage>{}),
                    Catch::Contains("all empty"));
  CHECK(untouched());
  CHECK(shifted[0] == student[0]);
}

// The 16-bit losses did not check row weights or the temperature gradients for overlap (the
// float kd_loss did): row weights inside a gradient, or a temperature gradient inside any
// buffer, silently changed the caller's buffers. Now refused before anything is written.
TEST_CASE("16-bit losses: row weights and temperature gradients may not share memory with the "
          "buffers",
          "[half][errors]") {
  using Storage = Eigen::bfloat16;
  const lskd::index rows = 2, cols = 8, size = rows * cols;
  auto student = rounded<Storage>(random_rows<float>(121, size));
  const auto teacher = rounded<Storage>(random_rows<float>(122, size));
  const auto student_before = student;
  // Room for two doubles in the row weights, so that a refused write could not leave them.
  std::vector<float> grad(size, 3.0f), weights{1.0f, 0.5f, 0.0f, 0.0f};
  std::vector<Storage> grad16(size, Storage(7.0f));
  const std::vector<std::int64_t> targets{1, 6};
  const auto untouched = [&] {
    return grad == std::vector<float>(size, 3.0f) && student == student_before &&
           weights == std::vector<float>{1.0f, 0.5f, 0.0f, 0.0f} &&
           std::all_of(grad16.begin(), grad16.end(),
                       [](Storage g) { return static_cast<float>(g) == 7.0f; });
  };
  const lskd::matrix_view<const Storage> s(student.data(), rows, cols), t(teacher.data(), rows,
                                                                            cols);
  const lskd::matrix_view<float> gs(grad.data(), rows, cols);
  const lskd::matrix_view<Storage> gs16(grad16.data(), rows, cols);
  const lskd::row_weights<float> inside_gradient{grad.data() + 2};
  const lskd::row_weights<float> weighted{weights.data()};
  // Doubles inside the 16-bit logits, the 16-bit gradient and the float row weights.
  double* const in_student = reinterpret_cast<double*>(student.data() + 4);
  double* const in_gradient = reinterpret_cast<double*>(grad16.data() + 8);
  double* const in_weights = reinterpret_cast<double*>(weights.data());

  const lskd::half_precision_kd_loss<Storage> kd;
  CHECK_THROWS_WITH(kd.forward_backward(s, t, gs, {}, nullptr, nullptr, inside_gradient),
                    Catch::Contains("'grad_student' overlaps 'row_weights'"));
  CHECK_THROWS_WITH(kd.forward_backward(s, t, gs16, {}, nullptr, in_student),
                    Catch::Contains("'grad_temperature' overlaps 'student'"));
  CHECK_THROWS_WITH(kd.forward_backward(s, t, gs16, {}, nullptr, in_gradient),
                    Catch::Contains("'grad_temperature' overlaps 'grad_student'"));
  CHECK_THROWS_WITH(kd.forward_backward(s, t, gs, {}, nullptr, in_weights, weighted),
                    Catch::Contains("'grad_temperature' overlaps 'row_weights'"));
  CHECK(untouched());

  const lskd::half_precision_dkd_loss<Storage> dkd;
  CHECK_THROWS_WITH(dkd.forward_backward(s, t, targets.data(), gs, {}, nullptr, nullptr,
                                         inside_gradient),
                    Catch::Contains("'grad_student' overlaps 'row_weights'"));
  CHECK_THROWS_WITH(dkd.forward_backward(s, t, targets.data(), gs16, {}, nullptr, in_student),
                    Catch::Contains("'grad_temperature' overlaps 'student'"));
  CHECK_THROWS_WITH(dkd.forward_backward(s, t, targets.data(), gs16, {}, nullptr, in_gradient),
                    Catch::Contains("'grad_temperature' overlaps 'grad_student'"));
  CHECK_THROWS_WITH(dkd.forward_backward(s, t, targets.data(), gs, {}, nullptr, in_weights,
                                         weighted),
                    Catch::Contains("'grad_temperature' overlaps 'row_weights'"));
  CHECK(untouched());

  lskd::multi_temperature_kd_options o;
  o.temperatures = {1.0, 3.0};
  const lskd::half_precision_multi_temperature_kd_loss<Storage> multi(o);
  CHECK_THROWS_WITH(multi.forward_backward(s, t, inside_gradient, gs),
                    Catch::Contains("'grad_student' overlaps 'row_weights'"));
  CHECK_THROWS_WITH(multi.forward_backward(s, t, gs16, {}, nullptr, in_student),
                    Catch::Contains("'grad_temperatures' overlaps 'student'"));
  CHECK_THROWS_WITH(multi.forward_backward(s, t, gs16, {}, nullptr, in_gradient),
                    Catch::Contains("'grad_temperatures' overlaps 'grad_student'"));
  CHECK_THROWS_WITH(multi.forward_backward(s, t, weighted, gs, {}, nullptr, in_weights),
                    Catch::Contains("'grad_temperatures' overlaps 'row_weights'"));
  CHECK(untouched());
}

TEST_CASE("16-bit rows are widened and rounded exactly as Eigen converts one value",
          "[half][conversion]") {
  // Every half bit pattern, widened in one row (65536: the vector path and, below, a tail).
  std::vector<Eigen::half> every_half(65536 + 5);
  for (std::size_t i = 0; i < every_half.size(); ++i) {
    every_half[i] = Eigen::numext::bit_cast<Eigen::half>(static_cast<std::uint16_t>(i % 65536));
  }
  std::vector<float> wide(every_half.size());
  lskd::detail::widen_row(every_half.data(), wide.data(),
                          static_cast<lskd::index>(every_half.size()));
  lskd::index mismatches = 0;
  for (std::size_t i = 0; i < every_half.size(); ++i) {
    const float expected = static_cast<float>(every_half[i]);
    const bool same = std::isnan(expected)
                          ? std::isnan(wide[i])
                          : std::memcmp(&expected, &wide[i], sizeof expected) == 0;
    if (!same) ++mismatches;
  }
  CHECK(mismatches == 0);

  // Rounding to half: every finite half, the midpoints between neighbours (ties to even, both
  // ways), the floats just beside each midpoint, the overflow boundary, and random floats.
  std::vector<float> floats;
  for (std::uint32_t bits = 0; bits < 0x7c00; ++bits) {
    for (float sign : {1.0f, -1.0f}) {
      const float value =
          sign * static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(
                     static_cast<std::uint16_t>(bits)));
      const float next = sign * static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(
                                    static_cast<std::uint16_t>(bits + 1)));
      const float middle = value + (next - value) / 2;  // exact: one more bit than half has
      floats.insert(floats.end(), {value, middle, std::nextafter(middle, 0.0f),
                                   std::nextafter(middle, sign * 1e9f)});
    }
  }
  for (float x : {65504.0f, 65519.99f, 65520.0f, 1e9f, 5.9604645e-8f, 2.9802322e-8f,
                  2.9802326e-8f, 1e-30f, 0.0f}) {
    floats.push_back(x);
    floats.push_back(-x);
  }
  for (float x : random_rows<float>(201, 1003, 0.0, 100.0)) floats.push_back(x);
  std::vector<Eigen::half> narrow(floats.size());
  lskd::detail::narrow_row(floats.data(), narrow.data(), static_cast<lskd::index>(floats.size()));
  mismatches = 0;
  std::string first;
  for (std::size_t i = 0; i < floats.size(); ++i) {
    const auto expected =
        Eigen::numext::bit_cast<std::uint16_t>(static_cast<Eigen::half>(floats[i]));
    const auto actual = Eigen::numext::bit_cast<std::uint16_t>(narrow[i]);
    if (expected != actual && mismatches++ == 0) {
      first = show(floats[i]) + ": expected bits " + std::to_string(expected) + ", actual " +
              std::to_string(actual);
    }
  }
  INFO(floats.size() << " floats; first mismatch " << first);
  CHECK(mismatches == 0);
}

TEST_CASE("bfloat16 rows are rounded exactly as Eigen converts one value", "[half][conversion]") {
  // Every finite bfloat16 of either sign, the midpoints between neighbours (ties to even, both
  // ways), the floats just beside each midpoint, infinities, NaNs and random floats.
  std::vector<float> floats;
  for (std::uint32_t bits = 0; bits < 0x7f80; ++bits) {
    for (std::uint32_t sign : {0u, 0x80000000u}) {
      const std::uint32_t low = sign | (bits << 16);
      const std::uint32_t high = sign | ((bits + 1) << 16);
      float value, next;
      std::memcpy(&value, &low, sizeof value);
      std::memcpy(&next, &high, sizeof next);
      const float middle = value + (next - value) / 2;  // exact: one more bit than bfloat16
      floats.insert(floats.end(), {value, middle, std::nextafter(middle, value),
                                   std::nextafter(middle, next)});
    }
  }
  const float inf = std::numeric_limits<float>::infinity();
  for (float x : {inf, -inf, std::numeric_limits<float>::quiet_NaN(),
                  -std::numeric_limits<float>::quiet_NaN(),
                  std::numeric_limits<float>::signaling_NaN(), std::numeric_limits<float>::max(),
                  std::numeric_limits<float>::denorm_min()}) {
    floats.push_back(x);
  }
  for (float x : random_rows<float>(211, 1001, 0.0, 100.0)) floats.push_back(x);
  std::vector<Eigen::bfloat16> narrow(floats.size());
  lskd::detail::narrow_row(floats.data(), narrow.data(), static_cast<lskd::index>(floats.size()));
  lskd::index mismatches = 0;
  std::string first;
  for (std::size_t i = 0; i < floats.size(); ++i) {
    const auto expected =
        Eigen::numext::bit_cast<std::uint16_t>(static_cast<Eigen::bfloat16>(floats[i]));
    const auto actual = Eigen::numext::bit_cast<std::uint16_t>(narrow[i]);
    if (expected != actual && mismatches++ == 0) {
      first = show(floats[i]) + ": expected bits " + std::to_string(expected) + ", actual " +
              std::to_string(actual);
    }
  }
  INFO(floats.size() << " floats; first mismatch " << first);
  CHECK(mismatches == 0);
}
