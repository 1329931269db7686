/*
 * The skip-trigram table (mi_model_skip_trigrams) against the search as
 * libmi did it before issue 12, redone here: every head's two token
 * circuits as dense float32 blocks (mi_circuit_rows, BLIS), each entry
 * z-scored within its row from one-pass double statistics of those
 * entries, each source's best outputs and destinations kept by z, every
 * triple scored min(z_QK, z_OV) and sorted (ties: the earlier triple).
 * The library now takes closed-form statistics and one fused top-k pass a
 * circuit; the tables must be the same entry for entry, on both shipped
 * models and on a random GPT-2-small-shaped head.
 *
 * Tolerance on the z-scores. The reference's entries x are float32
 * products of d_head terms, off the exact product by their rounding, about
 * √d_head · 2^-24 of the terms' scale, which is that of |x| and of the row
 * mean; the library's z-scores are the exact product's, from the factors
 * in double. Over the row's sd that is √d_head · 2^-24 · (|z| + |mean| /
 * sd) or so; the test allows four times that plus the same at z = 1:
 * 4 · √d_head · 2^-24 · (1 + |z| + |mean| / sd), with mean / sd of the row
 * the z-score came from, as the reference measured it. (The random head's
 * biases put its QK rows' means ~70 sds from 0, so the old z-scores there
 * are off by ~1e-5; the shipped models' by ~3e-7.) The picks are compared
 * exactly.
 */
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the old search ------------------------------------------------------------ */

/* A kept entry: the other index, its z and its row's |mean| / sd. */
typedef struct pick {
  size_t index;
  double z, ratio;
} pick;

/* The k best of a line, best first; a strictly larger z goes ahead. */
static void keep_best(pick *line, size_t k, pick p) {
  if (!(p.z > line[k - 1].z))
    return;
  size_t t = k - 1;
  while (t > 0 && p.z > line[t - 1].z) {
    line[t] = line[t - 1];
    t--;
  }
  line[t] = p;
}

/* One-pass mean and 1/sd of a float row in double; false without spread. */
static bool row_stats(const float *row, size_t n, double *mean, double *inv_sd) {
  double s = 0, s2 = 0;
  for (size_t j = 0; j < n; j++) {
    s += row[j];
    s2 += (double)row[j] * row[j];
  }
  *mean = s / (double)n;
  double var = s2 / (double)n - *mean * *mean;
  if (!(var > 0))
    return false;
  *inv_sd = 1 / sqrt(var);
  return true;
}

/*
 * Ranks of one n × n circuit: OV (`qk` false): for each row s, the k best
 * columns o ≠ s; QK: for each column s, the k best rows d ≠ s. Rows come
 * in blocks of dense entries; `best` holds k per source.
 */
static void old_ranks(pick *best, size_t k, const mi_circuit *c, size_t n, bool qk) {
  for (size_t i = 0; i < n * k; i++)
    best[i] = (pick){SIZE_MAX, -INFINITY, 0};
  size_t rows = ((size_t)1 << 22) / n ? ((size_t)1 << 22) / n : 1;
  float *block = malloc(rows * n * sizeof *block);
  ck_assert_ptr_nonnull(block);
  for (size_t i0 = 0; i0 < n; i0 += rows) {
    size_t i1 = i0 + rows < n ? i0 + rows : n;
    TU_OK(mi_circuit_rows(block, n, c, i0, i1));
    for (size_t i = i0; i < i1; i++) {
      const float *row = block + (i - i0) * n;
      double mean, inv_sd;
      if (!row_stats(row, n, &mean, &inv_sd))
        continue;
      for (size_t j = 0; j < n; j++)
        if (j != i) {
          size_t src = qk ? j : i, other = qk ? i : j;
          keep_best(best + src * k, k,
                    (pick){other, (row[j] - mean) * inv_sd, fabs(mean) * inv_sd});
        }
    }
  }
  free(block);
}

typedef struct cand {
  mi_skip_trigram t;
  size_t seq;
  double qk_ratio, ov_ratio; /* |mean| / sd of the rows the z-scores came from */
} cand;

static int by_score(const void *pa, const void *pb) {
  const cand *a = pa, *b = pb;
  if (a->t.score != b->t.score)
    return a->t.score > b->t.score ? -1 : 1;
  return (a->seq > b->seq) - (a->seq < b->seq);
}

