// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// Row kernels of decoupled KD: the largest logit outside the target class, and the gradient
/// sweep over the non-target classes. The sums come from kd_exp_sweep run on the classes
/// before and after the target, so the target is left out exactly (no large negative offset).

#include <lskd/config.hpp>
#include <lskd/detail/masked_rows.hpp>
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

/// The teacher's gradient element of DKD (kd_grad_sweep finds it by the coefficients' type).
template <class P, class T>
inline P teacher_gradient(const P& et, const P& ut, const P& us, const dkd_teacher_coeffs<T>& c) {
  return mul_add(et, mul_add(P(c.p), ut - us, P(c.q)), -mul_add(P(c.h), ut, P(c.i)));
}

/// Writes the student and/or teacher gradient of DKD over n non-target classes from the stored
/// exponentials: kd_grad_sweep with DKD's teacher coefficients (the student's has KD's form).
template <class T, class Arch, bool Student, bool Teacher, bool Masked = false>
inline void dkd_grad_sweep(const T* student, const T* teacher, const T* student_exps,
                           const T* teacher_exps, index n, const affine<T>& student_map,
                           const affine<T>& teacher_map, const student_grad_coeffs<T>& sc,
                           const dkd_teacher_coeffs<T>& tc, T* grad_student, T* grad_teacher) {
  kd_grad_sweep<T, Arch, Student, Teacher, Masked, dkd_teacher_coeffs<T>>(
      student, teacher, student_exps, teacher_exps, n, student_map, teacher_map, sc, tc,
      grad_student, grad_teacher);
}

}  // namespace detail
LSKD_NAMESPACE_END
