/*
 * circuit.c: mi_circuit, a matrix kept as A·B, and its queries.
 */
#include "linalg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/*
 * Storage of one factor, shared by reference count between a circuit, its
 * transpose and compositions. It owns its floats, or holds a reference to
 * the model whose weights it reads in place (or both: computed factors keep
 * their model alive too, as the API promises).
 */
typedef struct store {
  atomic_size_t refs;
  float *owned;
  mi_model *model;
} store;

struct mi_circuit {
  mi__matrix A, B; /* n × r and r × m views into the stores */
  store *sa, *sb;
};

static store *store_new(float *owned, const mi_model *model) {
  store *s = malloc(sizeof *s);
  if (s == NULL)
    return NULL;
  atomic_init(&s->refs, 1);
  s->owned = owned;
  /* The count is the model's only mutable part: taking a reference is a
   * read as far as callers see. */
  s->model = (mi_model *)model;
  if (s->model != NULL)
    mi__model_retain(s->model);
  return s;
}

static void store_release(store *s) {
  if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
    return;
  free(s->owned);
  mi_model_free(s->model);
  free(s);
}

void mi_circuit_free(mi_circuit *circuit) {
  if (circuit == NULL)
    return;
  store_release(circuit->sa);
  store_release(circuit->sb);
  free(circuit);
}

/*
 * A circuit from two views and their storage. Takes ownership of `owned_a`
 * and `owned_b` (freed on failure); shares `share_a`/`share_b` when given.
 */
static mi_status circuit_new(mi_circuit **out, mi__matrix A, float *owned_a,
                             store *share_a, mi__matrix B, float *owned_b,
                             store *share_b, const mi_model *model) {
  mi_circuit *c = calloc(1, sizeof *c);
  if (c != NULL) {
    c->A = A;
    c->B = B;
    c->sa = share_a ? share_a : store_new(owned_a, model);
    c->sb = share_b ? share_b : store_new(owned_b, model);
    if (share_a)
      atomic_fetch_add(&share_a->refs, 1);
    if (share_b)
      atomic_fetch_add(&share_b->refs, 1);
    if (c->sa != NULL && c->sb != NULL) {
      *out = c;
      return MI_OK;
    }
    if (c->sa == NULL && !share_a)
      free(owned_a);
    if (c->sb == NULL && !share_b)
      free(owned_b);
    mi_circuit_free(c);
  } else {
    free(owned_a);
    free(owned_b);
  }
  return mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate a circuit");
}

/* rows × cols floats, checked for overflow. */
static mi_status alloc_floats(float **out, size_t rows, size_t cols, const char *what) {
  size_t count;
  if (!mi__mul_size(&count, rows, cols) || count > SIZE_MAX / sizeof(float))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "%s: %zu x %zu floats overflow", what, rows, cols);
  *out = malloc((count ? count : 1) * sizeof **out);
  if (*out == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu x %zu floats", what,
                    rows, cols);
  return MI_OK;
}

/* Same for `copies` blocks of rows × cols doubles. */
static mi_status alloc_doubles(double **out, size_t copies, size_t rows, size_t cols,
                               const char *what) {
  size_t count;
  if (!mi__mul_size(&count, rows, cols) || !mi__mul_size(&count, count, copies) ||
      count > SIZE_MAX / sizeof(double))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "%s: %zu x %zu x %zu doubles overflow", what,
                    copies, rows, cols);
  *out = malloc((count ? count : 1) * sizeof **out);
  if (*out == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu x %zu x %zu doubles",
                    what, copies, rows, cols);
  return MI_OK;
}

/* ---- constructors ------------------------------------------------------------ */

/* The embedding E (rows × d_model) a side reads. */
static mi_status embedding(mi__matrix *out, const mi_model *model, mi_embedding which) {
  const mi_config *c = &model->config;
  if (which == MI_EMBED_TOKEN) {
    *out = mi__matrix_rowmajor(model->w[MI_W_E], c->d_vocab, c->d_model);
    return MI_OK;
  }
  if (which != MI_EMBED_POS)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "unknown embedding %d", (int)which);
  if (model->w[MI_W_POS] == NULL)
    return mi__fail(MI_ERR_UNSUPPORTED, "the model has no positional embedding W_pos");
  *out = mi__matrix_rowmajor(model->w[MI_W_POS], c->n_ctx, c->d_model);
  return MI_OK;
}

