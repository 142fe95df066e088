/* SPDX-License-Identifier: MIT */
/* Arenas through the allocator: subpages, chunk lists, huge mappings, a random model. */
#include "test_util.h"

#include "allocator.h"
#include "thread.h"
#include "os.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* One arena, no thread cache, no run cache and no retained chunks: every allocation and
 * release reaches the arena's chunks, and an emptied chunk is unmapped at once, so the
 * tests see the chunks themselves. */
static bp_allocator *one_arena_allocator(void)
{
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.small_cache_size = 0;
    cfg.normal_cache_size = 0;
    cfg.run_cache_size = 0;
    cfg.chunk_decay_ms = 0;
    cfg.background_purge = 0; /* these tests drive the purges themselves (see test_purge) */
    int err = -100;
    bp_allocator *a = bp_allocator_new(&cfg, &err);
    assert_non_null(a);
    assert_int_equal(err, 0);
    return a;
}

static bp_arena_stats arena_stats(bp_allocator *a, unsigned index)
{
    bp_arena_stats s;
    assert_int_equal(bp_arena_get_stats(a, index, &s, sizeof s), 0);
    return s;
}

static void test_small_slots_fill_a_subpage_in_address_order(void **state)
{
    (void)state;
    bp_allocator *a = one_arena_allocator();
    enum { SLOTS = 512 }; /* 16-byte class: one 8 KiB page of 512 slots */
    bp_buf *bufs[SLOTS + 1];
    for (int i = 0; i < SLOTS + 1; i++) bufs[i] = bp_alloc(a, 16);
    uint8_t *first = bp_data(bufs[0], 0);
    for (int i = 0; i < SLOTS; i++) assert_ptr_equal(bp_data(bufs[i], 0), first + 16 * i);
    /* The 513th needs a new subpage run, elsewhere. */
    uint8_t *extra = bp_data(bufs[SLOTS], 0);
    assert_true(extra < first || extra >= first + 8192);
    bp__arena *arena = &a->arenas[0];
    assert_int_equal(arena->pools[0].count, 1); /* the full subpage left the pool */
    bp_arena_stats s = arena_stats(a, 0);
    assert_int_equal(s.active_small, SLOTS + 1);
    assert_int_equal(s.active_bytes, (SLOTS + 1) * 16);

    /* Freeing a slot of the full subpage puts it back into the pool; the next 16-byte
     * allocation takes the lowest free slot of the subpage at the pool's head. */
    bp_release(bufs[5]);
    assert_int_equal(arena->pools[0].count, 2);
    bp_buf *again = bp_alloc(a, 10);
    assert_ptr_equal(bp_data(again, 0), first + 16 * 5);
    bufs[5] = again;

    for (int i = 0; i < SLOTS + 1; i++) bp_release(bufs[i]);
    /* One empty subpage stays for the class; the other gave its run back. */
    assert_int_equal(arena->pools[0].count, 1);
    s = arena_stats(a, 0);
    assert_int_equal(s.active_small, 0);
    assert_int_equal(s.active_bytes, 0);
    assert_int_equal(s.deallocations_small, SLOTS + 2);
    assert_true(bp__arena_check(arena));
    bp_allocator_destroy(a);
}

static void test_small_class_with_multi_page_runs(void **state)
{
    (void)state;
    bp_allocator *a = one_arena_allocator();
    /* 28 KiB class: 7-page runs of 2 slots. */
    bp_buf *x = bp_alloc(a, 28 * 1024), *y = bp_alloc(a, 27 * 1024), *z = bp_alloc(a, 25 * 1024);
    assert_ptr_equal((uint8_t *)bp_data(y, 0), (uint8_t *)bp_data(x, 0) + 28 * 1024);
    assert_int_equal(a->arenas[0].pools[bp__size_class_of(&a->sc, 28 * 1024)].count, 1);
    bp_arena_stats s = arena_stats(a, 0);
    assert_int_equal(s.active_small, 3);
    assert_int_equal(s.active_bytes, 3 * 28 * 1024);
    bp_release(x);
    bp_release(y);
    bp_release(z);
    assert_true(bp__arena_check(&a->arenas[0]));
    bp_allocator_destroy(a);
}

static void expect_bands(bp_allocator *a, size_t q_init, size_t q000, size_t q025, size_t q050,
                         size_t q075, size_t q100)
{
    bp_arena_stats s = arena_stats(a, 0);
    size_t expected[BP_CHUNK_BANDS] = {q_init, q000, q025, q050, q075, q100};
    for (int b = 0; b < BP_CHUNK_BANDS; b++)
        if (s.chunks_in_band[b] != expected[b])
            fail_msg("band %d holds %zu chunks, expected %zu", b, s.chunks_in_band[b], expected[b]);
    assert_true(bp__arena_check(&a->arenas[0]));
}

static void test_chunk_moves_between_bands_and_is_unmapped_when_empty(void **state)
{
    (void)state;
    bp_allocator *a = one_arena_allocator();
    size_t mapped_before = bp__os_mapped_bytes();
    const size_t half_mib = 512 * 1024, mib = 1024 * 1024;
    bp_buf *h1 = bp_alloc(a, half_mib);           /* usage 12 */
    expect_bands(a, 1, 0, 0, 0, 0, 0);
    assert_int_equal(bp__os_mapped_bytes(), mapped_before + a->config.chunk_size);
    bp_buf *h2 = bp_alloc(a, half_mib);           /* 25 */
    expect_bands(a, 0, 1, 0, 0, 0, 0);
    bp_buf *m1 = bp_alloc(a, mib);                /* 50 */
    expect_bands(a, 0, 0, 1, 0, 0, 0);
    bp_buf *m2 = bp_alloc(a, mib);                /* 75 */
    expect_bands(a, 0, 0, 0, 1, 0, 0);
    bp_buf *m3 = bp_alloc(a, mib);                /* 100 */
    expect_bands(a, 0, 0, 0, 0, 0, 1);
    assert_int_equal(arena_stats(a, 0).chunks, 1);

    bp_release(m3);                               /* 75 */
    expect_bands(a, 0, 0, 0, 0, 1, 0);
    bp_release(m2);                               /* 50 */
    expect_bands(a, 0, 0, 0, 1, 0, 0);
    bp_release(m1);                               /* 25 */
    expect_bands(a, 0, 0, 1, 0, 0, 0);
    bp_release(h2);                               /* 12 */
    expect_bands(a, 0, 1, 0, 0, 0, 0);
    bp_release(h1);                               /* 0: unmapped */
    expect_bands(a, 0, 0, 0, 0, 0, 0);
    assert_int_equal(arena_stats(a, 0).chunks, 0);
    assert_int_equal(bp__os_mapped_bytes(), mapped_before);
    bp_allocator_destroy(a);
}

