/*
 * st_writer.c: see st_writer.h. Little-endian host assumed, as by libmi.
 */
#include "st_writer.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct st_entry {
  char *name, *dtype;
  size_t rank, shape[8];
  unsigned char *bytes;
  size_t n_bytes;
} st_entry;

struct st_writer {
  st_entry *entries;
  size_t n_entries;
  char *metadata; /* `"key":"value"` pairs joined by commas, or NULL */
};

st_writer *st_writer_new(void) { return calloc(1, sizeof(st_writer)); }

void st_writer_free(st_writer *w) {
  if (w == NULL)
    return;
  for (size_t i = 0; i < w->n_entries; i++) {
    free(w->entries[i].name);
    free(w->entries[i].dtype);
    free(w->entries[i].bytes);
  }
  free(w->entries);
  free(w->metadata);
  free(w);
}

static char *copy_text(const char *s) {
  char *c = malloc(strlen(s) + 1);
  return c ? strcpy(c, s) : NULL;
}

bool st_add_raw(st_writer *w, const char *name, const char *dtype, size_t rank,
                const size_t *shape, const void *bytes, size_t n_bytes) {
  if (rank > 8)
    return false;
  st_entry *grown = realloc(w->entries, (w->n_entries + 1) * sizeof *grown);
  if (grown == NULL)
    return false;
  w->entries = grown;
  st_entry *e = &w->entries[w->n_entries];
  memset(e, 0, sizeof *e);
  e->name = copy_text(name);
  e->dtype = copy_text(dtype);
  e->bytes = malloc(n_bytes ? n_bytes : 1);
  e->rank = rank;
  e->n_bytes = n_bytes;
  if (e->name == NULL || e->dtype == NULL || e->bytes == NULL) {
    free(e->name);
    free(e->dtype);
    free(e->bytes);
    return false;
  }
  if (rank)
    memcpy(e->shape, shape, rank * sizeof *shape);
  if (n_bytes)
    memcpy(e->bytes, bytes, n_bytes);
  w->n_entries++;
  return true;
}

/* IEEE half bits of v, when v is exactly a half. */
static bool to_half(uint16_t *out, double v) {
  uint16_t sign = signbit(v) ? 0x8000 : 0;
  double a = fabs(v);
  if (a == 0.0) {
    *out = sign;
    return true;
  }
  int k;
  double m = frexp(a, &k); /* a = m·2^k, m in [0.5, 1) */
  int exponent = k - 1 + 15;
  if (exponent >= 31)
    return false;
  double mantissa = exponent >= 1 ? (2 * m - 1) * 1024 : a * 0x1p24;
  if (mantissa != floor(mantissa))
    return false;
  *out = (uint16_t)(sign | (exponent >= 1 ? exponent << 10 : 0) | (uint16_t)mantissa);
  return true;
}

/* One value in `dtype` at p; false when not exact or the dtype is unknown. */
static bool encode(unsigned char *p, const char *dtype, double v) {
  float f = (float)v;
  if (strcmp(dtype, "F64") == 0) {
    memcpy(p, &v, 8);
    return true;
  }
  if (strcmp(dtype, "F32") == 0) {
    memcpy(p, &f, 4);
    return (double)f == v;
  }
  if (strcmp(dtype, "BF16") == 0) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint16_t top = (uint16_t)(bits >> 16);
    memcpy(p, &top, 2);
    return (double)f == v && (bits & 0xffff) == 0;
  }
  if (strcmp(dtype, "F16") == 0) {
    uint16_t h;
    if (!to_half(&h, v))
      return false;
    memcpy(p, &h, 2);
    return true;
  }
  return false;
}

bool st_add(st_writer *w, const char *name, const char *dtype, size_t rank,
            const size_t *shape, const double *values) {
  size_t item = strcmp(dtype, "F64") == 0 ? 8 : strcmp(dtype, "F32") == 0 ? 4 : 2;
  size_t count = 1;
  for (size_t i = 0; i < rank; i++)
    count *= shape[i];
  unsigned char *bytes = malloc(count * item + 1);
  if (bytes == NULL)
    return false;
  bool ok = true;
  for (size_t i = 0; i < count && ok; i++)
    ok = encode(bytes + i * item, dtype, values[i]);
  ok = ok && st_add_raw(w, name, dtype, rank, shape, bytes, count * item);
  free(bytes);
  return ok;
}

