// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// Per-row mean and standard deviation.

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

/// Mean and standard deviation of each row of a rows x classes matrix.
///
/// std = sqrt(sum (x - mean)^2 / (classes - ddof)), by the corrected two-pass algorithm on
/// each row scaled by a power of two: no catastrophic cancellation for rows with a large
/// offset, no overflow for magnitudes up to the largest finite T, exactly 0 for a row of equal
/// values. Computed in double and rounded once to T. Relative error about 20 units of roundoff
/// of T for well-conditioned rows.
///
/// Errors: std::invalid_argument for a bad view, classes - ddof < 1, outputs overlapping the
/// input; std::domain_error naming the row for a NaN or an infinity. Nothing is written then.
template <class T, class Arch = simd::default_arch>
class row_stats {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "lskd::row_stats works on float or double");

 public:
  explicit row_stats(const row_stats_options& options = {}) : options_(options) {
    detail::check_ddof(name, options.ddof, 2, false);
    if (!options.class_weights.empty()) {
      if (options.ddof != 0) {
        detail::throw_invalid(name, "with 'class_weights' the variance divides by the sum of "
                                    "the weights (all-ones weights = ddof 0); set ddof = 0");
      }
      weights_ = detail::checked_class_weights<T>(
          name, options.class_weights, static_cast<index>(options.class_weights.size()));
    }
  }

  const row_stats_options& options() const noexcept { return options_; }

  /// Writes `rows` means to `mean` and `rows` standard deviations to `std`; either pointer
  /// may be null when that statistic is not wanted.
  void operator()(matrix_view<const T> logits, T* mean, T* std) const {
    detail::check_view(name, "logits", logits);
    detail::check_ddof(name, options_.ddof, logits.cols(), true);
    const matrix_view<const T> means(mean, mean == nullptr ? 0 : logits.rows(), 1);
    const matrix_view<const T> stds(std, std == nullptr ? 0 : logits.rows(), 1);
    detail::check_no_overlap(name, "mean", means, "logits", logits, false);
    detail::check_no_overlap(name, "std", stds, "logits", logits, false);
    detail::check_no_overlap(name, "std", stds, "mean", means, false);

    if (!weights_.empty() && static_cast<index>(weights_.size()) != logits.cols()) {
      detail::throw_invalid(name, "'class_weights' has " + std::to_string(weights_.size()) +
                                      " values but the logits have " +
                                      std::to_string(logits.cols()) + " classes");
    }

    const auto scans = detail::scan_rows<T, Arch>(name, "logits", logits);
    for (index r = 0; r < logits.rows(); ++r) {
      const auto& scan = scans[static_cast<std::size_t>(r)];
      detail::row_moments moments{};
      if (weights_.empty()) {
        moments = detail::moments_row<T, Arch>(logits.row(r), logits.cols(), options_.ddof,
                                               detail::scale_for(scan), logits.cols());
      } else {
        const auto weighted = detail::weighted_moments_row<T, Arch>(
            logits.row(r), weights_.data(), logits.cols(), detail::scale_for(scan));
        moments = {weighted.mean, weighted.std};
      }
      if (mean != nullptr) mean[r] = static_cast<T>(moments.mean);
      if (std != nullptr) std[r] = static_cast<T>(moments.std);
    }
  }

  /// Eigen convenience: resizes `mean` and `std` to the number of rows.
  void operator()(matrix_view<const T> logits, Eigen::Matrix<T, Eigen::Dynamic, 1>& mean,
                  Eigen::Matrix<T, Eigen::Dynamic, 1>& std) const {
    detail::check_view(name, "logits", logits);
    Eigen::Matrix<T, Eigen::Dynamic, 1> new_mean(logits.rows());
    Eigen::Matrix<T, Eigen::Dynamic, 1> new_std(logits.rows());
    (*this)(logits, new_mean.data(), new_std.data());
    mean.swap(new_mean);
    std.swap(new_std);
  }

 private:
  static constexpr const char* name = "lskd::row_stats";
  row_stats_options options_;
  std::vector<T> weights_;  ///< class weights in T; empty: unweighted
};

LSKD_NAMESPACE_END
