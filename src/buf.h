/* SPDX-License-Identifier: MIT */
/*
 * The buffer layer's shared internals (buf.c, composite.c, wrap.c, buf_util.c): the checks
 * every operation starts with, moving bytes through contiguous and scattered buffers,
 * composites, growth. The object itself is in object.h.
 */
#ifndef BP__BUF_H
#define BP__BUF_H

#include "common.h"
#include "object.h"

struct bp__thread_state;

/* ---- Checks shared by every operation: each reports the problem and returns its code. */

/* Records b for a view or a composite: returns the (odd) generation to compare with later.
 * From now until b is released, its release ends the generation: a plain root is kept off
 * the inline release path for that (release tag BP__TAG_NONE). */
uint64_t bp__generation_record(bp_buf *b);

/* Re-reads a view's memory and capacity from its root; reports and returns BP_EFREED if the
 * root is gone. */
int bp__view_refresh(bp_buf *b, const char *func);

/* Whether the buffers a view v shows and holds are still the ones it was made of; and its
 * capacity as its (intact) root has it now. Both only read: a view that is a composite's
 * component is checked this way by every thread reading that composite at once. */
bool bp__view_intact(const bp_buf *v);
size_t bp__view_capacity_now(const bp_buf *v);

/* A live indirect buffer: refreshes a view, and checks that every component a composite (or
 * the composite under a view) reaches is still there. 0 or the reported error. */
int bp__indirect_check(bp_buf *b, const char *func);

/* 0 when b is a live buffer (a view is refreshed on the way); otherwise reports and returns
 * the error. */
BP__INLINE int bp__check_live(const bp_buf *b, const char *func)
{
    if (BP__UNLIKELY(b == NULL)) return bp__misuse(BP_EINVAL, func, "buffer is NULL");
    uint32_t count = bp__refcnt(b);
    if (BP__UNLIKELY(count == 0))
        return bp__misuse(BP_EFREED, func, "buffer %p already released (refCnt: 0)", (const void *)b);
    if (BP__UNLIKELY(count & BP__REFCNT_INDIRECT)) return bp__indirect_check((bp_buf *)b, func);
    return 0;
}

/* 0 when [index, index + n) lies inside the capacity. */
BP__INLINE int bp__check_index(const bp_buf *b, size_t index, size_t n, const char *func)
{
    if (BP__UNLIKELY(index > b->head.capacity || n > b->head.capacity - index))
        return bp__misuse(BP_ERANGE, func, "index %zu + length %zu exceeds capacity %zu", index, n,
                          b->head.capacity);
    return 0;
}

BP__INLINE int bp__check_readable(const bp_buf *b, size_t n, const char *func)
{
    if (BP__UNLIKELY(n > b->head.writer_index - b->head.reader_index))
        return bp__misuse(BP_ERANGE, func, "reading %zu bytes with only %zu readable (readerIndex %zu, writerIndex %zu)",
                          n, b->head.writer_index - b->head.reader_index, b->head.reader_index, b->head.writer_index);
    return 0;
}

/* ---- Moving bytes. All of these take a range the caller has checked; the inline halves
 * serve buffers with contiguous memory (plain buffers and views of them), the rest walk. */

/* Whether b's bytes are one block at head.memory (not a composite or a view of one). */
BP__INLINE bool bp__contiguous(const bp_buf *b)
{
    return b->composite == NULL && (b->root == NULL || b->root->composite == NULL);
}

/* Called with each contiguous segment of a range in turn: p, its length, and the index in
 * the walked buffer of p[0]. A non-zero return stops the walk and is returned by it. */
typedef int (*bp__segment_fn)(uint8_t *p, size_t n, size_t index, void *ctx);

/* Visits the segments of [index, index + n) of b, first to last (or last to first). Returns
 * 0, fn's non-zero return, or BP_EINVAL when the composites nest deeper than
 * BP_MAX_COMPOSITE_DEPTH (which bp__check_live reports first: a walk after it never fails). */
int bp__walk(const bp_buf *b, size_t index, size_t n, bool descending, bp__segment_fn fn, void *ctx);

void bp__scattered_out(const bp_buf *b, size_t index, void *dst, size_t n);
void bp__scattered_in(bp_buf *b, size_t index, const void *src, size_t n);
void bp__scattered_fill(bp_buf *b, size_t index, uint8_t byte, size_t n);

/* [index, index + n) of b to dst. */
BP__INLINE void bp__bytes_out(const bp_buf *b, size_t index, void *dst, size_t n)
{
    if (BP__LIKELY(bp__contiguous(b))) {
        if (n > 0) memcpy(dst, b->head.memory + index, n);
    } else {
        bp__scattered_out(b, index, dst, n);
    }
}

