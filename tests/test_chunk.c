/* SPDX-License-Identifier: MIT */
/* Runs of pages inside one chunk: split, coalesce, best fit, lowest address first. */
#include "test_util.h"

#include "chunk.h"
#include "chunk_list.h"
#include "common.h"
#include "os.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static bp__size_classes sc;

static int setup(void **state)
{
    (void)state;
    bp__size_classes_init(&sc, 8192, (size_t)4 << 20);
    return 0;
}

static void test_issue_example_runs(void **state)
{
    (void)state;
    bp__chunk *c = bp__chunk_new(NULL, &sc);
    assert_non_null(c);
    assert_int_equal(bp__chunk_alloc_run(c, 4), 0);
    assert_int_equal(bp__chunk_alloc_run(c, 5), 4);
    assert_int_equal(bp__chunk_alloc_run(c, 6), 9);
    assert_int_equal(c->free_bytes, (size_t)(512 - 15) * 8192);
    bp__chunk_free_run(c, 4, 5);
    bp__chunk_free_run(c, 9, 6);
    assert_true(bp__chunk_check(c));
    assert_int_equal(bp__chunk_alloc_run(c, 10), 4);
    bp__chunk_free_run(c, 0, 4);
    bp__chunk_free_run(c, 4, 10);
    assert_true(bp__chunk_check(c));
    assert_int_equal(c->free_bytes, sc.chunk_size);
    assert_int_equal(bp__chunk_longest_free_run(c), 512);
    assert_int_equal(bp__chunk_alloc_run(c, 20), 0);
    bp__chunk_delete(c);
}

/* A run taken from a free run's high end leaves the rest free at the start, and gives back
 * like any other: it coalesces with both neighbours. */
static void test_run_taken_from_the_high_end(void **state)
{
    (void)state;
    bp__chunk *c = bp__chunk_new(NULL, &sc);
    assert_non_null(c);
    assert_int_equal(bp__chunk_take_run(c, 0, 10, true), 502);
    assert_int_equal(bp__chunk_take_run(c, 0, 2, true), 500);
    assert_int_equal(bp__chunk_alloc_run(c, 3), 0); /* the low end stays for the rest */
    assert_int_equal(bp__chunk_longest_free_run(c), 497);
    assert_true(bp__chunk_run_in_use(c, 502, 10));
    assert_true(bp__chunk_run_in_use(c, 500, 2));
    assert_int_equal(c->free_bytes, (size_t)(512 - 15) * 8192);
    assert_true(bp__chunk_check(c));
    /* A hole in the middle: its high end, then the exact rest. */
    bp__chunk_free_run(c, 500, 2);
    assert_int_equal(bp__chunk_find_run(c, 2), 3); /* (the lowest of the best fits) */
    bp__chunk_free_run(c, 0, 3);
    assert_int_equal(bp__chunk_longest_free_run(c), 502); /* all of it coalesced: [0, 502) */
    assert_int_equal(bp__chunk_take_run(c, 0, 502, true), 0);
    assert_int_equal(c->free_bytes, 0);
    bp__chunk_free_run(c, 0, 502);
    bp__chunk_free_run(c, 502, 10);
    assert_int_equal(c->free_bytes, sc.chunk_size);
    assert_int_equal(bp__chunk_longest_free_run(c), 512);
    assert_true(bp__chunk_check(c));
    bp__chunk_delete(c);
}

/* Pages of [p, p + pages pages) that are resident now (mincore). */
static size_t resident_pages(const uint8_t *p, size_t pages)
{
    size_t os_page = (size_t)sysconf(_SC_PAGESIZE), n = pages * sc.page_size / os_page, resident = 0;
    unsigned char *vec = calloc(n, 1);
    assert_int_equal(mincore((void *)(uintptr_t)p, n * os_page, vec), 0);
    for (size_t i = 0; i < n; i++) resident += vec[i] & 1;
    free(vec);
    return resident * os_page / sc.page_size;
}

/* Freed runs are dirty until a purge pass finds them still free a pass later (or any pass,
 * with `all`); purging gives the pages back to the OS and keeps them mapped. */
