/*
 * bench_util.h: what the benchmarks share: a clock, a fail-fast check and
 * random models of a chosen shape.
 */
#ifndef MI_BENCH_UTIL_H
#define MI_BENCH_UTIL_H

#include <mi.h>

#include <stdint.h>

/* Monotonic seconds. */
double bench_now(void);

/* Exits with libmi's message when `status` is not MI_OK. */
void bench_check(mi_status status, const char *what);

/*
 * A model of shape `config` (processed with no steps) whose W_E, W_U and
 * W_pos come from `seed` and whose head weights come from `seed + 1`, so two
 * models that differ only in d_vocab share their heads. Every entry is
 * uniform with variance 1/rows, like an initialised layer.
 */
mi_model *bench_random_model(const mi_config *config, uint64_t seed);

/* Median, least and largest of n ≥ 1 values (at most 64 for the median). */
double bench_median(const double *x, int n);
double bench_minimum(const double *x, int n);
double bench_maximum(const double *x, int n);

#endif
