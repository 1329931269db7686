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
 * ABI policy
 * ----------
 * Within a major version symbols and enum values are only ever added: no
 * signature, enum value or public struct layout changes. A changed function
 * gets a successor named `_v2`. Option structs start with a `struct_size`
 * field, so they can grow without breaking callers compiled against an
 * older header.
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
  /** A LAPACK routine failed to converge. */
  MI_ERR_NUMERIC = -12
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
} mi_config;

/**
 * Sets every field of `out` to its default: zeros, no optional parts,
 * ln_eps = 1e-5, and struct_size. Call before filling a config.
 */
MI_API void mi_config_init(mi_config *out);

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
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT for NULL, a zero dimension or an
 *         unset struct_size; MI_ERR_SHAPE when n_kv_heads does not divide
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
 * @param model       in/out: a model not yet processed
 * @param which       the weight
 * @param layer,head  which copy (see the table)
 * @param dtype       MI_DTYPE_F32 or MI_DTYPE_F64 (stored as float32)
 * @param data        in: the first element
 * @param row_stride  elements between row starts; ≥ cols (any value for vectors)
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, unknown weight or dtype,
 *         row_stride < cols); MI_ERR_INDEX (layer/head out of range or
 *         non-zero where unused); MI_ERR_UNSUPPORTED (the config lacks that
 *         optional part); MI_ERR_STATE (the model was already processed).
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
   * (what reads it). Every read of the residual stream goes through a
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
 *         MI_ERR_STATE (already processed).
 */
MI_API mi_status mi_model_process(mi_model *model, unsigned steps);

/**
 * The MI_PROCESS_* steps applied to the weights (0 for raw weights). A
 * checkpoint without LayerNorm weights reports MI_PROCESS_FOLD_LN once
 * processed: its weights are already in folded form.
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
 * which the caller sets, allows).
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT for NULL or struct_size 0.
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
 * processed), into a caller buffer of rows × cols float32 at
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
/* Loading models from safetensors files                                    */
/* ------------------------------------------------------------------------ */

/*
 * A `.safetensors` file holds a TransformerLens state dict or a Hugging Face
 * GPT-2 checkpoint; the layout is detected from the tensor names.
 */

/* (end of section: Loading models from safetensors files) */

/* ------------------------------------------------------------------------ */
/* Vocabulary                                                               */
/* ------------------------------------------------------------------------ */

/*
 * Optional token strings, so that results print as text.
 */

/* (end of section: Vocabulary) */

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
 * Lifetime: a circuit keeps its model alive (a reference count), so model
 * and circuits may be freed in any order. The direct path reads W_E and
 * W_U in place; other circuits compute their factors once, at creation.
 * A model's weights must not change while circuits made from it exist.
 * Circuits are immutable: any number of threads may query one at once.
 *
 * Cost: a token circuit's factors are d_vocab × d_head (12.9 MB for GPT-2)
 * and its creation one d_vocab × d_model × d_head product. Queries that
 * stream (top-k) use one scratch tile of at most 256 × 4080 floats (4 MiB)
 * per thread, whatever n and m.
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
 *         lda < r or ldb < m); MI_ERR_OUT_OF_MEMORY (also on size overflow).
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
 * shares the other factor. Costs about r₁·r₂·max(n, m) flops: e.g. a
 * virtual OV circuit is mi_circuit_compose(ov₁, ov₂) with the shared
 * d_vocab axis contracted through the factors.
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
 *         of range).
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
 *         MI_ERR_INDEX (i1 > n); MI_ERR_OUT_OF_MEMORY (buffer size overflows).
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
 * index. NaN entries are not ordered.
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
 *         the last line); MI_ERR_OUT_OF_MEMORY.
 */
MI_API mi_status mi_circuit_topk(size_t *out_index, float *out_value, size_t ld,
                                 const mi_circuit *circuit, size_t k, unsigned flags,
                                 size_t i0, size_t i1);

/**
 * The Frobenius norm ‖AB‖_F = √tr((AᵀA)(BBᵀ)) from the two r × r Gram
 * matrices, accumulated in double.
 *
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL); MI_ERR_OUT_OF_MEMORY.
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
 *         MI_ERR_NUMERIC (LAPACK did not converge); MI_ERR_OUT_OF_MEMORY
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
 *         (geev did not converge); MI_ERR_OUT_OF_MEMORY.
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
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, struct_size 0);
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
   * not asked for or the model has no W_pos. */
  double prev_token_share;
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
} mi_report_options;

/** Sets `out` to the defaults, struct_size included. */
MI_API void mi_report_options_init(mi_report_options *out);

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
 * @return MI_OK; MI_ERR_INVALID_ARGUMENT (NULL, struct_size 0, bad option
 *         bits); MI_ERR_SHAPE (count too small); MI_ERR_NUMERIC;
 *         MI_ERR_OUT_OF_MEMORY.
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
 */

/* (end of section: Forward pass, paths and attribution) */

#ifdef __cplusplus
}
#endif

#endif /* MI_H */
