// SPDX-License-Identifier: MIT
// The Catch2 runner of lskd_tests_beyond; one file per loss beside this one.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
