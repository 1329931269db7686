/*
 * test_reliability.c: issue 10's reproducers, each of which crashed, hung,
 * printed or answered MI_OK with garbage before: non-finite weights, huge
 * finite weights whose products overflow, files that block or shrink while
 * they load, deep models, colliding vocabulary tokens, n_ctx = 1 reports
 * and weights changed under live circuits.
 */
#define _GNU_SOURCE /* syscall, mkfifo, pthread_attr_setstacksize */
#include "model_files.h"
#include "pth_writer.h"
#include "st_writer.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SAYS(text)                                                                 \
  ck_assert_msg(strstr(mi_last_error(), (text)) != NULL, "'%s' does not say '%s'", \
                mi_last_error(), (text))

/* ---- stderr capture ------------------------------------------------------------ */

/* Points fd 2 at a temporary file; stderr_end gives what was written. */
static int saved_stderr = -1;
static FILE *captured;

static void stderr_begin(void) {
  captured = tmpfile();
  ck_assert_ptr_nonnull(captured);
  fflush(stderr);
  saved_stderr = dup(2);
  ck_assert_int_ge(saved_stderr, 0);
  ck_assert_int_ge(dup2(fileno(captured), 2), 0);
}

static long stderr_end(char *text, size_t size) {
  fflush(stderr);
  dup2(saved_stderr, 2);
  close(saved_stderr);
  long n = ftell(captured);
  rewind(captured);
  size_t got = fread(text, 1, size - 1, captured);
  text[got] = '\0';
  fclose(captured);
  return n;
}

/* ---- non-finite weights ---------------------------------------------------------- */

static mi_model *small_model(unsigned parts) {
  mi_config c = tu_config(2, 2, 4, 2, 8, 4, parts);
  mi_model *model = tu_random_model(&c, 7);
  ck_assert_ptr_nonnull(model);
  return model;
}

START_TEST(nonfinite_weights_are_refused) {
  mi_model *model = small_model(MI_PART_LN);
  float w_e[8 * 4];
  for (int i = 0; i < 32; i++)
    w_e[i] = (float)i;
  w_e[1 * 4 + 2] = INFINITY;
  TU_FAILS(MI_ERR_NONFINITE, mi_model_set_weight(model, MI_W_E, 0, 0, MI_DTYPE_F32, w_e, 4));
  SAYS("W_E");
  SAYS("[1, 2]");
  SAYS("+inf");
  /* The copy went back to its initial zeros: no infinity stays behind. */
  float back[8 * 4];
  TU_OK(mi_model_get_weight(back, 4, model, MI_W_E, 0, 0));
  for (int i = 0; i < 32; i++)
    ck_assert_float_eq(back[i], 0.0f);
  float w_q[4 * 2] = {1, 2, 3, 4, 5, 6, 7, NAN};
  TU_FAILS(MI_ERR_NONFINITE, mi_model_set_weight(model, MI_W_Q, 1, 1, MI_DTYPE_F32, w_q, 2));
  SAYS("W_Q (layer 1, head 1): element [3, 1] is NaN");
  /* A finite float64 beyond float32's range is an infinity once stored. */
  double big[4] = {1, 2, 1e300, 4};
  TU_FAILS(MI_ERR_NONFINITE, mi_model_set_weight(model, MI_LN1_W, 0, 0, MI_DTYPE_F64, big, 4));
  SAYS("float64 beyond float32's range");
  TU_OK(mi_model_get_weight(back, 4, model, MI_LN1_W, 0, 0));
  for (int i = 0; i < 4; i++) /* a LayerNorm scale's initial value is 1 */
    ck_assert_float_eq(back[i], 1.0f);
  uint16_t b_q[2] = {0x3c00, 0x7e00}; /* 1 and a float16 NaN */
  mi_model_free(model);
  model = small_model(MI_PART_QKV_BIAS);
  TU_FAILS(MI_ERR_NONFINITE, mi_model_set_weight(model, MI_B_Q, 0, 1, MI_DTYPE_F16, b_q, 2));
  mi_model_free(model);
  float A[2] = {1, NAN}, B[2] = {1, 1};
  mi_circuit *circuit;
  TU_FAILS(MI_ERR_NONFINITE, mi_circuit_from_factors(&circuit, 2, 1, 2, A, 1, B, 2));
  SAYS("factor A: element [1, 0]");
  ck_assert_ptr_null(circuit);
}
END_TEST

