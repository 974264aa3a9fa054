// SPDX-License-Identifier: MIT
// With odr_b.cpp: every public header in two translation units of one program, so a
// non-inline definition in a header fails to link.
#include <lskd/lskd.hpp>

#include <catch2/catch.hpp>

double odr_a_loss() {
  const double student[] = {1.0, 2.0, 0.5};
  const double teacher[] = {0.5, 1.5, -0.5};
  return lskd::kd_loss<double>().forward({student, 1, 3}, {teacher, 1, 3});
}

double odr_b_loss();

TEST_CASE("every public header links from two translation units", "[odr]") {
  // The same call compiled in two translation units gives the same number.
  CHECK(odr_a_loss() == odr_b_loss());
  CHECK(odr_a_loss() > 0.0);
}
