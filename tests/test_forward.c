/*
 * The forward pass: logits against the dense double reference of testutil,
 * each layer's patterns and residual stream against a dense double layer
 * written here, and every bad input refused with its status.
 */
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const unsigned ALL_PARTS = MI_PART_POS_EMBED | MI_PART_QKV_BIAS | MI_PART_OUT_BIAS |
                                  MI_PART_UNEMBED_BIAS | MI_PART_LN | MI_PART_LN_FINAL;

static const size_t TOKENS[] = {3, 0, 6, 6, 1, 5, 2, 3, 8};
enum { N_TOKENS = sizeof TOKENS / sizeof TOKENS[0] };

static mi_config shortformer(mi_config c) {
  c.positional = MI_POSITIONAL_SHORTFORMER;
  return c;
}

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
  case 5: { /* grouped, everything, one key/value head */
    mi_config c = tu_config(3, 3, 12, 4, 15, 9, ALL_PARTS);
    c.n_kv_heads = 1;
    return c;
  }
  /* Shortformer: W_pos joins queries and keys after ln1. */
  case 6: /* without LayerNorm, with every bias (ARENA's attention-only models) */
    return shortformer(tu_config(2, 2, 8, 4, 10, 9, MI_PART_POS_EMBED | MI_PART_QKV_BIAS |
                                                     MI_PART_OUT_BIAS | MI_PART_UNEMBED_BIAS));
  case 7: /* everything: folded in the attribution test */
    return shortformer(tu_config(2, 3, 9, 3, 13, 10, ALL_PARTS));
  default: { /* grouped key/value heads, LayerNorm, no biases */
    mi_config c = shortformer(tu_config(3, 4, 8, 2, 10, 12, MI_PART_POS_EMBED | MI_PART_LN |
                                                            MI_PART_LN_FINAL));
    c.n_kv_heads = 2;
    return c;
  }
  }
}
enum { N_CONFIGS = 9 };

/*
 * Logits against tu_reference_logits of the raw weights, from the raw and
 * the folded model, with a padded leading dimension. Tolerance: float32
 * products round each term to 6e-8 relative, and folding rounds the folded
 * weights once more; sums of ≤ 16 terms through 3 layers, LayerNorms (which
 * divide by a spread of order 1) and softmax stay far below 1e-5 of the
 * logits' scale (measured: under 1e-6), while any wrong bias, scale, mask,
 * head index or positional term moves logits by O(1).
 */
