/*
 * pth_writer.h: writes PyTorch torch.save archives for the tests and the
 * fuzz seed corpus, without Python or torch: a zip of stored entries
 * (`archive/data.pkl`, `archive/data/<key>`, `archive/version`,
 * `archive/byteorder`) around a protocol-2 pickle emitted opcode by opcode
 * as torch's _save does (checked against pickletools.dis of real files).
 * Its CRC-32 is table-driven, libmi's bitwise, so each checks the other.
 */
#ifndef MI_PTH_WRITER_H
#define MI_PTH_WRITER_H

#include "st_writer.h"

#include <stdbool.h>
#include <stddef.h>

/* ---- pickles, opcode by opcode ---------------------------------------------------- */

/* A growing byte buffer; `failed` once an allocation failed. */
typedef struct pk_buf {
  unsigned char *bytes;
  size_t len, cap;
  bool failed;
  unsigned memo; /* the next memo index pk_memo gives */
} pk_buf;

void pk_bytes(pk_buf *b, const void *bytes, size_t n);
void pk_op(pk_buf *b, unsigned char op);
/* BINUNICODE `s`. */
void pk_text(pk_buf *b, const char *s);
/* An integer as Python pickles it: BININT1, BININT2, BININT or LONG1. */
void pk_int(pk_buf *b, long long v);
/* GLOBAL "module\nname\n". */
void pk_global(pk_buf *b, const char *module, const char *name);
/* BINPUT (or LONG_BINPUT) of the next memo index, which is returned. */
unsigned pk_memo(pk_buf *b);
/* BINGET (or LONG_BINGET) of `index`. */
void pk_get(pk_buf *b, unsigned index);

/*
 * A tensor as torch pickles one: _rebuild_tensor_v2((persistent id
 * ('storage', torch.<storage_type>, key, 'cpu', storage_numel)), offset,
 * size, stride, False, OrderedDict()). The globals are written once per
 * buffer and fetched from the memo after (`memo_globals` holds their
 * memo indices + 1; all 0 at first).
 */
typedef struct pk_globals { unsigned rebuild, ordered_dict, storage_text, cpu; } pk_globals;
void pk_tensor(pk_buf *b, pk_globals *memo_globals, const char *storage_type,
               const char *key, size_t storage_numel, size_t offset, size_t rank,
               const size_t *size, const size_t *stride);

/* PROTO 2, EMPTY_DICT, MARK: a pickle of a plain dict begins; its items follow. */
void pk_begin_dict(pk_buf *b);
/* SETITEMS, STOP: the dict ends the pickle. */
void pk_end_dict(pk_buf *b);

/* ---- zip archives -------------------------------------------------------------------- */

typedef struct pth_record {
  const char *name;
  const void *bytes;
  size_t size;
} pth_record;

enum {
  /* Zip64 end records and extra fields, as for an archive past 4 GiB. */
  PTH_ZIP64 = 1 << 0,
  /* Sizes and CRC in a data descriptor after each entry, as torch writes them. */
  PTH_DESCRIPTOR = 1 << 1,
};

/* A zip of stored entries, each entry's data 64-byte aligned. malloc'd. */
unsigned char *pth_zip(const pth_record *records, size_t n, unsigned flags, size_t *size);

/* CRC-32 of zip. */
unsigned long pth_crc32(const void *bytes, size_t n);

/*
 * An archive "archive/" of `pickle` as data.pkl, `records` (named without
 * the "archive/" prefix) and "version" = "3\n". malloc'd.
 */
unsigned char *pth_archive(const void *pickle, size_t pickle_size, const pth_record *records,
                           size_t n, unsigned flags, size_t *size);

/* ---- state dicts ------------------------------------------------------------------------ */

enum {
  /* Tensors of rank >= 2 stored with their last two axes swapped, so each
   * view is a transpose (strides not row-major). */
  PTH_TRANSPOSED = 1 << 8,
  /* The tensors of one dtype share one storage, each at an offset, with a
   * gap of unused elements between them. */
  PTH_SHARED = 1 << 9,
  /* Each tensor wrapped in torch._utils._rebuild_parameter (nn.Parameter). */
  PTH_PARAMETERS = 1 << 10,
  /* The state dict inside a training checkpoint: {"epoch": 3, "lr": 0.001,
   * "state_dict": <it>}. */
  PTH_CHECKPOINT = 1 << 11,
  /* A "byteorder" record saying "little", as PyTorch 2.1+ writes. */
  PTH_BYTEORDER = 1 << 12,
};

/*
 * torch.save(OrderedDict of `st`'s tensors): each tensor's values exactly
 * as st holds them (dtypes F32, F16, BF16, F64, BOOL, I64), in the layout
 * `flags` chooses (PTH_* of both groups). malloc'd; NULL when out of memory
 * or for a dtype torch has no storage for.
 */
unsigned char *pth_from_st(const st_writer *st, unsigned flags, size_t *size);

#endif
