/*
 * Circuits: every query against a dense double reference built here from
 * the same numbers; top-k against a full sort; bad input; BLIS kernel-set
 * selection and the BLIS_ARCH_TYPE check.
 *
 * Tolerances. Factors are float32; a product entry Σ_t a_t b_t computed by
 * BLIS in float32 (FMA chains) is within r·u·Σ_t|a_t b_t| of the exact
 * value (u = 2^-24), so entries are checked against 2·r·FLT_EPSILON times
 * that sum. Work done in double on float-exact inputs (norms, B·A, QR, SVD,
 * geev) is checked at 1e-9 relative; where the reference multiplies the
 * model's weights in double but the circuit's factors were rounded to
 * float32 once (E·W_Q), at 1e-5 relative.
 */
#define _POSIX_C_SOURCE 200809L

#include "testutil.h"

#include <float.h>
#include <lapacke.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const float GUARD = 12345.0f;

/* Random float factors with a leading dimension; values in N(0,1). */
static float *random_floats(tu_rng *rng, size_t rows, size_t cols, size_t ld) {
  ck_assert(ld >= cols);
  float *x = malloc(rows * ld * sizeof *x);
  for (size_t i = 0; i < rows * ld; i++)
    x[i] = (float)tu_normal(rng);
  return x;
}

/* Dense reference M = A·B in double, and Σ|a||b| per entry for the bound. */
static void dense_reference(double *M, double *absM, const float *A, size_t lda,
                            const float *B, size_t ldb, size_t n, size_t r, size_t m) {
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < m; j++) {
      double s = 0, a = 0;
      for (size_t t = 0; t < r; t++) {
        s += (double)A[i * lda + t] * B[t * ldb + j];
        a += fabs((double)A[i * lda + t] * B[t * ldb + j]);
      }
      M[i * m + j] = s;
      if (absM)
        absM[i * m + j] = a;
    }
}

static void check_entry(double got, double want, double abs_sum, size_t r, const char *what,
                        size_t i, size_t j) {
  double tol = 2.0 * (double)r * FLT_EPSILON * abs_sum + 1e-30;
  ck_assert_msg(fabs(got - want) <= tol, "%s (%zu, %zu): %.9g vs %.9g (tol %.3g)", what, i,
                j, got, want, tol);
}

static const size_t SHAPES[][3] = {
    {7, 3, 5}, {6, 1, 9}, {5, 5, 5}, {4, 6, 3}, {1, 2, 8}, {300, 4, 700}};

