/*
 * bench_paths: path enumeration, copying accuracy and behavioural head
 * scores at GPT-2-small size (d_vocab 50257, d_model 768, d_head 64), on a
 * random model, each timed once.
 *
 *   bench_paths [--layers L] [--max-order K]
 *
 * 1. mi_model_top_paths (top 10 by norm) over every path up to order K
 *    (default 2) of an L-layer (default 12) × 12-head model, beside the
 *    floor of its two vocabulary-sized Grams alone (the same call with
 *    max_order 0, where the walk is the direct path only).
 * 2. mi_circuit_copying_accuracy of one head's token OV circuit
 *    (50257 × 50257 in row blocks) against mi_circuit_topk with k = 1 on
 *    the same circuit (the same streamed product, libmi's tiled scan).
 * 3. mi_model_head_report of a 2-layer model with and without the
 *    behavioural scores (16 sequences of 2 × 32 tokens).
 * 4. mi_model_composition_scores (Q, K, V) of the L-layer model, and
 *    mi_model_composition_baseline.
 * 5. On the 2-layer model, 128 tokens: mi_model_forward, and
 *    mi_model_attribute up to order 2 with one token's logit at every
 *    position, and with full logits at the last position.
 *
 * Threads: the online CPUs (mi_set_num_threads), as bench_circuits.
 */
#define _POSIX_C_SOURCE 200809L

#include "bench_util.h"

#include <mi.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { V = 50257, D = 768, DH = 64, HEADS = 12, CTX = 1024 };

/* Attribution callback: takes every part. */
static int count_part(const mi_attribution_part *part, void *user) {
  (void)part;
  (void)user;
  return 0;
}

static mi_model *random_model(size_t layers) {
  mi_config c;
  mi_config_init(&c, sizeof c);
  c.n_layers = layers;
  c.n_heads = HEADS;
  c.d_model = D;
  c.d_head = DH;
  c.d_vocab = V;
  c.n_ctx = CTX;
  c.parts = MI_PART_POS_EMBED;
  return bench_random_model(&c, 1);
}

int main(int argc, char **argv) {
  size_t layers = 12, max_order = 2;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--layers") == 0 && i + 1 < argc)
      layers = (size_t)atoi(argv[++i]);
    else if (strcmp(argv[i], "--max-order") == 0 && i + 1 < argc)
      max_order = (size_t)atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: %s [--layers L] [--max-order K]\n", argv[0]);
      return 2;
    }
  }
  bench_check(mi_blis_select_fast_kernels(), "mi_blis_select_fast_kernels");
  bench_check(mi_set_num_threads((size_t)sysconf(_SC_NPROCESSORS_ONLN)), "threads");
  const char *kernels;
  bench_check(mi_blis_kernel_set(&kernels), "mi_blis_kernel_set");
  printf("BLIS kernels: %s, %zu threads\n", kernels, mi_get_num_threads());

  mi_model *model = random_model(layers);
  size_t count, heads[10 * 64], got;
  double norm[10];
  bench_check(mi_model_path_count(&count, model, max_order), "mi_model_path_count");
  double t0 = bench_now();
  bench_check(mi_model_top_paths(heads, norm, &got, 1, model, 0), "top paths, order 0");
  double t1 = bench_now();
  bench_check(mi_model_top_paths(heads, norm, &got, 10, model, max_order), "top paths");
  double t2 = bench_now();
  printf("top 10 of %zu paths (order <= %zu, %zu x %d heads): %.2f s "
         "(Grams and set-up alone: %.2f s); largest norm %.3g\n",
         count, max_order, layers, HEADS, t2 - t1, t1 - t0, norm[0]);

  size_t pairs = layers * HEADS * layers * HEADS;
  double *scores = malloc(pairs * sizeof *scores), baseline[3];
  const char kinds[] = "QKV";
  for (int k = 0; k < 3; k++) {
    t0 = bench_now();
    bench_check(mi_model_composition_scores(scores, pairs, model, (mi_composition)k),
                "composition scores");
    printf("%c-composition scores, %zu x %d heads: %.2f s\n", kinds[k], layers, HEADS,
           bench_now() - t0);
  }
  t0 = bench_now();
  bench_check(mi_model_composition_baseline(baseline, model), "composition baseline");
  printf("composition baseline: %.2f s (mean %.5f, sd %.5f)\n", bench_now() - t0,
         baseline[0], baseline[1]);
  free(scores);

  mi_circuit *ov;
  bench_check(mi_circuit_ov(&ov, model, 0, 0), "mi_circuit_ov");
  double top1, top5;
  t0 = bench_now();
  bench_check(mi_circuit_copying_accuracy(&top1, &top5, ov), "copying accuracy");
  t1 = bench_now();
  size_t *index = malloc((size_t)V * sizeof *index);
  float *value = malloc((size_t)V * sizeof *value);
  bench_check(mi_circuit_topk(index, value, 1, ov, 1, 0, 0, V), "top-1");
  t2 = bench_now();
  printf("copying accuracy of a %d x %d OV circuit: %.2f s (top-1 per row: %.2f s); "
         "top-1 %.4f, top-5 %.4f\n", V, V, t1 - t0, t2 - t1, top1, top5);
  free(index);
  free(value);
  mi_circuit_free(ov);
  mi_model_free(model);

  model = random_model(2);
  mi_head_report lines[2 * HEADS];
  lines[0].struct_size = sizeof lines[0];
  mi_report_options opt;
  mi_report_options_init(&opt, sizeof opt);
  opt.behaviour_sequences = 0;
  t0 = bench_now();
  bench_check(mi_model_head_report(lines, 2 * HEADS, model, &opt), "report");
  t1 = bench_now();
  bench_check(mi_model_head_report(lines, 2 * HEADS, model, NULL), "report with behaviour");
  t2 = bench_now();
  printf("head report, 2 x %d heads: %.2f s; with behavioural scores (16 x 64 tokens): "
         "%.2f s\n", HEADS, t1 - t0, t2 - t1);

  enum { N = 128 };
  size_t tokens[N], answers[N], last = N - 1;
  for (size_t i = 0; i < N; i++) {
    tokens[i] = (i * 7919) % V;
    answers[i] = (i * 104729) % V;
  }
  float *logits = malloc((size_t)N * V * sizeof *logits);
  t0 = bench_now();
  bench_check(mi_model_forward(logits, V, model, tokens, N, NULL), "forward");
  double forward = bench_now() - t0;
  mi_attribution_options ao;
  mi_attribution_options_init(&ao, sizeof ao);
  ao.max_order = 2;
  ao.logit_tokens = answers;
  size_t parts;
  t0 = bench_now();
  bench_check(mi_model_attribute(&parts, model, tokens, N, &ao, count_part, NULL),
              "attribute, token logits");
  double token_logits = bench_now() - t0;
  mi_attribution_options_init(&ao, sizeof ao);
  ao.max_order = 2;
  ao.positions = &last;
  ao.n_positions = 1;
  ao.flags = MI_ATTRIBUTE_FULL_LOGITS;
  t0 = bench_now();
  bench_check(mi_model_attribute(&parts, model, tokens, N, &ao, count_part, NULL),
              "attribute, full logits");
  double full_logits = bench_now() - t0;
  printf("forward, %d tokens, 2 x %d heads: %.2f s; attribution to order 2 (%zu parts): "
         "a token's logit at all %d positions %.2f s, full logits at one position %.2f s\n",
         N, HEADS, forward, parts, N, token_logits, full_logits);
  free(logits);
  mi_model_free(model);
  return 0;
}
