/* SPDX-License-Identifier: MIT */
/*
 * Composite buffers (Netty's CompositeByteBuf) and the walker every scattered byte goes
 * through.
 *
 * A composite is a bp_buf whose bytes are other buffers' bytes: a table of components,
 * each a range [buf_index, buf_index + length) of a buffer it holds one reference on,
 * placed at [offset, offset + length) of the composite. Offsets are the running sum of the
 * lengths, so the table is sorted by offset and by end, and the component holding an index
 * is found by binary search. A component may itself be a view or a composite: the walker
 * recurses, so nesting costs a level of indirection, not a copy. Nesting is refused past
 * BP_MAX_COMPOSITE_DEPTH levels when components are added, and every recursion below counts
 * its levels and stops with an error past that depth, so a component changed behind its
 * composite's back cannot run a thread out of stack.
 */
#include "buf.h"

#include "allocator.h"
#include "thread.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef struct bp__component {
    bp_buf *buf;      /* one reference owned by the composite */
    size_t buf_index; /* where the component's bytes start in buf */
    size_t offset;    /* where they start in the composite */
    size_t length;
    uint64_t generation; /* buf's when added: buf is still that buffer while they match */
} bp__component;

typedef struct bp__composite {
    bp__component *items;
    size_t count;
    size_t room;
    size_t max_components; /* more than this and they are consolidated into one */
    size_t depth;          /* composite levels from here down to plain memory: 1 + the deepest
                              component's when it was added (an upper bound once some go) */
    bool contained;        /* this composite or a view of it was added to a composite: only
                              then may a component being added hold it (the cycle check) */
    size_t resizes;        /* work counters of test builds: table reallocations, and */
    size_t visits;         /* components visited by checks and cycle searches */
    struct bp__composite *next_doomed; /* ended, its components waiting to be released */
} bp__composite;

/* Test builds count the components checks visit (bp__composite_work). Not the library
 * itself: threads reading views of one composite at once all check it, and would all write
 * its line. */
#if BP__TESTING
#define COUNT_VISITS(c, n) __atomic_fetch_add(&(c)->visits, (n), __ATOMIC_RELAXED)
#else
#define COUNT_VISITS(c, n) ((void)0)
#endif

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

/* `top` is the index in the buffer the caller walks that `index` in b stands for; `level`
 * counts the composites above b. */
static int walk_at(const bp_buf *b, size_t index, size_t n, bool descending, bp__segment_fn fn, void *ctx,
                   size_t top, unsigned level)
{
    if (n == 0) return 0;
    if (b->composite == NULL) {
        if (b->root != NULL) return walk_at(b->root, b->view_offset + index, n, descending, fn, ctx, top, level);
        return fn(b->head.memory + index, n, top, ctx);
    }
    if (BP__UNLIKELY(level >= BP_MAX_COMPOSITE_DEPTH)) return BP_EINVAL;
    const bp__composite *c = b->composite;
    size_t first = component_at(c, index), last = component_at(c, index + n - 1);
    for (size_t k = 0; k <= last - first; k++) {
        const bp__component *item = &c->items[descending ? last - k : first + k];
        size_t lo = index > item->offset ? index : item->offset;
        size_t end = item->offset + item->length, hi = index + n < end ? index + n : end;
        if (lo >= hi) continue; /* an empty component */
        int rc = walk_at(item->buf, item->buf_index + (lo - item->offset), hi - lo, descending, fn, ctx,
                         top + (lo - index), level + 1);
        if (rc != 0) return rc;
    }
    return 0;
}

