/*
 * tokenizer.c: text to token ids.
 *
 * Byte-level BPE (GPT-2's vocab.json + merges.txt, Hugging Face
 * tokenizer.json with a BPE model and a ByteLevel pre-tokenizer) and the
 * word-level vocabularies of one token a line.
 *
 * Encoding is linear in the text: the pre-tokenizer is one pass over the
 * bytes (GPT-2's pattern as a hand-written matcher over generated Unicode
 * tables), each word is merged with a heap of candidate pairs keyed by
 * (rank, position), and each distinct word is merged once per call (a cache
 * that lives for the call, so a shared tokenizer is never written).
 */
#define _POSIX_C_SOURCE 200809L
#include "loader.h"
#include "unicode_tables.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NONE SIZE_MAX

/* A token in a message: at most 48 bytes of it. */
#define SHOW(raw, len) (int)((len) < 48 ? (len) : 48), (raw)

typedef enum { KIND_BPE, KIND_WORDS } tokenizer_kind;

/* One id's bytes in the arena; off == NONE: the id has no token. */
typedef struct tok_string {
  size_t off, len;
  bool indexed; /* in the byte-string table (BPE can produce it) */
} tok_string;

/* A merge: (left, right) -> result, at rank (its line, from 0). */
typedef struct merge_slot {
  size_t left, right, rank, result; /* left == NONE: empty */
} merge_slot;

/* An added token, matched in the text before pre-tokenization. */
typedef struct added_token {
  size_t id, len;
  bool normalized; /* matched in a second pass, on the normalized text */
} added_token;

struct mi_tokenizer {
  tokenizer_kind kind;
  size_t n_ids; /* 1 + the largest id */
  tok_string *strings;
  char *arena;
  size_t arena_used, arena_cap;
  /* bytes -> id, open addressing; a slot holds id + 1 */
  size_t *slots, mask;
  size_t byte_ids[256]; /* BPE: the token of each single byte */
  merge_slot *merges;
  size_t merge_mask, n_merges;
  added_token *added; /* unnormalized first, then each pass longest first */
  size_t n_added;
  bool add_prefix_space, use_regex, nfc, ignore_merges;
  size_t bos; /* NONE: none */
  size_t id_limit; /* while loading: ids must be below it (a model's d_vocab) */
};

void mi_tokenizer_free(mi_tokenizer *t) {
  if (t == NULL)
    return;
  free(t->strings);
  free(t->arena);
  free(t->slots);
  free(t->merges);
  free(t->added);
  free(t);
}

size_t mi__tokenizer_n_ids(const mi_tokenizer *t) { return t->n_ids; }

/* ---- growing buffers ------------------------------------------------------ */

/* Makes room for `need` elements of `size` bytes in *buf (capacity *cap). */
static mi_status reserve(void **buf, size_t *cap, size_t need, size_t size) {
  if (need <= *cap)
    return MI_OK;
  size_t n = *cap ? *cap : 16, bytes;
  while (n < need)
    if (!mi__mul_size(&n, n, 2))
      return mi__fail(MI_ERR_OUT_OF_MEMORY, "tokenizer: %zu elements overflow size_t", need);
  if (!mi__mul_size(&bytes, n, size))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "tokenizer: %zu elements overflow size_t", n);
  void *p = realloc(*buf, bytes);
  if (p == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "tokenizer: cannot allocate %zu bytes", bytes);
  *buf = p;
  *cap = n;
  return MI_OK;
}

#define RESERVE(buf, cap, need) reserve((void **)&(buf), &(cap), (need), sizeof *(buf))

/* ---- building: strings, the byte-string table, merges --------------------- */

static mi_status alloc_ids(mi_tokenizer *t, size_t n_ids) {
  size_t bytes;
  if (!mi__mul_size(&bytes, n_ids ? n_ids : 1, sizeof *t->strings) ||
      (t->strings = malloc(bytes)) == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "tokenizer: cannot allocate %zu ids", n_ids);
  for (size_t i = 0; i < n_ids; i++)
    t->strings[i] = (tok_string){.off = NONE};
  t->n_ids = n_ids;
  return MI_OK;
}

/* Records the bytes of `id` (id < n_ids; an earlier string stays). */
static mi_status set_string(mi_tokenizer *t, size_t id, const char *s, size_t len, bool indexed) {
  if (t->strings[id].off != NONE)
    return MI_OK;
  mi_status status = RESERVE(t->arena, t->arena_cap, t->arena_used + len + 1);
  if (status != MI_OK)
    return status;
  memcpy(t->arena + t->arena_used, s, len);
  t->arena[t->arena_used + len] = '\0';
  t->strings[id] = (tok_string){.off = t->arena_used, .len = len, .indexed = indexed};
  t->arena_used += len + 1;
  return MI_OK;
}

/* The slot holding bytes s, or the empty slot where they would go. */
static size_t find_slot(const mi_tokenizer *t, const void *s, size_t len) {
  size_t i = (size_t)mi__hash_bytes(s, len) & t->mask;
  for (; t->slots[i] != 0; i = (i + 1) & t->mask) {
    const tok_string *e = &t->strings[t->slots[i] - 1];
    if (e->len == len && memcmp(t->arena + e->off, s, len) == 0)
      break;
  }
  return i;
}

/* The id whose bytes are s, or NONE. */
static size_t lookup(const mi_tokenizer *t, const void *s, size_t len) {
  size_t slot = t->slots[find_slot(t, s, len)];
  return slot ? slot - 1 : NONE;
}

/* Indexes every indexed string; the lowest id keeps bytes that repeat. */
static mi_status build_index(mi_tokenizer *t) {
  size_t count = 0, n = 16;
  for (size_t id = 0; id < t->n_ids; id++)
    count += t->strings[id].indexed;
  while (n < 2 * count)
    n *= 2;
  t->slots = calloc(n, sizeof *t->slots);
  if (t->slots == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "tokenizer: cannot allocate %zu slots", n);
  t->mask = n - 1;
  for (size_t id = 0; id < t->n_ids; id++) {
    const tok_string *e = &t->strings[id];
    if (!e->indexed)
      continue;
    size_t i = find_slot(t, t->arena + e->off, e->len);
    if (t->slots[i] == 0)
      t->slots[i] = id + 1;
  }
  return MI_OK;
}

