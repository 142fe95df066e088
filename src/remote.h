/* SPDX-License-Identifier: MIT */
/*
 * Remote release: a buffer released on a thread other than the one that allocated it goes
 * back to its owner in a batch (snmalloc's message passing), so that regions return to the
 * cache of the thread that allocates them and objects to its recycler. The releasing thread
 * collects batches per owner (the slots of its state) and pushes a full one onto the
 * owner's remote stack with one CAS; the owner takes its whole stack with one exchange when
 * its cache or its recycler runs dry. When the owner has exited, the releaser gives the
 * buffers back itself.
 */
#ifndef BP__REMOTE_H
#define BP__REMOTE_H

#include "allocator.h"
#include "common.h"
#include "state.h"

/* Pushes the slot's pending batch onto its owner's remote stack; if the owner has closed it
 * (its thread exited), gives the buffers back here. */
void bp__remote_flush_slot(bp__thread_state *ts, struct bp__remote_slot *slot);

/* Pushes every pending batch of this thread (bp__remote_flush_slot). */
void bp__remote_flush(bp__thread_state *ts);

/* A remote release with no batch in its slot to add to: makes one, or when that fails gives
 * the buffer back here as if its owner had exited. */
void bp__remote_release_slow(bp__thread_state *ts, struct bp__remote_slot *slot, bp_buf *b);

#if BP__TESTING
/* Test hook: while `fail` is set, making a remote batch fails as malloc would when out of
 * memory. */
void bp__remote_inject_batch_failure(bool fail);
#endif

/* Buffers released for `owner` on other threads and waiting on its stack, given back here
 * by a thread that is not the owner and puts them in no cache (the background purge,
 * bp_allocator_purge): regions to their arenas, objects to the allocator's spare list.
 * Takes the stack only while it is `expect` (BP__REMOTE_ANY: any list); a closed or empty
 * stack, or one that changed, is left as it is. Returns the number of buffers. The caller
 * holds bp__registry_lock, so that no fork comes between the take and the frees. */
#define BP__REMOTE_ANY ((bp__remote_batch *)(uintptr_t)2)
size_t bp__remote_reclaim(bp__thread_state *owner, bp__remote_batch *expect);

/* Queues a buffer released on `ts` for its owner (another thread state). */
BP__INLINE void bp__remote_release(bp__thread_state *ts, bp__thread_state *owner, bp_buf *b)
{
    struct bp__remote_slot *slot = &ts->remote_slots[bp__remote_slot_of(owner)];
    if (BP__UNLIKELY(slot->owner != owner)) { /* another owner had the slot: its batch goes */
        bp__remote_flush_slot(ts, slot);
        slot->owner = owner;
    }
    bp__remote_batch *batch = slot->batch;
    if (BP__UNLIKELY(batch == NULL)) {
        bp__remote_release_slow(ts, slot, b);
        return;
    }
    unsigned n = batch->count;
    batch->bufs[n] = b;
    /* The entry before the count that names it: this path takes no guard, so a fork may
     * catch the thread between the two stores, and the child then ends this state's batch
     * (bp__thread_states_reap). It must find the buffer missing (its memory unused in the
     * child), never a count naming an entry not yet written. */
    atomic_signal_fence(memory_order_release);
    batch->count = n + 1;
    uint64_t bytes = bp__counter_add(&slot->bytes, b->region.length);
    if (BP__UNLIKELY(n + 1 == BP__REMOTE_BATCH || bytes >= BP__REMOTE_BATCH_BYTES))
        bp__remote_flush_slot(ts, slot);
}

/* Takes every buffer other threads pushed to this thread: regions into the cache (or back
 * to their arenas), objects into the recycler. Returns how many. */
size_t bp__remote_drain(bp__thread_state *ts);

/* Opens ts's remote stack (a thread now owns it). */
void bp__remote_open(bp__thread_state *ts);

/* Its thread is leaving: pushes what ts holds for others, closes its stack (releasers give
 * back for themselves from now on) and gives back what was on it, past the cache. Returns
 * how many buffers were on it. */
size_t bp__remote_close(bp__thread_state *ts);

/* The allocator is being destroyed: frees ts's batches (the buffers they list die with the
 * slabs). */
void bp__remote_discard(bp__thread_state *ts);

#endif
