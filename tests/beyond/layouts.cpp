// SPDX-License-Identifier: MIT
// DKD and multi-temperature KD across row lengths around the vector width, targets at the
// ends and the middle, misaligned starts with padded leading dimensions, and thread counts:
// every layout gives the double scalar reference's values.

#include "beyond_support.hpp"

#include <lskd/dkd_loss.hpp>
#include <lskd/multi_temperature_kd_loss.hpp>

#include <thread>

using namespace beyond_test;

namespace {

/// rows x cols values at offset 1 in a buffer with leading dimension cols + 3 (so no row
/// starts aligned), padding NaN so that a read past a row shows.
template <class T>
struct padded {
  lskd::index rows, cols, ld;
  std::vector<T> buffer;
  padded(const std::vector<double>& values, lskd::index r, lskd::index c)
      : rows(r), cols(c), ld(c + 3),
        buffer(static_cast<std::size_t>(r * (c + 3) + 1), std::numeric_limits<T>::quiet_NaN()) {
    for (lskd::index i = 0; i < r; ++i) {
      for (lskd::index j = 0; j < c; ++j) {
        at(i, j) = static_cast<T>(values[static_cast<std::size_t>(i * c + j)]);
      }
    }
  }
  T& at(lskd::index r, lskd::index c) { return buffer[static_cast<std::size_t>(1 + r * ld + c)]; }
  lskd::matrix_view<T> view() { return {buffer.data() + 1, rows, cols, ld}; }
  lskd::matrix_view<const T> cview() const { return {buffer.data() + 1, rows, cols, ld}; }
};

/// An execution that runs the row ranges on two std::threads.
lskd::execution two_threads() {
  lskd::execution how;
  how.parallel_for = [](std::ptrdiff_t count,
                        const std::function<void(std::ptrdiff_t, std::ptrdiff_t)>& body) {
    std::thread other([&] { body(count / 2, count); });
    body(0, count / 2);
    other.join();
  };
  return how;
}

}  // namespace

TEMPLATE_TEST_CASE("dkd_loss: every row length, target position and layout", "[dkd][layout]",
                   float_simd, double_simd) {
  using T = typename TestType::value_type;
  const bool is_float = std::is_same<T, float>::value;
  const bool standardize = GENERATE(false, true);
  for (lskd::index cols : {2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 129}) {
    // Two standardized classes have Z-scores +-1/sqrt(2) whatever the logits: the gradient is
    // an eps-sized effect under the float roundoff of the Z-score (dkd.cpp tests that case).
    if (standardize && cols == 2) continue;
    const lskd::index rows = 3;
    const auto student = random_rows<double>(200u + static_cast<unsigned>(cols), rows * cols);
    const auto teacher = random_rows<double>(300u + static_cast<unsigned>(cols), rows * cols);
    // Targets at the first, a middle and the last class; the first row's target is its max.
    std::vector<std::int64_t> targets{0, cols / 2, cols - 1};
    auto student_max = student;
    student_max[0] = 4.0;
    lskd::dkd_options o;
    o.standardize = standardize;
    o.temperature = 2.0;

    std::vector<double> ref_gs(student.size()), ref_gt(student.size());
    double ref_dtau = 0;
    const double ref = lskd::dkd_loss<double, lskd::simd::scalar>(o).forward_backward(
        {student_max.data(), rows, cols}, {teacher.data(), rows, cols}, targets.data(),
        {ref_gs.data(), rows, cols}, {ref_gt.data(), rows, cols}, nullptr, &ref_dtau);

    const padded<T> s(student_max, rows, cols);
    const padded<T> t(teacher, rows, cols);
    padded<T> gs(std::vector<double>(student.size(), 0.0), rows, cols);
    padded<T> gt(std::vector<double>(student.size(), 0.0), rows, cols);
    double dtau = 0;
    const double got = lskd::dkd_loss<T>(o, two_threads())
                           .forward_backward(s.cview(), t.cview(), targets.data(), gs.view(),
                                             gt.view(), nullptr, &dtau);
    INFO("cols " << cols << ", standardize " << standardize);
    const double tolerance = is_float ? 2e-5 : 1e-12;
    CHECK(got == Approx(ref).epsilon(tolerance));
    CHECK(dtau == Approx(ref_dtau).epsilon(tolerance).margin(tolerance));
    double scale = 0;
    for (std::size_t i = 0; i < ref_gs.size(); ++i) {
      scale = std::max({scale, std::fabs(ref_gs[i]), std::fabs(ref_gt[i])});
    }
    closeness student_check("grad_student");
    closeness teacher_check("grad_teacher");
    for (lskd::index r = 0; r < rows; ++r) {
      for (lskd::index c = 0; c < cols; ++c) {
        const auto i = static_cast<std::size_t>(r * cols + c);
        student_check.add(static_cast<lskd::index>(i), ref_gs[i], gs.at(r, c),
                          (is_float ? 3e-5 : 1e-11) * scale);
        teacher_check.add(static_cast<lskd::index>(i), ref_gt[i], gt.at(r, c),
                          (is_float ? 3e-5 : 1e-11) * scale);
      }
      // The padding between rows is untouched.
      CHECK(std::isnan(gs.at(r, cols)));
    }
    student_check.check();
    teacher_check.check();
  }
}

