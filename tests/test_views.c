/* SPDX-License-Identifier: MIT */
/* Derived buffers: slices, duplicates, their retained variants, read slices and copies,
 * against the pooled and the unpooled allocator. */
#include "test_util.h"

#include "allocator.h"
#include "thread.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>


static uint64_t active_views(bp_allocator *a)
{
    bp_allocator_stats s;
    assert_int_equal(bp_allocator_get_stats(a, &s, sizeof s), 0);
    return s.active_views;
}

static size_t slab_count(bp_allocator *a)
{
    size_t slabs = 0;
    for (bp__buf_slab *slab = a->objects.slabs; slab != NULL; slab = slab->next) slabs++;
    return slabs;
}

/* The plain views listed on b, counted both ways along the list. */
static size_t listed_views(const bp_buf *b)
{
    size_t n = 0;
    const bp_buf *last = NULL;
    for (const bp_buf *v = b->views; v != NULL; v = v->next_view, n++) {
        assert_ptr_equal(v->prev_view, last);
        assert_ptr_equal(v->count_owner, b);
        last = v;
    }
    return n;
}

static int teardown(void **state)
{
    misuse_capture_stop();
    bp_allocator_stats s;
    bp_allocator_get_stats(*state, &s, sizeof s);
    assert_int_equal(s.active_buffers, 0); /* every test releases what it made */
    assert_int_equal(s.active_views, 0);   /* and every view ended */
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
    /* A slice's capacity is fixed: any value is refused, as Netty's slices throw. */
    assert_int_equal(bp_set_capacity(s, 8), BP_EINVAL);
    assert_int_equal(bp_set_capacity(s, 3), BP_EINVAL);
    assert_int_equal(bp_set_capacity(s, 5), BP_EINVAL);
    assert_int_equal(bp_set_capacity(s, SIZE_MAX), BP_EINVAL);
    assert_int_equal(bp_capacity(s), 5);
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
    bp_buf *b = bp_retained_slice(a, 3, 6, NULL);      /* "56789a": the root's bytes, a held */
    bp_buf *c = bp_read_retained_slice(b, 2, NULL);    /* "56"; b's reader moves, b held */
    assert_int_equal(bp_reader_index(b), 2);
    /* Each holds the one it was made from (Netty's parent), not the root. */
    assert_int_equal(bp_refcnt(root), 2);
    assert_int_equal(bp_refcnt(a), 2);
    assert_int_equal(bp_refcnt(b), 2);
    assert_int_equal(bp_refcnt(c), 1);
    expect_text(b, 0, "56789a");
    expect_text(c, 0, "56");
    assert_ptr_equal(bp_data(c, 0), (uint8_t *)bp_data(root, 0) + 5);
    /* Release in an unusual order; each lives while what was made from it does. */
    assert_int_equal(bp_release(root), 0);
    assert_int_equal(bp_release(a), 0);     /* b holds it */
    assert_int_equal(bp_refcnt(a), 1);
    expect_text(c, 0, "56");
    assert_int_equal(bp_release(c), 1);     /* drops its hold on b */
    assert_int_equal(bp_refcnt(b), 1);
    assert_int_equal(bp_refcnt(root), 1);
    assert_int_equal(bp_release(b), 1);     /* and b's on a, and a's on the root */
    assert_int_equal(bp_refcnt(a), 0);
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
    for (bp__buf_slab *slab = a->objects.slabs; slab != NULL; slab = slab->next) slabs++;
    assert_true(slabs <= 1100 / BP__SLAB_BUFS + 2); /* objects were reused, not piled up */
}

/* ---- Transfers between buffers that share memory, against a model made with memcpy: the
 * destination's bytes after each call are its bytes before with the range replaced by the
 * source's bytes as they were before the call (Netty's result), whatever grew or moved. */

enum { K_ROOT, K_DUP, K_SLICE, K_COMP, K_COMP_DUP, K_COMP_SLICE, K_PART, K_PART_SLICE, K_NESTED, K_NESTED_DUP, KINDS };
static const char *const kind_name[KINDS] = {
    "root", "duplicate", "slice", "composite", "duplicate of the composite", "slice of the composite",
    "component", "slice of the component", "nested composite", "duplicate of the nested composite"};

/* A root, and a composite of a retained slice of it, a plain component and a nested
 * composite: every kind of buffer above shows memory of the others. The test holds one
 * reference on root, part, nested and comp. */
typedef struct world {
    bp_buf *root, *part, *nested, *comp;
    bp_buf *kind[KINDS];
} world;

/* Appends n pseudo-random bytes (a random block repeated, each copy shifted: cheap for huge
 * buffers, and no two nearby indices alike). The shift adds `round` to every byte eight
 * bytes at a time (no carry crosses a byte): the same bytes as a byte loop, for an eighth of
 * the memory accesses that TSan and Valgrind instrument. */
static void append_pattern(bp_buf *b, size_t n, uint64_t *seed)
{
    enum { BLOCK = 4093 };
    const uint64_t high = 0x8080808080808080u;
    uint64_t words[(BLOCK + 7) / 8] = {0};
    uint8_t *block = (uint8_t *)words;
    for (size_t i = 0; i < BLOCK; i++) block[i] = (uint8_t)test_rand(seed);
    for (size_t done = 0, round = 0; done < n; round++) {
        size_t len = n - done < BLOCK ? n - done : BLOCK;
        uint64_t add = (uint8_t)round * 0x0101010101010101u;
        for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
            words[i] = ((words[i] & ~high) + (add & ~high)) ^ ((words[i] ^ add) & high);
        assert_int_equal(bp_write_bytes(b, block, len), 0);
        done += len;
    }
}

