/*
 * vocab.c: optional token strings, from Hugging Face vocab.json or
 * tokenizer.json, or a text file with one token a line.
 *
 * Every string is decoded once, at load time, into one arena; a hash table
 * built at the same time answers reverse lookups. A loaded vocabulary is
 * never changed again, so any number of threads may read it.
 */
#define _POSIX_C_SOURCE 200809L
#include "loader.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* One id's strings: offsets into the arena, NUL-terminated there. */
typedef struct vocab_entry {
  size_t text, text_len; /* what token_str gives; text == NONE: no string */
  size_t raw, raw_len;   /* as the file spells it (== text when literal) */
} vocab_entry;

#define NONE SIZE_MAX

struct mi__vocab {
  size_t n_ids;          /* d_vocab when loaded: one entry per id */
  /* Text to ids (tokenizer.c); NULL when the file describes none, and then
   * the status and message mi_model_tokenizer gives. */
  mi_tokenizer *tokenizer;
  mi_status tokenizer_status;
  char *tokenizer_error;
  vocab_entry *entries;
  char *arena;
  /* Open addressing; a slot holds 2·id + form + 1 (form 0: text, 1: raw). */
  size_t *slots;
  size_t mask;
  /* Models sharing it besides the first (mi_model_copy): it never changes
   * once loaded, so copies read one table; the last owner frees it. */
  atomic_size_t extra_refs;
};

struct mi__vocab *mi__vocab_share(struct mi__vocab *vocab) {
  if (vocab != NULL)
    atomic_fetch_add(&vocab->extra_refs, 1);
  return vocab;
}

void mi__vocab_free(struct mi__vocab *vocab) {
  if (vocab == NULL)
    return;
  size_t refs = atomic_load(&vocab->extra_refs);
  while (refs > 0)
    if (atomic_compare_exchange_weak(&vocab->extra_refs, &refs, refs - 1))
      return;
  free(vocab->entries);
  free(vocab->arena);
  free(vocab->slots);
  mi_tokenizer_free(vocab->tokenizer);
  free(vocab->tokenizer_error);
  free(vocab);
}

/* ---- GPT-2's byte-level alphabet ---------------------------------------- */

/*
 * GPT-2's bytes_to_unicode: a byte that is a printable Latin-1 character
 * ('!'..'~', '¡'..'¬', '®'..'ÿ') stands for itself; the other 68 bytes,
 * in increasing order, stand for U+0100, U+0101, ... The inverse maps those
 * 324 code points back to bytes; -1 marks a code point outside the alphabet.
 */
void mi__byte_level_inverse(int16_t inverse[MI__BYTE_LEVEL_CODE_POINTS]) {
  for (int cp = 0; cp < MI__BYTE_LEVEL_CODE_POINTS; cp++)
    inverse[cp] = -1;
  int next = 256;
  for (int b = 0; b < 256; b++) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    inverse[printable ? b : next++] = (int16_t)b;
  }
}

/* The code point at s[*i] (valid UTF-8, as jansson guarantees), advancing *i. */
static uint32_t next_code_point(const unsigned char *s, size_t len, size_t *i) {
  unsigned char c = s[(*i)++];
  int extra = c < 0x80 ? 0 : c < 0xE0 ? 1 : c < 0xF0 ? 2 : 3;
  uint32_t cp = extra == 0 ? c : c & (0x3F >> extra);
  for (; extra > 0 && *i < len; extra--)
    cp = cp << 6 | (s[(*i)++] & 0x3F);
  return cp;
}

/*
 * Decodes a byte-level token into `out` (at most len bytes: each character
 * gives one byte and takes at least one). Returns its length, or NONE when a
 * character is outside the alphabet: the token was not byte-level encoded.
 */