/* A file whose W_E holds one +Inf is refused by the loader, naming it. */
START_TEST(nonfinite_file_is_refused) {
  mi_model *model = small_model(0);
  st_writer *st = write_tl(model, "F32", false, NULL);
  mi_model_free(model);
  size_t size;
  unsigned char *bytes = st_serialize(st, &size);
  ck_assert_ptr_nonnull(bytes);
  /* The data follow the header in the order the tensors were added. */
  uint64_t header;
  memcpy(&header, bytes, 8);
  size_t at = 8 + (size_t)header;
  for (size_t i = 0; i < st_count(st); i++) {
    const char *name, *dtype;
    size_t rank, n_bytes;
    const size_t *shape;
    const unsigned char *data;
    st_get(st, i, &name, &dtype, &rank, &shape, &data, &n_bytes);
    if (strcmp(name, "embed.W_E") == 0)
      break;
    at += n_bytes;
  }
  const float inf = INFINITY;
  memcpy(bytes + at + 5 * sizeof inf, &inf, sizeof inf); /* W_E[1][1] of d_model 4 */
  TU_FAILS(MI_ERR_NONFINITE, mi_model_load_memory(&model, bytes, size, NULL));
  SAYS("W_E");
  SAYS("[1, 1]");
  ck_assert_ptr_null(model);
  /* From a file, where float32 tensors are read straight into the model. */
  char path[512];
  tmp_path(path, sizeof path, "reliability_nonfinite.safetensors");
  ck_assert(st_write_bytes(path, bytes, size));
  TU_FAILS(MI_ERR_NONFINITE, mi_model_load(&model, path, NULL));
  SAYS("W_E");
  SAYS("[1, 1]");
  SAYS("+inf");
  ck_assert_ptr_null(model);
  unlink(path);
  free(bytes);
  st_writer_free(st);
}
END_TEST

static int count_path(const mi_path *path, void *user) {
  (void)path, (void)user;
  return 0;
}

static int count_part(const mi_attribution_part *part, void *user) {
  (void)part, (void)user;
  return 0;
}

/*
 * Finite weights near 1e30 make every product overflow float32. Before,
 * eigenvalues corrupted the heap inside dgeev and LAPACK printed to stderr;
 * NaN came back as "out of memory"; norms and scores as 0. Now each query is
 * MI_ERR_NUMERIC and nothing is printed.
 */
