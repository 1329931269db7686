/*
 * kernel_select.c: selection scans over a product A·B that is never
 * stored: the top-k of each row, and how many entries of each row are
 * above a per-row threshold (diagonal ranks).
 *
 * Two ways, same answers bit for bit. The plain way streams BLIS tiles
 * (mi__stream) into scalar code. The fused kernels (AVX-512, AVX2) compute
 * 6-row register tiles from panels packed here and compare them with each
 * row's running threshold while they are still in registers, so the tile
 * is never stored; only a row with a candidate goes through the scalar
 * heap, and only its masked columns. They accumulate each entry as BLIS's
 * FMA kernel sets do (one FMA chain from +0 over the inner dimension, when
 * it fits one KC block), and are used only under those kernel sets.
 * Each row tile runs every B panel against all its micro-tiles while the
 * panel is in L1, fetching the next panel meanwhile.
 */
#define _DEFAULT_SOURCE /* madvise */

#include "kernel.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86 1
#else
#define HAVE_X86 0
#endif

/* ---- the scalar heap both ways share --------------------------------------- */

/*
 * Each output line is a heap of its k best so far, kept in the caller's
 * buffers, with the worst at the root: a value enters when it beats the
 * root. Values are compared as sign·v (sign = -1 for the smallest), and
 * among equal values the higher index is worse, so ties go to the lower
 * index; a row's columns arrive in increasing order, so an equal value
 * never enters.
 */
static inline bool worse(float sign, float va, size_t ia, float vb, size_t ib) {
  return sign * va < sign * vb || (sign * va == sign * vb && ia > ib);
}

static void sift_down(float *v, size_t *ix, size_t size, size_t at, float sign) {
  for (;;) {
    size_t l = 2 * at + 1, worst = at;
    if (l < size && worse(sign, v[l], ix[l], v[worst], ix[worst]))
      worst = l;
    if (l + 1 < size && worse(sign, v[l + 1], ix[l + 1], v[worst], ix[worst]))
      worst = l + 1;
    if (worst == at)
      return;
    float tv = v[at]; v[at] = v[worst]; v[worst] = tv;
    size_t ti = ix[at]; ix[at] = ix[worst]; ix[worst] = ti;
    at = worst;
  }
}

static void sift_up(float *v, size_t *ix, size_t at, float sign) {
  while (at > 0) {
    size_t parent = (at - 1) / 2;
    if (!worse(sign, v[at], ix[at], v[parent], ix[parent]))
      return;
    float tv = v[at]; v[at] = v[parent]; v[parent] = tv;
    size_t ti = ix[at]; ix[at] = ix[parent]; ix[parent] = ti;
    at = parent;
  }
}

/*
 * Offers a row's entries x[0..cols), columns col0.., to its heap, which
 * holds the best min(k, col0) of the columns before col0.
 */
/* x at column `col` replaces the heap's worst entry; the new threshold. */
static float heap_replace_root(float *hv, size_t *hi, size_t k, float sign, float x,
                               size_t col) {
  hv[0] = x;
  hi[0] = col;
  sift_down(hv, hi, k, 0, sign);
  return sign * hv[0];
}

static void topk_offer(float *hv, size_t *hi, size_t k, float sign, const float *x,
                       size_t col0, size_t cols) {
  enum { CHUNK = 32 };
  size_t j = 0;
  for (size_t have = col0; have < k && j < cols; have++, j++) {
    hv[have] = x[j];
    hi[have] = col0 + j;
    sift_up(hv, hi, have, sign);
  }
  float threshold = sign * hv[0];
  while (j < cols) {
    size_t end = cols - j < CHUNK ? cols : j + CHUNK;
    /* Most chunks hold nothing better than the k-th best: test them with
     * a branch-free scan first, of a fixed length so that the compiler
     * vectorises it at -O2. */
    int hit = 0;
    if (end - j == CHUNK)
      for (size_t t = 0; t < CHUNK; t++)
        hit |= sign * x[j + t] > threshold;
    else
      hit = 1;
    if (hit)
      for (size_t t = j; t < end; t++)
        if (sign * x[t] > threshold)
          threshold = heap_replace_root(hv, hi, k, sign, x[t], col0 + t);
    j = end;
  }
}

static float sign_of(const mi__select *s) {
  return s->kind == MI__SELECT_SMALLEST ? -1.0f : 1.0f;
}

