// SPDX-License-Identifier: MIT
// Masks, the README's bad-input table (one test per row, named after it), concurrency and
// determinism: lskd gives a clear error or a documented, finite result for every input and
// never touches memory outside its views.
#include "test_support.hpp"

#include <sys/mman.h>

#include <atomic>
#include <functional>
#include <thread>

namespace {

using index_t = lskd::index;
constexpr double infinity = std::numeric_limits<double>::infinity();

/// Row-major random logits.
std::vector<double> random_logits(index_t rows, index_t cols, std::uint32_t seed, double scale = 2.0) {
  std::mt19937 generator(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<double> values(static_cast<std::size_t>(rows * cols));
  for (auto& v : values) v = static_cast<double>(static_cast<float>(normal(generator)));
  return values;
}

/// Loss and gradients from one call, with the gradient buffers pre-filled with a sentinel.
struct result {
  double loss;
  std::vector<double> row_losses, grad_student, grad_teacher;
};

result run(const lskd::kd_options& options, const std::vector<double>& student,
           const std::vector<double>& teacher, index_t rows, index_t cols,
           const lskd::row_weights<double>& weights = {}, double sentinel = 7.0) {
  result out{0.0, std::vector<double>(static_cast<std::size_t>(rows), sentinel),
             std::vector<double>(student.size(), sentinel),
             std::vector<double>(teacher.size(), sentinel)};
  const lskd::kd_loss<double> kd(options);
  out.loss = kd.forward_backward({student.data(), rows, cols}, {teacher.data(), rows, cols},
                                 weights, {out.grad_student.data(), rows, cols},
                                 {out.grad_teacher.data(), rows, cols}, out.row_losses.data());
  return out;
}

/// Runs `call`, expects `Exception` whose message contains every one of `words`, and that
/// the buffers in `outputs` still hold `sentinel` everywhere.
template <class Exception>
void expect_refused(const std::function<void()>& call, const std::vector<std::string>& words,
                    const std::vector<const std::vector<double>*>& outputs = {},
                    double sentinel = 7.0) {
  try {
    call();
    FAIL("expected an exception mentioning " << words.front());
  } catch (const Exception& error) {
    for (const auto& word : words) CHECK_THAT(error.what(), Catch::Contains(word));
  }
  for (const auto* buffer : outputs) {
    for (double value : *buffer) REQUIRE(value == sentinel);
  }
}

/// Drops class `skip` from every row.
std::vector<double> without_class(const std::vector<double>& values, index_t rows, index_t cols,
                                  index_t skip) {
  std::vector<double> out;
  for (index_t r = 0; r < rows; ++r) {
    for (index_t c = 0; c < cols; ++c) {
      if (c != skip) out.push_back(values[static_cast<std::size_t>(r * cols + c)]);
    }
  }
  return out;
}

}  // namespace

// ---- Row masks and weights ------------------------------------------------------------------

TEST_CASE("a masked row adds nothing, gets a zero gradient and is not read", "[masks]") {
  const index_t rows = 3, cols = 11;
  auto student = random_logits(rows, cols, 1);
  auto teacher = random_logits(rows, cols, 2);
  // Row 1 is padding: NaN student, all -inf teacher (case 1 of ../shared/cases).
  for (index_t c = 0; c < cols; ++c) {
    student[static_cast<std::size_t>(cols + c)] = std::nan("");
    teacher[static_cast<std::size_t>(cols + c)] = -infinity;
  }
  const double weights[] = {1.0, 0.0, 1.0};
  const auto masked = run({}, student, teacher, rows, cols, {weights});

  std::vector<double> kept_student, kept_teacher;
  for (index_t r : {0, 2}) {
    const auto begin = static_cast<std::ptrdiff_t>(r * cols);
    kept_student.insert(kept_student.end(), student.begin() + begin, student.begin() + begin + cols);
    kept_teacher.insert(kept_teacher.end(), teacher.begin() + begin, teacher.begin() + begin + cols);
  }
  const auto reference = run({}, kept_student, kept_teacher, 2, cols);
  CHECK(masked.loss == Approx(reference.loss).epsilon(1e-14));
  for (index_t c = 0; c < cols; ++c) {
    CHECK(masked.grad_student[static_cast<std::size_t>(cols + c)] == 0.0);
    CHECK(masked.grad_teacher[static_cast<std::size_t>(cols + c)] == 0.0);
    CHECK(masked.grad_student[static_cast<std::size_t>(c)] ==
          Approx(reference.grad_student[static_cast<std::size_t>(c)]).margin(1e-15));
    CHECK(masked.grad_student[static_cast<std::size_t>(2 * cols + c)] ==
          Approx(reference.grad_student[static_cast<std::size_t>(cols + c)]).margin(1e-15));
  }
  CHECK(masked.row_losses[1] == 0.0);
}

TEST_CASE("a padded row that is not masked is an error naming the row (case 1)", "[masks][table]") {
  const index_t rows = 2, cols = 5;
  const auto student = random_logits(rows, cols, 3);
  auto teacher = random_logits(rows, cols, 4);
  for (index_t c = 0; c < cols; ++c) teacher[static_cast<std::size_t>(cols + c)] = -infinity;
  std::vector<double> grad(student.size(), 7.0);
  const lskd::kd_loss<double> kd;
  expect_refused<std::domain_error>(
      [&] {
        kd.forward_backward({student.data(), rows, cols}, {teacher.data(), rows, cols},
                            {grad.data(), rows, cols});
      },
      {"teacher", "row 1", "-inf"}, {&grad});
}

TEST_CASE("every row masked gives loss 0 and an all-zero gradient, not NaN (case 4)", "[masks][table]") {
  const index_t rows = 4, cols = 6;
  const auto student = random_logits(rows, cols, 5);
  const auto teacher = random_logits(rows, cols, 6);
  const double weights[] = {0.0, 0.0, 0.0, 0.0};
  for (auto reduction : {lskd::reduction::batchmean, lskd::reduction::sum, lskd::reduction::none}) {
    lskd::kd_options options;
    options.reduction = reduction;
    const auto out = run(options, student, teacher, rows, cols, {weights});
    CHECK(out.loss == 0.0);
    for (double g : out.grad_student) CHECK(g == 0.0);
    for (double g : out.grad_teacher) CHECK(g == 0.0);
    for (double l : out.row_losses) CHECK(l == 0.0);
  }
}

TEST_CASE("batchmean divides by the total weight, or by the caller's normalizer", "[masks]") {
  const index_t rows = 4, cols = 9;
  const auto student = random_logits(rows, cols, 7);
  const auto teacher = random_logits(rows, cols, 8);
  const double weights[] = {1.0, 0.5, 0.0, 2.0};
  lskd::kd_options sum_options;
  sum_options.reduction = lskd::reduction::none;
  const auto per_row = run(sum_options, student, teacher, rows, cols);
  const double weighted_sum =
      per_row.row_losses[0] + 0.5 * per_row.row_losses[1] + 2.0 * per_row.row_losses[3];

  const auto mean = run({}, student, teacher, rows, cols, {weights});
  CHECK(mean.loss == Approx(weighted_sum / 3.5).epsilon(1e-13));

  // Data parallelism: two calls over halves of the batch with a global normalizer add up to
  // the whole batch's batchmean, gradients included.
  const double normalizer = 4.0;
  const auto whole = run({}, student, teacher, rows, cols);
  const std::vector<double> top_s(student.begin(), student.begin() + 2 * cols);
  const std::vector<double> top_t(teacher.begin(), teacher.begin() + 2 * cols);
  const std::vector<double> bottom_s(student.begin() + 2 * cols, student.end());
  const std::vector<double> bottom_t(teacher.begin() + 2 * cols, teacher.end());
  const auto first = run({}, top_s, top_t, 2, cols, {nullptr, normalizer});
  const auto second = run({}, bottom_s, bottom_t, 2, cols, {nullptr, normalizer});
  CHECK(first.loss + second.loss == Approx(whole.loss).epsilon(1e-14));
  for (index_t k = 0; k < 2 * cols; ++k) {
    CHECK(first.grad_student[static_cast<std::size_t>(k)] ==
          Approx(whole.grad_student[static_cast<std::size_t>(k)]).margin(1e-16));
    CHECK(second.grad_student[static_cast<std::size_t>(k)] ==
          Approx(whole.grad_student[static_cast<std::size_t>(2 * cols + k)]).margin(1e-16));
  }
}

TEST_CASE("the weighted gradient matches finite differences", "[masks]") {
  const index_t rows = 3, cols = 7;
  auto student = random_logits(rows, cols, 9);
  const auto teacher = random_logits(rows, cols, 10);
  const double weights[] = {0.25, 0.0, 1.5};
  const auto analytic = run({}, student, teacher, rows, cols, {weights});
  const lskd::kd_loss<double> kd;
  for (std::size_t k = 0; k < student.size(); ++k) {
    const double saved = student[k];
    const double h = 1e-6;
    student[k] = saved + h;
    const double up = kd.forward({student.data(), rows, cols}, {teacher.data(), rows, cols}, {weights});
    student[k] = saved - h;
    const double down = kd.forward({student.data(), rows, cols}, {teacher.data(), rows, cols}, {weights});
    student[k] = saved;
    CHECK(analytic.grad_student[k] == Approx((up - down) / (2 * h)).margin(1e-8));
  }
}

// ---- Masked classes ------------------------------------------------------------------------

TEST_CASE("a class that is -inf in both teacher and student takes no part (case 2)", "[masks][table]") {
  const index_t rows = 3, cols = 13, masked = 4;
  auto student = random_logits(rows, cols, 11);
  auto teacher = random_logits(rows, cols, 12);
  for (index_t r = 0; r < rows; ++r) {
    student[static_cast<std::size_t>(r * cols + masked)] = -infinity;
    teacher[static_cast<std::size_t>(r * cols + masked)] = -infinity;
  }
  for (bool standardize : {true, false}) {
    lskd::kd_options options;
    options.standardize = standardize;
    const auto with_mask = run(options, student, teacher, rows, cols);
    const auto reduced = run(options, without_class(student, rows, cols, masked),
                             without_class(teacher, rows, cols, masked), rows, cols - 1);
    CHECK(std::isfinite(with_mask.loss));
    CHECK(with_mask.loss == Approx(reduced.loss).epsilon(1e-13));
    index_t kept = 0;
    for (index_t r = 0; r < rows; ++r) {
      for (index_t c = 0; c < cols; ++c) {
        const auto k = static_cast<std::size_t>(r * cols + c);
        if (c == masked) {
          CHECK(with_mask.grad_student[k] == 0.0);
          CHECK(with_mask.grad_teacher[k] == 0.0);
          continue;
        }
        const auto j = static_cast<std::size_t>(kept++);
        CHECK(with_mask.grad_student[k] == Approx(reduced.grad_student[j]).margin(1e-14));
        CHECK(with_mask.grad_teacher[k] == Approx(reduced.grad_teacher[j]).margin(1e-14));
      }
    }
  }
}

TEST_CASE("masked classes work on the SIMD path in float too", "[masks]") {
  const index_t rows = 2, cols = 67;
  const auto values = random_logits(rows, cols, 13);
  std::vector<float> student(values.begin(), values.end());
  std::vector<float> teacher(student.rbegin(), student.rend());
  for (std::size_t k = 0; k < student.size(); k += 5) {
    student[k] = -std::numeric_limits<float>::infinity();
    teacher[k] = -std::numeric_limits<float>::infinity();
  }
  std::vector<float> fast(student.size()), plain(student.size());
  const double fast_loss = lskd::kd_loss<float>{}.forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols}, {fast.data(), rows, cols});
  const double plain_loss = lskd::kd_loss<float, lskd::simd::scalar>{}.forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols}, {plain.data(), rows, cols});
  CHECK(fast_loss == Approx(plain_loss).epsilon(1e-5));
  for (std::size_t k = 0; k < fast.size(); ++k) {
    CHECK(fast[k] == Approx(plain[k]).margin(1e-6));
    if (k % 5 == 0) CHECK(fast[k] == 0.0f);
  }
}

