/* SPDX-License-Identifier: MIT */
/* The ByteBuf slice: every test runs against the pooled and the unpooled allocator, as
 * Netty runs its ByteBuf tests for every implementation. */
#include "test_util.h"

#include "buf.h"

#include <stdlib.h>

static int setup_pooled_two_arenas(void **state)
{
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 2;
    *state = bp_allocator_new(&cfg, NULL);
    return *state == NULL;
}

static int teardown(void **state)
{
    misuse_capture_stop();
    bp_allocator_destroy(*state);
    return 0;
}

static void expect_bytes(bp_buf *b, size_t index, const uint8_t *expected, size_t n)
{
    uint8_t actual[16];
    assert_int_equal(bp_get_bytes(b, index, actual, n), 0);
    assert_memory_equal(actual, expected, n);
}

/* The seed's PoolBufTest, asserted: round two reuses the bp_buf (and, pooled, its memory). */
static void test_seed_pool_buf_test(void **state)
{
    bp_allocator *a = *state;
    void *objects[2], *memory[2];
    for (int round = 0; round < 2; round++) {
        bp_buf *b = bp_alloc(a, BP_DEFAULT_CAPACITY);
        assert_non_null(b);
        assert_int_equal(bp_capacity(b), 256);
        assert_int_equal(bp_max_capacity(b), BP_DEFAULT_MAX_CAPACITY);
        assert_int_equal(bp_refcnt(b), 1);
        objects[round] = b;
        memory[round] = bp_data(b, 0);
        assert_int_equal(bp_write_i32(b, 10), 0);
        assert_int_equal(bp_writer_index(b), 4);
        int32_t iv = 0;
        assert_int_equal(bp_read_i32(b, &iv), 0);
        assert_int_equal(iv, 10);
        assert_int_equal(bp_reader_index(b), 4);
        assert_int_equal(bp_release(b), 1);
        assert_int_equal(bp_refcnt(b), 0);
        misuse_capture_start();
        assert_int_equal(bp_write_i32(b, 10), BP_EFREED); /* IllegalReferenceCountException */
        assert_int_equal(last_misuse.err, BP_EFREED);
        assert_string_equal(last_misuse.func, "bp_write_i32");
        misuse_capture_stop();
        assert_int_equal(bp_writer_index(b), 4);
    }
    assert_ptr_equal(objects[0], objects[1]);
    if (bp_allocator_is_pooled(a)) assert_ptr_equal(memory[0], memory[1]);
}

/* bp_alloc and bp_release are inline in the header; the library's own copies (what -O0
 * builds, function pointers and other languages call) behave the same: a buffer released
 * with a writer index and a mark comes back fresh from either, the object reused. */
static void test_alloc_and_release_through_function_pointers(void **state)
{
    bp_allocator *a = *state;
    bp_buf *(*volatile alloc)(bp_allocator *, size_t) = bp_alloc;
    int (*volatile release)(bp_buf *) = bp_release;
    bp_buf *first = alloc(a, 100);
    assert_non_null(first);
    assert_int_equal(bp_write_u32(first, 7), 0);
    assert_int_equal(bp_mark_writer_index(first), 0);
    assert_int_equal(release(first), 1);
    assert_int_equal(bp_refcnt(first), 0);
    for (int round = 0; round < 2; round++) { /* the inline path, then the library's */
        bp_buf *b = round == 0 ? bp_alloc(a, 100) : alloc(a, 100);
        assert_non_null(b);
        if (bp_allocator_is_pooled(a)) assert_ptr_equal(b, first);
        assert_int_equal(bp_capacity(b), 100);
        assert_int_equal(bp_max_capacity(b), BP_DEFAULT_MAX_CAPACITY);
        assert_int_equal(bp_writer_index(b), 0);
        assert_int_equal(bp_refcnt(b), 1);
        assert_int_equal(bp_write_u32(b, 9), 0);
        assert_int_equal(bp_reset_writer_index(b), 0); /* the mark was cleared: back to 0 */
        assert_int_equal(bp_writer_index(b), 0);
        assert_int_equal(bp_write_u32(b, 9), 0);
        assert_int_equal(bp_mark_writer_index(b), 0);
        assert_int_equal(round == 0 ? release(b) : bp_release(b), 1);
    }
    misuse_capture_start();
    assert_int_equal(release(NULL), BP_EINVAL);
    assert_null(alloc(NULL, 16));
    misuse_capture_stop();
}

