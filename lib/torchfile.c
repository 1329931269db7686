/*
 * torchfile.c: PyTorch torch.save archives holding a state dict, read
 * without Python and without running any of the pickle's code.
 *
 * Since PyTorch 1.6 torch.save writes a zip archive (entries stored, not
 * compressed): `<prefix>/data.pkl`, a pickle of the object whose tensors
 * point through persistent ids at `<prefix>/data/<key>` records holding
 * each storage's raw bytes, plus `<prefix>/version` and, from PyTorch 2.1,
 * `<prefix>/byteorder`. The zip is read here from its central directory,
 * every offset and length checked against the file size before it is used.
 *
 * The pickle is interpreted by a small stack machine that knows only the
 * opcodes a state dict is written with and five kinds of global: an
 * OrderedDict, torch's two tensor rebuilders, and the storage types. A
 * REDUCE of those is interpreted (an OrderedDict made, a tensor view
 * described); any other global, opcode or call is refused, so nothing in
 * the file is ever imported or called. Every object the machine makes costs
 * at least one byte of pickle, and nothing is walked recursively, so neither
 * the memory it takes nor its time can grow faster than the pickle's size.
 */
#include "loader.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- little-endian fields ------------------------------------------------------- */

static uint32_t le16(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t le32(const unsigned char *p) { return le16(p) | le16(p + 2) << 16; }
static uint64_t le64(const unsigned char *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

/* CRC-32 (zip's, reflected 0xEDB88320), bit by bit: only the small records
 * (the pickle, version, byteorder) are checked, never the storages. */
static uint32_t crc32_of(const unsigned char *p, size_t n) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int k = 0; k < 8; k++)
      crc = crc >> 1 ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

/* ---- the zip archive ------------------------------------------------------------ */

typedef struct zip_entry {
  const char *name;            /* in the central directory, not NUL-terminated */
  size_t name_len;
  const unsigned char *data;   /* the stored bytes, checked to lie in the file */
  size_t size;
  uint32_t crc;
} zip_entry;

typedef struct zip {
  const mi__image *img;        /* the file; what the zip code reads is filled in */
  zip_entry *entries;          /* owned; in central-directory order */
  zip_entry **sorted;          /* owned; by name, for lookups */
  size_t count;
} zip;

static void zip_close(zip *z) {
  free(z->entries);
  free(z->sorted);
}

static int entry_cmp(const char *a, size_t na, const char *b, size_t nb) {
  int c = memcmp(a, b, na < nb ? na : nb);
  return c != 0 ? c : (na > nb) - (na < nb);
}

static int by_entry_name(const void *a, const void *b) {
  const zip_entry *x = *(const zip_entry *const *)a, *y = *(const zip_entry *const *)b;
  return entry_cmp(x->name, x->name_len, y->name, y->name_len);
}

static const zip_entry *zip_find(const zip *z, const char *name, size_t len) {
  size_t lo = 0, hi = z->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = entry_cmp(z->sorted[mid]->name, z->sorted[mid]->name_len, name, len);
    if (c == 0)
      return z->sorted[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

/* Whether [offset, offset + length) lies inside a file of `size` bytes. */
static bool inside(size_t offset, uint64_t length, size_t size) {
  return offset <= size && length <= size - offset;
}

/* Where the central directory is, from the end records. */
typedef struct zip_end {
  uint64_t entries, cd_size, cd_offset;
  size_t end; /* the directory must end before this offset */
} zip_end;

static mi_status zip64_end(zip_end *out, const mi__image *img, size_t eocd) {
  const unsigned char *bytes = img->bytes;
  size_t size = img->size;
  mi_status status = eocd < 20 ? MI_OK : mi__image_fill(img, eocd - 20, 20);
  if (status != MI_OK)
    return status;
  if (eocd < 20 || le32(bytes + eocd - 20) != 0x07064b50u)
    return mi__fail(MI_ERR_FORMAT, "the zip's end record marks zip64 fields, but the "
                    "zip64 end locator is not before it (at byte %zu)", eocd);
  const unsigned char *loc = bytes + eocd - 20;
  uint64_t at = le64(loc + 8);
  if (le32(loc + 4) != 0 || le32(loc + 16) > 1)
    return mi__fail(MI_ERR_UNSUPPORTED, "the zip archive spans several disks");
  bool room = at <= eocd - 20 && eocd - 20 - at >= 56;
  if (room && (status = mi__image_fill(img, (size_t)at, 56)) != MI_OK)
    return status;
  if (!room || le32(bytes + at) != 0x06064b50u)
    return mi__fail(MI_ERR_FORMAT, "the zip64 end record the locator points at (byte "
                    "%llu) is not inside the %zu-byte file", (unsigned long long)at, size);
  const unsigned char *rec = bytes + at;
  if (le32(rec + 16) != 0 || le32(rec + 20) != 0)
    return mi__fail(MI_ERR_UNSUPPORTED, "the zip archive spans several disks");
  out->entries = le64(rec + 32);
  out->cd_size = le64(rec + 40);
  out->cd_offset = le64(rec + 48);
  out->end = (size_t)at;
  return MI_OK;
}

static mi_status find_end(zip_end *out, const mi__image *img) {
  const unsigned char *bytes = img->bytes;
  size_t size = img->size;
  /* The end record (22 bytes) is followed only by its comment (< 64 KiB). */
  if (size < 22)
    return mi__fail(MI_ERR_TRUNCATED, "a %zu-byte zip archive is shorter than its "
                    "22-byte end record", size);
  size_t lowest = size - 22 > 65535 ? size - 22 - 65535 : 0;
  mi_status status = mi__image_fill(img, lowest, size - lowest);
  if (status != MI_OK)
    return status;
  for (size_t at = size - 22 + 1; at-- > lowest;) {
    const unsigned char *e = bytes + at;
    if (le32(e) != 0x06054b50u || at + 22 + le16(e + 20) != size)
      continue;
    if (le16(e + 4) != 0 && le16(e + 4) != 0xFFFF)
      return mi__fail(MI_ERR_UNSUPPORTED, "the zip archive spans several disks");
    out->entries = le16(e + 10);
    out->cd_size = le32(e + 12);
    out->cd_offset = le32(e + 16);
    out->end = at;
    if (out->entries == 0xFFFF || out->cd_size == 0xFFFFFFFFu ||
        out->cd_offset == 0xFFFFFFFFu)
      return zip64_end(out, img, at);
    return MI_OK;
  }
  return mi__fail(MI_ERR_TRUNCATED, "no zip end record in the last %zu bytes: the "
                  "archive is truncated or not a zip", size - lowest);
}

/* The zip64 extended-information extra field fills the 32-bit fields that say 0xFFFFFFFF. */
static mi_status zip64_extra(uint64_t *usize, uint64_t *csize, uint64_t *offset,
                             const unsigned char *extra, size_t n, const zip_entry *e) {
  uint64_t *wanted[3] = {*usize == 0xFFFFFFFFu ? usize : NULL,
                         *csize == 0xFFFFFFFFu ? csize : NULL,
                         *offset == 0xFFFFFFFFu ? offset : NULL};
  for (size_t i = 0; i + 4 <= n;) {
    size_t id = le16(extra + i), len = le16(extra + i + 2);
    if (len > n - i - 4)
      break;
    if (id == 0x0001) {
      size_t used = 0;
      for (int k = 0; k < 3; k++)
        if (wanted[k] != NULL) {
          if (used + 8 > len)
            return mi__fail(MI_ERR_FORMAT, "zip entry '%.*s': its zip64 extra field is "
                            "too short", (int)e->name_len, e->name);
          *wanted[k] = le64(extra + i + 4 + used);
          used += 8;
        }
      return MI_OK;
    }
    i += 4 + len;
  }
  if (wanted[0] || wanted[1] || wanted[2])
    return mi__fail(MI_ERR_FORMAT, "zip entry '%.*s' has 32-bit fields marked zip64 but "
                    "no zip64 extra field", (int)e->name_len, e->name);
  return MI_OK;
}

static const char *method_name(unsigned method) {
  switch (method) {
  case 8: return "deflate";
  case 9: return "deflate64";
  case 12: return "bzip2";
  case 14: return "LZMA";
  case 93: return "zstd";
  default: return "an unknown method";
  }
}

/* One central-directory entry at `p` (checked to hold its 46 fixed bytes). */
static mi_status read_entry(zip_entry *e, const unsigned char *p, size_t room,
                            size_t *used, const mi__image *img) {
  const unsigned char *bytes = img->bytes;
  size_t size = img->size;
  size_t name_len = le16(p + 28), extra_len = le16(p + 30), comment_len = le16(p + 32);
  if (46 + name_len + extra_len + comment_len > room)
    return mi__fail(MI_ERR_FORMAT, "a zip central directory entry runs past the "
                    "directory's end");
  *used = 46 + name_len + extra_len + comment_len;
  e->name = (const char *)p + 46;
  e->name_len = name_len;
  unsigned flags = le16(p + 8), method = le16(p + 10);
  e->crc = le32(p + 16);
  uint64_t csize = le32(p + 20), usize = le32(p + 24), offset = le32(p + 42);
  mi_status status = zip64_extra(&usize, &csize, &offset, p + 46 + name_len, extra_len, e);
  if (status != MI_OK)
    return status;
  if (flags & 1u)
    return mi__fail(MI_ERR_UNSUPPORTED, "zip entry '%.*s' is encrypted", (int)name_len,
                    e->name);
  if (method != 0)
    return mi__fail(MI_ERR_UNSUPPORTED,
                    "zip entry '%.*s' is compressed (%s); torch.save stores its entries "
                    "uncompressed, and libmi reads only those: re-save it with "
                    "torch.save(torch.load(path), new_path)",
                    (int)name_len, e->name, method_name(method));
  if (csize != usize)
    return mi__fail(MI_ERR_FORMAT, "zip entry '%.*s' is stored, but its compressed size "
                    "%llu differs from its size %llu", (int)name_len, e->name,
                    (unsigned long long)csize, (unsigned long long)usize);
  /* The local header repeats the name; its extra field (torch's alignment
   * padding) may differ from the central one. */
  if (offset > size || size - (size_t)offset < 30)
    return mi__fail(MI_ERR_TRUNCATED, "zip entry '%.*s': its local header at byte %llu "
                    "is past the end of the %zu-byte file", (int)name_len, e->name,
                    (unsigned long long)offset, size);
  if ((status = mi__image_fill(img, (size_t)offset, 30)) != MI_OK)
    return status;
  const unsigned char *local = bytes + offset;
  if (le32(local) != 0x04034b50u)
    return mi__fail(MI_ERR_FORMAT, "zip entry '%.*s': no local header at byte %llu",
                    (int)name_len, e->name, (unsigned long long)offset);
  size_t start = (size_t)offset + 30 + le16(local + 26) + le16(local + 28);
  bool named = inside((size_t)offset + 30, le16(local + 26), size) &&
               le16(local + 26) == name_len;
  if (named && (status = mi__image_fill(img, (size_t)offset + 30, name_len)) != MI_OK)
    return status;
  if (!named || memcmp(local + 30, e->name, name_len) != 0)
    return mi__fail(MI_ERR_FORMAT, "zip entry '%.*s': its local header names another "
                    "file", (int)name_len, e->name);
  if (!inside(start, usize, size))
    return mi__fail(MI_ERR_TRUNCATED, "zip entry '%.*s' (%llu bytes from byte %zu) ends "
                    "past the end of the %zu-byte file", (int)name_len, e->name,
                    (unsigned long long)usize, start, size);
  e->data = bytes + start;
  e->size = (size_t)usize;
  return MI_OK;
}

static mi_status zip_open(zip *z, const mi__image *img) {
  const unsigned char *bytes = img->bytes;
  size_t size = img->size;
  z->img = img;
  zip_end end = {0};
  mi_status status = find_end(&end, img);
  if (status != MI_OK)
    return status;
  if (end.cd_offset > end.end || end.cd_size > end.end - end.cd_offset)
    return mi__fail(MI_ERR_TRUNCATED, "the zip central directory (%llu bytes at byte %llu) "
                    "is not inside the %zu-byte file", (unsigned long long)end.cd_size,
                    (unsigned long long)end.cd_offset, size);
  if ((status = mi__image_fill(img, (size_t)end.cd_offset, (size_t)end.cd_size)) != MI_OK)
    return status;
  /* Each entry takes at least 46 bytes, which bounds what is allocated. */
  if (end.entries > end.cd_size / 46)
    return mi__fail(MI_ERR_FORMAT, "the zip end record counts %llu entries, more than its "
                    "%llu-byte central directory can hold", (unsigned long long)end.entries,
                    (unsigned long long)end.cd_size);
  z->count = (size_t)end.entries;
  z->entries = calloc(z->count ? z->count : 1, sizeof *z->entries);
  z->sorted = calloc(z->count ? z->count : 1, sizeof *z->sorted);
  if (z->entries == NULL || z->sorted == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate %zu zip entries", z->count);
  const unsigned char *p = bytes + end.cd_offset;
  size_t room = (size_t)end.cd_size;
  for (size_t i = 0; i < z->count; i++) {
    if (room < 46 || le32(p) != 0x02014b50u)
      return mi__fail(MI_ERR_FORMAT, "zip central directory entry %zu of %zu is missing "
                      "or malformed (at byte %zu)", i, z->count, (size_t)(p - bytes));
    size_t used = 0;
    status = read_entry(&z->entries[i], p, room, &used, img);
    if (status != MI_OK)
      return status;
    z->sorted[i] = &z->entries[i];
    p += used;
    room -= used;
  }
  qsort(z->sorted, z->count, sizeof *z->sorted, by_entry_name);
  for (size_t i = 1; i < z->count; i++)
    if (by_entry_name(&z->sorted[i - 1], &z->sorted[i]) == 0)
      return mi__fail(MI_ERR_FORMAT, "zip entry '%.*s' appears twice",
                      (int)z->sorted[i]->name_len, z->sorted[i]->name);
  return MI_OK;
}

/* A small record checked against its CRC. PyTorch 2.1+ can be told not to
 * compute CRCs (torch.serialization.config.save.compute_crc32); it then
 * writes 0, which is taken to mean "not computed". */
static mi_status check_crc(const zip *z, const zip_entry *e) {
  /* Read here: a record is in the image once it is checked. */
  mi_status status = mi__image_fill(z->img, (size_t)(e->data - z->img->bytes), e->size);
  if (status != MI_OK)
    return status;
  uint32_t crc = crc32_of(e->data, e->size);
  if (e->crc != 0 && crc != e->crc)
    return mi__fail(MI_ERR_FORMAT, "zip entry '%.*s': CRC-32 is %08x, but the directory "
                    "says %08x: the file is damaged", (int)e->name_len, e->name, crc, e->crc);
  return MI_OK;
}

/* ---- pickle objects ------------------------------------------------------------- */

enum { OBJ_NONE, OBJ_BOOL, OBJ_INT, OBJ_FLOAT, OBJ_TEXT, OBJ_BYTES, OBJ_TUPLE, OBJ_LIST,
       OBJ_DICT, OBJ_GLOBAL, OBJ_STORAGE, OBJ_TENSOR };
static const char *const kind_names[] = {"None", "bool", "int", "float", "str", "bytes",
                                         "tuple", "list", "dict", "global", "storage",
                                         "tensor"};

/* The globals a state dict uses; nothing else may be named. */
enum { G_ORDERED_DICT, G_REBUILD_TENSOR, G_REBUILD_PARAMETER, G_STORAGE };
typedef struct global_def {
  const char *module, *name;
  int kind;
  int dtype;          /* storages: mi_dtype, or -1 */
  size_t item;        /* storages: bytes per element */
  const char *dtype_name;
} global_def;

static const global_def globals[] = {
    {"collections", "OrderedDict", G_ORDERED_DICT, 0, 0, NULL},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR, 0, 0, NULL},
    {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAMETER, 0, 0, NULL},
    {"torch", "FloatStorage", G_STORAGE, MI_DTYPE_F32, 4, "float32"},
    {"torch", "HalfStorage", G_STORAGE, MI_DTYPE_F16, 2, "float16"},
    {"torch", "BFloat16Storage", G_STORAGE, MI_DTYPE_BF16, 2, "bfloat16"},
    {"torch", "DoubleStorage", G_STORAGE, MI_DTYPE_F64, 8, "float64"},
    {"torch", "BoolStorage", G_STORAGE, -1, 1, "bool"},
    {"torch", "ByteStorage", G_STORAGE, -1, 1, "uint8"},
    {"torch", "CharStorage", G_STORAGE, -1, 1, "int8"},
    {"torch", "ShortStorage", G_STORAGE, -1, 2, "int16"},
    {"torch", "IntStorage", G_STORAGE, -1, 4, "int32"},
    {"torch", "LongStorage", G_STORAGE, -1, 8, "int64"},
    {"torch", "ComplexFloatStorage", G_STORAGE, -1, 8, "complex64"},
    {"torch", "ComplexDoubleStorage", G_STORAGE, -1, 16, "complex128"},
    {"torch", "UntypedStorage", G_STORAGE, -1, 1, "bytes"},
    {"torch.storage", "UntypedStorage", G_STORAGE, -1, 1, "bytes"},
};

typedef struct obj obj;
struct obj {
  int kind;
  union {
    bool b;
    int64_t i;
    double f;
    struct { char *text; size_t len; } s;            /* NUL-terminated copy */
    struct { obj **items; size_t n, cap; } seq;       /* tuple, list; dict: key, value, ... */
    const global_def *global;
    struct {
      const global_def *type;
      const zip_entry *record;
      const char *key;                                /* borrowed from its pid */
      size_t numel;
    } storage;
    struct {
      const obj *storage;
      size_t offset, rank, numel;
      size_t *dims, *strides;                         /* rank each, owned */
    } tensor;
  } u;
};

/* The machine: its stack, marks and memo, and every object it made. */
typedef struct unpickler {
  const unsigned char *p;    /* the pickle */
  size_t size, pos, op_at;   /* op_at: where the current opcode is, for messages */
  const zip *z;
  const char *prefix;        /* the archive's top directory, with its '/' */
  size_t prefix_len;
  obj **stack;
  size_t n_stack, cap_stack;
  size_t *marks;
  size_t n_marks, cap_marks;
  obj **memo;
  size_t n_memo;             /* slots allocated */
  size_t memo_count;         /* slots set: MEMOIZE's next index */
  obj **all;
  size_t n_all, cap_all;
} unpickler;

/* Grows *items (of *cap elements of `size` bytes) to hold n + 1. */
static bool grow(void *items, size_t *cap, size_t n, size_t size) {
  if (n < *cap)
    return true;
  size_t bigger = *cap ? 2 * *cap : 8, bytes;
  if (!mi__mul_size(&bytes, bigger, size))
    return false;
  void *grown = realloc(*(void **)items, bytes);
  if (grown == NULL)
    return false;
  *(void **)items = grown;
  *cap = bigger;
  return true;
}

static void obj_free(obj *o) {
  if (o->kind == OBJ_TEXT || o->kind == OBJ_BYTES)
    free(o->u.s.text);
  else if (o->kind == OBJ_TUPLE || o->kind == OBJ_LIST || o->kind == OBJ_DICT)
    free(o->u.seq.items);
  else if (o->kind == OBJ_TENSOR) {
    free(o->u.tensor.dims);
    free(o->u.tensor.strides);
  }
  free(o);
}

static void unpickler_close(unpickler *up) {
  for (size_t i = 0; i < up->n_all; i++)
    obj_free(up->all[i]);
  free(up->all);
  free(up->stack);
  free(up->marks);
  free(up->memo);
}

static mi_status out_of_memory(const unpickler *up) {
  return mi__fail(MI_ERR_OUT_OF_MEMORY, "out of memory interpreting data.pkl at byte %zu",
                  up->op_at);
}

/* A new object of `kind`, owned by the machine. */
static mi_status make(obj **out, unpickler *up, int kind) {
  *out = NULL;
  obj *o = calloc(1, sizeof *o);
  if (o == NULL || !grow(&up->all, &up->cap_all, up->n_all, sizeof *up->all)) {
    free(o);
    return out_of_memory(up);
  }
  o->kind = kind;
  up->all[up->n_all++] = o;
  *out = o;
  return MI_OK;
}

static mi_status push(unpickler *up, obj *o) {
  if (!grow(&up->stack, &up->cap_stack, up->n_stack, sizeof *up->stack))
    return out_of_memory(up);
  up->stack[up->n_stack++] = o;
  return MI_OK;
}

static mi_status make_push(obj **out, unpickler *up, int kind) {
  mi_status status = make(out, up, kind);
  return status == MI_OK ? push(up, *out) : status;
}

/* Where the stack may be popped down to: the last mark, or the bottom. */
static size_t floor_of(const unpickler *up) {
  return up->n_marks ? up->marks[up->n_marks - 1] : 0;
}

static const char *opcode_name(unsigned op);

static mi_status need(const unpickler *up, size_t n) {
  if (up->n_stack - floor_of(up) < n)
    return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: %s needs %zu item%s on the stack, "
                    "which has %zu%s", up->op_at, opcode_name(up->p[up->op_at]), n,
                    n == 1 ? "" : "s", up->n_stack - floor_of(up),
                    up->n_marks ? " above its mark" : "");
  return MI_OK;
}

static obj *pop(unpickler *up) { return up->stack[--up->n_stack]; }

/* The items above the last mark, which is removed. */
static mi_status pop_mark(size_t *out_from, unpickler *up) {
  *out_from = 0;
  if (up->n_marks == 0)
    return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: %s without a MARK", up->op_at,
                    opcode_name(up->p[up->op_at]));
  *out_from = up->marks[--up->n_marks];
  return MI_OK;
}

/* Appends the stack's items [from, n_stack) to a sequence and pops them. */
static mi_status take_items(unpickler *up, obj *seq, size_t from) {
  size_t n = up->n_stack - from, want = seq->u.seq.n + n;
  if (want > seq->u.seq.cap) {
    obj **grown = realloc(seq->u.seq.items, want * sizeof *grown);
    if (grown == NULL)
      return out_of_memory(up);
    seq->u.seq.items = grown;
    seq->u.seq.cap = want;
  }
  if (n > 0)
    memcpy(seq->u.seq.items + seq->u.seq.n, up->stack + from, n * sizeof *up->stack);
  seq->u.seq.n = want;
  up->n_stack = from;
  return MI_OK;
}

/* ---- reading operands ----------------------------------------------------------- */

static mi_status operand(const unsigned char **out, unpickler *up, size_t n) {
  *out = NULL; /* set on every path, so -O3 sees callers' operands initialised */
  if (n > up->size - up->pos)
    return mi__fail(MI_ERR_TRUNCATED, "data.pkl byte %zu: %s needs %zu more bytes, but the "
                    "%zu-byte pickle ends first", up->op_at, opcode_name(up->p[up->op_at]),
                    n, up->size);
  *out = up->p + up->pos;
  up->pos += n;
  return MI_OK;
}

/* A length field of `width` bytes, then that many bytes. */
static mi_status counted(const unsigned char **out, size_t *out_len, unpickler *up,
                         size_t width) {
  const unsigned char *field;
  mi_status status = operand(&field, up, width);
  if (status != MI_OK)
    return status;
  uint64_t len = width == 1 ? field[0] : width == 4 ? le32(field) : le64(field);
  if (len > up->size - up->pos)
    return mi__fail(MI_ERR_TRUNCATED, "data.pkl byte %zu: %s of %llu bytes, but the pickle "
                    "has only %zu left", up->op_at, opcode_name(up->p[up->op_at]),
                    (unsigned long long)len, up->size - up->pos);
  *out_len = (size_t)len;
  return operand(out, up, (size_t)len);
}

static mi_status push_string(unpickler *up, int kind, const unsigned char *bytes,
                             size_t len) {
  if (kind == OBJ_TEXT && memchr(bytes, '\0', len) != NULL)
    return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: a string holds a NUL character",
                    up->op_at);
  obj *o;
  mi_status status = make_push(&o, up, kind);
  if (status != MI_OK)
    return status;
  o->u.s.text = malloc(len + 1);
  if (o->u.s.text == NULL)
    return out_of_memory(up);
  memcpy(o->u.s.text, bytes, len);
  o->u.s.text[len] = '\0';
  o->u.s.len = len;
  return MI_OK;
}

