/*
 * The shipped example models (examples/models/) through mi_model_forward,
 * against the float64 logits that the training script's own forward pass
 * (PyTorch) wrote into each model's reference_logits.json.
 */
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const models[] = {"skip-trigram-1l", "induction-2l"};

/*
 * Tolerance. The weights are float32 and torch computed in float64 on the
 * same float32 weights, so the difference is libmi's float32 arithmetic:
 * products of inner length <= 128 (d_model) with logits up to ~20 in size,
 * LayerNorm and softmax in double. Float32 rounds each to ~6e-8 relative
 * of its partial sums: about 1e-5 absolute on these logits. Measured: at
 * most 8.5e-6 (the JSON's own float32 torch pass is off by <= 5.5e-6).
 * 1e-4 absolute plus 1e-5 relative leaves ten times that, and is far below
 * a real error (a wrong bias, scale or mask moves logits by > 1e-2).
 */
#define ABS_TOL 1e-4
#define REL_TOL 1e-5

static void check_model(const char *name, unsigned process) {
  char path[4096];
  mi_model *model;
  mi_load_options opt;
  mi_load_options_init(&opt, sizeof opt);
  opt.process = process;
  snprintf(path, sizeof path, "%s/%s/model.safetensors", MI_EXAMPLE_MODELS, name);
  TU_OK(mi_model_load(&model, path, &opt));
  mi_config c;
  mi_config_init(&c, sizeof c);
  TU_OK(mi_model_get_config(&c, model));

  snprintf(path, sizeof path, "%s/%s/reference_logits.json", MI_EXAMPLE_MODELS, name);
  json_error_t err;
  json_t *ref = json_load_file(path, 0, &err);
  ck_assert_msg(ref, "%s: %s", path, err.text);
  json_t *seqs = json_object_get(ref, "sequences");
  ck_assert(json_array_size(seqs) > 0);
  double worst = 0;
  size_t i;
  json_t *seq;
  json_array_foreach(seqs, i, seq) {
    json_t *toks = json_object_get(seq, "tokens"), *logits = json_object_get(seq, "logits");
    size_t n = json_array_size(toks);
    ck_assert(n > 0 && n <= c.n_ctx && json_array_size(logits) == n);
    size_t *tokens = malloc(n * sizeof *tokens);
    float *out = malloc(n * c.d_vocab * sizeof *out);
    ck_assert(tokens && out);
    for (size_t t = 0; t < n; t++)
      tokens[t] = (size_t)json_integer_value(json_array_get(toks, t));
    TU_OK(mi_model_forward(out, c.d_vocab, model, tokens, n, NULL));
    for (size_t t = 0; t < n; t++) {
      json_t *row = json_array_get(logits, t);
      ck_assert_uint_eq(json_array_size(row), c.d_vocab);
      for (size_t j = 0; j < c.d_vocab; j++) {
        double want = json_number_value(json_array_get(row, j));
        double diff = fabs((double)out[t * c.d_vocab + j] - want);
        if (diff > worst)
          worst = diff;
        ck_assert_msg(diff <= ABS_TOL + REL_TOL * fabs(want),
                      "%s sequence %zu position %zu token %zu: %.8g against torch's %.8g", name,
                      i, t, j, (double)out[t * c.d_vocab + j], want);
      }
    }
    free(tokens);
    free(out);
  }
  printf("%s (process %u): largest |libmi - torch| %.3g over %zu sequences\n", name, process,
         worst, json_array_size(seqs));
  json_decref(ref);
  mi_model_free(model);
}

/* As loaded (LayerNorm folded, the default), and with the weights as saved. */
START_TEST(forward_matches_torch) {
  check_model(models[_i / 2], _i % 2 ? 0u : MI_PROCESS_FOLD_LN);
}
END_TEST

static Suite *shipped_suite(void) {
  Suite *s = suite_create("shipped_models");
  TCase *tc = tcase_create("forward");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, forward_matches_torch, 0, 4);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run_suite(shipped_suite()); }
