/*
 * load.c: mi_model_load and mi_model_load_memory. The first bytes of a file
 * say what it is; each kind goes to its reader, and a file that is no model
 * libmi reads is refused with what it looks like.
 */
#define _POSIX_C_SOURCE 200809L
/* MAP_ANONYMOUS and MADV_HUGEPAGE. */
#define _DEFAULT_SOURCE
#include "loader.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

mi_status mi__image_fill(const mi__image *img, size_t offset, size_t length) {
  if (offset > img->size || length > img->size - offset)
    return mi__fail(MI_ERR_TRUNCATED, "bytes %zu..%zu are past the end of the %zu-byte file",
                    offset, offset + length, img->size);
  if (img->fd < 0 || length == 0)
    return MI_OK;
  /* The image is the process's own anonymous memory when it has a file. */
  return mi__pread_at((unsigned char *)img->bytes + offset, img->fd, offset, length,
                      img->path);
}

mi_status mi__image_read(void *dst, const mi__image *img, size_t offset, size_t length) {
  if (offset > img->size || length > img->size - offset)
    return mi__fail(MI_ERR_TRUNCATED, "bytes %zu..%zu are past the end of the %zu-byte file",
                    offset, offset + length, img->size);
  if (img->fd < 0) {
    memcpy(dst, img->bytes + offset, length);
    return MI_OK;
  }
  return mi__pread_at(dst, img->fd, offset, length, img->path);
}

mi_status mi__load_bytes(mi_model **out, const unsigned char *bytes, size_t size,
                         const mi__model_hints *hints, const mi_load_options *options) {
  const mi__image img = {.bytes = bytes, .size = size, .fd = -1};
  return mi__load_image(out, &img, hints, options);
}

mi_status mi__load_image(mi_model **out, const mi__image *img, const mi__model_hints *hints,
                         const mi_load_options *options) {
  const unsigned char *bytes = img->bytes;
  size_t size = img->size;
  /* What the sniffing below reads: at most the first 64 bytes. */
  mi_status status = mi__image_fill(img, 0, size < 64 ? size : 64);
  if (status != MI_OK)
    return status;
  /* A zip starts with a local header, or (empty) with its end record. */
  if (size >= 4 &&
      (memcmp(bytes, "PK\x03\x04", 4) == 0 || memcmp(bytes, "PK\x05\x06", 4) == 0))
    return mi__torch_load(out, img, hints, options);
  if (size >= 2 && bytes[0] == 0x80 && bytes[1] >= 2 && bytes[1] <= 5)
    return mi__fail(MI_ERR_UNSUPPORTED,
                    "this is a bare pickle, as torch.save wrote before PyTorch 1.6 (or "
                    "with _use_new_zipfile_serialization=False); libmi reads only the zip "
                    "format: re-save it with torch.save(torch.load(path), new_path) in a "
                    "current PyTorch");
  /* A safetensors header length is 8 little-endian bytes, then '{'. */
  if (size > 8 && bytes[8] == '{')
    return mi__safetensors_load(out, img, hints, options);
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
  return mi__safetensors_load(out, img, hints, options);
}

/* The caller's options over the defaults; unknown flags are refused. */
static mi_status read_options(mi_load_options *out, const mi_load_options *options) {
  mi_load_options_init(out, sizeof *out);
  mi_status status = mi__struct_in(out, sizeof *out, options, "mi_load_options");
  const unsigned known = MI_LOAD_NO_CONFIG | MI_LOAD_NO_VOCAB;
  if (status == MI_OK && (out->flags & ~known))
    return mi__fail(MI_ERR_INVALID_ARGUMENT, "mi_load_options.flags 0x%x has unknown bits "
                    "0x%x (known: MI_LOAD_NO_CONFIG, MI_LOAD_NO_VOCAB)", out->flags,
                    out->flags & ~known);
  return status;
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

/*
 * Opens `path` without blocking (a FIFO must not wait for a writer) and
 * gives its descriptor and status.
 */
static mi_status open_path(int *fd, struct stat *st, const char *path) {
  *fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (*fd < 0)
    return mi__fail(MI_ERR_IO, "cannot open '%s': %s", path, mi__errno_text(errno));
  if (fstat(*fd, st) != 0) {
    int err = errno;
    close(*fd);
    return mi__fail(MI_ERR_IO, "cannot stat '%s': %s", path, mi__errno_text(err));
  }
  return MI_OK;
}

/* The model in the regular file open as `fd` (closed here), named `path`. */
static mi_status load_file(mi_model **out, int fd, const struct stat *st, const char *path,
                           const mi__model_hints *hints, const mi_load_options *opts) {
  if (!S_ISREG(st->st_mode)) {
    close(fd);
    return mi__fail(MI_ERR_IO, "'%s' is not a readable regular file", path);
  }
  if (st->st_size == 0) {
    close(fd);
    return mi__fail(MI_ERR_TRUNCATED, "'%s' is empty; %s", path, what_libmi_reads);
  }
  if ((uintmax_t)st->st_size > SIZE_MAX) {
    close(fd);
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "'%s' is too large to read", path);
  }
  /*
   * Never map the file: one truncated while it loads must be
   * MI_ERR_TRUNCATED, never SIGBUS. The image is anonymous address space of
   * the file's size, of which the readers fill only the headers and
   * directories; the tensors are read from `fd` straight into the model.
   * MAP_NORESERVE: the pages never touched cost nothing.
   */
  size_t size = (size_t)st->st_size;
  void *bytes = mmap(NULL, size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (bytes == MAP_FAILED) {
    int err = errno;
    close(fd);
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot reserve %zu bytes of address space to "
                    "read '%s': %s", size, path, mi__errno_text(err));
  }
  const mi__image img = {.bytes = bytes, .size = size, .fd = fd, .path = path};
  mi_status status = mi__load_image(out, &img, hints, opts);
  close(fd);
  munmap(bytes, size);
  if (status != MI_OK) {
    /* Say which file, keeping the reader's detail. */
    char detail[512];
    snprintf(detail, sizeof detail, "%s", mi_last_error());
    mi__fail(status, "%s: %s", path, detail);
  }
  return status;
}

