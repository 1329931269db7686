/*
 * libFuzzer harness for the vocabulary reader (all three formats): any input
 * must give a documented status, and a loaded vocabulary must answer every
 * id consistently: a NUL-terminated string whose reverse lookup gives an id
 * with the same string.
 */
#include <mi.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Small, so that ids in fuzzed files often fall in range. */
enum { D_VOCAB = 64 };

static void check_consistent(const mi_model *model) {
  for (size_t id = 0; id < D_VOCAB; id++) {
    const char *s;
    size_t len;
    mi_status status = mi_model_token_bytes(&s, &len, model, id);
    if (status == MI_ERR_INDEX)
      continue; /* an id without a string */
    if (status != MI_OK || s[len] != '\0')
      __builtin_trap();
    if (strlen(s) != len)
      continue; /* holds a NUL: not reachable through a C string */
    size_t back;
    const char *t;
    size_t t_len;
    if (mi_model_token_id(&back, model, s) != MI_OK ||
        mi_model_token_bytes(&t, &t_len, model, back) != MI_OK ||
        (back != id && (t_len != len || memcmp(t, s, len) != 0 || back > id)))
      __builtin_trap();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static mi_model *model; /* one model, so loads also replace vocabularies */
  if (model == NULL) {
    mi_config config;
    mi_config_init(&config, sizeof config);
    config.n_layers = config.n_heads = config.d_model = config.d_head = 1;
    config.d_vocab = D_VOCAB;
    if (mi_model_create(&model, &config) != MI_OK)
      __builtin_trap();
  }
  mi_status status = mi_model_load_vocab_memory(model, data, size);
  if (status == MI_OK)
    check_consistent(model);
  else if (status != MI_ERR_FORMAT && status != MI_ERR_INDEX && status != MI_ERR_UNSUPPORTED &&
           !(status == MI_ERR_INVALID_ARGUMENT && data == NULL))
    __builtin_trap();
  else if (mi_last_error()[0] == '\0')
    __builtin_trap(); /* every failure says why */
  return 0;
}
