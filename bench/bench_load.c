/*
 * bench_load: loading a GPT-2-small-shaped TransformerLens state dict
 * (d_vocab 50257, d_model 768, 12 layers of 12 heads of 64, n_ctx 1024,
 * attention only, LayerNorm and biases, float32: about 430 MB) from a
 * torch.save archive against the same tensors in a .safetensors file.
 *
 *   build/bench/bench_load [--rounds R] [--dir DIR] [--keep]
 *
 * Both files are written into DIR (default $TMPDIR or /tmp) by the tests'
 * writers, then each round loads each file once (mi_model_load, default
 * options: LayerNorm folded), the order alternating between rounds, each
 * load in a fresh process (posix_spawn of this program with --measure, so
 * no fork after BLIS and every peak is the load's own). The child reports
 * the load's wall time and CPU time (user + system, of the loading thread
 * alone: on a shared machine the wall time mostly measures the others), its
 * peak resident memory (VmHWM), and the peak of
 * its anonymous memory (resident minus file-backed pages, sampled every
 * millisecond by a thread): the mapped file's pages are page cache, what libmi
 * allocates is the anonymous part. --keep leaves the files for another run.
 *
 * A third way to load the .safetensors is today's read path's baseline:
 * the file mmap'd by the bench and handed to mi_model_load_memory, as
 * mi_model_load did before it read files with pread into memory it owns
 * (issue 10: a file truncated under a mapping raises SIGBUS). The
 * ".safetensors / mmap" ratio is the cost of that safety. Run against an
 * older libmi (LD_LIBRARY_PATH) for the cost of the finite check too.
 *
 * A fourth, "pread", is the floor: the same .safetensors file's bytes read
 * with pread into fresh anonymous memory advised for huge pages (what
 * mi_model_load did before it read each tensor into the model), nothing
 * else. ".safetensors / pread" is how far a load is from memory speed.
 * A fifth, "GPT-2 names", is the same shapes as a Hugging Face checkpoint
 * (packed c_attn split through the one-tensor scratch, W_U tied to W_E, so
 * the file is 261 MiB for the same 406 MiB of weights).
 * CPU time is the whole process's (user + system, every thread: a load
 * reads its large tensors on all online cores), less the sampler's share
 * is negligible.
 */
#define _GNU_SOURCE
#include "../tests/pth_writer.h"
#include "bench_util.h"

#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

enum { V = 50257, D = 768, L = 12, H = 12, DH = 64, T = 1024 };

/* ---- the child: one load ---------------------------------------------------------- */

static long page_kb;

/* Resident and file-backed (shared) kB from /proc/self/statm. */
static void statm(long *resident, long *shared) {
  FILE *f = fopen("/proc/self/statm", "r");
  long size = 0;
  *resident = *shared = 0;
  if (f != NULL) {
    if (fscanf(f, "%ld %ld %ld", &size, resident, shared) != 3)
      *resident = *shared = 0;
    fclose(f);
  }
  *resident *= page_kb;
  *shared *= page_kb;
}

static long status_kb(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (f != NULL && fgets(line, sizeof line, f))
    if (strncmp(line, key, strlen(key)) == 0)
      kb = atol(line + strlen(key) + 1);
  if (f != NULL)
    fclose(f);
  return kb;
}

static atomic_int sampling;
static long peak_anon_kb;

static void *sampler(void *arg) {
  (void)arg;
  struct timespec pause = {0, 1000000};
  while (atomic_load(&sampling)) {
    long resident, shared;
    statm(&resident, &shared);
    if (resident - shared > peak_anon_kb)
      peak_anon_kb = resident - shared;
    nanosleep(&pause, NULL);
  }
  return NULL;
}

