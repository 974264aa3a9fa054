// libFuzzer harness: drives lskd::kd_loss through its raw-buffer API with random shapes,
// strides, options, row weights and values (including NaN, infinities, masked classes,
// subnormals and 1e38), differentially:
//   - the SIMD path and the scalar path of the same type must both succeed and agree closely,
//     or both throw the same exception type;
//   - float and double on the same (float-representable) inputs must agree within a
//     tolerance scaled to the row, when the inputs are well conditioned for float;
//   - forward() and forward_backward() must give the same loss (to the last bits);
//   - nothing outside the views may change, and no result may be NaN.
// Any violation aborts, which libFuzzer records as a crash with its input.
#include <lskd/lskd.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

/// Reads the fuzzer's bytes in order; past the end it yields zeros.
class byte_reader {
 public:
  byte_reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::uint8_t byte() { return position_ < size_ ? data_[position_++] : 0; }
  std::uint16_t word() { return static_cast<std::uint16_t>(byte() | (byte() << 8)); }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t position_ = 0;
};

[[noreturn]] void fail(const char* what, double expected, double actual) {
  std::fprintf(stderr, "kd_fuzz: %s (expected %.17g, actual %.17g)\n", what, expected, actual);
  std::abort();
}

/// One logit from two bytes: mostly moderate values, sometimes an edge.
float logit_from(byte_reader& in, float offset, float scale) {
  const std::uint16_t w = in.word();
  switch (w % 64) {
    case 0: return std::numeric_limits<float>::quiet_NaN();
    case 1: return std::numeric_limits<float>::infinity();
    case 2: return -std::numeric_limits<float>::infinity();
    case 3: return 1e38f;
    case 4: return -1e38f;
    case 5: return 1e-40f;  // subnormal
    default: break;
  }
  return offset + scale * (static_cast<float>(w >> 6) / 512.0f - 1.0f);
}

const double temperatures[] = {0.05, 0.5, 1.0, 2.0, 4.0, 20.0, 0.0, -1.0};
const double epsilons[] = {1e-7, 0.0, 1e-2, -1.0};
const lskd::reduction reductions[] = {lskd::reduction::batchmean, lskd::reduction::sum,
                                      lskd::reduction::none};

/// What one call produced: the exception kind, or the loss, row losses and gradients.
template <class T>
struct outcome {
  int error = 0;  // 0 none, 1 invalid_argument, 2 domain_error, 3 other
  std::string message;
  double loss = 0.0;
  std::vector<double> row_losses;
  std::vector<T> grad_student;
  std::vector<T> grad_teacher;
};

struct case_layout {
  lskd::index rows, cols, ld_student, ld_teacher, ld_grad, offset;
  bool teacher_grad, weighted, in_place;
};

