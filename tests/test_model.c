/*
 * Models built from caller memory: shapes, round trips, bad arguments, and
 * LayerNorm folding and centering checked against the dense reference.
 */
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const unsigned ALL_PARTS = MI_PART_POS_EMBED | MI_PART_QKV_BIAS | MI_PART_OUT_BIAS |
                                  MI_PART_UNEMBED_BIAS | MI_PART_LN | MI_PART_LN_FINAL;

START_TEST(version_and_status_text) {
  ck_assert_uint_eq(mi_version(), MI_VERSION_NUMBER);
  ck_assert_str_eq(mi_version_string(), "0.1.0");
  for (int s = MI_OK; s >= MI_ERR_NUMERIC; s--)
    ck_assert_str_ne(mi_status_str((mi_status)s), "unknown status");
  ck_assert_str_eq(mi_status_str((mi_status)-999), "unknown status");
  ck_assert_ptr_nonnull(mi_last_error());
}
END_TEST

START_TEST(bad_configs_are_refused) {
  mi_model *model = (mi_model *)1;
  mi_config c = tu_config(1, 4, 8, 2, 10, 5, 0);
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_create(NULL, &c));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_create(&model, NULL));
  ck_assert_ptr_null(model);
  mi_config bad = c;
  bad.struct_size = 0;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_create(&model, &bad));
  bad = c;
  bad.d_model = 0;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_create(&model, &bad));
  ck_assert_msg(strstr(mi_last_error(), "d_model") != NULL, "%s", mi_last_error());
  bad = c;
  bad.n_kv_heads = 3;
  TU_FAILS(MI_ERR_SHAPE, mi_model_create(&model, &bad));
  bad = c;
  bad.parts = MI_PART_POS_EMBED;
  bad.n_ctx = 0;
  TU_FAILS(MI_ERR_SHAPE, mi_model_create(&model, &bad));
  bad = c;
  bad.parts = 1u << 20;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_create(&model, &bad));
  bad = c;
  bad.d_vocab = SIZE_MAX / 4;
  TU_FAILS(MI_ERR_OUT_OF_MEMORY, mi_model_create(&model, &bad));
  ck_assert_ptr_null(model);
  mi_model_free(NULL);
}
END_TEST

START_TEST(weights_round_trip_with_strides) {
  mi_config c = tu_config(2, 4, 6, 3, 7, 5, ALL_PARTS);
  c.n_kv_heads = 2;
  mi_model *model;
  TU_OK(mi_model_create(&model, &c));
  mi_config got;
  mi_config_init(&got, sizeof got);
  TU_OK(mi_model_get_config(&got, model));
  ck_assert_uint_eq(got.n_kv_heads, 2);
  ck_assert_uint_eq(mi_model_layout(model), MI_LAYOUT_MEMORY);
  /* W_Q of (1, 3) from float64 with row stride 5 (> 3 columns). */
  double src[6 * 5];
  for (int i = 0; i < 30; i++)
    src[i] = i * 0.25 - 3.0;
  TU_OK(mi_model_set_weight(model, MI_W_Q, 1, 3, MI_DTYPE_F64, src, 5));
  float back[6 * 4];
  memset(back, 0x7f, sizeof back);
  TU_OK(mi_model_get_weight(back, 4, model, MI_W_Q, 1, 3));
  for (int i = 0; i < 6; i++) {
    for (int j = 0; j < 3; j++)
      ck_assert_float_eq(back[i * 4 + j], (float)src[i * 5 + j]);
    ck_assert_msg(back[i * 4 + 3] != 0.0f, "padding column was written");
  }
  /* Another copy stays zero; float32 input with row stride = columns. */
  TU_OK(mi_model_get_weight(back, 3, model, MI_W_Q, 1, 2));
  for (int i = 0; i < 18; i++)
    ck_assert_float_eq(back[i], 0.0f);
  float ln[6] = {1, 2, 3, 4, 5, 6};
  TU_OK(mi_model_set_weight(model, MI_LN1_W, 1, 0, MI_DTYPE_F32, ln, 0));
  TU_OK(mi_model_get_weight(back, 6, model, MI_LN1_W, 1, 0));
  ck_assert_mem_eq(back, ln, sizeof ln);
  /* F16 and BF16 are accepted and exact: 1, -2, 0.5, 65504 (2^127), 0, 0.25. */
  const uint16_t half[6] = {0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0000, 0x3400};
  const uint16_t bf16[6] = {0x3F80, 0xC000, 0x3F00, 0x7F00, 0x0000, 0x3E80};
  const float half_v[6] = {1.0f, -2.0f, 0.5f, 65504.0f, 0.0f, 0.25f};
  const float bf16_v[6] = {1.0f, -2.0f, 0.5f, 0x1p127f, 0.0f, 0.25f};
  TU_OK(mi_model_set_weight(model, MI_B_O, 0, 0, MI_DTYPE_F16, half, 0));
  TU_OK(mi_model_get_weight(back, 6, model, MI_B_O, 0, 0));
  ck_assert_mem_eq(back, half_v, sizeof half_v);
  TU_OK(mi_model_set_weight(model, MI_B_O, 1, 0, MI_DTYPE_BF16, bf16, 0));
  TU_OK(mi_model_get_weight(back, 6, model, MI_B_O, 1, 0));
  ck_assert_mem_eq(back, bf16_v, sizeof bf16_v);
  TU_OK(mi_model_get_weight(back, 6, model, MI_LN1_W, 0, 0));
  ck_assert_float_eq(back[5], 1.0f); /* LayerNorm scale starts at 1 */
  size_t rows, cols;
  TU_OK(mi_model_weight_shape(&rows, &cols, model, MI_W_U));
  ck_assert_uint_eq(rows, 6);
  ck_assert_uint_eq(cols, 7);
  TU_OK(mi_model_weight_shape(&rows, &cols, model, MI_B_K));
  ck_assert_uint_eq(rows * cols, 3);
  mi_model_free(model);
}
END_TEST

