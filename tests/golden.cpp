// SPDX-License-Identifier: MIT
// kd_loss against tests/data/golden_kd.txt (PyTorch float64 autograd on the authors' formula),
// for float and double, SIMD and scalar, through forward, forward_backward with both gradients
// and forward_backward with the student's gradient alone.
//
// Tolerance. Every value is compared as |actual - expected| <= k * scale + floor, where `scale`
// is the magnitude of the terms that cancel into that value (lskd_test::reference_kd explains
// it; for an ordinary entry it is about the row's largest gradient entry, for an entry that is
// a small difference of large terms, such as the gradients of a 2-class standardized row,
// which are exactly 0 but for eps, it is the size of those terms), and floor is the smallest
// normal number of T (values below it are subnormal and carry no relative precision).
//   double: k = 1e-13. lskd itself stays within 6e-15 of the long-double reference; the
//     largest gap to torch, 1.6e-14, is torch's own error on rows like -3e4 + N(0, 2), whose
//     mean it subtracts in float64 with an error of u * 3e4.
//   float: k = 1e-6 (about 17 units of float roundoff). The largest gap seen is 1.1e-7.

#include "golden_data.hpp"
#include "test_support.hpp"

#include <set>

namespace lskd_test {
namespace {

/// In `underflow_1x2` (student [0, -700], teacher [50, -50], T = 1) torch rounds
/// log p_t = log(1 / (1 + e^-100)) to 0 and 1 + e^-100 to 1, so it loses terms of size e^-100
/// next to terms of size 1: its teacher gradient at class 0 is 0 instead of -600 e^-100. There
/// the comparison with torch is absolute, at the size of those order-1 terms. (cases.cpp
/// checks this input tightly against its analytic value.)
wide torch_floor(const golden_case& g, wide k) {
  return g.name == "underflow_1x2" ? k : 0;
}

const char* to_string(kd_call c) {
  switch (c) {
    case kd_call::forward: return "forward";
    case kd_call::both_gradients: return "forward_backward with both gradients";
    case kd_call::student_gradient: return "forward_backward with grad_student only";
  }
  return "?";
}

template <class T, class Arch>
kd_outputs<T> run_golden(const golden_case& g, kd_call c) {
  return run_kd<T, Arch>(g.options, converted<T>(g.student), converted<T>(g.teacher), g.rows,
                         g.cols, c);
}

/// Compares a gradient with torch's. A NaN in torch's gradient (only the teacher's, in the
/// huge_1e4_*_nostd_* cases) is "expected about 0": there the teacher's softmax underflows to
/// exact zeros, and torch's kl_div backward gives NaN for a zero target, while the exact
/// gradient is below 1e-60 (p_t of a class is e^-(gap / T), the teacher's logits being
/// thousands apart). lskd must give a finite value no larger than 1e-30 times the row's
/// gradient scale; the test against the long-double reference below checks these entries to
/// the usual tolerance.
template <class V>
void check_gradient_against_torch(const std::string& what, const golden_case& g,
                                  const V& actual, const std::vector<double>& expected,
                                  const std::vector<wide>& scale,
                                  const std::vector<wide>& row_scale_source, wide k,
                                  wide floor) {
  closeness comparison(what);
  closeness nan_entries(what + " where torch gives NaN (expected about 0)");
  for (index r = 0; r < g.rows; ++r) {
    const auto begin = static_cast<std::size_t>(r * g.cols);
    const auto end = begin + static_cast<std::size_t>(g.cols);
    const wide row_scale = max_abs(row_scale_source, begin, end);
    for (std::size_t j = begin; j < end; ++j) {
      if (std::isnan(expected[j])) {
        nan_entries.add(static_cast<index>(j), 0, static_cast<wide>(actual[j]), 1e-30 * row_scale);
      } else {
        comparison.add(static_cast<index>(j), expected[j], static_cast<wide>(actual[j]),
                       k * scale[j] + floor + torch_floor(g, k));
      }
    }
  }
  // (Torch's teacher gradients in the huge_1e4 cases are NaN throughout.)
  if (comparison.count() > 0) LSKD_CHECK_CLOSE(comparison);
  if (nan_entries.count() > 0) LSKD_CHECK_CLOSE(nan_entries);
}

template <class T, class Arch>
void check_against_torch(const golden_case& g, kd_call c) {
  INFO("golden case " << g.name << " (" << g.rows << " x " << g.cols << "; "
                      << describe(g.options) << "), " << to_string(c) << ", "
                      << lskd::simd::arch_name<Arch>());
  const wide k = tolerance_factor<T>();
  const wide floor = underflow_floor<T>();
  const reference_kd ref =
      reference_kd_loss(g.student.data(), g.teacher.data(), g.rows, g.cols, g.options);
  const kd_outputs<T> out = run_golden<T, Arch>(g, c);

  // The loss, and the per-row losses: torch's for reduction none, else the long-double
  // reference's (which agrees with torch, see the test below).
  const bool none = g.options.reduction == lskd::reduction::none;
  wide expected_loss = g.loss[0];
  if (none) {
    expected_loss = 0;
    for (double row : g.loss) expected_loss += row;
  }
  LSKD_CHECK_NEAR(expected_loss, out.loss, k * ref.loss_scale + floor + torch_floor(g, k));
  closeness rows("row_losses");
  for (index r = 0; r < g.rows; ++r) {
    const auto i = static_cast<std::size_t>(r);
    rows.add(r, none ? g.loss[i] : ref.row_losses[i], out.row_losses[i],
             k * ref.row_loss_scale[i] + floor + torch_floor(g, k));
  }
  LSKD_CHECK_CLOSE(rows);

  if (c == kd_call::forward) return;
  check_gradient_against_torch("grad_student", g, out.grad_student, g.grad_student,
                               ref.grad_student_scale, ref.grad_student_scale, k, floor);
  if (c == kd_call::both_gradients) {
    check_gradient_against_torch("grad_teacher", g, out.grad_teacher, g.grad_teacher,
                                 ref.grad_teacher_scale, ref.grad_student_scale, k, floor);
  } else {
    // The teacher's gradient was not asked for: its buffer was not passed and is untouched.
    CHECK(bitwise_equal(out.grad_teacher,
                        std::vector<T>(out.grad_teacher.size(), padded_matrix<T>::sentinel())));
  }
}

}  // namespace

TEST_CASE("golden_kd.txt parses into the documented cases", "[golden]") {
  const std::vector<golden_case>& cases = golden_cases();
  CHECK(cases.size() >= 38);
  std::set<std::string> names;
  for (const golden_case& g : cases) {
    INFO("golden case " << g.name);
    CHECK(names.insert(g.name).second);
    // Every input is a float, so the float tests see the same numbers.
    CHECK(converted<double>(converted<float>(g.student)) == g.student);
    CHECK(converted<double>(converted<float>(g.teacher)) == g.teacher);
  }
  for (const char* name : {"const_rows_4x9_std", "huge_1e4_4x20_nostd_T1", "underflow_1x2",
                           "swap_check_1x3", "vocab_1x32000_std", "reduction_pin_2x3_none"}) {
    CHECK_NOTHROW(golden_case_named(name));
  }
}

TEST_CASE("the long-double reference of the tests agrees with the PyTorch golden values",
          "[golden][reference]") {
  // The other test files trust lskd_test::reference_kd_loss; here it meets torch, with the
  // double tolerance (k = 1e-13 of the term scale).
  const wide k = tolerance_factor<double>();
  const wide floor = underflow_floor<double>();
  for (const golden_case& g : golden_cases()) {
    INFO("golden case " << g.name);
    const reference_kd ref =
        reference_kd_loss(g.student.data(), g.teacher.data(), g.rows, g.cols, g.options);
    wide expected_loss = 0;
    for (double row : g.loss) expected_loss += row;
    if (g.options.reduction == lskd::reduction::none) {
      closeness rows("reference row losses");
      for (std::size_t r = 0; r < g.loss.size(); ++r) {
        rows.add(static_cast<index>(r), g.loss[r], ref.row_losses[r],
                 k * ref.row_loss_scale[r] + floor + torch_floor(g, k));
      }
      LSKD_CHECK_CLOSE(rows);
    }
    LSKD_CHECK_NEAR(expected_loss, ref.loss, k * ref.loss_scale + floor + torch_floor(g, k));
    check_gradient_against_torch("reference grad_student", g, ref.grad_student, g.grad_student,
                                 ref.grad_student_scale, ref.grad_student_scale, k, floor);
    check_gradient_against_torch("reference grad_teacher", g, ref.grad_teacher, g.grad_teacher,
                                 ref.grad_teacher_scale, ref.grad_student_scale, k, floor);
  }
}

TEMPLATE_TEST_CASE("kd_loss matches the PyTorch golden values", "[golden][kd_loss]", float_simd,
                   float_scalar, double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  SECTION("forward_backward with both gradients") {
    for (const golden_case& g : golden_cases()) {
      check_against_torch<T, Arch>(g, kd_call::both_gradients);
    }
  }
  SECTION("forward alone") {
    for (const golden_case& g : golden_cases()) check_against_torch<T, Arch>(g, kd_call::forward);
  }
  SECTION("forward_backward with grad_student only") {
    for (const golden_case& g : golden_cases()) {
      check_against_torch<T, Arch>(g, kd_call::student_gradient);
    }
  }
}

TEMPLATE_TEST_CASE("kd_loss matches the long-double reference on the golden inputs",
                   "[golden][kd_loss][reference]", float_simd, float_scalar, double_simd,
                   double_scalar) {
  // Here the expected values are exact to long double everywhere, including the teacher
  // gradients torch gives as NaN and the e^-100 terms torch drops.
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  for (const golden_case& g : golden_cases()) {
    INFO("golden case " << g.name << ", " << lskd::simd::arch_name<Arch>());
    const reference_kd ref =
        reference_kd_loss(g.student.data(), g.teacher.data(), g.rows, g.cols, g.options);
    check_kd_against_reference(ref, run_golden<T, Arch>(g, kd_call::both_gradients));
  }
}

}  // namespace lskd_test
