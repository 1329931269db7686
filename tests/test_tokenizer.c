/*
 * The tokenizer's C API: GPT-2's ids for sentences the issue quotes, the
 * beginning-of-sequence option, caller buffers, bad merges and vocabularies
 * (MI_ERR_FORMAT naming the line), tokenizers libmi refuses by name, the
 * model owning its tokenizer, word-level vocabularies, invalid UTF-8 and
 * NFC. The ids of whole corpora are checked against independent encoders by
 * tests/tokenizer/check_reference.py.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A growing string, for building files. */
typedef struct text {
  char *s;
  size_t len, cap;
} text;

static void put(text *t, const char *s, size_t n) {
  if (t->len + n + 1 > t->cap) {
    t->cap = 2 * (t->len + n + 1);
    t->s = realloc(t->s, t->cap);
    ck_assert_ptr_nonnull(t->s);
  }
  memcpy(t->s + t->len, s, n);
  t->len += n;
  t->s[t->len] = '\0';
}

static void puts_(text *t, const char *s) { put(t, s, strlen(s)); }

/* GPT-2's bytes_to_unicode written out again: byte b's symbol as UTF-8. */
static void put_byte_symbol(text *t, int b) {
  int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  int cp = b;
  if (!printable) {
    cp = 256;
    for (int c = 0; c < b; c++)
      cp += !((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE);
  }
  char u[3];
  if (cp < 0x80) {
    u[0] = (char)cp;
    put(t, u, 1);
  } else {
    u[0] = (char)(0xC0 | cp >> 6);
    u[1] = (char)(0x80 | (cp & 0x3F));
    put(t, u, 2);
  }
}

/*
 * A vocab.json of the 256 byte symbols (id = byte, '"' and '\\' escaped),
 * then `extra` ("\"ab\": 256, ..." text), leaving out byte `skip` (-1: none).
 */
static text byte_vocab(const char *extra, int skip) {
  text t = {0};
  puts_(&t, "{");
  for (int b = 0; b < 256; b++) {
    if (b == skip)
      continue;
    char num[32];
    puts_(&t, t.len > 1 ? ", \"" : "\"");
    if (b == '"' || b == '\\')
      puts_(&t, "\\");
    put_byte_symbol(&t, b);
    snprintf(num, sizeof num, "\": %d", b);
    puts_(&t, num);
  }
  if (extra && *extra) {
    puts_(&t, ", ");
    puts_(&t, extra);
  }
  puts_(&t, "}");
  return t;
}

static mi_tokenizer *load_pair(const char *extra, const char *merges) {
  text v = byte_vocab(extra, -1);
  mi_tokenizer *tok;
  TU_OK(mi_tokenizer_load_memory(&tok, v.s, v.len, merges, strlen(merges)));
  free(v.s);
  return tok;
}

/* Encodes NUL-terminated s and checks the ids against expected[0..n). */
static void assert_ids(const mi_tokenizer *tok, const char *s, unsigned flags,
                       const size_t *expected, size_t n) {
  size_t ids[64], count;
  TU_OK(mi_tokenizer_encode(ids, 64, &count, tok, s, strlen(s), flags));
  ck_assert_msg(count == n, "'%s': %zu ids, expected %zu", s, count, n);
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(ids[i] == expected[i], "'%s': id %zu is %zu, expected %zu", s, i, ids[i],
                  expected[i]);
}

static void assert_message_has(const char *needle) {
  ck_assert_msg(strstr(mi_last_error(), needle) != NULL, "message '%s' should name '%s'",
                mi_last_error(), needle);
}

static const char *data_path(char *buf, size_t size, const char *name) {
  const char *dir = getenv("MI_GPT2_DATA");
  ck_assert_msg(dir != NULL, "MI_GPT2_DATA is not set (run the tests through ctest)");
  snprintf(buf, size, "%s/%s", dir, name);
  FILE *f = fopen(buf, "rb");
  ck_assert_msg(f != NULL, "%s is missing: run tools/fetch-test-data.sh", buf);
  fclose(f);
  return buf;
}

static mi_tokenizer *gpt2(void) {
  char vocab[512], merges[512];
  mi_tokenizer *tok;
  TU_OK(mi_tokenizer_load(&tok, data_path(vocab, sizeof vocab, "encoder.json"),
                          data_path(merges, sizeof merges, "vocab.bpe")));
  return tok;
}

/* The ids the issue quotes for GPT-2 (15496 "Hello", 995 " world"). */
START_TEST(gpt2_sentences_and_bos) {
  mi_tokenizer *tok = gpt2();
  assert_ids(tok, "Hello world", 0, (const size_t[]){15496, 995}, 2);
  assert_ids(tok, "Hello world", MI_TOKENIZE_PREPEND_BOS, (const size_t[]){50256, 15496, 995},
             3);
  size_t bos, n;
  TU_OK(mi_tokenizer_bos(&bos, tok));
  ck_assert_uint_eq(bos, 50256);
  TU_OK(mi_tokenizer_vocab_size(&n, tok));
  ck_assert_uint_eq(n, 50257);
  /* The pair has no added tokens: "<|endoftext|>" in text is BPE'd as the
   * reference encoder does, never the special token. */
  size_t ids[32], count;
  TU_OK(mi_tokenizer_encode(ids, 32, &count, tok, "<|endoftext|>", 13, 0));
  ck_assert_uint_gt(count, 1);
  for (size_t i = 0; i < count; i++)
    ck_assert_uint_ne(ids[i], 50256);
  /* The empty text: no ids, or the BOS alone. */
  TU_OK(mi_tokenizer_encode(NULL, 0, &count, tok, NULL, 0, 0));
  ck_assert_uint_eq(count, 0);
  TU_OK(mi_tokenizer_encode(ids, 1, &count, tok, "", 0, MI_TOKENIZE_PREPEND_BOS));
  ck_assert_uint_eq(count, 1);
  ck_assert_uint_eq(ids[0], 50256);
  mi_tokenizer_free(tok);
}
END_TEST

START_TEST(buffers_and_arguments) {
  mi_tokenizer *tok = gpt2();
  size_t ids[4] = {7, 7, 7, 7}, count;
  /* Too small: the count comes back, nothing past the room is written. */
  TU_FAILS(MI_ERR_SHAPE, mi_tokenizer_encode(ids, 1, &count, tok, "Hello world", 11, 0));
  ck_assert_uint_eq(count, 2);
  ck_assert_uint_eq(ids[0], 15496);
  ck_assert_uint_eq(ids[1], 7);
  TU_FAILS(MI_ERR_SHAPE, mi_tokenizer_encode(NULL, 0, &count, tok, "Hello world", 11, 0));
  ck_assert_uint_eq(count, 2);
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_tokenizer_encode(NULL, 3, &count, tok, "a", 1, 0));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_tokenizer_encode(ids, 4, &count, tok, NULL, 1, 0));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_tokenizer_encode(ids, 4, NULL, tok, "a", 1, 0));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_tokenizer_encode(ids, 4, &count, NULL, "a", 1, 0));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_tokenizer_encode(ids, 4, &count, tok, "a", 1, 1u << 5));
  ck_assert_uint_eq(count, 0);
  const char *s;
  size_t len;
  TU_FAILS(MI_ERR_INDEX, mi_tokenizer_token_bytes(&s, &len, tok, 50257));
  ck_assert_ptr_null(s);
  mi_tokenizer *none = (mi_tokenizer *)1;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_tokenizer_load(&none, NULL, NULL));
  ck_assert_ptr_null(none);
  mi_tokenizer_free(NULL);
  mi_tokenizer_free(tok);
}
END_TEST

