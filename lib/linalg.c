/*
 * linalg.c: small dense work in double through LAPACKE.
 */
#include "linalg.h"

#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK takes int dimensions. */
static mi_status check_lapack_size(size_t n, const char *what) {
  if (n > INT_MAX)
    return mi__fail(MI_ERR_SHAPE, "%s: dimension %zu is too large for LAPACK", what, n);
  return mi__blis_begin();
}

/*
 * Screens a LAPACK input (rows × cols at m[i * ld + j]). A NaN or infinity
 * would make LAPACK call its xerbla, which prints, or scale by it and write
 * out of bounds (dgeev); weights are finite, so one here is an overflow.
 */
static mi_status screen(const char *routine, const double *m, size_t rows, size_t cols,
                        size_t ld) {
  size_t at[2];
  if (mi__finite_d(m, rows, cols, ld, at))
    return MI_OK;
  return mi__fail(MI_ERR_NUMERIC, "%s: element [%zu, %zu] of its %zu x %zu input is not "
                  "finite (a product of the weights overflowed float32)", routine, at[0],
                  at[1], rows, cols);
}

/* What a LAPACKE routine's info says; `failed` describes info > 0. */
static mi_status lapack_status(lapack_int info, const char *routine, size_t rows, size_t cols,
                               const char *failed) {
  if (info == 0)
    return MI_OK;
  if (info == LAPACK_WORK_MEMORY_ERROR || info == LAPACK_TRANSPOSE_MEMORY_ERROR)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "%s: no memory for the work space of a %zu x %zu "
                    "matrix", routine, rows, cols);
  if (info < 0)
    return mi__fail(MI_ERR_NUMERIC, "%s refused its argument %d (a %zu x %zu matrix)", routine,
                    (int)-info, rows, cols);
  return mi__fail(MI_ERR_NUMERIC, "%s on a %zu x %zu matrix: %s (info %d)", routine, rows,
                  cols, failed, (int)info);
}

/* Orders eigenvalues by decreasing modulus, then by decreasing real part,
 * then positive imaginary part first, so that a conjugate pair stays
 * together in a fixed order. */
typedef struct { double re, im; } eigenvalue;

static int by_modulus(const void *pa, const void *pb) {
  const eigenvalue *a = pa, *b = pb;
  double ma = hypot(a->re, a->im), mb = hypot(b->re, b->im);
  if (ma != mb)
    return ma > mb ? -1 : 1;
  if (a->re != b->re)
    return a->re > b->re ? -1 : 1;
  return (a->im < b->im) - (a->im > b->im);
}

mi_status mi__eigenvalues(double *re, double *im, double *M, size_t r) {
  mi_status status = check_lapack_size(r, "eigenvalues");
  if (status != MI_OK || r == 0)
    return status;
  status = screen("LAPACKE_dgeev", M, r, r, r);
  if (status != MI_OK)
    return status;
  lapack_int info = LAPACKE_dgeev(LAPACK_ROW_MAJOR, 'N', 'N', (lapack_int)r, M,
                                  (lapack_int)r, re, im, NULL, 1, NULL, 1);
  status = lapack_status(info, "LAPACKE_dgeev", r, r, "the QR algorithm did not converge");
  if (status != MI_OK)
    return status;
  eigenvalue *e = malloc(r * sizeof *e);
  if (e == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "eigenvalues: %zu pairs", r);
  for (size_t i = 0; i < r; i++)
    e[i] = (eigenvalue){re[i], im[i]};
  qsort(e, r, sizeof *e, by_modulus);
  for (size_t i = 0; i < r; i++) {
    re[i] = e[i].re;
    im[i] = e[i].im;
  }
  free(e);
  return MI_OK;
}

mi_status mi__singular_values(double *out, double *M, size_t rows, size_t cols) {
  mi_status status = check_lapack_size(rows > cols ? rows : cols, "singular values");
  size_t k = rows < cols ? rows : cols;
  if (status != MI_OK || k == 0)
    return status;
  status = screen("LAPACKE_dgesdd", M, rows, cols, cols);
  if (status != MI_OK)
    return status;
  /* Row-major LAPACKE checks ldu and ldvt even when they are not used. */
  lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'N', (lapack_int)rows,
                                   (lapack_int)cols, M, (lapack_int)cols, out, NULL,
                                   (lapack_int)cols, NULL, (lapack_int)cols);
  return lapack_status(info, "LAPACKE_dgesdd", rows, cols, "the SVD did not converge");
}

