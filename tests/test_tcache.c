/* SPDX-License-Identifier: MIT */
/* Thread caches: hits without the arena, bounds, trimming, flushing, switching off. */
#include "test_util.h"

#include "allocator.h"
#include "thread.h"

#include <pthread.h>
#include <stdlib.h>

static bp_allocator *allocator_caching(unsigned small, unsigned normal, size_t max_cached, unsigned trim_interval,
                                       unsigned arena_cache, size_t arena_cache_bytes)
{
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.small_cache_size = small;
    cfg.normal_cache_size = normal;
    cfg.max_cached_size = max_cached;
    cfg.cache_class_max_bytes = 0; /* entries as given (test_bins_are_bounded_by_bytes) */
    cfg.cache_trim_interval = trim_interval;
    cfg.arena_cache_size = arena_cache;
    cfg.arena_cache_max_bytes = arena_cache_bytes;
    cfg.background_purge = 0; /* the counts below are the allocations' doing alone */
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    return a;
}

/* The arena's cache at its defaults. */
static bp_allocator *allocator_with(unsigned small, unsigned normal, size_t max_cached, unsigned trim_interval)
{
    bp_config defaults;
    bp_config_init(&defaults);
    return allocator_caching(small, normal, max_cached, trim_interval, defaults.arena_cache_size,
                             defaults.arena_cache_max_bytes);
}

static uint64_t arena_allocations(bp_allocator *a)
{
    bp_arena_stats s;
    assert_int_equal(bp_arena_get_stats(a, 0, &s, sizeof s), 0);
    return s.allocations_small + s.allocations_normal + s.allocations_huge;
}

static bp_allocator_stats stats(bp_allocator *a)
{
    bp_allocator_stats s;
    assert_int_equal(bp_allocator_get_stats(a, &s, sizeof s), 0);
    return s;
}

static void test_second_32k_allocation_hits_the_cache(void **state)
{
    (void)state;
    bp_allocator *a = quiet_allocator(1);
    bp_buf *b = bp_alloc(a, 32 * 1024);
    void *memory = bp_data(b, 0);
    bp_release(b);
    assert_int_equal(stats(a).cached_entries, 1);
    assert_int_equal(stats(a).cached_bytes, 32 * 1024);
    b = bp_alloc(a, 32 * 1024);
    assert_ptr_equal(bp_data(b, 0), memory);
    assert_int_equal(arena_allocations(a), 1); /* two allocations, one reached the arena */
    bp_allocator_stats s = stats(a);
    assert_int_equal(s.cache_hits, 1);
    assert_int_equal(s.cached_entries, 0);
    assert_int_equal(s.active_bytes, 32 * 1024);
    bp_release(b);
    bp_allocator_destroy(a);
}

static void test_above_max_cached_size_is_not_cached(void **state)
{
    (void)state;
    bp_allocator *a = quiet_allocator(1);
    bp_buf *b = bp_alloc(a, 64 * 1024 + 1); /* the default max_cached_size is 64 KiB */
    bp_release(b);
    assert_int_equal(stats(a).cached_entries, 0);
    b = bp_alloc(a, 64 * 1024 + 1);
    bp_release(b);
    assert_int_equal(arena_allocations(a), 2);
    bp_arena_stats as;
    bp_arena_get_stats(a, 0, &as, sizeof as);
    assert_int_equal(as.deallocations_normal, 2);
    bp_allocator_destroy(a);
}

static void test_caches_off_every_allocation_reaches_the_arena(void **state)
{
    (void)state;
    bp_allocator *a = allocator_with(0, 0, 32 * 1024, 8192);
    for (int i = 0; i < 100; i++) bp_release(bp_alloc(a, (size_t)(i % 2 ? 100 : 32 * 1024)));
    assert_int_equal(arena_allocations(a), 100);
    bp_allocator_stats s = stats(a);
    assert_int_equal(s.cache_hits, 0);
    assert_int_equal(s.cached_entries, 0);
    bp_allocator_destroy(a);
    /* max_cached_size 0 turns them off as well */
    a = allocator_with(256, 64, 0, 8192);
    for (int i = 0; i < 10; i++) bp_release(bp_alloc(a, 16));
    assert_int_equal(arena_allocations(a), 10);
    bp_allocator_destroy(a);
}

static bp_arena_stats arena_stats(bp_allocator *a)
{
    bp_arena_stats s;
    assert_int_equal(bp_arena_get_stats(a, 0, &s, sizeof s), 0);
    return s;
}

/* 20 small and 5 normal buffers released into bins of 8 and 2: each bin ends full, and what
 * did not fit went to the arena's cache (arena_cache entries per class, arena_cache_bytes in all)
 * or, past that, to the chunks. */
static void check_bins_are_bounded(unsigned arena_cache, size_t arena_cache_bytes, size_t arena_small,
                                   size_t arena_normal)
{
    bp_allocator *a = allocator_caching(8, 2, 32 * 1024, 8192, arena_cache, arena_cache_bytes);
    bp_buf *small[20], *normal[5];
    for (int i = 0; i < 20; i++) small[i] = bp_alloc(a, 64);
    for (int i = 0; i < 5; i++) normal[i] = bp_alloc(a, 32 * 1024);
    for (int i = 0; i < 20; i++) bp_release(small[i]);
    for (int i = 0; i < 5; i++) bp_release(normal[i]);
    bp_allocator_stats s = stats(a);
    assert_int_equal(s.cached_entries, 8 + 2);
    assert_int_equal(s.cached_bytes, 8 * 64 + 2 * 32 * 1024);
    assert_int_equal(s.arena_cached_entries, arena_small + arena_normal);
    assert_int_equal(s.arena_cached_bytes, arena_small * 64 + arena_normal * 32 * 1024);
    assert_int_equal(s.active_bytes, 0);
    bp_arena_stats as = arena_stats(a);
    assert_int_equal(as.cached_entries, arena_small + arena_normal);
    assert_int_equal(as.deallocations_small, 12 - arena_small);
    assert_int_equal(as.deallocations_normal, 3 - arena_normal);
    assert_true(bp__arena_check(&a->arenas[0]));
    bp_allocator_destroy(a);
}

static void test_bins_are_bounded(void **state)
{
    (void)state;
    check_bins_are_bounded(0, (size_t)4 << 20, 0, 0);  /* no arena cache: all to the chunks */
    check_bins_are_bounded(1024, (size_t)4 << 20, 12, 3);
    check_bins_are_bounded(4, (size_t)4 << 20, 4, 3);   /* 4 entries per class */
    /* 64 KiB for the whole arena: the 64 B ones first (768 B), then one of 32 KiB. */
    check_bins_are_bounded(1024, 64 * 1024, 12, 1);
}