TEST_CASE("-inf in only one of teacher and student is an error naming the row and class", "[table]") {
  const index_t rows = 2, cols = 4;
  auto student = random_logits(rows, cols, 14);
  const auto teacher = random_logits(rows, cols, 15);
  student[static_cast<std::size_t>(cols + 2)] = -infinity;
  std::vector<double> grad(student.size(), 7.0);
  expect_refused<std::domain_error>(
      [&] {
        lskd::kd_loss<double>{}.forward_backward({student.data(), rows, cols},
                                                 {teacher.data(), rows, cols},
                                                 {grad.data(), rows, cols});
      },
      {"student", "row 1", "class 2", "both"}, {&grad});
}

TEST_CASE("a row left with fewer usable classes than its std needs is an error", "[table]") {
  const index_t rows = 1, cols = 3;
  std::vector<double> student = {1.0, -infinity, -infinity};
  std::vector<double> teacher = {2.0, -infinity, -infinity};
  std::vector<double> grad(3, 7.0);
  expect_refused<std::domain_error>(
      [&] {
        lskd::kd_loss<double>{}.forward_backward({student.data(), rows, cols},
                                                 {teacher.data(), rows, cols},
                                                 {grad.data(), rows, cols});
      },
      {"row 0", "1 usable classes"}, {&grad});
  // Classic KD needs one usable class: the loss is 0.
  lskd::kd_options classic;
  classic.standardize = false;
  CHECK(lskd::kd_loss<double>(classic).forward({student.data(), 1, 3}, {teacher.data(), 1, 3}) == 0.0);
}

