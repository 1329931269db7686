/*
 * forward.c: the forward pass of an attention-only model, and the exact split
 * of its logits into paths with attention patterns and LayerNorm scales
 * frozen from that pass.
 *
 * Precision: every product goes through mi__sgemm in float32. LayerNorm
 * statistics and softmax run in double: a float32 variance loses digits when
 * the mean is large against the spread (the stream grows with depth), and a
 * double exp costs nothing next to the n × n × d_head products around it.
 */
#include "kernel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void mi_forward_extras_init(mi_forward_extras *out) {
  if (out == NULL)
    return;
  memset(out, 0, sizeof *out);
  out->struct_size = sizeof *out;
}

/* The checks every entry point makes on a model and a token sequence. */
static mi_status check_input(const mi_model *model, const size_t *tokens, size_t n) {
  const mi_config *c = &model->config;
  if (c->parts & MI_PART_MLP)
    return mi__fail(MI_ERR_UNSUPPORTED,
                    "the model has MLP layers: libmi's forward pass and path "
                    "decomposition are exact only for attention-only models");
  if (n == 0)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "the token sequence is empty (n = 0)");
  if (c->n_ctx > 0 && n > c->n_ctx)
    return mi__fail(MI_ERR_SHAPE, "%zu tokens exceed the context of %zu positions", n,
                    c->n_ctx);
  for (size_t t = 0; t < n; t++)
    if (tokens[t] >= c->d_vocab)
      return mi__fail(MI_ERR_INDEX, "token %zu at position %zu is out of range (d_vocab %zu)",
                      tokens[t], t, c->d_vocab);
  return MI_OK;
}