START_TEST(bad_weight_arguments) {
  mi_config c = tu_config(2, 4, 6, 3, 7, 5, MI_PART_LN);
  c.n_kv_heads = 2;
  mi_model *model;
  TU_OK(mi_model_create(&model, &c));
  float buf[64] = {0};
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_set_weight(NULL, MI_W_Q, 0, 0, MI_DTYPE_F32, buf, 3));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_set_weight(model, MI_W_Q, 0, 0, MI_DTYPE_F32, NULL, 3));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_set_weight(model, MI_W_Q, 0, 0, MI_DTYPE_F32, buf, 2));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_set_weight(model, (mi_weight)99, 0, 0, MI_DTYPE_F32, buf, 3));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_set_weight(model, MI_W_Q, 0, 0, (mi_dtype)9, buf, 3));
  TU_FAILS(MI_ERR_INDEX, mi_model_set_weight(model, MI_W_Q, 2, 0, MI_DTYPE_F32, buf, 3));
  TU_FAILS(MI_ERR_INDEX, mi_model_set_weight(model, MI_W_Q, 0, 4, MI_DTYPE_F32, buf, 3));
  TU_FAILS(MI_ERR_INDEX, mi_model_set_weight(model, MI_W_K, 0, 2, MI_DTYPE_F32, buf, 3));
  TU_FAILS(MI_ERR_INDEX, mi_model_set_weight(model, MI_W_E, 1, 0, MI_DTYPE_F32, buf, 6));
  TU_FAILS(MI_ERR_INDEX, mi_model_set_weight(model, MI_LN1_W, 0, 1, MI_DTYPE_F32, buf, 6));
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_model_set_weight(model, MI_W_POS, 0, 0, MI_DTYPE_F32, buf, 6));
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_model_set_weight(model, MI_B_Q, 0, 0, MI_DTYPE_F32, buf, 3));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_get_weight(buf, 2, model, MI_W_Q, 0, 0));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_get_weight(NULL, 3, model, MI_W_Q, 0, 0));
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_model_get_weight(buf, 6, model, MI_LNF_W, 0, 0));
  size_t r, k;
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_model_weight_shape(&r, &k, model, MI_B_U));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_process(model, 1u << 9));
  TU_OK(mi_model_process(model, MI_PROCESS_FOLD_LN));
  TU_FAILS(MI_ERR_STATE, mi_model_process(model, MI_PROCESS_FOLD_LN));
  /* A processed model takes a weight as given, in processed form. */
  for (size_t i = 0; i < 18; i++)
    buf[i] = (float)i - 4.5f;
  TU_OK(mi_model_set_weight(model, MI_W_Q, 1, 2, MI_DTYPE_F32, buf, 3));
  float back[18];
  TU_OK(mi_model_get_weight(back, 3, model, MI_W_Q, 1, 2));
  ck_assert_mem_eq(back, buf, sizeof back);
  /* A live circuit may read the weights in place: no change then. */
  mi_circuit *ov;
  TU_OK(mi_circuit_ov(&ov, model, 0, 0));
  TU_FAILS(MI_ERR_STATE, mi_model_set_weight(model, MI_W_Q, 0, 0, MI_DTYPE_F32, buf, 3));
  ck_assert_msg(strstr(mi_last_error(), "circuits") != NULL, "%s", mi_last_error());
  mi_circuit_free(ov);
  TU_OK(mi_model_set_weight(model, MI_W_Q, 0, 0, MI_DTYPE_F32, buf, 3));
  mi_model_free(model);
}
END_TEST

