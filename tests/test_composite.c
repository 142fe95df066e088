/* SPDX-License-Identifier: MIT */
/* Composite buffers: components added without copying, typed and bulk access across their
 * boundaries, growth, consolidation, nesting, views, discard, gathering (iovec, readv /
 * writev) and every misuse, against the pooled and the unpooled allocator. */
#include "test_util.h"

#include "buf.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>

static int teardown(void **state)
{
    misuse_capture_stop();
    bp_allocator_stats s;
    bp_allocator_get_stats(*state, &s, sizeof s);
    assert_int_equal(s.active_buffers, 0); /* every component went back with its composite */
    assert_int_equal(s.active_bytes, 0);
    bp_allocator_destroy(*state);
    return 0;
}

static bp_buf *composite_of(bp_allocator *a, size_t max_components, const char *const *parts)
{
    int err = 1;
    bp_buf *c = bp_composite(a, max_components, &err);
    assert_non_null(c);
    assert_int_equal(err, 0);
    for (; *parts != NULL; parts++) assert_int_equal(bp_composite_add(c, buf_with_text(a, 16, *parts), 1), 0);
    return c;
}

static void expect_n(bp_buf *b, size_t index, const char *bytes, size_t n)
{
    char got[256] = {0};
    assert_true(n < sizeof got);
    assert_int_equal(bp_get_bytes(b, index, got, n), 0);
    assert_memory_equal(got, bytes, n);
}

static void expect_bytes(bp_buf *b, size_t index, const char *text) { expect_n(b, index, text, strlen(text)); }

static void test_new_composite_is_empty(void **state)
{
    int err = 1;
    bp_buf *c = bp_composite(*state, BP_DEFAULT_MAX_COMPONENTS, &err);
    assert_non_null(c);
    assert_int_equal(err, 0);
    assert_int_equal(bp_capacity(c), 0);
    assert_int_equal(bp_max_capacity(c), BP_DEFAULT_MAX_CAPACITY);
    assert_int_equal(bp_readable_bytes(c), 0);
    assert_int_equal(bp_refcnt(c), 1);
    assert_int_equal(bp_composite_components(c), 0);
    assert_null(bp_data(c, 0)); /* no memory of its own */
    char line[128];
    bp_describe(c, line, sizeof line);
    assert_string_equal(line, "CompositeByteBuf(ridx: 0, widx: 0, cap: 0/2147483647, components: 0)");
    assert_int_equal(bp_release(c), 1);
    bp_describe(c, line, sizeof line);
    assert_string_equal(line, "CompositeByteBuf(freed)");
}

/* An allocator destroyed with composites alive (as the header allows: it takes all of its
 * memory back) frees their component tables too: the ASan (LeakSanitizer) and Valgrind
 * runs of this test report them leaked otherwise. Pooled and unpooled, nested, with views. */
static void test_destroy_with_composites_alive(void **state)
{
    (void)state;
    for (int pooled = 0; pooled < 2; pooled++) {
        bp_allocator *a = pooled ? bp_allocator_new(NULL, NULL) : bp_allocator_new_unpooled(NULL);
        assert_non_null(a);
        bp_buf *outer = bp_composite(a, BP_DEFAULT_MAX_COMPONENTS, NULL);
        for (int i = 0; i < 3; i++) {
            bp_buf *inner = bp_composite(a, 64, NULL);
            for (int k = 0; k < 20; k++) { /* past the first table: it grew */
                bp_buf *part = bp_alloc(a, 16);
                assert_int_equal(bp_write_u32(part, (uint32_t)k), 0);
                assert_int_equal(bp_composite_add(inner, part, 1), 0);
            }
            assert_int_equal(bp_composite_components(inner), 20);
            assert_int_equal(bp_composite_add(outer, inner, 1), 0);
        }
        assert_int_equal(bp_composite_components(outer), 3);
        assert_int_equal(bp_readable_bytes(outer), 3 * 20 * 4);
        bp_buf *view = bp_retained_slice(outer, 4, 100, NULL);
        assert_non_null(view);
        uint32_t v = 0;
        assert_int_equal(bp_get_u32(view, 0, &v), 0);
        assert_int_equal(v, 1);
        bp_allocator_stats s;
        bp_allocator_get_stats(a, &s, sizeof s);
        assert_int_equal(s.active_buffers, 60); /* the parts (composites are not counted) */
        assert_int_equal(s.active_views, 1);
        bp_allocator_destroy(a);
    }
}

static void test_add_takes_readable_bytes_without_copying(void **state)
{
    bp_allocator *a = *state;
    bp_buf *c = bp_composite(a, BP_DEFAULT_MAX_COMPONENTS, NULL);
    bp_buf *first = buf_with_text(a, 16, "xxHello, ");
    assert_int_equal(bp_skip_bytes(first, 2), 0); /* only the readable bytes count */
    bp_buf *second = buf_with_text(a, 16, "world");
    bp_retain(second); /* keep a handle to look at the shared memory */
    assert_int_equal(bp_composite_add(c, first, 1), 0);
    assert_int_equal(bp_composite_add(c, second, 1), 0);
    assert_int_equal(bp_composite_components(c), 2);
    assert_int_equal(bp_capacity(c), 12);
    assert_int_equal(bp_writer_index(c), 12);
    assert_int_equal(bp_readable_bytes(c), 12);
    expect_bytes(c, 0, "Hello, world");
    /* Zero-copy: a write through the composite lands in the component's memory. */
    assert_int_equal(bp_set_u8(c, 7, 'W'), 0);
    assert_int_equal(((uint8_t *)bp_data(second, 0))[0], 'W');
    assert_int_equal(bp_refcnt(second), 2);
    assert_int_equal(bp_release(c), 1);
    assert_int_equal(bp_refcnt(second), 1); /* the composite gave its reference back */
    bp_release(second);
}

static void test_add_without_advancing_gives_writable_space(void **state)
{
    bp_allocator *a = *state;
    bp_buf *c = composite_of(a, 16, (const char *const[]){"abc", NULL});
    bp_buf *room = bp_alloc(a, 8);
    assert_int_equal(bp_write_zero(room, 8), 0);
    assert_int_equal(bp_composite_add(c, room, 0), 0);
    assert_int_equal(bp_capacity(c), 11);
    assert_int_equal(bp_writer_index(c), 3);
    assert_int_equal(bp_writable_bytes(c), 8);
    assert_int_equal(bp_write_bytes(c, "defgh", 5), 0); /* fills the second component */
    assert_int_equal(bp_composite_components(c), 2);
    expect_bytes(c, 0, "abcdefgh");
    bp_release(c);
}