static void test_free_pages_are_purged_after_a_pass(void **state)
{
    (void)state;
    bp__chunk *c = bp__chunk_new(NULL, &sc);
    assert_non_null(c);
    assert_int_equal(c->dirty_pages, 0); /* a fresh mapping holds nothing */
    assert_int_equal(bp__chunk_alloc_run(c, 8), 0);
    assert_int_equal(bp__chunk_alloc_run(c, 4), 8);
    assert_int_equal(bp__chunk_alloc_run(c, 2), 12);
    BP__UNPOISON(c->base, 16 * sc.page_size); /* handed out, as the arena would */
    memset(c->base, 0xab, 14 * sc.page_size); /* touched: resident */
    assert_int_equal(resident_pages(c->base, 14), 14);
    bp__chunk_free_run(c, 0, 8);
    bp__chunk_free_run(c, 12, 2);
    assert_int_equal(c->dirty_pages, 10);
    assert_true(bp__chunk_check(c));
    assert_int_equal(bp__chunk_purge(c, false), 0); /* freed since the last pass: too young */
    assert_int_equal(c->dirty_pages, 10);
    assert_int_equal(resident_pages(c->base, 14), 14);
    bp__chunk_free_run(c, 8, 4); /* coalesces with both: one free run of 0..(end), young */
    assert_int_equal(c->dirty_pages, 14);
    assert_int_equal(bp__chunk_purge(c, false), 10 * sc.page_size); /* the two old ranges */
    assert_int_equal(c->dirty_pages, 4);
    assert_int_equal(resident_pages(c->base, 8), 0);
    assert_int_equal(resident_pages(c->base + 8 * sc.page_size, 4), 4);
    assert_int_equal(resident_pages(c->base + 12 * sc.page_size, 2), 0);
    assert_true(bp__chunk_check(c));
    /* Reallocating a dirty page makes it clean (in use); a purged page reads as zero. */
    assert_int_equal(bp__chunk_alloc_run(c, 16), 0);
    assert_int_equal(c->dirty_pages, 0);
    assert_int_equal(c->base[0], 0);
    assert_int_equal(c->base[8 * sc.page_size], 0xab); /* never purged */
    assert_true(bp__chunk_check(c));
    bp__chunk_free_run(c, 0, 16);
    assert_int_equal(bp__chunk_purge(c, true), 16 * sc.page_size); /* all: young too */
    assert_int_equal(c->dirty_pages, 0);
    assert_int_equal(bp__chunk_purge(c, true), 0);
    assert_true(bp__chunk_check(c));
    bp__chunk_delete(c);
}

static void test_hole_is_reused_lowest_first_and_best_fit(void **state)
{
    (void)state;
    bp__chunk *c = bp__chunk_new(NULL, &sc);
    assert_non_null(c);
    /* [0,2) [2,5) [5,7) [7,17) [17,19) then free 2-4 (3 pages) and 7-16 (10 pages). */
    assert_int_equal(bp__chunk_alloc_run(c, 2), 0);
    assert_int_equal(bp__chunk_alloc_run(c, 3), 2);
    assert_int_equal(bp__chunk_alloc_run(c, 2), 5);
    assert_int_equal(bp__chunk_alloc_run(c, 10), 7);
    assert_int_equal(bp__chunk_alloc_run(c, 2), 17);
    bp__chunk_free_run(c, 2, 3);
    bp__chunk_free_run(c, 7, 10);
    assert_true(bp__chunk_check(c));
    /* 3 pages: the 3-page hole at 2 fits exactly. */
    assert_int_equal(bp__chunk_alloc_run(c, 3), 2);
    /* 4 pages: best fit is the 10-page hole at 7, not the tail at 19. */
    assert_int_equal(bp__chunk_alloc_run(c, 4), 7);
    /* The rest of that hole, 6 pages at 11, serves the next 6-page request. */
    assert_int_equal(bp__chunk_alloc_run(c, 6), 11);
    assert_int_equal(bp__chunk_alloc_run(c, 1), 19);
    assert_true(bp__chunk_check(c));
    bp__chunk_delete(c);
}