static world world_new(bp_allocator *a, size_t root_capacity, size_t max_components, uint64_t *seed)
{
    world w;
    w.root = bp_alloc(a, root_capacity);
    assert_non_null(w.root);
    append_pattern(w.root, bp_max_fast_writable_bytes(w.root), seed); /* its region is full: growing moves it */
    w.part = bp_alloc(a, 40);
    append_pattern(w.part, 40, seed);
    assert_int_equal(bp_retain(w.part), 0);
    bp_buf *inner = bp_alloc(a, 24);
    append_pattern(inner, 24, seed);
    w.nested = bp_composite(a, 16, NULL);
    assert_int_equal(bp_composite_add(w.nested, inner, 1), 0);
    assert_int_equal(bp_retain(w.nested), 0);
    w.comp = bp_composite(a, max_components, NULL);
    assert_int_equal(bp_composite_add(w.comp, bp_retained_slice(w.root, 3, 20, NULL), 1), 0);
    assert_int_equal(bp_composite_add(w.comp, w.part, 1), 0);
    assert_int_equal(bp_composite_add(w.comp, w.nested, 1), 0);
    w.kind[K_ROOT] = w.root;
    w.kind[K_DUP] = bp_duplicate(w.root, NULL);
    w.kind[K_SLICE] = bp_slice(w.root, 5, 30, NULL);
    w.kind[K_COMP] = w.comp;
    w.kind[K_COMP_DUP] = bp_duplicate(w.comp, NULL);
    w.kind[K_COMP_SLICE] = bp_slice(w.comp, 10, 60, NULL);
    w.kind[K_PART] = w.part;
    w.kind[K_PART_SLICE] = bp_slice(w.part, 4, 30, NULL);
    w.kind[K_NESTED] = w.nested;
    w.kind[K_NESTED_DUP] = bp_duplicate(w.nested, NULL);
    for (int k = 0; k < KINDS; k++) assert_non_null(w.kind[k]);
    return w;
}

static void world_free(world *w)
{
    assert_int_equal(bp_release(w->comp), 1); /* plain views die with what they show */
    assert_int_equal(bp_release(w->nested), 1);
    assert_int_equal(bp_release(w->part), 1);
    assert_int_equal(bp_release(w->root), 1);
}

/* Bytes compared around a written range: all of them for small buffers. */
#define WINDOW_MARGIN 512

typedef struct expectation {
    size_t lo, hi;  /* the window of the destination compared */
    uint8_t *bytes; /* its expected bytes */
} expectation;

/* The destination's window around [index, index + n) as it must be once the source's bytes
 * (read now) are written there. */
static expectation expect_copy(bp_buf *dst, size_t index, bp_buf *src, size_t src_index, size_t n)
{
    size_t capacity = bp_capacity(dst);
    expectation e;
    e.lo = index > WINDOW_MARGIN ? index - WINDOW_MARGIN : 0;
    e.hi = index + n + WINDOW_MARGIN;
    size_t before = capacity < e.hi ? capacity : e.hi; /* what exists now */
    e.bytes = calloc(e.hi - e.lo, 1);
    assert_non_null(e.bytes);
    if (before > e.lo) assert_int_equal(bp_get_bytes(dst, e.lo, e.bytes, before - e.lo), 0);
    assert_int_equal(bp_get_bytes(src, src_index, e.bytes + (index - e.lo), n), 0);
    return e;
}

static void check_expectation(bp_buf *dst, expectation *e, size_t known_end, const char *what)
{
    size_t hi = e->hi < bp_capacity(dst) ? e->hi : bp_capacity(dst);
    if (hi > known_end) hi = known_end; /* past it: growth brought unspecified bytes */
    uint8_t *got = malloc(e->hi - e->lo);
    assert_non_null(got);
    assert_int_equal(bp_get_bytes(dst, e->lo, got, hi - e->lo), 0);
    if (memcmp(got, e->bytes, hi - e->lo) != 0) /* then the byte loop, to name the first wrong byte */
        for (size_t i = 0; i < hi - e->lo; i++)
            if (got[i] != e->bytes[i]) fail_msg("%s: byte %zu is %u, expected %u", what, e->lo + i, got[i], e->bytes[i]);
    free(got);
    free(e->bytes);
}

static size_t pick(uint64_t *seed, size_t below_or_at) { return (size_t)(test_rand(seed) % (below_or_at + 1)); }

/* One absolute copy of n bytes (bp_set_buf or bp_get_buf) between two kinds. */
static void absolute_copy_trial(world *w, int d, int s, size_t max_n, uint64_t *seed)
{
    bp_buf *dst = w->kind[d], *src = w->kind[s];
    size_t cd = bp_capacity(dst), cs = bp_capacity(src);
    size_t n = pick(seed, cd < cs ? cd : cs);
    if (n > max_n) n = max_n;
    size_t si = pick(seed, cs - n), di = pick(seed, cd - n);
    size_t dr = bp_reader_index(dst), dw = bp_writer_index(dst), sr = bp_reader_index(src), sw = bp_writer_index(src);
    expectation e = expect_copy(dst, di, src, si, n);
    int set = test_rand(seed) & 1;
    int rc = set ? bp_set_buf(dst, di, src, si, n) : bp_get_buf(src, si, dst, di, n);
    char what[160];
    snprintf(what, sizeof what, "%s(%s at %zu <- %s at %zu, %zu bytes)", set ? "bp_set_buf" : "bp_get_buf",
             kind_name[d], di, kind_name[s], si, n);
    if (rc != 0) fail_msg("%s returned %d", what, rc);
    check_expectation(dst, &e, SIZE_MAX, what);
    assert_int_equal(bp_reader_index(dst), dr); /* absolute: no index moves */
    assert_int_equal(bp_writer_index(dst), dw);
    assert_int_equal(bp_reader_index(src), sr);
    assert_int_equal(bp_writer_index(src), sw);
}

