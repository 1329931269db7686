/*
 * mi: libmi's analyses from the shell.
 *
 *   mi report [MODEL]      every head's scores and its top skip-trigrams
 *   mi topk [MODEL] ...    the largest entries of a head's QK/OV or the direct circuit
 *   mi paths [MODEL]       paths through the heads, ranked by Frobenius norm
 *   mi compose [MODEL]     Q/K/V-composition scores against chance
 *   mi attribute [MODEL] "text"   the logit of a token split into paths
 *
 * Text for people by default, --json for pipelines. Exit status: 0 ok,
 * 1 libmi failed (its message on stderr), 2 the command line was wrong.
 */
#define _POSIX_C_SOURCE 200809L

#include <mi.h>

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_LIB 1
#define EXIT_USAGE 2

static const char *g_cmd = "mi"; /* "mi report" etc., for messages */

/* ------------------------------------------------------------------------ */
/* Failing                                                                  */
/* ------------------------------------------------------------------------ */

static void die_usage(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die_usage(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", g_cmd);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nTry '%s --help'.\n", g_cmd);
  exit(EXIT_USAGE);
}

/* A libmi call failed: say what we were doing, then libmi's own words. */
static void die_lib(mi_status s, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void die_lib(mi_status s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", g_cmd);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, ": %s: %s\n", mi_status_str(s), mi_last_error());
  exit(EXIT_LIB);
}

#define LIB(call, ...)                        \
  do {                                        \
    mi_status lib_s_ = (call);                \
    if (lib_s_ != MI_OK)                      \
      die_lib(lib_s_, __VA_ARGS__);           \
  } while (0)

static void die_oom(void) __attribute__((noreturn));
static void die_oom(void) {
  fprintf(stderr, "%s: out of memory\n", g_cmd);
  exit(EXIT_LIB);
}

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p)
    die_oom();
  return p;
}

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct option {
  const char *name;   /* "--layer" */
  const char **value; /* takes a value: where it goes; else NULL */
  int *flag;          /* a switch: set to 1 */
} option;

/* Options every subcommand takes. */
typedef struct common {
  int json, help, no_fast_kernels;
  const char *threads;
} common;

enum { MAX_POSITIONAL = 2 };

/*
 * Reads argv into the subcommand's options and up to `max_pos` positional
 * arguments. Unknown options, missing values and extra arguments are usage
 * errors.
 */
static size_t parse_args(int argc, char **argv, const option *opts, common *c,
                         const char **pos, size_t max_pos) {
  size_t npos = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-' || a[1] == '\0' || (a[1] >= '0' && a[1] <= '9')) {
      if (npos == max_pos)
        die_usage("unexpected argument '%s'", a);
      pos[npos++] = a;
      continue;
    }
    if (!strcmp(a, "--")) {
      for (i++; i < argc; i++) {
        if (npos == max_pos)
          die_usage("unexpected argument '%s'", argv[i]);
        pos[npos++] = argv[i];
      }
      break;
    }
    if (!strcmp(a, "--json")) { c->json = 1; continue; }
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) { c->help = 1; continue; }
    if (!strcmp(a, "--no-fast-kernels")) { c->no_fast_kernels = 1; continue; }
    if (!strcmp(a, "--threads")) {
      if (i + 1 == argc)
        die_usage("option '%s' needs a value", a);
      c->threads = argv[++i];
      continue;
    }
    const option *o = opts;
    while (o->name && strcmp(o->name, a))
      o++;
    if (!o->name)
      die_usage("unknown option '%s'", a);
    if (o->value) {
      if (i + 1 == argc)
        die_usage("option '%s' needs a value", a);
      *o->value = argv[++i];
    } else {
      *o->flag = 1;
    }
  }
  return npos;
}

/* A whole non-negative number, or a usage error naming the option. */
static size_t parse_size(const char *text, const char *what) {
  char *end;
  errno = 0;
  if (!isdigit((unsigned char)text[0])) /* strtoull would skip spaces, take signs */
    die_usage("%s must be a whole number >= 0, not '%s'", what, text);
  unsigned long long v = strtoull(text, &end, 10);
  if (*end || errno == ERANGE || v > SIZE_MAX)
    die_usage("%s must be a whole number >= 0, not '%s'", what, text);
  return (size_t)v;
}

/* ------------------------------------------------------------------------ */
/* Progress bar on a terminal                                               */
/* ------------------------------------------------------------------------ */

typedef struct progress {
  int on;
  const char *label;
  size_t total, done;
  int shown; /* last percentage drawn */
} progress;

static void progress_start(progress *p, const char *label, size_t total) {
  p->on = isatty(STDERR_FILENO) && total > 0;
  p->label = label;
  p->total = total;
  p->done = 0;
  p->shown = -1;
}

static void progress_step(progress *p) {
  if (!p->on)
    return;
  p->done++;
  int pct = (int)(100.0 * (double)p->done / (double)p->total);
  if (pct == p->shown)
    return;
  p->shown = pct;
  int width = 30, fill = pct * width / 100;
  fprintf(stderr, "\r%s [%.*s%*s] %3d%%", p->label, fill,
          "##############################", width - fill, "", pct);
  fflush(stderr);
}

static void progress_end(progress *p) {
  if (p->on)
    fprintf(stderr, "\r\033[K");
}

/* ------------------------------------------------------------------------ */
/* The model, its vocabulary and its tokens                                 */
/* ------------------------------------------------------------------------ */

typedef struct loaded {
  mi_model *model;
  mi_config cfg;
  char *path;  /* the model file */
  char *vocab; /* the vocabulary file loaded, or NULL */
} loaded;

static int is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static char *join(const char *dir, const char *name) {
  size_t n = strlen(dir) + 1 + strlen(name) + 1;
  char *p = xcalloc(n, 1);
  snprintf(p, n, "%s/%s", dir, name);
  return p;
}

/*
 * The shipped 1-layer model: the source tree's copy, else the installed one,
 * found beside this program (BINDIR/../DATADIR/mi/models, so a prefix given
 * at install time works), else under the prefix configured at build time.
 */
