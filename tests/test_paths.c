/*
 * Composition scores against dense d_model × d_model computations in double,
 * constructed cases with known scores, the chance baseline against an
 * independent dense Monte Carlo, and bad arguments (an invalid BLIS_ARCH_TYPE too).
 */
#define _POSIX_C_SOURCE 200809L

#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const unsigned ALL_PARTS = MI_PART_POS_EMBED | MI_PART_QKV_BIAS | MI_PART_OUT_BIAS |
                                  MI_PART_UNEMBED_BIAS | MI_PART_LN | MI_PART_LN_FINAL;

static double frobenius(const double *A, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++)
    s += A[i] * A[i];
  return sqrt(s);
}

/* out = X · Yᵀ (D × D) for X, Y of D × dh. */
static void dense_xyt(double *out, const double *X, const double *Y, size_t D, size_t dh) {
  for (size_t i = 0; i < D; i++)
    for (size_t j = 0; j < D; j++) {
      double s = 0;
      for (size_t t = 0; t < dh; t++)
        s += X[i * dh + t] * Y[j * dh + t];
      out[i * D + j] = s;
    }
}

/* The d_model × d_model matrices of head (l, h): OV, QK and QKᵀ. */
static void head_matrices(double *ov, double *qk, double *qkt, const mi_model *model,
                          const mi_config *c, size_t l, size_t h) {
  size_t D = c->d_model, dh = c->d_head, g = h / (c->n_heads / c->n_kv_heads), r, k;
  double *WQ = tu_weight(model, MI_W_Q, l, h, &r, &k);
  double *WK = tu_weight(model, MI_W_K, l, g, &r, &k);
  double *WV = tu_weight(model, MI_W_V, l, g, &r, &k);
  double *WO = tu_weight(model, MI_W_O, l, h, &r, &k);
  tu_matmul(ov, WV, WO, NULL, D, dh, D);
  dense_xyt(qk, WQ, WK, D, dh);
  dense_xyt(qkt, WK, WQ, D, dh);
  free(WQ); free(WK); free(WV); free(WO);
}

static mi_config composition_config(int i) {
  switch (i) {
  case 0: return tu_config(2, 3, 12, 4, 10, 8, 0);
  case 1: { /* grouped heads, TransformerLens processing */
    mi_config c = tu_config(3, 4, 16, 3, 10, 8, ALL_PARTS);
    c.n_kv_heads = 2;
    return c;
  }
  default: return tu_config(3, 2, 5, 7, 9, 8, MI_PART_LN); /* d_head > d_model */
  }
}

/*
 * Every score of every kind against ‖M₁M₂‖_F / (‖M₁‖_F‖M₂‖_F) with the
 * matrices formed densely in double. Tolerance 2e-6 absolute (scores lie in
 * [0, 1]): the library rounds each head's d_head × d_model factors to
 * float32 (6e-8 relative) and sums ≤ 16 float32 products a block entry
 * (measured: within 4e-8); a wrong factor or head index is off by ~0.1.
 */
START_TEST(scores_match_dense_products) {
  mi_config c = composition_config(_i);
  mi_model *model = tu_random_model(&c, 300 + _i);
  if (_i == 1)
    TU_OK(mi_model_process(model, MI_PROCESS_TRANSFORMERLENS));
  TU_OK(mi_model_get_config(&c, model));
  size_t L = c.n_layers, H = c.n_heads, D = c.d_model, N = L * H * L * H;
  double *ov = malloc(L * H * D * D * sizeof *ov), *qk = malloc(L * H * D * D * sizeof *qk);
  double *qkt = malloc(L * H * D * D * sizeof *qkt), *prod = malloc(D * D * sizeof *prod);
  for (size_t i = 0; i < L * H; i++)
    head_matrices(ov + i * D * D, qk + i * D * D, qkt + i * D * D, model, &c, i / H, i % H);
  double *got = malloc(N * sizeof *got);
  const double *right_of[3] = {qk, qkt, ov};
  for (int kind = MI_COMPOSE_Q; kind <= MI_COMPOSE_V; kind++) {
    for (size_t i = 0; i < N; i++)
      got[i] = -1.0;
    TU_OK(mi_model_composition_scores(got, N, model, (mi_composition)kind));
    double worst = 0;
    for (size_t a = 0; a < L * H; a++)
      for (size_t b = 0; b < L * H; b++) {
        double score = got[a * L * H + b];
        if (b / H <= a / H) {
          ck_assert_msg(score == 0.0, "kind %d: (%zu, %zu) not later but %g", kind, a, b, score);
          continue;
        }
        const double *M1 = ov + a * D * D, *M2 = right_of[kind] + b * D * D;
        tu_matmul(prod, M1, M2, NULL, D, D, D);
        double want = frobenius(prod, D * D) / (frobenius(M1, D * D) * frobenius(M2, D * D));
        worst = fmax(worst, fabs(score - want));
      }
    ck_assert_msg(worst <= 2e-6, "config %d kind %d: off by %g", _i, kind, worst);
  }
  free(ov); free(qk); free(qkt); free(prod); free(got);
  mi_model_free(model);
}
END_TEST

