/*
 * ByteBuf operations on bp_buf: allocation and release through the thread's recycler and
 * arena, reference counting, indices, growth, typed and bulk access. Every public function
 * checks its arguments first and changes nothing when it fails.
 */
#include "buf.h"

#include "allocator.h"

#include <string.h>

/* ---------------------------------------------------------------------------------------
 * Checks shared by every operation
 * ------------------------------------------------------------------------------------- */

static inline uint32_t refcnt_of(const bp_buf *b)
{
    return BP__REFCNT_LOAD(b, __ATOMIC_ACQUIRE);
}

/* 0 when b is a live buffer; otherwise reports and returns the error. */
static inline int check_live(const bp_buf *b, const char *func)
{
    if (BP_UNLIKELY(b == NULL)) return bp__misuse(BP_EINVAL, func, "buffer is NULL");
    if (BP_UNLIKELY(refcnt_of(b) == 0))
        return bp__misuse(BP_EFREED, func, "buffer %p already released (refCnt: 0)", (const void *)b);
    return 0;
}

/* 0 when [index, index + n) lies inside the capacity. */
static inline int check_index(const bp_buf *b, size_t index, size_t n, const char *func)
{
    if (BP_UNLIKELY(index > b->head.capacity || n > b->head.capacity - index))
        return bp__misuse(BP_ERANGE, func, "index %zu + length %zu exceeds capacity %zu", index, n,
                          b->head.capacity);
    return 0;
}