static char *default_model(void) {
  char *p = join(MI_SOURCE_MODELS, MI_DEFAULT_MODEL);
  if (is_file(p))
    return p;
  free(p);
  char exe[4096];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len > 0) {
    exe[len] = '\0';
    for (int up = 0; up < 2; up++) { /* drop "/mi", then "/bin" */
      char *slash = strrchr(exe, '/');
      if (slash)
        *slash = '\0';
    }
    char *dir = join(exe, MI_RELATIVE_MODELS);
    p = join(dir, MI_DEFAULT_MODEL);
    free(dir);
    if (is_file(p))
      return p;
    free(p);
  }
  p = join(MI_INSTALLED_MODELS, MI_DEFAULT_MODEL);
  if (is_file(p))
    return p;
  fprintf(stderr,
          "%s: no MODEL given, and the shipped model %s is in neither %s, PREFIX/%s beside "
          "this program, nor %s\n",
          g_cmd, MI_DEFAULT_MODEL, MI_SOURCE_MODELS, MI_RELATIVE_MODELS, MI_INSTALLED_MODELS);
  free(p);
  exit(EXIT_LIB);
}

/* Applies the common options; must run before libmi touches BLIS. */
static void setup(const common *c) {
  if (!c->no_fast_kernels)
    LIB(mi_blis_select_fast_kernels(), "selecting the fast BLIS kernels (--no-fast-kernels skips it)");
  if (c->threads)
    LIB(mi_set_num_threads(parse_size(c->threads, "--threads")), "setting --threads %s", c->threads);
}

/*
 * Loads the model (folding LayerNorm) and the first of vocab.txt,
 * tokenizer.json and vocab.json beside it; a vocab.json with the merges.txt
 * beside it, as its tokenizer.
 */
static void load(loaded *m, const char *path) {
  m->path = path ? strdup(path) : default_model();
  if (!m->path)
    die_oom();
  LIB(mi_model_load(&m->model, m->path, NULL), "cannot load model '%s'", m->path);
  mi_config_init(&m->cfg, sizeof m->cfg);
  LIB(mi_model_get_config(&m->cfg, m->model), "reading the configuration");
  char *dir = strdup(m->path);
  if (!dir)
    die_oom();
  char *slash = strrchr(dir, '/');
  if (slash)
    *slash = '\0';
  else
    strcpy(dir, ".");
  static const char *const names[] = {"vocab.txt", "tokenizer.json", "vocab.json"};
  m->vocab = NULL;
  for (size_t i = 0; i < 3 && !m->vocab; i++) {
    char *v = join(dir, names[i]), *merges = join(dir, "merges.txt");
    if (i == 2 && is_file(v) && is_file(merges)) {
      LIB(mi_model_load_tokenizer(m->model, v, merges),
          "cannot load the tokenizer beside the model");
      m->vocab = v;
    } else if (is_file(v)) {
      LIB(mi_model_load_vocab(m->model, v), "cannot load the vocabulary beside the model");
      m->vocab = v;
    } else {
      free(v);
    }
    free(merges);
  }
  free(dir);
}

static void unload(loaded *m) {
  mi_model_free(m->model);
  free(m->path);
  free(m->vocab);
}

/* A token's text for printing: its string, or "#id" without a vocabulary. */
static const char *tok(const loaded *m, size_t id, char buf[32]) {
  const char *s;
  if (m->vocab && mi_model_token_str(&s, m->model, id) == MI_OK)
    return s;
  snprintf(buf, 32, "#%zu", id);
  return buf;
}

/*
 * A token's text as JSON. GPT-2's byte-level tokens may hold part of a UTF-8
 * character, which a JSON string cannot: those bytes are written as "\\xNN".
 */
static json_t *tok_json(const loaded *m, size_t id) {
  const char *s;
  size_t len;
  if (!m->vocab || mi_model_token_bytes(&s, &len, m->model, id) != MI_OK)
    return json_null();
  json_t *text = json_stringn(s, len);
  if (text)
    return text;
  char *escaped = malloc(4 * len + 1), *e = escaped;
  if (!escaped)
    return NULL;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c < 0x7f)
      *e++ = (char)c;
    else
      e += sprintf(e, "\\x%02x", c);
  }
  *e = '\0';
  text = json_string(escaped);
  free(escaped);
  return text;
}

/* Appends `value` to `array`, or fails the command: never a silent gap. */
static void append(json_t *array, json_t *value) {
  if (!value || json_array_append_new(array, value) != 0) {
    fprintf(stderr, "%s: cannot build the JSON output\n", g_cmd);
    exit(EXIT_LIB);
  }
}

/*
 * A token given on the command line: its string in the vocabulary, else an
 * id, else text the tokenizer makes one token of, else the string with a
 * leading space (" world" for world).
 */
static size_t parse_token(const loaded *m, const char *text, const char *what) {
  size_t id, count;
  const mi_tokenizer *t;
  if (m->vocab && mi_model_token_id(&id, m->model, text) == MI_OK)
    return id;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (text[0] >= '0' && text[0] <= '9' && !*end && errno != ERANGE) {
    if (v >= m->cfg.d_vocab)
      die_usage("%s: token id %llu is past the vocabulary (d_vocab %zu)", what, v,
                m->cfg.d_vocab);
    return (size_t)v;
  }
  if (!m->vocab)
    die_usage("%s: '%s' is not a token id, and the model has no vocabulary beside it", what,
              text);
  if (mi_model_tokenizer(&t, m->model) == MI_OK &&
      mi_tokenizer_encode(&id, 1, &count, t, text, strlen(text), 0) == MI_OK && count == 1)
    return id;
  char *spaced = xcalloc(strlen(text) + 2, 1);
  spaced[0] = ' ';
  strcpy(spaced + 1, text);
  mi_status s = mi_model_token_id(&id, m->model, spaced);
  free(spaced);
  if (s == MI_OK)
    return id;
  die_usage("%s: '%s' is not in the vocabulary %s, with or without a leading space, nor "
            "text of one token", what, text, m->vocab);
}

