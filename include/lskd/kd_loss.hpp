// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// The knowledge-distillation loss with logit standardization (Sun et al., CVPR 2024), or
/// classic KD: forward, and the fused forward and analytic gradient.

#include <lskd/config.hpp>
#include <lskd/detail/parallel.hpp>
#include <lskd/detail/row_driver.hpp>
#include <lskd/options.hpp>
#include <lskd/simd/dispatch.hpp>
#include <lskd/views.hpp>

#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>

LSKD_NAMESPACE_BEGIN

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
/// Accuracy: sums over classes use blocked two-level summation (about 10 units of roundoff of T
/// relative to the sum of magnitudes, whatever the row length); the variance uses the
/// corrected two-pass formula on rows scaled by a power of two, so offsets like 1000 + N(0, 1)
/// and magnitudes up to the largest finite T are fine; softmax subtracts the row's max, so
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
  /// Checks the options: temperature finite and > 0, eps finite and >= 0, ddof 0 or 1.
  /// `how` spreads rows over threads (see lskd::execution); results do not depend on it.
  explicit kd_loss(const kd_options& options = {}, execution how = {})
      : options_(options), execution_(std::move(how)) {
    detail::check_positive_finite(name, "temperature", options.temperature);
    detail::check_nonnegative_finite(name, "eps", options.eps);
    detail::check_ddof(name, options.ddof, 2, false);
  }

  const kd_options& options() const noexcept { return options_; }
  const execution& how() const noexcept { return execution_; }

  /// The architecture this functor's kernels run on ("scalar", "sse2", "avx512f", ...).
  static constexpr const char* arch_name() noexcept { return Arch::name(); }

  /// The reduced loss.
  ///
  /// @param student, teacher logits, the same rows x classes; leading dimensions of their own.
  /// @param row_losses `rows` doubles that receive each row's loss before reduction; required
  ///   with reduction::none (the function then returns their sum), optional otherwise.
  double forward(matrix_view<const T> student, matrix_view<const T> teacher,
                 double* row_losses = nullptr) const {
    return run(student, teacher, {}, {}, row_losses);
  }

  /// The reduced loss, and the gradient of the reduced loss (with reduction::none, of the sum
  /// of the row losses) with respect to the student logits and, if `grad_teacher` is not
  /// empty, the teacher logits. Every element of each gradient view is written.
  ///
  /// `grad_student` may be exactly `student` (same pointer and leading dimension) to
  /// overwrite the logits with their gradient; `grad_teacher` likewise `teacher`. Any other
  /// overlap between an output and an input or another output is an error. Pass an empty
  /// view `{}` as `grad_student` to get the teacher's gradient alone.
  double forward_backward(matrix_view<const T> student, matrix_view<const T> teacher,
                          matrix_view<T> grad_student, matrix_view<T> grad_teacher = {},
                          double* row_losses = nullptr) const {
    if (grad_student.empty() && grad_teacher.empty()) {
      detail::throw_invalid(name, "'grad_student' and 'grad_teacher' are both empty; call "
                                  "forward() for the loss alone");
    }
    return run(student, teacher, grad_student, grad_teacher, row_losses);
  }

 private:
  static constexpr const char* name = "lskd::kd_loss";

  void check_arguments(const matrix_view<const T>& student, const matrix_view<const T>& teacher,
                       const matrix_view<T>& grad_student, const matrix_view<T>& grad_teacher,
                       const double* row_losses) const {
    detail::check_view(name, "student", student);
    detail::check_view(name, "teacher", teacher);
    detail::check_same_shape(name, "teacher", teacher, "student", student);
    detail::check_ddof(name, options_.ddof, student.cols(), options_.standardize);
    if (!grad_student.empty()) {
      detail::check_view(name, "grad_student", grad_student);
      detail::check_same_shape(name, "grad_student", grad_student, "student", student);
      detail::check_no_overlap(name, "grad_student", grad_student, "student", student, true);
      detail::check_no_overlap(name, "grad_student", grad_student, "teacher", teacher, false);
    }
    if (!grad_teacher.empty()) {
      detail::check_view(name, "grad_teacher", grad_teacher);
      detail::check_same_shape(name, "grad_teacher", grad_teacher, "teacher", teacher);
      detail::check_no_overlap(name, "grad_teacher", grad_teacher, "teacher", teacher, true);
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

  /// Scans every row (in parallel when asked), then reports the first non-finite row.
  std::vector<detail::row_scan<T>> scan_all(const matrix_view<const T>& logits,
                                            const char* whose) const {
    std::vector<detail::row_scan<T>> scans(static_cast<std::size_t>(logits.rows()));
    detail::for_row_ranges(execution_, logits.rows(), [&](index begin, index end) {
      for (index r = begin; r < end; ++r) {
        scans[static_cast<std::size_t>(r)] = detail::scan_row<T, Arch>(logits.row(r), logits.cols());
      }
    });
    for (index r = 0; r < logits.rows(); ++r) {
      if (!scans[static_cast<std::size_t>(r)].finite) {
        detail::throw_non_finite(name, whose, r, logits.row(r), logits.cols());
      }
    }
    return scans;
  }

  /// A constant row has std 0: with eps = 0 its Z-score is 0 / 0.
  void check_constant_rows(const std::vector<detail::row_scan<T>>& scans, const char* whose) const {
    if (!options_.standardize || options_.eps > 0.0) return;
    for (std::size_t r = 0; r < scans.size(); ++r) {
      if (scans[r].min == scans[r].max) {
        detail::throw_domain(name, std::string(whose) + " row " + std::to_string(r) +
                                       " has all logits equal (std 0) and eps is 0, so its "
                                       "Z-score is 0/0; use eps > 0");
      }
    }
  }

  double run(const matrix_view<const T>& student, const matrix_view<const T>& teacher,
             const matrix_view<T>& grad_student, const matrix_view<T>& grad_teacher,
             double* row_losses) const {
    check_arguments(student, teacher, grad_student, grad_teacher, row_losses);
    const index rows = student.rows();
    if (rows == 0) return 0.0;

    // Every row is checked before any output is written.
    const auto student_scans = scan_all(student, "student logits");
    const auto teacher_scans = scan_all(teacher, "teacher logits");
    check_constant_rows(student_scans, "student logits");
    check_constant_rows(teacher_scans, "teacher logits");

    const double weight = options_.reduction == reduction::batchmean ? 1.0 / static_cast<double>(rows)
                                                                     : 1.0;
    const bool wants_gradient = !grad_student.empty() || !grad_teacher.empty();
    std::vector<double> losses(static_cast<std::size_t>(rows));
    detail::for_row_ranges(execution_, rows, [&](index begin, index end) {
      // Each range has its own scratch for the row's exponentials: O(classes) per thread.
      std::vector<T> scratch(wants_gradient ? 2 * static_cast<std::size_t>(student.cols()) : 0);
      for (index r = begin; r < end; ++r) {
        const auto i = static_cast<std::size_t>(r);
        losses[i] = row_loss(student.row(r), teacher.row(r), student.cols(), student_scans[i],
                             teacher_scans[i], weight,
                             grad_student.empty() ? nullptr : grad_student.row(r),
                             grad_teacher.empty() ? nullptr : grad_teacher.row(r), scratch.data());
      }
    });

    // Rows are combined in index order, in double: the same result for any schedule.
    double total = 0.0;
    for (double loss : losses) total += loss;
    if (row_losses != nullptr) {
      for (index r = 0; r < rows; ++r) row_losses[r] = losses[static_cast<std::size_t>(r)];
    }
    return options_.reduction == reduction::batchmean ? total / static_cast<double>(rows) : total;
  }

  /// One row: returns its loss and writes the requested gradients, scaled by `weight`.
  double row_loss(const T* student, const T* teacher, index n,
                  const detail::row_scan<T>& student_scan, const detail::row_scan<T>& teacher_scan,
                  double weight, T* grad_student, T* grad_teacher, T* scratch) const {
    const kd_options& o = options_;
    const double tau = o.temperature;
    const double factor = o.scale_by_t2 ? tau * tau : 1.0;

    const auto s = detail::standardization_of<T, Arch>(student, n, student_scan, o.standardize,
                                                       o.ddof, o.eps, tau);
    const auto t = detail::standardization_of<T, Arch>(teacher, n, teacher_scan, o.standardize,
                                                       o.ddof, o.eps, tau);

    if (grad_student == nullptr && grad_teacher == nullptr) {
      const auto sums = detail::kd_exp_sweep<T, Arch, detail::kd_sums::loss>(
          student, teacher, n, s.map, t.map, nullptr, nullptr);
      return factor * kl_divergence(sums[0], sums[1], sums[2]);
    }

    T* student_exps = scratch;
    T* teacher_exps = scratch + n;
    const double degrees = static_cast<double>(n - o.ddof);

    if (grad_teacher == nullptr) {
      const auto sums = detail::kd_exp_sweep<T, Arch, detail::kd_sums::student_grad>(
          student, teacher, n, s.map, t.map, student_exps, teacher_exps);
      const double kl = kl_divergence(sums[0], sums[1], sums[2]);
      const auto sc = student_coefficients(sums[0], sums[1], sums[3], sums[4], s, factor, weight,
                                           degrees);
      detail::kd_grad_sweep<T, Arch, true, false>(student, teacher, student_exps, teacher_exps, n,
                                                  s.map, t.map, sc, {}, grad_student, nullptr);
      return factor * kl;
    }

    const auto sums = detail::kd_exp_sweep<T, Arch, detail::kd_sums::both_grads>(
        student, teacher, n, s.map, t.map, student_exps, teacher_exps);
    const double zs = sums[0];
    const double zt = sums[1];
    const double kl = kl_divergence(zs, zt, sums[2]);

    // Teacher: h_j = (f / tau) p_t,j (d_j - KL), with d_j = ut_j - us_j + dlog, and the sum
    // h . v^ = f (sum p_t d ut - KL sum p_t ut) for the path through the teacher's std.
    const double dlog = std::log(zs) - std::log(zt);
    const double through_std = factor * (sums[6] / zt + (dlog - kl) * sums[5] / zt);
    const double std_term = o.standardize && t.std > 0.0 ? weight * through_std / (degrees * t.std)
                                                         : 0.0;
    const detail::teacher_grad_coeffs<T> tc{
        static_cast<T>(weight * factor / (tau * t.divisor * zt)), static_cast<T>(dlog - kl),
        static_cast<T>(std_term * tau), static_cast<T>(std_term * t.offset)};

    if (grad_student != nullptr) {
      const auto sc = student_coefficients(zs, zt, sums[3], sums[4], s, factor, weight, degrees);
      detail::kd_grad_sweep<T, Arch, true, true>(student, teacher, student_exps, teacher_exps, n,
                                                 s.map, t.map, sc, tc, grad_student, grad_teacher);
    } else {
      detail::kd_grad_sweep<T, Arch, false, true>(student, teacher, student_exps, teacher_exps, n,
                                                  s.map, t.map, {}, tc, nullptr, grad_teacher);
    }
    return factor * kl;
  }

  /// KL(p_t || p_s) from the exp sweep: with u <= 0 shifted by each row's max,
  /// KL = sum et (ut - us) / Zt + log Zs - log Zt.
  static double kl_divergence(double zs, double zt, double k) {
    return k / zt + std::log(zs) - std::log(zt);
  }

  /// Student: g_j = (f / tau)(p_s,j - p_t,j) is the gradient at the Z-score; through the mean
  /// and std, dx_j = g_j / (std + eps) - z_j (g . z) / ((n - ddof) std), where
  /// g . z = f (sum p_s us - sum p_t us) and z_j = tau us_j + offset.
  detail::student_grad_coeffs<T> student_coefficients(double zs, double zt, double ms, double mt,
                                                      const detail::row_standardization<T>& s,
                                                      double factor, double weight,
                                                      double degrees) const {
    const double tau = options_.temperature;
    const double through_std = factor * (ms / zs - mt / zt);
    const double std_term = options_.standardize && s.std > 0.0
                                ? weight * through_std / (degrees * s.std)
                                : 0.0;
    const double softmax_scale = weight * factor / (tau * s.divisor);
    return {static_cast<T>(softmax_scale / zs), static_cast<T>(softmax_scale / zt),
            static_cast<T>(std_term * tau), static_cast<T>(std_term * s.offset)};
  }

  kd_options options_;
  execution execution_;
};

LSKD_NAMESPACE_END
