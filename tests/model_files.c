/*
 * model_files.c: models written as checkpoint files, for the suites that
 * read them back (test_safetensors.c, test_config.c). The packing is done
 * here from the definitions (TransformerLens's stacked heads, GPT-2's
 * Conv1D columns), independently of libmi's name maps.
 */
#define _POSIX_C_SOURCE 200809L
#include "model_files.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tmp_path(char *buf, size_t size, const char *name) {
  const char *dir = getenv("MI_TEST_TMP");
  ck_assert_msg(dir != NULL, "MI_TEST_TMP is not set (run the suite through CTest)");
  snprintf(buf, size, "%s/%s", dir, name);
}

/* How many (layer, head) copies of `w` a model of shape `c` holds. */
void copies_of(const mi_config *c, mi_weight w, size_t *layers, size_t *heads) {
  int per_head = w == MI_W_Q || w == MI_W_O || w == MI_B_Q;
  int per_kv = w == MI_W_K || w == MI_W_V || w == MI_B_K || w == MI_B_V;
  int per_layer = per_head || per_kv || w == MI_B_O || w == MI_LN1_W || w == MI_LN1_B;
  *layers = per_layer ? c->n_layers : 1;
  *heads = per_head ? c->n_heads : per_kv ? c->n_kv_heads : 1;
}

mi_config config_of(const mi_model *model) {
  mi_config c;
  mi_config_init(&c, sizeof c);
  TU_OK(mi_model_get_config(&c, model));
  return c;
}

/*
 * A model whose every weight is k/8 with |k| <= 8 (LayerNorm scales
 * 1 + k/16): at most 5 significant bits, so exact in F16 and BF16 too and a
 * file round trip must give back the very same floats.
 */
mi_model *exact_model(const mi_config *config, uint64_t seed) {
  mi_model *model;
  TU_OK(mi_model_create(&model, config));
  mi_config c = config_of(model);
  tu_rng rng = tu_rng_seed(seed);
  for (int w = 0; w < MI_WEIGHT_COUNT; w++) {
    size_t rows, cols, layers, heads;
    if (mi_model_weight_shape(&rows, &cols, model, (mi_weight)w) != MI_OK)
      continue;
    copies_of(&c, (mi_weight)w, &layers, &heads);
    double *buf = malloc(rows * cols * sizeof *buf);
    for (size_t l = 0; l < layers; l++)
      for (size_t h = 0; h < heads; h++) {
        for (size_t i = 0; i < rows * cols; i++) {
          double k = floor(tu_uniform(&rng) * 17.0) - 8.0;
          buf[i] = w == MI_LN1_W || w == MI_LNF_W ? 1.0 + k / 16.0 : k / 8.0;
        }
        TU_OK(mi_model_set_weight(model, (mi_weight)w, l, h, MI_DTYPE_F64, buf, cols));
      }
    free(buf);
  }
  return model;
}

/* Sets W_U = W_Eᵀ, as a GPT-2 checkpoint without lm_head.weight means. */
void tie_unembedding(mi_model *model) {
  size_t V, D;
  double *W_E = tu_weight(model, MI_W_E, 0, 0, &V, &D);
  double *W_U = malloc(D * V * sizeof *W_U);
  for (size_t v = 0; v < V; v++)
    for (size_t d = 0; d < D; d++)
      W_U[d * V + v] = W_E[v * D + d];
  TU_OK(mi_model_set_weight(model, MI_W_U, 0, 0, MI_DTYPE_F64, W_U, V));
  free(W_E);
  free(W_U);
}

