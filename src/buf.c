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
    return atomic_load_explicit(&((bp_buf *)b)->refcnt, memory_order_acquire);
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
    if (BP_UNLIKELY(index > b->capacity || n > b->capacity - index))
        return bp__misuse(BP_ERANGE, func, "index %zu + length %zu exceeds capacity %zu", index, n,
                          b->capacity);
    return 0;
}

static inline int check_readable(const bp_buf *b, size_t n, const char *func)
{
    if (BP_UNLIKELY(n > b->writer_index - b->reader_index))
        return bp__misuse(BP_ERANGE, func, "reading %zu bytes with only %zu readable (readerIndex %zu, writerIndex %zu)",
                          n, b->writer_index - b->reader_index, b->reader_index, b->writer_index);
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
    b->memory = b->region.memory;
    b->reader_index = 0;
    b->writer_index = 0;
    b->capacity = capacity;
    b->max_capacity = max_capacity;
    b->allocator = a;
    b->next_free = NULL;
    atomic_store_explicit(&b->refcnt, 1, memory_order_relaxed);
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
    bp__region_free_cached(a, ts, &b->region);
    b->memory = NULL;
    b->region.memory = NULL;
    if (BP_LIKELY(ts != NULL))
        bp__counter_add(&ts->buffers_released, 1);
    bp__buf_object_put(ts, a, b);
}

int bp_retain_n(bp_buf *b, uint32_t n)
{
    if (BP_UNLIKELY(b == NULL)) return bp__misuse(BP_EINVAL, __func__, "buffer is NULL");
    if (BP_UNLIKELY(n == 0)) return bp__misuse(BP_EINVAL, __func__, "increment is 0");
    uint32_t count = atomic_load_explicit(&b->refcnt, memory_order_relaxed);
    do {
        if (BP_UNLIKELY(count == 0))
            return bp__misuse(BP_EFREED, __func__, "buffer %p already released (refCnt: 0, increment: %u)",
                              (void *)b, n);
        if (BP_UNLIKELY(n > (uint32_t)INT32_MAX - count))
            return bp__misuse(BP_EREFCNT, __func__, "refCnt %u + increment %u overflows", count, n);
    } while (!atomic_compare_exchange_weak_explicit(&b->refcnt, &count, count + n,
                                                    memory_order_relaxed, memory_order_relaxed));
    return 0;
}

int bp_retain(bp_buf *b) { return bp_retain_n(b, 1); }

int bp_release_n(bp_buf *b, uint32_t n)
{
    if (BP_UNLIKELY(b == NULL)) return bp__misuse(BP_EINVAL, __func__, "buffer is NULL");
    if (BP_UNLIKELY(n == 0)) return bp__misuse(BP_EINVAL, __func__, "decrement is 0");
    uint32_t count = atomic_load_explicit(&b->refcnt, memory_order_acquire);
    /* Sole owner: nobody else holds a reference that could change the count, so a plain
     * store will do (DPDK's trick; it saves a locked instruction per buffer). */
    if (BP_LIKELY(count == n)) {
        atomic_store_explicit(&b->refcnt, 0, memory_order_relaxed);
        deallocate(b);
        return 1;
    }
    do {
        if (BP_UNLIKELY(count == 0))
            return bp__misuse(BP_EFREED, __func__, "buffer %p already released (refCnt: 0, decrement: %u)",
                              (void *)b, n);
        if (BP_UNLIKELY(n > count))
            return bp__misuse(BP_EREFCNT, __func__, "decrement %u exceeds refCnt %u", n, count);
    } while (!atomic_compare_exchange_weak_explicit(&b->refcnt, &count, count - n,
                                                    memory_order_acq_rel, memory_order_acquire));
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

size_t bp_capacity(const bp_buf *b) { return b ? b->capacity : 0; }
size_t bp_max_capacity(const bp_buf *b) { return b ? b->max_capacity : 0; }
size_t bp_reader_index(const bp_buf *b) { return b ? b->reader_index : 0; }
size_t bp_writer_index(const bp_buf *b) { return b ? b->writer_index : 0; }
size_t bp_readable_bytes(const bp_buf *b) { return b ? b->writer_index - b->reader_index : 0; }
size_t bp_writable_bytes(const bp_buf *b) { return b ? b->capacity - b->writer_index : 0; }

int bp_set_reader_index(bp_buf *b, size_t index)
{
    int rc = check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(index > b->writer_index))
        return bp__misuse(BP_ERANGE, __func__, "readerIndex %zu exceeds writerIndex %zu", index,
                          b->writer_index);
    b->reader_index = index;
    return 0;
}

