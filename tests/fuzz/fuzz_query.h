/*
 * fuzz_query.h: what the model harnesses ask of every model they manage to
 * load, so that fuzzing reaches the queries too (issue 10: a non-finite
 * weight once corrupted the heap inside LAPACK). A circuit of head (0, 0)
 * gives eigenvalues, a norm and top-k, and the model one forward step; any
 * status is fine, a crash or a MI_OK with a non-finite number is not.
 */
#ifndef MI_FUZZ_QUERY_H
#define MI_FUZZ_QUERY_H

#include <mi.h>

#include <math.h>
#include <stdlib.h>

static void fuzz_query(const mi_model *model) {
  mi_config c;
  mi_config_init(&c, sizeof c);
  if (mi_model_get_config(&c, model) != MI_OK)
    __builtin_trap();
  /* Bounded work: large fuzzed shapes are read, not multiplied out. */
  if (c.d_vocab > 4096 || c.d_model > 256)
    return;
  mi_circuit *ov = NULL;
  if (mi_circuit_ov(&ov, model, 0, 0) == MI_OK) {
    size_t rank, k = c.d_vocab < 3 ? c.d_vocab : 3, rows = c.d_vocab < 8 ? c.d_vocab : 8;
    mi_circuit_shape(NULL, NULL, &rank, ov);
    size_t count = rank < c.d_vocab ? rank : c.d_vocab;
    double *re = malloc(2 * count * sizeof *re), norm;
    if (re != NULL && mi_circuit_eigenvalues(re, re + count, count, ov) == MI_OK)
      for (size_t i = 0; i < 2 * count; i++)
        if (!isfinite(re[i]))
          __builtin_trap();
    free(re);
    if (mi_circuit_frobenius_norm(&norm, ov) == MI_OK && !isfinite(norm))
      __builtin_trap();
    size_t index[8 * 3];
    float value[8 * 3];
    if (mi_circuit_topk(index, value, k, ov, k, 0, 0, rows) == MI_OK)
      for (size_t i = 0; i < rows * k; i++)
        if (!isfinite(value[i]) || index[i] >= c.d_vocab)
          __builtin_trap();
  }
  mi_circuit_free(ov);
  float *logits = malloc(c.d_vocab * sizeof *logits);
  size_t token = 0;
  if (logits != NULL && mi_model_forward(logits, c.d_vocab, model, &token, 1, NULL) == MI_OK)
    for (size_t i = 0; i < c.d_vocab; i++)
      if (!isfinite(logits[i]))
        __builtin_trap();
  free(logits);
}

#endif
