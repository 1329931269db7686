/*
 * copying.c: copying and induction at full vocabulary: where each row's
 * diagonal entry ranks within its row, streamed without forming the matrix,
 * and the K-composition circuit of an earlier head into a later one.
 */
#include "kernel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/*
 * Diagonal ranks: each diagonal entry is computed first, in double from the
 * factors, and a row's entry counts when it is above it; comparing in float
 * against the largest float not above the diagonal keeps the scan in float
 * (mi__select_rows, vectorised) with the same answer as in double.
 */
void mi__diag_thresholds(float *out, const mi_circuit *circuit, size_t i0, size_t i1) {
  mi__matrix A, B;
  mi__circuit_factors(&A, &B, circuit);
  for (size_t i = i0; i < i1; i++) {
    double d = 0.0;
    for (size_t t = 0; t < A.cols; t++)
      d += (double)A.data[(ptrdiff_t)i * A.rs + (ptrdiff_t)t * A.cs] *
           B.data[(ptrdiff_t)t * B.rs + (ptrdiff_t)i * B.cs];
    float f = (float)d;
    if ((double)f > d)
      f = nextafterf(f, -INFINITY);
    out[i - i0] = f;
  }
}

/* Ranks of rows i0..i1 of a checked square circuit (n × n) into out. */
static mi_status diag_ranks(size_t *out, const mi_circuit *circuit, size_t n, size_t i0,
                            size_t i1) {
  mi__matrix A, B;
  mi__circuit_factors(&A, &B, circuit);
  float *threshold = malloc((i1 - i0) * sizeof *threshold);
  if (threshold == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "diagonal rank: %zu rows", i1 - i0);
  mi__diag_thresholds(threshold, circuit, i0, i1);
  mi__select scan = {MI__SELECT_RANK, 0, NULL, NULL, 0, threshold, out, i0};
  mi_status status = mi__select_rows(A, B, i0, i1, &scan);
  for (size_t i = i0; i < i1 && status == MI_OK; i++)
    if (isnan(threshold[i - i0]))
      out[i - i0] = n;
  free(threshold);
  return status;
}

/* Checks that a circuit is square; its size into *n. */
static mi_status check_square(size_t *n, const mi_circuit *circuit, const char *what) {
  size_t m;
  mi_circuit_shape(n, &m, NULL, circuit);
  if (*n != m)
    return mi__fail(MI_ERR_SHAPE, "%s of a %zu x %zu circuit: it is not square", what, *n, m);
  return MI_OK;
}

mi_status mi_circuit_diag_rank(size_t *out, const mi_circuit *circuit, size_t i0, size_t i1) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(circuit);
  size_t n = 0;
  mi_status status = check_square(&n, circuit, "diagonal rank");
  if (status != MI_OK)
    return status;
  if (i0 >= i1)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "diagonal rank: empty range %zu..%zu", i0, i1);
  if (i1 > n)
    return mi__fail(MI_ERR_INDEX, "diagonal rank: rows %zu..%zu of %zu", i0, i1, n);
  return diag_ranks(out, circuit, n, i0, i1);
}

mi_status mi_circuit_copying_accuracy(double *out_top1, double *out_top5,
                                      const mi_circuit *circuit) {
  MI_CHECK_ARG(out_top1);
  MI_CHECK_ARG(out_top5);
  MI_CHECK_ARG(circuit);
  size_t n = 0, top1 = 0, top5 = 0;
  mi_status status = check_square(&n, circuit, "copying accuracy");
  if (status != MI_OK)
    return status;
  size_t *rank = malloc(n * sizeof *rank);
  if (rank == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "copying accuracy: %zu ranks", n);
  status = diag_ranks(rank, circuit, n, 0, n);
  for (size_t i = 0; i < n && status == MI_OK; i++) {
    top1 += rank[i] < 1;
    top5 += rank[i] < 5;
  }
  if (status == MI_OK) {
    *out_top1 = (double)top1 / (double)n;
    *out_top5 = (double)top5 / (double)n;
  }
  free(rank);
  return status;
}

/* Checks (layer, head) against the model. */
static mi_status check_head(const mi_model *model, size_t layer, size_t head, const char *which) {
  const mi_config *c = &model->config;
  if (layer >= c->n_layers || head >= c->n_heads)
    return mi__fail(MI_ERR_INDEX, "K-composition: %s head (%zu, %zu) of a %zu x %zu model",
                    which, layer, head, c->n_layers, c->n_heads);
  return MI_OK;
}

