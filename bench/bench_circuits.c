/*
 * bench_circuits: libmi's streamed top-k and head report at GPT-2-small
 * size against BLIS's plain GEMM floor, in one process, side by side.
 *
 *   bench_circuits [--no-fast-kernels] [--threads N] [--repeat R] [--rows N]
 *
 * --rows N: top-k of the first N rows only (default all 50257), for quick runs.
 *
 * 0. The machine's FMA peak: a loop of independent FMA chains (AVX-512,
 *    else AVX2) on 1 and on all threads, and on 1 in that thread's CPU
 *    time, beside the 1-thread top-k's CPU time (robust to neighbours).
 * 1. Top-10 per row of the full token QK circuit (W_E W_Q W_Kᵀ W_Eᵀ) and
 *    of the token OV circuit (W_E W_V W_O W_U) of one random head:
 *    d_vocab 50257, d_model 768, d_head 64, float32: libmi's automatic
 *    way (the fused kernel where it runs), its plain BLIS-tile way, the
 *    automatic way on one thread, and torch's strongest way
 *    (bench/torch_topk.py, when /usr/bin/python3 has torch), all in the
 *    same rounds. The floor is BLIS's sgemm of the same factors (computed
 *    here with BLIS, in the layout libmi uses) in the same 256-row blocks
 *    into one reused, already touched block buffer: arithmetic, not page
 *    faults.
 * 2. mi_model_head_report (eigenvalues and copying scores of OV and QK)
 *    for all 144 heads of a 12 × 12 random model, against the floor of its
 *    two vocabulary-sized Grams (W_U W_E, W_Eᵀ W_E) as plain sgemm. The
 *    work after the Grams is timed as the report of the same heads with
 *    d_vocab = 1, where the Grams cost nothing, beside (same rounds) its
 *    per-head products alone as BLIS GEMMs and its 288 eigenvalue solves
 *    alone (LAPACK dgeev) on the same threads.
 *
 * BLIS is used directly only for the floors; libmi opts in to the fast
 * kernel set first (unless --no-fast-kernels), so both run the same one.
 * Linked against the static library, to force libmi's plain way
 * (mi__select_use) beside its automatic one.
 */
#define _POSIX_C_SOURCE 200809L

#include "bench_util.h"

#include "kernel.h"

#include <mi.h>

#include <blis.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

enum { V = 50257, D = 768, DH = 64, LAYERS = 12, HEADS = 12, K = 10, BLOCK = 256 };

static double peak_rss_mib(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)u.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
}

/* Linux: VmHWM (peak RSS) in MiB, and its reset (clear_refs 5), so the
 * peak of one phase can be measured after a higher one. */
static double vm_hwm_mib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  double kib = -1;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmHWM:", 6) == 0)
      kib = atof(line + 6);
  if (f)
    fclose(f);
  return kib / 1024.0;
}

static double vm_rss_mib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  double kib = -1;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0)
      kib = atof(line + 6);
  if (f)
    fclose(f);
  return kib / 1024.0;
}

static void reset_hwm(void) {
  FILE *f = fopen("/proc/self/clear_refs", "w");
  if (f) {
    fputs("5", f);
    fclose(f);
  }
}

static mi_model *random_model(size_t d_vocab) {
  mi_config c;
  mi_config_init(&c, sizeof c);
  c.n_layers = LAYERS;
  c.n_heads = HEADS;
  c.d_model = D;
  c.d_head = DH;
  c.d_vocab = d_vocab;
  return bench_random_model(&c, 1);
}

static rntm_t rntm_for(size_t threads) {
  rntm_t rntm;
  bli_rntm_init_from_global(&rntm);
  if (threads > 0)
    bli_rntm_set_num_threads((dim_t)threads, &rntm);
  return rntm;
}

/* C (rows × cols, ldc) ← A·B by BLIS, strides in elements. */
static void sgemm(size_t rows, size_t cols, size_t inner, const float *A, inc_t ars,
                  inc_t acs, const float *B, inc_t brs, inc_t bcs, float *C, size_t ldc,
                  rntm_t *rntm) {
  float one = 1.0f, zero = 0.0f;
  bli_sgemm_ex(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, (dim_t)rows, (dim_t)cols, (dim_t)inner,
               &one, (float *)A, ars, acs, (float *)B, brs, bcs, &zero, C, (inc_t)ldc, 1,
               NULL, rntm);
}

/* The floor: rows i0..i1 of A·B, 256 at a time, into one touched block. */
typedef struct floor_job {
  const float *A, *B;
  inc_t ars, acs, brs, bcs;
  size_t i0, i1;
  float *block;
  rntm_t rntm;
} floor_job;