/* out (E.rows × d_head, owned) ← (E·W + 1·bias)·scale; bias may be NULL. */
static mi_status project(float **out, mi__matrix E, const float *W, const float *bias,
                         size_t d_head, float scale) {
  mi_status status = alloc_floats(out, E.rows, d_head, "circuit factor");
  if (status != MI_OK)
    return status;
  float *P = *out;
  if (bias != NULL)
    for (size_t i = 0; i < E.rows; i++)
      memcpy(P + i * d_head, bias, d_head * sizeof *P);
  status = mi__sgemm(scale, E, mi__matrix_rowmajor((float *)W, E.cols, d_head),
                     bias ? scale : 0.0f, mi__matrix_rowmajor(P, E.rows, d_head));
  if (status != MI_OK) {
    free(P);
    *out = NULL;
  }
  return status;
}

/*
 * One side of head (layer, head)'s QK circuit, E·W (+ 1·bias) times scale,
 * owned, E.rows × d_head. A shortformer model's positional side is W_pos
 * times the weights positions meet (unprocessed) and takes no bias: the
 * biases go with LN(resid), the token side.
 */
static mi_status qk_side(float **out, const mi_model *model, mi_embedding which, mi__matrix E,
                         mi_weight W, size_t layer, size_t head, const float *bias,
                         float scale) {
  size_t dh = model->config.d_head;
  float *slot;
  mi_status status = mi__weight_slot(&slot, model, W, layer, head);
  if (status != MI_OK)
    return status;
  if (which == MI_EMBED_TOKEN || model->config.positional != MI_POSITIONAL_SHORTFORMER)
    return project(out, E, slot, bias, dh, scale);
  status = alloc_floats(out, E.rows, dh, "circuit factor");
  if (status == MI_OK)
    status = mi__positional_side(*out, model, W, layer, head, E.rows, scale);
  if (status != MI_OK) {
    free(*out);
    *out = NULL;
  }
  return status;
}

mi_status mi_circuit_qk(mi_circuit **out, const mi_model *model, size_t layer, size_t head,
                        mi_embedding query, mi_embedding key, unsigned flags) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(model);
  if (flags & ~(unsigned)(MI_QK_BIAS | MI_QK_SCALE))
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "mi_circuit_qk: unknown flag bits 0x%x", flags);
  mi__matrix Eq, Ek;
  float *W_Q, *b_Q = NULL, *b_K = NULL;
  size_t kv = head < model->config.n_heads ? mi__kv_head(model, head) : head;
  mi_status status = embedding(&Eq, model, query);
  if (status == MI_OK)
    status = embedding(&Ek, model, key);
  if (status == MI_OK) /* the head's indices, checked before any bias is read */
    status = mi__weight_slot(&W_Q, model, MI_W_Q, layer, head);
  if (status == MI_OK && (flags & MI_QK_BIAS) && model->w[MI_B_Q] != NULL) {
    status = mi__weight_slot(&b_Q, model, MI_B_Q, layer, head);
    if (status == MI_OK)
      status = mi__weight_slot(&b_K, model, MI_B_K, layer, kv);
  }
  if (status != MI_OK)
    return status;
  size_t dh = model->config.d_head;
  float scale = (flags & MI_QK_SCALE) ? (float)(1.0 / sqrt((double)dh)) : 1.0f;
  float *Q, *K;
  status = qk_side(&Q, model, query, Eq, MI_W_Q, layer, head, b_Q, scale);
  if (status != MI_OK)
    return status;
  status = qk_side(&K, model, key, Ek, MI_W_K, layer, kv, b_K, 1.0f);
  if (status != MI_OK) {
    free(Q);
    return status;
  }
  return circuit_new(out, mi__matrix_rowmajor(Q, Eq.rows, dh), Q, NULL,
                     mi__matrix_t(mi__matrix_rowmajor(K, Ek.rows, dh)), K, NULL, model);
}

