/*
 * The forward pass: logits against the dense double reference of testutil,
 * each layer's patterns and residual stream against a dense double layer
 * written here, and every bad input refused with its status.
 */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const unsigned ALL_PARTS = MI_PART_POS_EMBED | MI_PART_QKV_BIAS | MI_PART_OUT_BIAS |
                                  MI_PART_UNEMBED_BIAS | MI_PART_LN | MI_PART_LN_FINAL;

static const size_t TOKENS[] = {3, 0, 6, 6, 1, 5, 2, 3, 8};
enum { N_TOKENS = sizeof TOKENS / sizeof TOKENS[0] };

/* 1-, 2- and 3-layer models with and without each optional part. */
static mi_config forward_config(int i) {
  switch (i) {
  case 0: return tu_config(1, 2, 8, 4, 11, 12, ALL_PARTS);
  case 1: return tu_config(1, 3, 6, 2, 9, 0, 0); /* bare: no LN, biases or W_pos */
  case 2: return tu_config(2, 3, 9, 3, 13, 10, MI_PART_LN | MI_PART_LN_FINAL);
  case 3: return tu_config(2, 2, 8, 4, 10, 9, MI_PART_POS_EMBED | MI_PART_OUT_BIAS |
                                                  MI_PART_QKV_BIAS | MI_PART_UNEMBED_BIAS);
  case 4: { /* grouped key/value heads, no positional embedding */
    mi_config c = tu_config(3, 4, 8, 2, 10, 16, ALL_PARTS & ~MI_PART_POS_EMBED);
    c.n_kv_heads = 2;
    return c;
  }
  default: { /* grouped, everything, one key/value head */
    mi_config c = tu_config(3, 3, 12, 4, 15, 9, ALL_PARTS);
    c.n_kv_heads = 1;
    return c;
  }
  }
}
enum { N_CONFIGS = 6 };

/*
 * Logits against tu_reference_logits, raw and folded weights, with a padded
 * leading dimension. Tolerance: float32 products round each term to 6e-8
 * relative; sums of ≤ 16 terms through 3 layers, LayerNorms (which divide by
 * a spread of order 1) and softmax stay far below 1e-5 of the logits' scale
 * (measured: under 1e-6), while any wrong bias, scale, mask or head index
 * moves logits by O(1).
 */
START_TEST(logits_match_the_reference) {
  mi_config c = forward_config(_i);
  mi_model *model = tu_random_model(&c, 40 + _i);
  size_t V = c.d_vocab, ld = V + 3, n = N_TOKENS;
  double *want = malloc(n * V * sizeof *want), *got = malloc(n * V * sizeof *got);
  float *out = malloc(n * ld * sizeof *out);
  for (int fold = 0; fold < 2; fold++) {
    if (fold)
      TU_OK(mi_model_process(model, MI_PROCESS_FOLD_LN));
    tu_reference_logits(want, model, TOKENS, n);
    for (size_t i = 0; i < n * ld; i++)
      out[i] = 12345.0f;
    TU_OK(mi_model_forward(out, ld, model, TOKENS, n, NULL));
    for (size_t t = 0; t < n; t++) {
      for (size_t j = 0; j < V; j++)
        got[t * V + j] = out[t * ld + j];
      for (size_t j = V; j < ld; j++)
        ck_assert_float_eq(out[t * ld + j], 12345.0f); /* padding untouched */
    }
    double scale = tu_max_abs(want, n * V), diff = tu_max_abs_diff(got, want, n * V);
    ck_assert_msg(diff <= 1e-5 * scale, "config %d fold %d: logits differ by %g (scale %g)",
                  _i, fold, diff, scale);
  }
  free(want);
  free(got);
  free(out);
  mi_model_free(model);
}
END_TEST

/* y ← LayerNorm(x) with the model's ln1 of layer l (or a copy without one). */
static void ln_rows(double *y, const double *x, size_t n, size_t D, const mi_config *c,
                    const double *w, const double *b) {
  for (size_t t = 0; t < n; t++) {
    double mean = 0, var = 0;
    for (size_t i = 0; i < D; i++)
      mean += x[t * D + i] / D;
    for (size_t i = 0; i < D; i++)
      var += (x[t * D + i] - mean) * (x[t * D + i] - mean) / D;
    for (size_t i = 0; i < D; i++)
      y[t * D + i] = w ? (x[t * D + i] - mean) / sqrt(var + c->ln_eps) * w[i] + b[i]
                       : x[t * D + i];
  }
}

/*
 * One layer in dense double: from the stream x entering layer l, the patterns
 * (H × n × n) and the stream leaving it (next, n × D).
 */
