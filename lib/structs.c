/*
 * structs.c: copying versioned structs (leading size_t struct_size) across
 * the ABI, so a caller compiled against an older, smaller header is never
 * read or written past its struct.
 */
#include "internal.h"

#include <string.h>

void mi__struct_init(void *out, size_t struct_size, const void *defaults, size_t size) {
  if (out == NULL)
    return;
  memcpy(out, defaults, struct_size < size ? struct_size : size);
  if (struct_size >= sizeof struct_size)
    memcpy(out, &struct_size, sizeof struct_size);
}

mi_status mi__struct_in(void *dst, size_t dst_size, const void *src, const char *name) {
  if (src == NULL)
    return MI_OK;
  size_t size;
  memcpy(&size, src, sizeof size);
  if (size < sizeof size)
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "%s.struct_size is %zu, less than its own field; call %s_init first",
                    name, size, name);
  /* A larger struct comes from a newer header: its extra fields would be ignored. */
  if (size > dst_size)
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "%s.struct_size is %zu, larger than this library's %zu (a newer "
                    "header than the library)", name, size, dst_size);
  memcpy(dst, src, size);
  memcpy(dst, &dst_size, sizeof dst_size);
  return MI_OK;
}

mi_status mi__struct_out(void *dst, const void *src, size_t src_size, const char *name) {
  size_t size;
  memcpy(&size, dst, sizeof size);
  if (size < sizeof size)
    return mi__fail(MI_ERR_INVALID_ARGUMENT,
                    "%s.struct_size is %zu, less than its own field; set it to sizeof(%s)",
                    name, size, name);
  if (size > src_size)
    size = src_size;
  memcpy(dst, src, size);
  memcpy(dst, &size, sizeof size);
  return MI_OK;
}
