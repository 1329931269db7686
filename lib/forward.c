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
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void mi_forward_extras_init(mi_forward_extras *out, size_t struct_size) {
  const mi_forward_extras defaults = {.struct_size = sizeof defaults};
  mi__struct_init(out, struct_size, &defaults, sizeof defaults);
}

mi_status mi__check_sequence_length(const mi_model *model, size_t n) {
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
  return MI_OK;
}

/* The checks every entry point makes on a model and a token sequence. */
static mi_status check_input(const mi_model *model, const size_t *tokens, size_t n) {
  const mi_config *c = &model->config;
  mi_status status = mi__check_sequence_length(model, n);
  if (status != MI_OK)
    return status;
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

/* a·b·c into *out; false on overflow. */
static bool mul3(size_t *out, size_t a, size_t b, size_t c) {
  return mi__mul_size(out, a, b) && mi__mul_size(out, *out, c);
}

/*
 * One allocation carved into aligned pieces: `reserve` records each piece's
 * byte offset (or an overflow); the caller allocates p.bytes once and adds
 * the offsets to it.
 */
typedef struct plan {
  size_t bytes;
  bool overflow;
} plan;

static size_t reserve(plan *p, size_t a, size_t b, size_t c, size_t item) {
  const size_t align = _Alignof(max_align_t);
  size_t count, bytes, offset = p->bytes;
  if (!mul3(&count, a, b, c) || !mi__mul_size(&bytes, count, item) ||
      bytes > SIZE_MAX - align - offset)
    p->overflow = true;
  else
    p->bytes = offset + (bytes + align - 1) / align * align;
  return offset;
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

/* Adds row t of terms (n × cols, contiguous) to row t of m (leading dimension ld). */
static void add_terms(float *m, size_t n, size_t cols, size_t ld, const float *terms) {
  for (size_t t = 0; t < n; t++)
    for (size_t j = 0; j < cols; j++)
      m[t * ld + j] += terms[t * cols + j];
}

/*
 * The stream entering layer 0 (n × D): W_E[token], plus W_pos[position] in
 * a standard model (a shortformer one adds W_pos to queries and keys only).
 */
static void embed(float *x, const mi_model *model, const size_t *tokens, size_t n) {
  size_t D = model->config.d_model;
  const float *W_E = model->w[MI_W_E], *W_pos = model->w[MI_W_POS];
  if (model->config.positional != MI_POSITIONAL_STANDARD)
    W_pos = NULL;
  for (size_t t = 0; t < n; t++)
    for (size_t i = 0; i < D; i++)
      x[t * D + i] = W_E[tokens[t] * D + i] + (W_pos ? W_pos[t * D + i] : 0.0f);
}

/* The per-layer weight of a model, or NULL when absent. */
static const float *layer_vec(const mi_model *model, mi_weight which, size_t l) {
  const float *w = model->w[which];
  return w ? w + l * model->config.d_model : NULL;
}

/*
 * Head i (= l·H + h) adds Z·W_O to the stream X: times its head_scale, plus
 * its head_bias, and copied to its block of head_out, as `heads` (NULL:
 * none of them) asks. A zero scale skips the product.
 */
static mi_status add_head(mi__matrix X, mi__matrix Z, mi__matrix W_O,
                          const mi_forward_extras *heads, size_t i) {
  size_t n = X.rows, D = X.cols;
  float scale = heads && heads->head_scale ? heads->head_scale[i] : 1.0f;
  const float *bias = heads && heads->head_bias ? heads->head_bias + i * D : NULL;
  float *out = heads && heads->head_out ? heads->head_out + i * n * D : NULL;
  mi__matrix O = out ? mi__matrix_rowmajor(out, n, D) : X;
  mi_status status = MI_OK;
  if (out != NULL)
    memset(out, 0, n * D * sizeof *out);
  if (scale != 0.0f)
    status = mi__sgemm(scale, Z, W_O, 1.0f, O);
  if (bias != NULL)
    add_rows(O.data, n, D, D, bias);
  if (out != NULL)
    add_terms(X.data, n, D, D, out);
  return status;
}

/*
 * The forward pass proper, on checked input. Every output may be NULL:
 * logits (n × d_vocab at leading dimension ld), patterns (L × H × n × n),
 * resid ((L + 1) × n × D) and ln_scale ((L + 1) × n, the LayerNorm scales
 * before each layer and before the unembedding; 1 where there is none).
 * `heads`: NULL, or checked extras whose head_* fields edit and report
 * each head's output.
 */
static mi_status run_forward_heads(const mi_model *model, const size_t *tokens, size_t n,
                                   float *logits, size_t ld, float *patterns, float *resid,
                                   double *ln_scale, const mi_forward_extras *heads) {
  const mi_config *c = &model->config;
  size_t D = c->d_model, dh = c->d_head, H = c->n_heads, G = c->n_kv_heads;
  size_t nD = n * D, nn = n * n; /* the products below reserve them checked */
  plan p = {0, false};
  size_t o_x = reserve(&p, n, D, 1, sizeof(float)), o_xn = reserve(&p, n, D, 1, sizeof(float));
  /* A shortformer model's query and key input LN(x) + W_pos, while W_pos
   * still multiplies W_Q and W_K themselves (no kept pos_q, pos_k terms). */
  bool add_pos = c->positional == MI_POSITIONAL_SHORTFORMER && model->pos_q == NULL;
  size_t o_xp = reserve(&p, add_pos ? n : 0, D, 1, sizeof(float));
  size_t o_scores = reserve(&p, n, n, 1, sizeof(float));
  size_t o_k = reserve(&p, n, G, dh, sizeof(float)), o_v = reserve(&p, n, G, dh, sizeof(float));
  size_t o_q = reserve(&p, n, dh, 1, sizeof(float)), o_z = reserve(&p, n, dh, 1, sizeof(float));
  if (p.overflow)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "forward: scratch for %zu tokens overflows", n);
  mi_status status;
  unsigned char *base = allocate(p.bytes, 1, "forward scratch", &status);
  if (base == NULL)
    return status;
  float *x = (float *)(base + o_x), *xn = (float *)(base + o_xn);
  float *scores = (float *)(base + o_scores), *k = (float *)(base + o_k);
  float *v = (float *)(base + o_v), *q = (float *)(base + o_q), *z = (float *)(base + o_z);
  float *xp = (float *)(base + o_xp);

  const float *W_pos = model->w[MI_W_POS];
  embed(x, model, tokens, n);

  float alpha = (float)(1.0 / sqrt((double)dh));
  mi__matrix X = mi__matrix_rowmajor(x, n, D), XN = mi__matrix_rowmajor(xn, n, D);
  /* What queries and keys read: LN(x), plus W_pos in a shortformer model. */
  mi__matrix XQK = add_pos ? mi__matrix_rowmajor(xp, n, D) : XN;
  for (size_t l = 0; l < c->n_layers && status == MI_OK; l++) {
    if (resid)
      memcpy(resid + l * nD, x, nD * sizeof *x);
    layer_norm(xn, x, n, D, c->ln_eps, layer_vec(model, MI_LN1_W, l),
               layer_vec(model, MI_LN1_B, l), ln_scale ? ln_scale + l * n : NULL);
    for (size_t i = 0; add_pos && i < nD; i++)
      xp[i] = xn[i] + W_pos[i];
    /* Keys and values once per key/value head, shared by its query heads. */
    for (size_t g = 0; g < G && status == MI_OK; g++) {
      size_t i = l * G + g;
      mi__matrix Kg = {k + g * dh, n, dh, (ptrdiff_t)(G * dh), 1};
      mi__matrix Vg = {v + g * dh, n, dh, (ptrdiff_t)(G * dh), 1};
      status = mi__sgemm(1.0f, XQK, mi__matrix_rowmajor(model->w[MI_W_K] + i * D * dh, D, dh),
                         0.0f, Kg);
      if (status == MI_OK)
        status = mi__sgemm(1.0f, XN,
                           mi__matrix_rowmajor(model->w[MI_W_V] + i * D * dh, D, dh), 0.0f, Vg);
      if (status == MI_OK && model->w[MI_B_K]) {
        add_rows(Kg.data, n, dh, G * dh, model->w[MI_B_K] + i * dh);
        add_rows(Vg.data, n, dh, G * dh, model->w[MI_B_V] + i * dh);
      }
      if (status == MI_OK && model->pos_k)
        add_terms(Kg.data, n, dh, G * dh, model->pos_k + i * c->n_ctx * dh);
    }
    for (size_t h = 0; h < H && status == MI_OK; h++) {
      size_t i = l * H + h, g = mi__kv_head(model, h);
      mi__matrix Q = mi__matrix_rowmajor(q, n, dh);
      mi__matrix Kg = {k + g * dh, n, dh, (ptrdiff_t)(G * dh), 1};
      mi__matrix Vg = {v + g * dh, n, dh, (ptrdiff_t)(G * dh), 1};
      float *p = patterns ? patterns + i * nn : scores;
      mi__matrix P = mi__matrix_rowmajor(p, n, n), Z = mi__matrix_rowmajor(z, n, dh);
      status = mi__sgemm(1.0f, XQK, mi__matrix_rowmajor(model->w[MI_W_Q] + i * D * dh, D, dh),
                         0.0f, Q);
      if (status != MI_OK)
        break;
      if (model->w[MI_B_Q])
        add_rows(q, n, dh, dh, model->w[MI_B_Q] + i * dh);
      if (model->pos_q)
        add_terms(q, n, dh, dh, model->pos_q + i * c->n_ctx * dh);
      status = mi__sgemm(alpha, Q, mi__matrix_t(Kg), 0.0f, P);
      if (status != MI_OK)
        break;
      causal_softmax(p, n);
      size_t at[2];
      if (!mi__finite_f(p, n, n, n, at)) {
        status = mi__fail(MI_ERR_NUMERIC, "forward: the attention scores of head (%zu, %zu) "
                          "overflowed float32 (query position %zu)", l, h, at[0]);
        break;
      }
      status = mi__sgemm(1.0f, P, Vg, 0.0f, Z);
      /* Heads add into the stream; they all read xn, so the order is free. */
      if (status == MI_OK)
        status = add_head(X, Z, mi__matrix_rowmajor(model->w[MI_W_O] + i * dh * D, dh, D),
                          heads, i);
    }
    if (status == MI_OK && model->w[MI_B_O])
      add_rows(x, n, D, D, model->w[MI_B_O] + l * D);
    size_t at[2];
    if (status == MI_OK && !mi__finite_f(x, n, D, D, at))
      status = mi__fail(MI_ERR_NUMERIC, "forward: the residual stream after layer %zu "
                        "overflowed float32 (position %zu)", l, at[0]);
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
    size_t at[2];
    if (status == MI_OK && !mi__finite_f(logits, n, c->d_vocab, ld, at))
      status = mi__fail(MI_ERR_NUMERIC, "forward: logit %zu at position %zu overflowed "
                        "float32", at[1], at[0]);
  }
  free(base);
  return status;
}

/* The plain forward pass, every head as the model has it. */
static mi_status run_forward(const mi_model *model, const size_t *tokens, size_t n,
                             float *logits, size_t ld, float *patterns, float *resid,
                             double *ln_scale) {
  return run_forward_heads(model, tokens, n, logits, ld, patterns, resid, ln_scale, NULL);
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

/* The head_* buffers of extras, when given, against their shapes; scales finite. */
static mi_status check_heads(const mi_forward_extras *x, const mi_model *model, size_t n) {
  const mi_config *c = &model->config;
  size_t heads = c->n_layers * c->n_heads, need_b = 0, need_o = 0; /* L·H fits: W_Q */
  bool over_b = !mi__mul_size(&need_b, heads, c->d_model);
  bool over_o = !mul3(&need_o, heads, n, c->d_model);
  mi_status status = check_buffer(x->head_scale, x->head_scale_count, heads, false,
                                  "head_scale", "n_layers x n_heads");
  if (status == MI_OK)
    status = check_buffer(x->head_bias, x->head_bias_count, need_b, over_b, "head_bias",
                          "n_layers x n_heads x d_model");
  if (status == MI_OK)
    status = check_buffer(x->head_out, x->head_out_count, need_o, over_o, "head_out",
                          "n_layers x n_heads x n x d_model");
  for (size_t i = 0; status == MI_OK && x->head_scale && i < heads; i++)
    if (!isfinite(x->head_scale[i]))
      status = mi__fail(MI_ERR_INVALID_ARGUMENT, "extras.head_scale of head (%zu, %zu) is "
                        "not finite", i / c->n_heads, i % c->n_heads);
  return status;
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
  size_t span;
  if (!mi__mul_size(&span, n - 1, ld) || span > (size_t)PTRDIFF_MAX - c->d_vocab)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "logits: %zu rows at ld %zu overflow", n, ld);
  mi_forward_extras x;
  mi_forward_extras_init(&x, sizeof x);
  status = mi__struct_in(&x, sizeof x, extras, "mi_forward_extras");
  if (status != MI_OK)
    return status;
  size_t need_p = 0, need_r = 0;
  bool over_p = !mi__mul_size(&need_p, c->n_layers * c->n_heads, n) || /* L·H fits: W_Q */
                !mi__mul_size(&need_p, need_p, n);
  bool over_r = !mul3(&need_r, c->n_layers + 1, n, c->d_model);
  status = check_buffer(x.patterns, x.patterns_count, need_p, over_p, "patterns",
                        "n_layers x n_heads x n x n");
  if (status == MI_OK)
    status = check_buffer(x.resid, x.resid_count, need_r, over_r, "resid",
                          "(n_layers + 1) x n x d_model");
  if (status == MI_OK)
    status = check_heads(&x, model, n);
  if (status != MI_OK)
    return status;
  return run_forward_heads(model, tokens, n, out, ld, x.patterns, x.resid, NULL, &x);
}

mi_status mi__forward_patterns(float *patterns, const mi_model *model, const size_t *tokens,
                               size_t n) {
  mi_status status = check_input(model, tokens, n);
  if (status != MI_OK)
    return status;
  return run_forward(model, tokens, n, NULL, 0, patterns, NULL, NULL);
}

/* ---- attribution ------------------------------------------------------------ */

void mi_attribution_options_init(mi_attribution_options *out, size_t struct_size) {
  const mi_attribution_options defaults = {.struct_size = sizeof defaults,
                                           .max_order = SIZE_MAX};
  mi__struct_init(out, struct_size, &defaults, sizeof defaults);
}

/* Rows of parts' logits one batch aims at, so a GEMM reads W_U for many parts. */
enum { BATCH_ROWS = 256 };

/*
 * Everything a walk over the paths needs, allocated once. Parts wait in a
 * batch so that their full logits come from one GEMM that reads W_U once for
 * many parts: one part at a time, streaming d_model × d_vocab floats from
 * memory for a few rows is where the time would go.
 */
typedef struct walk_frame {
  size_t layer, head;
} walk_frame;

typedef struct walk {
  const mi_model *model;
  size_t n;                 /* positions the paths run over: the last asked + 1 */
  size_t L, max_order;
  size_t P;                 /* positions reported */
  const size_t *positions;
  bool tokens, diffs, full_logits;
  const float *patterns;    /* L × H × n × n, frozen */
  const double *ln_scale;   /* (L + 1) × n, frozen; 1 without LayerNorm */
  float *stack;             /* (L + 1) × n × D: a path's vector, by order */
  float *values;            /* L × n × G × d_head: its values, by order */
  float *u, *z;             /* n × D, n × d_head */
  float *columns;           /* P × 2 × D: W_U's columns of each position's two tokens */
  double *column_bias;      /* P × 2: their b_U */
  size_t *path;             /* 2L: the current path's layers, then its heads */
  struct walk_frame *frames; /* L + 1: at each depth, the next (layer, head) to extend by */
  size_t capacity, pending; /* parts a batch holds, parts waiting */
  float *y;                 /* capacity × P × D: what the unembedding reads */
  float *logits;            /* capacity × P × d_vocab, or NULL */
  double *token_logit, *logit_diff; /* capacity × P each */
  mi_attribution_part *parts;       /* capacity labels */
  size_t *labels;           /* capacity × 2L: each waiting part's layers, heads */
  mi_attribution_fn callback;
  void *user;
  size_t count;
  bool stopped;
} walk;

/*
 * What a LayerNorm with frozen scale makes of a part v of the stream, without
 * its shift: (v - mean(v))·scale·w per row; v itself without a LayerNorm.
 */
static void frozen_norm(float *out, const float *v, const size_t *rows, size_t count, size_t D,
                        const double *scale, const float *w) {
  for (size_t r = 0; r < count; r++) {
    size_t t = rows ? rows[r] : r;
    const float *vr = v + t * D;
    double mean = 0.0;
    if (w != NULL) {
      for (size_t i = 0; i < D; i++)
        mean += vr[i];
      mean /= (double)D;
    }
    for (size_t i = 0; i < D; i++)
      out[r * D + i] = w ? (float)((vr[i] - mean) * scale[t] * w[i]) : vr[i];
  }
}

/* Hands the waiting parts to the callback, after their full logits' GEMM. */
static mi_status flush(walk *w) {
  const mi_config *c = &w->model->config;
  size_t D = c->d_model, V = c->d_vocab, rows = w->pending * w->P;
  if (w->full_logits && rows > 0) {
    mi_status status = mi__sgemm(1.0f, mi__matrix_rowmajor(w->y, rows, D),
                                 mi__matrix_rowmajor(w->model->w[MI_W_U], D, V), 0.0f,
                                 mi__matrix_rowmajor(w->logits, rows, V));
    size_t at[2];
    if (status == MI_OK && !mi__finite_f(w->logits, rows, V, V, at))
      status = mi__fail(MI_ERR_NUMERIC, "attribution: a part's logit %zu overflowed float32",
                        at[1]);
    if (status != MI_OK)
      return status;
  }
  for (size_t b = 0; b < w->pending && !w->stopped; b++) {
    mi_attribution_part *part = &w->parts[b];
    if (w->full_logits && part->source == MI_SOURCE_UNEMBED_BIAS && w->model->w[MI_B_U])
      add_rows(w->logits + b * w->P * V, w->P, V, V, w->model->w[MI_B_U]);
    w->count++;
    if (w->callback(part, w->user) != 0)
      w->stopped = true;
  }
  w->pending = 0;
  return MI_OK;
}

/*
 * Queues the part whose unembedding input is the next batch slot's y, with
 * the current source and path: its chosen tokens' logits now (a dot product
 * with each gathered column, in double), its full logits at the flush.
 */
static mi_status emit(walk *w, mi_path_source source, size_t source_layer, size_t order) {
  size_t D = w->model->config.d_model, P = w->P, b = w->pending;
  const float *y = w->y + b * P * D;
  double *token_logit = w->token_logit + b * P, *logit_diff = w->logit_diff + b * P;
  for (size_t i = 0; w->tokens && i < P; i++) {
    const float *ua = w->columns + 2 * i * D, *ub = ua + D;
    bool bias = source == MI_SOURCE_UNEMBED_BIAS;
    double la = bias ? w->column_bias[2 * i] : 0.0, lb = bias ? w->column_bias[2 * i + 1] : 0.0;
    for (size_t j = 0; j < D; j++) {
      la += (double)y[j + i * D] * ua[j];
      lb += (double)y[j + i * D] * ub[j];
    }
    token_logit[i] = la;
    logit_diff[i] = la - lb;
  }
  size_t *label = w->labels + b * 2 * w->L;
  memcpy(label, w->path, order * sizeof *label);
  memcpy(label + w->L, w->path + w->L, order * sizeof *label);
  w->parts[b] = (mi_attribution_part){
      .source = source, .source_layer = source_layer, .order = order, .layers = label,
      .heads = label + w->L, .n_positions = P, .positions = w->positions,
      .logits = w->full_logits ? w->logits + b * P * w->model->config.d_vocab : NULL,
      .token_logit = w->tokens ? token_logit : NULL,
      .logit_diff = w->diffs ? logit_diff : NULL};
  return ++w->pending == w->capacity ? flush(w) : MI_OK;
}

/* Queues the path whose vector is stack[order] (its heads in w->path). */
static mi_status visit(walk *w, mi_path_source source, size_t source_layer, size_t order) {
  const mi_model *m = w->model;
  size_t n = w->n, D = m->config.d_model;
  float *y = w->y + w->pending * w->P * D;
  frozen_norm(y, w->stack + order * n * D, w->positions, w->P, D, w->ln_scale + w->L * n,
              m->w[MI_LNF_W]);
  size_t at[2];
  if (!mi__finite_f(y, w->P, D, D, at))
    return mi__fail(MI_ERR_NUMERIC, "attribution: a path of order %zu overflowed float32 "
                    "(position %zu)", order, w->positions ? w->positions[at[0]] : at[0]);
  return emit(w, source, source_layer, order);
}

/*
 * Layer l's values at depth `order`: of every key/value head, computed once
 * for all the heads that extend the path there.
 */
static mi_status layer_values(walk *w, size_t order, size_t l) {
  const mi_model *m = w->model;
  const mi_config *c = &m->config;
  size_t n = w->n, D = c->d_model, dh = c->d_head, G = c->n_kv_heads;
  float *values = w->values + order * n * G * dh;
  frozen_norm(w->u, w->stack + order * n * D, NULL, n, D, w->ln_scale + l * n,
              layer_vec(m, MI_LN1_W, l));
  mi__matrix U = mi__matrix_rowmajor(w->u, n, D);
  mi_status status = MI_OK;
  for (size_t g = 0; g < G && status == MI_OK; g++) {
    mi__matrix Vg = {values + g * dh, n, dh, (ptrdiff_t)(G * dh), 1};
    status = mi__sgemm(1.0f, U, mi__matrix_rowmajor(m->w[MI_W_V] + (l * G + g) * D * dh, D, dh),
                       0.0f, Vg);
  }
  return status;
}

/* stack[order + 1] ← what head (l, h) makes of stack[order]: P·V·W_O. */
static mi_status head_child(walk *w, size_t order, size_t l, size_t h) {
  const mi_model *m = w->model;
  const mi_config *c = &m->config;
  size_t n = w->n, D = c->d_model, dh = c->d_head, G = c->n_kv_heads, i = l * c->n_heads + h;
  float *values = w->values + order * n * G * dh, *child = w->stack + (order + 1) * n * D;
  mi__matrix Vg = {values + mi__kv_head(m, h) * dh, n, dh, (ptrdiff_t)(G * dh), 1};
  mi__matrix Z = mi__matrix_rowmajor(w->z, n, dh);
  mi_status status = mi__sgemm(1.0f, mi__matrix_rowmajor((float *)w->patterns + i * n * n, n, n),
                               Vg, 0.0f, Z);
  if (status == MI_OK)
    status = mi__sgemm(1.0f, Z, mi__matrix_rowmajor(m->w[MI_W_O] + i * dh * D, dh, D), 0.0f,
                       mi__matrix_rowmajor(child, n, D));
  return status;
}

/*
 * Reports the path whose vector is stack[base] (its heads in w->path), then
 * every extension of it by heads of layers ≥ from, depth first. The
 * explicit stack (w->frames, one a depth) keeps a deep model off the C
 * stack.
 */
static mi_status walk_from(walk *w, mi_path_source source, size_t source_layer, size_t base,
                           size_t from) {
  size_t H = w->model->config.n_heads, order = base;
  mi_status status = visit(w, source, source_layer, order);
  if (status != MI_OK || w->stopped || order >= w->max_order)
    return status;
  w->frames[order] = (walk_frame){from, 0};
  while (status == MI_OK && !w->stopped) {
    walk_frame *f = &w->frames[order];
    if (f->layer >= w->L) {
      if (order == base)
        break;
      order--;
      continue;
    }
    if (f->head == H) {
      f->layer++;
      f->head = 0;
      continue;
    }
    size_t l = f->layer, h = f->head++;
    if (h == 0 && (status = layer_values(w, order, l)) != MI_OK)
      break;
    status = head_child(w, order, l, h);
    if (status != MI_OK)
      break;
    w->path[order] = l;
    w->path[w->L + order] = h;
    status = visit(w, source, source_layer, ++order);
    if (status == MI_OK && order < w->max_order)
      w->frames[order] = (walk_frame){l + 1, 0};
    else
      order--;
  }
  return status;
}

/* Fills the n rows of v (n × D) with one row vector (double, rounded once). */
static void fill_rows(float *v, size_t n, size_t D, const double *row) {
  for (size_t t = 0; t < n; t++)
    for (size_t i = 0; i < D; i++)
      v[t * D + i] = (float)row[i];
}

/*
 * The constant that head (l, h) writes whatever it attends to, because each
 * pattern row sums to 1: (ln1.b·W_V + b_V)·W_O, in double into `row`.
 */
static void value_bias(double *row, double *tmp, const mi_model *m, size_t l, size_t h) {
  const mi_config *c = &m->config;
  size_t D = c->d_model, dh = c->d_head, g = l * c->n_kv_heads + mi__kv_head(m, h);
  const float *W_V = m->w[MI_W_V] + g * D * dh;
  const float *W_O = m->w[MI_W_O] + (l * c->n_heads + h) * dh * D;
  const float *ln_b = layer_vec(m, MI_LN1_B, l);
  for (size_t a = 0; a < dh; a++) {
    tmp[a] = m->w[MI_B_V] ? m->w[MI_B_V][g * dh + a] : 0.0;
    for (size_t i = 0; ln_b && i < D; i++)
      tmp[a] += (double)ln_b[i] * W_V[i * dh + a];
  }
  for (size_t j = 0; j < D; j++) {
    row[j] = 0.0;
    for (size_t a = 0; a < dh; a++)
      row[j] += tmp[a] * W_O[a * D + j];
  }
}

/* Every source in order, each followed by the paths it starts. */
static mi_status walk_all(walk *w, const size_t *tokens, double *row) {
  const mi_model *m = w->model;
  size_t n = w->n, D = m->config.d_model;
  /* A shortformer model's positions are in the frozen patterns only. */
  embed(w->stack, m, tokens, n);
  mi_status status = walk_from(w, MI_SOURCE_EMBED, 0, 0, 0);
  bool value_biases = m->w[MI_B_V] != NULL || m->w[MI_LN1_B] != NULL;
  for (size_t l = 0; l < w->L && status == MI_OK && !w->stopped; l++) {
    for (size_t h = 0; value_biases && w->max_order > 0 && h < m->config.n_heads; h++) {
      value_bias(row, row + D, m, l, h);
      fill_rows(w->stack + n * D, n, D, row);
      w->path[0] = l;
      w->path[w->L] = h;
      status = walk_from(w, MI_SOURCE_VALUE_BIAS, l, 1, l + 1);
      if (status != MI_OK || w->stopped)
        return status;
    }
    if (m->w[MI_B_O] != NULL) {
      for (size_t i = 0; i < D; i++)
        row[i] = m->w[MI_B_O][l * D + i];
      fill_rows(w->stack, n, D, row);
      status = walk_from(w, MI_SOURCE_OUT_BIAS, l, 0, l + 1);
    }
  }
  if (status == MI_OK && !w->stopped && (m->w[MI_B_U] || m->w[MI_LNF_B])) {
    /* The unembedding's constant: ln_final.b·W_U + b_U. */
    float *y = w->y + w->pending * w->P * D;
    for (size_t i = 0; i < w->P; i++)
      for (size_t j = 0; j < D; j++)
        y[i * D + j] = m->w[MI_LNF_B] ? m->w[MI_LNF_B][j] : 0.0f;
    status = emit(w, MI_SOURCE_UNEMBED_BIAS, 0, 0);
  }
  return status == MI_OK && !w->stopped ? flush(w) : status;
}

/* Checks the options against the model and the sequence; fills `out`. */
static mi_status check_options(mi_attribution_options *out, const mi_attribution_options *in,
                               const mi_config *c, size_t n) {
  mi_attribution_options_init(out, sizeof *out);
  mi_status status = mi__struct_in(out, sizeof *out, in, "mi_attribution_options");
  if (status != MI_OK)
    return status;
  if (out->flags & ~(unsigned)MI_ATTRIBUTE_FULL_LOGITS)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "options.flags has unknown bits 0x%x", out->flags);
  if (out->positions != NULL && out->n_positions == 0)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "options.positions is set but n_positions is 0");
  size_t count = out->positions ? out->n_positions : n;
  for (size_t i = 0; out->positions && i < count; i++)
    if (out->positions[i] >= n)
      return mi__fail(MI_ERR_INDEX, "options.positions[%zu] = %zu is past the %zu tokens", i,
                      out->positions[i], n);
  if (out->diff_tokens != NULL && out->logit_tokens == NULL)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "options.diff_tokens needs options.logit_tokens");
  if (out->logit_tokens == NULL && !(out->flags & MI_ATTRIBUTE_FULL_LOGITS))
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "the options ask for nothing: set logit_tokens or MI_ATTRIBUTE_FULL_LOGITS");
  for (size_t i = 0; out->logit_tokens && i < count; i++) {
    size_t a = out->logit_tokens[i], b = out->diff_tokens ? out->diff_tokens[i] : 0;
    if (a >= c->d_vocab || b >= c->d_vocab)
      return mi__fail(MI_ERR_INDEX, "options.%s[%zu] = %zu is out of range (d_vocab %zu)",
                      a >= c->d_vocab ? "logit_tokens" : "diff_tokens", i,
                      a >= c->d_vocab ? a : b, c->d_vocab);
  }
  out->n_positions = count;
  return MI_OK;
}

