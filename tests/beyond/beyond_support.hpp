// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// What the beyond-KD tests share: the float/double x architecture list, a comparison that
/// prints expected, actual and tolerance, seeded random rows, and the reader of
/// tests/data/golden_beyond.txt (the line format of golden_kd.txt plus `kind`, `alpha_beta`,
/// `target`, `temperatures`, `class_weights` and `dtau` lines; see tools/make_golden_beyond.py).

#include <lskd/lskd.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#ifndef LSKD_TEST_DATA_DIR
#error "the build passes LSKD_TEST_DATA_DIR, the directory of golden_beyond.txt"
#endif

namespace beyond_test {

using lskd::index;

template <class T, class Arch>
struct typed {
  using value_type = T;
  using arch = Arch;
};
using float_simd = typed<float, lskd::simd::default_arch>;
using float_scalar = typed<float, lskd::simd::scalar>;
using double_simd = typed<double, lskd::simd::default_arch>;
using double_scalar = typed<double, lskd::simd::scalar>;

inline std::string show(double value) {
  std::ostringstream out;
  out << std::setprecision(17) << value;
  return out.str();
}

/// Compares many elements and reports, in one assertion, how many are off and the worst one
/// with expected, actual and tolerance.
class closeness {
 public:
  explicit closeness(std::string what) : what_(std::move(what)) {}

  void add(index i, double expected, double actual, double tolerance) {
    const double difference = std::fabs(actual - expected);
    const bool ok = std::isfinite(actual) && difference <= tolerance;
    if (!ok) ++failures_;
    const double ratio = tolerance > 0 ? difference / tolerance : (difference > 0 ? 1e300 : 0);
    if (!std::isfinite(actual) || ratio > worst_ratio_) {
      worst_ratio_ = std::isfinite(actual) ? ratio : 1e300;
      worst_ = "[" + std::to_string(i) + "] expected " + show(expected) + ", actual " +
               show(actual) + ", tolerance " + show(tolerance);
    }
  }

  void check() const {
    INFO(what_ << ": " << failures_ << " off; worst " << worst_ << " (|diff|/tol "
               << worst_ratio_ << ")");
    CHECK(failures_ == 0);
  }

 private:
  std::string what_;
  index failures_ = 0;
  double worst_ratio_ = 0;
  std::string worst_;
};

/// Seeded normal rows.
template <class T>
std::vector<T> random_rows(unsigned seed, index count, double mean = 0.0, double std = 1.0) {
  std::mt19937_64 engine(seed);
  std::normal_distribution<double> normal(mean, std);
  std::vector<T> values(static_cast<std::size_t>(count));
  for (T& v : values) v = static_cast<T>(normal(engine));
  return values;
}

/// A 2 x 4 batch in double for the tests that put a side buffer (row weights, targets, a
/// temperature gradient) inside another buffer: sentinel-filled outputs (the student's gradient
/// and then the teacher's in one vector), row weights 1 and 0.5, and a check that no input or
/// output changed.
struct overlap_case {
  static constexpr index rows = 2, cols = 4, size = rows * cols;
  std::vector<double> student = random_rows<double>(11, size);
  std::vector<double> teacher = random_rows<double>(12, size);
  std::vector<double> grad = std::vector<double>(2 * size, 7.0);
  std::vector<double> weights{1.0, 0.5};
  std::vector<double> row_losses = std::vector<double>(rows, -1.0);
  const std::vector<double> student_before = student;
  const std::vector<double> teacher_before = teacher;

  lskd::matrix_view<const double> s() const { return {student.data(), rows, cols}; }
  lskd::matrix_view<const double> t() const { return {teacher.data(), rows, cols}; }
  lskd::matrix_view<double> gs() { return {grad.data(), rows, cols}; }
  lskd::matrix_view<double> gt() { return {grad.data() + size, rows, cols}; }
  lskd::row_weights<double> weighted() const { return {weights.data(), 0.0}; }

  bool untouched() const {
    return grad == std::vector<double>(2 * size, 7.0) &&
           row_losses == std::vector<double>(rows, -1.0) &&
           weights == std::vector<double>{1.0, 0.5} && student == student_before &&
           teacher == teacher_before;
  }
};

inline std::vector<std::int64_t> random_targets(unsigned seed, index rows, index classes) {
  std::mt19937_64 engine(seed);
  std::uniform_int_distribution<std::int64_t> pick(0, classes - 1);
  std::vector<std::int64_t> targets(static_cast<std::size_t>(rows));
  for (auto& t : targets) t = pick(engine);
  return targets;
}

/// One `case ... end` block of golden_beyond.txt.
struct golden_case {
  std::string name;
  std::string kind;
  index rows = 0;
  index cols = 0;
  double temperature = 1.0;
  bool standardize = false;
  int ddof = 1;
  double eps = 0.0;
  lskd::reduction reduction = lskd::reduction::batchmean;
  bool scale_by_t2 = true;
  double alpha = 0.0;
  double beta = 0.0;
  std::vector<std::int64_t> target;
  std::vector<double> temperatures;
  std::vector<double> class_weights;
  std::vector<double> student, teacher, loss, grad_student, grad_teacher;
  std::vector<double> dtau;

  lskd::multi_temperature_kd_options multi_temperature() const {
    lskd::multi_temperature_kd_options o;
    o.temperatures = temperatures;
    o.standardize = standardize;
    o.ddof = ddof;
    o.eps = eps;
    o.reduction = reduction;
    o.scale_by_t2 = scale_by_t2;
    return o;
  }

