/*
 * paths.c: composition scores between heads of different layers, and the
 * chance level they are read against.
 *
 * Every score is ‖X·C·Yᵀ‖_F with X, Y tall (d_model × d_head) and C small.
 * With X = Q_x·R_x (QR), ‖X·M‖_F = ‖R_x·M‖_F for any M, so each head is
 * reduced once to a d_head × d_model "left" factor L (R_V·W_O: the rows its
 * OV circuit writes) and a d_model × d_head "right" factor R per kind (what
 * the later head reads), and a score is ‖L·R‖²_F = ⟨LᵀL, R·Rᵀ⟩_F: an inner
 * product of two d_model × d_model Grams, which a table takes for every
 * pair at once as one product streamed over tiles of the Grams
 * (composition_tables): O(d_model²) a pair instead of O(d_head² · d_model).
 */
#include "linalg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/*
 * An R (dh × dh, upper triangular) with RᵀR = TᵀT for the tall D × dh
 * matrix T: T = m for m D × dh, or T = mᵀ for m dh × D (`transpose`), both
 * row-major float. So ‖T·M‖_F = ‖R·M‖_F for any M. From the Gram TᵀT in
 * double and its Cholesky factor: a LAPACK QR of each head's weights cost
 * milliseconds a call, most of the tables' time. work: 2·dh² doubles.
 */
static mi_status r_of(float *R, const float *m, bool transpose, size_t D, size_t dh,
                      double *work) {
  mi__matrix T = transpose ? mi__matrix_t(mi__matrix_rowmajor((float *)m, dh, D))
                           : mi__matrix_rowmajor((float *)m, D, dh);
  double *G = work, *Rd = work + dh * dh;
  mi_status status = mi__dgemm_inner(G, dh, mi__matrix_t(T), T);
  if (status != MI_OK)
    return status;
  mi__cholesky_upper(Rd, G, dh);
  for (size_t i = 0; i < dh * dh; i++)
    R[i] = (float)Rd[i];
  return MI_OK;
}

/* ‖M‖²_F of a rows × cols float view, in double. */
static double frobenius_sq(mi__matrix M) {
  double sq = 0.0;
  for (size_t i = 0; i < M.rows; i++)
    for (size_t j = 0; j < M.cols; j++) {
      double v = M.data[(ptrdiff_t)i * M.rs + (ptrdiff_t)j * M.cs];
      sq += v * v;
    }
  return sq;
}

/* What the tables share. Heads are numbered l·H + h; the n = (L − 1)·H
 * "early" heads (layers 0..L−2) write into something later, and "late"
 * head j is head H + j (layers 1..L−1). */
typedef struct compose_plan {
  const mi_model *model;
  const mi_composition *kinds;
  size_t n_kinds, n;
  float *left;                /* n × (D × dh): early head i's (R(W_V)·W_O)ᵀ */
  float *right;               /* n_kinds × n × (D × dh): late head j's X·R(Y)ᵀ */
  double *left_sq, *right_sq; /* their ‖·‖²_F: n, n_kinds × n */
  size_t (*tiles)[4];         /* rows a0..a1 × columns b0..b1 of D × D, b0 ≥ a0 */
  size_t n_tiles, tile_max;   /* tile_max: the largest tile's entries */
  size_t tile_width;          /* a tile's rows + columns, at most */
  size_t n_slices;            /* slice s: tiles s, s + n_slices, ... */
  double *acc; /* per slice: n × n·n_kinds partial ⟨P_i, Q_j⟩, kinds inner */
} compose_plan;

/* Head i's factors: left if it has a later layer, right (each kind) if an
 * earlier one. Whole heads a thread: the pieces are small. */
static mi_status compose_factors(size_t i, void *user) {
  compose_plan *p = user;
  const mi_config *c = &p->model->config;
  size_t H = c->n_heads, G = c->n_kv_heads, D = c->d_model, dh = c->d_head, L = c->n_layers;
  size_t l = i / H, g = l * G + mi__kv_head(p->model, i % H), fsize = dh * D;
  float *const *w = p->model->w;
  float *W_Q = w[MI_W_Q] + i * D * dh, *W_O = w[MI_W_O] + i * dh * D;
  float *W_K = w[MI_W_K] + g * D * dh, *W_V = w[MI_W_V] + g * D * dh;
  float *R = malloc(dh * dh * sizeof *R);
  double *work = malloc(2 * dh * dh * sizeof *work);
  if (R == NULL || work == NULL) {
    free(R);
    free(work);
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "composition: head %zu's %zu x %zu factors", i, dh,
                    dh);
  }
  mi_status status = MI_OK;
  if (l + 1 < L) {
    /* R(W_V)·W_O (dh × D): its Gram is W_OV's, Frobenius norm ‖W_OV‖;
     * stored transposed, so a range of its columns is one block. */
    mi__matrix Left = mi__matrix_t(mi__matrix_rowmajor(p->left + i * fsize, D, dh));
    status = r_of(R, W_V, false, D, dh, work);
    if (status == MI_OK)
      status = mi__sgemm(1.0f, mi__matrix_rowmajor(R, dh, dh), mi__matrix_rowmajor(W_O, dh, D),
                         0.0f, Left);
    if (status == MI_OK)
      p->left_sq[i] = frobenius_sq(Left);
  }
  /* The later head's M = X·Yᵀ as X·R(Y)ᵀ (D × dh): the same M·Mᵀ. */
  for (size_t k = 0; k < p->n_kinds && l >= 1 && status == MI_OK; k++) {
    mi_composition kind = p->kinds[k];
    float *X = kind == MI_COMPOSE_V ? W_V : kind == MI_COMPOSE_Q ? W_Q : W_K;
    float *Y = kind == MI_COMPOSE_V ? W_O : kind == MI_COMPOSE_Q ? W_K : W_Q;
    size_t j = k * p->n + i - H;
    mi__matrix Right = mi__matrix_rowmajor(p->right + j * fsize, D, dh);
    status = r_of(R, Y, kind == MI_COMPOSE_V, D, dh, work);
    if (status == MI_OK)
      status = mi__sgemm(1.0f, mi__matrix_rowmajor(X, D, dh),
                         mi__matrix_t(mi__matrix_rowmajor(R, dh, dh)), 0.0f, Right);
    if (status == MI_OK)
      p->right_sq[j] = frobenius_sq(Right);
  }
  free(R);
  free(work);
  return status;
}

