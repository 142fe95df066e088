/* SPDX-License-Identifier: MIT */
/* The wider ByteBuf API: indices and marks, more types, zeros, buffer-to-buffer copies,
 * reserve/commit, capacity changes, discarding, search, compare, dumps and fd I/O. Every
 * test runs against the pooled and the unpooled allocator. */
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int teardown(void **state)
{
    misuse_capture_stop();
    bp_allocator_destroy(*state);
    return 0;
}

/* Buffers of 64 bytes in this suite (some expectations depend on it). */
static bp_buf *buf_with(bp_allocator *a, const char *text) { return buf_with_text(a, 64, text); }

static void test_indices_marks_skip_clear(void **state)
{
    bp_buf *b = buf_with(*state, "0123456789");
    assert_int_equal(bp_skip_bytes(b, 3), 0);
    assert_int_equal(bp_reader_index(b), 3);
    assert_int_equal(bp_mark_reader_index(b), 0);
    assert_int_equal(bp_skip_bytes(b, 4), 0);
    assert_int_equal(bp_reset_reader_index(b), 0);
    assert_int_equal(bp_reader_index(b), 3);
    assert_int_equal(bp_mark_writer_index(b), 0);
    assert_int_equal(bp_write_u8(b, 'x'), 0);
    assert_int_equal(bp_reset_writer_index(b), 0);
    assert_int_equal(bp_writer_index(b), 10);
    assert_int_equal(bp_set_index(b, 2, 5), 0);
    assert_int_equal(bp_readable_bytes(b), 3);
    assert_int_equal(bp_max_writable_bytes(b), BP_DEFAULT_MAX_CAPACITY - 5);
    misuse_capture_start();
    assert_int_equal(bp_skip_bytes(b, 4), BP_ERANGE);
    assert_int_equal(bp_set_index(b, 6, 5), BP_ERANGE);
    assert_int_equal(bp_set_index(b, 0, 65), BP_ERANGE);
    assert_int_equal(bp_reset_writer_index(b), 0); /* the mark (10) is still valid */
    assert_int_equal(bp_writer_index(b), 10);
    assert_int_equal(bp_set_index(b, 4, 5), 0);
    assert_int_equal(bp_mark_reader_index(b), 0);  /* mark 4 */
    assert_int_equal(bp_set_index(b, 0, 2), 0);
    assert_int_equal(bp_reset_reader_index(b), BP_ERANGE); /* 4 > writer 2 */
    assert_int_equal(bp_reader_index(b), 0);
    misuse_capture_stop();
    assert_int_equal(bp_clear(b), 0);
    assert_int_equal(bp_reader_index(b) + bp_writer_index(b), 0);
    uint8_t first;
    assert_int_equal(bp_get_u8(b, 0, &first), 0);
    assert_int_equal(first, '0'); /* clear leaves contents */
    bp_release(b);
}

static void test_float_double_bool_medium(void **state)
{
    bp_buf *b = bp_alloc(*state, 8);
    assert_int_equal(bp_write_f32(b, 1.5f), 0);
    assert_int_equal(bp_write_f64_le(b, -2.25), 0);
    assert_int_equal(bp_write_bool(b, 7), 0);
    assert_int_equal(bp_write_u24(b, 0x123456), 0);
    assert_int_equal(bp_write_u24_le(b, 0xFEDCBA), 0);
    assert_int_equal(bp_write_f64(b, 0.1), 0);
    assert_int_equal(bp_write_f32_le(b, 3.0f), 0);
    static const uint8_t expected[] = {0x3F, 0xC0, 0, 0,                       /* 1.5f BE */
                                       0, 0, 0, 0, 0, 0, 0x02, 0xC0,           /* -2.25 LE */
                                       1,                                      /* true */
                                       0x12, 0x34, 0x56, 0xBA, 0xDC, 0xFE,     /* mediums */
                                       0x3F, 0xB9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9A, /* 0.1 BE */
                                       0, 0, 0x40, 0x40};                      /* 3.0f LE */
    uint8_t actual[sizeof expected];
    assert_int_equal(bp_readable_bytes(b), sizeof expected);
    assert_int_equal(bp_get_bytes(b, 0, actual, sizeof actual), 0);
    assert_memory_equal(actual, expected, sizeof expected);
    float f;
    double d;
    int flag;
    uint32_t u;
    int32_t i;
    assert_int_equal(bp_read_f32(b, &f), 0);
    assert_true(f == 1.5f);
    assert_int_equal(bp_read_f64_le(b, &d), 0);
    assert_true(d == -2.25);
    assert_int_equal(bp_read_bool(b, &flag), 0);
    assert_int_equal(flag, 1);
    assert_int_equal(bp_read_u24(b, &u), 0);
    assert_int_equal(u, 0x123456);
    assert_int_equal(bp_get_i24_le(b, 16, &i), 0);
    assert_int_equal(i, (int32_t)0xFFFEDCBA); /* sign-extended */
    assert_int_equal(bp_read_i24_le(b, &i), 0);
    assert_int_equal(i, -0x012346);
    assert_int_equal(bp_read_f64(b, &d), 0);
    assert_true(d == 0.1);
    assert_int_equal(bp_get_f32_le(b, 27, &f), 0);
    assert_true(f == 3.0f);
    assert_int_equal(bp_set_i8(b, 12, 0), 0);
    assert_int_equal(bp_get_bool(b, 12, &flag), 0);
    assert_int_equal(flag, 0);
    assert_int_equal(bp_set_bool(b, 12, 1), 0);
    assert_int_equal(bp_get_u24(b, 13, &u), 0);
    assert_int_equal(u, 0x123456);
    assert_int_equal(bp_set_u24_le(b, 13, 0x010203), 0);
    assert_int_equal(bp_get_u24_le(b, 13, &u), 0);
    assert_int_equal(u, 0x010203);
    assert_int_equal(bp_set_u24(b, 13, 0xFF8000), 0);
    assert_int_equal(bp_get_i24(b, 13, &i), 0);
    assert_int_equal(i, -32768);
    assert_int_equal(bp_set_f64_le(b, 0, 1e300), 0);
    assert_int_equal(bp_get_f64_le(b, 0, &d), 0);
    assert_true(d == 1e300);
    misuse_capture_start();
    assert_int_equal(bp_get_u24(b, bp_capacity(b) - 2, &u), BP_ERANGE);
    assert_int_equal(bp_read_i24(b, &i), 0);         /* 4 readable: 00 00 40 */
    assert_int_equal(i, 0x40);
    assert_int_equal(bp_read_i24(b, &i), BP_ERANGE); /* 1 readable */
    misuse_capture_stop();
    bp_release(b);
}

