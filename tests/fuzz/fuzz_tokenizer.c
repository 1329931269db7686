/*
 * libFuzzer harness for the tokenizer: loading (vocab.json + merges,
 * tokenizer.json, one token a line) and encoding. The input is up to three
 * parts separated by two NUL bytes: the vocabulary file, the merges file
 * (absent: none) and a text. Any input must give a documented status; an
 * encoding must fit len + 1 ids, each an id with bytes, and a byte-level
 * encoding without added space must decode to the text again.
 */
#define _GNU_SOURCE /* memmem */
#include <mi.h>

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Room for the 256 byte tokens and a few hundred more; ids past it are refused. */
enum { D_VOCAB = 600 };

/* The next part of the input, up to two NUL bytes or the end. */
static const uint8_t *next_part(const uint8_t **p, const uint8_t *end, size_t *len) {
  const uint8_t *start = *p;
  const uint8_t *q = start;
  while (q + 1 < end && !(q[0] == 0 && q[1] == 0))
    q++;
  if (q + 1 >= end)
    q = end;
  *len = (size_t)(q - start);
  *p = q == end ? end : q + 2;
  return start;
}

static int allowed_load(mi_status s) {
  return s == MI_OK || s == MI_ERR_FORMAT || s == MI_ERR_INDEX || s == MI_ERR_UNSUPPORTED ||
         s == MI_ERR_INVALID_ARGUMENT;
}

static void check_encoding(const mi_tokenizer *tok, const char *text, size_t len,
                           int byte_level) {
  size_t capacity = len + 1, count = 0;
  size_t *ids = malloc(capacity * sizeof *ids);
  if (ids == NULL)
    return;
  for (unsigned flags = 0; flags < 2; flags++) {
    mi_status s = mi_tokenizer_encode(ids, capacity, &count, tok, text, len, flags);
    if (s != MI_OK) {
      if (s != MI_ERR_INDEX && s != MI_ERR_UNSUPPORTED)
        __builtin_trap();
      if (mi_last_error()[0] == '\0')
        __builtin_trap();
      continue;
    }
    if (count > capacity)
      __builtin_trap();
    size_t at = 0;
    int same = 1;
    for (size_t i = flags; i < count; i++) {
      const char *b;
      size_t n;
      if (ids[i] >= D_VOCAB || mi_tokenizer_token_bytes(&b, &n, tok, ids[i]) != MI_OK)
        __builtin_trap();
      same = same && at + n <= len && memcmp(text + at, b, n) == 0;
      at += n;
    }
    if (byte_level && (!same || at != len))
      __builtin_trap(); /* byte-level BPE gives the text back */
  }
  free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static mi_model *model;
  if (model == NULL) {
    mi_config config;
    mi_config_init(&config, sizeof config);
    config.n_layers = config.n_heads = config.d_model = config.d_head = 1;
    config.d_vocab = D_VOCAB;
    if (mi_model_create(&model, &config) != MI_OK)
      __builtin_trap();
  }
  const uint8_t *p = data, *end = data + size;
  size_t vocab_len, merges_len = 0, text_len = 0;
  const uint8_t *vocab = next_part(&p, end, &vocab_len);
  const uint8_t *merges = p < end ? next_part(&p, end, &merges_len) : NULL;
  const uint8_t *text = p < end ? next_part(&p, end, &text_len) : (const uint8_t *)"";
  if (merges != NULL && merges_len == 0)
    merges = NULL; /* an empty merges part: no merges file */
  mi_status s = mi_model_load_tokenizer_memory(model, vocab, vocab_len, merges, merges_len);
  if (!allowed_load(s) || (s != MI_OK && mi_last_error()[0] == '\0'))
    __builtin_trap();
  if (s != MI_OK)
    return 0;
  const mi_tokenizer *tok;
  if (mi_model_tokenizer(&tok, model) != MI_OK)
    __builtin_trap();
  /* Byte-level and adding nothing: JSON, no prefix space, no NFC refusal. */
  size_t first = vocab_len >= 3 && memcmp(vocab, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
  while (first < vocab_len && vocab[first] != 0 && strchr(" \t\r\n", vocab[first]))
    first++;
  int json = first < vocab_len && vocab[first] == '{';
  int byte_level = json && memmem(vocab, vocab_len, "add_prefix_space\": true", 23) == NULL &&
                   memmem(vocab, vocab_len, "add_prefix_space\":true", 22) == NULL;
  check_encoding(tok, (const char *)text, text_len, byte_level);
  return 0;
}