static void test_typed_round_trips_big_endian(void **state)
{
    bp_buf *b = bp_alloc(*state, 64);
    assert_int_equal(bp_write_u8(b, 0xAB), 0);
    assert_int_equal(bp_write_i8(b, -2), 0);
    assert_int_equal(bp_write_u16(b, 0x1234), 0);
    assert_int_equal(bp_write_i16(b, -2), 0);
    assert_int_equal(bp_write_u32(b, 0x89ABCDEFu), 0);
    assert_int_equal(bp_write_i32(b, -123456789), 0);
    assert_int_equal(bp_write_u64(b, 0x0102030405060708ull), 0);
    assert_int_equal(bp_write_i64(b, INT64_MIN), 0);
    assert_int_equal(bp_writer_index(b), 1 + 1 + 2 + 2 + 4 + 4 + 8 + 8);

    static const uint8_t expected[] = {0xAB, 0xFE, 0x12, 0x34, 0xFF, 0xFE, 0x89, 0xAB, 0xCD,
                                       0xEF, 0xF8, 0xA4, 0x32, 0xEB, 1,    2,    3,    4,
                                       5,    6,    7,    8,    0x80, 0,    0,    0,    0,
                                       0,    0,    0};
    expect_bytes(b, 0, expected, 16);
    expect_bytes(b, 16, expected + 16, sizeof expected - 16);

    uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; uint64_t u64; int64_t i64;
    assert_int_equal(bp_read_u8(b, &u8), 0);
    assert_int_equal(u8, 0xAB);
    assert_int_equal(bp_read_i8(b, &i8), 0);
    assert_int_equal(i8, -2);
    assert_int_equal(bp_read_u16(b, &u16), 0);
    assert_int_equal(u16, 0x1234);
    assert_int_equal(bp_read_i16(b, &i16), 0);
    assert_int_equal(i16, -2);
    assert_int_equal(bp_read_u32(b, &u32), 0);
    assert_int_equal(u32, 0x89ABCDEFu);
    assert_int_equal(bp_read_i32(b, &i32), 0);
    assert_int_equal(i32, -123456789);
    assert_int_equal(bp_read_u64(b, &u64), 0);
    assert_true(u64 == 0x0102030405060708ull);
    assert_int_equal(bp_read_i64(b, &i64), 0);
    assert_true(i64 == INT64_MIN);
    assert_int_equal(bp_readable_bytes(b), 0);
    bp_release(b);
}

static void test_typed_round_trips_little_endian(void **state)
{
    bp_buf *b = bp_alloc(*state, 64);
    assert_int_equal(bp_write_u16_le(b, 0x1234), 0);
    assert_int_equal(bp_write_i16_le(b, -2), 0);
    assert_int_equal(bp_write_u32_le(b, 0x89ABCDEFu), 0);
    assert_int_equal(bp_write_i32_le(b, -123456789), 0);
    assert_int_equal(bp_write_u64_le(b, 0x0102030405060708ull), 0);
    assert_int_equal(bp_write_i64_le(b, -2), 0);
    static const uint8_t expected[] = {0x34, 0x12, 0xFE, 0xFF, 0xEF, 0xCD, 0xAB, 0x89,
                                       0xEB, 0x32, 0xA4, 0xF8, 8,    7,    6,    5,
                                       4,    3,    2,    1,    0xFE, 0xFF, 0xFF, 0xFF,
                                       0xFF, 0xFF, 0xFF, 0xFF};
    expect_bytes(b, 0, expected, 16);
    expect_bytes(b, 16, expected + 16, sizeof expected - 16);
    uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; uint64_t u64; int64_t i64;
    assert_int_equal(bp_read_u16_le(b, &u16), 0);
    assert_int_equal(u16, 0x1234);
    assert_int_equal(bp_read_i16_le(b, &i16), 0);
    assert_int_equal(i16, -2);
    assert_int_equal(bp_read_u32_le(b, &u32), 0);
    assert_int_equal(u32, 0x89ABCDEFu);
    assert_int_equal(bp_read_i32_le(b, &i32), 0);
    assert_int_equal(i32, -123456789);
    assert_int_equal(bp_read_u64_le(b, &u64), 0);
    assert_true(u64 == 0x0102030405060708ull);
    assert_int_equal(bp_read_i64_le(b, &i64), 0);
    assert_true(i64 == -2);
    bp_release(b);
}

