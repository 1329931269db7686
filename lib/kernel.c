/*
 * kernel.c: the BLIS layer (the only file that includes blis.h): strided
 * GEMM, the tile streamer, thread count and the choice of kernel set.
 */
/* blis.h uses POSIX threads types, hidden by strict -std=c11; setenv. */
#define _POSIX_C_SOURCE 200809L

#include "kernel.h"

#include <blis.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Set once libmi has called BLIS (or LAPACK on it): BLIS has read its
 * environment and chosen its kernels; choosing again has no effect. */
static atomic_bool blis_started;

/* Threads per BLIS call; 0 keeps BLIS's own default (BLIS_NUM_THREADS,
 * OMP_NUM_THREADS, else 1). */
static atomic_size_t num_threads;

/* ---- kernel sets ------------------------------------------------------------ */

/* What an x86-64 kernel set needs of the CPU (and of the OS: the
 * builtins check that the registers' state is saved). */
typedef enum { NEEDS_SSSE3, NEEDS_AVX, NEEDS_FMA, NEEDS_AVX2, NEEDS_AVX512 } isa_level;

/* The kernel sets Debian's x86-64 BLIS 0.9 has, by arch_t number. */
static const struct {
  int id;
  const char *name;
  isa_level needs;
} kernel_sets[] = {
    {BLIS_ARCH_SKX, "skx", NEEDS_AVX512},
    {BLIS_ARCH_KNL, "knl", NEEDS_AVX512},
    {BLIS_ARCH_HASWELL, "haswell", NEEDS_AVX2},
    {BLIS_ARCH_SANDYBRIDGE, "sandybridge", NEEDS_AVX},
    {BLIS_ARCH_PENRYN, "penryn", NEEDS_SSSE3},
    {BLIS_ARCH_ZEN3, "zen3", NEEDS_AVX2},
    {BLIS_ARCH_ZEN2, "zen2", NEEDS_AVX2},
    {BLIS_ARCH_ZEN, "zen", NEEDS_AVX2},
    {BLIS_ARCH_EXCAVATOR, "excavator", NEEDS_FMA},
    {BLIS_ARCH_STEAMROLLER, "steamroller", NEEDS_FMA},
    {BLIS_ARCH_PILEDRIVER, "piledriver", NEEDS_FMA},
    {BLIS_ARCH_BULLDOZER, "bulldozer", NEEDS_AVX},
    {BLIS_ARCH_GENERIC, "generic", NEEDS_SSSE3},
};

#if defined(__x86_64__) && defined(__GNUC__)
static bool cpu_has(isa_level level) {
  __builtin_cpu_init();
  switch (level) {
  case NEEDS_SSSE3: return __builtin_cpu_supports("ssse3");
  case NEEDS_AVX: return __builtin_cpu_supports("avx");
  case NEEDS_FMA: return __builtin_cpu_supports("avx") && __builtin_cpu_supports("fma");
  case NEEDS_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  case NEEDS_AVX512:
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
  }
  return false;
}

/* The fastest kernel set this CPU runs, or -1 to leave BLIS's own choice. */
static int best_kernel_set(void) {
  if (cpu_has(NEEDS_AVX512))
    return BLIS_ARCH_SKX;
  if (!cpu_has(NEEDS_AVX2))
    return -1;
  if (__builtin_cpu_is("amd")) {
    if (__builtin_cpu_is("znver3"))
      return BLIS_ARCH_ZEN3;
    if (__builtin_cpu_is("znver2"))
      return BLIS_ARCH_ZEN2;
    if (__builtin_cpu_is("znver1"))
      return BLIS_ARCH_ZEN;
  }
  return BLIS_ARCH_HASWELL;
}
#else
static bool cpu_has(isa_level level) { (void)level; return false; }
static int best_kernel_set(void) { return -1; }
#endif

/*
 * Checks a BLIS_ARCH_TYPE value as BLIS 0.9 would read it (strtol, so any
 * text parses, "" and "skx" as 0). Refused: anything but a whole number,
 * numbers BLIS has no kernel set for (it aborts) and kernel sets this CPU
 * cannot run (they would fault on the first instruction they lack).
 */
