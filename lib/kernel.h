/*
 * kernel.h: the BLIS layer. Every large product in libmi goes through here;
 * kernel.c is the only file that includes blis.h.
 */
#ifndef MI_KERNEL_H
#define MI_KERNEL_H

#include "internal.h"

#include <stddef.h>

/*
 * A float32 matrix view: element (i, j) at data[i * rs + j * cs]. Strides are
 * in elements, row stride first, as BLIS takes them; a transpose is the same
 * data with rs and cs swapped.
 */
typedef struct mi__matrix {
  float *data;
  size_t rows, cols;
  ptrdiff_t rs, cs;
} mi__matrix;

/* Row-major view of a contiguous rows × cols array. */
static inline mi__matrix mi__matrix_rowmajor(float *data, size_t rows, size_t cols) {
  return (mi__matrix){data, rows, cols, (ptrdiff_t)cols, 1};
}

/* The transposed view (no copy). */
static inline mi__matrix mi__matrix_t(mi__matrix m) {
  return (mi__matrix){m.data, m.cols, m.rows, m.cs, m.rs};
}

/* Rows i0..i1 of a view (no copy). */
static inline mi__matrix mi__matrix_rows(mi__matrix m, size_t i0, size_t i1) {
  return (mi__matrix){m.data + (ptrdiff_t)i0 * m.rs, i1 - i0, m.cols, m.rs, m.cs};
}

/* Columns j0..j1 of a view (no copy). */
static inline mi__matrix mi__matrix_cols(mi__matrix m, size_t j0, size_t j1) {
  return (mi__matrix){m.data + (ptrdiff_t)j0 * m.cs, m.rows, j1 - j0, m.rs, m.cs};
}

/*
 * C ← alpha·A·B + beta·C in float32 with BLIS, for any strides. Checks every
 * dimension before BLIS sees it (BLIS aborts on bad ones): A.cols = B.rows,
 * C is A.rows × B.cols, no NULL data with non-zero size.
 */
mi_status mi__sgemm(float alpha, mi__matrix A, mi__matrix B, float beta, mi__matrix C);

/* A double-precision view, strided as mi__matrix. */
typedef struct mi__dmatrix {
  double *data;
  size_t rows, cols;
  ptrdiff_t rs, cs;
} mi__dmatrix;

/*
 * C ← alpha·A·B + beta·C in double with single-threaded BLIS, on the calling
 * thread (callers thread around it), shapes and NULLs checked as mi__sgemm.
 */
mi_status mi__dgemm_serial(double alpha, mi__dmatrix A, mi__dmatrix B, double beta,
                           mi__dmatrix C);

/*
 * Must succeed before any BLIS or LAPACK call (LAPACK runs on BLIS's libblas):
 * checks BLIS_ARCH_TYPE, which BLIS reads at its first use and aborts on when
 * it names a kernel set BLIS lacks, and records that BLIS is now in use.
 */
mi_status mi__blis_begin(void);

/*
 * Makes sure BLIS's packing pools hold a block for each of `threads` GEMM
 * threads at once, allocating what is missing (blis_memory.c), so that
 * BLIS never needs to allocate, and abort, inside a GEMM. More threads
 * than that (several callers' queries at once) may still make BLIS grow
 * its pools itself. MI_ERR_OUT_OF_MEMORY when a block cannot be had.
 */
mi_status mi__blis_reserve(size_t threads);

/*
 * Runs worker(jobs + t·size) for each of `count` jobs: jobs 1.. on threads of
 * their own, job 0 on the calling thread, and returns when all are done. A
 * job whose thread cannot start (or beyond MI__MAX_THREADS) runs on the
 * calling thread after job 0, so every job runs whatever the system allows.
 * Inside a job mi__thread_count is 1: libmi calls it makes stay on its thread.
 */
enum { MI__MAX_THREADS = 256 };
void mi__run_threads(void *(*worker)(void *), void *jobs, size_t size, size_t count);

/*
 * fn(i, user) for every i < count, each i taken whole by the next free
 * thread (mi__thread_count of them), so uneven items balance. libmi calls
 * inside fn run on its one thread (as in every mi__run_threads job). After
 * a failure the others stop taking items; the failure of the lowest index
 * seen is returned with its message.
 */
mi_status mi__parallel_for(size_t count, mi_status (*fn)(size_t i, void *user), void *user);

/*
 * mi__parallel_for on `threads` threads without starting BLIS, for work
 * that makes no BLIS call (reading a file): a process may still choose its
 * kernels after it (mi_blis_select_fast_kernels). `threads` from
 * mi__own_thread_count.
 */
mi_status mi__parallel_for_threads(size_t count, size_t threads,
                                   mi_status (*fn)(size_t i, void *user), void *user);

/* mi_set_num_threads's count without asking BLIS: 1 when it is 0 (BLIS's
 * own setting, which only BLIS can read) or inside a job. */
size_t mi__own_thread_count(void);

/*
 * Receives one tile of a streamed product: rows row0.. and columns col0.. of
 * A·B, `rows` × `cols` at tile[i * ld + j]. A non-OK status stops the stream
 * and is returned.
 */
typedef mi_status (*mi__tile_fn)(const float *tile, size_t ld, size_t row0, size_t rows,
                                 size_t col0, size_t cols, void *user);

/* Tile shape of mi__stream: 4 MiB, small enough to stay in the last-level
 * cache; 4080 columns, a multiple of the micro-kernels' 16 and BLIS's NC
 * on haswell and zen. */
enum { MI__TILE_ROWS = 256, MI__TILE_COLS = 4080 };

