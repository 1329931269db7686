/*
 * Diagonal ranks and copying accuracy against dense references in double,
 * the K-composition circuit against its dense product, and bad input.
 */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Row i of A·B (n × n) in double from float factors into row[n]. */
static void dense_row(double *row, const float *A, const float *B, size_t n, size_t r,
                      size_t i) {
  for (size_t j = 0; j < n; j++) {
    double s = 0;
    for (size_t t = 0; t < r; t++)
      s += (double)A[i * r + t] * B[t * n + j];
    row[j] = s;
  }
}

/* Reference rank: entries of the row strictly above the diagonal entry; and ties. */
static size_t dense_rank(const double *row, size_t n, size_t i, size_t *ties) {
  size_t greater = 0;
  for (size_t j = 0; j < n; j++) {
    greater += row[j] > row[i];
    *ties += j != i && row[j] == row[i];
  }
  return greater;
}

static float *random_floats(size_t count, tu_rng *rng, int integers) {
  float *f = malloc(count * sizeof *f);
  for (size_t i = 0; i < count; i++)
    f[i] = integers ? (float)(int)(tu_uniform(rng) * 5.0) - 2.0f : (float)tu_normal(rng);
  return f;
}

/*
 * Ranks of every row, and of a sub-range, against the dense double product;
 * accuracy as the share of reference ranks < 1 and < 5. Case 0: random
 * Gaussian factors, n = 4500 (several row tiles and two column tiles, so
 * some diagonals lie in a later tile than entries of their row; a near-tie
 * within float32 rounding is improbable at these gaps, so ranks must agree
 * exactly); case 1: small integer factors, so entries are exact in float32
 * and many rows tie with their diagonal (ties count for the diagonal);
 * case 2: a diagonal boosted on every third row.
 */
START_TEST(diag_rank_matches_dense_reference) {
  size_t n = _i == 0 ? 4500 : 40, r = _i == 1 ? 2 : 5;
  tu_rng rng = tu_rng_seed(40 + _i);
  float *A = random_floats(n * r, &rng, _i == 1), *B = random_floats(r * n, &rng, _i == 1);
  if (_i == 2) /* A = [G | e], B = [.. ; e'] with e the row's own marker */
    for (size_t i = 0; i < n; i += 3) {
      A[i * r + r - 1] = 10.0f;
      B[(r - 1) * n + i] = 10.0f;
    }
  mi_circuit *c;
  TU_OK(mi_circuit_from_factors(&c, n, r, n, A, r, B, n));
  double *row = malloc(n * sizeof *row);
  size_t *rank = malloc(n * sizeof *rank), *want = malloc(n * sizeof *want);
  size_t top1 = 0, top5 = 0, ties = 0;
  TU_OK(mi_circuit_diag_rank(rank, c, 0, n));
  for (size_t i = 0; i < n; i++) {
    dense_row(row, A, B, n, r, i);
    want[i] = dense_rank(row, n, i, &ties);
    ck_assert_msg(rank[i] == want[i], "row %zu: rank %zu, dense %zu", i, rank[i], want[i]);
    top1 += want[i] < 1;
    top5 += want[i] < 5;
  }
  if (_i == 1)
    ck_assert_uint_gt(ties, 0); /* the case does test ties */
  TU_OK(mi_circuit_diag_rank(rank, c, 7, 19));
  for (size_t i = 7; i < 19; i++)
    ck_assert_uint_eq(rank[i - 7], want[i]);
  double acc1, acc5;
  TU_OK(mi_circuit_copying_accuracy(&acc1, &acc5, c));
  ck_assert_double_eq(acc1, (double)top1 / n);
  ck_assert_double_eq(acc5, (double)top5 / n);
  free(A); free(B); free(row); free(rank); free(want);
  mi_circuit_free(c);
}
END_TEST