static void test_absolute_get_set_leave_indices(void **state)
{
    bp_buf *b = bp_alloc(*state, 32);
    assert_int_equal(bp_set_u32(b, 28, 0xDEADBEEFu), 0); /* the last four bytes */
    assert_int_equal(bp_set_u16_le(b, 0, 0xBEEF), 0);
    assert_int_equal(bp_set_i64(b, 8, -1), 0);
    assert_int_equal(bp_reader_index(b), 0);
    assert_int_equal(bp_writer_index(b), 0);
    uint32_t u32;
    assert_int_equal(bp_get_u32(b, 28, &u32), 0);
    assert_int_equal(u32, 0xDEADBEEFu);
    uint32_t le;
    assert_int_equal(bp_get_u32_le(b, 28, &le), 0);
    assert_int_equal(le, 0xEFBEADDEu);
    uint8_t first;
    assert_int_equal(bp_get_u8(b, 0, &first), 0);
    assert_int_equal(first, 0xEF);
    int64_t i64;
    assert_int_equal(bp_get_i64(b, 8, &i64), 0);
    assert_true(i64 == -1);
    int16_t i16;
    assert_int_equal(bp_get_i16(b, 8, &i16), 0);
    assert_int_equal(i16, -1);
    uint16_t u16;
    assert_int_equal(bp_get_u16(b, 0, &u16), 0);
    assert_int_equal(u16, 0xEFBE);
    uint64_t u64;
    assert_int_equal(bp_get_u64_le(b, 8, &u64), 0);
    assert_true(u64 == UINT64_MAX);
    int32_t i32;
    assert_int_equal(bp_set_i32_le(b, 4, -5), 0);
    assert_int_equal(bp_get_i32_le(b, 4, &i32), 0);
    assert_int_equal(i32, -5);
    int8_t i8;
    assert_int_equal(bp_set_i8(b, 3, -128), 0);
    assert_int_equal(bp_get_i8(b, 3, &i8), 0);
    assert_int_equal(i8, -128);
    assert_int_equal(bp_set_u64_le(b, 16, 7), 0);
    assert_int_equal(bp_get_i64_le(b, 16, &i64), 0);
    assert_true(i64 == 7);
    assert_int_equal(bp_set_i16_le(b, 24, -300), 0);
    assert_int_equal(bp_get_i16_le(b, 24, &i16), 0);
    assert_int_equal(i16, -300);
    assert_int_equal(bp_set_u8(b, 31, 9), 0);
    assert_int_equal(bp_get_u8(b, 31, &first), 0);
    assert_int_equal(first, 9);
    bp_release(b);
}

static void test_indices_and_bulk(void **state)
{
    bp_buf *b = bp_alloc_ex(*state, 16, 16, NULL);
    assert_int_equal(bp_writable_bytes(b), 16);
    assert_int_equal(bp_write_bytes(b, "hello, world", 12), 0);
    assert_int_equal(bp_readable_bytes(b), 12);
    assert_int_equal(bp_writable_bytes(b), 4);
    char out[16] = {0};
    assert_int_equal(bp_read_bytes(b, out, 5), 0);
    assert_string_equal(out, "hello");
    assert_int_equal(bp_reader_index(b), 5);
    assert_int_equal(bp_set_reader_index(b, 7), 0);
    memset(out, 0, sizeof out);
    assert_int_equal(bp_read_bytes(b, out, 5), 0);
    assert_string_equal(out, "world");
    assert_int_equal(bp_set_writer_index(b, 12), 0);
    assert_int_equal(bp_set_bytes(b, 0, "HELLO", 5), 0);
    memset(out, 0, sizeof out);
    assert_int_equal(bp_get_bytes(b, 0, out, 12), 0);
    assert_string_equal(out, "HELLO, world");
    assert_int_equal(bp_set_reader_index(b, 0), 0);
    assert_int_equal(bp_set_writer_index(b, 0), 0);
    assert_int_equal(bp_read_bytes(b, out, 0), 0);  /* zero-length: allowed */
    assert_int_equal(bp_write_bytes(b, NULL, 0), 0);
    assert_int_equal(bp_set_writer_index(b, 16), 0); /* up to capacity */
    assert_int_equal(bp_writable_bytes(b), 0);
    bp_release(b);
}

