/*
 * Eigenvalue summaries and head reports, against eigenvalues known in closed
 * form and against dense double references (LAPACK's dgeev on the full
 * matrix built here from the model's weights).
 */
#define _POSIX_C_SOURCE 200809L

#include "testutil.h"

#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Reference summary of a dense n × n matrix: the definitions of mi.h. */
static mi_eigen_summary dense_summary(const double *M, size_t n) {
  double *a = malloc(n * n * sizeof *a), *re = malloc(n * sizeof *re),
         *im = malloc(n * sizeof *im);
  memcpy(a, M, n * n * sizeof *a);
  ck_assert_int_eq(LAPACKE_dgeev(LAPACK_ROW_MAJOR, 'N', 'N', (int)n, a, (int)n, re, im,
                                 NULL, 1, NULL, 1), 0);
  double top = 0, sum = 0, mass = 0, positive = 0;
  for (size_t i = 0; i < n; i++)
    top = fmax(top, hypot(re[i], im[i]));
  mi_eigen_summary s = {.struct_size = sizeof s};
  for (size_t i = 0; i < n; i++) {
    double mod = hypot(re[i], im[i]);
    if (mod <= 1e-6 * top)
      continue;
    s.nonzero++;
    sum += re[i];
    mass += mod;
    if (im[i] == 0 && re[i] > 0)
      positive += mod;
  }
  s.copying_score = mass > 0 ? sum / mass : 0;
  s.positive_real_fraction = mass > 0 ? positive / mass : 0;
  free(a); free(re); free(im);
  return s;
}

static void check_summary(mi_eigen_summary got, mi_eigen_summary want, double tol,
                          const char *what) {
  ck_assert_msg(fabs(got.copying_score - want.copying_score) <= tol,
                "%s copying %.9f vs %.9f", what, got.copying_score, want.copying_score);
  ck_assert_msg(fabs(got.positive_real_fraction - want.positive_real_fraction) <= tol,
                "%s positive %.9f vs %.9f", what, got.positive_real_fraction,
                want.positive_real_fraction);
  ck_assert_msg(got.nonzero == want.nonzero, "%s nonzero %zu vs %zu", what, got.nonzero,
                want.nonzero);
}

/* diag(3, -1, 2, 0) ⊕ a rotation: eigenvalues 3, -1, 2, 0, ±i, known exactly. */
START_TEST(summary_of_known_eigenvalues) {
  float A[6 * 6] = {0}, B[6 * 6] = {0};
  for (int i = 0; i < 6; i++)
    A[i * 6 + i] = 1;
  B[0] = 3; B[7] = -1; B[14] = 2; B[21] = 0;
  B[4 * 6 + 5] = -1; B[5 * 6 + 4] = 1;
  mi_circuit *c;
  TU_OK(mi_circuit_from_factors(&c, 6, 6, 6, A, 6, B, 6));
  mi_eigen_summary s = {.struct_size = sizeof s};
  TU_OK(mi_circuit_eigen_summary(&s, c));
  /* Σλ = 4, Σ|λ| = 3 + 1 + 2 + 1 + 1 = 8, positive real 5; five non-zero. */
  ck_assert_double_eq_tol(s.copying_score, 4.0 / 8.0, 1e-12);
  ck_assert_double_eq_tol(s.positive_real_fraction, 5.0 / 8.0, 1e-12);
  ck_assert_uint_eq(s.nonzero, 5);
  double re[6], im[6];
  TU_OK(mi_circuit_eigenvalues(re, im, 6, c));
  ck_assert_double_eq_tol(re[0], 3, 1e-12);
  ck_assert_double_eq_tol(re[1], 2, 1e-12);
  /* Modulus 1 three times: -1, then the pair (larger real part first is
   * the pair's 0 > -1), positive imaginary first; then 0. */
  ck_assert_double_eq_tol(im[2], 1, 1e-12);
  ck_assert_double_eq_tol(im[3], -1, 1e-12);
  ck_assert_double_eq_tol(re[4], -1, 1e-12);
  ck_assert_double_eq_tol(hypot(re[5], im[5]), 0, 1e-12);
  mi_circuit_free(c);
}
END_TEST