/* The d_vocab × d_vocab matrix of K-composition, densely in double. */
static double *dense_k_composition(const mi_model *model, const mi_config *c, size_t l1,
                                   size_t h1, size_t l2, size_t h2, unsigned flags) {
  size_t V = c->d_vocab, D = c->d_model, dh = c->d_head, r, k, per = c->n_heads / c->n_kv_heads;
  double *E = tu_weight(model, MI_W_E, 0, 0, &r, &k);
  double *WQ = tu_weight(model, MI_W_Q, l2, h2, &r, &k);
  double *WK = tu_weight(model, MI_W_K, l2, h2 / per, &r, &k);
  double *WV = tu_weight(model, MI_W_V, l1, h1 / per, &r, &k);
  double *WO = tu_weight(model, MI_W_O, l1, h1, &r, &k);
  double *bQ = (flags & MI_QK_BIAS) ? tu_weight(model, MI_B_Q, l2, h2, &r, &k) : NULL;
  double *bK = (flags & MI_QK_BIAS) ? tu_weight(model, MI_B_K, l2, h2 / per, &r, &k) : NULL;
  double s = (flags & MI_QK_SCALE) ? 1.0 / sqrt((double)dh) : 1.0;
  double *q = calloc(V * dh, sizeof *q), *key = calloc(V * dh, sizeof *key);
  double *x = calloc(V * D, sizeof *x), *ov = calloc(V * dh, sizeof *ov);
  for (size_t v = 0; v < V; v++) {
    for (size_t t = 0; t < dh; t++) {
      for (size_t i = 0; i < D; i++) {
        q[v * dh + t] += E[v * D + i] * WQ[i * dh + t];
        ov[v * dh + t] += E[v * D + i] * WV[i * dh + t];
      }
      q[v * dh + t] = (q[v * dh + t] + (bQ ? bQ[t] : 0.0)) * s;
    }
    for (size_t i = 0; i < D; i++) /* x = W_E W_V¹ W_O¹ row v */
      for (size_t t = 0; t < dh; t++)
        x[v * D + i] += ov[v * dh + t] * WO[t * D + i];
    for (size_t t = 0; t < dh; t++) {
      key[v * dh + t] = bK ? bK[t] : 0.0;
      for (size_t i = 0; i < D; i++)
        key[v * dh + t] += x[v * D + i] * WK[i * dh + t];
    }
  }
  double *M = malloc(V * V * sizeof *M);
  for (size_t a = 0; a < V; a++)
    for (size_t b = 0; b < V; b++) {
      double sum = 0;
      for (size_t t = 0; t < dh; t++)
        sum += q[a * dh + t] * key[b * dh + t];
      M[a * V + b] = sum;
    }
  free(E); free(WQ); free(WK); free(WV); free(WO); free(bQ); free(bK);
  free(q); free(key); free(x); free(ov);
  return M;
}

/*
 * Every (earlier, later) pair of heads, with and without biases and scale,
 * grouped heads, against the dense product. Tolerance 1e-5 of the largest
 * entry: float32 factors through three products of inner size ≤ 8 (each
 * ~1e-7 relative); a wrong head, bias or scale is off by O(1).
 */
START_TEST(k_composition_matches_dense_reference) {
  mi_config c = tu_config(3, 4, 8, 3, 11, 6,
                          MI_PART_POS_EMBED | MI_PART_QKV_BIAS | MI_PART_LN);
  c.n_kv_heads = 2;
  mi_model *model = tu_random_model(&c, 77);
  TU_OK(mi_model_process(model, MI_PROCESS_FOLD_LN));
  TU_OK(mi_model_get_config(&c, model));
  size_t V = c.d_vocab;
  float *got = malloc(V * V * sizeof *got);
  unsigned flag_sets[3] = {0, MI_QK_BIAS, MI_QK_BIAS | MI_QK_SCALE};
  for (int f = 0; f < 3; f++)
    for (size_t a = 0; a < c.n_layers * c.n_heads; a++)
      for (size_t b = 0; b < c.n_layers * c.n_heads; b++) {
        size_t l1 = a / c.n_heads, h1 = a % c.n_heads, l2 = b / c.n_heads, h2 = b % c.n_heads;
        if (l2 <= l1)
          continue;
        mi_circuit *k;
        TU_OK(mi_circuit_k_composition(&k, model, l1, h1, l2, h2, flag_sets[f]));
        TU_OK(mi_circuit_dense(got, V, k));
        double *want = dense_k_composition(model, &c, l1, h1, l2, h2, flag_sets[f]);
        double scale = tu_max_abs(want, V * V);
        for (size_t i = 0; i < V * V; i++)
          ck_assert_msg(fabs(got[i] - want[i]) <= 1e-5 * scale, "(%zu,%zu)->(%zu,%zu) flags %u "
                        "entry %zu: %g vs %g", l1, h1, l2, h2, flag_sets[f], i, got[i], want[i]);
        free(want);
        mi_circuit_free(k);
      }
  free(got);
  mi_model_free(model);
}
END_TEST

/*
 * A hand-built pair: one-hot embeddings, head (0, 0) copies the token
 * (W_V W_O = I) and head (1, 0) matches query to key (W_Q = W_K = I): the
 * K-composition circuit is the identity, so every diagonal ranks first.
 */