START_TEST(overflowing_products_are_numeric_errors) {
  mi_config c = tu_config(2, 1, 4, 2, 6, 4, MI_PART_POS_EMBED);
  mi_model *model;
  TU_OK(mi_model_create(&model, &c));
  float big[6 * 4];
  for (int i = 0; i < 24; i++)
    big[i] = (i % 2 ? 1e30f : -1e30f) * (float)(1 + i % 3);
  TU_OK(mi_model_set_weight(model, MI_W_E, 0, 0, MI_DTYPE_F32, big, 4));
  TU_OK(mi_model_set_weight(model, MI_W_U, 0, 0, MI_DTYPE_F32, big, 6));
  for (size_t l = 0; l < 2; l++) {
    TU_OK(mi_model_set_weight(model, MI_W_V, l, 0, MI_DTYPE_F32, big, 2));
    TU_OK(mi_model_set_weight(model, MI_W_O, l, 0, MI_DTYPE_F32, big, 4));
    TU_OK(mi_model_set_weight(model, MI_W_Q, l, 0, MI_DTYPE_F32, big, 2));
    TU_OK(mi_model_set_weight(model, MI_W_K, l, 0, MI_DTYPE_F32, big, 2));
  }
  TU_OK(mi_model_process(model, 0));
  stderr_begin();
  mi_circuit *ov = NULL, *qk = NULL;
  mi_status s_ov = mi_circuit_ov(&ov, model, 0, 0);
  double re[2], im[2], norm = -1, sv[2];
  mi_status s_eig = ov ? mi_circuit_eigenvalues(re, im, 2, ov) : MI_OK;
  mi_status s_norm = ov ? mi_circuit_frobenius_norm(&norm, ov) : MI_OK;
  mi_status s_sv = ov ? mi_circuit_singular_values(sv, 2, ov) : MI_OK;
  size_t index[6 * 2], rank[6];
  float value[6 * 2];
  mi_status s_topk = ov ? mi_circuit_topk(index, value, 2, ov, 2, 0, 0, 6) : MI_OK;
  mi_status s_rank = ov ? mi_circuit_diag_rank(rank, ov, 0, 6) : MI_OK;
  mi_status s_qk = mi_circuit_qk(&qk, model, 1, 0, MI_EMBED_TOKEN, MI_EMBED_TOKEN, 0);
  mi_status s_qk_eig = qk ? mi_circuit_eigenvalues(re, im, 2, qk) : MI_OK;
  double scores[2 * 2];
  mi_status s_comp = mi_model_composition_scores(scores, 4, model, MI_COMPOSE_V);
  float logits[3 * 6];
  size_t tokens[3] = {0, 1, 2};
  mi_status s_fwd = mi_model_forward(logits, 6, model, tokens, 3, NULL);
  mi_head_report lines[2];
  lines[0].struct_size = sizeof lines[0];
  mi_status s_report = mi_model_head_report(lines, 2, model, NULL);
  mi_status s_paths = mi_model_paths(NULL, model, 2, 0, count_path, NULL);
  size_t logit_token = 0;
  mi_attribution_options options;
  mi_attribution_options_init(&options, sizeof options);
  options.logit_tokens = &logit_token;
  options.positions = &logit_token;
  options.n_positions = 1;
  mi_status s_attr = mi_model_attribute(NULL, model, tokens, 1, &options, count_part, NULL);
  char text[512];
  long printed = stderr_end(text, sizeof text);
  ck_assert_msg(printed == 0, "the library printed %ld bytes: %s", printed, text);
  TU_OK(s_ov);
  ck_assert_int_eq(s_eig, MI_ERR_NUMERIC);
  ck_assert_int_eq(s_norm, MI_ERR_NUMERIC);
  ck_assert_int_eq(s_sv, MI_ERR_NUMERIC);
  ck_assert_int_eq(s_topk, MI_ERR_NUMERIC);
  ck_assert_int_eq(s_rank, MI_ERR_NUMERIC);
  TU_OK(s_qk);
  ck_assert_int_eq(s_qk_eig, MI_ERR_NUMERIC);
  ck_assert_int_eq(s_comp, MI_ERR_NUMERIC);
  ck_assert_int_eq(s_fwd, MI_ERR_NUMERIC);
  ck_assert_int_eq(s_report, MI_ERR_NUMERIC);
  ck_assert_int_eq(s_paths, MI_ERR_NUMERIC);
  ck_assert_int_eq(s_attr, MI_ERR_NUMERIC);
  /* The messages name what overflowed (eigenvalues: the LAPACK routine). */
  TU_FAILS(MI_ERR_NUMERIC, mi_circuit_eigenvalues(re, im, 2, ov));
  SAYS("LAPACKE_dgeev");
  TU_FAILS(MI_ERR_NUMERIC, mi_model_forward(logits, 6, model, tokens, 3, NULL));
  SAYS("forward");
  mi_circuit_free(ov);
  mi_circuit_free(qk);
  mi_model_free(model);
}
END_TEST

/*
 * Top-k of a line holding NaN came back MI_OK and wrong ([nan 1 2 ... 7]:
 * "(1, 1) (0, nan)"). A circuit from finite factors whose entry 0 is
 * 1e20·1e20 − 1e20·1e20 = ∞ − ∞ in float32 and entry j = j otherwise.
 */
START_TEST(a_nan_entry_is_never_ranked) {
  float A[2 * 2] = {1e20f, 1e20f, 1, 0};
  float B[2 * 8] = {1e20f, 1, 2, 3, 4, 5, 6, 7, -1e20f, 0, 0, 0, 0, 0, 0, 0};
  mi_circuit *circuit;
  TU_OK(mi_circuit_from_factors(&circuit, 2, 2, 8, A, 2, B, 8));
  size_t index[2];
  float value[2];
  TU_FAILS(MI_ERR_NUMERIC, mi_circuit_topk(index, value, 2, circuit, 2, 0, 0, 1));
  SAYS("overflowed");
  /* In double from the factors, entry (0, 0) is exactly 0: it is no error. */
  double entry;
  TU_OK(mi_circuit_entry(&entry, circuit, 0, 0));
  ck_assert(entry == 0.0);
  float row[8];
  TU_FAILS(MI_ERR_NUMERIC, mi_circuit_rows(row, 8, circuit, 0, 1));
  /* Row 1 of A is (1, 0): its line is B's first row, finite, and it ranks. */
  TU_OK(mi_circuit_topk(index, value, 2, circuit, 2, 0, 1, 2));
  ck_assert_uint_eq(index[0], 0); /* 1e20 */
  ck_assert_uint_eq(index[1], 7);
  ck_assert_float_eq(value[1], 7.0f);
  mi_circuit_free(circuit);
  /* Square: the diagonal rank of a row holding NaN is an error too. */
  float C[8] = {1e20f, 1e20f, 1, 0, 0, 1, 1, 1};
  float D[2 * 4] = {1e20f, 1, 0, 0, -1e20f, 0, 1, 0};
  TU_OK(mi_circuit_from_factors(&circuit, 4, 2, 4, C, 2, D, 4));
  size_t ranks[4];
  TU_FAILS(MI_ERR_NUMERIC, mi_circuit_diag_rank(ranks, circuit, 0, 4));
  mi_circuit_free(circuit);
}
END_TEST