/* ---- the plain way: BLIS tiles ------------------------------------------------ */

/* A scan the plain way, and whether its tiles may hold an overflow. */
typedef struct plain_scan {
  const mi__select *s;
  bool screen;
} plain_scan;

static mi_status plain_tile(const float *tile, size_t ld, size_t row0, size_t rows,
                            size_t col0, size_t cols, void *user) {
  const plain_scan *p = user;
  const mi__select *s = p->s;
  size_t at[2];
  /* A NaN compares false with everything: it would leave a heap's order
   * arbitrary and never count as greater. */
  if (p->screen && !mi__finite_f(tile, rows, cols, ld, at))
    return MI_ERR_NUMERIC;
  for (size_t i = 0; i < rows; i++) {
    const float *x = tile + i * ld;
    size_t line = row0 + i - s->i0;
    if (s->kind == MI__SELECT_RANK) {
      size_t row = row0 + i, greater = 0;
      float d = s->threshold[line];
      for (size_t j = 0; j < cols; j++) /* branch-free: the compiler vectorises it */
        greater += x[j] > d;
      if (row >= col0 && row < col0 + cols) /* the diagonal itself never counts */
        greater -= x[row - col0] > d;
      s->count[line] += greater;
    } else {
      topk_offer(s->value + line * s->ld, s->index + line * s->ld, s->k, sign_of(s), x, col0,
                 cols);
    }
  }
  return MI_OK;
}

/* ---- overflow ---------------------------------------------------------------- */

/* The largest |x| of a view (NaN if it holds one), read along its contiguous
 * dimension in runs of fixed length, which the compiler vectorises. */
static float max_abs(mi__matrix X) {
  enum { RUN = 16 };
  bool by_rows = X.cs == 1 || X.rs != 1;
  size_t lines = by_rows ? X.rows : X.cols, len = by_rows ? X.cols : X.rows;
  ptrdiff_t step = by_rows ? X.cs : X.rs, next = by_rows ? X.rs : X.cs;
  float lane[RUN] = {0}, nan = 0.0f;
  for (size_t l = 0; l < lines; l++) {
    const float *x = X.data + (ptrdiff_t)l * next;
    size_t j = 0;
    for (; step == 1 && j + RUN <= len; j += RUN)
      for (size_t t = 0; t < RUN; t++) {
        float v = fabsf(x[j + t]);
        nan += v != v ? v : 0.0f; /* a NaN sticks */
        lane[t] = v > lane[t] ? v : lane[t];
      }
    for (; j < len; j++) {
      float v = fabsf(x[(ptrdiff_t)j * step]);
      nan += v != v ? v : 0.0f;
      lane[0] = v > lane[0] ? v : lane[0];
    }
  }
  float b = nan;
  for (size_t t = 0; t < RUN; t++)
    b = lane[t] > b ? lane[t] : b;
  return b;
}

/* max_i ‖A_i‖₁ over rows i0..i1 (NaN if a row holds one). */
static double max_row_l1(mi__matrix A, size_t i0, size_t i1) {
  double a = 0.0;
  for (size_t i = i0; i < i1; i++) {
    double sum = 0.0;
    for (size_t t = 0; t < A.cols; t++)
      sum += fabs((double)A.data[(ptrdiff_t)i * A.rs + (ptrdiff_t)t * A.cs]);
    a = sum > a || sum != sum ? sum : a;
  }
  return a;
}

/*
 * Whether no entry of A·B can overflow float32, from a = max_i ‖A_i‖₁ and
 * b = max|B|: |(AB)_ij| ≤ a·b, and the partial sums of an FMA chain stay
 * within that bound times (1 + r·2⁻²⁴), so half of FLT_MAX leaves room.
 * False also for non-finite factors (a factor computed from huge weights
 * may hold an infinity). The maxima cost O((i1 − i0 + m)·r), against the
 * product's O((i1 − i0)·r·m).
 */
static bool product_bounded(double a, double b) {
  return a * b <= 0.5 * FLT_MAX; /* false for NaN and infinity */
}

/* ---- the fused kernels ---------------------------------------------------------- */

/*
 * Packed panels: A in MR-row panels, entry (i, t) of a panel at t·MR + i;
 * B in NR-column panels, entry (t, j) at t·NR + j; both padded with zeros
 * past the last row or column. A row tile is ROW_PANELS panels.
 */
