/* Derived buffers: slices, duplicates, their retained variants, read slices and copies,
 * against the pooled and the unpooled allocator. */
#include "test_util.h"

#include "allocator.h"

static int teardown(void **state)
{
    misuse_capture_stop();
    bp_allocator_stats s;
    bp_allocator_get_stats(*state, &s, sizeof s);
    assert_int_equal(s.active_buffers, 0); /* every test releases what it made */
    bp_allocator_destroy(*state);
    return 0;
}

/* Buffers of 32 bytes in this suite (some expectations depend on it). */
static bp_buf *buf_with(bp_allocator *a, const char *text) { return buf_with_text(a, 32, text); }

static void expect_text(bp_buf *b, size_t index, const char *text)
{
    char got[64] = {0};
    assert_int_equal(bp_get_bytes(b, index, got, strlen(text)), 0);
    assert_string_equal(got, text);
}

static void test_slice_shares_contents_not_indices(void **state)
{
    bp_buf *root = buf_with(*state, "0123456789");
    bp_buf *s = bp_slice(root, 2, 5, NULL);
    assert_non_null(s);
    assert_int_equal(bp_capacity(s), 5);
    assert_int_equal(bp_max_capacity(s), 5);
    assert_int_equal(bp_reader_index(s), 0);
    assert_int_equal(bp_writer_index(s), 5);
    expect_text(s, 0, "23456");
    uint8_t v;
    assert_int_equal(bp_read_u8(s, &v), 0);
    assert_int_equal(v, '2');
    assert_int_equal(bp_reader_index(root), 0); /* own indices */
    assert_int_equal(bp_set_u8(s, 0, 'X'), 0);  /* contents shared both ways */
    expect_text(root, 0, "01X3456789");
    assert_int_equal(bp_set_u8(root, 6, 'Y'), 0);
    expect_text(s, 0, "X345Y");
    assert_ptr_equal(bp_data(s, 0), (uint8_t *)bp_data(root, 0) + 2);
    misuse_capture_start();
    assert_int_equal(bp_write_u8(s, 1), BP_ECAPACITY); /* a slice cannot grow */
    uint32_t u;
    assert_int_equal(bp_get_u32(s, 2, &u), BP_ERANGE);
    assert_int_equal(bp_set_capacity(s, 8), BP_ECAPACITY); /* past its max (its length) */
    assert_int_equal(bp_set_capacity(s, 3), BP_EINVAL);    /* a slice's capacity is fixed */
    assert_int_equal(bp_set_capacity(s, 5), 0);            /* unchanged: fine */
    misuse_capture_stop();
    assert_int_equal(bp_get_u32(s, 1, &u), 0);
    assert_int_equal(u, (uint32_t)'3' << 24 | (uint32_t)'4' << 16 | (uint32_t)'5' << 8 | (uint32_t)'Y');
    bp_release(root);
}

static void test_plain_slice_shares_the_reference_count(void **state)
{
    bp_buf *root = buf_with(*state, "abcdef");
    bp_buf *s = bp_slice(root, 1, 3, NULL);
    assert_int_equal(bp_refcnt(s), 1);
    assert_int_equal(bp_retain(s), 0);      /* retains the root */
    assert_int_equal(bp_refcnt(root), 2);
    assert_int_equal(bp_release(root), 0);
    assert_int_equal(bp_release(s), 1);     /* releases the root: both gone */
    assert_int_equal(bp_refcnt(root), 0);
    misuse_capture_start();
    uint8_t v;
    assert_int_equal(bp_get_u8(s, 0, &v), BP_EFREED);
    assert_int_equal(bp_refcnt(s), 0);
    assert_int_equal(bp_release(s), BP_EFREED);
    misuse_capture_stop();
    assert_null(bp_data(s, 0));
}

static void test_retained_slice_holds_the_root(void **state)
{
    bp_buf *root = buf_with(*state, "abcdef");
    bp_buf *r = bp_retained_slice(root, 2, 3, NULL);
    assert_non_null(r);
    assert_int_equal(bp_refcnt(r), 1);
    assert_int_equal(bp_refcnt(root), 2);
    assert_int_equal(bp_release(root), 0);  /* the slice still holds it */
    expect_text(r, 0, "cde");
    assert_int_equal(bp_retain(r), 0);
    assert_int_equal(bp_refcnt(r), 2);
    assert_int_equal(bp_refcnt(root), 1);   /* its own count, not the root's */
    assert_int_equal(bp_release(r), 0);
    assert_int_equal(bp_release(r), 1);
    assert_int_equal(bp_refcnt(root), 0);   /* the last hold went with it */
    misuse_capture_start();
    assert_int_equal(bp_release(r), BP_EFREED);
    misuse_capture_stop();
}

