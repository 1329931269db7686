/* mi compose: Q/K/V-composition scores of head pairs, against chance. */
#include "cli.h"
#include "cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char description[] =
    "Composition scores of every head with every head of a later layer\n"
    "(Elhage et al. 2021; TransformerLens's all_composition_scores):\n"
    "  Q: |W_OV1 W_QK2|_F, K: |W_OV1 W_QK2^T|_F, V: |W_OV1 W_OV2|_F, each over\n"
    "  |W_OV1|_F |W_QK2 or W_OV2|_F; next to chance: the mean score of random\n"
    "  matrices of the same shapes, its standard deviation, and z = (score - mean) / sd.\n";

int cmd_compose(int argc, char **argv) {
  common c = {0};
  const char *model_arg = NULL, *kind_a = NULL, *top_a = NULL;
  const opt_spec spec[] = {
      OPT_MODEL(&model_arg),
      {OPT_VALUE, "--kind", "Q|K|V", &kind_a, "one kind (default: all three)", 0},
      {OPT_VALUE, "--top", "N", &top_a, "strongest pairs to list per kind (default 10)", 0},
      {0}};
  const cmd_help help = {"compose", spec, description};
  opt_parse(&c, &help, argc, argv);
  static const char names[] = "QKV";
  static const mi_composition kinds[] = {MI_COMPOSE_Q, MI_COMPOSE_K, MI_COMPOSE_V};
  size_t k0 = 0, k1 = 3;
  if (kind_a) {
    const char *p = kind_a[0] ? strchr(names, kind_a[0] & ~0x20) : NULL;
    if (!p || !*p || kind_a[1]) /* strchr finds the terminator too */
      die_usage("--kind must be Q, K or V, not '%s'", kind_a);
    k0 = (size_t)(p - names), k1 = k0 + 1;
  }
  size_t top = top_a ? parse_size(top_a, "--top") : 10;
  loaded m;
  load(&m, &c, model_arg);
  size_t L = m.cfg.n_layers, H = m.cfg.n_heads, nh = L * H;
  double base[3];
  LIB(mi_model_composition_baseline(base, m.model), "computing the chance baseline");
  /* The kinds wanted in one call: they share the earlier heads' work. */
  double *scores = xcalloc((k1 - k0) * nh * nh, sizeof *scores);
  size_t *order = xcalloc(nh * nh, sizeof *order);
  json_t *jkinds = c.json ? json_object() : NULL;
  if (!c.json) {
    print_model(&m);
    printf("\nchance (random matrices of these shapes): mean %.4f, sd %.4f\n", base[0], base[1]);
    if (L < 2)
      printf("one layer: no head has a later head to compose with\n");
  }
  LIB(mi_model_composition_tables(scores, (k1 - k0) * nh * nh, m.model, kinds + k0, k1 - k0),
      "computing composition scores");
  for (size_t k = k0; k < k1; k++) {
    const double *score = scores + (k - k0) * nh * nh;
    /* Pairs (earlier, later), strongest first. */
    size_t np = 0;
    for (size_t a = 0; a < nh; a++)
      for (size_t b = 0; b < nh; b++)
        if (b / H > a / H) {
          size_t i = np++;
          while (i > 0 && score[a * nh + b] > score[order[i - 1]]) {
            order[i] = order[i - 1];
            i--;
          }
          order[i] = a * nh + b;
        }
    size_t shown = top < np ? top : np;
    if (c.json) {
      json_t *pairs = json_array(), *matrix = json_array();
      for (size_t i = 0; i < np; i++) {
        size_t a = order[i] / nh, b = order[i] % nh;
        append(
            (i < shown ? pairs : matrix),
            json_pack("{s:i, s:i, s:i, s:i, s:f, s:f}", "layer1", (json_int_t)(a / H), "head1",
                      (json_int_t)(a % H), "layer2", (json_int_t)(b / H), "head2",
                      (json_int_t)(b % H), "score", score[order[i]], "z",
                      base[1] > 0 ? (score[order[i]] - base[0]) / base[1] : 0.0));
      }
      /* Every pair, strongest first: the shown ones then the rest. */
      json_array_extend(pairs, matrix);
      json_decref(matrix);
      char key[2] = {names[k], '\0'};
      json_object_set_new(jkinds, key, json_pack("{s:o, s:i}", "pairs", pairs, "top", (json_int_t)shown));
    } else if (L >= 2) {
      printf("\n%c-composition, strongest %zu of %zu pairs:\n", names[k], shown, np);
      for (size_t i = 0; i < shown; i++) {
        size_t a = order[i] / nh, b = order[i] % nh;
        printf("  L%zuH%zu -> L%zuH%zu  %.4f  (%.1f sd above chance)\n", a / H, a % H, b / H,
               b % H, score[order[i]], base[1] > 0 ? (score[order[i]] - base[0]) / base[1] : 0.0);
      }
    }
  }
  if (c.json)
    dump(json_pack("{s:o, s:{s:f, s:f, s:f}, s:o}", "model", model_json(&m), "baseline", "mean",
                   base[0], "sd", base[1], "sem", base[2], "kinds", jkinds));
  free(scores);
  free(order);
  unload(&m);
  return 0;
}
