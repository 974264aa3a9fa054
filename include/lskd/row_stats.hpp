// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// Per-row mean and standard deviation.

#include <lskd/config.hpp>
#include <lskd/detail/row_driver.hpp>
#include <lskd/options.hpp>
#include <lskd/simd/dispatch.hpp>
#include <lskd/views.hpp>

#include <type_traits>

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

    const auto scans = detail::scan_rows<T, Arch>(name, "logits", logits);
    for (index r = 0; r < logits.rows(); ++r) {
      const auto& scan = scans[static_cast<std::size_t>(r)];
      const auto moments = detail::moments_row<T, Arch>(logits.row(r), logits.cols(),
                                                        options_.ddof, detail::scale_for(scan),
                                                        logits.cols());
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
};

LSKD_NAMESPACE_END
