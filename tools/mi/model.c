/*
 * model.c: how `mi` finds and loads a model and its vocabulary, and says
 * what it loaded; the common options that shape the run.
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
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
          cli_cmd, MI_DEFAULT_MODEL, MI_SOURCE_MODELS, MI_RELATIVE_MODELS, MI_INSTALLED_MODELS);
  free(p);
  exit(EXIT_LIB);
}

/* The index of `text` in `names` (count of them), or a usage error listing them. */
static unsigned choose(const char *text, const char *const *names, unsigned count,
                       const char *option) {
  for (unsigned i = 0; i < count; i++)
    if (!strcmp(text, names[i]))
      return i;
  die_usage("%s must be %s, %s or %s, not '%s'", option, names[0], names[1], names[2], text);
}

/* The loading options the command line asks for. */
static void load_options(mi_load_options *lo, const common *c) {
  mi_load_options_init(lo, sizeof *lo);
  if (c->n_heads) {
    lo->n_heads = parse_size(c->n_heads, "--n-heads");
    if (lo->n_heads == 0)
      die_usage("--n-heads must be at least 1");
  }
  if (c->process) {
    static const char *const names[] = {"fold", "tl", "none"};
    static const unsigned steps[] = {MI_PROCESS_FOLD_LN, MI_PROCESS_TRANSFORMERLENS, 0};
    lo->process = steps[choose(c->process, names, 3, "--process")];
  }
  if (c->positional) {
    static const char *const names[] = {"standard", "shortformer", "none"};
    static const mi_positional kinds[] = {MI_POSITIONAL_STANDARD, MI_POSITIONAL_SHORTFORMER,
                                          MI_POSITIONAL_NONE};
    lo->positional = kinds[choose(c->positional, names, 3, "--positional")];
  }
}

/* Kernels and threads; must run before libmi touches BLIS. */
static void setup(const common *c) {
  size_t threads;
  if (c->threads) {
    threads = parse_size(c->threads, "--threads");
  } else {
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    threads = online > 0 ? (size_t)online : 1;
  }
  if (!c->no_fast_kernels)
    LIB(mi_blis_select_fast_kernels(), "selecting the fast BLIS kernels (--no-fast-kernels skips it)");
  LIB(mi_set_num_threads(threads), "setting %zu threads", threads);
}

void load(loaded *m, const common *c, const char *path) {
  mi_load_options lo;
  load_options(&lo, c);
  setup(c);
  m->path = path ? strdup(path) : default_model();
  if (!m->path)
    die_oom();
  LIB(mi_model_load(&m->model, m->path, &lo), "cannot load model '%s'", m->path);
  mi_config_init(&m->cfg, sizeof m->cfg);
  LIB(mi_model_get_config(&m->cfg, m->model), "reading the configuration");
  m->vocab = NULL;
  /* A model folder brings its vocabulary; mi_model_token_str says whether one came. */
  const char *s;
  m->has_vocab = mi_model_token_str(&s, m->model, 0) != MI_ERR_STATE;
  if (m->has_vocab) {
    m->vocab = strdup(m->path);
    if (!m->vocab)
      die_oom();
    return;
  }
  /* Else a vocab.txt, tokenizer.json or vocab.json (with the merges.txt
   * beside it as its tokenizer) beside the file (or in the folder). */
  char *dir = strdup(m->path);
  if (!dir)
    die_oom();
  char *slash = strrchr(dir, '/');
  if (!is_dir(m->path)) {
    if (slash)
      *slash = '\0';
    else
      strcpy(dir, ".");
  }
  static const char *const names[] = {"vocab.txt", "tokenizer.json", "vocab.json"};
  for (size_t i = 0; i < 3 && !m->vocab; i++) {
    char *v = join(dir, names[i]), *merges = join(dir, "merges.txt");
    if (i == 2 && is_file(v) && is_file(merges)) {
      LIB(mi_model_load_tokenizer(m->model, v, merges),
          "cannot load the tokenizer beside the model");
      m->vocab = v;
      m->has_vocab = 1;
    } else if (is_file(v)) {
      LIB(mi_model_load_vocab(m->model, v), "cannot load the vocabulary beside the model");
      m->vocab = v;
      m->has_vocab = 1;
    } else {
      free(v);
    }
    free(merges);
  }
  free(dir);
}

void unload(loaded *m) {
  mi_model_free(m->model);
  free(m->path);
  free(m->vocab);
}

const char *tok(const loaded *m, size_t id, char buf[32]) {
  const char *s;
  if (m->has_vocab && mi_model_token_str(&s, m->model, id) == MI_OK)
    return s;
  snprintf(buf, 32, "#%zu", id);
  return buf;
}

/*
 * GPT-2's byte-level tokens may hold part of a UTF-8 character, which a JSON
 * string cannot: those bytes are written as "\\xNN".
 */
json_t *tok_json(const loaded *m, size_t id) {
  const char *s;
  size_t len;
  if (!m->has_vocab || mi_model_token_bytes(&s, &len, m->model, id) != MI_OK)
    return json_null();
  json_t *text = json_stringn(s, len);
  if (text)
    return text;
  char *escaped = malloc(4 * len + 1), *e = escaped;
  if (!escaped)
    return NULL;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch >= 0x20 && ch < 0x7f)
      *e++ = (char)ch;
    else
      e += sprintf(e, "\\x%02x", ch);
  }
  *e = '\0';
  text = json_string(escaped);
  free(escaped);
  return text;
}