/* Xᵀ of a rows × cols matrix, malloc'd. */
static double *transposed(const double *X, size_t rows, size_t cols) {
  double *T = malloc(rows * cols * sizeof *T);
  for (size_t i = 0; i < rows; i++)
    for (size_t j = 0; j < cols; j++)
      T[j * rows + i] = X[i * cols + j];
  return T;
}

/*
 * A head's matrix of one kind's role as A·B (A d_model × d_head, B d_head ×
 * d_model, doubles, malloc'd): 0 W_Q·W_Kᵀ (Q), 1 W_K·W_Qᵀ (K), 2 W_V·W_O (V
 * and every earlier head's side).
 */
static void head_factors(double **A, double **B, const mi_model *model, const mi_config *c,
                         size_t l, size_t h, int which) {
  size_t g = h / (c->n_heads / c->n_kv_heads), r, k;
  double *WQ = tu_weight(model, MI_W_Q, l, h, &r, &k), *WK = tu_weight(model, MI_W_K, l, g, &r, &k);
  if (which == 2) {
    *A = tu_weight(model, MI_W_V, l, g, &r, &k);
    *B = tu_weight(model, MI_W_O, l, h, &r, &k);
  } else {
    *A = which == 0 ? WQ : WK;
    *B = transposed(which == 0 ? WK : WQ, c->d_model, c->d_head);
  }
  if (which == 2 || which == 1)
    free(WQ);
  if (which == 2 || which == 0)
    free(WK);
}

/*
 * Head a's score into b for `kind` in double, multiplying the weights in
 * another order: ‖A₁B₁·A₂B₂‖_F as ‖(A₁·(B₁A₂))·B₂‖_F, each d_model × d_model
 * matrix's norm from the matrix itself.
 */
static double reference_score(const mi_model *model, const mi_config *c, size_t a, size_t b,
                              int kind) {
  size_t H = c->n_heads, D = c->d_model, dh = c->d_head;
  double *A1, *B1, *A2, *B2, *full = malloc(D * D * sizeof *full);
  head_factors(&A1, &B1, model, c, a / H, a % H, 2);
  head_factors(&A2, &B2, model, c, b / H, b % H, kind);
  double *mid = tu_mul(B1, A2, dh, D, dh), *left = tu_mul(A1, mid, D, dh, dh);
  tu_matmul(full, left, B2, NULL, D, dh, D);
  double num = frobenius(full, D * D);
  tu_matmul(full, A1, B1, NULL, D, dh, D);
  double n1 = frobenius(full, D * D);
  tu_matmul(full, A2, B2, NULL, D, dh, D);
  double want = num / (n1 * frobenius(full, D * D));
  free(A1); free(B1); free(A2); free(B2); free(mid); free(left); free(full);
  return want;
}

/* The worst absolute error of a table of `kind` against reference_score
 * (want: the reference table, filled when *filled is false); entries not
 * into a later layer must be 0. */
static double worst_error(const double *got, double *want, bool *filled, const mi_model *model,
                          const mi_config *c, int kind) {
  size_t nh = c->n_layers * c->n_heads, H = c->n_heads;
  double worst = 0;
  for (size_t a = 0; a < nh; a++)
    for (size_t b = 0; b < nh; b++) {
      double score = got[a * nh + b];
      if (b / H <= a / H) {
        ck_assert_msg(score == 0.0, "kind %d: (%zu, %zu) not later but %g", kind, a, b, score);
        continue;
      }
      if (!*filled)
        want[a * nh + b] = reference_score(model, c, a, b, kind);
      worst = fmax(worst, fabs(score - want[a * nh + b]));
    }
  *filled = true;
  return worst;
}

/*
 * d_model 200 cuts the Grams into several tiles (off-diagonal ones too);
 * with 64 threads the tiles narrow below their height, so a tile's columns
 * start inside its rows. Grouped heads; LayerNorm as loaded (case 0) and
 * folded (1). Both entry points, the table of several kinds with a kind
 * repeated, against the reference; tolerance 2e-6 absolute as above.
 */
