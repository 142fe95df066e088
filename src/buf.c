/* SPDX-License-Identifier: MIT */
/*
 * ByteBuf operations on bp_buf: allocation and release through the thread's recycler and
 * arena, reference counting, indices, growth, typed and bulk access. Every public function
 * checks its arguments first and changes nothing when it fails.
 */
#include "buf.h"

#include "allocator.h"
#include "remote.h"
#include "thread.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* The header's inline paths reach these through pointers to their first members. */
_Static_assert(offsetof(bp_buf, head) == 0 && offsetof(struct bp_allocator, head) == 0 &&
                   offsetof(bp__tcache, head) == 0,
               "published heads first");
/* Three lines, each kind's fields where struct bp_buf says: views' links and records share
 * line 1 with what only roots and composites use, and nothing else moves. */
_Static_assert(sizeof(bp_buf) == 3 * BP__CACHE_LINE && offsetof(bp_buf, region) == BP__CACHE_LINE &&
                   offsetof(bp_buf, count_owner) == BP__CACHE_LINE && offsetof(bp_buf, views) == BP__CACHE_LINE + 56 &&
                   offsetof(bp_buf, held_generation) + sizeof(uint64_t) <= offsetof(bp_buf, views) &&
                   offsetof(bp_buf, next_free) == 2 * BP__CACHE_LINE,
               "struct bp_buf layout");

/* ---------------------------------------------------------------------------------------
 * Checks shared by every operation
 * ------------------------------------------------------------------------------------- */

/* ---------------------------------------------------------------------------------------
 * Allocation and reference counting
 * ------------------------------------------------------------------------------------- */

/* A root from a released object that meets the thread cache's invariants: only its
 * indices and count are left to set. (Counting it is the caller's: see bp__tcache.ledger.) */
BP__INLINE void init_root(bp_buf *b, size_t capacity, size_t max_capacity)
{
    if (b->region.kind != BP__KIND_MALLOC) BP__UNPOISON(b->region.memory, b->region.length);
    b->head.reader_index = 0;
    b->head.writer_index = 0;
    b->head.capacity = capacity;
    b->head.max_capacity = max_capacity;
    b->head.marked_reader_index = 0;
    b->head.marked_writer_index = 0;
    BP__REFCNT_STORE(b, 1, __ATOMIC_RELAXED);
}

/* Everything bp_alloc_ex does: the checks, leak tracking, cache misses and trims,
 * unpooled memory. `func` is the public function called (bp_alloc or bp_alloc_ex). Named
 * bp__ so that leak reports leave its frame out with the other library frames. */
static BP__NOINLINE bp_buf *bp__alloc_slow(bp_allocator *a, size_t capacity, size_t max_capacity, int *err,
                                          const char *func)
{
    int rc = BP_ENOMEM;
    if (BP__UNLIKELY(a == NULL)) {
        rc = bp__misuse(BP_EINVAL, func, "allocator is NULL");
        goto fail;
    }
    if (BP__UNLIKELY(capacity > BP_CAPACITY_LIMIT || max_capacity > BP_CAPACITY_LIMIT)) {
        rc = bp__misuse(BP_EOVERFLOW, func, "capacity %zu / max capacity %zu above the limit %zu", capacity,
                        max_capacity, BP_CAPACITY_LIMIT);
        goto fail;
    }
    if (BP__UNLIKELY(capacity > max_capacity)) {
        rc = bp__misuse(BP_EINVAL, func, "initialCapacity %zu exceeds maxCapacity %zu", capacity, max_capacity);
        goto fail;
    }
    bp__thread_state *ts = bp__thread_state_get(a);
    if (BP__UNLIKELY(ts == NULL)) {
        rc = BP_ENOMEM;
        goto fail;
    }
    /* A released object with its region attached and everything but the indices and the
     * count already as a new root needs them (the thread cache's invariants). */
    bool sample;
    bp_buf *b = bp__buf_with_region(a, ts, capacity, &rc, &sample);
    if (BP__UNLIKELY(b == NULL)) goto fail;
    init_root(b, capacity, max_capacity);
    bp__tcache_ledger(&ts->tcache, 1);
    if (BP__UNLIKELY(sample)) { /* the thread's clock kept the fast path off this one */
        b->leak = bp__leak_track(&a->leak, capacity);
        if (b->leak != NULL) b->head.release_tag = BP__TAG_NONE; /* its release must untrack it */
    }
    if (err != NULL) *err = 0;
    return b;

fail:
    if (err != NULL) *err = rc;
    return NULL;
}

bp_buf *bp_alloc_ex(bp_allocator *a, size_t capacity, size_t max_capacity, int *err)
{
    bp_buf *b;
    if (BP__LIKELY(a != NULL && capacity <= max_capacity && max_capacity <= BP_CAPACITY_LIMIT) &&
        BP__LIKELY((b = bp__alloc_cached(a, capacity, max_capacity)) != NULL)) {
        if (err != NULL) *err = 0;
        return b;
    }
    return bp__alloc_slow(a, capacity, max_capacity, err, "bp_alloc_ex");
}

/* The header's bp_alloc has tried the thread cache (bp__alloc_cached). */
bp_buf *bp__alloc(bp_allocator *a, size_t capacity)
{
    return bp__alloc_slow(a, capacity, capacity > BP_DEFAULT_MAX_CAPACITY ? capacity : BP_DEFAULT_MAX_CAPACITY, NULL,
                          "bp_alloc");
}

/* A view's life is over (its count owner released, its own last reference dropped, or
 * freed): marked released, its generation ended, the object back to the recycler. */
static void end_view(bp__thread_state *ts, bp_buf *v)
{
    BP__REFCNT_STORE(v, 0, __ATOMIC_RELAXED);
    v->head.memory = NULL;
    bp__generation_end(v);
    bp__view_ledger(v->allocator, ts, -1);
    bp__object_put(&v->allocator->objects, bp__recycler_of(ts), v);
}

/* Plain views die with the buffer whose count they share. */
static BP__NOINLINE void release_views(bp__thread_state *ts, bp_buf *b)
{
    bp_buf *v = b->views;
    b->views = NULL;
    while (v != NULL) {
        bp_buf *next = v->next_view;
        end_view(ts, v);
        v = next;
    }
}