// ---- The rest of the bad-input table -------------------------------------------------------

TEST_CASE("row weights must be finite and >= 0", "[table]") {
  const auto student = random_logits(2, 3, 16);
  const auto teacher = random_logits(2, 3, 17);
  std::vector<double> grad(6, 7.0);
  for (double bad : {-1.0, std::nan(""), infinity}) {
    const double weights[] = {1.0, bad};
    expect_refused<std::invalid_argument>(
        [&] {
          lskd::kd_loss<double>{}.forward_backward({student.data(), 2, 3}, {teacher.data(), 2, 3},
                                                   {weights}, {grad.data(), 2, 3});
        },
        {"'row_weights' [1]"}, {&grad});
  }
  // Each finite, but their sum (what batchmean divides by) is not: a NaN loss and zero
  // gradients before, and a silent loss of 0 through the C ABI.
  const double largest = std::numeric_limits<double>::max();
  const double weights[] = {largest, largest};
  for (const lskd::reduction how : {lskd::reduction::batchmean, lskd::reduction::sum}) {
    lskd::kd_options o;
    o.reduction = how;
    expect_refused<std::invalid_argument>(
        [&] {
          lskd::kd_loss<double>{o}.forward_backward({student.data(), 2, 3}, {teacher.data(), 2, 3},
                                                    {weights}, {grad.data(), 2, 3});
        },
        {"sum of 'row_weights' overflows"}, {&grad});
  }
}