START_TEST(logits_match_the_reference) {
  mi_config c = forward_config(_i);
  mi_model *model = tu_random_model(&c, 40 + _i);
  size_t V = c.d_vocab, ld = V + 3, n = N_TOKENS;
  double *want = malloc(n * V * sizeof *want), *got = malloc(n * V * sizeof *got);
  float *out = malloc(n * ld * sizeof *out);
  tu_reference_logits(want, model, TOKENS, n);
  for (int fold = 0; fold < 2; fold++) {
    if (fold)
      TU_OK(mi_model_process(model, MI_PROCESS_FOLD_LN));
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
  /* Queries and keys read LN(x) + W_pos in a shortformer model. */
  double *xqk = malloc(n * D * sizeof *xqk);
  double *W_pos = c->positional == MI_POSITIONAL_SHORTFORMER
                      ? tu_weight(model, MI_W_POS, 0, 0, &r, &k) : NULL;
  for (size_t i = 0; i < n * D; i++)
    xqk[i] = xn[i] + (W_pos ? W_pos[i] : 0.0);
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
            qa += xqk[t * D + i] * WQ[i * dh + a];
            ka += xqk[s * D + i] * WK[i * dh + a];
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
  free(xn); free(xqk); free(W_pos); free(lw); free(lb); free(bO);
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
  mi_forward_extras_init(&extras, sizeof extras);
  extras.patterns_count = L * H * n * n;
  extras.resid_count = (L + 1) * n * D;
  extras.patterns = malloc(extras.patterns_count * sizeof(float));
  extras.resid = malloc(extras.resid_count * sizeof(float));
  float *logits = malloc(n * c.d_vocab * sizeof *logits);
  TU_OK(mi_model_forward(logits, c.d_vocab, model, TOKENS, n, &extras));

  size_t r, k;
  double *W_E = tu_weight(model, MI_W_E, 0, 0, &r, &k);
  /* The stream starts with W_pos only in a standard model. */
  double *W_pos = c.positional == MI_POSITIONAL_STANDARD
                      ? tu_weight(model, MI_W_POS, 0, 0, &r, &k) : NULL;
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

/*
 * Head ablation in the forward pass (mi_forward_extras.head_scale,
 * head_bias) against the dense reference on an edited copy: scaling head
 * (l, h)'s output by s is W_O[l, h] ← s·W_O[l, h], and adding a vector v to
 * it at every position is b_O[l] ← b_O[l] + v. The head outputs, summed over
 * a layer's heads with its b_O, must be the reference's stream difference
 * across that layer, and a head scaled by 0 outputs exactly its bias.
 * Tolerance 1e-5 of the scale, as for the plain logits.
 */
static const int ABLATION_CONFIGS[] = {0, 3, 5, 7}; /* those with b_O */

START_TEST(head_ablation_matches_an_edited_copy) {
  mi_config c = forward_config(ABLATION_CONFIGS[_i]);
  mi_model *model = tu_random_model(&c, 90 + _i), *edited;
  TU_OK(mi_model_get_config(&c, model));
  size_t n = N_TOKENS, L = c.n_layers, H = c.n_heads, D = c.d_model, dh = c.d_head;
  size_t V = c.d_vocab;
  float *scale = malloc(L * H * sizeof *scale), *bias = malloc(L * H * D * sizeof *bias);
  tu_rng rng = tu_rng_seed(17 + _i);
  for (size_t i = 0; i < L * H; i++)
    scale[i] = i % 3 == 1 ? 0.0f : (float)(3 * tu_uniform(&rng) - 1);
  for (size_t i = 0; i < L * H * D; i++)
    bias[i] = i / D % 2 ? 0.0f : (float)tu_normal(&rng);
  TU_OK(mi_model_copy(&edited, model));
  float *w = malloc(dh * D * sizeof *w), *b = malloc(D * sizeof *b);
  for (size_t l = 0; l < L; l++) {
    TU_OK(mi_model_get_weight(b, D, edited, MI_B_O, l, 0));
    for (size_t h = 0; h < H; h++) {
      TU_OK(mi_model_get_weight(w, D, edited, MI_W_O, l, h));
      for (size_t i = 0; i < dh * D; i++)
        w[i] *= scale[l * H + h];
      TU_OK(mi_model_set_weight(edited, MI_W_O, l, h, MI_DTYPE_F32, w, D));
      for (size_t i = 0; i < D; i++)
        b[i] += bias[(l * H + h) * D + i];
    }
    TU_OK(mi_model_set_weight(edited, MI_B_O, l, 0, MI_DTYPE_F32, b, D));
  }
  double *want = malloc(n * V * sizeof *want), *got = malloc(n * V * sizeof *got);
  double *streams = malloc((L + 1) * n * D * sizeof *streams);
  tu_reference_forward(want, NULL, streams, edited, TOKENS, n);
  mi_forward_extras x;
  mi_forward_extras_init(&x, sizeof x);
  x.head_scale = scale, x.head_scale_count = L * H;
  x.head_bias = bias, x.head_bias_count = L * H * D;
  x.head_out_count = L * H * n * D;
  x.head_out = malloc(x.head_out_count * sizeof *x.head_out);
  float *logits = malloc(n * V * sizeof *logits);
  TU_OK(mi_model_forward(logits, V, model, TOKENS, n, &x));
  for (size_t i = 0; i < n * V; i++)
    got[i] = logits[i];
  double s = tu_max_abs(want, n * V);
  ck_assert_double_le(tu_max_abs_diff(got, want, n * V), 1e-5 * s);
  double *orig = malloc(n * V * sizeof *orig);
  tu_reference_logits(orig, model, TOKENS, n);
  ck_assert_double_gt(tu_max_abs_diff(orig, want, n * V), 1e-2 * s); /* it did change */
  for (size_t l = 0; l < L; l++) {
    double *bO = tu_weight(model, MI_B_O, l, 0, &(size_t){0}, &(size_t){0});
    double ds = tu_max_abs(streams + (l + 1) * n * D, n * D);
    for (size_t t = 0; t < n; t++)
      for (size_t i = 0; i < D; i++) {
        double sum = bO[i];
        for (size_t h = 0; h < H; h++)
          sum += x.head_out[((l * H + h) * n + t) * D + i];
        double step = streams[((l + 1) * n + t) * D + i] - streams[(l * n + t) * D + i];
        ck_assert_double_eq_tol(sum, step, 1e-5 * ds);
      }
    for (size_t h = 0; h < H; h++)
      if (scale[l * H + h] == 0.0f)
        for (size_t t = 0; t < n; t++)
          ck_assert_mem_eq(x.head_out + ((l * H + h) * n + t) * D, bias + (l * H + h) * D,
                           D * sizeof(float));
    free(bO);
  }
  /* Buffers are checked against their shapes; scales must be finite. */
  x.head_scale_count = L * H - 1;
  TU_FAILS(MI_ERR_SHAPE, mi_model_forward(logits, V, model, TOKENS, n, &x));
  ck_assert_msg(strstr(mi_last_error(), "head_scale") != NULL, "%s", mi_last_error());
  x.head_scale_count = L * H;
  x.head_bias_count = L * H * D - 1;
  TU_FAILS(MI_ERR_SHAPE, mi_model_forward(logits, V, model, TOKENS, n, &x));
  x.head_bias_count = L * H * D;
  x.head_out_count = L * H * n * D - 1;
  TU_FAILS(MI_ERR_SHAPE, mi_model_forward(logits, V, model, TOKENS, n, &x));
  x.head_out_count = L * H * n * D;
  scale[L * H - 1] = NAN;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_forward(logits, V, model, TOKENS, n, &x));
  free(scale); free(bias); free(w); free(b); free(want); free(got); free(orig);
  free(streams); free(x.head_out); free(logits);
  mi_model_free(edited);
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
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_forward(out, SIZE_MAX / 2, model, tokens, 3, NULL));
  ck_assert_msg(strstr(mi_last_error(), "overflow") != NULL, "%s", mi_last_error());
  TU_FAILS(MI_ERR_INDEX, mi_model_forward(out, 7, model, bad_token, 2, NULL));
  ck_assert_msg(strstr(mi_last_error(), "token 7 at position 1") != NULL, "%s",
                mi_last_error());
  TU_FAILS(MI_ERR_SHAPE, mi_model_forward(out, 7, model, tokens, 6, NULL));
  ck_assert_msg(strstr(mi_last_error(), "6 tokens exceed") != NULL, "%s", mi_last_error());

  mi_forward_extras extras;
  mi_forward_extras_init(&extras, sizeof extras);
  extras.struct_size = 0;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_forward(out, 7, model, tokens, 3, &extras));
  mi_forward_extras_init(&extras, sizeof extras);
  extras.patterns = small; /* needs 2 layers x 2 heads x 3 x 3 = 36 */
  extras.patterns_count = 35;
  TU_FAILS(MI_ERR_SHAPE, mi_model_forward(out, 7, model, tokens, 3, &extras));
  ck_assert_msg(strstr(mi_last_error(), "patterns holds 35") != NULL, "%s", mi_last_error());
  mi_forward_extras_init(&extras, sizeof extras);
  extras.resid = small; /* needs 3 x 3 x 6 = 54 */
  extras.resid_count = 53;
  TU_FAILS(MI_ERR_SHAPE, mi_model_forward(out, 7, model, tokens, 3, &extras));
  ck_assert_msg(strstr(mi_last_error(), "resid holds 53") != NULL, "%s", mi_last_error());
  /* A NULL buffer is skipped whatever its count says. */
  mi_forward_extras_init(&extras, sizeof extras);
  TU_OK(mi_model_forward(out, 7, model, tokens, 3, &extras));
  mi_model_free(model);

  mi_config mlp = tu_config(1, 2, 6, 3, 7, 5, MI_PART_MLP);
  model = tu_random_model(&mlp, 9);
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_model_forward(out, 7, model, tokens, 3, NULL));
  ck_assert_msg(strstr(mi_last_error(), "MLP") != NULL, "%s", mi_last_error());
  mi_model_free(model);
}
END_TEST