START_TEST(scores_match_across_tiles) {
  mi_config c = tu_config(4, 4, 200, 8, 10, 8, _i ? ALL_PARTS : MI_PART_LN);
  c.n_kv_heads = 2;
  mi_model *model = tu_random_model(&c, 500 + _i);
  if (_i == 1) {
    TU_OK(mi_model_process(model, MI_PROCESS_TRANSFORMERLENS));
    TU_OK(mi_set_num_threads(64));
  }
  TU_OK(mi_model_get_config(&c, model));
  size_t nh = c.n_layers * c.n_heads, N = nh * nh;
  const mi_composition kinds[4] = {MI_COMPOSE_V, MI_COMPOSE_Q, MI_COMPOSE_K, MI_COMPOSE_V};
  double *got = malloc(4 * N * sizeof *got), *want = malloc(3 * N * sizeof *want);
  bool filled[3] = {false, false, false};
  for (size_t i = 0; i < 4 * N; i++)
    got[i] = -1.0;
  TU_OK(mi_model_composition_tables(got, 4 * N, model, kinds, 4));
  for (int t = 0; t < 4; t++) {
    int k = (int)kinds[t];
    double worst = worst_error(got + t * N, want + k * N, &filled[k], model, &c, k);
    ck_assert_msg(worst <= 2e-6, "case %d, table %d: off by %g", _i, t, worst);
  }
  for (int kind = MI_COMPOSE_Q; kind <= MI_COMPOSE_V; kind++) {
    TU_OK(mi_model_composition_scores(got, N, model, (mi_composition)kind));
    double worst = worst_error(got, want + kind * N, &filled[kind], model, &c, kind);
    ck_assert_msg(worst <= 2e-6, "case %d, kind %d: off by %g", _i, kind, worst);
  }
  TU_FAILS(MI_ERR_SHAPE, mi_model_composition_tables(got, 4 * N - 1, model, kinds, 4));
  free(got);
  free(want);
  mi_model_free(model);
}
END_TEST

/*
 * The tables are the same bits on 1, 2 and 7 threads, and from one run to
 * the next: tiles are summed in slices fixed by the shapes alone, never in
 * the order threads happened to take them (they differed in ~25 % of the
 * scores by up to 4e-17 when each thread kept its own sum).
 */
START_TEST(scores_do_not_depend_on_the_threads) {
  mi_config c = tu_config(6, 8, 256, 8, 10, 8, MI_PART_LN);
  mi_model *model = tu_random_model(&c, 77);
  size_t nh = c.n_layers * c.n_heads, N = nh * nh;
  const mi_composition kinds[3] = {MI_COMPOSE_Q, MI_COMPOSE_K, MI_COMPOSE_V};
  double *first = malloc(3 * N * sizeof *first), *again = malloc(3 * N * sizeof *again);
  static const size_t threads[] = {1, 2, 7, 7, 2};
  TU_OK(mi_set_num_threads(threads[0]));
  TU_OK(mi_model_composition_tables(first, 3 * N, model, kinds, 3));
  for (size_t t = 1; t < sizeof threads / sizeof threads[0]; t++) {
    TU_OK(mi_set_num_threads(threads[t]));
    TU_OK(mi_model_composition_tables(again, 3 * N, model, kinds, 3));
    for (size_t i = 0; i < 3 * N; i++)
      ck_assert_msg(memcmp(&first[i], &again[i], sizeof first[i]) == 0,
                    "%zu threads: score %zu is %.17g, on 1 thread %.17g", threads[t], i,
                    again[i], first[i]);
  }
  free(first);
  free(again);
  mi_model_free(model);
}
END_TEST

/* A random orthogonal D × D matrix (modified Gram–Schmidt of Gaussians). */
static double *random_rotation(size_t D, tu_rng *rng) {
  double *U = malloc(D * D * sizeof *U);
  for (size_t i = 0; i < D * D; i++)
    U[i] = tu_normal(rng);
  for (size_t i = 0; i < D; i++) { /* row i */
    for (size_t j = 0; j < i; j++) {
      double dot = 0;
      for (size_t t = 0; t < D; t++)
        dot += U[i * D + t] * U[j * D + t];
      for (size_t t = 0; t < D; t++)
        U[i * D + t] -= dot * U[j * D + t];
    }
    double norm = frobenius(U + i * D, D);
    for (size_t t = 0; t < D; t++)
      U[i * D + t] /= norm;
  }
  return U;
}

/*
 * Nearly orthogonal subspaces: head (0, 0) writes into the first half of
 * the residual stream and head (1, 0) reads (values, queries and keys) from
 * the second half, each leaking 1e-4 into the other half, the whole model
 * then turned by a random rotation so that every Gram entry is O(1) while
 * the scores are ~1e-4: ⟨P, Q⟩ cancels to 1e-8 of its terms. Float32
 * inner products would be off by ~1e-3 here (their rounding of ~1e-6 a
 * squared score against 1e-8); the library's must agree with the reference
 * to 1e-3 of these scores (measured: within 5e-5, the float32 factors'
 * rounding; with the Grams rounded to float32 before the sum, 2.3e-3),
 * and every other score to 2e-6 as above.
 */
