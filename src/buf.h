/*
 * The bp_buf object (Netty's PooledByteBuf): indices, reference count and the region of
 * memory behind it.
 *
 * Invariants
 * - 0 <= reader_index <= writer_index <= capacity <= max_capacity <= BP_CAPACITY_LIMIT.
 * - While alive (refcnt > 0): capacity <= region.length and memory == region.memory.
 * - refcnt == 0 means released: the object sits in a recycler (next_free links it) and no
 *   API call touches memory through it.
 * - A view (slice or duplicate) has BP__REFCNT_VIEW set in refcnt and `root` set: its head
 *   caches root memory + view_offset and its capacity, refreshed by every slow-path access
 *   (bp__check_live), so it follows the root when that grows, moves or shrinks. A plain view
 *   keeps refcnt VIEW|1, shares its count_owner's count, is listed in count_owner->views and
 *   dies with it (refcnt 0); a retained view counts its own references and holds one on the
 *   root. Views have no region.
 */
#ifndef BP_BUF_H
#define BP_BUF_H

#include "arena.h"
#include "common.h"

/* The reference count is a plain uint32_t shared with the inline code in bytepool.h, so
 * it is only ever touched through these. */
#define BP__REFCNT_VIEW 0x80000000u
#define BP__REFCNT_MASK 0x7fffffffu
#define BP__REFCNT_LOAD(b, order) __atomic_load_n(&(b)->head.refcnt, order)
#define BP__REFCNT_STORE(b, v, order) __atomic_store_n(&(b)->head.refcnt, v, order)

struct bp_buf {
    bp__buf_head head;        /* indices, memory (== region.memory), refcnt (0: released);
                                 first, so the header's inline paths can read it */
    bp__region region;        /* where memory came from, to give it back */
    size_t marked_reader_index; /* bp_mark_reader_index; 0 until marked */
    size_t marked_writer_index;
    bp_buf *root;             /* views: the buffer they show; NULL for a root */
    size_t view_offset;       /* views: where they start in the root */
    size_t view_length;       /* slices: their length; SIZE_MAX for duplicates */
    bool view_retained;
    bp_buf *count_owner;      /* plain views: whose reference count they share and with whom
                                 they die (the root, or the retained view they came from) */
    bp_buf *views;            /* plain views sharing this buffer's count (next_view links) */
    bp_buf *next_view;
    struct bp__leak_record *leak; /* roots sampled by leak detection; NULL otherwise */
    bp_allocator *allocator;
    struct bp__thread_state *owner; /* the thread state that allocated it (pooled) */
    bp_buf *next_free;        /* recycler or remote-stack link while released */
};

/* ---- Checks shared by every operation: each reports the problem and returns its code. */

BP_INLINE uint32_t bp__refcnt(const bp_buf *b)
{
    return BP__REFCNT_LOAD(b, __ATOMIC_ACQUIRE);
}

/* 0 when b is a live buffer; otherwise reports and returns the error. */
/* Re-reads a view's memory and capacity from its root; reports and returns BP_EFREED if the
 * root is gone. */
int bp__view_refresh(bp_buf *b, const char *func);

/* 0 when b is a live buffer (a view is refreshed on the way); otherwise reports and returns
 * the error. */
BP_INLINE int bp__check_live(const bp_buf *b, const char *func)
{
    if (BP_UNLIKELY(b == NULL)) return bp__misuse(BP_EINVAL, func, "buffer is NULL");
    uint32_t count = bp__refcnt(b);
    if (BP_UNLIKELY(count == 0))
        return bp__misuse(BP_EFREED, func, "buffer %p already released (refCnt: 0)", (const void *)b);
    if (BP_UNLIKELY(count & BP__REFCNT_VIEW)) return bp__view_refresh((bp_buf *)b, func);
    return 0;
}

/* 0 when [index, index + n) lies inside the capacity. */
BP_INLINE int bp__check_index(const bp_buf *b, size_t index, size_t n, const char *func)
{
    if (BP_UNLIKELY(index > b->head.capacity || n > b->head.capacity - index))
        return bp__misuse(BP_ERANGE, func, "index %zu + length %zu exceeds capacity %zu", index, n,
                          b->head.capacity);
    return 0;
}

BP_INLINE int bp__check_readable(const bp_buf *b, size_t n, const char *func)
{
    if (BP_UNLIKELY(n > b->head.writer_index - b->head.reader_index))
        return bp__misuse(BP_ERANGE, func, "reading %zu bytes with only %zu readable (readerIndex %zu, writerIndex %zu)",
                          n, b->head.writer_index - b->head.reader_index, b->head.reader_index, b->head.writer_index);
    return 0;
}

/* Grows b so that n more bytes fit after the writer index (slow half of ensure_writable). */
int bp__grow_for_write(bp_buf *b, size_t n, const char *func);

BP_INLINE int bp__ensure_writable(bp_buf *b, size_t n, const char *func)
{
    if (BP_LIKELY(n <= b->head.capacity - b->head.writer_index)) return 0;
    return bp__grow_for_write(b, n, func);
}

/* Netty's calculateNewCapacity: the capacity to grow to so that at least `min_capacity`
 * bytes fit, capped at max_capacity (min_capacity <= max_capacity). */
size_t bp__calculate_new_capacity(size_t min_capacity, size_t max_capacity);

/* The growth step above which capacities go up linearly (4 MiB, as Netty). */
#define BP__GROWTH_THRESHOLD ((size_t)4 << 20)

#endif
