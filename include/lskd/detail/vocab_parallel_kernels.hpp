// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// Per-row pieces of the vocabulary-parallel KD loss: a shard's statistics of one row, the
/// pairwise merge of two shards' statistics, the exponent map built from merged statistics,
/// and the exponentials of a shard's row. Like the other row kernels they know nothing of
/// options, threads or errors. The three record types that shards exchange are public (in
/// namespace lskd) and defined here because the kernels fill them; include
/// <lskd/vocab_parallel.hpp> to use them.

#include <algorithm>
#include <cmath>
#include <limits>
#include <lskd/config.hpp>
#include <lskd/detail/row_driver.hpp>
#include <lskd/detail/row_kernels.hpp>
#include <utility>

LSKD_NAMESPACE_BEGIN

/// One side's (the student's or the teacher's) statistics over some of a row's classes: the
/// usable ones (a class that is -inf in both the teacher and the student is masked and not
/// counted). Four doubles, in this order.
struct vocab_logit_moments {
  double mean;       ///< mean of the usable logits seen (0 when none)
  double deviation;  ///< sqrt(sum (x - mean)^2 / count): their population std (0 when none)
  double min;        ///< smallest usable logit (+inf when none)
  double max;        ///< largest usable logit (-inf when none)
};

/// Phase-1 partial statistics of one row over a set of classes: ten doubles, in this order,
/// [count, first_bad, student.{mean, deviation, min, max}, teacher.{mean, deviation, min, max}].
/// Merged with lskd::merge_statistics; a record of count 0 and first_bad +inf is the identity.
struct vocab_row_statistics {
  double count;  ///< usable classes seen, the same for the student and the teacher
  /// The first non-finite logit that is not a mask, coded 8 * class + kind with kind 0, 1, 2
  /// for a student NaN, +inf, -inf and 3, 4, 5 for the teacher's; +inf when there is none. The
  /// smallest code wins a merge, so the merged record names the same logit kd_loss would.
  double first_bad;
  vocab_logit_moments student;
  vocab_logit_moments teacher;
};

/// Phase-2 partial sums of one row's exp sweep (docs/math.md), relative to the row's global
/// max and std, so that they add over classes: seven doubles, in this order.
struct vocab_row_sums {
  double z_student;  ///< Zs = sum exp(us)
  double z_teacher;  ///< Zt = sum exp(ut)
  double k;          ///< K  = sum exp(ut) (ut - us)
  double m_student;  ///< Ms = sum exp(us) us
  double m_teacher;  ///< Mt = sum exp(ut) us
  double n_teacher;  ///< Nt = sum exp(ut) ut
  double p_teacher;  ///< Pt = sum exp(ut) (ut - us) ut
};

/// Doubles in one row's record: what a transport moves per row in each phase.
inline constexpr int vocab_statistics_doubles = 10;
inline constexpr int vocab_sums_doubles = 7;

static_assert(sizeof(vocab_row_statistics) == vocab_statistics_doubles * sizeof(double),
              "vocab_row_statistics must be a plain array of doubles for any transport");
static_assert(sizeof(vocab_row_sums) == vocab_sums_doubles * sizeof(double),
              "vocab_row_sums must be a plain array of doubles for any transport");

