/*
 * model.c: mi_model's shape, weights, LayerNorm folding and centering.
 */
/* MADV_HUGEPAGE */
#define _DEFAULT_SOURCE
#include "kernel.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

void mi_config_init(mi_config *out, size_t struct_size) {
  const mi_config defaults = {.struct_size = sizeof defaults, .ln_eps = 1e-5};
  mi__struct_init(out, struct_size, &defaults, sizeof defaults);
}

static const char *const weight_names[MI_WEIGHT_COUNT] = {
    [MI_W_E] = "W_E",       [MI_W_POS] = "W_pos",   [MI_W_Q] = "W_Q",
    [MI_W_K] = "W_K",       [MI_W_V] = "W_V",       [MI_W_O] = "W_O",
    [MI_B_Q] = "b_Q",       [MI_B_K] = "b_K",       [MI_B_V] = "b_V",
    [MI_B_O] = "b_O",       [MI_W_U] = "W_U",       [MI_B_U] = "b_U",
    [MI_LN1_W] = "ln1.w",   [MI_LN1_B] = "ln1.b",   [MI_LNF_W] = "ln_final.w",
    [MI_LNF_B] = "ln_final.b",
};

const char *mi__weight_name(mi_weight which) {
  return (unsigned)which < MI_WEIGHT_COUNT ? weight_names[which] : "?";
}

/* The optional part a weight belongs to; 0 for the weights every model has. */
static unsigned weight_part(mi_weight which) {
  switch (which) {
  case MI_W_POS: return MI_PART_POS_EMBED;
  case MI_B_Q: case MI_B_K: case MI_B_V: return MI_PART_QKV_BIAS;
  case MI_B_O: return MI_PART_OUT_BIAS;
  case MI_B_U: return MI_PART_UNEMBED_BIAS;
  case MI_LN1_W: case MI_LN1_B: return MI_PART_LN;
  case MI_LNF_W: case MI_LNF_B: return MI_PART_LN_FINAL;
  default: return 0;
  }
}

mi__weight_geometry mi__weight_geometry_of(const mi_config *c, mi_weight which) {
  mi__weight_geometry g = {.rows = 1, .cols = c->d_model, .copies = 1};
  switch (which) {
  case MI_W_E: g.rows = c->d_vocab; break;
  case MI_W_POS: g.rows = c->n_ctx; break;
  case MI_W_Q: g.rows = c->d_model; g.cols = c->d_head; g.per_head = true; break;
  case MI_W_K: case MI_W_V:
    g.rows = c->d_model; g.cols = c->d_head; g.per_kv_head = true; break;
  case MI_W_O: g.rows = c->d_head; g.per_head = true; break;
  case MI_B_Q: g.cols = c->d_head; g.per_head = true; break;
  case MI_B_K: case MI_B_V: g.cols = c->d_head; g.per_kv_head = true; break;
  case MI_B_O: case MI_LN1_W: case MI_LN1_B: g.per_layer = true; break;
  case MI_W_U: g.rows = c->d_model; g.cols = c->d_vocab; break;
  case MI_B_U: g.cols = c->d_vocab; break;
  default: break; /* ln_final: 1 × d_model, one copy */
  }
  if (g.per_head)
    g.copies = c->n_layers * c->n_heads;
  else if (g.per_kv_head)
    g.copies = c->n_layers * c->n_kv_heads;
  else if (g.per_layer)
    g.copies = c->n_layers;
  return g;
}

void mi_model_free(mi_model *model) {
  if (model == NULL)
    return;
  /* Drop a reference held by a circuit, if any; the last owner frees. */
  size_t refs = atomic_load(&model->extra_refs);
  while (refs > 0)
    if (atomic_compare_exchange_weak(&model->extra_refs, &refs, refs - 1))
      return;
  for (int i = 0; i < MI_WEIGHT_COUNT; i++)
    free(model->w[i]);
  free(model->pos_q);
  free(model->pos_k);
  mi__vocab_free(model->vocab);
  free(model);
}

/*
 * Huge pages for the page-aligned inside of a large allocation: a model's
 * weights are hundreds of megabytes, and filling them through 4 KiB faults
 * cost more than copying the bytes in. Advice only: its failure changes
 * nothing, and calloc's untouched pages stay untouched.
 */
void mi__advise_huge(void *p, size_t bytes) {
#ifdef MADV_HUGEPAGE
  const uintptr_t page = 4096, huge = (uintptr_t)2 << 20;
  uintptr_t begin = ((uintptr_t)p + page - 1) & ~(page - 1);
  uintptr_t end = ((uintptr_t)p + bytes) & ~(page - 1);
  if (bytes >= huge && end > begin)
    madvise((void *)begin, end - begin, MADV_HUGEPAGE);
#else
  (void)p, (void)bytes;
#endif
}