/* Every copy of every weight of a and b, exactly equal (or both absent). */
static void assert_same_weights(const mi_model *a, const mi_model *b) {
  mi_config c;
  mi_config_init(&c, sizeof c);
  TU_OK(mi_model_get_config(&c, a));
  for (int i = 0; i < MI_WEIGHT_COUNT; i++) {
    size_t rows, cols, rb, cb;
    bool has_a = mi_model_weight_shape(&rows, &cols, a, (mi_weight)i) == MI_OK;
    bool has_b = mi_model_weight_shape(&rb, &cb, b, (mi_weight)i) == MI_OK;
    ck_assert_msg(has_a == has_b, "weight %d present in one model only", i);
    if (!has_a)
      continue;
    float *wa = malloc(rows * cols * sizeof *wa), *wb = malloc(rows * cols * sizeof *wb);
    for (size_t l = 0; l < c.n_layers; l++)
      for (size_t h = 0; h < c.n_heads; h++)
        if (mi_model_get_weight(wa, cols, a, (mi_weight)i, l, h) == MI_OK) {
          TU_OK(mi_model_get_weight(wb, cols, b, (mi_weight)i, l, h));
          ck_assert_mem_eq(wa, wb, rows * cols * sizeof *wa);
        }
    free(wa);
    free(wb);
  }
}

START_TEST(copies_are_independent) {
  mi_config c = tu_config(2, 3, 8, 4, 11, 8, ALL_PARTS);
  mi_model *model = tu_random_model(&c, 21), *copy;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_copy(NULL, model));
  copy = (mi_model *)1;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_copy(&copy, NULL));
  ck_assert_ptr_null(copy);
  const char vocab[] = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n";
  TU_OK(mi_model_load_vocab_memory(model, vocab, sizeof vocab - 1));
  TU_OK(mi_model_process(model, MI_PROCESS_TRANSFORMERLENS));
  TU_OK(mi_model_copy(&copy, model));
  ck_assert_uint_eq(mi_model_processing(copy), mi_model_processing(model));
  ck_assert_int_eq(mi_model_layout(copy), mi_model_layout(model));
  assert_same_weights(model, copy);
  /* Editing the copy leaves the original as it was. */
  size_t r, k;
  double *before = tu_weight(model, MI_W_O, 1, 2, &r, &k);
  float zeros[4 * 8] = {0};
  TU_OK(mi_model_set_weight(copy, MI_W_O, 1, 2, MI_DTYPE_F32, zeros, 8));
  double *after = tu_weight(model, MI_W_O, 1, 2, &r, &k);
  ck_assert_mem_eq(before, after, 4 * 8 * sizeof *before);
  double *edited = tu_weight(copy, MI_W_O, 1, 2, &r, &k);
  ck_assert_double_eq(tu_max_abs(edited, 4 * 8), 0.0);
  ck_assert_double_gt(tu_max_abs(before, 4 * 8), 0.0);
  free(before);
  free(after);
  free(edited);
  /* The vocabulary is shared: it outlives the original, and a new one
   * loaded into the copy does not reach the original. */
  const char *text;
  mi_model *second;
  TU_OK(mi_model_copy(&second, model));
  mi_model_free(model);
  TU_OK(mi_model_token_str(&text, copy, 3));
  ck_assert_str_eq(text, "d");
  const char other[] = "A\nB\nC\nD\n";
  TU_OK(mi_model_load_vocab_memory(copy, other, sizeof other - 1));
  TU_OK(mi_model_token_str(&text, copy, 3));
  ck_assert_str_eq(text, "D");
  TU_OK(mi_model_token_str(&text, second, 3));
  ck_assert_str_eq(text, "d");
  mi_model_free(copy);
  mi_model_free(second);
}
END_TEST

