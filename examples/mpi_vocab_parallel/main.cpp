// SPDX-License-Identifier: MIT
// Vocabulary-parallel and data-parallel KD over MPI, checked against one process.
//
// Vocabulary parallelism: every rank holds the same rows but only a contiguous, uneven slice
// of the classes (as when a model's output layer is split over devices). The ranks combine
// 10 + 7 doubles per row with two MPI_Allreduce calls (a user op that merges statistics, then
// MPI_SUM), and each writes the gradient of its own slice. Rank 0 then gathers the slices, for
// verification only, and compares loss and gradients with lskd::kd_loss on whole rows.
//
// Data parallelism: every rank holds whole rows, a different uneven share of the batch; each
// calls lskd::kd_loss with batchmean and row_weights::normalizer = the global row count, and
// one MPI_Allreduce sums the losses into the global batchmean.
//
// Data are generated from a seed on every rank, element by element (a counter-based hash), so
// each rank makes exactly its own part. Exits nonzero on any mismatch.
//
//   mpirun -np 4 mpi_vocab_parallel [--rows 64] [--classes 128256] [--seed 2024]
//                                   [--repeat 1] [--timing] [--tolerance 1e-5]
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <lskd/kd_loss.hpp>
#include <lskd/vocab_parallel.hpp>
#include <string>
#include <vector>

/// MPI's user op for step 2: merges rows of statistics (one MPI datatype element per row).
extern "C" void lskd_example_merge_statistics(void* in, void* inout, int* length,
                                              MPI_Datatype* /*type*/) {
  lskd::merge_statistics(static_cast<const lskd::vocab_row_statistics*>(in),
                         static_cast<lskd::vocab_row_statistics*>(inout), *length);
}

namespace {

struct arguments {
  lskd::index rows = 64;
  lskd::index classes = 128256;
  std::uint64_t seed = 2024;
  int repeat = 1;
  bool timing = false;
  /// Float results against kd_loss in float: the same formulas, statistics that differ by a
  /// few units of roundoff of double and sums split at other places. Measured differences are
  /// below 2e-7 of a row's largest gradient entry; 1e-5 leaves a margin.
  double tolerance = 1e-5;
};

arguments parse(int argc, char** argv) {
  arguments a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const bool has_value = i + 1 < argc;
    if (flag == "--rows" && has_value) {
      a.rows = std::atol(argv[++i]);
    } else if (flag == "--classes" && has_value) {
      a.classes = std::atol(argv[++i]);
    } else if (flag == "--seed" && has_value) {
      a.seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (flag == "--repeat" && has_value) {
      a.repeat = std::max(1, std::atoi(argv[++i]));
    } else if (flag == "--tolerance" && has_value) {
      a.tolerance = std::atof(argv[++i]);
    } else if (flag == "--timing") {
      a.timing = true;
    } else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      std::exit(2);
    }
  }
  return a;
}

// --- Deterministic data: the value at (row, class) depends on the seed and nothing else. ---

