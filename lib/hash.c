/*
 * hash.c: SipHash-1-3 (Aumasson and Bernstein) with a key drawn once per
 * process, for the vocabulary's hash table. A fixed hash (FNV-1a before)
 * lets a file of tokens chosen to collide load in quadratic time; with a
 * secret key nobody can choose collisions in advance. Lookups give the same
 * answers whatever the key: only where entries sit in the table changes.
 */
#define _DEFAULT_SOURCE /* getrandom */
#include "internal.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static uint64_t key[2];
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void draw_key(void) {
  if (getrandom(key, sizeof key, GRND_NONBLOCK) == (ssize_t)sizeof key)
    return;
  /* No entropy yet (early boot): the clock and an address still differ
   * between processes, which is all a hash table needs. */
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  key[0] = (uint64_t)t.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)&t;
  key[1] = (uint64_t)t.tv_sec * 0xc2b2ae3d27d4eb4full ^ (uint64_t)(uintptr_t)key;
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND(v0, v1, v2, v3)                                                   \
  do {                                                                             \
    v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                      \
    v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                         \
    v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                         \
    v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                      \
  } while (0)

uint64_t mi__hash_bytes(const void *data, size_t len) {
  pthread_once(&key_once, draw_key);
  const unsigned char *in = data;
  uint64_t v0 = 0x736f6d6570736575ull ^ key[0], v1 = 0x646f72616e646f6dull ^ key[1];
  uint64_t v2 = 0x6c7967656e657261ull ^ key[0], v3 = 0x7465646279746573ull ^ key[1];
  size_t whole = len - len % 8;
  for (size_t i = 0; i < whole; i += 8) {
    uint64_t m;
    memcpy(&m, in + i, 8); /* little-endian host, as the loaders assume */
    v3 ^= m;
    SIPROUND(v0, v1, v2, v3);
    v0 ^= m;
  }
  uint64_t b = (uint64_t)len << 56;
  for (size_t i = 0; i < len % 8; i++)
    b |= (uint64_t)in[whole + i] << (8 * i);
  v3 ^= b;
  SIPROUND(v0, v1, v2, v3);
  v0 ^= b;
  v2 ^= 0xff;
  SIPROUND(v0, v1, v2, v3);
  SIPROUND(v0, v1, v2, v3);
  SIPROUND(v0, v1, v2, v3);
  return v0 ^ v1 ^ v2 ^ v3;
}
