// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// Spreading independent rows over threads: OpenMP when compiled with it, or a caller's
/// parallel-for. Each row is computed by exactly the same code whatever thread runs it, and
/// nothing is accumulated across rows inside a parallel region, so results are bitwise
/// identical for any thread count.

#include <lskd/config.hpp>
#include <lskd/options.hpp>
#include <lskd/views.hpp>

#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>

#if defined(_OPENMP)
#include <omp.h>
#endif

LSKD_NAMESPACE_BEGIN
namespace detail {

#if defined(_OPENMP)
/// OpenMP threads for `rows` rows: the requested count (0: OpenMP's default), never more than
/// there are rows, since a thread without a row would only wait at the barriers.
inline int team_size(const execution& how, index rows) {
  const int wanted = how.threads > 0 ? how.threads : omp_get_max_threads();
  return rows < static_cast<index>(wanted) ? static_cast<int>(rows) : wanted;
}
#endif

/// Calls body(begin, end) over a partition of [0, rows) into contiguous ranges. An exception
/// thrown by a body is caught, the other ranges finish, and the first one caught is rethrown
/// on the calling thread (an exception must not escape an OpenMP region).
template <class Body>
inline void for_row_ranges(const execution& how, index rows, Body&& body) {
  std::exception_ptr failure;
  std::mutex failure_mutex;
  const auto guarded = [&](index begin, index end) {
    try {
      body(begin, end);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) failure = std::current_exception();
    }
  };

  if (how.parallel_for) {
    // The caller's parallel-for must cover [0, rows) exactly once. Each range adds its length
    // and the difference of the squares of its ends: a disjoint cover telescopes to rows and
    // rows^2 (mod 2^64), a gap or a repeat almost never does. A range outside [0, rows) is
    // refused before its body runs.
    std::atomic<std::uint64_t> length{0};
    std::atomic<std::uint64_t> squares{0};
    std::atomic<bool> outside{false};
    const auto counted = [&](index begin, index end) {
      if (begin < 0 || end > rows || begin > end) {
        outside = true;
        return;
      }
      const auto b = static_cast<std::uint64_t>(begin);
      const auto e = static_cast<std::uint64_t>(end);
      length += e - b;
      squares += e * e - b * b;
      guarded(begin, end);
    };
    how.parallel_for(rows, counted);
    const auto n = static_cast<std::uint64_t>(rows);
    if (outside || length != n || squares != n * n) {
      if (failure) std::rethrow_exception(failure);
      throw_invalid("lskd::execution", "'parallel_for' must call its body on ranges that cover "
                                       "[0, " + std::to_string(rows) +
                                       ") exactly once; it did not (rows left out, repeated "
                                       "or out of range)");
    }
  } else {
#if defined(_OPENMP)
    const int threads = team_size(how, rows);
    if (threads > 1) {
#pragma omp parallel num_threads(threads)
      {
        const index count = omp_get_num_threads();
        const index rank = omp_get_thread_num();
        const index begin = rows * rank / count;
        const index end = rows * (rank + 1) / count;
        if (begin < end) guarded(begin, end);
      }
    } else {
      guarded(0, rows);
    }
#else
    guarded(0, rows);
#endif
  }
  if (failure) std::rethrow_exception(failure);
}

/// for_row_ranges(first), then, if proceed() is true, for_row_ranges(second), with each range
/// of rows on the same thread in both phases (its rows are still in that core's cache) and,
/// under OpenMP, in one parallel region with one barrier, not two forks and joins: on a short
/// batch those cost as much as the rows. proceed() must only read what the first phase wrote;
/// under OpenMP every thread calls it after the barrier. If a phase throws, the second does
/// not run and the first exception caught is rethrown on the calling thread. A caller's
/// parallel_for gets two calls: a barrier inside one could wait forever.
template <class First, class Proceed, class Second>
inline void for_row_ranges_in_two_phases(const execution& how, index rows, First&& first,
                                         Proceed&& proceed, Second&& second) {
#if defined(_OPENMP)
  const int threads = team_size(how, rows);
  if (!how.parallel_for && threads > 1) {
    std::exception_ptr failure;
    std::mutex failure_mutex;
    bool first_failed = false;  // written under the mutex in phase one, read after the barrier
    const auto guarded = [&](auto&& phase, index begin, index end) {
      try {
        phase(begin, end);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(failure_mutex);
        if (!failure) failure = std::current_exception();
        return false;
      }
      return true;
    };
#pragma omp parallel num_threads(threads)
    {
      const index count = omp_get_num_threads();
      const index rank = omp_get_thread_num();
      const index begin = rows * rank / count;
      const index end = rows * (rank + 1) / count;
      if (begin < end && !guarded(first, begin, end)) {
        const std::lock_guard<std::mutex> lock(failure_mutex);
        first_failed = true;
      }
#pragma omp barrier
      if (!first_failed && proceed() && begin < end) guarded(second, begin, end);
    }
    if (failure) std::rethrow_exception(failure);
    return;
  }
#endif
  for_row_ranges(how, rows, first);
  if (proceed()) for_row_ranges(how, rows, second);
}

}  // namespace detail
LSKD_NAMESPACE_END
