/* SPDX-License-Identifier: MIT */
/* The C API from C: results against a plain double-precision reference written here, gradients
 * against central finite differences, and the error paths (code, message naming the argument,
 * outputs untouched). With LSKD_ARCH set, it also checks the forced instruction set; exit code
 * 77 (reported as skipped by ctest) means the CPU lacks the one asked for. */

#include <lskd/c_api.h>

#include <math.h>
#include <pthread.h>
#include <stdint.h>
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

/* ---- The entry points beyond plain KD ---- */

/* Fills a rows x n batch of logits in [-3, 3). */
static void fill_random(double* x, int count, unsigned* seed) {
  for (int i = 0; i < count; ++i) x[i] = 6 * uniform(seed) - 3;
}

static double max_abs_diff(const double* a, const double* b, int count) {
  double m = 0;
  for (int i = 0; i < count; ++i) m = fabs(a[i] - b[i]) > m ? fabs(a[i] - b[i]) : m;
  return m;
}

static double rel_diff(double a, double b) {
  const double scale = fabs(b) > 1e-300 ? fabs(b) : 1;
  return fabs(a - b) / scale;
}

static void to_float(const double* x, float* out, int count) {
  for (int i = 0; i < count; ++i) out[i] = (float)x[i];
}

static void to_double(const float* x, double* out, int count) {
  for (int i = 0; i < count; ++i) out[i] = x[i];
}

enum { xr = 5, xn = 9, xc = xr * xn };

/* Weighted rows: NULL and all-ones weights give lskd_kd_f64/f32; zero weights mask rows (even
 * NaN ones); the normalizer divides; grad_temperature against finite differences. */
static void check_weighted(unsigned seed) {
  double s[xc], t[xc], gs[xc], gt[xc], gs_ref[xc], gt_ref[xc], loss = 0, loss_ref = 0, dtau = 0;
  fill_random(s, xc, &seed);
  fill_random(t, xc, &seed);
  for (int variant = 0; variant < 4; ++variant) {
    lskd_kd_options o;
    lskd_kd_options_init(&o);
    o.standardize = variant % 2 == 0;
    o.reduction = variant < 2 ? LSKD_REDUCTION_BATCHMEAN : LSKD_REDUCTION_SUM;
    o.temperature = 2.5;
    CHECK(lskd_kd_f64(s, xn, t, xn, xr, xn, &o, &loss_ref, gs_ref, xn, gt_ref, xn) == LSKD_OK,
          "%s", lskd_last_error());

    /* NULL weights, then all ones: the plain loss. */
    const double ones[xr] = {1, 1, 1, 1, 1};
    for (int k = 0; k < 2; ++k) {
      CHECK(lskd_kd_weighted_f64(s, xn, t, xn, xr, xn, &o, k ? ones : NULL, 0, &loss, gs, xn, gt,
                                 xn, &dtau) == LSKD_OK,
            "%s", lskd_last_error());
      CHECK(rel_diff(loss, loss_ref) < 1e-14, "weighted (%d) loss %.17g vs %.17g", k, loss,
            loss_ref);
      CHECK(max_abs_diff(gs, gs_ref, xc) < 1e-14 * (1 + max_abs(gs_ref, xc)), "%s",
            "weighted grad_student");
      CHECK(max_abs_diff(gt, gt_ref, xc) < 1e-14 * (1 + max_abs(gt_ref, xc)), "%s",
            "weighted grad_teacher");
    }

    /* grad_temperature against central differences of the loss in the temperature. */
    {
      const double h = 1e-5;
      double up = 0, down = 0, tau_only = 0;
      lskd_kd_options p = o;
      p.temperature = o.temperature + h;
      CHECK(lskd_kd_f64(s, xn, t, xn, xr, xn, &p, &up, NULL, 0, NULL, 0) == LSKD_OK, "%s",
            lskd_last_error());
      p.temperature = o.temperature - h;
      CHECK(lskd_kd_f64(s, xn, t, xn, xr, xn, &p, &down, NULL, 0, NULL, 0) == LSKD_OK, "%s",
            lskd_last_error());
      const double fd = (up - down) / (2 * h);
      CHECK(fabs(dtau - fd) < 1e-7 * (1 + fabs(fd)), "grad_temperature %.12g vs fd %.12g", dtau,
            fd);
      /* Asked for alone. */
      CHECK(lskd_kd_weighted_f64(s, xn, t, xn, xr, xn, &o, NULL, 0, &loss, NULL, 0, NULL, 0,
                                 &tau_only) == LSKD_OK,
            "%s", lskd_last_error());
      CHECK(rel_diff(tau_only, dtau) < 1e-14, "grad_temperature alone %.17g vs %.17g", tau_only,
            dtau);
    }

    /* Weights with zeros; a masked row holds NaN and is not read. */
    {
      const double w[xr] = {1, 0, 2, 0.5, 0};
      double row_loss[xr], sm[xc], tm[xc], gsw[xc], gtw[xc], row_grad[xn], row_grad_t[xn];
      memcpy(sm, s, sizeof sm);
      memcpy(tm, t, sizeof tm);
      sm[1 * xn + 3] = NAN;
      tm[4 * xn] = NAN;
      lskd_kd_options none = o;
      none.reduction = LSKD_REDUCTION_NONE;
      CHECK(lskd_kd_f64(s, xn, t, xn, xr, xn, &none, row_loss, NULL, 0, NULL, 0) == LSKD_OK,
            "%s", lskd_last_error());
      for (int norm = 0; norm < 2; ++norm) {
        const double normalizer = norm && o.reduction == LSKD_REDUCTION_BATCHMEAN ? 10 : 0;
        const double divisor = o.reduction == LSKD_REDUCTION_SUM ? 1 : normalizer > 0 ? 10 : 3.5;
        double expected = 0;
        for (int r = 0; r < xr; ++r) expected += w[r] * row_loss[r];
        expected /= divisor;
        CHECK(lskd_kd_weighted_f64(sm, xn, tm, xn, xr, xn, &o, w, normalizer, &loss, gsw, xn, gtw,
                                   xn, NULL) == LSKD_OK,
              "%s", lskd_last_error());
        CHECK(rel_diff(loss, expected) < 1e-13, "masked loss %.17g vs %.17g", loss, expected);
        for (int r = 0; r < xr; ++r) {
          lskd_kd_options sum = o;
          sum.reduction = LSKD_REDUCTION_SUM;
          CHECK(lskd_kd_f64(s + r * xn, xn, t + r * xn, xn, 1, xn, &sum, &loss_ref, row_grad, xn,
                            row_grad_t, xn) == LSKD_OK,
                "%s", lskd_last_error());
          for (int c = 0; c < xn; ++c) {
            const double e = w[r] / divisor * row_grad[c], et = w[r] / divisor * row_grad_t[c];
            CHECK(fabs(gsw[r * xn + c] - e) < 1e-13 * (1 + fabs(e)),
                  "row %d class %d: %.17g vs %.17g", r, c, gsw[r * xn + c], e);
            CHECK(fabs(gtw[r * xn + c] - et) < 1e-13 * (1 + fabs(et)),
                  "row %d class %d (teacher)", r, c);
          }
        }
      }
      /* NONE: weight * loss per row. */
      double per_row[xr];
      CHECK(lskd_kd_weighted_f64(sm, xn, tm, xn, xr, xn, &none, w, 0, per_row, NULL, 0, NULL, 0,
                                 NULL) == LSKD_OK,
            "%s", lskd_last_error());
      for (int r = 0; r < xr; ++r) {
        CHECK(rel_diff(per_row[r], w[r] * row_loss[r]) < 1e-13 || (w[r] == 0 && per_row[r] == 0),
              "row %d: %.17g vs %.17g", r, per_row[r], w[r] * row_loss[r]);
      }
    }

    /* float against double. */
    {
      float s32[xc], t32[xc], g32[xc], w32[xr] = {1, 0, 2, 0.5f, 1};
      const double w64[xr] = {1, 0, 2, 0.5, 1};
      double g64[xc], gd[xc], loss32 = 0, loss64 = 0, dtau32 = 0, dtau64 = 0;
      to_float(s, s32, xc);
      to_float(t, t32, xc);
      double s_back[xc], t_back[xc];
      to_double(s32, s_back, xc);
      to_double(t32, t_back, xc);
      CHECK(lskd_kd_weighted_f32(s32, xn, t32, xn, xr, xn, &o, w32, 0, &loss32, g32, xn, NULL, 0,
                                 &dtau32) == LSKD_OK,
            "%s", lskd_last_error());
      CHECK(lskd_kd_weighted_f64(s_back, xn, t_back, xn, xr, xn, &o, w64, 0, &loss64, g64, xn, NULL,
                                 0, &dtau64) == LSKD_OK,
            "%s", lskd_last_error());
      to_double(g32, gd, xc);
      CHECK(rel_diff(loss32, loss64) < 1e-5, "f32 loss %.9g vs %.9g", loss32, loss64);
      CHECK(fabs(dtau32 - dtau64) < 1e-5 * (1 + fabs(dtau64)), "f32 dtau %.9g vs %.9g", dtau32,
            dtau64);
      CHECK(max_abs_diff(gd, g64, xc) < 1e-5 * (1 + max_abs(g64, xc)), "%s", "f32 gradient");
    }
  }
}

