/*
 * Composite buffers (Netty's CompositeByteBuf) and the walker every scattered byte goes
 * through.
 *
 * A composite is a bp_buf whose bytes are other buffers' bytes: a table of components,
 * each a range [buf_index, buf_index + length) of a buffer it holds one reference on,
 * placed at [offset, offset + length) of the composite. Offsets are the running sum of the
 * lengths, so the table is sorted by offset and by end, and the component holding an index
 * is found by binary search. A component may itself be a view or a composite: the walker
 * recurses, so nesting costs a level of indirection, not a copy.
 */
#include "buf.h"

#include "allocator.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef struct bp__component {
    bp_buf *buf;      /* one reference owned by the composite */
    size_t buf_index; /* where the component's bytes start in buf */
    size_t offset;    /* where they start in the composite */
    size_t length;
} bp__component;

typedef struct bp__composite {
    bp__component *items;
    size_t count;
    size_t room;
    size_t max_components; /* more than this and they are consolidated into one */
} bp__composite;

/* ---------------------------------------------------------------------------------------
 * Walking
 * ------------------------------------------------------------------------------------- */

/* The first component whose bytes end after `index` (count when none does). */
static size_t component_at(const bp__composite *c, size_t index)
{
    size_t lo = 0, hi = c->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->items[mid].offset + c->items[mid].length > index) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

/* `top` is the index in the buffer the caller walks that `index` in b stands for. */
static int walk_at(const bp_buf *b, size_t index, size_t n, bool descending, bp__segment_fn fn, void *ctx,
                   size_t top)
{
    if (n == 0) return 0;
    if (b->composite == NULL) {
        if (b->root != NULL) return walk_at(b->root, b->view_offset + index, n, descending, fn, ctx, top);
        return fn(b->head.memory + index, n, top, ctx);
    }
    const bp__composite *c = b->composite;
    size_t first = component_at(c, index), last = component_at(c, index + n - 1);
    for (size_t k = 0; k <= last - first; k++) {
        const bp__component *item = &c->items[descending ? last - k : first + k];
        size_t lo = index > item->offset ? index : item->offset;
        size_t end = item->offset + item->length, hi = index + n < end ? index + n : end;
        if (lo >= hi) continue; /* an empty component */
        int rc = walk_at(item->buf, item->buf_index + (lo - item->offset), hi - lo, descending, fn, ctx,
                         top + (lo - index));
        if (rc != 0) return rc;
    }
    return 0;
}

int bp__walk(const bp_buf *b, size_t index, size_t n, bool descending, bp__segment_fn fn, void *ctx)
{
    return walk_at(b, index, n, descending, fn, ctx, index);
}

typedef struct copy_ctx {
    uint8_t *outside; /* the caller's memory, lined up with index `base` of the buffer */
    size_t base;
    uint8_t fill;
} copy_ctx;

static int segment_out(uint8_t *p, size_t n, size_t index, void *ctx)
{
    copy_ctx *c = ctx;
    memcpy(c->outside + (index - c->base), p, n);
    return 0;
}

static int segment_in(uint8_t *p, size_t n, size_t index, void *ctx)
{
    copy_ctx *c = ctx;
    memmove(p, c->outside + (index - c->base), n);
    return 0;
}

static int segment_fill(uint8_t *p, size_t n, size_t index, void *ctx)
{
    (void)index;
    memset(p, ((copy_ctx *)ctx)->fill, n);
    return 0;
}

void bp__scattered_out(const bp_buf *b, size_t index, void *dst, size_t n)
{
    copy_ctx c = {dst, index, 0};
    bp__walk(b, index, n, false, segment_out, &c);
}

void bp__scattered_in(bp_buf *b, size_t index, const void *src, size_t n)
{
    copy_ctx c = {(uint8_t *)(uintptr_t)src, index, 0};
    bp__walk(b, index, n, false, segment_in, &c);
}

void bp__scattered_fill(bp_buf *b, size_t index, uint8_t byte, size_t n)
{
    copy_ctx c = {NULL, index, byte};
    bp__walk(b, index, n, false, segment_fill, &c);
}

