/*
 * The fused selection kernels (AVX-512, AVX2) against the plain BLIS way and
 * against an independent reference, bit for bit: the same indices, the same
 * float bits of every value, the same counts. Linked against the static
 * library, so it can force each way (mi__select_use).
 *
 * The reference computes each entry as one fmaf chain from +0 over the inner
 * dimension, which is what BLIS's FMA kernel sets compute when the inner
 * dimension fits one KC block (so the plain way must equal it too), then
 * sorts each row by value, ties to the lower column.
 */
#define _POSIX_C_SOURCE 200809L

#include "testutil.h"

#include "kernel.h"

#include <math.h>
#include <pthread.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

static const mi__select_impl FUSED[] = {MI__SELECT_AVX512, MI__SELECT_AVX2};

/* Factors of a test: A n × r row-major, B r × m (row-major, or stored
 * transposed as m × r when bt). */
typedef struct factors {
  size_t n, m, r;
  bool bt;
  float *a, *b;
} factors;

static mi__matrix view_a(const factors *f) { return mi__matrix_rowmajor(f->a, f->n, f->r); }

static mi__matrix view_b(const factors *f) {
  return f->bt ? mi__matrix_t(mi__matrix_rowmajor(f->b, f->m, f->r))
               : mi__matrix_rowmajor(f->b, f->r, f->m);
}

/* Entry (i, j) as BLIS's FMA kernels form it. */
static float entry(const factors *f, size_t i, size_t j) {
  float s = 0.0f;
  for (size_t t = 0; t < f->r; t++)
    s = fmaf(f->a[i * f->r + t], f->bt ? f->b[j * f->r + t] : f->b[t * f->m + j], s);
  return s;
}

/* Kinds of factor entries: Gaussian; few small integers (ties everywhere);
 * zeros of both signs against mixed signs (entries -0.0 and +0.0). */
enum { GAUSS, TIES, ZEROS };

static factors make(size_t n, size_t m, size_t r, bool bt, int kind, uint64_t seed) {
  factors f = {n, m, r, bt, malloc(n * r * sizeof(float)), malloc(r * m * sizeof(float))};
  tu_rng rng = tu_rng_seed(seed);
  for (size_t i = 0; i < n * r + r * m; i++) {
    float *x = i < n * r ? f.a + i : f.b + (i - n * r);
    double u = tu_uniform(&rng);
    if (kind == GAUSS)
      *x = (float)tu_normal(&rng);
    else if (kind == TIES)
      *x = (float)(int)(u * 3.0) - 1.0f;
    else
      *x = u < 0.4 ? 0.0f : u < 0.8 ? -0.0f : u < 0.9 ? 1.0f : -2.0f;
  }
  if (n > 9) /* equal rows */
    memcpy(f.a + 7 * r, f.a + 3 * r, r * sizeof(float));
  return f;
}

static void drop(factors *f) {
  free(f->a);
  free(f->b);
}

/* The internal scans leave the message to their callers: only the status. */
#define TU_FAILS_SILENT(expected, call)                                            \
  do {                                                                             \
    mi_status status_ = (call);                                                    \
    ck_assert_msg(status_ == (expected), "%s -> %s, wanted %s", #call,             \
                  mi_status_str(status_), mi_status_str(expected));                \
  } while (0)

/* Runs a top-k scan of rows i0..i1 under `impl`. */
static void topk(size_t *ix, float *v, const factors *f, mi__select_impl impl, size_t k,
                 bool smallest, size_t i0, size_t i1) {
  TU_OK(mi__select_use(impl));
  mi__select s = {smallest ? MI__SELECT_SMALLEST : MI__SELECT_LARGEST, k, ix, v, k,
                  NULL, NULL, i0};
  TU_OK(mi__select_rows(view_a(f), view_b(f), i0, i1, &s));
  TU_OK(mi__select_use(MI__SELECT_AUTO));
}

static float sort_sign;
static const float *sort_row;

static int by_value(const void *pa, const void *pb) {
  size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
  float va = sort_sign * sort_row[a], vb = sort_sign * sort_row[b];
  if (va != vb)
    return va > vb ? -1 : 1;
  return a < b ? -1 : 1;
}

/* The reference top-k of rows i0..i1. */
static void reference(size_t *ix, float *v, const factors *f, size_t k, bool smallest,
                      size_t i0, size_t i1) {
  float *row = malloc(f->m * sizeof *row);
  size_t *order = malloc(f->m * sizeof *order);
  for (size_t i = i0; i < i1; i++) {
    for (size_t j = 0; j < f->m; j++) {
      row[j] = entry(f, i, j);
      order[j] = j;
    }
    sort_sign = smallest ? -1.0f : 1.0f;
    sort_row = row;
    qsort(order, f->m, sizeof *order, by_value);
    for (size_t t = 0; t < k; t++) {
      ix[(i - i0) * k + t] = order[t];
      v[(i - i0) * k + t] = row[order[t]];
    }
  }
  free(row);
  free(order);
}

