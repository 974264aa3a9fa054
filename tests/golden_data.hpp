// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// Reads tests/data/golden_kd.txt (format in tests/data/README.md): PyTorch float64 values of
/// the KD loss and its gradients.

#include <lskd/options.hpp>
#include <lskd/views.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef LSKD_TEST_DATA_DIR
#error "the build passes LSKD_TEST_DATA_DIR, the directory of golden_kd.txt"
#endif

namespace lskd_test {

/// One `case ... end` block.
struct golden_case {
  std::string name;
  lskd::index rows = 0;
  lskd::index cols = 0;
  lskd::kd_options options;
  std::vector<double> student;
  std::vector<double> teacher;
  std::vector<double> loss;  ///< one number, or one per row for reduction none
  std::vector<double> grad_student;
  std::vector<double> grad_teacher;
};

namespace golden_detail {

[[noreturn]] inline void fail(int line, const std::string& message) {
  throw std::runtime_error("golden_kd.txt line " + std::to_string(line) + ": " + message);
}

inline std::vector<double> numbers(const std::string& text, int line) {
  std::vector<double> values;
  const char* cursor = text.c_str();
  for (;;) {
    while (*cursor == ' ' || *cursor == '\t' || *cursor == '\r') ++cursor;
    if (*cursor == '\0') break;
    char* end = nullptr;
    values.push_back(std::strtod(cursor, &end));
    if (end == cursor) fail(line, "not a number: " + std::string(cursor, 20));
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

inline void check_complete(const golden_case& c, int line) {
  const auto elements = static_cast<std::size_t>(c.rows * c.cols);
  const std::size_t losses =
      c.options.reduction == lskd::reduction::none ? static_cast<std::size_t>(c.rows) : 1;
  if (c.rows < 1 || c.cols < 1) fail(line, c.name + ": missing or empty shape");
  if (c.student.size() != elements || c.teacher.size() != elements ||
      c.grad_student.size() != elements || c.grad_teacher.size() != elements ||
      c.loss.size() != losses) {
    fail(line, c.name + ": a value line has the wrong count for its shape");
  }
}

}  // namespace golden_detail

/// Parses the whole file; throws std::runtime_error naming the line on a malformed file.
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
    const std::string key = text.substr(first, space == std::string::npos ? std::string::npos
                                                                            : space - first);
    const std::string rest = space == std::string::npos ? std::string() : text.substr(space + 1);
    if (key == "case") {
      if (open) golden_detail::fail(line, "case inside a case");
      current = golden_case{};
      current.name = rest;
      open = true;
      continue;
    }
    if (!open) golden_detail::fail(line, "'" + key + "' outside a case");
    if (key == "end") {
      golden_detail::check_complete(current, line);
      cases.push_back(std::move(current));
      open = false;
    } else if (key == "shape") {
      std::istringstream in(rest);
      in >> current.rows >> current.cols;
    } else if (key == "options") {
      std::istringstream in(rest);
      std::string temperature, eps, reduction;
      int standardize = 0;
      int scale = 0;
      in >> temperature >> standardize >> current.options.ddof >> eps >> reduction >> scale;
      if (!in) golden_detail::fail(line, "malformed options");
      current.options.temperature = std::strtod(temperature.c_str(), nullptr);
      current.options.eps = std::strtod(eps.c_str(), nullptr);
      current.options.standardize = standardize != 0;
      current.options.reduction = golden_detail::reduction_named(reduction, line);
      current.options.scale_by_t2 = scale != 0;
    } else if (key == "student") {
      current.student = golden_detail::numbers(rest, line);
    } else if (key == "teacher") {
      current.teacher = golden_detail::numbers(rest, line);
    } else if (key == "loss") {
      current.loss = golden_detail::numbers(rest, line);
    } else if (key == "grad_student") {
      current.grad_student = golden_detail::numbers(rest, line);
    } else if (key == "grad_teacher") {
      current.grad_teacher = golden_detail::numbers(rest, line);
    } else {
      golden_detail::fail(line, "unknown keyword '" + key + "'");
    }
  }
  if (open) golden_detail::fail(line, "the last case has no 'end'");
  return cases;
}

/// The golden cases, read once per process.
inline const std::vector<golden_case>& golden_cases() {
  static const std::vector<golden_case> cases =
      read_golden(std::string(LSKD_TEST_DATA_DIR) + "/golden_kd.txt");
  return cases;
}

/// The case called `name`; throws if there is none.
inline const golden_case& golden_case_named(const std::string& name) {
  for (const golden_case& c : golden_cases()) {
    if (c.name == name) return c;
  }
  throw std::runtime_error("golden_kd.txt has no case " + name);
}

}  // namespace lskd_test
