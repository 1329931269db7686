/*
 * fuzz_torch.c: libFuzzer harness for the torch.save reader (zip, pickle,
 * tensor views). Each input is a whole file, loaded from memory three ways:
 * the defaults, TransformerLens's processing, and with n_heads = 2 so that
 * GPT-2 archives (which carry no head count) reach the name map too.
 */
#include "fuzz_query.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint8_t empty[1];
  for (int pass = 0; pass < 3; pass++) {
    mi_load_options options;
    mi_load_options_init(&options, sizeof options);
    if (pass == 1)
      options.process = MI_PROCESS_TRANSFORMERLENS;
    if (pass == 2)
      options.n_heads = 2;
    mi_model *model;
    /* libFuzzer may pass NULL for an empty input; the reader refuses NULL. */
    if (mi_model_load_memory(&model, size ? data : empty, size, &options) == MI_OK) {
      fuzz_query(model);
      mi_model_free(model);
    }
  }
  return 0;
}
