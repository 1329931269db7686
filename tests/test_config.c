/*
 * Model folders and config.json: a TransformerLens folder and a Hugging Face
 * GPT-2 folder load in one call and compute what the written model computes
 * (logits against the dense double reference, with the config's LayerNorm
 * epsilon); a config.json beside a named file is read; every disagreement
 * between config.json, the tensors, __metadata__ and the options is an
 * error naming both; bad configs, folders without or with too many weights
 * files, and FIFOs fail with their status and never block.
 */
#define _XOPEN_SOURCE 700
#include "model_files.h"
#include "pth_writer.h"

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* TransformerLens's shape of parts: every optional one (no MLP). */
static const unsigned TL_PARTS = MI_PART_POS_EMBED | MI_PART_QKV_BIAS | MI_PART_OUT_BIAS |
                                 MI_PART_UNEMBED_BIAS | MI_PART_LN | MI_PART_LN_FINAL;
/* GPT-2's attention has every part but an unembedding bias. */
static const unsigned GPT2_PARTS = MI_PART_POS_EMBED | MI_PART_QKV_BIAS | MI_PART_OUT_BIAS |
                                   MI_PART_LN | MI_PART_LN_FINAL;

/* ---- folders ---------------------------------------------------------------- */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

/* A fresh, empty folder MI_TEST_TMP/name; its path into buf. */
static void fresh_folder(char *buf, size_t size, const char *name) {
  tmp_path(buf, size, name);
  nftw(buf, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
  ck_assert_msg(mkdir(buf, 0700) == 0, "cannot create %s: %s", buf, strerror(errno));
}

/* dir/name into buf. */
static const char *in(char *buf, size_t size, const char *dir, const char *name) {
  snprintf(buf, size, "%s/%s", dir, name);
  return buf;
}

static void write_text(const char *dir, const char *name, const char *text) {
  char path[600];
  ck_assert(st_write_bytes(in(path, sizeof path, dir, name), text, strlen(text)));
}

static void save(const st_writer *st, const char *dir, const char *name) {
  char path[600];
  ck_assert_msg(st_save(st, in(path, sizeof path, dir, name)), "cannot write %s", path);
}

/* Asserts the last error mentions `text`. */
#define SAYS(text) \
  ck_assert_msg(strstr(mi_last_error(), (text)) != NULL, "'%s' not in: %s", (text), \
                mi_last_error())

static mi_load_options options_with(unsigned process, unsigned flags) {
  mi_load_options o;
  mi_load_options_init(&o, sizeof o);
  o.process = process;
  o.flags = flags;
  return o;
}

/*
 * A fresh folder MI_TEST_TMP/name (its path into dir) holding the model of
 * shape `c` drawn from `seed`, as a TransformerLens model.safetensors.
 * Returns the model as written (owned).
 */
static mi_model *tl_folder(char *dir, size_t size, const char *name, const mi_config *c,
                           uint64_t seed) {
  fresh_folder(dir, size, name);
  mi_model *written = exact_model(c, seed);
  st_writer *st = write_tl(written, "F32", false, NULL);
  save(st, dir, "model.safetensors");
  st_writer_free(st);
  return written;
}

/* ---- logits ------------------------------------------------------------------- */

static const size_t TOKENS[] = {3, 0, 7, 7, 1, 10};
#define N_TOKENS 6

/*
 * The loaded model's float32 forward logits against the double reference
 * of the model as written (unprocessed, its own eps), relative to the
 * largest logit. Tolerance 1e-4: float32 rounding through two layers of
 * width 8, LayerNorm folding and softmax measures 1e-7 to 3e-7 here, and the
 * eps changes the tests must see move the logits by 0.095 to 0.18 (each test
 * asserts more than 1e-2).
 */
static double logits_error(const mi_model *loaded, const mi_model *written, size_t n) {
  size_t V = config_of(written).d_vocab;
  double *want = malloc(n * V * sizeof *want);
  float *got = malloc(n * V * sizeof *got);
  tu_reference_logits(want, written, TOKENS, n);
  TU_OK(mi_model_forward(got, V, loaded, TOKENS, n, NULL));
  double err = 0, scale = tu_max_abs(want, n * V);
  for (size_t i = 0; i < n * V; i++)
    err = fmax(err, fabs((double)got[i] - want[i]));
  free(want);
  free(got);
  return err / fmax(scale, 1.0);
}

/* How far the reference logits of n tokens move when the model's eps becomes `other`. */
static double eps_effect(const mi_config *c, uint64_t seed, double other, bool tied,
                         size_t n) {
  mi_config d = *c;
  d.ln_eps = other;
  mi_model *a = exact_model(c, seed), *b = exact_model(&d, seed);
  if (tied) {
    tie_unembedding(a);
    tie_unembedding(b);
  }
  size_t V = c->d_vocab;
  double *x = malloc(n * V * sizeof *x), *y = malloc(n * V * sizeof *y);
  tu_reference_logits(x, a, TOKENS, n);
  tu_reference_logits(y, b, TOKENS, n);
  double diff = tu_max_abs_diff(x, y, n * V) / fmax(tu_max_abs(x, n * V), 1.0);
  free(x);
  free(y);
  mi_model_free(a);
  mi_model_free(b);
  return diff;
}

/* ---- TransformerLens folders --------------------------------------------------- */

/* 2 layers, 2 heads of 4, d_model 8, d_vocab 11, n_ctx 6. */
static mi_config tl_config(double eps) {
  mi_config c = tu_config(2, 2, 8, 4, 11, 6, TL_PARTS);
  c.ln_eps = eps;
  return c;
}

/*
 * The two ways TransformerLens writes a config: its own models' training
 * configs (normalization, shortformer_pos; attn-only-2l's fields) and
 * HookedTransformerConfig.to_dict() (normalization_type,
 * positional_embedding_type, nulls for unset fields).
 */
static const char *const TL_CONFIGS[] = {
    "{\"n_layers\": 2, \"d_model\": 8, \"d_head\": 4, \"n_heads\": 2, \"d_mlp\": -1,"
    " \"n_ctx\": 6, \"d_vocab\": 11, \"act_fn\": \"solu_ln\", \"attn_only\": true,"
    " \"normalization\": \"LN\", \"shortformer_pos\": false, \"eps\": 0.5,"
    " \"tokenizer_name\": \"NeelNanda/gpt-neox-tokenizer-digits\", \"lr\": 0.001}",
    "{\"n_layers\": 2, \"d_model\": 8, \"d_head\": 4, \"n_heads\": 2, \"d_mlp\": null,"
    " \"n_ctx\": 6, \"d_vocab\": 11, \"d_vocab_out\": 11, \"act_fn\": null,"
    " \"attn_only\": true, \"normalization_type\": \"LN\", \"eps\": 0.5,"
    " \"positional_embedding_type\": \"standard\", \"n_key_value_heads\": null,"
    " \"model_name\": \"custom\", \"original_architecture\": null}"};

START_TEST(tl_folder_loads_with_the_config_eps) {
  mi_config c = tl_config(0.5);
  char dir[512];
  mi_model *written = tl_folder(dir, sizeof dir, _i ? "tl-to-dict" : "tl-training-config", &c, 31);
  write_text(dir, "config.json", TL_CONFIGS[_i]);
  mi_model *model = (mi_model *)1;
  TU_OK(mi_model_load(&model, dir, NULL));
  mi_config got = config_of(model);
  ck_assert_uint_eq(got.n_layers, 2);
  ck_assert_uint_eq(got.n_heads, 2);
  ck_assert_uint_eq(got.d_head, 4);
  ck_assert_uint_eq(got.d_vocab, 11);
  ck_assert_uint_eq(got.n_ctx, 6);
  ck_assert(got.ln_eps == 0.5);
  ck_assert_int_eq(got.positional, MI_POSITIONAL_STANDARD);
  ck_assert_int_eq(mi_model_layout(model), MI_LAYOUT_TRANSFORMERLENS);
  double err = logits_error(model, written, N_TOKENS);
  double effect = eps_effect(&c, 31, 1e-5, false, N_TOKENS);
  ck_assert_msg(err < 1e-4, "logits differ from the reference by %g", err);
  /* The default eps would have been caught: it moves the logits far more. */
  ck_assert_msg(effect > 1e-2, "eps 0.5 vs 1e-5 moves the logits only %g", effect);
  mi_model_free(model);
  mi_model_free(written);
}
END_TEST

START_TEST(tl_normalization_is_checked_against_the_tensors) {
  mi_config c = tl_config(1e-5), no_ln = c;
  no_ln.parts &= ~(unsigned)(MI_PART_LN | MI_PART_LN_FINAL);
  mi_model *written = exact_model(&c, 32), *unnormed = exact_model(&no_ln, 32);
  mi_model *model = (mi_model *)1;
  st_writer *plain = write_tl(written, "F32", false, NULL);
  st_writer *without = write_tl(unnormed, "F32", false, NULL);
  /* Weights saved after fold_ln, their __metadata__ saying None. */
  st_writer *none = write_tl(written, "F32", false, "None");
  char dir[512];
  fresh_folder(dir, sizeof dir, "tl-normalization");
  /* LN requires the LayerNorm weights. */
  save(without, dir, "model.safetensors");
  write_text(dir, "config.json", "{\"normalization\": \"LN\"}");
  TU_FAILS(MI_ERR_MISSING_TENSOR, mi_model_load(&model, dir, NULL));
  SAYS("ln1.w");
  ck_assert_ptr_null(model);
  /* LNPre in config.json gives identity LayerNorms, as __metadata__ does. */
  write_text(dir, "config.json", "{\"normalization_type\": \"LNPre\"}");
  TU_OK(mi_model_load(&model, dir, NULL));
  ck_assert_uint_eq(config_of(model).parts & (MI_PART_LN | MI_PART_LN_FINAL),
                    MI_PART_LN | MI_PART_LN_FINAL);
  mi_model_free(model);
  /* None (null, as to_dict writes it) with LayerNorm weights is refused. */
  save(plain, dir, "model.safetensors");
  write_text(dir, "config.json", "{\"normalization_type\": null}");
  TU_FAILS(MI_ERR_FORMAT, mi_model_load(&model, dir, NULL));
  SAYS("config.json: normalization_type is \"None\"");
  /* config.json and __metadata__ saying different things name both. */
  save(none, dir, "model.safetensors");
  write_text(dir, "config.json", "{\"normalization\": \"LNPre\"}");
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load(&model, dir, NULL));
  SAYS("config.json says normalization_type = LNPre, but __metadata__ says None");
  st_writer_free(plain);
  st_writer_free(without);
  st_writer_free(none);
  mi_model_free(unnormed);
  mi_model_free(written);
}
END_TEST