static mi_status push_int(unpickler *up, int64_t value) {
  obj *o;
  mi_status status = make_push(&o, up, OBJ_INT);
  if (status == MI_OK)
    o->u.i = value;
  return status;
}

/* ---- globals, memo -------------------------------------------------------------- */

static mi_status push_global(unpickler *up, const char *module, size_t module_len,
                             const char *name, size_t name_len) {
  for (size_t i = 0; i < sizeof globals / sizeof globals[0]; i++)
    if (strlen(globals[i].module) == module_len && strlen(globals[i].name) == name_len &&
        memcmp(globals[i].module, module, module_len) == 0 &&
        memcmp(globals[i].name, name, name_len) == 0) {
      obj *o;
      mi_status status = make_push(&o, up, OBJ_GLOBAL);
      if (status == MI_OK)
        o->u.global = &globals[i];
      return status;
    }
  int m = module_len > 200 ? 200 : (int)module_len, n = name_len > 200 ? 200 : (int)name_len;
  return mi__fail(MI_ERR_FORMAT,
                  "data.pkl byte %zu: the pickle names the global %.*s.%.*s, which a state "
                  "dict does not use; libmi's reader knows only collections.OrderedDict, "
                  "torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and the "
                  "torch.*Storage types, and never imports or calls anything (a whole "
                  "pickled model? save its model.state_dict() instead)",
                  up->op_at, m, module, n, name);
}

