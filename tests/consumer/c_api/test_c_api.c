/* SPDX-License-Identifier: MIT */
/* The C API from C: results against a plain double-precision reference written here, gradients
 * against central finite differences, and the error paths (code, message naming the argument,
 * outputs untouched). With LSKD_ARCH set, it also checks the forced instruction set; exit code
 * 77 (reported as skipped by ctest) means the CPU lacks the one asked for. */

#include <lskd/c_api.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
static int checks = 0;

#define CHECK(condition, ...)                                  \
  do {                                                         \
    ++checks;                                                  \
    if (!(condition)) {                                        \
      ++failures;                                              \
      fprintf(stderr, "%s:%d: FAILED: %s: ", __FILE__, __LINE__, #condition); \
      fprintf(stderr, __VA_ARGS__);                            \
      fprintf(stderr, "\n");                                   \
    }                                                          \
  } while (0)

/* ---- Reference: one row's loss, straight from the definition, in long double. ---- */

static long double reference_row(const double* s, const double* t, int n,
                                 const lskd_kd_options* o) {
  long double zs[256], zt[256];
  const double* in[2] = {s, t};
  long double* out[2] = {zs, zt};
  for (int k = 0; k < 2; ++k) {
    long double mean = 0, var = 0, scale = 1;
    for (int c = 0; c < n; ++c) mean += in[k][c];
    mean /= n;
    for (int c = 0; c < n; ++c) var += (in[k][c] - mean) * (in[k][c] - mean);
    if (o->standardize) scale = 1 / (sqrtl(var / (n - o->ddof)) + o->eps);
    for (int c = 0; c < n; ++c) {
      out[k][c] = (o->standardize ? (in[k][c] - mean) * scale : in[k][c]) / o->temperature;
    }
  }
  long double ms = zs[0], mt = zt[0], ss = 0, st = 0, kl = 0;
  for (int c = 1; c < n; ++c) {
    if (zs[c] > ms) ms = zs[c];
    if (zt[c] > mt) mt = zt[c];
  }
  for (int c = 0; c < n; ++c) {
    ss += expl(zs[c] - ms);
    st += expl(zt[c] - mt);
  }
  for (int c = 0; c < n; ++c) {
    const long double log_pt = zt[c] - mt - logl(st);
    const long double log_ps = zs[c] - ms - logl(ss);
    kl += expl(log_pt) * (log_pt - log_ps);
  }
  return (o->scale_by_t2 ? (long double)o->temperature * o->temperature : 1) * kl;
}

/* The reduced loss of a dense rows x n batch (with NONE: the sum of the rows). */
static double reference_loss(const double* s, const double* t, int rows, int n,
                             const lskd_kd_options* o) {
  long double total = 0;
  for (int r = 0; r < rows; ++r) total += reference_row(s + r * n, t + r * n, n, o);
  if (o->reduction == LSKD_REDUCTION_BATCHMEAN && rows > 0) total /= rows;
  return (double)total;
}

/* ---- Helpers ---- */

static double uniform(unsigned* state) {
  *state = *state * 1664525u + 1013904223u;
  return (double)(*state >> 8) / 16777216.0;
}

static double max_abs(const double* x, int count) {
  double m = 0;
  for (int i = 0; i < count; ++i) m = fabs(x[i]) > m ? fabs(x[i]) : m;
  return m;
}

/* Copies a dense rows x n matrix into a buffer with leading dimension ld, padding with NaN so
 * that reading past a row's n classes would show. */
static void pad(const double* dense, int rows, int n, int ld, double* out64, float* out32) {
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < ld; ++c) {
      const double v = c < n ? dense[r * n + c] : NAN;
      out64[r * ld + c] = v;
      out32[r * ld + c] = (float)v;
    }
  }
}

enum { max_rows = 5, max_cols = 70, max_ld = 80 };

/* One configuration: loss against the reference (f64 and f32), gradients against finite
 * differences (f64) and against the f64 gradients (f32), NONE against SUM. */
