/* SPDX-License-Identifier: MIT */
/*
 * The background purge thread.
 */
#include "purger.h"

#include "recycler.h"
#include "remote.h"
#include "tcache.h"

#include <errno.h>
#include <signal.h>
#include <time.h>

static pthread_mutex_t purger_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t purger_wake;     /* on CLOCK_MONOTONIC; signalled for a new allocator */
static bool wake_requested;            /* under purger_lock */
static atomic_bool running;            /* a thread runs in this process */
static atomic_bool forked;             /* this process is a child made by fork */
static _Atomic uint64_t passes;

uint64_t bp__purger_passes(void) { return atomic_load_explicit(&passes, memory_order_relaxed); }

/* The pause before the next pass: a quarter of the shortest decay time of the allocators
 * that want the purge (10 ms .. 1 s); 0 when none does. Under bp__registry_lock. */
static unsigned interval_locked(void)
{
    unsigned shortest = 0;
    for (bp_allocator *a = bp__live_allocators; a != NULL; a = a->next_live) {
        if (!a->pooled || !a->config.background_purge) continue;
        unsigned d = a->config.chunk_decay_ms;
        if (a->config.dirty_decay_ms != BP_DECAY_NEVER && a->config.dirty_decay_ms < d) d = a->config.dirty_decay_ms;
        d /= 4;
        if (d < 10) d = 10;
        if (d > 1000) d = 1000;
        if (shortest == 0 || d < shortest) shortest = d;
    }
    return shortest;
}

/* One allocator's idle arenas, purged as their threads' scheduled trims would. */
static void purge_allocator(bp_allocator *a)
{
    /* Buffers other threads released for an owner that has taken none back since the last
     * pass (its stack is as it was then, and nothing was pushed onto it since): the owner
     * idles, and would keep them until its next cache miss. */
    for (bp__thread_state *ts = a->threads; ts != NULL; ts = ts->next) {
        bp__remote_batch *seen = ts->remote_seen;
        ts->remote_seen = atomic_load_explicit(&ts->remote_head, memory_order_relaxed);
        if (seen != NULL && seen == ts->remote_seen && bp__remote_reclaim(ts, seen) > 0) ts->remote_seen = NULL;
    }
    unsigned idle = 0;
    for (unsigned i = 0; i < a->config.arenas; i++) {
        bp__arena *arena = &a->arenas[i];
        uint64_t idle_ms;
        if (!bp__arena_idle(arena, &idle_ms)) continue;
        idle++;
        bp__tcache_trim_arena(arena, &a->objects, NULL, false);
        bp__arena_purge_idle(arena, idle_ms);
    }
    /* The whole allocator idles: the objects its trims and releases left free too. */
    if (idle == a->config.arenas) bp__object_pool_give_back(&a->objects);
}

static void *purger_main(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&bp__registry_lock);
        for (bp_allocator *a = bp__live_allocators; a != NULL; a = a->next_live)
            if (a->pooled && a->config.background_purge) purge_allocator(a);
        unsigned ms = interval_locked();
        pthread_mutex_unlock(&bp__registry_lock);
        atomic_fetch_add_explicit(&passes, 1, memory_order_relaxed);
        if (ms == 0) ms = 1000; /* nobody wants it now: look again later */
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += ms / 1000;
        until.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&purger_lock);
        while (!wake_requested && pthread_cond_timedwait(&purger_wake, &purger_lock, &until) != ETIMEDOUT) {}
        wake_requested = false;
        pthread_mutex_unlock(&purger_lock);
    }
    return NULL;
}

/* The condition variable waits on the monotonic clock: a change of the wall clock neither
 * stalls nor hurries the purge. */
static void init_wake(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&purger_wake, &attr);
    pthread_condattr_destroy(&attr);
}

void bp__purger_wake(void)
{
    if (!atomic_load_explicit(&running, memory_order_relaxed)) return;
    pthread_mutex_lock(&purger_lock);
    wake_requested = true;
    pthread_cond_signal(&purger_wake);
    pthread_mutex_unlock(&purger_lock);
}

bool bp__purger_ensure(void)
{
    if (BP__LIKELY(atomic_load_explicit(&running, memory_order_relaxed))) return true;
    if (atomic_load_explicit(&forked, memory_order_relaxed)) return false;
    static pthread_once_t wake_once = PTHREAD_ONCE_INIT;
    pthread_once(&wake_once, init_wake);
    pthread_mutex_lock(&purger_lock);
    bool ok = atomic_load_explicit(&running, memory_order_relaxed);
    if (!ok) {
        pthread_attr_t attr;
        pthread_t thread;
        ok = pthread_attr_init(&attr) == 0;
        if (ok) {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            /* No signal of the program's should land here. */
            sigset_t all, old;
            sigfillset(&all);
            pthread_sigmask(SIG_SETMASK, &all, &old);
            ok = pthread_create(&thread, &attr, purger_main, NULL) == 0;
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            pthread_attr_destroy(&attr);
        }
        if (ok) atomic_store_explicit(&running, true, memory_order_relaxed);
    }
    pthread_mutex_unlock(&purger_lock);
    return ok;
}

void bp__purger_atfork_child(void)
{
    pthread_mutex_init(&purger_lock, NULL);
    atomic_store_explicit(&running, false, memory_order_relaxed);
    atomic_store_explicit(&forked, true, memory_order_relaxed);
}
