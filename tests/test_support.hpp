// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// What every test file shares: the float/double x architecture type list, a comparison that
/// prints expected, actual and tolerance, seeded random rows, padded buffers with sentinel
/// padding, and a long-double reference of the KD loss and its gradients.

#include <lskd/lskd.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iomanip>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace lskd_test {

using lskd::index;
using wide = long double;

/// A value type and an architecture, for TEMPLATE_TEST_CASE.
template <class T, class Arch>
struct typed {
  using value_type = T;
  using arch = Arch;
};
using float_simd = typed<float, lskd::simd::default_arch>;
using float_scalar = typed<float, lskd::simd::scalar>;
using double_simd = typed<double, lskd::simd::default_arch>;
using double_scalar = typed<double, lskd::simd::scalar>;

/// Elements in one xsimd batch of T on the default architecture (1 on the scalar path).
template <class T>
constexpr index simd_width() {
  if constexpr (std::is_same<lskd::simd::default_arch, lskd::simd::scalar>::value) {
    return 1;
  } else {
    return static_cast<index>(xsimd::batch<T, lskd::simd::default_arch>::size);
  }
}

/// Unit roundoff of T.
template <class T>
constexpr double roundoff() {
  return std::numeric_limits<T>::epsilon() / 2;
}

/// A number with all the digits that tell two doubles apart (long-double references may lie
/// outside the range of double: 1e-4000 prints as such).
inline std::string show(wide value) {
  std::ostringstream out;
  out << std::setprecision(17) << value;
  return out.str();
}

/// Is `actual` within `tolerance` of `expected`? NaN is never close to anything.
inline bool within(wide expected, wide actual, wide tolerance) {
  return std::isfinite(static_cast<double>(actual)) && std::fabs(actual - expected) <= tolerance;
}

/// Compares many elements and reports, in one assertion, how many are off and the worst ones
/// with expected, actual, difference and tolerance. Its summary also gives the largest
/// |difference| / tolerance, so `lskd_tests -s` shows how much room each tolerance leaves.
class closeness {
 public:
  explicit closeness(std::string what) : what_(std::move(what)) {}

  void add(index i, wide expected, wide actual, wide tolerance) {
    ++checked_;
    const wide difference = std::fabs(actual - expected);
    const bool ok = within(expected, actual, tolerance);
    const wide ratio = !ok ? std::numeric_limits<wide>::infinity()
                           : (tolerance > 0 ? difference / tolerance : 0);
    if (ok) {
      worst_ratio_ = std::max(worst_ratio_, ratio);
      return;
    }
    ++failed_;
    if (failed_ <= 5) {
      failures_ << "\n  [" << i << "] expected " << show(expected) << ", actual " << show(actual)
                << ", |diff| " << show(difference) << ", tolerance " << show(tolerance);
    }
  }

  bool ok() const { return failed_ == 0 && checked_ > 0; }
  index count() const { return checked_; }

  std::string summary() const {
    std::ostringstream out;
    out << what_ << ": " << checked_ << " compared, " << failed_ << " off";
    if (failed_ == 0) {
      out << "; largest |diff|/tolerance " << std::setprecision(2)
          << static_cast<double>(worst_ratio_);
    }
    out << failures_.str();
    if (failed_ > 5) out << "\n  ... and " << (failed_ - 5) << " more";
    return out.str();
  }

 private:
  std::string what_;
  index checked_ = 0;
  index failed_ = 0;
  wide worst_ratio_ = 0;
  std::ostringstream failures_;
};

}  // namespace lskd_test

/// One assertion over a whole lskd_test::closeness.
#define LSKD_CHECK_CLOSE(comparison)      \
  do {                                    \
    INFO((comparison).summary());         \
    CHECK((comparison).ok());             \
  } while (false)