/* Every fused way this CPU runs, and the plain way, equal the reference:
 * indices equal, value bits equal (memcmp tells -0.0 from +0.0). */
static void check_topk(const factors *f, size_t k, bool smallest, size_t i0, size_t i1,
                       bool reference_too) {
  size_t lines = i1 - i0;
  size_t *want_i = malloc(lines * k * sizeof *want_i), *got_i = malloc(lines * k * sizeof *got_i);
  float *want_v = malloc(lines * k * sizeof *want_v), *got_v = malloc(lines * k * sizeof *got_v);
  topk(want_i, want_v, f, MI__SELECT_PLAIN, k, smallest, i0, i1);
  if (reference_too) {
    reference(got_i, got_v, f, k, smallest, i0, i1);
    ck_assert_msg(memcmp(want_i, got_i, lines * k * sizeof *got_i) == 0 &&
                      memcmp(want_v, got_v, lines * k * sizeof *got_v) == 0,
                  "plain way differs from the reference (n %zu m %zu r %zu k %zu)", f->n, f->m,
                  f->r, k);
  }
  for (size_t w = 0; w < sizeof FUSED / sizeof FUSED[0]; w++) {
    if (mi__select_use(FUSED[w]) != MI_OK)
      continue; /* this CPU lacks it */
    for (size_t threads = 1; threads <= 3; threads += 2) {
      TU_OK(mi_set_num_threads(threads));
      memset(got_i, 0xff, lines * k * sizeof *got_i);
      topk(got_i, got_v, f, FUSED[w], k, smallest, i0, i1);
      for (size_t t = 0; t < lines * k; t++)
        ck_assert_msg(got_i[t] == want_i[t] && memcmp(&got_v[t], &want_v[t], sizeof(float)) == 0,
                      "way %d, %zu threads, n %zu m %zu r %zu k %zu %s: line %zu entry %zu: "
                      "%zu (%a) against %zu (%a)",
                      (int)FUSED[w], threads, f->n, f->m, f->r, k,
                      smallest ? "smallest" : "largest", t / k, t % k, got_i[t],
                      (double)got_v[t], want_i[t], (double)want_v[t]);
    }
    TU_OK(mi_set_num_threads(0));
  }
  free(want_i);
  free(got_i);
  free(want_v);
  free(got_v);
}

/*
 * Shapes: n and m not multiples of the 6-row tile, the 192-row tile, the
 * 64- or 16-column panel; r = 1, 64 (d_head) and 480 (skx's largest KC
 * block); k = 1, 10, more than a panel, and k = m. Rows and columns (a
 * transposed view), largest and smallest, a row range not starting at 0.
 */
static const struct {
  size_t n, m, r, k;
  bool bt;
  int kind;
} CASES[] = {
    {203, 1000, 64, 10, false, GAUSS}, {203, 1000, 64, 10, true, GAUSS},
    {200, 517, 64, 1, true, GAUSS},    {61, 130, 64, 130, false, GAUSS},
    {50, 300, 64, 77, true, GAUSS},    {400, 333, 1, 5, false, GAUSS},
    {40, 211, 480, 7, true, GAUSS},    {250, 700, 64, 10, false, TIES},
    {250, 700, 3, 20, true, TIES},     {97, 129, 64, 129, false, TIES},
    {250, 700, 8, 10, false, ZEROS},   {97, 150, 8, 150, true, ZEROS},
};

START_TEST(fused_topk_equals_plain_and_reference) {
  factors f = make(CASES[_i].n, CASES[_i].m, CASES[_i].r, CASES[_i].bt, CASES[_i].kind,
                   100 + (uint64_t)_i);
  for (int smallest = 0; smallest < 2; smallest++) {
    check_topk(&f, CASES[_i].k, smallest, 0, f.n, true);
    check_topk(&f, CASES[_i].k, smallest, 5, f.n - 1, false);
  }
  /* Columns: the rows of the transposed product. */
  factors t = {f.m, f.n, f.r, !f.bt, f.b, f.a};
  size_t k = CASES[_i].k < f.n ? CASES[_i].k : f.n;
  check_topk(&t, k, false, 0, t.n, true);
  drop(&f);
}
END_TEST