/* Bursts bigger than a bin: what overflows waits in the arena's cache and comes back on the
 * next burst's misses, a batch at a time, without touching a chunk. */
static void test_bursts_move_through_the_arena_cache(void **state)
{
    (void)state;
    bp_allocator *a = allocator_with(8, 2, 32 * 1024, 8192);
    enum { BURST = 40 };
    bp_buf *bufs[BURST];
    void *first_memory[BURST];
    for (int i = 0; i < BURST; i++) first_memory[i] = bp_data(bufs[i] = bp_alloc(a, 64), 0);
    for (int i = 0; i < BURST; i++) bp_release(bufs[i]);
    uint64_t after_first = arena_allocations(a);
    assert_int_equal(stats(a).arena_cached_entries, BURST - 8);
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < BURST; i++) bufs[i] = bp_alloc(a, 64);
        assert_int_equal(stats(a).arena_cached_entries, 0);
        for (int i = 0; i < BURST; i++) { /* the same regions: every one was there before */
            int found = 0;
            for (int j = 0; j < BURST; j++) found += bp_data(bufs[i], 0) == first_memory[j];
            assert_int_equal(found, 1);
            bp_release(bufs[i]);
        }
        assert_int_equal(stats(a).arena_cached_entries, BURST - 8);
    }
    assert_int_equal(arena_allocations(a), after_first);
    bp_arena_stats as = arena_stats(a);
    assert_int_equal(as.deallocations_small, 0);
    /* Whatever the first burst's refills took ahead of need is in the bin or the cache. */
    assert_int_equal(as.active_small, stats(a).cached_entries + stats(a).arena_cached_entries);

    /* Normal classes take from it in batches too (half a bin). */
    bp_buf *big[6];
    for (int i = 0; i < 6; i++) big[i] = bp_alloc(a, 32 * 1024);
    for (int i = 0; i < 6; i++) bp_release(big[i]);
    assert_int_equal(stats(a).arena_cached_entries, BURST - 8 + 4);
    uint64_t before = arena_allocations(a);
    for (int i = 0; i < 6; i++) big[i] = bp_alloc(a, 32 * 1024);
    assert_int_equal(arena_allocations(a), before);
    for (int i = 0; i < 6; i++) bp_release(big[i]);
    bp_allocator_destroy(a);
}

/* With the defaults, a burst of 8000 buffers of one small class (bin of 256, arena cache of
 * 8192) goes round without reaching a chunk after the first: the next bursts allocate and
 * free nothing in the arena. (With 1024 in the arena's cache, the default before, each burst
 * sent ~6700 regions back to their subpages and took them out again, 2-3x the time.) */
static void test_a_burst_of_thousands_stays_out_of_the_chunks(void **state)
{
    (void)state;
    bp_allocator *a = quiet_allocator(1);
    enum { BURST = 8000 };
    bp_buf **bufs = calloc(BURST, sizeof *bufs);
    assert_non_null(bufs);
    for (int i = 0; i < BURST; i++) assert_non_null(bufs[i] = bp_alloc(a, 64));
    for (int i = 0; i < BURST; i++) assert_int_equal(bp_release(bufs[i]), 1);
    bp_arena_stats first = arena_stats(a);
    assert_int_equal(first.deallocations_small, 0); /* bin and arena cache held all of them */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < BURST; i++) assert_non_null(bufs[i] = bp_alloc(a, 64));
        for (int i = 0; i < BURST; i++) assert_int_equal(bp_release(bufs[i]), 1);
    }
    bp_arena_stats after = arena_stats(a);
    assert_int_equal(after.allocations_small, first.allocations_small);
    assert_int_equal(after.deallocations_small, 0);
    free(bufs);
    bp_allocator_destroy(a);
}

/* A thread whose arena another thread shares takes the buffers that one gave back, and they
 * become its own: releasing them there is not a remote release. */
typedef struct burst_job {
    bp_allocator *a;
    int n;
} burst_job;

static void *allocate_and_release_burst(void *arg)
{
    burst_job *job = arg;
    bp_buf *bufs[64];
    for (int i = 0; i < job->n; i++) bufs[i] = bp_alloc(job->a, 64);
    for (int i = 0; i < job->n; i++) bp_release(bufs[i]);
    return NULL;
}

static void test_threads_of_an_arena_share_its_cache(void **state)
{
    (void)state;
    bp_allocator *a = allocator_with(8, 2, 32 * 1024, 8192);
    bp_buf *mine = bp_alloc(a, 100); /* binds this thread to the one arena */
    burst_job job = {a, 40};
    run_on_thread(allocate_and_release_burst, &job);
    /* Its bin went to the chunks at exit; its overflow stayed for this thread. */
    assert_int_equal(stats(a).arena_cached_entries, 32);
    uint64_t before = arena_allocations(a);
    bp_buf *bufs[32];
    for (int i = 0; i < 32; i++) bufs[i] = bp_alloc(a, 64);
    assert_int_equal(arena_allocations(a), before);
    assert_int_equal(stats(a).arena_cached_entries, 0);
    for (int i = 0; i < 32; i++) bp_release(bufs[i]);
    bp_release(mine);
    bp_allocator_stats s = stats(a);
    assert_int_equal(s.remote_releases, 0);
    assert_int_equal(s.active_buffers, 0);
    assert_int_equal(s.active_bytes, 0);
    bp_allocator_destroy(a);
}

static void test_last_thread_of_an_arena_empties_its_cache(void **state)
{
    (void)state;
    bp_allocator *a = allocator_with(8, 2, 32 * 1024, 8192);
    burst_job job = {a, 40};
    run_on_thread(allocate_and_release_burst, &job);
    bp_allocator_stats s = stats(a);
    assert_int_equal(s.arena_cached_entries, 0);
    assert_int_equal(s.cached_entries, 0);
    bp_arena_stats as = arena_stats(a);
    assert_int_equal(as.threads, 0);
    assert_int_equal(as.cached_entries, 0);
    assert_int_equal(as.active_bytes, 0);
    assert_int_equal(as.active_small, 0);
    bp_allocator_destroy(a);
}

