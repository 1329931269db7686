/* mi topk: the largest entries of a circuit's rows or columns, streamed. */
#include "cli.h"
#include "cmd.h"

#include <stdio.h>
#include <string.h>

static const char description[] =
    "The K largest entries of each row of a circuit (with --columns: of each\n"
    "column), streamed without forming the matrix:\n"
    "  qk      head (L, H)'s token QK circuit: row = destination (query) token,\n"
    "          column = source (key) token; with b_Q, b_K and 1/sqrt(d_head)\n"
    "  ov      head (L, H)'s token OV circuit: row = source token, column = output logit\n"
    "  direct  W_E W_U: row = input token, column = output logit\n";

int cmd_topk(int argc, char **argv) {
  common c = {0};
  const char *model_arg = NULL, *layer_a = NULL, *head_a = NULL, *circ_a = NULL,
             *token_a = NULL, *rows_a = NULL, *k_a = NULL;
  int columns = 0, smallest = 0, no_qk_bias = 0;
  const opt_spec spec[] = {
      OPT_MODEL(&model_arg),
      {OPT_VALUE, "--circuit", "qk|ov|direct", &circ_a, "which circuit (required)", OPT_REQUIRED},
      {OPT_VALUE, "--layer", "L", &layer_a, "the head's layer (qk, ov)", 0},
      {OPT_VALUE, "--head", "H", &head_a, "the head (qk, ov)", 0},
      {OPT_VALUE, "--token", "T", &token_a, "one line: the token T (its string, with or\nwithout its leading space, text of one token,\nor an id)", 0},
      {OPT_VALUE, "--rows", "I0:I1", &rows_a, "lines I0 .. I1-1 (default: all)", 0},
      {OPT_VALUE, "-k", "K", &k_a, "entries a line (default 10)", 0},
      {OPT_SWITCH, "--columns", NULL, &columns, "best rows of each column instead", 0},
      {OPT_SWITCH, "--smallest", NULL, &smallest, "smallest entries instead", 0},
      {OPT_SWITCH, "--no-qk-bias", NULL, &no_qk_bias, "the QK circuit without b_Q and b_K", 0},
      {0}};
  const cmd_help help = {"topk", spec, description};
  opt_parse(&c, &help, argc, argv);
  if (!circ_a)
    die_usage("--circuit qk|ov|direct is required");
  int kind = !strcmp(circ_a, "qk") ? 0 : !strcmp(circ_a, "ov") ? 1 : !strcmp(circ_a, "direct") ? 2 : -1;
  if (kind < 0)
    die_usage("--circuit must be qk, ov or direct, not '%s'", circ_a);
  if (kind != 2 && (!layer_a || !head_a))
    die_usage("--circuit %s needs --layer and --head", circ_a);
  if (token_a && rows_a)
    die_usage("give --token or --rows, not both");
  size_t k = k_a ? parse_size(k_a, "-k") : 10;
  size_t layer = layer_a ? parse_size(layer_a, "--layer") : 0;
  size_t head = head_a ? parse_size(head_a, "--head") : 0;
  size_t i0 = 0, i1 = 0;
  int have_range = 0;
  if (rows_a) {
    const char *colon = strchr(rows_a, ':');
    if (!colon)
      die_usage("--rows takes I0:I1, not '%s'", rows_a);
    char first[32];
    size_t len = (size_t)(colon - rows_a);
    if (len >= sizeof first)
      die_usage("--rows takes I0:I1, not '%s'", rows_a);
    memcpy(first, rows_a, len);
    first[len] = '\0';
    i0 = parse_size(first, "--rows start");
    i1 = parse_size(colon + 1, "--rows end");
    if (i0 >= i1)
      die_usage("--rows %s is empty: the end must be past the start", rows_a);
    have_range = 1;
  }

  loaded m;
  load(&m, &c, model_arg);
  if (kind != 2 && layer >= m.cfg.n_layers)
    die_usage("--layer %zu: the model has %zu layer(s)", layer, m.cfg.n_layers);
  if (kind != 2 && head >= m.cfg.n_heads)
    die_usage("--head %zu: the model has %zu heads a layer", head, m.cfg.n_heads);
  if (token_a) {
    i0 = parse_token(&m, token_a, "--token");
    i1 = i0 + 1;
    have_range = 1;
  }

  mi_circuit *circ;
  unsigned qk_flags = (no_qk_bias ? 0u : MI_QK_BIAS) | MI_QK_SCALE;
  if (kind == 0)
    LIB(mi_circuit_qk(&circ, m.model, layer, head, MI_EMBED_TOKEN, MI_EMBED_TOKEN, qk_flags),
        "building the QK circuit of L%zuH%zu", layer, head);
  else if (kind == 1)
    LIB(mi_circuit_ov(&circ, m.model, layer, head), "building the OV circuit of L%zuH%zu", layer,
        head);
  else
    LIB(mi_circuit_direct(&circ, m.model), "building the direct circuit");
  size_t rows, cols;
  LIB(mi_circuit_shape(&rows, &cols, NULL, circ), "reading the circuit's shape");
  size_t lines = columns ? cols : rows, line_len = columns ? rows : cols;
  if (!have_range)
    i0 = 0, i1 = lines;
  if (i1 > lines)
    die_usage("lines %zu..%zu: the circuit has %zu %s", i0, i1, lines, columns ? "columns" : "rows");
  if (k == 0 || k > line_len)
    die_usage("-k %zu: must be 1 .. %zu", k, line_len);
  size_t n = i1 - i0;
  size_t *idx = xcalloc(n * k, sizeof *idx);
  float *val = xcalloc(n * k, sizeof *val);
  unsigned flags = (columns ? MI_TOPK_COLUMNS : 0u) | (smallest ? MI_TOPK_SMALLEST : 0u);
  LIB(mi_circuit_topk(idx, val, k, circ, k, flags, i0, i1), "top-%zu of lines %zu..%zu", k, i0, i1);

  const char *line_name = kind == 0 ? (columns ? "source" : "destination")
                                    : (columns ? "output" : (kind == 1 ? "source" : "input"));
  if (c.json) {
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
      json_t *entries = json_array();
      for (size_t t = 0; t < k; t++)
        append(entries, json_pack("{s:i, s:o, s:f}", "index",
                                                 (json_int_t)idx[i * k + t], "token",
                                                 tok_json(&m, idx[i * k + t]), "value",
                                                 (double)val[i * k + t]));
      append(arr, json_pack("{s:i, s:o, s:o}", "line", (json_int_t)(i0 + i),
                                           "token", tok_json(&m, i0 + i), "top", entries));
    }
    dump(json_pack("{s:o, s:s, s:o, s:o, s:b, s:b, s:b, s:i, s:o}", "model", model_json(&m),
                   "circuit", circ_a, "layer", kind == 2 ? json_null() : json_integer((json_int_t)layer),
                   "head", kind == 2 ? json_null() : json_integer((json_int_t)head), "columns",
                   columns, "smallest", smallest, "qk_bias", kind == 0 && !no_qk_bias, "k",
                   (json_int_t)k, "lines", arr));
  } else {
    if (kind == 2)
      printf("direct circuit W_E W_U");
    else
      printf("%s circuit of L%zuH%zu%s", kind == 0 ? "QK" : "OV", layer, head,
             kind == 0 ? (no_qk_bias ? " (no biases, scaled)" : " (with b_Q, b_K, scaled)") : "");
    printf(": %s %zu of each %s\n", smallest ? "smallest" : "largest", k, columns ? "column" : "row");
    for (size_t i = 0; i < n; i++) {
      char b[32];
      printf("%s %s:", line_name, tok(&m, i0 + i, b));
      for (size_t t = 0; t < k; t++)
        printf(" %s (%.3g)", tok(&m, idx[i * k + t], b), (double)val[i * k + t]);
      printf("\n");
    }
  }
  free(idx);
  free(val);
  mi_circuit_free(circ);
  unload(&m);
  return 0;
}
