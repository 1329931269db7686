/*
 * mi.h: the public interface of libmi, a library for mechanistic
 * interpretability of attention-only transformers.
 *
 * libmi takes a trained attention-only transformer apart into readable
 * pieces: the direct path, one path per attention head, virtual heads where
 * heads compose, each head's QK and OV circuit and eigenvalue summaries. The
 * maths is that of "A Mathematical Framework for Transformer Circuits"
 * (Elhage et al., 2021).
 *
 * Conventions
 * -----------
 * - Row-vector convention, as checkpoints store weights: a token's residual
 *   vector is a row and `x · W_Q` is its query. Matrices are row-major; a
 *   leading dimension `ld` is the distance, in elements, between the starts
 *   of two consecutive rows.
 * - Every fallible function returns an `mi_status`. On failure,
 *   `mi_last_error()` describes exactly what was wrong, for the calling
 *   thread. The library never prints, never aborts and never exits.
 * - The out-parameter, when there is one, is named `out` and comes first.
 *   Constructors set `*out = NULL` on failure. Destructors accept NULL.
 * - Pointers returned through `out` are either owned (the caller frees them
 *   with the matching `_free`) or borrowed (valid while the object that
 *   lent them lives); each function says which.
 *
 * Thread safety
 * -------------
 * A model that is being built (`mi_model_create`, `mi_model_set_weight`,
 * `mi_model_process`, `mi_model_load_vocab`) belongs to one thread. Once
 * built, a model is only read, and any number of threads may query it at
 * once. `mi_last_error()` is per thread.
 *
 * Non-finite numbers
 * ------------------
 * Every weight and every caller factor is checked as it enters
 * (`mi_model_set_weight`, every loader, `mi_circuit_from_factors`): a NaN or
 * an infinity, or a float64 value too large for float32, is refused with
 * MI_ERR_NONFINITE naming the weight, layer, head and element. So a model
 * and a circuit hold finite numbers only. Finite float32 weights can still
 * overflow in a product (weights near 1e20 and up): every query screens what
 * it computes, and a NaN or infinity on the way to a result, to LAPACK or to
 * a selection (top-k, diagonal rank) is MI_ERR_NUMERIC naming the query and
 * where. No call returns MI_OK with a NaN or infinity in its output except
 * the fields documented as NaN ("not measured"). LAPACK never sees a
 * non-finite input, so its error handler never runs and never prints.
 *
 * ABI policy
 * ----------
 * Within a major version symbols and enum values are only ever added: no
 * signature, enum value or public struct layout changes. A changed function
 * gets a successor named `_v2`. Option structs start with a `struct_size`
 * field, so they can grow without breaking callers compiled against an
 * older header: their `_init(out, sizeof *out)` writes only the caller's
 * bytes, the library reads only struct_size bytes of an input struct (the
 * fields past them keep their defaults) and writes only struct_size bytes
 * of an output struct. A struct_size below sizeof(size_t), or larger than
 * the library's own (a header newer than the library), is refused with
 * MI_ERR_INVALID_ARGUMENT.
 */
#ifndef MI_H
#define MI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Version and export                                                       */
/* ------------------------------------------------------------------------ */

#define MI_VERSION_MAJOR 0
#define MI_VERSION_MINOR 1
#define MI_VERSION_PATCH 0
/** The version this header describes, as one number: major*10000 + minor*100 + patch. */
#define MI_VERSION_NUMBER \
  (MI_VERSION_MAJOR * 10000 + MI_VERSION_MINOR * 100 + MI_VERSION_PATCH)

#if defined(__GNUC__)
#define MI_API __attribute__((visibility("default")))
#else
#define MI_API
#endif

/**
 * The version of the library actually loaded, as MI_VERSION_NUMBER computes
 * it. Bindings compare its major part with the one they were written for.
 */
MI_API unsigned mi_version(void);

/** The loaded library's version as static text, "MAJOR.MINOR.PATCH". */
MI_API const char *mi_version_string(void);

/* ------------------------------------------------------------------------ */
/* Status codes and errors                                                  */
/* ------------------------------------------------------------------------ */

/**
 * What a call did. Values are part of the ABI: they are only appended.
 */
typedef enum mi_status {
  MI_OK = 0,
  /** An argument was NULL, zero or otherwise unusable. */
  MI_ERR_INVALID_ARGUMENT = -1,
  /** An allocation failed, or a size would overflow. */
  MI_ERR_OUT_OF_MEMORY = -2,
  /** The operating system refused a file operation (open, stat, mmap). */
  MI_ERR_IO = -3,
  /** A file is not in the format it claims (bad header, bad JSON, bad field). */
  MI_ERR_FORMAT = -4,
  /** Shapes disagree: a tensor's shape, a caller buffer, a dimension. */
  MI_ERR_SHAPE = -5,
  /** Well-formed, but not something libmi does (e.g. a forward pass with MLPs). */
  MI_ERR_UNSUPPORTED = -6,
  /** A layer, head, token or row index is out of range. */
  MI_ERR_INDEX = -7,
  /** A tensor's dtype is unknown or not allowed where it is used. */
  MI_ERR_DTYPE = -8,
  /** A tensor the model needs is missing from the file. */
  MI_ERR_MISSING_TENSOR = -9,
  /** A file is shorter than its header says (data past the end of the file). */
  MI_ERR_TRUNCATED = -10,
  /** The object is not in a state that allows the call (e.g. processed twice). */
  MI_ERR_STATE = -11,
  /**
   * A computation failed numerically: a LAPACK routine did not converge or
   * refused an argument (the message names the routine and the argument), or
   * a product of finite weights overflowed float32 into an infinity or NaN
   * (the message names the query).
   */
  MI_ERR_NUMERIC = -12,
  /**
   * A weight or factor handed to libmi holds a NaN or an infinity (or a
   * float64 value beyond float32's range); the message names the weight,
   * layer, head and element. See "Non-finite numbers" above.
   */
  MI_ERR_NONFINITE = -13
} mi_status;

/** Static, never NULL text naming a status ("invalid argument", ...). */
MI_API const char *mi_status_str(mi_status status);

/**
 * The detail of the calling thread's last failure: which tensor, which shape,
 * which byte offset. Never NULL (an empty string when there was none).
 * Borrowed: valid until the next failing libmi call on this thread.
 */
MI_API const char *mi_last_error(void);

/* ------------------------------------------------------------------------ */
/* Models                                                                   */
/* ------------------------------------------------------------------------ */

/** An attention-only transformer and its weights (opaque). */
typedef struct mi_model mi_model;

/** Optional parts a model has; bits of `mi_config.parts`. */
enum {
  /** Learned positional embedding W_pos [n_ctx × d_model]. */
  MI_PART_POS_EMBED = 1u << 0,
  /** Query, key and value biases b_Q, b_K, b_V [d_head] per head. */
  MI_PART_QKV_BIAS = 1u << 1,
  /** Attention output bias b_O [d_model] per layer. */
  MI_PART_OUT_BIAS = 1u << 2,
  /** Unembedding bias b_U [d_vocab]. */
  MI_PART_UNEMBED_BIAS = 1u << 3,
  /** A LayerNorm before each attention layer (ln1: w, b [d_model]). */
  MI_PART_LN = 1u << 4,
  /** A LayerNorm before the unembedding (ln_final: w, b [d_model]). */
  MI_PART_LN_FINAL = 1u << 5,
  /**
   * The checkpoint also has MLP layers. libmi reads only their attention
   * weights: circuits work, the forward pass and path decomposition do not.
   */
  MI_PART_MLP = 1u << 6
};

/**
 * How token positions enter the model (`mi_config.positional`,
 * `mi_load_options.positional`). TransformerLens calls these
 * `positional_embedding_type` "standard" and "shortformer".
 */
typedef enum mi_positional {
  /**
   * In a config: STANDARD when the model has W_pos (MI_PART_POS_EMBED), NONE
   * otherwise; mi_model_get_config reports the resolved kind. In load
   * options: whatever the files say, STANDARD when they say nothing.
   */
  MI_POSITIONAL_DEFAULT = 0,
  /** GPT-2: the residual stream starts as W_E[token] + W_pos[position]. */
  MI_POSITIONAL_STANDARD = 1,
  /**
   * Shortformer: the residual stream starts as W_E[token] alone; every
   * layer's query and key inputs are LN(resid) + W_pos[position] (added
   * after ln1), its value input LN(resid). Positions reach the output only
   * through the attention patterns, so OV circuits are position-free.
   * Folding and centering (mi_model_process) change only the token side:
   * positions keep meeting W_Q and W_K as they were before processing (the
   * model keeps W_pos·W_Q and W_pos·W_K of those, n_ctx × d_head per head),
   * and W_pos is never centred. mi_model_get_weight returns the token side;
   * the positional side is what mi_circuit_qk's MI_EMBED_POS sides read.
   */
  MI_POSITIONAL_SHORTFORMER = 2,
  /** No positional embedding: the model has no W_pos. */
  MI_POSITIONAL_NONE = 3
} mi_positional;

/**
 * The shape of a model. Fill it with `mi_config_init`, then set the fields.
 */
typedef struct mi_config {
  /** sizeof(mi_config) as the caller was compiled; set by mi_config_init. */
  size_t struct_size;
  size_t n_layers;
  size_t n_heads;    /**< query heads per layer */
  size_t n_kv_heads; /**< key/value heads per layer; 0 means n_heads. Must divide n_heads. */
  size_t d_model;
  size_t d_head;
  size_t d_vocab;
  size_t n_ctx;      /**< rows of W_pos; longest sequence. 0: unlimited (no W_pos only) */
  unsigned parts;    /**< MI_PART_* bits */
  double ln_eps;     /**< LayerNorm epsilon; mi_config_init sets 1e-5 */
  /**
   * How positions enter (mi_positional). STANDARD and SHORTFORMER need
   * MI_PART_POS_EMBED, NONE forbids it; DEFAULT (the init's) follows the part.
   */
  mi_positional positional;
} mi_config;

/**
 * Sets every field of `out` to its default: zeros, no optional parts,
 * ln_eps = 1e-5, positional MI_POSITIONAL_DEFAULT, and struct_size. Call before filling a config.
 *
 * @param out          out: the config
 * @param struct_size  in: sizeof *out
 * `struct_size` is the caller's sizeof(*out) (pass `sizeof *out`): at most
 * that many bytes are written, so a caller compiled against an older, smaller
 * header keeps the fields it knows and nothing past them; out->struct_size
 * is set to it when that field fits. NULL out: no-op.
 */
MI_API void mi_config_init(mi_config *out, size_t struct_size);

/** Named weights of a model; see `mi_model_set_weight` for their shapes. */
typedef enum mi_weight {
  MI_W_E = 0,  /**< d_vocab × d_model, global */
  MI_W_POS,    /**< n_ctx × d_model, global */
  MI_W_Q,      /**< d_model × d_head, per (layer, head) */
  MI_W_K,      /**< d_model × d_head, per (layer, kv head) */
  MI_W_V,      /**< d_model × d_head, per (layer, kv head) */
  MI_W_O,      /**< d_head × d_model, per (layer, head) */
  MI_B_Q,      /**< 1 × d_head, per (layer, head) */
  MI_B_K,      /**< 1 × d_head, per (layer, kv head) */
  MI_B_V,      /**< 1 × d_head, per (layer, kv head) */
  MI_B_O,      /**< 1 × d_model, per layer */
  MI_W_U,      /**< d_model × d_vocab, global */
  MI_B_U,      /**< 1 × d_vocab, global */
  MI_LN1_W,    /**< 1 × d_model, per layer */
  MI_LN1_B,    /**< 1 × d_model, per layer */
  MI_LNF_W,    /**< 1 × d_model, global */
  MI_LNF_B,    /**< 1 × d_model, global */
  MI_WEIGHT_COUNT
} mi_weight;

/** Element types of caller arrays and of file tensors. */
typedef enum mi_dtype {
  MI_DTYPE_F32 = 0,
  MI_DTYPE_F64 = 1,
  MI_DTYPE_F16 = 2,
  MI_DTYPE_BF16 = 3
} mi_dtype;

/**
 * Creates a model of the shape `config` describes, every weight zero and
 * every LayerNorm the identity (w = 1, b = 0). Set its weights with
 * `mi_model_set_weight`, then optionally `mi_model_process`.
 *
 * @param out     receives the model (owned; free with mi_model_free), or NULL on failure
 * @param config  in: the shape; `struct_size` must be set (mi_config_init)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT for NULL, a zero dimension, a
 *         positional kind that is not an mi_positional or disagrees with
 *         MI_PART_POS_EMBED (STANDARD or SHORTFORMER without it, NONE with
 *         it), or a struct_size below sizeof(size_t) or above sizeof(mi_config); MI_ERR_SHAPE when n_kv_heads does not divide
 *         n_heads or W_pos is asked for with n_ctx = 0;
 *         MI_ERR_OUT_OF_MEMORY when the weights do not fit.
 */
MI_API mi_status mi_model_create(mi_model **out, const mi_config *config);

/**
 * Releases the caller's reference to a model. Circuits made from it hold
 * references of their own (an atomic count), so the model's memory goes
 * when the last of the caller and its circuits lets go: model and circuits
 * may be freed in any order, from any thread. NULL is a no-op.
 */
MI_API void mi_model_free(mi_model *model);

/**
 * A copy of a model that can be changed without touching the original: its
 * own weights (as they are now: processed ones stay processed, and
 * mi_model_processing and mi_model_layout report what the original's do),
 * a shortformer model's positional terms, and the original's vocabulary and
 * tokenizer, which never change once loaded and so are shared (reference
 * counted; loading another into either model replaces only that model's).
 * The copy holds no circuits, so `mi_model_set_weight` works on it
 * (TransformerLens's "copy, zero a head, compare").
 *
 * @param out    receives the copy (owned; free with mi_model_free), NULL on failure
 * @param model  in: the model (read only: threads may share it meanwhile)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_OUT_OF_MEMORY (the
 *         copy needs as much memory as the model's weights).
 */
MI_API mi_status mi_model_copy(mi_model **out, const mi_model *model);

/**
 * Copies one weight into the model from caller memory (the caller may free
 * its buffer afterwards). The weight is a rows × cols matrix (a vector is
 * 1 × n) read at `data[i * row_stride + j]`, with shapes:
 *
 * | weight          | rows × cols         | indexed by       |
 * |-----------------|---------------------|------------------|
 * | W_E             | d_vocab × d_model   | -                |
 * | W_pos           | n_ctx × d_model     | -                |
 * | W_Q             | d_model × d_head    | layer, head      |
 * | W_K, W_V        | d_model × d_head    | layer, kv head   |
 * | W_O             | d_head × d_model    | layer, head      |
 * | b_Q             | 1 × d_head          | layer, head      |
 * | b_K, b_V        | 1 × d_head          | layer, kv head   |
 * | b_O, ln1 w/b    | 1 × d_model         | layer            |
 * | W_U             | d_model × d_vocab   | -                |
 * | b_U             | 1 × d_vocab         | -                |
 * | ln_final w/b    | 1 × d_model         | -                |
 *
 * Indices a weight is not indexed by must be 0.
 *
 * A processed model (mi_model_process, or any loaded model) takes the new
 * value as it is, in the processed form: nothing is folded or centred into
 * it, so edit a model after processing with the values it should compute
 * with (mi_model_get_weight shows the current ones). A processed shortformer
 * model keeps positional terms computed from its weights before processing
 * (MI_POSITIONAL_SHORTFORMER) and refuses new W_pos, W_Q and W_K.
 *
 * @param model       in/out: the model; no circuit of it may be alive (see
 *                    mi_model_copy), and no other thread may use it meanwhile
 * @param which       the weight
 * @param layer,head  which copy (see the table)
 * @param dtype       any mi_dtype: F32, F64, F16 (IEEE binary16) or BF16
 *                    (bfloat16), native byte order, any alignment; stored
 *                    as float32 (F64 rounded to nearest, F16/BF16 exact)
 * @param data        in: the first element
 * @param row_stride  elements between row starts; ≥ cols (any value for vectors)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, unknown weight or dtype,
 *         row_stride < cols); MI_ERR_INDEX (layer/head out of range or
 *         non-zero where unused); MI_ERR_UNSUPPORTED (the config lacks that
 *         optional part); MI_ERR_STATE (a circuit of the model is alive: some
 *         circuits read W_E and W_U in place, others hold products computed
 *         when they were made, so a changed weight would reach some and not
 *         others, free them first; or W_pos, W_Q, W_K of a processed
 *         shortformer model, see above); MI_ERR_NONFINITE (an element is NaN
 *         or infinite after conversion to float32, named with its row and
 *         column: the copy (layer, head) of the weight is then reset to its
 *         initial value, 0, or 1 for LayerNorm scales, so the model holds
 *         finite weights only).
 */
MI_API mi_status mi_model_set_weight(mi_model *model, mi_weight which,
                                     size_t layer, size_t head, mi_dtype dtype,
                                     const void *data, size_t row_stride);

/** Bits of `mi_model_process`'s `steps` and of `mi_model_processing`. */
enum {
  /**
   * Fold each LayerNorm's scale and shift into the weights that read it
   * (TransformerLens's fold_ln): W ← diag(w)·W, b ← b + b_ln·W for
   * W_Q/K/V and for W_U, b_U. The LayerNorms then only normalise. The model
   * computes exactly the same function.
   */
  MI_PROCESS_FOLD_LN = 1u << 0,
  /**
   * TransformerLens's center_writing_weights, with the centering of the
   * weights that read through a LayerNorm: subtract the mean over d_model
   * from every row of W_E, W_pos and W_O and from b_O (what is written to
   * the residual stream), and from every column of W_Q, W_K, W_V and W_U
   * (what reads it); a shortformer W_pos, added after ln1 and never
   * written to the stream, is not centred, and what it meets stays
   * unprocessed (MI_POSITIONAL_SHORTFORMER). Every read of the residual stream goes through a
   * LayerNorm, which removes the mean over d_model first, so no output
   * changes. Needs MI_PART_LN and MI_PART_LN_FINAL (else MI_ERR_UNSUPPORTED)
   * and implies MI_PROCESS_FOLD_LN.
   */
  MI_PROCESS_CENTER_WRITING = 1u << 1,
  /**
   * TransformerLens's center_unembed: subtract the mean over d_vocab from
   * every row of W_U and from b_U. Each position's logits move by one
   * constant, which softmax ignores: no probability changes. Valid with or
   * without LayerNorm.
   */
  MI_PROCESS_CENTER_UNEMBED = 1u << 2,
  /** TransformerLens's default processing: all three. */
  MI_PROCESS_TRANSFORMERLENS = (1u << 0) | (1u << 1) | (1u << 2)
};

