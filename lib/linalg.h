/*
 * linalg.h: small dense work in double through LAPACKE (r × r matrices with
 * r at most d_model), and the QR of a tall factor. Only linalg.c includes
 * lapacke.h: each entry checks LAPACK's int range and starts BLIS through
 * mi__blis_begin first, since LAPACK runs on BLIS's BLAS and BLIS aborts on
 * an invalid BLIS_ARCH_TYPE.
 */
#ifndef MI_LINALG_H
#define MI_LINALG_H

#include "kernel.h"

/*
 * Eigenvalues of the r × r row-major matrix M (overwritten) into re[0..r),
 * im[0..r), sorted by decreasing modulus; a complex pair stays adjacent,
 * positive imaginary part first. MI_ERR_NUMERIC when geev does not converge.
 */
mi_status mi__eigenvalues(double *re, double *im, double *M, size_t r);

/*
 * Singular values of the rows × cols row-major matrix M (overwritten) into
 * out[0..min(rows, cols)), decreasing.
 */
mi_status mi__singular_values(double *out, double *M, size_t rows, size_t cols);

/*
 * The triangular factor of the QR decomposition of the float32 view F
 * (n × r), in double: R is min(n, r) × r row-major (upper trapezoidal),
 * so that FᵀF = RᵀR. Uses n × r doubles of scratch.
 */
mi_status mi__qr_factor(double *R, mi__matrix F);

/*
 * The r × c upper-trapezoidal R of the QR of a tall matrix held in double
 * (rows × c, column-major with leading dimension rows: LAPACK's own order,
 * so LAPACKE makes no transposed copy), r = min(rows, c), into R (r × c
 * row-major float, zeros below the diagonal). `a` is overwritten; tau holds
 * c doubles.
 */
mi_status mi__qr_r(float *R, double *a, double *tau, size_t rows, size_t c);

/*
 * F (r × r, row-major) with FᵀF = G, for G symmetric positive semi-definite
 * (r × r, overwritten): F = √Λ·Qᵀ from G = QΛQᵀ, rounding below 0 cut to 0.
 * `w`: r doubles.
 */
mi_status mi__gram_root(double *F, double *G, double *w, size_t r);

/*
 * The upper-triangular R (r × r, row-major) with RᵀR = G, for G symmetric
 * positive semi-definite (r × r, row-major, read only): Cholesky in double,
 * no LAPACK call (for the small Grams of a weight matrix, where per-call
 * overhead would dominate). A pivot at or below 1e-13 of G's largest
 * diagonal entry counts as 0 and leaves its row of R 0, so a rank-deficient
 * G has one too (RᵀR = G to that rounding).
 */
void mi__cholesky_upper(double *R, const double *G, size_t r);

#endif