/* ---- DKD: a long-double reference written here ---- */

static long double dkd_reference_row(const double* s, const double* t, int n, int64_t k,
                                     const lskd_dkd_options* o) {
  long double z[2][64];
  const double* in[2] = {s, t};
  for (int side = 0; side < 2; ++side) {
    long double mean = 0, var = 0, scale = 1;
    for (int c = 0; c < n; ++c) mean += in[side][c];
    mean /= n;
    for (int c = 0; c < n; ++c) var += (in[side][c] - mean) * (in[side][c] - mean);
    if (o->standardize) scale = 1 / (sqrtl(var / (n - o->ddof)) + o->eps);
    for (int c = 0; c < n; ++c) {
      z[side][c] = (o->standardize ? (in[side][c] - mean) * scale : in[side][c]) / o->temperature;
    }
  }
  /* p (all classes) and q (all but k) for both sides. */
  long double p[2][64], q[2][64];
  for (int side = 0; side < 2; ++side) {
    long double m = -INFINITY, total = 0, rest = 0;
    for (int c = 0; c < n; ++c) m = z[side][c] > m ? z[side][c] : m;
    for (int c = 0; c < n; ++c) total += expl(z[side][c] - m);
    for (int c = 0; c < n; ++c) {
      p[side][c] = expl(z[side][c] - m) / total;
      if (c != k) rest += expl(z[side][c] - m);
    }
    for (int c = 0; c < n; ++c) q[side][c] = c == k ? 0 : expl(z[side][c] - m) / rest;
  }
  const long double ps = p[0][k], pt = p[1][k];
  long double tckd = pt * logl(pt / ps) + (1 - pt) * logl((1 - pt) / (1 - ps)), nckd = 0;
  for (int c = 0; c < n; ++c) {
    if (c != k) nckd += q[1][c] * logl(q[1][c] / q[0][c]);
  }
  const long double t2 = o->scale_by_t2 ? (long double)o->temperature * o->temperature : 1;
  return t2 * (o->alpha * tckd + o->beta * nckd);
}

static double dkd_reference(const double* s, const double* t, int rows, int n,
                            const int64_t* targets, const lskd_dkd_options* o) {
  long double total = 0;
  for (int r = 0; r < rows; ++r) total += dkd_reference_row(s + r * n, t + r * n, n, targets[r], o);
  if (o->reduction == LSKD_REDUCTION_BATCHMEAN && rows > 0) total /= rows;
  return (double)total;
}