int bp_set_writer_index(bp_buf *b, size_t index)
{
    int rc = check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(index < b->reader_index || index > b->capacity))
        return bp__misuse(BP_ERANGE, __func__, "writerIndex %zu outside [readerIndex %zu, capacity %zu]",
                          index, b->reader_index, b->capacity);
    b->writer_index = index;
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
    memcpy(fresh.memory, b->memory, b->capacity);
    bp__region_free_cached(b->allocator, ts, &b->region);
    b->region = fresh;
    b->memory = fresh.memory;
    return 0;
}

static BP_NOINLINE int grow_for_write(bp_buf *b, size_t n, const char *func)
{
    if (BP_UNLIKELY(n > b->max_capacity - b->writer_index))
        return bp__misuse(BP_ECAPACITY, func, "writerIndex %zu + minWritableBytes %zu exceeds maxCapacity %zu",
                          b->writer_index, n, b->max_capacity);
    /* Slack inside the region first: growing there moves nothing. */
    size_t region_limit = b->region.length < b->max_capacity ? b->region.length : b->max_capacity;
    size_t fast_writable = region_limit - b->writer_index;
    size_t new_capacity = fast_writable >= n
                              ? b->writer_index + fast_writable
                              : bp__calculate_new_capacity(b->writer_index + n, b->max_capacity);
    if (new_capacity > b->region.length) {
        int rc = move_to_new_region(b, new_capacity);
        if (BP_UNLIKELY(rc != 0)) return rc;
    }
    b->capacity = new_capacity;
    return 0;
}

static inline int ensure_writable(bp_buf *b, size_t n, const char *func)
{
    if (BP_LIKELY(n <= b->capacity - b->writer_index)) return 0;
    return grow_for_write(b, n, func);
}

int bp_ensure_writable(bp_buf *b, size_t n)
{
    int rc = check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    return ensure_writable(b, n, __func__);
}

void *bp_data(bp_buf *b, size_t index)
{
    if (b == NULL || refcnt_of(b) == 0 || index > b->capacity) return NULL;
    return b->memory + index;
}

/* ---------------------------------------------------------------------------------------
 * Typed access
 * ------------------------------------------------------------------------------------- */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#  define BP__HOST_BE 1
#else
#  define BP__HOST_BE 0
#endif

static inline uint8_t swap8(uint8_t v) { return v; }
static inline uint16_t swap16(uint16_t v) { return __builtin_bswap16(v); }
static inline uint32_t swap32(uint32_t v) { return __builtin_bswap32(v); }
static inline uint64_t swap64(uint64_t v) { return __builtin_bswap64(v); }

/* Converts between host order and the buffer's order; big_endian says which that is. */
#define BP__ORDER(bits, v, big_endian) ((big_endian) != BP__HOST_BE ? swap##bits(v) : (v))

/* Defines get/set/read/write for one type. `utype` is the unsigned type of the same width:
 * bytes are moved as it, and the value converted with memcpy (no aliasing tricks). */