/* Reads `path` as a config.json when it exists (unless the options say not to). */
static mi_status read_config(mi__config *out, const char *path, const mi_load_options *opts) {
  *out = (mi__config){0};
  if (opts->flags & MI_LOAD_NO_CONFIG)
    return MI_OK;
  mi_status status = mi__config_read(out, path, true);
  if (status != MI_OK) {
    char detail[512];
    snprintf(detail, sizeof detail, "%s", mi_last_error());
    mi__fail(status, "%s (MI_LOAD_NO_CONFIG loads the weights without it)", detail);
  }
  return status;
}

/* ---- model folders ---------------------------------------------------------- */

static const char *const preferred_weights[] = {"model.safetensors", "pytorch_model.bin",
                                                "model_final.pth"};
static const char *const weights_suffixes[] = {".safetensors", ".pth", ".pt", ".bin"};
static const char *const vocab_names[] = {"tokenizer.json", "vocab.json", "vocab.txt"};

static bool is_weights_name(const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < sizeof weights_suffixes / sizeof weights_suffixes[0]; i++) {
    size_t k = strlen(weights_suffixes[i]);
    if (n > k && name[0] != '.' && strcmp(name + n - k, weights_suffixes[i]) == 0)
      return true;
  }
  return false;
}

static int by_string(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct names {
  char **items;
  size_t count, capacity;
} names;

static void names_free(names *n) {
  for (size_t i = 0; i < n->count; i++)
    free(n->items[i]);
  free(n->items);
}

static bool names_add(names *n, const char *name) {
  if (n->count == n->capacity) {
    size_t capacity = n->capacity ? 2 * n->capacity : 8;
    char **items = realloc(n->items, capacity * sizeof *items);
    if (items == NULL)
      return false;
    n->items = items;
    n->capacity = capacity;
  }
  char *copy = malloc(strlen(name) + 1);
  if (copy == NULL)
    return false;
  n->items[n->count++] = strcpy(copy, name);
  return true;
}

/*
 * The weights file of the folder open as `fd` (taken over and closed):
 * the first preferred name it holds, else its one file with a weights
 * suffix. *out is malloc'd.
 */
static mi_status pick_weights(char **out, int fd, const char *folder) {
  *out = NULL;
  DIR *dir = fdopendir(fd);
  if (dir == NULL) {
    int err = errno;
    close(fd);
    return mi__fail(MI_ERR_IO, "cannot list the folder '%s': %s", folder, mi__errno_text(err));
  }
  names found = {0};
  size_t preferred = SIZE_MAX; /* index into preferred_weights */
  bool oom = false;
  struct dirent *entry;
  while (!oom && (entry = readdir(dir)) != NULL) {
    const char *name = entry->d_name;
    for (size_t i = 0; i < sizeof preferred_weights / sizeof preferred_weights[0]; i++)
      if (strcmp(name, preferred_weights[i]) == 0 && i < preferred)
        preferred = i;
    if (is_weights_name(name))
      oom = !names_add(&found, name);
  }
  closedir(dir);
  mi_status status = MI_OK;
  const char *chosen = preferred != SIZE_MAX ? preferred_weights[preferred]
                       : found.count == 1    ? found.items[0]
                                             : NULL;
  if (oom) {
    status = mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot list the folder '%s'", folder);
  } else if (chosen != NULL) {
    if ((*out = mi__path_join(folder, chosen)) == NULL)
      status = mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate a path in '%s'", folder);
  } else if (found.count == 0) {
    status = mi__fail(MI_ERR_IO, "the folder '%s' has no weights file: libmi looks for "
                      "model.safetensors, pytorch_model.bin or model_final.pth, else the one "
                      "file ending in .safetensors, .pth, .pt or .bin", folder);
  } else {
    qsort(found.items, found.count, sizeof *found.items, by_string);
    char list[320];
    size_t used = 0;
    for (size_t i = 0; i < found.count && used < sizeof list; i++)
      used += (size_t)snprintf(list + used, sizeof list - used, "%s'%s'", i ? ", " : "",
                               found.items[i]);
    status = mi__fail(MI_ERR_INVALID_ARGUMENT, "the folder '%s' has %zu weights files (%s) "
                      "and none of the names model.safetensors, pytorch_model.bin, "
                      "model_final.pth: name the file to load", folder, found.count, list);
  }
  names_free(&found);
  return status;
}

/*
 * Whether `path` is a regular file: MI_OK; ENOENT in *missing (MI_OK too);
 * anything else (a FIFO, whose open would wait, a directory) fails naming it.
 */
static mi_status regular_file(bool *missing, const char *path) {
  struct stat st;
  int err = stat(path, &st) == 0 ? 0 : errno;
  *missing = err == ENOENT;
  if (*missing)
    return MI_OK;
  if (err != 0)
    return mi__fail(MI_ERR_IO, "cannot stat '%s': %s", path, mi__errno_text(err));
  if (!S_ISREG(st.st_mode))
    return mi__fail(MI_ERR_IO, "'%s' is not a readable regular file", path);
  return MI_OK;
}

/*
 * The folder's vocabulary, the first of vocab_names it holds, into the
 * model; a vocab.json with a merges.txt beside it (a GPT-2 folder) brings
 * its tokenizer too. One that cannot be read fails the load: never a model
 * that silently prints ids where the folder promised strings.
 */
static mi_status load_folder_vocab(mi_model *model, const char *folder) {
  char *path = NULL, *merges = NULL;
  bool missing = true;
  mi_status status = MI_OK;
  size_t i = 0;
  for (; i < sizeof vocab_names / sizeof vocab_names[0]; i++) {
    free(path);
    if ((path = mi__path_join(folder, vocab_names[i])) == NULL)
      return mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate a path in '%s'", folder);
    status = regular_file(&missing, path);
    if (status != MI_OK || !missing)
      break;
  }
  if (status == MI_OK && !missing && strcmp(vocab_names[i], "vocab.json") == 0) {
    bool no_merges = true;
    if ((merges = mi__path_join(folder, "merges.txt")) == NULL)
      status = mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate a path in '%s'", folder);
    else
      status = regular_file(&no_merges, merges);
    if (no_merges) {
      free(merges);
      merges = NULL;
    }
  }
  if (status == MI_OK && !missing)
    status = merges != NULL ? mi_model_load_tokenizer(model, path, merges)
                            : mi_model_load_vocab(model, path);
  free(path);
  free(merges);
  if (status != MI_OK) {
    char detail[512];
    snprintf(detail, sizeof detail, "%s", mi_last_error());
    mi__fail(status, "%s (MI_LOAD_NO_VOCAB loads the model without it)", detail);
  }
  return status;
}

/* A model folder: config.json, the weights, a vocabulary. `fd` is taken over. */
static mi_status load_folder(mi_model **out, int fd, const char *folder,
                             const mi_load_options *opts) {
  char *weights = NULL, *config_path = mi__path_join(folder, "config.json");
  mi__config config = {0};
  mi_status status = config_path != NULL
                         ? pick_weights(&weights, fd, folder)
                         : (close(fd), mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate a "
                                                "path in '%s'", folder));
  if (status == MI_OK)
    status = read_config(&config, config_path, opts);
  int wfd = -1;
  struct stat st;
  if (status == MI_OK)
    status = open_path(&wfd, &st, weights);
  if (status == MI_OK)
    status = load_file(out, wfd, &st, weights, &config.hints, opts);
  if (status == MI_OK && !(opts->flags & MI_LOAD_NO_VOCAB)) {
    status = load_folder_vocab(*out, folder);
    if (status != MI_OK) {
      mi_model_free(*out);
      *out = NULL;
    }
  }
  mi__config_free(&config);
  free(weights);
  free(config_path);
  return status;
}

