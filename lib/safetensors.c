/*
 * safetensors.c: models from .safetensors files, named as TransformerLens
 * state dicts or as Hugging Face GPT-2 checkpoints.
 *
 * A file is an 8-byte little-endian header length N, N bytes of JSON mapping
 * each tensor's name to {dtype, shape, data_offsets}, then the data buffer.
 * Every field of every entry is checked against the sizes before a byte of
 * data is read, and every tensor the name map uses is checked against the
 * model's dimensions before the model is allocated, so a hostile file ends
 * in a status, never in a read out of bounds or a huge allocation.
 */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void mi_load_options_init(mi_load_options *out, size_t struct_size) {
  const mi_load_options defaults = {.struct_size = sizeof defaults,
                                    .process = MI_PROCESS_FOLD_LN};
  mi__struct_init(out, struct_size, &defaults, sizeof defaults);
}

/* ---- the header ----------------------------------------------------------- */

/*
 * Every dtype safetensors defines, so that a file with integer buffers (a
 * causal mask, say) still has its offsets checked; only the four float
 * dtypes can be read into a model (`mi` < 0: not readable).
 */
static const struct {
  const char *name;
  size_t item;
  int mi;
} dtypes[] = {
    {"F32", 4, MI_DTYPE_F32}, {"F64", 8, MI_DTYPE_F64},  {"F16", 2, MI_DTYPE_F16},
    {"BF16", 2, MI_DTYPE_BF16}, {"BOOL", 1, -1},         {"U8", 1, -1},
    {"I8", 1, -1},            {"F8_E4M3", 1, -1},        {"F8_E5M2", 1, -1},
    {"I16", 2, -1},           {"U16", 2, -1},            {"I32", 4, -1},
    {"U32", 4, -1},           {"I64", 8, -1},            {"U64", 8, -1},
};

/* The name maps read tensors of rank 3 at most; deeper dims are not kept. */
#define KEPT_RANK 4

typedef struct tensor {
  const char *name;        /* borrowed from the JSON header */
  const char *dtype_name;  /* likewise */
  int dtype;               /* mi_dtype, or -1 when libmi cannot read it */
  size_t item;             /* bytes per element */
  size_t rank;
  size_t dims[KEPT_RANK];  /* the first KEPT_RANK dimensions */
  size_t begin, end;       /* byte offsets into the data buffer */
} tensor;

typedef struct st_file {
  json_t *header;          /* owned */
  const json_t *metadata;  /* "__metadata__", borrowed from header; or NULL */
  const unsigned char *data;
  size_t data_size;
  size_t file_size;
  tensor *tensors;         /* owned, sorted by name */
  size_t n_tensors;
} st_file;

static void st_file_close(st_file *f) {
  json_decref(f->header);
  free(f->tensors);
}

/* "[2, 8, 4]" into buf. */
static const char *format_shape(char *buf, size_t size, const tensor *t) {
  size_t used = (size_t)snprintf(buf, size, "[");
  for (size_t i = 0; i < t->rank && used < size; i++) {
    if (i == KEPT_RANK) {
      snprintf(buf + used, size - used, ", ...]");
      return buf;
    }
    used += (size_t)snprintf(buf + used, size - used, "%s%zu", i ? ", " : "", t->dims[i]);
  }
  if (used < size)
    snprintf(buf + used, size - used, "]");
  return buf;
}

/* A JSON value as a size_t: a non-negative integer that fits. */
static bool json_size(size_t *out, const json_t *value) {
  if (!json_is_integer(value) || json_integer_value(value) < 0)
    return false;
  json_int_t v = json_integer_value(value);
#if LLONG_MAX > SIZE_MAX
  if ((unsigned long long)v > SIZE_MAX)
    return false;
#endif
  *out = (size_t)v;
  return true;
}

