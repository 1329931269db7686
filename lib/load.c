/*
 * load.c: mi_model_load and mi_model_load_memory. The first bytes of a file
 * say what it is; each kind goes to its reader, and a file that is no model
 * libmi reads is refused with what it looks like.
 */
#define _POSIX_C_SOURCE 200809L
#include "loader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void mi_load_options_init(mi_load_options *out, size_t struct_size) {
  const mi_load_options defaults = {.struct_size = sizeof defaults,
                                    .process = MI_PROCESS_FOLD_LN};
  mi__struct_init(out, struct_size, &defaults, sizeof defaults);
}

static const char what_libmi_reads[] =
    "libmi reads .safetensors files, PyTorch torch.save archives (.pth, .pt, .bin) "
    "and model folders";

/* Whether the first bytes are text: printable ASCII, whitespace or UTF-8. */
static bool looks_like_text(const unsigned char *bytes, size_t size) {
  size_t n = size < 64 ? size : 64;
  for (size_t i = 0; i < n; i++)
    if (bytes[i] < 0x20 && bytes[i] != '\t' && bytes[i] != '\n' && bytes[i] != '\r')
      return false;
  return n > 0;
}

mi_status mi__load_bytes(mi_model **out, const unsigned char *bytes, size_t size,
                         const mi__model_hints *hints, const mi_load_options *options) {
  /* A zip starts with a local header, or (empty) with its end record. */
  if (size >= 4 &&
      (memcmp(bytes, "PK\x03\x04", 4) == 0 || memcmp(bytes, "PK\x05\x06", 4) == 0))
    return mi__torch_load(out, bytes, size, hints, options);
  if (size >= 2 && bytes[0] == 0x80 && bytes[1] >= 2 && bytes[1] <= 5)
    return mi__fail(MI_ERR_UNSUPPORTED,
                    "this is a bare pickle, as torch.save wrote before PyTorch 1.6 (or "
                    "with _use_new_zipfile_serialization=False); libmi reads only the zip "
                    "format: re-save it with torch.save(torch.load(path), new_path) in a "
                    "current PyTorch");
  /* A safetensors header length is 8 little-endian bytes, then '{'. */
  if (size > 8 && bytes[8] == '{')
    return mi__safetensors_load(out, bytes, size, hints, options);
  size_t skip = 0;
  while (skip < size && skip < 64 && strchr(" \t\r\n", bytes[skip]) && bytes[skip])
    skip++;
  if (skip < size && (bytes[skip] == '{' || bytes[skip] == '['))
    return mi__fail(MI_ERR_FORMAT, "this looks like a JSON file (a config.json or a "
                    "vocabulary?), not a model; %s", what_libmi_reads);
  if (size > 8 && looks_like_text(bytes, size))
    return mi__fail(MI_ERR_FORMAT, "this looks like a text file, not a model; %s",
                    what_libmi_reads);
  /* Anything else is read as safetensors, whose checks say what is wrong. */
  return mi__safetensors_load(out, bytes, size, hints, options);
}

/* The caller's options over the defaults. */
static mi_status read_options(mi_load_options *out, const mi_load_options *options) {
  mi_load_options_init(out, sizeof *out);
  return mi__struct_in(out, sizeof *out, options, "mi_load_options");
}

mi_status mi_model_load_memory(mi_model **out, const void *data, size_t size,
                               const mi_load_options *options) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(data);
  mi_load_options opts;
  mi_status status = read_options(&opts, options);
  if (status != MI_OK)
    return status;
  const mi__model_hints none = {0};
  return mi__load_bytes(out, data, size, &none, &opts);
}

mi_status mi_model_load(mi_model **out, const char *path, const mi_load_options *options) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(path);
  mi_load_options opts;
  mi_status status = read_options(&opts, options);
  if (status != MI_OK)
    return status;
  char reason[128];
  /* O_NONBLOCK: a FIFO must not block the open; it is refused below. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    strerror_r(errno, reason, sizeof reason);
    return mi__fail(MI_ERR_IO, "cannot open '%s': %s", path, reason);
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return mi__fail(MI_ERR_IO, "'%s' is not a readable regular file", path);
  }
  if (st.st_size == 0) {
    close(fd);
    return mi__fail(MI_ERR_TRUNCATED, "'%s' is empty; %s", path, what_libmi_reads);
  }
  if ((uintmax_t)st.st_size > SIZE_MAX) {
    close(fd);
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "'%s' is too large to map", path);
  }
  size_t size = (size_t)st.st_size;
  void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  close(fd);
  if (map == MAP_FAILED) {
    strerror_r(map_errno, reason, sizeof reason);
    return mi__fail(map_errno == ENOMEM ? MI_ERR_OUT_OF_MEMORY : MI_ERR_IO,
                    "cannot map '%s': %s", path, reason);
  }
  const mi__model_hints none = {0};
  status = mi__load_bytes(out, map, size, &none, &opts);
  munmap(map, size);
  if (status != MI_OK) {
    /* Say which file, keeping the reader's detail. */
    char detail[512];
    snprintf(detail, sizeof detail, "%s", mi_last_error());
    mi__fail(status, "%s: %s", path, detail);
  }
  return status;
}