START_TEST(small_scores_do_not_cancel) {
  size_t D = 200, dh = 8, half = D / 2;
  double eps = 1e-4;
  mi_config c = tu_config(2, 2, D, dh, 10, 8, 0);
  mi_model *model = tu_random_model(&c, 77);
  tu_rng rng = tu_rng_seed(78);
  double *U = random_rotation(D, &rng), *w = malloc(D * dh * sizeof *w);
  float *f = malloc(D * dh * sizeof *f);
  /* W_O of (0, 0): dh × D, rows (W_O·U) */
  for (size_t i = 0; i < dh * D; i++)
    w[i] = tu_normal(&rng) * (i % D < half ? 1.0 : eps);
  for (size_t r = 0; r < dh; r++)
    for (size_t j = 0; j < D; j++) {
      double s = 0;
      for (size_t t = 0; t < D; t++)
        s += w[r * D + t] * U[t * D + j];
      f[r * D + j] = (float)s;
    }
  TU_OK(mi_model_set_weight(model, MI_W_O, 0, 0, MI_DTYPE_F32, f, D));
  /* W_V, W_Q, W_K of (1, 0): D × dh, (Uᵀ·W) */
  const mi_weight reads[3] = {MI_W_V, MI_W_Q, MI_W_K};
  for (int m = 0; m < 3; m++) {
    for (size_t i = 0; i < D * dh; i++)
      w[i] = tu_normal(&rng) * (i / dh >= half ? 1.0 : eps);
    for (size_t j = 0; j < D; j++)
      for (size_t col = 0; col < dh; col++) {
        double s = 0;
        for (size_t t = 0; t < D; t++)
          s += U[t * D + j] * w[t * dh + col];
        f[j * dh + col] = (float)s;
      }
    TU_OK(mi_model_set_weight(model, reads[m], 1, 0, MI_DTYPE_F32, f, dh));
  }
  TU_OK(mi_model_process(model, 0));
  TU_OK(mi_model_get_config(&c, model));
  size_t N = 16;
  double got[16];
  for (int kind = MI_COMPOSE_Q; kind <= MI_COMPOSE_V; kind++) {
    TU_OK(mi_model_composition_scores(got, N, model, (mi_composition)kind));
    /* (0, 0) → (1, 0) is index 2 */
    bool filled = false;
    double table[16], worst = worst_error(got, table, &filled, model, &c, kind), want = table[2];
    ck_assert_msg(want < 1e-3, "kind %d: the construction scores %g", kind, want);
    ck_assert_msg(fabs(got[2] - want) <= 1e-3 * want, "kind %d: %g, want %g", kind, got[2], want);
    ck_assert_msg(worst <= 2e-6, "kind %d: off by %g", kind, worst);
  }
  free(U); free(w); free(f);
  mi_model_free(model);
}
END_TEST

/*
 * Heads built by hand: head (0, 0) writes into dimensions {0, 1}; head (1, 0)
 * reads values from {0, 1} with the same projection (W_OV² = W_OV¹ = P, a
 * rank-2 projection: score ‖P‖/‖P‖² = 1/√2); head (1, 1) reads {2, 3}
 * (score exactly 0, as a random-matrix scale would never give).
 */
START_TEST(constructed_heads_have_known_scores) {
  mi_config c = tu_config(2, 2, 6, 2, 5, 4, 0);
  mi_model *model;
  TU_OK(mi_model_create(&model, &c));
  float in01[6 * 2] = {1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0};
  float in23[6 * 2] = {0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0};
  float out01[2 * 6] = {1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0};
  TU_OK(mi_model_set_weight(model, MI_W_V, 0, 0, MI_DTYPE_F32, in01, 2));
  TU_OK(mi_model_set_weight(model, MI_W_O, 0, 0, MI_DTYPE_F32, out01, 6));
  TU_OK(mi_model_set_weight(model, MI_W_V, 1, 0, MI_DTYPE_F32, in01, 2));
  TU_OK(mi_model_set_weight(model, MI_W_O, 1, 0, MI_DTYPE_F32, out01, 6));
  TU_OK(mi_model_set_weight(model, MI_W_V, 1, 1, MI_DTYPE_F32, in23, 2));
  TU_OK(mi_model_set_weight(model, MI_W_O, 1, 1, MI_DTYPE_F32, out01, 6));
  /* Q-composition: head (1, 1)'s queries read {0, 1}, keys anything. */
  TU_OK(mi_model_set_weight(model, MI_W_Q, 1, 1, MI_DTYPE_F32, in01, 2));
  TU_OK(mi_model_set_weight(model, MI_W_K, 1, 1, MI_DTYPE_F32, in23, 2));
  TU_OK(mi_model_process(model, 0));
  double v[16], q[16], k[16];
  TU_OK(mi_model_composition_scores(v, 16, model, MI_COMPOSE_V));
  TU_OK(mi_model_composition_scores(q, 16, model, MI_COMPOSE_Q));
  TU_OK(mi_model_composition_scores(k, 16, model, MI_COMPOSE_K));
  /* index ((l1·H + h1)·L + l2)·H + h2: (0,0) → (1,0) is 2, (0,0) → (1,1) is 3 */
  ck_assert_double_eq_tol(v[2], sqrt(0.5), 1e-7);
  ck_assert_double_eq(v[3], 0.0);
  ck_assert_double_eq(q[2], 0.0); /* head (1, 0) has W_Q = 0: no score, 0 */
  ck_assert_double_eq_tol(q[3], sqrt(0.5), 1e-7);
  ck_assert_double_eq(k[3], 0.0); /* its keys read {2, 3}: nothing head 0 wrote */
  mi_model_free(model);
}
END_TEST