/* Bytes that are not UTF-8 become their byte tokens, and decode back. */
START_TEST(invalid_utf8_is_encoded_byte_wise) {
  mi_tokenizer *tok = gpt2();
  const char *texts[] = {"\xFF", "a\xC3(b", "\xED\xA0\x80", "\xF0\x9F\x98", "x\x80\x80y",
                         "\xC0\xAF ok", "caf\xC3\xA9 \xE2\x82"};
  for (size_t k = 0; k < sizeof texts / sizeof *texts; k++) {
    size_t ids[64], count, n = strlen(texts[k]);
    TU_OK(mi_tokenizer_encode(ids, 64, &count, tok, texts[k], n, 0));
    text back = {0};
    for (size_t i = 0; i < count; i++) {
      const char *s;
      size_t len;
      TU_OK(mi_tokenizer_token_bytes(&s, &len, tok, ids[i]));
      put(&back, s, len);
    }
    ck_assert_msg(back.len == n && memcmp(back.s, texts[k], n) == 0, "text %zu", k);
    free(back.s);
  }
  /* A lone 0xFF is the token of that byte: its bytes are exactly "\xFF". */
  size_t id, count;
  const char *s;
  size_t len;
  TU_OK(mi_tokenizer_encode(&id, 1, &count, tok, "\xFF", 1, 0));
  TU_OK(mi_tokenizer_token_bytes(&s, &len, tok, id));
  ck_assert(len == 1 && (unsigned char)s[0] == 0xFF);
  mi_tokenizer_free(tok);
}
END_TEST

