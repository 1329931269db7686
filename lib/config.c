/*
 * config.c: config.json, as TransformerLens and Hugging Face GPT-2 write it.
 *
 * A config says what the tensors cannot (GPT-2's head count, the LayerNorm
 * epsilon, how positions enter) and repeats what they can (layers, widths,
 * vocabulary size). Both become hints that namemap.c checks against the
 * tensors, so a config that disagrees with its weights is an error, never a
 * silent choice. Unknown fields are ignored; a known field of the wrong JSON
 * type is an error naming it and the file.
 */
#define _POSIX_C_SOURCE 200809L
#include "loader.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- files ------------------------------------------------------------------ */

const char *mi__errno_text(int err) {
  static _Thread_local char text[128];
  if (strerror_r(err, text, sizeof text) != 0)
    snprintf(text, sizeof text, "error %d", err);
  return text;
}

char *mi__path_join(const char *dir, const char *name) {
  size_t n = strlen(dir), m = strlen(name);
  bool slash = n > 0 && dir[n - 1] != '/';
  char *path = malloc(n + slash + m + 1);
  if (path == NULL)
    return NULL;
  memcpy(path, dir, n);
  if (slash)
    path[n] = '/';
  memcpy(path + n + slash, name, m + 1);
  return path;
}

mi_status mi__pread_at(void *buf, int fd, size_t offset, size_t size, const char *path) {
  unsigned char *at = buf;
  size_t got = 0;
  while (got < size) {
    /* Reads of at most 1 GiB: some kernels cap one read below SSIZE_MAX. */
    size_t want = size - got < ((size_t)1 << 30) ? size - got : (size_t)1 << 30;
    ssize_t n = pread(fd, at + got, want, (off_t)(offset + got));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return mi__fail(MI_ERR_IO, "cannot read '%s' at byte offset %zu: %s", path,
                      offset + got, mi__errno_text(errno));
    if (n == 0)
      return mi__fail(MI_ERR_TRUNCATED, "'%s' shrank while it was read: it ends at byte "
                      "offset %zu, but reached byte %zu when it was opened", path,
                      offset + got, offset + size);
    got += (size_t)n;
  }
  return MI_OK;
}

mi_status mi__pread_all(void *buf, int fd, size_t size, const char *path) {
  return mi__pread_at(buf, fd, 0, size, path);
}

mi_status mi__open_regular(int *fd, size_t *size, bool *missing, const char *path) {
  *fd = -1;
  *size = 0;
  if (missing != NULL)
    *missing = false;
  /* O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below. */
  int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (f < 0 && errno == ENOENT && missing != NULL) {
    *missing = true;
    return MI_OK;
  }
  if (f < 0)
    return mi__fail(MI_ERR_IO, "cannot open '%s': %s", path, mi__errno_text(errno));
  struct stat st;
  if (fstat(f, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(f);
    return mi__fail(MI_ERR_IO, "'%s' is not a readable regular file", path);
  }
  if ((uintmax_t)st.st_size >= SIZE_MAX) {
    close(f);
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "'%s' is too large to read", path);
  }
  *fd = f;
  *size = (size_t)st.st_size;
  return MI_OK;
}

mi_status mi__file_read(char **out, size_t *size, bool *missing, const char *path) {
  *out = NULL;
  *size = 0;
  int fd;
  size_t want;
  mi_status status = mi__open_regular(&fd, &want, missing, path);
  if (status != MI_OK || fd < 0)
    return status;
  char *data = malloc(want + 1);
  status = data != NULL ? mi__pread_all(data, fd, want, path)
                        : mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes for '%s'",
                                   want, path);
  close(fd);
  if (status != MI_OK) {
    free(data);
    return status;
  }
  data[want] = '\0';
  *out = data;
  *size = want;
  return MI_OK;
}

/* ---- fields ----------------------------------------------------------------- */

/* The hints a size can go to, and which key gave each (for disagreements). */
enum { F_LAYERS, F_HEADS, F_KV_HEADS, F_MODEL, F_HEAD, F_VOCAB, F_CTX, F_COUNT };

typedef struct parser {
  mi__config *config;
  const json_t *root;
  const char *said_by[F_COUNT]; /* the key that set each size */
  const char *eps_key, *positional_key, *normalization_key;
} parser;

static size_t *size_field(mi__model_hints *h, int field) {
  size_t *fields[F_COUNT] = {&h->n_layers, &h->n_heads, &h->n_kv_heads, &h->d_model,
                             &h->d_head,   &h->d_vocab, &h->n_ctx};
  return fields[field];
}