/*
 * A NaN factor entry (of A or of B), or finite factors whose product
 * overflows float32, are MI_ERR_NUMERIC under every way (issue 10: a NaN
 * compares false with everything, so no ordering of it is an answer): the
 * bound check sends them the plain way, which screens each tile.
 */
START_TEST(non_finite_products_are_refused_by_every_way) {
  factors f = make(100, 300, 16, true, GAUSS, 7);
  f.a[11 * 16 + 3] = NAN;
  factors g = make(100, 300, 16, true, GAUSS, 8);
  g.a[40 * 16 + 5] = 1e30f; /* finite, but 1e30 times a unit entry of B overflows */
  g.b[7 * 16 + 5] = 1e30f;
  /* A NaN in B, in the last, partial panel: the fused ways find max|B|
   * while packing B, panel by panel. */
  factors e = make(100, 300, 16, true, GAUSS, 9);
  e.b[290 * 16 + 2] = NAN;
  mi__select_impl ways[] = {MI__SELECT_PLAIN, MI__SELECT_AVX512, MI__SELECT_AVX2};
  size_t ix[100 * 3], count[100];
  float v[100 * 3];
  for (size_t w = 0; w < 3; w++) {
    if (mi__select_use(ways[w]) != MI_OK)
      continue;
    for (int which = 0; which < 3; which++) {
      const factors *h = which == 0 ? &f : which == 1 ? &g : &e;
      mi__select top = {MI__SELECT_LARGEST, 3, ix, v, 3, NULL, NULL, 0};
      TU_FAILS_SILENT(MI_ERR_NUMERIC, mi__select_rows(view_a(h), view_b(h), 0, h->n, &top));
      float thr[100] = {0};
      mi__select rank = {MI__SELECT_RANK, 0, NULL, NULL, 0, thr, count, 0};
      TU_FAILS_SILENT(MI_ERR_NUMERIC, mi__select_rows(view_a(h), view_b(h), 0, h->n, &rank));
    }
    /* Rows clear of the bad entries still select. */
    mi__select top = {MI__SELECT_LARGEST, 3, ix, v, 3, NULL, NULL, 0};
    TU_OK(mi__select_rows(view_a(&g), view_b(&g), 41, g.n, &top));
  }
  TU_OK(mi__select_use(MI__SELECT_AUTO));
  drop(&f);
  drop(&g);
  drop(&e);
}
END_TEST

/* Diagonal ranks: counts of entries above each row's threshold, the
 * diagonal excluded, equal under every way and to a count over the
 * reference entries; thresholds on entries (ties) and NaN among them. */
START_TEST(fused_rank_equals_plain_and_reference) {
  size_t n = 420, r = _i == 0 ? 64 : 4;
  factors f = make(n, n, r, _i == 0, _i == 0 ? GAUSS : TIES, 30 + (uint64_t)_i);
  size_t i0 = 3, lines = n - i0;
  float *thr = malloc(lines * sizeof *thr);
  size_t *want = malloc(lines * sizeof *want), *got = malloc(lines * sizeof *got);
  for (size_t i = 0; i < lines; i++) {
    size_t row = i0 + i;
    thr[i] = i % 17 == 5 ? NAN : entry(&f, row, i % 3 == 0 ? row : (row * 7) % n);
    want[i] = 0;
    for (size_t j = 0; j < n; j++)
      want[i] += j != row && entry(&f, row, j) > thr[i];
  }
  mi__select_impl ways[] = {MI__SELECT_PLAIN, MI__SELECT_AVX512, MI__SELECT_AVX2};
  for (size_t w = 0; w < 3; w++) {
    if (mi__select_use(ways[w]) != MI_OK)
      continue;
    for (size_t threads = 1; threads <= 2; threads++) {
      TU_OK(mi_set_num_threads(threads));
      memset(got, 0xff, lines * sizeof *got);
      mi__select s = {MI__SELECT_RANK, 0, NULL, NULL, 0, thr, got, i0};
      TU_OK(mi__select_rows(view_a(&f), view_b(&f), i0, n, &s));
      for (size_t i = 0; i < lines; i++)
        ck_assert_msg(got[i] == want[i], "way %d, %zu threads: row %zu counts %zu, not %zu",
                      (int)ways[w], threads, i0 + i, got[i], want[i]);
    }
  }
  TU_OK(mi__select_use(MI__SELECT_AUTO));
  TU_OK(mi_set_num_threads(0));
  free(thr);
  free(want);
  free(got);
  drop(&f);
}
END_TEST

/* Beyond one KC block BLIS adds blocks: the automatic choice must take the
 * plain way there, and so still equal it; so must a forced fused way. */
