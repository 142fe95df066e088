/* SPDX-License-Identifier: MIT */
/* Size classes: table against computed function, smallest class >= size, categories. */
#include "test_util.h"

#include "size_class.h"

static bp__size_classes sc;

static int setup(void **state)
{
    (void)state;
    bp__size_classes_init(&sc, 8192, (size_t)4 << 20);
    return 0;
}

static void test_examples_from_issue(void **state)
{
    (void)state;
    assert_int_equal(sc.class_size[bp__size_class_of(&sc, 0)], 16);
    assert_int_equal(sc.class_size[bp__size_class_of(&sc, 17)], 32);
    assert_int_equal(sc.class_size[bp__size_class_of(&sc, 1025)], 1280);
    assert_int_equal(sc.class_size[bp__size_class_of(&sc, 32769)], 40960);
    assert_int_equal(sc.class_size[bp__size_class_of(&sc, 256)], 256);
    assert_int_equal(sc.class_size[bp__size_class_of(&sc, 257)], 320);
}

static void test_first_classes_match_jemalloc(void **state)
{
    (void)state;
    static const size_t expected[] = {16,  32,  48,  64,  80,  96,  112, 128,  160,  192,  224,
                                      256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536};
    for (unsigned i = 0; i < sizeof expected / sizeof expected[0]; i++)
        assert_int_equal(sc.class_size[i], expected[i]);
    /* 4 MiB chunk: classes up to 4 MiB exactly = 68 classes; the last is the chunk size. */
    assert_int_equal(sc.nclasses, 68);
    assert_int_equal(sc.class_size[sc.nclasses - 1], (size_t)4 << 20);
}

static void test_every_size_maps_to_smallest_class_at_least_it(void **state)
{
    (void)state;
    for (size_t size = 0; size <= sc.chunk_size; size++) {
        unsigned cls = bp__size_class_of(&sc, size);
        if (cls >= sc.nclasses || sc.class_size[cls] < size ||
            (cls > 0 && sc.class_size[cls - 1] >= size && size > 0))
            fail_msg("size %zu -> class %u (%zu)", size, cls, cls < sc.nclasses ? sc.class_size[cls] : 0);
    }
    assert_int_equal(bp__size_class_of(&sc, sc.chunk_size + 1), sc.nclasses);
    assert_int_equal(bp__size_class_of(&sc, SIZE_MAX / 4), sc.nclasses);
}

static void test_lookup_table_agrees_with_computed(void **state)
{
    (void)state;
    /* The table an allocator's head holds for the inline bp_alloc. */
    uint8_t table[sizeof(((bp__allocator_head *)0)->classes)];
    memset(table, 0xff, sizeof table);
    bp__size_class_table_init(table, sizeof table);
    assert_int_equal(sizeof table, (BP__INLINE_SIZE_LIMIT >> 4) + 1);
    for (size_t size = 0; size <= BP__INLINE_SIZE_LIMIT; size++) {
        assert_int_equal(table[(size + 15) >> 4], bp__size_class_compute(size));
        assert_int_equal(bp__size_class_of(&sc, size), bp__size_class_compute(size));
    }
    /* Above the table: computed, and huge with a class past the last one. */
    for (size_t size = BP__INLINE_SIZE_LIMIT + 1; size <= sc.chunk_size; size += 4093)
        assert_int_equal(bp__size_class_of(&sc, size), bp__size_class_compute(size));
    assert_int_equal(bp__size_class_of(&sc, sc.chunk_size + 1), sc.nclasses);
    assert_int_equal(bp__size_class_of(&sc, BP_CAPACITY_LIMIT), sc.nclasses);
    for (unsigned i = 0; i < sc.nclasses; i++) {
        assert_int_equal(bp__size_class_size_compute(i), sc.class_size[i]);
        assert_int_equal(bp__size_class_compute(sc.class_size[i]), i);
        assert_int_equal(bp__size_class_compute(sc.class_size[i] + 1), i + 1);
    }
}