size_t mi__byte_level_decode(char *out, const char *raw, size_t len,
                             const int16_t inverse[MI__BYTE_LEVEL_CODE_POINTS]) {
  size_t n = 0;
  for (size_t i = 0; i < len;) {
    uint32_t cp = next_code_point((const unsigned char *)raw, len, &i);
    if (cp >= MI__BYTE_LEVEL_CODE_POINTS || inverse[cp] < 0)
      return NONE;
    out[n++] = (char)inverse[cp];
  }
  return n;
}

/* ---- building a vocabulary ---------------------------------------------- */

/* A token as read, before decoding; raw points into the parsed input. */
typedef struct pending_token {
  const char *raw;
  size_t len;
  bool set, literal;
} pending_token;

typedef struct builder {
  size_t n_ids;
  pending_token *tokens; /* n_ids of them */
  size_t count;          /* ids with a token */
  size_t bytes;          /* raw bytes over all tokens */
} builder;

/* A token in a message: at most 48 bytes of it. */
#define SHOW(raw, len) (int)((len) < 48 ? (len) : 48), (raw)

/*
 * Records token `raw` at `id`. `where` names the part of the file for
 * messages. A token listed twice at the same id with the same text is one
 * token (tokenizer.json lists special tokens in the vocabulary and again in
 * added_tokens).
 */
static mi_status add_token(builder *b, long long id, const char *raw, size_t len,
                           bool literal, const char *where) {
  if (id < 0)
    return mi__fail(MI_ERR_FORMAT, "vocabulary: %s: token '%.*s' has negative id %lld",
                    where, SHOW(raw, len), id);
  if ((unsigned long long)id >= b->n_ids)
    return mi__fail(MI_ERR_INDEX,
                    "vocabulary: %s: token '%.*s' has id %lld, but the model's d_vocab "
                    "is %zu",
                    where, SHOW(raw, len), id, b->n_ids);
  pending_token *t = &b->tokens[id];
  if (t->set) {
    if (t->len == len && memcmp(t->raw, raw, len) == 0)
      return MI_OK;
    return mi__fail(MI_ERR_FORMAT, "vocabulary: %s: tokens '%.*s' and '%.*s' both have id %lld",
                    where, SHOW(t->raw, t->len), SHOW(raw, len), id);
  }
  *t = (pending_token){.raw = raw, .len = len, .set = true, .literal = literal};
  b->count++;
  b->bytes += len;
  return MI_OK;
}

/* The string of a slot's (id, form). */
static const char *slot_key(const struct mi__vocab *v, size_t slot, size_t *len) {
  const vocab_entry *e = &v->entries[(slot - 1) / 2];
  bool raw = (slot - 1) % 2;
  *len = raw ? e->raw_len : e->text_len;
  return v->arena + (raw ? e->raw : e->text);
}

/* The slot index holding key, or of the empty slot where it would go. */
static size_t find_slot(const struct mi__vocab *v, const char *key, size_t len) {
  size_t i = (size_t)mi__hash_bytes(key, len) & v->mask;
  for (; v->slots[i] != 0; i = (i + 1) & v->mask) {
    size_t n;
    const char *k = slot_key(v, v->slots[i], &n);
    if (n == len && memcmp(k, key, len) == 0)
      break;
  }
  return i;
}

/* Adds (id, form) unless its string is already there (the lower id keeps it). */
static void index_form(struct mi__vocab *v, size_t id, int form) {
  size_t slot = 2 * id + (size_t)form + 1, len;
  const char *key = slot_key(v, slot, &len);
  size_t i = find_slot(v, key, len);
  if (v->slots[i] == 0)
    v->slots[i] = slot;
}

/*
 * Decodes every pending token into one arena and indexes it: all decoded
 * strings first, then the raw spellings that differ, so a decoded string
 * wins over another token's raw spelling.
 */