static mi_status parse_entry(tensor *t, const char *name, const json_t *entry,
                             const st_file *f) {
  t->name = name;
  if (!json_is_object(entry))
    return mi__fail(MI_ERR_FORMAT, "tensor '%s': its header entry is not a JSON object",
                    name);
  const json_t *dtype = json_object_get(entry, "dtype");
  const json_t *shape = json_object_get(entry, "shape");
  const json_t *offsets = json_object_get(entry, "data_offsets");
  if (!json_is_string(dtype))
    return mi__fail(MI_ERR_FORMAT, "tensor '%s': \"dtype\" is missing or not a string",
                    name);
  t->dtype_name = json_string_value(dtype);
  size_t k = 0;
  while (k < sizeof dtypes / sizeof dtypes[0] && strcmp(dtypes[k].name, t->dtype_name))
    k++;
  if (k == sizeof dtypes / sizeof dtypes[0])
    return mi__fail(MI_ERR_DTYPE, "tensor '%s': unknown dtype '%s'", name, t->dtype_name);
  t->dtype = dtypes[k].mi;
  t->item = dtypes[k].item;

  if (!json_is_array(shape))
    return mi__fail(MI_ERR_FORMAT, "tensor '%s': \"shape\" is missing or not an array", name);
  t->rank = json_array_size(shape);
  size_t count = 1;
  bool overflow = false, empty = false;
  for (size_t i = 0; i < t->rank; i++) {
    size_t dim;
    if (!json_size(&dim, json_array_get(shape, i)))
      return mi__fail(MI_ERR_FORMAT, "tensor '%s': shape[%zu] is not a non-negative integer",
                      name, i);
    if (i < KEPT_RANK)
      t->dims[i] = dim;
    overflow |= !mi__mul_size(&count, count, dim);
    empty |= dim == 0;
  }
  /* A zero dimension empties the tensor whatever the others say. */
  if (empty)
    count = 0, overflow = false;
  char shape_text[96];
  if (overflow || !mi__mul_size(&count, count, t->item))
    return mi__fail(MI_ERR_SHAPE, "tensor '%s': shape %s of %s overflows the address space",
                    name, format_shape(shape_text, sizeof shape_text, t), t->dtype_name);

  if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
      !json_size(&t->begin, json_array_get(offsets, 0)) ||
      !json_size(&t->end, json_array_get(offsets, 1)) || t->begin > t->end)
    return mi__fail(MI_ERR_FORMAT,
                    "tensor '%s': \"data_offsets\" must be [begin, end], integers with "
                    "0 <= begin <= end", name);
  if (t->end > f->data_size)
    return mi__fail(MI_ERR_TRUNCATED,
                    "tensor '%s' ends at byte offset %zu of the file (data offset %zu), "
                    "past the end of the %zu-byte file",
                    name, f->file_size - f->data_size + t->end, t->end, f->file_size);
  if (count != t->end - t->begin)
    return mi__fail(MI_ERR_SHAPE,
                    "tensor '%s': shape %s of %s is %zu bytes, but data_offsets [%zu, %zu] "
                    "span %zu", name, format_shape(shape_text, sizeof shape_text, t),
                    t->dtype_name, count, t->begin, t->end, t->end - t->begin);
  return MI_OK;
}

static int by_begin(const void *a, const void *b) {
  const tensor *x = a, *y = b;
  return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const tensor *)a)->name, ((const tensor *)b)->name);
}

static mi_status check_metadata(const json_t *metadata) {
  if (!json_is_object(metadata))
    return mi__fail(MI_ERR_FORMAT, "\"__metadata__\" is not a JSON object");
  const char *key;
  const json_t *value;
  json_object_foreach((json_t *)metadata, key, value)
    if (!json_is_string(value))
      return mi__fail(MI_ERR_FORMAT, "\"__metadata__\" value '%s' is not a string", key);
  return MI_OK;
}

