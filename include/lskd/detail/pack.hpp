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

template <class T>
inline T exp_of(T x) noexcept {
  return std::exp(x);
}
template <class T, class Arch>
inline xsimd::batch<T, Arch> exp_of(const xsimd::batch<T, Arch>& x) noexcept {
  return xsimd::exp(x);
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
