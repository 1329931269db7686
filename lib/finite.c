/*
 * finite.c: the screens that keep NaN and Inf out of LAPACK, selection
 * loops and results (mi.h, "Non-finite numbers"). Each scans with a
 * branch-free test on the exponent bits, so the compiler vectorises it;
 * only a failing scan looks for the first bad element.
 */
#include "internal.h"

#include <stdint.h>
#include <string.h>

static bool row_finite_f(const float *x, size_t n) {
  uint32_t bad = 0;
  for (size_t j = 0; j < n; j++) {
    uint32_t bits;
    memcpy(&bits, &x[j], sizeof bits);
    bad |= (bits & 0x7f800000u) == 0x7f800000u;
  }
  return bad == 0;
}

static bool row_finite_d(const double *x, size_t n) {
  uint64_t bad = 0;
  for (size_t j = 0; j < n; j++) {
    uint64_t bits;
    memcpy(&bits, &x[j], sizeof bits);
    bad |= (bits & 0x7ff0000000000000u) == 0x7ff0000000000000u;
  }
  return bad == 0;
}

bool mi__finite_f(const float *m, size_t rows, size_t cols, size_t ld, size_t *at) {
  for (size_t i = 0; i < rows; i++)
    if (!row_finite_f(m + i * ld, cols)) {
      for (size_t j = 0; j < cols; j++)
        if (!row_finite_f(m + i * ld + j, 1)) {
          at[0] = i;
          at[1] = j;
          break;
        }
      return false;
    }
  return true;
}

bool mi__finite_d(const double *m, size_t rows, size_t cols, size_t ld, size_t *at) {
  for (size_t i = 0; i < rows; i++)
    if (!row_finite_d(m + i * ld, cols)) {
      for (size_t j = 0; j < cols; j++)
        if (!row_finite_d(m + i * ld + j, 1)) {
          at[0] = i;
          at[1] = j;
          break;
        }
      return false;
    }
  return true;
}