/* src to [index, index + n) of b; src may lie inside b's own memory. */
BP__INLINE void bp__bytes_in(bp_buf *b, size_t index, const void *src, size_t n)
{
    if (BP__LIKELY(bp__contiguous(b))) {
        if (n > 0) memmove(b->head.memory + index, src, n);
    } else {
        bp__scattered_in(b, index, src, n);
    }
}

BP__INLINE void bp__bytes_fill(bp_buf *b, size_t index, uint8_t byte, size_t n)
{
    if (BP__LIKELY(bp__contiguous(b))) {
        if (n > 0) memset(b->head.memory + index, byte, n);
    } else {
        bp__scattered_fill(b, index, byte, n);
    }
}

/* Copies up to this many bytes that must be read before any is written go through the stack;
 * more, through malloc. */
#define BP__SMALL_COPY 4096

/* n bytes from src at src_index to dst at dst_index, as if every byte were read before the
 * first is written, whatever memory the two share (the same buffer, views of one root, a
 * composite and its components, at any depth). Returns 0, or BP_ENOMEM with nothing written
 * when overlapping ranges with a scattered side need a temporary copy that cannot be had. */
int bp__bytes_copy(bp_buf *dst, size_t dst_index, const bp_buf *src, size_t src_index, size_t n);

/* The same for ranges whose memory does not overlap; cannot fail. */
void bp__bytes_copy_disjoint(bp_buf *dst, size_t dst_index, const bp_buf *src, size_t src_index, size_t n);

/* Whether the memory behind [a_index, a_index + a_n) of a and [b_index, b_index + b_n) of b
 * may overlap: exact when either is contiguous, by the bounds of their addresses otherwise. */
bool bp__ranges_overlap(const bp_buf *a, size_t a_index, size_t a_n, const bp_buf *b, size_t b_index, size_t b_n);

/* ---- Wrapped memory (wrap.c) */

/* The last reference to a wrapped buffer is gone (its plain views already let go): the
 * object goes back to ts's recycler (ts may be NULL), then its free_fn is called. */
void bp__wrap_release(struct bp__thread_state *ts, bp_buf *b);

/* ---- Composites (composite.c) */

/* Releases every component and frees the component table (the last reference is gone). */
void bp__composite_destroy(bp_buf *c);

/* Frees the component table of a composite still alive as its allocator is destroyed,
 * releasing nothing: the components' memory goes with the allocator too. */
void bp__composite_free_table(bp_buf *c);

/* Grows a composite so that n bytes fit after `writer` (writer + n <= max capacity): a new
 * component at the end. */
int bp__composite_grow(bp_buf *c, size_t writer, size_t n);

/* Sets a composite's capacity: a new component to grow, components cut or dropped at the
 * end to shrink. */
int bp__composite_set_capacity(bp_buf *c, size_t capacity);

/* discardReadBytes of a composite: drops the components (and the part of one) before the
 * reader index; nothing moves, the capacity shrinks. `whole_only`: only components read to
 * their end (discardSomeReadBytes). */
void bp__composite_discard(bp_buf *c, bool whole_only);

/* How many bytes bp__composite_discard(c, whole_only) would drop (0: it would do nothing). */
size_t bp__composite_discardable(const bp_buf *c, bool whole_only);

/* bp_reserve of a composite or a view of one (n writable bytes there already): where n
 * bytes at the writer index can be written in one piece. A composite is rearranged when
 * they are not (its writable tail replaced by one fresh component); a view fails. */
uint8_t *bp__scattered_reserve(bp_buf *b, size_t n, const char *func, int *rc);

/* The blocks of [index, index + length) of b into iov (up to iovcnt); returns how many. */
int bp__iovec(const bp_buf *b, size_t index, size_t length, struct iovec *iov, int iovcnt);

size_t bp__composite_count(const bp_buf *c);

/* Whether growing the composite c (or the one under the view c) consolidates its components,
 * releasing them: the table is full. */
bool bp__composite_growth_merges(const bp_buf *c);

#if BP__TESTING
/* How many times c's component table was reallocated, and how many components checks and
 * cycle searches have visited in it. */
void bp__composite_work(const bp_buf *c, size_t *resizes, size_t *visits);
#endif

/* Grows b so that n more bytes fit after the writer index (slow half of ensure_writable). */
int bp__grow_for_write(bp_buf *b, size_t n, const char *func);

BP__INLINE int bp__ensure_writable(bp_buf *b, size_t n, const char *func)
{
    if (BP__LIKELY(n <= b->head.capacity - b->head.writer_index)) return 0;
    return bp__grow_for_write(b, n, func);
}

/* Netty's calculateNewCapacity: the capacity to grow to so that at least `min_capacity`
 * bytes fit, capped at max_capacity (min_capacity <= max_capacity). */
size_t bp__calculate_new_capacity(size_t min_capacity, size_t max_capacity);

/* The growth step above which capacities go up linearly (4 MiB, as Netty). */
#define BP__GROWTH_THRESHOLD ((size_t)4 << 20)

#endif
