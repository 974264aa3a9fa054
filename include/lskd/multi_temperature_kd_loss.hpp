// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// Multi-temperature KD: the sum of (optionally logit-standardized) KD losses over a list of
/// base temperatures, with each row's scan and statistics computed once for all of them.

#include <lskd/config.hpp>
#include <lskd/detail/masked_rows.hpp>
#include <lskd/detail/multi_temperature_kernels.hpp>
#include <lskd/detail/parallel.hpp>
#include <lskd/detail/row_driver.hpp>
#include <lskd/detail/row_sources.hpp>
#include <lskd/detail/weighted_moments.hpp>
#include <lskd/options.hpp>
#include <lskd/simd/dispatch.hpp>
#include <lskd/views.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

LSKD_NAMESPACE_BEGIN

template <class Storage, class Arch>
class half_precision_multi_temperature_kd_loss;

/// Multi-temperature KD between student and teacher logits, both rows x classes, row-major:
/// the row's loss is sum_i tau_i^2 KL(softmax(v^ / tau_i) || softmax(z^ / tau_i)) over the
/// temperatures tau_i (without tau_i^2 when `scale_by_t2` is off), z^ and v^ the Z-scored
/// logits when `standardize` is on (as in lskd::kd_loss) or the logits themselves. Rows
/// combine as `reduction` says. With one temperature it equals kd_loss with the same options.
///
/// Cost: the scan (min, max, finiteness) and the mean and std of each row are computed once;
/// each temperature then costs one exp sweep (2 exponentials per logit) and, for gradients,
/// one pass that adds its part into the output rows. M temperatures cost less than M calls of
/// kd_loss (docs/beyond.md has measurements).
///
/// Gradients are exact, with respect to the student and teacher logits (through each side's
/// mean and std) and to each temperature (counting its tau^2 factor).
///
/// Accuracy as lskd::kd_loss for each term. Errors (before any output is written):
/// std::invalid_argument for a bad shape, option (an empty list, a temperature that is not
/// finite and > 0) or an overlap between an output and an input or another output, other than
/// a gradient that is exactly its own logits (in place, as in kd_loss); std::domain_error for a
/// NaN or infinite logit, naming the row, and a constant row when standardizing with eps 0.
/// Zero rows give loss 0 (and temperature gradients 0), with or without outputs, as in kd_loss.
/// Masked classes (-inf in both teacher and student) and row weights (lskd::row_weights)
/// behave as in kd_loss.
///
/// @tparam T float or double.
/// @tparam Arch an xsimd architecture tag, or lskd::simd::scalar.
template <class T, class Arch = simd::default_arch>
class multi_temperature_kd_loss {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "lskd::multi_temperature_kd_loss works on float or double logits");

 public:
  /// Checks the options: at least one temperature, each finite and > 0 (an error names its
  /// index), eps finite and >= 0, ddof 0 or 1, a reduction that is one of lskd::reduction's
  /// values, and `how.threads` in [0, 4096].
  explicit multi_temperature_kd_loss(multi_temperature_kd_options options = {},
                                     execution how = {})
      : options_(std::move(options)), execution_(std::move(how)) {
    const auto& o = options_;
    if (o.temperatures.empty()) {
      detail::throw_invalid(name, "'temperatures' is empty; give at least one temperature");
    }
    for (std::size_t k = 0; k < o.temperatures.size(); ++k) {
      const std::string temperature = "temperatures[" + std::to_string(k) + "]";
      detail::check_positive_finite(name, temperature.c_str(), o.temperatures[k]);
    }
    detail::check_common_options(name, o.eps, o.ddof, o.reduction, execution_);
  }

  /// With per-class weights c for the Z-score statistics (the weighted Z-score, as in
  /// kd_loss::with_class_weights): each row's mean is sum c x / W and its variance
  /// sum c (x - mean)^2 / W, W = sum c over the row's classes that are not masked, computed once
  /// for all temperatures; all-ones weights give the unweighted statistics with ddof = 0. The
  /// gradients flow through the weighted mean and std. Requires `standardize`, ddof = 0 and
  /// eps > 0; `class_weights` holds one value per class, finite and >= 0, with a positive sum,
  /// and every call must pass logits with exactly that many classes. Gradients may still be
  /// written in place. See docs/beyond.md.
  static multi_temperature_kd_loss with_class_weights(multi_temperature_kd_options options,
                                                      const std::vector<double>& class_weights,
                                                      execution how = {}) {
    multi_temperature_kd_loss loss(std::move(options), std::move(how));
    const auto& o = loss.options_;
    detail::check_class_weight_options(name, o.standardize, o.ddof, o.eps);
    loss.class_weights_ = detail::checked_class_weights<T>(
        name, class_weights, static_cast<index>(class_weights.size()));
    return loss;
  }

  const multi_temperature_kd_options& options() const noexcept { return options_; }
  const execution& how() const noexcept { return execution_; }
  /// The per-class weights of the Z-score (empty when unweighted): scaled by a power of two so
  /// that the largest is in [0.5, 1) (only their ratios matter), then rounded to T.
  const std::vector<T>& class_weights() const noexcept { return class_weights_; }
  static constexpr const char* arch_name() noexcept { return Arch::name(); }

  /// The reduced loss. `row_losses`: `rows` doubles for each row's loss (summed over the
  /// temperatures) before reduction; required with reduction::none.
  double forward(matrix_view<const T> student, matrix_view<const T> teacher,
                 double* row_losses = nullptr) const {
    return run(student, teacher, {}, {}, {}, nullptr, row_losses);
  }

  /// The reduced loss over weighted rows (see lskd::row_weights and kd_loss::forward).
  double forward(matrix_view<const T> student, matrix_view<const T> teacher,
                 const row_weights<T>& weights, double* row_losses = nullptr) const {
    return run(student, teacher, weights, {}, {}, nullptr, row_losses);
  }

  /// The reduced loss and its gradients with respect to the student logits, the teacher logits
  /// and each temperature (`grad_temperatures`: one double per temperature, in the order of
  /// the options), each computed only when given; at least one must be. The trailing pointers
  /// come in kd_loss::forward_backward's order: row losses, then the temperatures'.
  ///
  /// `grad_student` may be exactly `student` (same pointer and leading dimension) to overwrite
  /// the logits with their gradient, `grad_teacher` likewise `teacher`: every temperature
  /// re-reads the row, so such a row is first copied into the per-thread scratch (one more row
  /// of T per thread and side). Any other overlap is an error.
  double forward_backward(matrix_view<const T> student, matrix_view<const T> teacher,
                          matrix_view<T> grad_student, matrix_view<T> grad_teacher = {},
                          double* row_losses = nullptr,
                          double* grad_temperatures = nullptr) const {
    check_some_gradient(grad_student, grad_teacher, grad_temperatures, student.rows());
    return run(student, teacher, {}, grad_student, grad_teacher, grad_temperatures, row_losses);
  }

  /// forward_backward over weighted rows: rows of weight 0 are not read and get zero
  /// gradients.
  double forward_backward(matrix_view<const T> student, matrix_view<const T> teacher,
                          const row_weights<T>& weights, matrix_view<T> grad_student,
                          matrix_view<T> grad_teacher = {}, double* row_losses = nullptr,
                          double* grad_temperatures = nullptr) const {
    check_some_gradient(grad_student, grad_teacher, grad_temperatures, student.rows());
    return run(student, teacher, weights, grad_student, grad_teacher, grad_temperatures,
               row_losses);
  }

 private:
  static constexpr const char* name = "lskd::multi_temperature_kd_loss";

  // Runs the same validation and kernels on 16-bit rows widened one at a time.
  template <class Storage, class OtherArch>
  friend class half_precision_multi_temperature_kd_loss;

  /// With rows = 0 an empty gradient view is also a valid view of no rows: no error then (as
  /// in kd_loss).
  static void check_some_gradient(const matrix_view<T>& grad_student,
                                  const matrix_view<T>& grad_teacher, const double* grad_taus,
                                  index rows = 1) {
    if (rows > 0 && grad_student.empty() && grad_teacher.empty() && grad_taus == nullptr) {
      detail::throw_invalid(name, "'grad_student', 'grad_teacher' and 'grad_temperatures' are "
                                  "all empty; call forward() for the loss alone");
    }
  }

  void check_weights(const row_weights<T>& weights, index rows) const {
    detail::check_row_weights(name, weights, rows, options_.reduction);
  }

  /// `In` is the logits' storage type and `Out` the gradients' (T, or 16-bit storage read one
  /// widened row at a time); a gradient may replace its own logits only when both are the same
  /// type (same pointer and leading dimension).
  template <class In, class Out>
  void check_arguments(const matrix_view<const In>& student, const matrix_view<const In>& teacher,
                       const matrix_view<Out>& grad_student, const matrix_view<Out>& grad_teacher,
                       const double* row_losses) const {
    constexpr bool in_place_allowed = std::is_same<In, Out>::value;
    detail::check_view(name, "student", student);
    detail::check_view(name, "teacher", teacher);
    detail::check_same_shape(name, "teacher", teacher, "student", student);
    detail::check_ddof(name, options_.ddof, student.cols(), options_.standardize);
    if (!class_weights_.empty() && static_cast<index>(class_weights_.size()) != student.cols()) {
      detail::throw_invalid(name, "'class_weights' has " + std::to_string(class_weights_.size()) +
                                      " values but the logits have " +
                                      std::to_string(student.cols()) + " classes");
    }
    if (!grad_student.empty()) {
      detail::check_view(name, "grad_student", grad_student);
      detail::check_same_shape(name, "grad_student", grad_student, "student", student);
      detail::check_no_overlap(name, "grad_student", grad_student, "student", student,
                               in_place_allowed);
      detail::check_no_overlap(name, "grad_student", grad_student, "teacher", teacher, false);
    }
    if (!grad_teacher.empty()) {
      detail::check_view(name, "grad_teacher", grad_teacher);
      detail::check_same_shape(name, "grad_teacher", grad_teacher, "teacher", teacher);
      detail::check_no_overlap(name, "grad_teacher", grad_teacher, "teacher", teacher,
                               in_place_allowed);
      detail::check_no_overlap(name, "grad_teacher", grad_teacher, "student", student, false);
      detail::check_no_overlap(name, "grad_teacher", grad_teacher, "grad_student", grad_student,
                               false);
    }
    if (options_.reduction == reduction::none && row_losses == nullptr && student.rows() > 0) {
      detail::throw_invalid(name, "'row_losses' is null; reduction::none needs a buffer of "
                                  "`rows` doubles for the per-row losses");
    }
    if (row_losses != nullptr) {
      const matrix_view<const double> losses(row_losses, student.rows(), 1);
      detail::check_no_overlap(name, "row_losses", losses, "student", student, false);
      detail::check_no_overlap(name, "row_losses", losses, "teacher", teacher, false);
      detail::check_no_overlap(name, "row_losses", losses, "grad_student", grad_student, false);
      detail::check_no_overlap(name, "row_losses", losses, "grad_teacher", grad_teacher, false);
    }
  }

  double run(const matrix_view<const T>& student, const matrix_view<const T>& teacher,
             const row_weights<T>& weights, const matrix_view<T>& grad_student,
             const matrix_view<T>& grad_teacher, double* grad_temperatures,
             double* row_losses) const {
    check_arguments(student, teacher, grad_student, grad_teacher, row_losses);
    detail::check_side_buffers(name, student, teacher, grad_student, grad_teacher,
                               weights.weights, nullptr, row_losses, "grad_temperatures",
                               grad_temperatures,
                               static_cast<index>(options_.temperatures.size()));
    return run_rows(detail::direct_rows<T>{student}, detail::direct_rows<T>{teacher}, weights,
                    detail::direct_gradient<T>{grad_student},
                    detail::direct_gradient<T>{grad_teacher}, grad_temperatures, row_losses);
  }

  /// The loss over rows from `student` and `teacher` (read in place, or widened per row from
  /// 16-bit storage), gradients to `grad_student` and `grad_teacher` (written in place, or
  /// rounded per row to 16-bit storage). The arguments have been checked.
  template <class Rows, class Gradient>
  double run_rows(const Rows& student, const Rows& teacher, const row_weights<T>& weights,
                  const Gradient& grad_student, const Gradient& grad_teacher,
                  double* grad_temperatures, double* row_losses) const {
    const index rows = student.view.rows();
    const index n = student.view.cols();
    check_weights(weights, rows);
    const auto count = options_.temperatures.size();
    if (rows == 0) {
      if (grad_temperatures != nullptr) {
        std::fill(grad_temperatures, grad_temperatures + count, 0.0);
      }
      return 0.0;
    }
    const auto weight_at = [&](index r) {
      return weights.weights == nullptr ? 1.0 : static_cast<double>(weights.weights[r]);
    };
    const auto row_size = static_cast<std::size_t>(n);

    // Every row of nonzero weight is checked before any output is written. Widened rows need a
    // buffer of 2 rows per thread; rows read in place need none.
    std::vector<detail::row_scan<T>> student_scans(static_cast<std::size_t>(rows));
    std::vector<detail::row_scan<T>> teacher_scans(static_cast<std::size_t>(rows));
    detail::for_row_ranges(execution_, rows, [&](index begin, index end) {
      std::vector<T> buffer(Rows::widens ? 2 * row_size : 0);
      T* const first = Rows::widens ? buffer.data() : nullptr;
      T* const second = Rows::widens ? buffer.data() + n : nullptr;
      for (index r = begin; r < end; ++r) {
        if (weight_at(r) == 0.0) continue;  // a masked row is not read
        const auto i = static_cast<std::size_t>(r);
        student_scans[i] = detail::scan_row<T, Arch>(student.row(r, first), n);
        teacher_scans[i] = detail::scan_row<T, Arch>(teacher.row(r, second), n);
      }
    });
    std::vector<T> buffer(Rows::widens ? 2 * row_size : 0);
    T* const first = Rows::widens ? buffer.data() : nullptr;
    T* const second = Rows::widens ? buffer.data() + n : nullptr;
    const index needed = options_.standardize ? options_.ddof + 1 : 1;
    for (index r = 0; r < rows; ++r) {
      const auto i = static_cast<std::size_t>(r);
      if (weight_at(r) == 0.0) continue;
      if (!student_scans[i].finite || !teacher_scans[i].finite) {
        detail::classify_masked_row(name, student.row(r, first), teacher.row(r, second), n, r,
                                    student_scans[i], teacher_scans[i]);
      }
      if (student_scans[i].usable < needed) {
        detail::throw_domain(name, "row " + std::to_string(r) + " has " +
                                       std::to_string(student_scans[i].usable) +
                                       " usable classes (not -inf in both teacher and student); "
                                       "it needs at least " + std::to_string(needed));
      }
      if (options_.standardize && options_.eps == 0.0 &&
          (student_scans[i].min == student_scans[i].max ||
           teacher_scans[i].min == teacher_scans[i].max)) {
        detail::throw_domain(name, "row " + std::to_string(r) + " has all " +
                                       (student_scans[i].min == student_scans[i].max
                                            ? "student" : "teacher") +
                                       " logits equal (std 0) and eps is 0; use eps > 0");
      }
      if (!class_weights_.empty() && student_scans[i].usable < n) {
        check_weighted_classes_left(student.row(r, first), n, r);
      }
    }

    // Row r enters the reduced loss as weight_at(r) / divisor * loss_r.
    double divisor = 1.0;
    if (options_.reduction == reduction::batchmean) {
      double total_weight = 0.0;
      for (index r = 0; r < rows; ++r) total_weight += weight_at(r);
      divisor = weights.normalizer > 0.0 ? weights.normalizer : total_weight;
    }

    // A gradient that could overflow T is refused, as in kd_loss, still before any output is
    // written: each temperature's bound, times the number of temperatures (their sum).
    const multi_temperature_kd_options& o = options_;
    for (index r = 0; r < rows; ++r) {
      const auto i = static_cast<std::size_t>(r);
      if (weight_at(r) == 0.0) continue;
      const double scale =
          (divisor > 0.0 ? weight_at(r) / divisor : 0.0) * static_cast<double>(count);
      for (const double tau : o.temperatures) {
        detail::check_gradient_fits(name, student_scans[i], teacher_scans[i],
                                    !grad_student.empty(), !grad_teacher.empty(), o.standardize,
                                    o.ddof, o.eps, tau, o.scale_by_t2, scale, r);
      }
    }
    const bool wants_gradient = !grad_student.empty() || !grad_teacher.empty() ||
                                grad_temperatures != nullptr;
    // In place (a gradient view is its own logits: only when both are T), the row is copied
    // before the first write, since every temperature re-reads it.
    const bool student_in_place =
        !Rows::widens && !grad_student.empty() &&
        static_cast<const void*>(grad_student.view.data()) ==
            static_cast<const void*>(student.view.data());
    const bool teacher_in_place =
        !Rows::widens && !grad_teacher.empty() &&
        static_cast<const void*>(grad_teacher.view.data()) ==
            static_cast<const void*>(teacher.view.data());
    std::vector<double> losses(static_cast<std::size_t>(rows));
    std::vector<double> tau_grads(
        grad_temperatures != nullptr ? count * static_cast<std::size_t>(rows) : 0);
    detail::for_row_ranges(execution_, rows, [&](index begin, index end) {
      // Each range has its own scratch, O(classes): one temperature's exponentials (2 rows);
      // for 16-bit storage the widened logits (2 rows) and the float gradients (2 rows); for
      // gradients written in place, the logits kept (1 row each).
      const std::size_t exps = wants_gradient ? 2 * row_size : 0;
      const std::size_t widened = Rows::widens ? 2 * row_size : 0;
      const std::size_t narrowed = Gradient::narrows ? 2 * row_size : 0;
      const std::size_t kept = (student_in_place ? row_size : 0) +
                               (teacher_in_place ? row_size : 0);
      std::vector<T> scratch(exps + widened + narrowed + kept);
      T* const student_logits = Rows::widens ? scratch.data() + exps : nullptr;
      T* const teacher_logits = Rows::widens ? student_logits + n : nullptr;
      T* const student_gradient = Gradient::narrows ? scratch.data() + exps + widened : nullptr;
      T* const teacher_gradient = Gradient::narrows ? student_gradient + n : nullptr;
      T* const student_kept = student_in_place ? scratch.data() + exps + widened + narrowed
                                               : nullptr;
      T* const teacher_kept =
          teacher_in_place ? scratch.data() + exps + widened + narrowed +
                                 (student_in_place ? row_size : 0)
                           : nullptr;
      for (index r = begin; r < end; ++r) {
        const auto i = static_cast<std::size_t>(r);
        T* gs = grad_student.empty() ? nullptr : grad_student.row(r, student_gradient);
        T* gt = grad_teacher.empty() ? nullptr : grad_teacher.row(r, teacher_gradient);
        const double row_weight = weight_at(r);
        if (row_weight == 0.0 || !(divisor > 0.0)) {
          if (gs != nullptr) std::fill(gs, gs + n, T(0));
          if (gt != nullptr) std::fill(gt, gt + n, T(0));
          losses[i] = 0.0;  // tau_grads stay 0
        } else {
          const T* x = student.row(r, student_logits);
          const T* v = teacher.row(r, teacher_logits);
          if (student_kept != nullptr) {
            std::copy(x, x + n, student_kept);
            x = student_kept;
          }
          if (teacher_kept != nullptr) {
            std::copy(v, v + n, teacher_kept);
            v = teacher_kept;
          }
          losses[i] = row_weight * row_loss(x, v, n, student_scans[i], teacher_scans[i],
                                            row_weight / divisor, gs, gt,
                                            grad_temperatures != nullptr
                                                ? tau_grads.data() + i * count
                                                : nullptr,
                                            scratch.data());
        }
        if (gs != nullptr) grad_student.finish(r, gs);
        if (gt != nullptr) grad_teacher.finish(r, gt);
      }
    });

    // Rows are combined in index order, in double: the same result for any schedule. The
    // outputs that are not gradients are written only now, after every row has validated.
    double total = 0.0;
    for (double loss : losses) total += loss;
    if (row_losses != nullptr) std::copy(losses.begin(), losses.end(), row_losses);
    if (grad_temperatures != nullptr) {
      for (std::size_t k = 0; k < count; ++k) {
        double sum = 0.0;
        for (std::size_t r = 0; r < static_cast<std::size_t>(rows); ++r) {
          sum += tau_grads[r * count + k];
        }
        grad_temperatures[k] = sum;
      }
    }
    if (options_.reduction != reduction::batchmean) return total;
    return divisor > 0.0 ? total / divisor : 0.0;
  }

  /// A row whose masked classes hold all the class weight has no weighted statistics.
  void check_weighted_classes_left(const T* student, index n, index row) const {
    double total = 0.0;
    for (index c = 0; c < n; ++c) {
      if (student[c] != -std::numeric_limits<T>::infinity()) {
        total += static_cast<double>(class_weights_[static_cast<std::size_t>(c)]);
      }
    }
    if (!(total > 0.0)) {
      detail::throw_domain(name, "row " + std::to_string(row) + " masks every class that has a "
                                 "class weight > 0, so its weighted statistics are 0/0");
    }
  }

  /// One row: the statistics once, then per temperature one exp sweep and one gradient pass.
  /// Returns the row's loss; writes the gradients scaled by `weight` and, per temperature,
  /// weight * d(row loss)/d(tau_i) into `grad_taus`.
  double row_loss(const T* student, const T* teacher, index n,
                  const detail::row_scan<T>& student_scan,
                  const detail::row_scan<T>& teacher_scan, double weight, T* grad_student,
                  T* grad_teacher, double* grad_taus, T* scratch) const {
    const auto& o = options_;
    // Statistics at temperature 1: u0 = (x - max) / s, and z^ = u0 + offset. With class
    // weights they are weighted, and `degrees` becomes the row's total weight W.
    const bool weighted = !class_weights_.empty();
    const T* const class_weights = class_weights_.data();
    double total_weight = 0.0;
    const auto s = weighted ? detail::weighted_standardization_of<T, Arch>(
                                  student, class_weights, n, student_scan, o.eps, 1.0,
                                  total_weight)
                            : detail::standardization_of<T, Arch>(student, n, student_scan,
                                                                  o.standardize, o.ddof, o.eps,
                                                                  1.0);
    const auto t = weighted ? detail::weighted_standardization_of<T, Arch>(
                                  teacher, class_weights, n, teacher_scan, o.eps, 1.0,
                                  total_weight)
                            : detail::standardization_of<T, Arch>(teacher, n, teacher_scan,
                                                                  o.standardize, o.ddof, o.eps,
                                                                  1.0);
    const double student_gain = 1.0 / (static_cast<double>(s.map.scale) * s.divisor);
    const double teacher_gain = 1.0 / (static_cast<double>(t.map.scale) * t.divisor);
    const double degrees =
        weighted ? total_weight : static_cast<double>(student_scan.usable - o.ddof);
    const detail::affine<T> student_base{s.map.scale, s.map.shift,
                                         detail::gain_in<T>(student_gain)};
    const detail::affine<T> teacher_base{t.map.scale, t.map.shift,
                                         detail::gain_in<T>(teacher_gain)};
    // Weighted: the passes leave out the path through the statistics; each temperature's
    // coefficients of that path (a multiple of u0 plus a constant) are summed here and applied
    // per class, c_j (d u0 + e), once after the last temperature.
    double student_path_d = 0.0, student_path_e = 0.0;
    double teacher_path_h = 0.0, teacher_path_i = 0.0;
    const bool teacher_sums = grad_teacher != nullptr || grad_taus != nullptr;
    T* student_exps = scratch;
    T* teacher_exps = scratch + n;

    double total = 0.0;
    for (std::size_t k = 0; k < o.temperatures.size(); ++k) {
      const double tau = o.temperatures[k];
      const double factor = o.scale_by_t2 ? tau * tau : 1.0;
      const detail::affine<T> student_map{s.map.scale, s.map.shift,
                                          detail::gain_in<T>(student_gain / tau)};
      const detail::affine<T> teacher_map{t.map.scale, t.map.shift,
                                          detail::gain_in<T>(teacher_gain / tau)};

      std::array<double, 7> sums{};
      if (teacher_sums) {
        sums = detail::kd_exp_sweep<T, Arch, detail::kd_sums::both_grads>(
            student, teacher, n, student_map, teacher_map, student_exps, teacher_exps);
      } else if (grad_student != nullptr) {
        const auto part = detail::kd_exp_sweep<T, Arch, detail::kd_sums::student_grad>(
            student, teacher, n, student_map, teacher_map, student_exps, teacher_exps);
        std::copy(part.begin(), part.end(), sums.begin());
      } else {
        const auto part = detail::kd_exp_sweep<T, Arch, detail::kd_sums::loss>(
            student, teacher, n, student_map, teacher_map, nullptr, nullptr);
        std::copy(part.begin(), part.end(), sums.begin());
      }
      const double zs = sums[0];
      const double zt = sums[1];
      const double dlog = std::log(zs) - std::log(zt);
      const double kl = sums[2] / zt + dlog;
      total += factor * kl;
      if (grad_student == nullptr && grad_teacher == nullptr && grad_taus == nullptr) continue;

      // S_s = g.z^ / f and S_t = h.v^ / f (math.md); they give the std paths and d/dtau.
      const double s_student = sums[3] / zs - sums[4] / zt;
      const double s_teacher = sums[6] / zt + (dlog - kl) * sums[5] / zt;
      if (grad_taus != nullptr) {
        const double slope = o.scale_by_t2 ? 2.0 * tau : 0.0;
        grad_taus[k] = weight * (slope * kl - factor * (s_student + s_teacher) / tau);
      }
      const auto std_term = [&](const detail::row_standardization<T>& side, double s_side) {
        return o.standardize && side.std > 0.0 ? weight * factor * s_side / (degrees * side.std)
                                               : 0.0;
      };
      const double student_scale = weight * factor / (tau * s.divisor);
      const double student_std = std_term(s, s_student);
      const double teacher_std = std_term(t, s_teacher);
      if (weighted) {
        student_path_d += student_std;
        student_path_e += student_std * s.offset;
        teacher_path_h += teacher_std;
        teacher_path_i += teacher_std * t.offset;
      }
      const double unweighted = weighted ? 0.0 : 1.0;
      const detail::student_grad_coeffs<T> sc{
          static_cast<T>(student_scale / zs), static_cast<T>(student_scale / zt),
          static_cast<T>(unweighted * student_std),
          static_cast<T>(unweighted * student_std * s.offset)};
      const detail::teacher_grad_coeffs<T> tc{
          static_cast<T>(weight * factor / (tau * t.divisor * zt)), static_cast<T>(dlog - kl),
          static_cast<T>(unweighted * teacher_std),
          static_cast<T>(unweighted * teacher_std * t.offset)};

      const auto pass = [&](auto kernel) {
        kernel(student, teacher, student_exps, teacher_exps, n, student_map, teacher_map,
               student_base, teacher_base, sc, tc, grad_student, grad_teacher);
      };
      const bool first = k == 0;
      if (grad_student != nullptr && grad_teacher != nullptr) {
        pass(first ? detail::multi_temperature_grad_pass<T, Arch, true, true, true>
                   : detail::multi_temperature_grad_pass<T, Arch, true, true, false>);
      } else if (grad_student != nullptr) {
        pass(first ? detail::multi_temperature_grad_pass<T, Arch, true, false, true>
                   : detail::multi_temperature_grad_pass<T, Arch, true, false, false>);
      } else if (grad_teacher != nullptr) {
        pass(first ? detail::multi_temperature_grad_pass<T, Arch, false, true, true>
                   : detail::multi_temperature_grad_pass<T, Arch, false, true, false>);
      }
    }

    if (weighted && grad_student != nullptr) {
      detail::weighted_std_path<T, Arch>(student, class_weights, n, student_base,
                                         static_cast<T>(student_path_d),
                                         static_cast<T>(student_path_e), grad_student);
    }
    if (weighted && grad_teacher != nullptr) {
      detail::weighted_std_path<T, Arch>(teacher, class_weights, n, teacher_base,
                                         static_cast<T>(teacher_path_h),
                                         static_cast<T>(teacher_path_i), grad_teacher);
    }

    // Masked classes: every pass added finite terms there (their exponentials are 0, their
    // exponent arguments clamped); their gradient is exactly 0.
    if (student_scan.usable < n) {
      for (index j = 0; j < n; ++j) {
        if (student[j] != -std::numeric_limits<T>::infinity()) continue;
        if (grad_student != nullptr) grad_student[j] = T(0);
        if (grad_teacher != nullptr) grad_teacher[j] = T(0);
      }
    }
    return total;
  }

  multi_temperature_kd_options options_;
  execution execution_;
  std::vector<T> class_weights_;  ///< per-class weights of the Z-score; empty: unweighted
};

LSKD_NAMESPACE_END
