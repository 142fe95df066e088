/* SPDX-License-Identifier: MIT */
/*
 * The bp_buf object (Netty's PooledByteBuf): indices, reference count and the region of
 * memory behind it.
 *
 * Invariants
 * - 0 <= reader_index <= writer_index <= capacity <= max_capacity <= BP_CAPACITY_LIMIT.
 * - While alive (refcnt > 0): capacity <= region.length and memory == region.memory.
 * - refcnt == 0 means released: the object sits in a recycler (next_free links it) and no
 *   API call touches memory through it.
 * - A view (slice or duplicate) has BP__REFCNT_INDIRECT set in refcnt and `root` set: its head
 *   caches root memory + view_offset and its capacity, refreshed by every slow-path access
 *   (bp__check_live), so it follows the root when that grows, moves or shrinks. A plain view
 *   keeps refcnt VIEW|1, shares its count_owner's count, is listed in count_owner->views and
 *   dies with it (refcnt 0) unless bp_view_free ends it first; a retained view counts its own
 *   references and holds one on `held` (the buffer it was made from, or the count owner of
 *   that buffer when it was a plain view). Views have no region.
 * - A wrapped buffer (bp_wrap) is a root over the program's memory: region kind
 *   BP__KIND_WRAPPED, capacity <= max capacity == region.length, no owner, release tag
 *   BP__TAG_NONE (its release goes through deallocate, which hands it to bp__wrap_release
 *   before anything would look at its region as the pool's).
 * - A composite has BP__REFCNT_INDIRECT set, `composite` set and `root` NULL: it counts its
 *   own references, owns one reference on each component, and has no memory of its own
 *   (head.memory NULL); a view of a composite has none either. Every byte of those two kinds
 *   moves through bp__walk. Objects in a recycler always have `composite` NULL.
 * - Generations: `generation` changes only through bp__generation_record and
 *   bp__generation_end, whatever the object is used as, so a (pointer, generation) pair
 *   recorded by a view or a composite tells the buffer it named from a later use of the same
 *   object. An odd generation means someone recorded it: a root with an odd generation has
 *   the release tag BP__TAG_NONE (its release goes through deallocate, which ends the
 *   generation) until it is released.
 */
#ifndef BP__BUF_H
#define BP__BUF_H

#include "arena.h"
#include "common.h"

/* The reference count is a plain uint32_t shared with the inline code in bytepool.h, so
 * it is only ever touched through these. The top bit marks the buffers whose every access
 * goes through the library (views and composites: "indirect"). */
#define BP__REFCNT_INDIRECT 0x80000000u
#define BP__REFCNT_MASK 0x7fffffffu
#define BP__REFCNT_LOAD(b, order) __atomic_load_n(&(b)->head.refcnt, order)
#define BP__REFCNT_STORE(b, v, order) __atomic_store_n(&(b)->head.refcnt, v, order)

/* Three cache lines, in the order the hot paths touch them: an allocation from the thread
 * cache writes line 0 only; a release reads line 0 (the count) and line 1; the remote
 * take-back reads next_free and line 1. Objects are aligned to the line. Roots and
 * composites use the region, owner and leak record of line 1, views the links and records
 * that share their place; `generation` belongs to no kind: the object's whole life. */
struct bp_buf {
    /* line 0 */
    _Alignas(BP__CACHE_LINE) bp__buf_head head; /* indices, memory (== region.memory), refcnt
                                 (0: released), marks; first, so the header's inline paths
                                 can read it */
    /* line 1 */
    union {
        struct { /* roots and composites */
            bp__region region;        /* where memory came from, to give it back */
            struct bp__thread_state *owner; /* the thread state that allocated it (pooled) */
            struct bp__leak_record *leak; /* roots sampled by leak detection; NULL otherwise */
        };
        struct { /* views */
            bp_buf *count_owner;      /* plain views: whose reference count they share and
                                         with whom they die (the root, or the retained view
                                         they came from); NULL for retained views */
            bp_buf *next_view;        /* plain views: in count_owner->views, both ways */
            bp_buf *prev_view;
            bp_buf *held;             /* retained views: what they hold a reference on */
            uint64_t root_generation; /* root's generation when the view was made */
            uint64_t held_generation; /* held's */
        };
    };
    bp_buf *views;            /* plain views sharing this buffer's count (next_view links) */
    /* line 2 */
    bp_buf *next_free;        /* recycler or remote-stack link while released */
    bp_allocator *allocator;
    struct bp__composite *composite; /* composites: their components; NULL otherwise */
    bp_buf *root;             /* views: the buffer they show; NULL for a root */
    size_t view_offset;       /* views: where they start in the root */
    size_t view_length;       /* slices: their length; SIZE_MAX for duplicates */
    uint64_t generation;      /* see Generations above */
};

/* ---- Checks shared by every operation: each reports the problem and returns its code. */

BP__INLINE uint32_t bp__refcnt(const bp_buf *b)
{
    return BP__REFCNT_LOAD(b, __ATOMIC_ACQUIRE);
}

/* ---- Generations (see the invariants above). */

BP__INLINE uint64_t bp__generation(const bp_buf *b)
{
    return __atomic_load_n(&b->generation, __ATOMIC_RELAXED);
}

/* Records b for a view or a composite: returns the (odd) generation to compare with later.
 * From now until b is released, its release ends the generation: a plain root is kept off
 * the inline release path for that (release tag BP__TAG_NONE). */
uint64_t bp__generation_record(bp_buf *b);

/* b's life is over (released, or a plain view freed): a generation recorded during it no
 * longer matches, whatever the object becomes next. */
BP__INLINE void bp__generation_end(bp_buf *b)
{
    uint64_t g = bp__generation(b);
    if (g & 1) __atomic_store_n(&b->generation, g + 1, __ATOMIC_RELAXED);
}

/* Whether b is still alive as the buffer whose generation `gen` was recorded. */
BP__INLINE bool bp__generation_holds(const bp_buf *b, uint64_t gen)
{
    return (bp__refcnt(b) & BP__REFCNT_MASK) != 0 && bp__generation(b) == gen;
}

/* Re-reads a view's memory and capacity from its root; reports and returns BP_EFREED if the
 * root is gone. */
int bp__view_refresh(bp_buf *b, const char *func);

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

/* For the tests: how many times c's component table was reallocated, and how many components
 * checks and cycle searches have visited in it. */
void bp__composite_work(const bp_buf *c, size_t *resizes, size_t *visits);

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