/* One relative transfer (bp_write_buf or bp_read_buf) of n bytes; with `grow`, the destination
 * is full and must grow first. */
static void relative_transfer_trial(world *w, int d, int s, bool grow, size_t max_n, uint64_t *seed)
{
    bp_buf *dst = w->kind[d], *src = w->kind[s];
    size_t cd = bp_capacity(dst), cs = bp_capacity(src);
    size_t si = pick(seed, cs), n = pick(seed, cs - si);
    size_t dw = grow ? cd : pick(seed, cd);
    if (!grow && n > cd - dw) n = cd - dw;
    if (n > max_n) n = max_n;
    if (grow && n == 0) n = cs > si ? 1 : 0;
    assert_int_equal(bp_set_index(src, si, si + n), 0);
    assert_int_equal(bp_set_index(dst, 0, dw), 0);
    expectation e = expect_copy(dst, dw, src, si, n);
    int write = test_rand(seed) & 1;
    int rc = write ? bp_write_buf(dst, src, n) : bp_read_buf(src, dst, n);
    char what[160];
    snprintf(what, sizeof what, "%s(%s at %zu <- %s at %zu, %zu bytes%s)", write ? "bp_write_buf" : "bp_read_buf",
             kind_name[d], dw, kind_name[s], si, n, grow ? ", growing" : "");
    if (rc != 0) fail_msg("%s returned %d", what, rc);
    check_expectation(dst, &e, dw + n, what);
    assert_int_equal(bp_writer_index(dst), dw + n);
    assert_int_equal(bp_reader_index(src), si + n);
    /* growth brought bytes of no value past the written ones: give them one */
    if (bp_capacity(dst) > cd) assert_int_equal(bp_set_zero(dst, dw + n, bp_capacity(dst) - (dw + n)), 0);
}

/* Every kind to every kind: absolute copies (overlapping any way), relative transfers, and
 * relative transfers into a full destination that grows (a root moving out of its region, a
 * composite adding a component or, at max_components, consolidating). */
static void transfer_matrix(bp_allocator *a, size_t root_capacity, size_t max_components, const bool *kinds,
                            int trials, size_t max_n)
{
    uint64_t seed = 0x9e3779b97f4a7c15u ^ root_capacity ^ max_components;
    for (int d = 0; d < KINDS; d++) {
        if (!kinds[d]) continue;
        for (int s = 0; s < KINDS; s++) {
            if (!kinds[s]) continue;
            world w = world_new(a, root_capacity, max_components, &seed);
            bool growable = bp_max_capacity(w.kind[d]) > bp_capacity(w.kind[d]);
            if (growable && d != s) relative_transfer_trial(&w, d, s, true, max_n, &seed);
            for (int t = 0; t < trials; t++) {
                absolute_copy_trial(&w, d, s, max_n, &seed);
                if (d != s) relative_transfer_trial(&w, d, s, false, max_n, &seed);
            }
            if (growable && d != s) relative_transfer_trial(&w, d, s, true, max_n, &seed);
            world_free(&w);
        }
    }
}

static const bool every_kind[KINDS] = {true, true, true, true, true, true, true, true, true, true};

static void test_transfers_between_buffers_sharing_memory(void **state)
{
    transfer_matrix(*state, 48, 16, every_kind, 6, SIZE_MAX);
}

/* The same with the composite's table full: its growth consolidates, releasing its
 * components (the transfer's source among them) while the bytes are on their way. */
static void test_transfers_while_a_composite_consolidates(void **state)
{
    transfer_matrix(*state, 48, 3, every_kind, 2, SIZE_MAX);
}

/* A root above the chunk size: a huge mapping, unmapped when the root grows away from it. */
static void test_transfers_with_a_huge_root(void **state)
{
    static const bool kinds[KINDS] = {[K_ROOT] = true, [K_DUP] = true, [K_SLICE] = true, [K_COMP] = true,
                                      [K_COMP_DUP] = true};
    transfer_matrix(*state, (5u << 20) + 1000, 16, kinds, 2, 100000);
}

/* The relative calls keep refusing a buffer as its own source and destination. */
static void test_relative_transfer_to_itself_is_refused(void **state)
{
    uint64_t seed = 7;
    world w = world_new(*state, 48, 16, &seed);
    misuse_capture_start();
    for (int k = 0; k < KINDS; k++) {
        bp_buf *b = w.kind[k];
        size_t r = bp_reader_index(b), wi = bp_writer_index(b);
        assert_int_equal(bp_write_buf(b, b, 1), BP_EINVAL);
        assert_int_equal(bp_read_buf(b, b, 1), BP_EINVAL);
        assert_int_equal(bp_reader_index(b), r);
        assert_int_equal(bp_writer_index(b), wi);
    }
    misuse_capture_stop();
    world_free(&w);
}

/* ---- Netty's reference counts for views of views (AbstractPooledDerivedByteBuf): a
 * retained derivation retains its immediate parent and releases it at its end. */