static void test_zeros(void **state)
{
    bp_buf *b = bp_alloc_ex(*state, 8, 16, NULL);
    assert_int_equal(bp_write_bytes(b, "abcdefgh", 8), 0);
    assert_int_equal(bp_set_zero(b, 2, 3), 0);
    assert_int_equal(bp_write_zero(b, 8), 0);
    uint8_t got[16];
    assert_int_equal(bp_get_bytes(b, 0, got, 16), 0);
    static const uint8_t expected[16] = {'a', 'b', 0, 0, 0, 'f', 'g', 'h'};
    assert_memory_equal(got, expected, 16);
    misuse_capture_start();
    assert_int_equal(bp_write_zero(b, 1), BP_ECAPACITY);
    assert_int_equal(bp_set_zero(b, 10, 7), BP_ERANGE);
    misuse_capture_stop();
    assert_int_equal(bp_writer_index(b), 16);
    bp_release(b);
}

static void test_between_buffers(void **state)
{
    bp_buf *src = buf_with(*state, "hello world");
    bp_buf *dst = bp_alloc_ex(*state, 4, 8, NULL);
    assert_int_equal(bp_write_buf(dst, src, 5), 0);
    assert_int_equal(bp_reader_index(src), 5);
    assert_int_equal(bp_writer_index(dst), 5);
    assert_int_equal(bp_read_buf(src, dst, 1), 0); /* the space */
    char text[16] = {0};
    assert_int_equal(bp_get_bytes(dst, 0, text, 6), 0);
    assert_string_equal(text, "hello ");
    misuse_capture_start();
    assert_int_equal(bp_write_buf(dst, src, 3), BP_ECAPACITY); /* 6 + 3 > max 8 */
    assert_int_equal(bp_write_buf(dst, src, 6), BP_ERANGE);   /* src has 5 */
    assert_int_equal(bp_write_buf(src, src, 1), BP_EINVAL);
    misuse_capture_stop();
    assert_int_equal(bp_reader_index(src), 6);
    assert_int_equal(bp_writer_index(dst), 6);
    /* absolute copies, including within one buffer (overlapping) */
    assert_int_equal(bp_get_buf(src, 6, dst, 0, 5), 0);
    assert_int_equal(bp_get_bytes(dst, 0, text, 6), 0);
    assert_memory_equal(text, "world ", 6);
    assert_int_equal(bp_set_buf(src, 1, src, 0, 4), 0);
    assert_int_equal(bp_get_bytes(src, 0, text, 6), 0);
    assert_memory_equal(text, "hhell ", 6); /* [0,4) copied onto [1,5) */
    assert_int_equal(bp_reader_index(src), 6); /* absolute: no index moved */
    bp_release(src);
    misuse_capture_start();
    assert_int_equal(bp_set_buf(dst, 0, src, 0, 1), BP_EFREED);
    assert_int_equal(bp_write_buf(dst, src, 1), BP_EFREED);
    misuse_capture_stop();
    bp_release(dst);
}

static void test_reserve_commit(void **state)
{
    bp_buf *b = bp_alloc(*state, 4);
    int err = -1;
    char *p = bp_reserve(b, 100, &err);
    assert_non_null(p);
    assert_int_equal(err, 0);
    assert_true(bp_writable_bytes(b) >= 100);
    memcpy(p, "zero-copy", 9);
    assert_int_equal(bp_commit(b, 9), 0);
    char text[10] = {0};
    assert_int_equal(bp_read_bytes(b, text, 9), 0);
    assert_string_equal(text, "zero-copy");
    misuse_capture_start();
    assert_int_equal(bp_commit(b, bp_writable_bytes(b) + 1), BP_ERANGE);
    bp_buf *small = bp_alloc_ex(*state, 4, 4, NULL);
    assert_null(bp_reserve(small, 5, &err));
    assert_int_equal(err, BP_ECAPACITY);
    misuse_capture_stop();
    bp_release(small);
    bp_release(b);
}

