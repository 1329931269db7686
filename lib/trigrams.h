/*
 * trigrams.h: the pieces of the skip-trigram search (trigrams.c) that the
 * sweep (sweep.c) shares, so that a sweep's table pairs and orders its
 * triples as mi report's does.
 */
#ifndef MI_TRIGRAMS_H
#define MI_TRIGRAMS_H

#include "kernel.h"

/*
 * Row mean and 1/standard deviation of n floats, in one pass, in double
 * (float entries of one row: no cancellation that matters for a z-score).
 * False for a row with no spread, where no z-score exists. `sd` (may be
 * NULL): the standard deviation, 0 for a row without spread.
 */
bool mi__row_stats(const float *row, size_t n, double *mean, double *inv_sd, double *sd);

/* Keeps the k best (index, value) of a line, best first: a strictly larger
 * value goes ahead, so of equal values the first seen (lower index) stays. */
void mi__keep_best(size_t *idx, double *val, size_t k, size_t i, double v);

/* mi__keep_best behind its common case, inline: most values do not beat the k-th. */
static inline void mi__offer(size_t *idx, double *val, size_t k, size_t i, double v) {
  if (v > val[k - 1])
    mi__keep_best(idx, val, k, i, v);
}

/* Per-source ranks of one circuit: k best (index, z) for each of n sources;
 * SIZE_MAX marks a rank not filled. */
typedef struct mi__ranks {
  size_t k;
  size_t *best;
  double *z;
} mi__ranks;

/* The best `cap` triples, kept as a heap whose root is the worst kept. */
typedef struct mi__triples {
  mi_skip_trigram *items;
  size_t *seq; /* arrival order, for ties */
  size_t count, cap, arrived;
} mi__triples;

/* The triples of head (l, h) from its OV and QK ranks over n sources,
 * offered to the best list in the order (src, output rank, destination rank). */
void mi__triples_offer(mi__triples *top, const mi__ranks *ov, const mi__ranks *qk, size_t n,
                       size_t l, size_t h);

/* Heap sort in place: the worst goes last, so the items end best first. */
void mi__triples_sort(mi__triples *t);

#endif
