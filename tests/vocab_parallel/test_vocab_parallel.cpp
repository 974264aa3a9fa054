// SPDX-License-Identifier: MIT
// lskd::vocab_parallel_kd_loss in one process: the classes of every row are split into shards,
// the shards' partial records are merged in several orders and groupings, and the loss and
// gradients must match lskd::kd_loss on whole rows.
#define CATCH_CONFIG_MAIN
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <limits>
#include <lskd/kd_loss.hpp>
#include <lskd/vocab_parallel.hpp>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

template <class T, class Arch>
struct typed {
  using value_type = T;
  using arch = Arch;
};
using float_simd = typed<float, lskd::simd::default_arch>;
using float_scalar = typed<float, lskd::simd::scalar>;
using double_simd = typed<double, lskd::simd::default_arch>;
using double_scalar = typed<double, lskd::simd::scalar>;

/// Relative tolerance against kd_loss: both compute the same formulas in T, from statistics
/// that differ by a few units of roundoff of double, and sums split at other places.
template <class T>
constexpr double tolerance() {
  return sizeof(T) == 4 ? 2e-5 : 1e-11;
}

std::string show(double value) {
  std::ostringstream out;
  out << std::setprecision(17) << value;
  return out.str();
}

/// Compares a row-major rows x cols gradient with a reference, each element to tolerance x
/// the largest magnitude of its reference row, and reports the worst element.
template <class T>
void check_gradient(const char* what, const std::vector<T>& expected, const std::vector<T>& actual,
                    lskd::index rows, lskd::index cols, double relative) {
  lskd::index bad = 0;
  double worst_ratio = 0.0;
  std::string worst;
  for (lskd::index r = 0; r < rows; ++r) {
    double largest = 0.0;
    for (lskd::index c = 0; c < cols; ++c) {
      largest = std::max(largest, std::fabs(static_cast<double>(expected[r * cols + c])));
    }
    const double allowed = relative * std::max(largest, 1e-30);
    for (lskd::index c = 0; c < cols; ++c) {
      const double e = expected[r * cols + c];
      const double a = actual[r * cols + c];
      const double ratio =
          std::isfinite(a) ? std::fabs(a - e) / allowed : std::numeric_limits<double>::infinity();
      if (!(ratio <= 1.0)) ++bad;
      if (!(ratio <= worst_ratio)) {
        worst_ratio = ratio;
        worst = "[" + std::to_string(r) + ", " + std::to_string(c) + "] expected " + show(e) +
                ", actual " + show(a) + ", tolerance " + show(allowed);
      }
    }
  }
  INFO(what << ": " << bad << " of " << rows * cols << " off; worst |diff|/tolerance "
            << show(worst_ratio) << " at " << worst);
  CHECK(bad == 0);
}

void check_near(const char* what, double expected, double actual, double tolerance) {
  INFO(what << ": expected " << show(expected) << ", actual " << show(actual) << ", tolerance "
            << show(tolerance));
  CHECK(std::fabs(actual - expected) <= tolerance);
}

/// rows x cols logits: N(0, 1) times a per-row spread plus a per-row offset.
template <class T>
std::vector<T> random_logits(lskd::index rows, lskd::index cols, unsigned seed, double spread = 3.0,
                             double offset = 0.0) {
  std::mt19937_64 engine(seed);
  std::normal_distribution<double> normal;
  std::vector<T> out(static_cast<std::size_t>(rows * cols));
  for (lskd::index r = 0; r < rows; ++r) {
    const double row_spread = spread * (0.5 + 0.25 * static_cast<double>(r % 5));
    for (lskd::index c = 0; c < cols; ++c) {
      out[r * cols + c] = static_cast<T>(offset + row_spread * normal(engine));
    }
  }
  return out;
}

/// How the per-shard records are merged.
enum class grouping { left_fold, right_fold, tree, shuffled };

const char* to_string(grouping g) {
  switch (g) {
    case grouping::left_fold:
      return "left fold";
    case grouping::right_fold:
      return "right fold";
    case grouping::tree:
      return "tree";
    case grouping::shuffled:
      return "shuffled";
  }
  return "?";
}