/* ---- attribution ------------------------------------------------------------ */

/*
 * What the attribution tests share: the model's weights as doubles, the
 * forward pass's patterns and LayerNorm scales (recomputed here in double
 * from the library's residual streams), and sums over the parts seen.
 */
typedef struct attribution_check {
  const mi_model *model;
  mi_config c;
  size_t n;
  double *patterns;       /* L × H × n × n */
  double *scale;          /* (L + 1) × n */
  double *x0;             /* n × D: W_E[token] (+ W_pos in a standard model) */
  double *sum;            /* n_positions × V: sum of the parts' logits */
  double *sum_token, *sum_diff;
  const mi_attribution_options *opt;
  size_t count, by_source[4], by_order[8];
  double worst;           /* largest |part − dense part| */
  size_t stop_after;      /* 0: never stop */
} attribution_check;

/* v (n × D) read through frozen LayerNorm `which` (layer l, or the final one). */
static void frozen_read(double *out, const double *v, const attribution_check *a, size_t l,
                        bool final) {
  size_t D = a->c.d_model, r, k;
  bool has_ln = final ? (a->c.parts & MI_PART_LN_FINAL) : (a->c.parts & MI_PART_LN);
  double *w = has_ln ? tu_weight(a->model, final ? MI_LNF_W : MI_LN1_W, final ? 0 : l, 0,
                                 &r, &k) : NULL;
  for (size_t t = 0; t < a->n; t++) {
    double mean = 0;
    for (size_t i = 0; w && i < D; i++)
      mean += v[t * D + i] / D;
    for (size_t i = 0; i < D; i++)
      out[t * D + i] = w ? (v[t * D + i] - mean) * a->scale[l * a->n + t] * w[i] : v[t * D + i];
  }
  free(w);
}