/* GLOBAL: "module\nname\n". */
static mi_status op_global(unpickler *up) {
  const char *parts[2] = {NULL, NULL};
  size_t lens[2] = {0, 0};
  for (int k = 0; k < 2; k++) {
    const char *line = (const char *)up->p + up->pos;
    const char *nl = memchr(line, '\n', up->size - up->pos);
    if (nl == NULL)
      return mi__fail(MI_ERR_TRUNCATED, "data.pkl byte %zu: GLOBAL's %s is not ended by a "
                      "newline before the pickle ends", up->op_at, k ? "name" : "module");
    parts[k] = line;
    lens[k] = (size_t)(nl - line);
    up->pos += lens[k] + 1;
  }
  return push_global(up, parts[0], lens[0], parts[1], lens[1]);
}

static mi_status op_stack_global(unpickler *up) {
  mi_status status = need(up, 2);
  if (status != MI_OK)
    return status;
  obj *name = pop(up), *module = pop(up);
  if (module->kind != OBJ_TEXT || name->kind != OBJ_TEXT)
    return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: STACK_GLOBAL of a %s and a %s, not "
                    "two strings", up->op_at, kind_names[module->kind],
                    kind_names[name->kind]);
  return push_global(up, module->u.s.text, module->u.s.len, name->u.s.text, name->u.s.len);
}