/*
 * shortformer_pos: true. The folder must load as a shortformer and match the
 * dense shortformer reference, and the config's kind must reach the model: a
 * shortformer config over a file without W_pos names the missing W_pos.
 */
START_TEST(shortformer_pos_reaches_the_model) {
  mi_config c = tl_config(1e-5);
  char dir[512];
  mi_model *written = tl_folder(dir, sizeof dir, "tl-shortformer", &c, 33), *model = (mi_model *)1;
  write_text(dir, "config.json", "{\"shortformer_pos\": true, \"n_heads\": 2}");
  TU_OK(mi_model_load(&model, dir, NULL));
  ck_assert_int_eq(config_of(model).positional, MI_POSITIONAL_SHORTFORMER);
  mi_config sc = c;
  sc.positional = MI_POSITIONAL_SHORTFORMER;
  mi_model *reference = exact_model(&sc, 33);
  double err = logits_error(model, reference, N_TOKENS);
  ck_assert_msg(err < 1e-4, "shortformer logits differ from the reference by %g", err);
  mi_model_free(reference);
  mi_model_free(model);
  mi_config no_pos = c;
  no_pos.parts &= ~(unsigned)MI_PART_POS_EMBED;
  mi_model *unpositioned = exact_model(&no_pos, 33);
  st_writer *bare = write_tl(unpositioned, "F32", false, NULL);
  save(bare, dir, "model.safetensors");
  TU_FAILS(MI_ERR_MISSING_TENSOR, mi_model_load(&model, dir, NULL));
  SAYS("config.json says positional_embedding_type = shortformer");
  /* And an explicit standard over the same file names the same gap. */
  write_text(dir, "config.json", "{\"shortformer_pos\": false}");
  TU_FAILS(MI_ERR_MISSING_TENSOR, mi_model_load(&model, dir, NULL));
  SAYS("standard");
  st_writer_free(bare);
  mi_model_free(unpositioned);
  mi_model_free(written);
}
END_TEST

