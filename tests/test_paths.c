/*
 * Composition scores against dense d_model × d_model computations in double,
 * constructed cases with known scores, the chance baseline against an
 * independent dense Monte Carlo, and bad arguments.
 */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const unsigned ALL_PARTS = MI_PART_POS_EMBED | MI_PART_QKV_BIAS | MI_PART_OUT_BIAS |
                                  MI_PART_UNEMBED_BIAS | MI_PART_LN | MI_PART_LN_FINAL;

/* C (n × n) = A (n × k) · B (k × n), all doubles, row-major. */
static void dense_mul(double *C, const double *A, const double *B, size_t n, size_t k,
                      size_t m) {
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < m; j++) {
      double s = 0;
      for (size_t t = 0; t < k; t++)
        s += A[i * k + t] * B[t * m + j];
      C[i * m + j] = s;
    }
}

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
  dense_mul(ov, WV, WO, D, dh, D);
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
        dense_mul(prod, M1, M2, D, D, D);
        double want = frobenius(prod, D * D) / (frobenius(M1, D * D) * frobenius(M2, D * D));
        worst = fmax(worst, fabs(score - want));
      }
    ck_assert_msg(worst <= 2e-6, "config %d kind %d: off by %g", _i, kind, worst);
  }
  free(ov); free(qk); free(qkt); free(prod); free(got);
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
START_TEST(baseline_matches_a_dense_monte_carlo) {
  mi_config c = tu_config(1, 1, 8, 2, 5, 4, 0);
  mi_model *model;
  TU_OK(mi_model_create(&model, &c));
  double base[3], again[3];
  TU_OK(mi_model_composition_baseline(base, model));
  TU_OK(mi_model_composition_baseline(again, model));
  ck_assert_mem_eq(base, again, sizeof base);
  ck_assert_double_eq_tol(base[2], base[1] / 10.0, 1e-15);
  size_t D = 8, dh = 2, samples = 4000;
  tu_rng rng = tu_rng_seed(11);
  double A[4][8 * 2], M1[64], M2[64], P[64], sum = 0, sum_sq = 0;
  for (size_t s = 0; s < samples; s++) {
    for (int m = 0; m < 4; m++)
      for (size_t i = 0; i < D * dh; i++)
        A[m][i] = tu_normal(&rng);
    /* B is drawn as Bᵀ (D × dh): M = A·B = A·(Bᵀ)ᵀ. */
    dense_xyt(M1, A[0], A[1], D, dh);
    dense_xyt(M2, A[2], A[3], D, dh);
    dense_mul(P, M1, M2, D, D, D);
    double score = frobenius(P, 64) / (frobenius(M1, 64) * frobenius(M2, 64));
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

static Suite *paths_suite(void) {
  Suite *s = suite_create("paths");
  TCase *composition = tcase_create("composition");
  tcase_add_loop_test(composition, scores_match_dense_products, 0, 3);
  tcase_add_test(composition, constructed_heads_have_known_scores);
  tcase_add_test(composition, baseline_matches_a_dense_monte_carlo);
  tcase_add_test(composition, baseline_is_in_a_sensible_range);
  tcase_add_test(composition, bad_arguments_are_refused);
  suite_add_tcase(s, composition);
  return s;
}

int main(void) { return tu_run_suite(paths_suite()); }
