// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// The KD loss of lskd::kd_loss when the classes (the vocabulary) are split across processes
/// and no process holds a whole row: each shard reduces its columns to a few doubles per row,
/// the shards merge them with any transport (MPI, NCCL, threads), and each shard then writes
/// its own columns of the gradient. See docs/vocab_parallel.md.

#include <algorithm>
#include <cmath>
#include <limits>
#include <lskd/config.hpp>
#include <lskd/detail/kd_coefficients.hpp>
#include <lskd/detail/parallel.hpp>
#include <lskd/detail/row_driver.hpp>
#include <lskd/detail/vocab_parallel_kernels.hpp>
#include <lskd/options.hpp>
#include <lskd/simd/dispatch.hpp>
#include <lskd/views.hpp>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

LSKD_NAMESPACE_BEGIN

/// What one process holds of a batch: the same rows of the student and the teacher, and of
/// each row the classes [first_class, first_class + cols). Shards of one batch must together
/// cover every class of every row exactly once, and all must have the same rows.
template <class T>
struct vocab_shard {
  matrix_view<const T> student;  ///< rows x shard classes
  matrix_view<const T> teacher;  ///< rows x shard classes, a leading dimension of its own
  index first_class = 0;         ///< global index of the shard's first class (for messages)
};

/// Merges phase-1 statistics: inout[r] = merge(in[r], inout[r]) for r < rows.
///
/// The merge is Chan et al.'s pairwise update of count, mean and sum of squared deviations
/// (scaled by a power of two, so any finite logits are fine), min and max, and the smallest
/// code of a non-finite logit. It is associative up to roundoff (about 1e-16 relative in the
/// moments: merging in any order or grouping gives the same loss to the accuracy of kd_loss)
/// and symmetric bit for bit (merge(a, b) == merge(b, a)). Shaped for MPI_Op_create's user
/// function: the records are plain arrays of lskd::vocab_statistics_doubles doubles.
inline void merge_statistics(const vocab_row_statistics* in, vocab_row_statistics* inout,
                             index rows) noexcept {
  for (index r = 0; r < rows; ++r) inout[r] = detail::merge_row_statistics(in[r], inout[r]);
}

/// Merges phase-2 sums: inout[r] += in[r], element by element (MPI_SUM on
/// rows * lskd::vocab_sums_doubles doubles does the same).
inline void merge_sums(const vocab_row_sums* in, vocab_row_sums* inout, index rows) noexcept {
  const double* from = reinterpret_cast<const double*>(in);
  double* to = reinterpret_cast<double*>(inout);
  for (index i = 0; i < rows * vocab_sums_doubles; ++i) to[i] += from[i];
}

