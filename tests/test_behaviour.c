/*
 * Behavioural head scores: recomputed densely from the forward pass's own
 * patterns, a hand-built previous-token head, the report's new fields next to
 * old callers, and bad input.
 */
#include "testutil.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static const unsigned ALL_PARTS = MI_PART_POS_EMBED | MI_PART_QKV_BIAS | MI_PART_OUT_BIAS |
                                  MI_PART_UNEMBED_BIAS | MI_PART_LN | MI_PART_LN_FINAL;

/*
 * The three scores from patterns got through mi_model_forward's extras,
 * written from the definitions: for each head, the attention on the target
 * keys summed over the rows that have a target, over the number of such rows.
 */
static void dense_scores(double *out, const mi_model *model, const mi_config *c,
                         const size_t *tokens, size_t n_seq, size_t n) {
  size_t heads = c->n_layers * c->n_heads;
  double sum[64][3] = {{0}};
  size_t rows[3] = {0};
  float *logits = malloc(n * c->d_vocab * sizeof *logits);
  float *patterns = malloc(heads * n * n * sizeof *patterns);
  mi_forward_extras x;
  mi_forward_extras_init(&x, sizeof x);
  x.patterns = patterns;
  x.patterns_count = heads * n * n;
  for (size_t q = 0; q < n_seq; q++) {
    const size_t *tok = tokens + q * n;
    TU_OK(mi_model_forward(logits, c->d_vocab, model, tok, n, &x));
    for (size_t t = 0; t < n; t++) {
      int has_dup = 0, has_ind = 0;
      for (size_t s = 0; s < t; s++)
        has_dup |= tok[s] == tok[t];
      for (size_t s = 1; s <= t; s++)
        has_ind |= tok[s - 1] == tok[t];
      rows[0] += t >= 1;
      rows[1] += has_dup;
      rows[2] += has_ind;
      for (size_t i = 0; i < heads; i++) {
        const float *row = patterns + (i * n + t) * n;
        if (t >= 1)
          sum[i][0] += row[t - 1];
        for (size_t s = 0; s < t; s++)
          if (tok[s] == tok[t])
            sum[i][1] += row[s];
        for (size_t s = 1; s <= t; s++)
          if (tok[s - 1] == tok[t])
            sum[i][2] += row[s];
      }
    }
  }
  for (size_t i = 0; i < heads; i++)
    for (int k = 0; k < 3; k++)
      out[i * 3 + k] = rows[k] ? sum[i][k] / rows[k] : NAN;
  free(logits);
  free(patterns);
}

/*
 * Repeated random tokens have the documented shape; the scores of every head
 * over them equal the dense recomputation from mi_model_forward's patterns
 * (the same float32 patterns summed in double in another order: 1e-12), and
 * the report's fields equal both, for the same sequences, half and seed.
 */
START_TEST(scores_match_dense_recomputation) {
  mi_config c = tu_config(2, 3, 8, 4, _i == 0 ? 13 : 5, 16, _i == 0 ? ALL_PARTS : 0);
  mi_model *model = tu_random_model(&c, 90 + _i);
  TU_OK(mi_model_process(model, _i == 0 ? MI_PROCESS_FOLD_LN : 0));
  TU_OK(mi_model_get_config(&c, model));
  size_t n_seq = 3, half = 7, n = 2 * half, tokens[3 * 14], again[3 * 14];
  TU_OK(mi_model_repeated_tokens(tokens, 42, model, n_seq, half, 5));
  TU_OK(mi_model_repeated_tokens(again, 42, model, n_seq, half, 5));
  ck_assert_mem_eq(tokens, again, sizeof tokens);
  TU_OK(mi_model_repeated_tokens(again, 42, model, n_seq, half, 6));
  ck_assert_int_ne(memcmp(tokens, again, sizeof tokens), 0);
  for (size_t q = 0; q < n_seq; q++)
    for (size_t t = 0; t < half; t++) {
      ck_assert_uint_lt(tokens[q * n + t], c.d_vocab);
      ck_assert_uint_eq(tokens[q * n + t], tokens[q * n + half + t]);
    }
  size_t heads = c.n_layers * c.n_heads;
  double got[6 * 3], want[6 * 3];
  TU_OK(mi_model_attention_scores(got, heads * MI_SCORE_COUNT, model, tokens, n_seq, n));
  dense_scores(want, model, &c, tokens, n_seq, n);
  mi_report_options opt;
  mi_report_options_init(&opt, sizeof opt);
  ck_assert_uint_eq(opt.behaviour_sequences, 16);
  opt.behaviour_sequences = n_seq;
  opt.behaviour_half_length = half;
  opt.behaviour_seed = 5;
  mi_head_report lines[6];
  lines[0].struct_size = sizeof lines[0];
  TU_OK(mi_model_head_report(lines, 6, model, &opt));
  for (size_t i = 0; i < heads; i++) {
    for (int k = 0; k < MI_SCORE_COUNT; k++) {
      ck_assert_msg(!isnan(want[i * 3 + k]), "head %zu score %d undefined", i, k);
      ck_assert_double_eq_tol(got[i * 3 + k], want[i * 3 + k], 1e-12);
      ck_assert(got[i * 3 + k] >= 0.0 && got[i * 3 + k] <= 1.0 + 1e-6);
    }
    ck_assert_double_eq_tol(lines[i].prev_token_attention, want[i * 3 + 0], 1e-12);
    ck_assert_double_eq_tol(lines[i].duplicate_token_attention, want[i * 3 + 1], 1e-12);
    ck_assert_double_eq_tol(lines[i].induction_attention, want[i * 3 + 2], 1e-12);
  }
  mi_model_free(model);
}
END_TEST

