// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// The knowledge-distillation loss with logit standardization (Sun et al., CVPR 2024), or
/// classic KD: forward, and the fused forward and analytic gradient.

#include <lskd/config.hpp>
#include <lskd/detail/kd_coefficients.hpp>
#include <lskd/detail/masked_rows.hpp>
#include <lskd/detail/parallel.hpp>
#include <lskd/detail/row_driver.hpp>
#include <lskd/detail/row_sources.hpp>
#include <lskd/detail/weighted_moments.hpp>
#include <lskd/options.hpp>
#include <lskd/simd/dispatch.hpp>
#include <lskd/views.hpp>

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

LSKD_NAMESPACE_BEGIN

template <class Storage, class Arch>
class half_precision_kd_loss;

/// KD loss between student and teacher logits, both rows x classes, row-major.
///
/// For each row, with z the student's logits and v the teacher's: when `standardize` is on,
/// each is Z-scored with its own statistics, z^ = (z - mean(z)) / (std(z) + eps) (std over the
/// row's classes, dividing by classes - ddof); then p_s = softmax(z^ / tau),
/// p_t = softmax(v^ / tau), and the row's loss is tau^2 * sum_c p_t,c (log p_t,c - log p_s,c)
/// (without tau^2 when `scale_by_t2` is off). The rows combine as `reduction` says.
///
/// Gradients are exact: the student's gradient flows through the student's own mean and std;
/// the teacher's, when asked for, through the teacher's. A row of equal logits has std 0; its
/// Z-score is 0 and its gradient (g - mean g) / eps, as in the reference formula.
///
/// Accuracy: sums over classes use blocked two-level summation (about 21 units of roundoff of T
/// relative to the sum of magnitudes, whatever the row length); the variance comes from
/// shifted sums when they are provably as accurate, else from the corrected two-pass formula
/// on rows scaled by a power of two, so offsets like 1000 + N(0, 1) and magnitudes up to the
/// largest finite T are fine (docs/math.md); softmax subtracts the row's max, so
/// logits of magnitude 1e4 with standardization off do not overflow. In float, the loss and
/// gradients agree with a float64 reference to a relative error of about 1e-5 of the largest
/// gradient entry of the row; in double, about 1e-13.
///
/// Errors (thrown before any output is written): std::invalid_argument for a bad shape,
/// leading dimension, null pointer, overlapping output or option, naming the argument;
/// std::domain_error for a NaN or infinite logit, naming the row and whether it is the
/// student's or the teacher's, and for a constant row when eps is 0. Zero rows give loss 0.
///
/// Thread safety: const member functions may be called from many threads at once.
///
/// @tparam T float or double.
/// @tparam Arch an xsimd architecture tag, or lskd::simd::scalar; defaults to the best the
///   compile flags allow.
template <class T, class Arch = simd::default_arch>
class kd_loss {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "lskd::kd_loss works on float or double logits");

 public:
  /// Checks the options: temperature finite and > 0, eps finite and >= 0, ddof 0 or 1, a
  /// reduction that is one of lskd::reduction's values. `how` spreads rows over threads (see
  /// lskd::execution; `how.threads` in [0, 4096]); results do not depend on it.
  explicit kd_loss(const kd_options& options = {}, execution how = {})
      : options_(options), execution_(std::move(how)) {
    detail::check_positive_finite(name, "temperature", options.temperature);
    detail::check_common_options(name, options.eps, options.ddof, options.reduction, execution_);
  }

  /// With per-class weights c for the Z-score statistics (the weighted Z-score): each row's
  /// mean is sum c x / W and its variance sum c (x - mean)^2 / W, W = sum c over the row's
  /// classes that are not masked; all-ones weights give the unweighted statistics with
  /// ddof = 0. The gradients flow through the weighted mean and std. Requires `standardize`,
  /// ddof = 0 (the convention above; anything else is refused rather than reinterpreted) and
  /// eps > 0 (a row can have a weighted std of 0 without being constant). `class_weights`
  /// holds one value per class, finite and >= 0, with a positive sum; every call must pass
  /// logits with exactly that many classes. With class weights, gradients may not be written
  /// in place. See docs/beyond.md.
  static kd_loss with_class_weights(const kd_options& options,
                                    const std::vector<double>& class_weights,
                                    execution how = {}) {
    kd_loss loss(options, std::move(how));
    detail::check_class_weight_options(name, options.standardize, options.ddof, options.eps);
    loss.class_weights_ = detail::checked_class_weights<T>(
        name, class_weights, static_cast<index>(class_weights.size()));
    return loss;
  }

  const kd_options& options() const noexcept { return options_; }
  const execution& how() const noexcept { return execution_; }
  /// The per-class weights of the Z-score (empty when unweighted): scaled by a power of two so
  /// that the largest is in [0.5, 1) (only their ratios matter), then rounded to T.
  const std::vector<T>& class_weights() const noexcept { return class_weights_; }

  /// The architecture this functor's kernels run on ("scalar", "sse2", "avx512f", ...).
  static constexpr const char* arch_name() noexcept { return Arch::name(); }

  /// The reduced loss.
  ///
  /// @param student, teacher logits, the same rows x classes; leading dimensions of their own.
  /// @param row_losses `rows` doubles that receive each row's loss before reduction; required
  ///   with reduction::none (the function then returns their sum), optional otherwise.
  double forward(matrix_view<const T> student, matrix_view<const T> teacher,
                 double* row_losses = nullptr) const {
    return run(student, teacher, {}, {}, {}, row_losses);
  }

  /// The reduced loss over weighted rows (see lskd::row_weights): a row of weight 0 is not
  /// read, adds nothing and is not checked for NaN; batchmean divides by the total weight (or
  /// the normalizer); if every row has weight 0 the loss is 0. `row_losses` receives
  /// weight * loss per row.
  double forward(matrix_view<const T> student, matrix_view<const T> teacher,
                 const row_weights<T>& weights, double* row_losses = nullptr) const {
    return run(student, teacher, weights, {}, {}, row_losses);
  }

  /// The reduced loss, and the gradient of the reduced loss (with reduction::none, of the sum
  /// of the row losses) with respect to the student logits and, if `grad_teacher` is not
  /// empty, the teacher logits. Every element of each gradient view is written.
  ///
  /// `grad_student` may be exactly `student` (same pointer and leading dimension) to
  /// overwrite the logits with their gradient; `grad_teacher` likewise `teacher`. Any other
  /// overlap between an output and an input or another output is an error. Pass an empty
  /// view, `lskd::matrix_view<T>{}` (a bare `{}` is ambiguous with the row_weights overload),
  /// as `grad_student` to get the teacher's gradient alone.
  ///
  /// `grad_temperature`, when not null, receives d(reduced loss)/d(temperature) (one double),
  /// counting the tau^2 factor and both the student's and the teacher's dependence on tau: the
  /// gradient a learnable temperature needs. It may be the only output asked for (both views
  /// empty). See docs/beyond.md.
  double forward_backward(matrix_view<const T> student, matrix_view<const T> teacher,
                          matrix_view<T> grad_student, matrix_view<T> grad_teacher = {},
                          double* row_losses = nullptr,
                          double* grad_temperature = nullptr) const {
    check_some_gradient(grad_student, grad_teacher, grad_temperature, student.rows());
    return run(student, teacher, {}, grad_student, grad_teacher, row_losses, grad_temperature);
  }

  /// forward_backward over weighted rows: rows of weight 0 get a zero gradient; see the
  /// weighted forward() for the loss.
  double forward_backward(matrix_view<const T> student, matrix_view<const T> teacher,
                          const row_weights<T>& weights, matrix_view<T> grad_student,
                          matrix_view<T> grad_teacher = {}, double* row_losses = nullptr,
                          double* grad_temperature = nullptr) const {
    check_some_gradient(grad_student, grad_teacher, grad_temperature, student.rows());
    return run(student, teacher, weights, grad_student, grad_teacher, row_losses,
               grad_temperature);
  }

 private:
  static constexpr const char* name = "lskd::kd_loss";

  // Runs the same validation and kernels on 16-bit rows widened one at a time.
  template <class Storage, class OtherArch>
  friend class half_precision_kd_loss;

  /// With rows = 0 an empty gradient view is also a valid view of no rows: no error then.
  static void check_some_gradient(const matrix_view<T>& grad_student,
                                  const matrix_view<T>& grad_teacher,
                                  const double* grad_temperature, index rows = 1) {
    if (rows > 0 && grad_student.empty() && grad_teacher.empty() && grad_temperature == nullptr) {
      detail::throw_invalid(name, "'grad_student' and 'grad_teacher' are both empty; call "
                                  "forward() for the loss alone");
    }
  }

  /// `In` is the logits' storage type and `Out` the gradients' (T, or 16-bit storage read one
  /// widened row at a time); a gradient may replace its own logits only when both are the same
  /// type and there are no class weights.
  template <class In, class Out>
  void check_arguments(const matrix_view<const In>& student, const matrix_view<const In>& teacher,
                       const matrix_view<Out>& grad_student, const matrix_view<Out>& grad_teacher,
                       const double* row_losses) const {
    detail::check_view(name, "student", student);
    detail::check_view(name, "teacher", teacher);
    detail::check_same_shape(name, "teacher", teacher, "student", student);
    detail::check_ddof(name, options_.ddof, student.cols(), options_.standardize);
    const bool weighted = !class_weights_.empty();
    const bool in_place_allowed = !weighted && std::is_same<In, Out>::value;
    if (weighted && static_cast<index>(class_weights_.size()) != student.cols()) {
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

  /// The smallest row whose validation failed, and its error. Threads validate their own
  /// ranges and offer their first failure; the smallest row wins, so the error reported is the
  /// same for any thread count.
  struct first_failure {
    std::mutex mutex;
    index row = -1;
    std::exception_ptr error;
    void offer(index r, std::exception_ptr e) {
      const std::lock_guard<std::mutex> lock(mutex);
      if (row < 0 || r < row) {
        row = r;
        error = std::move(e);
      }
    }
  };

  /// Scans and validates rows [begin, end) of both inputs; stops at the range's first bad row
  /// and offers its error to `failure`. Nothing is written but the scans.
  template <class Rows>
  void scan_range(index begin, index end, const Rows& student, const Rows& teacher,
                  const T* weights, double weight_scale, bool student_gradient,
                  bool teacher_gradient, detail::row_scan<T>* student_scans,
                  detail::row_scan<T>* teacher_scans, first_failure& failure) const {
    const index n = student.view.cols();
    // Widened rows need a buffer of 2 rows; rows read in place need none.
    std::vector<T> buffer(static_cast<std::size_t>(Rows::widens ? 2 * n : 0));
    T* const first = Rows::widens ? buffer.data() : nullptr;
    T* const second = Rows::widens ? buffer.data() + n : nullptr;
    for (index r = begin; r < end; ++r) {
      const auto i = static_cast<std::size_t>(r);
      if (weights != nullptr && weights[r] == T(0)) continue;  // a masked row is not read
      const T* const student_row = student.row(r, first);
      const T* const teacher_row = teacher.row(r, second);
      student_scans[i] = detail::scan_row<T, Arch>(student_row, n);
      teacher_scans[i] = detail::scan_row<T, Arch>(teacher_row, n);
      const double row_weight =
          weight_scale * (weights == nullptr ? 1.0 : static_cast<double>(weights[r]));
      try {
        validate_row(student_row, teacher_row, n, r, row_weight, student_gradient, teacher_gradient,
                     student_scans[i], teacher_scans[i]);
      } catch (...) {
        failure.offer(r, std::current_exception());
        return;
      }
    }
  }

  /// The checks of one scanned row, in a fixed order: a non-finite value (or the masked
  /// classes it marks), too few usable classes, a constant row with eps 0, class weights left,
  /// and a gradient that could overflow. `row_weight` scales the row's gradient (after
  /// batchmean's division).
  void validate_row(const T* student, const T* teacher, index n, index r, double row_weight,
                    bool student_gradient, bool teacher_gradient, detail::row_scan<T>& student_scan,
                    detail::row_scan<T>& teacher_scan) const {
    const index needed = options_.standardize ? options_.ddof + 1 : 1;
    if (!student_scan.finite || !teacher_scan.finite) {
      detail::classify_masked_row(name, student, teacher, n, r, student_scan, teacher_scan);
    }
    if (student_scan.usable < needed) {
      detail::throw_domain(
          name, "row " + std::to_string(r) + " has " + std::to_string(student_scan.usable) +
                    " usable classes (not -inf in both teacher and student); " +
                    (options_.standardize ? "its std with ddof = " + std::to_string(options_.ddof) +
                                                " needs at least "
                                          : "the softmax needs at least ") +
                    std::to_string(needed));
    }
    if (options_.standardize && options_.eps == 0.0) {
      check_not_constant(student_scan, "student logits", r);
      check_not_constant(teacher_scan, "teacher logits", r);
    }
    if (!class_weights_.empty() && student_scan.usable < n) {
      check_weighted_classes_left(student, n, r);
    }
    const kd_options& o = options_;
    detail::check_gradient_fits(name, student_scan, teacher_scan, student_gradient,
                                teacher_gradient, o.standardize, o.ddof, o.eps, o.temperature,
                                o.scale_by_t2, row_weight, r);
  }

  /// A row whose masked classes hold all the class weight has no weighted statistics.
  void check_weighted_classes_left(const T* student, index n, index row) const {
    double total = 0.0;
    for (index c = 0; c < n; ++c) {
      if (student[c] != -std::numeric_limits<T>::infinity()) total += class_weights_[c];
    }
    if (!(total > 0.0)) {
      detail::throw_domain(name, "row " + std::to_string(row) + " masks every class that has a "
                                 "class weight > 0, so its weighted statistics are 0/0");
    }
  }

  /// A constant row has std 0: with eps = 0 its Z-score is 0 / 0.
  static void check_not_constant(const detail::row_scan<T>& scan, const char* whose, index row) {
    if (scan.min == scan.max) {
      detail::throw_domain(name, std::string(whose) + " row " + std::to_string(row) +
                                     " has all logits equal (std 0) and eps is 0, so its "
                                     "Z-score is 0/0; use eps > 0");
    }
  }

  /// Row weights are finite and >= 0; a normalizer is finite and >= 0, and only batchmean
  void check_weights(const row_weights<T>& weights, index rows) const {
    detail::check_row_weights(name, weights, rows, options_.reduction);
  }

  double run(const matrix_view<const T>& student, const matrix_view<const T>& teacher,
             const row_weights<T>& weights, const matrix_view<T>& grad_student,
             const matrix_view<T>& grad_teacher, double* row_losses,
             double* grad_temperature = nullptr) const {
    check_arguments(student, teacher, grad_student, grad_teacher, row_losses);
    detail::check_side_buffers(name, student, teacher, grad_student, grad_teacher,
                               weights.weights, nullptr, row_losses, "grad_temperature",
                               grad_temperature, 1);
    return run_rows(detail::direct_rows<T>{student}, detail::direct_rows<T>{teacher}, weights,
                    detail::direct_gradient<T>{grad_student},
                    detail::direct_gradient<T>{grad_teacher}, row_losses, grad_temperature);
  }

  /// The loss over rows from `student` and `teacher` (read in place, or widened per row from
  /// 16-bit storage), gradients to `grad_student` and `grad_teacher` (written in place, or
  /// rounded per row to 16-bit storage). The arguments have been checked.
  template <class Rows, class Gradient>
  double run_rows(const Rows& student, const Rows& teacher, const row_weights<T>& weights,
                  const Gradient& grad_student, const Gradient& grad_teacher, double* row_losses,
                  double* grad_temperature) const {
    const index rows = student.view.rows();
    const index n = student.view.cols();
    check_weights(weights, rows);
    if (rows == 0) {
      if (grad_temperature != nullptr) *grad_temperature = 0.0;
      return 0.0;
    }

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

    // Every row is scanned and checked before any output is written: phase one of the
    // parallel loop below; phase two runs only if no row failed, and the first bad row's
    // error is rethrown after it.
    // Not value-initialized: each thread writes the scans of its own rows, and zeroing them
    // here would move every cache line of the other thread's half between cores on each call.
    const std::unique_ptr<detail::row_scan<T>[]> student_scans(
        new detail::row_scan<T>[static_cast<std::size_t>(rows)]);
    const std::unique_ptr<detail::row_scan<T>[]> teacher_scans(
        new detail::row_scan<T>[static_cast<std::size_t>(rows)]);
    first_failure failure;
    const auto scan_phase = [&](index begin, index end) {
      scan_range(begin, end, student, teacher, weights.weights,
                 divisor > 0.0 ? 1.0 / divisor : 0.0, !grad_student.empty(),
                 !grad_teacher.empty(), student_scans.get(), teacher_scans.get(), failure);
    };
    const auto all_valid = [&] { return !failure.error; };
    const auto weight_of = [&](index r) {
      const double w = weights.weights == nullptr ? 1.0 : static_cast<double>(weights.weights[r]);
      return divisor > 0.0 ? w / divisor : 0.0;  // every row masked: loss 0, gradient 0
    };

    const bool wants_gradient =
        !grad_student.empty() || !grad_teacher.empty() || grad_temperature != nullptr;
    std::vector<double> losses(static_cast<std::size_t>(rows));
    std::vector<double> tau_grads(grad_temperature != nullptr ? static_cast<std::size_t>(rows) : 0);
    const auto loss_phase = [&](index begin, index end) {
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
        const double row_weight = weights.weights == nullptr ? 1.0
                                                             : static_cast<double>(weights.weights[r]);
        if (row_weight == 0.0) {
          if (gs != nullptr) std::fill(gs, gs + n, T(0));
          if (gt != nullptr) std::fill(gt, gt + n, T(0));
          losses[i] = 0.0;
        } else {
          losses[i] = row_weight * row_loss(student.row(r, student_logits),
                                            teacher.row(r, teacher_logits), n,
                                            student_scans[i], teacher_scans[i], weight_of(r), gs,
                                            gt, scratch.data(),
                                            grad_temperature != nullptr ? &tau_grads[i]
                                                                        : nullptr);
        }
        if (gs != nullptr) grad_student.finish(r, gs);
        if (gt != nullptr) grad_teacher.finish(r, gt);
      }
    };
    detail::for_row_ranges_in_two_phases(execution_, rows, scan_phase, all_valid, loss_phase);
    if (failure.error) std::rethrow_exception(failure.error);

    // Rows are combined in index order, in double: the same result for any schedule.
    double total = 0.0;
    for (double loss : losses) total += loss;
    if (row_losses != nullptr) {
      for (index r = 0; r < rows; ++r) row_losses[r] = losses[static_cast<std::size_t>(r)];
    }
    if (grad_temperature != nullptr) {
      // Written only now, after every row has validated.
      double sum = 0.0;
      for (double g : tau_grads) sum += g;
      *grad_temperature = sum;
    }
    if (options_.reduction != reduction::batchmean) return total;
    return divisor > 0.0 ? total / divisor : 0.0;
  }

  /// One row: returns its loss and writes the requested gradients, scaled by `weight`, and
  /// weight * d(loss)/d(tau) to `grad_tau` when it is not null.
  double row_loss(const T* student, const T* teacher, index n,
                  const detail::row_scan<T>& student_scan, const detail::row_scan<T>& teacher_scan,
                  double weight, T* grad_student, T* grad_teacher, T* scratch,
                  double* grad_tau = nullptr) const {
    const kd_options& o = options_;
    const double tau = o.temperature;
    const double factor = o.scale_by_t2 ? tau * tau : 1.0;

    // With class weights the statistics are weighted, the std path of each gradient is
    // weighted per class, and `degrees` becomes the row's total weight W.
    const bool weighted = !class_weights_.empty();
    double total_weight = 0.0;
    const auto s = weighted ? detail::weighted_standardization_of<T, Arch>(
                                  student, class_weights_.data(), n, student_scan, o.eps, tau,
                                  total_weight)
                            : detail::standardization_of<T, Arch>(student, n, student_scan,
                                                                  o.standardize, o.ddof, o.eps,
                                                                  tau);
    const auto t = weighted ? detail::weighted_standardization_of<T, Arch>(
                                  teacher, class_weights_.data(), n, teacher_scan, o.eps, tau,
                                  total_weight)
                            : detail::standardization_of<T, Arch>(teacher, n, teacher_scan,
                                                                  o.standardize, o.ddof, o.eps,
                                                                  tau);

    if (grad_student == nullptr && grad_teacher == nullptr && grad_tau == nullptr) {
      const auto sums = detail::kd_exp_sweep<T, Arch, detail::kd_sums::loss>(
          student, teacher, n, s.map, t.map, nullptr, nullptr);
      return factor * kl_divergence(sums[0], sums[1], sums[2]);
    }

    T* student_exps = scratch;
    T* teacher_exps = scratch + n;
    const double degrees =
        weighted ? total_weight : static_cast<double>(student_scan.usable - o.ddof);
    const bool masked = student_scan.usable < n;

    // Weighted: the sweeps leave out the std path (d, e; h, i), applied per class afterwards.
    detail::student_grad_coeffs<T> student_path{};
    detail::teacher_grad_coeffs<T> teacher_path{};
    const auto strip_student = [&](detail::student_grad_coeffs<T> sc) {
      if (weighted) {
        student_path = sc;
        sc.d = T(0);
        sc.e = T(0);
      }
      return sc;
    };
    const auto strip_teacher = [&](detail::teacher_grad_coeffs<T> tc) {
      if (weighted) {
        teacher_path = tc;
        tc.h = T(0);
        tc.i = T(0);
      }
      return tc;
    };
    const auto weighted_paths = [&] {
      if (!weighted) return;
      if (grad_student != nullptr) {
        detail::weighted_std_path<T, Arch>(student, class_weights_.data(), n, s.map,
                                           student_path.d, student_path.e, grad_student);
      }
      if (grad_teacher != nullptr) {
        detail::weighted_std_path<T, Arch>(teacher, class_weights_.data(), n, t.map,
                                           teacher_path.h, teacher_path.i, grad_teacher);
      }
    };

    if (grad_teacher == nullptr && grad_tau == nullptr) {
      const auto sums = detail::kd_exp_sweep<T, Arch, detail::kd_sums::student_grad>(
          student, teacher, n, s.map, t.map, student_exps, teacher_exps);
      const double kl = kl_divergence(sums[0], sums[1], sums[2]);
      const auto sc = strip_student(student_coefficients(sums[0], sums[1], sums[3], sums[4], s,
                                                         factor, weight, degrees));
      (masked ? detail::kd_grad_sweep<T, Arch, true, false, true>
              : detail::kd_grad_sweep<T, Arch, true, false, false>)(
          student, teacher, student_exps, teacher_exps, n, s.map, t.map, sc, {}, grad_student,
          nullptr);
      weighted_paths();
      return factor * kl;
    }

    const auto sums = detail::kd_exp_sweep<T, Arch, detail::kd_sums::both_grads>(
        student, teacher, n, s.map, t.map, student_exps, teacher_exps);
    const double zs = sums[0];
    const double zt = sums[1];
    const double kl = kl_divergence(zs, zt, sums[2]);

    // Teacher: h . v^, for the path through the teacher's std.
    const double through_std = detail::teacher_through_std(zs, zt, kl, sums[5], sums[6], factor);

    // d(f KL)/d(tau) = f' KL - (f / tau)(S_s + S_t), S_s = g.z^ / f, S_t = h.v^ / f: KL depends
    // on tau through z^ / tau and v^ / tau (docs/beyond.md).
    if (grad_tau != nullptr) {
      const double slope = o.scale_by_t2 ? 2.0 * tau : 0.0;
      const double student_sum = sums[3] / zs - sums[4] / zt;
      *grad_tau = weight * (slope * kl - (factor * student_sum + through_std) / tau);
    }
    if (grad_student == nullptr && grad_teacher == nullptr) return factor * kl;
    const detail::teacher_grad_coeffs<T> tc = strip_teacher(detail::teacher_coefficients(
        zs, zt, kl, through_std, t, o.standardize, tau, factor, weight, degrees));

    if (grad_teacher == nullptr) {
      // Only the temperature's gradient needed the teacher's sums.
      const auto sc =
          strip_student(student_coefficients(zs, zt, sums[3], sums[4], s, factor, weight, degrees));
      (masked ? detail::kd_grad_sweep<T, Arch, true, false, true>
              : detail::kd_grad_sweep<T, Arch, true, false, false>)(
          student, teacher, student_exps, teacher_exps, n, s.map, t.map, sc, {}, grad_student,
          nullptr);
    } else if (grad_student != nullptr) {
      const auto sc =
          strip_student(student_coefficients(zs, zt, sums[3], sums[4], s, factor, weight, degrees));
      (masked ? detail::kd_grad_sweep<T, Arch, true, true, true>
              : detail::kd_grad_sweep<T, Arch, true, true, false>)(
          student, teacher, student_exps, teacher_exps, n, s.map, t.map, sc, tc, grad_student,
          grad_teacher);
    } else {
      (masked ? detail::kd_grad_sweep<T, Arch, false, true, true>
              : detail::kd_grad_sweep<T, Arch, false, true, false>)(
          student, teacher, student_exps, teacher_exps, n, s.map, t.map, {}, tc, nullptr,
          grad_teacher);
    }
    weighted_paths();
    return factor * kl;
  }

  static double kl_divergence(double zs, double zt, double k) {
    return detail::kl_from_sums(zs, zt, k);
  }

  detail::student_grad_coeffs<T> student_coefficients(double zs, double zt, double ms, double mt,
                                                      const detail::row_standardization<T>& s,
                                                      double factor, double weight,
                                                      double degrees) const {
    return detail::student_coefficients(zs, zt, ms, mt, s, options_.standardize,
                                        options_.temperature, factor, weight, degrees);
  }

  kd_options options_;
  execution execution_;
  std::vector<T> class_weights_;  ///< per-class weights of the Z-score; empty: unweighted
};

LSKD_NAMESPACE_END