static size_t merge_hash(size_t left, size_t right) {
  uint64_t h = (uint64_t)left * 0x9E3779B97F4A7C15ull ^ (uint64_t)right;
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  return (size_t)(h ^ h >> 32);
}

static const merge_slot *find_merge(const mi_tokenizer *t, size_t left, size_t right) {
  for (size_t i = merge_hash(left, right) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
    const merge_slot *m = &t->merges[i];
    if (m->left == NONE || (m->left == left && m->right == right))
      return m;
  }
}

static mi_status alloc_merges(mi_tokenizer *t, size_t count) {
  size_t n = 16;
  while (n < 2 * count)
    n *= 2;
  t->merges = malloc(n * sizeof *t->merges);
  if (t->merges == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "tokenizer: cannot allocate %zu merges", count);
  for (size_t i = 0; i < n; i++)
    t->merges[i].left = NONE;
  t->merge_mask = n - 1;
  return MI_OK;
}

/* Byte-level decoding of a merge part, into buf (len bytes at least). */
static size_t decode_part(char *buf, const char *s, size_t len, const int16_t *inverse) {
  return mi__byte_level_decode(buf, s, len, inverse);
}

/*
 * Adds the merge "a b" (byte-level spellings) at the next rank. `where`
 * names its line for messages. buf holds at least la + lb bytes.
 */
static mi_status add_merge(mi_tokenizer *t, const char *a, size_t la, const char *b, size_t lb,
                           const char *where, char *buf, const int16_t *inverse) {
  size_t da = decode_part(buf, a, la, inverse);
  size_t left = da == NONE ? NONE : lookup(t, buf, da);
  size_t off = da == NONE ? 0 : da;
  size_t db = decode_part(buf + off, b, lb, inverse);
  size_t right = db == NONE ? NONE : lookup(t, buf + off, db);
  if (left == NONE || right == NONE)
    return mi__fail(MI_ERR_FORMAT, "merges: %s: '%.*s' is not a token of the vocabulary", where,
                    SHOW(left == NONE ? a : b, left == NONE ? la : lb));
  size_t result = lookup(t, buf, da + db);
  if (result == NONE)
    return mi__fail(MI_ERR_FORMAT,
                    "merges: %s: '%.*s' + '%.*s' makes a token the vocabulary does not have",
                    where, SHOW(a, la), SHOW(b, lb));
  merge_slot *m = (merge_slot *)find_merge(t, left, right);
  if (m->left != NONE)
    return mi__fail(MI_ERR_FORMAT,
                    "merges: %s: the pair '%.*s %.*s' has rank %zu already (a rank collision)",
                    where, SHOW(a, la), SHOW(b, lb), m->rank);
  *m = (merge_slot){.left = left, .right = right, .rank = t->n_merges++, .result = result};
  return MI_OK;
}

/* Every single byte must be a token: BPE starts from them. */
static mi_status find_byte_tokens(mi_tokenizer *t) {
  for (int b = 0; b < 256; b++) {
    unsigned char c = (unsigned char)b;
    t->byte_ids[b] = lookup(t, &c, 1);
    if (t->byte_ids[b] == NONE)
      return mi__fail(MI_ERR_FORMAT,
                      "vocabulary: no token for byte 0x%02X (every byte-level BPE vocabulary "
                      "has all 256)",
                      b);
  }
  return MI_OK;
}

/* The beginning-of-sequence token: the first of these names the vocabulary has. */
static void find_bos(mi_tokenizer *t) {
  static const char *const names[] = {"<|endoftext|>", "<|begin_of_text|>", "<s>", "<bos>",
                                      "<BOS>"};
  t->bos = NONE;
  for (size_t i = 0; i < sizeof names / sizeof *names && t->bos == NONE; i++)
    for (size_t id = 0; id < t->n_ids && t->bos == NONE; id++) {
      const tok_string *e = &t->strings[id];
      if (e->off != NONE && e->len == strlen(names[i]) &&
          memcmp(t->arena + e->off, names[i], e->len) == 0)
        t->bos = id;
    }
}

/* ---- reading the formats --------------------------------------------------- */

/* The largest id of a JSON token -> id object, checking every id. */
static mi_status max_vocab_id(size_t *out, json_t *vocab, const char *where, size_t limit) {
  const char *key;
  json_t *value;
  *out = 0;
  bool any = false;
  json_object_foreach(vocab, key, value) {
    if (!json_is_integer(value) || json_integer_value(value) < 0)
      return mi__fail(MI_ERR_FORMAT, "vocabulary: %s: the id of token '%.*s' is not a "
                      "non-negative integer", where, SHOW(key, strlen(key)));
    size_t id = (size_t)json_integer_value(value);
    if (id >= limit)
      return mi__fail(MI_ERR_INDEX, "vocabulary: %s: token '%.*s' has id %zu, but the "
                      "model's d_vocab is %zu", where, SHOW(key, strlen(key)), id, limit);
    if (!any || id > *out)
      *out = id;
    any = true;
  }
  if (!any)
    return mi__fail(MI_ERR_FORMAT, "vocabulary: %s names no token", where);
  return MI_OK;
}

/* Records every byte-level token of a JSON object (decoded). */
static mi_status read_vocab_object(mi_tokenizer *t, json_t *vocab, const char *where) {
  int16_t inverse[MI__BYTE_LEVEL_CODE_POINTS];
  mi__byte_level_inverse(inverse);
  const char *key;
  json_t *value;
  char *buf = NULL;
  size_t cap = 0;
  mi_status status = MI_OK;
  json_object_foreach(vocab, key, value) {
    size_t len = strlen(key), id = (size_t)json_integer_value(value);
    if ((status = RESERVE(buf, cap, len + 1)) != MI_OK)
      break;
    size_t n = mi__byte_level_decode(buf, key, len, inverse);
    if (t->strings[id].off != NONE && n != NONE) {
      const tok_string *e = &t->strings[id];
      if (e->len != n || memcmp(t->arena + e->off, buf, n) != 0) {
        status = mi__fail(MI_ERR_FORMAT, "vocabulary: %s: tokens '%.*s' and '%.*s' both "
                          "have id %zu", where, SHOW(t->arena + e->off, e->len),
                          SHOW(key, len), id);
        break;
      }
    }
    /* A token outside the byte-level alphabet can never come out of BPE. */
    status = n == NONE ? set_string(t, id, key, len, false) : set_string(t, id, buf, n, true);
    if (status != MI_OK)
      break;
  }
  free(buf);
  return status;
}

