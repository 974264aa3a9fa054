// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// matrix_view: a row-major rows x cols view of a caller's buffer with a leading dimension,
/// convertible from Eigen, mappable to Eigen. And the one place that checks arguments and
/// words the errors.

#include <lskd/config.hpp>
#include <Eigen/Core>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

LSKD_NAMESPACE_BEGIN

/// Signed index type of every size, count and stride in lskd.
using index = std::ptrdiff_t;

/// A row-major matrix in a caller's buffer: element (r, c) is at data()[r * ld() + c].
///
/// A view owns nothing and checks nothing on construction; every lskd function that takes one
/// validates it (rows >= 0, cols >= 1, ld >= cols, data not null when rows > 0) and throws
/// std::invalid_argument naming the argument otherwise. T may be const-qualified. A
/// default-constructed view is empty (null data, no rows): it means "not wanted" where an
/// output is optional.
template <class T>
class matrix_view {
 public:
  using value_type = std::remove_const_t<T>;
  using eigen_matrix = Eigen::Matrix<value_type, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using eigen_map = Eigen::Map<std::conditional_t<std::is_const<T>::value, const eigen_matrix,
                                                  eigen_matrix>,
                               Eigen::Unaligned, Eigen::OuterStride<>>;

  matrix_view() = default;

  /// A view of `rows` rows of `cols` elements, consecutive rows `ld` elements apart.
  matrix_view(T* data, index rows, index cols, index ld) noexcept
      : data_(data), rows_(rows), cols_(cols), ld_(ld) {}

  /// A view of a dense row-major buffer (ld = cols).
  matrix_view(T* data, index rows, index cols) noexcept : matrix_view(data, rows, cols, cols) {}

  /// A view of a mutable view's elements, read-only.
  template <class U, class = std::enable_if_t<std::is_same<const U, T>::value>>
  matrix_view(const matrix_view<U>& other) noexcept  // NOLINT: implicit by design
      : data_(other.data()), rows_(other.rows()), cols_(other.cols()), ld_(other.ld()) {}

  /// A view of a row-major Eigen matrix, map or block with unit inner stride (checked when
  /// used: a column-major object does not compile).
  template <class Derived, class = std::enable_if_t<std::is_base_of<
                               Eigen::DenseBase<std::decay_t<Derived>>, std::decay_t<Derived>>::value>>
  matrix_view(Derived&& matrix)  // NOLINT: implicit by design, like Eigen::Ref
      : data_(matrix.data()),
        rows_(static_cast<index>(matrix.rows())),
        cols_(static_cast<index>(matrix.cols())),
        ld_(static_cast<index>(matrix.rows() <= 1 ? matrix.cols() : matrix.outerStride())) {
    static_assert(std::decay_t<Derived>::IsRowMajor || std::decay_t<Derived>::RowsAtCompileTime == 1,
                  "lskd views Eigen objects that are row-major (rows are samples)");
    if (matrix.size() > 1 && matrix.cols() > 1 && matrix.innerStride() != 1) {
      throw std::invalid_argument("lskd::matrix_view: the Eigen object has inner stride " +
                                  std::to_string(matrix.innerStride()) +
                                  "; lskd needs contiguous rows (inner stride 1)");
    }
  }

  T* data() const noexcept { return data_; }
  index rows() const noexcept { return rows_; }
  index cols() const noexcept { return cols_; }
  index ld() const noexcept { return ld_; }
  bool empty() const noexcept { return data_ == nullptr && rows_ == 0; }

  /// First element of row r (no bounds check).
  T* row(index r) const noexcept { return data_ + r * ld_; }

  /// The same elements as an Eigen map (no copy). Call only on a validated view.
  eigen_map map() const { return eigen_map(data_, rows_, cols_, Eigen::OuterStride<>(ld_)); }

 private:
  T* data_ = nullptr;
  index rows_ = 0;
  index cols_ = 0;
  index ld_ = 0;
};

