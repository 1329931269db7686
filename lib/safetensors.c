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
#include "loader.h"

#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

typedef mi__st_tensor tensor;
typedef mi__st_file st_file;

void mi__st_close(st_file *f) {
  json_decref(f->header);
  free(f->tensors);
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
  t->view.name = name;
  if (!json_is_object(entry))
    return mi__fail(MI_ERR_FORMAT, "tensor '%s': its header entry is not a JSON object",
                    name);
  const json_t *dtype = json_object_get(entry, "dtype");
  const json_t *shape = json_object_get(entry, "shape");
  const json_t *offsets = json_object_get(entry, "data_offsets");
  if (!json_is_string(dtype))
    return mi__fail(MI_ERR_FORMAT, "tensor '%s': \"dtype\" is missing or not a string",
                    name);
  t->view.dtype_name = json_string_value(dtype);
  size_t k = 0;
  while (k < sizeof dtypes / sizeof dtypes[0] && strcmp(dtypes[k].name, t->view.dtype_name))
    k++;
  if (k == sizeof dtypes / sizeof dtypes[0])
    return mi__fail(MI_ERR_DTYPE, "tensor '%s': unknown dtype '%s'", name,
                    t->view.dtype_name);
  t->view.dtype = dtypes[k].mi;
  t->view.item = dtypes[k].item;

  if (!json_is_array(shape))
    return mi__fail(MI_ERR_FORMAT, "tensor '%s': \"shape\" is missing or not an array", name);
  t->view.rank = json_array_size(shape);
  size_t count = 1;
  bool overflow = false, empty = false;
  for (size_t i = 0; i < t->view.rank; i++) {
    size_t dim;
    if (!json_size(&dim, json_array_get(shape, i)))
      return mi__fail(MI_ERR_FORMAT, "tensor '%s': shape[%zu] is not a non-negative integer",
                      name, i);
    if (i < MI__TENSOR_RANK)
      t->view.dims[i] = dim;
    overflow |= !mi__mul_size(&count, count, dim);
    empty |= dim == 0;
  }
  /* A zero dimension empties the tensor whatever the others say. */
  if (empty)
    count = 0, overflow = false;
  char shape_text[96];
  if (overflow || !mi__mul_size(&count, count, t->view.item))
    return mi__fail(MI_ERR_SHAPE, "tensor '%s': shape %s of %s overflows the address space",
                    name, mi__format_shape(shape_text, sizeof shape_text, &t->view),
                    t->view.dtype_name);

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
                    "span %zu", name,
                    mi__format_shape(shape_text, sizeof shape_text, &t->view),
                    t->view.dtype_name, count, t->begin, t->end, t->end - t->begin);
  /* Row-major: an axis's stride is the product of the dims after it (kept
   * axes only: the name maps read no deeper tensor). */
  size_t stride = 1;
  for (size_t i = t->view.rank; i-- > 0;)
    if (i < MI__TENSOR_RANK) {
      t->view.strides[i] = stride;
      stride *= t->view.dims[i];
    }
  t->view.data = f->data + t->begin;
  return MI_OK;
}

static int by_begin(const void *a, const void *b) {
  const tensor *x = a, *y = b;
  return x->begin < y->begin ? -1 : x->begin > y->begin;
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

mi_status mi__st_parse(st_file *f, const unsigned char *bytes, size_t size) {
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
                      last->view.name, last->begin, last->end, t->view.name, t->begin,
                      t->end);
    last = t;
  }
  return MI_OK;
}

/* ---- loading --------------------------------------------------------------- */

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

/*
 * What __metadata__ says about the model: "n_head" or "n_heads" (GPT-2
 * files need it), TransformerLens's "normalization_type" and
 * "positional_embedding_type". Strings are borrowed from the header.
 */
static mi_status metadata_hints(mi__model_hints *out, const st_file *f) {
  *out = (mi__model_hints){.source = "__metadata__"};
  static const char *const head_keys[] = {"n_head", "n_heads"};
  for (size_t i = 0; i < 2 && out->n_heads == 0; i++) {
    const char *value = json_string_value(json_object_get(f->metadata, head_keys[i]));
    if (value != NULL && !parse_count(&out->n_heads, value))
      return mi__fail(MI_ERR_FORMAT, "__metadata__ \"%s\" is \"%s\", not a positive "
                      "integer", head_keys[i], value);
  }
  out->normalization =
      json_string_value(json_object_get(f->metadata, "normalization_type"));
  const char *positional =
      json_string_value(json_object_get(f->metadata, "positional_embedding_type"));
  if (positional != NULL)
    return mi__positional_parse(&out->positional, positional, "__metadata__");
  return MI_OK;
}

/* The views of every tensor, for the name maps. */
static mi_status tensor_views(mi__tensor **out, const st_file *f) {
  mi__tensor *views = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *views);
  if (views == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate %zu tensor views", f->n_tensors);
  for (size_t i = 0; i < f->n_tensors; i++)
    views[i] = f->tensors[i].view;
  *out = views;
  return MI_OK;
}

/* The length field and the header, the only bytes the parse reads. */
static mi_status fill_header(const mi__image *img) {
  mi_status status = mi__image_fill(img, 0, img->size < 8 ? img->size : 8);
  uint64_t n = 0;
  for (int i = 7; status == MI_OK && img->size >= 8 && i >= 0; i--)
    n = n << 8 | img->bytes[i];
  if (status == MI_OK && img->size >= 8 && n <= img->size - 8)
    status = mi__image_fill(img, 8, (size_t)n);
  return status;
}

mi_status mi__safetensors_load(mi_model **out, const mi__image *img,
                               const mi__model_hints *given, const mi_load_options *options) {
  st_file f = {0};
  mi__model_hints hints = *given;
  mi__model_hints from_metadata;
  mi__config embedded = {0};
  mi__tensor *views = NULL;
  mi_status status = fill_header(img);
  if (status == MI_OK)
    status = mi__st_parse(&f, img->bytes, img->size);
  if (status == MI_OK)
    status = metadata_hints(&from_metadata, &f);
  if (status == MI_OK)
    status = mi__hints_merge(&hints, &from_metadata);
  /* A config.json's text under "config" (what the Python bindings write for
   * a state dict in memory) is read as a config.json is. */
  const char *config = f.metadata ? json_string_value(json_object_get(f.metadata, "config"))
                                  : NULL;
  if (status == MI_OK && config != NULL)
    status = mi__config_parse(&embedded, config, strlen(config), "__metadata__ \"config\"");
  if (status == MI_OK && config != NULL)
    status = mi__hints_merge(&hints, &embedded.hints);
  if (status == MI_OK)
    status = tensor_views(&views, &f);
  if (status == MI_OK)
    status = mi__model_from_tensors(out, views, f.n_tensors, &hints, options, img);
  free(views);
  mi__config_free(&embedded);
  mi__st_close(&f);
  return status;
}
