/*
 * Shortformer models (TransformerLens's positional_embedding_type
 * "shortformer"): W_pos joins each layer's query and key inputs after ln1
 * and never the residual stream. Folded and TransformerLens-processed
 * models against the dense double reference of the raw weights, the QK
 * circuits against dense products of the weights positions actually meet,
 * and the head report's positional and behavioural scores against values
 * recomputed here. (The forward suite runs its layer-by-layer and
 * attribution checks on shortformer models too.)
 */
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const unsigned ALL_PARTS = MI_PART_POS_EMBED | MI_PART_QKV_BIAS | MI_PART_OUT_BIAS |
                                  MI_PART_UNEMBED_BIAS | MI_PART_LN | MI_PART_LN_FINAL;

static const size_t TOKENS[] = {4, 1, 7, 7, 0, 3, 9, 4, 2, 1};
enum { N_TOKENS = sizeof TOKENS / sizeof TOKENS[0] };

/* Shortformer models: LayerNorm and biases, grouped heads, no LayerNorm. */
static mi_config shortformer_config(int i) {
  mi_config c;
  switch (i) {
  case 0: c = tu_config(2, 3, 9, 3, 13, 12, ALL_PARTS); break;
  case 1: /* grouped: four query heads read two key/value heads; no biases */
    c = tu_config(3, 4, 8, 2, 11, 10, MI_PART_POS_EMBED | MI_PART_LN | MI_PART_LN_FINAL);
    c.n_kv_heads = 2;
    break;
  case 2: /* grouped, one key/value head, every part */
    c = tu_config(2, 2, 10, 4, 12, 11, ALL_PARTS);
    c.n_kv_heads = 1;
    break;
  default: /* no LayerNorm, every bias: ARENA's attention-only models */
    c = tu_config(2, 2, 8, 4, 10, 10, ALL_PARTS & ~(MI_PART_LN | MI_PART_LN_FINAL));
    break;
  }
  c.positional = MI_POSITIONAL_SHORTFORMER;
  return c;
}
enum { N_CONFIGS = 4 };

/* The processing steps each test runs a model through. */
static const unsigned STEPS[] = {0, MI_PROCESS_FOLD_LN, MI_PROCESS_TRANSFORMERLENS};
enum { N_STEPS = 3 };

/* Whether a model of shape c can take `steps` (centering needs both LayerNorms). */
static bool can_process(const mi_config *c, unsigned steps) {
  const unsigned both = MI_PART_LN | MI_PART_LN_FINAL;
  return !(steps & MI_PROCESS_CENTER_WRITING) || (c->parts & both) == both;
}

static mi_config config_of(const mi_model *model) {
  mi_config c;
  mi_config_init(&c, sizeof c);
  TU_OK(mi_model_get_config(&c, model));
  return c;
}

/* Subtracts each row's mean: logits up to the per-position constant softmax ignores. */
static void center_rows(double *x, size_t n, size_t V) {
  for (size_t t = 0; t < n; t++) {
    double mean = 0;
    for (size_t v = 0; v < V; v++)
      mean += x[t * V + v] / (double)V;
    for (size_t v = 0; v < V; v++)
      x[t * V + v] -= mean;
  }
}

static double *to_doubles(const float *f, size_t count) {
  double *d = malloc(count * sizeof *d);
  for (size_t i = 0; i < count; i++)
    d[i] = f[i];
  return d;
}

/*
 * A raw model and the same weights folded or TransformerLens-processed must
 * compute the raw model's function, checked against the dense reference of
 * the raw weights: patterns, logits (row-centred when the unembedding was
 * centred, which shifts each row by a constant), and the residual streams
 * while the writing weights are not centred. Without the positional terms
 * kept from before folding, W_pos would meet diag(ln1.w)·W_Q and a centred
 * W_Q and the patterns would move by O(0.1). W_pos itself is not centred.
 * Tolerance 1e-5 of the scale (1 for patterns): as the forward suite's, the
 * folded weights rounded to float32 once more (measured: below 1e-6).
 */