mi_status mi_circuit_ov(mi_circuit **out, const mi_model *model, size_t layer,
                        size_t head) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(model);
  const mi_config *c = &model->config;
  float *W_V, *W_O;
  size_t kv = head < c->n_heads ? mi__kv_head(model, head) : head;
  mi_status status = mi__weight_slot(&W_O, model, MI_W_O, layer, head);
  if (status == MI_OK)
    status = mi__weight_slot(&W_V, model, MI_W_V, layer, kv);
  if (status != MI_OK)
    return status;
  size_t dh = c->d_head, D = c->d_model, V = c->d_vocab;
  float *A, *B;
  status = project(&A, mi__matrix_rowmajor(model->w[MI_W_E], V, D), W_V, NULL, dh, 1.0f);
  if (status != MI_OK)
    return status;
  /* B = W_O W_U is stored transposed (V × dh, rows contiguous), like a QK
   * circuit's: a block of B's columns is then one contiguous run, which
   * BLIS packs faster than dh rows far apart when top-k streams tiles. */
  status = alloc_floats(&B, V, dh, "OV factor W_O W_U");
  if (status == MI_OK)
    status = mi__sgemm(1.0f, mi__matrix_t(mi__matrix_rowmajor(model->w[MI_W_U], D, V)),
                       mi__matrix_t(mi__matrix_rowmajor(W_O, dh, D)), 0.0f,
                       mi__matrix_rowmajor(B, V, dh));
  if (status != MI_OK) {
    free(A);
    free(B);
    return status;
  }
  return circuit_new(out, mi__matrix_rowmajor(A, V, dh), A, NULL,
                     mi__matrix_t(mi__matrix_rowmajor(B, V, dh)), B, NULL, model);
}

mi_status mi_circuit_direct(mi_circuit **out, const mi_model *model) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(model);
  const mi_config *c = &model->config;
  return circuit_new(out, mi__matrix_rowmajor(model->w[MI_W_E], c->d_vocab, c->d_model),
                     NULL, NULL,
                     mi__matrix_rowmajor(model->w[MI_W_U], c->d_model, c->d_vocab), NULL,
                     NULL, model);
}

/* Copies a rows × cols caller matrix with leading dimension ld. */
static mi_status copy_factor(float **out, const float *src, size_t rows, size_t cols,
                             size_t ld) {
  mi_status status = alloc_floats(out, rows, cols, "circuit factor");
  if (status == MI_OK)
    for (size_t i = 0; i < rows; i++)
      memcpy(*out + i * cols, src + i * ld, cols * sizeof **out);
  return status;
}

mi_status mi_circuit_from_factors(mi_circuit **out, size_t n, size_t r, size_t m,
                                  const float *A, size_t lda, const float *B, size_t ldb) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(A);
  MI_CHECK_ARG(B);
  if (n == 0 || r == 0 || m == 0)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "circuit of %zu x %zu with rank %zu: no "
                    "dimension may be 0", n, m, r);
  if (lda < r || ldb < m)
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "factor leading dimensions lda %zu < r %zu or ldb %zu < m %zu", lda, r,
                    ldb, m);
  size_t at[2];
  if (!mi__finite_f(A, n, r, lda, at) || !mi__finite_f(B, r, m, ldb, at)) {
    bool in_a = !mi__finite_f(A, n, r, lda, at);
    return mi__fail(MI_ERR_NONFINITE, "circuit factor %s: element [%zu, %zu] is not finite",
                    in_a ? "A" : "B", at[0], at[1]);
  }
  float *a, *b;
  mi_status status = copy_factor(&a, A, n, r, lda);
  if (status != MI_OK)
    return status;
  status = copy_factor(&b, B, r, m, ldb);
  if (status != MI_OK) {
    free(a);
    return status;
  }
  return circuit_new(out, mi__matrix_rowmajor(a, n, r), a, NULL,
                     mi__matrix_rowmajor(b, r, m), b, NULL, NULL);
}

mi_status mi__circuit_adopt(mi_circuit **out, const mi__matrix *A, float *owned_a,
                            const mi__matrix *B, float *owned_b) {
  *out = NULL;
  return circuit_new(out, *A, owned_a, NULL, *B, owned_b, NULL, NULL);
}