/* Bytes of float32 weights the model keeps, and its largest one tensor's. */
static void weight_bytes(const mi_model *model, double *total, double *largest) {
  mi_config c;
  mi_config_init(&c, sizeof c);
  bench_check(mi_model_get_config(&c, model), "config");
  *total = *largest = 0;
  for (int w = 0; w < MI_WEIGHT_COUNT; w++) {
    size_t rows, cols;
    if (mi_model_weight_shape(&rows, &cols, model, (mi_weight)w) != MI_OK)
      continue;
    bool per_head = w == MI_W_Q || w == MI_W_O || w == MI_B_Q;
    bool per_kv = w == MI_W_K || w == MI_W_V || w == MI_B_K || w == MI_B_V;
    bool per_layer = per_head || per_kv || w == MI_B_O || w == MI_LN1_W || w == MI_LN1_B;
    double one = 4.0 * (double)rows * (double)cols;
    double stacked = one * (per_head ? (double)c.n_heads : per_kv ? (double)c.n_kv_heads : 1);
    *total += stacked * (per_layer ? (double)c.n_layers : 1);
    /* A file tensor holds one layer's heads together. */
    if (stacked > *largest)
      *largest = stacked;
  }
}

/* CPU seconds (user + system) of the process, every thread. */
static double process_cpu(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)u.ru_utime.tv_sec + (double)u.ru_stime.tv_sec +
         ((double)u.ru_utime.tv_usec + (double)u.ru_stime.tv_usec) * 1e-6;
}

/* How a child loads: mi_model_load, the file mmap'd, or the pread floor. */
enum { WAY_LOAD, WAY_MMAP, WAY_PREAD };

/* The floor: the file's bytes into fresh memory advised for huge pages. */
static void pread_floor(const char *path) {
  int fd = open(path, O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    perror(path);
    exit(1);
  }
  size_t size = (size_t)st.st_size, got = 0;
  unsigned char *bytes =
      mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (bytes == MAP_FAILED) {
    perror("mmap");
    exit(1);
  }
  madvise(bytes, size, MADV_HUGEPAGE);
  while (got < size) {
    ssize_t n = pread(fd, bytes + got, size - got, (off_t)got);
    if (n <= 0) {
      perror("pread");
      exit(1);
    }
    got += (size_t)n;
  }
  close(fd);
  munmap(bytes, size);
}

static mi_status load(mi_model **out, const char *path, int way) {
  if (way == WAY_LOAD)
    return mi_model_load(out, path, NULL);
  int fd = open(path, O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    perror(path);
    exit(1);
  }
  void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) {
    perror("mmap");
    exit(1);
  }
  mi_status status = mi_model_load_memory(out, map, (size_t)st.st_size, NULL);
  munmap(map, (size_t)st.st_size);
  return status;
}

static int measure(const char *path, int way) {
  page_kb = sysconf(_SC_PAGESIZE) / 1024;
  long resident, shared;
  statm(&resident, &shared);
  long base_anon = resident - shared;
  peak_anon_kb = base_anon;
  atomic_store(&sampling, 1);
  pthread_t thread;
  pthread_create(&thread, NULL, sampler, NULL);
  mi_model *model = NULL;
  double t0 = bench_now(), c0 = process_cpu();
  if (way == WAY_PREAD)
    pread_floor(path);
  else
    bench_check(load(&model, path, way), path);
  double seconds = bench_now() - t0, cpu = process_cpu() - c0;
  atomic_store(&sampling, 0);
  pthread_join(thread, NULL);
  double total = 0, largest = 0;
  if (model != NULL)
    weight_bytes(model, &total, &largest);
  printf("%.6f %.6f %ld %ld %ld %.0f %.0f\n", seconds, cpu, status_kb("VmHWM:"),
         peak_anon_kb, base_anon, total, largest);
  mi_model_free(model);
  return 0;
}

/* ---- the parent: files and rounds ---------------------------------------------------- */

static uint64_t rng = 88172645463325252ull;
static float uniform(double scale) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (float)(((double)(rng >> 11) / 9007199254740992.0 * 2 - 1) * scale);
}

static void add(st_writer *st, const char *name, size_t rank, const size_t *shape,
                double scale, double offset) {
  size_t n = 1;
  for (size_t i = 0; i < rank; i++)
    n *= shape[i];
  float *v = malloc(n * sizeof *v);
  if (v == NULL) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  for (size_t i = 0; i < n; i++)
    v[i] = (float)offset + uniform(scale);
  if (!st_add_raw(st, name, "F32", rank, shape, v, n * sizeof *v)) {
    fprintf(stderr, "out of memory writing %s\n", name);
    exit(1);
  }
  free(v);
}