/* Every typed width, both byte orders, straddling a component boundary. */
static void test_typed_access_across_boundaries(void **state)
{
    bp_allocator *a = *state;
    bp_buf *c = bp_composite(a, 16, NULL);
    /* Eight components of 3 bytes: boundaries at 3, 6, 9, ... */
    for (int i = 0; i < 8; i++) {
        bp_buf *part = bp_alloc(a, 3);
        assert_int_equal(bp_write_zero(part, 3), 0);
        assert_int_equal(bp_composite_add(c, part, 0), 0);
    }
    assert_int_equal(bp_capacity(c), 24);
    assert_int_equal(bp_set_u32(c, 1, 0x01020304u), 0); /* spans components 0 and 1 */
    uint8_t raw[8];
    assert_int_equal(bp_get_bytes(c, 1, raw, 4), 0);
    assert_memory_equal(raw, ((uint8_t[]){1, 2, 3, 4}), 4);
    assert_int_equal(bp_set_u64_le(c, 5, 0x1122334455667788u), 0); /* spans 1, 2 and 3 */
    assert_int_equal(bp_get_bytes(c, 5, raw, 8), 0);
    assert_memory_equal(raw, ((uint8_t[]){0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11}), 8);
    uint64_t u64;
    assert_int_equal(bp_get_u64(c, 5, &u64), 0);
    assert_true(u64 == 0x8877665544332211u);
    uint32_t u32;
    assert_int_equal(bp_get_u32_le(c, 1, &u32), 0);
    assert_int_equal(u32, 0x04030201u);
    assert_int_equal(bp_set_u24(c, 14, 0xabcdefu), 0); /* 14,15 | 16 */
    assert_int_equal(bp_get_u24_le(c, 14, &u32), 0);
    assert_int_equal(u32, 0xefcdabu);
    int32_t i24;
    assert_int_equal(bp_get_i24(c, 14, &i24), 0);
    assert_int_equal(i24, (int32_t)0xffabcdef);
    assert_int_equal(bp_set_f64(c, 16, -2.5), 0);
    double d;
    assert_int_equal(bp_get_f64(c, 16, &d), 0);
    assert_true(d == -2.5);

    /* Relative: write a sequence straddling every boundary, read it back. */
    assert_int_equal(bp_set_index(c, 0, 0), 0);
    assert_int_equal(bp_write_u16(c, 0xa1a2), 0);
    assert_int_equal(bp_write_i32_le(c, -5), 0);
    assert_int_equal(bp_write_f32(c, 1.5f), 0);
    assert_int_equal(bp_write_u64(c, 0x0102030405060708u), 0);
    assert_int_equal(bp_write_u24_le(c, 0x123456), 0);
    assert_int_equal(bp_write_bool(c, 1), 0);
    assert_int_equal(bp_writer_index(c), 22);
    uint16_t u16;
    int32_t i32;
    float f;
    int flag;
    assert_int_equal(bp_read_u16(c, &u16), 0);
    assert_int_equal(u16, 0xa1a2);
    assert_int_equal(bp_read_i32_le(c, &i32), 0);
    assert_int_equal(i32, -5);
    assert_int_equal(bp_read_f32(c, &f), 0);
    assert_true(f == 1.5f);
    assert_int_equal(bp_read_u64(c, &u64), 0);
    assert_true(u64 == 0x0102030405060708u);
    assert_int_equal(bp_read_u24_le(c, &u32), 0);
    assert_int_equal(u32, 0x123456);
    assert_int_equal(bp_read_bool(c, &flag), 0);
    assert_int_equal(flag, 1);
    assert_int_equal(bp_get_bytes(c, 0, raw, 2), 0);
    assert_memory_equal(raw, ((uint8_t[]){0xa1, 0xa2}), 2);
    misuse_capture_start();
    assert_int_equal(bp_read_u8(c, &raw[0]), BP_ERANGE); /* nothing left to read */
    assert_int_equal(bp_get_u32(c, 21, &u32), BP_ERANGE);
    misuse_capture_stop();
    bp_release(c);
}

static void test_writing_past_capacity_adds_a_component(void **state)
{
    bp_allocator *a = *state;
    bp_buf *c = composite_of(a, 16, (const char *const[]){"0123456789", NULL});
    assert_int_equal(bp_write_u32(c, 7), 0); /* 14 bytes: calculateNewCapacity -> 64 */
    assert_int_equal(bp_composite_components(c), 2);
    assert_int_equal(bp_capacity(c), 64);
    assert_int_equal(bp_writer_index(c), 14);
    assert_int_equal(bp_write_zero(c, 50), 0); /* exactly fits */
    assert_int_equal(bp_composite_components(c), 2);
    assert_int_equal(bp_ensure_writable(c, 1), 0);
    assert_int_equal(bp_capacity(c), 128);
    assert_int_equal(bp_composite_components(c), 3);
    expect_n(c, 0, "0123456789\0\0\0\7", 14);
    /* Explicit capacity: up adds a component, down cuts the last ones. */
    assert_int_equal(bp_set_capacity(c, 200), 0);
    assert_int_equal(bp_composite_components(c), 4);
    assert_int_equal(bp_set_capacity(c, 12), 0);
    assert_int_equal(bp_capacity(c), 12);
    assert_int_equal(bp_composite_components(c), 2);
    assert_int_equal(bp_writer_index(c), 12);
    expect_n(c, 0, "0123456789\0\0", 12);
    assert_int_equal(bp_set_capacity(c, 4), 0);
    assert_int_equal(bp_composite_components(c), 1);
    assert_int_equal(bp_reader_index(c), 0);
    assert_int_equal(bp_writer_index(c), 4);
    misuse_capture_start();
    assert_int_equal(bp_set_capacity(c, BP_DEFAULT_MAX_CAPACITY + (size_t)1), BP_ECAPACITY);
    misuse_capture_stop();
    bp_release(c);
}

static void test_consolidates_past_max_components(void **state)
{
    bp_allocator *a = *state;
    bp_buf *c = composite_of(a, 3, (const char *const[]){"ab", "cd", "ef", NULL});
    assert_int_equal(bp_composite_components(c), 3);
    assert_int_equal(bp_skip_bytes(c, 1), 0);
    assert_int_equal(bp_composite_add(c, buf_with_text(a, 16, "gh"), 1), 0); /* the 4th */
    assert_int_equal(bp_composite_components(c), 1);
    assert_int_equal(bp_capacity(c), 8);
    assert_int_equal(bp_reader_index(c), 1);
    assert_int_equal(bp_writer_index(c), 8);
    expect_bytes(c, 0, "abcdefgh");
    assert_null(bp_data(c, 0)); /* still a composite: no bp_data */
    /* Explicit consolidation of several into one. */
    assert_int_equal(bp_composite_add(c, buf_with_text(a, 16, "ij"), 1), 0);
    assert_int_equal(bp_composite_components(c), 2);
    assert_int_equal(bp_composite_consolidate(c), 0);
    assert_int_equal(bp_composite_components(c), 1);
    expect_bytes(c, 0, "abcdefghij");
    assert_int_equal(bp_composite_consolidate(c), 0); /* one: nothing to do */
    bp_release(c);

    /* Growth past the maximum consolidates too. */
    c = composite_of(a, 1, (const char *const[]){"xy", NULL});
    assert_int_equal(bp_write_bytes(c, "z", 1), 0);
    assert_int_equal(bp_composite_components(c), 1);
    expect_bytes(c, 0, "xyz");
    bp_release(c);
}

static void test_nested_composites(void **state)
{
    bp_allocator *a = *state;
    bp_buf *inner = composite_of(a, 16, (const char *const[]){"in", "ner", NULL});
    bp_buf *outer = composite_of(a, 16, (const char *const[]){"<", NULL});
    assert_int_equal(bp_composite_add(outer, inner, 1), 0);
    assert_int_equal(bp_composite_add(outer, buf_with_text(a, 16, ">"), 1), 0);
    assert_int_equal(bp_composite_components(outer), 3);
    expect_bytes(outer, 0, "<inner>");
    uint32_t v;
    assert_int_equal(bp_get_u32(outer, 2, &v), 0); /* "nner": across inner's components */
    assert_int_equal(v, (uint32_t)'n' << 24 | (uint32_t)'n' << 16 | (uint32_t)'e' << 8 | 'r');
    assert_int_equal(bp_get_u32(outer, 3, &v), 0); /* "ner>": out of inner into outer's next */
    assert_int_equal(v, (uint32_t)'n' << 24 | (uint32_t)'e' << 16 | (uint32_t)'r' << 8 | '>');
    assert_int_equal(bp_set_u16(outer, 0, 0x5b49), 0); /* "[I" writes into two levels */
    expect_bytes(outer, 0, "[Inner>");
    expect_bytes(inner, 0, "Inner");
    struct iovec iov[8];
    assert_int_equal(bp_readable_iovec(outer, iov, 8), 4); /* "<" "in" "ner" ">" */
    assert_int_equal(iov[1].iov_len, 2);
    assert_memory_equal(iov[2].iov_base, "ner", 3);

    /* A composite cannot hold itself, directly or through what it holds. */
    misuse_capture_start();
    assert_int_equal(bp_composite_add(outer, outer, 1), BP_EINVAL);
    bp_buf *dup = bp_duplicate(outer, NULL);
    assert_int_equal(bp_composite_add(outer, dup, 1), BP_EINVAL);
    bp_retain(outer);
    assert_int_equal(bp_composite_add(inner, outer, 1), BP_EINVAL); /* inner is inside outer */
    assert_int_equal(last_misuse.err, BP_EINVAL);
    misuse_capture_stop();
    assert_int_equal(bp_release(outer), 0);
    assert_int_equal(bp_composite_components(outer), 3); /* nothing changed */
    expect_bytes(outer, 0, "[Inner>");
    assert_int_equal(bp_release(outer), 1); /* releases inner, which releases its parts */
}