/* The last reference is gone: memory back to its arena, the object to this thread. */
BP__INLINE void deallocate(bp_buf *b)
{
    bp_allocator *a = b->allocator;
    bool hold_back = false;
    if (BP__UNLIKELY(b->leak != NULL)) {
        bp__leak_untrack(&a->leak, b->leak);
        b->leak = NULL;
        hold_back = a->leak.level == BP_LEAK_PARANOID;
    }
    bp__thread_state *ts = bp__thread_state_get(a);
    if (BP__UNLIKELY(b->views != NULL)) release_views(ts, b);
    /* A recorded buffer always has this tag, so no other release needs to look. */
    if (BP__UNLIKELY(BP__TAG_LOAD(b) == BP__TAG_NONE)) bp__generation_end(b);
    if (BP__UNLIKELY(b->region.kind == BP__KIND_WRAPPED)) { /* the program's memory, not the pool's */
        bp__wrap_release(ts, b);
        return;
    }
    /* From here the memory belongs to the pool: a raw pointer kept past release is caught. */
    if (b->region.kind != BP__KIND_MALLOC) BP__POISON(b->region.memory, b->region.length);
    if (BP__LIKELY(ts != NULL)) bp__tcache_ledger(&ts->tcache, -1);
    else bp__count_stateless_release(a); /* no state to count it in (out of memory) */
    /* Released away from home, of a class thread caches keep: queued for the owner's
     * remote stack, no lock, the region then going into the owner's cache. Any other
     * region goes back from here (to its arena, or unmapped): queued, it would wait for
     * the owner's next allocation, resident for as long as the owner idles. */
    if (BP__UNLIKELY(b->owner != ts) && b->region.kind != BP__KIND_MALLOC && ts != NULL &&
        bp__tcache_keeps(&ts->tcache, b->region.class_index)) {
        bp__remote_release(ts, b->owner, b);
        return;
    }
    /* Home: object and region into the thread cache together (one push). */
    if (BP__LIKELY(!hold_back && ts != NULL) && BP__LIKELY(bp__buf_cache_at_home(ts, b))) return;
    bp__buf_free(ts, a, b, hold_back);
}

/* Whether an indirect buffer counts its own references (retained views and composites) or
 * shares its count_owner's (plain views). */
static bool owns_count(const bp_buf *b) { return b->root == NULL || b->count_owner == NULL; }

/* The buffer whose count b's references are: b, or the count owner of a plain view. */
static bp_buf *count_holder(bp_buf *b) { return owns_count(b) ? b : b->count_owner; }
static int retain_named(bp_buf *b, uint32_t n, const char *func);
static int release_named(bp_buf *b, uint32_t n, const char *func);

/* An indirect buffer's count: plain views act on their owner's, retained views and
 * composites on their own (the low 31 bits, with the indirect bit kept). */
