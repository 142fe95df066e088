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
 * - A slab whose every object is on the spare list may give its pages back to the OS
 *   (bp__object_pool_give_back): its objects leave the spare list and read 0 (count 0:
 *   released) until the slab is used again, when their generations go on above the highest
 *   they had, so that no (pointer, generation) pair recorded before matches. Objects
 *   anywhere else (stacks, bins, caches, batches, the quarantine) keep their slab's pages.
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

/* A slab's objects: whole 4 KiB pages (64 objects of three 64-byte lines: 12 KiB), so that
 * a slab none of whose objects is in use can give its pages back to the OS. */
#define BP__SLAB_BYTES (BP__SLAB_BUFS * sizeof(bp_buf))
#define BP__SLAB_ALIGN 4096
/* Slabs are cut from blocks of this size (85 slabs): a page-aligned allocation per slab
 * cost a third more than its pages. */
#define BP__SLAB_BLOCK ((size_t)1 << 20)

typedef struct bp__slab_block {
    struct bp__slab_block *next;
    void *base;                /* BP__SLAB_BLOCK bytes, freed at the pool's destroy */
} bp__slab_block;

typedef struct bp__buf_slab {
    struct bp__buf_slab *next;
    struct bp__buf_slab *next_given_back; /* given back: the pool's list of those */
    bp_buf *bufs;              /* BP__SLAB_BUFS objects, BP__SLAB_ALIGN-aligned */
    bool given_back;           /* its pages went back to the OS (they read 0: every object
                                  released); none of its objects is listed anywhere */
    uint64_t generation_floor; /* given back: the highest generation its objects had */
} bp__buf_slab;

typedef struct bp__object_pool {
    pthread_mutex_t *lock;       /* the owner's lock (the allocator's), guarding the rest */
    bp_buf *spare;               /* objects handed back by full or exiting stacks */
    size_t nspare;
    bp__buf_slab *slabs;
    size_t nslabs, given_back;   /* slabs, and those whose pages went back to the OS */
    struct bp__buf_slab *given_back_slabs; /* the latter, next used again first */
    bp__slab_block *blocks;      /* the blocks slabs are cut from */
    char *uncut;                 /* the newest block's rest, slab by slab */
    size_t uncut_bytes;
    uint64_t spare_moves;        /* objects onto or off the spare list, ever */
    uint64_t moves_at_give_back; /* spare_moves at the last look for slabs to give back */
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

/* Frees the slabs, every object in them with them; first calls free_owned(b) for each
 * object still alive (count not 0), to free what it owns outside the pool. */
void bp__object_pool_destroy(bp__object_pool *pool, void (*free_owned)(bp_buf *b));

/* Gives back to the OS the pages of every slab whose objects are all on the spare list
 * (objects in threads' stacks, caches, batches or the quarantine keep theirs); nothing to
 * look at when the spare list did not change since the last call. Takes *pool->lock twice,
 * briefly: the spare list is out of it in between, so the caller holds bp__registry_lock
 * (no fork may come in between and leave the child without those objects). Returns the
 * bytes given back. */
size_t bp__object_pool_give_back(bp__object_pool *pool);

#if BP__TESTING
/* Test hook: called at the end of every bp__recycler_give_all (NULL: none), so that a test
 * can fork while a thread is there. */
void bp__recycler_inject_give_all_pause(void (*pause)(void));

/* Whether the pool is consistent: the spare list holds nspare released objects, each in a
 * slab not given back; given_back slabs are listed as such. Takes *pool->lock. */
bool bp__object_pool_check(bp__object_pool *pool);
#endif

/* The bytes of the pool's slabs still resident, with their descriptors (stats). Under
 * *pool->lock. */
size_t bp__object_pool_bytes(const bp__object_pool *pool);

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
