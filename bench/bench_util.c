#define _POSIX_C_SOURCE 200809L

#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void bench_check(mi_status status, const char *what) {
  if (status != MI_OK) {
    fprintf(stderr, "%s: %s: %s\n", what, mi_status_str(status), mi_last_error());
    exit(1);
  }
}

/* xorshift64* uniform in ±√(3/rows). */
static void fill(uint64_t *state, float *x, size_t count, size_t rows) {
  double a = sqrt(3.0 / (double)rows);
  for (size_t i = 0; i < count; i++) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    double u = (double)((*state * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
    x[i] = (float)(a * (2.0 * u - 1.0));
  }
}

static void set(mi_model *model, mi_weight which, size_t layer, size_t head,
                uint64_t *state, float *buf) {
  size_t rows, cols;
  bench_check(mi_model_weight_shape(&rows, &cols, model, which), "mi_model_weight_shape");
  fill(state, buf, rows * cols, rows);
  bench_check(mi_model_set_weight(model, which, layer, head, MI_DTYPE_F32, buf, cols),
              "mi_model_set_weight");
}

mi_model *bench_random_model(const mi_config *config, uint64_t seed) {
  mi_model *model;
  bench_check(mi_model_create(&model, config), "mi_model_create");
  size_t D = config->d_model, largest = config->d_vocab > config->n_ctx
                                             ? config->d_vocab : config->n_ctx;
  float *buf = malloc((largest > config->d_head ? largest : config->d_head) * D * sizeof *buf);
  if (buf == NULL)
    bench_check(MI_ERR_OUT_OF_MEMORY, "bench_random_model");
  uint64_t state = seed * 0x9E3779B97F4A7C15ull | 1;
  set(model, MI_W_E, 0, 0, &state, buf);
  set(model, MI_W_U, 0, 0, &state, buf);
  if (config->parts & MI_PART_POS_EMBED)
    set(model, MI_W_POS, 0, 0, &state, buf);
  state = (seed + 1) * 0x9E3779B97F4A7C15ull | 1;
  size_t kv = config->n_kv_heads ? config->n_kv_heads : config->n_heads;
  for (size_t l = 0; l < config->n_layers; l++)
    for (size_t h = 0; h < config->n_heads; h++) {
      set(model, MI_W_Q, l, h, &state, buf);
      if (h < kv) {
        set(model, MI_W_K, l, h, &state, buf);
        set(model, MI_W_V, l, h, &state, buf);
      }
      set(model, MI_W_O, l, h, &state, buf);
    }
  free(buf);
  bench_check(mi_model_process(model, 0), "mi_model_process");
  return model;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double bench_median(const double *x, int n) {
  double s[64];
  if (n > 64)
    n = 64;
  memcpy(s, x, (size_t)n * sizeof *s);
  qsort(s, (size_t)n, sizeof *s, cmp_double);
  return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

double bench_minimum(const double *x, int n) {
  double m = INFINITY;
  for (int i = 0; i < n; i++)
    m = fmin(m, x[i]);
  return m;
}

double bench_maximum(const double *x, int n) {
  double m = -INFINITY;
  for (int i = 0; i < n; i++)
    m = fmax(m, x[i]);
  return m;
}
