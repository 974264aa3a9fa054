// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// The sweep that every row kernel uses to walk a row and accumulate sums accurately.

#include <lskd/config.hpp>
#include <lskd/detail/pack.hpp>

#include <algorithm>
#include <array>
#include <cstddef>

LSKD_NAMESPACE_BEGIN
namespace detail {

/// Packs one accumulator lane adds, in the working precision, before its total moves to double.
inline constexpr index packs_per_block = 16;

/// Walks `n` elements and returns N sums, accumulated by blocked two-level summation.
///
/// `body(pack_tag<P>{}, i, acc)` handles the elements [i, i + width(P)) and adds its N
/// contributions with `acc[k] += value`; it is called with P = the architecture's batch in the
/// main loop and with P = T on single elements in the tail. Each lane of a batch accumulator
/// adds at most `packs_per_block` values in the working precision T; at the end of a block the
/// two accumulator sets are added and their lanes summed as a tree (log2(width) more
/// roundings in T), and that block total is added in double, as are tail elements. With u_T
/// and u_d the unit roundoffs, each returned sum S of exact value S* satisfies
/// |S - S*| <= (packs_per_block + 1 + log2(width)) * u_T * sum|x| +
/// (n / (2 * packs_per_block * width) + 1) * u_d * sum|x|, where sum|x| is the sum of the
/// magnitudes of the added values: about 21 u_T (float, AVX-512) relative to sum|x| whatever
/// the row length.
template <class T, class Arch, std::size_t N, class Body>
inline std::array<double, N> sum_sweep(index n, Body&& body) {
  using P = pack_t<T, Arch>;
  constexpr index width = pack_width<P>::value;
  std::array<double, N> total{};
  index i = 0;

  if constexpr (width > 1) {
    // Main loop: two accumulator sets, so consecutive adds into one register do not wait on
    // each other's latency; kernels with a long body (exps) gain little from more.
    constexpr index block = packs_per_block * 2 * width;
    while (i + 2 * width <= n) {
      std::array<P, N> first;
      std::array<P, N> second;
      first.fill(P(T(0)));
      second.fill(P(T(0)));
      const index block_end = std::min(n, i + block);
      for (; i + 2 * width <= block_end; i += 2 * width) {
        body(pack_tag<P>{}, i, first);
        body(pack_tag<P>{}, i + width, second);
      }
      // A tree over the lanes, then one add in double: a serial chain of lane-by-lane double
      // adds here cost as much as the block itself.
      for (std::size_t k = 0; k < N; ++k) {
        total[k] += static_cast<double>(lanes_sum(P(first[k] + second[k])));
      }
    }

    // One whole pack may remain.
    if (i + width <= n) {
      std::array<P, N> last;
      last.fill(P(T(0)));
      body(pack_tag<P>{}, i, last);
      for (std::size_t k = 0; k < N; ++k) total[k] += static_cast<double>(lanes_sum(last[k]));
      i += width;
    }
  }

  // Tail (and the whole row on the scalar path): one element at a time, straight into double.
  for (; i < n; ++i) body(pack_tag<T>{}, i, total);
  return total;
}

/// Walks `n` elements with `body(pack_tag<P>{}, i)` for side effects only (stores), batches
/// first and single elements for the tail.
template <class T, class Arch, class Body>
inline void for_each_pack(index n, Body&& body) {
  using P = pack_t<T, Arch>;
  constexpr index width = pack_width<P>::value;
  index i = 0;
  if constexpr (width > 1) {
    for (; i + width <= n; i += width) body(pack_tag<P>{}, i);
  }
  for (; i < n; ++i) body(pack_tag<T>{}, i);
}

}  // namespace detail
LSKD_NAMESPACE_END
