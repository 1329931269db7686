/*
 * bench_model: whole-model figures at GPT-2-small shape (d_vocab 50257,
 * d_model 768, d_head 64, 12 × 12 heads), random weights.
 *
 *   bench_model [--rounds R] [--threads N] [--no-trigrams] [--no-compose]
 *               [--full] [--layers L] [--heads H]
 *
 * 1. The skip-trigram search of one head (mi_model_skip_trigrams, 24
 *    triples, on a 1 × 1 model of that shape: its per-head sweep, two
 *    d_vocab² circuits), with N threads and with 1, interleaved for R
 *    rounds; each round's ratio, the median, and the load average beside
 *    them. Times 144 it is the search's part of `mi report` on 12 × 12.
 * 2. mi_model_composition_scores, Q, K and V, of the 12 × 12 model, then the
 *    three in one mi_model_composition_tables call, R
 *    rounds: the three tables' sum per round.
 * 3. With --full: what `mi report` asks of the library on an L × H model
 *    of that shape (default 12 × 12): the skip-trigram search and
 *    mi_model_head_roles (the head report, copying accuracy, behaviour,
 *    K-composition partners, with the command's defaults), both ways,
 *    interleaved for R rounds: "shared" (the search's OV pass gives the
 *    copying accuracy, as mi report does) and "separate" (the roles
 *    compute it: one more d_vocab² pass a head); wall and CPU seconds.
 *    Run 1 × 1 and 1 × 2 for the fixed and per-head parts.
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
#include <sys/resource.h>
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

/* CPU seconds of the whole process so far (every thread). */
static double cpu_seconds(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)u.ru_utime.tv_sec + 1e-6 * (double)u.ru_utime.tv_usec +
         (double)u.ru_stime.tv_sec + 1e-6 * (double)u.ru_stime.tv_usec;
}