static mi_status memo_put(unpickler *up, uint64_t index) {
  mi_status status = need(up, 1);
  if (status != MI_OK)
    return status;
  /* A pickler numbers its memo from 0, one index per PUT (at least 2
   * bytes each), so a real index is below the pickle's size: beyond it, an
   * index is refused rather than allowed to size the memo. */
  if (index >= up->size)
    return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: memo index %llu is out of range for "
                    "a %zu-byte pickle", up->op_at, (unsigned long long)index, up->size);
  if (index >= up->n_memo) {
    size_t n = up->n_memo ? up->n_memo : 16;
    while (n <= index)
      n *= 2;
    if (n > up->size)
      n = up->size;
    obj **grown = realloc(up->memo, n * sizeof *grown);
    if (grown == NULL)
      return out_of_memory(up);
    memset(grown + up->n_memo, 0, (n - up->n_memo) * sizeof *grown);
    up->memo = grown;
    up->n_memo = n;
  }
  up->memo_count += up->memo[index] == NULL;
  up->memo[index] = up->stack[up->n_stack - 1];
  return MI_OK;
}

static mi_status memo_get(unpickler *up, uint64_t index) {
  if (index >= up->n_memo || up->memo[index] == NULL)
    return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: memo index %llu is out of range: "
                    "nothing was stored there", up->op_at, (unsigned long long)index);
  return push(up, up->memo[index]);
}

