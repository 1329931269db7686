/*
 * eigen.c: eigenvalue summaries of circuits, and the report over all heads
 * of a model that shares the vocabulary-sized Gram products between them.
 */
#include "linalg.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* |λ| below this share of the largest counts as zero (documented in mi.h). */
static const double NONZERO = 1e-6;

/* Fills the statistics of eigenvalues re/im [r], sorted by decreasing modulus. */
static void summarize(mi_eigen_summary *s, const double *re, const double *im, size_t r) {
  double cut = r > 0 ? NONZERO * hypot(re[0], im[0]) : 0.0, sum = 0, mass = 0, positive = 0;
  size_t nonzero = 0;
  for (size_t i = 0; i < r; i++) {
    double mod = hypot(re[i], im[i]);
    if (!(mod > cut))
      continue;
    nonzero++;
    sum += re[i];
    mass += mod;
    if (im[i] == 0.0 && re[i] > 0.0)
      positive += mod;
  }
  s->struct_size = sizeof *s;
  s->copying_score = mass > 0 ? sum / mass : 0.0;
  s->positive_real_fraction = mass > 0 ? positive / mass : 0.0;
  s->nonzero = nonzero;
}

mi_status mi_circuit_eigen_summary(mi_eigen_summary *out, const mi_circuit *circuit) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(circuit);
  if (out->struct_size < sizeof out->struct_size) /* refused before the work */
    return mi__struct_out(out, NULL, 0, "mi_eigen_summary");
  size_t n, m, r;
  mi_circuit_shape(&n, &m, &r, circuit);
  if (n != m)
    return mi__fail(MI_ERR_SHAPE, "eigen summary of a %zu x %zu circuit: it is not square",
                    n, m);
  size_t count = n < r ? n : r;
  double *re = malloc(2 * count * sizeof *re);
  if (re == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "eigen summary: %zu eigenvalues", count);
  mi_status status = mi_circuit_eigenvalues(re, re + count, count, circuit);
  if (status == MI_OK) {
    mi_eigen_summary s;
    summarize(&s, re, re + count, count);
    status = mi__struct_out(out, &s, sizeof s, "mi_eigen_summary");
  }
  free(re);
  return status;
}

mi_status mi_circuit_prev_token_share(double *out, const mi_circuit *circuit) {
  enum { BLOCK = 64 };
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(circuit);
  size_t n, m;
  mi_circuit_shape(&n, &m, NULL, circuit);
  if (n != m || n < 2)
    return mi__fail(MI_ERR_SHAPE,
                    "previous-token share of a %zu x %zu circuit: it needs a square "
                    "positional circuit of at least 2 positions", n, m);
  size_t rows = n < BLOCK ? n : BLOCK, hits = 0;
  float *block = malloc(rows * n * sizeof *block);
  if (block == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "previous-token share: %zu x %zu block", rows, n);
  mi_status status = MI_OK;
  for (size_t p0 = 1; p0 < n && status == MI_OK; p0 += rows) {
    size_t p1 = n - p0 < rows ? n : p0 + rows;
    status = mi_circuit_rows(block, n, circuit, p0, p1);
    for (size_t p = p0; p < p1 && status == MI_OK; p++) {
      const float *x = block + (p - p0) * n;
      size_t best = 0;
      for (size_t s = 1; s <= p; s++) /* causal: keys 0..p; ties to the lower */
        if (x[s] > x[best])
          best = s;
      hits += best == p - 1;
    }
  }
  free(block);
  if (status == MI_OK)
    *out = (double)hits / (double)(n - 1);
  return status;
}

void mi_report_options_init(mi_report_options *out, size_t struct_size) {
  const mi_report_options defaults = {.struct_size = sizeof defaults,
                                      .qk_flags = MI_QK_BIAS | MI_QK_SCALE,
                                      .prev_token = 1,
                                      .behaviour_sequences = 16,
                                      .behaviour_seed = 1};
  mi__struct_init(out, struct_size, &defaults, sizeof defaults);
}

/* ---- the report ------------------------------------------------------------------- */

/* Scratch of one report, allocated once. */
typedef struct report_work {
  size_t D, D1, dh, H, Hkv;
  float *g_ue;  /* W_U W_E, D × D */
  float *g_ee;  /* [W_E, 1]ᵀ[W_E, 1], D1 × D1 with D1 = D + 1 */
  float *wide;  /* one layer's stacked weights, D1 × (H · dh) */
  float *x_ov;  /* W_U W_E · the layer's stacked W_V, D × (H · dh) */
  float *x_qk;  /* s · Gram · the layer's stacked [W_Q; b_Q], D1 × (H · dh) */
} report_work;

static void work_free(report_work *w) {
  free(w->g_ue); free(w->g_ee); free(w->wide); free(w->x_ov); free(w->x_qk);
}