/* New zeroed storage for one weight into *out; LayerNorm scales start at 1. */
static mi_status new_weight(float **out, const mi_config *c, mi_weight which) {
  mi__weight_geometry g = mi__weight_geometry_of(c, which);
  size_t count;
  if (!mi__mul_size(&count, g.rows, g.cols) || !mi__mul_size(&count, count, g.copies) ||
      count > SIZE_MAX / sizeof(float))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "%s: %zu x %zu x %zu floats overflow size_t",
                    mi__weight_name(which), g.copies, g.rows, g.cols);
  float *w = calloc(count ? count : 1, sizeof *w);
  if (w == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu floats",
                    mi__weight_name(which), count);
  mi__advise_huge(w, count * sizeof *w);
  if (which == MI_LN1_W || which == MI_LNF_W)
    for (size_t i = 0; i < count; i++)
      w[i] = 1.0f;
  *out = w;
  return MI_OK;
}

static mi_status allocate_weight(mi_model *model, mi_weight which) {
  return new_weight(&model->w[which], &model->config, which);
}

/* Checks a full config: the caller's, copied in over the defaults. */
static mi_status check_config(const mi_config *c) {
  const struct { const char *name; size_t value; } dims[] = {
      {"n_layers", c->n_layers}, {"n_heads", c->n_heads}, {"d_model", c->d_model},
      {"d_head", c->d_head},     {"d_vocab", c->d_vocab}};
  for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
    if (dims[i].value == 0)
      return mi__fail(MI_ERR_INVALID_ARGUMENT, "mi_config.%s is 0", dims[i].name);
  if (c->n_kv_heads != 0 && (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads))
    return mi__fail(MI_ERR_SHAPE, "n_kv_heads %zu does not divide n_heads %zu",
                    c->n_kv_heads, c->n_heads);
  if ((c->parts & MI_PART_POS_EMBED) && c->n_ctx == 0)
    return mi__fail(MI_ERR_SHAPE, "a positional embedding needs n_ctx > 0");
  if (c->parts & ~(unsigned)(MI_PART_MLP * 2 - 1))
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "mi_config.parts has unknown bits 0x%x",
                    c->parts);
  if (!(c->ln_eps >= 0.0) || !isfinite(c->ln_eps))
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "mi_config.ln_eps must be finite and >= 0");
  bool has_pos = c->parts & MI_PART_POS_EMBED;
  switch (c->positional) {
  case MI_POSITIONAL_DEFAULT: break;
  case MI_POSITIONAL_STANDARD:
  case MI_POSITIONAL_SHORTFORMER:
    if (!has_pos)
      return mi__fail(MI_ERR_INVALID_ARGUMENT, "mi_config.positional %s needs W_pos "
                      "(MI_PART_POS_EMBED)", mi__positional_name(c->positional));
    break;
  case MI_POSITIONAL_NONE:
    if (has_pos)
      return mi__fail(MI_ERR_INVALID_ARGUMENT,
                      "mi_config.positional is none, but parts has MI_PART_POS_EMBED");
    break;
  default:
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "mi_config.positional %d is not an "
                    "mi_positional", (int)c->positional);
  }
  return MI_OK;
}

const char *mi__positional_name(mi_positional kind) {
  switch (kind) {
  case MI_POSITIONAL_DEFAULT: return "default";
  case MI_POSITIONAL_STANDARD: return "standard";
  case MI_POSITIONAL_SHORTFORMER: return "shortformer";
  case MI_POSITIONAL_NONE: return "none";
  }
  return "?";
}

mi_status mi_model_create(mi_model **out, const mi_config *config) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(config);
  /* Only what the caller's struct has is read; the rest keeps its default. */
  mi_config c;
  mi_config_init(&c, sizeof c);
  mi_status status = mi__struct_in(&c, sizeof c, config, "mi_config");
  if (status == MI_OK)
    status = check_config(&c);
  if (status != MI_OK)
    return status;
  mi_model *model = calloc(1, sizeof *model);
  if (model == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate a model");
  model->config = c;
  if (model->config.n_kv_heads == 0)
    model->config.n_kv_heads = model->config.n_heads;
  if (model->config.positional == MI_POSITIONAL_DEFAULT)
    model->config.positional = (c.parts & MI_PART_POS_EMBED) ? MI_POSITIONAL_STANDARD
                                                             : MI_POSITIONAL_NONE;
  for (int i = 0; i < MI_WEIGHT_COUNT; i++) {
    unsigned part = weight_part((mi_weight)i);
    if (part != 0 && !(model->config.parts & part))
      continue;
    status = allocate_weight(model, (mi_weight)i);
    if (status != MI_OK) {
      mi_model_free(model);
      return status;
    }
  }
  *out = model;
  return MI_OK;
}