/* The buffer whose index space b's indices are an offset into, and that offset. */
static const bp_buf *index_space(const bp_buf *b, size_t *offset)
{
    *offset = b->root != NULL ? b->view_offset : 0;
    return b->root != NULL ? b->root : b;
}

void bp__bytes_copy(bp_buf *dst, size_t dst_index, const bp_buf *src, size_t src_index, size_t n)
{
    if (n == 0) return;
    if (bp__contiguous(dst) && bp__contiguous(src)) {
        memmove(dst->head.memory + dst_index, src->head.memory + src_index, n);
        return;
    }
    if (bp__contiguous(src)) {
        bp__scattered_in(dst, dst_index, src->head.memory + src_index, n);
        return;
    }
    if (bp__contiguous(dst)) {
        bp__scattered_out(src, src_index, dst->head.memory + dst_index, n);
        return;
    }
    /* Both scattered: through a bounce buffer, a chunk at a time. Within one index space
     * (a composite and its views) a move up copies the last chunk first, so no byte is
     * overwritten before it is read. */
    size_t dst_base, src_base;
    bool backward = index_space(dst, &dst_base) == index_space(src, &src_base) &&
                    dst_base + dst_index > src_base + src_index;
    uint8_t bounce[1024];
    for (size_t done = 0; done < n;) {
        size_t chunk = n - done < sizeof bounce ? n - done : sizeof bounce;
        size_t at = backward ? n - done - chunk : done;
        bp__scattered_out(src, src_index + at, bounce, chunk);
        bp__scattered_in(dst, dst_index + at, bounce, chunk);
        done += chunk;
    }
}

/* ---------------------------------------------------------------------------------------
 * Checks
 * ------------------------------------------------------------------------------------- */

/* Every component still alive and still as long as the range the composite shows of it:
 * a component changed through a pointer the caller kept is caught here, before any byte
 * moves. */
static int check_components(const bp_buf *b, const char *func)
{
    const bp__composite *c = b->composite;
    for (size_t i = 0; i < c->count; i++) {
        const bp__component *item = &c->items[i];
        if (BP_UNLIKELY((bp__refcnt(item->buf) & BP__REFCNT_MASK) == 0))
            return bp__misuse(BP_EFREED, func, "component %zu (%p) of composite %p was released behind its back", i,
                              (void *)item->buf, (const void *)b);
        int rc = bp__check_live(item->buf, func);
        if (BP_UNLIKELY(rc != 0)) return rc;
        if (BP_UNLIKELY(item->buf->head.capacity < item->buf_index + item->length))
            return bp__misuse(BP_ERANGE, func, "component %zu (%p) of composite %p shrank below the %zu bytes it holds",
                              i, (void *)item->buf, (const void *)b, item->length);
    }
    return 0;
}

int bp__indirect_check(bp_buf *b, const char *func)
{
    if (b->root == NULL) return check_components(b, func);
    int rc = bp__view_refresh(b, func);
    if (rc == 0 && b->root->composite != NULL) rc = check_components(b->root, func);
    return rc;
}

static int check_composite(const bp_buf *b, const char *func)
{
    int rc = bp__check_live(b, func);
    if (rc == 0 && b->composite == NULL)
        rc = bp__misuse(BP_EINVAL, func, "buffer %p is not a composite", (const void *)b);
    return rc;
}

/* Whether `target` is b or somewhere inside it: adding such a b to target would make the
 * composite contain itself. */
static bool contains(const bp_buf *b, const bp_buf *target)
{
    if (b == target) return true;
    if (b->root != NULL) return contains(b->root, target);
    if (b->composite != NULL)
        for (size_t i = 0; i < b->composite->count; i++)
            if (contains(b->composite->items[i].buf, target)) return true;
    return false;
}

/* ---------------------------------------------------------------------------------------
 * The component table
 * ------------------------------------------------------------------------------------- */