/* ---- files that block or shrink --------------------------------------------------- */

START_TEST(fifo_paths_return_at_once) {
  char fifo[512];
  tmp_path(fifo, sizeof fifo, "reliability.fifo");
  unlink(fifo);
  ck_assert_int_eq(mkfifo(fifo, 0600), 0);
  mi_model *model;
  TU_FAILS(MI_ERR_IO, mi_model_load(&model, fifo, NULL));
  SAYS("not a readable regular file");
  model = small_model(0);
  TU_FAILS(MI_ERR_IO, mi_model_load_vocab(model, fifo)); /* used to block in fopen */
  SAYS("not a readable regular file");
  mi_model_free(model);
  unlink(fifo);
}
END_TEST

/*
 * fstat as the loaders see it, interposed: once armed with an inode, the
 * file is truncated to `shrink_to` right after its size was read, exactly
 * as if another process shrank it mid-load. Before, the mapping then raised
 * SIGBUS; reads into owned memory end early instead.
 */
static ino_t armed_inode; /* 0: not armed */
static char armed_file[512];
static off_t shrink_to;
static int shrunk;

__attribute__((visibility("default"))) int fstat(int fd, struct stat *st) {
  int rc = (int)syscall(SYS_fstat, fd, st);
  if (rc == 0 && armed_inode != 0 && st->st_ino == armed_inode) {
    armed_inode = 0;
    shrunk = truncate(armed_file, shrink_to) == 0;
  }
  return rc;
}

static void arm(const char *path, off_t size) {
  struct stat st;
  ck_assert_int_eq(stat(path, &st), 0);
  snprintf(armed_file, sizeof armed_file, "%s", path);
  shrink_to = size;
  shrunk = 0;
  armed_inode = st.st_ino;
}

/* A small TransformerLens model saved as `name` (its path in `path`); owned. */
static st_writer *small_file(char *path, size_t size, const char *name) {
  mi_model *model = small_model(MI_PART_LN);
  st_writer *st = write_tl(model, "F32", false, NULL);
  mi_model_free(model);
  tmp_path(path, size, name);
  ck_assert(st_save(st, path));
  return st;
}

START_TEST(files_shrinking_while_they_load_are_truncated) {
  char path[512];
  st_writer_free(small_file(path, sizeof path, "reliability_shrinks.safetensors"));
  mi_model *model;
  mi_load_options options;
  mi_load_options_init(&options, sizeof options);
  options.flags = MI_LOAD_NO_CONFIG;
  arm(path, 100);
  TU_FAILS(MI_ERR_TRUNCATED, mi_model_load(&model, path, &options));
  ck_assert_msg(shrunk, "the file was not shrunk under the loader");
  SAYS(path);
  SAYS("shrank while it was read: it ends at byte offset 100");
  ck_assert_ptr_null(model);
  /* A vocabulary that shrinks likewise. */
  char vocab[512];
  tmp_path(vocab, sizeof vocab, "reliability_shrinks.txt");
  FILE *f = fopen(vocab, "w");
  ck_assert_ptr_nonnull(f);
  fputs("a\nb\nc\nd\ne\nf\ng\nh\n", f);
  fclose(f);
  model = small_model(0);
  arm(vocab, 3);
  TU_FAILS(MI_ERR_TRUNCATED, mi_model_load_vocab(model, vocab));
  ck_assert(shrunk);
  SAYS("byte offset 3");
  mi_model_free(model);
  unlink(path);
  unlink(vocab);
}
END_TEST