/**
 * Processes the weights in place, once. Steps a model lacks the parts for
 * are refused rather than skipped, except MI_PROCESS_FOLD_LN on a model
 * without LayerNorm weights, which is nothing to do and is recorded as done.
 *
 * @param model  in/out: a model not yet processed
 * @param steps  MI_PROCESS_* bits; 0 only marks the model as built
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, unknown bits);
 *         MI_ERR_UNSUPPORTED (writing-weight centering without LayerNorm);
 *         MI_ERR_STATE (already processed); MI_ERR_OUT_OF_MEMORY (folding a
 *         non-zero LayerNorm bias needs b_Q/b_K/b_V or b_U the model lacks
 *         and they could not be allocated: the model is left unchanged and
 *         unprocessed, so the call may be retried; folding a shortformer
 *         model with LayerNorm first allocates its positional terms,
 *         n_layers·(n_heads + n_kv_heads)·n_ctx·d_head floats);
 *         MI_ERR_STATE also while circuits of the model are alive (see
 *         mi_model_set_weight); MI_ERR_NUMERIC when folding or centering
 *         overflowed float32 (a weight is no longer finite, named): the
 *         model is then processed but unusable: its numeric queries fail
 *         with MI_ERR_NUMERIC rather than return a NaN; free it.
 */
MI_API mi_status mi_model_process(mi_model *model, unsigned steps);

/**
 * The MI_PROCESS_* steps applied to the weights (0 for raw weights): the
 * `steps` given to mi_model_process, with MI_PROCESS_FOLD_LN added when
 * MI_PROCESS_CENTER_WRITING was asked for. A model without LayerNorm
 * weights reports MI_PROCESS_FOLD_LN only when that step was asked for
 * (its weights are already in folded form, so the step had nothing to do).
 */
MI_API unsigned mi_model_processing(const mi_model *model);

/** Where a model's weights came from. */
typedef enum mi_layout {
  MI_LAYOUT_MEMORY = 0,           /**< mi_model_create and mi_model_set_weight */
  MI_LAYOUT_TRANSFORMERLENS = 1,  /**< a TransformerLens state dict */
  MI_LAYOUT_GPT2 = 2              /**< a Hugging Face GPT-2 checkpoint */
} mi_layout;

/** The layout the model's weights were read from. */
MI_API mi_layout mi_model_layout(const mi_model *model);

/**
 * Copies the model's shape into `out` (as much of it as out->struct_size,
 * which the caller sets, allows); out->struct_size becomes the bytes written.
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT for NULL or a struct_size below
 *         sizeof(size_t) (nothing is written).
 */
MI_API mi_status mi_model_get_config(mi_config *out, const mi_model *model);

/**
 * The shape of one weight (see `mi_model_set_weight`'s table).
 *
 * @param out_rows,out_cols  receive the shape
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT for NULL or an unknown weight;
 *         MI_ERR_UNSUPPORTED when the model lacks that optional part.
 */
MI_API mi_status mi_model_weight_shape(size_t *out_rows, size_t *out_cols,
                                       const mi_model *model, mi_weight which);

/**
 * Copies one weight, as the model now holds it (folded and centred when
 * processed; a shortformer model's W_Q and W_K are then the token side,
 * which multiplies LN(resid), while positions meet the unprocessed weights:
 * see MI_POSITIONAL_SHORTFORMER), into a caller buffer of rows × cols float32 at
 * `out[i * ld + j]`.
 *
 * @param out  out: the caller's buffer, at least (rows - 1) * ld + cols floats
 * @param ld   ≥ cols
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, unknown weight, ld < cols);
 *         MI_ERR_INDEX (layer/head out of range or non-zero where unused);
 *         MI_ERR_UNSUPPORTED (the model lacks that part).
 */
MI_API mi_status mi_model_get_weight(float *out, size_t ld, const mi_model *model,
                                     mi_weight which, size_t layer, size_t head);

/* ------------------------------------------------------------------------ */
/* Loading models from safetensors files and folders                        */
/* ------------------------------------------------------------------------ */

/*
 * A `.safetensors` file holds a TransformerLens state dict or a Hugging Face
 * GPT-2 checkpoint; the layout is detected from the tensor names.
 *
 * TransformerLens (MI_LAYOUT_TRANSFORMERLENS), found by `embed.W_E`:
 *   embed.W_E [d_vocab, d_model]        pos_embed.W_pos [n_ctx, d_model]
 *   blocks.{l}.attn.W_Q [n_heads, d_model, d_head]
 *   blocks.{l}.attn.W_K, W_V [n_kv_heads, d_model, d_head] (or _W_K, _W_V)
 *   blocks.{l}.attn.W_O [n_heads, d_head, d_model]
 *   blocks.{l}.attn.b_Q [n_heads, d_head]; b_K, b_V (or _b_K, _b_V)
 *   [n_kv_heads, d_head]; b_O [d_model]
 *   blocks.{l}.ln1.w, ln1.b, ln_final.w, ln_final.b [d_model]
 *   unembed.W_U [d_model, d_vocab]      unembed.b_U [d_vocab]
 * Hugging Face GPT-2 (MI_LAYOUT_GPT2), found by `wte.weight`, every name
 * optionally prefixed by `transformer.`:
 *   wte.weight [d_vocab, d_model] (W_E)  wpe.weight [n_ctx, d_model] (W_pos)
 *   h.{l}.ln_1.weight, ln_1.bias [d_model]
 *   h.{l}.attn.c_attn.weight [d_model, 3·d_model]: columns Q | K | V, head h
 *   at columns h·d_head.. of each; c_attn.bias [3·d_model] likewise
 *   h.{l}.attn.c_proj.weight [d_model, d_model]: rows h·d_head.. are W_O of
 *   head h; c_proj.bias [d_model] is b_O
 *   ln_f.weight, ln_f.bias [d_model]
 *   lm_head.weight [d_vocab, d_model] (no prefix): W_U is its transpose;
 *   when absent, W_U = W_Eᵀ (tied)
 *   GPT-2 packs its heads, so n_heads comes from mi_load_options.n_heads,
 *   a config.json's "n_head", or the file's __metadata__ "n_head" (or
 *   "n_heads").
 *
 * Layers are `blocks.{l}` / `h.{l}` from 0 with no gap. Optional parts
 * (MI_PART_*) follow from which tensors layer 0 has; every layer must have
 * the same. MLP weights (`blocks.{l}.mlp.*`, `h.{l}.mlp.*`) are not read but
 * set MI_PART_MLP. Other tensors (TransformerLens's attention masks, GPT-2's
 * attn.bias buffers) are ignored, but their header entries are checked like
 * all others. LayerNorm epsilon comes from a config.json ("eps" or
 * "layer_norm_epsilon"), else 1e-5. Tensors are F32, F16, BF16 or F64.
 *
 * A TransformerLens model saved after fold_ln has no LayerNorm weights but
 * still normalises. TransformerLens's `normalization_type` in __metadata__
 * says so: "LNPre" gives the model identity LayerNorms (MI_PART_LN and
 * MI_PART_LN_FINAL with w = 1, b = 0), "LN" requires the weights, "None"
 * forbids them; without the key, LayerNorm exists where its weights do.
 *
 * Model folders and config.json
 * -----------------------------
 * `mi_model_load` given a directory reads, from it:
 * - `config.json`, when present (MI_LOAD_NO_CONFIG skips it);
 * - the weights: `model.safetensors`, else `pytorch_model.bin`, else
 *   `model_final.pth` (TransformerLens's own models), else the one file whose
 *   name ends in .safetensors, .pth, .pt or .bin;
 * - a vocabulary, as `mi_model_load_vocab` reads it: `tokenizer.json`, else
 *   `vocab.json`, else `vocab.txt`, when one is there (MI_LOAD_NO_VOCAB
 *   skips it); a `vocab.json` with a `merges.txt` beside it loads as
 *   `mi_model_load_tokenizer` does, so text can be tokenized.
 * Given a file, it reads the `config.json` in the file's directory too, when
 * there is one (and no vocabulary).
 *
 * config.json fields read (unknown fields are ignored; null says nothing):
 *   TransformerLens: n_layers, n_heads, n_key_value_heads, d_model, d_head,
 *   d_vocab, n_ctx, eps, normalization_type or normalization ("LN",
 *   "LNPre"; null is None), positional_embedding_type ("standard",
 *   "shortformer"; rotary, alibi and others are MI_ERR_UNSUPPORTED),
 *   shortformer_pos (true: shortformer, false: standard), attn_only.
 *   Hugging Face GPT-2: model_type ("gpt2"; another is MI_ERR_UNSUPPORTED),
 *   n_layer, n_head, n_embd, n_positions or n_ctx, vocab_size,
 *   layer_norm_epsilon. A GPT-2 config says the model has MLPs, unless it
 *   also says "attn_only": true.
 * Every size must be a positive integer, eps a positive number; two names
 * of one size must agree. The sizes are checked against the tensors (n_ctx
 * against W_pos's rows, d_vocab against W_E's), attn_only against whether
 * MLP weights are there (MI_PART_MLP).
 *
 * A safetensors file's __metadata__ may hold a config.json's whole text as
 * the string "config" (the Python bindings' Model.from_state_dict writes
 * one); it is read like a config.json beside the file, with
 * `__metadata__ "config"` as its name in messages, and is checked against
 * the other sources in the same way.
 *
 * Precedence: there is none. The caller's options, config.json and the
 * file's __metadata__ each fill in what the others leave unsaid; where two
 * say different things the load fails naming both sources and both values
 * (a GPT-2 head count of 8 passed for a config.json saying 12 is caught,
 * although 8 divides d_model). What none says comes from the tensors, then
 * from the defaults (standard positions when there is a W_pos, eps 1e-5).
 */

/** How `mi_model_load` reads a file. Fill it with `mi_load_options_init`. */
typedef struct mi_load_options {
  /** sizeof(mi_load_options) as the caller was compiled; set by the init. */
  size_t struct_size;
  /**
   * Query heads a layer. 0 (default): from the file (the TransformerLens
   * shapes, or GPT-2's __metadata__). Otherwise it is used for GPT-2 and must
   * agree with a TransformerLens file's shapes.
   */
  size_t n_heads;
  /** MI_PROCESS_* steps applied after loading; default MI_PROCESS_FOLD_LN. */
  unsigned process;
  /**
   * How positions enter, for files that do not say (ARENA's `.pth` state
   * dicts carry no config: pass MI_POSITIONAL_SHORTFORMER for them).
   * MI_POSITIONAL_DEFAULT (the init's): what the files say, else STANDARD.
   * A file that says otherwise is an error naming both.
   */
  mi_positional positional;
  /** MI_LOAD_* bits; 0 (the init's): read config.json and a folder's vocabulary. */
  unsigned flags;
} mi_load_options;

/** Bits of `mi_load_options.flags`. */
enum {
  /**
   * Ignore config.json: neither a folder's nor the one beside a named file
   * is read, so the file's own metadata and the options say everything.
   */
  MI_LOAD_NO_CONFIG = 1u << 0,
  /** Load no vocabulary from a model folder (token strings stay unset). */
  MI_LOAD_NO_VOCAB = 1u << 1
};

/**
 * Sets `out` to the defaults: n_heads 0, process MI_PROCESS_FOLD_LN,
 * positional MI_POSITIONAL_DEFAULT, flags 0.
 *
 * @param out          out: the options
 * @param struct_size  in: sizeof *out
 * `struct_size` is the caller's sizeof(*out) (pass `sizeof *out`): at most
 * that many bytes are written, so a caller compiled against an older, smaller
 * header keeps the fields it knows and nothing past them; out->struct_size
 * is set to it when that field fits. NULL out: no-op.
 */
MI_API void mi_load_options_init(mi_load_options *out, size_t struct_size);

/**
 * Loads a model from a file (`.safetensors`, or a PyTorch torch.save zip
 * archive: `.pth`, `.pt`, `.bin`) or a model folder, with the config.json
 * beside it or in it (see above). The first bytes of a file say which it
 * is; a file that is neither (text, JSON, a bare pickle, another zip) is
 * refused with a message saying what it looks like. The model keeps its
 * own copy of the weights as float32, then `options->process` is applied
 * with `mi_model_process`. Every header field, shape and offset is checked against
 * the file size before any data is read. `mi_model_layout` tells which name
 * map was used. Files are opened without blocking and must be regular files
 * (a FIFO named config.json is refused, never waited on); they are read with
 * pread into memory the process owns, never mapped, so a file that shrinks
 * while it loads is MI_ERR_TRUNCATED, not a SIGBUS. Memory: only headers and
 * directories are read whole; each tensor is read into the model's own
 * float32 weights (float32 tensors directly, on every online core for large
 * ones), or, when it needs converting, transposing or splitting, into one
 * scratch of that tensor's size, so a load peaks at the weights the model
 * keeps plus the largest such tensor, never plus the file. Every weight is
 * checked as it is copied (see "Non-finite numbers").
 *
 * A torch archive must hold a state dict (or a checkpoint dict with one
 * under "state_dict", "model_state_dict" or "model"); its pickle is read by
 * a restricted interpreter that knows only the opcodes and globals a state
 * dict uses and never imports or calls anything. A .pth carries no metadata:
 * without a config.json, pass `n_heads` for GPT-2 names and `positional`
 * for shortformer models.
 *
 * @param out      receives the model (owned; free with mi_model_free), or NULL on failure
 * @param path     in: a weights file, or a model folder
 * @param options  in: NULL for the defaults
 * @return MI_OK;
 *   MI_ERR_INVALID_ARGUMENT: NULL out/path, bad options (struct_size, unknown
 *     process or flags bits), a GPT-2 file whose number of heads is not
 *     given, two sources (options, config.json, __metadata__) that disagree
 *     (both named), or a folder holding several weights files and none of
 *     the preferred names (they are listed);
 *   MI_ERR_IO: the file, config.json or vocabulary cannot be opened, is not
 *     a regular file, or cannot be read; a folder with no weights
 *     file (the message says what was looked for);
 *   MI_ERR_TRUNCATED: the file is empty, shorter than its header length, or a
 *     tensor ends past the end of the file (the message gives the byte offset),
 *     or the file shrank while it was read (path and offset named);
 *     torch: no zip end record, an entry, the central directory or the pickle
 *     ending past the end, a storage whose record is not its size;
 *   MI_ERR_FORMAT: the header is not JSON (or not UTF-8), not an object, has
 *     duplicate names, a malformed entry, overlapping tensors, or
 *     __metadata__ that is not an object of strings; a config.json that is
 *     not a JSON object, has a known field of the wrong type or value, or two
 *     names of one size that disagree (field and file named); attn_only true
 *     with MLP weights in the file; the file is text or JSON; torch: a
 *     malformed zip (a bad CRC of data.pkl, duplicate entries), a zip
 *     without `<dir>/data.pkl`, a pickle opcode or global a state dict does
 *     not use (named), a memo index out of range, no state dict, or a
 *     tensor named twice;
 *   MI_ERR_DTYPE: an unknown dtype, or a mapped tensor that is not float;
 *   MI_ERR_SHAPE: a shape that disagrees with its byte length or with the
 *     model's dimensions (the message names the tensor and both shapes),
 *     n_heads that does not divide d_model, or a config.json size that the
 *     tensors contradict (both values named); torch: a view (size, stride,
 *     offset) reaching past its storage, or views adding up to more than
 *     twice the archive's size;
 *   MI_ERR_MISSING_TENSOR: a required tensor is absent (named), a layer is
 *     missing, the names match neither layout, config.json says the model
 *     has MLPs and the file has none, or a torch archive holds no state dict;
 *   MI_ERR_UNSUPPORTED: a process step the model lacks the parts for, a
 *     normalization_type other than LN, LNPre and None (e.g. RMS), a
 *     positional kind libmi does not run (rotary, alibi), a config.json
 *     model_type other than gpt2, or a file kind libmi does not read; torch:
 *     a bare pickle (torch < 1.6; the message says how to re-save it), a
 *     compressed or encrypted entry, a big-endian archive, a TorchScript
 *     archive;
 *   MI_ERR_NONFINITE: a weight holds a NaN or an infinity, or a float64
 *     value beyond float32's range (weight, layer, head and element named);
 *   MI_ERR_NUMERIC: processing (LayerNorm folding, centering) overflowed
 *     float32 (see mi_model_process);
 *   MI_ERR_OUT_OF_MEMORY (also when a tensor's scratch, or the address
 *     space the file's headers are read into, cannot be had);
 *   and, for the vocabulary of a folder, the statuses of
 *   `mi_model_load_vocab` (the message names the file and says
 *   MI_LOAD_NO_VOCAB skips it); no model is returned then.
 */
MI_API mi_status mi_model_load(mi_model **out, const char *path,
                               const mi_load_options *options);

/**
 * `mi_model_load` from a file's image in caller memory (any alignment);
 * the caller keeps its buffer, which is only read during the call. There is
 * no folder, so no config.json and no vocabulary is read (the flags are
 * checked but have nothing to skip). Returns the same statuses except
 * MI_ERR_IO; an empty buffer is MI_ERR_TRUNCATED.
 *
 * @param out      receives the model (owned), or NULL on failure
 * @param data     in: the file's bytes (non-NULL even when size is 0)
 * @param size     their number
 * @param options  in: NULL for the defaults
 */
MI_API mi_status mi_model_load_memory(mi_model **out, const void *data, size_t size,
                                      const mi_load_options *options);

/* (end of section: Loading models from safetensors files and folders) */

/* ------------------------------------------------------------------------ */
/* Vocabulary                                                               */
/* ------------------------------------------------------------------------ */

/*
 * Optional token strings, so that results print as text.
 *
 * A vocabulary is read from one of three formats, told apart by content:
 * - Hugging Face `vocab.json`: a JSON object token -> id (GPT-2, RoBERTa).
 * - Hugging Face `tokenizer.json`: its `model.vocab` object, plus the
 *   `added_tokens` list ([{"id": .., "content": ..}, ...]). A token that is
 *   in both must have the same id and text.
 * - Plain text: one token a line, taken literally; the line number (from 0)
 *   is the id. "\r\n" ends a line like "\n"; a last line without a newline
 *   is a token. A text file whose first non-blank character is '{' is read
 *   as JSON, so such a first token cannot be written in this format.
 * A UTF-8 byte order mark is skipped.
 *
 * GPT-2's byte-level encoding is undone once, at load time: each character
 * of a token stands for one byte (bytes_to_unicode: printable Latin-1
 * characters for themselves, U+0100.. for the other 68 bytes), so `Ġthe`
 * reads " the" and `Ċ` reads "\n". It applies to every vocab.json token, and
 * to tokenizer.json's model.vocab when its decoder is ByteLevel. A token with
 * a character outside that alphabet, an added token and a plain-text token
 * are kept as written. Decoded tokens are bytes: a token may be part of a
 * multi-byte UTF-8 character (GPT-2's "\xE2\x80" is half of "—"), and is
 * returned as those bytes, not repaired; one may even be a NUL byte
 * (GPT-2's id 188), which only `mi_model_token_bytes` shows whole.
 *
 * Ids must be below the model's d_vocab. Ids without a string (a d_vocab
 * padded past the tokenizer's size) are allowed: asking for their string is
 * an MI_ERR_INDEX, so a caller never mistakes a placeholder for a token.
 */