static void test_idle_arena_cache_is_trimmed_and_purged(void **state)
{
    (void)state;
    /* 16 B allocations, a class of their own, only count down to the trims. */
    bp_allocator *a = allocator_caching(8, 2, 32 * 1024, 100, 1024, (size_t)16 << 20);
    bp_buf *bufs[40];
    for (int i = 0; i < 6; i++) bufs[i] = bp_alloc(a, 32 * 1024);
    for (int i = 0; i < 6; i++) bp_release(bufs[i]);
    assert_int_equal(stats(a).arena_cached_entries, 4);
    uint64_t trims = stats(a).cache_trims;
    /* The first trim after they arrived marks them; the second frees what nobody took. */
    while (stats(a).cache_trims == trims) bp_release(bp_alloc(a, 16));
    assert_int_equal(stats(a).arena_cached_entries, 4);
    while (stats(a).cache_trims == trims + 1) bp_release(bp_alloc(a, 16));
    assert_int_equal(stats(a).arena_cached_entries, 0);
    assert_int_equal(arena_stats(a).deallocations_normal, 6); /* and the bin's two: cold too */

    /* Taken between two trims: used, so not idle. */
    for (int i = 0; i < 6; i++) bufs[i] = bp_alloc(a, 32 * 1024);
    for (int i = 0; i < 6; i++) bp_release(bufs[i]);
    trims = stats(a).cache_trims;
    while (stats(a).cache_trims == trims) bp_release(bp_alloc(a, 16));
    /* That trim emptied the (unused) bin and marked the cache's 4. Three taken from the
     * cache (its low-water mark drops to 1), three released: the bin keeps two, one goes
     * back on top of the cache. */
    for (int i = 0; i < 3; i++) bufs[i] = bp_alloc(a, 32 * 1024);
    for (int i = 0; i < 3; i++) bp_release(bufs[i]);
    assert_int_equal(stats(a).arena_cached_entries, 2);
    while (stats(a).cache_trims == trims + 1) bp_release(bp_alloc(a, 16));
    assert_int_equal(stats(a).arena_cached_entries, 1); /* the one used stays... */

    /* ... until purged. */
    assert_true(bp_allocator_purge(a) >= 0);
    bp_allocator_stats s = stats(a);
    assert_int_equal(s.arena_cached_entries, 0);
    assert_int_equal(s.arena_cached_bytes, 0);
    bp_allocator_destroy(a);
}

/* active_buffers is taken from per-thread ledgers that only slow paths write (a fast pop or
 * push moves a buffer between the bins and the user, and the ledger counts both): exact
 * through hits, misses, refills, overflows, growth, trims, flushes and remote releases. */
static void *release_all_given(void *arg)
{
    bp_buf **bufs = arg;
    for (int i = 0; i < 5; i++) assert_int_equal(bp_release(bufs[i]), 1);
    return NULL;
}

static void test_active_buffers_through_every_path(void **state)
{
    (void)state;
    bp_allocator *a = allocator_with(8, 2, 32 * 1024, 16 /* trims on the way */);
    bp_buf *bufs[40];
    for (int i = 0; i < 40; i++) {
        bufs[i] = bp_alloc(a, i % 4 == 0 ? 20000 : 64); /* normal and small, hits and misses */
        assert_int_equal(stats(a).active_buffers, (uint64_t)i + 1);
    }
    uint8_t bytes[3000] = {0};
    for (int i = 1; i < 6; i++) assert_int_equal(bp_write_bytes(bufs[i], bytes, sizeof bytes), 0); /* grown */
    assert_int_equal(stats(a).active_buffers, 40);
    assert_int_equal(bp_retain(bufs[6]), 0);
    assert_int_equal(bp_release(bufs[6]), 0); /* still held */
    assert_int_equal(stats(a).active_buffers, 40);
    for (int i = 6; i < 26; i++) assert_int_equal(bp_release(bufs[i]), 1); /* into full bins and over */
    assert_int_equal(stats(a).active_buffers, 20);
    assert_true(bp_thread_cache_trim(a) >= 0);
    assert_int_equal(stats(a).active_buffers, 20);
    assert_true(bp_thread_cache_flush(a) >= 0);
    assert_int_equal(stats(a).active_buffers, 20);
    for (int i = 26; i < 31; i++) { /* a fast push and a fast pop each */
        assert_int_equal(bp_release(bufs[i]), 1);
        bufs[i] = bp_alloc(a, 64);
    }
    assert_int_equal(stats(a).active_buffers, 20);
    run_on_thread(release_all_given, bufs + 26); /* released on another thread */
    assert_int_equal(stats(a).active_buffers, 15);
    for (int i = 0; i < 6; i++) assert_int_equal(bp_release(bufs[i]), 1);
    for (int i = 31; i < 40; i++) assert_int_equal(bp_release(bufs[i]), 1);
    assert_int_equal(stats(a).active_buffers, 0);
    bp_allocator_destroy(a);
}

/* The bin of the 32 KiB class on this thread's cache of `a`. */
static bp__tcache_bin *bin_of_32k(bp_allocator *a)
{
    bp__thread_state *ts = bp__thread_state_get(a);
    assert_non_null(ts);
    return &ts->tcache.head.bins[bp__size_class_of(&a->sc, 32 * 1024)];
}

/* A release fills the bin's slot, and the next allocation of the class takes that same
 * buffer back; with the slot full a release goes onto the stack, and the slot is taken
 * first. A bin holds its capacity in all, the slot counted. */
static void test_the_slot_takes_the_last_release(void **state)
{
    (void)state;
    bp_allocator *a = allocator_with(8, 3, 32 * 1024, 0 /* no trims */);
    bp_buf *x = bp_alloc(a, 32 * 1024), *y = bp_alloc(a, 32 * 1024), *z = bp_alloc(a, 32 * 1024);
    bp_buf *w = bp_alloc(a, 32 * 1024);
    bp__tcache_bin *bin = bin_of_32k(a);
    assert_null(bp__bin_hot(bin));
    assert_int_equal(bp_release(x), 1);
    assert_ptr_equal(bp__bin_hot(bin), x);
    assert_int_equal(bp__bin_count(bin), 0);
    assert_int_equal(stats(a).cached_entries, 1);
    assert_int_equal(stats(a).cached_bytes, 32 * 1024);
    uint64_t hits = stats(a).cache_hits;
    assert_ptr_equal(bp_alloc(a, 32 * 1024), x); /* the slot, counted as a hit */
    assert_null(bp__bin_hot(bin));
    assert_int_equal(stats(a).cache_hits, hits + 1);
    assert_int_equal(stats(a).cached_entries, 0);

    assert_int_equal(bp_release(x), 1);
    assert_int_equal(bp_release(y), 1); /* the slot is full: onto the stack */
    assert_ptr_equal(bp__bin_hot(bin), x);
    assert_int_equal(bp__bin_count(bin), 1);
    assert_int_equal(bp_release(z), 1);
    assert_int_equal(bp__bin_count(bin), 2);
    assert_int_equal(stats(a).cached_entries, 3);
    uint64_t to_arena = arena_stats(a).deallocations_normal + stats(a).arena_cached_entries;
    /* The bin is full (3): the older half of its stack (y) gives way, w goes on top. */
    assert_int_equal(bp_release(w), 1);
    assert_int_equal(stats(a).cached_entries, 3);
    assert_int_equal(arena_stats(a).deallocations_normal + stats(a).arena_cached_entries, to_arena + 1);
    assert_ptr_equal(bp__bin_hot(bin), x);
    assert_ptr_equal(bp_alloc(a, 32 * 1024), x); /* the slot first, then the stack, newest first */
    assert_ptr_equal(bp_alloc(a, 32 * 1024), w);
    assert_ptr_equal(bp_alloc(a, 32 * 1024), z);
    assert_int_equal(stats(a).cached_entries, 0);
    bp_release(x);
    bp_release(w);
    bp_release(z);
    assert_int_equal(bp_thread_cache_flush(a), 3);
    bp_allocator_stats s = stats(a);
    assert_int_equal(s.cached_entries, 0);
    assert_int_equal(s.active_buffers, 0);
    bp_allocator_destroy(a);
}