static void reference_layer(double *patterns, double *next, const mi_model *model,
                            const mi_config *c, size_t l, const double *x, size_t n) {
  size_t D = c->d_model, dh = c->d_head, r, k;
  double *xn = malloc(n * D * sizeof *xn);
  double *lw = tu_weight(model, MI_LN1_W, l, 0, &r, &k);
  double *lb = tu_weight(model, MI_LN1_B, l, 0, &r, &k);
  ln_rows(xn, x, n, D, c, lw, lb);
  memcpy(next, x, n * D * sizeof *next);
  double *bO = tu_weight(model, MI_B_O, l, 0, &r, &k);
  for (size_t h = 0; h < c->n_heads; h++) {
    size_t g = h / (c->n_heads / c->n_kv_heads);
    double *WQ = tu_weight(model, MI_W_Q, l, h, &r, &k);
    double *WK = tu_weight(model, MI_W_K, l, g, &r, &k);
    double *WV = tu_weight(model, MI_W_V, l, g, &r, &k);
    double *WO = tu_weight(model, MI_W_O, l, h, &r, &k);
    double *bQ = tu_weight(model, MI_B_Q, l, h, &r, &k);
    double *bK = tu_weight(model, MI_B_K, l, g, &r, &k);
    double *bV = tu_weight(model, MI_B_V, l, g, &r, &k);
    double *p = patterns + h * n * n;
    for (size_t t = 0; t < n; t++) {
      double total = 0;
      for (size_t s = 0; s < n; s++) {
        double score = 0;
        for (size_t a = 0; a < dh; a++) {
          double qa = bQ ? bQ[a] : 0, ka = bK ? bK[a] : 0;
          for (size_t i = 0; i < D; i++) {
            qa += xn[t * D + i] * WQ[i * dh + a];
            ka += xn[s * D + i] * WK[i * dh + a];
          }
          score += qa * ka;
        }
        p[t * n + s] = s <= t ? exp(score / sqrt((double)dh)) : 0.0;
        total += p[t * n + s];
      }
      for (size_t s = 0; s < n; s++)
        p[t * n + s] /= total;
    }
    for (size_t t = 0; t < n; t++)
      for (size_t j = 0; j < D; j++) {
        double sum = 0;
        for (size_t s = 0; s <= t; s++)
          for (size_t a = 0; a < dh; a++) {
            double va = bV ? bV[a] : 0;
            for (size_t i = 0; i < D; i++)
              va += xn[s * D + i] * WV[i * dh + a];
            sum += p[t * n + s] * va * WO[a * D + j];
          }
        next[t * D + j] += sum;
      }
    free(WQ); free(WK); free(WV); free(WO); free(bQ); free(bK); free(bV);
  }
  for (size_t t = 0; t < n && bO; t++)
    for (size_t j = 0; j < D; j++)
      next[t * D + j] += bO[j];
  free(xn); free(lw); free(lb); free(bO);
}

/*
 * Every layer checked on its own: the reference layer reads the library's
 * stream entering it and must give the library's patterns and the stream
 * leaving it. Patterns are causal (exactly 0 above the diagonal) and their
 * rows sum to 1. Tolerance 1e-5 (of 1 for patterns, of the stream's scale):
 * the same float32 budget as the logits.
 */
START_TEST(patterns_and_streams_match_each_layer) {
  mi_config c = forward_config(_i);
  mi_model *model = tu_random_model(&c, 70 + _i);
  TU_OK(mi_model_get_config(&c, model)); /* n_kv_heads resolved */
  size_t n = N_TOKENS, L = c.n_layers, H = c.n_heads, D = c.d_model;
  mi_forward_extras extras;
  mi_forward_extras_init(&extras);
  extras.patterns_count = L * H * n * n;
  extras.resid_count = (L + 1) * n * D;
  extras.patterns = malloc(extras.patterns_count * sizeof(float));
  extras.resid = malloc(extras.resid_count * sizeof(float));
  float *logits = malloc(n * c.d_vocab * sizeof *logits);
  TU_OK(mi_model_forward(logits, c.d_vocab, model, TOKENS, n, &extras));

  size_t r, k;
  double *W_E = tu_weight(model, MI_W_E, 0, 0, &r, &k);
  double *W_pos = tu_weight(model, MI_W_POS, 0, 0, &r, &k);
  for (size_t t = 0; t < n; t++)
    for (size_t i = 0; i < D; i++)
      ck_assert_double_eq_tol(extras.resid[t * D + i],
                              W_E[TOKENS[t] * D + i] + (W_pos ? W_pos[t * D + i] : 0), 1e-6);
  double *x = malloc(n * D * sizeof *x), *next = malloc(n * D * sizeof *next);
  double *p = malloc(H * n * n * sizeof *p);
  for (size_t l = 0; l < L; l++) {
    for (size_t i = 0; i < n * D; i++)
      x[i] = extras.resid[l * n * D + i];
    reference_layer(p, next, model, &c, l, x, n);
    const float *got = extras.patterns + l * H * n * n;
    for (size_t h = 0; h < H; h++)
      for (size_t t = 0; t < n; t++) {
        double sum = 0;
        for (size_t s = 0; s < n; s++) {
          float v = got[(h * n + t) * n + s];
          if (s > t)
            ck_assert_msg(v == 0.0f, "layer %zu head %zu attends forward", l, h);
          sum += v;
          ck_assert_double_eq_tol(v, p[(h * n + t) * n + s], 1e-5);
        }
        ck_assert_double_eq_tol(sum, 1.0, 1e-5);
      }
    const float *out = extras.resid + (l + 1) * n * D;
    double scale = tu_max_abs(next, n * D);
    for (size_t i = 0; i < n * D; i++)
      ck_assert_double_eq_tol(out[i], next[i], 1e-5 * scale);
  }
  free(W_E); free(W_pos); free(x); free(next); free(p);
  free(extras.patterns); free(extras.resid); free(logits);
  mi_model_free(model);
}
END_TEST