/**
 * Loads a vocabulary file into the model, replacing any earlier one (which
 * stays in place when loading fails). Strings returned for the earlier one
 * become invalid.
 *
 * @param model  in/out: the model; not shared with other threads during the call
 * @param path   in: a vocab.json, tokenizer.json or text file. A name ending
 *               in ".txt" is read as one token a line and one ending in
 *               ".json" as JSON, whatever its first character (a text
 *               vocabulary may begin with the token "{"); any other name is
 *               detected from the content, as `mi_model_load_vocab_memory` does.
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_IO (cannot open or
 *         read, not a regular file: a FIFO is refused without waiting);
 *         MI_ERR_TRUNCATED (the file shrank while it was read);
 *         MI_ERR_OUT_OF_MEMORY; and as
 *         `mi_model_load_vocab_memory`. Messages start with the path.
 */
MI_API mi_status mi_model_load_vocab(mi_model *model, const char *path);

/**
 * `mi_model_load_vocab` from a buffer holding a file's bytes (copied; the
 * caller keeps its buffer).
 *
 * @param data,size  in: the file's contents
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_FORMAT (empty, not
 *         valid JSON with jansson's line and column, a duplicate key, an id
 *         that is not an integer or is negative, two different tokens with
 *         one id, no token at all, a malformed added_tokens entry, a NUL in
 *         a text line); MI_ERR_INDEX (an id >= d_vocab, or more text lines
 *         than d_vocab; the message names the token and its id);
 *         MI_ERR_UNSUPPORTED (a tokenizer.json whose model.vocab is a list,
 *         as Unigram models have); MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_model_load_vocab_memory(mi_model *model, const void *data, size_t size);

/**
 * The readable string of token `id`: decoded, NUL-terminated.
 *
 * @param out    receives the string (borrowed: valid until the model is freed
 *               or loads another vocabulary), or NULL on failure
 * @param model  in: a model with a vocabulary
 * @param id     the token id, < d_vocab
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_STATE (no vocabulary
 *         loaded); MI_ERR_INDEX (id >= d_vocab, or an id without a string).
 */
MI_API mi_status mi_model_token_str(const char **out, const mi_model *model, size_t id);

/**
 * `mi_model_token_str` with the length, for tokens whose bytes include a
 * NUL: `*out` holds `*out_len` bytes, then a NUL.
 *
 * @param out,out_len  receive the bytes (borrowed, as mi_model_token_str)
 *                     and their count; NULL and 0 on failure
 * @return as `mi_model_token_str`.
 */
MI_API mi_status mi_model_token_bytes(const char **out, size_t *out_len,
                                      const mi_model *model, size_t id);

/**
 * The id of the token whose decoded string is `text` (" the" gives GPT-2's
 * 262). The spelling in the file is accepted too ("Ġthe" also gives 262)
 * when it is no token's decoded string. When several ids have one string
 * (repeated lines of a text file) the lowest id is returned. A hash lookup.
 *
 * @param out    receives the id, or SIZE_MAX on failure
 * @param model  in: a model with a vocabulary
 * @param text   in: NUL-terminated
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_STATE (no vocabulary
 *         loaded); MI_ERR_INDEX (no such token; the message quotes it).
 */
MI_API mi_status mi_model_token_id(size_t *out, const mi_model *model, const char *text);

/* (end of section: Vocabulary) */

/* ------------------------------------------------------------------------ */
/* Tokenizer                                                                */
/* ------------------------------------------------------------------------ */

/*
 * Text to token ids, exactly as the reference encoders give them.
 *
 * A tokenizer is read from:
 * - GPT-2's byte-level BPE: `vocab.json` (or `encoder.json`) and its merges
 *   file (`merges.txt` or `vocab.bpe`: an optional first line "#version...",
 *   then one merge "a b" a line, the rank being its order).
 * - Hugging Face `tokenizer.json` whose model is BPE and whose pre-tokenizer
 *   is ByteLevel (alone or the only member of a Sequence): model.vocab,
 *   model.merges (strings "a b" or pairs ["a", "b"]), model.ignore_merges,
 *   added_tokens (matched in the text before anything else, leftmost and
 *   longest first; those with "normalized": false before the others),
 *   ByteLevel's add_prefix_space and use_regex; the normalizer may be absent
 *   or NFC (text that NFC could change is then refused; see below).
 *   post_processor is ignored: a beginning-of-sequence token is added only
 *   when the caller asks (MI_TOKENIZE_PREPEND_BOS).
 * - One token a line (the word-level vocabularies shipped with libmi): the
 *   text is split at spaces, tabs, "\n" and "\r", and each word must be a
 *   token (the lowest id of a repeated line).
 * Anything else is refused by name with MI_ERR_UNSUPPORTED, never
 * approximated: another model type (Unigram, WordPiece, WordLevel),
 * byte-fallback BPE, BPE dropout, subword prefixes or suffixes, another
 * pre-tokenizer or normalizer, an added token with lstrip, rstrip or
 * single_word.
 *
 * Byte-level BPE splits the text with GPT-2's pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * with \p{L}, \p{N} and \s as ECMAScript's /u regular expressions define
 * them (the reference encoder's; Unicode 17.0 tables generated by
 * tools/gen-unicode-tables.js). Each piece's UTF-8 bytes are merged by rank
 * as GPT-2's bpe() does: the lowest-ranked pair present, all occurrences
 * left to right, again. Text need not be valid UTF-8: a byte that does not
 * start a valid sequence (a stray continuation byte, a truncated sequence,
 * an overlong form, a surrogate, a code point past U+10FFFF) is a character
 * of its own, neither letter, number nor space, and is encoded by its byte
 * token, as GPT-2 encodes such bytes kept with Python's surrogateescape.
 *
 * Beginning of sequence: no token is added unless the caller passes
 * MI_TOKENIZE_PREPEND_BOS (Python `prepend_bos=True`, the mi command's
 * `--prepend-bos`). The BOS token is the first of "<|endoftext|>",
 * "<|begin_of_text|>", "<s>", "<bos>", "<BOS>" the vocabulary has.
 *
 * Encoding costs time linear in the text; each distinct word is merged once
 * a call. Memory: the tokenizer, and scratch that grows with the text only.
 * A loaded tokenizer is never changed: any number of threads may encode
 * with it at once.
 */

/** A loaded tokenizer (opaque). */
typedef struct mi_tokenizer mi_tokenizer;

/** mi_tokenizer_encode flags. */
enum {
  /** Put the beginning-of-sequence token first (see mi_tokenizer_bos). */
  MI_TOKENIZE_PREPEND_BOS = 1u << 0
};

/**
 * Loads a tokenizer (constructor).
 *
 * @param out          receives the tokenizer (owned: mi_tokenizer_free), or
 *                     NULL on failure
 * @param vocab_path   in: a vocab.json / encoder.json, a tokenizer.json or a
 *                     text file of one token a line (told apart as
 *                     mi_model_load_vocab does)
 * @param merges_path  in: the merges file of a vocab.json; NULL for the others
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL out or vocab_path, a vocab.json
 *         without merges, merges for another format); MI_ERR_IO (cannot open
 *         or read a file); and as `mi_tokenizer_load_memory`. Messages start
 *         with the file names.
 */
MI_API mi_status mi_tokenizer_load(mi_tokenizer **out, const char *vocab_path,
                                   const char *merges_path);

/**
 * `mi_tokenizer_load` from buffers holding the files' bytes (copied).
 *
 * @param out                receives the tokenizer (owned), or NULL on failure
 * @param vocab,vocab_size   in: the vocabulary file's bytes
 * @param merges,merges_size in: the merges file's bytes, or NULL (and 0)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL out or vocab, a vocab.json
 *         without merges, merges for another format); MI_ERR_FORMAT (empty,
 *         invalid JSON, an id that is not a non-negative integer, two tokens
 *         with one id, a merges line that is not two tokens and one space or
 *         names a token the vocabulary lacks or makes one it lacks, a pair
 *         listed twice (a rank collision), a byte without its single-byte
 *         token, a malformed added token; the message names the line or
 *         entry); MI_ERR_UNSUPPORTED (a tokenizer libmi does not implement,
 *         named); MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_tokenizer_load_memory(mi_tokenizer **out, const void *vocab,
                                          size_t vocab_size, const void *merges,
                                          size_t merges_size);

/** Frees a tokenizer (destructor); NULL is a no-op. */
MI_API void mi_tokenizer_free(mi_tokenizer *tokenizer);

/**
 * Encodes text into token ids.
 *
 * @param out        out: room for `capacity` ids (may be NULL when capacity is
 *                   0). A text of len bytes never has more than len + 1 ids
 *                   (with the BOS token), so that many always suffices.
 * @param capacity   the number of ids out holds
 * @param out_count  receives the number of ids of the text, also when they
 *                   do not fit (MI_ERR_SHAPE; ids past capacity are not
 *                   written); 0 on other failures
 * @param tokenizer  in: the tokenizer
 * @param text,len   in: the text's bytes (UTF-8, not NUL-terminated; NULL
 *                   when len is 0)
 * @param flags      MI_TOKENIZE_* bits, or 0
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL out_count or tokenizer, NULL
 *         out with capacity > 0, NULL text with len > 0, unknown flags);
 *         MI_ERR_SHAPE (capacity below the count); MI_ERR_INDEX (a word that
 *         is not a token of a word-level vocabulary; the message quotes it);
 *         MI_ERR_UNSUPPORTED (MI_TOKENIZE_PREPEND_BOS and no BOS token; text
 *         holding a character that NFC may change, for a tokenizer.json with
 *         an NFC normalizer; the message names the character);
 *         MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_tokenizer_encode(size_t *out, size_t capacity, size_t *out_count,
                                     const mi_tokenizer *tokenizer, const char *text,
                                     size_t len, unsigned flags);

/**
 * The bytes of token `id` as the tokenizer matches them (decoded from the
 * byte-level alphabet; an added token as written). Concatenating the bytes
 * of a BPE encoding gives back the text.
 *
 * @param out,out_len  receive the bytes (borrowed: valid until the tokenizer
 *                     is freed; NUL-terminated) and their count; NULL and 0 on
 *                     failure
 * @param tokenizer    in: the tokenizer
 * @param id           the token id
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_INDEX (no token has
 *         that id).
 */
MI_API mi_status mi_tokenizer_token_bytes(const char **out, size_t *out_len,
                                          const mi_tokenizer *tokenizer, size_t id);

/**
 * The beginning-of-sequence token that MI_TOKENIZE_PREPEND_BOS puts first.
 *
 * @param out        receives its id, or SIZE_MAX on failure
 * @param tokenizer  in: the tokenizer
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_UNSUPPORTED (the
 *         vocabulary has none of the names the section lists).
 */
MI_API mi_status mi_tokenizer_bos(size_t *out, const mi_tokenizer *tokenizer);

/**
 * One past the largest token id the tokenizer knows (50257 for GPT-2).
 *
 * @param out        receives the count, 0 on failure
 * @param tokenizer  in: the tokenizer
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL).
 */
MI_API mi_status mi_tokenizer_vocab_size(size_t *out, const mi_tokenizer *tokenizer);

/**
 * Loads a tokenizer into the model together with its vocabulary (the token
 * strings of mi_model_token_str), replacing both; on failure the earlier
 * ones stay. `mi_model_load_vocab` of a tokenizer.json or a text file loads
 * the tokenizer those files describe too; a vocab.json needs its merges and
 * so this call.
 *
 * @param model        in/out: the model; not shared with other threads during
 *                     the call
 * @param vocab_path   in: as mi_tokenizer_load
 * @param merges_path  in: as mi_tokenizer_load (NULL but for a vocab.json)
 * @return as `mi_tokenizer_load`, plus MI_ERR_INDEX (a token id >= the
 *         model's d_vocab) and the statuses of `mi_model_load_vocab`.
 */
MI_API mi_status mi_model_load_tokenizer(mi_model *model, const char *vocab_path,
                                         const char *merges_path);

/**
 * `mi_model_load_tokenizer` from buffers (copied).
 *
 * @param model              in/out: the model
 * @param vocab,vocab_size   in: the vocabulary file's bytes
 * @param merges,merges_size in: the merges file's bytes, or NULL (and 0)
 * @return as `mi_tokenizer_load_memory`, plus MI_ERR_INDEX (an id >= d_vocab)
 *         and the statuses of `mi_model_load_vocab_memory`.
 */
MI_API mi_status mi_model_load_tokenizer_memory(mi_model *model, const void *vocab,
                                                size_t vocab_size, const void *merges,
                                                size_t merges_size);

/**
 * The model's tokenizer, for mi_tokenizer_encode.
 *
 * @param out    receives it (borrowed: valid until the model is freed or loads
 *               another vocabulary), or NULL on failure
 * @param model  in: the model
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_STATE (no vocabulary,
 *         or a vocab.json loaded without its merges); MI_ERR_UNSUPPORTED or
 *         MI_ERR_FORMAT (the vocabulary's file describes a tokenizer libmi
 *         does not implement, or a malformed one: the message says which, as
 *         mi_tokenizer_load_memory would).
 */
MI_API mi_status mi_model_tokenizer(const mi_tokenizer **out, const mi_model *model);

/* (end of section: Tokenizer) */

/* ------------------------------------------------------------------------ */
/* BLIS kernels and threads                                                 */
/* ------------------------------------------------------------------------ */

/*
 * How the large products run: which BLIS kernel set, how many threads.
 *
 * Every large product runs through BLIS (Debian's libblis 0.9 and later).
 *
 * Kernel sets. BLIS chooses its kernels once per process, at its first use,
 * from the CPU or from the environment variable BLIS_ARCH_TYPE read as the
 * number of its `arch_t` enum (0 = skx, 3 = haswell, 6 = zen3, 7 = zen2,
 * 8 = zen, 25 = generic; -1 = its own choice). Its own choice is slow on
 * some machines: `generic` on AMD EPYC processors it does not know (those
 * with AVX-512), `haswell` on Xeons with AVX-512 (about 2× slower than skx
 * for circuit products). libmi never changes this behind the caller's back:
 * call `mi_blis_select_fast_kernels()` first thing in `main()` to opt in.
 * The `mi` command and the benchmark opt in by default.
 *
 * Threads. `mi_set_num_threads` sets how many threads every later libmi
 * call computes with; BLIS's global state is never touched. With 0 (the
 * default) BLIS's own setting applies: BLIS_NUM_THREADS, else
 * OMP_NUM_THREADS, else one thread. libmi cuts each large product (and
 * the top-k stream, and a report's per-head eigenvalues) into one slice a
 * thread, each slice a BLIS call with a per-call `rntm_t` of one thread:
 * BLIS's own threads meet at spin barriers inside every GEMM, which
 * collapse when the cores are shared with other work (measured: a 2-thread
 * sgemm at 7 GFLOP/s on a busy 2-core machine, against about 90 sliced). Debian links `libblis.so` to the OpenMP
 * variant (`libblis-openmp`); the pthreads and serial variants
 * (`libblis-pthread`, `libblis-serial`) are chosen system-wide with
 * `update-alternatives --config libblis.so.4-x86_64-linux-gnu`. With the
 * OpenMP variant, do not fork() after libmi has run a threaded product (the
 * child may hang in OpenMP's thread pool).
 *
 * LAPACK (the double-precision eigen and singular value work) runs on the
 * BLAS that Debian's libblas alternative provides, BLIS's by default.
 */

/**
 * Opts this process in to the fastest BLIS kernel set its CPU runs: skx
 * where AVX-512 (F, DQ, CD, BW, VL) is present; else, with AVX2 and FMA,
 * zen3/zen2/zen on the matching AMD processors and haswell otherwise; else
 * BLIS's own choice. It sets the environment variable BLIS_ARCH_TYPE of
 * this process (setenv; not thread-safe against concurrent getenv, so call
 * it at start-up, before other threads run), which BLIS reads at its first
 * use. When BLIS_ARCH_TYPE is already set, the caller's value wins and is
 * only checked, as `mi_blis_kernel_set` would check it.
 *
 * It cannot affect a BLIS that has already started: libmi refuses once it
 * has itself called BLIS or LAPACK. BLIS used directly by the program before
 * this call is not detected; then the call has no effect.
 *
 * @return MI_OK; MI_ERR_STATE when libmi has already used BLIS;
 *         MI_ERR_INVALID_ARGUMENT when a BLIS_ARCH_TYPE the caller set is
 *         one BLIS would abort on or this CPU cannot run (see below);
 *         MI_ERR_OUT_OF_MEMORY when setenv fails.
 */
MI_API mi_status mi_blis_select_fast_kernels(void);

/**
 * Reports the kernel set BLIS uses in this process ("skx", "zen3",
 * "haswell", "generic", ...), starting BLIS if it has not started.
 *
 * Before libmi's first BLIS call (this one included) it checks
 * BLIS_ARCH_TYPE, because BLIS 0.9 aborts the process on a number it has no
 * kernels for and reads any text as a number ("" and "skx" as 0, skx's
 * AVX-512 kernels, which fault on a CPU without AVX-512). Every libmi
 * function that computes returns the same MI_ERR_INVALID_ARGUMENT for such
 * a value instead of letting BLIS abort.
 *
 * @param out  receives static text (borrowed, valid for the process)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT for NULL or a BLIS_ARCH_TYPE that
 *         is not a whole number, names no kernel set of this BLIS, or names
 *         one this CPU cannot run.
 */
MI_API mi_status mi_blis_kernel_set(const char **out);

/**
 * Sets how many threads each later libmi BLIS call uses, process-wide
 * (an atomic: safe to call from any thread; calls already running keep
 * their count).
 *
 * @param n  threads per call; 0 = BLIS's own setting (see above)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT when n > 4096.
 */
MI_API mi_status mi_set_num_threads(size_t n);

/** The value last given to mi_set_num_threads (0 = BLIS's own setting). */
MI_API size_t mi_get_num_threads(void);

/* (end of section: BLIS kernels and threads) */

/* ------------------------------------------------------------------------ */
/* Circuits                                                                 */
/* ------------------------------------------------------------------------ */