/* A file that shrinks after its header was read: the tensor reads see it. */
START_TEST(files_shrinking_under_their_tensors_are_truncated) {
  char path[512];
  st_writer *st = small_file(path, sizeof path, "reliability_shrinks_late.safetensors");
  mi_model *model;
  size_t size;
  unsigned char *pth = pth_from_st(st, PTH_DESCRIPTOR, &size);
  st_writer_free(st);
  struct stat before;
  ck_assert_int_eq(stat(path, &before), 0);
  mi_load_options options;
  mi_load_options_init(&options, sizeof options);
  options.flags = MI_LOAD_NO_CONFIG;
  /* The last 4 bytes are the last tensor's: the header is whole. */
  arm(path, before.st_size - 4);
  TU_FAILS(MI_ERR_TRUNCATED, mi_model_load(&model, path, &options));
  ck_assert(shrunk);
  SAYS("shrank while it was read");
  ck_assert_ptr_null(model);
  /* An archive cut inside its storages, its directory gone with its end. */
  ck_assert(pth != NULL && st_write_bytes(path, pth, size));
  free(pth);
  arm(path, (off_t)size / 2);
  TU_FAILS(MI_ERR_TRUNCATED, mi_model_load(&model, path, &options));
  ck_assert(shrunk);
  SAYS("shrank while it was read");
  unlink(path);
}
END_TEST

/* ---- peak memory of a load ------------------------------------------------------------ */

/* A "Vm...:" figure of this process, in bytes. */
static double vm_bytes(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  double kib = -1;
  while (f != NULL && fgets(line, sizeof line, f))
    if (strncmp(line, key, strlen(key)) == 0)
      kib = atof(line + strlen(key));
  if (f != NULL)
    fclose(f);
  ck_assert_msg(kib >= 0, "/proc/self/status has no %s", key);
  return kib * 1024;
}

/*
 * How far the resident set rose above where it was while `path` loaded:
 * the high-water mark is reset first (clear_refs 5), and the file's pages
 * are page cache, never resident in the process, so this is what libmi held.
 */
static double load_peak(const char *path) {
  /* Memory the writers freed would otherwise be reused unseen. */
  malloc_trim(0);
  int fd = open("/proc/self/clear_refs", O_WRONLY);
  ck_assert_msg(fd >= 0, "cannot open /proc/self/clear_refs: %s", strerror(errno));
  ck_assert_int_eq(write(fd, "5", 1), 1);
  close(fd);
  double base = vm_bytes("VmRSS:");
  mi_load_options options;
  mi_load_options_init(&options, sizeof options);
  options.flags = MI_LOAD_NO_CONFIG;
  options.n_heads = 4; /* for the GPT-2 file */
  mi_model *model;
  TU_OK(mi_model_load(&model, path, &options));
  double peak = vm_bytes("VmHWM:") - base;
  mi_model_free(model);
  return peak;
}

/*
 * A load holds the weights libmi keeps plus at most one tensor of the file:
 * tensors are read one by one into the model, never the whole file first
 * (which would be weights + file, here weights + 34 MiB against a bound of
 * weights + 16 MiB + 4 MiB). The model: two layers of four heads, d_model
 * 256, d_vocab 16384, so W_E and W_U (16 MiB each) are most of the 34 MiB of
 * weights and the largest tensor of each file. TransformerLens safetensors
 * and .pth (every tensor read straight into the model), and a GPT-2 file with
 * tied W_U (each layer's packed c_attn read whole into the one scratch, to
 * split; W_U transposed from the model's W_E).
 */
/*
 * Loading reads large tensors on several threads, but never starts BLIS:
 * a program may load first and choose its kernels after (BLIS chooses
 * them once, at its first use).
 */
START_TEST(a_load_leaves_blis_unstarted) {
  mi_config c = tu_config(1, 2, 256, 64, 16384, 64, 0); /* W_E: 16 chunks of 1 MiB */
  mi_model *model = tu_random_model(&c, 12);
  char path[512];
  tmp_path(path, sizeof path, "reliability_blis.safetensors");
  st_writer *st = write_tl(model, "F32", false, NULL);
  ck_assert(st_save(st, path));
  st_writer_free(st);
  mi_model_free(model);
  TU_OK(mi_set_num_threads(2));
  TU_OK(mi_model_load(&model, path, NULL));
  TU_OK(mi_blis_select_fast_kernels());
  mi_model_free(model);
  unlink(path);
}
END_TEST

