/*
 * skip_trigrams: look for skip-trigrams "src ... dst -> out" in a model's
 * heads. A head carries one when, in its token QK circuit (with the query
 * and key biases, as attention scores it), the destination ranks the source
 * among its top keys, and in its token OV circuit the source ranks the
 * output among its top logits.
 *
 *   skip_trigrams MODEL SRC DST OUT [SRC DST OUT ...]
 *
 * For each triple it prints the source's rank in the destination's QK row
 * and the output's rank in the source's OV row for every head (0 = the
 * largest), and says which head has both in its top 5.
 */
#include <mi.h>
#include <stdio.h>
#include <stdlib.h>

#define TOP 5

/* The number of entries of row i of the circuit above entry (i, j): its rank. */
static mi_status rank_in_row(size_t *out, const mi_circuit *circuit, size_t i, size_t j,
                             float *row, size_t n) {
  mi_status s = mi_circuit_rows(row, n, circuit, i, i + 1);
  if (s != MI_OK)
    return s;
  *out = 0;
  for (size_t k = 0; k < n; k++)
    *out += row[k] > row[j];
  return MI_OK;
}

int main(int argc, char **argv) {
  if (argc < 5 || (argc - 2) % 3 != 0) {
    fprintf(stderr, "usage: skip_trigrams MODEL SRC DST OUT [SRC DST OUT ...]\n");
    return 2;
  }
  mi_blis_select_fast_kernels();
  mi_model *model = NULL;
  mi_config c;
  mi_config_init(&c, sizeof c);
  char vocab[4096];
  snprintf(vocab, sizeof vocab, "%s", argv[1]);
  char *slash = vocab;
  for (char *p = vocab; *p; p++)
    if (*p == '/')
      slash = p + 1;
  snprintf(slash, sizeof vocab - (size_t)(slash - vocab), "vocab.txt");
  if (mi_model_load(&model, argv[1], NULL) != MI_OK || mi_model_get_config(&c, model) != MI_OK ||
      mi_model_load_vocab(model, vocab) != MI_OK) {
    fprintf(stderr, "skip_trigrams: %s\n", mi_last_error());
    mi_model_free(model);
    return 1;
  }

  size_t nh = c.n_layers * c.n_heads, n = c.d_vocab, ntri = (size_t)(argc - 2) / 3;
  mi_circuit **qk = calloc(nh, sizeof *qk), **ov = calloc(nh, sizeof *ov);
  float *row = malloc(n * sizeof *row);
  size_t *qk_rank = malloc(nh * sizeof *qk_rank), *ov_rank = malloc(nh * sizeof *ov_rank);
  int status = 1;
  if (!qk || !ov || !row || !qk_rank || !ov_rank)
    goto done;
  for (size_t i = 0; i < nh; i++)
    if (mi_circuit_qk(&qk[i], model, i / c.n_heads, i % c.n_heads, MI_EMBED_TOKEN,
                      MI_EMBED_TOKEN, MI_QK_BIAS | MI_QK_SCALE) != MI_OK ||
        mi_circuit_ov(&ov[i], model, i / c.n_heads, i % c.n_heads) != MI_OK)
      goto done;

  size_t found = 0;
  for (size_t t = 0; t < ntri; t++) {
    const char *const *w = (const char *const *)argv + 2 + 3 * t;
    size_t src, dst, out;
    if (mi_model_token_id(&src, model, w[0]) != MI_OK ||
        mi_model_token_id(&dst, model, w[1]) != MI_OK ||
        mi_model_token_id(&out, model, w[2]) != MI_OK)
      goto done;
    size_t best = 0;
    for (size_t i = 0; i < nh; i++) {
      if (rank_in_row(&qk_rank[i], qk[i], dst, src, row, n) != MI_OK ||
          rank_in_row(&ov_rank[i], ov[i], src, out, row, n) != MI_OK)
        goto done;
      size_t worst = qk_rank[i] > ov_rank[i] ? qk_rank[i] : ov_rank[i];
      size_t worst_best = qk_rank[best] > ov_rank[best] ? qk_rank[best] : ov_rank[best];
      if (worst < worst_best)
        best = i;
    }
    printf("%s ... %s -> %s  QK ranks", w[0], w[1], w[2]);
    for (size_t i = 0; i < nh; i++)
      printf(" %zu", qk_rank[i]);
    printf("  OV ranks");
    for (size_t i = 0; i < nh; i++)
      printf(" %zu", ov_rank[i]);
    if (qk_rank[best] < TOP && ov_rank[best] < TOP) {
      printf("  found in L%zuH%zu\n", best / c.n_heads, best % c.n_heads);
      found++;
    } else {
      printf("  not in one head's top %d\n", TOP);
    }
  }
  printf("found %zu of %zu skip-trigrams in one head's top %d (QK with biases, and OV)\n", found,
         ntri, TOP);
  status = 0;
done:
  if (status)
    fprintf(stderr, "skip_trigrams: %s\n", mi_last_error());
  for (size_t i = 0; qk && ov && i < nh; i++) {
    mi_circuit_free(qk[i]);
    mi_circuit_free(ov[i]);
  }
  free(qk);
  free(ov);
  free(row);
  free(qk_rank);
  free(ov_rank);
  mi_model_free(model);
  return status;
}
