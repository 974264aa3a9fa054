// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// KD, DKD and multi-temperature KD losses on 16-bit logits (Eigen::bfloat16, Eigen::half):
/// each row is widened to float exactly when it is read, the float kernels run on it, and the
/// gradients are written as float or rounded to the input type, as the caller chooses.

#include <lskd/config.hpp>
#include <lskd/detail/row_driver.hpp>
#include <lskd/detail/row_sources.hpp>
#include <lskd/dkd_loss.hpp>
#include <lskd/kd_loss.hpp>
#include <lskd/multi_temperature_kd_loss.hpp>
#include <lskd/options.hpp>
#include <lskd/simd/dispatch.hpp>
#include <lskd/views.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

LSKD_NAMESPACE_BEGIN
namespace detail {

template <class Storage>
struct is_half_storage
    : std::integral_constant<bool, std::is_same<Storage, Eigen::bfloat16>::value ||
                                       std::is_same<Storage, Eigen::half>::value> {};

}  // namespace detail

/// lskd::kd_loss on bfloat16 or half logits.
///
/// Each row is widened to float exactly when the kernels read it (into a buffer of a few rows
/// per thread: O(classes) memory, not O(rows x classes)), and the float kernels of
/// kd_loss<float, Arch> run on the widened values: the loss and the float gradient are exactly
/// those of kd_loss<float> on the same converted values (no rounding happens before the
/// conversion). A 16-bit gradient is that float gradient rounded to nearest even, row by row.
///
/// Options, reductions, row weights, masked classes (-inf in both), class weights, the
/// temperature gradient, errors and accuracy are those of kd_loss (its messages name
/// `lskd::kd_loss`); every row is still checked before any output is written. The gradient
/// views are float, or the input type; a gradient of the input type may be exactly its own
/// logits (in place), a float gradient may not overlap them.
///
/// @tparam Storage Eigen::bfloat16 or Eigen::half.
template <class Storage, class Arch = simd::default_arch>
class half_precision_kd_loss {
  static_assert(detail::is_half_storage<Storage>::value,
                "lskd::half_precision_kd_loss takes Eigen::bfloat16 or Eigen::half logits");

 public:
  explicit half_precision_kd_loss(const kd_options& options = {}, execution how = {})
      : loss_(options, std::move(how)) {}

  /// Wraps a configured float loss (e.g. kd_loss<float>::with_class_weights).
  explicit half_precision_kd_loss(kd_loss<float, Arch> loss) : loss_(std::move(loss)) {}

  const kd_options& options() const noexcept { return loss_.options(); }

  /// The reduced loss; see kd_loss::forward.
  double forward(matrix_view<const Storage> student, matrix_view<const Storage> teacher,
                 double* row_losses = nullptr) const {
    return forward(student, teacher, row_weights<float>{}, row_losses);
  }

  /// The reduced loss over weighted rows; see kd_loss::forward.
  double forward(matrix_view<const Storage> student, matrix_view<const Storage> teacher,
                 const row_weights<float>& weights, double* row_losses = nullptr) const {
    return run(student, teacher, weights, detail::direct_gradient<float>{{}},
               detail::direct_gradient<float>{{}}, row_losses, nullptr);
  }

  /// Loss and float gradients; see kd_loss::forward_backward.
  double forward_backward(matrix_view<const Storage> student, matrix_view<const Storage> teacher,
                          matrix_view<float> grad_student, matrix_view<float> grad_teacher = {},
                          double* row_losses = nullptr, double* grad_temperature = nullptr,
                          const row_weights<float>& weights = {}) const {
    loss_.check_some_gradient(grad_student, grad_teacher, grad_temperature, student.rows());
    return run(student, teacher, weights, detail::direct_gradient<float>{grad_student},
               detail::direct_gradient<float>{grad_teacher}, row_losses, grad_temperature);
  }

  /// Loss and gradients in the input type: the float gradients rounded to nearest even.
  double forward_backward(matrix_view<const Storage> student, matrix_view<const Storage> teacher,
                          matrix_view<Storage> grad_student, matrix_view<Storage> grad_teacher = {},
                          double* row_losses = nullptr, double* grad_temperature = nullptr,
                          const row_weights<float>& weights = {}) const {
    if (grad_student.empty() && grad_teacher.empty() && grad_temperature == nullptr) {
      loss_.check_some_gradient({}, {}, nullptr, student.rows());  // the usual message
    }
    return run(student, teacher, weights, detail::narrowed_gradient<Storage>{grad_student},
               detail::narrowed_gradient<Storage>{grad_teacher}, row_losses, grad_temperature);
  }