#define BP__DEFINE_TYPED(name, type, utype, bits, big_endian)                              \
    static inline type load_##name(const uint8_t *p)                                       \
    {                                                                                      \
        utype raw;                                                                         \
        memcpy(&raw, p, sizeof raw);                                                       \
        raw = BP__ORDER(bits, raw, big_endian);                                            \
        type value;                                                                        \
        memcpy(&value, &raw, sizeof value);                                                \
        return value;                                                                      \
    }                                                                                      \
    static inline void store_##name(uint8_t *p, type value)                                \
    {                                                                                      \
        utype raw;                                                                         \
        memcpy(&raw, &value, sizeof raw);                                                  \
        raw = BP__ORDER(bits, raw, big_endian);                                            \
        memcpy(p, &raw, sizeof raw);                                                       \
    }                                                                                      \
    int bp_get_##name(const bp_buf *b, size_t index, type *out)                            \
    {                                                                                      \
        int rc = check_live(b, __func__);                                                  \
        if (BP_UNLIKELY(rc != 0)) return rc;                                               \
        if (BP_UNLIKELY(out == NULL)) return bp__misuse(BP_EINVAL, __func__, "out is NULL"); \
        rc = check_index(b, index, sizeof(type), __func__);                                \
        if (BP_UNLIKELY(rc != 0)) return rc;                                               \
        *out = load_##name(b->memory + index);                                             \
        return 0;                                                                          \
    }                                                                                      \
    int bp_set_##name(bp_buf *b, size_t index, type value)                                 \
    {                                                                                      \
        int rc = check_live(b, __func__);                                                  \
        if (BP_UNLIKELY(rc != 0)) return rc;                                               \
        rc = check_index(b, index, sizeof(type), __func__);                                \
        if (BP_UNLIKELY(rc != 0)) return rc;                                               \
        store_##name(b->memory + index, value);                                            \
        return 0;                                                                          \
    }                                                                                      \
    int bp_read_##name(bp_buf *b, type *out)                                               \
    {                                                                                      \
        int rc = check_live(b, __func__);                                                  \
        if (BP_UNLIKELY(rc != 0)) return rc;                                               \
        if (BP_UNLIKELY(out == NULL)) return bp__misuse(BP_EINVAL, __func__, "out is NULL"); \
        rc = check_readable(b, sizeof(type), __func__);                                    \
        if (BP_UNLIKELY(rc != 0)) return rc;                                               \
        *out = load_##name(b->memory + b->reader_index);                                   \
        b->reader_index += sizeof(type);                                                   \
        return 0;                                                                          \
    }                                                                                      \
    int bp_write_##name(bp_buf *b, type value)                                             \
    {                                                                                      \
        int rc = check_live(b, __func__);                                                  \
        if (BP_UNLIKELY(rc != 0)) return rc;                                               \
        rc = ensure_writable(b, sizeof(type), __func__);                                   \
        if (BP_UNLIKELY(rc != 0)) return rc;                                               \
        store_##name(b->memory + b->writer_index, value);                                  \
        b->writer_index += sizeof(type);                                                   \
        return 0;                                                                          \
    }

BP__DEFINE_TYPED(u8, uint8_t, uint8_t, 8, 1)
BP__DEFINE_TYPED(i8, int8_t, uint8_t, 8, 1)
BP__DEFINE_TYPED(u16, uint16_t, uint16_t, 16, 1)
BP__DEFINE_TYPED(i16, int16_t, uint16_t, 16, 1)
BP__DEFINE_TYPED(u32, uint32_t, uint32_t, 32, 1)
BP__DEFINE_TYPED(i32, int32_t, uint32_t, 32, 1)
BP__DEFINE_TYPED(u64, uint64_t, uint64_t, 64, 1)
BP__DEFINE_TYPED(i64, int64_t, uint64_t, 64, 1)
BP__DEFINE_TYPED(u16_le, uint16_t, uint16_t, 16, 0)
BP__DEFINE_TYPED(i16_le, int16_t, uint16_t, 16, 0)
BP__DEFINE_TYPED(u32_le, uint32_t, uint32_t, 32, 0)
BP__DEFINE_TYPED(i32_le, int32_t, uint32_t, 32, 0)
BP__DEFINE_TYPED(u64_le, uint64_t, uint64_t, 64, 0)
BP__DEFINE_TYPED(i64_le, int64_t, uint64_t, 64, 0)

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
    if (n > 0) memcpy(dst, b->memory + index, n);
    return 0;
}

int bp_set_bytes(bp_buf *b, size_t index, const void *src, size_t n)
{
    int rc = check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(src == NULL && n > 0)) return bp__misuse(BP_EINVAL, __func__, "src is NULL");
    rc = check_index(b, index, n, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (n > 0) memmove(b->memory + index, src, n);
    return 0;
}

int bp_read_bytes(bp_buf *b, void *dst, size_t n)
{
    int rc = check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(dst == NULL && n > 0)) return bp__misuse(BP_EINVAL, __func__, "dst is NULL");
    rc = check_readable(b, n, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (n > 0) memcpy(dst, b->memory + b->reader_index, n);
    b->reader_index += n;
    return 0;
}

int bp_write_bytes(bp_buf *b, const void *src, size_t n)
{
    int rc = check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(src == NULL && n > 0)) return bp__misuse(BP_EINVAL, __func__, "src is NULL");
    rc = ensure_writable(b, n, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (n > 0) memmove(b->memory + b->writer_index, src, n);
    b->writer_index += n;
    return 0;
}