TEST_CASE("a normalizer must be finite and >= 0, and only batchmean takes one", "[table]") {
  const auto student = random_logits(2, 3, 18);
  const auto teacher = random_logits(2, 3, 19);
  expect_refused<std::invalid_argument>(
      [&] {
        lskd::kd_loss<double>{}.forward({student.data(), 2, 3}, {teacher.data(), 2, 3},
                                        lskd::row_weights<double>{nullptr, -2.0});
      },
      {"'normalizer'"});
  lskd::kd_options sum;
  sum.reduction = lskd::reduction::sum;
  expect_refused<std::invalid_argument>(
      [&] {
        lskd::kd_loss<double>(sum).forward({student.data(), 2, 3}, {teacher.data(), 2, 3},
                                           lskd::row_weights<double>{nullptr, 8.0});
      },
      {"'normalizer'", "sum"});
}

TEST_CASE("C = 1 is a loss of 0 when no std is needed, an error when it is", "[table]") {
  const std::vector<double> student = {3.0, -1.0};
  const std::vector<double> teacher = {0.5, 2.0};
  lskd::kd_options classic;
  classic.standardize = false;
  auto out = run(classic, student, teacher, 2, 1);
  CHECK(out.loss == 0.0);
  for (double g : out.grad_student) CHECK(g == 0.0);
  lskd::kd_options population;
  population.ddof = 0;
  out = run(population, student, teacher, 2, 1);
  CHECK(out.loss == 0.0);
  for (double g : out.grad_student) CHECK(g == 0.0);
  expect_refused<std::invalid_argument>(
      [&] { lskd::kd_loss<double>{}.forward({student.data(), 2, 1}, {teacher.data(), 2, 1}); },
      {"ddof", "2 classes"});
}