/*
 * TransformerLens's own attn-only models come as model_final.pth: the
 * folder picks that name, reads it as a torch.save archive (the tests'
 * writer, as a checkpoint dict with the state dict inside), and its config's
 * eps reaches the model as with a safetensors file.
 */
START_TEST(model_final_pth_is_the_weights_of_a_tl_folder) {
  char dir[512], path[600];
  mi_config c = tl_config(0.5);
  fresh_folder(dir, sizeof dir, "tl-pth");
  write_text(dir, "config.json", TL_CONFIGS[0]);
  mi_model *written = exact_model(&c, 34);
  st_writer *st = write_tl(written, "F32", false, NULL);
  size_t size;
  unsigned char *pth = pth_from_st(st, PTH_CHECKPOINT | PTH_TRANSPOSED, &size);
  ck_assert(pth != NULL);
  ck_assert(st_write_bytes(in(path, sizeof path, dir, "model_final.pth"), pth, size));
  write_text(dir, "notes.txt", "a file that is not weights");
  mi_model *model = (mi_model *)1;
  TU_OK(mi_model_load(&model, dir, NULL));
  ck_assert(config_of(model).ln_eps == 0.5);
  double err = logits_error(model, written, N_TOKENS);
  ck_assert_msg(err < 1e-4, "logits differ from the reference by %g", err);
  mi_model_free(model);
  free(pth);
  st_writer_free(st);
  mi_model_free(written);
}
END_TEST

/* ---- Hugging Face GPT-2 folders ------------------------------------------------ */

/* 2 layers, 4 heads of 2, d_model 8, d_vocab 13, n_positions 5. */
static mi_config gpt2_config(double eps) {
  mi_config c = tu_config(2, 4, 8, 2, 13, 5, GPT2_PARTS);
  c.ln_eps = eps;
  return c;
}

/* GPT-2's MLP weights (not read, but they make it a model with MLPs). */
static void add_mlp(st_writer *st, size_t layers, size_t D) {
  double *w = calloc(4 * D * D, sizeof *w);
  for (size_t l = 0; l < layers; l++) {
    add(st, "F32", w, 2, (size_t[]){D, 4 * D}, "h.%zu.mlp.c_fc.weight", l);
    add(st, "F32", w, 2, (size_t[]){4 * D, D}, "h.%zu.mlp.c_proj.weight", l);
  }
  free(w);
}

