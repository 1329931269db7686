/*
 * Models from .safetensors files: both name maps and all four dtypes round
 * trip exactly, GPT-2's packed heads land where Conv1D puts them, the two
 * layouts of one model give the same logits, folding on load keeps the
 * function, and hostile files fail with their own status and message.
 */
#define _POSIX_C_SOURCE 200809L
#include "model_files.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const DTYPES[] = {"F32", "F16", "BF16", "F64"};
static const unsigned ALL_PARTS = MI_PART_POS_EMBED | MI_PART_QKV_BIAS | MI_PART_OUT_BIAS |
                                  MI_PART_UNEMBED_BIAS | MI_PART_LN | MI_PART_LN_FINAL;
/* GPT-2 has every part but an unembedding bias. */
static const unsigned GPT2_PARTS = MI_PART_POS_EMBED | MI_PART_QKV_BIAS | MI_PART_OUT_BIAS |
                                   MI_PART_LN | MI_PART_LN_FINAL;

static mi_load_options raw_options(void) {
  mi_load_options o;
  mi_load_options_init(&o, sizeof o);
  o.process = 0;
  return o;
}

/* Saves `st`, loads the file, and checks the in-memory entry point agrees. */
static mi_model *save_and_load(const st_writer *st, const char *file,
                               const mi_load_options *options) {
  char path[512];
  tmp_path(path, sizeof path, file);
  ck_assert_msg(st_save(st, path), "cannot write %s", path);
  mi_model *model, *again;
  TU_OK(mi_model_load(&model, path, options));
  size_t size;
  unsigned char *bytes = st_serialize(st, &size);
  TU_OK(mi_model_load_memory(&again, bytes, size, options));
  assert_same_weights(model, again);
  mi_model_free(again);
  free(bytes);
  return model;
}

START_TEST(tl_files_round_trip_in_every_dtype) {
  /* Grouped-query (4 heads read 2 key/value heads) with every optional part. */
  mi_config c = tu_config(2, 4, 8, 3, 11, 6, ALL_PARTS);
  c.n_kv_heads = 2;
  mi_load_options raw = raw_options();
  for (int i = 0; i < 4; i++) {
    mi_model *written = exact_model(&c, 10 + (uint64_t)i);
    st_writer *st = write_tl(written, DTYPES[i], i % 2 == 1, NULL);
    char file[64];
    snprintf(file, sizeof file, "tl_%s.safetensors", DTYPES[i]);
    mi_model *loaded = save_and_load(st, file, &raw);
    assert_same_weights(written, loaded);
    ck_assert_int_eq(mi_model_layout(loaded), MI_LAYOUT_TRANSFORMERLENS);
    ck_assert_uint_eq(mi_model_processing(loaded), 0);
    st_writer_free(st);
    mi_model_free(loaded);
    mi_model_free(written);
  }
  /* No optional part at all: none is invented. */
  mi_config bare = tu_config(1, 2, 4, 2, 5, 0, 0);
  mi_model *written = exact_model(&bare, 3);
  st_writer *st = write_tl(written, "F16", false, NULL);
  mi_model *loaded = save_and_load(st, "tl_bare.safetensors", &raw);
  assert_same_weights(written, loaded);
  st_writer_free(st);
  mi_model_free(loaded);
  mi_model_free(written);
}
END_TEST

START_TEST(gpt2_files_round_trip_in_every_dtype) {
  mi_config c = tu_config(2, 2, 6, 3, 9, 5, GPT2_PARTS);
  mi_load_options raw = raw_options();
  for (int i = 0; i < 4; i++) {
    /* Alternate the transformer. prefix; tie W_U in two dtypes. */
    const char *prefix = i % 2 ? "transformer." : "";
    bool lm_head = i >= 2;
    mi_model *written = exact_model(&c, 20 + (uint64_t)i);
    if (!lm_head)
      tie_unembedding(written);
    st_writer *st = write_gpt2(written, DTYPES[i], prefix, lm_head, true);
    char file[64];
    snprintf(file, sizeof file, "gpt2_%s.safetensors", DTYPES[i]);
    mi_model *loaded = save_and_load(st, file, &raw);
    assert_same_weights(written, loaded);
    ck_assert_int_eq(mi_model_layout(loaded), MI_LAYOUT_GPT2);
    st_writer_free(st);
    mi_model_free(loaded);
    mi_model_free(written);
  }
}
END_TEST

/*
 * The packing checked by index, independently of write_gpt2: every element
 * of c_attn, c_proj and wte encodes its own position.
 */