static mi_status check_arch_value(const char *value) {
  char *end;
  errno = 0;
  long id = strtol(value, &end, 10);
  if (end == value || *end != '\0' || errno != 0)
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "BLIS_ARCH_TYPE='%s' is not a number; BLIS 0.9 wants its arch_t number "
                    "(0 = skx, 3 = haswell, 6 = zen3, 7 = zen2, 8 = zen, 25 = generic), "
                    "and would read this as %ld",
                    value, end == value ? 0L : id);
  if (id == -1)
    return MI_OK; /* BLIS's own choice */
  for (size_t i = 0; i < sizeof kernel_sets / sizeof kernel_sets[0]; i++)
    if (kernel_sets[i].id == id) {
      if (!cpu_has(kernel_sets[i].needs))
        return mi__fail(MI_ERR_INVALID_ARGUMENT,
                        "BLIS_ARCH_TYPE=%ld selects BLIS's '%s' kernels, which use "
                        "instructions this CPU lacks",
                        id, kernel_sets[i].name);
      return MI_OK;
    }
  return mi__fail(MI_ERR_INVALID_ARGUMENT,
                  "BLIS_ARCH_TYPE=%ld names no kernel set of this BLIS (x86-64: 0, 1, 3-12, "
                  "25; -1 = BLIS's own choice); BLIS would abort the process",
                  id);
}

mi_status mi__blis_begin(void) {
  if (!atomic_load(&blis_started)) {
    const char *value = getenv("BLIS_ARCH_TYPE");
    mi_status status = value != NULL ? check_arch_value(value) : MI_OK;
    if (status != MI_OK)
      return status;
    atomic_store(&blis_started, true);
  }
  /* BLIS aborts when its pools cannot grow: libmi grows them first. */
  return mi__blis_reserve(mi__thread_count());
}

mi_status mi_blis_select_fast_kernels(void) {
  if (atomic_load(&blis_started))
    return mi__fail(MI_ERR_STATE, "BLIS is already in use in this process and has chosen "
                                  "its kernels; select them before any other libmi call");
  const char *value = getenv("BLIS_ARCH_TYPE");
  if (value != NULL)
    return check_arch_value(value); /* the caller's explicit choice wins */
  int id = best_kernel_set();
  if (id < 0)
    return MI_OK;
  char text[16];
  snprintf(text, sizeof text, "%d", id);
  if (setenv("BLIS_ARCH_TYPE", text, 1) != 0)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "setenv(BLIS_ARCH_TYPE) failed");
  return MI_OK;
}

mi_status mi_blis_kernel_set(const char **out) {
  MI_CHECK_ARG(out);
  *out = NULL;
  mi_status status = mi__blis_begin();
  if (status != MI_OK)
    return status;
  /* bli_arch_query_id does not initialise BLIS itself; a context lookup
   * before initialisation aborts. */
  bli_init();
  *out = bli_arch_string(bli_arch_query_id());
  return MI_OK;
}

mi_status mi_set_num_threads(size_t n) {
  if (n > 4096)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "%zu threads is more than 4096", n);
  atomic_store(&num_threads, n);
  return MI_OK;
}

size_t mi_get_num_threads(void) { return atomic_load(&num_threads); }

/* ---- products ----------------------------------------------------------------- */

static void init_rntm(rntm_t *rntm) {
  bli_rntm_init_from_global(rntm);
  size_t n = atomic_load(&num_threads);
  if (n > 0)
    bli_rntm_set_num_threads((dim_t)n, rntm);
}

/* A single-threaded BLIS run-time (libmi's own threads run around it). */
static void serial_rntm(rntm_t *rntm) {
  bli_rntm_init_from_global(rntm);
  bli_rntm_set_num_threads(1, rntm);
}

/* One thread's part of a GEMM. */
typedef struct gemm_job {
  float alpha, beta;
  mi__matrix A, B, C;
  dim_t threads; /* BLIS threads inside */
} gemm_job;