START_TEST(a_load_peaks_at_the_weights_plus_one_tensor) {
  mi_config c = tu_config(2, 4, 256, 64, 16384, 64, MI_PART_LN | MI_PART_QKV_BIAS |
                                                        MI_PART_OUT_BIAS | MI_PART_POS_EMBED);
  mi_model *model = tu_random_model(&c, 11);
  ck_assert_ptr_nonnull(model);
  double weights = 0;
  for (int w = 0; w < MI_WEIGHT_COUNT; w++) {
    size_t rows, cols, layers, heads;
    if (mi_model_weight_shape(&rows, &cols, model, (mi_weight)w) != MI_OK)
      continue;
    copies_of(&c, (mi_weight)w, &layers, &heads);
    weights += 4.0 * (double)(rows * cols * layers * heads);
  }
  const double largest = 4.0 * 16384 * 256, margin = 4.0 * 1048576;
  char paths[3][512];
  tmp_path(paths[0], sizeof paths[0], "reliability_peak.safetensors");
  tmp_path(paths[1], sizeof paths[1], "reliability_peak.pth");
  tmp_path(paths[2], sizeof paths[2], "reliability_peak_gpt2.safetensors");
  st_writer *st = write_tl(model, "F32", false, NULL);
  size_t size;
  unsigned char *pth = pth_from_st(st, PTH_DESCRIPTOR, &size);
  ck_assert(st_save(st, paths[0]) && pth != NULL && st_write_bytes(paths[1], pth, size));
  free(pth);
  st_writer_free(st);
  tie_unembedding(model);
  st = write_gpt2(model, "F32", "", false, false);
  ck_assert(st_save(st, paths[2]));
  st_writer_free(st);
  mi_model_free(model);
#if defined(__SANITIZE_ADDRESS__)
  /* ASan's shadow adds an eighth of what is touched, its allocator more. */
  const double scale = 1.25;
#else
  const double scale = 1.0;
#endif
  double bound = scale * (weights + largest) + margin;
  for (int i = 0; i < 3; i++) {
    double peak = load_peak(paths[i]);
    ck_assert_msg(peak <= bound, "loading %s rose %.1f MiB, above the weights' %.1f MiB + "
                  "the largest tensor's %.1f MiB + %.1f MiB", paths[i], peak / 1048576,
                  weights / 1048576, largest / 1048576, (bound - weights - largest) / 1048576);
    /* And it did hold the weights: the measure sees what it should. */
    ck_assert_msg(peak >= weights, "loading %s rose only %.1f MiB, below the weights' "
                  "%.1f MiB: the measure is broken", paths[i], peak / 1048576,
                  weights / 1048576);
    unlink(paths[i]);
  }
}
END_TEST

/* ---- deep models -------------------------------------------------------------------- */

/* d_model = d_head = 1, one head, two tokens: a layer costs next to nothing. */
static mi_model *deep_model(size_t layers) {
  mi_config c = tu_config(layers, 1, 1, 1, 2, 0, 0);
  mi_model *model;
  TU_OK(mi_model_create(&model, &c));
  float e[2] = {1, -1}, u[2] = {1, 2}, small = 0.01f, one = 1;
  TU_OK(mi_model_set_weight(model, MI_W_E, 0, 0, MI_DTYPE_F32, e, 1));
  TU_OK(mi_model_set_weight(model, MI_W_U, 0, 0, MI_DTYPE_F32, u, 2));
  for (size_t l = 0; l < layers; l++) {
    TU_OK(mi_model_set_weight(model, MI_W_Q, l, 0, MI_DTYPE_F32, &one, 1));
    TU_OK(mi_model_set_weight(model, MI_W_K, l, 0, MI_DTYPE_F32, &one, 1));
    TU_OK(mi_model_set_weight(model, MI_W_V, l, 0, MI_DTYPE_F32, &small, 1));
    TU_OK(mi_model_set_weight(model, MI_W_O, l, 0, MI_DTYPE_F32, &small, 1));
  }
  TU_OK(mi_model_process(model, 0));
  return model;
}

typedef struct deepest {
  size_t deepest, parts, stop_at;
  double token_logit;
} deepest;

static int note_part(const mi_attribution_part *part, void *user) {
  deepest *d = user;
  d->parts++;
  if (part->order > d->deepest) {
    d->deepest = part->order;
    d->token_logit = part->token_logit[0];
  }
  return part->order >= d->stop_at; /* the walk goes deepest first: stop there */
}

/*
 * Attribution recursed once per layer and overflowed the stack near 13,000
 * layers. 20,000 layers: the first descent reaches order 20,000 (head
 * (l, 0) of every layer), whose part is the one-token product
 * e·(v·o)^L·u = 1·(1e-4)^20000·1: 0 in double, as the reference says.
 */