mi_status mi__circuit_adopt_b(mi_circuit **out, const mi_circuit *share_a, const mi__matrix *B,
                              float *owned_b) {
  *out = NULL;
  return circuit_new(out, share_a->A, NULL, share_a->sa, *B, owned_b, NULL, NULL);
}

mi_status mi_circuit_transpose(mi_circuit **out, const mi_circuit *circuit) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(circuit);
  return circuit_new(out, mi__matrix_t(circuit->B), NULL, circuit->sb,
                     mi__matrix_t(circuit->A), NULL, circuit->sa, NULL);
}

/* Copies a double r1 × r2 matrix to float. */
static float *to_float(const double *x, size_t count) {
  float *f = malloc((count ? count : 1) * sizeof *f);
  if (f != NULL)
    for (size_t i = 0; i < count; i++)
      f[i] = (float)x[i];
  return f;
}

mi_status mi_circuit_compose(mi_circuit **out, const mi_circuit *first,
                             const mi_circuit *second) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(first);
  MI_CHECK_ARG(second);
  if (first->B.cols != second->A.rows)
    return mi__fail(MI_ERR_SHAPE, "compose: (%zu x %zu) times (%zu x %zu)", first->A.rows,
                    first->B.cols, second->A.rows, second->B.cols);
  size_t r1 = first->A.cols, r2 = second->A.cols;
  double *mid;
  mi_status status = alloc_doubles(&mid, 1, r1, r2, "compose: the middle");
  if (status != MI_OK)
    return status;
  /* The middle B₁A₂ contracts the long shared axis: in double. */
  status = mi__dgemm_inner(mid, r2, first->B, second->A);
  float *midf = status == MI_OK ? to_float(mid, r1 * r2) : NULL;
  free(mid);
  if (status != MI_OK)
    return status;
  if (midf == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "compose: %zu x %zu middle", r1, r2);
  float *f;
  if (r1 <= r2) { /* A₁ · ((B₁A₂) B₂): the new B is r1 × m */
    size_t m = second->B.cols;
    status = alloc_floats(&f, r1, m, "composed factor");
    if (status == MI_OK)
      status = mi__sgemm(1.0f, mi__matrix_rowmajor(midf, r1, r2), second->B, 0.0f,
                         mi__matrix_rowmajor(f, r1, m));
    free(midf);
    if (status != MI_OK) {
      free(f);
      return status;
    }
    return circuit_new(out, first->A, NULL, first->sa, mi__matrix_rowmajor(f, r1, m), f,
                       NULL, second->sb->model);
  }
  size_t n = first->A.rows; /* (A₁ (B₁A₂)) · B₂: the new A is n × r2 */
  status = alloc_floats(&f, n, r2, "composed factor");
  if (status == MI_OK)
    status = mi__sgemm(1.0f, first->A, mi__matrix_rowmajor(midf, r1, r2), 0.0f,
                       mi__matrix_rowmajor(f, n, r2));
  free(midf);
  if (status != MI_OK) {
    free(f);
    return status;
  }
  return circuit_new(out, mi__matrix_rowmajor(f, n, r2), f, NULL, second->B, NULL,
                     second->sb, first->sa->model);
}

/* ---- queries ------------------------------------------------------------------ */

mi_status mi_circuit_shape(size_t *out_rows, size_t *out_cols, size_t *out_rank,
                           const mi_circuit *circuit) {
  MI_CHECK_ARG(circuit);
  if (out_rows)
    *out_rows = circuit->A.rows;
  if (out_cols)
    *out_cols = circuit->B.cols;
  if (out_rank)
    *out_rank = circuit->A.cols;
  return MI_OK;
}

