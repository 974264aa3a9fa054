// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// One vocabulary for a SIMD batch and for a plain scalar, so that each row kernel is written
/// once and runs on whole batches in its main loop and on single elements in its tail (and on
/// the `scalar` architecture everywhere).

#include <lskd/config.hpp>
#include <lskd/simd/compat.hpp>
#include <lskd/simd/dispatch.hpp>

#include <cmath>
#include <cstddef>
#include <limits>
#include <type_traits>

LSKD_NAMESPACE_BEGIN
namespace detail {

using index = std::ptrdiff_t;

/// The pack type of an architecture: xsimd::batch<T, Arch>, or T itself for `scalar`.
template <class T, class Arch>
struct pack_of {
  using type = xsimd::batch<T, Arch>;
};
template <class T>
struct pack_of<T, simd::scalar> {
  using type = T;
};
template <class T, class Arch>
using pack_t = typename pack_of<T, Arch>::type;

/// Elements in one pack.
template <class P>
struct pack_width {
  static constexpr index value = static_cast<index>(P::size);
};
template <>
struct pack_width<float> {
  static constexpr index value = 1;
};
template <>
struct pack_width<double> {
  static constexpr index value = 1;
};

/// A type tag passed to generic kernel bodies: the body learns the pack type from it.
template <class P>
struct pack_tag {
  using type = P;
};

// Scalar overloads. The batch overloads below forward to xsimd.

template <class P, class T>
inline P load_pack(const T* source) noexcept {
  if constexpr (std::is_same<P, T>::value) {
    return *source;
  } else {
    return P::load_unaligned(source);
  }
}

template <class T>
inline void store_pack(T* target, T value) noexcept {
  *target = value;
}
template <class T, class Arch>
inline void store_pack(T* target, const xsimd::batch<T, Arch>& value) noexcept {
  value.store_unaligned(target);
}

/// The architecture of a pack type; void for a single element.
template <class P>
struct arch_of {
  using type = void;
};
template <class T, class Arch>
struct arch_of<xsimd::batch<T, Arch>> {
  using type = Arch;
};

/// Which masked loads and stores a pack type has: AVX-512's (a lane bit mask), AVX2's (a lane
/// vector mask), or none (SSE2 and single elements go through a copy on the stack).
template <class P>
inline constexpr bool has_avx512_masks =
    std::is_base_of<xsimd::avx512f, typename arch_of<P>::type>::value;
template <class P>
inline constexpr bool has_avx2_masks =
    std::is_base_of<xsimd::avx2, typename arch_of<P>::type>::value;

#if XSIMD_WITH_AVX512F
/// The bit mask of the first `count` lanes (count < 16).
inline __mmask16 first_lanes_bits(index count) noexcept {
  return static_cast<__mmask16>((1u << count) - 1u);
}
#endif

#if XSIMD_WITH_AVX2
/// All bits set in the first `count` lanes of T, for AVX2's masked loads and stores.
template <class T>
inline __m256i first_lanes_mask(index count) noexcept {
  if constexpr (sizeof(T) == 4) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  } else {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(count), _mm256_setr_epi64x(0, 1, 2, 3));
  }
}
#endif

/// A row's last `count` elements (0 < count < the pack's width) as one whole pack, the other
/// lanes set to `fill`: the tail of a row runs through the same batch code as the rest, without
/// a read past its end. AVX-512 and AVX2 load only the row's lanes with a masked load (which
/// never touches, or faults on, the masked-off memory); SSE2 goes through a copy on the stack.
template <class P, class T>
inline P load_partial(const T* source, index count, T fill) noexcept {
#if XSIMD_WITH_AVX512F
  if constexpr (has_avx512_masks<P>) {
    if constexpr (std::is_same<T, float>::value) {
      return P(_mm512_mask_loadu_ps(_mm512_set1_ps(fill), first_lanes_bits(count), source));
    } else {
      return P(_mm512_mask_loadu_pd(_mm512_set1_pd(fill),
                                    static_cast<__mmask8>(first_lanes_bits(count)), source));
    }
  } else
#endif
#if XSIMD_WITH_AVX2
  if constexpr (has_avx2_masks<P>) {
    const __m256i lanes = first_lanes_mask<T>(count);
    if constexpr (std::is_same<T, float>::value) {
      return P(_mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(source, lanes),
                                _mm256_castsi256_ps(lanes)));
    } else {
      return P(_mm256_blendv_pd(_mm256_set1_pd(fill), _mm256_maskload_pd(source, lanes),
                                _mm256_castsi256_pd(lanes)));
    }
  } else