START_TEST(gpt2_packing_follows_conv1d) {
  enum { D = 4, H = 2, dh = 2, V = 3 };
  double wte[V * D], attn[D * 3 * D], bias[3 * D], proj[D * D];
  for (int v = 0; v < V; v++)
    for (int d = 0; d < D; d++)
      wte[v * D + d] = 10 * v + d;
  for (int i = 0; i < D; i++)
    for (int col = 0; col < 3 * D; col++)
      attn[i * 3 * D + col] = 100 * i + col;
  for (int col = 0; col < 3 * D; col++)
    bias[col] = col + 0.5;
  for (int i = 0; i < D; i++)
    for (int j = 0; j < D; j++)
      proj[i * D + j] = -(10 * i + j);
  st_writer *st = st_writer_new();
  ck_assert(st_add(st, "transformer.wte.weight", "F32", 2, (size_t[]){V, D}, wte));
  ck_assert(st_add(st, "transformer.h.0.attn.c_attn.weight", "F32", 2,
                   (size_t[]){D, 3 * D}, attn));
  ck_assert(st_add(st, "transformer.h.0.attn.c_attn.bias", "F32", 1, (size_t[]){3 * D},
                   bias));
  ck_assert(st_add(st, "transformer.h.0.attn.c_proj.weight", "F32", 2, (size_t[]){D, D},
                   proj));
  size_t size;
  unsigned char *bytes = st_serialize(st, &size);
  mi_load_options o = raw_options();
  mi_model *model;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load_memory(&model, bytes, size, &o));
  ck_assert_msg(strstr(mi_last_error(), "n_heads") != NULL, "%s", mi_last_error());
  o.n_heads = H;
  TU_OK(mi_model_load_memory(&model, bytes, size, &o));
  mi_config c = config_of(model);
  ck_assert_uint_eq(c.n_heads, H);
  ck_assert_uint_eq(c.d_head, dh);
  ck_assert_uint_eq(c.parts, MI_PART_QKV_BIAS);
  size_t r, k;
  for (int h = 0; h < H; h++) {
    double *W[3], *b[3];
    for (int p = 0; p < 3; p++) {
      W[p] = tu_weight(model, (mi_weight)(MI_W_Q + p), 0, (size_t)h, &r, &k);
      b[p] = tu_weight(model, (mi_weight)(MI_B_Q + p), 0, (size_t)h, &r, &k);
    }
    for (int i = 0; i < D; i++)
      for (int j = 0; j < dh; j++)
        for (int p = 0; p < 3; p++)
          ck_assert_double_eq(W[p][i * dh + j], 100 * i + p * D + h * dh + j);
    for (int j = 0; j < dh; j++)
      for (int p = 0; p < 3; p++)
        ck_assert_double_eq(b[p][j], p * D + h * dh + j + 0.5);
    double *WO = tu_weight(model, MI_W_O, 0, (size_t)h, &r, &k);
    for (int i = 0; i < dh; i++)
      for (int j = 0; j < D; j++)
        ck_assert_double_eq(WO[i * D + j], -(10 * (h * dh + i) + j));
    for (int p = 0; p < 3; p++) {
      free(W[p]);
      free(b[p]);
    }
    free(WO);
  }
  double *WU = tu_weight(model, MI_W_U, 0, 0, &r, &k);
  for (int d = 0; d < D; d++)
    for (int v = 0; v < V; v++)
      ck_assert_double_eq(WU[d * V + v], 10 * v + d); /* tied: W_U = W_Eᵀ */
  free(WU);
  mi_model_free(model);
  free(bytes);
  st_writer_free(st);
}
END_TEST

START_TEST(gpt2_and_tl_files_give_the_same_logits) {
  mi_config c = tu_config(2, 2, 6, 3, 9, 5, GPT2_PARTS);
  mi_model *written = exact_model(&c, 7);
  tie_unembedding(written);
  st_writer *tl = write_tl(written, "F32", false, NULL);
  st_writer *gpt2 = write_gpt2(written, "BF16", "", false, true);
  const size_t tokens[] = {0, 3, 8, 1, 5}, n = 5;
  double a[5 * 9], b[5 * 9];
  for (int processed = 0; processed < 2; processed++) {
    mi_load_options o;
    mi_load_options_init(&o, sizeof o);
    if (!processed)
      o.process = 0;
    mi_model *from_tl = save_and_load(tl, "same_tl.safetensors", &o);
    mi_model *from_gpt2 = save_and_load(gpt2, "same_gpt2.safetensors", &o);
    /* The same floats through the same deterministic reference: identical. */
    assert_same_weights(from_tl, from_gpt2);
    tu_reference_logits(a, from_tl, tokens, n);
    tu_reference_logits(b, from_gpt2, tokens, n);
    ck_assert_msg(tu_max_abs_diff(a, b, n * 9) == 0.0, "logits differ by %g",
                  tu_max_abs_diff(a, b, n * 9));
    ck_assert(tu_max_abs(a, n * 9) > 0.1);
    mi_model_free(from_tl);
    mi_model_free(from_gpt2);
  }
  st_writer_free(tl);
  st_writer_free(gpt2);
  mi_model_free(written);
}
END_TEST

/* Subtracts each row's mean: logits up to the per-position constant softmax ignores. */
static void center_logit_rows(double *x, size_t n, size_t V) {
  for (size_t t = 0; t < n; t++) {
    double mean = 0;
    for (size_t v = 0; v < V; v++)
      mean += x[t * V + v];
    for (size_t v = 0; v < V; v++)
      x[t * V + v] -= mean / (double)V;
  }
}

START_TEST(processing_on_load_keeps_the_logits) {
  mi_config c = tu_config(2, 2, 8, 4, 10, 6, ALL_PARTS);
  mi_model *written = exact_model(&c, 5);
  st_writer *st = write_tl(written, "F32", false, NULL);
  mi_load_options raw = raw_options(), folded, tl;
  mi_load_options_init(&folded, sizeof folded);
  mi_load_options_init(&tl, sizeof tl);
  tl.process = MI_PROCESS_TRANSFORMERLENS;
  mi_model *m_raw = save_and_load(st, "fold_raw.safetensors", &raw);
  mi_model *m_fold = save_and_load(st, "fold_fold.safetensors", &folded);
  mi_model *m_tl = save_and_load(st, "fold_tl.safetensors", &tl);
  ck_assert_uint_eq(mi_model_processing(m_raw), 0);
  ck_assert_uint_eq(mi_model_processing(m_fold), MI_PROCESS_FOLD_LN);
  ck_assert_uint_eq(mi_model_processing(m_tl), MI_PROCESS_TRANSFORMERLENS);
  /* Folding happened: ln1 is now the identity and W_Q took its scale. */
  size_t r, k;
  double *lw = tu_weight(m_fold, MI_LN1_W, 1, 0, &r, &k);
  double *lb = tu_weight(m_fold, MI_LN1_B, 1, 0, &r, &k);
  for (size_t i = 0; i < c.d_model; i++)
    ck_assert(lw[i] == 1.0 && lb[i] == 0.0);
  double *q_raw = tu_weight(m_raw, MI_W_Q, 1, 1, &r, &k);
  double *q_fold = tu_weight(m_fold, MI_W_Q, 1, 1, &r, &k);
  ck_assert(tu_max_abs_diff(q_raw, q_fold, r * k) > 0.01);
  free(lw); free(lb); free(q_raw); free(q_fold);

  const size_t tokens[] = {9, 2, 2, 7, 0, 4}, n = 6, V = 10;
  double want[6 * 10], got[6 * 10], centred[6 * 10];
  tu_reference_logits(want, m_raw, tokens, n);
  tu_reference_logits(got, m_fold, tokens, n);
  tu_reference_logits(centred, m_tl, tokens, n);
  /*
   * The folded weights are rounded to float32 once (relative 6e-8); through
   * two layers of d_model = 8 with weights and logits of order 1-10 that
   * moves a logit by ~1e-6 at most. 1e-5 of the logits' scale leaves a
   * margin of 10 and still catches a fold that drops a term (≥ 1e-2 here).
   */
  double scale = fmax(1.0, tu_max_abs(want, n * V));
  ck_assert_msg(tu_max_abs_diff(got, want, n * V) <= 1e-5 * scale, "folded: %g",
                tu_max_abs_diff(got, want, n * V));
  /* Centering moves each position's logits by one constant: compare centred rows. */
  center_logit_rows(want, n, V);
  center_logit_rows(centred, n, V);
  ck_assert_msg(tu_max_abs_diff(centred, want, n * V) <= 1e-5 * scale, "centred: %g",
                tu_max_abs_diff(centred, want, n * V));
  mi_model_free(m_raw);
  mi_model_free(m_fold);
  mi_model_free(m_tl);
  st_writer_free(st);
  mi_model_free(written);
}
END_TEST