/* GPT-2's config.json for gpt2_config, with `extra` fields spliced in. */
static void write_gpt2_config(const char *dir, const char *extra) {
  char text[1024];
  snprintf(text, sizeof text,
           "{\"activation_function\": \"gelu_new\", \"architectures\": [\"GPT2LMHeadModel\"],"
           " \"model_type\": \"gpt2\", \"n_ctx\": 5, \"n_embd\": 8, \"n_head\": 4,"
           " \"n_layer\": 2, \"n_positions\": 5, \"layer_norm_epsilon\": 0.3,"
           " \"vocab_size\": 13, \"task_specific_params\": {\"text-generation\": {}}%s}",
           extra);
  write_text(dir, "config.json", text);
}

/* GPT-2's byte-level vocabulary for 13 ids: "Ġ" is a space. */
static const char GPT2_VOCAB[] =
    "{\"a\": 0, \"b\": 1, \"Ġa\": 2, \"Ġb\": 3, \"ab\": 4, \"Ġab\": 5, \"c\": 6, \"Ġc\": 7,"
    " \"Ċ\": 8, \"d\": 9, \"Ġd\": 10, \"cd\": 11, \"<|endoftext|>\": 12}";

/* Asserts every attention weight of two models is the same (GPT-2 checks). */
static void assert_same_attention(const mi_model *a, const mi_model *b) {
  mi_config c = config_of(a);
  for (int w = MI_W_Q; w <= MI_W_O; w++)
    for (size_t l = 0; l < c.n_layers; l++)
      for (size_t h = 0; h < c.n_heads; h++) {
        size_t rows, cols;
        double *x = tu_weight(a, (mi_weight)w, l, h, &rows, &cols);
        double *y = tu_weight(b, (mi_weight)w, l, h, &rows, &cols);
        ck_assert_msg(tu_max_abs_diff(x, y, rows * cols) == 0.0,
                      "weight %d of layer %zu head %zu differs", w, l, h);
        free(x);
        free(y);
      }
}

START_TEST(gpt2_folder_takes_its_head_count_from_config) {
  mi_config c = gpt2_config(0.3);
  mi_model *written = exact_model(&c, 41), *model = (mi_model *)1;
  tie_unembedding(written);
  st_writer *st = write_gpt2(written, "F32", "", false, false);
  add_mlp(st, 2, 8);
  char dir[512];
  fresh_folder(dir, sizeof dir, "gpt2");
  save(st, dir, "model.safetensors");
  write_gpt2_config(dir, "");
  /* No merges.txt: the Python suite loads a folder with GPT-2's real pair. */
  write_text(dir, "vocab.json", GPT2_VOCAB);
  mi_load_options raw = options_with(0, 0);
  TU_OK(mi_model_load(&model, dir, &raw));
  mi_config got = config_of(model);
  ck_assert_uint_eq(got.n_heads, 4);
  ck_assert_uint_eq(got.d_head, 2);
  ck_assert(got.ln_eps == 0.3);
  ck_assert_uint_eq(got.parts, GPT2_PARTS | MI_PART_MLP);
  ck_assert_int_eq(mi_model_layout(model), MI_LAYOUT_GPT2);
  /* 4 heads of 2, exactly as written; 2 heads of 4 would scramble them. */
  assert_same_attention(model, written);
  const char *s;
  TU_OK(mi_model_token_str(&s, model, 5));
  ck_assert_str_eq(s, " ab");
  TU_OK(mi_model_token_str(&s, model, 8));
  ck_assert_str_eq(s, "\n");
  mi_model_free(model);

  /* Attention-only in GPT-2's format: says so, and runs forward with its eps. */
  st_writer *attn_only = write_gpt2(written, "F32", "", false, false);
  save(attn_only, dir, "model.safetensors");
  write_gpt2_config(dir, ", \"attn_only\": true");
  TU_OK(mi_model_load(&model, dir, NULL));
  double err = logits_error(model, written, 5), effect = eps_effect(&c, 41, 1e-5, true, 5);
  ck_assert_msg(err < 1e-4, "logits differ from the reference by %g", err);
  ck_assert_msg(effect > 1e-2, "eps 0.3 vs 1e-5 moves the logits only %g", effect);
  mi_model_free(model);
  st_writer_free(attn_only);
  st_writer_free(st);
  mi_model_free(written);
}
END_TEST