/*
 * The baseline against an independent dense Monte Carlo of the same
 * definition (4000 samples, d_model × d_model products in double, another
 * generator): the means agree within 4 combined standard errors. The
 * returned standard error is the deviation / √100, and two calls agree
 * exactly (fixed seed).
 */
static const size_t BASELINE_SHAPES[][2] = {{8, 2}, {8, 8}, {4, 8}}; /* d_model, d_head */

START_TEST(baseline_matches_a_dense_monte_carlo) {
  /* d_head ≥ d_model too: the scratch once assumed d_model ≥ 1.618·d_head. */
  size_t D = BASELINE_SHAPES[_i][0], dh = BASELINE_SHAPES[_i][1], samples = 4000;
  mi_config c = tu_config(1, 1, D, dh, 5, 4, 0);
  mi_model *model;
  TU_OK(mi_model_create(&model, &c));
  double base[3], again[3];
  TU_OK(mi_model_composition_baseline(base, model));
  TU_OK(mi_model_composition_baseline(again, model));
  ck_assert_mem_eq(base, again, sizeof base);
  ck_assert_double_eq_tol(base[2], base[1] / 10.0, 1e-15);
  tu_rng rng = tu_rng_seed(11);
  double A[4][8 * 8], M1[64], M2[64], P[64], sum = 0, sum_sq = 0;
  for (size_t s = 0; s < samples; s++) {
    for (int m = 0; m < 4; m++)
      for (size_t i = 0; i < D * dh; i++)
        A[m][i] = tu_normal(&rng);
    /* B is drawn as Bᵀ (D × dh): M = A·B = A·(Bᵀ)ᵀ. */
    dense_xyt(M1, A[0], A[1], D, dh);
    dense_xyt(M2, A[2], A[3], D, dh);
    tu_matmul(P, M1, M2, NULL, D, D, D);
    double score = frobenius(P, D * D) / (frobenius(M1, D * D) * frobenius(M2, D * D));
    sum += score;
    sum_sq += score * score;
  }
  double mean = sum / samples, se = sqrt((sum_sq / samples - mean * mean) / samples);
  ck_assert_msg(fabs(base[0] - mean) <= 4 * sqrt(se * se + base[2] * base[2]),
                "baseline %g ± %g, dense Monte Carlo %g ± %g", base[0], base[2], mean, se);
  mi_model_free(model);
}
END_TEST

/*
 * At a realistic shape the baseline is near 1/√d_model (random rank-d_head
 * maps barely align), its spread small, and far below a real composition.
 */
START_TEST(baseline_is_in_a_sensible_range) {
  mi_config c = tu_config(1, 1, 256, 32, 5, 4, 0);
  mi_model *model;
  TU_OK(mi_model_create(&model, &c));
  double base[3];
  TU_OK(mi_model_composition_baseline(base, model));
  ck_assert_msg(base[0] > 0.5 / 16 && base[0] < 2.0 / 16, "baseline %g", base[0]);
  ck_assert_msg(base[1] > 0 && base[1] < 0.5 * base[0], "deviation %g", base[1]);
  mi_model_free(model);
}
END_TEST

START_TEST(bad_arguments_are_refused) {
  mi_config c = tu_config(2, 2, 6, 3, 5, 4, MI_PART_MLP); /* MLPs are fine here */
  mi_model *model = tu_random_model(&c, 1);
  double out[16], base[3];
  TU_OK(mi_model_composition_scores(out, 16, model, MI_COMPOSE_V));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_composition_scores(NULL, 16, model, MI_COMPOSE_V));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_composition_scores(out, 16, NULL, MI_COMPOSE_V));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_composition_scores(out, 16, model, (mi_composition)3));
  TU_FAILS(MI_ERR_SHAPE, mi_model_composition_scores(out, 15, model, MI_COMPOSE_Q));
  ck_assert_msg(strstr(mi_last_error(), "needs 16") != NULL, "%s", mi_last_error());
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_composition_baseline(NULL, model));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_composition_baseline(base, NULL));
  mi_model_free(model);
}
END_TEST

/* Each Check test runs in a fresh child, so BLIS starts there: an invalid
 * kernel set is refused before LAPACK (on BLIS's BLAS) can make BLIS abort. */