static void test_views_of_composites(void **state)
{
    bp_allocator *a = *state;
    bp_buf *c = composite_of(a, 16, (const char *const[]){"abc", "def", "ghi", NULL});
    bp_buf *s = bp_slice(c, 2, 5, NULL); /* "cdefg" across three components */
    assert_non_null(s);
    expect_bytes(s, 0, "cdefg");
    assert_null(bp_data(s, 0));
    assert_int_equal(bp_set_u8(s, 1, 'D'), 0);
    expect_bytes(c, 0, "abcDefghi");
    size_t at = 0;
    assert_int_equal(bp_index_of(s, 0, 5, 'f', &at), 1);
    assert_int_equal(at, 3);
    assert_int_equal(bp_refcnt(s), 1); /* shares the composite's count */
    bp_buf *r = bp_retained_slice(c, 4, 4, NULL); /* "efgh" */
    assert_int_equal(bp_refcnt(c), 2);
    bp_buf *d = bp_duplicate(c, NULL);
    assert_int_equal(bp_write_bytes(d, "jk", 2), 0); /* a duplicate grows the composite */
    assert_int_equal(bp_composite_components(c), 4);
    assert_int_equal(bp_capacity(c), 64);
    expect_bytes(c, 9, "jk");
    assert_int_equal(bp_release(c), 0); /* the retained slice still holds it */
    expect_bytes(r, 0, "efgh");
    expect_bytes(s, 0, "cDefg"); /* plain views live as long as the composite */
    assert_int_equal(bp_refcnt(s), 1);
    assert_int_equal(bp_release(r), 1); /* the last hold: composite, its views and components go */
}

static void test_discard_read_bytes_drops_components(void **state)
{
    bp_allocator *a = *state;
    bp_buf *c = composite_of(a, 16, (const char *const[]){"abc", "def", "ghi", NULL});
    assert_int_equal(bp_skip_bytes(c, 4), 0);
    assert_int_equal(bp_mark_reader_index(c), 0); /* 4 */
    assert_int_equal(bp_skip_bytes(c, 1), 0);     /* reader 5: "abc" and "d" read */
    assert_int_equal(bp_discard_some_read_bytes(c), 0); /* only whole components */
    assert_int_equal(bp_composite_components(c), 2);
    assert_int_equal(bp_capacity(c), 6);
    assert_int_equal(bp_reader_index(c), 2);
    assert_int_equal(bp_writer_index(c), 6);
    expect_bytes(c, 0, "defghi");
    assert_int_equal(bp_discard_read_bytes(c), 0); /* the read part of "def" too */
    assert_int_equal(bp_composite_components(c), 2);
    assert_int_equal(bp_capacity(c), 4);
    assert_int_equal(bp_reader_index(c), 0);
    assert_int_equal(bp_writer_index(c), 4);
    expect_bytes(c, 0, "fghi");
    assert_int_equal(bp_reset_reader_index(c), 0); /* the mark 4 shifted by 3 then 2: 0 */
    assert_int_equal(bp_reader_index(c), 0);
    assert_int_equal(bp_skip_bytes(c, 4), 0);
    assert_int_equal(bp_discard_read_bytes(c), 0); /* everything read: no components left */
    assert_int_equal(bp_composite_components(c), 0);
    assert_int_equal(bp_capacity(c), 0);
    assert_int_equal(bp_write_bytes(c, "again", 5), 0);
    expect_bytes(c, 0, "again");
    bp_release(c);

    /* A duplicate of a composite discards by moving bytes, like any buffer. */
    c = composite_of(a, 16, (const char *const[]){"abc", "def", NULL});
    bp_buf *d = bp_duplicate(c, NULL);
    assert_int_equal(bp_skip_bytes(d, 2), 0);
    assert_int_equal(bp_discard_read_bytes(d), 0);
    expect_bytes(c, 0, "cdef");
    assert_int_equal(bp_writer_index(d), 4);
    bp_release(c);
}

static void test_search_compare_and_dump(void **state)
{
    bp_allocator *a = *state;
    bp_buf *c = composite_of(a, 16, (const char *const[]){"a,b", ",c,", "d", NULL});
    size_t at = 0;
    assert_int_equal(bp_index_of(c, 2, 7, ',', &at), 1);
    assert_int_equal(at, 3);
    assert_int_equal(bp_index_of(c, 7, 0, ',', &at), 1); /* backward from 6 */
    assert_int_equal(at, 5);
    assert_int_equal(bp_index_of(c, 5, 0, ',', &at), 1);
    assert_int_equal(at, 3);
    assert_int_equal(bp_index_of(c, 100, 6, ',', &at), 0); /* clamped: (6, 7] has none */
    assert_int_equal(bp_index_of(c, 4, 5, ',', &at), 0);
    size_t before = 0;
    assert_int_equal(bp_skip_bytes(c, 2), 0);
    assert_int_equal(bp_bytes_before(c, 'c', &before), 1);
    assert_int_equal(before, 2);
    assert_int_equal(bp_set_reader_index(c, 0), 0);

    bp_buf *flat = buf_with_text(a, 16, "a,b,c,d");
    assert_int_equal(bp_equals(c, flat), 1);
    int order = 9;
    assert_int_equal(bp_compare(c, flat, &order), 0);
    assert_int_equal(order, 0);
    assert_int_equal(bp_set_u8(flat, 6, 'e'), 0);
    assert_int_equal(bp_compare(c, flat, &order), 0);
    assert_int_equal(order, -1);
    assert_int_equal(bp_compare(flat, c, &order), 0);
    assert_int_equal(order, 1);
    bp_release(flat);

    char hex[32];
    assert_int_equal(bp_hex_dump(c, hex, sizeof hex), 14);
    assert_string_equal(hex, "612c622c632c64");
    assert_int_equal(bp_hex_dump(c, hex, 6), 14); /* truncated to whole bytes */
    assert_string_equal(hex, "612c");

    char *text = pretty_dump_text(c);
    assert_non_null(strstr(text, "|00000000| 61 2c 62 2c 63 2c 64    "));
    assert_non_null(strstr(text, " |a,b,c,d         |\n"));
    free(text);
    bp_release(c);
}

static int stop_at_comma(uint8_t byte, void *ctx)
{
    char **cursor = ctx;
    *(*cursor)++ = (char)byte;
    return byte != ',';
}

static void test_for_each_across_components(void **state)
{
    bp_buf *c = composite_of(*state, 16, (const char *const[]){"ab", "c,", "de", NULL});
    char seen[8] = {0}, *cursor = seen;
    size_t stopped = 0;
    assert_int_equal(bp_for_each_byte(c, 0, 6, stop_at_comma, &cursor, &stopped), 1);
    assert_int_equal(stopped, 3);
    assert_string_equal(seen, "abc,");
    memset(seen, 0, sizeof seen);
    cursor = seen;
    assert_int_equal(bp_for_each_byte_desc(c, 0, 6, stop_at_comma, &cursor, &stopped), 1);
    assert_int_equal(stopped, 3);
    assert_string_equal(seen, "ed,");
    memset(seen, 0, sizeof seen);
    cursor = seen;
    assert_int_equal(bp_for_each_byte_desc(c, 4, 2, stop_at_comma, &cursor, &stopped), 0);
    assert_string_equal(seen, "ed");
    misuse_capture_start();
    assert_int_equal(bp_for_each_byte(c, 0, 6, NULL, NULL, &stopped), BP_EINVAL);
    assert_int_equal(bp_for_each_byte(c, 1, 6, stop_at_comma, &cursor, &stopped), BP_ERANGE);
    misuse_capture_stop();
    bp_release(c);
}