START_TEST(processed_models_compute_the_raw_function) {
  mi_config c = shortformer_config(_i);
  size_t n = N_TOKENS, L = c.n_layers, H = c.n_heads, D = c.d_model, V = c.d_vocab;
  mi_model *raw = tu_random_model(&c, 300 + _i);
  ck_assert_int_eq(config_of(raw).positional, MI_POSITIONAL_SHORTFORMER);
  double *want = malloc(n * V * sizeof *want), *want_p = malloc(L * H * n * n * sizeof *want_p);
  double *want_r = malloc((L + 1) * n * D * sizeof *want_r);
  tu_reference_forward(want, want_p, want_r, raw, TOKENS, n);
  double scale = tu_max_abs(want, n * V), r_scale = tu_max_abs(want_r, (L + 1) * n * D);
  center_rows(want, n, V);
  size_t rows, cols;
  double *W_pos = tu_weight(raw, MI_W_POS, 0, 0, &rows, &cols);
  mi_forward_extras x;
  mi_forward_extras_init(&x, sizeof x);
  x.patterns_count = L * H * n * n;
  x.resid_count = (L + 1) * n * D;
  x.patterns = malloc(x.patterns_count * sizeof(float));
  x.resid = malloc(x.resid_count * sizeof(float));
  float *out = malloc(n * V * sizeof *out);
  for (int s = 0; s < N_STEPS; s++) {
    if (!can_process(&c, STEPS[s]))
      continue;
    mi_model *model = tu_random_model(&c, 300 + _i);
    TU_OK(mi_model_process(model, STEPS[s]));
    TU_OK(mi_model_forward(out, V, model, TOKENS, n, &x));
    double *got = to_doubles(out, n * V), *got_p = to_doubles(x.patterns, x.patterns_count);
    double *got_r = to_doubles(x.resid, x.resid_count);
    center_rows(got, n, V);
    double dp = tu_max_abs_diff(got_p, want_p, x.patterns_count);
    double dl = tu_max_abs_diff(got, want, n * V);
    ck_assert_msg(dp <= 1e-5, "config %d steps 0x%x: patterns off by %g", _i, STEPS[s], dp);
    ck_assert_msg(dl <= 1e-5 * scale, "config %d steps 0x%x: logits off by %g (scale %g)", _i,
                  STEPS[s], dl, scale);
    if (!(STEPS[s] & MI_PROCESS_CENTER_WRITING)) {
      double dr = tu_max_abs_diff(got_r, want_r, x.resid_count);
      ck_assert_msg(dr <= 1e-5 * r_scale, "config %d steps 0x%x: streams off by %g", _i,
                    STEPS[s], dr);
    }
    double *pos = tu_weight(model, MI_W_POS, 0, 0, &rows, &cols);
    ck_assert_msg(tu_max_abs_diff(pos, W_pos, rows * cols) == 0.0,
                  "steps 0x%x changed a shortformer W_pos", STEPS[s]);
    free(pos); free(got); free(got_p); free(got_r);
    mi_model_free(model);
  }
  free(want); free(want_p); free(want_r); free(W_pos);
  free(x.patterns); free(x.resid); free(out);
  mi_model_free(raw);
}
END_TEST

/* rows × d_head: E (rows × D) · W (+ bias), in double. */
static double *side(const double *E, size_t rows, const double *W, const double *bias,
                    size_t D, size_t dh) {
  double *out = malloc(rows * dh * sizeof *out);
  tu_matmul(out, E, W, bias, rows, D, dh);
  return out;
}

/*
 * Each QK circuit of a shortformer head against dense double products: a
 * positional side is W_pos times W_Q / W_K of the raw weights (what the
 * position meets before any folding) with no bias; a token side is W_E
 * times the model's own (token-side) W_Q / W_K, plus b_Q / b_K under
 * MI_QK_BIAS; MI_QK_SCALE multiplies by 1/√d_head. Raw, folded and
 * processed models; every head, grouped ones included. Tolerance: float32
 * factors of d_model-long sums, and the rank-d_head product, relative
 * 6e-8·√d_model each: 1e-5 of the circuit's largest entry.
 */
