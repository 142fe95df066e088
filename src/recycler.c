/* SPDX-License-Identifier: MIT */
/*
 * The recycler's slow paths: slabs, the spare list, the quarantine.
 */
#include "recycler.h"

#include "os.h"

#include <stdlib.h>
#include <string.h>

_Static_assert(BP__SLAB_BYTES % BP__SLAB_ALIGN == 0 && BP__SLAB_BLOCK % BP__SLAB_ALIGN == 0,
               "a slab's objects are whole pages");

void bp__object_pool_init(bp__object_pool *pool, pthread_mutex_t *lock)
{
    memset(pool, 0, sizeof *pool);
    pool->lock = lock;
}

void bp__object_pool_destroy(bp__object_pool *pool, void (*free_owned)(bp_buf *b))
{
    free(pool->quarantine);
    pool->quarantine = NULL;
    for (bp__buf_slab *slab = pool->slabs; slab != NULL;) {
        bp__buf_slab *next = slab->next;
        for (size_t i = 0; !slab->given_back && i < BP__SLAB_BUFS; i++) /* given back: all released */
            if (BP__REFCNT_LOAD(&slab->bufs[i], __ATOMIC_RELAXED) != 0) free_owned(&slab->bufs[i]);
        free(slab);
        slab = next;
    }
    for (bp__slab_block *block = pool->blocks; block != NULL;) {
        bp__slab_block *next = block->next;
        free(block->base);
        free(block);
        block = next;
    }
    pool->slabs = NULL;
    pool->blocks = NULL;
    pool->uncut = NULL;
    pool->given_back_slabs = NULL;
    pool->nslabs = pool->given_back = pool->uncut_bytes = 0;
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
    pool->spare_moves += n;
}

static bp_buf *spare_pop_locked(bp__object_pool *pool)
{
    bp_buf *b = pool->spare;
    pool->spare = b->next_free;
    pool->nspare--;
    pool->spare_moves++;
    return b;
}

/* A slab's objects onto the spare list, in address order, each with the given generation
 * (0 for a new slab). */
static void slab_to_spare_locked(bp__object_pool *pool, bp__buf_slab *slab, uint64_t generation)
{
    for (size_t i = 0; i < BP__SLAB_BUFS; i++) {
        __atomic_store_n(&slab->bufs[i].generation, generation, __ATOMIC_RELAXED);
        slab->bufs[i].next_free = i + 1 < BP__SLAB_BUFS ? &slab->bufs[i + 1] : NULL;
    }
    spare_push_locked(pool, &slab->bufs[0], &slab->bufs[BP__SLAB_BUFS - 1], BP__SLAB_BUFS);
}

/* Objects for an empty spare list: a slab given back, used again, or a new one. */
static bool grow_spare_locked(bp__object_pool *pool)
{
    bp__buf_slab *slab = pool->given_back_slabs;
    if (slab != NULL) {
        pool->given_back_slabs = slab->next_given_back;
        slab->given_back = false;
        pool->given_back--;
        /* Even (nobody's record) and above every generation the objects had. */
        slab_to_spare_locked(pool, slab, (slab->generation_floor | 1) + 1);
        return true;
    }
    if (pool->uncut_bytes < BP__SLAB_BYTES) {
        /* From malloc, so that leak checkers see the pointers objects hold. */
        bp__slab_block *block = malloc(sizeof *block);
        void *base = block != NULL ? aligned_alloc(BP__SLAB_ALIGN, BP__SLAB_BLOCK) : NULL;
        if (base == NULL) {
            free(block);
            return false;
        }
        *block = (bp__slab_block){.next = pool->blocks, .base = base};
        pool->blocks = block;
        pool->uncut = base;
        pool->uncut_bytes = BP__SLAB_BLOCK;
    }
    slab = malloc(sizeof *slab);
    if (slab == NULL) return false;
    /* Page-aligned (each bp_buf starts a cache line, see struct bp_buf). */
    bp_buf *bufs = (bp_buf *)(void *)pool->uncut;
    memset(bufs, 0, BP__SLAB_BYTES);
    pool->uncut += BP__SLAB_BYTES;
    pool->uncut_bytes -= BP__SLAB_BYTES;
    *slab = (bp__buf_slab){.next = pool->slabs, .bufs = bufs};
    pool->slabs = slab;
    pool->nslabs++;
    slab_to_spare_locked(pool, slab, 0);
    return true;
}

/* Addresses compared as integers: the slabs are different allocations. */
static int compare_slabs(const void *x, const void *y)
{
    uintptr_t a = (uintptr_t)(*(bp__buf_slab *const *)x)->bufs, b = (uintptr_t)(*(bp__buf_slab *const *)y)->bufs;
    return a < b ? -1 : a > b;
}

/* The slab (of the `n` in `sorted`, by address) an object of the pool lives in. */
static size_t slab_of(bp__buf_slab **sorted, size_t n, const bp_buf *b)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if ((uintptr_t)sorted[mid]->bufs <= (uintptr_t)b) lo = mid;
        else hi = mid;
    }
    return lo;
}

