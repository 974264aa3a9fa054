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

}  // namespace detail
LSKD_NAMESPACE_END