/* A copy of `count` floats at src into *out (NULL src: NULL). */
static mi_status copy_floats(float **out, const float *src, size_t count, const char *what) {
  *out = NULL;
  if (src == NULL)
    return MI_OK;
  if (count > SIZE_MAX / sizeof(float))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "copy: %s of %zu floats overflows", what, count);
  *out = malloc(count ? count * sizeof(float) : 1);
  if (*out == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "copy: cannot allocate %s (%zu floats)", what,
                    count);
  memcpy(*out, src, count * sizeof(float));
  return MI_OK;
}

mi_status mi_model_copy(mi_model **out, const mi_model *model) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(model);
  mi_model *copy = calloc(1, sizeof *copy);
  if (copy == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate a model");
  const mi_config *c = &model->config;
  copy->config = *c;
  copy->processing = model->processing;
  copy->processed = model->processed;
  copy->layout = model->layout;
  mi_status status = MI_OK;
  for (int i = 0; i < MI_WEIGHT_COUNT && status == MI_OK; i++) {
    mi__weight_geometry g = mi__weight_geometry_of(c, (mi_weight)i);
    /* Each weight's product fitted when the model allocated it. */
    status = copy_floats(&copy->w[i], model->w[i], g.copies * g.rows * g.cols,
                         mi__weight_name((mi_weight)i));
  }
  size_t per_head = c->n_ctx * c->d_head; /* sizes the original allocated */
  if (status == MI_OK)
    status = copy_floats(&copy->pos_q, model->pos_q, c->n_layers * c->n_heads * per_head,
                         "W_pos W_Q");
  if (status == MI_OK)
    status = copy_floats(&copy->pos_k, model->pos_k, c->n_layers * c->n_kv_heads * per_head,
                         "W_pos W_K");
  if (status != MI_OK) {
    mi_model_free(copy);
    return status;
  }
  copy->vocab = mi__vocab_share(model->vocab);
  *out = copy;
  return MI_OK;
}

mi_status mi__weight_slot(float **out, const mi_model *model, mi_weight which,
                          size_t layer, size_t head) {
  if ((unsigned)which >= MI_WEIGHT_COUNT)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "unknown weight %d", (int)which);
  const mi_config *c = &model->config;
  if (model->w[which] == NULL)
    return mi__fail(MI_ERR_UNSUPPORTED, "the model has no %s", mi__weight_name(which));
  mi__weight_geometry g = mi__weight_geometry_of(c, which);
  bool layered = g.per_layer || g.per_head || g.per_kv_head;
  size_t heads = g.per_head ? c->n_heads : g.per_kv_head ? c->n_kv_heads : 1;
  if (layered ? layer >= c->n_layers : layer != 0)
    return mi__fail(MI_ERR_INDEX, "%s: layer %zu out of range (%zu layers%s)",
                    mi__weight_name(which), layer, layered ? c->n_layers : 0,
                    layered ? "" : "; the weight is global, pass 0");
  if (head >= heads)
    return mi__fail(MI_ERR_INDEX, "%s: head %zu out of range (%zu %s)",
                    mi__weight_name(which), head, heads,
                    g.per_kv_head ? "kv heads" : g.per_head ? "heads" : "copy; pass 0");
  *out = model->w[which] + (layer * heads + head) * g.rows * g.cols;
  return MI_OK;
}

/* Bytes per element of `dtype`; 0 for an unknown dtype. */
static size_t dtype_size(mi_dtype dtype) {
  switch (dtype) {
  case MI_DTYPE_F32: return 4;
  case MI_DTYPE_F64: return 8;
  case MI_DTYPE_F16: case MI_DTYPE_BF16: return 2;
  }
  return 0;
}

/* IEEE half precision to float, subnormals and infinities included. */
static float half_to_float(uint16_t h) {
  unsigned sign = h >> 15, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  float value;
  if (exponent == 0)
    value = ldexpf((float)mantissa, -24);
  else if (exponent == 31)
    value = mantissa ? NAN : INFINITY;
  else
    value = ldexpf((float)(mantissa | 0x400), (int)exponent - 25);
  return sign ? -value : value;
}

/* One element of `dtype` at p (any alignment, host byte order) as float. */
static inline float read_element(const unsigned char *p, mi_dtype dtype) {
  /* memcpy: file data need not be aligned. Little-endian host assumed. */
  switch (dtype) {
  case MI_DTYPE_F32: { float f; memcpy(&f, p, 4); return f; }
  case MI_DTYPE_F64: { double d; memcpy(&d, p, 8); return (float)d; }
  case MI_DTYPE_F16: { uint16_t h; memcpy(&h, p, 2); return half_to_float(h); }
  case MI_DTYPE_BF16: {
    uint16_t h; memcpy(&h, p, 2);
    uint32_t bits = (uint32_t)h << 16; float f; memcpy(&f, &bits, 4); return f;
  }
  }
  return 0.0f;
}