template <class Record, class Merge>
std::vector<Record> merge_all(std::vector<std::vector<Record>> parts, grouping g, lskd::index rows,
                              Merge merge) {
  const std::size_t count = parts.size();
  switch (g) {
    case grouping::left_fold:
      for (std::size_t k = 1; k < count; ++k) merge(parts[k].data(), parts[0].data(), rows);
      return parts[0];
    case grouping::right_fold:
      for (std::size_t k = count - 1; k-- > 0;) {
        merge(parts[k + 1].data(), parts[k].data(), rows);
      }
      return parts[0];
    case grouping::tree:
      for (std::size_t step = 1; step < count; step *= 2) {
        for (std::size_t k = 0; k + step < count; k += 2 * step) {
          merge(parts[k + step].data(), parts[k].data(), rows);
        }
      }
      return parts[0];
    case grouping::shuffled: {
      std::vector<std::size_t> order(count);
      std::iota(order.begin(), order.end(), std::size_t{0});
      std::shuffle(order.begin(), order.end(), std::mt19937(7));
      for (std::size_t k = 1; k < count; ++k) {
        merge(parts[order[k]].data(), parts[order[0]].data(), rows);
      }
      return parts[order[0]];
    }
  }
  return parts[0];
}

/// The result of one sharded run: loss, per-row losses, gradients assembled from the shards.
template <class T>
struct sharded_result {
  double loss = 0.0;
  std::vector<double> row_losses;
  std::vector<T> grad_student;
  std::vector<T> grad_teacher;
  double grad_temperature = 0.0;
};

/// Runs the five steps over shards [cuts[k], cuts[k + 1]) of dense rows x cols inputs.
template <class T, class Arch>
sharded_result<T> run_sharded(const lskd::vocab_parallel_kd_loss<T, Arch>& kd,
                              const std::vector<T>& student, const std::vector<T>& teacher,
                              lskd::index rows, lskd::index cols,
                              const std::vector<lskd::index>& cuts, grouping g, bool use_workspace,
                              const lskd::row_weights<T>& weights = {}) {
  const std::size_t shards = cuts.size() - 1;
  const auto shard_of = [&](std::size_t k) {
    const lskd::index width = cuts[k + 1] - cuts[k];
    return lskd::vocab_shard<T>{{student.data() + cuts[k], rows, width, cols},
                                {teacher.data() + cuts[k], rows, width, cols},
                                cuts[k]};
  };

  std::vector<std::vector<lskd::vocab_row_statistics>> statistics(
      shards, std::vector<lskd::vocab_row_statistics>(static_cast<std::size_t>(rows)));
  for (std::size_t k = 0; k < shards; ++k)
    kd.statistics(shard_of(k), statistics[k].data(), weights);
  const auto merged = merge_all(statistics, g, rows, lskd::merge_statistics);

  std::vector<std::vector<lskd::vocab_row_sums>> sums(
      shards, std::vector<lskd::vocab_row_sums>(static_cast<std::size_t>(rows)));
  std::vector<std::vector<T>> workspaces(shards);
  for (std::size_t k = 0; k < shards; ++k) {
    const lskd::index width = cuts[k + 1] - cuts[k];
    lskd::matrix_view<T> exps;
    if (use_workspace) {
      workspaces[k].resize(static_cast<std::size_t>(rows * 2 * width));
      exps = {workspaces[k].data(), rows, 2 * width};
    }
    kd.exp_sums(shard_of(k), merged.data(), sums[k].data(), exps, weights);
  }
  const auto merged_sums = merge_all(sums, g, rows, lskd::merge_sums);

  sharded_result<T> result;
  result.row_losses.assign(static_cast<std::size_t>(rows), -1.0);
  result.grad_student.assign(static_cast<std::size_t>(rows * cols), T(-7));
  result.grad_teacher.assign(static_cast<std::size_t>(rows * cols), T(-7));
  for (std::size_t k = 0; k < shards; ++k) {
    const lskd::index width = cuts[k + 1] - cuts[k];
    lskd::matrix_view<const T> exps;
    if (use_workspace) exps = {workspaces[k].data(), rows, 2 * width};
    const double loss = kd.gradients(shard_of(k), merged.data(), merged_sums.data(),
                                     {result.grad_student.data() + cuts[k], rows, width, cols},
                                     {result.grad_teacher.data() + cuts[k], rows, width, cols},
                                     result.row_losses.data(), exps, weights);
    if (k == 0) {
      result.loss = loss;
    } else {
      CHECK(loss == result.loss);  // every shard computes the same loss from the same records
    }
  }
  std::vector<double> loss_only_rows(static_cast<std::size_t>(rows));
  const double loss_only =
      kd.loss(rows, merged.data(), merged_sums.data(), loss_only_rows.data(), weights);
  CHECK(loss_only_rows == result.row_losses);
  result.grad_temperature =
      kd.temperature_gradient(rows, merged.data(), merged_sums.data(), weights);
  CHECK(loss_only == result.loss);
  return result;
}

