// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// Architecture tags: the portable scalar path, and the default architecture chosen from the
/// compile flags (static dispatch, the header-only default).

#include <lskd/config.hpp>
#include <lskd/simd/compat.hpp>

#include <xsimd/xsimd.hpp>

#include <type_traits>

LSKD_NAMESPACE_BEGIN
namespace simd {

/// The portable path: one element at a time, no xsimd batch. Also what every SIMD kernel
/// uses for the tail of a row.
struct scalar {
  static constexpr const char* name() noexcept { return "scalar"; }
};

namespace detail {
template <class Arch>
using or_scalar = std::conditional_t<std::is_same<Arch, xsimd::unavailable>::value, scalar, Arch>;
}  // namespace detail

#if defined(LSKD_FORCE_SCALAR)
using default_arch = scalar;
#else
/// The best architecture the compile flags allow (sse2 on plain x86-64, avx512f with
/// -march=native on such a CPU), or `scalar` where xsimd supports none.
using default_arch = detail::or_scalar<xsimd::default_arch>;
#endif

/// Human-readable name of an architecture tag ("scalar", "sse2", "fma3+avx2", "avx512f").
template <class Arch>
constexpr const char* arch_name() noexcept {
  return Arch::name();
}

/// Whether this CPU can run code built for `Arch` (asked of the CPU at run time).
template <class Arch>
inline bool cpu_supports() noexcept {
  if constexpr (std::is_same<Arch, scalar>::value) {
    return true;
  } else {
    return compat::cpu_has<Arch>();
  }
}

}  // namespace simd
LSKD_NAMESPACE_END