/* v ← what head (l, h) writes when it reads v, patterns frozen. */
static void dense_head(double *v, const attribution_check *a, size_t l, size_t h) {
  size_t n = a->n, D = a->c.d_model, dh = a->c.d_head, r, k;
  size_t g = h / (a->c.n_heads / a->c.n_kv_heads);
  double *u = malloc(n * D * sizeof *u), *val = calloc(n * dh, sizeof *val);
  frozen_read(u, v, a, l, false);
  double *WV = tu_weight(a->model, MI_W_V, l, g, &r, &k);
  double *WO = tu_weight(a->model, MI_W_O, l, h, &r, &k);
  for (size_t s = 0; s < n; s++)
    for (size_t b = 0; b < dh; b++)
      for (size_t i = 0; i < D; i++)
        val[s * dh + b] += u[s * D + i] * WV[i * dh + b];
  const double *A = a->patterns + (l * a->c.n_heads + h) * n * n;
  for (size_t t = 0; t < n; t++)
    for (size_t j = 0; j < D; j++) {
      double sum = 0;
      for (size_t s = 0; s < n; s++)
        for (size_t b = 0; b < dh; b++)
          sum += A[t * n + s] * val[s * dh + b] * WO[b * D + j];
      v[t * D + j] = sum;
    }
  free(u); free(val); free(WV); free(WO);
}

/* The part's logits (n × V) computed densely from its label alone. */
static void dense_part(double *logits, const attribution_check *a,
                       const mi_attribution_part *part) {
  size_t n = a->n, D = a->c.d_model, V = a->c.d_vocab, dh = a->c.d_head, r, k;
  double *v = calloc(n * D, sizeof *v), *y = malloc(n * D * sizeof *y);
  double *WU = tu_weight(a->model, MI_W_U, 0, 0, &r, &k);
  double *bU = tu_weight(a->model, MI_B_U, 0, 0, &r, &k);
  size_t first = 0;
  if (part->source == MI_SOURCE_EMBED) {
    memcpy(v, a->x0, n * D * sizeof *v);
  } else if (part->source == MI_SOURCE_OUT_BIAS) {
    double *bO = tu_weight(a->model, MI_B_O, part->source_layer, 0, &r, &k);
    for (size_t t = 0; t < n; t++)
      memcpy(v + t * D, bO, D * sizeof *v);
    free(bO);
  } else if (part->source == MI_SOURCE_VALUE_BIAS) {
    size_t l = part->layers[0], h = part->heads[0], g = h / (a->c.n_heads / a->c.n_kv_heads);
    ck_assert_uint_eq(l, part->source_layer);
    double *WV = tu_weight(a->model, MI_W_V, l, g, &r, &k);
    double *WO = tu_weight(a->model, MI_W_O, l, h, &r, &k);
    double *bV = tu_weight(a->model, MI_B_V, l, g, &r, &k);
    double *lb = tu_weight(a->model, MI_LN1_B, l, 0, &r, &k);
    for (size_t b = 0; b < dh; b++) {
      double c = bV ? bV[b] : 0;
      for (size_t i = 0; lb && i < D; i++)
        c += lb[i] * WV[i * dh + b];
      for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < D; j++)
          v[t * D + j] += c * WO[b * D + j];
    }
    free(WV); free(WO); free(bV); free(lb);
    first = 1;
  }
  for (size_t i = first; i < part->order; i++) {
    ck_assert(i == 0 || part->layers[i] > part->layers[i - 1]);
    dense_head(v, a, part->layers[i], part->heads[i]);
  }
  if (part->source == MI_SOURCE_UNEMBED_BIAS) {
    double *fb = tu_weight(a->model, MI_LNF_B, 0, 0, &r, &k);
    for (size_t t = 0; t < n; t++)
      for (size_t i = 0; i < D; i++)
        y[t * D + i] = fb ? fb[i] : 0;
    free(fb);
  } else {
    frozen_read(y, v, a, a->c.n_layers, true);
  }
  for (size_t t = 0; t < n; t++)
    for (size_t j = 0; j < V; j++) {
      double sum = part->source == MI_SOURCE_UNEMBED_BIAS && bU ? bU[j] : 0;
      for (size_t i = 0; i < D; i++)
        sum += y[t * D + i] * WU[i * V + j];
      logits[t * V + j] = sum;
    }
  free(v); free(y); free(WU); free(bU);
}