/// kd_loss on whole rows, and the sharded run, compared.
template <class T, class Arch>
void compare_with_kd_loss(const lskd::kd_options& options, const std::vector<T>& student,
                          const std::vector<T>& teacher, lskd::index rows, lskd::index cols,
                          const std::vector<lskd::index>& cuts, grouping g, bool use_workspace,
                          const lskd::row_weights<T>& weights = {}) {
  const lskd::kd_loss<T, Arch> reference(options);
  std::vector<T> grad_student(static_cast<std::size_t>(rows * cols));
  std::vector<T> grad_teacher(static_cast<std::size_t>(rows * cols));
  std::vector<double> row_losses(static_cast<std::size_t>(rows));
  double expected_grad_temperature = 0.0;
  const double expected = reference.forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols}, weights,
      {grad_student.data(), rows, cols}, {grad_teacher.data(), rows, cols}, row_losses.data(),
      &expected_grad_temperature);

  const lskd::vocab_parallel_kd_loss<T, Arch> kd(options);
  const auto actual =
      run_sharded(kd, student, teacher, rows, cols, cuts, g, use_workspace, weights);

  const double relative = tolerance<T>();
  INFO("grouping " << to_string(g) << ", " << cuts.size() - 1 << " shards, standardize "
                   << options.standardize << ", workspace " << use_workspace);
  check_near("loss", expected, actual.loss, relative * std::max(1.0, std::fabs(expected)));
  for (lskd::index r = 0; r < rows; ++r) {
    check_near("row loss", row_losses[r], actual.row_losses[r],
               relative * std::max(1.0, std::fabs(row_losses[r])));
  }
  check_near("temperature gradient", expected_grad_temperature, actual.grad_temperature,
             relative * std::max(1.0, std::fabs(expected_grad_temperature)));
  check_gradient("student gradient", grad_student, actual.grad_student, rows, cols, relative);
  check_gradient("teacher gradient", grad_teacher, actual.grad_teacher, rows, cols, relative);
}

/// Cut points for shards of the given widths.
std::vector<lskd::index> cuts_of(const std::vector<lskd::index>& widths) {
  std::vector<lskd::index> cuts{0};
  for (lskd::index w : widths) cuts.push_back(cuts.back() + w);
  return cuts;
}

}  // namespace

TEMPLATE_TEST_CASE("vocab_parallel matches kd_loss for many splits and merge orders",
                   "[vocab_parallel]", float_simd, float_scalar, double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  const lskd::index rows = 7;
  const lskd::index cols = 101;
  const auto student = random_logits<T>(rows, cols, 11);
  const auto teacher = random_logits<T>(rows, cols, 12, 2.0, 0.5);

  const std::vector<std::vector<lskd::index>> splits = {
      {101},                                  // one shard: the whole row
      {50, 51},                               // two halves
      {1, 99, 1},                             // one-class shards at both ends
      {1, 1, 1, 1, 1, 1, 90, 1, 1, 1, 1, 1},  // many one-class shards
      {17, 33, 16, 35},                       // widths around the vector widths
      std::vector<lskd::index>(101, 1),       // every class its own shard
  };
  for (bool standardize : {true, false}) {
    lskd::kd_options options;
    options.standardize = standardize;
    for (const auto& widths : splits) {
      for (grouping g :
           {grouping::left_fold, grouping::right_fold, grouping::tree, grouping::shuffled}) {
        compare_with_kd_loss<T, Arch>(options, student, teacher, rows, cols, cuts_of(widths), g,
                                      g != grouping::tree);
      }
    }
  }
}

