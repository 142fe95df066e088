/* SPDX-License-Identifier: MIT */
/*
 * bp_output: buffers and file regions queued for one connection, written with gathering
 * writes and sendfile (Netty's ChannelOutboundBuffer and FileRegion), with water marks on
 * the bytes pending. Built on the public buffer API only; common.h is included for
 * bp__misuse and bp__check_usable, os.h for the writes.
 *
 * The queue is an array used from `head`: in the order added, each buffer with the
 * reference the output took over and the range of it still to write - its readable bytes
 * when it was added - and a NULL buffer where a file region stands, whose fd, offset and
 * length wait in a second array of the same kind, in the same order, made when the first
 * region comes (an output of buffers only is what it would be without regions: one pointer
 * more, no larger an allocation per connection). A flush describes the ranges of the
 * buffers up to the next region as iovecs (bp_iovec per buffer), writes them with one
 * call, then walks the queue by what went out: buffers written to their end are released,
 * the range the write stopped in starts later, and the next flush starts there. The
 * output never changes a buffer's indices, so one buffer may be queued twice. A region at
 * the head goes out with sendfile, its offset advanced by what was written, and is
 * released (its callback called) once it is all out.
 */
#include "common.h"
#include "os.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifndef ENODATA
#define ENODATA EIO
#endif
#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

/* Blocks and bytes one write call takes at most (the kernel refuses more than IOV_MAX
 * blocks; 1 GiB keeps the sum far from SSIZE_MAX). */
#define IOV_BLOCKS (IOV_MAX < 1024 ? IOV_MAX : 1024)
#define MAX_WRITE ((size_t)1 << 30)

/* The largest offset a file can have (off_t is 32 or 64 bits). */
#define OFF_LIMIT ((uint64_t)(sizeof(off_t) >= 8 ? INT64_MAX : INT32_MAX))

/* A queued file region: the bytes [offset, offset + left) of fd still to write. */
typedef struct region {
    int fd;
    bool copy; /* sendfile cannot read fd: pread and write */
    int64_t offset;
    uint64_t left;
    bp_file_release_fn release;
    void *user_data;
} region;

/* The regions queued, in order, used from `head`. */
typedef struct region_queue {
    region *items;
    size_t head, count, room;
} region_queue;

/* A queued buffer, or (buf NULL) the next file region of `files`. */
typedef struct item {
    bp_buf *buf;
    size_t index, left; /* the bytes of buf still to write */
    bp_write_done_fn done; /* NULL, or called once it is written or dropped */
    void *user_data;
} item;

struct bp_output {
    item *items;
    size_t head, count, room;
    region_queue *files; /* NULL until a region is added */
    size_t pending;   /* readable bytes of the queued buffers and regions */
    bool unwritable;
    bp_output_config cfg;
};

void bp_output_config_init(bp_output_config *cfg)
{
    if (cfg == NULL) return;
    cfg->low_water_mark = (size_t)32 << 10;
    cfg->high_water_mark = (size_t)64 << 10;
    cfg->on_writability = NULL;
    cfg->user_data = NULL;
}

bp_output *bp_output_new(const bp_output_config *cfg, int *err)
{
    bp_output_config defaults;
    if (cfg == NULL) {
        bp_output_config_init(&defaults);
        cfg = &defaults;
    }
    int rc = 0;
    if (cfg->low_water_mark > cfg->high_water_mark)
        rc = bp__misuse(BP_EINVAL, __func__, "low_water_mark %zu above high_water_mark %zu", cfg->low_water_mark,
                        cfg->high_water_mark);
    bp_output *out = rc == 0 ? calloc(1, sizeof *out) : NULL;
    if (rc == 0 && out == NULL) rc = BP_ENOMEM;
    if (err != NULL) *err = rc;
    if (out != NULL) out->cfg = *cfg;
    return out;
}

static void set_writable(bp_output *out, bool writable)
{
    if (out->unwritable != writable) return; /* no change */
    out->unwritable = !writable;
    if (out->cfg.on_writability != NULL) out->cfg.on_writability(writable, out->cfg.user_data);
}

/* Takes the region at the head of `files` off the queue and calls its release. */
static void drop_region(bp_output *out, int completed)
{
    region_queue *q = out->files;
    region r = q->items[q->head];
    q->head = --q->count == 0 ? 0 : q->head + 1;
    if (r.release != NULL) r.release(r.fd, completed, r.user_data);
}

/* Releases a buffer item (taken off the queue already) and completes it. */
static void drop_buffer(const item *it, int completed)
{
    bp_release(it->buf);
    if (it->done != NULL) it->done(completed, it->user_data);
}

static void release_all(bp_output *out)
{
    size_t head = out->head, count = out->count;
    out->head = out->count = 0;
    out->pending = 0;
    for (size_t i = head; i < head + count; i++) {
        if (out->items[i].buf != NULL) drop_buffer(&out->items[i], 0);
        else drop_region(out, 0);
    }
}