int bp__walk(const bp_buf *b, size_t index, size_t n, bool descending, bp__segment_fn fn, void *ctx)
{
    return walk_at(b, index, n, descending, fn, ctx, index, 0);
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

/* ---------------------------------------------------------------------------------------
 * Copies between buffers that may share memory
 * ------------------------------------------------------------------------------------- */

typedef struct span_ctx {
    uintptr_t lo, hi; /* addresses: the bounds of a range, or the block looked for */
    bool hit;
} span_ctx;

static int widen(uint8_t *p, size_t n, size_t index, void *ctx)
{
    (void)index;
    span_ctx *s = ctx;
    if ((uintptr_t)p < s->lo) s->lo = (uintptr_t)p;
    if ((uintptr_t)p + n > s->hi) s->hi = (uintptr_t)p + n;
    return 0;
}

static int touches(uint8_t *p, size_t n, size_t index, void *ctx)
{
    (void)index;
    span_ctx *s = ctx;
    s->hit = (uintptr_t)p < s->hi && (uintptr_t)p + n > s->lo;
    return s->hit;
}

/* The lowest and the end address of the memory behind [index, index + n) of b (n > 0). A
 * walk that fails (nesting too deep) leaves the bounds all-covering: "may overlap". */
static span_ctx span_of(const bp_buf *b, size_t index, size_t n)
{
    if (bp__contiguous(b)) return (span_ctx){(uintptr_t)(b->head.memory + index), (uintptr_t)(b->head.memory + index) + n, false};
    span_ctx s = {UINTPTR_MAX, 0, false};
    if (bp__walk(b, index, n, false, widen, &s) != 0) s = (span_ctx){0, UINTPTR_MAX, false};
    return s;
}

/* A root whose one reference is its holder's and that no plain view shows: no other buffer
 * shows its memory (a composite holding it, or a retained view, would hold a reference of
 * its own; a plain view that a composite holds would have taken over that one reference). */
static bool shows_memory_alone(const bp_buf *b)
{
    return b->root == NULL && b->composite == NULL && b->views == NULL && bp__refcnt(b) == 1;
}

bool bp__ranges_overlap(const bp_buf *a, size_t a_index, size_t a_n, const bp_buf *b, size_t b_index, size_t b_n)
{
    if (a_n == 0 || b_n == 0) return false;
    if (!bp__contiguous(b)) { /* b the contiguous one, if either is */
        const bp_buf *t = a;
        size_t ti = a_index, tn = a_n;
        a = b, a_index = b_index, a_n = b_n;
        b = t, b_index = ti, b_n = tn;
    }
    if (bp__contiguous(b) && !bp__contiguous(a)) { /* exact: a's blocks against b's one block */
        if (shows_memory_alone(b)) return false;
        span_ctx s = span_of(b, b_index, b_n);
        return bp__walk(a, a_index, a_n, false, touches, &s) != 0;
    }
    span_ctx s = span_of(b, b_index, b_n);
    span_ctx t = span_of(a, a_index, a_n);
    return t.lo < s.hi && s.lo < t.hi;
}

void bp__bytes_copy_disjoint(bp_buf *dst, size_t dst_index, const bp_buf *src, size_t src_index, size_t n)
{
    if (n == 0) return;
    if (bp__contiguous(src)) {
        bp__bytes_in(dst, dst_index, src->head.memory + src_index, n);
        return;
    }
    if (bp__contiguous(dst)) {
        bp__scattered_out(src, src_index, dst->head.memory + dst_index, n);
        return;
    }
    uint8_t bounce[1024]; /* both scattered: a chunk at a time */
    for (size_t done = 0; done < n;) {
        size_t chunk = n - done < sizeof bounce ? n - done : sizeof bounce;
        bp__scattered_out(src, src_index + done, bounce, chunk);
        bp__scattered_in(dst, dst_index + done, bounce, chunk);
        done += chunk;
    }
}

/* Overlapping ranges with a scattered side: no order of segments is right for every layout
 * (a composite may show one buffer's bytes in any order, or twice), so every source byte is
 * read before the first is written. */
static BP__NOINLINE int copy_through_temporary(bp_buf *dst, size_t dst_index, const bp_buf *src, size_t src_index,
                                              size_t n)
{
    uint8_t small[BP__SMALL_COPY];
    uint8_t *copy = n <= sizeof small ? small : malloc(n);
    if (copy == NULL) return BP_ENOMEM;
    bp__bytes_out(src, src_index, copy, n);
    bp__bytes_in(dst, dst_index, copy, n);
    if (copy != small) free(copy);
    return 0;
}

int bp__bytes_copy(bp_buf *dst, size_t dst_index, const bp_buf *src, size_t src_index, size_t n)
{
    if (n == 0) return 0;
    if (bp__contiguous(dst) && bp__contiguous(src)) {
        memmove(dst->head.memory + dst_index, src->head.memory + src_index, n);
        return 0;
    }
    if (bp__ranges_overlap(dst, dst_index, n, src, src_index, n))
        return copy_through_temporary(dst, dst_index, src, src_index, n);
    bp__bytes_copy_disjoint(dst, dst_index, src, src_index, n);
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Checks
 * ------------------------------------------------------------------------------------- */

static int check_components(const bp_buf *b, const char *func, unsigned level);

/* A live component that is a view or a composite: a view's root must be intact; a
 * composite, or the composite under a view, is checked a level down. Nothing is written: a
 * view component is not refreshed (walks go through its root, not its head), as threads
 * reading views of one composite at once all check its components. */
static int check_indirect_component(const bp_buf *buf, const char *func, unsigned level)
{
    if (buf->root == NULL) return check_components(buf, func, level);
    if (BP__UNLIKELY(!bp__view_intact(buf)))
        return bp__misuse(BP_EFREED, func, "buffer %p: the buffer it derives from was released", (const void *)buf);
    return buf->root->composite != NULL ? check_components(buf->root, func, level) : 0;
}

/* Every component still alive and still as long as the range the composite shows of it:
 * a component changed through a pointer the caller kept is caught here, before any byte
 * moves. `level` counts the composites above b; one past the deepest nesting bp_composite_add
 * allows can only come from such a change, and is refused before the walk would recurse. */
static int check_components(const bp_buf *b, const char *func, unsigned level)
{
    bp__composite *c = b->composite;
    if (BP__UNLIKELY(level >= BP_MAX_COMPOSITE_DEPTH))
        return bp__misuse(BP_EINVAL, func, "composite %p nests deeper than BP_MAX_COMPOSITE_DEPTH (%d)",
                          (const void *)b, BP_MAX_COMPOSITE_DEPTH);
    COUNT_VISITS(c, c->count);
    for (size_t i = 0; i < c->count; i++) {
        const bp__component *item = &c->items[i];
        uint32_t count = bp__refcnt(item->buf);
        if (BP__UNLIKELY(!bp__generation_holds(item->buf, item->generation)))
            return bp__misuse(BP_EFREED, func, "component %zu (%p) of composite %p was released behind its back", i,
                              (void *)item->buf, (const void *)b);
        bool view = (count & BP__REFCNT_INDIRECT) && item->buf->root != NULL;
        if (count & BP__REFCNT_INDIRECT) {
            int rc = check_indirect_component(item->buf, func, level + 1);
            if (BP__UNLIKELY(rc != 0)) return rc;
        }
        size_t capacity = view ? bp__view_capacity_now(item->buf) : item->buf->head.capacity;
        if (BP__UNLIKELY(capacity < item->buf_index + item->length))
            return bp__misuse(BP_ERANGE, func, "component %zu (%p) of composite %p shrank below the %zu bytes it holds",
                              i, (void *)item->buf, (const void *)b, item->length);
    }
    return 0;
}

int bp__indirect_check(bp_buf *b, const char *func)
{
    if (b->root == NULL) return check_components(b, func, 0);
    int rc = bp__view_refresh(b, func);
    if (rc == 0 && b->root->composite != NULL) rc = check_components(b->root, func, 0);
    return rc;
}

static int check_composite(const bp_buf *b, const char *func)
{
    int rc = bp__check_live(b, func);
    if (rc == 0 && b->composite == NULL)
        rc = bp__misuse(BP_EINVAL, func, "buffer %p is not a composite", (const void *)b);
    return rc;
}

/* check_composite without checking the components, which adding one does not read: a live
 * composite passes at once, anything else is reported as check_composite reports it. */
static int check_composite_itself(const bp_buf *b, const char *func)
{
    if (BP__LIKELY(b != NULL)) {
        uint32_t count = bp__refcnt(b);
        if (BP__LIKELY((count & BP__REFCNT_INDIRECT) && (count & BP__REFCNT_MASK) != 0 && b->composite != NULL))
            return 0;
    }
    return check_composite(b, func);
}

/* The buffer whose bytes b's are: its root for a view, b itself otherwise. */
static const bp_buf *bytes_of(const bp_buf *b) { return b->root != NULL ? b->root : b; }

/* Composite levels from b down to plain memory: 0 for a plain buffer or a view of one. */
static size_t depth_of(const bp_buf *b)
{
    const bp__composite *c = bytes_of(b)->composite;
    return c != NULL ? c->depth : 0;
}

/* Whether x is `target`, shows its bytes, or holds it somewhere inside: 1, 0, or BP_EINVAL
 * when x nests deeper than BP_MAX_COMPOSITE_DEPTH. */
static int holds(const bp_buf *x, const bp_buf *target, unsigned level)
{
    x = bytes_of(x);
    if (x == target) return 1;
    bp__composite *c = x->composite;
    if (c == NULL) return 0;
    if (BP__UNLIKELY(level >= BP_MAX_COMPOSITE_DEPTH)) return BP_EINVAL;
    for (size_t i = 0; i < c->count; i++) {
        COUNT_VISITS(c, 1);
        int r = holds(c->items[i].buf, target, level + 1);
        if (r != 0) return r;
    }
    return 0;
}

/* Whether adding `component` to the composite `target` would make target contain itself
 * (1), not (0), or cannot be told because component nests too deep (BP_EINVAL). A composite
 * never added anywhere (nor a view of it) is inside nothing, so only a component that is
 * target or a view of it can be: the search runs only for composites added somewhere. */
static int contains(const bp_buf *component, const bp_buf *target)
{
    if (!__atomic_load_n(&target->composite->contained, __ATOMIC_RELAXED)) return bytes_of(component) == target;
    return holds(component, target, 0);
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
    if (c != NULL) b = bp__thread_object_get(ts);
    if (rc == 0 && b == NULL) {
        free(c);
        rc = BP_ENOMEM;
    }
    if (err != NULL) *err = rc;
    if (rc != 0) return NULL;

    c->max_components = max_components;
    c->depth = 1;
    memset(&b->head, 0, sizeof b->head); /* memory NULL: no bytes of its own */
    b->head.max_capacity = BP_DEFAULT_MAX_CAPACITY;
    memset(&b->region, 0, sizeof b->region);
    b->region.kind = BP__KIND_NONE;
    bp__buf_object_prepare(b, a, NULL); /* no owner: it never goes into a thread cache */
    b->head.marked_reader_index = b->head.marked_writer_index = 0;
    b->view_offset = b->view_length = 0;
    b->composite = c;
    BP__REFCNT_STORE(b, BP__REFCNT_INDIRECT | 1u, __ATOMIC_RELAXED);
    return b;
}

/* Tables of this thread's composites that reached their end, whose components are still to
 * be released. Releasing a component can end another composite; its table waits here for
 * the outermost call's loop instead of being released a stack frame deeper, so ending a
 * nesting of any depth (even one deepened behind a composite's back) takes constant stack. */
static _Thread_local bp__composite *doomed;
static _Thread_local bool releasing_doomed;

/* Gives up the composite's reference on a component - unless it was released behind the
 * composite's back: its object may be someone else's buffer by now. `b` names the composite
 * in the report only (it may have been recycled by then). */
static void release_component(const void *b, const bp__component *item)
{
    if (BP__LIKELY(bp__generation_holds(item->buf, item->generation))) bp_release(item->buf);
    else
        bp__misuse(BP_EFREED, "bp_release", "component %p of composite %p was released behind its back",
                   (void *)item->buf, b);
}

void bp__composite_destroy(bp_buf *b)
{
    bp__composite *c = b->composite;
    b->composite = NULL;
    c->next_doomed = doomed;
    doomed = c;
    if (releasing_doomed) return;
    releasing_doomed = true;
    while ((c = doomed) != NULL) {
        doomed = c->next_doomed;
        for (size_t i = 0; i < c->count; i++) release_component(c, &c->items[i]);
        free(c->items);
        free(c);
    }
    releasing_doomed = false;
}

void bp__composite_free_table(bp_buf *b)
{
    bp__composite *c = b->composite;
    b->composite = NULL;
    free(c->items);
    free(c);
}

size_t bp__composite_count(const bp_buf *b) { return b->composite->count; }

bool bp__composite_growth_merges(const bp_buf *b)
{
    const bp__composite *c = bytes_of(b)->composite;
    return c->count >= c->max_components;
}

#if BP__TESTING
void bp__composite_work(const bp_buf *b, size_t *resizes, size_t *visits)
{
    *resizes = b->composite->resizes;
    *visits = __atomic_load_n(&b->composite->visits, __ATOMIC_RELAXED);
}
#endif

/* Room for `count` components; the table doubles, so adding is amortized O(1). */
static int ensure_room(bp__composite *c, size_t count)
{
    if (count <= c->room) return 0;
    size_t room = c->room < 4 ? 4 : c->room;
    while (room < count) {
        if (room > SIZE_MAX / 2 / sizeof *c->items) return BP_ENOMEM;
        room *= 2;
    }
    bp__component *items = realloc(c->items, room * sizeof *items);
    if (items == NULL) return BP_ENOMEM;
    c->items = items;
    c->room = room;
    c->resizes++;
    return 0;
}

/* Drops every byte from `at` on: components wholly past it are released, the one across it
 * is cut short. */
static void cut_at(bp_buf *b, size_t at)
{
    bp__composite *c = b->composite;
    while (c->count > 0 && c->items[c->count - 1].offset >= at && at < b->head.capacity)
        release_component(b, &c->items[--c->count]);
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
    for (size_t i = 0; i < c->count; i++) release_component(b, &c->items[i]);
    if (extra != NULL) bp_release(extra);
    c->items[0] = (bp__component){merged, 0, 0, at + length, bp__generation_record(merged)};
    c->count = 1;
    c->depth = 1;
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
    c->items[c->count++] = (bp__component){buf, buf_index, at, length, bp__generation_record(buf)};
    b->head.capacity = at + length;
    if (depth_of(buf) + 1 > c->depth) c->depth = depth_of(buf) + 1;
    bp__composite *inner = bytes_of(buf)->composite;
    /* Views of one composite may be added to composites of their own on several threads at
     * once: the flag is set once, atomically, and only read after. */
    if (inner != NULL && !__atomic_load_n(&inner->contained, __ATOMIC_RELAXED))
        __atomic_store_n(&inner->contained, true, __ATOMIC_RELAXED);
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

/* Adding reads no component's bytes unless it consolidates, so only then are the components
 * checked: adding N components costs O(N). */
int bp_composite_add(bp_buf *b, bp_buf *component, int advance_writer)
{
    int rc = check_composite_itself(b, __func__);
    if (rc == 0) rc = bp__check_live(component, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    rc = contains(component, b);
    if (BP__UNLIKELY(rc > 0))
        return bp__misuse(BP_EINVAL, __func__, "buffer %p is or contains composite %p: a composite cannot hold itself",
                          (void *)component, (void *)b);
    if (BP__UNLIKELY(rc < 0 || depth_of(component) >= BP_MAX_COMPOSITE_DEPTH))
        return bp__misuse(BP_EINVAL, __func__, "buffer %p nests %zu composites deep: adding it passes BP_MAX_COMPOSITE_DEPTH (%d)",
                          (void *)component, depth_of(component), BP_MAX_COMPOSITE_DEPTH);
    size_t length = component->head.writer_index - component->head.reader_index;
    if (BP__UNLIKELY(length > b->head.max_capacity - b->head.capacity))
        return bp__misuse(BP_ECAPACITY, __func__, "capacity %zu + component %zu exceeds maxCapacity %zu",
                          b->head.capacity, length, b->head.max_capacity);
    if (BP__UNLIKELY(advance_writer && length > b->head.max_capacity - b->head.writer_index))
        return bp__misuse(BP_ECAPACITY, __func__, "writerIndex %zu + component %zu exceeds maxCapacity %zu",
                          b->head.writer_index, length, b->head.max_capacity);
    if (b->composite->count >= b->composite->max_components) { /* consolidates: reads them all */
        rc = check_components(b, __func__, 0);
        if (BP__UNLIKELY(rc != 0)) return rc;
    }
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

size_t bp__composite_discardable(const bp_buf *b, bool whole_only)
{
    const bp__composite *c = b->composite;
    size_t reader = b->head.reader_index;
    if (!whole_only) return reader;
    /* Only the components read to their end: those before the one holding the reader index. */
    size_t first_kept = component_at(c, reader);
    return first_kept < c->count ? c->items[first_kept].offset : b->head.capacity;
}

void bp__composite_discard(bp_buf *b, bool whole_only)
{
    bp__composite *c = b->composite;
    size_t reader = b->head.reader_index;
    size_t dropped = component_at(c, reader); /* those before it end at or before reader */
    /* Components read to their end go; with !whole_only also the read part of the next. */
    size_t removed = bp__composite_discardable(b, whole_only);
    if (!whole_only && dropped < c->count && reader > c->items[dropped].offset) {
        c->items[dropped].buf_index += reader - c->items[dropped].offset;
        c->items[dropped].length -= reader - c->items[dropped].offset;
    }
    if (removed == 0) return;
    for (size_t i = 0; i < dropped; i++) release_component(b, &c->items[i]);
    memmove(c->items, c->items + dropped, (c->count - dropped) * sizeof *c->items);
    c->count -= dropped;
    for (size_t i = 0; i < c->count; i++) c->items[i].offset = i == 0 ? 0 : c->items[i - 1].offset + c->items[i - 1].length;
    b->head.capacity -= removed;
    b->head.reader_index -= removed;
    b->head.writer_index -= removed;
    b->head.marked_reader_index = b->head.marked_reader_index > removed ? b->head.marked_reader_index - removed : 0;
    b->head.marked_writer_index = b->head.marked_writer_index > removed ? b->head.marked_writer_index - removed : 0;
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