START_TEST(qk_circuits_use_the_weights_positions_meet) {
  mi_config c = shortformer_config(_i);
  mi_model *raw = tu_random_model(&c, 400 + _i);
  c = config_of(raw);
  size_t D = c.d_model, dh = c.d_head, V = c.d_vocab, P = c.n_ctx, r, k;
  double *W_pos = tu_weight(raw, MI_W_POS, 0, 0, &r, &k);
  const unsigned flags[] = {0, MI_QK_BIAS, MI_QK_BIAS | MI_QK_SCALE};
  for (int s = 0; s < N_STEPS; s++) {
    if (!can_process(&c, STEPS[s]))
      continue;
    mi_model *model = tu_random_model(&c, 400 + _i);
    TU_OK(mi_model_process(model, STEPS[s]));
    double *W_E = tu_weight(model, MI_W_E, 0, 0, &r, &k);
    for (size_t l = 0; l < c.n_layers; l++)
      for (size_t h = 0; h < c.n_heads; h++) {
        size_t g = h / (c.n_heads / c.n_kv_heads);
        double *rQ = tu_weight(raw, MI_W_Q, l, h, &r, &k), *rK = tu_weight(raw, MI_W_K, l, g, &r, &k);
        double *WQ = tu_weight(model, MI_W_Q, l, h, &r, &k);
        double *WK = tu_weight(model, MI_W_K, l, g, &r, &k);
        double *bQ = tu_weight(model, MI_B_Q, l, h, &r, &k);
        double *bK = tu_weight(model, MI_B_K, l, g, &r, &k);
        for (size_t f = 0; f < sizeof flags / sizeof flags[0]; f++) {
          bool bias = flags[f] & MI_QK_BIAS;
          double sc = (flags[f] & MI_QK_SCALE) ? 1.0 / sqrt((double)dh) : 1.0;
          double *pq = side(W_pos, P, rQ, NULL, D, dh), *pk = side(W_pos, P, rK, NULL, D, dh);
          double *tq = side(W_E, V, WQ, bias ? bQ : NULL, D, dh);
          double *tk = side(W_E, V, WK, bias ? bK : NULL, D, dh);
          for (int query = 0; query < 2; query++)
            for (int key = 0; key < 2; key++) {
              const double *A = query ? pq : tq, *B = key ? pk : tk;
              size_t n = query ? P : V, m = key ? P : V;
              double *Bt = tu_transposed(B, m, dh), *want = tu_mul(A, Bt, n, dh, m);
              for (size_t i = 0; i < n * m; i++)
                want[i] *= sc;
              mi_circuit *circuit;
              TU_OK(mi_circuit_qk(&circuit, model, l, h, query ? MI_EMBED_POS : MI_EMBED_TOKEN,
                                  key ? MI_EMBED_POS : MI_EMBED_TOKEN, flags[f]));
              float *dense = malloc(n * m * sizeof *dense);
              TU_OK(mi_circuit_dense(dense, m, circuit));
              double *got = to_doubles(dense, n * m);
              double diff = tu_max_abs_diff(got, want, n * m), top = tu_max_abs(want, n * m);
              ck_assert_msg(diff <= 1e-5 * top,
                            "config %d steps 0x%x (%zu,%zu) %s x %s flags %u: off by %g of %g",
                            _i, STEPS[s], l, h, query ? "pos" : "token", key ? "pos" : "token",
                            flags[f], diff, top);
              free(Bt); free(want); free(dense); free(got);
              mi_circuit_free(circuit);
            }
          free(pq); free(pk); free(tq); free(tk);
        }
        free(rQ); free(rK); free(WQ); free(WK); free(bQ); free(bK);
      }
    free(W_E);
    mi_model_free(model);
  }
  free(W_pos);
  mi_model_free(raw);
}
END_TEST

/*
 * What mi.h promises for a model without LayerNorm: the four QK circuits of
 * a layer-0 head with MI_QK_BIAS | MI_QK_SCALE add up, entry by entry, to
 * the score the forward pass gives query (token x_t, position t) against
 * key (x_s, s): so their causal softmax is the reference's layer-0 pattern.
 * Tolerance as for the patterns in the forward suite, 1e-5.
 */
