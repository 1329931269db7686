/*
 * loader.h: what every checkpoint reader hands the name maps.
 *
 * A reader (safetensors.c, torchfile.c, ...) turns a file into a table of
 * named tensor views whose every byte it has checked lies inside the file,
 * plus the hints the file gives besides its tensors (head count, positional
 * kind, LayerNorm epsilon and type). namemap.c then maps TransformerLens or
 * GPT-2 names onto a model, checking every shape before allocating it.
 */
#ifndef MI_LOADER_H
#define MI_LOADER_H

#include "internal.h"

/* The name maps read tensors of rank 3 at most; deeper dims are not kept. */
#define MI__TENSOR_RANK 4

typedef struct mi__tensor {
  const char *name;        /* borrowed from the reader */
  const char *dtype_name;  /* as the file spells it, for messages */
  int dtype;               /* mi_dtype, or -1 when libmi cannot read it */
  size_t item;             /* bytes per element */
  size_t rank;
  size_t dims[MI__TENSOR_RANK];    /* the first MI__TENSOR_RANK dimensions */
  size_t strides[MI__TENSOR_RANK]; /* in elements, as dims */
  /*
   * Element [0, 0, ...]; every element the dims and strides reach lies in
   * memory the reader checked. NULL only for a tensor of no elements.
   */
  const unsigned char *data;
} mi__tensor;

/*
 * What a file says about the model besides its tensors; 0, NULL or
 * MI_POSITIONAL_DEFAULT where it says nothing. `source` names who said it
 * ("__metadata__", "config.json", "mi_load_options") for messages.
 */
typedef struct mi__model_hints {
  const char *source;
  size_t n_layers, n_heads, n_kv_heads, d_model, d_head, d_vocab, n_ctx;
  mi_positional positional;
  double ln_eps;
  /* TransformerLens's normalization_type: "LN", "LNPre", "None", ... */
  const char *normalization;
  /* 1: the model has MLP layers; -1: attention-only; 0: not said. */
  int mlp;
} mi__model_hints;

/*
 * Folds `from` into `into`: a field only `from` sets is taken, a field both
 * set differently is MI_ERR_INVALID_ARGUMENT naming both sources and values.
 * Strings are borrowed: `from`'s must outlive `into`'s use.
 */
mi_status mi__hints_merge(mi__model_hints *into, const mi__model_hints *from);

/*
 * A file's bytes as the readers see them (load.c). `bytes` spans the whole
 * file, `size` bytes. From memory (`fd` -1) all of it is there. From a file
 * (`fd` open on it, `path` naming it) `bytes` is address space the process
 * owns, and only the ranges a reader asked for with mi__image_fill hold the
 * file's bytes: headers and directories. Tensor data is never read into it;
 * the name maps read each tensor from `fd` into the model (or a one-tensor
 * scratch), so a load's peak is the weights plus one tensor, not plus the file.
 */
typedef struct mi__image {
  const unsigned char *bytes;
  size_t size;
  int fd;
  const char *path;
} mi__image;

/*
 * Makes bytes [offset, offset + length) of the image the file's, reading
 * them with pread (nothing to do from memory). MI_ERR_TRUNCATED for a range
 * past the size (callers check first) or a file that shrank since it was
 * opened, MI_ERR_IO for a read error; both name the path and offset.
 */
mi_status mi__image_fill(const mi__image *img, size_t offset, size_t length);

/*
 * Bytes [offset, offset + length) of the image into dst: a pread from the
 * file, or a copy from memory. Statuses as mi__image_fill's.
 */
mi_status mi__image_read(void *dst, const mi__image *img, size_t offset, size_t length);

/*
 * The model the tensors describe, named as a TransformerLens state dict or a
 * Hugging Face GPT-2 checkpoint (the table is sorted by name in place), with
 * `hints` checked against the tensors and `options->process` applied. The
 * tensors' data lies in `img` (their pointers into img->bytes) and is read
 * only during the call, through mi__image_read. Statuses as mi_model_load's.
 */
mi_status mi__model_from_tensors(mi_model **out, mi__tensor *tensors, size_t count,
                                 const mi__model_hints *hints,
                                 const mi_load_options *options, const mi__image *img);

/*
 * A model from a file's image, whatever its kind (load.c): the first bytes
 * choose the reader, and a file that is no model is refused saying what it
 * looks like. `hints`: what else was said (a config.json beside it).
 */
mi_status mi__load_image(mi_model **out, const mi__image *img, const mi__model_hints *hints,
                         const mi_load_options *options);

/* mi__load_image of `size` bytes in memory. */
mi_status mi__load_bytes(mi_model **out, const unsigned char *bytes, size_t size,
                         const mi__model_hints *hints, const mi_load_options *options);

/* ---- the safetensors container (safetensors.c), also read by sweep.c ----- */

/* A tensor's view, and the bytes of the data buffer it spans. */
typedef struct mi__st_tensor {
  mi__tensor view;         /* names borrowed from the JSON header */
  size_t begin, end;       /* byte offsets into the data buffer */
} mi__st_tensor;

