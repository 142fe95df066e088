/* SPDX-License-Identifier: MIT */
/*
 * Remote release: batches, the owners' stacks, take-backs.
 */
#include "remote.h"

#include <stdlib.h>

/* Hands one released buffer back: region into this thread's cache or to its arena, object
 * into the recycler. */
static void take_back_one(bp__thread_state *ts, bp_buf *b, bool cache_regions)
{
    bp_allocator *a = ts->allocator;
    bool paranoid = a->config.leak_detection == BP_LEAK_PARANOID;
    /* Usually only the tag is read (see bp__buf_cache_at_home); owner and tag are written
     * for an exited owner's buffers. */
    if (cache_regions && !paranoid && bp__buf_cache_at_home(ts, b)) return;
    bp__buf_free(ts, a, b, paranoid);
}

/* Hands a stack of remote batches back (see take_back_one) and frees the batches, counting
 * their bytes as returned by ts. Returns the number of buffers. */
static size_t take_back(bp__thread_state *ts, bp__remote_batch *list, bool cache_regions)
{
    /* Both lines the next allocation of each buffer writes - the object's first and the
     * data's first - were last touched on the releasing core; fetched now, for writing, they
     * are this core's when the producer gets to them. Objects a few ahead, first line only
     * (the tag there is all a take-back reads); the data line once the object's line is
     * here. */
    enum { AHEAD = 4 };
    bool has_prefetchw = ts->allocator->has_prefetchw;
    size_t n = 0, bytes = 0;
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
        bytes += batch->bytes;
        free(batch);
    }
    bp__counter_add(&ts->remote_returned_bytes, bytes);
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
    /* Counted as pushed before the push, so that stats never see them handed back first. */
    batch->bytes = atomic_load_explicit(&slot->bytes, memory_order_relaxed);
    bp__counter_add(&ts->remote_pushed_bytes, batch->bytes);
    atomic_store_explicit(&slot->bytes, 0, memory_order_relaxed);
    bp__remote_batch *head = atomic_load_explicit(&owner->remote_head, memory_order_relaxed);
    do {
        if (head == BP__REMOTE_CLOSED) { /* the owner exited: give them back here */
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
static void free_slots(bp__thread_state *ts)
{
    for (unsigned i = 0; i < BP__REMOTE_SLOTS; i++) {
        free(ts->remote_slots[i].batch);
        ts->remote_slots[i].batch = NULL;
        ts->remote_slots[i].owner = NULL;
        atomic_store_explicit(&ts->remote_slots[i].bytes, 0, memory_order_relaxed);
    }
}

static atomic_bool batch_failure; /* test builds' hook, see remote.h */

#if BP__TESTING
void bp__remote_inject_batch_failure(bool fail) { atomic_store(&batch_failure, fail); }
#endif

BP__NOINLINE void bp__remote_release_slow(bp__thread_state *ts, struct bp__remote_slot *slot, bp_buf *b)
{
    bp__state_enter(ts);
    bool fail = BP__TESTING && atomic_load_explicit(&batch_failure, memory_order_relaxed);
    bp__remote_batch *batch = fail ? NULL : malloc(sizeof *batch);
    if (BP__UNLIKELY(batch == NULL)) {
        /* A release cannot fail: without a batch the region goes back from here, as it
         * does when the owner has exited. */
        take_back_one(ts, b, ts->arena != NULL);
    } else {
        batch->next = NULL;
        batch->count = 1;
        batch->bytes = 0;
        batch->bufs[0] = b;
        atomic_store_explicit(&slot->bytes, b->region.length, memory_order_relaxed);
        slot->batch = batch;
        if (BP__REMOTE_BATCH == 1 || b->region.length >= BP__REMOTE_BATCH_BYTES) bp__remote_flush_slot(ts, slot);
    }
    bp__state_leave(ts);
}

size_t bp__remote_reclaim(bp__thread_state *owner, bp__remote_batch *expect)
{
    bp__remote_batch *list = atomic_load_explicit(&owner->remote_head, memory_order_acquire);
    if (list == NULL || list == BP__REMOTE_CLOSED || (expect != BP__REMOTE_ANY && list != expect)) return 0;
    /* A list to NULL only: a closed stack (its owner gone) must stay closed. */
    if (!atomic_compare_exchange_strong_explicit(&owner->remote_head, &list, NULL, memory_order_acquire,
                                                 memory_order_relaxed))
        return 0;
    bp_allocator *a = owner->allocator;
    bool paranoid = a->config.leak_detection == BP_LEAK_PARANOID;
    size_t n = 0, bytes = 0;
    while (list != NULL) {
        bp__remote_batch *batch = list;
        list = batch->next;
        for (unsigned i = 0; i < batch->count; i++) bp__buf_free(NULL, a, batch->bufs[i], paranoid);
        n += batch->count;
        bytes += batch->bytes;
        free(batch);
    }
    bp__counter_add(&owner->remote_reclaimed_bytes, bytes); /* under bp__registry_lock */
    return n;
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

void bp__remote_open(bp__thread_state *ts)
{
    atomic_store_explicit(&ts->remote_head, NULL, memory_order_release);
}

size_t bp__remote_close(bp__thread_state *ts)
{
    bp__state_enter(ts);
    bp__remote_flush(ts);
    free_slots(ts);
    /* Still closed when its thread vanished in a fork before it first opened it. */
    bp__remote_batch *pending = atomic_exchange_explicit(&ts->remote_head, BP__REMOTE_CLOSED, memory_order_acquire);
    if (pending == BP__REMOTE_CLOSED) pending = NULL;
    size_t n = take_back(ts, pending, false);
    bp__state_leave(ts);
    return n;
}

void bp__remote_discard(bp__thread_state *ts)
{
    bp__remote_batch *pending = atomic_load_explicit(&ts->remote_head, memory_order_acquire);
    while (pending != NULL && pending != BP__REMOTE_CLOSED) {
        bp__remote_batch *after = pending->next;
        free(pending);
        pending = after;
    }
    free_slots(ts);
}