 private:
  template <class Gradient>
  double run(const matrix_view<const Storage>& student, const matrix_view<const Storage>& teacher,
             const row_weights<float>& weights, const Gradient& grad_student,
             const Gradient& grad_teacher, double* row_losses, double* grad_temperature) const {
    loss_.check_arguments(student, teacher, grad_student.view, grad_teacher.view, row_losses);
    detail::check_side_buffers(kd_loss<float, Arch>::name, student, teacher, grad_student.view,
                               grad_teacher.view, weights.weights, nullptr, row_losses,
                               "grad_temperature", grad_temperature, 1);
    return loss_.run_rows(detail::widened_rows<Storage>{student},
                          detail::widened_rows<Storage>{teacher}, weights, grad_student,
                          grad_teacher, row_losses, grad_temperature);
  }

  kd_loss<float, Arch> loss_;
};

/// lskd::dkd_loss on bfloat16 or half logits, widened exactly to float one row at a time as in
/// half_precision_kd_loss, so the results are those of dkd_loss<float> on the converted
/// values. Gradients in float or in the input type (rounded to nearest even; in place allowed).
template <class Storage, class Arch = simd::default_arch>
class half_precision_dkd_loss {
  static_assert(detail::is_half_storage<Storage>::value,
                "lskd::half_precision_dkd_loss takes Eigen::bfloat16 or Eigen::half logits");

 public:
  explicit half_precision_dkd_loss(const dkd_options& options = {}, execution how = {})
      : loss_(options, std::move(how)) {}

  const dkd_options& options() const noexcept { return loss_.options(); }

  /// The reduced loss; see dkd_loss::forward.
  double forward(matrix_view<const Storage> student, matrix_view<const Storage> teacher,
                 const std::int64_t* targets, double* row_losses = nullptr,
                 const row_weights<float>& weights = {}) const {
    return run(student, teacher, targets, weights, detail::direct_gradient<float>{{}},
               detail::direct_gradient<float>{{}}, nullptr, row_losses);
  }

  /// Loss and gradients (float, or the input type); see dkd_loss::forward_backward.
  template <class Gradient>
  double forward_backward(matrix_view<const Storage> student, matrix_view<const Storage> teacher,
                          const std::int64_t* targets, matrix_view<Gradient> grad_student,
                          matrix_view<Gradient> grad_teacher = {}, double* row_losses = nullptr,
                          double* grad_temperature = nullptr,
                          const row_weights<float>& weights = {}) const {
    static_assert(std::is_same<Gradient, float>::value || std::is_same<Gradient, Storage>::value,
                  "gradients are float or the logits' own type");
    if (grad_student.empty() && grad_teacher.empty() && grad_temperature == nullptr) {
      dkd_loss<float, Arch>::check_some_gradient({}, {}, nullptr, student.rows());
    }
    if constexpr (std::is_same<Gradient, float>::value) {
      return run(student, teacher, targets, weights, detail::direct_gradient<float>{grad_student},
                 detail::direct_gradient<float>{grad_teacher}, grad_temperature, row_losses);
    } else {
      return run(student, teacher, targets, weights,
                 detail::narrowed_gradient<Storage>{grad_student},
                 detail::narrowed_gradient<Storage>{grad_teacher}, grad_temperature, row_losses);
    }
  }

 private:
  template <class GradientRows>
  double run(const matrix_view<const Storage>& student, const matrix_view<const Storage>& teacher,
             const std::int64_t* targets, const row_weights<float>& weights,
             const GradientRows& grad_student, const GradientRows& grad_teacher,
             double* grad_temperature, double* row_losses) const {
    loss_.check_arguments(student, teacher, targets, grad_student.view, grad_teacher.view,
                          row_losses);
    detail::check_side_buffers(dkd_loss<float, Arch>::name, student, teacher, grad_student.view,
                               grad_teacher.view, weights.weights, targets, row_losses,
                               "grad_temperature", grad_temperature, 1);
    return loss_.run_rows(detail::widened_rows<Storage>{student},
                          detail::widened_rows<Storage>{teacher}, targets, weights, grad_student,
                          grad_teacher, grad_temperature, row_losses);
  }

  dkd_loss<float, Arch> loss_;
};

/// lskd::multi_temperature_kd_loss on bfloat16 or half logits, widened exactly to float one row
/// at a time as in half_precision_kd_loss (O(classes) of float scratch per thread, never a
/// float copy of the batch), so the loss, the float gradients and the temperature gradients are
/// bit for bit those of multi_temperature_kd_loss<float> on the converted values. A 16-bit
/// gradient is that float gradient rounded to nearest even, and may be written over its own
/// logits; a float gradient may not overlap them. Options, row weights, masked classes,
/// threads and errors (named `lskd::multi_temperature_kd_loss`) are those of the float loss;
/// every row is checked before any output is written.
///
/// The gradient overloads take float or Storage views; for the temperature gradients alone,
/// pass `lskd::matrix_view<float>{}` (a bare `{}` would fit both).
///
/// @tparam Storage Eigen::bfloat16 or Eigen::half.
template <class Storage, class Arch = simd::default_arch>
class half_precision_multi_temperature_kd_loss {
  static_assert(detail::is_half_storage<Storage>::value,
                "lskd::half_precision_multi_temperature_kd_loss takes Eigen::bfloat16 or "
                "Eigen::half logits");
  using float_loss = multi_temperature_kd_loss<float, Arch>;