/*
 * alpha·(F·Fᵀ)[a0..a1, b0..b1] into T (row-major) for a D × dh float factor
 * F, in double: the two row ranges are converted first (x: dh·(a1 − a0 +
 * b1 − b0) doubles).
 */
static mi_status gram_tile(double *T, const float *F, size_t dh, const size_t *t,
                           double alpha, double *x) {
  size_t ra = t[1] - t[0], cb = t[3] - t[2];
  double *xa = x, *xb = x + dh * ra;
  for (size_t e = 0; e < dh * ra; e++)
    xa[e] = F[t[0] * dh + e];
  for (size_t e = 0; e < dh * cb; e++)
    xb[e] = F[t[2] * dh + e];
  return mi__dgemm_serial(alpha, (mi__dmatrix){xa, ra, dh, (ptrdiff_t)dh, 1},
                          (mi__dmatrix){xb, dh, cb, 1, (ptrdiff_t)dh}, 0.0,
                          (mi__dmatrix){T, ra, cb, (ptrdiff_t)cb, 1});
}

/*
 * Slice `slice` (a job for the next free thread): its tiles in order, each
 * adding ⟨P_i, Q_j⟩ over the tile's entries into the slice's accumulator.
 * Slices and tiles do not depend on the thread count, so neither do the
 * sums: the scores are the same bits on any number of threads. Two GEMMs a tile
 * for every pair and kind: the GEMMs stream their inputs from memory, so
 * a few wide products beat many that skip more of the pairs the tables
 * leave 0 (measured). Q carries the weights that make a sum over the upper triangle
 * the whole inner product of two symmetric matrices: 2 above the diagonal,
 * 1 on it, 0 below (exact in floating point).
 */
static mi_status compose_slice(size_t slice, void *user) {
  compose_plan *p = user;
  size_t dh = p->model->config.d_head, n = p->n, fsize = dh * p->model->config.d_model;
  size_t E = p->tile_max, nq = p->n_kinds * n;
  size_t H = p->model->config.n_heads, split = n / H / 2 * H;
  double *acc = p->acc + slice * nq * n;
  double *Pt = malloc(n * E * sizeof *Pt), *Qt = malloc(nq * E * sizeof *Qt);
  double *x = malloc(dh * p->tile_width * sizeof *x);
  mi_status status = MI_OK;
  if (Pt == NULL || Qt == NULL || x == NULL)
    status = mi__fail(MI_ERR_OUT_OF_MEMORY, "composition: %zu x %zu doubles of tiles", n + nq, E);
  for (size_t e = 0; e < nq * n; e++)
    acc[e] = 0.0;
  for (size_t ti = slice; ti < p->n_tiles && status == MI_OK; ti += p->n_slices) {
    const size_t *tile = p->tiles[ti];
    size_t ra = tile[1] - tile[0], cb = tile[3] - tile[2], e = ra * cb;
    for (size_t i = 0; i < n && status == MI_OK; i++)
      status = gram_tile(Pt + i * e, p->left + i * fsize, dh, tile, 1.0, x);
    for (size_t j = 0; j < nq && status == MI_OK; j++) { /* late head j / n_kinds */
      double *Q = Qt + j * e;
      size_t k = j % p->n_kinds, head = j / p->n_kinds;
      status = gram_tile(Q, p->right + (k * n + head) * fsize, dh, tile, 2.0, x);
      for (size_t r = 0; r < ra && tile[2] < tile[0] + ra; r++)
        for (size_t s = 0; s < cb && tile[2] + s <= tile[0] + r; s++)
          Q[r * cb + s] *= tile[2] + s == tile[0] + r ? 0.5 : 0.0;
    }
    /* The early heads of the later half of the layers pair only with the
     * late heads from there on: two GEMMs skip a quarter of the pairs. */
    for (int half = 0; half < 2 && status == MI_OK; half++) {
      size_t i0 = half ? split : 0, i1 = half ? n : split, j0 = half ? split * p->n_kinds : 0;
      status = mi__dgemm_serial(1.0, (mi__dmatrix){Pt + i0 * e, i1 - i0, e, (ptrdiff_t)e, 1},
                                (mi__dmatrix){Qt + j0 * e, e, nq - j0, 1, (ptrdiff_t)e}, 1.0,
                                (mi__dmatrix){acc + i0 * nq + j0, i1 - i0, nq - j0,
                                              (ptrdiff_t)nq, 1});
    }
  }
  free(Pt);
  free(Qt);
  free(x);
  return status;
}

/* Scratch of one slice's tiles: about this much (a slice runs on one
 * thread); slices: enough to balance the threads, few enough that their
 * accumulators stay small. */
enum { COMPOSE_TILE_BUDGET = 32 << 20, COMPOSE_TILE_ROWS = 64, COMPOSE_TILE_COLS = 192,
       COMPOSE_SLICES = 16 };

/* The upper triangle of D × D cut into tiles of `rows` × at most `cols`;
 * with tiles NULL only counts them. */
static size_t cut_tiles(size_t (*tiles)[4], size_t D, size_t rows, size_t cols) {
  size_t count = 0;
  for (size_t a0 = 0; a0 < D; a0 += rows)
    for (size_t b0 = a0; b0 < D; b0 += cols, count++)
      if (tiles != NULL) {
        tiles[count][0] = a0;
        tiles[count][1] = a0 + rows < D ? a0 + rows : D;
        tiles[count][2] = b0;
        tiles[count][3] = b0 + cols < D ? b0 + cols : D;
      }
  return count;
}

/*
 * The tables of n_kinds kinds into out (n_kinds × heads², checked). Score
 * ‖L_i·R_j‖²_F = ⟨L_iᵀL_i, R_jR_jᵀ⟩_F = ⟨P_i, Q_j⟩: every pair's score is
 * an inner product of two symmetric D × D matrices, so each table is one
 * product of the early heads' P's (flattened upper triangles) against the
 * late heads' Q's, D(D + 1)/2 long instead of d_head² · D a pair. It is
 * streamed tile by tile of D × D, so no P or Q is ever whole, and every
 * kind shares the early heads' P tiles. In double: the terms can cancel
 * (nearly orthogonal heads), and double keeps the error of ⟨P, Q⟩ below
 * D² · 2⁻⁵³ · ‖P‖_F‖Q‖_F ≤ D² · 2⁻⁵³ · ‖L‖²‖R‖², so a score's squared error
 * below 1e-10 at D = 768.
 */