static void check_dkd(unsigned seed) {
  lskd_dkd_options d;
  memset(&d, 0, sizeof d);
  lskd_dkd_options_init(&d);
  CHECK(d.temperature == 4 && d.alpha == 1 && d.beta == 8 && d.standardize == 0 && d.ddof == 1 &&
            d.eps == 1e-7 && d.reduction == LSKD_REDUCTION_BATCHMEAN && d.scale_by_t2 == 1,
        "%s", "lskd_dkd_options_init's defaults");
  lskd_dkd_options_init(NULL);

  double s[xc], t[xc], gs[xc], gt[xc], loss = 0, dtau = 0;
  const int64_t targets[xr] = {0, 8, 3, 3, 5};
  fill_random(s, xc, &seed);
  fill_random(t, xc, &seed);
  for (int variant = 0; variant < 4; ++variant) {
    lskd_dkd_options o;
    lskd_dkd_options_init(&o);
    o.standardize = variant % 2;
    if (variant >= 2) {
      o.reduction = LSKD_REDUCTION_SUM;
      o.alpha = 0.5;
      o.beta = 2;
      o.temperature = 2;
      o.ddof = 0;
    }
    const double expected = dkd_reference(s, t, xr, xn, targets, &o);
    CHECK(lskd_dkd_f64(s, xn, t, xn, xr, xn, targets, &o, &loss, gs, xn, gt, xn, &dtau) == LSKD_OK,
          "%s", lskd_last_error());
    CHECK(rel_diff(loss, expected) < 1e-12, "DKD loss %.17g vs reference %.17g", loss, expected);

    /* Gradients against central differences of the reference. */
    double sp[xc], tp[xc];
    memcpy(sp, s, sizeof sp);
    memcpy(tp, t, sizeof tp);
    const double h = 1e-5;
    for (int i = 0; i < xc; i += 4) {
      sp[i] = s[i] + h;
      const double up = dkd_reference(sp, t, xr, xn, targets, &o);
      sp[i] = s[i] - h;
      const double down = dkd_reference(sp, t, xr, xn, targets, &o);
      sp[i] = s[i];
      CHECK(fabs(gs[i] - (up - down) / (2 * h)) < 1e-7, "DKD grad_student[%d] %.12g vs fd %.12g",
            i, gs[i], (up - down) / (2 * h));
      tp[i] = t[i] + h;
      const double upt = dkd_reference(s, tp, xr, xn, targets, &o);
      tp[i] = t[i] - h;
      const double downt = dkd_reference(s, tp, xr, xn, targets, &o);
      tp[i] = t[i];
      CHECK(fabs(gt[i] - (upt - downt) / (2 * h)) < 1e-7, "DKD grad_teacher[%d] %.12g vs fd %.12g",
            i, gt[i], (upt - downt) / (2 * h));
    }
    lskd_dkd_options p = o;
    p.temperature = o.temperature + h;
    const double up = dkd_reference(s, t, xr, xn, targets, &p);
    p.temperature = o.temperature - h;
    const double down = dkd_reference(s, t, xr, xn, targets, &p);
    CHECK(fabs(dtau - (up - down) / (2 * h)) < 1e-7 * (1 + fabs(dtau)),
          "DKD grad_temperature %.12g vs fd %.12g", dtau, (up - down) / (2 * h));

    /* NONE: the rows. */
    double rows_loss[xr];
    lskd_dkd_options none = o;
    none.reduction = LSKD_REDUCTION_NONE;
    CHECK(lskd_dkd_f64(s, xn, t, xn, xr, xn, targets, &none, rows_loss, NULL, 0, NULL, 0, NULL) ==
              LSKD_OK,
          "%s", lskd_last_error());
    for (int r = 0; r < xr; ++r) {
      const double e = (double)dkd_reference_row(s + r * xn, t + r * xn, xn, targets[r], &o);
      CHECK(rel_diff(rows_loss[r], e) < 1e-12, "DKD row %d %.17g vs %.17g", r, rows_loss[r], e);
    }

    /* float. */
    float s32[xc], t32[xc], g32[xc];
    double gd[xc], loss32 = 0;
    to_float(s, s32, xc);
    to_float(t, t32, xc);
    CHECK(lskd_dkd_f32(s32, xn, t32, xn, xr, xn, targets, &o, &loss32, g32, xn, NULL, 0, NULL) ==
              LSKD_OK,
          "%s", lskd_last_error());
    to_double(g32, gd, xc);
    CHECK(rel_diff(loss32, loss) < 1e-5, "DKD f32 loss %.9g vs %.9g", loss32, loss);
    CHECK(max_abs_diff(gd, gs, xc) < 1e-5 * (1 + max_abs(gs, xc)), "%s", "DKD f32 gradient");
  }
  /* NULL options: the defaults. */
  {
    lskd_dkd_options o;
    lskd_dkd_options_init(&o);
    double a = 0, b = 0;
    CHECK(lskd_dkd_f64(s, xn, t, xn, xr, xn, targets, NULL, &a, NULL, 0, NULL, 0, NULL) == LSKD_OK,
          "%s", lskd_last_error());
    CHECK(lskd_dkd_f64(s, xn, t, xn, xr, xn, targets, &o, &b, NULL, 0, NULL, 0, NULL) == LSKD_OK,
          "%s", lskd_last_error());
    CHECK(a == b, "DKD NULL options %.17g vs defaults %.17g", a, b);
  }
}

/* Class weights: all ones with ddof 0 give the plain loss with ddof 0. */
static void check_class_weighted(unsigned seed) {
  double s[xc], t[xc], gs[xc], gt[xc], gs_ref[xc], gt_ref[xc], cw[xn], loss = 0, loss_ref = 0;
  double dtau = 0;
  fill_random(s, xc, &seed);
  fill_random(t, xc, &seed);
  for (int c = 0; c < xn; ++c) cw[c] = 1;
  lskd_kd_options o;
  lskd_kd_options_init(&o);
  o.ddof = 0;
  o.eps = 1e-3;
  CHECK(lskd_kd_f64(s, xn, t, xn, xr, xn, &o, &loss_ref, gs_ref, xn, gt_ref, xn) == LSKD_OK, "%s",
        lskd_last_error());
  CHECK(lskd_kd_class_weighted_f64(s, xn, t, xn, xr, xn, &o, cw, &loss, gs, xn, gt, xn, &dtau) ==
            LSKD_OK,
        "%s", lskd_last_error());
  CHECK(rel_diff(loss, loss_ref) < 1e-13, "class weights of 1: %.17g vs %.17g", loss, loss_ref);
  CHECK(max_abs_diff(gs, gs_ref, xc) < 1e-13 * (1 + max_abs(gs_ref, xc)), "%s",
        "class weights of 1: grad_student");
  CHECK(max_abs_diff(gt, gt_ref, xc) < 1e-13 * (1 + max_abs(gt_ref, xc)), "%s",
        "class weights of 1: grad_teacher");

  /* Uneven weights: grad_temperature against central differences; float against double. */
  for (int c = 0; c < xn; ++c) cw[c] = 0.25 + c % 3;
  CHECK(lskd_kd_class_weighted_f64(s, xn, t, xn, xr, xn, &o, cw, &loss, NULL, 0, NULL, 0, &dtau) ==
            LSKD_OK,
        "%s", lskd_last_error());
  const double h = 1e-5;
  double up = 0, down = 0;
  lskd_kd_options p = o;
  p.temperature = o.temperature + h;
  CHECK(lskd_kd_class_weighted_f64(s, xn, t, xn, xr, xn, &p, cw, &up, NULL, 0, NULL, 0, NULL) ==
            LSKD_OK,
        "%s", lskd_last_error());
  p.temperature = o.temperature - h;
  CHECK(lskd_kd_class_weighted_f64(s, xn, t, xn, xr, xn, &p, cw, &down, NULL, 0, NULL, 0, NULL) ==
            LSKD_OK,
        "%s", lskd_last_error());
  CHECK(fabs(dtau - (up - down) / (2 * h)) < 1e-7 * (1 + fabs(dtau)),
        "class-weighted grad_temperature %.12g vs fd %.12g", dtau, (up - down) / (2 * h));
  CHECK(loss != loss_ref, "%s", "uneven class weights change the loss");
  float s32[xc], t32[xc];
  double s_back[xc], t_back[xc], loss32 = 0, loss64 = 0;
  to_float(s, s32, xc);
  to_float(t, t32, xc);
  to_double(s32, s_back, xc);
  to_double(t32, t_back, xc);
  CHECK(lskd_kd_class_weighted_f32(s32, xn, t32, xn, xr, xn, &o, cw, &loss32, NULL, 0, NULL, 0,
                                   NULL) == LSKD_OK,
        "%s", lskd_last_error());
  CHECK(lskd_kd_class_weighted_f64(s_back, xn, t_back, xn, xr, xn, &o, cw, &loss64, NULL, 0, NULL,
                                   0, NULL) == LSKD_OK,
        "%s", lskd_last_error());
  CHECK(rel_diff(loss32, loss64) < 1e-5, "class-weighted f32 %.9g vs f64 %.9g", loss32, loss64);
}