typedef struct mi__st_file {
  struct json_t *header;   /* owned */
  const struct json_t *metadata; /* "__metadata__", borrowed from header; or NULL */
  const unsigned char *data;
  size_t data_size;
  size_t file_size;
  mi__st_tensor *tensors;  /* owned, in data order */
  size_t n_tensors;
} mi__st_file;

/*
 * Parses a whole file's bytes (borrowed for the views): every entry's dtype,
 * shape and offsets checked against the size, no two tensors overlapping,
 * __metadata__ values strings. Statuses: MI_ERR_TRUNCATED, MI_ERR_FORMAT,
 * MI_ERR_DTYPE, MI_ERR_SHAPE, MI_ERR_OUT_OF_MEMORY. Close it even on failure.
 */
mi_status mi__st_parse(mi__st_file *out, const unsigned char *bytes, size_t size);
void mi__st_close(mi__st_file *f);

/* ---- readers: each from a whole file's bytes, with what else said `hints` -- */

/* A .safetensors image (safetensors.c); its __metadata__ adds hints. */
mi_status mi__safetensors_load(mi_model **out, const mi__image *img,
                               const mi__model_hints *hints, const mi_load_options *options);

/* A torch.save zip archive holding a state dict (torchfile.c). */
mi_status mi__torch_load(mi_model **out, const mi__image *img,
                         const mi__model_hints *hints, const mi_load_options *options);

/*
 * A positional_embedding_type as TransformerLens names it ("standard",
 * "shortformer"; also "none") into *out; anything else ("rotary", "alibi")
 * is MI_ERR_UNSUPPORTED naming it and `source`.
 */
mi_status mi__positional_parse(mi_positional *out, const char *text, const char *source);

/* ---- config.json (config.c) ---------------------------------------------- */

/*
 * A config.json's hints. hints.source is `path` (owned here) and
 * hints.normalization is borrowed from `json`: both live until
 * mi__config_free. All zero when there is no config.
 */
typedef struct mi__config {
  mi__model_hints hints;
  char *path;
  struct json_t *json;
} mi__config;

/*
 * Parses a config.json's text (TransformerLens or Hugging Face GPT-2 names)
 * into *out; `source` names it in messages (copied). MI_ERR_FORMAT for text
 * that is not a JSON object, a known field of the wrong type or value, or
 * two fields that disagree (both named); MI_ERR_UNSUPPORTED for a
 * positional kind or model_type libmi does not run; MI_ERR_OUT_OF_MEMORY.
 * On failure *out is left empty (nothing to free).
 */
mi_status mi__config_parse(mi__config *out, const char *text, size_t size,
                           const char *source);

/*
 * Reads the file `path` and parses it as above. The file is opened without
 * blocking and must be a regular file (a FIFO is refused at once). `missing_ok`:
 * a file that does not exist leaves *out empty and returns MI_OK.
 * MI_ERR_IO naming the path otherwise.
 */
mi_status mi__config_read(mi__config *out, const char *path, bool missing_ok);

/* Frees what *config holds and empties it; an empty config is a no-op. */
void mi__config_free(mi__config *config);

/*
 * The whole of the regular file `path` into *out (malloc'd, NUL-terminated,
 * *size bytes before the NUL), as mi__open_regular and mi__pread_all read
 * it: MI_ERR_IO (ENOENT shows as *missing when `missing` is not NULL, with
 * *out NULL and MI_OK), MI_ERR_TRUNCATED, MI_ERR_OUT_OF_MEMORY.
 */
mi_status mi__file_read(char **out, size_t *size, bool *missing, const char *path);

/*
 * Opens the regular file `path` for reading without blocking (a FIFO or
 * device is refused at once, never waited on) into *fd, its size into *size.
 * MI_ERR_IO naming the path (ENOENT shows as *missing, with *fd -1 and
 * MI_OK, when `missing` is not NULL); MI_ERR_OUT_OF_MEMORY for a size beyond
 * size_t.
 */
mi_status mi__open_regular(int *fd, size_t *size, bool *missing, const char *path);

/*
 * Reads bytes 0..size of `fd` into buf with pread, retrying after EINTR and
 * short reads: the process owns what it read, so a file that shrinks or
 * changes meanwhile cannot fault it (a mapping would raise SIGBUS). A file
 * that ends early is MI_ERR_TRUNCATED naming `path` and the offset; a read
 * error MI_ERR_IO.
 */
mi_status mi__pread_all(void *buf, int fd, size_t size, const char *path);

/* mi__pread_all of the bytes offset..offset + size of `fd`. */
mi_status mi__pread_at(void *buf, int fd, size_t offset, size_t size, const char *path);

/* strerror(err), thread-safe (a per-thread buffer, valid until the next call). */
const char *mi__errno_text(int err);

/* `dir` + "/" + `name` (no doubled '/'), malloc'd; NULL when out of memory. */
char *mi__path_join(const char *dir, const char *name);

/* "[2, 8, 4]" into buf, for messages. */
const char *mi__format_shape(char *buf, size_t size, const mi__tensor *t);

#endif /* MI_LOADER_H */