static mi_status build(struct mi__vocab **out, const builder *b) {
  size_t arena_size, slot_count = 4;
  /* Decoded text is never longer than the raw text: at most 2 copies + 2 NULs. */
  if (__builtin_add_overflow(b->bytes, b->count, &arena_size) ||
      !mi__mul_size(&arena_size, arena_size, 2))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "vocabulary: %zu bytes overflow size_t", b->bytes);
  while (slot_count < 4 * b->count) /* two forms an id, at most half full */
    slot_count *= 2;
  struct mi__vocab *v = calloc(1, sizeof *v);
  if (v != NULL) {
    v->entries = calloc(b->n_ids, sizeof *v->entries);
    v->arena = malloc(arena_size ? arena_size : 1);
    v->slots = calloc(slot_count, sizeof *v->slots);
  }
  if (v == NULL || v->entries == NULL || v->arena == NULL || v->slots == NULL) {
    mi__vocab_free(v);
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "vocabulary: cannot allocate %zu tokens (%zu bytes)",
                    b->count, arena_size);
  }
  v->n_ids = b->n_ids;
  v->mask = slot_count - 1;
  int16_t inverse[MI__BYTE_LEVEL_CODE_POINTS];
  mi__byte_level_inverse(inverse);
  size_t used = 0;
  for (size_t id = 0; id < b->n_ids; id++) {
    const pending_token *t = &b->tokens[id];
    vocab_entry *e = &v->entries[id];
    if (!t->set) {
      *e = (vocab_entry){.text = NONE, .raw = NONE};
      continue;
    }
    e->raw = used;
    e->raw_len = t->len;
    memcpy(v->arena + used, t->raw, t->len);
    v->arena[used + t->len] = '\0';
    used += t->len + 1;
    size_t n = !t->literal ? mi__byte_level_decode(v->arena + used, t->raw, t->len, inverse)
                   : NONE;
    if (n == NONE || (n == t->len && memcmp(v->arena + used, t->raw, n) == 0)) {
      e->text = e->raw; /* literal, or decoding changes nothing */
      e->text_len = e->raw_len;
    } else {
      e->text = used;
      e->text_len = n;
      v->arena[used + n] = '\0';
      used += n + 1;
    }
  }
  for (int form = 0; form < 2; form++)
    for (size_t id = 0; id < b->n_ids; id++)
      if (v->entries[id].text != NONE && (form == 0 || v->entries[id].raw != v->entries[id].text))
        index_form(v, id, form);
  *out = v;
  return MI_OK;
}

/* ---- the three formats -------------------------------------------------- */

/* Adds every "token": id pair of a JSON object. */
static mi_status read_token_object(builder *b, json_t *object, bool literal,
                                   const char *where) {
  const char *key;
  size_t key_len;
  json_t *value;
  void *iter;
  for (iter = json_object_iter(object); iter != NULL;
       iter = json_object_iter_next(object, iter)) {
    key = json_object_iter_key(iter);
    key_len = strlen(key); /* jansson refuses "\u0000" in keys */
    value = json_object_iter_value(iter);
    if (!json_is_integer(value))
      return mi__fail(MI_ERR_FORMAT, "vocabulary: %s: the id of token '%.*s' is not an integer",
                      where, SHOW(key, key_len));
    mi_status status = add_token(b, json_integer_value(value), key, key_len, literal, where);
    if (status != MI_OK)
      return status;
  }
  return MI_OK;
}

/* tokenizer.json's added_tokens: [{"id": 50256, "content": "<|endoftext|>", ...}]. */
static mi_status read_added_tokens(builder *b, json_t *added) {
  if (!json_is_array(added))
    return mi__fail(MI_ERR_FORMAT, "vocabulary: tokenizer.json: added_tokens is not an array");
  for (size_t i = 0; i < json_array_size(added); i++) {
    json_t *token = json_array_get(added, i);
    json_t *id = json_object_get(token, "id"), *content = json_object_get(token, "content");
    if (!json_is_integer(id) || !json_is_string(content))
      return mi__fail(MI_ERR_FORMAT,
                      "vocabulary: tokenizer.json: added_tokens[%zu] needs an integer "
                      "\"id\" and a string \"content\"",
                      i);
    /* Added tokens are matched as written, never byte-level encoded. */
    mi_status status = add_token(b, json_integer_value(id), json_string_value(content),
                                 json_string_length(content), true, "added_tokens");
    if (status != MI_OK)
      return status;
  }
  return MI_OK;
}