/* n elements of `dtype`, `step` bytes apart from src, into dst as float. */
static void convert_line(float *dst, const unsigned char *src, size_t n, size_t step,
                         mi_dtype dtype) {
  if (dtype == MI_DTYPE_F32 && step == 4) {
    memcpy(dst, src, n * 4);
    return;
  }
  /* dtype is loop-invariant: the compiler unswitches the loop per dtype. */
  for (size_t j = 0; j < n; j++)
    dst[j] = read_element(src + j * step, dtype);
}

/*
 * rows × cols elements at src (strides in elements) into the row-major slot.
 * A row whose elements are further apart than its neighbours (a transposed
 * view: W_U read from W_E's columns) is copied in blocks of rows that walk
 * the source in its own order, one cache line feeding a block's rows.
 */
static bool convert_matrix(float *slot, const unsigned char *src, size_t rows, size_t cols,
                           size_t row_stride, size_t col_stride, size_t item,
                           mi_dtype dtype) {
  /* Each row (or block) is screened while it is still in cache. */
  bool finite = true;
  size_t at[2];
  if (rows == 1 || col_stride <= row_stride) {
    for (size_t i = 0; i < rows; i++) {
      convert_line(slot + i * cols, src + i * row_stride * item, cols, col_stride * item,
                   dtype);
      finite &= mi__finite_f(slot + i * cols, 1, cols, cols, at);
    }
    return finite;
  }
  enum { BLOCK = 16 };
  for (size_t i0 = 0; i0 < rows; i0 += BLOCK) {
    size_t n = rows - i0 < BLOCK ? rows - i0 : BLOCK;
    for (size_t j = 0; j < cols; j++) {
      const unsigned char *column = src + (i0 * row_stride + j * col_stride) * item;
      for (size_t b = 0; b < n; b++)
        slot[(i0 + b) * cols + j] = read_element(column + b * row_stride * item, dtype);
    }
    finite &= mi__finite_f(slot + i0 * cols, n, cols, cols, at);
  }
  return finite;
}

/*
 * The weight's slot, after the checks every writer of a weight passes: the
 * model must not have live circuits or a processed shortformer's kept terms.
 */
static mi_status writable_slot(float **out, mi__weight_geometry *g, mi_model *model,
                               mi_weight which, size_t layer, size_t head) {
  /* A processed shortformer model keeps W_pos·W_Q and W_pos·W_K of the
   * weights before processing, which a new W_pos, W_Q or W_K would contradict. */
  if (model->pos_q != NULL && (which == MI_W_POS || which == MI_W_Q || which == MI_W_K))
    return mi__fail(MI_ERR_STATE, "%s: this processed shortformer model keeps its positional "
                    "terms from the weights before processing; they cannot change now",
                    mi__weight_name(which));
  if (atomic_load(&model->extra_refs) > 0)
    return mi__fail(MI_ERR_STATE, "%s: the model has live circuits, some reading its weights "
                    "in place; free them before changing a weight", mi__weight_name(which));
  mi_status status = mi__weight_slot(out, model, which, layer, head);
  if (status == MI_OK)
    *g = mi__weight_geometry_of(&model->config, which);
  return status;
}

/*
 * Checks a slot just written: MI_OK when every element is finite, else the
 * slot goes back to its start (the model keeps finite weights only) and
 * MI_ERR_NONFINITE names the element. `f64` (or NULL): the float64 source
 * element [i, j] at f64 + i * row_step + j * col_step bytes, to tell an
 * overflow from a NaN or infinity that was in the file.
 */
static mi_status accept_slot(float *slot, const mi__weight_geometry *g, mi_weight which,
                             size_t layer, size_t head, const unsigned char *f64,
                             size_t row_step, size_t col_step) {
  size_t at[2] = {0, 0};
  if (mi__finite_f(slot, g->rows, g->cols, g->cols, at))
    return MI_OK;
  float bad = slot[at[0] * g->cols + at[1]];
  float initial = which == MI_LN1_W || which == MI_LNF_W ? 1.0f : 0.0f;
  for (size_t i = 0; i < g->rows * g->cols; i++)
    slot[i] = initial;
  double source = 0.0;
  if (f64 != NULL)
    memcpy(&source, f64 + at[0] * row_step + at[1] * col_step, sizeof source);
  bool overflow = f64 != NULL && isfinite(source);
  return mi__fail(MI_ERR_NONFINITE, "%s (layer %zu, head %zu): element [%zu, %zu] is %s%s; "
                  "libmi refuses NaN and infinite weights", mi__weight_name(which), layer,
                  head, at[0], at[1], isnan(bad) ? "NaN" : bad > 0 ? "+inf" : "-inf",
                  overflow ? " (a float64 beyond float32's range)" : "");
}

