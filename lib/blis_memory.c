/*
 * blis_memory.c: BLIS's packing memory, reserved by libmi so that running
 * out of memory is MI_ERR_OUT_OF_MEMORY and never BLIS's abort. Part of the
 * BLIS layer (it includes blis.h); only kernel.c calls it.
 *
 * BLIS 0.9 packs A and B into blocks of two global pools: bli_pba_acquire_m
 * (frame/base/bli_pba.c) takes a block with bli_pool_checkout_block
 * (frame/base/bli_pool.c), which, when every block is checked out, calls
 * bli_pool_grow → bli_pool_alloc_block → bli_fmalloc_align
 * (frame/base/bli_malloc.c), and a NULL from malloc there is
 * bli_fmalloc_post_check's "malloc() returned NULL ... Aborting". The pools
 * start empty (bli_pba_init_pools) and keep their blocks until
 * bli_finalize, so pools that already hold one block for every GEMM thread
 * that can run at once never allocate again. BLIS exports neither
 * bli_pool_grow nor a per-call pool (0.9's bli_l3_thread_decorator puts the
 * global pba into every rntm_t with bli_pba_rntm_set_pba), so libmi fills
 * the pools itself through blis.h's pool_t accessors, under the pba's lock:
 * each block from the pool's own malloc_fp, laid out as bli_fmalloc_align
 * lays it out (the pointer malloc gave stored just below the aligned
 * address, where bli_ffree_align finds it when BLIS frees the block).
 */
/* blis.h uses POSIX threads types, hidden by strict -std=c11. */
#define _POSIX_C_SOURCE 200809L

#include "kernel.h"

#include <blis.h>
#include <stdatomic.h>
#include <stdint.h>

/* Blocks each pool is known to hold; grows only. */
static atomic_size_t reserved;

/* One more block for `pool`, as bli_pool_alloc_block would make it. */
static bool add_block(pool_t *pool) {
  size_t block = bli_pool_block_size(pool), align = bli_pool_align_size(pool);
  size_t offset = bli_pool_offset_size(pool), ptr = sizeof(void *);
  unsigned char *orig = bli_pool_malloc_fp(pool)(block + offset + align + ptr);
  if (orig == NULL)
    return false;
  uintptr_t past = (uintptr_t)(orig + ptr) % align;
  unsigned char *aligned = orig + ptr + (past ? align - past : 0);
  ((void **)aligned)[-1] = orig;
  pblk_t *blocks = bli_pool_block_ptrs(pool);
  size_t n = bli_pool_num_blocks(pool);
  bli_pblk_set_buf(aligned + offset, &blocks[n]);
  bli_pblk_set_block_size(block, &blocks[n]);
  bli_pool_set_num_blocks(n + 1, pool);
  return true;
}

mi_status mi__blis_reserve(size_t threads) {
  if (atomic_load(&reserved) >= threads)
    return MI_OK;
  bli_init();
  pba_t *pba = bli_pba_query();
  packbuf_t kinds[2] = {BLIS_BUFFER_FOR_A_BLOCK, BLIS_BUFFER_FOR_B_PANEL};
  mi_status status = MI_OK;
  bli_pba_lock(pba);
  for (int k = 0; k < 2; k++) {
    pool_t *pool = bli_pba_pool((dim_t)bli_packbuf_index(kinds[k]), pba);
    /* Beyond the block table's length BLIS would reallocate it: leave
     * that to BLIS (more threads than 80 is not the case to plan for). */
    size_t want = threads < bli_pool_block_ptrs_len(pool) ? threads
                                                          : bli_pool_block_ptrs_len(pool);
    while (status == MI_OK && bli_pool_num_blocks(pool) < want)
      if (!add_block(pool))
        status = mi__fail(MI_ERR_OUT_OF_MEMORY, "BLIS packing memory: cannot allocate "
                          "block %zu of %zu bytes for %zu threads",
                          (size_t)bli_pool_num_blocks(pool) + 1,
                          (size_t)bli_pool_block_size(pool), threads);
  }
  bli_pba_unlock(pba);
  if (status == MI_OK)
    atomic_store(&reserved, threads);
  return status;
}