/* cache_class_max_bytes bounds a bin by bytes: 256 entries of 64 B, but of 8 KiB only
 * 64 KiB's worth, and never fewer than 8 entries; 0 lifts the bound. */
static size_t cached_after_burst(size_t max_bytes, size_t size)
{
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.background_purge = 0;
    cfg.arena_cache_size = 0; /* what a bin gives back goes to the chunks */
    cfg.cache_class_max_bytes = max_bytes;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    bp_buf *bufs[300];
    for (int i = 0; i < 300; i++) bufs[i] = bp_alloc(a, size);
    for (int i = 0; i < 300; i++) assert_int_equal(bp_release(bufs[i]), 1);
    bp_allocator_stats s = stats(a);
    assert_int_equal(s.cached_bytes, s.cached_entries * size);
    assert_int_equal(s.active_buffers, 0);
    bp_allocator_destroy(a);
    return s.cached_entries;
}

static void test_bins_are_bounded_by_bytes(void **state)
{
    (void)state;
    /* A bin that fills gives its older half back, so a burst leaves between half and all
     * of the capacity; the capacity itself is what a burst of exactly its size leaves. */
    size_t n64 = cached_after_burst(64 * 1024, 64), n8k = cached_after_burst(64 * 1024, 8192);
    size_t n28k = cached_after_burst(64 * 1024, 28 * 1024), nfree = cached_after_burst(0, 8192);
    assert_true(n64 > 128 && n64 <= 256);  /* 256 x 64 B = 16 KiB: under the bound */
    assert_true(n8k > 4 && n8k <= 8);      /* 64 KiB / 8 KiB */
    assert_true(n28k > 4 && n28k <= 8);    /* 2 would fit: 8 at least */
    assert_true(nfree > 128 && nfree <= 256);
    size_t n8k_128k = cached_after_burst(128 * 1024, 8192);
    assert_true(n8k_128k > 8 && n8k_128k <= 16); /* 128 KiB / 8 KiB */
    /* The capacities themselves, from the defaults (1 MiB): min(entries, max(bytes / size, 8)). */
    bp_allocator *a = quiet_allocator(1);
    bp_config cfg;
    bp_config_init(&cfg);
    assert_int_equal(cfg.cache_class_max_bytes, 1024 * 1024);
    struct { size_t size; uint32_t capacity; } expect[] = {
        {64, 256}, {4096, 256}, {8192, 128}, {16384, 64}, {28 * 1024, 36}, {32 * 1024, 32}, {64 * 1024, 16}, {80 * 1024, 0}};
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++)
        assert_int_equal(bp__tcache_class_capacity(&a->sc, &cfg, bp__size_class_of(&a->sc, expect[i].size)),
                         expect[i].capacity);
    cfg.cache_class_max_bytes = 64 * 1024;
    assert_int_equal(bp__tcache_class_capacity(&a->sc, &cfg, bp__size_class_of(&a->sc, 28 * 1024)), 8);
    cfg.cache_class_max_bytes = 0;
    assert_int_equal(bp__tcache_class_capacity(&a->sc, &cfg, bp__size_class_of(&a->sc, 28 * 1024)), 256);
    bp_allocator_destroy(a);
}

/* A cached normal class's burst that overflows the thread's bin and the arena's cache:
 * the overflow is held in the arena's run cache (not coalesced into its chunk), and the
 * next burst's misses take those runs back, half a bin under one lock, instead of cutting
 * fresh ones. */
static void test_overflow_of_a_normal_class_is_held_for_the_next_burst(void **state)
{
    (void)state;
    enum { N = 40, SIZE = 64 * 1024 };
    bp_allocator *a = allocator_caching(256, 16, SIZE, 1u << 30, 0, 0); /* no arena cache */
    bp_buf *bufs[N];
    void *first[N];
    for (int i = 0; i < N; i++) {
        bufs[i] = bp_alloc(a, SIZE);
        assert_non_null(bufs[i]);
        first[i] = bp_data(bufs[i], 0);
    }
    bp_chunk_stats chunk;
    assert_int_equal(bp_arena_chunk_stats(a, 0, &chunk, 1, sizeof chunk), 1);
    size_t chunk_free = chunk.free_bytes;
    assert_int_equal(chunk_free, (4u << 20) - N * SIZE);
    for (int i = 0; i < N; i++) assert_int_equal(bp_release(bufs[i]), 1);
    bp_allocator_stats s = stats(a);
    bp_arena_stats as;
    assert_int_equal(bp_arena_get_stats(a, 0, &as, sizeof as), 0);
    assert_int_equal(s.cached_entries + as.cached_runs, N); /* every run kept: bin or held */
    assert_true(as.cached_runs >= N - 16);
    assert_int_equal(as.cached_run_bytes, as.cached_runs * SIZE);
    assert_int_equal(s.arena_cached_run_bytes, as.cached_runs * SIZE);
    assert_int_equal(s.active_bytes, 0);
    assert_int_equal(bp_arena_chunk_stats(a, 0, &chunk, 1, sizeof chunk), 1);
    assert_int_equal(chunk.free_bytes, chunk_free); /* nothing went back into the chunk */

    uint64_t before = arena_allocations(a);
    for (int i = 0; i < N; i++) {
        bufs[i] = bp_alloc(a, SIZE);
        assert_non_null(bufs[i]);
        bool reused = false;
        for (int k = 0; k < N; k++) reused |= bp_data(bufs[i], 0) == first[k];
        assert_true(reused);
        assert_int_equal(bp_set_u32(bufs[i], SIZE - 4, (uint32_t)i), 0);
    }
    assert_int_equal(bp_arena_chunk_stats(a, 0, &chunk, 1, sizeof chunk), 1);
    assert_int_equal(chunk.free_bytes, chunk_free); /* no run cut */
    assert_int_equal(bp_arena_get_stats(a, 0, &as, sizeof as), 0);
    assert_int_equal(as.cached_runs, 0);
    assert_int_equal(arena_allocations(a) - before, N - s.cached_entries); /* the held ones */
    assert_true(as.allocations_normal >= 2 * N - 16);
    for (int i = 0; i < N; i++) {
        uint32_t v = 0;
        assert_int_equal(bp_get_u32(bufs[i], SIZE - 4, &v), 0);
        assert_int_equal(v, (uint32_t)i);
        assert_int_equal(bp_release(bufs[i]), 1);
    }
    assert_true(bp__arena_check(&a->arenas[0]));
    bp_allocator_destroy(a);
}

