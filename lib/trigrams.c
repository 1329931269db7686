/*
 * trigrams.c: the skip-trigram search (mi_model_skip_trigrams). Per head,
 * one streamed top-k pass over each of its two token circuits and nothing
 * else: row statistics come in closed form from the factors
 * (mi_circuit_row_stats), a row's best entries by z-score are its largest,
 * and a column's best entries by their rows' z-scores are a column top-k
 * of the z matrix itself, a circuit of rank r + 1. The pieces the sweep
 * shares (trigrams.h) are here too.
 */
#include "trigrams.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Off-diagonal picks an OV row needs for the top-5 copying accuracy. */
enum { COPYING_PICKS = 5 };

void mi_skip_trigram_options_init(mi_skip_trigram_options *out, size_t struct_size) {
  const mi_skip_trigram_options defaults = {.struct_size = sizeof defaults,
                                            .qk_flags = MI_QK_BIAS | MI_QK_SCALE,
                                            .outputs_per_source = 2,
                                            .destinations_per_source = 2};
  mi__struct_init(out, struct_size, &defaults, sizeof defaults);
}

void mi__keep_best(size_t *idx, double *val, size_t k, size_t i, double v) {
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

bool mi__row_stats(const float *row, size_t n, double *mean, double *inv_sd, double *sd) {
  double s = 0, s2 = 0;
  for (size_t j = 0; j < n; j++) {
    s += row[j];
    s2 += (double)row[j] * row[j];
  }
  *mean = s / (double)n;
  double var = s2 / (double)n - *mean * *mean;
  if (sd)
    *sd = var > 0 ? sqrt(var) : isnan(var) ? var : 0.0;
  if (!(var > 0))
    return false;
  *inv_sd = 1 / sqrt(var);
  return true;
}

static void ranks_reset(mi__ranks *r, size_t n) {
  for (size_t i = 0; i < n * r->k; i++)
    r->z[i] = -INFINITY, r->best[i] = SIZE_MAX;
}

/* Whether a (score, seq) is worse than b: lower score, or later on a tie. */
static bool worse(const mi__triples *t, size_t a, size_t b) {
  double x = t->items[a].score, y = t->items[b].score;
  return x < y || (x == y && t->seq[a] > t->seq[b]);
}

static void swap_at(mi__triples *t, size_t a, size_t b) {
  mi_skip_trigram item = t->items[a];
  t->items[a] = t->items[b];
  t->items[b] = item;
  size_t s = t->seq[a];
  t->seq[a] = t->seq[b];
  t->seq[b] = s;
}

static void sift_down(mi__triples *t, size_t i, size_t count) {
  for (;;) {
    size_t w = i, l = 2 * i + 1, r = l + 1;
    if (l < count && worse(t, l, w))
      w = l;
    if (r < count && worse(t, r, w))
      w = r;
    if (w == i)
      return;
    swap_at(t, i, w);
    i = w;
  }
}

static void keep_triple(mi__triples *t, const mi_skip_trigram *item) {
  size_t seq = t->arrived++;
  if (t->count == t->cap) {
    /* A later arrival beats the worst kept only with a strictly higher score. */
    if (!(item->score > t->items[0].score))
      return;
    t->items[0] = *item;
    t->seq[0] = seq;
    sift_down(t, 0, t->count);
    return;
  }
  size_t i = t->count++;
  t->items[i] = *item;
  t->seq[i] = seq;
  while (i > 0 && worse(t, i, (i - 1) / 2)) {
    swap_at(t, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

void mi__triples_sort(mi__triples *t) {
  for (size_t end = t->count; end > 1; end--) {
    swap_at(t, 0, end - 1);
    sift_down(t, 0, end - 1);
  }
}

/* Everything the search allocates, freed in one place. */
typedef struct search {
  size_t n, r, done, total;
  size_t ov_picks, qk_picks; /* top entries a line of each circuit */
  double *mean, *sd; /* one circuit's row statistics */
  size_t *pick;      /* one circuit's top picks a line: index, then value */
  float *pick_v;
  float *diag;       /* OV diagonal thresholds, when copying accuracy is asked */
  float *keys, *zf;  /* QK: [B column, 1] and [a/sd, −mean/sd] rows, n × (r + 1) */
  size_t *live;      /* QK: the rows with z-scores, in order (zf's rows) */
  mi__ranks ov, qk;
  mi__triples top;
} search;

static void search_free(search *s) {
  free(s->mean);
  free(s->sd);
  free(s->pick);
  free(s->pick_v);
  free(s->diag);
  free(s->keys);
  free(s->zf);
  free(s->live);
  free(s->ov.best);
  free(s->ov.z);
  free(s->qk.best);
  free(s->qk.z);
  free(s->top.items);
  free(s->top.seq);
}

static mi_status search_alloc(search *s, const mi_model *model, size_t capacity,
                              const mi_skip_trigram_options *opt) {
  const mi_config *c = &model->config;
  size_t n = c->d_vocab;
  s->n = n;
  s->r = c->d_head;
  s->ov.k = opt->outputs_per_source;
  s->qk.k = opt->destinations_per_source;
  /* One more than kept: a line's own index (the diagonal) is left out. The
   * copying accuracy reads a row's 5 best entries off the diagonal. */
  bool accuracy = opt->ov_top1 != NULL || opt->ov_top5 != NULL;
  size_t ko = accuracy && s->ov.k < COPYING_PICKS ? COPYING_PICKS : s->ov.k;
  s->ov_picks = ko < n ? ko + 1 : n;
  s->qk_picks = s->qk.k < n ? s->qk.k + 1 : n;
  size_t picks = s->ov_picks > s->qk_picks ? s->ov_picks : s->qk_picks;
  /* No more results than triples: L·H·n·outputs·destinations. */
  size_t triples = c->n_layers * c->n_heads, ovn, qkn, pickn, zn;
  if (!mi__mul_size(&triples, triples, n) || !mi__mul_size(&triples, triples, s->ov.k) ||
      !mi__mul_size(&triples, triples, s->qk.k))
    triples = SIZE_MAX;
  s->top.cap = capacity < triples ? capacity : triples;
  if (!mi__mul_size(&ovn, n, s->ov.k) || !mi__mul_size(&qkn, n, s->qk.k) ||
      !mi__mul_size(&pickn, n, picks) || !mi__mul_size(&zn, n, s->r + 1) ||
      pickn > SIZE_MAX / sizeof(size_t) || zn > SIZE_MAX / sizeof(float) ||
      s->top.cap > SIZE_MAX / sizeof(mi_skip_trigram))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "skip-trigrams: %zu outputs and %zu destinations "
                    "for %zu sources, %zu results overflow size_t", s->ov.k, s->qk.k, n,
                    capacity);
  s->mean = malloc(n * sizeof *s->mean);
  s->sd = malloc(n * sizeof *s->sd);
  s->pick = malloc(pickn * sizeof *s->pick);
  s->pick_v = malloc(pickn * sizeof *s->pick_v);
  s->keys = malloc(zn * sizeof *s->keys);
  s->zf = malloc(zn * sizeof *s->zf);
  s->live = malloc(n * sizeof *s->live);
  s->diag = accuracy ? malloc(n * sizeof *s->diag) : NULL;
  s->ov.best = calloc(ovn, sizeof *s->ov.best);
  s->ov.z = calloc(ovn, sizeof *s->ov.z);
  s->qk.best = calloc(qkn, sizeof *s->qk.best);
  s->qk.z = calloc(qkn, sizeof *s->qk.z);
  s->top.items = malloc((s->top.cap ? s->top.cap : 1) * sizeof *s->top.items);
  s->top.seq = malloc((s->top.cap ? s->top.cap : 1) * sizeof *s->top.seq);
  if (!s->mean || !s->sd || !s->pick || !s->pick_v || !s->keys || !s->zf || !s->live ||
      (accuracy && !s->diag) || !s->ov.best ||
      !s->ov.z || !s->qk.best || !s->qk.z || !s->top.items || !s->top.seq)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "skip-trigrams: statistics, top-%zu lines and "
                    "z factors of %zu x %zu, ranks of %zu sources and %zu results", picks,
                    n, s->r + 1, n, s->top.cap);
  s->total = 2 * c->n_layers * c->n_heads;
  return MI_OK;
}

/* Whether row i has z-scores: a finite, non-zero spread. */
static bool spread(const search *s, size_t i) {
  return s->sd[i] > 0.0 && isfinite(s->sd[i]) && isfinite(s->mean[i]);
}

/*
 * Line `line`'s picks into ranks: the first k whose index is not the line's
 * own and whose z-score row `row_of` has spread, each z-scored in double
 * from the factors: (M[row][col] − mean[row]) / sd[row].
 */
static mi_status take_picks(const search *s, mi__ranks *r, size_t picks,
                            const mi_circuit *circuit, size_t line, bool by_column) {
  size_t kept = 0;
  for (size_t c = 0; c < picks && kept < r->k; c++) {
    size_t other = s->pick[line * picks + c];
    size_t row = by_column ? other : line, col = by_column ? line : other;
    if (other == line || !spread(s, row))
      continue;
    double x;
    mi_status status = mi_circuit_entry(&x, circuit, row, col);
    if (status != MI_OK)
      return status;
    r->best[line * r->k + kept] = other;
    r->z[line * r->k + kept] = (x - s->mean[row]) / s->sd[row];
    kept++;
  }
  return MI_OK;
}

/* Lines a job of the picks' re-scoring: enough to outweigh handing it out. */
enum { PICK_CHUNK = 512 };

/* One circuit's picks into its ranks, PICK_CHUNK lines a job (take_picks). */
typedef struct picks_job {
  const search *s;
  mi__ranks *r;
  size_t picks;
  const mi_circuit *circuit;
  bool by_column;
} picks_job;

static mi_status picks_chunk(size_t c, void *user) {
  const picks_job *j = user;
  size_t end = (c + 1) * PICK_CHUNK < j->s->n ? (c + 1) * PICK_CHUNK : j->s->n;
  mi_status status = MI_OK;
  for (size_t line = c * PICK_CHUNK; line < end && status == MI_OK; line++)
    if (j->by_column || spread(j->s, line))
      status = take_picks(j->s, j->r, j->picks, j->circuit, line, j->by_column);
  return status;
}

static mi_status take_all_picks(const search *s, mi__ranks *r, size_t picks,
                                const mi_circuit *circuit, bool by_column) {
  picks_job job = {s, r, picks, circuit, by_column};
  return mi__parallel_for((s->n + PICK_CHUNK - 1) / PICK_CHUNK, picks_chunk, &job);
}

/*
 * Top-1 and top-5 copying accuracy (mi_circuit_copying_accuracy) from the
 * OV rows' picks. A row's diagonal rank counts the entries off the diagonal
 * that are > its threshold (copying.c), so rank < k exactly when the row
 * has fewer than k such entries or its k-th largest is not > the threshold;
 * the picks are the row's largest entries in the same float32 values (the
 * same scan of the same factors), and at least 6 of them hold the 5
 * largest off the diagonal.
 */
static void copying_from_picks(double *top1, double *top5, const search *s) {
  size_t n = s->n, ranked[2] = {0, 0};
  for (size_t i = 0; i < n; i++) {
    bool below[2] = {true, true}; /* rank < 1, rank < 5 */
    size_t seen = 0;
    for (size_t c = 0; c < s->ov_picks && seen < COPYING_PICKS; c++) {
      if (s->pick[i * s->ov_picks + c] == i)
        continue;
      float v = s->pick_v[i * s->ov_picks + c];
      if (seen == 0)
        below[0] = !(v > s->diag[i]);
      if (seen == COPYING_PICKS - 1)
        below[1] = !(v > s->diag[i]);
      seen++;
    }
    ranked[0] += below[0];
    ranked[1] += below[1];
  }
  *top1 = (double)ranked[0] / (double)n;
  *top5 = (double)ranked[1] / (double)n;
}

/*
 * OV ranks: each source row's best outputs are its largest entries; with
 * `top1`/`top5` (either may be NULL) also head (l, h)'s copying accuracy
 * from the same pass.
 */
static mi_status ov_ranks(search *s, const mi_circuit *ov, size_t l, size_t h, double *top1,
                          double *top5) {
  size_t n = s->n;
  ranks_reset(&s->ov, n);
  mi_status status = mi_circuit_row_stats(s->mean, s->sd, ov, 0, n, 0);
  if (status == MI_OK && s->diag)
    status = mi__diag_thresholds(s->diag, ov, 0, n);
  mi__matrix A, B;
  mi__circuit_factors(&A, &B, ov);
  mi__select scan = {MI__SELECT_LARGEST, s->ov_picks, s->pick, s->pick_v, s->ov_picks,
                     NULL, NULL, 0};
  if (status == MI_OK) {
    status = mi__select_rows(A, B, 0, n, &scan);
    if (status == MI_ERR_NUMERIC)
      return mi__fail(status, "skip-trigrams: head (%zu, %zu)'s OV circuit overflowed "
                      "float32 (an infinity or NaN in a row)", l, h);
  }
  if (status == MI_OK)
    status = take_all_picks(s, &s->ov, s->ov_picks, ov, false);
  if (status == MI_OK && s->diag) {
    double t1, t5;
    copying_from_picks(&t1, &t5, s);
    if (top1)
      *top1 = t1;
    if (top5)
      *top5 = t5;
  }
  return status;
}

/* Rows a job of the QK z factors. */
enum { Z_CHUNK = 1024 };

typedef struct z_factors_job {
  search *s;
  const mi_circuit *qk;
} z_factors_job;

/*
 * Rows c·Z_CHUNK .. of the QK z factors, each at its own row of zf and
 * keys: [a_d / sd_d, −mean_d / sd_d] and [b_d, 1]. A row whose scaled
 * factors overflow float loses its spread (sd_d ← 0: no z-scores from it).
 */
static mi_status z_factors_part(size_t c, void *user) {
  const z_factors_job *j = user;
  search *s = j->s;
  size_t r1 = s->r + 1, end = (c + 1) * Z_CHUNK < s->n ? (c + 1) * Z_CHUNK : s->n;
  mi__matrix A, B;
  mi__circuit_factors(&A, &B, j->qk);
  for (size_t d = c * Z_CHUNK; d < end; d++) {
    float *z = s->zf + d * r1, *key = s->keys + d * r1;
    bool finite = spread(s, d);
    for (size_t t = 0; t < s->r; t++) {
      z[t] = finite ? (float)(A.data[(ptrdiff_t)d * A.rs + (ptrdiff_t)t * A.cs] / s->sd[d])
                    : 0.0f;
      key[t] = B.data[(ptrdiff_t)t * B.rs + (ptrdiff_t)d * B.cs];
      finite = finite && isfinite(z[t]);
    }
    z[s->r] = finite ? (float)(-s->mean[d] / s->sd[d]) : 0.0f;
    key[s->r] = 1.0f;
    if (!finite || !isfinite(z[s->r]))
      s->sd[d] = 0.0;
  }
  return MI_OK;
}

/*
 * QK ranks: column src of the z matrix Z[d][src] = (a_d·b_src − mean_d) /
 * sd_d = [a_d / sd_d, −mean_d / sd_d]·[b_src; 1], streamed as the rows of
 * [b_src, 1] times the scaled rows' transpose. Only rows with z-scores
 * enter it, in order (so ties still go to the lower row): a row without
 * spread, or whose scaled row overflows float, has none. (Scoring such a
 * row −∞ instead would put an infinity in the factors, which sends the
 * whole pass to the screened BLIS way and fails it as an overflow.)
 */
static mi_status qk_ranks(search *s, const mi_circuit *qk, size_t l, size_t h) {
  size_t n = s->n, r1 = s->r + 1, m = 0;
  ranks_reset(&s->qk, n);
  mi_status status = mi_circuit_row_stats(s->mean, s->sd, qk, 0, n, 0);
  if (status != MI_OK)
    return status;
  z_factors_job job = {s, qk};
  status = mi__parallel_for((n + Z_CHUNK - 1) / Z_CHUNK, z_factors_part, &job);
  if (status != MI_OK)
    return status;
  for (size_t d = 0; d < n; d++) /* the rows with z-scores, moved up in order */
    if (spread(s, d)) {
      if (m != d)
        memcpy(s->zf + m * r1, s->zf + d * r1, r1 * sizeof *s->zf);
      s->live[m++] = d;
    }
  if (m == 0)
    return MI_OK; /* no row has z-scores: no destinations */
  size_t picks = s->qk_picks < m ? s->qk_picks : m;
  mi__select scan = {MI__SELECT_LARGEST, picks, s->pick, s->pick_v, picks, NULL, NULL, 0};
  status = mi__select_rows(mi__matrix_rowmajor(s->keys, n, r1),
                           mi__matrix_t(mi__matrix_rowmajor(s->zf, m, r1)), 0, n, &scan);
  if (status == MI_ERR_NUMERIC)
    return mi__fail(status, "skip-trigrams: head (%zu, %zu)'s QK z-scores overflowed float32",
                    l, h);
  for (size_t i = 0; i < n * picks && status == MI_OK; i++)
    s->pick[i] = s->live[s->pick[i]];
  if (status == MI_OK)
    status = take_all_picks(s, &s->qk, picks, qk, true);
  return status;
}

void mi__triples_offer(mi__triples *top, const mi__ranks *ov, const mi__ranks *qk, size_t n,
                       size_t l, size_t h) {
  for (size_t src = 0; src < n; src++)
    for (size_t a = 0; a < ov->k; a++)
      for (size_t b = 0; b < qk->k; b++) {
        size_t oi = src * ov->k + a, qi = src * qk->k + b;
        if (ov->best[oi] == SIZE_MAX || qk->best[qi] == SIZE_MAX)
          continue;
        mi_skip_trigram t = {sizeof t, l, h, src, qk->best[qi], ov->best[oi],
                             qk->z[qi], ov->z[oi], 0};
        /* min rather than the sum: a triple needs both halves (on the shipped
         * 1-layer model the top 24 hold 13 of 16 planted trigrams with min,
         * 11 with the sum). */
        t.score = t.qk_z < t.ov_z ? t.qk_z : t.ov_z;
        keep_triple(top, &t);
      }
}


static mi_status search_heads(search *s, const mi_model *model,
                              const mi_skip_trigram_options *opt) {
  for (size_t l = 0; l < model->config.n_layers; l++)
    for (size_t h = 0; h < model->config.n_heads; h++) {
      mi_circuit *ov = NULL, *qk = NULL;
      mi_status status = mi_circuit_ov(&ov, model, l, h);
      if (status == MI_OK)
        status = mi_circuit_qk(&qk, model, l, h, MI_EMBED_TOKEN, MI_EMBED_TOKEN, opt->qk_flags);
      size_t line = l * model->config.n_heads + h;
      if (status == MI_OK)
        status = ov_ranks(s, ov, l, h, opt->ov_top1 ? opt->ov_top1 + line : NULL,
                          opt->ov_top5 ? opt->ov_top5 + line : NULL);
      if (status == MI_OK && opt->progress)
        opt->progress(++s->done, s->total, opt->progress_user);
      if (status == MI_OK)
        status = qk_ranks(s, qk, l, h);
      if (status == MI_OK && opt->progress)
        opt->progress(++s->done, s->total, opt->progress_user);
      mi_circuit_free(ov);
      mi_circuit_free(qk);
      if (status != MI_OK)
        return status;
      mi__triples_offer(&s->top, &s->ov, &s->qk, s->n, l, h);
    }
  return MI_OK;
}

mi_status mi_model_skip_trigrams(mi_skip_trigram *out, size_t *out_count, size_t capacity,
                                 const mi_model *model,
                                 const mi_skip_trigram_options *options) {
  MI_CHECK_ARG(out_count);
  *out_count = 0;
  MI_CHECK_ARG(model);
  mi_skip_trigram_options opt;
  mi_skip_trigram_options_init(&opt, sizeof opt);
  mi_status status = mi__struct_in(&opt, sizeof opt, options, "mi_skip_trigram_options");
  if (status != MI_OK)
    return status;
  if (opt.qk_flags & ~(unsigned)(MI_QK_BIAS | MI_QK_SCALE))
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "skip-trigrams: unknown qk_flags bits 0x%x",
                    opt.qk_flags);
  if (opt.outputs_per_source == 0 || opt.destinations_per_source == 0)
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "skip-trigrams: %zu outputs and %zu destinations per source; each must "
                    "be at least 1", opt.outputs_per_source, opt.destinations_per_source);
  size_t heads = model->config.n_layers * model->config.n_heads;
  if ((opt.ov_top1 || opt.ov_top5) && opt.ov_accuracy_count < heads)
    return mi__fail(MI_ERR_SHAPE, "skip-trigrams: ov_accuracy_count %zu for %zu x %zu heads",
                    opt.ov_accuracy_count, model->config.n_layers, model->config.n_heads);
  if (capacity == 0)
    return MI_OK;
  MI_CHECK_ARG(out);
  size_t stride = out[0].struct_size;
  if (stride < sizeof(size_t))
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "out[0].struct_size is %zu; set it to sizeof(mi_skip_trigram)", stride);
  /* BLIS_ARCH_TYPE is checked before any work. */
  status = mi__blis_begin();
  if (status != MI_OK)
    return status;
  search s = {0};
  status = search_alloc(&s, model, capacity, &opt);
  if (status == MI_OK)
    status = search_heads(&s, model, &opt);
  if (status == MI_OK) {
    mi__triples_sort(&s.top);
    size_t size = stride < sizeof(mi_skip_trigram) ? stride : sizeof(mi_skip_trigram);
    for (size_t i = 0; i < s.top.count; i++) {
      mi_skip_trigram *dst = (mi_skip_trigram *)((char *)out + i * stride);
      memcpy(dst, &s.top.items[i], size);
      dst->struct_size = size;
    }
    *out_count = s.top.count;
  }
  search_free(&s);
  return status;
}