/* A model without W_pos and n_ctx = 0 takes sequences of any length. */
START_TEST(unlimited_context_without_positions) {
  mi_config c = tu_config(1, 2, 6, 3, 7, 0, MI_PART_LN);
  mi_model *model = tu_random_model(&c, 5);
  size_t n = 40, tokens[40];
  for (size_t t = 0; t < n; t++)
    tokens[t] = (t * 5) % 7;
  float *out = malloc(n * 7 * sizeof *out);
  double *want = malloc(n * 7 * sizeof *want), *got = malloc(n * 7 * sizeof *got);
  TU_OK(mi_model_forward(out, 7, model, tokens, n, NULL));
  tu_reference_logits(want, model, tokens, n);
  for (size_t i = 0; i < n * 7; i++)
    got[i] = out[i];
  ck_assert_double_le(tu_max_abs_diff(got, want, n * 7), 1e-5 * tu_max_abs(want, n * 7));
  free(out); free(want); free(got);
  mi_model_free(model);
}
END_TEST

START_TEST(bad_inputs_are_refused) {
  mi_config c = tu_config(2, 2, 6, 3, 7, 5, ALL_PARTS);
  mi_model *model = tu_random_model(&c, 9);
  size_t tokens[6] = {1, 2, 3, 4, 5, 6}, bad_token[2] = {1, 7};
  float out[6 * 8], small[4];
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_forward(NULL, 7, model, tokens, 3, NULL));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_forward(out, 7, NULL, tokens, 3, NULL));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_forward(out, 7, model, NULL, 3, NULL));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_forward(out, 7, model, tokens, 0, NULL));
  ck_assert_msg(strstr(mi_last_error(), "n = 0") != NULL, "%s", mi_last_error());
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_forward(out, 6, model, tokens, 3, NULL));
  ck_assert_msg(strstr(mi_last_error(), "ld 6") != NULL, "%s", mi_last_error());
  TU_FAILS(MI_ERR_INDEX, mi_model_forward(out, 7, model, bad_token, 2, NULL));
  ck_assert_msg(strstr(mi_last_error(), "token 7 at position 1") != NULL, "%s",
                mi_last_error());
  TU_FAILS(MI_ERR_SHAPE, mi_model_forward(out, 7, model, tokens, 6, NULL));
  ck_assert_msg(strstr(mi_last_error(), "6 tokens exceed") != NULL, "%s", mi_last_error());

  mi_forward_extras extras;
  mi_forward_extras_init(&extras);
  extras.struct_size = 0;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_forward(out, 7, model, tokens, 3, &extras));
  mi_forward_extras_init(&extras);
  extras.patterns = small; /* needs 2 layers x 2 heads x 3 x 3 = 36 */
  extras.patterns_count = 35;
  TU_FAILS(MI_ERR_SHAPE, mi_model_forward(out, 7, model, tokens, 3, &extras));
  ck_assert_msg(strstr(mi_last_error(), "patterns holds 35") != NULL, "%s", mi_last_error());
  mi_forward_extras_init(&extras);
  extras.resid = small; /* needs 3 x 3 x 6 = 54 */
  extras.resid_count = 53;
  TU_FAILS(MI_ERR_SHAPE, mi_model_forward(out, 7, model, tokens, 3, &extras));
  ck_assert_msg(strstr(mi_last_error(), "resid holds 53") != NULL, "%s", mi_last_error());
  /* A NULL buffer is skipped whatever its count says. */
  mi_forward_extras_init(&extras);
  TU_OK(mi_model_forward(out, 7, model, tokens, 3, &extras));
  mi_model_free(model);

  mi_config mlp = tu_config(1, 2, 6, 3, 7, 5, MI_PART_MLP);
  model = tu_random_model(&mlp, 9);
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_model_forward(out, 7, model, tokens, 3, NULL));
  ck_assert_msg(strstr(mi_last_error(), "MLP") != NULL, "%s", mi_last_error());
  mi_model_free(model);
}
END_TEST

static Suite *forward_suite(void) {
  Suite *s = suite_create("forward");
  TCase *pass = tcase_create("pass");
  tcase_add_loop_test(pass, logits_match_the_reference, 0, N_CONFIGS);
  tcase_add_loop_test(pass, patterns_and_streams_match_each_layer, 0, N_CONFIGS);
  tcase_add_test(pass, unlimited_context_without_positions);
  tcase_add_test(pass, bad_inputs_are_refused);
  suite_add_tcase(s, pass);
  return s;
}

int main(void) { return tu_run_suite(forward_suite()); }