START_TEST(gpt2_disagreements_name_both_sources) {
  mi_config c = gpt2_config(1e-5);
  mi_model *written = exact_model(&c, 42), *model = (mi_model *)1;
  tie_unembedding(written);
  st_writer *st = write_gpt2(written, "F32", "", false, false);
  add_mlp(st, 2, 8);
  char dir[512];
  fresh_folder(dir, sizeof dir, "gpt2-disagree");
  save(st, dir, "model.safetensors");
  write_gpt2_config(dir, "");
  /* A head count that divides d_model (2 for 4) is no longer taken silently. */
  mi_load_options o = options_with(MI_PROCESS_FOLD_LN, 0);
  o.n_heads = 2;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load(&model, dir, &o));
  SAYS("config.json says n_heads = 4, but mi_load_options says 2");
  ck_assert_ptr_null(model);
  o.n_heads = 4;
  TU_OK(mi_model_load(&model, dir, &o));
  mi_model_free(model);

  /* __metadata__ against config.json. */
  st_writer *meta = write_gpt2(written, "F32", "", false, true); /* n_head 4 */
  add_mlp(meta, 2, 8);
  save(meta, dir, "model.safetensors");
  write_gpt2_config(dir, "");
  TU_OK(mi_model_load(&model, dir, NULL));
  mi_model_free(model);
  char text[1024];
  snprintf(text, sizeof text, "{\"model_type\": \"gpt2\", \"n_head\": 2}");
  write_text(dir, "config.json", text);
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load(&model, dir, NULL));
  SAYS("config.json says n_heads = 2, but __metadata__ says 4");
  save(st, dir, "model.safetensors");

  /* Each config.json size against the tensors, the config named. */
  static const struct { const char *config; mi_status status; const char *says; } cases[] = {
      {"{\"model_type\": \"gpt2\", \"n_head\": 3}", MI_ERR_SHAPE, "n_heads 3 does not divide"},
      {"{\"model_type\": \"gpt2\", \"n_head\": 4, \"n_embd\": 16}", MI_ERR_SHAPE,
       "d_model = 16, but the tensors have 8"},
      {"{\"model_type\": \"gpt2\", \"n_head\": 4, \"n_positions\": 7}", MI_ERR_SHAPE,
       "n_ctx = 7, but the tensors have 5"},
      {"{\"model_type\": \"gpt2\", \"n_head\": 4, \"vocab_size\": 50257}", MI_ERR_SHAPE,
       "d_vocab = 50257, but the tensors have 13"},
      {"{\"model_type\": \"gpt2\", \"n_head\": 4, \"n_layer\": 12}", MI_ERR_SHAPE,
       "n_layers = 12, but the tensors have 2"},
      {"{\"n_head\": 4, \"attn_only\": true}", MI_ERR_FORMAT, "the tensors have MLP weights"},
      {"{\"n_head\": 4, \"n_positions\": 5, \"n_ctx\": 6}", MI_ERR_FORMAT,
       "\"n_ctx\" is 6 but \"n_positions\" is 5"},
      {"{}", MI_ERR_INVALID_ARGUMENT, "number of heads must be given"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_text(dir, "config.json", cases[i].config);
    TU_FAILS(cases[i].status, mi_model_load(&model, dir, NULL));
    SAYS(cases[i].says);
    if (cases[i].status != MI_ERR_INVALID_ARGUMENT)
      SAYS("config.json");
  }
  /* model_type gpt2 promises MLPs: an attention-only file must say so. */
  st_writer *attn_only = write_gpt2(written, "F32", "", false, false);
  save(attn_only, dir, "model.safetensors");
  write_gpt2_config(dir, "");
  TU_FAILS(MI_ERR_MISSING_TENSOR, mi_model_load(&model, dir, NULL));
  SAYS("config.json says the model has MLP layers");
  st_writer_free(attn_only);
  st_writer_free(meta);
  st_writer_free(st);
  mi_model_free(written);
}
END_TEST

/* ---- config.json beside a named file ------------------------------------------- */

START_TEST(config_beside_a_named_file_is_read) {
  mi_config c = gpt2_config(0.3);
  mi_model *written = exact_model(&c, 43), *model = (mi_model *)1;
  tie_unembedding(written);
  st_writer *st = write_gpt2(written, "F32", "", false, false);
  char dir[512], path[600];
  fresh_folder(dir, sizeof dir, "beside");
  save(st, dir, "weights.safetensors");
  save(st, dir, "other.safetensors");
  write_gpt2_config(dir, ", \"attn_only\": true");
  write_text(dir, "vocab.json", GPT2_VOCAB);
  in(path, sizeof path, dir, "weights.safetensors");
  TU_OK(mi_model_load(&model, path, NULL));
  ck_assert_uint_eq(config_of(model).n_heads, 4);
  ck_assert(config_of(model).ln_eps == 0.3);
  double err = logits_error(model, written, 5);
  ck_assert_msg(err < 1e-4, "logits differ from the reference by %g", err);
  /* A named file brings its config, not a vocabulary. */
  const char *s;
  TU_FAILS(MI_ERR_STATE, mi_model_token_str(&s, model, 0));
  mi_model_free(model);
  /* Without the config, nothing says the head count. */
  mi_load_options o = options_with(MI_PROCESS_FOLD_LN, MI_LOAD_NO_CONFIG);
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load(&model, path, &o));
  SAYS("number of heads must be given");
  /* A bare file name reads the config.json of the working directory. */
  char cwd[4096];
  ck_assert(getcwd(cwd, sizeof cwd) != NULL);
  ck_assert_int_eq(chdir(dir), 0);
  mi_status status = mi_model_load(&model, "weights.safetensors", NULL);
  ck_assert_int_eq(chdir(cwd), 0);
  ck_assert_msg(status == MI_OK, "%s", mi_last_error());
  ck_assert_uint_eq(config_of(model).n_heads, 4);
  mi_model_free(model);
  /* Two candidate files in the folder: named, one loads; the folder does not. */
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load(&model, dir, NULL));
  SAYS("'other.safetensors', 'weights.safetensors'");
  st_writer_free(st);
  mi_model_free(written);
}
END_TEST