/* vocab.bpe / merges.txt: an optional "#version" line, then "a b" a line. */
static mi_status read_merges_text(mi_tokenizer *t, const char *data, size_t size) {
  size_t lines = 0;
  for (size_t i = 0; i < size; i++)
    lines += data[i] == '\n';
  mi_status status = alloc_merges(t, lines + 1);
  int16_t inverse[MI__BYTE_LEVEL_CODE_POINTS];
  mi__byte_level_inverse(inverse);
  char *buf = NULL;
  size_t cap = 0, line = 0;
  for (size_t start = 0; status == MI_OK && start < size;) {
    const char *end = memchr(data + start, '\n', size - start);
    size_t len = (end ? (size_t)(end - data) : size) - start, next = start + len + 1;
    const char *s = data + start;
    line++;
    start = next;
    if (len > 0 && s[len - 1] == '\r')
      len--;
    if (len == 0 || (line == 1 && len >= 8 && memcmp(s, "#version", 8) == 0))
      continue;
    const char *space = memchr(s, ' ', len);
    char where[48];
    snprintf(where, sizeof where, "line %zu", line);
    if (space == NULL || space == s || space == s + len - 1 ||
        memchr(space + 1, ' ', (size_t)(s + len - space - 1)) != NULL) {
      status = mi__fail(MI_ERR_FORMAT, "merges: %s: '%.*s' is not two tokens and one space",
                        where, SHOW(s, len));
      break;
    }
    if ((status = RESERVE(buf, cap, len)) == MI_OK)
      status = add_merge(t, s, (size_t)(space - s), space + 1, (size_t)(s + len - space - 1),
                         where, buf, inverse);
  }
  free(buf);
  return status;
}

/* tokenizer.json's model.merges: ["a b", ...] or [["a", "b"], ...]. */
static mi_status read_merges_json(mi_tokenizer *t, json_t *merges) {
  if (!json_is_array(merges))
    return mi__fail(MI_ERR_FORMAT, "tokenizer.json: model.merges is missing or not a list");
  mi_status status = alloc_merges(t, json_array_size(merges));
  int16_t inverse[MI__BYTE_LEVEL_CODE_POINTS];
  mi__byte_level_inverse(inverse);
  char *buf = NULL;
  size_t cap = 0;
  for (size_t i = 0; status == MI_OK && i < json_array_size(merges); i++) {
    json_t *m = json_array_get(merges, i);
    char where[48];
    snprintf(where, sizeof where, "model.merges[%zu]", i);
    const char *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    if (json_is_string(m)) {
      const char *s = json_string_value(m), *space = strchr(s, ' ');
      size_t len = json_string_length(m);
      if (space != NULL && space != s && space != s + len - 1 && !strchr(space + 1, ' ')) {
        a = s, la = (size_t)(space - s), b = space + 1, lb = (size_t)(s + len - space - 1);
      }
    } else if (json_is_array(m) && json_array_size(m) == 2 &&
               json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
      a = json_string_value(json_array_get(m, 0)), la = json_string_length(json_array_get(m, 0));
      b = json_string_value(json_array_get(m, 1)), lb = json_string_length(json_array_get(m, 1));
    }
    if (a == NULL || la == 0 || lb == 0) {
      status = mi__fail(MI_ERR_FORMAT,
                        "merges: %s is neither \"a b\" nor [\"a\", \"b\"] with two tokens",
                        where);
      break;
    }
    if ((status = RESERVE(buf, cap, la + lb)) == MI_OK)
      status = add_merge(t, a, la, b, lb, where, buf, inverse);
  }
  free(buf);
  return status;
}

/* encoder.json / vocab.json + merges. */
static mi_status read_vocab_json(mi_tokenizer *t, json_t *root, const char *merges,
                                 size_t merges_size) {
  size_t max;
  mi_status status = max_vocab_id(&max, root, "vocab.json", t->id_limit);
  if (status == MI_OK)
    status = alloc_ids(t, max + 1);
  if (status == MI_OK)
    status = read_vocab_object(t, root, "vocab.json");
  if (status == MI_OK)
    status = build_index(t);
  if (status == MI_OK)
    status = find_byte_tokens(t);
  if (status == MI_OK)
    status = read_merges_text(t, merges, merges_size);
  return status;
}

static bool is_true(json_t *object, const char *key) {
  return json_is_true(json_object_get(object, key));
}

/* A string field that must be absent, null or empty. */
static bool empty_string_field(json_t *object, const char *key) {
  json_t *v = json_object_get(object, key);
  return v == NULL || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0);
}

/* The ByteLevel pre-tokenizer's options; others are refused by name. */
static mi_status read_pre_tokenizer(mi_tokenizer *t, json_t *pre) {
  const char *type = json_string_value(json_object_get(pre, "type"));
  if (type != NULL && strcmp(type, "Sequence") == 0) {
    json_t *list = json_object_get(pre, "pretokenizers");
    if (json_array_size(list) == 1)
      return read_pre_tokenizer(t, json_array_get(list, 0));
    return mi__fail(MI_ERR_UNSUPPORTED,
                    "tokenizer.json: a Sequence of %zu pre-tokenizers is refused (libmi runs "
                    "ByteLevel alone)",
                    json_array_size(list));
  }
  if (type == NULL || strcmp(type, "ByteLevel") != 0)
    return mi__fail(MI_ERR_UNSUPPORTED,
                    "tokenizer.json: pre-tokenizer '%s' is refused (libmi runs "
                    "ByteLevel)",
                    type ? type : pre == NULL || json_is_null(pre) ? "none" : "?");
  t->add_prefix_space = is_true(pre, "add_prefix_space");
  json_t *use_regex = json_object_get(pre, "use_regex");
  t->use_regex = use_regex == NULL || json_is_true(use_regex);
  return MI_OK;
}

static mi_status read_normalizer(mi_tokenizer *t, json_t *normalizer) {
  if (normalizer == NULL || json_is_null(normalizer))
    return MI_OK;
  const char *type = json_string_value(json_object_get(normalizer, "type"));
  if (type != NULL && strcmp(type, "NFC") == 0) {
    t->nfc = true;
    return MI_OK;
  }
  return mi__fail(MI_ERR_UNSUPPORTED,
                  "tokenizer.json: normalizer '%s' is refused (libmi runs none "
                  "and NFC)",
                  type ? type : "?");
}