bool st_add_metadata(st_writer *w, const char *key, const char *value) {
  size_t old = w->metadata ? strlen(w->metadata) : 0;
  size_t need = old + strlen(key) + strlen(value) + 8;
  char *grown = realloc(w->metadata, need);
  if (grown == NULL)
    return false;
  snprintf(grown + old, need - old, "%s\"%s\":\"%s\"", old ? "," : "", key, value);
  w->metadata = grown;
  return true;
}

/* Appends printf text to a growing buffer; false when out of memory. */
static bool append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool append(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  int n = vsnprintf(NULL, 0, fmt, args);
  va_end(args);
  if (*len + (size_t)n + 1 > *cap) {
    size_t cap2 = 2 * (*len + (size_t)n + 1);
    char *grown = realloc(*buf, cap2);
    if (grown == NULL)
      return false;
    *buf = grown;
    *cap = cap2;
  }
  va_start(args, fmt);
  vsnprintf(*buf + *len, *cap - *len, fmt, args);
  va_end(args);
  *len += (size_t)n;
  return true;
}

unsigned char *st_serialize(const st_writer *w, size_t *size) {
  char *header = NULL;
  size_t len = 0, cap = 0, offset = 0;
  bool ok = append(&header, &len, &cap, "{");
  if (w->metadata)
    ok = ok && append(&header, &len, &cap, "\"__metadata__\":{%s}", w->metadata);
  for (size_t i = 0; i < w->n_entries && ok; i++) {
    const st_entry *e = &w->entries[i];
    ok = append(&header, &len, &cap, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                i || w->metadata ? "," : "", e->name, e->dtype);
    for (size_t d = 0; d < e->rank && ok; d++)
      ok = append(&header, &len, &cap, "%s%zu", d ? "," : "", e->shape[d]);
    ok = ok && append(&header, &len, &cap, "],\"data_offsets\":[%zu,%zu]}", offset,
                      offset + e->n_bytes);
    offset += e->n_bytes;
  }
  ok = ok && append(&header, &len, &cap, "}");
  while (ok && len % 8)
    ok = append(&header, &len, &cap, " ");
  unsigned char *file = ok ? malloc(8 + len + offset) : NULL;
  if (file != NULL) {
    for (int i = 0; i < 8; i++)
      file[i] = (unsigned char)((unsigned long long)len >> (8 * i));
    memcpy(file + 8, header, len);
    offset = 8 + len;
    for (size_t i = 0; i < w->n_entries; i++) {
      memcpy(file + offset, w->entries[i].bytes, w->entries[i].n_bytes);
      offset += w->entries[i].n_bytes;
    }
    *size = offset;
  }
  free(header);
  return file;
}

size_t st_count(const st_writer *w) { return w->n_entries; }

void st_get(const st_writer *w, size_t i, const char **name, const char **dtype,
              size_t *rank, const size_t **shape, const unsigned char **bytes,
              size_t *n_bytes) {
  const st_entry *e = &w->entries[i];
  *name = e->name;
  *dtype = e->dtype;
  *rank = e->rank;
  *shape = e->shape;
  *bytes = e->bytes;
  *n_bytes = e->n_bytes;
}

bool st_write_bytes(const char *path, const void *bytes, size_t size) {
  FILE *f = fopen(path, "wb");
  if (f == NULL)
    return false;
  bool ok = fwrite(bytes, 1, size, f) == size;
  return fclose(f) == 0 && ok;
}

bool st_save(const st_writer *w, const char *path) {
  size_t size;
  unsigned char *bytes = st_serialize(w, &size);
  bool ok = bytes != NULL && st_write_bytes(path, bytes, size);
  free(bytes);
  return ok;
}

unsigned char *st_raw(const char *header, unsigned long long declared, size_t data_size,
                      size_t *size) {
  size_t len = strlen(header);
  unsigned char *file = calloc(8 + len + data_size, 1);
  if (file == NULL)
    return NULL;
  for (int i = 0; i < 8; i++)
    file[i] = (unsigned char)(declared >> (8 * i));
  memcpy(file + 8, header, len);
  *size = 8 + len + data_size;
  return file;
}
