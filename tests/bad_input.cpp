// SPDX-License-Identifier: MIT
// Misuse and bad data: kd_loss (forward and forward_backward), row_stats, standardize, softmax
// and log_softmax refuse them with std::invalid_argument (misuse, naming the argument) or
// std::domain_error (a NaN or infinite logit, naming the row and whose it is; a constant row
// with eps = 0), and write nothing: every output is filled with a sentinel before the call
// and compared after it.

#include "test_support.hpp"

#include <functional>
#include <initializer_list>

namespace lskd_test {
namespace {

/// Runs `call`, expects an `Exception` whose what() contains every one of `words`.
template <class Exception>
void expect_refusal(const std::function<void()>& call, std::initializer_list<const char*> words) {
  bool thrown = false;
  try {
    call();
  } catch (const Exception& error) {
    thrown = true;
    for (const char* word : words) CHECK_THAT(error.what(), Catch::Contains(word));
  }
  INFO("expected " << (std::is_same<Exception, std::domain_error>::value ? "std::domain_error"
                                                                         : "std::invalid_argument")
                   << " mentioning " << *words.begin());
  CHECK(thrown);
}

template <class T>
std::vector<T> filled(std::size_t count) {
  return std::vector<T>(count, padded_matrix<T>::sentinel());
}

/// Inputs and sentinel-filled outputs of one kd_loss call.
template <class T>
struct kd_buffers {
  kd_buffers(index rows_, index cols_, std::uint64_t seed = 5)
      : rows(rows_), cols(cols_) {
    random_logits random(seed);
    const index count = std::max<index>(rows, 0) * std::max<index>(cols, 0);
    student = random.normal<T>(1, count);
    teacher = random.normal<T>(1, count, 0.5, 2.0);
    grad_student = filled<T>(static_cast<std::size_t>(count));
    grad_teacher = filled<T>(static_cast<std::size_t>(count));
    row_losses = filled<double>(static_cast<std::size_t>(std::max<index>(rows, 0)));
  }

  lskd::matrix_view<const T> s() const { return {student.data(), rows, cols}; }
  lskd::matrix_view<const T> t() const { return {teacher.data(), rows, cols}; }
  lskd::matrix_view<T> gs() { return {grad_student.data(), rows, cols}; }
  lskd::matrix_view<T> gt() { return {grad_teacher.data(), rows, cols}; }

  /// No output holds anything but the sentinel.
  bool untouched() const {
    return bitwise_equal(grad_student, filled<T>(grad_student.size())) &&
           bitwise_equal(grad_teacher, filled<T>(grad_teacher.size())) &&
           bitwise_equal(row_losses, filled<double>(row_losses.size()));
  }

