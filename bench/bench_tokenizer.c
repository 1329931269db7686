/*
 * bench_tokenizer: GPT-2's byte-level BPE on a 10 MB text, libmi against the
 * reference encoder (gpt-3-encoder@1.1.4's Encoder.js under node) in the same
 * run, on the same text. Prints tokens per second of each and the ratio.
 *
 *   build/bench/bench_tokenizer [--mb N] [--repeat R] [--node PATH] [DATA_DIR]
 *
 * DATA_DIR (default tests/data/gpt2, from tools/fetch-test-data.sh) holds
 * encoder.json, vocab.bpe and Encoder.js. The text is generated (seeded):
 * sentences of Zipf-distributed pseudo-words over a 60,000-word lexicon,
 * with capitals, numbers, punctuation, contractions, newlines, indentation,
 * accented Latin, CJK and emoji, so that the per-call word cache sees the
 * repetition real text has and plenty of words it has not seen. libmi's
 * figure is the best of R single-threaded runs (encoding is one thread);
 * node's is one run of its encoding alone (read and JSON parsing excluded),
 * through tests/tokenizer/node_encode.js, which cuts the text at points
 * where the ids cannot change (see there). Both token counts must agree.
 */
#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef MI_SOURCE_DIR
#define MI_SOURCE_DIR "."
#endif

typedef struct buf {
  char *s;
  size_t len, cap;
} buf;