void bp_output_clear(bp_output *out)
{
    if (out == NULL) return;
    release_all(out);
    set_writable(out, true);
}

void bp_output_free(bp_output *out)
{
    if (out == NULL) return;
    release_all(out);
    free(out->items);
    if (out->files != NULL) free(out->files->items);
    free(out->files);
    free(out);
}

/* Room for one more at the end of an array of `room` elements of `size` bytes, `count`
 * used from *head: the used part moves down when at least half the array is free before
 * it (each element moves at most once per pass through the array), else the array
 * doubles. Returns the array (moved or not), NULL when out of memory (nothing changed). */
static void *make_room(void *array, size_t size, size_t *head, size_t count, size_t *room)
{
    if (*head + count < *room) return array;
    if (*head >= *room / 2 && *head > 0) {
        memmove(array, (char *)array + *head * size, count * size);
        *head = 0;
        return array;
    }
    size_t grown = *room < 16 ? 16 : *room * 2;
    void *moved = realloc(array, grown * size);
    if (moved != NULL) *room = grown;
    return moved;
}

/* Room for one more item; BP_ENOMEM (nothing changed) when there is none to be had. */
static int item_room(bp_output *out)
{
    item *items = make_room(out->items, sizeof *items, &out->head, out->count, &out->room);
    if (items == NULL) return BP_ENOMEM;
    out->items = items;
    return 0;
}

/* n more bytes pending: 1 when that turned the output unwritable, else 0. */
static int add_pending(bp_output *out, size_t n)
{
    out->pending += n;
    if (out->unwritable || out->pending <= out->cfg.high_water_mark) return 0;
    set_writable(out, false);
    return 1;
}

static int add_buffer(bp_output *out, bp_buf *buf, bp_write_done_fn done, void *user_data, const char *func)
{
    if (out == NULL) return bp__misuse(BP_EINVAL, func, "output is NULL");
    int rc = bp__check_usable(buf, func);
    if (rc != 0) return rc;
    size_t n = bp_readable_bytes(buf);
    if (n == 0 && done == NULL) {
        bp_release(buf);
        return 0;
    }
    rc = item_room(out);
    if (rc != 0) return rc;
    out->items[out->head + out->count++] = (item){buf, bp_reader_index(buf), n, done, user_data};
    return add_pending(out, n);
}

int bp_output_add(bp_output *out, bp_buf *buf) { return add_buffer(out, buf, NULL, NULL, __func__); }

int bp_output_add_notify(bp_output *out, bp_buf *buf, bp_write_done_fn done, void *user_data)
{
    return add_buffer(out, buf, done, user_data, __func__);
}

/* The misuse report for a region that cannot be queued, or 0. */
static int check_region(const bp_output *out, int fd, int64_t offset, uint64_t length)
{
    if (out == NULL) return bp__misuse(BP_EINVAL, "bp_output_add_file", "output is NULL");
    if (fd < 0) return bp__misuse(BP_EINVAL, "bp_output_add_file", "fd %d is negative", fd);
    if (offset < 0) return bp__misuse(BP_EINVAL, "bp_output_add_file", "offset %lld is negative", (long long)offset);
    if (length == 0) return bp__misuse(BP_EINVAL, "bp_output_add_file", "length is 0");
    if (length > OFF_LIMIT - (uint64_t)offset)
        return bp__misuse(BP_EOVERFLOW, "bp_output_add_file", "offset %lld + length %llu is past the largest file offset",
                          (long long)offset, (unsigned long long)length);
    if (length > SIZE_MAX - out->pending)
        return bp__misuse(BP_EOVERFLOW, "bp_output_add_file", "length %llu + %zu bytes pending overflows",
                          (unsigned long long)length, out->pending);
    return 0;
}

int bp_output_add_file(bp_output *out, int fd, int64_t offset, uint64_t length, bp_file_release_fn release,
                       void *user_data)
{
    int rc = check_region(out, fd, offset, length);
    if (rc == 0) rc = item_room(out);
    if (rc != 0) return rc;
    if (out->files == NULL && (out->files = calloc(1, sizeof *out->files)) == NULL) return BP_ENOMEM;
    region_queue *q = out->files;
    region *items = make_room(q->items, sizeof *items, &q->head, q->count, &q->room);
    if (items == NULL) return BP_ENOMEM;
    q->items = items;
    items[q->head + q->count++] = (region){fd, false, offset, length, release, user_data};
    out->items[out->head + out->count++] = (item){NULL, 0, 0, NULL, NULL};
    return add_pending(out, (size_t)length);
}

/* The queued buffers' bytes as blocks, from the head up to the first region, up to
 * IOV_BLOCKS blocks and MAX_WRITE bytes (a buffer may be cut anywhere: what is not written
 * waits); *region_next tells whether a region comes after the last buffer described.
 * Returns the number of blocks, or the error of a buffer that cannot be described. */
