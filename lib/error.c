/*
 * error.c: status texts and the per-thread last-error message.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>

#define MI_STRINGIFY2(x) #x
#define MI_STRINGIFY(x) MI_STRINGIFY2(x)

static _Thread_local char last_error[512];

unsigned mi_version(void) { return MI_VERSION_NUMBER; }

const char *mi_version_string(void) {
  return MI_STRINGIFY(MI_VERSION_MAJOR) "." MI_STRINGIFY(MI_VERSION_MINOR)
      "." MI_STRINGIFY(MI_VERSION_PATCH);
}

const char *mi_status_str(mi_status status) {
  switch (status) {
  case MI_OK: return "ok";
  case MI_ERR_INVALID_ARGUMENT: return "invalid argument";
  case MI_ERR_OUT_OF_MEMORY: return "out of memory";
  case MI_ERR_IO: return "I/O error";
  case MI_ERR_FORMAT: return "bad file format";
  case MI_ERR_SHAPE: return "shape mismatch";
  case MI_ERR_UNSUPPORTED: return "unsupported";
  case MI_ERR_INDEX: return "index out of range";
  case MI_ERR_DTYPE: return "bad dtype";
  case MI_ERR_MISSING_TENSOR: return "missing tensor";
  case MI_ERR_TRUNCATED: return "truncated file";
  case MI_ERR_STATE: return "wrong state";
  case MI_ERR_NUMERIC: return "numerical failure";
  case MI_ERR_NONFINITE: return "non-finite number";
  }
  return "unknown status";
}

const char *mi_last_error(void) { return last_error; }

mi_status mi__fail(mi_status status, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, args);
  va_end(args);
  return status;
}
