/*
 * The copying accuracy the skip-trigram search reads from its OV pass
 * (mi_skip_trigram_options.ov_top1, ov_top5) is mi_circuit_copying_accuracy's
 * exactly, and handing it to the head roles (mi_role_options.ov_top1)
 * changes nothing: on both shipped models, on random heads (several row
 * tiles and column panels; a vocabulary smaller than the 6 picks), and on a
 * head of small integer weights, whose entries are exact in float32, so
 * that its diagonal ties with other entries of its row and the accuracy can
 * be counted from a dense double product here. Comparisons are exact: both
 * ways count the same float32 entries against the same threshold.
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CAP = 64 };

/* The model's shape. */
static mi_config shape(const mi_model *model) {
  mi_config c;
  mi_config_init(&c, sizeof c);
  TU_OK(mi_model_get_config(&c, model));
  return c;
}

/* The search's table with each head's accuracy (tri: CAP triples), and without. */
static size_t search(mi_skip_trigram *tri, double *top1, double *top5, const mi_model *model,
                     size_t outputs) {
  mi_config cfg = shape(model), *c = &cfg;
  size_t heads = c->n_layers * c->n_heads, found = 0, plain_found = 0;
  mi_skip_trigram_options o;
  mi_skip_trigram_options_init(&o, sizeof o);
  o.outputs_per_source = outputs;
  mi_skip_trigram *plain = calloc(CAP, sizeof *plain);
  plain[0].struct_size = sizeof *plain;
  TU_OK(mi_model_skip_trigrams(plain, &plain_found, CAP, model, &o));
  o.ov_top1 = top1;
  o.ov_top5 = top5;
  o.ov_accuracy_count = heads;
  memset(tri, 0, CAP * sizeof *tri);
  tri[0].struct_size = sizeof *tri;
  TU_OK(mi_model_skip_trigrams(tri, &found, CAP, model, &o));
  /* More picks a row for the accuracy leave every triple as it was. */
  ck_assert_uint_eq(found, plain_found);
  ck_assert(memcmp(tri, plain, found * sizeof *tri) == 0);
  free(plain);
  return found;
}

/* Each head's accuracy from the search against mi_circuit_copying_accuracy, exactly. */
static void check_model(const mi_model *model, const char *what) {
  mi_config cfg = shape(model), *c = &cfg;
  size_t heads = c->n_layers * c->n_heads;
  double *t1 = malloc(heads * sizeof *t1), *t5 = malloc(heads * sizeof *t5);
  mi_skip_trigram *tri = malloc(CAP * sizeof *tri);
  const size_t outputs[] = {1, 2, 7};
  for (size_t o = 0; o < sizeof outputs / sizeof outputs[0]; o++) {
    for (size_t i = 0; i < heads; i++)
      t1[i] = t5[i] = -1.0;
    search(tri, t1, t5, model, outputs[o]);
    for (size_t i = 0; i < heads; i++) {
      mi_circuit *ov;
      double want1, want5;
      TU_OK(mi_circuit_ov(&ov, model, i / c->n_heads, i % c->n_heads));
      TU_OK(mi_circuit_copying_accuracy(&want1, &want5, ov));
      mi_circuit_free(ov);
      ck_assert_msg(t1[i] == want1 && t5[i] == want5,
                    "%s, %zu outputs, head %zu: search %.17g / %.17g, circuit %.17g / %.17g",
                    what, outputs[o], i, t1[i], t5[i], want1, want5);
    }
  }
  fprintf(stderr, "%s: head 0 top-1 %.4f, top-5 %.4f (search = circuit, %zu heads)\n", what,
          t1[0], t5[0], heads);
  free(t1);
  free(t5);
  free(tri);
}