static void *floor_rows(void *arg) {
  floor_job *j = arg;
  for (size_t i = j->i0; i < j->i1; i += BLOCK) {
    size_t rows = j->i1 - i < BLOCK ? j->i1 - i : BLOCK;
    sgemm(rows, V, DH, j->A + i * (size_t)j->ars, j->ars, j->acs, j->B, j->brs, j->bcs,
          j->block, V, &j->rntm);
  }
  return NULL;
}

/*
 * Floor (b1): all rows in 256-row blocks, BLIS's own threads in each GEMM.
 * Floor (b2): the rows cut into `threads` slices like libmi's top-k, one
 * thread each with single-threaded BLIS and its own touched block.
 */
static double gemm_floor(size_t rows, const float *A, inc_t ars, inc_t acs, const float *B,
                         inc_t brs, inc_t bcs, float *blocks, size_t threads, int sliced) {
  floor_job jobs[64];
  pthread_t ids[64];
  size_t n = sliced ? threads : 1;
  for (size_t t = 0; t < n; t++) {
    jobs[t] = (floor_job){A, B, ars, acs, brs, bcs, rows * t / n, rows * (t + 1) / n,
                          blocks + t * (size_t)BLOCK * V, rntm_for(sliced ? 1 : threads)};
  }
  double t0 = bench_now();
  for (size_t t = 1; t < n; t++)
    pthread_create(&ids[t], NULL, floor_rows, &jobs[t]);
  floor_rows(&jobs[0]);
  for (size_t t = 1; t < n; t++)
    pthread_join(ids[t], NULL);
  return bench_now() - t0;
}

/* One thread's rows of a GEMM, single-threaded BLIS. */
typedef struct slice_job {
  size_t rows, cols, inner;
  const float *A, *B;
  inc_t ars, acs, brs, bcs;
  float *C;
  size_t ldc;
} slice_job;

static void *slice_run(void *arg) {
  slice_job *j = arg;
  rntm_t one = rntm_for(1);
  sgemm(j->rows, j->cols, j->inner, j->A, j->ars, j->acs, j->B, j->brs, j->bcs, j->C,
        j->ldc, &one);
  return NULL;
}

/* C = A·B with the rows cut into `threads` slices (libmi's split); seconds. */
static double sliced_sgemm(size_t threads, size_t rows, size_t cols, size_t inner,
                           const float *A, inc_t ars, inc_t acs, const float *B, inc_t brs,
                           inc_t bcs, float *C, size_t ldc) {
  slice_job jobs[64];
  pthread_t ids[64];
  size_t n = threads < 1 ? 1 : threads > 64 ? 64 : threads;
  for (size_t t = 0; t < n; t++) {
    size_t a = rows * t / n, b = rows * (t + 1) / n;
    jobs[t] = (slice_job){b - a, cols, inner, A + a * (size_t)ars, B, ars, acs, brs, bcs,
                          C + a * ldc, ldc};
  }
  double t0 = bench_now();
  for (size_t t = 1; t < n; t++)
    pthread_create(&ids[t], NULL, slice_run, &jobs[t]);
  slice_run(&jobs[0]);
  for (size_t t = 1; t < n; t++)
    pthread_join(ids[t], NULL);
  return bench_now() - t0;
}

/* ---- FMA peak ---- */

enum { CHAINS = 24, PEAK_ITERS = 20000000 };

#if defined(__x86_64__) && defined(__GNUC__)
/* CHAINS independent FMA chains, 16 lanes: flops done. */
__attribute__((target("avx512f"))) static double fma_loop_512(void) {
  __m512 c[CHAINS], a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < CHAINS; i++)
    c[i] = _mm512_set1_ps((float)i);
  for (long n = 0; n < PEAK_ITERS; n++)
#pragma GCC unroll 24
    for (int i = 0; i < CHAINS; i++)
      c[i] = _mm512_fmadd_ps(c[i], a, b);
  float sink = 0;
  for (int i = 0; i < CHAINS; i++)
    sink += _mm512_reduce_add_ps(c[i]);
  return sink == 12345.0f ? 0 : 2.0 * 16 * CHAINS * (double)PEAK_ITERS;
}

__attribute__((target("avx2,fma"))) static double fma_loop_256(void) {
  __m256 c[12], a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < 12; i++)
    c[i] = _mm256_set1_ps((float)i);
  for (long n = 0; n < PEAK_ITERS; n++)
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++)
      c[i] = _mm256_fmadd_ps(c[i], a, b);
  float lanes[8], sink = 0;
  for (int i = 0; i < 12; i++) {
    _mm256_storeu_ps(lanes, c[i]);
    sink += lanes[0];
  }
  return sink == 12345.0f ? 0 : 2.0 * 8 * 12 * (double)PEAK_ITERS;
}
#endif

