/* SPDX-License-Identifier: MIT */
/*
 * Allocator lifetime, thread states, the bp_buf recycler, regions, statistics, and the
 * fork handlers that keep every allocator usable in a child process.
 */
#include "allocator.h"

#include "os.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_uint_fast64_t next_allocator_id = 1;

/* What bp__tls_last points at when no state is cached: no tag base, no cacheable class,
 * so the release fast path fails its checks without testing for NULL. Never written. */
bp__thread_state bp__no_thread_state;

_Thread_local bp__tls_cache bp__tls_last = {
    .allocator_id = 0, .cache = &bp__no_thread_state.tcache.head, .tag_base = BP__TAG_SPENT};

/* Caches ts as this thread's state for allocator `id`, with a copy of its cache's tag base
 * (BP__TAG_SPENT, which matches no tag, for no state or a state without a cache). The
 * inline release compares a buffer's tag with the copy and reads the state only when they
 * match, and the inline allocation reads it only when the allocator's id matches: a state
 * left cached here when another thread destroys its allocator is then never read, since
 * ids and tag bases are never reused. */
static void tls_cache_set(uint64_t id, bp__thread_state *ts)
{
    bp__tls_last.allocator_id = id;
    bp__tls_last.cache = &ts->tcache.head;
    bp__tls_last.tag_base = ts->tcache.head.tag_base != 0 ? ts->tcache.head.tag_base : BP__TAG_SPENT;
}

static void tls_cache_clear(void) { tls_cache_set(0, &bp__no_thread_state); }

/* ---------------------------------------------------------------------------------------
 * Thread states
 * ------------------------------------------------------------------------------------- */

static bp__arena *least_used_arena(bp_allocator *a)
{
    bp__arena *best = &a->arenas[0];
    unsigned best_threads = atomic_load_explicit(&best->threads, memory_order_relaxed);
    for (unsigned i = 1; i < a->config.arenas && best_threads > 0; i++) {
        unsigned threads = atomic_load_explicit(&a->arenas[i].threads, memory_order_relaxed);
        if (threads < best_threads) {
            best = &a->arenas[i];
            best_threads = threads;
        }
    }
    atomic_fetch_add_explicit(&best->threads, 1, memory_order_relaxed);
    return best;
}

/* Moves up to `n` objects from a linked stack onto the allocator's spare list. */
static void spare_push_locked(bp_allocator *a, bp_buf *first, bp_buf *last, size_t n)
{
    last->next_free = a->spare_bufs;
    a->spare_bufs = first;
    a->nspare_bufs += n;
}

/* Hands one released buffer back: region into this thread's cache or to its arena, object
 * into the recycler. */
static void take_back_one(bp__thread_state *ts, bp_buf *b, bool cache_regions)
{
    bp_allocator *a = ts->allocator;
    bool paranoid = a->config.leak_detection == BP_LEAK_PARANOID;
    /* Usually only the tag is read (see bp__buf_cache_at_home); owner and tag are written
     * for an exited owner's buffers. */
    if (cache_regions && !paranoid && bp__buf_cache_at_home(ts, b)) return;
    bp__buf_give_back(ts, a, b, paranoid);
}

/* Hands a stack of remote batches back (see take_back_one) and frees the batches. Returns
 * the number of buffers. */
static size_t take_back(bp__thread_state *ts, bp__remote_batch *list, bool cache_regions)
{
    /* Both lines the next allocation of each buffer writes - the object's first and the
     * data's first - were last touched on the releasing core; fetched now, for writing, they
     * are this core's when the producer gets to them (the data line alone: 44 -> 30 ns per
     * buffer in the producer/consumer benchmark). Objects a few ahead, first line only (the
     * tag there is all a take-back reads); the data line once the object's line is here. */
    enum { AHEAD = 4 };
    bool has_prefetchw = ts->allocator->has_prefetchw;
    size_t n = 0;
    while (list != NULL) {
        bp__remote_batch *batch = list;
        list = batch->next;
        for (unsigned i = 0; i < batch->count; i++) {
            if (i + AHEAD < batch->count) bp__prefetch_for_write(&batch->bufs[i + AHEAD]->head, has_prefetchw);
            bp_buf *b = batch->bufs[i];
            bp__prefetch_for_write(b->head.memory, has_prefetchw);
            take_back_one(ts, b, cache_regions);
        }
        n += batch->count;
        free(batch);
    }
    return n;
}

/* bp__remote_flush_slot with a batch to push; out of line, so that the test for one stays
 * small enough to inline into bp__remote_flush's pass over the slots (every cache miss). */
static BP__NOINLINE void push_batch(bp__thread_state *ts, struct bp__remote_slot *slot)
{
    bp__remote_batch *batch = slot->batch;
    bp__state_enter(ts);
    bp__thread_state *owner = slot->owner;
    unsigned n = batch->count;
    slot->batch = NULL;
    bp__remote_batch *head = atomic_load_explicit(&owner->remote_head, memory_order_relaxed);
    do {
        if (head == BP__REMOTE_CLOSED) { /* the owner exited: free them here */
            batch->next = NULL;
            take_back(ts, batch, ts->arena != NULL);
            bp__state_leave(ts);
            return;
        }
        batch->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&owner->remote_head, &head, batch, memory_order_release,
                                                    memory_order_relaxed));
    bp__counter_add(&ts->remote_releases, n);
    bp__state_leave(ts);
}

void bp__remote_flush_slot(bp__thread_state *ts, struct bp__remote_slot *slot)
{
    bp__remote_batch *batch = slot->batch;
    if (batch != NULL && batch->count != 0) push_batch(ts, slot);
}

void bp__remote_flush(bp__thread_state *ts)
{
    for (unsigned i = 0; i < BP__REMOTE_SLOTS; i++) bp__remote_flush_slot(ts, &ts->remote_slots[i]);
}