static inline int check_readable(const bp_buf *b, size_t n, const char *func)
{
    if (BP_UNLIKELY(n > b->head.writer_index - b->head.reader_index))
        return bp__misuse(BP_ERANGE, func, "reading %zu bytes with only %zu readable (readerIndex %zu, writerIndex %zu)",
                          n, b->head.writer_index - b->head.reader_index, b->head.reader_index, b->head.writer_index);
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Allocation and reference counting
 * ------------------------------------------------------------------------------------- */

bp_buf *bp_alloc_ex(bp_allocator *a, size_t capacity, size_t max_capacity, int *err)
{
    int rc;
    if (BP_UNLIKELY(a == NULL)) {
        rc = bp__misuse(BP_EINVAL, __func__, "allocator is NULL");
        goto fail;
    }
    if (BP_UNLIKELY(capacity > BP_CAPACITY_LIMIT || max_capacity > BP_CAPACITY_LIMIT)) {
        rc = bp__misuse(BP_EOVERFLOW, __func__, "capacity %zu / max capacity %zu above the limit %zu",
                        capacity, max_capacity, BP_CAPACITY_LIMIT);
        goto fail;
    }
    if (BP_UNLIKELY(capacity > max_capacity)) {
        rc = bp__misuse(BP_EINVAL, __func__, "initialCapacity %zu exceeds maxCapacity %zu", capacity,
                        max_capacity);
        goto fail;
    }
    bp__thread_state *ts = bp__thread_state_get(a);
    if (BP_UNLIKELY(ts == NULL)) {
        rc = BP_ENOMEM;
        goto fail;
    }
    bp_buf *b = bp__buf_object_get(ts);
    if (BP_UNLIKELY(b == NULL)) {
        rc = BP_ENOMEM;
        goto fail;
    }
    rc = bp__region_alloc_cached(a, ts, capacity, &b->region);
    if (BP_UNLIKELY(rc != 0)) {
        bp__buf_object_put(ts, a, b);
        goto fail;
    }
    b->head.memory = b->region.memory;
    b->head.reader_index = 0;
    b->head.writer_index = 0;
    b->head.capacity = capacity;
    b->head.max_capacity = max_capacity;
    b->allocator = a;
    b->owner = ts;
    b->next_free = NULL;
    BP__REFCNT_STORE(b, 1, __ATOMIC_RELAXED);
    bp__counter_add(&ts->buffers_allocated, 1);
    if (err != NULL) *err = 0;
    return b;

fail:
    if (err != NULL) *err = rc;
    return NULL;
}

bp_buf *bp_alloc(bp_allocator *a, size_t capacity)
{
    size_t max_capacity = capacity > BP_DEFAULT_MAX_CAPACITY ? capacity : BP_DEFAULT_MAX_CAPACITY;
    return bp_alloc_ex(a, capacity, max_capacity, NULL);
}

/* The last reference is gone: memory back to its arena, the object to this thread. */
BP_INLINE void deallocate(bp_buf *b)
{
    bp_allocator *a = b->allocator;
    bp__thread_state *ts = bp__thread_state_get(a);
    if (BP_LIKELY(ts != NULL)) bp__counter_add(&ts->buffers_released, 1);
    /* Released away from home: queued for the owner's remote stack, no lock. */
    if (BP_UNLIKELY(b->owner != ts) && b->region.kind != BP__KIND_MALLOC && ts != NULL) {
        bp__remote_release(ts, b->owner, b);
        return;
    }
    bp__region_free_cached(a, ts, &b->region);
    b->head.memory = NULL;
    b->region.memory = NULL;
    bp__buf_object_put(ts, a, b);
}

int bp_retain_n(bp_buf *b, uint32_t n)
{
    if (BP_UNLIKELY(b == NULL)) return bp__misuse(BP_EINVAL, __func__, "buffer is NULL");
    if (BP_UNLIKELY(n == 0)) return bp__misuse(BP_EINVAL, __func__, "increment is 0");
    uint32_t count = BP__REFCNT_LOAD(b, __ATOMIC_RELAXED);
    do {
        if (BP_UNLIKELY(count == 0))
            return bp__misuse(BP_EFREED, __func__, "buffer %p already released (refCnt: 0, increment: %u)",
                              (void *)b, n);
        if (BP_UNLIKELY(n > (uint32_t)INT32_MAX - count))
            return bp__misuse(BP_EREFCNT, __func__, "refCnt %u + increment %u overflows", count, n);
    } while (!__atomic_compare_exchange_n(&b->head.refcnt, &count, count + n, true, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    return 0;
}

int bp_retain(bp_buf *b) { return bp_retain_n(b, 1); }

int bp_release_n(bp_buf *b, uint32_t n)
{
    if (BP_UNLIKELY(b == NULL)) return bp__misuse(BP_EINVAL, __func__, "buffer is NULL");
    if (BP_UNLIKELY(n == 0)) return bp__misuse(BP_EINVAL, __func__, "decrement is 0");
    uint32_t count = BP__REFCNT_LOAD(b, __ATOMIC_ACQUIRE);
    /* Sole owner: nobody else holds a reference that could change the count, so a plain
     * store will do (DPDK's trick; it saves a locked instruction per buffer). */
    if (BP_LIKELY(count == n)) {
        BP__REFCNT_STORE(b, 0, __ATOMIC_RELAXED);
        deallocate(b);
        return 1;
    }
    do {
        if (BP_UNLIKELY(count == 0))
            return bp__misuse(BP_EFREED, __func__, "buffer %p already released (refCnt: 0, decrement: %u)",
                              (void *)b, n);
        if (BP_UNLIKELY(n > count))
            return bp__misuse(BP_EREFCNT, __func__, "decrement %u exceeds refCnt %u", n, count);
    } while (!__atomic_compare_exchange_n(&b->head.refcnt, &count, count - n, true, __ATOMIC_ACQ_REL,
                                          __ATOMIC_ACQUIRE));
    if (count == n) {
        deallocate(b);
        return 1;
    }
    return 0;
}

int bp_release(bp_buf *b) { return bp_release_n(b, 1); }

int bp_refcnt(const bp_buf *b)
{
    if (b == NULL) return bp__misuse(BP_EINVAL, __func__, "buffer is NULL");
    return (int)refcnt_of(b);
}

bp_allocator *bp_buf_allocator(const bp_buf *b) { return b ? b->allocator : NULL; }

/* ---------------------------------------------------------------------------------------
 * Indices and capacity
 * ------------------------------------------------------------------------------------- */

int bp_set_reader_index(bp_buf *b, size_t index)
{
    int rc = check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(index > b->head.writer_index))
        return bp__misuse(BP_ERANGE, __func__, "readerIndex %zu exceeds writerIndex %zu", index,
                          b->head.writer_index);
    b->head.reader_index = index;
    return 0;
}

int bp_set_writer_index(bp_buf *b, size_t index)
{
    int rc = check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(index < b->head.reader_index || index > b->head.capacity))
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
static int move_to_new_region(bp_buf *b, size_t new_capacity)
{
    bp__thread_state *ts = bp__thread_state_get(b->allocator);
    if (BP_UNLIKELY(ts == NULL)) return BP_ENOMEM;
    bp__region fresh;
    int rc = bp__region_alloc_cached(b->allocator, ts, new_capacity, &fresh);
    if (BP_UNLIKELY(rc != 0)) return rc;
    memcpy(fresh.memory, b->head.memory, b->head.capacity);
    bp__region_free_cached(b->allocator, ts, &b->region);
    b->region = fresh;
    b->head.memory = fresh.memory;
    return 0;
}

static BP_NOINLINE int grow_for_write(bp_buf *b, size_t n, const char *func)
{
    if (BP_UNLIKELY(n > b->head.max_capacity - b->head.writer_index))
        return bp__misuse(BP_ECAPACITY, func, "writerIndex %zu + minWritableBytes %zu exceeds maxCapacity %zu",
                          b->head.writer_index, n, b->head.max_capacity);
    /* Slack inside the region first: growing there moves nothing. */
    size_t region_limit = b->region.length < b->head.max_capacity ? b->region.length : b->head.max_capacity;
    size_t fast_writable = region_limit - b->head.writer_index;
    size_t new_capacity = fast_writable >= n
                              ? b->head.writer_index + fast_writable
                              : bp__calculate_new_capacity(b->head.writer_index + n, b->head.max_capacity);
    if (new_capacity > b->region.length) {
        int rc = move_to_new_region(b, new_capacity);
        if (BP_UNLIKELY(rc != 0)) return rc;
    }
    b->head.capacity = new_capacity;
    return 0;
}

static inline int ensure_writable(bp_buf *b, size_t n, const char *func)
{
    if (BP_LIKELY(n <= b->head.capacity - b->head.writer_index)) return 0;
    return grow_for_write(b, n, func);
}

int bp_ensure_writable(bp_buf *b, size_t n)
{
    int rc = check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    return ensure_writable(b, n, __func__);
}

/* ---------------------------------------------------------------------------------------
 * Typed access: the slow halves of the inline functions in bytepool.h. Each reports the
 * first problem in the same order as every other call: buffer NULL, released, out NULL,
 * then the range.
 * ------------------------------------------------------------------------------------- */

int bp__get_fail(const bp_buf *b, size_t index, size_t width, int out_is_null, const char *func)
{
    int rc = check_live(b, func);
    if (rc != 0) return rc;
    if (out_is_null) return bp__misuse(BP_EINVAL, func, "out is NULL");
    rc = check_index(b, index, width, func);
    BP_ASSERT(rc != 0);
    return rc;
}

int bp__set_fail(const bp_buf *b, size_t index, size_t width, const char *func)
{
    int rc = check_live(b, func);
    if (rc != 0) return rc;
    rc = check_index(b, index, width, func);
    BP_ASSERT(rc != 0);
    return rc;
}

int bp__read_fail(const bp_buf *b, size_t width, int out_is_null, const char *func)
{
    int rc = check_live(b, func);
    if (rc != 0) return rc;
    if (out_is_null) return bp__misuse(BP_EINVAL, func, "out is NULL");
    rc = check_readable(b, width, func);
    BP_ASSERT(rc != 0);
    return rc;
}

int bp__write_prepare(bp_buf *b, size_t width, const char *func)
{
    int rc = check_live(b, func);
    if (rc != 0) return rc;
    return ensure_writable(b, width, func);
}

/* ---------------------------------------------------------------------------------------
 * Bulk bytes
 * ------------------------------------------------------------------------------------- */

int bp_get_bytes(const bp_buf *b, size_t index, void *dst, size_t n)
{
    int rc = check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(dst == NULL && n > 0)) return bp__misuse(BP_EINVAL, __func__, "dst is NULL");
    rc = check_index(b, index, n, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (n > 0) memcpy(dst, b->head.memory + index, n);
    return 0;
}

int bp_set_bytes(bp_buf *b, size_t index, const void *src, size_t n)
{
    int rc = check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(src == NULL && n > 0)) return bp__misuse(BP_EINVAL, __func__, "src is NULL");
    rc = check_index(b, index, n, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (n > 0) memmove(b->head.memory + index, src, n);
    return 0;
}

int bp_read_bytes(bp_buf *b, void *dst, size_t n)
{
    int rc = check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(dst == NULL && n > 0)) return bp__misuse(BP_EINVAL, __func__, "dst is NULL");
    rc = check_readable(b, n, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (n > 0) memcpy(dst, b->head.memory + b->head.reader_index, n);
    b->head.reader_index += n;
    return 0;
}

int bp_write_bytes(bp_buf *b, const void *src, size_t n)
{
    int rc = check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(src == NULL && n > 0)) return bp__misuse(BP_EINVAL, __func__, "src is NULL");
    rc = ensure_writable(b, n, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (n > 0) memmove(b->head.memory + b->head.writer_index, src, n);
    b->head.writer_index += n;
    return 0;
}