/* Checks each part against its dense value and adds it to the sums. */
static int check_part(const mi_attribution_part *part, void *user) {
  attribution_check *a = user;
  size_t V = a->c.d_vocab, P = part->n_positions;
  double *dense = malloc(a->n * V * sizeof *dense);
  dense_part(dense, a, part);
  for (size_t i = 0; i < P; i++) {
    size_t t = part->positions ? part->positions[i] : i;
    if (part->logits)
      for (size_t j = 0; j < V; j++) {
        a->worst = fmax(a->worst, fabs(part->logits[i * V + j] - dense[t * V + j]));
        a->sum[i * V + j] += part->logits[i * V + j];
      }
    if (part->token_logit) {
      size_t tok = a->opt->logit_tokens[i];
      a->worst = fmax(a->worst, fabs(part->token_logit[i] - dense[t * V + tok]));
      a->sum_token[i] += part->token_logit[i];
    }
    if (part->logit_diff) {
      size_t tok = a->opt->logit_tokens[i], other = a->opt->diff_tokens[i];
      double want = dense[t * V + tok] - dense[t * V + other];
      a->worst = fmax(a->worst, fabs(part->logit_diff[i] - want));
      a->sum_diff[i] += part->logit_diff[i];
    }
  }
  free(dense);
  a->count++;
  a->by_source[part->source]++;
  a->by_order[part->order]++;
  return a->stop_after != 0 && a->count == a->stop_after;
}

/* Paths of up to k heads starting at layer `from`, the empty one included. */
static size_t count_paths(const mi_config *c, size_t from, size_t k) {
  size_t total = 1;
  for (size_t l = from; k > 0 && l < c->n_layers; l++)
    total += c->n_heads * count_paths(c, l + 1, k - 1);
  return total;
}

/* Runs the forward pass and fills what the checks need; logits n × V too. */
static attribution_check setup_check(const mi_model *model, const size_t *tokens, size_t n,
                                     float *logits) {
  attribution_check a = {.model = model, .n = n};
  mi_config_init(&a.c, sizeof a.c);
  TU_OK(mi_model_get_config(&a.c, model));
  size_t L = a.c.n_layers, H = a.c.n_heads, D = a.c.d_model, V = a.c.d_vocab;
  mi_forward_extras extras;
  mi_forward_extras_init(&extras, sizeof extras);
  extras.patterns_count = L * H * n * n;
  extras.resid_count = (L + 1) * n * D;
  extras.patterns = malloc(extras.patterns_count * sizeof(float));
  extras.resid = malloc(extras.resid_count * sizeof(float));
  TU_OK(mi_model_forward(logits, V, model, tokens, n, &extras));
  a.patterns = malloc(extras.patterns_count * sizeof(double));
  for (size_t i = 0; i < extras.patterns_count; i++)
    a.patterns[i] = extras.patterns[i];
  a.scale = malloc((L + 1) * n * sizeof(double));
  for (size_t l = 0; l <= L; l++)
    for (size_t t = 0; t < n; t++) {
      const float *x = extras.resid + (l * n + t) * D;
      double mean = 0, var = 0;
      for (size_t i = 0; i < D; i++)
        mean += x[i] / D;
      for (size_t i = 0; i < D; i++)
        var += (x[i] - mean) * (x[i] - mean) / D;
      a.scale[l * n + t] = 1.0 / sqrt(var + a.c.ln_eps);
    }
  /* The embedding source from the weights: W_pos is in it only in a standard model. */
  size_t r, k;
  double *W_E = tu_weight(model, MI_W_E, 0, 0, &r, &k);
  double *W_pos = a.c.positional == MI_POSITIONAL_STANDARD
                      ? tu_weight(model, MI_W_POS, 0, 0, &r, &k) : NULL;
  a.x0 = malloc(n * D * sizeof(double));
  for (size_t t = 0; t < n; t++)
    for (size_t i = 0; i < D; i++)
      a.x0[t * D + i] = W_E[tokens[t] * D + i] + (W_pos ? W_pos[t * D + i] : 0.0);
  free(W_E);
  free(W_pos);
  a.sum = calloc(n * V, sizeof(double));
  a.sum_token = calloc(n, sizeof(double));
  a.sum_diff = calloc(n, sizeof(double));
  free(extras.patterns);
  free(extras.resid);
  return a;
}