/*
 * A circuit is a matrix kept as a product of factors, never formed whole
 * unless the caller asks.
 *
 * A circuit is an n × m matrix M = A·B with A: n × r and B: r × m in
 * float32, r small (d_head, d_model, or a product's inner rank). Queries
 * answer from the factors; only mi_circuit_rows/cols/dense write n × m
 * numbers, into the caller's buffer.
 *
 * The circuits of head (l, h), in the row-vector form the library computes
 * (rows index what is read first), and in the paper's column-vector
 * notation, which is the transpose (mi_circuit_transpose is free):
 *
 * | constructor            | matrix (row form)          | rows × cols                | paper            |
 * |------------------------|----------------------------|----------------------------|------------------|
 * | qk(TOKEN, TOKEN)       | W_E W_Q W_Kᵀ W_Eᵀ          | query (destination) token × key (source) token | W_Eᵀ W_QK W_E |
 * | qk(POS, POS)           | W_pos W_Q W_Kᵀ W_posᵀ      | query position × key position | W_posᵀ W_QK W_pos |
 * | qk(TOKEN, POS)         | W_E W_Q W_Kᵀ W_posᵀ        | query token × key position | W_posᵀ W_QK W_E  |
 * | qk(POS, TOKEN)         | W_pos W_Q W_Kᵀ W_Eᵀ        | query position × key token | W_Eᵀ W_QK W_pos  |
 * | ov                     | W_E W_V W_O W_U            | source token × output token (logit) | W_U W_OV W_E (transposed) |
 * | direct                 | W_E W_U                    | input token × output token | W_U W_E          |
 *
 * with W_QK = W_Q W_Kᵀ and W_OV = W_V W_O; W_K and W_V are those of the
 * key/value head the query head reads (grouped-query models). The weights
 * are the model's as they are when the circuit is made (folded and centred
 * if processed). A token QK circuit scores a query token against a key
 * token as if each were alone in the residual stream (no positional part).
 *
 * Shortformer models (MI_POSITIONAL_SHORTFORMER): the query of token x at
 * position i is (x̂ W_Q + b_Q) + W_pos[i] W_Q°, with x̂ = LN(resid) and W_Q°
 * the weights before any processing (keys likewise). A TOKEN side is
 * E W_Q (+ 1 b_Q under MI_QK_BIAS) with the model's token-side weights; a
 * POS side is W_pos W_Q° (W_pos W_K°) and takes no bias, which goes with
 * LN(resid). So a head's four circuits split its score exactly: under
 * MI_QK_BIAS | MI_QK_SCALE, qk(TOKEN,TOKEN) + qk(TOKEN,POS) + qk(POS,TOKEN)
 * + qk(POS,POS) at (x, i; y, j) is the pre-softmax score of query (x, i)
 * against key (y, j) when the normalised inputs are the W_E rows (layer 0's
 * score exactly, in a model without LayerNorm). The positional circuits of
 * a folded or processed model equal those of the raw one.
 *
 * Lifetime: a circuit keeps its model alive (a reference count), so model
 * and circuits may be freed in any order. The direct path reads W_E and
 * W_U in place; other circuits compute their factors once, at creation.
 * A model's weights must not change while circuits made from it exist.
 * Circuits are immutable: any number of threads may query one at once.
 *
 * Cost: a token circuit's factors are d_vocab × d_head (12.9 MB for GPT-2)
 * and its creation one d_vocab × d_model × d_head product. Queries that
 * stream (top-k) use one scratch tile of at most 256 × 4080 floats (4 MiB)
 * per thread, whatever n and m; under the fused AVX-512/AVX2 kernels
 * instead the second factor packed once (m × d_head floats, 12.3 MiB for
 * GPT-2, taken up to 48 MiB and rounded up to 2 MiB) and about 50 KiB a
 * thread at d_head 64.
 */

/** A matrix kept as a product of two factors (opaque, reference-counted). */
typedef struct mi_circuit mi_circuit;

/** Which embedding a side of a QK circuit reads. */
typedef enum mi_embedding {
  MI_EMBED_TOKEN = 0, /**< W_E: rows or columns are tokens (d_vocab) */
  MI_EMBED_POS = 1    /**< W_pos: rows or columns are positions (n_ctx) */
} mi_embedding;

/** Bits of mi_circuit_qk's `flags`. */
enum {
  /**
   * Include the query and key biases: the score is
   * (x W_Q + b_Q)(y W_K + b_K)ᵀ, exactly what the forward pass computes
   * before the softmax. In the factored form each factor row gets its
   * bias added: A = E_q W_Q + 1 b_Q, Bᵀ = E_k W_K + 1 b_K, so the rank stays
   * d_head. (For the bare matrices W_QK this is the augmented form
   * [W_Q; b_Q][W_K; b_K]ᵀ acting on [x, 1], which grows by one rank.)
   * A model without biases ignores the bit.
   */
  MI_QK_BIAS = 1u << 0,
  /** Multiply by 1/√d_head, as attention does before the softmax. */
  MI_QK_SCALE = 1u << 1
};

/**
 * The QK circuit of head (layer, head): query side × key side scores.
 *
 * @param out    receives the circuit (owned; mi_circuit_free), NULL on failure
 * @param model  in: the model (a reference is taken)
 * @param query,key  which embedding each side reads (see the table above)
 * @param flags  MI_QK_* bits
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, unknown embedding or flag
 *         bits); MI_ERR_INDEX (layer or head out of range);
 *         MI_ERR_UNSUPPORTED (MI_EMBED_POS and the model has no W_pos);
 *         MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_circuit_qk(mi_circuit **out, const mi_model *model, size_t layer,
                               size_t head, mi_embedding query, mi_embedding key,
                               unsigned flags);

/**
 * The token OV circuit of head (layer, head): W_E W_V W_O W_U, d_vocab ×
 * d_vocab, row = the source token attended to, column = the output logit it
 * moves. Biases (b_V, b_O) add the same vector to every row and are left
 * out. A = W_E W_V (d_vocab × d_head), B = W_O W_U (d_head × d_vocab).
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_INDEX (layer or
 *         head out of range); MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_circuit_ov(mi_circuit **out, const mi_model *model, size_t layer,
                               size_t head);

/**
 * The direct path W_E W_U (input token × output token, rank d_model), with
 * A = W_E and B = W_U read in place from the model.
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_circuit_direct(mi_circuit **out, const mi_model *model);

/**
 * A circuit from caller factors, copied (the caller may free them after):
 * A is n × r at A[i * lda + t], B is r × m at B[t * ldb + j].
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, a zero dimension,
 *         lda < r or ldb < m); MI_ERR_OUT_OF_MEMORY (also on size overflow);
 *         MI_ERR_NONFINITE (a factor element is NaN or infinite, named).
 */
MI_API mi_status mi_circuit_from_factors(mi_circuit **out, size_t n, size_t r, size_t m,
                                         const float *A, size_t lda, const float *B,
                                         size_t ldb);

/**
 * The transpose Mᵀ = Bᵀ Aᵀ, sharing the factors (no copy, no arithmetic).
 * Turns the row form into the paper's column form and back.
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_circuit_transpose(mi_circuit **out, const mi_circuit *circuit);

/**
 * The product first · second (first's columns must match second's rows),
 * still factored: A₁ (B₁ A₂) B₂, with the small r₁ × r₂ middle folded into
 * the factor of the larger rank, so the result has rank min(r₁, r₂) and
 * shares the other factor. Costs about r₁·r₂·max(n, m) flops. Note that
 * composing two token circuits contracts their shared token axis:
 * compose(ov₁, ov₂) is W_E W_OV¹ W_U · W_E W_OV² W_U, which passes through
 * W_U W_E between the heads. The virtual head of the residual stream,
 * W_E W_OV¹ W_OV² W_U, is mi_circuit_path (see "Paths").
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_SHAPE (inner
 *         dimensions differ); MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_circuit_compose(mi_circuit **out, const mi_circuit *first,
                                    const mi_circuit *second);

/** Frees a circuit (its model when it held the last reference). NULL is a no-op. */
MI_API void mi_circuit_free(mi_circuit *circuit);

/**
 * The circuit's shape and factor rank r (an upper bound on the matrix's
 * rank). Any of the out pointers may be NULL.
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT when circuit is NULL.
 */
MI_API mi_status mi_circuit_shape(size_t *out_rows, size_t *out_cols, size_t *out_rank,
                                  const mi_circuit *circuit);

/**
 * One entry M[i][j], as a dot product of two factor rows in double.
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_INDEX (i or j out
 *         of range); MI_ERR_NUMERIC (the entry overflowed: not finite).
 */
MI_API mi_status mi_circuit_entry(double *out, const mi_circuit *circuit, size_t i,
                                  size_t j);

/**
 * Rows i0..i1 (i1 exclusive) of the matrix into out[(i - i0) * ld + j],
 * j < m, computed by BLIS in float32. Nothing else of `out` is written.
 *
 * @param out  out: at least (i1 - i0 - 1) * ld + m floats
 * @param ld   ≥ m (the circuit's columns)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, ld < m, i0 ≥ i1);
 *         MI_ERR_INDEX (i1 > n); MI_ERR_OUT_OF_MEMORY (buffer size overflows);
 *         MI_ERR_NUMERIC (an entry overflowed float32, named; the buffer
 *         then holds the product as computed).
 */
MI_API mi_status mi_circuit_rows(float *out, size_t ld, const mi_circuit *circuit,
                                 size_t i0, size_t i1);

/**
 * Columns j0..j1 (exclusive) into out[i * ld + (j - j0)], i < n.
 *
 * @param ld  ≥ j1 - j0
 * @return as mi_circuit_rows, with the roles of rows and columns swapped.
 */
MI_API mi_status mi_circuit_cols(float *out, size_t ld, const mi_circuit *circuit,
                                 size_t j0, size_t j1);

/**
 * The whole n × m matrix into out[i * ld + j]. For a token circuit that is
 * 10 GB: prefer the streaming queries.
 *
 * @return as mi_circuit_rows.
 */
MI_API mi_status mi_circuit_dense(float *out, size_t ld, const mi_circuit *circuit);

/** Bits of mi_circuit_topk's `flags`. */
enum {
  MI_TOPK_COLUMNS = 1u << 0, /**< best rows of each column (default: best columns of each row) */
  MI_TOPK_SMALLEST = 1u << 1 /**< smallest values (default: largest) */
};

/**
 * The k largest (or smallest) entries of each row i0..i1 (exclusive) of
 * the matrix, or with MI_TOPK_COLUMNS of each column i0..i1. Line
 * i - i0 of the output holds k (index, value) pairs, best first:
 * out_index[(i - i0) * ld + t] is the column (row, for MI_TOPK_COLUMNS) of
 * the t-th best entry and out_value[...] its value. Ties go to the lower
 * index. A line holding an entry that overflowed float32 (an infinity, or
 * the NaN of ∞ − ∞) is refused with MI_ERR_NUMERIC rather than ranked:
 * NaN compares false with everything and would leave the order arbitrary.
 *
 * The matrix is streamed through a scratch tile (at most 256 × 4080
 * floats, allocated once per call), each tile scanned while in cache, so
 * memory does not grow with n or m. With T threads (mi_set_num_threads,
 * else BLIS's default) the lines are cut into T slices, each streamed by
 * its own thread with its own tile and single-threaded BLIS. Slices of
 * i0..i1 let callers split the work further themselves.
 *
 * @param out_index,out_value  out: (i1 - i0 - 1) * ld + k elements each
 * @param ld  ≥ k
 * @param k   1 ≤ k ≤ the length of a line (m for rows, n for columns)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, unknown flag bits, k = 0
 *         or larger than a line, ld < k, i0 ≥ i1); MI_ERR_INDEX (i1 past
 *         the last line); MI_ERR_OUT_OF_MEMORY; MI_ERR_NUMERIC (an entry
 *         overflowed; the outputs are then unspecified).
 */
MI_API mi_status mi_circuit_topk(size_t *out_index, float *out_value, size_t ld,
                                 const mi_circuit *circuit, size_t k, unsigned flags,
                                 size_t i0, size_t i1);

/**
 * Mean and standard deviation (population: over all m entries) of each row
 * i0..i1 (exclusive) of the matrix, or with MI_TOPK_COLUMNS of each column
 * i0..i1 (over all n entries), in closed form from the factors, without
 * forming a row: with b̄ the mean of B's columns and Σ = (1/m)·Σ_j (b_j −
 * b̄)(b_j − b̄)ᵀ their r × r covariance, row i's mean is a_i·b̄ and its
 * variance a_iᵀ Σ a_i (columns: the same with A's rows). So z-scores
 * (x − mean) / std of any entry, or "best entries by z-score" (a row's are
 * its top-k), need no pass over the matrix.
 *
 * Accuracy: everything in double from the float32 factors. Σ is built from
 * centred columns, so there is no E[x²] − mean² cancellation: a row whose
 * mean is far from 0 keeps its spread. What remains is rounding in the
 * quadratic form, an absolute error of about 1e-16·‖a_i‖²·‖Σ‖ in the
 * variance: a row with no spread (a_i = 0, or a_i in Σ's null space, e.g.
 * a constant row) gets std 0 or a value at that level (≈ 1e-8·‖a_i‖·‖Σ‖^½),
 * not a meaningful one; negative rounding is cut to 0. These are the
 * statistics of the exact product of the factors; a float32 GEMM's entries
 * (mi_circuit_rows) differ from it by their own rounding. Non-finite
 * factor entries give NaN.
 *
 * Cost: two passes over the other factor (r² per column, in double BLIS
 * on the calling thread) and r² per line asked for; call it once for many
 * lines rather than line by line.
 *
 * @param out_mean  out: i1 − i0 means, or NULL to skip them
 * @param out_std   out: i1 − i0 standard deviations (≥ 0), or NULL
 * @param circuit   in: the circuit (borrowed)
 * @param i0,i1     lines i0 … i1 − 1: rows, or columns with MI_TOPK_COLUMNS
 * @param flags     0 or MI_TOPK_COLUMNS (MI_TOPK_SMALLEST is refused)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL circuit, both outputs NULL,
 *         unknown flag bits, i0 ≥ i1); MI_ERR_INDEX (i1 past the last line);
 *         MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_circuit_row_stats(double *out_mean, double *out_std,
                                      const mi_circuit *circuit, size_t i0, size_t i1,
                                      unsigned flags);

/**
 * The Frobenius norm ‖AB‖_F = √tr((AᵀA)(BBᵀ)) from the two r × r Gram
 * matrices, accumulated in double.
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_OUT_OF_MEMORY;
 *         MI_ERR_NUMERIC (a factor holds an infinity from an overflowed
 *         product, so the norm is not finite).
 */
MI_API mi_status mi_circuit_frobenius_norm(double *out, const mi_circuit *circuit);

/**
 * The `count` largest singular values, decreasing, in double: QR of A and
 * of Bᵀ (A = Q_A R_A, Bᵀ = Q_B R_B), then the SVD of the small R_A R_Bᵀ.
 * Values past the factor rank are 0.
 *
 * @param out    out: count doubles
 * @param count  1 ≤ count ≤ min(n, m)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, count out of range);
 *         MI_ERR_NUMERIC (LAPACK did not converge, or a factor holds an
 *         overflowed infinity); MI_ERR_OUT_OF_MEMORY
 *         (it needs (n + m)·r doubles of scratch).
 */
MI_API mi_status mi_circuit_singular_values(double *out, size_t count,
                                            const mi_circuit *circuit);

/**
 * The eigenvalues of a square circuit (n = m) of largest modulus, as
 * (real, imaginary) pairs, from the r × r matrix B·A (formed in double):
 * AB and BA have the same non-zero eigenvalues, and AB's others are 0.
 * Sorted by decreasing modulus; a complex conjugate pair is adjacent,
 * positive imaginary part first.
 *
 * @param out_re,out_im  out: count doubles each
 * @param count  1 ≤ count ≤ min(n, r): the eigenvalues past that are 0
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, count out of range);
 *         MI_ERR_SHAPE (the circuit is not square); MI_ERR_NUMERIC
 *         (geev did not converge, or B·A is not finite: a factor holds an
 *         overflowed infinity); MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_circuit_eigenvalues(double *out_re, double *out_im, size_t count,
                                        const mi_circuit *circuit);


/* (end of section: Circuits) */

/* ------------------------------------------------------------------------ */
/* Eigenvalue summaries and head reports                                    */
/* ------------------------------------------------------------------------ */

/*
 * Whether a head copies, at a glance.
 *
 * The eigenvalues λ of a square circuit say what it does to the token it
 * reads (Elhage et al. 2021, "Detecting copying behavior"): an OV circuit
 * whose eigenvalues are mostly positive real maps a token to itself in the
 * logits (copying); a token QK circuit with mostly positive eigenvalues
 * attends to tokens like the query.
 *
 * "Non-zero" eigenvalue: |λ| > 1e-6 · max|λ|. A circuit of factor rank r
 * has at most r non-zero eigenvalues (those of the r × r matrix B·A); the
 * threshold drops the numerically zero ones that B·A has when r > n, and
 * eigenvalues that small weigh nothing in the sums below.
 */

/** Eigenvalue statistics of one square circuit. */
typedef struct mi_eigen_summary {
  size_t struct_size;     /**< sizeof(mi_eigen_summary) as the caller was compiled */
  /** Σλ / Σ|λ| over the non-zero eigenvalues, in [-1, 1] (Σλ is real: the
   * complex ones come in conjugate pairs); 0 when all are zero. */
  double copying_score;
  /** Σ|λ| over positive real λ, over Σ|λ|: the share of eigenvalue mass
   * that is positive real, in [0, 1]. */
  double positive_real_fraction;
  size_t nonzero;         /**< how many eigenvalues counted as non-zero */
} mi_eigen_summary;

/**
 * Summarises the eigenvalues of a square circuit (see mi_circuit_eigenvalues).
 *
 * @param out  out: the caller sets out->struct_size; that many bytes are filled
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, struct_size below sizeof(size_t));
 *         MI_ERR_SHAPE (not square); MI_ERR_NUMERIC; MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_circuit_eigen_summary(mi_eigen_summary *out, const mi_circuit *circuit);

/**
 * The previous-token signature of a positional QK circuit (query position ×
 * key position, mi_circuit_qk(POS, POS)): the share of query positions
 * p = 1 … n-1 whose highest score among the keys it may attend to
 * (positions 0 … p, causal) is at p - 1. Ties go to the lower position.
 * Near 1 for a previous-token head.
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_SHAPE (not square,
 *         or fewer than 2 positions); MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_circuit_prev_token_share(double *out, const mi_circuit *circuit);

/** One head's line of mi_model_head_report. */
typedef struct mi_head_report {
  size_t struct_size; /**< sizeof(mi_head_report) as the caller was compiled */
  size_t layer, head;
  /** Summary of the token OV circuit W_E W_V W_O W_U (d_vocab × d_vocab). */
  mi_eigen_summary ov;
  /** Summary of the token QK circuit (MI_EMBED_TOKEN on both sides). */
  mi_eigen_summary qk;
  /** mi_circuit_prev_token_share of the positional QK circuit; NaN when
   * not asked for, the model has no W_pos or n_ctx < 2 (no position has
   * a previous one). */
  double prev_token_share;
  /*
   * Appended: behaviour on the model's own attention patterns (see
   * mi_model_attention_scores; options.behaviour_* say which sequences).
   * NaN when not asked for (behaviour_sequences = 0), for a model with MLPs
   * (no forward pass), or where no position defines the score.
   */
  /** Mean attention on the previous position (MI_SCORE_PREV_TOKEN). */
  double prev_token_attention;
  /** Mean attention on earlier copies of the query's token (MI_SCORE_DUPLICATE_TOKEN). */
  double duplicate_token_attention;
  /** Mean attention on the position after an earlier copy (MI_SCORE_INDUCTION). */
  double induction_attention;
} mi_head_report;