TEST_CASE("subnormal and 1e38 logits give finite, scale-invariant results", "[table]") {
  const index_t rows = 2, cols = 8;
  const auto base = random_logits(rows, cols, 20);
  const auto teacher_base = random_logits(rows, cols, 21);
  std::vector<float> student(base.begin(), base.end()), teacher(teacher_base.begin(), teacher_base.end());
  std::vector<float> grad(student.size());
  const double reference = lskd::kd_loss<float>{}.forward({student.data(), rows, cols},
                                                          {teacher.data(), rows, cols});
  for (float scale : {1e-39f, 1e38f / 8.0f}) {
    std::vector<float> scaled(student);
    for (auto& v : scaled) v *= scale;
    // The loss is scale-invariant even with eps = 0 ...
    lskd::kd_options no_eps;
    no_eps.eps = 0.0;
    const double loss = lskd::kd_loss<float>(no_eps).forward({scaled.data(), rows, cols},
                                                             {teacher.data(), rows, cols});
    CHECK(loss == Approx(reference).epsilon(1e-5));
    // ... and with the default eps the gradient is finite at both ends.
    const double with_eps = lskd::kd_loss<float>{}.forward_backward(
        {scaled.data(), rows, cols}, {teacher.data(), rows, cols}, {grad.data(), rows, cols});
    CHECK(std::isfinite(with_eps));
    for (float g : grad) CHECK(std::isfinite(g));
  }
  // With eps = 0, the gradient of a subnormal row is about 1 / std: beyond float. Refused.
  std::vector<float> tiny(student);
  for (auto& v : tiny) v *= 1e-39f;
  std::fill(grad.begin(), grad.end(), 7.0f);
  lskd::kd_options no_eps;
  no_eps.eps = 0.0;
  try {
    lskd::kd_loss<float>(no_eps).forward_backward({tiny.data(), rows, cols},
                                                  {teacher.data(), rows, cols},
                                                  {grad.data(), rows, cols});
    FAIL("expected a domain_error for a gradient that overflows float");
  } catch (const std::domain_error& error) {
    CHECK_THAT(error.what(), Catch::Contains("student logits row 0") &&
                                 Catch::Contains("could exceed the largest finite value"));
  }
  for (float g : grad) CHECK(g == 7.0f);
  // Classic KD at 1e38: softmax subtracts the max, so nothing overflows.
  lskd::kd_options classic;
  classic.standardize = false;
  std::vector<float> huge(student);
  for (auto& v : huge) v *= 1e37f;
  const double loss = lskd::kd_loss<float>(classic).forward_backward(
      {huge.data(), rows, cols}, {teacher.data(), rows, cols}, {grad.data(), rows, cols});
  CHECK(std::isfinite(loss));
  for (float g : grad) CHECK(std::isfinite(g));
}

