// SPDX-License-Identifier: MIT

// The C API: argument checks that only make sense in C, the choice of instruction set (once
// per process), and the translation of C++ exceptions into error codes and a per-thread
// message. Compiled without any SIMD flag: only the per-architecture objects built from
// kd_arch.cpp contain SIMD instructions, and they run only on a CPU that has them.

#include <lskd/c_api.h>
#include <lskd/simd/dispatch.hpp>
#include <lskd/version.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kd_arch.hpp"

namespace {

// ---- Errors -------------------------------------------------------------------------------

thread_local std::string last_error;
// Set instead of last_error when even formatting the message ran out of memory.
thread_local const char* last_error_fallback = nullptr;

void clear_error() noexcept {
  last_error.clear();
  last_error_fallback = nullptr;
}

// The length of a leading "lskd::<name>: " (a C++ functor's name, e.g. "lskd::kd_loss: "), or 0.
std::size_t cxx_prefix_length(const char* message) noexcept {
  static constexpr char lskd_prefix[] = "lskd::";
  constexpr std::size_t lskd_prefix_length = sizeof lskd_prefix - 1;
  if (std::strncmp(message, lskd_prefix, lskd_prefix_length) != 0) return 0;
  std::size_t i = lskd_prefix_length;
  while ((message[i] >= 'a' && message[i] <= 'z') || (message[i] >= '0' && message[i] <= '9') ||
         message[i] == '_') {
    ++i;
  }
  if (i == lskd_prefix_length || message[i] != ':' || message[i + 1] != ' ') return 0;
  return i + 2;
}

// Stores "<function>: <message>". If the message starts with the C++ functor's own name, that
// is replaced by the C function's: the user called the latter.
void set_error(const char* function, const char* message) noexcept {
  try {
    message += cxx_prefix_length(message);
    last_error = std::string(function) + ": " + message;
    last_error_fallback = nullptr;
  } catch (...) {
    last_error_fallback = "lskd: out of memory while formatting an error message";
  }
}

// Thrown by the C-level checks below; caught as std::invalid_argument.
[[noreturn]] void invalid(const std::string& message) { throw std::invalid_argument(message); }

// ---- Choice of instruction set --------------------------------------------------------------

using kd_f32_function = int LSKD_C_KERNEL_PARAMETERS(float);
using kd_f64_function = int LSKD_C_KERNEL_PARAMETERS(double);
using request_function = int(const lskd_c_detail::request&);

struct kernels {
  const char* key;   // the LSKD_ARCH spelling
  const char* name;  // what lskd_simd_arch() reports
  bool supported;    // whether this CPU can run it
  kd_f32_function* f32;
  kd_f64_function* f64;
  request_function* request;  // the losses beyond plain KD
};

struct dispatch_choice {
  const kernels* chosen = nullptr;  // null when LSKD_ARCH cannot be honoured
  std::string error;                // why, then
};

dispatch_choice choose_kernels() {
  // Best first. The avx2 objects are compiled for fma3<avx2>, so they need both.
  static const kernels candidates[] = {
      // FIXME: the avx512f objects are compiled with AVX512DQ as well, because xsimd 8.1 needs
      // it for one horizontal sum (see src/CMakeLists.txt); so the CPU must have DQ too.
      {"avx512f", lskd::simd::arch_name<xsimd::avx512f>(),
       lskd::simd::cpu_supports<xsimd::avx512f>() && xsimd::available_architectures().avx512dq,
       lskd_detail_kd_f32_avx512f, lskd_detail_kd_f64_avx512f, lskd_detail_request_avx512f},
      {"avx2", lskd::simd::arch_name<xsimd::fma3<xsimd::avx2>>(),
       lskd::simd::cpu_supports<xsimd::fma3<xsimd::avx2>>(), lskd_detail_kd_f32_avx2,
       lskd_detail_kd_f64_avx2, lskd_detail_request_avx2},
      {"sse2", lskd::simd::arch_name<xsimd::sse2>(), lskd::simd::cpu_supports<xsimd::sse2>(),
       lskd_detail_kd_f32_sse2, lskd_detail_kd_f64_sse2, lskd_detail_request_sse2},
      {"scalar", lskd::simd::arch_name<lskd::simd::scalar>(), true, lskd_detail_kd_f32_scalar,
       lskd_detail_kd_f64_scalar, lskd_detail_request_scalar},
  };

  dispatch_choice choice;
  const char* requested = std::getenv("LSKD_ARCH");
  if (requested == nullptr || *requested == '\0' || std::strcmp(requested, "auto") == 0) {
    for (const kernels& k : candidates) {
      if (k.supported) {
        choice.chosen = &k;
        break;
      }
    }
    return choice;
  }

  std::string available;
  for (const kernels& k : candidates) {
    if (k.supported) available += std::string(available.empty() ? "" : ", ") + k.key;
  }
  for (const kernels& k : candidates) {
    if (std::strcmp(requested, k.key) != 0) continue;
    if (k.supported) {
      choice.chosen = &k;
    } else {
      choice.error = std::string("the environment variable LSKD_ARCH='") + requested +
                     "' asks for an instruction set this CPU does not have (it has: " +
                     available + ")";
    }
    return choice;
  }
  choice.error = std::string("the environment variable LSKD_ARCH='") + requested +
                 "' is not one of auto, scalar, sse2, avx2, avx512f (this CPU has: " + available +
                 ")";
  return choice;
}

// Chosen at the first call, once for the process (thread-safe static initialization).
const dispatch_choice& dispatch() {
  static const dispatch_choice choice = choose_kernels();
  return choice;
}

// ---- Checks on the C arguments ------------------------------------------------------------

void check_fits_index(const char* name, std::int64_t value) {
  using limits = std::numeric_limits<std::ptrdiff_t>;
  if (value < static_cast<std::int64_t>(limits::min()) ||
      value > static_cast<std::int64_t>(limits::max())) {
    invalid(std::string("'") + name + "' is " + std::to_string(value) +
            ", beyond this platform's address range");
  }
}

void check_leading_dimension(const char* name, std::int64_t ld, std::int64_t cols) {
  check_fits_index(name, ld);
  if (ld < cols) {
    invalid(std::string("'") + name + "' is " + std::to_string(ld) + ", smaller than 'cols' (" +
            std::to_string(cols) + "); a leading dimension counts elements between the starts "
            "of consecutive rows");
  }
}

void check_flag(const char* name, int value, const char* init = "lskd_kd_options_init") {
  if (value != 0 && value != 1) {
    invalid(std::string("'options->") + name + "' must be 0 or 1 (got " + std::to_string(value) +
            "); was the struct filled by " + init + "()?");
  }
}

void check_reduction(int reduction) {
  if (reduction != LSKD_REDUCTION_NONE && reduction != LSKD_REDUCTION_SUM &&
      reduction != LSKD_REDUCTION_BATCHMEAN) {
    invalid("'options->reduction' must be LSKD_REDUCTION_NONE (0), LSKD_REDUCTION_SUM (1) or "
            "LSKD_REDUCTION_BATCHMEAN (2) (got " + std::to_string(reduction) + ")");
  }
}

// Everything the C++ functor cannot see: sizes as int64_t, leading dimensions of buffers that
// are passed, the options' C-only fields, the loss pointer.
void check_c_shape(std::int64_t ld_student, std::int64_t ld_teacher, std::int64_t rows,
                   std::int64_t cols, const double* loss, const void* grad_student,
                   std::int64_t ld_grad_student, const void* grad_teacher,
                   std::int64_t ld_grad_teacher) {
  if (rows < 0) invalid("'rows' is " + std::to_string(rows) + "; it must be >= 0");
  if (cols < 1) {
    invalid("'cols' is " + std::to_string(cols) + "; there must be at least 1 class");
  }
  check_fits_index("rows", rows);
  check_fits_index("cols", cols);
  check_leading_dimension("ld_student", ld_student, cols);
  check_leading_dimension("ld_teacher", ld_teacher, cols);
  if (grad_student != nullptr) check_leading_dimension("ld_grad_student", ld_grad_student, cols);
  if (grad_teacher != nullptr) check_leading_dimension("ld_grad_teacher", ld_grad_teacher, cols);
  if (loss == nullptr) {
    invalid("'loss' is null; it receives the loss (or 'rows' values with "
            "LSKD_REDUCTION_NONE)");
  }
}

void check_c_arguments(std::int64_t ld_student, std::int64_t ld_teacher, std::int64_t rows,
                       std::int64_t cols, const lskd_kd_options& options, const double* loss,
                       const void* grad_student, std::int64_t ld_grad_student,
                       const void* grad_teacher, std::int64_t ld_grad_teacher) {
  check_c_shape(ld_student, ld_teacher, rows, cols, loss, grad_student, ld_grad_student,
                grad_teacher, ld_grad_teacher);
  check_flag("standardize", options.standardize);
  check_flag("scale_by_t2", options.scale_by_t2);
  check_reduction(options.reduction);
}

// Runs body() with every exception turned into a code and a message.
template <class Body>
int translate_exceptions(const char* function, Body&& body) noexcept {
  clear_error();
  try {
    return body();
  } catch (const std::invalid_argument& e) {
    set_error(function, e.what());
    return LSKD_ERROR_INVALID_ARGUMENT;
  } catch (const std::domain_error& e) {
    set_error(function, e.what());
    return LSKD_ERROR_DOMAIN;
  } catch (const std::bad_alloc&) {
    set_error(function, "out of memory");
    return LSKD_ERROR_OUT_OF_MEMORY;
  } catch (const std::length_error& e) {
    // A std::vector asked for more elements than it can ever hold: memory again.
    set_error(function, (std::string("out of memory (") + e.what() + ")").c_str());
    return LSKD_ERROR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_error(function, (std::string("internal error: ") + e.what()).c_str());
    return LSKD_ERROR_INTERNAL;
  } catch (...) {
    set_error(function, "internal error: an unknown exception");
    return LSKD_ERROR_INTERNAL;
  }
}

// Runs one call: checks, dispatch, and every exception turned into a code and a message.
template <class T, class Kernel>
int guarded_call(const char* function, Kernel kernel_of, const T* student,
                 std::int64_t ld_student, const T* teacher, std::int64_t ld_teacher,
                 std::int64_t rows, std::int64_t cols, const lskd_kd_options* options,
                 double* loss, T* grad_student, std::int64_t ld_grad_student, T* grad_teacher,
                 std::int64_t ld_grad_teacher) noexcept {
  return translate_exceptions(function, [&]() -> int {
    lskd_kd_options defaults;
    if (options == nullptr) {
      lskd_kd_options_init(&defaults);
      options = &defaults;
    }
    check_c_arguments(ld_student, ld_teacher, rows, cols, *options, loss, grad_student,
                      ld_grad_student, grad_teacher, ld_grad_teacher);
    const dispatch_choice& choice = dispatch();
    if (choice.chosen == nullptr) invalid(choice.error);
    return kernel_of(*choice.chosen)(student, ld_student, teacher, ld_teacher, rows, cols, options,
                                     loss, grad_student, ld_grad_student, grad_teacher,
                                     ld_grad_teacher);
  });
}

// ---- The losses beyond plain KD -------------------------------------------------------------

// The C-level checks of a request (those the C++ functors cannot make), then its dispatch.
// `q.kd` or `q.dkd` may be null (the defaults); `q.loss` is checked here.
int run_request(lskd_c_detail::request q) {
  lskd_kd_options kd_defaults;
  lskd_dkd_options dkd_defaults;
  int reduction = LSKD_REDUCTION_BATCHMEAN;
  if (q.kind == lskd_c_detail::loss_kind::dkd) {
    if (q.dkd == nullptr) {
      lskd_dkd_options_init(&dkd_defaults);
      q.dkd = &dkd_defaults;
    }
    check_c_shape(q.ld_student, q.ld_teacher, q.rows, q.cols, q.loss, q.grad_student,
                  q.ld_grad_student, q.grad_teacher, q.ld_grad_teacher);
    check_flag("standardize", q.dkd->standardize, "lskd_dkd_options_init");
    check_flag("scale_by_t2", q.dkd->scale_by_t2, "lskd_dkd_options_init");
    check_reduction(q.dkd->reduction);
    reduction = q.dkd->reduction;
  } else {
    if (q.kd == nullptr) {
      lskd_kd_options_init(&kd_defaults);
      q.kd = &kd_defaults;
    }
    check_c_arguments(q.ld_student, q.ld_teacher, q.rows, q.cols, *q.kd, q.loss, q.grad_student,
                      q.ld_grad_student, q.grad_teacher, q.ld_grad_teacher);
    reduction = q.kd->reduction;
  }
  std::int64_t temperature_count = 1;
  if (q.kind == lskd_c_detail::loss_kind::kd_class_weighted && q.class_weights == nullptr) {
    invalid("'class_weights' is null; it must point to 'cols' (" + std::to_string(q.cols) +
            ") weights");
  }
  if (q.kind == lskd_c_detail::loss_kind::multi_temperature) {
    if (q.temperature_count < 1) {
      invalid("'temperature_count' is " + std::to_string(q.temperature_count) +
              "; give at least one temperature");
    }
    check_fits_index("temperature_count", q.temperature_count);
    // The loss copies the temperatures and keeps a gradient per row and temperature: a count
    // for which those doubles could not fit in the address space is a wrong argument (a
    // garbage or uninitialized count), not an allocation to attempt.
    const std::int64_t most_doubles =
        static_cast<std::int64_t>(std::numeric_limits<std::ptrdiff_t>::max() / sizeof(double));
    const std::int64_t most = most_doubles / (q.rows > 1 ? q.rows : 1);
    if (q.temperature_count > most) {
      invalid("'temperature_count' is " + std::to_string(q.temperature_count) +
              "; with 'rows' = " + std::to_string(q.rows) + " it can be at most " +
              std::to_string(most) + " (the loss keeps 'rows' x 'temperature_count' doubles)");
    }
    if (q.temperatures == nullptr) {
      invalid("'temperatures' is null; it must point to 'temperature_count' (" +
              std::to_string(q.temperature_count) + ") temperatures");
    }
    temperature_count = q.temperature_count;
  }
  if (q.grad_temperature != nullptr) {
    // The temperature gradients are written after the loss: they must not overlap it.
    const std::int64_t loss_count = reduction == LSKD_REDUCTION_NONE ? q.rows : 1;
    const auto loss_begin = reinterpret_cast<std::uintptr_t>(q.loss);
    const auto loss_end = loss_begin + static_cast<std::uintptr_t>(loss_count) * sizeof(double);
    const auto tau_begin = reinterpret_cast<std::uintptr_t>(q.grad_temperature);
    const auto tau_end =
        tau_begin + static_cast<std::uintptr_t>(temperature_count) * sizeof(double);
    if (loss_count > 0 && tau_begin < loss_end && loss_begin < tau_end) {
      invalid(std::string(q.kind == lskd_c_detail::loss_kind::multi_temperature
                              ? "'grad_temperatures'"
                              : "'grad_temperature'") +
              " overlaps 'loss'");
    }
  }
  const dispatch_choice& choice = dispatch();
  if (choice.chosen == nullptr) invalid(choice.error);
  return choice.chosen->request(q);
}

// One request, guarded.
int guarded_request(const char* function, const lskd_c_detail::request& q) noexcept {
  return translate_exceptions(function, [&q]() -> int { return run_request(q); });
}

template <class T>
constexpr lskd_c_detail::element element_of() {
  return std::is_same<T, float>::value ? lskd_c_detail::element::f32
                                       : lskd_c_detail::element::f64;
}

// The fields every request has.
template <class In, class Out>
lskd_c_detail::request make_request(lskd_c_detail::loss_kind kind, lskd_c_detail::element type,
                                    const In* student, std::int64_t ld_student,
                                    const In* teacher, std::int64_t ld_teacher, std::int64_t rows,
                                    std::int64_t cols, double* loss, Out* grad_student,
                                    std::int64_t ld_grad_student, Out* grad_teacher,
                                    std::int64_t ld_grad_teacher, double* grad_temperature) {
  lskd_c_detail::request q;
  q.kind = kind;
  q.type = type;
  q.student = student;
  q.ld_student = ld_student;
  q.teacher = teacher;
  q.ld_teacher = ld_teacher;
  q.rows = rows;
  q.cols = cols;
  q.loss = loss;
  q.grad_student = grad_student;
  q.ld_grad_student = ld_grad_student;
  q.grad_teacher = grad_teacher;
  q.ld_grad_teacher = ld_grad_teacher;
  q.grad_temperature = grad_temperature;
  return q;
}

template <class T>
int kd_weighted(const char* function, const T* student, std::int64_t ld_student,
                const T* teacher, std::int64_t ld_teacher, std::int64_t rows, std::int64_t cols,
                const lskd_kd_options* options, const T* row_weights, double normalizer,
                double* loss, T* grad_student, std::int64_t ld_grad_student, T* grad_teacher,
                std::int64_t ld_grad_teacher, double* grad_temperature) noexcept {
  lskd_c_detail::request q = make_request(
      lskd_c_detail::loss_kind::kd_weighted, element_of<T>(), student, ld_student, teacher,
      ld_teacher, rows, cols, loss, grad_student, ld_grad_student, grad_teacher, ld_grad_teacher,
      grad_temperature);
  q.kd = options;
  q.row_weights = row_weights;
  q.normalizer = normalizer;
  return guarded_request(function, q);
}

template <class T>
int dkd(const char* function, const T* student, std::int64_t ld_student, const T* teacher,
        std::int64_t ld_teacher, std::int64_t rows, std::int64_t cols,
        const std::int64_t* targets, const lskd_dkd_options* options, double* loss,
        T* grad_student, std::int64_t ld_grad_student, T* grad_teacher,
        std::int64_t ld_grad_teacher, double* grad_temperature) noexcept {
  lskd_c_detail::request q = make_request(
      lskd_c_detail::loss_kind::dkd, element_of<T>(), student, ld_student, teacher, ld_teacher,
      rows, cols, loss, grad_student, ld_grad_student, grad_teacher, ld_grad_teacher,
      grad_temperature);
  q.dkd = options;
  q.targets = targets;
  return guarded_request(function, q);
}

template <class T>
int kd_class_weighted(const char* function, const T* student, std::int64_t ld_student,
                      const T* teacher, std::int64_t ld_teacher, std::int64_t rows,
                      std::int64_t cols, const lskd_kd_options* options,
                      const double* class_weights, double* loss, T* grad_student,
                      std::int64_t ld_grad_student, T* grad_teacher,
                      std::int64_t ld_grad_teacher, double* grad_temperature) noexcept {
  lskd_c_detail::request q = make_request(
      lskd_c_detail::loss_kind::kd_class_weighted, element_of<T>(), student, ld_student, teacher,
      ld_teacher, rows, cols, loss, grad_student, ld_grad_student, grad_teacher, ld_grad_teacher,
      grad_temperature);
  q.kd = options;
  q.class_weights = class_weights;
  return guarded_request(function, q);
}

template <class T>
int multi_temperature_kd(const char* function, const T* student, std::int64_t ld_student,
                         const T* teacher, std::int64_t ld_teacher, std::int64_t rows,
                         std::int64_t cols, const double* temperatures,
                         std::int64_t temperature_count, const lskd_kd_options* options,
                         double* loss, T* grad_student, std::int64_t ld_grad_student,
                         T* grad_teacher, std::int64_t ld_grad_teacher,
                         double* grad_temperatures) noexcept {
  lskd_c_detail::request q = make_request(
      lskd_c_detail::loss_kind::multi_temperature, element_of<T>(), student, ld_student, teacher,
      ld_teacher, rows, cols, loss, grad_student, ld_grad_student, grad_teacher, ld_grad_teacher,
      grad_temperatures);
  q.kd = options;
  q.temperatures = temperatures;
  q.temperature_count = temperature_count;
  return guarded_request(function, q);
}

int kd_half(const char* function, lskd_c_detail::element type, const std::uint16_t* student,
            std::int64_t ld_student, const std::uint16_t* teacher, std::int64_t ld_teacher,
            std::int64_t rows, std::int64_t cols, const lskd_kd_options* options, double* loss,
            float* grad_student, std::int64_t ld_grad_student, float* grad_teacher,
            std::int64_t ld_grad_teacher, double* grad_temperature) noexcept {
  lskd_c_detail::request q = make_request(
      lskd_c_detail::loss_kind::kd_weighted, type, student, ld_student, teacher, ld_teacher, rows,
      cols, loss, grad_student, ld_grad_student, grad_teacher, ld_grad_teacher, grad_temperature);
  q.kd = options;
  return guarded_request(function, q);
}

}  // namespace

