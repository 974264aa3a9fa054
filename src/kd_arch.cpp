// SPDX-License-Identifier: MIT

// One instruction set's implementation of the C API's loss: compiled once per architecture,
// with LSKD_DISPATCH_ARCH (the xsimd architecture type) and LSKD_DISPATCH_SUFFIX (the name
// pasted into the function names) defined by lskd_add_dispatch_objects.

#include "kd_arch.hpp"

#include <lskd/dkd_loss.hpp>
#include <lskd/half_precision.hpp>
#include <lskd/kd_loss.hpp>
#include <lskd/multi_temperature_kd_loss.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <type_traits>
#include <vector>

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

lskd::reduction to_reduction(int c) {
  return c == LSKD_REDUCTION_NONE  ? reduction::none
         : c == LSKD_REDUCTION_SUM ? reduction::sum
                                   : reduction::batchmean;
}

// The C struct as C++ options. c_api.cpp has already checked the fields that are only
// meaningful in C (0/1 booleans, the reduction's range); kd_loss's constructor checks the rest.
kd_options to_kd_options(const lskd_kd_options& c) {
  kd_options options;
  options.temperature = c.temperature;
  options.standardize = c.standardize != 0;
  options.ddof = c.ddof;
  options.eps = c.eps;
  options.reduction = to_reduction(c.reduction);
  options.scale_by_t2 = c.scale_by_t2 != 0;
  return options;
}

// The C name of a request's temperature gradients: one value, or one per temperature (even
// when there is only one temperature).
const char* temperature_gradient_name(const lskd_c_detail::request& q) {
  return q.kind == lskd_c_detail::loss_kind::multi_temperature ? "grad_temperatures"
                                                               : "grad_temperature";
}

// The reduced loss (null: none, the functor writes per-row losses itself) and the temperature
// gradients (null: none; `temperature_name` is their C name) are doubles the C++ functor never
// sees (it gets its own buffers for them): they must not lie inside a logit, gradient,
// row-weight or target buffer, which they would silently overwrite. Views with rows; an empty
// gradient view is an output not asked for; `row_weights` and `targets` hold one value per row,
// or are null.
template <class In, class Out, class Weight = In>
void check_scalar_outputs(const char* function, const double* loss,
                          const double* grad_temperature, const char* temperature_name,
                          std::size_t temperature_count,
                          const matrix_view<const In>& student,
                          const matrix_view<const In>& teacher,
                          const matrix_view<Out>& grad_student,
                          const matrix_view<Out>& grad_teacher,
                          const Weight* row_weights = nullptr,
                          const std::int64_t* targets = nullptr) {
  if (loss != nullptr) {
    detail::check_side_buffers(function, student, teacher, grad_student, grad_teacher,
                               row_weights, targets, nullptr, "loss", loss, 1);
  }
  if (grad_temperature != nullptr) {
    detail::check_side_buffers(function, student, teacher, grad_student, grad_teacher,
                               row_weights, targets, nullptr, temperature_name,
                               grad_temperature, static_cast<index>(temperature_count));
  }
}

// The values a loss takes as parameters, beside the logits: its class weights (`cols` of
// them) or its temperatures; none when `data` is null. The caller's array, read during the
// call (the C++ functor keeps a copy).
struct parameter_array {
  const char* name = nullptr;
  const double* data = nullptr;
  std::size_t count = 0;
};

// No output of a request (the loss, or the per-row losses with reduction::none; the logit
// gradients; the temperature gradients) may lie inside its parameter array: the caller's
// class weights or temperatures, which it would overwrite. Checked with or without rows:
// the reduced loss and the temperature gradients are written even for zero rows.
template <class Out>
void check_parameter_outputs(const char* function, const lskd_c_detail::request& q,
                             reduction how, std::size_t temperature_count,
                             const matrix_view<Out>& grad_student,
                             const matrix_view<Out>& grad_teacher,
                             const parameter_array& parameters) {
  if (parameters.data == nullptr) return;
  const matrix_view<const double> read(parameters.data, static_cast<index>(parameters.count), 1);
  const index loss_count = how == reduction::none ? static_cast<index>(q.rows) : 1;
  const matrix_view<const double> loss(q.loss, loss_count, 1);
  detail::check_no_overlap(function, "loss", loss, parameters.name, read, false);
  detail::check_no_overlap(function, "grad_student", grad_student, parameters.name, read, false);
  detail::check_no_overlap(function, "grad_teacher", grad_teacher, parameters.name, read, false);
  if (q.grad_temperature == nullptr) return;
  const matrix_view<const double> tau(q.grad_temperature,
                                      static_cast<index>(temperature_count), 1);
  detail::check_no_overlap(function, temperature_gradient_name(q), tau, parameters.name, read,
                           false);
}

