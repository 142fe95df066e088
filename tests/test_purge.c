/* SPDX-License-Identifier: MIT */
/*
 * Memory back to the OS: the background purge of a program that released everything and
 * makes no further call, and bp_allocator_purge with nothing live.
 */
#include "allocator.h"
#include "purger.h"
#include "test_util.h"

#include <pthread.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static bp_allocator *allocator_with(unsigned background_purge, unsigned decay_ms)
{
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.chunk_decay_ms = decay_ms;
    cfg.dirty_decay_ms = decay_ms;
    cfg.background_purge = background_purge;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    return a;
}

static bp_allocator_stats stats_of(bp_allocator *a)
{
    bp_allocator_stats s;
    assert_int_equal(bp_allocator_get_stats(a, &s, sizeof s), 0);
    return s;
}

/* Resident bytes of this process (/proc/self/statm). */
static size_t resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    unsigned long size, resident;
    assert_int_equal(fscanf(f, "%lu %lu", &size, &resident), 2);
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

static void sleep_ms(unsigned ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0) {}
}

enum { NBUFS = 600 };

/* Sizes from 64 B to 1 MiB, mostly above what thread caches keep, every byte written. */
static size_t fill(bp_allocator *a, bp_buf **bufs)
{
    static const size_t sizes[] = {64, 1000, 40 * 1024, 64 * 1024, 100 * 1024, 200 * 1024, 1024 * 1024};
    size_t total = 0;
    for (int i = 0; i < NBUFS; i++) {
        size_t n = sizes[i % 7];
        bufs[i] = bp_alloc_ex(a, n, n, NULL);
        assert_non_null(bufs[i]);
        assert_int_equal(bp_write_zero(bufs[i], n), 0);
        total += n;
    }
    return total;
}

/* Polls until the arenas hold no retained chunk, no dirty page and nothing in their caches,
 * for up to `ms`; returns the milliseconds it took, or -1. */
static long wait_until_purged(bp_allocator *a, unsigned ms)
{
    for (unsigned waited = 0; waited <= ms; waited += 20) {
        bp_allocator_stats s = stats_of(a);
        if (s.retained_chunks == 0 && s.dirty_bytes == 0 && s.arena_cached_bytes == 0 && s.arena_cached_run_bytes == 0)
            return (long)waited;
        sleep_ms(20);
    }
    return -1;
}

/* The goal: released, no further call (reading statistics aside), and within the
 * decay time plus a second the memory is back. */
static void test_background_purge_returns_memory_with_no_further_call(void **state)
{
    (void)state;
    bp_allocator *a = allocator_with(1, 200);
    bp_buf **bufs = calloc(NBUFS, sizeof *bufs);
    size_t before = resident_bytes();
    size_t live = fill(a, bufs);
    size_t peak = resident_bytes();
    if (!slowed_down()) assert_true(peak - before >= live / 2); /* the buffers' pages are resident */
    for (int i = 0; i < NBUFS; i++) assert_int_equal(bp_release(bufs[i]), 1);
    /* What may stay is the thread cache's (at most its bins' worth of 64 B, 1000 B and
     * 40 KiB buffers), a little metadata, and 10 % of the peak. */
    bp_allocator_stats s = stats_of(a);
    assert_true(s.cached_bytes <= 256 * (64 + 1024) + 64 * 40 * 1024);
    size_t allowed = (peak - before) / 10 + s.cached_bytes;
    unsigned waited = 0;
    /* Resident memory is the sanitizers' and Valgrind's too (shadow, redzones): there the
     * arenas' own account tells. */
    while (!slowed_down() && resident_bytes() - before > allowed && waited < 200 + 1000) {
        sleep_ms(20);
        waited += 20;
    }
    if (!slowed_down()) assert_true(resident_bytes() - before <= allowed);
    assert_true(wait_until_purged(a, slowed_down() ? 5000 : 200 + 1000 - waited) >= 0);
    assert_true(bp__purger_passes() > 0);
    free(bufs);
    bp_allocator_destroy(a);
}

/* Without it, the same program keeps the memory (the check above can fail). */
static void test_without_background_purge_memory_stays(void **state)
{
    (void)state;
    bp_allocator *a = allocator_with(0, 200);
    bp_buf **bufs = calloc(NBUFS, sizeof *bufs);
    fill(a, bufs);
    for (int i = 0; i < NBUFS; i++) assert_int_equal(bp_release(bufs[i]), 1);
    assert_int_equal(wait_until_purged(a, 600), -1);
    bp_allocator_stats s = stats_of(a);
    assert_true(s.dirty_bytes + s.retained_chunks * s.chunk_size + s.arena_cached_run_bytes > 0);
    assert_true(bp_allocator_purge(a) >= 0); /* the call does it at once */
    assert_true(wait_until_purged(a, 0) == 0);
    free(bufs);
    bp_allocator_destroy(a);
}

