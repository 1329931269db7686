/*
 * paths.c: composition scores between heads of different layers, and the
 * chance level they are read against.
 *
 * Every score is ‖X·C·Yᵀ‖_F with X, Y tall (d_model × d_head) and C small.
 * With X = Q_x·R_x (QR), ‖X·M‖_F = ‖R_x·M‖_F for any M, so each head is
 * reduced once to a d_head × d_model "left" factor (R_V·W_O: the rows its OV
 * circuit writes) and a d_model × d_head "right" factor per kind (what the
 * later head reads), and a score is the Frobenius norm of a d_head × d_head
 * block of left·right. One GEMM per pair of layers gives every pair of heads:
 * O(d_head · d_model) work a pair instead of O(d_model³) dense.
 */
#include "kernel.h"

#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/*
 * The r × c upper-trapezoidal R of the QR of a tall matrix (rows × c,
 * column-major with leading dimension rows: LAPACK's own order, so LAPACKE
 * makes no transposed copy), r = min(rows, c), into R (r × c row-major
 * float, zeros below the diagonal). `a` is overwritten; tau holds c doubles.
 */
static mi_status r_factor(float *R, double *a, double *tau, size_t rows, size_t c) {
  size_t r = rows < c ? rows : c;
  lapack_int info = LAPACKE_dgeqrf(LAPACK_COL_MAJOR, (lapack_int)rows, (lapack_int)c, a,
                                   (lapack_int)rows, tau);
  if (info == LAPACK_WORK_MEMORY_ERROR)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "LAPACKE_dgeqrf: no memory for a %zu x %zu QR",
                    rows, c);
  if (info != 0)
    return mi__fail(info < 0 ? MI_ERR_INVALID_ARGUMENT : MI_ERR_NUMERIC,
                    "LAPACKE_dgeqrf on a %zu x %zu matrix returned %d", rows, c, (int)info);
  for (size_t i = 0; i < r; i++)
    for (size_t j = 0; j < c; j++)
      R[i * c + j] = j >= i ? (float)a[j * rows + i] : 0.0f;
  return MI_OK;
}

/*
 * The R (r × dh) of the tall D × dh matrix T: T = m for m D × dh, or
 * T = mᵀ for m dh × D (`transpose`), both row-major float. work: (D + 1)·dh.
 */
