// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// Umbrella header: everything public in lskd.

#include <lskd/version.hpp>
#include <lskd/options.hpp>
#include <lskd/views.hpp>
#include <lskd/simd/dispatch.hpp>
#include <lskd/row_stats.hpp>
#include <lskd/standardize.hpp>
#include <lskd/softmax.hpp>
#include <lskd/kd_loss.hpp>
#include <lskd/dkd_loss.hpp>
#include <lskd/multi_temperature_kd_loss.hpp>
#include <lskd/half_precision.hpp>
