/* SPDX-License-Identifier: MIT */
/*
 * Wrapped memory (Netty's Unpooled.wrappedBuffer, libevent's evbuffer_add_reference): a
 * root bp_buf over bytes the program owns, with a region of kind BP__KIND_WRAPPED that
 * carries the program's free_fn instead of a chunk. Its bytes never enter the pool: no
 * arena counts them, no cache keeps them, nothing poisons them; only the object is the
 * pool's, and it counts as an active buffer in the thread's ledger like any root.
 */
#include "buf.h"

#include "allocator.h"
#include "thread.h"

#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(((bp__region *)0)->wrapped) <= sizeof(void *) + sizeof(uint64_t),
               "the wrapped fields take no more room than chunk and handle");

void bp_wrap_free_malloced(void *memory, void *user_data)
{
    (void)user_data;
    free(memory);
}

bp_buf *bp_wrap(bp_allocator *a, void *memory, size_t length, bp_wrap_free_fn free_fn, void *user_data, int *err)
{
    int rc = 0;
    if (a == NULL || memory == NULL)
        rc = bp__misuse(BP_EINVAL, __func__, "%s is NULL", a == NULL ? "allocator" : "memory");
    else if (length > BP_CAPACITY_LIMIT)
        rc = bp__misuse(BP_EOVERFLOW, __func__, "length %zu above the limit %zu", length, BP_CAPACITY_LIMIT);
    bp__thread_state *ts = rc == 0 ? bp__thread_state_get(a) : NULL;
    bp_buf *b = ts != NULL ? bp__thread_object_get(ts) : NULL;
    if (rc == 0 && b == NULL) rc = BP_ENOMEM;
    if (err != NULL) *err = rc;
    if (rc != 0) return NULL;

    memset(&b->region, 0, sizeof b->region);
    b->region.memory = memory;
    b->region.length = length;
    b->region.kind = BP__KIND_WRAPPED;
    b->region.class_index = a->sc.nclasses;
    b->region.wrapped.free_fn = free_fn;
    b->region.wrapped.user_data = user_data;
    bp__buf_object_prepare(b, a, NULL); /* no owner: never a thread cache's; tag BP__TAG_NONE */
    b->head.reader_index = 0;
    b->head.writer_index = length;
    b->head.capacity = length;
    b->head.max_capacity = length;
    b->head.marked_reader_index = b->head.marked_writer_index = 0;
    b->view_offset = b->view_length = 0;
    bp__tcache_ledger(&ts->tcache, 1);
    BP__REFCNT_STORE(b, 1, __ATOMIC_RELAXED);
    return b;
}

void bp__wrap_release(bp__thread_state *ts, bp_buf *b)
{
    bp_wrap_free_fn free_fn = b->region.wrapped.free_fn;
    void *memory = b->region.memory, *user_data = b->region.wrapped.user_data;
    bp_allocator *a = b->allocator;
    if (ts != NULL) bp__tcache_ledger(&ts->tcache, -1);
    memset(&b->region, 0, sizeof b->region);
    b->region.kind = BP__KIND_WRAPPED; /* bp_describe names it once released too */
    /* The object first: free_fn may allocate and release buffers of its own. */
    bp__object_retire(&a->objects, bp__recycler_of(ts), b, false);
    if (free_fn != NULL) free_fn(memory, user_data);
}