START_TEST(long_inner_dimension_stays_exact) {
  factors f = make(30, 200, 768, false, GAUSS, 9);
  size_t k = 5, *a = malloc(30 * k * sizeof *a), *b = malloc(30 * k * sizeof *b);
  float *va = malloc(30 * k * sizeof *va), *vb = malloc(30 * k * sizeof *vb);
  topk(a, va, &f, MI__SELECT_PLAIN, k, false, 0, 30);
  mi__select_impl ways[] = {MI__SELECT_AUTO, MI__SELECT_AVX512, MI__SELECT_AVX2};
  for (size_t w = 0; w < 3; w++) {
    if (mi__select_use(ways[w]) != MI_OK)
      continue;
    topk(b, vb, &f, ways[w], k, false, 0, 30);
    ck_assert(memcmp(a, b, 30 * k * sizeof *a) == 0 && memcmp(va, vb, 30 * k * sizeof *va) == 0);
  }
  free(a); free(b); free(va); free(vb);
  drop(&f);
}
END_TEST

/* The automatic choice is a fused kernel on a CPU that has one under an FMA
 * kernel set (so the tests above compared something). */
START_TEST(fused_kernel_is_chosen_where_it_can_be) {
  size_t kc = 0;
  TU_OK(mi__blis_begin());
  bool fma = mi__blis_fma_chain(&kc);
  ck_assert_uint_ge(kc, 64);
  if (fma)
    ck_assert(mi__select_use(MI__SELECT_AVX2) == MI_OK ||
              mi__select_use(MI__SELECT_AVX512) == MI_OK);
  TU_OK(mi__select_use(MI__SELECT_AUTO));
}
END_TEST

/* ---- mi__parallel_for ------------------------------------------------------------ */

typedef struct loop_probe {
  atomic_size_t hits[1000];
  atomic_size_t nested; /* items that saw more than one thread inside */
  pthread_t caller;
  bool fail;             /* fail the first item a thread other than the caller takes */
  atomic_bool failed;
} loop_probe;

static mi_status probe_item(size_t i, void *user) {
  loop_probe *p = user;
  atomic_fetch_add(&p->hits[i], 1);
  if (mi__thread_count() != 1)
    atomic_fetch_add(&p->nested, 1);
  bool caller = pthread_equal(pthread_self(), p->caller);
  if (caller) /* slow, so the other threads surely take items too */
    nanosleep(&(struct timespec){0, 100000}, NULL);
  if (p->fail && !caller && !atomic_exchange(&p->failed, true))
    return mi__fail(MI_ERR_NUMERIC, "item %zu failed on another thread", i);
  return MI_OK;
}

/* Every item once, libmi calls inside on one thread, and a failure on
 * another thread comes back to the caller's with its message. */
START_TEST(parallel_for_runs_each_item_once) {
  static loop_probe p;
  for (size_t threads = 1; threads <= 4; threads++) {
    TU_OK(mi_set_num_threads(threads));
    memset(&p, 0, sizeof p);
    p.caller = pthread_self();
    TU_OK(mi__parallel_for(1000, probe_item, &p));
    for (size_t i = 0; i < 1000; i++)
      ck_assert_uint_eq(atomic_load(&p.hits[i]), 1);
    ck_assert_uint_eq(atomic_load(&p.nested), 0);
    ck_assert_uint_eq(mi__thread_count(), threads);
    if (threads > 1) {
      p.fail = true;
      TU_FAILS(MI_ERR_NUMERIC, mi__parallel_for(1000, probe_item, &p));
      ck_assert_msg(strstr(mi_last_error(), "failed on another thread") != NULL, "%s",
                    mi_last_error());
    }
  }
  TU_OK(mi__parallel_for(0, probe_item, &p));
  TU_OK(mi_set_num_threads(0));
}
END_TEST

int main(void) {
  /* The fused kernels match BLIS's FMA kernel sets; select one (the
   * children Check forks inherit it). */
  if (mi_blis_select_fast_kernels() != MI_OK)
    return 1;
  Suite *s = suite_create("select");
  TCase *tc = tcase_create("fused");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, fused_topk_equals_plain_and_reference, 0,
                      (int)(sizeof CASES / sizeof CASES[0]));
  tcase_add_test(tc, non_finite_products_are_refused_by_every_way);
  tcase_add_loop_test(tc, fused_rank_equals_plain_and_reference, 0, 2);
  tcase_add_test(tc, long_inner_dimension_stays_exact);
  tcase_add_test(tc, fused_kernel_is_chosen_where_it_can_be);
  tcase_add_test(tc, parallel_for_runs_each_item_once);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