START_TEST(bad_blis_arch_type_is_refused) {
  setenv("BLIS_ARCH_TYPE", "99", 1);
  mi_config c = tu_config(2, 2, 8, 4, 5, 4, 0);
  mi_model *model;
  TU_OK(mi_model_create(&model, &c));
  double out[16], base[3];
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_composition_scores(out, 16, model, MI_COMPOSE_Q));
  ck_assert_msg(strstr(mi_last_error(), "BLIS_ARCH_TYPE") != NULL, "%s", mi_last_error());
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_composition_baseline(base, model));
  ck_assert_msg(strstr(mi_last_error(), "BLIS_ARCH_TYPE") != NULL, "%s", mi_last_error());
  mi_model_free(model);
}
END_TEST

/* ---- path enumeration ------------------------------------------------------ */

/* The OV product of a path, dense in double: W_E · Π (W_V W_O) · W_U (V × V). */
static double *dense_path(const mi_model *model, const mi_config *c, size_t order,
                          const size_t *layers, const size_t *heads) {
  size_t V = c->d_vocab, D = c->d_model, dh = c->d_head, r, k;
  double *x = tu_weight(model, MI_W_E, 0, 0, &r, &k); /* V × D, grows through heads */
  double *tmp = malloc(V * D * sizeof *tmp), *mid = malloc(V * dh * sizeof *mid);
  for (size_t i = 0; i < order; i++) {
    size_t g = heads[i] / (c->n_heads / c->n_kv_heads);
    double *WV = tu_weight(model, MI_W_V, layers[i], g, &r, &k);
    double *WO = tu_weight(model, MI_W_O, layers[i], heads[i], &r, &k);
    tu_matmul(mid, x, WV, NULL, V, D, dh);
    tu_matmul(tmp, mid, WO, NULL, V, dh, D);
    memcpy(x, tmp, V * D * sizeof *x);
    free(WV); free(WO);
  }
  double *W_U = tu_weight(model, MI_W_U, 0, 0, &r, &k), *out = malloc(V * V * sizeof *out);
  tu_matmul(out, x, W_U, NULL, V, D, V);
  free(x); free(tmp); free(mid); free(W_U);
  return out;
}

typedef struct seen_paths {
  const mi_model *model;
  mi_config c;
  size_t count, per_order[8], stop_after;
  double worst_norm, worst_entry, norms[512];
  size_t labels[512][8]; /* order, then layer·H + head of each */
  int bad_order;
} seen_paths;

/* Checks each path against its dense product (and its circuit, when given). */
static int check_each_path(const mi_path *p, void *user) {
  seen_paths *s = user;
  const mi_config *c = &s->c;
  ck_assert_uint_eq(p->struct_size, sizeof *p);
  ck_assert_uint_le(p->order, c->n_layers);
  for (size_t i = 1; i < p->order; i++)
    ck_assert_uint_lt(p->layers[i - 1], p->layers[i]);
  if (s->count > 0) { /* depth first: a path extends its predecessor's prefix or a shorter one */
    const size_t *prev = s->labels[s->count - 1];
    for (size_t i = 0; i + 1 < p->order; i++)
      if (prev[0] <= i || prev[1 + i] != p->layers[i] * c->n_heads + p->heads[i])
        s->bad_order = 1;
  }
  size_t V = c->d_vocab;
  double *want = dense_path(s->model, c, p->order, p->layers, p->heads);
  double norm = frobenius(want, V * V);
  s->worst_norm = fmax(s->worst_norm, fabs(p->norm - norm) / norm);
  if (p->circuit != NULL) {
    size_t n, m, rank;
    TU_OK(mi_circuit_shape(&n, &m, &rank, p->circuit));
    ck_assert_uint_eq(n, V);
    ck_assert_uint_eq(m, V);
    float *got = malloc(V * V * sizeof *got);
    TU_OK(mi_circuit_dense(got, V, p->circuit));
    double scale = tu_max_abs(want, V * V), err = 0;
    for (size_t i = 0; i < V * V; i++)
      err = fmax(err, fabs(got[i] - want[i]));
    s->worst_entry = fmax(s->worst_entry, err / scale);
    free(got);
  }
  s->norms[s->count] = norm;
  s->labels[s->count][0] = p->order;
  for (size_t i = 0; i < p->order; i++)
    s->labels[s->count][1 + i] = p->layers[i] * c->n_heads + p->heads[i];
  s->per_order[p->order]++;
  free(want);
  return ++s->count == s->stop_after;
}

static mi_config path_config(int i) {
  switch (i) {
  case 0: return tu_config(3, 2, 6, 3, 7, 4, 0);
  case 1: { /* grouped heads, LayerNorm folded, every part */
    mi_config c = tu_config(3, 4, 8, 2, 9, 4, ALL_PARTS);
    c.n_kv_heads = 2;
    return c;
  }
  default: return tu_config(2, 3, 4, 6, 5, 4, 0); /* d_head > d_model, d_vocab < ... */
  }
}

static size_t choose(size_t n, size_t k) {
  size_t r = 1;
  for (size_t i = 1; i <= k; i++)
    r = r * (n - k + i) / i;
  return r;
}

