// Fashion-MNIST knowledge distillation with lskd.
//
// Trains a large teacher MLP with cross-entropy, then trains a small student MLP five ways from
// the same initializations and batch orders: cross-entropy only ("CE"), classic Hinton KD ("KD",
// tau = 4), logit-standardized KD ("KD+LS", Sun et al., CVPR 2024, base tau = 2), decoupled KD
// ("DKD", Zhao et al., CVPR 2022) and DKD on standardized logits ("DKD+LS"). The distillation
// losses and their gradients w.r.t. the student logits come from lskd::kd_loss and
// lskd::dkd_loss; the networks are plain Eigen code. A Markdown table at the end compares test
// accuracies over several seeds.

#include <lskd/lskd.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "idx_reader.hpp"
#include "mlp.hpp"
#include "random.hpp"

namespace fmd {

// ------------------------------------------------------------------------------------------------
// Command line

/// Everything the command line can set.
struct config {
  int epochs_teacher = 10;
  int epochs_student = 15;
  int seeds = 3;
  std::vector<int> teacher_hidden{1024, 1024};
  std::vector<int> student_hidden{32};
  int train_size = 60000;
  int batch_size = 128;
  double lr = 0.05;
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  int threads = 2;
};

constexpr double sgd_momentum = 0.9;
/// Networks with fewer parameters than this train on one thread whatever --threads says: their
/// matrix products are too small to gain from threads, and Eigen's threads busy-wait for each
/// other, which on a busy machine made 784-32-10 student training about 16 times slower.
constexpr Eigen::Index min_threaded_parameters = 1000000;
constexpr std::uint64_t teacher_seed = 20240617;
constexpr int image_pixels = 28 * 28;
constexpr int class_count = 10;

/// A command-line mistake; main() prints it with a pointer to --help.
class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

void print_usage(std::ostream& out, const config& defaults) {
  out << "Usage: fashion_mnist_distill [flags]\n"
         "\n"
         "Trains a teacher MLP on Fashion-MNIST, then a small student five ways (CE, classic\n"
         "KD, logit-standardized KD, DKD, DKD on standardized logits) over several seeds, and\n"
         "prints a Markdown results table.\n"
         "\n"
         "Flags (each takes a value, as '--flag VALUE' or '--flag=VALUE'):\n"
         "  --epochs-teacher N   teacher training epochs (default "
      << defaults.epochs_teacher << ")\n"
      << "  --epochs-student N   epochs for every student run (default " << defaults.epochs_student
      << ")\n"
      << "  --seeds N            student seeds per method (default " << defaults.seeds << ")\n"
      << "  --teacher-hidden A,B teacher hidden widths (default 1024,1024)\n"
      << "  --student-hidden H   student hidden width(s), e.g. 32 or 64,32 (default 32)\n"
      << "  --train-size N       use the first N of the 60000 training images (default all)\n"
      << "  --batch-size N       mini-batch size (default " << defaults.batch_size << ")\n"
      << "  --lr X               peak SGD learning rate, cosine-decayed (default " << defaults.lr
      << ")\n"
      << "  --data DIR           folder with the four *-ubyte.gz files\n"
      << "                       (default " << defaults.data_dir << ")\n"
      << "  --threads N          threads for Eigen's matrix products in networks of 1M or\n"
      << "                       more parameters (the teacher); smaller ones use 1 (default "
      << defaults.threads << ")\n"
      << "  --help               print this text and exit\n";
}

/// Parses a whole decimal integer in [low, high].
int parse_int(const std::string& flag, const std::string& text, long low, long high) {
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE || value < low || value > high) {
    throw usage_error(flag + " expects a whole number in " + std::to_string(low) + ".." +
                      std::to_string(high) + ", got '" + text + "'");
  }
  return static_cast<int>(value);
}

/// Parses a finite number in (0, high].
double parse_positive(const std::string& flag, const std::string& text, double high) {
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(value) || value <= 0 || value > high) {
    std::ostringstream message;
    message << flag << " expects a number in (0, " << high << "], got '" << text << "'";
    throw usage_error(message.str());
  }
  return value;
}

