/*
 * kernel.h: the BLIS layer. Every large product in libmi goes through here;
 * kernel.c is the only file that includes blis.h.
 */
#ifndef MI_KERNEL_H
#define MI_KERNEL_H

#include "internal.h"

#include <stddef.h>

/*
 * A float32 matrix view: element (i, j) at data[i * rs + j * cs]. Strides are
 * in elements, row stride first, as BLIS takes them; a transpose is the same
 * data with rs and cs swapped.
 */
typedef struct mi__matrix {
  float *data;
  size_t rows, cols;
  ptrdiff_t rs, cs;
} mi__matrix;

/* Row-major view of a contiguous rows × cols array. */
static inline mi__matrix mi__matrix_rowmajor(float *data, size_t rows, size_t cols) {
  return (mi__matrix){data, rows, cols, (ptrdiff_t)cols, 1};
}

/* The transposed view (no copy). */
static inline mi__matrix mi__matrix_t(mi__matrix m) {
  return (mi__matrix){m.data, m.cols, m.rows, m.cs, m.rs};
}

/*
 * C ← alpha·A·B + beta·C in float32 with BLIS, for any strides. Checks every
 * dimension before BLIS sees it (BLIS aborts on bad ones): A.cols = B.rows,
 * C is A.rows × B.cols, no NULL data with non-zero size.
 */
mi_status mi__sgemm(float alpha, mi__matrix A, mi__matrix B, float beta, mi__matrix C);

#endif