static void free_check(attribution_check *a) {
  free(a->patterns); free(a->scale); free(a->x0); free(a->sum); free(a->sum_token);
  free(a->sum_diff);
}

/*
 * Every part equals its dense double value computed from its label alone
 * (so a mislabelled or wrong part fails), and with all orders the parts sum
 * to the forward logits. Tolerances: each part is a few float32 products of
 * the same size as the forward pass's, so 1e-5 of the logits' scale as
 * there; the sum carries the rounding of every part (up to ~150), and the
 * issue's bound 1e-4 of the scale holds with room (measured: a part within
 * 1.1e-7 of the scale, the sum within 2.6e-7).
 */
START_TEST(parts_sum_to_the_logits) {
  mi_config c = forward_config(_i);
  mi_model *model = tu_random_model(&c, 140 + _i);
  if (_i % 2)
    TU_OK(mi_model_process(model, MI_PROCESS_FOLD_LN));
  size_t n = N_TOKENS, V = c.d_vocab;
  float *logits = malloc(n * V * sizeof *logits);
  attribution_check a = setup_check(model, TOKENS, n, logits);
  mi_attribution_options opt;
  mi_attribution_options_init(&opt, sizeof opt);
  opt.flags = MI_ATTRIBUTE_FULL_LOGITS;
  a.opt = &opt;
  size_t count;
  TU_OK(mi_model_attribute(&count, model, TOKENS, n, &opt, check_part, &a));
  ck_assert_uint_eq(count, a.count);
  /* The embedding has one path a subset of layers with one head each. */
  size_t paths = 1;
  for (size_t l = 0; l < a.c.n_layers; l++)
    paths *= 1 + a.c.n_heads;
  ck_assert_uint_eq(a.by_source[MI_SOURCE_EMBED], paths);
  double scale = 0, diff = 0;
  for (size_t i = 0; i < n * V; i++) {
    scale = fmax(scale, fabs(logits[i]));
    diff = fmax(diff, fabs(a.sum[i] - logits[i]));
  }
  ck_assert_msg(a.worst <= 1e-5 * scale, "config %d: a part is off by %g (scale %g)", _i,
                a.worst, scale);
  ck_assert_msg(diff <= 1e-4 * scale, "config %d: parts sum off by %g (scale %g)", _i, diff,
                scale);
  free_check(&a);
  free(logits);
  mi_model_free(model);
}
END_TEST

/*
 * Chosen positions, tokens and a logit difference, with paths up to order 1
 * and up to order L: the counts follow the paths' combinatorics, and at full
 * order the token logits and differences sum to the forward pass's.
 */
