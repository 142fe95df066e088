/* SPDX-License-Identifier: MIT */
/*
 * Thread states: the thread-local cache, binding, adoption, exit; and the slow paths of a
 * thread's allocations.
 */
#include "thread.h"

#include "purger.h"

#include <stdlib.h>
#include <string.h>

/* What bp__tls_last points at when no state is cached: no tag base, no cacheable class,
 * so the release fast path fails its checks without testing for NULL. Never written. */
bp__thread_state bp__no_thread_state;

/* The one-entry cache (bytepool.h). initial-exec keeps the access a single %fs-relative
 * load, also inside the shared library. Every allocation and release loads it, often right
 * after the program wrote a buffer's bytes, so it sits in the middle of a cache line of its
 * own (see bp__tls_cache): a CPU treats a load as dependent on an earlier store when their
 * addresses match in the low 12 bits (4 KiB aliasing), and the bytes programs write most -
 * a buffer's first and last, at line edges for every power-of-two size - then never match
 * it. */
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

/* Folds ts's counters into the allocator's and starts them from zero (under a->lock). */
static void fold_counters_locked(bp_allocator *a, bp__thread_state *ts)
{
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
}

void bp__thread_state_end(bp__thread_state *ts)
{
    bp_allocator *a = ts->allocator;
    bp__state_enter(ts); /* to the end: a fork finds the state before this or after */
    bp__counter_add(&ts->remote_drained, bp__remote_close(ts));
    if (ts->arena != NULL) {
        bp__tcache_flush(&ts->tcache);
        /* The binding goes now (the state stays this thread's until in_use is cleared).
         * The last thread of an arena frees its caches: nobody is left to take from them.
         * A thread binding meanwhile just starts with emptier ones. */
        if (atomic_fetch_sub_explicit(&ts->arena->threads, 1, memory_order_acq_rel) == 1) {
            bp__tcache_trim_arena(ts->arena, &a->objects, &ts->recycler, true);
            bp__arena_run_cache_flush(ts->arena);
        }
    }
    bp__recycler_give_all(&ts->recycler);
    pthread_mutex_lock(&a->lock);
    fold_counters_locked(a, ts);
    ts->in_use = false;
    ts->arena = NULL;
    /* Unnested by hand before the state can be adopted (in_use false, under the lock): the
     * next owner's bp__state_enter then counts from 0 and waits for the release below. */
    ts->guard.depth = 0;
    pthread_mutex_unlock(&a->lock);
    bp__lock_release(&ts->guard.lock);
    if (bp__tls_last.cache == &ts->tcache.head) tls_cache_clear();
}

/* What a thread's allocation clock counts leak samples with: 0 when nothing is tracked. */
static uint32_t leak_sample_interval(const bp_allocator *a)
{
    return a->leak.level == BP_LEAK_DISABLED ? 0 : a->leak.interval;
}

static atomic_bool thread_state_failure; /* test builds' hook, see thread.h */

#if BP__TESTING
void bp__inject_thread_state_failure(bool fail) { atomic_store(&thread_state_failure, fail); }
#endif

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
    bp__recycler_init(&ts->recycler, &a->objects, a->config.recycler_capacity);
    atomic_init(&ts->remote_head, BP__REMOTE_CLOSED);
    if (bp__lock_init(&ts->guard.lock) != 0) {
        free(ts);
        return NULL;
    }
    pthread_mutex_lock(&bp__registry_lock);
    pthread_mutex_lock(&a->lock);
    ts->in_use = true;
    ts->next = a->threads;
    if (a->threads != NULL) a->threads->prev = ts;
    a->threads = ts;
    pthread_mutex_unlock(&a->lock);
    pthread_mutex_unlock(&bp__registry_lock);
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

BP__NOINLINE void bp__thread_states_reap_slow(bp_allocator *a)
{
    pthread_mutex_lock(&bp__registry_lock);
    if (atomic_exchange_explicit(&a->vanished_states, false, memory_order_relaxed)) {
        for (bp__thread_state *ts = a->threads; ts != NULL; ts = ts->next) {
            if (!ts->vanished) continue;
            ts->vanished = false;
            bp__thread_state_end(ts);
        }
    }
    pthread_mutex_unlock(&bp__registry_lock);
}