/// Parses a comma-separated list of layer widths such as "1024,1024".
std::vector<int> parse_widths(const std::string& flag, const std::string& text) {
  std::vector<int> widths;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) widths.push_back(parse_int(flag, item, 1, 65536));
  if (widths.empty() || text.back() == ',') {
    throw usage_error(flag + " expects comma-separated widths such as 1024,1024, got '" + text +
                      "'");
  }
  return widths;
}

/// Stores one flag's value into `cfg`.
void apply_flag(config& cfg, const std::string& flag, const std::string& value) {
  if (flag == "--epochs-teacher") {
    cfg.epochs_teacher = parse_int(flag, value, 1, 10000);
  } else if (flag == "--epochs-student") {
    cfg.epochs_student = parse_int(flag, value, 1, 10000);
  } else if (flag == "--seeds") {
    cfg.seeds = parse_int(flag, value, 1, 1000);
  } else if (flag == "--teacher-hidden") {
    cfg.teacher_hidden = parse_widths(flag, value);
  } else if (flag == "--student-hidden") {
    cfg.student_hidden = parse_widths(flag, value);
  } else if (flag == "--train-size") {
    cfg.train_size = parse_int(flag, value, 1, 60000);
  } else if (flag == "--batch-size") {
    cfg.batch_size = parse_int(flag, value, 1, 60000);
  } else if (flag == "--lr") {
    cfg.lr = parse_positive(flag, value, 10.0);
  } else if (flag == "--data") {
    if (value.empty()) throw usage_error("--data expects a directory");
    cfg.data_dir = value;
  } else if (flag == "--threads") {
    cfg.threads = parse_int(flag, value, 1, 256);
  } else {
    throw usage_error("unknown flag '" + flag + "'");
  }
}

/// Parses argv; returns nothing when --help was printed.
std::optional<config> parse_args(int argc, char** argv) {
  config cfg;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      print_usage(std::cout, config{});
      return std::nullopt;
    }
    if (flag.rfind("--", 0) != 0) throw usage_error("unexpected argument '" + flag + "'");
    std::string value;
    const std::size_t equals = flag.find('=');
    if (equals != std::string::npos) {
      value = flag.substr(equals + 1);
      flag.resize(equals);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      throw usage_error(flag + " needs a value");
    }
    apply_flag(cfg, flag, value);
  }
  return cfg;
}

// ------------------------------------------------------------------------------------------------
// Data

/// Images as standardized floats (one row per image) with their labels.
struct split {
  matrix images;
  std::vector<int> labels;
};

/// Mean and standard deviation of the [0, 1]-scaled pixels, taken over the training images.
struct pixel_stats {
  double mean = 0;
  double stddev = 1;
};

pixel_stats measure_pixels(const raw_split& raw, std::size_t count) {
  double sum = 0;
  double sum_squares = 0;
  const std::size_t n = count * image_pixels;
  for (std::size_t i = 0; i < n; ++i) {
    const double x = raw.pixels[i] / 255.0;
    sum += x;
    sum_squares += x * x;
  }
  pixel_stats stats;
  stats.mean = sum / static_cast<double>(n);
  stats.stddev = std::sqrt(std::max(sum_squares / static_cast<double>(n) - stats.mean * stats.mean,
                                    1e-12));
  return stats;
}

/// Scales the first `count` images to [0, 1] and standardizes them with `stats`.
split to_split(const raw_split& raw, std::size_t count, const pixel_stats& stats) {
  split out;
  out.images.resize(static_cast<Eigen::Index>(count), image_pixels);
  const float scale = static_cast<float>(1.0 / (255.0 * stats.stddev));
  const float shift = static_cast<float>(stats.mean / stats.stddev);
  for (std::size_t i = 0; i < count * image_pixels; ++i) {
    out.images.data()[i] = raw.pixels[i] * scale - shift;
  }
  out.labels.assign(raw.labels.begin(), raw.labels.begin() + static_cast<long>(count));
  return out;
}

struct fashion_mnist {
  split train;
  split test;
};

/// Loads both splits from `dir`, keeping the first `train_size` training examples.
fashion_mnist load_fashion_mnist(const std::string& dir, int train_size) {
  const raw_split raw_train = load_split(dir, "train", 60000);
  const raw_split raw_test = load_split(dir, "t10k", 10000);
  const auto used = static_cast<std::size_t>(train_size);
  const pixel_stats stats = measure_pixels(raw_train, used);
  return {to_split(raw_train, used, stats), to_split(raw_test, raw_test.count, stats)};
}