mi_status mi_circuit_k_composition(mi_circuit **out, const mi_model *model, size_t layer1,
                                   size_t head1, size_t layer2, size_t head2, unsigned flags) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(model);
  if (flags & ~(unsigned)(MI_QK_BIAS | MI_QK_SCALE))
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "K-composition: unknown flag bits 0x%x", flags);
  mi_status status = check_head(model, layer1, head1, "earlier");
  if (status == MI_OK)
    status = check_head(model, layer2, head2, "later");
  if (status != MI_OK)
    return status;
  if (layer1 >= layer2)
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "K-composition: head (%zu, %zu) is not in a layer before (%zu, %zu)",
                    layer1, head1, layer2, head2);
  const mi_config *c = &model->config;
  size_t D = c->d_model, dh = c->d_head, V = c->d_vocab, G = c->n_kv_heads, H = c->n_heads;
  size_t q2 = layer2 * H + head2, k2 = layer2 * G + mi__kv_head(model, head2);
  size_t o1 = layer1 * H + head1, v1 = layer1 * G + mi__kv_head(model, head1), count;
  if (!mi__mul_size(&count, V, dh) || count > SIZE_MAX / sizeof(float))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "K-composition: %zu x %zu factors overflow", V, dh);
  /* The circuit adopts A and Bt; B is Bt seen transposed, as an OV circuit's. */
  float *A = malloc(count * sizeof *A), *Bt = malloc(count * sizeof *Bt);
  float *small = malloc((dh * dh + D * dh) * sizeof *small);
  if (A == NULL || Bt == NULL || small == NULL) {
    free(A);
    free(Bt);
    free(small);
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "K-composition: factors of %zu x %zu", V, dh);
  }
  float *ok = small, *mid = small + dh * dh;
  bool bias = (flags & MI_QK_BIAS) && model->w[MI_B_Q] != NULL;
  float scale = (flags & MI_QK_SCALE) ? (float)(1.0 / sqrt((double)dh)) : 1.0f;
  mi__matrix E = mi__matrix_rowmajor(model->w[MI_W_E], V, D);
  /* Query side: (W_E W_Q² + 1 b_Q²)·scale. */
  for (size_t i = 0; i < V && bias; i++)
    memcpy(A + i * dh, model->w[MI_B_Q] + q2 * dh, dh * sizeof *A);
  status = mi__sgemm(scale, E, mi__matrix_rowmajor(model->w[MI_W_Q] + q2 * D * dh, D, dh),
                     bias ? scale : 0.0f, mi__matrix_rowmajor(A, V, dh));
  /* Key side: W_E W_V¹ (W_O¹ W_K²) + 1 b_K², the small product first. */
  if (status == MI_OK)
    status = mi__sgemm(1.0f, mi__matrix_rowmajor(model->w[MI_W_O] + o1 * dh * D, dh, D),
                       mi__matrix_rowmajor(model->w[MI_W_K] + k2 * D * dh, D, dh), 0.0f,
                       mi__matrix_rowmajor(ok, dh, dh));
  if (status == MI_OK)
    status = mi__sgemm(1.0f, mi__matrix_rowmajor(model->w[MI_W_V] + v1 * D * dh, D, dh),
                       mi__matrix_rowmajor(ok, dh, dh), 0.0f, mi__matrix_rowmajor(mid, D, dh));
  for (size_t i = 0; i < V && bias && status == MI_OK; i++)
    memcpy(Bt + i * dh, model->w[MI_B_K] + k2 * dh, dh * sizeof *Bt);
  if (status == MI_OK)
    status = mi__sgemm(1.0f, E, mi__matrix_rowmajor(mid, D, dh), bias ? 1.0f : 0.0f,
                       mi__matrix_rowmajor(Bt, V, dh));
  free(small);
  if (status != MI_OK) {
    free(A);
    free(Bt);
    return status;
  }
  mi__matrix Am = mi__matrix_rowmajor(A, V, dh);
  mi__matrix Bm = mi__matrix_t(mi__matrix_rowmajor(Bt, V, dh));
  return mi__circuit_adopt(out, &Am, A, &Bm, Bt);
}
