/* SPDX-License-Identifier: MIT */
/*
 * Allocator lifetime: creation, destruction, the default allocator, versions, the calls
 * that act on a whole allocator or this thread's cache of it, and the fork handlers that
 * keep every allocator usable in a child process.
 */
#include "allocator.h"
#include "buf.h"
#include "os.h"
#include "purger.h"
#include "remote.h"
#include "thread.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_uint_fast64_t next_allocator_id = 1;

/* The pthread key's destructor: the thread is exiting. */
static void thread_exit(void *arg) { bp__thread_state_end(arg); }

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
    pthread_mutex_lock(&bp__registry_lock);
    pthread_mutex_lock(&tracked_lock);
    for (bp_allocator *a = bp__live_allocators; a != NULL; a = a->next_live)
        for (bp__thread_state *ts = a->threads; ts != NULL; ts = ts->next) bp__lock_acquire(&ts->guard.lock);
    for (bp_allocator *a = bp__live_allocators; a != NULL; a = a->next_live) {
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
    for (bp_allocator *a = bp__live_allocators; a != NULL; a = a->next_live) {
        for (unsigned i = 0; a->pooled && i < a->config.arenas; i++) {
            if (child) bp__lock_init(&a->arenas[i].lock);
            else bp__lock_release(&a->arenas[i].lock);
        }
        bp__leak_tracker_atfork(&a->leak, when);
        pthread_mutex_unlock(&a->lock);
        for (bp__thread_state *ts = a->threads; ts != NULL; ts = ts->next) {
            if (!child) {
                bp__lock_release(&ts->guard.lock);
                continue;
            }
            bp__lock_init(&ts->guard.lock);
            ts->guard.depth = 0; /* a vanished owner may have been waiting for it */
        }
    }
    pthread_mutex_unlock(&tracked_lock);
    pthread_mutex_unlock(&bp__registry_lock);
}

static void fork_parent(void) { fork_unlock(BP__FORK_PARENT); }

/* In the child: the states in use by threads other than this one are marked vanished, to be
 * released as at their exit by the child's next call that can afford it
 * (bp__thread_states_reap): a fork handler must not allocate or free. Their caches are whole
 * (no thread was inside a multi-step change); only an inline release may have been caught
 * between pushing a buffer into a bin and storing its count 0: every cached buffer gets
 * count 0, as the cache's invariants have it. */
static void mark_vanished_states(bp_allocator *a)
{
    bp__thread_state *mine = pthread_getspecific(a->thread_key);
    bool any = false;
    for (bp__thread_state *ts = a->threads; ts != NULL; ts = ts->next) {
        if (!ts->in_use || ts == mine) continue;
        for (unsigned c = 0; ts->arena != NULL && c < ts->tcache.head.ncacheable; c++) {
            bp__tcache_bin *bin = &ts->tcache.head.bins[c];
            for (uint32_t i = 0; i < bp__bin_count(bin); i++) BP__REFCNT_STORE(bin->entries[i], 0, __ATOMIC_RELAXED);
            if (bp__bin_hot(bin) != NULL) BP__REFCNT_STORE(bp__bin_hot(bin), 0, __ATOMIC_RELAXED);
        }
        ts->vanished = true;
        any = true;
    }
    atomic_store_explicit(&a->vanished_states, any, memory_order_relaxed);
}

