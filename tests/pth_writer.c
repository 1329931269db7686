/*
 * pth_writer.c: see pth_writer.h. Little-endian host assumed, as by libmi.
 */
#include "pth_writer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- pickles -------------------------------------------------------------------- */

void pk_bytes(pk_buf *b, const void *bytes, size_t n) {
  if (b->failed)
    return;
  if (b->len + n > b->cap) {
    size_t cap = 2 * (b->len + n) + 64;
    unsigned char *grown = realloc(b->bytes, cap);
    if (grown == NULL) {
      b->failed = true;
      return;
    }
    b->bytes = grown;
    b->cap = cap;
  }
  if (n > 0)
    memcpy(b->bytes + b->len, bytes, n);
  b->len += n;
}

void pk_op(pk_buf *b, unsigned char op) { pk_bytes(b, &op, 1); }

static void le(pk_buf *b, unsigned long long v, int n) {
  for (int i = 0; i < n; i++)
    pk_op(b, (unsigned char)(v >> (8 * i)));
}

void pk_text(pk_buf *b, const char *s) {
  pk_op(b, 'X');
  le(b, strlen(s), 4);
  pk_bytes(b, s, strlen(s));
}

void pk_int(pk_buf *b, long long v) {
  if (v >= 0 && v < 256) {
    pk_op(b, 'K');
    pk_op(b, (unsigned char)v);
  } else if (v >= 0 && v < 65536) {
    pk_op(b, 'M');
    le(b, (unsigned long long)v, 2);
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    pk_op(b, 'J');
    le(b, (unsigned long long)v, 4);
  } else {
    /* LONG1: the fewest little-endian two's-complement bytes. */
    int n = 1;
    while (n < 8 && !(v >= -(1LL << (8 * n - 1)) && v < (1LL << (8 * n - 1))))
      n++;
    pk_op(b, 0x8a);
    pk_op(b, (unsigned char)n);
    le(b, (unsigned long long)v, n);
  }
}

void pk_global(pk_buf *b, const char *module, const char *name) {
  pk_op(b, 'c');
  pk_bytes(b, module, strlen(module));
  pk_op(b, '\n');
  pk_bytes(b, name, strlen(name));
  pk_op(b, '\n');
}

unsigned pk_memo(pk_buf *b) {
  unsigned index = b->memo++;
  if (index < 256) {
    pk_op(b, 'q');
    pk_op(b, (unsigned char)index);
  } else {
    pk_op(b, 'r');
    le(b, index, 4);
  }
  return index;
}

void pk_get(pk_buf *b, unsigned index) {
  if (index < 256) {
    pk_op(b, 'h');
    pk_op(b, (unsigned char)index);
  } else {
    pk_op(b, 'j');
    le(b, index, 4);
  }
}

/* A tuple of sizes: EMPTY_TUPLE, TUPLE1..3, or MARK ... TUPLE. */
static void size_tuple(pk_buf *b, size_t rank, const size_t *v) {
  if (rank == 0) {
    pk_op(b, ')');
    return;
  }
  if (rank > 3)
    pk_op(b, '(');
  for (size_t i = 0; i < rank; i++)
    pk_int(b, (long long)v[i]);
  pk_op(b, rank > 3 ? 't' : (unsigned char)(0x84 + rank));
  pk_memo(b);
}

/* A global written once, then fetched from the memo; *slot is its memo
 * index + 1, 0 until written. */
static void memo_global(pk_buf *b, unsigned *slot, const char *module, const char *name) {
  if (*slot != 0) {
    pk_get(b, *slot - 1);
  } else {
    pk_global(b, module, name);
    *slot = pk_memo(b) + 1;
  }
}

static void memo_text(pk_buf *b, unsigned *slot, const char *text) {
  if (*slot != 0) {
    pk_get(b, *slot - 1);
  } else {
    pk_text(b, text);
    *slot = pk_memo(b) + 1;
  }
}