static void test_ensure_writable_ex_codes(void **state)
{
    bp_buf *b = bp_alloc_ex(*state, 16, 100, NULL);
    assert_int_equal(bp_ensure_writable_ex(b, 16, 0), 0);
    assert_int_equal(bp_capacity(b), 16);
    assert_int_equal(bp_ensure_writable_ex(b, 101, 0), 1);
    assert_int_equal(bp_capacity(b), 16);
    assert_int_equal(bp_ensure_writable_ex(b, 40, 0), 2);
    assert_true(bp_capacity(b) >= 40 && bp_capacity(b) <= 100);
    assert_int_equal(bp_ensure_writable_ex(b, 101, 1), 3);
    assert_int_equal(bp_capacity(b), 100);
    assert_int_equal(bp_ensure_writable_ex(b, 101, 1), 1); /* already at max */
    bp_release(b);
}

static void test_set_capacity_grows_and_shrinks(void **state)
{
    bp_buf *b = bp_alloc_ex(*state, 16, 5000, NULL);
    for (int i = 0; i < 16; i++) bp_write_u8(b, (uint8_t)i);
    assert_int_equal(bp_set_capacity(b, 4000), 0);
    assert_int_equal(bp_capacity(b), 4000);
    uint8_t v;
    assert_int_equal(bp_get_u8(b, 15, &v), 0);
    assert_int_equal(v, 15);
    assert_int_equal(bp_set_index(b, 12, 16), 0);
    assert_int_equal(bp_set_capacity(b, 14), 0); /* below the writer index */
    assert_int_equal(bp_capacity(b), 14);
    assert_int_equal(bp_writer_index(b), 14);
    assert_int_equal(bp_reader_index(b), 12);
    assert_int_equal(bp_get_u8(b, 13, &v), 0);
    assert_int_equal(v, 13); /* contents kept */
    assert_int_equal(bp_set_capacity(b, 10), 0);
    assert_int_equal(bp_reader_index(b), 10);
    assert_int_equal(bp_writer_index(b), 10);
    misuse_capture_start();
    assert_int_equal(bp_set_capacity(b, 5001), BP_ECAPACITY);
    misuse_capture_stop();
    assert_int_equal(bp_capacity(b), 10);
    assert_int_equal(bp_set_capacity(b, 0), 0);
    assert_int_equal(bp_writer_index(b), 0);
    bp_release(b);
}

static void test_discard_read_bytes_shifts_marks(void **state)
{
    bp_buf *b = buf_with(*state, "abcdefghij");
    assert_int_equal(bp_skip_bytes(b, 2), 0);
    assert_int_equal(bp_mark_reader_index(b), 0); /* 2 */
    assert_int_equal(bp_skip_bytes(b, 4), 0);     /* reader 6 */
    assert_int_equal(bp_mark_writer_index(b), 0); /* 10 */
    assert_int_equal(bp_discard_read_bytes(b), 0);
    assert_int_equal(bp_reader_index(b), 0);
    assert_int_equal(bp_writer_index(b), 4);
    char text[5] = {0};
    assert_int_equal(bp_get_bytes(b, 0, text, 4), 0);
    assert_string_equal(text, "ghij");
    assert_int_equal(bp_reset_writer_index(b), 0);
    assert_int_equal(bp_writer_index(b), 4);       /* mark 10 - 6 */
    assert_int_equal(bp_reset_reader_index(b), 0);
    assert_int_equal(bp_reader_index(b), 0);       /* mark 2 - 6 stops at 0 */

    /* "some": only when everything was read or past half the capacity. */
    bp_buf *c = bp_alloc_ex(*state, 8, 8, NULL);
    bp_write_bytes(c, "12345678", 8);
    bp_skip_bytes(c, 3);
    assert_int_equal(bp_discard_some_read_bytes(c), 0);
    assert_int_equal(bp_reader_index(c), 3); /* 3 < 8 / 2: left alone */
    bp_skip_bytes(c, 1);
    assert_int_equal(bp_discard_some_read_bytes(c), 0);
    assert_int_equal(bp_reader_index(c), 0);
    assert_int_equal(bp_writer_index(c), 4);
    bp_skip_bytes(c, 4);
    assert_int_equal(bp_discard_some_read_bytes(c), 0);
    assert_int_equal(bp_writer_index(c), 0);
    bp_release(c);
    bp_release(b);
}

static int stop_at_comma(uint8_t byte, void *ctx)
{
    (*(int *)ctx)++;
    return byte != ',';
}