/* The head roles with the search's accuracy handed in, against the roles computing it. */
static void check_roles(const mi_model *model) {
  mi_config cfg = shape(model), *c = &cfg;
  size_t heads = c->n_layers * c->n_heads, np[2];
  double *t1 = malloc(heads * sizeof *t1);
  mi_skip_trigram *tri = malloc(CAP * sizeof *tri);
  search(tri, t1, NULL, model, 2);
  mi_head_roles *r[2];
  mi_role_partner *p[2];
  for (int k = 0; k < 2; k++) {
    r[k] = calloc(heads, sizeof *r[k]);
    p[k] = calloc(heads * heads + 1, sizeof *p[k]);
    r[k][0].struct_size = sizeof *r[k];
    p[k][0].struct_size = sizeof *p[k];
    mi_role_options ro;
    mi_role_options_init(&ro, sizeof ro);
    if (k == 1) {
      ro.ov_top1 = t1;
      ro.ov_top1_count = heads;
    }
    TU_OK(mi_model_head_roles(r[k], heads, p[k], heads * heads + 1, &np[k], model, &ro));
  }
  ck_assert_uint_eq(np[0], np[1]);
  ck_assert(memcmp(r[0], r[1], heads * sizeof *r[0]) == 0);
  ck_assert(memcmp(p[0], p[1], np[0] * sizeof *p[0]) == 0);
  for (int k = 0; k < 2; k++) {
    free(r[k]);
    free(p[k]);
  }
  free(t1);
  free(tri);
}

static const char *const SHIPPED[] = {"skip-trigram-1l", "induction-2l"};

START_TEST(shipped_models) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s/model.safetensors", MI_EXAMPLE_MODELS, SHIPPED[_i]);
  mi_model *model;
  TU_OK(mi_model_load(&model, path, NULL));
  check_model(model, SHIPPED[_i]);
  check_roles(model);
  mi_model_free(model);
}
END_TEST

/* 700 tokens: 4 row tiles of 192 and 11 column panels of 64; 5 tokens: fewer than 6 picks. */
START_TEST(random_heads) {
  size_t vocab = _i == 0 ? 700 : 5;
  mi_config c = tu_config(2, 3, 32, 8, vocab, 16, MI_PART_POS_EMBED | MI_PART_QKV_BIAS);
  mi_model *model = tu_random_model(&c, 70 + (uint64_t)_i);
  check_model(model, _i == 0 ? "random 2 x 3 heads, 700 tokens" : "random, 5 tokens");
  mi_model_free(model);
}
END_TEST

/* A 1-head model with these W_E (V × D) and W_U (D × V), d_head = D, and
 * W_V = W_O = W_Q = W_K = I, so that its OV circuit is W_E W_U. Owned. */
static mi_model *identity_head(size_t V, size_t D, const float *E, const float *U) {
  mi_config c = tu_config(1, 1, D, D, V, 4, 0);
  mi_model *model;
  TU_OK(mi_model_create(&model, &c));
  float *eye = calloc(D * D, sizeof *eye);
  for (size_t t = 0; t < D; t++)
    eye[t * D + t] = 1.0f;
  TU_OK(mi_model_set_weight(model, MI_W_E, 0, 0, MI_DTYPE_F32, E, D));
  TU_OK(mi_model_set_weight(model, MI_W_U, 0, 0, MI_DTYPE_F32, U, V));
  const mi_weight eyes[] = {MI_W_V, MI_W_O, MI_W_Q, MI_W_K};
  for (size_t w = 0; w < 4; w++)
    TU_OK(mi_model_set_weight(model, eyes[w], 0, 0, MI_DTYPE_F32, eye, D));
  TU_OK(mi_model_process(model, 0));
  free(eye);
  return model;
}

/* The search's accuracy (1, 2 and 7 outputs a source) and the circuit's are
 * top1 / V and top5 / V, counted by the caller. */