static mi_status composition_tables(double *out, const mi_model *model,
                                    const mi_composition *kinds, size_t n_kinds) {
  const mi_config *c = &model->config;
  size_t L = c->n_layers, H = c->n_heads, D = c->d_model, dh = c->d_head, heads = L * H;
  size_t n = L > 1 ? (L - 1) * H : 0, table = heads * heads;
  for (size_t i = 0; i < n_kinds * table; i++)
    out[i] = 0.0;
  if (n == 0 || D == 0 || dh == 0 || n_kinds == 0)
    return MI_OK;
  mi_status status = mi__blis_begin(); /* before mi__thread_count asks BLIS */
  if (status != MI_OK)
    return status;
  size_t n_factor, n_acc;
  /* Tiles as wide as the budget allows for a slice's 1 + n_kinds stacks. */
  size_t per_tile = COMPOSE_TILE_BUDGET / ((1 + n_kinds) * sizeof(double) * n);
  size_t rows = COMPOSE_TILE_ROWS < D ? COMPOSE_TILE_ROWS : D;
  size_t cols = per_tile / rows / 16 * 16;
  cols = cols < 16 ? 16 : cols > COMPOSE_TILE_COLS ? COMPOSE_TILE_COLS : cols;
  cols = cols < D ? cols : D;
  compose_plan p = {.model = model, .kinds = kinds, .n_kinds = n_kinds, .n = n,
                    .n_tiles = cut_tiles(NULL, D, rows, cols), .tile_max = rows * cols,
                    .tile_width = rows + cols};
  p.n_slices = COMPOSE_SLICES < p.n_tiles ? COMPOSE_SLICES : p.n_tiles;
  if (!mi__mul_size(&n_factor, (1 + n_kinds) * n, dh * D) || n_factor > SIZE_MAX / sizeof(float) ||
      !mi__mul_size(&n_acc, p.n_slices * n_kinds * n, n) || n_acc > SIZE_MAX / sizeof(double))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "composition scratch overflows size_t");
  p.left = malloc(n_factor * sizeof *p.left);
  p.left_sq = malloc((1 + n_kinds) * n * sizeof *p.left_sq);
  p.acc = malloc(n_acc * sizeof *p.acc);
  p.tiles = malloc(p.n_tiles * sizeof *p.tiles);
  if (p.left == NULL || p.left_sq == NULL || p.acc == NULL || p.tiles == NULL)
    status = mi__fail(MI_ERR_OUT_OF_MEMORY, "composition: %zu factor floats, %zu doubles",
                      n_factor, n_acc);
  if (status == MI_OK) {
    p.right = p.left + n * dh * D;
    p.right_sq = p.left_sq + n;
    cut_tiles(p.tiles, D, rows, cols);
    status = mi__parallel_for(heads, compose_factors, &p);
  }
  /* The slices' accumulators, summed in slice order. */
  if (status == MI_OK)
    status = mi__parallel_for(p.n_slices, compose_slice, &p);
  for (size_t t = 1; t < p.n_slices && status == MI_OK; t++)
    for (size_t e = 0; e < n_kinds * n * n; e++)
      p.acc[e] += p.acc[t * n_kinds * n * n + e];
  for (size_t k = 0; k < n_kinds && status == MI_OK; k++)
    for (size_t i = 0; i < n && status == MI_OK; i++)
      for (size_t j = i / H * H; j < n; j++) { /* late layers from i's own + 1 */
        double num = p.acc[(i * n + j) * n_kinds + k], den = p.left_sq[i] * p.right_sq[k * n + j];
        if (!isfinite(num) || !isfinite(den)) {
          status = mi__fail(MI_ERR_NUMERIC, "%c-composition score of head (%zu, %zu) into "
                            "(%zu, %zu) is not finite: their weights' products overflowed "
                            "float32", "QKV"[kinds[k]], i / H, i % H, j / H + 1, j % H);
          break;
        }
        out[k * table + i * heads + H + j] = den > 0.0 ? sqrt(fmax(num, 0.0) / den) : 0.0;
      }
  if (status != MI_OK)
    for (size_t i = 0; i < n_kinds * table; i++)
      out[i] = 0.0;
  free(p.left);
  free(p.left_sq);
  free(p.acc);
  free(p.tiles);
  return status;
}

static mi_status check_tables(size_t count, const mi_model *model, size_t n_kinds,
                              const mi_composition *kinds) {
  for (size_t k = 0; k < n_kinds; k++)
    if ((unsigned)kinds[k] > MI_COMPOSE_V)
      return mi__fail(MI_ERR_INVALID_ARGUMENT, "unknown composition kind %d (kinds[%zu])",
                      (int)kinds[k], k);
  const mi_config *c = &model->config;
  size_t heads = c->n_layers * c->n_heads, table, need;
  if (!mi__mul_size(&table, heads, heads) || !mi__mul_size(&need, table, n_kinds))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "%zu tables of (n_layers x n_heads)^2 overflow size_t",
                    n_kinds);
  if (count < need)
    return mi__fail(MI_ERR_SHAPE,
                    "out holds %zu doubles; %zu x [n_layers][n_heads][n_layers][n_heads] needs %zu",
                    count, n_kinds, need);
  return MI_OK;
}

mi_status mi_model_composition_scores(double *out, size_t count, const mi_model *model,
                                      mi_composition kind) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(model);
  mi_status status = check_tables(count, model, 1, &kind);
  return status != MI_OK ? status : composition_tables(out, model, &kind, 1);
}

mi_status mi_model_composition_tables(double *out, size_t count, const mi_model *model,
                                      const mi_composition *kinds, size_t n_kinds) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(model);
  if (n_kinds > 0)
    MI_CHECK_ARG(kinds);
  mi_status status = check_tables(count, model, n_kinds, kinds);
  return status != MI_OK ? status : composition_tables(out, model, kinds, n_kinds);
}

/* ---- chance level -------------------------------------------------------- */

enum { BASELINE_SAMPLES = 100 };

/* xorshift64* and Box–Muller: the same numbers on every machine. */
typedef struct gauss {
  uint64_t state;
  double spare;
  bool has_spare;
} gauss;

static double uniform01(gauss *g) {
  g->state ^= g->state >> 12;
  g->state ^= g->state << 25;
  g->state ^= g->state >> 27;
  return ((double)((g->state * 0x2545F4914F6CDD1Dull) >> 11) + 0.5) * 0x1.0p-53;
}