static void *gemm_worker(void *arg) {
  gemm_job *j = arg;
  rntm_t rntm;
  bli_rntm_init_from_global(&rntm);
  bli_rntm_set_num_threads(j->threads, &rntm);
  /* BLIS 0.9's prototypes are not const-qualified: the casts let the same
   * code build against 0.9 and 1.x. */
  bli_sgemm_ex(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, (dim_t)j->C.rows, (dim_t)j->C.cols,
               (dim_t)j->A.cols, &j->alpha, j->A.data, (inc_t)j->A.rs, (inc_t)j->A.cs,
               j->B.data, (inc_t)j->B.rs, (inc_t)j->B.cs, &j->beta, j->C.data,
               (inc_t)j->C.rs, (inc_t)j->C.cs, NULL, &rntm);
  return NULL;
}

/* How deep the calling thread is inside mi__run_threads jobs: libmi calls
 * made from a job run on that one thread, so threads never multiply. */
static _Thread_local unsigned worker_depth;

size_t mi__thread_count(void) {
  if (worker_depth > 0)
    return 1;
  rntm_t rntm;
  init_rntm(&rntm);
  dim_t n = bli_rntm_num_threads(&rntm);
  return n > 1 ? (size_t)n : 1;
}

mi_status mi__sgemm(float alpha, mi__matrix A, mi__matrix B, float beta, mi__matrix C) {
  enum { MAX_THREADS = MI__MAX_THREADS, MIN_SLICE = 16 };
  if (A.cols != B.rows || C.rows != A.rows || C.cols != B.cols)
    return mi__fail(MI_ERR_SHAPE, "gemm: (%zu x %zu)(%zu x %zu) into %zu x %zu", A.rows,
                    A.cols, B.rows, B.cols, C.rows, C.cols);
  if (C.rows == 0 || C.cols == 0)
    return MI_OK;
  if (C.data == NULL || (A.cols > 0 && (A.data == NULL || B.data == NULL)))
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "gemm: NULL matrix data");
  mi_status status = mi__blis_begin();
  if (status != MI_OK)
    return status;
  size_t threads = mi__thread_count();
  /*
   * Large products are cut along C's longer side into one slice a thread,
   * each with single-threaded BLIS: BLIS's own threads meet at spin
   * barriers inside the GEMM, which collapse when the machine is shared
   * (a 2-thread sgemm measured 7 GFLOP/s on a busy 2-core machine).
   */
  bool by_rows = C.rows >= C.cols;
  size_t length = by_rows ? C.rows : C.cols;
  double work = (double)C.rows * (double)C.cols * (double)(A.cols ? A.cols : 1);
  if (threads > MAX_THREADS)
    threads = MAX_THREADS;
  if (threads > length / MIN_SLICE)
    threads = length / MIN_SLICE;
  if (threads <= 1 || work < 16777216.0) {
    /* Small products (per-head r × r work) on one thread; a large one
     * too narrow to cut keeps BLIS's own threads. */
    gemm_job job = {alpha, beta, A, B, C, work < 16777216.0 ? 1 : (dim_t)mi__thread_count()};
    gemm_worker(&job);
    return MI_OK;
  }
  gemm_job jobs[MAX_THREADS];
  for (size_t t = 0; t < threads; t++) {
    size_t a = length * t / threads, b = length * (t + 1) / threads;
    jobs[t] = by_rows ? (gemm_job){alpha, beta, mi__matrix_rows(A, a, b), B,
                                   mi__matrix_rows(C, a, b), 1}
                      : (gemm_job){alpha, beta, A, mi__matrix_cols(B, a, b),
                                   mi__matrix_cols(C, a, b), 1};
  }
  mi__run_threads(gemm_worker, jobs, sizeof jobs[0], threads);
  return MI_OK;
}