/* Merges apply by rank, all occurrences left to right; "aaa" -> "aa" "a". */
START_TEST(merges_apply_by_rank) {
  mi_tokenizer *tok = load_pair("\"aa\": 256, \"ab\": 257, \"aab\": 258",
                                "#version: 0.2\na a\na b\naa b\n");
  assert_ids(tok, "aaa", 0, (const size_t[]){256, 'a'}, 2);
  assert_ids(tok, "aab", 0, (const size_t[]){258}, 1);
  assert_ids(tok, "aaaa", 0, (const size_t[]){256, 256}, 2);
  assert_ids(tok, "ab ab", 0, (const size_t[]){257, ' ', 257}, 3);
  mi_tokenizer_free(tok);
  /* The same merges listed b-first: ranks change which pair wins. */
  tok = load_pair("\"aa\": 256, \"ab\": 257, \"aab\": 258", "a b\na a\naa b\n");
  assert_ids(tok, "aab", 0, (const size_t[]){'a', 257}, 2);
  mi_tokenizer_free(tok);
}
END_TEST

static void assert_pair_fails(mi_status expected, const char *extra, int skip,
                              const char *merges, const char *needle) {
  text v = byte_vocab(extra, skip);
  mi_tokenizer *tok = (mi_tokenizer *)1;
  TU_FAILS(expected, mi_tokenizer_load_memory(&tok, v.s, v.len, merges, strlen(merges)));
  ck_assert_ptr_null(tok);
  assert_message_has(needle);
  free(v.s);
}

START_TEST(bad_merges_and_vocabularies) {
  assert_pair_fails(MI_ERR_FORMAT, "\"ab\": 256", -1, "#version: 0.2\na b\nq zz\n",
                    "line 3: 'zz' is not a token");
  assert_pair_fails(MI_ERR_FORMAT, "\"ab\": 256", -1, "a b\nb a\n",
                    "line 2: 'b' + 'a' makes a token the vocabulary does not have");
  assert_pair_fails(MI_ERR_FORMAT, "\"ab\": 256", -1, "a b\na b\n",
                    "line 2: the pair 'a b' has rank 0 already (a rank collision)");
  assert_pair_fails(MI_ERR_FORMAT, "\"ab\": 256", -1, "a b c\n",
                    "line 1: 'a b c' is not two tokens and one space");
  assert_pair_fails(MI_ERR_FORMAT, "", 'q', "", "no token for byte 0x71");
  assert_pair_fails(MI_ERR_FORMAT, "\"ab\": -1", -1, "", "not a non-negative integer");
  text v = byte_vocab("", -1);
  mi_tokenizer *tok;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_tokenizer_load_memory(&tok, v.s, v.len, NULL, 0));
  assert_message_has("needs its merges file");
  free(v.s);
  TU_FAILS(MI_ERR_FORMAT, mi_tokenizer_load_memory(&tok, "{", 1, "", 0));
  TU_FAILS(MI_ERR_FORMAT, mi_tokenizer_load_memory(&tok, "", 0, NULL, 0));
}
END_TEST

/* A tokenizer.json around the byte vocabulary, with parts replaced. */
static text tokenizer_json(const char *model_type, const char *model_extra, const char *pre,
                           const char *normalizer, const char *added) {
  text vocab = byte_vocab("\"ab\": 256", -1), t = {0};
  puts_(&t, "{\"added_tokens\": ");
  puts_(&t, added);
  puts_(&t, ", \"normalizer\": ");
  puts_(&t, normalizer);
  puts_(&t, ", \"pre_tokenizer\": ");
  puts_(&t, pre);
  puts_(&t, ", \"model\": {\"type\": \"");
  puts_(&t, model_type);
  puts_(&t, "\", ");
  puts_(&t, model_extra);
  puts_(&t, "\"vocab\": ");
  put(&t, vocab.s, vocab.len);
  puts_(&t, ", \"merges\": [[\"a\", \"b\"]]}}");
  free(vocab.s);
  return t;
}

#define BYTE_LEVEL "{\"type\": \"ByteLevel\", \"add_prefix_space\": false}"

static void assert_json_fails(mi_status expected, text t, const char *needle) {
  mi_tokenizer *tok = (mi_tokenizer *)1;
  TU_FAILS(expected, mi_tokenizer_load_memory(&tok, t.s, t.len, NULL, 0));
  ck_assert_ptr_null(tok);
  assert_message_has(needle);
  free(t.s);
}