static void test_calculate_new_capacity(void **state)
{
    (void)state;
    const size_t mib4 = (size_t)4 << 20, max = BP_DEFAULT_MAX_CAPACITY;
    assert_int_equal(bp__calculate_new_capacity(0, max), 64);
    assert_int_equal(bp__calculate_new_capacity(1, max), 64);
    assert_int_equal(bp__calculate_new_capacity(64, max), 64);
    assert_int_equal(bp__calculate_new_capacity(65, max), 128);
    assert_int_equal(bp__calculate_new_capacity(257, max), 512);
    assert_int_equal(bp__calculate_new_capacity(mib4 - 1, max), mib4);
    assert_int_equal(bp__calculate_new_capacity(mib4, max), mib4);
    assert_int_equal(bp__calculate_new_capacity(mib4 + 1, max), 2 * mib4);
    assert_int_equal(bp__calculate_new_capacity(2 * mib4, max), 3 * mib4);
    assert_int_equal(bp__calculate_new_capacity(100, 90 + 10), 100);   /* capped at max */
    assert_int_equal(bp__calculate_new_capacity(65, 100), 100);
    assert_int_equal(bp__calculate_new_capacity(mib4 + 1, mib4 + 5), mib4 + 5);
    assert_int_equal(bp__calculate_new_capacity(max - 1, max), max);
}

static void test_growth_on_write(void **state)
{
    bp_buf *b = bp_alloc(*state, 4);
    assert_int_equal(bp_write_u32(b, 0x01020304), 0);
    assert_int_equal(bp_write_u32(b, 0x05060708), 0); /* grows: next power of two >= 64 */
    assert_int_equal(bp_capacity(b), bp_allocator_is_pooled(*state) ? 16 : 64);
    static const uint8_t expected[] = {1, 2, 3, 4, 5, 6, 7, 8};
    expect_bytes(b, 0, expected, 8);
    /* Write 100 000 bytes one int at a time: contents survive every move. */
    for (uint32_t i = 0; i < 25000; i++) assert_int_equal(bp_write_u32(b, i), 0);
    assert_int_equal(bp_writer_index(b), 8 + 100000);
    assert_true(bp_capacity(b) >= 100008);
    assert_int_equal(bp_set_reader_index(b, 8), 0);
    for (uint32_t i = 0; i < 25000; i++) {
        uint32_t v;
        assert_int_equal(bp_read_u32(b, &v), 0);
        assert_int_equal(v, i);
    }
    bp_release(b);
}

static void test_fast_writable_growth_keeps_memory(void **state)
{
    if (!bp_allocator_is_pooled(*state)) skip();
    /* 100 bytes come from the 112-byte class: growth up to 112 stays in place. */
    bp_buf *b = bp_alloc(*state, 100);
    void *memory = bp_data(b, 0);
    uint8_t sevens[100];
    memset(sevens, 7, sizeof sevens);
    assert_int_equal(bp_write_bytes(b, sevens, sizeof sevens), 0);
    uint8_t extra[12] = {0};
    assert_int_equal(bp_write_bytes(b, extra, 12), 0);
    assert_int_equal(bp_capacity(b), 112);
    assert_ptr_equal(bp_data(b, 0), memory);
    /* One more byte must move it. */
    assert_int_equal(bp_write_u8(b, 1), 0);
    assert_ptr_not_equal(bp_data(b, 0), memory);
    assert_int_equal(bp_capacity(b), 128);
    uint8_t byte;
    assert_int_equal(bp_get_u8(b, 99, &byte), 0);
    assert_int_equal(byte, 7);
    bp_release(b);
}

