/*
 * sweep.c: whole-circuit sweeps cut into units (one circuit × a range of
 * rows), each unit a safetensors file of its own, merged into one results
 * file; and the reader of those files. The row scans rank as trigrams.c's
 * and the pairing is its own, so a sweep's skip-trigram table has
 * mi_model_skip_trigrams's triples; its z-scores come from the dense
 * float32 entries, the search's from closed-form statistics (to rounding).
 */
#define _POSIX_C_SOURCE 200809L

#include "loader.h"
#include "trigrams.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- one pass over rows: mi_circuit_row_summary ------------------------------ */

/* What the threads share while one block of rows (b0 .. b0 + rows) is scanned. */
typedef struct summary_scan {
  const mi_row_summary *o;
  const float *block; /* rows × m, row-major */
  size_t m, i0, b0, rows;
  const float *threshold; /* per unit row: diag_ranks' comparison value */
  double *topk_val, *col_val; /* double copies of the kept values (mi__keep_best's) */
  double *mean, *inv_sd;      /* per block row */
  bool *spread;
} summary_scan;

typedef struct summary_job {
  const summary_scan *s;
  size_t from, to;
} summary_job;

/* Rows from..to of the block: statistics, top-k, diagonal rank, z-ranks. */
static void *summary_rows(void *arg) {
  const summary_job *j = arg;
  const summary_scan *s = j->s;
  const mi_row_summary *o = s->o;
  size_t m = s->m;
  for (size_t r = j->from; r < j->to; r++) {
    const float *x = s->block + r * m;
    size_t row = s->b0 + r, t = row - s->i0;
    double sd;
    s->spread[r] = mi__row_stats(x, m, &s->mean[r], &s->inv_sd[r], &sd);
    if (o->row_mean)
      o->row_mean[t] = s->mean[r];
    if (o->row_std)
      o->row_std[t] = sd;
    if (o->topk_index)
      for (size_t c = 0; c < m; c++)
        mi__offer(o->topk_index + t * o->k, s->topk_val + t * o->k, o->k, c, x[c]);
    if (o->diag_rank) {
      float d = s->threshold[t];
      size_t greater = 0;
      for (size_t c = 0; c < m; c++)
        greater += x[c] > d;
      o->diag_rank[t] = isnan(d) ? m : greater - (x[row] > d);
    }
    if (o->row_z_index && s->spread[r])
      for (size_t c = 0; c < m; c++)
        if (c != row)
          mi__offer(o->row_z_index + t * o->k_row_z, o->row_z + t * o->k_row_z,
                        o->k_row_z, c, (x[c] - s->mean[r]) * s->inv_sd[r]);
  }
  return NULL;
}

/* Columns from..to over every row of the block, in row order: one writer
 * per column, so its ranks see rows as a serial scan would. */
static void *summary_cols(void *arg) {
  const summary_job *j = arg;
  const summary_scan *s = j->s;
  const mi_row_summary *o = s->o;
  for (size_t r = 0; r < s->rows; r++) {
    const float *x = s->block + r * s->m;
    size_t row = s->b0 + r;
    if (o->col_index)
      for (size_t c = j->from; c < j->to; c++)
        mi__offer(o->col_index + c * o->k_columns, s->col_val + c * o->k_columns,
                      o->k_columns, row, x[c]);
    if (o->col_z_index && s->spread[r])
      for (size_t c = j->from; c < j->to; c++)
        if (c != row)
          mi__offer(o->col_z_index + c * o->k_col_z, o->col_z + c * o->k_col_z,
                        o->k_col_z, row, (x[c] - s->mean[r]) * s->inv_sd[r]);
  }
  return NULL;
}

static void split_run(void *(*worker)(void *), const summary_scan *s, size_t length,
                      size_t threads, summary_job *jobs) {
  if (threads > length)
    threads = length;
  for (size_t t = 0; t < threads; t++)
    jobs[t] = (summary_job){s, length * t / threads, length * (t + 1) / threads};
  mi__run_threads(worker, jobs, sizeof jobs[0], threads);
}

static void ranks_clear(size_t *index, double *value, size_t count) {
  for (size_t i = 0; i < count; i++)
    index[i] = SIZE_MAX, value[i] = -INFINITY;
}

/* A count ≥ 1 with exactly one of its buffers is a mistake; with none, nothing. */
static mi_status check_pair(bool *want, size_t count, const void *a, const void *b,
                            const char *what) {
  *want = count > 0 && (a || b);
  if (*want && !(a && b))
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "row summary: %s is %zu but only one of its two buffers is given", what,
                    count);
  return MI_OK;
}

static mi_status summary_check(mi_row_summary *o, size_t n, size_t m, size_t i0, size_t i1) {
  bool want[4];
  mi_status status = check_pair(&want[0], o->k, o->topk_index, o->topk_value, "k");
  if (status == MI_OK)
    status = check_pair(&want[1], o->k_columns, o->col_index, o->col_value, "k_columns");
  if (status == MI_OK)
    status = check_pair(&want[2], o->k_row_z, o->row_z_index, o->row_z, "k_row_z");
  if (status == MI_OK)
    status = check_pair(&want[3], o->k_col_z, o->col_z_index, o->col_z, "k_col_z");
  if (status != MI_OK)
    return status;
  if (!want[0])
    o->topk_index = NULL;
  if (!want[1])
    o->col_index = NULL;
  if (!want[2])
    o->row_z_index = NULL;
  if (!want[3])
    o->col_z_index = NULL;
  if (i0 >= i1 || i1 > n)
    return mi__fail(MI_ERR_INDEX, "row summary: rows %zu..%zu of a %zu x %zu circuit", i0,
                    i1, n, m);
  if (n != m && (o->diag_rank || o->row_z_index || o->col_z_index))
    return mi__fail(MI_ERR_SHAPE, "row summary: diagonal ranks and z-ranks need a square "
                    "circuit, not %zu x %zu", n, m);
  size_t a, b;
  if (!mi__mul_size(&a, i1 - i0, o->k) || !mi__mul_size(&a, a, sizeof(double)) ||
      !mi__mul_size(&b, m, o->k_columns) || !mi__mul_size(&b, b, sizeof(double)))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "row summary: ranks of %zu rows and %zu columns "
                    "overflow size_t", i1 - i0, m);
  return MI_OK;
}