static void test_iovec_describes_the_blocks(void **state)
{
    bp_allocator *a = *state;
    bp_buf *c = composite_of(a, 16, (const char *const[]){"abc", "de", "fgh", NULL});
    struct iovec iov[4];
    assert_int_equal(bp_readable_iovec(c, iov, 4), 3);
    assert_int_equal(iov[0].iov_len, 3);
    assert_memory_equal(iov[0].iov_base, "abc", 3);
    assert_int_equal(iov[1].iov_len, 2);
    assert_memory_equal(iov[2].iov_base, "fgh", 3);
    assert_int_equal(bp_iovec(c, 2, 2, iov, 4), 2); /* "c" | "d" */
    assert_int_equal(iov[0].iov_len, 1);
    assert_memory_equal(iov[0].iov_base, "c", 1);
    assert_int_equal(iov[1].iov_len, 1);
    assert_memory_equal(iov[1].iov_base, "d", 1);
    assert_int_equal(bp_iovec(c, 0, 8, NULL, 0), 3); /* asking how many */
    struct iovec one[1] = {{NULL, 0}};
    assert_int_equal(bp_iovec(c, 0, 8, one, 1), 3); /* too small: the first is filled */
    assert_int_equal(one[0].iov_len, 3);
    assert_int_equal(bp_iovec(c, 8, 0, iov, 4), 0);

    bp_buf *plain = buf_with_text(a, 16, "plain");
    assert_int_equal(bp_readable_iovec(plain, iov, 4), 1);
    assert_ptr_equal(iov[0].iov_base, bp_data(plain, 0));
    assert_int_equal(iov[0].iov_len, 5);

    misuse_capture_start();
    assert_int_equal(bp_iovec(c, 0, 9, iov, 4), BP_ERANGE);
    assert_int_equal(bp_iovec(c, 0, 8, NULL, 1), BP_EINVAL);
    assert_int_equal(bp_iovec(c, 0, 8, iov, -1), BP_EINVAL);
    assert_int_equal(bp_readable_iovec(NULL, iov, 4), BP_EINVAL);
    assert_string_equal(last_misuse.func, "bp_readable_iovec");
    misuse_capture_stop();
    bp_release(plain);
    bp_release(c);
}

static void set_nonblocking(int fd) { assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0); }

static void test_writev_and_readv_over_a_socketpair(void **state)
{
    bp_allocator *a = *state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    bp_buf *c = composite_of(a, 16, (const char *const[]){"GET ", "/index", " HTTP/1.1\r\n", NULL});
    assert_int_equal(bp_write_fd(c, sv[0], SIZE_MAX), 21); /* one gathering write */
    assert_int_equal(bp_readable_bytes(c), 0);
    bp_release(c);

    /* The reading side: a composite with room split over three components. */
    bp_buf *in = bp_composite(a, 16, NULL);
    for (int i = 0; i < 3; i++) {
        bp_buf *part = bp_alloc(a, 7);
        assert_int_equal(bp_write_zero(part, 7), 0);
        assert_int_equal(bp_composite_add(in, part, 0), 0);
    }
    assert_int_equal(bp_read_fd(in, sv[1], 21), 21); /* one readv across all three */
    assert_int_equal(bp_composite_components(in), 3);
    expect_bytes(in, 0, "GET /index HTTP/1.1\r\n");
    set_nonblocking(sv[1]);
    assert_int_equal(bp_read_fd(in, sv[1], 4), 0); /* EAGAIN: grown, nothing read */
    assert_int_equal(bp_writer_index(in), 21);
    close(sv[0]);
    assert_int_equal(bp_read_fd(in, sv[1], 4), BP_EOF);
    close(sv[1]);
    bp_release(in);
}

static void test_partial_gathering_write(void **state)
{
    bp_allocator *a = *state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int small = 4096;
    assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    set_nonblocking(sv[0]);
    bp_buf *c = bp_composite(a, 64, NULL);
    for (int i = 0; i < 40; i++) {
        bp_buf *part = bp_alloc(a, 8192);
        for (int k = 0; k < 8192; k++) bp_write_u8(part, (uint8_t)(i * 31 + k));
        assert_int_equal(bp_composite_add(c, part, 1), 0);
    }
    size_t total = 40 * 8192, sent = 0, received = 0;
    uint8_t chunk[65536];
    bool ok = true;
    while (received < total) {
        long put = bp_write_fd(c, sv[0], SIZE_MAX);
        assert_true(put >= 0);
        sent += (size_t)put;
        assert_int_equal(bp_reader_index(c), sent); /* advanced by exactly what went */
        ssize_t got = recv(sv[1], chunk, sizeof chunk, MSG_DONTWAIT);
        if (got < 0) {
            assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
            continue;
        }
        for (ssize_t k = 0; k < got; k++) {
            size_t pos = received + (size_t)k;
            ok = ok && chunk[k] == (uint8_t)((pos / 8192) * 31 + pos % 8192);
        }
        received += (size_t)got;
    }
    assert_true(ok);
    assert_int_equal(sent, total);
    close(sv[0]);
    close(sv[1]);
    bp_release(c);
}

static void test_reserve_gives_one_block(void **state)
{
    bp_allocator *a = *state;
    bp_buf *c = composite_of(a, 16, (const char *const[]){"head", NULL});
    int err = 1;
    uint8_t *p = bp_reserve(c, 10, &err); /* grows: a fresh component */
    assert_non_null(p);
    assert_int_equal(err, 0);
    memcpy(p, "0123456789", 10);
    assert_int_equal(bp_commit(c, 10), 0);
    expect_bytes(c, 0, "head0123456789");
    /* Writable space split over two components: the tail becomes one block. */
    bp_buf *c2 = bp_composite(a, 16, NULL);
    for (int i = 0; i < 2; i++) {
        bp_buf *part = bp_alloc(a, 6);
        assert_int_equal(bp_write_zero(part, 6), 0);
        assert_int_equal(bp_composite_add(c2, part, 0), 0);
    }
    assert_int_equal(bp_write_bytes(c2, "ab", 2), 0);
    p = bp_reserve(c2, 8, &err);
    assert_non_null(p);
    struct iovec iov[4];
    assert_int_equal(bp_iovec(c2, 2, 8, iov, 4), 1);
    assert_ptr_equal(iov[0].iov_base, p);
    assert_int_equal(bp_capacity(c2), 12); /* never smaller than it was */
    memcpy(p, "cdefghij", 8);
    assert_int_equal(bp_commit(c2, 8), 0);
    expect_bytes(c2, 0, "abcdefghij");
    assert_non_null(bp_reserve(c2, 0, &err));
    assert_int_equal(err, 0);
    /* A view of a composite cannot rearrange it. */
    bp_buf *d = bp_duplicate(c, NULL);
    assert_int_equal(bp_set_index(d, 0, 2), 0);
    misuse_capture_start();
    assert_null(bp_reserve(d, 6, &err)); /* bytes 2..7 span "head" and the next component */
    assert_int_equal(err, BP_EINVAL);
    misuse_capture_stop();
    assert_int_equal(bp_writer_index(d), 2);
    assert_non_null(bp_reserve(d, 2, &err)); /* 2..3: one block */
    bp_release(c2);
    bp_release(c);
}

