/* SPDX-License-Identifier: MIT */
/*
 * Thread states (state.h): found through a one-entry thread-local cache (allocator id ->
 * state), then through the allocator's pthread key, whose destructor ends the state when
 * its thread exits (everything it holds goes back; the state stays listed for another
 * thread to adopt). And the paths that serve a thread's allocations when its cache cannot:
 * misses, uncached sizes, regions for growth, the scheduled trim.
 *
 * Ids are never reused, so a cache entry for a destroyed allocator can never match a new
 * one.
 */
#ifndef BP__THREAD_H
#define BP__THREAD_H

#include "allocator.h"
#include "common.h"
#include "recycler.h"
#include "remote.h"
#include "state.h"
#include "tcache.h"

/* Finds or creates this thread's state for `a`; NULL when out of memory. */
bp__thread_state *bp__thread_state_slow(bp_allocator *a);

/* This thread's state for `a`, created on first use; NULL when out of memory. */
static inline bp__thread_state *bp__thread_state_get(bp_allocator *a)
{
    if (BP__LIKELY(bp__tls_last.allocator_id == a->head.id)) return bp__tls_last_state();
    return bp__thread_state_slow(a);
}

#if BP__TESTING
/* Test hook: while `fail` is set, making a thread state fails as malloc would when out of
 * memory. */
void bp__inject_thread_state_failure(bool fail);
#endif

/* A buffer released on a thread that has no state for its allocator (it could not be made):
 * counted off the allocator's ledger of exited threads, so that active_buffers stays exact. */
void bp__count_stateless_release(bp_allocator *a);

/* Ends ts as its thread's exit does (the pthread key's destructor; the fork handlers for
 * the threads a child does not have): everything it holds goes back, its counters into the
 * allocator's, and it stays listed, unowned. */
void bp__thread_state_end(bp__thread_state *ts);

/* In a child made by fork, the states of the threads that did not come along are marked
 * vanished by the fork handler (which must not allocate or free) and ended here, as at their
 * threads' exit, by the child's first call that reaches a slow path: a new thread state, a
 * scheduled trim, statistics, purge, trim or flush. */
void bp__thread_states_reap_slow(bp_allocator *a);

static inline void bp__thread_states_reap(bp_allocator *a)
{
    if (BP__UNLIKELY(atomic_load_explicit(&a->vanished_states, memory_order_relaxed))) bp__thread_states_reap_slow(a);
}

/* The allocator is being destroyed: frees every state (their regions go with the arenas,
 * their objects with the slabs). */
void bp__thread_states_free(bp_allocator *a);

/* An object from ts's recycler; when it ran dry, what other threads released for ts comes
 * home first. NULL when out of memory. */
bp_buf *bp__thread_object_refill(bp__thread_state *ts);

BP__INLINE bp_buf *bp__thread_object_get(bp__thread_state *ts)
{
    bp_buf *b = bp__object_pop(&ts->recycler);
    return BP__LIKELY(b != NULL) ? b : bp__thread_object_refill(ts);
}

/* The thread's allocation clock says the scheduled trim is due: what it holds for other
 * owners goes (the clock bounds how long a partial batch waits when its allocations do not
 * miss the cache), then bp__tcache_scheduled_trim. */
void bp__thread_maintain(bp__thread_state *ts);

/* A cache miss, an uncached size or an unpooled allocator: a released object with a fresh
 * region of at least `size` bytes attached (prepared), or NULL with *rc = BP_ENOMEM. `cls` is
 * size's class (bp__size_class_of) for a pooled thread state, ignored otherwise. */
bp_buf *bp__buf_alloc_miss(bp_allocator *a, bp__thread_state *ts, size_t size, unsigned cls, int *rc);

/* A released object with a region of at least `size` bytes attached: from the thread cache
 * (one pop) when it has one, otherwise from bp__buf_alloc_miss. Ticks the thread's
 * allocation clock first: for a buffer when `sample` is not NULL (set to whether leak
 * detection tracks this one), else for a region growth takes. */
BP__INLINE bp_buf *bp__buf_with_region(bp_allocator *a, bp__thread_state *ts, size_t size, int *rc, bool *sample)
{
    unsigned due = bp__tcache_tick(&ts->tcache, sample != NULL);
    if (BP__UNLIKELY(due & BP__TICK_TRIM)) bp__thread_maintain(ts);
    if (sample != NULL) *sample = (due & BP__TICK_SAMPLE) != 0;
    unsigned cls = 0;
    if (BP__LIKELY(ts->arena != NULL)) {
        cls = bp__allocator_class_of(a, size); /* once, for the miss too */
        bp_buf *b = bp__tcache_take(&ts->tcache, cls);
        if (BP__LIKELY(b != NULL)) return b;
    }
    return bp__buf_alloc_miss(a, ts, size, cls, rc);
}

/* For growth, which needs memory without another object: a region through the cache first
 * (0 or BP_ENOMEM), and an old region back into it. */
int bp__region_take(bp_allocator *a, bp__thread_state *ts, size_t size, bp__region *out);
void bp__region_give(bp_allocator *a, bp__thread_state *ts, const bp__region *region);

#endif