/// One scalar comparison that prints expected, actual and tolerance.
#define LSKD_CHECK_NEAR(expected, actual, tolerance)                                              \
  do {                                                                                            \
    const ::lskd_test::wide lskd_expected_ = (expected);                                          \
    const ::lskd_test::wide lskd_actual_ = (actual);                                              \
    const ::lskd_test::wide lskd_tolerance_ = (tolerance);                                        \
    INFO(#actual << ": expected " << ::lskd_test::show(lskd_expected_) << ", actual "             \
                 << ::lskd_test::show(lskd_actual_) << ", |diff| "                                \
                 << ::lskd_test::show(std::fabs(lskd_actual_ - lskd_expected_)) << ", tolerance " \
                 << ::lskd_test::show(lskd_tolerance_));                                          \
    CHECK(::lskd_test::within(lskd_expected_, lskd_actual_, lskd_tolerance_));                    \
  } while (false)

namespace lskd_test {

// ---------------------------------------------------------------------------------------------
// Random inputs

/// Seeded normal values, the same on every run of the same build.
class random_logits {
 public:
  explicit random_logits(std::uint64_t seed) : engine_(seed) {}

  /// rows x cols values of mean + spread * N(0, 1), rounded to T.
  template <class T>
  std::vector<T> normal(index rows, index cols, double mean = 0.0, double spread = 1.0) {
    std::normal_distribution<double> draw(0.0, 1.0);
    std::vector<T> values(static_cast<std::size_t>(rows * cols));
    for (T& value : values) value = static_cast<T>(mean + spread * draw(engine_));
    return values;
  }

  /// Uniform integer in [low, high].
  index integer(index low, index high) {
    return std::uniform_int_distribution<index>(low, high)(engine_);
  }

 private:
  std::mt19937_64 engine_;
};

// ---------------------------------------------------------------------------------------------
// Buffers

/// A rows x cols matrix inside a larger allocation: it starts `offset` elements in, rows are
/// `ld` apart, and every element that is not part of the matrix (before, between rows and
/// after) holds a sentinel NaN with a distinctive payload, so that a stray write shows.
template <class T>
class padded_matrix {
 public:
  padded_matrix(index rows, index cols, index ld, index offset, index tail = 5)
      : rows_(rows), cols_(cols), ld_(ld), offset_(offset),
        storage_(static_cast<std::size_t>(offset + std::max<index>(rows, 1) * ld + tail),
                 sentinel()) {}

  /// Copies a dense rows x cols matrix in.
  void assign(const std::vector<T>& dense) {
    for (index r = 0; r < rows_; ++r) {
      for (index c = 0; c < cols_; ++c) at(r, c) = dense[static_cast<std::size_t>(r * cols_ + c)];
    }
  }

  /// The matrix as a dense rows x cols vector.
  std::vector<T> dense() const {
    std::vector<T> out(static_cast<std::size_t>(rows_ * cols_));
    for (index r = 0; r < rows_; ++r) {
      for (index c = 0; c < cols_; ++c) out[static_cast<std::size_t>(r * cols_ + c)] = at(r, c);
    }
    return out;
  }

  T& at(index r, index c) { return storage_[static_cast<std::size_t>(offset_ + r * ld_ + c)]; }
  const T& at(index r, index c) const {
    return storage_[static_cast<std::size_t>(offset_ + r * ld_ + c)];
  }
  T* data() { return storage_.data() + offset_; }
  lskd::matrix_view<T> view() { return {data(), rows_, cols_, ld_}; }
  lskd::matrix_view<const T> const_view() const {
    return {storage_.data() + offset_, rows_, cols_, ld_};
  }

  /// Number of padding elements that no longer hold the sentinel bit pattern.
  index padding_changed() const {
    const T mark = sentinel();
    index changed = 0;
    for (index k = 0; k < static_cast<index>(storage_.size()); ++k) {
      const index inside = k - offset_;
      const bool element = inside >= 0 && inside / ld_ < rows_ && inside % ld_ < cols_;
      if (!element && std::memcmp(&storage_[static_cast<std::size_t>(k)], &mark, sizeof(T)) != 0) {
        ++changed;
      }
    }
    return changed;
  }