mi_status mi__dgemm_serial(double alpha, mi__dmatrix A, mi__dmatrix B, double beta,
                           mi__dmatrix C) {
  if (A.cols != B.rows || C.rows != A.rows || C.cols != B.cols)
    return mi__fail(MI_ERR_SHAPE, "dgemm: (%zu x %zu)(%zu x %zu) into %zu x %zu", A.rows,
                    A.cols, B.rows, B.cols, C.rows, C.cols);
  if (C.rows == 0 || C.cols == 0)
    return MI_OK;
  if (C.data == NULL || (A.cols > 0 && (A.data == NULL || B.data == NULL)))
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "dgemm: NULL matrix data");
  mi_status status = mi__blis_begin();
  if (status != MI_OK)
    return status;
  rntm_t rntm;
  serial_rntm(&rntm);
  bli_dgemm_ex(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, (dim_t)C.rows, (dim_t)C.cols,
               (dim_t)A.cols, &alpha, A.data, (inc_t)A.rs, (inc_t)A.cs, B.data, (inc_t)B.rs,
               (inc_t)B.cs, &beta, C.data, (inc_t)C.rs, (inc_t)C.cs, NULL, &rntm);
  return MI_OK;
}

/* One job of mi__run_threads, run as a worker (see worker_depth). */
typedef struct run_job {
  void *(*worker)(void *);
  void *job;
} run_job;

static void *run_job_as_worker(void *arg) {
  run_job *r = arg;
  worker_depth++;
  r->worker(r->job);
  worker_depth--;
  return NULL;
}

void mi__run_threads(void *(*worker)(void *), void *jobs, size_t size, size_t count) {
  unsigned char *job = jobs;
  pthread_t ids[MI__MAX_THREADS];
  run_job runs[MI__MAX_THREADS];
  bool started[MI__MAX_THREADS] = {false};
  for (size_t t = 0; t < count && t < MI__MAX_THREADS; t++)
    runs[t] = (run_job){worker, job + t * size};
  for (size_t t = 1; t < count && t < MI__MAX_THREADS; t++)
    started[t] = pthread_create(&ids[t], NULL, run_job_as_worker, &runs[t]) == 0;
  if (count > 0)
    run_job_as_worker(&runs[0]);
  for (size_t t = 1; t < count; t++) {
    if (t < MI__MAX_THREADS && started[t])
      pthread_join(ids[t], NULL);
    else if (t < MI__MAX_THREADS)
      run_job_as_worker(&runs[t]);
    else
      run_job_as_worker(&(run_job){worker, job + t * size});
  }
}

/* What the threads of a parallel loop share. */
typedef struct loop_shared {
  mi_status (*fn)(size_t i, void *user);
  void *user;
  size_t count;
  atomic_size_t next;
  atomic_bool stop;
  pthread_mutex_t lock; /* guards the first failure below */
  mi_status status;
  size_t failed_at;
  char message[512];
} loop_shared;

static void *loop_worker(void *arg) {
  loop_shared *sh = *(loop_shared **)arg;
  for (;;) {
    size_t i = atomic_fetch_add(&sh->next, 1);
    if (i >= sh->count || atomic_load(&sh->stop))
      return NULL;
    mi_status status = sh->fn(i, sh->user);
    if (status != MI_OK) {
      atomic_store(&sh->stop, true);
      /* The message is thread-local: keep the lowest index's for the caller. */
      pthread_mutex_lock(&sh->lock);
      if (sh->status == MI_OK || i < sh->failed_at) {
        sh->status = status;
        sh->failed_at = i;
        snprintf(sh->message, sizeof sh->message, "%s", mi_last_error());
      }
      pthread_mutex_unlock(&sh->lock);
      return NULL;
    }
  }
}

mi_status mi__parallel_for(size_t count, mi_status (*fn)(size_t i, void *user), void *user) {
  if (count == 0)
    return MI_OK;
  mi_status status = mi__blis_begin();
  if (status != MI_OK)
    return status;
  return mi__parallel_for_threads(count, mi__thread_count(), fn, user);
}

size_t mi__own_thread_count(void) {
  size_t n = atomic_load(&num_threads);
  return worker_depth > 0 || n == 0 ? 1 : n;
}