static void test_search(void **state)
{
    bp_buf *b = buf_with(*state, "a,b,c;d");
    /* Searches may reach past the writer index (up to the capacity): give those bytes a value. */
    assert_int_equal(bp_set_zero(b, 7, bp_capacity(b) - 7), 0);
    size_t at = 99;
    assert_int_equal(bp_index_of(b, 0, 7, ',', &at), 1);
    assert_int_equal(at, 1);
    assert_int_equal(bp_index_of(b, 2, 7, ',', &at), 1);
    assert_int_equal(at, 3);
    assert_int_equal(bp_index_of(b, 4, 7, ',', &at), 0);
    assert_int_equal(bp_index_of(b, 7, 0, ',', &at), 1); /* reversed: searches backward */
    assert_int_equal(at, 3);
    assert_int_equal(bp_index_of(b, 3, 0, ',', &at), 1); /* from - 1 = 2 down */
    assert_int_equal(at, 1);
    assert_int_equal(bp_index_of(b, 1, 0, ',', &at), 0);
    assert_int_equal(bp_index_of(b, 3, 3, ',', &at), 0); /* empty range */
    assert_int_equal(bp_index_of(b, 0, 64, ';', &at), 1); /* the whole capacity */
    assert_int_equal(at, 5);
    assert_int_equal(bp_index_of(b, SIZE_MAX, 4, ';', &at), 1); /* backward from the capacity */
    assert_int_equal(at, 5);
    size_t count;
    assert_int_equal(bp_skip_bytes(b, 2), 0);
    assert_int_equal(bp_bytes_before(b, ';', &count), 1);
    assert_int_equal(count, 3);
    assert_int_equal(bp_bytes_before(b, 'a', &count), 0); /* before the reader index */
    int calls = 0;
    assert_int_equal(bp_for_each_byte(b, 0, 7, stop_at_comma, &calls, &at), 1);
    assert_int_equal(at, 1);
    assert_int_equal(calls, 2);
    calls = 0;
    assert_int_equal(bp_for_each_byte_desc(b, 0, 7, stop_at_comma, &calls, &at), 1);
    assert_int_equal(at, 3);
    assert_int_equal(calls, 4);
    assert_int_equal(bp_for_each_byte(b, 4, 3, stop_at_comma, &calls, &at), 0);
    misuse_capture_start();
    assert_int_equal(bp_for_each_byte(b, 5, 60, stop_at_comma, &calls, &at), BP_ERANGE);
    assert_int_equal(bp_for_each_byte(b, 0, 1, NULL, NULL, &at), BP_EINVAL);
    assert_int_equal(bp_index_of(b, 0, 1, 'a', NULL), BP_EINVAL);
    misuse_capture_stop();
    bp_release(b);
}

/* Netty 4.1's AbstractByteBuf.indexOf bounds, on a 64-byte buffer: forward, an empty range
 * finds nothing and a range past the capacity throws IndexOutOfBoundsException (BP_ERANGE);
 * backward, `from` is first lowered to the capacity, then `to` past it throws. */
static void test_index_of_follows_netty(void **state)
{
    bp_buf *b = buf_with(*state, "a,b,c;d");
    assert_int_equal(bp_set_zero(b, 7, 57), 0);
    assert_int_equal(bp_set_u8(b, 63, 'z'), 0);
    size_t at = 99;
    assert_int_equal(bp_index_of(b, 0, 64, 'z', &at), 1);
    assert_int_equal(at, 63);
    assert_int_equal(bp_index_of(b, 64, 64, 'z', &at), 0);     /* from >= to: -1 */
    assert_int_equal(bp_index_of(b, 70, 70, 'z', &at), 0);     /* even past the capacity */
    assert_int_equal(bp_index_of(b, 64, 0, 'z', &at), 1);      /* backward from 63 */
    assert_int_equal(at, 63);
    assert_int_equal(bp_index_of(b, 65, 0, 'a', &at), 1);      /* from lowered to 64 */
    assert_int_equal(at, 0);
    assert_int_equal(bp_index_of(b, SIZE_MAX, 63, 'z', &at), 1);
    assert_int_equal(at, 63);
    assert_int_equal(bp_index_of(b, SIZE_MAX, 64, 'z', &at), 0); /* lowered to 64: empty */
    at = 99;
    misuse_capture_start();
    static const size_t out_of_range[][2] = {
        {0, 65},                   /* indexOf(0, capacity + 1, b) */
        {63, 65}, {64, 65}, {100, 200}, {0, SIZE_MAX}, {SIZE_MAX - 1, SIZE_MAX},
        {66, 65},                  /* backward: from lowered to 64, below to = 65 */
        {SIZE_MAX, 65}, {SIZE_MAX, SIZE_MAX - 1},
    };
    for (size_t i = 0; i < sizeof out_of_range / sizeof *out_of_range; i++) {
        last_misuse.err = 0;
        assert_int_equal(bp_index_of(b, out_of_range[i][0], out_of_range[i][1], 'z', &at), BP_ERANGE);
        assert_int_equal(last_misuse.err, BP_ERANGE);
        assert_string_equal(last_misuse.func, "bp_index_of");
    }
    misuse_capture_stop();
    assert_int_equal(at, 99); /* nothing stored */
    /* capacity 0: -1 before any bounds check, both ways */
    bp_buf *empty = bp_alloc(*state, 0);
    assert_int_equal(bp_index_of(empty, 0, 10, 0, &at), 0);
    assert_int_equal(bp_index_of(empty, 10, 0, 0, &at), 0);
    assert_int_equal(bp_index_of(empty, 0, SIZE_MAX, 0, &at), 0);
    bp_release(empty);
    /* bytes_before searches the readable bytes, never past the capacity */
    size_t count = 0;
    assert_int_equal(bp_set_writer_index(b, 64), 0);
    assert_int_equal(bp_bytes_before(b, 'z', &count), 1);
    assert_int_equal(count, 63);
    bp_release(b);
}

