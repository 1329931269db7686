/* mi report: every head's scores, the copying heads and the top skip-trigrams. */
#include "cli.h"
#include "cmd.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char description[] =
    "Every head of MODEL (default: the shipped skip-trigram-1l model): its OV\n"
    "copying score (sum(l)/sum(|l|) over the token OV circuit's eigenvalues),\n"
    "its QK same-token score (the same over the token QK circuit, with biases),\n"
    "the previous-token share of its positional QK circuit, and its attention on\n"
    "repeated random tokens (previous-token, duplicate-token, induction); then\n"
    "the copying heads and the top skip-trigrams \"src ... dst -> out\".\n"
    "\n"
    "Skip-trigrams are read from each head's token QK circuit with the query and\n"
    "key biases (what attention scores) and its token OV circuit. Every entry is\n"
    "standardised within its row (z = (x - row mean) / row sd): a softmax reads a\n"
    "QK row, and the logits an OV row, only up to a constant. For each source\n"
    "token, its 2 best outputs (OV row, the source itself left out: that is\n"
    "copying) and the 2 other destination tokens whose rows rank it highest (QK\n"
    "column; a token attending to itself is a bigram, not a skip-trigram)\n"
    "give 4 triples, each scored min(z_QK, z_OV): as strong as its weaker half;\n"
    "the best N over all heads are shown.\n";
/* The triples as --json lists them. */
static void append_triples(json_t *tris, const loaded *m, const mi_skip_trigram *tri, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const mi_skip_trigram *t = &tri[i];
    append(tris, json_pack("{s:i, s:i, s:i, s:i, s:i, s:o, s:o, s:o, s:f, s:f, s:f}", "layer",
                           (json_int_t)t->layer, "head", (json_int_t)t->head, "src",
                           (json_int_t)t->src, "dst", (json_int_t)t->dst, "out",
                           (json_int_t)t->out, "src_token", tok_json(m, t->src), "dst_token",
                           tok_json(m, t->dst), "out_token", tok_json(m, t->out), "qk_z",
                           t->qk_z, "ov_z", t->ov_z, "score", t->score));
  }
}

static void print_triples(const loaded *m, const mi_skip_trigram *tri, size_t n, const char *how) {
  printf("\ntop %zu skip-trigrams \"src ... dst -> out\"\n"
         "  read from the %s\n"
         "  and the token OV circuit W_E W_V W_O W_U, each entry as a z-score within its row;\n"
         "  score = min(z_QK, z_OV) (mi report --help says more):\n",
         n, how);
  for (size_t i = 0; i < n; i++) {
    const mi_skip_trigram *t = &tri[i];
    char b1[32], b2[32], b3[32], line[128];
    snprintf(line, sizeof line, "%s ... %s -> %s", tok(m, t->src, b1), tok(m, t->dst, b2),
             tok(m, t->out, b3));
    printf("  L%zuH%-3zu %-36s %6.2f  (QK %.2f, OV %.2f)\n", t->layer, t->head, line, t->score,
           t->qk_z, t->ov_z);
  }
}

static const char qk_with_bias[] = "token QK circuit (W_E W_Q + b_Q)(W_E W_K + b_K)^T (with biases)",
                  qk_no_bias[] = "token QK circuit W_E W_Q W_K^T W_E^T (no biases)";

/* One head's line of a sweep: how often its OV and QK diagonals rank first and in the top 5. */
typedef struct sweep_head {
  size_t layer, head;
  double share[2][2]; /* [ov, qk][top-1, top-5]; NaN: not swept */
} sweep_head;

static int by_layer_head(const void *a, const void *b) {
  const sweep_head *x = a, *y = b;
  return x->layer != y->layer ? (x->layer > y->layer) - (x->layer < y->layer)
                              : (x->head > y->head) - (x->head < y->head);
}

/* The heads of a sweep file, from its diag_rank tensors; their count into *n. */
static sweep_head *sweep_heads(size_t *n, const mi_sweep *sw) {
  size_t count = mi_sweep_tensor_count(sw);
  sweep_head *heads = xcalloc(count, sizeof *heads);
  *n = 0;
  for (size_t i = 0; i < count; i++) {
    mi_sweep_tensor t;
    t.struct_size = sizeof t;
    LIB(mi_sweep_tensor_at(&t, sw, i), "reading tensor %zu of the sweep", i);
    size_t l, h;
    char kind[3];
    int used = 0;
    if (sscanf(t.name, "L%zuH%zu.%2[oqkv].diag_rank%n", &l, &h, kind, &used) != 3 ||
        t.name[used] || strcmp(t.dtype, "I32") || t.ndim != 1)
      continue;
    size_t j = 0;
    while (j < *n && !(heads[j].layer == l && heads[j].head == h))
      j++;
    if (j == *n)
      heads[(*n)++] = (sweep_head){l, h, {{NAN, NAN}, {NAN, NAN}}};
    size_t top1 = 0, top5 = 0;
    for (size_t r = 0; r < t.shape[0]; r++) {
      int32_t rank;
      memcpy(&rank, (const char *)t.data + 4 * r, 4);
      top1 += rank < 1;
      top5 += rank < 5;
    }
    int w = kind[0] == 'q';
    heads[j].share[w][0] = (double)top1 / (double)t.shape[0];
    heads[j].share[w][1] = (double)top5 / (double)t.shape[0];
  }
  qsort(heads, *n, sizeof *heads, by_layer_head);
  return heads;
}

