// SPDX-License-Identifier: MIT
// The building blocks on their own: row_stats, standardize, softmax and log_softmax against
// long-double references, including rows with a large offset, rows of magnitude 1e30 and 1e-30,
// constant rows and logits of magnitude 1e4.
//
// Tolerances, with u the unit roundoff of T (6e-8 for float, 1.1e-16 for double):
//   mean:           (16 u + g) (|mean| + std): the mean is exact but for the sums of the
//                   deviations (and a final rounding to T);
//   std:            16 u + g relative (the contract says about 20 u for well-conditioned rows;
//                   the largest error seen is about 2 u); for float rows 1000 + N(0, 1) this
//                   is 1e-6, ten times tighter than the 1e-5 asked of them;
//                   g is the part of the sums' error bound that grows with the row length
//                   (summation_growth below): negligible in float;
//   Z-scores:       16 u (|y| + 1 / tau): the std's relative error times the output, plus the
//                   mean's error divided by std + eps;
//   softmax:        (16 u (1 + |u_c|) + g) p_c + the smallest normal T, with
//                   u_c = (x_c - max) / tau: exp's argument carries a relative error of u, which
//                   exp multiplies by |u_c|, and the normalizer is a sum (g as above);
//   log_softmax:    16 u (|u_c| + log n + 1) + g.

#include "test_support.hpp"