/* added_tokens: [{"id", "content", "normalized", "lstrip", ...}]. */
static mi_status read_added(mi_tokenizer *t, json_t *added) {
  if (added == NULL || json_is_null(added))
    return MI_OK;
  if (!json_is_array(added))
    return mi__fail(MI_ERR_FORMAT, "tokenizer.json: added_tokens is not a list");
  t->added = malloc((json_array_size(added) + 1) * sizeof *t->added);
  if (t->added == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "tokenizer: cannot allocate added tokens");
  for (size_t i = 0; i < json_array_size(added); i++) {
    json_t *a = json_array_get(added, i);
    json_t *id = json_object_get(a, "id"), *content = json_object_get(a, "content");
    if (!json_is_integer(id) || json_integer_value(id) < 0 || !json_is_string(content) ||
        json_string_length(content) == 0)
      return mi__fail(MI_ERR_FORMAT,
                      "tokenizer.json: added_tokens[%zu] needs a non-negative integer \"id\" "
                      "and a non-empty string \"content\"",
                      i);
    const char *text = json_string_value(content);
    for (const char *const *k = (const char *const[]){"lstrip", "rstrip", "single_word", NULL};
         *k; k++)
      if (is_true(a, *k))
        return mi__fail(MI_ERR_UNSUPPORTED,
                        "tokenizer.json: added token '%.*s' has %s set, which libmi does not "
                        "implement",
                        SHOW(text, json_string_length(content)), *k);
    if ((size_t)json_integer_value(id) >= t->n_ids)
      return mi__fail(MI_ERR_FORMAT,
                      "tokenizer.json: added token '%.*s' has id %lld, past model.vocab",
                      SHOW(text, json_string_length(content)), (long long)json_integer_value(id));
    json_t *normalized = json_object_get(a, "normalized");
    /* Hugging Face's default: special tokens are matched as written. */
    t->added[t->n_added++] = (added_token){
        .id = (size_t)json_integer_value(id), .len = json_string_length(content),
        .normalized = normalized ? json_is_true(normalized) : !is_true(a, "special")};
    mi_status status = set_string(t, (size_t)json_integer_value(id), text,
                                  json_string_length(content), true);
    if (status != MI_OK)
      return status;
  }
  return MI_OK;
}

/* Unnormalized tokens first; within a pass the longer first (leftmost-longest). */
static int compare_added(const void *pa, const void *pb) {
  const added_token *a = pa, *b = pb;
  if (a->normalized != b->normalized)
    return a->normalized ? 1 : -1;
  return a->len > b->len ? -1 : a->len < b->len ? 1 : a->id < b->id ? -1 : a->id > b->id;
}

/* The largest id of model.vocab and added_tokens. */
static mi_status max_tokenizer_id(size_t *out, json_t *vocab, json_t *added, size_t limit) {
  mi_status status = max_vocab_id(out, vocab, "model.vocab", limit);
  for (size_t i = 0; status == MI_OK && i < json_array_size(added); i++) {
    json_t *id = json_object_get(json_array_get(added, i), "id");
    if (!json_is_integer(id) || json_integer_value(id) < 0)
      continue; /* read_added says what is wrong */
    if ((size_t)json_integer_value(id) >= limit)
      return mi__fail(MI_ERR_INDEX, "vocabulary: added_tokens[%zu] has id %lld, but the "
                      "model's d_vocab is %zu", i, (long long)json_integer_value(id), limit);
    if ((size_t)json_integer_value(id) > *out)
      *out = (size_t)json_integer_value(id);
  }
  return status;
}

static mi_status read_tokenizer_json(mi_tokenizer *t, json_t *root) {
  json_t *model = json_object_get(root, "model");
  json_t *vocab = json_object_get(model, "vocab");
  const char *type = json_string_value(json_object_get(model, "type"));
  if (type == NULL)
    type = json_is_array(vocab) ? "Unigram" : json_object_get(model, "merges") ? "BPE" : "?";
  if (strcmp(type, "BPE") != 0)
    return mi__fail(MI_ERR_UNSUPPORTED,
                    "tokenizer.json: model type '%s' is refused (libmi runs BPE)",
                    type);
  if (is_true(model, "byte_fallback"))
    return mi__fail(MI_ERR_UNSUPPORTED,
                    "tokenizer.json: byte-fallback BPE (SentencePiece style) is refused");
  json_t *dropout = json_object_get(model, "dropout");
  if (dropout != NULL && !json_is_null(dropout) && json_number_value(dropout) != 0)
    return mi__fail(MI_ERR_UNSUPPORTED, "tokenizer.json: BPE dropout is refused (libmi tokenizes deterministically)");
  if (!empty_string_field(model, "continuing_subword_prefix") ||
      !empty_string_field(model, "end_of_word_suffix"))
    return mi__fail(MI_ERR_UNSUPPORTED,
                    "tokenizer.json: continuing_subword_prefix and end_of_word_suffix are not "
                    "implemented");
  if (!json_is_object(vocab))
    return mi__fail(MI_ERR_FORMAT, "tokenizer.json: model.vocab is missing or not an object");
  t->ignore_merges = is_true(model, "ignore_merges");
  json_t *added = json_object_get(root, "added_tokens");
  size_t max;
  mi_status status = read_pre_tokenizer(t, json_object_get(root, "pre_tokenizer"));
  if (status == MI_OK)
    status = read_normalizer(t, json_object_get(root, "normalizer"));
  if (status == MI_OK)
    status = max_tokenizer_id(&max, vocab, added, t->id_limit);
  if (status == MI_OK)
    status = alloc_ids(t, max + 1);
  if (status == MI_OK)
    status = read_added(t, added); /* first: an added token keeps its written form */
  if (status == MI_OK)
    status = read_vocab_object(t, vocab, "model.vocab");
  if (status == MI_OK)
    status = build_index(t);
  if (status == MI_OK)
    status = find_byte_tokens(t);
  if (status == MI_OK)
    status = read_merges_json(t, json_object_get(model, "merges"));
  if (status == MI_OK && t->n_added > 0)
    qsort(t->added, t->n_added, sizeof *t->added, compare_added);
  return status;
}


