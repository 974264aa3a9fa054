/* SPDX-License-Identifier: MIT */
#ifndef LSKD_C_API_H
#define LSKD_C_API_H

/**
 * @file
 * The C ABI of lskd (liblskd_c): the knowledge-distillation loss with logit standardization
 * (Sun et al., CVPR 2024) or classic KD, and its exact gradients, on raw row-major buffers.
 *
 * The library picks the best instruction set the CPU has at first use (avx512f, then
 * fma3+avx2, then sse2, then the portable scalar path); see lskd_simd_arch(). The environment
 * variable LSKD_ARCH, read once at that first use, may force a lower one: "scalar", "sse2",
 * "avx2" or "avx512f" ("" or "auto" choose automatically). If it names an unknown instruction
 * set or one this CPU lacks, nothing falls back silently: lskd_simd_arch() returns "none" and
 * every lskd_kd_* call fails with LSKD_ERROR_INVALID_ARGUMENT and a message naming LSKD_ARCH.
 *
 * Every call runs on the calling thread (no thread pool); calls from different threads may run
 * at the same time. Results do not depend on the instruction set beyond rounding.
 *
 * Usable from C and C++. No C++ exception crosses this interface.
 */

#include <stdint.h>

#if defined(_WIN32) && !defined(LSKD_C_STATIC)
#if defined(LSKD_C_BUILDING)
#define LSKD_C_EXPORT __declspec(dllexport)
#else
#define LSKD_C_EXPORT __declspec(dllimport)
#endif
#elif defined(__GNUC__) || defined(__clang__)
#define LSKD_C_EXPORT __attribute__((visibility("default")))
#else
#define LSKD_C_EXPORT
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** Return codes of the lskd_kd_* functions. */
#define LSKD_OK 0                     /**< success */
#define LSKD_ERROR_INVALID_ARGUMENT 1 /**< bad pointer, shape, leading dimension or option */
#define LSKD_ERROR_DOMAIN 2           /**< bad data: NaN or infinite logit, constant row with eps 0 */
#define LSKD_ERROR_OUT_OF_MEMORY 3    /**< an allocation failed */
#define LSKD_ERROR_INTERNAL 4         /**< anything else (a bug: please report the message) */

/** How the per-row losses of a batch become the loss. */
typedef enum {
  LSKD_REDUCTION_NONE = 0,     /**< no reduction: one loss per row */
  LSKD_REDUCTION_SUM = 1,      /**< the sum over rows */
  LSKD_REDUCTION_BATCHMEAN = 2 /**< the sum over rows divided by the number of rows */
} lskd_reduction;

/**
 * Options of the loss. Start from lskd_kd_options_init() and change what you need: the
 * boolean fields must be exactly 0 or 1, so a struct left uninitialized is refused rather than
 * silently read.
 */
typedef struct {
  double temperature; /**< base temperature, finite and > 0; default 2 */
  int standardize;    /**< 1: logit standardization (default); 0: classic KD */
  int ddof;           /**< 1 (default, unbiased std) or 0 */
  double eps;         /**< added to the std, finite and >= 0; default 1e-7 */
  int reduction;      /**< an lskd_reduction; default LSKD_REDUCTION_BATCHMEAN */
  int scale_by_t2;    /**< 1 (default): multiply the loss by temperature^2; or 0 */
} lskd_kd_options;

/** Writes the defaults (those of Sun et al.) into *options; does nothing if it is NULL. */
LSKD_C_EXPORT void lskd_kd_options_init(lskd_kd_options* options);

/**
 * The KD loss between student and teacher logits, and optionally its gradients.
 *
 * For each row, with z the student's logits and v the teacher's: when `standardize` is on,
 * each is Z-scored with its own row's mean and std plus eps; then p_s = softmax(z^ / tau),
 * p_t = softmax(v^ / tau), and the row's loss is tau^2 KL(p_t || p_s) (tau^2 only with
 * `scale_by_t2`). The rows combine as `reduction` says.
 *
 * @param student, teacher row-major rows x cols logits; element (r, c) of student is
 *   student[r * ld_student + c]. Each leading dimension (in elements) must be >= cols.
 * @param rows number of rows (samples), >= 0; 0 gives loss 0 and writes no gradient.
 * @param cols number of columns (classes), >= 1 (>= 2 with standardization and ddof 1).
 * @param options the options; NULL means the defaults of lskd_kd_options_init().
 * @param loss receives 1 value, or `rows` values with LSKD_REDUCTION_NONE; must not be NULL.
 * @param grad_student, grad_teacher may be NULL (then their leading dimensions are ignored);
 *   otherwise rows x cols with their own leading dimensions, and receive the gradient of the
 *   reduced loss (with LSKD_REDUCTION_NONE, of the sum of the per-row losses). A gradient may
 *   be exactly its own input (same pointer and leading dimension) to overwrite it; any other
 *   overlap between buffers is an error.
 * @return LSKD_OK (0) on success. Otherwise a nonzero LSKD_ERROR_* code, nothing is written,
 *   and lskd_last_error() describes the failure (naming the argument, or the row and whether
 *   it is the student's or the teacher's).
 *
 * Accuracy: in float, about 1e-5 relative to the largest gradient entry of a row compared with
 * a float64 computation; in double, about 1e-13. The loss is accumulated in double.
 */
LSKD_C_EXPORT int lskd_kd_f32(const float* student, int64_t ld_student, const float* teacher,
                              int64_t ld_teacher, int64_t rows, int64_t cols,
                              const lskd_kd_options* options, double* loss, float* grad_student,
                              int64_t ld_grad_student, float* grad_teacher,
                              int64_t ld_grad_teacher);

/** lskd_kd_f32() on double logits and gradients. */
LSKD_C_EXPORT int lskd_kd_f64(const double* student, int64_t ld_student, const double* teacher,
                              int64_t ld_teacher, int64_t rows, int64_t cols,
                              const lskd_kd_options* options, double* loss, double* grad_student,
                              int64_t ld_grad_student, double* grad_teacher,
                              int64_t ld_grad_teacher);

/**
 * The message of this thread's last lskd_kd_* call if it failed, or "" if it succeeded or none
 * was made. Each lskd_kd_* call resets it. The pointer stays valid until this thread's next
 * lskd_kd_* call.
 */
LSKD_C_EXPORT const char* lskd_last_error(void);

/**
 * The instruction set the lskd_kd_* functions run on: "avx512f", "fma3+avx2", "sse2" or
 * "scalar"; "none" when LSKD_ARCH names one that cannot be used. Chosen once per process.
 */
LSKD_C_EXPORT const char* lskd_simd_arch(void);

/** The version of the library, e.g. "0.1.0". */
LSKD_C_EXPORT const char* lskd_version(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LSKD_C_API_H */