/* ---- Index + length sums that would wrap: every call that takes an index and a length or a
 * count, with values near SIZE_MAX, on every kind of buffer, fails with its documented code
 * and changes nothing. */

enum {
    HUGE_GET_BYTES_LENGTH, HUGE_GET_BYTES_INDEX, HUGE_SET_BYTES_LENGTH, HUGE_SET_BYTES_INDEX, HUGE_READ_BYTES,
    HUGE_WRITE_BYTES, HUGE_SET_ZERO_LENGTH, HUGE_SET_ZERO_INDEX, HUGE_WRITE_ZERO, HUGE_GET_BUF_LENGTH,
    HUGE_GET_BUF_DST_INDEX, HUGE_SET_BUF_INDEX, HUGE_SET_BUF_LENGTH, HUGE_WRITE_BUF, HUGE_READ_BUF,
    HUGE_IOVEC_LENGTH, HUGE_IOVEC_INDEX, HUGE_FOR_EACH, HUGE_FOR_EACH_DESC, HUGE_COPY, HUGE_INDEX_OF,
    HUGE_INDEX_OF_BACKWARD, HUGE_READ_FD, HUGE_SKIP, HUGE_ENSURE_WRITABLE, HUGE_RESERVE, HUGE_COMMIT,
    HUGE_SET_INDEX, HUGE_SET_WRITER_INDEX, HUGE_SET_READER_INDEX, HUGE_GET_U64, HUGE_SET_U32, HUGE_GET_U16,
    HUGE_GET_U24, HUGE_SET_U24_LE, HUGE_CALLS
};

static int accept_all(uint8_t byte, void *ctx)
{
    (void)byte;
    (void)ctx;
    return 1;
}

/* Makes call `which` on b (other: a plain buffer with 8 readable bytes; fd: a pipe's read
 * end with nothing in it); returns its result as an error code, and its expected code. */
static int huge_call(int which, bp_buf *b, bp_buf *other, int fd, int *expected)
{
    static uint8_t scratch[16];
    const size_t M = SIZE_MAX;
    struct iovec iov[4];
    size_t at;
    uint64_t u64;
    uint16_t u16;
    uint32_t u32;
    int err = 0;
    *expected = BP_ERANGE;
    switch (which) {
    case HUGE_GET_BYTES_LENGTH: return bp_get_bytes(b, 1, scratch, M);
    case HUGE_GET_BYTES_INDEX: return bp_get_bytes(b, M, scratch, 2);
    case HUGE_SET_BYTES_LENGTH: return bp_set_bytes(b, 2, scratch, M - 1);
    case HUGE_SET_BYTES_INDEX: return bp_set_bytes(b, M - 1, scratch, 2);
    case HUGE_READ_BYTES: return bp_read_bytes(b, scratch, M);
    case HUGE_WRITE_BYTES: *expected = BP_ECAPACITY; return bp_write_bytes(b, scratch, M);
    case HUGE_SET_ZERO_LENGTH: return bp_set_zero(b, 1, M);
    case HUGE_SET_ZERO_INDEX: return bp_set_zero(b, M, 1);
    case HUGE_WRITE_ZERO: *expected = BP_ECAPACITY; return bp_write_zero(b, M);
    case HUGE_GET_BUF_LENGTH: return bp_get_buf(b, 1, other, 0, M);
    case HUGE_GET_BUF_DST_INDEX: return bp_get_buf(b, 0, other, M, 2);
    case HUGE_SET_BUF_INDEX: return bp_set_buf(b, M, other, 0, 2);
    case HUGE_SET_BUF_LENGTH: return bp_set_buf(b, 1, other, 2, M - 1);
    case HUGE_WRITE_BUF: return bp_write_buf(b, other, M);
    case HUGE_READ_BUF: return bp_read_buf(b, other, M);
    case HUGE_IOVEC_LENGTH: return bp_iovec(b, 1, M, iov, 4);
    case HUGE_IOVEC_INDEX: return bp_iovec(b, M, 2, iov, 4);
    case HUGE_FOR_EACH: return bp_for_each_byte(b, 1, M, accept_all, NULL, &at);
    case HUGE_FOR_EACH_DESC: return bp_for_each_byte_desc(b, M - 1, 2, accept_all, NULL, &at);
    case HUGE_COPY: return bp_copy(b, 1, M, &err) == NULL ? err : 0;
    case HUGE_INDEX_OF: return bp_index_of(b, 1, M, 0, &at);
    case HUGE_INDEX_OF_BACKWARD: return bp_index_of(b, M, M - 1, 0, &at);
    case HUGE_READ_FD: *expected = BP_ECAPACITY; return (int)bp_read_fd(b, fd, M);
    case HUGE_SKIP: return bp_skip_bytes(b, M);
    case HUGE_ENSURE_WRITABLE: *expected = BP_ECAPACITY; return bp_ensure_writable(b, M);
    case HUGE_RESERVE: *expected = BP_ECAPACITY; return bp_reserve(b, M, &err) == NULL ? err : 0;
    case HUGE_COMMIT: return bp_commit(b, M);
    case HUGE_SET_INDEX: return bp_set_index(b, 0, M);
    case HUGE_SET_WRITER_INDEX: return bp_set_writer_index(b, M);
    case HUGE_SET_READER_INDEX: return bp_set_reader_index(b, M);
    case HUGE_GET_U64: return bp_get_u64(b, M - 3, &u64);
    case HUGE_SET_U32: return bp_set_u32(b, M - 1, 0);
    case HUGE_GET_U16: return bp_get_u16(b, M, &u16);
    case HUGE_GET_U24: return bp_get_u24(b, M - 1, &u32);
    case HUGE_SET_U24_LE: return bp_set_u24_le(b, M - 2, 0);
    default: fail();
    }
    return 0;
}

