/*
 * torchfile.c: PyTorch torch.save zip archives holding a state dict.
 */
#include "loader.h"

mi_status mi__torch_load(mi_model **out, const unsigned char *bytes, size_t size,
                         const mi__model_hints *hints, const mi_load_options *options) {
  (void)out, (void)bytes, (void)size, (void)hints, (void)options;
  return mi__fail(MI_ERR_UNSUPPORTED, "this is a zip archive (a torch.save file?), which "
                  "this libmi does not read yet");
}