/* Asserts that two models have the same shape and bit-identical weights. */
void assert_same_weights(const mi_model *a, const mi_model *b) {
  mi_config ca = config_of(a), cb = config_of(b);
  ck_assert_uint_eq(ca.n_layers, cb.n_layers);
  ck_assert_uint_eq(ca.n_heads, cb.n_heads);
  ck_assert_uint_eq(ca.n_kv_heads, cb.n_kv_heads);
  ck_assert_uint_eq(ca.d_model, cb.d_model);
  ck_assert_uint_eq(ca.d_head, cb.d_head);
  ck_assert_uint_eq(ca.d_vocab, cb.d_vocab);
  ck_assert_uint_eq(ca.n_ctx, cb.n_ctx);
  ck_assert_uint_eq(ca.parts, cb.parts);
  ck_assert(ca.ln_eps == cb.ln_eps);
  for (int w = 0; w < MI_WEIGHT_COUNT; w++) {
    size_t rows, cols, r2, c2, layers, heads;
    mi_status sa = mi_model_weight_shape(&rows, &cols, a, (mi_weight)w);
    ck_assert_int_eq(sa, mi_model_weight_shape(&r2, &c2, b, (mi_weight)w));
    if (sa != MI_OK)
      continue;
    copies_of(&ca, (mi_weight)w, &layers, &heads);
    for (size_t l = 0; l < layers; l++)
      for (size_t h = 0; h < heads; h++) {
        double *x = tu_weight(a, (mi_weight)w, l, h, &rows, &cols);
        double *y = tu_weight(b, (mi_weight)w, l, h, &rows, &cols);
        for (size_t i = 0; i < rows * cols; i++)
          ck_assert_msg(x[i] == y[i], "weight %d (layer %zu, head %zu)[%zu]: %g != %g", w, l,
                        h, i, x[i], y[i]);
        free(x);
        free(y);
      }
  }
}

void add(st_writer *st, const char *dtype, const double *values, size_t rank,
         const size_t *shape, const char *fmt, size_t layer) {
  char name[128];
  snprintf(name, sizeof name, fmt, layer);
  ck_assert_msg(st_add(st, name, dtype, rank, shape, values), "cannot write %s", name);
}

/* Every (layer l) copy of `which`, stacked: [heads, rows, cols]. */
static double *stacked(const mi_model *model, mi_weight which, size_t l, size_t heads) {
  size_t rows, cols;
  ck_assert_int_eq(mi_model_weight_shape(&rows, &cols, model, which), MI_OK);
  double *all = malloc(heads * rows * cols * sizeof *all);
  for (size_t h = 0; h < heads; h++) {
    double *one = tu_weight(model, which, l, h, &rows, &cols);
    memcpy(all + h * rows * cols, one, rows * cols * sizeof *one);
    free(one);
  }
  return all;
}

/* Adds one weight copy (layer l, head 0) as a tensor of `rank` dims. */
static void add_weight(st_writer *st, const char *dtype, const mi_model *model, mi_weight w,
                       size_t l, size_t rank, const size_t *shape, const char *fmt) {
  size_t rows, cols;
  double *v = tu_weight(model, w, l, 0, &rows, &cols);
  add(st, dtype, v, rank, shape, fmt, l);
  free(v);
}

/*
 * The model as a TransformerLens state dict, with TL's buffers (a BOOL
 * mask, a scalar IGNORE) that the reader must skip. `underscore`: key/value
 * weights named _W_K, _W_V, _b_K, _b_V, as grouped-query models store them.
 * `normalization`: NULL, or TL's normalization_type to store in
 * __metadata__; any but "LN" leaves the LayerNorm weights out.
 */