static void test_full_chunk_refuses(void **state)
{
    (void)state;
    bp__chunk *c = bp__chunk_new(NULL, &sc);
    assert_non_null(c);
    assert_int_equal(bp__chunk_alloc_run(c, 512), 0);
    assert_int_equal(c->free_bytes, 0);
    assert_int_equal(bp__chunk_usage(c), 100);
    assert_int_equal(bp__chunk_alloc_run(c, 1), -1);
    bp__chunk_free_run(c, 0, 512);
    assert_int_equal(bp__chunk_usage(c), 0);
    /* 511 pages in page-class runs: 448 + 32 + 16 + 8 + 4 + 2 + 1, packed from page 0. */
    static const uint32_t runs[] = {448, 32, 16, 8, 4, 2, 1};
    long expected_offset = 0;
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        assert_int_equal(bp__chunk_alloc_run(c, runs[i]), expected_offset);
        expected_offset += runs[i];
    }
    assert_int_equal(bp__chunk_usage(c), 99); /* one page free: never reported as 100 */
    assert_int_equal(bp__chunk_alloc_run(c, 2), -1);
    assert_int_equal(bp__chunk_alloc_run(c, 1), 511);
    bp__chunk_delete(c);
}

/* Random runs against a model of page owners; every step keeps the invariants. */
static void random_runs(size_t page_size, size_t chunk_size, uint64_t seed, int steps)
{
    bp__size_classes geometry;
    bp__size_classes_init(&geometry, page_size, chunk_size);
    bp__chunk *c = bp__chunk_new(NULL, &geometry);
    assert_non_null(c);
    uint32_t npages = geometry.chunk_pages;
    int32_t *owner = malloc(npages * sizeof *owner); /* run start owning each page, or -1 */
    uint32_t *live_offset = malloc(npages * sizeof *live_offset);
    uint32_t *live_pages = malloc(npages * sizeof *live_pages);
    assert_true(owner && live_offset && live_pages);
    for (uint32_t i = 0; i < npages; i++) owner[i] = -1;
    size_t nlive = 0;
    uint64_t rng = seed;
    for (int step = 0; step < steps; step++) {
        bool do_alloc = nlive == 0 || test_rand(&rng) % 100 < 55;
        if (do_alloc) {
            /* Up to an eighth of the chunk: page-class lengths, as subpages and
             * thread-cached classes ask for, or any length, as larger sizes do. */
            uint32_t pages;
            if (test_rand(&rng) % 2 == 0) {
                do {
                    pages = geometry.page_class_pages[test_rand(&rng) % geometry.npage_classes];
                } while (pages > npages / 8);
            } else {
                pages = 1 + (uint32_t)(test_rand(&rng) % (npages / 8));
            }
            long offset = bp__chunk_alloc_run(c, pages);
            if (offset < 0) {
                /* Refusal must be honest: no free stretch of that length exists. */
                uint32_t longest = 0, run = 0;
                for (uint32_t p = 0; p < npages; p++) {
                    run = owner[p] < 0 ? run + 1 : 0;
                    if (run > longest) longest = run;
                }
                assert_true(longest < pages);
                continue;
            }
            for (uint32_t p = (uint32_t)offset; p < offset + pages; p++) {
                assert_int_equal(owner[p], -1);
                owner[p] = (int32_t)offset;
            }
            live_offset[nlive] = (uint32_t)offset;
            live_pages[nlive++] = pages;
        } else {
            size_t i = test_rand(&rng) % nlive;
            bp__chunk_free_run(c, live_offset[i], live_pages[i]);
            for (uint32_t p = live_offset[i]; p < live_offset[i] + live_pages[i]; p++) owner[p] = -1;
            live_offset[i] = live_offset[--nlive];
            live_pages[i] = live_pages[nlive];
        }
        if (step % 97 == 0) assert_true(bp__chunk_check(c));
    }
    while (nlive > 0) {
        nlive--;
        bp__chunk_free_run(c, live_offset[nlive], live_pages[nlive]);
    }
    assert_true(bp__chunk_check(c));
    assert_int_equal(c->free_bytes, chunk_size);
    assert_int_equal(bp__chunk_longest_free_run(c), npages);
    free(owner);
    free(live_offset);
    free(live_pages);
    bp__chunk_delete(c);
}

