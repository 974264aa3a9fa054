// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// Decoupled knowledge distillation (DKD, Zhao et al., CVPR 2022), on plain or standardized
/// logits (Sun et al., CVPR 2024): forward, analytic gradients, and the gradient with respect
/// to the temperature.

#include <lskd/config.hpp>
#include <lskd/detail/dkd_kernels.hpp>
#include <lskd/detail/parallel.hpp>
#include <lskd/detail/row_driver.hpp>
#include <lskd/detail/row_sources.hpp>
#include <lskd/options.hpp>
#include <lskd/simd/dispatch.hpp>
#include <lskd/views.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

LSKD_NAMESPACE_BEGIN

template <class Storage, class Arch>
class half_precision_dkd_loss;

/// DKD loss between student and teacher logits, both rows x classes, row-major, given each
/// row's true class.
///
/// For each row, with z the student's logits, v the teacher's and k the row's target: when
/// `standardize` is on, each is Z-scored with its own statistics over all classes (as in
/// lskd::kd_loss); then p_s = softmax(z^ / tau), p_t = softmax(v^ / tau), and
///
///   TCKD = KL([p_t,k, 1 - p_t,k] || [p_s,k, 1 - p_s,k])     (target vs. the rest)
///   NCKD = KL(q_t || q_s), q = softmax over the classes other than k
///   loss = tau^2 * (alpha * TCKD + beta * NCKD)             (tau^2 only with scale_by_t2)
///
/// and the rows combine as `reduction` says (batchmean divides by the rows, or the total row
/// weight). The target class is left out of q exactly: with 2 classes NCKD is exactly 0. Each
/// softmax is shifted by the largest non-target logit and the target's probability is taken as
/// a logistic function of its gap to the log-sum of the rest, so a dominant target (1 - p_k far
/// below the smallest normal number) still gives a finite, accurate TCKD.
///
/// Gradients are exact, through each side's own mean and std when standardizing; the
/// gradient with respect to the base temperature counts the tau^2 factor and both sides.
///
/// Accuracy as lskd::kd_loss: in float, about 1e-5 of the largest gradient entry of the row
/// against a float64 reference; in double, about 1e-13.
///
/// Errors (thrown before any output is written): std::invalid_argument for a bad shape, fewer
/// than 2 classes, a null or out-of-range target (naming the row), a bad option or overlapping
/// outputs; std::domain_error for a NaN or infinite logit (naming the row, the class and whose
/// it is), a masked target, fewer than 2 usable classes, and a constant row when standardizing
/// with eps 0. A class that is -inf in both teacher and student is masked, as in kd_loss: it
/// takes no part in the statistics, the softmax or either term, and its gradients are 0.
///
/// Thread safety: const member functions may be called from many threads at once.
///
/// @tparam T float or double.
/// @tparam Arch an xsimd architecture tag, or lskd::simd::scalar.
template <class T, class Arch = simd::default_arch>
class dkd_loss {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "lskd::dkd_loss works on float or double logits");

 public:
  /// Checks the options: temperature finite and > 0, alpha and beta finite and >= 0, eps
  /// finite and >= 0, ddof 0 or 1, a reduction that is one of lskd::reduction's values, and
  /// `how.threads` in [0, 4096].
  explicit dkd_loss(const dkd_options& options = {}, execution how = {})
      : options_(options), execution_(std::move(how)) {
    detail::check_positive_finite(name, "temperature", options.temperature);
    detail::check_nonnegative_finite(name, "alpha", options.alpha);
    detail::check_nonnegative_finite(name, "beta", options.beta);
    detail::check_common_options(name, options.eps, options.ddof, options.reduction, execution_);
  }

  const dkd_options& options() const noexcept { return options_; }
  const execution& how() const noexcept { return execution_; }
  static constexpr const char* arch_name() noexcept { return Arch::name(); }

  /// The reduced loss.
  ///
  /// @param student, teacher logits, the same rows x classes (classes >= 2).
  /// @param targets `rows` class indices in [0, classes).
  /// @param row_losses `rows` doubles for each row's loss before reduction (weight * loss for
  ///   weighted rows); required with reduction::none (the function then returns their sum).
  double forward(matrix_view<const T> student, matrix_view<const T> teacher,
                 const std::int64_t* targets, double* row_losses = nullptr) const {
    return run(student, teacher, targets, {}, {}, {}, nullptr, row_losses);
  }

  /// The reduced loss over weighted rows (see lskd::row_weights): a row of weight 0 is not
  /// read, its target is not checked, and it adds nothing.
  double forward(matrix_view<const T> student, matrix_view<const T> teacher,
                 const std::int64_t* targets, const row_weights<T>& weights,
                 double* row_losses = nullptr) const {
    return run(student, teacher, targets, weights, {}, {}, nullptr, row_losses);
  }

  /// The reduced loss and its gradients: with respect to the student logits (`grad_student`),
  /// the teacher logits (`grad_teacher`) and the base temperature (`grad_temperature`, one
  /// double), each computed only when given (non-empty / non-null; at least one must be).
  /// With reduction::none they are the gradients of the sum of the row losses. A gradient
  /// view may be exactly its own logits (in place); other overlaps are errors. The trailing
  /// pointers come in kd_loss::forward_backward's order: row losses, then the temperature's.
  double forward_backward(matrix_view<const T> student, matrix_view<const T> teacher,
                          const std::int64_t* targets, matrix_view<T> grad_student,
                          matrix_view<T> grad_teacher = {}, double* row_losses = nullptr,
                          double* grad_temperature = nullptr) const {
    check_some_gradient(grad_student, grad_teacher, grad_temperature, student.rows());
    return run(student, teacher, targets, {}, grad_student, grad_teacher, grad_temperature,
               row_losses);
  }

  /// forward_backward over weighted rows: rows of weight 0 get zero gradients.
  double forward_backward(matrix_view<const T> student, matrix_view<const T> teacher,
                          const std::int64_t* targets, const row_weights<T>& weights,
                          matrix_view<T> grad_student, matrix_view<T> grad_teacher = {},
                          double* row_losses = nullptr,
                          double* grad_temperature = nullptr) const {
    check_some_gradient(grad_student, grad_teacher, grad_temperature, student.rows());
    return run(student, teacher, targets, weights, grad_student, grad_teacher, grad_temperature,
               row_losses);
  }

 private:
  static constexpr const char* name = "lskd::dkd_loss";

  // Runs the same validation and kernels on 16-bit rows widened one at a time.
  template <class Storage, class OtherArch>
  friend class half_precision_dkd_loss;

  /// What one row gives back: its loss (unweighted) and d(weighted row loss)/d(tau).
  struct row_result {
    double loss;
    double grad_temperature;
  };

  /// With rows = 0 an empty gradient view is also a valid view of no rows: no error then.
  static void check_some_gradient(const matrix_view<T>& grad_student,
                                  const matrix_view<T>& grad_teacher, const double* grad_tau,
                                  index rows = 1) {
    if (rows > 0 && grad_student.empty() && grad_teacher.empty() && grad_tau == nullptr) {
      detail::throw_invalid(name, "'grad_student', 'grad_teacher' and 'grad_temperature' are "
                                  "all empty; call forward() for the loss alone");
    }
  }

  /// `In` is the logits' storage type and `Out` the gradients'; a gradient may replace its own
  /// logits only when both are the same type.
  template <class In, class Out>
  void check_arguments(const matrix_view<const In>& student, const matrix_view<const In>& teacher,
                       const std::int64_t* targets, const matrix_view<Out>& grad_student,
                       const matrix_view<Out>& grad_teacher, const double* row_losses) const {
    constexpr bool in_place_allowed = std::is_same<In, Out>::value;
    detail::check_view(name, "student", student);
    detail::check_view(name, "teacher", teacher);
    detail::check_same_shape(name, "teacher", teacher, "student", student);
    if (student.cols() < 2) {
      detail::throw_invalid(name, "DKD needs at least 2 classes (a target and a non-target); "
                                  "got " + std::to_string(student.cols()));
    }
    detail::check_ddof(name, options_.ddof, student.cols(), options_.standardize);
    if (targets == nullptr && student.rows() > 0) {
      detail::throw_invalid(name, "'targets' is null; DKD needs each row's true class");
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

  void check_weights(const row_weights<T>& weights, index rows) const {
    detail::check_row_weights(name, weights, rows, options_.reduction);
  }

  /// Scans both inputs and checks every row of nonzero weight: finite logits, a target in
  /// range, and (standardizing with eps 0) not constant. In row order, so the first bad row is
  /// the one reported whatever the thread count.
  template <class Rows>
  void scan_inputs(const Rows& student, const Rows& teacher, const std::int64_t* targets,
                   const T* weights, std::vector<detail::row_scan<T>>& student_scans,
                   std::vector<detail::row_scan<T>>& teacher_scans) const {
    const index rows = student.view.rows();
    const index n = student.view.cols();
    // Widened rows need a buffer of 2 rows per thread; rows read in place need none.
    const auto buffer_size = static_cast<std::size_t>(Rows::widens ? 2 * n : 0);
    student_scans.resize(static_cast<std::size_t>(rows));
    teacher_scans.resize(static_cast<std::size_t>(rows));
    for (index r = 0; r < rows; ++r) {
      if (weights != nullptr && weights[r] == T(0)) continue;
      if (targets[r] < 0 || targets[r] >= static_cast<std::int64_t>(n)) {
        detail::throw_invalid(name, "'targets' [" + std::to_string(r) + "] (row " +
                                        std::to_string(r) + ") is " + std::to_string(targets[r]) +
                                        "; a target class must be in [0, " + std::to_string(n) +
                                        ")");
      }
    }
    detail::for_row_ranges(execution_, rows, [&](index begin, index end) {
      std::vector<T> buffer(buffer_size);
      T* const first = Rows::widens ? buffer.data() : nullptr;
      T* const second = Rows::widens ? buffer.data() + n : nullptr;
      for (index r = begin; r < end; ++r) {
        const auto i = static_cast<std::size_t>(r);
        if (weights != nullptr && weights[r] == T(0)) continue;
        student_scans[i] = detail::scan_row<T, Arch>(student.row(r, first), n);
        teacher_scans[i] = detail::scan_row<T, Arch>(teacher.row(r, second), n);
      }
    });
    std::vector<T> buffer(buffer_size);
    T* const first = Rows::widens ? buffer.data() : nullptr;
    T* const second = Rows::widens ? buffer.data() + n : nullptr;
    for (index r = 0; r < rows; ++r) {
      const auto i = static_cast<std::size_t>(r);
      if (weights != nullptr && weights[r] == T(0)) continue;
      if (!student_scans[i].finite || !teacher_scans[i].finite) {
        const T* student_row = student.row(r, first);
        const T* teacher_row = teacher.row(r, second);
        detail::classify_masked_row(name, student_row, teacher_row, n, r, student_scans[i],
                                    teacher_scans[i]);
        const auto target = static_cast<index>(targets[r]);
        if (student_row[target] == -std::numeric_limits<T>::infinity()) {
          detail::throw_domain(name, "row " + std::to_string(r) + ": its target class " +
                                         std::to_string(target) +
                                         " is masked (-inf in both teacher and student)");
        }
      }
      const index needed = std::max<index>(2, options_.standardize ? options_.ddof + 1 : 1);
      if (student_scans[i].usable < needed) {
        detail::throw_domain(name, "row " + std::to_string(r) + " has " +
                                       std::to_string(student_scans[i].usable) +
                                       " usable classes (not -inf in both teacher and student); "
                                       "DKD needs the target and at least one other" +
                                       (needed > 2 ? std::string(", and its std with ddof = ") +
                                                         std::to_string(options_.ddof) +
                                                         " needs " + std::to_string(needed)
                                                   : std::string()));
      }
      if (options_.standardize && options_.eps == 0.0) {
        check_not_constant(student_scans[i], "student logits", r);
        check_not_constant(teacher_scans[i], "teacher logits", r);
      }
    }
  }

  static void check_not_constant(const detail::row_scan<T>& scan, const char* whose, index row) {
    if (scan.min == scan.max) {
      detail::throw_domain(name, std::string(whose) + " row " + std::to_string(row) +
                                     " has all logits equal (std 0) and eps is 0, so its "
                                     "Z-score is 0/0; use eps > 0");
    }
  }

  double run(const matrix_view<const T>& student, const matrix_view<const T>& teacher,
             const std::int64_t* targets, const row_weights<T>& weights,
             const matrix_view<T>& grad_student, const matrix_view<T>& grad_teacher,
             double* grad_temperature, double* row_losses) const {
    check_arguments(student, teacher, targets, grad_student, grad_teacher, row_losses);
    detail::check_side_buffers(name, student, teacher, grad_student, grad_teacher,
                               weights.weights, targets, row_losses, "grad_temperature",
                               grad_temperature, 1);
    return run_rows(detail::direct_rows<T>{student}, detail::direct_rows<T>{teacher}, targets,
                    weights, detail::direct_gradient<T>{grad_student},
                    detail::direct_gradient<T>{grad_teacher}, grad_temperature, row_losses);
  }

  /// The loss over rows read in place or widened per row from 16-bit storage, gradients
  /// written in place or rounded per row to 16-bit storage. The arguments have been checked.
  template <class Rows, class Gradient>
  double run_rows(const Rows& student, const Rows& teacher, const std::int64_t* targets,
                  const row_weights<T>& weights, const Gradient& grad_student,
                  const Gradient& grad_teacher, double* grad_temperature,
                  double* row_losses) const {
    const index rows = student.view.rows();
    const index n = student.view.cols();
    check_weights(weights, rows);
    if (rows == 0) {
      if (grad_temperature != nullptr) *grad_temperature = 0.0;
      return 0.0;
    }

    // Every row is checked before any output is written.
    std::vector<detail::row_scan<T>> student_scans;
    std::vector<detail::row_scan<T>> teacher_scans;
    scan_inputs(student, teacher, targets, weights.weights, student_scans, teacher_scans);

    // Row r enters the reduced loss as weight_of(r) * loss_r.
    double total_weight = static_cast<double>(rows);
    if (weights.weights != nullptr) {
      total_weight = 0.0;
      for (index r = 0; r < rows; ++r) total_weight += static_cast<double>(weights.weights[r]);
    }
    double divisor = 1.0;
    if (options_.reduction == reduction::batchmean) {
      divisor = weights.normalizer > 0.0 ? weights.normalizer : total_weight;
    }

    // A gradient that could overflow T is refused, as in kd_loss, still before any output is
    // written; DKD's terms scale it by at most alpha + beta.
    const dkd_options& o = options_;
    for (index r = 0; r < rows; ++r) {
      const auto i = static_cast<std::size_t>(r);
      const double w = weights.weights == nullptr ? 1.0 : static_cast<double>(weights.weights[r]);
      if (w == 0.0) continue;
      const double scale = (divisor > 0.0 ? w / divisor : 0.0) *
                           (std::fabs(o.alpha) + std::fabs(o.beta));
      detail::check_gradient_fits(name, student_scans[i], teacher_scans[i],
                                  !grad_student.empty(), !grad_teacher.empty(), o.standardize,
                                  o.ddof, o.eps, o.temperature, o.scale_by_t2, scale, r,
                                  /*floored=*/o.standardize);
    }

    const bool wants_gradient = !grad_student.empty() || !grad_teacher.empty() ||
                                grad_temperature != nullptr;
    std::vector<double> losses(static_cast<std::size_t>(rows));
    std::vector<double> tau_grads(static_cast<std::size_t>(rows));
    detail::for_row_ranges(execution_, rows, [&](index begin, index end) {
      // Each range has its own scratch: the row's exponentials (2 rows), and for 16-bit
      // storage the widened logits (2 rows) and the float gradients (2 rows). O(classes).
      const auto row_size = static_cast<std::size_t>(n);
      const std::size_t exps = wants_gradient ? 2 * row_size : 0;
      const std::size_t widened = Rows::widens ? 2 * row_size : 0;
      const std::size_t narrowed = Gradient::narrows ? 2 * row_size : 0;
      std::vector<T> scratch(exps + widened + narrowed);
      T* const student_logits = Rows::widens ? scratch.data() + exps : nullptr;
      T* const teacher_logits = Rows::widens ? student_logits + n : nullptr;
      T* const student_gradient = Gradient::narrows ? scratch.data() + exps + widened : nullptr;
      T* const teacher_gradient = Gradient::narrows ? student_gradient + n : nullptr;
      for (index r = begin; r < end; ++r) {
        const auto i = static_cast<std::size_t>(r);
        T* gs = grad_student.empty() ? nullptr : grad_student.row(r, student_gradient);
        T* gt = grad_teacher.empty() ? nullptr : grad_teacher.row(r, teacher_gradient);
        const double row_weight =
            weights.weights == nullptr ? 1.0 : static_cast<double>(weights.weights[r]);
        if (row_weight == 0.0) {
          if (gs != nullptr) std::fill(gs, gs + n, T(0));
          if (gt != nullptr) std::fill(gt, gt + n, T(0));
          losses[i] = 0.0;
          tau_grads[i] = 0.0;
        } else {
          const double weight = divisor > 0.0 ? row_weight / divisor : 0.0;
          const row_result result =
              row_loss(student.row(r, student_logits), teacher.row(r, teacher_logits), n,
                       static_cast<index>(targets[r]), student_scans[i], teacher_scans[i],
                       weight, wants_gradient, gs, gt, scratch.data());
          losses[i] = row_weight * result.loss;
          tau_grads[i] = result.grad_temperature;
        }
        if (gs != nullptr) grad_student.finish(r, gs);
        if (gt != nullptr) grad_teacher.finish(r, gt);
      }
    });

    // Rows are combined in index order, in double: the same result for any schedule.
    double total = 0.0;
    double tau_total = 0.0;
    for (index r = 0; r < rows; ++r) {
      total += losses[static_cast<std::size_t>(r)];
      tau_total += tau_grads[static_cast<std::size_t>(r)];
    }
    if (row_losses != nullptr) {
      for (index r = 0; r < rows; ++r) row_losses[r] = losses[static_cast<std::size_t>(r)];
    }
    if (grad_temperature != nullptr) *grad_temperature = tau_total;
    if (options_.reduction != reduction::batchmean) return total;
    return divisor > 0.0 ? total / divisor : 0.0;
  }

  /// Sums of kd_exp_sweep over the classes other than `target`: the row before it and the row
  /// after it, each swept on its own, so the target adds nothing at all.
  template <detail::kd_sums Sums>
  static std::array<double, static_cast<std::size_t>(Sums)> non_target_sums(
      const T* student, const T* teacher, index n, index target,
      const detail::affine<T>& student_map, const detail::affine<T>& teacher_map,
      T* student_exps, T* teacher_exps) {
    constexpr bool stores = Sums != detail::kd_sums::loss;
    std::array<double, static_cast<std::size_t>(Sums)> total{};
    if (target > 0) {
      total = detail::kd_exp_sweep<T, Arch, Sums>(student, teacher, target, student_map,
                                                  teacher_map, student_exps, teacher_exps);
    }
    if (target + 1 < n) {
      const index after = target + 1;
      const auto rest = detail::kd_exp_sweep<T, Arch, Sums>(
          student + after, teacher + after, n - after, student_map, teacher_map,
          stores ? student_exps + after : nullptr, stores ? teacher_exps + after : nullptr);
      for (std::size_t k = 0; k < total.size(); ++k) total[k] += rest[k];
    }
    return total;
  }

  /// log(1 + exp(x)) without overflow.
  static double softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::fabs(x))); }

  /// One row. Notation (docs/beyond.md): u are exponent arguments shifted by the largest
  /// non-target logit, so the non-target sums Z = sum exp(u) are >= 1; the target's own u_k
  /// may be large. Returns the row's loss and, when `wants_gradient`, d(weight * f * L)/d(tau);
  /// writes the requested gradients scaled by `weight`.
  row_result row_loss(const T* student, const T* teacher, index n, index target,
                      const detail::row_scan<T>& student_scan,
                      const detail::row_scan<T>& teacher_scan, double weight,
                      bool wants_gradient, T* grad_student, T* grad_teacher, T* scratch) const {
    const dkd_options& o = options_;
    const double tau = o.temperature;
    const double factor = o.scale_by_t2 ? tau * tau : 1.0;

    // Statistics over all classes, then the exponent maps re-shifted by the non-target max.
    auto s = detail::standardization_of<T, Arch>(student, n, student_scan, o.standardize, o.ddof,
                                                 o.eps, tau);
    auto t = detail::standardization_of<T, Arch>(teacher, n, teacher_scan, o.standardize, o.ddof,
                                                 o.eps, tau);
    const T student_rest_max =
        detail::max_except<T, Arch>(student, n, target, student_scan.max);
    const T teacher_rest_max =
        detail::max_except<T, Arch>(teacher, n, target, teacher_scan.max);
    s.offset -= (static_cast<double>(student_scan.max) - student_rest_max) / s.divisor;
    t.offset -= (static_cast<double>(teacher_scan.max) - teacher_rest_max) / t.divisor;
    s.map.shift = student_rest_max * s.map.scale;
    t.map.shift = teacher_rest_max * t.map.scale;

    // The target's exponent arguments, in double (they may be far above 0).
    const auto exponent = [](T x, const detail::affine<T>& map) {
      return (static_cast<double>(x) * map.scale - static_cast<double>(map.shift)) * map.gain;
    };
    const double student_target_u = exponent(student[target], s.map);
    const double teacher_target_u = exponent(teacher[target], t.map);

    std::array<double, 7> sums{};
    if (wants_gradient) {
      sums = non_target_sums<detail::kd_sums::both_grads>(student, teacher, n, target, s.map,
                                                          t.map, scratch, scratch + n);
    } else {
      const auto loss_sums = non_target_sums<detail::kd_sums::loss>(
          student, teacher, n, target, s.map, t.map, nullptr, nullptr);
      std::copy(loss_sums.begin(), loss_sums.end(), sums.begin());
    }
    const double zs = sums[0];
    const double zt = sums[1];
    const double log_zs = std::log(zs);
    const double log_zt = std::log(zt);

    // Binary target-vs-rest distributions, as logistic functions of the target's gap.
    const double gap_s = student_target_u - log_zs;
    const double gap_t = teacher_target_u - log_zt;
    const double log_ps = -softplus(-gap_s);      // log p_s,k
    const double log_rest_s = -softplus(gap_s);   // log (1 - p_s,k)
    const double log_pt = -softplus(-gap_t);
    const double log_rest_t = -softplus(gap_t);
    const double ps = std::exp(log_ps);
    const double pt = std::exp(log_pt);
    const double rest_t = std::exp(log_rest_t);
    const double tckd = pt * (log_pt - log_ps) + rest_t * (log_rest_t - log_rest_s);

    // Non-target KL over the renormalized rest.
    const double dlog = log_zs - log_zt;
    const double nckd = sums[2] / zt + dlog;
    const double loss = o.alpha * tckd + o.beta * nckd;
    if (!wants_gradient) return {factor * loss, 0.0};

    // Student: G_k = alpha (p_s,k - p_t,k); G_j = c_s q_s,j - beta q_t,j elsewhere, and
    // S_s = sum_j G_j u_s,j for the path through the std (and the temperature).
    const double gk_student = o.alpha * (ps - pt);
    const double c_student = o.alpha * (pt - ps) + o.beta;
    const double s_student =
        gk_student * student_target_u + c_student * sums[3] / zs - o.beta * sums[4] / zt;

    // Teacher: with L = log(p_t,k / p_s,k) - log((1 - p_t,k) / (1 - p_s,k)),
    // H_k = alpha L p_t,k (1 - p_t,k); H_j = q_t,j (c_t + beta (u_t,j - u_s,j)) elsewhere.
    const double logit_gap = (log_pt - log_ps) - (log_rest_t - log_rest_s);
    const double hk_teacher = o.alpha * logit_gap * std::exp(log_pt + log_rest_t);
    const double c_teacher = -hk_teacher + o.beta * (dlog - nckd);
    const double mean_ut_rest = sums[5] / zt;
    const double s_teacher =
        hk_teacher * (teacher_target_u - mean_ut_rest) +
        o.beta * (sums[6] / zt + (dlog - nckd) * mean_ut_rest);

    // d(f L)/d(tau) = f' L - f (S_s + S_t) / tau, since L depends on tau through z^ / tau.
    const double factor_slope = o.scale_by_t2 ? 2.0 * tau : 0.0;
    const double grad_tau = weight * (factor_slope * loss - factor * (s_student + s_teacher) / tau);

    const double degrees = static_cast<double>(student_scan.usable - o.ddof);
    const auto std_term = [&](const detail::row_standardization<T>& side, double s_side) {
      return o.standardize && side.std > 0.0 ? weight * factor * s_side / (degrees * side.std)
                                             : 0.0;
    };

    const double student_scale = weight * factor / (tau * s.divisor);
    const double student_std = std_term(s, s_student);
    const detail::student_grad_coeffs<T> sc{
        static_cast<T>(student_scale * c_student / zs), static_cast<T>(student_scale * o.beta / zt),
        static_cast<T>(student_std * tau), static_cast<T>(student_std * s.offset)};
    const double teacher_scale = weight * factor / (tau * t.divisor);
    const double teacher_std = std_term(t, s_teacher);
    const detail::dkd_teacher_coeffs<T> tc{
        static_cast<T>(teacher_scale * o.beta / zt), static_cast<T>(teacher_scale * c_teacher / zt),
        static_cast<T>(teacher_std * tau), static_cast<T>(teacher_std * t.offset)};

    // The target's entries are computed first: an in-place gradient overwrites the logits.
    const T student_target_grad = static_cast<T>(
        student_scale * gk_student - student_std * (tau * student_target_u + s.offset));
    const T teacher_target_grad = static_cast<T>(
        teacher_scale * hk_teacher - teacher_std * (tau * teacher_target_u + t.offset));

    const auto sweep = [&](auto kernel) {
      const index after = target + 1;
      if (target > 0) {
        kernel(student, teacher, scratch, scratch + n, target, s.map, t.map, sc, tc, grad_student,
               grad_teacher);
      }
      if (after < n) {
        kernel(student + after, teacher + after, scratch + after, scratch + n + after, n - after,
               s.map, t.map, sc, tc, grad_student == nullptr ? nullptr : grad_student + after,
               grad_teacher == nullptr ? nullptr : grad_teacher + after);
      }
    };
    const bool masked = student_scan.usable < n;
    if (grad_student != nullptr && grad_teacher != nullptr) {
      sweep(masked ? detail::dkd_grad_sweep<T, Arch, true, true, true>
                   : detail::dkd_grad_sweep<T, Arch, true, true, false>);
    } else if (grad_student != nullptr) {
      sweep(masked ? detail::dkd_grad_sweep<T, Arch, true, false, true>
                   : detail::dkd_grad_sweep<T, Arch, true, false, false>);
    } else if (grad_teacher != nullptr) {
      sweep(masked ? detail::dkd_grad_sweep<T, Arch, false, true, true>
                   : detail::dkd_grad_sweep<T, Arch, false, true, false>);
    }
    if (grad_student != nullptr) grad_student[target] = student_target_grad;
    if (grad_teacher != nullptr) grad_teacher[target] = teacher_target_grad;
    return {factor * loss, grad_tau};
  }

  dkd_options options_;
  execution execution_;
};

LSKD_NAMESPACE_END
