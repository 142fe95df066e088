/* SPDX-License-Identifier: MIT */
/*
 * bp_output: buffers queued for one connection and written with gathering writes (Netty's
 * ChannelOutboundBuffer), with water marks on the bytes pending. Built on the public
 * buffer API only; common.h is included for bp__misuse, os.h for the gathering write.
 *
 * The queue is an array used from `head`: buffers in the order added, each holding the
 * reference the output took over. A flush describes the queued readable bytes as iovecs
 * (bp_readable_iovec per buffer), writes them with one call, then walks the queue by what
 * went out: buffers written to their end are released, the one the write stopped in has
 * its reader index advanced, and the next flush starts there.
 */
#include "common.h"
#include "os.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

/* Blocks and bytes one write call takes at most (the kernel refuses more than IOV_MAX
 * blocks; 1 GiB keeps the sum far from SSIZE_MAX). */
#define IOV_BLOCKS (IOV_MAX < 1024 ? IOV_MAX : 1024)
#define MAX_WRITE ((size_t)1 << 30)

struct bp_output {
    bp_buf **items;
    size_t head, count, room;
    size_t pending;   /* readable bytes of the queued buffers */
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

static void release_all(bp_output *out)
{
    for (size_t i = 0; i < out->count; i++) bp_release(out->items[out->head + i]);
    out->head = out->count = 0;
    out->pending = 0;
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
    free(out);
}

/* Room for one more at the end: the used part moves down when at least half the array is
 * free before it (each buffer moves at most once per pass through the array), else the
 * array doubles. */
static int make_room(bp_output *out)
{
    if (out->head + out->count < out->room) return 0;
    if (out->head >= out->room / 2 && out->head > 0) {
        memmove(out->items, out->items + out->head, out->count * sizeof *out->items);
        out->head = 0;
        return 0;
    }
    size_t room = out->room < 16 ? 16 : out->room * 2;
    bp_buf **items = realloc(out->items, room * sizeof *items);
    if (items == NULL) return BP_ENOMEM;
    out->items = items;
    out->room = room;
    return 0;
}

int bp_output_add(bp_output *out, bp_buf *buf)
{
    if (out == NULL || buf == NULL)
        return bp__misuse(BP_EINVAL, __func__, "%s is NULL", out == NULL ? "output" : "buffer");
    if (bp_refcnt(buf) <= 0) return bp__misuse(BP_EFREED, __func__, "buffer %p already released", (void *)buf);
    size_t n = bp_readable_bytes(buf);
    if (n == 0) {
        bp_release(buf);
        return 0;
    }
    int rc = make_room(out);
    if (rc != 0) return rc;
    out->items[out->head + out->count++] = buf;
    out->pending += n;
    if (out->unwritable || out->pending <= out->cfg.high_water_mark) return 0;
    set_writable(out, false);
    return 1;
}

/* The queued bytes as blocks, from the head on, up to IOV_BLOCKS blocks and MAX_WRITE
 * bytes (a buffer may be cut anywhere: what is not written waits). Returns the number of
 * blocks, or the error of a buffer that cannot be described. */
static int gather(const bp_output *out, struct iovec *iov, size_t *bytes)
{
    int used = 0;
    size_t total = 0;
    for (size_t i = 0; i < out->count && used < IOV_BLOCKS && total < MAX_WRITE; i++) {
        int n = bp_readable_iovec(out->items[out->head + i], iov + used, IOV_BLOCKS - used);
        if (n < 0) return n;
        for (int k = 0; k < n && used < IOV_BLOCKS && total < MAX_WRITE; k++, used++) {
            if (iov[used].iov_len > MAX_WRITE - total) iov[used].iov_len = MAX_WRITE - total;
            total += iov[used].iov_len;
        }
    }
    *bytes = total;
    return used;
}

/* n bytes went out: release the buffers written to their end, advance the one cut. */
static void advance(bp_output *out, size_t n)
{
    out->pending -= n;
    while (out->count > 0) { /* also past buffers emptied behind the output's back */
        bp_buf *b = out->items[out->head];
        size_t readable = bp_readable_bytes(b);
        if (n < readable) {
            bp_skip_bytes(b, n);
            break;
        }
        bp_release(b);
        out->head++;
        out->count--;
        n -= readable;
    }
    if (out->count == 0) out->head = 0;
    if (out->unwritable && out->pending < out->cfg.low_water_mark) set_writable(out, true);
}

long bp_output_flush(bp_output *out, int fd)
{
    if (out == NULL) return bp__misuse(BP_EINVAL, __func__, "output is NULL");
    long total = 0;
    while (out->count > 0) {
        struct iovec iov[IOV_BLOCKS];
        size_t want = 0;
        int blocks = gather(out, iov, &want);
        if (blocks < 0) return blocks;
        long put = bp__os_write_blocks(fd, iov, blocks);
        if (put < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (put < 0) {
            int saved = errno;
            bp_output_clear(out);
            errno = saved;
            return BP_EIO;
        }
        advance(out, (size_t)put);
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