/*
 * A TransformerLens model saved after fold_ln has no LayerNorm weights but
 * still normalises ("LNPre"); its __metadata__ says so, and the loaded model
 * must compute what the model before folding did.
 */
START_TEST(folded_tl_checkpoints_keep_their_normalisation) {
  mi_config c = tu_config(2, 2, 8, 4, 10, 6, ALL_PARTS);
  mi_model *original = exact_model(&c, 11);
  const size_t tokens[] = {1, 7, 7, 3, 0, 9}, n = 6, V = 10;
  double want[6 * 10], got[6 * 10];
  tu_reference_logits(want, original, tokens, n);
  TU_OK(mi_model_process(original, MI_PROCESS_FOLD_LN));
  st_writer *pre = write_tl(original, "F32", false, "LNPre");
  mi_model *loaded = save_and_load(pre, "lnpre.safetensors", NULL);
  ck_assert_uint_eq(config_of(loaded).parts, ALL_PARTS);
  tu_reference_logits(got, loaded, tokens, n);
  /* Folded weights rounded once to float32: the bound of processing_on_load. */
  double scale = fmax(1.0, tu_max_abs(want, n * V));
  ck_assert_msg(tu_max_abs_diff(got, want, n * V) <= 1e-5 * scale, "LNPre: %g",
                tu_max_abs_diff(got, want, n * V));
  mi_model_free(loaded);
  st_writer_free(pre);
  /* Declared "None", the same weights make a model without LayerNorm: other logits. */
  st_writer *none = write_tl(original, "F32", false, "None");
  loaded = save_and_load(none, "lnnone.safetensors", NULL);
  ck_assert_uint_eq(config_of(loaded).parts & (MI_PART_LN | MI_PART_LN_FINAL), 0);
  tu_reference_logits(got, loaded, tokens, n);
  ck_assert(tu_max_abs_diff(got, want, n * V) > 1e-2 * scale);
  mi_model_free(loaded);
  st_writer_free(none);
  mi_model_free(original);
}
END_TEST

/* A caller compiled before `process` existed: only its bytes are read, and
 * the load folds LayerNorm by default (ASan: the struct is exactly sized). */
START_TEST(old_options_take_the_defaults) {
  mi_config c = tu_config(1, 2, 4, 2, 5, 6, ALL_PARTS);
  mi_model *written = exact_model(&c, 2), *model = (mi_model *)1;
  st_writer *st = write_tl(written, "F32", false, NULL);
  size_t size, old_size = offsetof(mi_load_options, process);
  unsigned char *bytes = st_serialize(st, &size);
  mi_load_options full = raw_options(); /* process 0 lies past the old struct */
  full.n_heads = 2;
  mi_load_options *old = malloc(old_size);
  memcpy(old, &full, old_size);
  memcpy(old, &old_size, sizeof old_size); /* struct_size, without a too-wide access */
  TU_OK(mi_model_load_memory(&model, bytes, size, old));
  ck_assert_uint_eq(mi_model_processing(model), MI_PROCESS_FOLD_LN);
  mi_model_free(model);
  const size_t four = 4;
  memcpy(old, &four, sizeof four);
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load_memory(&model, bytes, size, old));
  ck_assert_msg(strstr(mi_last_error(), "mi_load_options.struct_size") != NULL, "%s",
                mi_last_error());
  ck_assert_ptr_null(model);
  free(old);
  free(bytes);
  st_writer_free(st);
  mi_model_free(written);
}
END_TEST

START_TEST(options_are_checked) {
  mi_config c = tu_config(1, 2, 4, 2, 5, 0, 0);
  mi_model *written = exact_model(&c, 1), *model = (mi_model *)1;
  st_writer *st = write_tl(written, "F32", false, NULL);
  size_t size;
  unsigned char *bytes = st_serialize(st, &size);
  mi_load_options_init(NULL, sizeof(mi_load_options));
  mi_load_options o;
  mi_load_options_init(&o, sizeof o);
  ck_assert_uint_eq(o.struct_size, sizeof o);
  ck_assert_uint_eq(o.n_heads, 0);
  ck_assert_uint_eq(o.process, MI_PROCESS_FOLD_LN);
  /* Defaults: LayerNorm folded (nothing to fold here, recorded as done). */
  TU_OK(mi_model_load_memory(&model, bytes, size, NULL));
  ck_assert_uint_eq(mi_model_processing(model), MI_PROCESS_FOLD_LN);
  mi_model_free(model);
  o.n_heads = 2; /* agrees with the file */
  TU_OK(mi_model_load_memory(&model, bytes, size, &o));
  mi_model_free(model);
  o.n_heads = 1;
  TU_FAILS(MI_ERR_SHAPE, mi_model_load_memory(&model, bytes, size, &o));
  ck_assert_msg(strstr(mi_last_error(), "mi_load_options says n_heads = 1, but the tensors "
                       "have 2") != NULL, "%s", mi_last_error());
  ck_assert_ptr_null(model);
  mi_load_options_init(&o, sizeof o);
  o.struct_size = 0;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load_memory(&model, bytes, size, &o));
  mi_load_options_init(&o, sizeof o);
  o.process = 1u << 9;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load_memory(&model, bytes, size, &o));
  /* No LayerNorm: centering the writing weights would change the outputs. */
  o.process = MI_PROCESS_TRANSFORMERLENS;
  TU_FAILS(MI_ERR_UNSUPPORTED, mi_model_load_memory(&model, bytes, size, &o));
  ck_assert_ptr_null(model);
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load_memory(NULL, bytes, size, NULL));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load_memory(&model, NULL, size, NULL));
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load(&model, NULL, NULL));
  free(bytes);
  st_writer_free(st);
  mi_model_free(written);
}
END_TEST