typedef struct buf_state {
    size_t reader, writer, capacity, max_capacity;
    int refcnt;
    uint8_t bytes[128];
} buf_state;

static buf_state state_of(bp_buf *b)
{
    buf_state st;
    memset(&st, 0, sizeof st);
    st.reader = bp_reader_index(b);
    st.writer = bp_writer_index(b);
    st.capacity = bp_capacity(b);
    st.max_capacity = bp_max_capacity(b);
    st.refcnt = bp_refcnt(b);
    assert_true(st.capacity <= sizeof st.bytes);
    assert_int_equal(bp_get_bytes(b, 0, st.bytes, st.capacity), 0);
    return st;
}

static void test_wrapping_ranges_change_nothing(void **state)
{
    bp_allocator *a = *state;
    bp_buf *root = buf_with(a, "0123456789abcdef");
    bp_buf *comp = bp_composite(a, 16, NULL);
    assert_int_equal(bp_composite_add(comp, buf_with_text(a, 16, "ghijkl"), 1), 0);
    assert_int_equal(bp_composite_add(comp, buf_with_text(a, 16, "mnopqrstu"), 1), 0);
    bp_buf *kinds[] = {root, bp_duplicate(root, NULL), bp_slice(root, 4, 20, NULL), comp, bp_slice(comp, 2, 10, NULL)};
    bp_buf *other = buf_with(a, "ABCDEFGH");
    assert_int_equal(bp_set_zero(root, 16, 48), 0); /* every byte compared has a value */
    assert_int_equal(bp_set_zero(other, 8, 56), 0);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    misuse_capture_start();
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        bp_buf *b = kinds[k];
        assert_non_null(b);
        assert_int_equal(bp_set_index(b, 1, 3), 0);
        for (int which = 0; which < HUGE_CALLS; which++) {
            buf_state before = state_of(b), other_before = state_of(other);
            int expected;
            last_misuse.err = 0;
            int rc = huge_call(which, b, other, fds[0], &expected);
            if (rc != expected) fail_msg("kind %zu, call %d: %d, expected %d", k, which, rc, expected);
            assert_int_equal(last_misuse.err, expected);
            buf_state after = state_of(b), other_after = state_of(other);
            if (memcmp(&before, &after, sizeof before) != 0) fail_msg("kind %zu, call %d changed the buffer", k, which);
            assert_memory_equal(&other_before, &other_after, sizeof other_before);
        }
    }
    misuse_capture_stop();
    close(fds[0]);
    close(fds[1]);
    bp_release(other);
    bp_release(comp);
    bp_release(root);
}

/* maxFastWritableBytes: a root writes that many bytes in place; one more moves it when its
 * region is the limit, or fails when max capacity is. */
static void test_max_fast_writable_bytes(void **state)
{
    bp_allocator *a = *state;
    static const size_t sizes[] = {0, 1, 100, 1000, 5000, 40000, 600000, (5u << 20) + 1000};
    uint8_t *bytes = calloc(1, (6u << 20) + 1);
    assert_non_null(bytes);
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        bp_buf *b = bp_alloc(a, sizes[i]);
        assert_int_equal(bp_write_bytes(b, bytes, sizes[i] / 3), 0);
        size_t fast = bp_max_fast_writable_bytes(b);
        assert_true(fast >= bp_writable_bytes(b));
        assert_true(fast <= bp_max_writable_bytes(b));
        void *data = bp_data(b, 0);
        assert_int_equal(bp_write_bytes(b, bytes, fast), 0);
        assert_ptr_equal(bp_data(b, 0), data);
        assert_int_equal(bp_max_fast_writable_bytes(b), 0);
        assert_int_equal(bp_write_u8(b, 1), 0);
        assert_ptr_not_equal(bp_data(b, 0), data);
        bp_release(b);
    }
    free(bytes);
    /* max capacity below the region's end (pooled: 100 bytes sit in a 112-byte slot) */
    bp_buf *capped = bp_alloc_ex(a, 100, 105, NULL);
    size_t limit = bp_allocator_is_pooled(a) ? 105 : 100; /* unpooled: malloc'ed to measure */
    assert_int_equal(bp_max_fast_writable_bytes(capped), limit);
    void *data = bp_data(capped, 0);
    assert_int_equal(bp_write_zero(capped, limit), 0);
    assert_ptr_equal(bp_data(capped, 0), data);
    assert_int_equal(bp_max_fast_writable_bytes(capped), 0);
    misuse_capture_start();
    if (limit == 105) assert_int_equal(bp_write_u8(capped, 1), BP_ECAPACITY);
    misuse_capture_stop();
    /* views and composites: their writable bytes; NULL: 0; released: the value at release */
    bp_buf *root = bp_alloc(a, 100);
    assert_int_equal(bp_write_zero(root, 10), 0);
    bp_buf *dup = bp_duplicate(root, NULL), *slice = bp_slice(root, 0, 50, NULL);
    assert_int_equal(bp_max_fast_writable_bytes(dup), 90);
    assert_int_equal(bp_max_fast_writable_bytes(slice), 0);
    assert_int_equal(bp_set_writer_index(slice, 20), 0);
    assert_int_equal(bp_max_fast_writable_bytes(slice), 30);
    bp_buf *comp = bp_composite(a, 16, NULL);
    assert_int_equal(bp_composite_add(comp, root, 0), 0); /* 10 bytes, all writable */
    assert_int_equal(bp_max_fast_writable_bytes(comp), 10);
    assert_int_equal(bp_max_fast_writable_bytes(NULL), 0);
    bp_buf *gone = bp_alloc(a, 64);
    assert_int_equal(bp_write_zero(gone, 24), 0);
    assert_int_equal(bp_release(gone), 1);
    assert_int_equal(bp_max_fast_writable_bytes(gone), 40);
    bp_release(capped);
    bp_release(comp);
}

