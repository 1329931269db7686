/*
 * trigrams.c: the skip-trigram search (mi_model_skip_trigrams): every head's
 * token QK and OV circuits streamed in blocks of rows, each entry z-scored
 * within its row, each source's best outputs and destinations paired.
 */
#include "trigrams.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/* What the threads share while one block of rows (i0 .. i0 + rows) is scanned. */
typedef struct block_scan {
  const float *block; /* rows × n, row-major */
  size_t n, i0, rows;
  double *mean, *inv_sd; /* per block row */
  bool *spread;          /* per block row: row_stats succeeded */
  mi__ranks *r;
} block_scan;

/* One thread's share: rows r0..r1 of the block (or columns, for QK ranks). */
typedef struct scan_job {
  const block_scan *b;
  size_t from, to;
} scan_job;

/* OV: for rows (sources) from..to, the best outputs other than the source. */
static void *ov_worker(void *arg) {
  const scan_job *j = arg;
  const block_scan *b = j->b;
  size_t n = b->n, k = b->r->k;
  for (size_t r = j->from; r < j->to; r++) {
    const float *row = b->block + r * n;
    size_t s = b->i0 + r;
    double mean, inv_sd;
    if (!mi__row_stats(row, n, &mean, &inv_sd, NULL))
      continue;
    for (size_t o = 0; o < n; o++)
      if (o != s)
        mi__keep_best(b->r->best + s * k, b->r->z + s * k, k, o, (row[o] - mean) * inv_sd);
  }
  return NULL;
}

/* QK, first pass: the statistics of rows from..to. */
static void *stats_worker(void *arg) {
  const scan_job *j = arg;
  const block_scan *b = j->b;
  for (size_t r = j->from; r < j->to; r++)
    b->spread[r] = mi__row_stats(b->block + r * b->n, b->n, &b->mean[r], &b->inv_sd[r], NULL);
  return NULL;
}

/*
 * QK, second pass: for key columns (sources) from..to, the destination rows
 * of the block that rank them highest, other than their own. Columns are
 * split between threads, so each source's ranks have one writer and see the
 * rows in order, as a serial scan would.
 */
static void *qk_worker(void *arg) {
  const scan_job *j = arg;
  const block_scan *b = j->b;
  size_t n = b->n, k = b->r->k;
  for (size_t r = 0; r < b->rows; r++) {
    if (!b->spread[r])
      continue;
    const float *row = b->block + r * n;
    size_t d = b->i0 + r;
    for (size_t s = j->from; s < j->to; s++)
      if (s != d)
        mi__keep_best(b->r->best + s * k, b->r->z + s * k, k, d,
                  (row[s] - b->mean[r]) * b->inv_sd[r]);
  }
  return NULL;
}

/* Runs `worker` over 0..length cut into at most `threads` contiguous parts. */
static void run_split(void *(*worker)(void *), const block_scan *b, size_t length,
                      size_t threads, scan_job *jobs) {
  if (threads > length)
    threads = length;
  for (size_t t = 0; t < threads; t++)
    jobs[t] = (scan_job){b, length * t / threads, length * (t + 1) / threads};
  mi__run_threads(worker, jobs, sizeof jobs[0], threads);
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
  size_t n, block_rows, threads, done, total;
  float *block;
  double *mean, *inv_sd;
  bool *spread;
  scan_job *jobs;
  mi__ranks ov, qk;
  mi__triples top;
} search;