/* Multi-temperature: one temperature is plain KD; two are the sum of two plain calls. */
static void check_multi_temperature(unsigned seed) {
  double s[xc], t[xc], gs[xc], gt[xc], gs_ref[xc], gt_ref[xc], g2[xc], loss = 0, loss_ref = 0;
  double tau_grads[2] = {0, 0};
  fill_random(s, xc, &seed);
  fill_random(t, xc, &seed);
  lskd_kd_options o;
  lskd_kd_options_init(&o);
  const double temperatures[2] = {1.5, 4};
  o.temperature = temperatures[0];
  CHECK(lskd_kd_f64(s, xn, t, xn, xr, xn, &o, &loss_ref, gs_ref, xn, gt_ref, xn) == LSKD_OK, "%s",
        lskd_last_error());
  o.temperature = 99; /* ignored */
  CHECK(lskd_multi_temperature_kd_f64(s, xn, t, xn, xr, xn, temperatures, 1, &o, &loss, gs, xn, gt,
                                      xn, tau_grads) == LSKD_OK,
        "%s", lskd_last_error());
  CHECK(rel_diff(loss, loss_ref) < 1e-13, "one temperature: %.17g vs %.17g", loss, loss_ref);
  CHECK(max_abs_diff(gs, gs_ref, xc) < 1e-13 * (1 + max_abs(gs_ref, xc)), "%s",
        "one temperature: grad_student");
  CHECK(max_abs_diff(gt, gt_ref, xc) < 1e-13 * (1 + max_abs(gt_ref, xc)), "%s",
        "one temperature: grad_teacher");

  /* Two temperatures. */
  double loss2 = 0;
  o.temperature = temperatures[1];
  CHECK(lskd_kd_f64(s, xn, t, xn, xr, xn, &o, &loss2, g2, xn, NULL, 0) == LSKD_OK, "%s",
        lskd_last_error());
  for (int i = 0; i < xc; ++i) gs_ref[i] += g2[i];
  CHECK(lskd_multi_temperature_kd_f64(s, xn, t, xn, xr, xn, temperatures, 2, &o, &loss, gs, xn,
                                      NULL, 0, tau_grads) == LSKD_OK,
        "%s", lskd_last_error());
  CHECK(rel_diff(loss, loss_ref + loss2) < 1e-13, "two temperatures: %.17g vs %.17g", loss,
        loss_ref + loss2);
  CHECK(max_abs_diff(gs, gs_ref, xc) < 1e-13 * (1 + max_abs(gs_ref, xc)), "%s",
        "two temperatures: grad_student");
  /* Each temperature's gradient against central differences. */
  for (int k = 0; k < 2; ++k) {
    const double h = 1e-5;
    double moved[2] = {temperatures[0], temperatures[1]}, up = 0, down = 0;
    moved[k] = temperatures[k] + h;
    CHECK(lskd_multi_temperature_kd_f64(s, xn, t, xn, xr, xn, moved, 2, &o, &up, NULL, 0, NULL, 0,
                                        NULL) == LSKD_OK,
          "%s", lskd_last_error());
    moved[k] = temperatures[k] - h;
    CHECK(lskd_multi_temperature_kd_f64(s, xn, t, xn, xr, xn, moved, 2, &o, &down, NULL, 0, NULL,
                                        0, NULL) == LSKD_OK,
          "%s", lskd_last_error());
    const double fd = (up - down) / (2 * h);
    CHECK(fabs(tau_grads[k] - fd) < 1e-7 * (1 + fabs(fd)), "grad_temperatures[%d] %.12g vs %.12g",
          k, tau_grads[k], fd);
  }
  /* float. */
  float s32[xc], t32[xc];
  double loss32 = 0, tau32[2] = {0, 0};
  to_float(s, s32, xc);
  to_float(t, t32, xc);
  CHECK(lskd_multi_temperature_kd_f32(s32, xn, t32, xn, xr, xn, temperatures, 2, &o, &loss32, NULL,
                                      0, NULL, 0, tau32) == LSKD_OK,
        "%s", lskd_last_error());
  CHECK(rel_diff(loss32, loss) < 1e-5, "multi-T f32 %.9g vs %.9g", loss32, loss);
  CHECK(fabs(tau32[1] - tau_grads[1]) < 1e-4 * (1 + fabs(tau_grads[1])),
        "multi-T f32 dtau %.9g vs %.9g", tau32[1], tau_grads[1]);
}

/* 16-bit logits: exactly lskd_kd_weighted_f32 on the converted values. */
static float bf16_to_float(uint16_t bits) {
  const uint32_t wide = (uint32_t)bits << 16;
  float f;
  memcpy(&f, &wide, sizeof f);
  return f;
}

static float half_to_float(uint16_t bits) { /* normal numbers only (all the test makes) */
  const int sign = bits >> 15, exponent = (bits >> 10) & 0x1f, mantissa = bits & 0x3ff;
  const float magnitude = ldexpf(1.0f + (float)mantissa / 1024.0f, exponent - 15);
  return sign ? -magnitude : magnitude;
}