static mi_status work_alloc(report_work *w, const mi_config *c) {
  w->D = c->d_model;
  w->D1 = c->d_model + 1;
  w->dh = c->d_head;
  w->H = c->n_heads;
  w->Hkv = c->n_kv_heads;
  size_t wide;
  if (!mi__mul_size(&wide, w->H, w->dh) || !mi__mul_size(&wide, wide, w->D1) ||
      wide > SIZE_MAX / sizeof(double) || w->D1 > SIZE_MAX / sizeof(double) / w->D1)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "report: d_model %zu x heads %zu overflow", w->D,
                    w->H);
  w->g_ue = malloc(w->D * w->D * sizeof *w->g_ue);
  w->g_ee = malloc(w->D1 * w->D1 * sizeof *w->g_ee);
  w->wide = malloc(wide * sizeof *w->wide);
  w->x_ov = malloc(wide * sizeof *w->x_ov);
  w->x_qk = malloc(wide * sizeof *w->x_qk);
  if (!w->g_ue || !w->g_ee || !w->wide || !w->x_ov || !w->x_qk)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "report: work space for d_model %zu", w->D);
  return MI_OK;
}

/*
 * The two Grams shared by every head. [W_E, 1]ᵀ[W_E, 1] carries the column
 * sums of W_E and d_vocab in its last row and column, so that biased QK
 * circuits, A = E W_Q + 1 b_Q, reduce to the same Gram.
 */
static mi_status grams(report_work *w, const mi_model *model) {
  size_t D = w->D, D1 = w->D1, V = model->config.d_vocab;
  mi__matrix E = mi__matrix_rowmajor(model->w[MI_W_E], V, D);
  mi_status status =
      mi__sgemm(1.0f, mi__matrix_rowmajor(model->w[MI_W_U], D, V), E, 0.0f,
                mi__matrix_rowmajor(w->g_ue, D, D));
  if (status == MI_OK)
    status = mi__sgemm(1.0f, mi__matrix_t(E), E, 0.0f, (mi__matrix){w->g_ee, D, D,
                                                                     (ptrdiff_t)D1, 1});
  if (status != MI_OK)
    return status;
  double *sums = calloc(D, sizeof *sums);
  if (sums == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "report: %zu column sums", D);
  for (size_t t = 0; t < V; t++)
    for (size_t j = 0; j < D; j++)
      sums[j] += E.data[t * D + j];
  for (size_t j = 0; j < D; j++)
    w->g_ee[j * D1 + D] = w->g_ee[D * D1 + j] = (float)sums[j];
  w->g_ee[D * D1 + D] = (float)V;
  free(sums);
  return MI_OK;
}

/*
 * Stacks `rows` × dh weights of each of `count` copies side by side into
 * w->wide (rows × count·dh, leading dimension H·dh), with an extra row
 * from `bias` (or zeros) when `extra` is set.
 */
static void stack(report_work *w, const float *first, const float *bias, size_t count,
                  bool extra) {
  size_t D = w->D, dh = w->dh, ld = w->H * dh;
  for (size_t h = 0; h < count; h++) {
    for (size_t i = 0; i < D; i++)
      memcpy(w->wide + i * ld + h * dh, first + (h * D + i) * dh, dh * sizeof(float));
    if (extra)
      for (size_t j = 0; j < dh; j++)
        w->wide[D * ld + h * dh + j] = bias ? bias[h * dh + j] : 0.0f;
  }
}

/*
 * The d_model-sized products of layer l, one GEMM each for all its heads:
 * OV's W_U W_E · [W_V of every kv head], QK's s · Gram · [W_Q; b_Q of every
 * query head]. What is left per head is d_head × d_model × d_head.
 */
static mi_status layer_products(report_work *w, const mi_model *model, size_t l, bool bias,
                                float scale) {
  size_t D = w->D, D1 = w->D1, dh = w->dh, H = w->H, Hkv = w->Hkv, ld = H * dh;
  const float *const *W = (const float *const *)model->w;
  stack(w, W[MI_W_V] + l * Hkv * D * dh, NULL, Hkv, false);
  mi_status status = mi__sgemm(1.0f, mi__matrix_rowmajor(w->g_ue, D, D),
                               (mi__matrix){w->wide, D, Hkv * dh, (ptrdiff_t)ld, 1}, 0.0f,
                               (mi__matrix){w->x_ov, D, Hkv * dh, (ptrdiff_t)ld, 1});
  if (status != MI_OK)
    return status;
  stack(w, W[MI_W_Q] + l * H * D * dh, bias ? W[MI_B_Q] + l * H * dh : NULL, H, true);
  return mi__sgemm(scale, mi__matrix_rowmajor(w->g_ee, D1, D1),
                   (mi__matrix){w->wide, D1, H * dh, (ptrdiff_t)ld, 1}, 0.0f,
                   (mi__matrix){w->x_qk, D1, H * dh, (ptrdiff_t)ld, 1});
}