static void test_retained_views_hold_their_parent_as_netty(void **state)
{
    bp_allocator *a = *state;
    bp_buf *root = buf_with(a, "0123456789");
    /* ByteBuf s1 = root.retainedSlice(0, 8);  root.refCnt() == 2, s1.refCnt() == 1 */
    bp_buf *s1 = bp_retained_slice(root, 0, 8, NULL);
    assert_int_equal(bp_refcnt(root), 2);
    assert_int_equal(bp_refcnt(s1), 1);
    /* ByteBuf s2 = s1.retainedSlice(2, 4);  s1.refCnt() == 2, root.refCnt() == 2, s2.refCnt() == 1 */
    bp_buf *s2 = bp_retained_slice(s1, 2, 4, NULL);
    assert_int_equal(bp_refcnt(s1), 2);
    assert_int_equal(bp_refcnt(root), 2);
    assert_int_equal(bp_refcnt(s2), 1);
    /* ByteBuf d = s2.retainedDuplicate();  s2.refCnt() == 2, d.refCnt() == 1 */
    bp_buf *d = bp_retained_duplicate(s2, NULL);
    assert_int_equal(bp_refcnt(s2), 2);
    assert_int_equal(bp_refcnt(d), 1);
    /* ByteBuf p = s1.slice(0, 2);  p.refCnt() == s1.refCnt() == 2 (shared) */
    bp_buf *p = bp_slice(s1, 0, 2, NULL);
    assert_int_equal(bp_refcnt(p), 2);
    assert_int_equal(active_views(a), 4);
    /* s1.release() == false: s2 holds it; s1.refCnt() == 1, root.refCnt() == 2 */
    assert_int_equal(bp_release(s1), 0);
    assert_int_equal(bp_refcnt(s1), 1);
    assert_int_equal(bp_refcnt(p), 1);
    assert_int_equal(bp_refcnt(root), 2);
    expect_text(s2, 0, "2345"); /* bytes still reached through the root */
    expect_text(d, 0, "2345");
    expect_text(p, 0, "01");
    /* s2.release() == false: d holds it; s2.refCnt() == 1 */
    assert_int_equal(bp_release(s2), 0);
    assert_int_equal(bp_refcnt(s2), 1);
    /* d.release() == true: d deallocates, releasing s2 (0), which releases s1 (0), which
     * releases the root: root.refCnt() == 1, and p died with s1 */
    assert_int_equal(bp_release(d), 1);
    assert_int_equal(bp_refcnt(s2), 0);
    assert_int_equal(bp_refcnt(s1), 0);
    assert_int_equal(bp_refcnt(p), 0);
    assert_int_equal(bp_refcnt(root), 1);
    assert_int_equal(active_views(a), 0);
    /* A retained view of a plain view holds the buffer whose count the plain one shares. */
    bp_buf *plain = bp_slice(root, 1, 5, NULL);
    bp_buf *rp = bp_retained_slice(plain, 1, 2, NULL);
    assert_int_equal(bp_refcnt(root), 2);
    assert_int_equal(bp_refcnt(rp), 1);
    assert_int_equal(bp_view_free(plain), 0); /* the plain view may go first */
    expect_text(rp, 0, "23");
    assert_int_equal(bp_release(root), 0);
    assert_int_equal(bp_release(rp), 1);
    assert_int_equal(bp_refcnt(root), 0);
}

/* A chain of retained views, each made from the last, ends without recursion: a
 * 100 000-link chain released from its far end on a thread with a small stack. */
static void *release_long_chain(void *arg)
{
    bp_allocator *a = arg;
    bp_buf *root = buf_with(a, "chain");
    bp_buf *last = root;
    for (int i = 0; i < 100000; i++) {
        bp_buf *next = bp_retained_duplicate(last, NULL);
        if (next == NULL) return NULL;
        if (last != root && bp_release(last) != 0) return NULL; /* only the next one holds it */
        last = next;
    }
    if (bp_release(root) != 0 || bp_refcnt(root) != 1) return NULL;
    if (bp_release(last) != 1 || bp_refcnt(root) != 0) return NULL;
    return a;
}

static void test_long_chain_of_retained_views(void **state)
{
    pthread_attr_t attr;
    pthread_t t;
    void *result = NULL;
    assert_int_equal(pthread_attr_init(&attr), 0);
    assert_int_equal(pthread_attr_setstacksize(&attr, 128 * 1024), 0);
    assert_int_equal(pthread_create(&t, &attr, release_long_chain, *state), 0);
    assert_int_equal(pthread_join(t, &result), 0);
    pthread_attr_destroy(&attr);
    assert_ptr_equal(result, *state);
}

/* ---- Generations: a buffer released behind a view's back and handed out again. */

static void test_view_detects_a_recycled_root(void **state)
{
    bp_allocator *a = *state;
    bp_buf *root = buf_with(a, "original");
    bp_buf *r = bp_retained_slice(root, 0, 8, NULL);
    bp_buf *p = bp_slice(r, 1, 3, NULL);        /* shares r's count */
    bp_buf *r2 = bp_retained_slice(r, 2, 4, NULL); /* holds r, which is intact */
    assert_int_equal(bp_release_n(root, 2), 1); /* the caller's reference and the view's */
    bp_buf *next = buf_with(a, "NEWOWNER");     /* the same object, someone else's now */
    assert_ptr_equal(next, root);
    misuse_capture_start();
    char got[8];
    int err = 0;
    uint8_t v;
    assert_int_equal(bp_get_bytes(r, 0, got, 8), BP_EFREED);
    assert_int_equal(last_misuse.err, BP_EFREED);
    assert_int_equal(bp_set_bytes(r, 0, "xxxx", 4), BP_EFREED);
    assert_int_equal(bp_get_u8(p, 0, &v), BP_EFREED);
    assert_int_equal(bp_set_u8(p, 0, 'y'), BP_EFREED);
    assert_int_equal(bp_get_u8(r2, 0, &v), BP_EFREED);
    assert_int_equal(bp_set_u8(r2, 0, 'z'), BP_EFREED);
    assert_null(bp_data(r, 0));
    assert_null(bp_data(r2, 0));
    assert_int_equal(bp_release(r2), 1); /* its hold on r goes; r is intact */
    assert_int_equal(bp_refcnt(r), 1);
    assert_null(bp_slice(r, 0, 1, &err));
    assert_int_equal(err, BP_EFREED);
    assert_int_equal(bp_discard_read_bytes(r), BP_EFREED);
    /* r's own last reference goes, with p; what r held is not released a second time. */
    last_misuse.count = 0;
    assert_int_equal(bp_release(r), 1);
    assert_int_equal(last_misuse.count, 1);
    assert_int_equal(last_misuse.err, BP_EFREED);
    misuse_capture_stop();
    assert_int_equal(bp_refcnt(next), 1);
    expect_text(next, 0, "NEWOWNER");
    assert_int_equal(bp_release(next), 1);
}

