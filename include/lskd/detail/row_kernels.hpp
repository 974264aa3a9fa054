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
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#if defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__
#error "lskd detects NaN and infinity in its inputs; compile it without -ffinite-math-only"
#endif

LSKD_NAMESPACE_BEGIN
namespace detail {

/// Smallest and largest element of a row, whether every element is finite, and shifted
/// moment sums. For a row with masked classes (-inf in both teacher and student), min and max
/// are over the other classes, `usable` counts them, and the moment sums are not set.
/// Trivially constructible, so that a batch's array of scans costs no writes until each thread
/// fills its own rows; brace-initialize every member.
template <class T>
struct row_scan {
  T min;
  T max;
  bool finite;
  index usable;    ///< classes that are not masked; set by the caller's validation
  bool moments;    ///< shift, sum and squares below are set
  double shift;    ///< K: the mean of the row's first pack
  double sum;      ///< sum (x - K)
  double squares;  ///< sum (x - K)^2
};

/// One read of a row: min, max, whether every element is finite, and the sums of x - K and
/// (x - K)^2 for a shift K close to the row's mean, so that most rows need no second pass for
/// their std (see moments_from_scan). A NaN or an infinity makes those sums non-finite; so can
/// a finite row whose squares overflow, which a second, exact look then tells apart (and
/// leaves without moments). Sums are blocked as in sum_sweep; the tail is one pack padded with
/// K, which lies within the row's range, and only its row's lanes are summed.
template <class T, class Arch>
inline row_scan<T> scan_row(const T* x, index n) {
  using P = pack_t<T, Arch>;
  constexpr index width = pack_width<P>::value;
  T low = x[0];
  T high = x[0];
  T shift = x[0];
  double sum = 0.0;
  double squares = 0.0;
  index i = 0;

  if constexpr (width > 1) {
    // The shift: the mean of the first pack, usually within a fraction of a std of the mean.
    if (n >= width) shift = lanes_sum(load_pack<P>(x)) * (T(1) / static_cast<T>(width));
    P low_pack = P(x[0]);
    P high_pack = P(x[0]);
    const auto add = [&](const P& values, P& sums, P& square_sums) {
      low_pack = min_of(low_pack, values);
      high_pack = max_of(high_pack, values);
      const P d = values - P(shift);
      sums += d;
      square_sums = mul_add(d, d, square_sums);
    };

    // Two packs a step into two accumulator sets (add latency), in blocks whose sums move to
    // double as in sum_sweep; an odd pack goes into the last block.
    const index whole = n - n % width;
    constexpr index block = packs_per_block * 2 * width;
    // The tail as one pack padded with K (adding 0 to both sums): into the last block's second
    // set when it has room, as in kd_exp_sweep, else on its own with its lanes added in double.
    bool tail_done = whole == n;
    while (i < whole) {
      P sum_first(T(0)), sum_second(T(0)), squares_first(T(0)), squares_second(T(0));
      const index block_end = std::min(whole, i + block);
      const index block_begin = i;
      for (; i + 2 * width <= block_end; i += 2 * width) {
        add(load_pack<P>(x + i), sum_first, squares_first);
        add(load_pack<P>(x + i + width), sum_second, squares_second);
      }
      if (i < block_end) {
        add(load_pack<P>(x + i), sum_first, squares_first);
        i += width;
      }
      if (!tail_done && i == whole && block_end - block_begin < block) {
        add(load_partial<P>(x + whole, n - whole, shift), sum_second, squares_second);
        tail_done = true;
      }
      sum += static_cast<double>(lanes_sum(P(sum_first + sum_second)));
      squares += static_cast<double>(lanes_sum(P(squares_first + squares_second)));
    }
    if (!tail_done) {
      P last_sum(T(0)), last_squares(T(0));
      add(load_partial<P>(x + whole, n - whole, shift), last_sum, last_squares);
      sum += lanes_in_double(last_sum, n - whole);
      squares += lanes_in_double(last_squares, n - whole);
    }
    i = n;
    low = lanes_min(low_pack);
    high = lanes_max(high_pack);
  }

  // The scalar path, with the deviations in double.
  for (; i < n; ++i) {
    low = min_of(low, x[i]);
    high = max_of(high, x[i]);
    const double d = static_cast<double>(x[i]) - static_cast<double>(shift);
    sum += d;
    squares += d * d;
  }

  row_scan<T> scan{low, high, true, n, false, 0.0, 0.0, 0.0};
  if (std::isfinite(sum) && std::isfinite(squares)) {
    scan.moments = true;
    scan.shift = static_cast<double>(shift);
    scan.sum = sum;
    scan.squares = squares;
    return scan;
  }
  // Non-finite sums: a NaN or an infinity, or finite values whose squares overflowed. Look
  // again, exactly; a finite row keeps its exact range and goes without moments.
  low = x[0];
  high = x[0];
  for (index k = 0; k < n; ++k) {
    if (!std::isfinite(x[k])) {
      scan.finite = false;
      return scan;
    }
    low = min_of(low, x[k]);
    high = max_of(high, x[k]);
  }
  scan.min = low;
  scan.max = high;
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
  // frexp's exponent, read from the bits for normal numbers (frexp and ldexp are library
  // calls, and this runs twice per row); subnormals take the library path.
  using bits_t = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  constexpr int mantissa_bits = std::numeric_limits<T>::digits - 1;
  constexpr int bias = std::numeric_limits<T>::max_exponent - 1;
  bits_t bits;
  std::memcpy(&bits, &magnitude, sizeof bits);
  const int field = static_cast<int>(bits >> mantissa_bits);  // the sign bit is 0
  int exponent = 0;
  if (field == 0) {
    std::frexp(magnitude, &exponent);
  } else {
    exponent = field - bias + 1;  // magnitude = m 2^exponent with m in [0.5, 1)
  }
  const int limit = std::numeric_limits<T>::max_exponent - 2;
  const int shift = -exponent < limit ? -exponent : limit;
  if (shift + bias <= 0) return std::ldexp(T(1), shift);  // magnitudes >= 2^(max_exponent - 1)
  const bits_t result = static_cast<bits_t>(shift + bias) << mantissa_bits;
  T scale;
  std::memcpy(&scale, &result, sizeof scale);
  return scale;
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

/// Elements of a row of n that whole packs of P cover; the rest (fewer than a pack's width) is
/// the tail that kernels run as one padded pack.
template <class T, class Arch>
inline index whole_packs_part(index n) {
  constexpr index width = pack_width<pack_t<T, Arch>>::value;
  return n - n % width;
}

/// The one sweep of the KD loss that takes exponentials: two per logit. With es = exp(us),
/// et = exp(ut) it returns
///   [0] Zs = sum es, [1] Zt = sum et, [2] K = sum et (ut - us),
///   [3] Ms = sum es us, [4] Mt = sum et us, [5] Nt = sum et ut, [6] Pt = sum et (ut - us) ut,
/// as many as `Sums` asks for, and stores es and et when gradients will need them. The tail is
/// one pack padded with -inf, which a row's map takes to the exponent floor: its exponentials
/// are exactly 0, and so is everything it adds.
template <class T, class Arch, kd_sums Sums>
inline std::array<double, static_cast<std::size_t>(Sums)> kd_exp_sweep(
    const T* student, const T* teacher, index n, const affine<T>& student_map,
    const affine<T>& teacher_map, T* student_exps, T* teacher_exps) {
  constexpr std::size_t count = static_cast<std::size_t>(Sums);
  constexpr bool stores = Sums != kd_sums::loss;
  // Local copies: the stores below could alias the callers' maps, which would make the
  // compiler reload and broadcast them on every pack.
  const affine<T> sm = student_map;
  const affine<T> tm = teacher_map;
  // One pack's terms, from its logits; returns es and et for the caller to store.
  const auto terms = [&](const auto& x, const auto& v, auto& acc) {
    using P = std::decay_t<decltype(x)>;
    const P us = exponent_of(x, sm);
    const P ut = exponent_of(v, tm);
    const P es = exp_of(us);
    const P et = exp_of(ut);
    const P gap = ut - us;
    // Products are fused explicitly, so that each sum rounds the same way whichever others are
    // gathered (the compiler's own contraction depends on what it can share between them).
    // (Single elements add their float product to a double sum.)
    const auto add_product = [](auto& sum, const P& a, const P& b) {
      if constexpr (pack_width<P>::value > 1) {
        sum = mul_add(a, b, sum);
      } else {
        sum += a * b;
      }
    };
    acc[0] += es;
    acc[1] += et;
    add_product(acc[2], et, gap);
    if constexpr (stores) {
      add_product(acc[3], es, us);
      add_product(acc[4], et, us);
    }
    if constexpr (Sums == kd_sums::both_grads) {
      add_product(acc[5], et, ut);
      add_product(acc[6], et, P(gap * ut));
    }
    return std::make_pair(es, et);
  };
  using P = pack_t<T, Arch>;
  constexpr index width = pack_width<P>::value;
  std::array<double, count> sums{};
  if constexpr (width == 1) {
    for (index i = 0; i < n; ++i) {
      const auto e = terms(student[i], teacher[i], sums);
      if constexpr (stores) {
        student_exps[i] = e.first;
        teacher_exps[i] = e.second;
      }
    }
    return sums;
  } else {
    // Blocks as in sum_sweep, with an odd pack added into the last block's accumulators (each
    // lane still adds at most packs_per_block values), so that a short row pays for one lane
    // reduction per sum, not two. The tail is one pack padded with -inf: it joins the last
    // block's second set when that set has room, and otherwise (a row shorter than a pack, or
    // a last block that is full) its row's lanes are added in double, as single elements.
    const index rest = n - whole_packs_part<T, Arch>(n);
    const T pad = -std::numeric_limits<T>::infinity();
    const auto tail_step = [&](std::array<P, count>& acc) {
      const index at = n - rest;
      const auto e = terms(load_partial<P>(student + at, rest, pad),
                           load_partial<P>(teacher + at, rest, pad), acc);
      if constexpr (stores) {
        store_partial(student_exps + at, e.first, rest);
        store_partial(teacher_exps + at, e.second, rest);
      }
    };
    const auto whole_step = [&](index i, std::array<P, count>& acc) {
      const auto e = terms(load_pack<P>(student + i), load_pack<P>(teacher + i), acc);
      if constexpr (stores) {
        store_pack(student_exps + i, e.first);
        store_pack(teacher_exps + i, e.second);
      }
    };
    const index whole = n - rest;
    constexpr index block = packs_per_block * 2 * width;
    bool tail_done = rest == 0;
    index i = 0;
    while (i < whole) {
      std::array<P, count> first;
      std::array<P, count> second;
      first.fill(P(T(0)));
      second.fill(P(T(0)));
      const index block_end = std::min(whole, i + block);
      const index block_begin = i;
      for (; i + 2 * width <= block_end; i += 2 * width) {
        whole_step(i, first);
        whole_step(i + width, second);
      }
      if (i < block_end) {
        whole_step(i, first);
        i += width;
      }
      if (!tail_done && i == whole && block_end - block_begin < block) {
        tail_step(second);
        tail_done = true;
      }
      for (std::size_t k = 0; k < count; ++k) {
        sums[k] += static_cast<double>(lanes_sum(P(first[k] + second[k])));
      }
    }
    if (!tail_done) {
      std::array<P, count> acc;
      acc.fill(P(T(0)));
      tail_step(acc);
      for (std::size_t k = 0; k < count; ++k) sums[k] += lanes_in_double(acc[k], rest);
    }
    return sums;
  }
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
/// the type of `tc`. The tail runs as one padded pack, of which only the row's lanes are stored.
template <class T, class Arch, bool Student, bool Teacher, bool Masked = false,
          class TeacherCoeffs = teacher_grad_coeffs<T>>
inline void kd_grad_sweep(const T* student, const T* teacher, const T* student_exps,
                          const T* teacher_exps, index n, const affine<T>& student_map,
                          const affine<T>& teacher_map,
                          const student_grad_coeffs<T>& student_coeffs,
                          const TeacherCoeffs& teacher_coeffs, T* grad_student, T* grad_teacher) {
  // Local copies, as in kd_exp_sweep: the gradient stores could alias the callers' structs.
  const affine<T> sm = student_map;
  const affine<T> tm = teacher_map;
  const student_grad_coeffs<T> sc = student_coeffs;
  const TeacherCoeffs tc = teacher_coeffs;
  // One pack of gradients from its logits x (student) and v (teacher) and exponentials.
  const auto gradients = [&](const auto& x, const auto& v, const auto& es, const auto& et) {
    using P = std::decay_t<decltype(x)>;
    const P us = exponent_of(x, sm);
    const auto finish = [&](const P& gradient) {
      if constexpr (Masked) {
        return unless_masked(x, gradient);
      } else {
        return gradient;
      }
    };
    P dx = P(T(0));
    P dv = P(T(0));
    if constexpr (Student) {
      dx = finish(mul_add(P(sc.a), es, -mul_add(P(sc.b), et, mul_add(P(sc.d), us, P(sc.e)))));
    }
    if constexpr (Teacher) {
      dv = finish(teacher_gradient(et, exponent_of(v, tm), us, tc));
    }
    return std::make_pair(dx, dv);
  };
  const index whole = whole_packs_part<T, Arch>(n);
  for_each_pack<T, Arch>(whole, [&](auto tag, index i) {
    using P = typename decltype(tag)::type;
    const P x = load_pack<P>(student + i);
    const P v = Teacher ? load_pack<P>(teacher + i) : x;
    const P es = Student ? load_pack<P>(student_exps + i) : x;
    // Every input is read before either gradient is written: a gradient may replace its logits.
    const auto g = gradients(x, v, es, load_pack<P>(teacher_exps + i));
    if constexpr (Student) store_pack(grad_student + i, g.first);
    if constexpr (Teacher) store_pack(grad_teacher + i, g.second);
  });
  if (whole < n) {
    using P = pack_t<T, Arch>;
    const index rest = n - whole;
    const T pad = T(0);
    const P x = load_partial<P>(student + whole, rest, pad);
    const P v = Teacher ? load_partial<P>(teacher + whole, rest, pad) : x;
    const P es = Student ? load_partial<P>(student_exps + whole, rest, pad) : x;
    const auto g = gradients(x, v, es, load_partial<P>(teacher_exps + whole, rest, pad));
    if constexpr (Student) store_partial(grad_student + whole, g.first, rest);
    if constexpr (Teacher) store_partial(grad_teacher + whole, g.second, rest);
  }
}

}  // namespace detail
LSKD_NAMESPACE_END