TEMPLATE_TEST_CASE("vocab_parallel: other options (ddof 0, sum, none, no t^2, tau)",
                   "[vocab_parallel]", float_simd, double_simd) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  const lskd::index rows = 5;
  const lskd::index cols = 64;
  const auto student = random_logits<T>(rows, cols, 21);
  const auto teacher = random_logits<T>(rows, cols, 22);
  const auto cuts = cuts_of({3, 29, 1, 31});

  lskd::kd_options options;
  options.ddof = 0;
  options.temperature = 4.0;
  options.reduction = lskd::reduction::sum;
  compare_with_kd_loss<T, Arch>(options, student, teacher, rows, cols, cuts, grouping::tree, true);
  options.reduction = lskd::reduction::none;
  options.scale_by_t2 = false;
  compare_with_kd_loss<T, Arch>(options, student, teacher, rows, cols, cuts, grouping::left_fold,
                                false);
  options.eps = 0.5;
  options.temperature = 0.7;
  compare_with_kd_loss<T, Arch>(options, student, teacher, rows, cols, cuts, grouping::shuffled,
                                true);
}

TEST_CASE("vocab_parallel: a row at 1000 + N(0, 1) in float keeps its statistics",
          "[vocab_parallel]") {
  using T = float;
  const lskd::index rows = 3;
  const lskd::index cols = 4099;
  const auto student = random_logits<T>(rows, cols, 31, 1.0, 1000.0);
  const auto teacher = random_logits<T>(rows, cols, 32, 1.0, -1000.0);
  const auto cuts = cuts_of({1, 2047, 1, 1024, 1026});

  // The merged mean and std against a long-double two-pass reference over the whole row.
  const lskd::vocab_parallel_kd_loss<T> kd;
  std::vector<std::vector<lskd::vocab_row_statistics>> parts(
      cuts.size() - 1, std::vector<lskd::vocab_row_statistics>(rows));
  for (std::size_t k = 0; k + 1 < cuts.size(); ++k) {
    const lskd::index width = cuts[k + 1] - cuts[k];
    kd.statistics({{student.data() + cuts[k], rows, width, cols},
                   {teacher.data() + cuts[k], rows, width, cols},
                   cuts[k]},
                  parts[k].data());
  }
  for (grouping g :
       {grouping::left_fold, grouping::right_fold, grouping::tree, grouping::shuffled}) {
    const auto merged = merge_all(parts, g, rows, lskd::merge_statistics);
    for (lskd::index r = 0; r < rows; ++r) {
      long double sum = 0;
      for (lskd::index c = 0; c < cols; ++c) sum += student[r * cols + c];
      const long double mean = sum / cols;
      long double squares = 0;
      for (lskd::index c = 0; c < cols; ++c) {
        squares += (student[r * cols + c] - mean) * (student[r * cols + c] - mean);
      }
      const double deviation = static_cast<double>(std::sqrt(squares / cols));
      INFO("grouping " << to_string(g) << ", row " << r);
      CHECK(merged[r].count == cols);
      check_near("mean", static_cast<double>(mean), merged[r].student.mean, 1e-9 * 1000.0);
      // Float data: the variance of the shards carries ~20 float roundoffs of the deviations.
      check_near("deviation", deviation, merged[r].student.deviation, 1e-5 * deviation);
    }
  }

  lskd::kd_options options;
  compare_with_kd_loss<T, lskd::simd::default_arch>(options, student, teacher, rows, cols, cuts,
                                                    grouping::tree, true);
}

TEST_CASE("vocab_parallel: the merge is symmetric bit for bit and has an identity",
          "[vocab_parallel]") {
  const lskd::index rows = 4;
  const lskd::index cols = 200;
  const auto student = random_logits<float>(rows, cols, 41, 2.0, 1000.0);
  const auto teacher = random_logits<float>(rows, cols, 42);
  const lskd::vocab_parallel_kd_loss<float> kd;
  std::vector<lskd::vocab_row_statistics> a(rows), b(rows);
  kd.statistics({{student.data(), rows, 37, cols}, {teacher.data(), rows, 37, cols}, 0}, a.data());
  kd.statistics({{student.data() + 37, rows, cols - 37, cols},
                 {teacher.data() + 37, rows, cols - 37, cols},
                 37},
                b.data());
  auto ab = a;
  lskd::merge_statistics(b.data(), ab.data(), rows);  // ab = merge(b, a)
  auto ba = b;
  lskd::merge_statistics(a.data(), ba.data(), rows);  // ba = merge(a, b)
  CHECK(std::memcmp(ab.data(), ba.data(), sizeof(lskd::vocab_row_statistics) * rows) == 0);

  const double infinity = std::numeric_limits<double>::infinity();
  std::vector<lskd::vocab_row_statistics> identity(
      rows, {0.0, infinity, {0.0, 0.0, infinity, -infinity}, {0.0, 0.0, infinity, -infinity}});
  auto with_identity = ab;
  lskd::merge_statistics(identity.data(), with_identity.data(), rows);
  CHECK(std::memcmp(ab.data(), with_identity.data(), sizeof(lskd::vocab_row_statistics) * rows) ==
        0);
}

