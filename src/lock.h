/* SPDX-License-Identifier: MIT */
/*
 * The arena lock: a futex mutex (Drepper's "Futexes Are Tricky", mutex 3) whose uncontended
 * acquire and release are one atomic instruction each, inline. pthread_mutex_lock/unlock
 * cost the same two atomics plus two calls and their bookkeeping;
 * an uncached 64 KiB buffer takes the arena lock twice (allocation and release).
 *
 * state: 0 free, 1 held, 2 held and a thread may be asleep on it (the releaser then wakes
 * one). A waiter spins a little first: the arena's critical sections are short.
 *
 * Not recursive, no owner checks: a thread never takes an arena lock it holds. Elsewhere
 * than Linux it is a pthread mutex.
 */
#ifndef BP__LOCK_H
#define BP__LOCK_H

#include "common.h"

#if defined(__linux__)

#include <stdatomic.h>
#include <stdint.h>

typedef struct bp__lock {
    _Atomic uint32_t state;
} bp__lock;

static inline int bp__lock_init(bp__lock *l)
{
    atomic_init(&l->state, 0);
    return 0;
}

static inline void bp__lock_destroy(bp__lock *l) { (void)l; }

/* The contended halves (lock.c). */
void bp__lock_wait(bp__lock *l);
void bp__lock_wake(bp__lock *l);

BP__INLINE void bp__lock_acquire(bp__lock *l)
{
    uint32_t expected = 0;
    if (BP__LIKELY(atomic_compare_exchange_strong_explicit(&l->state, &expected, 1, memory_order_acquire,
                                                          memory_order_relaxed)))
        return;
    bp__lock_wait(l);
}

BP__INLINE void bp__lock_release(bp__lock *l)
{
    if (BP__UNLIKELY(atomic_exchange_explicit(&l->state, 0, memory_order_release) == 2)) bp__lock_wake(l);
}

#else

#include <pthread.h>

typedef struct bp__lock {
    pthread_mutex_t mutex;
} bp__lock;

static inline int bp__lock_init(bp__lock *l) { return pthread_mutex_init(&l->mutex, NULL) == 0 ? 0 : -1; }
static inline void bp__lock_destroy(bp__lock *l) { pthread_mutex_destroy(&l->mutex); }
static inline void bp__lock_acquire(bp__lock *l) { pthread_mutex_lock(&l->mutex); }
static inline void bp__lock_release(bp__lock *l) { pthread_mutex_unlock(&l->mutex); }

#endif

/* A lock its one owner takes around multi-step changes, nestable (depth counts the owner's
 * nesting), that another party (the fork handlers) takes to wait for such a change to end.
 * Uncontended for its owner. */
typedef struct bp__guard {
    bp__lock lock;
    unsigned depth;
} bp__guard;

static inline void bp__guard_enter(bp__guard *g)
{
    if (g->depth++ == 0) bp__lock_acquire(&g->lock);
}

static inline void bp__guard_leave(bp__guard *g)
{
    if (--g->depth == 0) bp__lock_release(&g->lock);
}

#endif