static void test_chunk_in_q_init_is_kept_when_empty(void **state)
{
    (void)state;
    bp_allocator *a = one_arena_allocator();
    size_t mapped_before = bp__os_mapped_bytes();
    bp_buf *b = bp_alloc(a, 64 * 1024);
    bp_release(b);
    expect_bands(a, 1, 0, 0, 0, 0, 0);
    assert_int_equal(bp__os_mapped_bytes(), mapped_before + a->config.chunk_size);
    bp_allocator_destroy(a);
    assert_int_equal(bp__os_mapped_bytes(), mapped_before);
}

static void test_allocation_prefers_well_used_chunks(void **state)
{
    (void)state;
    bp_allocator *a = one_arena_allocator();
    const size_t mib = 1024 * 1024;
    /* Chunk A at 75% (q050), chunk B nearly empty (qInit). */
    bp_buf *a1 = bp_alloc(a, mib), *a2 = bp_alloc(a, mib), *a3 = bp_alloc(a, mib);
    bp_buf *b1 = bp_alloc(a, 2 * mib);   /* does not fit A's last MiB: new chunk B */
    assert_int_equal(arena_stats(a, 0).chunks, 2);
    bp_release(b1);
    bp_buf *b2 = bp_alloc(a, 64 * 1024); /* best fit: A's free MiB, not B's empty 4 */
    uint8_t *a_base = a1->region.chunk->base;
    uint8_t *p = bp_data(b2, 0);
    assert_true(p >= a_base && p < a_base + 4 * mib);
    bp_release(a1);
    bp_release(a2);
    bp_release(a3);
    bp_release(b2);
    bp_allocator_destroy(a);
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* One arena, no caches: releases reach the chunks at once. */
static bp_allocator *uncached_allocator_bounded(unsigned dirty_decay_ms, unsigned dirty_max_percent)
{
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.small_cache_size = 0;
    cfg.normal_cache_size = 0;
    cfg.run_cache_size = 0;
    cfg.dirty_decay_ms = dirty_decay_ms;
    cfg.dirty_max_percent = dirty_max_percent;
    cfg.background_purge = 0; /* these tests drive the purges themselves (see test_purge) */
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    return a;
}

static bp_allocator *uncached_allocator(unsigned dirty_decay_ms)
{
    return uncached_allocator_bounded(dirty_decay_ms, 10);
}

/* Free pages inside a chunk in use go back to the OS once they stayed free for a whole
 * decay interval (a pass to age them, the next to purge them); never with BP_DECAY_NEVER;
 * at once with bp_allocator_purge. */
static void test_free_pages_are_purged_after_the_decay(void **state)
{
    (void)state;
    bp_allocator *a = uncached_allocator(40);
    bp_buf *keep = bp_alloc(a, 64 * 1024); /* the chunk stays in use */
    bp_buf *b = bp_alloc(a, 64 * 1024);
    assert_int_equal(bp_set_zero(b, 0, 64 * 1024), 0); /* touched: resident */
    assert_int_equal(bp_release(b), 1);
    bp_arena_stats s = arena_stats(a, 0);
    assert_int_equal(s.dirty_bytes, 64 * 1024);
    assert_int_equal(s.purged_bytes, 0);
    sleep_ms(50);
    bp__arena_purge(&a->arenas[0], false); /* a pass: the pages are young, they age */
    s = arena_stats(a, 0);
    assert_int_equal(s.dirty_bytes, 64 * 1024);
    assert_int_equal(s.purged_bytes, 0);
    bp__arena_purge(&a->arenas[0], false); /* no pass: the interval has not passed */
    assert_int_equal(arena_stats(a, 0).purged_bytes, 0);
    sleep_ms(50);
    bp__arena_purge(&a->arenas[0], false); /* still free a pass later: purged */
    s = arena_stats(a, 0);
    assert_int_equal(s.dirty_bytes, 0);
    assert_int_equal(s.purged_bytes, 64 * 1024);
    bp_allocator_stats as;
    bp_allocator_get_stats(a, &as, sizeof as);
    assert_int_equal(as.dirty_bytes, 0);
    assert_int_equal(as.purged_bytes, 64 * 1024);
    /* The purged pages serve the next buffer like any others. */
    b = bp_alloc(a, 64 * 1024);
    assert_int_equal(bp_set_u32(b, 65532, 0xfeedface), 0);
    uint32_t v = 0;
    assert_int_equal(bp_get_u32(b, 65532, &v), 0);
    assert_int_equal(v, 0xfeedface);
    assert_int_equal(arena_stats(a, 0).dirty_bytes, 0);
    bp_release(b);
    bp_release(keep);
    bp_allocator_destroy(a);

    a = uncached_allocator(BP_DECAY_NEVER);
    keep = bp_alloc(a, 64 * 1024);
    b = bp_alloc(a, 64 * 1024);
    assert_int_equal(bp_set_zero(b, 0, 64 * 1024), 0);
    bp_release(b);
    for (int i = 0; i < 2; i++) {
        sleep_ms(5);
        bp__arena_purge(&a->arenas[0], false);
    }
    assert_int_equal(arena_stats(a, 0).dirty_bytes, 64 * 1024); /* kept resident */
    assert_int_equal(bp_allocator_purge(a), 0);                   /* no empty chunk to unmap */
    s = arena_stats(a, 0);
    assert_int_equal(s.dirty_bytes, 0); /* but the free pages went back */
    assert_int_equal(s.purged_bytes, 64 * 1024);
    bp_release(keep);
    bp_allocator_destroy(a);
}

static bp_allocator *retaining_allocator(unsigned decay_ms)
{
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.chunk_decay_ms = decay_ms;
    cfg.run_cache_size = 0; /* released runs reach their chunks at once */
    cfg.background_purge = 0; /* these tests drive the purges themselves (see test_purge) */
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    return a;
}

static void fill_and_empty_chunks(bp_allocator *a, int nchunks)
{
    bp_buf *bufs[64];
    for (int i = 0; i < 4 * nchunks; i++) bufs[i] = bp_alloc(a, 1024 * 1024);
    for (int i = 0; i < 4 * nchunks; i++) bp_release(bufs[i]);
}

static void test_emptied_chunk_is_retained_reused_and_purged(void **state)
{
    (void)state;
    size_t mapped_before = bp__os_mapped_bytes(), mappings_before = bp__os_mapping_count();
    bp_allocator *a = retaining_allocator(60000);
    fill_and_empty_chunks(a, 1);
    bp_arena_stats s = arena_stats(a, 0);
    assert_int_equal(s.chunks, 0);
    assert_int_equal(s.retained_chunks, 1);
    assert_int_equal(bp__os_mapping_count(), mappings_before + 1); /* still mapped */
    bp_allocator_stats as;
    bp_allocator_get_stats(a, &as, sizeof as);
    assert_int_equal(as.retained_chunks, 1);
    assert_int_equal(as.mapped_bytes, a->config.chunk_size);

    /* The next chunk request takes it back: no new mapping. */
    fill_and_empty_chunks(a, 1);
    assert_int_equal(bp__os_mapping_count(), mappings_before + 1);
    assert_int_equal(arena_stats(a, 0).retained_chunks, 1);

    assert_int_equal(bp_allocator_purge(a), 1);
    assert_int_equal(arena_stats(a, 0).retained_chunks, 0);
    assert_int_equal(bp__os_mapped_bytes(), mapped_before);
    assert_int_equal(bp_allocator_purge(a), 0);
    bp_allocator_destroy(a);
}

static void test_retained_chunks_decay(void **state)
{
    (void)state;
    size_t mappings_before = bp__os_mapping_count();
    bp_allocator *a = retaining_allocator(50);
    fill_and_empty_chunks(a, 2);  /* A and B retained */
    assert_int_equal(arena_stats(a, 0).retained_chunks, 2);
    struct timespec pause = {0, 150 * 1000 * 1000};
    nanosleep(&pause, NULL);
    /* Reuse takes the newest (B); when B empties again, A is past its time and goes. */
    fill_and_empty_chunks(a, 1);
    assert_int_equal(arena_stats(a, 0).retained_chunks, 1);
    assert_int_equal(bp__os_mapping_count(), mappings_before + 1);
    bp_allocator_destroy(a); /* unmaps the retained one */
    assert_int_equal(bp__os_mapping_count(), mappings_before);
}

static void test_huge_buffers_are_mapped_and_unmapped_exactly(void **state)
{
    (void)state;
    bp_allocator *a = one_arena_allocator();
    size_t page = bp__os_page_size();
    size_t before = bp__os_mapped_bytes(), mappings = bp__os_mapping_count();
    size_t sizes[] = {((size_t)4 << 20) + 1, (size_t)5 << 20, (size_t)9 << 20 | 12345};
    bp_buf *bufs[3];
    size_t total = 0;
    for (int i = 0; i < 3; i++) {
        bufs[i] = bp_alloc(a, sizes[i]);
        assert_non_null(bufs[i]);
        assert_int_equal(bp_capacity(bufs[i]), sizes[i]);
        total += (sizes[i] + page - 1) / page * page;
        assert_int_equal(bp__os_mapped_bytes(), before + total);
        assert_int_equal(bp__os_mapping_count(), mappings + (size_t)i + 1);
        /* The whole capacity is usable. */
        assert_int_equal(bp_set_u8(bufs[i], sizes[i] - 1, 0xAB), 0);
    }
    bp_arena_stats s = arena_stats(a, 0);
    assert_int_equal(s.active_huge, 3);
    assert_int_equal(s.huge_mapped_bytes, total);
    assert_int_equal(s.chunks, 0);
    for (int i = 0; i < 3; i++) bp_release(bufs[i]);
    assert_int_equal(bp__os_mapped_bytes(), before);
    assert_int_equal(bp__os_mapping_count(), mappings);
    s = arena_stats(a, 0);
    assert_int_equal(s.active_huge, 0);
    assert_int_equal(s.deallocations_huge, 3);
    assert_int_equal(s.huge_mapped_bytes, 0);
    assert_int_equal(s.active_bytes, 0);
    bp_allocator_destroy(a);
}

static void test_out_of_memory_changes_nothing(void **state)
{
    (void)state;
    bp_allocator *a = one_arena_allocator();
    bp__os_inject_map_failure(0);
    int err = 0;
    assert_null(bp_alloc_ex(a, 100, 1000, &err));
    assert_int_equal(err, BP_ENOMEM);
    assert_null(bp_alloc_ex(a, (size_t)8 << 20, (size_t)8 << 20, &err)); /* huge */
    assert_int_equal(err, BP_ENOMEM);
    bp__os_inject_map_failure(-1);
    bp_arena_stats s = arena_stats(a, 0);
    assert_int_equal(s.allocations_small + s.allocations_normal + s.allocations_huge, 0);
    assert_int_equal(s.chunks, 0);
    bp_allocator_stats as;
    bp_allocator_get_stats(a, &as, sizeof as);
    assert_int_equal(as.active_buffers, 0);
    /* And it works again afterwards. */
    bp_buf *b = bp_alloc(a, 100);
    assert_non_null(b);
    bp_release(b);
    bp_allocator_destroy(a);
}

typedef struct live_buf {
    bp_buf *buf;
    uint8_t *start;
    size_t capacity;
    uint8_t pattern;
} live_buf;

static int by_address(const void *x, const void *y)
{
    const live_buf *a = x, *b = y;
    return (a->start > b->start) - (a->start < b->start);
}

static size_t random_size(uint64_t *rng)
{
    uint64_t r = test_rand(rng) % 1000;
    if (r < 700) return test_rand(rng) % 1024;                  /* small */
    if (r < 990) return 1024 + test_rand(rng) % (512 * 1024);    /* small and normal */
    return ((size_t)4 << 20) + test_rand(rng) % (2 << 20);      /* huge */
}

/* The random model's steps: half under TSan (BP_TEST_SCALE=tsan), where filling and
 * checking the buffers' bytes costs most of its time; still thousands, and every check. */
static int model_steps(void)
{
    const char *scale = getenv("BP_TEST_SCALE");
    return scale != NULL && strcmp(scale, "tsan") == 0 ? 6000 : 12000;
}

/* Thousands of random sizes allocated and released in random order against a model: no two
 * live buffers overlap, each keeps its pattern, and at the end every arena is idle. */
static void random_model(bp_allocator *a, uint64_t seed)
{
    enum { LIVE_MAX = 2000 };
    const int steps = model_steps();
    live_buf *live = calloc(LIVE_MAX, sizeof *live);
    assert_non_null(live);
    size_t nlive = 0;
    uint64_t rng = seed;
    for (int step = 0; step < steps; step++) {
        bool do_alloc = nlive < LIVE_MAX && (nlive == 0 || test_rand(&rng) % 100 < 55);
        if (do_alloc) {
            size_t size = random_size(&rng);
            bp_buf *b = bp_alloc(a, size);
            assert_non_null(b);
            live_buf *l = &live[nlive++];
            l->buf = b;
            l->start = bp_data(b, 0);
            l->capacity = size;
            l->pattern = (uint8_t)test_rand(&rng);
            memset(l->start, l->pattern, size);
        } else {
            size_t i = test_rand(&rng) % nlive;
            live_buf *l = &live[i];
            if (!bytes_all_equal(l->start, l->capacity, l->pattern))
                fail_msg("a %zu-byte buffer was overwritten", l->capacity);
            assert_int_equal(bp_release(l->buf), 1);
            live[i] = live[--nlive];
        }
        if (step % 2000 == 1999) {
            for (unsigned i = 0; i < a->config.arenas && a->pooled; i++) assert_true(bp__arena_check(&a->arenas[i]));
            qsort(live, nlive, sizeof *live, by_address);
            for (size_t i = 1; i < nlive; i++)
                assert_true(live[i - 1].start + live[i - 1].capacity <= live[i].start);
        }
    }
    while (nlive > 0) assert_int_equal(bp_release(live[--nlive].buf), 1);
    free(live);

    bp_allocator_stats s;
    bp_allocator_get_stats(a, &s, sizeof s);
    assert_int_equal(s.active_bytes, 0); /* cached regions are in no buffer */
    assert_int_equal(bp_thread_cache_flush(a), (int)s.cached_entries);
    bp_allocator_get_stats(a, &s, sizeof s);
    assert_int_equal(s.active_bytes, 0);
    assert_int_equal(s.active_buffers, 0);
    assert_int_equal(s.allocations, s.deallocations);
    for (unsigned i = 0; i < s.arenas; i++) {
        bp_arena_stats as = arena_stats(a, i);
        assert_int_equal(as.active_bytes, 0);
        assert_int_equal(as.active_small + as.active_normal + as.active_huge, 0);
        assert_int_equal(as.huge_mapped_bytes, 0);
        assert_true(bp__arena_check(&a->arenas[i]));
    }
}

static void test_random_model_default_geometry(void **state)
{
    (void)state;
    bp_allocator *a = one_arena_allocator();
    random_model(a, 0xdeadbeefu);
    bp_allocator_destroy(a);
}

static void test_random_model_with_thread_cache(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 2;
    cfg.cache_trim_interval = 200; /* trims happen during the run too */
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    random_model(a, 0xfeedface);
    bp_allocator_stats s;
    bp_allocator_get_stats(a, &s, sizeof s);
    assert_true(s.cache_hits > 1000);
    assert_true(s.cache_trims > 10);
    assert_int_equal(s.cached_entries, 0);
    bp_allocator_destroy(a);
}

static void test_random_model_small_pages_and_chunks(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.page_size = 4096;
    cfg.chunk_size = 256 * 1024; /* many chunks, many normal and huge sizes */
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    random_model(a, 42);
    bp_allocator_destroy(a);
}

/* ---------------------------------------------------------------------------------------
 * The run cache: freed runs of the classes thread caches keep, held back from their chunks
 * ------------------------------------------------------------------------------------- */

/* One arena whose thread caches keep every normal class up to the chunk's size (so each
 * has a run cache of `run_cache_size` entries), this thread bound to it (runs are held only
 * while a thread is) with nothing allocated yet; emptied chunks retained. The tests below
 * hand runs to the arena directly, as a bin's overflow does. */
static bp_allocator *run_cache_allocator(unsigned run_cache_size)
{
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.run_cache_size = run_cache_size;
    cfg.max_cached_size = 4 << 20;
    cfg.background_purge = 0; /* these tests drive the purges themselves (see test_purge) */
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    assert_non_null(bp__thread_state_get(a));
    assert_int_equal(atomic_load(&a->arenas[0].threads), 1);
    assert_int_equal(a->arenas[0].whole_from, a->sc.nclasses);
    return a;
}

static bp__region take_run(bp_allocator *a, size_t size)
{
    bp__region r;
    assert_int_equal(bp__arena_alloc(&a->arenas[0], size, &r), 0);
    assert_int_equal(r.kind, BP__KIND_NORMAL);
    return r;
}

static void give_run(bp_allocator *a, const bp__region *r) { bp__arena_free(&a->arenas[0], r); }

static size_t chunk_free_bytes(bp_allocator *a)
{
    bp_chunk_stats cs[2];
    assert_int_equal(bp_arena_chunk_stats(a, 0, cs, 2, sizeof cs[0]), 1);
    return cs[0].free_bytes;
}

static void test_freed_run_is_held_back_and_reused(void **state)
{
    (void)state;
    bp_allocator *a = run_cache_allocator(1024);
    bp__region keep = take_run(a, 64 * 1024), r = take_run(a, 64 * 1024);
    uint8_t *memory = r.memory;
    size_t chunk_free = chunk_free_bytes(a);
    assert_int_equal(chunk_free, (4 << 20) - 2 * 64 * 1024);
    give_run(a, &r);
    /* Freed for the arena's counters, still in use for its chunk. */
    bp_arena_stats s = arena_stats(a, 0);
    assert_int_equal(s.deallocations_normal, 1);
    assert_int_equal(s.active_normal, 1);
    assert_int_equal(s.active_bytes, 64 * 1024);
    assert_int_equal(s.cached_runs, 1);
    assert_int_equal(s.cached_run_bytes, 64 * 1024);
    assert_int_equal(chunk_free_bytes(a), chunk_free);
    bp_allocator_stats as;
    bp_allocator_get_stats(a, &as, sizeof as);
    assert_int_equal(as.arena_cached_runs, 1);
    assert_int_equal(as.arena_cached_run_bytes, 64 * 1024);
    assert_int_equal(as.active_bytes, 64 * 1024);
    assert_true(bp__arena_check(&a->arenas[0]));
    /* The next allocation of the class takes it: same memory, counted as an allocation. */
    r = take_run(a, 60 * 1024);
    assert_ptr_equal(r.memory, memory);
    assert_int_equal(r.length, 64 * 1024);
    s = arena_stats(a, 0);
    assert_int_equal(s.allocations_normal, 3);
    assert_int_equal(s.cached_runs, 0);
    assert_int_equal(s.cached_run_bytes, 0);
    assert_int_equal(chunk_free_bytes(a), chunk_free);
    /* Another class does not take it. */
    give_run(a, &r);
    bp__region other = take_run(a, 128 * 1024);
    assert_true((uint8_t *)other.memory != memory);
    assert_int_equal(arena_stats(a, 0).cached_runs, 1);
    assert_true(bp__arena_check(&a->arenas[0]));
    give_run(a, &other);
    give_run(a, &keep);
    bp_allocator_destroy(a);
}

/* A class no thread cache keeps (here 80 KiB, above max_cached_size): the run cache holds
 * none of its runs. A released buffer's run goes straight back to its chunk, where any
 * length can reuse it, and its object to the recycler. */
static void test_runs_of_classes_no_thread_cache_keeps_go_straight_back(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.background_purge = 0;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    bp__arena *arena = &a->arenas[0];
    bp_buf *keep = bp_alloc(a, 80 * 1024), *b = bp_alloc(a, 80 * 1024);
    unsigned cls = b->region.class_index;
    assert_true(cls >= arena->whole_from);
    assert_int_equal(a->sc.class_size[arena->whole_from - 1], 64 * 1024); /* the cached classes end there */
    for (unsigned c = a->sc.nsmall; c < a->sc.nclasses; c++)
        assert_int_equal(arena->runs[c].capacity, c < arena->whole_from ? cfg.run_cache_size : 0);
    uint8_t *memory = bp_data(b, 0);
    size_t chunk_free = chunk_free_bytes(a);
    bp__thread_state *ts = bp__thread_state_get(a);
    size_t recycled = ts->recycler.count;
    assert_int_equal(bp_release(b), 1);
    bp_arena_stats s = arena_stats(a, 0);
    assert_int_equal(s.cached_runs, 0);
    assert_int_equal(s.deallocations_normal, 1);
    assert_int_equal(s.active_bytes, 80 * 1024);
    assert_int_equal(chunk_free_bytes(a), chunk_free + 80 * 1024);
    assert_int_equal(ts->recycler.count, recycled + 1);
    /* A shorter request of another class reuses its pages (the high end of the hole its
     * release joined: see test_long_runs_are_cut_from_the_high_end). */
    bp_buf *shorter = bp_alloc(a, 72 * 1024);
    assert_ptr_equal((uint8_t *)bp_data(shorter, 0) + 72 * 1024, memory + 80 * 1024);
    assert_true(bp__arena_check(arena));
    bp_release(shorter);
    bp_release(keep);
    bp_allocator_destroy(a);

    cfg.normal_cache_size = 0; /* no normal class is thread-cached: no run cache at all */
    a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    arena = &a->arenas[0];
    assert_int_equal(arena->whole_from, a->sc.nsmall);
    b = bp_alloc(a, a->sc.class_size[a->sc.nsmall]);
    assert_int_equal(bp_release(b), 1);
    assert_int_equal(arena_stats(a, 0).cached_runs, 0);
    assert_true(bp__arena_check(arena));
    bp_allocator_destroy(a);
}

/* A thread's scheduled trim is a purge check for its arena: runs idle since the check before
 * go back to their chunks. */
static void test_scheduled_trims_give_back_idle_runs(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.cache_trim_interval = 64;
    cfg.background_purge = 0;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    assert_non_null(bp__thread_state_get(a));
    bp__region keep = take_run(a, 64 * 1024), r = take_run(a, 64 * 1024);
    size_t chunk_free = chunk_free_bytes(a);
    give_run(a, &r);
    assert_int_equal(arena_stats(a, 0).cached_runs, 1);
    for (int i = 0; i < 200; i++) bp_release(bp_alloc(a, 64)); /* three trims: two checks idle */
    assert_int_equal(arena_stats(a, 0).cached_runs, 0);
    assert_int_equal(chunk_free_bytes(a), chunk_free + 64 * 1024 - 8192); /* (the 64 B subpage) */
    assert_true(bp__arena_check(&a->arenas[0]));
    give_run(a, &keep);
    bp_allocator_destroy(a);
}

static void test_run_cache_is_bounded_per_class_and_can_be_off(void **state)
{
    (void)state;
    bp_allocator *a = run_cache_allocator(2);
    bp__region keep = take_run(a, 64 * 1024), runs[3];
    for (int i = 0; i < 3; i++) runs[i] = take_run(a, 64 * 1024);
    size_t chunk_free = chunk_free_bytes(a);
    for (int i = 0; i < 3; i++) give_run(a, &runs[i]);
    bp_arena_stats s = arena_stats(a, 0);
    assert_int_equal(s.cached_runs, 2);
    assert_int_equal(s.deallocations_normal, 3);
    assert_int_equal(chunk_free_bytes(a), chunk_free + 64 * 1024); /* the third went back */
    assert_true(bp__arena_check(&a->arenas[0]));
    give_run(a, &keep);
    bp_allocator_destroy(a);

    a = run_cache_allocator(0);
    keep = take_run(a, 64 * 1024);
    runs[0] = take_run(a, 64 * 1024);
    chunk_free = chunk_free_bytes(a);
    give_run(a, &runs[0]);
    assert_int_equal(arena_stats(a, 0).cached_runs, 0);
    assert_int_equal(chunk_free_bytes(a), chunk_free + 64 * 1024);
    give_run(a, &keep);
    bp_allocator_destroy(a);
}

/* Held-back runs never make the arena take another chunk: before it would, they go back to
 * their chunks and coalesce. */
static void test_held_back_runs_go_back_before_a_new_chunk(void **state)
{
    (void)state;
    size_t mappings_before = bp__os_mapping_count();
    bp_allocator *a = run_cache_allocator(1024);
    bp__region quarters[4];
    for (int i = 0; i < 4; i++) quarters[i] = take_run(a, 1024 * 1024); /* the chunk is full */
    uint8_t *base = quarters[0].memory;
    give_run(a, &quarters[1]);
    give_run(a, &quarters[2]);
    assert_int_equal(arena_stats(a, 0).cached_runs, 2);
    /* 2 MiB: no free run in the chunk until the two held-back quarters coalesce. */
    bp__region half = take_run(a, 2 * 1024 * 1024);
    assert_ptr_equal(half.memory, base + 1024 * 1024);
    bp_arena_stats s = arena_stats(a, 0);
    assert_int_equal(s.cached_runs, 0);
    assert_int_equal(s.chunks, 1);
    assert_int_equal(bp__os_mapping_count(), mappings_before + 1);
    assert_true(bp__arena_check(&a->arenas[0]));

    /* All released and held back: the chunk looks full, yet a 4 MiB run reuses it (emptied
     * by the give-back, retained, taken again) instead of mapping another. */
    give_run(a, &quarters[0]);
    give_run(a, &quarters[3]);
    give_run(a, &half);
    s = arena_stats(a, 0);
    assert_int_equal(s.cached_runs, 3);
    assert_int_equal(s.chunks, 1);
    assert_int_equal(s.active_bytes, 0);
    bp__region whole = take_run(a, 4 * 1024 * 1024);
    assert_ptr_equal(whole.memory, base);
    s = arena_stats(a, 0);
    assert_int_equal(s.cached_runs, 0);
    assert_int_equal(s.chunks, 1);
    assert_int_equal(s.retained_chunks, 0);
    assert_int_equal(bp__os_mapping_count(), mappings_before + 1);
    assert_true(bp__arena_check(&a->arenas[0]));
    give_run(a, &whole);
    bp_allocator_destroy(a);
    assert_int_equal(bp__os_mapping_count(), mappings_before);
}

/* A purge check gives back the runs nobody took since the previous check; bp_allocator_purge
 * gives back all of them. */
static void test_idle_held_back_runs_go_back_at_purge_checks(void **state)
{
    (void)state;
    bp_allocator *a = run_cache_allocator(1024);
    bp__arena *arena = &a->arenas[0];
    bp__region keep = take_run(a, 64 * 1024), x = take_run(a, 64 * 1024), y = take_run(a, 128 * 1024);
    size_t chunk_free = chunk_free_bytes(a);
    give_run(a, &x);
    give_run(a, &y);
    bp__arena_purge(arena, false); /* both were just released: not idle yet */
    assert_int_equal(arena_stats(a, 0).cached_runs, 2);
    /* The 64 KiB one is taken and released again between the checks: in demand, it stays. */
    x = take_run(a, 64 * 1024);
    give_run(a, &x);
    bp__arena_purge(arena, false);
    bp_arena_stats s = arena_stats(a, 0);
    assert_int_equal(s.cached_runs, 1);
    assert_int_equal(s.cached_run_bytes, 64 * 1024);
    assert_int_equal(chunk_free_bytes(a), chunk_free + 128 * 1024);
    assert_true(bp__arena_check(arena));
    bp__arena_purge(arena, false); /* idle for a whole interval now */
    assert_int_equal(arena_stats(a, 0).cached_runs, 0);
    assert_int_equal(chunk_free_bytes(a), chunk_free + 192 * 1024);
    assert_true(bp__arena_check(arena));

    x = take_run(a, 64 * 1024);
    give_run(a, &x);
    give_run(a, &keep);
    s = arena_stats(a, 0);
    assert_int_equal(s.cached_runs, 2);
    assert_int_equal(s.chunks, 1);
    assert_int_equal(bp_allocator_purge(a), 1); /* every run back, and the emptied chunk */
    s = arena_stats(a, 0);
    assert_int_equal(s.cached_runs, 0);
    assert_int_equal(s.chunks, 0);
    assert_int_equal(s.retained_chunks, 0);
    assert_true(bp__arena_check(arena));
    bp_allocator_destroy(a);
}

/* A thread of its own, bound to the allocator's one arena: holds 8 runs back there, then
 * reports how many the arena holds. */
static void *hold_eight_runs(void *arg)
{
    bp_allocator *a = arg;
    assert_non_null(bp__thread_state_get(a));
    bp__region runs[8];
    for (int i = 0; i < 8; i++) runs[i] = take_run(a, 64 * 1024);
    for (int i = 0; i < 8; i++) give_run(a, &runs[i]);
    return (void *)(uintptr_t)arena_stats(a, 0).cached_runs;
}

/* The last thread of an arena gives its held-back runs back when it exits. */
static void test_last_thread_of_an_arena_gives_back_its_runs(void **state)
{
    (void)state;
    bp_allocator *a = quiet_allocator(1); /* no thread bound yet */
    assert_int_equal((uintptr_t)run_on_thread(hold_eight_runs, a), 8); /* all held while it ran */
    bp_arena_stats s = arena_stats(a, 0);
    assert_int_equal(s.threads, 0);
    assert_int_equal(s.cached_runs, 0);
    assert_int_equal(s.active_bytes, 0);
    assert_int_equal(chunk_free_bytes(a), 4 << 20); /* every run back in it */
    assert_true(bp__arena_check(&a->arenas[0]));
    bp_allocator_destroy(a);
}

/* Out of memory after the held-back runs went back: the allocation fails cleanly, the runs
 * are in their chunk (coalesced, usable), and everything works once memory is there. */
static void test_out_of_memory_with_runs_held_back(void **state)
{
    (void)state;
    bp_allocator *a = run_cache_allocator(1024);
    bp__region quarters[4];
    for (int i = 0; i < 4; i++) quarters[i] = take_run(a, 1024 * 1024);
    uint8_t *base = quarters[0].memory;
    give_run(a, &quarters[1]);
    give_run(a, &quarters[2]);
    assert_int_equal(arena_stats(a, 0).cached_runs, 2);
    bp__os_inject_map_failure(0);
    bp__region r;
    assert_int_equal(bp__arena_alloc(&a->arenas[0], 4 * 1024 * 1024, &r), BP_ENOMEM); /* needs a new chunk */
    bp__os_inject_map_failure(-1);
    bp_arena_stats s = arena_stats(a, 0);
    assert_int_equal(s.cached_runs, 0);
    assert_int_equal(s.active_bytes, 2 * 1024 * 1024);
    assert_int_equal(s.allocations_normal, 4);
    assert_int_equal(chunk_free_bytes(a), 2 * 1024 * 1024);
    assert_true(bp__arena_check(&a->arenas[0]));
    bp__region half = take_run(a, 2 * 1024 * 1024); /* the two quarters, coalesced */
    assert_ptr_equal(half.memory, base + 1024 * 1024);
    bp__region whole = take_run(a, 4 * 1024 * 1024); /* and a new chunk now that maps work */
    assert_int_equal(whole.length, 4 * 1024 * 1024);
    assert_true(whole.chunk != quarters[0].chunk);
    assert_int_equal(arena_stats(a, 0).chunks, 2);
    assert_true(bp__arena_check(&a->arenas[0]));
    give_run(a, &whole);
    give_run(a, &half);
    give_run(a, &quarters[0]);
    give_run(a, &quarters[3]);
    bp_allocator_destroy(a);
}

static void *alloc_64k(void *arg) { return bp_alloc(arg, 64 * 1024); }

/* A run released into an arena nobody is bound to goes straight back to its chunk: no
 * thread would take it, nor give it back at exit. */
static void test_release_into_an_unbound_arena_is_not_held_back(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 2;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    assert_non_null(bp__thread_state_get(a)); /* this thread takes arena 0 */
    bp_buf *theirs = run_on_thread(alloc_64k, a); /* arena 1, then exits */
    assert_non_null(theirs);
    bp_arena_stats s = arena_stats(a, 1);
    assert_int_equal(s.threads, 0);
    assert_int_equal(s.active_normal, 1);
    assert_int_equal(bp_release(theirs), 1); /* its owner is gone: given back here */
    bp_thread_cache_flush(a);
    s = arena_stats(a, 1);
    assert_int_equal(s.active_normal, 0);
    assert_int_equal(s.cached_runs, 0);
    assert_true(bp__arena_check(&a->arenas[1]));
    bp__region mine = take_run(a, 64 * 1024);
    give_run(a, &mine); /* its own arena, with a thread: held back */
    assert_int_equal(arena_stats(a, 0).cached_runs, 1);
    bp_allocator_destroy(a);
}

/* Small chunks and a run cache of 3 per class: runs are held back, overflow, and go back
 * before new chunks all the time. */
static void test_random_model_small_run_cache(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.page_size = 4096;
    cfg.chunk_size = 256 * 1024;
    cfg.run_cache_size = 3;
    cfg.cache_trim_interval = 300;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    random_model(a, 7);
    bp_allocator_destroy(a);
}

/* Above the thread-cached classes a buffer's run is as many pages as its size needs (its
 * class's length would leave an untouched tail); cached classes keep their class's length. */
static void test_uncached_sizes_get_whole_pages(void **state)
{
    (void)state;
    bp_allocator *a = quiet_allocator(1);
    const size_t page = 8192;
    struct { size_t size, region; } cases[] = {
        {20000, 20480},            /* a small class: its slot */
        {30000, 32768},            /* 32 KiB, thread-cached: the class */
        {40000, 5 * page},         /* 40 KiB, thread-cached too (max_cached_size 64 KiB) */
        {65537, 9 * page},         /* above max_cached_size: 9 pages, not 80 KiB's 10 */
        {100000, 13 * page},       /* 13, not 112 KiB's 14 */
        {(size_t)1 << 20, (size_t)1 << 20},
        {(1 << 20) + 1, (1 << 20) + page},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t before = arena_stats(a, 0).active_bytes;
        bp_buf *b = bp_alloc(a, cases[i].size);
        assert_non_null(b);
        if (cases[i].size > 32768) /* (a small class's refill takes several) */
            assert_int_equal(arena_stats(a, 0).active_bytes - before, cases[i].region);
        assert_int_equal(bp_capacity(b), cases[i].size);
        assert_int_equal(bp_max_fast_writable_bytes(b), cases[i].region);
        /* every byte of it is the buffer's */
        assert_int_equal(bp_set_capacity(b, cases[i].region), 0);
        assert_int_equal(bp_set_u8(b, cases[i].region - 1, 0x5a), 0);
        assert_true(bp__arena_check(&a->arenas[0]));
        bp_release(b);
    }
    /* Such runs are held back by no run cache, whether or not they have their class's
     * length: they go back to their chunks at once. */
    bp_buf *keep = bp_alloc(a, 200000);
    bp_buf *eleven = bp_alloc(a, 80 * 1024 + 1), *ten = bp_alloc(a, 80 * 1024);
    size_t free_pages = arena_stats(a, 0).free_page_bytes;
    assert_int_equal(arena_stats(a, 0).cached_runs, 0);
    bp_release(eleven);
    bp_release(ten);
    assert_int_equal(arena_stats(a, 0).cached_runs, 0);
    assert_int_equal(arena_stats(a, 0).free_page_bytes, free_pages + 21 * page);
    assert_true(bp__arena_check(&a->arenas[0]));
    bp_release(keep);
    bp_allocator_destroy(a);
}

/* Runs of classes no thread cache keeps are cut from the high end of the free run they go
 * into, the rest (subpages, cached classes) from the low end: long and short runs gather
 * at opposite ends, and a long run given back joins the free space beside other long ones. */
static void test_long_runs_are_cut_from_the_high_end(void **state)
{
    (void)state;
    bp_allocator *a = quiet_allocator(1);
    const size_t page = 8192;
    bp_buf *long1 = bp_alloc(a, 100 * 1024); /* 13 pages, above max_cached_size */
    uint8_t *base = long1->region.chunk->base;
    assert_ptr_equal(bp_data(long1, 0), base + (512 - 13) * page);
    bp_buf *cached = bp_alloc(a, 16 * 1024); /* a cached class: from the low end */
    assert_ptr_equal(bp_data(cached, 0), base);
    bp_buf *long2 = bp_alloc(a, 200 * 1024); /* 25 pages, right below the first */
    assert_ptr_equal(bp_data(long2, 0), base + (512 - 13 - 25) * page);
    bp_buf *small = bp_alloc(a, 100); /* a subpage: low end too */
    assert_true((uint8_t *)bp_data(small, 0) < base + 16 * page);
    /* The first given back: 13 free pages at the top, the closest fit for 9 pages, which
     * take that hole's high end and leave 4 pages beside long2. */
    assert_int_equal(bp_release(long1), 1);
    bp_buf *long3 = bp_alloc(a, 9 * page);
    assert_ptr_equal(bp_data(long3, 0), base + (512 - 9) * page);
    assert_true(bp__arena_check(&a->arenas[0]));
    bp_release(long3);
    bp_release(long2);
    bp_release(small);
    bp_release(cached);
    assert_true(bp__arena_check(&a->arenas[0]));
    bp_allocator_destroy(a);
}

/* A run comes from the chunk whose free run fits it most closely, over all chunks, not
 * from the chunk the index lists first: with holes of 19 and 17 pages in two chunks (the
 * 19 listed first), 17 pages go into the 17-page hole. */
static void test_runs_take_the_closest_fit_over_all_chunks(void **state)
{
    (void)state;
    bp_allocator *a = quiet_allocator(1);
    const size_t page = 8192;
    bp_buf *x19 = bp_alloc(a, 19 * page), *fill1 = bp_alloc(a, 493 * page); /* chunk 1, full */
    bp_buf *x17 = bp_alloc(a, 17 * page), *fill2 = bp_alloc(a, 495 * page); /* chunk 2, full */
    assert_non_null(x19);
    assert_non_null(fill1);
    assert_non_null(x17);
    assert_non_null(fill2);
    assert_int_equal(arena_stats(a, 0).chunks, 2);
    uint8_t *hole17 = bp_data(x17, 0), *hole19 = bp_data(x19, 0);
    assert_int_equal(bp_release(x17), 1); /* neither length is its class's: not held back */
    assert_int_equal(bp_release(x19), 1);
    assert_int_equal(arena_stats(a, 0).cached_runs, 0);
    bp_buf *y = bp_alloc(a, 17 * page - 100);
    assert_ptr_equal(bp_data(y, 0), hole17);
    bp_buf *z = bp_alloc(a, 18 * page); /* then the 19-page hole is the only fit: its high end */
    assert_ptr_equal(bp_data(z, 0), hole19 + page);
    assert_int_equal(arena_stats(a, 0).chunks, 2);
    assert_true(bp__arena_check(&a->arenas[0]));
    bp_release(y);
    bp_release(z);
    bp_release(fill1);
    bp_release(fill2);
    assert_true(bp__arena_check(&a->arenas[0]));
    bp_allocator_destroy(a);
}

static size_t resident_bytes_of(const void *p, size_t bytes)
{
    size_t os_page = (size_t)sysconf(_SC_PAGESIZE), n = bytes / os_page, resident = 0;
    unsigned char *vec = calloc(n, 1);
    assert_non_null(vec);
    assert_int_equal(mincore((void *)(uintptr_t)p, n * os_page, vec), 0);
    for (size_t i = 0; i < n; i++) resident += vec[i] & 1;
    free(vec);
    return resident * os_page;
}

/* Handed-out bytes plus free resident ones stay within the recent peak of handed-out bytes
 * plus dirty_max_percent of it: a burst that comes back and goes out again purges nothing;
 * growing into new memory while free pages sit elsewhere purges the least recently used
 * chunk's; 0 purges nothing. */
static void test_free_resident_pages_are_bounded_by_the_peak(void **state)
{
    (void)state;
    const size_t mib = 1024 * 1024;
    for (unsigned percent = 0; percent <= 10; percent += 10) {
        /* free pages never purged by age: what goes back before its time is what
         * dirty_max_percent bounds */
        bp_allocator *a = uncached_allocator_bounded(BP_DECAY_NEVER, percent);
        bp_buf *b[16], *big[4];
        for (int round = 0; round < 3; round++) { /* 16 MiB out, all back, again */
            for (int i = 0; i < 16; i++) {
                b[i] = bp_alloc(a, mib);
                assert_int_equal(bp_set_capacity(b[i], mib), 0);
                memset(bp_data(b[i], 0), i, mib);
            }
            if (round < 2)
                for (int i = 0; i < 16; i++) bp_release(b[i]);
        }
        bp_arena_stats s = arena_stats(a, 0);
        assert_int_equal(s.purged_bytes, 0);
        assert_int_equal(s.active_bytes, 16 * mib);
        assert_int_equal(s.chunks, 4);
        /* Every other MiB back, the first chunk's first: the first chunk is the least
         * recently used of those with free pages. */
        uint8_t *first_hole = bp_data(b[0], 0);
        for (int i = 0; i < 16; i += 2) bp_release(b[i]);
        s = arena_stats(a, 0);
        assert_int_equal(s.dirty_bytes, 8 * mib);
        assert_int_equal(s.purged_bytes, 0);
        size_t peak = 16 * mib, allowance = peak / 100 * percent;
        /* 2 MiB runs fit no 1 MiB hole: each takes new pages. */
        for (int i = 0; i < 4; i++) {
            big[i] = bp_alloc(a, 2 * mib);
            memset(bp_data(big[i], 0), 0x77, 2 * mib);
            s = arena_stats(a, 0);
            if (percent > 0) /* checked before the new run counts: within one run of it */
                assert_true(s.active_bytes + s.dirty_bytes <= peak + allowance + 2 * mib);
            assert_true(bp__arena_check(&a->arenas[0]));
        }
        s = arena_stats(a, 0);
        if (percent == 0) {
            assert_int_equal(s.purged_bytes, 0);
            assert_int_equal(s.dirty_bytes, 8 * mib);
            assert_int_equal(resident_bytes_of(first_hole, mib), mib);
        } else {
            /* 16 + 8 MiB would be resident; within 16 MiB + 10 % and the last run's 2 MiB
             * (counted after the check), at least 4.4 MiB went. Each purge goes down to
             * three quarters of the allowance, 0.4 MiB below: 4.8 MiB in all. */
            assert_true(s.purged_bytes >= 44 * mib / 10 && s.purged_bytes <= 5 * mib);
            assert_int_equal(s.dirty_bytes, 8 * mib - s.purged_bytes);
            assert_int_equal(resident_bytes_of(first_hole, mib), 0); /* the LRU chunk's went first */
        }
        for (int i = 1; i < 16; i += 2) { /* the live bytes are untouched */
            const uint8_t *p = bp_data(b[i], 0);
            assert_int_equal(p[0], i);
            assert_int_equal(p[mib - 1], i);
            bp_release(b[i]);
        }
        for (int i = 0; i < 4; i++) bp_release(big[i]);
        assert_true(bp__arena_check(&a->arenas[0]));
        bp_allocator_destroy(a);
    }
}

static void test_destroy_unmaps_leaked_buffers(void **state)
{
    (void)state;
    size_t before = bp__os_mapped_bytes();
    bp_allocator *a = one_arena_allocator();
    assert_non_null(bp_alloc(a, 100));
    assert_non_null(bp_alloc(a, 100 * 1024));
    assert_non_null(bp_alloc(a, (size_t)6 << 20));
    assert_true(bp__os_mapped_bytes() > before);
    bp_allocator_destroy(a);
    assert_int_equal(bp__os_mapped_bytes(), before);
}

int main(int argc, char **argv)
{
    test_filters(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_slots_fill_a_subpage_in_address_order),
        cmocka_unit_test(test_small_class_with_multi_page_runs),
        cmocka_unit_test(test_chunk_moves_between_bands_and_is_unmapped_when_empty),
        cmocka_unit_test(test_chunk_in_q_init_is_kept_when_empty),
        cmocka_unit_test(test_allocation_prefers_well_used_chunks),
        cmocka_unit_test(test_emptied_chunk_is_retained_reused_and_purged),
        cmocka_unit_test(test_free_pages_are_purged_after_the_decay),
        cmocka_unit_test(test_retained_chunks_decay),
        cmocka_unit_test(test_huge_buffers_are_mapped_and_unmapped_exactly),
        cmocka_unit_test(test_out_of_memory_changes_nothing),
        cmocka_unit_test(test_random_model_default_geometry),
        cmocka_unit_test(test_random_model_with_thread_cache),
        cmocka_unit_test(test_random_model_small_pages_and_chunks),
        cmocka_unit_test(test_random_model_small_run_cache),
        cmocka_unit_test(test_freed_run_is_held_back_and_reused),
        cmocka_unit_test(test_run_cache_is_bounded_per_class_and_can_be_off),
        cmocka_unit_test(test_runs_of_classes_no_thread_cache_keeps_go_straight_back),
        cmocka_unit_test(test_scheduled_trims_give_back_idle_runs),
        cmocka_unit_test(test_held_back_runs_go_back_before_a_new_chunk),
        cmocka_unit_test(test_idle_held_back_runs_go_back_at_purge_checks),
        cmocka_unit_test(test_last_thread_of_an_arena_gives_back_its_runs),
        cmocka_unit_test(test_release_into_an_unbound_arena_is_not_held_back),
        cmocka_unit_test(test_out_of_memory_with_runs_held_back),
        cmocka_unit_test(test_destroy_unmaps_leaked_buffers),
        cmocka_unit_test(test_uncached_sizes_get_whole_pages),
        cmocka_unit_test(test_runs_take_the_closest_fit_over_all_chunks),
        cmocka_unit_test(test_long_runs_are_cut_from_the_high_end),
        cmocka_unit_test(test_free_resident_pages_are_bounded_by_the_peak),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