/* ---- what REDUCE and BINPERSID may build ---------------------------------------- */

static bool is_int(const obj *o, int64_t at_least) {
  return o->kind == OBJ_INT && o->u.i >= at_least;
}

/* ('storage', torch.<Type>Storage, key, location, numel) -> its record. */
static mi_status op_persid(unpickler *up) {
  mi_status status = need(up, 1);
  if (status != MI_OK)
    return status;
  const obj *pid = pop(up);
  const obj *const *f = pid->kind == OBJ_TUPLE ? (const obj *const *)pid->u.seq.items : NULL;
  if (f == NULL || pid->u.seq.n != 5 || f[0]->kind != OBJ_TEXT ||
      strcmp(f[0]->u.s.text, "storage") != 0 || f[1]->kind != OBJ_GLOBAL ||
      f[1]->u.global->kind != G_STORAGE || f[2]->kind != OBJ_TEXT || !is_int(f[4], 0))
    return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: a persistent id that is not "
                    "('storage', torch.<type>Storage, key, location, size)", up->op_at);
  const global_def *type = f[1]->u.global;
  const char *key = f[2]->u.s.text;
  char name[512];
  int n = snprintf(name, sizeof name, "%.*sdata/%s", (int)up->prefix_len, up->prefix, key);
  const zip_entry *record =
      n > 0 && (size_t)n < sizeof name ? zip_find(up->z, name, (size_t)n) : NULL;
  if (record == NULL)
    return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: storage '%s' has no record '%s' in "
                    "the archive", up->op_at, key, name);
  size_t numel = (size_t)f[4]->u.i, bytes;
  if ((uint64_t)f[4]->u.i > SIZE_MAX || !mi__mul_size(&bytes, numel, type->item) ||
      bytes != record->size)
    return mi__fail(MI_ERR_TRUNCATED, "storage '%s' holds %llu %s elements (%llu bytes), "
                    "but its record '%s' has %zu bytes", key, (unsigned long long)f[4]->u.i,
                    type->dtype_name,
                    (unsigned long long)f[4]->u.i * (unsigned long long)type->item, name,
                    record->size);
  obj *o;
  status = make_push(&o, up, OBJ_STORAGE);
  if (status == MI_OK) {
    o->u.storage.type = type;
    o->u.storage.record = record;
    o->u.storage.numel = numel;
    o->u.storage.key = key;
  }
  return status;
}

/*
 * _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
 * backward_hooks[, metadata]): a view, whose last element must lie inside
 * its storage.
 */
static mi_status rebuild_tensor(unpickler *up, const obj *args) {
  const obj *const *a = (const obj *const *)args->u.seq.items;
  if ((args->u.seq.n != 6 && args->u.seq.n != 7) || a[0]->kind != OBJ_STORAGE ||
      !is_int(a[1], 0) || a[2]->kind != OBJ_TUPLE || a[3]->kind != OBJ_TUPLE ||
      a[2]->u.seq.n != a[3]->u.seq.n)
    return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: _rebuild_tensor_v2 takes (storage, "
                    "offset, size, stride, requires_grad, hooks), with as many strides as "
                    "sizes", up->op_at);
  const obj *storage = a[0];
  size_t rank = a[2]->u.seq.n, offset = (size_t)a[1]->u.i, last = offset, numel = 1;
  obj *t;
  mi_status status = make(&t, up, OBJ_TENSOR);
  if (status != MI_OK)
    return status;
  t->u.tensor.dims = calloc(rank ? rank : 1, sizeof(size_t));
  t->u.tensor.strides = calloc(rank ? rank : 1, sizeof(size_t));
  if (t->u.tensor.dims == NULL || t->u.tensor.strides == NULL)
    return out_of_memory(up);
  bool overflow = (uint64_t)a[1]->u.i > SIZE_MAX, empty = false;
  for (size_t k = 0; k < rank; k++) {
    const obj *dim = a[2]->u.seq.items[k], *stride = a[3]->u.seq.items[k];
    if (!is_int(dim, 0) || !is_int(stride, 0))
      return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: a tensor's size and stride must "
                      "be non-negative integers (axis %zu)", up->op_at, k);
    size_t d = (size_t)dim->u.i, s = (size_t)stride->u.i, reach;
    overflow |= (uint64_t)dim->u.i > SIZE_MAX || (uint64_t)stride->u.i > SIZE_MAX;
    t->u.tensor.dims[k] = d;
    t->u.tensor.strides[k] = s;
    empty |= d == 0;
    overflow |= !mi__mul_size(&numel, numel, d);
    if (d > 0)
      overflow |= !mi__mul_size(&reach, d - 1, s) || __builtin_add_overflow(last, reach, &last);
  }
  if (empty)
    numel = 0;
  else if (overflow || last >= storage->u.storage.numel)
    return mi__fail(MI_ERR_SHAPE, "data.pkl byte %zu: a tensor view (offset %zu, %zu "
                    "axes) reaches element %s%zu of its storage '%s', which has %zu "
                    "elements", up->op_at, offset, rank, overflow ? "beyond " : "",
                    overflow ? SIZE_MAX : last, storage->u.storage.key,
                    storage->u.storage.numel);
  t->u.tensor.storage = storage;
  t->u.tensor.offset = offset;
  t->u.tensor.rank = rank;
  t->u.tensor.numel = numel;
  return push(up, t);
}

static mi_status op_reduce(unpickler *up) {
  mi_status status = need(up, 2);
  if (status != MI_OK)
    return status;
  const obj *args = pop(up), *callable = pop(up);
  if (callable->kind != OBJ_GLOBAL || args->kind != OBJ_TUPLE)
    return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: REDUCE calls a %s with a %s; libmi "
                    "interprets only a global with a tuple", up->op_at,
                    kind_names[callable->kind], kind_names[args->kind]);
  const global_def *g = callable->u.global;
  obj *o;
  switch (g->kind) {
  case G_ORDERED_DICT:
    if (args->u.seq.n != 0)
      break;
    return make_push(&o, up, OBJ_DICT);
  case G_REBUILD_TENSOR:
    return rebuild_tensor(up, args);
  case G_REBUILD_PARAMETER:
    /* (data, requires_grad, backward_hooks): the tensor itself. */
    if (args->u.seq.n != 3 || args->u.seq.items[0]->kind != OBJ_TENSOR)
      break;
    return push(up, args->u.seq.items[0]);
  default:
    break;
  }
  return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: REDUCE calls %s.%s with %zu "
                  "arguments, which is not how a state dict uses it", up->op_at, g->module,
                  g->name, args->u.seq.n);
}