/* Whether tokenizer.json decodes with ByteLevel (alone or in a Sequence). */
static bool has_byte_level_decoder(json_t *decoder) {
  const char *type = json_string_value(json_object_get(decoder, "type"));
  if (type != NULL && strcmp(type, "ByteLevel") == 0)
    return true;
  json_t *parts = json_object_get(decoder, "decoders");
  for (size_t i = 0; i < json_array_size(parts); i++)
    if (has_byte_level_decoder(json_array_get(parts, i)))
      return true;
  return false;
}

static mi_status read_json(struct mi__vocab **out, builder *b, const char *data, size_t size) {
  json_error_t error;
  json_t *root = json_loadb(data, size, JSON_REJECT_DUPLICATES, &error);
  if (root == NULL)
    return mi__fail(MI_ERR_FORMAT, "vocabulary: not valid JSON at line %d, column %d: %s",
                    error.line, error.column, error.text);
  /* The caller saw '{': root is an object. tokenizer.json has a "model" object. */
  mi_status status;
  json_t *model = json_object_get(root, "model");
  if (json_is_object(model)) {
    json_t *vocab = json_object_get(model, "vocab");
    json_t *added = json_object_get(root, "added_tokens");
    bool byte_level = has_byte_level_decoder(json_object_get(root, "decoder"));
    if (json_is_array(vocab))
      status = mi__fail(MI_ERR_UNSUPPORTED,
                        "vocabulary: tokenizer.json: model.vocab is a list (a Unigram model); "
                        "only token-to-id objects are read");
    else if (!json_is_object(vocab))
      status = mi__fail(MI_ERR_FORMAT,
                        "vocabulary: tokenizer.json: model.vocab is missing or not an object");
    else
      status = read_token_object(b, vocab, !byte_level, "model.vocab");
    if (status == MI_OK && added != NULL && !json_is_null(added))
      status = read_added_tokens(b, added);
  } else {
    status = read_token_object(b, root, false, "vocab.json");
  }
  if (status == MI_OK && b->count == 0)
    status = mi__fail(MI_ERR_FORMAT, "vocabulary: the JSON names no token");
  if (status == MI_OK)
    status = build(out, b);
  json_decref(root); /* the builder's raw pointers die here; build copied them */
  return status;
}

/* One token a line, taken literally; "\r\n" ends a line as "\n" does. */
static mi_status read_lines(struct mi__vocab **out, builder *b, const char *data, size_t size) {
  size_t id = 0;
  for (size_t start = 0; start < size; id++) {
    const char *end = memchr(data + start, '\n', size - start);
    size_t len = (end ? (size_t)(end - data) : size) - start;
    size_t next = start + len + (end != NULL);
    if (len > 0 && data[start + len - 1] == '\r')
      len--;
    if (memchr(data + start, '\0', len) != NULL)
      return mi__fail(MI_ERR_FORMAT, "vocabulary: line %zu holds a NUL byte", id + 1);
    char where[48];
    snprintf(where, sizeof where, "line %zu", id + 1);
    /* id < size <= PTRDIFF_MAX: it fits a long long. */
    mi_status status = add_token(b, (long long)id, data + start, len, true, where);
    if (status != MI_OK)
      return status;
    start = next;
  }
  return build(out, b);
}

