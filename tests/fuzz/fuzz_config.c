/*
 * fuzz_config.c: libFuzzer harness for the config.json reader. Each input
 * is a config.json's text; what it parses to is checked against a fixed
 * one-layer TransformerLens file (d_vocab 3, d_model 4, 2 heads of 2), so
 * the hint checks of the name maps run on whatever the fuzzer writes.
 * Links the static library: the reader's entry point is internal.
 */
#include "loader.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define F32(shape, begin, end) \
  "\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":[" #begin "," #end "]}"
static const char header[] =
    "{\"embed.W_E\":{" F32("[3,4]", 0, 48) ",\"blocks.0.attn.W_Q\":{" F32("[2,4,2]", 48, 112)
    ",\"blocks.0.attn.W_K\":{" F32("[2,4,2]", 112, 176)
    ",\"blocks.0.attn.W_V\":{" F32("[2,4,2]", 176, 240)
    ",\"blocks.0.attn.W_O\":{" F32("[2,2,4]", 240, 304)
    ",\"unembed.W_U\":{" F32("[4,3]", 304, 352) "}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static unsigned char file[8 + sizeof header + 352];
  size_t n = sizeof header - 1;
  for (int i = 0; i < 8; i++)
    file[i] = (unsigned char)(n >> (8 * i));
  memcpy(file + 8, header, n);
  mi__config config;
  if (mi__config_parse(&config, (const char *)data, size, "config.json") != MI_OK)
    return 0;
  mi_load_options options;
  mi_load_options_init(&options, sizeof options);
  mi_model *model;
  if (mi__load_bytes(&model, file, 8 + n + 352, &config.hints, &options) == MI_OK)
    mi_model_free(model);
  mi__config_free(&config);
  return 0;
}
