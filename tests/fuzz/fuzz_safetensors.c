/*
 * fuzz_safetensors.c: libFuzzer harness for the safetensors reader. Each
 * input is a whole file, loaded from memory with the default processing
 * (LayerNorm folding) and again with TransformerLens's, so the weight
 * processing runs on whatever models the fuzzer manages to build, and each
 * model is queried (fuzz_query.h).
 */
#include "fuzz_query.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint8_t empty[1];
  mi_load_options options;
  mi_load_options_init(&options, sizeof options);
  for (int pass = 0; pass < 2; pass++) {
    mi_model *model;
    if (pass == 1)
      options.process = MI_PROCESS_TRANSFORMERLENS;
    /* libFuzzer may pass NULL for an empty input; the reader refuses NULL. */
    if (mi_model_load_memory(&model, size ? data : empty, size, &options) == MI_OK) {
      fuzz_query(model);
      mi_model_free(model);
    }
  }
  return 0;
}