size_t bp__object_pool_give_back(bp__object_pool *pool)
{
    /* Under the lock only what is O(slabs): the spare list is taken whole (threads that
     * need objects meanwhile find it empty and take a given-back or new slab) and the
     * slabs listed; the walk over the objects - O(objects x log slabs), tens of ms for a
     * million - runs outside it, then the objects kept go back in one splice. */
    pthread_mutex_lock(pool->lock);
    size_t n = pool->nslabs - pool->given_back, nspare = pool->nspare, given = 0;
    bool changed = pool->spare_moves != pool->moves_at_give_back;
    bp__buf_slab **sorted = changed && nspare >= BP__SLAB_BUFS ? malloc(n * sizeof *sorted) : NULL;
    uint16_t *free_in = sorted != NULL ? calloc(n, sizeof *free_in) : NULL;
    if (free_in == NULL) {
        pthread_mutex_unlock(pool->lock);
        free(sorted);
        return 0;
    }
    pool->moves_at_give_back = pool->spare_moves;
    size_t k = 0;
    for (bp__buf_slab *slab = pool->slabs; slab != NULL; slab = slab->next)
        if (!slab->given_back) sorted[k++] = slab;
    bp_buf *list = pool->spare;
    pool->spare = NULL;
    pool->nspare = 0;
    pthread_mutex_unlock(pool->lock);

    qsort(sorted, n, sizeof *sorted, compare_slabs);
    for (bp_buf *b = list; b != NULL; b = b->next_free) free_in[slab_of(sorted, n, b)]++;
    /* The list without the objects of slabs all of whose objects are on it, in order. */
    bp_buf *kept = NULL, **link = &kept, *last = NULL;
    for (bp_buf *b = list; b != NULL; b = b->next_free) {
        if (free_in[slab_of(sorted, n, b)] == BP__SLAB_BUFS) continue;
        *link = last = b;
        link = &b->next_free;
    }
    *link = NULL;
    for (size_t i = 0; i < n; i++) {
        if (free_in[i] != BP__SLAB_BUFS) continue;
        /* Nobody else can reach these objects now (released, on no list): their highest
         * generation, then their pages back to the OS (refused, the pages stay as they
         * are: released objects, read as such). */
        bp__buf_slab *slab = sorted[i];
        uint64_t floor = 0;
        for (size_t j = 0; j < BP__SLAB_BUFS; j++) {
            uint64_t g = __atomic_load_n(&slab->bufs[j].generation, __ATOMIC_RELAXED);
            if (g > floor) floor = g;
        }
        slab->generation_floor = floor;
        (void)bp__os_purge(slab->bufs, BP__SLAB_BYTES);
        given++;
    }

    pthread_mutex_lock(pool->lock);
    if (last != NULL) { /* in front of what was pushed meanwhile: not a move to look at */
        last->next_free = pool->spare;
        pool->spare = kept;
    }
    pool->nspare += nspare - given * BP__SLAB_BUFS;
    for (size_t i = 0; i < n; i++) {
        if (free_in[i] != BP__SLAB_BUFS) continue;
        bp__buf_slab *slab = sorted[i];
        slab->given_back = true;
        slab->next_given_back = pool->given_back_slabs;
        pool->given_back_slabs = slab;
        pool->given_back++;
    }
    pthread_mutex_unlock(pool->lock);
    free(free_in);
    free(sorted);
    return given * BP__SLAB_BYTES;
}

#if BP__TESTING
bool bp__object_pool_check(bp__object_pool *pool)
{
    pthread_mutex_lock(pool->lock);
    bool ok = true;
    size_t n = 0, listed = 0, given = 0;
    for (bp_buf *b = pool->spare; b != NULL && ok; b = b->next_free, n++) {
        ok = BP__REFCNT_LOAD(b, __ATOMIC_RELAXED) == 0 && b->composite == NULL;
        bool found = false;
        for (bp__buf_slab *slab = pool->slabs; slab != NULL && !found; slab = slab->next)
            found = (uintptr_t)b - (uintptr_t)slab->bufs < BP__SLAB_BYTES && !slab->given_back;
        ok = ok && found;
    }
    for (bp__buf_slab *slab = pool->given_back_slabs; slab != NULL; slab = slab->next_given_back) listed++;
    for (bp__buf_slab *slab = pool->slabs; slab != NULL; slab = slab->next) given += slab->given_back;
    ok = ok && n == pool->nspare && listed == pool->given_back && given == pool->given_back;
    pthread_mutex_unlock(pool->lock);
    return ok;
}
#endif

size_t bp__object_pool_bytes(const bp__object_pool *pool)
{
    return (pool->nslabs - pool->given_back) * BP__SLAB_BYTES + pool->nslabs * sizeof(bp__buf_slab);
}

BP__NOINLINE bp_buf *bp__recycler_refill(bp__recycler *r)
{
    bp__object_pool *pool = r->pool;
    pthread_mutex_lock(pool->lock);
    if (pool->spare == NULL && !grow_spare_locked(pool)) {
        pthread_mutex_unlock(pool->lock);
        return NULL;
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

static void (*_Atomic give_all_pause)(void); /* test builds' hook, see recycler.h */

#if BP__TESTING
void bp__recycler_inject_give_all_pause(void (*pause)(void)) { atomic_store(&give_all_pause, pause); }
#endif

void bp__recycler_give_all(bp__recycler *r)
{
    if (r->top == NULL) return;
    bp_buf *last = r->top;
    while (last->next_free != NULL) last = last->next_free;
    /* The stack empties under the pool's lock, which the fork handlers take: a child sees
     * the objects on the spare list or in the stack, never in both (its reap of this
     * thread's state would push them again, and hand each out twice). */
    pthread_mutex_lock(r->pool->lock);
    spare_push_locked(r->pool, r->top, last, r->count);
    r->top = NULL;
    r->count = 0;
    pthread_mutex_unlock(r->pool->lock);
    if (BP__TESTING && atomic_load_explicit(&give_all_pause, memory_order_relaxed) != NULL)
        atomic_load_explicit(&give_all_pause, memory_order_relaxed)();
}