static mi_status parse_header(st_file *f, const unsigned char *bytes, size_t size) {
  if (size < 8)
    return mi__fail(MI_ERR_TRUNCATED,
                    "%zu bytes: a safetensors file starts with an 8-byte header length",
                    size);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--)
    n = n << 8 | bytes[i];
  if (n > size - 8)
    return mi__fail(MI_ERR_TRUNCATED,
                    "the header length is %llu bytes, but only %zu bytes follow it",
                    (unsigned long long)n, size - 8);
  f->file_size = size;
  f->data = bytes + 8 + n;
  f->data_size = size - 8 - (size_t)n;
  json_error_t error;
  /* jansson checks UTF-8 and nesting depth; duplicate names are an error. */
  f->header = json_loadb((const char *)bytes + 8, (size_t)n,
                         JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &error);
  if (f->header == NULL)
    return mi__fail(MI_ERR_FORMAT, "the header is not valid JSON: %s (header byte %d)",
                    error.text, error.position);
  if (!json_is_object(f->header))
    return mi__fail(MI_ERR_FORMAT, "the header is a JSON %s, not an object",
                    json_is_array(f->header) ? "array" : "scalar");

  size_t count = json_object_size(f->header);
  f->tensors = calloc(count ? count : 1, sizeof *f->tensors);
  if (f->tensors == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate %zu tensor entries", count);
  const char *name;
  const json_t *entry;
  json_object_foreach(f->header, name, entry) {
    mi_status status;
    if (strcmp(name, "__metadata__") == 0) {
      f->metadata = entry;
      status = check_metadata(entry);
    } else {
      status = parse_entry(&f->tensors[f->n_tensors++], name, entry, f);
    }
    if (status != MI_OK)
      return status;
  }

  /* Two tensors overlap when they share a byte; empty ones share none. */
  qsort(f->tensors, f->n_tensors, sizeof *f->tensors, by_begin);
  const tensor *last = NULL;
  for (size_t i = 0; i < f->n_tensors; i++) {
    const tensor *t = &f->tensors[i];
    if (t->begin == t->end)
      continue;
    if (last != NULL && t->begin < last->end)
      return mi__fail(MI_ERR_FORMAT,
                      "tensors '%s' [%zu, %zu] and '%s' [%zu, %zu] overlap in the data",
                      last->name, last->begin, last->end, t->name, t->begin, t->end);
    last = t;
  }
  qsort(f->tensors, f->n_tensors, sizeof *f->tensors, by_name);
  return MI_OK;
}

static const tensor *find(const st_file *f, const char *name) {
  tensor key = {.name = name};
  return bsearch(&key, f->tensors, f->n_tensors, sizeof *f->tensors, by_name);
}

/* Whether some tensor's name starts with `prefix`. */
static bool has_prefix(const st_file *f, const char *prefix) {
  size_t lo = 0, hi = f->n_tensors, len = strlen(prefix);
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (strcmp(f->tensors[mid].name, prefix) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < f->n_tensors && strncmp(f->tensors[lo].name, prefix, len) == 0;
}

/* ---- name maps ------------------------------------------------------------- */

/* The model dimensions a tensor's shape is written in. */
enum { DIM_VOCAB, DIM_MODEL, DIM_HEADS, DIM_KV_HEADS, DIM_HEAD, DIM_CTX, DIM_MODEL_X3,
       DIM_COUNT };
static const char *const dim_names[DIM_COUNT] = {
    "d_vocab", "d_model", "n_heads", "n_kv_heads", "d_head", "n_ctx", "3*d_model"};

typedef struct loader {
  const st_file *f;
  mi_model *model;          /* NULL during the checking pass */
  size_t dims[DIM_COUNT];   /* 0 until a tensor fixes it */
  unsigned parts;
  size_t n_layers;
  const char *prefix;       /* GPT-2: "" or "transformer." */
} loader;

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
static mi_status check_shape(loader *ld, const tensor *t, shape want) {
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
                  format_shape(have, sizeof have, t), names, values);
}

/*
 * Looks up the tensor named by `fmt` (or, when that is absent, by `alt`,
 * which may be NULL), checks its dtype and shape, and gives it in *out.
 * `part` 0: the tensor is required. Otherwise it belongs to that optional
 * part: required when the model has the part, refused when it does not (all
 * layers must agree with the first).
 */