mi_status mi__model_set_weight_strided(mi_model *model, mi_weight which, size_t layer,
                                       size_t head, mi_dtype dtype, const void *data,
                                       size_t row_stride, size_t col_stride) {
  MI_CHECK_ARG(model);
  MI_CHECK_ARG(data);
  size_t item = dtype_size(dtype);
  if (item == 0)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "unknown dtype %d", (int)dtype);
  float *slot;
  mi__weight_geometry g;
  mi_status status = writable_slot(&slot, &g, model, which, layer, head);
  if (status != MI_OK)
    return status;
  if (g.rows > 1 && row_stride < g.cols * col_stride && col_stride < g.rows * row_stride)
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "%s: row stride %zu and column stride %zu overlap a %zu x %zu matrix",
                    mi__weight_name(which), row_stride, col_stride, g.rows, g.cols);
  /* A float64 beyond float32's range becomes an infinity in the conversion,
   * so converted values are what is checked. */
  const unsigned char *bytes = data;
  if (convert_matrix(slot, bytes, g.rows, g.cols, row_stride, col_stride, item, dtype))
    return MI_OK;
  return accept_slot(slot, &g, which, layer, head, dtype == MI_DTYPE_F64 ? bytes : NULL,
                     row_stride * item, col_stride * item);
}

mi_status mi__model_weight_target(float **out, size_t *out_count, mi_model *model,
                                  mi_weight which, size_t layer, size_t head) {
  mi__weight_geometry g;
  mi_status status = writable_slot(out, &g, model, which, layer, head);
  *out_count = status == MI_OK ? g.rows * g.cols : 0;
  return status;
}

mi_status mi__model_weight_accept(mi_model *model, mi_weight which, size_t layer,
                                  size_t head) {
  float *slot = NULL;
  mi_status status = mi__weight_slot(&slot, model, which, layer, head);
  mi__weight_geometry g = mi__weight_geometry_of(&model->config, which);
  return status == MI_OK ? accept_slot(slot, &g, which, layer, head, NULL, 0, 0) : status;
}

mi_status mi_model_set_weight(mi_model *model, mi_weight which, size_t layer, size_t head,
                              mi_dtype dtype, const void *data, size_t row_stride) {
  MI_CHECK_ARG(model);
  if ((unsigned)which < MI_WEIGHT_COUNT) {
    mi__weight_geometry g = mi__weight_geometry_of(&model->config, which);
    if (g.rows > 1 && row_stride < g.cols)
      return mi__fail(MI_ERR_INVALID_ARGUMENT, "%s: row_stride %zu < %zu columns",
                      mi__weight_name(which), row_stride, g.cols);
  }
  return mi__model_set_weight_strided(model, which, layer, head, dtype, data, row_stride, 1);
}

/* ---- processing ----------------------------------------------------------- */

/*
 * Makes sure an optional bias exists, zero, before folding writes into it.
 * All or nothing: the part's bit and arrays change only when every
 * allocation succeeded, so a failure leaves the model as it was.
 */
static mi_status ensure_part(mi_model *model, unsigned part, mi_weight first,
                             mi_weight last) {
  if (model->config.parts & part)
    return MI_OK;
  float *w[MI_WEIGHT_COUNT] = {NULL};
  mi_status status = MI_OK;
  for (int i = first; i <= (int)last && status == MI_OK; i++)
    status = new_weight(&w[i], &model->config, (mi_weight)i);
  for (int i = first; i <= (int)last; i++) {
    if (status == MI_OK)
      model->w[i] = w[i];
    else
      free(w[i]);
  }
  if (status == MI_OK)
    model->config.parts |= part;
  return status;
}

/* Undoes ensure_part. */
static void drop_part(mi_model *model, unsigned part, mi_weight first, mi_weight last) {
  for (int i = first; i <= (int)last; i++) {
    free(model->w[i]);
    model->w[i] = NULL;
  }
  model->config.parts &= ~part;
}

static bool any_nonzero(const float *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (v[i] != 0.0f)
      return true;
  return false;
}

/*
 * Folds a LayerNorm (w, b) into a reading matrix W (rows = d_model) and its
 * bias: bias ← bias + b·W, then W ← diag(w)·W. `bias` may be NULL when b = 0.
 * Row by row, in memory order (a column walk of a d_vocab-wide W_U misses
 * the cache at every element); `acc` holds `cols` doubles, so each sum runs
 * over the rows in order as before.
 */
static void fold_into(float *W, float *bias, size_t d_model, size_t cols,
                      const float *ln_w, const float *ln_b, double *acc) {
  if (bias != NULL)
    for (size_t j = 0; j < cols; j++)
      acc[j] = bias[j];
  for (size_t i = 0; i < d_model; i++) {
    float *row = W + i * cols;
    if (bias != NULL) {
      double b = ln_b[i];
      for (size_t j = 0; j < cols; j++)
        acc[j] += b * row[j];
    }
    for (size_t j = 0; j < cols; j++)
      row[j] *= ln_w[i];
  }
  if (bias != NULL)
    for (size_t j = 0; j < cols; j++)
      bias[j] = (float)acc[j];
}