/* BUILD sets an object's state: only an OrderedDict's _metadata, which is dropped. */
static mi_status op_build(unpickler *up) {
  mi_status status = need(up, 2);
  if (status != MI_OK)
    return status;
  const obj *state = pop(up), *target = up->stack[up->n_stack - 1];
  if (target->kind != OBJ_DICT || state->kind != OBJ_DICT)
    return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: BUILD sets the state of a %s to a "
                    "%s; libmi accepts only an OrderedDict's metadata", up->op_at,
                    kind_names[target->kind], kind_names[state->kind]);
  return MI_OK;
}

/* SETITEM(S), APPEND(S): into the dict or list below the items. */
static mi_status op_add_items(unpickler *up, int kind, bool from_mark) {
  size_t from = up->n_stack - (kind == OBJ_DICT ? 2 : 1);
  mi_status status = from_mark ? pop_mark(&from, up) : need(up, kind == OBJ_DICT ? 3 : 2);
  if (status != MI_OK)
    return status;
  if (from == 0 || from <= floor_of(up) || up->stack[from - 1]->kind != kind)
    return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: %s adds to a %s, not a %s",
                    up->op_at, opcode_name(up->p[up->op_at]),
                    from == 0 || from <= floor_of(up) ? "missing object"
                                                      : kind_names[up->stack[from - 1]->kind],
                    kind_names[kind]);
  if (kind == OBJ_DICT && (up->n_stack - from) % 2 != 0)
    return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: SETITEMS with a key lacking its "
                    "value", up->op_at);
  return take_items(up, up->stack[from - 1], from);
}

/* TUPLE, LIST, DICT, TUPLE1..3, EMPTY_*: a new sequence of the top `n` items. */
static mi_status op_sequence(unpickler *up, int kind, size_t n, bool from_mark) {
  size_t from = up->n_stack - n;
  mi_status status = from_mark ? pop_mark(&from, up) : need(up, n);
  if (status != MI_OK)
    return status;
  if (kind == OBJ_DICT && (up->n_stack - from) % 2 != 0)
    return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: DICT with a key lacking its value",
                    up->op_at);
  obj *o;
  status = make(&o, up, kind);
  if (status == MI_OK)
    status = take_items(up, o, from);
  return status == MI_OK ? push(up, o) : status;
}

/* ---- the opcodes ---------------------------------------------------------------- */

static const struct { unsigned char op; const char *name; } opcode_names[] = {
    {'(', "MARK"}, {'.', "STOP"}, {'0', "POP"}, {'1', "POP_MARK"}, {'2', "DUP"},
    {'F', "FLOAT"}, {'I', "INT"}, {'J', "BININT"}, {'K', "BININT1"}, {'L', "LONG"},
    {'M', "BININT2"}, {'N', "NONE"}, {'P', "PERSID"}, {'Q', "BINPERSID"}, {'R', "REDUCE"},
    {'S', "STRING"}, {'T', "BINSTRING"}, {'U', "SHORT_BINSTRING"}, {'V', "UNICODE"},
    {'X', "BINUNICODE"}, {'a', "APPEND"}, {'b', "BUILD"}, {'c', "GLOBAL"}, {'d', "DICT"},
    {'}', "EMPTY_DICT"}, {'e', "APPENDS"}, {'g', "GET"}, {'h', "BINGET"}, {'i', "INST"},
    {'j', "LONG_BINGET"}, {'l', "LIST"}, {']', "EMPTY_LIST"}, {'o', "OBJ"}, {'p', "PUT"},
    {'q', "BINPUT"}, {'r', "LONG_BINPUT"}, {'s', "SETITEM"}, {'t', "TUPLE"},
    {')', "EMPTY_TUPLE"}, {'u', "SETITEMS"}, {'G', "BINFLOAT"}, {0x80, "PROTO"},
    {0x81, "NEWOBJ"}, {0x82, "EXT1"}, {0x83, "EXT2"}, {0x84, "EXT4"}, {0x85, "TUPLE1"},
    {0x86, "TUPLE2"}, {0x87, "TUPLE3"}, {0x88, "NEWTRUE"}, {0x89, "NEWFALSE"},
    {0x8a, "LONG1"}, {0x8b, "LONG4"}, {'B', "BINBYTES"}, {'C', "SHORT_BINBYTES"},
    {0x8c, "SHORT_BINUNICODE"}, {0x8d, "BINUNICODE8"}, {0x8e, "BINBYTES8"},
    {0x8f, "EMPTY_SET"}, {0x90, "ADDITEMS"}, {0x91, "FROZENSET"}, {0x92, "NEWOBJ_EX"},
    {0x93, "STACK_GLOBAL"}, {0x94, "MEMOIZE"}, {0x95, "FRAME"}, {0x96, "BYTEARRAY8"},
    {0x97, "NEXT_BUFFER"}, {0x98, "READONLY_BUFFER"},
};

static const char *opcode_name(unsigned op) {
  for (size_t i = 0; i < sizeof opcode_names / sizeof opcode_names[0]; i++)
    if (opcode_names[i].op == op)
      return opcode_names[i].name;
  return "an unknown opcode";
}

/* LONG1: a little-endian two's-complement integer of n <= 8 bytes. */
static mi_status op_long1(unpickler *up) {
  const unsigned char *len, *digits;
  mi_status status = operand(&len, up, 1);
  if (status == MI_OK && *len > 8)
    return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: LONG1 of %u bytes is larger than "
                    "any size or offset", up->op_at, *len);
  if (status == MI_OK)
    status = operand(&digits, up, *len);
  if (status != MI_OK)
    return status;
  uint64_t v = 0;
  for (size_t i = *len; i-- > 0;)
    v = v << 8 | digits[i];
  if (*len > 0 && *len < 8 && (digits[*len - 1] & 0x80))
    v |= ~(uint64_t)0 << (8 * *len); /* sign-extend */
  return push_int(up, (int64_t)v);
}

static mi_status op_float(unpickler *up) {
  const unsigned char *b;
  mi_status status = operand(&b, up, 8);
  if (status != MI_OK)
    return status;
  uint64_t bits = 0;
  for (int i = 0; i < 8; i++)
    bits = bits << 8 | b[i]; /* big-endian */
  obj *o;
  status = make_push(&o, up, OBJ_FLOAT);
  if (status == MI_OK)
    memcpy(&o->u.f, &bits, sizeof bits);
  return status;
}