START_TEST(no_config_flag_ignores_a_bad_config) {
  mi_config c = tl_config(1e-5);
  char dir[512];
  mi_model *written = tl_folder(dir, sizeof dir, "no-config", &c, 44), *model = (mi_model *)1;
  write_text(dir, "config.json", "{\"n_heads\": 2,");
  TU_FAILS(MI_ERR_FORMAT, mi_model_load(&model, dir, NULL));
  SAYS("config.json is not valid JSON");
  SAYS("MI_LOAD_NO_CONFIG");
  mi_load_options o = options_with(MI_PROCESS_FOLD_LN, MI_LOAD_NO_CONFIG);
  TU_OK(mi_model_load(&model, dir, &o));
  mi_model_free(model);
  /* Unknown flag bits are refused. */
  o.flags = 1u << 7;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load(&model, dir, &o));
  SAYS("flags");
  /* A caller compiled before flags existed gets 0: the config is read. */
  o.flags = MI_LOAD_NO_CONFIG;
  o.struct_size = offsetof(mi_load_options, flags);
  TU_FAILS(MI_ERR_FORMAT, mi_model_load(&model, dir, &o));
  mi_model_free(written);
}
END_TEST

/* ---- which file a folder loads --------------------------------------------------- */

START_TEST(a_folder_picks_its_weights) {
  mi_config c = tl_config(1e-5);
  mi_model *written = exact_model(&c, 45), *model = (mi_model *)1;
  st_writer *st = write_tl(written, "F32", false, NULL);
  char dir[512];
  fresh_folder(dir, sizeof dir, "pick");
  write_text(dir, "README.md", "no weights here");
  TU_FAILS(MI_ERR_IO, mi_model_load(&model, dir, NULL));
  SAYS("has no weights file");
  SAYS("model.safetensors, pytorch_model.bin or model_final.pth");
  /* The one weights file, whatever its name. */
  save(st, dir, "my-run.safetensors");
  TU_OK(mi_model_load(&model, dir, NULL));
  mi_model_free(model);
  /* Two, and no preferred name: listed. */
  write_text(dir, "optimizer.pt", "not a model");
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load(&model, dir, NULL));
  SAYS("2 weights files ('my-run.safetensors', 'optimizer.pt')");
  ck_assert_ptr_null(model);
  /* A preferred name wins, model.safetensors over pytorch_model.bin. */
  write_text(dir, "pytorch_model.bin", "not a model either");
  TU_FAILS(MI_ERR_FORMAT, mi_model_load(&model, dir, NULL));
  SAYS("pytorch_model.bin");
  save(st, dir, "model.safetensors");
  TU_OK(mi_model_load(&model, dir, NULL));
  mi_model_free(model);
  /* A preferred name that is a folder is no regular file. */
  char path[600];
  ck_assert(remove(in(path, sizeof path, dir, "model.safetensors")) == 0);
  ck_assert(mkdir(path, 0700) == 0);
  TU_FAILS(MI_ERR_IO, mi_model_load(&model, dir, NULL));
  SAYS("model.safetensors' is not a readable regular file");
  st_writer_free(st);
  mi_model_free(written);
}
END_TEST

/* ---- bad config.json ------------------------------------------------------------- */

