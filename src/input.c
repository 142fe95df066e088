/* SPDX-License-Identifier: MIT */
/*
 * bp_input: a connection's received bytes, not consumed yet (Netty's ByteToMessageDecoder
 * cumulation). Built on the public buffer API only; common.h is included for bp__misuse
 * and bp__check_usable (a buffer handed over is checked whole: views and components).
 *
 * The unread bytes are [reader index, writer index) of one buffer, `buf`, which is
 * - NULL when nothing is unread (an idle connection holds no pooled memory);
 * - a plain buffer the input allocated ("owned"): the only kind it ever writes into, and
 *   only above its writer index, where no frame shows anything;
 * - or a buffer handed to it, or a composite it made of such buffers (contiguous ones: a
 *   composite handed to it is copied, never nested): never written.
 * Frames are retained slices of `buf`, so its reference count says whether a frame still
 * shows its bytes. Bytes move only in an owned buffer nobody else holds (count 1); when one
 * that frames hold must compact or grow, the unread bytes are copied into a fresh buffer and
 * the old one is let go, to live on as long as its frames do (Netty's expandCumulation).
 * A composite changes (takes components, sheds read ones) only while nobody else holds it
 * either: frames on other threads walk its table of components.
 */
#include "common.h"

#include <stdlib.h>

/* Appended bytes are copied while the copy stays this small: copying a few KiB costs less
 * than a component, which makes every later access walk a table and every frame cut across
 * it a view of a composite (no bp_data). Larger buffers are linked, not copied. */
#define MERGE_LIMIT ((size_t)4096)

/* The most components the input's composite takes; past that its unread bytes are copied
 * into one fresh buffer (the composite's own consolidation would copy the read ones too). */
#define MAX_COMPONENTS 64

/* Limits that keep every sum of sizes below BP_CAPACITY_LIMIT. */
#define MAX_BUFFERED_LIMIT ((size_t)1 << 40)
#define MAX_READ_LIMIT ((size_t)1 << 30)

struct bp_input {
    bp_allocator *allocator;
    bp_buf *buf;
    bool owned;     /* buf is a plain buffer of the input's own */
    bool composite; /* buf is a composite the input made */
    bool small_read; /* the last read brought at most half the guess */
    size_t guess;   /* the next read's size */
    uint64_t copied; /* bp_input_copied_bytes */
    bp_input_config cfg;
};

void bp_input_config_init(bp_input_config *cfg)
{
    if (cfg == NULL) return;
    cfg->max_buffered = (size_t)4 << 20;
    cfg->min_read = 64;
    cfg->initial_read = 2048;
    cfg->max_read = 65536;
}

static int check_config(const bp_input_config *cfg)
{
    if (cfg->max_buffered == 0 || cfg->max_buffered > MAX_BUFFERED_LIMIT)
        return bp__misuse(BP_EINVAL, "bp_input_new", "max_buffered %zu outside 1 .. 2^40", cfg->max_buffered);
    if (cfg->min_read == 0 || cfg->min_read > cfg->initial_read || cfg->initial_read > cfg->max_read ||
        cfg->max_read > MAX_READ_LIMIT)
        return bp__misuse(BP_EINVAL, "bp_input_new",
                          "read sizes min %zu, initial %zu, max %zu (expected 1 <= min <= initial <= max <= 2^30)",
                          cfg->min_read, cfg->initial_read, cfg->max_read);
    return 0;
}

bp_input *bp_input_new(bp_allocator *a, const bp_input_config *cfg, int *err)
{
    bp_input_config defaults;
    if (cfg == NULL) {
        bp_input_config_init(&defaults);
        cfg = &defaults;
    }
    int rc = a == NULL ? bp__misuse(BP_EINVAL, __func__, "allocator is NULL") : check_config(cfg);
    bp_input *in = rc == 0 ? calloc(1, sizeof *in) : NULL;
    if (rc == 0 && in == NULL) rc = BP_ENOMEM;
    if (err != NULL) *err = rc;
    if (in == NULL) return NULL;
    in->allocator = a;
    in->cfg = *cfg;
    in->guess = cfg->initial_read;
    return in;
}

size_t bp_input_readable(const bp_input *in)
{
    return in != NULL && in->buf != NULL ? bp_readable_bytes(in->buf) : 0;
}

bp_buf *bp_input_peek(bp_input *in) { return in != NULL ? in->buf : NULL; }

uint64_t bp_input_copied_bytes(const bp_input *in) { return in != NULL ? in->copied : 0; }

static void drop(bp_input *in)
{
    if (in->buf != NULL) bp_release(in->buf);
    in->buf = NULL;
    in->owned = in->composite = false;
}

void bp_input_clear(bp_input *in)
{
    if (in != NULL) drop(in);
}

void bp_input_free(bp_input *in)
{
    if (in == NULL) return;
    drop(in);
    free(in);
}

/* After bytes were consumed: a buffer read to its end goes (frames keep it alive if they
 * show it), and a composite no frame holds sheds the components read to their end - no
 * byte moves for that. An owned plain buffer compacts later, when it needs the room. */
