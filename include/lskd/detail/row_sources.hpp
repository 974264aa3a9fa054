// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// Where a functor's rows come from and where its gradient rows go: straight from and to
/// views of the compute type, or widened from and rounded to 16-bit storage (Eigen::bfloat16,
/// Eigen::half) one row at a time, so 16-bit logits cost O(classes) of float per thread.

#include <lskd/config.hpp>
#include <lskd/views.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <cstring>

#if defined(__F16C__)
#include <immintrin.h>
#endif

LSKD_NAMESPACE_BEGIN
namespace detail {

/// Widens one row to float. Exact for both types (every bfloat16 and half value is a float).
/// bfloat16 is the top half of a float's bits, so widening is a 16-bit shift, a loop the
/// compiler vectorizes. half uses the F16C instructions, 8 values at a time, when the compile
/// flags allow them (-mf16c, implied by -march=native on x86 since 2012), else Eigen's scalar
/// conversion; both give the same floats (a signaling NaN may come out quiet, but a NaN logit
/// is refused anyway).
// NOTE: Eigen's own half conversions are not used on the vector path because Eigen 3.4.0 never
// enables its F16C code under GCC (it tests !defined(EIGEN_COMP_CLANG), which Eigen defines as
// 0) and does not vectorize .cast<>(): they are a branchy bit manipulation per element.
inline void widen_row(const Eigen::bfloat16* in, float* out, index n) {
  for (index i = 0; i < n; ++i) {
    std::uint16_t bits;
    std::memcpy(&bits, &in[i], sizeof bits);
    const std::uint32_t wide = static_cast<std::uint32_t>(bits) << 16;
    std::memcpy(&out[i], &wide, sizeof wide);
  }
}
inline void widen_row(const Eigen::half* in, float* out, index n) {
  index i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(bits));
  }
#endif
  for (; i < n; ++i) out[i] = static_cast<float>(in[i]);
}

/// Rounds one float row to the 16-bit type, to nearest even (Eigen's conversion).
template <class Storage>
inline void narrow_row(const float* in, Storage* out, index n) {
  Eigen::Map<Eigen::Array<Storage, Eigen::Dynamic, 1>>(out, n) =
      Eigen::Map<const Eigen::ArrayXf>(in, n).template cast<Storage>();
}

/// Rounds one float row to bfloat16, to nearest even, with the integer steps of Eigen's scalar
/// conversion written without branches so that the compiler vectorizes the loop: add 0x7fff
/// plus the lowest kept bit, keep the top 16 bits; a NaN becomes the quiet NaN of its sign.
inline void narrow_row(const float* in, Eigen::bfloat16* out, index n) {
  for (index i = 0; i < n; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, &in[i], sizeof bits);
    const std::uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    const std::uint32_t quiet_nan = ((bits >> 16) & 0x8000u) | 0x7fc0u;
    const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
    const auto narrow = static_cast<std::uint16_t>(nan ? quiet_nan : rounded);
    out[i] = Eigen::numext::bit_cast<Eigen::bfloat16>(narrow);
  }
}

/// Rounds one float row to half, to nearest even: with F16C 8 values at a time (the same
/// results as Eigen's scalar conversion, which handles the tail and builds without F16C).
inline void narrow_row(const float* in, Eigen::half* out, index n) {
  index i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    const __m128i bits =
        _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), bits);
  }
#endif
  for (; i < n; ++i) out[i] = static_cast<Eigen::half>(in[i]);
}

/// Rows read in place from a view of the compute type T.
template <class T>
struct direct_rows {
  static constexpr bool widens = false;
  matrix_view<const T> view;
  const T* row(index r, T* /*buffer*/) const { return view.row(r); }
};

/// Rows of 16-bit storage, widened into a caller's buffer of `cols` floats on each read.
template <class Storage>
struct widened_rows {
  static constexpr bool widens = true;
  matrix_view<const Storage> view;
  const float* row(index r, float* buffer) const {
    widen_row(view.row(r), buffer, view.cols());
    return buffer;
  }
};

/// Gradient rows written in place into a view of the compute type (none when it is empty).
template <class T>
struct direct_gradient {
  static constexpr bool narrows = false;
  matrix_view<T> view;
  bool empty() const noexcept { return view.empty(); }
  T* row(index r, T* /*buffer*/) const { return view.row(r); }
  void finish(index /*r*/, const T* /*buffer*/) const {}
};

/// Gradient rows computed in float in a caller's buffer, then rounded into 16-bit storage.
template <class Storage>
struct narrowed_gradient {
  static constexpr bool narrows = true;
  matrix_view<Storage> view;
  bool empty() const noexcept { return view.empty(); }
  float* row(index /*r*/, float* buffer) const { return buffer; }
  void finish(index r, const float* buffer) const { narrow_row(buffer, view.row(r), view.cols()); }
};

}  // namespace detail
LSKD_NAMESPACE_END