template <class T, class Arch>
outcome<T> run_case(const lskd::kd_options& options, const case_layout& shape,
                    const std::vector<float>& student_values,
                    const std::vector<float>& teacher_values, const std::vector<float>& weights) {
  outcome<T> result;
  const T sentinel = static_cast<T>(-12345.0);
  const auto size_of = [&](lskd::index ld) {
    return static_cast<std::size_t>(shape.offset + shape.rows * ld + 1);
  };
  std::vector<T> student(size_of(shape.ld_student), sentinel);
  std::vector<T> teacher(size_of(shape.ld_teacher), sentinel);
  for (lskd::index r = 0; r < shape.rows; ++r) {
    for (lskd::index c = 0; c < shape.cols; ++c) {
      const auto k = static_cast<std::size_t>(r * shape.cols + c);
      student[static_cast<std::size_t>(shape.offset + r * shape.ld_student + c)] = student_values[k];
      teacher[static_cast<std::size_t>(shape.offset + r * shape.ld_teacher + c)] = teacher_values[k];
    }
  }
  const std::vector<T> student_before = student;
  std::vector<T> grad_student(size_of(shape.ld_grad), sentinel);
  std::vector<T> grad_teacher(size_of(shape.ld_grad), sentinel);
  std::vector<double> row_losses(static_cast<std::size_t>(shape.rows) + 1, -777.0);
  std::vector<T> typed_weights(weights.begin(), weights.end());

  const lskd::matrix_view<const T> s(student.data() + shape.offset, shape.rows, shape.cols,
                                     shape.ld_student);
  const lskd::matrix_view<const T> t(teacher.data() + shape.offset, shape.rows, shape.cols,
                                     shape.ld_teacher);
  lskd::matrix_view<T> gs(grad_student.data() + shape.offset, shape.rows, shape.cols, shape.ld_grad);
  if (shape.in_place) gs = lskd::matrix_view<T>(student.data() + shape.offset, shape.rows,
                                                shape.cols, shape.ld_student);
  lskd::matrix_view<T> gt;
  if (shape.teacher_grad) {
    gt = lskd::matrix_view<T>(grad_teacher.data() + shape.offset, shape.rows, shape.cols,
                              shape.ld_grad);
  }
  lskd::row_weights<T> row_weights;
  if (shape.weighted) row_weights.weights = typed_weights.data();

  double forward_loss = 0.0;
  try {
    const lskd::kd_loss<T, Arch> kd(options);
    forward_loss = kd.forward(s, t, row_weights, row_losses.data());
    result.loss = kd.forward_backward(s, t, row_weights, gs, gt, row_losses.data());
  } catch (const std::invalid_argument& error) {
    result.error = 1;
    result.message = error.what();
  } catch (const std::domain_error& error) {
    result.error = 2;
    result.message = error.what();
  } catch (...) {
    result.error = 3;
  }

  if (result.error != 0) {
    // Nothing may have been written.
    if (std::memcmp(student.data(), student_before.data(), student.size() * sizeof(T)) != 0) {
      fail("an error left the student buffer changed", 0, 1);
    }
    for (T value : grad_student) if (value != sentinel) fail("an error wrote grad_student", 0, 1);
    for (T value : grad_teacher) if (value != sentinel) fail("an error wrote grad_teacher", 0, 1);
    for (double value : row_losses) if (value != -777.0) fail("an error wrote row_losses", 0, 1);
    return result;
  }

  // Same sums, but the compiler may contract a * b + c into an FMA in one instantiation and
  // not the other (GCC does by default), so the last bits may differ.
  if (!(std::fabs(forward_loss - result.loss) <= 1e-12 * std::max(1.0, std::fabs(result.loss)))) {
    fail("forward and forward_backward disagree", forward_loss, result.loss);
  }
  if (std::isnan(result.loss)) fail("NaN loss", 0, result.loss);
  if (row_losses[static_cast<std::size_t>(shape.rows)] != -777.0) fail("row_losses overrun", 0, 1);
  result.row_losses.assign(row_losses.begin(), row_losses.begin() + shape.rows);

  // Gradients: read back, check padding untouched and values not NaN.
  const auto collect = [&](const lskd::matrix_view<T>& view, const std::vector<T>& storage,
                           const std::vector<T>* original, std::vector<T>& out) {
    out.clear();
    for (std::size_t k = 0; k < storage.size(); ++k) {
      const auto position = static_cast<lskd::index>(k) - shape.offset;
      const lskd::index row = position >= 0 ? position / view.ld() : -1;
      const lskd::index column = position >= 0 ? position % view.ld() : -1;
      const bool inside = row >= 0 && row < shape.rows && column < shape.cols;
      const T expected_outside = original != nullptr ? (*original)[k] : sentinel;
      if (!inside) {
        const bool same = storage[k] == expected_outside ||
                          (std::isnan(storage[k]) && std::isnan(expected_outside));
        if (!same) fail("a write outside the gradient view", 0, static_cast<double>(k));
      }
    }
    for (lskd::index r = 0; r < shape.rows; ++r) {
      for (lskd::index c = 0; c < shape.cols; ++c) {
        const T value = view.row(r)[c];
        if (std::isnan(value)) fail("NaN gradient", 0, static_cast<double>(r));
        out.push_back(value);
      }
    }
  };
  if (shape.in_place) {
    collect(gs, student, &student_before, result.grad_student);
  } else {
    collect(gs, grad_student, nullptr, result.grad_student);
  }
  if (shape.teacher_grad) collect(gt, grad_teacher, nullptr, result.grad_teacher);
  return result;
}