/* The format a file's name announces, if any. */
static mi__vocab_format format_of_name(const char *path) {
  size_t len = path ? strlen(path) : 0;
  if (len >= 4 && strcmp(path + len - 4, ".txt") == 0)
    return MI__VOCAB_LINES;
  if (len >= 5 && strcmp(path + len - 5, ".json") == 0)
    return MI__VOCAB_JSON;
  return MI__VOCAB_DETECT;
}

mi__vocab_format mi__vocab_format_of(const char *path, const char *text, size_t size,
                                     size_t *skip) {
  *skip = size >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0; /* a byte order mark */
  mi__vocab_format format = format_of_name(path);
  if (format != MI__VOCAB_DETECT)
    return format;
  /* JSON when the first thing after white space is '{'; else one token a line. */
  size_t first = *skip;
  while (first < size && (text[first] == ' ' || text[first] == '\t' ||
                          text[first] == '\r' || text[first] == '\n'))
    first++;
  return first < size && text[first] == '{' ? MI__VOCAB_JSON : MI__VOCAB_LINES;
}

/*
 * The tokenizer a vocabulary file describes by itself (tokenizer.json, one
 * token a line), or the reason it has none, recorded in the vocabulary.
 * Only running out of memory fails the load.
 */
static mi_status attach_own_tokenizer(struct mi__vocab *vocab, const char *text, size_t size,
                                      mi__vocab_format format) {
  mi_status status;
  bool vocab_json = false;
  if (format == MI__VOCAB_JSON) {
    json_t *root = json_loadb(text, size, 0, NULL);
    vocab_json = root != NULL && !json_is_object(json_object_get(root, "model"));
    json_decref(root);
  }
  if (vocab_json)
    status = mi__fail(MI_ERR_STATE,
                      "a vocab.json has no merges: load it with its merges file "
                      "(mi_model_load_tokenizer)");
  else
    status = mi__tokenizer_parse(&vocab->tokenizer, text, size, format, NULL, 0,
                                 vocab->n_ids);
  if (status == MI_OK || status == MI_ERR_OUT_OF_MEMORY)
    return status;
  vocab->tokenizer_status = status;
  vocab->tokenizer_error = strdup(mi_last_error());
  return vocab->tokenizer_error != NULL
             ? MI_OK
             : mi__fail(MI_ERR_OUT_OF_MEMORY, "vocabulary: cannot allocate a message");
}

mi_status mi__vocab_load(mi_model *model, const char *text, size_t size,
                         mi__vocab_format format, mi_tokenizer *tokenizer) {
  if (size == 0) {
    mi_tokenizer_free(tokenizer);
    return mi__fail(MI_ERR_FORMAT, "vocabulary: empty");
  }
  if (tokenizer != NULL && mi__tokenizer_n_ids(tokenizer) > model->config.d_vocab) {
    size_t n = mi__tokenizer_n_ids(tokenizer);
    mi_tokenizer_free(tokenizer);
    return mi__fail(MI_ERR_INDEX, "tokenizer: token id %zu, but the model's d_vocab is %zu",
                    n - 1, model->config.d_vocab);
  }
  builder b = {.n_ids = model->config.d_vocab};
  b.tokens = calloc(b.n_ids, sizeof *b.tokens);
  if (b.tokens == NULL) {
    mi_tokenizer_free(tokenizer);
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "vocabulary: cannot allocate %zu ids", b.n_ids);
  }
  struct mi__vocab *vocab = NULL;
  mi_status status = format == MI__VOCAB_JSON ? read_json(&vocab, &b, text, size)
                                              : read_lines(&vocab, &b, text, size);
  free(b.tokens);
  if (status == MI_OK && tokenizer != NULL)
    vocab->tokenizer = tokenizer;
  else if (status == MI_OK)
    status = attach_own_tokenizer(vocab, text, size, format);
  else
    mi_tokenizer_free(tokenizer);
  if (status != MI_OK) {
    mi__vocab_free(vocab);
    return status;
  }
  mi__vocab_free(model->vocab);
  model->vocab = vocab;
  return MI_OK;
}