  lskd::kd_options kd() const {
    lskd::kd_options o;
    o.temperature = temperature;
    o.standardize = standardize;
    o.ddof = ddof;
    o.eps = eps;
    o.reduction = reduction;
    o.scale_by_t2 = scale_by_t2;
    return o;
  }

  lskd::dkd_options dkd() const {
    lskd::dkd_options o;
    o.temperature = temperature;
    o.alpha = alpha;
    o.beta = beta;
    o.standardize = standardize;
    o.ddof = ddof;
    o.eps = eps;
    o.reduction = reduction;
    o.scale_by_t2 = scale_by_t2;
    return o;
  }
};

namespace detail {

[[noreturn]] inline void fail(int line, const std::string& message) {
  throw std::runtime_error("golden_beyond.txt line " + std::to_string(line) + ": " + message);
}

inline std::vector<double> numbers(const std::string& text, int line) {
  std::vector<double> values;
  const char* cursor = text.c_str();
  for (;;) {
    while (*cursor == ' ' || *cursor == '\t' || *cursor == '\r') ++cursor;
    if (*cursor == '\0') break;
    char* end = nullptr;
    values.push_back(std::strtod(cursor, &end));
    if (end == cursor) fail(line, "not a number");
    cursor = end;
  }
  return values;
}

inline lskd::reduction reduction_named(const std::string& name, int line) {
  if (name == "none") return lskd::reduction::none;
  if (name == "sum") return lskd::reduction::sum;
  if (name == "batchmean") return lskd::reduction::batchmean;
  fail(line, "unknown reduction " + name);
}

}  // namespace detail

inline std::vector<golden_case> read_golden(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot open " + path);
  std::vector<golden_case> cases;
  golden_case current;
  bool open = false;
  std::string text;
  int line = 0;
  while (std::getline(file, text)) {
    ++line;
    const auto first = text.find_first_not_of(" \t\r");
    if (first == std::string::npos || text[first] == '#') continue;
    const auto space = text.find(' ', first);
    const std::string key =
        text.substr(first, space == std::string::npos ? std::string::npos : space - first);
    const std::string rest = space == std::string::npos ? std::string() : text.substr(space + 1);
    if (key == "case") {
      if (open) detail::fail(line, "case inside a case");
      current = golden_case{};
      current.name = rest;
      open = true;
      continue;
    }
    if (!open) detail::fail(line, "'" + key + "' outside a case");
    std::istringstream in(rest);
    if (key == "end") {
      const auto elements = static_cast<std::size_t>(current.rows * current.cols);
      if (current.student.size() != elements || current.teacher.size() != elements ||
          current.grad_student.size() != elements || current.grad_teacher.size() != elements) {
        detail::fail(line, current.name + ": a value line has the wrong count for its shape");
      }
      cases.push_back(std::move(current));
      open = false;
    } else if (key == "kind") {
      current.kind = rest;
    } else if (key == "shape") {
      in >> current.rows >> current.cols;
    } else if (key == "options") {
      std::string temperature, eps, reduction;
      int standardize = 0, scale = 0;
      in >> temperature >> standardize >> current.ddof >> eps >> reduction >> scale;
      if (!in) detail::fail(line, "malformed options");
      current.temperature = std::strtod(temperature.c_str(), nullptr);
      current.eps = std::strtod(eps.c_str(), nullptr);
      current.standardize = standardize != 0;
      current.reduction = detail::reduction_named(reduction, line);
      current.scale_by_t2 = scale != 0;
    } else if (key == "alpha_beta") {
      const auto v = detail::numbers(rest, line);
      if (v.size() != 2) detail::fail(line, "alpha_beta needs 2 numbers");
      current.alpha = v[0];
      current.beta = v[1];
    } else if (key == "target") {
      std::int64_t value = 0;
      while (in >> value) current.target.push_back(value);
    } else if (key == "class_weights") {
      current.class_weights = detail::numbers(rest, line);
    } else if (key == "temperatures") {
      current.temperatures = detail::numbers(rest, line);
    } else if (key == "student") {
      current.student = detail::numbers(rest, line);
    } else if (key == "teacher") {
      current.teacher = detail::numbers(rest, line);
    } else if (key == "loss") {
      current.loss = detail::numbers(rest, line);
    } else if (key == "grad_student") {
      current.grad_student = detail::numbers(rest, line);
    } else if (key == "grad_teacher") {
      current.grad_teacher = detail::numbers(rest, line);
    } else if (key == "dtau") {
      current.dtau = detail::numbers(rest, line);
    } else {
      detail::fail(line, "unknown keyword '" + key + "'");
    }
  }
  if (open) detail::fail(line, "the last case has no 'end'");
  return cases;
}

inline const std::vector<golden_case>& golden_cases() {
  static const std::vector<golden_case> cases =
      read_golden(std::string(LSKD_TEST_DATA_DIR) + "/golden_beyond.txt");
  return cases;
}

template <class T>
std::vector<T> converted(const std::vector<double>& values) {
  return std::vector<T>(values.begin(), values.end());
}

/// The largest |value| of row r of a rows x cols buffer.
inline double row_scale(const std::vector<double>& values, index cols, index r) {
  double high = 0;
  for (index c = 0; c < cols; ++c) {
    high = std::max(high, std::fabs(values[static_cast<std::size_t>(r * cols + c)]));
  }
  return high;
}

}  // namespace beyond_test