  /// A quiet NaN with a payload no arithmetic produces.
  static T sentinel() {
    if constexpr (std::is_same<T, float>::value) {
      const std::uint32_t bits = 0x7fc0beefu;
      T value;
      std::memcpy(&value, &bits, sizeof value);
      return value;
    } else {
      const std::uint64_t bits = 0x7ff8'0000'dead'beefull;
      T value;
      std::memcpy(&value, &bits, sizeof value);
      return value;
    }
  }

 private:
  index rows_;
  index cols_;
  index ld_;
  index offset_;
  std::vector<T> storage_;
};

/// Are two buffers the same bit for bit?
template <class T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

/// Converts to another element type (exact from float to double).
template <class To, class From>
std::vector<To> converted(const std::vector<From>& values) {
  return std::vector<To>(values.begin(), values.end());
}

/// Largest magnitude of values [begin, end) of a buffer.
template <class V>
wide max_abs(const V& values, std::size_t begin, std::size_t end) {
  wide largest = 0;
  for (std::size_t k = begin; k < end; ++k) {
    largest = std::max<wide>(largest, std::fabs(static_cast<wide>(values[k])));
  }
  return largest;
}

// ---------------------------------------------------------------------------------------------
// Long-double reference

/// Mean and std of one row, two-pass, in long double.
struct reference_moments {
  wide mean;
  wide std;
};

template <class T>
reference_moments reference_row_moments(const T* x, index n, int ddof) {
  wide sum = 0;
  for (index c = 0; c < n; ++c) sum += static_cast<wide>(x[c]);
  const wide mean = sum / static_cast<wide>(n);
  wide squares = 0;
  for (index c = 0; c < n; ++c) {
    const wide d = static_cast<wide>(x[c]) - mean;
    squares += d * d;
  }
  return {mean, std::sqrt(squares / static_cast<wide>(n - ddof))};
}

/// log softmax of a row of long doubles (subtracting the max).
inline std::vector<wide> reference_log_softmax(const std::vector<wide>& y) {
  const wide top = *std::max_element(y.begin(), y.end());
  wide total = 0;
  for (wide value : y) total += std::exp(value - top);
  const wide log_total = std::log(total);
  std::vector<wide> out(y.size());
  for (std::size_t c = 0; c < y.size(); ++c) out[c] = y[c] - top - log_total;
  return out;
}

/// The KD loss and both gradients, computed from the definition in long double, with the size
/// of what a floating-point evaluation of each value adds up.
///
/// Every loss and gradient entry is a sum of terms that partly cancel (p_s - p_t, the paths
/// through the mean and the std, log-probabilities minus the KL). A careful evaluation in a
/// precision with unit roundoff u is off by a small multiple of u times the magnitude of those
/// terms, not of the result: `*_scale` holds that magnitude, and the tests' tolerances are
/// multiples of it. With y = Z-score / tau and u = y - max(y) (so u <= 0, as every stable
/// softmax computes it), an exponential's argument carries a relative error of about u |u|,
/// hence the (1 + |u|) factors. Per entry j of a row with n classes:
///   student, at the Z-score: a_j = w f / tau (p_s,j (1 + |us_j|) + p_t,j (1 + |ut_j|));
///   teacher, at the Z-score: b_j = w f / tau p_t,j (1 + |ut_j|) (|ut_j| + |us_j| + R),
///     with R = log Zs + log Zt + sum_k p_t,k (|ut_k| + |us_k|) (Z: the shifted normalizers);
///   through the Z-score: c_j / (std + eps) + (sum_k c_k) (2 max|z|)^2 / ((n - ddof) std),
///     the second term (the path through the std, written with z_j split into a part relative
///     to the max and the max's own offset) only when std > 0;
///   the row's loss: f (R + sum_k p_t,k (1 + |ut_k|)(|ut_k| + |us_k|)), times w when reduced.
/// (w: 1 / rows for batchmean, else 1; f: tau^2 or 1.)
struct reference_kd {
  std::vector<wide> row_losses;
  wide loss = 0;
  std::vector<wide> grad_student;  ///< dense rows x cols, gradient of the reduced loss
  std::vector<wide> grad_teacher;
  std::vector<wide> row_loss_scale;
  wide loss_scale = 0;
  std::vector<wide> grad_student_scale;  ///< dense rows x cols
  std::vector<wide> grad_teacher_scale;
};

/// Back-propagates g (the gradient at the Z-score z = (x - mean) / (std + eps)) to x:
/// dx_j = (g_j - mean g) / (std + eps) - (sum_k g_k z_k) z_j / ((n - ddof) std),
/// where the last term is absent for a constant row (std = 0: z_j = 0 there). Also turns the
/// term magnitudes `scale` at the Z-score into those at x (see reference_kd).
inline void reference_through_zscore(std::vector<wide>& g, std::vector<wide>& scale,
                                     const std::vector<wide>& x, wide mean, wide std, double eps,
                                     int ddof) {
  const auto n = static_cast<wide>(x.size());
  const wide divisor = std + static_cast<wide>(eps);
  wide g_mean = 0;
  wide g_dot_z = 0;
  wide scale_sum = 0;
  wide z_max = 0;
  for (std::size_t c = 0; c < x.size(); ++c) {
    const wide z = (x[c] - mean) / divisor;
    g_mean += g[c];
    g_dot_z += g[c] * z;
    scale_sum += scale[c];
    z_max = std::max(z_max, std::fabs(z));
  }
  g_mean /= n;
  const wide std_path_scale =
      std > 0 ? scale_sum * (2 * z_max) * (2 * z_max) / ((n - ddof) * std) : 0;
  for (std::size_t c = 0; c < x.size(); ++c) {
    const wide z = (x[c] - mean) / divisor;
    g[c] = (g[c] - g_mean) / divisor - (std > 0 ? g_dot_z * z / ((n - ddof) * std) : 0);
    scale[c] = scale[c] / divisor + std_path_scale;
  }
}

/// The reference for dense rows x cols inputs (any element type; converted exactly).
template <class T>
reference_kd reference_kd_loss(const T* student, const T* teacher, index rows, index cols,
                               const lskd::kd_options& o) {
  const auto n = static_cast<std::size_t>(cols);
  reference_kd out;
  out.row_losses.resize(static_cast<std::size_t>(rows));
  out.row_loss_scale.resize(static_cast<std::size_t>(rows));
  out.grad_student.resize(static_cast<std::size_t>(rows) * n);
  out.grad_teacher.resize(static_cast<std::size_t>(rows) * n);
  out.grad_student_scale.resize(static_cast<std::size_t>(rows) * n);
  out.grad_teacher_scale.resize(static_cast<std::size_t>(rows) * n);
  const wide tau = o.temperature;
  const wide factor = o.scale_by_t2 ? tau * tau : 1;
  const wide weight = o.reduction == lskd::reduction::batchmean ? 1 / static_cast<wide>(rows) : 1;
  const wide gain = weight * factor / tau;

  for (index r = 0; r < rows; ++r) {
    std::vector<wide> xs(n);
    std::vector<wide> xt(n);
    for (std::size_t c = 0; c < n; ++c) {
      xs[c] = static_cast<wide>(student[static_cast<std::size_t>(r) * n + c]);
      xt[c] = static_cast<wide>(teacher[static_cast<std::size_t>(r) * n + c]);
    }
    reference_moments ms{0, 0};
    reference_moments mt{0, 0};
    std::vector<wide> ys(xs);
    std::vector<wide> yt(xt);
    if (o.standardize) {
      ms = reference_row_moments(xs.data(), cols, o.ddof);
      mt = reference_row_moments(xt.data(), cols, o.ddof);
      for (std::size_t c = 0; c < n; ++c) {
        ys[c] = (xs[c] - ms.mean) / (ms.std + static_cast<wide>(o.eps));
        yt[c] = (xt[c] - mt.mean) / (mt.std + static_cast<wide>(o.eps));
      }
    }
    for (std::size_t c = 0; c < n; ++c) {
      ys[c] /= tau;
      yt[c] /= tau;
    }
    const wide ys_max = *std::max_element(ys.begin(), ys.end());
    const wide yt_max = *std::max_element(yt.begin(), yt.end());
    const std::vector<wide> log_ps = reference_log_softmax(ys);
    const std::vector<wide> log_pt = reference_log_softmax(yt);

    // The loss, and the magnitudes R and sum p_t (1 + |ut|)(|ut| + |us|).
    wide kl = 0;
    wide spread = 0;
    wide loss_terms = 0;
    for (std::size_t c = 0; c < n; ++c) {
      const wide pt = std::exp(log_pt[c]);
      const wide us = std::fabs(ys[c] - ys_max);
      const wide ut = std::fabs(yt[c] - yt_max);
      if (pt > 0) kl += pt * (log_pt[c] - log_ps[c]);
      spread += pt * (ut + us);
      loss_terms += pt * (1 + ut) * (ut + us);
    }
    // log Z = max(y) - y_c + log p_c for any c; the max's own class gives it directly.
    const wide log_zs = -(log_ps[static_cast<std::size_t>(
        std::max_element(ys.begin(), ys.end()) - ys.begin())]);
    const wide log_zt = -(log_pt[static_cast<std::size_t>(
        std::max_element(yt.begin(), yt.end()) - yt.begin())]);
    const wide big_r = log_zs + log_zt + spread;
    out.row_losses[static_cast<std::size_t>(r)] = factor * kl;
    out.row_loss_scale[static_cast<std::size_t>(r)] = factor * (big_r + loss_terms);

    // Gradients at the Z-scores: student (f / tau)(p_s - p_t); teacher
    // (f / tau) p_t (log p_t - log p_s - KL); both times w.
    std::vector<wide> gs(n);
    std::vector<wide> gt(n);
    std::vector<wide> scale_s(n);
    std::vector<wide> scale_t(n);
    for (std::size_t c = 0; c < n; ++c) {
      const wide ps = std::exp(log_ps[c]);
      const wide pt = std::exp(log_pt[c]);
      const wide us = std::fabs(ys[c] - ys_max);
      const wide ut = std::fabs(yt[c] - yt_max);
      gs[c] = gain * (ps - pt);
      gt[c] = pt > 0 ? gain * pt * (log_pt[c] - log_ps[c] - kl) : 0;
      scale_s[c] = gain * (ps * (1 + us) + pt * (1 + ut));
      scale_t[c] = gain * pt * (1 + ut) * (ut + us + big_r);
    }
    if (o.standardize) {
      reference_through_zscore(gs, scale_s, xs, ms.mean, ms.std, o.eps, o.ddof);
      reference_through_zscore(gt, scale_t, xt, mt.mean, mt.std, o.eps, o.ddof);
    }
    for (std::size_t c = 0; c < n; ++c) {
      const std::size_t k = static_cast<std::size_t>(r) * n + c;
      out.grad_student[k] = gs[c];
      out.grad_teacher[k] = gt[c];
      out.grad_student_scale[k] = scale_s[c];
      out.grad_teacher_scale[k] = scale_t[c];
    }
  }
  wide total = 0;
  wide total_scale = 0;
  for (std::size_t r = 0; r < out.row_losses.size(); ++r) {
    total += out.row_losses[r];
    total_scale += out.row_loss_scale[r];
  }
  const bool mean = o.reduction == lskd::reduction::batchmean;
  out.loss = mean ? total / static_cast<wide>(rows) : total;
  out.loss_scale = mean ? total_scale / static_cast<wide>(rows) : total_scale;
  return out;
}

/// What one kd_loss call returned. Gradient buffers not asked for keep their sentinel.
template <class T>
struct kd_outputs {
  double loss = 0;
  std::vector<double> row_losses;
  std::vector<T> grad_student;
  std::vector<T> grad_teacher;
};

/// Which kd_loss entry point to call.
enum class kd_call { forward, both_gradients, student_gradient };

/// Runs kd_loss<T, Arch> on dense rows x cols inputs, with row_losses.
template <class T, class Arch>
kd_outputs<T> run_kd(const lskd::kd_options& options, const std::vector<T>& student,
                     const std::vector<T>& teacher, index rows, index cols,
                     kd_call call = kd_call::both_gradients) {
  const auto elements = static_cast<std::size_t>(rows * cols);
  kd_outputs<T> out;
  out.row_losses.assign(static_cast<std::size_t>(rows), std::nan(""));
  out.grad_student.assign(elements, padded_matrix<T>::sentinel());
  out.grad_teacher.assign(elements, padded_matrix<T>::sentinel());
  const lskd::kd_loss<T, Arch> kd(options);
  const lskd::matrix_view<const T> s(student.data(), rows, cols);
  const lskd::matrix_view<const T> t(teacher.data(), rows, cols);
  const lskd::matrix_view<T> gs(out.grad_student.data(), rows, cols);
  const lskd::matrix_view<T> gt(out.grad_teacher.data(), rows, cols);
  switch (call) {
    case kd_call::forward: out.loss = kd.forward(s, t, out.row_losses.data()); break;
    case kd_call::both_gradients:
      out.loss = kd.forward_backward(s, t, gs, gt, out.row_losses.data());
      break;
    case kd_call::student_gradient:
      out.loss = kd.forward_backward(s, t, gs, {}, out.row_losses.data());
      break;
  }
  return out;
}

/// k * scale + floor for kd_loss results in T: k = 1e-6 for float (about 17 units of
/// roundoff), 1e-13 for double, times the term magnitudes of reference_kd; floor = the
/// smallest normal T (below it values are subnormal and have no relative precision).
template <class T>
constexpr wide tolerance_factor() {
  return std::is_same<T, float>::value ? 1e-6 : 1e-13;
}
template <class T>
constexpr wide underflow_floor() {
  return std::numeric_limits<T>::min();
}

/// The reference's term magnitudes with another computation's values: for comparing two lskd
/// results (float with double, SIMD with scalar) at the tolerance of one of them.
template <class U>
reference_kd with_values_of(reference_kd ref, const kd_outputs<U>& values) {
  ref.loss = values.loss;
  for (std::size_t r = 0; r < ref.row_losses.size(); ++r) ref.row_losses[r] = values.row_losses[r];
  for (std::size_t j = 0; j < ref.grad_student.size(); ++j) {
    ref.grad_student[j] = values.grad_student[j];
    ref.grad_teacher[j] = values.grad_teacher[j];
  }
  return ref;
}

/// Compares a kd_loss result with the long-double reference at tolerance_factor<T>().
template <class T>
void check_kd_against_reference(const reference_kd& ref, const kd_outputs<T>& out,
                                bool student_gradient = true, bool teacher_gradient = true) {
  const wide k = tolerance_factor<T>();
  const wide floor = underflow_floor<T>();
  LSKD_CHECK_NEAR(ref.loss, out.loss, k * ref.loss_scale + floor);
  closeness rows("row_losses");
  for (std::size_t r = 0; r < ref.row_losses.size(); ++r) {
    rows.add(static_cast<index>(r), ref.row_losses[r], out.row_losses[r],
             k * ref.row_loss_scale[r] + floor);
  }
  LSKD_CHECK_CLOSE(rows);
  closeness gs("grad_student");
  closeness gt("grad_teacher");
  for (std::size_t j = 0; j < ref.grad_student.size(); ++j) {
    gs.add(static_cast<index>(j), ref.grad_student[j], out.grad_student[j],
           k * ref.grad_student_scale[j] + floor);
    gt.add(static_cast<index>(j), ref.grad_teacher[j], out.grad_teacher[j],
           k * ref.grad_teacher_scale[j] + floor);
  }
  if (student_gradient) LSKD_CHECK_CLOSE(gs);
  if (teacher_gradient) LSKD_CHECK_CLOSE(gt);
}

/// Readable description of options, for INFO.
inline std::string describe(const lskd::kd_options& o) {
  std::ostringstream out;
  out << "temperature " << o.temperature << ", standardize " << o.standardize << ", ddof "
      << o.ddof << ", eps " << o.eps << ", reduction " << lskd::to_string(o.reduction)
      << ", scale_by_t2 " << o.scale_by_t2;
  return out.str();
}

}  // namespace lskd_test