static void check_16_bit(unsigned seed) {
  uint16_t s16[xc], t16[xc];
  float s32[xc], t32[xc], gs[xc], gt[xc], gs_ref[xc], gt_ref[xc];
  for (int format = 0; format < 2; ++format) {
    for (int i = 0; i < xc; ++i) {
      if (format == 0) {
        float f = (float)(6 * uniform(&seed) - 3);
        uint32_t wide;
        memcpy(&wide, &f, sizeof wide);
        s16[i] = (uint16_t)(wide >> 16);
        f = (float)(6 * uniform(&seed) - 3);
        memcpy(&wide, &f, sizeof wide);
        t16[i] = (uint16_t)(wide >> 16);
        s32[i] = bf16_to_float(s16[i]);
        t32[i] = bf16_to_float(t16[i]);
      } else {
        /* sign, exponent 13..16 (0.25 to 4), random mantissa */
        s16[i] = (uint16_t)(((uint16_t)(uniform(&seed) < 0.5) << 15) |
                            ((uint16_t)(13 + (int)(4 * uniform(&seed))) << 10) |
                            (uint16_t)(1024 * uniform(&seed)));
        t16[i] = (uint16_t)(((uint16_t)(uniform(&seed) < 0.5) << 15) |
                            ((uint16_t)(13 + (int)(4 * uniform(&seed))) << 10) |
                            (uint16_t)(1024 * uniform(&seed)));
        s32[i] = half_to_float(s16[i]);
        t32[i] = half_to_float(t16[i]);
      }
    }
    for (int variant = 0; variant < 2; ++variant) {
      lskd_kd_options o;
      lskd_kd_options_init(&o);
      o.standardize = variant == 0;
      double loss = 0, loss_ref = 0, dtau = 0, dtau_ref = 0;
      CHECK(lskd_kd_weighted_f32(s32, xn, t32, xn, xr, xn, &o, NULL, 0, &loss_ref, gs_ref, xn,
                                 gt_ref, xn, &dtau_ref) == LSKD_OK,
            "%s", lskd_last_error());
      const int code =
          format == 0 ? lskd_kd_bf16(s16, xn, t16, xn, xr, xn, &o, &loss, gs, xn, gt, xn, &dtau)
                      : lskd_kd_f16(s16, xn, t16, xn, xr, xn, &o, &loss, gs, xn, gt, xn, &dtau);
      CHECK(code == LSKD_OK, "%s", lskd_last_error());
      CHECK(rel_diff(loss, loss_ref) < 1e-12, "%s loss %.17g vs float %.17g",
            format ? "f16" : "bf16", loss, loss_ref);
      CHECK(rel_diff(dtau, dtau_ref) < 1e-12, "%s grad_temperature %.17g vs %.17g",
            format ? "f16" : "bf16", dtau, dtau_ref);
      double a[xc], b[xc];
      to_double(gs, a, xc);
      to_double(gs_ref, b, xc);
      CHECK(max_abs_diff(a, b, xc) <= 1e-6 * max_abs(b, xc), "%s grad_student",
            format ? "f16" : "bf16");
      to_double(gt, a, xc);
      to_double(gt_ref, b, xc);
      CHECK(max_abs_diff(a, b, xc) <= 1e-6 * max_abs(b, xc), "%s grad_teacher",
            format ? "f16" : "bf16");
      /* lskd_kd_f32 too (no temperature gradient there). */
      CHECK(lskd_kd_f32(s32, xn, t32, xn, xr, xn, &o, &loss_ref, NULL, 0, NULL, 0) == LSKD_OK, "%s",
            lskd_last_error());
      CHECK(rel_diff(loss, loss_ref) < 1e-12, "%s loss vs lskd_kd_f32", format ? "f16" : "bf16");
    }
  }
}