enum { MR = 6, ROW_PANELS = 32, TILE_ROWS = MR * ROW_PANELS, MAX_NR = 64 };

/* What a micro-tile's scan is asked to do. */
enum { TILE_BELOW = 1u, /* candidates are below the threshold (else above) */
       TILE_STORE = 2u, /* store the tile whatever the masks say */
       TILE_NO_STORE = 4u /* only the masks are wanted */ };

/*
 * Computes the MR × NR tile of an A panel times a B panel over r inner
 * terms, and for each row i the bit mask (bit j: column j) of entries
 * beyond thr[i] among the `valid` columns. Stores the tile to out (MR × NR)
 * when asked or when a mask is not empty (unless TILE_NO_STORE); returns
 * whether it stored.
 */
typedef bool (*tile_fn)(const float *ap, const float *bp, size_t r, const float *thr,
                        unsigned how, uint64_t valid, uint64_t *mask, float *out);

#if HAVE_X86
__attribute__((target("avx512f"))) static bool tile_avx512(const float *ap, const float *bp,
                                                           size_t r, const float *thr,
                                                           unsigned how, uint64_t valid,
                                                           uint64_t *mask, float *out) {
  __m512 c[MR][4];
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++)
      c[i][v] = _mm512_setzero_ps();
  for (size_t t = 0; t < r; t++) {
    __m512 b0 = _mm512_loadu_ps(bp + t * 64), b1 = _mm512_loadu_ps(bp + t * 64 + 16);
    __m512 b2 = _mm512_loadu_ps(bp + t * 64 + 32), b3 = _mm512_loadu_ps(bp + t * 64 + 48);
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
      __m512 a = _mm512_set1_ps(ap[t * MR + i]);
      c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
      c[i][2] = _mm512_fmadd_ps(a, b2, c[i][2]);
      c[i][3] = _mm512_fmadd_ps(a, b3, c[i][3]);
    }
  }
  if (!(how & (TILE_STORE | TILE_NO_STORE))) {
    /* Most top-k tiles hold no candidate: one compare a row of the rows'
     * extremes tells (the product is finite: no NaN to lose). */
    __mmask16 hit = 0;
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
      __m512 th = _mm512_set1_ps(thr[i]);
      hit |= (how & TILE_BELOW)
                 ? _mm512_cmp_ps_mask(_mm512_min_ps(_mm512_min_ps(c[i][0], c[i][1]),
                                                    _mm512_min_ps(c[i][2], c[i][3])),
                                      th, _CMP_LT_OQ)
                 : _mm512_cmp_ps_mask(_mm512_max_ps(_mm512_max_ps(c[i][0], c[i][1]),
                                                    _mm512_max_ps(c[i][2], c[i][3])),
                                      th, _CMP_GT_OQ);
    }
    if (hit == 0)
      return false;
  }
  uint64_t any = 0;
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++) {
    __m512 th = _mm512_set1_ps(thr[i]);
    uint64_t m = 0;
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++) {
      __mmask16 k = (how & TILE_BELOW) ? _mm512_cmp_ps_mask(c[i][v], th, _CMP_LT_OQ)
                                       : _mm512_cmp_ps_mask(c[i][v], th, _CMP_GT_OQ);
      m |= (uint64_t)k << (16 * v);
    }
    mask[i] = m & valid;
    any |= mask[i];
  }
  bool store = (how & TILE_STORE) || (any != 0 && !(how & TILE_NO_STORE));
  if (store)
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
      for (int v = 0; v < 4; v++)
        _mm512_storeu_ps(out + i * 64 + 16 * v, c[i][v]);
  return store;
}