mi_status mi__qr_factor(double *R, mi__matrix F) {
  size_t n = F.rows, r = F.cols, k = n < r ? n : r;
  mi_status status = check_lapack_size(n > r ? n : r, "QR");
  if (status != MI_OK)
    return status;
  size_t count;
  if (!mi__mul_size(&count, n, r) || count > SIZE_MAX / sizeof(double))
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "QR: %zu x %zu doubles overflow", n, r);
  /* Column-major, so LAPACKE works in place without a transposed copy. */
  double *a = malloc(count * sizeof *a), *tau = malloc((k ? k : 1) * sizeof *tau);
  if (a == NULL || tau == NULL) {
    free(a);
    free(tau);
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "QR: %zu x %zu doubles", n, r);
  }
  for (size_t j = 0; j < r; j++)
    for (size_t i = 0; i < n; i++)
      a[j * n + i] = F.data[(ptrdiff_t)i * F.rs + (ptrdiff_t)j * F.cs];
  status = screen("LAPACKE_dgeqrf", a, r, n, n); /* column-major: r columns of n */
  lapack_int info = status != MI_OK ? 0
                    : LAPACKE_dgeqrf(LAPACK_COL_MAJOR, (lapack_int)n, (lapack_int)r, a,
                                     (lapack_int)n, tau);
  if (status == MI_OK)
    status = lapack_status(info, "LAPACKE_dgeqrf", n, r, "failed");
  if (status == MI_OK)
    for (size_t i = 0; i < k; i++)
      for (size_t j = 0; j < r; j++)
        R[i * r + j] = j >= i ? a[j * n + i] : 0.0;
  free(a);
  free(tau);
  return status;
}

mi_status mi__qr_r(float *R, double *a, double *tau, size_t rows, size_t c) {
  size_t r = rows < c ? rows : c;
  mi_status status = check_lapack_size(rows > c ? rows : c, "QR");
  if (status != MI_OK)
    return status;
  status = screen("LAPACKE_dgeqrf", a, c, rows, rows); /* column-major */
  if (status != MI_OK)
    return status;
  lapack_int info = LAPACKE_dgeqrf(LAPACK_COL_MAJOR, (lapack_int)rows, (lapack_int)c, a,
                                   (lapack_int)rows, tau);
  status = lapack_status(info, "LAPACKE_dgeqrf", rows, c, "failed");
  if (status != MI_OK)
    return status;
  for (size_t i = 0; i < r; i++)
    for (size_t j = 0; j < c; j++)
      R[i * c + j] = j >= i ? (float)a[j * rows + i] : 0.0f;
  return MI_OK;
}

mi_status mi__gram_root(double *F, double *G, double *w, size_t r) {
  mi_status status = check_lapack_size(r, "Gram root");
  if (status != MI_OK)
    return status;
  status = screen("LAPACKE_dsyev", G, r, r, r);
  if (status != MI_OK)
    return status;
  lapack_int info = LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int)r, G,
                                  (lapack_int)r, w);
  status = lapack_status(info, "LAPACKE_dsyev", r, r, "the eigensolver did not converge");
  if (status != MI_OK)
    return status;
  for (size_t k = 0; k < r; k++) {
    double s = w[k] > 0.0 ? sqrt(w[k]) : 0.0;
    for (size_t i = 0; i < r; i++)
      F[k * r + i] = s * G[i * r + k];
  }
  return MI_OK;
}

void mi__cholesky_upper(double *R, const double *G, size_t r) {
  double largest = 0.0;
  for (size_t i = 0; i < r; i++)
    largest = G[i * r + i] > largest ? G[i * r + i] : largest;
  double tol = 1e-13 * largest;
  for (size_t i = 0; i < r; i++) {
    for (size_t j = 0; j < i; j++)
      R[i * r + j] = 0.0;
    double d = G[i * r + i];
    for (size_t k = 0; k < i; k++)
      d -= R[k * r + i] * R[k * r + i];
    if (!(d > tol)) {
      for (size_t j = i; j < r; j++)
        R[i * r + j] = 0.0;
      continue;
    }
    double rii = sqrt(d);
    R[i * r + i] = rii;
    for (size_t j = i + 1; j < r; j++) {
      double x = G[i * r + j];
      for (size_t k = 0; k < i; k++)
        x -= R[k * r + i] * R[k * r + j];
      R[i * r + j] = x / rii;
    }
  }
}