START_TEST(mlp_weights_are_recorded_not_read) {
  mi_config c = tu_config(2, 2, 6, 3, 9, 5, GPT2_PARTS);
  mi_model *written = exact_model(&c, 9);
  tie_unembedding(written);
  double w[6 * 4] = {0};
  for (int layout = 0; layout < 2; layout++) {
    st_writer *st = layout ? write_gpt2(written, "F32", "transformer.", false, true)
                           : write_tl(written, "F32", false, NULL);
    for (size_t l = 0; l < 2; l++)
      add(st, "F32", w, 2, (size_t[]){6, 4},
          layout ? "transformer.h.%zu.mlp.c_fc.weight" : "blocks.%zu.mlp.W_in", l);
    mi_load_options o = raw_options();
    mi_model *loaded = save_and_load(st, "mlp.safetensors", &o);
    mi_config got = config_of(loaded);
    ck_assert_uint_eq(got.parts, GPT2_PARTS | MI_PART_MLP);
    /* The attention weights are read all the same. */
    double *a = tu_weight(loaded, MI_W_V, 1, 1, &(size_t){0}, &(size_t){0});
    double *b = tu_weight(written, MI_W_V, 1, 1, &(size_t){0}, &(size_t){0});
    ck_assert(tu_max_abs_diff(a, b, 6 * 3) == 0.0);
    free(a);
    free(b);
    mi_model_free(loaded);
    st_writer_free(st);
  }
  mi_model_free(written);
}
END_TEST

START_TEST(files_that_cannot_be_read) {
  mi_model *model = (mi_model *)1;
  char path[512];
  tmp_path(path, sizeof path, "no-such-file.safetensors");
  remove(path);
  TU_FAILS(MI_ERR_IO, mi_model_load(&model, path, NULL));
  ck_assert_msg(strstr(mi_last_error(), path) != NULL, "%s", mi_last_error());
  ck_assert_ptr_null(model);
  /* A folder without a weights file (folders themselves: test_config.c). */
  tmp_path(path, sizeof path, "no-weights-folder");
  ck_assert(mkdir(path, 0700) == 0 || errno == EEXIST);
  TU_FAILS(MI_ERR_IO, mi_model_load(&model, path, NULL));
  /* An empty file fails before any mapping (mmap of 0 bytes is an error). */
  tmp_path(path, sizeof path, "empty.safetensors");
  ck_assert(st_write_bytes(path, "", 0));
  TU_FAILS(MI_ERR_TRUNCATED, mi_model_load(&model, path, NULL));
  ck_assert_msg(strstr(mi_last_error(), "empty") != NULL, "%s", mi_last_error());
  TU_FAILS(MI_ERR_TRUNCATED, mi_model_load_memory(&model, "", 0, NULL));
  ck_assert_ptr_null(model);
}
END_TEST

/* ---- hostile files -------------------------------------------------------------- */

/*
 * A valid one-layer TransformerLens file (d_vocab 3, d_model 4, 2 heads of
 * 2, float32, 352 data bytes); each bad case changes one thing in it.
 */
#define F32(shape, begin, end) \
  "{\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":[" #begin "," #end "]}"
static const char *const BASE[][2] = {
    {"embed.W_E", F32("[3,4]", 0, 48)},
    {"blocks.0.attn.W_Q", F32("[2,4,2]", 48, 112)},
    {"blocks.0.attn.W_K", F32("[2,4,2]", 112, 176)},
    {"blocks.0.attn.W_V", F32("[2,4,2]", 176, 240)},
    {"blocks.0.attn.W_O", F32("[2,2,4]", 240, 304)},
    {"unembed.W_U", F32("[4,3]", 304, 352)},
};
/* A GPT-2 file of the same size, without n_head. */
#define GPT2_HEADER(metadata, extra)                                         \
  "{" metadata "\"wte.weight\":" F32("[3,4]", 0, 48)                         \
  ",\"h.0.attn.c_attn.weight\":" F32("[4,12]", 48, 240)                      \
  ",\"h.0.attn.c_proj.weight\":" F32("[4,4]", 240, 304) extra "}"

typedef struct bad_file {
  const char *what;
  mi_status status;
  const char *says;           /* the message must contain this */
  const char *name, *entry;   /* replace BASE entry `name` by `entry` ("": drop it) */
  const char *extra;          /* entries appended to BASE */
  const char *header;         /* instead of BASE: the whole header */
  size_t data_size;           /* 0: 352 */
  unsigned long long length;  /* 0: the header's true length */
  size_t cut;                 /* > 0: keep only this many bytes */
} bad_file;