START_TEST(queries_match_dense_reference) {
  const size_t *s = SHAPES[_i];
  size_t n = s[0], r = s[1], m = s[2], lda = r + 2, ldb = m + 3;
  tu_rng rng = tu_rng_seed(100 + _i);
  float *A = random_floats(&rng, n, r, lda), *B = random_floats(&rng, r, m, ldb);
  double *M = malloc(n * m * sizeof *M), *absM = malloc(n * m * sizeof *absM);
  dense_reference(M, absM, A, lda, B, ldb, n, r, m);
  mi_circuit *c;
  TU_OK(mi_circuit_from_factors(&c, n, r, m, A, lda, B, ldb));
  size_t rows, cols, rank;
  TU_OK(mi_circuit_shape(&rows, &cols, &rank, c));
  ck_assert_uint_eq(rows, n);
  ck_assert_uint_eq(cols, m);
  ck_assert_uint_eq(rank, r);

  /* Entries in double: exact sums of float products up to double rounding. */
  for (size_t i = 0; i < n; i += 1 + n / 7)
    for (size_t j = 0; j < m; j += 1 + m / 7) {
      double e;
      TU_OK(mi_circuit_entry(&e, c, i, j));
      ck_assert(fabs(e - M[i * m + j]) <= 1e-12 * (1 + absM[i * m + j]));
    }

  /* Rows i0..i1 into a strided buffer with guards past every line. */
  size_t i0 = n / 3, i1 = n, ld = m + 5, lines = i1 - i0;
  float *buf = malloc((lines * ld + 7) * sizeof *buf);
  for (size_t t = 0; t < lines * ld + 7; t++)
    buf[t] = GUARD;
  TU_OK(mi_circuit_rows(buf, ld, c, i0, i1));
  for (size_t i = 0; i < lines; i++) {
    for (size_t j = 0; j < m; j++)
      check_entry(buf[i * ld + j], M[(i0 + i) * m + j], absM[(i0 + i) * m + j], r, "rows",
                  i0 + i, j);
    for (size_t j = m; j < ld; j++)
      ck_assert_float_eq(buf[i * ld + j], GUARD);
  }
  for (size_t t = lines * ld; t < lines * ld + 7; t++)
    ck_assert_float_eq(buf[t], GUARD);
  free(buf);

  /* Columns j0..j1, likewise. */
  size_t j0 = m / 4, j1 = m - m / 4 > j0 ? m - m / 4 : m, w = j1 - j0, ldc = w + 2;
  buf = malloc((n * ldc + 3) * sizeof *buf);
  for (size_t t = 0; t < n * ldc + 3; t++)
    buf[t] = GUARD;
  TU_OK(mi_circuit_cols(buf, ldc, c, j0, j1));
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < w; j++)
      check_entry(buf[i * ldc + j], M[i * m + j0 + j], absM[i * m + j0 + j], r, "cols", i,
                  j0 + j);
    for (size_t j = w; j < ldc; j++)
      ck_assert_float_eq(buf[i * ldc + j], GUARD);
  }
  free(buf);

  /* The whole matrix, contiguous. */
  buf = malloc(n * m * sizeof *buf);
  TU_OK(mi_circuit_dense(buf, m, c));
  for (size_t i = 0; i < n * m; i++)
    check_entry(buf[i], M[i], absM[i], r, "dense", i / m, i % m);
  free(buf);

  /* Frobenius norm: the Grams are formed in double from float-exact factors. */
  double fro = 0, got;
  for (size_t i = 0; i < n * m; i++)
    fro += M[i] * M[i];
  fro = sqrt(fro);
  TU_OK(mi_circuit_frobenius_norm(&got, c));
  ck_assert_msg(fabs(got - fro) <= 1e-9 * fro, "norm %.12g vs %.12g", got, fro);

  /* Singular values against LAPACK's SVD of the dense double matrix. */
  size_t kmin = n < m ? n : m;
  double *sv = malloc(kmin * sizeof *sv), *ref = malloc(kmin * sizeof *ref);
  double *Mc = malloc(n * m * sizeof *Mc);
  memcpy(Mc, M, n * m * sizeof *Mc);
  ck_assert_int_eq(LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'N', (int)n, (int)m, Mc, (int)m, ref,
                                  NULL, (int)m, NULL, (int)m), 0);
  TU_OK(mi_circuit_singular_values(sv, kmin, c));
  for (size_t t = 0; t < kmin; t++)
    ck_assert_msg(fabs(sv[t] - ref[t]) <= 1e-9 * ref[0], "sigma %zu: %.12g vs %.12g", t,
                  sv[t], ref[t]);
  free(sv); free(ref); free(Mc);
  mi_circuit_free(c);
  free(A); free(B); free(M); free(absM);
}
END_TEST

/* ---- top-k --------------------------------------------------------------------- */

typedef struct { double v; size_t i; } entry;
static double sort_sign;
static int best_first(const void *pa, const void *pb) {
  const entry *a = pa, *b = pb;
  if (a->v != b->v)
    return sort_sign * a->v > sort_sign * b->v ? -1 : 1;
  return (a->i > b->i) - (a->i < b->i);
}

/*
 * Integer factors make every entry exact in float32 and double alike, with
 * many ties, so top-k must equal a full sort exactly, ties by lower index.
 */
START_TEST(topk_matches_full_sort) {
  /* _i threads: several split the lines into slices streamed in parallel. */
  TU_OK(mi_set_num_threads((size_t)_i));
  size_t n = 290, r = 3, m = 4200, k = 7, ld = 9;
  tu_rng rng = tu_rng_seed(7);
  float *A = malloc(n * r * sizeof *A), *B = malloc(r * m * sizeof *B);
  for (size_t i = 0; i < n * r; i++)
    A[i] = (float)(int)(tu_uniform(&rng) * 5) - 2;
  for (size_t i = 0; i < r * m; i++)
    B[i] = (float)(int)(tu_uniform(&rng) * 5) - 2;
  double *M = malloc(n * m * sizeof *M);
  dense_reference(M, NULL, A, r, B, m, n, r, m);
  mi_circuit *c;
  TU_OK(mi_circuit_from_factors(&c, n, r, m, A, r, B, m));
  for (unsigned flags = 0; flags < 4; flags++) {
    bool by_cols = flags & MI_TOPK_COLUMNS;
    size_t lines = by_cols ? m : n, len = by_cols ? n : m;
    size_t i0 = lines / 5, i1 = lines - 3, count = i1 - i0;
    size_t *idx = malloc((count * ld + 4) * sizeof *idx);
    float *val = malloc((count * ld + 4) * sizeof *val);
    for (size_t t = 0; t < count * ld + 4; t++) {
      idx[t] = 999999;
      val[t] = GUARD;
    }
    TU_OK(mi_circuit_topk(idx, val, ld, c, k, flags, i0, i1));
    sort_sign = (flags & MI_TOPK_SMALLEST) ? -1.0 : 1.0;
    entry *line = malloc(len * sizeof *line);
    for (size_t a = i0; a < i1; a++) {
      for (size_t b = 0; b < len; b++)
        line[b] = (entry){by_cols ? M[b * m + a] : M[a * m + b], b};
      qsort(line, len, sizeof *line, best_first);
      for (size_t t = 0; t < k; t++) {
        ck_assert_msg(idx[(a - i0) * ld + t] == line[t].i,
                      "flags %u line %zu rank %zu: index %zu, want %zu", flags, a, t,
                      idx[(a - i0) * ld + t], line[t].i);
        ck_assert(val[(a - i0) * ld + t] == (float)line[t].v);
      }
      for (size_t t = k; t < ld; t++) {
        ck_assert_uint_eq(idx[(a - i0) * ld + t], 999999);
        ck_assert_float_eq(val[(a - i0) * ld + t], GUARD);
      }
    }
    for (size_t t = count * ld; t < count * ld + 4; t++)
      ck_assert(idx[t] == 999999 && val[t] == GUARD);
    free(line); free(idx); free(val);
  }
  /* k = m: the whole row, sorted. */
  size_t *idx = malloc(m * sizeof *idx);
  float *val = malloc(m * sizeof *val);
  TU_OK(mi_circuit_topk(idx, val, m, c, m, 0, 5, 6));
  for (size_t t = 1; t < m; t++)
    ck_assert(val[t - 1] > val[t] || (val[t - 1] == val[t] && idx[t - 1] < idx[t]));
  free(idx); free(val);
  mi_circuit_free(c);
  free(A); free(B); free(M);
}
END_TEST