/* Empties the slots, freeing any batch left in one (after bp__remote_flush none holds a
 * buffer; at allocator destroy the buffers a batch lists die with the slabs). */
static void free_remote_slots(bp__thread_state *ts)
{
    for (unsigned i = 0; i < BP__REMOTE_SLOTS; i++) {
        free(ts->remote_slots[i].batch);
        ts->remote_slots[i].batch = NULL;
        ts->remote_slots[i].owner = NULL;
    }
}

static atomic_bool remote_batch_failure; /* test builds' hook, see allocator.h */

#if BP__TESTING
void bp__remote_inject_batch_failure(bool fail) { atomic_store(&remote_batch_failure, fail); }
#endif

BP__NOINLINE void bp__remote_release_slow(bp__thread_state *ts, struct bp__remote_slot *slot, bp_buf *b)
{
    bp__state_enter(ts);
    bool fail = BP__TESTING && atomic_load_explicit(&remote_batch_failure, memory_order_relaxed);
    bp__remote_batch *batch = fail ? NULL : malloc(sizeof *batch);
    if (BP__UNLIKELY(batch == NULL)) {
        /* A release cannot fail: without a batch the region goes back from here, as it
         * does when the owner has exited. */
        take_back_one(ts, b, ts->arena != NULL);
    } else {
        batch->next = NULL;
        batch->count = 1;
        batch->bufs[0] = b;
        slot->batch = batch;
        if (BP__REMOTE_BATCH == 1) bp__remote_flush_slot(ts, slot);
    }
    bp__state_leave(ts);
}

size_t bp__remote_drain(bp__thread_state *ts)
{
    if (atomic_load_explicit(&ts->remote_head, memory_order_relaxed) == NULL) return 0;
    bp__state_enter(ts);
    bp__remote_batch *list = atomic_exchange_explicit(&ts->remote_head, NULL, memory_order_acquire);
    size_t n = take_back(ts, list, true);
    bp__counter_add(&ts->remote_drained, n);
    bp__state_leave(ts);
    return n;
}

void bp__buf_give_back(bp__thread_state *ts, bp_allocator *a, bp_buf *b, bool hold_back)
{
    if (hold_back || b->region.kind != BP__KIND_NORMAL) bp__region_free(a, &b->region);
    else if (bp__arena_free_with_object(b->region.chunk->arena, &b->region, b)) return;
    bp__buf_object_retire(ts, a, b, hold_back);
}

/* A list of loose objects (linked by next_free) into ts's recycler (ts may be NULL). */
static void retire_loose(bp_allocator *a, bp__thread_state *ts, void *loose)
{
    for (bp_buf *b = loose; b != NULL;) {
        bp_buf *next = b->next_free;
        bp__buf_object_retire(ts, a, b, false);
        b = next;
    }
}

void bp__buf_objects_reclaim(bp_allocator *a, bp__thread_state *ts, bp__arena *arena)
{
    retire_loose(a, ts, bp__arena_take_loose_objects(arena));
}

/* A normal class no thread cache keeps: a run from the arena, which comes with the object
 * released with it when the run cache had one (nothing else to set but the owner: the rest
 * is as a root's, and the tag stays BP__TAG_NONE); else the object from the recycler. */
static bp_buf *alloc_whole(bp_allocator *a, bp__thread_state *ts, unsigned cls, int *rc)
{
    /* What consumers released for us comes back (onto its runs) before the arena is asked:
     * taken back only when the recycler ran dry, after a fresh run had been cut, a 64 KiB
     * producer/consumer pair mapped 104 MiB where 64 MiB are in flight. */
    bp__remote_drain(ts);
    void *held, *loose;
    bp__region region;
    *rc = bp__arena_alloc_whole(ts->arena, cls, &region, &held, &loose);
    if (BP__UNLIKELY(loose != NULL)) retire_loose(a, ts, loose);
    if (*rc != 0) return NULL;
    bp_buf *b = held;
    if (b != NULL) {
        BP__ASSERT(b->region.memory == region.memory && b->head.memory == region.memory &&
                  b->head.release_tag == BP__TAG_NONE && b->allocator == a);
        b->owner = ts;
        return b;
    }
    b = bp__buf_object_get(ts);
    if (BP__UNLIKELY(b == NULL)) {
        bp__arena_free(ts->arena, &region);
        *rc = BP_ENOMEM;
        return NULL;
    }
    b->region = region;
    bp__buf_object_prepare(b, a, ts);
    return b;
}

bp_buf *bp__buf_alloc_miss(bp_allocator *a, bp__thread_state *ts, size_t size, unsigned cls, int *rc)
{
    bp_buf *b;
    if (ts->arena != NULL) {
        if (cls >= ts->arena->whole_from && cls < a->sc.nclasses) return alloc_whole(a, ts, cls, rc);
        if (cls < ts->tcache.head.ncacheable) {
            /* A miss of a cached class (at most one per half a bin): what this thread holds
             * for other owners goes now. Not on every allocation of an uncached size, which
             * pushed batches of a buffer or two: a consumer allocating 64 KiB at every fourth
             * release ran its hand-off 3x slower. Such a thread's partial batch goes at its
             * scheduled trim instead (bp__tcache_scheduled_trim), or when full. */
            bp__remote_flush(ts);
            bp__tcache_count(&ts->tcache.misses);
            /* What consumers released for us comes back before the arena is asked. */
            if (bp__remote_drain(ts) > 0 && (b = bp__tcache_take(&ts->tcache, cls)) != NULL) return b;
            if ((b = bp__tcache_refill(&ts->tcache, cls)) != NULL) return b;
        }
    }
    b = bp__buf_object_get(ts);
    *rc = b != NULL ? bp__region_alloc(a, ts->arena, size, &b->region) : BP_ENOMEM;
    if (*rc != 0) {
        if (b != NULL) bp__buf_object_put(ts, a, b);
        return NULL;
    }
    bp__buf_object_prepare(b, a, ts);
    return b;
}