mi_status mi_circuit_entry(double *out, const mi_circuit *circuit, size_t i, size_t j) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(circuit);
  const mi__matrix *A = &circuit->A, *B = &circuit->B;
  if (i >= A->rows || j >= B->cols)
    return mi__fail(MI_ERR_INDEX, "entry (%zu, %zu) of a %zu x %zu circuit", i, j, A->rows,
                    B->cols);
  double sum = 0.0;
  for (size_t t = 0; t < A->cols; t++)
    sum += (double)A->data[(ptrdiff_t)i * A->rs + (ptrdiff_t)t * A->cs] *
           B->data[(ptrdiff_t)t * B->rs + (ptrdiff_t)j * B->cs];
  if (!isfinite(sum))
    return mi__fail(MI_ERR_NUMERIC, "entry (%zu, %zu) of the circuit is not finite (its "
                    "factors' product overflowed)", i, j);
  *out = sum;
  return MI_OK;
}

/* Screens a product written to a caller's buffer: no NaN or Inf leaves as MI_OK. */
static mi_status check_product(mi_status status, const float *out, size_t lines, size_t width,
                               size_t ld, size_t first, bool by_rows) {
  size_t at[2];
  if (status == MI_OK && !mi__finite_f(out, lines, width, ld, at))
    return mi__fail(MI_ERR_NUMERIC, "circuit entry (%zu, %zu) overflowed float32 (an "
                    "infinity or NaN)", by_rows ? first + at[0] : at[0],
                    by_rows ? at[1] : first + at[1]);
  return status;
}

/* Checks a caller buffer of `lines` lines of `width` with leading dimension ld. */
static mi_status check_buffer(size_t lines, size_t width, size_t ld, const char *what) {
  if (ld < width)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "%s: ld %zu < %zu entries a line", what, ld,
                    width);
  size_t span;
  if (!mi__mul_size(&span, lines - 1, ld) || span > SIZE_MAX - width ||
      span + width > SIZE_MAX / sizeof(double))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "%s: %zu lines of ld %zu overflow", what, lines,
                    ld);
  return MI_OK;
}

/* Checks a line range a0..a1 of `count` lines. */
static mi_status check_range(size_t a0, size_t a1, size_t count, const char *what) {
  if (a0 >= a1)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "%s: empty range %zu..%zu", what, a0, a1);
  if (a1 > count)
    return mi__fail(MI_ERR_INDEX, "%s: range %zu..%zu past the %zu there are", what, a0,
                    a1, count);
  return MI_OK;
}

mi_status mi_circuit_rows(float *out, size_t ld, const mi_circuit *circuit, size_t i0,
                          size_t i1) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(circuit);
  size_t m = circuit->B.cols;
  mi_status status = check_range(i0, i1, circuit->A.rows, "circuit rows");
  if (status == MI_OK)
    status = check_buffer(i1 - i0, m, ld, "circuit rows");
  if (status != MI_OK)
    return status;
  mi__matrix C = {out, i1 - i0, m, (ptrdiff_t)ld, 1};
  status = mi__sgemm(1.0f, mi__matrix_rows(circuit->A, i0, i1), circuit->B, 0.0f, C);
  return check_product(status, out, i1 - i0, m, ld, i0, true);
}

mi_status mi_circuit_cols(float *out, size_t ld, const mi_circuit *circuit, size_t j0,
                          size_t j1) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(circuit);
  size_t n = circuit->A.rows;
  mi_status status = check_range(j0, j1, circuit->B.cols, "circuit columns");
  if (status == MI_OK)
    status = check_buffer(n, j1 - j0, ld, "circuit columns");
  if (status != MI_OK)
    return status;
  mi__matrix C = {out, n, j1 - j0, (ptrdiff_t)ld, 1};
  status = mi__sgemm(1.0f, circuit->A, mi__matrix_cols(circuit->B, j0, j1), 0.0f, C);
  return check_product(status, out, n, j1 - j0, ld, j0, false);
}

mi_status mi_circuit_dense(float *out, size_t ld, const mi_circuit *circuit) {
  MI_CHECK_ARG(circuit);
  return mi_circuit_rows(out, ld, circuit, 0, circuit->A.rows);
}

/* ---- top-k ---------------------------------------------------------------------- */

