/* SPDX-License-Identifier: MIT */
/*
 * Around the buffer rather than inside it: search, comparison, hex dumps and one-line
 * descriptions, and I/O on file descriptors. Everything here reads indices and memory only
 * through the same checks as buf.c.
 */
#include "buf.h"
#include "os.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------
 * Search and compare
 * ------------------------------------------------------------------------------------- */

typedef struct search_ctx {
    uint8_t value;
    size_t found;
} search_ctx;

static int find_forward(uint8_t *p, size_t n, size_t index, void *ctx)
{
    search_ctx *c = ctx;
    const uint8_t *hit = memchr(p, c->value, n);
    if (hit == NULL) return 0;
    c->found = index + (size_t)(hit - p);
    return 1;
}

static int find_backward(uint8_t *p, size_t n, size_t index, void *ctx)
{
    search_ctx *c = ctx;
    for (size_t i = n; i > 0; i--) {
        if (p[i - 1] == c->value) {
            c->found = index + i - 1;
            return 1;
        }
    }
    return 0;
}

/* Netty's AbstractByteBuf.indexOf: forward, an empty range or an empty buffer finds nothing
 * and a range past the capacity is an error (checkIndex); backward, `from` is first lowered
 * to the capacity, then the same (so `to` past the capacity is the error). */
int bp_index_of(const bp_buf *b, size_t from, size_t to, uint8_t value, size_t *index)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(index == NULL)) return bp__misuse(BP_EINVAL, __func__, "index is NULL");
    size_t capacity = b->head.capacity;
    bool forward = from <= to;
    if (!forward && from > capacity) from = capacity;
    size_t lo = forward ? from : to, hi = forward ? to : from; /* search [lo, hi) */
    if ((forward && from >= to) || capacity == 0) return 0;
    if (BP__UNLIKELY(lo > hi || hi > capacity))
        return bp__misuse(BP_ERANGE, __func__, "index %zu, length %td (expected: range(0, %zu))", lo,
                          (ptrdiff_t)(hi - lo), capacity);
    search_ctx c = {value, 0};
    rc = bp__walk(b, lo, hi - lo, !forward, forward ? find_forward : find_backward, &c);
    if (rc <= 0) return rc;
    *index = c.found;
    return 1;
}

int bp_bytes_before(const bp_buf *b, uint8_t value, size_t *count)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(count == NULL)) return bp__misuse(BP_EINVAL, __func__, "count is NULL");
    size_t at;
    rc = bp_index_of(b, b->head.reader_index, b->head.writer_index, value, &at);
    if (rc == 1) *count = at - b->head.reader_index;
    return rc;
}

typedef struct each_ctx {
    bp_byte_fn fn;
    void *ctx;
    bool descending;
    size_t stopped_at;
} each_ctx;

static int each_byte(uint8_t *p, size_t n, size_t index, void *ctx)
{
    each_ctx *c = ctx;
    for (size_t k = 0; k < n; k++) {
        size_t i = c->descending ? n - 1 - k : k;
        if (!c->fn(p[i], c->ctx)) {
            c->stopped_at = index + i;
            return 1;
        }
    }
    return 0;
}

static int for_each(const bp_buf *b, size_t index, size_t length, bp_byte_fn fn, void *ctx, size_t *stopped_at,
                    bool descending, const char *func)
{
    int rc = bp__check_live(b, func);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(fn == NULL)) return bp__misuse(BP_EINVAL, func, "callback is NULL");
    rc = bp__check_index(b, index, length, func);
    if (BP__UNLIKELY(rc != 0)) return rc;
    each_ctx c = {fn, ctx, descending, 0};
    rc = bp__walk(b, index, length, descending, each_byte, &c);
    if (rc <= 0) return rc;
    if (stopped_at != NULL) *stopped_at = c.stopped_at;
    return 1;
}

int bp_for_each_byte(const bp_buf *b, size_t index, size_t length, bp_byte_fn fn, void *ctx, size_t *stopped_at)
{
    return for_each(b, index, length, fn, ctx, stopped_at, false, __func__);
}