// ------------------------------------------------------------------------------------------------
// Losses

/// Mean cross-entropy of a batch; writes d(mean CE)/d(logits) into `grad`.
double cross_entropy(const matrix& logits, const std::vector<int>& labels, matrix& grad) {
  const Eigen::Index rows = logits.rows();
  grad.resize(rows, logits.cols());
  double total = 0;
  for (Eigen::Index i = 0; i < rows; ++i) {
    const float top = logits.row(i).maxCoeff();
    grad.row(i) = (logits.row(i).array() - top).exp().matrix();
    const double sum = grad.row(i).sum();
    total += std::log(sum) - (logits(i, labels[i]) - top);
    grad.row(i) /= static_cast<float>(sum);
    grad(i, labels[i]) -= 1.0f;
  }
  grad /= static_cast<float>(rows);
  return total / static_cast<double>(rows);
}

lskd::matrix_view<const float> const_view(const matrix& m) {
  return lskd::matrix_view<const float>(m.data(), m.rows(), m.cols(), m.cols());
}

lskd::matrix_view<float> mutable_view(matrix& m) {
  return lskd::matrix_view<float>(m.data(), m.rows(), m.cols(), m.cols());
}

/// lskd's batch-mean KD loss, with d(loss)/d(student) written into `grad` (already sized).
double distillation(const lskd::kd_loss<float>& kd, const matrix& student, const matrix& teacher,
                    matrix& grad) {
  try {
    return kd.forward_backward(const_view(student), const_view(teacher), mutable_view(grad));
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("lskd::kd_loss::forward_backward failed: ") + e.what());
  }
}

/// lskd's batch-mean DKD loss given each row's label, d(loss)/d(student) written into `grad`.
double decoupled_distillation(const lskd::dkd_loss<float>& dkd, const matrix& student,
                              const matrix& teacher, const std::vector<std::int64_t>& labels,
                              matrix& grad) {
  try {
    return dkd.forward_backward(const_view(student), const_view(teacher), labels.data(),
                                mutable_view(grad));
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("lskd::dkd_loss::forward_backward failed: ") + e.what());
  }
}

/// A training recipe: loss = ce_weight * CE + kd_weight * KD (no KD when kd_weight is 0), where
/// KD is lskd::kd_loss with `kd`, or lskd::dkd_loss with `dkd` when `decoupled` is set.
struct method {
  std::string name;
  double ce_weight = 1.0;
  double kd_weight = 0.0;
  lskd::kd_options kd;
  bool decoupled = false;
  lskd::dkd_options dkd;
};

std::vector<method> student_methods() {
  lskd::kd_options classic;
  classic.temperature = 4.0;
  classic.standardize = false;
  lskd::kd_options standardized;
  standardized.temperature = 2.0;
  standardized.standardize = true;
  // DKD: the DKD paper's CIFAR-100 loss (alpha 1, beta 8, tau 4, CE weight 1) at a tenth of
  // its weight: the paper warms the DKD term up over its first epochs, and at full weight from
  // the first step (f = 16, beta = 8) the student diverges at this learning rate; 0.1 gives its
  // gradient the size of classic KD's. DKD+LS: the same loss on standardized logits at base
  // tau 2, with the CE and distillation weights of KD+LS (alpha and beta scaled by 9).
  lskd::dkd_options decoupled;
  lskd::dkd_options decoupled_standardized;
  decoupled_standardized.temperature = 2.0;
  decoupled_standardized.standardize = true;
  return {{"CE", 1.0, 0.0, {}, false, {}},
          {"KD", 0.1, 0.9, classic, false, {}},
          {"KD+LS", 0.1, 9.0, standardized, false, {}},
          {"DKD", 1.0, 0.1, {}, true, decoupled},
          {"DKD+LS", 0.1, 9.0, {}, true, decoupled_standardized}};
}

/// Evaluates one method's loss and d(loss)/d(logits) on a batch.
class objective {
 public:
  explicit objective(const method& recipe) : recipe_(recipe), kd_(recipe.kd), dkd_(recipe.dkd) {}