/* Random real values: the selection is right up to float32 rounding. */
START_TEST(topk_random_values) {
  size_t n = 40, r = 5, m = 5000, k = 10;
  tu_rng rng = tu_rng_seed(8);
  float *A = random_floats(&rng, n, r, r), *B = random_floats(&rng, r, m, m);
  double *M = malloc(n * m * sizeof *M), *absM = malloc(n * m * sizeof *absM);
  dense_reference(M, absM, A, r, B, m, n, r, m);
  mi_circuit *c;
  TU_OK(mi_circuit_from_factors(&c, n, r, m, A, r, B, m));
  size_t idx[40 * 10];
  float val[40 * 10];
  TU_OK(mi_circuit_topk(idx, val, k, c, k, 0, 0, n));
  for (size_t i = 0; i < n; i++) {
    /* Each value is its entry's, the list is ordered, and nothing left out
     * beats the k-th by more than the rounding bound. */
    double kth = INFINITY;
    for (size_t t = 0; t < k; t++) {
      size_t j = idx[i * k + t];
      check_entry(val[i * k + t], M[i * m + j], absM[i * m + j], r, "topk", i, j);
      if (t > 0)
        ck_assert(val[i * k + t] <= val[i * k + t - 1]);
      kth = fmin(kth, M[i * m + j]);
    }
    for (size_t j = 0; j < m; j++) {
      int chosen = 0;
      for (size_t t = 0; t < k; t++)
        chosen |= idx[i * k + t] == j;
      if (!chosen)
        ck_assert(M[i * m + j] <= kth + 4 * r * FLT_EPSILON * absM[i * m + j] + 1e-6);
    }
  }
  mi_circuit_free(c);
  free(A); free(B); free(M); free(absM);
}
END_TEST

/* ---- circuits of a model -------------------------------------------------------- */

/* The circuit's dense matrix equals `want` (rows × cols) to 1e-5 of its size. */
static void check_dense(const mi_circuit *c, const double *want, size_t rows, size_t cols,
                        const char *what) {
  size_t n, m;
  TU_OK(mi_circuit_shape(&n, &m, NULL, c));
  ck_assert_uint_eq(n, rows);
  ck_assert_uint_eq(m, cols);
  float *got = malloc(rows * cols * sizeof *got);
  TU_OK(mi_circuit_dense(got, cols, c));
  double scale = tu_max_abs(want, rows * cols);
  for (size_t i = 0; i < rows * cols; i++)
    ck_assert_msg(fabs(got[i] - want[i]) <= 1e-5 * scale, "%s entry %zu: %g vs %g", what, i,
                  got[i], want[i]);
  free(got);
}

/* (E W + 1 b) in double: E is rows × D, W is D × dh, b may be NULL. */
static double *projected(const double *E, const double *W, const double *b, size_t rows,
                         size_t D, size_t dh) {
  double *P = tu_mul(E, W, rows, D, dh);
  if (b)
    for (size_t i = 0; i < rows; i++)
      for (size_t j = 0; j < dh; j++)
        P[i * dh + j] += b[j];
  return P;
}

