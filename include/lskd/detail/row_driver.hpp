// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// What every functor does around the row kernels: scan all rows before any output is written,
/// and loop over rows.

#include <lskd/config.hpp>
#include <lskd/detail/row_kernels.hpp>
#include <lskd/options.hpp>
#include <lskd/views.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

LSKD_NAMESPACE_BEGIN
namespace detail {

/// Scans every row of `logits` (min, max, finiteness) and throws std::domain_error naming the
/// first row with a NaN or an infinity. Runs before anything is written, so a bad row leaves
/// every output untouched. O(rows) memory.
template <class T, class Arch>
inline std::vector<row_scan<T>> scan_rows(const char* function, const char* whose,
                                          const matrix_view<const T>& logits) {
  std::vector<row_scan<T>> scans(static_cast<std::size_t>(logits.rows()));
  for (index r = 0; r < logits.rows(); ++r) {
    scans[static_cast<std::size_t>(r)] = scan_row<T, Arch>(logits.row(r), logits.cols());
    if (!scans[static_cast<std::size_t>(r)].finite) {
      throw_non_finite(function, whose, r, logits.row(r), logits.cols());
    }
  }
  return scans;
}

/// The most OpenMP threads a loss accepts (execution::threads).
inline constexpr int max_threads = 4096;

/// The options every loss checks when it is built: eps finite and >= 0, ddof 0 or 1, a
/// reduction that is one of lskd::reduction's values (an int cast to it may be none of them),
/// and a thread count in [0, max_threads] (0: OpenMP's default). Shared by every loss.
inline void check_common_options(const char* function, double eps, int ddof, reduction how,
                                 const execution& spread) {
  check_nonnegative_finite(function, "eps", eps);
  check_ddof(function, ddof, 2, false);
  if (how != reduction::none && how != reduction::sum && how != reduction::batchmean) {
    throw_invalid(function, "'reduction' must be reduction::none, reduction::sum or "
                            "reduction::batchmean (got the value " +
                                std::to_string(static_cast<int>(how)) + ")");
  }
  // The upper bound: an OpenMP runtime that cannot create the threads asked for aborts the
  // whole process, and no machine lskd runs on gains from more threads than this.
  if (spread.threads < 0 || spread.threads > max_threads) {
    throw_invalid(function, "'execution::threads' is " + std::to_string(spread.threads) +
                                "; it must be in [1, " + std::to_string(max_threads) +
                                "], or 0 for OpenMP's default");
  }
}

/// Row weights are finite and >= 0; a normalizer is finite and >= 0, and only batchmean
/// divides by one. Shared by every loss that takes lskd::row_weights.
template <class T>
inline void check_row_weights(const char* function, const row_weights<T>& weights, index rows,
                              reduction how) {
  if (!std::isfinite(weights.normalizer) || weights.normalizer < 0.0) {
    throw_invalid(function, "'normalizer' must be finite and >= 0 (got " +
                                number(weights.normalizer) + ")");
  }
  if (weights.normalizer > 0.0 && how != reduction::batchmean) {
    throw_invalid(function, std::string("'normalizer' is set but the reduction is ") +
                                to_string(how) + "; only batchmean divides by a normalizer");
  }
  if (weights.weights == nullptr) return;
  double total = 0.0;
  for (index r = 0; r < rows; ++r) {
    const T w = weights.weights[r];
    if (!std::isfinite(w) || w < T(0)) {
      throw_invalid(function, "'row_weights' [" + std::to_string(r) + "] is " +
                                  number(static_cast<double>(w)) +
                                  "; row weights must be finite and >= 0");
    }
    total += static_cast<double>(w);
  }
  // batchmean divides by this sum: an infinite one gave a NaN loss and zero gradients. Only
  // the weights' ratios matter there, so they can always be scaled down.
  if (!std::isfinite(total)) {
    throw_invalid(function, "the sum of 'row_weights' overflows a double; scale them down "
                            "(batchmean depends only on their ratios)");
  }
}

/// Refuses a side buffer that shares memory with a buffer that would change it or be changed
/// by it: the per-row inputs (`row_weights` and DKD's `targets`, `rows` values each, or null)
/// may not overlap an output (gradients are written while they are still read), and the
/// temperature gradients, written after every row (`temperature_count` doubles called
/// `temperature_name`, or null), may not overlap any input or output. Shared by every loss
/// that takes them.
template <class In, class Out, class Weight>
inline void check_side_buffers(const char* function, const matrix_view<const In>& student,
                               const matrix_view<const In>& teacher,
                               const matrix_view<Out>& grad_student,
                               const matrix_view<Out>& grad_teacher, const Weight* weights,
                               const std::int64_t* targets, const double* row_losses,
                               const char* temperature_name, const double* grad_temperatures,
                               index temperature_count) {
  const index rows = student.rows();
  if (rows == 0) return;
  const matrix_view<const Weight> read_weights(weights, weights != nullptr ? rows : 0, 1);
  const matrix_view<const std::int64_t> read_targets(targets, targets != nullptr ? rows : 0, 1);
  const matrix_view<const double> losses(row_losses, row_losses != nullptr ? rows : 0, 1);
  check_no_overlap(function, "grad_student", grad_student, "row_weights", read_weights, false);
  check_no_overlap(function, "grad_teacher", grad_teacher, "row_weights", read_weights, false);
  check_no_overlap(function, "grad_student", grad_student, "targets", read_targets, false);
  check_no_overlap(function, "grad_teacher", grad_teacher, "targets", read_targets, false);
  check_no_overlap(function, "row_losses", losses, "row_weights", read_weights, false);
  check_no_overlap(function, "row_losses", losses, "targets", read_targets, false);
  if (grad_temperatures == nullptr) return;
  const matrix_view<const double> tau(grad_temperatures, temperature_count, 1);
  const char* const name = temperature_name;
  check_no_overlap(function, name, tau, "student", student, false);
  check_no_overlap(function, name, tau, "teacher", teacher, false);
  check_no_overlap(function, name, tau, "grad_student", grad_student, false);
  check_no_overlap(function, name, tau, "grad_teacher", grad_teacher, false);
  check_no_overlap(function, name, tau, "row_losses", losses, false);
  check_no_overlap(function, name, tau, "row_weights", read_weights, false);
  check_no_overlap(function, name, tau, "targets", read_targets, false);
}

/// Refuses a row whose student or teacher gradient (each when asked for) could overflow T: a
/// domain_error naming the row and side, unless an upper bound on every gradient entry stays
/// below a quarter of the largest finite T. Shared by every loss; `weight` is what the row's
/// gradient is scaled by (row weight after batchmean's
/// division, times a loss's own factor such as DKD's alpha + beta).
///
/// Standardized, the gradient grows like 1 / (std + eps): with eps = 0 and a row whose values
/// differ by subnormal amounts it can exceed the largest T. Since std >= (max - min) /
/// sqrt(2 (classes - ddof)), every entry is at most weight * (f / tau) * (1 + classes) /
/// (that bound + eps), f = tau^2 or 1; rows with eps >= 1e-30 are never refused at sane
/// weights. Classic KD: the student's entries are at most weight * f / tau, the teacher's
/// weight * (f / tau) * (2 + 4 |u|max), |u| <= the logits' range / tau, clamped at the exponent
/// floor unless `floored` is false (DKD takes its target's argument in double, unclamped).
template <class T>
inline void check_gradient_fits(const char* function, const row_scan<T>& student,
                                const row_scan<T>& teacher, bool student_gradient,
                                bool teacher_gradient, bool standardize, int ddof, double eps,
                                double temperature, bool scale_by_t2, double weight, index row,
                                bool floored = true) {
  const double factor = (scale_by_t2 ? temperature * temperature : 1.0) / temperature;
  const auto check = [&](const row_scan<T>& scan, const row_scan<T>& other, const char* whose) {
    const double range = static_cast<double>(scan.max) - static_cast<double>(scan.min);
    double bound = 0.0;
    if (standardize) {
      const double degrees = static_cast<double>(scan.usable - ddof);
      const double spread = range / std::sqrt(2.0 * degrees);
      bound = weight * factor * (1.0 + static_cast<double>(scan.usable)) / (spread + eps);
    } else {
      const double other_range = static_cast<double>(other.max) - static_cast<double>(other.min);
      const double spread_u = (range > other_range ? range : other_range) / temperature;
      const double largest_u =
          floored ? std::min(spread_u, -static_cast<double>(exponent_floor<T>)) : spread_u;
      bound = weight * factor * (2.0 + 4.0 * largest_u);
    }
    if (!(bound < 0.25 * static_cast<double>(std::numeric_limits<T>::max()))) {
      throw_domain(function,
                   std::string(whose) + " row " + std::to_string(row) +
                       ": its gradient could exceed the largest finite value of T (a bound of " +
                       number(bound) + " from temperature " + number(temperature) + ", eps " +
                       number(eps) + ", row weight " + number(weight) +
                       " and a spread max - min = " + number(range) + "); use " +
                       (standardize && !(eps > 0.0) ? "eps > 0, " : "") +
                       "a smaller temperature or weight, smaller logits, or a wider type");
    }
  };
  if (student_gradient) check(student, teacher, "student logits");
  if (teacher_gradient) check(teacher, student, "teacher logits");
}

/// The per-row scale (a power of two) for a row whose values lie in [min, max].
template <class T>
inline T scale_for(const row_scan<T>& scan) {
  return power_of_two_scale(std::fabs(scan.min) > std::fabs(scan.max) ? std::fabs(scan.min)
                                                                      : std::fabs(scan.max));
}

/// A row's standardization: the map to exponent arguments u = (x - max) / ((std + eps) tau),
/// and what the gradient needs to recover the Z-score z = tau * u + offset.
template <class T>
struct row_standardization {
  affine<T> map;
  double std;      ///< the row's std (0 without standardization)
  double divisor;  ///< std + eps (1 without standardization)
  double offset;   ///< (max - mean) / (std + eps)
};

/// A positive gain rounded to T, kept finite: with a temperature near the smallest double the
/// exact gain overflows T, and inf * 0 at the row's max would be NaN.
template <class T>
inline T gain_in(double gain) {
  const double largest = static_cast<double>(std::numeric_limits<T>::max());
  return static_cast<T>(gain < largest ? gain : largest);
}

/// (max - high - low) / divisor, the Z-score of a row's max, without overflowing in between:
/// a double row spanning more than half the range (max 1.5e308, mean -0.75e308) has a finite
/// quotient but an infinite difference, and inf times a zero coefficient is NaN. Such rows
/// are computed on halves (exact: they are far from the subnormals).
inline double max_offset(double max, double high, double low, double divisor) {
  const double difference = (max - high) - low;
  if (std::isfinite(difference)) return difference / divisor;
  return ((0.5 * max - 0.5 * high) - 0.5 * low) / (0.5 * divisor);
}

/// Statistics and exponent map of one row. Callers have already refused a constant row with
/// eps = 0 (its Z-score is 0 / 0).
template <class T, class Arch>
inline row_standardization<T> standardization_of(const T* x, index n, const row_scan<T>& scan,
                                                 bool standardize, int ddof, double eps,
                                                 double temperature) {
  if (!standardize) {
    return {{T(1), scan.max, gain_in<T>(1.0 / temperature)}, 0.0, 1.0, 0.0};
  }
  const T scale = scale_for(scan);
  row_moments moments{};
  if (!moments_from_scan(scan, n, ddof, moments)) {
    moments = scan.usable < n ? moments_row<T, Arch, true>(x, n, ddof, scale, scan.usable)
                              : moments_row<T, Arch, false>(x, n, ddof, scale, n);
  }
  const double divisor = moments.std + eps;
  const double gain = 1.0 / (static_cast<double>(scale) * divisor * temperature);
  const affine<T> map{scale, scan.max * scale, gain_in<T>(gain)};
  // max - mean from the split mean: max - high is exact for rows near their offset.
  const double offset = moments.split ? max_offset(scan.max, moments.high, moments.low, divisor)
                                      : max_offset(scan.max, moments.mean, 0.0, divisor);
  return {map, moments.std, divisor, offset};
}

}  // namespace detail
LSKD_NAMESPACE_END
