/*
 * mi report: every head's scores and role (mi_model_head_roles), the
 * skip-trigrams above the noise floor, or with --html the same as one page
 * (mi_model_html_report).
 */
#include "cli.h"
#include "cmd.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char description[] =
    "Every head of MODEL (default: the shipped skip-trigram-1l model): its OV\n"
    "copying score (sum(l)/sum(|l|) over the token OV circuit's eigenvalues) and\n"
    "top-1 copying accuracy (share of tokens whose own logit is their OV row's\n"
    "largest), its QK same-token score (the same eigenvalue score over the token\n"
    "QK circuit, with biases), the previous-token share of its positional QK\n"
    "circuit, its attention on repeated random tokens (previous-token,\n"
    "duplicate-token, induction) and its strongest K-composition from an earlier\n"
    "head. In brackets, each score over its chance level: 1/d_vocab for top-1;\n"
    "for the positional share, random scores (mean of 1/(p+1)); for attention,\n"
    "uniform causal attention on the same sequences; z over random matrices of\n"
    "the same shapes for K-composition.\n"
    "\n"
    "Roles (one a head; the first that passes of induction, previous-token,\n"
    "duplicate-token, copying; else none):\n"
    "  previous-token   attention on t-1 >= 0.5 and >= 3x uniform, and positional\n"
    "                   QK share >= 2x chance (when the model has W_pos)\n"
    "  duplicate-token  attention on earlier copies >= 0.5 and >= 3x uniform, and\n"
    "                   QK same-token score > 0 (its chance)\n"
    "  induction        induction attention >= 0.5 and >= 3x uniform, and\n"
    "                   K-composition from an earlier head >= chance + 3 sd;\n"
    "                   listed with its previous-token partners above that\n"
    "  copying          OV copying score >= 0.5 and top-1 >= 50/d_vocab\n"
    "\n"
    "Skip-trigrams \"src ... dst -> out\" are read from each head's token QK\n"
    "circuit with the query and key biases (what attention scores) and its token\n"
    "OV circuit, each entry a z-score within its row; for each source its 2 best\n"
    "outputs (other than itself: that is copying) and the 2 other destinations\n"
    "ranking it highest give 4 triples scored min(z_QK, z_OV). Of the best N,\n"
    "those above the noise floor sqrt(2 ln(layers x heads x d_vocab^2)) are\n"
    "shown: were the z-scores standard normal noise, fewer than 0.1 entries of\n"
    "all the circuits searched would reach it.\n"
    "\n"
    "--html FILE writes one self-contained page (no network at view time) with\n"
    "the sortable head table, roles, eigenvalue plots, composition heatmaps and\n"
    "skip-trigrams; with --prompt (or --ids) every head's attention pattern and\n"
    "the logit attribution at each position (open FILE#head=L1H2&dest=7).\n";

/* The library's progress, drawn as the bar. */
static void on_progress(size_t done, size_t total, void *user) {
  progress *p = user;
  p->total = total;
  progress_set(p, done);
}

static double parse_real(const char *text, const char *what) {
  char *end;
  double x = strtod(text, &end);
  if (*end || !text[0] || !isfinite(x))
    die_usage("%s must be a number, not '%s'", what, text);
  return x;
}

/* "0.722 (7.3x)": a score and its multiple of chance, in `width` columns. */
static void cell(char *buf, size_t size, double x, double chance) {
  if (isnan(x))
    snprintf(buf, size, "-");
  else if (!isfinite(chance) || chance <= 0)
    snprintf(buf, size, "%.3f", x);
  else
    snprintf(buf, size, x / chance >= 10 ? "%.3f (%.0fx)" : "%.3f (%.1fx)", x, x / chance);
}

/* The table's columns: two header lines, right-aligned over their values. */
typedef struct column {
  const char *top, *bottom;
  int width;
} column;