static void test_view_detects_a_recycled_parent(void **state)
{
    bp_allocator *a = *state;
    bp_buf *root = buf_with(a, "0123456789");
    bp_buf *other = buf_with(a, "other");
    bp_buf *s1 = bp_retained_slice(root, 0, 10, NULL);
    bp_buf *s2 = bp_retained_slice(s1, 2, 4, NULL); /* holds s1 */
    assert_int_equal(bp_release_n(s1, 2), 1);       /* behind s2's back: s1 and its hold go */
    assert_int_equal(bp_refcnt(root), 1);
    bp_buf *v = bp_retained_duplicate(other, NULL); /* s1's object again */
    assert_ptr_equal(v, s1);
    misuse_capture_start();
    uint8_t x;
    assert_int_equal(bp_get_u8(s2, 0, &x), BP_EFREED);
    assert_int_equal(bp_release(s2), 1); /* s2 goes; v, in s1's place, is left alone */
    assert_int_equal(last_misuse.err, BP_EFREED);
    misuse_capture_stop();
    assert_int_equal(bp_refcnt(v), 1);
    assert_int_equal(bp_refcnt(other), 2);
    expect_text(v, 0, "other");
    assert_int_equal(bp_release(v), 1);
    assert_int_equal(bp_release(other), 1);
    assert_int_equal(bp_release(root), 1);
}

/* Growth gives a root a region of another class, and with it a release tag: a root a view
 * recorded must keep the tag that sends its release through the library. */
static void test_recorded_root_stays_detectable_after_growth(void **state)
{
    bp_allocator *a = *state;
    bp_buf *root = buf_with(a, "grow me");
    bp_buf *r = bp_retained_slice(root, 0, 4, NULL);
    assert_int_equal(bp_ensure_writable(root, 3000), 0); /* 4096 bytes, a new region */
    assert_int_equal(bp_capacity(root), 4096);
    assert_int_equal(bp_release_n(root, 2), 1);          /* behind the view's back */
    bp_buf *next = bp_alloc(a, 4096);
    assert_ptr_equal(next, root);
    assert_int_equal(bp_write_bytes(next, "NEXT", 4), 0);
    misuse_capture_start();
    char got[4];
    assert_int_equal(bp_get_bytes(r, 0, got, 4), BP_EFREED);
    assert_int_equal(bp_release(r), 1);
    misuse_capture_stop();
    assert_int_equal(bp_refcnt(next), 1);
    expect_text(next, 0, "NEXT");
    assert_int_equal(bp_release(next), 1);
}

/* ---- Freeing plain views. */

static void test_view_free(void **state)
{
    bp_allocator *a = *state;
    bp_buf *root = buf_with(a, "0123456789");
    bp_buf *s1 = bp_slice(root, 0, 4, NULL);
    bp_buf *s2 = bp_read_slice(root, 3, NULL);
    bp_buf *s3 = bp_slice(root, 4, 4, NULL);
    bp_buf *d = bp_duplicate(root, NULL);
    assert_int_equal(listed_views(root), 4);
    assert_int_equal(active_views(a), 4);
    assert_int_equal(bp_view_free(s2), 0); /* from the middle of the list */
    assert_int_equal(listed_views(root), 3);
    assert_int_equal(bp_view_free(d), 0);  /* its head */
    assert_int_equal(listed_views(root), 2);
    assert_int_equal(bp_view_free(s1), 0); /* its tail */
    assert_int_equal(listed_views(root), 1);
    assert_int_equal(active_views(a), 1);
    assert_int_equal(bp_refcnt(root), 1);       /* the count is untouched */
    assert_int_equal(bp_reader_index(root), 3); /* and so are the original's indices */
    expect_text(root, 0, "0123456789");
    expect_text(s3, 0, "4567");
    misuse_capture_start();
    assert_int_equal(bp_view_free(s2), BP_EFREED); /* freed already */
    assert_int_equal(bp_view_free(NULL), BP_EINVAL);
    assert_int_equal(bp_view_free(root), BP_EINVAL);
    bp_buf *r = bp_retained_slice(root, 0, 2, NULL);
    assert_int_equal(bp_view_free(r), BP_EINVAL);
    bp_buf *c = bp_composite(a, 4, NULL);
    assert_int_equal(bp_view_free(c), BP_EINVAL);
    assert_int_equal(last_misuse.err, BP_EINVAL);
    misuse_capture_stop();
    assert_int_equal(bp_refcnt(r), 1);
    bp_buf *pr = bp_slice(r, 0, 1, NULL); /* a plain view of a retained one */
    assert_int_equal(listed_views(r), 1);
    assert_int_equal(bp_view_free(pr), 0);
    assert_int_equal(listed_views(r), 0);
    assert_int_equal(bp_refcnt(r), 1);
    assert_int_equal(bp_release(c), 1);
    assert_int_equal(bp_release(r), 1);
    assert_int_equal(active_views(a), 1);
    assert_int_equal(bp_release(root), 1); /* s3, never freed, dies with it */
    assert_int_equal(active_views(a), 0);
    misuse_capture_start();
    assert_int_equal(bp_view_free(s3), BP_EFREED);
    misuse_capture_stop();
}