/// |a - b| <= tolerance * scale, element by element, scaled per row by its largest entry or
/// by `floors[row]`, the size a gradient entry of that row can reach (whichever is larger):
/// where every entry is rounding noise around 0, the noise is what is compared.
template <class A, class B>
void expect_close(const char* what, const std::vector<A>& a, const std::vector<B>& b,
                  lskd::index cols, double tolerance, const std::vector<double>& floors) {
  if (a.size() != b.size()) fail(what, static_cast<double>(a.size()), static_cast<double>(b.size()));
  for (std::size_t begin = 0; begin < a.size(); begin += static_cast<std::size_t>(cols)) {
    double scale = floors[begin / static_cast<std::size_t>(cols)];
    for (std::size_t k = begin; k < begin + static_cast<std::size_t>(cols); ++k) {
      scale = std::max(scale, std::fabs(static_cast<double>(b[k])));
    }
    for (std::size_t k = begin; k < begin + static_cast<std::size_t>(cols); ++k) {
      const double difference = std::fabs(static_cast<double>(a[k]) - static_cast<double>(b[k]));
      if (!(difference <= tolerance * scale)) fail(what, static_cast<double>(b[k]), static_cast<double>(a[k]));
    }
  }
}

void expect_loss_close(const char* what, double a, double b, double tolerance) {
  if (!(std::fabs(a - b) <= tolerance * std::max(1.0, std::fabs(b)))) fail(what, b, a);
}

/// The finite range of each row, max - min (0 for a row with no finite value).
std::vector<double> row_ranges(const std::vector<float>& values, lskd::index rows, lskd::index cols) {
  std::vector<double> ranges(static_cast<std::size_t>(rows), 0.0);
  for (lskd::index r = 0; r < rows; ++r) {
    double low = std::numeric_limits<double>::infinity(), high = -low;
    for (lskd::index c = 0; c < cols; ++c) {
      const double v = values[static_cast<std::size_t>(r * cols + c)];
      if (std::isfinite(v)) low = std::min(low, v), high = std::max(high, v);
    }
    if (high >= low) ranges[static_cast<std::size_t>(r)] = high - low;
  }
  return ranges;
}

/// Per row, the size of the terms that cancel into a gradient entry, which is what rounding
/// errors scale with: (f / tau) / (std + eps) for a standardized student row (its softmax
/// gradient is at most f / tau), f / tau for classic KD. The teacher's entries are
/// p_t (d - KL) with d = log p_t - log p_s, which cancels terms as large as the rows' exponent
/// ranges: those multiply its scale (range / tau in classic KD, ~2 sqrt(C) / tau standardized).
std::vector<double> gradient_scales(const lskd::kd_options& options, const std::vector<float>& values,
                                    const std::vector<float>& other, lskd::index rows,
                                    lskd::index cols, bool teacher) {
  const double tau = options.temperature;
  const double factor = (options.scale_by_t2 ? tau * tau : 1.0) / tau;
  std::vector<double> scales(static_cast<std::size_t>(rows), factor);
  const auto ranges = row_ranges(values, rows, cols);
  const auto other_ranges = row_ranges(other, rows, cols);
  for (lskd::index r = 0; r < rows; ++r) {
    const auto i = static_cast<std::size_t>(r);
    double exponent_span = (ranges[i] + other_ranges[i]) / tau;
    if (options.standardize) {
      exponent_span = 2.0 * std::sqrt(static_cast<double>(cols)) / tau;
      // A plain two-pass std over the finite entries (masked classes and rows excluded): it
      // only sets a tolerance.
      double sum = 0.0, count = 0.0, squares = 0.0;
      for (lskd::index c = 0; c < cols; ++c) {
        const double v = values[static_cast<std::size_t>(r * cols + c)];
        if (std::isfinite(v)) sum += v, count += 1.0;
      }
      const double mean = count > 0.0 ? sum / count : 0.0;
      for (lskd::index c = 0; c < cols; ++c) {
        const double v = values[static_cast<std::size_t>(r * cols + c)];
        if (std::isfinite(v)) squares += (v - mean) * (v - mean);
      }
      const double std = count > options.ddof ? std::sqrt(squares / (count - options.ddof)) : 0.0;
      scales[i] = factor / (std + options.eps);
    }
    if (teacher) scales[i] *= 1.0 + exponent_span;
  }
  return scales;
}