bp_buf *bp_composite(bp_allocator *a, size_t max_components, int *err)
{
    int rc = 0;
    bp__composite *c = NULL;
    bp_buf *b = NULL;
    if (a == NULL) rc = bp__misuse(BP_EINVAL, __func__, "allocator is NULL");
    else if (max_components == 0) rc = bp__misuse(BP_EINVAL, __func__, "maxNumComponents: 0 (expected: >= 1)");
    bp__thread_state *ts = rc == 0 ? bp__thread_state_get(a) : NULL;
    if (rc == 0 && ts != NULL) c = calloc(1, sizeof *c);
    if (c != NULL) b = bp__buf_object_get(ts);
    if (rc == 0 && b == NULL) {
        free(c);
        rc = BP_ENOMEM;
    }
    if (err != NULL) *err = rc;
    if (rc != 0) return NULL;

    c->max_components = max_components;
    memset(&b->head, 0, sizeof b->head); /* memory NULL: no bytes of its own */
    b->head.max_capacity = BP_DEFAULT_MAX_CAPACITY;
    memset(&b->region, 0, sizeof b->region);
    b->region.kind = BP__KIND_NONE;
    bp__buf_object_prepare(b, a, NULL); /* no owner: it never goes into a thread cache */
    b->marked_reader_index = b->marked_writer_index = 0;
    b->view_offset = b->view_length = 0;
    b->count_owner = NULL;
    b->next_view = NULL;
    b->composite = c;
    BP__REFCNT_STORE(b, BP__REFCNT_INDIRECT | 1u, __ATOMIC_RELAXED);
    return b;
}

void bp__composite_destroy(bp_buf *b)
{
    bp__composite *c = b->composite;
    for (size_t i = 0; i < c->count; i++) bp_release(c->items[i].buf);
    free(c->items);
    free(c);
    b->composite = NULL;
}

size_t bp__composite_count(const bp_buf *b) { return b->composite->count; }

static int ensure_room(bp__composite *c, size_t count)
{
    if (count <= c->room) return 0;
    size_t room = c->room < 4 ? 4 : c->room * 2;
    while (room < count) room *= 2;
    bp__component *items = realloc(c->items, room * sizeof *items);
    if (items == NULL) return BP_ENOMEM;
    c->items = items;
    c->room = room;
    return 0;
}

/* Drops every byte from `at` on: components wholly past it are released, the one across it
 * is cut short. */
static void cut_at(bp_buf *b, size_t at)
{
    bp__composite *c = b->composite;
    while (c->count > 0 && c->items[c->count - 1].offset >= at && at < b->head.capacity)
        bp_release(c->items[--c->count].buf);
    if (c->count > 0) {
        bp__component *last = &c->items[c->count - 1];
        if (last->offset + last->length > at) last->length = at - last->offset;
    }
    if (at < b->head.capacity) b->head.capacity = at;
}

/* Replaces every component with one new buffer holding [0, at) of the composite followed by
 * `length` bytes of `extra` from extra_index (extra may be NULL), then releases the old
 * components and extra. Nothing changes on failure. */
static int merge_into_one(bp_buf *b, size_t at, bp_buf *extra, size_t extra_index, size_t length)
{
    bp__composite *c = b->composite;
    int rc = ensure_room(c, 1);
    bp_buf *merged = rc == 0 ? bp_alloc_ex(b->allocator, at + length, at + length, &rc) : NULL;
    if (merged == NULL) return rc;
    bp__bytes_out(b, 0, merged->head.memory, at);
    if (extra != NULL) bp__bytes_out(extra, extra_index, merged->head.memory + at, length);
    merged->head.writer_index = at + length;
    for (size_t i = 0; i < c->count; i++) bp_release(c->items[i].buf);
    if (extra != NULL) bp_release(extra);
    c->items[0] = (bp__component){merged, 0, 0, at + length};
    c->count = 1;
    b->head.capacity = at + length;
    return 0;
}

/* Puts [buf_index, buf_index + length) of buf at `at` (<= capacity, >= writer index): the
 * composite ends there, whatever was past `at` is released, and the composite owns the
 * caller's reference to buf from now on. Consolidates when the table would pass its
 * maximum. Nothing changes on failure (and buf stays the caller's). */
