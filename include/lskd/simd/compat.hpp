// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// The few xsimd calls whose names differ between xsimd 8 and later versions, and the lane
/// min and max that xsimd 8 lacks (x86 intrinsics where the architecture is known).
/// Everything else in lskd uses the xsimd API that both share.

#include <lskd/config.hpp>
#include <xsimd/xsimd.hpp>

#include <cstddef>
#include <cstdint>
#include <type_traits>

LSKD_NAMESPACE_BEGIN
namespace simd {
namespace compat {

namespace detail {

enum class fold { sum, min, max };

#if XSIMD_WITH_SSE2
/// The four floats of an SSE register folded to one.
template <fold How>
inline float fold4(__m128 four) noexcept {
  const auto apply = [](__m128 a, __m128 b) {
    if constexpr (How == fold::sum) return _mm_add_ps(a, b);
    if constexpr (How == fold::min) return _mm_min_ps(a, b);
    if constexpr (How == fold::max) return _mm_max_ps(a, b);
  };
  const __m128 two = apply(four, _mm_movehl_ps(four, four));
  return _mm_cvtss_f32(apply(two, _mm_shuffle_ps(two, two, 1)));
}
#endif

/// Sum, min or max over the lanes of a float or double batch, as a shuffle tree with x86
/// intrinsics where the architecture is known (xsimd 8 has no horizontal min or max, and its
/// horizontal sum goes through hadd instructions that cost three each); else through memory.
template <fold How, class T, class Arch>
inline T lanes_fold(const xsimd::batch<T, Arch>& values) noexcept {
#if XSIMD_WITH_AVX512F
  if constexpr (std::is_base_of<xsimd::avx512f, Arch>::value) {
    if constexpr (std::is_same<T, float>::value) {
      if constexpr (How == fold::sum) return _mm512_reduce_add_ps(values);
      if constexpr (How == fold::min) return _mm512_reduce_min_ps(values);
      if constexpr (How == fold::max) return _mm512_reduce_max_ps(values);
    } else if constexpr (std::is_same<T, double>::value) {
      if constexpr (How == fold::sum) return _mm512_reduce_add_pd(values);
      if constexpr (How == fold::min) return _mm512_reduce_min_pd(values);
      if constexpr (How == fold::max) return _mm512_reduce_max_pd(values);
    }
  }
#endif
#if XSIMD_WITH_AVX
  if constexpr (std::is_base_of<xsimd::avx, Arch>::value && std::is_same<T, float>::value) {
    const __m256 all = values;
    const __m128 low = _mm256_castps256_ps128(all);
    const __m128 high = _mm256_extractf128_ps(all, 1);
    if constexpr (How == fold::sum) return fold4<How>(_mm_add_ps(low, high));
    if constexpr (How == fold::min) return fold4<How>(_mm_min_ps(low, high));
    if constexpr (How == fold::max) return fold4<How>(_mm_max_ps(low, high));
  }
#endif
#if XSIMD_WITH_SSE2
  if constexpr (std::is_same<Arch, xsimd::sse2>::value && std::is_same<T, float>::value) {
    return fold4<How>(values);
  }
#endif
  // Through memory, as a pairwise tree (log2(lanes) roundings for a sum, as above).
  constexpr std::size_t size = xsimd::batch<T, Arch>::size;
  alignas(Arch::alignment()) T lanes[size];
  values.store_aligned(lanes);
  for (std::size_t stride = 1; stride < size; stride *= 2) {
    for (std::size_t lane = 0; lane + stride < size; lane += 2 * stride) {
      const T other = lanes[lane + stride];
      if constexpr (How == fold::sum) lanes[lane] += other;
      if constexpr (How == fold::min) lanes[lane] = other < lanes[lane] ? other : lanes[lane];
      if constexpr (How == fold::max) lanes[lane] = other > lanes[lane] ? other : lanes[lane];
    }
  }
  return lanes[0];
}

}  // namespace detail

/// Sum of the lanes of a batch.
template <class T, class Arch>
inline T reduce_add(const xsimd::batch<T, Arch>& values) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_add(values);
#else
  // xsimd 8 calls the horizontal sum `hadd`; version 9 renamed it.
  if constexpr (std::is_floating_point<T>::value) {
    return detail::lanes_fold<detail::fold::sum>(values);
  } else {
    return xsimd::hadd(values);
  }
#endif
}

/// Largest lane of a batch.
template <class T, class Arch>
inline T reduce_max(const xsimd::batch<T, Arch>& values) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_max(values);
#else
  return detail::lanes_fold<detail::fold::max>(values);
#endif
}

/// Smallest lane of a batch.
template <class T, class Arch>
inline T reduce_min(const xsimd::batch<T, Arch>& values) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_min(values);
#else
  return detail::lanes_fold<detail::fold::min>(values);
#endif
}

/// The bit pattern of a float batch as int32 lanes, and back. xsimd 11 changed bitwise_cast to
/// take the target's scalar type instead of its batch type.
template <class Arch>
inline xsimd::batch<std::int32_t, Arch> bits_of(const xsimd::batch<float, Arch>& values) noexcept {
#if XSIMD_VERSION_MAJOR >= 11
  return xsimd::bitwise_cast<std::int32_t>(values);
#else
  return xsimd::bitwise_cast<xsimd::batch<std::int32_t, Arch>>(values);
#endif
}
template <class Arch>
inline xsimd::batch<float, Arch> float_of_bits(
    const xsimd::batch<std::int32_t, Arch>& bits) noexcept {
#if XSIMD_VERSION_MAJOR >= 11
  return xsimd::bitwise_cast<float>(bits);
#else
  return xsimd::bitwise_cast<xsimd::batch<float, Arch>>(bits);
#endif
}

/// Whether the running CPU supports an x86 architecture tag. Reads the bits that
/// xsimd::available_architectures() reports under the same names in xsimd 8 to 13.
template <class Arch>
inline bool cpu_has() noexcept {
#if XSIMD_WITH_SSE2 || defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
  const auto cpu = xsimd::available_architectures();
  if constexpr (std::is_same<Arch, xsimd::sse2>::value) return cpu.sse2;
  if constexpr (std::is_same<Arch, xsimd::avx2>::value) return cpu.avx2;
  if constexpr (std::is_same<Arch, xsimd::fma3<xsimd::avx2>>::value) return cpu.fma3_avx2;
  // xsimd 8.1's avx512f kernels use AVX512DQ instructions in places (horizontal sums).
  if constexpr (std::is_same<Arch, xsimd::avx512f>::value) return cpu.avx512f && cpu.avx512dq;
  if constexpr (std::is_same<Arch, xsimd::avx512bw>::value) return cpu.avx512bw;
#endif
  return Arch::version() <= xsimd::available_architectures().best;
}

}  // namespace compat
}  // namespace simd
LSKD_NAMESPACE_END
