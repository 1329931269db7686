/*
 * behaviour.c: what heads do on real input, measured on the model's own
 * attention patterns (TransformerLens's head detector): previous-token,
 * duplicate-token and induction scores over repeated random sequences.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* splitmix64: the same sequences on every machine. */
static uint64_t next_random(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Uniform below `bound` (> 0), by rejection: no modulo bias. */
static size_t random_below(uint64_t *state, size_t bound) {
  uint64_t limit = UINT64_MAX - UINT64_MAX % (uint64_t)bound, x;
  do
    x = next_random(state);
  while (x >= limit);
  return (size_t)(x % (uint64_t)bound);
}

mi_status mi_model_repeated_tokens(size_t *out, size_t count, const mi_model *model,
                                   size_t n_sequences, size_t half, uint64_t seed) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(model);
  const mi_config *c = &model->config;
  if (n_sequences == 0 || half == 0)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "repeated tokens: %zu sequences of 2 x %zu",
                    n_sequences, half);
  size_t need;
  if (half > SIZE_MAX / 2 || !mi__mul_size(&need, n_sequences, 2 * half))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "repeated tokens: %zu x 2 x %zu overflow",
                    n_sequences, half);
  if (c->n_ctx > 0 && 2 * half > c->n_ctx)
    return mi__fail(MI_ERR_SHAPE, "repeated tokens: 2 x %zu tokens exceed n_ctx %zu", half,
                    c->n_ctx);
  if (count < need)
    return mi__fail(MI_ERR_SHAPE, "repeated tokens: out holds %zu; %zu x 2 x %zu need %zu",
                    count, n_sequences, half, need);
  uint64_t state = seed;
  for (size_t q = 0; q < n_sequences; q++) {
    size_t *seq = out + q * 2 * half;
    for (size_t t = 0; t < half; t++)
      seq[t] = seq[half + t] = random_below(&state, c->d_vocab);
  }
  return MI_OK;
}

/*
 * Adds one sequence's attention on each score's target keys to sum
 * (L·H × MI_SCORE_COUNT) and the rows where each is defined to rows[3].
 * match: n × n scratch bytes, the target keys of the score being summed.
 */
static void add_sequence(double *sum, size_t *rows, const float *patterns, size_t heads,
                         const size_t *tok, size_t n, unsigned char *match) {
  for (int kind = 0; kind < MI_SCORE_COUNT; kind++) {
    memset(match, 0, n * n);
    for (size_t t = 0; t < n; t++) {
      bool any = false;
      for (size_t s = 0; s <= t; s++) {
        bool hit = kind == MI_SCORE_PREV_TOKEN       ? s + 1 == t
                   : kind == MI_SCORE_DUPLICATE_TOKEN ? s < t && tok[s] == tok[t]
                                                      : s >= 1 && tok[s - 1] == tok[t];
        match[t * n + s] = hit;
        any |= hit;
      }
      rows[kind] += any;
    }
    for (size_t i = 0; i < heads; i++) {
      const float *p = patterns + i * n * n;
      double total = 0.0;
      for (size_t k = 0; k < n * n; k++)
        total += match[k] ? (double)p[k] : 0.0;
      sum[i * MI_SCORE_COUNT + kind] += total;
    }
  }
}

mi_status mi_model_attention_scores(double *out, size_t count, const mi_model *model,
                                    const size_t *tokens, size_t n_sequences, size_t length) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(model);
  MI_CHECK_ARG(tokens);
  const mi_config *c = &model->config;
  size_t heads = c->n_layers * c->n_heads, need, per, cells;
  if (n_sequences == 0 || length == 0)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "attention scores: %zu sequences of %zu tokens",
                    n_sequences, length);
  /* MLPs and n_ctx first: refused before allocating heads·length² floats. */
  mi_status status = mi__check_sequence_length(model, length);
  if (status != MI_OK)
    return status;
  if (!mi__mul_size(&need, heads, MI_SCORE_COUNT))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "attention scores: %zu heads overflow", heads);
  if (count < need)
    return mi__fail(MI_ERR_SHAPE, "attention scores: out holds %zu doubles; "
                    "[n_layers][n_heads][MI_SCORE_COUNT] needs %zu", count, need);
  if (!mi__mul_size(&cells, length, length) || !mi__mul_size(&per, heads, cells) ||
      per > SIZE_MAX / sizeof(float))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "attention scores: patterns of %zu tokens overflow",
                    length);
  float *patterns = malloc(per * sizeof *patterns);
  unsigned char *match = malloc(cells);
  double *sum = calloc(need, sizeof *sum);
  if (patterns == NULL || match == NULL || sum == NULL) {
    free(patterns);
    free(match);
    free(sum);
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "attention scores: %zu pattern floats", per);
  }
  size_t rows[MI_SCORE_COUNT] = {0};
  for (size_t q = 0; q < n_sequences && status == MI_OK; q++) {
    status = mi__forward_patterns(patterns, model, tokens + q * length, length);
    if (status == MI_OK)
      add_sequence(sum, rows, patterns, heads, tokens + q * length, length, match);
  }
  if (status == MI_OK)
    for (size_t i = 0; i < need; i++)
      out[i] = rows[i % MI_SCORE_COUNT] ? sum[i] / (double)rows[i % MI_SCORE_COUNT] : NAN;
  free(patterns);
  free(match);
  free(sum);
  return status;
}

/* Sequences and half length when mi_report_options leaves them at 0. */
enum { DEFAULT_HALF = 32 };

mi_status mi__head_behaviour(mi_head_report *lines, const mi_model *model,
                             const mi_report_options *options) {
  const mi_config *c = &model->config;
  size_t heads = c->n_layers * c->n_heads, half = options->behaviour_half_length;
  if (options->behaviour_sequences == 0 || (c->parts & MI_PART_MLP))
    return MI_OK;
  if (half == 0) {
    half = c->n_ctx > 0 && c->n_ctx / 2 < DEFAULT_HALF ? c->n_ctx / 2 : DEFAULT_HALF;
    if (half == 0)
      return MI_OK; /* n_ctx = 1: no sequence repeats */
  }
  size_t n = options->behaviour_sequences, count;
  if (half > SIZE_MAX / 2 || !mi__mul_size(&count, n, 2 * half) ||
      count > SIZE_MAX / sizeof(size_t) || heads > SIZE_MAX / sizeof(double) / MI_SCORE_COUNT)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "report: %zu sequences of 2 x %zu overflow", n, half);
  size_t *tokens = malloc(count * sizeof *tokens);
  double *scores = malloc(heads * MI_SCORE_COUNT * sizeof *scores);
  mi_status status = tokens && scores
                         ? mi_model_repeated_tokens(tokens, count, model, n, half,
                                                    options->behaviour_seed)
                         : mi__fail(MI_ERR_OUT_OF_MEMORY, "report: %zu tokens", count);
  if (status == MI_OK)
    status = mi_model_attention_scores(scores, heads * MI_SCORE_COUNT, model, tokens, n,
                                       2 * half);
  for (size_t i = 0; i < heads && status == MI_OK; i++) {
    lines[i].prev_token_attention = scores[i * MI_SCORE_COUNT + MI_SCORE_PREV_TOKEN];
    lines[i].duplicate_token_attention = scores[i * MI_SCORE_COUNT + MI_SCORE_DUPLICATE_TOKEN];
    lines[i].induction_attention = scores[i * MI_SCORE_COUNT + MI_SCORE_INDUCTION];
  }
  free(tokens);
  free(scores);
  return status;
}
