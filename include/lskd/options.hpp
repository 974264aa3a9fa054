// SPDX-License-Identifier: MIT
#pragma once

/// @file
/// Reductions and option structs, with the defaults of Sun et al. (CVPR 2024).

#include <lskd/config.hpp>

#include <cstddef>
#include <functional>
#include <vector>

LSKD_NAMESPACE_BEGIN

/// How the per-row losses of a batch become one number.
///
/// - `none`: no reduction; per-row losses go to a caller buffer and the gradient is that of
///   their sum.
/// - `sum`: the sum over rows.
/// - `batchmean`: the sum over rows divided by the number of rows (not by rows x classes).
enum class reduction { none, sum, batchmean };

/// Returns "none", "sum" or "batchmean".
inline const char* to_string(reduction value) noexcept {
  switch (value) {
    case reduction::none: return "none";
    case reduction::sum: return "sum";
    case reduction::batchmean: return "batchmean";
  }
  return "unknown";
}

/// Options of the knowledge-distillation loss.
///
/// The defaults reproduce the logit-standardized KD of Sun et al.: Z-score each row with its
/// unbiased std plus 1e-7, base temperature 2, loss multiplied by temperature^2, averaged
/// over rows. `standardize = false` gives classic (Hinton) KD with the same reductions.
struct kd_options {
  double temperature = 2.0;   ///< base temperature tau, finite and > 0
  bool standardize = true;    ///< Z-score each row of teacher and student before the softmax
  int ddof = 1;               ///< std divides by classes - ddof; 1 (unbiased) or 0
  double eps = 1e-7;          ///< added to the std (not inside the square root); finite, >= 0
  lskd::reduction reduction = lskd::reduction::batchmean;  ///< how rows are combined
  bool scale_by_t2 = true;    ///< multiply the loss by temperature^2
};

/// Options of decoupled knowledge distillation (DKD, Zhao et al., CVPR 2022), optionally on
/// standardized logits.
///
/// The defaults are the DKD paper's CIFAR-100 setting: alpha = 1, beta = 8, temperature 4,
/// plain logits. For DKD with logit standardization, Sun et al. (CVPR 2024) set
/// `standardize = true`, a base temperature of 2, and multiply alpha and beta by their KD
/// weight (e.g. 9: alpha = 9, beta = 72); see docs/beyond.md.
struct dkd_options {
  double temperature = 4.0;   ///< base temperature tau, finite and > 0
  double alpha = 1.0;         ///< weight of the target-class term (TCKD); finite, >= 0
  double beta = 8.0;          ///< weight of the non-target term (NCKD); finite, >= 0
  bool standardize = false;   ///< Z-score each row of teacher and student before the softmax
  int ddof = 1;               ///< std divides by classes - ddof; 1 (unbiased) or 0
  double eps = 1e-7;          ///< added to the std (not inside the square root); finite, >= 0
  lskd::reduction reduction = lskd::reduction::batchmean;  ///< how rows are combined
  bool scale_by_t2 = true;    ///< multiply both terms by temperature^2
};

/// Options of multi-temperature KD: the sum of KD losses over several base temperatures, each
/// scaled by its own temperature^2 (the instance-level loss of multi-level logit distillation).
/// The other fields mean what they mean in kd_options.
struct multi_temperature_kd_options {
  std::vector<double> temperatures{2.0, 3.0, 4.0, 5.0, 6.0};  ///< each finite and > 0; not empty
  bool standardize = true;    ///< Z-score each row of teacher and student before the softmax
  int ddof = 1;               ///< std divides by classes - ddof; 1 (unbiased) or 0
  double eps = 1e-7;          ///< added to the std; finite, >= 0
  lskd::reduction reduction = lskd::reduction::batchmean;  ///< how rows are combined
  bool scale_by_t2 = true;    ///< multiply each temperature's term by its temperature^2
};

/// Options of the per-row Z-score: y = (x - mean) / ((std + eps) * temperature).
struct standardize_options {
  double temperature = 1.0;   ///< divides the Z-score; finite and > 0
  int ddof = 1;               ///< std divides by classes - ddof; 1 or 0
  double eps = 1e-7;          ///< added to the std; finite, >= 0
  /// Per-class weights c of the statistics (the weighted Z-score), one per class, finite and
  /// >= 0 with a positive sum; empty: unweighted. mean = sum c x / W, var = sum c (x - mean)^2
  /// / W with W = sum c, so all-ones weights give ddof = 0; needs ddof = 0 and eps > 0.
  std::vector<double> class_weights;
};

/// Options of the per-row statistics.
struct row_stats_options {
  int ddof = 1;               ///< std divides by classes - ddof; 1 or 0
  /// Per-class weights of the mean and variance, as in standardize_options (needs ddof = 0).
  std::vector<double> class_weights;
};

/// Options of softmax and log-softmax: softmax(x / temperature) along each row.
struct softmax_options {
  double temperature = 1.0;   ///< finite and > 0
};

/// Per-row weights of a batch, for padding rows, ignore-index masks or weighted samples.
///
/// Row r's loss enters the reduction multiplied by weights[r]; a row of weight 0 is masked:
/// it is not read (a padded row of NaN or -inf is fine), adds nothing and gets a zero
/// gradient. batchmean divides by the sum of the weights, or by `normalizer` when it is > 0
/// (a count that spans several calls or processes: gradient accumulation, data parallelism).
/// A batch whose weights are all 0 gives loss 0 and zero gradients.
template <class T>
struct row_weights {
  const T* weights = nullptr;  ///< `rows` values, finite and >= 0; null means all 1
  double normalizer = 0.0;     ///< > 0: what batchmean divides by; finite
};

/// How a functor spreads the rows of a batch over threads. Whatever the setting, results are
/// bitwise identical: rows are independent and are combined in index order afterwards.
struct execution {
  /// OpenMP threads, when lskd is compiled with OpenMP (-fopenmp); 1 runs on the calling
  /// thread; 0 takes OpenMP's default. Ignored without OpenMP.
  int threads = 1;

  /// A caller's parallel-for, used instead of OpenMP when set: it must call
  /// body(begin, end) for ranges that together cover [0, count) exactly once each, on any
  /// threads, and return when all have finished (e.g. a wrapper around a trainer's own pool).
  std::function<void(std::ptrdiff_t count,
                     const std::function<void(std::ptrdiff_t begin, std::ptrdiff_t end)>& body)>
      parallel_for;
};

LSKD_NAMESPACE_END
