/*
 * st_writer.h: a small safetensors writer for the tests and the fuzz seed
 * corpus. It writes the JSON header itself (not through jansson), so the
 * reader is checked against an independent implementation of the format.
 */
#ifndef MI_ST_WRITER_H
#define MI_ST_WRITER_H

#include <stdbool.h>
#include <stddef.h>

typedef struct st_writer st_writer;

/* An empty file: no tensors, no metadata. NULL when out of memory. */
st_writer *st_writer_new(void);
void st_writer_free(st_writer *w);

/*
 * Appends a tensor of `dtype` ("F32", "F64", "F16" or "BF16") from `values`
 * (row-major, as many as the shape's product). False when a value is not
 * exactly representable in the dtype (so round trips in tests are exact by
 * construction), for an unknown dtype, or when out of memory.
 */
bool st_add(st_writer *w, const char *name, const char *dtype, size_t rank,
            const size_t *shape, const double *values);

/* Appends a tensor of any dtype from raw little-endian bytes. */
bool st_add_raw(st_writer *w, const char *name, const char *dtype, size_t rank,
                const size_t *shape, const void *bytes, size_t n_bytes);

/* Adds a "__metadata__" string entry. */
bool st_add_metadata(st_writer *w, const char *key, const char *value);

/*
 * The file's bytes: header length, the header (padded with spaces to a
 * multiple of 8, as the format recommends), then each tensor's data in the
 * order added. malloc'd; NULL when out of memory.
 */
unsigned char *st_serialize(const st_writer *w, size_t *size);

/* Writes the file; false on an I/O error. */
bool st_save(const st_writer *w, const char *path);

/*
 * A file from a header given as text, with its length field set to
 * `declared` (normally strlen(header)), followed by `data_size` zero bytes.
 */
unsigned char *st_raw(const char *header, unsigned long long declared, size_t data_size,
                      size_t *size);

/* The tensors added so far, in order, and entry i's fields (borrowed). */
size_t st_count(const st_writer *w);
void st_get(const st_writer *w, size_t i, const char **name, const char **dtype,
              size_t *rank, const size_t **shape, const unsigned char **bytes,
              size_t *n_bytes);

/* Writes `size` bytes to `path`; false on an I/O error. */
bool st_write_bytes(const char *path, const void *bytes, size_t size);

#endif
