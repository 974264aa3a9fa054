// SPDX-License-Identifier: MIT

// One instruction set's implementation of the C API's loss: compiled once per architecture,
// with LSKD_DISPATCH_ARCH (the xsimd architecture type) and LSKD_DISPATCH_SUFFIX (the name
// pasted into the function names) defined by lskd_add_dispatch_objects.

#include "kd_arch.hpp"

#include <lskd/kd_loss.hpp>

#include <cstdint>
#include <type_traits>

#if !defined(LSKD_DISPATCH_ARCH) || !defined(LSKD_DISPATCH_SUFFIX)
#error "kd_arch.cpp is built by lskd_add_dispatch_objects, which defines LSKD_DISPATCH_ARCH"
#endif

#define LSKD_C_PASTE_TOKENS(a, b) a##b
#define LSKD_C_PASTE(a, b) LSKD_C_PASTE_TOKENS(a, b)
#define LSKD_C_KERNEL_NAME(type) LSKD_C_PASTE(lskd_detail_kd_##type##_, LSKD_DISPATCH_SUFFIX)

// Inside lskd's per-target namespace, so that every function of this file is named after its
// architecture (tests/consumer checks that SIMD instructions appear only in such functions).
LSKD_NAMESPACE_BEGIN
namespace c_api {
namespace {

// The C struct as C++ options. c_api.cpp has already checked the fields that are only
// meaningful in C (0/1 booleans, the reduction's range); kd_loss's constructor checks the rest.
kd_options to_kd_options(const lskd_kd_options& c) {
  kd_options options;
  options.temperature = c.temperature;
  options.standardize = c.standardize != 0;
  options.ddof = c.ddof;
  options.eps = c.eps;
  options.reduction = c.reduction == LSKD_REDUCTION_NONE  ? reduction::none
                      : c.reduction == LSKD_REDUCTION_SUM ? reduction::sum
                                                          : reduction::batchmean;
  options.scale_by_t2 = c.scale_by_t2 != 0;
  return options;
}

template <class T>
int run_kd(const T* student, std::int64_t ld_student, const T* teacher, std::int64_t ld_teacher,
           std::int64_t rows, std::int64_t cols, const lskd_kd_options* c_options, double* loss,
           T* grad_student, std::int64_t ld_grad_student, T* grad_teacher,
           std::int64_t ld_grad_teacher) {
  const kd_options options = to_kd_options(*c_options);
  // The C API runs on the calling thread: the default execution (one thread).
  const kd_loss<T, LSKD_DISPATCH_ARCH> kd(options);

  const auto view = [rows, cols](auto* data, std::int64_t ld) {
    using element = std::remove_pointer_t<decltype(data)>;
    return matrix_view<element>(data, static_cast<index>(rows), static_cast<index>(cols),
                                static_cast<index>(ld));
  };
  // A null gradient is an output that is not wanted: an empty view. (A null input stays a
  // view with rows, and kd_loss reports it.)
  const auto output_view = [&view](T* data, std::int64_t ld) {
    return data == nullptr ? matrix_view<T>() : view(data, ld);
  };
  const matrix_view<const T> student_view = view(student, ld_student);
  const matrix_view<const T> teacher_view = view(teacher, ld_teacher);
  const matrix_view<T> grad_student_view = output_view(grad_student, ld_grad_student);
  const matrix_view<T> grad_teacher_view = output_view(grad_teacher, ld_grad_teacher);

  // With reduction::none, kd_loss writes the per-row losses into `loss` itself, and only once
  // everything has succeeded; otherwise the reduced loss is written here, after the call.
  const bool per_row = options.reduction == reduction::none;
  double* row_losses = per_row ? loss : nullptr;
  double total = 0.0;
  if (grad_student == nullptr && grad_teacher == nullptr) {
    total = kd.forward(student_view, teacher_view, row_losses);
  } else {
    total = kd.forward_backward(student_view, teacher_view, grad_student_view, grad_teacher_view,
                                row_losses);
  }
  if (!per_row) *loss = total;
  return LSKD_OK;
}

}  // namespace
}  // namespace c_api
LSKD_NAMESPACE_END

int LSKD_C_KERNEL_NAME(f32) LSKD_C_KERNEL_PARAMETERS(float) {
  return lskd::c_api::run_kd(student, ld_student, teacher, ld_teacher, rows, cols, options, loss,
                             grad_student, ld_grad_student, grad_teacher, ld_grad_teacher);
}

int LSKD_C_KERNEL_NAME(f64) LSKD_C_KERNEL_PARAMETERS(double) {
  return lskd::c_api::run_kd(student, ld_student, teacher, ld_teacher, rows, cols, options, loss,
                             grad_student, ld_grad_student, grad_teacher, ld_grad_teacher);
}