/* A decoder taking a read slice per frame from a long-lived buffer and freeing each: the
 * number of live views stays 0 and nothing grows. */
static void test_freed_read_slices_do_not_pile_up(void **state)
{
    bp_allocator *a = *state;
    bp_buf *conn = bp_alloc(a, 256);
    long rounds = slowed_down() ? 200000 : 10000000;
    size_t slabs = 0, mapped = 0;
    for (long i = 0; i < rounds; i++) {
        if (bp_readable_bytes(conn) < 8) {
            assert_int_equal(bp_clear(conn), 0);
            for (uint64_t k = 0; k < 32; k++) assert_int_equal(bp_write_u64(conn, (uint64_t)i + k), 0);
        }
        uint64_t want = 0, got = 0;
        assert_int_equal(bp_get_u64(conn, bp_reader_index(conn), &want), 0);
        bp_buf *frame = bp_read_slice(conn, 8, NULL);
        if (frame == NULL || bp_get_u64(frame, 0, &got) != 0 || got != want || bp_view_free(frame) != 0)
            fail_msg("round %ld: frame %p, %llu != %llu", i, (void *)frame, (unsigned long long)got,
                     (unsigned long long)want);
        if ((i & 0x3ff) == 0 || i == rounds - 1) {
            bp_allocator_stats st;
            assert_int_equal(bp_allocator_get_stats(a, &st, sizeof st), 0);
            assert_int_equal(st.active_views, 0);
            if (i == 0) {
                slabs = slab_count(a);
                mapped = st.mapped_bytes;
            }
            assert_int_equal(st.mapped_bytes, mapped);
        }
    }
    assert_int_equal(slab_count(a), slabs); /* view objects were reused, not piled up */
    assert_int_equal(bp_refcnt(conn), 1);
    assert_int_equal(bp_release(conn), 1);
}

