#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

tu_rng tu_rng_seed(uint64_t seed) {
  tu_rng rng = {seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull};
  if (rng.state == 0)
    rng.state = 1;
  return rng;
}

double tu_uniform(tu_rng *rng) {
  rng->state ^= rng->state >> 12;
  rng->state ^= rng->state << 25;
  rng->state ^= rng->state >> 27;
  return (double)((rng->state * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}

double tu_normal(tu_rng *rng) {
  double u = tu_uniform(rng), v = tu_uniform(rng);
  return sqrt(-2.0 * log(u + 0x1.0p-60)) * cos(6.283185307179586 * v);
}

mi_config tu_config(size_t n_layers, size_t n_heads, size_t d_model, size_t d_head,
                    size_t d_vocab, size_t n_ctx, unsigned parts) {
  mi_config c;
  mi_config_init(&c, sizeof c);
  c.n_layers = n_layers;
  c.n_heads = n_heads;
  c.d_model = d_model;
  c.d_head = d_head;
  c.d_vocab = d_vocab;
  c.n_ctx = n_ctx;
  c.parts = parts;
  return c;
}

mi_model *tu_random_model(const mi_config *config, uint64_t seed) {
  mi_model *model;
  TU_OK(mi_model_create(&model, config));
  mi_config c;
  mi_config_init(&c, sizeof c);
  TU_OK(mi_model_get_config(&c, model));
  tu_rng rng = tu_rng_seed(seed);
  for (int w = 0; w < MI_WEIGHT_COUNT; w++) {
    size_t rows, cols;
    if (mi_model_weight_shape(&rows, &cols, model, (mi_weight)w) != MI_OK)
      continue;
    int per_head = w == MI_W_Q || w == MI_W_O || w == MI_B_Q;
    int per_kv = w == MI_W_K || w == MI_W_V || w == MI_B_K || w == MI_B_V;
    int per_layer = per_head || per_kv || w == MI_B_O || w == MI_LN1_W || w == MI_LN1_B;
    size_t layers = per_layer ? c.n_layers : 1;
    size_t heads = per_head ? c.n_heads : per_kv ? c.n_kv_heads : 1;
    double *buf = malloc(rows * cols * sizeof *buf);
    for (size_t l = 0; l < layers; l++)
      for (size_t h = 0; h < heads; h++) {
        for (size_t i = 0; i < rows * cols; i++) {
          double x = tu_normal(&rng);
          if (w == MI_LN1_W || w == MI_LNF_W)
            buf[i] = 1.0 + 0.3 * x;
          else if (rows == 1)
            buf[i] = 0.3 * x;
          else
            buf[i] = x / sqrt((double)rows);
        }
        TU_OK(mi_model_set_weight(model, (mi_weight)w, l, h, MI_DTYPE_F64, buf, cols));
      }
    free(buf);
  }
  return model;
}

double *tu_weight(const mi_model *model, mi_weight which, size_t layer, size_t head,
                  size_t *rows, size_t *cols) {
  if (mi_model_weight_shape(rows, cols, model, which) != MI_OK)
    return NULL;
  size_t n = *rows * *cols;
  float *f = malloc(n * sizeof *f);
  TU_OK(mi_model_get_weight(f, *cols, model, which, layer, head));
  double *d = malloc(n * sizeof *d);
  for (size_t i = 0; i < n; i++)
    d[i] = f[i];
  free(f);
  return d;
}

/* y[n × D] ← LayerNorm of x (normalise, then scale and shift when given). */
static void layer_norm(double *y, const double *x, size_t n, size_t D, double eps,
                       const double *w, const double *b) {
  for (size_t t = 0; t < n; t++) {
    double mean = 0, var = 0;
    for (size_t i = 0; i < D; i++)
      mean += x[t * D + i];
    mean /= D;
    for (size_t i = 0; i < D; i++)
      var += (x[t * D + i] - mean) * (x[t * D + i] - mean);
    var /= D;
    double scale = 1.0 / sqrt(var + eps);
    for (size_t i = 0; i < D; i++) {
      double v = (x[t * D + i] - mean) * scale;
      y[t * D + i] = w ? v * w[i] + b[i] : v;
    }
  }
}

void tu_matmul(double *out, const double *x, const double *W, const double *bias, size_t n,
               size_t rows, size_t cols) {
  for (size_t t = 0; t < n; t++)
    for (size_t j = 0; j < cols; j++) {
      double s = bias ? bias[j] : 0.0;
      for (size_t i = 0; i < rows; i++)
        s += x[t * rows + i] * W[i * cols + j];
      out[t * cols + j] = s;
    }
}

double *tu_mul(const double *X, const double *Y, size_t rows, size_t inner, size_t cols) {
  double *out = malloc(rows * cols * sizeof *out);
  tu_matmul(out, X, Y, NULL, rows, inner, cols);
  return out;
}

double *tu_transposed(const double *X, size_t rows, size_t cols) {
  double *out = malloc(rows * cols * sizeof *out);
  for (size_t i = 0; i < rows; i++)
    for (size_t j = 0; j < cols; j++)
      out[j * rows + i] = X[i * cols + j];
  return out;
}

void tu_reference_logits(double *logits, const mi_model *model, const size_t *tokens,
                         size_t n) {
  tu_reference_forward(logits, NULL, NULL, model, tokens, n);
}

void tu_reference_forward(double *logits, double *patterns, double *streams,
                          const mi_model *model, const size_t *tokens, size_t n) {
  mi_config c;
  mi_config_init(&c, sizeof c);
  TU_OK(mi_model_get_config(&c, model));
  size_t D = c.d_model, dh = c.d_head, r, k;
  double *resid = calloc(n * D, sizeof *resid), *xn = malloc(n * D * sizeof *xn);
  double *W_E = tu_weight(model, MI_W_E, 0, 0, &r, &k);
  double *W_pos = tu_weight(model, MI_W_POS, 0, 0, &r, &k);
  /* Shortformer: W_pos joins the query and key inputs after ln1, not the stream. */
  bool shortformer = c.positional == MI_POSITIONAL_SHORTFORMER;
  for (size_t t = 0; t < n; t++)
    for (size_t i = 0; i < D; i++)
      resid[t * D + i] = W_E[tokens[t] * D + i] + (W_pos && !shortformer ? W_pos[t * D + i] : 0.0);
  free(W_E);
  double *xqk = malloc(n * D * sizeof *xqk);
  double *q = malloc(n * dh * sizeof *q), *kk = malloc(n * dh * sizeof *kk);
  double *v = malloc(n * dh * sizeof *v), *z = malloc(n * dh * sizeof *z);
  double *out = malloc(n * D * sizeof *out), *add = calloc(n * D, sizeof *add);
  double *p = malloc(n * sizeof *p);
  for (size_t l = 0; l < c.n_layers; l++) {
    if (streams)
      memcpy(streams + l * n * D, resid, n * D * sizeof *resid);
    double *lw = tu_weight(model, MI_LN1_W, l, 0, &r, &k);
    double *lb = tu_weight(model, MI_LN1_B, l, 0, &r, &k);
    if (c.parts & MI_PART_LN)
      layer_norm(xn, resid, n, D, c.ln_eps, lw, lb);
    else
      memcpy(xn, resid, n * D * sizeof *xn);
    free(lw);
    free(lb);
    for (size_t i = 0; i < n * D; i++)
      xqk[i] = xn[i] + (shortformer ? W_pos[i] : 0.0);
    memset(add, 0, n * D * sizeof *add);
    for (size_t h = 0; h < c.n_heads; h++) {
      size_t kv = h / (c.n_heads / c.n_kv_heads);
      double *WQ = tu_weight(model, MI_W_Q, l, h, &r, &k);
      double *WK = tu_weight(model, MI_W_K, l, kv, &r, &k);
      double *WV = tu_weight(model, MI_W_V, l, kv, &r, &k);
      double *WO = tu_weight(model, MI_W_O, l, h, &r, &k);
      double *bQ = tu_weight(model, MI_B_Q, l, h, &r, &k);
      double *bK = tu_weight(model, MI_B_K, l, kv, &r, &k);
      double *bV = tu_weight(model, MI_B_V, l, kv, &r, &k);
      tu_matmul(q, xqk, WQ, bQ, n, D, dh);
      tu_matmul(kk, xqk, WK, bK, n, D, dh);
      tu_matmul(v, xn, WV, bV, n, D, dh);
      for (size_t t = 0; t < n; t++) {
        double top = -INFINITY, sum = 0;
        for (size_t s = 0; s <= t; s++) {
          double dot = 0;
          for (size_t i = 0; i < dh; i++)
            dot += q[t * dh + i] * kk[s * dh + i];
          p[s] = dot / sqrt((double)dh);
          if (p[s] > top)
            top = p[s];
        }
        for (size_t s = 0; s <= t; s++)
          sum += p[s] = exp(p[s] - top);
        for (size_t s = 0; patterns && s < n; s++)
          patterns[((l * c.n_heads + h) * n + t) * n + s] = s <= t ? p[s] / sum : 0.0;
        for (size_t i = 0; i < dh; i++) {
          double acc = 0;
          for (size_t s = 0; s <= t; s++)
            acc += p[s] / sum * v[s * dh + i];
          z[t * dh + i] = acc;
        }
      }
      tu_matmul(out, z, WO, NULL, n, dh, D);
      for (size_t i = 0; i < n * D; i++)
        add[i] += out[i];
      free(WQ); free(WK); free(WV); free(WO); free(bQ); free(bK); free(bV);
    }
    double *bO = tu_weight(model, MI_B_O, l, 0, &r, &k);
    for (size_t t = 0; t < n; t++)
      for (size_t i = 0; i < D; i++)
        resid[t * D + i] += add[t * D + i] + (bO ? bO[i] : 0.0);
    free(bO);
  }
  if (streams)
    memcpy(streams + c.n_layers * n * D, resid, n * D * sizeof *resid);
  double *fw = tu_weight(model, MI_LNF_W, 0, 0, &r, &k);
  double *fb = tu_weight(model, MI_LNF_B, 0, 0, &r, &k);
  if (c.parts & MI_PART_LN_FINAL)
    layer_norm(xn, resid, n, D, c.ln_eps, fw, fb);
  else
    memcpy(xn, resid, n * D * sizeof *xn);
  double *W_U = tu_weight(model, MI_W_U, 0, 0, &r, &k);
  double *b_U = tu_weight(model, MI_B_U, 0, 0, &r, &k);
  if (logits)
    tu_matmul(logits, xn, W_U, b_U, n, D, c.d_vocab);
  free(fw); free(fb); free(W_U); free(b_U);
  free(W_pos); free(xqk);
  free(resid); free(xn); free(q); free(kk); free(v); free(z); free(out); free(add); free(p);
}

double tu_prev_token_share(const double *scores, size_t n) {
  size_t hits = 0;
  for (size_t p = 1; p < n; p++) {
    size_t best = 0;
    for (size_t s = 1; s <= p; s++)
      if (scores[p * n + s] > scores[p * n + best])
        best = s;
    hits += best + 1 == p;
  }
  return (double)hits / (double)(n - 1);
}

double tu_max_abs_diff(const double *a, const double *b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++)
    m = fmax(m, fabs(a[i] - b[i]));
  return m;
}

double tu_max_abs(const double *a, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++)
    m = fmax(m, fabs(a[i]));
  return m;
}

int tu_run_suite(Suite *suite) {
  SRunner *runner = srunner_create(suite);
  srunner_run_all(runner, CK_ENV);
  int failed = srunner_ntests_failed(runner);
  srunner_free(runner);
  return failed == 0 ? 0 : 1;
}