/*
 * Every path, up to every order: counts C(L, k)·H^k per order (∏(1 + H) in
 * all), depth-first order, and each path's norm and circuit against the
 * product formed densely in double. Tolerances: norms 2e-5 relative, circuit
 * entries 2e-5 of the largest entry (float32 factors and GEMMs, ≤ 3 chained
 * products of inner size ≤ 8, each ~1e-7 relative; a wrong head or a missing
 * factor is off by O(1)).
 */
START_TEST(paths_match_dense_products) {
  mi_config c = path_config(_i);
  mi_model *model = tu_random_model(&c, 500 + _i);
  TU_OK(mi_model_process(model, _i == 1 ? MI_PROCESS_FOLD_LN : 0));
  TU_OK(mi_model_get_config(&c, model));
  size_t L = c.n_layers, H = c.n_heads;
  for (size_t max_order = 0; max_order <= L + 1; max_order++) {
    seen_paths s = {.model = model, .c = c};
    size_t delivered, count;
    unsigned flags = max_order == L ? MI_PATHS_CIRCUITS : 0;
    TU_OK(mi_model_paths(&delivered, model, max_order, flags, check_each_path, &s));
    TU_OK(mi_model_path_count(&count, model, max_order));
    size_t want = 0;
    for (size_t k = 0; k <= L && k <= max_order; k++) {
      size_t of_order = choose(L, k) * (size_t)pow((double)H, (double)k);
      ck_assert_uint_eq(s.per_order[k], of_order);
      want += of_order;
    }
    ck_assert_uint_eq(delivered, want);
    ck_assert_uint_eq(count, want);
    ck_assert_int_eq(s.bad_order, 0);
    if (max_order >= L)
      ck_assert_uint_eq(want, (size_t)pow(1.0 + (double)H, (double)L));
    ck_assert_msg(s.worst_norm <= 2e-5, "config %d: norm off by %g relative", _i, s.worst_norm);
    ck_assert_msg(s.worst_entry <= 2e-5, "config %d: entry off by %g", _i, s.worst_entry);
  }
  mi_model_free(model);
}
END_TEST

/* The n largest norms, largest first, against sorting every path's dense norm. */
START_TEST(top_paths_are_the_largest) {
  mi_config c = path_config(_i);
  mi_model *model = tu_random_model(&c, 600 + _i);
  TU_OK(mi_model_process(model, _i == 1 ? MI_PROCESS_FOLD_LN : 0));
  TU_OK(mi_model_get_config(&c, model));
  size_t L = c.n_layers, max_order = 2;
  seen_paths s = {.model = model, .c = c};
  TU_OK(mi_model_paths(NULL, model, max_order, 0, check_each_path, &s));
  size_t n = 7, heads[7 * 8], count;
  double norm[7];
  TU_OK(mi_model_top_paths(heads, norm, &count, n, model, max_order));
  ck_assert_uint_eq(count, n);
  bool used[512] = {false};
  for (size_t i = 0; i < n; i++) {
    size_t best = SIZE_MAX; /* the largest dense norm not yet taken */
    for (size_t j = 0; j < s.count; j++)
      if (!used[j] && (best == SIZE_MAX || s.norms[j] > s.norms[best]))
        best = j;
    used[best] = true;
    ck_assert_msg(fabs(norm[i] - s.norms[best]) <= 2e-5 * s.norms[best], "rank %zu: %g vs %g",
                  i, norm[i], s.norms[best]);
    size_t order = 0;
    for (size_t l = 0; l < L; l++)
      if (heads[i * L + l] != SIZE_MAX) {
        ck_assert_uint_lt(order, s.labels[best][0]);
        ck_assert_uint_eq(l * c.n_heads + heads[i * L + l], s.labels[best][1 + order]);
        order++;
      }
    ck_assert_uint_eq(order, s.labels[best][0]);
  }
  /* More lines than paths: all of them. */
  size_t all[64 * 8];
  double all_norm[64];
  TU_OK(mi_model_top_paths(all, all_norm, &count, 64, model, 1));
  ck_assert_uint_eq(count, 1 + L * c.n_heads);
  for (size_t i = 1; i < count; i++)
    ck_assert(all_norm[i - 1] >= all_norm[i]);
  mi_model_free(model);
}
END_TEST

static int stop_at_five(const mi_path *p, void *user) {
  (void)p;
  return ++*(size_t *)user == 5;
}