/* Allocates `count` elements of `size` bytes, failing cleanly on overflow. */
static void *allocate(size_t count, size_t size, const char *what, mi_status *status) {
  size_t bytes;
  if (!mi__mul_size(&bytes, count, size)) {
    *status = mi__fail(MI_ERR_OUT_OF_MEMORY, "%s: %zu elements overflow size_t", what, count);
    return NULL;
  }
  void *p = malloc(bytes ? bytes : 1);
  *status = p ? MI_OK
              : mi__fail(MI_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes", what, bytes);
  return p;
}

/* Product of a list of sizes, false on overflow. */
static bool mul3(size_t *out, size_t a, size_t b, size_t c) {
  return mi__mul_size(out, a, b) && mi__mul_size(out, *out, c);
}

/*
 * LayerNorm of the n rows of x (n × D) into y: y = (x - mean)·scale·w + b, the
 * statistics in double. `w`, `b` NULL: copy x (no LayerNorm) with scale 1.
 * Each row's scale 1/√(var + eps) goes to `scale` when non-NULL.
 */
static void layer_norm(float *y, const float *x, size_t n, size_t D, double eps,
                       const float *w, const float *b, double *scale) {
  for (size_t t = 0; t < n; t++) {
    const float *xr = x + t * D;
    float *yr = y + t * D;
    if (w == NULL) {
      memcpy(yr, xr, D * sizeof *yr);
      if (scale)
        scale[t] = 1.0;
      continue;
    }
    double mean = 0.0, var = 0.0;
    for (size_t i = 0; i < D; i++)
      mean += xr[i];
    mean /= (double)D;
    for (size_t i = 0; i < D; i++)
      var += (xr[i] - mean) * (xr[i] - mean);
    double s = 1.0 / sqrt(var / (double)D + eps);
    for (size_t i = 0; i < D; i++)
      yr[i] = (float)((xr[i] - mean) * s * w[i] + b[i]);
    if (scale)
      scale[t] = s;
  }
}

/* Causal softmax of an n × n score matrix in place; zero above the diagonal. */
static void causal_softmax(float *p, size_t n) {
  for (size_t t = 0; t < n; t++) {
    float *row = p + t * n;
    double top = -INFINITY, sum = 0.0;
    for (size_t s = 0; s <= t; s++)
      top = fmax(top, row[s]);
    for (size_t s = 0; s <= t; s++)
      sum += exp(row[s] - top);
    for (size_t s = 0; s <= t; s++)
      row[s] = (float)(exp(row[s] - top) / sum);
    for (size_t s = t + 1; s < n; s++)
      row[s] = 0.0f;
  }
}

/* Adds a row vector to each of the n rows (leading dimension ld) of m. */
static void add_rows(float *m, size_t n, size_t cols, size_t ld, const float *v) {
  for (size_t t = 0; t < n; t++)
    for (size_t j = 0; j < cols; j++)
      m[t * ld + j] += v[j];
}

/* The per-layer weight of a model, or NULL when absent. */
static const float *layer_vec(const mi_model *model, mi_weight which, size_t l) {
  const float *w = model->w[which];
  return w ? w + l * model->config.d_model : NULL;
}

/*
 * The forward pass proper, on checked input. Every output may be NULL:
 * logits (n × d_vocab at leading dimension ld), patterns (L × H × n × n),
 * resid ((L + 1) × n × D) and ln_scale ((L + 1) × n, the LayerNorm scales
 * before each layer and before the unembedding; 1 where there is none).
 */
static mi_status run_forward(const mi_model *model, const size_t *tokens, size_t n,
                             float *logits, size_t ld, float *patterns, float *resid,
                             double *ln_scale) {
  const mi_config *c = &model->config;
  size_t D = c->d_model, dh = c->d_head, H = c->n_heads, G = c->n_kv_heads;
  size_t nD, nn, nGdh, total;
  if (!mi__mul_size(&nD, n, D) || !mi__mul_size(&nn, n, n) || !mul3(&nGdh, n, G, dh) ||
      __builtin_add_overflow(2 * nD, nn, &total) ||
      __builtin_add_overflow(total, 2 * nGdh + 2 * n * dh, &total))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "forward: scratch for %zu tokens overflows", n);
  mi_status status;
  float *scratch = allocate(total, sizeof(float), "forward scratch", &status);
  if (scratch == NULL)
    return status;
  float *x = scratch, *xn = x + nD, *scores = xn + nD, *k = scores + nn, *v = k + nGdh;
  float *q = v + nGdh, *z = q + n * dh;

  const float *W_E = model->w[MI_W_E], *W_pos = model->w[MI_W_POS];
  for (size_t t = 0; t < n; t++)
    for (size_t i = 0; i < D; i++)
      x[t * D + i] = W_E[tokens[t] * D + i] + (W_pos ? W_pos[t * D + i] : 0.0f);

  float alpha = (float)(1.0 / sqrt((double)dh));
  mi__matrix X = mi__matrix_rowmajor(x, n, D), XN = mi__matrix_rowmajor(xn, n, D);
  for (size_t l = 0; l < c->n_layers && status == MI_OK; l++) {
    if (resid)
      memcpy(resid + l * nD, x, nD * sizeof *x);
    layer_norm(xn, x, n, D, c->ln_eps, layer_vec(model, MI_LN1_W, l),
               layer_vec(model, MI_LN1_B, l), ln_scale ? ln_scale + l * n : NULL);
    /* Keys and values once per key/value head, shared by its query heads. */
    for (size_t g = 0; g < G && status == MI_OK; g++) {
      size_t i = l * G + g;
      mi__matrix Kg = {k + g * dh, n, dh, (ptrdiff_t)(G * dh), 1};
      mi__matrix Vg = {v + g * dh, n, dh, (ptrdiff_t)(G * dh), 1};
      status = mi__sgemm(1.0f, XN, mi__matrix_rowmajor(model->w[MI_W_K] + i * D * dh, D, dh),
                         0.0f, Kg);
      if (status == MI_OK)
        status = mi__sgemm(1.0f, XN,
                           mi__matrix_rowmajor(model->w[MI_W_V] + i * D * dh, D, dh), 0.0f, Vg);
      if (status == MI_OK && model->w[MI_B_K]) {
        add_rows(Kg.data, n, dh, G * dh, model->w[MI_B_K] + i * dh);
        add_rows(Vg.data, n, dh, G * dh, model->w[MI_B_V] + i * dh);
      }
    }
    for (size_t h = 0; h < H && status == MI_OK; h++) {
      size_t i = l * H + h, g = mi__kv_head(model, h);
      mi__matrix Q = mi__matrix_rowmajor(q, n, dh);
      mi__matrix Kg = {k + g * dh, n, dh, (ptrdiff_t)(G * dh), 1};
      mi__matrix Vg = {v + g * dh, n, dh, (ptrdiff_t)(G * dh), 1};
      float *p = patterns ? patterns + i * nn : scores;
      mi__matrix P = mi__matrix_rowmajor(p, n, n), Z = mi__matrix_rowmajor(z, n, dh);
      status = mi__sgemm(1.0f, XN, mi__matrix_rowmajor(model->w[MI_W_Q] + i * D * dh, D, dh),
                         0.0f, Q);
      if (status != MI_OK)
        break;
      if (model->w[MI_B_Q])
        add_rows(q, n, dh, dh, model->w[MI_B_Q] + i * dh);
      status = mi__sgemm(alpha, Q, mi__matrix_t(Kg), 0.0f, P);
      if (status != MI_OK)
        break;
      causal_softmax(p, n);
      status = mi__sgemm(1.0f, P, Vg, 0.0f, Z);
      /* Heads add into the stream; they all read xn, so the order is free. */
      if (status == MI_OK)
        status = mi__sgemm(1.0f, Z, mi__matrix_rowmajor(model->w[MI_W_O] + i * dh * D, dh, D),
                           1.0f, X);
    }
    if (status == MI_OK && model->w[MI_B_O])
      add_rows(x, n, D, D, model->w[MI_B_O] + l * D);
  }
  if (status == MI_OK) {
    if (resid)
      memcpy(resid + c->n_layers * nD, x, nD * sizeof *x);
    layer_norm(xn, x, n, D, c->ln_eps, model->w[MI_LNF_W], model->w[MI_LNF_B],
               ln_scale ? ln_scale + c->n_layers * n : NULL);
  }
  if (status == MI_OK && logits) {
    mi__matrix Out = {logits, n, c->d_vocab, (ptrdiff_t)ld, 1};
    status = mi__sgemm(1.0f, XN, mi__matrix_rowmajor(model->w[MI_W_U], D, c->d_vocab), 0.0f,
                       Out);
    if (status == MI_OK && model->w[MI_B_U])
      add_rows(logits, n, c->d_vocab, ld, model->w[MI_B_U]);
  }
  free(scratch);
  return status;
}