static double normal(gauss *g) {
  if (g->has_spare) {
    g->has_spare = false;
    return g->spare;
  }
  double radius = sqrt(-2.0 * log(uniform01(g))), angle = 6.283185307179586 * uniform01(g);
  g->spare = radius * sin(angle);
  g->has_spare = true;
  return radius * cos(angle);
}

/*
 * One random score ‖A₁B₁A₂B₂‖ / (‖A₁B₁‖‖A₂B₂‖) with Gaussian A (D × dh) and
 * B (dh × D), by the same reduction as the model's scores. Each tall factor
 * is drawn straight into LAPACK's column-major order (B₂ as B₂ᵀ; B₁ row-major
 * dh × D). `work`: (4·D + 1)·dh doubles; `f`: 2·r·dh + 2·D·dh + 2·r·D + r²
 * floats (R₁, R₂; B₁, A₂; left, right; prod).
 */
static mi_status random_score(double *out, gauss *rng, size_t D, size_t dh, double *work,
                              float *f) {
  size_t r = D < dh ? D : dh, n = D * dh;
  double *A1 = work, *B2t = A1 + n, *tau = B2t + n;
  float *R1 = f, *R2 = R1 + r * dh, *B1 = R2 + r * dh, *A2 = B1 + n, *left = A2 + n;
  float *right = left + r * D, *prod = right + r * D;
  for (size_t i = 0; i < 2 * n; i++)
    work[i] = normal(rng);
  for (size_t i = 0; i < 2 * n; i++)
    B1[i] = (float)normal(rng); /* B₁ then A₂, row-major */
  mi_status status = mi__qr_r(R1, A1, tau, D, dh);
  if (status == MI_OK)
    status = mi__qr_r(R2, B2t, tau, D, dh);
  /* left = R(A₁)·B₁ (r × D); right = A₂·R(B₂ᵀ)ᵀ (D × r); prod = left·right. */
  mi__matrix Left = mi__matrix_rowmajor(left, r, D), Right = mi__matrix_rowmajor(right, D, r);
  mi__matrix Prod = mi__matrix_rowmajor(prod, r, r);
  if (status == MI_OK)
    status = mi__sgemm(1.0f, mi__matrix_rowmajor(R1, r, dh), mi__matrix_rowmajor(B1, dh, D),
                       0.0f, Left);
  if (status == MI_OK)
    status = mi__sgemm(1.0f, mi__matrix_rowmajor(A2, D, dh),
                       mi__matrix_t(mi__matrix_rowmajor(R2, r, dh)), 0.0f, Right);
  if (status == MI_OK)
    status = mi__sgemm(1.0f, Left, Right, 0.0f, Prod);
  if (status == MI_OK)
    *out = sqrt(frobenius_sq(Prod) / (frobenius_sq(Left) * frobenius_sq(Right)));
  return status;
}

mi_status mi_model_composition_baseline(double *out, const mi_model *model) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(model);
  size_t D = model->config.d_model, dh = model->config.d_head, r = D < dh ? D : dh;
  /* random_score's floats: 2·r·dh + 2·D·dh + 2·r·D + r², as (r + D)·2·dh + r·(2·D + r). */
  size_t need_d, need_f, f_tall, f_small;
  if (!mi__mul_size(&need_d, 4 * D + 1, dh) || need_d > SIZE_MAX / sizeof(double) ||
      !mi__mul_size(&f_tall, r + D, 2 * dh) || !mi__mul_size(&f_small, r, 2 * D + r) ||
      __builtin_add_overflow(f_tall, f_small, &need_f) || need_f > SIZE_MAX / sizeof(float))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "baseline scratch overflows size_t");
  double *work = malloc(need_d * sizeof *work);
  float *f = malloc(need_f * sizeof *f);
  if (work == NULL || f == NULL) {
    free(work);
    free(f);
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate the baseline's scratch");
  }
  gauss rng = {.state = 0x9E3779B97F4A7C15ull};
  double scores[BASELINE_SAMPLES], mean = 0.0, var = 0.0;
  mi_status status = MI_OK;
  for (int s = 0; s < BASELINE_SAMPLES && status == MI_OK; s++) {
    status = random_score(&scores[s], &rng, D, dh, work, f);
    mean += scores[s] / BASELINE_SAMPLES;
  }
  free(work);
  free(f);
  if (status != MI_OK)
    return status;
  for (int s = 0; s < BASELINE_SAMPLES; s++)
    var += (scores[s] - mean) * (scores[s] - mean) / (BASELINE_SAMPLES - 1);
  out[0] = mean;
  out[1] = sqrt(var);
  out[2] = out[1] / sqrt((double)BASELINE_SAMPLES);
  return MI_OK;
}

/* ---- path enumeration ---------------------------------------------------- */

/*
 * Every path's norm comes from small Grams. A path h₁ → … → h_k has the OV
 * product P·W_O^k·W_U with P = W_E W_V¹ W_O¹ ⋯ W_V^k (d_vocab × d_head).
 * With F any matrix such that FᵀF = PᵀP and S_k S_kᵀ = W_O^k (W_U W_Uᵀ) W_O^kᵀ,
 * the norm is ‖F·S_k‖_F. A path's F extends to its children as F·W_O^k·W_V^j,
 * so the walk carries one small F a depth and reaches every child of a node
 * with two GEMMs against all the later heads' W_V and W_V·S stacked side by
 * side. The root's F is a square root of W_Eᵀ W_E (d_model × d_model).
 */

mi_status mi_model_path_count(size_t *out, const mi_model *model, size_t max_order) {
  MI_CHECK_ARG(out);
  *out = 0;
  MI_CHECK_ARG(model);
  const mi_config *c = &model->config;
  size_t L = c->n_layers, top = max_order < L ? max_order : L;
  /* e[k]: paths of order k through the layers seen so far (e₀ = 1). */
  size_t *e = calloc(top + 1, sizeof *e), sum = 0;
  if (e == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "path count: %zu orders", top + 1);
  e[0] = 1;
  bool overflow = false;
  for (size_t l = 0; l < L && !overflow; l++)
    for (size_t k = (l + 1 < top ? l + 1 : top); k >= 1; k--) {
      size_t add;
      overflow |= !mi__mul_size(&add, e[k - 1], c->n_heads) ||
                  __builtin_add_overflow(e[k], add, &e[k]);
    }
  for (size_t k = 0; k <= top; k++)
    overflow |= __builtin_add_overflow(sum, e[k], &sum);
  free(e);
  if (overflow)
    return mi__fail(MI_ERR_OUT_OF_MEMORY,
                    "paths up to order %zu of %zu layers x %zu heads overflow size_t",
                    max_order, L, c->n_heads);
  *out = sum;
  return MI_OK;
}