static const bad_file BAD[] = {
    {"shorter than the length field", MI_ERR_TRUNCATED, "8-byte header length", .cut = 5},
    {"header length beyond the file", MI_ERR_TRUNCATED, "header length is 1000000",
     .length = 1000000},
    {"header length 2^64-1", MI_ERR_TRUNCATED, "18446744073709551615",
     .length = 18446744073709551615ull},
    {"header length 0", MI_ERR_FORMAT, "not valid JSON", .header = ""},
    {"header not JSON", MI_ERR_FORMAT, "not valid JSON", .header = "{\"embed.W_E\": nope}"},
    {"header a JSON array", MI_ERR_FORMAT, "not an object", .header = "[1, 2, 3]"},
    {"non-UTF-8 name", MI_ERR_FORMAT, "decode",
     .extra = "\"bad\xff\xfe" "name\":" F32("[0]", 0, 0)},
    {"duplicate name", MI_ERR_FORMAT, "duplicate",
     .extra = "\"embed.W_E\":" F32("[3,4]", 0, 48)},
    {"entry not an object", MI_ERR_FORMAT, "embed.W_E",
     .name = "embed.W_E", .entry = "[0, 48]"},
    {"unknown dtype", MI_ERR_DTYPE, "'F7'", .name = "embed.W_E",
     .entry = "{\"dtype\":\"F7\",\"shape\":[3,4],\"data_offsets\":[0,48]}"},
    {"integer dtype for a weight", MI_ERR_DTYPE, "I32", .name = "embed.W_E",
     .entry = "{\"dtype\":\"I32\",\"shape\":[3,4],\"data_offsets\":[0,48]}"},
    {"dtype not a string", MI_ERR_FORMAT, "dtype", .name = "embed.W_E",
     .entry = "{\"dtype\":4,\"shape\":[3,4],\"data_offsets\":[0,48]}"},
    {"shape product != byte length", MI_ERR_SHAPE, "span 48",
     .name = "embed.W_E", .entry = F32("[3,5]", 0, 48)},
    {"negative shape", MI_ERR_FORMAT, "shape[0]", .name = "embed.W_E",
     .entry = F32("[-3,4]", 0, 48)},
    {"non-integer shape", MI_ERR_FORMAT, "shape[1]",
     .name = "embed.W_E", .entry = F32("[3,4.0]", 0, 48)},
    {"shape not an array", MI_ERR_FORMAT, "shape", .name = "embed.W_E",
     .entry = "{\"dtype\":\"F32\",\"shape\":\"3x4\",\"data_offsets\":[0,48]}"},
    {"data_offsets of 3 numbers", MI_ERR_FORMAT, "data_offsets", .name = "embed.W_E",
     .entry = "{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[0,48,96]}"},
    {"data_offsets begin > end", MI_ERR_FORMAT, "data_offsets", .name = "embed.W_E",
     .entry = F32("[3,4]", 48, 0)},
    {"data_offsets negative", MI_ERR_FORMAT, "data_offsets", .name = "embed.W_E",
     .entry = F32("[3,4]", -48, 0)},
    {"offsets past the end", MI_ERR_TRUNCATED, "unembed.W_U' ends at byte offset",
     .data_size = 340},
    {"offsets overlapping", MI_ERR_FORMAT, "overlap", .name = "blocks.0.attn.W_K",
     .entry = F32("[2,4,2]", 100, 164)},
    {"huge shape (product overflows)", MI_ERR_SHAPE, "overflows",
     .extra = "\"huge\":" F32("[4611686018427387904,4611686018427387904]", 0, 0)},
    {"huge tensor past the end", MI_ERR_TRUNCATED, "huge",
     .extra = "\"huge\":" F32("[1099511627776]", 352, 4398046511456)},
    {"offset beyond 2^63", MI_ERR_FORMAT, "too big",
     .extra = "\"huge\":" F32("[0]", 0, 18446744073709551615)},
    {"missing tensor", MI_ERR_MISSING_TENSOR, "blocks.0.attn.W_O",
     .name = "blocks.0.attn.W_O", .entry = ""},
    {"no layer", MI_ERR_MISSING_TENSOR, "no layers",
     .header = "{\"embed.W_E\":" F32("[3,4]", 0, 48) ",\"unembed.W_U\":" F32("[4,3]", 48, 96)
               ",\"blocks.x\":" F32("[0]", 0, 0) "}"},
    {"layer gap", MI_ERR_MISSING_TENSOR, "blocks.1.attn.W_Q",
     .extra = "\"blocks.2.attn.W_Q\":" F32("[0]", 352, 352)},
    {"huge layer index", MI_ERR_MISSING_TENSOR, "layer 1 is absent",
     .extra = "\"blocks.18446744073709551616.attn.W_Q\":" F32("[0]", 352, 352)},
    {"inconsistent head counts", MI_ERR_SHAPE, "blocks.1.attn.W_Q' has shape [3, 4, 2]; "
     "expected [n_heads, d_model, d_head] = [2, 4, 2]",
     .extra = "\"blocks.1.attn.W_Q\":" F32("[3,4,2]", 352, 448)
              ",\"blocks.1.attn.W_K\":" F32("[2,4,2]", 448, 512)
              ",\"blocks.1.attn.W_V\":" F32("[2,4,2]", 512, 576)
              ",\"blocks.1.attn.W_O\":" F32("[2,2,4]", 576, 640),
     .data_size = 640},
    {"key/value heads not dividing heads", MI_ERR_SHAPE, "does not divide",
     .header = "{\"embed.W_E\":" F32("[3,4]", 0, 48)
               ",\"blocks.0.attn.W_Q\":" F32("[2,4,2]", 48, 112)
               ",\"blocks.0.attn.W_K\":" F32("[3,4,2]", 112, 208)
               ",\"blocks.0.attn.W_V\":" F32("[3,4,2]", 208, 304)
               ",\"blocks.0.attn.W_O\":" F32("[2,2,4]", 304, 368)
               ",\"unembed.W_U\":" F32("[4,3]", 368, 416) "}",
     .data_size = 416},
    {"W_O disagreeing with W_Q", MI_ERR_SHAPE, "blocks.0.attn.W_O",
     .name = "blocks.0.attn.W_O",
     .entry = F32("[2,4,2]", 240, 304)},
    {"W_U disagreeing with W_E", MI_ERR_SHAPE, "unembed.W_U", .name = "unembed.W_U",
     .entry = F32("[3,4]", 304, 352)},
    {"wrong rank", MI_ERR_SHAPE, "blocks.0.attn.W_Q", .name = "blocks.0.attn.W_Q",
     .entry = F32("[8,2]", 48, 112)},
    {"bias in layer 0 only half there", MI_ERR_MISSING_TENSOR, "blocks.0.attn.b_K",
     .extra = "\"blocks.0.attn.b_Q\":" F32("[2,2]", 352, 368), .data_size = 368},
    {"no known layout", MI_ERR_MISSING_TENSOR, "embed.W_E",
     .header = "{\"weight\":" F32("[3,4]", 0, 48) "}"},
    {"layer 1 with a bias layer 0 lacks", MI_ERR_MISSING_TENSOR, "blocks.1.attn.b_O",
     .extra = "\"blocks.1.attn.W_Q\":" F32("[2,4,2]", 352, 416)
              ",\"blocks.1.attn.W_K\":" F32("[2,4,2]", 416, 480)
              ",\"blocks.1.attn.W_V\":" F32("[2,4,2]", 480, 544)
              ",\"blocks.1.attn.W_O\":" F32("[2,2,4]", 544, 608)
              ",\"blocks.1.attn.b_O\":" F32("[4]", 608, 624),
     .data_size = 624},
    {"GPT-2 lm_head of the wrong shape", MI_ERR_SHAPE, "lm_head.weight",
     .header = GPT2_HEADER("\"__metadata__\":{\"n_head\":\"2\"},",
                           ",\"lm_head.weight\":" F32("[4,3]", 304, 352))},
    {"normalization_type RMS", MI_ERR_UNSUPPORTED, "RMS",
     .extra = "\"__metadata__\":{\"normalization_type\":\"RMS\"}"},
    {"normalization_type LNPre with LayerNorm weights", MI_ERR_FORMAT, "LNPre",
     .extra = "\"__metadata__\":{\"normalization_type\":\"LNPre\"}"
              ",\"blocks.0.ln1.w\":" F32("[4]", 352, 368),
     .data_size = 368},
    {"normalization_type LN without LayerNorm weights", MI_ERR_MISSING_TENSOR,
     "blocks.0.ln1.w", .extra = "\"__metadata__\":{\"normalization_type\":\"LN\"}"},
    {"GPT-2 without n_heads", MI_ERR_INVALID_ARGUMENT, "n_head",
     .header = GPT2_HEADER("", "")},
    {"GPT-2 n_head not dividing d_model", MI_ERR_SHAPE, "does not divide",
     .header = GPT2_HEADER("\"__metadata__\":{\"n_head\":\"3\"},", "")},
    {"GPT-2 n_head not a number", MI_ERR_FORMAT, "n_head",
     .header = GPT2_HEADER("\"__metadata__\":{\"n_head\":\"99999999999999999999999\"},", "")},
    {"__metadata__ value not a string", MI_ERR_FORMAT, "__metadata__",
     .header = GPT2_HEADER("\"__metadata__\":{\"n_head\":2},", "")},
    {"__metadata__ config not JSON", MI_ERR_FORMAT, "__metadata__ \"config\"",
     .extra = "\"__metadata__\":{\"config\":\"{nope\"}"},
    {"__metadata__ config disagreeing with the tensors", MI_ERR_SHAPE, "d_vocab",
     .extra = "\"__metadata__\":{\"config\":\"{\\\"d_vocab\\\": 5}\"}"},
    {"__metadata__ config disagreeing with __metadata__", MI_ERR_INVALID_ARGUMENT,
     "__metadata__ \"config\"",
     .extra = "\"__metadata__\":{\"n_heads\":\"2\",\"config\":\"{\\\"n_heads\\\": 1}\"}"},
    {"__metadata__ not an object", MI_ERR_FORMAT, "__metadata__",
     .header = GPT2_HEADER("\"__metadata__\":\"n_head=2\",", "")},
};