__attribute__((target("avx2,fma"))) static bool tile_avx2(const float *ap, const float *bp,
                                                          size_t r, const float *thr,
                                                          unsigned how, uint64_t valid,
                                                          uint64_t *mask, float *out) {
  __m256 c[MR][2];
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++) {
    c[i][0] = _mm256_setzero_ps();
    c[i][1] = _mm256_setzero_ps();
  }
  for (size_t t = 0; t < r; t++) {
    __m256 b0 = _mm256_loadu_ps(bp + t * 16), b1 = _mm256_loadu_ps(bp + t * 16 + 8);
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
      __m256 a = _mm256_broadcast_ss(ap + t * MR + i);
      c[i][0] = _mm256_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm256_fmadd_ps(a, b1, c[i][1]);
    }
  }
  if (!(how & (TILE_STORE | TILE_NO_STORE))) { /* as in tile_avx512 */
    int hit = 0;
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
      __m256 th = _mm256_set1_ps(thr[i]);
      hit |= (how & TILE_BELOW) ? _mm256_movemask_ps(_mm256_cmp_ps(
                                      _mm256_min_ps(c[i][0], c[i][1]), th, _CMP_LT_OQ))
                                : _mm256_movemask_ps(_mm256_cmp_ps(
                                      _mm256_max_ps(c[i][0], c[i][1]), th, _CMP_GT_OQ));
    }
    if (hit == 0)
      return false;
  }
  uint64_t any = 0;
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++) {
    __m256 th = _mm256_set1_ps(thr[i]);
    unsigned lo, hi;
    if (how & TILE_BELOW) {
      lo = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(c[i][0], th, _CMP_LT_OQ));
      hi = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(c[i][1], th, _CMP_LT_OQ));
    } else {
      lo = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(c[i][0], th, _CMP_GT_OQ));
      hi = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(c[i][1], th, _CMP_GT_OQ));
    }
    mask[i] = ((uint64_t)hi << 8 | lo) & valid;
    any |= mask[i];
  }
  bool store = (how & TILE_STORE) || (any != 0 && !(how & TILE_NO_STORE));
  if (store)
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
      _mm256_storeu_ps(out + i * 16, c[i][0]);
      _mm256_storeu_ps(out + i * 16 + 8, c[i][1]);
    }
  return store;
}
#endif

/* A fused kernel: its micro-tile and panel width. */
typedef struct fused {
  tile_fn tile;
  size_t nr;
} fused;

/* Packs rows i0..i0+rows (≤ MR) of A into one panel, zero-padded. */
static void pack_a(float *out, mi__matrix A, size_t i0, size_t rows) {
  size_t r = A.cols;
  for (size_t i = 0; i < MR; i++)
    for (size_t t = 0; t < r; t++)
      out[t * MR + i] =
          i < rows ? A.data[(ptrdiff_t)(i0 + i) * A.rs + (ptrdiff_t)t * A.cs] : 0.0f;
}

/* Packs columns j0..j0+cols (≤ nr) of B into one panel, zero-padded. */
static void pack_b(float *out, mi__matrix B, size_t j0, size_t cols, size_t nr) {
  size_t r = B.rows;
  if (cols < nr)
    memset(out, 0, r * nr * sizeof *out);
  if (B.cs == 1)
    for (size_t t = 0; t < r; t++)
      memcpy(out + t * nr, B.data + (ptrdiff_t)t * B.rs + (ptrdiff_t)j0, cols * sizeof *out);
  else /* a transposed view: read each column once, contiguously when rs = 1 */
    for (size_t j = 0; j < cols; j++)
      for (size_t t = 0; t < r; t++)
        out[t * nr + j] = B.data[(ptrdiff_t)t * B.rs + (ptrdiff_t)(j0 + j) * B.cs];
}

/* What the threads of one fused scan share. */
typedef struct fused_scan {
  const mi__select *s;
  fused f;
  mi__matrix A, B;
  size_t i0, i1;
  const float *packed_b; /* all of B's panels */
  atomic_size_t next_tile;
} fused_scan;

/* One thread's buffers: a packed row tile, its thresholds, a stored tile. */
typedef struct fused_job {
  fused_scan *scan;
  float *a, *thr, *out;
} fused_job;

/* Scans the micro-tiles of one row panel (rows g0.., `rows` of them) at
 * columns c0.. (nc of them, ≤ nr) after the tile fn computed masks. */