/* One opcode at up->pos; *done when it was STOP, with the result in *result. */
static mi_status step(unpickler *up, bool *done, obj **result) {
  up->op_at = up->pos;
  unsigned op = up->p[up->pos++];
  const unsigned char *b;
  size_t len;
  mi_status status;
  obj *o;
  switch (op) {
  case 0x80: /* PROTO */
    status = operand(&b, up, 1);
    if (status == MI_OK && *b > 5)
      return mi__fail(MI_ERR_FORMAT, "data.pkl: pickle protocol %u is newer than any "
                      "there is (5)", *b);
    return status;
  case 0x95: /* FRAME: a length that protocol 4 uses for buffering only */
    return operand(&b, up, 8);
  case '.':
    if ((status = need(up, 1)) != MI_OK)
      return status;
    *result = pop(up);
    *done = true;
    return MI_OK;
  case '(':
    if (!grow(&up->marks, &up->cap_marks, up->n_marks, sizeof *up->marks))
      return out_of_memory(up);
    up->marks[up->n_marks++] = up->n_stack;
    return MI_OK;
  case '0':
    if ((status = need(up, 1)) == MI_OK)
      pop(up);
    return status;
  case '1':
    if ((status = pop_mark(&len, up)) == MI_OK)
      up->n_stack = len;
    return status;
  case '2':
    if ((status = need(up, 1)) != MI_OK)
      return status;
    return push(up, up->stack[up->n_stack - 1]);
  case 'N':
    return make_push(&o, up, OBJ_NONE);
  case 0x88:
  case 0x89:
    if ((status = make_push(&o, up, OBJ_BOOL)) == MI_OK)
      o->u.b = op == 0x88;
    return status;
  case 'J':
    if ((status = operand(&b, up, 4)) != MI_OK)
      return status;
    return push_int(up, (int64_t)(int32_t)le32(b));
  case 'K':
    if ((status = operand(&b, up, 1)) != MI_OK)
      return status;
    return push_int(up, b[0]);
  case 'M':
    if ((status = operand(&b, up, 2)) != MI_OK)
      return status;
    return push_int(up, le16(b));
  case 0x8a:
    return op_long1(up);
  case 'G':
    return op_float(up);
  case 'X':
  case 0x8c:
  case 0x8d:
    if ((status = counted(&b, &len, up, op == 'X' ? 4 : op == 0x8c ? 1 : 8)) != MI_OK)
      return status;
    return push_string(up, OBJ_TEXT, b, len);
  case 'B':
  case 'C':
  case 0x8e:
    if ((status = counted(&b, &len, up, op == 'B' ? 4 : op == 'C' ? 1 : 8)) != MI_OK)
      return status;
    return push_string(up, OBJ_BYTES, b, len);
  case ')':
    return op_sequence(up, OBJ_TUPLE, 0, false);
  case 't':
    return op_sequence(up, OBJ_TUPLE, 0, true);
  case 0x85:
  case 0x86:
  case 0x87:
    return op_sequence(up, OBJ_TUPLE, op - 0x84, false);
  case ']':
    return op_sequence(up, OBJ_LIST, 0, false);
  case 'l':
    return op_sequence(up, OBJ_LIST, 0, true);
  case '}':
    return op_sequence(up, OBJ_DICT, 0, false);
  case 'd':
    return op_sequence(up, OBJ_DICT, 0, true);
  case 'a':
    return op_add_items(up, OBJ_LIST, false);
  case 'e':
    return op_add_items(up, OBJ_LIST, true);
  case 's':
    return op_add_items(up, OBJ_DICT, false);
  case 'u':
    return op_add_items(up, OBJ_DICT, true);
  case 'q':
    if ((status = operand(&b, up, 1)) != MI_OK)
      return status;
    return memo_put(up, b[0]);
  case 'r':
    if ((status = operand(&b, up, 4)) != MI_OK)
      return status;
    return memo_put(up, le32(b));
  case 0x94: /* MEMOIZE: the next index */
    return memo_put(up, up->memo_count);
  case 'h':
    if ((status = operand(&b, up, 1)) != MI_OK)
      return status;
    return memo_get(up, b[0]);
  case 'j':
    if ((status = operand(&b, up, 4)) != MI_OK)
      return status;
    return memo_get(up, le32(b));
  case 'c':
    return op_global(up);
  case 0x93:
    return op_stack_global(up);
  case 'Q':
    return op_persid(up);
  case 'R':
    return op_reduce(up);
  case 'b':
    return op_build(up);
  default:
    return mi__fail(MI_ERR_FORMAT, "data.pkl byte %zu: opcode 0x%02x (%s) is not one a "
                    "state dict is written with; libmi's restricted reader refuses it",
                    up->op_at, op, opcode_name(op));
  }
}

static mi_status unpickle(obj **out, unpickler *up) {
  bool done = false;
  while (!done) {
    if (up->pos >= up->size)
      return mi__fail(MI_ERR_TRUNCATED, "data.pkl ends after %zu bytes without a STOP",
                      up->size);
    mi_status status = step(up, &done, out);
    if (status != MI_OK)
      return status;
  }
  return MI_OK;
}

/* ---- the state dict ------------------------------------------------------------- */

static bool holds_tensors(const obj *dict) {
  for (size_t i = 0; i + 1 < dict->u.seq.n; i += 2)
    if (dict->u.seq.items[i + 1]->kind == OBJ_TENSOR)
      return true;
  return false;
}

/*
 * The state dict: the pickled dict itself when it holds tensors, else the
 * dict a training checkpoint keeps under "state_dict", "model_state_dict"
 * or "model".
 */
static mi_status state_dict(const obj **out, const obj *top) {
  if (top->kind != OBJ_DICT)
    return mi__fail(MI_ERR_FORMAT, "the archive holds a %s, not a state dict (save "
                    "model.state_dict())", kind_names[top->kind]);
  if (holds_tensors(top)) {
    *out = top;
    return MI_OK;
  }
  static const char *const keys[] = {"state_dict", "model_state_dict", "model"};
  for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
    for (size_t i = 0; i + 1 < top->u.seq.n; i += 2) {
      const obj *key = top->u.seq.items[i], *value = top->u.seq.items[i + 1];
      if (key->kind == OBJ_TEXT && strcmp(key->u.s.text, keys[k]) == 0 &&
          value->kind == OBJ_DICT && holds_tensors(value)) {
        *out = value;
        return MI_OK;
      }
    }
  return mi__fail(MI_ERR_MISSING_TENSOR, "the archive holds a dict of %zu entries without "
                  "tensors, and no state dict under \"state_dict\", \"model_state_dict\" or "
                  "\"model\"", top->u.seq.n / 2);
}

static int by_view_name(const void *a, const void *b) {
  return strcmp(((const mi__tensor *)a)->name, ((const mi__tensor *)b)->name);
}

/*
 * The views of the state dict's string-keyed tensors. Views may share a
 * storage (a tied embedding), but together they may not reach more than
 * twice the archive's bytes, so the copies the name maps make stay within
 * a small multiple of the file's size.
 */