/* The bytes of one bad case (malloc'd). */
static unsigned char *bad_bytes(const bad_file *c, size_t *size) {
  char header[2048] = "";
  if (c->header != NULL) {
    snprintf(header, sizeof header, "%s", c->header);
  } else {
    size_t used = (size_t)snprintf(header, sizeof header, "{");
    for (size_t i = 0; i < sizeof BASE / sizeof BASE[0]; i++) {
      const char *entry = BASE[i][1];
      if (c->name != NULL && strcmp(c->name, BASE[i][0]) == 0)
        entry = c->entry;
      if (entry[0] != '\0')
        used += (size_t)snprintf(header + used, sizeof header - used, "%s\"%s\":%s",
                                 used > 1 ? "," : "", BASE[i][0], entry);
    }
    if (c->extra != NULL)
      used += (size_t)snprintf(header + used, sizeof header - used, ",%s", c->extra);
    snprintf(header + used, sizeof header - used, "}");
  }
  unsigned long long length = c->length ? c->length : strlen(header);
  unsigned char *bytes = st_raw(header, length, c->data_size ? c->data_size : 352, size);
  if (c->cut)
    *size = c->cut;
  return bytes;
}

START_TEST(the_base_of_the_bad_files_loads) {
  bad_file base = {.what = "base", .status = MI_OK, .says = ""};
  size_t size;
  unsigned char *bytes = bad_bytes(&base, &size);
  mi_model *model;
  TU_OK(mi_model_load_memory(&model, bytes, size, NULL));
  mi_config c = config_of(model);
  ck_assert_uint_eq(c.n_heads, 2);
  ck_assert_uint_eq(c.d_vocab, 3);
  mi_model_free(model);
  free(bytes);
  /* An empty tensor is legal however large its other dimensions, at any rank. */
  base.extra = "\"empty\":" F32("[4294967296,4294967296,4294967296,1,1,0]", 352, 352);
  bytes = bad_bytes(&base, &size);
  TU_OK(mi_model_load_memory(&model, bytes, size, NULL));
  mi_model_free(model);
  free(bytes);
  /* And the GPT-2 one, once its heads are given. */
  bytes = st_raw(GPT2_HEADER("\"__metadata__\":{\"n_head\":\"2\"},", ""),
                 strlen(GPT2_HEADER("\"__metadata__\":{\"n_head\":\"2\"},", "")), 304, &size);
  TU_OK(mi_model_load_memory(&model, bytes, size, NULL));
  ck_assert_int_eq(mi_model_layout(model), MI_LAYOUT_GPT2);
  mi_model_free(model);
  free(bytes);
}
END_TEST

/* A config.json's text in __metadata__ "config" says what a config.json says. */
START_TEST(metadata_config_is_read_as_config_json) {
  bad_file with = {.what = "config", .status = MI_OK, .says = "",
                   .extra = "\"__metadata__\":{\"config\":\"{\\\"eps\\\": 0.125, "
                            "\\\"n_heads\\\": 2, \\\"unknown\\\": [1]}\"}"};
  size_t size;
  unsigned char *bytes = bad_bytes(&with, &size);
  mi_model *model;
  TU_OK(mi_model_load_memory(&model, bytes, size, NULL));
  mi_config c;
  mi_config_init(&c, sizeof c);
  TU_OK(mi_model_get_config(&c, model));
  ck_assert_double_eq(c.ln_eps, 0.125);
  ck_assert_uint_eq(c.n_heads, 2);
  mi_model_free(model);
  free(bytes);
}
END_TEST

