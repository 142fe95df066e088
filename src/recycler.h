/* SPDX-License-Identifier: MIT */
/*
 * The recycler of bp_buf objects (Netty's Recycler): so that steady traffic allocates no
 * metadata. Each thread keeps a bounded stack of released objects (bp__recycler); an
 * allocator's pool (bp__object_pool) owns every object, in slabs, and keeps the spare list
 * that full or exiting stacks hand batches to and empty ones refill from.
 *
 * Invariants
 * - Every object lives in one of the pool's slabs for the pool's whole life; nothing else
 *   frees one. An object in a stack, the spare list or the quarantine is released (refcnt
 *   0), linked by next_free, with head.memory NULL (a root's region memory too: see
 *   bp__object_retire) and `composite` NULL.
 * - A stack is its thread's alone; r->count <= r->capacity. The spare list, the slabs and
 *   the quarantine are guarded by *pool->lock.
 */
#ifndef BP__RECYCLER_H
#define BP__RECYCLER_H

#include "common.h"
#include "object.h"

#include <pthread.h>

#define BP__SLAB_BUFS 64     /* bp_buf objects per slab */
#define BP__SPARE_BATCH 64   /* objects moved at once between a stack and the spare list */
#define BP__QUARANTINE 4096  /* paranoid leak detection: released objects held back */

typedef struct bp__buf_slab {
    struct bp__buf_slab *next;
    bp_buf bufs[BP__SLAB_BUFS];
} bp__buf_slab;

typedef struct bp__object_pool {
    pthread_mutex_t *lock;       /* the owner's lock (the allocator's), guarding the rest */
    bp_buf *spare;               /* objects handed back by full or exiting stacks */
    size_t nspare;
    bp__buf_slab *slabs;
    /* Paranoid leak detection holds released objects back from reuse (FIFO), so a stale
     * pointer keeps failing with BP_EFREED for a while. */
    bp_buf **quarantine;
    size_t quarantine_head, quarantine_count;
} bp__object_pool;

typedef struct bp__recycler {
    bp_buf *top;                 /* the stack, linked by next_free */
    unsigned count;
    unsigned capacity;           /* config.recycler_capacity */
    bp__object_pool *pool;
} bp__recycler;

void bp__object_pool_init(bp__object_pool *pool, pthread_mutex_t *lock);

/* Frees the slabs, every object in them with them; with `free_malloced`, first the memory
 * that live buffers of an unpooled allocator malloc'ed (reachable only through them). */
void bp__object_pool_destroy(bp__object_pool *pool, bool free_malloced);

void bp__recycler_init(bp__recycler *r, bp__object_pool *pool, unsigned capacity);

/* An object for the stack that ran dry: from the spare list (with a batch more for the
 * stack), or from a new slab. NULL when out of memory. */
bp_buf *bp__recycler_refill(bp__recycler *r);

/* The stack is full (or there is none: r NULL): b and a batch of the stack's go to the
 * spare list, where other threads find them. */
void bp__recycler_overflow(bp__object_pool *pool, bp__recycler *r, bp_buf *b);

/* Paranoid leak detection: holds b back; the oldest held one goes to the spare list. */
void bp__object_quarantine(bp__object_pool *pool, bp_buf *b);

/* The whole stack to the spare list (its thread is leaving). */
void bp__recycler_give_all(bp__recycler *r);

/* A released object from the thread's stack; NULL when it is empty. */
BP__INLINE bp_buf *bp__object_pop(bp__recycler *r)
{
    bp_buf *b = r->top;
    if (BP__LIKELY(b != NULL)) {
        r->top = b->next_free;
        r->count--;
    }
    return b;
}

/* A released object: from the thread's stack, else bp__recycler_refill. */
BP__INLINE bp_buf *bp__object_get(bp__recycler *r)
{
    bp_buf *b = bp__object_pop(r);
    return BP__LIKELY(b != NULL) ? b : bp__recycler_refill(r);
}

/* Back onto r's stack (r may be NULL: then to the pool's spare list). Writes only the
 * object's link: a view's fields stay as they were for a release racing this one to read. */
BP__INLINE void bp__object_put(bp__object_pool *pool, bp__recycler *r, bp_buf *b)
{
    if (BP__LIKELY(r != NULL && r->count < r->capacity)) {
        b->next_free = r->top;
        r->top = b;
        r->count++;
    } else {
        bp__recycler_overflow(pool, r, b);
    }
}

/* A root whose memory went elsewhere back into the recycler, with no memory reachable
 * through it any more: bp__object_put - or with hold_back (paranoid leak detection) into the
 * quarantine. */
BP__INLINE void bp__object_retire(bp__object_pool *pool, bp__recycler *r, bp_buf *b, bool hold_back)
{
    b->head.memory = NULL;
    b->region.memory = NULL;
    if (BP__UNLIKELY(hold_back)) bp__object_quarantine(pool, b);
    else bp__object_put(pool, r, b);
}

#endif