mi_status mi_circuit_row_summary(mi_row_summary *out, const mi_circuit *circuit, size_t i0,
                                 size_t i1) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(circuit);
  mi_row_summary o = {0};
  mi_status status = mi__struct_in(&o, sizeof o, out, "mi_row_summary");
  if (status != MI_OK)
    return status;
  size_t n, m;
  mi_circuit_shape(&n, &m, NULL, circuit);
  status = summary_check(&o, n, m, i0, i1);
  if (status == MI_OK)
    status = mi__blis_begin();
  if (status != MI_OK)
    return status;
  size_t r = i1 - i0, block_rows = ((size_t)1 << 22) / m ? ((size_t)1 << 22) / m : 1;
  if (block_rows > r)
    block_rows = r;
  size_t threads = mi__thread_count();
  if (threads > MI__MAX_THREADS)
    threads = MI__MAX_THREADS;
  float *block = malloc(block_rows * m * sizeof *block);
  float *threshold = o.diag_rank ? malloc(r * sizeof *threshold) : NULL;
  double *topk_val = o.topk_index ? malloc(r * o.k * sizeof *topk_val) : NULL;
  double *col_val = o.col_index ? malloc(m * o.k_columns * sizeof *col_val) : NULL;
  double *stats = malloc(2 * block_rows * sizeof *stats);
  bool *spread = malloc(block_rows * sizeof *spread);
  summary_job *jobs = malloc(threads * sizeof *jobs);
  if (!block || (o.diag_rank && !threshold) || (o.topk_index && !topk_val) ||
      (o.col_index && !col_val) || !stats || !spread || !jobs)
    status = mi__fail(MI_ERR_OUT_OF_MEMORY, "row summary: a block of %zu x %zu floats and "
                      "ranks of %zu rows", block_rows, m, r);
  if (status == MI_OK && o.diag_rank)
    status = mi__diag_thresholds(threshold, circuit, i0, i1);
  if (status == MI_OK) {
    if (o.topk_index)
      ranks_clear(o.topk_index, topk_val, r * o.k);
    if (o.col_index)
      ranks_clear(o.col_index, col_val, m * o.k_columns);
    if (o.row_z_index)
      ranks_clear(o.row_z_index, o.row_z, r * o.k_row_z);
    if (o.col_z_index)
      ranks_clear(o.col_z_index, o.col_z, m * o.k_col_z);
  }
  for (size_t b0 = i0; b0 < i1 && status == MI_OK; b0 += block_rows) {
    size_t b1 = b0 + block_rows < i1 ? b0 + block_rows : i1;
    status = mi_circuit_rows(block, m, circuit, b0, b1);
    if (status != MI_OK)
      break;
    summary_scan s = {&o,      block,   m,     i0,    b0,   b1 - b0, threshold,
                      topk_val, col_val, stats, stats + block_rows, spread};
    split_run(summary_rows, &s, s.rows, threads, jobs);
    if (o.col_index || o.col_z_index)
      split_run(summary_cols, &s, m, threads, jobs);
  }
  if (status == MI_OK) {
    for (size_t t = 0; o.topk_index && t < r * o.k; t++)
      o.topk_value[t] = (float)topk_val[t];
    for (size_t t = 0; o.col_index && t < m * o.k_columns; t++)
      o.col_value[t] = (float)col_val[t];
  }
  free(block);
  free(threshold);
  free(topk_val);
  free(col_val);
  free(stats);
  free(spread);
  free(jobs);
  return status;
}

/* ---- the model's identity ------------------------------------------------------ */

static const uint64_t fnv_offset = 14695981039346656037ull, fnv_prime = 1099511628211ull;

static uint64_t fnv_word(uint64_t h, uint64_t word) {
  for (int b = 0; b < 8; b++)
    h = (h ^ ((word >> (8 * b)) & 0xff)) * fnv_prime;
  return h;
}

static uint64_t fnv_floats(uint64_t h, const float *x, size_t count) {
  for (size_t i = 0; i < count; i++) {
    uint32_t bits;
    memcpy(&bits, &x[i], sizeof bits);
    for (int b = 0; b < 4; b++)
      h = (h ^ ((bits >> (8 * b)) & 0xff)) * fnv_prime;
  }
  return h;
}

mi_status mi_model_digest(char *out, size_t size, const mi_model *model) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(model);
  if (size < 25)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "model digest: %zu bytes; 25 are needed", size);
  const mi_config *c = &model->config;
  const size_t shape[] = {c->n_layers, c->n_heads, c->n_kv_heads, c->d_model, c->d_head,
                          c->d_vocab,  c->n_ctx,   (size_t)c->positional, c->parts,
                          model->processing};
  uint64_t h = fnv_offset;
  for (size_t i = 0; i < sizeof shape / sizeof shape[0]; i++)
    h = fnv_word(h, shape[i]);
  for (int w = 0; w < MI_WEIGHT_COUNT; w++) {
    mi__weight_geometry g = mi__weight_geometry_of(c, (mi_weight)w);
    h = fnv_word(h, model->w[w] != NULL);
    if (model->w[w])
      h = fnv_floats(h, model->w[w], g.rows * g.cols * g.copies);
  }
  size_t pos = c->n_layers * c->n_ctx * c->d_head;
  h = fnv_word(h, model->pos_q != NULL);
  if (model->pos_q)
    h = fnv_floats(h, model->pos_q, pos * c->n_heads);
  if (model->pos_k)
    h = fnv_floats(h, model->pos_k, pos * c->n_kv_heads);
  snprintf(out, size, "fnv1a64:%016llx", (unsigned long long)h);
  return MI_OK;
}

/* ---- plans --------------------------------------------------------------------- */

void mi_sweep_options_init(mi_sweep_options *out, size_t struct_size) {
  const mi_sweep_options defaults = {.struct_size = sizeof defaults,
                                     .circuits = MI_SWEEP_OV | MI_SWEEP_QK,
                                     .qk_flags = MI_QK_BIAS | MI_QK_SCALE,
                                     .k = 10,
                                     .outputs_per_source = 2,
                                     .destinations_per_source = 2,
                                     .trigrams = 1000,
                                     .unit_rows = 4096};
  mi__struct_init(out, struct_size, &defaults, sizeof defaults);
}

typedef enum target_kind { T_OV, T_QK, T_DIRECT, T_KCOMP } target_kind;

/* One circuit of the sweep, cut into units first_unit .. first_unit + n_units. */
typedef struct target {
  target_kind kind;
  size_t layer, head, layer2, head2;
  char *prefix; /* "L0H1.ov": its tensors' names in the results file start so */
  size_t first_unit, n_units;
} target;

typedef struct unit {
  size_t target, i0, i1;
  char *name; /* "L0H1.ov.rows-0-4096" */
} unit;

/* The metadata every file of a plan carries, in this order. */
enum { M_FORMAT, M_VERSION, M_DIGEST, M_SHAPE, M_OPTIONS, M_HEADS, M_KCOMP, M_COUNT };
static const char *const meta_keys[M_COUNT] = {"format", "libmi_version", "model_digest",
                                               "model_shape", "options", "heads",
                                               "k_composition"};
static const char format_name[] = "libmi-sweep/1";

struct mi_sweep_plan {
  mi_model *model; /* a reference held */
  mi_sweep_options opt;
  size_t n; /* d_vocab: every circuit of a sweep is n × n */
  target *targets;
  size_t n_targets;
  unit *units;
  size_t n_units;
  char *meta[M_COUNT];
};

/*
 * The tensors of a target, per unit file and in the results file: `along`
 * ROWS holds a line per row of the unit (concatenated at the merge), COLS a
 * line per column (the unit's partial ranks, merged with `partner`, the
 * other half of the (index, value) pair). 8-byte fields come first, so that
 * every tensor is aligned to its element size (the header is padded to 8).
 */
enum { ROWS, COLS };
enum { W_ONE, W_K, W_KC, W_OUT, W_DST };
enum { F_MEAN, F_STD, F_OUT_Z, F_DST_Z, F_TOPK_I, F_TOPK_V, F_DIAG, F_COL_I, F_COL_V, F_OUT_I,
       F_DST_I, F_COUNT };
typedef struct field {
  const char *name, *dtype;
  size_t item;
  int along, width, kinds, partner;
} field;
#define K_ALL (1 << T_OV | 1 << T_QK | 1 << T_DIRECT | 1 << T_KCOMP)
static const field fields[F_COUNT] = {
    [F_MEAN] = {"row_mean", "F64", 8, ROWS, W_ONE, K_ALL, -1},
    [F_STD] = {"row_std", "F64", 8, ROWS, W_ONE, K_ALL, -1},
    [F_OUT_Z] = {"trigram_out_z", "F64", 8, ROWS, W_OUT, 1 << T_OV, -1},
    [F_DST_Z] = {"trigram_dst_z", "F64", 8, COLS, W_DST, 1 << T_QK, F_DST_I},
    [F_TOPK_I] = {"topk_index", "I32", 4, ROWS, W_K, K_ALL, -1},
    [F_TOPK_V] = {"topk_value", "F32", 4, ROWS, W_K, K_ALL, -1},
    [F_DIAG] = {"diag_rank", "I32", 4, ROWS, W_ONE, K_ALL, -1},
    [F_COL_I] = {"col_topk_index", "I32", 4, COLS, W_KC, K_ALL, F_COL_V},
    [F_COL_V] = {"col_topk_value", "F32", 4, COLS, W_KC, K_ALL, F_COL_I},
    [F_OUT_I] = {"trigram_out_index", "I32", 4, ROWS, W_OUT, 1 << T_OV, -1},
    [F_DST_I] = {"trigram_dst_index", "I32", 4, COLS, W_DST, 1 << T_QK, F_DST_Z},
};