static int indirect_retain(bp_buf *b, uint32_t n, uint32_t count, const char *func)
{
    if (!owns_count(b)) return retain_named(b->count_owner, n, func);
    do {
        uint32_t own = count & BP__REFCNT_MASK;
        if (BP__UNLIKELY(own == 0))
            return bp__misuse(BP_EFREED, func, "buffer %p already released (refCnt: 0)", (void *)b);
        if (BP__UNLIKELY(n > (uint32_t)INT32_MAX - own))
            return bp__misuse(BP_EREFCNT, func, "refCnt %u + increment %u overflows", own, n);
    } while (!__atomic_compare_exchange_n(&b->head.refcnt, &count, count + n, true, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    return 0;
}

/* Drops n of the count a retained view or a composite keeps itself: 1 when that was the
 * last, 0 when references remain, or the reported error. */
static int drop_own(bp_buf *b, uint32_t n, uint32_t count, const char *func)
{
    uint32_t own;
    do {
        own = count & BP__REFCNT_MASK;
        if (BP__UNLIKELY(n > own))
            return own == 0 ? bp__misuse(BP_EFREED, func, "buffer %p already released (refCnt: 0)", (void *)b)
                            : bp__misuse(BP_EREFCNT, func, "decrement %u exceeds refCnt %u", n, own);
    } while (!__atomic_compare_exchange_n(&b->head.refcnt, &count, own == n ? 0 : count - n, true,
                                          __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
    return own == n;
}

/* The last reference to a retained view or a composite is gone: its plain views die, a
 * composite's components are released, the object goes back. Returns what a retained view
 * held (NULL otherwise), with the generation it recorded, for the caller to release. */
static bp_buf *end_indirect(bp_buf *b, uint64_t *held_generation)
{
    bool view = b->root != NULL;
    bp_buf *held = view ? b->held : NULL;
    *held_generation = view ? b->held_generation : 0;
    bp__thread_state *ts = bp__thread_state_get(b->allocator);
    if (b->views != NULL) release_views(ts, b);
    if (b->composite != NULL) bp__composite_destroy(b);
    bp__generation_end(b);
    b->head.memory = NULL;
    if (view) bp__view_ledger(b->allocator, ts, -1);
    bp__object_put(&b->allocator->objects, bp__recycler_of(ts), b);
    return held;
}

static int indirect_release(bp_buf *b, uint32_t n, uint32_t count, const char *func)
{
    if (!owns_count(b)) return release_named(b->count_owner, n, func);
    int rc = drop_own(b, n, count, func);
    if (rc != 1) return rc;
    /* Each retained view holds the buffer it was made from (Netty's parent): a chain of
     * them ends here one link at a time, not by recursion. A held buffer released behind
     * the view's back is left alone - its object may be someone else's buffer by now. */
    uint64_t generation;
    bp_buf *held = end_indirect(b, &generation);
    while (held != NULL) {
        if (BP__UNLIKELY(!bp__generation_holds(held, generation))) {
            bp__misuse(BP_EFREED, func, "buffer %p, held by a retained view, was released behind its back", (void *)held);
            break;
        }
        uint32_t held_count = bp__refcnt(held);
        if (!(held_count & BP__REFCNT_INDIRECT) || held->root == NULL) { /* a root or a composite */
            release_named(held, 1, func);
            break;
        }
        if (drop_own(held, 1, held_count, func) != 1) break;
        held = end_indirect(held, &generation);
    }
    return 1;
}

/* bp_retain_n, with misuse reported as `func`'s (the public function called). */
static int retain_named(bp_buf *b, uint32_t n, const char *func)
{
    if (BP__UNLIKELY(b == NULL)) return bp__misuse(BP_EINVAL, func, "buffer is NULL");
    if (BP__UNLIKELY(n == 0)) return bp__misuse(BP_EINVAL, func, "increment is 0");
    uint32_t count = BP__REFCNT_LOAD(b, __ATOMIC_RELAXED);
    if (BP__UNLIKELY(count & BP__REFCNT_INDIRECT)) return indirect_retain(b, n, count, func);
    do {
        if (BP__UNLIKELY(count == 0))
            return bp__misuse(BP_EFREED, func, "buffer %p already released (refCnt: 0, increment: %u)", (void *)b,
                              n);
        if (BP__UNLIKELY(n > (uint32_t)INT32_MAX - count))
            return bp__misuse(BP_EREFCNT, func, "refCnt %u + increment %u overflows", count, n);
    } while (!__atomic_compare_exchange_n(&b->head.refcnt, &count, count + n, true, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    /* Noted once the reference is ours: a retain racing the last release (misuse) that
     * loses reads nothing the release rewrites. */
    if (BP__UNLIKELY(b->leak != NULL)) bp__leak_note(&b->allocator->leak, b->leak, "retain", NULL);
    return 0;
}

int bp_retain_n(bp_buf *b, uint32_t n) { return retain_named(b, n, __func__); }

int bp_retain(bp_buf *b) { return retain_named(b, 1, __func__); }

/* Everything else bp_release_n does: shared counts, views, leak records, releases away from
 * home, misuse (reported as `func`'s, the public function called). */
static BP__NOINLINE int release_slow(bp_buf *b, uint32_t n, const char *func)
{
    if (BP__UNLIKELY(b == NULL)) return bp__misuse(BP_EINVAL, func, "buffer is NULL");
    if (BP__UNLIKELY(n == 0)) return bp__misuse(BP_EINVAL, func, "decrement is 0");
    uint32_t count = BP__REFCNT_LOAD(b, __ATOMIC_ACQUIRE);
    /* Sole owner: nobody else holds a reference that could change the count, so a plain
     * store will do (DPDK's trick; it saves a locked instruction per buffer). With
     * release_check the compare-and-set below takes the last reference instead, so that of
     * two releases racing for it (misuse) exactly one succeeds. */
    if (BP__LIKELY(count == n && !(count & BP__REFCNT_INDIRECT)) && BP__LIKELY(!b->allocator->release_check)) {
        BP__REFCNT_STORE(b, 0, __ATOMIC_RELAXED);
        deallocate(b);
        return 1;
    }
    if (BP__UNLIKELY(count & BP__REFCNT_INDIRECT)) return indirect_release(b, n, count, func);
    /* The count first: a release that loses a race for the last reference (misuse) must not
     * read the record the winner drops. */
    if (count > n && BP__UNLIKELY(b->leak != NULL)) bp__leak_note(&b->allocator->leak, b->leak, "release", NULL);
    do {
        if (BP__UNLIKELY(count == 0))
            return bp__misuse(BP_EFREED, func, "buffer %p already released (refCnt: 0, decrement: %u)", (void *)b,
                              n);
        if (BP__UNLIKELY(n > count)) return bp__misuse(BP_EREFCNT, func, "decrement %u exceeds refCnt %u", n, count);
    } while (!__atomic_compare_exchange_n(&b->head.refcnt, &count, count - n, true, __ATOMIC_ACQ_REL,
                                          __ATOMIC_ACQUIRE));
    if (count == n) {
        deallocate(b);
        return 1;
    }
    return 0;
}

static int release_named(bp_buf *b, uint32_t n, const char *func)
{
    if (BP__LIKELY(bp__release_cached(b, n))) return 1;
    return release_slow(b, n, func);
}

int bp_release_n(bp_buf *b, uint32_t n)
{
    if (BP__LIKELY(bp__release_cached(b, n))) return 1;
    return release_slow(b, n, __func__);
}

/* The header's bp_release has tried the thread cache (bp__release_cached). */
int bp__release(bp_buf *b) { return release_slow(b, 1, "bp_release"); }

int bp_refcnt(const bp_buf *b)
{
    if (b == NULL) return bp__misuse(BP_EINVAL, __func__, "buffer is NULL");
    uint32_t count = bp__refcnt(b);
    if (count & BP__REFCNT_INDIRECT)
        return owns_count(b) ? (int)(count & BP__REFCNT_MASK) : bp_refcnt(b->count_owner);
    return (int)count;
}

bp_allocator *bp_buf_allocator(const bp_buf *b) { return b ? b->allocator : NULL; }

int bp__check_usable(const bp_buf *b, const char *func) { return bp__check_live(b, func); }

/* ---------------------------------------------------------------------------------------
 * Indices and capacity
 * ------------------------------------------------------------------------------------- */

int bp_set_reader_index(bp_buf *b, size_t index)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(index > b->head.writer_index))
        return bp__misuse(BP_ERANGE, __func__, "readerIndex %zu exceeds writerIndex %zu", index,
                          b->head.writer_index);
    b->head.reader_index = index;
    return 0;
}

int bp_set_writer_index(bp_buf *b, size_t index)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(index < b->head.reader_index || index > b->head.capacity))
        return bp__misuse(BP_ERANGE, __func__, "writerIndex %zu outside [readerIndex %zu, capacity %zu]",
                          index, b->head.reader_index, b->head.capacity);
    b->head.writer_index = index;
    return 0;
}

size_t bp__calculate_new_capacity(size_t min_capacity, size_t max_capacity)
{
    const size_t threshold = BP__GROWTH_THRESHOLD;
    if (min_capacity == threshold) return threshold;
    if (min_capacity > threshold) {
        size_t capacity = min_capacity / threshold * threshold;
        return capacity > max_capacity - threshold ? max_capacity : capacity + threshold;
    }
    size_t capacity = 64;
    while (capacity < min_capacity) capacity <<= 1;
    return capacity < max_capacity ? capacity : max_capacity;
}

/* Moves the buffer to a region of at least new_capacity bytes, keeping its contents. */
static int move_to_new_region(bp_buf *b, size_t new_capacity, size_t keep)
{
    bp__thread_state *ts = bp__thread_state_get(b->allocator);
    if (BP__UNLIKELY(ts == NULL)) return BP_ENOMEM;
    bp__region fresh;
    int rc = bp__region_take(b->allocator, ts, new_capacity, &fresh);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (fresh.kind != BP__KIND_MALLOC) BP__UNPOISON(fresh.memory, fresh.length);
    memcpy(fresh.memory, b->head.memory, keep);
    if (b->region.kind != BP__KIND_MALLOC) BP__POISON(b->region.memory, b->region.length);
    bp__region_give(b->allocator, ts, &b->region);
    b->region = fresh;
    b->head.memory = fresh.memory;
    /* Another class now (and perhaps another arena when grown away from home). A recorded
     * buffer stays off the inline release path: its release must end its generation. */
    b->head.release_tag = b->owner == ts && b->leak == NULL && b->views == NULL && !(bp__generation(b) & 1)
                              ? bp__buf_release_tag(b, ts)
                              : BP__TAG_NONE;
    return 0;
}

/* Grows a root so that n bytes fit after `writer`: into the slack of its region without
 * moving if that is enough, else to calculateNewCapacity in a new region. */
static int grow_root(bp_buf *root, size_t writer, size_t n)
{
    if (root->composite != NULL) return bp__composite_grow(root, writer, n);
    size_t region_limit = root->region.length < root->head.max_capacity ? root->region.length : root->head.max_capacity;
    size_t fast_writable = region_limit - writer;
    size_t new_capacity = fast_writable >= n ? writer + fast_writable
                                             : bp__calculate_new_capacity(writer + n, root->head.max_capacity);
    if (new_capacity > root->region.length) {
        int rc = move_to_new_region(root, new_capacity, root->head.capacity);
        if (BP__UNLIKELY(rc != 0)) return rc;
    }
    root->head.capacity = new_capacity;
    return 0;
}

BP__NOINLINE int bp__grow_for_write(bp_buf *b, size_t n, const char *func)
{
    if (BP__UNLIKELY(n > b->head.max_capacity - b->head.writer_index))
        return bp__misuse(BP_ECAPACITY, func, "writerIndex %zu + minWritableBytes %zu exceeds maxCapacity %zu",
                          b->head.writer_index, n, b->head.max_capacity);
    if (b->root == NULL) return grow_root(b, b->head.writer_index, n);
    /* Only duplicates of the whole root get here (a slice's max capacity is its length):
     * the root grows, and the view follows. */
    int rc = grow_root(b->root, b->head.writer_index, n);
    return rc != 0 ? rc : bp__view_refresh(b, func);
}

int bp_ensure_writable(bp_buf *b, size_t n)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    return bp__ensure_writable(b, n, __func__);
}

/* ---------------------------------------------------------------------------------------
 * Typed access: the slow halves of the inline functions in bytepool.h. Each reports the
 * first problem in the same order as every other call: buffer NULL, released, out NULL,
 * then the range.
 * ------------------------------------------------------------------------------------- */

int bp__get_slow(const bp_buf *b, size_t index, void *raw, size_t width, const char *func)
{
    int rc = bp__check_live(b, func);
    if (rc == 0 && raw == NULL) rc = bp__misuse(BP_EINVAL, func, "out is NULL");
    if (rc == 0) rc = bp__check_index(b, index, width, func);
    if (rc == 0) bp__bytes_out(b, index, raw, width);
    return rc;
}

int bp__set_slow(bp_buf *b, size_t index, const void *raw, size_t width, const char *func)
{
    int rc = bp__check_live(b, func);
    if (rc == 0) rc = bp__check_index(b, index, width, func);
    if (rc == 0) bp__bytes_in(b, index, raw, width);
    return rc;
}

int bp__read_slow(bp_buf *b, void *raw, size_t width, const char *func)
{
    int rc = bp__check_live(b, func);
    if (rc == 0 && raw == NULL) rc = bp__misuse(BP_EINVAL, func, "out is NULL");
    if (rc == 0) rc = bp__check_readable(b, width, func);
    if (rc != 0) return rc;
    bp__bytes_out(b, b->head.reader_index, raw, width);
    b->head.reader_index += width;
    return 0;
}

int bp__write_slow(bp_buf *b, const void *raw, size_t width, const char *func)
{
    int rc = bp__check_live(b, func);
    if (rc == 0) rc = bp__ensure_writable(b, width, func);
    if (rc != 0) return rc;
    bp__bytes_in(b, b->head.writer_index, raw, width);
    b->head.writer_index += width;
    return 0;
}

/* A value's bytes to and from the word the _v slow halves carry it in: the width-byte
 * unsigned integer with those bytes (so the same on either byte order). */
static void word_to_bytes(uint64_t word, void *bytes, size_t width)
{
    uint8_t v8 = (uint8_t)word;
    uint16_t v16 = (uint16_t)word;
    uint32_t v32 = (uint32_t)word;
    switch (width) {
    case 1: memcpy(bytes, &v8, 1); break;
    case 2: memcpy(bytes, &v16, 2); break;
    case 4: memcpy(bytes, &v32, 4); break;
    default: memcpy(bytes, &word, 8); break;
    }
}

static uint64_t word_from_bytes(const void *bytes, size_t width)
{
    uint8_t v8;
    uint16_t v16;
    uint32_t v32;
    uint64_t v64;
    switch (width) {
    case 1: memcpy(&v8, bytes, 1); return v8;
    case 2: memcpy(&v16, bytes, 2); return v16;
    case 4: memcpy(&v32, bytes, 4); return v32;
    default: memcpy(&v64, bytes, 8); return v64;
    }
}

bp__slow_value bp__get_slow_v(const bp_buf *b, size_t index, size_t width, int has_out, const char *func)
{
    uint8_t bytes[8];
    bp__slow_value v = {0, bp__get_slow(b, index, has_out ? bytes : NULL, width, func)};
    if (v.rc == 0) v.raw = word_from_bytes(bytes, width);
    return v;
}

int bp__set_slow_v(bp_buf *b, size_t index, uint64_t raw, size_t width, const char *func)
{
    uint8_t bytes[8];
    word_to_bytes(raw, bytes, width);
    return bp__set_slow(b, index, bytes, width, func);
}

bp__slow_value bp__read_slow_v(bp_buf *b, size_t width, int has_out, const char *func)
{
    uint8_t bytes[8];
    bp__slow_value v = {0, bp__read_slow(b, has_out ? bytes : NULL, width, func)};
    if (v.rc == 0) v.raw = word_from_bytes(bytes, width);
    return v;
}

int bp__write_slow_v(bp_buf *b, uint64_t raw, size_t width, const char *func)
{
    uint8_t bytes[8];
    word_to_bytes(raw, bytes, width);
    return bp__write_slow(b, bytes, width, func);
}

/* ---------------------------------------------------------------------------------------
 * Bulk bytes
 * ------------------------------------------------------------------------------------- */

int bp_get_bytes(const bp_buf *b, size_t index, void *dst, size_t n)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(dst == NULL && n > 0)) return bp__misuse(BP_EINVAL, __func__, "dst is NULL");
    rc = bp__check_index(b, index, n, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    bp__bytes_out(b, index, dst, n);
    return 0;
}