static long resident_kib(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%ld %ld", &size, &resident), 2);
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* The same at program level: 10 M read slices of one live buffer, each freed, leave the
 * process's resident memory where it was (within 1 MiB). Checked builds only: under
 * sanitizers and Valgrind the loop is slow and their own memory moves. */
static void test_read_slice_loop_keeps_rss_flat(void **state)
{
    if (slowed_down()) skip();
    bp_allocator *a = *state;
    bp_buf *conn = bp_alloc(a, 64);
    assert_int_equal(bp_write_zero(conn, 64), 0);
    for (int i = 0; i < 1000; i++) { /* warm: the recycler and the thread state exist */
        assert_int_equal(bp_set_reader_index(conn, 0), 0);
        assert_int_equal(bp_view_free(bp_read_slice(conn, 8, NULL)), 0);
    }
    long before = resident_kib();
    for (long i = 0; i < 10000000; i++) {
        if (bp_readable_bytes(conn) < 8) bp_set_reader_index(conn, 0);
        if (bp_view_free(bp_read_slice(conn, 8, NULL)) != 0) fail_msg("round %ld", i);
    }
    long after = resident_kib();
    assert_true(after - before <= 1024);
    assert_int_equal(active_views(a), 0);
    assert_int_equal(bp_release(conn), 1);
}

/* ---- Discarding read bytes while they are shared (Netty's decoders discard only at
 * refCnt 1). */

/* An echo server: frames ([length][bytes]) arrive pipelined, two or three per read, into
 * one input buffer; each is kept as a retained slice until written back, and the input
 * buffer is compacted between reads. Every frame must come back as it arrived. */
static void test_discard_leaves_retained_frames_intact(void **state)
{
    bp_allocator *a = *state;
    misuse_capture_start();
    bp_buf *in = bp_alloc(a, 32);
    bp_buf *frames[12];
    char text[12][16];
    int decoded = 0, arrived = 0;
    for (int read = 0; read < 5; read++) {
        for (int k = 0; k < 2 + read % 2 && arrived < 12; k++, arrived++) { /* a read of the socket */
            int n = snprintf(text[arrived], sizeof text[arrived], "frame-%02d-%s", arrived, read % 2 ? "odd" : "even");
            assert_int_equal(bp_write_u8(in, (uint8_t)n), 0);
            assert_int_equal(bp_write_bytes(in, text[arrived], (size_t)n), 0);
        }
        uint8_t len = 0;
        while (bp_readable_bytes(in) > 0) { /* decode every whole frame */
            assert_int_equal(bp_read_u8(in, &len), 0);
            frames[decoded] = bp_read_retained_slice(in, len, NULL);
            assert_non_null(frames[decoded]);
            decoded++;
        }
        size_t reader = bp_reader_index(in), writer = bp_writer_index(in);
        assert_int_equal(bp_discard_some_read_bytes(in), BP_ESHARED); /* the frames still show them */
        assert_int_equal(bp_discard_read_bytes(in), BP_ESHARED);
        assert_int_equal(bp_reader_index(in), reader); /* nothing changed */
        assert_int_equal(bp_writer_index(in), writer);
    }
    assert_int_equal(decoded, 12);
    for (int i = 0; i < 12; i++) { /* written back: each as it arrived */
        assert_int_equal(bp_readable_bytes(frames[i]), strlen(text[i]));
        expect_text(frames[i], 0, text[i]);
        assert_int_equal(bp_release(frames[i]), 1);
    }
    assert_int_equal(last_misuse.count, 0); /* refusing is not misuse */
    /* Nothing shares the input any more: discarding works again. */
    assert_int_equal(bp_write_bytes(in, "tail", 4), 0);
    assert_int_equal(bp_skip_bytes(in, bp_readable_bytes(in) - 4), 0);
    assert_int_equal(bp_discard_read_bytes(in), 0);
    assert_int_equal(bp_reader_index(in), 0);
    expect_text(in, 0, "tail");
    /* The same with plain read slices, freed once written. */
    bp_buf *frame = bp_read_slice(in, 2, NULL);
    assert_int_equal(bp_discard_some_read_bytes(in), 0); /* not due: 2 read, 2 left */
    assert_int_equal(bp_discard_read_bytes(in), BP_ESHARED);
    expect_text(frame, 0, "ta");
    assert_int_equal(bp_view_free(frame), 0);
    assert_int_equal(bp_discard_read_bytes(in), 0);
    expect_text(in, 0, "il");
    assert_int_equal(bp_writer_index(in), 2);
    misuse_capture_stop();
    assert_int_equal(bp_release(in), 1);
}

/* Who shares: the count above 1, or any view other than the one called on; a retained view
 * whose parent is held by nothing else may discard. */
static void test_discard_sharing_rules(void **state)
{
    bp_allocator *a = *state;
    bp_buf *root = buf_with(a, "0123456789");
    assert_int_equal(bp_skip_bytes(root, 2), 0);
    assert_int_equal(bp_retain(root), 0); /* another holder */
    assert_int_equal(bp_discard_read_bytes(root), BP_ESHARED);
    assert_int_equal(bp_release(root), 0);
    bp_buf *d = bp_duplicate(root, NULL);
    assert_int_equal(bp_discard_read_bytes(root), BP_ESHARED); /* d shows the bytes */
    bp_buf *d2 = bp_duplicate(root, NULL);
    assert_int_equal(bp_discard_read_bytes(d), BP_ESHARED);    /* d2 does too */
    assert_int_equal(bp_view_free(d2), 0);
    /* d alone: a discard through it moves the original's bytes, as Netty's duplicate does. */
    assert_int_equal(bp_discard_read_bytes(d), 0);
    expect_text(root, 0, "23456789");
    assert_int_equal(bp_reader_index(d), 0);
    assert_int_equal(bp_reader_index(root), 2); /* the original's indices are its own */
    assert_int_equal(bp_view_free(d), 0);
    /* A retained duplicate, while the caller still holds the original: shared. */
    bp_buf *rd = bp_retained_duplicate(root, NULL);
    assert_int_equal(bp_discard_read_bytes(rd), BP_ESHARED);
    assert_int_equal(bp_discard_read_bytes(root), BP_ESHARED);
    bp_buf *chain = bp_retained_duplicate(rd, NULL);
    assert_int_equal(bp_release(rd), 0);     /* chain holds rd, rd holds the root */
    assert_int_equal(bp_discard_read_bytes(chain), BP_ESHARED); /* the caller still holds root */
    assert_int_equal(bp_release(root), 0);   /* now only the chain holds it */
    assert_int_equal(bp_discard_read_bytes(chain), 0);
    expect_text(chain, 0, "456789");
    bp_buf *pc = bp_slice(chain, 0, 4, NULL); /* "4567" */
    assert_int_equal(bp_skip_bytes(chain, 1), 0);
    assert_int_equal(bp_discard_read_bytes(chain), BP_ESHARED); /* pc shows them */
    /* pc shares chain's count and nothing else shows the bytes: one holder, as a root and
     * its only duplicate. */
    assert_int_equal(bp_skip_bytes(pc, 1), 0);
    assert_int_equal(bp_discard_read_bytes(pc), 0);
    expect_text(chain, 0, "5677");
    assert_int_equal(bp_release(chain), 1);
    assert_int_equal(bp_refcnt(root), 0);
}

/* ---- Lengths near SIZE_MAX are lengths, not "the whole buffer". */

static void test_slice_lengths_near_size_max(void **state)
{
    bp_allocator *a = *state;
    bp_buf *root = buf_with(a, "abcdef");
    int err = 0;
    misuse_capture_start();
    assert_null(bp_slice(root, 5, SIZE_MAX, &err));
    assert_int_equal(err, BP_ERANGE);
    assert_null(bp_slice(root, 0, SIZE_MAX, &err));
    assert_int_equal(err, BP_ERANGE);
    assert_null(bp_read_slice(root, SIZE_MAX, &err));
    assert_int_equal(err, BP_ERANGE);
    assert_null(bp_retained_slice(root, 1, SIZE_MAX, &err));
    assert_int_equal(err, BP_ERANGE);
    assert_null(bp_read_retained_slice(root, SIZE_MAX, &err));
    assert_int_equal(err, BP_ERANGE);
    assert_null(bp_read_retained_slice(root, SIZE_MAX - 1, &err));
    assert_int_equal(err, BP_ERANGE);
    misuse_capture_stop();
    assert_int_equal(bp_reader_index(root), 0);
    assert_int_equal(bp_refcnt(root), 1);
    assert_int_equal(active_views(a), 0);
    /* A duplicate's capacity is its original's: it may change it; a slice's may not. */
    bp_buf *d = bp_duplicate(root, NULL);
    assert_int_equal(bp_set_capacity(d, 100), 0);
    assert_int_equal(bp_capacity(root), 100);
    assert_int_equal(bp_release(root), 1);
}

/* ---- Live views counted across threads: made on one, ended on another, and threads
 * exiting in between. */

typedef struct views_job {
    bp_buf *root;
    bp_buf *views[64];
    int n;
} views_job;

static void *release_views_job(void *arg)
{
    views_job *job = arg;
    for (int i = 0; i < job->n; i++)
        if (bp_release(job->views[i]) != 1) return NULL;
    return job;
}

static void *make_plain_views_job(void *arg)
{
    views_job *job = arg;
    for (int i = 0; i < job->n; i++)
        if ((job->views[i] = bp_slice(job->root, (size_t)i % 8, 2, NULL)) == NULL) return NULL;
    return job;
}

static void test_views_counted_across_threads(void **state)
{
    bp_allocator *a = *state;
    views_job job = {.root = buf_with(a, "0123456789"), .n = 64};
    for (int i = 0; i < job.n; i++) job.views[i] = bp_retained_slice(job.root, 1, 4, NULL);
    assert_int_equal(active_views(a), 64);
    assert_ptr_equal(run_on_thread(release_views_job, &job), &job); /* ended there, thread gone */
    assert_int_equal(active_views(a), 0);
    assert_int_equal(bp_refcnt(job.root), 1);
    assert_ptr_equal(run_on_thread(make_plain_views_job, &job), &job); /* made there, thread gone */
    assert_int_equal(active_views(a), 64);
    for (int i = 0; i < 32; i++) assert_int_equal(bp_view_free(job.views[i]), 0);
    assert_int_equal(active_views(a), 32);
    assert_int_equal(bp_release(job.root), 1);
    assert_int_equal(active_views(a), 0);
}

typedef struct view_maker {
    bp_buf *shared;    /* one reference of it is this thread's */
    pthread_barrier_t *start;
    int bad;
} view_maker;

static void *make_views_then_release(void *arg)
{
    view_maker *m = arg;
    pthread_barrier_wait(m->start);
    bp_buf *slice = bp_retained_slice(m->shared, 10, 100, NULL), *dup = bp_retained_duplicate(m->shared, NULL);
    uint8_t v = 0;
    if (slice == NULL || bp_get_u8(slice, 0, &v) != 0 || v != 10) m->bad++;
    if (dup == NULL || bp_get_u8(dup, 50, &v) != 0 || v != 50) m->bad++;
    if (slice != NULL) bp_release(slice);
    if (dup != NULL) bp_release(dup);
    bp_release(m->shared);
    return NULL;
}

/* Threads that each hold a reference on one buffer may make retained views of it at once,
 * also its very first ones (which record its generation), and release their references
 * meanwhile: the TSan build checks the accesses, every round the values and the end. */
static void test_retained_views_of_one_buffer_made_on_several_threads(void **state)
{
    bp_allocator *a = *state;
    enum { THREADS = 3 };
    for (int round = 0; round < 200; round++) {
        bp_buf *shared = bp_alloc(a, 256);
        for (int i = 0; i < 256; i++) assert_int_equal(bp_write_u8(shared, (uint8_t)i), 0);
        assert_int_equal(bp_retain_n(shared, THREADS - 1), 0);
        pthread_barrier_t start;
        assert_int_equal(pthread_barrier_init(&start, NULL, THREADS), 0);
        view_maker makers[THREADS];
        pthread_t threads[THREADS];
        for (int t = 0; t < THREADS; t++) {
            makers[t] = (view_maker){shared, &start, 0};
            assert_int_equal(pthread_create(&threads[t], NULL, make_views_then_release, &makers[t]), 0);
        }
        for (int t = 0; t < THREADS; t++) {
            assert_int_equal(pthread_join(threads[t], NULL), 0);
            assert_int_equal(makers[t].bad, 0);
        }
        pthread_barrier_destroy(&start);
    }
}

int main(int argc, char **argv)
{
    test_filters(argc, argv);
    const struct CMUnitTest tests[] = {
        BOTH(test_slice_shares_contents_not_indices, teardown),
        BOTH(test_retained_views_of_one_buffer_made_on_several_threads, teardown),
        BOTH(test_plain_slice_shares_the_reference_count, teardown),
        BOTH(test_retained_slice_holds_the_root, teardown),
        BOTH(test_chains_of_retained_slices, teardown),
        BOTH(test_plain_slice_of_a_retained_slice_shares_its_count, teardown),
        BOTH(test_duplicate_follows_and_grows_the_root, teardown),
        BOTH(test_slice_follows_a_moving_and_shrinking_root, teardown),
        BOTH(test_read_slice_and_copy, teardown),
        BOTH(test_view_errors, teardown),
        BOTH(test_views_are_recycled, teardown),
        BOTH(test_transfers_between_buffers_sharing_memory, teardown),
        BOTH(test_transfers_while_a_composite_consolidates, teardown),
        BOTH(test_transfers_with_a_huge_root, teardown),
        BOTH(test_relative_transfer_to_itself_is_refused, teardown),
        BOTH(test_retained_views_hold_their_parent_as_netty, teardown),
        BOTH(test_long_chain_of_retained_views, teardown),
        BOTH(test_view_detects_a_recycled_root, teardown),
        BOTH(test_view_detects_a_recycled_parent, teardown),
        BOTH(test_recorded_root_stays_detectable_after_growth, teardown),
        BOTH(test_view_free, teardown),
        BOTH(test_freed_read_slices_do_not_pile_up, teardown),
        cmocka_unit_test_setup_teardown(test_read_slice_loop_keeps_rss_flat, setup_pooled, teardown),
        BOTH(test_discard_leaves_retained_frames_intact, teardown),
        BOTH(test_discard_sharing_rules, teardown),
        BOTH(test_slice_lengths_near_size_max, teardown),
        BOTH(test_views_counted_across_threads, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