/* A key's value, or NULL when it is absent or null (null says nothing). */
static const json_t *get(const parser *p, const char *key) {
  const json_t *value = json_object_get(p->root, key);
  return json_is_null(value) ? NULL : value;
}

static const char *json_kind(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER: return "an integer";
  case JSON_REAL: return "a real number";
  case JSON_TRUE:
  case JSON_FALSE: return "a boolean";
  case JSON_NULL: return "null";
  }
  return "a JSON value";
}

static mi_status wrong_type(const parser *p, const char *key, const json_t *value,
                            const char *wanted) {
  return mi__fail(MI_ERR_FORMAT, "%s: \"%s\" is %s; it must be %s", p->config->path, key,
                  json_kind(value), wanted);
}

/* A positive integer field into one of the size hints. */
static mi_status read_size(parser *p, const char *key, int field) {
  const json_t *value = get(p, key);
  if (value == NULL)
    return MI_OK;
  json_int_t v = json_is_integer(value) ? json_integer_value(value) : 0;
#if LLONG_MAX > SIZE_MAX
  if ((unsigned long long)v > SIZE_MAX)
    v = 0;
#endif
  if (v <= 0)
    return json_is_integer(value)
               ? mi__fail(MI_ERR_FORMAT, "%s: \"%s\" is %lld; it must be a positive integer",
                          p->config->path, key, (long long)json_integer_value(value))
               : wrong_type(p, key, value, "a positive integer");
  size_t *into = size_field(&p->config->hints, field);
  if (*into != 0 && *into != (size_t)v)
    return mi__fail(MI_ERR_FORMAT, "%s: \"%s\" is %zu but \"%s\" is %lld; they name the "
                    "same size", p->config->path, p->said_by[field], *into, key, (long long)v);
  *into = (size_t)v;
  p->said_by[field] = key;
  return MI_OK;
}

/* TransformerLens's eps or GPT-2's layer_norm_epsilon: a positive number. */
static mi_status read_eps(parser *p, const char *key) {
  const json_t *value = get(p, key);
  if (value == NULL)
    return MI_OK;
  if (!json_is_number(value))
    return wrong_type(p, key, value, "a number");
  double eps = json_number_value(value);
  if (!(eps > 0.0) || !isfinite(eps))
    return mi__fail(MI_ERR_FORMAT, "%s: \"%s\" is %g; a LayerNorm epsilon must be positive",
                    p->config->path, key, eps);
  double *into = &p->config->hints.ln_eps;
  if (*into != 0.0 && *into != eps)
    return mi__fail(MI_ERR_FORMAT, "%s: \"%s\" is %g but \"%s\" is %g", p->config->path,
                    p->eps_key, *into, key, eps);
  *into = eps;
  p->eps_key = key;
  return MI_OK;
}

static mi_status set_positional(parser *p, const char *key, mi_positional kind) {
  mi_positional *into = &p->config->hints.positional;
  if (*into != MI_POSITIONAL_DEFAULT && *into != kind)
    return mi__fail(MI_ERR_FORMAT, "%s: \"%s\" says %s positions but \"%s\" says %s",
                    p->config->path, p->positional_key, mi__positional_name(*into), key,
                    mi__positional_name(kind));
  *into = kind;
  p->positional_key = key;
  return MI_OK;
}

/*
 * positional_embedding_type (rotary, alibi, ... are refused by name), and
 * the training configs' shortformer_pos (true: shortformer, false: standard).
 */
static mi_status read_positional(parser *p) {
  const json_t *type = get(p, "positional_embedding_type");
  if (type != NULL) {
    if (!json_is_string(type))
      return wrong_type(p, "positional_embedding_type", type, "a string");
    mi_positional kind;
    mi_status status = mi__positional_parse(&kind, json_string_value(type), p->config->path);
    if (status == MI_OK)
      status = set_positional(p, "positional_embedding_type", kind);
    if (status != MI_OK)
      return status;
  }
  const json_t *shortformer = get(p, "shortformer_pos");
  if (shortformer == NULL)
    return MI_OK;
  if (!json_is_boolean(shortformer))
    return wrong_type(p, "shortformer_pos", shortformer, "true or false");
  return set_positional(p, "shortformer_pos", json_is_true(shortformer)
                                                  ? MI_POSITIONAL_SHORTFORMER
                                                  : MI_POSITIONAL_STANDARD);
}

/*
 * normalization_type (HookedTransformerConfig) or normalization (the
 * training configs of TransformerLens's own models). An explicit null is
 * TransformerLens's None: no LayerNorm.
 */
