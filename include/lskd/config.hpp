// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// Namespace and attribute macros shared by every lskd header.

#include <lskd/version.hpp>

/// Everything in lskd lives in `lskd::LSKD_TARGET_NAMESPACE`, an inline namespace, so users
/// write `lskd::kd_loss` while each translation unit of a runtime-dispatch build (one per
/// instruction set, compiled with its own -m flags) defines it to a name of its own: the
/// inline functions of the sse2 and the avx512f units then have different symbols, and the
/// linker cannot keep an AVX-512 copy of a function that the sse2 path calls.
#ifndef LSKD_TARGET_NAMESPACE
#define LSKD_TARGET_NAMESPACE v0
#endif

#define LSKD_NAMESPACE_BEGIN \
  namespace lskd {           \
  inline namespace LSKD_TARGET_NAMESPACE {
#define LSKD_NAMESPACE_END \
  }                        \
  }

#if defined(__GNUC__) || defined(__clang__)
#define LSKD_COLD __attribute__((noinline, cold))
#else
#define LSKD_COLD
#endif