void pk_tensor(pk_buf *b, pk_globals *g, const char *storage_type, const char *key,
               size_t storage_numel, size_t offset, size_t rank, const size_t *size,
               const size_t *stride) {
  memo_global(b, &g->rebuild, "torch._utils", "_rebuild_tensor_v2");
  pk_op(b, '(');
  pk_op(b, '(');
  memo_text(b, &g->storage_text, "storage");
  pk_global(b, "torch", storage_type);
  pk_memo(b);
  pk_text(b, key);
  pk_memo(b);
  memo_text(b, &g->cpu, "cpu");
  pk_int(b, (long long)storage_numel);
  pk_op(b, 't');
  pk_memo(b);
  pk_op(b, 'Q');
  pk_int(b, (long long)offset);
  size_tuple(b, rank, size);
  size_tuple(b, rank, stride);
  pk_op(b, 0x89); /* NEWFALSE: requires_grad */
  memo_global(b, &g->ordered_dict, "collections", "OrderedDict");
  pk_op(b, ')');
  pk_op(b, 'R');
  pk_memo(b);
  pk_op(b, 't');
  pk_memo(b);
  pk_op(b, 'R');
  pk_memo(b);
}

void pk_begin_dict(pk_buf *b) {
  pk_op(b, 0x80);
  pk_op(b, 2);
  pk_op(b, '}');
  pk_op(b, '(');
}

void pk_end_dict(pk_buf *b) {
  pk_op(b, 'u');
  pk_op(b, '.');
}

/* ---- zip ------------------------------------------------------------------------ */

unsigned long pth_crc32(const void *bytes, size_t n) {
  static uint32_t table[256];
  if (table[1] == 0)
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++)
        c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
  const unsigned char *p = bytes;
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++)
    crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc & 0xFFFFFFFFu;
}

unsigned char *pth_zip(const pth_record *records, size_t n, unsigned flags, size_t *size) {
  bool z64 = flags & PTH_ZIP64, dd = flags & PTH_DESCRIPTOR;
  pk_buf out = {0}, cd = {0};
  const unsigned short flag_bits = dd ? 0x0808 : 0x0800; /* UTF-8 names */
  for (size_t i = 0; i < n; i++) {
    const pth_record *r = &records[i];
    size_t name_len = strlen(r->name), offset = out.len;
    unsigned long crc = pth_crc32(r->bytes, r->size);
    /* Local header; its extra field pads the data to 64 bytes (torch's "FB"). */
    size_t z64_local = z64 ? 20 : 0, fixed = offset + 30 + name_len + z64_local + 4;
    size_t pad = (64 - fixed % 64) % 64;
    le(&out, 0x04034b50, 4);
    le(&out, z64 ? 45 : 20, 2);
    le(&out, flag_bits, 2);
    le(&out, 0, 2); /* stored */
    le(&out, 0, 4); /* time, date */
    le(&out, dd ? 0 : crc, 4);
    le(&out, dd ? 0 : z64 ? 0xFFFFFFFFu : r->size, 4);
    le(&out, dd ? 0 : z64 ? 0xFFFFFFFFu : r->size, 4);
    le(&out, name_len, 2);
    le(&out, z64_local + 4 + pad, 2);
    pk_bytes(&out, r->name, name_len);
    if (z64) {
      le(&out, 0x0001, 2);
      le(&out, 16, 2);
      le(&out, r->size, 8);
      le(&out, r->size, 8);
    }
    le(&out, 0x4246, 2);
    le(&out, pad, 2);
    for (size_t k = 0; k < pad; k++)
      pk_op(&out, 'Z');
    pk_bytes(&out, r->bytes, r->size);
    if (dd) {
      le(&out, 0x08074b50, 4);
      le(&out, crc, 4);
      le(&out, r->size, z64 ? 8 : 4);
      le(&out, r->size, z64 ? 8 : 4);
    }
    /* Central directory entry. */
    le(&cd, 0x02014b50, 4);
    le(&cd, z64 ? 45 : 20, 2);
    le(&cd, z64 ? 45 : 20, 2);
    le(&cd, flag_bits, 2);
    le(&cd, 0, 2);
    le(&cd, 0, 4);
    le(&cd, crc, 4);
    le(&cd, z64 ? 0xFFFFFFFFu : r->size, 4);
    le(&cd, z64 ? 0xFFFFFFFFu : r->size, 4);
    le(&cd, name_len, 2);
    le(&cd, z64 ? 28 : 0, 2);
    le(&cd, 0, 2); /* comment */
    le(&cd, 0, 2); /* disk */
    le(&cd, 0, 2);
    le(&cd, 0, 4);
    le(&cd, z64 ? 0xFFFFFFFFu : offset, 4);
    pk_bytes(&cd, r->name, name_len);
    if (z64) {
      le(&cd, 0x0001, 2);
      le(&cd, 24, 2);
      le(&cd, r->size, 8);
      le(&cd, r->size, 8);
      le(&cd, offset, 8);
    }
  }
  size_t cd_offset = out.len;
  pk_bytes(&out, cd.bytes, cd.len);
  if (z64) {
    size_t at = out.len;
    le(&out, 0x06064b50, 4);
    le(&out, 44, 8);
    le(&out, 45, 2);
    le(&out, 45, 2);
    le(&out, 0, 4);
    le(&out, 0, 4);
    le(&out, n, 8);
    le(&out, n, 8);
    le(&out, cd.len, 8);
    le(&out, cd_offset, 8);
    le(&out, 0x07064b50, 4);
    le(&out, 0, 4);
    le(&out, at, 8);
    le(&out, 1, 4);
  }
  le(&out, 0x06054b50, 4);
  le(&out, 0, 2);
  le(&out, 0, 2);
  le(&out, z64 ? 0xFFFF : n, 2);
  le(&out, z64 ? 0xFFFF : n, 2);
  le(&out, z64 ? 0xFFFFFFFFu : cd.len, 4);
  le(&out, z64 ? 0xFFFFFFFFu : cd_offset, 4);
  le(&out, 0, 2);
  free(cd.bytes);
  if (out.failed || cd.failed) {
    free(out.bytes);
    return NULL;
  }
  *size = out.len;
  return out.bytes;
}