/// lskd::kd_loss when each process holds only some classes of every row.
///
/// For each row: statistics over all C classes (mean, std with ddof, max), then
/// p = softmax(z^ / tau) for student and teacher and loss = tau^2 KL(p_t || p_s), exactly as
/// kd_loss with the same options. The work is split into five steps, the even ones a
/// transport's job:
///
///   1. statistics(shard, partial1): each shard, its columns -> 10 doubles per row.
///   2. merge_statistics over all shards (e.g. MPI_Allreduce with a user op): every shard
///      gets the row's global count, mean, std, min, max.
///   3. exp_sums(shard, merged1, partial2): each shard sums the exp sweep of its columns
///      relative to the global max and std -> 7 doubles per row.
///   4. merge_sums over all shards (MPI_Allreduce with MPI_SUM).
///   5. loss(...) anywhere, or gradients(shard, ...): the loss, and the shard's own columns
///      of the student's (and optionally the teacher's) gradient; temperature_gradient(...)
///      anywhere for a learnable temperature.
///
/// So each row costs 17 doubles (136 bytes) per shard in two reductions, whatever C is;
/// gathering the rows instead moves 2 C logits per row.
///
/// Accuracy: as kd_loss (float: about 1e-5 of the largest gradient entry of a row; double:
/// about 1e-13). The merged mean and std differ from the whole-row two-pass ones by a few
/// units of roundoff of double; sums over a shard use kd_loss's blocked summation and shards
/// are added in double. Results do not depend on the split beyond that roundoff.
///
/// Errors: misuse (bad shapes, null pointers, overlapping outputs, options, weights) throws
/// std::invalid_argument naming the argument, on the shard that sees it, before any output is
/// written. A step's output records (statistics, sums) may not overlap anything it reads, and
/// the merged records may not overlap the gradients or row losses that step 5 writes. Bad data
/// does not throw in step 1: a NaN or an infinity (other than a class that is -inf in both
/// teacher and student, which is masked) is coded into the row's statistics,
/// so that after the merge every shard throws the same std::domain_error from step 3 or 5,
/// naming the row, the global class and whose logit it is, before writing anything; so are a
/// row with too few usable classes and a constant row with eps = 0. A transport therefore
/// never sees one process fail while the others wait.
///
/// Every shard must call each step with the same options, rows, weights and merged records.
/// Thread safety: const member functions may be called from many threads at once.
///
/// @tparam T float or double.
/// @tparam Arch an xsimd architecture tag, or lskd::simd::scalar.
template <class T, class Arch = simd::default_arch>
class vocab_parallel_kd_loss {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "lskd::vocab_parallel_kd_loss works on float or double logits");

 public:
  /// Checks the options as kd_loss does. `how` spreads rows over threads in every step.
  explicit vocab_parallel_kd_loss(const kd_options& options = {}, execution how = {})
      : options_(options), execution_(std::move(how)) {
    detail::check_positive_finite(name, "temperature", options.temperature);
    detail::check_common_options(name, options.eps, options.ddof, options.reduction, execution_);
  }

  const kd_options& options() const noexcept { return options_; }
  const execution& how() const noexcept { return execution_; }
  static constexpr const char* arch_name() noexcept { return Arch::name(); }

  /// Step 1: writes the shard's statistics of each row to `statistics[0, rows)`.
  ///
  /// Reads each logit of the shard three times (scan, then the two passes of the moments).
  /// A row of weight 0 is not read and gets the identity record. Throws only
  /// std::invalid_argument (see the class comment); bad data is reported after the merge.
  void statistics(const vocab_shard<T>& shard, vocab_row_statistics* statistics,
                  const row_weights<T>& weights = {}) const {
    check_shard(shard);
    check_records(statistics, "statistics", shard.student.rows());
    check_weights(weights, shard.student.rows());
    const auto written = records_view(statistics, shard.student.rows());
    check_records_apart("statistics", written, "shard.student", shard.student);
    check_records_apart("statistics", written, "shard.teacher", shard.teacher);
    check_records_apart("statistics", written, "row weights", weights_view(weights, shard));
    detail::for_row_ranges(execution_, shard.student.rows(), [&](index begin, index end) {
      for (index r = begin; r < end; ++r) {
        if (masked_row(weights, r)) {
          statistics[r] = {0.0, std::numeric_limits<double>::infinity(), detail::empty_moments,
                           detail::empty_moments};
          continue;
        }
        statistics[r] = detail::shard_row_statistics<T, Arch>(
            shard.student.row(r), shard.teacher.row(r), shard.student.cols(), shard.first_class);
      }
    });
  }

  /// Step 3: from the merged statistics of every row, writes the shard's sums of the exp
  /// sweep to `sums[0, rows)` (all seven, so that step 5 may ask for any gradient).
  ///
  /// `exps`, when not empty, is a rows x (2 * shard classes) workspace that receives exp(us)
  /// then exp(ut) of each row, so that gradients() need not take them again (two
  /// exponentials per logit instead of four); it must not overlap the logits.
  /// Throws std::domain_error for a row whose merged statistics show bad data.
  void exp_sums(const vocab_shard<T>& shard, const vocab_row_statistics* merged,
                vocab_row_sums* sums, matrix_view<T> exps = {},
                const row_weights<T>& weights = {}) const {
    const index rows = shard.student.rows();
    const index cols = shard.student.cols();
    check_shard(shard);
    check_records(merged, "merged statistics", rows);
    check_records(sums, "sums", rows);
    check_workspace(shard, exps);
    check_weights(weights, rows);
    const auto written = records_view(sums, rows);
    check_records_apart("sums", written, "shard.student", shard.student);
    check_records_apart("sums", written, "shard.teacher", shard.teacher);
    check_records_apart("sums", written, "merged statistics", records_view(merged, rows));
    check_records_apart("sums", written, "exps", exps);
    check_records_apart("sums", written, "row weights", weights_view(weights, shard));
    check_merged(merged, rows, weights);

    detail::for_row_ranges(execution_, rows, [&](index begin, index end) {
      std::vector<T> scratch(exps.empty() ? 2 * static_cast<std::size_t>(cols) : 0);
      for (index r = begin; r < end; ++r) {
        if (masked_row(weights, r)) {
          sums[r] = {};
          continue;
        }
        const auto s = student_map(merged[r]);
        const auto t = teacher_map(merged[r]);
        T* student_exps = exps.empty() ? scratch.data() : exps.row(r);
        const auto values = detail::kd_exp_sweep<T, Arch, detail::kd_sums::both_grads>(
            shard.student.row(r), shard.teacher.row(r), cols, s.map, t.map, student_exps,
            student_exps + cols);
        sums[r] = {values[0], values[1], values[2], values[3], values[4], values[5], values[6]};
      }
    });
  }

  /// Step 5, loss only: the reduced loss from the merged records of `rows` rows (the same on
  /// every shard). `row_losses` as in kd_loss: required with reduction::none, receives
  /// weight * loss per row.
  double loss(index rows, const vocab_row_statistics* merged, const vocab_row_sums* sums,
              double* row_losses = nullptr, const row_weights<T>& weights = {}) const {
    if (rows < 0) {
      detail::throw_invalid(name, "'rows' is " + std::to_string(rows) + "; it must be >= 0");
    }
    check_records(merged, "merged statistics", rows);
    check_records(sums, "merged sums", rows);
    check_row_losses(row_losses, rows);
    check_weights(weights, rows);
    check_merged(merged, rows, weights);
    check_sums(sums, rows, weights);
    if (rows == 0) return 0.0;

    const double divisor = divisor_of(weights, rows);
    std::vector<double> losses(static_cast<std::size_t>(rows));
    for (index r = 0; r < rows; ++r) {
      losses[static_cast<std::size_t>(r)] =
          masked_row(weights, r) ? 0.0 : raw_weight(weights, r) * row_loss(sums[r]);
    }
    return reduce(losses, divisor, row_losses);
  }

  /// Step 5, for a learnable temperature: d(reduced loss)/d(temperature) from the merged
  /// records of `rows` rows (the same on every shard), counting the tau^2 factor and both the
  /// student's and the teacher's dependence on tau, as kd_loss's `grad_temperature`. With
  /// reduction::none it is the derivative of the sum of the row losses.
  double temperature_gradient(index rows, const vocab_row_statistics* merged,
                              const vocab_row_sums* sums,
                              const row_weights<T>& weights = {}) const {
    if (rows < 0) {
      detail::throw_invalid(name, "'rows' is " + std::to_string(rows) + "; it must be >= 0");
    }
    check_records(merged, "merged statistics", rows);
    check_records(sums, "merged sums", rows);
    check_weights(weights, rows);
    check_merged(merged, rows, weights);
    check_sums(sums, rows, weights);

    // d(f KL)/d(tau) = f' KL - (g.z^ + h.v^) / tau, with g.z^ and h.v^ from the sums
    // (docs/math.md): KL depends on tau through z^ / tau and v^ / tau.
    const double tau = options_.temperature;
    const double factor = options_.scale_by_t2 ? tau * tau : 1.0;
    const double slope = options_.scale_by_t2 ? 2.0 * tau : 0.0;
    const double divisor = divisor_of(weights, rows);
    double total = 0.0;
    for (index r = 0; r < rows; ++r) {
      if (masked_row(weights, r)) continue;
      const vocab_row_sums& sum = sums[r];
      const double kl = kl_divergence(sum);
      const double student_sum = sum.m_student / sum.z_student - sum.m_teacher / sum.z_teacher;
      const double teacher_sum = teacher_through_std(sum, kl, factor);
      total += weight_of(weights, r, divisor) *
               (slope * kl - (factor * student_sum + teacher_sum) / tau);
    }
    return total;
  }

  /// Step 5 with gradients: the reduced loss (as loss()), and the gradient of the reduced
  /// loss with respect to the shard's columns of the student logits and, if `grad_teacher` is
  /// not empty, of the teacher logits. Each gradient view has the shard's shape; every element
  /// is written. A gradient may be exactly its own logits (in place), as in kd_loss.
  ///
  /// `exps` is the workspace filled by exp_sums() for these rows, or empty to take the
  /// exponentials again.
  double gradients(const vocab_shard<T>& shard, const vocab_row_statistics* merged,
                   const vocab_row_sums* sums, matrix_view<T> grad_student,
                   matrix_view<T> grad_teacher = {}, double* row_losses = nullptr,
                   matrix_view<const T> exps = {}, const row_weights<T>& weights = {}) const {
    const index rows = shard.student.rows();
    const index cols = shard.student.cols();
    check_shard(shard);
    check_records(merged, "merged statistics", rows);
    check_records(sums, "merged sums", rows);
    check_gradients(shard, grad_student, grad_teacher, exps);
    check_row_losses(row_losses, rows);
    // Outputs: the gradients, and the row losses (an empty view when not asked for).
    const matrix_view<const double> loss_view(row_losses, row_losses != nullptr ? rows : 0, 1);
    detail::check_no_overlap(name, "row_losses", loss_view, "grad_student", grad_student, false);
    detail::check_no_overlap(name, "row_losses", loss_view, "grad_teacher", grad_teacher, false);
    check_weights(weights, rows);
    detail::check_side_buffers(name, shard.student, shard.teacher, grad_student, grad_teacher,
                               weights.weights, nullptr, row_losses, "", nullptr, 0);
    // The merged records are read row by row while the outputs are written.
    const auto apart_from_outputs = [&](const char* what, const matrix_view<const double>& read) {
      check_records_apart("grad_student", grad_student, what, read);
      check_records_apart("grad_teacher", grad_teacher, what, read);
      check_records_apart("row_losses", loss_view, what, read);
    };
    apart_from_outputs("merged statistics", records_view(merged, rows));
    apart_from_outputs("merged sums", records_view(sums, rows));
    check_merged(merged, rows, weights);
    check_sums(sums, rows, weights);
    if (rows == 0) return 0.0;

    const kd_options& o = options_;
    const double tau = o.temperature;
    const double factor = o.scale_by_t2 ? tau * tau : 1.0;
    const double divisor = divisor_of(weights, rows);
    std::vector<double> losses(static_cast<std::size_t>(rows));

    detail::for_row_ranges(execution_, rows, [&](index begin, index end) {
      std::vector<T> scratch(exps.empty() ? 2 * static_cast<std::size_t>(cols) : 0);
      for (index r = begin; r < end; ++r) {
        T* gs = grad_student.empty() ? nullptr : grad_student.row(r);
        T* gt = grad_teacher.empty() ? nullptr : grad_teacher.row(r);
        if (masked_row(weights, r)) {
          if (gs != nullptr) std::fill(gs, gs + cols, T(0));
          if (gt != nullptr) std::fill(gt, gt + cols, T(0));
          losses[static_cast<std::size_t>(r)] = 0.0;
          continue;
        }
        const T* student = shard.student.row(r);
        const T* teacher = shard.teacher.row(r);
        const auto s = student_map(merged[r]);
        const auto t = teacher_map(merged[r]);
        const T* student_exps = exps.empty() ? scratch.data() : exps.row(r);
        const T* teacher_exps = student_exps + cols;
        if (exps.empty()) {
          detail::kd_exps_row<T, Arch>(student, teacher, cols, s.map, t.map, scratch.data(),
                                       scratch.data() + cols);
        }

        const vocab_row_sums& sum = sums[r];
        const double weight = weight_of(weights, r, divisor);
        const double degrees = merged[r].count - o.ddof;
        const double kl = kl_divergence(sum);
        losses[static_cast<std::size_t>(r)] = raw_weight(weights, r) * factor * kl;

        const auto sc = gs == nullptr ? detail::student_grad_coeffs<T>{}
                                      : student_coefficients(sum, s, factor, weight, degrees);
        const auto tc = gt == nullptr ? detail::teacher_grad_coeffs<T>{}
                                      : teacher_coefficients(sum, t, kl, factor, weight, degrees);
        // Every class may be masked somewhere, so the masked sweep: it only adds a select.
        if (gs != nullptr && gt != nullptr) {
          detail::kd_grad_sweep<T, Arch, true, true, true>(
              student, teacher, student_exps, teacher_exps, cols, s.map, t.map, sc, tc, gs, gt);
        } else if (gs != nullptr) {
          detail::kd_grad_sweep<T, Arch, true, false, true>(student, teacher, student_exps,
                                                            teacher_exps, cols, s.map, t.map, sc,
                                                            tc, gs, nullptr);
        } else {
          detail::kd_grad_sweep<T, Arch, false, true, true>(student, teacher, student_exps,
                                                            teacher_exps, cols, s.map, t.map, sc,
                                                            tc, nullptr, gt);
        }
      }
    });
    return reduce(losses, divisor, row_losses);
  }

 private:
  static constexpr const char* name = "lskd::vocab_parallel_kd_loss";

  static bool masked_row(const row_weights<T>& weights, index r) {
    return weights.weights != nullptr && weights.weights[r] == T(0);
  }

  detail::row_standardization<T> student_map(const vocab_row_statistics& merged) const {
    return detail::standardization_from<T>(merged.student, merged.count, options_.standardize,
                                           options_.ddof, options_.eps, options_.temperature);
  }
  detail::row_standardization<T> teacher_map(const vocab_row_statistics& merged) const {
    return detail::standardization_from<T>(merged.teacher, merged.count, options_.standardize,
                                           options_.ddof, options_.eps, options_.temperature);
  }

  // --- Validation: all of it runs before anything is written. ---

  void check_shard(const vocab_shard<T>& shard) const {
    detail::check_view(name, "shard.student", shard.student);
    detail::check_view(name, "shard.teacher", shard.teacher);
    detail::check_same_shape(name, "shard.teacher", shard.teacher, "shard.student", shard.student);
    if (shard.first_class < 0 ||
        shard.first_class > std::numeric_limits<index>::max() / 8 - shard.student.cols()) {
      detail::throw_invalid(name, "'shard.first_class' is " + std::to_string(shard.first_class) +
                                      "; it must be >= 0 (the global index of the shard's "
                                      "first class)");
    }
  }

  /// `rows` records as a view of their doubles, for the overlap checks.
  template <class Record>
  static matrix_view<const double> records_view(const Record* records, index rows) {
    constexpr index doubles = static_cast<index>(sizeof(Record) / sizeof(double));
    return {reinterpret_cast<const double*>(records), records == nullptr ? 0 : rows, doubles};
  }

  static matrix_view<const T> weights_view(const row_weights<T>& weights,
                                           const vocab_shard<T>& shard) {
    return {weights.weights, weights.weights == nullptr ? 0 : shard.student.rows(), 1};
  }

  /// A buffer written by a step lies wholly apart from one it reads (no in-place use).
  template <class A, class B>
  static void check_records_apart(const char* written_name, const matrix_view<A>& written,
                                  const char* read_name, const matrix_view<B>& read) {
    detail::check_no_overlap(name, written_name, written, read_name, read, false);
  }

  template <class Record>
  static void check_records(const Record* records, const char* what, index rows) {
    if (rows > 0 && records == nullptr) {
      detail::throw_invalid(name, std::string("'") + what + "' is a null pointer; it needs " +
                                      std::to_string(rows) + " records");
    }
  }

  void check_row_losses(const double* row_losses, index rows) const {
    if (options_.reduction == reduction::none && row_losses == nullptr && rows > 0) {
      detail::throw_invalid(name,
                            "'row_losses' is null; reduction::none needs a buffer of "
                            "`rows` doubles for the per-row losses");
    }
  }

  void check_workspace(const vocab_shard<T>& shard, const matrix_view<T>& exps) const {
    if (exps.empty()) return;
    detail::check_view(name, "exps", exps);
    if (exps.rows() != shard.student.rows() || exps.cols() != 2 * shard.student.cols()) {
      detail::throw_invalid(name, "'exps' is " + std::to_string(exps.rows()) + " x " +
                                      std::to_string(exps.cols()) +
                                      "; it must be rows x (2 * "
                                      "shard classes) = " +
                                      std::to_string(shard.student.rows()) + " x " +
                                      std::to_string(2 * shard.student.cols()));
    }
    detail::check_no_overlap(name, "exps", exps, "shard.student", shard.student, false);
    detail::check_no_overlap(name, "exps", exps, "shard.teacher", shard.teacher, false);
  }

  void check_gradients(const vocab_shard<T>& shard, const matrix_view<T>& grad_student,
                       const matrix_view<T>& grad_teacher, const matrix_view<const T>& exps) const {
    const auto& student = shard.student;
    const auto& teacher = shard.teacher;
    // An empty batch (rows = 0) has nothing to write, and its views look empty: accepted.
    if (grad_student.empty() && grad_teacher.empty() && student.rows() > 0) {
      detail::throw_invalid(name,
                            "'grad_student' and 'grad_teacher' are both empty; call "
                            "loss() for the loss alone");
    }
    if (!exps.empty()) {
      detail::check_view(name, "exps", exps);
      if (exps.rows() != student.rows() || exps.cols() != 2 * student.cols()) {
        detail::throw_invalid(name, "'exps' is " + std::to_string(exps.rows()) + " x " +
                                        std::to_string(exps.cols()) +
                                        "; it must be rows x (2 * "
                                        "shard classes) as filled by exp_sums()");
      }
    }
    if (!grad_student.empty()) {
      detail::check_view(name, "grad_student", grad_student);
      detail::check_same_shape(name, "grad_student", grad_student, "shard.student", student);
      detail::check_no_overlap(name, "grad_student", grad_student, "shard.student", student, true);
      detail::check_no_overlap(name, "grad_student", grad_student, "shard.teacher", teacher, false);
      detail::check_no_overlap(name, "grad_student", grad_student, "exps", exps, false);
    }
    if (!grad_teacher.empty()) {
      detail::check_view(name, "grad_teacher", grad_teacher);
      detail::check_same_shape(name, "grad_teacher", grad_teacher, "shard.teacher", teacher);
      detail::check_no_overlap(name, "grad_teacher", grad_teacher, "shard.teacher", teacher, true);
      detail::check_no_overlap(name, "grad_teacher", grad_teacher, "shard.student", student, false);
      detail::check_no_overlap(name, "grad_teacher", grad_teacher, "grad_student", grad_student,
                               false);
      detail::check_no_overlap(name, "grad_teacher", grad_teacher, "exps", exps, false);
    }
  }

  void check_weights(const row_weights<T>& weights, index rows) const {
    detail::check_row_weights(name, weights, rows, options_.reduction);
  }

  /// The data errors of kd_loss, found in the merged statistics, in row order.
  void check_merged(const vocab_row_statistics* merged, index rows,
                    const row_weights<T>& weights) const {
    const index needed = options_.standardize ? options_.ddof + 1 : 1;
    for (index r = 0; r < rows; ++r) {
      if (masked_row(weights, r)) continue;
      const vocab_row_statistics& m = merged[r];
      if (std::isfinite(m.first_bad)) throw_bad_value(r, m.first_bad);
      if (!(m.count >= static_cast<double>(needed))) {
        detail::throw_domain(
            name,
            "row " + std::to_string(r) + " has " + detail::number(m.count) +
                " usable classes (not -inf in both teacher and student) "
                "over all shards; " +
                (options_.standardize
                     ? "its std with ddof = " + std::to_string(options_.ddof) + " needs at least "
                     : std::string("the softmax needs at least ")) +
                std::to_string(needed) + " (did every shard's statistics enter the merge?)");
      }
      // A record corrupted in transport (or never merged) could otherwise give a silent NaN.
      for (const auto* side : {&m.student, &m.teacher}) {
        if (!(std::isfinite(side->mean) && std::isfinite(side->deviation) &&
              side->deviation >= 0.0 && std::isfinite(side->min) && std::isfinite(side->max) &&
              side->min <= side->max)) {
          detail::throw_invalid(name, "'merged statistics' of row " + std::to_string(r) +
                                          " are not a merge of valid records (" +
                                          (side == &m.student ? "student" : "teacher") +
                                          " mean " + detail::number(side->mean) + ", min " +
                                          detail::number(side->min) + ", max " +
                                          detail::number(side->max) + ")");
        }
      }
      if (options_.standardize && options_.eps == 0.0) {
        if (m.student.min == m.student.max) throw_constant("student logits", r);
        if (m.teacher.min == m.teacher.max) throw_constant("teacher logits", r);
      }
    }
  }

  /// The merged sums of every row that is not masked: finite, and each normalizer at least
  /// about 1 (the class at the row's max adds exp(0) = 1 on whichever shard holds it). All
  /// zeros (step 3 forgotten) or a NaN from a transport would otherwise give a NaN loss.
  static void check_sums(const vocab_row_sums* sums, index rows, const row_weights<T>& weights) {
    for (index r = 0; r < rows; ++r) {
      if (masked_row(weights, r)) continue;
      const vocab_row_sums& m = sums[r];
      const double values[] = {m.z_student, m.z_teacher, m.k,         m.m_student,
                               m.m_teacher, m.n_teacher, m.p_teacher};
      const bool finite = std::all_of(std::begin(values), std::end(values),
                                      [](double v) { return std::isfinite(v); });
      if (!finite || !(m.z_student >= 0.5) || !(m.z_teacher >= 0.5)) {
        detail::throw_invalid(name, "'merged sums' of row " + std::to_string(r) +
                                        " are not a merge of every shard's exp_sums (Zs " +
                                        detail::number(m.z_student) + ", Zt " +
                                        detail::number(m.z_teacher) +
                                        "; each is at least 1, and all seven are finite)");
      }
    }
  }

  [[noreturn]] static LSKD_COLD void throw_bad_value(index row, double code) {
    const double cls = std::floor(code / 8.0);
    const int kind = static_cast<int>(code - 8.0 * cls);
    const bool student = kind < 3;
    const char* kinds[] = {"NaN", "+inf", "-inf"};
    std::string message = std::string(student ? "student" : "teacher") + " logits row " +
                          std::to_string(row) + " has a non-finite value (" + kinds[kind % 3] +
                          ") at class " + detail::number(cls);
    if (kind % 3 == 2) {
      message += "; a class is masked only when it is -inf in both the teacher and the student";
    }
    detail::throw_domain(name, message);
  }

  [[noreturn]] static LSKD_COLD void throw_constant(const char* whose, index row) {
    detail::throw_domain(name, std::string(whose) + " row " + std::to_string(row) +
                                   " has all logits equal (std 0) over all shards and eps is 0, "
                                   "so its Z-score is 0/0; use eps > 0");
  }

  // --- The KD math of kd_loss, from the merged sums (docs/math.md). ---

  double divisor_of(const row_weights<T>& weights, index rows) const {
    if (options_.reduction != reduction::batchmean) return 1.0;
    if (weights.normalizer > 0.0) return weights.normalizer;
    if (weights.weights == nullptr) return static_cast<double>(rows);
    double total = 0.0;
    for (index r = 0; r < rows; ++r) total += static_cast<double>(weights.weights[r]);
    return total;
  }

  /// Row r's weight in the batch (1 without weights).
  static double raw_weight(const row_weights<T>& weights, index r) {
    return weights.weights == nullptr ? 1.0 : static_cast<double>(weights.weights[r]);
  }

  /// Row r's weight in the gradient of the reduced loss.
  static double weight_of(const row_weights<T>& weights, index r, double divisor) {
    return divisor > 0.0 ? raw_weight(weights, r) / divisor : 0.0;
  }

  double row_loss(const vocab_row_sums& sum) const {
    const double tau = options_.temperature;
    return (options_.scale_by_t2 ? tau * tau : 1.0) * kl_divergence(sum);
  }

  static double kl_divergence(const vocab_row_sums& sum) {
    return detail::kl_from_sums(sum.z_student, sum.z_teacher, sum.k);
  }

  /// dx = a es - b et - (d us + e); see detail/kd_coefficients.hpp.
  detail::student_grad_coeffs<T> student_coefficients(const vocab_row_sums& sum,
                                                      const detail::row_standardization<T>& s,
                                                      double factor, double weight,
                                                      double degrees) const {
    return detail::student_coefficients(sum.z_student, sum.z_teacher, sum.m_student,
                                        sum.m_teacher, s, options_.standardize,
                                        options_.temperature, factor, weight, degrees);
  }

  static double teacher_through_std(const vocab_row_sums& sum, double kl, double factor) {
    return detail::teacher_through_std(sum.z_student, sum.z_teacher, kl, sum.n_teacher,
                                       sum.p_teacher, factor);
  }

  /// dv = f et (ut - us + g) - (h ut + i); see detail/kd_coefficients.hpp.
  detail::teacher_grad_coeffs<T> teacher_coefficients(const vocab_row_sums& sum,
                                                      const detail::row_standardization<T>& t,
                                                      double kl, double factor, double weight,
                                                      double degrees) const {
    return detail::teacher_coefficients(sum.z_student, sum.z_teacher, kl,
                                        teacher_through_std(sum, kl, factor), t,
                                        options_.standardize, options_.temperature, factor,
                                        weight, degrees);
  }

  /// Rows combined in index order, in double, as kd_loss does.
  double reduce(const std::vector<double>& losses, double divisor, double* row_losses) const {
    double total = 0.0;
    for (double loss : losses) total += loss;
    if (row_losses != nullptr) std::copy(losses.begin(), losses.end(), row_losses);
    if (options_.reduction != reduction::batchmean) return total;
    return divisor > 0.0 ? total / divisor : 0.0;
  }

  kd_options options_;
  execution execution_;
};

LSKD_NAMESPACE_END
