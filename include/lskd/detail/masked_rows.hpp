// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// The masking rule shared by the losses: a class that is -inf in both the teacher's and the
/// student's logits is masked; any other non-finite logit is an error.

#include <lskd/config.hpp>
#include <lskd/detail/row_kernels.hpp>
#include <lskd/views.hpp>

#include <cmath>
#include <limits>
#include <string>

LSKD_NAMESPACE_BEGIN
namespace detail {

/// A row with a non-finite value: a class that is -inf in both teacher and student is masked
/// (it takes no part in the statistics or the softmax); anything else is a std::domain_error
/// naming the row, the class and whose logit it is. Sets min, max and usable over the other
/// classes. (The rule of lskd::kd_loss.)
template <class T>
inline void classify_masked_row(const char* function, const T* student, const T* teacher,
                                index n, index row, row_scan<T>& student_scan,
                                row_scan<T>& teacher_scan) {
  const T infinity = std::numeric_limits<T>::infinity();
  index usable = 0;
  T student_min = infinity, student_max = -infinity;
  T teacher_min = infinity, teacher_max = -infinity;
  for (index c = 0; c < n; ++c) {
    const T x = student[c];
    const T v = teacher[c];
    if (x == -infinity && v == -infinity) continue;
    if (!std::isfinite(x) || !std::isfinite(v)) {
      const bool student_bad = !std::isfinite(x);
      const T bad = student_bad ? x : v;
      const char* kind = std::isnan(bad) ? "NaN" : (bad > 0 ? "+inf" : "-inf");
      std::string message = std::string(student_bad ? "student" : "teacher") + " logits row " +
                            std::to_string(row) + " has a non-finite value (" + kind +
                            ") at class " + std::to_string(c);
      if (bad == -infinity) {
        message += "; a class is masked only when it is -inf in both the teacher and the "
                   "student";
      }
      throw_domain(function, message);
    }
    ++usable;
    student_min = min_of(student_min, x);
    student_max = max_of(student_max, x);
    teacher_min = min_of(teacher_min, v);
    teacher_max = max_of(teacher_max, v);
  }
  student_scan = {student_min, student_max, true, usable, false, 0.0, 0.0, 0.0};
  teacher_scan = {teacher_min, teacher_max, true, usable, false, 0.0, 0.0, 0.0};
}

}  // namespace detail
LSKD_NAMESPACE_END