static st_writer *gpt2_small_state_dict(void) {
  st_writer *st = st_writer_new();
  char name[64];
  add(st, "embed.W_E", 2, (size_t[]){V, D}, 0.1, 0);
  add(st, "pos_embed.W_pos", 2, (size_t[]){T, D}, 0.02, 0);
  unsigned char *mask = malloc((size_t)T * T);
  for (size_t i = 0; i < (size_t)T * T; i++)
    mask[i] = i % T <= i / T;
  for (int l = 0; l < L; l++) {
#define NAME(suffix) (snprintf(name, sizeof name, "blocks.%d.%s", l, suffix), name)
    add(st, NAME("ln1.w"), 1, (size_t[]){D}, 0.1, 1);
    add(st, NAME("ln1.b"), 1, (size_t[]){D}, 0.1, 0);
    add(st, NAME("attn.W_Q"), 3, (size_t[]){H, D, DH}, 0.036, 0);
    add(st, NAME("attn.W_K"), 3, (size_t[]){H, D, DH}, 0.036, 0);
    add(st, NAME("attn.W_V"), 3, (size_t[]){H, D, DH}, 0.036, 0);
    add(st, NAME("attn.W_O"), 3, (size_t[]){H, DH, D}, 0.125, 0);
    add(st, NAME("attn.b_Q"), 2, (size_t[]){H, DH}, 0.1, 0);
    add(st, NAME("attn.b_K"), 2, (size_t[]){H, DH}, 0.1, 0);
    add(st, NAME("attn.b_V"), 2, (size_t[]){H, DH}, 0.1, 0);
    add(st, NAME("attn.b_O"), 1, (size_t[]){D}, 0.1, 0);
    st_add_raw(st, NAME("attn.mask"), "BOOL", 2, (size_t[]){T, T}, mask, (size_t)T * T);
    add(st, NAME("attn.IGNORE"), 0, NULL, 0, -1e5);
#undef NAME
  }
  free(mask);
  add(st, "ln_final.w", 1, (size_t[]){D}, 0.1, 1);
  add(st, "ln_final.b", 1, (size_t[]){D}, 0.1, 0);
  add(st, "unembed.W_U", 2, (size_t[]){D, V}, 0.036, 0);
  add(st, "unembed.b_U", 1, (size_t[]){V}, 0.1, 0);
  return st;
}

/*
 * The same shapes named as a Hugging Face GPT-2 checkpoint: packed c_attn
 * (split into heads through the one-tensor scratch) and no lm_head (W_U is
 * W_E transposed). n_head in __metadata__.
 */
static st_writer *gpt2_small_checkpoint(void) {
  st_writer *st = st_writer_new();
  char name[64];
  st_add_metadata(st, "n_head", "12");
  add(st, "wte.weight", 2, (size_t[]){V, D}, 0.1, 0);
  add(st, "wpe.weight", 2, (size_t[]){T, D}, 0.02, 0);
  for (int l = 0; l < L; l++) {
#define NAME(suffix) (snprintf(name, sizeof name, "h.%d.%s", l, suffix), name)
    add(st, NAME("ln_1.weight"), 1, (size_t[]){D}, 0.1, 1);
    add(st, NAME("ln_1.bias"), 1, (size_t[]){D}, 0.1, 0);
    add(st, NAME("attn.c_attn.weight"), 2, (size_t[]){D, 3 * D}, 0.036, 0);
    add(st, NAME("attn.c_attn.bias"), 1, (size_t[]){3 * D}, 0.1, 0);
    add(st, NAME("attn.c_proj.weight"), 2, (size_t[]){D, D}, 0.036, 0);
    add(st, NAME("attn.c_proj.bias"), 1, (size_t[]){D}, 0.1, 0);
#undef NAME
  }
  add(st, "ln_f.weight", 1, (size_t[]){D}, 0.1, 1);
  add(st, "ln_f.bias", 1, (size_t[]){D}, 0.1, 0);
  return st;
}

typedef struct sample {
  double seconds, cpu, hwm_mb, anon_mb, weights_mb, largest_mb;
} sample;

static const char *const way_flags[] = {"--measure", "--measure-mmap", "--measure-pread"};

/* With --before DIR: the environment whose LD_LIBRARY_PATH puts DIR's libmi first. */
static char **before_env;