/* The defaults (cache_class_max_bytes 1 MiB: bins may grow), one arena, no scheduled trim. */
static bp_allocator *growing_allocator(void)
{
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.background_purge = 0;
    cfg.cache_trim_interval = 0;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    return a;
}

static bp__tcache_bin *bin_of(bp_allocator *a, size_t size, unsigned *cls)
{
    *cls = bp__size_class_of(&a->sc, size);
    return &bp__thread_state_get(a)->tcache.head.bins[*cls];
}

static void burst(bp_allocator *a, bp_buf **bufs, int n, size_t size)
{
    for (int i = 0; i < n; i++) {
        bufs[i] = bp_alloc(a, size);
        assert_non_null(bufs[i]);
        assert_int_equal(bp_write_u32(bufs[i], (uint32_t)i), 0);
    }
    for (int i = 0; i < n; i++) {
        uint32_t v = 0;
        assert_int_equal(bp_read_u32(bufs[i], &v), 0);
        assert_int_equal(v, (uint32_t)i);
        assert_int_equal(bp_release(bufs[i]), 1);
    }
}

/* A burst larger than its bin that keeps coming back grows the bin (doubling, up to four
 * times the configured entries) until the burst fits; then a round takes nothing from the
 * arena. One burst alone does not grow it. */
static void test_a_bin_that_keeps_overflowing_grows(void **state)
{
    (void)state;
    enum { N = 600 };
    bp_allocator *a = growing_allocator();
    bp_buf *bufs[N];
    unsigned cls;
    burst(a, bufs, N, 64);
    bp__tcache_bin *bin = bin_of(a, 64, &cls);
    assert_int_equal(bin->capacity, 256); /* one overflow after a miss: not yet */
    burst(a, bufs, N, 64);
    assert_int_equal(bin->capacity, 512);
    burst(a, bufs, N, 64);
    burst(a, bufs, N, 64);
    assert_int_equal(bin->capacity, 1024);
    assert_int_equal(bin->limit, 1023);
    burst(a, bufs, N, 64);
    uint64_t before = arena_allocations(a);
    bp_allocator_stats s = stats(a);
    assert_true(s.cached_entries >= N && s.cached_entries <= 1024); /* the whole burst in the bin */
    assert_int_equal(s.arena_cached_entries, 0);
    burst(a, bufs, N, 64);
    assert_int_equal(arena_allocations(a), before);
    assert_int_equal(stats(a).cache_misses, s.cache_misses);
    /* Never past four times: bursts of 2000 leave at most 1024. */
    bp_buf *more[2000];
    for (int r = 0; r < 4; r++) burst(a, more, 2000, 64);
    assert_int_equal(bin->capacity, 1024);
    assert_true(stats(a).cached_entries <= 1024);
    assert_true(bp__arena_check(&a->arenas[0]));
    bp_allocator_destroy(a);
}

/* Growth stays within cache_class_max_bytes: 32 KiB is 512 entries of 64 B. */
static void test_a_bin_grows_within_its_byte_bound(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.background_purge = 0;
    cfg.cache_class_max_bytes = 32 * 1024;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    bp_buf *bufs[1000];
    for (int r = 0; r < 8; r++) burst(a, bufs, 1000, 64);
    unsigned cls;
    bp__tcache_bin *bin = bin_of(a, 64, &cls);
    assert_int_equal(bin->capacity, 512);
    assert_true(stats(a).cached_entries <= 512);
    /* 8 KiB buffers: 4 entries' worth, so at least 8, and never more. */
    for (int r = 0; r < 8; r++) burst(a, bufs, 100, 8192);
    assert_int_equal(bin_of(a, 8192, &cls)->capacity, 8);
    bp_allocator_destroy(a);
}

/* A grown bin that serves less than half its capacity between two trims halves, back to
 * its configured size, giving back what no longer fits. */
static void test_a_grown_bin_shrinks_when_idle(void **state)
{
    (void)state;
    enum { N = 600 };
    bp_allocator *a = growing_allocator();
    bp_buf *bufs[N];
    for (int r = 0; r < 5; r++) burst(a, bufs, N, 64);
    unsigned cls;
    bp__tcache_bin *bin = bin_of(a, 64, &cls);
    assert_int_equal(bin->capacity, 1024);
    assert_true(bp_thread_cache_trim(a) >= 0); /* busy since the last trim: stays */
    assert_int_equal(bin->capacity, 1024);
    assert_true(stats(a).cached_entries >= N);
    assert_true(bp_thread_cache_trim(a) >= 0); /* nothing asked for: all back, and halves */
    assert_int_equal(bin->capacity, 512);
    assert_int_equal(stats(a).cached_entries, 0);
    assert_true(bp_thread_cache_trim(a) >= 0);
    assert_int_equal(bin->capacity, 256);
    assert_true(bp_thread_cache_trim(a) >= 0);
    assert_int_equal(bin->capacity, 256); /* not below the configured size */
    assert_int_equal(bin->limit, 255);
    /* It still works, and grows again. */
    for (int r = 0; r < 5; r++) burst(a, bufs, N, 64);
    assert_int_equal(bin->capacity, 1024);
    /* A flush returns it to its configured size too. */
    assert_true(bp_thread_cache_flush(a) >= N); /* what it gave back */
    assert_int_equal(bp__thread_state_get(a)->tcache.head.bins[cls].capacity, 256);
    burst(a, bufs, N, 64);
    assert_true(bp__arena_check(&a->arenas[0]));
    bp_allocator_destroy(a);
}