/** What mi_model_head_report computes. Fill with mi_report_options_init. */
typedef struct mi_report_options {
  size_t struct_size;
  /** MI_QK_* bits for the QK circuits; default MI_QK_BIAS | MI_QK_SCALE
   * (what the forward pass scores). */
  unsigned qk_flags;
  /** Non-zero: also the previous-token share (default 1). Costs one
   * n_ctx × n_ctx positional circuit per head. */
  int prev_token;
  /* Appended: the behavioural scores (mi_head_report's *_attention). */
  /** Random sequences to measure them on (default 16); 0 turns them off.
   * Each costs one forward pass (without logits) of 2·half tokens. */
  size_t behaviour_sequences;
  /** Tokens before the repeat, so each sequence has 2·half tokens; 0
   * (default): 32, or n_ctx / 2 when that is smaller. A value with
   * 2·half > n_ctx fails with MI_ERR_SHAPE. */
  size_t behaviour_half_length;
  /** Seed of mi_model_repeated_tokens (default 1). */
  uint64_t behaviour_seed;
} mi_report_options;

/**
 * Sets `out` to the defaults, struct_size included.
 *
 * @param out          out: the options
 * @param struct_size  in: sizeof *out
 * `struct_size` is the caller's sizeof(*out) (pass `sizeof *out`): at most
 * that many bytes are written, so a caller compiled against an older, smaller
 * header keeps the fields it knows and nothing past them; out->struct_size
 * is set to it when that field fits. NULL out: no-op.
 */
MI_API void mi_report_options_init(mi_report_options *out, size_t struct_size);

/**
 * Eigenvalue summaries of every head of every layer in one call: line
 * l * n_heads + h of `out` is head (l, h).
 *
 * It shares the vocabulary-sized work between all heads: the two Gram
 * products W_U W_E and [W_E, 1]ᵀ[W_E, 1] (d_model × d_model, BLIS float32,
 * about 2 · 2 · d_model² · d_vocab flops), then for each layer one product
 * of those with all its W_V (resp. [W_Q; b_Q]), after which each head
 * needs only its d_head × d_head matrix B·A (W_O · W_U W_E · W_V for OV,
 * [W_K; b_K]ᵀ · Gram · [W_Q; b_Q] for QK) and its eigenvalues (double).
 * The results equal those of mi_circuit_eigen_summary on the head's
 * circuits up to the float32 rounding of the Grams.
 *
 * @param out      out: count lines; the caller sets out[0].struct_size,
 *                 which is also the stride between lines (an array of the
 *                 caller's mi_head_report); each line gets it too
 * @param count    ≥ n_layers · n_heads
 * @param model    in: the model
 * @param options  in: NULL for the defaults
 * With options.behaviour_sequences > 0 (the default) and lines large
 * enough to hold them (struct_size past prev_token_share: callers compiled
 * against an older header get the old fields only, and the forward passes
 * are skipped), the behavioural scores too: mi_model_repeated_tokens with
 * the options' sequences, half length and seed, then
 * mi_model_attention_scores. A model with MLPs gets them as NaN (the rest
 * of its report is computed as usual).
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, struct_size 0, bad option
 *         bits); MI_ERR_SHAPE (count too small; behaviour_half_length with
 *         2·half > n_ctx); MI_ERR_NUMERIC; MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_model_head_report(mi_head_report *out, size_t count,
                                      const mi_model *model,
                                      const mi_report_options *options);


/* (end of section: Eigenvalue summaries and head reports) */

/* ------------------------------------------------------------------------ */
/* Forward pass, paths and attribution                                      */
/* ------------------------------------------------------------------------ */

/*
 * The model as a sum of paths, checked against its own forward pass.
 * Every function here only reads the model: any number of threads may run
 * them on one model at once. Callbacks run on the calling thread.
 */

/**
 * Optional outputs of `mi_model_forward`. Fill with `mi_forward_extras_init`,
 * then point the buffers you want at caller memory; NULL ones are skipped.
 */
typedef struct mi_forward_extras {
  /** sizeof(mi_forward_extras) as the caller was compiled; set by the init. */
  size_t struct_size;
  /**
   * NULL, or the attention patterns: n_layers × n_heads × n × n floats;
   * pattern (l, h) entry (query t, key s) at `patterns[((l·n_heads + h)·n + t)·n + s]`.
   * Each row sums to 1; entries with s > t (the future) are 0.
   */
  float *patterns;
  /** Floats available at `patterns`. */
  size_t patterns_count;
  /**
   * NULL, or the residual stream: (n_layers + 1) × n × d_model floats;
   * block l < n_layers is the stream entering layer l (block 0: W_E[token] +
   * W_pos[position], W_E[token] alone in a shortformer model), block
   * n_layers the stream entering the final LayerNorm.
   */
  float *resid;
  /** Floats available at `resid`. */
  size_t resid_count;
  /**
   * NULL, or n_layers × n_heads scales, head (l, h) at `l·n_heads + h`: each
   * head's output (its attention-weighted values times W_O, what it adds to
   * the stream) is multiplied by its scale before it is added. 0 removes the
   * head (zero ablation), 1 keeps it; NULL keeps every head. Each must be
   * finite. Later layers, their patterns and the logits see the change.
   */
  const float *head_scale;
  /** Floats available at `head_scale`. */
  size_t head_scale_count;
  /**
   * NULL, or n_layers × n_heads vectors of d_model, head (l, h)'s at
   * `(l·n_heads + h)·d_model`: added at every position to what the head adds
   * (after its scale). With scale 0 and the head's mean output over
   * reference inputs (see head_out) this is mean ablation.
   */
  const float *head_bias;
  /** Floats available at `head_bias`. */
  size_t head_bias_count;
  /**
   * NULL, or each head's output: n_layers × n_heads × n × d_model floats,
   * head (l, h) at position t at `((l·n_heads + h)·n + t)·d_model`, as it
   * enters the stream (after head_scale and head_bias; b_O, added once a
   * layer, is not in it): TransformerLens's `hook_result`.
   */
  float *head_out;
  /** Floats available at `head_out`. */
  size_t head_out_count;
} mi_forward_extras;

/**
 * Sets every field of `out` to zero/NULL and sets struct_size.
 *
 * @param out          out: the extras
 * @param struct_size  in: sizeof *out
 * `struct_size` is the caller's sizeof(*out) (pass `sizeof *out`): at most
 * that many bytes are written, so a caller compiled against an older, smaller
 * header keeps the fields it knows and nothing past them; out->struct_size
 * is set to it when that field fits. NULL out: no-op.
 */
MI_API void mi_forward_extras_init(mi_forward_extras *out, size_t struct_size);

/**
 * Runs the model on a token sequence and writes the logits of every position.
 *
 * The model as it holds its weights now (folded or not): x₀ = W_E[token] +
 * W_pos[position]; each layer adds, for every head, softmax(q·kᵀ/√d_head
 * with a causal mask)·v·W_O, with q, k, v read from LayerNorm(x) (normalise
 * with config.ln_eps, then scale by ln1.w and shift by ln1.b; after folding
 * these are 1 and 0) plus b_Q, b_K, b_V, and query head h reading key/value
 * head h / (n_heads / n_kv_heads); then b_O. Logits = LayerNorm_final(x)·W_U
 * + b_U. Parts the model lacks are skipped. A shortformer model
 * (MI_POSITIONAL_SHORTFORMER) starts from x₀ = W_E[token] and reads q and k
 * from LayerNorm(x) + W_pos[position] instead (the same after processing:
 * positions meet the weights as they were), v from LayerNorm(x). Products
 * run in float32 through BLIS, LayerNorm statistics and softmax in double.
 *
 * @param out     out: n × d_vocab logits, row t at out + t·ld
 * @param ld      leading dimension of `out`, ≥ d_vocab
 * @param model   in: the model (borrowed; read only, so threads may share it)
 * @param tokens  in: n token ids, each < d_vocab
 * @param n       tokens, ≥ 1 and ≤ n_ctx when n_ctx > 0
 * @param extras  in: NULL, or optional buffers for patterns, residual
 *                streams and head outputs, and head scales and biases
 *                (ablation: see mi_forward_extras)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL out, model or tokens; n = 0;
 *         ld < d_vocab; (n − 1)·ld overflows; extras.struct_size below
 *         sizeof(size_t) or too large; a head_scale that is not finite);
 *         MI_ERR_UNSUPPORTED (the model has MLPs, MI_PART_MLP);
 *         MI_ERR_SHAPE (n > n_ctx; an extras buffer smaller than its shape);
 *         MI_ERR_INDEX (a token ≥ d_vocab); MI_ERR_OUT_OF_MEMORY (scratch of
 *         about 2·n·d_model + n² + 2·n·n_kv_heads·d_head floats, and n·d_model
 *         more for an unprocessed shortformer model); MI_ERR_NUMERIC (a score,
 *         the residual stream or a logit overflowed float32: named, and the
 *         outputs are then unspecified).
 */
MI_API mi_status mi_model_forward(float *out, size_t ld, const mi_model *model,
                                  const size_t *tokens, size_t n,
                                  const mi_forward_extras *extras);

/*
 * Attribution
 * -----------
 * With every attention pattern A and every LayerNorm scale σ⁻¹ frozen at
 * their values in the forward pass, the model is affine in its residual
 * stream: a LayerNorm reads a part v of the stream as (v − mean(v))·σ⁻¹·w
 * (mean subtraction is linear, so each part carries its own), head (l, h)
 * maps it to A·(that)·W_V·W_O, and the unembedding to (that)·W_U. The logits
 * then split exactly into parts, each a source followed by a path of heads,
 * one head a layer at most, layers increasing:
 *
 * - MI_SOURCE_EMBED: W_E[token] + W_pos[position] (W_E[token] alone in a
 *   shortformer model, whose positions act only through the frozen
 *   patterns and so have no part of their own). Order 0 is the direct
 *   path (through the final LayerNorm into W_U), order 1 a single head,
 *   order ≥ 2 a virtual head.
 * - MI_SOURCE_VALUE_BIAS: the constant (ln1.b·W_V + b_V)·W_O that head
 *   (l, h) writes whatever it attends to (pattern rows sum to 1); its path
 *   starts with that head. Folding moves ln1.b into b_V: the part is the
 *   same either way.
 * - MI_SOURCE_OUT_BIAS: b_O of layer `source_layer`, read by later heads.
 * - MI_SOURCE_UNEMBED_BIAS: ln_final.b·W_U + b_U (order 0).
 *
 * b_Q and b_K, and the query/key side of every head, shape only the
 * patterns, which are frozen: they have no part of their own. With
 * max_order ≥ n_layers the parts sum to the forward logits (up to float32
 * rounding); a smaller max_order leaves out the longer paths.
 */

/** Where a part enters the residual stream (see "Attribution"). */
typedef enum mi_path_source {
  MI_SOURCE_EMBED = 0,
  MI_SOURCE_VALUE_BIAS = 1,
  MI_SOURCE_OUT_BIAS = 2,
  MI_SOURCE_UNEMBED_BIAS = 3
} mi_path_source;

/**
 * One part of the logits, as `mi_model_attribute` reports it. Every pointer
 * is borrowed and valid only during the callback. Fields may be appended.
 */
typedef struct mi_attribution_part {
  mi_path_source source;
  /** MI_SOURCE_OUT_BIAS: the layer whose b_O; MI_SOURCE_VALUE_BIAS: layer of the first head; else 0. */
  size_t source_layer;
  /** Heads on the path. */
  size_t order;
  /** The path's heads in layer order: (layers[i], heads[i]) for i < order. */
  const size_t *layers, *heads;
  /** The positions reported, as in the options; NULL means 0 … n_positions − 1. */
  size_t n_positions;
  const size_t *positions;
  /** With MI_ATTRIBUTE_FULL_LOGITS: n_positions × d_vocab logits (row i: position i); else NULL. */
  const float *logits;
  /** With options.logit_tokens: n_positions values, logit of logit_tokens[i]; else NULL. */
  const double *token_logit;
  /** With options.diff_tokens: logit of logit_tokens[i] − logit of diff_tokens[i]; else NULL. */
  const double *logit_diff;
} mi_attribution_part;

/** Bits of `mi_attribution_options.flags`. */
enum {
  /**
   * Report each part's full logit vector at each position: one
   * n_positions × d_model × d_vocab product a part. Without it, parts carry
   * only the chosen tokens' logits (a few dot products a part).
   */
  MI_ATTRIBUTE_FULL_LOGITS = 1u << 0
};

/** What `mi_model_attribute` reports. Fill with `mi_attribution_options_init`. */
typedef struct mi_attribution_options {
  /** sizeof(mi_attribution_options) as the caller was compiled; set by the init. */
  size_t struct_size;
  /** Longest path (heads); the init sets SIZE_MAX: every path. */
  size_t max_order;
  /** NULL: every position; else n_positions positions, each < n (repeats allowed). */
  const size_t *positions;
  size_t n_positions;
  /** NULL, or one token a reported position: its logit goes to token_logit. */
  const size_t *logit_tokens;
  /** NULL, or one token a reported position to subtract (needs logit_tokens). */
  const size_t *diff_tokens;
  /** MI_ATTRIBUTE_* bits. */
  unsigned flags;
} mi_attribution_options;

/**
 * Sets defaults (all paths, all positions, nothing asked) and struct_size.
 *
 * @param out          out: the options
 * @param struct_size  in: sizeof *out
 * `struct_size` is the caller's sizeof(*out) (pass `sizeof *out`): at most
 * that many bytes are written, so a caller compiled against an older, smaller
 * header keeps the fields it knows and nothing past them; out->struct_size
 * is set to it when that field fits. NULL out: no-op.
 */
MI_API void mi_attribution_options_init(mi_attribution_options *out, size_t struct_size);

/**
 * Receives one part. Return 0 to go on, anything else to stop (the call then
 * returns MI_OK with the parts delivered so far). `user` is the caller's.
 */
typedef int (*mi_attribution_fn)(const mi_attribution_part *part, void *user);

/**
 * Splits the logits of a token sequence into parts (see "Attribution") and
 * hands them to `callback` one at a time, never holding the whole set: the
 * number of paths, ∏(1 + H) for the embedding alone, may be huge. Runs one
 * forward pass first (only over positions up to the last one asked for;
 * patterns are causal), then walks the paths depth first, each layer's
 * values computed once for all the heads that extend a path. Chosen tokens'
 * logits cost a dot product with a gathered column of W_U; full logits are
 * computed for a batch of parts at once (about 256 rows of parts ×
 * positions, one GEMM reading W_U once), so parts reach the callback in
 * batches, in order.
 *
 * Order: the embedding's paths; then for each layer l, each head's value-bias
 * paths and then the paths of b_O[l]; last the unembedding bias. Within a
 * source a path comes before its extensions, extensions in increasing
 * (layer, head). Sources a model lacks (no b_V and no ln1; no b_O; no b_U and
 * no ln_final) are skipped; a source that is there but zero is reported.
 * Up to order k, the embedding contributes Σ over i ≤ k of the products of i
 * distinct layers' head counts (with all orders: ∏(1 + H_l) parts).
 *
 * @param out       out: NULL, or the number of parts delivered
 * @param model     in: the model (borrowed)
 * @param tokens    in: n token ids
 * @param n         tokens, as for mi_model_forward
 * @param options   in: what to report; see mi_attribution_options
 * @param callback  called once a part
 * @param user      passed to callback
 * @return MI_OK (also when the callback stopped the walk);
 *         MI_ERR_INVALID_ARGUMENT (NULL model, tokens, options or callback;
 *         n = 0; bad struct_size or flags; positions without n_positions;
 *         diff_tokens without logit_tokens; options asking for nothing);
 *         MI_ERR_UNSUPPORTED (MLPs); MI_ERR_SHAPE (n > n_ctx);
 *         MI_ERR_INDEX (a token ≥ d_vocab, a position ≥ n);
 *         MI_ERR_OUT_OF_MEMORY (scratch of about L·H·n² + (L + 1)·n·(d_model +
 *         n_kv_heads·d_head) floats, plus max(256, n_positions)·d_vocab
 *         with full logits); MI_ERR_NUMERIC (the forward pass or a part
 *         overflowed float32; parts already handed over were finite).
 */
MI_API mi_status mi_model_attribute(size_t *out, const mi_model *model, const size_t *tokens,
                                    size_t n, const mi_attribution_options *options,
                                    mi_attribution_fn callback, void *user);

/*
 * Composition scores
 * ------------------
 * How much a later head reads what an earlier head writes, from the weights
 * alone (Elhage et al. 2021), in row-vector form with W_OV = W_V·W_O and
 * W_QK = W_Q·W_Kᵀ (both d_model × d_model, rank ≤ d_head; for grouped heads
 * W_K, W_V are the head's key/value head's). For head 1 in layer l1 and head 2
 * in layer l2 > l1:
 *
 *   V-composition: ‖W_OV¹·W_OV²‖_F  / (‖W_OV¹‖_F ‖W_OV²‖_F)  (2 reads 1 as values)
 *   Q-composition: ‖W_OV¹·W_QK²‖_F  / (‖W_OV¹‖_F ‖W_QK²‖_F)  (as queries)
 *   K-composition: ‖W_OV¹·W_QK²ᵀ‖_F / (‖W_OV¹‖_F ‖W_QK²‖_F)  (as keys)
 *
 * These are TransformerLens's `all_composition_scores("V" | "Q" | "K")` on
 * the same weights: process the model as TransformerLens did (fold_ln and
 * centering, MI_PROCESS_TRANSFORMERLENS) to compare numbers. Each score is in
 * [0, 1]; a score means little without the chance level of random matrices
 * of the same shapes, `mi_model_composition_baseline`. In a shortformer
 * model a head's output reaches later heads through LN(resid) only, so
 * W_QK² is the token side (mi_model_get_weight's W_Q, W_K); positions do
 * not compose.
 */

/** Which composition `mi_model_composition_scores` computes. */
typedef enum mi_composition {
  MI_COMPOSE_Q = 0,
  MI_COMPOSE_K = 1,
  MI_COMPOSE_V = 2
} mi_composition;