#endif
  {
    alignas(64) T lanes[pack_width<P>::value];
    for (index k = 0; k < pack_width<P>::value; ++k) lanes[k] = k < count ? source[k] : fill;
    return load_pack<P>(lanes);
  }
}

/// Stores the first `count` lanes of `value` and nothing past them (masked stores, as in
/// load_partial).
template <class P, class T>
inline void store_partial(T* target, const P& value, index count) noexcept {
#if XSIMD_WITH_AVX512F
  if constexpr (has_avx512_masks<P>) {
    if constexpr (std::is_same<T, float>::value) {
      _mm512_mask_storeu_ps(target, first_lanes_bits(count), value);
    } else {
      _mm512_mask_storeu_pd(target, static_cast<__mmask8>(first_lanes_bits(count)), value);
    }
    return;
  } else
#endif
#if XSIMD_WITH_AVX2
  if constexpr (has_avx2_masks<P>) {
    const __m256i lanes = first_lanes_mask<T>(count);
    if constexpr (std::is_same<T, float>::value) {
      _mm256_maskstore_ps(target, lanes, value);
    } else {
      _mm256_maskstore_pd(target, lanes, value);
    }
    return;
  } else
#endif
  {
    alignas(64) T lanes[pack_width<P>::value];
    store_pack(lanes, value);
    for (index k = 0; k < count; ++k) target[k] = lanes[k];
  }
}

/// The sum of the first `count` lanes of a pack, in double, one lane at a time.
template <class P>
inline double lanes_in_double(const P& value, index count) noexcept {
  using T = typename P::value_type;
  alignas(64) T lanes[pack_width<P>::value];
  store_pack(lanes, value);
  double total = 0.0;
  for (index k = 0; k < count; ++k) total += static_cast<double>(lanes[k]);
  return total;
}

/// a * b + c, fused where the architecture has FMA.
template <class T>
inline T mul_add(T a, T b, T c) noexcept {
  return a * b + c;
}
template <class T, class Arch>
inline xsimd::batch<T, Arch> mul_add(const xsimd::batch<T, Arch>& a, const xsimd::batch<T, Arch>& b,
                                     const xsimd::batch<T, Arch>& c) noexcept {
  return xsimd::fma(a, b, c);
}

template <class T>
inline T max_of(T a, T b) noexcept {
  return a > b ? a : b;
}
template <class T, class Arch>
inline xsimd::batch<T, Arch> max_of(const xsimd::batch<T, Arch>& a,
                                    const xsimd::batch<T, Arch>& b) noexcept {
  return xsimd::max(a, b);
}

template <class T>
inline T min_of(T a, T b) noexcept {
  return a < b ? a : b;
}
template <class T, class Arch>
inline xsimd::batch<T, Arch> min_of(const xsimd::batch<T, Arch>& a,
                                    const xsimd::batch<T, Arch>& b) noexcept {
  return xsimd::min(a, b);
}

/// exp(u) of an exponent argument: every kernel calls it on u = exponent_of(...) <= 0, which
/// the row's max shift guarantees. Single elements and double batches use std::exp and
/// xsimd::exp; float batches use exp_of_nonpositive below.
template <class T>
inline T exp_of(T x) noexcept {
  return std::exp(x);
}
template <class Arch>
inline xsimd::batch<double, Arch> exp_of(const xsimd::batch<double, Arch>& x) noexcept {
  return xsimd::exp(x);
}

