// SPDX-License-Identifier: MIT
// Properties of kd_loss that hold for any input: invariance of the standardized loss to a row's
// offset and scale, float against double, every leading dimension and misaligned start (with
// padding that must stay untouched), empty and one-row batches, in-place gradients, zero loss
// for identical logits, the reductions' relations, and the SIMD path against the scalar one
// for row lengths around the vector width.
//
// Tolerances are those of lskd_test::check_kd_against_reference (k * the magnitude of the terms
// behind each value, k = 1e-6 in float and 1e-13 in double) unless a test says otherwise.

#include "test_support.hpp"

namespace lskd_test {
namespace {

lskd::kd_options options_with(bool standardize, double temperature, double eps = 1e-7,
                              lskd::reduction reduction = lskd::reduction::batchmean) {
  lskd::kd_options o;
  o.standardize = standardize;
  o.temperature = temperature;
  o.eps = eps;
  o.reduction = reduction;
  return o;
}

/// Row r of a dense rows x cols matrix, mapped through f.
template <class T, class F>
std::vector<T> with_row_changed(std::vector<T> values, index cols, index r, F f) {
  for (index c = 0; c < cols; ++c) {
    T& x = values[static_cast<std::size_t>(r * cols + c)];
    x = f(x);
  }
  return values;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// (a), (b) Invariance of the standardized loss

TEMPLATE_TEST_CASE("standardized loss ignores a row's offset and positive scale",
                   "[properties][invariance]", double_simd, double_scalar) {
  using Arch = typename TestType::arch;
  const index rows = 4;
  const index cols = 23;
  random_logits random(11);
  const std::vector<double> student = random.normal<double>(rows, cols, 0.5, 1.3);
  const std::vector<double> teacher = random.normal<double>(rows, cols, -1.0, 2.0);

  struct change {
    const char* name;
    double shift;
    double factor;
  };
  const change changes[] = {{"+1000", 1000.0, 1.0},   {"-37.25", -37.25, 1.0},
                            {"x 3", 0.0, 3.0},        {"x 1e-3", 0.0, 1e-3},
                            {"x 1e3", 0.0, 1e3},      {"x 3 then +1000", 1000.0, 3.0}};

  for (const double eps : {0.0, 1e-7}) {
    const lskd::kd_options options = options_with(true, 2.0, eps);
    const kd_outputs<double> base = run_kd<double, Arch>(options, student, teacher, rows, cols);
    for (const bool teacher_row : {false, true}) {
      for (const change& c : changes) {
        // A shift keeps the std, so the loss is invariant for any eps. A scale changes
        // std / (std + eps), which moves the Z-scores by about eps / std relative: the loss is
        // invariant to scale only with eps = 0, and with eps = 1e-7 nearly so while the std
        // stays near 1 or grows; x 1e-3 (std 1e-3, eps / std = 1e-4) is left out then.
        if (eps > 0 && c.factor < 1.0) continue;
        const index row = teacher_row ? 1 : 2;
        const auto transform = [&](double x) { return x * c.factor + c.shift; };
        const std::vector<double> s =
            teacher_row ? student : with_row_changed(student, cols, row, transform);
        const std::vector<double> t =
            teacher_row ? with_row_changed(teacher, cols, row, transform) : teacher;
        const kd_outputs<double> moved = run_kd<double, Arch>(options, s, t, rows, cols);
        INFO((teacher_row ? "teacher" : "student") << " row " << row << " " << c.name
                                                   << ", eps " << eps);

        // Rounding x * factor + shift moves the Z-scores by about 1e-13 (u * 1000 / std):
        // 1e-12 of the loss. With eps = 1e-7 and a scale, (std + eps) / std changes by up to
        // 1e-7, so the loss may move by about 1e-7 of itself: 1e-6 is allowed there.
        const double tolerance = (eps > 0 && c.factor != 1.0 ? 1e-6 : 1e-12) *
                                 std::max(1.0, std::fabs(base.loss));
        LSKD_CHECK_NEAR(base.loss, moved.loss, tolerance);
        // The other rows are not touched at all.
        for (index r = 0; r < rows; ++r) {
          if (r != row) CHECK(base.row_losses[r] == moved.row_losses[r]);
        }

        // The gradient of the changed row is the original divided by the factor (exactly so
        // with eps = 0; for a shift, with any eps).
        if (eps == 0 || c.factor == 1.0) {
          const std::vector<double>& g0 = teacher_row ? base.grad_teacher : base.grad_student;
          const std::vector<double>& g1 = teacher_row ? moved.grad_teacher : moved.grad_student;
          const auto begin = static_cast<std::size_t>(row * cols);
          const wide largest = max_abs(g0, begin, begin + static_cast<std::size_t>(cols));
          closeness gradient("gradient of the changed row, times the factor");
          for (std::size_t j = begin; j < begin + static_cast<std::size_t>(cols); ++j) {
            gradient.add(static_cast<index>(j), g0[j], g1[j] * c.factor, 1e-11 * largest);
          }
          LSKD_CHECK_CLOSE(gradient);
        }
      }
    }
  }
}

TEST_CASE("classic KD (standardize off) is not scale invariant", "[properties][invariance]") {
  // A sanity check of the test above: without the Z-score, tripling a row's logits sharpens
  // its softmax and changes the loss by far more than any rounding.
  const index rows = 3;
  const index cols = 10;
  random_logits random(12);
  const std::vector<double> student = random.normal<double>(rows, cols);
  const std::vector<double> teacher = random.normal<double>(rows, cols);
  const lskd::kd_options options = options_with(false, 2.0);
  const double base = lskd::kd_loss<double>(options).forward({student.data(), rows, cols},
                                                              {teacher.data(), rows, cols});
  const std::vector<double> scaled =
      with_row_changed(student, cols, 1, [](double x) { return 3.0 * x; });
  const double changed = lskd::kd_loss<double>(options).forward({scaled.data(), rows, cols},
                                                                 {teacher.data(), rows, cols});
  INFO("loss " << show(base) << ", with student row 1 tripled " << show(changed));
  CHECK(std::fabs(changed - base) > 1e-3 * base);

  // A shift still changes nothing: softmax itself ignores it (to rounding).
  const std::vector<double> shifted =
      with_row_changed(student, cols, 1, [](double x) { return x + 5.0; });
  const double same = lskd::kd_loss<double>(options).forward({shifted.data(), rows, cols},
                                                              {teacher.data(), rows, cols});
  LSKD_CHECK_NEAR(base, same, 1e-13 * std::max(1.0, base));
}

// ---------------------------------------------------------------------------------------------
// (c) float against double

TEMPLATE_TEST_CASE("float results agree with double results on the same inputs",
                   "[properties][precision]", lskd::simd::default_arch, lskd::simd::scalar) {
  using Arch = TestType;
  struct shape {
    index rows;
    index cols;
  };
  std::uint64_t seed = 300;
  for (const shape s : {shape{1, 5}, shape{3, 17}, shape{8, 64}, shape{2, 300}}) {
    for (const bool standardize : {true, false}) {
      for (const double temperature : {1.0, 4.0}) {
        const lskd::kd_options options = options_with(standardize, temperature);
        random_logits random(++seed);
        const std::vector<float> student = random.normal<float>(s.rows, s.cols, 0.0, 2.0);
        const std::vector<float> teacher = random.normal<float>(s.rows, s.cols, 1.0, 3.0);
        INFO(s.rows << " x " << s.cols << "; " << describe(options));
        const kd_outputs<float> single =
            run_kd<float, Arch>(options, student, teacher, s.rows, s.cols);
        const kd_outputs<double> twice = run_kd<double, Arch>(
            options, converted<double>(student), converted<double>(teacher), s.rows, s.cols);
        // The double result stands in for the exact one (its error is 1e-7 of float's); the
        // term magnitudes come from the long-double reference.
        const reference_kd ref = reference_kd_loss(student.data(), teacher.data(), s.rows,
                                                   s.cols, options);
        check_kd_against_reference(with_values_of(ref, twice), single);
      }
    }
  }
}

TEMPLATE_TEST_CASE("kd_loss keeps its accuracy for rows whose spread is tiny next to their offset",
                   "[properties][precision][offset]", float_simd, float_scalar, double_simd,
                   double_scalar) {
  // The contract: "offsets like 1000 + N(0, 1) ... are fine", and the gradients are within
  // about 1e-13 (double) of the exact ones. The Z-score is invariant to the offset and every
  // difference of two logits of a row is exact, so a row 1000 + 1e-5 N(0, 1) (|mean| / std =
  // 1e8) is no harder than N(0, 1): nothing should be lost with the offset's digits.
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  random_logits random(81);
  // (Floats near 1000 are 6e-5 apart: a spread of 1e-5 would make constant rows there.)
  const std::vector<double> spreads = std::is_same<T, float>::value
                                          ? std::vector<double>{1.0, 1e-2}
                                          : std::vector<double>{1.0, 1e-2, 1e-5};
  for (const double spread : spreads) {
    const index rows = 4;
    const index cols = 7;
    const std::vector<T> student = random.normal<T>(rows, cols, 1000.0, spread);
    const std::vector<T> teacher = random.normal<T>(rows, cols, -250.0, spread);
    for (const double eps : {0.0, 1e-7}) {
      const lskd::kd_options options = options_with(true, 2.0, eps);
      INFO("rows 1000 + " << spread << " N(0, 1) and -250 + " << spread << " N(0, 1); "
                          << describe(options));
      check_kd_against_reference(
          reference_kd_loss(student.data(), teacher.data(), rows, cols, options),
          run_kd<T, Arch>(options, student, teacher, rows, cols));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// (d) Leading dimensions, misaligned starts, untouched padding

namespace {

struct layout {
  index ld_extra;
  index offset;
};
constexpr layout layouts[] = {{0, 0}, {0, 1}, {0, 3}, {1, 0}, {1, 1},
                              {1, 3}, {7, 0}, {7, 1}, {7, 3}};

std::string describe(const layout& l, const char* name) {
  return std::string(name) + " ld = cols + " + std::to_string(l.ld_extra) + ", offset " +
         std::to_string(l.offset);
}

}  // namespace

TEMPLATE_TEST_CASE("every leading dimension and start offset gives bitwise the same results",
                   "[properties][layout]", float_simd, float_scalar, double_simd, double_scalar) {
  // Rows are read with unaligned loads and summed in an order that depends only on the column,
  // so the same architecture gives the same bits for any layout. Everything around the
  // matrices holds a sentinel NaN that must survive.
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  const index rows = 3;
  const index cols = 37;  // several whole vectors and a tail for every vector width
  random_logits random(21);
  const std::vector<T> student = random.normal<T>(rows, cols, 0.0, 2.0);
  const std::vector<T> teacher = random.normal<T>(rows, cols, 1.0, 1.5);

  for (const bool standardize : {true, false}) {
    const lskd::kd_options options = options_with(standardize, 2.0);
    const lskd::kd_loss<T, Arch> kd(options);
    const kd_outputs<T> dense = run_kd<T, Arch>(options, student, teacher, rows, cols);

    index calls = 0;
    index different = 0;
    index padding_touched = 0;
    std::string first_problem;
    for (const layout& ls : layouts) {
      for (const layout& lt : layouts) {
        for (const layout& lgs : layouts) {
          for (const layout& lgt : layouts) {
            padded_matrix<T> s(rows, cols, cols + ls.ld_extra, ls.offset);
            padded_matrix<T> t(rows, cols, cols + lt.ld_extra, lt.offset);
            padded_matrix<T> gs(rows, cols, cols + lgs.ld_extra, lgs.offset);
            padded_matrix<T> gt(rows, cols, cols + lgt.ld_extra, lgt.offset);
            padded_matrix<double> losses(1, rows, rows, 1 + lgs.offset);
            s.assign(student);
            t.assign(teacher);
            const double loss = kd.forward_backward(s.const_view(), t.const_view(), gs.view(),
                                                    gt.view(), losses.data());
            ++calls;
            const bool same = loss == dense.loss &&
                              bitwise_equal(gs.dense(), dense.grad_student) &&
                              bitwise_equal(gt.dense(), dense.grad_teacher) &&
                              bitwise_equal(losses.dense(), dense.row_losses);
            const index touched = s.padding_changed() + t.padding_changed() +
                                  gs.padding_changed() + gt.padding_changed() +
                                  losses.padding_changed();
            different += same ? 0 : 1;
            padding_touched += touched > 0 ? 1 : 0;
            if ((!same || touched > 0) && first_problem.empty()) {
              first_problem = describe(ls, "student") + "; " + describe(lt, "teacher") + "; " +
                              describe(lgs, "grad_student") + "; " + describe(lgt, "grad_teacher") +
                              (same ? "" : ": results differ") +
                              (touched > 0 ? ": padding written" : "");
            }
          }
        }
      }
    }
    INFO("standardize " << standardize << ": " << calls << " layouts, " << different
                        << " with different results, " << padding_touched
                        << " writing padding; first: " << first_problem);
    CHECK(calls == 9 * 9 * 9 * 9);
    CHECK(different == 0);
    CHECK(padding_touched == 0);
  }
}

// ---------------------------------------------------------------------------------------------
// (e) Empty and one-row batches

TEMPLATE_TEST_CASE("a batch of zero rows gives loss 0 and writes nothing", "[properties][empty]",
                   float, double) {
  using T = TestType;
  const lskd::kd_loss<T> kd;
  SECTION("forward with null pointers") {
    CHECK(kd.forward({static_cast<const T*>(nullptr), 0, 10},
                     {static_cast<const T*>(nullptr), 0, 10}) == 0.0);
  }
  SECTION("forward with reduction none and no row_losses buffer") {
    lskd::kd_options options;
    options.reduction = lskd::reduction::none;
    CHECK(lskd::kd_loss<T>(options).forward({static_cast<const T*>(nullptr), 0, 10},
                                            {static_cast<const T*>(nullptr), 0, 10}) == 0.0);
  }
  SECTION("forward_backward with real buffers") {
    std::vector<T> buffer(4, T(7));
    std::vector<T> grads(4, T(9));
    CHECK(kd.forward_backward({buffer.data(), 0, 2}, {buffer.data() + 2, 0, 2},
                              {grads.data(), 0, 2}, {grads.data() + 2, 0, 2}) == 0.0);
    CHECK(grads == std::vector<T>(4, T(9)));
  }
  SECTION("forward_backward with null pointers everywhere") {
    // An empty batch from empty containers: every data pointer is null.
    double loss = -1.0;
    CHECK_NOTHROW(loss = kd.forward_backward(
                      {static_cast<const T*>(nullptr), 0, 10},
                      {static_cast<const T*>(nullptr), 0, 10},
                      lskd::matrix_view<T>(nullptr, 0, 10), lskd::matrix_view<T>(nullptr, 0, 10)));
    CHECK(loss == 0.0);
  }
}

TEMPLATE_TEST_CASE("a batch of one row matches the reference", "[properties][empty]", float_simd,
                   float_scalar, double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  random_logits random(31);
  for (const index cols : {2, 9, 40}) {
    const std::vector<T> student = random.normal<T>(1, cols);
    const std::vector<T> teacher = random.normal<T>(1, cols, 0.5, 2.0);
    for (const lskd::reduction reduction :
         {lskd::reduction::none, lskd::reduction::sum, lskd::reduction::batchmean}) {
      const lskd::kd_options options = options_with(true, 2.0, 1e-7, reduction);
      INFO(cols << " classes; " << describe(options));
      check_kd_against_reference(
          reference_kd_loss(student.data(), teacher.data(), 1, cols, options),
          run_kd<T, Arch>(options, student, teacher, 1, cols));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// (f) In place

TEMPLATE_TEST_CASE("gradients written over their own logits equal the out-of-place ones",
                   "[properties][in_place]", float_simd, float_scalar, double_simd,
                   double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  const index rows = 4;
  const index cols = 29;
  const index ld = 33;  // in place with padding between rows too
  random_logits random(41);
  const std::vector<T> student = random.normal<T>(rows, cols);
  const std::vector<T> teacher = random.normal<T>(rows, cols, 0.0, 2.0);
  for (const bool standardize : {true, false}) {
    const lskd::kd_options options = options_with(standardize, 2.0);
    const lskd::kd_loss<T, Arch> kd(options);
    const kd_outputs<T> apart = run_kd<T, Arch>(options, student, teacher, rows, cols);
    INFO("standardize " << standardize);

    SECTION("grad_student over student") {
      padded_matrix<T> s(rows, cols, ld, 1);
      padded_matrix<T> t(rows, cols, ld, 2);
      padded_matrix<T> gt(rows, cols, ld, 0);
      s.assign(student);
      t.assign(teacher);
      const double loss =
          kd.forward_backward(s.const_view(), t.const_view(), s.view(), gt.view());
      CHECK(loss == apart.loss);
      CHECK(bitwise_equal(s.dense(), apart.grad_student));
      CHECK(bitwise_equal(gt.dense(), apart.grad_teacher));
      CHECK(bitwise_equal(t.dense(), teacher));
      CHECK(s.padding_changed() == 0);
    }
    SECTION("grad_teacher over teacher") {
      padded_matrix<T> s(rows, cols, ld, 1);
      padded_matrix<T> t(rows, cols, ld, 2);
      padded_matrix<T> gs(rows, cols, ld, 0);
      s.assign(student);
      t.assign(teacher);
      const double loss =
          kd.forward_backward(s.const_view(), t.const_view(), gs.view(), t.view());
      CHECK(loss == apart.loss);
      CHECK(bitwise_equal(gs.dense(), apart.grad_student));
      CHECK(bitwise_equal(t.dense(), apart.grad_teacher));
      CHECK(bitwise_equal(s.dense(), student));
      CHECK(t.padding_changed() == 0);
    }
    SECTION("both at once") {
      padded_matrix<T> s(rows, cols, ld, 1);
      padded_matrix<T> t(rows, cols, ld, 2);
      s.assign(student);
      t.assign(teacher);
      const double loss = kd.forward_backward(s.const_view(), t.const_view(), s.view(), t.view());
      CHECK(loss == apart.loss);
      CHECK(bitwise_equal(s.dense(), apart.grad_student));
      CHECK(bitwise_equal(t.dense(), apart.grad_teacher));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// (g) Identical logits

TEMPLATE_TEST_CASE("identical student and teacher give zero loss and zero gradients",
                   "[properties][zero]", float_simd, float_scalar, double_simd, double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  random_logits random(51);
  for (const index cols : {2, 7, 100}) {
    const std::vector<T> logits = random.normal<T>(5, cols, 3.0, 2.0);
    for (const bool standardize : {true, false}) {
      const lskd::kd_options options = options_with(standardize, 2.0);
      INFO(cols << " classes; " << describe(options));
      // "Within rounding of 0": the tolerance of any result, with the reference's magnitudes.
      reference_kd ref = reference_kd_loss(logits.data(), logits.data(), 5, cols, options);
      check_kd_against_reference(ref, run_kd<T, Arch>(options, logits, logits, 5, cols));
      CHECK(std::fabs(ref.loss) <= 1e-18 * ref.loss_scale);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// (h) Reductions

TEMPLATE_TEST_CASE("the reductions relate as sum = rows * batchmean = sum of row losses",
                   "[properties][reduction]", float_simd, float_scalar, double_simd,
                   double_scalar) {
  using T = typename TestType::value_type;
  using Arch = typename TestType::arch;
  const index rows = 6;
  const index cols = 21;
  random_logits random(61);
  const std::vector<T> student = random.normal<T>(rows, cols);
  const std::vector<T> teacher = random.normal<T>(rows, cols, 0.0, 3.0);
  for (const bool standardize : {true, false}) {
    INFO("standardize " << standardize);
    const auto run = [&](lskd::reduction reduction) {
      return run_kd<T, Arch>(options_with(standardize, 2.0, 1e-7, reduction), student, teacher,
                             rows, cols);
    };
    const kd_outputs<T> none = run(lskd::reduction::none);
    const kd_outputs<T> sum = run(lskd::reduction::sum);
    const kd_outputs<T> mean = run(lskd::reduction::batchmean);

    // The row losses do not depend on the reduction, and every reduction adds them in row
    // order in double: none returns exactly what sum returns.
    CHECK(none.row_losses == sum.row_losses);
    CHECK(mean.row_losses == sum.row_losses);
    CHECK(none.loss == sum.loss);
    double total = 0.0;
    for (double row : none.row_losses) total += row;
    CHECK(total == sum.loss);
    // batchmean is that sum divided by rows (not by rows * classes): one rounding apart.
    LSKD_CHECK_NEAR(sum.loss, mean.loss * rows, 4 * roundoff<double>() * std::fabs(sum.loss));

    // Gradients: none and sum are the same bits; sum is rows times batchmean up to the rounding
    // of the coefficients to T (a few units of roundoff of each entry's terms).
    CHECK(bitwise_equal(none.grad_student, sum.grad_student));
    CHECK(bitwise_equal(none.grad_teacher, sum.grad_teacher));
    const reference_kd ref = reference_kd_loss(student.data(), teacher.data(), rows, cols,
                                               options_with(standardize, 2.0, 1e-7,
                                                            lskd::reduction::sum));
    closeness gs("grad_student of sum vs rows * grad_student of batchmean");
    closeness gt("grad_teacher of sum vs rows * grad_teacher of batchmean");
    for (std::size_t j = 0; j < sum.grad_student.size(); ++j) {
      gs.add(static_cast<index>(j), sum.grad_student[j],
             static_cast<wide>(mean.grad_student[j]) * rows,
             32 * roundoff<T>() * ref.grad_student_scale[j]);
      gt.add(static_cast<index>(j), sum.grad_teacher[j],
             static_cast<wide>(mean.grad_teacher[j]) * rows,
             32 * roundoff<T>() * ref.grad_teacher_scale[j]);
    }
    LSKD_CHECK_CLOSE(gs);
    LSKD_CHECK_CLOSE(gt);
  }
}

// ---------------------------------------------------------------------------------------------
// (i) SIMD against scalar

// Every architecture the compile flags allow runs the same checks: each has its own code for
// a row's tail (masked loads and stores on AVX-512 and AVX2, a copy on SSE2).
template <class T, class simd_arch>
void check_simd_against_scalar() {
  constexpr index w = static_cast<index>(xsimd::batch<T, simd_arch>::size);
  INFO("architecture " << lskd::simd::arch_name<simd_arch>() << ", " << w << " lanes");
  // A sweep's blocks hold 2 * 16 packs: 32w - 3 has its padded tail join the last block, 32w + 5
  // a full block and then the tail on its own, 64w + 1 two full blocks and a tail of one.
  const index lengths[] = {1,      2,      3,      7,      w - 1, w,   w + 1,
                           3 * w,  8 * w + 2,      32 * w - 3,    32 * w + 5,
                           64 * w + 1,             1000,   32000};
  std::uint64_t seed = 700;
  for (const index cols : lengths) {
    if (cols < 1) continue;
    const index rows = cols >= 1000 ? 2 : 3;
    random_logits random(++seed);
    const std::vector<T> student = random.normal<T>(rows, cols, 0.0, 2.0);
    const std::vector<T> teacher = random.normal<T>(rows, cols, 0.5, 3.0);
    for (const bool standardize : {true, false}) {
      lskd::kd_options options = options_with(standardize, 2.0);
      // One class has no unbiased std: standardize it with ddof 0 (std 0, a constant row).
      if (cols == 1) options.ddof = 0;
      INFO(cols << " classes; " << describe(options));

      // Misaligned: each matrix starts one element into its allocation, rows cols + 1 apart.
      padded_matrix<T> s(rows, cols, cols + 1, 1);
      padded_matrix<T> t(rows, cols, cols + 1, 1);
      s.assign(student);
      t.assign(teacher);
      kd_outputs<T> results[2];
      for (int path = 0; path < 2; ++path) {
        padded_matrix<T> gs(rows, cols, cols + 1, 1);
        padded_matrix<T> gt(rows, cols, cols + 1, 1);
        kd_outputs<T>& out = results[path];
        out.row_losses.resize(static_cast<std::size_t>(rows));
        out.loss = path == 0 ? lskd::kd_loss<T, simd_arch>(options).forward_backward(
                                   s.const_view(), t.const_view(), gs.view(), gt.view(),
                                   out.row_losses.data())
                             : lskd::kd_loss<T, lskd::simd::scalar>(options).forward_backward(
                                   s.const_view(), t.const_view(), gs.view(), gt.view(),
                                   out.row_losses.data());
        out.grad_student = gs.dense();
        out.grad_teacher = gt.dense();
        CHECK(gs.padding_changed() + gt.padding_changed() == 0);
      }

      // Both against the long-double reference; and against each other at the same tolerance
      // (the scalar result standing in for the exact one).
      const reference_kd ref = reference_kd_loss(student.data(), teacher.data(), rows, cols,
                                                 options);
      check_kd_against_reference(ref, results[0]);
      check_kd_against_reference(ref, results[1]);
      check_kd_against_reference(with_values_of(ref, results[1]), results[0]);
    }
  }
}

TEMPLATE_TEST_CASE("the SIMD path matches the scalar path for row lengths around the width",
                   "[properties][simd]", float, double) {
  using T = TestType;
#if XSIMD_WITH_SSE2
  check_simd_against_scalar<T, xsimd::sse2>();
#endif
#if XSIMD_WITH_AVX2 && XSIMD_WITH_FMA3_AVX2
  check_simd_against_scalar<T, xsimd::fma3<xsimd::avx2>>();
#endif
#if XSIMD_WITH_AVX512F
  check_simd_against_scalar<T, xsimd::avx512f>();
#endif
  if constexpr (!std::is_same<lskd::simd::default_arch, lskd::simd::scalar>::value) {
    check_simd_against_scalar<T, lskd::simd::default_arch>();
  }
}

}  // namespace lskd_test