unsigned char *pth_archive(const void *pickle, size_t pickle_size, const pth_record *records,
                           size_t n, unsigned flags, size_t *size) {
  pth_record *all = calloc(n + 3, sizeof *all);
  char **names = calloc(n + 1, sizeof *names);
  size_t count = 0;
  bool ok = all != NULL && names != NULL;
  if (ok) {
    all[count++] = (pth_record){"archive/data.pkl", pickle, pickle_size};
    for (size_t i = 0; i < n && ok; i++) {
      names[i] = malloc(strlen(records[i].name) + 9);
      ok = names[i] != NULL;
      if (ok) {
        sprintf(names[i], "archive/%s", records[i].name);
        all[count++] = (pth_record){names[i], records[i].bytes, records[i].size};
      }
    }
    all[count++] = (pth_record){"archive/version", "3\n", 2};
    if (flags & PTH_BYTEORDER)
      all[count++] = (pth_record){"archive/byteorder", "little", 6};
  }
  unsigned char *zip = ok ? pth_zip(all, count, flags, size) : NULL;
  for (size_t i = 0; names != NULL && i < n; i++)
    free(names[i]);
  free(names);
  free(all);
  return zip;
}

/* ---- state dicts ---------------------------------------------------------------- */

static const struct { const char *dtype, *storage; size_t item; } storages[] = {
    {"F32", "FloatStorage", 4}, {"F16", "HalfStorage", 2}, {"BF16", "BFloat16Storage", 2},
    {"F64", "DoubleStorage", 8}, {"BOOL", "BoolStorage", 1}, {"I64", "LongStorage", 8},
};
#define N_STORAGES (sizeof storages / sizeof storages[0])
#define GAP 3 /* unused elements before each tensor in a shared storage */

/* Where one tensor lies: its storage, offset, and strides. */
typedef struct placed {
  size_t storage, offset, stride[8];
} placed;