/* The config.json beside the file `path`: its folder's, "config.json" for a bare name. */
static char *config_beside(const char *path) {
  const char *slash = strrchr(path, '/');
  size_t dir = slash ? (size_t)(slash - path) + 1 : 0;
  char *config = malloc(dir + sizeof "config.json");
  if (config != NULL) {
    memcpy(config, path, dir);
    memcpy(config + dir, "config.json", sizeof "config.json");
  }
  return config;
}

mi_status mi_model_load(mi_model **out, const char *path, const mi_load_options *options) {
  MI_CHECK_ARG(out);
  *out = NULL;
  MI_CHECK_ARG(path);
  mi_load_options opts;
  mi_status status = read_options(&opts, options);
  if (status != MI_OK)
    return status;
  int fd;
  struct stat st;
  status = open_path(&fd, &st, path);
  if (status != MI_OK)
    return status;
  if (S_ISDIR(st.st_mode))
    return load_folder(out, fd, path, &opts);
  char *config_path = config_beside(path);
  if (config_path == NULL) {
    close(fd);
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate a path beside '%s'", path);
  }
  mi__config config;
  status = read_config(&config, config_path, &opts);
  free(config_path);
  if (status == MI_OK)
    status = load_file(out, fd, &st, path, &config.hints, &opts);
  else
    close(fd);
  mi__config_free(&config);
  return status;
}
