// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// Stable softmax and log-softmax along rows, with a temperature.

#include <lskd/config.hpp>
#include <lskd/detail/row_driver.hpp>
#include <lskd/options.hpp>
#include <lskd/simd/dispatch.hpp>
#include <lskd/views.hpp>

#include <cmath>
#include <type_traits>

LSKD_NAMESPACE_BEGIN

namespace detail {

template <class T>
inline void check_softmax_arguments(const char* function, const matrix_view<const T>& logits,
                                    const matrix_view<T>& out) {
  check_view(function, "logits", logits);
  check_view(function, "out", out);
  check_same_shape(function, "out", out, "logits", logits);
  check_no_overlap(function, "out", out, "logits", logits, true);
}

}  // namespace detail

/// softmax(x / temperature) along each row, out of place or in place (`out` exactly `logits`).
///
/// The row's max is subtracted before exponentiating, so any finite logits work (1e4, 1e38);
/// entries far below the max underflow to exactly 0. The normalizer is summed as in
/// lskd::kd_loss; each output has a relative error of a few units of roundoff of T plus that
/// of exp. Errors: std::invalid_argument for bad views, temperature or partial overlap;
/// std::domain_error naming the row for NaN or infinity; nothing is written then.
template <class T, class Arch = simd::default_arch>
class softmax {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "lskd::softmax works on float or double");

 public:
  explicit softmax(const softmax_options& options = {}) : options_(options) {
    detail::check_positive_finite(name, "temperature", options.temperature);
  }

  void operator()(matrix_view<const T> logits, matrix_view<T> out) const {
    detail::check_softmax_arguments(name, logits, out);
    const auto scans = detail::scan_rows<T, Arch>(name, "logits", logits);
    for (index r = 0; r < logits.rows(); ++r) {
      const detail::affine<T> map{T(1), scans[static_cast<std::size_t>(r)].max,
                                  detail::gain_in<T>(1.0 / options_.temperature)};
      const double normalizer =
          detail::exp_sum_row<T, Arch>(logits.row(r), out.row(r), logits.cols(), map);
      detail::scale_row<T, Arch>(out.row(r), logits.cols(), static_cast<T>(1.0 / normalizer));
    }
  }

  void operator()(matrix_view<T> logits) const { (*this)(logits, logits); }

 private:
  static constexpr const char* name = "lskd::softmax";
  softmax_options options_;
};

/// log(softmax(x / temperature)) along each row, computed as x / temperature - max - log-sum-exp
/// (never the log of a rounded probability), so it is finite wherever softmax underflows.
/// (x - max) / temperature is clamped at -2^30 (float) or -2^60 (double), the kernels'
/// exponent floor: {1e10, 0} in float gives {0, -1073741824}. Same contract as lskd::softmax
/// otherwise.
template <class T, class Arch = simd::default_arch>
class log_softmax {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "lskd::log_softmax works on float or double");

 public:
  explicit log_softmax(const softmax_options& options = {}) : options_(options) {
    detail::check_positive_finite(name, "temperature", options.temperature);
  }

  void operator()(matrix_view<const T> logits, matrix_view<T> out) const {
    detail::check_softmax_arguments(name, logits, out);
    const auto scans = detail::scan_rows<T, Arch>(name, "logits", logits);
    for (index r = 0; r < logits.rows(); ++r) {
      const detail::affine<T> map{T(1), scans[static_cast<std::size_t>(r)].max,
                                  detail::gain_in<T>(1.0 / options_.temperature)};
      const double normalizer =
          detail::exp_sum_row<T, Arch>(logits.row(r), nullptr, logits.cols(), map);
      detail::log_softmax_row<T, Arch>(logits.row(r), out.row(r), logits.cols(), map,
                                       static_cast<T>(std::log(normalizer)));
    }
  }

  void operator()(matrix_view<T> logits) const { (*this)(logits, logits); }

 private:
  static constexpr const char* name = "lskd::log_softmax";
  softmax_options options_;
};

LSKD_NAMESPACE_END