START_TEST(attribution_of_a_deep_model) {
  enum { LAYERS = 20000 };
  mi_model *model = deep_model(LAYERS);
  size_t token = 0, logit_token = 1, count;
  mi_attribution_options options;
  mi_attribution_options_init(&options, sizeof options);
  options.logit_tokens = &logit_token;
  deepest d = {0, 0, LAYERS, -1};
  TU_OK(mi_model_attribute(&count, model, &token, 1, &options, note_part, &d));
  ck_assert_uint_eq(d.deepest, LAYERS);
  ck_assert_uint_eq(d.parts, LAYERS + 1);
  ck_assert(fabs(d.token_logit) < 1e-300);
  mi_model_free(model);
}
END_TEST

typedef struct path_depth {
  size_t deepest, stop_at;
} path_depth;

static int note_path(const mi_path *path, void *user) {
  path_depth *d = user;
  if (path->order > d->deepest)
    d->deepest = path->order;
  return path->order >= d->stop_at;
}

typedef struct walk_job {
  mi_model *model;
  size_t layers;
  path_depth depth;
  mi_status status;
} walk_job;

static void *walk_paths(void *arg) {
  walk_job *job = arg;
  job->status = mi_model_paths(NULL, job->model, job->layers, 0, note_path, &job->depth);
  return NULL;
}

/*
 * The path walk recursed once per depth too. Its scratch grows with
 * layers², so it runs 3,000 layers on a thread with a 512 KiB stack, which
 * a frame a depth would overflow.
 */
START_TEST(paths_of_a_deep_model) {
  enum { LAYERS = 3000 };
  walk_job job = {deep_model(LAYERS), LAYERS, {0, LAYERS}, MI_ERR_STATE};
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  ck_assert_int_eq(pthread_attr_setstacksize(&attr, 512 * 1024), 0);
  pthread_t thread;
  ck_assert_int_eq(pthread_create(&thread, &attr, walk_paths, &job), 0);
  pthread_join(thread, NULL);
  pthread_attr_destroy(&attr);
  TU_OK(job.status);
  ck_assert_uint_eq(job.depth.deepest, LAYERS);
  mi_model_free(job.model);
}
END_TEST

/* ---- the vocabulary's hash -------------------------------------------------------- */

/*
 * n distinct tokens (one a line) whose FNV-1a hashes agree in their low 17
 * bits, so that they share one slot of any table up to 2^17 slots, as the
 * FNV-1a table had. Low bits of FNV-1a depend only on low bits: a prefix,
 * then a byte c1 chosen so bits 8..16 of the state match the target's, then
 * c2 fixing bits 0..7.
 */
static char *colliding_tokens(size_t n, size_t *size) {
  const uint64_t prime = 0x100000001b3ull, mask = (1u << 17) - 1;
  uint64_t inverse = prime; /* prime⁻¹ mod 2^64 by Newton's iteration */
  for (int i = 0; i < 6; i++)
    inverse *= 2 - prime * inverse;
  const uint64_t want = 0; /* the target state, before the last multiply */
  char *text = malloc(n * 24);
  ck_assert_ptr_nonnull(text);
  size_t used = 0, made = 0;
  for (uint64_t prefix = 0; made < n; prefix++) {
    char head[20];
    int len = snprintf(head, sizeof head, "t%llx", (unsigned long long)prefix);
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < len; i++)
      h = (h ^ (unsigned char)head[i]) * prime;
    for (unsigned c1 = 0x21; c1 < 0x7f && made < n; c1++) {
      uint64_t h1 = (h ^ c1) * prime;
      if (((h1 ^ want * inverse) & mask & ~0xffull) != 0)
        continue;
      unsigned c2 = (unsigned)((h1 ^ want * inverse) & 0xff);
      if (c2 == '\n' || c2 == '\r' || c2 == 0)
        continue;
      memcpy(text + used, head, (size_t)len);
      text[used + len] = (char)c1;
      text[used + len + 1] = (char)c2;
      text[used + len + 2] = '\n';
      used += (size_t)len + 3;
      made++;
      break; /* one token a prefix keeps them distinct */
    }
  }
  *size = used;
  return text;
}

static double seconds_to_load(size_t n) {
  size_t size;
  char *text = colliding_tokens(n, &size);
  mi_config c = tu_config(1, 1, 2, 2, n, 0, 0);
  double best = 1e30;
  for (int round = 0; round < 3; round++) {
    mi_model *model;
    TU_OK(mi_model_create(&model, &c));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    TU_OK(mi_model_load_vocab_memory(model, text, size));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    best = s < best ? s : best;
    mi_model_free(model);
  }
  free(text);
  return best;
}

