/*
 * dist.h: how `mi sweep` shares its units between processes. Built with
 * MPI (dist_mpi.c) and started by a launcher (mpirun, srun), the ranks
 * take units from one shared counter; otherwise (dist_local.c) the one
 * process takes them all, in the same order. The library never sees MPI.
 */
#ifndef MI_DIST_H
#define MI_DIST_H

#include <stddef.h>

typedef struct dist {
  int rank, size;
  void *impl; /* dist_mpi.c's window; NULL in one process */
} dist;

/* Joins the ranks when a launcher started this process; else rank 0 of 1. */
void dist_init(dist *d, int *argc, char ***argv);
/* What rank 0 says (`bytes` at `data`), on every rank. */
void dist_share(dist *d, void *data, size_t bytes);
/* The next index from the counter all ranks share (0, 1, 2, ... in all). */
size_t dist_next(dist *d);
/* Returns once every rank has called it, without spinning a core. */
void dist_wait_all(dist *d);
void dist_end(dist *d);
/* What the build can do, for --help and --json: "MPI (Open MPI 4.1.4)" or "none". */
const char *dist_engine(void);

#endif