static const column columns[] = {
    {"", "head", -5},
    {"", "role", -15},
    {"OV copying", "score", 10},
    {"OV top-1", "(x chance)", 12},
    {"QK same-", "token", 8},
    {"prev share", "pos. QK (x ch.)", 15},
    {"prev-token", "attn (x unif.)", 14},
    {"dup-token", "attn (x unif.)", 14},
    {"induction", "attn (x unif.)", 14},
    {"best K-comp", "score (z)", 18}};
enum { N_COLUMNS = sizeof columns / sizeof columns[0] };

/* The head column is as wide as the widest label ("L10H11" in GPT-2 small). */
static void print_cells(const char *const *text, int head_width) {
  for (size_t j = 0; j < N_COLUMNS; j++)
    printf("%s%*s", j ? "  " : "", j ? columns[j].width : -head_width, text[j]);
  printf("\n");
}

static void print_table(const mi_head_roles *r, size_t nh) {
  const char *top[N_COLUMNS], *bottom[N_COLUMNS];
  for (size_t j = 0; j < N_COLUMNS; j++)
    top[j] = columns[j].top, bottom[j] = columns[j].bottom;
  int head_width = -columns[0].width;
  for (size_t i = 0; i < nh; i++) {
    int w = snprintf(NULL, 0, "L%zuH%zu", r[i].layer, r[i].head);
    head_width = w > head_width ? w : head_width;
  }
  print_cells(top, head_width);
  print_cells(bottom, head_width);
  for (size_t i = 0; i < nh; i++) {
    char c[N_COLUMNS][64];
    const char *text[N_COLUMNS];
    snprintf(c[0], sizeof c[0], "L%zuH%zu", r[i].layer, r[i].head);
    snprintf(c[1], sizeof c[1], "%s", mi_role_name(r[i].role));
    cell(c[2], sizeof c[2], r[i].ov_copying_score, NAN);
    cell(c[3], sizeof c[3], r[i].ov_top1, r[i].ov_top1_chance);
    cell(c[4], sizeof c[4], r[i].qk_same_token, NAN);
    cell(c[5], sizeof c[5], r[i].prev_token_share, r[i].prev_token_share_chance);
    cell(c[6], sizeof c[6], r[i].prev_token_attention, r[i].prev_token_uniform);
    cell(c[7], sizeof c[7], r[i].duplicate_token_attention, r[i].duplicate_token_uniform);
    cell(c[8], sizeof c[8], r[i].induction_attention, r[i].induction_uniform);
    if (r[i].k_layer == SIZE_MAX)
      snprintf(c[9], sizeof c[9], "-");
    else
      snprintf(c[9], sizeof c[9], "L%zuH%zu %.3f (%.1f)", r[i].k_layer, r[i].k_head,
               r[i].k_score, r[i].k_z);
    for (size_t j = 0; j < N_COLUMNS; j++)
      text[j] = c[j];
    print_cells(text, head_width);
  }
}

/* One head's evidence for its role; `index` is its line, p its partners' list. */
static void print_evidence(const mi_head_roles *r, size_t index, const mi_role_partner *p,
                           size_t np) {
  switch (r->role) {
  case MI_ROLE_PREV_TOKEN:
    printf("attention on t-1 %.3f = %.1fx uniform", r->prev_token_attention,
           r->prev_token_attention / r->prev_token_uniform);
    if (isfinite(r->prev_token_share))
      printf(", positional QK share %.3f = %.1fx chance", r->prev_token_share,
             r->prev_token_share / r->prev_token_share_chance);
    break;
  case MI_ROLE_DUPLICATE_TOKEN:
    printf("attention on earlier copies %.3f = %.1fx uniform, QK same-token %.3f",
           r->duplicate_token_attention, r->duplicate_token_attention / r->duplicate_token_uniform,
           r->qk_same_token);
    break;
  case MI_ROLE_INDUCTION: {
    printf("induction attention %.3f = %.0fx uniform; K-composition with", r->induction_attention,
           r->induction_attention / r->induction_uniform);
    size_t any = 0;
    for (size_t i = 0; i < np; i++)
      if (p[i].reader == index)
        printf("%s L%zuH%zu %.3f (z %.1f)", any++ ? "," : "", p[i].layer, p[i].head, p[i].score,
               p[i].z);
    if (!any)
      printf(" no previous-token head above chance");
    printf(", strongest L%zuH%zu; copying %.3f, top-1 %.3f", r->k_layer, r->k_head,
           r->ov_copying_score, r->ov_top1);
    break;
  }
  case MI_ROLE_COPYING:
    printf("OV copying %.3f, top-1 %.3f = %.0fx chance", r->ov_copying_score, r->ov_top1,
           r->ov_top1 / r->ov_top1_chance);
    break;
  default: break;
  }
}

