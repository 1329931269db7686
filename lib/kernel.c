/*
 * kernel.c: the BLIS layer (the only file that includes blis.h).
 */
/* blis.h uses POSIX threads types, hidden by strict -std=c11. */
#define _POSIX_C_SOURCE 200809L

#include "kernel.h"

#include <blis.h>

mi_status mi__sgemm(float alpha, mi__matrix A, mi__matrix B, float beta, mi__matrix C) {
  if (A.cols != B.rows || C.rows != A.rows || C.cols != B.cols)
    return mi__fail(MI_ERR_SHAPE, "gemm: (%zu x %zu)(%zu x %zu) into %zu x %zu", A.rows,
                    A.cols, B.rows, B.cols, C.rows, C.cols);
  if (C.rows == 0 || C.cols == 0)
    return MI_OK;
  if (C.data == NULL || (A.cols > 0 && (A.data == NULL || B.data == NULL)))
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "gemm: NULL matrix data");
  rntm_t rntm;
  bli_rntm_init_from_global(&rntm);
  /* BLIS 0.9's prototypes are not const-qualified: the casts let the same
   * code build against 0.9 and 1.x. */
  bli_sgemm_ex(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, (dim_t)C.rows, (dim_t)C.cols,
               (dim_t)A.cols, &alpha, A.data, (inc_t)A.rs, (inc_t)A.cs, B.data,
               (inc_t)B.rs, (inc_t)B.cs, &beta, C.data, (inc_t)C.rs, (inc_t)C.cs, NULL,
               &rntm);
  return MI_OK;
}
