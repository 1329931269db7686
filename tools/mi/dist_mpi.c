/*
 * dist_mpi.c: `mi sweep` over MPI. Units are handed out by one counter in
 * an MPI window on rank 0, advanced with MPI_Fetch_and_op (passive target:
 * no rank serves requests, so rank 0 computes as the others do). Waits use
 * MPI_Ibarrier and a sleeping poll: a blocking barrier spins, and would take
 * a core from the ranks still computing.
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"
#include "dist.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Whether a launcher started us; a plain `mi sweep` stays one process. */
static int launched(void) {
  static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK",
                                     "PMI_SIZE"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
    if (getenv(vars[i]))
      return 1;
  return 0;
}

typedef struct window {
  MPI_Win win;
  long *counter;
} window;

static void check(int rc, const char *what) {
  if (rc != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    fprintf(stderr, "%s: MPI %s failed: %.*s\n", cli_cmd, what, len, text);
    MPI_Abort(MPI_COMM_WORLD, EXIT_LIB);
  }
}

void dist_init(dist *d, int *argc, char ***argv) {
  *d = (dist){0, 1, NULL};
  if (!launched()) {
    const char *tasks = getenv("SLURM_NTASKS");
    if (tasks && atol(tasks) > 1)
      die_usage("SLURM_NTASKS is %s but no MPI launcher environment: use srun --mpi=pmix "
                "(or mpirun)", tasks);
    return;
  }
  int provided;
  check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "init");
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  check(MPI_Comm_rank(MPI_COMM_WORLD, &d->rank), "rank");
  check(MPI_Comm_size(MPI_COMM_WORLD, &d->size), "size");
  window *w = xcalloc(1, sizeof *w);
  check(MPI_Win_allocate(d->rank == 0 ? (MPI_Aint)sizeof(long) : 0, sizeof(long),
                         MPI_INFO_NULL, MPI_COMM_WORLD, &w->counter, &w->win),
        "window");
  if (d->rank == 0)
    *w->counter = 0;
  check(MPI_Win_fence(0, w->win), "fence");
  check(MPI_Win_lock_all(0, w->win), "lock");
  d->impl = w;
}

void dist_share(dist *d, void *data, size_t bytes) {
  if (!d->impl)
    return;
  for (size_t at = 0; at < bytes;) { /* MPI counts are int */
    int n = bytes - at > (1u << 30) ? 1 << 30 : (int)(bytes - at);
    check(MPI_Bcast((char *)data + at, n, MPI_BYTE, 0, MPI_COMM_WORLD), "broadcast");
    at += (size_t)n;
  }
}

size_t dist_next(dist *d) {
  static size_t local;
  if (!d->impl)
    return local++;
  window *w = d->impl;
  long one = 1, got = 0;
  check(MPI_Fetch_and_op(&one, &got, MPI_LONG, 0, 0, MPI_SUM, w->win), "fetch-and-add");
  check(MPI_Win_flush(0, w->win), "flush");
  return (size_t)got;
}

void dist_wait_all(dist *d) {
  if (!d->impl)
    return;
  MPI_Request req;
  check(MPI_Ibarrier(MPI_COMM_WORLD, &req), "barrier");
  for (int done = 0;;) {
    check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "barrier test");
    if (done)
      return;
    nanosleep(&(struct timespec){0, 2000000}, NULL);
  }
}

void dist_end(dist *d) {
  if (!d->impl)
    return;
  window *w = d->impl;
  MPI_Win_unlock_all(w->win);
  MPI_Win_free(&w->win);
  free(w);
  d->impl = NULL;
  MPI_Finalize();
}

const char *dist_engine(void) {
  static char text[MPI_MAX_LIBRARY_VERSION_STRING + 8];
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(version, &len);
  char *nl = version;
  while (nl < version + len && *nl != ',' && *nl != '\n')
    nl++;
  snprintf(text, sizeof text, "MPI (%.*s)", (int)(nl - version), version);
  return text;
}