START_TEST(direct_logit_attribution_at_chosen_positions) {
  mi_config c = forward_config(5);
  mi_model *model = tu_random_model(&c, 77);
  TU_OK(mi_model_process(model, MI_PROCESS_TRANSFORMERLENS));
  size_t n = N_TOKENS, V = c.d_vocab;
  float *logits = malloc(n * V * sizeof *logits);
  size_t positions[3] = {6, 2, 6}, answer[3] = {4, 14, 0}, other[3] = {9, 1, 4};
  for (size_t k = 0; k <= 3; k += 2) {
    attribution_check a = setup_check(model, TOKENS, n, logits);
    mi_attribution_options opt;
    mi_attribution_options_init(&opt, sizeof opt);
    opt.max_order = k;
    opt.positions = positions;
    opt.n_positions = 3;
    opt.logit_tokens = answer;
    opt.diff_tokens = other;
    a.opt = &opt;
    TU_OK(mi_model_attribute(NULL, model, TOKENS, n, &opt, check_part, &a));
    ck_assert_msg(a.worst <= 1e-5 * tu_max_abs(a.sum_token, 3) + 1e-6, "part off by %g",
                  a.worst);
    ck_assert_uint_eq(a.by_source[MI_SOURCE_EMBED], count_paths(&a.c, 0, k));
    size_t value_bias = 0, out_bias = 0;
    for (size_t l = 0; l < a.c.n_layers; l++) {
      value_bias += k ? a.c.n_heads * count_paths(&a.c, l + 1, k - 1) : 0;
      out_bias += count_paths(&a.c, l + 1, k);
    }
    ck_assert_uint_eq(a.by_source[MI_SOURCE_VALUE_BIAS], value_bias);
    ck_assert_uint_eq(a.by_source[MI_SOURCE_OUT_BIAS], out_bias);
    ck_assert_uint_eq(a.by_source[MI_SOURCE_UNEMBED_BIAS], 1);
    ck_assert_uint_eq(a.by_order[0], 1 + a.c.n_layers + 1);
    if (k == 3) {
      double scale = 0;
      for (size_t i = 0; i < n * V; i++)
        scale = fmax(scale, fabs(logits[i]));
      for (size_t i = 0; i < 3; i++) {
        float want = logits[positions[i] * V + answer[i]];
        float want_diff = want - logits[positions[i] * V + other[i]];
        ck_assert_double_eq_tol(a.sum_token[i], want, 1e-4 * scale);
        ck_assert_double_eq_tol(a.sum_diff[i], want_diff, 1e-4 * scale);
      }
    }
    free_check(&a);
  }
  free(logits);
  mi_model_free(model);
}
END_TEST

/* Records each part's token logit, in order, for comparing two walks. */
typedef struct part_log {
  double values[512];
  size_t count;
} part_log;

static int log_part(const mi_attribution_part *part, void *user) {
  part_log *log = user;
  ck_assert_uint_lt(log->count, 512);
  log->values[log->count++] = part->token_logit[0];
  return 0;
}

/*
 * Folding LayerNorm moves ln1.b into b_V and ln_final's scale and shift into
 * W_U and b_U; the frozen-LayerNorm parts must not change, part by part
 * (tolerance: folding rounds weights to float32 once, as in test_model).
 */
START_TEST(parts_do_not_depend_on_folding) {
  mi_config c = forward_config(5);
  mi_model *model = tu_random_model(&c, 21);
  size_t answer[2] = {3, 11}, positions[2] = {8, 4};
  mi_attribution_options opt;
  mi_attribution_options_init(&opt, sizeof opt);
  opt.positions = positions;
  opt.n_positions = 2;
  opt.logit_tokens = answer;
  part_log *raw = calloc(1, sizeof *raw), *folded = calloc(1, sizeof *folded);
  TU_OK(mi_model_attribute(NULL, model, TOKENS, N_TOKENS, &opt, log_part, raw));
  TU_OK(mi_model_process(model, MI_PROCESS_FOLD_LN));
  TU_OK(mi_model_attribute(NULL, model, TOKENS, N_TOKENS, &opt, log_part, folded));
  ck_assert_uint_eq(raw->count, folded->count);
  double scale = tu_max_abs(raw->values, raw->count);
  for (size_t i = 0; i < raw->count; i++)
    ck_assert_msg(fabs(raw->values[i] - folded->values[i]) <= 1e-5 * scale,
                  "part %zu: %g raw, %g folded", i, raw->values[i], folded->values[i]);
  free(raw);
  free(folded);
  mi_model_free(model);
}
END_TEST

/* A callback that returns non-zero stops the walk; the call still succeeds. */
START_TEST(callback_stops_the_walk) {
  mi_config c = forward_config(2);
  mi_model *model = tu_random_model(&c, 3);
  float *logits = malloc(N_TOKENS * c.d_vocab * sizeof *logits);
  attribution_check a = setup_check(model, TOKENS, N_TOKENS, logits);
  mi_attribution_options opt;
  mi_attribution_options_init(&opt, sizeof opt);
  opt.flags = MI_ATTRIBUTE_FULL_LOGITS;
  a.opt = &opt;
  a.stop_after = 5;
  size_t count = 0;
  TU_OK(mi_model_attribute(&count, model, TOKENS, N_TOKENS, &opt, check_part, &a));
  ck_assert_uint_eq(count, 5);
  ck_assert_uint_eq(a.count, 5);
  free_check(&a);
  free(logits);
  mi_model_free(model);
}
END_TEST

static int never_called(const mi_attribution_part *part, void *user) {
  (void)part;
  (void)user;
  ck_abort_msg("the callback ran for a refused call");
  return 1;
}

