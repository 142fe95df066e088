/* SPDX-License-Identifier: MIT */
/*
 * The recycler's slow paths: slabs, the spare list, the quarantine.
 */
#include "recycler.h"

#include <stdlib.h>
#include <string.h>

void bp__object_pool_init(bp__object_pool *pool, pthread_mutex_t *lock)
{
    memset(pool, 0, sizeof *pool);
    pool->lock = lock;
}

void bp__object_pool_destroy(bp__object_pool *pool, bool free_malloced)
{
    free(pool->quarantine);
    pool->quarantine = NULL;
    for (bp__buf_slab *slab = pool->slabs; slab != NULL;) {
        bp__buf_slab *next = slab->next;
        for (size_t i = 0; free_malloced && i < BP__SLAB_BUFS; i++) {
            uint32_t count = BP__REFCNT_LOAD(&slab->bufs[i], __ATOMIC_RELAXED);
            /* not views', composites' (indirect: no region) or wrapped ones' */
            if (count != 0 && !(count & BP__REFCNT_INDIRECT) && slab->bufs[i].region.kind == BP__KIND_MALLOC)
                free(slab->bufs[i].region.memory);
        }
        free(slab);
        slab = next;
    }
    pool->slabs = NULL;
}

void bp__recycler_init(bp__recycler *r, bp__object_pool *pool, unsigned capacity)
{
    r->top = NULL;
    r->count = 0;
    r->capacity = capacity;
    r->pool = pool;
}

/* Puts a linked list of n objects, first to last, onto the spare list. */
static void spare_push_locked(bp__object_pool *pool, bp_buf *first, bp_buf *last, size_t n)
{
    last->next_free = pool->spare;
    pool->spare = first;
    pool->nspare += n;
}

static bp_buf *spare_pop_locked(bp__object_pool *pool)
{
    bp_buf *b = pool->spare;
    pool->spare = b->next_free;
    pool->nspare--;
    return b;
}

BP__NOINLINE bp_buf *bp__recycler_refill(bp__recycler *r)
{
    bp__object_pool *pool = r->pool;
    pthread_mutex_lock(pool->lock);
    if (pool->spare == NULL) {
        /* Aligned: each bp_buf starts a cache line (see struct bp_buf). */
        bp__buf_slab *slab = aligned_alloc(_Alignof(bp__buf_slab), sizeof *slab);
        if (slab == NULL) {
            pthread_mutex_unlock(pool->lock);
            return NULL;
        }
        memset(slab, 0, sizeof *slab);
        slab->next = pool->slabs;
        pool->slabs = slab;
        for (size_t i = 0; i + 1 < BP__SLAB_BUFS; i++) slab->bufs[i].next_free = &slab->bufs[i + 1];
        spare_push_locked(pool, &slab->bufs[0], &slab->bufs[BP__SLAB_BUFS - 1], BP__SLAB_BUFS);
    }
    /* One to return, and up to a batch more for the stack. */
    bp_buf *taken = spare_pop_locked(pool);
    for (unsigned i = 0; i < BP__SPARE_BATCH && pool->spare != NULL && r->count < r->capacity; i++) {
        bp_buf *b = spare_pop_locked(pool);
        b->next_free = r->top;
        r->top = b;
        r->count++;
    }
    pthread_mutex_unlock(pool->lock);
    return taken;
}

BP__NOINLINE void bp__recycler_overflow(bp__object_pool *pool, bp__recycler *r, bp_buf *b)
{
    bp_buf *first = b, *last = b;
    size_t n = 1;
    while (n < BP__SPARE_BATCH && r != NULL && r->top != NULL) {
        bp_buf *next = r->top;
        r->top = next->next_free;
        r->count--;
        last->next_free = next;
        last = next;
        n++;
    }
    last->next_free = NULL;
    pthread_mutex_lock(pool->lock);
    spare_push_locked(pool, first, last, n);
    pthread_mutex_unlock(pool->lock);
}

void bp__object_quarantine(bp__object_pool *pool, bp_buf *b)
{
    pthread_mutex_lock(pool->lock);
    if (pool->quarantine == NULL) pool->quarantine = calloc(BP__QUARANTINE, sizeof *pool->quarantine);
    if (pool->quarantine == NULL) { /* no room to hold it back: reuse it */
        b->next_free = NULL;
        spare_push_locked(pool, b, b, 1);
        pthread_mutex_unlock(pool->lock);
        return;
    }
    if (pool->quarantine_count == BP__QUARANTINE) {
        bp_buf *oldest = pool->quarantine[pool->quarantine_head];
        pool->quarantine_head = (pool->quarantine_head + 1) % BP__QUARANTINE;
        pool->quarantine_count--;
        oldest->next_free = NULL;
        spare_push_locked(pool, oldest, oldest, 1);
    }
    pool->quarantine[(pool->quarantine_head + pool->quarantine_count++) % BP__QUARANTINE] = b;
    pthread_mutex_unlock(pool->lock);
}

void bp__recycler_give_all(bp__recycler *r)
{
    if (r->top == NULL) return;
    bp_buf *last = r->top;
    while (last->next_free != NULL) last = last->next_free;
    pthread_mutex_lock(r->pool->lock);
    spare_push_locked(r->pool, r->top, last, r->count);
    pthread_mutex_unlock(r->pool->lock);
    r->top = NULL;
    r->count = 0;
}