START_TEST(summary_matches_dense_reference) {
  static const size_t cases[][2] = {{8, 3}, {6, 6}, {5, 9}, {40, 7}};
  size_t n = cases[_i][0], r = cases[_i][1];
  tu_rng rng = tu_rng_seed(40 + _i);
  float *A = malloc(n * r * sizeof *A), *B = malloc(r * n * sizeof *B);
  for (size_t i = 0; i < n * r; i++) {
    A[i] = (float)tu_normal(&rng);
    B[i] = (float)(tu_normal(&rng) + 0.3); /* a bias towards copying */
  }
  double *M = calloc(n * n, sizeof *M);
  for (size_t i = 0; i < n; i++)
    for (size_t t = 0; t < r; t++)
      for (size_t j = 0; j < n; j++)
        M[i * n + j] += (double)A[i * r + t] * B[t * n + j];
  mi_circuit *c;
  TU_OK(mi_circuit_from_factors(&c, n, r, n, A, r, B, n));
  mi_eigen_summary s = {.struct_size = sizeof s};
  TU_OK(mi_circuit_eigen_summary(&s, c));
  /* Both in double from the same float-exact factors. */
  check_summary(s, dense_summary(M, n), 1e-9, "random");
  mi_circuit_free(c);
  free(A); free(B); free(M);
}
END_TEST

/* M[p][s] = -(p - 1 - s)² + noise·(p + s) peaks at s = p - 1 (rank 3). */
START_TEST(prev_token_share_of_a_previous_token_circuit) {
  size_t n = 70;
  float *A = malloc(n * 3 * sizeof *A), *B = malloc(3 * n * sizeof *B);
  for (size_t p = 0; p < n; p++) {
    double q = (double)p - 1;
    A[p * 3] = (float)(-q * q);
    A[p * 3 + 1] = (float)(2 * q);
    A[p * 3 + 2] = -1;
    B[p] = 1;
    B[n + p] = (float)p;
    B[2 * n + p] = (float)((double)p * p);
  }
  mi_circuit *c, *t;
  TU_OK(mi_circuit_from_factors(&c, n, 3, n, A, 3, B, n));
  double share;
  TU_OK(mi_circuit_prev_token_share(&share, c));
  ck_assert_double_eq(share, 1.0);
  /* Transposed, the peak of column s is at row s + 1, so row p's causal
   * maximum is at the lowest-scoring end: only p = 1 (keys 0, 1) hits. */
  TU_OK(mi_circuit_transpose(&t, c));
  TU_OK(mi_circuit_prev_token_share(&share, t));
  float *dense = malloc(n * n * sizeof *dense);
  TU_OK(mi_circuit_dense(dense, n, t));
  double *wide = malloc(n * n * sizeof *wide);
  for (size_t i = 0; i < n * n; i++)
    wide[i] = dense[i];
  ck_assert_double_eq(share, tu_prev_token_share(wide, n));
  free(wide);
  ck_assert_double_lt(share, 0.5);
  mi_circuit_free(c);
  mi_circuit_free(t);
  free(A); free(B); free(dense);
}
END_TEST

/* A caller array whose lines are larger than mi_head_report (a newer
 * caller, or a wrapper): the stride is the caller's struct_size. */
typedef struct wide_line {
  mi_head_report report;
  double guard;
} wide_line;