START_TEST(model_circuits_match_dense_reference) {
  mi_config cfg = tu_config(2, 4, 8, 3, 11, 6, MI_PART_POS_EMBED | MI_PART_QKV_BIAS);
  cfg.n_kv_heads = 2;
  mi_model *model = tu_random_model(&cfg, 21);
  size_t V = 11, D = 8, dh = 3, P = 6, rr, cc, l = 1, h = 3, kv = 1;
  double *E = tu_weight(model, MI_W_E, 0, 0, &rr, &cc);
  double *Ep = tu_weight(model, MI_W_POS, 0, 0, &rr, &cc);
  double *WQ = tu_weight(model, MI_W_Q, l, h, &rr, &cc);
  double *WK = tu_weight(model, MI_W_K, l, kv, &rr, &cc);
  double *WV = tu_weight(model, MI_W_V, l, kv, &rr, &cc);
  double *WO = tu_weight(model, MI_W_O, l, h, &rr, &cc);
  double *bQ = tu_weight(model, MI_B_Q, l, h, &rr, &cc);
  double *bK = tu_weight(model, MI_B_K, l, kv, &rr, &cc);
  double *WU = tu_weight(model, MI_W_U, 0, 0, &rr, &cc);
  for (unsigned flags = 0; flags < 4; flags++)
    for (int q = 0; q < 2; q++)
      for (int k = 0; k < 2; k++) {
        const double *Eq = q ? Ep : E, *Ek = k ? Ep : E;
        size_t nq = q ? P : V, nk = k ? P : V;
        double s = (flags & MI_QK_SCALE) ? 1.0 / sqrt((double)dh) : 1.0;
        double *Q = projected(Eq, WQ, (flags & MI_QK_BIAS) ? bQ : NULL, nq, D, dh);
        double *K = projected(Ek, WK, (flags & MI_QK_BIAS) ? bK : NULL, nk, D, dh);
        double *Kt = tu_transposed(K, nk, dh), *want = tu_mul(Q, Kt, nq, dh, nk);
        for (size_t i = 0; i < nq * nk; i++)
          want[i] *= s;
        mi_circuit *c;
        TU_OK(mi_circuit_qk(&c, model, l, h, q ? MI_EMBED_POS : MI_EMBED_TOKEN,
                            k ? MI_EMBED_POS : MI_EMBED_TOKEN, flags));
        check_dense(c, want, nq, nk, "qk");
        mi_circuit *t;
        TU_OK(mi_circuit_transpose(&t, c));
        double *wt = tu_transposed(want, nq, nk);
        check_dense(t, wt, nk, nq, "qk transposed");
        mi_circuit_free(c);
        mi_circuit_free(t);
        free(Q); free(K); free(Kt); free(want); free(wt);
      }
  /* OV: W_E W_V W_O W_U; direct: W_E W_U. The circuit outlives its model. */
  double *EV = tu_mul(E, WV, V, D, dh), *OU = tu_mul(WO, WU, dh, D, V);
  double *ov = tu_mul(EV, OU, V, dh, V), *direct = tu_mul(E, WU, V, D, V);
  mi_circuit *c_ov, *c_direct;
  TU_OK(mi_circuit_ov(&c_ov, model, l, h));
  TU_OK(mi_circuit_direct(&c_direct, model));
  mi_model_free(model);
  check_dense(c_ov, ov, V, V, "ov");
  check_dense(c_direct, direct, V, V, "direct");
  /* Composition stays exact: direct · ov and ov · direct (ranks 8 and 3,
   * both branches of the folding). */
  mi_circuit *c1, *c2;
  TU_OK(mi_circuit_compose(&c1, c_direct, c_ov));
  TU_OK(mi_circuit_compose(&c2, c_ov, c_direct));
  size_t rank;
  TU_OK(mi_circuit_shape(NULL, NULL, &rank, c1));
  ck_assert_uint_eq(rank, dh);
  double *p1 = tu_mul(direct, ov, V, V, V), *p2 = tu_mul(ov, direct, V, V, V);
  check_dense(c1, p1, V, V, "direct*ov");
  check_dense(c2, p2, V, V, "ov*direct");
  mi_circuit_free(c1);
  mi_circuit_free(c2);
  mi_circuit_free(c_direct);
  mi_circuit_free(c_ov);
  free(EV); free(OU); free(ov); free(direct); free(p1); free(p2);
  free(E); free(Ep); free(WQ); free(WK); free(WV); free(WO); free(bQ); free(bK); free(WU);
}
END_TEST

/* ---- eigenvalues ------------------------------------------------------------------ */

/* Dense eigenvalues (dgeev) sorted like the library's, by decreasing modulus. */
static void dense_eigenvalues(double *re, double *im, const double *M, size_t n) {
  double *a = malloc(n * n * sizeof *a);
  memcpy(a, M, n * n * sizeof *a);
  ck_assert_int_eq(LAPACKE_dgeev(LAPACK_ROW_MAJOR, 'N', 'N', (int)n, a, (int)n, re, im,
                                 NULL, 1, NULL, 1), 0);
  free(a);
}

