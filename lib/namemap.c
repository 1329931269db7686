/*
 * namemap.c: TransformerLens and Hugging Face GPT-2 names onto a model.
 *
 * Whatever file the tensors came from (safetensors.c, torchfile.c), the same
 * two passes run: the first checks that every tensor the map needs is there
 * with the right dtype and shape and fixes the model's dimensions, without
 * allocating; the second creates the model and copies each tensor view in
 * through its strides. The hints the files give (config.json, __metadata__,
 * the caller's options) are merged first and checked against the tensors.
 */
#include "kernel.h"
#include "loader.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *mi__format_shape(char *buf, size_t size, const mi__tensor *t) {
  size_t used = (size_t)snprintf(buf, size, "[");
  for (size_t i = 0; i < t->rank && used < size; i++) {
    if (i == MI__TENSOR_RANK) {
      snprintf(buf + used, size - used, ", ...]");
      return buf;
    }
    used += (size_t)snprintf(buf + used, size - used, "%s%zu", i ? ", " : "", t->dims[i]);
  }
  if (used < size)
    snprintf(buf + used, size - used, "]");
  return buf;
}

/* ---- hints ------------------------------------------------------------------ */

static mi_status merge_size(size_t *into, size_t from, const char *name,
                            const mi__model_hints *a, const mi__model_hints *b) {
  if (from != 0 && *into != 0 && *into != from)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "%s says %s = %zu, but %s says %zu",
                    a->source, name, *into, b->source, from);
  if (from != 0)
    *into = from;
  return MI_OK;
}

mi_status mi__hints_merge(mi__model_hints *into, const mi__model_hints *from) {
  const struct { size_t *into; size_t from; const char *name; } sizes[] = {
      {&into->n_layers, from->n_layers, "n_layers"}, {&into->n_heads, from->n_heads, "n_heads"},
      {&into->n_kv_heads, from->n_kv_heads, "n_kv_heads"},
      {&into->d_model, from->d_model, "d_model"},    {&into->d_head, from->d_head, "d_head"},
      {&into->d_vocab, from->d_vocab, "d_vocab"},    {&into->n_ctx, from->n_ctx, "n_ctx"}};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    mi_status status = merge_size(sizes[i].into, sizes[i].from, sizes[i].name, into, from);
    if (status != MI_OK)
      return status;
  }
  if (from->positional != MI_POSITIONAL_DEFAULT) {
    if (into->positional != MI_POSITIONAL_DEFAULT && into->positional != from->positional)
      return mi__fail(MI_ERR_INVALID_ARGUMENT,
                      "%s says positional_embedding_type = %s, but %s says %s",
                      into->source, mi__positional_name(into->positional), from->source,
                      mi__positional_name(from->positional));
    into->positional = from->positional;
  }
  if (from->ln_eps != 0.0) {
    if (into->ln_eps != 0.0 && into->ln_eps != from->ln_eps)
      return mi__fail(MI_ERR_INVALID_ARGUMENT, "%s says LayerNorm eps = %g, but %s says %g",
                      into->source, into->ln_eps, from->source, from->ln_eps);
    into->ln_eps = from->ln_eps;
  }
  if (from->normalization != NULL) {
    if (into->normalization != NULL && strcmp(into->normalization, from->normalization))
      return mi__fail(MI_ERR_INVALID_ARGUMENT,
                      "%s says normalization_type = %s, but %s says %s", into->source,
                      into->normalization, from->source, from->normalization);
    into->normalization = from->normalization;
  }
  if (from->mlp != 0) {
    if (into->mlp != 0 && into->mlp != from->mlp)
      return mi__fail(MI_ERR_INVALID_ARGUMENT, "%s says the model %s MLP layers, but %s "
                      "says it %s", into->source, into->mlp > 0 ? "has" : "has no",
                      from->source, from->mlp > 0 ? "has" : "has none");
    into->mlp = from->mlp;
  }
  if (into->source == NULL)
    into->source = from->source;
  return MI_OK;
}

mi_status mi__positional_parse(mi_positional *out, const char *text, const char *source) {
  static const mi_positional kinds[] = {MI_POSITIONAL_STANDARD, MI_POSITIONAL_SHORTFORMER,
                                        MI_POSITIONAL_NONE};
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    if (strcmp(text, mi__positional_name(kinds[i])) == 0) {
      *out = kinds[i];
      return MI_OK;
    }
  return mi__fail(MI_ERR_UNSUPPORTED,
                  "%s: positional_embedding_type \"%s\" is not one libmi runs (it runs "
                  "\"standard\", \"shortformer\" and \"none\")", source, text);
}

/* ---- tensors ---------------------------------------------------------------- */

static int by_name(const void *a, const void *b) {
  return strcmp(((const mi__tensor *)a)->name, ((const mi__tensor *)b)->name);
}

/* ---- name maps ------------------------------------------------------------- */