  double evaluate(const matrix& logits, const std::vector<int>& labels,
                  const matrix* teacher_logits, matrix& grad) {
    double loss = recipe_.ce_weight * cross_entropy(logits, labels, grad);
    if (recipe_.ce_weight != 1.0) grad *= static_cast<float>(recipe_.ce_weight);
    if (recipe_.kd_weight == 0.0) return loss;
    kd_grad_.resize(logits.rows(), logits.cols());
    if (recipe_.decoupled) {
      targets_.assign(labels.begin(), labels.end());
      loss += recipe_.kd_weight *
              decoupled_distillation(dkd_, logits, *teacher_logits, targets_, kd_grad_);
    } else {
      loss += recipe_.kd_weight * distillation(kd_, logits, *teacher_logits, kd_grad_);
    }
    grad += static_cast<float>(recipe_.kd_weight) * kd_grad_;
    return loss;
  }

 private:
  method recipe_;
  lskd::kd_loss<float> kd_;
  lskd::dkd_loss<float> dkd_;
  std::vector<std::int64_t> targets_;
  matrix kd_grad_;
};

// ------------------------------------------------------------------------------------------------
// Training

/// Reusable storage for one mini-batch.
struct batch {
  matrix images;
  std::vector<int> labels;
  matrix teacher_logits;
  matrix grad;
};

/// Copies the examples order[begin, end) (and their teacher logits, if any) into `out`.
void gather_batch(const split& data, const matrix* teacher_logits,
                  const std::vector<Eigen::Index>& order, std::size_t begin, std::size_t end,
                  batch& out) {
  const auto rows = static_cast<Eigen::Index>(end - begin);
  out.images.resize(rows, data.images.cols());
  out.labels.resize(end - begin);
  if (teacher_logits != nullptr) out.teacher_logits.resize(rows, teacher_logits->cols());
  for (Eigen::Index r = 0; r < rows; ++r) {
    const Eigen::Index source = order[begin + static_cast<std::size_t>(r)];
    out.images.row(r) = data.images.row(source);
    out.labels[static_cast<std::size_t>(r)] = data.labels[static_cast<std::size_t>(source)];
    if (teacher_logits != nullptr) out.teacher_logits.row(r) = teacher_logits->row(source);
  }
}

/// Percentage of `data` that `net` classifies correctly.
double accuracy_percent(const mlp& net, const split& data) {
  const matrix logits = net.predict(data.images);
  std::size_t correct = 0;
  for (Eigen::Index i = 0; i < logits.rows(); ++i) {
    Eigen::Index best = 0;
    logits.row(i).maxCoeff(&best);
    if (best == data.labels[static_cast<std::size_t>(i)]) ++correct;
  }
  return 100.0 * static_cast<double>(correct) / static_cast<double>(logits.rows());
}

/// Cosine learning-rate decay from `peak` at the first step towards 0 after `total_steps`.
class cosine_schedule {
 public:
  cosine_schedule(double peak, long total_steps) : peak_(peak), total_steps_(total_steps) {}

  /// The learning rate of the next step.
  float next() {
    const double progress = static_cast<double>(step_++) / static_cast<double>(total_steps_);
    return static_cast<float>(peak_ * 0.5 * (1.0 + std::cos(3.14159265358979323846 * progress)));
  }

 private:
  double peak_;
  long total_steps_;
  long step_ = 0;
};

/// What one training run needs besides the network.
struct run_setup {
  std::string label;  // e.g. "KD+LS seed 2"
  int epochs = 1;
  std::uint64_t order_seed = 0;
  const matrix* teacher_logits = nullptr;  // on the training split; null for CE-only
};