static void test_random_runs_default_geometry(void **state)
{
    (void)state;
    random_runs(8192, (size_t)4 << 20, 0x1234567u, 20000);
}

static void test_random_runs_large_chunk(void **state)
{
    (void)state;
    /* 16384 pages: bucket bitmaps span several summary words. */
    random_runs(4096, (size_t)64 << 20, 0x9e3779b9u, 6000);
}

static void test_chunk_map_failure(void **state)
{
    (void)state;
    size_t before = bp__os_mapped_bytes();
    bp__os_inject_map_failure(0);
    assert_null(bp__chunk_new(NULL, &sc));
    bp__os_inject_map_failure(-1);
    assert_int_equal(bp__os_mapped_bytes(), before);
    bp__chunk *c = bp__chunk_new(NULL, &sc);
    assert_non_null(c);
    assert_int_equal(bp__os_mapped_bytes(), before + sc.chunk_size);
    bp__chunk_delete(c);
    assert_int_equal(bp__os_mapped_bytes(), before);
}

static void test_handle_round_trip(void **state)
{
    (void)state;
    uint64_t h = bp__handle_make(262143, 262144 - 1, true, 4095);
    assert_int_equal(bp__handle_offset(h), 262143);
    assert_int_equal(bp__handle_pages(h), 262143);
    assert_true(bp__handle_is_subpage(h));
    assert_int_equal(bp__handle_slot(h), 4095);
    h = bp__handle_make(7, 3, false, 0);
    assert_int_equal(bp__handle_offset(h), 7);
    assert_int_equal(bp__handle_pages(h), 3);
    assert_false(bp__handle_is_subpage(h));
}

/* A length that is no page class's (9, 11: between 8, 10 and 12) takes the closest run of
 * its own bucket when one there is long enough, else a run from the buckets above. */
static void test_any_length_takes_the_closest_run(void **state)
{
    (void)state;
    bp__chunk *c = bp__chunk_new(NULL, &sc);
    assert_non_null(c);
    size_t sum = 0;
    c->dirty_sum = &sum;
    assert_int_equal(bp__chunk_alloc_run(c, 9), 0);
    assert_int_equal(bp__chunk_alloc_run(c, 1), 9);   /* spacers keep the holes apart */
    assert_int_equal(bp__chunk_alloc_run(c, 20), 10);
    assert_int_equal(bp__chunk_alloc_run(c, 1), 30);
    assert_int_equal(bp__chunk_alloc_run(c, 8), 31);
    assert_int_equal(bp__chunk_alloc_run(c, 1), 39);
    bp__chunk_free_run(c, 0, 9);   /* holes: 9 pages at 0 (bucket 8), 20 at 10, 8 at 31 */
    bp__chunk_free_run(c, 10, 20);
    bp__chunk_free_run(c, 31, 8);
    assert_int_equal(c->dirty_pages, 37);
    assert_int_equal(sum, 37); /* the owner's sum follows */
    assert_true(bp__chunk_check(c));
    assert_int_equal(bp__chunk_find_run(c, 9), 0);  /* its own bucket: the 9-page hole */
    assert_int_equal(bp__chunk_alloc_run(c, 9), 0);
    assert_int_equal(bp__chunk_find_run(c, 9), 10); /* the 8 at 31 is too short: from 10 up */
    assert_int_equal(bp__chunk_alloc_run(c, 9), 10); /* leaves 11 pages at 19 */
    assert_int_equal(bp__chunk_alloc_run(c, 11), 19); /* bucket 10 holds them: exact */
    assert_int_equal(bp__chunk_alloc_run(c, 8), 31);
    assert_int_equal(bp__chunk_alloc_run(c, 13), 40); /* the rest of the chunk */
    assert_int_equal(c->dirty_pages, 0);
    assert_int_equal(sum, 0);
    assert_true(bp__chunk_check(c));
    bp__chunk_delete(c);
}