START_TEST(bad_attribution_inputs_are_refused) {
  mi_config c = tu_config(2, 2, 6, 3, 7, 5, ALL_PARTS);
  mi_model *model = tu_random_model(&c, 9);
  size_t tokens[6] = {1, 2, 3, 4, 5, 6}, bad_token[2] = {1, 7};
  size_t pos[2] = {0, 3}, tok[2] = {1, 2}, far[2] = {1, 7};
  mi_attribution_options opt;
  mi_attribution_options_init(&opt, sizeof opt);
  opt.flags = MI_ATTRIBUTE_FULL_LOGITS;
  size_t count = 99;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_attribute(&count, NULL, tokens, 3, &opt, never_called, NULL));
  ck_assert_uint_eq(count, 0);
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_attribute(NULL, model, NULL, 3, &opt, never_called, NULL));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_attribute(NULL, model, tokens, 3, NULL, never_called, NULL));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_attribute(NULL, model, tokens, 3, &opt, NULL, NULL));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_attribute(NULL, model, tokens, 0, &opt, never_called, NULL));
  TU_FAILS(MI_ERR_INDEX, mi_model_attribute(NULL, model, bad_token, 2, &opt, never_called, NULL));
  TU_FAILS(MI_ERR_SHAPE, mi_model_attribute(NULL, model, tokens, 6, &opt, never_called, NULL));
  mi_attribution_options bad = opt;
  bad.struct_size = 0;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_attribute(NULL, model, tokens, 3, &bad, never_called, NULL));
  bad = opt;
  bad.flags = 1u << 7;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_attribute(NULL, model, tokens, 3, &bad, never_called, NULL));
  bad = opt;
  bad.flags = 0;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_attribute(NULL, model, tokens, 3, &bad, never_called, NULL));
  ck_assert_msg(strstr(mi_last_error(), "ask for nothing") != NULL, "%s", mi_last_error());
  bad = opt;
  bad.positions = pos;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_attribute(NULL, model, tokens, 3, &bad, never_called, NULL));
  bad.n_positions = 2;
  TU_FAILS(MI_ERR_INDEX, mi_model_attribute(NULL, model, tokens, 3, &bad, never_called, NULL));
  ck_assert_msg(strstr(mi_last_error(), "positions[1] = 3") != NULL, "%s", mi_last_error());
  bad = opt;
  bad.diff_tokens = tok;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_attribute(NULL, model, tokens, 3, &bad, never_called, NULL));
  bad.positions = pos;
  bad.n_positions = 2;
  bad.logit_tokens = tok;
  bad.diff_tokens = far;
  TU_FAILS(MI_ERR_INDEX, mi_model_attribute(NULL, model, tokens, 4, &bad, never_called, NULL));
  ck_assert_msg(strstr(mi_last_error(), "diff_tokens[1] = 7") != NULL, "%s", mi_last_error());
  mi_model_free(model);
  mi_config mlp = tu_config(1, 2, 6, 3, 7, 5, MI_PART_MLP);
  model = tu_random_model(&mlp, 9);
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_model_attribute(NULL, model, tokens, 3, &opt, never_called, NULL));
  mi_model_free(model);
}
END_TEST

static Suite *forward_suite(void) {
  Suite *s = suite_create("forward");
  TCase *pass = tcase_create("pass");
  tcase_add_loop_test(pass, logits_match_the_reference, 0, N_CONFIGS);
  tcase_add_loop_test(pass, patterns_and_streams_match_each_layer, 0, N_CONFIGS);
  tcase_add_loop_test(pass, head_ablation_matches_an_edited_copy, 0,
                      sizeof ABLATION_CONFIGS / sizeof ABLATION_CONFIGS[0]);
  tcase_add_test(pass, unlimited_context_without_positions);
  tcase_add_test(pass, bad_inputs_are_refused);
  suite_add_tcase(s, pass);
  TCase *attribution = tcase_create("attribution");
  tcase_add_loop_test(attribution, parts_sum_to_the_logits, 0, N_CONFIGS);
  tcase_add_test(attribution, direct_logit_attribution_at_chosen_positions);
  tcase_add_test(attribution, parts_do_not_depend_on_folding);
  tcase_add_test(attribution, callback_stops_the_walk);
  tcase_add_test(attribution, bad_attribution_inputs_are_refused);
  suite_add_tcase(s, attribution);
  return s;
}

int main(void) { return tu_run_suite(forward_suite()); }