static void panel_rows(const mi__select *s, size_t g0, size_t rows, size_t c0, size_t nc,
                       size_t nr, const uint64_t *mask, const float *out, float *thr) {
  for (size_t i = 0; i < rows; i++) {
    size_t row = g0 + i, line = row - s->i0;
    if (s->kind == MI__SELECT_RANK) {
      uint64_t m = mask[i];
      if (row >= c0 && row < c0 + nc) /* the diagonal itself never counts */
        m &= ~((uint64_t)1 << (row - c0));
      s->count[line] += (size_t)__builtin_popcountll(m);
    } else if (c0 < s->k) { /* the heap is still filling */
      float *hv = s->value + line * s->ld;
      topk_offer(hv, s->index + line * s->ld, s->k, sign_of(s), out + i * nr, c0, nc);
      thr[i] = hv[0];
    } else if (mask[i] != 0) {
      /* Only the masked columns beat the threshold the tile was compared
       * with; in increasing order, each against the threshold as it rises. */
      float *hv = s->value + line * s->ld, sign = sign_of(s), threshold = sign * hv[0];
      size_t *hi = s->index + line * s->ld;
      for (uint64_t m = mask[i]; m != 0; m &= m - 1) {
        size_t j = (size_t)__builtin_ctzll(m);
        float x = out[i * nr + j];
        if (sign * x > threshold)
          threshold = heap_replace_root(hv, hi, s->k, sign, x, c0 + j);
      }
      thr[i] = hv[0];
    }
  }
}

static void fused_tile(fused_job *job, size_t row0, size_t rows) {
  fused_scan *sc = job->scan;
  const mi__select *s = sc->s;
  size_t r = sc->A.cols, m = sc->B.cols, nr = sc->f.nr;
  size_t panels = (rows + MR - 1) / MR;
  for (size_t p = 0; p < panels; p++) {
    size_t g0 = row0 + p * MR, n = rows - p * MR < MR ? rows - p * MR : MR;
    pack_a(job->a + p * MR * r, sc->A, g0, n);
    for (size_t i = 0; i < MR; i++)
      job->thr[p * MR + i] = i < n && s->kind == MI__SELECT_RANK
                                 ? s->threshold[g0 + i - s->i0]
                                 : 0.0f;
  }
  unsigned below = s->kind == MI__SELECT_SMALLEST ? TILE_BELOW : 0;
  uint64_t mask[MR];
  for (size_t c0 = 0; c0 < m; c0 += nr) {
    size_t nc = m - c0 < nr ? m - c0 : nr;
    uint64_t valid = nc == 64 ? ~(uint64_t)0 : ((uint64_t)1 << nc) - 1;
    const float *bp = sc->packed_b + (c0 / nr) * r * nr;
    unsigned how = below | (s->kind == MI__SELECT_RANK ? TILE_NO_STORE
                            : c0 < s->k                ? TILE_STORE
                                                       : 0);
    /* The next B panel comes from memory: its cache lines are fetched a
     * share a micro-tile, while this panel is computed from cache. */
    const char *next = c0 + nr < m ? (const char *)(bp + r * nr) : NULL;
    size_t lines = r * nr * sizeof(float) / 64, share = (lines + panels - 1) / panels;
    for (size_t p = 0; p < panels; p++) {
      size_t n = rows - p * MR < MR ? rows - p * MR : MR;
      float *thr = job->thr + p * MR;
      for (size_t l = p * share; next != NULL && l < lines && l < (p + 1) * share; l++)
        __builtin_prefetch(next + l * 64);
      if (sc->f.tile(job->a + p * MR * r, bp, r, thr, how, valid, mask, job->out) ||
          s->kind == MI__SELECT_RANK)
        panel_rows(s, row0 + p * MR, n, c0, nc, nr, mask, job->out, thr);
    }
  }
}

static void *fused_worker(void *arg) {
  fused_job *job = arg;
  fused_scan *sc = job->scan;
  size_t tiles = (sc->i1 - sc->i0 + TILE_ROWS - 1) / TILE_ROWS;
  /* Tiles are handed out one at a time, so a thread slowed by a neighbour
   * simply takes fewer. */
  for (;;) {
    size_t t = atomic_fetch_add(&sc->next_tile, 1);
    if (t >= tiles)
      return NULL;
    size_t row0 = sc->i0 + t * TILE_ROWS;
    fused_tile(job, row0, sc->i1 - row0 < TILE_ROWS ? sc->i1 - row0 : TILE_ROWS);
  }
}

/* Packing B's panels in parallel, PACK_RUN panels at a time to the next
 * free thread (a thread slowed by a neighbour packs fewer). */
enum { PACK_RUN = 16 };

typedef struct pack_scan {
  mi__matrix B;
  float *out;
  size_t nr, panels;
  atomic_size_t next_run;
} pack_scan;