int bp_set_bytes(bp_buf *b, size_t index, const void *src, size_t n)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(src == NULL && n > 0)) return bp__misuse(BP_EINVAL, __func__, "src is NULL");
    rc = bp__check_index(b, index, n, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    bp__bytes_in(b, index, src, n);
    return 0;
}

int bp_read_bytes(bp_buf *b, void *dst, size_t n)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(dst == NULL && n > 0)) return bp__misuse(BP_EINVAL, __func__, "dst is NULL");
    rc = bp__check_readable(b, n, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    bp__bytes_out(b, b->head.reader_index, dst, n);
    b->head.reader_index += n;
    return 0;
}

int bp_write_bytes(bp_buf *b, const void *src, size_t n)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(src == NULL && n > 0)) return bp__misuse(BP_EINVAL, __func__, "src is NULL");
    rc = bp__ensure_writable(b, n, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    bp__bytes_in(b, b->head.writer_index, src, n);
    b->head.writer_index += n;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * More indices
 * ------------------------------------------------------------------------------------- */

int bp_set_index(bp_buf *b, size_t reader, size_t writer)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(reader > writer || writer > b->head.capacity))
        return bp__misuse(BP_ERANGE, __func__, "readerIndex %zu, writerIndex %zu (expected 0 <= readerIndex <= writerIndex <= capacity %zu)",
                          reader, writer, b->head.capacity);
    b->head.reader_index = reader;
    b->head.writer_index = writer;
    return 0;
}

int bp_skip_bytes(bp_buf *b, size_t n)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    rc = bp__check_readable(b, n, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    b->head.reader_index += n;
    return 0;
}

