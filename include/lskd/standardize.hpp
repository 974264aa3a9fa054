// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// The per-row Z-score with a base temperature: y = (x - mean) / ((std + eps) * temperature).

#include <lskd/config.hpp>
#include <lskd/detail/row_driver.hpp>
#include <lskd/detail/weighted_moments.hpp>
#include <lskd/options.hpp>
#include <lskd/simd/dispatch.hpp>
#include <lskd/views.hpp>

#include <string>
#include <type_traits>
#include <vector>

LSKD_NAMESPACE_BEGIN

/// Z-scores each row of a rows x classes matrix with its own mean and std, then divides by the
/// temperature, out of place or in place.
///
/// The statistics are those of row_stats (accurate for large offsets and magnitudes, std
/// exactly 0 for a constant row, whose outputs are then exactly 0). The mean is subtracted in
/// two parts, so rounding it to T does not shift the outputs: each output has a relative error
/// of a few units of roundoff of T plus that of the std.
///
/// Errors: std::invalid_argument for a bad view, option or partial overlap of `out` and
/// `logits`; std::domain_error for a NaN or infinity (naming the row), or a constant row with
/// eps = 0. Nothing is written then.
template <class T, class Arch = simd::default_arch>
class standardize {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "lskd::standardize works on float or double");

 public:
  explicit standardize(const standardize_options& options = {}) : options_(options) {
    detail::check_positive_finite(name, "temperature", options.temperature);
    detail::check_nonnegative_finite(name, "eps", options.eps);
    detail::check_ddof(name, options.ddof, 2, false);
    if (!options.class_weights.empty()) {
      if (options.ddof != 0 || !(options.eps > 0.0)) {
        detail::throw_invalid(name, "with 'class_weights' the variance divides by the sum of "
                                    "the weights (all-ones weights = ddof 0): set ddof = 0, and "
                                    "eps > 0 (a weighted std can be 0 in a row that varies)");
      }
      weights_ = detail::checked_class_weights<T>(
          name, options.class_weights, static_cast<index>(options.class_weights.size()));
    }
  }

  const standardize_options& options() const noexcept { return options_; }

  /// Writes the Z-scores of `logits` to `out` (same shape; `out` may be exactly `logits`).
  void operator()(matrix_view<const T> logits, matrix_view<T> out) const {
    detail::check_view(name, "logits", logits);
    detail::check_view(name, "out", out);
    detail::check_same_shape(name, "out", out, "logits", logits);
    detail::check_ddof(name, options_.ddof, logits.cols(), true);
    detail::check_no_overlap(name, "out", out, "logits", logits, true);
    if (!weights_.empty() && static_cast<index>(weights_.size()) != logits.cols()) {
      detail::throw_invalid(name, "'class_weights' has " + std::to_string(weights_.size()) +
                                      " values but the logits have " +
                                      std::to_string(logits.cols()) + " classes");
    }

    const auto scans = detail::scan_rows<T, Arch>(name, "logits", logits);
    if (options_.eps == 0.0) {
      for (std::size_t r = 0; r < scans.size(); ++r) {
        if (scans[r].min == scans[r].max) {
          detail::throw_domain(name, "logits row " + std::to_string(r) +
                                         " has all values equal (std 0) and eps is 0; use eps > 0");
        }
      }
    }
    for (index r = 0; r < logits.rows(); ++r) {
      const auto& scan = scans[static_cast<std::size_t>(r)];
      const T scale = detail::scale_for(scan);
      detail::row_moments moments{};
      if (weights_.empty()) {
        moments = detail::moments_row<T, Arch>(logits.row(r), logits.cols(), options_.ddof, scale,
                                               logits.cols());
      } else {
        const auto weighted = detail::weighted_moments_row<T, Arch>(logits.row(r), weights_.data(),
                                                                    logits.cols(), scale);
        moments = {weighted.mean, weighted.std};
      }
      // The scaled mean in two parts (see row_moments::split): rounding it to T must not
      // shift every output of a row whose spread is tiny next to its offset.
      const double center_high = (moments.split ? moments.high : moments.mean) *
                                 static_cast<double>(scale);
      const double center_low = moments.split ? moments.low * static_cast<double>(scale) : 0.0;
      const T high = static_cast<T>(center_high);
      const T low = static_cast<T>((center_high - static_cast<double>(high)) + center_low);
      const double gain = 1.0 / (static_cast<double>(scale) * (moments.std + options_.eps) *
                                 options_.temperature);
      detail::affine_row<T, Arch>(logits.row(r), out.row(r), logits.cols(),
                                  {scale, high, low, detail::gain_in<T>(gain)});
    }
  }

  /// In place.
  void operator()(matrix_view<T> logits) const { (*this)(logits, logits); }

 private:
  static constexpr const char* name = "lskd::standardize";
  standardize_options options_;
  std::vector<T> weights_;  ///< class weights in T; empty: unweighted
};

LSKD_NAMESPACE_END