TEST_CASE("vocab_parallel: masked classes and weighted rows as kd_loss", "[vocab_parallel]") {
  using T = float;
  const lskd::index rows = 6;
  const lskd::index cols = 90;
  auto student = random_logits<T>(rows, cols, 51);
  auto teacher = random_logits<T>(rows, cols, 52);
  const T minus_infinity = -std::numeric_limits<T>::infinity();
  // Row 1: the last 30 classes are padding, masked in both: a whole shard of them.
  for (lskd::index c = 60; c < cols; ++c)
    student[1 * cols + c] = teacher[1 * cols + c] = minus_infinity;
  // Row 2: scattered masked classes.
  for (lskd::index c = 0; c < cols; c += 7)
    student[2 * cols + c] = teacher[2 * cols + c] = minus_infinity;
  // Row 4: weight 0 and full of NaN: not read.
  for (lskd::index c = 0; c < cols; ++c)
    student[4 * cols + c] = std::numeric_limits<T>::quiet_NaN();

  const std::vector<T> weights = {1.0f, 2.0f, 0.5f, 1.0f, 0.0f, 3.0f};
  const auto cuts = cuts_of({1, 29, 30, 30});
  lskd::kd_options options;
  compare_with_kd_loss<T, lskd::simd::default_arch>(
      options, student, teacher, rows, cols, cuts, grouping::shuffled, true, {weights.data(), 0.0});
  compare_with_kd_loss<T, lskd::simd::default_arch>(options, student, teacher, rows, cols, cuts,
                                                    grouping::tree, false, {weights.data(), 17.0});
}

TEST_CASE("vocab_parallel: the workspace changes nothing, and gradients may be in place",
          "[vocab_parallel]") {
  using T = double;
  const lskd::index rows = 3;
  const lskd::index cols = 77;
  const auto student = random_logits<T>(rows, cols, 61);
  const auto teacher = random_logits<T>(rows, cols, 62);
  const auto cuts = cuts_of({40, 37});
  const lskd::vocab_parallel_kd_loss<T> kd;
  const auto with = run_sharded(kd, student, teacher, rows, cols, cuts, grouping::tree, true);
  const auto without = run_sharded(kd, student, teacher, rows, cols, cuts, grouping::tree, false);
  CHECK(with.grad_student == without.grad_student);
  CHECK(with.grad_teacher == without.grad_teacher);
  CHECK(with.loss == without.loss);

  // In place: each shard overwrites its logits with their gradient.
  std::vector<lskd::vocab_row_statistics> merged(rows), part(rows);
  std::vector<lskd::vocab_row_sums> sums(rows), part_sums(rows);
  auto in_place_student = student;
  auto in_place_teacher = teacher;
  const auto shard_of = [&](std::size_t k) {
    const lskd::index width = cuts[k + 1] - cuts[k];
    return lskd::vocab_shard<T>{{in_place_student.data() + cuts[k], rows, width, cols},
                                {in_place_teacher.data() + cuts[k], rows, width, cols},
                                cuts[k]};
  };
  kd.statistics(shard_of(0), merged.data());
  kd.statistics(shard_of(1), part.data());
  lskd::merge_statistics(part.data(), merged.data(), rows);
  kd.exp_sums(shard_of(0), merged.data(), sums.data());
  kd.exp_sums(shard_of(1), merged.data(), part_sums.data());
  lskd::merge_sums(part_sums.data(), sums.data(), rows);
  for (std::size_t k = 0; k < 2; ++k) {
    const lskd::index width = cuts[k + 1] - cuts[k];
    kd.gradients(shard_of(k), merged.data(), sums.data(),
                 {in_place_student.data() + cuts[k], rows, width, cols},
                 {in_place_teacher.data() + cuts[k], rows, width, cols});
  }
  CHECK(in_place_student == without.grad_student);
  CHECK(in_place_teacher == without.grad_teacher);
}