TEST_CASE("element counts beyond 32 bits are indexed in 64 bits", "[table]") {
  // Two rows 2^31 + 5 floats apart, in a sparse mapping: only the pages touched are real.
  const index_t cols = 5, ld = (index_t{1} << 31) + 5, rows = 2;
  const std::size_t bytes = static_cast<std::size_t>((rows - 1) * ld + cols) * sizeof(float);
  void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                      -1, 0);
  if (memory == MAP_FAILED) {
    WARN("could not reserve " << bytes << " bytes of address space; skipped");
    return;
  }
  auto* data = static_cast<float*>(memory);
  const float row0[] = {1, 2, 3, 4, 5}, row1[] = {0, -1, 2, 1, 0};
  std::copy(row0, row0 + cols, data);
  std::copy(row1, row1 + cols, data + ld);
  std::vector<float> teacher = {5, 4, 3, 2, 1, 1, 1, 2, 1, 1};
  std::vector<float> packed(row0, row0 + cols);
  packed.insert(packed.end(), row1, row1 + cols);
  const lskd::kd_loss<float> kd;
  const double sparse = kd.forward({data, rows, cols, ld}, {teacher.data(), rows, cols});
  const double dense = kd.forward({packed.data(), rows, cols}, {teacher.data(), rows, cols});
  munmap(memory, bytes);
  CHECK(sparse == dense);
}

TEST_CASE("a single row longer than the address space is refused, not read", "[table]") {
  const float value = 0.0f;
  const index_t huge = std::numeric_limits<index_t>::max() / 4;
  expect_refused<std::invalid_argument>(
      [&] { lskd::kd_loss<float>{}.forward({&value, 1, huge, huge}, {&value, 1, huge, huge}); },
      {"'student'", "address space"});
}

TEST_CASE("the temperature gradient is not written when the call fails", "[table]") {
  auto student = random_logits(2, 5, 31);
  const auto teacher = random_logits(2, 5, 32);
  student[7] = std::nan("");
  double grad_temperature = 777.0;
  std::vector<double> grad(student.size(), 7.0);
  expect_refused<std::domain_error>(
      [&] {
        lskd::kd_loss<double>{}.forward_backward({student.data(), 2, 5}, {teacher.data(), 2, 5},
                                                 {grad.data(), 2, 5}, {}, nullptr,
                                                 &grad_temperature);
      },
      {"row 1", "NaN"}, {&grad});
  CHECK(grad_temperature == 777.0);
}

TEST_CASE("a large row weight that batchmean divides away is not mistaken for overflow", "[table]") {
  const auto student = random_logits(1, 6, 33);
  const auto teacher = random_logits(1, 6, 34);
  const double weights[] = {1e300};
  std::vector<double> grad(6), plain(6);
  const lskd::kd_loss<double> kd;
  const double weighted = kd.forward_backward({student.data(), 1, 6}, {teacher.data(), 1, 6},
                                              {weights}, {grad.data(), 1, 6});
  const double unweighted = kd.forward_backward({student.data(), 1, 6}, {teacher.data(), 1, 6},
                                                {plain.data(), 1, 6});
  CHECK(weighted == Approx(unweighted).epsilon(1e-14));
  for (std::size_t k = 0; k < grad.size(); ++k) CHECK(grad[k] == Approx(plain[k]).epsilon(1e-13));
}

TEST_CASE("a view larger than the address space is refused", "[table]") {
  const float value = 0.0f;
  const index_t huge = index_t{1} << 40;
  expect_refused<std::invalid_argument>(
      [&] { lskd::kd_loss<float>{}.forward({&value, huge, 1, huge}, {&value, huge, 1, huge}); },
      {"'student'", "address space"});
}

// ---- Concurrency and determinism -----------------------------------------------------------