/* A busy arena is its threads' business: a background purge pass leaves alone an arena
 * that bp__arena_idle says was used since the previous pass (its purges come from the
 * allocations' clock). Asked here of an allocator the purge thread leaves out: the thread
 * is that function's one caller, and its pass between a release and the test's question
 * would take the news of the release first. */
static void test_background_purge_leaves_busy_arenas_alone(void **state)
{
    (void)state;
    bp_allocator *a = allocator_with(0, 40);
    bp__arena *arena = &a->arenas[0];
    uint64_t idle_ms;
    bp_release(bp_alloc(a, 128 * 1024)); /* above max_cached_size: through the arena */
    assert_false(bp__arena_idle(arena, &idle_ms)); /* it just released */
    assert_true(bp__arena_idle(arena, &idle_ms));  /* nothing since */
    bp_release(bp_alloc(a, 128 * 1024));
    assert_false(bp__arena_idle(arena, &idle_ms));
    assert_true(idle_ms == 0);
    bp_allocator_destroy(a);
}

static void *churn(void *arg)
{
    bp_allocator *a = arg;
    bp_buf *bufs[256];
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 256; i++) {
            size_t n = (size_t)16 << (i % 14); /* 16 B .. 128 KiB: small classes and runs */
            bufs[i] = bp_alloc_ex(a, n, n, NULL);
            assert_non_null(bufs[i]);
            bp_write_zero(bufs[i], n);
        }
        for (int i = 0; i < 256; i++) bp_release(bufs[i]);
    }
    return NULL;
}

/* 16 threads end with nothing live; one purge later no chunk stays mapped (each small
 * class's kept empty subpage used to pin one). */
static void test_purge_with_nothing_live_unmaps_the_chunks(void **state)
{
    (void)state;
    bp_allocator *a = quiet_allocator(4);
    pthread_t threads[16];
    for (int i = 0; i < 16; i++) assert_int_equal(pthread_create(&threads[i], NULL, churn, a), 0);
    for (int i = 0; i < 16; i++) pthread_join(threads[i], NULL);
    bp_allocator_stats s = stats_of(a);
    assert_int_equal(s.active_buffers, 0);
    assert_true(s.chunks > 0);
    assert_true(bp_allocator_purge(a) > 0);
    s = stats_of(a);
    assert_int_equal(s.chunks, 0);
    assert_int_equal(s.retained_chunks, 0);
    assert_int_equal(s.mapped_bytes, 0);
    assert_true(bp__arena_check(&a->arenas[0]));
    /* And the arenas work as before. */
    bp_buf *b = bp_alloc(a, 100);
    assert_non_null(b);
    assert_int_equal(bp_write_i32(b, 7), 0);
    bp_release(b);
    bp_allocator_destroy(a);
}

/* Objects no thread holds (all of a slab's on the allocator's spare list) go back to the
 * OS at a purge; a handle kept past release still reads as released (the pages read 0), and
 * what views and composites recorded of it never matches its next life (generations go on
 * above the old ones, not from 0). */
enum { OBJECTS = 640 };