/* Every eigenvalue the library returned matches a distinct dense one. */
static void match_eigenvalues(const double *re, const double *im, size_t count,
                              const double *dre, const double *dim, size_t n, double tol) {
  bool *used = calloc(n, sizeof *used);
  double prev = INFINITY;
  for (size_t t = 0; t < count; t++) {
    double mod = hypot(re[t], im[t]);
    ck_assert_msg(mod <= prev * (1 + 1e-12), "not sorted by modulus at %zu", t);
    prev = mod;
    size_t best = n;
    double dist = INFINITY;
    for (size_t u = 0; u < n; u++)
      if (!used[u] && hypot(re[t] - dre[u], im[t] - dim[u]) < dist) {
        dist = hypot(re[t] - dre[u], im[t] - dim[u]);
        best = u;
      }
    ck_assert_msg(dist <= tol, "eigenvalue %zu (%g%+gi): nearest dense one %g away", t,
                  re[t], im[t], dist);
    used[best] = true;
  }
  /* Whatever was not matched is (numerically) zero. */
  for (size_t u = 0; u < n; u++)
    if (!used[u])
      ck_assert_msg(hypot(dre[u], dim[u]) <= tol, "dense eigenvalue %g%+gi missed", dre[u],
                    dim[u]);
  free(used);
}

START_TEST(eigenvalues_match_dense) {
  static const size_t cases[][2] = {{6, 3}, {5, 5}, {4, 6}, {9, 1}, {30, 12}};
  size_t n = cases[_i][0], r = cases[_i][1], limit = n < r ? n : r;
  tu_rng rng = tu_rng_seed(300 + _i);
  float *A = random_floats(&rng, n, r, r), *B = random_floats(&rng, r, n, n);
  double *M = malloc(n * n * sizeof *M);
  dense_reference(M, NULL, A, r, B, n, n, r, n);
  double *dre = malloc(n * sizeof *dre), *dim = malloc(n * sizeof *dim);
  dense_eigenvalues(dre, dim, M, n);
  mi_circuit *c;
  TU_OK(mi_circuit_from_factors(&c, n, r, n, A, r, B, n));
  double re[12], im[12];
  TU_OK(mi_circuit_eigenvalues(re, im, limit, c));
  /* Both in double from the same float-exact numbers; eigenvalues of a
   * random matrix are well conditioned enough for 1e-8 of the largest. */
  match_eigenvalues(re, im, limit, dre, dim, n, 1e-8 * tu_max_abs(M, n * n) * n);
  for (size_t t = 0; t + 1 < limit; t++)
    if (im[t] != 0 && im[t] == -im[t + 1]) {
      ck_assert(im[t] > 0 && re[t] == re[t + 1]);
      t++;
    }
  mi_circuit_free(c);
  free(A); free(B); free(M); free(dre); free(dim);
}
END_TEST

/* ---- row statistics -------------------------------------------------------------- */

/*
 * Mean and population sd of each line of A·B (rows, or columns when
 * `columns`), from the dense product in long double, two passes: the
 * reference for mi_circuit_row_stats.
 */
static void dense_line_stats(double *mean, double *sd, const float *A, const float *B,
                             size_t n, size_t r, size_t m, bool columns) {
  long double *M = malloc(n * m * sizeof *M);
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < m; j++) {
      long double x = 0;
      for (size_t t = 0; t < r; t++)
        x += (long double)A[i * r + t] * B[t * m + j];
      M[i * m + j] = x;
    }
  size_t lines = columns ? m : n, len = columns ? n : m;
  for (size_t a = 0; a < lines; a++) {
    long double sum = 0, sq = 0;
    for (size_t b = 0; b < len; b++)
      sum += columns ? M[b * m + a] : M[a * m + b];
    long double mu = sum / len;
    for (size_t b = 0; b < len; b++) {
      long double d = (columns ? M[b * m + a] : M[a * m + b]) - mu;
      sq += d * d;
    }
    mean[a] = (double)mu;
    sd[a] = (double)sqrtl(sq / len);
  }
  free(M);
}

/*
 * mi_circuit_row_stats against the dense reference, rows and columns, all
 * lines and a slice. Shape 0..5: random N(0,1) factors. Shape 6: every
 * column of B is a large common vector plus noise 1e-6 its size (and A's
 * rows likewise for the column statistics), so each line's mean is about
 * 1e6 of its sd: E[x²] − mean², even in double, would lose about 12 of its
 * 16 digits (a relative error near 1e-4 in the sd); the centred closed
 * form keeps them. Tolerances: means within 1e-12 of the line's scale
 * (the mean's size plus its sd; double rounding over r terms and a sum of
 * up to 700), sds within 1e-8 relative: double rounding in the quadratic
 * form against the sd, amplified by at most the mean / sd ratio of 1e6
 * through the float32 inputs' exact values (the reference is long double).
 */