  index rows;
  index cols;
  std::vector<T> student;
  std::vector<T> teacher;
  std::vector<T> grad_student;
  std::vector<T> grad_teacher;
  std::vector<double> row_losses;
};

/// Expects both forward() and forward_backward() on `b` with `options` to throw `Exception`
/// mentioning `words`, and every output of `b` to keep its sentinel.
template <class Exception, class T>
void expect_kd_refusal(const lskd::kd_options& options, kd_buffers<T>& b,
                       std::initializer_list<const char*> words) {
  const lskd::kd_loss<T> kd(options);
  {
    INFO("forward");
    expect_refusal<Exception>([&] { kd.forward(b.s(), b.t(), b.row_losses.data()); }, words);
    CHECK(b.untouched());
  }
  {
    INFO("forward_backward");
    expect_refusal<Exception>(
        [&] { kd.forward_backward(b.s(), b.t(), b.gs(), b.gt(), b.row_losses.data()); }, words);
    CHECK(b.untouched());
  }
}

/// Expects constructing kd_loss with `options` to throw std::invalid_argument naming `word`;
/// no call can then have written anything.
void expect_bad_option(const lskd::kd_options& options, const char* word) {
  kd_buffers<double> b(2, 5);
  expect_refusal<std::invalid_argument>(
      [&] {
        const lskd::kd_loss<double> kd(options);
        kd.forward_backward(b.s(), b.t(), b.gs(), b.gt(), b.row_losses.data());
      },
      {word});
  CHECK(b.untouched());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// kd_loss: shapes and views

TEMPLATE_TEST_CASE("kd_loss refuses bad shapes and views, naming the argument",
                   "[bad_input][kd_loss]", float, double) {
  using T = TestType;
  const lskd::kd_options options;

  SECTION("negative rows") {
    kd_buffers<T> b(2, 5);
    const lskd::kd_loss<T> kd(options);
    expect_refusal<std::invalid_argument>(
        [&] { kd.forward({b.student.data(), -1, 5}, {b.teacher.data(), -1, 5}); },
        {"'student'", "-1 rows"});
    expect_refusal<std::invalid_argument>(
        [&] {
          kd.forward_backward({b.student.data(), 2, 5}, {b.teacher.data(), 2, 5},
                              {b.grad_student.data(), -2, 5}, b.gt(), b.row_losses.data());
        },
        {"'grad_student'", "-2 rows"});
    CHECK(b.untouched());
  }
  SECTION("no classes") {
    kd_buffers<T> b(2, 5);
    const lskd::kd_loss<T> kd(options);
    expect_refusal<std::invalid_argument>(
        [&] {
          kd.forward_backward({b.student.data(), 2, 0}, {b.teacher.data(), 2, 0},
                              {b.grad_student.data(), 2, 0}, {}, b.row_losses.data());
        },
        {"'student'", "0 columns"});
    CHECK(b.untouched());
  }
  SECTION("one class with an unbiased std") {
    kd_buffers<T> b(3, 1);
    expect_kd_refusal<std::invalid_argument>(options, b, {"ddof = 1", "2 classes", "got 1"});
  }
  SECTION("leading dimension smaller than the row") {
    kd_buffers<T> b(3, 6);
    const lskd::kd_loss<T> kd(options);
    expect_refusal<std::invalid_argument>(
        [&] { kd.forward(b.s(), {b.teacher.data(), 3, 6, 5}, b.row_losses.data()); },
        {"'teacher'", "leading dimension 5"});
    expect_refusal<std::invalid_argument>(
        [&] {
          kd.forward_backward(b.s(), b.t(), b.gs(), {b.grad_teacher.data(), 3, 6, 4},
                              b.row_losses.data());
        },
        {"'grad_teacher'", "leading dimension 4"});
    CHECK(b.untouched());
  }
  SECTION("null data with rows") {
    kd_buffers<T> b(2, 4);
    const lskd::kd_loss<T> kd(options);
    expect_refusal<std::invalid_argument>(
        [&] { kd.forward({static_cast<const T*>(nullptr), 2, 4}, b.t(), b.row_losses.data()); },
        {"'student'", "null"});
    expect_refusal<std::invalid_argument>(
        [&] {
          kd.forward_backward(b.s(), {static_cast<const T*>(nullptr), 2, 4}, b.gs(), b.gt(),
                              b.row_losses.data());
        },
        {"'teacher'", "null"});
    expect_refusal<std::invalid_argument>(
        [&] {
          kd.forward_backward(b.s(), b.t(), {static_cast<T*>(nullptr), 2, 4}, b.gt(),
                              b.row_losses.data());
        },
        {"'grad_student'", "null"});
    CHECK(b.untouched());
  }
  SECTION("teacher and student with different row counts") {
    kd_buffers<T> b(3, 4);
    const lskd::kd_loss<T> kd(options);
    expect_refusal<std::invalid_argument>(
        [&] { kd.forward(b.s(), {b.teacher.data(), 2, 4}, b.row_losses.data()); },
        {"'teacher' has 2 rows", "'student' has 3"});
    expect_refusal<std::invalid_argument>(
        [&] {
          kd.forward_backward(b.s(), b.t(), {b.grad_student.data(), 2, 4}, b.gt(),
                              b.row_losses.data());
        },
        {"'grad_student' has 2 rows", "'student' has 3"});
    CHECK(b.untouched());
  }
  SECTION("reduction none without a buffer for the row losses") {
    lskd::kd_options none;
    none.reduction = lskd::reduction::none;
    kd_buffers<T> b(2, 4);
    const lskd::kd_loss<T> kd(none);
    expect_refusal<std::invalid_argument>([&] { kd.forward(b.s(), b.t()); }, {"'row_losses'"});
    expect_refusal<std::invalid_argument>(
        [&] { kd.forward_backward(b.s(), b.t(), b.gs(), b.gt()); }, {"'row_losses'"});
    CHECK(b.untouched());
  }
  SECTION("no gradient asked of forward_backward") {
    kd_buffers<T> b(2, 4);
    const lskd::kd_loss<T> kd(options);
    expect_refusal<std::invalid_argument>(
        [&] { kd.forward_backward(b.s(), b.t(), {}, {}, b.row_losses.data()); },
        {"'grad_student'", "'grad_teacher'", "forward()"});
    CHECK(b.untouched());
  }
}

TEST_CASE("kd_loss names both vocabulary sizes, and takes a common prefix through ld",
          "[bad_input][kd_loss][cases]") {
  // ../shared/cases 9: a student with 151936 classes and a teacher with 152064.
  const index rows = 2;
  const index student_classes = 151936;
  const index teacher_classes = 152064;
  random_logits random(9);
  const std::vector<float> student = random.normal<float>(rows, student_classes, 0.0, 2.0);
  const std::vector<float> teacher = random.normal<float>(rows, teacher_classes, 0.0, 3.0);
  std::vector<float> grad_student = filled<float>(student.size());
  std::vector<double> row_losses = filled<double>(rows);
  const lskd::kd_loss<float> kd;

  expect_refusal<std::invalid_argument>(
      [&] {
        kd.forward_backward({student.data(), rows, student_classes},
                            {teacher.data(), rows, teacher_classes},
                            {grad_student.data(), rows, student_classes}, {},
                            row_losses.data());
      },
      {"152064", "151936", "'teacher'", "'student'"});
  CHECK(bitwise_equal(grad_student, filled<float>(grad_student.size())));
  CHECK(bitwise_equal(row_losses, filled<double>(rows)));

  // The common prefix: the teacher's first 151936 classes, rows still 152064 apart.
  const double loss = kd.forward_backward({student.data(), rows, student_classes},
                                          {teacher.data(), rows, student_classes, teacher_classes},
                                          {grad_student.data(), rows, student_classes}, {},
                                          row_losses.data());
  // ... is the loss of a dense copy of that prefix, bit for bit.
  std::vector<float> prefix;
  for (index r = 0; r < rows; ++r) {
    prefix.insert(prefix.end(), teacher.begin() + r * teacher_classes,
                  teacher.begin() + r * teacher_classes + student_classes);
  }
  std::vector<float> dense_grad(student.size());
  const double dense_loss = kd.forward_backward(
      {student.data(), rows, student_classes}, {prefix.data(), rows, student_classes},
      {dense_grad.data(), rows, student_classes});
  CHECK(std::isfinite(loss));
  CHECK(loss == dense_loss);
  CHECK(bitwise_equal(grad_student, dense_grad));
}

// ---------------------------------------------------------------------------------------------
// kd_loss: overlapping outputs

TEMPLATE_TEST_CASE("kd_loss refuses outputs that partly overlap an input or each other",
                   "[bad_input][kd_loss][overlap]", float, double) {
  using T = TestType;
  const index rows = 3;
  const index cols = 8;
  random_logits random(17);
  // One allocation holds student, teacher and room to spare, so that views can overlap.
  const std::vector<T> values = random.normal<T>(1, 4 * rows * cols);
  std::vector<T> memory = values;
  T* student = memory.data();
  T* teacher = memory.data() + 3 * rows * cols;
  const lskd::matrix_view<const T> s(student, rows, cols);
  const lskd::matrix_view<const T> t(teacher, rows, cols);
  std::vector<T> grad = filled<T>(static_cast<std::size_t>(rows * cols));
  std::vector<double> row_losses = filled<double>(rows);
  const lskd::kd_loss<T> kd;

  const auto nothing_written = [&] {
    return bitwise_equal(memory, values) &&
           bitwise_equal(grad, filled<T>(grad.size())) &&
           bitwise_equal(row_losses, filled<double>(rows));
  };

  SECTION("grad_student one element into student") {
    expect_refusal<std::invalid_argument>(
        [&] { kd.forward_backward(s, t, {student + 1, rows, cols}, {}, row_losses.data()); },
        {"'grad_student' overlaps 'student'"});
  }
  SECTION("grad_student at student's address with another leading dimension") {
    expect_refusal<std::invalid_argument>(
        [&] {
          kd.forward_backward(s, t, {student, rows, cols, cols + 1}, {}, row_losses.data());
        },
        {"'grad_student' overlaps 'student'"});
  }
  SECTION("grad_student exactly over teacher") {
    expect_refusal<std::invalid_argument>(
        [&] { kd.forward_backward(s, t, {teacher, rows, cols}, {}, row_losses.data()); },
        {"'grad_student' overlaps 'teacher'"});
  }
  SECTION("grad_teacher over the end of student") {
    expect_refusal<std::invalid_argument>(
        [&] {
          kd.forward_backward(s, t, {grad.data(), rows, cols}, {student + cols, rows, cols},
                              row_losses.data());
        },
        {"'grad_teacher' overlaps 'student'"});
  }
  SECTION("grad_teacher partly over grad_student") {
    T* spare = memory.data() + rows * cols;  // between student and teacher, 2 matrices wide
    expect_refusal<std::invalid_argument>(
        [&] {
          kd.forward_backward(s, t, {spare, rows, cols}, {spare + 3, rows, cols},
                              row_losses.data());
        },
        {"'grad_teacher' overlaps 'grad_student'"});
  }
  SECTION("row_losses inside the student's logits") {
    static_assert(sizeof(double) >= sizeof(T), "row_losses is double");
    auto* inside = reinterpret_cast<double*>(student + 8);
    expect_refusal<std::invalid_argument>([&] { kd.forward(s, t, inside); },
                                          {"'row_losses' overlaps 'student'"});
  }
  CHECK(nothing_written());

  SECTION("exactly in place is allowed") {
    std::vector<T> in_place(values.begin(), values.begin() + rows * cols);
    CHECK_NOTHROW(kd.forward_backward({in_place.data(), rows, cols}, t,
                                      {in_place.data(), rows, cols}));
  }
}

// ---------------------------------------------------------------------------------------------
// kd_loss: options

TEST_CASE("kd_loss refuses bad options when it is built", "[bad_input][kd_loss][options]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  for (const double temperature : {0.0, -1.0, nan, inf, -inf}) {
    INFO("temperature " << temperature);
    lskd::kd_options o;
    o.temperature = temperature;
    expect_bad_option(o, "'temperature'");
  }
  for (const double eps : {-1e-9, nan, inf}) {
    INFO("eps " << eps);
    lskd::kd_options o;
    o.eps = eps;
    expect_bad_option(o, "'eps'");
  }
  for (const int ddof : {2, -1}) {
    INFO("ddof " << ddof);
    lskd::kd_options o;
    o.ddof = ddof;
    expect_bad_option(o, "'ddof'");
  }
}

// An int cast to lskd::reduction, or a negative thread count, was accepted: the reduction then
// behaved as sum. Both are refused when the loss is built, naming the option; so is a thread
// count an OpenMP runtime may fail to create (it would abort the process).
TEST_CASE("kd_loss refuses a reduction that is none of the enum's values and a negative thread "
          "count",
          "[bad_input][kd_loss][options]") {
  for (const int value : {3, 7, -1}) {
    INFO("reduction " << value);
    lskd::kd_options o;
    o.reduction = static_cast<lskd::reduction>(value);
    expect_bad_option(o, "'reduction'");
  }
  for (const int threads : {-3, -1, 4097, 1000000}) {
    INFO("threads " << threads);
    kd_buffers<double> b(2, 5);
    lskd::execution how;
    how.threads = threads;
    expect_refusal<std::invalid_argument>(
        [&] {
          const lskd::kd_loss<double> kd({}, how);
          kd.forward_backward(b.s(), b.t(), b.gs(), b.gt(), b.row_losses.data());
        },
        {"'execution::threads'", std::to_string(threads).c_str()});
    CHECK(b.untouched());
  }
  // 0 is OpenMP's default and stays valid; more threads than rows run with one a row.
  for (const int threads : {0, 64}) {
    INFO("threads " << threads);
    kd_buffers<double> b(2, 5);
    lskd::execution how;
    how.threads = threads;
    const lskd::kd_loss<double> kd({}, how);
    CHECK(std::isfinite(kd.forward_backward(b.s(), b.t(), b.gs(), b.gt())));
  }
}

// ---------------------------------------------------------------------------------------------
// kd_loss: bad data

TEMPLATE_TEST_CASE("kd_loss refuses NaN and infinite logits, naming the row and whose they are",
                   "[bad_input][kd_loss][data]", float, double) {
  using T = TestType;
  const T values[] = {std::numeric_limits<T>::quiet_NaN(), std::numeric_limits<T>::infinity(),
                      -std::numeric_limits<T>::infinity()};
  const char* names[] = {"NaN", "+inf", "-inf"};
  for (int v = 0; v < 3; ++v) {
    for (const bool standardize : {true, false}) {
      lskd::kd_options options;
      options.standardize = standardize;
      {
        INFO(names[v] << " in student row 2, standardize " << standardize);
        kd_buffers<T> b(4, 19);
        b.student[2 * 19 + 11] = values[v];
        expect_kd_refusal<std::domain_error>(options, b, {"student", "row 2", names[v]});
      }
      {
        INFO(names[v] << " in teacher row 1, standardize " << standardize);
        kd_buffers<T> b(4, 19);
        b.teacher[1 * 19 + 18] = values[v];
        expect_kd_refusal<std::domain_error>(options, b, {"teacher", "row 1", names[v]});
      }
    }
  }
}

TEMPLATE_TEST_CASE("kd_loss refuses a constant row when eps is 0", "[bad_input][kd_loss][data]",
                   float, double) {
  using T = TestType;
  lskd::kd_options options;
  options.eps = 0.0;
  {
    kd_buffers<T> b(3, 7);
    std::fill(b.student.begin() + 7, b.student.begin() + 14, T(2.5));
    expect_kd_refusal<std::domain_error>(options, b, {"student", "row 1", "eps"});
  }
  {
    kd_buffers<T> b(3, 7);
    std::fill(b.teacher.begin() + 14, b.teacher.end(), T(-1));
    expect_kd_refusal<std::domain_error>(options, b, {"teacher", "row 2", "eps"});
  }
  {
    // With eps > 0 the same rows are fine (see cases.cpp for their values).
    kd_buffers<T> b(3, 7);
    std::fill(b.student.begin() + 7, b.student.begin() + 14, T(2.5));
    const lskd::kd_loss<T> kd;
    CHECK(std::isfinite(kd.forward_backward(b.s(), b.t(), b.gs(), b.gt())));
  }
}

TEMPLATE_TEST_CASE("kd_loss on zero rows returns 0 without error", "[bad_input][kd_loss]", float,
                   double) {
  using T = TestType;
  kd_buffers<T> b(0, 6);
  lskd::kd_options none;
  none.reduction = lskd::reduction::none;
  for (const lskd::kd_options& options : {lskd::kd_options{}, none}) {
    const lskd::kd_loss<T> kd(options);
    CHECK(kd.forward({b.student.data(), 0, 6}, {b.teacher.data(), 0, 6}) == 0.0);
  }
}

// ---------------------------------------------------------------------------------------------
// row_stats

TEMPLATE_TEST_CASE("row_stats refuses bad views, options and data, writing nothing",
                   "[bad_input][row_stats]", float, double) {
  using T = TestType;
  random_logits random(23);
  std::vector<T> x = random.normal<T>(3, 6);
  std::vector<T> mean = filled<T>(3);
  std::vector<T> std = filled<T>(3);
  const auto untouched = [&] {
    return bitwise_equal(mean, filled<T>(3)) && bitwise_equal(std, filled<T>(3));
  };
  const lskd::row_stats<T> stats;

  expect_refusal<std::invalid_argument>(
      [&] { stats({x.data(), -1, 6}, mean.data(), std.data()); }, {"'logits'", "-1 rows"});
  expect_refusal<std::invalid_argument>(
      [&] { stats({x.data(), 3, 0}, mean.data(), std.data()); }, {"'logits'", "0 columns"});
  expect_refusal<std::invalid_argument>(
      [&] { stats({x.data(), 3, 6, 5}, mean.data(), std.data()); },
      {"'logits'", "leading dimension 5"});
  expect_refusal<std::invalid_argument>(
      [&] { stats({static_cast<const T*>(nullptr), 3, 6}, mean.data(), std.data()); },
      {"'logits'", "null"});
  expect_refusal<std::invalid_argument>(
      [&] { stats({x.data(), 3, 1}, mean.data(), std.data()); }, {"ddof = 1", "got 1"});
  expect_refusal<std::invalid_argument>(
      [&] {
        lskd::row_stats_options o;
        o.ddof = 2;
        lskd::row_stats<T>{o}({x.data(), 3, 6}, mean.data(), std.data());
      },
      {"'ddof'"});
  expect_refusal<std::invalid_argument>([&] { stats({x.data(), 3, 6}, x.data() + 4, nullptr); },
                                        {"'mean' overlaps 'logits'"});
  expect_refusal<std::invalid_argument>([&] { stats({x.data(), 3, 6}, mean.data(), mean.data()); },
                                        {"'std' overlaps 'mean'"});
  x[2 * 6 + 3] = std::numeric_limits<T>::infinity();
  expect_refusal<std::domain_error>([&] { stats({x.data(), 3, 6}, mean.data(), std.data()); },
                                    {"row 2", "+inf"});
  x[1 * 6] = std::numeric_limits<T>::quiet_NaN();
  expect_refusal<std::domain_error>([&] { stats({x.data(), 3, 6}, mean.data(), std.data()); },
                                    {"row 1", "NaN"});
  CHECK(untouched());
}

// ---------------------------------------------------------------------------------------------
// standardize

TEMPLATE_TEST_CASE("standardize refuses bad views, options and data, writing nothing",
                   "[bad_input][standardize]", float, double) {
  using T = TestType;
  random_logits random(29);
  const std::vector<T> original = random.normal<T>(3, 6);
  std::vector<T> x = original;
  std::vector<T> out = filled<T>(18);
  const auto untouched = [&] {
    return bitwise_equal(out, filled<T>(18)) && bitwise_equal(x, original);
  };
  const lskd::standardize<T> zscore;
  const auto bad_option = [&](lskd::standardize_options o, const char* word) {
    expect_refusal<std::invalid_argument>(
        [&] { lskd::standardize<T>{o}({x.data(), 3, 6}, {out.data(), 3, 6}); }, {word});
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const double temperature : {0.0, -2.0, nan, std::numeric_limits<double>::infinity()}) {
    lskd::standardize_options o;
    o.temperature = temperature;
    bad_option(o, "'temperature'");
  }
  for (const double eps : {-1.0, nan, std::numeric_limits<double>::infinity()}) {
    lskd::standardize_options o;
    o.eps = eps;
    bad_option(o, "'eps'");
  }
  {
    lskd::standardize_options o;
    o.ddof = 2;
    bad_option(o, "'ddof'");
  }

  expect_refusal<std::invalid_argument>(
      [&] { zscore({x.data(), -3, 6}, {out.data(), -3, 6}); }, {"'logits'", "-3 rows"});
  expect_refusal<std::invalid_argument>(
      [&] { zscore({x.data(), 3, 6}, {out.data(), 3, 6, 2}); }, {"'out'", "leading dimension 2"});
  expect_refusal<std::invalid_argument>(
      [&] { zscore({x.data(), 3, 6}, {out.data(), 2, 6}); }, {"'out' has 2 rows"});
  expect_refusal<std::invalid_argument>(
      [&] { zscore({static_cast<const T*>(nullptr), 3, 6}, {out.data(), 3, 6}); },
      {"'logits'", "null"});
  expect_refusal<std::invalid_argument>(
      [&] { zscore({x.data(), 3, 1}, {out.data(), 3, 1}); }, {"ddof = 1", "got 1"});
  expect_refusal<std::invalid_argument>(
      [&] { zscore({x.data(), 2, 6}, {x.data() + 1, 2, 6}); }, {"'out' overlaps 'logits'"});
  CHECK(untouched());
  {
    // Exactly in place is allowed.
    std::vector<T> y = original;
    CHECK_NOTHROW(zscore(lskd::matrix_view<T>(y.data(), 3, 6)));
  }

  std::vector<T> bad = original;
  bad[7] = -std::numeric_limits<T>::infinity();
  expect_refusal<std::domain_error>([&] { zscore({bad.data(), 3, 6}, {out.data(), 3, 6}); },
                                    {"row 1", "-inf"});
  std::vector<T> constant = original;
  std::fill(constant.begin() + 12, constant.end(), T(3));
  lskd::standardize_options no_eps;
  no_eps.eps = 0.0;
  expect_refusal<std::domain_error>(
      [&] { lskd::standardize<T>{no_eps}({constant.data(), 3, 6}, {out.data(), 3, 6}); },
      {"row 2", "eps"});
  CHECK(untouched());
}

// ---------------------------------------------------------------------------------------------
// softmax and log_softmax

TEMPLATE_TEST_CASE("softmax and log_softmax refuse bad views, options and data, writing nothing",
                   "[bad_input][softmax]", float, double) {
  using T = TestType;
  random_logits random(31);
  const std::vector<T> original = random.normal<T>(3, 5);
  std::vector<T> x = original;
  std::vector<T> out = filled<T>(15);
  const auto untouched = [&] {
    return bitwise_equal(out, filled<T>(15)) && bitwise_equal(x, original);
  };
  const auto each = [&](const std::function<void(const std::function<void(
                            lskd::matrix_view<const T>, lskd::matrix_view<T>)>&)>& body) {
    {
      INFO("softmax");
      const lskd::softmax<T> f;
      body([&](lskd::matrix_view<const T> in, lskd::matrix_view<T> o) { f(in, o); });
    }
    {
      INFO("log_softmax");
      const lskd::log_softmax<T> f;
      body([&](lskd::matrix_view<const T> in, lskd::matrix_view<T> o) { f(in, o); });
    }
  };
  using call_type = std::function<void(lskd::matrix_view<const T>, lskd::matrix_view<T>)>;

  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const double temperature : {0.0, -1.0, nan, std::numeric_limits<double>::infinity()}) {
    INFO("temperature " << temperature);
    lskd::softmax_options o;
    o.temperature = temperature;
    expect_refusal<std::invalid_argument>(
        [&] { lskd::softmax<T>{o}({x.data(), 3, 5}, {out.data(), 3, 5}); }, {"'temperature'"});
    expect_refusal<std::invalid_argument>(
        [&] { lskd::log_softmax<T>{o}({x.data(), 3, 5}, {out.data(), 3, 5}); },
        {"'temperature'"});
  }
  each([&](const call_type& f) {
    expect_refusal<std::invalid_argument>([&] { f({x.data(), -1, 5}, {out.data(), -1, 5}); },
                                          {"'logits'", "-1 rows"});
    expect_refusal<std::invalid_argument>([&] { f({x.data(), 3, 0}, {out.data(), 3, 0}); },
                                          {"'logits'", "0 columns"});
    expect_refusal<std::invalid_argument>([&] { f({x.data(), 3, 5, 4}, {out.data(), 3, 5}); },
                                          {"'logits'", "leading dimension 4"});
    expect_refusal<std::invalid_argument>(
        [&] { f({static_cast<const T*>(nullptr), 3, 5}, {out.data(), 3, 5}); },
        {"'logits'", "null"});
    expect_refusal<std::invalid_argument>([&] { f({x.data(), 3, 5}, {out.data(), 3, 4}); },
                                          {"'out' has 4 classes"});
    expect_refusal<std::invalid_argument>([&] { f({x.data(), 2, 5}, {x.data() + 5, 2, 5}); },
                                          {"'out' overlaps 'logits'"});
    std::vector<T> bad = original;
    bad[13] = std::numeric_limits<T>::quiet_NaN();
    expect_refusal<std::domain_error>([&] { f({bad.data(), 3, 5}, {out.data(), 3, 5}); },
                                      {"row 2", "NaN"});
    bad[13] = std::numeric_limits<T>::infinity();
    expect_refusal<std::domain_error>([&] { f({bad.data(), 3, 5}, {out.data(), 3, 5}); },
                                      {"row 2", "+inf"});
  });
  CHECK(untouched());
  // Exactly in place is allowed.
  each([&](const call_type& f) {
    std::vector<T> y = original;
    CHECK_NOTHROW(f({y.data(), 3, 5}, {y.data(), 3, 5}));
  });
}

}  // namespace lskd_test