static void fork_child(void)
{
    fork_unlock(BP__FORK_CHILD);
    bp__purger_atfork_child();
    pthread_mutex_lock(&bp__registry_lock);
    for (bp_allocator *a = bp__live_allocators; a != NULL; a = a->next_live) mark_vanished_states(a);
    pthread_mutex_unlock(&bp__registry_lock);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static bool atfork_installed;

static void install_fork_handlers(void)
{
    atfork_installed = pthread_atfork(fork_prepare, fork_parent, fork_child) == 0;
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
    bp__object_pool_init(&a->objects, &a->lock);
    bp__leak_init(&a->leak, cfg->leak_detection, cfg->leak_sampling_interval);
    if (pthread_key_create(&a->thread_key, thread_exit) != 0) goto fail_mutex;
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
                               cfg->dirty_max_percent, cfg->run_cache_size) != 0) break;
            bp__tcache_configure_arena(&a->arenas[i], &a->sc, cfg);
        }
        if (i < cfg->arenas) {
            while (i > 0) bp__arena_destroy(&a->arenas[--i]);
            free(a->arenas);
            goto fail_key;
        }
    }
    if (cfg->leak_detection != BP_LEAK_DISABLED) track_allocator(a);
    bp__registry_add(a);
    /* Without the thread the allocator still works: its allocations drive the purges, and
     * the next scheduled trim tries again. */
    if (pooled && cfg->background_purge && bp__purger_ensure()) bp__purger_wake();
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

/* What a buffer still alive when its allocator is destroyed owns outside the slabs and
 * arenas, reachable only through its object: a composite's component table (its
 * components' memory goes with the arenas and slabs), an unpooled buffer's malloc'ed
 * memory (not a view's or a wrapped buffer's). */
static void free_owned_at_destroy(bp_buf *b)
{
    uint32_t count = BP__REFCNT_LOAD(b, __ATOMIC_RELAXED);
    if (b->composite != NULL) bp__composite_free_table(b);
    else if (!(count & BP__REFCNT_INDIRECT) && b->region.kind == BP__KIND_MALLOC) free(b->region.memory);
}

void bp_allocator_destroy(bp_allocator *a)
{
    if (a == NULL || a->is_default) return;
    bp__registry_remove(a); /* out of the fork handlers' reach before anything goes */
    if (a->config.leak_detection != BP_LEAK_DISABLED) untrack_allocator(a);
    bp__leak_report(&a->leak); /* what is still tracked now is a leak */
    bp__leak_destroy(&a->leak);
    /* Deleting the key first means no exit destructor will run for this allocator. */
    pthread_key_delete(a->thread_key);
    bp__thread_states_free(a);
    bp__object_pool_destroy(&a->objects, free_owned_at_destroy);
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
    bp__thread_states_reap(a);
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
    bp__thread_states_reap(a);
    /* First the buffers released on other threads that wait for their owners to take them
     * back (an owner that idles would keep them): their regions may empty chunks too. */
    pthread_mutex_lock(&bp__registry_lock);
    for (bp__thread_state *ts = a->threads; a->pooled && ts != NULL; ts = ts->next) bp__remote_reclaim(ts, BP__REMOTE_ANY);
    pthread_mutex_unlock(&bp__registry_lock);
    size_t purged = 0;
    for (unsigned i = 0; a->pooled && i < a->config.arenas; i++) {
        bp__tcache_trim_arena(&a->arenas[i], &a->objects, NULL, true); /* first: it may empty chunks */
        purged += bp__arena_purge(&a->arenas[i], true);
    }
    pthread_mutex_lock(&bp__registry_lock); /* see bp__object_pool_give_back */
    bp__object_pool_give_back(&a->objects); /* last: the trims above free objects too */
    pthread_mutex_unlock(&bp__registry_lock);
    return (int)purged;
}

int bp_thread_cache_flush(bp_allocator *a)
{
    if (a == NULL) return bp__misuse(BP_EINVAL, __func__, "allocator is NULL");
    bp__thread_states_reap(a);
    bp__thread_state *ts = bp__thread_state_get(a);
    if (ts == NULL) return BP_ENOMEM;
    bp__remote_flush(ts);
    size_t before = 0;
    bp__state_enter(ts); /* the fork handlers wait for the whole hand-over */
    if (ts->arena != NULL) {
        bp__remote_drain(ts);
        size_t bytes;
        uint64_t hits;
        bp__tcache_totals(&ts->tcache, &before, &bytes, &hits);
        bp__tcache_flush(&ts->tcache);
    }
    /* Last: the flush above handed the bins' objects to the recycler. Unpooled allocators
     * have a recycler too. */
    bp__recycler_give_all(&ts->recycler);
    bp__state_leave(ts);
    return (int)before;
}