START_TEST(processed_shortformer_copies_keep_positions_fixed) {
  mi_config c = tu_config(1, 2, 8, 4, 11, 8, ALL_PARTS);
  c.positional = MI_POSITIONAL_SHORTFORMER;
  mi_model *model = tu_random_model(&c, 22), *copy;
  TU_OK(mi_model_process(model, MI_PROCESS_FOLD_LN));
  TU_OK(mi_model_copy(&copy, model));
  float w[8 * 11] = {0};
  TU_FAILS(MI_ERR_STATE, mi_model_set_weight(copy, MI_W_Q, 0, 0, MI_DTYPE_F32, w, 4));
  TU_FAILS(MI_ERR_STATE, mi_model_set_weight(copy, MI_W_POS, 0, 0, MI_DTYPE_F32, w, 8));
  TU_OK(mi_model_set_weight(copy, MI_W_V, 0, 0, MI_DTYPE_F32, w, 4));
  /* The copy's positional terms are its own, and the original's. */
  const size_t tokens[] = {1, 4, 9, 4, 1};
  float a[5 * 11], b[5 * 11];
  TU_OK(mi_model_forward(a, 11, model, tokens, 5, NULL));
  mi_model *again;
  TU_OK(mi_model_copy(&again, model));
  mi_model_free(model);
  TU_OK(mi_model_forward(b, 11, again, tokens, 5, NULL));
  ck_assert_mem_eq(a, b, sizeof a);
  mi_model_free(again);
  mi_model_free(copy);
}
END_TEST

static const size_t TOKENS[] = {3, 0, 6, 6, 1, 5, 2};
enum { N_TOKENS = sizeof TOKENS / sizeof TOKENS[0] };

/* Configurations the folding tests run on (loop index selects one). */
static mi_config folding_config(int i) {
  switch (i) {
  case 0: return tu_config(1, 2, 8, 4, 11, 8, ALL_PARTS);
  case 1: return tu_config(2, 3, 9, 3, 13, 8, MI_PART_LN | MI_PART_LN_FINAL);
  case 2: { /* grouped-query heads, no positional embedding */
    mi_config c = tu_config(3, 4, 8, 2, 10, 8, ALL_PARTS & ~MI_PART_POS_EMBED);
    c.n_kv_heads = 2;
    return c;
  }
  default: return tu_config(2, 2, 6, 3, 9, 8, MI_PART_LN | MI_PART_POS_EMBED);
  }
}

/*
 * Folding must compute the same function as LayerNorm with its scale and
 * shift. Tolerance: weights are rounded to float32 once after folding
 * (relative error 6e-8 per product); 1e-5 of the logits' scale is ample and
 * far below the O(1) change that any folding mistake makes.
 */
START_TEST(folding_keeps_the_logits) {
  mi_config c = folding_config(_i);
  mi_model *model = tu_random_model(&c, 100 + _i);
  double *before = malloc(N_TOKENS * c.d_vocab * sizeof *before);
  double *after = malloc(N_TOKENS * c.d_vocab * sizeof *after);
  tu_reference_logits(before, model, TOKENS, N_TOKENS);
  TU_OK(mi_model_process(model, MI_PROCESS_FOLD_LN));
  ck_assert_uint_eq(mi_model_processing(model), MI_PROCESS_FOLD_LN);
  tu_reference_logits(after, model, TOKENS, N_TOKENS);
  double scale = tu_max_abs(before, N_TOKENS * c.d_vocab);
  double diff = tu_max_abs_diff(before, after, N_TOKENS * c.d_vocab);
  ck_assert_msg(diff <= 1e-5 * scale, "config %d: folded logits differ by %g (scale %g)",
                _i, diff, scale);
  /* The LayerNorms now only normalise. */
  size_t r, k;
  double *w = tu_weight(model, MI_LN1_W, c.n_layers - 1, 0, &r, &k);
  double *b = tu_weight(model, MI_LN1_B, c.n_layers - 1, 0, &r, &k);
  for (size_t i = 0; i < c.d_model; i++) {
    ck_assert_double_eq(w[i], 1.0);
    ck_assert_double_eq(b[i], 0.0);
  }
  free(w);
  free(b);
  free(before);
  free(after);
  mi_model_free(model);
}
END_TEST