START_TEST(bad_files_fail_with_their_status) {
  const bad_file *c = &BAD[_i];
  size_t size;
  unsigned char *bytes = bad_bytes(c, &size);
  mi_model *model = (mi_model *)1;
  mi_status status = mi_model_load_memory(&model, bytes, size, NULL);
  ck_assert_msg(status == c->status, "%s: got %s (%s), wanted %s", c->what,
                mi_status_str(status), mi_last_error(), mi_status_str(c->status));
  ck_assert_msg(strstr(mi_last_error(), c->says) != NULL, "%s: message '%s' lacks '%s'",
                c->what, mi_last_error(), c->says);
  ck_assert_ptr_null(model);
  /* The same from a file: same status, and the message names the file. */
  char path[512], file[64];
  snprintf(file, sizeof file, "bad_%d.safetensors", _i);
  tmp_path(path, sizeof path, file);
  ck_assert(st_write_bytes(path, bytes, size));
  TU_FAILS(c->status, mi_model_load(&model, path, NULL));
  ck_assert_msg(strstr(mi_last_error(), path) && strstr(mi_last_error(), c->says),
                "%s: %s", c->what, mi_last_error());
  remove(path);
  free(bytes);
}
END_TEST

/* ---- positional embeddings ---------------------------------------------------- */

/* x rounded to the nearest IEEE binary16 (11 significant bits; subnormals below 2⁻¹⁴). */
static double to_half(double x) {
  int e;
  if (fabs(x) < 0x1p-14)
    return ldexp(nearbyint(ldexp(x, 24)), -24);
  double m = frexp(x, &e);
  return ldexp(nearbyint(ldexp(m, 11)), e - 11);
}

/* A random model (tu_random_model) with every weight rounded to binary16. */
static mi_model *half_model(const mi_config *config, uint64_t seed) {
  mi_model *model = tu_random_model(config, seed);
  mi_config c = config_of(model);
  for (int w = 0; w < MI_WEIGHT_COUNT; w++) {
    size_t rows, cols, layers, heads;
    if (mi_model_weight_shape(&rows, &cols, model, (mi_weight)w) != MI_OK)
      continue;
    copies_of(&c, (mi_weight)w, &layers, &heads);
    for (size_t l = 0; l < layers; l++)
      for (size_t h = 0; h < heads; h++) {
        double *v = tu_weight(model, (mi_weight)w, l, h, &rows, &cols);
        for (size_t i = 0; i < rows * cols; i++)
          v[i] = to_half(v[i]);
        TU_OK(mi_model_set_weight(model, (mi_weight)w, l, h, MI_DTYPE_F64, v, cols));
        free(v);
      }
  }
  return model;
}

/* Forward logits (row-centred when `centre`) and patterns of a model, as doubles. */
static void run(double *logits, double *patterns, const mi_model *model, const size_t *tokens,
                size_t n, bool centre) {
  mi_config c = config_of(model);
  size_t V = c.d_vocab, count = c.n_layers * c.n_heads * n * n;
  float *out = malloc(n * V * sizeof *out), *p = malloc(count * sizeof *p);
  mi_forward_extras x;
  mi_forward_extras_init(&x, sizeof x);
  x.patterns = p;
  x.patterns_count = count;
  TU_OK(mi_model_forward(out, V, model, tokens, n, &x));
  for (size_t i = 0; i < n * V; i++)
    logits[i] = out[i];
  for (size_t i = 0; i < count; i++)
    patterns[i] = p[i];
  if (centre)
    center_logit_rows(logits, n, V);
  free(out);
  free(p);
}

/*
 * A TransformerLens file whose __metadata__ says positional_embedding_type
 * "shortformer", in F32 and F16 (weights rounded to binary16 first, so both
 * files hold exactly the same model): loaded raw it keeps the weights and
 * runs as a shortformer model; loaded folded (the default) and
 * TransformerLens-processed it gives the patterns and (row-centred) logits
 * of the dense reference on the raw weights. Tolerance as in
 * processing_on_load_keeps_the_logits: 1e-5 of the scale.
 */
START_TEST(shortformer_files_run_as_shortformer) {
  mi_config c = tu_config(2, 4, 8, 3, 11, 9, ALL_PARTS);
  c.n_kv_heads = 2;
  c.positional = MI_POSITIONAL_SHORTFORMER;
  const size_t tokens[] = {3, 10, 0, 3, 7, 7, 1, 9}, n = 8, V = 11;
  size_t count = 2 * 4 * n * n;
  const char *dtypes[] = {"F32", "F16"};
  for (int i = 0; i < 2; i++) {
    mi_model *written = half_model(&c, 60 + (uint64_t)i);
    st_writer *st = write_tl(written, dtypes[i], i == 1, NULL);
    ck_assert(st_add_metadata(st, "positional_embedding_type", "shortformer"));
    mi_load_options raw = raw_options(), folded, tl;
    mi_load_options_init(&folded, sizeof folded);
    mi_load_options_init(&tl, sizeof tl);
    tl.process = MI_PROCESS_TRANSFORMERLENS;
    char file[64];
    snprintf(file, sizeof file, "shortformer_%s.safetensors", dtypes[i]);
    mi_model *m_raw = save_and_load(st, file, &raw);
    assert_same_weights(written, m_raw);
    ck_assert_int_eq(config_of(m_raw).positional, MI_POSITIONAL_SHORTFORMER);
    double want[8 * 11], want_p[2 * 4 * 8 * 8], got[8 * 11], got_p[2 * 4 * 8 * 8];
    tu_reference_forward(want, want_p, NULL, m_raw, tokens, n);
    double scale = tu_max_abs(want, n * V);
    center_logit_rows(want, n, V);
    const mi_load_options *opts[] = {&raw, &folded, &tl};
    for (int o = 0; o < 3; o++) {
      mi_model *m = save_and_load(st, file, opts[o]);
      ck_assert_int_eq(config_of(m).positional, MI_POSITIONAL_SHORTFORMER);
      run(got, got_p, m, tokens, n, true);
      double dl = tu_max_abs_diff(got, want, n * V), dp = tu_max_abs_diff(got_p, want_p, count);
      ck_assert_msg(dl <= 1e-5 * scale && dp <= 1e-5, "%s, process 0x%x: logits off by %g "
                    "(scale %g), patterns by %g", dtypes[i], opts[o]->process, dl, scale, dp);
      mi_model_free(m);
    }
    mi_model_free(m_raw);
    st_writer_free(st);
    mi_model_free(written);
  }
}
END_TEST