std::uint64_t mix(std::uint64_t x) {
  // splitmix64's finalizer: a bijection with good avalanche.
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// A standard normal from the counter (seed, stream, row, class), by Box-Muller.
double normal_at(std::uint64_t seed, std::uint64_t stream, lskd::index row, lskd::index cls) {
  const std::uint64_t key = mix(seed ^ mix(stream ^ mix(static_cast<std::uint64_t>(row) ^
                                                        mix(static_cast<std::uint64_t>(cls)))));
  const double u1 = (static_cast<double>(key >> 11) + 0.5) * 0x1.0p-53;
  const double u2 = (static_cast<double>(mix(key) >> 11) + 0.5) * 0x1.0p-53;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

/// The rows [row_begin, row_end) and classes [class_begin, class_end) of the batch, into dense
/// buffers. Row 1 sits at 1000 + N(0, 1) (stress for the statistics); row 2 has its last 256
/// classes masked (-inf in both, like a padded vocabulary); the others have a peaked teacher.
void fill(const arguments& a, lskd::index row_begin, lskd::index row_end, lskd::index class_begin,
          lskd::index class_end, std::vector<float>& student, std::vector<float>& teacher) {
  const lskd::index width = class_end - class_begin;
  student.resize(static_cast<std::size_t>((row_end - row_begin) * width));
  teacher.resize(student.size());
  for (lskd::index r = row_begin; r < row_end; ++r) {
    const lskd::index peak = (r * 7919) % a.classes;
    for (lskd::index c = class_begin; c < class_end; ++c) {
      const double t_noise = normal_at(a.seed, 1, r, c);
      const double s_noise = normal_at(a.seed, 2, r, c);
      double t = 3.0 * t_noise + (c == peak ? 12.0 : 0.0);
      double s = 0.6 * t + 2.0 * s_noise;
      if (r == 1) {
        t = 1000.0 + 1.5 * t_noise;
        s = 1000.0 + s_noise;
      }
      if (r == 2 && c >= a.classes - 256) {
        t = -std::numeric_limits<double>::infinity();
        s = t;
      }
      const std::size_t i = static_cast<std::size_t>((r - row_begin) * width + (c - class_begin));
      student[i] = static_cast<float>(s);
      teacher[i] = static_cast<float>(t);
    }
  }
}

/// Uneven contiguous split of [0, total): part k of `parts` gets a share proportional to
/// k + 1 (so ranks hold 1/3 and 2/3 of the classes at 2 ranks, 10% to 40% at 4).
lskd::index split_point(lskd::index total, int k, int parts) {
  const lskd::index weight_below = static_cast<lskd::index>(k) * (k + 1) / 2;
  const lskd::index weight_all = static_cast<lskd::index>(parts) * (parts + 1) / 2;
  return total * weight_below / weight_all;
}

/// Per-row tolerance check: |actual - expected| <= relative * max |expected| of the row.
struct comparison {
  double worst_ratio = 0.0;
  lskd::index off = 0;
  std::string worst;

  void rows(const char* what, const std::vector<float>& expected, const std::vector<float>& actual,
            lskd::index row_count, lskd::index cols, double relative) {
    for (lskd::index r = 0; r < row_count; ++r) {
      double largest = 0.0;
      for (lskd::index c = 0; c < cols; ++c) {
        largest = std::max(largest, std::fabs(static_cast<double>(expected[r * cols + c])));
      }
      const double allowed = relative * std::max(largest, 1e-30);
      for (lskd::index c = 0; c < cols; ++c) {
        const double e = expected[r * cols + c];
        const double x = actual[r * cols + c];
        const double ratio =
            std::isfinite(x) ? std::fabs(x - e) / allowed : std::numeric_limits<double>::infinity();
        if (!(ratio <= 1.0)) ++off;
        if (!(ratio <= worst_ratio)) {
          worst_ratio = ratio;
          char text[256];
          std::snprintf(text, sizeof text, "%s [%td, %td]: expected %.9g, got %.9g, tolerance %.3g",
                        what, r, c, e, x, allowed);
          worst = text;
        }
      }
    }
  }

  void value(const char* what, double expected, double actual, double tolerance) {
    const double ratio = std::fabs(actual - expected) / tolerance;
    if (!(ratio <= 1.0)) ++off;
    if (!(ratio <= worst_ratio)) {
      worst_ratio = ratio;
      char text[256];
      std::snprintf(text, sizeof text, "%s: expected %.12g, got %.12g, tolerance %.3g", what,
                    expected, actual, tolerance);
      worst = text;
    }
  }
};

/// Rebuilds row-major rows x classes from the per-rank blocks that MPI_Gatherv stacked.
std::vector<float> assemble(const std::vector<float>& blocks, lskd::index rows, lskd::index classes,
                            int ranks) {
  std::vector<float> full(static_cast<std::size_t>(rows * classes));
  for (int k = 0; k < ranks; ++k) {
    const lskd::index begin = split_point(classes, k, ranks);
    const lskd::index width = split_point(classes, k + 1, ranks) - begin;
    const float* block = blocks.data() + rows * begin;
    for (lskd::index r = 0; r < rows; ++r) {
      std::copy(block + r * width, block + (r + 1) * width, full.data() + r * classes + begin);
    }
  }
  return full;
}

/// Phase times of one vocabulary-parallel step on one rank, in seconds. With --timing, a
/// barrier before each reduction separates waiting for slower ranks (`wait`) from the
/// reduction itself.
struct phase_times {
  double statistics = 0, merge_statistics = 0, exp_sums = 0, merge_sums = 0, gradients = 0;
  double wait = 0;
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  int ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const arguments args = parse(argc, argv);
  const lskd::index rows = args.rows;
  const lskd::index classes = args.classes;

  MPI_Datatype statistics_type;
  MPI_Type_contiguous(lskd::vocab_statistics_doubles, MPI_DOUBLE, &statistics_type);
  MPI_Type_commit(&statistics_type);
  MPI_Op merge_op;
  // Commutative: merge_statistics is symmetric bit for bit.
  MPI_Op_create(&lskd_example_merge_statistics, 1, &merge_op);

  const lskd::kd_options options;  // standardize, tau = 2, ddof = 1, batchmean, tau^2
  const lskd::kd_loss<float> reference(options);
  const lskd::vocab_parallel_kd_loss<float> kd(options);
  int failures = 0;

  // ---------------- Vocabulary parallelism. ----------------
  const lskd::index first = split_point(classes, rank, ranks);
  const lskd::index width = split_point(classes, rank + 1, ranks) - first;
  std::vector<float> student;
  std::vector<float> teacher;
  fill(args, 0, rows, first, first + width, student, teacher);
  const lskd::vocab_shard<float> shard{
      {student.data(), rows, width}, {teacher.data(), rows, width}, first};

  std::vector<lskd::vocab_row_statistics> statistics(static_cast<std::size_t>(rows));
  std::vector<lskd::vocab_row_sums> sums(static_cast<std::size_t>(rows));
  std::vector<float> exps(static_cast<std::size_t>(rows * 2 * width));
  std::vector<float> grad_student(static_cast<std::size_t>(rows * width));
  std::vector<float> grad_teacher(static_cast<std::size_t>(rows * width));
  std::vector<phase_times> runs;
  double loss = 0.0;

  for (int run = 0; run < args.repeat; ++run) {
    phase_times t;
    MPI_Barrier(MPI_COMM_WORLD);
    double start = MPI_Wtime();
    const auto lap = [&](double& into) {
      const double now = MPI_Wtime();
      into += now - start;
      start = now;
    };
    const auto wait_for_all = [&] {
      if (!args.timing) return;
      MPI_Barrier(MPI_COMM_WORLD);
      lap(t.wait);
    };

    kd.statistics(shard, statistics.data());
    lap(t.statistics);
    wait_for_all();
    MPI_Allreduce(MPI_IN_PLACE, statistics.data(), static_cast<int>(rows), statistics_type,
                  merge_op, MPI_COMM_WORLD);
    lap(t.merge_statistics);

    kd.exp_sums(shard, statistics.data(), sums.data(), {exps.data(), rows, 2 * width});
    lap(t.exp_sums);
    wait_for_all();
    MPI_Allreduce(MPI_IN_PLACE, sums.data(), static_cast<int>(rows * lskd::vocab_sums_doubles),
                  MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    lap(t.merge_sums);

    loss =
        kd.gradients(shard, statistics.data(), sums.data(), {grad_student.data(), rows, width},
                     {grad_teacher.data(), rows, width}, nullptr, {exps.data(), rows, 2 * width});
    lap(t.gradients);
    runs.push_back(t);
  }

  // d(loss)/d(temperature) for a learnable temperature: from the merged records alone.
  const double grad_temperature = kd.temperature_gradient(rows, statistics.data(), sums.data());

  // Every rank computed the loss from the same merged records.
  double loss_low = 0.0;
  double loss_high = 0.0;
  MPI_Allreduce(&loss, &loss_low, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(&loss, &loss_high, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);

  // Verification only: gather the gradient slices on rank 0.
  std::vector<int> counts(static_cast<std::size_t>(ranks));
  std::vector<int> displacements(static_cast<std::size_t>(ranks));
  for (int k = 0; k < ranks; ++k) {
    const lskd::index begin = split_point(classes, k, ranks);
    counts[k] = static_cast<int>(rows * (split_point(classes, k + 1, ranks) - begin));
    displacements[k] = static_cast<int>(rows * begin);
  }
  std::vector<float> gathered_student(rank == 0 ? static_cast<std::size_t>(rows * classes) : 0);
  std::vector<float> gathered_teacher(gathered_student.size());
  MPI_Gatherv(grad_student.data(), static_cast<int>(grad_student.size()), MPI_FLOAT,
              gathered_student.data(), counts.data(), displacements.data(), MPI_FLOAT, 0,
              MPI_COMM_WORLD);
  MPI_Gatherv(grad_teacher.data(), static_cast<int>(grad_teacher.size()), MPI_FLOAT,
              gathered_teacher.data(), counts.data(), displacements.data(), MPI_FLOAT, 0,
              MPI_COMM_WORLD);

  std::vector<float> full_student;
  std::vector<float> full_teacher;
  std::vector<float> expected_student;
  std::vector<float> expected_teacher;
  double expected_loss = 0.0;
  if (rank == 0) {
    fill(args, 0, rows, 0, classes, full_student, full_teacher);
    expected_student.resize(full_student.size());
    expected_teacher.resize(full_student.size());
    double expected_grad_temperature = 0.0;
    expected_loss = reference.forward_backward(
        {full_student.data(), rows, classes}, {full_teacher.data(), rows, classes},
        {expected_student.data(), rows, classes}, {expected_teacher.data(), rows, classes}, nullptr,
        &expected_grad_temperature);

    comparison check;
    check.value("vocab-parallel loss", expected_loss, loss,
                args.tolerance * std::max(1.0, std::fabs(expected_loss)));
    check.value("d(loss)/d(temperature)", expected_grad_temperature, grad_temperature,
                args.tolerance * std::max(1.0, std::fabs(expected_grad_temperature)));
    check.rows("student gradient", expected_student,
               assemble(gathered_student, rows, classes, ranks), rows, classes, args.tolerance);
    check.rows("teacher gradient", expected_teacher,
               assemble(gathered_teacher, rows, classes, ranks), rows, classes, args.tolerance);
    std::printf(
        "vocab parallel, %d ranks, %td rows x %td classes (%s): loss %.9f, kd_loss %.9f; "
        "%td values off; worst |diff|/tolerance %.3g (%s); loss identical on all "
        "ranks: %s\n",
        ranks, rows, classes, kd.arch_name(), loss, expected_loss, check.off, check.worst_ratio,
        check.worst.c_str(), loss_low == loss_high ? "yes" : "no");
    if (check.off != 0) ++failures;
  }

  // ---------------- Data parallelism: whole rows, split over ranks. ----------------
  {
    const lskd::index row_begin = split_point(rows, rank, ranks);
    const lskd::index row_end = split_point(rows, rank + 1, ranks);
    const lskd::index local_rows = row_end - row_begin;
    std::vector<float> local_student;
    std::vector<float> local_teacher;
    fill(args, row_begin, row_end, 0, classes, local_student, local_teacher);
    std::vector<float> local_grad(local_student.size());

    // batchmean over the whole batch: every rank divides by the global row count.
    const double local_count = static_cast<double>(local_rows);
    double global_count = 0.0;
    MPI_Allreduce(&local_count, &global_count, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    // A rank may hold no rows: kd_loss reads a gradient view of 0 rows and null data as "no
    // gradient wanted" and refuses the call, so such a rank skips it.
    const double local_loss = local_rows == 0 ? 0.0
                                              : reference.forward_backward(
                                                    {local_student.data(), local_rows, classes},
                                                    {local_teacher.data(), local_rows, classes},
                                                    lskd::row_weights<float>{nullptr, global_count},
                                                    {local_grad.data(), local_rows, classes});
    double global_loss = 0.0;
    MPI_Allreduce(&local_loss, &global_loss, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);

    std::vector<int> row_counts(static_cast<std::size_t>(ranks));
    std::vector<int> row_displacements(static_cast<std::size_t>(ranks));
    for (int k = 0; k < ranks; ++k) {
      row_displacements[k] = static_cast<int>(split_point(rows, k, ranks) * classes);
      row_counts[k] =
          static_cast<int>(split_point(rows, k + 1, ranks) * classes) - row_displacements[k];
    }
    std::vector<float> gathered(rank == 0 ? static_cast<std::size_t>(rows * classes) : 0);
    MPI_Gatherv(local_grad.data(), static_cast<int>(local_grad.size()), MPI_FLOAT, gathered.data(),
                row_counts.data(), row_displacements.data(), MPI_FLOAT, 0, MPI_COMM_WORLD);
    if (rank == 0) {
      comparison check;
      check.value("data-parallel loss", expected_loss, global_loss,
                  args.tolerance * std::max(1.0, std::fabs(expected_loss)));
      check.rows("student gradient", expected_student, gathered, rows, classes, args.tolerance);
      std::printf(
          "data parallel, %d ranks: loss %.9f, kd_loss %.9f; %td values off; worst "
          "|diff|/tolerance %.3g (%s)\n",
          ranks, global_loss, expected_loss, check.off, check.worst_ratio, check.worst.c_str());
      if (check.off != 0) ++failures;
    }
  }

  // ---------------- Timing: the slowest rank's phase times, and an all-gather. ----------------
  if (args.timing) {
    // The alternative: every rank gathers both tensors' full rows.
    std::vector<float> all_student(static_cast<std::size_t>(rows * classes));
    std::vector<float> all_teacher(all_student.size());
    std::vector<double> gather_times;
    for (int run = 0; run < args.repeat; ++run) {
      MPI_Barrier(MPI_COMM_WORLD);
      const double start = MPI_Wtime();
      MPI_Allgatherv(student.data(), static_cast<int>(student.size()), MPI_FLOAT,
                     all_student.data(), counts.data(), displacements.data(), MPI_FLOAT,
                     MPI_COMM_WORLD);
      MPI_Allgatherv(teacher.data(), static_cast<int>(teacher.size()), MPI_FLOAT,
                     all_teacher.data(), counts.data(), displacements.data(), MPI_FLOAT,
                     MPI_COMM_WORLD);
      gather_times.push_back(MPI_Wtime() - start);
    }

    // Median over runs of the slowest rank's time in each phase (the machine may be shared:
    // the median resists a run that another process slowed down).
    const auto median_of_max = [&](std::vector<double> local) {
      std::vector<double> slowest(local.size());
      MPI_Allreduce(local.data(), slowest.data(), static_cast<int>(local.size()), MPI_DOUBLE,
                    MPI_MAX, MPI_COMM_WORLD);
      std::sort(slowest.begin(), slowest.end());
      return slowest[slowest.size() / 2];
    };
    const auto phase = [&](double phase_times::*member) {
      std::vector<double> local;
      for (const auto& t : runs) local.push_back(t.*member);
      return median_of_max(local);
    };
    const double t1 = phase(&phase_times::statistics);
    const double m1 = phase(&phase_times::merge_statistics);
    const double t2 = phase(&phase_times::exp_sums);
    const double m2 = phase(&phase_times::merge_sums);
    const double t3 = phase(&phase_times::gradients);
    const double gather = median_of_max(gather_times);
    const double waited = phase(&phase_times::wait);

    // The two reductions alone, back to back with nothing to wait for: their own cost.
    std::vector<double> alone_statistics;
    std::vector<double> alone_sums;
    for (int run = 0; run < 20 * args.repeat; ++run) {
      std::vector<lskd::vocab_row_statistics> copy = statistics;
      std::vector<lskd::vocab_row_sums> sums_copy = sums;
      MPI_Barrier(MPI_COMM_WORLD);
      double start = MPI_Wtime();
      MPI_Allreduce(MPI_IN_PLACE, copy.data(), static_cast<int>(rows), statistics_type, merge_op,
                    MPI_COMM_WORLD);
      alone_statistics.push_back(MPI_Wtime() - start);
      MPI_Barrier(MPI_COMM_WORLD);
      start = MPI_Wtime();
      MPI_Allreduce(MPI_IN_PLACE, sums_copy.data(),
                    static_cast<int>(rows * lskd::vocab_sums_doubles), MPI_DOUBLE, MPI_SUM,
                    MPI_COMM_WORLD);
      alone_sums.push_back(MPI_Wtime() - start);
    }
    const double reduce_statistics = median_of_max(alone_statistics);
    const double reduce_sums = median_of_max(alone_sums);

    // One process, whole rows: lskd::kd_loss itself, for scale.
    double single = 0.0;
    if (ranks == 1) {
      std::vector<double> single_times;
      for (int run = 0; run < args.repeat; ++run) {
        const double start = MPI_Wtime();
        reference.forward_backward(
            {full_student.data(), rows, classes}, {full_teacher.data(), rows, classes},
            {expected_student.data(), rows, classes}, {expected_teacher.data(), rows, classes});
        single_times.push_back(MPI_Wtime() - start);
      }
      std::sort(single_times.begin(), single_times.end());
      single = single_times[single_times.size() / 2];
    }
    if (rank == 0) {
      const double compute = t1 + t2 + t3;
      const double communicate = m1 + m2;
      const double exchanged = sizeof(lskd::vocab_row_statistics) + sizeof(lskd::vocab_row_sums);
      std::printf(
          "timing, %d ranks, %td rows x %td classes, median of %d runs of the slowest "
          "rank (ms): statistics %.2f, merge %.3f, exp sums %.2f, merge %.3f, "
          "gradients %.2f; compute %.2f, waiting for slower ranks %.2f, communicate "
          "%.3f (%.1f%% of the step); all-gather of the logits %.2f\n",
          ranks, rows, classes, args.repeat, 1e3 * t1, 1e3 * m1, 1e3 * t2, 1e3 * m2, 1e3 * t3,
          1e3 * compute, 1e3 * waited, 1e3 * communicate,
          100.0 * communicate / (compute + waited + communicate), 1e3 * gather);
      std::printf(
          "the two reductions alone, median of %d: %.3f ms (statistics, user op) + "
          "%.3f ms (sums, MPI_SUM)\n",
          20 * args.repeat, 1e3 * reduce_statistics, 1e3 * reduce_sums);
      if (ranks == 1) {
        std::printf(
            "single process: lskd::kd_loss forward_backward (student and teacher "
            "gradients) %.2f ms\n",
            1e3 * single);
      }
      std::printf(
          "bytes per row contributed by each rank: %.0f (vocab parallel) vs %.0f "
          "(all-gather of 2 x %td float logits)\n",
          exchanged, 2.0 * sizeof(float) * static_cast<double>(classes), classes);
    }
  }

  MPI_Op_free(&merge_op);
  MPI_Type_free(&statistics_type);
  int any_failure = 0;
  MPI_Allreduce(&failures, &any_failure, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any_failure == 0 ? 0 : 1;
}
