/*
 * The bp_buf object (Netty's PooledByteBuf): indices, reference count and the region of
 * memory behind it.
 *
 * Invariants
 * - 0 <= reader_index <= writer_index <= capacity <= max_capacity <= BP_CAPACITY_LIMIT.
 * - While alive (refcnt > 0): capacity <= region.length and memory == region.memory.
 * - refcnt == 0 means released: the object sits in a recycler (next_free links it) and no
 *   API call touches memory through it.
 */
#ifndef BP_BUF_H
#define BP_BUF_H

#include "arena.h"
#include "common.h"

/* The reference count is a plain uint32_t shared with the inline code in bytepool.h, so
 * it is only ever touched through these. */
#define BP__REFCNT_LOAD(b, order) __atomic_load_n(&(b)->head.refcnt, order)
#define BP__REFCNT_STORE(b, v, order) __atomic_store_n(&(b)->head.refcnt, v, order)

struct bp_buf {
    bp__buf_head head;        /* indices, memory (== region.memory), refcnt (0: released);
                                 first, so the header's inline paths can read it */
    bp__region region;        /* where memory came from, to give it back */
    bp_allocator *allocator;
    struct bp__thread_state *owner; /* the thread state that allocated it (pooled) */
    bp_buf *next_free;        /* recycler or remote-stack link while released */
};

/* Netty's calculateNewCapacity: the capacity to grow to so that at least `min_capacity`
 * bytes fit, capped at max_capacity (min_capacity <= max_capacity). */
size_t bp__calculate_new_capacity(size_t min_capacity, size_t max_capacity);

/* The growth step above which capacities go up linearly (4 MiB, as Netty). */
#define BP__GROWTH_THRESHOLD ((size_t)4 << 20)

#endif