int bp_clear(bp_buf *b)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    b->head.reader_index = b->head.writer_index = 0;
    return 0;
}

int bp_mark_reader_index(bp_buf *b)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    b->head.marked_reader_index = b->head.reader_index;
    return 0;
}

int bp_reset_reader_index(bp_buf *b)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(b->head.marked_reader_index > b->head.writer_index))
        return bp__misuse(BP_ERANGE, __func__, "markedReaderIndex %zu exceeds writerIndex %zu",
                          b->head.marked_reader_index, b->head.writer_index);
    b->head.reader_index = b->head.marked_reader_index;
    return 0;
}

int bp_mark_writer_index(bp_buf *b)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    b->head.marked_writer_index = b->head.writer_index;
    return 0;
}

int bp_reset_writer_index(bp_buf *b)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(b->head.marked_writer_index < b->head.reader_index || b->head.marked_writer_index > b->head.capacity))
        return bp__misuse(BP_ERANGE, __func__, "markedWriterIndex %zu outside [readerIndex %zu, capacity %zu]",
                          b->head.marked_writer_index, b->head.reader_index, b->head.capacity);
    b->head.writer_index = b->head.marked_writer_index;
    return 0;
}

size_t bp_max_writable_bytes(const bp_buf *b) { return b ? b->head.max_capacity - b->head.writer_index : 0; }

size_t bp_max_fast_writable_bytes(const bp_buf *b)
{
    if (b == NULL) return 0;
    uint32_t count = bp__refcnt(b);
    if (count & BP__REFCNT_INDIRECT) bp__view_sync(b);
    size_t writer = b->head.writer_index, writable = b->head.capacity - writer;
    if (count == 0 || (count & BP__REFCNT_INDIRECT)) return writable; /* released, a view or a composite */
    /* A root grows in place up to the end of its region (grow_root). */
    size_t limit = b->region.length < b->head.max_capacity ? b->region.length : b->head.max_capacity;
    return limit > writer + writable ? limit - writer : writable;
}

/* ---------------------------------------------------------------------------------------
 * Capacity
 * ------------------------------------------------------------------------------------- */

int bp_ensure_writable_ex(bp_buf *b, size_t n, int force)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (n <= b->head.capacity - b->head.writer_index) return 0;
    if (n > b->head.max_capacity - b->head.writer_index) {
        if (!force || b->head.capacity == b->head.max_capacity) return 1;
        rc = bp_set_capacity(b, b->head.max_capacity);
        return rc != 0 ? rc : 3;
    }
    rc = bp__grow_for_write(b, n, __func__);
    return rc != 0 ? rc : 2;
}

int bp_set_capacity(bp_buf *b, size_t capacity)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    /* A slice's capacity is fixed (Netty throws for any value, its own included). */
    if (BP__UNLIKELY(b->root != NULL && b->view_length != SIZE_MAX))
        return bp__misuse(BP_EINVAL, __func__, "the capacity of a slice cannot change");
    if (BP__UNLIKELY(capacity > b->head.max_capacity))
        return bp__misuse(BP_ECAPACITY, __func__, "newCapacity %zu exceeds maxCapacity %zu", capacity,
                          b->head.max_capacity);
    if (b->root != NULL) { /* a duplicate changes its root's capacity */
        rc = bp_set_capacity(b->root, capacity);
        return rc != 0 ? rc : bp__view_refresh(b, __func__);
    }
    if (b->composite != NULL) return bp__composite_set_capacity(b, capacity);
    if (capacity > b->region.length) {
        rc = move_to_new_region(b, capacity, b->head.capacity);
        if (BP__UNLIKELY(rc != 0)) return rc;
    } else if (capacity < b->head.capacity && b->region.kind != BP__KIND_HUGE &&
               b->region.kind != BP__KIND_WRAPPED && capacity <= b->region.length / 2) {
        /* A big shrink gives the rest of the region back: move to a smaller one (as Netty's
         * reallocation does). A small one keeps the region and just lowers the capacity, and
         * so does any shrink of a huge or a wrapped region. */
        rc = move_to_new_region(b, capacity, capacity);
        if (BP__UNLIKELY(rc != 0)) return rc;
    }
    b->head.capacity = capacity;
    if (b->head.writer_index > capacity) {
        b->head.writer_index = capacity;
        if (b->head.reader_index > capacity) b->head.reader_index = capacity;
    }
    return 0;
}

static void shift_marks_down(bp_buf *b, size_t by)
{
    b->head.marked_reader_index = b->head.marked_reader_index > by ? b->head.marked_reader_index - by : 0;
    b->head.marked_writer_index = b->head.marked_writer_index > by ? b->head.marked_writer_index - by : 0;
}

static int discard(bp_buf *b)
{
    size_t reader = b->head.reader_index, readable = b->head.writer_index - reader;
    if (reader == 0) return 0;
    if (b->composite != NULL) {
        bp__composite_discard(b, false);
        return 0;
    }
    int rc = bp__bytes_copy(b, 0, b, reader, readable); /* fails only for a view of a composite */
    if (BP__UNLIKELY(rc != 0)) return rc;
    shift_marks_down(b, reader);
    b->head.reader_index = 0;
    b->head.writer_index = readable;
    return 0;
}

/* Whether a discard through b would change bytes or indices someone else relies on (Netty's
 * decoders discard only at refCnt 1): the count b's references are (its own, or a plain
 * view's owner's) above 1, or a view other than b showing the same memory; then up the chain
 * of retained views, each of which must be the only hold on what it was made from. */
static bool bytes_shared(const bp_buf *b)
{
    for (;;) {
        const bp_buf *holder = owns_count(b) ? b : b->count_owner;
        if ((bp__refcnt(holder) & BP__REFCNT_MASK) != 1) return true;
        /* holder's plain views: b itself may be one of them, no other may */
        if (holder->views != NULL && (holder->views != b || b->next_view != NULL)) return true;
        if (holder->root == NULL) return false; /* a root or a composite */
        if (!bp__generation_holds(holder->held, holder->held_generation)) return true;
        b = holder->held;
    }
}

static int refuse_shared(const bp_buf *b)
{
    return BP__UNLIKELY(bytes_shared(b)) ? BP_ESHARED : 0; /* not misuse: no report */
}

int bp_discard_read_bytes(bp_buf *b)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (b->head.reader_index == 0) return 0;
    rc = refuse_shared(b);
    return rc != 0 ? rc : discard(b);
}

int bp_discard_some_read_bytes(bp_buf *b)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    size_t reader = b->head.reader_index;
    bool due = b->composite != NULL ? bp__composite_discardable(b, true) > 0
                                    : reader > 0 && (reader == b->head.writer_index || reader >= b->head.capacity / 2);
    if (!due) return 0;
    rc = refuse_shared(b);
    if (rc != 0) return rc;
    if (b->composite != NULL) bp__composite_discard(b, true);
    else return discard(b);
    return 0;
}