namespace lskd_test {
namespace {

// A gradient that would overflow is refused in classic KD too (a row weight near the largest
// float, or a tiny normalizer), and nothing is written; found by a new user's trial.
TEST_CASE("classic KD refuses a row weight or normalizer that would overflow the gradient",
          "[bad_input]") {
  const std::vector<float> student = {10, -10, 0, 0};
  const std::vector<float> teacher = {-10, 10, 0, 0};
  std::vector<float> grad(4, 7.0f);
  lskd::kd_options classic;
  classic.standardize = false;
  classic.reduction = lskd::reduction::sum;
  const std::vector<float> huge = {3e38f};
  const lskd::matrix_view<const float> s(student.data(), 1, 4), t(teacher.data(), 1, 4);
  CHECK_THROWS_WITH(lskd::kd_loss<float>(classic).forward_backward(
                        s, t, lskd::row_weights<float>{huge.data(), 0.0}, {grad.data(), 1, 4}),
                    Catch::Contains("student logits row 0: its gradient could exceed"));
  classic.reduction = lskd::reduction::batchmean;
  CHECK_THROWS_WITH(lskd::kd_loss<float>(classic).forward_backward(
                        s, t, lskd::row_weights<float>{nullptr, 1e-300}, {grad.data(), 1, 4}),
                    Catch::Contains("could exceed the largest finite value"));
  CHECK(grad == std::vector<float>(4, 7.0f));
  // Sane weights and 1e38 logits still work.
  const std::vector<float> big = {1e38f, -1e38f, 0, 0};
  const double loss = lskd::kd_loss<float>(classic).forward_backward(
      {big.data(), 1, 4}, t, {grad.data(), 1, 4});
  CHECK(std::isfinite(loss));
  for (float g : grad) CHECK(std::isfinite(g));
}

}  // namespace
}  // namespace lskd_test