START_TEST(copying_pair_has_a_perfect_diagonal) {
  size_t D = 6;
  mi_config c = tu_config(2, 1, D, D, D, 4, 0);
  mi_model *model;
  TU_OK(mi_model_create(&model, &c));
  float eye[36] = {0};
  for (size_t i = 0; i < D; i++)
    eye[i * D + i] = 1.0f;
  TU_OK(mi_model_set_weight(model, MI_W_E, 0, 0, MI_DTYPE_F32, eye, D));
  TU_OK(mi_model_set_weight(model, MI_W_U, 0, 0, MI_DTYPE_F32, eye, D));
  TU_OK(mi_model_set_weight(model, MI_W_V, 0, 0, MI_DTYPE_F32, eye, D));
  TU_OK(mi_model_set_weight(model, MI_W_O, 0, 0, MI_DTYPE_F32, eye, D));
  TU_OK(mi_model_set_weight(model, MI_W_Q, 1, 0, MI_DTYPE_F32, eye, D));
  TU_OK(mi_model_set_weight(model, MI_W_K, 1, 0, MI_DTYPE_F32, eye, D));
  TU_OK(mi_model_process(model, 0));
  mi_circuit *k, *ov;
  TU_OK(mi_circuit_k_composition(&k, model, 0, 0, 1, 0, MI_QK_BIAS | MI_QK_SCALE));
  TU_OK(mi_circuit_ov(&ov, model, 0, 0));
  double top1, top5;
  TU_OK(mi_circuit_copying_accuracy(&top1, &top5, k));
  ck_assert_double_eq(top1, 1.0);
  ck_assert_double_eq(top5, 1.0);
  TU_OK(mi_circuit_copying_accuracy(&top1, &top5, ov));
  ck_assert_double_eq(top1, 1.0);
  size_t rank[6];
  TU_OK(mi_circuit_diag_rank(rank, k, 0, D));
  for (size_t i = 0; i < D; i++)
    ck_assert_uint_eq(rank[i], 0);
  mi_circuit_free(k);
  mi_circuit_free(ov);
  mi_model_free(model);
}
END_TEST

START_TEST(bad_input_is_refused) {
  float A[3 * 2] = {1, 2, 3, 4, 5, 6}, B[2 * 4] = {1, 2, 3, 4, 5, 6, 7, 8};
  mi_circuit *wide, *square, *k;
  TU_OK(mi_circuit_from_factors(&wide, 3, 2, 4, A, 2, B, 4));
  TU_OK(mi_circuit_from_factors(&square, 3, 2, 3, A, 2, B, 4));
  size_t rank[3];
  double t1, t5;
  TU_FAILS(MI_ERR_SHAPE, mi_circuit_diag_rank(rank, wide, 0, 3));
  TU_FAILS(MI_ERR_SHAPE, mi_circuit_copying_accuracy(&t1, &t5, wide));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_diag_rank(NULL, square, 0, 3));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_diag_rank(rank, square, 2, 2));
  TU_FAILS(MI_ERR_INDEX, mi_circuit_diag_rank(rank, square, 1, 4));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_copying_accuracy(&t1, NULL, square));
  mi_config c = tu_config(2, 2, 4, 2, 5, 4, MI_PART_MLP); /* weights only: MLPs are fine */
  mi_model *model = tu_random_model(&c, 3);
  TU_OK(mi_circuit_k_composition(&k, model, 0, 1, 1, 0, 0));
  mi_circuit_free(k);
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_k_composition(&k, model, 1, 0, 1, 1, 0));
  ck_assert_ptr_null(k);
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_k_composition(&k, model, 1, 0, 0, 1, 0));
  TU_FAILS(MI_ERR_INDEX, mi_circuit_k_composition(&k, model, 0, 2, 1, 0, 0));
  TU_FAILS(MI_ERR_INDEX, mi_circuit_k_composition(&k, model, 0, 0, 2, 0, 0));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_k_composition(&k, model, 0, 0, 1, 0, 4));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_circuit_k_composition(&k, NULL, 0, 0, 1, 0, 0));
  mi_model_free(model);
  mi_circuit_free(wide);
  mi_circuit_free(square);
}
END_TEST

static Suite *copying_suite(void) {
  Suite *s = suite_create("copying");
  TCase *tc = tcase_create("copying");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, diag_rank_matches_dense_reference, 0, 3);
  tcase_add_test(tc, k_composition_matches_dense_reference);
  tcase_add_test(tc, copying_pair_has_a_perfect_diagonal);
  tcase_add_test(tc, bad_input_is_refused);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run_suite(copying_suite()); }
