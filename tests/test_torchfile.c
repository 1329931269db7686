/*
 * PyTorch torch.save archives: state dicts written by the tests' own writer
 * (pth_writer.c) in every dtype and storage layout load to the very weights
 * written, and give the same logits, bit for bit, as the same tensors in a
 * .safetensors file; files written by real torch.save (tests/data/torch,
 * tools/make_torch_fixtures.py) match an independent float64 torch
 * implementation; files that are not models say what they look like; and
 * hostile archives and pickles fail with their own status and message.
 */
#define _POSIX_C_SOURCE 200809L
#include "model_files.h"
#include "pth_writer.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const DTYPES[] = {"F32", "F16", "BF16", "F64"};
static const unsigned ALL_PARTS = MI_PART_POS_EMBED | MI_PART_QKV_BIAS | MI_PART_OUT_BIAS |
                                  MI_PART_UNEMBED_BIAS | MI_PART_LN | MI_PART_LN_FINAL;

/* Load options without processing: the weights as the file has them. */
static mi_load_options raw_options(void) {
  mi_load_options o;
  mi_load_options_init(&o, sizeof o);
  o.process = 0;
  return o;
}

/* Loads `bytes` from memory and from a file, checks both agree, returns one. */
static mi_model *load_both(const unsigned char *bytes, size_t size, const char *file,
                           const mi_load_options *options) {
  char path[512];
  tmp_path(path, sizeof path, file);
  ck_assert_msg(st_write_bytes(path, bytes, size), "cannot write %s", path);
  mi_model *model, *again;
  TU_OK(mi_model_load(&model, path, options));
  TU_OK(mi_model_load_memory(&again, bytes, size, options));
  assert_same_weights(model, again);
  mi_model_free(again);
  remove(path);
  return model;
}

/* Logits of `model` on a fixed sequence of n tokens (malloc'd). */
static float *logits_of(const mi_model *model, size_t n) {
  mi_config c = config_of(model);
  size_t *tokens = malloc(n * sizeof *tokens);
  float *out = malloc(n * c.d_vocab * sizeof *out);
  for (size_t t = 0; t < n; t++)
    tokens[t] = (t * 7 + 3) % c.d_vocab;
  TU_OK(mi_model_forward(out, c.d_vocab, model, tokens, n, NULL));
  free(tokens);
  return out;
}

/* The storage layouts the writer makes; each must read back the same tensors. */
static const unsigned LAYOUTS[] = {
    0,
    PTH_DESCRIPTOR | PTH_BYTEORDER,
    PTH_TRANSPOSED,
    PTH_SHARED,
    PTH_TRANSPOSED | PTH_SHARED | PTH_PARAMETERS,
    PTH_ZIP64 | PTH_DESCRIPTOR,
    PTH_CHECKPOINT | PTH_SHARED,
};
#define N_LAYOUTS (sizeof LAYOUTS / sizeof LAYOUTS[0])

/*
 * A TransformerLens state dict (grouped-query heads, every optional part,
 * TL's mask and IGNORE buffers) in dtype _i / N_LAYOUTS and layout
 * _i % N_LAYOUTS: the archive loads to the weights written, and to the same
 * model as the same tensors in a .safetensors file, whose logits after
 * LayerNorm folding are identical to the bit.
 */
START_TEST(tl_archives_round_trip) {
  const char *dtype = DTYPES[_i / N_LAYOUTS];
  unsigned layout = LAYOUTS[_i % N_LAYOUTS];
  mi_config c = tu_config(2, 4, 8, 3, 11, 6, ALL_PARTS);
  c.n_kv_heads = 2;
  mi_model *written = exact_model(&c, 20 + (uint64_t)_i);
  st_writer *st = write_tl(written, dtype, _i % 2 == 1, NULL);
  size_t size, st_size;
  unsigned char *pth = pth_from_st(st, layout, &size);
  unsigned char *safetensors = st_serialize(st, &st_size);
  ck_assert(pth != NULL && safetensors != NULL);
  mi_load_options raw = raw_options();
  mi_model *loaded = load_both(pth, size, "tl.pth", &raw);
  assert_same_weights(written, loaded);
  ck_assert_int_eq(mi_model_layout(loaded), MI_LAYOUT_TRANSFORMERLENS);
  mi_model_free(loaded);

  /* Folded on load (the default): the same model from either file. */
  mi_model *from_pth, *from_st;
  TU_OK(mi_model_load_memory(&from_pth, pth, size, NULL));
  TU_OK(mi_model_load_memory(&from_st, safetensors, st_size, NULL));
  assert_same_weights(from_pth, from_st);
  float *a = logits_of(from_pth, 6), *b = logits_of(from_st, 6);
  ck_assert_msg(memcmp(a, b, 6 * c.d_vocab * sizeof *a) == 0,
                "%s layout %#x: logits differ from the safetensors file's", dtype, layout);
  free(a);
  free(b);
  mi_model_free(from_pth);
  mi_model_free(from_st);
  free(pth);
  free(safetensors);
  st_writer_free(st);
  mi_model_free(written);
}
END_TEST