int bp_for_each_byte_desc(const bp_buf *b, size_t index, size_t length, bp_byte_fn fn, void *ctx,
                          size_t *stopped_at)
{
    return for_each(b, index, length, fn, ctx, stopped_at, true, __func__);
}

/* Compares x's segments with the bytes of y they line up with, a chunk at a time. */
typedef struct compare_ctx {
    const bp_buf *y;
    size_t y_minus_x; /* y's reader index - x's, modulo 2^N */
    int result;
} compare_ctx;

static int compare_segment(uint8_t *p, size_t n, size_t index, void *ctx)
{
    compare_ctx *c = ctx;
    uint8_t chunk[256];
    for (size_t done = 0; done < n; done += sizeof chunk) {
        size_t len = n - done < sizeof chunk ? n - done : sizeof chunk;
        bp__bytes_out(c->y, index + done + c->y_minus_x, chunk, len);
        int r = memcmp(p + done, chunk, len);
        if (r != 0) {
            c->result = r < 0 ? -1 : 1;
            return 1;
        }
    }
    return 0;
}

/* bp_compare, with misuse reported as `func`'s (the public function called). */
static int compare_named(const bp_buf *x, const bp_buf *y, int *result, const char *func)
{
    int rc = bp__check_live(x, func);
    if (rc == 0) rc = bp__check_live(y, func);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(result == NULL)) return bp__misuse(BP_EINVAL, func, "result is NULL");
    size_t nx = x->head.writer_index - x->head.reader_index, ny = y->head.writer_index - y->head.reader_index;
    size_t common = nx < ny ? nx : ny;
    compare_ctx c = {y, y->head.reader_index - x->head.reader_index, 0};
    bp__walk(x, x->head.reader_index, common, false, compare_segment, &c);
    *result = c.result != 0 ? c.result : (nx < ny ? -1 : nx > ny ? 1 : 0);
    return 0;
}

int bp_compare(const bp_buf *x, const bp_buf *y, int *result) { return compare_named(x, y, result, __func__); }

int bp_equals(const bp_buf *x, const bp_buf *y)
{
    int result = 0;
    int rc = compare_named(x, y, &result, __func__);
    return rc != 0 ? rc : result == 0;
}

/* ---------------------------------------------------------------------------------------
 * Dumps and descriptions
 * ------------------------------------------------------------------------------------- */

long bp_hex_dump(const bp_buf *b, char *out, size_t out_len)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(out == NULL && out_len > 0)) return bp__misuse(BP_EINVAL, __func__, "out is NULL");
    static const char digits[] = "0123456789abcdef";
    size_t n = b->head.writer_index - b->head.reader_index;
    size_t fits = out_len > 0 ? (out_len - 1) / 2 : 0; /* whole bytes that fit before the NUL */
    if (fits > n) fits = n;
    uint8_t chunk[256];
    for (size_t done = 0; done < fits; done += sizeof chunk) {
        size_t len = fits - done < sizeof chunk ? fits - done : sizeof chunk;
        bp__bytes_out(b, b->head.reader_index + done, chunk, len);
        for (size_t i = 0; i < len; i++) {
            out[2 * (done + i)] = digits[chunk[i] >> 4];
            out[2 * (done + i) + 1] = digits[chunk[i] & 15];
        }
    }
    if (out_len > 0) out[2 * fits] = '\0';
    return (long)(2 * n);
}

int bp_pretty_hex_dump(const bp_buf *b, FILE *out)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(out == NULL)) return bp__misuse(BP_EINVAL, __func__, "out is NULL");
    size_t n = b->head.writer_index - b->head.reader_index;
    fputs("         +-------------------------------------------------+\n"
          "         |  0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f |\n"
          "+--------+-------------------------------------------------+----------------+\n",
          out);
    for (size_t row = 0; row < n; row += 16) {
        uint8_t p[16];
        size_t len = n - row < 16 ? n - row : 16;
        bp__bytes_out(b, b->head.reader_index + row, p, len);
        fprintf(out, "|%08zx|", row);
        for (size_t i = 0; i < 16; i++) {
            if (i < len) fprintf(out, " %02x", p[i]);
            else fputs("   ", out);
        }
        fputs(" |", out);
        for (size_t i = 0; i < 16; i++) fputc(i < len ? (p[i] >= 0x20 && p[i] < 0x7f ? p[i] : '.') : ' ', out);
        fputs("|\n", out);
    }
    fputs("+--------+-------------------------------------------------+----------------+\n", out);
    return ferror(out) ? BP_EIO : 0;
}