static void check_counts(const mi_model *model, size_t V, size_t top1, size_t top5) {
  mi_skip_trigram *tri = malloc(CAP * sizeof *tri);
  double t1, t5;
  const size_t outputs[] = {1, 2, 7};
  for (size_t o = 0; o < sizeof outputs / sizeof outputs[0]; o++) {
    search(tri, &t1, &t5, model, outputs[o]);
    ck_assert_double_eq(t1, (double)top1 / (double)V);
    ck_assert_double_eq(t5, (double)top5 / (double)V);
  }
  mi_circuit *circuit;
  TU_OK(mi_circuit_ov(&circuit, model, 0, 0));
  TU_OK(mi_circuit_copying_accuracy(&t1, &t5, circuit));
  mi_circuit_free(circuit);
  ck_assert_double_eq(t1, (double)top1 / (double)V);
  ck_assert_double_eq(t5, (double)top5 / (double)V);
  free(tri);
}

/*
 * W_E and W_U of small integers, W_V = W_O = I: every entry of OV = W_E W_U
 * is an exact small integer in float32 and in double, and many rows have
 * off-diagonal entries equal to their diagonal (ties, which do not count
 * for the rank) or above it. The accuracy is counted here from the dense
 * double product: rank = entries off the diagonal strictly above it.
 */
START_TEST(tied_integer_head_matches_dense_ranks) {
  size_t V = 300, D = 4;
  tu_rng rng = tu_rng_seed(7);
  float *E = malloc(V * D * sizeof *E), *U = malloc(D * V * sizeof *U);
  for (size_t i = 0; i < V * D; i++)
    E[i] = (float)(int)(tu_uniform(&rng) * 4.0) - 1.0f;
  for (size_t v = 0; v < V; v++)
    for (size_t t = 0; t < D; t++) /* W_U = W_Eᵀ (a copying diagonal), perturbed on every 4th */
      U[t * V + v] = E[v * D + t] + (v % 4 == 0 ? (float)(int)(tu_uniform(&rng) * 3.0) : 0.0f);
  mi_model *model = identity_head(V, D, E, U);
  size_t r, k;
  double *we = tu_weight(model, MI_W_E, 0, 0, &r, &k), *wv = tu_weight(model, MI_W_V, 0, 0, &r, &k);
  double *wo = tu_weight(model, MI_W_O, 0, 0, &r, &k), *wu = tu_weight(model, MI_W_U, 0, 0, &r, &k);
  double *ev = tu_mul(we, wv, V, D, D), *evo = tu_mul(ev, wo, V, D, D);
  double *ov = tu_mul(evo, wu, V, D, V);
  size_t top1 = 0, top5 = 0, tied_rows = 0, by_rank[3] = {0, 0, 0};
  for (size_t i = 0; i < V; i++) {
    size_t rank = 0, ties = 0;
    for (size_t j = 0; j < V; j++) {
      rank += j != i && ov[i * V + j] > ov[i * V + i];
      ties += j != i && ov[i * V + j] == ov[i * V + i];
    }
    top1 += rank < 1;
    top5 += rank < 5;
    tied_rows += ties > 0;
    by_rank[rank < 1 ? 0 : rank < 5 ? 1 : 2]++;
  }
  /* The case does test ties and both thresholds. */
  ck_assert_uint_gt(tied_rows, V / 10);
  for (int b = 0; b < 3; b++)
    ck_assert_uint_gt(by_rank[b], V / 20);
  check_counts(model, V, top1, top5);
  fprintf(stderr, "integer head: %zu of %zu rows tie with their diagonal; top-1 %zu, top-5 "
          "%zu rows\n", tied_rows, V, top1, top5);
  free(E); free(U); free(we); free(wv); free(wo); free(wu); free(ev); free(evo); free(ov);
  mi_model_free(model);
}
END_TEST

/*
 * A diagonal whose float32 value rounds above its exact value: row 0 of
 * OV = W_E W_U (W_V = W_O = I, d_head 2) has W_E row [1, 2⁻²⁴] and W_U
 * column 0 [1, 1.25], so its diagonal is 1 + 1.25·2⁻²⁴ exactly, and the
 * FMA chain's float32 is 1 + 2⁻²³. Columns 1 … 4 hold 2, column 5 exactly
 * 1 + 2⁻²³: above the diagonal, tied with its float32 value and after it
 * by index. So 5 entries rank above the diagonal (top-5 fails), though the
 * diagonal is among its row's 5 largest floats: the 6th pick decides.
 * Every other entry is exact in float32, so the dense double count is exact.
 */