/*
 * A GPT-2 checkpoint (transformer. prefix, packed heads, its attn.bias
 * buffers), with and without lm_head: the heads come from the options, as a
 * .pth carries no config, and land as the definition packs them.
 */
START_TEST(gpt2_archives_round_trip) {
  const unsigned parts = MI_PART_POS_EMBED | MI_PART_QKV_BIAS | MI_PART_OUT_BIAS |
                         MI_PART_LN | MI_PART_LN_FINAL;
  mi_config c = tu_config(2, 2, 6, 3, 9, 5, parts);
  mi_model *written = exact_model(&c, 31 + (uint64_t)_i);
  bool lm_head = _i % 2;
  if (!lm_head)
    tie_unembedding(written);
  st_writer *st = write_gpt2(written, DTYPES[_i], "transformer.", lm_head, false);
  size_t size;
  unsigned char *pth = pth_from_st(st, _i ? PTH_TRANSPOSED | PTH_SHARED : 0, &size);
  mi_model *model = (mi_model *)1;
  TU_FAILS(MI_ERR_INVALID_ARGUMENT, mi_model_load_memory(&model, pth, size, NULL));
  ck_assert_msg(strstr(mi_last_error(), "n_heads") != NULL, "%s", mi_last_error());
  mi_load_options o = raw_options();
  o.n_heads = 2;
  mi_model *loaded = load_both(pth, size, "gpt2.pth", &o);
  assert_same_weights(written, loaded);
  ck_assert_int_eq(mi_model_layout(loaded), MI_LAYOUT_GPT2);
  mi_model_free(loaded);
  free(pth);
  st_writer_free(st);
  mi_model_free(written);
}
END_TEST

/* ---- files that are not models -------------------------------------------------- */

typedef struct not_a_model {
  const char *file, *says, *also;
  mi_status status;
} not_a_model;

static const not_a_model NOT_MODELS[] = {
    {"README", "looks like a text file", "torch.save archives", MI_ERR_FORMAT},
    {"config.json", "looks like a JSON file", "libmi reads .safetensors", MI_ERR_FORMAT},
    {"legacy.pth", "bare pickle", "torch.save(torch.load(path), new_path)", MI_ERR_UNSUPPORTED},
    {"weights.npz", "not a torch.save archive", "'a.npy', 'b.npy'", MI_ERR_FORMAT},
    {"scripted.pt", "TorchScript", "state_dict()", MI_ERR_UNSUPPORTED},
    {"empty.zip", "zip archive of 0 entries", "not a torch.save archive", MI_ERR_FORMAT},
};

/* The bytes of NOT_MODELS[i] (malloc'd). */
static unsigned char *not_model_bytes(int i, size_t *size) {
  static const char readme[] = "# A model\n\nThese are the weights of a small transformer.\n";
  static const char config[] = "{\n  \"n_layers\": 2,\n  \"d_model\": 768\n}\n";
  /* torch < 1.6: a pickled magic number (LONG1), then protocol 2 pickles. */
  static const unsigned char legacy[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                         0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};
  const char *text = i == 0 ? readme : i == 1 ? config : NULL;
  if (text != NULL || i == 2) {
    *size = text ? strlen(text) : sizeof legacy;
    unsigned char *copy = malloc(*size);
    memcpy(copy, text ? (const void *)text : legacy, *size);
    return copy;
  }
  pth_record npz[] = {{"a.npy", "\x93NUMPY", 6}, {"b.npy", "\x93NUMPY", 6}};
  pth_record script[] = {{"scripted/data.pkl", "\x80\x02}.", 4},
                         {"scripted/constants.pkl", "\x80\x02).", 4},
                         {"scripted/code/__torch__.py", "", 0}};
  if (i == 3)
    return pth_zip(npz, 2, 0, size);
  if (i == 4)
    return pth_zip(script, 3, 0, size);
  return pth_zip(NULL, 0, 0, size);
}

/* Each says what the file looks like and what libmi reads, naming the file. */
START_TEST(files_that_are_not_models_say_what_they_are) {
  const not_a_model *c = &NOT_MODELS[_i];
  size_t size;
  unsigned char *bytes = not_model_bytes(_i, &size);
  char path[512];
  tmp_path(path, sizeof path, c->file);
  ck_assert(st_write_bytes(path, bytes, size));
  mi_model *model = (mi_model *)1;
  TU_FAILS(c->status, mi_model_load(&model, path, NULL));
  const char *msg = mi_last_error();
  ck_assert_msg(strstr(msg, path) && strstr(msg, c->says) && strstr(msg, c->also),
                "%s: '%s' lacks '%s' or '%s'", c->file, msg, c->says, c->also);
  ck_assert_ptr_null(model);
  remove(path);
  free(bytes);
}
END_TEST

