/*
 * mi sweep: every chosen circuit's rows read once, in units written to a
 * directory, merged into one results file. Under mpirun (or srun) the ranks
 * share the units through dist.h; each unit is libmi's (mi_sweep_worker_run).
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"
#include "cmd.h"
#include "dist.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char description[] =
    "Reads whole circuits of MODEL once and writes one results file (safetensors):\n"
    "for every row of each chosen head's token OV and token QK circuit (and, if\n"
    "asked, the direct path and K-composition circuits) its top-k entries, the rank\n"
    "of its diagonal entry, its mean and standard deviation, the z-score ranks the\n"
    "skip-trigram table is paired from, and that table (what mi report shows;\n"
    "'mi report --from-sweep FILE' reads it back).\n"
    "\n"
    "The work is cut into units (a circuit x a range of rows), each written to\n"
    "DIR/NAME.safetensors as it is done: run the same command again after an\n"
    "interruption and only the missing units are computed; a unit made by another\n"
    "model or other options is refused. Under mpirun or srun the ranks share the\n"
    "units (DIR must be on a filesystem they all see) and rank 0 merges them. The\n"
    "file's bytes do not depend on the number of ranks or threads.\n";

/* "L0H1,L3" into increasing flat head indices (L3: every head of layer 3). */
static size_t parse_heads(size_t **out, const char *text, const mi_config *c) {
  size_t total = c->n_layers * c->n_heads, count = 0;
  unsigned char *chosen = xcalloc(total, 1);
  char *copy = strdup(text);
  if (!copy)
    die_oom();
  for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    size_t l, h;
    int used = 0;
    if (sscanf(tok, "L%zuH%zu%n", &l, &h, &used) == 2 && !tok[used]) {
      if (l >= c->n_layers || h >= c->n_heads)
        die_usage("--heads: %s is not in a model of %zu layers x %zu heads", tok, c->n_layers,
                  c->n_heads);
      chosen[l * c->n_heads + h] = 1;
    } else if (used = 0, sscanf(tok, "L%zu%n", &l, &used) == 1 && !tok[used]) {
      if (l >= c->n_layers)
        die_usage("--heads: %s is not in a model of %zu layers", tok, c->n_layers);
      memset(chosen + l * c->n_heads, 1, c->n_heads);
    } else {
      die_usage("--heads takes L0H1,L3,... (a head, or a whole layer), not '%s'", tok);
    }
  }
  free(copy);
  *out = xcalloc(total, sizeof **out);
  for (size_t i = 0; i < total; i++)
    if (chosen[i])
      (*out)[count++] = i;
  free(chosen);
  if (!count)
    die_usage("--heads '%s' names no head", text);
  return count;
}

/* "L0H1:L1H3,..." into flat (earlier, later) pairs. */
static size_t parse_pairs(size_t **out, const char *text, const mi_config *c) {
  size_t cap = 1;
  for (const char *p = text; *p; p++)
    cap += *p == ',';
  *out = xcalloc(2 * cap, sizeof **out);
  size_t count = 0;
  char *copy = strdup(text);
  if (!copy)
    die_oom();
  for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    size_t l1, h1, l2, h2;
    int used = 0;
    if (sscanf(tok, "L%zuH%zu:L%zuH%zu%n", &l1, &h1, &l2, &h2, &used) != 4 || tok[used])
      die_usage("--k-composition takes L0H1:L1H3,... (earlier:later), not '%s'", tok);
    if (l1 >= c->n_layers || l2 >= c->n_layers || h1 >= c->n_heads || h2 >= c->n_heads ||
        l1 >= l2)
      die_usage("--k-composition %s: both heads in the model, the first in an earlier layer",
                tok);
    (*out)[2 * count] = l1 * c->n_heads + h1;
    (*out)[2 * count + 1] = l2 * c->n_heads + h2;
    count++;
  }
  free(copy);
  return count;
}