START_TEST(qk_circuits_add_up_to_the_scores) {
  mi_config c = shortformer_config(3);
  mi_model *model = tu_random_model(&c, 17);
  TU_OK(mi_model_process(model, MI_PROCESS_FOLD_LN));
  size_t n = N_TOKENS, H = c.n_heads;
  double *want = malloc(c.n_layers * H * n * n * sizeof *want);
  tu_reference_forward(NULL, want, NULL, model, TOKENS, n);
  double *score = malloc(n * n * sizeof *score);
  for (size_t h = 0; h < H; h++) {
    memset(score, 0, n * n * sizeof *score);
    for (int part = 0; part < 4; part++) {
      bool qpos = part & 1, kpos = part & 2;
      mi_circuit *circuit;
      TU_OK(mi_circuit_qk(&circuit, model, 0, h, qpos ? MI_EMBED_POS : MI_EMBED_TOKEN,
                          kpos ? MI_EMBED_POS : MI_EMBED_TOKEN, MI_QK_BIAS | MI_QK_SCALE));
      for (size_t t = 0; t < n; t++)
        for (size_t s = 0; s <= t; s++) {
          double entry;
          TU_OK(mi_circuit_entry(&entry, circuit, qpos ? t : TOKENS[t], kpos ? s : TOKENS[s]));
          score[t * n + s] += entry;
        }
      mi_circuit_free(circuit);
    }
    for (size_t t = 0; t < n; t++) {
      double top = -INFINITY, total = 0;
      for (size_t s = 0; s <= t; s++)
        top = fmax(top, score[t * n + s]);
      for (size_t s = 0; s <= t; s++)
        total += exp(score[t * n + s] - top);
      for (size_t s = 0; s <= t; s++)
        ck_assert_double_eq_tol(exp(score[t * n + s] - top) / total, want[(h * n + t) * n + s],
                                1e-5);
    }
  }
  free(want);
  free(score);
  mi_model_free(model);
}
END_TEST

/* Behavioural scores of every head from patterns [seq][L·H][n][n], pooled as mi.h says. */
static void scores_from_patterns(double *out, const double *patterns, const size_t *tokens,
                                 size_t sequences, size_t n, size_t heads) {
  double *sum = calloc(heads * MI_SCORE_COUNT, sizeof *sum);
  size_t rows[MI_SCORE_COUNT] = {0};
  for (size_t q = 0; q < sequences; q++) {
    const size_t *x = tokens + q * n;
    for (size_t t = 0; t < n; t++)
      for (int kind = 0; kind < MI_SCORE_COUNT; kind++) {
        bool any = false;
        for (size_t s = 0; s <= t; s++) {
          bool hit = kind == MI_SCORE_PREV_TOKEN       ? s + 1 == t
                     : kind == MI_SCORE_DUPLICATE_TOKEN ? s < t && x[s] == x[t]
                                                        : s >= 1 && x[s - 1] == x[t];
          any |= hit;
          for (size_t i = 0; hit && i < heads; i++)
            sum[i * MI_SCORE_COUNT + kind] += patterns[((q * heads + i) * n + t) * n + s];
        }
        rows[kind] += any;
      }
  }
  for (size_t i = 0; i < heads * MI_SCORE_COUNT; i++)
    out[i] = rows[i % MI_SCORE_COUNT] ? sum[i] / (double)rows[i % MI_SCORE_COUNT] : NAN;
  free(sum);
}

/*
 * The head report of a processed shortformer model: its previous-token
 * share equals the one of the dense positional QK circuit of the raw
 * weights (W_pos W_Q W_Kᵀ W_posᵀ, no bias: the report's default flags are
 * MI_QK_BIAS | MI_QK_SCALE and a positional side takes no bias), and its
 * behavioural scores, like mi_model_attention_scores', equal those
 * recomputed from the reference patterns of the raw model on the same
 * repeated sequences (tolerance: patterns within 1e-5, averaged).
 */