static void settle(bp_input *in)
{
    if (in->buf == NULL) return;
    if (bp_readable_bytes(in->buf) == 0) {
        drop(in);
        return;
    }
    if (in->composite && bp_refcnt(in->buf) == 1 && bp_reader_index(in->buf) > 0)
        (void)bp_discard_read_bytes(in->buf);
}

/* A new buffer of the input's allocator (the buffer holding the unread bytes may be another
 * allocator's, or wrapped memory) of `capacity` bytes up to `max_capacity`, holding a copy
 * of the next n unread bytes (n <= capacity); NULL with the reason in *rc on failure. */
static bp_buf *copy_unread(bp_input *in, size_t n, size_t capacity, size_t max_capacity, int *rc)
{
    bp_buf *copy = bp_alloc_ex(in->allocator, capacity, max_capacity, rc);
    if (copy == NULL) return NULL;
    if (n > 0) *rc = bp_get_buf(in->buf, bp_reader_index(in->buf), copy, 0, n);
    if (*rc == 0) *rc = bp_set_writer_index(copy, n);
    if (*rc != 0) {
        bp_release(copy);
        return NULL;
    }
    return copy;
}

/* The room to make for n more bytes after `unread` ones: n, or half as much again as is
 * unread if that is more (within max_buffered). Making only the room asked for, an input
 * that a large frame reaches in small pieces would copy the whole frame again every few
 * pieces: quadratic in its size. With half again, each copy of the unread bytes is paid for
 * by as many bytes arriving after it. */
static size_t room_for(const bp_input *in, size_t unread, size_t n)
{
    size_t left = in->cfg.max_buffered > unread ? in->cfg.max_buffered - unread : 0;
    size_t more = unread / 2 < left ? unread / 2 : left;
    return n > more ? n : more;
}

/* Copies the unread bytes into a fresh buffer of the input's own with room for n more
 * bytes after them (see room_for), and lets the old buffer go (its frames, if any, keep
 * it). Nothing changes on failure. */
static int expand(bp_input *in, size_t n)
{
    size_t unread = bp_input_readable(in);
    int rc;
    bp_buf *fresh = copy_unread(in, unread, unread + room_for(in, unread, n), BP_CAPACITY_LIMIT, &rc);
    if (fresh == NULL) return rc;
    drop(in);
    in->buf = fresh;
    in->owned = true;
    in->copied += unread;
    return 0;
}

/* Makes `buf` an owned buffer with at least n writable bytes, moving bytes only where no
 * frame can see them. */
static int make_room(bp_input *in, size_t n)
{
    bp_buf *b = in->buf;
    if (b == NULL || !in->owned) return expand(in, n);
    if (bp_writable_bytes(b) >= n) return 0;
    if (bp_refcnt(b) > 1) return expand(in, n); /* frames show these bytes: they stay put */
    size_t reader = bp_reader_index(b), unread = bp_readable_bytes(b);
    /* Nobody else sees this buffer: compact it in place when that makes the room and moves
     * no more bytes than were consumed before them (so that the moves add up to at most
     * the bytes consumed), grow it when its reader index is 0 (perhaps in place), else copy
     * the unread bytes into a larger one. Growth makes room_for's room: past 4 MiB
     * bp_ensure_writable grows in steps of 4 MiB, each a copy of everything unread. */
    if (reader >= unread && bp_capacity(b) - unread >= n && bp_discard_read_bytes(b) == 0) {
        in->copied += unread;
        return 0;
    }
    if (reader == 0) { /* the unread bytes are copied when the buffer moves */
        const void *memory = bp_data(b, 0);
        int rc = bp_ensure_writable(b, room_for(in, unread, n));
        if (rc == 0 && bp_data(b, 0) != memory) in->copied += unread;
        return rc;
    }
    return expand(in, n);
}

/* Netty's AdaptiveRecvByteBufAllocator, on a continuous scale: a read that fills the guess
 * quadruples it; the second read in a row to bring at most half of it halves it. */
static void record_read(bp_input *in, size_t got)
{
    if (got >= in->guess) {
        in->guess = in->guess > in->cfg.max_read / 4 ? in->cfg.max_read : in->guess * 4;
        in->small_read = false;
    } else if (got <= in->guess / 2) {
        if (in->small_read) {
            in->guess = in->guess / 2 < in->cfg.min_read ? in->cfg.min_read : in->guess / 2;
            in->small_read = false;
        } else {
            in->small_read = true;
        }
    } else {
        in->small_read = false;
    }
}

/* Reads always land in an owned buffer: a given buffer or a composite first has its unread
 * bytes copied into one. Reading into a separate buffer and linking it instead would leave
 * no way back when linking then fails for memory: the bytes would already be off the fd. */
