/*
 * internal.h: what the modules of libmi share and callers never see.
 */
#ifndef MI_INTERNAL_H
#define MI_INTERNAL_H

#include "mi.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors (error.c) --------------------------------------------------- */

/*
 * Records `fmt` as the calling thread's last error and returns `status`, so a
 * failure is reported in one line: `return mi__fail(MI_ERR_SHAPE, "...", ...);`
 */
mi_status mi__fail(mi_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Checks that a pointer argument is non-NULL, naming it in the error. */
#define MI_CHECK_ARG(ptr)                                                   \
  do {                                                                      \
    if ((ptr) == NULL)                                                      \
      return mi__fail(MI_ERR_INVALID_ARGUMENT, "%s: '%s' is NULL",          \
                      __func__, #ptr);                                      \
  } while (0)

/* a * b into *out; false on size_t overflow. */
static inline bool mi__mul_size(size_t *out, size_t a, size_t b) {
  return !__builtin_mul_overflow(a, b, out);
}

/* ---- models (model.c) ---------------------------------------------------- */

/*
 * Every weight is one contiguous float32 array, row-major; per-layer and
 * per-head copies are stacked (layer-major, then head), so W_Q of (l, h)
 * starts at w[MI_W_Q] + (l * n_heads + h) * d_model * d_head. Arrays of
 * absent optional parts are NULL.
 */
struct mi_model {
  mi_config config;       /* n_kv_heads and positional resolved (never 0, DEFAULT) */
  float *w[MI_WEIGHT_COUNT];
  /*
   * Shortformer models only, once processing changed W_Q and W_K (LayerNorm
   * folded into them, centred): the query and key vector each position adds,
   * W_pos·W_Q and W_pos·W_K of the weights as they were, n_ctx × d_head per
   * head, stacked like w[MI_W_Q] and w[MI_W_K]. NULL otherwise, and then
   * positions multiply w[MI_W_Q] and w[MI_W_K] themselves.
   */
  float *pos_q, *pos_k;
  unsigned processing;    /* MI_PROCESS_* bits applied */
  bool processed;         /* mi_model_process ran: weights are final */
  mi_layout layout;
  struct mi__vocab *vocab; /* token strings (vocab.c); NULL until loaded */
  /* References held besides the creator's (circuits keep their model alive);
   * mi_model_free drops one and frees the model when none is left. */
  atomic_size_t extra_refs;
};

/* Shape of one copy of `which`, and how many copies the model stacks. */
typedef struct mi__weight_geometry {
  size_t rows, cols, copies;
  bool per_layer, per_head, per_kv_head;
} mi__weight_geometry;

/* The geometry of `which` in a model of shape `config`. */
mi__weight_geometry mi__weight_geometry_of(const mi_config *config, mi_weight which);

/* The weight's name as the API and messages spell it ("W_Q", "ln1.w"). */
const char *mi__weight_name(mi_weight which);

/*
 * Pointer to the (layer, head) copy of `which`, after checking indices
 * (unused ones must be 0) and that the part exists. Borrowed.
 */
mi_status mi__weight_slot(float **out, const mi_model *model, mi_weight which,
                          size_t layer, size_t head);

/* The key/value head that query head `head` reads. */
static inline size_t mi__kv_head(const mi_model *model, size_t head) {
  return head / (model->config.n_heads / model->config.n_kv_heads);
}

/*
 * mi_model_set_weight with a column stride too (both in elements), so loaders
 * can copy packed or transposed tensors (GPT-2's c_attn, a tied W_U = W_Eᵀ).
 */
mi_status mi__model_set_weight_strided(mi_model *model, mi_weight which, size_t layer,
                                       size_t head, mi_dtype dtype, const void *data,
                                       size_t row_stride, size_t col_stride);

/*
 * Asks for huge pages on the page-aligned inside of a large allocation
 * (advice only; nothing happens below 2 MiB or without MADV_HUGEPAGE).
 */
void mi__advise_huge(void *p, size_t bytes);

/*
 * For a loader that reads float32 bytes straight into the model: the
 * (layer, head) copy of `which` (*out, *out_count floats, row-major), after
 * the checks mi__model_set_weight_strided makes. Once it is filled,
 * mi__model_weight_accept checks it as the setter checks what it copies
 * (MI_ERR_NONFINITE naming the element, the slot reset).
 */
mi_status mi__model_weight_target(float **out, size_t *out_count, mi_model *model,
                                  mi_weight which, size_t layer, size_t head);
mi_status mi__model_weight_accept(mi_model *model, mi_weight which, size_t layer,
                                  size_t head);

/* "standard", "shortformer", "none" ("default" for DEFAULT): TransformerLens's
 * positional_embedding_type names, for messages and files. */
const char *mi__positional_name(mi_positional kind);

/*
 * The positional side of head (layer, head) of a shortformer model: the
 * n_ctx × d_head matrix W_pos·W (W = W_Q, or W_K of the key/value head
 * `head` for MI_W_K) of the weights as they were before processing; `rows`
 * (≤ n_ctx) of its rows into out (ld d_head), times `scale`.
 */
mi_status mi__positional_side(float *out, const mi_model *model, mi_weight which, size_t layer,
                              size_t head, size_t rows, float scale);

/* Sets model->layout; for loaders. */
void mi__model_set_layout(mi_model *model, mi_layout layout);

/* ---- vocabulary (vocab.c) ----------------------------------------------- */

/* Frees a model's token strings (drops one share of them); NULL is a no-op. */
void mi__vocab_free(struct mi__vocab *vocab);

/* One more owner of `vocab` (a model copy); returns it. NULL stays NULL. */
struct mi__vocab *mi__vocab_share(struct mi__vocab *vocab);

/*
 * GPT-2's bytes_to_unicode, inverted: the byte each of the 324 code points
 * of its alphabet stands for, -1 for the others (see vocab.c).
 */
#define MI__BYTE_LEVEL_CODE_POINTS 324
void mi__byte_level_inverse(int16_t inverse[MI__BYTE_LEVEL_CODE_POINTS]);

/*
 * Decodes a byte-level token (valid UTF-8) into `out`, which holds at least
 * len bytes. Returns the decoded length, or SIZE_MAX when a character is
 * outside the alphabet.
 */
size_t mi__byte_level_decode(char *out, const char *raw, size_t len,
                             const int16_t inverse[MI__BYTE_LEVEL_CODE_POINTS]);

/* How a vocabulary file is read; mi__vocab_format_of resolves DETECT. */
typedef enum { MI__VOCAB_DETECT, MI__VOCAB_JSON, MI__VOCAB_LINES } mi__vocab_format;

/*
 * The format of a vocabulary file: from its name when path ends in ".txt" or
 * ".json" (path may be NULL), else JSON when the first thing after a byte
 * order mark and white space is '{', else lines. *skip receives the length
 * of a UTF-8 byte order mark (0 or 3).
 */
mi__vocab_format mi__vocab_format_of(const char *path, const char *data, size_t size,
                                     size_t *skip);

/*
 * Loads the vocabulary of data (format resolved) into the model, as
 * mi_model_load_vocab_memory does, with `tokenizer` (owned, freed on failure)
 * as its tokenizer; NULL: the tokenizer the file itself describes (see
 * mi__tokenizer_parse), or the reason it has none, kept for mi_model_tokenizer.
 */
mi_status mi__vocab_load(mi_model *model, const char *data, size_t size,
                         mi__vocab_format format, mi_tokenizer *tokenizer);

/* ---- tokenizer (tokenizer.c) ---------------------------------------------- */

/*
 * A tokenizer from a vocabulary file's bytes (BOM already skipped; format
 * resolved) and, for a vocab.json, its merges file (NULL otherwise). Ids
 * must be below id_limit (MI_ERR_INDEX; a model's d_vocab, else SIZE_MAX).
 * Messages do not name the files; the callers that have names add them.
 */
mi_status mi__tokenizer_parse(mi_tokenizer **out, const char *vocab, size_t vocab_size,
                              mi__vocab_format format, const char *merges,
                              size_t merges_size, size_t id_limit);

/* 1 + the largest id the tokenizer can produce. */
size_t mi__tokenizer_n_ids(const mi_tokenizer *tokenizer);

/* ---- circuits (circuit.c) ------------------------------------------------- */

/* Takes a reference to a model; mi_model_free drops it. */
static inline void mi__model_retain(mi_model *model) {
  atomic_fetch_add(&model->extra_refs, 1);
}

/* ---- forward pass (forward.c) and head behaviour (behaviour.c) ------------- */

/*
 * The attention patterns (n_layers × n_heads × n × n floats, as
 * mi_forward_extras.patterns) of a token sequence, without the logits. Checks
 * the sequence (MLPs, n, n_ctx, token ids) as mi_model_forward does.
 */
mi_status mi__forward_patterns(float *patterns, const mi_model *model, const size_t *tokens,
                               size_t n);

/*
 * What mi_model_forward checks before reading the tokens: no MLPs, n ≥ 1,
 * n ≤ n_ctx. For callers that size buffers by n before running forward.
 */
mi_status mi__check_sequence_length(const mi_model *model, size_t n);

/*
 * Fills the behavioural fields of the n_layers × n_heads report lines (full
 * mi_head_report, consecutive) as options ask; leaves them NaN for a model
 * with MLPs or with options->behaviour_sequences = 0.
 */
mi_status mi__head_behaviour(mi_head_report *lines, const mi_model *model,
                             const mi_report_options *options);

/* ---- circuit factors (circuit.c), for streamed queries elsewhere ---------- */

/* The views of a circuit's factors A (n × r) and B (r × m); borrowed. */
struct mi__matrix;
void mi__circuit_factors(struct mi__matrix *A, struct mi__matrix *B, const mi_circuit *circuit);

/*
 * A circuit A·B over factors the library built: it adopts the storage
 * owned_a and owned_b behind the views *A (n × r) and *B (r × m), freeing
 * them with itself, or at once on failure, instead of copying them as
 * mi_circuit_from_factors does. Any strides (B may be a transposed view);
 * owned_b may be NULL when owned_a's block holds B too.
 */
mi_status mi__circuit_adopt(mi_circuit **out, const struct mi__matrix *A, float *owned_a,
                            const struct mi__matrix *B, float *owned_b);

/* The same with share_a's A (its storage shared, counted) and an adopted B. */
mi_status mi__circuit_adopt_b(mi_circuit **out, const mi_circuit *share_a,
                              const struct mi__matrix *B, float *owned_b);

/* ---- hashing (hash.c) ------------------------------------------------------ */

/* SipHash-1-3 of `len` bytes under a key drawn once per process; the hash
 * every byte-string table of libmi uses (vocabulary, tokenizer). */
uint64_t mi__hash_bytes(const void *data, size_t len);

/* ---- non-finite screens (finite.c) ---------------------------------------- */

/*
 * Whether every element m[i * ld + j] (i < rows, j < cols) is finite; when
 * not, the first NaN or Inf's (row, col) goes to at[0], at[1].
 */
bool mi__finite_f(const float *m, size_t rows, size_t cols, size_t ld, size_t *at);
bool mi__finite_d(const double *m, size_t rows, size_t cols, size_t ld, size_t *at);

/* ---- versioned structs (structs.c) ------------------------------------------ */

/*
 * The body of every mi_*_init: writes the first min(struct_size, size) bytes
 * of `defaults` (a full struct of `size` bytes) to `out`, then struct_size
 * into out's first field when it fits. Never writes past struct_size bytes.
 * NULL out: no-op.
 */
void mi__struct_init(void *out, size_t struct_size, const void *defaults, size_t size);

/*
 * Copies a caller's input struct `src` into `dst` (dst_size bytes, already
 * holding the defaults): only src's struct_size bytes are read, so fields an
 * older caller lacks keep their defaults; dst's struct_size becomes dst_size.
 * A NULL src (optional options) leaves the defaults. MI_ERR_INVALID_ARGUMENT, naming the struct `name`, when struct_size is
 * below sizeof(size_t) or above dst_size.
 */
mi_status mi__struct_in(void *dst, size_t dst_size, const void *src, const char *name);

/*
 * Copies a library struct `src` (src_size bytes) out to a caller's `dst`,
 * whose struct_size the caller set: min(struct_size, src_size) bytes, and
 * dst's struct_size becomes that count. MI_ERR_INVALID_ARGUMENT (nothing
 * written) when dst's struct_size is below sizeof(size_t).
 */
mi_status mi__struct_out(void *dst, const void *src, size_t src_size, const char *name);

#endif /* MI_INTERNAL_H */