/**
 * Every head's composition score with every head of every later layer, in
 * factored form: each head is reduced once to d_head × d_model factors L
 * (the earlier head's R(W_V)·W_O) and R (the later head's matrix M as
 * M·Mᵀ = RᵀR), each from the Cholesky factor of a d_head × d_head Gram in
 * double, rounded to float32; then ‖L·Rᵀ‖²_F = ⟨LᵀL, RᵀR⟩_F, so a whole table
 * is one product of the heads' d_model × d_model Grams (upper triangles,
 * streamed tile by tile: none is ever formed whole) in double. Accuracy:
 * float32 factors and double inner products keep every score within about
 * 1e-6 of the exact one, however small (nearly orthogonal heads included).
 * The tiles are summed in an order fixed by the shapes, so the scores are
 * the same bits on any number of threads and in every run.
 * Several kinds at once share work: mi_model_composition_tables.
 *
 * @param out    out: `count` doubles, filled as [n_layers][n_heads][n_layers][n_heads]:
 *               out[((l1·H + h1)·L + l2)·H + h2] is head (l1, h1) composing
 *               into (l2, h2). Entries with l2 ≤ l1 are 0, as in
 *               TransformerLens; so is a pair where either matrix is zero.
 *               All 0 on failure.
 * @param count  doubles at `out`, ≥ (n_layers · n_heads)²
 * @param model  in: the model, as it holds its weights now (borrowed); models
 *               with MLPs are fine (only attention weights are read)
 * @param kind   MI_COMPOSE_Q, _K or _V
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, unknown kind);
 *         MI_ERR_SHAPE (count too small); MI_ERR_OUT_OF_MEMORY (scratch of
 *         2·(L − 1)·H·d_head·d_model floats, about 32 MiB of tiles a
 *         thread, and 16·((L − 1)·H)² doubles); MI_ERR_NUMERIC (a score's factors
 *         overflowed float32: never a NaN score).
 */
MI_API mi_status mi_model_composition_scores(double *out, size_t count, const mi_model *model,
                                             mi_composition kind);

/**
 * Several composition tables at once, as mi_model_composition_scores would
 * give each (the same scores to rounding: tile sizes follow the kinds
 * asked for), sharing the earlier heads' factors and Grams: Q, K and V
 * together took about 80 % of three separate calls (measured, 2 threads
 * on a loaded 2-core machine).
 *
 * @param out      out: `count` doubles: table t (of kinds[t]) at
 *                 out[t · (n_layers · n_heads)²], laid out as in
 *                 mi_model_composition_scores. All 0 on failure.
 * @param count    doubles at `out`, ≥ n_kinds · (n_layers · n_heads)²
 * @param model    in: the model (borrowed), as for mi_model_composition_scores
 * @param kinds    in: n_kinds kinds (borrowed; may repeat); NULL only when
 *                 n_kinds is 0 (then nothing is computed)
 * @param n_kinds  tables wanted
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, an unknown kind, named by
 *         index); MI_ERR_SHAPE (count too small); MI_ERR_OUT_OF_MEMORY
 *         ((1 + n_kinds)·(L − 1)·H·d_head·d_model floats, about 32 MiB of
 *         tiles a thread, 16·n_kinds·((L − 1)·H)² doubles); MI_ERR_NUMERIC (as
 *         mi_model_composition_scores).
 */
MI_API mi_status mi_model_composition_tables(double *out, size_t count, const mi_model *model,
                                             const mi_composition *kinds, size_t n_kinds);

/**
 * The chance level of a composition score for this model's shapes: the
 * score of ‖A₁B₁·A₂B₂‖_F / (‖A₁B₁‖_F ‖A₂B₂‖_F) with every entry of
 * A (d_model × d_head) and B (d_head × d_model) standard Gaussian, over 100
 * samples from a fixed seed (the same numbers on every call and machine).
 * One baseline serves all three kinds: W_OV and W_QK (and its transpose) are
 * both such products, so their random versions have the same distribution.
 * It depends only on d_model and d_head (about 1/√d_model when d_head is
 * much smaller); compute it once per model. Cost: 100 × (two QRs of
 * d_model × d_head and three d_head² × d_model products), in double.
 *
 * @param out    out: 3 doubles: the mean score, the standard deviation of
 *               one random score (how far chance strays), and the standard
 *               error of the mean (that deviation / √100)
 * @param model  in: the model (borrowed); only its shape is read
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_OUT_OF_MEMORY
 *         (4·d_model·d_head doubles of scratch); MI_ERR_NUMERIC (QR failed).
 */
MI_API mi_status mi_model_composition_baseline(double *out, const mi_model *model);

/*
 * Path enumeration
 * ----------------
 * Expanded through its heads (attention patterns aside), the model's map from
 * input token to output logits is a sum of paths: at every layer skip, or go
 * through one head. A path of order k passes heads h₁ … h_k in increasing
 * layers; its OV product, d_vocab × d_vocab (source token × output logit), is
 *
 *   order 0 (direct path):    W_E · W_U
 *   order k ≥ 1:              W_E · W_V¹W_O¹ · W_V²W_O² ⋯ W_V^k W_O^k · W_U
 *
 * (W_V of a grouped head is its key/value head's), the paper's
 * W_U W_OV^k ⋯ W_OV¹ W_E transposed. This is the virtual head in the residual
 * stream, not mi_circuit_compose of two token OV circuits (which would pass
 * through W_U·W_E between the heads). The weights are the model's as it holds
 * them (fold LayerNorm first: the products see ln.w folded in, but not the
 * normalisation, the biases or the attention patterns; mi_model_attribute
 * splits a real input's logits exactly). A model with L layers of H heads
 * has ∏(1 + H) = (1 + H)^L paths, C(L, k)·H^k of order k.
 *
 * Norms. Every path's Frobenius norm comes from small Grams, never from a
 * d_vocab-sized product per path: the two d_model × d_model Grams W_Eᵀ W_E
 * and W_U W_Uᵀ once per call (float32 BLIS, 2·2·d_vocab·d_model² flops),
 * then one d_head × d_head factor per head, and per path prefix two GEMMs
 * of (d_head rows) × d_model × (every later head's d_head columns) that give
 * all its one-head extensions at once (the root's have d_model rows). Norms
 * are accurate to about 1e-5 relative (float32 GEMMs, small work in double).
 */

/** One path, as mi_model_paths hands it to the callback. Fields may be appended. */
typedef struct mi_path {
  /** sizeof(mi_path) as the library was compiled. */
  size_t struct_size;
  /** Heads on the path (0: the direct path). */
  size_t order;
  /** (layers[i], heads[i]) for i < order, layers increasing; borrowed, valid during the callback. */
  const size_t *layers, *heads;
  /** Frobenius norm of the path's OV product. */
  double norm;
  /**
   * With MI_PATHS_CIRCUITS, the OV product as a circuit (else NULL), borrowed:
   * valid during the callback only, freed after it returns. To keep one, make
   * it again with mi_circuit_path (owned). Factors: the direct path reads W_E
   * and W_U in place (mi_circuit_direct); order ≥ 1 has A = W_E W_V¹
   * (d_vocab × d_head) and B = W_O¹ W_V² ⋯ W_O^k W_U (d_head × d_vocab).
   */
  const mi_circuit *circuit;
} mi_path;

/** Bits of mi_model_paths's `flags`. */
enum {
  /**
   * Build each path's circuit for the callback: one d_head × d_model ×
   * d_vocab product a path, plus d_vocab × d_model × d_head when the first
   * head changes, and two factor copies (about 4·d_vocab·d_head floats).
   */
  MI_PATHS_CIRCUITS = 1u << 0
};

/**
 * Receives one path. Return 0 to go on, anything else to stop (the call then
 * returns MI_OK). `user` is the caller's.
 */
typedef int (*mi_path_fn)(const mi_path *path, void *user);

/**
 * How many paths have order ≤ max_order: Σ_{k ≤ max_order} C(L, k)·H^k
 * (∏(1 + H) with max_order ≥ L). Reads only the shape.
 *
 * @param out        out: the count (0 on failure)
 * @param max_order  longest path; SIZE_MAX for all
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_OUT_OF_MEMORY (the
 *         count overflows size_t).
 */
MI_API mi_status mi_model_path_count(size_t *out, const mi_model *model, size_t max_order);

/**
 * Walks every path of order ≤ max_order and hands each, with its norm (and
 * with MI_PATHS_CIRCUITS its circuit), to `callback`, never holding more
 * than one path's labels at once. Order: the direct path, then depth first,
 * as mi_model_attribute: a path before its extensions, extensions in
 * increasing (layer, head).
 *
 * @param out        out: NULL, or the number of paths delivered
 * @param model      in: the model (borrowed; read only)
 * @param max_order  longest path; SIZE_MAX for all
 * @param flags      0 or MI_PATHS_CIRCUITS
 * @param callback   called once a path, on the calling thread
 * @param user       passed to callback
 * @return MI_OK (also when the callback stopped the walk);
 *         MI_ERR_INVALID_ARGUMENT (NULL model or callback, unknown flags);
 *         MI_ERR_UNSUPPORTED (the model has MLPs); MI_ERR_NUMERIC (an
 *         eigen-decomposition of a Gram failed, or a path's norm overflowed); MI_ERR_OUT_OF_MEMORY
 *         (scratch of about (4·d_model + 2·max_order·d_head)·L·H·d_head
 *         floats and 3·d_model² doubles, plus the factors with
 *         MI_PATHS_CIRCUITS).
 */
MI_API mi_status mi_model_paths(size_t *out, const mi_model *model, size_t max_order,
                                unsigned flags, mi_path_fn callback, void *user);

/**
 * The n paths of order ≤ max_order with the largest norms, largest first
 * (equal norms: in mi_model_paths's order), from one walk that keeps only
 * the n best.
 *
 * @param out_heads  out: n × n_layers; line i, entry l is the head path i
 *                   passes in layer l, or SIZE_MAX when it skips layer l
 *                   (all SIZE_MAX: the direct path)
 * @param out_norm   out: n norms
 * @param out_count  out: lines filled, min(n, number of paths)
 * @param n          lines available, ≥ 1
 * @param model      in: the model (borrowed)
 * @param max_order  longest path; SIZE_MAX for all
 * @return as mi_model_paths; also MI_ERR_INVALID_ARGUMENT for n = 0.
 */
MI_API mi_status mi_model_top_paths(size_t *out_heads, double *out_norm, size_t *out_count,
                                    size_t n, const mi_model *model, size_t max_order);

/**
 * One path's OV product as a circuit (see "Path enumeration"): the direct
 * path for order 0 (mi_circuit_direct), else A = W_E W_V¹ (d_vocab × d_head)
 * and B = W_O¹ W_V² ⋯ W_O^k W_U (d_head × d_vocab), computed in float32.
 *
 * @param out     receives the circuit (owned; mi_circuit_free), NULL on failure
 * @param model   in: the model
 * @param order   heads on the path, ≤ n_layers
 * @param layers,heads  in: `order` entries each (may be NULL for order 0)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL; order > n_layers; layers
 *         not strictly increasing); MI_ERR_INDEX (a layer or head out of
 *         range); MI_ERR_UNSUPPORTED (MLPs); MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_circuit_path(mi_circuit **out, const mi_model *model, size_t order,
                                 const size_t *layers, const size_t *heads);

/*
 * Copying and induction at full vocabulary
 * ----------------------------------------
 * A copying head's OV circuit (source token × output logit) puts each
 * token's own logit high in its row; an induction head's K-composition
 * circuit with a previous-token head puts each query token's score high on
 * the key whose previous token was the same token. Both show as a strong
 * diagonal, read here row by row without forming the d_vocab² matrix.
 */

/**
 * The rank of each diagonal entry within its row: for rows i = i0 … i1 − 1
 * of a square circuit, out[i − i0] = the number of entries j of row i with
 * M[i][j] > M[i][i], strictly (0: the diagonal is the row's largest; ties go
 * in the diagonal's favour). Each diagonal entry is computed first, in
 * double from the factors; the matrix is then streamed as mi_circuit_topk
 * streams it (float32 BLIS tiles of at most 256 × 4096, one a thread,
 * allocated once per call) and each entry compared with its row's diagonal,
 * so an entry within float32 rounding of the diagonal may rank either side.
 * An entry or diagonal that overflowed float32 (infinity or NaN) is
 * MI_ERR_NUMERIC, never a rank. Extra memory: one float a row asked for, plus the tiles.
 *
 * @param out     out: i1 − i0 ranks
 * @param circuit in: a square circuit (n × n)
 * @param i0,i1   rows i0 … i1 − 1, i0 < i1 ≤ n
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, i0 ≥ i1); MI_ERR_INDEX
 *         (i1 > n); MI_ERR_SHAPE (not square); MI_ERR_OUT_OF_MEMORY;
 *         MI_ERR_NUMERIC (an entry overflowed).
 */
MI_API mi_status mi_circuit_diag_rank(size_t *out, const mi_circuit *circuit, size_t i0,
                                      size_t i1);

/**
 * Top-1 and top-5 copying accuracy of a square circuit: the share of rows
 * whose diagonal rank (mi_circuit_diag_rank) is < 1 and < 5, over all n
 * rows, streamed the same way. Beside the eigenvalue copying score
 * (mi_circuit_eigen_summary) these say how often the diagonal actually wins,
 * e.g. for a head's OV circuit (mi_circuit_ov) or a virtual path's
 * (mi_circuit_path). Cost: one n × r × n product in float32, in tiles,
 * and n ranks (size_t) of memory.
 *
 * @param out_top1,out_top5  out: shares in [0, 1]
 * @return as mi_circuit_diag_rank (MI_ERR_SHAPE when not square).
 */
MI_API mi_status mi_circuit_copying_accuracy(double *out_top1, double *out_top5,
                                             const mi_circuit *circuit);

/**
 * The K-composition circuit of head 1 (layer1, head1) into a later head 2
 * (layer2, head2), d_vocab × d_vocab:
 *
 *   W_E W_Q² W_K²ᵀ (W_E W_V¹ W_O¹)ᵀ  =  W_E W_QK² (W_E W_OV¹)ᵀ
 *
 * row = the query token, column = the token head 1 read and wrote into the
 * key's residual stream: the token QK circuit of head 2 (mi_circuit_qk with
 * MI_EMBED_TOKEN on both sides) with its key side W_E replaced by W_E W_OV¹.
 * For a previous-token head 1 and an induction head 2 it has a strong
 * diagonal: a query attends to the key after an earlier copy of itself.
 * With MI_QK_BIAS, b_Q² and b_K² enter as in mi_circuit_qk (A = (W_E W_Q² +
 * 1 b_Q²)·s, Bᵀ = W_E W_V¹ W_O¹ W_K² + 1 b_K²); head 1's own biases and
 * positional parts do not (in a shortformer model W_Q², W_K² are the token
 * side: what head 1 writes reaches head 2 through LN(resid)). Factors: A as above (d_vocab × d_head), B its
 * key side transposed (d_head × d_vocab), computed in float32 and owned.
 *
 * @param out    receives the circuit (owned; mi_circuit_free), NULL on failure
 * @param model  in: the model (models with MLPs are fine: weights only)
 * @param flags  MI_QK_BIAS, MI_QK_SCALE
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, unknown flags, layer1 ≥
 *         layer2); MI_ERR_INDEX (a layer or head out of range);
 *         MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_circuit_k_composition(mi_circuit **out, const mi_model *model,
                                          size_t layer1, size_t head1, size_t layer2,
                                          size_t head2, unsigned flags);

/*
 * Behavioural head scores
 * -----------------------
 * What a head does on input, from the model's own attention patterns (the
 * forward pass), as TransformerLens's head detector measures it. For a
 * sequence of tokens x₀ … x_{n−1} and a head's pattern A (query t, key s):
 *
 * - previous-token: A[t][t−1], at every t ≥ 1;
 * - duplicate-token: Σ A[t][s] over s < t with x_s = x_t, at every t that
 *   has such an s;
 * - induction: Σ A[t][s] over 1 ≤ s ≤ t with x_{s−1} = x_t (the position
 *   after an earlier copy of the query's token), at every t that has one.
 *
 * Each score is the mean over the positions where it is defined (rows with
 * no target are left out, not counted as 0), pooled over all sequences: in
 * [0, 1], NaN when no position defines it. TransformerLens divides by every
 * row instead: on sequences repeated twice its duplicate and induction
 * scores are about half of these. No BOS token is prepended.
 *
 * What they capture: attention alone, on the sequences given; on random
 * tokens repeated twice (mi_model_repeated_tokens) an induction head scores
 * near 1 and a previous-token head near 1 on its score. Everything that
 * shapes attention counts: LayerNorm of token plus position, the query and
 * key biases, earlier layers (K-composition), which the weight-only
 * signatures (mi_circuit_prev_token_share on W_pos alone, the QK
 * eigenvalues) miss. On a trained 2-layer model with LayerNorm and biases,
 * layer-0 heads put 14–23% of their attention on the previous token while
 * the W_pos-only positional QK circuit put its top score on the previous
 * position in at most 6% of rows. What they miss: what the head writes (its
 * OV circuit: see mi_circuit_copying_accuracy), behaviour on natural text
 * (random tokens have no bigram structure; duplicate-token rows are rare
 * with a large vocabulary except in the repeat), and attention spread
 * thinly over many matching keys counts as much as one sharp one.
 */

/** The scores of mi_model_attention_scores, in this order for each head. */
typedef enum mi_attention_score {
  MI_SCORE_PREV_TOKEN = 0,
  MI_SCORE_DUPLICATE_TOKEN = 1,
  MI_SCORE_INDUCTION = 2,
  MI_SCORE_COUNT = 3 /**< scores a head */
} mi_attention_score;

/**
 * Seeded random token sequences, each repeated twice: sequence q is
 * out[q·2·half …]: half tokens drawn uniformly from 0 … d_vocab − 1
 * (splitmix64 from `seed`, rejection sampling: the same tokens on every
 * machine), then the same half tokens again.
 *
 * @param out          out: n_sequences · 2 · half token ids
 * @param count        ids available at out
 * @param model        in: the model (only d_vocab and n_ctx are read)
 * @param n_sequences  ≥ 1
 * @param half         ≥ 1; 2·half ≤ n_ctx when n_ctx > 0
 * @param seed         any value
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, zero n_sequences or half);
 *         MI_ERR_SHAPE (2·half > n_ctx, count too small);
 *         MI_ERR_OUT_OF_MEMORY (the size overflows).
 */
MI_API mi_status mi_model_repeated_tokens(size_t *out, size_t count, const mi_model *model,
                                          size_t n_sequences, size_t half, uint64_t seed);

/**
 * The behavioural scores (see "Behavioural head scores") of every head over
 * caller token sequences: one forward pass of each (patterns only, no
 * logits), then the scores pooled over all of them.
 *
 * @param out          out: [n_layers][n_heads][MI_SCORE_COUNT] doubles;
 *                     out[(l·n_heads + h)·MI_SCORE_COUNT + score]
 * @param count        doubles at out, ≥ n_layers · n_heads · MI_SCORE_COUNT
 * @param model        in: the model (borrowed; read only)
 * @param tokens       in: n_sequences · length ids, sequence q at q·length
 * @param n_sequences  ≥ 1
 * @param length       tokens a sequence, ≥ 1, ≤ n_ctx when n_ctx > 0
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL; n_sequences or length 0);
 *         MI_ERR_UNSUPPORTED (the model has MLPs: no forward pass);
 *         MI_ERR_SHAPE (count too small, length > n_ctx); MI_ERR_INDEX (a
 *         token ≥ d_vocab); MI_ERR_OUT_OF_MEMORY (n_layers·n_heads·length²
 *         floats of patterns, plus the forward pass's scratch).
 */