BP__NOINLINE bp__thread_state *bp__thread_state_slow(bp_allocator *a)
{
    bp__thread_states_reap(a);
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
            bp__tcache_thread thread = {a, ts, &ts->recycler, &ts->guard};
            bp__tcache_init(&ts->tcache, &thread, ts->arena, &a->sc, &a->config, leak_sample_interval(a));
            pthread_mutex_unlock(&a->lock);
        } else {
            bp__tcache_clock_init(&ts->tcache, 0, leak_sample_interval(a));
        }
        bp__remote_open(ts);
    }
    tls_cache_set(a->head.id, ts);
    return ts;
}

void bp__thread_states_free(bp_allocator *a)
{
    for (bp__thread_state *ts = a->threads; ts != NULL;) {
        bp__thread_state *next = ts->next;
        if (ts->arena != NULL) {
            atomic_fetch_sub_explicit(&ts->arena->threads, 1, memory_order_relaxed);
            bp__tcache_discard(&ts->tcache); /* the arenas go, regions and all */
        }
        bp__remote_discard(ts);
        bp__lock_destroy(&ts->guard.lock);
        free(ts);
        ts = next;
    }
    a->threads = NULL;
    /* Other threads may still cache a state freed here (bp__tls_last): never read again,
     * as tls_cache_set says. */
    if (bp__tls_last.allocator_id == a->head.id) tls_cache_clear();
}

BP__NOINLINE bp_buf *bp__thread_object_refill(bp__thread_state *ts)
{
    /* Objects released by other threads come home first. */
    bp__remote_flush(ts);
    bp_buf *b = bp__remote_drain(ts) > 0 ? bp__object_pop(&ts->recycler) : NULL;
    return b != NULL ? b : bp__recycler_refill(&ts->recycler);
}

BP__NOINLINE void bp__thread_maintain(bp__thread_state *ts)
{
    /* Not running when it could not be started: this is its next chance. */
    if (ts->allocator->config.background_purge) bp__purger_ensure();
    bp__thread_states_reap(ts->allocator);
    bp__state_enter(ts);
    bp__remote_flush(ts);
    bp__tcache_scheduled_trim(&ts->tcache);
    bp__state_leave(ts);
}

bp_buf *bp__buf_alloc_miss(bp_allocator *a, bp__thread_state *ts, size_t size, unsigned cls, int *rc)
{
    bp_buf *b;
    if (ts->arena != NULL) {
        /* A normal class no thread cache keeps: what consumers released for us goes back to
         * the chunks before the arena is asked. Taken back only when the recycler ran dry,
         * it would wait while the arena cuts fresh runs beside it. */
        if (cls >= ts->arena->whole_from && cls < a->sc.nclasses) bp__remote_drain(ts);
        else if (cls < ts->tcache.head.ncacheable) {
            /* A miss of a cached class (at most one per half a bin): what this thread holds
             * for other owners goes now. Not on every allocation of an uncached size, which
             * would push batches of a buffer or two and make every hand-off dear; such a
             * thread's partial batch goes at its scheduled trim (bp__thread_maintain), or
             * when full. */
            bp__remote_flush(ts);
            bp__tcache_count(&ts->tcache.misses);
            /* What consumers released for us comes back before the arena is asked. */
            if (bp__remote_drain(ts) > 0 && (b = bp__tcache_take(&ts->tcache, cls)) != NULL) return b;
            if ((b = bp__tcache_refill(&ts->tcache, cls)) != NULL) return b;
        }
    }
    b = bp__thread_object_get(ts);
    *rc = b != NULL ? bp__region_alloc(a, ts->arena, size, &b->region) : BP_ENOMEM;
    if (*rc != 0) {
        if (b != NULL) bp__object_put(&a->objects, &ts->recycler, b);
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
    bp__object_retire(&a->objects, &ts->recycler, b, false);
    return 0;
}

void bp__region_give(bp_allocator *a, bp__thread_state *ts, const bp__region *region)
{
    if (ts != NULL && bp__region_is_home(region, ts) && region->class_index < ts->tcache.head.ncacheable) {
        bp_buf *b = bp__thread_object_get(ts);
        if (b != NULL) {
            b->region = *region;
            bp__buf_object_prepare(b, a, ts);
            if (bp__buf_cache_at_home(ts, b)) return;
            bp__object_retire(&a->objects, &ts->recycler, b, false);
        }
    }
    bp__region_free(a, region);
}