/* The header's inline bp_alloc computes classes above 4 KiB itself. */
static void test_header_class_formula_agrees_with_the_library(void **state)
{
    (void)state;
    for (size_t size = 4097; size <= ((size_t)1 << 24); size += size / 97 + 1)
        assert_int_equal(bp__class_above_4k(size), bp__size_class_compute(size));
    for (unsigned lg = 13; lg < 63; lg++) {
        size_t p = (size_t)1 << lg;
        assert_int_equal(bp__class_above_4k(p), bp__size_class_compute(p));
        assert_int_equal(bp__class_above_4k(p + 1), bp__size_class_compute(p + 1));
        assert_int_equal(bp__class_above_4k(p - 1), bp__size_class_compute(p - 1));
    }
}

static void test_waste_is_at_most_20_percent_above_64(void **state)
{
    (void)state;
    for (unsigned i = 4; i < sc.nclasses; i++) {
        size_t smallest_request = sc.class_size[i - 1] + 1;
        double waste = (double)(sc.class_size[i] - smallest_request) / (double)sc.class_size[i];
        assert_true(waste <= 0.20);
    }
}

static void test_categories_and_runs(void **state)
{
    (void)state;
    /* Small: up to 28 KiB with 8 KiB pages. */
    assert_int_equal(sc.class_size[sc.nsmall - 1], 28 * 1024);
    assert_int_equal(sc.class_size[sc.nsmall], 32 * 1024);
    for (unsigned i = 0; i < sc.nclasses; i++) {
        size_t run = (size_t)sc.run_pages[i] * sc.page_size;
        assert_int_equal(run, sc.class_size[i] * sc.run_slots[i]); /* runs hold whole slots */
        if (i >= sc.nsmall) assert_int_equal(sc.run_slots[i], 1);
    }
    assert_int_equal(sc.run_pages[bp__size_class_of(&sc, 16)], 1);
    assert_int_equal(sc.run_slots[bp__size_class_of(&sc, 16)], 512);
    assert_int_equal(sc.run_pages[bp__size_class_of(&sc, 28 * 1024)], 7);
    assert_int_equal(sc.run_slots[bp__size_class_of(&sc, 28 * 1024)], 2);
}

static void test_page_classes(void **state)
{
    (void)state;
    for (uint32_t pages = 1; pages <= sc.chunk_pages; pages++) {
        unsigned ceil = bp__page_class_ceil(&sc, pages), floor = bp__page_class_floor(&sc, pages);
        assert_true(sc.page_class_pages[ceil] >= pages);
        assert_true(ceil == 0 || sc.page_class_pages[ceil - 1] < pages);
        assert_true(sc.page_class_pages[floor] <= pages);
        assert_true(floor + 1 == sc.npage_classes || sc.page_class_pages[floor + 1] > pages);
    }
    assert_int_equal(sc.page_class_pages[0], 1);
    assert_int_equal(sc.page_class_pages[sc.npage_classes - 1], sc.chunk_pages);
}

static void test_other_geometries(void **state)
{
    (void)state;
    bp__size_classes other;
    bp__size_classes_init(&other, 4096, 32768); /* the smallest chunk: 8 pages */
    assert_int_equal(other.class_size[other.nclasses - 1], 32768);
    assert_int_equal(other.class_size[other.nsmall - 1], 14 * 1024);
    bp__size_classes_init(&other, 65536, (size_t)1 << 30);
    assert_int_equal(other.class_size[other.nclasses - 1], (size_t)1 << 30);
    assert_true(other.nclasses <= BP__MAX_CLASSES);
    assert_int_equal(other.class_size[other.nsmall - 1], 224 * 1024);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples_from_issue),
        cmocka_unit_test(test_header_class_formula_agrees_with_the_library),
        cmocka_unit_test(test_first_classes_match_jemalloc),
        cmocka_unit_test(test_every_size_maps_to_smallest_class_at_least_it),
        cmocka_unit_test(test_lookup_table_agrees_with_computed),
        cmocka_unit_test(test_waste_is_at_most_20_percent_above_64),
        cmocka_unit_test(test_categories_and_runs),
        cmocka_unit_test(test_page_classes),
        cmocka_unit_test(test_other_geometries),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
