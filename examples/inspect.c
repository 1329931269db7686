/*
 * inspect: load a model, print its shape and processing, the top source
 * tokens a destination token attends to in head 0, and every head's copying
 * score.
 *
 *   inspect MODEL [DESTINATION]     (DESTINATION: a token string, default id 0)
 */
#include <mi.h>
#include <stdio.h>

#define K 5

static int fail(const char *what) {
  fprintf(stderr, "inspect: %s: %s\n", what, mi_last_error());
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: inspect MODEL [DESTINATION]\n");
    return 2;
  }
  mi_blis_select_fast_kernels(); /* before any BLIS work */

  mi_model *model;
  if (mi_model_load(&model, argv[1], NULL) != MI_OK) /* folds LayerNorm */
    return fail("loading the model");
  mi_config c;
  mi_config_init(&c, sizeof c);
  mi_model_get_config(&c, model);
  printf("%zu layers x %zu heads, d_model %zu, d_head %zu, d_vocab %zu, n_ctx %zu\n",
         c.n_layers, c.n_heads, c.d_model, c.d_head, c.d_vocab, c.n_ctx);
  printf("processing: %s\n",
         mi_model_processing(model) & MI_PROCESS_FOLD_LN ? "LayerNorm folded" : "none");

  /* The vocabulary sits beside the model in the shipped examples. */
  char vocab[4096];
  snprintf(vocab, sizeof vocab, "%s", argv[1]);
  char *slash = vocab;
  for (char *p = vocab; *p; p++)
    if (*p == '/')
      slash = p + 1;
  snprintf(slash, sizeof vocab - (size_t)(slash - vocab), "vocab.txt");
  int have_vocab = mi_model_load_vocab(model, vocab) == MI_OK;

  size_t dst = 0;
  if (argc > 2 && mi_model_token_id(&dst, model, argv[2]) != MI_OK) {
    fail("looking up the destination token");
    mi_model_free(model);
    return 1;
  }

  /* Head 0's token QK circuit, with the biases attention adds: row = destination. */
  mi_circuit *qk;
  if (mi_circuit_qk(&qk, model, 0, 0, MI_EMBED_TOKEN, MI_EMBED_TOKEN,
                    MI_QK_BIAS | MI_QK_SCALE) != MI_OK) {
    mi_model_free(model);
    return fail("building the QK circuit");
  }
  size_t src[K];
  float score[K];
  if (mi_circuit_topk(src, score, K, qk, K, 0, dst, dst + 1) != MI_OK) {
    mi_circuit_free(qk);
    mi_model_free(model);
    return fail("top-k");
  }
  const char *s;
  printf("head 0: top %d sources for destination %s:", K,
         have_vocab && mi_model_token_str(&s, model, dst) == MI_OK ? s : "#0");
  for (size_t t = 0; t < K; t++) {
    if (have_vocab && mi_model_token_str(&s, model, src[t]) == MI_OK)
      printf(" %s (%.2f)", s, score[t]);
    else
      printf(" #%zu (%.2f)", src[t], score[t]);
  }
  printf("\n");
  mi_circuit_free(qk);

  /* Copying: eigenvalues of each head's OV circuit W_E W_V W_O W_U. */
  for (size_t l = 0; l < c.n_layers; l++)
    for (size_t h = 0; h < c.n_heads; h++) {
      mi_circuit *ov;
      mi_eigen_summary e = {.struct_size = sizeof e};
      if (mi_circuit_ov(&ov, model, l, h) != MI_OK ||
          mi_circuit_eigen_summary(&e, ov) != MI_OK) {
        mi_circuit_free(ov);
        mi_model_free(model);
        return fail("the OV eigenvalues");
      }
      printf("L%zuH%zu copying score %.4f\n", l, h, e.copying_score);
      mi_circuit_free(ov);
    }
  mi_model_free(model);
  return 0;
}
