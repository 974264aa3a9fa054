// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// Row kernels of decoupled KD: the largest logit outside the target class, and the gradient
/// sweep over the non-target classes. The sums come from kd_exp_sweep run on the classes
/// before and after the target, so the target is left out exactly (no large negative offset).

#include <lskd/config.hpp>
#include <lskd/detail/row_kernels.hpp>

#include <cmath>
#include <limits>
#include <string>

LSKD_NAMESPACE_BEGIN
namespace detail {

/// The largest element of x over every index but `target`; `row_max` is the largest over all.
/// Requires n >= 2. Reads the row again only when the target holds the row's maximum.
template <class T, class Arch>
inline T max_except(const T* x, index n, index target, T row_max) {
  if (x[target] < row_max) return row_max;
  T high = -std::numeric_limits<T>::infinity();
  if (target > 0) high = scan_row<T, Arch>(x, target).max;
  if (target + 1 < n) high = max_of(high, scan_row<T, Arch>(x + target + 1, n - target - 1).max);
  return high;
}

/// Teacher gradient of DKD over the non-target classes: dv = et * (p * (ut - us) + q) -
/// (h * ut + i).
template <class T>
struct dkd_teacher_coeffs {
  T p, q, h, i;
};

/// Writes the student and/or teacher gradient of DKD over n non-target classes from the stored
/// exponentials; the student's has the form of kd_grad_sweep's. Reads every input element
/// before writing the same index, so a gradient may replace its own logits. With `Masked`,
/// classes whose student logit is -inf (masked in both) get exactly 0.
template <class T, class Arch, bool Student, bool Teacher, bool Masked = false>
inline void dkd_grad_sweep(const T* student, const T* teacher, const T* student_exps,
                           const T* teacher_exps, index n, const affine<T>& student_map,
                           const affine<T>& teacher_map, const student_grad_coeffs<T>& sc,
                           const dkd_teacher_coeffs<T>& tc, T* grad_student, T* grad_teacher) {
  for_each_pack<T, Arch>(n, [&](auto tag, index i) {
    using P = typename decltype(tag)::type;
    const P x = load_pack<P>(student + i);
    const P us = exponent_of(x, student_map);
    const P et = load_pack<P>(teacher_exps + i);
    const auto finish = [&](const P& gradient) {
      if constexpr (Masked) {
        return unless_masked(x, gradient);
      } else {
        return gradient;
      }
    };
    if constexpr (Teacher) {
      const P ut = exponent_of(load_pack<P>(teacher + i), teacher_map);
      const P dv = mul_add(et, mul_add(P(tc.p), ut - us, P(tc.q)), -mul_add(P(tc.h), ut, P(tc.i)));
      if constexpr (Student) {
        const P es = load_pack<P>(student_exps + i);
        store_pack(grad_student + i, finish(mul_add(P(sc.a), es,
                                                    -mul_add(P(sc.b), et,
                                                             mul_add(P(sc.d), us, P(sc.e))))));
      }
      store_pack(grad_teacher + i, finish(dv));
    } else {
      const P es = load_pack<P>(student_exps + i);
      store_pack(grad_student + i,
                 finish(mul_add(P(sc.a), es, -mul_add(P(sc.b), et, mul_add(P(sc.d), us, P(sc.e))))));
    }
  });
}

/// A row with a non-finite value: a class that is -inf in both teacher and student is masked
/// (it takes no part in the statistics or the softmax); anything else is a std::domain_error
/// naming the row, the class and whose logit it is. Sets min, max and usable over the other
/// classes. (The rule of lskd::kd_loss.)
template <class T>
inline void classify_masked_row(const char* function, const T* student, const T* teacher,
                                index n, index row, row_scan<T>& student_scan,
                                row_scan<T>& teacher_scan) {
  const T infinity = std::numeric_limits<T>::infinity();
  index usable = 0;
  T student_min = infinity, student_max = -infinity;
  T teacher_min = infinity, teacher_max = -infinity;
  for (index c = 0; c < n; ++c) {
    const T x = student[c];
    const T v = teacher[c];
    if (x == -infinity && v == -infinity) continue;
    if (!std::isfinite(x) || !std::isfinite(v)) {
      const bool student_bad = !std::isfinite(x);
      const T bad = student_bad ? x : v;
      const char* kind = std::isnan(bad) ? "NaN" : (bad > 0 ? "+inf" : "-inf");
      std::string message = std::string(student_bad ? "student" : "teacher") + " logits row " +
                            std::to_string(row) + " has a non-finite value (" + kind +
                            ") at class " + std::to_string(c);
      if (bad == -infinity) {
        message += "; a class is masked only when it is -inf in both the teacher and the "
                   "student";
      }
      throw_domain(function, message);
    }
    ++usable;
    student_min = min_of(student_min, x);
    student_max = max_of(student_max, x);
    teacher_min = min_of(teacher_min, v);
    teacher_max = max_of(teacher_max, v);
  }
  student_scan = {student_min, student_max, true, usable};
  teacher_scan = {teacher_min, teacher_max, true, usable};
}

}  // namespace detail
LSKD_NAMESPACE_END
