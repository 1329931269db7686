"""Every number the bindings share with mi.h, in one place (tests/python/
test_enums.py reads mi.h and checks each against it). Names are the Python
spellings; the comments give the C ones."""

#: mi_status values (MI_OK, MI_ERR_*) by their Python names.
STATUS = {"ok": 0, "invalid_argument": -1, "out_of_memory": -2, "io": -3, "format": -4,
          "shape": -5, "unsupported": -6, "index": -7, "dtype": -8, "missing_tensor": -9,
          "truncated": -10, "state": -11, "numeric": -12,
          "nonfinite": -13}

#: mi_weight names (MI_W_E ... MI_LNF_B), in enum order: the list index is the value.
WEIGHTS = ["W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O",
           "W_U", "b_U", "ln1.w", "ln1.b", "ln_final.w", "ln_final.b"]

#: mi_dtype values (MI_DTYPE_F32, _F64, _F16, _BF16).
DTYPE_F32, DTYPE_F64, DTYPE_F16, DTYPE_BF16 = 0, 1, 2, 3

#: MI_PART_* bits by name.
PARTS = {"pos_embed": 1, "qkv_bias": 2, "out_bias": 4, "unembed_bias": 8,
         "ln": 16, "ln_final": 32, "mlp": 64}

#: MI_PROCESS_* bits by name.
PROCESS = {"fold_ln": 1, "center_writing": 2, "center_unembed": 4, "transformerlens": 7}

#: mi_positional values by TransformerLens's positional_embedding_type names.
POSITIONAL = {"default": 0, "standard": 1, "shortformer": 2, "none": 3}

#: mi_layout values (MI_LAYOUT_MEMORY, _TRANSFORMERLENS, _GPT2).
LAYOUTS = {0: "memory", 1: "transformerlens", 2: "gpt2"}

#: MI_LOAD_NO_CONFIG, MI_LOAD_NO_VOCAB.
LOAD_NO_CONFIG, LOAD_NO_VOCAB = 1, 2

#: mi_embedding values by name (a side of a QK circuit).
EMBEDDINGS = {"token": 0, "pos": 1}

#: mi_composition values by name.
COMPOSITIONS = {"Q": 0, "K": 1, "V": 2}

#: MI_QK_BIAS, MI_QK_SCALE.
QK_BIAS, QK_SCALE = 1, 2

#: MI_TOPK_COLUMNS, MI_TOPK_SMALLEST.
TOPK_COLUMNS, TOPK_SMALLEST = 1, 2

#: mi_source values (MI_SOURCE_EMBED, _VALUE_BIAS, _OUT_BIAS, _UNEMBED_BIAS).
SOURCES = {0: "embed", 1: "value_bias", 2: "out_bias", 3: "unembed_bias"}

#: MI_ATTRIBUTE_FULL_LOGITS.
ATTRIBUTE_FULL_LOGITS = 1

#: MI_TOKENIZE_PREPEND_BOS.
TOKENIZE_PREPEND_BOS = 1

#: mi_role names by value (MI_ROLE_NONE ... MI_ROLE_COPYING; mi_role_name).
ROLES = ["none", "previous-token", "duplicate-token", "induction", "copying"]