/* ---- hostile archives and pickles ----------------------------------------------- */

/*
 * The base of the hostile cases: a valid one-layer TransformerLens state
 * dict (d_vocab 3, d_model 4, 2 heads of 2), its six float32 tensors packed
 * one after another in storage "0" of 88 elements. `bad` (>= 0) gives that
 * tensor (in TENSORS order) `size` / `stride` / `offset` instead.
 */
static const struct { const char *name; size_t rank, shape[3]; } TENSORS[] = {
    {"embed.W_E", 2, {3, 4}},           {"blocks.0.attn.W_Q", 3, {2, 4, 2}},
    {"blocks.0.attn.W_K", 3, {2, 4, 2}}, {"blocks.0.attn.W_V", 3, {2, 4, 2}},
    {"blocks.0.attn.W_O", 3, {2, 2, 4}}, {"unembed.W_U", 2, {4, 3}},
};
#define BASE_NUMEL 88

typedef struct tweak {
  int bad;                       /* tensor index, or -1 */
  size_t size[3], stride[3], offset;
  size_t storage_numel;          /* 0: BASE_NUMEL */
  const char *storage_type;      /* NULL: FloatStorage */
  const char *key;               /* NULL: "0" */
  int repeat;                    /* > 0: the tensors again, this many times, renamed */
  bool twice;                    /* embed.W_E a second time */
} tweak;

static void base_pickle(pk_buf *p, const tweak *t) {
  pk_globals g = {0};
  pk_op(p, 0x80);
  pk_op(p, 2);
  pk_global(p, "collections", "OrderedDict");
  g.ordered_dict = pk_memo(p) + 1;
  pk_op(p, ')');
  pk_op(p, 'R');
  pk_memo(p);
  pk_op(p, '(');
  for (int copy = 0; copy <= t->repeat; copy++) {
    size_t offset = 0;
    for (int i = 0; i < 6; i++) {
      size_t stride[3], s = 1, rank = TENSORS[i].rank;
      for (size_t k = rank; k-- > 0;) {
        stride[k] = s;
        s *= TENSORS[i].shape[k];
      }
      char name[64];
      if (copy)
        snprintf(name, sizeof name, "copy%d.%s", copy, TENSORS[i].name);
      else
        snprintf(name, sizeof name, "%s", TENSORS[i].name);
      pk_text(p, name);
      pk_memo(p);
      bool bad = i == t->bad;
      pk_tensor(p, &g, t->storage_type ? t->storage_type : "FloatStorage",
                t->key ? t->key : "0", t->storage_numel ? t->storage_numel : BASE_NUMEL,
                bad ? t->offset : offset, rank, bad ? t->size : TENSORS[i].shape,
                bad ? t->stride : stride);
      offset += s;
    }
  }
  if (t->twice) {
    pk_text(p, "embed.W_E");
    pk_tensor(p, &g, "FloatStorage", "0", BASE_NUMEL, 0, 2, (size_t[]){3, 4},
              (size_t[]){4, 1});
  }
  pk_op(p, 'u');
  pk_op(p, '.');
}

static unsigned char *archive_of(const pk_buf *p, size_t storage_bytes, unsigned flags,
                                 size_t *size) {
  float *zeros = calloc(storage_bytes / 4 + 1, sizeof *zeros);
  pth_record storage = {"data/0", zeros, storage_bytes};
  unsigned char *zip = pth_archive(p->bytes, p->len, &storage, 1, flags, size);
  free(zeros);
  return zip;
}

static unsigned char *base_archive(const tweak *t, size_t *size) {
  pk_buf p = {0};
  base_pickle(&p, t);
  unsigned char *zip = archive_of(&p, BASE_NUMEL * 4, 0, size);
  free(p.bytes);
  return zip;
}

/* The central-directory (local: the local header) record of `name`. */
static unsigned char *zip_record(unsigned char *zip, size_t size, const char *name,
                                 bool local) {
  const unsigned char sig[4] = {'P', 'K', local ? 3 : 1, local ? 4 : 2};
  size_t at = local ? 30 : 46, len = strlen(name);
  for (size_t i = 0; i + at + len <= size; i++)
    if (memcmp(zip + i, sig, 4) == 0 && memcmp(zip + i + at, name, len) == 0)
      return zip + i;
  ck_abort_msg("no zip record for %s", name);
  return NULL;
}

