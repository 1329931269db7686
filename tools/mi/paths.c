/* mi paths: paths through the heads, ranked by the Frobenius norm of their OV product. */
#include "cli.h"
#include "cmd.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static const char description[] =
    "Paths from the embedding through at most N heads (default: every layer) to\n"
    "the unembedding, ranked by the Frobenius norm of their OV product\n"
    "W_E W_V1 W_O1 ... W_Vk W_Ok W_U (order 0: the direct path W_E W_U).\n";

int cmd_paths(int argc, char **argv) {
  common c = {0};
  const char *model_arg = NULL, *order_a = NULL, *top_a = NULL;
  const opt_spec spec[] = {
      OPT_MODEL(&model_arg),
      {OPT_VALUE, "--order", "N", &order_a, "longest path, in heads (default: n_layers)", 0},
      {OPT_VALUE, "--top", "N", &top_a, "paths to show (default 10)", 0},
      {0}};
  const cmd_help help = {"paths", spec, description};
  opt_parse(&c, &help, argc, argv);
  size_t top = top_a ? parse_size(top_a, "--top") : 10;
  if (top == 0)
    die_usage("--top must be at least 1");
  loaded m;
  load(&m, &c, model_arg);
  size_t L = m.cfg.n_layers;
  size_t order = order_a ? parse_size(order_a, "--order") : L;
  size_t total;
  LIB(mi_model_path_count(&total, m.model, order), "counting paths of order <= %zu", order);
  size_t *heads = xcalloc(top * (L ? L : 1), sizeof *heads);
  double *norm = xcalloc(top, sizeof *norm);
  size_t count;
  LIB(mi_model_top_paths(heads, norm, &count, top, m.model, order), "ranking paths of order <= %zu",
      order);
  if (c.json) {
    json_t *arr = json_array();
    for (size_t i = 0; i < count; i++) {
      json_t *hs = json_array();
      for (size_t l = 0; l < L; l++)
        if (heads[i * L + l] != SIZE_MAX)
          append(hs, json_pack("{s:i, s:i}", "layer", (json_int_t)l, "head",
                                              (json_int_t)heads[i * L + l]));
      append(arr, json_pack("{s:i, s:o, s:f}", "order", (json_int_t)json_array_size(hs),
                                           "heads", hs, "norm", norm[i]));
    }
    dump(json_pack("{s:o, s:i, s:i, s:o}", "model", model_json(&m), "max_order", (json_int_t)order,
                   "path_count", (json_int_t)total, "paths", arr));
  } else {
    print_model(&m);
    printf("\n%zu of %zu paths of order <= %zu, by Frobenius norm of W_E (W_V W_O)... W_U:\n", count,
           total, order);
    for (size_t i = 0; i < count; i++) {
      printf("  %3zu  %12.4g  ", i + 1, norm[i]);
      size_t k = 0;
      for (size_t l = 0; l < L; l++)
        if (heads[i * L + l] != SIZE_MAX)
          printf("%sL%zuH%zu", k++ ? " -> " : "", l, heads[i * L + l]);
      printf("%s\n", k ? "" : "direct (W_E W_U)");
    }
  }
  free(heads);
  free(norm);
  unload(&m);
  return 0;
}