int bp__region_take(bp_allocator *a, bp__thread_state *ts, size_t size, bp__region *out)
{
    int rc = 0;
    bp_buf *b = bp__buf_with_region(a, ts, size, &rc, NULL);
    if (b == NULL) return rc;
    *out = b->region;
    bp__buf_object_retire(ts, a, b, false);
    return 0;
}

void bp__region_give(bp_allocator *a, bp__thread_state *ts, const bp__region *region)
{
    if (ts != NULL && bp__region_is_home(region, ts) && region->class_index < ts->tcache.head.ncacheable) {
        bp_buf *b = bp__buf_object_get(ts);
        if (b != NULL) {
            b->region = *region;
            bp__buf_object_prepare(b, a, ts);
            if (bp__buf_cache_at_home(ts, b)) return;
            bp__buf_object_retire(ts, a, b, false);
        }
    }
    bp__region_free(a, region);
}

/* pthread key destructor: the thread is exiting. Everything it holds goes back; the state
 * itself stays listed, unowned, for a later thread to take (other threads may still hold
 * pointers to it as the owner of buffers they have not released yet). */
static void thread_state_release(void *arg)
{
    bp__thread_state *ts = arg;
    bp_allocator *a = ts->allocator;
    bp__state_enter(ts); /* to the end: a fork finds the state before this or after */
    bp__remote_flush(ts);
    free_remote_slots(ts);
    /* Close the remote stack: from now on releasers free for themselves. (Still closed
     * when its thread vanished in a fork before it first opened it.) */
    bp__remote_batch *pending = atomic_exchange_explicit(&ts->remote_head, BP__REMOTE_CLOSED, memory_order_acquire);
    if (pending == BP__REMOTE_CLOSED) pending = NULL;
    bp__counter_add(&ts->remote_drained, take_back(ts, pending, false));
    if (ts->arena != NULL) {
        bp__tcache_flush(&ts->tcache);
        /* The binding goes now (the state stays this thread's until in_use is cleared).
         * The last thread of an arena frees its caches: nobody is left to take from them.
         * A thread binding meanwhile just starts with emptier ones. */
        if (atomic_fetch_sub_explicit(&ts->arena->threads, 1, memory_order_acq_rel) == 1) {
            bp__arena_cache_trim(ts->arena, ts, true);
            bp__arena_run_cache_flush(ts->arena);
        }
        /* The objects of held runs that went back (at that flush, or to make room for
         * another thread's run): into this recycler, and from there to the spare list. */
        bp__buf_objects_reclaim(a, ts, ts->arena);
    }
    pthread_mutex_lock(&a->lock);
    if (ts->free_bufs != NULL) {
        bp_buf *last = ts->free_bufs;
        while (last->next_free != NULL) last = last->next_free;
        spare_push_locked(a, ts->free_bufs, last, ts->nfree_bufs);
        ts->free_bufs = NULL;
        ts->nfree_bufs = 0;
    }
    /* Fold the counters into the allocator's and start the state from zero. */
    /* Allocated here minus released here: the ledger, the bins being empty now. */
    a->buffers_active_exited += atomic_load_explicit(&ts->tcache.ledger, memory_order_relaxed);
    a->remote_releases_exited += atomic_load_explicit(&ts->remote_releases, memory_order_relaxed);
    a->remote_drained_exited += atomic_load_explicit(&ts->remote_drained, memory_order_relaxed);
    a->views_active_exited += atomic_load_explicit(&ts->view_ledger, memory_order_relaxed);
    size_t no_entries, no_bytes;
    uint64_t hits;
    bp__tcache_totals(&ts->tcache, &no_entries, &no_bytes, &hits); /* flushed: only hits remain */
    a->cache_hits_exited += hits;
    a->cache_misses_exited += atomic_load_explicit(&ts->tcache.misses, memory_order_relaxed);
    a->cache_trims_exited += atomic_load_explicit(&ts->tcache.trims, memory_order_relaxed);
    atomic_store_explicit(&ts->tcache.ledger, 0, memory_order_relaxed);
    atomic_store_explicit(&ts->remote_releases, 0, memory_order_relaxed);
    atomic_store_explicit(&ts->remote_drained, 0, memory_order_relaxed);
    atomic_store_explicit(&ts->view_ledger, 0, memory_order_relaxed);
    atomic_store_explicit(&ts->tcache.hits_before_trims, 0, memory_order_relaxed);
    atomic_store_explicit(&ts->tcache.misses, 0, memory_order_relaxed);
    atomic_store_explicit(&ts->tcache.trims, 0, memory_order_relaxed);
    ts->in_use = false;
    ts->arena = NULL;
    /* Unnested by hand before the state can be adopted (in_use false, under the lock): the
     * next owner's bp__state_enter then counts from 0 and waits for the release below. */
    ts->fork_depth = 0;
    pthread_mutex_unlock(&a->lock);
    bp__lock_release(&ts->fork_lock);
    if (bp__tls_last.cache == &ts->tcache.head) tls_cache_clear();
}

/* What a thread's allocation clock counts leak samples with: 0 when nothing is tracked. */
static uint32_t leak_sample_interval(const bp_allocator *a)
{
    return a->leak.level == BP_LEAK_DISABLED ? 0 : a->leak.interval;
}

static atomic_bool thread_state_failure; /* test builds' hook, see allocator.h */

#if BP__TESTING
void bp__inject_thread_state_failure(bool fail) { atomic_store(&thread_state_failure, fail); }
#endif