static mi_status fold_layernorms(mi_model *model, double *acc) {
  const mi_config *c = &model->config;
  size_t D = c->d_model, dh = c->d_head;
  /* Biases first, so that running out of memory leaves the model as it was. */
  mi_status status = MI_OK;
  bool add_qkv = (c->parts & MI_PART_LN) && !(c->parts & MI_PART_QKV_BIAS) &&
                 any_nonzero(model->w[MI_LN1_B], c->n_layers * D);
  if (add_qkv)
    status = ensure_part(model, MI_PART_QKV_BIAS, MI_B_Q, MI_B_V);
  if (status == MI_OK && (c->parts & MI_PART_LN_FINAL) && any_nonzero(model->w[MI_LNF_B], D))
    status = ensure_part(model, MI_PART_UNEMBED_BIAS, MI_B_U, MI_B_U);
  if (status != MI_OK) {
    if (add_qkv && (c->parts & MI_PART_QKV_BIAS))
      drop_part(model, MI_PART_QKV_BIAS, MI_B_Q, MI_B_V);
    return status;
  }
  if (c->parts & MI_PART_LN) {
    for (size_t l = 0; l < c->n_layers; l++) {
      const float *ln_w = model->w[MI_LN1_W] + l * D, *ln_b = model->w[MI_LN1_B] + l * D;
      for (size_t h = 0; h < c->n_heads; h++) {
        size_t i = l * c->n_heads + h;
        fold_into(model->w[MI_W_Q] + i * D * dh,
                  model->w[MI_B_Q] ? model->w[MI_B_Q] + i * dh : NULL, D, dh, ln_w, ln_b,
                  acc);
      }
      for (size_t h = 0; h < c->n_kv_heads; h++) {
        size_t i = l * c->n_kv_heads + h;
        for (mi_weight W = MI_W_K; W <= MI_W_V; W++) {
          mi_weight b = W == MI_W_K ? MI_B_K : MI_B_V;
          fold_into(model->w[W] + i * D * dh, model->w[b] ? model->w[b] + i * dh : NULL,
                    D, dh, ln_w, ln_b, acc);
        }
      }
    }
    for (size_t i = 0; i < c->n_layers * D; i++) {
      model->w[MI_LN1_W][i] = 1.0f;
      model->w[MI_LN1_B][i] = 0.0f;
    }
  }
  if (c->parts & MI_PART_LN_FINAL) {
    fold_into(model->w[MI_W_U], model->w[MI_B_U], D, c->d_vocab, model->w[MI_LNF_W],
              model->w[MI_LNF_B], acc);
    for (size_t i = 0; i < D; i++) {
      model->w[MI_LNF_W][i] = 1.0f;
      model->w[MI_LNF_B][i] = 0.0f;
    }
  }
  return MI_OK;
}

/* Each row of a count × n matrix loses its mean. */
static void center_rows(float *m, size_t count, size_t n) {
  for (size_t i = 0; i < count; i++) {
    float *row = m + i * n;
    double mean = 0.0;
    for (size_t k = 0; k < n; k++)
      mean += row[k];
    mean /= (double)n;
    for (size_t k = 0; k < n; k++)
      row[k] = (float)(row[k] - mean);
  }
}

/*
 * Each column of a rows × cols matrix loses its mean: sums in `acc` (cols
 * doubles) over the rows in memory order, not a cache-missing column walk.
 */
static void center_columns(float *m, size_t rows, size_t cols, double *acc) {
  for (size_t j = 0; j < cols; j++)
    acc[j] = 0.0;
  for (size_t i = 0; i < rows; i++)
    for (size_t j = 0; j < cols; j++)
      acc[j] += m[i * cols + j];
  for (size_t j = 0; j < cols; j++)
    acc[j] /= (double)rows;
  for (size_t i = 0; i < rows; i++)
    for (size_t j = 0; j < cols; j++)
      m[i * cols + j] = (float)(m[i * cols + j] - acc[j]);
}

static void center_writing_weights(mi_model *model, double *acc) {
  const mi_config *c = &model->config;
  size_t D = c->d_model, dh = c->d_head;
  center_rows(model->w[MI_W_E], c->d_vocab, D);
  /* A shortformer W_pos is added after ln1, never normalised: it stays. */
  if (model->w[MI_W_POS] && c->positional == MI_POSITIONAL_STANDARD)
    center_rows(model->w[MI_W_POS], c->n_ctx, D);
  center_rows(model->w[MI_W_O], c->n_layers * c->n_heads * dh, D);
  if (model->w[MI_B_O])
    center_rows(model->w[MI_B_O], c->n_layers, D);
  /* Readers: every input is LayerNorm-ed, so its mean over d_model is 0. */
  for (size_t i = 0; i < c->n_layers * c->n_heads; i++)
    center_columns(model->w[MI_W_Q] + i * D * dh, D, dh, acc);
  for (size_t i = 0; i < c->n_layers * c->n_kv_heads; i++) {
    center_columns(model->w[MI_W_K] + i * D * dh, D, dh, acc);
    center_columns(model->w[MI_W_V] + i * D * dh, D, dh, acc);
  }
  center_columns(model->w[MI_W_U], D, c->d_vocab, acc);
}