TEST_CASE("vocab_parallel: bad data throws the same domain_error after the merge, writing nothing",
          "[vocab_parallel]") {
  using T = float;
  const lskd::index rows = 4;
  const lskd::index cols = 50;
  auto student = random_logits<T>(rows, cols, 71);
  auto teacher = random_logits<T>(rows, cols, 72);
  student[2 * cols + 41] = std::numeric_limits<T>::quiet_NaN();  // shard 1, global class 41
  teacher[3 * cols + 3] = std::numeric_limits<T>::infinity();    // shard 0, a later row
  const auto cuts = cuts_of({20, 30});
  const lskd::vocab_parallel_kd_loss<T> kd;

  std::vector<std::vector<lskd::vocab_row_statistics>> parts(
      2, std::vector<lskd::vocab_row_statistics>(rows));
  for (std::size_t k = 0; k < 2; ++k) {
    const lskd::index width = cuts[k + 1] - cuts[k];
    // Step 1 does not throw for data: the error travels in the records.
    REQUIRE_NOTHROW(kd.statistics({{student.data() + cuts[k], rows, width, cols},
                                   {teacher.data() + cuts[k], rows, width, cols},
                                   cuts[k]},
                                  parts[k].data()));
  }
  const auto merged = merge_all(parts, grouping::left_fold, rows, lskd::merge_statistics);
  for (std::size_t k = 0; k < 2; ++k) {
    const lskd::index width = cuts[k + 1] - cuts[k];
    std::vector<lskd::vocab_row_sums> sums(rows, {1, 2, 3, 4, 5, 6, 7});
    CHECK_THROWS_WITH(
        kd.exp_sums({{student.data() + cuts[k], rows, width, cols},
                     {teacher.data() + cuts[k], rows, width, cols},
                     cuts[k]},
                    merged.data(), sums.data()),
        Catch::Contains("student logits row 2") && Catch::Contains("(NaN) at class 41"));
    CHECK(sums[0].z_student == 1.0);  // nothing written
    std::vector<T> grad(rows * width, T(9));
    CHECK_THROWS_AS(kd.gradients({{student.data() + cuts[k], rows, width, cols},
                                  {teacher.data() + cuts[k], rows, width, cols},
                                  cuts[k]},
                                 merged.data(), sums.data(), {grad.data(), rows, width}),
                    std::domain_error);
    CHECK(grad[0] == T(9));
  }

  // -inf on one side only is an error, not a mask.
  auto one_sided = random_logits<T>(1, cols, 73);
  const auto other = random_logits<T>(1, cols, 74);
  one_sided[33] = -std::numeric_limits<T>::infinity();
  lskd::vocab_row_statistics statistics;
  kd.statistics({{one_sided.data() + 30, 1, 20, cols}, {other.data() + 30, 1, 20, cols}, 30},
                &statistics);
  lskd::vocab_row_sums sums;
  CHECK_THROWS_WITH(kd.loss(1, &statistics, &sums),
                    Catch::Contains("(-inf) at class 33") && Catch::Contains("masked only"));

  // A constant row with eps = 0, and a row whose shards did not all enter the merge.
  lskd::kd_options options;
  options.eps = 0.0;
  const lskd::vocab_parallel_kd_loss<T> strict(options);
  const std::vector<T> constant(cols, T(2));
  strict.statistics({{constant.data(), 1, cols}, {other.data(), 1, cols}, 0}, &statistics);
  CHECK_THROWS_WITH(strict.loss(1, &statistics, &sums), Catch::Contains("all logits equal"));
  kd.statistics({{other.data(), 1, 1}, {other.data(), 1, 1}, 0}, &statistics);
  CHECK_THROWS_WITH(kd.loss(1, &statistics, &sums), Catch::Contains("usable classes"));
}