/*
 * FNV-1a let such a file load in quadratic time (4.4x per doubling then);
 * the keyed hash scatters them. The best of three loads of 16,384 and of
 * 32,768 tokens: linear is 2x, quadratic 4x; 3 leaves room for noise.
 */
START_TEST(colliding_tokens_load_in_linear_time) {
  double small = seconds_to_load(16384), large = seconds_to_load(32768);
  ck_assert_msg(large / small < 3.0, "doubling the tokens took %.2fx (%.4f s, %.4f s)",
                large / small, small, large);
}
END_TEST

/* ---- n_ctx = 1 and live circuits ---------------------------------------------------- */

START_TEST(a_one_position_model_reports_nan) {
  mi_config c = tu_config(1, 2, 4, 2, 8, 1, MI_PART_POS_EMBED);
  mi_model *model = tu_random_model(&c, 3);
  TU_OK(mi_model_process(model, 0));
  mi_head_report lines[2];
  lines[0].struct_size = sizeof lines[0];
  TU_OK(mi_model_head_report(lines, 2, model, NULL));
  for (int i = 0; i < 2; i++) {
    ck_assert(isnan(lines[i].prev_token_share));
    ck_assert(isnan(lines[i].prev_token_attention));
  }
  mi_model_free(model);
}
END_TEST

/*
 * A direct circuit reads W_E and W_U in place; an OV circuit holds products
 * made when it was built. Changing a weight under them changed the first
 * silently and not the second: refused while any circuit lives.
 */
START_TEST(weights_cannot_change_under_live_circuits) {
  mi_model *model = small_model(0);
  mi_circuit *direct;
  TU_OK(mi_circuit_direct(&direct, model));
  float w_e[8 * 4] = {0};
  TU_FAILS(MI_ERR_STATE, mi_model_set_weight(model, MI_W_E, 0, 0, MI_DTYPE_F32, w_e, 4));
  SAYS("live circuits");
  TU_FAILS(MI_ERR_STATE, mi_model_process(model, MI_PROCESS_FOLD_LN));
  double before, after;
  TU_OK(mi_circuit_entry(&before, direct, 1, 1));
  mi_circuit_free(direct);
  TU_OK(mi_model_set_weight(model, MI_W_E, 0, 0, MI_DTYPE_F32, w_e, 4));
  TU_OK(mi_circuit_direct(&direct, model));
  TU_OK(mi_circuit_entry(&after, direct, 1, 1));
  ck_assert(before != 0.0 && after == 0.0); /* the new circuit sees the new W_E */
  mi_circuit_free(direct);
  mi_model_free(model);
}
END_TEST

static Suite *reliability_suite(void) {
  Suite *s = suite_create("reliability");
  TCase *numbers = tcase_create("non-finite");
  tcase_add_test(numbers, nonfinite_weights_are_refused);
  tcase_add_test(numbers, nonfinite_file_is_refused);
  tcase_add_test(numbers, overflowing_products_are_numeric_errors);
  tcase_add_test(numbers, a_nan_entry_is_never_ranked);
  suite_add_tcase(s, numbers);
  TCase *files = tcase_create("files");
  tcase_set_timeout(files, 10); /* a FIFO used to block forever */
  tcase_add_test(files, fifo_paths_return_at_once);
  tcase_add_test(files, files_shrinking_while_they_load_are_truncated);
  tcase_add_test(files, files_shrinking_under_their_tensors_are_truncated);
  suite_add_tcase(s, files);
  TCase *memory = tcase_create("memory");
  tcase_set_timeout(memory, 60);
  tcase_add_test(memory, a_load_peaks_at_the_weights_plus_one_tensor);
  tcase_add_test(memory, a_load_leaves_blis_unstarted);
  suite_add_tcase(s, memory);
  TCase *scale = tcase_create("scale");
  tcase_set_timeout(scale, 120);
  tcase_add_test(scale, attribution_of_a_deep_model);
  tcase_add_test(scale, paths_of_a_deep_model);
  tcase_add_test(scale, colliding_tokens_load_in_linear_time);
  tcase_add_test(scale, a_one_position_model_reports_nan);
  tcase_add_test(scale, weights_cannot_change_under_live_circuits);
  suite_add_tcase(s, scale);
  return s;
}

int main(void) { return tu_run_suite(reliability_suite()); }