long bp_describe(const bp_buf *b, char *out, size_t out_len)
{
    if (BP__UNLIKELY(out == NULL && out_len > 0)) return bp__misuse(BP_EINVAL, __func__, "out is NULL");
    if (b == NULL) return snprintf(out, out_len, "NULL");
    uint32_t count = bp__refcnt(b);
    const char *kind = b->root != NULL             ? (b->view_length == SIZE_MAX ? "DuplicatedByteBuf" : "SlicedByteBuf")
                       : b->region.kind == BP__KIND_NONE ? "CompositeByteBuf" /* also once released */
                       : b->region.kind == BP__KIND_MALLOC ? "UnpooledByteBuf"
                       : b->region.kind == BP__KIND_WRAPPED ? "WrappedByteBuf"
                                                           : "PooledByteBuf";
    if (count == 0) return snprintf(out, out_len, "%s(freed)", kind);
    if (count & BP__REFCNT_INDIRECT) bp__view_sync(b);
    if (b->composite != NULL)
        return snprintf(out, out_len, "%s(ridx: %zu, widx: %zu, cap: %zu/%zu, components: %zu)", kind,
                        b->head.reader_index, b->head.writer_index, b->head.capacity, b->head.max_capacity,
                        bp__composite_count(b));
    return snprintf(out, out_len, "%s(ridx: %zu, widx: %zu, cap: %zu/%zu)", kind, b->head.reader_index,
                    b->head.writer_index, b->head.capacity, b->head.max_capacity);
}

/* ---------------------------------------------------------------------------------------
 * File descriptors
 * ------------------------------------------------------------------------------------- */

/* The most blocks one readv / sendmsg call takes; more wait for the next call. */
#define FD_IOV_MAX 64

long bp_read_fd(bp_buf *b, int fd, size_t n)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    if (BP__UNLIKELY(n == 0)) return bp__misuse(BP_EINVAL, __func__, "length is 0");
    rc = bp__ensure_writable(b, n, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    ssize_t got;
    if (bp__contiguous(b)) {
        do {
            got = read(fd, b->head.memory + b->head.writer_index, n);
        } while (got < 0 && errno == EINTR);
    } else {
        struct iovec iov[FD_IOV_MAX];
        int blocks = bp__iovec(b, b->head.writer_index, n, iov, FD_IOV_MAX);
        do {
            got = readv(fd, iov, blocks < FD_IOV_MAX ? blocks : FD_IOV_MAX);
        } while (got < 0 && errno == EINTR);
    }
    if (got < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : BP_EIO;
    if (got == 0) return BP_EOF;
    b->head.writer_index += (size_t)got;
    return (long)got;
}

long bp_write_fd(bp_buf *b, int fd, size_t n)
{
    int rc = bp__check_live(b, __func__);
    if (BP__UNLIKELY(rc != 0)) return rc;
    size_t readable = b->head.writer_index - b->head.reader_index;
    if (n > readable) n = readable;
    if (n == 0) return 0;
    struct iovec iov[FD_IOV_MAX];
    int blocks = 1;
    if (bp__contiguous(b)) iov[0] = (struct iovec){b->head.memory + b->head.reader_index, n};
    else blocks = bp__iovec(b, b->head.reader_index, n, iov, FD_IOV_MAX);
    if (blocks > FD_IOV_MAX) blocks = FD_IOV_MAX;
    long put = bp__os_write_blocks(fd, iov, blocks);
    if (put < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : BP_EIO;
    b->head.reader_index += (size_t)put;
    return (long)put;
}
