/* mi report: every head's scores, the copying heads and the top skip-trigrams. */
#include "cli.h"
#include "cmd.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

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
/* The library's progress, drawn as the bar. */
static void on_progress(size_t done, size_t total, void *user) {
  progress *p = user;
  p->total = total;
  progress_set(p, done);
}

int cmd_report(int argc, char **argv) {
  common c = {0};
  const char *model_arg = NULL, *trigrams_arg = NULL, *threshold_arg = NULL;
  int no_qk_bias = 0;
  const opt_spec spec[] = {
      OPT_MODEL(&model_arg),
      {OPT_VALUE, "--trigrams", "N", &trigrams_arg,
       "skip-trigrams to show (default 24; 0: none, which\nskips two d_vocab^2 sweeps a head)", 0},
      {OPT_SWITCH, "--no-qk-bias", NULL, &no_qk_bias, "read the QK circuits without b_Q and b_K", 0},
      {OPT_VALUE, "--copying-threshold", "X", &threshold_arg,
       "list heads whose OV copying score is above X (0.5)", 0},
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
  const char *how = no_qk_bias ? "token QK circuit W_E W_Q W_K^T W_E^T (no biases)"
                               : "token QK circuit (W_E W_Q + b_Q)(W_E W_K + b_K)^T (with biases)";

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
    for (size_t i = 0; i < n_found; i++) {
      const mi_skip_trigram *t = &tri[i];
      append(
          tris, json_pack("{s:i, s:i, s:i, s:i, s:i, s:o, s:o, s:o, s:f, s:f, s:f}", "layer",
                          (json_int_t)t->layer, "head", (json_int_t)t->head, "src",
                          (json_int_t)t->src, "dst", (json_int_t)t->dst, "out",
                          (json_int_t)t->out, "src_token", tok_json(&m, t->src), "dst_token",
                          tok_json(&m, t->dst), "out_token", tok_json(&m, t->out), "qk_z",
                          t->qk_z, "ov_z", t->ov_z, "score", t->score));
    }
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
    if (n_tri) {
      printf("\ntop %zu skip-trigrams \"src ... dst -> out\"\n"
             "  read from the %s\n"
             "  and the token OV circuit W_E W_V W_O W_U, each entry as a z-score within its row;\n"
             "  score = min(z_QK, z_OV) (mi report --help says more):\n",
             n_found, how);
      for (size_t i = 0; i < n_found; i++) {
        const mi_skip_trigram *t = &tri[i];
        char b1[32], b2[32], b3[32], line[128];
        snprintf(line, sizeof line, "%s ... %s -> %s", tok(&m, t->src, b1), tok(&m, t->dst, b2),
                 tok(&m, t->out, b3));
        printf("  L%zuH%-3zu %-36s %6.2f  (QK %.2f, OV %.2f)\n", t->layer, t->head, line,
               t->score, t->qk_z, t->ov_z);
      }
    }
  }
  free(tri);
  free(rep);
  unload(&m);
  return 0;
}