mi_status mi_circuit_topk(size_t *out_index, float *out_value, size_t ld,
                          const mi_circuit *circuit, size_t k, unsigned flags, size_t i0,
                          size_t i1) {
  MI_CHECK_ARG(out_index);
  MI_CHECK_ARG(out_value);
  MI_CHECK_ARG(circuit);
  if (flags & ~(unsigned)(MI_TOPK_COLUMNS | MI_TOPK_SMALLEST))
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "mi_circuit_topk: unknown flag bits 0x%x",
                    flags);
  bool by_columns = flags & MI_TOPK_COLUMNS;
  /* Columns of AB are rows of BᵀAᵀ. */
  mi__matrix A = by_columns ? mi__matrix_t(circuit->B) : circuit->A;
  mi__matrix B = by_columns ? mi__matrix_t(circuit->A) : circuit->B;
  const char *what = by_columns ? "top-k of columns" : "top-k of rows";
  if (k == 0 || k > B.cols)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "%s: k = %zu, but a line has %zu entries",
                    what, k, B.cols);
  mi_status status = check_range(i0, i1, A.rows, what);
  if (status == MI_OK)
    status = check_buffer(i1 - i0, k, ld, what);
  if (status != MI_OK)
    return status;
  mi__select scan = {(flags & MI_TOPK_SMALLEST) ? MI__SELECT_SMALLEST : MI__SELECT_LARGEST,
                     k, out_index, out_value, ld, NULL, NULL, i0};
  status = mi__select_rows(A, B, i0, i1, &scan);
  if (status == MI_ERR_NUMERIC)
    return mi__fail(status, "%s %zu..%zu: the circuit's product overflowed float32 (an "
                    "infinity or NaN in a line)", what, i0, i1);
  return status;
}

/* ---- row statistics -------------------------------------------------------------- */

mi_status mi_circuit_row_stats(double *out_mean, double *out_std, const mi_circuit *circuit,
                               size_t i0, size_t i1, unsigned flags) {
  MI_CHECK_ARG(circuit);
  if (out_mean == NULL && out_std == NULL)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "row statistics: out_mean and out_std are "
                    "both NULL");
  if (flags & ~(unsigned)MI_TOPK_COLUMNS)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "mi_circuit_row_stats: unknown flag bits 0x%x",
                    flags);
  bool by_columns = flags & MI_TOPK_COLUMNS;
  /* Lines are rows of A; X's columns are what each line is dotted with. */
  mi__matrix A = by_columns ? mi__matrix_t(circuit->B) : circuit->A;
  mi__matrix X = by_columns ? mi__matrix_t(circuit->A) : circuit->B;
  mi_status status = check_range(i0, i1, A.rows, by_columns ? "column statistics"
                                                              : "row statistics");
  if (status != MI_OK)
    return status;
  size_t r = A.cols, lines = i1 - i0;
  double *moments, *forms;
  status = alloc_doubles(&moments, 1, r + 1, r, "row statistics: moments");
  if (status != MI_OK)
    return status;
  status = alloc_doubles(&forms, 2, 1, lines, "row statistics");
  if (status != MI_OK) {
    free(moments);
    return status;
  }
  double *mean = moments, *cov = moments + r;
  status = mi__column_moments(mean, cov, X);
  if (status == MI_OK)
    status = mi__row_forms(forms, forms + lines, mi__matrix_rows(A, i0, i1), mean, cov);
  for (size_t i = 0; i < lines && status == MI_OK; i++) {
    double var = forms[lines + i];
    if (out_mean)
      out_mean[i] = forms[i];
    if (out_std) /* NaN stays NaN; rounding below 0 is cut */
      out_std[i] = var < 0.0 ? 0.0 : sqrt(var);
  }
  free(moments);
  free(forms);
  return status;
}

/* ---- norms, singular values, eigenvalues --------------------------------------- */