static void test_chains_of_retained_slices(void **state)
{
    bp_buf *root = buf_with(*state, "0123456789abcdef");
    bp_buf *a = bp_retained_slice(root, 2, 12, NULL);  /* "23456789abcd" */
    bp_buf *b = bp_retained_slice(a, 3, 6, NULL);      /* "56789a": a view of the root */
    bp_buf *c = bp_read_retained_slice(b, 2, NULL);    /* "56"; b's reader moves */
    assert_int_equal(bp_reader_index(b), 2);
    assert_int_equal(bp_refcnt(root), 4);
    expect_text(b, 0, "56789a");
    expect_text(c, 0, "56");
    assert_ptr_equal(bp_data(c, 0), (uint8_t *)bp_data(root, 0) + 5);
    /* Release in an unusual order; the root lives until the last. */
    assert_int_equal(bp_release(root), 0);
    assert_int_equal(bp_release(a), 1);
    expect_text(c, 0, "56");
    assert_int_equal(bp_release(c), 1);
    assert_int_equal(bp_refcnt(root), 1);
    assert_int_equal(bp_release(b), 1);
    assert_int_equal(bp_refcnt(root), 0);
}

static void test_plain_slice_of_a_retained_slice_shares_its_count(void **state)
{
    bp_buf *root = buf_with(*state, "abcdef");
    bp_buf *r = bp_retained_slice(root, 0, 6, NULL);
    bp_buf *p = bp_slice(r, 1, 2, NULL);
    assert_int_equal(bp_refcnt(p), 1);
    assert_int_equal(bp_retain(p), 0);
    assert_int_equal(bp_refcnt(r), 2);     /* the retained slice's count */
    assert_int_equal(bp_refcnt(root), 2);  /* untouched */
    assert_int_equal(bp_release(p), 0);
    assert_int_equal(bp_release(p), 1);    /* the retained slice goes, and p with it */
    misuse_capture_start();
    uint8_t v;
    assert_int_equal(bp_get_u8(p, 0, &v), BP_EFREED);
    misuse_capture_stop();
    assert_int_equal(bp_refcnt(root), 1);
    assert_int_equal(bp_release(root), 1);
}

static void test_duplicate_follows_and_grows_the_root(void **state)
{
    bp_buf *root = buf_with(*state, "hello");
    bp_skip_bytes(root, 1);
    bp_buf *d = bp_duplicate(root, NULL);
    assert_int_equal(bp_reader_index(d), 1);
    assert_int_equal(bp_writer_index(d), 5);
    assert_int_equal(bp_capacity(d), bp_capacity(root));
    assert_int_equal(bp_max_capacity(d), bp_max_capacity(root));
    /* The duplicate writes past the capacity: the root grows (and may move). */
    for (int i = 0; i < 200; i++) assert_int_equal(bp_write_u8(d, (uint8_t)i), 0);
    assert_true(bp_capacity(root) >= 205);
    assert_int_equal(bp_capacity(d), bp_capacity(root));
    assert_int_equal(bp_writer_index(root), 5); /* the root's own indices */
    uint8_t v;
    assert_int_equal(bp_get_u8(root, 204, &v), 0);
    assert_int_equal(v, 199);
    expect_text(d, 0, "hello");
    /* The root grows on its own; the duplicate follows the moved memory. */
    assert_int_equal(bp_set_capacity(root, 5000), 0);
    assert_int_equal(bp_capacity(d), 5000);
    assert_ptr_equal(bp_data(d, 0), bp_data(root, 0));
    expect_text(d, 0, "hello");
    /* A duplicate of a slice is that slice again. */
    bp_buf *s = bp_slice(root, 1, 3, NULL);
    bp_buf *ds = bp_duplicate(s, NULL);
    assert_int_equal(bp_capacity(ds), 3);
    expect_text(ds, 0, "ell");
    char line[96];
    bp_describe(ds, line, sizeof line);
    assert_string_equal(line, "SlicedByteBuf(ridx: 0, widx: 3, cap: 3/3)");
    bp_describe(d, line, sizeof line);
    assert_string_equal(line, "DuplicatedByteBuf(ridx: 1, widx: 205, cap: 5000/2147483647)");
    bp_buf *rd = bp_retained_duplicate(root, NULL);
    assert_int_equal(bp_refcnt(root), 2);
    assert_int_equal(bp_release(rd), 1);
    assert_int_equal(bp_release(root), 1);
}