/* Wall seconds of one search; its CPU seconds into *cpu when given. */
static double trigrams(const mi_model *model, mi_skip_trigram *out, double *cpu) {
  size_t found = 0;
  out[0].struct_size = sizeof *out;
  double c = cpu_seconds(), t = bench_now();
  bench_check(mi_model_skip_trigrams(out, &found, TRIPLES, model, NULL), "skip-trigrams");
  t = bench_now() - t;
  if (cpu)
    *cpu = cpu_seconds() - c;
  return t;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  int rounds = 5, do_trigrams = 1, do_compose = 1, full = 0;
  size_t layers = LAYERS, heads = HEADS;
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
    else if (strcmp(argv[i], "--layers") == 0 && i + 1 < argc)
      layers = (size_t)atoi(argv[++i]);
    else if (strcmp(argv[i], "--heads") == 0 && i + 1 < argc)
      heads = (size_t)atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: %s [--rounds R] [--threads N] [--no-trigrams] [--no-compose] "
                      "[--full] [--layers L] [--heads H]\n", argv[0]);
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
    double cn[MAX_ROUNDS], c1[MAX_ROUNDS], cores[MAX_ROUNDS], cpu_ratio[MAX_ROUNDS];
    (void)trigrams(one, out, NULL); /* first use: pages, BLIS's set-up */
    for (int r = 0; r < rounds; r++) {
      load[r] = load_average();
      /* Alternate which goes first, so a load change hits both alike. */
      for (int k = 0; k < 2; k++) {
        bool many = (k == 0) == (r % 2 == 0);
        bench_check(mi_set_num_threads(many ? threads : 1), "threads");
        double cpu, t = trigrams(one, out, &cpu);
        if (many)
          tn[r] = t, cn[r] = cpu;
        else
          t1[r] = t, c1[r] = cpu;
      }
      ratio[r] = t1[r] / tn[r];
      cores[r] = cn[r] / tn[r];
      cpu_ratio[r] = cn[r] / c1[r];
      printf("  round %d: skip-trigrams of one head %.3f s with %zu threads, %.3f s with 1: "
             "%.2f x (load %.2f); CPU %.2f s and %.2f s: the %zu threads got %.2f cores\n", r,
             tn[r], threads, t1[r], ratio[r], load[r], cn[r], c1[r], threads, cores[r]);
    }
    bench_check(mi_set_num_threads(threads), "threads");
    printf("skip-trigram search, one GPT-2-small-shaped head: %zu threads %.3f / %.3f s "
           "(min / median), 1 thread %.3f / %.3f s; %zu threads / 1: median %.2f x "
           "(min %.2f, max %.2f); load average %.1f to %.1f\n",
           threads, bench_minimum(tn, rounds), bench_median(tn, rounds), bench_minimum(t1, rounds),
           bench_median(t1, rounds), threads, bench_median(ratio, rounds), bench_minimum(ratio, rounds),
           bench_maximum(ratio, rounds), bench_minimum(load, rounds), bench_maximum(load, rounds));
    printf("  x 144 heads: %.1f / %.1f min (min / median)\n", 144 * bench_minimum(tn, rounds) / 60,
           144 * bench_median(tn, rounds) / 60);
    printf("  CPU seconds, %zu threads / 1: median %.3f (the threads' own overhead); the %zu "
           "threads got %.2f cores (median, max %.2f)\n", threads, bench_median(cpu_ratio, rounds),
           threads, bench_median(cores, rounds), bench_maximum(cores, rounds));
    printf("  head (0,0)'s best triple: %zu ... %zu -> %zu, score %.3f\n", out[0].src,
           out[0].dst, out[0].out, out[0].score);
    mi_model_free(one);
  }

  if (do_compose) {
    double t0 = bench_now();
    mi_model *model = random_model(LAYERS, HEADS);
    printf("model %d x %d heads built in %.1f s\n", LAYERS, HEADS, bench_now() - t0);
    size_t n = (size_t)LAYERS * HEADS * LAYERS * HEADS;
    double *scores = malloc(3 * n * sizeof *scores), total[MAX_ROUNDS];
    double kind_t[3][MAX_ROUNDS], tables[MAX_ROUNDS], tables_cpu[MAX_ROUNDS];
    const mi_composition qkv[3] = {MI_COMPOSE_Q, MI_COMPOSE_K, MI_COMPOSE_V};
    for (int r = 0; r < rounds; r++) {
      total[r] = 0;
      for (int k = 0; k < 3; k++) {
        double t = bench_now();
        bench_check(mi_model_composition_scores(scores, n, model, (mi_composition)k),
                    "composition");
        kind_t[k][r] = bench_now() - t;
        total[r] += kind_t[k][r];
      }
      /* The three in one call, which shares the earlier heads' Grams. */
      double t = bench_now(), c0 = cpu_seconds();
      bench_check(mi_model_composition_tables(scores, 3 * n, model, qkv, 3), "composition tables");
      tables[r] = bench_now() - t;
      tables_cpu[r] = cpu_seconds() - c0;
      printf("  round %d: composition Q %.3f s, K %.3f s, V %.3f s: %.3f s; tables Q+K+V %.3f s "
             "(CPU %.3f s) (load %.2f)\n", r, kind_t[0][r], kind_t[1][r], kind_t[2][r], total[r],
             tables[r], tables_cpu[r], load_average());
    }
    printf("composition scores, all three tables of %d x %d heads: %.3f / %.3f s "
           "(min / median); in one mi_model_composition_tables call %.3f / %.3f s, CPU %.3f s "
           "(median)\n", LAYERS, HEADS, bench_minimum(total, rounds), bench_median(total, rounds),
           bench_minimum(tables, rounds), bench_median(tables, rounds),
           bench_median(tables_cpu, rounds));
    free(scores);
    mi_model_free(model);
  }

  if (full) {
    /* Both ways, interleaved for R rounds (which goes first alternating):
     * "shared", as mi report now does it (the search first, its OV pass
     * giving the roles' copying accuracy: two d_vocab² passes a head), and
     * "separate" (the roles compute the accuracy themselves: three). */
    mi_model *model = random_model(layers, heads);
    size_t nh = layers * heads;
    mi_head_roles *roles = calloc(nh, sizeof *roles);
    mi_role_partner *partners = calloc(nh * nh + 1, sizeof *partners);
    double *top1 = calloc(nh, sizeof *top1), floor;
    double wall[2][MAX_ROUNDS], cpu[2][MAX_ROUNDS];
    bench_check(mi_model_skip_trigram_floor(&floor, model), "noise floor");
    for (int r = 0; r < rounds; r++)
      for (int k = 0; k < 2; k++) {
        int shared = (k + r) % 2 == 0;
        roles[0].struct_size = sizeof *roles;
        partners[0].struct_size = sizeof *partners;
        size_t np = 0, found = 0;
        mi_skip_trigram_options to;
        mi_skip_trigram_options_init(&to, sizeof to);
        mi_role_options ro;
        mi_role_options_init(&ro, sizeof ro);
        if (shared) {
          to.ov_top1 = top1;
          to.ov_accuracy_count = nh;
          ro.ov_top1 = top1;
          ro.ov_top1_count = nh;
        }
        double load0 = load_average(), c0 = cpu_seconds(), t0 = bench_now();
        out[0].struct_size = sizeof *out;
        bench_check(mi_model_skip_trigrams(out, &found, TRIPLES, model, &to), "skip-trigrams");
        double c1 = cpu_seconds(), t1 = bench_now();
        bench_check(mi_model_head_roles(roles, nh, partners, nh * nh + 1, &np, model, &ro),
                    "head roles");
        double c2 = cpu_seconds(), t2 = bench_now();
        wall[shared][r] = t2 - t0;
        cpu[shared][r] = c2 - c0;
        printf("  round %d, %s: skip-trigrams %.1f s (CPU %.1f), head roles %.1f s (CPU "
               "%.1f): %.1f s, CPU %.1f s, %.2f cores (load %.2f before, %.2f after)\n", r,
               shared ? "shared  " : "separate", t1 - t0, c1 - c0, t2 - t1, c2 - c1, t2 - t0,
               c2 - c0, (c2 - c0) / (t2 - t0), load0, load_average());
      }
    printf("mi report's library work on %zu x %zu heads (median of %d): shared %.1f s "
           "(CPU %.1f), separate %.1f s (CPU %.1f); per head %.2f and %.2f s\n", layers,
           heads, rounds, bench_median(wall[1], rounds), bench_median(cpu[1], rounds),
           bench_median(wall[0], rounds), bench_median(cpu[0], rounds),
           bench_median(wall[1], rounds) / (double)nh,
           bench_median(wall[0], rounds) / (double)nh);
    free(top1);
    free(roles);
    free(partners);
    mi_model_free(model);
  }
  return 0;
}