static void set_le(unsigned char *p, unsigned long long v, int n) {
  for (int i = 0; i < n; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

/* A pickle of the protocol header, then `body`, wrapped as the base's archive. */
static unsigned char *pickle_archive(const void *body, size_t n, size_t *size) {
  pk_buf p = {0};
  pk_op(&p, 0x80);
  pk_op(&p, 2);
  pk_bytes(&p, body, n);
  unsigned char *zip = archive_of(&p, BASE_NUMEL * 4, 0, size);
  free(p.bytes);
  return zip;
}
#define PICKLE(literal, size) pickle_archive(literal, sizeof literal - 1, size)

/* An archive whose pickle is a list nested `depth` deep (APPENDs, no recursion). */
static unsigned char *deep_list(size_t depth, size_t *size) {
  pk_buf p = {0};
  pk_op(&p, 0x80);
  pk_op(&p, 2);
  for (size_t i = 0; i < depth; i++)
    pk_op(&p, ']');
  for (size_t i = 1; i < depth; i++)
    pk_op(&p, 'a');
  pk_op(&p, '.');
  unsigned char *zip = archive_of(&p, BASE_NUMEL * 4, 0, size);
  free(p.bytes);
  return zip;
}

/* A list that doubles 40 times through the memo: 2^40 items if expanded. */
static unsigned char *doubling_list(size_t *size) {
  pk_buf p = {0};
  pk_op(&p, 0x80);
  pk_op(&p, 2);
  pk_op(&p, ']');
  unsigned last = pk_memo(&p);
  for (int k = 0; k < 40; k++) {
    pk_op(&p, '(');
    pk_get(&p, last);
    pk_get(&p, last);
    pk_op(&p, 'l');
    last = pk_memo(&p);
  }
  pk_op(&p, '.');
  unsigned char *zip = archive_of(&p, BASE_NUMEL * 4, 0, size);
  free(p.bytes);
  return zip;
}

typedef struct hostile {
  const char *what;
  mi_status status;
  const char *says;
} hostile;

static const hostile HOSTILE[] = {
    /* the zip */
    {"truncated to half", MI_ERR_TRUNCATED, "no zip end record"},
    {"one byte short", MI_ERR_TRUNCATED, "no zip end record"},
    {"shorter than an end record", MI_ERR_TRUNCATED, "22-byte end record"},
    {"data.pkl's CRC wrong", MI_ERR_FORMAT, "CRC-32"},
    {"an entry's size past the end", MI_ERR_TRUNCATED, "ends past the end"},
    {"an entry's size 4 GiB (zip64 marker, no extra)", MI_ERR_FORMAT, "zip64 extra"},
    {"compressed sizes differ", MI_ERR_FORMAT, "compressed size"},
    {"deflated entry", MI_ERR_UNSUPPORTED, "compressed (deflate)"},
    {"encrypted entry", MI_ERR_UNSUPPORTED, "encrypted"},
    {"central directory past the end", MI_ERR_TRUNCATED, "central directory"},
    {"more entries than the directory holds", MI_ERR_FORMAT, "counts 60000 entries"},
    {"local header offset past the end", MI_ERR_TRUNCATED, "local header"},
    {"local header of another name", MI_ERR_FORMAT, "names another"},
    {"duplicate entry", MI_ERR_FORMAT, "appears twice"},
    {"zip64 marks without a locator", MI_ERR_FORMAT, "zip64 end locator"},
    {"big-endian byteorder", MI_ERR_UNSUPPORTED, "big-endian"},
    /* the pickle */
    {"unknown opcode", MI_ERR_FORMAT, "opcode 0xff (an unknown opcode)"},
    {"INST opcode", MI_ERR_FORMAT, "opcode 0x69 (INST)"},
    {"GLOBAL os.system", MI_ERR_FORMAT, "global os.system"},
    {"STACK_GLOBAL builtins.eval", MI_ERR_FORMAT, "global builtins.eval"},
    {"REDUCE calling a storage type", MI_ERR_FORMAT, "REDUCE calls torch.FloatStorage"},
    {"REDUCE of a string", MI_ERR_FORMAT, "REDUCE calls a str"},
    {"BUILD on a list", MI_ERR_FORMAT, "BUILD sets the state of a list"},
    {"pickle protocol 6", MI_ERR_FORMAT, "protocol 6"},
    {"no STOP", MI_ERR_TRUNCATED, "without a STOP"},
    {"string longer than the pickle", MI_ERR_TRUNCATED, "BINUNICODE of 1000000 bytes"},
    {"memo index out of range", MI_ERR_FORMAT, "memo index 200"},
    {"memo bomb: LONG_BINPUT 2^32-1", MI_ERR_FORMAT, "memo index 4294967295"},
    {"stack underflow", MI_ERR_FORMAT, "REDUCE needs 2 items"},
    {"SETITEMS without MARK", MI_ERR_FORMAT, "SETITEMS without a MARK"},
    {"deep nesting", MI_ERR_FORMAT, "holds a list, not a state dict"},
    {"pickle bomb (a list doubling 40 times)", MI_ERR_FORMAT, "holds a list"},
    {"negative stride", MI_ERR_FORMAT, "non-negative"},
    /* the tensors */
    {"storage shorter than the tensor", MI_ERR_SHAPE, "reaches element 91 of its storage '0'"},
    {"stride that walks past the storage", MI_ERR_SHAPE, "reaches element 109"},
    {"offset past the storage", MI_ERR_SHAPE, "reaches element 1011"},
    {"size * stride overflowing", MI_ERR_SHAPE, "reaches element beyond"},
    {"storage size not its record's", MI_ERR_TRUNCATED, "has 352 bytes"},
    {"storage with no record", MI_ERR_FORMAT, "has no record 'archive/data/7'"},
    {"unknown storage type", MI_ERR_FORMAT, "global torch.QInt8Storage"},
    {"integer weights", MI_ERR_DTYPE, "int64"},
    {"a tensor named twice", MI_ERR_FORMAT, "names tensor 'embed.W_E' twice"},
    {"views repeating one storage", MI_ERR_SHAPE, "twice the archive"},
    {"a tensor alone", MI_ERR_FORMAT, "holds a tensor"},
    {"a dict without tensors", MI_ERR_MISSING_TENSOR, "without tensors"},
};
#define N_HOSTILE (int)(sizeof HOSTILE / sizeof HOSTILE[0])

static unsigned char *hostile_bytes(int i, size_t *size) {
  tweak t = {.bad = -1};
  unsigned char *zip;
  switch (i) {
  case 0: zip = base_archive(&t, size); *size /= 2; return zip;
  case 1: zip = base_archive(&t, size); *size -= 1; return zip;
  case 2: zip = base_archive(&t, size); *size = 21; return zip;
  case 3: {
    zip = base_archive(&t, size);
    unsigned char *local = zip_record(zip, *size, "archive/data.pkl", true);
    local[30 + (local[26] | local[27] << 8) + (local[28] | local[29] << 8) + 40] ^= 1;
    return zip;
  }
  case 4: case 5: case 6: {
    zip = base_archive(&t, size);
    unsigned char *cd = zip_record(zip, *size, "archive/data/0", false);
    set_le(cd + 24, i == 4 ? 1000000 : i == 5 ? 0xFFFFFFFFu : 352, 4);
    if (i != 6)
      set_le(cd + 20, i == 4 ? 1000000 : 0xFFFFFFFFu, 4);
    else
      set_le(cd + 20, 351, 4);
    return zip;
  }
  case 7: case 8:
    zip = base_archive(&t, size);
    set_le(zip_record(zip, *size, "archive/data/0", false) + (i == 7 ? 10 : 8), i == 7 ? 8 : 1,
           2);
    return zip;
  case 9: case 10: {
    zip = base_archive(&t, size);
    unsigned char *end = zip + *size - 22;
    if (i == 9)
      set_le(end + 16, *size, 4);
    else
      set_le(end + 10, 60000, 2);
    return zip;
  }
  case 11: case 12:
    zip = base_archive(&t, size);
    if (i == 11)
      set_le(zip_record(zip, *size, "archive/version", false) + 42, 0x7FFFFFF0, 4);
    else
      zip_record(zip, *size, "archive/version", true)[30] = 'X';
    return zip;
  case 13: {
    pk_buf p = {0};
    base_pickle(&p, &t);
    pth_record twice[] = {{"data/0", calloc(BASE_NUMEL, 4), BASE_NUMEL * 4},
                          {"data/0", twice[0].bytes, BASE_NUMEL * 4}};
    zip = pth_archive(p.bytes, p.len, twice, 2, 0, size);
    free((void *)twice[0].bytes);
    free(p.bytes);
    return zip;
  }
  case 14:
    zip = base_archive(&t, size);
    set_le(zip + *size - 22 + 16, 0xFFFFFFFFu, 4);
    return zip;
  case 15: {
    pk_buf p = {0};
    base_pickle(&p, &t);
    float *zeros = calloc(BASE_NUMEL, 4);
    pth_record r[] = {{"data/0", zeros, BASE_NUMEL * 4}, {"byteorder", "big", 3}};
    zip = pth_archive(p.bytes, p.len, r, 2, 0, size);
    free(zeros);
    free(p.bytes);
    return zip;
  }
  case 16: return PICKLE("\xff.", size);
  case 17: return PICKLE("(ios\nsystem\n.", size);
  case 18: return PICKLE("cos\nsystem\n(X\x02\x00\x00\x00lstR.", size);
  case 19: return PICKLE("\x8c\x08" "builtins\x8c\x04" "eval\x93.", size);
  case 20: return PICKLE("ctorch\nFloatStorage\n)R.", size);
  case 21: return PICKLE("X\x01\x00\x00\x00x)R.", size);
  case 22: return PICKLE("]}b.", size);
  case 23: return PICKLE("\x80\x06}.", size);
  case 24: return PICKLE("}", size);
  case 25: return PICKLE("X\x40\x42\x0f\x00" "abc.", size);
  case 26: return PICKLE("}h\xc8.", size);
  case 27: return PICKLE("}r\xff\xff\xff\xff.", size);
  case 28: return PICKLE(")R.", size);
  case 29: return PICKLE("}X\x01\x00\x00\x00kNu.", size);
  case 30: return deep_list(200000, size);
  case 31: return doubling_list(size);
  case 32: return PICKLE("ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
                         "ctorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuKXtQ"
                         "K\x00K\x02\x85J\xff\xff\xff\xff\x85\x89NtR.", size);
  case 33:
    t = (tweak){.bad = 5, .size = {4, 4}, .stride = {4, 1}, .offset = 76};
    return base_archive(&t, size);
  case 34:
    t = (tweak){.bad = 5, .size = {4, 3}, .stride = {3, 50}, .offset = 0};
    return base_archive(&t, size);
  case 35:
    t = (tweak){.bad = 0, .size = {3, 4}, .stride = {4, 1}, .offset = 1000};
    return base_archive(&t, size);
  case 36:
    t = (tweak){.bad = 0, .size = {3, (size_t)1 << 62}, .stride = {4, (size_t)1 << 62}};
    return base_archive(&t, size);
  case 37: t.storage_numel = 100; return base_archive(&t, size);
  case 38: t.key = "7"; return base_archive(&t, size);
  case 39: t.storage_type = "QInt8Storage"; return base_archive(&t, size);
  case 40: {
    /* Integer storages: every tensor a stride-0 view of one int64. */
    pk_buf q = {0};
    pk_globals g = {0};
    pk_begin_dict(&q);
    for (int k = 0; k < 6; k++) {
      pk_text(&q, TENSORS[k].name);
      pk_tensor(&q, &g, "LongStorage", "0", BASE_NUMEL / 2, 0, TENSORS[k].rank,
                TENSORS[k].shape, (size_t[]){0, 0, 0});
    }
    pk_end_dict(&q);
    zip = archive_of(&q, BASE_NUMEL * 4, 0, size);
    free(q.bytes);
    return zip;
  }
  case 41: t.twice = true; return base_archive(&t, size);
  case 42: {
    /* Three views of a whole 256 KiB storage: 768 KiB of views. */
    pk_buf q = {0};
    pk_globals g = {0};
    size_t n = 65536;
    pk_begin_dict(&q);
    for (int k = 0; k < 3; k++) {
      pk_text(&q, (const char *[]){"a", "b", "c"}[k]);
      pk_tensor(&q, &g, "FloatStorage", "0", n, 0, 1, &n, (size_t[]){1});
    }
    pk_end_dict(&q);
    zip = archive_of(&q, n * 4, 0, size);
    free(q.bytes);
    return zip;
  }
  case 43: return PICKLE("ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
                         "ctorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuKXtQ"
                         "K\x00K\x02\x85K\x01\x85\x89NtR.", size);
  default: return PICKLE("}X\x01\x00\x00\x00kK\x01s.", size);
  }
}

START_TEST(the_base_of_the_hostile_files_loads) {
  tweak t = {.bad = -1};
  size_t size;
  unsigned char *zip = base_archive(&t, &size);
  mi_model *model;
  TU_OK(mi_model_load_memory(&model, zip, size, NULL));
  mi_config c = config_of(model);
  ck_assert_uint_eq(c.n_heads, 2);
  ck_assert_uint_eq(c.d_vocab, 3);
  mi_model_free(model);
  free(zip);
  /* A few views repeating the storage are within bounds (a tied embedding). */
  t.repeat = 1;
  zip = base_archive(&t, &size);
  TU_OK(mi_model_load_memory(&model, zip, size, NULL));
  mi_model_free(model);
  free(zip);
}
END_TEST

START_TEST(hostile_files_fail_with_their_status) {
  const hostile *c = &HOSTILE[_i];
  size_t size;
  unsigned char *bytes = hostile_bytes(_i, &size);
  ck_assert(bytes != NULL);
  mi_model *model = (mi_model *)1;
  mi_status status = mi_model_load_memory(&model, bytes, size, NULL);
  ck_assert_msg(status == c->status, "%s: got %s (%s), wanted %s", c->what,
                mi_status_str(status), mi_last_error(), mi_status_str(c->status));
  ck_assert_msg(strstr(mi_last_error(), c->says) != NULL, "%s: message '%s' lacks '%s'",
                c->what, mi_last_error(), c->says);
  ck_assert_ptr_null(model);
  free(bytes);
}
END_TEST

/* ---- archives written by real torch.save ---------------------------------------- */

/*
 * Tolerances against the fixtures' float64 reference (tools/make_torch_fixtures.py),
 * computed from the same stored weights: what differs is libmi's float32
 * arithmetic, products of inner length <= 8 (d_model) rounding to ~6e-8
 * relative, LayerNorm and softmax in double: measured below 1e-6 of the
 * logits' scale. 1e-4 of the scale (the figure) leaves a hundred
 * times that and is far below a real error (a bias, scale, mask or W_pos in
 * the wrong place moves logits by a tenth of their scale). Patterns are
 * probabilities: 1e-5 absolute. Circuit norms and copying scores come from
 * float32 factors through double: 1e-5 relative, 1e-4 absolute.
 */
#define LOGIT_TOL 1e-4
#define PATTERN_TOL 1e-5
#define NORM_TOL 1e-5
#define SCORE_TOL 1e-4

static json_t *fixture_json(const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/torch/%s.json", getenv("MI_TEST_DATA"), name);
  json_error_t err;
  json_t *ref = json_load_file(path, 0, &err);
  ck_assert_msg(ref != NULL, "%s: %s", path, err.text);
  return ref;
}

static mi_model *fixture_model(const char *name, const char *ext, const json_t *ref) {
  char path[4096];
  snprintf(path, sizeof path, "%s/torch/%s.%s", getenv("MI_TEST_DATA"), name, ext);
  const json_t *cfg = json_object_get(ref, "config");
  mi_load_options o = raw_options();
  if (strcmp(json_string_value(json_object_get(cfg, "layout")), "gpt2") == 0)
    o.n_heads = (size_t)json_integer_value(json_object_get(cfg, "n_heads"));
  if (strcmp(json_string_value(json_object_get(cfg, "positional")), "shortformer") == 0)
    o.positional = MI_POSITIONAL_SHORTFORMER;
  mi_model *model;
  TU_OK(mi_model_load(&model, path, &o));
  return model;
}

/* The model's logits and patterns against the reference, and the .pth's
 * logits against the .safetensors file's, bit for bit. */
static void check_sequences(const mi_model *pth, const mi_model *st, const json_t *ref,
                            const char *name) {
  mi_config c = config_of(pth);
  size_t i;
  json_t *seq;
  double worst = 0, worst_pattern = 0;
  json_array_foreach(json_object_get(ref, "sequences"), i, seq) {
    const json_t *toks = json_object_get(seq, "tokens");
    size_t n = json_array_size(toks), V = c.d_vocab, HN = c.n_layers * c.n_heads * n * n;
    size_t *tokens = malloc(n * sizeof *tokens);
    float *logits = malloc(n * V * sizeof *logits), *again = malloc(n * V * sizeof *again);
    float *patterns = malloc(HN * sizeof *patterns);
    for (size_t t = 0; t < n; t++)
      tokens[t] = (size_t)json_integer_value(json_array_get(toks, t));
    mi_forward_extras extras;
    mi_forward_extras_init(&extras, sizeof extras);
    extras.patterns = patterns;
    extras.patterns_count = HN;
    TU_OK(mi_model_forward(logits, V, pth, tokens, n, &extras));
    TU_OK(mi_model_forward(again, V, st, tokens, n, NULL));
    ck_assert_msg(memcmp(logits, again, n * V * sizeof *logits) == 0,
                  "%s: the .pth's logits differ from the .safetensors'", name);
    double scale = 0;
    const json_t *rows = json_object_get(seq, "logits");
    for (size_t t = 0; t < n; t++)
      for (size_t j = 0; j < V; j++)
        scale = fmax(scale, fabs(json_number_value(json_array_get(json_array_get(rows, t), j))));
    for (size_t t = 0; t < n; t++)
      for (size_t j = 0; j < V; j++) {
        double want = json_number_value(json_array_get(json_array_get(rows, t), j));
        double diff = fabs(logits[t * V + j] - want) / scale;
        worst = fmax(worst, diff);
        ck_assert_msg(diff <= LOGIT_TOL, "%s sequence %zu position %zu logit %zu: %.8g, "
                      "reference %.8g", name, i, t, j, (double)logits[t * V + j], want);
      }
    const json_t *ref_patterns = json_object_get(seq, "patterns");
    for (size_t l = 0; l < c.n_layers; l++)
      for (size_t h = 0; h < c.n_heads; h++)
        for (size_t t = 0; t < n; t++)
          for (size_t s = 0; s < n; s++) {
            const json_t *row = json_array_get(
                json_array_get(json_array_get(ref_patterns, l), h), t);
            double want = json_number_value(json_array_get(row, s));
            double got = patterns[((l * c.n_heads + h) * n + t) * n + s];
            worst_pattern = fmax(worst_pattern, fabs(got - want));
            ck_assert_msg(fabs(got - want) <= PATTERN_TOL, "%s sequence %zu head %zu.%zu "
                          "pattern [%zu, %zu]: %.8g, reference %.8g", name, i, l, h, t, s,
                          got, want);
          }
    free(tokens);
    free(logits);
    free(again);
    free(patterns);
  }
  printf("%s: logits within %.2g of their scale, patterns within %.2g\n", name, worst,
         worst_pattern);
}

/* Each head's raw token QK and OV circuits against the reference. */
static void check_heads(const mi_model *model, const json_t *ref, const char *name) {
  size_t i;
  json_t *head;
  json_array_foreach(json_object_get(ref, "heads"), i, head) {
    size_t l = (size_t)json_integer_value(json_object_get(head, "layer"));
    size_t h = (size_t)json_integer_value(json_object_get(head, "head"));
    mi_circuit *qk, *ov;
    TU_OK(mi_circuit_qk(&qk, model, l, h, MI_EMBED_TOKEN, MI_EMBED_TOKEN, 0));
    TU_OK(mi_circuit_ov(&ov, model, l, h));
    double qk_norm, ov_norm;
    TU_OK(mi_circuit_frobenius_norm(&qk_norm, qk));
    TU_OK(mi_circuit_frobenius_norm(&ov_norm, ov));
    mi_eigen_summary summary = {.struct_size = sizeof summary};
    TU_OK(mi_circuit_eigen_summary(&summary, ov));
    double want_qk = json_number_value(json_object_get(head, "qk_frobenius"));
    double want_ov = json_number_value(json_object_get(head, "ov_frobenius"));
    double want_score = json_number_value(json_object_get(head, "ov_copying_score"));
    ck_assert_msg(fabs(qk_norm - want_qk) <= NORM_TOL * want_qk, "%s head %zu.%zu: |QK| "
                  "%.8g, reference %.8g", name, l, h, qk_norm, want_qk);
    ck_assert_msg(fabs(ov_norm - want_ov) <= NORM_TOL * want_ov, "%s head %zu.%zu: |OV| "
                  "%.8g, reference %.8g", name, l, h, ov_norm, want_ov);
    ck_assert_msg(fabs(summary.copying_score - want_score) <= SCORE_TOL, "%s head %zu.%zu: "
                  "copying score %.8g, reference %.8g", name, l, h, summary.copying_score,
                  want_score);
    mi_circuit_free(qk);
    mi_circuit_free(ov);
  }
}

static void check_fixture(const char *name) {
  json_t *ref = fixture_json(name);
  mi_model *pth = fixture_model(name, "pth", ref), *st = fixture_model(name, "safetensors", ref);
  assert_same_weights(pth, st);
  check_sequences(pth, st, ref, name);
  check_heads(pth, ref, name);
  mi_model_free(pth);
  mi_model_free(st);
  json_decref(ref);
}

static const char *const STANDARD_FIXTURES[] = {"tl_standard_f32", "gpt2_f32"};
static const char *const SHORTFORMER_FIXTURES[] = {
    "tl_shortformer_ln_f16", "tl_shortformer_ln_f32", "tl_shortformer_noln_f16",
    "tl_shortformer_noln_f32"};

START_TEST(torch_saved_fixtures_match_the_reference) { check_fixture(STANDARD_FIXTURES[_i]); }
END_TEST

START_TEST(torch_saved_shortformers_match_the_reference) {
  check_fixture(SHORTFORMER_FIXTURES[_i]);
}
END_TEST

/* The GPT-2 fixture's lm_head.weight is wte.weight itself: one storage, two views. */
START_TEST(a_tied_lm_head_shares_its_storage) {
  json_t *ref = fixture_json("gpt2_f32");
  mi_model *model = fixture_model("gpt2_f32", "pth", ref);
  size_t V, D, r, k;
  double *WE = tu_weight(model, MI_W_E, 0, 0, &V, &D), *WU = tu_weight(model, MI_W_U, 0, 0, &r, &k);
  for (size_t v = 0; v < V; v++)
    for (size_t d = 0; d < D; d++)
      ck_assert(WU[d * V + v] == WE[v * D + d]);
  free(WE);
  free(WU);
  mi_model_free(model);
  json_decref(ref);
}
END_TEST

static Suite *torchfile_suite(void) {
  Suite *s = suite_create("torchfile");
  TCase *tc = tcase_create("archives");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, tl_archives_round_trip, 0, (int)(4 * N_LAYOUTS));
  tcase_add_loop_test(tc, gpt2_archives_round_trip, 0, 4);
  tcase_add_loop_test(tc, files_that_are_not_models_say_what_they_are, 0,
                      (int)(sizeof NOT_MODELS / sizeof NOT_MODELS[0]));
  suite_add_tcase(s, tc);
  TCase *bad = tcase_create("hostile archives");
  tcase_set_timeout(bad, 60);
  tcase_add_test(bad, the_base_of_the_hostile_files_loads);
  tcase_add_loop_test(bad, hostile_files_fail_with_their_status, 0, N_HOSTILE);
  suite_add_tcase(s, bad);
  TCase *fx = tcase_create("torch.save fixtures");
  tcase_add_loop_test(fx, torch_saved_fixtures_match_the_reference, 0, 2);
  tcase_add_test(fx, a_tied_lm_head_shares_its_storage);
  tcase_add_loop_test(fx, torch_saved_shortformers_match_the_reference, 0, 4);
  suite_add_tcase(s, fx);
  return s;
}

int main(void) { return tu_run_suite(torchfile_suite()); }