/* One token a line, as vocab.c reads it. */
static mi_status read_lines(mi_tokenizer *t, const char *data, size_t size) {
  size_t lines = 0;
  for (size_t i = 0; i < size; i++)
    lines += data[i] == '\n';
  lines += size > 0 && data[size - 1] != '\n';
  if (lines > t->id_limit)
    return mi__fail(MI_ERR_INDEX, "vocabulary: %zu lines, but the model's d_vocab is %zu",
                    lines, t->id_limit);
  mi_status status = alloc_ids(t, lines ? lines : 1);
  size_t id = 0;
  for (size_t start = 0; status == MI_OK && start < size; id++) {
    const char *end = memchr(data + start, '\n', size - start);
    size_t len = (end ? (size_t)(end - data) : size) - start;
    size_t next = start + len + (end != NULL);
    if (len > 0 && data[start + len - 1] == '\r')
      len--;
    status = set_string(t, id, data + start, len, len > 0);
    start = next;
  }
  if (status == MI_OK)
    status = build_index(t);
  return status;
}

mi_status mi__tokenizer_parse(mi_tokenizer **out, const char *vocab, size_t vocab_size,
                              mi__vocab_format format, const char *merges,
                              size_t merges_size, size_t id_limit) {
  *out = NULL;
  mi_tokenizer *t = calloc(1, sizeof *t);
  if (t == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "tokenizer: cannot allocate");
  t->use_regex = true;
  t->id_limit = id_limit;
  mi_status status = MI_OK;
  if (vocab_size == 0) {
    status = mi__fail(MI_ERR_FORMAT, "vocabulary: empty");
  } else if (format == MI__VOCAB_LINES) {
    t->kind = KIND_WORDS;
    status = merges ? mi__fail(MI_ERR_INVALID_ARGUMENT,
                               "tokenizer: a vocabulary of one token a line takes no merges")
                    : read_lines(t, vocab, vocab_size);
  } else {
    t->kind = KIND_BPE;
    json_error_t error;
    json_t *root = json_loadb(vocab, vocab_size, JSON_REJECT_DUPLICATES, &error);
    bool tokenizer_json = json_is_object(json_object_get(root, "model"));
    if (root == NULL)
      status = mi__fail(MI_ERR_FORMAT, "vocabulary: not valid JSON at line %d, column %d: %s",
                        error.line, error.column, error.text);
    else if (!json_is_object(root))
      status = mi__fail(MI_ERR_FORMAT, "vocabulary: the JSON is not an object");
    else if (tokenizer_json && merges)
      status = mi__fail(MI_ERR_INVALID_ARGUMENT,
                        "tokenizer: a tokenizer.json holds its merges; give no merges file");
    else if (!tokenizer_json && !merges)
      status = mi__fail(MI_ERR_INVALID_ARGUMENT,
                        "tokenizer: a vocab.json needs its merges file (merges.txt, vocab.bpe)");
    else
      status = tokenizer_json ? read_tokenizer_json(t, root)
                              : read_vocab_json(t, root, merges, merges_size);
    json_decref(root);
  }
  if (status == MI_OK)
    find_bos(t);
  if (status != MI_OK) {
    mi_tokenizer_free(t);
    return status;
  }
  *out = t;
  return MI_OK;
}

/* ---- loading: the public entry points -------------------------------------- */

mi_status mi_tokenizer_load_memory(mi_tokenizer **out, const void *vocab, size_t vocab_size,
                                   const void *merges, size_t merges_size) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(vocab);
  size_t skip;
  mi__vocab_format format = mi__vocab_format_of(NULL, vocab, vocab_size, &skip);
  return mi__tokenizer_parse(out, (const char *)vocab + skip, vocab_size - skip, format,
                             merges, merges_size, SIZE_MAX);
}

/* The files' bytes, and their format. */
typedef struct tokenizer_files {
  char *vocab, *merges;
  size_t vocab_size, merges_size, skip;
  mi__vocab_format format;
} tokenizer_files;

static mi_status read_files(tokenizer_files *f, const char *vocab_path, const char *merges_path) {
  *f = (tokenizer_files){0};
  mi_status status = mi__file_read(&f->vocab, &f->vocab_size, NULL, vocab_path);
  if (status == MI_OK && merges_path)
    status = mi__file_read(&f->merges, &f->merges_size, NULL, merges_path);
  if (status == MI_OK)
    f->format = mi__vocab_format_of(vocab_path, f->vocab, f->vocab_size, &f->skip);
  return status;
}

/* Puts the file names in front of the parser's message. */
static mi_status name_files(mi_status status, const char *vocab_path, const char *merges_path) {
  if (status == MI_OK || status == MI_ERR_IO)
    return status; /* mi__file_read named the file */
  char detail[400];
  snprintf(detail, sizeof detail, "%s", mi_last_error());
  return mi__fail(status, "%s%s%s: %s", vocab_path, merges_path ? " + " : "",
                  merges_path ? merges_path : "", detail);
}

mi_status mi_tokenizer_load(mi_tokenizer **out, const char *vocab_path, const char *merges_path) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(vocab_path);
  tokenizer_files f;
  mi_status status = read_files(&f, vocab_path, merges_path);
  if (status == MI_OK)
    status = mi__tokenizer_parse(out, f.vocab + f.skip, f.vocab_size - f.skip, f.format,
                                 f.merges, f.merges_size, SIZE_MAX);
  free(f.vocab);
  free(f.merges);
  return name_files(status, vocab_path, merges_path);
}

static mi_status model_load(mi_model *model, const char *vocab, size_t vocab_size,
                            mi__vocab_format format, const char *merges, size_t merges_size) {
  mi_tokenizer *t = NULL;
  mi_status status = mi__tokenizer_parse(&t, vocab, vocab_size, format, merges, merges_size,
                                         model->config.d_vocab);
  return status == MI_OK ? mi__vocab_load(model, vocab, vocab_size, format, t) : status;
}

mi_status mi_model_load_tokenizer_memory(mi_model *model, const void *vocab, size_t vocab_size,
                                         const void *merges, size_t merges_size) {
  MI_CHECK_ARG(model);
  MI_CHECK_ARG(vocab);
  size_t skip;
  mi__vocab_format format = mi__vocab_format_of(NULL, vocab, vocab_size, &skip);
  return model_load(model, (const char *)vocab + skip, vocab_size - skip, format, merges,
                    merges_size);
}