namespace detail {

/// Throws std::invalid_argument with "<function>: <message>". Out of line and cold, so the
/// checks cost a compare and a not-taken branch on the hot path.
[[noreturn]] inline LSKD_COLD void throw_invalid(const char* function,
                                                                       const std::string& message) {
  throw std::invalid_argument(std::string(function) + ": " + message);
}

[[noreturn]] inline LSKD_COLD void throw_domain(const char* function,
                                                                      const std::string& message) {
  throw std::domain_error(std::string(function) + ": " + message);
}

inline std::string quoted(const char* name) { return std::string("'") + name + "'"; }

/// Formats a double the way the error messages show values (shortest round-trip form).
inline std::string number(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.17g", value);
  return buffer;
}

/// The address range a validated view spans, as integers (comparing pointers into different
/// objects is not defined; comparing their integer values is).
struct byte_range {
  std::uintptr_t begin;
  std::uintptr_t end;
};

template <class T>
inline byte_range span_of(const matrix_view<T>& view) {
  const auto begin = reinterpret_cast<std::uintptr_t>(view.data());
  if (view.rows() == 0) return {begin, begin};
  const auto elements = static_cast<std::uintptr_t>((view.rows() - 1) * view.ld() + view.cols());
  return {begin, begin + elements * sizeof(T)};
}

/// Checks one view: sizes, leading dimension, null data, and that its extent fits in the
/// address space. `name` is the argument's name in the caller's API.
template <class T>
inline void check_view(const char* function, const char* name, const matrix_view<T>& view) {
  if (view.rows() < 0) {
    throw_invalid(function, quoted(name) + " has " + std::to_string(view.rows()) +
                                " rows; rows must be >= 0");
  }
  if (view.cols() < 1) {
    throw_invalid(function, quoted(name) + " has " + std::to_string(view.cols()) +
                                " columns (classes); it needs at least 1");
  }
  if (view.ld() < view.cols()) {
    throw_invalid(function, quoted(name) + " has leading dimension " + std::to_string(view.ld()) +
                                ", smaller than its " + std::to_string(view.cols()) + " columns");
  }
  if (view.rows() > 0 && view.data() == nullptr) {
    throw_invalid(function, quoted(name) + " is a null pointer with " +
                                std::to_string(view.rows()) + " rows");
  }
  // (rows - 1) * ld + cols elements of sizeof(T) bytes must be addressable.
  // No process can address more than 2^56 bytes (x86-64 with 5-level paging has 2^56 of
  // user space; other 64-bit systems less), so a larger extent cannot be a real buffer.
  const index max_elements = (index{1} << 56) / static_cast<index>(sizeof(T));
  if (view.cols() > max_elements ||
      (view.rows() > 1 && (view.rows() - 1) > (max_elements - view.cols()) / view.ld())) {
    throw_invalid(function, quoted(name) + " spans more elements than the address space holds (" +
                                std::to_string(view.rows()) + " rows, leading dimension " +
                                std::to_string(view.ld()) + ")");
  }
}

/// Checks that `view` has the shape of `reference`, naming both sizes when it does not.
template <class T, class U>
inline void check_same_shape(const char* function, const char* name, const matrix_view<T>& view,
                             const char* reference_name, const matrix_view<U>& reference) {
  if (view.rows() != reference.rows()) {
    throw_invalid(function, quoted(name) + " has " + std::to_string(view.rows()) + " rows but " +
                                quoted(reference_name) + " has " + std::to_string(reference.rows()));
  }
  if (view.cols() != reference.cols()) {
    throw_invalid(function,
                  quoted(name) + " has " + std::to_string(view.cols()) + " classes but " +
                      quoted(reference_name) + " has " + std::to_string(reference.cols()) +
                      " (to use a common prefix of the classes, pass views with the smaller "
                      "column count and each buffer's own leading dimension)");
  }
}

/// An output may be exactly its own input (same data and leading dimension: in place), or
/// lie wholly apart from it; any other overlap is an error. The check is on address ranges,
/// so two interleaved views (ld > cols) whose elements never meet are also refused.
template <class T, class U>
inline void check_no_overlap(const char* function, const char* output_name,
                             const matrix_view<T>& output, const char* input_name,
                             const matrix_view<U>& input, bool may_be_in_place) {
  if (output.rows() == 0 || input.rows() == 0) return;
  const byte_range out = span_of(output);
  const byte_range in = span_of(input);
  if (out.end <= in.begin || in.end <= out.begin) return;
  const bool in_place = static_cast<const void*>(output.data()) ==
                            static_cast<const void*>(input.data()) &&
                        output.ld() == input.ld();
  if (in_place && may_be_in_place) return;
  throw_invalid(function, quoted(output_name) + " overlaps " + quoted(input_name) +
                              (may_be_in_place ? " without being exactly the same buffer (same "
                                                 "pointer and leading dimension)"
                                               : "; it must not share memory with it"));
}

/// Positive and finite: temperatures.
inline void check_positive_finite(const char* function, const char* name, double value) {
  if (!(value > 0.0) || !std::isfinite(value)) {
    throw_invalid(function, quoted(name) + " must be finite and > 0 (got " + number(value) + ")");
  }
}

/// Non-negative and finite: eps.
inline void check_nonnegative_finite(const char* function, const char* name, double value) {
  if (!(value >= 0.0) || !std::isfinite(value)) {
    throw_invalid(function, quoted(name) + " must be finite and >= 0 (got " + number(value) + ")");
  }
}

inline void check_ddof(const char* function, int ddof, index cols, bool used) {
  if (ddof != 0 && ddof != 1) {
    throw_invalid(function, "'ddof' must be 0 or 1 (got " + std::to_string(ddof) + ")");
  }
  if (used && cols - ddof < 1) {
    throw_invalid(function, "a std with ddof = " + std::to_string(ddof) + " needs at least " +
                                std::to_string(ddof + 1) + " classes (got " + std::to_string(cols) +
                                ")");
  }
}

/// Names the first non-finite element of a row in a std::domain_error.
template <class T>
[[noreturn]] inline LSKD_COLD void throw_non_finite(const char* function,
                                                                          const char* whose,
                                                                          index row, const T* data,
                                                                          index cols) {
  index column = 0;
  while (column < cols && std::isfinite(data[column])) ++column;
  const T value = column < cols ? data[column] : T(0);
  const char* kind = std::isnan(value) ? "NaN" : (value > 0 ? "+inf" : "-inf");
  throw_domain(function, std::string(whose) + " row " + std::to_string(row) + " has a non-finite "
                             "value (" + kind + ") at class " + std::to_string(column));
}

}  // namespace detail
LSKD_NAMESPACE_END
