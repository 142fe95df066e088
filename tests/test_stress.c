/* SPDX-License-Identifier: MIT */
/*
 * Stress, in the style of mimalloc's test-stress: THREADS threads churn buffers of random
 * sizes (small, normal and now and then huge), keep some, hand others to whichever thread
 * picks them up from a shared transfer array, and check every buffer's contents when they
 * release it. ITER times the threads are torn down and started again. At the end, with
 * every thread gone and every buffer released, the allocator must be idle.
 *
 *   test_stress [THREADS [SCALE [ITER [LEAK]]]]   defaults 4 50 4 simple; BP_TEST_SCALE=tsan
 *                                                divides SCALE by 25 (TSan's cost here is its
 *                                                shadow memory's page faults, not the checks),
 *                                                and so does Valgrind
 *
 * LEAK is the leak detection level (disabled, simple, advanced, paranoid): simple and
 * advanced track 1 buffer in 64, so tracked buffers are handed over and released remotely
 * like the rest; paranoid tracks all and holds released objects back.
 */
#include "test_util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#define TRANSFERS 1000

static int threads = 4, scale = 50, iterations = 4;
static unsigned leak_level = BP_LEAK_SIMPLE;
static bp_allocator *alloc;
static _Atomic(bp_buf *) transfer[TRANSFERS];
static atomic_int corrupted;

static uint64_t cookie_of(size_t size) { return (uint64_t)size * 0x9E3779B97F4A7C15ull + 17; }

/* Mostly small, some normal, rarely huge (a mapping of its own). */
static size_t random_size(uint64_t *rng)
{
    uint64_t r = test_rand(rng) % 1000;
    if (r < 800) return 16 + test_rand(rng) % 1024; /* room for the cookie and the end mark */
    if (r < 995) return 1024 + test_rand(rng) % (256 * 1024);
    return ((size_t)4 << 20) + test_rand(rng) % (1 << 20);
}

/* Buffers are filled sparsely (every 97th byte; see sparse_stride), plus the last byte. */
static size_t fill_stride(size_t size) { return sparse_stride(size, 97); }

static bp_buf *make(uint64_t *rng)
{
    size_t size = random_size(rng);
    bp_buf *b = bp_alloc(alloc, size);
    if (b == NULL) return NULL;
    bp_write_u64(b, cookie_of(size));
    uint8_t *p = bp_data(b, 0);
    for (size_t i = 8; i < size; i += fill_stride(size)) p[i] = (uint8_t)(cookie_of(size) + i);
    p[size - 1] = (uint8_t)size;
    bp_set_writer_index(b, size);
    return b;
}

static void check_and_release(bp_buf *b)
{
    size_t size = bp_writer_index(b);
    uint64_t cookie = 0;
    const uint8_t *p = bp_data(b, 0);
    bool ok = bp_get_u64(b, 0, &cookie) == 0 && cookie == cookie_of(size) && p[size - 1] == (uint8_t)size;
    for (size_t i = 8; ok && i + 1 < size; i += fill_stride(size)) ok = p[i] == (uint8_t)(cookie_of(size) + i);
    if (!ok) atomic_fetch_add(&corrupted, 1);
    if (bp_release(b) != 1) atomic_fetch_add(&corrupted, 1);
}

static void *stress_thread(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg * 0x2545F4914F6CDD1Dull + 1;
    size_t keep_max = (size_t)scale * 10;
    bp_buf **kept = calloc(keep_max, sizeof *kept);
    size_t nkept = 0;
    for (long step = 0; step < (long)scale * 1000; step++) {
        uint64_t r = test_rand(&rng) % 100;
        if (r < 50 && nkept < keep_max) {
            bp_buf *b = make(&rng);
            if (b != NULL) kept[nkept++] = b;
        } else if (r < 80 && nkept > 0) {
            size_t i = test_rand(&rng) % nkept;
            check_and_release(kept[i]);
            kept[i] = kept[--nkept];
        } else {
            /* Swap a buffer of ours (or none) with whatever sits in a transfer slot. */
            bp_buf *mine = nkept > 0 && test_rand(&rng) % 2 ? kept[--nkept] : make(&rng);
            bp_buf *theirs = atomic_exchange(&transfer[test_rand(&rng) % TRANSFERS], mine);
            if (theirs != NULL) {
                if (nkept < keep_max && test_rand(&rng) % 2) kept[nkept++] = theirs;
                else check_and_release(theirs);
            }
        }
    }
    while (nkept > 0) check_and_release(kept[--nkept]);
    free(kept);
    return NULL;
}