static mi_status read_normalization(parser *p) {
  static const char *const keys[] = {"normalization_type", "normalization"};
  for (size_t i = 0; i < 2; i++) {
    const json_t *value = json_object_get(p->root, keys[i]);
    if (value == NULL)
      continue;
    if (!json_is_string(value) && !json_is_null(value))
      return wrong_type(p, keys[i], value, "a string or null");
    const char *type = json_is_null(value) ? "None" : json_string_value(value);
    const char *had = p->config->hints.normalization;
    if (had != NULL && strcmp(had, type) != 0)
      return mi__fail(MI_ERR_FORMAT, "%s: \"%s\" is \"%s\" but \"%s\" is \"%s\"",
                      p->config->path, p->normalization_key, had, keys[i], type);
    p->config->hints.normalization = type;
    p->normalization_key = keys[i];
  }
  return MI_OK;
}

/*
 * Whether the model has MLPs: TransformerLens's attn_only, else a GPT-2
 * config (model_type "gpt2"), which always has them. A Hugging Face
 * model_type other than GPT-2 is a model libmi cannot map.
 */
static mi_status read_architecture(parser *p) {
  const json_t *attn_only = get(p, "attn_only");
  if (attn_only != NULL && !json_is_boolean(attn_only))
    return wrong_type(p, "attn_only", attn_only, "true or false");
  const json_t *type = get(p, "model_type");
  if (type != NULL && !json_is_string(type))
    return wrong_type(p, "model_type", type, "a string");
  if (type != NULL && strcmp(json_string_value(type), "gpt2") != 0)
    return mi__fail(MI_ERR_UNSUPPORTED, "%s: model_type \"%s\" is not one libmi reads (it "
                    "reads GPT-2's and TransformerLens's configs)", p->config->path,
                    json_string_value(type));
  if (attn_only != NULL)
    p->config->hints.mlp = json_is_true(attn_only) ? -1 : 1;
  else if (type != NULL)
    p->config->hints.mlp = 1;
  return MI_OK;
}

static mi_status read_fields(parser *p) {
  /* TransformerLens's name first, then GPT-2's for the same size. */
  static const struct { const char *key; int field; } sizes[] = {
      {"n_layers", F_LAYERS},   {"n_layer", F_LAYERS},
      {"n_heads", F_HEADS},     {"n_head", F_HEADS},
      {"n_key_value_heads", F_KV_HEADS},
      {"d_model", F_MODEL},     {"n_embd", F_MODEL},
      {"d_head", F_HEAD},
      {"d_vocab", F_VOCAB},     {"vocab_size", F_VOCAB},
      {"n_ctx", F_CTX},         {"n_positions", F_CTX}};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    mi_status status = read_size(p, sizes[i].key, sizes[i].field);
    if (status != MI_OK)
      return status;
  }
  mi_status status = read_eps(p, "eps");
  if (status == MI_OK)
    status = read_eps(p, "layer_norm_epsilon");
  if (status == MI_OK)
    status = read_positional(p);
  if (status == MI_OK)
    status = read_normalization(p);
  if (status == MI_OK)
    status = read_architecture(p);
  return status;
}

/* ---- entry points ----------------------------------------------------------- */

void mi__config_free(mi__config *config) {
  free(config->path);
  json_decref(config->json);
  *config = (mi__config){0};
}

mi_status mi__config_parse(mi__config *out, const char *text, size_t size,
                           const char *source) {
  *out = (mi__config){0};
  mi__config c = {.path = malloc(strlen(source) + 1)};
  if (c.path == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate the name of '%s'", source);
  strcpy(c.path, source);
  c.hints.source = c.path;
  json_error_t error;
  c.json = json_loadb(text, size, JSON_REJECT_DUPLICATES, &error);
  if (c.json == NULL || !json_is_object(c.json)) {
    mi_status status =
        c.json == NULL
            ? mi__fail(MI_ERR_FORMAT, "%s is not valid JSON: %s (line %d, column %d)", source,
                       error.text, error.line, error.column)
            : mi__fail(MI_ERR_FORMAT, "%s is %s, not a JSON object", source,
                       json_kind(c.json));
    mi__config_free(&c);
    return status;
  }
  parser p = {.config = &c, .root = c.json};
  mi_status status = read_fields(&p);
  if (status != MI_OK) {
    mi__config_free(&c);
    return status;
  }
  *out = c;
  return MI_OK;
}

mi_status mi__config_read(mi__config *out, const char *path, bool missing_ok) {
  *out = (mi__config){0};
  char *text;
  size_t size;
  bool missing;
  mi_status status = mi__file_read(&text, &size, missing_ok ? &missing : NULL, path);
  if (status != MI_OK || text == NULL)
    return status;
  status = mi__config_parse(out, text, size, path);
  free(text);
  return status;
}