TEST_CASE("8 threads calling one functor on shared inputs match a single-threaded call", "[threads]") {
  const index_t rows = 37, cols = 301;
  const auto student_values = random_logits(rows, cols, 22);
  const auto teacher_values = random_logits(rows, cols, 23);
  const std::vector<float> student(student_values.begin(), student_values.end());
  const std::vector<float> teacher(teacher_values.begin(), teacher_values.end());
  const lskd::kd_loss<float> kd;
  std::vector<float> expected(student.size());
  const double expected_loss = kd.forward_backward({student.data(), rows, cols},
                                                   {teacher.data(), rows, cols},
                                                   {expected.data(), rows, cols});
  std::vector<std::vector<float>> grads(8, std::vector<float>(student.size()));
  std::vector<double> losses(8);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int repeat = 0; repeat < 20; ++repeat) {
        losses[t] = kd.forward_backward({student.data(), rows, cols}, {teacher.data(), rows, cols},
                                        {grads[t].data(), rows, cols});
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (std::size_t t = 0; t < 8; ++t) {
    CHECK(losses[t] == expected_loss);
    CHECK(std::memcmp(grads[t].data(), expected.data(), expected.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("results are bitwise identical for any thread count or parallel-for", "[threads]") {
  const index_t rows = 29, cols = 1000;
  const auto student_values = random_logits(rows, cols, 24);
  const auto teacher_values = random_logits(rows, cols, 25);
  const std::vector<float> student(student_values.begin(), student_values.end());
  const std::vector<float> teacher(teacher_values.begin(), teacher_values.end());
  std::vector<float> one(student.size()), other(student.size());
  const double loss_one = lskd::kd_loss<float>({}, {1, {}}).forward_backward(
      {student.data(), rows, cols}, {teacher.data(), rows, cols}, {one.data(), rows, cols});

  // A caller's parallel-for that runs uneven ranges on its own threads.
  lskd::execution pool;
  pool.parallel_for = [](std::ptrdiff_t count,
                         const std::function<void(std::ptrdiff_t, std::ptrdiff_t)>& body) {
    std::vector<std::thread> workers;
    const std::ptrdiff_t cuts[] = {0, 1, count / 3, count};
    for (int k = 0; k < 3; ++k) workers.emplace_back(body, cuts[k], cuts[k + 1]);
    for (auto& worker : workers) worker.join();
  };
  for (const lskd::execution& how : {lskd::execution{2, {}}, lskd::execution{0, {}}, pool}) {
    const double loss = lskd::kd_loss<float>({}, how).forward_backward(
        {student.data(), rows, cols}, {teacher.data(), rows, cols}, {other.data(), rows, cols});
    CHECK(loss == loss_one);
    CHECK(std::memcmp(one.data(), other.data(), one.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("an error found by a worker thread reaches the caller, nothing written", "[threads]") {
  const index_t rows = 16, cols = 10;
  auto student = random_logits(rows, cols, 26);
  const auto teacher = random_logits(rows, cols, 27);
  student[static_cast<std::size_t>(11 * cols + 3)] = std::nan("");
  std::vector<double> grad(student.size(), 7.0);
  expect_refused<std::domain_error>(
      [&] {
        lskd::kd_loss<double>({}, {2, {}}).forward_backward(
            {student.data(), rows, cols}, {teacher.data(), rows, cols}, {grad.data(), rows, cols});
      },
      {"student", "row 11", "NaN", "class 3"}, {&grad});
}

// A double row spanning more than half the range (max 1.5e308, mean -0.75e308) has a finite
// Z-score for its max, but max - mean overflowed on the way, and inf times a zero coefficient
// made every gradient entry NaN (found by a new user's trial). The gradient is ~1/std, so it
// underflows to (nearly) 0; what matters is that it is finite, and so is the loss.
TEST_CASE("double rows near the largest double give finite gradients", "[robustness]") {
  const auto finite = [](const std::vector<double>& values) {
    return std::all_of(values.begin(), values.end(), [](double v) { return std::isfinite(v); });
  };
  for (const double m : {1.5e308, std::numeric_limits<double>::max()}) {
    INFO("M = " << m);
    const std::vector<double> huge = {m, -m, -m, -m};
    const std::vector<double> small = {0.0, -0.2, -0.2, 0.3};
    for (const bool huge_student : {true, false}) {
      INFO((huge_student ? "student" : "teacher") << " row at +-M");
      const std::vector<double>& s = huge_student ? huge : small;
      const std::vector<double>& t = huge_student ? small : huge;
      for (const int ddof : {0, 1}) {
        lskd::kd_options o;
        o.ddof = ddof;
        std::vector<double> gs(4, 7.0), gt(4, 7.0);
        const double loss = lskd::kd_loss<double>(o).forward_backward(
            {s.data(), 1, 4}, {t.data(), 1, 4}, {gs.data(), 1, 4}, {gt.data(), 1, 4});
        CHECK(std::isfinite(loss));
        CHECK(finite(gs));
        CHECK(finite(gt));
      }
      lskd::kd_options o;
      o.ddof = 0;
      std::vector<double> gs(4, 7.0), gt(4, 7.0);
      const auto weighted = lskd::kd_loss<double>::with_class_weights(o, {1.0, 2.0, 1.0, 1.0});
      CHECK(std::isfinite(weighted.forward_backward({s.data(), 1, 4}, {t.data(), 1, 4},
                                                    {gs.data(), 1, 4}, {gt.data(), 1, 4})));
      CHECK(finite(gs));
      CHECK(finite(gt));

      lskd::multi_temperature_kd_options mo;
      mo.temperatures = {1.0, 2.0, 4.0};
      CHECK(std::isfinite(lskd::multi_temperature_kd_loss<double>(mo).forward_backward(
          {s.data(), 1, 4}, {t.data(), 1, 4}, {gs.data(), 1, 4}, {gt.data(), 1, 4})));
      CHECK(finite(gs));
      CHECK(finite(gt));

      lskd::dkd_options dkd;
      dkd.standardize = true;
      const std::int64_t target = 1;
      CHECK(std::isfinite(lskd::dkd_loss<double>(dkd).forward_backward(
          {s.data(), 1, 4}, {t.data(), 1, 4}, &target, {gs.data(), 1, 4}, {gt.data(), 1, 4})));
      CHECK(finite(gs));
      CHECK(finite(gt));
    }
  }
}

// Classic DKD takes its target's exponent argument in double, unclamped: a row whose gradient
// would overflow is refused, as kd_loss refuses its own, and nothing is written.
TEST_CASE("classic DKD refuses a row whose gradient would overflow", "[robustness]") {
  const double m = std::numeric_limits<double>::max();
  const std::vector<double> s = {m, -m, -m, -m};
  const std::vector<double> t = {0.0, -0.2, -0.2, 0.3};
  std::vector<double> gs(4, 7.0);
  const std::int64_t target = 1;
  CHECK_THROWS_WITH(lskd::dkd_loss<double>().forward_backward({s.data(), 1, 4}, {t.data(), 1, 4},
                                                               &target, {gs.data(), 1, 4}),
                    Catch::Contains("row 0") && Catch::Contains("could exceed"));
  CHECK(gs == std::vector<double>(4, 7.0));
}

// A caller's parallel-for that leaves rows out, repeats them or hands out ranges outside the
// batch gave a silently wrong loss and untouched gradient rows (found by a new user's trial).
// It is caught after the validation phase, before any output is written.
TEST_CASE("a parallel-for that does not cover the rows exactly once is refused", "[threads]") {
  const index_t rows = 12, cols = 5;
  const auto student = random_logits(rows, cols, 31);
  const auto teacher = random_logits(rows, cols, 32);
  using body_t = std::function<void(std::ptrdiff_t, std::ptrdiff_t)>;
  const std::vector<std::function<void(std::ptrdiff_t, const body_t&)>> broken = {
      [](std::ptrdiff_t count, const body_t& body) { body(0, count / 2); },  // half
      [](std::ptrdiff_t count, const body_t& body) {  // a repeat and a gap, same total length
        body(0, count / 2);
        body(0, count / 2);
      },
      [](std::ptrdiff_t count, const body_t& body) { body(0, count + 3); },  // past the end
  };
  for (std::size_t k = 0; k < broken.size(); ++k) {
    INFO("broken parallel_for " << k);
    lskd::execution how;
    how.parallel_for = broken[k];
    std::vector<double> grad(rows * cols, 7.0);
    expect_refused<std::invalid_argument>(
        [&] {
          lskd::kd_loss<double>({}, how).forward_backward(
              {student.data(), rows, cols}, {teacher.data(), rows, cols}, {grad.data(), rows, cols});
        },
        {"'parallel_for'", "exactly once"}, {&grad});
  }
}