typedef struct pack_job {
  pack_scan *scan;
  float max_abs; /* out: max|B| over the job's panels, for the overflow bound */
} pack_job;

static void *pack_worker(void *arg) {
  pack_job *j = arg;
  pack_scan *sc = j->scan;
  size_t r = sc->B.rows, m = sc->B.cols, nr = sc->nr;
  j->max_abs = 0.0f;
  for (;;) {
    size_t p0 = atomic_fetch_add(&sc->next_run, 1) * PACK_RUN;
    if (p0 >= sc->panels)
      return NULL;
    for (size_t p = p0; p < sc->panels && p < p0 + PACK_RUN; p++) {
      size_t c0 = p * nr, nc = m - c0 < nr ? m - c0 : nr;
      /* B is read once: the panel is still in cache when it is packed. */
      float b = max_abs(mi__matrix_cols(sc->B, c0, c0 + nc));
      j->max_abs = b > j->max_abs || b != b ? b : j->max_abs;
      pack_b(sc->out + p * r * nr, sc->B, c0, nc, nr);
    }
  }
}

/*
 * The packed factors, on 2 MiB pages where Linux gives them: packing B
 * then takes a few page faults rather than one a 4 KiB page (thousands a
 * call, and dear under a hypervisor), and its panels a few TLB entries.
 */
static void *alloc_packed(size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  enum { HUGE = 2u << 20 };
  if (bytes >= HUGE) {
    void *p = aligned_alloc(HUGE, (bytes + HUGE - 1) / HUGE * HUGE);
    if (p != NULL)
      madvise(p, (bytes + HUGE - 1) / HUGE * HUGE, MADV_HUGEPAGE); /* a hint: failure is harmless */
    return p;
  }
#endif
  return malloc(bytes);
}

/* Largest packed B the fused way takes (it packs all of B once). */
static const size_t PACKED_B_LIMIT = (size_t)48 << 20;

/*
 * The scan by a fused kernel, when the product is bounded (a = max_i ‖A_i‖₁
 * of the rows): *bounded says whether it was, else nothing is scanned.
 */
static mi_status fused_select(fused f, mi__matrix A, mi__matrix B, size_t i0, size_t i1,
                              const mi__select *s, double a, bool *bounded) {
  size_t r = A.cols, m = B.cols;
  size_t panels_b = (m + f.nr - 1) / f.nr;
  size_t threads = mi__thread_count();
  size_t tiles = (i1 - i0 + TILE_ROWS - 1) / TILE_ROWS;
  if (threads > tiles)
    threads = tiles;
  if (threads > MI__MAX_THREADS)
    threads = MI__MAX_THREADS;
  size_t per_thread = TILE_ROWS * r + TILE_ROWS + MR * MAX_NR;
  float *packed = alloc_packed((panels_b * r * f.nr + threads * per_thread) * sizeof *packed);
  if (packed == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "select: packed factors of %d x %zu and %zu x %zu",
                    TILE_ROWS, r, r, m);
  pack_scan pack = {B, packed, f.nr, panels_b, 0};
  pack_job packs[MI__MAX_THREADS];
  for (size_t t = 0; t < threads; t++)
    packs[t] = (pack_job){&pack, 0.0f};
  mi__run_threads(pack_worker, packs, sizeof packs[0], threads);
  float b = 0.0f;
  for (size_t t = 0; t < threads; t++)
    b = packs[t].max_abs > b || packs[t].max_abs != packs[t].max_abs ? packs[t].max_abs : b;
  *bounded = product_bounded(a, b);
  if (!*bounded) {
    free(packed);
    return MI_OK;
  }
  fused_scan scan = {s, f, A, B, i0, i1, packed, 0};
  fused_job jobs[MI__MAX_THREADS];
  float *own = packed + panels_b * r * f.nr;
  for (size_t t = 0; t < threads; t++) {
    float *a = own + t * per_thread;
    jobs[t] = (fused_job){&scan, a, a + TILE_ROWS * r, a + TILE_ROWS * r + TILE_ROWS};
  }
  mi__run_threads(fused_worker, jobs, sizeof jobs[0], threads);
  free(packed);
  return MI_OK;
}

/* ---- choosing the way ----------------------------------------------------------- */

