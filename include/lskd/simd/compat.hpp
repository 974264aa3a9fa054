// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// The few xsimd calls whose names differ between xsimd 8 and xsimd 9 and later.
/// Everything else in lskd uses the xsimd API that both share.

#include <xsimd/xsimd.hpp>

#include <cstddef>

namespace lskd::simd::compat {

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

}  // namespace lskd::simd::compat