/*
 * Head (0, 0) provably attends to the previous position: W_E = 0, W_pos one-hot
 * (position t is e_t), W_Q maps e_t to 60·e_{t−1} and W_K = I (d_head =
 * n_ctx), so the scaled score is 60/√16 = 15 on key t − 1 and 0 elsewhere:
 * at most 15·e⁻¹⁵ ≈ 5e-6 of a row's attention misses. Its previous-token
 * score is 1 to 1e-5 (the report's default sequences), as is the weight-based
 * signature.
 */
START_TEST(previous_token_head_scores_one) {
  size_t n_ctx = 16, D = 16;
  mi_config c = tu_config(1, 2, D, D, 50, n_ctx, MI_PART_POS_EMBED);
  mi_model *model;
  TU_OK(mi_model_create(&model, &c));
  float pos[16 * 16] = {0}, wq[16 * 16] = {0}, wk[16 * 16] = {0};
  for (size_t i = 0; i < n_ctx; i++)
    pos[i * D + i] = wk[i * D + i] = 1.0f;
  for (size_t t = 1; t < n_ctx; t++)
    wq[t * D + t - 1] = 60.0f;
  TU_OK(mi_model_set_weight(model, MI_W_POS, 0, 0, MI_DTYPE_F32, pos, D));
  TU_OK(mi_model_set_weight(model, MI_W_Q, 0, 0, MI_DTYPE_F32, wq, D));
  TU_OK(mi_model_set_weight(model, MI_W_K, 0, 0, MI_DTYPE_F32, wk, D));
  TU_OK(mi_model_process(model, 0));
  mi_head_report lines[2];
  lines[0].struct_size = sizeof lines[0];
  TU_OK(mi_model_head_report(lines, 2, model, NULL));
  ck_assert_double_eq_tol(lines[0].prev_token_attention, 1.0, 1e-5);
  ck_assert_double_eq(lines[0].prev_token_share, 1.0);
  /* Head (0, 1) has zero weights: uniform attention, 1/(t+1) on t − 1. */
  ck_assert(lines[1].prev_token_attention < 0.5);
  mi_model_free(model);
}
END_TEST

/* The report's lines as a caller compiled before the behavioural fields saw them. */
typedef struct old_head_report {
  size_t struct_size;
  size_t layer, head;
  mi_eigen_summary ov, qk;
  double prev_token_share;
} old_head_report;

/* The options before the behaviour_* fields. */
typedef struct old_report_options {
  size_t struct_size;
  unsigned qk_flags;
  int prev_token;
} old_report_options;

/*
 * An old caller (old line size and old options size) gets the old fields,
 * equal to a new caller's, and nothing written past each of its lines.
 */