static void search_free(search *s) {
  free(s->block);
  free(s->mean);
  free(s->inv_sd);
  free(s->spread);
  free(s->jobs);
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
  /* Blocks of at most 4 Mi floats (16 MiB), whatever the vocabulary. */
  s->block_rows = ((size_t)1 << 22) / n ? ((size_t)1 << 22) / n : 1;
  if (s->block_rows > n)
    s->block_rows = n;
  s->threads = mi__thread_count();
  if (s->threads > MI__MAX_THREADS)
    s->threads = MI__MAX_THREADS;
  s->ov.k = opt->outputs_per_source;
  s->qk.k = opt->destinations_per_source;
  /* No more results than triples: L·H·n·outputs·destinations. */
  size_t triples = c->n_layers * c->n_heads, ovn, qkn;
  if (!mi__mul_size(&triples, triples, n) || !mi__mul_size(&triples, triples, s->ov.k) ||
      !mi__mul_size(&triples, triples, s->qk.k))
    triples = SIZE_MAX;
  s->top.cap = capacity < triples ? capacity : triples;
  if (!mi__mul_size(&ovn, n, s->ov.k) || !mi__mul_size(&qkn, n, s->qk.k) ||
      s->top.cap > SIZE_MAX / sizeof(mi_skip_trigram))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "skip-trigrams: %zu outputs and %zu destinations "
                    "for %zu sources, %zu results overflow size_t", s->ov.k, s->qk.k, n,
                    capacity);
  s->block = malloc(s->block_rows * n * sizeof *s->block);
  s->mean = malloc(s->block_rows * sizeof *s->mean);
  s->inv_sd = malloc(s->block_rows * sizeof *s->inv_sd);
  s->spread = malloc(s->block_rows * sizeof *s->spread);
  s->jobs = malloc(s->threads * sizeof *s->jobs);
  s->ov.best = calloc(ovn, sizeof *s->ov.best);
  s->ov.z = calloc(ovn, sizeof *s->ov.z);
  s->qk.best = calloc(qkn, sizeof *s->qk.best);
  s->qk.z = calloc(qkn, sizeof *s->qk.z);
  s->top.items = malloc((s->top.cap ? s->top.cap : 1) * sizeof *s->top.items);
  s->top.seq = malloc((s->top.cap ? s->top.cap : 1) * sizeof *s->top.seq);
  if (!s->block || !s->mean || !s->inv_sd || !s->spread || !s->jobs || !s->ov.best ||
      !s->ov.z || !s->qk.best || !s->qk.z || !s->top.items || !s->top.seq)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "skip-trigrams: a block of %zu x %zu floats, "
                    "ranks of %zu sources and %zu results", s->block_rows, n, n, s->top.cap);
  s->total = 2 * c->n_layers * c->n_heads * ((n + s->block_rows - 1) / s->block_rows);
  return MI_OK;
}

/* Ranks from one circuit, block by block; `qk` says which kind. */
static mi_status sweep(search *s, mi__ranks *r, const mi_circuit *circuit, bool qk,
                       const mi_skip_trigram_options *opt) {
  size_t n = s->n;
  ranks_reset(r, n);
  for (size_t i0 = 0; i0 < n; i0 += s->block_rows) {
    size_t i1 = i0 + s->block_rows < n ? i0 + s->block_rows : n;
    mi_status status = mi_circuit_rows(s->block, n, circuit, i0, i1);
    if (status != MI_OK)
      return status;
    block_scan b = {s->block, n, i0, i1 - i0, s->mean, s->inv_sd, s->spread, r};
    if (qk) {
      run_split(stats_worker, &b, b.rows, s->threads, s->jobs);
      run_split(qk_worker, &b, n, s->threads, s->jobs);
    } else {
      run_split(ov_worker, &b, b.rows, s->threads, s->jobs);
    }
    if (opt->progress)
      opt->progress(++s->done, s->total, opt->progress_user);
  }
  return MI_OK;
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
      if (status == MI_OK)
        status = sweep(s, &s->ov, ov, false, opt);
      if (status == MI_OK)
        status = sweep(s, &s->qk, qk, true, opt);
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
  if (capacity == 0)
    return MI_OK;
  MI_CHECK_ARG(out);
  size_t stride = out[0].struct_size;
  if (stride < sizeof(size_t))
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "out[0].struct_size is %zu; set it to sizeof(mi_skip_trigram)", stride);
  /* mi__thread_count reads BLIS's settings: BLIS_ARCH_TYPE is checked first. */
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