static sample spawn_measure(const char *self, const char *path, int way, bool before) {
  int fds[2];
  if (pipe(fds) != 0) {
    perror("pipe");
    exit(1);
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  char *argv[] = {(char *)self, (char *)way_flags[way], (char *)path, NULL};
  pid_t pid;
  if (posix_spawn(&pid, self, &actions, NULL, argv, before ? before_env : environ) != 0) {
    perror("posix_spawn");
    exit(1);
  }
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  char line[512] = "";
  FILE *f = fdopen(fds[0], "r");
  if (f == NULL || fgets(line, sizeof line, f) == NULL)
    line[0] = '\0';
  if (f != NULL)
    fclose(f);
  int status;
  waitpid(pid, &status, 0);
  double seconds, cpu, total, largest;
  long hwm, anon, base;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
      sscanf(line, "%lf %lf %ld %ld %ld %lf %lf", &seconds, &cpu, &hwm, &anon, &base, &total,
             &largest) != 7) {
    fprintf(stderr, "loading %s failed\n", path);
    exit(1);
  }
  return (sample){seconds, cpu, hwm / 1024.0, (anon - base) / 1024.0, total / 1048576.0,
                  largest / 1048576.0};
}

static int by_seconds(const void *a, const void *b) {
  double x = ((const sample *)a)->seconds, y = ((const sample *)b)->seconds;
  return (x > y) - (x < y);
}