/* A LayerNorm shift with no bias to fold into: folding creates the bias. */
START_TEST(folding_creates_missing_biases) {
  mi_config c = folding_config(1);
  mi_model *model = tu_random_model(&c, 7);
  TU_OK(mi_model_process(model, MI_PROCESS_FOLD_LN));
  mi_config got;
  mi_config_init(&got, sizeof got);
  TU_OK(mi_model_get_config(&got, model));
  ck_assert_uint_eq(got.parts & (MI_PART_QKV_BIAS | MI_PART_UNEMBED_BIAS),
                    MI_PART_QKV_BIAS | MI_PART_UNEMBED_BIAS);
  mi_model_free(model);
}
END_TEST

/* log-softmax of each row: what "no probability changes" compares. */
static void log_softmax_rows(double *x, size_t rows, size_t cols) {
  for (size_t t = 0; t < rows; t++) {
    double top = -INFINITY, sum = 0;
    for (size_t j = 0; j < cols; j++)
      top = fmax(top, x[t * cols + j]);
    for (size_t j = 0; j < cols; j++)
      sum += exp(x[t * cols + j] - top);
    for (size_t j = 0; j < cols; j++)
      x[t * cols + j] -= top + log(sum);
  }
}

enum { ROWS = 1, COLUMNS = 2 };

/* Each row (ROWS) and/or column (COLUMNS) of the weight has mean ~0. */
static void assert_centred(const mi_model *model, mi_weight which, size_t layer,
                           size_t head, int lines) {
  size_t rows, cols;
  double *w = tu_weight(model, which, layer, head, &rows, &cols);
  ck_assert_ptr_nonnull(w);
  for (size_t i = 0; (lines & ROWS) && i < rows; i++) {
    double mean = 0;
    for (size_t j = 0; j < cols; j++)
      mean += w[i * cols + j] / cols;
    ck_assert_msg(fabs(mean) <= 1e-6, "weight %d (%zu, %zu) row %zu has mean %g",
                  (int)which, layer, head, i, mean);
  }
  for (size_t j = 0; (lines & COLUMNS) && j < cols; j++) {
    double mean = 0;
    for (size_t i = 0; i < rows; i++)
      mean += w[i * cols + j] / rows;
    ck_assert_msg(fabs(mean) <= 1e-6, "weight %d (%zu, %zu) column %zu has mean %g",
                  (int)which, layer, head, j, mean);
  }
  free(w);
}

/*
 * TransformerLens's processing changes logits by a constant per position and
 * so no probability. Same float32 tolerance as folding, on log-probabilities.
 */