/* Every live allocator, for the fork handlers, which also walk each one's thread states
 * under this lock: a state joins a->threads under it (and a->lock). */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static bp_allocator *live_allocators;

/* A state no thread owns, or a new one; owned by the caller on return. */
static bp__thread_state *adopt_or_create(bp_allocator *a)
{
    pthread_mutex_lock(&a->lock);
    bp__thread_state *ts = a->threads;
    while (ts != NULL && ts->in_use) ts = ts->next;
    if (ts != NULL) ts->in_use = true;
    pthread_mutex_unlock(&a->lock);
    if (ts != NULL) return ts;
    if (BP__TESTING && atomic_load_explicit(&thread_state_failure, memory_order_relaxed)) return NULL;
    ts = aligned_alloc(BP__CACHE_LINE, bp__align_up(sizeof *ts, BP__CACHE_LINE));
    if (ts == NULL) return NULL;
    memset(ts, 0, sizeof *ts);
    ts->allocator = a;
    atomic_init(&ts->remote_head, BP__REMOTE_CLOSED);
    if (bp__lock_init(&ts->fork_lock) != 0) {
        free(ts);
        return NULL;
    }
    pthread_mutex_lock(&registry_lock);
    pthread_mutex_lock(&a->lock);
    ts->in_use = true;
    ts->next = a->threads;
    if (a->threads != NULL) a->threads->prev = ts;
    a->threads = ts;
    pthread_mutex_unlock(&a->lock);
    pthread_mutex_unlock(&registry_lock);
    return ts;
}

void bp__count_stateless_release(bp_allocator *a)
{
    pthread_mutex_lock(&a->lock);
    a->buffers_active_exited--; /* modulo 2^64, as the ledgers it is summed with */
    pthread_mutex_unlock(&a->lock);
}

static void disown(bp_allocator *a, bp__thread_state *ts)
{
    pthread_mutex_lock(&a->lock);
    ts->in_use = false;
    pthread_mutex_unlock(&a->lock);
}

BP__NOINLINE bp__thread_state *bp__thread_state_slow(bp_allocator *a)
{
    bp__thread_state *ts = pthread_getspecific(a->thread_key);
    if (ts == NULL) {
        ts = adopt_or_create(a);
        if (ts == NULL) return NULL;
        if (pthread_setspecific(a->thread_key, ts) != 0) {
            disown(a, ts);
            return NULL;
        }
        if (a->pooled) {
            /* The state's lock-protected fields are ours now; the arena binding is new. */
            pthread_mutex_lock(&a->lock); /* stats read the cache under it */
            ts->arena = least_used_arena(a);
            bp__tcache_init(&ts->tcache, ts->arena, &a->sc, &a->config, leak_sample_interval(a));
            pthread_mutex_unlock(&a->lock);
        } else {
            bp__tcache_clock_init(&ts->tcache, 0, leak_sample_interval(a));
        }
        atomic_store_explicit(&ts->remote_head, NULL, memory_order_release); /* open */
    }
    tls_cache_set(a->head.id, ts);
    return ts;
}

/* ---------------------------------------------------------------------------------------
 * The bp_buf recycler
 * ------------------------------------------------------------------------------------- */

/* Refills the thread's recycler from the spare list, or from a new slab. */
BP__NOINLINE bp_buf *bp__buf_object_refill(bp__thread_state *ts)
{
    bp_allocator *a = ts->allocator;
    /* Objects released by other threads come home first. */
    bp__remote_flush(ts);
    if (bp__remote_drain(ts) > 0 && ts->free_bufs != NULL) {
        bp_buf *b = ts->free_bufs;
        ts->free_bufs = b->next_free;
        ts->nfree_bufs--;
        return b;
    }
    pthread_mutex_lock(&a->lock);
    if (a->spare_bufs == NULL) {
        /* Aligned: each bp_buf starts a cache line (see struct bp_buf). */
        bp__buf_slab *slab = aligned_alloc(_Alignof(bp__buf_slab), sizeof *slab);
        if (slab != NULL) memset(slab, 0, sizeof *slab);
        if (slab == NULL) {
            pthread_mutex_unlock(&a->lock);
            return NULL;
        }
        slab->next = a->slabs;
        a->slabs = slab;
        for (size_t i = 0; i + 1 < BP__SLAB_BUFS; i++) slab->bufs[i].next_free = &slab->bufs[i + 1];
        spare_push_locked(a, &slab->bufs[0], &slab->bufs[BP__SLAB_BUFS - 1], BP__SLAB_BUFS);
    }
    /* Take one to return and up to a batch more for the thread's stack. */
    bp_buf *taken = a->spare_bufs;
    a->spare_bufs = taken->next_free;
    a->nspare_bufs--;
    for (unsigned i = 0; i < BP__SPARE_BATCH && a->spare_bufs != NULL &&
                         ts->nfree_bufs < a->config.recycler_capacity;
         i++) {
        bp_buf *b = a->spare_bufs;
        a->spare_bufs = b->next_free;
        a->nspare_bufs--;
        b->next_free = ts->free_bufs;
        ts->free_bufs = b;
        ts->nfree_bufs++;
    }
    pthread_mutex_unlock(&a->lock);
    return taken;
}

/* The recycler is full: hand a batch to the spare list, where other threads find it. */
BP__NOINLINE void bp__buf_object_overflow(bp_allocator *a, bp__thread_state *ts, bp_buf *b)
{
    bp_buf *first = b, *last = b;
    size_t n = 1;
    while (n < BP__SPARE_BATCH && ts != NULL && ts->free_bufs != NULL) {
        bp_buf *next = ts->free_bufs;
        ts->free_bufs = next->next_free;
        ts->nfree_bufs--;
        last->next_free = next;
        last = next;
        n++;
    }
    last->next_free = NULL;
    pthread_mutex_lock(&a->lock);
    spare_push_locked(a, first, last, n);
    pthread_mutex_unlock(&a->lock);
}

