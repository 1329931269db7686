/*
 * model_files.h: a model's weights written as the checkpoints researchers
 * hold (TransformerLens state dicts, Hugging Face GPT-2), through the
 * tests' safetensors writer; the torch.save writer turns the same tensors
 * into a .pth. Shared by the safetensors and torch-archive suites.
 */
#ifndef MI_MODEL_FILES_H
#define MI_MODEL_FILES_H

#include "st_writer.h"
#include "testutil.h"

#include <stdbool.h>
#include <stdint.h>

/* `name` under $MI_TEST_TMP (set by CTest) into buf. */
void mf_tmp_path(char *buf, size_t size, const char *name);

/* The model's config. */
mi_config mf_config_of(const mi_model *model);

/*
 * A model whose every weight is k/8 with |k| <= 8 (LayerNorm scales
 * 1 + k/16): exact in F16 and BF16 too, so file round trips are exact.
 */
mi_model *mf_exact_model(const mi_config *config, uint64_t seed);

/* Sets W_U = W_Eᵀ, as a GPT-2 checkpoint without lm_head.weight means. */
void mf_tie_unembedding(mi_model *model);

/* Asserts that two models have the same shape and bit-identical weights. */
void mf_assert_same_weights(const mi_model *a, const mi_model *b);

/* Adds `values` as tensor `fmt` (formatted with `layer`). */
void mf_add(st_writer *st, const char *dtype, const double *values, size_t rank,
            const size_t *shape, const char *fmt, size_t layer);

/*
 * The model as a TransformerLens state dict (with TL's BOOL mask and
 * scalar IGNORE buffers); `underscore`: _W_K, _W_V, _b_K, _b_V names;
 * `normalization`: NULL, or a normalization_type for __metadata__ (any but
 * "LN" leaves the LayerNorm weights out).
 */
st_writer *mf_write_tl(const mi_model *model, const char *dtype, bool underscore,
                       const char *normalization);

/*
 * The model as a Hugging Face GPT-2 checkpoint (Conv1D packing, attn.bias
 * buffers); without `lm_head` the model's W_U must be W_Eᵀ.
 */
st_writer *mf_write_gpt2(const mi_model *model, const char *dtype, const char *prefix,
                         bool lm_head, bool n_head_metadata);

/* Load options without processing. */
mi_load_options mf_raw_options(void);

#endif