static void test_purge_gives_free_objects_back(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.recycler_capacity = 0; /* released objects straight to the spare list */
    cfg.background_purge = 0;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    int err = 0;
    bp_buf *holder = bp_composite(a, 16, &err); /* the first slab's first object */
    assert_non_null(holder);
    bp_buf **bufs = calloc(OBJECTS, sizeof *bufs);
    assert_non_null(bufs);
    for (int i = 0; i < OBJECTS; i++) assert_int_equal(bp_write_u32(bufs[i] = bp_alloc(a, 64), (uint32_t)i), 0);
    bp_buf *victim = bufs[OBJECTS / 2]; /* in a slab of its own, away from the holder's */
    assert_int_equal(bp_retain(victim), 0);
    assert_int_equal(bp_composite_add(holder, victim, 1), 0);
    size_t at_peak = stats_of(a).object_bytes;
    for (int i = 0; i < OBJECTS; i++) assert_int_equal(bp_release(bufs[i]), i != OBJECTS / 2);
    misuse_capture_start();
    assert_int_equal(bp_release(victim), 1); /* behind the holder's back */
    assert_true(bp_thread_cache_flush(a) >= 0);
    assert_true(bp_allocator_purge(a) >= 0);
    size_t after = stats_of(a).object_bytes;
    /* 641 objects filled 11 slabs; all but the holder's are free */
    assert_int_equal(at_peak - after, 10 * BP__SLAB_BUFS * sizeof(bp_buf));
    /* The victim's object is on a page the OS took back. */
    unsigned char resident = 1;
    void *page = (void *)((uintptr_t)victim & ~(uintptr_t)4095);
    assert_int_equal(mincore(page, 4096, &resident), 0);
    assert_int_equal(resident & 1, 0);
    /* A stale handle: released, nothing written, nothing read through it. */
    assert_int_equal(bp_refcnt(victim), 0);
    assert_null(bp_buf_allocator(victim));
    assert_int_equal(bp_capacity(victim), 0);
    char line[64];
    bp_describe(victim, line, sizeof line);
    assert_string_equal(line, "PooledByteBuf(freed)");
    assert_int_equal(bp_write_u32(victim, 1), BP_EFREED);
    assert_int_equal(bp_release(victim), BP_EFREED);
    uint8_t out[4];
    assert_int_equal(bp_get_bytes(holder, 0, out, 4), BP_EFREED);
    /* The objects come back into use, each new buffer recorded (a retained slice) as the
     * victim was: the holder's record must not match the buffer that got its object. */
    bp_buf **slices = calloc(OBJECTS, sizeof *slices);
    assert_non_null(slices);
    int reused = 0;
    for (int i = 0; i < OBJECTS; i++) {
        assert_non_null(bufs[i] = bp_alloc(a, 64));
        assert_int_equal(bp_write_u32(bufs[i], 0x4e4e4e4e), 0);
        reused += bufs[i] == victim;
    }
    assert_int_equal(reused, 1);
    for (int i = 0; i < OBJECTS; i++) assert_non_null(slices[i] = bp_retained_slice(bufs[i], 0, 4, &err));
    assert_true(stats_of(a).object_bytes > after);
    int misuses = last_misuse.count;
    assert_int_equal(bp_get_bytes(holder, 0, out, 4), BP_EFREED);
    assert_int_equal(bp_refcnt(victim), 2); /* the new owner's and its slice's */
    assert_int_equal(bp_release(holder), 1);
    assert_int_equal(bp_refcnt(victim), 2); /* the holder's release left it alone */
    assert_true(last_misuse.count > misuses);
    misuse_capture_stop();
    for (int i = 0; i < OBJECTS; i++) {
        uint32_t v = 0;
        assert_int_equal(bp_get_u32(slices[i], 0, &v), 0);
        assert_int_equal(v, 0x4e4e4e4e);
        assert_int_equal(bp_release(slices[i]), 1);
        assert_int_equal(bp_release(bufs[i]), 1);
    }
    assert_int_equal(stats_of(a).active_buffers, 0);
    free(slices);
    free(bufs);
    bp_allocator_destroy(a);
}

/* A thread's recycler keeps up to recycler_capacity released objects for itself, out of a
 * purge's reach; bp_thread_cache_flush hands them to the allocator, so a thread going idle
 * can let them go too. */
static void test_flush_lets_the_recyclers_objects_go(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.recycler_capacity = 4096; /* the default: every object below fits */
    cfg.background_purge = 0;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    bp_buf **bufs = calloc(OBJECTS, sizeof *bufs);
    assert_non_null(bufs);
    size_t before = stats_of(a).object_bytes;
    for (int i = 0; i < OBJECTS; i++) assert_non_null(bufs[i] = bp_alloc(a, 64));
    size_t at_peak = stats_of(a).object_bytes;
    assert_true(at_peak >= before + OBJECTS * sizeof(bp_buf));
    for (int i = 0; i < OBJECTS; i++) assert_int_equal(bp_release(bufs[i]), 1);
    assert_true(bp_allocator_purge(a) >= 0);
    size_t purged = stats_of(a).object_bytes;
    assert_true(bp_thread_cache_flush(a) >= 0);
    assert_true(bp_allocator_purge(a) >= 0);
    size_t flushed = stats_of(a).object_bytes;
    /* The recycler's objects were out of the first purge's reach; all 10 slabs went now. */
    assert_true(purged > flushed);
    assert_int_equal(at_peak - flushed, 10 * BP__SLAB_BUFS * sizeof(bp_buf));
    for (int i = 0; i < OBJECTS; i++) {
        assert_non_null(bufs[i] = bp_alloc(a, 64));
        assert_int_equal(bp_write_u32(bufs[i], (uint32_t)i), 0);
    }
    for (int i = 0; i < OBJECTS; i++) {
        uint32_t v = 0;
        assert_int_equal(bp_get_u32(bufs[i], 0, &v), 0);
        assert_int_equal(v, (uint32_t)i);
        assert_int_equal(bp_release(bufs[i]), 1);
    }
    free(bufs);
    bp_allocator_destroy(a);
}