/* The model dimensions a tensor's shape is written in. */
enum { DIM_VOCAB, DIM_MODEL, DIM_HEADS, DIM_KV_HEADS, DIM_HEAD, DIM_CTX, DIM_MODEL_X3,
       DIM_COUNT };
static const char *const dim_names[DIM_COUNT] = {
    "d_vocab", "d_model", "n_heads", "n_kv_heads", "d_head", "n_ctx", "3*d_model"};

typedef struct loader {
  const mi__tensor *tensors; /* sorted by name */
  size_t n_tensors;
  mi_model *model;          /* NULL during the checking pass */
  size_t dims[DIM_COUNT];   /* 0 until a tensor fixes it */
  unsigned parts;
  size_t n_layers;
  const char *prefix;       /* GPT-2: "" or "transformer." */
  const mi__image *img;     /* where the tensors' bytes are */
  /* The one tensor read whole, for copies that are not a plain float32 read. */
  const mi__tensor *held;
  unsigned char *scratch;
  size_t scratch_size;
} loader;

static const mi__tensor *find(const loader *ld, const char *name) {
  mi__tensor key = {.name = name};
  return bsearch(&key, ld->tensors, ld->n_tensors, sizeof *ld->tensors, by_name);
}

/* Whether some tensor's name starts with `prefix`. */
static bool has_prefix(const loader *ld, const char *prefix) {
  size_t lo = 0, hi = ld->n_tensors, len = strlen(prefix);
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (strcmp(ld->tensors[mid].name, prefix) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < ld->n_tensors && strncmp(ld->tensors[lo].name, prefix, len) == 0;
}

/* The shape `t` should have, as its rank and one DIM_* per axis. */
typedef struct shape {
  size_t rank;
  int dim[3];
} shape;

static size_t dim_value(const loader *ld, int dim) {
  if (dim == DIM_MODEL_X3)
    return ld->dims[DIM_MODEL] <= SIZE_MAX / 3 ? 3 * ld->dims[DIM_MODEL] : 0;
  return ld->dims[dim];
}

/*
 * Checks `t` against `want`: each dimension already fixed must match, the
 * others are fixed by `t` (and must not be 0).
 */
static mi_status check_shape(loader *ld, const mi__tensor *t, shape want) {
  bool ok = t->rank == want.rank;
  for (size_t i = 0; ok && i < want.rank; i++) {
    size_t expected = dim_value(ld, want.dim[i]);
    if (expected == 0 && t->dims[i] > 0 && want.dim[i] != DIM_MODEL_X3)
      ld->dims[want.dim[i]] = t->dims[i];
    else
      ok = t->dims[i] == expected && expected > 0;
  }
  if (ok)
    return MI_OK;
  char have[96], names[96], values[96];
  size_t n = 0, v = 0;
  for (size_t i = 0; i < want.rank; i++) {
    size_t expected = dim_value(ld, want.dim[i]);
    n += (size_t)snprintf(names + n, sizeof names - n, "%s%s", i ? ", " : "",
                          dim_names[want.dim[i]]);
    v += expected ? (size_t)snprintf(values + v, sizeof values - v, "%s%zu", i ? ", " : "",
                                     expected)
                  : (size_t)snprintf(values + v, sizeof values - v, "%s>0", i ? ", " : "");
  }
  return mi__fail(MI_ERR_SHAPE, "tensor '%s' has shape %s; expected [%s] = [%s]", t->name,
                  mi__format_shape(have, sizeof have, t), names, values);
}

/*
 * Looks up the tensor named by `fmt` (or, when that is absent, by `alt`,
 * which may be NULL), checks its dtype and shape, and gives it in *out.
 * `part` 0: the tensor is required. Otherwise it belongs to that optional
 * part: required when the model has the part, refused when it does not (all
 * layers must agree with the first).
 */
static mi_status lookup(const mi__tensor **out, loader *ld, unsigned part, shape want,
                        const char *alt, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static mi_status lookup(const mi__tensor **out, loader *ld, unsigned part, shape want,
                        const char *alt, const char *fmt, ...) {
  char name[160];
  va_list args;
  va_start(args, fmt);
  vsnprintf(name, sizeof name, fmt, args);
  va_end(args);
  const mi__tensor *t = find(ld, name);
  if (t == NULL && alt != NULL)
    t = find(ld, alt);
  *out = NULL;
  bool wanted = part == 0 || (ld->parts & part);
  if (t == NULL && wanted)
    return mi__fail(MI_ERR_MISSING_TENSOR, "tensor '%s' is missing", name);
  if (t != NULL && !wanted)
    return mi__fail(MI_ERR_MISSING_TENSOR,
                    "tensor '%s' is present, but the first layer or its companion "
                    "tensors are missing; all layers must have the same parts", name);
  if (t == NULL)
    return MI_OK;
  if (t->dtype < 0)
    return mi__fail(MI_ERR_DTYPE, "tensor '%s' has dtype %s; libmi reads F32, F16, BF16 "
                    "and F64", t->name, t->dtype_name);
  mi_status status = check_shape(ld, t, want);
  if (status == MI_OK)
    *out = t;
  return status;
}

#define TRY(call)                                                            \
  do {                                                                       \
    mi_status try_status_ = (call);                                          \
    if (try_status_ != MI_OK)                                                \
      return try_status_;                                                    \
  } while (0)

/* Float32s read and screened at a time: a chunk is checked while in cache. */
enum { CHUNK = 1 << 18 };

/* One chunk of a direct read, for mi__parallel_for. */
typedef struct direct {
  float *slot;
  size_t count, at;
  const mi__image *img;
  atomic_bool nonfinite;
} direct;

static mi_status read_chunk(size_t i, void *user) {
  direct *d = user;
  size_t k = i * CHUNK, n = d->count - k < CHUNK ? d->count - k : CHUNK, where[2];
  mi_status status = mi__image_read(d->slot + k, d->img, d->at + k * sizeof *d->slot,
                                    n * sizeof *d->slot);
  if (status == MI_OK && !mi__finite_f(d->slot + k, 1, n, n, where))
    atomic_store(&d->nonfinite, true);
  return status;
}

/*
 * A contiguous float32 copy read from the file straight into the model's
 * slot, screened chunk by chunk while each is in cache; the chunks of a
 * large copy go to every thread, since the page faults of fresh memory (the
 * kernel zeroing it) cost as much as the copy. A NaN or infinity hands the
 * slot to mi__model_weight_accept, which names the element and resets it.
 */
static mi_status read_direct(loader *ld, mi_weight which, size_t layer, size_t head,
                             size_t at) {
  direct d = {.at = at, .img = ld->img};
  atomic_init(&d.nonfinite, false);
  TRY(mi__model_weight_target(&d.slot, &d.count, ld->model, which, layer, head));
  size_t chunks = (d.count + CHUNK - 1) / CHUNK;
  if (chunks >= 8) { /* no BLIS call: BLIS is not started by a load */
    TRY(mi__parallel_for_threads(chunks, mi__own_thread_count(), read_chunk, &d));
  } else {
    for (size_t i = 0; i < chunks; i++)
      TRY(read_chunk(i, &d));
  }
  return atomic_load(&d.nonfinite) ? mi__model_weight_accept(ld->model, which, layer, head)
                                   : MI_OK;
}

/* Reads the whole of `t` into the loader's scratch (once for all its copies). */
static mi_status hold(loader *ld, const mi__tensor *t, size_t *out_start) {
  size_t last = 0;
  for (size_t k = 0; k < t->rank && k < MI__TENSOR_RANK; k++)
    last += (t->dims[k] - 1) * t->strides[k]; /* the reader checked it fits */
  size_t start = (size_t)(t->data - ld->img->bytes), size = (last + 1) * t->item;
  *out_start = start;
  if (ld->held == t)
    return MI_OK;
  if (size > ld->scratch_size) {
    free(ld->scratch);
    ld->held = NULL;
    ld->scratch_size = 0;
    if ((ld->scratch = malloc(size)) == NULL)
      return mi__fail(MI_ERR_OUT_OF_MEMORY, "tensor '%s': cannot allocate %zu bytes to "
                      "read it", t->name, size);
    mi__advise_huge(ld->scratch, size);
    ld->scratch_size = size;
  }
  ld->held = NULL; /* until the read has filled it */
  TRY(mi__image_read(ld->scratch, ld->img, start, size));
  ld->held = t;
  return MI_OK;
}

/*
 * Copies one weight copy from `t`, starting `offset` elements in, with the
 * given strides (elements, from the tensor's own). Nothing to do during the
 * checking pass or for an absent optional tensor. From a file, a contiguous
 * float32 copy is read into the model as it is; anything else (another
 * dtype, a strided or transposed view) is converted from the tensor read
 * whole into one scratch, so the load holds at most one tensor besides the
 * weights.
 */
static mi_status copy(loader *ld, mi_weight which, size_t layer, size_t head,
                      const mi__tensor *t, size_t offset, size_t row_stride, size_t col_stride) {
  if (ld->model == NULL || t == NULL)
    return MI_OK;
  if (ld->img->fd < 0)
    return mi__model_set_weight_strided(ld->model, which, layer, head, (mi_dtype)t->dtype,
                                        t->data + offset * t->item, row_stride, col_stride);
  mi__weight_geometry g = mi__weight_geometry_of(&ld->model->config, which);
  size_t at = (size_t)(t->data - ld->img->bytes) + offset * t->item;
  if (t->dtype == MI_DTYPE_F32 && col_stride == 1 && (g.rows == 1 || row_stride == g.cols))
    return read_direct(ld, which, layer, head, at);
  size_t start;
  TRY(hold(ld, t, &start));
  return mi__model_set_weight_strided(ld->model, which, layer, head, (mi_dtype)t->dtype,
                                      ld->scratch + (at - start), row_stride, col_stride);
}

#define SHAPE1(a) ((shape){1, {(a)}})
#define SHAPE2(a, b) ((shape){2, {(a), (b)}})
#define SHAPE3(a, b, c) ((shape){3, {(a), (b), (c)}})
/* Element stride of axis k of an optional tensor (0 when absent: not copied). */
#define ST(t, k) ((t) != NULL ? (t)->strides[k] : 0)

/*
 * Counts the layers "<prefix><l>." from 0, refuses gaps (a layer index past
 * the count), and notes MLP weights "<prefix><l>.mlp.".
 */
static mi_status scan_layers(loader *ld, const char *prefix, const char *first_required) {
  char name[160];
  size_t n = 0;
  for (;;) {
    snprintf(name, sizeof name, "%s%zu.", prefix, n);
    if (!has_prefix(ld, name))
      break;
    n++;
  }
  size_t len = strlen(prefix);
  for (size_t i = 0; i < ld->n_tensors; i++) {
    const char *p = ld->tensors[i].name;
    if (strncmp(p, prefix, len) != 0 || p[len] < '0' || p[len] > '9')
      continue;
    p += len;
    if (p[0] == '0' && p[1] >= '0' && p[1] <= '9')
      continue; /* a leading zero: not a layer index */
    size_t index = 0;
    bool huge = false;
    for (; *p >= '0' && *p <= '9'; p++)
      huge |= !mi__mul_size(&index, index, 10) ||
              __builtin_add_overflow(index, (size_t)(*p - '0'), &index);
    if (*p != '.')
      continue;
    if (huge || index >= n)
      return mi__fail(MI_ERR_MISSING_TENSOR,
                      "tensor '%s%zu.%s' is missing: layer %zu is absent but '%s' exists",
                      prefix, n, first_required, n, ld->tensors[i].name);
    if (strncmp(p, ".mlp.", 5) == 0)
      ld->parts |= MI_PART_MLP;
  }
  if (n == 0)
    return mi__fail(MI_ERR_MISSING_TENSOR,
                    "tensor '%s0.%s' is missing: the file has no layers", prefix,
                    first_required);
  ld->n_layers = n;
  return MI_OK;
}

/* ---- TransformerLens ------------------------------------------------------- */

static mi_status tl_detect_parts(loader *ld) {
  static const struct { const char *name; unsigned part; } optional[] = {
      {"pos_embed.W_pos", MI_PART_POS_EMBED}, {"blocks.0.attn.b_Q", MI_PART_QKV_BIAS},
      {"blocks.0.attn.b_O", MI_PART_OUT_BIAS}, {"unembed.b_U", MI_PART_UNEMBED_BIAS},
      {"blocks.0.ln1.w", MI_PART_LN},          {"ln_final.w", MI_PART_LN_FINAL}};
  for (size_t i = 0; i < sizeof optional / sizeof optional[0]; i++)
    if (find(ld, optional[i].name))
      ld->parts |= optional[i].part;
  return scan_layers(ld, "blocks.", "attn.W_Q");
}

static mi_status tl_layer(loader *ld, size_t l) {
  const mi__tensor *WQ, *WK, *WV, *WO, *bQ, *bK, *bV, *bO, *lw, *lb;
  char alt[2][64];
  TRY(lookup(&WQ, ld, 0, SHAPE3(DIM_HEADS, DIM_MODEL, DIM_HEAD), NULL,
             "blocks.%zu.attn.W_Q", l));
  /* Grouped-query models store their key/value weights as _W_K, _W_V. */
  snprintf(alt[0], sizeof alt[0], "blocks.%zu.attn._W_K", l);
  snprintf(alt[1], sizeof alt[1], "blocks.%zu.attn._W_V", l);
  TRY(lookup(&WK, ld, 0, SHAPE3(DIM_KV_HEADS, DIM_MODEL, DIM_HEAD), alt[0],
             "blocks.%zu.attn.W_K", l));
  TRY(lookup(&WV, ld, 0, SHAPE3(DIM_KV_HEADS, DIM_MODEL, DIM_HEAD), alt[1],
             "blocks.%zu.attn.W_V", l));
  TRY(lookup(&WO, ld, 0, SHAPE3(DIM_HEADS, DIM_HEAD, DIM_MODEL), NULL,
             "blocks.%zu.attn.W_O", l));
  snprintf(alt[0], sizeof alt[0], "blocks.%zu.attn._b_K", l);
  snprintf(alt[1], sizeof alt[1], "blocks.%zu.attn._b_V", l);
  TRY(lookup(&bQ, ld, MI_PART_QKV_BIAS, SHAPE2(DIM_HEADS, DIM_HEAD), NULL,
             "blocks.%zu.attn.b_Q", l));
  TRY(lookup(&bK, ld, MI_PART_QKV_BIAS, SHAPE2(DIM_KV_HEADS, DIM_HEAD), alt[0],
             "blocks.%zu.attn.b_K", l));
  TRY(lookup(&bV, ld, MI_PART_QKV_BIAS, SHAPE2(DIM_KV_HEADS, DIM_HEAD), alt[1],
             "blocks.%zu.attn.b_V", l));
  TRY(lookup(&bO, ld, MI_PART_OUT_BIAS, SHAPE1(DIM_MODEL), NULL, "blocks.%zu.attn.b_O", l));
  TRY(lookup(&lw, ld, MI_PART_LN, SHAPE1(DIM_MODEL), NULL, "blocks.%zu.ln1.w", l));
  TRY(lookup(&lb, ld, MI_PART_LN, SHAPE1(DIM_MODEL), NULL, "blocks.%zu.ln1.b", l));
  const size_t H = ld->dims[DIM_HEADS], KV = ld->dims[DIM_KV_HEADS];
  if (H % KV != 0)
    return mi__fail(MI_ERR_SHAPE, "tensor '%s' has %zu key/value heads, which does not "
                    "divide the %zu query heads of '%s'", WK->name, KV, H, WQ->name);
  /* Tensor by tensor, all its heads together: the scratch holds one tensor. */
  for (size_t h = 0; h < H; h++)
    TRY(copy(ld, MI_W_Q, l, h, WQ, h * ST(WQ, 0), ST(WQ, 1), ST(WQ, 2)));
  for (size_t h = 0; h < H; h++)
    TRY(copy(ld, MI_W_O, l, h, WO, h * ST(WO, 0), ST(WO, 1), ST(WO, 2)));
  for (size_t h = 0; h < H; h++)
    TRY(copy(ld, MI_B_Q, l, h, bQ, h * ST(bQ, 0), 0, ST(bQ, 1)));
  for (size_t h = 0; h < KV; h++)
    TRY(copy(ld, MI_W_K, l, h, WK, h * ST(WK, 0), ST(WK, 1), ST(WK, 2)));
  for (size_t h = 0; h < KV; h++)
    TRY(copy(ld, MI_W_V, l, h, WV, h * ST(WV, 0), ST(WV, 1), ST(WV, 2)));
  for (size_t h = 0; h < KV; h++) {
    TRY(copy(ld, MI_B_K, l, h, bK, h * ST(bK, 0), 0, ST(bK, 1)));
    TRY(copy(ld, MI_B_V, l, h, bV, h * ST(bV, 0), 0, ST(bV, 1)));
  }
  TRY(copy(ld, MI_B_O, l, 0, bO, 0, 0, ST(bO, 0)));
  TRY(copy(ld, MI_LN1_W, l, 0, lw, 0, 0, ST(lw, 0)));
  return copy(ld, MI_LN1_B, l, 0, lb, 0, 0, ST(lb, 0));
}

/* One pass over a TransformerLens state dict: checking, or copying. */
static mi_status tl_map(loader *ld) {
  const mi__tensor *WE, *Wpos, *WU, *bU, *fw, *fb;
  TRY(lookup(&WE, ld, 0, SHAPE2(DIM_VOCAB, DIM_MODEL), NULL, "embed.W_E"));
  TRY(lookup(&Wpos, ld, MI_PART_POS_EMBED, SHAPE2(DIM_CTX, DIM_MODEL), NULL,
             "pos_embed.W_pos"));
  for (size_t l = 0; l < ld->n_layers; l++)
    TRY(tl_layer(ld, l));
  TRY(lookup(&fw, ld, MI_PART_LN_FINAL, SHAPE1(DIM_MODEL), NULL, "ln_final.w"));
  TRY(lookup(&fb, ld, MI_PART_LN_FINAL, SHAPE1(DIM_MODEL), NULL, "ln_final.b"));
  TRY(lookup(&WU, ld, 0, SHAPE2(DIM_MODEL, DIM_VOCAB), NULL, "unembed.W_U"));
  TRY(lookup(&bU, ld, MI_PART_UNEMBED_BIAS, SHAPE1(DIM_VOCAB), NULL, "unembed.b_U"));
    TRY(copy(ld, MI_W_E, 0, 0, WE, 0, ST(WE, 0), ST(WE, 1)));
  TRY(copy(ld, MI_W_POS, 0, 0, Wpos, 0, ST(Wpos, 0), ST(Wpos, 1)));
  TRY(copy(ld, MI_LNF_W, 0, 0, fw, 0, 0, ST(fw, 0)));
  TRY(copy(ld, MI_LNF_B, 0, 0, fb, 0, 0, ST(fb, 0)));
  TRY(copy(ld, MI_W_U, 0, 0, WU, 0, ST(WU, 0), ST(WU, 1)));
  return copy(ld, MI_B_U, 0, 0, bU, 0, 0, ST(bU, 0));
}

/* ---- Hugging Face GPT-2 ---------------------------------------------------- */

static mi_status gpt2_detect_parts(loader *ld) {
  static const struct { const char *name; unsigned part; } optional[] = {
      {"wpe.weight", MI_PART_POS_EMBED},       {"h.0.attn.c_attn.bias", MI_PART_QKV_BIAS},
      {"h.0.attn.c_proj.bias", MI_PART_OUT_BIAS}, {"h.0.ln_1.weight", MI_PART_LN},
      {"ln_f.weight", MI_PART_LN_FINAL}};
  char name[64];
  for (size_t i = 0; i < sizeof optional / sizeof optional[0]; i++) {
    snprintf(name, sizeof name, "%s%s", ld->prefix, optional[i].name);
    if (find(ld, name))
      ld->parts |= optional[i].part;
  }
  snprintf(name, sizeof name, "%sh.", ld->prefix);
  return scan_layers(ld, name, "attn.c_attn.weight");
}

static mi_status gpt2_layer(loader *ld, size_t l) {
  const char *p = ld->prefix;
  const size_t D = ld->dims[DIM_MODEL], dh = ld->dims[DIM_HEAD];
  const mi__tensor *attn, *attn_b, *proj, *proj_b, *lw, *lb;
  TRY(lookup(&lw, ld, MI_PART_LN, SHAPE1(DIM_MODEL), NULL, "%sh.%zu.ln_1.weight", p, l));
  TRY(lookup(&lb, ld, MI_PART_LN, SHAPE1(DIM_MODEL), NULL, "%sh.%zu.ln_1.bias", p, l));
  TRY(lookup(&attn, ld, 0, SHAPE2(DIM_MODEL, DIM_MODEL_X3), NULL,
             "%sh.%zu.attn.c_attn.weight", p, l));
  TRY(lookup(&attn_b, ld, MI_PART_QKV_BIAS, SHAPE1(DIM_MODEL_X3), NULL,
             "%sh.%zu.attn.c_attn.bias", p, l));
  TRY(lookup(&proj, ld, 0, SHAPE2(DIM_MODEL, DIM_MODEL), NULL,
             "%sh.%zu.attn.c_proj.weight", p, l));
  TRY(lookup(&proj_b, ld, MI_PART_OUT_BIAS, SHAPE1(DIM_MODEL), NULL,
             "%sh.%zu.attn.c_proj.bias", p, l));
  /* Conv1D computes x·W: columns of c_attn are Q | K | V, head h at h·d_head.
   * Tensor by tensor, all heads together: the scratch holds one tensor. */
  size_t H = ld->dims[DIM_HEADS];
  for (size_t h = 0; h < H; h++) {
    TRY(copy(ld, MI_W_Q, l, h, attn, h * dh * ST(attn, 1), ST(attn, 0), ST(attn, 1)));
    TRY(copy(ld, MI_W_K, l, h, attn, (D + h * dh) * ST(attn, 1), ST(attn, 0), ST(attn, 1)));
    TRY(copy(ld, MI_W_V, l, h, attn, (2 * D + h * dh) * ST(attn, 1), ST(attn, 0),
             ST(attn, 1)));
  }
  for (size_t h = 0; h < H; h++) {
    TRY(copy(ld, MI_B_Q, l, h, attn_b, h * dh * ST(attn_b, 0), 0, ST(attn_b, 0)));
    TRY(copy(ld, MI_B_K, l, h, attn_b, (D + h * dh) * ST(attn_b, 0), 0, ST(attn_b, 0)));
    TRY(copy(ld, MI_B_V, l, h, attn_b, (2 * D + h * dh) * ST(attn_b, 0), 0,
             ST(attn_b, 0)));
  }
  for (size_t h = 0; h < H; h++) /* head h's output z_h multiplies rows h·d_head.. */
    TRY(copy(ld, MI_W_O, l, h, proj, h * dh * ST(proj, 0), ST(proj, 0), ST(proj, 1)));
  TRY(copy(ld, MI_B_O, l, 0, proj_b, 0, 0, ST(proj_b, 0)));
  TRY(copy(ld, MI_LN1_W, l, 0, lw, 0, 0, ST(lw, 0)));
  return copy(ld, MI_LN1_B, l, 0, lb, 0, 0, ST(lb, 0));
}

/* One pass over a GPT-2 checkpoint: checking, or copying. */
static mi_status gpt2_map(loader *ld) {
  const char *p = ld->prefix;
  const mi__tensor *wte, *wpe, *fw, *fb, *head;
  TRY(lookup(&wte, ld, 0, SHAPE2(DIM_VOCAB, DIM_MODEL), NULL, "%swte.weight", p));
  TRY(lookup(&wpe, ld, MI_PART_POS_EMBED, SHAPE2(DIM_CTX, DIM_MODEL), NULL, "%swpe.weight",
             p));
  for (size_t l = 0; l < ld->n_layers; l++)
    TRY(gpt2_layer(ld, l));
  TRY(lookup(&fw, ld, MI_PART_LN_FINAL, SHAPE1(DIM_MODEL), NULL, "%sln_f.weight", p));
  TRY(lookup(&fb, ld, MI_PART_LN_FINAL, SHAPE1(DIM_MODEL), NULL, "%sln_f.bias", p));
  /* lm_head is outside the transformer. prefix; absent, W_U is tied to W_E. */
  head = find(ld, "lm_head.weight");
  if (head != NULL)
    TRY(lookup(&head, ld, 0, SHAPE2(DIM_VOCAB, DIM_MODEL), NULL, "lm_head.weight"));
  TRY(copy(ld, MI_W_E, 0, 0, wte, 0, ST(wte, 0), ST(wte, 1)));
  TRY(copy(ld, MI_W_POS, 0, 0, wpe, 0, ST(wpe, 0), ST(wpe, 1)));
  TRY(copy(ld, MI_LNF_W, 0, 0, fw, 0, 0, ST(fw, 0)));
  TRY(copy(ld, MI_LNF_B, 0, 0, fb, 0, 0, ST(fb, 0)));
  /* W_U [d_model × d_vocab] is the transpose of a [d_vocab × d_model] tensor. */
  if (head != NULL || ld->model == NULL)
    return copy(ld, MI_W_U, 0, 0, head, 0, ST(head, 1), ST(head, 0));
  /* Tied: from the W_E just read, so the file's wte is not read twice, nor
   * held whole in the scratch (the largest tensor of the file). */
  float *we;
  TRY(mi__weight_slot(&we, ld->model, MI_W_E, 0, 0));
  return mi__model_set_weight_strided(ld->model, MI_W_U, 0, 0, MI_DTYPE_F32, we, 1,
                                      ld->dims[DIM_MODEL]);
}

/* ---- the model --------------------------------------------------------------- */

/*
 * TransformerLens's cfg.normalization_type, when the files give it. A model
 * saved after fold_ln is "LNPre": it still normalises, but has no LayerNorm
 * weights to say so. Gives in *out_identity the parts to add as identity
 * LayerNorms (w = 1, b = 0, which is how mi_model_create makes them).
 */
static mi_status normalization(unsigned *out_identity, loader *ld,
                               const mi__model_hints *hints) {
  const unsigned both = MI_PART_LN | MI_PART_LN_FINAL;
  const char *type = hints->normalization;
  *out_identity = 0;
  if (type == NULL)
    return MI_OK;
  if (strcmp(type, "LN") == 0) {
    ld->parts |= both; /* the weights must be there */
    return MI_OK;
  }
  if (strcmp(type, "LNPre") != 0 && strcmp(type, "None") != 0)
    return mi__fail(MI_ERR_UNSUPPORTED,
                    "%s: normalization_type is \"%s\"; libmi implements \"LN\", \"LNPre\" "
                    "and \"None\"", hints->source, type);
  if (ld->parts & both)
    return mi__fail(MI_ERR_FORMAT, "%s: normalization_type is \"%s\", but the file has "
                    "LayerNorm weights", hints->source, type);
  if (strcmp(type, "LNPre") == 0)
    *out_identity = both;
  return MI_OK;
}

/* GPT-2 packs its heads: n_heads must come from the hints. */
static mi_status gpt2_heads(loader *ld, const mi__model_hints *hints) {
  if (hints->n_heads == 0)
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "a GPT-2 checkpoint packs its heads, so the number of heads must be "
                    "given: put a config.json with \"n_head\" beside it, set "
                    "mi_load_options.n_heads (mi --n-heads), or store \"n_head\" in the "
                    "file's __metadata__");
  const size_t D = ld->dims[DIM_MODEL];
  if (D % hints->n_heads != 0)
    return mi__fail(MI_ERR_SHAPE, "%s: n_heads %zu does not divide d_model %zu",
                    hints->source, hints->n_heads, D);
  ld->dims[DIM_HEADS] = ld->dims[DIM_KV_HEADS] = hints->n_heads;
  ld->dims[DIM_HEAD] = D / hints->n_heads;
  return MI_OK;
}

/* Each dimension the hints give must be the tensors'. */
static mi_status check_hints(const loader *ld, const mi__model_hints *hints) {
  if (hints->source == NULL)
    return MI_OK; /* a reader's hints with nothing said */
  const struct { const char *name; size_t said, found; } dims[] = {
      {"n_layers", hints->n_layers, ld->n_layers},
      {"n_heads", hints->n_heads, ld->dims[DIM_HEADS]},
      {"n_kv_heads", hints->n_kv_heads, ld->dims[DIM_KV_HEADS]},
      {"d_model", hints->d_model, ld->dims[DIM_MODEL]},
      {"d_head", hints->d_head, ld->dims[DIM_HEAD]},
      {"d_vocab", hints->d_vocab, ld->dims[DIM_VOCAB]},
      /* n_ctx shows only in a W_pos; without one, the hint has nothing to meet. */
      {"n_ctx", ld->dims[DIM_CTX] ? hints->n_ctx : 0, ld->dims[DIM_CTX]}};
  for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
    if (dims[i].said != 0 && dims[i].said != dims[i].found)
      return mi__fail(MI_ERR_SHAPE, "%s says %s = %zu, but the tensors have %zu",
                      hints->source, dims[i].name, dims[i].said, dims[i].found);
  bool has_mlp = ld->parts & MI_PART_MLP;
  if (hints->mlp < 0 && has_mlp)
    return mi__fail(MI_ERR_FORMAT, "%s says the model is attention-only (attn_only), but "
                    "the tensors have MLP weights (%smlp.*)", hints->source,
                    ld->prefix ? "h.{l}." : "blocks.{l}.");
  if (hints->mlp > 0 && !has_mlp)
    return mi__fail(MI_ERR_MISSING_TENSOR, "%s says the model has MLP layers (attn_only "
                    "false, or a GPT-2 config), but the tensors have no MLP weights; an "
                    "attention-only model says \"attn_only\": true", hints->source);
  return MI_OK;
}

/* The positional kind: the hints', checked against W_pos being there. */
static mi_status positional_kind(mi_positional *out, const loader *ld,
                                 const mi__model_hints *hints) {
  bool has_pos = ld->parts & MI_PART_POS_EMBED;
  *out = hints->positional;
  if (*out == MI_POSITIONAL_DEFAULT)
    *out = has_pos ? MI_POSITIONAL_STANDARD : MI_POSITIONAL_NONE;
  if (*out == MI_POSITIONAL_NONE && has_pos)
    return mi__fail(MI_ERR_FORMAT, "%s says positional_embedding_type = none, but the "
                    "file has a positional embedding", hints->source);
  if (*out != MI_POSITIONAL_NONE && !has_pos)
    return mi__fail(MI_ERR_MISSING_TENSOR, "%s says positional_embedding_type = %s, but "
                    "the file has no positional embedding (W_pos)", hints->source,
                    mi__positional_name(*out));
  return MI_OK;
}

mi_status mi__model_from_tensors(mi_model **out, mi__tensor *tensors, size_t count,
                                 const mi__model_hints *file_hints,
                                 const mi_load_options *options, const mi__image *img) {
  /* The caller's options are one more source, checked against the files. */
  mi__model_hints hints = *file_hints;
  const mi__model_hints from_options = {.source = "mi_load_options",
                                        .n_heads = options->n_heads,
                                        .positional = options->positional};
  TRY(mi__hints_merge(&hints, &from_options));
  if (hints.source == NULL)
    hints.source = "the file";

  qsort(tensors, count, sizeof *tensors, by_name);
  loader ld = {.tensors = tensors, .n_tensors = count, .img = img};
  mi_layout layout;
  mi_status (*map)(loader *);
  if (find(&ld, "embed.W_E")) {
    layout = MI_LAYOUT_TRANSFORMERLENS;
    map = tl_map;
    TRY(tl_detect_parts(&ld));
  } else if (find(&ld, "wte.weight") || find(&ld, "transformer.wte.weight")) {
    layout = MI_LAYOUT_GPT2;
    map = gpt2_map;
    ld.prefix = find(&ld, "wte.weight") ? "" : "transformer.";
    TRY(gpt2_detect_parts(&ld));
    const mi__tensor *wte;
    TRY(lookup(&wte, &ld, 0, SHAPE2(DIM_VOCAB, DIM_MODEL), NULL, "%swte.weight", ld.prefix));
    TRY(gpt2_heads(&ld, &hints));
  } else {
    return mi__fail(MI_ERR_MISSING_TENSOR,
                    "neither 'embed.W_E' (TransformerLens) nor 'wte.weight' (GPT-2) is in "
                    "the file: not a model libmi can map");
  }
  unsigned identity_ln;
  TRY(normalization(&identity_ln, &ld, &hints));
  /* First pass: every tensor present and of the right shape; nothing allocated. */
  TRY(map(&ld));
  TRY(check_hints(&ld, file_hints));
  TRY(check_hints(&ld, &from_options));

  mi_config config;
  mi_config_init(&config, sizeof config);
  config.n_layers = ld.n_layers;
  config.n_heads = ld.dims[DIM_HEADS];
  config.n_kv_heads = ld.dims[DIM_KV_HEADS];
  config.d_model = ld.dims[DIM_MODEL];
  config.d_head = ld.dims[DIM_HEAD];
  config.d_vocab = ld.dims[DIM_VOCAB];
  config.n_ctx = ld.dims[DIM_CTX];
  config.parts = ld.parts | identity_ln;
  /* 1e-5 is TransformerLens's default and GPT-2's. */
  config.ln_eps = hints.ln_eps != 0.0 ? hints.ln_eps : 1e-5;
  TRY(positional_kind(&config.positional, &ld, &hints));
  TRY(mi_model_create(&ld.model, &config));
  mi_status status = map(&ld);
  free(ld.scratch);
  if (status == MI_OK)
    status = mi_model_process(ld.model, options->process);
  if (status != MI_OK) {
    mi_model_free(ld.model);
    return status;
  }
  mi__model_set_layout(ld.model, layout);
  *out = ld.model;
  return MI_OK;
}