static void test_copy_and_transfers(void **state)
{
    bp_allocator *a = *state;
    bp_buf *c = composite_of(a, 16, (const char *const[]){"abc", "def", NULL});
    bp_buf *copy = bp_copy(c, 1, 4, NULL);
    assert_non_null(copy);
    expect_bytes(copy, 0, "bcde");
    assert_non_null(bp_data(copy, 0)); /* a copy is a plain buffer */
    bp_buf *other = composite_of(a, 16, (const char *const[]){"12", "34", NULL});
    assert_int_equal(bp_write_buf(other, c, 5), 0); /* scattered to scattered */
    expect_bytes(other, 0, "1234abcde");
    assert_int_equal(bp_reader_index(c), 5);
    assert_int_equal(bp_set_buf(c, 0, other, 2, 4), 0);
    expect_bytes(c, 0, "34abef");
    assert_int_equal(bp_set_buf(c, 1, c, 0, 5), 0); /* overlapping, moving up */
    expect_bytes(c, 0, "334abe");
    assert_int_equal(bp_set_buf(c, 0, c, 1, 5), 0); /* overlapping, moving down */
    expect_bytes(c, 0, "34abee");
    assert_int_equal(bp_get_buf(c, 0, copy, 0, 4), 0);
    expect_bytes(copy, 0, "34ab");
    bp_release(copy);
    bp_release(other);
    bp_release(c);
}

/* Overlapping moves longer than the bounce buffer, both ways, against memmove. */
static void test_overlapping_moves_within_a_composite(void **state)
{
    bp_allocator *a = *state;
    enum { PART = 1500, PARTS = 4, TOTAL = PART * PARTS };
    static uint8_t shadow[TOTAL], got[TOTAL];
    bp_buf *c = bp_composite(a, 16, NULL);
    for (int i = 0; i < PARTS; i++) {
        bp_buf *part = bp_alloc(a, PART);
        for (int k = 0; k < PART; k++) {
            shadow[i * PART + k] = (uint8_t)(i * PART + k) ^ (uint8_t)(k >> 8);
            bp_write_u8(part, shadow[i * PART + k]);
        }
        assert_int_equal(bp_composite_add(c, part, 1), 0);
    }
    bp_buf *d = bp_duplicate(c, NULL); /* a second index space onto the same bytes */
    assert_int_equal(bp_set_buf(c, 700, d, 100, 4000), 0);
    memmove(shadow + 700, shadow + 100, 4000);
    assert_int_equal(bp_get_bytes(c, 0, got, TOTAL), 0);
    assert_memory_equal(got, shadow, TOTAL);
    assert_int_equal(bp_set_buf(d, 50, c, 2900, 3000), 0);
    memmove(shadow + 50, shadow + 2900, 3000);
    assert_int_equal(bp_get_bytes(c, 0, got, TOTAL), 0);
    assert_memory_equal(got, shadow, TOTAL);
    bp_release(c);
}

static void test_misuse_changes_nothing(void **state)
{
    bp_allocator *a = *state;
    misuse_capture_start();
    int err = 0;
    assert_null(bp_composite(NULL, 16, &err));
    assert_int_equal(err, BP_EINVAL);
    assert_null(bp_composite(a, 0, &err));
    assert_int_equal(err, BP_EINVAL);
    assert_int_equal(bp_composite_add(NULL, NULL, 1), BP_EINVAL);
    assert_int_equal(bp_composite_components(NULL), BP_EINVAL);
    assert_int_equal(bp_composite_consolidate(NULL), BP_EINVAL);

    bp_buf *plain = buf_with_text(a, 16, "x");
    bp_buf *part = buf_with_text(a, 16, "y");
    assert_int_equal(bp_composite_add(plain, part, 1), BP_EINVAL); /* not a composite */
    assert_int_equal(bp_composite_components(plain), BP_EINVAL);
    assert_int_equal(bp_composite_consolidate(plain), BP_EINVAL);
    assert_int_equal(bp_refcnt(part), 1); /* still the caller's */

    bp_buf *c = composite_of(a, 16, (const char *const[]){"abc", NULL});
    assert_int_equal(bp_composite_add(c, NULL, 1), BP_EINVAL);
    bp_release(plain);
    assert_int_equal(bp_composite_add(c, plain, 1), BP_EFREED);
    assert_int_equal(bp_composite_components(c), 1);
    assert_int_equal(bp_capacity(c), 3);
    assert_int_equal(bp_set_writer_index(c, 4), BP_ERANGE);
    assert_int_equal(bp_set_bytes(c, 2, "zz", 2), BP_ERANGE);
    expect_bytes(c, 0, "abc");
    assert_int_equal(bp_writer_index(c), 3);

    /* Past max capacity. */
    bp_buf *big = bp_composite(a, 16, NULL);
    bp_buf *huge_part = bp_alloc(a, 64);
    assert_int_equal(bp_set_writer_index(huge_part, 64), 0);
    assert_int_equal(bp_composite_add(big, huge_part, 1), 0);
    assert_int_equal(bp_write_zero(big, BP_DEFAULT_MAX_CAPACITY), BP_ECAPACITY);
    assert_int_equal(bp_capacity(big), 64);
    bp_release(big);

    /* A component released behind the composite's back is caught, not read. */
    bp_retain(part);
    assert_int_equal(bp_composite_add(c, part, 1), 0);
    assert_int_equal(bp_release_n(part, 2), 1); /* the caller took the composite's reference too */
    uint8_t v = 0;
    last_misuse.err = 0;
    assert_int_equal(bp_get_u8(c, 0, &v), BP_EFREED);
    assert_non_null(strstr(last_misuse.message, "released behind its back"));
    assert_int_equal(bp_write_u8(c, 1), BP_EFREED);
    assert_int_equal(bp_writer_index(c), 4);
    /* The composite still goes: its other component is released, the gone one reported. */
    last_misuse.count = 0;
    assert_int_equal(bp_release(c), 1);
    assert_int_equal(last_misuse.count, 1);
    assert_int_equal(last_misuse.err, BP_EFREED);
    misuse_capture_stop();
}

static void test_released_composite_refuses_everything(void **state)
{
    bp_buf *c = composite_of(*state, 16, (const char *const[]){"abc", NULL});
    assert_int_equal(bp_retain(c), 0);
    assert_int_equal(bp_refcnt(c), 2);
    assert_int_equal(bp_release(c), 0);
    assert_int_equal(bp_release(c), 1);
    misuse_capture_start();
    uint8_t v;
    assert_int_equal(bp_get_u8(c, 0, &v), BP_EFREED);
    assert_int_equal(bp_write_u8(c, 0), BP_EFREED);
    assert_int_equal(bp_release(c), BP_EFREED);
    assert_int_equal(bp_retain(c), BP_EFREED);
    assert_int_equal(bp_composite_add(c, NULL, 1), BP_EFREED);
    assert_int_equal(bp_composite_components(c), BP_EFREED);
    assert_int_equal(bp_readable_iovec(c, NULL, 0), BP_EFREED);
    assert_null(bp_slice(c, 0, 1, NULL));
    misuse_capture_stop();
}

/* A transfer into a full composite at max_components consolidates it, releasing its
 * components: here the last hold on the source, a plain view of one of them. Its bytes are
 * read before that happens. */