static void check_configuration(int rows, int n, int ld, const lskd_kd_options* o,
                                unsigned seed) {
  double s[max_rows * max_cols], t[max_rows * max_cols];
  double s64[max_rows * max_ld], t64[max_rows * max_ld];
  float s32[max_rows * max_ld], t32[max_rows * max_ld];
  double gs64[max_rows * max_ld], gt64[max_rows * max_ld];
  float gs32[max_rows * max_ld], gt32[max_rows * max_ld];
  double losses[max_rows], loss64[max_rows], loss32[max_rows];
  unsigned state = seed;
  for (int i = 0; i < rows * n; ++i) {
    s[i] = 4 * uniform(&state) - 2;
    t[i] = 6 * uniform(&state) - 3;
  }
  /* The f32 path sees the inputs rounded to float; the reference and f64 use the same values. */
  for (int i = 0; i < rows * n; ++i) {
    s[i] = (float)s[i];
    t[i] = (float)t[i];
  }
  pad(s, rows, n, ld, s64, s32);
  pad(t, rows, n, ld, t64, t32);

  /* Sentinels: the padding of the gradients (columns n..ld-1) must stay as it is. */
  for (int i = 0; i < rows * ld; ++i) {
    gs64[i] = gt64[i] = 12345;
    gs32[i] = gt32[i] = 12345;
  }

  const int none = o->reduction == LSKD_REDUCTION_NONE;
  int code = lskd_kd_f64(s64, ld, t64, ld, rows, n, o, loss64, gs64, ld, gt64, ld);
  CHECK(code == LSKD_OK, "rows %d cols %d: code %d: %s", rows, n, code, lskd_last_error());
  code = lskd_kd_f32(s32, ld, t32, ld, rows, n, o, loss32, gs32, ld, gt32, ld);
  CHECK(code == LSKD_OK, "rows %d cols %d: code %d: %s", rows, n, code, lskd_last_error());
  CHECK(strcmp(lskd_last_error(), "") == 0, "after success: '%s'", lskd_last_error());

  /* Loss. */
  const int outputs = none ? rows : 1;
  for (int k = 0; k < outputs; ++k) {
    lskd_kd_options one = *o;
    const double expected = none ? reference_loss(s + k * n, t + k * n, 1, n, &one)
                                 : reference_loss(s, t, rows, n, o);
    const double tolerance64 = 1e-12 * (fabs(expected) + 1e-3);
    const double tolerance32 = 2e-5 * (fabs(expected) + 1e-2);
    CHECK(fabs(loss64[k] - expected) <= tolerance64,
          "f64 loss[%d] rows %d cols %d ld %d: expected %.17g, got %.17g, tolerance %.3g", k,
          rows, n, ld, expected, loss64[k], tolerance64);
    CHECK(fabs(loss32[k] - expected) <= tolerance32,
          "f32 loss[%d] rows %d cols %d ld %d: expected %.17g, got %.17g, tolerance %.3g", k,
          rows, n, ld, expected, loss32[k], tolerance32);
  }

  /* Gradients: central differences of the reduced loss, in double. */
  double dense_gs[max_rows * max_cols], dense_gt[max_rows * max_cols];
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < n; ++c) {
      dense_gs[r * n + c] = gs64[r * ld + c];
      dense_gt[r * n + c] = gt64[r * ld + c];
    }
  }
  /* The gradients' own size, with a floor: where a gradient is 0 analytically (two classes
   * standardized), what is computed is the roundoff of terms of order 1. */
  const double scale = max_abs(dense_gs, rows * n) + max_abs(dense_gt, rows * n) + 0.05;
  for (int which = 0; which < 2; ++which) {
    double* x = which == 0 ? s : t;
    const double* analytic = which == 0 ? dense_gs : dense_gt;
    for (int i = 0; i < rows * n; ++i) {
      const double saved = x[i], h = 1e-4;
      x[i] = saved + h;
      const double plus = reference_loss(s, t, rows, n, o);
      x[i] = saved - h;
      const double minus = reference_loss(s, t, rows, n, o);
      x[i] = saved;
      const double numeric = (plus - minus) / (2 * h);
      CHECK(fabs(analytic[i] - numeric) <= 1e-6 * scale,
            "%s gradient [%d] rows %d cols %d: finite differences %.12g, analytic %.12g",
            which == 0 ? "student" : "teacher", i, rows, n, numeric, analytic[i]);
    }
  }

  /* f32 gradients against f64, and the padding untouched. */
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < ld; ++c) {
      const int i = r * ld + c;
      if (c >= n) {
        CHECK(gs64[i] == 12345 && gt64[i] == 12345 && gs32[i] == 12345 && gt32[i] == 12345,
              "padding (%d, %d) of a gradient was written", r, c);
        continue;
      }
      CHECK(fabs(gs32[i] - gs64[i]) <= 2e-5 * scale, "f32 student gradient (%d, %d): %.9g vs %.9g",
            r, c, gs32[i], gs64[i]);
      CHECK(fabs(gt32[i] - gt64[i]) <= 2e-5 * scale, "f32 teacher gradient (%d, %d): %.9g vs %.9g",
            r, c, gt32[i], gt64[i]);
    }
  }

  /* Forward alone, and the teacher's gradient alone, give the same numbers. */
  double grad_teacher_only[max_rows * max_ld];
  code = lskd_kd_f64(s64, ld, t64, ld, rows, n, o, losses, NULL, 0, NULL, 0);
  /* (forward alone takes another sweep: the same up to rounding) */
  CHECK(code == LSKD_OK && fabs(losses[0] - loss64[0]) <= 1e-14 * fabs(loss64[0]) + 1e-300,
        "forward alone: code %d, %.17g vs %.17g", code, losses[0], loss64[0]);
  code = lskd_kd_f64(s64, ld, t64, ld, rows, n, o, losses, NULL, 0, grad_teacher_only, ld);
  CHECK(code == LSKD_OK, "teacher gradient alone: code %d: %s", code, lskd_last_error());
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < n; ++c) {
      CHECK(fabs(grad_teacher_only[r * ld + c] - gt64[r * ld + c]) <= 1e-14 * scale,
            "teacher-only gradient (%d, %d): %.17g vs %.17g", r, c, grad_teacher_only[r * ld + c],
            gt64[r * ld + c]);
    }
  }
}

