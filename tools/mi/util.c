/* util.c: failing, numbers, the progress bar and JSON output of `mi`. */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

const char *cli_cmd = "mi";

void die_usage(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", cli_cmd);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nTry '%s --help'.\n", cli_cmd);
  exit(EXIT_USAGE);
}

void die_lib(mi_status s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", cli_cmd);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, ": %s: %s\n", mi_status_str(s), mi_last_error());
  exit(EXIT_LIB);
}

void die_oom(void) {
  fprintf(stderr, "%s: out of memory\n", cli_cmd);
  exit(EXIT_LIB);
}

void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p)
    die_oom();
  return p;
}

size_t parse_size(const char *text, const char *what) {
  char *end;
  errno = 0;
  if (!isdigit((unsigned char)text[0])) /* strtoull would skip spaces, take signs */
    die_usage("%s must be a whole number >= 0, not '%s'", what, text);
  unsigned long long v = strtoull(text, &end, 10);
  if (*end || errno == ERANGE || v > SIZE_MAX)
    die_usage("%s must be a whole number >= 0, not '%s'", what, text);
  return (size_t)v;
}

void progress_start(progress *p, const char *label, size_t total) {
  p->on = isatty(STDERR_FILENO) && total > 0;
  p->label = label;
  p->total = total;
  p->done = 0;
  p->shown = -1;
}

void progress_set(progress *p, size_t done) {
  if (!p->on)
    return;
  p->done = done;
  int pct = (int)(100.0 * (double)p->done / (double)p->total);
  if (pct == p->shown)
    return;
  p->shown = pct;
  int width = 30, fill = pct * width / 100;
  fprintf(stderr, "\r%s [%.*s%*s] %3d%%", p->label, fill,
          "##############################", width - fill, "", pct);
  fflush(stderr);
}

void progress_end(progress *p) {
  if (p->on)
    fprintf(stderr, "\r\033[K");
}

static void json_failed(void) __attribute__((noreturn));
static void json_failed(void) {
  fprintf(stderr, "%s: cannot build or write the JSON output\n", cli_cmd);
  exit(EXIT_LIB);
}

void append(json_t *array, json_t *value) {
  if (!value || json_array_append_new(array, value) != 0)
    json_failed();
}

json_t *real_or_null(double x) { return isfinite(x) ? json_real(x) : json_null(); }

void dump(json_t *root) {
  if (!root || json_object_set_new(root, "threads", json_integer((json_int_t)mi_get_num_threads())) ||
      json_dumpf(root, stdout, JSON_INDENT(1) | JSON_ENSURE_ASCII) != 0)
    json_failed();
  fputc('\n', stdout);
  json_decref(root);
}