static void put(buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    b->cap = 2 * (b->len + n + 1);
    b->s = realloc(b->s, b->cap);
    if (b->s == NULL) {
      fprintf(stderr, "bench_tokenizer: out of memory\n");
      exit(1);
    }
  }
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t next_u64(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static double uniform(void) { return (double)(next_u64() >> 11) / 9007199254740992.0; }

enum { LEXICON = 60000 };

/* Word w of the lexicon: 1 to 4 syllables drawn from w's own seed. */
static void put_word(buf *b, size_t w) {
  static const char *const syl[] = {"the", "an", "in", "re", "con", "ter", "al", "ing",
                                    "ed", "er", "tion", "ma", "po", "li", "st", "ra",
                                    "ve", "lo", "de", "mi", "ca", "to", "ne", "sa",
                                    "pre", "un", "com", "ly", "ous", "ment", "o", "a"};
  uint64_t h = (uint64_t)w * 0x9E3779B97F4A7C15ull + 12345;
  size_t n = 1 + (size_t)(h % 4);
  for (size_t i = 0; i < n; i++) {
    h = h * 6364136223846793005ull + 1442695040888963407ull;
    puts_(b, syl[(h >> 33) % 32]);
  }
}

/* A Zipf(1) rank in [0, LEXICON) by inversion of the harmonic CDF. */
static size_t zipf(void) {
  double H = log((double)LEXICON) + 0.5772156649;
  return (size_t)fmin(LEXICON - 1, floor(exp(uniform() * H - 0.5772156649)));
}

static void make_text(buf *b, size_t bytes) {
  static const char *const extra[] = {"café", "naïve", "Zürich", "日本語", "中文", "😀",
                                      "Привет", "über", "—", "“quote”"};
  static const char *const punct[] = {",", ".", ";", ":", "!", "?", " -", "...", ")", "\""};
  static const char *const contraction[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
  while (b->len < bytes) {
    size_t words = 3 + (size_t)(uniform() * 25);
    for (size_t i = 0; i < words; i++) {
      puts_(b, i == 0 ? "" : " ");
      double u = uniform();
      if (u < 0.03) {
        char num[32];
        snprintf(num, sizeof num, "%llu", (unsigned long long)(next_u64() % 100000));
        puts_(b, num);
      } else if (u < 0.05) {
        puts_(b, extra[next_u64() % 10]);
      } else {
        size_t start = b->len;
        put_word(b, zipf());
        if (i == 0 || u < 0.1)
          b->s[start] = (char)(b->s[start] - 'a' + 'A');
        if (u > 0.97)
          puts_(b, contraction[next_u64() % 7]);
      }
      if (uniform() < 0.08)
        puts_(b, punct[next_u64() % 10]);
    }
    double u = uniform();
    puts_(b, u < 0.7 ? ". " : u < 0.9 ? ".\n" : u < 0.97 ? ".\n\n" : ":\n    ");
  }
}

/* The text as a JSON list of one string. */
static void write_json(const char *path, const buf *text) {
  FILE *f = fopen(path, "wb");
  if (f == NULL) {
    perror(path);
    exit(1);
  }
  fputs("[\"", f);
  for (size_t i = 0; i < text->len; i++) {
    unsigned char c = (unsigned char)text->s[i];
    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c < 0x20)
      fprintf(f, "\\u%04x", c);
    else
      fputc(c, f);
  }
  fputs("\"]", f);
  fclose(f);
}

int main(int argc, char **argv) {
  const char *data = MI_SOURCE_DIR "/tests/data/gpt2", *node = "node";
  size_t mb = 10, repeat = 3;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--mb") == 0 && i + 1 < argc)
      mb = (size_t)atoi(argv[++i]);
    else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
      repeat = (size_t)atoi(argv[++i]);
    else if (strcmp(argv[i], "--node") == 0 && i + 1 < argc)
      node = argv[++i];
    else if (argv[i][0] != '-')
      data = argv[i];
    else {
      fprintf(stderr, "usage: bench_tokenizer [--mb N] [--repeat R] [--node PATH] [DATA_DIR]\n");
      return 2;
    }
  }
  char vocab[1024], merges[1024], encoder_js[1024];
  snprintf(vocab, sizeof vocab, "%s/encoder.json", data);
  snprintf(merges, sizeof merges, "%s/vocab.bpe", data);
  snprintf(encoder_js, sizeof encoder_js, "%s/Encoder.js", data);
  mi_tokenizer *tok;
  double t0 = bench_now();
  bench_check(mi_tokenizer_load(&tok, vocab, merges), "mi_tokenizer_load");
  printf("load: %.3f s (encoder.json + vocab.bpe)\n", bench_now() - t0);

  buf text = {0};
  make_text(&text, mb << 20);
  printf("text: %zu bytes, generated (seeded)\n", text.len);
  size_t *ids = malloc((text.len + 1) * sizeof *ids), count = 0;
  if (ids == NULL)
    return 1;
  double best = INFINITY;
  for (size_t r = 0; r < repeat; r++) {
    t0 = bench_now();
    bench_check(mi_tokenizer_encode(ids, text.len + 1, &count, tok, text.s, text.len, 0),
                "mi_tokenizer_encode");
    best = fmin(best, bench_now() - t0);
  }
  printf("libmi: %zu tokens in %.3f s: %.3g tokens/s, %.1f MB/s (best of %zu, one thread)\n",
         count, best, count / best, text.len / best / 1e6, repeat);

  const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  char in[1024], out[1024], cmd[4096];
  snprintf(in, sizeof in, "%s/bench_tokenizer_%ld_in.json", tmp, (long)getpid());
  snprintf(out, sizeof out, "%s/bench_tokenizer_%ld_out.json", tmp, (long)getpid());
  write_json(in, &text);
  snprintf(cmd, sizeof cmd, "'%s' '%s/tests/tokenizer/node_encode.js' --time '%s' '%s' '%s'",
           node, MI_SOURCE_DIR, encoder_js, in, out);
  int rc = system(cmd);
  double node_seconds = 0;
  unsigned long long node_tokens = 0;
  FILE *f = rc == 0 ? fopen(out, "r") : NULL;
  if (f == NULL || fscanf(f, "[%lf,%llu]", &node_seconds, &node_tokens) != 2) {
    fprintf(stderr, "bench_tokenizer: the node reference failed (%s)\n", cmd);
    return 1;
  }
  fclose(f);
  remove(in);
  remove(out);
  printf("node (gpt-3-encoder Encoder.js): %llu tokens in %.3f s: %.3g tokens/s\n", node_tokens,
         node_seconds, node_tokens / node_seconds);
  if (node_tokens != count) {
    fprintf(stderr, "bench_tokenizer: token counts differ (libmi %zu, node %llu)\n", count,
            node_tokens);
    return 1;
  }
  printf("ratio: libmi is %.1fx the reference encoder's throughput\n",
         (count / best) / (node_tokens / node_seconds));
  free(ids);
  free(text.s);
  mi_tokenizer_free(tok);
  return 0;
}