/* The per-head work of one layer, shared by its threads: unit u < H is
 * head u's OV, unit H + u its QK, each taken whole by one thread. */
typedef struct layer_units {
  const report_work *w;
  const mi_model *model;
  size_t l;
  bool bias;
  mi_eigen_summary *ov, *qk; /* the layer's H summaries of each */
  atomic_size_t next;
} layer_units;

/* One thread's scratch: a head's left factor, its B·A in float and double. */
typedef struct head_job {
  layer_units *units;
  float *left, *ba;
  double *m;
  mi_status status;
} head_job;

/* B·A of one unit into job->ba, dh × dh. */
static mi_status unit_ba(head_job *job, size_t u) {
  const layer_units *lu = job->units;
  const report_work *w = lu->w;
  size_t D = w->D, D1 = w->D1, dh = w->dh, H = w->H, Hkv = w->Hkv, ld = H * dh;
  const float *const *W = (const float *const *)lu->model->w;
  size_t h = u % H, kv = mi__kv_head(lu->model, h);
  mi__matrix out = mi__matrix_rowmajor(job->ba, dh, dh);
  if (u < H) /* OV: B·A = W_O · (W_U W_E W_V) */
    return mi__sgemm(1.0f,
                     mi__matrix_rowmajor((float *)W[MI_W_O] + (lu->l * H + h) * dh * D, dh, D),
                     (mi__matrix){w->x_ov + kv * dh, D, dh, (ptrdiff_t)ld, 1}, 0.0f, out);
  /* QK: B·A = [W_K; b_K]ᵀ · (s · Gram · [W_Q; b_Q]) */
  const float *WK = W[MI_W_K] + (lu->l * Hkv + kv) * D * dh;
  for (size_t i = 0; i < D; i++) /* left = [W_K; b_K]ᵀ, dh × D1 */
    for (size_t j = 0; j < dh; j++)
      job->left[j * D1 + i] = WK[i * dh + j];
  for (size_t j = 0; j < dh; j++)
    job->left[j * D1 + D] = lu->bias ? W[MI_B_K][(lu->l * Hkv + kv) * dh + j] : 0.0f;
  return mi__sgemm(1.0f, mi__matrix_rowmajor(job->left, dh, D1),
                   (mi__matrix){w->x_qk + h * dh, D1, dh, (ptrdiff_t)ld, 1}, 0.0f, out);
}

static void *head_worker(void *arg) {
  head_job *job = arg;
  layer_units *lu = job->units;
  size_t H = lu->w->H, dh = lu->w->dh;
  while (job->status == MI_OK) {
    size_t u = atomic_fetch_add(&lu->next, 1);
    if (u >= 2 * H)
      break;
    job->status = unit_ba(job, u);
    for (size_t t = 0; t < dh * dh && job->status == MI_OK; t++)
      job->m[t] = job->ba[t];
    if (job->status == MI_OK)
      job->status = mi__eigenvalues(job->m + dh * dh, job->m + dh * dh + dh, job->m, dh);
    if (job->status == MI_OK)
      summarize(u < H ? &lu->ov[u] : &lu->qk[u - H], job->m + dh * dh,
                job->m + dh * dh + dh, dh);
  }
  return NULL;
}

/*
 * Summaries of every head of the model: per layer its two wide products
 * (threaded inside), then its 2·H small products and eigenproblems, each
 * taken whole by the next free thread (LAPACK's dgeev is serial, and the
 * small products are too small to cut).
 */
static mi_status report_heads(mi_eigen_summary *ov, mi_eigen_summary *qk, report_work *w,
                              const mi_model *model, unsigned qk_flags) {
  size_t dh = w->dh, D1 = w->D1, H = w->H;
  bool bias = (qk_flags & MI_QK_BIAS) && model->w[MI_B_Q] != NULL;
  float scale = (qk_flags & MI_QK_SCALE) ? (float)(1.0 / sqrt((double)dh)) : 1.0f;
  size_t threads = mi__thread_count();
  if (threads > 2 * H)
    threads = 2 * H;
  if (threads > MI__MAX_THREADS)
    threads = MI__MAX_THREADS;
  size_t floats = dh * D1 + dh * dh, doubles = dh * dh + 2 * dh;
  float *scratch = malloc(threads * (floats * sizeof(float) + doubles * sizeof(double)));
  if (scratch == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "report: %zu threads' head work space", threads);
  double *dscratch = (double *)(void *)scratch; /* doubles first: aligned for both */
  float *fscratch = (float *)(void *)(dscratch + threads * doubles);
  head_job jobs[MI__MAX_THREADS];
  mi_status status = MI_OK;
  for (size_t l = 0; l < model->config.n_layers && status == MI_OK; l++) {
    status = layer_products(w, model, l, bias, scale);
    if (status != MI_OK)
      break;
    layer_units units = {w, model, l, bias, ov + l * H, qk + l * H, 0};
    for (size_t t = 0; t < threads; t++)
      jobs[t] = (head_job){&units, fscratch + t * floats, fscratch + t * floats + dh * D1,
                           dscratch + t * doubles, MI_OK};
    mi__run_threads(head_worker, jobs, sizeof jobs[0], threads);
    for (size_t t = 0; t < threads && status == MI_OK; t++)
      if (jobs[t].status != MI_OK)
        status = mi__fail(jobs[t].status, "report: layer %zu: a head's %zu x %zu B*A or its "
                                          "eigenvalues failed (%s)",
                          l, dh, dh, mi_status_str(jobs[t].status));
  }
  free(scratch);
  return status;
}

