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
 * every loss call fails with LSKD_ERROR_INVALID_ARGUMENT and a message naming LSKD_ARCH.
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

/** Return codes of the loss functions (lskd_kd_*, lskd_dkd_*, lskd_multi_temperature_kd_*). */
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
 * lskd_kd_f32() over weighted rows, with the gradient with respect to the temperature.
 *
 * Row r enters the loss as row_weights[r] * (its loss); LSKD_REDUCTION_BATCHMEAN divides the
 * weighted sum by `normalizer` when it is > 0, else by the sum of the weights (if every weight
 * is 0 the loss is 0). With LSKD_REDUCTION_NONE, `loss` receives row_weights[r] * (row r's
 * loss) for each row. Masked classes (-inf in both the teacher's and the student's row) take
 * no part in that row's statistics, softmax or loss, and get a zero gradient.
 *
 * @param row_weights NULL (every weight 1), or `rows` values, each finite and >= 0. A row of
 *   weight 0 is masked: it is not read (not even checked for NaN), adds nothing to the loss
 *   and gets a zero gradient.
 * @param normalizer finite and >= 0; 0 divides by the sum of the weights. A value > 0 is only
 *   allowed with LSKD_REDUCTION_BATCHMEAN.
 * @param grad_temperature NULL, or 1 double that receives d(loss)/d(temperature) (of the
 *   reduced loss; with LSKD_REDUCTION_NONE of the sum of the weighted row losses), counting the
 *   temperature^2 factor and both the student's and the teacher's dependence on it. It may be
 *   the only output asked for (both gradients NULL). It must not overlap `loss` or any other
 *   buffer (logits, gradients, row weights); nor may `loss` overlap the row weights.
 *
 * The other parameters, the return value and the errors are those of lskd_kd_f32(); a bad
 * weight fails with LSKD_ERROR_INVALID_ARGUMENT and a message naming 'row_weights' and the row.
 * On error nothing is written (neither `loss`, the gradients nor `grad_temperature`).
 */
LSKD_C_EXPORT int lskd_kd_weighted_f32(const float* student, int64_t ld_student,
                                       const float* teacher, int64_t ld_teacher, int64_t rows,
                                       int64_t cols, const lskd_kd_options* options,
                                       const float* row_weights, double normalizer,
                                       double* loss, float* grad_student,
                                       int64_t ld_grad_student, float* grad_teacher,
                                       int64_t ld_grad_teacher, double* grad_temperature);

/** lskd_kd_weighted_f32() on double logits, weights and gradients. */
LSKD_C_EXPORT int lskd_kd_weighted_f64(const double* student, int64_t ld_student,
                                       const double* teacher, int64_t ld_teacher, int64_t rows,
                                       int64_t cols, const lskd_kd_options* options,
                                       const double* row_weights, double normalizer,
                                       double* loss, double* grad_student,
                                       int64_t ld_grad_student, double* grad_teacher,
                                       int64_t ld_grad_teacher, double* grad_temperature);

/**
 * Options of the DKD loss (Decoupled Knowledge Distillation, Zhao et al., CVPR 2022). Start
 * from lskd_dkd_options_init(): the boolean fields must be exactly 0 or 1.
 */
typedef struct {
  double temperature; /**< base temperature, finite and > 0; default 4 */
  double alpha;       /**< weight of the target-class term TCKD, finite and >= 0; default 1 */
  double beta;        /**< weight of the non-target term NCKD, finite and >= 0; default 8 */
  int standardize;    /**< 1: logit standardization first; 0 (default): plain DKD */
  int ddof;           /**< 1 (default, unbiased std) or 0 */
  double eps;         /**< added to the std, finite and >= 0; default 1e-7 */
  int reduction;      /**< an lskd_reduction; default LSKD_REDUCTION_BATCHMEAN */
  int scale_by_t2;    /**< 1 (default): multiply both terms by temperature^2; or 0 */
} lskd_dkd_options;

/** Writes the DKD paper's defaults (those of lskd::dkd_options) into *options; does nothing if
 * it is NULL: temperature 4, alpha 1, beta 8, no standardization, ddof 1, eps 1e-7, batchmean,
 * scaled by temperature^2. */
LSKD_C_EXPORT void lskd_dkd_options_init(lskd_dkd_options* options);

