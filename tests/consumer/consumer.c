/*
 * An out-of-tree program using an installed libmi: creates a model from
 * memory, sets one weight, prints its config. tests/check_install.sh builds
 * it with find_package(mi) and with pkg-config, and compares the output.
 */
#include <mi.h>

#include <stdio.h>

int main(void) {
  mi_config config;
  mi_config_init(&config, sizeof config);
  config.n_layers = 2;
  config.n_heads = 4;
  config.n_kv_heads = 2;
  config.d_model = 16;
  config.d_head = 4;
  config.d_vocab = 10;
  config.n_ctx = 8;
  config.parts = MI_PART_POS_EMBED | MI_PART_LN;
  mi_model *model;
  mi_status status = mi_model_create(&model, &config);
  if (status != MI_OK) {
    fprintf(stderr, "mi_model_create: %s: %s\n", mi_status_str(status), mi_last_error());
    return 1;
  }
  float w_e[10 * 16];
  for (int i = 0; i < 10 * 16; i++)
    w_e[i] = (float)i / 8;
  float back[10 * 16];
  mi_config got;
  mi_config_init(&got, sizeof got);
  if (mi_model_set_weight(model, MI_W_E, 0, 0, MI_DTYPE_F32, w_e, 16) != MI_OK ||
      mi_model_process(model, MI_PROCESS_FOLD_LN) != MI_OK ||
      mi_model_get_weight(back, 16, model, MI_W_E, 0, 0) != MI_OK ||
      mi_model_get_config(&got, model) != MI_OK) {
    fprintf(stderr, "libmi: %s\n", mi_last_error());
    mi_model_free(model);
    return 1;
  }
  printf("libmi %s (header %d.%d.%d)\n", mi_version_string(), MI_VERSION_MAJOR,
         MI_VERSION_MINOR, MI_VERSION_PATCH);
  printf("n_layers=%zu n_heads=%zu n_kv_heads=%zu d_model=%zu d_head=%zu d_vocab=%zu "
         "n_ctx=%zu\n",
         got.n_layers, got.n_heads, got.n_kv_heads, got.d_model, got.d_head, got.d_vocab,
         got.n_ctx);
  printf("W_E[9][15]=%g processing=%u\n", back[9 * 16 + 15], mi_model_processing(model));
  mi_model_free(model);
  return 0;
}