MI_API mi_status mi_model_attention_scores(double *out, size_t count, const mi_model *model,
                                           const size_t *tokens, size_t n_sequences,
                                           size_t length);

/* (end of section: Forward pass, paths and attribution) */

/* ------------------------------------------------------------------------ */
/* Skip-trigrams                                                            */
/* ------------------------------------------------------------------------ */

/*
 * A one-layer head implements skip-trigrams "src ... dst -> out": a
 * destination token dst attends back to a source token src (its token QK
 * circuit scores row dst, column src highly) and the head then raises the
 * logit of out (its token OV circuit, row src, column out). The search
 * streams both d_vocab × d_vocab circuits of every head once each, never
 * storing them (how: below):
 *
 * - Every entry becomes a z-score within its row, z = (x − row mean) / row
 *   standard deviation (population, over all d_vocab entries, in double): a
 *   softmax reads a QK row, and the logits an OV row, only up to a constant.
 *   A row without spread (sd 0, or not finite) gives no z-scores.
 * - For each source src: its `outputs_per_source` best outputs (OV row src,
 *   out ≠ src: an output equal to the source is copying), and the
 *   `destinations_per_source` destinations whose rows give src the highest
 *   z (QK column src, dst ≠ src: a token attending to itself is a bigram).
 * - Each pair of those is a triple scored min(z_QK, z_OV): as strong as its
 *   weaker half. The best `capacity` triples over all heads are returned.
 *
 * Ties: equal z-scores keep the lower index; equal scores keep the earlier
 * triple in the order (layer, head, src, output rank, destination rank).
 * The result does not depend on the thread count.
 *
 * How: one streamed top-k pass per circuit and nothing else. Row means and
 * standard deviations are closed-form (mi_circuit_row_stats); within a row
 * the z-score rises with the entry, so a source's best outputs are its OV
 * row's largest entries; and the destinations that rank a source highest
 * are a column top-k of the z matrix itself, Z = [a_d / sd_d, −mean_d / sd_d]
 * · [B; 1], a circuit of rank d_head + 1. Both passes run the fused
 * selection kernels of mi_circuit_topk (float32, every thread, the tiles
 * handed out dynamically); each kept entry's z-score is then recomputed in
 * double from the factors. Picks therefore follow the float32 products: two
 * entries within float32 rounding of each other may come in either order,
 * and a z-score agrees with one computed from mi_circuit_rows' entries to
 * about that rounding (≈ 1e-6 of the entries' scale over the row's sd).
 *
 * With ov_top1 or ov_top5 (mi_skip_trigram_options) the OV pass also gives
 * each head's copying accuracy: it keeps 6 entries a row instead of
 * outputs_per_source + 1 (which changes no triple: a row's best entries are
 * a prefix of its longer list) and compares them with the diagonal's
 * threshold, O(d_vocab · d_head) a head more.
 *
 * Cost: per head, two d_vocab² × d_head products in the fused kernels
 * (never stored), plus O(d_vocab · d_head²) for the statistics. Memory:
 * the packed factors (≈ 2 · d_vocab · (d_head + 1) floats a circuit), per
 * source its top picks and ranks (≈ 5 · d_vocab · (outputs + destinations)
 * words) and the `capacity` results.
 */

/** One triple of mi_model_skip_trigrams. Fields may be appended. */
typedef struct mi_skip_trigram {
  /** sizeof(mi_skip_trigram) as the caller was compiled (see mi_model_skip_trigrams). */
  size_t struct_size;
  size_t layer, head;
  size_t src; /**< the source (key) token, attended to */
  size_t dst; /**< the destination (query) token, which attends */
  size_t out; /**< the output token whose logit the head raises */
  double qk_z;  /**< z-score of QK[dst, src] within QK row dst */
  double ov_z;  /**< z-score of OV[src, out] within OV row src */
  double score; /**< min(qk_z, ov_z) */
} mi_skip_trigram;

/**
 * Receives progress: `done` of `total` steps (circuits: two a head), on
 * the calling thread; `user` is the caller's.
 */
typedef void (*mi_progress_fn)(size_t done, size_t total, void *user);

/** How mi_model_skip_trigrams searches. Fill it with mi_skip_trigram_options_init. */
typedef struct mi_skip_trigram_options {
  /** sizeof(mi_skip_trigram_options) as the caller was compiled; set by the init. */
  size_t struct_size;
  /** MI_QK_* bits of the token QK circuits; default MI_QK_BIAS | MI_QK_SCALE
   * (what attention scores; the scale does not change a z-score). */
  unsigned qk_flags;
  /** Best outputs kept per source (OV row); default 2, ≥ 1. */
  size_t outputs_per_source;
  /** Best destinations kept per source (QK column); default 2, ≥ 1. */
  size_t destinations_per_source;
  /** Called after each circuit; NULL (default): none. */
  mi_progress_fn progress;
  /** Passed to progress. */
  void *progress_user;
  /**
   * NULL (default), or out: line l·n_heads + h receives head (l, h)'s top-1
   * copying accuracy of its token OV circuit, exactly the out_top1 of
   * mi_circuit_copying_accuracy on mi_circuit_ov(l, h), read from the same
   * pass that finds the best outputs (its rows' picks, at least 5 off the
   * diagonal, held against the diagonal's threshold), so a caller that
   * wants both streams each OV circuit once (mi report: the head roles'
   * ov_top1, mi_role_options). Written only when capacity > 0; after a
   * failure, lines of the heads searched so far may be written.
   */
  double *ov_top1;
  /** NULL (default), or out: the same for the top-5 copying accuracy (out_top5). */
  double *ov_top5;
  /** Doubles at ov_top1 and at ov_top5 (each that is not NULL), ≥ n_layers · n_heads. */
  size_t ov_accuracy_count;
} mi_skip_trigram_options;

/**
 * Sets `out` to the defaults: qk_flags MI_QK_BIAS | MI_QK_SCALE, 2 outputs
 * and 2 destinations per source, no progress callback.
 *
 * @param out          out: the options
 * @param struct_size  in: sizeof *out
 * `struct_size` is the caller's sizeof(*out) (pass `sizeof *out`): at most
 * that many bytes are written, so a caller compiled against an older, smaller
 * header keeps the fields it knows and nothing past them; out->struct_size
 * is set to it when that field fits. NULL out: no-op.
 */
MI_API void mi_skip_trigram_options_init(mi_skip_trigram_options *out, size_t struct_size);

/**
 * The `capacity` strongest skip-trigrams over every head of the model, best
 * first (see "Skip-trigrams" above for what is computed).
 *
 * @param out        out: capacity triples; the caller sets out[0].struct_size,
 *                   which is also the stride between them (an array of the
 *                   caller's mi_skip_trigram); each written triple gets it
 *                   too. May be NULL when capacity is 0.
 * @param out_count  out: the number written, ≤ capacity (fewer when the
 *                   model has fewer triples); 0 on failure
 * @param capacity   triples wanted; 0 returns at once, computing nothing
 * @param model      in: the model (borrowed; read only)
 * @param options    in: NULL for the defaults
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL model or out_count, NULL out
 *         with capacity > 0, out[0].struct_size below sizeof(size_t), an
 *         options struct_size that is too small or too large, unknown
 *         qk_flags bits, outputs_per_source or destinations_per_source 0, a
 *         BLIS_ARCH_TYPE BLIS would abort on); MI_ERR_SHAPE (ov_top1 or
 *         ov_top5 with ov_accuracy_count < n_layers · n_heads);
 *         MI_ERR_NUMERIC (a head's OV circuit overflows float32, or a
 *         diagonal entry does, when the copying accuracy is asked);
 *         MI_ERR_OUT_OF_MEMORY (the picks, the QK z factors, the ranks, the results, or a
 *         head's circuit factors).
 */
MI_API mi_status mi_model_skip_trigrams(mi_skip_trigram *out, size_t *out_count,
                                        size_t capacity, const mi_model *model,
                                        const mi_skip_trigram_options *options);

/* (end of section: Skip-trigrams) */

/* ------------------------------------------------------------------------ */
/* Head roles                                                               */
/* ------------------------------------------------------------------------ */

/*
 * What a head does, named, from its behaviour (mi_model_head_report's
 * attention on repeated random tokens) and its weights together, each score
 * held against its chance level:
 *
 * - previous-token: prev_token_attention ≥ min_attention and ≥
 *   min_attention_lift × the same score of uniform causal attention
 *   (A[t][s] = 1/(t+1)) on the same sequences; and, when the model has
 *   W_pos, the positional QK prev-token share (mi_circuit_prev_token_share)
 *   ≥ min_prev_share_lift × its chance, mean over p = 1 … n_ctx−1 of
 *   1/(p+1) (random scores put the row maximum on p−1 that often).
 * - duplicate-token: duplicate_token_attention passes the same two
 *   attention tests, and the token QK same-token score (eigenvalues, with
 *   the report's qk_flags) is > 0, its chance level (a random matrix's
 *   eigenvalue sum is symmetric about 0).
 * - induction: induction_attention passes the two attention tests, and the
 *   head's strongest K-composition from an earlier head (mi_model_composition_scores,
 *   MI_COMPOSE_K) is ≥ min_k_composition_z standard deviations above
 *   mi_model_composition_baseline's mean. Layer-0 heads are never induction
 *   heads (nothing earlier to compose with).
 * - copying: the OV copying score Σλ/Σ|λ| ≥ min_copying_score (chance 0)
 *   and the OV circuit's top-1 copying accuracy (mi_circuit_copying_accuracy)
 *   ≥ min_copying_lift / d_vocab (chance 1/d_vocab).
 *
 * A head may pass several tests (`passed`); its `role` is the first it
 * passes in the order induction, previous-token, duplicate-token, copying
 * (the more specific circuit first: an induction head also copies), else
 * MI_ROLE_NONE. A score that is NaN (no forward pass for a model with MLPs,
 * behaviour turned off) fails its test; a model without W_pos skips the
 * prev-token share test. The partners of an induction head are the earlier
 * previous-token heads whose K-composition into it is ≥ min_k_composition_z
 * standard deviations above chance.
 *
 * Defaults and why: min_attention 0.5 (the head puts most of its attention
 * on the target), min_attention_lift 3 (uniform attention on 2 × 16 repeated
 * tokens scores 0.10 previous-token and 0.04 induction: 0.5 is 5 and 12
 * times those, 3 leaves room for shorter sequences), min_prev_share_lift 2,
 * min_copying_score 0.5, min_copying_lift 50 (fifty times chance: on the
 * shipped models the heads their cards call copying reach 104–147 times,
 * the layer-0 heads of the 2-layer model that write for layer 1 29–43
 * times, a random head of the same shapes 1 ± 1), min_k_composition_z 3.
 */

/** A head's role (mi_model_head_roles). */
typedef enum mi_role {
  MI_ROLE_NONE = 0,
  MI_ROLE_PREV_TOKEN = 1,
  MI_ROLE_DUPLICATE_TOKEN = 2,
  MI_ROLE_INDUCTION = 3,
  MI_ROLE_COPYING = 4,
  MI_ROLE_COUNT = 5 /**< roles, none included */
} mi_role;

/** "none", "previous-token", "duplicate-token", "induction", "copying"; static text, "unknown" otherwise. */
MI_API const char *mi_role_name(mi_role role);

/** The thresholds of the rule above. Fill with mi_role_options_init. */
typedef struct mi_role_options {
  size_t struct_size;
  /** NULL (default): mi_model_head_report's defaults; else its options (its
   * prev_token is forced on). */
  const mi_report_options *report;
  double min_attention;        /**< default 0.5 */
  double min_attention_lift;   /**< times the uniform-attention score; default 3 */
  double min_prev_share_lift;  /**< times the prev-token share's chance; default 2 */
  double min_copying_score;    /**< OV Σλ/Σ|λ|; default 0.5 */
  double min_copying_lift;     /**< top-1 accuracy in units of 1/d_vocab; default 50 */
  double min_k_composition_z;  /**< standard deviations of chance; default 3 */
  /**
   * NULL (default): each head's top-1 copying accuracy is computed
   * (mi_circuit_copying_accuracy on its token OV circuit, one d_vocab² pass a
   * head). Else line l·n_heads + h is head (l, h)'s, taken as given and no
   * OV circuit is streamed: pass mi_model_skip_trigrams's ov_top1 (the same
   * numbers, from the search's own OV pass). Borrowed for the call.
   */
  const double *ov_top1;
  /** Doubles at ov_top1, ≥ n_layers · n_heads when ov_top1 is not NULL. */
  size_t ov_top1_count;
} mi_role_options;

/**
 * Sets `out` to the defaults above, struct_size included.
 *
 * @param out          out: the options
 * @param struct_size  in: sizeof *out
 * `struct_size` is the caller's sizeof(*out) (pass `sizeof *out`): at most
 * that many bytes are written, so a caller compiled against an older, smaller
 * header keeps the fields it knows and nothing past them; out->struct_size
 * is set to it when that field fits. NULL out: no-op.
 */
MI_API void mi_role_options_init(mi_role_options *out, size_t struct_size);

/** One head's role and the evidence for it. Fields may be appended. */
typedef struct mi_head_roles {
  size_t struct_size; /**< sizeof(mi_head_roles) as the caller was compiled */
  size_t layer, head;
  mi_role role;       /**< the first test passed, by precedence; MI_ROLE_NONE */
  unsigned passed;    /**< bit (1u << r) for every role r whose test passed */
  double ov_copying_score, ov_top1, ov_top1_chance; /**< chance: 1/d_vocab */
  double qk_same_token;                             /**< token QK eigenvalue score */
  /** Positional QK prev-token share and its chance; NaN without W_pos. */
  double prev_token_share, prev_token_share_chance;
  /** Behavioural scores and the uniform-attention scores on the same sequences. */
  double prev_token_attention, prev_token_uniform;
  double duplicate_token_attention, duplicate_token_uniform;
  double induction_attention, induction_uniform;
  /** The strongest K-composition from an earlier head: its layer and head
   * (SIZE_MAX in layer 0), score, and z = (score − chance) / chance's sd. */
  size_t k_layer, k_head;
  double k_score, k_z;
  /** mi_model_composition_baseline's mean and standard deviation. */
  double k_chance, k_chance_sd;
  /** Partners of this head (induction heads only; 0 otherwise). */
  size_t k_partners;
} mi_head_roles;

/** A previous-token head that an induction head K-composes with. Fields may be appended. */
typedef struct mi_role_partner {
  size_t struct_size; /**< sizeof(mi_role_partner) as the caller was compiled */
  size_t reader;      /**< the induction head's line: layer · n_heads + head */
  size_t layer, head; /**< the previous-token head */
  double score, z;    /**< its K-composition into the reader, and its z over chance */
} mi_role_partner;

/**
 * Every head's role by the rule above. Runs mi_model_head_report (with the
 * behavioural scores), mi_model_composition_scores (K) and its baseline,
 * and, unless options->ov_top1 gives them, mi_circuit_copying_accuracy on
 * every head's token OV circuit: one d_vocab × d_head × d_vocab product a
 * head, in tiles, as costly as either pass of the skip-trigram search
 * (cheap for the shipped models, seconds a head at GPT-2's 50k).
 *
 * @param out                out: line l·n_heads + h is head (l, h); the
 *                           caller sets out[0].struct_size, which is also
 *                           the stride; each line gets it
 * @param count              lines at out, ≥ n_layers · n_heads
 * @param out_partners       out: NULL, or partner_capacity partners (the
 *                           caller sets out_partners[0].struct_size, the stride),
 *                           in order of reader, then writer
 * @param partner_capacity   partners available (0 with NULL); more than that
 *                           are counted but not written
 * @param out_partner_count  out: NULL, or all the partners there are
 * @param model              in: the model (borrowed; read only)
 * @param options            in: NULL for the defaults
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL out or model; a struct_size
 *         below sizeof(size_t) or too large; partner_capacity > 0 with NULL
 *         out_partners; a threshold that is not finite; an ov_top1 entry
 *         outside [0, 1] or NaN; as mi_model_head_report for its options);
 *         MI_ERR_SHAPE (count too small; ov_top1 with ov_top1_count <
 *         n_layers · n_heads; as mi_model_head_report); MI_ERR_NUMERIC;
 *         MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_model_head_roles(mi_head_roles *out, size_t count,
                                     mi_role_partner *out_partners, size_t partner_capacity,
                                     size_t *out_partner_count, const mi_model *model,
                                     const mi_role_options *options);

/**
 * The noise floor of a skip-trigram score (mi_model_skip_trigrams) on this
 * model: sqrt(2 ln N), N = n_layers · n_heads · d_vocab², the number of
 * entries of all the heads' OV (and as many QK) circuits searched. If every
 * z-score were independent standard normal noise, the expected number of
 * entries above it among all N would be about 1 / (sqrt(2π) · floor) (≈ 0.08
 * at N = 10⁵ … 10¹⁰), so a triple whose QK and OV halves both exceed it
 * (score = min(z_QK, z_OV) ≥ floor) is unlikely to be noise. On a random
 * model of the shipped models' shapes no triple reaches it.
 *
 * @param out    out: the floor (0 when N ≤ 1)
 * @param model  in: the model (only its shape is read)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL).
 */
MI_API mi_status mi_model_skip_trigram_floor(double *out, const mi_model *model);

/* (end of section: Head roles) */

/* ------------------------------------------------------------------------ */
/* HTML report                                                              */
/* ------------------------------------------------------------------------ */

/*
 * One self-contained HTML page (its script and style inline, nothing
 * fetched at view time) for a researcher's browser: the head table
 * (sortable) with each head's role and evidence (mi_model_head_roles), each
 * head's OV eigenvalues in the complex plane, the Q/K/V-composition heatmaps
 * against chance, the skip-trigrams above the noise floor
 * (mi_model_skip_trigram_floor) with their token strings, and for a prompt
 * every head's attention pattern (token × token; a head and a destination
 * token picked by hover or click, or by the URL fragment
 * #head=L1H2&dest=7) and the logit attribution of the top prediction at
 * the chosen position. The page's data is one JSON object in a
 * <script type="application/json" id="mi-data"> element; its script sets
 * data-status="ok" on <body> once drawn (or "error: …").
 */

/**
 * Receives `size` bytes of output; returns 0 to go on, anything else to
 * stop (the call then fails with MI_ERR_IO). `user` is the caller's.
 */
typedef int (*mi_write_fn)(const void *data, size_t size, void *user);