/* Entries a line of field f holds in this plan (0: a 1-D tensor). */
static size_t field_width(const mi_sweep_plan *p, int f) {
  switch (fields[f].width) {
  case W_K: return p->opt.k;
  case W_KC: return p->opt.k_columns;
  case W_OUT: return p->opt.outputs_per_source;
  case W_DST: return p->opt.destinations_per_source;
  }
  return 0;
}

static bool field_present(const mi_sweep_plan *p, const target *t, int f) {
  return (fields[f].kinds & (1 << t->kind)) && (fields[f].width == W_ONE || field_width(p, f));
}

/* Lines of field f in a unit of `rows` rows. */
static size_t field_lines(const mi_sweep_plan *p, int f, size_t rows) {
  return fields[f].along == ROWS ? rows : p->n;
}

/* A string from a format, malloc'd; NULL when out of memory. */
static char *text(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *text(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int len = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = len < 0 ? NULL : malloc((size_t)len + 1);
  if (s) {
    va_start(ap, fmt);
    vsnprintf(s, (size_t)len + 1, fmt, ap);
    va_end(ap);
  }
  return s;
}

void mi_sweep_plan_free(mi_sweep_plan *plan) {
  if (!plan)
    return;
  for (size_t i = 0; i < plan->n_targets; i++)
    free(plan->targets[i].prefix);
  for (size_t i = 0; i < plan->n_units; i++)
    free(plan->units[i].name);
  for (int i = 0; i < M_COUNT; i++)
    free(plan->meta[i]);
  free(plan->targets);
  free(plan->units);
  mi_model_free(plan->model);
  free(plan);
}

static mi_status plan_check(const mi_model *model, const size_t *heads, size_t n_heads,
                            const size_t *pairs, size_t n_pairs, const mi_sweep_options *o) {
  const mi_config *c = &model->config;
  size_t total = c->n_layers * c->n_heads;
  if ((n_heads && !heads) || (n_pairs && !pairs))
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "sweep plan: %zu heads or %zu pairs given as NULL",
                    n_heads, n_pairs);
  for (size_t i = 0; i < n_heads; i++) {
    if (heads[i] >= total)
      return mi__fail(MI_ERR_INDEX, "sweep plan: head %zu of a model of %zu heads", heads[i],
                      total);
    if (i && heads[i] <= heads[i - 1])
      return mi__fail(MI_ERR_INVALID_ARGUMENT, "sweep plan: heads must increase; %zu "
                      "follows %zu", heads[i], heads[i - 1]);
  }
  for (size_t i = 0; i < 2 * n_pairs; i++)
    if (pairs[i] >= total)
      return mi__fail(MI_ERR_INDEX, "sweep plan: K-composition head %zu of a model of %zu "
                      "heads", pairs[i], total);
  for (size_t i = 0; i < n_pairs; i++)
    if (pairs[2 * i] / c->n_heads >= pairs[2 * i + 1] / c->n_heads)
      return mi__fail(MI_ERR_INVALID_ARGUMENT, "sweep plan: K-composition pair %zu: head "
                      "%zu is not in a layer before head %zu", i, pairs[2 * i],
                      pairs[2 * i + 1]);
  if (o->circuits & ~(unsigned)(MI_SWEEP_OV | MI_SWEEP_QK | MI_SWEEP_DIRECT) ||
      o->qk_flags & ~(unsigned)(MI_QK_BIAS | MI_QK_SCALE))
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "sweep plan: unknown circuits bits 0x%x or "
                    "qk_flags bits 0x%x", o->circuits, o->qk_flags);
  if (!(o->circuits & (MI_SWEEP_OV | MI_SWEEP_QK | MI_SWEEP_DIRECT)) && !n_pairs)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "sweep plan: no circuit to sweep");
  if (o->k == 0 || o->k > c->d_vocab || o->k_columns > c->d_vocab || o->unit_rows == 0 ||
      o->outputs_per_source == 0 || o->destinations_per_source == 0)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "sweep plan: k %zu and k_columns %zu must be "
                    "at most d_vocab %zu (k at least 1); unit_rows %zu, outputs %zu and "
                    "destinations %zu at least 1", o->k, o->k_columns, c->d_vocab,
                    o->unit_rows, o->outputs_per_source, o->destinations_per_source);
  if (c->d_vocab > INT32_MAX)
    return mi__fail(MI_ERR_UNSUPPORTED, "sweep plan: d_vocab %zu does not fit the files' "
                    "int32 indices", c->d_vocab);
  return MI_OK;
}

static mi_status add_target(mi_sweep_plan *p, target_kind kind, size_t head, size_t head2) {
  size_t H = p->model->config.n_heads;
  target *t = &p->targets[p->n_targets++];
  *t = (target){kind, head / H, head % H, head2 / H, head2 % H, NULL, p->n_units, 0};
  static const char *const names[] = {"ov", "qk", "direct", "kcomp"};
  t->prefix = kind == T_DIRECT ? text("direct")
              : kind == T_KCOMP
                  ? text("L%zuH%zu-L%zuH%zu.kcomp", t->layer, t->head, t->layer2, t->head2)
                  : text("L%zuH%zu.%s", t->layer, t->head, names[kind]);
  if (!t->prefix)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "sweep plan: a target's name");
  /* Units of nearly equal size: no short last unit to wait for. */
  size_t count = (p->n + p->opt.unit_rows - 1) / p->opt.unit_rows;
  for (size_t u = 0; u < count; u++) {
    unit *x = &p->units[p->n_units++];
    *x = (unit){p->n_targets - 1, p->n * u / count, p->n * (u + 1) / count, NULL};
    x->name = text("%s.rows-%zu-%zu", t->prefix, x->i0, x->i1);
    if (!x->name)
      return mi__fail(MI_ERR_OUT_OF_MEMORY, "sweep plan: a unit's name");
  }
  t->n_units = count;
  return MI_OK;
}

/* The plan's metadata: what a unit file must repeat to be merged. */
static mi_status plan_meta(mi_sweep_plan *p, const size_t *heads, size_t n_heads,
                           const size_t *pairs, size_t n_pairs) {
  const mi_config *c = &p->model->config;
  const mi_sweep_options *o = &p->opt;
  char digest[32];
  mi_model_digest(digest, sizeof digest, p->model);
  p->meta[M_FORMAT] = text("%s", format_name);
  p->meta[M_VERSION] = text("%s", mi_version_string());
  p->meta[M_DIGEST] = text("%s", digest);
  p->meta[M_SHAPE] = text("n_layers=%zu n_heads=%zu n_kv_heads=%zu d_model=%zu d_head=%zu "
                          "d_vocab=%zu n_ctx=%zu", c->n_layers, c->n_heads, c->n_kv_heads,
                          c->d_model, c->d_head, c->d_vocab, c->n_ctx);
  p->meta[M_OPTIONS] =
      text("ov=%d qk=%d direct=%d qk_bias=%d qk_scale=%d k=%zu k_columns=%zu "
           "outputs_per_source=%zu destinations_per_source=%zu trigrams=%zu unit_rows=%zu",
           (o->circuits & MI_SWEEP_OV) != 0, (o->circuits & MI_SWEEP_QK) != 0,
           (o->circuits & MI_SWEEP_DIRECT) != 0, (o->qk_flags & MI_QK_BIAS) != 0,
           (o->qk_flags & MI_QK_SCALE) != 0, o->k, o->k_columns, o->outputs_per_source,
           o->destinations_per_source, o->trigrams, o->unit_rows);
  /* Lists of heads: "L0H0,L0H1", "L0H1-L1H0"; as long as they need to be. */
  for (int list = 0; list < 2; list++) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
      return mi__fail(MI_ERR_OUT_OF_MEMORY, "sweep plan: the list of heads");
    size_t count = list ? n_pairs : n_heads, H = c->n_heads;
    for (size_t i = 0; i < count; i++) {
      size_t a = list ? pairs[2 * i] : heads[i];
      fprintf(f, "%sL%zuH%zu", i ? "," : "", a / H, a % H);
      if (list)
        fprintf(f, "-L%zuH%zu", pairs[2 * i + 1] / H, pairs[2 * i + 1] % H);
    }
    if (fclose(f) != 0 || !buf) {
      free(buf);
      return mi__fail(MI_ERR_OUT_OF_MEMORY, "sweep plan: the list of heads");
    }
    p->meta[list ? M_KCOMP : M_HEADS] = buf;
  }
  for (int i = 0; i < M_COUNT; i++)
    if (!p->meta[i])
      return mi__fail(MI_ERR_OUT_OF_MEMORY, "sweep plan: its metadata");
  return MI_OK;
}

