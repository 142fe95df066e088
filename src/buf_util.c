/*
 * Around the buffer rather than inside it: search, comparison, hex dumps and one-line
 * descriptions, and I/O on file descriptors. Everything here reads indices and memory only
 * through the same checks as buf.c.
 */
#include "buf.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------
 * Search and compare
 * ------------------------------------------------------------------------------------- */

int bp_index_of(const bp_buf *b, size_t from, size_t to, uint8_t value, size_t *index)
{
    int rc = bp__check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(index == NULL)) return bp__misuse(BP_EINVAL, __func__, "index is NULL");
    const uint8_t *m = b->head.memory;
    size_t capacity = b->head.capacity;
    if (from <= to) {
        if (to > capacity) to = capacity;
        if (from >= to) return 0;
        const uint8_t *hit = memchr(m + from, value, to - from);
        if (hit == NULL) return 0;
        *index = (size_t)(hit - m);
        return 1;
    }
    if (from > capacity) from = capacity; /* backward: from - 1 down to `to` */
    for (size_t i = from; i > to; i--) {
        if (m[i - 1] == value) {
            *index = i - 1;
            return 1;
        }
    }
    return 0;
}

int bp_bytes_before(const bp_buf *b, uint8_t value, size_t *count)
{
    int rc = bp__check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(count == NULL)) return bp__misuse(BP_EINVAL, __func__, "count is NULL");
    size_t at;
    rc = bp_index_of(b, b->head.reader_index, b->head.writer_index, value, &at);
    if (rc == 1) *count = at - b->head.reader_index;
    return rc;
}

static int for_each(const bp_buf *b, size_t index, size_t length, bp_byte_fn fn, void *ctx, size_t *stopped_at,
                    bool descending, const char *func)
{
    int rc = bp__check_live(b, func);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(fn == NULL)) return bp__misuse(BP_EINVAL, func, "callback is NULL");
    rc = bp__check_index(b, index, length, func);
    if (BP_UNLIKELY(rc != 0)) return rc;
    for (size_t k = 0; k < length; k++) {
        size_t i = descending ? index + length - 1 - k : index + k;
        if (!fn(b->head.memory[i], ctx)) {
            if (stopped_at != NULL) *stopped_at = i;
            return 1;
        }
    }
    return 0;
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

int bp_compare(const bp_buf *x, const bp_buf *y, int *result)
{
    int rc = bp__check_live(x, __func__);
    if (rc == 0) rc = bp__check_live(y, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(result == NULL)) return bp__misuse(BP_EINVAL, __func__, "result is NULL");
    size_t nx = x->head.writer_index - x->head.reader_index, ny = y->head.writer_index - y->head.reader_index;
    size_t common = nx < ny ? nx : ny;
    int c = common ? memcmp(x->head.memory + x->head.reader_index, y->head.memory + y->head.reader_index, common) : 0;
    *result = c != 0 ? (c < 0 ? -1 : 1) : (nx < ny ? -1 : nx > ny ? 1 : 0);
    return 0;
}

int bp_equals(const bp_buf *x, const bp_buf *y)
{
    int result = 0;
    int rc = bp_compare(x, y, &result);
    return rc != 0 ? rc : result == 0;
}

/* ---------------------------------------------------------------------------------------
 * Dumps and descriptions
 * ------------------------------------------------------------------------------------- */

long bp_hex_dump(const bp_buf *b, char *out, size_t out_len)
{
    int rc = bp__check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(out == NULL && out_len > 0)) return bp__misuse(BP_EINVAL, __func__, "out is NULL");
    static const char digits[] = "0123456789abcdef";
    size_t n = b->head.writer_index - b->head.reader_index;
    const uint8_t *p = b->head.memory + b->head.reader_index;
    size_t written = 0;
    for (size_t i = 0; i < n && written + 2 < out_len; i++) {
        out[written++] = digits[p[i] >> 4];
        out[written++] = digits[p[i] & 15];
    }
    if (out_len > 0) out[written] = '\0';
    return (long)(2 * n);
}