TEMPLATE_TEST_CASE("multi_temperature_kd_loss: every row length and layout",
                   "[multi_temperature][layout]", float_simd, double_simd) {
  using T = typename TestType::value_type;
  const bool is_float = std::is_same<T, float>::value;
  // From 3 classes: see the note on two standardized classes above.
  for (lskd::index cols : {3, 7, 8, 9, 16, 17, 33, 64, 65}) {
    const lskd::index rows = 4;
    const auto student = random_rows<double>(400u + static_cast<unsigned>(cols), rows * cols);
    const auto teacher = random_rows<double>(500u + static_cast<unsigned>(cols), rows * cols);
    lskd::multi_temperature_kd_options o;
    o.temperatures = {1.0, 2.5, 4.0};
    std::vector<double> ref_gs(student.size()), ref_gt(student.size()), ref_dtau(3);
    const double ref = lskd::multi_temperature_kd_loss<double, lskd::simd::scalar>(o)
                           .forward_backward({student.data(), rows, cols},
                                             {teacher.data(), rows, cols},
                                             {ref_gs.data(), rows, cols},
                                             {ref_gt.data(), rows, cols}, nullptr,
                                             ref_dtau.data());
    const padded<T> s(student, rows, cols);
    const padded<T> t(teacher, rows, cols);
    padded<T> gs(std::vector<double>(student.size(), 0.0), rows, cols);
    padded<T> gt(std::vector<double>(student.size(), 0.0), rows, cols);
    std::vector<double> dtau(3);
    const double got = lskd::multi_temperature_kd_loss<T>(o, two_threads())
                           .forward_backward(s.cview(), t.cview(), gs.view(), gt.view(),
                                             nullptr, dtau.data());
    INFO("cols " << cols);
    const double tolerance = is_float ? 2e-5 : 1e-12;
    CHECK(got == Approx(ref).epsilon(tolerance));
    for (std::size_t k = 0; k < 3; ++k) {
      CHECK(dtau[k] == Approx(ref_dtau[k]).epsilon(tolerance).margin(tolerance));
    }
    double scale = 0;
    for (std::size_t i = 0; i < ref_gs.size(); ++i) {
      scale = std::max({scale, std::fabs(ref_gs[i]), std::fabs(ref_gt[i])});
    }
    closeness student_check("grad_student");
    closeness teacher_check("grad_teacher");
    for (lskd::index r = 0; r < rows; ++r) {
      for (lskd::index c = 0; c < cols; ++c) {
        const auto i = static_cast<std::size_t>(r * cols + c);
        student_check.add(static_cast<lskd::index>(i), ref_gs[i], gs.at(r, c),
                          (is_float ? 3e-5 : 1e-11) * scale);
        teacher_check.add(static_cast<lskd::index>(i), ref_gt[i], gt.at(r, c),
                          (is_float ? 3e-5 : 1e-11) * scale);
      }
      CHECK(std::isnan(gs.at(r, cols)));
    }
    student_check.check();
    teacher_check.check();
  }
}
