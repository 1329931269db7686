/*
 * eigen.c: eigenvalue summaries and head reports.
 */
#include "linalg.h"