void *bp_reserve(bp_buf *b, size_t n, int *err)
{
    int rc = bp__check_live(b, __func__);
    uint8_t *p = NULL;
    if (rc == 0) rc = bp__ensure_writable(b, n, __func__);
    if (rc == 0) p = bp__contiguous(b) ? b->head.memory + b->head.writer_index : bp__scattered_reserve(b, n, __func__, &rc);
    if (err != NULL) *err = rc;
    return p;
}

int bp_commit(bp_buf *b, size_t n)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(n > b->head.capacity - b->head.writer_index))
        return bp__misuse(BP_ERANGE, __func__, "committing %zu bytes with only %zu writable", n,
                          b->head.capacity - b->head.writer_index);
    b->head.writer_index += n;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * bool, 24-bit, zeros
 * ------------------------------------------------------------------------------------- */

/* Booleans go through the slow halves, which report misuse under the boolean function's
 * own name (the u8 functions would report theirs). */
int bp_get_bool(const bp_buf *b, size_t index, int *out)
{
    uint8_t v = 0;
    int rc = bp__get_slow(b, index, out != NULL ? &v : NULL, 1, __func__);
    if (rc == 0) *out = v != 0;
    return rc;
}

int bp_set_bool(bp_buf *b, size_t index, int value)
{
    uint8_t v = value ? 1 : 0;
    return bp__set_slow(b, index, &v, 1, __func__);
}

int bp_read_bool(bp_buf *b, int *out)
{
    uint8_t v = 0;
    int rc = bp__read_slow(b, out != NULL ? &v : NULL, 1, __func__);
    if (rc == 0) *out = v != 0;
    return rc;
}

int bp_write_bool(bp_buf *b, int value)
{
    uint8_t v = value ? 1 : 0;
    return bp__write_slow(b, &v, 1, __func__);
}

static uint32_t load_u24(const uint8_t *p, bool big_endian)
{
    return big_endian ? (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2]
                      : (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static void store_u24(uint8_t *p, uint32_t v, bool big_endian)
{
    p[big_endian ? 0 : 2] = (uint8_t)(v >> 16);
    p[1] = (uint8_t)(v >> 8);
    p[big_endian ? 2 : 0] = (uint8_t)v;
}

static int32_t sign_extend_24(uint32_t v) { return (int32_t)(v << 8) >> 8; }

static int get_u24(const bp_buf *b, size_t index, uint32_t *out, bool big_endian, const char *func)
{
    int rc = bp__check_live(b, func);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(out == NULL)) return bp__misuse(BP_EINVAL, func, "out is NULL");
    rc = bp__check_index(b, index, 3, func);
    if (BP__UNLIKELY(rc != 0)) return rc;
    uint8_t bytes[3];
    bp__bytes_out(b, index, bytes, 3);
    *out = load_u24(bytes, big_endian);
    return 0;
}

static int set_u24(bp_buf *b, size_t index, uint32_t v, bool big_endian, const char *func)
{
    int rc = bp__check_live(b, func);
    if (BP__UNLIKELY(rc != 0)) return rc;
    rc = bp__check_index(b, index, 3, func);
    if (BP__UNLIKELY(rc != 0)) return rc;
    uint8_t bytes[3];
    store_u24(bytes, v, big_endian);
    bp__bytes_in(b, index, bytes, 3);
    return 0;
}

static int read_u24(bp_buf *b, uint32_t *out, bool big_endian, const char *func)
{
    int rc = bp__check_live(b, func);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(out == NULL)) return bp__misuse(BP_EINVAL, func, "out is NULL");
    rc = bp__check_readable(b, 3, func);
    if (BP__UNLIKELY(rc != 0)) return rc;
    uint8_t bytes[3];
    bp__bytes_out(b, b->head.reader_index, bytes, 3);
    *out = load_u24(bytes, big_endian);
    b->head.reader_index += 3;
    return 0;
}

static int write_u24(bp_buf *b, uint32_t v, bool big_endian, const char *func)
{
    int rc = bp__check_live(b, func);
    if (BP__UNLIKELY(rc != 0)) return rc;
    rc = bp__ensure_writable(b, 3, func);
    if (BP__UNLIKELY(rc != 0)) return rc;
    uint8_t bytes[3];
    store_u24(bytes, v, big_endian);
    bp__bytes_in(b, b->head.writer_index, bytes, 3);
    b->head.writer_index += 3;
    return 0;
}

int bp_get_u24(const bp_buf *b, size_t index, uint32_t *out) { return get_u24(b, index, out, true, __func__); }
int bp_get_u24_le(const bp_buf *b, size_t index, uint32_t *out) { return get_u24(b, index, out, false, __func__); }
int bp_set_u24(bp_buf *b, size_t index, uint32_t v) { return set_u24(b, index, v, true, __func__); }
int bp_set_u24_le(bp_buf *b, size_t index, uint32_t v) { return set_u24(b, index, v, false, __func__); }
int bp_read_u24(bp_buf *b, uint32_t *out) { return read_u24(b, out, true, __func__); }
int bp_read_u24_le(bp_buf *b, uint32_t *out) { return read_u24(b, out, false, __func__); }
int bp_write_u24(bp_buf *b, uint32_t v) { return write_u24(b, v, true, __func__); }
int bp_write_u24_le(bp_buf *b, uint32_t v) { return write_u24(b, v, false, __func__); }

int bp_get_i24(const bp_buf *b, size_t index, int32_t *out)
{
    uint32_t v = 0;
    int rc = get_u24(b, index, out ? &v : NULL, true, __func__);
    if (rc == 0) *out = sign_extend_24(v);
    return rc;
}

int bp_get_i24_le(const bp_buf *b, size_t index, int32_t *out)
{
    uint32_t v = 0;
    int rc = get_u24(b, index, out ? &v : NULL, false, __func__);
    if (rc == 0) *out = sign_extend_24(v);
    return rc;
}

int bp_read_i24(bp_buf *b, int32_t *out)
{
    uint32_t v = 0;
    int rc = read_u24(b, out ? &v : NULL, true, __func__);
    if (rc == 0) *out = sign_extend_24(v);
    return rc;
}

int bp_read_i24_le(bp_buf *b, int32_t *out)
{
    uint32_t v = 0;
    int rc = read_u24(b, out ? &v : NULL, false, __func__);
    if (rc == 0) *out = sign_extend_24(v);
    return rc;
}

int bp_set_zero(bp_buf *b, size_t index, size_t n)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    rc = bp__check_index(b, index, n, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    bp__bytes_fill(b, index, 0, n);
    return 0;
}