typedef struct peak_job {
  double flop;
} peak_job;

static void *peak_run(void *arg) {
  peak_job *j = arg;
  j->flop = 0;
#if defined(__x86_64__) && defined(__GNUC__)
  if (__builtin_cpu_supports("avx512f"))
    j->flop = fma_loop_512();
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    j->flop = fma_loop_256();
#endif
  return NULL;
}

/* GFLOP/s of the FMA loop on `threads` threads at once (0: no vector FMA). */
static double fma_peak(size_t threads) {
  peak_job jobs[64];
  pthread_t ids[64];
  size_t n = threads < 1 ? 1 : threads > 64 ? 64 : threads;
  double t0 = bench_now();
  for (size_t t = 1; t < n; t++)
    pthread_create(&ids[t], NULL, peak_run, &jobs[t]);
  peak_run(&jobs[0]);
  for (size_t t = 1; t < n; t++)
    pthread_join(ids[t], NULL);
  double seconds = bench_now() - t0, flop = 0;
  for (size_t t = 0; t < n; t++)
    flop += jobs[t].flop;
  return flop / seconds * 1e-9;
}

/* CPU seconds of the calling thread: time a neighbour's process takes
 * from it is not counted, so a 1-thread share of peak in CPU time holds
 * on a loaded machine where wall-clock shares swing. */
