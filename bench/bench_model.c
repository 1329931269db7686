/*
 * bench_model: whole-model figures at GPT-2-small shape (d_vocab 50257,
 * d_model 768, d_head 64, 12 × 12 heads), random weights.
 *
 *   bench_model [--rounds R] [--threads N] [--no-trigrams] [--no-compose] [--full]
 *
 * 1. The skip-trigram search of one head (mi_model_skip_trigrams, 24
 *    triples, on a 1 × 1 model of that shape: its per-head sweep, two
 *    d_vocab² circuits), with N threads and with 1, interleaved for R
 *    rounds; each round's ratio, the median, and the load average beside
 *    them. Times 144 it is the search's part of `mi report` on 12 × 12.
 * 2. mi_model_composition_scores, Q, K and V, of the 12 × 12 model, R
 *    rounds: the three tables' sum per round.
 * 3. With --full: mi_model_head_report (weights only) and the skip-trigram
 *    search over all 144 heads, once: the library work of `mi report`.
 *
 * Kernels: mi_blis_select_fast_kernels first, as the mi command does.
 */
#define _POSIX_C_SOURCE 200809L

#include "bench_util.h"

#include <mi.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { V = 50257, D = 768, DH = 64, LAYERS = 12, HEADS = 12, MAX_ROUNDS = 64, TRIPLES = 24 };

static mi_model *random_model(size_t layers, size_t heads) {
  mi_config c;
  mi_config_init(&c, sizeof c);
  c.n_layers = layers;
  c.n_heads = heads;
  c.d_model = D;
  c.d_head = DH;
  c.d_vocab = V;
  c.n_ctx = 1024;
  c.parts = MI_PART_POS_EMBED;
  return bench_random_model(&c, 1);
}