mi_status mi_sweep_plan_new(mi_sweep_plan **out, const mi_model *model, const size_t *heads,
                            size_t n_heads, const size_t *pairs, size_t n_pairs,
                            const mi_sweep_options *options) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(model);
  mi_sweep_options opt;
  mi_sweep_options_init(&opt, sizeof opt);
  mi_status status = mi__struct_in(&opt, sizeof opt, options, "mi_sweep_options");
  if (status == MI_OK)
    status = plan_check(model, heads, n_heads, pairs, n_pairs, &opt);
  if (status != MI_OK)
    return status;
  const mi_config *c = &model->config;
  size_t all = c->n_layers * c->n_heads;
  size_t *every = NULL;
  if (!heads) { /* every head */
    every = malloc((all ? all : 1) * sizeof *every);
    if (!every)
      return mi__fail(MI_ERR_OUT_OF_MEMORY, "sweep plan: %zu heads", all);
    for (size_t i = 0; i < all; i++)
      every[i] = i;
    heads = every, n_heads = all;
  }
  size_t per_head = ((opt.circuits & MI_SWEEP_OV) != 0) + ((opt.circuits & MI_SWEEP_QK) != 0);
  size_t n_targets = n_heads * per_head + ((opt.circuits & MI_SWEEP_DIRECT) != 0) + n_pairs;
  size_t per_target = (c->d_vocab + opt.unit_rows - 1) / opt.unit_rows, n_units;
  mi_sweep_plan *p = calloc(1, sizeof *p);
  if (p) {
    mi__model_retain((mi_model *)model);
    p->model = (mi_model *)model;
    p->opt = opt;
    p->n = c->d_vocab;
  }
  if (!p || !mi__mul_size(&n_units, n_targets, per_target) ||
      !(p->targets = calloc(n_targets ? n_targets : 1, sizeof *p->targets)) ||
      !(p->units = calloc(n_units ? n_units : 1, sizeof *p->units)))
    status = mi__fail(MI_ERR_OUT_OF_MEMORY, "sweep plan: %zu circuits of %zu units",
                      n_targets, per_target);
  for (size_t i = 0; i < n_heads && status == MI_OK; i++) {
    if (opt.circuits & MI_SWEEP_OV)
      status = add_target(p, T_OV, heads[i], 0);
    if (status == MI_OK && (opt.circuits & MI_SWEEP_QK))
      status = add_target(p, T_QK, heads[i], 0);
  }
  if (status == MI_OK && (opt.circuits & MI_SWEEP_DIRECT))
    status = add_target(p, T_DIRECT, 0, 0);
  for (size_t i = 0; i < n_pairs && status == MI_OK; i++)
    status = add_target(p, T_KCOMP, pairs[2 * i], pairs[2 * i + 1]);
  if (status == MI_OK)
    status = plan_meta(p, every ? NULL : heads, every ? 0 : n_heads, pairs, n_pairs);
  free(every);
  if (status != MI_OK) {
    mi_sweep_plan_free(p);
    return status;
  }
  *out = p;
  return MI_OK;
}

size_t mi_sweep_plan_unit_count(const mi_sweep_plan *plan) { return plan ? plan->n_units : 0; }

static mi_status check_unit(const mi_sweep_plan *plan, size_t unit) {
  MI_CHECK_ARG(plan);
  if (unit >= plan->n_units)
    return mi__fail(MI_ERR_INDEX, "sweep plan: unit %zu of %zu", unit, plan->n_units);
  return MI_OK;
}

mi_status mi_sweep_plan_unit_name(const char **out, const mi_sweep_plan *plan, size_t unit) {
  MI_CHECK_ARG(out);
  mi_status status = check_unit(plan, unit);
  *out = status == MI_OK ? plan->units[unit].name : NULL;
  return status;
}

mi_status mi_sweep_plan_unit_entries(size_t *out, const mi_sweep_plan *plan, size_t unit) {
  MI_CHECK_ARG(out);
  mi_status status = check_unit(plan, unit);
  *out = status == MI_OK ? (plan->units[unit].i1 - plan->units[unit].i0) * plan->n : 0;
  return status;
}

/* ---- writing a file: temporary name, checked writes, fsync, rename ------------ */

/* One tensor of a file being written; its bytes follow in entry order. */
typedef struct entry {
  char *name;
  const char *dtype;
  size_t item, lines, width; /* width 0: a 1-D tensor of `lines` */
} entry;

static size_t entry_bytes(const entry *e) { return e->lines * (e->width ? e->width : 1) * e->item; }

typedef struct writer {
  int fd;
  char *tmp;
  const char *path;
  size_t expected, written;
} writer;

static mi_status io_fail(const char *what, const char *path) {
  return mi__fail(MI_ERR_IO, "%s %s: %s", what, path, strerror(errno));
}

static void writer_abort(writer *w) {
  if (w->fd >= 0)
    close(w->fd);
  if (w->tmp)
    unlink(w->tmp);
  free(w->tmp);
  w->fd = -1;
  w->tmp = NULL;
}

static mi_status writer_put(writer *w, const void *data, size_t size) {
  const char *p = data;
  while (size > 0) {
    ssize_t n = write(w->fd, p, size);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) { /* a full disk: ENOSPC, EFBIG, EDQUOT */
      if (n == 0)
        errno = ENOSPC;
      return mi__fail(MI_ERR_IO, "writing %s (as %s) at byte %zu: %s", w->path, w->tmp,
                      w->written, strerror(errno));
    }
    p += n, size -= (size_t)n, w->written += (size_t)n;
  }
  return MI_OK;
}

/*
 * Opens a temporary file beside `path` and writes the header: the metadata
 * (`keys`, `values`, count) and the entries' shapes and offsets.
 */
static mi_status writer_open(writer *w, const char *path, const char *const *keys,
                             char *const *values, size_t n_meta, const entry *e,
                             size_t n_entries) {
  *w = (writer){-1, NULL, path, 0, 0};
  json_t *root = json_object(), *meta = json_object();
  bool ok = root && meta && json_object_set_new(root, "__metadata__", meta) == 0;
  if (!ok)
    json_decref(meta);
  for (size_t i = 0; ok && i < n_meta; i++)
    ok = json_object_set_new(meta, keys[i], json_string(values[i])) == 0;
  size_t at = 0;
  for (size_t i = 0; ok && i < n_entries; i++) {
    size_t end = at + entry_bytes(&e[i]);
    json_t *shape = e[i].width ? json_pack("[I, I]", (json_int_t)e[i].lines, (json_int_t)e[i].width)
                               : json_pack("[I]", (json_int_t)e[i].lines);
    ok = shape && json_object_set_new(root, e[i].name,
                                      json_pack("{s:s, s:o, s:[I, I]}", "dtype", e[i].dtype,
                                                "shape", shape, "data_offsets", (json_int_t)at,
                                                (json_int_t)end)) == 0;
    at = end;
  }
  char *header = ok ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(root);
  if (!header)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "the header of %s (%zu tensors)", path, n_entries);
  size_t len = strlen(header), padded = (len + 7) / 8 * 8;
  unsigned char size8[8];
  for (int i = 0; i < 8; i++)
    size8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
  w->tmp = text("%s.XXXXXX", path);
  mi_status status = MI_OK;
  if (!w->tmp)
    status = mi__fail(MI_ERR_OUT_OF_MEMORY, "the name of a file beside %s", path);
  else if ((w->fd = mkstemp(w->tmp)) < 0) {
    free(w->tmp);
    w->tmp = NULL;
    status = io_fail("creating a temporary file for", path);
  } else if (fchmod(w->fd, 0644) != 0) {
    status = io_fail("setting the mode of", w->tmp);
  }
  w->expected = 8 + padded + at;
  if (status == MI_OK)
    status = writer_put(w, size8, 8);
  if (status == MI_OK)
    status = writer_put(w, header, len);
  for (size_t i = len; i < padded && status == MI_OK; i++)
    status = writer_put(w, " ", 1);
  free(header);
  if (status != MI_OK)
    writer_abort(w);
  return status;
}