/* A trim gives what nobody asked for straight back to the chunks: nothing is held. */
static void test_trimmed_normal_entries_are_not_held(void **state)
{
    (void)state;
    enum { N = 12, SIZE = 64 * 1024 };
    bp_allocator *a = allocator_caching(256, 16, SIZE, 1u << 30, 0, 0);
    bp_buf *bufs[N];
    for (int i = 0; i < N; i++) bufs[i] = bp_alloc(a, SIZE);
    for (int i = 0; i < N; i++) assert_int_equal(bp_release(bufs[i]), 1);
    assert_int_equal(stats(a).cached_entries, N); /* within the bin */
    bp_thread_cache_flush(a);
    bp_arena_stats as;
    assert_int_equal(bp_arena_get_stats(a, 0, &as, sizeof as), 0);
    assert_int_equal(as.cached_runs, 0);
    assert_int_equal(stats(a).cached_entries, 0);
    assert_true(bp__arena_check(&a->arenas[0]));
    bp_allocator_destroy(a);
}

/* Capacity 1 is the slot alone; capacity 0 (the small classes here) caches nothing, though
 * the class has a bin: its releases get no fast path and fill no slot. */
static void test_a_bin_of_one_is_its_slot(void **state)
{
    (void)state;
    bp_allocator *a = allocator_with(0, 1, 32 * 1024, 0);
    bp_buf *x = bp_alloc(a, 32 * 1024), *y = bp_alloc(a, 32 * 1024);
    bp_buf *small = bp_alloc(a, 64);
    assert_int_equal(bp_release(x), 1);
    assert_int_equal(bp_release(y), 1);
    assert_int_equal(bp_release(small), 1);
    bp__tcache_bin *bin = bin_of_32k(a);
    assert_ptr_equal(bp__bin_hot(bin), x);
    assert_int_equal(bp__bin_count(bin), 0);
    bp_allocator_stats s = stats(a);
    assert_int_equal(s.cached_entries, 1);
    assert_int_equal(s.active_buffers, 0);
    assert_int_equal(arena_stats(a).deallocations_small, 1);
    assert_int_equal(bp_thread_cache_flush(a), 1);
    assert_int_equal(arena_stats(a).active_bytes, 0);
    bp_allocator_destroy(a);
}

/* A trim gives the slot back only when nothing in the bin was asked for since the last. */
static void test_trim_keeps_a_used_slot(void **state)
{
    (void)state;
    bp_allocator *a = allocator_with(8, 4, 32 * 1024, 0 /* only on demand */);
    bp_buf *x = bp_alloc(a, 32 * 1024);
    bp_release(x);
    assert_int_equal(bp_thread_cache_trim(a), 1); /* not asked for: it goes */
    assert_int_equal(stats(a).cached_entries, 0);
    x = bp_alloc(a, 32 * 1024);
    bp_release(x);
    assert_int_equal(bp_thread_cache_trim(a), 1);
    x = bp_alloc(a, 32 * 1024); /* a miss */
    bp_release(x);
    bp_release(bp_alloc(a, 32 * 1024)); /* a hit on the slot */
    assert_int_equal(bp_thread_cache_trim(a), 0); /* used: it stays */
    assert_ptr_equal(bp__bin_hot(bin_of_32k(a)), x);
    assert_int_equal(bp_thread_cache_trim(a), 1); /* not since: it goes */
    assert_null(bp__bin_hot(bin_of_32k(a)));
    assert_int_equal(arena_stats(a).active_bytes, 0);
    bp_allocator_destroy(a);
}

/* Normal classes move one region at a time, which keeps the counts easy to follow. */
static void test_trim_returns_unused_entries(void **state)
{
    (void)state;
    const size_t size = 32 * 1024;
    bp_allocator *a = allocator_with(256, 64, 32 * 1024, 0 /* only on demand */);
    bp_buf *bufs[10];
    for (int i = 0; i < 10; i++) bufs[i] = bp_alloc(a, size);
    for (int i = 0; i < 10; i++) bp_release(bufs[i]);
    assert_int_equal(stats(a).cached_entries, 10);
    assert_int_equal(bp_thread_cache_trim(a), 10); /* none asked for since: all go */
    assert_int_equal(stats(a).cached_entries, 0);

    for (int i = 0; i < 10; i++) bufs[i] = bp_alloc(a, size);
    for (int i = 0; i < 10; i++) bp_release(bufs[i]);
    assert_int_equal(bp_thread_cache_trim(a), 10);
    /* Cache 10, use 4 of them, trim: the 6 not asked for go back. */
    for (int i = 0; i < 10; i++) bufs[i] = bp_alloc(a, size);
    for (int i = 0; i < 10; i++) bp_release(bufs[i]);
    for (int i = 0; i < 4; i++) bufs[i] = bp_alloc(a, size);
    for (int i = 0; i < 4; i++) bp_release(bufs[i]);
    assert_int_equal(bp_thread_cache_trim(a), 6);
    assert_int_equal(stats(a).cached_entries, 4);
    assert_int_equal(stats(a).cache_trims, 3);
    assert_int_equal(bp_thread_cache_flush(a), 4);
    bp_arena_stats as;
    bp_arena_get_stats(a, 0, &as, sizeof as);
    assert_int_equal(as.active_bytes, 0);
    bp_allocator_destroy(a);
}

static void test_trim_runs_on_schedule(void **state)
{
    (void)state;
    bp_allocator *a = allocator_with(0 /* small classes not cached */, 64, 32 * 1024, 100);
    bp_buf *bufs[50];
    for (int i = 0; i < 50; i++) bufs[i] = bp_alloc(a, 32 * 1024);
    for (int i = 0; i < 50; i++) bp_release(bufs[i]);
    assert_int_equal(stats(a).cached_entries, 50);
    /* 50 more allocations of a cacheable size reach the 100th: the 32 KiB bin was not used
     * since the start, so all of it goes. */
    for (int i = 0; i < 49; i++) bp_release(bp_alloc(a, 16));
    assert_int_equal(stats(a).cache_trims, 0);
    bp_release(bp_alloc(a, 16));
    bp_allocator_stats s = stats(a);
    assert_int_equal(s.cache_trims, 1);
    assert_int_equal(s.cached_entries, 0);
    bp_allocator_destroy(a);
}

/* Every allocation counts toward the schedule, cached class or not: a thread allocating only
 * sizes no cache keeps still drives its arena's checks, which give back what the arena's
 * cache held idle from one check to the next. */