static const struct {
  const char *text;
  mi_status status;
  const char *says;
} BAD_CONFIGS[] = {
    {"{\"n_layers\": 2", MI_ERR_FORMAT, "is not valid JSON"},
    {"[2, 2]", MI_ERR_FORMAT, "an array, not a JSON object"},
    {"{\"n_heads\": 2, \"n_heads\": 2}", MI_ERR_FORMAT, "is not valid JSON"},
    {"{\"n_heads\": \"2\"}", MI_ERR_FORMAT, "\"n_heads\" is a string; it must be a positive"},
    {"{\"n_layers\": 2.0}", MI_ERR_FORMAT, "\"n_layers\" is a real number"},
    {"{\"d_model\": 0}", MI_ERR_FORMAT, "\"d_model\" is 0"},
    {"{\"d_vocab\": -1}", MI_ERR_FORMAT, "\"d_vocab\" is -1"},
    {"{\"eps\": \"1e-5\"}", MI_ERR_FORMAT, "\"eps\" is a string; it must be a number"},
    {"{\"layer_norm_epsilon\": -0.1}", MI_ERR_FORMAT, "must be positive"},
    {"{\"eps\": 1e-5, \"layer_norm_epsilon\": 1e-6}", MI_ERR_FORMAT,
     "\"eps\" is 1e-05 but \"layer_norm_epsilon\" is 1e-06"},
    {"{\"n_heads\": 2, \"n_head\": 4}", MI_ERR_FORMAT, "\"n_heads\" is 2 but \"n_head\" is 4"},
    {"{\"attn_only\": \"yes\"}", MI_ERR_FORMAT, "\"attn_only\" is a string"},
    {"{\"shortformer_pos\": 1}", MI_ERR_FORMAT, "\"shortformer_pos\" is an integer"},
    {"{\"normalization\": 1}", MI_ERR_FORMAT, "\"normalization\" is an integer"},
    {"{\"normalization\": \"LN\", \"normalization_type\": \"LNPre\"}", MI_ERR_FORMAT,
     "\"normalization_type\" is \"LNPre\" but \"normalization\" is \"LN\""},
    {"{\"positional_embedding_type\": \"standard\", \"shortformer_pos\": true}", MI_ERR_FORMAT,
     "says standard positions but \"shortformer_pos\" says shortformer"},
    {"{\"positional_embedding_type\": 3}", MI_ERR_FORMAT, "is an integer"},
    {"{\"positional_embedding_type\": \"rotary\"}", MI_ERR_UNSUPPORTED, "\"rotary\""},
    {"{\"positional_embedding_type\": \"alibi\"}", MI_ERR_UNSUPPORTED, "\"alibi\""},
    {"{\"model_type\": \"llama\"}", MI_ERR_UNSUPPORTED, "model_type \"llama\""},
    {"{\"model_type\": [\"gpt2\"]}", MI_ERR_FORMAT, "\"model_type\" is an array"},
    {"{\"normalization_type\": \"RMS\"}", MI_ERR_UNSUPPORTED, "\"RMS\""},
    {"{\"n_heads\": 4}", MI_ERR_SHAPE, "n_heads = 4, but the tensors have 2"},
    {"{\"attn_only\": false}", MI_ERR_MISSING_TENSOR, "has MLP layers"},
};

START_TEST(bad_configs_fail_naming_the_field_and_file) {
  mi_config c = tl_config(1e-5);
  char dir[512];
  mi_model *written = tl_folder(dir, sizeof dir, "bad-config", &c, 46), *model = (mi_model *)1;
  write_text(dir, "config.json", BAD_CONFIGS[_i].text);
  TU_FAILS(BAD_CONFIGS[_i].status, mi_model_load(&model, dir, NULL));
  SAYS(BAD_CONFIGS[_i].says);
  SAYS("config.json");
  ck_assert_ptr_null(model);
  mi_model_free(written);
}
END_TEST

START_TEST(unknown_fields_and_nulls_are_ignored) {
  mi_config c = tl_config(1e-5);
  char dir[512];
  mi_model *written = tl_folder(dir, sizeof dir, "unknown-fields", &c, 47), *model = (mi_model *)1;
  write_text(dir, "config.json",
             "\xEF\xBB\xBF{\"n_heads\": null, \"n_key_value_heads\": null, \"eps\": null,"
             " \"rotary_dim\": 64, \"attn_types\": [\"global\"], \"seed\": 42, \"d_head\": 4}");
  /* A byte order mark is not JSON: jansson refuses it, and so does libmi. */
  TU_FAILS(MI_ERR_FORMAT, mi_model_load(&model, dir, NULL));
  write_text(dir, "config.json",
             "{\"n_heads\": null, \"n_key_value_heads\": null, \"eps\": null,"
             " \"rotary_dim\": 64, \"attn_types\": [\"global\"], \"seed\": 42, \"d_head\": 4}");
  TU_OK(mi_model_load(&model, dir, NULL));
  ck_assert(config_of(model).ln_eps == 1e-5);
  mi_model_free(model);
  mi_model_free(written);
}
END_TEST

/* ---- vocabularies ------------------------------------------------------------------ */