/* Checks the length, syncs, renames into place and syncs the directory. */
static mi_status writer_close(writer *w) {
  mi_status status = MI_OK;
  if (w->written != w->expected)
    status = mi__fail(MI_ERR_STATE, "writing %s: %zu bytes written, the header promises %zu",
                      w->path, w->written, w->expected);
  else if (fsync(w->fd) != 0)
    status = io_fail("syncing", w->tmp);
  else if (close(w->fd) != 0) {
    w->fd = -1;
    status = io_fail("closing", w->tmp);
  } else if ((w->fd = -1, rename(w->tmp, w->path) != 0))
    status = io_fail("renaming the finished file to", w->path);
  if (status != MI_OK) {
    writer_abort(w);
    return status;
  }
  free(w->tmp);
  w->tmp = NULL;
  /* The rename itself reaches the disk with the directory. */
  char *dir = text("%s", w->path);
  if (!dir)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "the directory of %s", w->path);
  char *slash = strrchr(dir, '/');
  if (slash)
    slash[slash == dir] = '\0';
  int fd = open(slash ? dir : ".", O_RDONLY);
  if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL))
    status = io_fail("syncing the directory of", w->path);
  if (fd >= 0)
    close(fd);
  free(dir);
  return status;
}

/* Writes count elements of an I32 field held as size_t (SIZE_MAX: -1). */
static mi_status put_indices(writer *w, const size_t *x, size_t count) {
  int32_t buf[1024];
  mi_status status = MI_OK;
  for (size_t i = 0; i < count && status == MI_OK; i += 1024) {
    size_t n = count - i < 1024 ? count - i : 1024;
    for (size_t t = 0; t < n; t++)
      buf[t] = x[i + t] == SIZE_MAX ? -1 : (int32_t)x[i + t];
    status = writer_put(w, buf, n * sizeof buf[0]);
  }
  return status;
}

/* ---- reading a file --------------------------------------------------------- */

struct mi_sweep {
  unsigned char *map;
  size_t size;
  mi__st_file f;
  size_t *by_name; /* tensor numbers in name order */
  size_t *shapes;  /* every tensor's dims, back to back */
  size_t *shape_at;
};

void mi_sweep_free(mi_sweep *sweep) {
  if (!sweep)
    return;
  mi__st_close(&sweep->f);
  if (sweep->map)
    munmap(sweep->map, sweep->size);
  free(sweep->by_name);
  free(sweep->shapes);
  free(sweep->shape_at);
  free(sweep);
}

/* qsort has no user pointer: the file being indexed, per thread. */
static _Thread_local const mi__st_file *sorting;
static int by_tensor_name(const void *a, const void *b) {
  return strcmp(sorting->tensors[*(const size_t *)a].view.name,
                sorting->tensors[*(const size_t *)b].view.name);
}

/* Indexes the parsed header: names in order, full shapes from the JSON. */
static mi_status sweep_index(mi_sweep *s) {
  const mi__st_file *f = &s->f;
  size_t dims = 0;
  for (size_t i = 0; i < f->n_tensors; i++)
    dims += f->tensors[i].view.rank;
  s->by_name = malloc((f->n_tensors + 1) * sizeof *s->by_name);
  s->shape_at = malloc((f->n_tensors + 1) * sizeof *s->shape_at);
  s->shapes = malloc((dims + 1) * sizeof *s->shapes);
  if (!s->by_name || !s->shape_at || !s->shapes)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "indexing %zu tensors", f->n_tensors);
  dims = 0;
  for (size_t i = 0; i < f->n_tensors; i++) {
    const mi__tensor *v = &f->tensors[i].view;
    const json_t *shape = json_object_get(json_object_get(f->header, v->name), "shape");
    s->by_name[i] = i;
    s->shape_at[i] = dims;
    for (size_t d = 0; d < v->rank; d++)
      s->shapes[dims++] = (size_t)json_integer_value(json_array_get(shape, d));
  }
  sorting = f;
  qsort(s->by_name, f->n_tensors, sizeof *s->by_name, by_tensor_name);
  return MI_OK;
}

/* Prefixes the calling thread's last error with the file it is about. */
static mi_status in_file(mi_status status, const char *path) {
  if (status == MI_OK)
    return status;
  char *detail = text("%s", mi_last_error());
  status = mi__fail(status, "%s: %s", path, detail ? detail : "");
  free(detail);
  return status;
}

static mi_status sweep_open(mi_sweep **out, const char *path) {
  mi_sweep *s = calloc(1, sizeof *s);
  if (!s)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "opening a sweep file");
  mi_status status = MI_OK;
  int fd = open(path, O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0)
    status = io_fail("opening", path);
  else if (st.st_size >= 8) {
    s->size = (size_t)st.st_size;
    s->map = mmap(NULL, s->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (s->map == MAP_FAILED) {
      s->map = NULL;
      status = io_fail("mapping", path);
    }
  }
  if (fd >= 0)
    close(fd);
  if (status == MI_OK)
    status = in_file(mi__st_parse(&s->f, s->map, s->size), path);
  const char *format = NULL;
  if (status == MI_OK && s->f.metadata)
    format = json_string_value(json_object_get(s->f.metadata, "format"));
  if (status == MI_OK && (!format || strcmp(format, format_name)))
    status = mi__fail(MI_ERR_FORMAT, "%s: a safetensors file, but not a sweep (its metadata "
                      "\"format\" is %s%s%s, not \"%s\")", path, format ? "\"" : "",
                      format ? format : "absent", format ? "\"" : "", format_name);
  if (status == MI_OK)
    status = sweep_index(s);
  if (status != MI_OK) {
    mi_sweep_free(s);
    return status;
  }
  *out = s;
  return MI_OK;
}

mi_status mi_sweep_open(mi_sweep **out, const char *path) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(path);
  return sweep_open(out, path);
}

mi_status mi_sweep_metadata(const char **out, const mi_sweep *sweep, const char *key) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(sweep);
  MI_CHECK_ARG(key);
  *out = json_string_value(json_object_get(sweep->f.metadata, key));
  if (!*out)
    return mi__fail(MI_ERR_MISSING_TENSOR, "sweep file: no metadata \"%s\"", key);
  return MI_OK;
}

size_t mi_sweep_tensor_count(const mi_sweep *sweep) { return sweep ? sweep->f.n_tensors : 0; }

static void tensor_view(mi_sweep_tensor *out, const mi_sweep *s, size_t i) {
  const mi__st_tensor *t = &s->f.tensors[i];
  mi_sweep_tensor v = {sizeof v,          t->view.name,         t->view.dtype_name,
                       t->view.item,      t->view.rank,         s->shapes + s->shape_at[i],
                       s->f.data + t->begin, t->end - t->begin};
  size_t size = out->struct_size < sizeof v ? out->struct_size : sizeof v;
  memcpy(out, &v, size);
  out->struct_size = size;
}