START_TEST(head_report_matches_dense_reference) {
  mi_config cfg = tu_config(2, 4, 16, 4, 50, 9, MI_PART_POS_EMBED | MI_PART_QKV_BIAS);
  cfg.n_kv_heads = 2;
  mi_model *model = tu_random_model(&cfg, 77);
  size_t V = 50, D = 16, dh = 4, rr, cc;
  wide_line lines[9];
  for (int i = 0; i < 9; i++) {
    memset(&lines[i], 0, sizeof lines[i]);
    lines[i].guard = -7.5;
  }
  lines[0].report.struct_size = sizeof(wide_line);
  TU_OK(mi_model_head_report(&lines[0].report, 8, model, NULL));
  ck_assert_double_eq(lines[8].guard, -7.5);
  double *E = tu_weight(model, MI_W_E, 0, 0, &rr, &cc);
  double *WU = tu_weight(model, MI_W_U, 0, 0, &rr, &cc);
  for (size_t l = 0; l < 2; l++)
    for (size_t h = 0; h < 4; h++) {
      const mi_head_report *got = &lines[l * 4 + h].report;
      ck_assert_double_eq(lines[l * 4 + h].guard, -7.5);
      ck_assert_uint_eq(got->layer, l);
      ck_assert_uint_eq(got->head, h);
      ck_assert_uint_eq(got->struct_size, sizeof(mi_head_report));
      size_t kv = h / 2;
      double *WQ = tu_weight(model, MI_W_Q, l, h, &rr, &cc);
      double *WK = tu_weight(model, MI_W_K, l, kv, &rr, &cc);
      double *WV = tu_weight(model, MI_W_V, l, kv, &rr, &cc);
      double *WO = tu_weight(model, MI_W_O, l, h, &rr, &cc);
      double *bQ = tu_weight(model, MI_B_Q, l, h, &rr, &cc);
      double *bK = tu_weight(model, MI_B_K, l, kv, &rr, &cc);
      /* Dense V × V circuits in double. */
      double *EV = tu_mul(E, WV, V, D, dh), *OU = tu_mul(WO, WU, dh, D, V);
      double *ov = tu_mul(EV, OU, V, dh, V);
      double *Q = tu_mul(E, WQ, V, D, dh), *K = tu_mul(E, WK, V, D, dh);
      double *qk = calloc(V * V, sizeof *qk);
      for (size_t i = 0; i < V; i++)
        for (size_t j = 0; j < V; j++)
          for (size_t t = 0; t < dh; t++)
            qk[i * V + j] += (Q[i * dh + t] + bQ[t]) * (K[j * dh + t] + bK[t]) / 2.0;
      /* The report rounds its Grams and products to float32 (relative
       * 1e-7 per entry, d_model-long sums): scores agree to 1e-4. */
      check_summary(got->ov, dense_summary(ov, V), 1e-4, "ov");
      check_summary(got->qk, dense_summary(qk, V), 1e-4, "qk");
      /* And with the circuits' own path. */
      mi_circuit *c;
      mi_eigen_summary s = {.struct_size = sizeof s};
      TU_OK(mi_circuit_ov(&c, model, l, h));
      TU_OK(mi_circuit_eigen_summary(&s, c));
      check_summary(got->ov, s, 1e-4, "ov circuit");
      mi_circuit_free(c);
      double share;
      TU_OK(mi_circuit_qk(&c, model, l, h, MI_EMBED_POS, MI_EMBED_POS,
                          MI_QK_BIAS | MI_QK_SCALE));
      TU_OK(mi_circuit_prev_token_share(&share, c));
      ck_assert_double_eq(got->prev_token_share, share);
      mi_circuit_free(c);
      free(WQ); free(WK); free(WV); free(WO); free(bQ); free(bK);
      free(EV); free(OU); free(ov); free(Q); free(K); free(qk);
    }
  /* Three threads take whole heads for the previous-token shares: the same. */
  mi_head_report three[8];
  three[0].struct_size = sizeof three[0];
  TU_OK(mi_set_num_threads(3));
  TU_OK(mi_model_head_report(three, 8, model, NULL));
  for (size_t i = 0; i < 8; i++)
    ck_assert_double_eq(three[i].prev_token_share, lines[i].report.prev_token_share);
  /* Options: no biases, no scale, no previous-token share. */
  mi_report_options opt;
  mi_report_options_init(&opt, sizeof opt);
  opt.qk_flags = 0;
  opt.prev_token = 0;
  mi_head_report plain[8];
  plain[0].struct_size = sizeof plain[0];
  TU_OK(mi_set_num_threads(1));
  TU_OK(mi_model_head_report(plain, 8, model, &opt));
  /* Three threads split the products and the heads' eigenvalues; the
   * summaries agree with one thread's to rounding (1e-9). */
  mi_head_report threaded[8];
  threaded[0].struct_size = sizeof threaded[0];
  TU_OK(mi_set_num_threads(3));
  TU_OK(mi_model_head_report(threaded, 8, model, &opt));
  TU_OK(mi_set_num_threads(1));
  for (size_t i = 0; i < 8; i++) {
    check_summary(threaded[i].ov, plain[i].ov, 1e-9, "ov, 3 threads");
    check_summary(threaded[i].qk, plain[i].qk, 1e-9, "qk, 3 threads");
  }
  for (size_t i = 0; i < 8; i++) {
    ck_assert(isnan(plain[i].prev_token_share));
    mi_circuit *c;
    mi_eigen_summary s = {.struct_size = sizeof s};
    TU_OK(mi_circuit_qk(&c, model, i / 4, i % 4, MI_EMBED_TOKEN, MI_EMBED_TOKEN, 0));
    TU_OK(mi_circuit_eigen_summary(&s, c));
    check_summary(plain[i].qk, s, 1e-4, "qk circuit, no bias");
    mi_circuit_free(c);
  }
  free(E); free(WU);
  mi_model_free(model);
}
END_TEST