START_TEST(transformerlens_processing_keeps_probabilities) {
  mi_config c = folding_config(_i);
  mi_model *model = tu_random_model(&c, 200 + _i);
  size_t n = N_TOKENS * c.d_vocab;
  double *before = malloc(n * sizeof *before), *after = malloc(n * sizeof *after);
  tu_reference_logits(before, model, TOKENS, N_TOKENS);
  TU_OK(mi_model_process(model, MI_PROCESS_TRANSFORMERLENS));
  ck_assert_uint_eq(mi_model_processing(model), MI_PROCESS_TRANSFORMERLENS);
  tu_reference_logits(after, model, TOKENS, N_TOKENS);
  double raw_diff = tu_max_abs_diff(before, after, n);
  log_softmax_rows(before, N_TOKENS, c.d_vocab);
  log_softmax_rows(after, N_TOKENS, c.d_vocab);
  double diff = tu_max_abs_diff(before, after, n);
  ck_assert_msg(diff <= 1e-5 * tu_max_abs(before, n), "config %d: log-probs differ by %g",
                _i, diff);
  ck_assert_msg(raw_diff > 1e-3, "centering changed no logit: nothing was centred");
  /* Probabilities alone cannot see a skipped step (LayerNorm hides it):
   * every weight TransformerLens centres must now have zero mean. */
  for (size_t l = 0; l < c.n_layers; l++) {
    for (size_t h = 0; h < c.n_heads; h++) {
      assert_centred(model, MI_W_Q, l, h, COLUMNS);
      assert_centred(model, MI_W_O, l, h, ROWS);
    }
    for (size_t h = 0; h < (c.n_kv_heads ? c.n_kv_heads : c.n_heads); h++) {
      assert_centred(model, MI_W_K, l, h, COLUMNS);
      assert_centred(model, MI_W_V, l, h, COLUMNS);
    }
    if (c.parts & MI_PART_OUT_BIAS)
      assert_centred(model, MI_B_O, l, 0, ROWS);
  }
  assert_centred(model, MI_W_E, 0, 0, ROWS);
  if (c.parts & MI_PART_POS_EMBED)
    assert_centred(model, MI_W_POS, 0, 0, ROWS);
  assert_centred(model, MI_W_U, 0, 0, ROWS | COLUMNS); /* over d_vocab and d_model */
  assert_centred(model, MI_B_U, 0, 0, ROWS);           /* folding created it */
  free(before);
  free(after);
  mi_model_free(model);
}
END_TEST

START_TEST(centering_needs_layernorm) {
  mi_config c = tu_config(1, 2, 6, 3, 9, 8, MI_PART_POS_EMBED | MI_PART_UNEMBED_BIAS);
  mi_model *model = tu_random_model(&c, 3);
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_model_process(model, MI_PROCESS_TRANSFORMERLENS));
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_model_process(model, MI_PROCESS_CENTER_WRITING));
  ck_assert_uint_eq(mi_model_processing(model), 0);
  /* center_unembed alone shifts each position's logits by a constant: allowed. */
  size_t n = N_TOKENS * c.d_vocab;
  double *before = malloc(n * sizeof *before), *after = malloc(n * sizeof *after);
  tu_reference_logits(before, model, TOKENS, N_TOKENS);
  TU_OK(mi_model_process(model, MI_PROCESS_FOLD_LN | MI_PROCESS_CENTER_UNEMBED));
  /* Without LayerNorm, FOLD_LN is reported because it was asked for, and only then. */
  ck_assert_uint_eq(mi_model_processing(model), MI_PROCESS_FOLD_LN | MI_PROCESS_CENTER_UNEMBED);
  mi_model *plain = tu_random_model(&c, 4);
  TU_OK(mi_model_process(plain, 0));
  ck_assert_uint_eq(mi_model_processing(plain), 0);
  mi_model_free(plain);
  tu_reference_logits(after, model, TOKENS, N_TOKENS);
  log_softmax_rows(before, N_TOKENS, c.d_vocab);
  log_softmax_rows(after, N_TOKENS, c.d_vocab);
  ck_assert_double_le(tu_max_abs_diff(before, after, n), 1e-5 * tu_max_abs(before, n));
  free(before);
  free(after);
  mi_model_free(model);
}
END_TEST

static Suite *model_suite(void) {
  Suite *s = suite_create("model");
  TCase *api = tcase_create("api");
  tcase_add_test(api, version_and_status_text);
  tcase_add_test(api, bad_configs_are_refused);
  tcase_add_test(api, weights_round_trip_with_strides);
  tcase_add_test(api, bad_weight_arguments);
  tcase_add_test(api, copies_are_independent);
  tcase_add_test(api, processed_shortformer_copies_keep_positions_fixed);
  suite_add_tcase(s, api);
  TCase *processing = tcase_create("processing");
  tcase_add_loop_test(processing, folding_keeps_the_logits, 0, 4);
  tcase_add_test(processing, folding_creates_missing_biases);
  tcase_add_loop_test(processing, transformerlens_processing_keeps_probabilities, 0, 3);
  tcase_add_test(processing, centering_needs_layernorm);
  suite_add_tcase(s, processing);
  return s;
}

int main(void) { return tu_run_suite(model_suite()); }