static mi_status check_tensor_out(const mi_sweep_tensor *out, const mi_sweep *sweep) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(sweep);
  if (out->struct_size < sizeof(size_t))
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "out->struct_size is %zu; set it to "
                    "sizeof(mi_sweep_tensor)", out->struct_size);
  return MI_OK;
}

mi_status mi_sweep_tensor_at(mi_sweep_tensor *out, const mi_sweep *sweep, size_t index) {
  mi_status status = check_tensor_out(out, sweep);
  if (status == MI_OK && index >= sweep->f.n_tensors)
    status = mi__fail(MI_ERR_INDEX, "sweep file: tensor %zu of %zu", index, sweep->f.n_tensors);
  if (status == MI_OK)
    tensor_view(out, sweep, sweep->by_name[index]);
  return status;
}

/* The number of the tensor named `name`, or SIZE_MAX. */
static size_t find_tensor(const mi_sweep *s, const char *name) {
  size_t lo = 0, hi = s->f.n_tensors;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(s->f.tensors[s->by_name[mid]].view.name, name);
    if (c == 0)
      return s->by_name[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return SIZE_MAX;
}

mi_status mi_sweep_tensor_find(mi_sweep_tensor *out, const mi_sweep *sweep, const char *name) {
  mi_status status = check_tensor_out(out, sweep);
  if (status != MI_OK)
    return status;
  MI_CHECK_ARG(name);
  size_t i = find_tensor(sweep, name);
  if (i == SIZE_MAX)
    return mi__fail(MI_ERR_MISSING_TENSOR, "sweep file: no tensor '%s'", name);
  tensor_view(out, sweep, i);
  return MI_OK;
}

/* ---- running units -------------------------------------------------------------- */

struct mi_sweep_worker {
  const mi_sweep_plan *plan;
  size_t target;       /* the target `circuit` belongs to; SIZE_MAX: none */
  mi_circuit *circuit; /* kept for the next unit of the same target */
};

mi_status mi_sweep_worker_new(mi_sweep_worker **out, const mi_sweep_plan *plan) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(plan);
  mi_sweep_worker *w = calloc(1, sizeof *w);
  if (!w)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "a sweep worker");
  w->plan = plan;
  w->target = SIZE_MAX;
  *out = w;
  return MI_OK;
}

void mi_sweep_worker_free(mi_sweep_worker *worker) {
  if (!worker)
    return;
  mi_circuit_free(worker->circuit);
  free(worker);
}

static mi_status target_circuit(mi_circuit **out, const mi_sweep_plan *p, const target *t) {
  const mi_model *m = p->model;
  switch (t->kind) {
  case T_OV: return mi_circuit_ov(out, m, t->layer, t->head);
  case T_QK:
    return mi_circuit_qk(out, m, t->layer, t->head, MI_EMBED_TOKEN, MI_EMBED_TOKEN,
                         p->opt.qk_flags);
  case T_DIRECT: return mi_circuit_direct(out, m);
  case T_KCOMP:
    return mi_circuit_k_composition(out, m, t->layer, t->head, t->layer2, t->head2,
                                    p->opt.qk_flags);
  }
  return mi__fail(MI_ERR_STATE, "sweep: unknown circuit kind %d", (int)t->kind);
}

/* Bytes an element of field f takes in memory (indices are size_t there). */
static size_t field_elem(int f) {
  return !strcmp(fields[f].dtype, "I32") ? sizeof(size_t) : fields[f].item;
}

static size_t field_count(const mi_sweep_plan *p, int f, size_t rows) {
  size_t w = field_width(p, f);
  return field_lines(p, f, rows) * (w ? w : 1);
}

static char *unit_path(const mi_sweep_plan *p, size_t u, const char *dir) {
  return text("%s/%s.safetensors", dir, p->units[u].name);
}

/* The entries of unit u's file, in file order; their count into *n. */
static void unit_entries(entry *e, size_t *n, const mi_sweep_plan *p, size_t u) {
  const unit *x = &p->units[u];
  const target *t = &p->targets[x->target];
  *n = 0;
  for (int f = 0; f < F_COUNT; f++)
    if (field_present(p, t, f))
      e[(*n)++] = (entry){(char *)fields[f].name, fields[f].dtype, fields[f].item,
                          field_lines(p, f, x->i1 - x->i0), field_width(p, f)};
}

static mi_status write_unit(const mi_sweep_plan *p, size_t u, const char *dir, void *const *buf) {
  entry e[F_COUNT];
  size_t n;
  unit_entries(e, &n, p, u);
  const char *keys[M_COUNT + 1];
  char *values[M_COUNT + 1];
  for (int i = 0; i < M_COUNT; i++)
    keys[i] = meta_keys[i], values[i] = p->meta[i];
  keys[M_COUNT] = "unit";
  values[M_COUNT] = p->units[u].name;
  char *path = unit_path(p, u, dir);
  if (!path)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "the path of unit %s", p->units[u].name);
  writer w;
  mi_status status = writer_open(&w, path, keys, values, M_COUNT + 1, e, n);
  size_t rows = p->units[u].i1 - p->units[u].i0;
  const target *t = &p->targets[p->units[u].target];
  for (int f = 0; f < F_COUNT && status == MI_OK; f++) {
    if (!field_present(p, t, f))
      continue;
    size_t count = field_count(p, f, rows);
    status = field_elem(f) == fields[f].item ? writer_put(&w, buf[f], count * fields[f].item)
                                             : put_indices(&w, buf[f], count);
  }
  if (status == MI_OK)
    status = writer_close(&w);
  else
    writer_abort(&w);
  free(path);
  return status;
}

mi_status mi_sweep_worker_run(mi_sweep_worker *worker, size_t unit, const char *dir) {
  MI_CHECK_ARG(worker);
  MI_CHECK_ARG(dir);
  const mi_sweep_plan *p = worker->plan;
  mi_status status = check_unit(p, unit);
  if (status != MI_OK)
    return status;
  const struct unit *u = &p->units[unit];
  const target *t = &p->targets[u->target];
  if (worker->target != u->target) {
    mi_circuit_free(worker->circuit);
    worker->circuit = NULL;
    worker->target = SIZE_MAX;
    status = target_circuit(&worker->circuit, p, t);
    if (status != MI_OK)
      return status;
    worker->target = u->target;
  }
  size_t rows = u->i1 - u->i0;
  void *buf[F_COUNT] = {0};
  for (int f = 0; f < F_COUNT && status == MI_OK; f++)
    if (field_present(p, t, f) &&
        !(buf[f] = malloc(field_count(p, f, rows) * field_elem(f))))
      status = mi__fail(MI_ERR_OUT_OF_MEMORY, "unit %s: its %s", u->name, fields[f].name);
  mi_row_summary rs = {sizeof rs, p->opt.k, buf[F_TOPK_I], buf[F_TOPK_V], buf[F_DIAG],
                       buf[F_MEAN], buf[F_STD], p->opt.k_columns, buf[F_COL_I], buf[F_COL_V],
                       t->kind == T_OV ? p->opt.outputs_per_source : 0, buf[F_OUT_I],
                       buf[F_OUT_Z], t->kind == T_QK ? p->opt.destinations_per_source : 0,
                       buf[F_DST_I], buf[F_DST_Z]};
  if (status == MI_OK)
    status = mi_circuit_row_summary(&rs, worker->circuit, u->i0, u->i1);
  if (status == MI_OK)
    status = write_unit(p, unit, dir, buf);
  for (int f = 0; f < F_COUNT; f++)
    free(buf[f]);
  return status;
}

/* ---- checking and merging units -------------------------------------------------- */

/*
 * Opens unit u's file and checks that it is this plan's: metadata, unit
 * name, and every tensor's dtype and shape. *absent (may be NULL) says the
 * file is not there, which is then MI_OK with *out NULL.
 */