static void test_growth_stops_at_max_capacity(void **state)
{
    bp_buf *b = bp_alloc_ex(*state, 8, 10, NULL);
    assert_int_equal(bp_write_u64(b, 1), 0);
    assert_int_equal(bp_write_u16(b, 2), 0);  /* 10 bytes: exactly max */
    assert_int_equal(bp_capacity(b), 10);
    misuse_capture_start();
    assert_int_equal(bp_write_u8(b, 3), BP_ECAPACITY);
    assert_int_equal(last_misuse.err, BP_ECAPACITY);
    assert_int_equal(bp_ensure_writable(b, 1), BP_ECAPACITY);
    assert_int_equal(bp_write_bytes(b, "x", 1), BP_ECAPACITY);
    misuse_capture_stop();
    assert_int_equal(bp_writer_index(b), 10);
    assert_int_equal(bp_capacity(b), 10);
    assert_int_equal(bp_ensure_writable(b, 0), 0);
    bp_release(b);

    b = bp_alloc_ex(*state, 0, 1000, NULL);
    assert_int_equal(bp_capacity(b), 0);
    assert_int_equal(bp_ensure_writable(b, 65), 0);
    assert_int_equal(bp_capacity(b), 128);
    assert_int_equal(bp_ensure_writable(b, 999), 0);
    assert_int_equal(bp_capacity(b), 1000);
    bp_release(b);
}

static void test_reference_counting(void **state)
{
    bp_buf *b = bp_alloc(*state, 8);
    assert_int_equal(bp_retain(b), 0);
    assert_int_equal(bp_refcnt(b), 2);
    assert_int_equal(bp_retain_n(b, 3), 0);
    assert_int_equal(bp_refcnt(b), 5);
    assert_int_equal(bp_release(b), 0);
    assert_int_equal(bp_release_n(b, 2), 0);
    assert_int_equal(bp_refcnt(b), 2);
    misuse_capture_start();
    assert_int_equal(bp_release_n(b, 3), BP_EREFCNT);  /* more than held: nothing dropped */
    assert_int_equal(last_misuse.err, BP_EREFCNT);
    misuse_capture_stop();
    assert_int_equal(bp_refcnt(b), 2);
    assert_int_equal(bp_write_u8(b, 1), 0);           /* still usable */
    assert_int_equal(bp_release_n(b, 2), 1);
    assert_int_equal(bp_refcnt(b), 0);
    assert_ptr_equal(bp_buf_allocator(b), *state);
}

static void test_released_buffer_refuses_everything(void **state)
{
    bp_buf *b = bp_alloc(*state, 16);
    assert_int_equal(bp_write_u32(b, 5), 0);
    assert_int_equal(bp_release(b), 1);
    misuse_capture_start();
    uint8_t u8;
    uint32_t u32;
    char bytes[4];
    int results[] = {
        bp_release(b),          bp_release_n(b, 1),         bp_retain(b),
        bp_retain_n(b, 2),      bp_write_u8(b, 1),          bp_write_u32_le(b, 1),
        bp_read_u8(b, &u8),     bp_read_u32(b, &u32),       bp_get_u8(b, 0, &u8),
        bp_set_u32(b, 0, 1),    bp_get_bytes(b, 0, bytes, 4), bp_set_bytes(b, 0, "abcd", 4),
        bp_read_bytes(b, bytes, 1), bp_write_bytes(b, "a", 1), bp_set_reader_index(b, 0),
        bp_set_writer_index(b, 0), bp_ensure_writable(b, 1),
    };
    for (size_t i = 0; i < sizeof results / sizeof results[0]; i++)
        if (results[i] != BP_EFREED) fail_msg("call %zu returned %d, not BP_EFREED", i, results[i]);
    assert_int_equal(last_misuse.count, (int)(sizeof results / sizeof results[0]));
    misuse_capture_stop();
    assert_null(bp_data(b, 0));
    assert_int_equal(bp_refcnt(b), 0);
    assert_int_equal(bp_writer_index(b), 4); /* the values it had */
}