/*
 * mi report --from-sweep FILE [MODEL]: the report a sweep holds, without the
 * model's weights; MODEL (checked against the file's digest) only names tokens.
 */
static int report_from_sweep(const common *c, const char *file, const char *model_arg,
                             size_t n_tri) {
  mi_sweep *sw;
  LIB(mi_sweep_open(&sw, file), "cannot read the sweep");
  const char *keys[] = {"model_digest", "model_shape", "options", "libmi_version"}, *val[4];
  for (size_t i = 0; i < 4; i++)
    LIB(mi_sweep_metadata(&val[i], sw, keys[i]), "reading the sweep's metadata");
  loaded m = {0};
  if (model_arg) {
    load(&m, c, model_arg);
    char digest[32];
    LIB(mi_model_digest(digest, sizeof digest, m.model), "hashing the model");
    if (strcmp(digest, val[0])) {
      fprintf(stderr, "%s: %s is model %s, but the sweep %s was made from model %s\n",
              cli_cmd, model_arg, digest, file, val[0]);
      exit(EXIT_LIB);
    }
  }
  mi_skip_trigram *tri = xcalloc(n_tri, sizeof *tri);
  tri[0].struct_size = sizeof *tri;
  size_t n_found = 0;
  if (n_tri)
    LIB(mi_sweep_skip_trigrams(tri, &n_found, n_tri, sw), "reading the skip-trigram table");
  size_t n_heads;
  sweep_head *heads = sweep_heads(&n_heads, sw);
  const char *how = strstr(val[2], "qk_bias=1") ? qk_with_bias : qk_no_bias;
  if (c->json) {
    json_t *hs = json_array(), *tris = json_array();
    for (size_t i = 0; i < n_heads; i++)
      append(hs, json_pack("{s:i, s:i, s:o, s:o, s:o, s:o}", "layer", (json_int_t)heads[i].layer,
                           "head", (json_int_t)heads[i].head, "ov_diag_top1",
                           real_or_null(heads[i].share[0][0]), "ov_diag_top5",
                           real_or_null(heads[i].share[0][1]), "qk_diag_top1",
                           real_or_null(heads[i].share[1][0]), "qk_diag_top5",
                           real_or_null(heads[i].share[1][1])));
    append_triples(tris, &m, tri, n_found);
    dump(json_pack("{s:{s:s, s:s, s:s, s:s, s:s}, s:o, s:{s:b, s:s, s:o}}", "sweep", "path",
                   file, "model_digest", val[0], "model_shape", val[1], "options", val[2],
                   "libmi_version", val[3], "heads", hs, "skip_trigrams", "qk_bias",
                   how == qk_with_bias, "qk_circuit", how, "triples", tris));
  } else {
    printf("sweep: %s\n  model %s, %s\n  %s (libmi %s)\n", file, val[0], val[1], val[2], val[3]);
    printf("\nhead   share of rows whose diagonal ranks first / in the top 5:\n"
           "         OV top-1  OV top-5  QK top-1  QK top-5\n");
    for (size_t i = 0; i < n_heads; i++) {
      printf("L%zuH%-3zu", heads[i].layer, heads[i].head);
      for (int w = 0; w < 2; w++)
        for (int t = 0; t < 2; t++)
          if (isnan(heads[i].share[w][t]))
            printf(" %9s", "-");
          else
            printf(" %9.3f", heads[i].share[w][t]);
      printf("\n");
    }
    if (n_tri)
      print_triples(&m, tri, n_found, how);
  }
  free(heads);
  free(tri);
  mi_sweep_free(sw);
  if (model_arg)
    unload(&m);
  return 0;
}

/* The library's progress, drawn as the bar. */
static void on_progress(size_t done, size_t total, void *user) {
  progress *p = user;
  p->total = total;
  progress_set(p, done);
}