/* ---- Error paths ---- */

static void check_errors(void) {
  double s[6] = {1, 2, 3, 4, 5, 6}, t[6] = {0.5, -1, 2, 3, 0, 1};
  double gs[6], gt[6], loss[2] = {-42, -42};
  lskd_kd_options o;
  lskd_kd_options_init(&o);
  for (int i = 0; i < 6; ++i) gs[i] = gt[i] = -7;

#define EXPECT_ERROR(call, expected_code, fragment)                                         \
  do {                                                                                      \
    const int code_ = (call);                                                               \
    CHECK(code_ == (expected_code), "%s: code %d, expected %d (%s)", #call, code_,          \
          (expected_code), lskd_last_error());                                              \
    CHECK(strstr(lskd_last_error(), (fragment)) != NULL, "%s: message '%s' lacks '%s'",     \
          #call, lskd_last_error(), (fragment));                                            \
    CHECK(loss[0] == -42 && loss[1] == -42, "%s wrote the loss", #call);                    \
    for (int i_ = 0; i_ < 6; ++i_) {                                                        \
      CHECK(gs[i_] == -7 && gt[i_] == -7, "%s wrote a gradient at %d", #call, i_);          \
    }                                                                                       \
  } while (0)

  /* Leading dimensions, sizes, pointers. */
  EXPECT_ERROR(lskd_kd_f64(s, 2, t, 3, 2, 3, &o, loss, gs, 3, gt, 3), LSKD_ERROR_INVALID_ARGUMENT,
               "'ld_student'");
  EXPECT_ERROR(lskd_kd_f64(s, 3, t, 1, 2, 3, &o, loss, gs, 3, gt, 3), LSKD_ERROR_INVALID_ARGUMENT,
               "'ld_teacher'");
  EXPECT_ERROR(lskd_kd_f64(s, 3, t, 3, 2, 3, &o, loss, gs, 2, gt, 3), LSKD_ERROR_INVALID_ARGUMENT,
               "'ld_grad_student'");
  EXPECT_ERROR(lskd_kd_f64(s, 3, t, 3, 2, 3, &o, loss, gs, 3, gt, -1), LSKD_ERROR_INVALID_ARGUMENT,
               "'ld_grad_teacher'");
  EXPECT_ERROR(lskd_kd_f64(s, 3, t, 3, -1, 3, &o, loss, gs, 3, gt, 3), LSKD_ERROR_INVALID_ARGUMENT,
               "'rows'");
  EXPECT_ERROR(lskd_kd_f64(s, 3, t, 3, 2, 0, &o, loss, gs, 3, gt, 3), LSKD_ERROR_INVALID_ARGUMENT,
               "'cols'");
  EXPECT_ERROR(lskd_kd_f64(s, 3, t, 3, 2, 3, &o, NULL, gs, 3, gt, 3), LSKD_ERROR_INVALID_ARGUMENT,
               "'loss'");
  EXPECT_ERROR(lskd_kd_f64(NULL, 3, t, 3, 2, 3, &o, loss, gs, 3, gt, 3),
               LSKD_ERROR_INVALID_ARGUMENT, "'student'");
  EXPECT_ERROR(lskd_kd_f64(s, 3, NULL, 3, 2, 3, &o, loss, gs, 3, gt, 3),
               LSKD_ERROR_INVALID_ARGUMENT, "'teacher'");
  /* A gradient that overlaps the other input. */
  EXPECT_ERROR(lskd_kd_f64(s, 3, t, 3, 2, 3, &o, loss, (double*)t, 3, NULL, 0),
               LSKD_ERROR_INVALID_ARGUMENT, "'grad_student' overlaps 'teacher'");
  /* The function name leads the message. */
  EXPECT_ERROR(lskd_kd_f32((const float*)s, 1, (const float*)t, 3, 2, 3, &o, loss, NULL, 0, NULL, 0),
               LSKD_ERROR_INVALID_ARGUMENT, "lskd_kd_f32: 'ld_student'");

  /* Options. */
  lskd_kd_options bad = o;
  bad.temperature = 0;
  EXPECT_ERROR(lskd_kd_f64(s, 3, t, 3, 2, 3, &bad, loss, gs, 3, gt, 3),
               LSKD_ERROR_INVALID_ARGUMENT, "'temperature'");
  bad = o;
  bad.eps = -1;
  EXPECT_ERROR(lskd_kd_f64(s, 3, t, 3, 2, 3, &bad, loss, gs, 3, gt, 3),
               LSKD_ERROR_INVALID_ARGUMENT, "'eps'");
  bad = o;
  bad.ddof = 2;
  EXPECT_ERROR(lskd_kd_f64(s, 3, t, 3, 2, 3, &bad, loss, gs, 3, gt, 3),
               LSKD_ERROR_INVALID_ARGUMENT, "'ddof'");
  bad = o;
  bad.reduction = 3;
  EXPECT_ERROR(lskd_kd_f64(s, 3, t, 3, 2, 3, &bad, loss, gs, 3, gt, 3),
               LSKD_ERROR_INVALID_ARGUMENT, "'options->reduction'");
  bad = o;
  bad.standardize = 2;
  EXPECT_ERROR(lskd_kd_f64(s, 3, t, 3, 2, 3, &bad, loss, gs, 3, gt, 3),
               LSKD_ERROR_INVALID_ARGUMENT, "'options->standardize'");
  bad = o;
  bad.scale_by_t2 = -1;
  EXPECT_ERROR(lskd_kd_f64(s, 3, t, 3, 2, 3, &bad, loss, gs, 3, gt, 3),
               LSKD_ERROR_INVALID_ARGUMENT, "'options->scale_by_t2'");
  /* One class cannot have an unbiased std. */
  EXPECT_ERROR(lskd_kd_f64(s, 1, t, 1, 2, 1, &o, loss, gs, 1, gt, 1), LSKD_ERROR_INVALID_ARGUMENT,
               "ddof");

  /* Bad data: a NaN teacher logit in row 1, and a constant row with eps 0. */
  t[4] = NAN;
  EXPECT_ERROR(lskd_kd_f64(s, 3, t, 3, 2, 3, &o, loss, gs, 3, gt, 3), LSKD_ERROR_DOMAIN,
               "teacher logits row 1");
  t[4] = 0;
  bad = o;
  bad.eps = 0;
  s[3] = s[4] = s[5] = 1;
  EXPECT_ERROR(lskd_kd_f64(s, 3, t, 3, 2, 3, &bad, loss, gs, 3, gt, 3), LSKD_ERROR_DOMAIN,
               "student logits row 1");
  /* The same with eps > 0 is fine: the constant row's Z-score is 0. */
  CHECK(lskd_kd_f64(s, 3, t, 3, 2, 3, &o, loss, gs, 3, gt, 3) == LSKD_OK, "constant row: %s",
        lskd_last_error());
  CHECK(strcmp(lskd_last_error(), "") == 0, "a success resets the message: '%s'",
        lskd_last_error());
#undef EXPECT_ERROR

  /* NULL options means the defaults. */
  double with_null = 0, with_defaults = 1;
  CHECK(lskd_kd_f64(s, 3, t, 3, 2, 3, NULL, &with_null, NULL, 0, NULL, 0) == LSKD_OK, "%s",
        lskd_last_error());
  CHECK(lskd_kd_f64(s, 3, t, 3, 2, 3, &o, &with_defaults, NULL, 0, NULL, 0) == LSKD_OK, "%s",
        lskd_last_error());
  CHECK(with_null == with_defaults, "NULL options %.17g, defaults %.17g", with_null,
        with_defaults);

  /* No rows: loss 0, nothing else written; with NONE, nothing written at all. */
  double empty_loss = -1;
  CHECK(lskd_kd_f64(NULL, 3, NULL, 3, 0, 3, &o, &empty_loss, NULL, 0, NULL, 0) == LSKD_OK, "%s",
        lskd_last_error());
  CHECK(empty_loss == 0, "empty batch loss %g", empty_loss);

  /* The defaults. */
  CHECK(o.temperature == 2 && o.standardize == 1 && o.ddof == 1 && o.eps == 1e-7 &&
            o.reduction == LSKD_REDUCTION_BATCHMEAN && o.scale_by_t2 == 1,
        "%s", "lskd_kd_options_init");
  lskd_kd_options_init(NULL); /* does nothing */
}

/* ---- Threads: calls run at once, each thread with its own error message ---- */

typedef struct {
  int fail;        /* this thread makes failing calls (bad ld) or good ones */
  int mismatches;  /* what went wrong, counted (CHECK is not thread-safe) */
  double loss;
} thread_job;

static void* thread_body(void* argument) {
  thread_job* job = (thread_job*)argument;
  double s[40], t[40];
  for (int i = 0; i < 40; ++i) {
    s[i] = sin(0.37 * i);
    t[i] = cos(0.11 * i);
  }
  for (int k = 0; k < 500; ++k) {
    double loss = -1, grad[40];
    const int code = lskd_kd_f64(s, job->fail ? 3 : 10, t, 10, 4, 10, NULL, &loss, grad, 10,
                                 NULL, 0);
    const char* message = lskd_last_error();
    if (job->fail) {
      job->mismatches += code != LSKD_ERROR_INVALID_ARGUMENT || loss != -1 ||
                         strstr(message, "'ld_student' is 3") == NULL;
    } else {
      job->mismatches += code != LSKD_OK || strcmp(message, "") != 0 ||
                         (k > 0 && loss != job->loss);
      job->loss = loss;
    }
  }
  return NULL;
}

static void check_threads(void) {
  enum { count = 4 };
  pthread_t threads[count];
  thread_job jobs[count];
  for (int i = 0; i < count; ++i) {
    jobs[i].fail = i % 2;
    jobs[i].mismatches = 0;
    jobs[i].loss = 0;
    CHECK(pthread_create(&threads[i], NULL, thread_body, &jobs[i]) == 0, "thread %d", i);
  }
  for (int i = 0; i < count; ++i) pthread_join(threads[i], NULL);
  for (int i = 0; i < count; ++i) {
    CHECK(jobs[i].mismatches == 0, "thread %d (%s calls): %d wrong results or messages", i,
          jobs[i].fail ? "failing" : "good", jobs[i].mismatches);
  }
  CHECK(jobs[0].loss == jobs[2].loss, "threads disagree: %.17g vs %.17g", jobs[0].loss,
        jobs[2].loss);
}

/* ---- LSKD_ARCH ---- */

/* Returns -1 to go on, or the exit code. */
static int check_forced_arch(void) {
  const char* requested = getenv("LSKD_ARCH");
  const char* arch = lskd_simd_arch();
  printf("lskd %s, arch %s, LSKD_ARCH=%s\n", lskd_version(), arch, requested ? requested : "");
  if (requested == NULL || *requested == '\0' || strcmp(requested, "auto") == 0) {
    CHECK(strcmp(arch, "none") != 0, "%s", "automatic choice");
    return -1;
  }
  const int known = strcmp(requested, "scalar") == 0 || strcmp(requested, "sse2") == 0 ||
                    strcmp(requested, "avx2") == 0 || strcmp(requested, "avx512f") == 0;
  if (strcmp(arch, "none") == 0) {
    /* Refused: every call must fail and say why. */
    double s[2] = {0, 1}, loss = -42;
    const int code = lskd_kd_f64(s, 2, s, 2, 1, 2, NULL, &loss, NULL, 0, NULL, 0);
    CHECK(code == LSKD_ERROR_INVALID_ARGUMENT, "code %d", code);
    CHECK(strstr(lskd_last_error(), "LSKD_ARCH") != NULL, "message '%s'", lskd_last_error());
    CHECK(loss == -42, "%s", "loss written");
    printf("refused as expected: %s\n", lskd_last_error());
    if (failures == 0 && known) {
      printf("SKIPPED: this CPU lacks %s\n", requested);
      return 77;
    }
    return failures == 0 ? 0 : 1;
  }
  CHECK(known, "LSKD_ARCH=%s is not a valid name, yet %s was chosen", requested, arch);
  const char* expected = strcmp(requested, "avx2") == 0 ? "fma3+avx2" : requested;
  CHECK(strcmp(arch, expected) == 0, "LSKD_ARCH=%s but running %s", requested, arch);
  return -1;
}

int main(void) {
  const int early = check_forced_arch();
  if (early >= 0) return early;

  const int shapes[][3] = {{1, 2, 2},  {3, 3, 5},   {2, 7, 7},   {4, 8, 11},  {3, 16, 16},
                           {2, 17, 20}, {5, 33, 40}, {2, 64, 64}, {3, 65, 80}};
  unsigned seed = 1;
  for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; ++k) {
    for (int variant = 0; variant < 6; ++variant) {
      lskd_kd_options o;
      lskd_kd_options_init(&o);
      o.standardize = variant % 2 == 0;
      o.reduction = variant / 2; /* none, sum, batchmean */
      if (k % 3 == 1) o.ddof = 0;
      if (k % 4 == 2) o.scale_by_t2 = 0;
      if (k % 2 == 1) o.temperature = 3.5;
      check_configuration(shapes[k][0], shapes[k][1], shapes[k][2], &o, seed++);
    }
  }
  check_errors();
  check_threads();

  printf("%d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