mi_status mi__parallel_for_threads(size_t count, size_t threads,
                                   mi_status (*fn)(size_t i, void *user), void *user) {
  if (count == 0)
    return MI_OK;
  if (threads > count)
    threads = count;
  if (threads > MI__MAX_THREADS)
    threads = MI__MAX_THREADS;
  loop_shared sh = {.fn = fn, .user = user, .count = count, .status = MI_OK};
  atomic_init(&sh.next, 0);
  atomic_init(&sh.stop, false);
  pthread_mutex_init(&sh.lock, NULL);
  loop_shared *jobs[MI__MAX_THREADS];
  for (size_t t = 0; t < threads; t++)
    jobs[t] = &sh;
  mi__run_threads(loop_worker, jobs, sizeof jobs[0], threads);
  pthread_mutex_destroy(&sh.lock);
  if (sh.status != MI_OK)
    return mi__fail(sh.status, "%s", sh.message);
  return MI_OK;
}

/* What the threads of one stream share. */
typedef struct stream_shared {
  mi__matrix A, B;
  size_t i0, i1;
  mi__tile_fn fn;
  void *user;
  atomic_size_t next_tile;
  atomic_bool stop; /* a consumer failed: the others finish their tile and stop */
} stream_shared;

/* One thread of a stream: its scratch tile and its status. */
typedef struct stream_job {
  stream_shared *sh;
  float *scratch;
  mi_status status;
} stream_job;

static mi_status stream_rows(stream_job *job) {
  stream_shared *sh = job->sh;
  rntm_t rntm;
  serial_rntm(&rntm);
  float one = 1.0f, zero = 0.0f;
  const mi__matrix *A = &sh->A, *B = &sh->B;
  size_t tiles = (sh->i1 - sh->i0 + MI__TILE_ROWS - 1) / MI__TILE_ROWS;
  for (;;) {
    size_t t = atomic_fetch_add(&sh->next_tile, 1);
    if (t >= tiles || atomic_load(&sh->stop))
      return MI_OK;
    size_t r = sh->i0 + t * MI__TILE_ROWS;
    size_t rows = sh->i1 - r < MI__TILE_ROWS ? sh->i1 - r : MI__TILE_ROWS;
    for (size_t c = 0; c < B->cols; c += MI__TILE_COLS) {
      size_t cols = B->cols - c < MI__TILE_COLS ? B->cols - c : MI__TILE_COLS;
      bli_sgemm_ex(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, (dim_t)rows, (dim_t)cols,
                   (dim_t)A->cols, &one, A->data + (ptrdiff_t)r * A->rs, (inc_t)A->rs,
                   (inc_t)A->cs, B->data + (ptrdiff_t)c * B->cs, (inc_t)B->rs,
                   (inc_t)B->cs, &zero, job->scratch, (inc_t)cols, 1, NULL, &rntm);
      mi_status status = sh->fn(job->scratch, cols, r, rows, c, cols, sh->user);
      if (status != MI_OK) {
        atomic_store(&sh->stop, true);
        return status;
      }
    }
  }
}

static void *stream_worker(void *arg) {
  stream_job *job = arg;
  job->status = stream_rows(job);
  return NULL;
}

mi_status mi__stream(mi__matrix A, mi__matrix B, size_t i0, size_t i1, mi__tile_fn fn,
                     void *user) {
  enum { MAX_THREADS = MI__MAX_THREADS };
  if (A.cols != B.rows || i0 > i1 || i1 > A.rows)
    return mi__fail(MI_ERR_SHAPE, "stream: rows %zu..%zu of (%zu x %zu)(%zu x %zu)", i0,
                    i1, A.rows, A.cols, B.rows, B.cols);
  if (i0 == i1 || B.cols == 0)
    return MI_OK;
  if (A.data == NULL || B.data == NULL)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "stream: NULL matrix data");
  mi_status status = mi__blis_begin();
  if (status != MI_OK)
    return status;
  size_t threads = mi__thread_count();
  size_t tiles = (i1 - i0 + MI__TILE_ROWS - 1) / MI__TILE_ROWS;
  if (threads > tiles)
    threads = tiles;
  if (threads > MAX_THREADS)
    threads = MAX_THREADS;
  size_t tile_rows = i1 - i0 < MI__TILE_ROWS ? i1 - i0 : MI__TILE_ROWS;
  size_t tile_cols = B.cols < MI__TILE_COLS ? B.cols : MI__TILE_COLS;
  float *scratch = malloc(threads * tile_rows * tile_cols * sizeof *scratch);
  if (scratch == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "stream: %zu scratch tiles of %zu x %zu", threads,
                    tile_rows, tile_cols);
  stream_shared shared = {A, B, i0, i1, fn, user, 0, false};
  stream_job jobs[MAX_THREADS];
  for (size_t t = 0; t < threads; t++)
    jobs[t] = (stream_job){&shared, scratch + t * tile_rows * tile_cols, MI_OK};
  mi__run_threads(stream_worker, jobs, sizeof jobs[0], threads);
  free(scratch);
  for (size_t t = 0; t < threads; t++)
    if (jobs[t].status != MI_OK)
      return mi__fail(jobs[t].status, "stream: a tile consumer failed (%s)",
                      mi_status_str(jobs[t].status));
  return MI_OK;
}