static void test_uncached_allocations_count_toward_the_trim(void **state)
{
    (void)state;
    bp_allocator *a = allocator_with(256, 64, 32 * 1024, 100);
    bp_buf *burst[300];
    for (int i = 0; i < 300; i++) burst[i] = bp_alloc(a, 64);
    for (int i = 0; i < 300; i++) bp_release(burst[i]); /* what the bin cannot hold waits in the arena's */
    uint64_t trims = stats(a).cache_trims;
    size_t waiting = stats(a).arena_cached_entries;
    assert_true(waiting >= 300 - 256);
    int n = 0;
    while (stats(a).cache_trims == trims) { /* up to the first check */
        bp_release(bp_alloc(a, 64 * 1024));
        assert_true(++n <= 100);
    }
    assert_int_equal(stats(a).arena_cached_entries, waiting); /* the first check: counted from now */
    for (int i = 0; i < 100; i++) bp_release(bp_alloc(a, 64 * 1024));
    assert_int_equal(stats(a).cache_trims, trims + 2);
    assert_int_equal(stats(a).arena_cached_entries, 0); /* idle a whole interval: given back */
    bp_allocator_destroy(a);
}

static void *use_a_spent_cache(void *arg)
{
    bp_allocator *a = arg;
    uintptr_t failures = 0;
    for (int round = 0; round < 3; round++) {
        bp_buf *small = bp_alloc(a, 100), *normal = bp_alloc(a, 20000), *big = bp_alloc(a, 64 * 1024);
        bp_buf *viewed = bp_alloc(a, 256);
        bp_buf *slice = bp_slice(viewed, 0, 16, NULL); /* its root's tag now matches nothing */
        bp_buf *bufs[4] = {small, normal, big, viewed};
        for (int i = 0; i < 4; i++) failures += bp_write_u32(bufs[i], 0xc0ffee00u + (uint32_t)i) != 0;
        for (int i = 0; i < 4; i++) {
            uint32_t v = 0;
            failures += bp_read_u32(bufs[i], &v) != 0 || v != 0xc0ffee00u + (uint32_t)i;
        }
        failures += slice == NULL;
        for (int i = 0; i < 4; i++) failures += bp_release(bufs[i]) != 1;
    }
    return (void *)failures;
}

/* Once 2^24 - 2 bindings have used up the tag ids, a thread's cache gets the spent base: no
 * tag - not even the match-nothing one, whatever its class byte - may match it, so every
 * release takes the slow path and is right (cached classes, uncached sizes, a root with
 * views), and the live counts stay exact. */
static void test_a_spent_cache_matches_no_tag(void **state)
{
    (void)state;
    bp_allocator *a = quiet_allocator(1);
    bp__tcache_set_next_tag_id(0xffffff); /* as if 2^24 - 2 caches had been made */
    uintptr_t failures = (uintptr_t)run_on_thread(use_a_spent_cache, a);
    bp__tcache_set_next_tag_id(1000); /* a fresh id for later caches (tests, this process) */
    assert_int_equal(failures, 0);
    bp_allocator_stats s = stats(a);
    assert_int_equal(s.active_buffers, 0);
    assert_int_equal(s.active_bytes, 0);
    assert_true(bp__arena_check(&a->arenas[0]));
    bp_allocator_destroy(a);
}

static void test_small_miss_refills_a_batch(void **state)
{
    (void)state;
    bp_allocator *a = quiet_allocator(1);
    /* 64 B: half a bin (128) per refill; the 64 KiB bound (1024) does not bite. */
    bp_buf *bufs[129];
    bufs[0] = bp_alloc(a, 64);
    assert_int_equal(arena_allocations(a), 128);
    assert_int_equal(stats(a).cached_entries, 127);
    for (int i = 1; i < 128; i++) bufs[i] = bp_alloc(a, 64);
    assert_int_equal(arena_allocations(a), 128); /* all hits */
    for (int i = 1; i < 128; i++) /* handed out lowest address first */
        assert_ptr_equal(bp_data(bufs[i], 0), (uint8_t *)bp_data(bufs[0], 0) + 64 * i);
    bufs[128] = bp_alloc(a, 64);
    assert_int_equal(arena_allocations(a), 256);
    bp_allocator_stats s = stats(a);
    assert_int_equal(s.cache_misses, 2);
    assert_int_equal(s.cache_hits, 127);
    assert_int_equal(s.active_bytes, 129 * 64);
    for (int i = 0; i < 129; i++) bp_release(bufs[i]);
    assert_int_equal(stats(a).cached_entries, 256); /* a full bin */

    /* 16 KiB: the 64 KiB bound allows 4 per refill. */
    bp_buf *big = bp_alloc(a, 16 * 1024);
    assert_int_equal(arena_allocations(a), 256 + 4);
    bp_release(big);
    assert_int_equal(bp_thread_cache_flush(a), 256 + 4);
    bp_arena_stats as;
    bp_arena_get_stats(a, 0, &as, sizeof as);
    assert_int_equal(as.active_bytes, 0);
    assert_int_equal(as.active_small, 0);
    bp_allocator_destroy(a);
}

/* A small class whose trims find most of a refill unused takes half as many at its next
 * misses, down to one; one whose bin runs dry twice between trims doubles, up to where it
 * started. (Many small classes each asked for a few times between trims otherwise take a
 * batch each and give nearly all of it back at every trim.) */
static uint64_t refill_taken(bp_allocator *a, size_t size)
{
    uint64_t before = arena_allocations(a);
    bp_release(bp_alloc(a, size)); /* a miss: the bin was emptied by the last trim */
    return arena_allocations(a) - before;
}

static void test_small_refills_follow_use(void **state)
{
    (void)state;
    bp_allocator *a = allocator_with(256, 64, 32 * 1024, 0 /* trims on demand only */);
    const uint64_t expect[] = {128, 64, 32, 16, 8, 4, 2, 1, 1};
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        assert_int_equal(refill_taken(a, 64), expect[i]);
        assert_int_equal(bp_thread_cache_trim(a), (int)expect[i]); /* asked for once: unused */
        assert_int_equal(stats(a).cached_entries, 0);
    }
    /* Another class is not affected. */
    assert_int_equal(refill_taken(a, 128), 128);
    assert_int_equal(bp_thread_cache_trim(a), 128);

    /* A burst: each time the bin runs dry again before the next trim, the refill doubles,
     * up to where it started - 1 + 2 + ... + 128 regions for 200 buffers. */
    unsigned cls;
    bin_of(a, 64, &cls);
    const bp__tcache *tc = &bp__thread_state_get(a)->tcache;
    assert_int_equal(tc->refill[cls], 1);
    enum { BURST = 200 };
    bp_buf *bufs[BURST];
    assert_true(bp_thread_cache_flush(a) >= 0); /* an empty bin */
    uint64_t before = arena_allocations(a);
    for (int k = 0; k < BURST; k++) bufs[k] = bp_alloc(a, 64);
    assert_int_equal(arena_allocations(a) - before, 255);
    assert_int_equal(tc->refill[cls], 128);
    for (int k = 0; k < BURST; k++) bp_release(bufs[k]);
    /* 255 held, 192 of them asked for (the 8 misses were not hits): 63 unused is less
     * than half a refill, so it stays. */
    assert_int_equal(bp_thread_cache_trim(a), 63);
    assert_int_equal(tc->refill[cls], 128);
    assert_true(bp_thread_cache_flush(a) >= 0);
    assert_int_equal(refill_taken(a, 64), 128);
    assert_int_equal(bp_thread_cache_flush(a), 128);
    assert_int_equal(arena_stats(a).active_bytes, 0);
    assert_true(bp__arena_check(&a->arenas[0]));
    bp_allocator_destroy(a);
}