/* Purges give slabs back while other threads take objects from the spare list and put
 * them back (recycler_capacity 0: every allocation and release goes through it): what the
 * workers write, they read back; after every purge the pool is consistent; at the end every
 * object is free and the slabs go back. */
typedef struct churner {
    bp_allocator *a;
    int id, rounds;
    long bad;
} churner;

static void *churn_objects(void *arg)
{
    churner *c = arg;
    bp_buf *bufs[100], *slices[100];
    for (int r = 0; r < c->rounds; r++) {
        for (int i = 0; i < 100; i++) {
            bufs[i] = bp_alloc(c->a, 64);
            if (bufs[i] == NULL || bp_write_u32(bufs[i], (uint32_t)(c->id << 24 | r << 8 | i)) != 0) c->bad++;
            slices[i] = bp_retained_slice(bufs[i], 0, 4, NULL);
        }
        for (int i = 0; i < 100; i++) {
            uint32_t v = 0;
            if (bp_get_u32(slices[i], 0, &v) != 0 || v != (uint32_t)(c->id << 24 | r << 8 | i)) c->bad++;
            if (bp_release(bufs[i]) != 0 || bp_release(slices[i]) != 1) c->bad++;
        }
    }
    return NULL;
}

static void test_objects_given_back_while_others_churn(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.recycler_capacity = 0;
    cfg.background_purge = 0;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    enum { MANY = 64 * 50 };
    bp_buf **bufs = calloc(MANY, sizeof *bufs);
    assert_non_null(bufs);
    for (int i = 0; i < MANY; i++) assert_non_null(bufs[i] = bp_alloc(a, 64));
    for (int i = 0; i < MANY; i++) assert_int_equal(bp_release(bufs[i]), 1);
    assert_true(bp_thread_cache_flush(a) >= 0);
    churner c[2];
    pthread_t t[2];
    int rounds = slowed_down() ? 100 : 2000;
    for (int k = 0; k < 2; k++) {
        c[k] = (churner){a, k + 1, rounds, 0};
        assert_int_equal(pthread_create(&t[k], NULL, churn_objects, &c[k]), 0);
    }
    for (int p = 0; p < (slowed_down() ? 20 : 200); p++) {
        assert_true(bp_allocator_purge(a) >= 0);
        assert_true(bp__object_pool_check(&a->objects));
    }
    for (int k = 0; k < 2; k++) {
        assert_int_equal(pthread_join(t[k], NULL), 0);
        assert_int_equal(c[k].bad, 0);
    }
    assert_true(bp_thread_cache_flush(a) >= 0);
    assert_true(bp_allocator_purge(a) >= 0);
    assert_true(bp__object_pool_check(&a->objects));
    bp_allocator_stats s = stats_of(a);
    assert_int_equal(s.active_buffers, 0);
    assert_int_equal(s.active_views, 0);
    pthread_mutex_lock(&a->lock);
    size_t resident = a->objects.nslabs - a->objects.given_back, spare = a->objects.nspare;
    pthread_mutex_unlock(&a->lock);
    assert_int_equal(spare, 0); /* every free object's slab went back */
    assert_int_equal(resident, 0);
    free(bufs);
    bp_allocator_destroy(a);
}

/* A fork while another thread's bp_thread_cache_flush hands its recycler's objects to the
 * allocator: the child must find each object once (on the spare list, or still the
 * vanished thread's), never both - else its allocations get one object twice. The flusher
 * pauses inside the hand-over (test hook) until the fork is done, or 200 ms. */
static pthread_mutex_t pause_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pause_cond = PTHREAD_COND_INITIALIZER;
static int pause_stage; /* 1: the flusher is in the hand-over; 2: the fork is done */
static pid_t pause_parent;

/* With pause_lock held: waits until pause_stage is `stage`, or `ms` have passed; returns
 * the stage then. */
static int wait_for_stage(int stage, long ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    while (pause_stage != stage && pthread_cond_timedwait(&pause_cond, &pause_lock, &until) == 0) {}
    return pause_stage;
}

static void pause_in_hand_over(void)
{
    if (getpid() != pause_parent) return; /* the child's own reap of the vanished state */
    pthread_mutex_lock(&pause_lock);
    pause_stage = 1;
    pthread_cond_broadcast(&pause_cond);
    wait_for_stage(2, 200);
    pthread_mutex_unlock(&pause_lock);
}