static unsigned parse_circuits(const char *text) {
  unsigned bits = 0;
  char *copy = strdup(text);
  if (!copy)
    die_oom();
  for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
    if (!strcmp(tok, "ov"))
      bits |= MI_SWEEP_OV;
    else if (!strcmp(tok, "qk"))
      bits |= MI_SWEEP_QK;
    else if (!strcmp(tok, "direct"))
      bits |= MI_SWEEP_DIRECT;
    else if (strcmp(tok, "none"))
      die_usage("--circuits takes ov, qk, direct or none, comma-separated, not '%s'", tok);
  free(copy);
  return bits;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One JSON event a line, whole, so that the ranks' lines do not mix. */
static void event(json_t *e) {
  char *line = e ? json_dumps(e, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
  if (!line) {
    fprintf(stderr, "%s: cannot build a progress event\n", cli_cmd);
    exit(EXIT_LIB);
  }
  printf("%s\n", line);
  fflush(stdout);
  free(line);
  json_decref(e);
}

/* The progress line on a terminal: units, rate, time left. */
static void show_progress(size_t handed, size_t todo, size_t mine, double started) {
  static int on = -1;
  if (on < 0)
    on = isatty(STDERR_FILENO);
  if (!on)
    return;
  double spent = now() - started, rate = spent > 0 ? (double)mine / spent : 0;
  size_t left = todo > handed ? todo - handed : 0;
  fprintf(stderr, "\r\033[Ksweep: %zu/%zu units handed out, %.2f units/s here", handed, todo,
          rate);
  if (rate > 0)
    fprintf(stderr, ", ~%.0f s left", (double)left / rate);
  fflush(stderr);
}

/* MI_SWEEP_FAIL_AFTER=N (and MI_SWEEP_FAIL_RANK=R): die after N units, for tests. */
static long fail_after(const dist *d) {
  const char *after = getenv("MI_SWEEP_FAIL_AFTER"), *rank = getenv("MI_SWEEP_FAIL_RANK");
  if (!after || (rank && atoi(rank) != d->rank))
    return -1;
  return atol(after);
}

int cmd_sweep(int argc, char **argv) {
  common c = {0};
  const char *model_arg = NULL, *out_a = NULL, *units_a = NULL, *heads_a = NULL,
             *circuits_a = NULL, *pairs_a = NULL, *k_a = NULL, *columns_a = NULL,
             *trigrams_a = NULL, *rows_a = NULL;
  int no_qk_bias = 0, keep_units = 0;
  const opt_spec spec[] = {
      OPT_MODEL(&model_arg),
      {OPT_VALUE, "-o", "FILE", &out_a, "the results file (required)", OPT_REQUIRED},
      {OPT_VALUE, "--units", "DIR", &units_a, "where units are written (default FILE.units)", 0},
      {OPT_VALUE, "--heads", "L0H1,L3,...", &heads_a, "heads, or whole layers (default: all)", 0},
      {OPT_VALUE, "--circuits", "ov,qk,direct", &circuits_a,
       "circuits of each head, and the direct path\n(default ov,qk; none: only --k-composition)", 0},
      {OPT_VALUE, "--k-composition", "L0H1:L1H3,...", &pairs_a,
       "K-composition circuits of these pairs too", 0},
      {OPT_VALUE, "-k", "K", &k_a, "top entries kept per row (default 10)", 0},
      {OPT_VALUE, "--columns", "K", &columns_a, "top entries kept per column too (default 0)", 0},
      {OPT_SWITCH, "--no-qk-bias", NULL, &no_qk_bias, "QK circuits without b_Q and b_K", 0},
      {OPT_VALUE, "--trigrams", "N", &trigrams_a, "skip-trigram table length (default 1000)", 0},
      {OPT_VALUE, "--unit-rows", "R", &rows_a, "rows a unit (default 4096)", 0},
      {OPT_SWITCH, "--keep-units", NULL, &keep_units, "keep DIR after the merge", 0},
      {0}};
  const cmd_help help = {"sweep", spec, description};
  opt_parse(&c, &help, argc, argv);
  if (!out_a)
    die_usage("-o FILE is required");
  dist d;
  dist_init(&d, &argc, &argv);

  mi_sweep_options so;
  mi_sweep_options_init(&so, sizeof so);
  if (circuits_a)
    so.circuits = parse_circuits(circuits_a);
  so.qk_flags = (no_qk_bias ? 0u : MI_QK_BIAS) | MI_QK_SCALE;
  if (k_a)
    so.k = parse_size(k_a, "-k");
  if (columns_a)
    so.k_columns = parse_size(columns_a, "--columns");
  if (trigrams_a)
    so.trigrams = parse_size(trigrams_a, "--trigrams");
  if (rows_a)
    so.unit_rows = parse_size(rows_a, "--unit-rows");

  loaded m;
  load(&m, &c, model_arg);
  size_t *heads = NULL, *pairs = NULL, n_heads = 0, n_pairs = 0;
  if (heads_a)
    n_heads = parse_heads(&heads, heads_a, &m.cfg);
  if (pairs_a)
    n_pairs = parse_pairs(&pairs, pairs_a, &m.cfg);
  mi_sweep_plan *plan;
  LIB(mi_sweep_plan_new(&plan, m.model, heads, n_heads, pairs, n_pairs, &so),
      "planning the sweep");
  size_t total = mi_sweep_plan_unit_count(plan);
  char *dir = units_a ? strdup(units_a) : NULL;
  if (!units_a) {
    size_t len = strlen(out_a) + sizeof ".units";
    dir = xcalloc(len, 1);
    snprintf(dir, len, "%s.units", out_a);
  }
  if (!dir)
    die_oom();

  /* Rank 0 checks what is there (refusing foreign units); all ranks learn it. */
  unsigned char *done = xcalloc(total, 1);
  if (d.rank == 0) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
      fprintf(stderr, "%s: cannot create the units directory %s: %s\n", cli_cmd, dir,
              strerror(errno));
      exit(EXIT_LIB);
    }
    for (size_t u = 0; u < total; u++) {
      int is_done;
      LIB(mi_sweep_plan_unit_done(&is_done, plan, u, dir), "checking the units already in %s",
          dir);
      done[u] = (unsigned char)is_done;
    }
  }
  dist_share(&d, done, total);
  size_t *todo = xcalloc(total, sizeof *todo), n_todo = 0;
  for (size_t u = 0; u < total; u++)
    if (!done[u])
      todo[n_todo++] = u;
  if (c.json && d.rank == 0)
    event(json_pack("{s:s, s:I, s:I, s:i, s:I, s:s}", "event", "start", "units",
                    (json_int_t)total, "todo", (json_int_t)n_todo, "ranks", d.size, "threads",
                    (json_int_t)mi_get_num_threads(), "engine", dist_engine()));

  mi_sweep_worker *worker;
  LIB(mi_sweep_worker_new(&worker, plan), "starting a sweep worker");
  long die_after = fail_after(&d);
  double started = now();
  size_t mine = 0;
  for (size_t i; (i = dist_next(&d)) < n_todo;) {
    size_t u = todo[i], entries;
    const char *name;
    mi_sweep_plan_unit_name(&name, plan, u);
    mi_sweep_plan_unit_entries(&entries, plan, u);
    double t0 = now();
    LIB(mi_sweep_worker_run(worker, u, dir), "unit %s", name);
    mine++;
    if (c.json)
      event(json_pack("{s:s, s:i, s:s, s:I, s:I, s:f}", "event", "unit", "rank", d.rank, "unit",
                      name, "entries", (json_int_t)entries, "handed_out", (json_int_t)i + 1,
                      "seconds", now() - t0));
    else if (d.rank == 0)
      show_progress(i + 1, n_todo, mine, started);
    if (die_after >= 0 && (long)mine >= die_after)
      raise(SIGKILL);
  }
  mi_sweep_worker_free(worker);
  if (!c.json && d.rank == 0 && isatty(STDERR_FILENO))
    fprintf(stderr, "\r\033[K");
  dist_wait_all(&d);

  if (d.rank == 0) {
    double t0 = now();
    LIB(mi_sweep_plan_merge(plan, dir, out_a), "merging the units of %s into %s", dir, out_a);
    struct stat st;
    long long bytes = stat(out_a, &st) == 0 ? (long long)st.st_size : -1;
    if (!keep_units) {
      for (size_t u = 0; u < total; u++) {
        const char *name;
        mi_sweep_plan_unit_name(&name, plan, u);
        size_t len = strlen(dir) + strlen(name) + sizeof "/.safetensors";
        char *path = xcalloc(len, 1);
        snprintf(path, len, "%s/%s.safetensors", dir, name);
        unlink(path);
        free(path);
      }
      rmdir(dir);
    }
    if (c.json)
      event(json_pack("{s:s, s:s, s:I, s:I, s:I, s:f, s:f}", "event", "done", "output", out_a,
                      "units", (json_int_t)total, "computed", (json_int_t)n_todo, "bytes",
                      (json_int_t)bytes, "seconds", now() - started, "merge_seconds",
                      now() - t0));
    else
      printf("wrote %s (%lld bytes): %zu units, %zu computed now, %zu already in %s\n", out_a,
             bytes, total, n_todo, total - n_todo, dir);
  }
  dist_end(&d);
  free(todo);
  free(done);
  free(dir);
  free(heads);
  free(pairs);
  mi_sweep_plan_free(plan);
  unload(&m);
  return 0;
}