unsigned char *pth_from_st(const st_writer *st, unsigned flags, size_t *size) {
  size_t n = st_count(st);
  placed *at = calloc(n + 1, sizeof *at);
  /* Storage s < n: tensor s's own; shared: storage n + dtype index. */
  pk_buf *data = calloc(n + N_STORAGES, sizeof *data);
  pth_record *records = calloc(n + N_STORAGES, sizeof *records);
  char (*keys)[16] = calloc(n + N_STORAGES, sizeof *keys);
  size_t *numel = calloc(n + N_STORAGES, sizeof *numel);
  unsigned char *zip = NULL;
  pk_buf p = {0};
  if (at == NULL || data == NULL || records == NULL || keys == NULL || numel == NULL)
    goto done;
  for (size_t i = 0; i < n; i++) {
    const char *name, *dtype;
    size_t rank, n_bytes, d = 0;
    const size_t *shape;
    const unsigned char *bytes;
    st_get(st, i, &name, &dtype, &rank, &shape, &bytes, &n_bytes);
    while (d < N_STORAGES && strcmp(storages[d].dtype, dtype) != 0)
      d++;
    if (d == N_STORAGES)
      goto done;
    size_t item = storages[d].item, count = n_bytes / item;
    at[i].storage = flags & PTH_SHARED ? n + d : i;
    pk_buf *s = &data[at[i].storage];
    if (flags & PTH_SHARED)
      for (size_t g = 0; g < GAP * item; g++)
        pk_op(s, 0xEE);
    at[i].offset = s->len / item;
    /* Row-major strides, or with the last two axes swapped in storage. */
    size_t stride = 1;
    for (size_t k = rank; k-- > 0;) {
      at[i].stride[k] = stride;
      stride *= shape[k];
    }
    bool transpose = (flags & PTH_TRANSPOSED) && rank >= 2;
    if (transpose) {
      size_t a = shape[rank - 2], b = shape[rank - 1];
      at[i].stride[rank - 2] = 1;
      at[i].stride[rank - 1] = a;
      for (size_t lead = 0; a > 0 && b > 0 && lead < count / (a * b); lead++)
        for (size_t col = 0; col < b; col++)
          for (size_t row = 0; row < a; row++)
            pk_bytes(s, bytes + ((lead * a + row) * b + col) * item, item);
    } else {
      pk_bytes(s, bytes, n_bytes);
    }
    numel[at[i].storage] = s->len / item;
    snprintf(keys[at[i].storage], sizeof keys[0], "%zu", at[i].storage);
  }

  pk_globals g = {0};
  pk_op(&p, 0x80);
  pk_op(&p, 2);
  if (flags & PTH_CHECKPOINT) {
    pk_op(&p, '}');
    pk_memo(&p);
    pk_op(&p, '(');
    pk_text(&p, "epoch");
    pk_memo(&p);
    pk_int(&p, 3);
    pk_text(&p, "lr");
    pk_memo(&p);
    pk_op(&p, 'G');
    pk_bytes(&p, "\x3f\x50\x62\x4d\xd2\xf1\xa9\xfc", 8); /* 0.001, big-endian */
    pk_text(&p, "state_dict");
    pk_memo(&p);
  }
  pk_global(&p, "collections", "OrderedDict");
  g.ordered_dict = pk_memo(&p) + 1;
  pk_op(&p, ')');
  pk_op(&p, 'R');
  pk_memo(&p);
  pk_op(&p, '(');
  unsigned parameter = 0;
  for (size_t i = 0; i < n; i++) {
    const char *name, *dtype;
    size_t rank, n_bytes, d = 0;
    const size_t *shape;
    const unsigned char *bytes;
    st_get(st, i, &name, &dtype, &rank, &shape, &bytes, &n_bytes);
    while (strcmp(storages[d].dtype, dtype) != 0)
      d++;
    pk_text(&p, name);
    pk_memo(&p);
    if (flags & PTH_PARAMETERS)
      memo_global(&p, &parameter, "torch._utils", "_rebuild_parameter");
    pk_tensor(&p, &g, storages[d].storage, keys[at[i].storage], numel[at[i].storage],
              at[i].offset, rank, shape, at[i].stride);
    if (flags & PTH_PARAMETERS) {
      pk_op(&p, 0x88); /* NEWTRUE */
      pk_get(&p, g.ordered_dict - 1);
      pk_op(&p, ')');
      pk_op(&p, 'R');
      pk_memo(&p);
      pk_op(&p, 0x87); /* TUPLE3 */
      pk_memo(&p);
      pk_op(&p, 'R');
      pk_memo(&p);
    }
  }
  pk_op(&p, 'u');
  if (flags & PTH_CHECKPOINT)
    pk_op(&p, 'u');
  pk_op(&p, '.');

  size_t n_records = 0;
  char (*names)[32] = calloc(n + N_STORAGES, sizeof *names);
  for (size_t s = 0; names != NULL && s < n + N_STORAGES; s++)
    if (keys[s][0] != '\0') {
      snprintf(names[s], sizeof names[0], "data/%s", keys[s]);
      records[n_records++] = (pth_record){names[s], data[s].bytes, data[s].len};
    }
  if (names != NULL && !p.failed)
    zip = pth_archive(p.bytes, p.len, records, n_records, flags, size);
  free(names);
done:
  for (size_t s = 0; data != NULL && s < n + N_STORAGES; s++)
    free(data[s].bytes);
  free(p.bytes);
  free(at);
  free(data);
  free(records);
  free(keys);
  free(numel);
  return zip;
}
