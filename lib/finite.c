/*
 * finite.c: the screens that keep NaN and Inf out of LAPACK, selection
 * loops and results (mi.h, "Non-finite numbers"). Each scans with a
 * branch-free test on the exponent bits, so the compiler vectorises it;
 * only a failing scan looks for the first bad element.
 */
#include "internal.h"

#include <stdint.h>
#include <string.h>

/* The screen of one element type: `bits` its width, `exponent` all ones. */
#define FINITE_SCREEN(name, type, bits, exponent)                                    \
  static bool name##_row(const type *x, size_t n) {                                  \
    bits bad = 0;                                                                    \
    for (size_t j = 0; j < n; j++) {                                                 \
      bits b;                                                                        \
      memcpy(&b, &x[j], sizeof b);                                                   \
      bad |= (b & (exponent)) == (exponent);                                         \
    }                                                                                \
    return bad == 0;                                                                 \
  }                                                                                  \
  bool name(const type *m, size_t rows, size_t cols, size_t ld, size_t *at) {        \
    for (size_t i = 0; i < rows; i++)                                                \
      if (!name##_row(m + i * ld, cols)) {                                           \
        for (size_t j = 0; j < cols; j++)                                            \
          if (!name##_row(m + i * ld + j, 1)) {                                      \
            at[0] = i;                                                               \
            at[1] = j;                                                               \
            break;                                                                   \
          }                                                                          \
        return false;                                                                \
      }                                                                              \
    return true;                                                                     \
  }

FINITE_SCREEN(mi__finite_f, float, uint32_t, 0x7f800000u)
FINITE_SCREEN(mi__finite_d, double, uint64_t, 0x7ff0000000000000u)