mi_status mi_circuit_frobenius_norm(double *out, const mi_circuit *circuit) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(circuit);
  size_t r = circuit->A.cols;
  double *ga;
  mi_status status = alloc_doubles(&ga, 2, r, r, "Frobenius norm: two Grams");
  if (status != MI_OK)
    return status;
  double *gb = ga + r * r;
  status = mi__dgemm_inner(ga, r, mi__matrix_t(circuit->A), circuit->A);
  if (status == MI_OK)
    status = mi__dgemm_inner(gb, r, circuit->B, mi__matrix_t(circuit->B));
  if (status == MI_OK) {
    /* tr(GA·GB) with both symmetric is the sum of their entrywise product. */
    double sum = 0.0;
    for (size_t i = 0; i < r * r; i++)
      sum += ga[i] * gb[i];
    if (isfinite(sum))
      *out = sqrt(sum > 0.0 ? sum : 0.0);
    else
      status = mi__fail(MI_ERR_NUMERIC, "Frobenius norm: the circuit's factors hold an "
                        "infinity (a product overflowed float32)");
  }
  free(ga);
  return status;
}

mi_status mi_circuit_singular_values(double *out, size_t count, const mi_circuit *circuit) {
  MI_CHECK_ARG(out);
  MI_CHECK_ARG(circuit);
  size_t n = circuit->A.rows, m = circuit->B.cols, r = circuit->A.cols;
  size_t limit = n < m ? n : m;
  if (count == 0 || count > limit)
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "singular values: count %zu, but a %zu x %zu circuit has %zu", count, n,
                    m, limit);
  size_t ka = n < r ? n : r, kb = m < r ? m : r, ks = ka < kb ? ka : kb;
  double *ra = malloc((ka + kb) * r * sizeof *ra), *core = malloc(ka * kb * sizeof *core);
  double *sv = malloc(ks * sizeof *sv);
  mi_status status = MI_OK;
  if (ra == NULL || core == NULL || sv == NULL)
    status = mi__fail(MI_ERR_OUT_OF_MEMORY, "singular values: rank %zu work", r);
  double *rb = ra ? ra + ka * r : NULL;
  if (status == MI_OK)
    status = mi__qr_factor(ra, circuit->A);
  if (status == MI_OK)
    status = mi__qr_factor(rb, mi__matrix_t(circuit->B));
  if (status == MI_OK) {
    /* AB = Q_A (R_A R_Bᵀ) Q_Bᵀ: the middle has AB's singular values. */
    for (size_t i = 0; i < ka; i++)
      for (size_t j = 0; j < kb; j++) {
        double sum = 0.0;
        for (size_t t = 0; t < r; t++)
          sum += ra[i * r + t] * rb[j * r + t];
        core[i * kb + j] = sum;
      }
    status = mi__singular_values(sv, core, ka, kb);
  }
  if (status == MI_OK)
    for (size_t i = 0; i < count; i++)
      out[i] = i < ks ? sv[i] : 0.0;
  free(ra);
  free(core);
  free(sv);
  return status;
}

mi_status mi_circuit_eigenvalues(double *out_re, double *out_im, size_t count,
                                 const mi_circuit *circuit) {
  MI_CHECK_ARG(out_re);
  MI_CHECK_ARG(out_im);
  MI_CHECK_ARG(circuit);
  size_t n = circuit->A.rows, r = circuit->A.cols;
  if (n != circuit->B.cols)
    return mi__fail(MI_ERR_SHAPE, "eigenvalues of a %zu x %zu circuit: it is not square", n,
                    circuit->B.cols);
  size_t limit = n < r ? n : r;
  if (count == 0 || count > limit)
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "eigenvalues: count %zu, but at most %zu are non-zero (n %zu, rank %zu)",
                    count, limit, n, r);
  double *ba = NULL, *re = NULL;
  mi_status status = alloc_doubles(&ba, 1, r, r, "eigenvalues: B x A");
  if (status == MI_OK)
    status = alloc_doubles(&re, 2, 1, r, "eigenvalues");
  if (status == MI_OK)
    status = mi__dgemm_inner(ba, r, circuit->B, circuit->A);
  if (status == MI_OK)
    status = mi__eigenvalues(re, re + r, ba, r);
  if (status == MI_OK)
    for (size_t i = 0; i < count; i++) {
      out_re[i] = re[i];
      out_im[i] = re[r + i];
    }
  free(ba);
  free(re);
  return status;
}

void mi__circuit_factors(mi__matrix *A, mi__matrix *B, const mi_circuit *circuit) {
  *A = circuit->A;
  *B = circuit->B;
}