static mi_status unit_open(mi_sweep **out, bool *absent, const mi_sweep_plan *p, size_t u,
                           const char *dir) {
  *out = NULL;
  char *path = unit_path(p, u, dir);
  if (!path)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "the path of unit %s", p->units[u].name);
  struct stat st;
  if (stat(path, &st) != 0 && errno == ENOENT) {
    mi_status status = absent ? MI_OK
                              : mi__fail(MI_ERR_MISSING_TENSOR, "unit %s is missing: no %s",
                                         p->units[u].name, path);
    if (absent)
      *absent = true;
    free(path);
    return status;
  }
  if (absent)
    *absent = false;
  mi_sweep *s = NULL;
  mi_status status = sweep_open(&s, path);
  for (int i = 0; i <= M_COUNT && status == MI_OK; i++) {
    const char *key = i < M_COUNT ? meta_keys[i] : "unit";
    const char *want = i < M_COUNT ? p->meta[i] : p->units[u].name;
    const char *have = json_string_value(json_object_get(s->f.metadata, key));
    if (!have || strcmp(have, want))
      status = mi__fail(MI_ERR_STATE, "%s: its %s is %s%s%s, this sweep's is \"%s\": made by "
                        "another sweep, not merged (remove it, or rerun with that sweep's "
                        "model and options)", path, key, have ? "\"" : "",
                        have ? have : "absent", have ? "\"" : "", want);
  }
  entry e[F_COUNT];
  size_t n = 0;
  unit_entries(e, &n, p, u);
  if (status == MI_OK && s->f.n_tensors != n)
    status = mi__fail(MI_ERR_SHAPE, "%s: %zu tensors, a unit of this sweep has %zu", path,
                      s->f.n_tensors, n);
  for (size_t i = 0; i < n && status == MI_OK; i++) {
    size_t at = find_tensor(s, e[i].name);
    const mi__tensor *v = at == SIZE_MAX ? NULL : &s->f.tensors[at].view;
    const size_t *dims = v ? s->shapes + s->shape_at[at] : NULL;
    if (!v || strcmp(v->dtype_name, e[i].dtype) || v->rank != (e[i].width ? 2u : 1u) ||
        dims[0] != e[i].lines || (e[i].width && dims[1] != e[i].width))
      status = mi__fail(MI_ERR_SHAPE, "%s: tensor '%s' is %s, this sweep's is %s [%zu%s%zu]",
                        path, e[i].name, v ? v->dtype_name : "absent", e[i].dtype,
                        e[i].lines, e[i].width ? ", " : "", e[i].width ? e[i].width : 0);
  }
  free(path);
  if (status != MI_OK) {
    mi_sweep_free(s);
    return status;
  }
  *out = s;
  return MI_OK;
}

mi_status mi_sweep_plan_unit_done(int *out, const mi_sweep_plan *plan, size_t unit,
                                  const char *dir) {
  MI_CHECK_ARG(out);
  *out = 0;
  MI_CHECK_ARG(dir);
  mi_status status = check_unit(plan, unit);
  if (status != MI_OK)
    return status;
  mi_sweep *s;
  bool absent;
  status = unit_open(&s, &absent, plan, unit, dir);
  *out = status == MI_OK && !absent;
  mi_sweep_free(s);
  return status;
}

/* An element of a tensor's data as double (I32, F32 or F64), whatever its alignment. */
static double element(const mi__tensor *v, size_t i) {
  const unsigned char *at = v->data + i * v->item;
  if (v->dtype == MI_DTYPE_F64) {
    double x;
    memcpy(&x, at, sizeof x);
    return x;
  }
  if (v->dtype == MI_DTYPE_F32) {
    float x;
    memcpy(&x, at, sizeof x);
    return x;
  }
  int32_t x;
  memcpy(&x, at, sizeof x);
  return x;
}

/*
 * Field f of target t over all n lines, in its file dtype, assembled from
 * the units: ROWS fields concatenated, COLS fields merged from the units'
 * partial ranks in row order (what one scan over all rows would keep).
 */
static mi_status target_field(unsigned char **out, const mi_sweep_plan *p, size_t ti, int f,
                              const char *dir) {
  const target *t = &p->targets[ti];
  size_t w = field_width(p, f), wl = w ? w : 1, item = fields[f].item, n = p->n;
  unsigned char *bytes = malloc(n * wl * item);
  size_t *best = NULL;
  double *val = NULL;
  bool cols = fields[f].along == COLS;
  int fi = cols && !strcmp(fields[f].dtype, "I32") ? f : fields[f].partner;
  int fv = cols && fi == f ? fields[f].partner : f;
  if (cols && bytes && (best = malloc(n * w * sizeof *best)) && (val = malloc(n * w * sizeof *val)))
    ranks_clear(best, val, n * w);
  mi_status status = MI_OK;
  if (!bytes || (cols && (!best || !val)))
    status = mi__fail(MI_ERR_OUT_OF_MEMORY, "merging %s.%s: %zu x %zu", t->prefix,
                      fields[f].name, n, wl);
  for (size_t u = t->first_unit; u < t->first_unit + t->n_units && status == MI_OK; u++) {
    mi_sweep *s;
    status = unit_open(&s, NULL, p, u, dir);
    if (status != MI_OK)
      break;
    const mi__tensor *v = &s->f.tensors[find_tensor(s, fields[f].name)].view;
    if (!cols) {
      memcpy(bytes + p->units[u].i0 * wl * item, v->data, (p->units[u].i1 - p->units[u].i0) * wl * item);
    } else {
      const mi__tensor *vi = &s->f.tensors[find_tensor(s, fields[fi].name)].view;
      const mi__tensor *vv = &s->f.tensors[find_tensor(s, fields[fv].name)].view;
      for (size_t j = 0; j < n * w; j++) {
        double index = element(vi, j);
        if (index >= 0)
          mi__keep_best(best + j / w * w, val + j / w * w, w, (size_t)index, element(vv, j));
      }
    }
    mi_sweep_free(s);
  }
  for (size_t j = 0; cols && status == MI_OK && j < n * w; j++) {
    if (f == fi) {
      int32_t x = best[j] == SIZE_MAX ? -1 : (int32_t)best[j];
      memcpy(bytes + j * 4, &x, 4);
    } else if (item == 4) {
      float x = (float)val[j];
      memcpy(bytes + j * 4, &x, 4);
    } else {
      memcpy(bytes + j * 8, &val[j], 8);
    }
  }
  free(best);
  free(val);
  if (status != MI_OK) {
    free(bytes);
    return status;
  }
  *out = bytes;
  return MI_OK;
}

/* Field f of target ti as ranks (index, double value) for the trigram pairing. */
static mi_status target_ranks(mi__ranks *r, const mi_sweep_plan *p, size_t ti, int fi, int fv,
                              const char *dir) {
  size_t n = p->n * field_width(p, fi);
  unsigned char *bi = NULL, *bv = NULL;
  r->k = field_width(p, fi);
  r->best = malloc(n * sizeof *r->best);
  r->z = malloc(n * sizeof *r->z);
  mi_status status = r->best && r->z ? MI_OK
                                     : mi__fail(MI_ERR_OUT_OF_MEMORY, "trigram ranks of %zu", n);
  if (status == MI_OK)
    status = target_field(&bi, p, ti, fi, dir);
  if (status == MI_OK)
    status = target_field(&bv, p, ti, fv, dir);
  for (size_t j = 0; status == MI_OK && j < n; j++) {
    int32_t x;
    memcpy(&x, bi + j * 4, 4);
    r->best[j] = x < 0 ? SIZE_MAX : (size_t)x;
    memcpy(&r->z[j], bv + j * 8, 8);
  }
  free(bi);
  free(bv);
  return status;
}

/* Names and dtypes of the skip-trigram table's tensors, 8-byte ones first. */
enum { TABLE_F64 = 3, TABLE_COUNT = 8 };
static const char *const table_names[TABLE_COUNT] = {
    "skip_trigrams.qk_z", "skip_trigrams.ov_z", "skip_trigrams.score", "skip_trigrams.layer",
    "skip_trigrams.head", "skip_trigrams.src",  "skip_trigrams.dst",   "skip_trigrams.out"};