st_writer *write_tl(const mi_model *model, const char *dtype, bool underscore,
                   const char *normalization) {
  mi_config c = config_of(model);
  if (normalization != NULL && strcmp(normalization, "LN") != 0)
    c.parts &= ~(unsigned)(MI_PART_LN | MI_PART_LN_FINAL);
  size_t D = c.d_model, V = c.d_vocab, H = c.n_heads, KV = c.n_kv_heads, dh = c.d_head;
  st_writer *st = st_writer_new();
  if (normalization != NULL)
    ck_assert(st_add_metadata(st, "normalization_type", normalization));
  const char *u = underscore ? "_" : "";
  char fmt[64];
  add_weight(st, dtype, model, MI_W_E, 0, 2, (size_t[]){V, D}, "embed.W_E");
  if (c.parts & MI_PART_POS_EMBED)
    add_weight(st, dtype, model, MI_W_POS, 0, 2, (size_t[]){c.n_ctx, D}, "pos_embed.W_pos");
  for (size_t l = 0; l < c.n_layers; l++) {
    double *v = stacked(model, MI_W_Q, l, H);
    add(st, dtype, v, 3, (size_t[]){H, D, dh}, "blocks.%zu.attn.W_Q", l);
    free(v);
    for (mi_weight w = MI_W_K; w <= MI_W_V; w++) {
      v = stacked(model, w, l, KV);
      snprintf(fmt, sizeof fmt, "blocks.%%zu.attn.%sW_%c", u, w == MI_W_K ? 'K' : 'V');
      add(st, dtype, v, 3, (size_t[]){KV, D, dh}, fmt, l);
      free(v);
    }
    v = stacked(model, MI_W_O, l, H);
    add(st, dtype, v, 3, (size_t[]){H, dh, D}, "blocks.%zu.attn.W_O", l);
    free(v);
    if (c.parts & MI_PART_QKV_BIAS) {
      v = stacked(model, MI_B_Q, l, H);
      add(st, dtype, v, 2, (size_t[]){H, dh}, "blocks.%zu.attn.b_Q", l);
      free(v);
      for (mi_weight w = MI_B_K; w <= MI_B_V; w++) {
        v = stacked(model, w, l, KV);
        snprintf(fmt, sizeof fmt, "blocks.%%zu.attn.%sb_%c", u, w == MI_B_K ? 'K' : 'V');
        add(st, dtype, v, 2, (size_t[]){KV, dh}, fmt, l);
        free(v);
      }
    }
    if (c.parts & MI_PART_OUT_BIAS)
      add_weight(st, dtype, model, MI_B_O, l, 1, (size_t[]){D}, "blocks.%zu.attn.b_O");
    if (c.parts & MI_PART_LN) {
      add_weight(st, dtype, model, MI_LN1_W, l, 1, (size_t[]){D}, "blocks.%zu.ln1.w");
      add_weight(st, dtype, model, MI_LN1_B, l, 1, (size_t[]){D}, "blocks.%zu.ln1.b");
    }
    unsigned char mask[16] = {1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1};
    snprintf(fmt, sizeof fmt, "blocks.%zu.attn.mask", l);
    ck_assert(st_add_raw(st, fmt, "BOOL", 2, (size_t[]){4, 4}, mask, sizeof mask));
    add(st, "F32", (double[]){-100000.0}, 0, NULL, "blocks.%zu.attn.IGNORE", l);
  }
  if (c.parts & MI_PART_LN_FINAL) {
    add_weight(st, dtype, model, MI_LNF_W, 0, 1, (size_t[]){D}, "ln_final.w");
    add_weight(st, dtype, model, MI_LNF_B, 0, 1, (size_t[]){D}, "ln_final.b");
  }
  add_weight(st, dtype, model, MI_W_U, 0, 2, (size_t[]){D, V}, "unembed.W_U");
  if (c.parts & MI_PART_UNEMBED_BIAS)
    add_weight(st, dtype, model, MI_B_U, 0, 1, (size_t[]){V}, "unembed.b_U");
  return st;
}

/*
 * The model as a Hugging Face GPT-2 checkpoint, packed here by the
 * definition (Conv1D: c_attn columns Q | K | V, head h at h·d_head;
 * c_proj rows h·d_head.. for head h), with GPT-2's attn.bias buffers.
 * Without `lm_head` the model's W_U must be W_Eᵀ.
 */