 public:
  explicit half_precision_multi_temperature_kd_loss(multi_temperature_kd_options options = {},
                                                    execution how = {})
      : loss_(std::move(options), std::move(how)) {}

  /// Wraps a configured float loss (e.g. multi_temperature_kd_loss<float>::with_class_weights).
  explicit half_precision_multi_temperature_kd_loss(multi_temperature_kd_loss<float, Arch> loss)
      : loss_(std::move(loss)) {}

  const multi_temperature_kd_options& options() const noexcept { return loss_.options(); }

  /// The reduced loss; see multi_temperature_kd_loss::forward.
  double forward(matrix_view<const Storage> student, matrix_view<const Storage> teacher,
                 double* row_losses = nullptr) const {
    return forward(student, teacher, row_weights<float>{}, row_losses);
  }

  /// The reduced loss over weighted rows; see multi_temperature_kd_loss::forward.
  double forward(matrix_view<const Storage> student, matrix_view<const Storage> teacher,
                 const row_weights<float>& weights, double* row_losses = nullptr) const {
    return run(student, teacher, weights, detail::direct_gradient<float>{{}},
               detail::direct_gradient<float>{{}}, nullptr, row_losses);
  }

  /// Loss and float gradients; see multi_temperature_kd_loss::forward_backward.
  double forward_backward(matrix_view<const Storage> student, matrix_view<const Storage> teacher,
                          matrix_view<float> grad_student, matrix_view<float> grad_teacher = {},
                          double* row_losses = nullptr,
                          double* grad_temperatures = nullptr) const {
    return forward_backward(student, teacher, row_weights<float>{}, grad_student, grad_teacher,
                            row_losses, grad_temperatures);
  }

  /// Loss and gradients in the input type: the float gradients rounded to nearest even.
  double forward_backward(matrix_view<const Storage> student, matrix_view<const Storage> teacher,
                          matrix_view<Storage> grad_student,
                          matrix_view<Storage> grad_teacher = {}, double* row_losses = nullptr,
                          double* grad_temperatures = nullptr) const {
    return forward_backward(student, teacher, row_weights<float>{}, grad_student, grad_teacher,
                            row_losses, grad_temperatures);
  }

  /// Over weighted rows, float gradients: rows of weight 0 are not read and get zero gradients.
  double forward_backward(matrix_view<const Storage> student, matrix_view<const Storage> teacher,
                          const row_weights<float>& weights, matrix_view<float> grad_student,
                          matrix_view<float> grad_teacher = {}, double* row_losses = nullptr,
                          double* grad_temperatures = nullptr) const {
    float_loss::check_some_gradient(grad_student, grad_teacher, grad_temperatures,
                                    student.rows());
    return run(student, teacher, weights, detail::direct_gradient<float>{grad_student},
               detail::direct_gradient<float>{grad_teacher}, grad_temperatures, row_losses);
  }

  /// Over weighted rows, gradients in the input type.
  double forward_backward(matrix_view<const Storage> student, matrix_view<const Storage> teacher,
                          const row_weights<float>& weights, matrix_view<Storage> grad_student,
                          matrix_view<Storage> grad_teacher = {}, double* row_losses = nullptr,
                          double* grad_temperatures = nullptr) const {
    if (grad_student.empty() && grad_teacher.empty() && grad_temperatures == nullptr) {
      float_loss::check_some_gradient({}, {}, nullptr, student.rows());  // the usual message
    }
    return run(student, teacher, weights, detail::narrowed_gradient<Storage>{grad_student},
               detail::narrowed_gradient<Storage>{grad_teacher}, grad_temperatures, row_losses);
  }

 private:
  template <class Gradient>
  double run(const matrix_view<const Storage>& student, const matrix_view<const Storage>& teacher,
             const row_weights<float>& weights, const Gradient& grad_student,
             const Gradient& grad_teacher, double* grad_temperatures, double* row_losses) const {
    loss_.check_arguments(student, teacher, grad_student.view, grad_teacher.view, row_losses);
    detail::check_side_buffers(float_loss::name, student, teacher, grad_student.view,
                               grad_teacher.view, weights.weights, nullptr, row_losses,
                               "grad_temperatures", grad_temperatures,
                               static_cast<index>(options().temperatures.size()));
    return loss_.run_rows(detail::widened_rows<Storage>{student},
                          detail::widened_rows<Storage>{teacher}, weights, grad_student,
                          grad_teacher, grad_temperatures, row_losses);
  }

  float_loss loss_;
};

LSKD_NAMESPACE_END