static int attach(bp_buf *b, size_t at, bp_buf *buf, size_t buf_index, size_t length)
{
    bp__composite *c = b->composite;
    size_t kept = at == b->head.capacity ? c->count : component_at(c, at);
    if (kept < c->count && c->items[kept].offset < at) kept++; /* the one across `at` stays, cut */
    if (kept + 1 > c->max_components) return merge_into_one(b, at, buf, buf_index, length);
    int rc = ensure_room(c, kept + 1);
    if (rc != 0) return rc;
    cut_at(b, at);
    c->items[c->count++] = (bp__component){buf, buf_index, at, length};
    b->head.capacity = at + length;
    return 0;
}

/* A fresh buffer of `length` bytes, all of them readable (a component's bytes are its
 * readable ones), attached at `at`. */
static int attach_new(bp_buf *b, size_t at, size_t length)
{
    int rc;
    bp_buf *fresh = bp_alloc_ex(b->allocator, length, length, &rc);
    if (fresh == NULL) return rc;
    fresh->head.writer_index = length;
    rc = attach(b, at, fresh, 0, length);
    if (rc != 0) bp_release(fresh);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * Public operations
 * ------------------------------------------------------------------------------------- */

int bp_composite_add(bp_buf *b, bp_buf *component, int advance_writer)
{
    int rc = check_composite(b, __func__);
    if (rc == 0) rc = bp__check_live(component, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(contains(component, b)))
        return bp__misuse(BP_EINVAL, __func__, "buffer %p is or contains composite %p: a composite cannot hold itself",
                          (void *)component, (void *)b);
    size_t length = component->head.writer_index - component->head.reader_index;
    if (BP_UNLIKELY(length > b->head.max_capacity - b->head.capacity))
        return bp__misuse(BP_ECAPACITY, __func__, "capacity %zu + component %zu exceeds maxCapacity %zu",
                          b->head.capacity, length, b->head.max_capacity);
    if (BP_UNLIKELY(advance_writer && length > b->head.max_capacity - b->head.writer_index))
        return bp__misuse(BP_ECAPACITY, __func__, "writerIndex %zu + component %zu exceeds maxCapacity %zu",
                          b->head.writer_index, length, b->head.max_capacity);
    rc = attach(b, b->head.capacity, component, component->head.reader_index, length);
    if (rc != 0) return rc;
    if (advance_writer) b->head.writer_index += length; /* capacity grew by length too */
    return 0;
}

int bp_composite_consolidate(bp_buf *b)
{
    int rc = check_composite(b, __func__);
    if (rc != 0 || b->composite->count <= 1) return rc;
    return merge_into_one(b, b->head.capacity, NULL, 0, 0);
}

long bp_composite_components(const bp_buf *b)
{
    int rc = check_composite(b, __func__);
    return rc != 0 ? rc : (long)b->composite->count;
}

int bp__composite_grow(bp_buf *b, size_t writer, size_t n)
{
    /* The caller checked writer + n against max capacity. */
    size_t new_capacity = bp__calculate_new_capacity(writer + n, b->head.max_capacity);
    return attach_new(b, b->head.capacity, new_capacity - b->head.capacity);
}

int bp__composite_set_capacity(bp_buf *b, size_t capacity)
{
    if (capacity > b->head.capacity) return attach_new(b, b->head.capacity, capacity - b->head.capacity);
    cut_at(b, capacity);
    if (b->head.writer_index > capacity) b->head.writer_index = capacity;
    if (b->head.reader_index > capacity) b->head.reader_index = capacity;
    return 0;
}

void bp__composite_discard(bp_buf *b, bool whole_only)
{
    bp__composite *c = b->composite;
    size_t reader = b->head.reader_index;
    size_t dropped = component_at(c, reader); /* those before it end at or before reader */
    /* Components read to their end go; with !whole_only also the read part of the next. */
    size_t removed = dropped < c->count ? c->items[dropped].offset : b->head.capacity;
    if (!whole_only) {
        if (dropped < c->count && reader > removed) {
            c->items[dropped].buf_index += reader - removed;
            c->items[dropped].length -= reader - removed;
        }
        removed = reader;
    }
    if (removed == 0) return;
    for (size_t i = 0; i < dropped; i++) bp_release(c->items[i].buf);
    memmove(c->items, c->items + dropped, (c->count - dropped) * sizeof *c->items);
    c->count -= dropped;
    for (size_t i = 0; i < c->count; i++) c->items[i].offset = i == 0 ? 0 : c->items[i - 1].offset + c->items[i - 1].length;
    b->head.capacity -= removed;
    b->head.reader_index -= removed;
    b->head.writer_index -= removed;
    b->marked_reader_index = b->marked_reader_index > removed ? b->marked_reader_index - removed : 0;
    b->marked_writer_index = b->marked_writer_index > removed ? b->marked_writer_index - removed : 0;
}

static int first_block(uint8_t *p, size_t n, size_t index, void *ctx)
{
    (void)index;
    struct iovec *first = ctx;
    first->iov_base = p;
    first->iov_len = n;
    return 1;
}

uint8_t *bp__scattered_reserve(bp_buf *b, size_t n, const char *func, int *rc)
{
    static uint8_t nothing; /* n == 0: a pointer where no byte may be written */
    *rc = 0;
    if (n == 0) return &nothing;
    size_t writer = b->head.writer_index;
    struct iovec first = {0};
    bp__walk(b, writer, n, false, first_block, &first);
    if (first.iov_len >= n) return first.iov_base;
    if (b->composite == NULL) {
        *rc = bp__misuse(BP_EINVAL, func, "the %zu writable bytes of view %p of a composite are not one block", n,
                         (void *)b);
        return NULL;
    }
    /* Split: the writable tail (bytes not written yet) becomes one fresh component, as long
     * as it was and at least n (ensure_writable made sure writer + n fits). */
    size_t wanted = writer + n > b->head.capacity ? writer + n : b->head.capacity;
    *rc = attach_new(b, writer, wanted - writer);
    if (*rc != 0) return NULL;
    bp__walk(b, writer, n, false, first_block, &first);
    return first.iov_base;
}

/* ---------------------------------------------------------------------------------------
 * Scatter / gather
 * ------------------------------------------------------------------------------------- */

typedef struct iovec_ctx {
    struct iovec *iov;
    int room;
    int count;
} iovec_ctx;

static int add_block(uint8_t *p, size_t n, size_t index, void *ctx)
{
    (void)index;
    iovec_ctx *v = ctx;
    if (v->count < v->room) v->iov[v->count] = (struct iovec){p, n};
    if (v->count == INT_MAX) return 1; /* cannot be counted in an int: stop, it is "too many" */
    v->count++;
    return 0;
}

int bp__iovec(const bp_buf *b, size_t index, size_t length, struct iovec *iov, int iovcnt)
{
    iovec_ctx v = {iov, iovcnt, 0};
    bp__walk(b, index, length, false, add_block, &v);
    return v.count;
}

static int checked_iovec(const bp_buf *b, bool readable, size_t index, size_t length, struct iovec *iov, int iovcnt,
                         const char *func)
{
    int rc = bp__check_live(b, func);
    if (rc == 0 && iovcnt < 0) rc = bp__misuse(BP_EINVAL, func, "iovcnt %d is negative", iovcnt);
    if (rc == 0 && iov == NULL && iovcnt > 0) rc = bp__misuse(BP_EINVAL, func, "iov is NULL");
    if (rc == 0 && readable) {
        index = b->head.reader_index;
        length = b->head.writer_index - index;
    }
    if (rc == 0) rc = bp__check_index(b, index, length, func);
    return rc != 0 ? rc : bp__iovec(b, index, length, iov, iovcnt);
}

int bp_iovec(const bp_buf *b, size_t index, size_t length, struct iovec *iov, int iovcnt)
{
    return checked_iovec(b, false, index, length, iov, iovcnt, __func__);
}

int bp_readable_iovec(const bp_buf *b, struct iovec *iov, int iovcnt)
{
    return checked_iovec(b, true, 0, 0, iov, iovcnt, __func__);
}