START_TEST(unsupported_tokenizers_are_refused_by_name) {
  assert_json_fails(MI_ERR_UNSUPPORTED, tokenizer_json("WordPiece", "", BYTE_LEVEL, "null", "[]"),
                    "model type 'WordPiece'");
  assert_json_fails(MI_ERR_UNSUPPORTED,
                    tokenizer_json("BPE", "\"byte_fallback\": true, ", BYTE_LEVEL, "null", "[]"),
                    "byte-fallback");
  assert_json_fails(MI_ERR_UNSUPPORTED,
                    tokenizer_json("BPE", "\"dropout\": 0.1, ", BYTE_LEVEL, "null", "[]"),
                    "dropout");
  assert_json_fails(MI_ERR_UNSUPPORTED,
                    tokenizer_json("BPE", "\"continuing_subword_prefix\": \"##\", ", BYTE_LEVEL,
                                   "null", "[]"),
                    "continuing_subword_prefix");
  assert_json_fails(MI_ERR_UNSUPPORTED,
                    tokenizer_json("BPE", "", "{\"type\": \"Metaspace\"}", "null", "[]"),
                    "pre-tokenizer 'Metaspace'");
  assert_json_fails(MI_ERR_UNSUPPORTED, tokenizer_json("BPE", "", "null", "null", "[]"),
                    "pre-tokenizer 'none'");
  assert_json_fails(MI_ERR_UNSUPPORTED,
                    tokenizer_json("BPE", "", BYTE_LEVEL, "{\"type\": \"Lowercase\"}", "[]"),
                    "normalizer 'Lowercase'");
  assert_json_fails(MI_ERR_UNSUPPORTED,
                    tokenizer_json("BPE", "", BYTE_LEVEL, "null",
                                   "[{\"id\": 257, \"content\": \"<m>\", \"lstrip\": true}]"),
                    "'<m>' has lstrip set");
  const char *unigram = "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", -1.0]]}}";
  mi_tokenizer *tok;
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_tokenizer_load_memory(&tok, unigram, strlen(unigram), NULL, 0));
  assert_message_has("'Unigram'");
  assert_json_fails(MI_ERR_FORMAT,
                    tokenizer_json("BPE", "", BYTE_LEVEL, "null",
                                   "[{\"id\": 257, \"content\": \"\"}]"),
                    "added_tokens[0]");
}
END_TEST

START_TEST(tokenizer_json_added_tokens_and_nfc) {
  text t = tokenizer_json("BPE", "", BYTE_LEVEL, "{\"type\": \"NFC\"}",
                          "[{\"id\": 257, \"content\": \"<m>\", \"special\": true}]");
  mi_tokenizer *tok;
  TU_OK(mi_tokenizer_load_memory(&tok, t.s, t.len, NULL, 0));
  free(t.s);
  assert_ids(tok, "ab<m>ab", 0, (const size_t[]){256, 257, 256}, 3);
  assert_ids(tok, "<m", 0, (const size_t[]){'<', 'm'}, 2);
  /* Precomposed é is its own NFC; e + U+0301 is not, and NFC is not implemented. */
  assert_ids(tok, "\xC3\xA9", 0, (const size_t[]){0xC3, 0xA9}, 2);
  size_t ids[8], count;
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_tokenizer_encode(ids, 8, &count, tok, "e\xCC\x81", 3, 0));
  assert_message_has("U+0301 at byte 1");
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_tokenizer_bos(&count, tok));
  TU_FAILS(MI_ERR_UNSUPPORTED,
           mi_tokenizer_encode(ids, 8, &count, tok, "ab", 2, MI_TOKENIZE_PREPEND_BOS));
  mi_tokenizer_free(tok);
}
END_TEST