TEST_CASE("vocab_parallel: misuse throws invalid_argument naming the argument",
          "[vocab_parallel]") {
  using T = float;
  const lskd::index rows = 2;
  const lskd::index cols = 8;
  const auto student = random_logits<T>(rows, cols, 81);
  const auto teacher = random_logits<T>(rows, cols, 82);
  const lskd::vocab_parallel_kd_loss<T> kd;
  std::vector<lskd::vocab_row_statistics> statistics(rows);
  std::vector<lskd::vocab_row_sums> sums(rows);
  const lskd::vocab_shard<T> shard{{student.data(), rows, cols}, {teacher.data(), rows, cols}, 0};

  CHECK_THROWS_WITH(kd.statistics({{student.data(), rows, cols}, {teacher.data(), rows, 7}, 0},
                                  statistics.data()),
                    Catch::Contains("'shard.teacher' has 7 classes"));
  CHECK_THROWS_WITH(kd.statistics({{student.data(), rows, cols}, {teacher.data(), rows, cols}, -1},
                                  statistics.data()),
                    Catch::Contains("'shard.first_class'"));
  CHECK_THROWS_WITH(kd.statistics(shard, nullptr), Catch::Contains("'statistics' is a null"));
  CHECK_THROWS_WITH(kd.statistics(shard, statistics.data(), {nullptr, -1.0}),
                    Catch::Contains("'normalizer'"));
  kd.statistics(shard, statistics.data());

  std::vector<T> small(rows * cols);
  CHECK_THROWS_WITH(kd.exp_sums(shard, statistics.data(), sums.data(), {small.data(), rows, cols}),
                    Catch::Contains("'exps'"));
  kd.exp_sums(shard, statistics.data(), sums.data());

  std::vector<T> grad(rows * cols);
  CHECK_THROWS_WITH(kd.gradients(shard, statistics.data(), sums.data(), {}, {}),
                    Catch::Contains("both empty"));
  CHECK_THROWS_WITH(kd.gradients(shard, statistics.data(), sums.data(),
                                 {const_cast<T*>(teacher.data()), rows, cols}),
                    Catch::Contains("'grad_student' overlaps 'shard.teacher'"));
  CHECK_THROWS_WITH(kd.gradients(shard, statistics.data(), sums.data(), {grad.data(), rows, 3}),
                    Catch::Contains("'grad_student' has 3 classes"));
  // Row weights are read while the gradients are written: they may not lie inside one.
  std::fill(grad.begin(), grad.end(), T(1));
  CHECK_THROWS_WITH(kd.gradients(shard, statistics.data(), sums.data(), {grad.data(), rows, cols},
                                 {}, nullptr, {}, lskd::row_weights<T>{grad.data() + cols}),
                    Catch::Contains("'grad_student' overlaps 'row_weights'"));
  CHECK(grad == std::vector<T>(grad.size(), T(1)));

  // Records are written while the shard (and the merged records) are read, and read while the
  // gradients are written: a record array inside one of those buffers is refused, and nothing
  // is written. Each buffer here is large enough to hold the records it overlaps.
  {
    std::vector<double> words(4 * rows * (lskd::vocab_statistics_doubles + cols), 1.0);
    auto* records = reinterpret_cast<lskd::vocab_row_statistics*>(words.data());
    auto* sum_records = reinterpret_cast<lskd::vocab_row_sums*>(words.data());
    const std::vector<double> before = words;
    std::vector<T> logits(rows * cols * 8, T(1));
    const lskd::vocab_shard<T> wide{{logits.data(), rows, cols}, {teacher.data(), rows, cols}, 0};
    CHECK_THROWS_WITH(kd.statistics(wide, reinterpret_cast<lskd::vocab_row_statistics*>(
                                              logits.data())),
                      Catch::Contains("'statistics' overlaps 'shard.student'"));
    CHECK_THROWS_WITH(kd.exp_sums(wide, statistics.data(),
                                  reinterpret_cast<lskd::vocab_row_sums*>(logits.data())),
                      Catch::Contains("'sums' overlaps 'shard.student'"));
    CHECK_THROWS_WITH(kd.exp_sums(shard, records, sum_records),
                      Catch::Contains("'sums' overlaps 'merged statistics'"));
    CHECK(logits == std::vector<T>(logits.size(), T(1)));
    CHECK(words == before);
    // (The overlap is refused before any record is read, so their contents do not matter.)
    std::vector<T> big(words.size() * 2, T(1));
    const std::vector<T> big_before = big;
    CHECK_THROWS_WITH(
        kd.gradients(shard, reinterpret_cast<const lskd::vocab_row_statistics*>(big.data()),
                     sums.data(), {big.data(), rows, cols}),
        Catch::Contains("'grad_student' overlaps 'merged statistics'"));
    CHECK_THROWS_WITH(
        kd.gradients(shard, statistics.data(),
                     reinterpret_cast<const lskd::vocab_row_sums*>(big.data()), {grad.data(), rows, cols},
                     {big.data(), rows, cols}),
        Catch::Contains("'grad_teacher' overlaps 'merged sums'"));
    std::vector<double> losses(rows * 20, 1.0);
    CHECK_THROWS_WITH(
        kd.gradients(shard, reinterpret_cast<const lskd::vocab_row_statistics*>(losses.data()),
                     sums.data(), {grad.data(), rows, cols}, {}, losses.data()),
        Catch::Contains("'row_losses' overlaps 'merged statistics'"));
    CHECK(big == big_before);
    CHECK(grad == std::vector<T>(grad.size(), T(1)));
  }

  // Merged records that are not a merge of valid ones (step 3 forgotten: all-zero sums; a
  // NaN from a transport) gave a NaN loss and NaN gradients; they are refused.
  {
    std::vector<lskd::vocab_row_sums> zero(rows);
    CHECK_THROWS_WITH(kd.loss(rows, statistics.data(), zero.data()),
                      Catch::Contains("'merged sums' of row 0"));
    CHECK_THROWS_WITH(kd.temperature_gradient(rows, statistics.data(), zero.data()),
                      Catch::Contains("'merged sums' of row 0"));
    std::fill(grad.begin(), grad.end(), T(1));
    CHECK_THROWS_WITH(kd.gradients(shard, statistics.data(), zero.data(), {grad.data(), rows, cols}),
                      Catch::Contains("'merged sums' of row 0"));
    std::vector<lskd::vocab_row_sums> nan_sums = sums;
    nan_sums[1].k = std::nan("");
    CHECK_THROWS_WITH(kd.loss(rows, statistics.data(), nan_sums.data()),
                      Catch::Contains("'merged sums' of row 1"));
    std::vector<lskd::vocab_row_statistics> nan_max = statistics;
    nan_max[1].student.max = std::nan("");
    std::vector<lskd::vocab_row_sums> untouched(rows, lskd::vocab_row_sums{1, 1, 1, 1, 1, 1, 1});
    CHECK_THROWS_WITH(kd.exp_sums(shard, nan_max.data(), untouched.data()),
                      Catch::Contains("'merged statistics' of row 1"));
    CHECK(untouched[0].z_student == 1.0);
    CHECK(grad == std::vector<T>(grad.size(), T(1)));
  }

  lskd::kd_options none;
  none.reduction = lskd::reduction::none;
  CHECK_THROWS_WITH(
      lskd::vocab_parallel_kd_loss<T>(none).loss(rows, statistics.data(), sums.data()),
      Catch::Contains("'row_losses' is null"));
  CHECK_THROWS_WITH(kd.loss(-1, statistics.data(), sums.data()), Catch::Contains("'rows'"));
  lskd::kd_options bad;
  bad.temperature = 0.0;
  CHECK_THROWS_WITH(lskd::vocab_parallel_kd_loss<T>(bad), Catch::Contains("'temperature'"));
  bad = {};
  bad.reduction = static_cast<lskd::reduction>(7);
  CHECK_THROWS_WITH(lskd::vocab_parallel_kd_loss<T>(bad), Catch::Contains("'reduction'"));
  lskd::execution negative;
  negative.threads = -3;
  CHECK_THROWS_WITH(lskd::vocab_parallel_kd_loss<T>({}, negative),
                    Catch::Contains("'execution::threads' is -3"));

  // An empty batch: nothing to do, loss 0.
  CHECK(kd.loss(0, nullptr, nullptr) == 0.0);
  const lskd::vocab_shard<T> empty{{nullptr, 0, cols, cols}, {nullptr, 0, cols, cols}, 0};
  kd.statistics(empty, nullptr);
  kd.exp_sums(empty, nullptr, nullptr);
  CHECK(kd.gradients(empty, nullptr, nullptr, {nullptr, 0, cols, cols}) == 0.0);
  CHECK(kd.temperature_gradient(0, nullptr, nullptr) == 0.0);
}