bool mi__blis_fma_chain(size_t *kc_max) {
  bli_init();
  cntx_t *cntx = bli_gks_query_cntx();
  *kc_max = (size_t)bli_cntx_get_blksz_max_dt(BLIS_FLOAT, BLIS_KC, cntx);
  switch (bli_arch_query_id()) {
  case BLIS_ARCH_SKX:
  case BLIS_ARCH_HASWELL:
  case BLIS_ARCH_ZEN:
  case BLIS_ARCH_ZEN2:
  case BLIS_ARCH_ZEN3: return true;
  default: return false;
  }
}

mi_status mi__dgemm_inner(double *C, size_t ldc, mi__matrix X, mi__matrix Y) {
  enum { CHUNK = 512 };
  size_t p = X.rows, q = Y.cols, K = X.cols;
  if (Y.rows != K || ldc < q)
    return mi__fail(MI_ERR_SHAPE, "inner product (%zu x %zu)(%zu x %zu), ldc %zu", p, K,
                    Y.rows, q, ldc);
  for (size_t i = 0; i < p; i++)
    for (size_t j = 0; j < q; j++)
      C[i * ldc + j] = 0.0;
  if (p == 0 || q == 0 || K == 0)
    return MI_OK;
  mi_status status = mi__blis_begin();
  if (status != MI_OK)
    return status;
  double *x = malloc(p * CHUNK * sizeof *x), *y = malloc(CHUNK * q * sizeof *y);
  if (x == NULL || y == NULL) {
    free(x);
    free(y);
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "inner product: %zu + %zu doubles", p * CHUNK,
                    q * CHUNK);
  }
  /* Small products (p, q ≤ d_model, chunks of 512): one thread. */
  rntm_t rntm;
  serial_rntm(&rntm);
  double one = 1.0;
  for (size_t k0 = 0; k0 < K; k0 += CHUNK) {
    size_t w = K - k0 < CHUNK ? K - k0 : CHUNK;
    for (size_t i = 0; i < p; i++)
      for (size_t k = 0; k < w; k++)
        x[i * w + k] = X.data[(ptrdiff_t)i * X.rs + (ptrdiff_t)(k0 + k) * X.cs];
    for (size_t k = 0; k < w; k++)
      for (size_t j = 0; j < q; j++)
        y[k * q + j] = Y.data[(ptrdiff_t)(k0 + k) * Y.rs + (ptrdiff_t)j * Y.cs];
    bli_dgemm_ex(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, (dim_t)p, (dim_t)q, (dim_t)w, &one,
                 x, (inc_t)w, 1, y, (inc_t)q, 1, &one, C, (inc_t)ldc, 1, NULL, &rntm);
  }
  free(x);
  free(y);
  return MI_OK;
}

