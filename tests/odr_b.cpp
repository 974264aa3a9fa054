// SPDX-License-Identifier: MIT
// See odr_a.cpp.
#include <lskd/lskd.hpp>

double odr_b_loss() {
  const double student[] = {1.0, 2.0, 0.5};
  const double teacher[] = {0.5, 1.5, -0.5};
  return lskd::kd_loss<double>().forward({student, 1, 3}, {teacher, 1, 3});
}