/* Refuses what the path decomposition does not cover. */
static mi_status check_attention_only(const mi_model *model, const char *what) {
  if (model->config.parts & MI_PART_MLP)
    return mi__fail(MI_ERR_UNSUPPORTED,
                    "%s: the model has MLP layers; the path decomposition is exact only "
                    "for attention-only models", what);
  return MI_OK;
}

/* Checks a path's labels: layers increasing and in range, heads in range. */
static mi_status check_path(const mi_model *model, size_t order, const size_t *layers,
                            const size_t *heads) {
  const mi_config *c = &model->config;
  if (order > c->n_layers)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "a path of order %zu in a %zu-layer model",
                    order, c->n_layers);
  if (order > 0 && (layers == NULL || heads == NULL))
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "a path of order %zu needs layers and heads",
                    order);
  for (size_t i = 0; i < order; i++) {
    if (layers[i] >= c->n_layers || heads[i] >= c->n_heads)
      return mi__fail(MI_ERR_INDEX, "path head %zu is (%zu, %zu); the model has %zu x %zu",
                      i, layers[i], heads[i], c->n_layers, c->n_heads);
    if (i > 0 && layers[i] <= layers[i - 1])
      return mi__fail(MI_ERR_INVALID_ARGUMENT,
                      "path layers must increase: head %zu is in layer %zu after layer %zu",
                      i, layers[i], layers[i - 1]);
  }
  return MI_OK;
}

/* W_V of query head (l, h) (its key/value head's), D × dh. */
static const float *value_weight(const mi_model *model, size_t l, size_t h) {
  const mi_config *c = &model->config;
  return model->w[MI_W_V] + (l * c->n_kv_heads + mi__kv_head(model, h)) * c->d_model * c->d_head;
}

static const float *output_weight(const mi_model *model, size_t l, size_t h) {
  const mi_config *c = &model->config;
  return model->w[MI_W_O] + (l * c->n_heads + h) * c->d_head * c->d_model;
}

/*
 * The factors of a path's OV product (order ≥ 1): A = W_E W_V¹ (V × dh) when
 * A is not NULL, B = W_O¹ W_V² W_O² ⋯ W_V^k W_O^k W_U (dh × V). chain and
 * step: dh × D and dh × dh floats of scratch.
 */
static mi_status path_factors(float *A, float *B, float *chain, float *step,
                              const mi_model *model, size_t order, const size_t *layers,
                              const size_t *heads) {
  const mi_config *c = &model->config;
  size_t D = c->d_model, dh = c->d_head, V = c->d_vocab;
  mi_status status = MI_OK;
  if (A != NULL)
    status = mi__sgemm(1.0f, mi__matrix_rowmajor(model->w[MI_W_E], V, D),
                       mi__matrix_rowmajor((float *)value_weight(model, layers[0], heads[0]),
                                           D, dh),
                       0.0f, mi__matrix_rowmajor(A, V, dh));
  memcpy(chain, output_weight(model, layers[0], heads[0]), dh * D * sizeof *chain);
  for (size_t i = 1; i < order && status == MI_OK; i++) {
    status = mi__sgemm(1.0f, mi__matrix_rowmajor(chain, dh, D),
                       mi__matrix_rowmajor((float *)value_weight(model, layers[i], heads[i]),
                                           D, dh),
                       0.0f, mi__matrix_rowmajor(step, dh, dh));
    if (status == MI_OK)
      status = mi__sgemm(1.0f, mi__matrix_rowmajor(step, dh, dh),
                         mi__matrix_rowmajor((float *)output_weight(model, layers[i], heads[i]),
                                             dh, D),
                         0.0f, mi__matrix_rowmajor(chain, dh, D));
  }
  if (status == MI_OK)
    status = mi__sgemm(1.0f, mi__matrix_rowmajor(chain, dh, D),
                       mi__matrix_rowmajor(model->w[MI_W_U], D, V), 0.0f,
                       mi__matrix_rowmajor(B, dh, V));
  return status;
}

/* Floats for path_factors: A, B, chain, step. */
static mi_status factor_scratch(float **out, const mi_config *c) {
  size_t V = c->d_vocab, dh = c->d_head, D = c->d_model, ab, rest, total;
  if (!mi__mul_size(&ab, V, dh) || !mi__mul_size(&rest, dh, D + dh) ||
      __builtin_add_overflow(2 * ab, rest, &total) || ab > SIZE_MAX / 2 ||
      total > SIZE_MAX / sizeof(float))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "path factors of %zu x %zu overflow", V, dh);
  *out = malloc(total * sizeof **out);
  if (*out == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "path factors: %zu floats", total);
  return MI_OK;
}

mi_status mi_circuit_path(mi_circuit **out, const mi_model *model, size_t order,
                          const size_t *layers, const size_t *heads) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(model);
  mi_status status = check_attention_only(model, "mi_circuit_path");
  if (status == MI_OK)
    status = check_path(model, order, layers, heads);
  if (status != MI_OK)
    return status;
  if (order == 0)
    return mi_circuit_direct(out, model);
  const mi_config *c = &model->config;
  size_t V = c->d_vocab, dh = c->d_head;
  float *f;
  status = factor_scratch(&f, c);
  if (status != MI_OK)
    return status;
  /* The circuit adopts the block: A and B lead it, the scratch after them. */
  float *A = f, *B = A + V * dh;
  status = path_factors(A, B, B + V * dh, B + V * dh + dh * c->d_model, model, order,
                        layers, heads);
  if (status != MI_OK) {
    free(f);
    return status;
  }
  mi__matrix Am = mi__matrix_rowmajor(A, V, dh), Bm = mi__matrix_rowmajor(B, dh, V);
  return mi__circuit_adopt(out, &Am, f, &Bm, NULL);
}

/* One depth of the walk: the current node's F·W_O (rows × D) and its
 * children's blocks against the stacked W_V and W_V·S (rows × heads·dh). */
typedef struct path_level {
  float *K, *E, *N;
} path_level;

/* Where the walk stands at one depth: its node's first child layer, the next
 * child (l0·H + j is its head), the node's F rows. */
