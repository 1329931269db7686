/* mi attribute: a logit (or logit difference) split exactly into paths. */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"
#include "cmd.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char description[] =
    "Runs the model on the tokens (TEXT, or --ids) and splits the logit of token\n"
    "T at position P (minus that of T2 with --vs) exactly into paths, with\n"
    "attention patterns and LayerNorm scales frozen: the direct path, each head,\n"
    "each virtual head (a chain of heads), and the biases; the largest (by\n"
    "absolute value) first. Text is tokenized with the model's tokenizer (GPT-2's\n"
    "byte-level BPE for a tokenizer.json, or a vocab.json with merges.txt; split\n"
    "at whitespace, each word a token, for a vocab.txt), and the tokens used are\n"
    "printed. With one argument and no --ids, it is TEXT.\n";

typedef struct part {
  mi_path_source source;
  size_t source_layer, order;
  size_t layers[8], heads[8]; /* order <= n_layers <= 8 is checked before the walk */
  double value;
} part;

typedef struct parts {
  part *items;
  size_t count, cap;
} parts;

static int collect_part(const mi_attribution_part *p, void *user) {
  parts *ps = user;
  if (ps->count == ps->cap) {
    size_t cap = ps->cap ? 2 * ps->cap : 64;
    part *items = realloc(ps->items, cap * sizeof *items);
    if (!items)
      die_oom();
    ps->items = items, ps->cap = cap;
  }
  part *q = &ps->items[ps->count++];
  q->source = p->source;
  q->source_layer = p->source_layer;
  q->order = p->order;
  for (size_t i = 0; i < p->order; i++)
    q->layers[i] = p->layers[i], q->heads[i] = p->heads[i];
  q->value = p->logit_diff ? p->logit_diff[0] : p->token_logit[0];
  return 0;
}

static int by_magnitude(const void *a, const void *b) {
  double x = fabs(((const part *)a)->value), y = fabs(((const part *)b)->value);
  return (x < y) - (x > y);
}

/* A part's name: "direct", "L0H3", "L0H3 -> L1H0", "b_V via L0H1", "b_O[0] -> L1H2", "b_U + ln_final.b". */
static void part_name(char *buf, size_t size, const part *p) {
  LIB(mi_attribution_label(buf, size, p->source, p->source_layer, p->order, p->layers, p->heads),
      "naming a part");
}

static const char *source_name(mi_path_source s) {
  switch (s) {
  case MI_SOURCE_EMBED: return "embed";
  case MI_SOURCE_VALUE_BIAS: return "value_bias";
  case MI_SOURCE_OUT_BIAS: return "out_bias";
  case MI_SOURCE_UNEMBED_BIAS: return "unembed_bias";
  }
  return "?";
}