static double thread_cpu(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* GFLOP/s of the FMA loop on the calling thread, in its CPU time. */
static double fma_peak_cpu(void) {
  peak_job job;
  double t0 = thread_cpu();
  peak_run(&job);
  return job.flop / (thread_cpu() - t0) * 1e-9;
}

/* ---- the head report's per-head floor ---- */

/*
 * The per-head part of mi_model_head_report, rebuilt from BLIS and LAPACK
 * alone: per layer the two wide products (W_U W_E · stacked W_V, D × D ×
 * H·dh; Gram · stacked [W_Q; b_Q], D1 × D1 × H·dh) cut into row slices,
 * one a thread, then the layer's 2·H small products (W_O · X_OV, [W_K;
 * b_K]ᵀ · X_QK, dh × D(1) × dh) shared by the threads; and, timed apart,
 * the 288 eigenvalue problems (dgeev, dh × dh, double) of those products,
 * taken one at a time by the threads.
 */
enum { D1 = D + 1, HD = HEADS * DH };

typedef struct head_floor {
  float *gue, *gee;      /* W_U W_E (D × D); [W_E, 1]ᵀ[W_E, 1] (D1 × D1) */
  float *wide_v, *wide_q; /* per layer: D × HD stacked W_V; D1 × HD stacked [W_Q; 0] */
  float *wo, *left;      /* per head: W_O (dh × D); [W_K; 0]ᵀ (dh × D1) */
  float *x_ov, *x_qk;    /* one layer's wide products */
  float *ba;             /* every head's two dh × dh products */
  size_t threads;
  size_t layer;          /* the layer the small products belong to */
  atomic_size_t next;
} head_floor;

static void head_floor_prepare(head_floor *f, mi_model *model, const float *E, const float *U,
                               size_t threads) {
  f->threads = threads;
  f->gue = malloc((size_t)D * D * sizeof *f->gue);
  f->gee = calloc((size_t)D1 * D1, sizeof *f->gee);
  f->wide_v = malloc((size_t)LAYERS * D * HD * sizeof *f->wide_v);
  f->wide_q = calloc((size_t)LAYERS * D1 * HD, sizeof *f->wide_q);
  f->wo = malloc((size_t)LAYERS * HEADS * DH * D * sizeof *f->wo);
  f->left = calloc((size_t)LAYERS * HEADS * DH * D1, sizeof *f->left);
  f->x_ov = malloc((size_t)D * HD * sizeof *f->x_ov);
  f->x_qk = malloc((size_t)D1 * HD * sizeof *f->x_qk);
  f->ba = malloc((size_t)2 * LAYERS * HEADS * DH * DH * sizeof *f->ba);
  rntm_t rntm = rntm_for(threads);
  sgemm(D, D, V, U, V, 1, E, D, 1, f->gue, D, &rntm);
  sgemm(D, D, V, E, 1, D, E, D, 1, f->gee, D1, &rntm);
  for (size_t j = 0; j < D; j++) {
    double sum = 0;
    for (size_t t = 0; t < V; t++)
      sum += E[t * D + j];
    f->gee[j * D1 + D] = f->gee[D * D1 + j] = (float)sum;
  }
  f->gee[(size_t)D * D1 + D] = (float)V;
  float *w = malloc((size_t)D * DH * sizeof *w);
  for (size_t l = 0; l < LAYERS; l++)
    for (size_t h = 0; h < HEADS; h++) {
      bench_check(mi_model_get_weight(w, DH, model, MI_W_V, l, h), "W_V");
      for (size_t i = 0; i < D; i++)
        memcpy(f->wide_v + (l * D + i) * HD + h * DH, w + i * DH, DH * sizeof *w);
      bench_check(mi_model_get_weight(w, DH, model, MI_W_Q, l, h), "W_Q");
      for (size_t i = 0; i < D; i++)
        memcpy(f->wide_q + (l * D1 + i) * HD + h * DH, w + i * DH, DH * sizeof *w);
      bench_check(mi_model_get_weight(w, DH, model, MI_W_K, l, h), "W_K");
      float *left = f->left + (l * HEADS + h) * DH * D1;
      for (size_t i = 0; i < D; i++)
        for (size_t j = 0; j < DH; j++)
          left[j * D1 + i] = w[i * DH + j];
      bench_check(mi_model_get_weight(f->wo + (l * HEADS + h) * DH * D, D, model, MI_W_O, l, h),
                  "W_O");
    }
  free(w);
}

static void head_floor_free(head_floor *f) {
  free(f->gue); free(f->gee); free(f->wide_v); free(f->wide_q); free(f->wo);
  free(f->left); free(f->x_ov); free(f->x_qk); free(f->ba);
}

/* One thread's share of a layer's 2·H small products: units t, t + T, .... */
typedef struct small_job {
  head_floor *f;
  size_t t;
} small_job;

static void *small_products(void *arg) {
  small_job *j = arg;
  head_floor *f = j->f;
  rntm_t one = rntm_for(1);
  size_t l = f->layer;
  for (size_t u = j->t; u < 2 * HEADS; u += f->threads) {
    size_t h = u % HEADS, head = l * HEADS + h;
    float *out = f->ba + ((u < HEADS ? 0 : LAYERS * HEADS) + head) * DH * DH;
    if (u < HEADS)
      sgemm(DH, DH, D, f->wo + head * DH * D, D, 1, f->x_ov + h * DH, HD, 1, out, DH, &one);
    else
      sgemm(DH, DH, D1, f->left + head * DH * D1, D1, 1, f->x_qk + h * DH, HD, 1, out, DH,
            &one);
  }
  return NULL;
}

/* (b): every layer's products, libmi's way of cutting them; seconds. */
static double head_floor_products(head_floor *f) {
  double t0 = bench_now();
  for (size_t l = 0; l < LAYERS; l++) {
    sliced_sgemm(f->threads, D, HD, D, f->gue, D, 1, f->wide_v + l * D * HD, HD, 1, f->x_ov,
                 HD);
    sliced_sgemm(f->threads, D1, HD, D1, f->gee, D1, 1, f->wide_q + l * D1 * HD, HD, 1,
                 f->x_qk, HD);
    f->layer = l;
    small_job jobs[64];
    pthread_t ids[64];
    size_t n = f->threads < 1 ? 1 : f->threads > 64 ? 64 : f->threads;
    for (size_t t = 0; t < n; t++)
      jobs[t] = (small_job){f, t};
    for (size_t t = 1; t < n; t++)
      pthread_create(&ids[t], NULL, small_products, &jobs[t]);
    small_products(&jobs[0]);
    for (size_t t = 1; t < n; t++)
      pthread_join(ids[t], NULL);
  }
  return bench_now() - t0;
}

/* LAPACK's dgeev (lapacke.h and blis.h do not go together): the eigenvalues
 * of the column-major matrix, i.e. of the transpose, which has the same. */
void dgeev_(const char *jobvl, const char *jobvr, const int *n, double *a, const int *lda,
            double *wr, double *wi, double *vl, const int *ldvl, double *vr, const int *ldvr,
            double *work, const int *lwork, int *info, size_t jobvl_len, size_t jobvr_len);

static void *eigen_solves(void *arg) {
  head_floor *f = arg;
  enum { LWORK = 64 * DH };
  double m[DH * DH], re[DH], im[DH], work[LWORK], dummy[1];
  const int n = DH, one = 1, lwork = LWORK;
  for (;;) {
    size_t u = atomic_fetch_add(&f->next, 1);
    if (u >= 2 * LAYERS * HEADS)
      return NULL;
    for (size_t i = 0; i < DH * DH; i++)
      m[i] = f->ba[u * DH * DH + i];
    int info = 0;
    dgeev_("N", "N", &n, m, &n, re, im, dummy, &one, dummy, &one, work, &lwork, &info, 1, 1);
    if (info != 0)
      bench_check(MI_ERR_NUMERIC, "dgeev");
  }
}

/* (c): the 288 eigenvalue problems of (b)'s products, the threads taking
 * the next one as the report's do; seconds. */
static double head_floor_eigen(head_floor *f) {
  pthread_t ids[64];
  size_t n = f->threads < 1 ? 1 : f->threads > 64 ? 64 : f->threads;
  atomic_store(&f->next, 0);
  double t0 = bench_now();
  for (size_t t = 1; t < n; t++)
    pthread_create(&ids[t], NULL, eigen_solves, f);
  eigen_solves(f);
  for (size_t t = 1; t < n; t++)
    pthread_join(ids[t], NULL);
  return bench_now() - t0;
}




/* Seconds torch's way takes for the same shape (bench/torch_topk.py), or
 * NaN when /usr/bin/python3 has no torch. */
static double torch_topk(const char *script, size_t rows, size_t threads) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "/usr/bin/python3 %s --rows %zu --cols %d --rank %d --k %d --threads %zu 2>/dev/null",
           script, rows, V, DH, K, threads);
  FILE *p = popen(cmd, "r");
  double t = NAN;
  if (p == NULL || fscanf(p, "%lf", &t) != 1)
    t = NAN;
  if (p)
    pclose(p);
  return t;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0); /* progress shows when piped */
  int fast = 1, repeat = 2, topk_part = 1;
  size_t nrows = V;
  size_t threads = (size_t)sysconf(_SC_NPROCESSORS_ONLN);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--no-fast-kernels") == 0)
      fast = 0;
    else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      threads = (size_t)atoi(argv[++i]);
    else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
      repeat = atoi(argv[++i]);
    else if (strcmp(argv[i], "--no-topk") == 0)
      topk_part = 0;
    else if (strcmp(argv[i], "--rows") == 0 && i + 1 < argc)
      nrows = (size_t)atol(argv[++i]);
    else {
      fprintf(stderr, "usage: %s [--no-fast-kernels] [--threads N] [--repeat R] [--rows N] [--no-topk]\n", argv[0]);
      return 2;
    }
  }
  if (nrows == 0 || nrows > V)
    nrows = V;
  if (fast)
    bench_check(mi_blis_select_fast_kernels(), "mi_blis_select_fast_kernels");
  bench_check(mi_set_num_threads(threads), "mi_set_num_threads");
  const char *kernels;
  bench_check(mi_blis_kernel_set(&kernels), "mi_blis_kernel_set");
  printf("BLIS %s, kernel set %s (%s), %zu threads, best of %d runs\n",
         bli_info_get_version_str(), kernels, fast ? "fast kernels asked for" : "BLIS's choice",
         threads, repeat);

  double t0 = bench_now();
  mi_model *model = random_model(V);
  printf("model %d x %d heads, d_vocab %d, d_model %d, d_head %d: built in %.1f s\n",
         LAYERS, HEADS, V, D, DH, bench_now() - t0);
  rntm_t rntm = rntm_for(threads);

  float *E = malloc((size_t)V * D * sizeof *E), *U = malloc((size_t)D * V * sizeof *U);
  bench_check(mi_model_get_weight(E, D, model, MI_W_E, 0, 0), "W_E");
  bench_check(mi_model_get_weight(U, V, model, MI_W_U, 0, 0), "W_U");

  /* ---- 1. streamed top-k against the GEMM floor ---- */
  if (topk_part) {
  size_t *idx = malloc((size_t)V * K * sizeof *idx);
  float *val = malloc((size_t)V * K * sizeof *val);
  memset(idx, 0, (size_t)V * K * sizeof *idx);
  memset(val, 0, (size_t)V * K * sizeof *val);
  mi_circuit *qk, *ov;
  bench_check(mi_circuit_qk(&qk, model, 0, 0, MI_EMBED_TOKEN, MI_EMBED_TOKEN, 0), "qk");
  bench_check(mi_circuit_ov(&ov, model, 0, 0), "ov");
  printf("circuits made in %.1f s\n", bench_now() - t0);
  /* The same factors, made here with BLIS in libmi's layout:
   * QK: A = W_E W_Q, B = (W_E W_K)ᵀ; OV: A = W_E W_V, B = W_O W_U, with
   * both B stored transposed (V × d_head) as libmi stores them. */
  float *W = malloc(4 * D * DH * sizeof *W);
  bench_check(mi_model_get_weight(W, DH, model, MI_W_Q, 0, 0), "W_Q");
  bench_check(mi_model_get_weight(W + D * DH, DH, model, MI_W_K, 0, 0), "W_K");
  bench_check(mi_model_get_weight(W + 2 * D * DH, DH, model, MI_W_V, 0, 0), "W_V");
  bench_check(mi_model_get_weight(W + 3 * D * DH, D, model, MI_W_O, 0, 0), "W_O");
  float *fa[2], *fb[2];
  for (int c = 0; c < 2; c++) {
    fa[c] = malloc((size_t)V * DH * sizeof *fa[c]);
    fb[c] = malloc((size_t)V * DH * sizeof *fb[c]);
  }
  sgemm(V, DH, D, E, D, 1, W, DH, 1, fa[0], DH, &rntm);
  sgemm(V, DH, D, E, D, 1, W + D * DH, DH, 1, fb[0], DH, &rntm);
  sgemm(V, DH, D, E, D, 1, W + 2 * D * DH, DH, 1, fa[1], DH, &rntm);
  sgemm(V, DH, D, U, 1, V, W + 3 * D * DH, 1, D, fb[1], DH, &rntm);
  size_t nblocks = threads > 64 ? 64 : threads ? threads : 1;
  float *block = malloc(nblocks * BLOCK * V * sizeof *block);
  memset(block, 0, nblocks * BLOCK * V * sizeof *block); /* touched before timing */

  /* Interleaved, so that the machine's load changes hit all alike: per
   * round and circuit libmi's automatic way, its plain way, floor b2, the
   * automatic way on one thread, torch (one run a round: its time does not
   * depend on the values), and (first round only: it can take long when
   * the machine is busy) floor b1. */
  enum { MAX_ROUNDS = 64 };
  if (repeat > MAX_ROUNDS)
    repeat = MAX_ROUNDS;
  /* The peak is measured every round too and the best kept: a neighbour's
   * load lowers it as it lowers everything else. */
  double peak1 = fma_peak(1), peak = fma_peak(threads), peak1_cpu = fma_peak_cpu();
  double rss_before = vm_rss_mib(), extra = 0;
  double fused_t[2][MAX_ROUNDS], plain_t[2][MAX_ROUNDS], b2_t[2][MAX_ROUNDS];
  double one_t[2][MAX_ROUNDS], torch_t[MAX_ROUNDS], floor_t[2] = {INFINITY, INFINITY};
  double one_cpu[2] = {INFINITY, INFINITY};
  for (int r = 0; r < repeat; r++) {
    peak1 = fmax(peak1, fma_peak(1));
    peak1_cpu = fmax(peak1_cpu, fma_peak_cpu());
    peak = fmax(peak, fma_peak(threads));
    for (int c = 0; c < 2; c++) {
      reset_hwm();
      double start_rss = vm_rss_mib(), t = bench_now();
      bench_check(mi_circuit_topk(idx, val, K, c ? ov : qk, K, 0, 0, nrows), "topk");
      fused_t[c][r] = bench_now() - t;
      extra = fmax(extra, vm_hwm_mib() - start_rss);
      bench_check(mi__select_use(MI__SELECT_PLAIN), "plain way");
      t = bench_now();
      bench_check(mi_circuit_topk(idx, val, K, c ? ov : qk, K, 0, 0, nrows), "topk, plain");
      plain_t[c][r] = bench_now() - t;
      bench_check(mi__select_use(MI__SELECT_AUTO), "automatic way");
      b2_t[c][r] = gemm_floor(nrows, fa[c], DH, 1, fb[c], 1, DH, block, nblocks, 1);
      bench_check(mi_set_num_threads(1), "1 thread");
      t = bench_now();
      double cpu0 = thread_cpu(); /* one thread: the work runs on this one */
      bench_check(mi_circuit_topk(idx, val, K, c ? ov : qk, K, 0, 0, nrows), "topk, 1 thread");
      one_cpu[c] = fmin(one_cpu[c], thread_cpu() - cpu0);
      one_t[c][r] = bench_now() - t;
      bench_check(mi_set_num_threads(threads), "threads");
      double b1 = r == 0 ? gemm_floor(nrows, fa[c], DH, 1, fb[c], 1, DH, block, nblocks, 0)
                         : INFINITY;
      floor_t[c] = fmin(floor_t[c], b1);
      printf("  round %d %s: top-k %.3f s (plain %.3f, 1 thread %.3f), floor b2 %.3f s, b1 "
             "%.3f s: top-k/b2 %.3f, plain/b2 %.3f, 1 thread/top-k %.2f\n",
             r, c ? "OV" : "QK", fused_t[c][r], plain_t[c][r], one_t[c][r], b2_t[c][r], b1,
             fused_t[c][r] / b2_t[c][r], plain_t[c][r] / b2_t[c][r],
             one_t[c][r] / fused_t[c][r]);
    }
    torch_t[r] = torch_topk(MI_BENCH_DIR "/torch_topk.py", nrows, threads);
    printf("  round %d torch (matmul into one reused block, then topk): %.3f s = %.2f x "
           "libmi's QK top-k of this round\n",
           r, torch_t[r], torch_t[r] / fused_t[0][r]);
  }
  double flop = 2.0 * (double)nrows * V * DH;
  printf("FMA peak (independent FMA chains, best of the rounds): %.1f GFLOP/s on 1 thread, "
         "%.1f on %zu\n", peak1, peak, threads);
  printf("\ntop-%d per row of rows 0..%zu of the %d x %d circuit (rank %d), %d rounds; "
         "times are min / median, ratios the median of the rounds' ratios\n",
         K, nrows, V, V, DH, repeat);
  printf("floor b1: BLIS sgemm in 256-row blocks, %zu BLIS threads; b2: %zu row slices, "
         "one single-threaded BLIS each (libmi's split)\n", threads, nblocks);
  for (int c = 0; c < 2; c++) {
    double rf[MAX_ROUNDS], rp[MAX_ROUNDS], rs[MAX_ROUNDS], rt[MAX_ROUNDS];
    for (int r = 0; r < repeat; r++) {
      rf[r] = fused_t[c][r] / b2_t[c][r];
      rp[r] = plain_t[c][r] / b2_t[c][r];
      rs[r] = one_t[c][r] / fused_t[c][r];
      rt[r] = torch_t[r] / fused_t[c][r];
    }
    double best = bench_minimum(fused_t[c], repeat);
    printf("%s: top-k %.3f / %.3f s, plain way %.3f / %.3f s, floor b2 %.3f / %.3f s, "
           "b1 %.3f s\n",
           c ? "token OV" : "token QK", best, bench_median(fused_t[c], repeat),
           bench_minimum(plain_t[c], repeat), bench_median(plain_t[c], repeat), bench_minimum(b2_t[c], repeat),
           bench_median(b2_t[c], repeat), floor_t[c]);
    printf("  top-k / floor b2 %.3f (plain way / b2 %.3f); top-k %.1f GFLOP/s at best = "
           "%.1f %% of the %zu-thread FMA peak (floor b2 at best %.1f GFLOP/s)\n",
           bench_median(rf, repeat), bench_median(rp, repeat), flop / best * 1e-9,
           100.0 * flop / best * 1e-9 / peak, threads,
           flop / bench_minimum(b2_t[c], repeat) * 1e-9);
    printf("  %zu threads / 1 thread: %.2f x faster (1 thread %.3f / %.3f s, %.1f %% of the "
           "1-thread peak); torch / top-k %.2f\n",
           threads, bench_median(rs, repeat), bench_minimum(one_t[c], repeat), bench_median(one_t[c], repeat),
           100.0 * flop / bench_minimum(one_t[c], repeat) * 1e-9 / peak1, bench_median(rt, repeat));
    printf("  in the thread's CPU time: 1-thread top-k at best %.3f s = %.1f GFLOP/s = %.1f %% "
           "of the 1-thread FMA loop's %.1f GFLOP/s\n",
           one_cpu[c], flop / one_cpu[c] * 1e-9, 100.0 * flop / one_cpu[c] * 1e-9 / peak1_cpu,
           peak1_cpu);
  }
  printf("resident: %.0f MiB before the top-k runs (model, circuits, results, floor "
         "buffers); a top-k run's peak above its start: +%.1f MiB (results %.1f MiB); a dense "
         "circuit would be %.1f GiB; process peak %.0f MiB\n",
         rss_before, extra,
         (double)V * K * (sizeof *idx + sizeof *val) / 1048576.0,
         (double)V * V * 4 / 1073741824.0, peak_rss_mib());
  printf("first QK row's top-%d: token %zu (%.3f) ... token %zu (%.3f)\n", K, idx[0],
         (double)val[0], idx[K - 1], (double)val[K - 1]);
  mi_circuit_free(qk);
  mi_circuit_free(ov);
  for (int c = 0; c < 2; c++) {
    free(fa[c]);
    free(fb[c]);
  }
  free(block); free(W); free(idx); free(val);
  }

  /* ---- 2. the head report ---- */
  mi_report_options opt;
  mi_report_options_init(&opt, sizeof opt);
  opt.prev_token = 0; /* no W_pos here: eigenvalues and copying scores */
  opt.behaviour_sequences = 0; /* weights only: no forward passes */
  mi_head_report *lines = calloc(LAYERS * HEADS, sizeof *lines);
  mi_model *tiny = random_model(1);
  double report = INFINITY, per_head = INFINITY, grams = INFINITY, grams2 = INFINITY;
  double head_t[64], prod_t[64], eig_t[64], head_ratio[64];
  if (repeat > 64)
    repeat = 64;
  head_floor hf;
  head_floor_prepare(&hf, model, E, U, threads);
  float *g = malloc(D * D * sizeof *g);
  for (int r = 0; r < repeat; r++) {
    lines[0].struct_size = sizeof *lines;
    double t = bench_now();
    bench_check(mi_model_head_report(lines, LAYERS * HEADS, model, &opt), "report");
    report = fmin(report, bench_now() - t);
    lines[0].struct_size = sizeof *lines;
    t = bench_now();
    bench_check(mi_model_head_report(lines, LAYERS * HEADS, tiny, &opt), "report, d_vocab 1");
    head_t[r] = bench_now() - t;
    per_head = fmin(per_head, head_t[r]);
    prod_t[r] = head_floor_products(&hf);
    eig_t[r] = head_floor_eigen(&hf);
    head_ratio[r] = head_t[r] / (prod_t[r] + eig_t[r]);
    printf("  round %d: per-head part %.1f ms; its products alone %.1f ms, its 288 eigen "
           "solves alone %.1f ms: %.2f x their sum\n", r, head_t[r] * 1e3, prod_t[r] * 1e3,
           eig_t[r] * 1e3, head_ratio[r]);
    t = bench_now();
    sgemm(D, D, V, U, V, 1, E, D, 1, g, D, &rntm); /* W_U W_E */
    sgemm(D, D, V, E, 1, D, E, D, 1, g, D, &rntm); /* W_Eᵀ W_E */
    grams = fmin(grams, bench_now() - t);
    grams2 = fmin(grams2, sliced_sgemm(threads, D, D, V, U, V, 1, E, D, 1, g, D) +
                              sliced_sgemm(threads, D, D, V, E, 1, D, E, D, 1, g, D));
  }
  head_floor_free(&hf);
  lines[0].struct_size = sizeof *lines;
  bench_check(mi_model_head_report(lines, LAYERS * HEADS, model, &opt), "report");
  double gram_flop = 2 * 2.0 * D * (double)D * V;
  printf("\nhead report, %d x %d heads (OV and QK eigenvalues, copying scores)\n", LAYERS,
         HEADS);
  printf("  whole report                      %8.3f s\n", report);
  double floor_g = fmin(grams, grams2);
  printf("  Gram floor b1 (2 sgemm, %zu BLIS threads) %8.3f s  (%.1f GFLOP/s, %.2g flop)\n",
         threads, grams, gram_flop / grams * 1e-9, gram_flop);
  printf("  Gram floor b2 (2 sgemm, %zu row slices)   %8.3f s  (%.1f GFLOP/s)\n", threads,
         grams2, gram_flop / grams2 * 1e-9);
  printf("  report minus per-head part       %8.3f s  = %.3f x the better floor\n",
         report - per_head, (report - per_head) / floor_g);
  printf("  per-head part (report at d_vocab 1) %6.1f ms for %d heads\n", per_head * 1e3,
         LAYERS * HEADS);
  printf("  per-head part / (its products as GEMMs + its 288 eigen solves), same rounds: "
         "median %.2f (products %.1f / %.1f ms, solves %.1f / %.1f ms, min / median)\n",
         bench_median(head_ratio, repeat), bench_minimum(prod_t, repeat) * 1e3, bench_median(prod_t, repeat) * 1e3,
         bench_minimum(eig_t, repeat) * 1e3, bench_median(eig_t, repeat) * 1e3);
  printf("  of which the d_head x d_model x d_model products: %.2g flop, at least "
         "%.1f ms at the better Gram floor's rate\n",
         2.0 * 2 * DH * (double)D * D * LAYERS * HEADS,
         2.0 * 2 * DH * (double)D * D * LAYERS * HEADS / (gram_flop / floor_g) * 1e3);
  printf("  head (0,0): OV copying %.4f, QK copying %.4f\n", lines[0].ov.copying_score,
         lines[0].qk.copying_score);
  free(g); free(lines); free(E); free(U);
  mi_model_free(tiny);
  mi_model_free(model);
  return 0;
}
