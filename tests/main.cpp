// SPDX-License-Identifier: MIT
// The Catch2 runner of lskd_tests; the tests live in one file per topic beside this one.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