/* Checks that an optional caller buffer, when given, holds `need` floats. */
static mi_status check_buffer(const float *p, size_t have, size_t need, bool overflow,
                              const char *name, const char *shape) {
  if (p == NULL)
    return MI_OK;
  if (overflow)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "extras.%s: %s floats overflow size_t", name, shape);
  if (have < need)
    return mi__fail(MI_ERR_SHAPE, "extras.%s holds %zu floats; %s needs %zu", name, have,
                    shape, need);
  return MI_OK;
}

mi_status mi_model_forward(float *out, size_t ld, const mi_model *model, const size_t *tokens,
                           size_t n, const mi_forward_extras *extras) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(model);
  MI_CHECK_ARG(tokens);
  const mi_config *c = &model->config;
  if (ld < c->d_vocab)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "logits: ld %zu < d_vocab %zu", ld, c->d_vocab);
  mi_status status = check_input(model, tokens, n);
  if (status != MI_OK)
    return status;
  mi_forward_extras x;
  mi_forward_extras_init(&x);
  if (extras != NULL) {
    if (extras->struct_size == 0 || extras->struct_size > sizeof x)
      return mi__fail(MI_ERR_INVALID_ARGUMENT,
                      "extras.struct_size is %zu; call mi_forward_extras_init first",
                      extras->struct_size);
    memcpy(&x, extras, extras->struct_size);
  }
  size_t need_p = 0, need_r = 0;
  bool over_p = !mi__mul_size(&need_p, c->n_layers * c->n_heads, n) ||
                !mi__mul_size(&need_p, need_p, n);
  bool over_r = !mul3(&need_r, c->n_layers + 1, n, c->d_model);
  status = check_buffer(x.patterns, x.patterns_count, need_p, over_p, "patterns",
                        "n_layers x n_heads x n x n");
  if (status == MI_OK)
    status = check_buffer(x.resid, x.resid_count, need_r, over_r, "resid",
                          "(n_layers + 1) x n x d_model");
  if (status != MI_OK)
    return status;
  return run_forward(model, tokens, n, out, ld, x.patterns, x.resid, NULL);
}