START_TEST(diagonal_rounding_up_needs_the_sixth_pick) {
  size_t V = 16, D = 2;
  float E[16 * 2], U[2 * 16] = {0};
  for (size_t v = 0; v < V; v++) {
    E[v * D] = 1.0f;
    E[v * D + 1] = v == 0 ? 0x1p-24f : 0.0f;
  }
  U[0] = 1.0f;
  U[V] = 1.25f;
  for (size_t j = 1; j <= 4; j++)
    U[j] = 2.0f;
  U[5] = 1.0f + 0x1p-23f;
  for (size_t j = 6; j < V; j++)
    U[j] = 0.5f * (float)(j % 3); /* rows 1 … 15: diagonals 0, 0.5, 1 */
  mi_model *model = identity_head(V, D, E, U);
  size_t top1 = 0, top5 = 0;
  for (size_t i = 0; i < V; i++) {
    double diag = (double)E[i * D] * U[i] + (double)E[i * D + 1] * U[V + i];
    size_t rank = 0;
    for (size_t j = 0; j < V; j++)
      rank += j != i && (double)E[i * D] * U[j] + (double)E[i * D + 1] * U[V + j] > diag;
    ck_assert(i != 0 || rank == 5); /* the case is what it says */
    top1 += rank < 1;
    top5 += rank < 5;
  }
  check_counts(model, V, top1, top5);
  mi_model_free(model);
}
END_TEST

START_TEST(bad_input_is_refused) {
  mi_config c = tu_config(2, 2, 8, 4, 20, 8, MI_PART_POS_EMBED);
  mi_model *model = tu_random_model(&c, 5);
  mi_skip_trigram tri[4];
  tri[0].struct_size = sizeof tri[0];
  size_t found;
  double acc[4] = {0.5, 0.5, 0.5, 0.5};
  mi_skip_trigram_options o;
  mi_skip_trigram_options_init(&o, sizeof o);
  o.ov_top5 = acc; /* either output alone is fine */
  o.ov_accuracy_count = 3;
  TU_FAILS(MI_ERR_SHAPE, mi_model_skip_trigrams(tri, &found, 4, model, &o));
  o.ov_accuracy_count = 4;
  TU_OK(mi_model_skip_trigrams(tri, &found, 4, model, &o));
  mi_head_roles roles[4];
  roles[0].struct_size = sizeof roles[0];
  mi_role_options ro;
  mi_role_options_init(&ro, sizeof ro);
  ro.ov_top1 = acc;
  ro.ov_top1_count = 3;
  TU_FAILS(MI_ERR_SHAPE, mi_model_head_roles(roles, 4, NULL, 0, NULL, model, &ro));
  ro.ov_top1_count = 4;
  acc[2] = NAN;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_head_roles(roles, 4, NULL, 0, NULL, model, &ro));
  acc[2] = 1.5;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_head_roles(roles, 4, NULL, 0, NULL, model, &ro));
  acc[2] = 1.0;
  TU_OK(mi_model_head_roles(roles, 4, NULL, 0, NULL, model, &ro));
  for (size_t i = 0; i < 4; i++)
    ck_assert_double_eq(roles[i].ov_top1, acc[i]);
  mi_model_free(model);
}
END_TEST

int main(void) {
  Suite *s = suite_create("trigram_copying");
  TCase *tc = tcase_create("shared copying accuracy");
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, shipped_models, 0, 2);
  tcase_add_loop_test(tc, random_heads, 0, 2);
  tcase_add_test(tc, tied_integer_head_matches_dense_ranks);
  tcase_add_test(tc, diagonal_rounding_up_needs_the_sixth_pick);
  tcase_add_test(tc, bad_input_is_refused);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