mi_status mi_model_load_tokenizer(mi_model *model, const char *vocab_path,
                                  const char *merges_path) {
  MI_CHECK_ARG(model);
  MI_CHECK_ARG(vocab_path);
  tokenizer_files f;
  mi_status status = read_files(&f, vocab_path, merges_path);
  if (status == MI_OK)
    status = model_load(model, f.vocab + f.skip, f.vocab_size - f.skip, f.format, f.merges,
                        f.merges_size);
  free(f.vocab);
  free(f.merges);
  return name_files(status, vocab_path, merges_path);
}

/* ---- queries ---------------------------------------------------------------- */

mi_status mi_tokenizer_token_bytes(const char **out, size_t *out_len,
                                   const mi_tokenizer *tokenizer, size_t id) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(out_len);
  *out_len = 0;
  MI_CHECK_ARG(tokenizer);
  if (id >= tokenizer->n_ids || tokenizer->strings[id].off == NONE)
    return mi__fail(MI_ERR_INDEX, "token id %zu is no token of the tokenizer (%zu ids)", id,
                    tokenizer->n_ids);
  *out = tokenizer->arena + tokenizer->strings[id].off;
  *out_len = tokenizer->strings[id].len;
  return MI_OK;
}

mi_status mi_tokenizer_bos(size_t *out, const mi_tokenizer *tokenizer) {
  MI_CHECK_ARG(out);
  *out = SIZE_MAX;
  MI_CHECK_ARG(tokenizer);
  if (tokenizer->bos == NONE)
    return mi__fail(MI_ERR_UNSUPPORTED,
                    "the tokenizer has no beginning-of-sequence token (<|endoftext|>, "
                    "<|begin_of_text|>, <s>, <bos> or <BOS>)");
  *out = tokenizer->bos;
  return MI_OK;
}

mi_status mi_tokenizer_vocab_size(size_t *out, const mi_tokenizer *tokenizer) {
  MI_CHECK_ARG(out);
  *out = 0;
  MI_CHECK_ARG(tokenizer);
  *out = tokenizer->n_ids;
  return MI_OK;
}

/* ---- encoding: state of one call -------------------------------------------- */

typedef struct bpe_symbol {
  size_t id, prev, next; /* id == NONE: merged into its left neighbour */
} bpe_symbol;

typedef struct heap_item {
  size_t rank, pos; /* the pair of symbol pos and its next, at rank */
} heap_item;

typedef struct cache_slot {
  uint64_t hash;
  size_t key, key_len, ids, n_ids; /* key_len == 0: empty (words are never empty) */
} cache_slot;

typedef struct encoder {
  const mi_tokenizer *t;
  size_t *out, capacity, count;
  bpe_symbol *syms;
  size_t syms_cap;
  heap_item *heap, *pending;
  size_t heap_len, heap_cap, pending_len, pending_cap;
  cache_slot *cache;
  size_t cache_mask, cache_used;
  char *keys; /* the cached words' bytes */
  size_t keys_len, keys_cap;
  size_t *ids; /* the cached words' ids */
  size_t ids_len, ids_cap;
  char *prefixed; /* a segment with the space add_prefix_space puts in front */
  size_t prefixed_cap;
} encoder;

static void encoder_free(encoder *e) {
  free(e->syms);
  free(e->heap);
  free(e->pending);
  free(e->cache);
  free(e->keys);
  free(e->ids);
  free(e->prefixed);
}

static void emit(encoder *e, size_t id) {
  if (e->count < e->capacity)
    e->out[e->count] = id;
  e->count++;
}

static bool heap_less(const heap_item *a, const heap_item *b) {
  return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static mi_status heap_push(encoder *e, heap_item item) {
  mi_status status = RESERVE(e->heap, e->heap_cap, e->heap_len + 1);
  if (status != MI_OK)
    return status;
  size_t i = e->heap_len++;
  while (i > 0 && heap_less(&item, &e->heap[(i - 1) / 2])) {
    e->heap[i] = e->heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  e->heap[i] = item;
  return MI_OK;
}

static heap_item heap_pop(encoder *e) {
  heap_item top = e->heap[0], last = e->heap[--e->heap_len];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= e->heap_len)
      break;
    if (c + 1 < e->heap_len && heap_less(&e->heap[c + 1], &e->heap[c]))
      c++;
    if (!heap_less(&e->heap[c], &last))
      break;
    e->heap[i] = e->heap[c];
    i = c;
  }
  if (e->heap_len > 0)
    e->heap[i] = last;
  return top;
}

/* Queues the pair at pos (symbol pos and its next) for the next round. */
static mi_status queue_pair(encoder *e, size_t pos) {
  const bpe_symbol *s = e->syms;
  if (pos == NONE || s[pos].next == NONE)
    return MI_OK;
  const merge_slot *m = find_merge(e->t, s[pos].id, s[s[pos].next].id);
  if (m->left == NONE)
    return MI_OK;
  mi_status status = RESERVE(e->pending, e->pending_cap, e->pending_len + 1);
  if (status == MI_OK)
    e->pending[e->pending_len++] = (heap_item){.rank = m->rank, .pos = pos};
  return status;
}

static mi_status flush_pending(encoder *e) {
  mi_status status = MI_OK;
  for (size_t i = 0; i < e->pending_len && status == MI_OK; i++)
    status = heap_push(e, e->pending[i]);
  e->pending_len = 0;
  return status;
}

/*
 * BPE over one word's bytes, appending its ids to e->ids. GPT-2's rule:
 * take the lowest-ranked pair present, merge all its occurrences left to
 * right, repeat. The heap pops a rank's occurrences in position order; the
 * pairs those merges make wait until the rank is done (so a merge list
 * whose later pairs rank lower gives GPT-2's result too).
 */