START_TEST(bad_input_is_refused) {
  mi_config cfg = tu_config(1, 2, 6, 2, 9, 0, 0);
  mi_model *model = tu_random_model(&cfg, 5);
  mi_head_report lines[2];
  lines[0].struct_size = sizeof lines[0];
  TU_FAILS(MI_ERR_SHAPE, mi_model_head_report(lines, 1, model, NULL));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_head_report(NULL, 2, model, NULL));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_head_report(lines, 2, NULL, NULL));
  mi_report_options opt;
  mi_report_options_init(&opt, sizeof opt);
  opt.qk_flags = 64;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_head_report(lines, 2, model, &opt));
  opt.struct_size = 0;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_head_report(lines, 2, model, &opt));
  lines[0].struct_size = 0;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_head_report(lines, 2, model, NULL));
  /* Without W_pos the previous-token share is NaN, not an error. */
  lines[0].struct_size = sizeof lines[0];
  TU_OK(mi_model_head_report(lines, 2, model, NULL));
  ck_assert(isnan(lines[1].prev_token_share));

  float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 0, 2, 0, 1, 3};
  mi_circuit *c;
  TU_OK(mi_circuit_from_factors(&c, 3, 2, 3, A, 2, B, 3));
  mi_circuit *nonsquare;
  TU_OK(mi_circuit_from_factors(&nonsquare, 2, 3, 2, A, 3, B, 2));
  mi_circuit *wide;
  TU_OK(mi_circuit_from_factors(&wide, 3, 1, 6, A, 1, B, 6));
  mi_eigen_summary s = {.struct_size = sizeof s};
  double share;
  TU_FAILS(MI_ERR_SHAPE, mi_circuit_eigen_summary(&s, wide));
  TU_FAILS(MI_ERR_SHAPE, mi_circuit_prev_token_share(&share, wide));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_eigen_summary(NULL, c));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_prev_token_share(NULL, c));
  s.struct_size = 0;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_eigen_summary(&s, c));
  mi_circuit_free(c);
  mi_circuit_free(nonsquare);
  mi_circuit_free(wide);
  mi_model_free(model);
}
END_TEST

int main(void) {
  Suite *s = suite_create("eigen");
  TCase *tc = tcase_create("eigen");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, summary_of_known_eigenvalues);
  tcase_add_loop_test(tc, summary_matches_dense_reference, 0, 4);
  tcase_add_test(tc, prev_token_share_of_a_previous_token_circuit);
  tcase_add_test(tc, head_report_matches_dense_reference);
  tcase_add_test(tc, bad_input_is_refused);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
