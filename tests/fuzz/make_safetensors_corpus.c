/*
 * make_safetensors_corpus.c: writes the fuzz seed corpus with the tests' safetensors
 * writer: small valid models in both layouts and all four dtypes, with and
 * without the optional parts, and a few broken files, so that the fuzzer
 * starts from inputs that reach every part of the reader. With --torch, the
 * same models as torch.save archives (tests/pth_writer.c), each in another
 * storage layout, and a few broken archives, for the torch reader's corpus.
 *
 * Usage: make_safetensors_corpus tests/fuzz/corpus/safetensors
 *        make_safetensors_corpus --torch tests/fuzz/corpus/torch
 */
#include "../pth_writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* k/8 values, exact in every dtype; a different sequence for each tensor. */
static double values[4096];
static const double *fill(size_t n, int seed) {
  for (size_t i = 0; i < n && i < 4096; i++)
    values[i] = (double)((int)((i * 7 + (size_t)seed * 13) % 17) - 8) / 8.0;
  return values;
}

static int seed;
static int add(st_writer *w, const char *name, const char *dtype, size_t rank,
               const size_t *shape) {
  size_t n = 1;
  for (size_t i = 0; i < rank; i++)
    n *= shape[i];
  return st_add(w, name, dtype, rank, shape, fill(n, seed++)) ? 0 : 1;
}

enum { TL_BIASES = 1, TL_LN = 2, TL_GQA = 4, TL_MLP = 8, TL_POS = 16, TL_LNPRE = 32 };

/* A TransformerLens state dict: d_model 4, d_vocab 5, n_ctx 3, d_head 2. */
static st_writer *tl(const char *dtype, size_t layers, size_t heads, unsigned flags) {
  size_t D = 4, V = 5, dh = 2, KV = flags & TL_GQA ? heads / 2 : heads;
  const char *u = flags & TL_GQA ? "_" : "";
  char name[64];
  int bad = 0;
  st_writer *w = st_writer_new();
  if (w == NULL)
    return NULL;
  if (flags & TL_LNPRE)
    bad |= !st_add_metadata(w, "normalization_type", "LNPre");
  bad |= add(w, "embed.W_E", dtype, 2, (size_t[]){V, D});
  if (flags & TL_POS)
    bad |= add(w, "pos_embed.W_pos", dtype, 2, (size_t[]){3, D});
  for (size_t l = 0; l < layers; l++) {
#define NAME(...) (snprintf(name, sizeof name, __VA_ARGS__), name)
    bad |= add(w, NAME("blocks.%zu.attn.W_Q", l), dtype, 3, (size_t[]){heads, D, dh});
    bad |= add(w, NAME("blocks.%zu.attn.%sW_K", l, u), dtype, 3, (size_t[]){KV, D, dh});
    bad |= add(w, NAME("blocks.%zu.attn.%sW_V", l, u), dtype, 3, (size_t[]){KV, D, dh});
    bad |= add(w, NAME("blocks.%zu.attn.W_O", l), dtype, 3, (size_t[]){heads, dh, D});
    if (flags & TL_BIASES) {
      bad |= add(w, NAME("blocks.%zu.attn.b_Q", l), dtype, 2, (size_t[]){heads, dh});
      bad |= add(w, NAME("blocks.%zu.attn.%sb_K", l, u), dtype, 2, (size_t[]){KV, dh});
      bad |= add(w, NAME("blocks.%zu.attn.%sb_V", l, u), dtype, 2, (size_t[]){KV, dh});
      bad |= add(w, NAME("blocks.%zu.attn.b_O", l), dtype, 1, (size_t[]){D});
    }
    if (flags & TL_LN) {
      bad |= add(w, NAME("blocks.%zu.ln1.w", l), dtype, 1, (size_t[]){D});
      bad |= add(w, NAME("blocks.%zu.ln1.b", l), dtype, 1, (size_t[]){D});
    }
    if (flags & TL_MLP)
      bad |= add(w, NAME("blocks.%zu.mlp.W_in", l), dtype, 2, (size_t[]){D, 8});
    unsigned char mask[9] = {1, 0, 0, 1, 1, 0, 1, 1, 1};
    bad |= !st_add_raw(w, NAME("blocks.%zu.attn.mask", l), "BOOL", 2, (size_t[]){3, 3},
                       mask, sizeof mask);
  }
  if (flags & TL_LN) {
    bad |= add(w, "ln_final.w", dtype, 1, (size_t[]){D});
    bad |= add(w, "ln_final.b", dtype, 1, (size_t[]){D});
  }
  bad |= add(w, "unembed.W_U", dtype, 2, (size_t[]){D, V});
  if (flags & TL_BIASES)
    bad |= add(w, "unembed.b_U", dtype, 1, (size_t[]){V});
  if (bad) {
    st_writer_free(w);
    return NULL;
  }
  return w;
}