// check_scalar_outputs for a request whose shapes c_api.cpp has checked, and, with
// `parameters`, check_parameter_outputs.
template <class In, class Out, class Weight = In>
void check_scalar_outputs(const char* function, const lskd_c_detail::request& q, reduction how,
                          std::size_t temperature_count, const matrix_view<const In>& student,
                          const matrix_view<const In>& teacher,
                          const matrix_view<Out>& grad_student,
                          const matrix_view<Out>& grad_teacher,
                          const Weight* row_weights = nullptr,
                          const parameter_array& parameters = {}) {
  check_parameter_outputs(function, q, how, temperature_count, grad_student, grad_teacher,
                          parameters);
  if (q.rows <= 0) return;
  check_scalar_outputs(function, how == reduction::none ? nullptr : q.loss, q.grad_temperature,
                       temperature_gradient_name(q), temperature_count, student, teacher,
                       grad_student, grad_teacher, row_weights, q.targets);
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
  const bool shapes_valid = rows > 0 && cols > 0 && ld_student >= cols && ld_teacher >= cols &&
                            (grad_student == nullptr || ld_grad_student >= cols) &&
                            (grad_teacher == nullptr || ld_grad_teacher >= cols);
  if (!per_row && shapes_valid) {  // (invalid shapes are reported by kd_loss itself)
    // With reduction::none the functor checks `loss` itself.
    check_scalar_outputs("lskd::kd_loss", loss, nullptr, nullptr, 0, student_view, teacher_view,
                         grad_student_view, grad_teacher_view);
  }
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

// ---- The losses beyond plain KD (one request per call; see kd_arch.hpp) -------------------

dkd_options to_dkd_options(const lskd_dkd_options& c) {
  dkd_options options;
  options.temperature = c.temperature;
  options.alpha = c.alpha;
  options.beta = c.beta;
  options.standardize = c.standardize != 0;
  options.ddof = c.ddof;
  options.eps = c.eps;
  options.reduction = to_reduction(c.reduction);
  options.scale_by_t2 = c.scale_by_t2 != 0;
  return options;
}

template <class T>
matrix_view<const T> input_view(const void* data, const lskd_c_detail::request& q,
                                std::int64_t ld) {
  return matrix_view<const T>(static_cast<const T*>(data), static_cast<index>(q.rows),
                              static_cast<index>(q.cols), static_cast<index>(ld));
}

// A null gradient is an output that is not wanted: an empty view.
template <class T>
matrix_view<T> output_view(void* data, const lskd_c_detail::request& q, std::int64_t ld) {
  if (data == nullptr) return matrix_view<T>();
  return matrix_view<T>(static_cast<T*>(data), static_cast<index>(q.rows),
                        static_cast<index>(q.cols), static_cast<index>(ld));
}

// Runs compute(row_losses, grad_temperature) and writes the outputs the C++ functor does not
// write itself only once it has succeeded: the reduced loss and the temperature gradients
// (which the functors zero before checking the rows). With reduction::none the functor writes
// the per-row losses into `loss` itself, after every check.
template <class Compute>
int finish(const lskd_c_detail::request& q, reduction how, std::size_t temperature_count,
           Compute&& compute) {
  const bool per_row = how == reduction::none;
  std::vector<double> tau(q.grad_temperature != nullptr ? temperature_count : 0);
  const double total =
      compute(per_row ? q.loss : nullptr, q.grad_temperature != nullptr ? tau.data() : nullptr);
  if (!per_row) *q.loss = total;
  std::copy(tau.begin(), tau.end(), q.grad_temperature);
  return LSKD_OK;
}

bool wants_gradient(const lskd_c_detail::request& q) {
  return q.grad_student != nullptr || q.grad_teacher != nullptr ||
         q.grad_temperature != nullptr;
}

// kd_loss (T float or double) over weighted rows, or with class weights.
template <class T>
int run_kd_request(const lskd_c_detail::request& q) {
  const kd_options options = to_kd_options(*q.kd);
  const kd_loss<T, LSKD_DISPATCH_ARCH> kd =
      q.kind == lskd_c_detail::loss_kind::kd_class_weighted
          ? kd_loss<T, LSKD_DISPATCH_ARCH>::with_class_weights(
                options, std::vector<double>(q.class_weights,
                                             q.class_weights + static_cast<std::size_t>(q.cols)))
          : kd_loss<T, LSKD_DISPATCH_ARCH>(options);
  const row_weights<T> weights{static_cast<const T*>(q.row_weights), q.normalizer};
  const auto student = input_view<T>(q.student, q, q.ld_student);
  const auto teacher = input_view<T>(q.teacher, q, q.ld_teacher);
  const auto grad_student = output_view<T>(q.grad_student, q, q.ld_grad_student);
  const auto grad_teacher = output_view<T>(q.grad_teacher, q, q.ld_grad_teacher);
  const bool class_weighted = q.kind == lskd_c_detail::loss_kind::kd_class_weighted;
  const parameter_array class_weights{"class_weights", class_weighted ? q.class_weights : nullptr,
                                      static_cast<std::size_t>(q.cols)};
  check_scalar_outputs("lskd::kd_loss", q, options.reduction, 1, student, teacher, grad_student,
                       grad_teacher, weights.weights, class_weights);
  return finish(q, options.reduction, 1, [&](double* row_losses, double* tau) {
    if (!wants_gradient(q)) return kd.forward(student, teacher, weights, row_losses);
    return kd.forward_backward(student, teacher, weights, grad_student, grad_teacher, row_losses,
                               tau);
  });
}

// kd_loss on 16-bit logits (Storage Eigen::bfloat16 or Eigen::half), float gradients.
template <class Storage>
int run_half_request(const lskd_c_detail::request& q) {
  const kd_options options = to_kd_options(*q.kd);
  const half_precision_kd_loss<Storage, LSKD_DISPATCH_ARCH> kd(options);
  const row_weights<float> weights{static_cast<const float*>(q.row_weights), q.normalizer};
  // The C caller's uint16_t bits: Eigen's types hold exactly those 16 bits.
  static_assert(sizeof(Storage) == sizeof(std::uint16_t), "16-bit storage");
  const auto student = input_view<Storage>(q.student, q, q.ld_student);
  const auto teacher = input_view<Storage>(q.teacher, q, q.ld_teacher);
  const auto grad_student = output_view<float>(q.grad_student, q, q.ld_grad_student);
  const auto grad_teacher = output_view<float>(q.grad_teacher, q, q.ld_grad_teacher);
  check_scalar_outputs("lskd::kd_loss", q, options.reduction, 1, student, teacher, grad_student,
                       grad_teacher, weights.weights);
  return finish(q, options.reduction, 1, [&](double* row_losses, double* tau) {
    if (!wants_gradient(q)) return kd.forward(student, teacher, weights, row_losses);
    return kd.forward_backward(student, teacher, grad_student, grad_teacher, row_losses, tau,
                               weights);
  });
}

template <class T>
int run_dkd_request(const lskd_c_detail::request& q) {
  const dkd_options options = to_dkd_options(*q.dkd);
  const dkd_loss<T, LSKD_DISPATCH_ARCH> dkd(options);
  const auto student = input_view<T>(q.student, q, q.ld_student);
  const auto teacher = input_view<T>(q.teacher, q, q.ld_teacher);
  const auto grad_student = output_view<T>(q.grad_student, q, q.ld_grad_student);
  const auto grad_teacher = output_view<T>(q.grad_teacher, q, q.ld_grad_teacher);
  check_scalar_outputs("lskd::dkd_loss", q, options.reduction, 1, student, teacher, grad_student,
                       grad_teacher);
  return finish(q, options.reduction, 1, [&](double* row_losses, double* tau) {
    if (!wants_gradient(q)) return dkd.forward(student, teacher, q.targets, row_losses);
    return dkd.forward_backward(student, teacher, q.targets, grad_student, grad_teacher,
                                row_losses, tau);
  });
}

template <class T>
int run_multi_temperature_request(const lskd_c_detail::request& q) {
  multi_temperature_kd_options options;
  options.temperatures.assign(q.temperatures,
                              q.temperatures + static_cast<std::size_t>(q.temperature_count));
  options.standardize = q.kd->standardize != 0;
  options.ddof = q.kd->ddof;
  options.eps = q.kd->eps;
  options.reduction = to_reduction(q.kd->reduction);
  options.scale_by_t2 = q.kd->scale_by_t2 != 0;
  const reduction how = options.reduction;
  const std::size_t count = options.temperatures.size();
  const multi_temperature_kd_loss<T, LSKD_DISPATCH_ARCH> kd(std::move(options));
  const auto student = input_view<T>(q.student, q, q.ld_student);
  const auto teacher = input_view<T>(q.teacher, q, q.ld_teacher);
  const auto grad_student = output_view<T>(q.grad_student, q, q.ld_grad_student);
  const auto grad_teacher = output_view<T>(q.grad_teacher, q, q.ld_grad_teacher);
  const parameter_array temperatures{"temperatures", q.temperatures, count};
  check_scalar_outputs("lskd::multi_temperature_kd_loss", q, how, count, student, teacher,
                       grad_student, grad_teacher, static_cast<const T*>(nullptr), temperatures);
  return finish(q, how, count, [&](double* row_losses, double* tau) {
    if (!wants_gradient(q)) return kd.forward(student, teacher, row_losses);
    return kd.forward_backward(student, teacher, grad_student, grad_teacher, row_losses, tau);
  });
}

template <class T>
int run_request_of(const lskd_c_detail::request& q) {
  switch (q.kind) {
    case lskd_c_detail::loss_kind::kd_weighted:
    case lskd_c_detail::loss_kind::kd_class_weighted:
      return run_kd_request<T>(q);
    case lskd_c_detail::loss_kind::dkd:
      return run_dkd_request<T>(q);
    case lskd_c_detail::loss_kind::multi_temperature:
      return run_multi_temperature_request<T>(q);
  }
  throw std::logic_error("lskd_c: unknown loss kind");
}

// Not inlined into the exported entry point below: its code (and any cold part GCC splits
// off) then keeps this namespaced name, which says the architecture (tests/consumer checks
// that SIMD instructions appear only in such functions).
#if defined(__GNUC__) || defined(__clang__)
__attribute__((noinline))
#endif
int run_request(const lskd_c_detail::request& q) {
  switch (q.type) {
    case lskd_c_detail::element::f32:
      return run_request_of<float>(q);
    case lskd_c_detail::element::f64:
      return run_request_of<double>(q);
    case lskd_c_detail::element::bf16:
      if (q.kind != lskd_c_detail::loss_kind::kd_weighted) break;
      return run_half_request<Eigen::bfloat16>(q);
    case lskd_c_detail::element::f16:
      if (q.kind != lskd_c_detail::loss_kind::kd_weighted) break;
      return run_half_request<Eigen::half>(q);
  }
  throw std::logic_error("lskd_c: unsupported element type for this loss");
}

}  // namespace
}  // namespace c_api
LSKD_NAMESPACE_END

int LSKD_C_PASTE(lskd_detail_request_,
                 LSKD_DISPATCH_SUFFIX)(const lskd_c_detail::request& request) {
  return lskd::c_api::run_request(request);
}

int LSKD_C_KERNEL_NAME(f32) LSKD_C_KERNEL_PARAMETERS(float) {
  return lskd::c_api::run_kd(student, ld_student, teacher, ld_teacher, rows, cols, options, loss,
                             grad_student, ld_grad_student, grad_teacher, ld_grad_teacher);
}

int LSKD_C_KERNEL_NAME(f64) LSKD_C_KERNEL_PARAMETERS(double) {
  return lskd::c_api::run_kd(student, ld_student, teacher, ld_teacher, rows, cols, options, loss,
                             grad_student, ld_grad_student, grad_teacher, ld_grad_teacher);
}
