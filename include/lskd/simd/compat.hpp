// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// The few xsimd calls whose names differ between xsimd 8 and xsimd 9 and later.
/// Everything else in lskd uses the xsimd API that both share.

#include <lskd/config.hpp>
#include <xsimd/xsimd.hpp>

#include <cstddef>
#include <type_traits>

LSKD_NAMESPACE_BEGIN
namespace simd {
namespace compat {

/// Sum of the lanes of a batch.
template <class T, class Arch>
inline T reduce_add(const xsimd::batch<T, Arch>& values) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_add(values);
#else
  // xsimd 8 calls the horizontal sum `hadd`; version 9 renamed it.
  return xsimd::hadd(values);
#endif
}

/// Largest lane of a batch. xsimd 8 has no horizontal max, so it goes through memory there.
template <class T, class Arch>
inline T reduce_max(const xsimd::batch<T, Arch>& values) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_max(values);
#else
  alignas(Arch::alignment()) T lanes[xsimd::batch<T, Arch>::size];
  values.store_aligned(lanes);
  T best = lanes[0];
  for (std::size_t lane = 1; lane < xsimd::batch<T, Arch>::size; ++lane) {
    best = lanes[lane] > best ? lanes[lane] : best;
  }
  return best;
#endif
}

/// Smallest lane of a batch (see reduce_max).
template <class T, class Arch>
inline T reduce_min(const xsimd::batch<T, Arch>& values) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_min(values);
#else
  alignas(Arch::alignment()) T lanes[xsimd::batch<T, Arch>::size];
  values.store_aligned(lanes);
  T best = lanes[0];
  for (std::size_t lane = 1; lane < xsimd::batch<T, Arch>::size; ++lane) {
    best = lanes[lane] < best ? lanes[lane] : best;
  }
  return best;
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