static void test_out_of_range_changes_nothing(void **state)
{
    bp_buf *b = bp_alloc_ex(*state, 16, 64, NULL);
    assert_int_equal(bp_write_u32(b, 0x11223344), 0);
    misuse_capture_start();
    uint32_t u32 = 0xFFFFFFFF;
    uint64_t u64 = 0;
    char out[32];
    assert_int_equal(bp_get_u32(b, 13, &u32), BP_ERANGE);
    assert_int_equal(last_misuse.err, BP_ERANGE);
    assert_string_equal(last_misuse.func, "bp_get_u32");
    assert_int_equal(u32, 0xFFFFFFFF); /* out untouched */
    assert_int_equal(bp_get_u64(b, SIZE_MAX - 2, &u64), BP_ERANGE); /* index + 8 overflows */
    assert_int_equal(bp_set_u64(b, 9, 1), BP_ERANGE);
    assert_int_equal(bp_set_u8(b, 16, 1), BP_ERANGE);
    assert_int_equal(bp_get_bytes(b, 10, out, 7), BP_ERANGE);
    assert_int_equal(bp_set_bytes(b, SIZE_MAX, "x", 1), BP_ERANGE);
    assert_int_equal(bp_read_u64(b, &u64), BP_ERANGE); /* 4 readable */
    assert_int_equal(bp_read_bytes(b, out, 5), BP_ERANGE);
    assert_int_equal(bp_set_reader_index(b, 5), BP_ERANGE); /* > writer */
    assert_int_equal(bp_set_writer_index(b, 17), BP_ERANGE); /* > capacity */
    assert_int_equal(bp_read_u16(b, (uint16_t *)(void *)out), 0);
    assert_int_equal(bp_set_writer_index(b, 1), BP_ERANGE); /* < reader (2) */
    assert_int_equal(bp_write_bytes(b, "x", SIZE_MAX), BP_ECAPACITY);
    misuse_capture_stop();
    assert_int_equal(bp_reader_index(b), 2);
    assert_int_equal(bp_writer_index(b), 4);
    assert_int_equal(bp_capacity(b), 16);
    assert_int_equal(bp_get_u32(b, 0, &u32), 0);
    assert_int_equal(u32, 0x11223344); /* contents untouched */
    assert_null(bp_data(b, 17));
    assert_non_null(bp_data(b, 16));
    bp_release(b);
}

static void test_null_arguments(void **state)
{
    misuse_capture_start();
    uint32_t u32;
    assert_int_equal(bp_write_u32(NULL, 1), BP_EINVAL);
    assert_int_equal(bp_read_u32(NULL, &u32), BP_EINVAL);
    assert_int_equal(bp_get_u32(NULL, 0, &u32), BP_EINVAL);
    assert_int_equal(bp_set_u32(NULL, 0, 1), BP_EINVAL);
    assert_int_equal(bp_retain(NULL), BP_EINVAL);
    assert_int_equal(bp_release(NULL), BP_EINVAL);
    assert_int_equal(bp_refcnt(NULL), BP_EINVAL);
    assert_int_equal(bp_ensure_writable(NULL, 1), BP_EINVAL);
    assert_int_equal(bp_set_reader_index(NULL, 0), BP_EINVAL);
    assert_int_equal(bp_write_bytes(NULL, "", 0), BP_EINVAL);
    assert_int_equal(bp_capacity(NULL), 0);
    assert_int_equal(bp_readable_bytes(NULL), 0);
    assert_null(bp_data(NULL, 0));
    assert_null(bp_buf_allocator(NULL));
    bp_buf *b = bp_alloc(*state, 8);
    assert_int_equal(bp_read_u32(b, NULL), BP_EINVAL);
    assert_int_equal(bp_get_u8(b, 0, NULL), BP_EINVAL);
    assert_int_equal(bp_write_bytes(b, NULL, 1), BP_EINVAL);
    assert_int_equal(bp_read_bytes(b, NULL, 1), BP_EINVAL);
    assert_int_equal(bp_get_bytes(b, 0, NULL, 1), BP_EINVAL);
    assert_int_equal(bp_set_bytes(b, 0, NULL, 1), BP_EINVAL);
    assert_int_equal(bp_retain_n(b, 0), BP_EINVAL);
    assert_int_equal(bp_release_n(b, 0), BP_EINVAL);
    assert_int_equal(last_misuse.err, BP_EINVAL);
    misuse_capture_stop();
    assert_int_equal(bp_refcnt(b), 1);
    assert_int_equal(bp_writer_index(b), 0);
    bp_release(b);
}