/* A GPT-2 checkpoint: d_model 4, 2 heads, d_vocab 5, n_ctx 3. */
static st_writer *gpt2(const char *dtype, const char *p, int lm_head, int mlp, int meta) {
  size_t D = 4, V = 5;
  char name[64];
  int bad = 0;
  st_writer *w = st_writer_new();
  if (w == NULL)
    return NULL;
  if (meta)
    bad |= !st_add_metadata(w, "n_head", "2");
  bad |= add(w, NAME("%swte.weight", p), dtype, 2, (size_t[]){V, D});
  bad |= add(w, NAME("%swpe.weight", p), dtype, 2, (size_t[]){3, D});
  for (size_t l = 0; l < 2; l++) {
    bad |= add(w, NAME("%sh.%zu.ln_1.weight", p, l), dtype, 1, (size_t[]){D});
    bad |= add(w, NAME("%sh.%zu.ln_1.bias", p, l), dtype, 1, (size_t[]){D});
    bad |= add(w, NAME("%sh.%zu.attn.c_attn.weight", p, l), dtype, 2, (size_t[]){D, 3 * D});
    bad |= add(w, NAME("%sh.%zu.attn.c_attn.bias", p, l), dtype, 1, (size_t[]){3 * D});
    bad |= add(w, NAME("%sh.%zu.attn.c_proj.weight", p, l), dtype, 2, (size_t[]){D, D});
    bad |= add(w, NAME("%sh.%zu.attn.c_proj.bias", p, l), dtype, 1, (size_t[]){D});
    bad |= add(w, NAME("%sh.%zu.attn.bias", p, l), "F32", 4, (size_t[]){1, 1, 3, 3});
    if (mlp)
      bad |= add(w, NAME("%sh.%zu.mlp.c_fc.weight", p, l), dtype, 2, (size_t[]){D, 8});
  }
  bad |= add(w, NAME("%sln_f.weight", p), dtype, 1, (size_t[]){D});
  bad |= add(w, NAME("%sln_f.bias", p), dtype, 1, (size_t[]){D});
  if (lm_head)
    bad |= add(w, "lm_head.weight", dtype, 2, (size_t[]){V, D});
#undef NAME
  if (bad) {
    st_writer_free(w);
    return NULL;
  }
  return w;
}

/* The torch layout of the next archive: each seed gets another. */
static const unsigned torch_layouts[] = {
    0, PTH_TRANSPOSED, PTH_SHARED | PTH_DESCRIPTOR, PTH_PARAMETERS | PTH_BYTEORDER,
    PTH_CHECKPOINT, PTH_ZIP64 | PTH_TRANSPOSED | PTH_SHARED};
static int torch_mode = -1; /* -1: write safetensors; else the next layout's index */

static int save(st_writer *w, const char *dir, const char *file) {
  char path[1024];
  int ok = w != NULL;
  if (torch_mode < 0) {
    snprintf(path, sizeof path, "%s/%s", dir, file);
    ok = ok && st_save(w, path);
  } else {
    snprintf(path, sizeof path, "%s/%.*s.pth", dir, (int)(strchr(file, '.') - file), file);
    size_t size;
    unsigned layout = torch_layouts[torch_mode++ % 6];
    unsigned char *bytes = ok ? pth_from_st(w, layout, &size) : NULL;
    ok = bytes != NULL && st_write_bytes(path, bytes, size);
    free(bytes);
  }
  st_writer_free(w);
  if (!ok)
    fprintf(stderr, "cannot write %s\n", path);
  return !ok;
}