/* MI__SELECT_AUTO until mi__select_use chooses. */
static _Atomic int forced = MI__SELECT_AUTO;

static bool cpu_runs(mi__select_impl impl) {
#if HAVE_X86
  __builtin_cpu_init();
  if (impl == MI__SELECT_AVX512)
    return __builtin_cpu_supports("avx512f");
  if (impl == MI__SELECT_AVX2)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return impl == MI__SELECT_PLAIN || impl == MI__SELECT_AUTO;
}

mi_status mi__select_use(mi__select_impl impl) {
  if (!cpu_runs(impl))
    return mi__fail(MI_ERR_UNSUPPORTED, "selection kernel %d: this CPU lacks its instructions",
                    (int)impl);
  atomic_store(&forced, (int)impl);
  return MI_OK;
}

/*
 * The way rows of an r-term product with m columns go. The fused kernels
 * give BLIS's values when r fits one KC block of its kernel set, and pack
 * all of B at once, so they take B up to PACKED_B_LIMIT; on their own
 * choice only under a kernel set of FMA chains.
 */
static mi__select_impl choose(size_t r, size_t m) {
  size_t kc_max = 0;
  bool fma = mi__blis_fma_chain(&kc_max);
  if (r > kc_max || (double)r * (double)(m + MAX_NR) * sizeof(float) > (double)PACKED_B_LIMIT)
    return MI__SELECT_PLAIN;
  mi__select_impl impl = (mi__select_impl)atomic_load(&forced);
  if (impl != MI__SELECT_AUTO)
    return impl;
  if (!fma)
    return MI__SELECT_PLAIN;
  if (cpu_runs(MI__SELECT_AVX512))
    return MI__SELECT_AVX512;
  return cpu_runs(MI__SELECT_AVX2) ? MI__SELECT_AVX2 : MI__SELECT_PLAIN;
}

mi_status mi__select_rows(mi__matrix A, mi__matrix B, size_t i0, size_t i1,
                          const mi__select *s) {
  if (A.cols != B.rows || i0 > i1 || i1 > A.rows)
    return mi__fail(MI_ERR_SHAPE, "select: rows %zu..%zu of (%zu x %zu)(%zu x %zu)", i0, i1,
                    A.rows, A.cols, B.rows, B.cols);
  if (i0 == i1 || B.cols == 0)
    return MI_OK;
  if (A.data == NULL || B.data == NULL)
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "select: NULL matrix data");
  mi_status status = mi__blis_begin();
  if (status != MI_OK)
    return status;
  if (s->kind == MI__SELECT_RANK)
    for (size_t i = 0; i < i1 - i0; i++)
      s->count[i] = 0;
  /* Only a product that may overflow pays for screening its tiles, and the
   * fused kernels, which never store a tile, leave it to the plain way;
   * they find max|B| as they pack B. */
  double a = max_row_l1(A, i0, i1);
  bool fused_done = false, bounded = true;
  switch (choose(A.cols, B.cols)) {
#if HAVE_X86
  case MI__SELECT_AVX512:
    status = fused_select((fused){tile_avx512, 64}, A, B, i0, i1, s, a, &bounded);
    fused_done = bounded;
    break;
  case MI__SELECT_AVX2:
    status = fused_select((fused){tile_avx2, 16}, A, B, i0, i1, s, a, &bounded);
    fused_done = bounded;
    break;
#endif
  default: bounded = product_bounded(a, max_abs(B)); break;
  }
  if (status == MI_OK && !fused_done) {
    plain_scan plain = {s, !bounded};
    status = mi__stream(A, B, i0, i1, plain_tile, &plain);
  }
  if (status != MI_OK || s->kind == MI__SELECT_RANK)
    return status;
  /* Heap sort each line in place: popping the worst to the back leaves
   * the best first. */
  float sign = sign_of(s);
  for (size_t i = 0; i < i1 - i0; i++) {
    float *hv = s->value + i * s->ld;
    size_t *hi = s->index + i * s->ld;
    for (size_t size = s->k; size > 1; size--) {
      float tv = hv[0]; hv[0] = hv[size - 1]; hv[size - 1] = tv;
      size_t ti = hi[0]; hi[0] = hi[size - 1]; hi[size - 1] = ti;
      sift_down(hv, hi, size - 1, 0, sign);
    }
  }
  return MI_OK;
}