static mi_status lookup(const tensor **out, loader *ld, unsigned part, shape want,
                        const char *alt, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static mi_status lookup(const tensor **out, loader *ld, unsigned part, shape want,
                        const char *alt, const char *fmt, ...) {
  char name[160];
  va_list args;
  va_start(args, fmt);
  vsnprintf(name, sizeof name, fmt, args);
  va_end(args);
  const tensor *t = find(ld->f, name);
  if (t == NULL && alt != NULL)
    t = find(ld->f, alt);
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

/*
 * Copies one weight copy from `t`, starting `offset` elements in, with the
 * given strides (elements). Nothing to do during the checking pass.
 */
static mi_status copy(loader *ld, mi_weight which, size_t layer, size_t head,
                      const tensor *t, size_t offset, size_t row_stride, size_t col_stride) {
  if (ld->model == NULL || t == NULL)
    return MI_OK;
  return mi__model_set_weight_strided(ld->model, which, layer, head, (mi_dtype)t->dtype,
                                      ld->f->data + t->begin + offset * t->item,
                                      row_stride, col_stride);
}

#define SHAPE1(a) ((shape){1, {(a)}})
#define SHAPE2(a, b) ((shape){2, {(a), (b)}})
#define SHAPE3(a, b, c) ((shape){3, {(a), (b), (c)}})
#define TRY(call)                                                            \
  do {                                                                       \
    mi_status try_status_ = (call);                                          \
    if (try_status_ != MI_OK)                                                \
      return try_status_;                                                    \
  } while (0)

/*
 * Counts the layers "<prefix><l>." from 0, refuses gaps (a layer index past
 * the count), and notes MLP weights "<prefix><l>.mlp.".
 */
static mi_status scan_layers(loader *ld, const char *prefix, const char *first_required) {
  char name[160];
  size_t n = 0;
  for (;;) {
    snprintf(name, sizeof name, "%s%zu.", prefix, n);
    if (!has_prefix(ld->f, name))
      break;
    n++;
  }
  size_t len = strlen(prefix);
  for (size_t i = 0; i < ld->f->n_tensors; i++) {
    const char *p = ld->f->tensors[i].name;
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
                      prefix, n, first_required, n, ld->f->tensors[i].name);
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
    if (find(ld->f, optional[i].name))
      ld->parts |= optional[i].part;
  return scan_layers(ld, "blocks.", "attn.W_Q");
}

static mi_status tl_layer(loader *ld, size_t l) {
  const size_t D = ld->dims[DIM_MODEL];
  const tensor *WQ, *WK, *WV, *WO, *bQ, *bK, *bV, *bO, *lw, *lb;
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
  const size_t dh = ld->dims[DIM_HEAD];
  if (H % KV != 0)
    return mi__fail(MI_ERR_SHAPE, "tensor '%s' has %zu key/value heads, which does not "
                    "divide the %zu query heads of '%s'", WK->name, KV, H, WQ->name);
  for (size_t h = 0; h < H; h++) {
    TRY(copy(ld, MI_W_Q, l, h, WQ, h * D * dh, dh, 1));
    TRY(copy(ld, MI_W_O, l, h, WO, h * dh * D, D, 1));
    TRY(copy(ld, MI_B_Q, l, h, bQ, h * dh, dh, 1));
  }
  for (size_t h = 0; h < KV; h++) {
    TRY(copy(ld, MI_W_K, l, h, WK, h * D * dh, dh, 1));
    TRY(copy(ld, MI_W_V, l, h, WV, h * D * dh, dh, 1));
    TRY(copy(ld, MI_B_K, l, h, bK, h * dh, dh, 1));
    TRY(copy(ld, MI_B_V, l, h, bV, h * dh, dh, 1));
  }
  TRY(copy(ld, MI_B_O, l, 0, bO, 0, D, 1));
  TRY(copy(ld, MI_LN1_W, l, 0, lw, 0, D, 1));
  return copy(ld, MI_LN1_B, l, 0, lb, 0, D, 1);
}

/* One pass over a TransformerLens state dict: checking, or copying. */
static mi_status tl_map(loader *ld) {
  const tensor *WE, *Wpos, *WU, *bU, *fw, *fb;
  TRY(lookup(&WE, ld, 0, SHAPE2(DIM_VOCAB, DIM_MODEL), NULL, "embed.W_E"));
  TRY(lookup(&Wpos, ld, MI_PART_POS_EMBED, SHAPE2(DIM_CTX, DIM_MODEL), NULL,
             "pos_embed.W_pos"));
  for (size_t l = 0; l < ld->n_layers; l++)
    TRY(tl_layer(ld, l));
  TRY(lookup(&fw, ld, MI_PART_LN_FINAL, SHAPE1(DIM_MODEL), NULL, "ln_final.w"));
  TRY(lookup(&fb, ld, MI_PART_LN_FINAL, SHAPE1(DIM_MODEL), NULL, "ln_final.b"));
  TRY(lookup(&WU, ld, 0, SHAPE2(DIM_MODEL, DIM_VOCAB), NULL, "unembed.W_U"));
  TRY(lookup(&bU, ld, MI_PART_UNEMBED_BIAS, SHAPE1(DIM_VOCAB), NULL, "unembed.b_U"));
  const size_t D = ld->dims[DIM_MODEL], V = ld->dims[DIM_VOCAB];
  TRY(copy(ld, MI_W_E, 0, 0, WE, 0, D, 1));
  TRY(copy(ld, MI_W_POS, 0, 0, Wpos, 0, D, 1));
  TRY(copy(ld, MI_LNF_W, 0, 0, fw, 0, D, 1));
  TRY(copy(ld, MI_LNF_B, 0, 0, fb, 0, D, 1));
  TRY(copy(ld, MI_W_U, 0, 0, WU, 0, V, 1));
  return copy(ld, MI_B_U, 0, 0, bU, 0, V, 1);
}

/* ---- Hugging Face GPT-2 ---------------------------------------------------- */

/* A positive decimal integer, digits only, as __metadata__ strings hold it. */
static bool parse_count(size_t *out, const char *text) {
  size_t value = 0;
  if (*text == '\0')
    return false;
  for (; *text; text++)
    if (*text < '0' || *text > '9' || !mi__mul_size(&value, value, 10) ||
        __builtin_add_overflow(value, (size_t)(*text - '0'), &value))
      return false;
  *out = value;
  return value > 0;
}

/* n_heads: the caller's, else the file's __metadata__ "n_head" or "n_heads". */
static mi_status gpt2_heads(loader *ld, size_t from_options) {
  if (from_options == 0) {
    static const char *const keys[] = {"n_head", "n_heads"};
    for (size_t i = 0; i < 2 && from_options == 0; i++) {
      const json_t *value = json_object_get(ld->f->metadata, keys[i]);
      if (value != NULL && !parse_count(&from_options, json_string_value(value)))
        return mi__fail(MI_ERR_FORMAT, "__metadata__ \"%s\" is \"%s\", not a positive "
                        "integer", keys[i], json_string_value(value));
    }
  }
  if (from_options == 0)
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "a GPT-2 checkpoint packs its heads, so the number of heads must be "
                    "given: set mi_load_options.n_heads, or store \"n_head\" in the "
                    "file's __metadata__");
  const size_t D = ld->dims[DIM_MODEL];
  if (D % from_options != 0)
    return mi__fail(MI_ERR_SHAPE, "n_heads %zu does not divide d_model %zu", from_options, D);
  ld->dims[DIM_HEADS] = ld->dims[DIM_KV_HEADS] = from_options;
  ld->dims[DIM_HEAD] = D / from_options;
  return MI_OK;
}

static mi_status gpt2_detect_parts(loader *ld) {
  static const struct { const char *name; unsigned part; } optional[] = {
      {"wpe.weight", MI_PART_POS_EMBED},       {"h.0.attn.c_attn.bias", MI_PART_QKV_BIAS},
      {"h.0.attn.c_proj.bias", MI_PART_OUT_BIAS}, {"h.0.ln_1.weight", MI_PART_LN},
      {"ln_f.weight", MI_PART_LN_FINAL}};
  char name[64];
  for (size_t i = 0; i < sizeof optional / sizeof optional[0]; i++) {
    snprintf(name, sizeof name, "%s%s", ld->prefix, optional[i].name);
    if (find(ld->f, name))
      ld->parts |= optional[i].part;
  }
  snprintf(name, sizeof name, "%sh.", ld->prefix);
  return scan_layers(ld, name, "attn.c_attn.weight");
}

static mi_status gpt2_layer(loader *ld, size_t l) {
  const char *p = ld->prefix;
  const size_t D = ld->dims[DIM_MODEL], dh = ld->dims[DIM_HEAD];
  const tensor *attn, *attn_b, *proj, *proj_b, *lw, *lb;
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
  /* Conv1D computes x·W: columns of c_attn are Q | K | V, head h at h·d_head. */
  for (size_t h = 0; h < ld->dims[DIM_HEADS]; h++) {
    TRY(copy(ld, MI_W_Q, l, h, attn, h * dh, 3 * D, 1));
    TRY(copy(ld, MI_W_K, l, h, attn, D + h * dh, 3 * D, 1));
    TRY(copy(ld, MI_W_V, l, h, attn, 2 * D + h * dh, 3 * D, 1));
    TRY(copy(ld, MI_B_Q, l, h, attn_b, h * dh, dh, 1));
    TRY(copy(ld, MI_B_K, l, h, attn_b, D + h * dh, dh, 1));
    TRY(copy(ld, MI_B_V, l, h, attn_b, 2 * D + h * dh, dh, 1));
    /* Head h's output z_h multiplies rows h·d_head.. of c_proj. */
    TRY(copy(ld, MI_W_O, l, h, proj, h * dh * D, D, 1));
  }
  TRY(copy(ld, MI_B_O, l, 0, proj_b, 0, D, 1));
  TRY(copy(ld, MI_LN1_W, l, 0, lw, 0, D, 1));
  return copy(ld, MI_LN1_B, l, 0, lb, 0, D, 1);
}

/* One pass over a GPT-2 checkpoint: checking, or copying. */
static mi_status gpt2_map(loader *ld) {
  const char *p = ld->prefix;
  const tensor *wte, *wpe, *fw, *fb, *head;
  TRY(lookup(&wte, ld, 0, SHAPE2(DIM_VOCAB, DIM_MODEL), NULL, "%swte.weight", p));
  TRY(lookup(&wpe, ld, MI_PART_POS_EMBED, SHAPE2(DIM_CTX, DIM_MODEL), NULL, "%swpe.weight",
             p));
  for (size_t l = 0; l < ld->n_layers; l++)
    TRY(gpt2_layer(ld, l));
  TRY(lookup(&fw, ld, MI_PART_LN_FINAL, SHAPE1(DIM_MODEL), NULL, "%sln_f.weight", p));
  TRY(lookup(&fb, ld, MI_PART_LN_FINAL, SHAPE1(DIM_MODEL), NULL, "%sln_f.bias", p));
  /* lm_head is outside the transformer. prefix; absent, W_U is tied to W_E. */
  head = find(ld->f, "lm_head.weight");
  if (head != NULL)
    TRY(lookup(&head, ld, 0, SHAPE2(DIM_VOCAB, DIM_MODEL), NULL, "lm_head.weight"));
  const size_t D = ld->dims[DIM_MODEL];
  TRY(copy(ld, MI_W_E, 0, 0, wte, 0, D, 1));
  TRY(copy(ld, MI_W_POS, 0, 0, wpe, 0, D, 1));
  TRY(copy(ld, MI_LNF_W, 0, 0, fw, 0, D, 1));
  TRY(copy(ld, MI_LNF_B, 0, 0, fb, 0, D, 1));
  /* W_U [d_model × d_vocab] is the transpose of a [d_vocab × d_model] tensor. */
  return copy(ld, MI_W_U, 0, 0, head ? head : wte, 0, 1, D);
}

/* ---- loading --------------------------------------------------------------- */

/*
 * TransformerLens's cfg.normalization_type, when __metadata__ has it. A model
 * saved after fold_ln is "LNPre": it still normalises, but has no LayerNorm
 * weights to say so. Gives in *out_identity the parts to add as identity
 * LayerNorms (w = 1, b = 0, which is how mi_model_create makes them).
 */
static mi_status normalization(unsigned *out_identity, loader *ld) {
  const unsigned both = MI_PART_LN | MI_PART_LN_FINAL;
  const char *type =
      json_string_value(json_object_get(ld->f->metadata, "normalization_type"));
  *out_identity = 0;
  if (type == NULL)
    return MI_OK;
  if (strcmp(type, "LN") == 0) {
    ld->parts |= both; /* the weights must be there */
    return MI_OK;
  }
  if (strcmp(type, "LNPre") != 0 && strcmp(type, "None") != 0)
    return mi__fail(MI_ERR_UNSUPPORTED,
                    "__metadata__ \"normalization_type\" is \"%s\"; libmi implements "
                    "\"LN\", \"LNPre\" and \"None\"", type);
  if (ld->parts & both)
    return mi__fail(MI_ERR_FORMAT,
                    "__metadata__ \"normalization_type\" is \"%s\", but the file has "
                    "LayerNorm weights", type);
  if (strcmp(type, "LNPre") == 0)
    *out_identity = both;
  return MI_OK;
}

static mi_status load(mi_model **out, const st_file *f, const mi_load_options *options) {
  loader ld = {.f = f};
  mi_layout layout;
  mi_status (*map)(loader *);
  if (find(f, "embed.W_E")) {
    layout = MI_LAYOUT_TRANSFORMERLENS;
    map = tl_map;
    TRY(tl_detect_parts(&ld));
    /* The caller's n_heads, if any, must agree with the file's shapes. */
    ld.dims[DIM_HEADS] = options->n_heads;
  } else if (find(f, "wte.weight") || find(f, "transformer.wte.weight")) {
    layout = MI_LAYOUT_GPT2;
    map = gpt2_map;
    ld.prefix = find(f, "wte.weight") ? "" : "transformer.";
    TRY(gpt2_detect_parts(&ld));
    const tensor *wte;
    TRY(lookup(&wte, &ld, 0, SHAPE2(DIM_VOCAB, DIM_MODEL), NULL, "%swte.weight", ld.prefix));
    TRY(gpt2_heads(&ld, options->n_heads));
  } else {
    return mi__fail(MI_ERR_MISSING_TENSOR,
                    "neither 'embed.W_E' (TransformerLens) nor 'wte.weight' (GPT-2) is in "
                    "the file: not a model libmi can map");
  }
  unsigned identity_ln;
  TRY(normalization(&identity_ln, &ld));
  /* First pass: every tensor present and of the right shape; nothing allocated. */
  TRY(map(&ld));

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
  config.ln_eps = 1e-5; /* TransformerLens's default and GPT-2's */
  TRY(mi_model_create(&ld.model, &config));
  mi_status status = map(&ld);
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

mi_status mi_model_load_memory(mi_model **out, const void *data, size_t size,
                               const mi_load_options *options) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(data);
  mi_load_options opts;
  mi_load_options_init(&opts, sizeof opts);
  mi_status status = mi__struct_in(&opts, sizeof opts, options, "mi_load_options");
  if (status != MI_OK)
    return status;
  st_file f = {0};
  status = parse_header(&f, data, size);
  if (status == MI_OK)
    status = load(out, &f, &opts);
  st_file_close(&f);
  return status;
}

mi_status mi_model_load(mi_model **out, const char *path, const mi_load_options *options) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(path);
  char reason[128];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    strerror_r(errno, reason, sizeof reason);
    return mi__fail(MI_ERR_IO, "cannot open '%s': %s", path, reason);
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return mi__fail(MI_ERR_IO, "'%s' is not a readable regular file", path);
  }
  if (st.st_size == 0) {
    close(fd);
    return mi__fail(MI_ERR_TRUNCATED,
                    "'%s' is empty: a safetensors file starts with an 8-byte header length",
                    path);
  }
  if ((uintmax_t)st.st_size > SIZE_MAX) {
    close(fd);
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "'%s' is too large to map", path);
  }
  size_t size = (size_t)st.st_size;
  void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  close(fd);
  if (map == MAP_FAILED) {
    strerror_r(map_errno, reason, sizeof reason);
    return mi__fail(MI_ERR_IO, "cannot map '%s': %s", path, reason);
  }
  mi_status status = mi_model_load_memory(out, map, size, options);
  munmap(map, size);
  if (status != MI_OK) {
    /* Say which file, keeping the reader's detail. */
    char detail[512];
    snprintf(detail, sizeof detail, "%s", mi_last_error());
    mi__fail(status, "%s: %s", path, detail);
  }
  return status;
}
