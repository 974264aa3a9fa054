// SPDX-License-Identifier: MIT
#pragma once

// Internal to liblskd_c: the per-instruction-set entry points that c_api.cpp dispatches to.
// kd_arch.cpp is compiled once per architecture (see lskd_add_dispatch_objects), each time
// with its own -m flags, lskd namespace and LSKD_DISPATCH_SUFFIX, and defines the two
// functions of its suffix. They have the signature of the C functions, with `options` never
// null, and throw std::invalid_argument / std::domain_error / std::bad_alloc on failure;
// c_api.cpp turns exceptions into error codes. They are C++ functions (extern "C++") and
// hidden: only the C API is exported.

#include <lskd/c_api.h>

#include <cstdint>

#define LSKD_C_KERNEL_PARAMETERS(T)                                                          \
  (const T* student, std::int64_t ld_student, const T* teacher, std::int64_t ld_teacher,     \
   std::int64_t rows, std::int64_t cols, const lskd_kd_options* options, double* loss,        \
   T* grad_student, std::int64_t ld_grad_student, T* grad_teacher, std::int64_t ld_grad_teacher)

#define LSKD_C_DECLARE_KERNELS(suffix)                                    \
  extern "C++" int lskd_detail_kd_f32_##suffix LSKD_C_KERNEL_PARAMETERS(float); \
  extern "C++" int lskd_detail_kd_f64_##suffix LSKD_C_KERNEL_PARAMETERS(double);

LSKD_C_DECLARE_KERNELS(scalar)
LSKD_C_DECLARE_KERNELS(sse2)
LSKD_C_DECLARE_KERNELS(avx2)
LSKD_C_DECLARE_KERNELS(avx512f)
