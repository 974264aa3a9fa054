// lskd: logit-standardized knowledge distillation, header-only.
// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// Version of the lskd headers. CMake reads these three macros to version the package.

#define LSKD_VERSION_MAJOR 0
#define LSKD_VERSION_MINOR 1
#define LSKD_VERSION_PATCH 0

#define LSKD_VERSION_STRING "0.1.0"