namespace detail {

/// The statistics of nothing: the identity of the merge.
inline constexpr vocab_logit_moments empty_moments = {
    0.0, 0.0, std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()};

/// Moments of one side of a shard's row from its scan (min and max over the usable classes).
template <class T, class Arch>
inline vocab_logit_moments shard_moments(const T* x, index n, const row_scan<T>& scan) {
  if (scan.usable == 0) return empty_moments;
  const T scale = scale_for(scan);
  // ddof 0: the population std, which with the count gives back the sum of squared deviations.
  const row_moments moments = scan.usable < n
                                  ? moments_row<T, Arch, true>(x, n, 0, scale, scan.usable)
                                  : moments_row<T, Arch, false>(x, n, 0, scale, n);
  return {moments.mean, moments.std, static_cast<double>(scan.min), static_cast<double>(scan.max)};
}

/// Phase 1 on one row of a shard: `n` classes starting at global class `first_class`.
/// Reads each side once for min, max and finiteness, then twice for the moments (corrected
/// two-pass, as kd_loss). A row holding a non-finite value that is not a mask gets count 0 and
/// the code of its first such value; the caller turns it into an error after the merge, so
/// that every shard fails alike.
template <class T, class Arch>
inline vocab_row_statistics shard_row_statistics(const T* student, const T* teacher, index n,
                                                 index first_class) {
  row_scan<T> student_scan = scan_row<T, Arch>(student, n);
  row_scan<T> teacher_scan = scan_row<T, Arch>(teacher, n);

  // Slow path for rows with a non-finite value: masks, or an error to report.
  if (!student_scan.finite || !teacher_scan.finite) {
    const T infinity = std::numeric_limits<T>::infinity();
    index usable = 0;
    T student_min = infinity, student_max = -infinity;
    T teacher_min = infinity, teacher_max = -infinity;
    for (index c = 0; c < n; ++c) {
      const T x = student[c];
      const T v = teacher[c];
      if (x == -infinity && v == -infinity) continue;
      if (!std::isfinite(x) || !std::isfinite(v)) {
        const bool student_bad = !std::isfinite(x);
        const T bad = student_bad ? x : v;
        const int kind = (std::isnan(bad) ? 0 : (bad > 0 ? 1 : 2)) + (student_bad ? 0 : 3);
        const double code = 8.0 * static_cast<double>(first_class + c) + kind;
        return {0.0, code, empty_moments, empty_moments};
      }
      ++usable;
      student_min = std::min(student_min, x);
      student_max = std::max(student_max, x);
      teacher_min = std::min(teacher_min, v);
      teacher_max = std::max(teacher_max, v);
    }
    student_scan = {student_min, student_max, true, usable, false, 0.0, 0.0, 0.0};
    teacher_scan = {teacher_min, teacher_max, true, usable, false, 0.0, 0.0, 0.0};
  }

  return {static_cast<double>(student_scan.usable), std::numeric_limits<double>::infinity(),
          shard_moments<T, Arch>(student, n, student_scan),
          shard_moments<T, Arch>(teacher, n, teacher_scan)};
}

/// Chan, Golub and LeVeque's pairwise update of (count, mean, sum of squared deviations M2):
///   delta = mean_b - mean_a,  mean = mean_a + delta n_b / n,
///   M2 = M2_a + M2_b + delta^2 n_a n_b / n,
/// computed in a frame scaled by a power of two, so that the squares neither overflow nor
/// underflow for any finite logits. The operands are first put in a canonical order, so the
/// result is the same bits for merge(a, b) and merge(b, a) whatever the compiler contracts
/// into fused multiply-adds: a reduction that swaps operands still gives every rank the same
/// record.
inline vocab_logit_moments merge_moments(vocab_logit_moments a, double count_a,
                                         vocab_logit_moments b, double count_b) {
  const double low = std::min(a.min, b.min);
  const double high = std::max(a.max, b.max);
  if (count_b == 0.0) return {a.mean, a.deviation, low, high};
  if (count_a == 0.0) return {b.mean, b.deviation, low, high};
  if (count_b < count_a || (count_b == count_a &&
                            (b.mean < a.mean || (b.mean == a.mean && b.deviation < a.deviation)))) {
    std::swap(a, b);
    std::swap(count_a, count_b);
  }

  const double count = count_a + count_b;
  const double magnitude =
      std::max(std::max(std::fabs(a.mean), std::fabs(b.mean)), std::max(a.deviation, b.deviation));
  const double scale = power_of_two_scale(magnitude);
  const double mean_a = a.mean * scale;
  const double deviation_a = a.deviation * scale;
  const double deviation_b = b.deviation * scale;
  const double delta = b.mean * scale - mean_a;
  const double mean = mean_a + delta * (count_b / count);
  const double squares = count_a * (deviation_a * deviation_a) +
                         count_b * (deviation_b * deviation_b) +
                         delta * delta * (count_a * (count_b / count));
  return {mean / scale, std::sqrt(squares / count) / scale, low, high};
}

inline vocab_row_statistics merge_row_statistics(const vocab_row_statistics& a,
                                                 const vocab_row_statistics& b) {
  return {a.count + b.count, std::min(a.first_bad, b.first_bad),
          merge_moments(a.student, a.count, b.student, b.count),
          merge_moments(a.teacher, a.count, b.teacher, b.count)};
}

/// A row's standardization from its merged statistics: the same map kd_loss builds from the
/// whole row (standardization_of), with the std over all `count` usable classes.
template <class T>
inline row_standardization<T> standardization_from(const vocab_logit_moments& moments, double count,
                                                   bool standardize, int ddof, double eps,
                                                   double temperature) {
  // min and max are logits of type T, so these conversions are exact.
  const row_scan<T> scan{static_cast<T>(moments.min), static_cast<T>(moments.max), true, 0, false,
                         0.0, 0.0, 0.0};
  if (!standardize) {
    return {{T(1), scan.max, gain_in<T>(1.0 / temperature)}, 0.0, 1.0, 0.0};
  }
  const T scale = scale_for(scan);
  const double std = moments.deviation * std::sqrt(count / (count - ddof));
  const double divisor = std + eps;
  const double gain = 1.0 / (static_cast<double>(scale) * divisor * temperature);
  const affine<T> map{scale, scan.max * scale, gain_in<T>(gain)};
  return {map, std, divisor, max_offset(moments.max, moments.mean, 0.0, divisor)};
}

/// exp(us) and exp(ut) of a shard's row, for a gradient whose exp sweep kept no workspace:
/// bit for bit what kd_exp_sweep stores, its padded tail included.
template <class T, class Arch>
inline void kd_exps_row(const T* student, const T* teacher, index n, const affine<T>& student_map,
                        const affine<T>& teacher_map, T* student_exps, T* teacher_exps) {
  const index whole = whole_packs_part<T, Arch>(n);
  for_each_pack<T, Arch>(whole, [&](auto tag, index i) {
    using P = typename decltype(tag)::type;
    store_pack(student_exps + i, exp_of(exponent_of(load_pack<P>(student + i), student_map)));
    store_pack(teacher_exps + i, exp_of(exponent_of(load_pack<P>(teacher + i), teacher_map)));
  });
  if (whole < n) {
    using P = pack_t<T, Arch>;
    const index rest = n - whole;
    const T pad = -std::numeric_limits<T>::infinity();
    store_partial(student_exps + whole,
                  exp_of(exponent_of(load_partial<P>(student + whole, rest, pad), student_map)),
                  rest);
    store_partial(teacher_exps + whole,
                  exp_of(exponent_of(load_partial<P>(teacher + whole, rest, pad), teacher_map)),
                  rest);
  }
}

}  // namespace detail
LSKD_NAMESPACE_END
