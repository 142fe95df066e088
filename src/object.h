/* SPDX-License-Identifier: MIT */
/*
 * The bp_buf object (Netty's PooledByteBuf): its layout - indices, reference count, the
 * region of memory behind it, the links of views and composites - and its generations. Every
 * layer from the recycler up handles these objects; the operations on them are in buf.h.
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
#ifndef BP__OBJECT_H
#define BP__OBJECT_H

#include "arena.h"
#include "common.h"

/* The reference count is a plain uint32_t shared with the inline code in bytepool.h, so
 * it is only ever touched through these. The top bit marks the buffers whose every access
 * goes through the library (views and composites: "indirect"). */
#define BP__REFCNT_INDIRECT 0x80000000u
#define BP__REFCNT_MASK 0x7fffffffu
#define BP__REFCNT_LOAD(b, order) __atomic_load_n(&(b)->head.refcnt, order)
#define BP__REFCNT_STORE(b, v, order) __atomic_store_n(&(b)->head.refcnt, v, order)

/* The release tag where other threads may read it while it changes (a release racing a
 * retained view's first record of the buffer, or racing another release): relaxed atomics,
 * plain moves on x86. The inline release in bytepool.h loads it the same way. */
#define BP__TAG_LOAD(b) __atomic_load_n(&(b)->head.release_tag, __ATOMIC_RELAXED)
#define BP__TAG_STORE(b, v) __atomic_store_n(&(b)->head.release_tag, v, __ATOMIC_RELAXED)

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

BP__INLINE uint32_t bp__refcnt(const bp_buf *b)
{
    return BP__REFCNT_LOAD(b, __ATOMIC_ACQUIRE);
}

/* ---- Generations (see the invariants above). */

BP__INLINE uint64_t bp__generation(const bp_buf *b)
{
    return __atomic_load_n(&b->generation, __ATOMIC_RELAXED);
}

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

#endif