static int by_cpu(const void *a, const void *b) {
  double x = ((const sample *)a)->cpu, y = ((const sample *)b)->cpu;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  for (int way = WAY_LOAD; way <= WAY_PREAD; way++)
    if (argc == 3 && strcmp(argv[1], way_flags[way]) == 0)
      return measure(argv[2], way);
  int rounds = 5;
  bool keep = false;
  const char *before = NULL; /* a folder holding an older libmi.so.0 */
  const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
      dir = argv[++i];
    else if (strcmp(argv[i], "--keep") == 0)
      keep = true;
    else if (strcmp(argv[i], "--before") == 0 && i + 1 < argc)
      before = argv[++i];
    else {
      fprintf(stderr, "usage: %s [--rounds R] [--dir DIR] [--keep] [--before LIBDIR]\n",
              argv[0]);
      return 2;
    }
  }
  if (rounds < 1 || rounds > 100)
    rounds = 5;
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    perror("readlink /proc/self/exe");
    return 1;
  }
  self[n] = '\0';
  char paths[3][4096];
  snprintf(paths[0], sizeof paths[0], "%s/mi_bench_gpt2_small.pth", dir);
  snprintf(paths[1], sizeof paths[1], "%s/mi_bench_gpt2_small.safetensors", dir);
  snprintf(paths[2], sizeof paths[2], "%s/mi_bench_gpt2_small_hf.safetensors", dir);
  if (access(paths[2], R_OK) != 0) {
    st_writer *st = gpt2_small_checkpoint();
    if (!st_save(st, paths[2])) {
      fprintf(stderr, "cannot write %s\n", paths[2]);
      return 1;
    }
    st_writer_free(st);
  }
  if (access(paths[0], R_OK) != 0 || access(paths[1], R_OK) != 0) {
    double t0 = bench_now();
    st_writer *st = gpt2_small_state_dict();
    size_t size;
    unsigned char *pth = pth_from_st(st, PTH_DESCRIPTOR, &size);
    if (pth == NULL || !st_write_bytes(paths[0], pth, size) || !st_save(st, paths[1])) {
      fprintf(stderr, "cannot write the files in %s\n", dir);
      return 1;
    }
    free(pth);
    st_writer_free(st);
    printf("wrote %s and %s in %.1f s\n", paths[0], paths[1], bench_now() - t0);
  }
  enum { MOST = 7 };
  const char *names[MOST] = {".pth", ".safetensors", "mmap", "pread", "GPT-2 names",
                             ".pth before", ".safetensors before"};
  const char *files[MOST] = {paths[0], paths[1], paths[1], paths[1], paths[2], paths[0],
                             paths[1]};
  const int ways[MOST] = {WAY_LOAD, WAY_LOAD, WAY_MMAP, WAY_PREAD, WAY_LOAD, WAY_LOAD,
                          WAY_LOAD};
  const bool old[MOST] = {false, false, false, false, false, true, true};
  const int KINDS = before != NULL ? 7 : 5;
  if (before != NULL) {
    size_t n_env = 0;
    while (environ[n_env] != NULL)
      n_env++;
    before_env = calloc(n_env + 2, sizeof *before_env);
    size_t used = 0;
    for (size_t i = 0; i < n_env; i++)
      if (strncmp(environ[i], "LD_LIBRARY_PATH=", 16) != 0)
        before_env[used++] = environ[i];
    static char library_path[4200];
    snprintf(library_path, sizeof library_path, "LD_LIBRARY_PATH=%s", before);
    before_env[used] = library_path;
  }
  sample *s[MOST];
  for (int k = 0; k < KINDS; k++)
    s[k] = calloc((size_t)rounds, sizeof(sample));
  /* One untimed load of each, so both files start in the page cache. */
  for (int k = 0; k < KINDS; k++)
    spawn_measure(self, files[k], ways[k], old[k]);
  printf("round  wall: .pth  .safetensors  mmap  pread  gpt2   cpu: .pth  .safetensors  "
         "mmap  pread  gpt2\n");
  for (int r = 0; r < rounds; r++) {
    for (int k = 0; k < KINDS; k++) {
      int which = (r + k) % KINDS; /* rotate which goes first */
      s[which][r] = spawn_measure(self, files[which], ways[which], old[which]);
    }
    printf("%5d  %9.3f  %12.3f  %5.3f  %5.3f  %5.3f  %9.3f  %12.3f  %5.3f  %5.3f  %5.3f   "
           ".safetensors/pread wall %.2f\n", r + 1, s[0][r].seconds, s[1][r].seconds,
           s[2][r].seconds, s[3][r].seconds, s[4][r].seconds, s[0][r].cpu, s[1][r].cpu,
           s[2][r].cpu, s[3][r].cpu, s[4][r].cpu, s[1][r].seconds / s[3][r].seconds);
    if (before != NULL)
      printf("       before: wall .pth %.3f .safetensors %.3f, cpu .pth %.3f .safetensors "
             "%.3f\n", s[5][r].seconds, s[6][r].seconds, s[5][r].cpu, s[6][r].cpu);
  }
  double best[MOST], median[MOST], best_cpu[MOST], median_cpu[MOST];
  for (int k = 0; k < KINDS; k++) {
    double hwm = 0, anon = 0;
    for (int r = 0; r < rounds; r++) {
      hwm = s[k][r].hwm_mb > hwm ? s[k][r].hwm_mb : hwm;
      anon = s[k][r].anon_mb > anon ? s[k][r].anon_mb : anon;
    }
    sample weights = s[k][0];
    qsort(s[k], (size_t)rounds, sizeof(sample), by_seconds);
    best[k] = s[k][0].seconds;
    median[k] = s[k][rounds / 2].seconds;
    qsort(s[k], (size_t)rounds, sizeof(sample), by_cpu);
    best_cpu[k] = s[k][0].cpu;
    median_cpu[k] = s[k][rounds / 2].cpu;
    printf("%-13s wall best %.3f s, median %.3f s; cpu best %.3f s, median %.3f s\n"
           "              peak resident %.0f MiB, peak anonymous %.0f MiB (weights kept "
           "%.0f MiB, largest tensor %.0f MiB)\n",
           names[k], best[k], median[k], best_cpu[k], median_cpu[k], hwm, anon,
           weights.weights_mb, weights.largest_mb);
  }
  const int pairs[][2] = {{0, 1}, {1, 2}, {1, 3}, {0, 3}, {4, 3}, {6, 1}, {5, 0}};
  for (size_t p = 0; p < (before != NULL ? 7u : 5u); p++) {
    int a = pairs[p][0], b = pairs[p][1];
    printf("%s / %s: wall best %.3f, median %.3f; cpu best %.3f, median %.3f\n", names[a],
           names[b], best[a] / best[b], median[a] / median[b], best_cpu[a] / best_cpu[b],
           median_cpu[a] / median_cpu[b]);
  }
  if (!keep)
    for (int i = 0; i < 3; i++)
      remove(paths[i]);
  for (int k = 0; k < KINDS; k++)
    free(s[k]);
  free(before_env);
  return 0;
}