typedef struct path_frame {
  size_t l0, j, rows;
} path_frame;

typedef struct path_walk {
  const mi_model *model;
  size_t L, H, D, dh, max_order;
  float *wv;      /* D × L·H·dh: every head's W_V side by side */
  float *z;       /* D × L·H·dh: every head's W_V·S */
  path_level *level; /* max_order levels */
  path_frame *frames; /* max_order of them */
  double *g, *root, *w; /* dh × dh Gram, its root, dh eigenvalues */
  float *scratch;   /* path_factors' chain and step, with MI_PATHS_CIRCUITS */
  mi_circuit *held; /* the last path circuit: its A is W_E W_V of head `first` */
  size_t first;     /* SIZE_MAX while no circuit is held */
  size_t *layers, *heads; /* the current path: max_order each */
  mi_path_fn callback;
  void *user;
  size_t count;
  bool stopped, circuits;
} path_walk;

static void walk_free(path_walk *w) {
  free(w->wv);
  free(w->z);
  if (w->level != NULL)
    free(w->level[0].K);
  free(w->level);
  free(w->frames);
  free(w->g);
  free(w->scratch);
  mi_circuit_free(w->held);
  free(w->layers);
}

/*
 * The walk's buffers. Level 0 (the root, F of D rows) needs K: D × D and E,
 * N: D × L·H·dh; deeper levels (F of dh rows) dh × D and dh × L·H·dh.
 */
static mi_status walk_alloc(path_walk *w, const mi_config *c, size_t top, bool circuits) {
  size_t D = c->d_model, dh = c->d_head, big = D > dh ? D : dh, cols, wide, deep, total;
  if (!mi__mul_size(&cols, c->n_layers * c->n_heads, dh) || !mi__mul_size(&wide, big, cols) ||
      wide > SIZE_MAX / sizeof(float) / 4 || big > SIZE_MAX / sizeof(double) / 4 / big ||
      !mi__mul_size(&deep, top, dh * D + 2 * dh * cols) ||
      __builtin_add_overflow(deep, D * D + 2 * wide, &total) ||
      total > SIZE_MAX / sizeof(float))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "path walk scratch for %zu heads overflows",
                    c->n_layers * c->n_heads);
  w->wv = malloc(wide * sizeof *w->wv);
  w->z = malloc(wide * sizeof *w->z);
  w->level = calloc(top ? top : 1, sizeof *w->level);
  w->frames = malloc((top ? top : 1) * sizeof *w->frames);
  float *f = malloc(total * sizeof *f);
  w->g = malloc((2 * big * big + big) * sizeof *w->g);
  w->layers = malloc(2 * (top ? top : 1) * sizeof *w->layers);
  if (w->level != NULL)
    w->level[0].K = f;
  else
    free(f);
  if (w->wv == NULL || w->z == NULL || w->level == NULL || f == NULL || w->g == NULL ||
      w->layers == NULL || w->frames == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "path walk scratch for %zu heads",
                    c->n_layers * c->n_heads);
  if (circuits) {
    size_t ab, rest;
    if (!mi__mul_size(&ab, c->d_vocab, dh) || ab > SIZE_MAX / sizeof(float) ||
        !mi__mul_size(&rest, dh, D + dh) || rest > SIZE_MAX / sizeof(float))
      return mi__fail(MI_ERR_OUT_OF_MEMORY, "path factors of %zu x %zu overflow",
                      c->d_vocab, dh);
    w->scratch = malloc(rest * sizeof *w->scratch);
    if (w->scratch == NULL)
      return mi__fail(MI_ERR_OUT_OF_MEMORY, "path factors: %zu floats", rest);
  }
  float *at = f;
  for (size_t d = 0; d < top; d++) {
    size_t rows = d == 0 ? D : dh;
    w->level[d].K = at;
    w->level[d].E = at + rows * D;
    w->level[d].N = w->level[d].E + rows * cols;
    at = w->level[d].N + rows * cols;
  }
  w->root = w->g + big * big;
  w->w = w->root + big * big;
  w->heads = w->layers + (top ? top : 1);
  return MI_OK;
}

/*
 * The Grams shared by every path: W_Eᵀ W_E (its root is the walk's start) and
 * W_U W_Uᵀ (each head's S with S Sᵀ = W_O W_U W_Uᵀ W_Oᵀ), float32 through
 * BLIS. Fills wv and z, level 0's K, and the direct path's squared norm.
 */
static mi_status walk_prepare(path_walk *w, double *direct_sq) {
  const mi_model *model = w->model;
  size_t D = w->D, dh = w->dh, V = model->config.d_vocab, heads = w->L * w->H;
  size_t ld = heads * dh;
  float *ge = malloc(2 * D * D * sizeof *ge), *tmp = malloc((dh * D + 2 * dh * dh) * sizeof *tmp);
  mi_status status = ge && tmp ? MI_OK
                               : mi__fail(MI_ERR_OUT_OF_MEMORY, "paths: two %zu x %zu Grams", D, D);
  float *gu = ge ? ge + D * D : NULL, *t = tmp ? tmp + dh * D : NULL, *s = t ? t + dh * dh : NULL;
  mi__matrix E = mi__matrix_rowmajor(model->w[MI_W_E], V, D);
  mi__matrix U = mi__matrix_rowmajor(model->w[MI_W_U], D, V);
  if (status == MI_OK)
    status = mi__sgemm(1.0f, mi__matrix_t(E), E, 0.0f, mi__matrix_rowmajor(ge, D, D));
  if (status == MI_OK)
    status = mi__sgemm(1.0f, U, mi__matrix_t(U), 0.0f, mi__matrix_rowmajor(gu, D, D));
  if (status == MI_OK) {
    double sum = 0.0;
    for (size_t i = 0; i < D * D; i++) {
      sum += (double)ge[i] * gu[i];
      w->g[i] = ge[i];
    }
    *direct_sq = sum > 0.0 ? sum : 0.0;
    status = isfinite(sum) ? mi__gram_root(w->root, w->g, w->w, D)
                           : mi__fail(MI_ERR_NUMERIC, "paths: the direct path's norm "
                                      "overflowed float32 (W_Eᵀ W_E or W_U W_Uᵀ)");
  }
  if (status == MI_OK && w->max_order > 0)
    for (size_t i = 0; i < D * D; i++)
      w->level[0].K[i] = (float)w->root[i];
  /* Each head's W_V and W_V·S, for the walk below the direct path. */
  for (size_t i = 0; i < heads && status == MI_OK && w->max_order > 0; i++) {
    size_t l = i / w->H, h = i % w->H;
    const float *W_V = value_weight(model, l, h);
    mi__matrix WO = mi__matrix_rowmajor((float *)output_weight(model, l, h), dh, D);
    for (size_t r = 0; r < D; r++)
      memcpy(w->wv + r * ld + i * dh, W_V + r * dh, dh * sizeof *w->wv);
    status = mi__sgemm(1.0f, WO, mi__matrix_rowmajor(gu, D, D), 0.0f,
                       mi__matrix_rowmajor(tmp, dh, D));
    if (status == MI_OK)
      status = mi__sgemm(1.0f, mi__matrix_rowmajor(tmp, dh, D), mi__matrix_t(WO), 0.0f,
                         mi__matrix_rowmajor(t, dh, dh));
    if (status == MI_OK) {
      for (size_t k = 0; k < dh * dh; k++)
        w->g[k] = t[k];
      status = mi__gram_root(w->root, w->g, w->w, dh);
    }
    if (status != MI_OK)
      break;
    for (size_t a = 0; a < dh; a++) /* S = rootᵀ: S Sᵀ = rootᵀ root */
      for (size_t b = 0; b < dh; b++)
        s[a * dh + b] = (float)w->root[b * dh + a];
    status = mi__sgemm(1.0f, mi__matrix_rowmajor((float *)W_V, D, dh),
                       mi__matrix_rowmajor(s, dh, dh), 0.0f,
                       (mi__matrix){w->z + i * dh, D, dh, (ptrdiff_t)ld, 1});
  }
  free(ge);
  free(tmp);
  return status;
}