mi_status mi__column_moments(double *mean, double *cov, mi__matrix X) {
  enum { CHUNK = 512 };
  size_t r = X.rows, m = X.cols;
  for (size_t t = 0; t < r * r; t++)
    cov[t] = 0.0;
  for (size_t t = 0; t < r; t++)
    mean[t] = 0.0;
  if (r == 0 || m == 0)
    return MI_OK;
  mi_status status = mi__blis_begin();
  if (status != MI_OK)
    return status;
  double *x = malloc(r * CHUNK * sizeof *x);
  if (x == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "column moments: %zu x %d doubles", r, CHUNK);
  for (size_t t = 0; t < r; t++) {
    double sum = 0.0;
    for (size_t j = 0; j < m; j++)
      sum += X.data[(ptrdiff_t)t * X.rs + (ptrdiff_t)j * X.cs];
    mean[t] = sum / (double)m;
  }
  rntm_t rntm;
  serial_rntm(&rntm);
  double one = 1.0;
  for (size_t j0 = 0; j0 < m; j0 += CHUNK) {
    size_t w = m - j0 < CHUNK ? m - j0 : CHUNK;
    for (size_t t = 0; t < r; t++)
      for (size_t j = 0; j < w; j++)
        x[t * w + j] = X.data[(ptrdiff_t)t * X.rs + (ptrdiff_t)(j0 + j) * X.cs] - mean[t];
    /* cov += x·xᵀ: the same chunk read as its own transpose. */
    bli_dgemm_ex(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, (dim_t)r, (dim_t)r, (dim_t)w, &one, x,
                 (inc_t)w, 1, x, 1, (inc_t)w, &one, cov, (inc_t)r, 1, NULL, &rntm);
  }
  free(x);
  for (size_t t = 0; t < r * r; t++)
    cov[t] /= (double)m;
  return MI_OK;
}

/* Rows a job of mi__row_forms (a multiple of its BLIS chunk). */
enum { FORMS_CHUNK = 256, FORMS_JOB = 8 * FORMS_CHUNK };

typedef struct row_forms_job {
  double *dot, *quad;
  mi__matrix A;
  const double *v, *S;
} row_forms_job;

/* Rows c·FORMS_JOB .. of mi__row_forms, FORMS_CHUNK at a time: each row's
 * forms depend on that row alone, so any split gives the same bits. */
static mi_status row_forms_part(size_t c, void *user) {
  const row_forms_job *j = user;
  size_t p = j->A.rows, r = j->A.cols, first = c * FORMS_JOB;
  size_t last = p - first < FORMS_JOB ? p : first + FORMS_JOB;
  double *a = malloc(2 * FORMS_CHUNK * r * sizeof *a);
  if (a == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "row forms: %d x %zu doubles", 2 * FORMS_CHUNK, r);
  double *y = a + FORMS_CHUNK * r, one = 1.0, zero = 0.0;
  rntm_t rntm;
  serial_rntm(&rntm);
  for (size_t i0 = first; i0 < last; i0 += FORMS_CHUNK) {
    size_t h = last - i0 < FORMS_CHUNK ? last - i0 : FORMS_CHUNK;
    for (size_t i = 0; i < h; i++)
      for (size_t t = 0; t < r; t++)
        a[i * r + t] = j->A.data[(ptrdiff_t)(i0 + i) * j->A.rs + (ptrdiff_t)t * j->A.cs];
    bli_dgemm_ex(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, (dim_t)h, (dim_t)r, (dim_t)r, &one, a,
                 (inc_t)r, 1, (double *)j->S, (inc_t)r, 1, &zero, y, (inc_t)r, 1, NULL, &rntm);
    for (size_t i = 0; i < h; i++) {
      double d = 0.0, q = 0.0;
      for (size_t t = 0; t < r; t++) {
        d += a[i * r + t] * j->v[t];
        q += a[i * r + t] * y[i * r + t];
      }
      j->dot[i0 + i] = d;
      j->quad[i0 + i] = q;
    }
  }
  free(a);
  return MI_OK;
}

mi_status mi__row_forms(double *dot, double *quad, mi__matrix A, const double *v,
                        const double *S) {
  size_t p = A.rows, r = A.cols;
  if (p == 0)
    return MI_OK;
  if (r == 0) {
    for (size_t i = 0; i < p; i++)
      dot[i] = quad[i] = 0.0;
    return MI_OK;
  }
  mi_status status = mi__blis_begin();
  if (status != MI_OK)
    return status;
  row_forms_job job = {dot, quad, A, v, S};
  return mi__parallel_for((p + FORMS_JOB - 1) / FORMS_JOB, row_forms_part, &job);
}