static void *cache_and_exit(void *arg)
{
    bp_allocator *a = arg;
    bp_buf *bufs[64];
    for (int i = 0; i < 64; i++) bufs[i] = bp_alloc(a, 32 * 1024);
    for (int i = 0; i < 64; i++) bp_release(bufs[i]);
    bp_allocator_stats s;
    bp_allocator_get_stats(a, &s, sizeof s);
    return (void *)(uintptr_t)s.cached_entries;
}

static void test_thread_exit_flushes_its_cache(void **state)
{
    (void)state;
    bp_allocator *a = quiet_allocator(1);
    /* cached before it exited: as many as 1 MiB of the class hold */
    assert_int_equal((uintptr_t)run_on_thread(cache_and_exit, a), 32);
    bp_allocator_stats s = stats(a);
    assert_int_equal(s.cached_entries, 0);
    assert_int_equal(s.thread_caches, 0);
    assert_int_equal(s.active_bytes, 0);
    assert_int_equal(s.cache_misses, 64); /* folded in from the exited thread */
    bp_arena_stats as;
    bp_arena_get_stats(a, 0, &as, sizeof as);
    assert_int_equal(as.active_bytes, 0);
    assert_int_equal(as.threads, 0);
    bp_allocator_destroy(a);
}

static void test_destroy_with_cached_regions(void **state)
{
    (void)state;
    bp_allocator *a = quiet_allocator(1);
    for (int i = 0; i < 100; i++) bp_release(bp_alloc(a, (size_t)i * 300));
    assert_true(stats(a).cached_entries > 0);
    bp_allocator_destroy(a); /* no leak under ASan, no crash */
}

static void test_cache_api_errors_and_unpooled(void **state)
{
    (void)state;
    misuse_capture_start();
    assert_int_equal(bp_thread_cache_trim(NULL), BP_EINVAL);
    assert_int_equal(bp_thread_cache_flush(NULL), BP_EINVAL);
    misuse_capture_stop();
    bp_allocator *u = bp_allocator_new_unpooled(NULL);
    bp_release(bp_alloc(u, 100));
    assert_int_equal(bp_thread_cache_trim(u), 0);
    assert_int_equal(bp_thread_cache_flush(u), 0);
    assert_int_equal(stats(u).thread_caches, 0);
    bp_allocator_destroy(u);
}

/* The thread's cached allocator and state sit mid-line on every thread (16-31 of a 64-byte
 * line), away from the bytes programs write most at the same page offsets (see
 * bp__tls_cache), and the cache still works there. */
static void *tls_cache_placement(void *arg)
{
    bp_allocator *a = arg;
    /* Aligned by its type, not by where this test's small TLS block happens to land. */
    assert_int_equal(_Alignof(bp__tls_cache), 64);
    assert_int_equal((uintptr_t)&bp__tls_last.allocator_id % 64, 16);
    assert_int_equal((uintptr_t)&bp__tls_last.cache % 64, 24);
    bp_buf *b = bp_alloc(a, 256);
    assert_non_null(b);
    assert_int_equal(bp__tls_last.allocator_id, a->head.id);
    assert_ptr_equal(bp__tls_last.cache, &bp__thread_state_get(a)->tcache.head);
    assert_int_equal(bp_release(b), 1);
    return NULL;
}

static void test_thread_cache_pointer_sits_mid_line(void **state)
{
    (void)state;
    bp_allocator *a = bp_allocator_new(NULL, NULL);
    assert_non_null(a);
    tls_cache_placement(a);
    run_on_thread(tls_cache_placement, a);
    bp_allocator_destroy(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_second_32k_allocation_hits_the_cache),
        cmocka_unit_test(test_above_max_cached_size_is_not_cached),
        cmocka_unit_test(test_caches_off_every_allocation_reaches_the_arena),
        cmocka_unit_test(test_bins_are_bounded),
        cmocka_unit_test(test_bursts_move_through_the_arena_cache),
        cmocka_unit_test(test_a_burst_of_thousands_stays_out_of_the_chunks),
        cmocka_unit_test(test_threads_of_an_arena_share_its_cache),
        cmocka_unit_test(test_last_thread_of_an_arena_empties_its_cache),
        cmocka_unit_test(test_idle_arena_cache_is_trimmed_and_purged),
        cmocka_unit_test(test_active_buffers_through_every_path),
        cmocka_unit_test(test_the_slot_takes_the_last_release),
        cmocka_unit_test(test_a_bin_of_one_is_its_slot),
        cmocka_unit_test(test_bins_are_bounded_by_bytes),
        cmocka_unit_test(test_overflow_of_a_normal_class_is_held_for_the_next_burst),
        cmocka_unit_test(test_trimmed_normal_entries_are_not_held),
        cmocka_unit_test(test_a_bin_that_keeps_overflowing_grows),
        cmocka_unit_test(test_a_bin_grows_within_its_byte_bound),
        cmocka_unit_test(test_a_grown_bin_shrinks_when_idle),
        cmocka_unit_test(test_trim_keeps_a_used_slot),
        cmocka_unit_test(test_trim_returns_unused_entries),
        cmocka_unit_test(test_trim_runs_on_schedule),
        cmocka_unit_test(test_uncached_allocations_count_toward_the_trim),
        cmocka_unit_test(test_a_spent_cache_matches_no_tag),
        cmocka_unit_test(test_small_miss_refills_a_batch),
        cmocka_unit_test(test_small_refills_follow_use),
        cmocka_unit_test(test_thread_exit_flushes_its_cache),
        cmocka_unit_test(test_destroy_with_cached_regions),
        cmocka_unit_test(test_cache_api_errors_and_unpooled),
        cmocka_unit_test(test_thread_cache_pointer_sits_mid_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