START_TEST(head_report_reads_positions_as_the_model_does) {
  mi_config c = shortformer_config(_i);
  mi_model *raw = tu_random_model(&c, 500 + _i);
  mi_model *model = tu_random_model(&c, 500 + _i);
  TU_OK(mi_model_process(model, can_process(&c, MI_PROCESS_TRANSFORMERLENS)
                                    ? MI_PROCESS_TRANSFORMERLENS : MI_PROCESS_FOLD_LN));
  c = config_of(model);
  size_t L = c.n_layers, H = c.n_heads, D = c.d_model, dh = c.d_head, P = c.n_ctx, r, k;
  size_t heads = L * H, half = P / 2, sequences = 3, n = 2 * half;
  mi_report_options opt;
  mi_report_options_init(&opt, sizeof opt);
  opt.behaviour_sequences = sequences;
  opt.behaviour_half_length = half;
  opt.behaviour_seed = 9;
  mi_head_report *lines = calloc(heads, sizeof *lines);
  lines[0].struct_size = sizeof *lines;
  TU_OK(mi_model_head_report(lines, heads, model, &opt));

  size_t *tokens = malloc(sequences * n * sizeof *tokens);
  TU_OK(mi_model_repeated_tokens(tokens, sequences * n, model, sequences, half, 9));
  double *patterns = malloc(sequences * heads * n * n * sizeof *patterns);
  for (size_t q = 0; q < sequences; q++)
    tu_reference_forward(NULL, patterns + q * heads * n * n, NULL, raw, tokens + q * n, n);
  double *want = malloc(heads * MI_SCORE_COUNT * sizeof *want);
  double *got = malloc(heads * MI_SCORE_COUNT * sizeof *got);
  scores_from_patterns(want, patterns, tokens, sequences, n, heads);
  TU_OK(mi_model_attention_scores(got, heads * MI_SCORE_COUNT, model, tokens, sequences, n));

  double *W_pos = tu_weight(raw, MI_W_POS, 0, 0, &r, &k);
  for (size_t i = 0; i < heads; i++) {
    size_t l = i / H, h = i % H, g = h / (H / c.n_kv_heads);
    double *WQ = tu_weight(raw, MI_W_Q, l, h, &r, &k), *WK = tu_weight(raw, MI_W_K, l, g, &r, &k);
    double *pq = side(W_pos, P, WQ, NULL, D, dh), *pk = side(W_pos, P, WK, NULL, D, dh);
    double *pkt = tu_transposed(pk, P, dh), *M = tu_mul(pq, pkt, P, dh, P);
    ck_assert_msg(lines[i].prev_token_share == tu_prev_token_share(M, P),
                  "head (%zu,%zu): prev-token share %g, dense %g", l, h,
                  lines[i].prev_token_share, tu_prev_token_share(M, P));
    const double fields[MI_SCORE_COUNT] = {lines[i].prev_token_attention,
                                           lines[i].duplicate_token_attention,
                                           lines[i].induction_attention};
    for (int kind = 0; kind < MI_SCORE_COUNT; kind++) {
      double w = want[i * MI_SCORE_COUNT + kind];
      ck_assert_double_eq_tol(got[i * MI_SCORE_COUNT + kind], w, 1e-5);
      ck_assert_double_eq_tol(fields[kind], w, 1e-5);
    }
    free(WQ); free(WK); free(pq); free(pk); free(pkt); free(M);
  }
  free(W_pos); free(lines); free(tokens); free(patterns); free(want); free(got);
  mi_model_free(raw);
  mi_model_free(model);
}
END_TEST

/* A shortformer model needs W_pos; get_config reports the kind it runs. */
START_TEST(configs_are_checked) {
  mi_config c = tu_config(1, 2, 6, 3, 7, 5, MI_PART_LN);
  c.positional = MI_POSITIONAL_SHORTFORMER;
  mi_model *model;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_create(&model, &c));
  ck_assert_msg(strstr(mi_last_error(), "shortformer") && strstr(mi_last_error(), "W_pos"),
                "%s", mi_last_error());
  c.parts |= MI_PART_POS_EMBED;
  TU_OK(mi_model_create(&model, &c));
  ck_assert_int_eq(config_of(model).positional, MI_POSITIONAL_SHORTFORMER);
  mi_model_free(model);
  c.positional = MI_POSITIONAL_DEFAULT; /* W_pos without a kind: standard, as before */
  TU_OK(mi_model_create(&model, &c));
  ck_assert_int_eq(config_of(model).positional, MI_POSITIONAL_STANDARD);
  mi_model_free(model);
}
END_TEST

static Suite *shortformer_suite(void) {
  Suite *s = suite_create("shortformer");
  TCase *t = tcase_create("shortformer");
  tcase_set_timeout(t, 60);
  tcase_add_loop_test(t, processed_models_compute_the_raw_function, 0, N_CONFIGS);
  tcase_add_loop_test(t, qk_circuits_use_the_weights_positions_meet, 0, N_CONFIGS);
  tcase_add_test(t, qk_circuits_add_up_to_the_scores);
  tcase_add_loop_test(t, head_report_reads_positions_as_the_model_does, 0, N_CONFIGS);
  tcase_add_test(t, configs_are_checked);
  suite_add_tcase(s, t);
  return s;
}

int main(void) { return tu_run_suite(shortformer_suite()); }