/**
 * The DKD loss between student and teacher logits given each row's true class, and optionally
 * its gradients.
 *
 * For each row, with k its target: when `standardize` is on, both rows are Z-scored as in
 * lskd_kd_f32(); then p_s = softmax(z^ / tau), p_t = softmax(v^ / tau),
 * TCKD = KL([p_t,k, 1 - p_t,k] || [p_s,k, 1 - p_s,k]), NCKD = KL(q_t || q_s) with q the softmax
 * over the classes other than k, and the row's loss is tau^2 (alpha TCKD + beta NCKD) (tau^2
 * only with `scale_by_t2`). The rows combine as `reduction` says.
 *
 * @param cols number of classes, >= 2 (with 2, NCKD is exactly 0).
 * @param targets `rows` class indices, each in [0, cols); must not be NULL when rows > 0. An
 *   index out of range fails with LSKD_ERROR_INVALID_ARGUMENT and a message naming the row.
 *   No output (loss, gradients, grad_temperature) may overlap them.
 * @param options NULL means the defaults of lskd_dkd_options_init().
 * @param grad_temperature NULL, or 1 double for d(loss)/d(temperature), as in
 *   lskd_kd_weighted_f32().
 *
 * The other parameters, the return value, in-place gradients, accuracy and the errors are
 * those of lskd_kd_f32(); a target class masked (-inf in both rows) is LSKD_ERROR_DOMAIN.
 */
LSKD_C_EXPORT int lskd_dkd_f32(const float* student, int64_t ld_student, const float* teacher,
                               int64_t ld_teacher, int64_t rows, int64_t cols,
                               const int64_t* targets, const lskd_dkd_options* options,
                               double* loss, float* grad_student, int64_t ld_grad_student,
                               float* grad_teacher, int64_t ld_grad_teacher,
                               double* grad_temperature);

/** lskd_dkd_f32() on double logits and gradients. */
LSKD_C_EXPORT int lskd_dkd_f64(const double* student, int64_t ld_student, const double* teacher,
                               int64_t ld_teacher, int64_t rows, int64_t cols,
                               const int64_t* targets, const lskd_dkd_options* options,
                               double* loss, double* grad_student, int64_t ld_grad_student,
                               double* grad_teacher, int64_t ld_grad_teacher,
                               double* grad_temperature);

/**
 * lskd_kd_f32() with per-class weights c of the Z-score statistics: mean = sum c x / W and
 * var = sum c (x - mean)^2 / W with W = sum c (all-ones weights give the unweighted statistics
 * with ddof 0).
 *
 * @param class_weights `cols` values, finite and >= 0 with a positive sum; must not be NULL.
 *   Needs options->standardize 1, options->ddof 0 and options->eps > 0 (else
 *   LSKD_ERROR_INVALID_ARGUMENT). No output (loss, gradients, grad_temperature) may overlap
 *   them.
 * @param grad_temperature NULL, or 1 double for d(loss)/d(temperature), as in
 *   lskd_kd_weighted_f32().
 *
 * The other parameters, the return value and the errors are those of lskd_kd_f32().
 */
LSKD_C_EXPORT int lskd_kd_class_weighted_f32(const float* student, int64_t ld_student,
                                             const float* teacher, int64_t ld_teacher,
                                             int64_t rows, int64_t cols,
                                             const lskd_kd_options* options,
                                             const double* class_weights, double* loss,
                                             float* grad_student, int64_t ld_grad_student,
                                             float* grad_teacher, int64_t ld_grad_teacher,
                                             double* grad_temperature);

/** lskd_kd_class_weighted_f32() on double logits and gradients. */
LSKD_C_EXPORT int lskd_kd_class_weighted_f64(const double* student, int64_t ld_student,
                                             const double* teacher, int64_t ld_teacher,
                                             int64_t rows, int64_t cols,
                                             const lskd_kd_options* options,
                                             const double* class_weights, double* loss,
                                             double* grad_student, int64_t ld_grad_student,
                                             double* grad_teacher, int64_t ld_grad_teacher,
                                             double* grad_temperature);