static int save_raw(const char *dir, const char *file, const char *header, size_t data) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, file);
  size_t size;
  unsigned char *bytes = st_raw(header, strlen(header), data, &size);
  int ok = bytes != NULL && st_write_bytes(path, bytes, size);
  free(bytes);
  if (!ok)
    fprintf(stderr, "cannot write %s\n", path);
  return !ok;
}

/* Broken archives: a pickle naming os.system, and a view past its storage. */
static int save_bad_torch(const char *dir) {
  static const char global[] = "\x80\x02" "cos\nsystem\n" "X\x02\x00\x00\x00" "ls\x85R.";
  pk_buf p = {0};
  pk_globals g = {0};
  pk_begin_dict(&p);
  pk_text(&p, "embed.W_E");
  pk_tensor(&p, &g, "FloatStorage", "0", 4, 1, 2, (size_t[]){2, 2}, (size_t[]){2, 1});
  pk_end_dict(&p);
  const float zeros[4] = {0};
  const pth_record storage = {"data/0", zeros, sizeof zeros};
  struct { const char *file; const void *pickle; size_t size; } bad[] = {
      {"bad_global.pth", global, sizeof global - 1}, {"bad_view.pth", p.bytes, p.len}};
  int failed = p.failed;
  for (int i = 0; i < 2; i++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, bad[i].file);
    size_t size;
    unsigned char *zip = pth_archive(bad[i].pickle, bad[i].size, &storage, 1, 0, &size);
    failed |= zip == NULL || !st_write_bytes(path, zip, size);
    free(zip);
  }
  free(p.bytes);
  return failed;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--torch") == 0)
    torch_mode = 0;
  if (argc != 2 + (torch_mode >= 0)) {
    fprintf(stderr, "usage: %s [--torch] DIRECTORY\n", argv[0]);
    return 2;
  }
  const char *d = argv[argc - 1];
  int bad = 0;
  bad |= save(tl("F32", 2, 2, TL_BIASES | TL_LN | TL_POS), d, "tl_f32_all.safetensors");
  bad |= save(tl("F16", 1, 4, TL_GQA | TL_BIASES), d, "tl_f16_gqa.safetensors");
  bad |= save(tl("BF16", 1, 1, 0), d, "tl_bf16_bare.safetensors");
  bad |= save(tl("F64", 2, 2, TL_MLP | TL_LN), d, "tl_f64_mlp.safetensors");
  bad |= save(tl("F32", 2, 2, TL_LNPRE | TL_POS), d, "tl_f32_lnpre.safetensors");
  bad |= save(gpt2("F32", "", 0, 0, 1), d, "gpt2_f32_tied.safetensors");
  bad |= save(gpt2("F16", "transformer.", 1, 0, 1), d, "gpt2_f16_prefix.safetensors");
  bad |= save(gpt2("BF16", "", 1, 1, 1), d, "gpt2_bf16_mlp.safetensors");
  bad |= save(gpt2("F64", "", 0, 0, 0), d, "gpt2_f64_no_heads.safetensors");
  if (torch_mode >= 0)
    return bad | save_bad_torch(d);
  bad |= save_raw(d, "bad_not_json.safetensors", "{\"embed.W_E\": nope}", 0);
  bad |= save_raw(d, "bad_overlap.safetensors",
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
  bad |= save_raw(d, "bad_past_end.safetensors",
                  "{\"embed.W_E\":{\"dtype\":\"F32\",\"shape\":[2,2],"
                  "\"data_offsets\":[0,16]}}", 8);
  bad |= save_raw(d, "bad_dtype.safetensors",
                  "{\"__metadata__\":{\"n_head\":\"2\"},\"wte.weight\":{\"dtype\":\"I64\","
                  "\"shape\":[1,2],\"data_offsets\":[0,16]}}", 16);
  return bad;
}