int bp_write_zero(bp_buf *b, size_t n)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    rc = bp__ensure_writable(b, n, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    bp__bytes_fill(b, b->head.writer_index, 0, n);
    b->head.writer_index += n;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Between buffers
 * ------------------------------------------------------------------------------------- */

/* Whether growing dst for n more bytes could move, free or write memory behind src's n
 * readable bytes. Growing a root moves it (freeing its old region) or extends it into its
 * region's unused end; growing a composite appends a fresh component, or consolidates when
 * its table is full, releasing every component (perhaps the last hold on src). */
static bool growth_touches_source(const bp_buf *dst, const bp_buf *src, size_t n)
{
    size_t reader = src->head.reader_index;
    if (bp__contiguous(dst)) {
        const bp_buf *root = dst->root != NULL ? dst->root : dst;
        if (bp__contiguous(src)) return (src->root != NULL ? src->root : src) == root;
        return bp__ranges_overlap(root, 0, root->head.capacity, src, reader, n);
    }
    if (bp__composite_growth_merges(dst)) return true;
    size_t writer = dst->head.writer_index, capacity = dst->head.capacity;
    return writer < capacity && bp__ranges_overlap(dst, writer, capacity - writer, src, reader, n);
}

/* A transfer whose growth could change src's bytes under it: they are copied out first.
 * src's reader index moves before dst grows, since a consolidation may end src. */
static BP__NOINLINE int grow_after_copying_source(bp_buf *dst, bp_buf *src, size_t n, const char *func)
{
    uint8_t small[BP__SMALL_COPY];
    uint8_t *copy = n <= sizeof small ? small : malloc(n);
    if (copy == NULL) return BP_ENOMEM;
    size_t reader = src->head.reader_index;
    bp__bytes_out(src, reader, copy, n);
    src->head.reader_index = reader + n;
    int rc = bp__grow_for_write(dst, n, func);
    if (rc == 0) {
        bp__bytes_in(dst, dst->head.writer_index, copy, n);
        dst->head.writer_index += n;
    } else {
        src->head.reader_index = reader;
    }
    if (copy != small) free(copy);
    return rc;
}

static int transfer(bp_buf *dst, bp_buf *src, size_t n, const char *func)
{
    int rc = bp__check_live(dst, func);
    if (rc == 0) rc = bp__check_live(src, func);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(dst == src)) return bp__misuse(BP_EINVAL, func, "source and destination are the same buffer");
    rc = bp__check_readable(src, n, func);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(n > dst->head.capacity - dst->head.writer_index)) {
        if (BP__UNLIKELY(n > dst->head.max_capacity - dst->head.writer_index))
            return bp__grow_for_write(dst, n, func); /* reports it */
        if (growth_touches_source(dst, src, n)) return grow_after_copying_source(dst, src, n, func);
        rc = bp__grow_for_write(dst, n, func);
        if (BP__UNLIKELY(rc != 0)) return rc;
        /* src's memory lies apart from everything the growth moved or added */
        bp__bytes_copy_disjoint(dst, dst->head.writer_index, src, src->head.reader_index, n);
    } else {
        rc = bp__bytes_copy(dst, dst->head.writer_index, src, src->head.reader_index, n);
        if (BP__UNLIKELY(rc != 0)) return rc;
    }
    dst->head.writer_index += n;
    src->head.reader_index += n;
    return 0;
}

int bp_write_buf(bp_buf *dst, bp_buf *src, size_t n) { return transfer(dst, src, n, __func__); }
int bp_read_buf(bp_buf *src, bp_buf *dst, size_t n) { return transfer(dst, src, n, __func__); }

static int copy_between(bp_buf *dst, size_t dst_index, const bp_buf *src, size_t src_index, size_t n,
                        const char *func)
{
    int rc = bp__check_live(dst, func);
    if (rc == 0) rc = bp__check_live(src, func);
    if (rc == 0) rc = bp__check_index(src, src_index, n, func);
    if (rc == 0) rc = bp__check_index(dst, dst_index, n, func);
    if (BP__UNLIKELY(rc != 0)) return rc;
    return bp__bytes_copy(dst, dst_index, src, src_index, n);
}

int bp_get_buf(const bp_buf *src, size_t index, bp_buf *dst, size_t dst_index, size_t n)
{
    return copy_between(dst, dst_index, src, index, n, __func__);
}

int bp_set_buf(bp_buf *dst, size_t index, const bp_buf *src, size_t src_index, size_t n)
{
    return copy_between(dst, index, src, src_index, n, __func__);
}

/* ---------------------------------------------------------------------------------------
 * Derived buffers
 * ------------------------------------------------------------------------------------- */

uint64_t bp__generation_record(bp_buf *b)
{
    /* Loads and stores, no locked instruction, but atomic ones: threads that each hold a
     * reference on b may make retained views of it at once (all storing the same values),
     * and releases of their references read the tag meanwhile. */
    uint64_t generation = bp__generation(b);
    if (!(generation & 1)) __atomic_store_n(&b->generation, ++generation, __ATOMIC_RELAXED);
    if (!(bp__refcnt(b) & BP__REFCNT_INDIRECT) && BP__TAG_LOAD(b) != BP__TAG_NONE)
        BP__TAG_STORE(b, BP__TAG_NONE); /* released through deallocate, which ends it */
    return generation;
}

/* Whether what v shows - and what it, or the retained view whose count it shares, holds -
 * is still the buffer the view was made from: one released behind its back may already be
 * someone else's. */
static bool view_intact(const bp_buf *v)
{
    if (!bp__generation_holds(v->root, v->root_generation)) return false;
    const bp_buf *holder = v->count_owner != NULL ? v->count_owner : v;
    return holder->root == NULL || bp__generation_holds(holder->held, holder->held_generation);
}

size_t bp__view_capacity_now(const bp_buf *v)
{
    size_t root_capacity = v->root->head.capacity;
    if (v->view_length == SIZE_MAX) return root_capacity;
    size_t room = root_capacity > v->view_offset ? root_capacity - v->view_offset : 0;
    return v->view_length < room ? v->view_length : room;
}

bool bp__view_intact(const bp_buf *v) { return view_intact(v); }

/* Brings a view's head up to date with its root (which the caller knows is intact). */
static void view_follow(bp_buf *v)
{
    bp_buf *root = v->root;
    v->head.memory = root->composite == NULL ? root->head.memory + v->view_offset : NULL;
    v->head.capacity = bp__view_capacity_now(v);
    v->head.max_capacity = v->view_length == SIZE_MAX ? root->head.max_capacity : v->head.capacity;
    if (v->head.writer_index > v->head.capacity) v->head.writer_index = v->head.capacity;
    if (v->head.reader_index > v->head.writer_index) v->head.reader_index = v->head.writer_index;
}

/* Brings a view's head up to date with its root; false if the root is gone. */
static bool view_resolve(bp_buf *v)
{
    if (!view_intact(v)) return false;
    view_follow(v);
    return true;
}

int bp__view_refresh(bp_buf *b, const char *func)
{
    if (BP__LIKELY(view_resolve(b))) return 0;
    return bp__misuse(BP_EFREED, func, "buffer %p: the buffer it derives from was released", (void *)b);
}