/* mi_circuit_path is the enumeration's circuit; order 1 is the head's OV circuit. */
START_TEST(path_circuits_and_early_stop) {
  mi_config c = path_config(0);
  mi_model *model = tu_random_model(&c, 700);
  TU_OK(mi_model_get_config(&c, model));
  size_t V = c.d_vocab, calls = 0, delivered;
  TU_OK(mi_model_paths(&delivered, model, SIZE_MAX, 0, stop_at_five, &calls));
  ck_assert_uint_eq(delivered, 5);
  ck_assert_uint_eq(calls, 5);
  size_t layers[3] = {0, 1, 2}, heads[3] = {1, 0, 1};
  mi_circuit *path, *ov;
  TU_OK(mi_circuit_path(&path, model, 1, layers + 1, heads + 1));
  TU_OK(mi_circuit_ov(&ov, model, 1, 0));
  float *a = malloc(V * V * sizeof *a), *b = malloc(V * V * sizeof *b);
  TU_OK(mi_circuit_dense(a, V, path));
  TU_OK(mi_circuit_dense(b, V, ov));
  for (size_t i = 0; i < V * V; i++)
    ck_assert_float_eq_tol(a[i], b[i], 1e-5f * (1.0f + fabsf(b[i])));
  mi_circuit_free(path);
  TU_OK(mi_circuit_path(&path, model, 3, layers, heads));
  double *want = dense_path(model, &c, 3, layers, heads), scale = tu_max_abs(want, V * V);
  TU_OK(mi_circuit_dense(a, V, path));
  for (size_t i = 0; i < V * V; i++)
    ck_assert_double_eq_tol(a[i], want[i], 2e-5 * scale);
  mi_circuit_free(path);
  TU_OK(mi_circuit_path(&path, model, 0, NULL, NULL));
  mi_circuit_free(path);
  free(want); free(a); free(b);
  mi_circuit_free(ov);
  mi_model_free(model);
}
END_TEST

static int count_paths(const mi_path *p, void *user) {
  (void)p;
  ++*(size_t *)user;
  return 0;
}

START_TEST(bad_path_arguments_are_refused) {
  mi_config c = path_config(0);
  mi_model *model = tu_random_model(&c, 1);
  size_t n = 0, heads[3], layers_bad[2] = {1, 1}, layers_ok[2] = {0, 2}, h[2] = {0, 1};
  double norm[1];
  mi_circuit *circuit;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_paths(&n, NULL, 1, 0, count_paths, &n));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_paths(&n, model, 1, 0, NULL, &n));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_paths(&n, model, 1, 4, count_paths, &n));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_top_paths(heads, norm, &n, 0, model, 1));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_top_paths(NULL, norm, &n, 1, model, 1));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_path_count(NULL, model, 1));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_path(&circuit, model, 2, layers_bad, h));
  ck_assert_ptr_null(circuit);
  h[1] = 2; /* of 2 heads */
  TU_FAILS(MI_ERR_INDEX, mi_circuit_path(&circuit, model, 2, layers_ok, h));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_path(&circuit, model, 4, layers_ok, h));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_path(&circuit, model, 1, NULL, h));
  mi_model_free(model);
  mi_config big = tu_config(64, 1000, 4, 2, 5, 4, 0);
  mi_model_create(&model, &big);
  TU_FAILS(MI_ERR_OUT_OF_MEMORY, mi_model_path_count(&n, model, SIZE_MAX)); /* 1001^64 */
  TU_OK(mi_model_path_count(&n, model, 1));
  ck_assert_uint_eq(n, 1 + 64 * 1000);
  mi_model_free(model);
  mi_config mlp = tu_config(2, 2, 6, 3, 5, 4, MI_PART_MLP);
  model = tu_random_model(&mlp, 2);
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_model_paths(&n, model, 1, 0, count_paths, &n));
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_model_top_paths(heads, norm, &n, 1, model, 1));
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_circuit_path(&circuit, model, 0, NULL, NULL));
  mi_model_free(model);
}
END_TEST

static Suite *paths_suite(void) {
  Suite *s = suite_create("paths");
  TCase *composition = tcase_create("composition");
  tcase_set_timeout(composition, 60); /* 64 threads on a shared 2-core machine */
  tcase_add_loop_test(composition, scores_match_dense_products, 0, 3);
  tcase_add_loop_test(composition, scores_match_across_tiles, 0, 2);
  tcase_add_test(composition, scores_do_not_depend_on_the_threads);
  tcase_add_test(composition, small_scores_do_not_cancel);
  tcase_add_test(composition, constructed_heads_have_known_scores);
  tcase_add_loop_test(composition, baseline_matches_a_dense_monte_carlo, 0, 3);
  tcase_add_test(composition, baseline_is_in_a_sensible_range);
  tcase_add_test(composition, bad_arguments_are_refused);
  tcase_add_test(composition, bad_blis_arch_type_is_refused);
  suite_add_tcase(s, composition);
  TCase *enumeration = tcase_create("enumeration");
  tcase_set_timeout(enumeration, 60);
  tcase_add_loop_test(enumeration, paths_match_dense_products, 0, 3);
  tcase_add_loop_test(enumeration, top_paths_are_the_largest, 0, 3);
  tcase_add_test(enumeration, path_circuits_and_early_stop);
  tcase_add_test(enumeration, bad_path_arguments_are_refused);
  suite_add_tcase(s, enumeration);
  return s;
}

int main(void) { return tu_run_suite(paths_suite()); }