/** What mi_model_html_report shows. Fill with mi_html_options_init. */
typedef struct mi_html_options {
  size_t struct_size;
  /** NULL, or the prompt: n_tokens ids, each < d_vocab (≤ n_ctx of them). */
  const size_t *tokens;
  size_t n_tokens;
  /** Skip-trigrams searched (mi_model_skip_trigrams capacity); default 24, 0: none. */
  size_t trigrams;
  /** Longest path in the attribution; default 2 (∏(1 + H) parts would explode for deep models). */
  size_t max_order;
  /** Parts shown per position, the rest summed into one; default 12, ≥ 1. */
  size_t top_parts;
  /** NULL: mi_model_head_roles's defaults; else its thresholds. */
  const mi_role_options *roles;
  /** NULL, or the page's title (e.g. the model's path). */
  const char *title;
} mi_html_options;

/**
 * Sets `out` to the defaults above, struct_size included.
 *
 * @param out          out: the options
 * @param struct_size  in: sizeof *out
 * `struct_size` is the caller's sizeof(*out) (pass `sizeof *out`): at most
 * that many bytes are written, so a caller compiled against an older, smaller
 * header keeps the fields it knows and nothing past them; out->struct_size
 * is set to it when that field fits. NULL out: no-op.
 */
MI_API void mi_html_options_init(mi_html_options *out, size_t struct_size);

/**
 * Computes the page (see "HTML report") and hands it to `write` in a few
 * pieces, in order; nothing is printed. Work: mi_model_head_roles, the
 * composition scores (2+ layers), each head's OV eigenvalues, the
 * skip-trigram search (options.trigrams), and with a prompt one forward
 * pass and mi_model_attribute up to options.max_order.
 *
 * @param model    in: the model (borrowed; read only)
 * @param options  in: NULL for the defaults (no prompt)
 * @param write    receives the bytes
 * @param user     passed to write
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL model or write; bad
 *         struct_size; NULL tokens with n_tokens > 0; top_parts 0; as
 *         mi_model_head_roles); MI_ERR_INDEX (a token ≥ d_vocab);
 *         MI_ERR_SHAPE (more tokens than n_ctx); MI_ERR_UNSUPPORTED (a
 *         prompt on a model with MLPs); MI_ERR_IO (write returned non-zero);
 *         MI_ERR_NUMERIC; MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_model_html_report(const mi_model *model, const mi_html_options *options,
                                      mi_write_fn write, void *user);

/**
 * A path's name, as the report and `mi attribute` print it: "direct",
 * "L0H3", "L0H3 -> L1H0", "b_V via L0H1", "b_O[0] -> L1H2", "b_U + ln_final.b"
 * (the fields of an mi_attribution_part), truncated to fit `size`.
 *
 * @param out     out: the NUL-terminated name
 * @param size    bytes at out, ≥ 1
 * @param layers,heads  in: `order` entries each (NULL allowed for order 0)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL out, size 0, NULL layers or
 *         heads with order > 0, an unknown source).
 */
MI_API mi_status mi_attribution_label(char *out, size_t size, mi_path_source source,
                                      size_t source_layer, size_t order, const size_t *layers,
                                      const size_t *heads);

/* (end of section: HTML report) */
/* Sweeps                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * A sweep reads whole circuits (d_vocab² entries each) once and keeps what
 * a report of a large model needs: for every row its top-k entries, the
 * rank of its diagonal entry, its mean and standard deviation, and the
 * ranks the skip-trigram table is paired from. The work is cut into units
 * (one circuit × a range of rows), each written to a file of its own, so a
 * sweep can be shared between processes or machines, interrupted and
 * resumed; a merge writes one results file. Results do not depend on the
 * thread count, on which process computed a unit, or on the order units
 * ran: ties are broken by index, and every unit is computed the same way.
 *
 * mi_circuit_row_summary is the computation of one unit; mi_sweep_plan
 * names the units of a whole sweep, runs them and merges them; mi_sweep
 * reads a results file. docs/sweep.md gives the file layout.
 *
 * Thread safety: a plan is read only once made; mi_sweep_plan_unit_run may
 * run on several threads (or processes) at once for different units. An
 * opened mi_sweep is read only.
 */

/**
 * What mi_circuit_row_summary computes, and where it writes, for rows
 * i0..i1 − 1 of an n × m circuit (r = i1 − i0 rows). Each output is
 * computed only when its pointer is non-NULL (and its count, where it has
 * one, is ≥ 1); the caller owns every buffer. Unfilled ranks (a line with
 * fewer candidates than asked, or entries that are NaN or −∞) hold index
 * SIZE_MAX and value −∞. Fields may be appended.
 */
typedef struct mi_row_summary {
  /** sizeof(mi_row_summary) as the caller was compiled. */
  size_t struct_size;
  /** Entries kept per row (more than m leaves the rest unfilled). */
  size_t k;
  /** out: r × k, row-major: row i0 + t's k largest entries, best first (ties:
   * lower column first): their columns, and values. */
  size_t *topk_index;
  float *topk_value;
  /** out: r; square circuits only: how many entries of the row are above its
   * diagonal entry, as mi_circuit_diag_rank counts them. */
  size_t *diag_rank;
  /** out: r; the row's mean and population standard deviation over its m
   * entries (float entries summed in double; 0 for a row without spread). */
  double *row_mean, *row_std;
  /** Entries kept per column, among rows i0..i1 − 1. */
  size_t k_columns;
  /** out: m × k_columns: column j's best rows among i0..i1 − 1 (ties: lower
   * row first), and values. Summaries of disjoint row ranges merge into the
   * whole column's by keeping the best of their lists, ranges in order. */
  size_t *col_index;
  float *col_value;
  /** z-score ranks kept per row: the entries other than the diagonal ranked
   * by z = (x − row mean) / row sd (skip-trigram outputs of an OV row). */
  size_t k_row_z;
  /** out: r × k_row_z; a row without spread keeps none. Square circuits only. */
  size_t *row_z_index;
  double *row_z;
  /** z-score ranks kept per column: the rows i ≠ j among i0..i1 − 1 whose
   * z-score (within their own row) at column j is highest (skip-trigram
   * destinations of a QK column); merge as col_index. Square circuits only. */
  size_t k_col_z;
  /** out: m × k_col_z. */
  size_t *col_z_index;
  double *col_z;
} mi_row_summary;

/**
 * One pass over rows i0..i1 − 1 of a circuit, computing every output `out`
 * asks for. Rows are computed by mi_circuit_rows in blocks of at most 4 Mi
 * floats (16 MiB, allocated once per call), so each entry is the float32
 * value every other libmi query sees; the scans are split between
 * mi_set_num_threads threads (rows, then columns), with the same result
 * for any count. The z-scores and ranks are those of mi_model_skip_trigrams.
 *
 * @param out      in/out: the counts and buffers (see mi_row_summary); its
 *                 struct_size must be set
 * @param circuit  in: the circuit (borrowed)
 * @param i0, i1   in: the rows, 0 ≤ i0 < i1 ≤ n
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL out or circuit, struct_size
 *         too small or too large, a count ≥ 1 with only one of its two
 *         buffers, a BLIS_ARCH_TYPE BLIS
 *         would abort on); MI_ERR_INDEX (rows out of range or empty);
 *         MI_ERR_SHAPE (diag_rank, z-ranks of a circuit that is not square);
 *         MI_ERR_OUT_OF_MEMORY (the block or the scratch ranks).
 */
MI_API mi_status mi_circuit_row_summary(mi_row_summary *out, const mi_circuit *circuit,
                                        size_t i0, size_t i1);

/**
 * An identity of the model's weights as they are stored (after any
 * processing): "fnv1a64:" and 16 hex digits of a 64-bit FNV-1a hash of the
 * shape, positional kind, processing bits and every weight's float32 bits.
 * Not cryptographic: it tells models apart, it does not authenticate them.
 *
 * @param out    out: the text, NUL-terminated
 * @param size   in: bytes at out; 25 are needed
 * @param model  in: the model (borrowed)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, or size < 25).
 */
MI_API mi_status mi_model_digest(char *out, size_t size, const mi_model *model);

/** Bits of mi_sweep_options.circuits: which circuits a sweep covers. */
enum {
  MI_SWEEP_OV = 1u << 0,    /**< each chosen head's token OV circuit */
  MI_SWEEP_QK = 1u << 1,    /**< each chosen head's token QK circuit (qk_flags) */
  MI_SWEEP_DIRECT = 1u << 2 /**< the direct path W_E W_U, once */
};

/** What a sweep computes. Fill it with mi_sweep_options_init. */
typedef struct mi_sweep_options {
  /** sizeof(mi_sweep_options) as the caller was compiled; set by the init. */
  size_t struct_size;
  /** MI_SWEEP_* bits; default MI_SWEEP_OV | MI_SWEEP_QK. */
  unsigned circuits;
  /** MI_QK_* bits of QK and K-composition circuits; default MI_QK_BIAS |
   * MI_QK_SCALE (as mi report reads them). */
  unsigned qk_flags;
  /** Entries kept per row; default 10, ≥ 1, ≤ d_vocab. */
  size_t k;
  /** Entries kept per column; default 0 (none). */
  size_t k_columns;
  /** Skip-trigram ranks (as mi_skip_trigram_options); default 2 and 2, ≥ 1. */
  size_t outputs_per_source, destinations_per_source;
  /** Length of the skip-trigram table the merge writes; default 1000.
   * Its first N entries are mi_model_skip_trigrams's N best over the
   * chosen heads, for any N ≤ this. */
  size_t trigrams;
  /** Rows a unit; default 4096, ≥ 1. */
  size_t unit_rows;
} mi_sweep_options;

/**
 * Sets `out` to the defaults above.
 *
 * @param out          out: the options
 * @param struct_size  in: sizeof *out (a smaller, older struct gets the
 *                     fields it has). NULL out: no-op.
 */
MI_API void mi_sweep_options_init(mi_sweep_options *out, size_t struct_size);

/** The units of one sweep of one model with one set of options (opaque). */
typedef struct mi_sweep_plan mi_sweep_plan;

/**
 * Makes the plan of a sweep: the targets are, in this order, for each chosen
 * head its OV then its QK circuit (as options->circuits asks), the direct
 * path, then the K-composition circuit (mi_circuit_k_composition) of each
 * chosen pair; each target is cut into units of options->unit_rows rows.
 * The plan records the model's identity (mi_model_digest), shape, the
 * options and libmi's version: every file it writes carries them, and
 * every unit file it reads must carry the same.
 *
 * @param out      out: the plan; NULL on failure. Free with mi_sweep_plan_free.
 * @param model    in: the model; the plan holds a reference (free them in
 *                 any order)
 * @param heads    in: n_heads flat head indices layer · n_heads + head,
 *                 strictly increasing; NULL with n_heads 0: every head
 * @param pairs    in: 2 · n_pairs flat head indices, (earlier, later) each,
 *                 the earlier in a lower layer; NULL with n_pairs 0: none
 * @param options  in: NULL for the defaults
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL out or model, heads or pairs
 *         NULL with a count, heads not increasing, a pair not from a lower
 *         layer, no circuit at all, k 0 or above d_vocab, k_columns above
 *         d_vocab, unit_rows 0, a ranks count 0, unknown bits, a bad
 *         options struct_size); MI_ERR_INDEX (a head past the model);
 *         MI_ERR_UNSUPPORTED (d_vocab ≥ 2³¹: the files hold int32
 *         indices); MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_sweep_plan_new(mi_sweep_plan **out, const mi_model *model,
                                   const size_t *heads, size_t n_heads, const size_t *pairs,
                                   size_t n_pairs, const mi_sweep_options *options);

/** Frees a plan (and drops its model reference). NULL: no-op. */
MI_API void mi_sweep_plan_free(mi_sweep_plan *plan);

/** The number of units of a plan (0 for NULL). */
MI_API size_t mi_sweep_plan_unit_count(const mi_sweep_plan *plan);

/**
 * A unit's name, "L0H1.ov.rows-0-4096" (also the stem of its file,
 * DIR/NAME.safetensors). Borrowed from the plan.
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_INDEX (unit ≥ count).
 */
MI_API mi_status mi_sweep_plan_unit_name(const char **out, const mi_sweep_plan *plan,
                                         size_t unit);

/**
 * The number of circuit entries a unit reads (rows × d_vocab), for
 * progress and cost estimates.
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_INDEX (unit ≥ count).
 */
MI_API mi_status mi_sweep_plan_unit_entries(size_t *out, const mi_sweep_plan *plan,
                                            size_t unit);

/** What runs units (opaque; see mi_sweep_worker_new). */
typedef struct mi_sweep_worker mi_sweep_worker;

/**
 * What runs units: it keeps the circuit of the last unit it ran, so the
 * next unit of the same circuit does not build its factors again (an OV
 * circuit's cost 4·d_vocab·d_model·d_head flop). One worker per thread or
 * process; it borrows the plan, which must outlive it.
 *
 * @param out   out: the worker; NULL on failure. Free with mi_sweep_worker_free.
 * @param plan  in: the plan (borrowed)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_sweep_worker_new(mi_sweep_worker **out, const mi_sweep_plan *plan);

/** Frees a worker and the circuit it keeps. NULL: no-op. */
MI_API void mi_sweep_worker_free(mi_sweep_worker *worker);

/**
 * Computes one unit (mi_circuit_row_summary of its rows) and writes it to
 * DIR/NAME.safetensors: to a temporary name in DIR first, every write
 * checked, fsync'd, then renamed, so the file is whole or absent. An
 * existing file of that name is replaced.
 *
 * @param worker  in/out: the worker (its kept circuit may change)
 * @param unit    in: the unit, < mi_sweep_plan_unit_count
 * @param dir     in: an existing directory
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_INDEX (unit);
 *         MI_ERR_IO (creating, writing — a full disk — syncing or renaming
 *         the file; the temporary file is removed); MI_ERR_OUT_OF_MEMORY;
 *         the statuses of building the circuit and of mi_circuit_row_summary.
 */
MI_API mi_status mi_sweep_worker_run(mi_sweep_worker *worker, size_t unit, const char *dir);

/**
 * Whether a unit's file is in DIR: *out = 0 when there is none, 1 when
 * there is one, whole, made by this plan's model, options and libmi.
 * A file that is there but is not that is an error, never "not done": a
 * resumed sweep must not silently redo or mix it.
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_INDEX (unit);
 *         MI_ERR_IO (it cannot be read); MI_ERR_TRUNCATED, MI_ERR_FORMAT,
 *         MI_ERR_DTYPE, MI_ERR_SHAPE (not a whole unit file of this shape);
 *         MI_ERR_STATE (made by another model, other options, another
 *         libmi version, or for another unit: the message names the field
 *         and both values).
 */
MI_API mi_status mi_sweep_plan_unit_done(int *out, const mi_sweep_plan *plan, size_t unit,
                                         const char *dir);

/**
 * Merges every unit file of DIR into one results file at `path` (written
 * as a unit file is: temporary name, checked writes, fsync, rename): each
 * unit is checked as mi_sweep_plan_unit_done does, column ranks are merged
 * in row order, and the skip-trigram table is paired from the OV and QK
 * ranks of every head that has both, exactly as mi_model_skip_trigrams
 * pairs them. The bytes written depend only on the model, the plan and
 * libmi's version.
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_MISSING_TENSOR (a
 *         unit's file is absent: the message names it); the statuses of
 *         mi_sweep_plan_unit_done and of writing (MI_ERR_IO);
 *         MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_sweep_plan_merge(const mi_sweep_plan *plan, const char *dir,
                                     const char *path);

/** A results (or unit) file, opened read only (opaque). */
typedef struct mi_sweep mi_sweep;

/** One tensor of an opened sweep file; every pointer borrowed from it. */
typedef struct mi_sweep_tensor {
  /** sizeof(mi_sweep_tensor) as the caller was compiled; set by the caller. */
  size_t struct_size;
  const char *name;
  /** safetensors dtype: "I32", "F32" or "F64" in files libmi writes. */
  const char *dtype;
  size_t item; /**< bytes per element */
  size_t ndim;
  const size_t *shape; /**< ndim dimensions */
  /** The elements, row-major, aligned to `item` in files libmi writes. */
  const void *data;
  size_t nbytes;
} mi_sweep_tensor;

/**
 * Opens a sweep file (mapped read only) and checks its container: header,
 * offsets against the file size, and "format" = "libmi-sweep/1" in its
 * metadata.
 *
 * @param out   out: the sweep; NULL on failure. Free with mi_sweep_free.
 * @param path  in: the file
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_IO (open, stat,
 *         mmap); MI_ERR_TRUNCATED (shorter than its header says);
 *         MI_ERR_FORMAT (not safetensors, or not a sweep file); MI_ERR_DTYPE;
 *         MI_ERR_SHAPE; MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_sweep_open(mi_sweep **out, const char *path);

/** Closes a sweep file. NULL: no-op. */
MI_API void mi_sweep_free(mi_sweep *sweep);

/**
 * A metadata value: "format", "libmi_version", "model_digest",
 * "model_shape", "options", "heads", "k_composition" (and "unit" in unit
 * files). Borrowed from the sweep.
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_MISSING_TENSOR (no
 *         such key; *out = NULL).
 */
MI_API mi_status mi_sweep_metadata(const char **out, const mi_sweep *sweep, const char *key);

/** The number of tensors of a sweep file (0 for NULL). */
MI_API size_t mi_sweep_tensor_count(const mi_sweep *sweep);

/**
 * Tensor `index` (in name order) of a sweep file.
 *
 * @param out  out: the tensor; the caller sets out->struct_size
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, struct_size below
 *         sizeof(size_t)); MI_ERR_INDEX (index ≥ count).
 */
MI_API mi_status mi_sweep_tensor_at(mi_sweep_tensor *out, const mi_sweep *sweep, size_t index);

/**
 * The tensor named `name` ("L0H1.ov.topk_index").
 *
 * @return as mi_sweep_tensor_at; MI_ERR_MISSING_TENSOR instead of
 *         MI_ERR_INDEX when there is none.
 */
MI_API mi_status mi_sweep_tensor_find(mi_sweep_tensor *out, const mi_sweep *sweep,
                                      const char *name);

/**
 * The first `capacity` entries of a results file's skip-trigram table, best
 * first: the same triples as mi_model_skip_trigrams over the sweep's heads,
 * their z-scores from the sweep's dense float32 entries (the search's come
 * from closed-form row statistics: they agree to float32 rounding).
 *
 * @param out        out: as mi_model_skip_trigrams's (out[0].struct_size set)
 * @param out_count  out: the number written (0 on failure)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, out[0].struct_size below
 *         sizeof(size_t)); MI_ERR_MISSING_TENSOR (no table: a unit file, or
 *         a sweep without both OV and QK); MI_ERR_FORMAT (table tensors of
 *         unequal length or the wrong dtype).
 */
MI_API mi_status mi_sweep_skip_trigrams(mi_skip_trigram *out, size_t *out_count,
                                        size_t capacity, const mi_sweep *sweep);

/* (end of section: Sweeps) */

#ifdef __cplusplus
}
#endif

#endif /* MI_H */