st_writer *write_gpt2(const mi_model *model, const char *dtype, const char *prefix,
                     bool lm_head, bool n_head_metadata) {
  mi_config c = config_of(model);
  size_t D = c.d_model, V = c.d_vocab, H = c.n_heads, dh = c.d_head, r, k;
  ck_assert_uint_eq(c.n_kv_heads, H);
  ck_assert(!(c.parts & MI_PART_UNEMBED_BIAS));
  st_writer *st = st_writer_new();
  char fmt[96];
  if (n_head_metadata) {
    snprintf(fmt, sizeof fmt, "%zu", H);
    ck_assert(st_add_metadata(st, "n_head", fmt));
    ck_assert(st_add_metadata(st, "format", "pt"));
  }
#define NAME(suffix) (snprintf(fmt, sizeof fmt, "%s%s", prefix, suffix), fmt)
  add_weight(st, dtype, model, MI_W_E, 0, 2, (size_t[]){V, D}, NAME("wte.weight"));
  if (c.parts & MI_PART_POS_EMBED)
    add_weight(st, dtype, model, MI_W_POS, 0, 2, (size_t[]){c.n_ctx, D}, NAME("wpe.weight"));
  double *attn = malloc(D * 3 * D * sizeof *attn), *bias = malloc(3 * D * sizeof *bias);
  double *proj = malloc(D * D * sizeof *proj);
  for (size_t l = 0; l < c.n_layers; l++) {
    if (c.parts & MI_PART_LN) {
      add_weight(st, dtype, model, MI_LN1_W, l, 1, (size_t[]){D}, NAME("h.%zu.ln_1.weight"));
      add_weight(st, dtype, model, MI_LN1_B, l, 1, (size_t[]){D}, NAME("h.%zu.ln_1.bias"));
    }
    for (size_t h = 0; h < H; h++) {
      for (int part = 0; part < 3; part++) {
        double *W = tu_weight(model, (mi_weight)(MI_W_Q + part), l, h, &r, &k);
        for (size_t i = 0; i < D; i++)
          for (size_t j = 0; j < dh; j++)
            attn[i * 3 * D + part * D + h * dh + j] = W[i * dh + j];
        free(W);
        double *b = tu_weight(model, (mi_weight)(MI_B_Q + part), l, h, &r, &k);
        for (size_t j = 0; b && j < dh; j++)
          bias[part * D + h * dh + j] = b[j];
        free(b);
      }
      double *WO = tu_weight(model, MI_W_O, l, h, &r, &k);
      memcpy(proj + h * dh * D, WO, dh * D * sizeof *proj);
      free(WO);
    }
    add(st, dtype, attn, 2, (size_t[]){D, 3 * D}, NAME("h.%zu.attn.c_attn.weight"), l);
    if (c.parts & MI_PART_QKV_BIAS)
      add(st, dtype, bias, 1, (size_t[]){3 * D}, NAME("h.%zu.attn.c_attn.bias"), l);
    add(st, dtype, proj, 2, (size_t[]){D, D}, NAME("h.%zu.attn.c_proj.weight"), l);
    if (c.parts & MI_PART_OUT_BIAS)
      add_weight(st, dtype, model, MI_B_O, l, 1, (size_t[]){D},
                 NAME("h.%zu.attn.c_proj.bias"));
    double causal[16];
    for (int i = 0; i < 16; i++)
      causal[i] = i % 4 <= i / 4;
    add(st, "F32", causal, 4, (size_t[]){1, 1, 4, 4}, NAME("h.%zu.attn.bias"), l);
  }
  free(attn);
  free(bias);
  free(proj);
  if (c.parts & MI_PART_LN_FINAL) {
    add_weight(st, dtype, model, MI_LNF_W, 0, 1, (size_t[]){D}, NAME("ln_f.weight"));
    add_weight(st, dtype, model, MI_LNF_B, 0, 1, (size_t[]){D}, NAME("ln_f.bias"));
  }
#undef NAME
  if (lm_head) {
    double *W_U = tu_weight(model, MI_W_U, 0, 0, &r, &k), *t = malloc(V * D * sizeof *t);
    for (size_t v = 0; v < V; v++)
      for (size_t d = 0; d < D; d++)
        t[v * D + d] = W_U[d * V + v];
    add(st, dtype, t, 2, (size_t[]){V, D}, "lm_head.weight", 0);
    free(W_U);
    free(t);
  }
  return st;
}