/* A bounded purge takes the lowest dirty pages first, the young too when asked, clears
 * their marks and does not end the pass: what stays young stays young. */
static void test_bounded_purge_takes_the_lowest_pages(void **state)
{
    (void)state;
    bp__chunk *c = bp__chunk_new(NULL, &sc);
    assert_non_null(c);
    size_t sum = 0;
    c->dirty_sum = &sum;
    assert_int_equal(bp__chunk_alloc_run(c, 16), 0);
    assert_int_equal(bp__chunk_alloc_run(c, 1), 16);
    BP__UNPOISON(c->base, 16 * sc.page_size);
    memset(c->base, 0xcd, 16 * sc.page_size);
    bp__chunk_free_run(c, 0, 16);
    assert_int_equal(sum, 16);
    assert_int_equal(bp__chunk_purge_some(c, false, 8), 0); /* all young: none ripe */
    assert_int_equal(bp__chunk_purge_some(c, true, 6), 6 * sc.page_size);
    assert_int_equal(c->dirty_pages, 10);
    assert_int_equal(sum, 10);
    assert_int_equal(resident_pages(c->base, 6), 0);
    assert_int_equal(resident_pages(c->base + 6 * sc.page_size, 10), 10);
    assert_true(bp__chunk_check(c)); /* purged pages are neither dirty nor young */
    assert_int_equal(bp__chunk_purge(c, false), 0); /* the rest is still young: a pass ages it */
    assert_int_equal(bp__chunk_purge(c, false), 10 * sc.page_size);
    assert_int_equal(sum, 0);
    assert_true(bp__chunk_check(c));
    bp__chunk_delete(c);
}

/* The fit index lists a chunk under every page class it has a free run of, from when it
 * enters the bands until it leaves them, following every split and coalescing; band
 * moves keep it listed. */
static size_t memberships(const bp__chunk *const *chunks, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        for (unsigned w = 0; w < 2; w++)
            for (uint64_t bits = chunks[i]->nonempty[w]; bits != 0; bits &= bits - 1) m++;
    return m;
}

static bool listed(const bp__fit_index *fit, const bp__chunk *c, unsigned k)
{
    for (const bp__chunk *x = fit->head[k]; x != NULL; x = x->fit_links[2 * k + 1])
        if (x == c) return true;
    return false;
}

static void test_fit_index_follows_the_chunks_runs(void **state)
{
    (void)state;
    bp__fit_index fit;
    bp__chunk_list lists[BP__NBANDS];
    bp__chunk_lists_init(lists, &fit);
    bp__chunk *a = bp__chunk_new(NULL, &sc), *b = bp__chunk_new(NULL, &sc);
    assert_non_null(a);
    assert_non_null(b);
    const bp__chunk *both[] = {a, b};
    assert_int_equal(bp__chunk_alloc_run(a, 448), 0);
    assert_int_equal(bp__chunk_alloc_run(a, 48), 448); /* 16 pages left at 496 */
    assert_null(a->fit);
    assert_true(bp__fit_index_check(&fit, 0)); /* not in the bands: not indexed */
    bp__chunk_list_add(&lists[BP__Q050], a);
    bp__chunk_list_add(&lists[BP__Q000], b); /* all 512 pages free */
    assert_ptr_equal(a->fit, &fit);
    unsigned sixteen = bp__page_class_floor(&sc, 16), all = bp__page_class_floor(&sc, 512);
    assert_true(listed(&fit, a, sixteen));
    assert_false(listed(&fit, b, sixteen));
    assert_true(listed(&fit, b, all));
    assert_true(bp__fit_index_check(&fit, memberships(both, 2)));
    /* Splitting b's run lists it under the remainder's class instead. */
    assert_int_equal(bp__chunk_alloc_run(b, 256), 0);
    bp__chunk_list_took(&lists[b->band], b);
    unsigned half = bp__page_class_floor(&sc, 256);
    assert_true(listed(&fit, b, half));
    assert_false(listed(&fit, b, all));
    assert_true(bp__fit_index_check(&fit, memberships(both, 2)));
    /* Filling a takes it out of every class, though it stays in a band (q100). */
    assert_int_equal(bp__chunk_alloc_run(a, 16), 496);
    bp__chunk_list_took(&lists[a->band], a);
    assert_int_equal(a->band, BP__Q100);
    assert_false(listed(&fit, a, sixteen));
    assert_true(bp__fit_index_check(&fit, memberships(both, 2)));
    /* Freeing coalesces: b is whole again, listed under all 512 pages once more, and as it
     * empties below q000 it leaves the bands and the index. */
    bp__chunk_free_run(a, 496, 16);
    assert_true(bp__chunk_list_after_free(&lists[a->band], a));
    assert_true(listed(&fit, a, sixteen));
    bp__chunk_free_run(b, 0, 256);
    assert_false(bp__chunk_list_after_free(&lists[b->band], b));
    assert_null(b->fit);
    assert_false(listed(&fit, b, all));
    const bp__chunk *only_a[] = {a};
    assert_true(bp__fit_index_check(&fit, memberships(only_a, 1)));
    for (unsigned band = 0; band < BP__NBANDS; band++) assert_true(bp__chunk_list_check(&lists[band]));
    bp__chunk_list_remove(&lists[a->band], a);
    bp__chunk_fit_leave(a);
    assert_true(bp__fit_index_check(&fit, 0));
    assert_int_equal(fit.nonempty[0] | fit.nonempty[1], 0);
    bp__chunk_delete(a);
    bp__chunk_delete(b);
}