static mi_status tensor_views(mi__tensor **out, size_t *out_count, const obj *dict,
                              size_t archive_size) {
  size_t n = 0, total = 0;
  mi__tensor *views = calloc(dict->u.seq.n / 2 + 1, sizeof *views);
  if (views == NULL)
    return mi__fail(MI_ERR_OUT_OF_MEMORY, "cannot allocate %zu tensor views",
                    dict->u.seq.n / 2);
  for (size_t i = 0; i + 1 < dict->u.seq.n; i += 2) {
    const obj *key = dict->u.seq.items[i], *t = dict->u.seq.items[i + 1];
    if (key->kind != OBJ_TEXT || t->kind != OBJ_TENSOR)
      continue;
    const obj *storage = t->u.tensor.storage;
    const global_def *type = storage->u.storage.type;
    size_t bytes = t->u.tensor.numel * type->item; /* within a storage in the file */
    if (__builtin_add_overflow(total, bytes, &total) || total / 2 > archive_size) {
      free(views);
      return mi__fail(MI_ERR_SHAPE, "tensor '%s' brings the state dict's views to more "
                      "than twice the archive's %zu bytes (views that repeat one storage?)",
                      key->u.s.text, archive_size);
    }
    mi__tensor *v = &views[n++];
    v->name = key->u.s.text;
    v->dtype_name = type->dtype_name;
    v->dtype = type->dtype;
    v->item = type->item;
    v->rank = t->u.tensor.rank;
    for (size_t k = 0; k < v->rank && k < MI__TENSOR_RANK; k++) {
      v->dims[k] = t->u.tensor.dims[k];
      v->strides[k] = t->u.tensor.strides[k];
    }
    v->data = t->u.tensor.numel ? storage->u.storage.record->data + t->u.tensor.offset * type->item
                                : NULL;
  }
  /* A pickled dict may repeat a key (the last would win in Python): refused. */
  qsort(views, n, sizeof *views, by_view_name);
  for (size_t i = 1; i < n; i++)
    if (strcmp(views[i - 1].name, views[i].name) == 0) {
      mi_status status =
          mi__fail(MI_ERR_FORMAT, "the state dict names tensor '%s' twice", views[i].name);
      free(views);
      return status;
    }
  *out = views;
  *out_count = n;
  return MI_OK;
}

/* ---- the archive ---------------------------------------------------------------- */

/* The record `<prefix><name>`, or NULL. */
static const zip_entry *record(const zip *z, const char *prefix, size_t prefix_len,
                               const char *name) {
  char full[512];
  int n = snprintf(full, sizeof full, "%.*s%s", (int)prefix_len, prefix, name);
  return n > 0 && (size_t)n < sizeof full ? zip_find(z, full, (size_t)n) : NULL;
}

/* The archive's top directory (torch names it after the file, or "archive"). */
static mi_status find_prefix(const char **out, size_t *out_len, const zip *z) {
  const zip_entry *first = z->count ? &z->entries[0] : NULL;
  const char *slash = first ? memchr(first->name, '/', first->name_len) : NULL;
  if (slash != NULL && record(z, first->name, (size_t)(slash - first->name) + 1, "data.pkl")) {
    *out = first->name;
    *out_len = (size_t)(slash - first->name) + 1;
    return MI_OK;
  }
  char names[160] = "";
  size_t used = 0;
  for (size_t i = 0; i < z->count && i < 3 && used < sizeof names; i++)
    used += (size_t)snprintf(names + used, sizeof names - used, "%s'%.*s'", i ? ", " : "",
                             (int)(z->entries[i].name_len > 40 ? 40 : z->entries[i].name_len),
                             z->entries[i].name);
  return mi__fail(MI_ERR_FORMAT,
                  "this is a zip archive of %zu entries (%s%s), but not a torch.save "
                  "archive: it has no '<dir>/data.pkl'; libmi reads .safetensors files, "
                  "PyTorch torch.save archives (.pth, .pt, .bin) and model folders",
                  z->count, z->count ? names : "none", z->count > 3 ? ", ..." : "");
}

/* byteorder ("little", from PyTorch 2.1; absent before, when it was always little). */
static mi_status check_records(const zip *z, const char *prefix, size_t prefix_len) {
  if (record(z, prefix, prefix_len, "constants.pkl") != NULL)
    return mi__fail(MI_ERR_UNSUPPORTED,
                    "this is a TorchScript archive (torch.jit.save), which holds code; "
                    "libmi reads torch.save state dicts: save "
                    "torch.jit.load(path).state_dict() with torch.save");
  const zip_entry *order = record(z, prefix, prefix_len, "byteorder");
  const zip_entry *version = record(z, prefix, prefix_len, "version");
  mi_status status = MI_OK;
  if (order != NULL && (status = check_crc(z, order)) == MI_OK) {
    size_t n = order->size;
    while (n > 0 && (order->data[n - 1] == '\n' || order->data[n - 1] == '\r'))
      n--;
    if (n == 3 && memcmp(order->data, "big", 3) == 0)
      return mi__fail(MI_ERR_UNSUPPORTED, "the archive was written on a big-endian machine "
                      "(byteorder 'big'); libmi reads little-endian storages only");
    if (n != 6 || memcmp(order->data, "little", 6) != 0)
      return mi__fail(MI_ERR_FORMAT, "the archive's byteorder record says '%.*s', neither "
                      "'little' nor 'big'", (int)(n > 16 ? 16 : n), order->data);
  }
  if (status == MI_OK && version != NULL)
    status = check_crc(z, version);
  return status;
}

mi_status mi__torch_load(mi_model **out, const mi__image *img,
                         const mi__model_hints *given, const mi_load_options *options) {
  zip z = {0};
  unpickler up = {0};
  mi__tensor *views = NULL;
  size_t n_views = 0;
  mi__model_hints hints = {0};
  const obj *top = NULL, *dict = NULL;
  mi_status status = zip_open(&z, img);
  if (status == MI_OK)
    status = find_prefix(&up.prefix, &up.prefix_len, &z);
  if (status == MI_OK)
    status = check_records(&z, up.prefix, up.prefix_len);
  const zip_entry *pickle =
      status == MI_OK ? record(&z, up.prefix, up.prefix_len, "data.pkl") : NULL;
  if (pickle != NULL)
    status = check_crc(&z, pickle);
  if (status == MI_OK) {
    up.p = pickle->data;
    up.size = pickle->size;
    up.z = &z;
    status = unpickle((obj **)&top, &up);
  }
  if (status == MI_OK)
    status = state_dict(&dict, top);
  if (status == MI_OK)
    status = tensor_views(&views, &n_views, dict, img->size);
  /* A .pth carries no config: the hints are what else was said. */
  if (status == MI_OK)
    status = mi__hints_merge(&hints, given);
  if (status == MI_OK)
    status = mi__model_from_tensors(out, views, n_views, &hints, options, img);
  free(views);
  unpickler_close(&up);
  zip_close(&z);
  return status;
}