int cmd_report(int argc, char **argv) {
  common c = {0};
  const char *model_arg = NULL, *trigrams_arg = NULL, *threshold_arg = NULL, *sweep_arg = NULL;
  int no_qk_bias = 0;
  const opt_spec spec[] = {
      OPT_MODEL(&model_arg),
      {OPT_VALUE, "--trigrams", "N", &trigrams_arg,
       "skip-trigrams to show (default 24; 0: none, which\nskips two d_vocab^2 sweeps a head)", 0},
      {OPT_SWITCH, "--no-qk-bias", NULL, &no_qk_bias, "read the QK circuits without b_Q and b_K", 0},
      {OPT_VALUE, "--copying-threshold", "X", &threshold_arg,
       "list heads whose OV copying score is above X (0.5)", 0},
      {OPT_VALUE, "--from-sweep", "FILE", &sweep_arg,
       "the report a sweep file holds (mi sweep), without\nthe weights; MODEL, if given, names tokens", 0},
      {0}};
  const cmd_help help = {"report", spec, description};
  opt_parse(&c, &help, argc, argv);
  size_t n_tri = trigrams_arg ? parse_size(trigrams_arg, "--trigrams") : 24;
  double threshold = 0.5;
  if (threshold_arg) {
    char *end;
    threshold = strtod(threshold_arg, &end);
    if (*end || !threshold_arg[0] || !isfinite(threshold))
      die_usage("--copying-threshold must be a number, not '%s'", threshold_arg);
  }
  if (sweep_arg)
    return report_from_sweep(&c, sweep_arg, model_arg, n_tri);
  loaded m;
  load(&m, &c, model_arg);
  size_t nh = m.cfg.n_layers * m.cfg.n_heads;
  unsigned qk_flags = (no_qk_bias ? 0u : MI_QK_BIAS) | MI_QK_SCALE;
  mi_report_options ro;
  mi_report_options_init(&ro, sizeof ro);
  ro.qk_flags = qk_flags;
  mi_head_report *rep = xcalloc(nh, sizeof *rep);
  rep[0].struct_size = sizeof *rep;
  LIB(mi_model_head_report(rep, nh, m.model, &ro), "computing the head report");
  mi_skip_trigram *tri = xcalloc(n_tri, sizeof *tri);
  tri[0].struct_size = sizeof *tri;
  size_t n_found = 0;
  if (n_tri) {
    mi_skip_trigram_options to;
    mi_skip_trigram_options_init(&to, sizeof to);
    to.qk_flags = qk_flags;
    progress p;
    progress_start(&p, "skip-trigrams", 1);
    to.progress = on_progress;
    to.progress_user = &p;
    LIB(mi_model_skip_trigrams(tri, &n_found, n_tri, m.model, &to), "searching skip-trigrams");
    progress_end(&p);
  }
  const char *how = no_qk_bias ? qk_no_bias : qk_with_bias;

  if (c.json) {
    json_t *heads = json_array(), *copying = json_array(), *tris = json_array();
    for (size_t i = 0; i < nh; i++) {
      const mi_head_report *r = &rep[i];
      append(
          heads, json_pack("{s:i, s:i, s:o, s:o, s:o, s:o, s:o, s:o}", "layer",
                           (json_int_t)r->layer, "head", (json_int_t)r->head,
                           "ov_copying_score", real_or_null(r->ov.copying_score),
                           "qk_same_token_score", real_or_null(r->qk.copying_score),
                           "prev_token_share", real_or_null(r->prev_token_share),
                           "prev_token_attention", real_or_null(r->prev_token_attention),
                           "duplicate_token_attention", real_or_null(r->duplicate_token_attention),
                           "induction_attention", real_or_null(r->induction_attention)));
      if (r->ov.copying_score > threshold)
        append(copying, json_pack("{s:i, s:i, s:f}", "layer", (json_int_t)r->layer,
                                                 "head", (json_int_t)r->head, "ov_copying_score",
                                                 r->ov.copying_score));
    }
    append_triples(tris, &m, tri, n_found);
    dump(json_pack("{s:o, s:o, s:{s:f, s:o}, s:{s:b, s:s, s:o}}", "model", model_json(&m),
                   "heads", heads, "copying_heads", "threshold", threshold, "heads", copying,
                   "skip_trigrams", "qk_bias", !no_qk_bias, "qk_circuit", how, "triples", tris));
  } else {
    print_model(&m);
    printf("\nhead   OV copying  QK same-token  prev-token share  attention on repeated tokens:\n"
           "                                (positional QK)   prev-token  dup-token  induction\n");
    for (size_t i = 0; i < nh; i++) {
      const mi_head_report *r = &rep[i];
      const double col[] = {r->ov.copying_score,     r->qk.copying_score,
                            r->prev_token_share,      r->prev_token_attention,
                            r->duplicate_token_attention, r->induction_attention};
      static const int width[] = {10, 14, 17, 12, 10, 10};
      printf("L%zuH%-3zu", r->layer, r->head);
      for (size_t j = 0; j < 6; j++) /* NaN: not measured (no W_pos, or MLPs) */
        if (isnan(col[j]))
          printf(" %*s", width[j], "-");
        else
          printf(" %*.3f", width[j], col[j]);
      printf("\n");
    }
    printf("\ncopying heads (OV copying score > %g):", threshold);
    size_t ncopy = 0;
    for (size_t i = 0; i < nh; i++)
      if (rep[i].ov.copying_score > threshold)
        printf("%s L%zuH%zu (%.3f)", ncopy++ ? "," : "", rep[i].layer, rep[i].head,
               rep[i].ov.copying_score);
    printf("%s\n", ncopy ? "" : " none");
    if (n_tri)
      print_triples(&m, tri, n_found, how);
  }
  free(tri);
  free(rep);
  unload(&m);
  return 0;
}
