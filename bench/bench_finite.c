/*
 * bench_finite: the cost of the finite check on mi_model_set_weight, side
 * by side in one process. Two builds of libmi are opened with dlopen (say
 * main's, without the check, and this one); rounds alternate between them,
 * each copying every weight of a GPT-2-small-shaped model (d_vocab 50257,
 * d_model 768, 12 layers of 12 heads of 64, F32: about 430 MB) into a
 * fresh model, and report the best and median time of each.
 *
 *   build/bench/bench_finite OLD_LIBMI.so NEW_LIBMI.so [--rounds R]
 */
#define _GNU_SOURCE
#include <mi.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { V = 50257, D = 768, L = 12, H = 12, DH = 64 };

typedef struct api {
  void (*config_init)(mi_config *, size_t);
  mi_status (*create)(mi_model **, const mi_config *);
  mi_status (*set_weight)(mi_model *, mi_weight, size_t, size_t, mi_dtype, const void *, size_t);
  void (*free)(mi_model *);
} api;

static void *sym(void *lib, const char *name) {
  void *p = dlsym(lib, name);
  if (p == NULL) {
    fprintf(stderr, "%s: %s\n", name, dlerror());
    exit(1);
  }
  return p;
}

static api open_api(const char *path) {
  void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    fprintf(stderr, "%s\n", dlerror());
    exit(1);
  }
  /* dlsym's void * into function pointers: memcpy, as ISO C allows. */
  api a;
  void *p;
#define LOAD(field, name) (p = sym(lib, name), memcpy(&a.field, &p, sizeof p))
  LOAD(config_init, "mi_config_init");
  LOAD(create, "mi_model_create");
  LOAD(set_weight, "mi_model_set_weight");
  LOAD(free, "mi_model_free");
#undef LOAD
  return a;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Seconds to set every weight of the model from `data` (≥ V·D floats). */
static double one_round(const api *a, const float *data) {
  mi_config c;
  a->config_init(&c, sizeof c);
  c.n_layers = L, c.n_heads = H, c.d_model = D, c.d_head = DH, c.d_vocab = V, c.n_ctx = 1024;
  c.parts = MI_PART_POS_EMBED;
  mi_model *model;
  if (a->create(&model, &c) != MI_OK)
    exit(1);
  double t0 = now();
  mi_status s = a->set_weight(model, MI_W_E, 0, 0, MI_DTYPE_F32, data, D);
  s |= a->set_weight(model, MI_W_U, 0, 0, MI_DTYPE_F32, data, V);
  s |= a->set_weight(model, MI_W_POS, 0, 0, MI_DTYPE_F32, data, D);
  for (size_t l = 0; l < L; l++)
    for (size_t h = 0; h < H; h++) {
      s |= a->set_weight(model, MI_W_Q, l, h, MI_DTYPE_F32, data, DH);
      s |= a->set_weight(model, MI_W_K, l, h, MI_DTYPE_F32, data, DH);
      s |= a->set_weight(model, MI_W_V, l, h, MI_DTYPE_F32, data, DH);
      s |= a->set_weight(model, MI_W_O, l, h, MI_DTYPE_F32, data, D);
    }
  double t = now() - t0;
  if (s != MI_OK)
    exit(1);
  a->free(model);
  return t;
}

static int by_value(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s OLD_LIBMI.so NEW_LIBMI.so [--rounds R]\n", argv[0]);
    return 2;
  }
  int rounds = argc == 5 && strcmp(argv[3], "--rounds") == 0 ? atoi(argv[4]) : 7;
  if (rounds < 1 || rounds > 100)
    rounds = 7;
  api apis[2] = {open_api(argv[1]), open_api(argv[2])};
  float *data = malloc((size_t)V * D * sizeof *data);
  for (size_t i = 0; i < (size_t)V * D; i++)
    data[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
  double *t[2] = {malloc((size_t)rounds * sizeof(double)), malloc((size_t)rounds * sizeof(double))};
  one_round(&apis[0], data); /* warm: page in the source and the allocator */
  one_round(&apis[1], data);
  for (int r = 0; r < rounds; r++)
    for (int k = 0; k < 2; k++) {
      int which = (r + k) % 2;
      t[which][r] = one_round(&apis[which], data);
    }
  for (int k = 0; k < 2; k++)
    qsort(t[k], (size_t)rounds, sizeof(double), by_value);
  printf("set_weight of %.0f MB of F32 weights: old best %.3f s, median %.3f s; "
         "new best %.3f s, median %.3f s\nnew / old: best %.3f, median %.3f\n",
         4.0 * ((double)V * D * 2 + 1024.0 * D + (double)L * H * 4 * D * DH) / 1e6, t[0][0],
         t[0][rounds / 2], t[1][0], t[1][rounds / 2], t[1][0] / t[0][0],
         t[1][rounds / 2] / t[0][rounds / 2]);
  free(data);
  free(t[0]);
  free(t[1]);
  return 0;
}