/// Trains `net` for one epoch over `order` in batches of `batch_size`; returns the mean
/// training loss per example. `teacher_logits` (on the training split) may be null.
double train_epoch(mlp& net, objective& loss, const split& train, const matrix* teacher_logits,
                   const std::vector<Eigen::Index>& order, std::size_t batch_size,
                   cosine_schedule& schedule) {
  batch b;
  double loss_sum = 0;
  for (std::size_t begin = 0; begin < order.size(); begin += batch_size) {
    const std::size_t end = std::min(order.size(), begin + batch_size);
    gather_batch(train, teacher_logits, order, begin, end, b);
    const matrix& logits = net.forward(b.images);
    const matrix* teacher = teacher_logits != nullptr ? &b.teacher_logits : nullptr;
    loss_sum += loss.evaluate(logits, b.labels, teacher, b.grad) * static_cast<double>(end - begin);
    net.backward(b.grad);
    net.sgd_step(schedule.next(), static_cast<float>(sgd_momentum));
  }
  return loss_sum / static_cast<double>(order.size());
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// Sets Eigen's thread count for `net`: --threads for large networks, 1 for small ones.
void set_threads_for(const mlp& net, const config& cfg) {
  Eigen::setNbThreads(net.parameter_count() >= min_threaded_parameters ? cfg.threads : 1);
}

/// Trains `net` with `recipe`, printing one line per epoch; returns the final test accuracy.
double train(mlp& net, const method& recipe, const run_setup& setup, const fashion_mnist& data,
             const config& cfg) {
  set_threads_for(net, cfg);
  objective loss(recipe);
  std::vector<Eigen::Index> order(data.train.labels.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<Eigen::Index>(i);
  std::mt19937_64 order_rng(setup.order_seed);
  const auto batch_size = static_cast<std::size_t>(cfg.batch_size);
  const long batches = static_cast<long>((order.size() + batch_size - 1) / batch_size);
  cosine_schedule schedule(cfg.lr, batches * setup.epochs);
  double accuracy = 0;
  for (int epoch = 1; epoch <= setup.epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    shuffle_in_place(order, order_rng);
    const double mean_loss = train_epoch(net, loss, data.train, setup.teacher_logits, order,
                                         batch_size, schedule);
    if (!std::isfinite(mean_loss)) {
      throw std::runtime_error(setup.label + ": training loss became " + std::to_string(mean_loss) +
                               " in epoch " + std::to_string(epoch) + "; try a smaller --lr");
    }
    accuracy = accuracy_percent(net, data.test);
    std::printf("%-16s epoch %3d/%-3d  loss %.4f  test acc %6.2f%%  %6.1f s\n",
                setup.label.c_str(), epoch, setup.epochs, mean_loss, accuracy,
                seconds_since(start));
    std::fflush(stdout);
  }
  return accuracy;
}

/// Layer sizes: the 784 inputs, the hidden widths, the 10 classes.
std::vector<int> layer_sizes(const std::vector<int>& hidden) {
  std::vector<int> sizes{image_pixels};
  sizes.insert(sizes.end(), hidden.begin(), hidden.end());
  sizes.push_back(class_count);
  return sizes;
}

std::string join_widths(const std::vector<int>& widths, char separator) {
  std::string text;
  for (int w : widths) text += (text.empty() ? "" : std::string(1, separator)) + std::to_string(w);
  return text;
}

/// Trains the teacher; returns its test accuracy and stores its training-set logits.
double train_teacher(const fashion_mnist& data, const config& cfg, matrix& train_logits) {
  mlp teacher(layer_sizes(cfg.teacher_hidden), derive_seed(teacher_seed, 0));
  run_setup setup{"teacher", cfg.epochs_teacher, derive_seed(teacher_seed, 1), nullptr};
  const double accuracy = train(teacher, method{"CE", 1.0, 0.0, {}, false, {}}, setup, data, cfg);
  train_logits = teacher.predict(data.train.images);
  return accuracy;
}

// ------------------------------------------------------------------------------------------------
// Report

/// Mean and sample standard deviation (n - 1; 0 for a single value).
struct summary {
  double mean = 0;
  double stddev = 0;
};

summary summarize(const std::vector<double>& values) {
  summary s;
  for (double v : values) s.mean += v;
  s.mean /= static_cast<double>(values.size());
  if (values.size() < 2) return s;
  double squares = 0;
  for (double v : values) squares += (v - s.mean) * (v - s.mean);
  s.stddev = std::sqrt(squares / static_cast<double>(values.size() - 1));
  return s;
}

std::string method_description(const method& recipe) {
  if (recipe.kd_weight == 0.0) return "cross-entropy only";
  std::ostringstream text;
  if (recipe.decoupled) {
    text << recipe.ce_weight << " CE + " << recipe.kd_weight << " DKD (alpha " << recipe.dkd.alpha
         << ", beta " << recipe.dkd.beta << "), tau " << recipe.dkd.temperature
         << (recipe.dkd.standardize ? ", standardized logits" : "");
    return text.str();
  }
  text << recipe.ce_weight << " CE + " << recipe.kd_weight << " KD, tau " << recipe.kd.temperature
       << (recipe.kd.standardize ? ", standardized logits" : "");
  return text.str();
}

void print_table(const config& cfg, double teacher_accuracy, const std::vector<method>& methods,
                 const std::vector<std::vector<double>>& accuracies) {
  std::printf("\n| model | method | test accuracy (%%) |\n|---|---|---|\n");
  std::printf("| teacher %s | cross-entropy only | %.2f (1 run) |\n",
              join_widths(layer_sizes(cfg.teacher_hidden), '-').c_str(), teacher_accuracy);
  const std::string student = join_widths(layer_sizes(cfg.student_hidden), '-');
  for (std::size_t m = 0; m < methods.size(); ++m) {
    const summary s = summarize(accuracies[m]);
    std::printf("| student %s, %s | %s | %.2f ± %.2f |\n", student.c_str(),
                methods[m].name.c_str(), method_description(methods[m]).c_str(), s.mean,
                s.stddev);
  }
  std::printf("\nStudent accuracies: mean ± sample std over %d seed(s), after %d epochs; "
              "teacher: %d epochs; %d training images.\n",
              cfg.seeds, cfg.epochs_student, cfg.epochs_teacher, cfg.train_size);
}

void print_config(const config& cfg) {
  std::printf("Fashion-MNIST distillation: teacher %s (%d epochs), student %s (%d epochs), "
              "%d seed(s)\n",
              join_widths(layer_sizes(cfg.teacher_hidden), '-').c_str(), cfg.epochs_teacher,
              join_widths(layer_sizes(cfg.student_hidden), '-').c_str(), cfg.epochs_student,
              cfg.seeds);
  std::printf("SGD momentum %.1f, peak lr %g with cosine decay, batch %d, %d training images\n"
              "Eigen threads: %d for networks of 1M parameters or more, 1 for smaller ones\n\n",
              sgd_momentum, cfg.lr, cfg.batch_size, cfg.train_size, cfg.threads);
  std::fflush(stdout);
}

// ------------------------------------------------------------------------------------------------
// Driver

int run(const config& cfg) {
  const auto start = std::chrono::steady_clock::now();
#ifndef _OPENMP
  if (cfg.threads > 1) std::fprintf(stderr, "note: built without OpenMP; --threads is ignored\n");
#endif
  print_config(cfg);
  const fashion_mnist data = load_fashion_mnist(cfg.data_dir, cfg.train_size);

  matrix teacher_logits;
  const double teacher_accuracy = train_teacher(data, cfg, teacher_logits);

  const std::vector<method> methods = student_methods();
  std::vector<std::vector<double>> accuracies(methods.size());
  for (int seed = 1; seed <= cfg.seeds; ++seed) {
    const auto init_seed = derive_seed(static_cast<std::uint64_t>(seed), 0);
    for (std::size_t m = 0; m < methods.size(); ++m) {
      mlp student(layer_sizes(cfg.student_hidden), init_seed);
      const bool distills = methods[m].kd_weight != 0.0;
      run_setup setup{methods[m].name + " seed " + std::to_string(seed), cfg.epochs_student,
                      derive_seed(static_cast<std::uint64_t>(seed), 1),
                      distills ? &teacher_logits : nullptr};
      accuracies[m].push_back(train(student, methods[m], setup, data, cfg));
    }
  }
  print_table(cfg, teacher_accuracy, methods, accuracies);
  std::printf("Total wall time: %.1f s\n", seconds_since(start));
  return 0;
}

}  // namespace fmd

int main(int argc, char** argv) {
  try {
    const std::optional<fmd::config> cfg = fmd::parse_args(argc, argv);
    return cfg ? fmd::run(*cfg) : 0;
  } catch (const fmd::usage_error& e) {
    std::fprintf(stderr, "error: %s\nRun 'fashion_mnist_distill --help' for the flags.\n",
                 e.what());
    return 2;
  } catch (const fmd::data_error& e) {
    std::fprintf(stderr,
                 "error: cannot load Fashion-MNIST: %s\n"
                 "Install the data set with 'apt-get install dataset-fashion-mnist' (it goes to "
                 "/usr/share/datasets/fashion-mnist),\nor pass --data DIR with a folder holding "
                 "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,\n"
                 "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz.\n",
                 e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