/* The table: every head with both OV and QK targets, in plan (layer, head) order. */
static mi_status merge_table(mi__triples *top, bool *any, const mi_sweep_plan *p,
                             const char *dir) {
  *any = false;
  mi_status status = MI_OK;
  for (size_t ti = 0; ti + 1 < p->n_targets && status == MI_OK; ti++) {
    const target *ov = &p->targets[ti], *qk = &p->targets[ti + 1];
    if (ov->kind != T_OV || qk->kind != T_QK)
      continue;
    *any = true;
    mi__ranks ro = {0}, rq = {0};
    status = target_ranks(&ro, p, ti, F_OUT_I, F_OUT_Z, dir);
    if (status == MI_OK)
      status = target_ranks(&rq, p, ti + 1, F_DST_I, F_DST_Z, dir);
    if (status == MI_OK && top->cap)
      mi__triples_offer(top, &ro, &rq, p->n, ov->layer, ov->head);
    free(ro.best);
    free(ro.z);
    free(rq.best);
    free(rq.z);
  }
  if (status == MI_OK)
    mi__triples_sort(top);
  return status;
}

static mi_status put_table(writer *w, const mi__triples *top, size_t column) {
  mi_status status = MI_OK;
  for (size_t i = 0; i < top->count && status == MI_OK; i++) {
    const mi_skip_trigram *t = &top->items[i];
    if (column < TABLE_F64) {
      double x = column == 0 ? t->qk_z : column == 1 ? t->ov_z : t->score;
      status = writer_put(w, &x, sizeof x);
    } else {
      size_t v[] = {t->layer, t->head, t->src, t->dst, t->out};
      int32_t x = (int32_t)v[column - TABLE_F64];
      status = writer_put(w, &x, sizeof x);
    }
  }
  return status;
}

/* The results file's entries, 8-byte tensors first; names malloc'd. */
static mi_status merge_entries(entry **out, size_t *count, const mi_sweep_plan *p, bool table,
                               size_t n_table) {
  size_t cap = p->n_targets * F_COUNT + TABLE_COUNT, n = 0;
  entry *e = calloc(cap, sizeof *e);
  if (!e)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "the entries of %zu circuits", p->n_targets);
  for (size_t item = 8; item >= 4; item -= 4) {
    for (size_t ti = 0; ti < p->n_targets; ti++)
      for (int f = 0; f < F_COUNT; f++)
        if (fields[f].item == item && field_present(p, &p->targets[ti], f))
          e[n++] = (entry){text("%s.%s", p->targets[ti].prefix, fields[f].name), fields[f].dtype,
                           item, p->n, field_width(p, f)};
    for (size_t c = 0; table && c < TABLE_COUNT; c++)
      if ((c < TABLE_F64 ? 8u : 4u) == item)
        e[n++] = (entry){text("%s", table_names[c]), c < TABLE_F64 ? "F64" : "I32", item,
                         n_table, 0};
  }
  *out = e;
  *count = n;
  for (size_t i = 0; i < n; i++)
    if (!e[i].name)
      return mi__fail(MI_ERR_OUT_OF_MEMORY, "the names of %zu tensors", n);
  return MI_OK;
}

mi_status mi_sweep_plan_merge(const mi_sweep_plan *plan, const char *dir, const char *path) {
  MI_CHECK_ARG(plan);
  MI_CHECK_ARG(dir);
  MI_CHECK_ARG(path);
  const mi_sweep_plan *p = plan;
  mi_status status = MI_OK;
  for (size_t u = 0; u < p->n_units && status == MI_OK; u++) {
    mi_sweep *s;
    status = unit_open(&s, NULL, p, u, dir);
    mi_sweep_free(s);
  }
  mi__triples top = {0};
  top.cap = p->opt.trigrams;
  top.items = malloc((top.cap ? top.cap : 1) * sizeof *top.items);
  top.seq = malloc((top.cap ? top.cap : 1) * sizeof *top.seq);
  if (status == MI_OK && (!top.items || !top.seq))
    status = mi__fail(MI_ERR_OUT_OF_MEMORY, "a table of %zu skip-trigrams", top.cap);
  bool table = false;
  if (status == MI_OK)
    status = merge_table(&top, &table, p, dir);
  entry *e = NULL;
  size_t n_entries = 0;
  if (status == MI_OK)
    status = merge_entries(&e, &n_entries, p, table, top.count);
  writer w = {-1, NULL, path, 0, 0};
  if (status == MI_OK)
    status = writer_open(&w, path, meta_keys, p->meta, M_COUNT, e, n_entries);
  for (size_t item = 8; item >= 4 && status == MI_OK; item -= 4) {
    for (size_t ti = 0; ti < p->n_targets && status == MI_OK; ti++)
      for (int f = 0; f < F_COUNT && status == MI_OK; f++) {
        if (fields[f].item != item || !field_present(p, &p->targets[ti], f))
          continue;
        unsigned char *bytes;
        status = target_field(&bytes, p, ti, f, dir);
        if (status == MI_OK) {
          size_t wl = field_width(p, f) ? field_width(p, f) : 1;
          status = writer_put(&w, bytes, p->n * wl * item);
          free(bytes);
        }
      }
    for (size_t c = 0; table && c < TABLE_COUNT && status == MI_OK; c++)
      if ((c < TABLE_F64 ? 8u : 4u) == item)
        status = put_table(&w, &top, c);
  }
  if (status == MI_OK)
    status = writer_close(&w);
  else
    writer_abort(&w);
  for (size_t i = 0; i < n_entries; i++)
    free(e[i].name);
  free(e);
  free(top.items);
  free(top.seq);
  return status;
}

mi_status mi_sweep_skip_trigrams(mi_skip_trigram *out, size_t *out_count, size_t capacity,
                                 const mi_sweep *sweep) {
  MI_CHECK_ARG(out_count);
  *out_count = 0;
  MI_CHECK_ARG(sweep);
  const mi__tensor *v[TABLE_COUNT];
  for (size_t c = 0; c < TABLE_COUNT; c++) {
    size_t at = find_tensor(sweep, table_names[c]);
    if (at == SIZE_MAX)
      return mi__fail(MI_ERR_MISSING_TENSOR, "sweep file: no skip-trigram table (no '%s')",
                      table_names[c]);
    v[c] = &sweep->f.tensors[at].view;
    if (strcmp(v[c]->dtype_name, c < TABLE_F64 ? "F64" : "I32") || v[c]->rank != 1 ||
        v[c]->dims[0] != v[0]->dims[0])
      return mi__fail(MI_ERR_FORMAT, "sweep file: '%s' is %s of rank %zu, the table's "
                      "columns are 1-D, %zu long, F64 or I32", table_names[c],
                      v[c]->dtype_name, v[c]->rank, v[0]->dims[0]);
  }
  size_t count = v[0]->dims[0] < capacity ? v[0]->dims[0] : capacity;
  if (count == 0)
    return MI_OK;
  MI_CHECK_ARG(out);
  size_t stride = out[0].struct_size;
  if (stride < sizeof(size_t))
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "out[0].struct_size is %zu; set it to sizeof(mi_skip_trigram)", stride);
  size_t size = stride < sizeof(mi_skip_trigram) ? stride : sizeof(mi_skip_trigram);
  for (size_t i = 0; i < count; i++) {
    double x[TABLE_COUNT];
    for (size_t c = 0; c < TABLE_COUNT; c++)
      x[c] = element(v[c], i);
    mi_skip_trigram t = {size,         (size_t)x[3], (size_t)x[4], (size_t)x[5],
                         (size_t)x[6], (size_t)x[7], x[0],         x[1],
                         x[2]};
    memcpy((char *)out + i * stride, &t, size);
  }
  *out_count = count;
  return MI_OK;
}