static void *flush_with_objects(void *arg)
{
    bp_allocator *a = arg;
    bp_buf *bufs[300];
    for (int i = 0; i < 300; i++) bufs[i] = bp_alloc(a, 64);
    for (int i = 0; i < 300; i++) bp_release(bufs[i]);
    bp__recycler_inject_give_all_pause(pause_in_hand_over);
    bp_thread_cache_flush(a);
    bp__recycler_inject_give_all_pause(NULL);
    return NULL;
}

static int compare_pointers(const void *x, const void *y)
{
    uintptr_t p = (uintptr_t)*(void *const *)x, q = (uintptr_t)*(void *const *)y;
    return p < q ? -1 : p > q;
}

static void test_fork_while_a_flush_hands_objects_over(void **state)
{
    (void)state;
    for (int pooled = 1; pooled >= 0; pooled--) {
        bp_config cfg;
        bp_config_init(&cfg);
        cfg.background_purge = 0;
        bp_allocator *a = pooled ? bp_allocator_new(&cfg, NULL) : bp_allocator_new_unpooled(NULL);
        assert_non_null(a);
        pause_stage = 0;
        pause_parent = getpid();
        pthread_t flusher;
        assert_int_equal(pthread_create(&flusher, NULL, flush_with_objects, a), 0);
        pthread_mutex_lock(&pause_lock);
        int reached = wait_for_stage(1, 10000);
        pthread_mutex_unlock(&pause_lock);
        if (reached != 1) { /* the flush handed nothing over */
            pthread_join(flusher, NULL);
            fail_msg("%s: the flush did not hand the recycler's objects over", pooled ? "pooled" : "unpooled");
        }
        pid_t pid = fork();
        if (pid == 0) {
            enum { N = 4000 };
            static bp_buf *mine[N];
            for (int i = 0; i < N; i++)
                if ((mine[i] = bp_alloc(a, 64)) == NULL) _exit(2);
            qsort(mine, N, sizeof mine[0], compare_pointers);
            for (int i = 1; i < N; i++)
                if (mine[i] == mine[i - 1]) _exit(1); /* one object handed out twice */
            _exit(0);
        }
        assert_true(pid > 0);
        pthread_mutex_lock(&pause_lock);
        pause_stage = 2;
        pthread_cond_broadcast(&pause_cond);
        pthread_mutex_unlock(&pause_lock);
        assert_int_equal(pthread_join(flusher, NULL), 0);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        bp_allocator_destroy(a);
    }
}

static void child_starts_no_thread(void)
{
    bp_allocator *mine = allocator_with(1, 100);
    bp_buf **bufs = calloc(NBUFS, sizeof *bufs);
    fill(mine, bufs);
    for (int i = 0; i < NBUFS; i++) bp_release(bufs[i]);
    free(bufs);
    uint64_t passes = bp__purger_passes();
    sleep_ms(300);
    if (bp__purger_passes() != passes) _exit(3); /* a thread ran here */
    if (wait_until_purged(mine, 0) == 0) _exit(4);   /* and did the purge */
    if (bp_allocator_purge(mine) < 0 || wait_until_purged(mine, 0) != 0) _exit(5);
    bp_allocator_destroy(mine);
}

/* A child of a process with the thread (so, multi-threaded) must not create threads: it
 * gets none, and purges when it calls or allocates. */
static void test_a_forked_child_starts_no_purge_thread(void **state)
{
    (void)state;
    bp_allocator *parent = allocator_with(1, 100); /* the parent's thread runs */
    uint64_t passes = bp__purger_passes();
    for (int waited = 0; bp__purger_passes() == passes && waited < 2000; waited += 10) sleep_ms(10);
    assert_true(bp__purger_passes() > passes);
    char err[4096];
    int status = run_child(child_starts_no_thread, err, sizeof err);
    if (exit_code(status) != 0) fprintf(stderr, "child: status %d, stderr: %s\n", status, err);
    assert_int_equal(exit_code(status), 0);
    bp_allocator_destroy(parent);
}

int main(int argc, char **argv)
{
    test_filters(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_background_purge_returns_memory_with_no_further_call),
        cmocka_unit_test(test_without_background_purge_memory_stays),
        cmocka_unit_test(test_background_purge_leaves_busy_arenas_alone),
        cmocka_unit_test(test_purge_with_nothing_live_unmaps_the_chunks),
        cmocka_unit_test(test_purge_gives_free_objects_back),
        cmocka_unit_test(test_flush_lets_the_recyclers_objects_go),
        cmocka_unit_test(test_objects_given_back_while_others_churn),
        cmocka_unit_test(test_fork_while_a_flush_hands_objects_over),
        cmocka_unit_test(test_a_forked_child_starts_no_purge_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