START_TEST(old_callers_keep_working) {
  ck_assert_uint_eq(sizeof(old_head_report), offsetof(mi_head_report, prev_token_attention));
  mi_config c = tu_config(2, 2, 8, 4, 11, 12, ALL_PARTS);
  mi_model *model = tu_random_model(&c, 9);
  TU_OK(mi_model_process(model, MI_PROCESS_FOLD_LN));
  old_head_report old[4 + 1];
  memset(old, 0xAB, sizeof old);
  old[0].struct_size = sizeof old[0];
  old_report_options old_opt = {sizeof old_opt, MI_QK_BIAS | MI_QK_SCALE, 1};
  TU_OK(mi_model_head_report((mi_head_report *)old, 4, model,
                             (const mi_report_options *)&old_opt));
  mi_head_report now[4];
  now[0].struct_size = sizeof now[0];
  TU_OK(mi_model_head_report(now, 4, model, NULL));
  for (size_t i = 0; i < 4; i++) {
    ck_assert_uint_eq(old[i].struct_size, sizeof old[0]);
    ck_assert_uint_eq(old[i].layer, now[i].layer);
    ck_assert_double_eq(old[i].ov.copying_score, now[i].ov.copying_score);
    ck_assert_double_eq(old[i].prev_token_share, now[i].prev_token_share);
    ck_assert(!isnan(now[i].prev_token_attention));
  }
  unsigned char guard[sizeof old[4]];
  memset(guard, 0xAB, sizeof guard);
  ck_assert_mem_eq(&old[4], guard, sizeof guard);
  mi_model_free(model);
}
END_TEST

/* MLPs: the report works with NaN behaviour; the scores themselves refuse. */
START_TEST(models_with_mlps_and_bad_input) {
  mi_config c = tu_config(2, 2, 8, 4, 11, 12, MI_PART_MLP | MI_PART_POS_EMBED);
  mi_model *model = tu_random_model(&c, 10);
  mi_head_report lines[4];
  lines[0].struct_size = sizeof lines[0];
  TU_OK(mi_model_head_report(lines, 4, model, NULL));
  for (size_t i = 0; i < 4; i++) {
    ck_assert(isnan(lines[i].prev_token_attention));
    ck_assert(isnan(lines[i].induction_attention));
    ck_assert(!isnan(lines[i].ov.copying_score));
  }
  size_t tokens[24], bad[4] = {1, 2, 11, 3};
  double out[12];
  TU_OK(mi_model_repeated_tokens(tokens, 24, model, 2, 6, 1));
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_model_attention_scores(out, 12, model, tokens, 2, 12));
  /* Refused as such before sizing the patterns: not MI_ERR_OUT_OF_MEMORY. */
  const size_t huge = (size_t)1 << (sizeof(size_t) * 4); /* length² overflows */
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_model_attention_scores(out, 12, model, tokens, 1, huge));
  mi_model_free(model);

  c.parts = MI_PART_POS_EMBED;
  model = tu_random_model(&c, 11);
  TU_OK(mi_model_attention_scores(out, 12, model, tokens, 2, 12));
  TU_FAILS(MI_ERR_SHAPE, mi_model_attention_scores(out, 11, model, tokens, 2, 12));
  TU_FAILS(MI_ERR_SHAPE, mi_model_attention_scores(out, 12, model, tokens, 1, 24)); /* > n_ctx */
  TU_FAILS(MI_ERR_SHAPE, mi_model_attention_scores(out, 12, model, tokens, 1, huge));
  TU_FAILS(MI_ERR_SHAPE, mi_model_attention_scores(out, 12, model, tokens, 1, huge - 1));
  TU_FAILS(MI_ERR_INDEX, mi_model_attention_scores(out, 12, model, bad, 1, 4));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_attention_scores(out, 12, model, tokens, 0, 12));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_attention_scores(out, 12, model, NULL, 2, 12));
  TU_FAILS(MI_ERR_SHAPE, mi_model_repeated_tokens(tokens, 24, model, 1, 7, 1)); /* 14 > 12 */
  TU_FAILS(MI_ERR_SHAPE, mi_model_repeated_tokens(tokens, 23, model, 2, 6, 1));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_repeated_tokens(tokens, 24, model, 2, 0, 1));
  mi_report_options opt;
  mi_report_options_init(&opt, sizeof opt);
  opt.behaviour_half_length = 7;
  TU_FAILS(MI_ERR_SHAPE, mi_model_head_report(lines, 4, model, &opt));
  opt.behaviour_sequences = 0; /* off: the long half is not used */
  TU_OK(mi_model_head_report(lines, 4, model, &opt));
  ck_assert(isnan(lines[0].prev_token_attention));
  mi_model_free(model);
}
END_TEST

static Suite *behaviour_suite(void) {
  Suite *s = suite_create("behaviour");
  TCase *tc = tcase_create("behaviour");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, scores_match_dense_recomputation, 0, 2);
  tcase_add_test(tc, previous_token_head_scores_one);
  tcase_add_test(tc, old_callers_keep_working);
  tcase_add_test(tc, models_with_mlps_and_bad_input);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run_suite(behaviour_suite()); }