static void test_equals_and_compare(void **state)
{
    bp_buf *x = buf_with(*state, "xxabc"), *y = buf_with(*state, "abc"), *z = buf_with(*state, "abd");
    bp_skip_bytes(x, 2);
    assert_int_equal(bp_equals(x, y), 1);
    assert_int_equal(bp_equals(y, z), 0);
    int r;
    assert_int_equal(bp_compare(y, z, &r), 0);
    assert_true(r < 0);
    assert_int_equal(bp_compare(z, y, &r), 0);
    assert_true(r > 0);
    assert_int_equal(bp_compare(x, y, &r), 0);
    assert_int_equal(r, 0);
    bp_skip_bytes(z, 3);
    assert_int_equal(bp_compare(z, y, &r), 0); /* empty sorts first */
    assert_true(r < 0);
    bp_buf *high = bp_alloc(*state, 4);
    bp_write_u8(high, 0xFF);
    assert_int_equal(bp_compare(high, y, &r), 0); /* bytes compare unsigned */
    assert_true(r > 0);
    bp_release(high);
    bp_release(x);
    bp_release(y);
    bp_release(z);
}

static void test_dumps_and_describe(void **state)
{
    bp_buf *b = bp_alloc_ex(*state, 32, 1000, NULL);
    bp_write_bytes(b, "Hello, bytepool!\x01\xff", 18);
    char hex[64];
    assert_int_equal(bp_hex_dump(b, hex, sizeof hex), 36);
    assert_string_equal(hex, "48656c6c6f2c2062797465706f6f6c2101ff");
    char tiny[5];
    assert_int_equal(bp_hex_dump(b, tiny, sizeof tiny), 36); /* truncated like snprintf */
    assert_string_equal(tiny, "4865");
    char *text = pretty_dump_text(b);
    assert_non_null(strstr(text, "|00000000| 48 65 6c 6c 6f 2c 20 62 79 74 65 70 6f 6f 6c 21 |Hello, bytepool!|"));
    assert_non_null(strstr(text, "|00000010| 01 ff                                           |..              |"));
    free(text);
    char line[128];
    bp_describe(b, line, sizeof line);
    const char *kind = bp_allocator_is_pooled(*state) ? "PooledByteBuf" : "UnpooledByteBuf";
    char expected[128];
    snprintf(expected, sizeof expected, "%s(ridx: 0, widx: 18, cap: 32/1000)", kind);
    assert_string_equal(line, expected);
    bp_release(b);
    bp_describe(b, line, sizeof line);
    snprintf(expected, sizeof expected, "%s(freed)", kind);
    assert_string_equal(line, expected);
    assert_int_equal(bp_describe(NULL, line, sizeof line), 4);
    assert_string_equal(line, "NULL");
    misuse_capture_start();
    assert_int_equal(bp_hex_dump(b, hex, sizeof hex), BP_EFREED);
    assert_int_equal(bp_pretty_hex_dump(b, stdout), BP_EFREED);
    misuse_capture_stop();
}

static void test_fd_io_pipe_blocking(void **state)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    bp_buf *out = buf_with(*state, "through a pipe");
    assert_int_equal(bp_write_fd(out, fds[1], SIZE_MAX), 14);
    assert_int_equal(bp_readable_bytes(out), 0);
    assert_int_equal(bp_write_fd(out, fds[1], SIZE_MAX), 0); /* nothing readable */
    bp_buf *in = bp_alloc(*state, 4);
    assert_int_equal(bp_read_fd(in, fds[0], 64), 14); /* grew to take 64 */
    char text[15] = {0};
    assert_int_equal(bp_read_bytes(in, text, 14), 0);
    assert_string_equal(text, "through a pipe");
    close(fds[1]);
    assert_int_equal(bp_read_fd(in, fds[0], 64), BP_EOF);
    close(fds[0]);
    errno = 0;
    assert_int_equal(bp_read_fd(in, fds[0], 64), BP_EIO); /* closed fd */
    assert_int_equal(errno, EBADF);
    misuse_capture_start();
    assert_int_equal(bp_read_fd(in, 0, 0), BP_EINVAL);
    misuse_capture_stop();
    bp_release(in);
    bp_release(out);
}