static mi_status r_of(float *R, const float *m, bool transpose, size_t D, size_t dh,
                      double *work) {
  for (size_t i = 0; i < D; i++)
    for (size_t j = 0; j < dh; j++)
      work[j * D + i] = transpose ? m[j * D + i] : m[i * dh + j];
  return r_factor(R, work, work + D * dh, D, dh);
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

/* Sum of squares of the r × r block at (bi, bj) of C (ld columns), in double. */
static double block_sq(const float *C, size_t ld, size_t bi, size_t bj, size_t r) {
  double sq = 0.0;
  for (size_t i = 0; i < r; i++)
    for (size_t j = 0; j < r; j++) {
      double v = C[(bi * r + i) * ld + bj * r + j];
      sq += v * v;
    }
  return sq;
}

mi_status mi_model_composition_scores(double *out, size_t count, const mi_model *model,
                                      mi_composition kind) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(model);
  if ((unsigned)kind > MI_COMPOSE_V)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "unknown composition kind %d", (int)kind);
  const mi_config *c = &model->config;
  size_t L = c->n_layers, H = c->n_heads, G = c->n_kv_heads, D = c->d_model, dh = c->d_head;
  size_t r = D < dh ? D : dh, heads = L * H, need, Hr = H * r;
  if (!mi__mul_size(&need, heads, heads))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "(n_layers x n_heads)^2 overflows size_t");
  if (count < need)
    return mi__fail(MI_ERR_SHAPE,
                    "out holds %zu doubles; [n_layers][n_heads][n_layers][n_heads] needs %zu",
                    count, need);
  /* left: heads·r × D; right: D × heads·r; block: H·r × H·r; two R's (float);
   * QR work (double). */
  size_t n_left, n_block, total_f, total_d;
  if (!mi__mul_size(&n_left, heads * r, D) || !mi__mul_size(&n_block, Hr, Hr) ||
      __builtin_add_overflow(2 * n_left, n_block + 2 * r * dh, &total_f) ||
      !mi__mul_size(&total_d, D + 1, dh) || total_f > SIZE_MAX / sizeof(float) ||
      total_d > SIZE_MAX / sizeof(double))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "composition scratch overflows size_t");
  float *f = malloc(total_f * sizeof *f);
  double *work = malloc(total_d * sizeof *work), *norm_sq = malloc(2 * heads * sizeof *norm_sq);
  if (f == NULL || work == NULL || norm_sq == NULL) {
    free(f);
    free(work);
    free(norm_sq);
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate composition scratch");
  }
  float *left = f, *right = left + n_left, *block = right + n_left, *R = block + n_block;
  float *R2 = R + r * dh;
  double *left_sq = norm_sq, *right_sq = norm_sq + heads;

  mi_status status = MI_OK;
  float *const *w = model->w;
  for (size_t l = 0; l < L && status == MI_OK; l++)
    for (size_t h = 0; h < H && status == MI_OK; h++) {
      size_t i = l * H + h, g = l * G + mi__kv_head(model, h);
      float *W_Q = w[MI_W_Q] + i * D * dh, *W_O = w[MI_W_O] + i * dh * D;
      float *W_K = w[MI_W_K] + g * D * dh, *W_V = w[MI_W_V] + g * D * dh;
      /* Left: R(W_V)·W_O (r × D), whose Frobenius norm is ‖W_OV‖. */
      mi__matrix Left = mi__matrix_rowmajor(left + i * r * D, r, D);
      status = r_of(R, W_V, false, D, dh, work);
      if (status == MI_OK)
        status = mi__sgemm(1.0f, mi__matrix_rowmajor(R, r, dh),
                           mi__matrix_rowmajor(W_O, dh, D), 0.0f, Left);
      /* Right: the later head's M = X·Yᵀ as X·R(Y)ᵀ (D × r, column block i). */
      float *X = kind == MI_COMPOSE_V ? W_V : kind == MI_COMPOSE_Q ? W_Q : W_K;
      float *Y = kind == MI_COMPOSE_V ? W_O : kind == MI_COMPOSE_Q ? W_K : W_Q;
      mi__matrix Right = {right + i * r, D, r, (ptrdiff_t)(heads * r), 1};
      if (status == MI_OK)
        status = r_of(R2, Y, kind == MI_COMPOSE_V, D, dh, work);
      if (status == MI_OK)
        status = mi__sgemm(1.0f, mi__matrix_rowmajor(X, D, dh),
                           mi__matrix_t(mi__matrix_rowmajor(R2, r, dh)), 0.0f, Right);
      left_sq[i] = frobenius_sq(Left);
      right_sq[i] = frobenius_sq(Right);
    }
  for (size_t i = 0; i < need; i++)
    out[i] = 0.0;
  for (size_t l2 = 1; l2 < L && status == MI_OK; l2++) {
    mi__matrix Right = {right + l2 * Hr, D, Hr, (ptrdiff_t)(heads * r), 1};
    for (size_t l1 = 0; l1 < l2 && status == MI_OK; l1++) {
      status = mi__sgemm(1.0f, mi__matrix_rowmajor(left + l1 * Hr * D, Hr, D), Right, 0.0f,
                         mi__matrix_rowmajor(block, Hr, Hr));
      for (size_t h1 = 0; h1 < H && status == MI_OK; h1++)
        for (size_t h2 = 0; h2 < H; h2++) {
          double den = left_sq[l1 * H + h1] * right_sq[l2 * H + h2];
          out[((l1 * H + h1) * L + l2) * H + h2] =
              den > 0.0 ? sqrt(block_sq(block, Hr, h1, h2, r) / den) : 0.0;
        }
    }
  }
  free(f);
  free(work);
  free(norm_sq);
  return status;
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
 * dh × D). `work`: (4·D + 1)·dh doubles; `f`: 2·r·dh + 2·r·D + D·dh + r²
 * floats.
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
  mi_status status = r_factor(R1, A1, tau, D, dh);
  if (status == MI_OK)
    status = r_factor(R2, B2t, tau, D, dh);
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
  size_t need_d, need_f;
  if (!mi__mul_size(&need_d, 4 * D + 1, dh) || need_d > SIZE_MAX / sizeof(double) ||
      !mi__mul_size(&need_f, 2 * r + D, dh + D) || need_f > SIZE_MAX / sizeof(float))
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