/**
 * Multi-temperature KD: each row's loss is the sum over the temperatures tau_i of
 * lskd_kd_f32()'s row loss at tau_i (each with its own tau_i^2 with `scale_by_t2`), with the
 * statistics of each row computed once. The rows combine as `reduction` says.
 *
 * @param temperatures `temperature_count` values, each finite and > 0; must not be NULL. No
 *   output (loss, gradients, grad_temperatures) may overlap them.
 * @param temperature_count >= 1, and small enough that `rows` x `temperature_count` doubles fit
 *   in the address space (the loss keeps a temperature gradient per row); a larger count is
 *   LSKD_ERROR_INVALID_ARGUMENT.
 * @param options options->temperature is ignored; NULL means lskd_kd_options_init()'s.
 * @param grad_temperatures NULL, or `temperature_count` doubles that receive d(loss)/d(tau_i),
 *   in the order of `temperatures`. Must not overlap `loss` or any other buffer.
 *
 * As with lskd_kd_f32(), a gradient may be exactly its own input (same pointer and leading
 * dimension; the row is kept in a per-thread copy while every temperature re-reads it); any
 * other overlap is LSKD_ERROR_INVALID_ARGUMENT. The other parameters, the return value and the
 * errors are those of lskd_kd_f32().
 */
LSKD_C_EXPORT int lskd_multi_temperature_kd_f32(
    const float* student, int64_t ld_student, const float* teacher, int64_t ld_teacher,
    int64_t rows, int64_t cols, const double* temperatures, int64_t temperature_count,
    const lskd_kd_options* options, double* loss, float* grad_student, int64_t ld_grad_student,
    float* grad_teacher, int64_t ld_grad_teacher, double* grad_temperatures);

/** lskd_multi_temperature_kd_f32() on double logits and gradients. */
LSKD_C_EXPORT int lskd_multi_temperature_kd_f64(
    const double* student, int64_t ld_student, const double* teacher, int64_t ld_teacher,
    int64_t rows, int64_t cols, const double* temperatures, int64_t temperature_count,
    const lskd_kd_options* options, double* loss, double* grad_student, int64_t ld_grad_student,
    double* grad_teacher, int64_t ld_grad_teacher, double* grad_temperatures);

/**
 * lskd_kd_f32() on 16-bit logits given as raw bits: bfloat16 (the upper half of an IEEE
 * float32) for lskd_kd_bf16(), IEEE 754 binary16 for lskd_kd_f16(). Each row is widened
 * exactly to float as it is read, and the float path runs on it: the loss and the gradients
 * (written as float, with leading dimensions in floats) are exactly those of lskd_kd_f32() on
 * the converted values. No gradient can be in place (the types differ): a float gradient
 * must not overlap the logits.
 *
 * @param grad_temperature NULL, or 1 double for d(loss)/d(temperature), as in
 *   lskd_kd_weighted_f32().
 *
 * The other parameters, the return value and the errors are those of lskd_kd_f32().
 */
LSKD_C_EXPORT int lskd_kd_bf16(const uint16_t* student, int64_t ld_student,
                               const uint16_t* teacher, int64_t ld_teacher, int64_t rows,
                               int64_t cols, const lskd_kd_options* options, double* loss,
                               float* grad_student, int64_t ld_grad_student, float* grad_teacher,
                               int64_t ld_grad_teacher, double* grad_temperature);

/** lskd_kd_bf16() on IEEE half-precision (binary16) logits. */
LSKD_C_EXPORT int lskd_kd_f16(const uint16_t* student, int64_t ld_student,
                              const uint16_t* teacher, int64_t ld_teacher, int64_t rows,
                              int64_t cols, const lskd_kd_options* options, double* loss,
                              float* grad_student, int64_t ld_grad_student, float* grad_teacher,
                              int64_t ld_grad_teacher, double* grad_temperature);

/**
 * The message of this thread's last loss call (lskd_kd_*, lskd_dkd_*,
 * lskd_multi_temperature_kd_*) if it failed, or "" if it succeeded or none
 * was made. Each loss call resets it. The pointer stays valid until this thread's next loss
 * call.
 */
LSKD_C_EXPORT const char* lskd_last_error(void);

/**
 * The instruction set the loss functions run on: "avx512f", "fma3+avx2", "sse2" or
 * "scalar"; "none" when LSKD_ARCH names one that cannot be used. Chosen once per process.
 */
LSKD_C_EXPORT const char* lskd_simd_arch(void);

/** The version of the library, e.g. "0.1.0". */
LSKD_C_EXPORT const char* lskd_version(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LSKD_C_API_H */