/* ---------------------------------------------------------------------------------------
 * Regions
 * ------------------------------------------------------------------------------------- */

int bp__region_alloc(bp_allocator *a, bp__arena *arena, size_t size, bp__region *out)
{
    if (arena != NULL) return bp__arena_alloc(arena, size, out);
    void *memory = malloc(size == 0 ? 1 : size);
    if (memory == NULL) return BP_ENOMEM;
    out->memory = memory;
    out->length = size;
    out->chunk = NULL;
    out->handle = 0;
    out->kind = BP__KIND_MALLOC;
    atomic_fetch_add_explicit(&a->unpooled_allocations, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&a->unpooled_active_bytes, size, memory_order_relaxed);
    return 0;
}

void bp__region_free(bp_allocator *a, const bp__region *region)
{
    if (region->kind != BP__KIND_MALLOC) {
        bp__arena_free(bp__region_arena(region), region);
        return;
    }
    free(region->memory);
    atomic_fetch_add_explicit(&a->unpooled_deallocations, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&a->unpooled_active_bytes, region->length, memory_order_relaxed);
}

/* ---------------------------------------------------------------------------------------
 * Lifetime
 * ------------------------------------------------------------------------------------- */

/* Allocators with leak detection, reported at process exit if still alive then. */
static pthread_mutex_t tracked_lock = PTHREAD_MUTEX_INITIALIZER;
static bp_allocator *tracked_allocators;
static pthread_once_t exit_report_once = PTHREAD_ONCE_INIT;

static void report_leaks_at_exit(void)
{
    pthread_mutex_lock(&tracked_lock);
    for (bp_allocator *a = tracked_allocators; a != NULL; a = a->next_tracked) bp__leak_report(&a->leak);
    pthread_mutex_unlock(&tracked_lock);
}

static void register_exit_report(void) { atexit(report_leaks_at_exit); }

static void track_allocator(bp_allocator *a)
{
    pthread_once(&exit_report_once, register_exit_report);
    pthread_mutex_lock(&tracked_lock);
    a->next_tracked = tracked_allocators;
    tracked_allocators = a;
    pthread_mutex_unlock(&tracked_lock);
}

static void untrack_allocator(bp_allocator *a)
{
    pthread_mutex_lock(&tracked_lock);
    for (bp_allocator **link = &tracked_allocators; *link != NULL; link = &(*link)->next_tracked) {
        if (*link == a) {
            *link = a->next_tracked;
            break;
        }
    }
    pthread_mutex_unlock(&tracked_lock);
}

void bp__buf_object_quarantine(bp_allocator *a, bp_buf *b)
{
    pthread_mutex_lock(&a->lock);
    if (a->quarantine == NULL) a->quarantine = calloc(BP__QUARANTINE, sizeof *a->quarantine);
    if (a->quarantine == NULL) { /* no room to hold it back: reuse it */
        b->next_free = NULL;
        spare_push_locked(a, b, b, 1);
        pthread_mutex_unlock(&a->lock);
        return;
    }
    if (a->quarantine_count == BP__QUARANTINE) {
        bp_buf *oldest = a->quarantine[a->quarantine_head];
        a->quarantine_head = (a->quarantine_head + 1) % BP__QUARANTINE;
        a->quarantine_count--;
        oldest->next_free = NULL;
        spare_push_locked(a, oldest, oldest, 1);
    }
    a->quarantine[(a->quarantine_head + a->quarantine_count++) % BP__QUARANTINE] = b;
    pthread_mutex_unlock(&a->lock);
}

/* ---------------------------------------------------------------------------------------
 * Fork
 *
 * A child process has only the thread that forked, and every lock as it was at that
 * instant. So before a fork every lock a child could need is taken - the registry, the list
 * of leak-tracked allocators, every thread state's fork lock (their owners hold them across
 * multi-step changes: see bp__state_enter), then each allocator's lock, leak tracker and
 * arenas, then the misuse and leak-sink locks: the order every other path takes them in -
 * and they are let go after it in both processes. In the child, the states of the other
 * threads, which it does not have, are then released as at those threads' exit: their
 * caches go back to the arenas, their counters into the allocator's, their remote stacks
 * close (a buffer of theirs released in the child goes back from the releasing thread), so
 * that threads and thread_caches count the child's thread alone.
 * ------------------------------------------------------------------------------------- */

static void fork_prepare(void)
{
    pthread_mutex_lock(&registry_lock);
    pthread_mutex_lock(&tracked_lock);
    for (bp_allocator *a = live_allocators; a != NULL; a = a->next_live)
        for (bp__thread_state *ts = a->threads; ts != NULL; ts = ts->next) bp__lock_acquire(&ts->fork_lock);
    for (bp_allocator *a = live_allocators; a != NULL; a = a->next_live) {
        pthread_mutex_lock(&a->lock);
        bp__leak_tracker_atfork(&a->leak, BP__FORK_PREPARE);
        for (unsigned i = 0; a->pooled && i < a->config.arenas; i++) bp__lock_acquire(&a->arenas[i].lock);
    }
    bp__leak_atfork(BP__FORK_PREPARE);
    bp__misuse_atfork(BP__FORK_PREPARE);
}

/* Lets go of what fork_prepare took. The child starts the futex locks afresh instead:
 * whoever waited on them is not there. */