/* The previous-token share of each head: small, so whole heads a thread. */
typedef struct prev_token_job {
  mi_head_report *lines;
  const mi_model *model;
  unsigned qk_flags;
} prev_token_job;

static mi_status prev_token_head(size_t i, void *user) {
  const prev_token_job *job = user;
  mi_head_report *line = &job->lines[i];
  mi_circuit *pos;
  mi_status status = mi_circuit_qk(&pos, job->model, line->layer, line->head, MI_EMBED_POS,
                                   MI_EMBED_POS, job->qk_flags);
  if (status == MI_OK)
    status = mi_circuit_prev_token_share(&line->prev_token_share, pos);
  mi_circuit_free(pos);
  return status;
}

mi_status mi_model_head_report(mi_head_report *out, size_t count, const mi_model *model,
                               const mi_report_options *options) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(model);
  mi_report_options opt;
  mi_report_options_init(&opt, sizeof opt);
  mi_status status = mi__struct_in(&opt, sizeof opt, options, "mi_report_options");
  if (status != MI_OK)
    return status;
  if (opt.qk_flags & ~(unsigned)(MI_QK_BIAS | MI_QK_SCALE))
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "report: unknown qk_flags bits 0x%x",
                    opt.qk_flags);
  size_t stride = out[0].struct_size;
  if (stride < sizeof(size_t))
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "out[0].struct_size is %zu; set it to sizeof(mi_head_report)", stride);
  const mi_config *c = &model->config;
  size_t heads = c->n_layers * c->n_heads;
  if (count < heads)
    return mi__fail(MI_ERR_SHAPE, "report: %zu lines for %zu layers x %zu heads", count,
                    c->n_layers, c->n_heads);
  /* Results go to a full-size array first, then to the caller's stride. */
  mi_head_report *lines = calloc(heads, sizeof *lines);
  report_work w = {0};
  status = lines ? work_alloc(&w, c)
                           : mi__fail(MI_ERR_OUT_OF_MEMORY, "report: %zu lines", heads);
  if (status == MI_OK)
    status = grams(&w, model);
  mi_eigen_summary *sums = status == MI_OK ? malloc(2 * heads * sizeof *sums) : NULL;
  if (status == MI_OK && sums == NULL)
    status = mi__fail(MI_ERR_OUT_OF_MEMORY, "report: %zu summaries", 2 * heads);
  if (status == MI_OK)
    status = report_heads(sums, sums + heads, &w, model, opt.qk_flags);
  for (size_t i = 0; i < heads && status == MI_OK; i++) {
    lines[i].ov = sums[i];
    lines[i].qk = sums[heads + i];
  }
  free(sums);
  for (size_t i = 0; i < heads && status == MI_OK; i++) {
    lines[i].struct_size = sizeof *lines;
    lines[i].layer = i / c->n_heads;
    lines[i].head = i % c->n_heads;
    lines[i].prev_token_share = NAN;
    lines[i].prev_token_attention = lines[i].duplicate_token_attention = NAN;
    lines[i].induction_attention = NAN;
  }
  /* One position has no previous one: the share stays NaN, as documented. */
  if (status == MI_OK && opt.prev_token && model->w[MI_W_POS] != NULL &&
      model->config.n_ctx >= 2) {
    prev_token_job job = {lines, model, opt.qk_flags};
    status = mi__parallel_for(heads, prev_token_head, &job);
  }
  /* Behaviour only for callers whose lines have room for it. */
  if (status == MI_OK && stride > offsetof(mi_head_report, prev_token_attention))
    status = mi__head_behaviour(lines, model, &opt);
  if (status == MI_OK)
    for (size_t i = 0; i < heads; i++) {
      size_t size = stride < sizeof *lines ? stride : sizeof *lines;
      mi_head_report *dst = (mi_head_report *)((char *)out + i * stride);
      memcpy(dst, &lines[i], size);
      dst->struct_size = size;
    }
  work_free(&w);
  free(lines);
  return status;
}