/* Hands one path to the callback, with its circuit when asked. */
static mi_status walk_emit(path_walk *w, size_t order, double norm_sq) {
  mi_path path = {sizeof path, order, w->layers, w->heads, sqrt(norm_sq), NULL};
  mi_circuit *circuit = NULL;
  mi_status status = MI_OK;
  if (w->circuits) {
    const mi_config *c = &w->model->config;
    size_t V = c->d_vocab, dh = c->d_head;
    if (order == 0) {
      status = mi_circuit_direct(&circuit, w->model);
    } else {
      /* The circuit adopts a new B; A is new too, or shared with the held
       * circuit when the path starts at the same head (sizes: walk_alloc). */
      size_t first = w->layers[0] * w->H + w->heads[0];
      bool share = w->held != NULL && first == w->first;
      float *A = share ? NULL : malloc(V * dh * sizeof *A), *B = malloc(V * dh * sizeof *B);
      if (B == NULL || (!share && A == NULL))
        status = mi__fail(MI_ERR_OUT_OF_MEMORY, "path circuit: %zu x %zu factors", V, dh);
      if (status == MI_OK)
        status = path_factors(A, B, w->scratch, w->scratch + dh * c->d_model, w->model,
                              order, w->layers, w->heads);
      mi__matrix Am = mi__matrix_rowmajor(A, V, dh), Bm = mi__matrix_rowmajor(B, dh, V);
      if (status != MI_OK) {
        free(A);
        free(B);
      } else if (share) {
        status = mi__circuit_adopt_b(&circuit, w->held, &Bm, B);
      } else {
        status = mi__circuit_adopt(&circuit, &Am, A, &Bm, B);
      }
      if (status == MI_OK) { /* held until the next path circuit replaces it */
        mi_circuit_free(w->held);
        w->held = circuit;
        w->first = first;
      }
    }
    path.circuit = circuit;
  }
  if (status == MI_OK) {
    w->count++;
    w->stopped = w->callback(&path, w->user) != 0;
  }
  if (circuit != w->held)
    mi_circuit_free(circuit);
  return status;
}

/*
 * Opens the node at `depth` (its K = F·W_O is level[depth].K, `rows` × D),
 * whose children are every head of layers l0..: their blocks against the
 * stacked W_V·S (N) and, when they have children of their own, W_V (E).
 */
static mi_status node_open(path_walk *w, size_t depth, size_t rows, size_t l0) {
  size_t D = w->D, ld = w->L * w->H * w->dh, c0 = l0 * w->H * w->dh, cols = ld - c0;
  w->frames[depth] = (path_frame){l0, 0, rows};
  if (cols == 0)
    return MI_OK;
  path_level *lv = &w->level[depth];
  mi__matrix K = mi__matrix_rowmajor(lv->K, rows, D);
  mi_status status = mi__sgemm(1.0f, K, (mi__matrix){w->z + c0, D, cols, (ptrdiff_t)ld, 1},
                               0.0f, mi__matrix_rowmajor(lv->N, rows, cols));
  if (status == MI_OK && depth + 1 < w->max_order)
    status = mi__sgemm(1.0f, K, (mi__matrix){w->wv + c0, D, cols, (ptrdiff_t)ld, 1}, 0.0f,
                       mi__matrix_rowmajor(lv->E, rows, cols));
  return status;
}

/*
 * Every path below the root, depth first, with an explicit stack of frames
 * (one a depth, at most n_layers): a deep model must not exhaust the C stack.
 */
static mi_status walk_nodes(path_walk *w) {
  size_t D = w->D, dh = w->dh, H = w->H, ld = w->L * H * dh, depth = 0;
  mi_status status = node_open(w, 0, D, 0);
  while (status == MI_OK && !w->stopped) {
    path_frame *f = &w->frames[depth];
    size_t cols = ld - f->l0 * H * dh, rows = f->rows;
    if (f->j >= cols / dh) {
      if (depth == 0)
        break;
      depth--;
      continue;
    }
    path_level *lv = &w->level[depth];
    size_t j = f->j++, l = f->l0 + j / H, h = j % H;
    double sq = 0.0;
    for (size_t a = 0; a < rows; a++)
      for (size_t b = 0; b < dh; b++) {
        double v = lv->N[a * cols + j * dh + b];
        sq += v * v;
      }
    w->layers[depth] = l;
    w->heads[depth] = h;
    status = isfinite(sq) ? walk_emit(w, depth + 1, sq)
                          : mi__fail(MI_ERR_NUMERIC, "paths: the norm of a path of order "
                                     "%zu ending at head (%zu, %zu) overflowed float32",
                                     depth + 1, l, h);
    if (status != MI_OK || w->stopped || depth + 1 >= w->max_order || l + 1 == w->L)
      continue;
    /* The child's Gram EᵀE (dh × dh) and a dh × dh root of it, times W_O. */
    for (size_t a = 0; a < dh; a++)
      for (size_t b = 0; b < dh; b++) {
        double sum = 0.0;
        for (size_t t = 0; t < rows; t++)
          sum += (double)lv->E[t * cols + j * dh + a] * lv->E[t * cols + j * dh + b];
        w->g[a * dh + b] = sum;
      }
    status = mi__gram_root(w->root, w->g, w->w, dh);
    if (status != MI_OK)
      break;
    float *F = w->level[depth + 1].E; /* scratch until the child's GEMMs overwrite it */
    for (size_t k = 0; k < dh * dh; k++)
      F[k] = (float)w->root[k];
    status = mi__sgemm(1.0f, mi__matrix_rowmajor(F, dh, dh),
                       mi__matrix_rowmajor((float *)output_weight(w->model, l, h), dh, D),
                       0.0f, mi__matrix_rowmajor(w->level[depth + 1].K, dh, D));
    if (status == MI_OK)
      status = node_open(w, ++depth, dh, l + 1);
  }
  return status;
}

