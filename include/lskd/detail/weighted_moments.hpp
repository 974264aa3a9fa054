// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// The weighted Z-score: per-class weights c_j >= 0 for a row's mean and variance,
/// mean = sum c x / W, var = sum c (x - mean)^2 / W with W = sum c (frequency weights with
/// ddof 0: all-ones weights give the unweighted ddof-0 statistics), and the per-class path of
/// the gradient through them.

#include <lskd/config.hpp>
#include <lskd/detail/row_driver.hpp>
#include <lskd/detail/row_kernels.hpp>
#include <lskd/views.hpp>

#include <cmath>
#include <string>
#include <vector>

LSKD_NAMESPACE_BEGIN
namespace detail {

/// `value` where x is usable and 0 where it is -inf, only when masking; `value` otherwise (so
/// that 0 * inf never appears in a masked row's sums).
template <bool Masked, class P>
inline P unless_masked_value(const P& x, const P& value) {
  if constexpr (Masked) {
    return unless_masked(x, value);
  } else {
    (void)x;
    return value;
  }
}

/// Weighted mean and std of a row, in double, and the total weight of its usable classes.
struct weighted_row_moments {
  double mean;
  double std;
  double total_weight;
};

/// Corrected two-pass weighted moments of a row scaled by `scale` (a power of two): pass one
/// sums c x and c, pass two the weighted deviations c d and c d^2 from that mean, and
/// var = (sum c d^2 - (sum c d)^2 / W) / W. With `Masked`, -inf elements are left out (their
/// weight too). The caller guarantees W > 0.
template <class T, class Arch, bool Masked = false>
inline weighted_row_moments weighted_moments_row(const T* x, const T* weights, index n, T scale) {
  const auto first = sum_sweep<T, Arch, 2>(n, [&](auto tag, index i, auto& acc) {
    using P = typename decltype(tag)::type;
    const P values = load_pack<P>(x + i);
    P c = load_pack<P>(weights + i);
    if constexpr (Masked) c = unless_masked(values, c);
    acc[0] += c * unless_masked_value<Masked>(values, values * P(scale));
    acc[1] += c;
  });
  const double total = first[1];
  const double first_mean = first[0] / total;

  const T center = static_cast<T>(first_mean);
  const auto second = sum_sweep<T, Arch, 2>(n, [&](auto tag, index i, auto& acc) {
    using P = typename decltype(tag)::type;
    const P values = load_pack<P>(x + i);
    P c = load_pack<P>(weights + i);
    if constexpr (Masked) c = unless_masked(values, c);
    const P d = unless_masked_value<Masked>(values, values * P(scale) - P(center));
    const P weighted = c * d;
    acc[0] += weighted;
    acc[1] += weighted * d;
  });
  const double mean_offset = second[0] / total;
  double squares = second[1] - second[0] * mean_offset;
  if (squares < 0.0) squares = 0.0;
  const double mean = (static_cast<double>(center) + mean_offset) / static_cast<double>(scale);
  const double std = std::sqrt(squares / total) / static_cast<double>(scale);
  return {mean, std, total};
}

/// The weighted counterpart of standardization_of: the exponent map of z^ / tau with the
/// weighted statistics, and W for the gradient. Callers have refused eps = 0.
template <class T, class Arch>
inline row_standardization<T> weighted_standardization_of(const T* x, const T* weights, index n,
                                                          const row_scan<T>& scan, double eps,
                                                          double temperature,
                                                          double& total_weight) {
  const T scale = scale_for(scan);
  const weighted_row_moments moments =
      scan.usable < n ? weighted_moments_row<T, Arch, true>(x, weights, n, scale)
                      : weighted_moments_row<T, Arch, false>(x, weights, n, scale);
  total_weight = moments.total_weight;
  const double divisor = moments.std + eps;
  const double gain = 1.0 / (static_cast<double>(scale) * divisor * temperature);
  const affine<T> map{scale, scan.max * scale, gain_in<T>(gain)};
  return {map, moments.std, divisor, max_offset(scan.max, moments.mean, 0.0, divisor)};
}

/// The path of a gradient through weighted statistics, applied after the unweighted sweep:
/// grad_j -= c_j (d u_j + e), where u is the row's exponent argument; 0 for a masked class.
template <class T, class Arch>
inline void weighted_std_path(const T* x, const T* weights, index n, const affine<T>& map, T d,
                              T e, T* grad) {
  for_each_pack<T, Arch>(n, [&](auto tag, index i) {
    using P = typename decltype(tag)::type;
    const P values = load_pack<P>(x + i);
    const P c = unless_masked(values, load_pack<P>(weights + i));
    const P path = c * mul_add(P(d), exponent_of(values, map), P(e));
    store_pack(grad + i, load_pack<P>(grad + i) - path);
  });
}

/// The options a loss with per-class weights needs, shared by every loss that takes them:
/// standardize on (the weights weight the Z-score), ddof 0 (the variance divides by the
/// weights' sum) and eps > 0 (a row can have a weighted std of 0 without being constant).
inline void check_class_weight_options(const char* function, bool standardize, int ddof,
                                       double eps) {
  if (!standardize) {
    throw_invalid(function, "'class_weights' weight the Z-score statistics; they need "
                            "standardize = true");
  }
  if (ddof != 0) {
    throw_invalid(function, "with 'class_weights' the variance divides by the sum of the "
                            "weights (all-ones weights = ddof 0); set ddof = 0");
  }
  if (!(eps > 0.0)) {
    throw_invalid(function, "with 'class_weights' eps must be > 0: a row whose weighted "
                            "classes are equal has a weighted std of 0");
  }
}

/// Checks per-class weights for `classes` columns: the right count, each finite and >= 0, and
/// a positive sum. Returns them in T, scaled by a power of two so that the largest lies in
/// [0.5, 1): the weighted statistics depend only on the weights' ratios, a power of two scales
/// every weighted sum exactly, and weights valid in double but not in T (1e300, or 1e-300 and
/// zeros) then neither overflow nor vanish.
template <class T>
inline std::vector<T> checked_class_weights(const char* function,
                                            const std::vector<double>& weights, index classes) {
  if (static_cast<index>(weights.size()) != classes) {
    throw_invalid(function, "'class_weights' has " + std::to_string(weights.size()) +
                                " values but the logits have " + std::to_string(classes) +
                                " classes");
  }
  double largest = 0.0;
  for (std::size_t j = 0; j < weights.size(); ++j) {
    if (!std::isfinite(weights[j]) || weights[j] < 0.0) {
      throw_invalid(function, "'class_weights' [" + std::to_string(j) + "] is " +
                                  number(weights[j]) + "; class weights must be finite and >= 0");
    }
    largest = weights[j] > largest ? weights[j] : largest;
  }
  if (!(largest > 0.0)) {
    throw_invalid(function, "'class_weights' sum to 0; at least one class needs a weight > 0");
  }
  int exponent = 0;
  std::frexp(largest, &exponent);
  std::vector<T> converted(weights.size());
  for (std::size_t j = 0; j < weights.size(); ++j) {
    converted[j] = static_cast<T>(std::ldexp(weights[j], -exponent));
  }
  return converted;
}

}  // namespace detail
LSKD_NAMESPACE_END