static void test_slice_follows_a_moving_and_shrinking_root(void **state)
{
    bp_buf *root = buf_with(*state, "abcdefgh");
    bp_buf *s = bp_slice(root, 4, 4, NULL);
    void *before = bp_data(root, 0);
    assert_int_equal(bp_set_capacity(root, 100000), 0); /* moves the memory */
    assert_ptr_not_equal(bp_data(root, 0), before);
    expect_text(s, 0, "efgh");
    assert_ptr_equal(bp_data(s, 0), (uint8_t *)bp_data(root, 0) + 4);
    assert_int_equal(bp_set_capacity(root, 6), 0);      /* cuts the slice to "ef" */
    /* The index getters alone already see it (found by fuzzing: they used to read the
     * slice's stale writer index until some other call refreshed it). */
    assert_int_equal(bp_writer_index(s), 2);
    assert_int_equal(bp_readable_bytes(s), 2);
    assert_int_equal(bp_capacity(s), 2);
    expect_text(s, 0, "ef");
    bp_release(root);
}

static void test_read_slice_and_copy(void **state)
{
    bp_buf *root = buf_with(*state, "head:body");
    bp_buf *head = bp_read_slice(root, 4, NULL);
    assert_int_equal(bp_reader_index(root), 4);
    expect_text(head, 0, "head");
    assert_int_equal(bp_skip_bytes(root, 1), 0);
    bp_buf *copy = bp_copy(root, 5, 4, NULL);
    assert_non_null(copy);
    expect_text(copy, 0, "body");
    assert_int_equal(bp_writer_index(copy), 4);
    assert_int_equal(bp_set_u8(copy, 0, 'B'), 0);
    expect_text(root, 5, "body");                    /* independent */
    assert_int_equal(bp_refcnt(copy), 1);
    assert_int_equal(bp_release(root), 1);
    expect_text(copy, 0, "Body");                    /* outlives the original */
    assert_int_equal(bp_release(copy), 1);
}

static void test_view_errors(void **state)
{
    bp_buf *root = buf_with(*state, "abc");
    int err = 0;
    misuse_capture_start();
    assert_null(bp_slice(root, 30, 3, &err));
    assert_int_equal(err, BP_ERANGE);
    assert_null(bp_slice(root, SIZE_MAX, 2, &err));
    assert_int_equal(err, BP_ERANGE);
    assert_null(bp_read_slice(root, 4, &err));       /* 3 readable */
    assert_int_equal(err, BP_ERANGE);
    assert_int_equal(bp_reader_index(root), 0);
    assert_null(bp_slice(NULL, 0, 0, &err));
    assert_int_equal(err, BP_EINVAL);
    assert_null(bp_copy(root, 30, 5, &err));            /* capacity 32 */
    assert_int_equal(err, BP_ERANGE);
    assert_int_equal(bp_retain_n(root, INT32_MAX - 1), 0);
    assert_null(bp_retained_slice(root, 0, 1, &err)); /* would pass INT32_MAX */
    assert_int_equal(err, BP_EREFCNT);
    assert_int_equal(bp_release_n(root, INT32_MAX - 1), 0);
    misuse_capture_stop();
    assert_int_equal(bp_refcnt(root), 1);
    bp_release(root);
    misuse_capture_start();
    assert_null(bp_slice(root, 0, 1, &err));
    assert_int_equal(err, BP_EFREED);
    assert_null(bp_duplicate(root, &err));
    assert_int_equal(err, BP_EFREED);
    misuse_capture_stop();
}

static void test_views_are_recycled(void **state)
{
    bp_allocator *a = *state;
    bp_buf *root = buf_with(a, "0123456789");
    for (int round = 0; round < 1000; round++) {
        bp_buf *s = bp_slice(root, 1, 2, NULL);
        bp_buf *r = bp_retained_slice(root, 3, 4, NULL);
        assert_non_null(s);
        assert_int_equal(bp_release(r), 1);
    }
    assert_int_equal(bp_release(root), 1); /* the 1000 plain slices die with it */
    size_t slabs = 0;
    for (bp__buf_slab *slab = a->slabs; slab != NULL; slab = slab->next) slabs++;
    assert_true(slabs <= 1100 / BP__SLAB_BUFS + 2); /* objects were reused, not piled up */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_slice_shares_contents_not_indices, teardown),
        BOTH(test_plain_slice_shares_the_reference_count, teardown),
        BOTH(test_retained_slice_holds_the_root, teardown),
        BOTH(test_chains_of_retained_slices, teardown),
        BOTH(test_plain_slice_of_a_retained_slice_shares_its_count, teardown),
        BOTH(test_duplicate_follows_and_grows_the_root, teardown),
        BOTH(test_slice_follows_a_moving_and_shrinking_root, teardown),
        BOTH(test_read_slice_and_copy, teardown),
        BOTH(test_view_errors, teardown),
        BOTH(test_views_are_recycled, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