static mi_status merge_word(encoder *e, const unsigned char *w, size_t n) {
  const mi_tokenizer *t = e->t;
  mi_status status = RESERVE(e->syms, e->syms_cap, n);
  if (status != MI_OK)
    return status;
  bpe_symbol *s = e->syms;
  for (size_t i = 0; i < n; i++)
    s[i] = (bpe_symbol){.id = t->byte_ids[w[i]], .prev = i ? i - 1 : NONE,
                        .next = i + 1 < n ? i + 1 : NONE};
  e->heap_len = e->pending_len = 0;
  for (size_t i = 0; i + 1 < n && status == MI_OK; i++)
    status = queue_pair(e, i);
  if (status == MI_OK)
    status = flush_pending(e);
  while (status == MI_OK && e->heap_len > 0) {
    size_t rank = e->heap[0].rank;
    while (status == MI_OK && e->heap_len > 0 && e->heap[0].rank == rank) {
      heap_item it = heap_pop(e);
      size_t right = s[it.pos].next;
      if (s[it.pos].id == NONE || right == NONE)
        continue;
      const merge_slot *m = find_merge(t, s[it.pos].id, s[right].id);
      if (m->left == NONE || m->rank != rank)
        continue; /* stale: a neighbour changed since it was queued */
      s[it.pos].id = m->result;
      s[it.pos].next = s[right].next;
      if (s[right].next != NONE)
        s[s[right].next].prev = it.pos;
      s[right].id = NONE;
      status = queue_pair(e, s[it.pos].prev);
      if (status == MI_OK)
        status = queue_pair(e, it.pos);
    }
    if (status == MI_OK)
      status = flush_pending(e);
  }
  for (size_t i = 0; status == MI_OK && i != NONE; i = s[i].next) {
    status = RESERVE(e->ids, e->ids_cap, e->ids_len + 1);
    if (status == MI_OK)
      e->ids[e->ids_len++] = s[i].id;
  }
  return status;
}

static mi_status cache_grow(encoder *e) {
  size_t n = e->cache ? 2 * (e->cache_mask + 1) : 1024;
  cache_slot *slots = calloc(n, sizeof *slots);
  if (slots == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "tokenizer: cannot allocate a cache of %zu words", n);
  for (size_t i = 0; e->cache && i <= e->cache_mask; i++) {
    if (e->cache[i].key_len == 0)
      continue;
    size_t j = (size_t)e->cache[i].hash & (n - 1);
    while (slots[j].key_len != 0)
      j = (j + 1) & (n - 1);
    slots[j] = e->cache[i];
  }
  free(e->cache);
  e->cache = slots;
  e->cache_mask = n - 1;
  return MI_OK;
}

/* The ids of one pre-tokenized word: from the cache, or merged and cached. */
static mi_status encode_word(encoder *e, const unsigned char *w, size_t n) {
  const mi_tokenizer *t = e->t;
  if (n == 1) {
    emit(e, t->byte_ids[w[0]]);
    return MI_OK;
  }
  mi_status status = MI_OK;
  if (2 * (e->cache_used + 1) > (e->cache ? e->cache_mask + 1 : 0))
    status = cache_grow(e);
  if (status != MI_OK)
    return status;
  uint64_t h = mi__hash_bytes(w, n);
  size_t i = (size_t)h & e->cache_mask;
  for (; e->cache[i].key_len != 0; i = (i + 1) & e->cache_mask) {
    const cache_slot *c = &e->cache[i];
    if (c->hash == h && c->key_len == n && memcmp(e->keys + c->key, w, n) == 0) {
      for (size_t k = 0; k < c->n_ids; k++)
        emit(e, e->ids[c->ids + k]);
      return MI_OK;
    }
  }
  size_t first = e->ids_len, whole = t->ignore_merges ? lookup(t, w, n) : NONE;
  if (whole != NONE && (status = RESERVE(e->ids, e->ids_cap, e->ids_len + 1)) == MI_OK)
    e->ids[e->ids_len++] = whole;
  else if (whole == NONE)
    status = merge_word(e, w, n);
  if (status == MI_OK)
    status = RESERVE(e->keys, e->keys_cap, e->keys_len + n);
  if (status != MI_OK)
    return status;
  memcpy(e->keys + e->keys_len, w, n);
  e->cache[i] = (cache_slot){.hash = h, .key = e->keys_len, .key_len = n, .ids = first,
                             .n_ids = e->ids_len - first};
  e->keys_len += n;
  e->cache_used++;
  for (size_t k = first; k < e->ids_len; k++)
    emit(e, e->ids[k]);
  return MI_OK;
}

/* ---- the pre-tokenizer -------------------------------------------------------- */

/*
 * The character at s[i] (i < n): its class and length in bytes. A byte that
 * does not begin a valid UTF-8 sequence (overlong forms, surrogates and
 * code points past U+10FFFF are invalid) is a character of its own, of
 * class "other".
 */
static uint32_t decode_char(const unsigned char *s, size_t n, size_t i, size_t *len) {
  unsigned char c = s[i];
  *len = 1;
  if (c < 0x80)
    return c;
  size_t extra = c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2
                 : c >= 0xF0 && c <= 0xF4 ? 3 : 0;
  if (extra == 0 || n - i <= extra)
    return (uint32_t)-1;
  uint32_t cp = c & (0x3F >> extra);
  for (size_t k = 1; k <= extra; k++) {
    unsigned char d = s[i + k];
    if ((d & 0xC0) != 0x80)
      return (uint32_t)-1;
    cp = cp << 6 | (d & 0x3F);
  }
  static const uint32_t min[4] = {0, 0x80, 0x800, 0x10000};
  if (cp < min[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
    return (uint32_t)-1;
  *len = extra + 1;
  return cp;
}

/* The range of the sorted, disjoint table r[0..n) that holds cp, or NULL. */
static const mi__uc_range *find_range(const mi__uc_range *r, size_t n, uint32_t cp) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (cp < r[mid].lo)
      hi = mid;
    else if (cp > r[mid].hi)
      lo = mid + 1;
    else
      return &r[mid];
  }
  return NULL;
}

static uint32_t class_of_code_point(uint32_t cp) {
  const mi__uc_range *r =
      find_range(mi__uc_classes, sizeof mi__uc_classes / sizeof *mi__uc_classes, cp);
  return r ? r->cls : MI__UC_OTHER;
}

/* The class of the character at s[i] and its length. */
static uint32_t class_at(const unsigned char *s, size_t n, size_t i, size_t *len) {
  unsigned char c = s[i];
  if (c < 0x80) {
    *len = 1;
    return c >= 'a' && c <= 'z' ? MI__UC_LETTER : c >= 'A' && c <= 'Z' ? MI__UC_LETTER
           : c >= '0' && c <= '9' ? MI__UC_NUMBER
           : c == ' ' || (c >= 0x09 && c <= 0x0D) ? MI__UC_SPACE : MI__UC_OTHER;
  }
  uint32_t cp = decode_char(s, n, i, len);
  return cp == (uint32_t)-1 ? MI__UC_OTHER : class_of_code_point(cp);
}