static json_t *real_or_null(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static void dump(json_t *root) {
  if (!root || json_dumpf(root, stdout, JSON_INDENT(1) | JSON_ENSURE_ASCII) != 0) {
    fprintf(stderr, "%s: cannot build or write the JSON output\n", g_cmd);
    exit(EXIT_LIB);
  }
  fputc('\n', stdout);
  json_decref(root);
}

static json_t *model_json(const loaded *m) {
  return json_pack("{s:s, s:o, s:i, s:i, s:i, s:i, s:i, s:i, s:b}", "path", m->path, "vocab",
                   m->vocab ? json_string(m->vocab) : json_null(), "n_layers",
                   (json_int_t)m->cfg.n_layers, "n_heads", (json_int_t)m->cfg.n_heads,
                   "d_model", (json_int_t)m->cfg.d_model, "d_head", (json_int_t)m->cfg.d_head,
                   "d_vocab", (json_int_t)m->cfg.d_vocab, "n_ctx", (json_int_t)m->cfg.n_ctx,
                   "ln_folded", (mi_model_processing(m->model) & MI_PROCESS_FOLD_LN) != 0);
}

static void print_model(const loaded *m) {
  printf("model: %s\n  %zu layer%s x %zu heads, d_model %zu, d_head %zu, d_vocab %zu, n_ctx %zu%s\n",
         m->path, m->cfg.n_layers, m->cfg.n_layers == 1 ? "" : "s", m->cfg.n_heads,
         m->cfg.d_model, m->cfg.d_head, m->cfg.d_vocab, m->cfg.n_ctx,
         (mi_model_processing(m->model) & MI_PROCESS_FOLD_LN) ? "; LayerNorm folded in" : "");
  printf("vocabulary: %s\n", m->vocab ? m->vocab : "none (tokens shown as #id)");
}

/* ------------------------------------------------------------------------ */
/* mi report                                                                */
/* ------------------------------------------------------------------------ */

static const char report_help[] =
    "usage: mi report [MODEL] [--trigrams N] [--no-qk-bias] [--copying-threshold X]\n"
    "                 [--json] [--threads N] [--no-fast-kernels]\n"
    "\n"
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
    "the best N over all heads are shown.\n"
    "\n"
    "  --trigrams N             skip-trigrams to show (default 24; 0: none, which\n"
    "                           skips two d_vocab^2 sweeps a head)\n"
    "  --no-qk-bias             read the QK circuits without b_Q and b_K\n"
    "  --copying-threshold X    list heads whose OV copying score is above X (0.5)\n"
    "  --json                   print JSON instead of text\n"
    "  --threads N              BLIS threads per product (default: BLIS's own)\n"
    "  --no-fast-kernels        keep BLIS's own kernel choice\n";

enum { TRI_OUT = 2, TRI_DST = 2 };

typedef struct trigram {
  size_t layer, head, src, dst, out;
  double qk_z, ov_z, score;
} trigram;

/* Keeps the k best (index, value) of a line, best first; a is k long. */
static void keep_best(size_t *idx, double *val, size_t k, size_t i, double v) {
  if (!(v > val[k - 1]))
    return;
  size_t t = k - 1;
  while (t > 0 && v > val[t - 1]) {
    val[t] = val[t - 1];
    idx[t] = idx[t - 1];
    t--;
  }
  val[t] = v;
  idx[t] = i;
}

/*
 * Row mean and 1/standard deviation of n floats, in one pass, in double
 * (float entries of one row: no cancellation that matters for a z-score).
 * Returns 0 for a row with no spread, where no z-score exists.
 */
static int row_stats(const float *row, size_t n, double *mean, double *inv_sd) {
  double s = 0, s2 = 0;
  for (size_t j = 0; j < n; j++) {
    s += row[j];
    s2 += (double)row[j] * row[j];
  }
  *mean = s / (double)n;
  double var = s2 / (double)n - *mean * *mean;
  if (!(var > 0))
    return 0;
  *inv_sd = 1 / sqrt(var);
  return 1;
}

/*
 * A square circuit streamed in blocks of rows (mi_circuit_rows), each row
 * standardised as it is scanned.
 */
typedef struct sweep {
  size_t n;
  float *block;
  size_t block_rows;
} sweep;

static size_t blocks_of(const sweep *sw) { return (sw->n + sw->block_rows - 1) / sw->block_rows; }

/* OV: each source's best outputs other than itself. */
static void sweep_ov(const sweep *sw, const mi_circuit *ov, size_t *best, double *z,
                     progress *p) {
  size_t n = sw->n;
  for (size_t i = 0; i < n * TRI_OUT; i++)
    z[i] = -INFINITY, best[i] = SIZE_MAX;
  for (size_t i0 = 0; i0 < n; i0 += sw->block_rows) {
    size_t i1 = i0 + sw->block_rows < n ? i0 + sw->block_rows : n;
    LIB(mi_circuit_rows(sw->block, n, ov, i0, i1), "computing OV rows %zu..%zu", i0, i1);
    for (size_t s = i0; s < i1; s++) {
      const float *row = sw->block + (s - i0) * n;
      double mean, inv_sd;
      if (!row_stats(row, n, &mean, &inv_sd))
        continue;
      for (size_t o = 0; o < n; o++)
        if (o != s)
          keep_best(best + s * TRI_OUT, z + s * TRI_OUT, TRI_OUT, o, (row[o] - mean) * inv_sd);
    }
    progress_step(p);
  }
}

/*
 * QK: for each key (source) column, the query (destination) rows that rank it
 * highest, other than its own row (a token attending to itself is a bigram).
 */
static void sweep_qk(const sweep *sw, const mi_circuit *qk, size_t *best, double *z,
                     progress *p) {
  size_t n = sw->n;
  for (size_t i = 0; i < n * TRI_DST; i++)
    z[i] = -INFINITY, best[i] = SIZE_MAX;
  for (size_t i0 = 0; i0 < n; i0 += sw->block_rows) {
    size_t i1 = i0 + sw->block_rows < n ? i0 + sw->block_rows : n;
    LIB(mi_circuit_rows(sw->block, n, qk, i0, i1), "computing QK rows %zu..%zu", i0, i1);
    for (size_t d = i0; d < i1; d++) {
      const float *row = sw->block + (d - i0) * n;
      double mean, inv_sd;
      if (!row_stats(row, n, &mean, &inv_sd))
        continue;
      for (size_t s = 0; s < n; s++)
        if (s != d)
          keep_best(best + s * TRI_DST, z + s * TRI_DST, TRI_DST, d, (row[s] - mean) * inv_sd);
    }
    progress_step(p);
  }
}

static void keep_trigram(trigram *top, size_t *count, size_t cap, const trigram *t) {
  if (*count == cap && !(t->score > top[cap - 1].score))
    return;
  size_t i = *count < cap ? (*count)++ : cap - 1;
  while (i > 0 && t->score > top[i - 1].score) {
    top[i] = top[i - 1];
    i--;
  }
  top[i] = *t;
}

/* The best `cap` skip-trigrams over all heads; returns how many were found. */
static size_t find_trigrams(const loaded *m, unsigned qk_flags, trigram *top, size_t cap) {
  size_t n = m->cfg.d_vocab, count = 0;
  sweep sw = {n, NULL, 0};
  /* Blocks of at most 4 Mi floats (16 MiB), whatever the vocabulary. */
  sw.block_rows = (size_t)1 << 22;
  sw.block_rows = sw.block_rows / n ? sw.block_rows / n : 1;
  if (sw.block_rows > n)
    sw.block_rows = n;
  sw.block = xcalloc(sw.block_rows * n, sizeof(float));
  size_t *ov_best = xcalloc(n * TRI_OUT, sizeof(size_t));
  size_t *qk_best = xcalloc(n * TRI_DST, sizeof(size_t));
  double *ov_z = xcalloc(n * TRI_OUT, sizeof(double));
  double *qk_z = xcalloc(n * TRI_DST, sizeof(double));
  progress p;
  progress_start(&p, "skip-trigrams", 2 * m->cfg.n_layers * m->cfg.n_heads * blocks_of(&sw));
  for (size_t l = 0; l < m->cfg.n_layers; l++) {
    for (size_t h = 0; h < m->cfg.n_heads; h++) {
      mi_circuit *ov, *qk;
      LIB(mi_circuit_ov(&ov, m->model, l, h), "building the OV circuit of L%zuH%zu", l, h);
      LIB(mi_circuit_qk(&qk, m->model, l, h, MI_EMBED_TOKEN, MI_EMBED_TOKEN, qk_flags),
          "building the QK circuit of L%zuH%zu", l, h);
      sweep_ov(&sw, ov, ov_best, ov_z, &p);
      sweep_qk(&sw, qk, qk_best, qk_z, &p);
      mi_circuit_free(ov);
      mi_circuit_free(qk);
      for (size_t s = 0; s < n; s++)
        for (size_t a = 0; a < TRI_OUT; a++)
          for (size_t b = 0; b < TRI_DST; b++) {
            if (ov_best[s * TRI_OUT + a] == SIZE_MAX || qk_best[s * TRI_DST + b] == SIZE_MAX)
              continue;
            trigram t = {l, h, s, qk_best[s * TRI_DST + b], ov_best[s * TRI_OUT + a],
                         qk_z[s * TRI_DST + b], ov_z[s * TRI_OUT + a], 0};
            /* min rather than the sum: a triple needs both halves (on the shipped
             * 1-layer model the top 24 hold 13 of 16 planted trigrams with min,
             * 11 with the sum). */
            t.score = t.qk_z < t.ov_z ? t.qk_z : t.ov_z;
            keep_trigram(top, &count, cap, &t);
          }
    }
  }
  progress_end(&p);
  free(sw.block);
  free(ov_best);
  free(qk_best);
  free(ov_z);
  free(qk_z);
  return count;
}

static int cmd_report(int argc, char **argv) {
  common c = {0};
  const char *trigrams_arg = NULL, *threshold_arg = NULL;
  int no_qk_bias = 0;
  const option opts[] = {{"--trigrams", &trigrams_arg, NULL},
                         {"--copying-threshold", &threshold_arg, NULL},
                         {"--no-qk-bias", NULL, &no_qk_bias},
                         {NULL, NULL, NULL}};
  const char *pos[MAX_POSITIONAL];
  size_t npos = parse_args(argc, argv, opts, &c, pos, 1);
  if (c.help) {
    fputs(report_help, stdout);
    return 0;
  }
  size_t n_tri = trigrams_arg ? parse_size(trigrams_arg, "--trigrams") : 24;
  double threshold = 0.5;
  if (threshold_arg) {
    char *end;
    threshold = strtod(threshold_arg, &end);
    if (*end || !threshold_arg[0] || !isfinite(threshold))
      die_usage("--copying-threshold must be a number, not '%s'", threshold_arg);
  }
  setup(&c);
  loaded m;
  load(&m, npos ? pos[0] : NULL);

  size_t nh = m.cfg.n_layers * m.cfg.n_heads;
  unsigned qk_flags = (no_qk_bias ? 0u : MI_QK_BIAS) | MI_QK_SCALE;
  mi_report_options ro;
  mi_report_options_init(&ro, sizeof ro);
  ro.qk_flags = qk_flags;
  mi_head_report *rep = xcalloc(nh, sizeof *rep);
  rep[0].struct_size = sizeof *rep;
  LIB(mi_model_head_report(rep, nh, m.model, &ro), "computing the head report");
  trigram *tri = xcalloc(n_tri, sizeof *tri);
  size_t n_found = n_tri ? find_trigrams(&m, qk_flags, tri, n_tri) : 0;
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
      const trigram *t = &tri[i];
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
        const trigram *t = &tri[i];
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

/* ------------------------------------------------------------------------ */
/* mi topk                                                                  */
/* ------------------------------------------------------------------------ */

static const char topk_help[] =
    "usage: mi topk [MODEL] --circuit qk|ov|direct [--layer L --head H]\n"
    "               [--token T | --rows I0:I1] [-k K] [--columns] [--smallest]\n"
    "               [--no-qk-bias] [--json] [--threads N] [--no-fast-kernels]\n"
    "\n"
    "The K largest entries of each row of a circuit (with --columns: of each\n"
    "column), streamed without forming the matrix:\n"
    "  qk      head (L, H)'s token QK circuit: row = destination (query) token,\n"
    "          column = source (key) token; with b_Q, b_K and 1/sqrt(d_head)\n"
    "  ov      head (L, H)'s token OV circuit: row = source token, column = output logit\n"
    "  direct  W_E W_U: row = input token, column = output logit\n"
    "\n"
    "  --token T     one line: the token T (its string, with or without its\n"
    "                leading space, text of one token, or an id)\n"
    "  --rows I0:I1  lines I0 .. I1-1 (default: all)\n"
    "  -k K          entries a line (default 10)\n"
    "  --columns     best rows of each column instead\n"
    "  --smallest    smallest entries instead\n"
    "  --no-qk-bias  the QK circuit without b_Q and b_K\n";

static int cmd_topk(int argc, char **argv) {
  common c = {0};
  const char *layer_a = NULL, *head_a = NULL, *circ_a = NULL, *token_a = NULL, *rows_a = NULL,
             *k_a = NULL;
  int columns = 0, smallest = 0, no_qk_bias = 0;
  const option opts[] = {{"--layer", &layer_a, NULL},    {"--head", &head_a, NULL},
                         {"--circuit", &circ_a, NULL},   {"--token", &token_a, NULL},
                         {"--rows", &rows_a, NULL},      {"-k", &k_a, NULL},
                         {"--columns", NULL, &columns},  {"--smallest", NULL, &smallest},
                         {"--no-qk-bias", NULL, &no_qk_bias}, {NULL, NULL, NULL}};
  const char *pos[MAX_POSITIONAL];
  size_t npos = parse_args(argc, argv, opts, &c, pos, 1);
  if (c.help) {
    fputs(topk_help, stdout);
    return 0;
  }
  if (!circ_a)
    die_usage("--circuit qk|ov|direct is required");
  int kind = !strcmp(circ_a, "qk") ? 0 : !strcmp(circ_a, "ov") ? 1 : !strcmp(circ_a, "direct") ? 2 : -1;
  if (kind < 0)
    die_usage("--circuit must be qk, ov or direct, not '%s'", circ_a);
  if (kind != 2 && (!layer_a || !head_a))
    die_usage("--circuit %s needs --layer and --head", circ_a);
  if (token_a && rows_a)
    die_usage("give --token or --rows, not both");
  size_t k = k_a ? parse_size(k_a, "-k") : 10;
  size_t layer = layer_a ? parse_size(layer_a, "--layer") : 0;
  size_t head = head_a ? parse_size(head_a, "--head") : 0;
  size_t i0 = 0, i1 = 0;
  int have_range = 0;
  if (rows_a) {
    const char *colon = strchr(rows_a, ':');
    if (!colon)
      die_usage("--rows takes I0:I1, not '%s'", rows_a);
    char first[32];
    size_t len = (size_t)(colon - rows_a);
    if (len >= sizeof first)
      die_usage("--rows takes I0:I1, not '%s'", rows_a);
    memcpy(first, rows_a, len);
    first[len] = '\0';
    i0 = parse_size(first, "--rows start");
    i1 = parse_size(colon + 1, "--rows end");
    if (i0 >= i1)
      die_usage("--rows %s is empty: the end must be past the start", rows_a);
    have_range = 1;
  }
  setup(&c);
  loaded m;
  load(&m, npos ? pos[0] : NULL);
  if (kind != 2 && layer >= m.cfg.n_layers)
    die_usage("--layer %zu: the model has %zu layer(s)", layer, m.cfg.n_layers);
  if (kind != 2 && head >= m.cfg.n_heads)
    die_usage("--head %zu: the model has %zu heads a layer", head, m.cfg.n_heads);
  if (token_a) {
    i0 = parse_token(&m, token_a, "--token");
    i1 = i0 + 1;
    have_range = 1;
  }

  mi_circuit *circ;
  unsigned qk_flags = (no_qk_bias ? 0u : MI_QK_BIAS) | MI_QK_SCALE;
  if (kind == 0)
    LIB(mi_circuit_qk(&circ, m.model, layer, head, MI_EMBED_TOKEN, MI_EMBED_TOKEN, qk_flags),
        "building the QK circuit of L%zuH%zu", layer, head);
  else if (kind == 1)
    LIB(mi_circuit_ov(&circ, m.model, layer, head), "building the OV circuit of L%zuH%zu", layer,
        head);
  else
    LIB(mi_circuit_direct(&circ, m.model), "building the direct circuit");
  size_t rows, cols;
  LIB(mi_circuit_shape(&rows, &cols, NULL, circ), "reading the circuit's shape");
  size_t lines = columns ? cols : rows, line_len = columns ? rows : cols;
  if (!have_range)
    i0 = 0, i1 = lines;
  if (i1 > lines)
    die_usage("lines %zu..%zu: the circuit has %zu %s", i0, i1, lines, columns ? "columns" : "rows");
  if (k == 0 || k > line_len)
    die_usage("-k %zu: must be 1 .. %zu", k, line_len);
  size_t n = i1 - i0;
  size_t *idx = xcalloc(n * k, sizeof *idx);
  float *val = xcalloc(n * k, sizeof *val);
  unsigned flags = (columns ? MI_TOPK_COLUMNS : 0u) | (smallest ? MI_TOPK_SMALLEST : 0u);
  LIB(mi_circuit_topk(idx, val, k, circ, k, flags, i0, i1), "top-%zu of lines %zu..%zu", k, i0, i1);

  const char *line_name = kind == 0 ? (columns ? "source" : "destination")
                                    : (columns ? "output" : (kind == 1 ? "source" : "input"));
  if (c.json) {
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
      json_t *entries = json_array();
      for (size_t t = 0; t < k; t++)
        append(entries, json_pack("{s:i, s:o, s:f}", "index",
                                                 (json_int_t)idx[i * k + t], "token",
                                                 tok_json(&m, idx[i * k + t]), "value",
                                                 (double)val[i * k + t]));
      append(arr, json_pack("{s:i, s:o, s:o}", "line", (json_int_t)(i0 + i),
                                           "token", tok_json(&m, i0 + i), "top", entries));
    }
    dump(json_pack("{s:o, s:s, s:o, s:o, s:b, s:b, s:b, s:i, s:o}", "model", model_json(&m),
                   "circuit", circ_a, "layer", kind == 2 ? json_null() : json_integer((json_int_t)layer),
                   "head", kind == 2 ? json_null() : json_integer((json_int_t)head), "columns",
                   columns, "smallest", smallest, "qk_bias", kind == 0 && !no_qk_bias, "k",
                   (json_int_t)k, "lines", arr));
  } else {
    if (kind == 2)
      printf("direct circuit W_E W_U");
    else
      printf("%s circuit of L%zuH%zu%s", kind == 0 ? "QK" : "OV", layer, head,
             kind == 0 ? (no_qk_bias ? " (no biases, scaled)" : " (with b_Q, b_K, scaled)") : "");
    printf(": %s %zu of each %s\n", smallest ? "smallest" : "largest", k, columns ? "column" : "row");
    for (size_t i = 0; i < n; i++) {
      char b[32];
      printf("%s %s:", line_name, tok(&m, i0 + i, b));
      for (size_t t = 0; t < k; t++)
        printf(" %s (%.3g)", tok(&m, idx[i * k + t], b), (double)val[i * k + t]);
      printf("\n");
    }
  }
  free(idx);
  free(val);
  mi_circuit_free(circ);
  unload(&m);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* mi paths                                                                 */
/* ------------------------------------------------------------------------ */

static const char paths_help[] =
    "usage: mi paths [MODEL] [--order N] [--top N] [--json] [--threads N] [--no-fast-kernels]\n"
    "\n"
    "Paths from the embedding through at most N heads (default: every layer) to\n"
    "the unembedding, ranked by the Frobenius norm of their OV product\n"
    "W_E W_V1 W_O1 ... W_Vk W_Ok W_U (order 0: the direct path W_E W_U).\n"
    "\n"
    "  --order N   longest path, in heads (default: n_layers)\n"
    "  --top N     paths to show (default 10)\n";

static int cmd_paths(int argc, char **argv) {
  common c = {0};
  const char *order_a = NULL, *top_a = NULL;
  const option opts[] = {{"--order", &order_a, NULL}, {"--top", &top_a, NULL}, {NULL, NULL, NULL}};
  const char *pos[MAX_POSITIONAL];
  size_t npos = parse_args(argc, argv, opts, &c, pos, 1);
  if (c.help) {
    fputs(paths_help, stdout);
    return 0;
  }
  size_t top = top_a ? parse_size(top_a, "--top") : 10;
  if (top == 0)
    die_usage("--top must be at least 1");
  setup(&c);
  loaded m;
  load(&m, npos ? pos[0] : NULL);
  size_t L = m.cfg.n_layers;
  size_t order = order_a ? parse_size(order_a, "--order") : L;
  size_t total;
  LIB(mi_model_path_count(&total, m.model, order), "counting paths of order <= %zu", order);
  size_t *heads = xcalloc(top * (L ? L : 1), sizeof *heads);
  double *norm = xcalloc(top, sizeof *norm);
  size_t count;
  LIB(mi_model_top_paths(heads, norm, &count, top, m.model, order), "ranking paths of order <= %zu",
      order);
  if (c.json) {
    json_t *arr = json_array();
    for (size_t i = 0; i < count; i++) {
      json_t *hs = json_array();
      for (size_t l = 0; l < L; l++)
        if (heads[i * L + l] != SIZE_MAX)
          append(hs, json_pack("{s:i, s:i}", "layer", (json_int_t)l, "head",
                                              (json_int_t)heads[i * L + l]));
      append(arr, json_pack("{s:i, s:o, s:f}", "order", (json_int_t)json_array_size(hs),
                                           "heads", hs, "norm", norm[i]));
    }
    dump(json_pack("{s:o, s:i, s:i, s:o}", "model", model_json(&m), "max_order", (json_int_t)order,
                   "path_count", (json_int_t)total, "paths", arr));
  } else {
    print_model(&m);
    printf("\n%zu of %zu paths of order <= %zu, by Frobenius norm of W_E (W_V W_O)... W_U:\n", count,
           total, order);
    for (size_t i = 0; i < count; i++) {
      printf("  %3zu  %12.4g  ", i + 1, norm[i]);
      size_t k = 0;
      for (size_t l = 0; l < L; l++)
        if (heads[i * L + l] != SIZE_MAX)
          printf("%sL%zuH%zu", k++ ? " -> " : "", l, heads[i * L + l]);
      printf("%s\n", k ? "" : "direct (W_E W_U)");
    }
  }
  free(heads);
  free(norm);
  unload(&m);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* mi compose                                                               */
/* ------------------------------------------------------------------------ */

static const char compose_help[] =
    "usage: mi compose [MODEL] [--kind Q|K|V] [--top N] [--json] [--threads N] [--no-fast-kernels]\n"
    "\n"
    "Composition scores of every head with every head of a later layer\n"
    "(Elhage et al. 2021; TransformerLens's all_composition_scores):\n"
    "  Q: |W_OV1 W_QK2|_F, K: |W_OV1 W_QK2^T|_F, V: |W_OV1 W_OV2|_F, each over\n"
    "  |W_OV1|_F |W_QK2 or W_OV2|_F; next to chance: the mean score of random\n"
    "  matrices of the same shapes, its standard deviation, and z = (score - mean) / sd.\n"
    "\n"
    "  --kind Q|K|V  one kind (default: all three)\n"
    "  --top N       strongest pairs to list per kind (default 10)\n";

static int cmd_compose(int argc, char **argv) {
  common c = {0};
  const char *kind_a = NULL, *top_a = NULL;
  const option opts[] = {{"--kind", &kind_a, NULL}, {"--top", &top_a, NULL}, {NULL, NULL, NULL}};
  const char *pos[MAX_POSITIONAL];
  size_t npos = parse_args(argc, argv, opts, &c, pos, 1);
  if (c.help) {
    fputs(compose_help, stdout);
    return 0;
  }
  static const char names[] = "QKV";
  static const mi_composition kinds[] = {MI_COMPOSE_Q, MI_COMPOSE_K, MI_COMPOSE_V};
  size_t k0 = 0, k1 = 3;
  if (kind_a) {
    const char *p = kind_a[0] ? strchr(names, kind_a[0] & ~0x20) : NULL;
    if (!p || !*p || kind_a[1]) /* strchr finds the terminator too */
      die_usage("--kind must be Q, K or V, not '%s'", kind_a);
    k0 = (size_t)(p - names), k1 = k0 + 1;
  }
  size_t top = top_a ? parse_size(top_a, "--top") : 10;
  setup(&c);
  loaded m;
  load(&m, npos ? pos[0] : NULL);
  size_t L = m.cfg.n_layers, H = m.cfg.n_heads, nh = L * H;
  double base[3];
  LIB(mi_model_composition_baseline(base, m.model), "computing the chance baseline");
  double *score = xcalloc(nh * nh, sizeof *score);
  size_t *order = xcalloc(nh * nh, sizeof *order);
  json_t *jkinds = c.json ? json_object() : NULL;
  if (!c.json) {
    print_model(&m);
    printf("\nchance (random matrices of these shapes): mean %.4f, sd %.4f\n", base[0], base[1]);
    if (L < 2)
      printf("one layer: no head has a later head to compose with\n");
  }
  for (size_t k = k0; k < k1; k++) {
    LIB(mi_model_composition_scores(score, nh * nh, m.model, kinds[k]),
        "computing %c-composition scores", names[k]);
    /* Pairs (earlier, later), strongest first. */
    size_t np = 0;
    for (size_t a = 0; a < nh; a++)
      for (size_t b = 0; b < nh; b++)
        if (b / H > a / H) {
          size_t i = np++;
          while (i > 0 && score[a * nh + b] > score[order[i - 1]]) {
            order[i] = order[i - 1];
            i--;
          }
          order[i] = a * nh + b;
        }
    size_t shown = top < np ? top : np;
    if (c.json) {
      json_t *pairs = json_array(), *matrix = json_array();
      for (size_t i = 0; i < np; i++) {
        size_t a = order[i] / nh, b = order[i] % nh;
        append(
            (i < shown ? pairs : matrix),
            json_pack("{s:i, s:i, s:i, s:i, s:f, s:f}", "layer1", (json_int_t)(a / H), "head1",
                      (json_int_t)(a % H), "layer2", (json_int_t)(b / H), "head2",
                      (json_int_t)(b % H), "score", score[order[i]], "z",
                      base[1] > 0 ? (score[order[i]] - base[0]) / base[1] : 0.0));
      }
      /* Every pair, strongest first: the shown ones then the rest. */
      json_array_extend(pairs, matrix);
      json_decref(matrix);
      char key[2] = {names[k], '\0'};
      json_object_set_new(jkinds, key, json_pack("{s:o, s:i}", "pairs", pairs, "top", (json_int_t)shown));
    } else if (L >= 2) {
      printf("\n%c-composition, strongest %zu of %zu pairs:\n", names[k], shown, np);
      for (size_t i = 0; i < shown; i++) {
        size_t a = order[i] / nh, b = order[i] % nh;
        printf("  L%zuH%zu -> L%zuH%zu  %.4f  (%.1f sd above chance)\n", a / H, a % H, b / H,
               b % H, score[order[i]], base[1] > 0 ? (score[order[i]] - base[0]) / base[1] : 0.0);
      }
    }
  }
  if (c.json)
    dump(json_pack("{s:o, s:{s:f, s:f, s:f}, s:o}", "model", model_json(&m), "baseline", "mean",
                   base[0], "sd", base[1], "sem", base[2], "kinds", jkinds));
  free(score);
  free(order);
  unload(&m);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* mi attribute                                                             */
/* ------------------------------------------------------------------------ */

static const char attribute_help[] =
    "usage: mi attribute [MODEL] \"text\" [--position P] [--token T] [--vs T2] [--top N]\n"
    "       mi attribute [MODEL] --ids 1,2,3 [...]\n"
    "                    [--json] [--threads N] [--no-fast-kernels]\n"
    "\n"
    "Runs the model on the tokens and splits the logit of token T at position P\n"
    "(minus that of T2 with --vs) exactly into paths, with attention patterns\n"
    "and LayerNorm scales frozen: the direct path, each head, each virtual head\n"
    "(a chain of heads), and the biases; the largest (by absolute value) first.\n"
    "Text is tokenized with the model's tokenizer (GPT-2's byte-level BPE for a\n"
    "vocab.json + merges.txt or a tokenizer.json beside the model; split at\n"
    "whitespace, each word a token, for a vocab.txt); the tokens used are printed.\n"
    "\n"
    "  --ids LIST     token ids, comma-separated, instead of text\n"
    "  --prepend-bos  put the beginning-of-sequence token first (default: none,\n"
    "                 as in libmi's C and Python APIs; TransformerLens adds one)\n"
    "  --position P   position to explain (default: the last)\n"
    "  --token T      token whose logit is split (default: the model's top prediction)\n"
    "  --vs T2        split logit(T) - logit(T2) instead\n"
    "  --top N        parts to show (default 15; --json gives all)\n";

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

/* A part's name: "direct", "L0H3", "L0H3 -> L1H0", "b_V of L0H1", "b_O[0] -> L1H2", "b_U". */
static void part_name(char *buf, size_t size, const part *p) {
  size_t len = 0;
  switch (p->source) {
  case MI_SOURCE_EMBED: len = (size_t)snprintf(buf, size, "%s", p->order ? "" : "direct"); break;
  case MI_SOURCE_VALUE_BIAS: len = (size_t)snprintf(buf, size, "b_V via "); break;
  case MI_SOURCE_OUT_BIAS:
    len = (size_t)snprintf(buf, size, "b_O[%zu]%s", p->source_layer, p->order ? " -> " : "");
    break;
  case MI_SOURCE_UNEMBED_BIAS: len = (size_t)snprintf(buf, size, "b_U + ln_final.b"); break;
  }
  for (size_t i = 0; i < p->order && len < size; i++)
    len += (size_t)snprintf(buf + len, size - len, "%sL%zuH%zu", i ? " -> " : "", p->layers[i],
                            p->heads[i]);
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

static size_t *parse_ids(const char *list, size_t *n, size_t d_vocab) {
  size_t cap = 1;
  for (const char *p = list; *p; p++)
    cap += *p == ',';
  size_t *ids = xcalloc(cap, sizeof *ids);
  *n = 0;
  const char *p = list;
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    char buf[32];
    if (len == 0 || len >= sizeof buf)
      die_usage("--ids takes comma-separated token ids, not '%s'", list);
    memcpy(buf, p, len);
    buf[len] = '\0';
    ids[*n] = parse_size(buf, "--ids");
    if (ids[*n] >= d_vocab)
      die_usage("--ids: token id %zu is past the vocabulary (d_vocab %zu)", ids[*n], d_vocab);
    (*n)++;
    if (!comma)
      return ids;
    p = comma + 1;
  }
}

/* The text's tokens, by the model's tokenizer. */
static size_t *split_text(const loaded *m, const char *text, size_t *n, int prepend_bos) {
  if (!m->vocab)
    die_usage("the model has no vocabulary beside it: give token ids with --ids");
  const mi_tokenizer *t;
  LIB(mi_model_tokenizer(&t, m->model), "the vocabulary %s cannot tokenize text (--ids takes "
      "token ids)", m->vocab);
  size_t len = strlen(text);
  size_t *ids = xcalloc(len + 1, sizeof *ids);
  mi_status s = mi_tokenizer_encode(ids, len + 1, n, t, text, len,
                                    prepend_bos ? MI_TOKENIZE_PREPEND_BOS : 0u);
  if (s != MI_OK)
    die_usage("cannot tokenize the text with %s: %s", m->vocab, mi_last_error());
  if (*n == 0)
    die_usage("no tokens in the text");
  return ids;
}

static int cmd_attribute(int argc, char **argv) {
  common c = {0};
  const char *ids_a = NULL, *pos_a = NULL, *token_a = NULL, *vs_a = NULL, *top_a = NULL;
  int prepend_bos = 0;
  const option opts[] = {{"--ids", &ids_a, NULL},   {"--position", &pos_a, NULL},
                         {"--token", &token_a, NULL}, {"--vs", &vs_a, NULL},
                         {"--top", &top_a, NULL},   {"--prepend-bos", NULL, &prepend_bos},
                         {NULL, NULL, NULL}};
  const char *pos[MAX_POSITIONAL];
  size_t npos = parse_args(argc, argv, opts, &c, pos, 2);
  if (c.help) {
    fputs(attribute_help, stdout);
    return 0;
  }
  /* With --ids every positional is the model; without, the last one is the text. */
  const char *model_path = NULL, *text = NULL;
  if (ids_a) {
    if (npos > 1)
      die_usage("with --ids, the only argument is MODEL; got '%s' too", pos[1]);
    model_path = npos ? pos[0] : NULL;
  } else {
    if (npos == 0)
      die_usage("give the text to explain (or --ids 1,2,3)");
    text = pos[npos - 1];
    model_path = npos == 2 ? pos[0] : NULL;
  }
  size_t top = top_a ? parse_size(top_a, "--top") : 15;
  setup(&c);
  loaded m;
  load(&m, model_path);
  size_t n;
  if (ids_a && prepend_bos)
    die_usage("--prepend-bos applies to text; with --ids give the BOS id yourself");
  size_t *tokens = ids_a ? parse_ids(ids_a, &n, m.cfg.d_vocab)
                         : split_text(&m, text, &n, prepend_bos);
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

/* ------------------------------------------------------------------------ */
/* main                                                                     */
/* ------------------------------------------------------------------------ */

static const char main_help[] =
    "usage: mi COMMAND [MODEL] [options]\n"
    "\n"
    "Mechanistic interpretability of attention-only transformers (libmi %s).\n"
    "MODEL is a .safetensors file (TransformerLens or GPT-2 names); a vocab.txt or\n"
    "vocab.json beside it is loaded. Without MODEL: the shipped skip-trigram-1l model.\n"
    "LayerNorm is folded into the weights on loading.\n"
    "\n"
    "commands:\n"
    "  report     every head's copying, same-token and previous-token scores, skip-trigrams\n"
    "  topk       largest entries of a head's QK or OV circuit, or of the direct path\n"
    "  paths      paths through the heads, by Frobenius norm\n"
    "  compose    Q/K/V-composition scores against chance\n"
    "  attribute  a logit split into direct, head, virtual-head and bias parts\n"
    "\n"
    "every command takes --json, --threads N, --no-fast-kernels and --help.\n"
    "exit status: 0 ok, 1 libmi failed, 2 bad command line.\n";

int main(int argc, char **argv) {
  static const struct {
    const char *name;
    int (*run)(int, char **);
  } commands[] = {{"report", cmd_report},   {"topk", cmd_topk},         {"paths", cmd_paths},
                  {"compose", cmd_compose}, {"attribute", cmd_attribute}};
  if (argc < 2) {
    fprintf(stderr, main_help, mi_version_string());
    return EXIT_USAGE;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    printf(main_help, mi_version_string());
    return 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("mi %s\n", mi_version_string());
    return 0;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (!strcmp(argv[1], commands[i].name)) {
      static char name[32];
      snprintf(name, sizeof name, "mi %s", commands[i].name);
      g_cmd = name;
      return commands[i].run(argc - 2, argv + 2);
    }
  fprintf(stderr, "mi: unknown command '%s'\nTry 'mi --help'.\n", argv[1]);
  return EXIT_USAGE;
}