long bp_input_read_fd(bp_input *in, int fd)
{
    if (in == NULL) return bp__misuse(BP_EINVAL, __func__, "input is NULL");
    size_t unread = bp_input_readable(in);
    if (unread >= in->cfg.max_buffered) return BP_EFULL;
    size_t left = in->cfg.max_buffered - unread;
    int rc = make_room(in, in->guess < left ? in->guess : left);
    if (rc != 0) return rc;
    size_t room = bp_writable_bytes(in->buf);
    long got = bp_read_fd(in->buf, fd, room < left ? room : left);
    if (got > 0) record_read(in, (size_t)got);
    settle(in); /* a buffer made for a read that brought nothing goes again */
    return got;
}

/* Links b (readable, the caller's reference) after the unread bytes as a component of the
 * input's composite, made now if `buf` is not one yet. Nothing changes on failure. */
static int link_component(bp_input *in, bp_buf *b)
{
    int rc = 0;
    if (!in->composite) {
        bp_buf *c = bp_composite(in->allocator, MAX_COMPONENTS, &rc);
        if (c == NULL) return rc;
        /* The composite takes a reference of its own, so that a failure below leaves ours. */
        rc = bp_retain(in->buf);
        if (rc == 0) rc = bp_composite_add(c, in->buf, 1);
        if (rc == 0) rc = bp_composite_add(c, b, 1);
        if (rc != 0) {
            if (bp_composite_components(c) == 0) bp_release(in->buf); /* the add refused it */
            bp_release(c);
            return rc;
        }
        bp_release(in->buf);
        in->buf = c;
        in->owned = false;
        in->composite = true;
        return 0;
    }
    return bp_composite_add(in->buf, b, 1);
}

/* Copies b's readable bytes after the unread ones and releases b. */
static int merge(bp_input *in, bp_buf *b, size_t n)
{
    int rc = make_room(in, n);
    if (rc == 0) rc = bp_write_buf(in->buf, b, n);
    if (rc == 0) {
        bp_release(b);
        in->copied += n;
    }
    return rc;
}

int bp_input_add(bp_input *in, bp_buf *b)
{
    if (in == NULL) return bp__misuse(BP_EINVAL, __func__, "input is NULL");
    int rc = bp__check_usable(b, __func__);
    if (rc != 0) return rc;
    size_t n = bp_readable_bytes(b), unread = bp_input_readable(in);
    if (n == 0) {
        bp_release(b);
        return 0;
    }
    if (n > in->cfg.max_buffered - unread) return BP_EFULL;
    if (in->buf == NULL) { /* adopted as it is: nothing to copy */
        in->buf = b;
        return 0;
    }
    bool fits = in->owned && bp_writable_bytes(in->buf) >= n;
    if (fits || unread + n <= MERGE_LIMIT) return merge(in, b, n);
    /* A composite that frames show stays as it is: they read through its table of
     * components, perhaps on other threads, and adding would change (move) that table. */
    if (in->composite && bp_refcnt(in->buf) > 1) return merge(in, b, n);
    /* The input's composite holds contiguous buffers only, one level deep: a scattered
     * one (a composite, a view of one) is copied, and so is an adopted one once more
     * comes, rather than nested a level deeper (up to BP_MAX_COMPOSITE_DEPTH). */
    if (bp_data(b, bp_reader_index(b)) == NULL || (!in->composite && bp_data(in->buf, bp_reader_index(in->buf)) == NULL))
        return merge(in, b, n);
    if (in->composite && bp_composite_components(in->buf) >= MAX_COMPONENTS) return merge(in, b, n);
    return link_component(in, b);
}

static int check_take(const bp_input *in, size_t n, const char *func)
{
    if (in == NULL) return bp__misuse(BP_EINVAL, func, "input is NULL");
    size_t unread = bp_input_readable(in);
    if (n > unread) return bp__misuse(BP_ERANGE, func, "taking %zu bytes with only %zu unread", n, unread);
    return 0;
}

bp_buf *bp_input_take(bp_input *in, size_t n, int *err)
{
    int rc = check_take(in, n, __func__);
    bp_buf *frame = NULL;
    if (rc == 0 && in->buf == NULL) frame = bp_alloc_ex(in->allocator, 0, 0, &rc); /* n == 0 */
    else if (rc == 0) frame = bp_read_retained_slice(in->buf, n, &rc);
    if (frame != NULL) settle(in);
    if (err != NULL) *err = rc;
    return frame;
}

bp_buf *bp_input_take_copy(bp_input *in, size_t n, int *err)
{
    int rc = check_take(in, n, __func__);
    bp_buf *frame = NULL;
    size_t max_capacity = n > BP_DEFAULT_MAX_CAPACITY ? n : BP_DEFAULT_MAX_CAPACITY; /* as bp_alloc's */
    if (rc == 0) frame = copy_unread(in, n, n, max_capacity, &rc);
    if (frame != NULL && n > 0) {
        (void)bp_skip_bytes(in->buf, n);
        settle(in);
    }
    if (err != NULL) *err = rc;
    return frame;
}

int bp_input_skip(bp_input *in, size_t n)
{
    int rc = check_take(in, n, __func__);
    if (rc != 0 || n == 0) return rc;
    rc = bp_skip_bytes(in->buf, n);
    settle(in);
    return rc;
}
