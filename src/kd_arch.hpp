// SPDX-License-Identifier: MIT
#pragma once

// Internal to liblskd_c: the per-instruction-set entry points that c_api.cpp dispatches to.
// kd_arch.cpp is compiled once per architecture (see lskd_add_dispatch_objects), each time
// with its own -m flags, lskd namespace and LSKD_DISPATCH_SUFFIX, and defines the three
// functions of its suffix: lskd_detail_kd_f32/f64_<suffix>, with the signature of the C
// functions and `options` never null, and lskd_detail_request_<suffix>, which runs the losses
// beyond plain KD from a request (below). They throw std::invalid_argument /
// std::domain_error / std::bad_alloc on failure; c_api.cpp turns exceptions into error codes.
// They are C++ functions (extern "C++") and hidden: only the C API is exported.

#include <lskd/c_api.h>

#include <cstdint>

#define LSKD_C_KERNEL_PARAMETERS(T)                                                          \
  (const T* student, std::int64_t ld_student, const T* teacher, std::int64_t ld_teacher,     \
   std::int64_t rows, std::int64_t cols, const lskd_kd_options* options, double* loss,        \
   T* grad_student, std::int64_t ld_grad_student, T* grad_teacher, std::int64_t ld_grad_teacher)

#define LSKD_C_DECLARE_KERNELS(suffix)                                    \
  extern "C++" int lskd_detail_kd_f32_##suffix LSKD_C_KERNEL_PARAMETERS(float); \
  extern "C++" int lskd_detail_kd_f64_##suffix LSKD_C_KERNEL_PARAMETERS(double);

namespace lskd_c_detail {

// The losses beyond plain KD share one entry point per architecture, which takes a request:
// which loss, on which element type, with the C arguments as they were given (checked by
// c_api.cpp where the C++ functors cannot see them). Pointers are typed by `element`.
enum class loss_kind { kd_weighted, dkd, kd_class_weighted, multi_temperature };
enum class element { f32, f64, bf16, f16 };  // bf16/f16: 16-bit logits, float gradients

struct request {
  loss_kind kind = loss_kind::kd_weighted;
  element type = element::f32;
  const void* student = nullptr;
  std::int64_t ld_student = 0;
  const void* teacher = nullptr;
  std::int64_t ld_teacher = 0;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  const lskd_kd_options* kd = nullptr;    // never null for every kind but dkd
  const lskd_dkd_options* dkd = nullptr;  // never null for dkd
  const void* row_weights = nullptr;      // kd_weighted: T (float for 16-bit logits)
  double normalizer = 0.0;
  const std::int64_t* targets = nullptr;  // dkd
  const double* class_weights = nullptr;  // kd_class_weighted: `cols` values
  const double* temperatures = nullptr;   // multi_temperature
  std::int64_t temperature_count = 0;
  double* loss = nullptr;
  void* grad_student = nullptr;  // T, or float for 16-bit logits
  std::int64_t ld_grad_student = 0;
  void* grad_teacher = nullptr;
  std::int64_t ld_grad_teacher = 0;
  double* grad_temperature = nullptr;  // 1 value, or temperature_count
};

}  // namespace lskd_c_detail

#define LSKD_C_DECLARE_REQUEST_KERNEL(suffix) \
  extern "C++" int lskd_detail_request_##suffix(const lskd_c_detail::request& request);

LSKD_C_DECLARE_REQUEST_KERNEL(scalar)
LSKD_C_DECLARE_REQUEST_KERNEL(sse2)
LSKD_C_DECLARE_REQUEST_KERNEL(avx2)
LSKD_C_DECLARE_REQUEST_KERNEL(avx512f)

LSKD_C_DECLARE_KERNELS(scalar)
LSKD_C_DECLARE_KERNELS(sse2)
LSKD_C_DECLARE_KERNELS(avx2)
LSKD_C_DECLARE_KERNELS(avx512f)