/* The old table: the best `cap` triples of every head, into out; the count. */
static size_t old_table(cand *out, size_t cap, const mi_model *model,
                        const mi_skip_trigram_options *opt) {
  mi_config c;
  mi_config_init(&c, sizeof c);
  TU_OK(mi_model_get_config(&c, model));
  size_t n = c.d_vocab, ko = opt->outputs_per_source, kq = opt->destinations_per_source;
  pick *ob = malloc(n * ko * sizeof *ob), *qb = malloc(n * kq * sizeof *qb);
  size_t per_head = n * ko * kq, count = 0;
  cand *all = malloc(c.n_layers * c.n_heads * per_head * sizeof *all);
  ck_assert(ob && qb && all);
  for (size_t l = 0; l < c.n_layers; l++)
    for (size_t h = 0; h < c.n_heads; h++) {
      mi_circuit *ov, *qk;
      TU_OK(mi_circuit_ov(&ov, model, l, h));
      TU_OK(mi_circuit_qk(&qk, model, l, h, MI_EMBED_TOKEN, MI_EMBED_TOKEN, opt->qk_flags));
      old_ranks(ob, ko, ov, n, false);
      old_ranks(qb, kq, qk, n, true);
      mi_circuit_free(ov);
      mi_circuit_free(qk);
      for (size_t s = 0; s < n; s++)
        for (size_t a = 0; a < ko; a++)
          for (size_t b = 0; b < kq; b++) {
            const pick *o = &ob[s * ko + a], *q = &qb[s * kq + b];
            if (o->index == SIZE_MAX || q->index == SIZE_MAX)
              continue;
            mi_skip_trigram t = {sizeof t, l, h, s, q->index, o->index, q->z, o->z, 0};
            t.score = t.qk_z < t.ov_z ? t.qk_z : t.ov_z;
            all[count] = (cand){t, count, q->ratio, o->ratio};
            count++;
          }
    }
  qsort(all, count, sizeof *all, by_score);
  size_t kept = count < cap ? count : cap;
  memcpy(out, all, kept * sizeof *all);
  free(ob);
  free(qb);
  free(all);
  return kept;
}

/* ---- old against new ------------------------------------------------------------- */

/* |got − want| over the tolerance for a z-score from a row `ratio` = |mean| / sd. */
static double z_excess(double got, double want, double ratio, size_t d_head) {
  double tol = 4.0 * sqrt((double)d_head) * 0x1p-24 * (1.0 + fabs(want) + ratio);
  return fabs(got - want) / tol;
}

static void compare_tables(const mi_model *model, size_t cap, unsigned qk_flags, size_t ko,
                           size_t kq, const char *what) {
  mi_config c;
  mi_config_init(&c, sizeof c);
  TU_OK(mi_model_get_config(&c, model));
  mi_skip_trigram_options opt;
  mi_skip_trigram_options_init(&opt, sizeof opt);
  opt.qk_flags = qk_flags;
  opt.outputs_per_source = ko;
  opt.destinations_per_source = kq;
  cand *want = malloc(cap * sizeof *want);
  mi_skip_trigram *got = malloc(cap * sizeof *got);
  ck_assert(want && got);
  size_t n_want = old_table(want, cap, model, &opt), n_got = 0;
  got[0].struct_size = sizeof *got;
  TU_OK(mi_model_skip_trigrams(got, &n_got, cap, model, &opt));
  ck_assert_uint_eq(n_got, n_want);
  double worst = 0, worst_excess = 0;
  for (size_t i = 0; i < n_got; i++) {
    const mi_skip_trigram *g = &got[i], *w = &want[i].t;
    ck_assert_msg(g->layer == w->layer && g->head == w->head && g->src == w->src &&
                      g->dst == w->dst && g->out == w->out,
                  "%s: entry %zu is L%zuH%zu %zu %zu %zu (score %.9g), the old table's "
                  "L%zuH%zu %zu %zu %zu (score %.9g)",
                  what, i, g->layer, g->head, g->src, g->dst, g->out, g->score, w->layer,
                  w->head, w->src, w->dst, w->out, w->score);
    double d = z_excess(g->qk_z, w->qk_z, want[i].qk_ratio, c.d_head);
    double e = z_excess(g->ov_z, w->ov_z, want[i].ov_ratio, c.d_head);
    worst = fmax(worst, fmax(fabs(g->qk_z - w->qk_z), fabs(g->ov_z - w->ov_z)));
    worst_excess = fmax(worst_excess, fmax(d, e));
    ck_assert_msg(d <= 1 && e <= 1, "%s: entry %zu: z %.12g, %.12g vs %.12g, %.12g (rows' "
                  "|mean|/sd %.3g, %.3g)", what, i, g->qk_z, g->ov_z, w->qk_z, w->ov_z,
                  want[i].qk_ratio, want[i].ov_ratio);
    ck_assert(g->score == (g->qk_z < g->ov_z ? g->qk_z : g->ov_z));
  }
  fprintf(stderr, "%s: %zu entries the same, z-scores within %.2g (%.2g of the tolerance)\n",
          what, n_got, worst, worst_excess);
  free(want);
  free(got);
}