static void print_roles(const mi_head_roles *r, size_t nh, const mi_role_partner *p, size_t np,
                        const mi_role_options *ro) {
  printf("\nhead roles (one a head; the rule, with its chance levels: mi report --help):\n");
  static const mi_role order[] = {MI_ROLE_PREV_TOKEN, MI_ROLE_DUPLICATE_TOKEN, MI_ROLE_INDUCTION,
                                  MI_ROLE_COPYING};
  for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
    printf("  %s heads:", mi_role_name(order[k]));
    size_t n = 0;
    for (size_t i = 0; i < nh; i++) {
      if (r[i].role != order[k])
        continue;
      printf("%s\n    L%zuH%zu (", n++ ? "," : "", r[i].layer, r[i].head);
      print_evidence(&r[i], i, p, np);
      printf(")");
    }
    printf("%s\n", n ? "" : " none");
  }
  printf("  thresholds: attention >= %g and >= %gx uniform; positional share >= %gx chance;\n"
         "  K-composition >= chance + %g sd; OV copying >= %g and top-1 >= %g/d_vocab\n",
         ro->min_attention, ro->min_attention_lift, ro->min_prev_share_lift,
         ro->min_k_composition_z, ro->min_copying_score, ro->min_copying_lift);
}

/* One triple as --json lists it; above_floor when the floor is known (not NaN). */
static json_t *triple_json(const loaded *m, const mi_skip_trigram *t, double floor) {
  json_t *o = json_pack("{s:i, s:i, s:i, s:i, s:i, s:o, s:o, s:o, s:f, s:f, s:f}", "layer",
                        (json_int_t)t->layer, "head", (json_int_t)t->head, "src",
                        (json_int_t)t->src, "dst", (json_int_t)t->dst, "out",
                        (json_int_t)t->out, "src_token", tok_json(m, t->src), "dst_token",
                        tok_json(m, t->dst), "out_token", tok_json(m, t->out), "qk_z", t->qk_z,
                        "ov_z", t->ov_z, "score", t->score);
  if (o == NULL || (!isnan(floor) &&
                    json_object_set_new(o, "above_floor", json_boolean(t->score >= floor))))
    die_oom();
  return o;
}

static void print_triple_lines(const loaded *m, const mi_skip_trigram *tri, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const mi_skip_trigram *t = &tri[i];
    char b1[32], b2[32], b3[32], line[128];
    snprintf(line, sizeof line, "%s ... %s -> %s", tok(m, t->src, b1), tok(m, t->dst, b2),
             tok(m, t->out, b3));
    printf("  L%zuH%-3zu %-36s %6.2f  (QK %.2f, OV %.2f)\n", t->layer, t->head, line, t->score,
           t->qk_z, t->ov_z);
  }
}

static void print_trigrams(const loaded *m, const mi_skip_trigram *tri, size_t n_found,
                           double floor, const char *how) {
  size_t above = 0;
  while (above < n_found && tri[above].score >= floor)
    above++;
  printf("\nskip-trigrams \"src ... dst -> out\" above the noise floor %.2f\n"
         "  (sqrt(2 ln N), N = %zu x %zu x %zu^2 circuit entries searched), of the best %zu\n"
         "  read from the %s\n"
         "  and the token OV circuit W_E W_V W_O W_U, each entry as a z-score within its row;\n"
         "  score = min(z_QK, z_OV) (mi report --help says more):\n",
         floor, m->cfg.n_layers, m->cfg.n_heads, m->cfg.d_vocab, n_found, how);
  if (above == 0)
    printf("  none reaches it%s", n_found ? "" : "\n");
  if (above == 0 && n_found)
    printf(" (best: L%zuH%zu at %.2f): no skip-trigram stands out from noise\n", tri[0].layer,
           tri[0].head, tri[0].score);
  print_triple_lines(m, tri, above);
}