static void test_stress(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 3;
    cfg.cache_trim_interval = 1000; /* trims during the run */
    cfg.chunk_decay_ms = 5;         /* chunks retained and unmapped during the run */
    cfg.leak_detection = leak_level; /* tracked buffers among the rest (see the top) */
    cfg.leak_sampling_interval = 64;
    alloc = bp_allocator_new(&cfg, NULL);
    assert_non_null(alloc);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    for (int iter = 0; iter < iterations; iter++) {
        for (int t = 0; t < threads; t++)
            pthread_create(&tids[t], NULL, stress_thread, (void *)(uintptr_t)(iter * threads + t + 1));
        for (int t = 0; t < threads; t++) pthread_join(tids[t], NULL);
        bp_allocator_stats s;
        bp_allocator_get_stats(alloc, &s, sizeof s);
        assert_int_equal(s.threads, 0);
        assert_int_equal(s.cached_entries, 0); /* exited threads flushed their caches */
        assert_int_equal(s.arena_cached_entries, 0); /* and the last of each arena its cache */
        assert_int_equal(s.arena_cached_runs, 0);    /* and its held-back runs */
    }
    for (int i = 0; i < TRANSFERS; i++) {
        bp_buf *b = atomic_exchange(&transfer[i], NULL);
        if (b != NULL) check_and_release(b);
    }
    assert_int_equal(atomic_load(&corrupted), 0);
    bp_thread_cache_flush(alloc);
    bp_allocator_stats s;
    bp_allocator_get_stats(alloc, &s, sizeof s);
    assert_int_equal(s.active_buffers, 0);
    assert_int_equal(s.active_bytes, 0);
    assert_int_equal(s.cached_entries, 0);
    assert_true(s.remote_releases > 0);
    for (unsigned i = 0; i < s.arenas; i++) {
        bp_arena_stats as;
        bp_arena_get_stats(alloc, i, &as, sizeof as);
        assert_int_equal(as.active_bytes, 0);
        assert_int_equal(as.active_small + as.active_normal + as.active_huge, 0);
    }
    printf("stress: %d threads x %d scale x %d iterations; %llu buffers, %llu released remotely\n",
           threads, scale, iterations, (unsigned long long)s.allocations,
           (unsigned long long)s.remote_releases);
    free(tids);
    assert_int_equal(bp_leak_report(alloc), 0); /* every tracked buffer was untracked */
    bp_allocator_destroy(alloc);
}

int main(int argc, char **argv)
{
    if (argc > 1) threads = atoi(argv[1]);
    if (argc > 2) scale = atoi(argv[2]);
    if (argc > 3) iterations = atoi(argv[3]);
    if (argc > 4) {
        static const char *const levels[] = {"disabled", "simple", "advanced", "paranoid"};
        leak_level = 4;
        for (unsigned i = 0; i < 4; i++)
            if (strcmp(argv[4], levels[i]) == 0) leak_level = i;
    }
    const char *env = getenv("BP_TEST_SCALE");
    if (RUNNING_ON_VALGRIND || (env != NULL && strcmp(env, "tsan") == 0)) scale = scale / 25 > 0 ? scale / 25 : 1;
    if (threads < 1 || scale < 1 || iterations < 1 || leak_level > BP_LEAK_PARANOID) {
        fprintf(stderr, "usage: test_stress [THREADS [SCALE [ITER [disabled|simple|advanced|paranoid]]]] "
                        "(numbers >= 1)\n");
        return 2;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_stress)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