START_TEST(row_stats_match_dense_double) {
  static const size_t shapes[][3] = {{7, 3, 5}, {6, 1, 9}, {5, 5, 5}, {1, 2, 8},
                                     {300, 4, 700}, {40, 16, 33}, {60, 8, 90}};
  size_t n = shapes[_i][0], r = shapes[_i][1], m = shapes[_i][2];
  tu_rng rng = tu_rng_seed(100 + (uint64_t)_i);
  float *A = random_floats(&rng, n, r, r), *B = random_floats(&rng, r, m, m);
  if (_i == 6) {
    for (size_t t = 0; t < r; t++) {
      double common = 100.0 * (1.0 + tu_uniform(&rng));
      for (size_t j = 0; j < m; j++)
        B[t * m + j] = (float)(common * (1.0 + 1e-6 * tu_normal(&rng)));
      for (size_t i = 0; i < n; i++)
        A[i * r + t] = (float)(common * (1.0 + 1e-6 * tu_normal(&rng)));
    }
  }
  mi_circuit *c;
  TU_OK(mi_circuit_from_factors(&c, n, r, m, A, r, B, m));
  for (int columns = 0; columns < 2; columns++) {
    size_t lines = columns ? m : n;
    double *want_mean = malloc(lines * sizeof(double)), *want_sd = malloc(lines * sizeof(double));
    double *mean = malloc(lines * sizeof(double)), *sd = malloc(lines * sizeof(double));
    dense_line_stats(want_mean, want_sd, A, B, n, r, m, columns);
    unsigned flags = columns ? MI_TOPK_COLUMNS : 0;
    TU_OK(mi_circuit_row_stats(mean, sd, c, 0, lines, flags));
    for (size_t i = 0; i < lines; i++) {
      double scale = fabs(want_mean[i]) + want_sd[i];
      ck_assert_msg(fabs(mean[i] - want_mean[i]) <= 1e-12 * scale,
                    "shape %d %s %zu: mean %.17g vs %.17g", _i, columns ? "column" : "row", i,
                    mean[i], want_mean[i]);
      /* a line of one entry has sd 0, exactly, both ways */
      double rel = want_sd[i] > 0 ? fabs(sd[i] - want_sd[i]) / want_sd[i] : sd[i];
      ck_assert_msg(rel <= 1e-8, "shape %d %s %zu: sd %.17g vs %.17g (mean %.6g)", _i,
                    columns ? "column" : "row", i, sd[i], want_sd[i], want_mean[i]);
    }
    if (_i == 6) /* the case is the one it claims: means about 1e6 of their sd */
      ck_assert(fabs(want_mean[0]) > 1e5 * want_sd[0]);
    if (lines > 2) { /* a slice: the same numbers, one output or the other */
      double part[700];
      TU_OK(mi_circuit_row_stats(NULL, part, c, 1, lines - 1, flags));
      for (size_t i = 1; i + 1 < lines; i++)
        ck_assert(part[i - 1] == sd[i]);
      TU_OK(mi_circuit_row_stats(part, NULL, c, 1, lines - 1, flags));
      for (size_t i = 1; i + 1 < lines; i++)
        ck_assert(part[i - 1] == mean[i]);
    }
    free(want_mean);
    free(want_sd);
    free(mean);
    free(sd);
  }
  double x[4];
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_row_stats(NULL, NULL, c, 0, 1, 0));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_row_stats(x, x, NULL, 0, 1, 0));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_row_stats(x, x, c, 0, 1, MI_TOPK_SMALLEST));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_row_stats(x, x, c, 1, 1, 0));
  TU_FAILS(MI_ERR_INDEX, mi_circuit_row_stats(x, x, c, 0, n + 1, 0));
  TU_FAILS(MI_ERR_INDEX, mi_circuit_row_stats(x, x, c, 0, m + 1, MI_TOPK_COLUMNS));
  mi_circuit_free(c);
  free(A);
  free(B);
}
END_TEST

/* A row with no spread: a zero row of A gives mean 0 and sd exactly 0. */
START_TEST(row_stats_of_a_constant_row) {
  float A[6] = {1, 2, 0, 0, -1, 3}, B[8] = {1, 2, 3, 4, 0.5f, -1, 2, 0};
  mi_circuit *c;
  TU_OK(mi_circuit_from_factors(&c, 3, 2, 4, A, 2, B, 4));
  double mean[3], sd[3];
  TU_OK(mi_circuit_row_stats(mean, sd, c, 0, 3, 0));
  ck_assert(mean[1] == 0.0 && sd[1] == 0.0);
  /* Row 0 = (2, 0, 7, 4): mean 3.25, population variance 6.6875. */
  ck_assert(fabs(mean[0] - 3.25) < 1e-15 && fabs(sd[0] - sqrt(6.6875)) < 1e-14);
  mi_circuit_free(c);
}
END_TEST

