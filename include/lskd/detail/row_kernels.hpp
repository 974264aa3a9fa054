// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// Per-row sweeps, templated on the scalar type and the xsimd architecture. A kernel sees one
/// row as a pointer and a length; it knows nothing of Eigen, options, threads or errors. The
/// callers guarantee finite inputs and n >= 1.

#include <lskd/config.hpp>
#include <lskd/detail/reduce.hpp>

#include <array>
#include <cmath>
#include <limits>

#if defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__
#error "lskd detects NaN and infinity in its inputs; compile it without -ffinite-math-only"
#endif

LSKD_NAMESPACE_BEGIN
namespace detail {

/// Smallest and largest element of a row, whether every element is finite, and shifted
/// moment sums. For a row with masked classes (-inf in both teacher and student), min and max
/// are over the other classes, `usable` counts them, and the moment sums are not set.
template <class T>
struct row_scan {
  T min;
  T max;
  bool finite;
  index usable = 0;       ///< classes that are not masked; set by the caller's validation
  bool moments = false;   ///< shift, sum and squares below are set
  double shift = 0.0;     ///< K: the mean of the row's first pack
  double sum = 0.0;       ///< sum (x - K)
  double squares = 0.0;   ///< sum (x - K)^2
};

/// One read of a row: min, max, a finiteness flag, and the sums of x - K and (x - K)^2 for a
/// shift K close to the row's mean, so that most rows need no second pass for their std (see
/// moments_from_scan). x - x is 0 for a finite x and NaN for an infinity or a NaN, so a
/// running sum of it flags any non-finite element. Sums are blocked as in sum_sweep.
template <class T, class Arch>
inline row_scan<T> scan_row(const T* x, index n) {
  using P = pack_t<T, Arch>;
  constexpr index width = pack_width<P>::value;
  T low = x[0];
  T high = x[0];
  T flag = T(0);
  T shift = x[0];
  double sum = 0.0;
  double squares = 0.0;
  index i = 0;

  if constexpr (width > 1) {
    if (n >= width) {
      // The shift: the mean of the first pack, usually within a fraction of a std of the mean.
      shift = lanes_sum(load_pack<P>(x)) / static_cast<T>(width);
      P low_pack = P(x[0]);
      P high_pack = P(x[0]);
      P flag_pack = P(T(0));

      // Main loop: two packs a step into two accumulator sets (add latency), in blocks whose
      // sums move to double as in sum_sweep.
      constexpr index block = packs_per_block * 2 * width;
      while (i + 2 * width <= n) {
        P sum_first(T(0)), sum_second(T(0)), squares_first(T(0)), squares_second(T(0));
        const index block_end = std::min(n, i + block);
        for (; i + 2 * width <= block_end; i += 2 * width) {
          const P first = load_pack<P>(x + i);
          const P second = load_pack<P>(x + i + width);
          low_pack = min_of(low_pack, min_of(first, second));
          high_pack = max_of(high_pack, max_of(first, second));
          flag_pack += (first - first) + (second - second);
          const P d_first = first - P(shift);
          const P d_second = second - P(shift);
          sum_first += d_first;
          sum_second += d_second;
          squares_first = mul_add(d_first, d_first, squares_first);
          squares_second = mul_add(d_second, d_second, squares_second);
        }
        sum += static_cast<double>(lanes_sum(P(sum_first + sum_second)));
        squares += static_cast<double>(lanes_sum(P(squares_first + squares_second)));
      }

      // One whole pack may remain.
      if (i + width <= n) {
        const P values = load_pack<P>(x + i);
        low_pack = min_of(low_pack, values);
        high_pack = max_of(high_pack, values);
        flag_pack += values - values;
        const P d = values - P(shift);
        sum += static_cast<double>(lanes_sum(d));
        squares += static_cast<double>(lanes_sum(P(d * d)));
        i += width;
      }
      low = lanes_min(low_pack);
      high = lanes_max(high_pack);
      flag = lanes_sum(flag_pack);
    }
  }

  // Tail, with the deviations in double.
  for (; i < n; ++i) {
    low = min_of(low, x[i]);
    high = max_of(high, x[i]);
    flag += x[i] - x[i];
    const double d = static_cast<double>(x[i]) - static_cast<double>(shift);
    sum += d;
    squares += d * d;
  }
  row_scan<T> scan{low, high, flag == T(0), n};
  scan.moments = true;
  scan.shift = static_cast<double>(shift);
  scan.sum = sum;
  scan.squares = squares;
  return scan;
}

/// Mean and standard deviation of a row, in double. When `split`, the mean is also known as
/// high + low to better than double precision (high holds the leading digits, low the rest),
/// so that max - mean keeps its digits for rows whose spread is tiny next to their offset.
struct row_moments {
  double mean;
  double std;
  bool split = false;
  double high = 0.0;
  double low = 0.0;
};

/// The moments of a row from its scan, when they are as accurate as the two-pass ones: the
/// row has no masked class, its range keeps (x - K)^2 far from overflow and underflow, and
/// sum (x - K)^2 <= 1.5 * sum (x - mean)^2 (K within 0.7 std of the mean), so that
/// var = (S2 - S1^2 / n) / (n - ddof) loses at most a factor 3 of the sums' accuracy to
/// cancellation. Returns false otherwise, and the caller runs the two-pass moments_row.
template <class T>
inline bool moments_from_scan(const row_scan<T>& scan, index n, int ddof, row_moments& out) {
  if (!scan.moments || scan.usable != n) return false;
  const double range = static_cast<double>(scan.max) - static_cast<double>(scan.min);
  const double limit = std::ldexp(1.0, std::numeric_limits<T>::max_exponent / 2 - 8);
  if (range != 0.0 && (range > limit || range < 1.0 / limit)) return false;
  const double count = static_cast<double>(n);
  const double centered = scan.squares - scan.sum * (scan.sum / count);
  if (!(centered * 1.5 >= scan.squares)) return false;
  out.mean = scan.shift + scan.sum / count;
  out.std = std::sqrt((centered > 0.0 ? centered : 0.0) / static_cast<double>(n - ddof));
  out.split = true;
  out.high = scan.shift;
  out.low = scan.sum / count;
  return true;
}

/// A power of two s such that |magnitude * s| < 1, kept inside the normal range of T. Rows
/// are scaled by it before squaring so that neither 1e38 nor subnormal logits over- or
/// underflow the variance; multiplying by a power of two is exact.
template <class T>
inline T power_of_two_scale(T magnitude) {
  if (!(magnitude > T(0))) return T(1);
  int exponent = 0;
  std::frexp(magnitude, &exponent);
  const int limit = std::numeric_limits<T>::max_exponent - 2;
  const int shift = -exponent < limit ? -exponent : limit;
  return std::ldexp(T(1), shift);
}

/// Corrected two-pass moments of a row scaled by `scale` (a power of two from
/// power_of_two_scale): pass one sums the scaled values; pass two sums the deviations d from
/// that mean and their squares, and var = (sum d^2 - (sum d)^2 / n) / (n - ddof). Never
/// E[x^2] - E[x]^2, so rows like 1000 + N(0, 1) in float keep their digits: the relative
/// error of the variance is about 20 u_T plus the conditioning of the data itself. A
/// constant row gives std exactly 0. With `Masked`, -inf elements are left out and `usable`
/// counts the others. Requires usable - ddof >= 1.
template <class T, class Arch, bool Masked = false>
inline row_moments moments_row(const T* x, index n, int ddof, T scale, index usable) {
  const auto sums = sum_sweep<T, Arch, 1>(n, [&](auto tag, index i, auto& acc) {
    using P = typename decltype(tag)::type;
    const P values = load_pack<P>(x + i);
    if constexpr (Masked) {
      acc[0] += unless_masked(values, values * P(scale));
    } else {
      acc[0] += values * P(scale);
    }
  });
  const double count = static_cast<double>(usable);
  const double first_mean = sums[0] / count;

  const T center = static_cast<T>(first_mean);
  const auto deviations = sum_sweep<T, Arch, 2>(n, [&](auto tag, index i, auto& acc) {
    using P = typename decltype(tag)::type;
    const P values = load_pack<P>(x + i);
    P d = values * P(scale) - P(center);
    if constexpr (Masked) d = unless_masked(values, d);
    acc[0] += d;
    acc[1] += d * d;
  });
  const double mean_offset = deviations[0] / count;
  double squares = deviations[1] - deviations[0] * mean_offset;
  if (squares < 0.0) squares = 0.0;

  const double mean = (static_cast<double>(center) + mean_offset) / static_cast<double>(scale);
  const double std =
      std::sqrt(squares / static_cast<double>(usable - ddof)) / static_cast<double>(scale);
  return {mean, std, true, static_cast<double>(center) / static_cast<double>(scale),
          mean_offset / static_cast<double>(scale)};
}

/// The map from a raw logit to its exponent argument: u = (x * scale - shift) * gain. With
/// shift = max * scale, u <= 0 and u = 0 exactly at the row's max, so exp(u) never overflows.
template <class T>
struct affine {
  T scale;
  T shift;
  T gain;
};

/// u is kept above this floor so that exp(u) = 0 and products like exp(u) * u stay finite
/// (0, never 0 * inf), and so that xsimd's exp, which converts u * log2(e) to an integer of
/// the same width, is never asked to convert a value outside that integer's range. Only
/// absurd rows reach it: classic KD with a logit range beyond 2^30 (float) or 2^60 (double)
/// times the temperature, where the loss then counts each such logit as if it were that far.
template <class T>
inline constexpr T exponent_floor = std::numeric_limits<T>::digits > 24 ? -T(1152921504606846976.0)
                                                                        : -T(1073741824.0);

template <class P, class T>
inline P exponent_of(const P& x, const affine<T>& map) {
  return max_of(mul_add(x, P(map.scale), P(-map.shift)) * P(map.gain), P(exponent_floor<T>));
}

/// y = ((x * scale - shift_high) - shift_low) * gain, the Z-score with the mean split in two
/// parts so that rounding the mean to T does not shift every output.
template <class T>
struct split_affine {
  T scale;
  T shift_high;
  T shift_low;
  T gain;
};

template <class T, class Arch>
inline void affine_row(const T* x, T* out, index n, const split_affine<T>& map) {
  for_each_pack<T, Arch>(n, [&](auto tag, index i) {
    using P = typename decltype(tag)::type;
    const P shifted = mul_add(load_pack<P>(x + i), P(map.scale), P(-map.shift_high)) - P(map.shift_low);
    store_pack(out + i, shifted * P(map.gain));
  });
}

/// Sum of exp(u) over the row; stores exp(u) into `out` when it is not null.
template <class T, class Arch>
inline double exp_sum_row(const T* x, T* out, index n, const affine<T>& map) {
  const auto sums = sum_sweep<T, Arch, 1>(n, [&](auto tag, index i, auto& acc) {
    using P = typename decltype(tag)::type;
    const P e = exp_of(exponent_of(load_pack<P>(x + i), map));
    if (out != nullptr) store_pack(out + i, e);
    acc[0] += e;
  });
  return sums[0];
}

/// out *= factor.
template <class T, class Arch>
inline void scale_row(T* out, index n, T factor) {
  for_each_pack<T, Arch>(n, [&](auto tag, index i) {
    using P = typename decltype(tag)::type;
    store_pack(out + i, load_pack<P>(out + i) * P(factor));
  });
}

/// out = u - log_normalizer.
template <class T, class Arch>
inline void log_softmax_row(const T* x, T* out, index n, const affine<T>& map, T log_normalizer) {
  for_each_pack<T, Arch>(n, [&](auto tag, index i) {
    using P = typename decltype(tag)::type;
    store_pack(out + i, exponent_of(load_pack<P>(x + i), map) - P(log_normalizer));
  });
}

/// What the KD exp sweep gathers.
enum class kd_sums : int {
  loss = 3,          ///< Zs, Zt, K
  student_grad = 5,  ///< + Ms, Mt
  both_grads = 7,    ///< + Nt, Pt
};

/// The one sweep of the KD loss that takes exponentials: two per logit. With es = exp(us),
/// et = exp(ut) it returns
///   [0] Zs = sum es, [1] Zt = sum et, [2] K = sum et (ut - us),
///   [3] Ms = sum es us, [4] Mt = sum et us, [5] Nt = sum et ut, [6] Pt = sum et (ut - us) ut,
/// as many as `Sums` asks for, and stores es and et when gradients will need them.
template <class T, class Arch, kd_sums Sums>
inline std::array<double, static_cast<std::size_t>(Sums)> kd_exp_sweep(
    const T* student, const T* teacher, index n, const affine<T>& student_map,
    const affine<T>& teacher_map, T* student_exps, T* teacher_exps) {
  constexpr std::size_t count = static_cast<std::size_t>(Sums);
  return sum_sweep<T, Arch, count>(n, [&](auto tag, index i, auto& acc) {
    using P = typename decltype(tag)::type;
    const P us = exponent_of(load_pack<P>(student + i), student_map);
    const P ut = exponent_of(load_pack<P>(teacher + i), teacher_map);
    const P es = exp_of(us);
    const P et = exp_of(ut);
    const P gap = ut - us;
    acc[0] += es;
    acc[1] += et;
    acc[2] += et * gap;
    if constexpr (Sums != kd_sums::loss) {
      store_pack(student_exps + i, es);
      store_pack(teacher_exps + i, et);
      acc[3] += es * us;
      acc[4] += et * us;
    }
    if constexpr (Sums == kd_sums::both_grads) {
      acc[5] += et * ut;
      acc[6] += et * gap * ut;
    }
  });
}

/// Student gradient: dx = a * es - b * et - (d * us + e).
template <class T>
struct student_grad_coeffs {
  T a, b, d, e;
};

/// Teacher gradient: dv = f * et * (ut - us + g) - (h * ut + i).
template <class T>
struct teacher_grad_coeffs {
  T f, g, h, i;
};

/// The teacher's gradient element of plain KD: f * et * (ut - us + g) - (h * ut + i). Other
/// losses (DKD) overload it for their own coefficient type.
template <class P, class T>
inline P teacher_gradient(const P& et, const P& ut, const P& us, const teacher_grad_coeffs<T>& c) {
  return mul_add(et * P(c.f), ut - us + P(c.g), -mul_add(P(c.h), ut, P(c.i)));
}

/// Writes the student and/or teacher gradient of one row from the stored exponentials. Reads
/// every input element before writing the same index, so a gradient may exactly replace its
/// own logits. With `Masked`, classes whose student logit is -inf (masked in both) get
/// exactly 0. The teacher's element comes from teacher_gradient(et, ut, us, tc), chosen by
/// the type of `tc`.
template <class T, class Arch, bool Student, bool Teacher, bool Masked = false,
          class TeacherCoeffs = teacher_grad_coeffs<T>>
inline void kd_grad_sweep(const T* student, const T* teacher, const T* student_exps,
                          const T* teacher_exps, index n, const affine<T>& student_map,
                          const affine<T>& teacher_map, const student_grad_coeffs<T>& sc,
                          const TeacherCoeffs& tc, T* grad_student, T* grad_teacher) {
  for_each_pack<T, Arch>(n, [&](auto tag, index i) {
    using P = typename decltype(tag)::type;
    const P x = load_pack<P>(student + i);
    const P us = exponent_of(x, student_map);
    const P et = load_pack<P>(teacher_exps + i);
    const auto finish = [&](const P& gradient) {
      if constexpr (Masked) {
        return unless_masked(x, gradient);
      } else {
        return gradient;
      }
    };
    if constexpr (Student) {
      const P es = load_pack<P>(student_exps + i);
      const P dx = mul_add(P(sc.a), es, -mul_add(P(sc.b), et, mul_add(P(sc.d), us, P(sc.e))));
      if constexpr (Teacher) {
        // Both read before either is written: a gradient may replace its own logits.
        const P dv = teacher_gradient(et, exponent_of(load_pack<P>(teacher + i), teacher_map),
                                      us, tc);
        store_pack(grad_student + i, finish(dx));
        store_pack(grad_teacher + i, finish(dv));
      } else {
        store_pack(grad_student + i, finish(dx));
      }
    } else if constexpr (Teacher) {
      const P ut = exponent_of(load_pack<P>(teacher + i), teacher_map);
      store_pack(grad_teacher + i, finish(teacher_gradient(et, ut, us, tc)));
    }
  });
}

}  // namespace detail
LSKD_NAMESPACE_END