namespace lskd_test {
namespace {

// Row weights inside a gradient, or the temperature gradient inside any buffer, were accepted
// and silently corrupted results (a new user's trial): now refused, nothing written.
TEST_CASE("row weights and the temperature gradient may not share memory with the buffers",
          "[bad_input]") {
  const lskd::index rows = 2, cols = 4;
  std::vector<double> student = {1, 2, 3, 4, 4, 3, 2, 1};
  const std::vector<double> teacher = {0, 1, 0, 1, 2, 0, 2, 0};
  std::vector<double> grad(8, 7.0);
  const lskd::kd_loss<double> kd;
  const lskd::matrix_view<const double> s(student.data(), rows, cols), t(teacher.data(), rows,
                                                                          cols);
  CHECK_THROWS_WITH(kd.forward_backward(s, t, lskd::row_weights<double>{grad.data() + 4, 0.0},
                                        {grad.data(), rows, cols}),
                    Catch::Contains("'grad_student' overlaps 'row_weights'"));
  double tau_gradient = 5.0;
  CHECK_THROWS_WITH(kd.forward_backward(s, t, {grad.data(), rows, cols}, {}, nullptr,
                                        student.data() + 3),
                    Catch::Contains("'grad_temperature' overlaps 'student'"));
  CHECK_THROWS_WITH(kd.forward_backward(s, t, {grad.data(), rows, cols}, {}, nullptr,
                                        grad.data() + 2),
                    Catch::Contains("'grad_temperature' overlaps 'grad_student'"));
  CHECK(grad == std::vector<double>(8, 7.0));
  CHECK(student == std::vector<double>({1, 2, 3, 4, 4, 3, 2, 1}));
  CHECK_NOTHROW(kd.forward_backward(s, t, {grad.data(), rows, cols}, {}, nullptr, &tau_gradient));
  CHECK(tau_gradient != 5.0);
}

}  // namespace
}  // namespace lskd_test