/* ---- bad input ------------------------------------------------------------------- */

START_TEST(bad_input_is_refused) {
  mi_config cfg = tu_config(2, 3, 6, 2, 9, 0, 0);
  mi_model *model = tu_random_model(&cfg, 5);
  mi_circuit *c = (mi_circuit *)1;
  TU_FAILS(MI_ERR_INDEX, mi_circuit_qk(&c, model, 2, 0, MI_EMBED_TOKEN, MI_EMBED_TOKEN, 0));
  ck_assert_ptr_null(c);
  ck_assert(strstr(mi_last_error(), "layer 2") != NULL);
  TU_FAILS(MI_ERR_INDEX, mi_circuit_qk(&c, model, 0, 3, MI_EMBED_TOKEN, MI_EMBED_TOKEN, 0));
  ck_assert(strstr(mi_last_error(), "head 3") != NULL);
  TU_FAILS(MI_ERR_INDEX, mi_circuit_ov(&c, model, 0, 7));
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_circuit_qk(&c, model, 0, 0, MI_EMBED_POS, MI_EMBED_TOKEN, 0));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT,
           mi_circuit_qk(&c, model, 0, 0, MI_EMBED_TOKEN, (mi_embedding)7, 0));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT,
           mi_circuit_qk(&c, model, 0, 0, MI_EMBED_TOKEN, MI_EMBED_TOKEN, 8));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_qk(NULL, model, 0, 0, 0, 0, 0));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_ov(&c, NULL, 0, 0));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_direct(&c, NULL));

  float A[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, B[12] = {1, 0, 2, 0, 1, 3};
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_from_factors(&c, 4, 0, 3, A, 1, B, 3));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_from_factors(&c, 4, 2, 3, A, 1, B, 3));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_from_factors(&c, 4, 2, 3, NULL, 2, B, 3));
  mi_circuit *nonsquare, *square;
  TU_OK(mi_circuit_from_factors(&nonsquare, 4, 2, 3, A, 2, B, 3));
  TU_OK(mi_circuit_ov(&square, model, 1, 2));
  mi_model_free(model);

  float out[64];
  size_t idx[64];
  double d[8], e[8];
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_rows(out, 2, nonsquare, 0, 2));
  ck_assert(strstr(mi_last_error(), "ld 2") != NULL);
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_rows(NULL, 3, nonsquare, 0, 2));
  TU_FAILS(MI_ERR_INDEX, mi_circuit_rows(out, 3, nonsquare, 2, 5));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_rows(out, 3, nonsquare, 2, 2));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_cols(out, 1, nonsquare, 0, 2));
  TU_FAILS(MI_ERR_INDEX, mi_circuit_cols(out, 4, nonsquare, 0, 4));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_dense(out, 2, nonsquare));
  TU_FAILS(MI_ERR_INDEX, mi_circuit_entry(d, nonsquare, 4, 0));
  TU_FAILS(MI_ERR_INDEX, mi_circuit_entry(d, nonsquare, 0, 3));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_topk(idx, out, 4, nonsquare, 0, 0, 0, 4));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_topk(idx, out, 4, nonsquare, 4, 0, 0, 4));
  ck_assert(strstr(mi_last_error(), "k = 4") != NULL);
  TU_OK(mi_circuit_topk(idx, out, 4, nonsquare, 4, MI_TOPK_COLUMNS, 0, 3));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_topk(idx, out, 1, nonsquare, 2, 0, 0, 4));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_topk(NULL, out, 4, nonsquare, 2, 0, 0, 4));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_topk(idx, NULL, 4, nonsquare, 2, 0, 0, 4));
  TU_FAILS(MI_ERR_INDEX, mi_circuit_topk(idx, out, 4, nonsquare, 2, 0, 0, 5));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_topk(idx, out, 4, nonsquare, 2, 16, 0, 4));
  TU_FAILS(MI_ERR_SHAPE, mi_circuit_eigenvalues(d, e, 1, nonsquare));
  ck_assert(strstr(mi_last_error(), "not square") != NULL);
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_eigenvalues(d, e, 3, square));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_eigenvalues(NULL, e, 1, square));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_singular_values(d, 4, nonsquare));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_singular_values(d, 0, nonsquare));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_frobenius_norm(NULL, nonsquare));
  mi_circuit *x;
  TU_FAILS(MI_ERR_SHAPE, mi_circuit_compose(&x, nonsquare, nonsquare));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_shape(NULL, NULL, NULL, NULL));
  mi_circuit_free(nonsquare);
  mi_circuit_free(square);
  mi_circuit_free(NULL);
}
END_TEST