/* The 1-minute load average, or NaN. */
static double load_average(void) {
  FILE *f = fopen("/proc/loadavg", "r");
  double x = NAN;
  if (f != NULL) {
    if (fscanf(f, "%lf", &x) != 1)
      x = NAN;
    fclose(f);
  }
  return x;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(const double *x, int n) {
  double s[MAX_ROUNDS];
  memcpy(s, x, (size_t)n * sizeof *s);
  qsort(s, (size_t)n, sizeof *s, cmp_double);
  return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

static double minimum(const double *x, int n) {
  double m = INFINITY;
  for (int i = 0; i < n; i++)
    m = fmin(m, x[i]);
  return m;
}

static double maximum(const double *x, int n) {
  double m = -INFINITY;
  for (int i = 0; i < n; i++)
    m = fmax(m, x[i]);
  return m;
}

static double trigrams(const mi_model *model, mi_skip_trigram *out) {
  size_t found = 0;
  out[0].struct_size = sizeof *out;
  double t = bench_now();
  bench_check(mi_model_skip_trigrams(out, &found, TRIPLES, model, NULL), "skip-trigrams");
  return bench_now() - t;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  int rounds = 5, do_trigrams = 1, do_compose = 1, full = 0;
  size_t threads = (size_t)sysconf(_SC_NPROCESSORS_ONLN);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      threads = (size_t)atoi(argv[++i]);
    else if (strcmp(argv[i], "--no-trigrams") == 0)
      do_trigrams = 0;
    else if (strcmp(argv[i], "--no-compose") == 0)
      do_compose = 0;
    else if (strcmp(argv[i], "--full") == 0)
      full = 1;
    else {
      fprintf(stderr, "usage: %s [--rounds R] [--threads N] [--no-trigrams] [--no-compose] "
                      "[--full]\n", argv[0]);
      return 2;
    }
  }
  if (rounds < 1 || rounds > MAX_ROUNDS)
    rounds = rounds < 1 ? 1 : MAX_ROUNDS;
  bench_check(mi_blis_select_fast_kernels(), "mi_blis_select_fast_kernels");
  bench_check(mi_set_num_threads(threads), "mi_set_num_threads");
  const char *kernels;
  bench_check(mi_blis_kernel_set(&kernels), "mi_blis_kernel_set");
  printf("kernel set %s, %zu threads, %d rounds, load average %.2f\n", kernels, threads,
         rounds, load_average());
  mi_skip_trigram out[TRIPLES];

  if (do_trigrams) {
    mi_model *one = random_model(1, 1);
    double tn[MAX_ROUNDS], t1[MAX_ROUNDS], ratio[MAX_ROUNDS], load[MAX_ROUNDS];
    (void)trigrams(one, out); /* first use: pages, BLIS's set-up */
    for (int r = 0; r < rounds; r++) {
      load[r] = load_average();
      /* Alternate which goes first, so a load change hits both alike. */
      for (int k = 0; k < 2; k++) {
        bool many = (k == 0) == (r % 2 == 0);
        bench_check(mi_set_num_threads(many ? threads : 1), "threads");
        double t = trigrams(one, out);
        if (many)
          tn[r] = t;
        else
          t1[r] = t;
      }
      ratio[r] = t1[r] / tn[r];
      printf("  round %d: skip-trigrams of one head %.3f s with %zu threads, %.3f s with 1: "
             "%.2f x (load %.2f)\n", r, tn[r], threads, t1[r], ratio[r], load[r]);
    }
    bench_check(mi_set_num_threads(threads), "threads");
    printf("skip-trigram search, one GPT-2-small-shaped head: %zu threads %.3f / %.3f s "
           "(min / median), 1 thread %.3f / %.3f s; %zu threads / 1: median %.2f x "
           "(min %.2f, max %.2f); load average %.1f to %.1f\n",
           threads, minimum(tn, rounds), median(tn, rounds), minimum(t1, rounds),
           median(t1, rounds), threads, median(ratio, rounds), minimum(ratio, rounds),
           maximum(ratio, rounds), minimum(load, rounds), maximum(load, rounds));
    printf("  x 144 heads: %.1f / %.1f min (min / median)\n", 144 * minimum(tn, rounds) / 60,
           144 * median(tn, rounds) / 60);
    printf("  head (0,0)'s best triple: %zu ... %zu -> %zu, score %.3f\n", out[0].src,
           out[0].dst, out[0].out, out[0].score);
    mi_model_free(one);
  }

  if (do_compose || full) {
    double t0 = bench_now();
    mi_model *model = random_model(LAYERS, HEADS);
    printf("model %d x %d heads built in %.1f s\n", LAYERS, HEADS, bench_now() - t0);
    if (do_compose) {
      size_t n = (size_t)LAYERS * HEADS * LAYERS * HEADS;
      double *scores = malloc(n * sizeof *scores), total[MAX_ROUNDS];
      double kind_t[3][MAX_ROUNDS];
      for (int r = 0; r < rounds; r++) {
        total[r] = 0;
        for (int k = 0; k < 3; k++) {
          double t = bench_now();
          bench_check(mi_model_composition_scores(scores, n, model, (mi_composition)k),
                      "composition");
          kind_t[k][r] = bench_now() - t;
          total[r] += kind_t[k][r];
        }
        printf("  round %d: composition Q %.3f s, K %.3f s, V %.3f s: %.3f s (load %.2f)\n",
               r, kind_t[0][r], kind_t[1][r], kind_t[2][r], total[r], load_average());
      }
      printf("composition scores, all three tables of %d x %d heads: %.3f / %.3f s "
             "(min / median)\n", LAYERS, HEADS, minimum(total, rounds), median(total, rounds));
      free(scores);
    }
    if (full) {
      mi_report_options opt;
      mi_report_options_init(&opt, sizeof opt);
      opt.behaviour_sequences = 0;
      mi_head_report *lines = calloc(LAYERS * HEADS, sizeof *lines);
      lines[0].struct_size = sizeof *lines;
      double t = bench_now(), load0 = load_average();
      bench_check(mi_model_head_report(lines, LAYERS * HEADS, model, &opt), "report");
      double rep = bench_now() - t;
      t = bench_now();
      double tri = trigrams(model, out);
      printf("whole model: head report %.1f s, skip-trigrams of 144 heads %.1f s: %.2f min "
             "(load %.2f before, %.2f after)\n", rep, tri, (rep + tri) / 60, load0,
             load_average());
      free(lines);
    }
    mi_model_free(model);
  }
  return 0;
}