mi_status mi__positional_side(float *out, const mi_model *model, mi_weight which, size_t layer,
                              size_t head, size_t rows, float scale) {
  const mi_config *c = &model->config;
  size_t D = c->d_model, dh = c->d_head;
  size_t i = layer * (which == MI_W_Q ? c->n_heads : c->n_kv_heads) + head;
  const float *kept = which == MI_W_Q ? model->pos_q : model->pos_k;
  if (kept != NULL) {
    for (size_t k = 0; k < rows * dh; k++)
      out[k] = scale * kept[i * c->n_ctx * dh + k];
    return MI_OK;
  }
  return mi__sgemm(scale, mi__matrix_rowmajor(model->w[MI_W_POS], rows, D),
                   mi__matrix_rowmajor(model->w[which] + i * D * dh, D, dh), 0.0f,
                   mi__matrix_rowmajor(out, rows, dh));
}

/*
 * Before folding changes W_Q and W_K of a shortformer model: the positional
 * side, W_pos·W of the weights as they are, kept for every head. Precomputed
 * terms rather than copies of W_Q/W_K: the folded forward pass then adds a
 * row where it would otherwise need a second n × d_model × d_head product.
 */
static mi_status keep_positional_side(mi_model *model) {
  const mi_config *c = &model->config;
  size_t block, nq, nk;
  if (!mi__mul_size(&block, c->n_ctx, c->d_head) ||
      !mi__mul_size(&nq, block, c->n_layers * c->n_heads) ||
      !mi__mul_size(&nk, block, c->n_layers * c->n_kv_heads) || nq > SIZE_MAX / sizeof(float))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "positional terms of %zu positions x %zu heads "
                    "overflow size_t", c->n_ctx, c->n_layers * c->n_heads);
  float *q = calloc(nq ? nq : 1, sizeof *q), *k = calloc(nk ? nk : 1, sizeof *k);
  mi_status status = q && k ? MI_OK
                            : mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate the positional "
                                       "terms W_pos W_Q, W_pos W_K (%zu floats)", nq + nk);
  for (size_t l = 0; l < c->n_layers && status == MI_OK; l++) {
    for (size_t h = 0; h < c->n_heads && status == MI_OK; h++)
      status = mi__positional_side(q + (l * c->n_heads + h) * block, model, MI_W_Q, l, h,
                                   c->n_ctx, 1.0f);
    for (size_t g = 0; g < c->n_kv_heads && status == MI_OK; g++)
      status = mi__positional_side(k + (l * c->n_kv_heads + g) * block, model, MI_W_K, l, g,
                                   c->n_ctx, 1.0f);
  }
  if (status != MI_OK) {
    free(q);
    free(k);
    return status;
  }
  model->pos_q = q;
  model->pos_k = k;
  return MI_OK;
}

/*
 * Folding multiplies finite weights, which can overflow float32: a model
 * whose processed weights are not all finite is refused (its queries would
 * fail anyway, each with MI_ERR_NUMERIC).
 */
static mi_status check_processed(const mi_model *model, unsigned steps) {
  /* Only what the steps rewrote: every other weight was screened as it came in. */
  unsigned changed = 0;
  if (steps & (MI_PROCESS_FOLD_LN | MI_PROCESS_CENTER_UNEMBED))
    changed |= 1u << MI_W_U | 1u << MI_B_U;
  if (steps & MI_PROCESS_FOLD_LN)
    changed |= 1u << MI_W_Q | 1u << MI_W_K | 1u << MI_W_V | 1u << MI_B_Q | 1u << MI_B_K |
               1u << MI_B_V;
  if (steps & MI_PROCESS_CENTER_WRITING)
    changed |= 1u << MI_W_E | 1u << MI_W_POS | 1u << MI_W_O | 1u << MI_B_O;
  for (int i = 0; i < MI_WEIGHT_COUNT; i++) {
    if (model->w[i] == NULL || !(changed & 1u << i))
      continue;
    mi__weight_geometry g = mi__weight_geometry_of(&model->config, (mi_weight)i);
    size_t at[2];
    if (!mi__finite_f(model->w[i], g.copies * g.rows, g.cols, g.cols, at))
      return mi__fail(MI_ERR_NUMERIC, "processing overflowed float32: %s copy %zu, element "
                      "[%zu, %zu] is no longer finite (a weight times its LayerNorm scale, "
                      "or a centred value, beyond 3.4e38); free the model",
                      mi__weight_name((mi_weight)i), at[0] / g.rows, at[0] % g.rows, at[1]);
  }
  return MI_OK;
}