/*
 * Computes rows i0..i1 of A·B tile by tile (at most MI__TILE_ROWS ×
 * MI__TILE_COLS) and hands each tile to `fn` while it is still in cache.
 * With T threads (mi_set_num_threads, else BLIS's default), each with
 * single-threaded BLIS and its own scratch tile, allocated once, takes the
 * next row tile from a shared counter until none is left: no barriers
 * inside the GEMMs (spin barriers collapse on a shared, loaded machine),
 * the scan runs in parallel too, and a thread slowed by a neighbour takes
 * fewer tiles. `fn` is called concurrently for disjoint rows; a row tile's
 * columns come in order. Extra memory: T tiles (4 MiB each).
 */
mi_status mi__stream(mi__matrix A, mi__matrix B, size_t i0, size_t i1, mi__tile_fn fn,
                     void *user);

/*
 * Whether BLIS's kernel set computes each sgemm entry as one FMA chain from
 * +0 over each KC block of the inner dimension, the blocks added in order
 * (skx, haswell, zen, zen2, zen3; not generic, which rounds products and
 * sums apart), and into *kc_max the largest inner dimension BLIS takes as
 * one block under its kernel set (any set). BLIS must have begun.
 */
bool mi__blis_fma_chain(size_t *kc_max);

/* ---- selection scans (kernel_select.c) -------------------------------------- */

typedef enum {
  MI__SELECT_LARGEST,  /* top-k of each row */
  MI__SELECT_SMALLEST, /* bottom-k of each row */
  MI__SELECT_RANK      /* entries above a per-row threshold, the diagonal excluded */
} mi__select_kind;

/*
 * A scan of rows i0.. of a product. Top-k: line i (row i0 + i) at i·ld of
 * index/value, k entries, best first, ties to the lower column. Rank:
 * count[i] ← how many entries of row i0 + i other than its diagonal
 * (column i0 + i) are > threshold[i] (NaN counts none).
 */
typedef struct mi__select {
  mi__select_kind kind;
  size_t k;
  size_t *index;
  float *value;
  size_t ld;
  const float *threshold;
  size_t *count;
  size_t i0;
} mi__select;

/*
 * Runs scan `s` over rows i0..i1 of A·B without storing the product: the
 * fused AVX-512 or AVX2 kernel when the CPU has it, BLIS runs an FMA
 * kernel set and A.cols fits one of its KC blocks, else BLIS tiles through
 * mi__stream; both give the same indices, values and counts. Threads as
 * mi__stream; extra memory: B packed once (≤ 48 MiB, else the BLIS way;
 * on 2 MiB pages where Linux gives them, so rounded up to 2 MiB).
 * A product whose bound max_i ‖A_i‖₁ · max|B| does not keep it below
 * float32's overflow goes the BLIS way with every tile screened, and an
 * infinity or NaN in one is MI_ERR_NUMERIC, without a message: the caller
 * names its query.
 */
mi_status mi__select_rows(mi__matrix A, mi__matrix B, size_t i0, size_t i1,
                          const mi__select *s);

/* Which way mi__select_rows goes: AUTO chooses as it says; the others force
 * a way (where r and B allow the fused kernels), for tests and benchmarks. */
typedef enum { MI__SELECT_AUTO, MI__SELECT_PLAIN, MI__SELECT_AVX2, MI__SELECT_AVX512 } mi__select_impl;

/* Sets the way for the whole process; MI_ERR_UNSUPPORTED when the CPU lacks
 * the kernel's instructions. */
mi_status mi__select_use(mi__select_impl impl);

/* Threads a parallel loop should use (mi_set_num_threads, else BLIS's
 * default); 1 inside a job of mi__run_threads. */
size_t mi__thread_count(void);

/*
 * C (p × q, row-major, ldc) ← X·Y in double, where X (p × K) and Y (K × q)
 * are float32 views and K may be large (a vocabulary): the inner dimension
 * is converted to double in chunks, so the extra memory is O((p + q)·chunk).
 * For the r × r products of circuits (Grams, B·A) where float32
 * accumulation over 50257 terms would cost digits.
 */
mi_status mi__dgemm_inner(double *C, size_t ldc, mi__matrix X, mi__matrix Y);

/*
 * For rows i0..i1 of a square circuit, the largest float not above its
 * diagonal entry (computed in double from the factors), into out[i - i0]:
 * an entry x ranks above the diagonal exactly when x > out[i - i0]
 * (copying.c). MI_ERR_NUMERIC when a diagonal entry overflows float32.
 */
struct mi_circuit;
mi_status mi__diag_thresholds(float *out, const struct mi_circuit *circuit, size_t i0, size_t i1);

/*
 * The m columns x_j of X (r × m float32 view) as vectors, in double:
 * mean (r) ← (1/m)·Σ x_j, and cov (r × r, row-major) ← (1/m)·Σ (x_j −
 * mean)(x_j − mean)ᵀ with each column centred before the product, so
 * nothing cancels as in E[x xᵀ] − mean meanᵀ. Extra memory: r·512 doubles.
 */
mi_status mi__column_moments(double *mean, double *cov, mi__matrix X);

/*
 * For each row a_i of A (p × r float32 view), in double: dot[i] ← a_i·v and
 * quad[i] ← a_iᵀ S a_i (S r × r, row-major), rows split between the
 * threads (the same bits whatever the split). Extra memory: 2·256·r doubles a
 * thread.
 */
mi_status mi__row_forms(double *dot, double *quad, mi__matrix A, const double *v,
                        const double *S);

#endif
