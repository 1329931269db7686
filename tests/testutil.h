/*
 * testutil.h: what the test suites share: a seeded generator, random models
 * and a dense double-precision reference forward pass that reads a model only
 * through the public accessors.
 */
#ifndef MI_TESTUTIL_H
#define MI_TESTUTIL_H

#include <mi.h>

#include <check.h>
#include <stdint.h>

/* xorshift64*: the same numbers on every machine. */
typedef struct tu_rng { uint64_t state; } tu_rng;
tu_rng tu_rng_seed(uint64_t seed);
double tu_uniform(tu_rng *rng);  /* [0, 1) */
double tu_normal(tu_rng *rng);   /* N(0, 1) */

/* Asserts a libmi call returned MI_OK, printing mi_last_error() otherwise. */
#define TU_OK(call)                                                          \
  do {                                                                       \
    mi_status tu_status_ = (call);                                           \
    ck_assert_msg(tu_status_ == MI_OK, "%s -> %s: %s", #call,                \
                  mi_status_str(tu_status_), mi_last_error());               \
  } while (0)

/* Asserts a call failed with `expected` and left a non-empty message. */
#define TU_FAILS(expected, call)                                             \
  do {                                                                       \
    mi_status tu_status_ = (call);                                           \
    ck_assert_msg(tu_status_ == (expected), "%s -> %s (%s), wanted %s",      \
                  #call, mi_status_str(tu_status_), mi_last_error(),         \
                  mi_status_str(expected));                                  \
    ck_assert_msg(mi_last_error()[0] != '\0', "%s left no message", #call);  \
  } while (0)

/*
 * A model of shape `config` with every weight it has drawn from N(0, 1/√rows)
 * (LayerNorm scales 1 + 0.3·N, shifts 0.3·N), not processed. Owned.
 */
mi_model *tu_random_model(const mi_config *config, uint64_t seed);

/* A config with the given dimensions and parts (n_kv_heads = n_heads). */
mi_config tu_config(size_t n_layers, size_t n_heads, size_t d_model, size_t d_head,
                    size_t d_vocab, size_t n_ctx, unsigned parts);

/*
 * One weight copy as doubles, rows × cols row-major (malloc'd, caller frees);
 * NULL when the model lacks it.
 */
double *tu_weight(const mi_model *model, mi_weight which, size_t layer, size_t head,
                  size_t *rows, size_t *cols);

/*
 * Dense reference forward pass in double: logits [n × d_vocab] for `tokens`,
 * with LayerNorm (its current w and b), biases, W_pos, causal softmax
 * attention scaled by 1/√d_head and grouped key/value heads.
 */
void tu_reference_logits(double *logits, const mi_model *model, const size_t *tokens,
                         size_t n);

/*
 * The same pass with its attention patterns [L × H × n × n] and residual
 * streams [(L + 1) × n × d_model, as mi_forward_extras.resid]; any output may
 * be NULL. Positions enter as config.positional says: standard adds W_pos
 * to the stream, shortformer to every layer's query and key inputs after
 * ln1 (TransformerLens: ln1(resid) + W_pos), never to the values. It reads
 * W_Q and W_K through mi_model_get_weight, which after folding a shortformer
 * model are the token side only: run it on the unprocessed model.
 */
void tu_reference_forward(double *logits, double *patterns, double *resid,
                          const mi_model *model, const size_t *tokens, size_t n);

/* out[n × cols] = x[n × rows] · W[rows × cols] (+ bias, NULL for none), doubles. */
void tu_matmul(double *out, const double *x, const double *W, const double *bias, size_t n,
               size_t rows, size_t cols);

/* X (rows × inner) · Y (inner × cols), malloc'd; the caller frees. */
double *tu_mul(const double *X, const double *Y, size_t rows, size_t inner, size_t cols);

/* Xᵀ of a rows × cols matrix, malloc'd; the caller frees. */
double *tu_transposed(const double *X, size_t rows, size_t cols);

/*
 * The previous-token share of an n × n score matrix (as
 * mi_circuit_prev_token_share defines it): of the rows p ≥ 1, the share
 * whose highest causal entry (columns 0 … p, ties to the lower) is p − 1.
 */
double tu_prev_token_share(const double *scores, size_t n);

/* Largest |a[i] - b[i]| and largest |b[i]|. */
double tu_max_abs_diff(const double *a, const double *b, size_t n);
double tu_max_abs(const double *a, size_t n);

/* Runs a suite built by `make` and returns the process exit status. */
int tu_run_suite(Suite *suite);

#endif