static const char *const SHIPPED[] = {"skip-trigram-1l", "induction-2l"};

START_TEST(shipped_models_give_the_old_table) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s/model.safetensors", MI_EXAMPLE_MODELS, SHIPPED[_i]);
  mi_model *model;
  TU_OK(mi_model_load(&model, path, NULL));
  for (unsigned flags = 0; flags < 4; flags++) {
    char what[128];
    snprintf(what, sizeof what, "%s, qk_flags %u", SHIPPED[_i], flags);
    compare_tables(model, 64, flags, 2, 2, what);
  }
  compare_tables(model, 200, MI_QK_BIAS | MI_QK_SCALE, 3, 1, "3 outputs, 1 destination");
  compare_tables(model, 200, MI_QK_BIAS | MI_QK_SCALE, 1, 4, "1 output, 4 destinations");
  mi_model_free(model);
}
END_TEST

/* One head of GPT-2 small's shape (d_vocab 50257, d_model 768, d_head 64), biases. */
START_TEST(gpt2_shaped_head_gives_the_old_table) {
  mi_config c = tu_config(1, 1, 768, 64, 50257, 0, MI_PART_QKV_BIAS);
  mi_model *model = tu_random_model(&c, 12);
  compare_tables(model, 100, MI_QK_BIAS | MI_QK_SCALE, 2, 2, "GPT-2-shaped head");
  mi_model_free(model);
}
END_TEST

/*
 * Tokens whose embedding is zero (no biases): their QK rows are constant,
 * without z-scores, and their OV rows too. They are left out, and the rest
 * is the old table's; the search used to score such a row −∞ in its z
 * factors, which failed the whole search as an overflow.
 */
START_TEST(tokens_without_spread_are_left_out) {
  size_t V = 400, D = 16;
  mi_config c = tu_config(1, 2, D, 8, V, 8, 0);
  mi_model *model = tu_random_model(&c, 31);
  size_t rows, cols;
  double *we = tu_weight(model, MI_W_E, 0, 0, &rows, &cols);
  float *E = malloc(V * D * sizeof *E);
  for (size_t i = 0; i < V * D; i++)
    E[i] = (float)we[i];
  const size_t zero[] = {0, 3, 250, V - 1};
  for (size_t z = 0; z < sizeof zero / sizeof zero[0]; z++)
    memset(E + zero[z] * D, 0, D * sizeof *E);
  TU_OK(mi_model_set_weight(model, MI_W_E, 0, 0, MI_DTYPE_F32, E, D));
  compare_tables(model, 200, MI_QK_BIAS | MI_QK_SCALE, 2, 2, "zero embeddings");
  free(we);
  free(E);
  mi_model_free(model);
}
END_TEST

int main(void) {
  Suite *s = suite_create("trigrams");
  TCase *tc = tcase_create("old table");
  /* The old search scans 2 · 50257² entries in scalar code: about 10 s,
   * minutes under the sanitizers. */
  tcase_set_timeout(tc, 1800);
  tcase_add_loop_test(tc, shipped_models_give_the_old_table, 0, 2);
  tcase_add_test(tc, gpt2_shaped_head_gives_the_old_table);
  tcase_add_test(tc, tokens_without_spread_are_left_out);
  suite_add_tcase(s, tc);
  return tu_run_suite(s);
}