static void test_alloc_errors(void **state)
{
    bp_allocator *a = *state;
    int err = 0;
    misuse_capture_start();
    assert_null(bp_alloc_ex(NULL, 8, 8, &err));
    assert_int_equal(err, BP_EINVAL);
    assert_null(bp_alloc(NULL, 8));
    assert_null(bp_alloc_ex(a, 9, 8, &err));
    assert_int_equal(err, BP_EINVAL);
    assert_null(bp_alloc_ex(a, SIZE_MAX, SIZE_MAX, &err));
    assert_int_equal(err, BP_EOVERFLOW);
    assert_null(bp_alloc_ex(a, 1, BP_CAPACITY_LIMIT + 1, &err));
    assert_int_equal(err, BP_EOVERFLOW);
    assert_null(bp_alloc(a, BP_CAPACITY_LIMIT + 1));
    assert_int_equal(last_misuse.err, BP_EOVERFLOW);
    misuse_capture_stop();
    bp_allocator_stats s;
    assert_int_equal(bp_allocator_get_stats(a, &s, sizeof s), 0);
    assert_int_equal(s.active_buffers, 0);
    assert_int_equal(s.allocations, 0);
    /* A huge request is still a valid request that the OS may refuse: ENOMEM, not a crash. */
    bp_buf *b = bp_alloc_ex(a, BP_CAPACITY_LIMIT, BP_CAPACITY_LIMIT, &err);
    assert_null(b);
    assert_int_equal(err, BP_ENOMEM);
}

static void test_retain_overflow(void **state)
{
    bp_buf *b = bp_alloc(*state, 8);
    assert_int_equal(bp_retain_n(b, INT32_MAX - 1), 0);
    assert_int_equal(bp_refcnt(b), INT32_MAX);
    misuse_capture_start();
    assert_int_equal(bp_retain(b), BP_EREFCNT);
    assert_int_equal(last_misuse.err, BP_EREFCNT);
    misuse_capture_stop();
    assert_int_equal(bp_refcnt(b), INT32_MAX);
    assert_int_equal(bp_release_n(b, INT32_MAX), 1);
}

static void test_stats_follow_buffers(void **state)
{
    bp_allocator *a = *state;
    bp_allocator_stats before, during, after;
    bp_allocator_get_stats(a, &before, sizeof before);
    bp_buf *x = bp_alloc(a, 1000), *y = bp_alloc(a, 100000);
    bp_allocator_get_stats(a, &during, sizeof during);
    assert_int_equal(during.active_buffers, before.active_buffers + 2);
    /* 1000 B: its class's size; 100 000 B, above the thread-cached classes: whole pages
     * (13 of 8 KiB), not its class's 114 688 */
    size_t expected = bp_allocator_is_pooled(a) ? 1024 + 13 * 8192 : 1000 + 100000;
    assert_int_equal(during.active_bytes, before.active_bytes + expected);
    bp_release(x);
    bp_release(y);
    bp_allocator_get_stats(a, &after, sizeof after);
    assert_int_equal(after.active_buffers, before.active_buffers);
    assert_int_equal(after.active_bytes, before.active_bytes);
    /* A short out_size writes only that much. */
    bp_allocator_stats partial;
    memset(&partial, 0xAA, sizeof partial);
    assert_int_equal(bp_allocator_get_stats(a, &partial, sizeof(unsigned)), 0);
    assert_int_equal(partial.arenas, after.arenas);
    assert_int_equal(partial.page_size, (size_t)0xAAAAAAAAAAAAAAAAull);
}

#define BUF_TEST(test)                                                                     \
    cmocka_unit_test_setup_teardown(test, setup_pooled_two_arenas, teardown),              \
        cmocka_unit_test_setup_teardown(test, setup_unpooled, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        BUF_TEST(test_seed_pool_buf_test),
        BUF_TEST(test_alloc_and_release_through_function_pointers),
        BUF_TEST(test_typed_round_trips_big_endian),
        BUF_TEST(test_typed_round_trips_little_endian),
        BUF_TEST(test_absolute_get_set_leave_indices),
        BUF_TEST(test_indices_and_bulk),
        cmocka_unit_test(test_calculate_new_capacity),
        BUF_TEST(test_growth_on_write),
        BUF_TEST(test_fast_writable_growth_keeps_memory),
        BUF_TEST(test_growth_stops_at_max_capacity),
        BUF_TEST(test_reference_counting),
        BUF_TEST(test_released_buffer_refuses_everything),
        BUF_TEST(test_out_of_range_changes_nothing),
        BUF_TEST(test_null_arguments),
        BUF_TEST(test_alloc_errors),
        BUF_TEST(test_retain_overflow),
        BUF_TEST(test_stats_follow_buffers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