static void fork_unlock(int when)
{
    bool child = when == BP__FORK_CHILD;
    bp__misuse_atfork(when);
    bp__leak_atfork(when);
    for (bp_allocator *a = live_allocators; a != NULL; a = a->next_live) {
        for (unsigned i = 0; a->pooled && i < a->config.arenas; i++) {
            if (child) bp__lock_init(&a->arenas[i].lock);
            else bp__lock_release(&a->arenas[i].lock);
        }
        bp__leak_tracker_atfork(&a->leak, when);
        pthread_mutex_unlock(&a->lock);
        for (bp__thread_state *ts = a->threads; ts != NULL; ts = ts->next) {
            if (!child) {
                bp__lock_release(&ts->fork_lock);
                continue;
            }
            bp__lock_init(&ts->fork_lock);
            ts->fork_depth = 0; /* a vanished owner may have been waiting for it */
        }
    }
    pthread_mutex_unlock(&tracked_lock);
    pthread_mutex_unlock(&registry_lock);
}

static void fork_parent(void) { fork_unlock(BP__FORK_PARENT); }

/* In the child: the states in use by threads other than this one are released as at their
 * exit. Their caches are whole (no thread was inside a multi-step change); only an inline
 * release may have been caught between pushing a buffer into a bin and storing its count
 * 0: every cached buffer gets count 0, as the cache's invariants have it. */
static void release_vanished_states(bp_allocator *a)
{
    bp__thread_state *mine = pthread_getspecific(a->thread_key);
    for (bp__thread_state *ts = a->threads; ts != NULL; ts = ts->next) {
        if (!ts->in_use || ts == mine) continue;
        for (unsigned c = 0; ts->arena != NULL && c < ts->tcache.head.ncacheable; c++) {
            bp__tcache_bin *bin = &ts->tcache.head.bins[c];
            for (uint32_t i = 0; i < bp__bin_count(bin); i++) BP__REFCNT_STORE(bin->entries[i], 0, __ATOMIC_RELAXED);
        }
        thread_state_release(ts);
    }
}