void bp__view_sync(const bp_buf *b)
{
    bp_buf *v = (bp_buf *)b; /* the head is a cache of the root */
    uint32_t count = bp__refcnt(v);
    if ((count & BP__REFCNT_INDIRECT) && (count & BP__REFCNT_MASK) != 0 && v->root != NULL) view_resolve(v);
}


void *bp__data_slow(bp_buf *b, size_t index)
{
    if (b == NULL) return NULL;
    uint32_t count = bp__refcnt(b);
    if (!(count & BP__REFCNT_INDIRECT) || (count & BP__REFCNT_MASK) == 0 || b->root == NULL || !view_resolve(b))
        return NULL; /* NULL, released, a composite, or a view whose root is gone */
    return index <= b->head.capacity && b->head.memory != NULL ? b->head.memory + index : NULL;
}

/* A plain view into its count owner's list, and out of it (both O(1)). */
static void link_view(bp_buf *owner, bp_buf *v)
{
    v->count_owner = owner;
    v->prev_view = NULL;
    v->next_view = owner->views;
    if (owner->views != NULL) owner->views->prev_view = v;
    owner->views = v;
}

static void unlink_view(bp_buf *v)
{
    bp_buf *owner = v->count_owner;
    if (v->prev_view != NULL) v->prev_view->next_view = v->next_view;
    else owner->views = v->next_view;
    if (v->next_view != NULL) v->next_view->prev_view = v->prev_view;
}

enum { VIEW_RETAINED = 1, VIEW_DUPLICATE = 2, VIEW_READ = 4 };

/* A view of b: a slice of [index, index + length) (VIEW_READ: of `length` bytes at the
 * reader index, which moves past them) or a duplicate of all of b (index and length unused). */
static bp_buf *make_view(bp_buf *b, size_t index, size_t length, unsigned kind, const char *func, int *err)
{
    bool retained = kind & VIEW_RETAINED;
    int rc = bp__check_live(b, func);
    if (rc == 0 && !(kind & VIEW_DUPLICATE))
        rc = kind & VIEW_READ ? bp__check_readable(b, length, func) : bp__check_index(b, index, length, func);
    /* A retained view holds a reference on what it is made from (Netty's parent): b, or the
     * buffer whose count a plain b shares. Plain views share that count. */
    bp_buf *holder = rc == 0 ? count_holder(b) : NULL;
    if (rc == 0 && retained) rc = retain_named(holder, 1, func);
    bp__thread_state *ts = rc == 0 ? bp__thread_state_get(b->allocator) : NULL;
    bp_buf *v = ts != NULL ? bp__thread_object_get(ts) : NULL;
    if (rc == 0 && v == NULL) {
        rc = BP_ENOMEM;
        if (retained) release_named(holder, 1, func);
    }
    if (err != NULL) *err = rc;
    if (rc != 0) return NULL;

    bp_buf *root = b->root != NULL ? b->root : b;
    size_t base = b->root != NULL ? b->view_offset : 0;
    v->root = root;
    v->root_generation = bp__generation_record(root);
    v->allocator = b->allocator;
    v->views = NULL;
    v->next_free = NULL;
    if (kind & VIEW_DUPLICATE) {
        v->view_offset = base;
        v->view_length = b->root != NULL ? b->view_length : SIZE_MAX; /* a duplicate of a slice is that slice */
        v->head.reader_index = b->head.reader_index;
        v->head.writer_index = b->head.writer_index;
    } else {
        if (kind & VIEW_READ) {
            index = b->head.reader_index;
            b->head.reader_index += length;
        }
        v->view_offset = base + index;
        v->view_length = length;
        v->head.reader_index = 0;
        v->head.writer_index = length;
    }
    v->head.marked_reader_index = v->head.reader_index;
    v->head.marked_writer_index = v->head.writer_index;
    BP__REFCNT_STORE(v, BP__REFCNT_INDIRECT | 1u, __ATOMIC_RELAXED);
    if (retained) {
        v->count_owner = v->next_view = v->prev_view = NULL;
        v->held = holder;
        v->held_generation = bp__generation_record(holder);
    } else {
        v->held = NULL;
        link_view(holder, v);
    }
    view_follow(v);
    bp__view_ledger(b->allocator, ts, 1);
    return v;
}

bp_buf *bp_slice(bp_buf *b, size_t index, size_t length, int *err)
{
    return make_view(b, index, length, 0, __func__, err);
}

bp_buf *bp_retained_slice(bp_buf *b, size_t index, size_t length, int *err)
{
    return make_view(b, index, length, VIEW_RETAINED, __func__, err);
}

bp_buf *bp_duplicate(bp_buf *b, int *err) { return make_view(b, 0, 0, VIEW_DUPLICATE, __func__, err); }

bp_buf *bp_retained_duplicate(bp_buf *b, int *err)
{
    return make_view(b, 0, 0, VIEW_RETAINED | VIEW_DUPLICATE, __func__, err);
}

bp_buf *bp_read_slice(bp_buf *b, size_t length, int *err)
{
    return make_view(b, 0, length, VIEW_READ, __func__, err);
}

bp_buf *bp_read_retained_slice(bp_buf *b, size_t length, int *err)
{
    return make_view(b, 0, length, VIEW_RETAINED | VIEW_READ, __func__, err);
}

int bp_view_free(bp_buf *v)
{
    if (BP__UNLIKELY(v == NULL)) return bp__misuse(BP_EINVAL, __func__, "view is NULL");
    uint32_t count = bp__refcnt(v);
    if (BP__UNLIKELY(count == 0))
        return bp__misuse(BP_EFREED, __func__, "view %p is gone already (freed, or its original released)",
                          (void *)v);
    if (BP__UNLIKELY(!(count & BP__REFCNT_INDIRECT) || v->root == NULL || v->count_owner == NULL))
        return bp__misuse(BP_EINVAL, __func__,
                          "buffer %p is not a plain view (roots, composites and retained views end with bp_release)",
                          (void *)v);
    unlink_view(v);
    end_view(bp__thread_state_get(v->allocator), v);
    return 0;
}

bp_buf *bp_copy(const bp_buf *b, size_t index, size_t length, int *err)
{
    int rc = bp__check_live(b, __func__);
    if (rc == 0) rc = bp__check_index(b, index, length, __func__);
    bp_buf *copy = NULL;
    if (rc == 0) {
        size_t max = b->head.max_capacity > length ? b->head.max_capacity : length;
        copy = bp_alloc_ex(b->allocator, length, max, &rc);
    }
    if (copy != NULL) {
        bp__bytes_out(b, index, copy->head.memory, length);
        copy->head.writer_index = length;
    }
    if (err != NULL) *err = rc;
    return copy;
}

int bp_touch(bp_buf *b, const char *hint)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    bp_buf *root = b->root != NULL ? b->root : b;
    if (root->leak != NULL) bp__leak_note(&root->allocator->leak, root->leak, "touch", hint);
    return 0;
}