namespace lskd_test {
namespace {

constexpr double k_pieces = 16;

/// The part of a row sum's error bound that grows with the row length n, relative to the sum
/// of magnitudes: lskd/detail/reduce.hpp adds block totals of 32 W elements (W lanes) in
/// double, (n / (32 W) + 1) u_double; the scalar path adds every element to the double total
/// directly, n u_double at worst. Negligible in float; for 32000 doubles on the scalar path it
/// is 3.5e-12, a worst case far above the errors seen.
template <class T, class Arch>
wide summation_growth(index n) {
  const wide count = static_cast<wide>(n);
  if (std::is_same<Arch, lskd::simd::scalar>::value) return count * roundoff<double>();
  return (count / static_cast<wide>(32 * simd_width<T>()) + 1) * roundoff<double>();
}

/// Reference mean and std of every row of a dense matrix.
template <class T>
std::vector<reference_moments> reference_moments_of(const std::vector<T>& x, index rows,
                                                    index cols, int ddof) {
  std::vector<reference_moments> out;
  for (index r = 0; r < rows; ++r) {
    out.push_back(reference_row_moments(x.data() + r * cols, cols, ddof));
  }
  return out;
}

template <class T, class Arch>
void check_row_stats(const std::vector<T>& x, index rows, index cols, int ddof,
                     const std::string& what) {
  INFO(what << ", " << rows << " x " << cols << ", ddof " << ddof << ", "
            << lskd::simd::arch_name<Arch>());
  lskd::row_stats_options options;
  options.ddof = ddof;
  std::vector<T> mean(static_cast<std::size_t>(rows), T(-1));
  std::vector<T> std(static_cast<std::size_t>(rows), T(-1));
  lskd::row_stats<T, Arch>{options}({x.data(), rows, cols}, mean.data(), std.data());

  const auto ref = reference_moments_of(x, rows, cols, ddof);
  const wide u = roundoff<T>() + summation_growth<T, Arch>(cols) / k_pieces;
  closeness means("mean");
  closeness stds("std");
  for (index r = 0; r < rows; ++r) {
    const reference_moments& m = ref[static_cast<std::size_t>(r)];
    means.add(r, m.mean, mean[static_cast<std::size_t>(r)],
              k_pieces * u * (std::fabs(m.mean) + m.std));
    stds.add(r, m.std, std[static_cast<std::size_t>(r)], k_pieces * u * m.std);
  }
  LSKD_CHECK_CLOSE(means);
  LSKD_CHECK_CLOSE(stds);
}

/// Reference Z-scores (x - mean) / ((std + eps) tau) of a dense matrix.
template <class T>
std::vector<wide> reference_zscores(const std::vector<T>& x, index rows, index cols,
                                    const lskd::standardize_options& o) {
  std::vector<wide> out(x.size());
  for (index r = 0; r < rows; ++r) {
    const reference_moments m = reference_row_moments(x.data() + r * cols, cols, o.ddof);
    for (index c = 0; c < cols; ++c) {
      const auto k = static_cast<std::size_t>(r * cols + c);
      out[k] = (static_cast<wide>(x[k]) - m.mean) / ((m.std + static_cast<wide>(o.eps)) *
                                                     static_cast<wide>(o.temperature));
    }
  }
  return out;
}

/// Reference log-softmax of x / temperature, row by row.
template <class T>
std::vector<wide> reference_log_softmax_of(const std::vector<T>& x, index rows, index cols,
                                           double temperature) {
  std::vector<wide> out;
  for (index r = 0; r < rows; ++r) {
    std::vector<wide> y(static_cast<std::size_t>(cols));
    for (index c = 0; c < cols; ++c) {
      y[static_cast<std::size_t>(c)] =
          static_cast<wide>(x[static_cast<std::size_t>(r * cols + c)]) / temperature;
    }
    const std::vector<wide> row = reference_log_softmax(y);
    out.insert(out.end(), row.begin(), row.end());
  }
  return out;
}

/// |u_c| = (max - x_c) / temperature for every entry.
template <class T>
std::vector<wide> distances_below_max(const std::vector<T>& x, index rows, index cols,
                                      double temperature) {
  std::vector<wide> out(x.size());
  for (index r = 0; r < rows; ++r) {
    const auto begin = x.begin() + r * cols;
    const wide top = *std::max_element(begin, begin + cols);
    for (index c = 0; c < cols; ++c) {
      const auto k = static_cast<std::size_t>(r * cols + c);
      out[k] = (top - static_cast<wide>(x[k])) / temperature;
    }
  }
  return out;
}

template <class T, class Arch>
void check_softmax_pair(const std::vector<T>& x, index rows, index cols, double temperature,
                        const std::string& what) {
  INFO(what << ", " << rows << " x " << cols << ", temperature " << temperature << ", "
            << lskd::simd::arch_name<Arch>());
  lskd::softmax_options options;
  options.temperature = temperature;
  std::vector<T> p(x.size(), padded_matrix<T>::sentinel());
  std::vector<T> log_p(x.size(), padded_matrix<T>::sentinel());
  lskd::softmax<T, Arch>{options}({x.data(), rows, cols}, {p.data(), rows, cols});
  lskd::log_softmax<T, Arch>{options}({x.data(), rows, cols}, {log_p.data(), rows, cols});

  const std::vector<wide> ref = reference_log_softmax_of(x, rows, cols, temperature);
  const std::vector<wide> distance = distances_below_max(x, rows, cols, temperature);
  const wide u = roundoff<T>();
  const wide g = summation_growth<T, Arch>(cols);  // the normalizer's relative error
  const wide log_n = std::log(static_cast<wide>(cols));
  closeness probabilities("softmax");
  closeness logs("log_softmax");
  closeness sums("sum of each softmax row - 1");
  for (index r = 0; r < rows; ++r) {
    wide total = 0;
    for (index c = 0; c < cols; ++c) {
      const auto k = static_cast<std::size_t>(r * cols + c);
      const wide expected = std::exp(ref[k]);
      probabilities.add(static_cast<index>(k), expected, p[k],
                        (k_pieces * u * (1 + distance[k]) + g) * expected +
                            std::numeric_limits<T>::min());
      logs.add(static_cast<index>(k), ref[k], log_p[k],
               k_pieces * u * (distance[k] + log_n + 1) + g);
      total += p[k];
    }
    // Each probability is within 16 u (1 + |u_c|) of itself; summed, p_c |u_c| <= 1/e per term
    // in the worst case but the sum of p_c (1 + |u_c|) is at most 1 + log n.
    sums.add(r, 1, total, k_pieces * u * (1 + log_n) + g);
  }
  LSKD_CHECK_CLOSE(probabilities);
  LSKD_CHECK_CLOSE(logs);
  LSKD_CHECK_CLOSE(sums);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// row_stats

TEMPLATE_TEST_CASE("row_stats matches a long-double two-pass reference", "[pieces][row_stats]",
                   float_simd, float_scalar, double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  random_logits random(101);
  for (const int ddof : {0, 1}) {
    for (const index cols : {2, 3, 7, 16, 17, 33, 100, 1000, 32000}) {
      const index rows = cols >= 1000 ? 2 : 4;
      check_row_stats<T, Arch>(random.normal<T>(rows, cols, -0.5, 1.7), rows, cols, ddof,
                               "N(-0.5, 1.7)");
    }
  }
}

TEMPLATE_TEST_CASE("row_stats keeps its digits for a large offset and for extreme magnitudes",
                   "[pieces][row_stats]", float_simd, float_scalar, double_simd,
                   double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  random_logits random(102);
  for (const int ddof : {0, 1}) {
    for (const index cols : {10, 1000, 32000}) {
      // 1000 + N(0, 1): E[x^2] - E[x]^2 would lose six digits of the variance in float.
      check_row_stats<T, Arch>(random.normal<T>(2, cols, 1000.0, 1.0), 2, cols, ddof,
                               "1000 + N(0, 1)");
      check_row_stats<T, Arch>(random.normal<T>(2, cols, -3e4, 2.0), 2, cols, ddof,
                               "-3e4 + N(0, 2)");
      // Squares of 1e30 overflow float, squares of 1e-30 underflow it: the rows are scaled.
      check_row_stats<T, Arch>(random.normal<T>(2, cols, 0.0, 1e30), 2, cols, ddof,
                               "N(0, 1) * 1e30");
      check_row_stats<T, Arch>(random.normal<T>(2, cols, 0.0, 1e-30), 2, cols, ddof,
                               "N(0, 1) * 1e-30");
      check_row_stats<T, Arch>(random.normal<T>(2, cols, 3e37, 1e37), 2, cols, ddof,
                               "near the largest float");
    }
  }
}

TEMPLATE_TEST_CASE("row_stats of a constant row is that value with std exactly 0",
                   "[pieces][row_stats]", float_simd, float_scalar, double_simd,
                   double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  for (const index cols : {2, 9, 17, 1000}) {
    for (const T value : {T(0), T(0.1), T(-3), T(1e30), T(-7e-30)}) {
      INFO(cols << " copies of " << show(value));
      const std::vector<T> row(static_cast<std::size_t>(cols), value);
      for (const int ddof : {0, 1}) {
        lskd::row_stats_options options;
        options.ddof = ddof;
        T mean = T(-1);
        T std = T(-1);
        lskd::row_stats<T, Arch>{options}({row.data(), 1, cols}, &mean, &std);
        CHECK(mean == value);
        CHECK(std == T(0));
      }
    }
  }
}

TEST_CASE("row_stats writes only the statistics asked for", "[pieces][row_stats]") {
  const std::vector<double> x = {1, 2, 3, 4, 10, 20, 30, 40};
  std::vector<double> mean(2, -1.0);
  std::vector<double> std(2, -1.0);
  const lskd::row_stats<double> stats;
  stats({x.data(), 2, 4}, mean.data(), nullptr);
  CHECK(mean == std::vector<double>{2.5, 25.0});
  stats({x.data(), 2, 4}, nullptr, std.data());
  LSKD_CHECK_NEAR(std::sqrt(5.0 / 3.0), std[0], 4e-16);
  LSKD_CHECK_NEAR(std::sqrt(500.0 / 3.0), std[1], 4e-15);

  // The Eigen overload resizes its outputs.
  Eigen::VectorXd eigen_mean;
  Eigen::VectorXd eigen_std;
  stats({x.data(), 2, 4}, eigen_mean, eigen_std);
  REQUIRE(eigen_mean.size() == 2);
  REQUIRE(eigen_std.size() == 2);
  CHECK(eigen_mean[1] == 25.0);
  CHECK(eigen_std[0] == std[0]);
}

// ---------------------------------------------------------------------------------------------
// standardize

namespace {

template <class T, class Arch>
void check_standardize(double mean, double spread, const char* what, random_logits& random) {
  for (const index cols : {2, 7, 16, 37, 1000}) {
    for (const double temperature : {1.0, 0.5, 3.0}) {
      for (const int ddof : {0, 1}) {
        for (const double eps : {1e-7, 0.0}) {
          lskd::standardize_options options;
          options.temperature = temperature;
          options.ddof = ddof;
          options.eps = eps;
          const index rows = 3;
          INFO(what << ", " << rows << " x " << cols << ", temperature " << temperature
                    << ", ddof " << ddof << ", eps " << eps << ", "
                    << lskd::simd::arch_name<Arch>());
          const std::vector<T> x = random.normal<T>(rows, cols, mean, spread);
          const lskd::standardize<T, Arch> zscore(options);

          std::vector<T> out(x.size(), padded_matrix<T>::sentinel());
          zscore({x.data(), rows, cols}, {out.data(), rows, cols});
          const std::vector<wide> ref = reference_zscores(x, rows, cols, options);
          closeness comparison("Z-scores");
          for (std::size_t k = 0; k < x.size(); ++k) {
            comparison.add(static_cast<index>(k), ref[k], out[k],
                           k_pieces * roundoff<T>() * (std::fabs(ref[k]) + 1 / temperature));
          }
          LSKD_CHECK_CLOSE(comparison);

          // In place: the same bits.
          std::vector<T> in_place(x);
          zscore(lskd::matrix_view<T>(in_place.data(), rows, cols));
          CHECK(bitwise_equal(in_place, out));
        }
      }
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("standardize matches the reference Z-score, out of place and in place",
                   "[pieces][standardize]", float_simd, float_scalar, double_simd,
                   double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  random_logits random(201);
  check_standardize<T, Arch>(0.0, 1.0, "N(0, 1)", random);
  check_standardize<T, Arch>(0.0, 1e30, "N(0, 1) * 1e30", random);
  check_standardize<T, Arch>(0.0, 1e-3, "N(0, 1) * 1e-3", random);
}

TEMPLATE_TEST_CASE("standardize keeps the digits below a large offset",
                   "[pieces][standardize][offset]", float_simd, float_scalar, double_simd,
                   double_scalar) {
  // The contract: the mean is subtracted in two parts, so rounding it to T does not shift
  // the outputs, and each output is within a few units of roundoff of T (plus the std's
  // error). A mean of 1000 rounded to T is off by up to u * 1000, which would move every
  // Z-score of a row with std 1 by about 1000 u.
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  random_logits random(202);
  check_standardize<T, Arch>(1000.0, 1.0, "1000 + N(0, 1)", random);
  check_standardize<T, Arch>(-3e4, 2.0, "-3e4 + N(0, 2)", random);
}

TEMPLATE_TEST_CASE("standardize maps a constant row to exact zeros", "[pieces][standardize]",
                   float_simd, float_scalar, double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  for (const index cols : {2, 9, 40}) {
    const std::vector<T> x(static_cast<std::size_t>(2 * cols), T(4.25));
    std::vector<T> out(x.size(), T(-1));
    lskd::standardize<T, Arch>()({x.data(), 2, cols}, {out.data(), 2, cols});
    CHECK(out == std::vector<T>(x.size(), T(0)));
  }
}

// ---------------------------------------------------------------------------------------------
// softmax and log_softmax

TEMPLATE_TEST_CASE("softmax and log_softmax match the reference", "[pieces][softmax]",
                   float_simd, float_scalar, double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  random_logits random(301);
  for (const index cols : {1, 2, 3, 7, 16, 17, 100, 1000, 32000}) {
    const index rows = cols >= 1000 ? 2 : 3;
    for (const double temperature : {1.0, 0.25, 4.0}) {
      check_softmax_pair<T, Arch>(random.normal<T>(rows, cols, 0.0, 3.0), rows, cols,
                                  temperature, "N(0, 3)");
    }
  }
}

TEMPLATE_TEST_CASE("softmax of logits of magnitude 1e4 does not overflow and sums to 1",
                   "[pieces][softmax]", float_simd, float_scalar, double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  random_logits random(302);
  for (const index cols : {5, 100, 1000}) {
    for (const double temperature : {1.0, 1e3, 1e4}) {
      const std::vector<T> x = random.normal<T>(2, cols, 0.0, 1e4);
      check_softmax_pair<T, Arch>(x, 2, cols, temperature, "N(0, 1) * 1e4");
    }
  }
  // All logits large and close: exp(x) alone would overflow every one of them.
  std::vector<T> close(64);
  for (std::size_t c = 0; c < close.size(); ++c) close[c] = T(1e4) + T(c) / T(8);
  check_softmax_pair<T, Arch>(close, 1, 64, 1.0, "1e4 + c / 8");
}

TEMPLATE_TEST_CASE("log_softmax stays finite where softmax underflows to 0",
                   "[pieces][softmax]", float_simd, float_scalar, double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  const std::vector<T> x = {T(0), T(-50), T(-700), T(-5000), T(-30000), T(10)};
  const auto cols = static_cast<index>(x.size());
  std::vector<T> p(x.size());
  std::vector<T> log_p(x.size());
  lskd::softmax<T, Arch>()({x.data(), 1, cols}, {p.data(), 1, cols});
  lskd::log_softmax<T, Arch>()({x.data(), 1, cols}, {log_p.data(), 1, cols});
  // softmax underflows at -700 in double and at -50 in float already...
  CHECK(p[3] == T(0));
  CHECK(p[4] == T(0));
  // ... while log_softmax gives x - max - log-sum-exp, finite everywhere.
  const std::vector<wide> ref = reference_log_softmax_of(x, 1, cols, 1.0);
  closeness logs("log_softmax");
  for (std::size_t c = 0; c < x.size(); ++c) {
    logs.add(static_cast<index>(c), ref[c], log_p[c],
             k_pieces * roundoff<T>() * (std::fabs(ref[c]) + 1));
  }
  LSKD_CHECK_CLOSE(logs);
}

TEMPLATE_TEST_CASE("softmax and log_softmax in place give the out-of-place bits",
                   "[pieces][softmax]", float_simd, double_simd) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  random_logits random(303);
  const index rows = 3;
  const index cols = 45;
  const std::vector<T> x = random.normal<T>(rows, cols, 0.0, 2.0);
  lskd::softmax_options options;
  options.temperature = 1.5;
  std::vector<T> out(x.size());
  std::vector<T> in_place(x);
  lskd::softmax<T, Arch>{options}({x.data(), rows, cols}, {out.data(), rows, cols});
  lskd::softmax<T, Arch>{options}(lskd::matrix_view<T>(in_place.data(), rows, cols));
  CHECK(bitwise_equal(in_place, out));
  in_place = x;
  lskd::log_softmax<T, Arch>{options}({x.data(), rows, cols}, {out.data(), rows, cols});
  lskd::log_softmax<T, Arch>{options}(lskd::matrix_view<T>(in_place.data(), rows, cols));
  CHECK(bitwise_equal(in_place, out));
}

}  // namespace lskd_test

namespace lskd_test {
namespace {

/// exp_of on float batches of one architecture against std::exp in double, over every u that
/// kernels pass it: [exponent_floor, 0]. Returns the largest error in units of the last place
/// of the true value, for results at or above the smallest normal float; below the cutoff
/// (about -87) the result must be exactly 0, and above it never 0.
template <class Arch>
double exp_of_largest_ulps() {
  using P = xsimd::batch<float, Arch>;
  constexpr std::size_t width = P::size;
  std::vector<float> u;
  for (float x = 0.0f; x > -100.0f; x -= 0.000371f) u.push_back(x);
  for (float x : {-0.0f, -1e-30f, -1e-7f, -0.34657359f, -0.34657360f, -87.0f, -87.33654f,
                  -88.7f, -103.0f, -1e4f, -1e9f, lskd::detail::exponent_floor<float>}) {
    u.push_back(x);
  }
  while (u.size() % width != 0) u.push_back(0.0f);
  double largest = 0.0;
  alignas(64) float out[64];
  for (std::size_t i = 0; i < u.size(); i += width) {
    lskd::detail::exp_of(P::load_unaligned(&u[i])).store_unaligned(out);
    for (std::size_t lane = 0; lane < width; ++lane) {
      const double exact = std::exp(static_cast<double>(u[i + lane]));
      const float got = out[lane];
      INFO("u = " << u[i + lane] << ", exp = " << exact << ", got " << got);
      REQUIRE(std::isfinite(got));
      if (u[i + lane] < -87.34f) {
        REQUIRE(got == 0.0f);
      } else if (u[i + lane] >= -87.0f) {
        REQUIRE(got > 0.0f);
        const double ulp = std::ldexp(1.0, std::ilogb(exact) - 23);
        largest = std::max(largest, std::fabs(static_cast<double>(got) - exact) / ulp);
      } else {
        REQUIRE((got == 0.0f || std::fabs(static_cast<double>(got) - exact) <= 2e-7 * exact));
      }
    }
  }
  return largest;
}

TEST_CASE("exp_of on float batches is within 2 ulp of exp and exactly 0 below the cutoff",
          "[pieces][simd]") {
#if XSIMD_WITH_SSE2
  CHECK(exp_of_largest_ulps<xsimd::sse2>() <= 2.0);
#endif
#if XSIMD_WITH_AVX2 && XSIMD_WITH_FMA3_AVX2
  CHECK(exp_of_largest_ulps<xsimd::fma3<xsimd::avx2>>() <= 2.0);
#endif
#if XSIMD_WITH_AVX512F
  CHECK(exp_of_largest_ulps<xsimd::avx512f>() <= 2.0);
#endif
  if constexpr (!std::is_same<lskd::simd::default_arch, lskd::simd::scalar>::value) {
    const double ulps = exp_of_largest_ulps<lskd::simd::default_arch>();
    WARN("exp_of on " << lskd::simd::default_arch::name() << ": largest error " << ulps
                      << " ulp");
    CHECK(ulps <= 2.0);
  }
}

}  // namespace
}  // namespace lskd_test