size_t parse_token(const loaded *m, const char *text, const char *what) {
  size_t id, count;
  const mi_tokenizer *t;
  if (m->has_vocab && mi_model_token_id(&id, m->model, text) == MI_OK)
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
  if (!m->has_vocab)
    die_usage("%s: '%s' is not a token id, and the model has no vocabulary beside it", what,
              text);
  /* Text the tokenizer makes one token of, else the string with a leading space. */
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

size_t *parse_ids(const char *list, size_t *n, size_t d_vocab) {
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

/* The one place text becomes ids: the model's tokenizer. */
size_t *tokenize(const loaded *m, const char *text, size_t *n, int prepend_bos) {
  if (!m->has_vocab)
    die_usage("the model has no vocabulary beside it: give token ids with --ids");
  const mi_tokenizer *t;
  LIB(mi_model_tokenizer(&t, m->model), "the vocabulary %s cannot tokenize text (--ids takes "
      "token ids)", m->vocab);
  size_t len = strlen(text);
  size_t *ids = xcalloc(len + 1, sizeof *ids);
  if (mi_tokenizer_encode(ids, len + 1, n, t, text, len,
                          prepend_bos ? MI_TOKENIZE_PREPEND_BOS : 0u) != MI_OK)
    die_usage("cannot tokenize the text with %s: %s", m->vocab, mi_last_error());
  if (*n == 0)
    die_usage("no tokens in the text");
  return ids;
}

/* ---- what was loaded -------------------------------------------------------- */

static const char *layout_name(mi_layout layout) {
  switch (layout) {
  case MI_LAYOUT_TRANSFORMERLENS: return "TransformerLens";
  case MI_LAYOUT_GPT2: return "GPT-2";
  case MI_LAYOUT_MEMORY: return "memory";
  }
  return "unknown";
}

static const char *positional_name(mi_positional kind) {
  switch (kind) {
  case MI_POSITIONAL_STANDARD: return "standard";
  case MI_POSITIONAL_SHORTFORMER: return "shortformer";
  case MI_POSITIONAL_NONE: return "none";
  case MI_POSITIONAL_DEFAULT: break;
  }
  return "default";
}

/* "LayerNorm (ln1, ln_final)", "LayerNorm (ln1)", "no LayerNorm". */
static const char *layer_norm_name(unsigned parts) {
  unsigned ln = parts & (MI_PART_LN | MI_PART_LN_FINAL);
  return ln == (MI_PART_LN | MI_PART_LN_FINAL) ? "LayerNorm (ln1, ln_final)"
         : ln == MI_PART_LN                    ? "LayerNorm (ln1 only)"
         : ln == MI_PART_LN_FINAL              ? "LayerNorm (ln_final only)"
                                               : "no LayerNorm";
}

/*
 * The processing the weights went through. mi_model_processing reports
 * folding on a model without LayerNorm too (nothing to fold): left out here.
 */
static unsigned applied(const loaded *m) {
  unsigned steps = mi_model_processing(m->model);
  if (!(m->cfg.parts & (MI_PART_LN | MI_PART_LN_FINAL)))
    steps &= ~(unsigned)MI_PROCESS_FOLD_LN;
  return steps;
}

static const char *processing_name(unsigned steps) {
  switch (steps) {
  case 0: return "none";
  case MI_PROCESS_FOLD_LN: return "LayerNorm folded";
  case MI_PROCESS_TRANSFORMERLENS: return "TransformerLens processing";
  case MI_PROCESS_CENTER_UNEMBED: return "unembedding centred";
  case MI_PROCESS_FOLD_LN | MI_PROCESS_CENTER_UNEMBED: return "LayerNorm folded, unembedding centred";
  case MI_PROCESS_FOLD_LN | MI_PROCESS_CENTER_WRITING:
    return "LayerNorm folded, writing weights centred";
  }
  return "unknown";
}

void print_model(const loaded *m) {
  printf("model: %s\n  %zu layer%s x %zu head%s, d_model %zu, d_head %zu, d_vocab %zu, "
         "n_ctx %zu\n", m->path, m->cfg.n_layers, m->cfg.n_layers == 1 ? "" : "s",
         m->cfg.n_heads, m->cfg.n_heads == 1 ? "" : "s", m->cfg.d_model, m->cfg.d_head,
         m->cfg.d_vocab, m->cfg.n_ctx);
  printf("  %s layout, %s positional embedding, %s\n  processing: %s\n",
         layout_name(mi_model_layout(m->model)), positional_name(m->cfg.positional),
         layer_norm_name(m->cfg.parts), processing_name(applied(m)));
  printf("vocabulary: %s%s\n", m->vocab ? m->vocab : "none (tokens shown as #id)",
         m->vocab && !strcmp(m->vocab, m->path) ? " (loaded with the model)" : "");
}

json_t *model_json(const loaded *m) {
  unsigned steps = applied(m);
  return json_pack(
      "{s:s, s:o, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:s, s:{s:b, s:b}, s:s, s:b}", "path",
      m->path, "vocab", m->vocab ? json_string(m->vocab) : json_null(), "n_layers",
      (json_int_t)m->cfg.n_layers, "n_heads", (json_int_t)m->cfg.n_heads, "d_model",
      (json_int_t)m->cfg.d_model, "d_head", (json_int_t)m->cfg.d_head, "d_vocab",
      (json_int_t)m->cfg.d_vocab, "n_ctx", (json_int_t)m->cfg.n_ctx, "layout",
      layout_name(mi_model_layout(m->model)), "positional", positional_name(m->cfg.positional),
      "layer_norm", "ln1", (m->cfg.parts & MI_PART_LN) != 0, "ln_final",
      (m->cfg.parts & MI_PART_LN_FINAL) != 0, "processing", processing_name(steps), "ln_folded",
      (steps & MI_PROCESS_FOLD_LN) != 0);
}