static const char qk_with_bias[] = "token QK circuit (W_E W_Q + b_Q)(W_E W_K + b_K)^T (with biases)",
                  qk_no_bias[] = "token QK circuit W_E W_Q W_K^T W_E^T (no biases)";

static json_t *roles_json(const mi_head_roles *r, size_t nh,
                          const mi_role_partner *p, size_t np) {
  json_t *heads = json_array(), *roles = json_object();
  if (!heads || !roles)
    die_oom();
  for (int k = 1; k < MI_ROLE_COUNT; k++)
    if (json_object_set_new(roles, mi_role_name((mi_role)k), json_array()))
      die_oom();
  for (size_t i = 0; i < nh; i++) {
    json_t *k = r[i].k_layer == SIZE_MAX
                    ? json_null()
                    : json_pack("{s:i, s:i, s:f, s:o}", "layer", (json_int_t)r[i].k_layer, "head",
                                (json_int_t)r[i].k_head, "score", r[i].k_score, "z",
                                real_or_null(r[i].k_z));
    append(heads,
           json_pack("{s:i, s:i, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, "
                     "s:o, s:o, s:o, s:o}",
                     "layer", (json_int_t)r[i].layer, "head", (json_int_t)r[i].head, "role",
                     mi_role_name(r[i].role), "ov_copying_score", real_or_null(r[i].ov_copying_score),
                     "ov_top1", real_or_null(r[i].ov_top1), "ov_top1_chance",
                     real_or_null(r[i].ov_top1_chance), "qk_same_token_score",
                     real_or_null(r[i].qk_same_token), "prev_token_share",
                     real_or_null(r[i].prev_token_share), "prev_token_share_chance",
                     real_or_null(r[i].prev_token_share_chance), "prev_token_attention",
                     real_or_null(r[i].prev_token_attention), "prev_token_uniform",
                     real_or_null(r[i].prev_token_uniform), "duplicate_token_attention",
                     real_or_null(r[i].duplicate_token_attention), "duplicate_token_uniform",
                     real_or_null(r[i].duplicate_token_uniform), "induction_attention",
                     real_or_null(r[i].induction_attention), "induction_uniform",
                     real_or_null(r[i].induction_uniform), "k_composition", k, "passed",
                     json_integer((json_int_t)r[i].passed), "k_chance",
                     real_or_null(r[i].k_chance)));
    if (r[i].role != MI_ROLE_NONE) {
      json_t *entry = json_pack("{s:i, s:i}", "layer", (json_int_t)r[i].layer, "head",
                                (json_int_t)r[i].head);
      json_t *partners = json_array();
      if (!entry || !partners)
        die_oom();
      for (size_t j = 0; j < np; j++)
        if (p[j].reader == i)
          append(partners, json_pack("{s:i, s:i, s:f, s:f}", "layer", (json_int_t)p[j].layer,
                                     "head", (json_int_t)p[j].head, "score", p[j].score, "z",
                                     p[j].z));
      if (r[i].role == MI_ROLE_INDUCTION)
        json_object_set_new(entry, "k_composition_with", partners);
      else
        json_decref(partners);
      append(json_object_get(roles, mi_role_name(r[i].role)), entry);
    }
  }
  json_t *root = json_pack("{s:o, s:o}", "heads", heads, "roles", roles);
  if (!root)
    die_oom();
  return root;
}

static int write_file(const void *data, size_t size, void *user) {
  return fwrite(data, 1, size, user) != size;
}

