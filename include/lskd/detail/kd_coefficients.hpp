// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// The per-row scalars of the KD loss and its gradients, from the sums of the exp sweep
/// (docs/math.md). Shared by kd_loss, which sums whole rows, and vocab_parallel_kd_loss, which
/// adds the sums of several shards first.

#include <lskd/config.hpp>
#include <lskd/detail/row_driver.hpp>
#include <lskd/detail/row_kernels.hpp>

#include <cmath>

LSKD_NAMESPACE_BEGIN
namespace detail {

/// log Zs - log Zt as one logarithm: both sums are >= 1 (each row's max adds exp(0)), so the
/// quotient's rounding costs less than the two logarithms' own, and one log is cheaper.
inline double log_ratio(double zs, double zt) { return std::log(zs / zt); }

/// KL(p_t || p_s) from the exp sweep: with u <= 0 shifted by each row's max,
/// KL = sum et (ut - us) / Zt + log Zs - log Zt.
inline double kl_from_sums(double zs, double zt, double k) { return k / zt + log_ratio(zs, zt); }

/// Student: g_j = (f / tau)(p_s,j - p_t,j) is the gradient at the Z-score; through the mean and
/// std, dx_j = g_j / (std + eps) - z_j (g . z) / ((n - ddof) std), where
/// g . z = f (Ms / Zs - Mt / Zt) and z_j = tau us_j + offset. So dx = a es - b et - (d us + e).
template <class T>
inline student_grad_coeffs<T> student_coefficients(double zs, double zt, double ms, double mt,
                                                   const row_standardization<T>& s,
                                                   bool standardize, double tau, double factor,
                                                   double weight, double degrees) {
  const double through_std = factor * (ms / zs - mt / zt);
  const double std_term =
      standardize && s.std > 0.0 ? weight * through_std / (degrees * s.std) : 0.0;
  const double softmax_scale = weight * factor / (tau * s.divisor);
  return {static_cast<T>(softmax_scale / zs), static_cast<T>(softmax_scale / zt),
          static_cast<T>(std_term * tau), static_cast<T>(std_term * s.offset)};
}

/// Teacher: h_j = (f / tau) p_t,j (d_j - KL), with d_j = ut_j - us_j + dlog, and
/// h . v^ = f (Pt / Zt + (dlog - KL) Nt / Zt), the path through the teacher's std.
inline double teacher_through_std(double zs, double zt, double kl, double nt, double pt,
                                  double factor) {
  const double dlog = log_ratio(zs, zt);
  return factor * (pt / zt + (dlog - kl) * nt / zt);
}

/// dv = f et (ut - us + g) - (h ut + i).
template <class T>
inline teacher_grad_coeffs<T> teacher_coefficients(double zs, double zt, double kl,
                                                   double through_std,
                                                   const row_standardization<T>& t,
                                                   bool standardize, double tau, double factor,
                                                   double weight, double degrees) {
  const double dlog = log_ratio(zs, zt);
  const double std_term =
      standardize && t.std > 0.0 ? weight * through_std / (degrees * t.std) : 0.0;
  return {static_cast<T>(weight * factor / (tau * t.divisor * zt)), static_cast<T>(dlog - kl),
          static_cast<T>(std_term * tau), static_cast<T>(std_term * t.offset)};
}

}  // namespace detail
LSKD_NAMESPACE_END
