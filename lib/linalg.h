/*
 * linalg.h: small dense work in double through LAPACKE (r × r matrices with
 * r at most d_model), and the QR of a tall float32 factor.
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

#endif