static void write_html(const loaded *m, const char *path, const size_t *tokens, size_t n,
                       size_t n_tri, const mi_role_options *ro) {
  FILE *f = fopen(path, "wb");
  if (!f) {
    fprintf(stderr, "%s: cannot write '%s'\n", cli_cmd, path);
    exit(EXIT_LIB);
  }
  mi_html_options ho;
  mi_html_options_init(&ho, sizeof ho);
  ho.tokens = tokens;
  ho.n_tokens = n;
  ho.trigrams = n_tri;
  ho.roles = ro;
  ho.title = m->path;
  mi_status s = mi_model_html_report(m->model, &ho, write_file, f);
  if (fclose(f) != 0 && s == MI_OK) {
    fprintf(stderr, "%s: cannot write '%s'\n", cli_cmd, path);
    exit(EXIT_LIB);
  }
  LIB(s, "writing the HTML report '%s'", path);
}

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
  double floor = NAN; /* known with the model only */
  if (model_arg) {
    load(&m, c, model_arg);
    LIB(mi_model_skip_trigram_floor(&floor, m.model), "the skip-trigram noise floor");
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
    for (size_t i = 0; i < n_found; i++)
      append(tris, triple_json(&m, &tri[i], floor));
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
    if (n_tri) {
      printf("\ntop %zu skip-trigrams \"src ... dst -> out\"\n  read from the %s\n"
             "  and the token OV circuit W_E W_V W_O W_U, each entry as a z-score within its "
             "row;\n  score = min(z_QK, z_OV) (mi report --help says more):\n", n_found, how);
      print_triple_lines(&m, tri, n_found);
    }
  }
  free(heads);
  free(tri);
  mi_sweep_free(sw);
  if (model_arg)
    unload(&m);
  return 0;
}