/// float is only compared with double on rows where float has digits to spare: every
/// row's spread is well above its float resolution and no edge value is present.
bool well_conditioned(const std::vector<float>& values, lskd::index rows, lskd::index cols) {
  for (lskd::index r = 0; r < rows; ++r) {
    float low = values[static_cast<std::size_t>(r * cols)], high = low;
    for (lskd::index c = 0; c < cols; ++c) {
      const float v = values[static_cast<std::size_t>(r * cols + c)];
      if (!std::isfinite(v) || std::fabs(v) > 1e6f || (v != 0.0f && std::fabs(v) < 1e-30f)) {
        return false;
      }
      low = std::min(low, v);
      high = std::max(high, v);
    }
    const float magnitude = std::max(std::fabs(low), std::fabs(high));
    if (high - low != 0.0f && high - low < 1e-3f * magnitude) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  byte_reader in(data, size);
  case_layout shape{};
  shape.rows = in.byte() % 6;
  shape.cols = 1 + in.byte() % 70;
  shape.ld_student = shape.cols + in.byte() % 4;
  shape.ld_teacher = shape.cols + in.byte() % 4;
  shape.ld_grad = shape.cols + in.byte() % 4;
  shape.offset = in.byte() % 4;
  const std::uint8_t flags = in.byte();
  shape.teacher_grad = flags & 1;
  shape.weighted = flags & 2;
  shape.in_place = (flags & 4) && shape.ld_grad == shape.ld_student;

  lskd::kd_options options;
  options.standardize = !(flags & 8);
  options.ddof = (flags & 16) ? 0 : 1;
  options.scale_by_t2 = !(flags & 32);
  const std::uint8_t choice = in.byte();
  options.temperature = temperatures[choice % 8];
  options.eps = epsilons[(choice >> 3) % 4];
  options.reduction = reductions[(choice >> 5) % 3];

  const float offset = static_cast<float>(static_cast<int>(in.byte()) - 128) *
                       ((flags & 64) ? 100.0f : 1.0f);
  const float scale = std::ldexp(1.0f, static_cast<int>(in.byte() % 40) - 20);
  const std::size_t count = static_cast<std::size_t>(shape.rows * shape.cols);
  std::vector<float> student(count), teacher(count), weights(static_cast<std::size_t>(shape.rows));
  for (std::size_t k = 0; k < count; ++k) student[k] = logit_from(in, offset, scale);
  for (std::size_t k = 0; k < count; ++k) teacher[k] = logit_from(in, offset, scale);
  // Masked classes: copy the student's -inf into the teacher now and then.
  for (std::size_t k = 0; k < count; ++k) {
    if (student[k] == -std::numeric_limits<float>::infinity() && (in.byte() & 1)) teacher[k] = student[k];
  }
  for (auto& w : weights) {
    const std::uint8_t b = in.byte();
    w = b % 4 == 0 ? 0.0f : (b % 4 == 1 ? 0.5f : 1.0f);
  }

  using simd = lskd::simd::default_arch;
  using scalar = lskd::simd::scalar;
  const auto fast = run_case<float, simd>(options, shape, student, teacher, weights);
  const auto plain = run_case<float, scalar>(options, shape, student, teacher, weights);
  const auto wide = run_case<double, simd>(options, shape, student, teacher, weights);

  if (fast.error != plain.error) fail("SIMD and scalar float disagree on failing", plain.error, fast.error);
  if (fast.error != wide.error) fail("float and double disagree on failing", wide.error, fast.error);
  if (fast.message != plain.message) fail("SIMD and scalar give different messages", 0, 1);
  if (fast.error != 0) return 0;

  const auto student_scales = gradient_scales(options, student, teacher, shape.rows, shape.cols, false);
  const auto teacher_scales = gradient_scales(options, teacher, student, shape.rows, shape.cols, true);
  expect_loss_close("SIMD vs scalar loss", fast.loss, plain.loss, 1e-4);
  expect_close("SIMD vs scalar grad_student", fast.grad_student, plain.grad_student, shape.cols, 1e-4,
               student_scales);
  expect_close("SIMD vs scalar grad_teacher", fast.grad_teacher, plain.grad_teacher, shape.cols, 1e-4,
               teacher_scales);
  if (well_conditioned(student, shape.rows, shape.cols) &&
      well_conditioned(teacher, shape.rows, shape.cols) && options.temperature >= 0.5) {
    expect_loss_close("float vs double loss", fast.loss, wide.loss, 1e-3);
    expect_close("float vs double grad_student", fast.grad_student, wide.grad_student, shape.cols, 1e-3,
                 student_scales);
    expect_close("float vs double grad_teacher", fast.grad_teacher, wide.grad_teacher, shape.cols, 1e-3,
                 teacher_scales);
  }
  return 0;
}