/* The model keeps the tokenizer its vocabulary file describes. */
START_TEST(model_owns_its_tokenizer) {
  mi_config c = tu_config(1, 1, 1, 1, 300, 0, 0);
  mi_model *model;
  TU_OK(mi_model_create(&model, &c));
  const mi_tokenizer *tok = (const mi_tokenizer *)1;
  TU_FAILS(MI_ERR_STATE, mi_model_tokenizer(&tok, model));
  ck_assert_ptr_null(tok);
  text t = tokenizer_json("BPE", "", BYTE_LEVEL, "null", "[]");
  TU_OK(mi_model_load_vocab_memory(model, t.s, t.len));
  TU_OK(mi_model_tokenizer(&tok, model));
  assert_ids(tok, "abab", 0, (const size_t[]){256, 256}, 2);
  /* A vocab.json alone has strings but no tokenizer, until its merges come. */
  text v = byte_vocab("\"ab\": 256", -1);
  TU_OK(mi_model_load_vocab_memory(model, v.s, v.len));
  TU_FAILS(MI_ERR_STATE, mi_model_tokenizer(&tok, model));
  assert_message_has("merges");
  TU_OK(mi_model_load_tokenizer_memory(model, v.s, v.len, "a b\n", 4));
  TU_OK(mi_model_tokenizer(&tok, model));
  assert_ids(tok, "ab", 0, (const size_t[]){256}, 1);
  const char *s;
  TU_OK(mi_model_token_str(&s, model, 256));
  ck_assert_str_eq(s, "ab");
  /* A WordPiece file gives strings, and the reason it has no tokenizer. */
  text w = tokenizer_json("WordPiece", "", BYTE_LEVEL, "null", "[]");
  TU_OK(mi_model_load_vocab_memory(model, w.s, w.len));
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_model_tokenizer(&tok, model));
  assert_message_has("'WordPiece'");
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_model_load_tokenizer_memory(model, w.s, w.len, NULL, 0));
  mi_model_free(model);
  /* Ids past d_vocab: MI_ERR_INDEX, and the earlier vocabulary stays. */
  c = tu_config(1, 1, 1, 1, 256, 0, 0);
  TU_OK(mi_model_create(&model, &c));
  TU_FAILS(MI_ERR_INDEX, mi_model_load_tokenizer_memory(model, v.s, v.len, "a b\n", 4));
  assert_message_has("d_vocab is 256");
  TU_FAILS(MI_ERR_STATE, mi_model_tokenizer(&tok, model));
  mi_model_free(model);
  free(t.s);
  free(v.s);
  free(w.s);
}
END_TEST

/* The shipped word-level vocabulary: each word its line number. */
START_TEST(word_level_vocabulary) {
  const char *path = MI_EXAMPLE_MODELS "/induction-2l/vocab.txt";
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  char line[256], words[3][256];
  size_t n = 0, picked = 0, want[3];
  while (fgets(line, sizeof line, f) && picked < 3) {
    line[strcspn(line, "\r\n")] = '\0';
    if (n == 0)
      ck_assert_str_eq(line, "<bos>");
    else if (n % 7 == 3) { /* three tokens from the file, whatever they are */
      snprintf(words[picked], sizeof words[picked], "%s", line);
      want[picked++] = n;
    }
    n++;
  }
  fclose(f);
  ck_assert_uint_eq(picked, 3);
  mi_tokenizer *tok;
  TU_OK(mi_tokenizer_load(&tok, path, NULL));
  char sentence[1024];
  snprintf(sentence, sizeof sentence, "  %s\t%s\n%s ", words[0], words[1], words[2]);
  assert_ids(tok, sentence, 0, want, 3);
  assert_ids(tok, sentence, MI_TOKENIZE_PREPEND_BOS,
             (const size_t[]){0, want[0], want[1], want[2]}, 4);
  size_t ids[4], count;
  TU_FAILS(MI_ERR_INDEX, mi_tokenizer_encode(ids, 4, &count, tok, "zzzq", 4, 0));
  assert_message_has("'zzzq' (at byte 0) is not a token");
  mi_tokenizer_free(tok);
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_tokenizer_load(&tok, path, path));
  TU_FAILS(MI_ERR_IO, mi_tokenizer_load(&tok, MI_EXAMPLE_MODELS "/no-such-vocab.txt", NULL));
}
END_TEST

static Suite *tokenizer_suite(void) {
  Suite *s = suite_create("tokenizer");
  TCase *gpt2_case = tcase_create("gpt2");
  tcase_set_timeout(gpt2_case, 60);
  tcase_add_test(gpt2_case, gpt2_sentences_and_bos);
  tcase_add_test(gpt2_case, buffers_and_arguments);
  tcase_add_test(gpt2_case, invalid_utf8_is_encoded_byte_wise);
  suite_add_tcase(s, gpt2_case);
  TCase *files = tcase_create("files");
  tcase_add_test(files, merges_apply_by_rank);
  tcase_add_test(files, bad_merges_and_vocabularies);
  tcase_add_test(files, unsupported_tokenizers_are_refused_by_name);
  tcase_add_test(files, tokenizer_json_added_tokens_and_nfc);
  tcase_add_test(files, model_owns_its_tokenizer);
  tcase_add_test(files, word_level_vocabulary);
  suite_add_tcase(s, files);
  return s;
}

int main(void) { return tu_run_suite(tokenizer_suite()); }