/// exp(u) of a float batch with u <= 0, about 1 ulp, in 11 to 15 instructions against about 20
/// for xsimd::exp, which must also handle overflow: it is the inner loop's largest cost. u is
/// split as k ln 2 + r with |r| <= ln(2) / 2, k rounded to nearest by adding 1.5 * 2^23 (the
/// integer lands in the low mantissa bits); exp(r) is a degree-6 polynomial whose coefficients
/// were fitted for lskd for relative error on that interval (2e-9 before rounding; see
/// tools/fit_exp.py); 2^k is applied by vscalefps on AVX-512 and by adding k to the exponent
/// bits elsewhere. Results that would be below the smallest normal float (u < about -87) are
/// exactly 0, as in xsimd::exp, so no subnormal ever reaches the sums.
template <class Arch>
inline xsimd::batch<float, Arch> exp_of(const xsimd::batch<float, Arch>& u) noexcept {
  using P = xsimd::batch<float, Arch>;
  constexpr float log2_e = 1.44269504088896341f;
  constexpr float ln2_high = 0.693145751953125f;       // 16 significant bits: k * ln2_high is exact
  constexpr float ln2_low = 1.42860682030941723e-06f;  // ln 2 - ln2_high
  constexpr float round_to_integer = 12582912.0f;      // 1.5 * 2^23
  const auto polynomial = [](const P& r) {
    P p(0.001384337549097836f);
    p = mul_add(p, r, P(0.008374394848942757f));
    p = mul_add(p, r, P(0.04166801646351814f));
    p = mul_add(p, r, P(0.16666428744792938f));
    p = mul_add(p, r, P(0.4999999403953552f));
    p = mul_add(p, r, P(1.0f));
    return mul_add(p, r, P(1.0f));
  };
#if XSIMD_WITH_AVX512F
  if constexpr (std::is_base_of<xsimd::avx512f, Arch>::value) {
    // Lanes below log(FLT_MIN) are zeroed by the mask; they may hold any finite garbage before.
    const __mmask16 keep = _mm512_cmp_ps_mask(u, _mm512_set1_ps(-87.33654f), _CMP_GE_OQ);
    const P shifted = mul_add(u, P(log2_e), P(round_to_integer));
    const P k = shifted - P(round_to_integer);
    P r = mul_add(-k, P(ln2_high), u);
    r = mul_add(-k, P(ln2_low), r);
    return P(_mm512_maskz_scalef_ps(keep, polynomial(r), k));
  } else
#endif
  {
    // Clamped at -87 so that k >= -126 and exp(r) >= 1 there: the exponent field stays normal.
    const P x = max_of(u, P(-87.0f));
    const P shifted = mul_add(x, P(log2_e), P(round_to_integer));
    const P k = shifted - P(round_to_integer);
    P r = mul_add(-k, P(ln2_high), x);
    r = mul_add(-k, P(ln2_low), r);
    // The low 9 bits of shifted's bit pattern are k mod 512: shifted left by 23 they add k to
    // the exponent field of exp(r), modulo 2^32.
    const auto k_bits = simd::compat::bits_of(shifted) << 23;
    const P scaled = simd::compat::float_of_bits(simd::compat::bits_of(polynomial(r)) + k_bits);
    return xsimd::select(u >= P(-87.0f), scaled, P(0.0f));
  }
}

/// `value` where `x` is a usable logit, 0 where it is -inf (a masked class).
template <class T>
inline T unless_masked(T x, T value) noexcept {
  return x >= std::numeric_limits<T>::lowest() ? value : T(0);
}
template <class T, class Arch>
inline xsimd::batch<T, Arch> unless_masked(const xsimd::batch<T, Arch>& x,
                                           const xsimd::batch<T, Arch>& value) noexcept {
  using P = xsimd::batch<T, Arch>;
  return xsimd::select(x >= P(std::numeric_limits<T>::lowest()), value, P(T(0)));
}

template <class T>
inline T lanes_sum(T value) noexcept {
  return value;
}
template <class T, class Arch>
inline T lanes_sum(const xsimd::batch<T, Arch>& value) noexcept {
  return simd::compat::reduce_add(value);
}

template <class T>
inline T lanes_max(T value) noexcept {
  return value;
}
template <class T, class Arch>
inline T lanes_max(const xsimd::batch<T, Arch>& value) noexcept {
  return simd::compat::reduce_max(value);
}

template <class T>
inline T lanes_min(T value) noexcept {
  return value;
}
template <class T, class Arch>
inline T lanes_min(const xsimd::batch<T, Arch>& value) noexcept {
  return simd::compat::reduce_min(value);
}

}  // namespace detail
LSKD_NAMESPACE_END