extern "C" {

LSKD_C_EXPORT void lskd_kd_options_init(lskd_kd_options* options) {
  if (options == nullptr) return;
  options->temperature = 2.0;
  options->standardize = 1;
  options->ddof = 1;
  options->eps = 1e-7;
  options->reduction = LSKD_REDUCTION_BATCHMEAN;
  options->scale_by_t2 = 1;
}

LSKD_C_EXPORT int lskd_kd_f32(const float* student, int64_t ld_student, const float* teacher,
                              int64_t ld_teacher, int64_t rows, int64_t cols,
                              const lskd_kd_options* options, double* loss, float* grad_student,
                              int64_t ld_grad_student, float* grad_teacher,
                              int64_t ld_grad_teacher) {
  return guarded_call<float>(
      "lskd_kd_f32", [](const kernels& k) { return k.f32; }, student, ld_student, teacher,
      ld_teacher, rows, cols, options, loss, grad_student, ld_grad_student, grad_teacher,
      ld_grad_teacher);
}

LSKD_C_EXPORT int lskd_kd_f64(const double* student, int64_t ld_student, const double* teacher,
                              int64_t ld_teacher, int64_t rows, int64_t cols,
                              const lskd_kd_options* options, double* loss, double* grad_student,
                              int64_t ld_grad_student, double* grad_teacher,
                              int64_t ld_grad_teacher) {
  return guarded_call<double>(
      "lskd_kd_f64", [](const kernels& k) { return k.f64; }, student, ld_student, teacher,
      ld_teacher, rows, cols, options, loss, grad_student, ld_grad_student, grad_teacher,
      ld_grad_teacher);
}

LSKD_C_EXPORT int lskd_kd_weighted_f32(const float* student, int64_t ld_student,
                                       const float* teacher, int64_t ld_teacher, int64_t rows,
                                       int64_t cols, const lskd_kd_options* options,
                                       const float* row_weights, double normalizer,
                                       double* loss, float* grad_student,
                                       int64_t ld_grad_student, float* grad_teacher,
                                       int64_t ld_grad_teacher, double* grad_temperature) {
  return kd_weighted("lskd_kd_weighted_f32", student, ld_student, teacher, ld_teacher, rows, cols,
                     options, row_weights, normalizer, loss, grad_student, ld_grad_student,
                     grad_teacher, ld_grad_teacher, grad_temperature);
}

LSKD_C_EXPORT int lskd_kd_weighted_f64(const double* student, int64_t ld_student,
                                       const double* teacher, int64_t ld_teacher, int64_t rows,
                                       int64_t cols, const lskd_kd_options* options,
                                       const double* row_weights, double normalizer,
                                       double* loss, double* grad_student,
                                       int64_t ld_grad_student, double* grad_teacher,
                                       int64_t ld_grad_teacher, double* grad_temperature) {
  return kd_weighted("lskd_kd_weighted_f64", student, ld_student, teacher, ld_teacher, rows, cols,
                     options, row_weights, normalizer, loss, grad_student, ld_grad_student,
                     grad_teacher, ld_grad_teacher, grad_temperature);
}

LSKD_C_EXPORT void lskd_dkd_options_init(lskd_dkd_options* options) {
  if (options == nullptr) return;
  options->temperature = 4.0;
  options->alpha = 1.0;
  options->beta = 8.0;
  options->standardize = 0;
  options->ddof = 1;
  options->eps = 1e-7;
  options->reduction = LSKD_REDUCTION_BATCHMEAN;
  options->scale_by_t2 = 1;
}

LSKD_C_EXPORT int lskd_dkd_f32(const float* student, int64_t ld_student, const float* teacher,
                               int64_t ld_teacher, int64_t rows, int64_t cols,
                               const int64_t* targets, const lskd_dkd_options* options,
                               double* loss, float* grad_student, int64_t ld_grad_student,
                               float* grad_teacher, int64_t ld_grad_teacher,
                               double* grad_temperature) {
  return dkd("lskd_dkd_f32", student, ld_student, teacher, ld_teacher, rows, cols, targets,
             options, loss, grad_student, ld_grad_student, grad_teacher, ld_grad_teacher,
             grad_temperature);
}

LSKD_C_EXPORT int lskd_dkd_f64(const double* student, int64_t ld_student, const double* teacher,
                               int64_t ld_teacher, int64_t rows, int64_t cols,
                               const int64_t* targets, const lskd_dkd_options* options,
                               double* loss, double* grad_student, int64_t ld_grad_student,
                               double* grad_teacher, int64_t ld_grad_teacher,
                               double* grad_temperature) {
  return dkd("lskd_dkd_f64", student, ld_student, teacher, ld_teacher, rows, cols, targets,
             options, loss, grad_student, ld_grad_student, grad_teacher, ld_grad_teacher,
             grad_temperature);
}

LSKD_C_EXPORT int lskd_kd_class_weighted_f32(const float* student, int64_t ld_student,
                                             const float* teacher, int64_t ld_teacher,
                                             int64_t rows, int64_t cols,
                                             const lskd_kd_options* options,
                                             const double* class_weights, double* loss,
                                             float* grad_student, int64_t ld_grad_student,
                                             float* grad_teacher, int64_t ld_grad_teacher,
                                             double* grad_temperature) {
  return kd_class_weighted("lskd_kd_class_weighted_f32", student, ld_student, teacher,
                           ld_teacher, rows, cols, options, class_weights, loss, grad_student,
                           ld_grad_student, grad_teacher, ld_grad_teacher, grad_temperature);
}

LSKD_C_EXPORT int lskd_kd_class_weighted_f64(const double* student, int64_t ld_student,
                                             const double* teacher, int64_t ld_teacher,
                                             int64_t rows, int64_t cols,
                                             const lskd_kd_options* options,
                                             const double* class_weights, double* loss,
                                             double* grad_student, int64_t ld_grad_student,
                                             double* grad_teacher, int64_t ld_grad_teacher,
                                             double* grad_temperature) {
  return kd_class_weighted("lskd_kd_class_weighted_f64", student, ld_student, teacher,
                           ld_teacher, rows, cols, options, class_weights, loss, grad_student,
                           ld_grad_student, grad_teacher, ld_grad_teacher, grad_temperature);
}

LSKD_C_EXPORT int lskd_multi_temperature_kd_f32(
    const float* student, int64_t ld_student, const float* teacher, int64_t ld_teacher,
    int64_t rows, int64_t cols, const double* temperatures, int64_t temperature_count,
    const lskd_kd_options* options, double* loss, float* grad_student, int64_t ld_grad_student,
    float* grad_teacher, int64_t ld_grad_teacher, double* grad_temperatures) {
  return multi_temperature_kd("lskd_multi_temperature_kd_f32", student, ld_student, teacher,
                              ld_teacher, rows, cols, temperatures, temperature_count, options,
                              loss, grad_student, ld_grad_student, grad_teacher, ld_grad_teacher,
                              grad_temperatures);
}

LSKD_C_EXPORT int lskd_multi_temperature_kd_f64(
    const double* student, int64_t ld_student, const double* teacher, int64_t ld_teacher,
    int64_t rows, int64_t cols, const double* temperatures, int64_t temperature_count,
    const lskd_kd_options* options, double* loss, double* grad_student, int64_t ld_grad_student,
    double* grad_teacher, int64_t ld_grad_teacher, double* grad_temperatures) {
  return multi_temperature_kd("lskd_multi_temperature_kd_f64", student, ld_student, teacher,
                              ld_teacher, rows, cols, temperatures, temperature_count, options,
                              loss, grad_student, ld_grad_student, grad_teacher, ld_grad_teacher,
                              grad_temperatures);
}

LSKD_C_EXPORT int lskd_kd_bf16(const uint16_t* student, int64_t ld_student,
                               const uint16_t* teacher, int64_t ld_teacher, int64_t rows,
                               int64_t cols, const lskd_kd_options* options, double* loss,
                               float* grad_student, int64_t ld_grad_student, float* grad_teacher,
                               int64_t ld_grad_teacher, double* grad_temperature) {
  return kd_half("lskd_kd_bf16", lskd_c_detail::element::bf16, student, ld_student, teacher,
                 ld_teacher, rows, cols, options, loss, grad_student, ld_grad_student,
                 grad_teacher, ld_grad_teacher, grad_temperature);
}

LSKD_C_EXPORT int lskd_kd_f16(const uint16_t* student, int64_t ld_student,
                              const uint16_t* teacher, int64_t ld_teacher, int64_t rows,
                              int64_t cols, const lskd_kd_options* options, double* loss,
                              float* grad_student, int64_t ld_grad_student, float* grad_teacher,
                              int64_t ld_grad_teacher, double* grad_temperature) {
  return kd_half("lskd_kd_f16", lskd_c_detail::element::f16, student, ld_student, teacher,
                 ld_teacher, rows, cols, options, loss, grad_student, ld_grad_student,
                 grad_teacher, ld_grad_teacher, grad_temperature);
}

LSKD_C_EXPORT const char* lskd_last_error(void) {
  return last_error_fallback != nullptr ? last_error_fallback : last_error.c_str();
}

LSKD_C_EXPORT const char* lskd_simd_arch(void) {
  try {
    const dispatch_choice& choice = dispatch();
    return choice.chosen != nullptr ? choice.chosen->name : "none";
  } catch (...) {
    return "none";  // the first choice ran out of memory; the next call chooses again
  }
}

LSKD_C_EXPORT const char* lskd_version(void) { return LSKD_VERSION_STRING; }

}  // extern "C"