/* The walk behind mi_model_paths and mi_model_top_paths. */
static mi_status walk_paths(size_t *out, const mi_model *model, size_t max_order,
                            bool circuits, mi_path_fn callback, void *user) {
  mi_status status = check_attention_only(model, "path enumeration");
  if (status != MI_OK)
    return status;
  const mi_config *c = &model->config;
  size_t top = max_order < c->n_layers ? max_order : c->n_layers;
  path_walk w = {.model = model, .L = c->n_layers, .H = c->n_heads, .D = c->d_model,
                 .dh = c->d_head, .max_order = top, .first = SIZE_MAX,
                 .callback = callback, .user = user, .circuits = circuits};
  double direct_sq = 0.0;
  status = walk_alloc(&w, c, top, circuits);
  if (status == MI_OK)
    status = mi__blis_begin();
  if (status == MI_OK)
    status = walk_prepare(&w, &direct_sq);
  if (status == MI_OK)
    status = walk_emit(&w, 0, direct_sq);
  if (status == MI_OK && top > 0 && !w.stopped)
    status = walk_nodes(&w);
  if (out != NULL)
    *out = w.count;
  walk_free(&w);
  return status;
}

mi_status mi_model_paths(size_t *out, const mi_model *model, size_t max_order, unsigned flags,
                         mi_path_fn callback, void *user) {
  if (out != NULL)
    *out = 0;
  MI_CHECK_ARG(model);
  MI_CHECK_ARG(callback);
  if (flags & ~(unsigned)MI_PATHS_CIRCUITS)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "mi_model_paths: unknown flag bits 0x%x", flags);
  return walk_paths(out, model, max_order, flags & MI_PATHS_CIRCUITS, callback, user);
}

/* ---- the largest paths ---------------------------------------------------- */

/* A heap of the n largest norms so far, the smallest at the root; among equal
 * norms the later path is smaller, so ties keep the earlier path. */
typedef struct top_state {
  size_t n, size, L, seen;
  double *norm;
  size_t *seq, *heads; /* heads: n × L, SIZE_MAX where a layer is skipped */
} top_state;

static bool top_below(const top_state *s, size_t a, size_t b) {
  return s->norm[a] < s->norm[b] || (s->norm[a] == s->norm[b] && s->seq[a] > s->seq[b]);
}

static void top_swap(top_state *s, size_t a, size_t b) {
  double t = s->norm[a]; s->norm[a] = s->norm[b]; s->norm[b] = t;
  size_t q = s->seq[a]; s->seq[a] = s->seq[b]; s->seq[b] = q;
  for (size_t l = 0; l < s->L; l++) {
    q = s->heads[a * s->L + l];
    s->heads[a * s->L + l] = s->heads[b * s->L + l];
    s->heads[b * s->L + l] = q;
  }
}

static void top_sift_down(top_state *s, size_t at, size_t size) {
  for (;;) {
    size_t l = 2 * at + 1, low = at;
    if (l < size && top_below(s, l, low))
      low = l;
    if (l + 1 < size && top_below(s, l + 1, low))
      low = l + 1;
    if (low == at)
      return;
    top_swap(s, at, low);
    at = low;
  }
}

static int top_take(const mi_path *path, void *user) {
  top_state *s = user;
  size_t seq = s->seen++, at;
  if (s->size < s->n) {
    at = s->size++;
  } else {
    if (!(path->norm > s->norm[0]))
      return 0;
    at = 0;
  }
  s->norm[at] = path->norm;
  s->seq[at] = seq;
  for (size_t l = 0; l < s->L; l++)
    s->heads[at * s->L + l] = SIZE_MAX;
  for (size_t i = 0; i < path->order; i++)
    s->heads[at * s->L + path->layers[i]] = path->heads[i];
  if (at == 0) {
    top_sift_down(s, 0, s->size);
  } else {
    while (at > 0 && top_below(s, at, (at - 1) / 2)) {
      top_swap(s, at, (at - 1) / 2);
      at = (at - 1) / 2;
    }
  }
  return 0;
}

mi_status mi_model_top_paths(size_t *out_heads, double *out_norm, size_t *out_count, size_t n,
                             const mi_model *model, size_t max_order) {
  MI_CHECK_ARG(out_heads);
  MI_CHECK_ARG(out_norm);
  MI_CHECK_ARG(out_count);
  *out_count = 0;
  MI_CHECK_ARG(model);
  if (n == 0)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "top paths: n = 0");
  size_t L = model->config.n_layers, cells;
  if (!mi__mul_size(&cells, n, L) || cells > SIZE_MAX / sizeof(size_t))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "top paths: %zu x %zu labels overflow", n, L);
  /* The heap lives in the caller's buffers, plus one sequence number a line. */
  top_state s = {n, 0, L, 0, out_norm, malloc(n * sizeof(size_t)), out_heads};
  if (s.seq == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "top paths: %zu sequence numbers", n);
  mi_status status = walk_paths(NULL, model, max_order, false, top_take, &s);
  if (status == MI_OK) {
    /* Heap sort: popping the smallest to the back leaves the largest first. */
    for (size_t size = s.size; size > 1; size--) {
      top_swap(&s, 0, size - 1);
      top_sift_down(&s, 0, size - 1);
    }
    *out_count = s.size;
  }
  free(s.seq);
  return status;
}