int cmd_report(int argc, char **argv) {
  common c = {0};
  const char *model_arg = NULL, *trigrams_arg = NULL, *copy_arg = NULL, *html = NULL,
             *prompt = NULL, *ids = NULL, *sweep_arg = NULL;
  int no_qk_bias = 0, prepend_bos = 0;
  const opt_spec spec[] = {
      OPT_MODEL(&model_arg),
      {OPT_VALUE, "--trigrams", "N", &trigrams_arg,
       "skip-trigrams to search (default 24; 0: none, which\nskips two d_vocab^2 sweeps a head); "
       "those above\nthe noise floor are shown",
       0},
      {OPT_SWITCH, "--no-qk-bias", NULL, &no_qk_bias, "read the QK circuits without b_Q and b_K", 0},
      {OPT_VALUE, "--copying-lift", "X", &copy_arg,
       "copying heads need top-1 >= X/d_vocab (default 50)", 0},
      {OPT_VALUE, "--html", "FILE", &html, "write the report as one HTML page to FILE", 0},
      {OPT_VALUE, "--from-sweep", "FILE", &sweep_arg,
       "the report a sweep file holds (mi sweep), without\nthe weights; MODEL, if given, names tokens", 0},
      {OPT_VALUE, "--prompt", "TEXT", &prompt,
       "with --html: show attention patterns and attribution\non TEXT (tokenized by the model's "
       "tokenizer)", 0},
      {OPT_VALUE, "--ids", "1,2,3", &ids, "with --html: the prompt as token ids", 0},
      OPT_PREPEND_BOS(&prepend_bos),
      {0}};
  const cmd_help help = {"report", spec, description};
  opt_parse(&c, &help, argc, argv);
  size_t n_tri = trigrams_arg ? parse_size(trigrams_arg, "--trigrams") : 24;
  if ((prompt || ids) && !html)
    die_usage("--prompt and --ids go with --html FILE");
  if (prompt && ids)
    die_usage("give the prompt once: --prompt TEXT or --ids");
  if (sweep_arg)
    return report_from_sweep(&c, sweep_arg, model_arg, n_tri);
  loaded m;
  load(&m, &c, model_arg);
  unsigned qk_flags = (no_qk_bias ? 0u : MI_QK_BIAS) | MI_QK_SCALE;
  mi_report_options rep;
  mi_report_options_init(&rep, sizeof rep);
  rep.qk_flags = qk_flags;
  mi_role_options ro;
  mi_role_options_init(&ro, sizeof ro);
  ro.report = &rep;
  if (copy_arg)
    ro.min_copying_lift = parse_real(copy_arg, "--copying-lift");

  if (html) {
    size_t n = 0, *tokens = NULL;
    if (prompt || ids)
      tokens = ids ? parse_ids(ids, &n, m.cfg.d_vocab) : tokenize(&m, prompt, &n, prepend_bos);
    write_html(&m, html, tokens, n, n_tri, &ro);
    printf("wrote %s\n", html);
    free(tokens);
    unload(&m);
    return 0;
  }

  size_t nh = m.cfg.n_layers * m.cfg.n_heads, np = 0;
  mi_head_roles *roles = xcalloc(nh, sizeof *roles);
  mi_role_partner *partners = xcalloc(nh * nh + 1, sizeof *partners);
  roles[0].struct_size = sizeof *roles;
  partners[0].struct_size = sizeof *partners;
  mi_skip_trigram *tri = xcalloc(n_tri, sizeof *tri);
  tri[0].struct_size = sizeof *tri;
  size_t n_found = 0;
  double floor;
  LIB(mi_model_skip_trigram_floor(&floor, m.model), "the skip-trigram noise floor");
  /* The search first: its OV pass gives the roles' copying accuracy, so each
   * OV circuit is streamed once. */
  double *ov_top1 = xcalloc(nh, sizeof *ov_top1);
  if (n_tri) {
    mi_skip_trigram_options to;
    mi_skip_trigram_options_init(&to, sizeof to);
    to.qk_flags = qk_flags;
    to.ov_top1 = ov_top1;
    to.ov_accuracy_count = nh;
    progress p;
    progress_start(&p, "skip-trigrams", 1);
    to.progress = on_progress;
    to.progress_user = &p;
    LIB(mi_model_skip_trigrams(tri, &n_found, n_tri, m.model, &to), "searching skip-trigrams");
    progress_end(&p);
    ro.ov_top1 = ov_top1;
    ro.ov_top1_count = nh;
  }
  LIB(mi_model_head_roles(roles, nh, partners, nh * nh + 1, &np, m.model, &ro),
      "naming the head roles");
  const char *how = no_qk_bias ? qk_no_bias : qk_with_bias;

  if (c.json) {
    json_t *root = roles_json(roles, nh, partners, np), *tris = json_array();
    for (size_t i = 0; i < n_found; i++)
      append(tris, triple_json(&m, &tri[i], floor));
    if (json_object_set_new(root, "model", model_json(&m)) ||
        json_object_set_new(root, "behaviour",
                            json_pack("{s:i, s:i, s:i}", "sequences",
                                      (json_int_t)rep.behaviour_sequences, "half_length",
                                      (json_int_t)rep.behaviour_half_length, "seed",
                                      (json_int_t)rep.behaviour_seed)) ||
        json_object_set_new(root, "skip_trigrams",
                            json_pack("{s:b, s:s, s:f, s:o}", "qk_bias", !no_qk_bias,
                                      "qk_circuit", how, "noise_floor", floor, "triples", tris)))
      die_oom();
    dump(root);
  } else {
    print_model(&m);
    /* The half length mi_report_options's 0 stands for. */
    size_t half = m.cfg.n_ctx > 0 && m.cfg.n_ctx / 2 < 32 ? m.cfg.n_ctx / 2 : 32;
    printf("behaviour: attention on %zu random sequences of 2 x %zu tokens (seed %llu)\n\n",
           rep.behaviour_sequences, half, (unsigned long long)rep.behaviour_seed);
    print_table(roles, nh);
    print_roles(roles, nh, partners, np, &ro);
    if (n_tri)
      print_trigrams(&m, tri, n_found, floor, how);
  }
  free(ov_top1);
  free(tri);
  free(partners);
  free(roles);
  unload(&m);
  return 0;
}
