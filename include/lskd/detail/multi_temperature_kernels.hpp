// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// The gradient pass of multi-temperature KD: each temperature adds its part of the gradient
/// into the output row, from the exponentials its own exp sweep stored.

#include <lskd/config.hpp>
#include <lskd/detail/row_kernels.hpp>

LSKD_NAMESPACE_BEGIN
namespace detail {

/// One temperature's contribution, with u the exponent arguments at that temperature and
/// u0 those at temperature 1 (the Z-score minus a constant offset, shared by all temperatures):
///   dx (+)= a es - b et - (d u0 + e),    dv (+)= f et (ut - us + g) - (h ut0 + i).
/// `First` writes instead of adding, so the output need not be initialized.
template <class T, class Arch, bool Student, bool Teacher, bool First>
inline void multi_temperature_grad_pass(const T* student, const T* teacher, const T* student_exps,
                                        const T* teacher_exps, index n,
                                        const affine<T>& student_map, const affine<T>& teacher_map,
                                        const affine<T>& student_base, const affine<T>& teacher_base,
                                        const student_grad_coeffs<T>& sc,
                                        const teacher_grad_coeffs<T>& tc, T* grad_student,
                                        T* grad_teacher) {
  for_each_pack<T, Arch>(n, [&](auto tag, index i) {
    using P = typename decltype(tag)::type;
    const P x = load_pack<P>(student + i);
    const P et = load_pack<P>(teacher_exps + i);
    if constexpr (Student) {
      const P es = load_pack<P>(student_exps + i);
      const P u0 = exponent_of(x, student_base);
      P dx = mul_add(P(sc.a), es, -mul_add(P(sc.b), et, mul_add(P(sc.d), u0, P(sc.e))));
      if constexpr (!First) dx += load_pack<P>(grad_student + i);
      store_pack(grad_student + i, dx);
    }
    if constexpr (Teacher) {
      const P v = load_pack<P>(teacher + i);
      const P us = exponent_of(x, student_map);
      const P ut = exponent_of(v, teacher_map);
      const P ut0 = exponent_of(v, teacher_base);
      P dv = mul_add(et * P(tc.f), ut - us + P(tc.g), -mul_add(P(tc.h), ut0, P(tc.i)));
      if constexpr (!First) dv += load_pack<P>(grad_teacher + i);
      store_pack(grad_teacher + i, dv);
    }
  });
}

}  // namespace detail
LSKD_NAMESPACE_END