static void fork_child(void)
{
    fork_unlock(BP__FORK_CHILD);
    pthread_mutex_lock(&registry_lock);
    for (bp_allocator *a = live_allocators; a != NULL; a = a->next_live) release_vanished_states(a);
    pthread_mutex_unlock(&registry_lock);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static bool atfork_installed;

static void install_fork_handlers(void)
{
    atfork_installed = pthread_atfork(fork_prepare, fork_parent, fork_child) == 0;
}

static void register_allocator(bp_allocator *a)
{
    pthread_mutex_lock(&registry_lock);
    a->next_live = live_allocators;
    live_allocators = a;
    pthread_mutex_unlock(&registry_lock);
}

static void unregister_allocator(bp_allocator *a)
{
    pthread_mutex_lock(&registry_lock);
    for (bp_allocator **link = &live_allocators; *link != NULL; link = &(*link)->next_live) {
        if (*link == a) {
            *link = a->next_live;
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
}

static bp_allocator *allocator_create(const bp_config *cfg, bool pooled, int *err)
{
    int rc = BP_ENOMEM;
    bp__misuse_env_init(); /* BYTEPOOL_ABORT_ON_MISUSE applies from the first allocator */
    /* Once, at the first allocator: no allocator exists without them. */
    pthread_once(&atfork_once, install_fork_handlers);
    if (!atfork_installed) goto fail;
    bp_allocator *a = calloc(1, sizeof *a);
    if (a == NULL) goto fail;
    a->head.id = atomic_fetch_add(&next_allocator_id, 1);
    a->pooled = pooled;
    a->has_prefetchw = bp__os_cpu_has_prefetchw();
    a->config = *cfg;
    a->release_check = cfg->release_check != 0;
    if (pthread_mutex_init(&a->lock, NULL) != 0) goto fail_free;
    bp__leak_init(&a->leak, cfg->leak_detection, cfg->leak_sampling_interval);
    if (pthread_key_create(&a->thread_key, thread_state_release) != 0) goto fail_mutex;
    /* Unpooled, the size classes stay zeroed: the head's table sends every size to class
     * 0, whose bin in a thread's (empty) cache the allocation fast path finds empty. */
    if (pooled) {
        bp__size_classes_init(&a->sc, cfg->page_size, cfg->chunk_size);
        bp__size_class_table_init(a->head.classes, sizeof a->head.classes);
        a->arenas = aligned_alloc(BP__CACHE_LINE, cfg->arenas * sizeof(bp__arena));
        if (a->arenas == NULL) goto fail_key;
        unsigned i = 0;
        for (; i < cfg->arenas; i++) {
            if (bp__arena_init(&a->arenas[i], &a->sc, i, cfg->chunk_decay_ms, cfg->dirty_decay_ms,
                               cfg->run_cache_size) != 0) break;
            bp__arena_cache_init(&a->arenas[i], &a->sc, cfg);
        }
        if (i < cfg->arenas) {
            while (i > 0) bp__arena_destroy(&a->arenas[--i]);
            free(a->arenas);
            goto fail_key;
        }
    }
    if (cfg->leak_detection != BP_LEAK_DISABLED) track_allocator(a);
    register_allocator(a);
    if (err != NULL) *err = 0;
    return a;

fail_key:
    pthread_key_delete(a->thread_key);
fail_mutex:
    bp__leak_destroy(&a->leak);
    pthread_mutex_destroy(&a->lock);
fail_free:
    free(a);
fail:
    if (err != NULL) *err = rc;
    return NULL;
}

/* A program compiled against a header of another layout would read and write this
 * library's structures at the wrong places: it stops before its first allocator exists. */
static void abi_check(unsigned abi, const char *func)
{
    if (BP__LIKELY(abi == BP__ABI_VERSION)) return;
    fprintf(stderr,
            "bytepool: %s: this program was compiled against a bytepool.h of layout (ABI) %u, but the "
            "library it runs with (bytepool %s) has layout %u (libbytepool.so.%u); rebuild the program "
            "against the installed bytepool.h\n",
            func, abi, BP_VERSION_STRING, (unsigned)BP__ABI_VERSION, (unsigned)BP__ABI_VERSION);
    abort();
}

int bp_version(void) { return BP_VERSION; }

const char *bp_version_string(void) { return BP_VERSION_STRING; }

bp_allocator *bp__allocator_new_abi(unsigned abi, const bp_config *cfg, int *err)
{
    abi_check(abi, "bp_allocator_new");
    bp_config defaults;
    if (cfg == NULL) {
        bp_config_init(&defaults);
        cfg = &defaults;
    }
    char why[160];
    if (bp_config_validate(cfg, why, sizeof why) != 0) {
        if (err != NULL) *err = BP_EINVAL;
        bp__misuse(BP_EINVAL, "bp_allocator_new", "invalid configuration: %s", why);
        return NULL;
    }
    return allocator_create(cfg, true, err);
}

bp_allocator *bp__allocator_new_unpooled_abi(unsigned abi, int *err)
{
    abi_check(abi, "bp_allocator_new_unpooled");
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 0;
    /* Every release reaches free() through the slow path anyway; a release racing another
     * would free the region twice, corrupting the C heap. */
    cfg.release_check = 1;
    return allocator_create(&cfg, false, err);
}

void bp_allocator_destroy(bp_allocator *a)
{
    if (a == NULL || a->is_default) return;
    unregister_allocator(a); /* out of the fork handlers' reach before anything goes */
    if (a->config.leak_detection != BP_LEAK_DISABLED) untrack_allocator(a);
    bp__leak_report(&a->leak); /* what is still tracked now is a leak */
    bp__leak_destroy(&a->leak);
    free(a->quarantine);
    /* Deleting the key first means no exit destructor will run for this allocator. */
    pthread_key_delete(a->thread_key);
    for (bp__thread_state *ts = a->threads; ts != NULL;) {
        bp__thread_state *next = ts->next;
        if (ts->arena != NULL) {
            atomic_fetch_sub_explicit(&ts->arena->threads, 1, memory_order_relaxed);
            bp__tcache_discard(&ts->tcache); /* the arenas go below, regions and all */
        }
        /* Buffers on its remote stack live in the slabs, freed below; the batches that
         * list them go now. */
        bp__remote_batch *pending = atomic_load_explicit(&ts->remote_head, memory_order_acquire);
        while (pending != NULL && pending != BP__REMOTE_CLOSED) {
            bp__remote_batch *after = pending->next;
            free(pending);
            pending = after;
        }
        free_remote_slots(ts);
        bp__lock_destroy(&ts->fork_lock);
        free(ts);
        ts = next;
    }
    /* Other threads may still cache a state freed above (bp__tls_last): never read again,
     * as tls_cache_set says. */
    if (bp__tls_last.allocator_id == a->head.id) tls_cache_clear();
    /* Unpooled buffers still alive own malloc'ed memory reachable only through their
     * bp_buf objects: free it before the slabs go. (Views and composites have no region:
     * a view keeps other fields in its place.) */
    for (bp__buf_slab *slab = a->slabs; slab != NULL;) {
        bp__buf_slab *next = slab->next;
        if (!a->pooled)
            for (size_t i = 0; i < BP__SLAB_BUFS; i++) {
                uint32_t count = BP__REFCNT_LOAD(&slab->bufs[i], __ATOMIC_RELAXED);
                /* not views', composites' (indirect) or wrapped ones' */
                if (count != 0 && !(count & BP__REFCNT_INDIRECT) && slab->bufs[i].region.kind == BP__KIND_MALLOC)
                    free(slab->bufs[i].region.memory);
            }
        free(slab);
        slab = next;
    }
    if (a->pooled) {
        for (unsigned i = 0; i < a->config.arenas; i++) bp__arena_destroy(&a->arenas[i]);
        free(a->arenas);
    }
    pthread_mutex_destroy(&a->lock);
    free(a);
}

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static bp_allocator *default_allocator;


static void default_allocator_create(void)
{
    bp_config cfg;
    char why[200];
    if (bp_config_from_env(&cfg, why, sizeof why) != 0) {
        fprintf(stderr, "bytepool: default allocator not created: %s\n", why);
        return;
    }
    default_allocator = allocator_create(&cfg, true, NULL);
    if (default_allocator == NULL) return;
    default_allocator->is_default = true;
}

bp_allocator *bp__allocator_default_abi(unsigned abi)
{
    abi_check(abi, "bp_allocator_default");
    pthread_once(&default_once, default_allocator_create);
    return default_allocator;
}

int bp_allocator_is_pooled(const bp_allocator *a)
{
    if (a == NULL) return bp__misuse(BP_EINVAL, __func__, "allocator is NULL");
    return a->pooled ? 1 : 0;
}

int bp_thread_cache_trim(bp_allocator *a)
{
    if (a == NULL) return bp__misuse(BP_EINVAL, __func__, "allocator is NULL");
    bp__thread_state *ts = bp__thread_state_get(a);
    if (ts == NULL) return BP_ENOMEM;
    bp__remote_flush(ts); /* as the scheduled trim does */
    if (ts->arena == NULL) return 0;
    return (int)bp__tcache_trim(&ts->tcache);
}

long bp_leak_report(bp_allocator *a)
{
    if (a == NULL) return bp__misuse(BP_EINVAL, __func__, "allocator is NULL");
    return bp__leak_report(&a->leak);
}

int bp_allocator_purge(bp_allocator *a)
{
    if (a == NULL) return bp__misuse(BP_EINVAL, __func__, "allocator is NULL");
    size_t purged = 0;
    for (unsigned i = 0; a->pooled && i < a->config.arenas; i++) {
        bp__arena_cache_trim(&a->arenas[i], NULL, true); /* first: it may empty chunks */
        purged += bp__arena_purge(&a->arenas[i], true);
        bp__buf_objects_reclaim(a, NULL, &a->arenas[i]);
    }
    return (int)purged;
}

int bp_thread_cache_flush(bp_allocator *a)
{
    if (a == NULL) return bp__misuse(BP_EINVAL, __func__, "allocator is NULL");
    bp__thread_state *ts = bp__thread_state_get(a);
    if (ts == NULL) return BP_ENOMEM;
    bp__remote_flush(ts);
    if (ts->arena == NULL) return 0;
    bp__remote_drain(ts);
    size_t before, bytes;
    uint64_t hits;
    bp__tcache_totals(&ts->tcache, &before, &bytes, &hits);
    bp__tcache_flush(&ts->tcache);
    return (int)before;
}

/* ---------------------------------------------------------------------------------------
 * Statistics
 * ------------------------------------------------------------------------------------- */

static void copy_out(void *out, size_t out_size, const void *full, size_t full_size)
{
    memcpy(out, full, out_size < full_size ? out_size : full_size);
}

int bp_arena_get_stats(const bp_allocator *a, unsigned index, bp_arena_stats *out, size_t out_size)
{
    if (a == NULL || out == NULL || out_size == 0)
        return bp__misuse(BP_EINVAL, __func__, "NULL argument or zero out_size");
    if (!a->pooled || index >= a->config.arenas)
        return bp__misuse(BP_ERANGE, __func__, "arena %u does not exist (the allocator has %u)",
                          index, a->pooled ? a->config.arenas : 0);
    bp_arena_stats full;
    bp__arena_get_stats(&a->arenas[index], &full);
    copy_out(out, out_size, &full, sizeof full);
    return 0;
}

int bp_allocator_get_stats(const bp_allocator *a, bp_allocator_stats *out, size_t out_size)
{
    if (a == NULL || out == NULL || out_size == 0)
        return bp__misuse(BP_EINVAL, __func__, "NULL argument or zero out_size");
    bp_allocator_stats full;
    memset(&full, 0, sizeof full);
    bp_allocator *mutable_a = (bp_allocator *)a; /* the lock is not part of the value */
    if (a->pooled) {
        full.arenas = a->config.arenas;
        full.page_size = a->config.page_size;
        full.chunk_size = a->config.chunk_size;
        for (unsigned i = 0; i < a->config.arenas; i++) {
            bp_arena_stats s;
            bp__arena_get_stats(&mutable_a->arenas[i], &s);
            full.mapped_bytes += (s.chunks + s.retained_chunks) * a->config.chunk_size + s.huge_mapped_bytes;
            full.retained_chunks += s.retained_chunks;
            full.dirty_bytes += s.dirty_bytes;
            full.purged_bytes += s.purged_bytes;
            full.active_bytes += s.active_bytes;
            full.chunks += s.chunks;
            full.allocations += s.allocations_small + s.allocations_normal + s.allocations_huge;
            full.deallocations += s.deallocations_small + s.deallocations_normal + s.deallocations_huge;
            full.arena_cached_entries += s.cached_entries;
            full.arena_cached_bytes += s.cached_bytes;
            full.arena_cached_runs += s.cached_runs;
            full.arena_cached_run_bytes += s.cached_run_bytes;
        }
    } else {
        full.allocations = atomic_load(&mutable_a->unpooled_allocations);
        full.deallocations = atomic_load(&mutable_a->unpooled_deallocations);
        full.active_bytes = atomic_load(&mutable_a->unpooled_active_bytes);
    }
    pthread_mutex_lock(&mutable_a->lock);
    uint64_t active = a->buffers_active_exited;
    full.cache_hits = a->cache_hits_exited;
    full.cache_misses = a->cache_misses_exited;
    full.cache_trims = a->cache_trims_exited;
    full.remote_releases = a->remote_releases_exited;
    full.remote_drained = a->remote_drained_exited;
    uint64_t views = a->views_active_exited + atomic_load_explicit(&mutable_a->view_ledger_stateless, memory_order_relaxed);
    for (bp__thread_state *ts = a->threads; ts != NULL; ts = ts->next) {
        active += atomic_load_explicit(&ts->tcache.ledger, memory_order_relaxed);
        views += atomic_load_explicit(&ts->view_ledger, memory_order_relaxed);
        full.remote_releases += atomic_load_explicit(&ts->remote_releases, memory_order_relaxed);
        full.remote_drained += atomic_load_explicit(&ts->remote_drained, memory_order_relaxed);
        if (!ts->in_use) continue;
        full.threads++;
        if (ts->arena == NULL) continue;
        full.thread_caches++;
        size_t entries, bytes;
        uint64_t hits;
        bp__tcache_totals(&ts->tcache, &entries, &bytes, &hits);
        full.cached_entries += entries;
        full.cached_bytes += bytes;
        full.cache_hits += hits;
        full.cache_misses += atomic_load_explicit(&ts->tcache.misses, memory_order_relaxed);
        full.cache_trims += atomic_load_explicit(&ts->tcache.trims, memory_order_relaxed);
    }
    pthread_mutex_unlock(&mutable_a->lock);
    /* Each ledger counts its bins' entries too (see bp__tcache.ledger). Read while threads
     * run: a moment's disagreement must not wrap below zero. */
    int64_t outstanding = (int64_t)(active - full.cached_entries);
    full.active_buffers = outstanding > 0 ? (uint64_t)outstanding : 0;
    full.active_views = (int64_t)views > 0 ? views : 0; /* (a view may end on another thread) */
    /* Cache counters are read without stopping their threads: never let the difference
     * go below zero while a region moves between a cache and a buffer. */
    size_t held = full.cached_bytes + full.arena_cached_bytes;
    full.active_bytes = full.active_bytes > held ? full.active_bytes - held : 0;
    copy_out(out, out_size, &full, sizeof full);
    return 0;
}
