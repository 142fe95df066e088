/* SPDX-License-Identifier: MIT */
/*
 * One thread's state for one allocator: its arena binding, its recycler of bp_buf objects,
 * its cache, and its ends of the remote release hand-off (remote.h). Only the layout and the
 * few inline helpers every layer above uses; thread.c makes, finds and ends states.
 *
 * Invariants
 * - Only the owning thread changes a state's cache, recycler, slots and counters; other
 *   threads push onto remote_head and read counters (relaxed), and purges that take the
 *   remote stack (under bp__registry_lock, one at a time) add to remote_reclaimed_bytes.
 *   The fork handlers take `guard` to wait for the owner's multi-step changes
 *   (bp__state_enter) to end.
 * - in_use, prev and next are guarded by the allocator's lock: a state stays listed until
 *   the allocator is destroyed, and a thread that exits leaves it unowned for another to
 *   adopt (other threads may still hold it as the owner of buffers).
 * - Counters have a single writer and are updated with a load and a store, never a
 *   read-modify-write (bp__counter_add).
 */
#ifndef BP__STATE_H
#define BP__STATE_H

#include "arena.h"
#include "common.h"
#include "lock.h"
#include "object.h"
#include "recycler.h"
#include "tcache.h"

#include <stdatomic.h>

#ifndef BP__REMOTE_BATCH
#define BP__REMOTE_BATCH 64 /* buffers per remote push; 1 = a CAS per buffer */
#endif
#ifndef BP__REMOTE_BATCH_BYTES
/* A batch holding this many bytes goes too, whatever its count: what a releasing thread
 * that then idles keeps for an owner, out of reach of purges, is bounded in bytes (64
 * buffers of 64 KiB were 4 MiB) while buffers up to 16 KiB still go 64 to a push. Pushes
 * of 16 buffers of 64 KiB cost about 3 ns more per buffer on each side than pushes of 64
 * (AMD EPYC family 26); of 4, 10 ns. */
#define BP__REMOTE_BATCH_BYTES (1024 * 1024)
#endif

#define BP__REMOTE_SLOT_BITS 3 /* 8 slots: owners a thread collects remote releases for at once */
#define BP__REMOTE_SLOTS (1u << BP__REMOTE_SLOT_BITS)

/* Buffers released on one thread for another owner, as an array: the owner's take-back
 * reads the pointers in sequence (and can prefetch the objects) instead of chasing a list
 * linked through objects that another core wrote last. malloc'ed by the releasing thread,
 * freed by the owner. */
typedef struct bp__remote_batch {
    struct bp__remote_batch *next; /* in the owner's remote stack */
    unsigned count;
    size_t bytes;                  /* of the regions listed, set as it is pushed (counted in
                                      remote_pushed_bytes until they are back) */
    bp_buf *bufs[BP__REMOTE_BATCH];
} bp__remote_batch;

/* remote_head of a state no thread owns: releasers free for themselves. */
#define BP__REMOTE_CLOSED ((bp__remote_batch *)(uintptr_t)1)

typedef struct bp__thread_state {
    bp_allocator *allocator;
    bp__arena *arena;            /* bound on first use; NULL for unpooled or while unused */
    bool in_use;                 /* a live thread owns it */
    bool vanished;               /* in a child made by fork: its thread is not there, and it
                                    waits for bp__thread_states_reap (bp__registry_lock) */
    struct bp__remote_batch *remote_seen; /* the background purge's: remote_head at its last
                                    pass (read and written under bp__registry_lock) */
    _Atomic uint64_t remote_releases; /* buffers this thread pushed to other owners */
    _Atomic uint64_t remote_drained;  /* buffers other threads pushed to this one */
    struct bp__thread_state *prev, *next; /* in the allocator's list */
    /* Released buffers of other owners, collected to be pushed a batch at a time (snmalloc's
     * batching): one CAS per batch instead of per buffer. One batch per slot, each slot for
     * the owners that hash to it (bp__remote_slot_of), so a thread releasing buffers of a
     * few owners in turn (a worker serving several event loops) fills a batch for each
     * instead of pushing one at every change of owner. */
    struct bp__remote_slot {
        struct bp__thread_state *owner;
        bp__remote_batch *batch; /* NULL until a release needs one */
        _Atomic uint64_t bytes;  /* of the regions in the batch (here, not in the batch, so
                                    that stats can read it while the batch goes) */
    } __attribute__((aligned(32))) remote_slots[BP__REMOTE_SLOTS]; /* a shift indexes them */
    /* Batches of buffers allocated here and released by other threads: a push-only stack
     * (Treiber) that other threads CAS onto and this thread takes whole with one exchange.
     * BP__REMOTE_CLOSED while no thread owns the state. On its own cache line: other
     * threads write it. */
    _Alignas(BP__CACHE_LINE) _Atomic(bp__remote_batch *) remote_head;
    /* The regions of remote batches, for stats (remote_pending_bytes): what is pushed and
     * not handed back yet is the sum over all states of pushed - returned - reclaimed. Each
     * total has one writer at a time (no locked instruction): `reclaimed` the purges that
     * take this state's stack (under bp__registry_lock), the others this state's thread. */
    _Atomic uint64_t remote_reclaimed_bytes;
    _Atomic uint64_t remote_pushed_bytes;   /* of the batches this thread pushed, ever */
    _Atomic uint64_t remote_returned_bytes; /* of the batches it handed back, ever: its own
                                               stack's, and ones whose owner had exited */
    _Alignas(BP__CACHE_LINE) bp__tcache tcache; /* pooled allocators only */
    /* Views made on this thread minus views ended on it (modulo 2^64), for stats. */
    _Atomic uint64_t view_ledger;
    bp__recycler recycler;
    bp__guard guard;             /* see the invariants */
} bp__thread_state;

/* Brackets a multi-step change of ts by its own thread (nestable): the fork handlers wait
 * for it to end before the process forks. An uncontended lock, taken on slow paths only. */
BP__INLINE void bp__state_enter(bp__thread_state *ts) { bp__guard_enter(&ts->guard); }

BP__INLINE void bp__state_leave(bp__thread_state *ts) { bp__guard_leave(&ts->guard); }

/* Adds to a counter that only this thread writes: a load and a store, no locked
 * instruction, and still a clean read for other threads (relaxed atomics). Returns the
 * new value. */
static inline uint64_t bp__counter_add(_Atomic uint64_t *counter, uint64_t n)
{
    uint64_t sum = atomic_load_explicit(counter, memory_order_relaxed) + n;
    atomic_store_explicit(counter, sum, memory_order_relaxed);
    return sum;
}

/* What bp__tls_last (bytepool.h) points at when no state is cached (see thread.c). */
extern bp__thread_state bp__no_thread_state; /* its cache is bp__tls_last's when none is cached */

/* The thread state whose cache bp__tls_last holds. */
BP__INLINE bp__thread_state *bp__tls_last_state(void)
{
    return (bp__thread_state *)(void *)((char *)bp__tls_last.cache - offsetof(bp__thread_state, tcache.head));
}

/* The slot for an owner's batch: its state's address hashed (Fibonacci hashing of the
 * line number), no load. */
BP__INLINE unsigned bp__remote_slot_of(const bp__thread_state *owner)
{
    uint32_t line = (uint32_t)((uintptr_t)owner / BP__CACHE_LINE);
    return (line * 2654435769u) >> (32 - BP__REMOTE_SLOT_BITS);
}

#endif