/* The end of the run of characters of class cls that starts at i. */
static size_t run_end(const unsigned char *s, size_t n, size_t i, uint32_t cls) {
  size_t len;
  while (i < n && class_at(s, n, i, &len) == cls)
    i += len;
  return i;
}

/*
 * The end of GPT-2's pre-token that starts at i (i < n):
 * 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 */
static size_t pre_token_end(const unsigned char *s, size_t n, size_t i) {
  if (s[i] == '\'' && i + 1 < n) {
    unsigned char a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
      return i + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
      return i + 3;
  }
  size_t len, start = i;
  if (s[i] == ' ' && i + 1 < n) {
    uint32_t next = class_at(s, n, i + 1, &len);
    if (next != MI__UC_SPACE)
      return run_end(s, n, i + 1, next);
  }
  uint32_t cls = class_at(s, n, i, &len);
  if (cls != MI__UC_SPACE)
    return run_end(s, n, i, cls);
  /* White space: all of it before the end of the text, or all but its last
   * character before something else (that character goes with it). */
  size_t last = i;
  for (; i < n && class_at(s, n, i, &len) == MI__UC_SPACE; i += len)
    last = i;
  return i == n || last == start ? i : last;
}

/* Pre-tokenizes one segment (no added token in it) and encodes its words. */
static mi_status encode_segment(encoder *e, const unsigned char *s, size_t n) {
  const mi_tokenizer *t = e->t;
  if (n == 0)
    return MI_OK;
  if (t->add_prefix_space && s[0] != ' ') {
    mi_status status = RESERVE(e->prefixed, e->prefixed_cap, n + 1);
    if (status != MI_OK)
      return status;
    e->prefixed[0] = ' ';
    memcpy(e->prefixed + 1, s, n);
    s = (const unsigned char *)e->prefixed;
    n++;
  }
  if (!t->use_regex)
    return encode_word(e, s, n);
  for (size_t i = 0; i < n;) {
    size_t end = pre_token_end(s, n, i);
    mi_status status = encode_word(e, s + i, end - i);
    if (status != MI_OK)
      return status;
    i = end;
  }
  return MI_OK;
}

/*
 * Splits s at the added tokens of `pass` (0: matched as written, 1:
 * normalized), leftmost-longest, encoding the gaps with the next pass.
 */
static mi_status encode_added(encoder *e, const unsigned char *s, size_t n, int pass) {
  const mi_tokenizer *t = e->t;
  if (pass == 2)
    return encode_segment(e, s, n);
  size_t gap = 0;
  for (size_t i = 0; i < n;) {
    size_t match = NONE;
    for (size_t k = 0; k < t->n_added && match == NONE; k++) {
      const added_token *a = &t->added[k];
      const tok_string *str = &t->strings[a->id];
      if (a->normalized == (pass == 1) && a->len <= n - i && str->len == a->len &&
          memcmp(s + i, t->arena + str->off, a->len) == 0)
        match = k;
    }
    if (match == NONE) {
      i++;
      continue;
    }
    mi_status status = encode_added(e, s + gap, i - gap, pass + 1);
    if (status != MI_OK)
      return status;
    emit(e, t->added[match].id);
    i += t->strings[t->added[match].id].len;
    gap = i;
  }
  return encode_added(e, s + gap, n - gap, pass + 1);
}

/* Text NFC would change cannot be tokenized exactly without NFC: refused. */
static mi_status check_nfc_stable(const unsigned char *s, size_t n) {
  for (size_t i = 0, len; i < n; i += len) {
    uint32_t cp = s[i] < 0x80 ? (len = 1, s[i]) : decode_char(s, n, i, &len);
    if (cp != (uint32_t)-1 &&
        find_range(mi__uc_nfc_unsafe, sizeof mi__uc_nfc_unsafe / sizeof *mi__uc_nfc_unsafe,
                   cp) != NULL)
      return mi__fail(MI_ERR_UNSUPPORTED,
                      "tokenizer: the text holds U+%04X at byte %zu, which the tokenizer's "
                      "NFC normalizer may change; libmi does not implement NFC",
                      (unsigned)cp, i);
  }
  return MI_OK;
}

/* Word level: words split at " \t\n\r", each a whole token. */
static mi_status encode_words(encoder *e, const char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    while (i < n && strchr(" \t\n\r", s[i]) && s[i] != '\0')
      i++;
    size_t start = i;
    while (i < n && !(strchr(" \t\n\r", s[i]) && s[i] != '\0'))
      i++;
    if (i == start)
      break;
    size_t id = lookup(e->t, s + start, i - start);
    if (id == NONE)
      return mi__fail(MI_ERR_INDEX, "tokenizer: '%.*s' (at byte %zu) is not a token of the "
                      "vocabulary", SHOW(s + start, i - start), start);
    emit(e, id);
  }
  return MI_OK;
}

mi_status mi_tokenizer_encode(size_t *out, size_t capacity, size_t *out_count,
                              const mi_tokenizer *tokenizer, const char *text, size_t len,
                              unsigned flags) {
  MI_CHECK_ARG(out_count);
  *out_count = 0;
  MI_CHECK_ARG(tokenizer);
  if (out == NULL && capacity > 0)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "mi_tokenizer_encode: 'out' is NULL");
  if (text == NULL && len > 0)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "mi_tokenizer_encode: 'text' is NULL");
  if (flags & ~(unsigned)MI_TOKENIZE_PREPEND_BOS)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "mi_tokenizer_encode: unknown flags 0x%x", flags);
  encoder e = {.t = tokenizer, .out = out, .capacity = capacity};
  mi_status status = MI_OK;
  if (flags & MI_TOKENIZE_PREPEND_BOS) {
    size_t bos;
    if ((status = mi_tokenizer_bos(&bos, tokenizer)) == MI_OK)
      emit(&e, bos);
  }
  if (status == MI_OK && len > 0) {
    const unsigned char *s = (const unsigned char *)text;
    if (tokenizer->kind == KIND_WORDS)
      status = encode_words(&e, text, len);
    else if (!tokenizer->nfc || (status = check_nfc_stable(s, len)) == MI_OK)
      status = encode_added(&e, s, len, 0);
  }
  encoder_free(&e);
  if (status != MI_OK)
    return status;
  *out_count = e.count;
  if (e.count > capacity)
    return mi__fail(MI_ERR_SHAPE,
                    "mi_tokenizer_encode: the text has %zu tokens, the buffer room for %zu",
                    e.count, capacity);
  return MI_OK;
}