int cmd_attribute(int argc, char **argv) {
  common c = {0};
  const char *model_path = NULL, *text = NULL, *ids_a = NULL, *pos_a = NULL, *token_a = NULL,
             *vs_a = NULL, *top_a = NULL;
  int prepend_bos = 0;
  const opt_spec spec[] = {
      OPT_MODEL(&model_path),
      {OPT_ARG, "TEXT", NULL, &text, "the input text", 0},
      {OPT_VALUE, "--ids", "LIST", &ids_a, "token ids, comma-separated, instead of text", 0},
      {OPT_VALUE, "--position", "P", &pos_a, "position to explain (default: the last)", 0},
      {OPT_VALUE, "--token", "T", &token_a,
       "token whose logit is split (default: the\nmodel's top prediction)", 0},
      {OPT_VALUE, "--vs", "T2", &vs_a, "split logit(T) - logit(T2) instead", 0},
      {OPT_VALUE, "--top", "N", &top_a, "parts to show (default 15; --json gives all)", 0},
      OPT_PREPEND_BOS(&prepend_bos),
      {0}};
  const cmd_help help = {"attribute", spec, description};
  opt_parse(&c, &help, argc, argv);
  /* With --ids every argument is the model; without, the last one is the text. */
  if (ids_a) {
    if (text)
      die_usage("with --ids, the only argument is MODEL; got '%s' too", text);
  } else {
    if (!model_path)
      die_usage("give the text to explain (or --ids 1,2,3)");
    if (!text)
      text = model_path, model_path = NULL;
  }
  size_t top = top_a ? parse_size(top_a, "--top") : 15;
  loaded m;
  load(&m, &c, model_path);
  size_t n;
  if (ids_a && prepend_bos)
    die_usage("--prepend-bos applies to text; with --ids give the BOS id yourself");
  size_t *tokens = ids_a ? parse_ids(ids_a, &n, m.cfg.d_vocab)
                         : tokenize(&m, text, &n, prepend_bos);
  if (m.cfg.n_ctx && n > m.cfg.n_ctx)
    die_usage("%zu tokens: the model reads at most n_ctx = %zu", n, m.cfg.n_ctx);
  size_t position = pos_a ? parse_size(pos_a, "--position") : n - 1;
  if (position >= n)
    die_usage("--position %zu: the input has %zu tokens (0 .. %zu)", position, n, n - 1);
  if (m.cfg.n_layers > 8)
    die_usage("mi attribute handles at most 8 layers; the model has %zu", m.cfg.n_layers);

  float *logits = xcalloc(n * m.cfg.d_vocab, sizeof *logits);
  LIB(mi_model_forward(logits, m.cfg.d_vocab, m.model, tokens, n, NULL), "running the model");
  const float *row = logits + position * m.cfg.d_vocab;
  size_t target = 0;
  for (size_t j = 1; j < m.cfg.d_vocab; j++)
    if (row[j] > row[target])
      target = j;
  if (token_a)
    target = parse_token(&m, token_a, "--token");
  size_t versus = vs_a ? parse_token(&m, vs_a, "--vs") : SIZE_MAX;
  double full = (double)row[target] - (vs_a ? (double)row[versus] : 0.0);

  mi_attribution_options ao;
  mi_attribution_options_init(&ao, sizeof ao);
  ao.positions = &position;
  ao.n_positions = 1;
  ao.logit_tokens = &target;
  ao.diff_tokens = vs_a ? &versus : NULL;
  parts ps = {NULL, 0, 0};
  LIB(mi_model_attribute(NULL, m.model, tokens, n, &ao, collect_part, &ps),
      "attributing the logit at position %zu", position);
  double sum = 0;
  for (size_t i = 0; i < ps.count; i++)
    sum += ps.items[i].value;
  qsort(ps.items, ps.count, sizeof *ps.items, by_magnitude);

  char b1[32], b2[32], b3[32], name[256];
  if (c.json) {
    json_t *toks = json_array(), *arr = json_array();
    for (size_t i = 0; i < n; i++)
      append(toks, json_pack("{s:i, s:o}", "id", (json_int_t)tokens[i], "token",
                                            tok_json(&m, tokens[i])));
    for (size_t i = 0; i < ps.count; i++) {
      const part *p = &ps.items[i];
      json_t *hs = json_array();
      for (size_t t = 0; t < p->order; t++)
        append(hs, json_pack("{s:i, s:i}", "layer", (json_int_t)p->layers[t],
                                            "head", (json_int_t)p->heads[t]));
      part_name(name, sizeof name, p);
      append(arr, json_pack("{s:s, s:s, s:i, s:i, s:o, s:f}", "name", name,
                                           "source", source_name(p->source), "source_layer",
                                           (json_int_t)p->source_layer, "order",
                                           (json_int_t)p->order, "heads", hs, "value", p->value));
    }
    dump(json_pack("{s:o, s:o, s:i, s:{s:i, s:o}, s:o, s:f, s:f, s:o}", "model", model_json(&m),
                   "tokens", toks, "position", (json_int_t)position, "token", "id",
                   (json_int_t)target, "token", tok_json(&m, target), "vs",
                   vs_a ? json_pack("{s:i, s:o}", "id", (json_int_t)versus, "token",
                                    tok_json(&m, versus))
                        : json_null(),
                   "logit", full, "sum_of_parts", sum, "parts", arr));
  } else {
    print_model(&m);
    printf("\ninput: %zu tokens%s:", n, prepend_bos ? " (BOS first)" : "");
    for (size_t i = 0; i < n; i++) { /* quoted, so spaces and newlines show */
      const char *s = tok(&m, tokens[i], b1);
      fputs(" '", stdout);
      for (; *s; s++)
        if (*s == '\n' || *s == '\t' || *s == '\r' || *s == '\'' || *s == '\\')
          printf("\\%c", *s == '\n' ? 'n' : *s == '\t' ? 't' : *s == '\r' ? 'r' : *s);
        else
          putchar(*s);
      printf("'=%zu", tokens[i]);
    }
    printf("\nposition %zu (%s): logit of %s", position, tok(&m, tokens[position], b1),
           tok(&m, target, b2));
    if (vs_a)
      printf(" - logit of %s", tok(&m, versus, b3));
    printf(" = %.4f%s\n", full, token_a ? "" : " (the top prediction)");
    printf("%zu parts, summing to %.4f; largest first:\n", ps.count, sum);
    size_t shown = top < ps.count ? top : ps.count;
    for (size_t i = 0; i < shown; i++) {
      part_name(name, sizeof name, &ps.items[i]);
      printf("  %+10.4f  %s\n", ps.items[i].value, name);
    }
    if (shown < ps.count)
      printf("  ... %zu more (--top N, or --json for all)\n", ps.count - shown);
  }
  free(ps.items);
  free(logits);
  free(tokens);
  unload(&m);
  return 0;
}