static void test_transfer_from_a_view_the_consolidation_ends(void **state)
{
    bp_allocator *a = *state;
    bp_buf *part = buf_with_text(a, 64, "0123456789abcdefghijklmnopqrstuvwxyzABCD");
    bp_buf *view = bp_slice(part, 0, 40, NULL); /* shares part's count, soon the composite's */
    assert_non_null(view);
    bp_buf *c = bp_composite(a, 2, NULL);
    assert_int_equal(bp_composite_add(c, part, 1), 0);
    assert_int_equal(bp_composite_add(c, buf_with_text(a, 16, "|tail|"), 1), 0);
    assert_int_equal(bp_skip_bytes(view, 10), 0);
    assert_int_equal(bp_write_buf(c, view, 20), 0); /* grows: a third component, so one */
    assert_int_equal(bp_composite_components(c), 1);
    assert_int_equal(bp_writer_index(c), 66);
    expect_bytes(c, 0, "0123456789abcdefghijklmnopqrstuvwxyzABCD|tail|abcdefghijklmnopqrst");
    assert_int_equal(bp_release(c), 1);
}

/* A thread with a 256 KiB stack runs fn. */
static void run_on_small_stack(void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    pthread_t t;
    assert_int_equal(pthread_attr_init(&attr), 0);
    assert_int_equal(pthread_attr_setstacksize(&attr, 256 * 1024), 0);
    assert_int_equal(pthread_create(&t, &attr, fn, arg), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    pthread_attr_destroy(&attr);
}

static int not_seven(uint8_t byte, void *ctx)
{
    (void)ctx;
    return byte != 7;
}

/* Nesting at the limit: level k holds level k - 1 (or a duplicate of it, every third level)
 * and a buffer of k bytes of value k, so byte values say which level they come from. */
static void *nest_to_the_limit(void *arg)
{
    bp_allocator *a = arg;
    enum { DEPTH = BP_MAX_COMPOSITE_DEPTH };
    static uint8_t model[DEPTH * (DEPTH + 1) / 2], got[sizeof model];
    size_t used = 0;
    bp_buf *top = NULL;
    for (int k = 1; k <= DEPTH; k++) {
        bp_buf *level = bp_composite(a, 4, NULL);
        assert_non_null(level);
        if (top != NULL) {
            bp_buf *lower = top;
            if (k % 3 == 0) { /* a view of the level below: the walk goes through it */
                lower = bp_retained_duplicate(top, NULL);
                assert_int_equal(bp_release(top), 0);
            }
            assert_int_equal(bp_composite_add(level, lower, 1), 0);
        }
        bp_buf *own = bp_alloc(a, (size_t)k);
        for (int i = 0; i < k; i++) assert_int_equal(bp_write_u8(own, (uint8_t)k), 0);
        assert_int_equal(bp_composite_add(level, own, 1), 0);
        memset(model + used, k, (size_t)k);
        used += (size_t)k;
        top = level;
    }
    assert_int_equal(used, sizeof model);
    /* read, write, gather, search, compare, copy: every walk reaches the bottom */
    assert_int_equal(bp_readable_bytes(top), sizeof model);
    assert_int_equal(bp_get_bytes(top, 0, got, sizeof got), 0);
    assert_memory_equal(got, model, sizeof model);
    assert_int_equal(bp_set_u16(top, 0, 0xabcd), 0); /* level 1's byte and level 2's first */
    model[0] = 0xab;
    model[1] = 0xcd;
    assert_int_equal(bp_get_bytes(top, 0, got, sizeof got), 0);
    assert_memory_equal(got, model, sizeof model);
    assert_int_equal(bp_readable_iovec(top, NULL, 0), DEPTH);
    size_t at = 0;
    assert_int_equal(bp_index_of(top, 0, sizeof model, 7, &at), 1);
    assert_int_equal(at, 21); /* 1 + 2 + ... + 6 */
    assert_int_equal(bp_index_of(top, sizeof model, 0, 0xcd, &at), 1);
    assert_int_equal(at, 1);
    assert_int_equal(bp_for_each_byte_desc(top, 0, sizeof model, not_seven, NULL, &at), 1);
    assert_int_equal(at, 27);
    bp_buf *copy = bp_copy(top, 0, sizeof model, NULL);
    assert_non_null(copy);
    assert_int_equal(bp_equals(copy, top), 1);
    /* one more level is refused, through the composite or a view of it */
    misuse_capture_start();
    bp_buf *deeper = bp_composite(a, 4, NULL);
    assert_int_equal(bp_composite_add(deeper, top, 1), BP_EINVAL);
    assert_int_equal(last_misuse.err, BP_EINVAL);
    assert_non_null(strstr(last_misuse.message, "BP_MAX_COMPOSITE_DEPTH"));
    bp_buf *dup = bp_retained_duplicate(top, NULL);
    assert_int_equal(bp_composite_add(deeper, dup, 1), BP_EINVAL);
    misuse_capture_stop();
    assert_int_equal(bp_composite_components(deeper), 0);
    assert_int_equal(bp_capacity(deeper), 0);
    assert_int_equal(bp_refcnt(top), 2); /* the references stayed the caller's */
    assert_int_equal(bp_release(dup), 1); /* the view ends, its hold on top with it */
    assert_int_equal(bp_refcnt(top), 1);
    /* consolidated, it is one level deep and may be nested again */
    assert_int_equal(bp_composite_consolidate(top), 0);
    assert_int_equal(bp_get_bytes(top, 0, got, sizeof got), 0);
    assert_memory_equal(got, model, sizeof model);
    assert_int_equal(bp_composite_add(deeper, top, 1), 0);
    assert_int_equal(bp_release(deeper), 1);
    assert_int_equal(bp_release(copy), 1);
    return NULL;
}

static void test_nesting_to_the_limit_on_a_small_stack(void **state)
{
    run_on_small_stack(nest_to_the_limit, *state);
}

static int count_segment(uint8_t *p, size_t n, size_t index, void *ctx)
{
    (void)p;
    (void)index;
    *(size_t *)ctx += n;
    return 0;
}

/* Composites deepened through pointers kept after adding (misuse): each level's one byte
 * is replaced, once the level is inside its parent, by a new composite holding the next
 * level's one byte, 8000 times. Every call on the top is refused before a walk could
 * recurse past the limit, the walk stops by itself as well, and releasing the top ends all
 * 8000 levels, on a 256 KiB stack. */
static void *deepen_behind_the_back(void *arg)
{
    bp_allocator *a = arg;
    enum { LEVELS = 8000 };
    bp_buf *top = bp_composite(a, 4, NULL);
    bp_buf *parent = top;
    for (int k = 0; k < LEVELS; k++) {
        bp_buf *child = bp_composite(a, 4, NULL);
        assert_non_null(child);
        assert_int_equal(bp_composite_add(child, buf_with_text(a, 16, "x"), 1), 0);
        if (parent != top) { /* drop its byte: the parent's range now shows the child's */
            assert_int_equal(bp_skip_bytes(parent, 1), 0);
            assert_int_equal(bp_discard_read_bytes(parent), 0);
        }
        assert_int_equal(bp_composite_add(parent, child, 1), 0);
        parent = child;
    }
    misuse_capture_start();
    uint8_t v = 0;
    struct iovec iov[4];
    size_t at;
    assert_int_equal(bp_get_u8(top, 0, &v), BP_EINVAL);
    assert_non_null(strstr(last_misuse.message, "BP_MAX_COMPOSITE_DEPTH"));
    assert_int_equal(bp_readable_iovec(top, iov, 4), BP_EINVAL);
    assert_int_equal(bp_index_of(top, 0, 1, 'x', &at), BP_EINVAL);
    assert_int_equal(bp_composite_consolidate(top), BP_EINVAL);
    bp_buf *other = bp_composite(a, 4, NULL);
    assert_int_equal(bp_composite_add(other, top, 1), BP_EINVAL);
    misuse_capture_stop();
    /* the walk under every call stops by itself too, before the one byte at the bottom */
    size_t seen = 0;
    assert_int_equal(bp__walk(top, 0, 1, false, count_segment, &seen), BP_EINVAL);
    assert_int_equal(seen, 0);
    assert_int_equal(bp_release(other), 1);
    assert_int_equal(bp_release(top), 1); /* and the 8000 below it, and their parts */
    return NULL;
}

static void test_nesting_deepened_behind_the_back_fails_cleanly(void **state)
{
    run_on_small_stack(deepen_behind_the_back, *state);
}

/* Adding N components reallocates the table O(log N) times and checks no component already
 * there (nothing is read), so building is linear in N. */
static void test_adding_many_components_is_linear(void **state)
{
    bp_allocator *a = *state;
    /* The counters tell linear from quadratic at any size: smaller where slowed down. */
    const bool slow = slowed_down();
    const size_t sizes[] = {1000, slow ? 5000 : 50000, slow ? 10000 : 100000};
    size_t resizes[3], visits[3];
    for (int round = 0; round < 3; round++) {
        size_t n = sizes[round];
        bp_buf *c = bp_composite(a, SIZE_MAX, NULL);
        for (size_t i = 0; i < n; i++) {
            bp_buf *part = bp_alloc(a, 1);
            assert_int_equal(bp_write_u8(part, (uint8_t)(i * 7)), 0);
            assert_int_equal(bp_composite_add(c, part, 1), 0);
        }
        bp__composite_work(c, &resizes[round], &visits[round]);
        assert_int_equal(visits[round], 0);
        size_t log2n = 0;
        while (((size_t)1 << log2n) < n) log2n++;
        assert_true(resizes[round] <= log2n);
        /* and it works: every byte in order, one block each */
        assert_int_equal(bp_readable_bytes(c), n);
        assert_int_equal(bp_readable_iovec(c, NULL, 0), (int)n);
        uint8_t *bytes = malloc(n);
        assert_non_null(bytes);
        assert_int_equal(bp_get_bytes(c, 0, bytes, n), 0);
        for (size_t i = 0; i < n; i++) assert_int_equal(bytes[i], (uint8_t)(i * 7));
        free(bytes);
        assert_int_equal(bp_composite_components(c), (long)n);
        assert_int_equal(bp_release(c), 1);
    }
    assert_true(resizes[2] <= resizes[1] + 1); /* doubling N: one more reallocation at most */
}


/* bp_index_of_bytes over a composite of N components checks and walks them a fixed number
 * of times, whatever N: no call per 16 blocks, no bp_get_bytes per start at a boundary
 * (which made a search quadratic in N: 64 k components, 0.9 s). Here every boundary is a
 * near match ("ab" among "a"s), the worst case for the starts that cross one. */
static void test_search_over_many_components_is_linear(void **state)
{
    bp_allocator *a = *state;
    const size_t n = slowed_down() ? 5000 : 20000;
    bp_buf *c = bp_composite(a, SIZE_MAX, NULL);
    for (size_t i = 0; i < n; i++) {
        bp_buf *part = bp_alloc(a, 1);
        assert_int_equal(bp_write_u8(part, i == n - 2 ? 'b' : 'a'), 0);
        assert_int_equal(bp_composite_add(c, part, 1), 0);
    }
    size_t resizes, before, after, at = 0;
    bp__composite_work(c, &resizes, &before);
    assert_int_equal(bp_index_of_bytes(c, 0, n, "aab", 3, &at), 1);
    assert_int_equal(at, n - 4);
    assert_int_equal(bp_index_of_bytes(c, 0, n, "ba", 2, &at), 1);
    assert_int_equal(at, n - 2);
    assert_int_equal(bp_index_of_bytes(c, 0, n - 2, "ab", 2, &at), 0);
    bp__composite_work(c, &resizes, &after);
    assert_true(after - before <= 3 * 3 * n); /* three checks a call: its own, two bp_iovec */
    assert_int_equal(bp_release(c), 1);
}

/* A component released behind the composite's back and handed out again as someone else's
 * buffer: the composite refuses every call instead of reading or writing the new owner's
 * bytes, and its release leaves the new buffer alone. */
static void test_recycled_component_is_detected(void **state)
{
    bp_allocator *a = *state;
    bp_buf *c = composite_of(a, 16, (const char *const[]){"abc", NULL});
    bp_buf *second = buf_with_text(a, 16, "def");
    assert_int_equal(bp_composite_add(c, second, 1), 0);
    assert_int_equal(bp_release(second), 1); /* the composite's reference, behind its back */
    bp_buf *next = buf_with_text(a, 16, "XYZ");
    assert_ptr_equal(next, second);          /* the same object, someone else's now */
    misuse_capture_start();
    char got[6];
    struct iovec iov[4];
    assert_int_equal(bp_get_bytes(c, 0, got, 6), BP_EFREED);
    assert_non_null(strstr(last_misuse.message, "released behind its back"));
    assert_int_equal(bp_set_bytes(c, 3, "uvw", 3), BP_EFREED);
    assert_int_equal(bp_write_u8(c, 'w'), BP_EFREED);
    assert_int_equal(bp_readable_iovec(c, iov, 4), BP_EFREED);
    assert_int_equal(bp_composite_consolidate(c), BP_EFREED);
    assert_int_equal(bp_skip_bytes(c, 4), BP_EFREED);
    assert_int_equal(bp_discard_read_bytes(c), BP_EFREED);
    bp_buf *s = bp_slice(c, 0, 6, NULL);
    assert_null(s);
    last_misuse.count = 0;
    assert_int_equal(bp_release(c), 1); /* "abc" goes back; the gone one is reported, not released */
    assert_int_equal(last_misuse.count, 1);
    assert_int_equal(last_misuse.err, BP_EFREED);
    misuse_capture_stop();
    assert_int_equal(bp_refcnt(next), 1);
    expect_bytes(next, 0, "XYZ");
    assert_int_equal(bp_release(next), 1);
}

/* The same for a plain view freed behind the composite's back while the composite holds
 * it: the view object may be another view by the composite's next call. */
static void test_freed_view_component_is_detected(void **state)
{
    bp_allocator *a = *state;
    bp_buf *root = buf_with_text(a, 16, "hello");
    bp_buf *other = buf_with_text(a, 16, "world");
    assert_int_equal(bp_retain(root), 0);          /* the reference the composite takes */
    bp_buf *part = bp_slice(root, 1, 3, NULL);     /* "ell" */
    bp_buf *c = bp_composite(a, 16, NULL);
    assert_int_equal(bp_composite_add(c, part, 1), 0);
    expect_bytes(c, 0, "ell");
    assert_int_equal(bp_view_free(part), 0);       /* behind the composite's back */
    bp_buf *again = bp_slice(other, 0, 5, NULL);   /* part's object, showing other */
    assert_ptr_equal(again, part);
    misuse_capture_start();
    uint8_t v;
    assert_int_equal(bp_get_u8(c, 0, &v), BP_EFREED);
    assert_int_equal(bp_set_u8(c, 0, 'E'), BP_EFREED);
    assert_int_equal(bp_release(c), 1);            /* does not release through `again` */
    misuse_capture_stop();
    assert_int_equal(bp_refcnt(other), 1);
    expect_bytes(again, 0, "world");
    assert_int_equal(bp_refcnt(root), 2);          /* the composite's reference went with part */
    assert_int_equal(bp_release_n(root, 2), 1);
    assert_int_equal(bp_release(other), 1);
}

/* A composite's discard drops components and shifts its indices: refused, changing nothing,
 * while another holder or a view of it may rely on them. */
static void test_discard_refused_while_composite_is_shared(void **state)
{
    bp_allocator *a = *state;
    bp_buf *c = composite_of(a, 16, (const char *const[]){"abc", "def", "ghi", NULL});
    assert_int_equal(bp_skip_bytes(c, 4), 0);
    bp_buf *s = bp_slice(c, 3, 6, NULL); /* "defghi" */
    misuse_capture_start();
    assert_int_equal(bp_discard_some_read_bytes(c), BP_ESHARED);
    assert_int_equal(bp_discard_read_bytes(c), BP_ESHARED);
    assert_int_equal(last_misuse.count, 0); /* not misuse */
    misuse_capture_stop();
    assert_int_equal(bp_composite_components(c), 3);
    assert_int_equal(bp_capacity(c), 9);
    assert_int_equal(bp_reader_index(c), 4);
    expect_bytes(s, 0, "defghi");
    assert_int_equal(bp_view_free(s), 0);
    assert_int_equal(bp_retain(c), 0); /* another holder */
    assert_int_equal(bp_discard_read_bytes(c), BP_ESHARED);
    assert_int_equal(bp_release(c), 0);
    bp_buf *rs = bp_retained_slice(c, 0, 2, NULL);
    assert_int_equal(bp_discard_read_bytes(c), BP_ESHARED);
    assert_int_equal(bp_release(rs), 1);
    assert_int_equal(bp_discard_some_read_bytes(c), 0); /* alone again: "abc" goes */
    assert_int_equal(bp_composite_components(c), 2);
    assert_int_equal(bp_discard_read_bytes(c), 0);
    assert_int_equal(bp_capacity(c), 5);
    expect_bytes(c, 0, "efghi");
    /* Nothing due: no refusal either, shared or not. */
    bp_buf *d = bp_duplicate(c, NULL);
    assert_int_equal(bp_skip_bytes(c, 1), 0);
    assert_int_equal(bp_discard_some_read_bytes(c), 0); /* "efghi" is one component, not read through */
    assert_int_equal(bp_discard_read_bytes(c), BP_ESHARED);
    assert_int_equal(bp_view_free(d), 0);
    assert_int_equal(bp_release(c), 1);
}

typedef struct composite_reader {
    bp_buf *frame;
    uint8_t expect;
    int bad;
} composite_reader;

static void *read_all_of(void *arg)
{
    composite_reader *r = arg;
    uint8_t bytes[4096];
    for (int round = 0; round < 500; round++) {
        size_t n = bp_readable_bytes(r->frame);
        assert_true(n <= sizeof bytes);
        if (bp_get_bytes(r->frame, bp_reader_index(r->frame), bytes, n) != 0) r->bad++;
        for (size_t i = 0; i < n; i++) r->bad += bytes[i] != r->expect;
        struct iovec iov[4];
        if (bp_readable_iovec(r->frame, iov, 4) < 1) r->bad++;
    }
    return NULL;
}

/* Reading a composite writes nothing it shares: two threads reading their own views of one
 * composite whose components are views (a retained slice, a duplicate) check those
 * components without refreshing them (the TSan build checks the accesses). */
static void test_views_of_one_composite_read_on_two_threads(void **state)
{
    bp_allocator *a = *state;
    bp_buf *c = bp_composite(a, 8, NULL);
    bp_buf *base = bp_alloc(a, 3000);
    for (int i = 0; i < 3000; i++) assert_int_equal(bp_write_u8(base, 7), 0);
    bp_buf *slice = bp_retained_slice(base, 1000, 2000, NULL), *dup = bp_retained_duplicate(base, NULL);
    bp_release(base);
    assert_int_equal(bp_composite_add(c, slice, 1), 0);
    assert_int_equal(bp_composite_add(c, dup, 1), 0);
    composite_reader readers[2] = {{bp_retained_slice(c, 500, 3000, NULL), 7, 0},
                                   {bp_retained_duplicate(c, NULL), 7, 0}};
    bp_release(c);
    assert_int_equal(bp_readable_bytes(readers[1].frame), 5000);
    assert_int_equal(bp_skip_bytes(readers[1].frame, 1500), 0); /* 3500 left: within the reader's room */
    pthread_t threads[2];
    for (int t = 0; t < 2; t++) assert_int_equal(pthread_create(&threads[t], NULL, read_all_of, &readers[t]), 0);
    for (int t = 0; t < 2; t++) {
        assert_int_equal(pthread_join(threads[t], NULL), 0);
        assert_int_equal(readers[t].bad, 0);
        bp_release(readers[t].frame);
    }
}

typedef struct composite_adder {
    bp_buf *mine; /* this thread's retained slice of a shared composite */
    int bad;
} composite_adder;

static void *add_views_to_composites_of_its_own(void *arg)
{
    composite_adder *c = arg;
    for (int round = 0; round < 300; round++) {
        bp_buf *slice = bp_retained_slice(c->mine, 0, 8, NULL), *own = bp_composite(bp_buf_allocator(c->mine), 4, NULL);
        if (slice == NULL || own == NULL || bp_composite_add(own, slice, 1) != 0) {
            c->bad++;
            break;
        }
        uint8_t v = 0;
        if (bp_get_u8(own, 3, &v) != 0 || v != 7) c->bad++;
        bp_release(own);
    }
    bp_release(c->mine);
    return NULL;
}

/* Views of one composite added to composites of their own on several threads at once: the
 * shared composite learns that it is contained without a race (TSan build). */
static void test_views_of_one_composite_added_elsewhere_on_two_threads(void **state)
{
    bp_allocator *a = *state;
    bp_buf *shared = bp_composite(a, 4, NULL), *part = bp_alloc(a, 64);
    for (int i = 0; i < 64; i++) assert_int_equal(bp_write_u8(part, 7), 0);
    assert_int_equal(bp_composite_add(shared, part, 1), 0);
    composite_adder adders[2] = {{bp_retained_slice(shared, 0, 64, NULL), 0}, {bp_retained_slice(shared, 0, 64, NULL), 0}};
    pthread_t threads[2];
    for (int t = 0; t < 2; t++)
        assert_int_equal(pthread_create(&threads[t], NULL, add_views_to_composites_of_its_own, &adders[t]), 0);
    for (int t = 0; t < 2; t++) {
        assert_int_equal(pthread_join(threads[t], NULL), 0);
        assert_int_equal(adders[t].bad, 0);
    }
    /* The last reference here: the part goes back to this thread's cache, not into a batch
     * for it that a thread's exit would leave waiting (counted in active_bytes). */
    assert_int_equal(bp_release(shared), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_new_composite_is_empty, teardown),
        cmocka_unit_test(test_destroy_with_composites_alive),
        BOTH(test_views_of_one_composite_read_on_two_threads, teardown),
        BOTH(test_views_of_one_composite_added_elsewhere_on_two_threads, teardown),
        BOTH(test_add_takes_readable_bytes_without_copying, teardown),
        BOTH(test_add_without_advancing_gives_writable_space, teardown),
        BOTH(test_typed_access_across_boundaries, teardown),
        BOTH(test_writing_past_capacity_adds_a_component, teardown),
        BOTH(test_consolidates_past_max_components, teardown),
        BOTH(test_nested_composites, teardown),
        BOTH(test_views_of_composites, teardown),
        BOTH(test_discard_read_bytes_drops_components, teardown),
        BOTH(test_search_compare_and_dump, teardown),
        BOTH(test_for_each_across_components, teardown),
        BOTH(test_iovec_describes_the_blocks, teardown),
        BOTH(test_writev_and_readv_over_a_socketpair, teardown),
        BOTH(test_partial_gathering_write, teardown),
        BOTH(test_reserve_gives_one_block, teardown),
        BOTH(test_copy_and_transfers, teardown),
        BOTH(test_overlapping_moves_within_a_composite, teardown),
        BOTH(test_misuse_changes_nothing, teardown),
        BOTH(test_released_composite_refuses_everything, teardown),
        BOTH(test_transfer_from_a_view_the_consolidation_ends, teardown),
        BOTH(test_nesting_to_the_limit_on_a_small_stack, teardown),
        BOTH(test_nesting_deepened_behind_the_back_fails_cleanly, teardown),
        BOTH(test_adding_many_components_is_linear, teardown),
        BOTH(test_search_over_many_components_is_linear, teardown),
        BOTH(test_recycled_component_is_detected, teardown),
        BOTH(test_freed_view_component_is_detected, teardown),
        BOTH(test_discard_refused_while_composite_is_shared, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