mi_status mi_model_process(mi_model *model, unsigned steps) {
  MI_CHECK_ARG(model);
  if (steps & ~(unsigned)MI_PROCESS_TRANSFORMERLENS)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "unknown processing bits 0x%x", steps);
  if (model->processed)
    return mi__fail(MI_ERR_STATE, "the model was already processed (steps 0x%x)",
                    model->processing);
  if (atomic_load(&model->extra_refs) > 0)
    return mi__fail(MI_ERR_STATE, "the model has live circuits, some reading its weights in "
                    "place; free them before processing it");
  const unsigned both_ln = MI_PART_LN | MI_PART_LN_FINAL;
  if ((steps & MI_PROCESS_CENTER_WRITING) && (model->config.parts & both_ln) != both_ln)
    return mi__fail(MI_ERR_UNSUPPORTED,
                    "centering writing weights needs a LayerNorm before every attention "
                    "layer and before the unembedding; without one it changes the outputs");
  if (steps & MI_PROCESS_CENTER_WRITING)
    steps |= MI_PROCESS_FOLD_LN;
  /* Column sums for folding and centring, allocated before anything changes. */
  const mi_config *c = &model->config;
  size_t widest = c->d_vocab > c->d_head ? c->d_vocab : c->d_head;
  double *acc = malloc(widest * sizeof *acc);
  if (acc == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate %zu doubles to process the "
                    "model", widest);
  /* Folding (and centering, which implies it) changes W_Q and W_K. */
  bool keep = model->config.positional == MI_POSITIONAL_SHORTFORMER &&
              (steps & MI_PROCESS_FOLD_LN) && (model->config.parts & MI_PART_LN);
  mi_status status = keep ? keep_positional_side(model) : MI_OK;
  if (status == MI_OK && (steps & MI_PROCESS_FOLD_LN))
    status = fold_layernorms(model, acc);
  if (status != MI_OK) {
    free(acc);
    if (keep) {
      free(model->pos_q);
      free(model->pos_k);
      model->pos_q = model->pos_k = NULL;
    }
    return status;
  }
  if (steps & MI_PROCESS_CENTER_WRITING)
    center_writing_weights(model, acc);
  free(acc);
  if (steps & MI_PROCESS_CENTER_UNEMBED) {
    center_rows(model->w[MI_W_U], model->config.d_model, model->config.d_vocab);
    if (model->w[MI_B_U])
      center_rows(model->w[MI_B_U], 1, model->config.d_vocab);
  }
  model->processing = steps;
  model->processed = true;
  return check_processed(model, steps);
}

/* ---- accessors ------------------------------------------------------------ */

unsigned mi_model_processing(const mi_model *model) {
  return model ? model->processing : 0;
}

mi_layout mi_model_layout(const mi_model *model) {
  return model ? model->layout : MI_LAYOUT_MEMORY;
}

void mi__model_set_layout(mi_model *model, mi_layout layout) { model->layout = layout; }

mi_status mi_model_get_config(mi_config *out, const mi_model *model) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(model);
  return mi__struct_out(out, &model->config, sizeof model->config, "mi_config");
}

mi_status mi_model_weight_shape(size_t *out_rows, size_t *out_cols, const mi_model *model,
                                mi_weight which) {
  MI_CHECK_ARG(out_rows);
  MI_CHECK_ARG(out_cols);
  MI_CHECK_ARG(model);
  if ((unsigned)which >= MI_WEIGHT_COUNT)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "unknown weight %d", (int)which);
  if (model->w[which] == NULL)
    return mi__fail(MI_ERR_UNSUPPORTED, "the model has no %s", mi__weight_name(which));
  mi__weight_geometry g = mi__weight_geometry_of(&model->config, which);
  *out_rows = g.rows;
  *out_cols = g.cols;
  return MI_OK;
}

mi_status mi_model_get_weight(float *out, size_t ld, const mi_model *model, mi_weight which,
                              size_t layer, size_t head) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(model);
  float *slot;
  mi_status status = mi__weight_slot(&slot, model, which, layer, head);
  if (status != MI_OK)
    return status;
  mi__weight_geometry g = mi__weight_geometry_of(&model->config, which);
  if (ld < g.cols)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "%s: ld %zu < %zu columns",
                    mi__weight_name(which), ld, g.cols);
  for (size_t i = 0; i < g.rows; i++)
    memcpy(out + i * ld, slot + i * g.cols, g.cols * sizeof *out);
  return MI_OK;
}