/* Errors of the new entry points: code, message, nothing written. */
static void check_new_errors(void) {
  double s[6] = {1, 2, 3, 4, 5, 6}, t[6] = {0.5, -1, 2, 3, 0, 1};
  double gs[6], gt[6], loss[2] = {-42, -42}, tau[2] = {-42, -42};
  lskd_kd_options o;
  lskd_kd_options_init(&o);
  for (int i = 0; i < 6; ++i) gs[i] = gt[i] = -7;

#define EXPECT_NEW_ERROR(call, expected_code, fragment)                                     \
  do {                                                                                      \
    const int code_ = (call);                                                               \
    CHECK(code_ == (expected_code), "%s: code %d, expected %d (%s)", #call, code_,          \
          (expected_code), lskd_last_error());                                              \
    CHECK(strstr(lskd_last_error(), (fragment)) != NULL, "%s: message '%s' lacks '%s'",     \
          #call, lskd_last_error(), (fragment));                                            \
    CHECK(loss[0] == -42 && loss[1] == -42, "%s wrote the loss", #call);                    \
    CHECK(tau[0] == -42 && tau[1] == -42, "%s wrote grad_temperature", #call);              \
    for (int i_ = 0; i_ < 6; ++i_) {                                                        \
      CHECK(gs[i_] == -7 && gt[i_] == -7, "%s wrote a gradient at %d", #call, i_);          \
    }                                                                                       \
  } while (0)

  /* Weighted rows. */
  const double bad_weights[2] = {1, -0.5};
  const double nan_weights[2] = {NAN, 1};
  EXPECT_NEW_ERROR(lskd_kd_weighted_f64(s, 3, t, 3, 2, 3, &o, bad_weights, 0, loss, gs, 3, gt, 3,
                                        tau),
                   LSKD_ERROR_INVALID_ARGUMENT, "lskd_kd_weighted_f64: 'row_weights'");
  EXPECT_NEW_ERROR(lskd_kd_weighted_f64(s, 3, t, 3, 2, 3, &o, nan_weights, 0, loss, gs, 3, gt, 3,
                                        tau),
                   LSKD_ERROR_INVALID_ARGUMENT, "'row_weights'");
  EXPECT_NEW_ERROR(lskd_kd_weighted_f64(s, 3, t, 3, 2, 3, &o, NULL, -1, loss, gs, 3, gt, 3, tau),
                   LSKD_ERROR_INVALID_ARGUMENT, "'normalizer'");
  {
    lskd_kd_options sum = o;
    sum.reduction = LSKD_REDUCTION_SUM;
    EXPECT_NEW_ERROR(lskd_kd_weighted_f64(s, 3, t, 3, 2, 3, &sum, NULL, 4, loss, gs, 3, gt, 3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "'normalizer'");
  }
  EXPECT_NEW_ERROR(lskd_kd_weighted_f64(s, 2, t, 3, 2, 3, &o, NULL, 0, loss, gs, 3, gt, 3, tau),
                   LSKD_ERROR_INVALID_ARGUMENT, "'ld_student'");
  EXPECT_NEW_ERROR(lskd_kd_weighted_f64(s, 3, t, 3, 2, 3, &o, NULL, 0, NULL, gs, 3, gt, 3, tau),
                   LSKD_ERROR_INVALID_ARGUMENT, "'loss'");
  {
    double bad_s[6] = {1, 2, 3, 4, NAN, 6};
    EXPECT_NEW_ERROR(lskd_kd_weighted_f64(bad_s, 3, t, 3, 2, 3, &o, NULL, 0, loss, gs, 3, gt, 3,
                                          tau),
                     LSKD_ERROR_DOMAIN, "row 1");
  }
  {
    lskd_kd_options bad = o;
    bad.standardize = 2;
    EXPECT_NEW_ERROR(lskd_kd_weighted_f64(s, 3, t, 3, 2, 3, &bad, NULL, 0, loss, gs, 3, gt, 3,
                                          tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "'options->standardize'");
  }
  {
    float s32[6] = {1, 2, 3, 4, 5, 6}, t32[6] = {0, 1, 2, 3, 4, 5};
    const float bad32[2] = {-1, 1};
    EXPECT_NEW_ERROR(lskd_kd_weighted_f32(s32, 3, t32, 3, 2, 3, &o, bad32, 0, loss, NULL, 0, NULL,
                                          0, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "lskd_kd_weighted_f32: 'row_weights'");
  }
  /* grad_temperature over the loss. */
  EXPECT_NEW_ERROR(lskd_kd_weighted_f64(s, 3, t, 3, 2, 3, &o, NULL, 0, loss, gs, 3, gt, 3, loss),
                   LSKD_ERROR_INVALID_ARGUMENT, "'grad_temperature' overlaps 'loss'");
  /* The reduced loss or a temperature gradient inside a logit or gradient buffer. */
  EXPECT_NEW_ERROR(lskd_kd_weighted_f64(s, 3, t, 3, 2, 3, &o, NULL, 0, gs + 1, gs, 3, gt, 3, NULL),
                   LSKD_ERROR_INVALID_ARGUMENT, "'loss' overlaps 'grad_student'");
  EXPECT_NEW_ERROR(lskd_kd_weighted_f64(s, 3, t, 3, 2, 3, &o, NULL, 0, loss, gs, 3, gt, 3, gt + 2),
                   LSKD_ERROR_INVALID_ARGUMENT, "'grad_temperature' overlaps 'grad_teacher'");
  /* The reduced loss or a temperature gradient inside the row weights (read-only to the
     caller) was written there; now refused. */
  {
    double weights[2] = {1, 0.5};
    EXPECT_NEW_ERROR(lskd_kd_weighted_f64(s, 3, t, 3, 2, 3, &o, weights, 0, loss, gs, 3, gt, 3,
                                          weights + 1),
                     LSKD_ERROR_INVALID_ARGUMENT, "'grad_temperature' overlaps 'row_weights'");
    EXPECT_NEW_ERROR(lskd_kd_weighted_f64(s, 3, t, 3, 2, 3, &o, weights, 0, weights, gs, 3, gt, 3,
                                          NULL),
                     LSKD_ERROR_INVALID_ARGUMENT, "'loss' overlaps 'row_weights'");
    CHECK(weights[0] == 1 && weights[1] == 0.5, "%s", "the row weights were written");
  }
  {
    lskd_kd_options per_class = o;
    const double weights3[3] = {1, 2, 1};
    per_class.ddof = 0;
    EXPECT_NEW_ERROR(lskd_kd_class_weighted_f64(s, 3, t, 3, 2, 3, &per_class, weights3, gt + 4,
                                                gs, 3, gt, 3, NULL),
                     LSKD_ERROR_INVALID_ARGUMENT, "'loss' overlaps 'grad_teacher'");
  }

  /* DKD. */
  {
    lskd_dkd_options d;
    lskd_dkd_options_init(&d);
    const int64_t bad_target[2] = {0, 3};
    const int64_t negative_target[2] = {-1, 0};
    const int64_t good[2] = {0, 2};
    EXPECT_NEW_ERROR(lskd_dkd_f64(s, 3, t, 3, 2, 3, bad_target, &d, loss, gs, 3, gt, 3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "row 1");
    EXPECT_NEW_ERROR(lskd_dkd_f64(s, 3, t, 3, 2, 3, negative_target, &d, loss, gs, 3, gt, 3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "lskd_dkd_f64: 'targets' [0]");
    EXPECT_NEW_ERROR(lskd_dkd_f64(s, 3, t, 3, 2, 3, good, &d, gt + 5, gs, 3, gt, 3, NULL),
                     LSKD_ERROR_INVALID_ARGUMENT, "'loss' overlaps 'grad_teacher'");
    EXPECT_NEW_ERROR(lskd_dkd_f64(s, 3, t, 3, 2, 3, NULL, &d, loss, gs, 3, gt, 3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "'targets'");
    {
      int64_t targets[2] = {0, 2};
      EXPECT_NEW_ERROR(lskd_dkd_f64(s, 3, t, 3, 2, 3, targets, &d, loss, gs, 3, gt, 3,
                                    (double*)(targets + 1)),
                       LSKD_ERROR_INVALID_ARGUMENT, "'grad_temperature' overlaps 'targets'");
      CHECK(targets[0] == 0 && targets[1] == 2, "%s", "the targets were written");
    }
    EXPECT_NEW_ERROR(lskd_dkd_f64(s, 3, t, 3, 6, 1, good, &d, loss, gs, 1, gt, 1, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "lskd_dkd_f64");
    lskd_dkd_options bad = d;
    bad.beta = -1;
    EXPECT_NEW_ERROR(lskd_dkd_f64(s, 3, t, 3, 2, 3, good, &bad, loss, gs, 3, gt, 3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "beta");
    bad = d;
    bad.scale_by_t2 = 7;
    EXPECT_NEW_ERROR(lskd_dkd_f64(s, 3, t, 3, 2, 3, good, &bad, loss, gs, 3, gt, 3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "lskd_dkd_options_init");
    bad = d;
    bad.reduction = 9;
    EXPECT_NEW_ERROR(lskd_dkd_f64(s, 3, t, 3, 2, 3, good, &bad, loss, gs, 3, gt, 3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "'options->reduction'");
    double bad_t[6] = {0.5, -1, 2, 3, INFINITY, 1};
    EXPECT_NEW_ERROR(lskd_dkd_f64(s, 3, bad_t, 3, 2, 3, good, &d, loss, gs, 3, gt, 3, tau),
                     LSKD_ERROR_DOMAIN, "row 1");
    float s32[6] = {1, 2, 3, 4, 5, 6}, t32[6] = {0, 1, 2, 3, 4, 5};
    EXPECT_NEW_ERROR(lskd_dkd_f32(s32, 3, t32, 3, 2, 3, bad_target, &d, loss, NULL, 0, NULL, 0,
                                  tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "lskd_dkd_f32: 'targets' [1] (row 1)");
  }

  /* Class weights. */
  {
    const double cw[3] = {1, 2, 1};
    const double negative[3] = {1, -2, 1};
    lskd_kd_options zero = o;
    zero.ddof = 0;
    EXPECT_NEW_ERROR(lskd_kd_class_weighted_f64(s, 3, t, 3, 2, 3, &o, cw, loss, gs, 3, gt, 3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "ddof");
    EXPECT_NEW_ERROR(lskd_kd_class_weighted_f64(s, 3, t, 3, 2, 3, &zero, NULL, loss, gs, 3, gt, 3,
                                                tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "lskd_kd_class_weighted_f64: 'class_weights'");
    EXPECT_NEW_ERROR(lskd_kd_class_weighted_f64(s, 3, t, 3, 2, 3, &zero, negative, loss, gs, 3, gt,
                                                3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "'class_weights'");
    lskd_kd_options no_eps = zero;
    no_eps.eps = 0;
    EXPECT_NEW_ERROR(lskd_kd_class_weighted_f64(s, 3, t, 3, 2, 3, &no_eps, cw, loss, gs, 3, gt, 3,
                                                tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "eps");
  }
  /* An output inside the class weights (read-only to the caller) overwrote them; now refused.
     shared[3..8] are a 2 x 3 gradient, shared[6..8] the weights. */
  {
    double shared[9] = {0, 0, 0, 0, 0, 0, 1, 2, 1};
    double* cw = shared + 6;
    lskd_kd_options zero = o;
    zero.ddof = 0;
    EXPECT_NEW_ERROR(lskd_kd_class_weighted_f64(s, 3, t, 3, 2, 3, &zero, cw, cw + 1, gs, 3, gt, 3,
                                                tau),
                     LSKD_ERROR_INVALID_ARGUMENT,
                     "lskd_kd_class_weighted_f64: 'loss' overlaps 'class_weights'");
    EXPECT_NEW_ERROR(lskd_kd_class_weighted_f64(s, 3, t, 3, 2, 3, &zero, cw, loss, gs, 3, gt, 3,
                                                cw + 2),
                     LSKD_ERROR_INVALID_ARGUMENT, "'grad_temperature' overlaps 'class_weights'");
    EXPECT_NEW_ERROR(lskd_kd_class_weighted_f64(s, 3, t, 3, 2, 3, &zero, cw, loss, shared + 3, 3,
                                                gt, 3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "'grad_student' overlaps 'class_weights'");
    EXPECT_NEW_ERROR(lskd_kd_class_weighted_f64(s, 3, t, 3, 2, 3, &zero, cw, loss, gs, 3,
                                                shared + 1, 3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "'grad_teacher' overlaps 'class_weights'");
    {
      /* With LSKD_REDUCTION_NONE the loss is 'rows' values: the second lands on the weights. */
      lskd_kd_options per_row = zero;
      per_row.reduction = LSKD_REDUCTION_NONE;
      EXPECT_NEW_ERROR(lskd_kd_class_weighted_f64(s, 3, t, 3, 2, 3, &per_row, cw, cw - 1, gs, 3,
                                                  gt, 3, tau),
                       LSKD_ERROR_INVALID_ARGUMENT, "'loss' overlaps 'class_weights'");
    }
    {
      /* Zero rows still write the reduced loss and the temperature gradient. */
      EXPECT_NEW_ERROR(lskd_kd_class_weighted_f64(s, 3, t, 3, 0, 3, &zero, cw, cw, NULL, 0, NULL,
                                                  0, NULL),
                       LSKD_ERROR_INVALID_ARGUMENT, "'loss' overlaps 'class_weights'");
    }
    {
      float s32[6] = {1, 2, 3, 4, 5, 6}, t32[6] = {0, 1, 2, 3, 4, 5};
      EXPECT_NEW_ERROR(lskd_kd_class_weighted_f32(s32, 3, t32, 3, 2, 3, &zero, cw, loss,
                                                  (float*)cw, 3, NULL, 0, tau),
                       LSKD_ERROR_INVALID_ARGUMENT,
                       "lskd_kd_class_weighted_f32: 'grad_student' overlaps 'class_weights'");
      EXPECT_NEW_ERROR(lskd_kd_class_weighted_f32(s32, 3, t32, 3, 2, 3, &zero, cw, cw + 2, NULL,
                                                  0, NULL, 0, NULL),
                       LSKD_ERROR_INVALID_ARGUMENT, "'loss' overlaps 'class_weights'");
    }
    for (int i = 0; i < 9; ++i) {
      CHECK(shared[i] == (i < 6 ? 0 : i == 7 ? 2 : 1), "the class weights' buffer was written "
            "at %d", i);
    }
    /* Beside the weights, the same buffer works. */
    CHECK(lskd_kd_class_weighted_f64(s, 3, t, 3, 2, 3, &zero, cw, shared + 5, NULL, 0, NULL, 0,
                                     shared + 4) == LSKD_OK,
          "class weights beside their outputs: %s", lskd_last_error());
  }

  /* Multi-temperature. */
  {
    const double temperatures[2] = {2, 4};
    const double bad_temperatures[2] = {2, -4};
    EXPECT_NEW_ERROR(lskd_multi_temperature_kd_f64(s, 3, t, 3, 2, 3, temperatures, 0, &o, loss, gs,
                                                   3, gt, 3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "'temperature_count'");
    EXPECT_NEW_ERROR(lskd_multi_temperature_kd_f64(s, 3, t, 3, 2, 3, NULL, 2, &o, loss, gs, 3, gt,
                                                   3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "'temperatures'");
    EXPECT_NEW_ERROR(lskd_multi_temperature_kd_f64(s, 3, t, 3, 2, 3, bad_temperatures, 2, &o, loss,
                                                   gs, 3, gt, 3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT,
                     "lskd_multi_temperature_kd_f64: 'temperatures[1]' must be finite and > 0");
    EXPECT_NEW_ERROR(lskd_multi_temperature_kd_f64(s, 3, t, 3, 2, 3, temperatures, 2, &o, loss,
                                                   gs, 3, gt, 3, gs + 4),
                     LSKD_ERROR_INVALID_ARGUMENT, "'grad_temperatures' overlaps 'grad_student'");
    /* Named as the C argument even with one temperature (it was 'grad_temperature'). */
    EXPECT_NEW_ERROR(lskd_multi_temperature_kd_f64(s, 3, t, 3, 2, 3, temperatures, 1, &o, loss,
                                                   gs, 3, gt, 3, gs + 4),
                     LSKD_ERROR_INVALID_ARGUMENT, "'grad_temperatures' overlaps 'grad_student'");
    double bad_s[6] = {1, 2, 3, 4, NAN, 6};
    EXPECT_NEW_ERROR(lskd_multi_temperature_kd_f64(bad_s, 3, t, 3, 2, 3, temperatures, 2, &o, loss,
                                                   gs, 3, gt, 3, tau),
                     LSKD_ERROR_DOMAIN, "row 1");
    EXPECT_NEW_ERROR(lskd_multi_temperature_kd_f64(s, 3, t, 3, 2, 3, temperatures, 2, &o, loss,
                                                   gs, 3, gt, 3, loss),
                     LSKD_ERROR_INVALID_ARGUMENT, "'grad_temperatures' overlaps 'loss'");
  }
  /* An output over the temperatures (read-only to the caller) overwrote them; now refused. */
  {
    double temperatures[8] = {2, 4, 0, 0, 0, 0, 0, 0};
    const double* const start = temperatures;
    EXPECT_NEW_ERROR(lskd_multi_temperature_kd_f64(s, 3, t, 3, 2, 3, start, 2, &o, loss, gs, 3,
                                                   gt, 3, temperatures),
                     LSKD_ERROR_INVALID_ARGUMENT,
                     "lskd_multi_temperature_kd_f64: 'grad_temperatures' overlaps "
                     "'temperatures'");
    EXPECT_NEW_ERROR(lskd_multi_temperature_kd_f64(s, 3, t, 3, 2, 3, start, 2, &o, temperatures,
                                                   gs, 3, gt, 3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "'loss' overlaps 'temperatures'");
    EXPECT_NEW_ERROR(lskd_multi_temperature_kd_f64(s, 3, t, 3, 2, 3, start, 2, &o, loss,
                                                   temperatures + 1, 3, gt, 3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "'grad_student' overlaps 'temperatures'");
    EXPECT_NEW_ERROR(lskd_multi_temperature_kd_f64(s, 3, t, 3, 2, 3, start, 2, &o, loss, gs, 3,
                                                   temperatures, 3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "'grad_teacher' overlaps 'temperatures'");
    {
      lskd_kd_options per_row = o;
      per_row.reduction = LSKD_REDUCTION_NONE;
      double later[3] = {-42, 2, 4}; /* the second row's loss lands on the first temperature */
      EXPECT_NEW_ERROR(lskd_multi_temperature_kd_f64(s, 3, t, 3, 2, 3, later + 1, 2, &per_row,
                                                     later, gs, 3, gt, 3, tau),
                       LSKD_ERROR_INVALID_ARGUMENT, "'loss' overlaps 'temperatures'");
      CHECK(later[0] == -42 && later[1] == 2 && later[2] == 4, "%s",
            "the per-row losses were written over the temperatures");
    }
    {
      /* Zero rows still zero the temperature gradients. */
      EXPECT_NEW_ERROR(lskd_multi_temperature_kd_f64(s, 3, t, 3, 0, 3, start, 2, &o, loss, NULL,
                                                     0, NULL, 0, temperatures + 1),
                       LSKD_ERROR_INVALID_ARGUMENT,
                       "'grad_temperatures' overlaps 'temperatures'");
      float s32[6] = {1, 2, 3, 4, 5, 6}, t32[6] = {0, 1, 2, 3, 4, 5};
      EXPECT_NEW_ERROR(lskd_multi_temperature_kd_f32(s32, 3, t32, 3, 2, 3, start, 2, &o, loss,
                                                     (float*)temperatures, 3, NULL, 0, tau),
                       LSKD_ERROR_INVALID_ARGUMENT,
                       "lskd_multi_temperature_kd_f32: 'grad_student' overlaps 'temperatures'");
    }
    CHECK(temperatures[0] == 2 && temperatures[1] == 4, "%s", "the temperatures were written");
    for (int i = 2; i < 8; ++i) CHECK(temperatures[i] == 0, "temperatures[%d] was written", i);
    /* Beside the temperatures, the same buffer works. */
    CHECK(lskd_multi_temperature_kd_f64(s, 3, t, 3, 2, 3, start, 2, &o, temperatures + 2, NULL, 0,
                                        NULL, 0, temperatures + 3) == LSKD_OK,
          "temperatures beside their outputs: %s", lskd_last_error());
  }
  /* A count no buffer can hold is a wrong argument (it was LSKD_ERROR_OUT_OF_MEMORY from a
     std::vector's length_error), before anything is read or written. */
  {
    const double temperatures[2] = {2, 4};
    EXPECT_NEW_ERROR(lskd_multi_temperature_kd_f64(s, 3, t, 3, 2, 3, temperatures, INT64_MAX, &o,
                                                   loss, gs, 3, gt, 3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT,
                     "lskd_multi_temperature_kd_f64: 'temperature_count' is "
                     "9223372036854775807");
    EXPECT_NEW_ERROR(lskd_multi_temperature_kd_f32(NULL, 3, NULL, 3, 1, 3, temperatures,
                                                   INT64_MAX / 8 + 1, &o, loss, NULL, 0, NULL, 0,
                                                   NULL),
                     LSKD_ERROR_INVALID_ARGUMENT, "'temperature_count'");
    /* With rows, the per-row temperature gradients count too. */
    EXPECT_NEW_ERROR(lskd_multi_temperature_kd_f64(s, 3, t, 3, (int64_t)1 << 20, 3, temperatures,
                                                   (int64_t)1 << 45, &o, loss, gs, 3, gt, 3, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "'temperature_count'");
  }

  /* 16-bit. */
  {
    const uint16_t s16[6] = {0x3f80, 0x4000, 0x4040, 0x4080, 0x7fc0, 0x40c0}; /* NaN at (1, 1) */
    const uint16_t t16[6] = {0x3f00, 0xbf80, 0x4000, 0x4040, 0x0000, 0x3f80};
    float g32[6] = {-7, -7, -7, -7, -7, -7};
    EXPECT_NEW_ERROR(lskd_kd_bf16(s16, 3, t16, 3, 2, 3, &o, loss, g32, 3, NULL, 0, tau),
                     LSKD_ERROR_DOMAIN, "row 1");
    const uint16_t h_s[6] = {0x3c00, 0x4000, 0x4200, 0x4400, 0x7e00, 0x4600}; /* NaN at (1, 1) */
    EXPECT_NEW_ERROR(lskd_kd_f16(h_s, 3, h_s, 3, 2, 3, &o, loss, g32, 3, NULL, 0, tau),
                     LSKD_ERROR_DOMAIN, "row 1");
    EXPECT_NEW_ERROR(lskd_kd_f16(h_s, 2, h_s, 3, 2, 3, &o, loss, g32, 3, NULL, 0, tau),
                     LSKD_ERROR_INVALID_ARGUMENT, "lskd_kd_f16: 'ld_student'");
    for (int i = 0; i < 6; ++i) CHECK(g32[i] == -7, "16-bit error wrote a gradient at %d", i);
  }
#undef EXPECT_NEW_ERROR
}

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
    /* The entry points beyond plain KD dispatch the same way. */
    {
      const int64_t target = 1;
      double tau = -42;
      CHECK(lskd_dkd_f64(s, 2, s, 2, 1, 2, &target, NULL, &loss, NULL, 0, NULL, 0, &tau) ==
                LSKD_ERROR_INVALID_ARGUMENT,
            "%s", "lskd_dkd_f64 under a refused LSKD_ARCH");
      CHECK(strstr(lskd_last_error(), "lskd_dkd_f64: ") == lskd_last_error() &&
                strstr(lskd_last_error(), "LSKD_ARCH") != NULL,
            "message '%s'", lskd_last_error());
      CHECK(loss == -42 && tau == -42, "%s", "lskd_dkd_f64 wrote an output");
    }
    const int code_weighted =
        lskd_kd_weighted_f64(s, 2, s, 2, 1, 2, NULL, NULL, 0, &loss, NULL, 0, NULL, 0, NULL);
    CHECK(code_weighted == LSKD_ERROR_INVALID_ARGUMENT, "lskd_kd_weighted_f64: code %d",
          code_weighted);
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
  check_weighted(11);
  check_weighted(12);
  check_dkd(21);
  check_dkd(22);
  check_class_weighted(31);
  check_multi_temperature(41);
  check_16_bit(51);
  check_new_errors();

  printf("%d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
