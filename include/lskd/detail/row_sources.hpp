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

LSKD_NAMESPACE_BEGIN
namespace detail {

/// Widens one row to float. Exact for both types (every bfloat16 and half value is a float).
/// bfloat16 is the top half of a float's bits, so widening is a 16-bit shift, a loop the
/// compiler vectorizes; half goes through Eigen's conversion.
// NOTE: with Eigen 3.4.0 and GCC the half conversions (here and in narrow_row) are a scalar bit
// manipulation per element: Eigen 3.4.0 enables its F16C path only when EIGEN_COMP_CLANG is
// undefined or >= 380, and it is defined as 0 under GCC; nor does 3.4 vectorize .cast<>().
// F16C intrinsics here would lift it (docs/beyond.md has the measured cost).
inline void widen_row(const Eigen::bfloat16* in, float* out, index n) {
  for (index i = 0; i < n; ++i) {
    std::uint16_t bits;
    std::memcpy(&bits, &in[i], sizeof bits);
    const std::uint32_t wide = static_cast<std::uint32_t>(bits) << 16;
    std::memcpy(&out[i], &wide, sizeof wide);
  }
}
inline void widen_row(const Eigen::half* in, float* out, index n) {
  Eigen::Map<Eigen::ArrayXf>(out, n) =
      Eigen::Map<const Eigen::Array<Eigen::half, Eigen::Dynamic, 1>>(in, n).template cast<float>();
}

/// Rounds one float row to the 16-bit type, to nearest even (Eigen's conversion).
template <class Storage>
inline void narrow_row(const float* in, Storage* out, index n) {
  Eigen::Map<Eigen::Array<Storage, Eigen::Dynamic, 1>>(out, n) =
      Eigen::Map<const Eigen::ArrayXf>(in, n).template cast<Storage>();
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