static int gather(const bp_output *out, struct iovec *iov, size_t *bytes, bool *region_next)
{
    int used = 0;
    size_t total = 0, i = 0;
    for (; i < out->count && out->items[out->head + i].buf != NULL && used < IOV_BLOCKS && total < MAX_WRITE; i++) {
        const item *it = &out->items[out->head + i];
        int n = bp_iovec(it->buf, it->index, it->left, iov + used, IOV_BLOCKS - used);
        if (n < 0) return n;
        for (int k = 0; k < n && used < IOV_BLOCKS && total < MAX_WRITE; k++, used++) {
            if (iov[used].iov_len > MAX_WRITE - total) iov[used].iov_len = MAX_WRITE - total;
            total += iov[used].iov_len;
        }
    }
    *bytes = total;
    *region_next = i < out->count && out->items[out->head + i].buf == NULL;
    return used;
}

/* n bytes of the buffers at the head went out: release (and complete) the buffers
 * written to their end, empty ones included, advance the one cut. */
static void advance(bp_output *out, size_t n)
{
    out->pending -= n;
    while (out->count > 0 && out->items[out->head].buf != NULL) {
        item it = out->items[out->head];
        if (n < it.left) {
            out->items[out->head].index += n;
            out->items[out->head].left -= n;
            break;
        }
        n -= it.left;
        out->head++;
        out->count--;
        drop_buffer(&it, 1);
    }
    if (out->count == 0) out->head = 0;
    if (out->unwritable && out->pending < out->cfg.low_water_mark) set_writable(out, true);
}

/* n bytes of the region at the head went out: its offset moves on; written to its end,
 * it leaves the queue and is released. */
static void advance_region(bp_output *out, size_t n)
{
    region *r = &out->files->items[out->files->head];
    out->pending -= n;
    r->offset += (int64_t)n;
    r->left -= n;
    if (r->left == 0) {
        out->head = --out->count == 0 ? 0 : out->head + 1;
        drop_region(out, 1);
    }
    if (out->unwritable && out->pending < out->cfg.low_water_mark) set_writable(out, true);
}

/* One gathering write of the buffers at the head: what write(2) returns, and in *want the
 * bytes offered; BP_EFREED for a buffer released behind the output's back. When a region
 * follows them, MSG_MORE: with TCP_NODELAY a small response header would otherwise leave
 * alone, a segment (and on loopback, its delivery) of its own, before the sendfile that
 * comes next in this flush and pushes both. Not inlined: its iovecs stay off the stack of
 * the region's copy. */
BP__NOINLINE static long write_buffers(const bp_output *out, int fd, size_t *want, int *err)
{
    struct iovec iov[IOV_BLOCKS];
    bool region_next = false;
    int blocks = gather(out, iov, want, &region_next);
    if (blocks < 0) {
        *err = blocks;
        return -1;
    }
    return bp__os_write_blocks_flags(fd, iov, blocks, region_next ? MSG_MORE : 0);
}

/* One write of the region at the head: sendfile, or a copy once sendfile has refused its
 * fd. What write(2) returns, and in *want the bytes offered; a file that ends before the
 * region is -1 with ENODATA. */
static long write_region(bp_output *out, int fd, size_t *want)
{
    region *r = &out->files->items[out->files->head];
    size_t n = r->left < MAX_WRITE ? (size_t)r->left : MAX_WRITE;
    if (!r->copy) {
        long put = bp__os_send_file(fd, r->fd, r->offset, n);
        *want = n;
        if (put == 0) errno = ENODATA;
        if (put > 0 || !bp__os_send_file_refused(errno)) return put > 0 ? put : -1;
        r->copy = true;
    }
    return bp__os_copy_file(fd, r->fd, r->offset, n, want);
}

long bp_output_flush(bp_output *out, int fd)
{
    if (out == NULL) return bp__misuse(BP_EINVAL, __func__, "output is NULL");
    long total = 0;
    while (out->count > 0) {
        size_t want = 0;
        int err = 0;
        bool file = out->items[out->head].buf == NULL;
        if (!file && out->items[out->head].left == 0) {
            /* Completion markers at the head: everything before them is out, whatever the
             * next write finds. */
            advance(out, 0);
            continue;
        }
        long put = file ? write_region(out, fd, &want) : write_buffers(out, fd, &want, &err);
        if (err != 0) return err;
        if (put < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (put < 0) {
            int saved = errno;
            bp_output_clear(out);
            errno = saved;
            return BP_EIO;
        }
        if (file) advance_region(out, (size_t)put);
        else advance(out, (size_t)put);
        total += (long)put;
        if ((size_t)put < want) break; /* the fd took what it could: more would be EAGAIN */
    }
    return total;
}

int bp_output_writable(const bp_output *out)
{
    if (out == NULL) return bp__misuse(BP_EINVAL, __func__, "output is NULL");
    return !out->unwritable;
}

size_t bp_output_pending(const bp_output *out) { return out != NULL ? out->pending : 0; }

size_t bp_output_count(const bp_output *out) { return out != NULL ? out->count : 0; }
