/*
 * induction: find the induction circuit of a 2-layer model.
 *
 *   induction MODEL
 *
 * 1. The previous-token head: the layer-0 head that puts the most attention
 *    on the previous token, on the model's own patterns over repeated random
 *    tokens (mi_model_head_report's behavioural scores).
 * 2. The induction head: the layer-1 head with the highest K-composition
 *    with it (it builds its keys from what the previous-token head wrote),
 *    against the chance level of random matrices of the same shapes.
 * 3. Its OV copying score, which must be positive: it copies the token it
 *    attends to.
 * Exits 0 when all three hold, 3 when the circuit is not there.
 */
#include <mi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: induction MODEL\n");
    return 2;
  }
  mi_blis_select_fast_kernels();
  mi_model *model = NULL;
  mi_config c;
  mi_config_init(&c, sizeof c);
  mi_head_report *rep = NULL;
  double *k_comp = NULL, base[3];
  int status = 1;
  if (mi_model_load(&model, argv[1], NULL) != MI_OK || mi_model_get_config(&c, model) != MI_OK)
    goto done;
  if (c.n_layers < 2) {
    fprintf(stderr, "induction: the model has %zu layer(s); an induction circuit needs 2\n",
            c.n_layers);
    status = 3;
    goto done;
  }
  size_t H = c.n_heads, nh = c.n_layers * H;
  rep = calloc(nh, sizeof *rep);
  k_comp = calloc(nh * nh, sizeof *k_comp);
  if (!rep || !k_comp)
    goto done;
  rep[0].struct_size = sizeof *rep;
  if (mi_model_head_report(rep, nh, model, NULL) != MI_OK ||
      mi_model_composition_scores(k_comp, nh * nh, model, MI_COMPOSE_K) != MI_OK ||
      mi_model_composition_baseline(base, model) != MI_OK)
    goto done;

  size_t prev = 0;
  for (size_t h = 1; h < H; h++)
    if (rep[h].prev_token_attention > rep[prev].prev_token_attention)
      prev = h;
  printf("previous-token head: L0H%zu (%.3f of its attention on the previous token)\n", prev,
         rep[prev].prev_token_attention);

  size_t ind = 0; /* head of layer 1, line H + ind */
  for (size_t h = 1; h < H; h++)
    if (k_comp[prev * nh + H + h] > k_comp[prev * nh + H + ind])
      ind = h;
  double score = k_comp[prev * nh + H + ind], z = (score - base[0]) / base[1];
  const mi_head_report *r = &rep[H + ind];
  printf("induction head: L1H%zu, K-composition %.4f with L0H%zu (chance %.4f +- %.4f: %.1f sd "
         "above)\n",
         ind, score, prev, base[0], base[1], z);
  printf("L1H%zu OV copying score %.4f, induction attention %.3f\n", ind, r->ov.copying_score,
         r->induction_attention);

  /* Found: most attention on the previous token, K-composition clearly above
   * chance (3 sd), and a head that copies. */
  int found = rep[prev].prev_token_attention > 0.5 && z > 3 && r->ov.copying_score > 0;
  printf("%s\n", found ? "induction circuit found" : "no induction circuit");
  status = found ? 0 : 3;
done:
  if (status == 1)
    fprintf(stderr, "induction: %s\n", mi_last_error());
  free(rep);
  free(k_comp);
  mi_model_free(model);
  return status;
}