/* Loads a serialized file from memory with `positional` as the load option. */
static mi_status load_with(mi_model **out, const st_writer *st, mi_positional positional) {
  size_t size;
  unsigned char *bytes = st_serialize(st, &size);
  mi_load_options o;
  mi_load_options_init(&o, sizeof o);
  o.positional = positional;
  mi_status status = mi_model_load_memory(out, bytes, size, &o);
  free(bytes);
  return status;
}

/*
 * Where the positional kind comes from: a file that says nothing is
 * standard unless the caller says shortformer (ARENA's state dicts); a file
 * that says shortformer is shortformer, and a load option that disagrees is
 * an error naming both; kinds libmi does not run (rotary, ALiBi) are
 * refused by name, never run as standard.
 */
START_TEST(positional_kind_from_files_and_options) {
  mi_config c = tu_config(1, 2, 6, 3, 7, 5, ALL_PARTS);
  mi_model *written = exact_model(&c, 8);
  const size_t tokens[] = {1, 6, 6, 0, 2}, n = 5, V = 7;
  st_writer *plain = write_tl(written, "F32", false, NULL);
  mi_model *m;
  TU_OK(load_with(&m, plain, MI_POSITIONAL_DEFAULT));
  ck_assert_int_eq(config_of(m).positional, MI_POSITIONAL_STANDARD);
  double standard[5 * 7], got[5 * 7], want[5 * 7], p[5 * 2 * 5 * 5];
  run(standard, p, m, tokens, n, false);
  mi_model_free(m);
  TU_OK(load_with(&m, plain, MI_POSITIONAL_SHORTFORMER));
  ck_assert_int_eq(config_of(m).positional, MI_POSITIONAL_SHORTFORMER);
  run(got, p, m, tokens, n, false);
  mi_model_free(m);
  /* The reference of the same weights as a shortformer model. */
  mi_config sc = c;
  sc.positional = MI_POSITIONAL_SHORTFORMER;
  mi_model *as_shortformer = exact_model(&sc, 8);
  tu_reference_logits(want, as_shortformer, tokens, n);
  mi_model_free(as_shortformer);
  double scale = tu_max_abs(want, n * V);
  ck_assert_double_le(tu_max_abs_diff(got, want, n * V), 1e-5 * scale);
  ck_assert_double_gt(tu_max_abs_diff(standard, want, n * V), 1e-2 * scale);

  st_writer *says = write_tl(written, "F32", false, NULL);
  ck_assert(st_add_metadata(says, "positional_embedding_type", "shortformer"));
  TU_OK(load_with(&m, says, MI_POSITIONAL_SHORTFORMER));
  mi_model_free(m);
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, load_with(&m, says, MI_POSITIONAL_STANDARD));
  ck_assert_ptr_null(m);
  const char *msg = mi_last_error();
  ck_assert_msg(strstr(msg, "__metadata__") && strstr(msg, "shortformer") &&
                    strstr(msg, "mi_load_options") && strstr(msg, "standard"), "%s", msg);
  const char *unsupported[] = {"rotary", "alibi"};
  for (int i = 0; i < 2; i++) {
    st_writer *st = write_tl(written, "F32", false, NULL);
    ck_assert(st_add_metadata(st, "positional_embedding_type", unsupported[i]));
    TU_FAILS(MI_ERR_UNSUPPORTED, load_with(&m, st, MI_POSITIONAL_DEFAULT));
    ck_assert_msg(strstr(mi_last_error(), unsupported[i]), "%s", mi_last_error());
    TU_FAILS(MI_ERR_UNSUPPORTED, load_with(&m, st, MI_POSITIONAL_SHORTFORMER));
    st_writer_free(st);
  }
  mi_model_free(written);
  /* Shortformer without a W_pos in the file. */
  mi_config bare = tu_config(1, 2, 6, 3, 7, 0, MI_PART_LN);
  written = exact_model(&bare, 2);
  st_writer *no_pos = write_tl(written, "F32", false, NULL);
  TU_FAILS(MI_ERR_MISSING_TENSOR, load_with(&m, no_pos, MI_POSITIONAL_SHORTFORMER));
  ck_assert_msg(strstr(mi_last_error(), "W_pos"), "%s", mi_last_error());
  st_writer_free(no_pos);
  st_writer_free(plain);
  st_writer_free(says);
  mi_model_free(written);
}
END_TEST

static Suite *safetensors_suite(void) {
  Suite *s = suite_create("safetensors");
  TCase *tc = tcase_create("files");
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, tl_files_round_trip_in_every_dtype);
  tcase_add_test(tc, gpt2_files_round_trip_in_every_dtype);
  tcase_add_test(tc, gpt2_packing_follows_conv1d);
  tcase_add_test(tc, gpt2_and_tl_files_give_the_same_logits);
  tcase_add_test(tc, processing_on_load_keeps_the_logits);
  tcase_add_test(tc, folded_tl_checkpoints_keep_their_normalisation);
  tcase_add_test(tc, options_are_checked);
  tcase_add_test(tc, old_options_take_the_defaults);
  tcase_add_test(tc, mlp_weights_are_recorded_not_read);
  tcase_add_test(tc, files_that_cannot_be_read);
  tcase_add_test(tc, shortformer_files_run_as_shortformer);
  tcase_add_test(tc, positional_kind_from_files_and_options);
  suite_add_tcase(s, tc);
  TCase *bad = tcase_create("hostile files");
  tcase_set_timeout(bad, 30);
  tcase_add_test(bad, the_base_of_the_bad_files_loads);
  tcase_add_test(bad, metadata_config_is_read_as_config_json);
  tcase_add_loop_test(bad, bad_files_fail_with_their_status, 0,
                      (int)(sizeof BAD / sizeof BAD[0]));
  suite_add_tcase(s, bad);
  return s;
}

int main(void) { return tu_run_suite(safetensors_suite()); }