static mi_status load_vocab(mi_model *model, const char *text, size_t size, const char *path) {
  size_t skip;
  mi__vocab_format format = mi__vocab_format_of(path, text, size, &skip);
  return mi__vocab_load(model, text + skip, size - skip, format, NULL);
}

mi_status mi_model_load_vocab_memory(mi_model *model, const void *data, size_t size) {
  MI_CHECK_ARG(model);
  MI_CHECK_ARG(data);
  return load_vocab(model, data, size, NULL);
}

mi_status mi_model_load_vocab(mi_model *model, const char *path) {
  MI_CHECK_ARG(model);
  MI_CHECK_ARG(path);
  char *data = NULL;
  size_t size = 0;
  /* Opened without blocking and refused unless regular: a FIFO never waits. */
  mi_status status = mi__file_read(&data, &size, NULL, path);
  if (status != MI_OK)
    return status;
  status = load_vocab(model, data, size, path);
  free(data);
  if (status != MI_OK) {
    char detail[400]; /* name the file in front of the parser's message */
    snprintf(detail, sizeof detail, "%s", mi_last_error());
    return mi__fail(status, "%s: %s", path, detail);
  }
  return MI_OK;
}

/* The entry of `id`, after checking that there is a vocabulary and a string. */
static mi_status entry_of(const vocab_entry **out, const mi_model *model, size_t id) {
  const struct mi__vocab *v = model->vocab;
  if (v == NULL)
    return mi__fail(MI_ERR_STATE, "the model has no vocabulary; call mi_model_load_vocab");
  if (id >= v->n_ids)
    return mi__fail(MI_ERR_INDEX, "token id %zu out of range (d_vocab %zu)", id, v->n_ids);
  if (v->entries[id].text == NONE)
    return mi__fail(MI_ERR_INDEX, "token id %zu has no string in the vocabulary", id);
  *out = &v->entries[id];
  return MI_OK;
}

mi_status mi_model_token_str(const char **out, const mi_model *model, size_t id) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(model);
  const vocab_entry *e = NULL;
  mi_status status = entry_of(&e, model, id);
  if (status == MI_OK)
    *out = model->vocab->arena + e->text;
  return status;
}

mi_status mi_model_token_bytes(const char **out, size_t *out_len, const mi_model *model,
                               size_t id) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(out_len);
  *out_len = 0;
  MI_CHECK_ARG(model);
  const vocab_entry *e = NULL;
  mi_status status = entry_of(&e, model, id);
  if (status == MI_OK) {
    *out = model->vocab->arena + e->text;
    *out_len = e->text_len;
  }
  return status;
}

mi_status mi_model_token_id(size_t *out, const mi_model *model, const char *text) {
  MI_CHECK_ARG(out);
  *out = SIZE_MAX;
  MI_CHECK_ARG(model);
  MI_CHECK_ARG(text);
  const struct mi__vocab *v = model->vocab;
  if (v == NULL)
    return mi__fail(MI_ERR_STATE, "the model has no vocabulary; call mi_model_load_vocab");
  size_t len = strlen(text);
  size_t slot = v->slots[find_slot(v, text, len)];
  if (slot == 0)
    return mi__fail(MI_ERR_INDEX, "no token '%.*s' in the vocabulary", SHOW(text, len));
  *out = (slot - 1) / 2;
  return MI_OK;
}

mi_status mi_model_tokenizer(const mi_tokenizer **out, const mi_model *model) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(model);
  const struct mi__vocab *v = model->vocab;
  if (v == NULL)
    return mi__fail(MI_ERR_STATE,
                    "the model has no vocabulary; call mi_model_load_vocab or "
                    "mi_model_load_tokenizer");
  if (v->tokenizer == NULL)
    return mi__fail(v->tokenizer_status, "no tokenizer: %s", v->tokenizer_error);
  *out = v->tokenizer;
  return MI_OK;
}
