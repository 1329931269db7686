/*
 * model_files.h: models written as checkpoint files and read back, shared by
 * the suites that load files (test_safetensors.c, test_config.c).
 */
#ifndef MI_MODEL_FILES_H
#define MI_MODEL_FILES_H

#include "st_writer.h"
#include "testutil.h"

#include <stdbool.h>
#include <stddef.h>

/* `name` under $MI_TEST_TMP (set by CTest) into buf. */
void tmp_path(char *buf, size_t size, const char *name);

/* How many (layer, head) copies of `w` a model of shape `c` holds. */
void copies_of(const mi_config *c, mi_weight w, size_t *layers, size_t *heads);

/* The model's config (mi_model_get_config, asserted). */
mi_config config_of(const mi_model *model);

/*
 * A model whose every weight is k/8 with |k| <= 8 (LayerNorm scales
 * 1 + k/16): at most 5 significant bits, so exact in F16 and BF16 too and a
 * file round trip must give back the very same floats. Unprocessed; owned.
 */
mi_model *exact_model(const mi_config *config, uint64_t seed);

/* Sets W_U = W_Eᵀ, as a GPT-2 checkpoint without lm_head.weight means. */
void tie_unembedding(mi_model *model);

/* Asserts that two models have the same shape and bit-identical weights. */
void assert_same_weights(const mi_model *a, const mi_model *b);

/* Adds a tensor named by printf(fmt, layer), asserting it was written. */
void add(st_writer *st, const char *dtype, const double *values, size_t rank,
         const size_t *shape, const char *fmt, size_t layer);

/*
 * The model as a TransformerLens state dict, with TL's buffers (a BOOL
 * mask, a scalar IGNORE) that the reader must skip. `underscore`: key/value
 * weights named _W_K, _W_V, _b_K, _b_V, as grouped-query models store them.
 * `normalization`: NULL, or TL's normalization_type to store in
 * __metadata__; any but "LN" leaves the LayerNorm weights out.
 */
st_writer *write_tl(const mi_model *model, const char *dtype, bool underscore,
                    const char *normalization);

/*
 * The model as a Hugging Face GPT-2 checkpoint, packed by the definition
 * (Conv1D: c_attn columns Q | K | V, head h at h·d_head; c_proj rows
 * h·d_head.. for head h), with GPT-2's attn.bias buffers. Without `lm_head`
 * the model's W_U must be W_Eᵀ. `n_head_metadata`: store "n_head" in
 * __metadata__.
 */
st_writer *write_gpt2(const mi_model *model, const char *dtype, const char *prefix,
                      bool lm_head, bool n_head_metadata);

#endif