START_TEST(a_folder_brings_its_vocabulary) {
  mi_config c = tl_config(1e-5);
  char dir[512], path[600];
  mi_model *written = tl_folder(dir, sizeof dir, "vocab", &c, 48), *model = (mi_model *)1;
  const char *s;
  /* vocab.txt, then vocab.json over it, then tokenizer.json over both. */
  write_text(dir, "vocab.txt", "zero\none\ntwo\n");
  TU_OK(mi_model_load(&model, dir, NULL));
  TU_OK(mi_model_token_str(&s, model, 2));
  ck_assert_str_eq(s, "two");
  mi_model_free(model);
  write_text(dir, "vocab.json", "{\"Ġtwo\": 2, \"one\": 1}");
  TU_OK(mi_model_load(&model, dir, NULL));
  TU_OK(mi_model_token_str(&s, model, 2));
  ck_assert_str_eq(s, " two");
  mi_model_free(model);
  write_text(dir, "tokenizer.json",
             "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"deux\": 2}, \"merges\": []},"
             " \"added_tokens\": [{\"id\": 10, \"content\": \"<|end|>\"}]}");
  TU_OK(mi_model_load(&model, dir, NULL));
  TU_OK(mi_model_token_str(&s, model, 2));
  ck_assert_str_eq(s, "deux");
  TU_OK(mi_model_token_str(&s, model, 10));
  ck_assert_str_eq(s, "<|end|>");
  mi_model_free(model);
  /* MI_LOAD_NO_VOCAB leaves the strings unset. */
  mi_load_options o = options_with(MI_PROCESS_FOLD_LN, MI_LOAD_NO_VOCAB);
  TU_OK(mi_model_load(&model, dir, &o));
  TU_FAILS(MI_ERR_STATE, mi_model_token_str(&s, model, 2));
  mi_model_free(model);
  /* A vocabulary that does not fit fails the load, naming it and the way out. */
  write_text(dir, "tokenizer.json", "{\"model\": {\"vocab\": {\"eleven\": 11}}}");
  TU_FAILS(MI_ERR_INDEX, mi_model_load(&model, dir, NULL));
  SAYS(in(path, sizeof path, dir, "tokenizer.json"));
  SAYS("MI_LOAD_NO_VOCAB");
  ck_assert_ptr_null(model);
  TU_OK(mi_model_load(&model, dir, &o));
  mi_model_free(model);
  mi_model_free(written);
}
END_TEST

/* ---- FIFOs --------------------------------------------------------------------------- */

/* A FIFO where a file is expected is refused at once; the timeout catches a wait. */
START_TEST(fifos_are_refused_without_blocking) {
  mi_config c = tl_config(1e-5);
  char dir[512], path[600];
  mi_model *written = tl_folder(dir, sizeof dir, "fifo", &c, 49), *model = (mi_model *)1;
  ck_assert_int_eq(mkfifo(in(path, sizeof path, dir, "config.json"), 0600), 0);
  TU_FAILS(MI_ERR_IO, mi_model_load(&model, dir, NULL));
  SAYS("config.json' is not a readable regular file");
  /* The same config.json beside a named file. */
  TU_FAILS(MI_ERR_IO, mi_model_load(&model, in(path, sizeof path, dir, "model.safetensors"),
                                    NULL));
  SAYS("config.json");
  mi_load_options o = options_with(MI_PROCESS_FOLD_LN, MI_LOAD_NO_CONFIG);
  TU_OK(mi_model_load(&model, dir, &o));
  mi_model_free(model);
  /* A FIFO vocabulary, and a FIFO as the weights. */
  ck_assert_int_eq(mkfifo(in(path, sizeof path, dir, "vocab.json"), 0600), 0);
  TU_FAILS(MI_ERR_IO, mi_model_load(&model, dir, &o));
  SAYS("vocab.json' is not a readable regular file");
  ck_assert(remove(in(path, sizeof path, dir, "model.safetensors")) == 0);
  ck_assert_int_eq(mkfifo(path, 0600), 0);
  o.flags |= MI_LOAD_NO_VOCAB;
  TU_FAILS(MI_ERR_IO, mi_model_load(&model, dir, &o));
  SAYS("model.safetensors' is not a readable regular file");
  mi_model_free(written);
}
END_TEST

static Suite *config_suite(void) {
  Suite *s = suite_create("config");
  TCase *tl = tcase_create("transformerlens");
  tcase_add_loop_test(tl, tl_folder_loads_with_the_config_eps, 0,
                      (int)(sizeof TL_CONFIGS / sizeof TL_CONFIGS[0]));
  tcase_add_test(tl, tl_normalization_is_checked_against_the_tensors);
  tcase_add_test(tl, shortformer_pos_reaches_the_model);
  tcase_add_test(tl, model_final_pth_is_the_weights_of_a_tl_folder);
  suite_add_tcase(s, tl);
  TCase *gpt2 = tcase_create("gpt2");
  tcase_add_test(gpt2, gpt2_folder_takes_its_head_count_from_config);
  tcase_add_test(gpt2, gpt2_disagreements_name_both_sources);
  suite_add_tcase(s, gpt2);
  TCase *files = tcase_create("files");
  tcase_add_test(files, config_beside_a_named_file_is_read);
  tcase_add_test(files, no_config_flag_ignores_a_bad_config);
  tcase_add_test(files, a_folder_picks_its_weights);
  tcase_add_loop_test(files, bad_configs_fail_naming_the_field_and_file, 0,
                      (int)(sizeof BAD_CONFIGS / sizeof BAD_CONFIGS[0]));
  tcase_add_test(files, unknown_fields_and_nulls_are_ignored);
  tcase_add_test(files, a_folder_brings_its_vocabulary);
  tcase_add_test(files, fifos_are_refused_without_blocking);
  tcase_set_timeout(files, 20);
  suite_add_tcase(s, files);
  return s;
}

int main(void) { return tu_run_suite(config_suite()); }
