/*
 * memory_probe: loads a model and asks it what the library's heavy calls
 * compute (eigenvalues, top-k, a norm, a forward pass), printing each
 * call's status. check_memory_sweep.sh runs it under tightening `ulimit -v`
 * limits: every step must end with exit status 0 and statuses printed,
 * never a signal (BLIS's abort on a failed pool allocation was one).
 */
#include <mi.h>

#include <stdio.h>

static int report(const char *what, mi_status status) {
  printf("%s %d\n", what, (int)status);
  return status == MI_OK;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL\n", argv[0]);
    return 2;
  }
  mi_model *model = NULL;
  if (!report("load", mi_model_load(&model, argv[1], NULL)))
    return 0;
  mi_circuit *ov = NULL;
  if (report("ov", mi_circuit_ov(&ov, model, 0, 0))) {
    double re[4], im[4], norm;
    size_t index[64 * 5];
    float value[64 * 5];
    report("eigenvalues", mi_circuit_eigenvalues(re, im, 4, ov));
    report("topk", mi_circuit_topk(index, value, 5, ov, 5, 0, 0, 64));
    report("norm", mi_circuit_frobenius_norm(&norm, ov));
  }
  mi_circuit_free(ov);
  mi_config c;
  mi_config_init(&c, sizeof c);
  mi_model_get_config(&c, model);
  static float logits[4 * 4096];
  size_t tokens[4] = {1, 2, 3, 4};
  if (c.d_vocab <= 4096)
    report("forward", mi_model_forward(logits, c.d_vocab, model, tokens, 4, NULL));
  mi_model_free(model);
  return 0;
}