/* The shortest run of a bucket that holds a length, wherever it is in the bucket. */
static void test_shortest_run_of_a_bucket(void **state)
{
    (void)state;
    bp__chunk *c = bp__chunk_new(NULL, &sc);
    assert_non_null(c);
    /* Free runs of 19, 17 and 18 pages (one bucket: 16 to 19), kept apart by used pages. */
    assert_int_equal(bp__chunk_alloc_run(c, 19), 0);
    assert_int_equal(bp__chunk_alloc_run(c, 1), 19);
    assert_int_equal(bp__chunk_alloc_run(c, 17), 20);
    assert_int_equal(bp__chunk_alloc_run(c, 1), 37);
    assert_int_equal(bp__chunk_alloc_run(c, 18), 38);
    assert_int_equal(bp__chunk_alloc_run(c, 1), 56);
    bp__chunk_free_run(c, 0, 19);
    bp__chunk_free_run(c, 20, 17);
    bp__chunk_free_run(c, 38, 18);
    unsigned k = bp__page_class_floor(&sc, 17);
    assert_int_equal(bp__page_class_floor(&sc, 19), k);
    uint32_t length = 0;
    assert_int_equal(bp__chunk_shortest_run(c, k, 17, &length), 20);
    assert_int_equal(length, 17);
    assert_int_equal(bp__chunk_shortest_run(c, k, 18, &length), 38);
    assert_int_equal(length, 18);
    assert_int_equal(bp__chunk_shortest_run(c, k, 19, &length), 0);
    assert_int_equal(length, 19);
    assert_int_equal(bp__chunk_shortest_run(c, k, 20, &length), -1);
    assert_int_equal(length, UINT32_MAX);
    assert_true(bp__chunk_check(c));
    bp__chunk_delete(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_free_pages_are_purged_after_a_pass),
        cmocka_unit_test(test_issue_example_runs),
        cmocka_unit_test(test_run_taken_from_the_high_end),
        cmocka_unit_test(test_hole_is_reused_lowest_first_and_best_fit),
        cmocka_unit_test(test_full_chunk_refuses),
        cmocka_unit_test(test_random_runs_default_geometry),
        cmocka_unit_test(test_random_runs_large_chunk),
        cmocka_unit_test(test_chunk_map_failure),
        cmocka_unit_test(test_handle_round_trip),
        cmocka_unit_test(test_fit_index_follows_the_chunks_runs),
        cmocka_unit_test(test_shortest_run_of_a_bucket),
        cmocka_unit_test(test_any_length_takes_the_closest_run),
        cmocka_unit_test(test_bounded_purge_takes_the_lowest_pages),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