int bp_pretty_hex_dump(const bp_buf *b, FILE *out)
{
    int rc = bp__check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(out == NULL)) return bp__misuse(BP_EINVAL, __func__, "out is NULL");
    size_t n = b->head.writer_index - b->head.reader_index;
    const uint8_t *p = b->head.memory + b->head.reader_index;
    fputs("         +-------------------------------------------------+\n"
          "         |  0  1  2  3  4  5  6  7  8  9  a  b  c  d  e  f |\n"
          "+--------+-------------------------------------------------+----------------+\n",
          out);
    for (size_t row = 0; row < n; row += 16) {
        fprintf(out, "|%08zx|", row);
        for (size_t i = row; i < row + 16; i++) {
            if (i < n) fprintf(out, " %02x", p[i]);
            else fputs("   ", out);
        }
        fputs(" |", out);
        for (size_t i = row; i < row + 16; i++)
            fputc(i < n ? (p[i] >= 0x20 && p[i] < 0x7f ? p[i] : '.') : ' ', out);
        fputs("|\n", out);
    }
    fputs("+--------+-------------------------------------------------+----------------+\n", out);
    return ferror(out) ? BP_EIO : 0;
}

long bp_describe(const bp_buf *b, char *out, size_t out_len)
{
    if (BP_UNLIKELY(out == NULL && out_len > 0)) return bp__misuse(BP_EINVAL, __func__, "out is NULL");
    if (b == NULL) return snprintf(out, out_len, "NULL");
    uint32_t count = bp__refcnt(b);
    const char *kind = b->root != NULL ? (b->view_length == SIZE_MAX ? "DuplicatedByteBuf" : "SlicedByteBuf")
                       : b->region.kind == BP__KIND_MALLOC ? "UnpooledByteBuf"
                                                           : "PooledByteBuf";
    if (count == 0) return snprintf(out, out_len, "%s(freed)", kind);
    if (count & BP__REFCNT_VIEW) bp__view_sync(b);
    return snprintf(out, out_len, "%s(ridx: %zu, widx: %zu, cap: %zu/%zu)", kind, b->head.reader_index,
                    b->head.writer_index, b->head.capacity, b->head.max_capacity);
}

/* ---------------------------------------------------------------------------------------
 * File descriptors
 * ------------------------------------------------------------------------------------- */

long bp_read_fd(bp_buf *b, int fd, size_t n)
{
    int rc = bp__check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    if (BP_UNLIKELY(n == 0)) return bp__misuse(BP_EINVAL, __func__, "length is 0");
    rc = bp__ensure_writable(b, n, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    ssize_t got;
    do {
        got = read(fd, b->head.memory + b->head.writer_index, n);
    } while (got < 0 && errno == EINTR);
    if (got < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : BP_EIO;
    if (got == 0) return BP_EOF;
    b->head.writer_index += (size_t)got;
    return (long)got;
}

long bp_write_fd(bp_buf *b, int fd, size_t n)
{
    int rc = bp__check_live(b, __func__);
    if (BP_UNLIKELY(rc != 0)) return rc;
    size_t readable = b->head.writer_index - b->head.reader_index;
    if (n > readable) n = readable;
    if (n == 0) return 0;
    const uint8_t *p = b->head.memory + b->head.reader_index;
    ssize_t put;
    /* send() with MSG_NOSIGNAL: a peer that went away is an error, not a SIGPIPE that ends
     * the process. Not a socket: plain write(). */
    do {
        put = send(fd, p, n, MSG_NOSIGNAL);
        if (put < 0 && errno == ENOTSOCK) put = write(fd, p, n);
    } while (put < 0 && errno == EINTR);
    if (put < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : BP_EIO;
    b->head.reader_index += (size_t)put;
    return (long)put;
}