/* ---- BLIS kernel sets and threads -------------------------------------------------- */

static const char *const KNOWN_SETS[] = {"skx", "knl", "haswell", "sandybridge", "penryn",
                                         "zen3", "zen2", "zen", "excavator", "steamroller",
                                         "piledriver", "bulldozer", "generic"};

/* Each Check test runs in a fresh child: BLIS starts there. */
START_TEST(fast_kernels_are_selected_before_blis_starts) {
  unsetenv("BLIS_ARCH_TYPE");
  TU_OK(mi_blis_select_fast_kernels());
  const char *name;
  TU_OK(mi_blis_kernel_set(&name));
  bool known = false;
  for (size_t i = 0; i < sizeof KNOWN_SETS / sizeof KNOWN_SETS[0]; i++)
    known |= strcmp(name, KNOWN_SETS[i]) == 0;
  ck_assert_msg(known, "kernel set '%s'", name);
  /* Asked for, the choice is one of the fast sets where the CPU has AVX2. */
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    ck_assert_msg(strcmp(name, "skx") == 0 || strcmp(name, "haswell") == 0 ||
                      strncmp(name, "zen", 3) == 0,
                  "selected '%s'", name);
  TU_FAILS(MI_ERR_STATE, mi_blis_select_fast_kernels());
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_blis_kernel_set(NULL));
}
END_TEST

START_TEST(bad_blis_arch_type_is_refused) {
  static const char *const bad[] = {"", "skx", "99", "2", "-2", "6x", "13"};
  setenv("BLIS_ARCH_TYPE", bad[_i], 1);
  const char *name = "untouched";
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_blis_kernel_set(&name));
  ck_assert(strstr(mi_last_error(), "BLIS_ARCH_TYPE") != NULL);
  ck_assert_ptr_null(name);
  /* Every computing call refuses the same way, before BLIS can abort. */
  float A[2] = {1, 2}, B[2] = {3, 4}, out[4];
  mi_circuit *c;
  TU_OK(mi_circuit_from_factors(&c, 2, 1, 2, A, 1, B, 2));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_dense(out, 2, c));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_blis_select_fast_kernels());
  mi_circuit_free(c);
}
END_TEST

START_TEST(generic_blis_arch_type_is_accepted) {
  setenv("BLIS_ARCH_TYPE", "25", 1);
  TU_OK(mi_blis_select_fast_kernels()); /* the caller's value wins */
  const char *name;
  TU_OK(mi_blis_kernel_set(&name));
  ck_assert_str_eq(name, "generic");
}
END_TEST

START_TEST(threads_are_per_call) {
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_set_num_threads(5000));
  float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, -1, 2, 0, 1, 3}, one[9], two[9];
  mi_circuit *c;
  TU_OK(mi_circuit_from_factors(&c, 3, 2, 3, A, 2, B, 3));
  TU_OK(mi_set_num_threads(1));
  ck_assert_uint_eq(mi_get_num_threads(), 1);
  TU_OK(mi_circuit_dense(one, 3, c));
  TU_OK(mi_set_num_threads(2));
  TU_OK(mi_circuit_dense(two, 3, c));
  TU_OK(mi_set_num_threads(0));
  ck_assert(memcmp(one, two, sizeof one) == 0);
  ck_assert_float_eq(one[0], 1 * 1 + 2 * 0);
  mi_circuit_free(c);
}
END_TEST

int main(void) {
  Suite *s = suite_create("circuit");
  TCase *tc = tcase_create("queries");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, queries_match_dense_reference, 0,
                      (int)(sizeof SHAPES / sizeof SHAPES[0]));
  tcase_add_loop_test(tc, topk_matches_full_sort, 1, 3);
  tcase_add_test(tc, topk_random_values);
  tcase_add_test(tc, model_circuits_match_dense_reference);
  tcase_add_loop_test(tc, eigenvalues_match_dense, 0, 5);
  tcase_add_test(tc, bad_input_is_refused);
  tcase_add_loop_test(tc, row_stats_match_dense_double, 0, 7);
  tcase_add_test(tc, row_stats_of_a_constant_row);
  suite_add_tcase(s, tc);
  TCase *blis = tcase_create("blis");
  tcase_add_test(blis, fast_kernels_are_selected_before_blis_starts);
  tcase_add_loop_test(blis, bad_blis_arch_type_is_refused, 0, 7);
  tcase_add_test(blis, generic_blis_arch_type_is_accepted);
  tcase_add_test(blis, threads_are_per_call);
  suite_add_tcase(s, blis);
  return tu_run_suite(s);
}