/* Copies W_U's column and b_U entry of each position's two tokens. */
static void gather_columns(walk *w, const mi_attribution_options *opt) {
  const mi_model *m = w->model;
  size_t D = m->config.d_model, V = m->config.d_vocab;
  for (size_t i = 0; w->tokens && i < w->P; i++)
    for (int k = 0; k < 2; k++) {
      size_t token = k == 0 || !opt->diff_tokens ? opt->logit_tokens[i] : opt->diff_tokens[i];
      for (size_t j = 0; j < D; j++)
        w->columns[(2 * i + k) * D + j] = m->w[MI_W_U][j * V + token];
      w->column_bias[2 * i + k] = m->w[MI_B_U] ? m->w[MI_B_U][token] : 0.0;
    }
}

mi_status mi_model_attribute(size_t *out, const mi_model *model, const size_t *tokens,
                             size_t n, const mi_attribution_options *options,
                             mi_attribution_fn callback, void *user) {
  if (out != NULL)
    *out = 0;
  MI_CHECK_ARG(model);
  MI_CHECK_ARG(tokens);
  MI_CHECK_ARG(options);
  MI_CHECK_ARG(callback);
  mi_status status = check_input(model, tokens, n);
  if (status != MI_OK)
    return status;
  const mi_config *c = &model->config;
  mi_attribution_options opt;
  status = check_options(&opt, options, c, n);
  if (status != MI_OK)
    return status;
  /* Patterns are causal: positions after the last one asked for change nothing. */
  size_t last = opt.positions ? 0 : n - 1;
  for (size_t i = 0; opt.positions && i < opt.n_positions; i++)
    if (opt.positions[i] > last)
      last = opt.positions[i];
  n = last + 1;

  size_t L = c->n_layers, D = c->d_model, dh = c->d_head, P = opt.n_positions;
  bool full = opt.flags & MI_ATTRIBUTE_FULL_LOGITS;
  size_t capacity = full && P < BATCH_ROWS ? BATCH_ROWS / P : 1;
  plan p = {0, false};
  size_t o_patterns = reserve(&p, L * c->n_heads, n, n, sizeof(float));
  size_t o_scale = reserve(&p, L + 1, n, 1, sizeof(double));
  size_t o_stack = reserve(&p, L + 1, n, D, sizeof(float));
  size_t o_values = reserve(&p, L, n, c->n_kv_heads * dh, sizeof(float));
  size_t o_u = reserve(&p, n, D, 1, sizeof(float));
  size_t o_z = reserve(&p, n, dh, 1, sizeof(float));
  size_t o_columns = reserve(&p, opt.logit_tokens ? P : 0, 2, D, sizeof(float));
  size_t o_column_bias = reserve(&p, P, 2, 1, sizeof(double));
  size_t o_path = reserve(&p, 2, L, 1, sizeof(size_t));
  size_t o_frames = reserve(&p, L + 1, 1, 1, sizeof(walk_frame));
  size_t o_y = reserve(&p, capacity, P, D, sizeof(float));
  size_t o_logits = reserve(&p, full ? capacity : 0, P, c->d_vocab, sizeof(float));
  size_t o_token = reserve(&p, 2 * capacity, P, 1, sizeof(double));
  size_t o_parts = reserve(&p, capacity, 1, 1, sizeof(mi_attribution_part));
  size_t o_labels = reserve(&p, capacity, 2, L, sizeof(size_t));
  size_t o_row = reserve(&p, D + dh, 1, 1, sizeof(double));
  if (p.overflow)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "attribution scratch for %zu tokens overflows", n);
  unsigned char *base = allocate(p.bytes, 1, "attribution scratch", &status);
  if (base == NULL)
    return status;

  walk w = {
      .model = model, .n = n, .L = L, .max_order = opt.max_order, .P = P,
      .positions = opt.positions, .tokens = opt.logit_tokens != NULL,
      .diffs = opt.diff_tokens != NULL, .full_logits = full,
      .patterns = (float *)(base + o_patterns), .ln_scale = (double *)(base + o_scale),
      .stack = (float *)(base + o_stack), .values = (float *)(base + o_values),
      .u = (float *)(base + o_u), .z = (float *)(base + o_z),
      .columns = (float *)(base + o_columns), .column_bias = (double *)(base + o_column_bias),
      .path = (size_t *)(base + o_path), .frames = (walk_frame *)(base + o_frames),
      .capacity = capacity, .y = (float *)(base + o_y),
      .logits = full ? (float *)(base + o_logits) : NULL,
      .token_logit = (double *)(base + o_token),
      .parts = (mi_attribution_part *)(base + o_parts), .labels = (size_t *)(base + o_labels),
      .callback = callback, .user = user};
  w.logit_diff = w.token_logit + capacity * P;
  gather_columns(&w, &opt);
  status = run_forward(model, tokens, n, NULL, 0, (float *)w.patterns, NULL,
                       (double *)w.ln_scale);
  if (status == MI_OK)
    status = walk_all(&w, tokens, (double *)(base + o_row));
  if (out != NULL)
    *out = w.count;
  free(base);
  return status;
}