static void test_fd_io_nonblocking_socket_partial_writes(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    bp_buf *in = bp_alloc(*state, 256);
    assert_int_equal(bp_read_fd(in, sv[1], 256), 0); /* nothing yet: EAGAIN is not an error */
    /* 1 MiB does not fit the socket: writes are partial and the reader index says how far. */
    size_t total = 1 << 20;
    bp_buf *out = bp_alloc(*state, total);
    uint8_t *p = bp_data(out, 0);
    for (size_t i = 0; i < total; i++) p[i] = (uint8_t)(i * 7);
    bp_set_writer_index(out, total);
    long first = bp_write_fd(out, sv[0], SIZE_MAX);
    assert_true(first > 0 && (size_t)first < total);
    assert_int_equal(bp_reader_index(out), (size_t)first);
    assert_int_equal(bp_write_fd(out, sv[0], SIZE_MAX), 0); /* full: EAGAIN */
    /* Drain and keep writing until everything crossed; check every byte. */
    size_t received = 0;
    while (received < total) {
        long got = bp_read_fd(in, sv[1], 65536);
        assert_true(got >= 0);
        while (bp_readable_bytes(in) > 0) {
            uint8_t v = 0;
            assert_int_equal(bp_read_u8(in, &v), 0);
            if (v != (uint8_t)(received * 7)) fail_msg("byte %zu differs", received);
            received++;
        }
        bp_clear(in);
        long put = bp_write_fd(out, sv[0], SIZE_MAX);
        assert_true(put >= 0);
    }
    assert_int_equal(bp_readable_bytes(out), 0);
    /* A peer that is gone: an error, not SIGPIPE. */
    close(sv[1]);
    bp_clear(out);
    bp_write_bytes(out, "x", 1);
    errno = 0;
    assert_int_equal(bp_write_fd(out, sv[0], 1), BP_EIO);
    assert_int_equal(errno, EPIPE);
    assert_int_equal(bp_readable_bytes(out), 1); /* nothing consumed */
    close(sv[0]);
    bp_release(in);
    bp_release(out);
}

static void test_released_buffer_refuses_the_wider_api(void **state)
{
    bp_buf *b = buf_with(*state, "abc");
    bp_buf *other = buf_with(*state, "xyz");
    bp_release(b);
    misuse_capture_start();
    size_t at;
    int flag, r;
    float f;
    uint32_t u;
    int results[] = {
        bp_set_index(b, 0, 0), bp_skip_bytes(b, 0), bp_clear(b), bp_mark_reader_index(b),
        bp_reset_reader_index(b), bp_mark_writer_index(b), bp_reset_writer_index(b),
        bp_ensure_writable_ex(b, 1, 1), bp_set_capacity(b, 10), bp_discard_read_bytes(b),
        bp_discard_some_read_bytes(b), bp_commit(b, 0), bp_write_f32(b, 1), bp_get_f32(b, 0, &f),
        bp_read_bool(b, &flag), bp_write_u24(b, 1), bp_get_u24(b, 0, &u), bp_set_zero(b, 0, 1),
        bp_write_zero(b, 1), bp_write_buf(other, b, 1), bp_read_buf(b, other, 1),
        bp_index_of(b, 0, 3, 'a', &at), bp_bytes_before(b, 'a', &at), bp_equals(b, other),
        bp_compare(other, b, &r), (int)bp_read_fd(b, 0, 1), (int)bp_write_fd(b, 1, 1),
    };
    for (size_t i = 0; i < sizeof results / sizeof results[0]; i++)
        if (results[i] != BP_EFREED) fail_msg("call %zu returned %d, not BP_EFREED", i, results[i]);
    int err = 0;
    assert_null(bp_reserve(b, 1, &err));
    assert_int_equal(err, BP_EFREED);
    misuse_capture_stop();
    assert_int_equal(bp_readable_bytes(other), 3);
    bp_release(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_indices_marks_skip_clear, teardown),
        BOTH(test_float_double_bool_medium, teardown),
        BOTH(test_zeros, teardown),
        BOTH(test_between_buffers, teardown),
        BOTH(test_reserve_commit, teardown),
        BOTH(test_ensure_writable_ex_codes, teardown),
        BOTH(test_set_capacity_grows_and_shrinks, teardown),
        BOTH(test_discard_read_bytes_shifts_marks, teardown),
        BOTH(test_search, teardown),
        BOTH(test_index_of_follows_netty, teardown),
        BOTH(test_wrapping_ranges_change_nothing, teardown),
        BOTH(test_max_fast_writable_bytes, teardown),
        BOTH(test_equals_and_compare, teardown),
        BOTH(test_dumps_and_describe, teardown),
        BOTH(test_fd_io_pipe_blocking, teardown),
        BOTH(test_fd_io_nonblocking_socket_partial_writes, teardown),
        BOTH(test_released_buffer_refuses_the_wider_api, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
