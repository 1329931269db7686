/* dist_local.c: `mi sweep` built without MPI: one process does every unit. */
#include "cli.h"
#include "dist.h"

#include <stdlib.h>

/* A launcher's task count, for refusing to run N copies of the whole sweep. */
static long launched_tasks(void) {
  static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
    const char *v = getenv(vars[i]);
    if (v && atol(v) > 1)
      return atol(v);
  }
  return 1;
}

void dist_init(dist *d, int *argc, char ***argv) {
  (void)argc, (void)argv;
  *d = (dist){0, 1, NULL};
  long tasks = launched_tasks();
  if (tasks > 1)
    die_usage("started as one of %ld tasks, but this mi was built without MPI: each would "
              "run the whole sweep (install libopenmpi-dev and rebuild)", tasks);
}

void dist_share(dist *d, void *data, size_t bytes) { (void)d, (void)data, (void)bytes; }

size_t dist_next(dist *d) {
  static size_t next;
  (void)d;
  return next++;
}

void dist_wait_all(dist *d) { (void)d; }
void dist_end(dist *d) { (void)d; }
const char *dist_engine(void) { return "none"; }
