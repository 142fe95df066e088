/* SPDX-License-Identifier: MIT */
/* Many threads on one allocator: arena binding, buffers released on other threads, thread
 * exit returning recycled objects, and the pool idle at the end. Smaller under TSan
 * (BP_TEST_SCALE=tsan) and Valgrind. */
#include "test_util.h"

#include "allocator.h"
#include "thread.h"
#include "os.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__has_include)
#  if __has_include(<valgrind/valgrind.h>)
#    include <valgrind/valgrind.h>
#    define HAVE_VALGRIND_H 1
#  endif
#endif
#ifndef HAVE_VALGRIND_H
#  define HAVE_VALGRIND_H 0
#endif

static int scale_divisor(void)
{
    const char *scale = getenv("BP_TEST_SCALE");
    return RUNNING_ON_VALGRIND || (scale != NULL && strcmp(scale, "tsan") == 0) ? 10 : 1;
}

/* ---- arena binding ---- */

typedef struct bind_args {
    bp_allocator *a;
    bp__arena *arena;
    pthread_barrier_t *both_bound;
} bind_args;

static void *bind_and_wait(void *arg)
{
    bind_args *args = arg;
    bp_buf *b = bp_alloc(args->a, 32);
    args->arena = bp__region_arena(&b->region);
    bp_release(b);
    if (args->both_bound) pthread_barrier_wait(args->both_bound);
    return NULL;
}

static void test_threads_spread_over_arenas_and_unbind_on_exit(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 2;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    bind_args x = {a, NULL, &barrier}, y = {a, NULL, &barrier};
    pthread_t tx, ty;
    pthread_create(&tx, NULL, bind_and_wait, &x);
    pthread_create(&ty, NULL, bind_and_wait, &y);
    pthread_join(tx, NULL);
    pthread_join(ty, NULL);
    assert_non_null(x.arena);
    assert_non_null(y.arena);
    assert_ptr_not_equal(x.arena, y.arena); /* one each */
    bp_arena_stats s;
    bp_arena_get_stats(a, 0, &s, sizeof s);
    assert_int_equal(s.threads, 0); /* both exited: bindings released */

    /* A long-lived thread holds arena 0... */
    bp_buf *mine = bp_alloc(a, 32);
    bp__arena *main_arena = bp__region_arena(&mine->region);
    /* ...so the next thread takes the other one. */
    bind_args z = {a, NULL, NULL};
    pthread_t tz;
    pthread_create(&tz, NULL, bind_and_wait, &z);
    pthread_join(tz, NULL);
    assert_ptr_not_equal(z.arena, main_arena);
    bp_release(mine);
    pthread_barrier_destroy(&barrier);
    bp_allocator_destroy(a);
}

/* ---- cross-thread hand-off ---- */

enum { SLOTS = 256 };

typedef struct shared_slots {
    bp_allocator *a;
    _Atomic(bp_buf *) slot[SLOTS];
    int iterations;
} shared_slots;

typedef struct churn_args {
    shared_slots *shared;
    uint64_t seed;
} churn_args;

static size_t pick_size(uint64_t *rng)
{
    uint64_t r = test_rand(rng) % 100;
    if (r < 70) return 1 + test_rand(rng) % 2048;
    if (r < 98) return 2048 + test_rand(rng) % (256 * 1024);
    return ((size_t)4 << 20) + test_rand(rng) % 100000; /* huge */
}

/* Every 61st byte (in huge buffers fewer: see sparse_stride). */
static size_t fill_stride(size_t size) { return sparse_stride(size, 61); }

/* Fill a buffer with bytes derived from its size, so any thread can check it. */
static void fill(bp_buf *b, size_t size)
{
    uint8_t *p = bp_data(b, 0);
    for (size_t i = 0; i < size; i += fill_stride(size)) p[i] = (uint8_t)(size + i);
    assert_int_equal(bp_set_writer_index(b, size), 0);
}

static void check_and_release(bp_buf *b)
{
    size_t size = bp_writer_index(b);
    const uint8_t *p = bp_data(b, 0);
    for (size_t i = 0; i < size; i += fill_stride(size))
        if (p[i] != (uint8_t)(size + i)) fail_msg("buffer of %zu bytes corrupted at %zu", size, i);
    assert_int_equal(bp_release(b), 1);
}

static void *churn(void *arg)
{
    churn_args *args = arg;
    shared_slots *shared = args->shared;
    uint64_t rng = args->seed;
    for (int i = 0; i < shared->iterations; i++) {
        size_t size = pick_size(&rng);
        bp_buf *b = bp_alloc(shared->a, size);
        assert_non_null(b);
        fill(b, size);
        /* Swap into a random slot; release what was there (often another thread's). */
        bp_buf *old = atomic_exchange(&shared->slot[test_rand(&rng) % SLOTS], b);
        if (old != NULL) check_and_release(old);
    }
    return NULL;
}

/* bp_buf objects ever made (slabs x objects per slab). */
static size_t objects_made(bp_allocator *a)
{
    size_t made = 0;
    pthread_mutex_lock(&a->lock);
    for (bp__buf_slab *slab = a->objects.slabs; slab != NULL; slab = slab->next) made += BP__SLAB_BUFS;
    pthread_mutex_unlock(&a->lock);
    return made;
}

static void test_cross_thread_release_and_thread_turnover(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 3;
    cfg.recycler_capacity = 64; /* small, so objects overflow to the spare list and back */
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    shared_slots *shared = calloc(1, sizeof *shared);
    shared->a = a;
    shared->iterations = 4000 / scale_divisor();
    enum { THREADS = 4, ROUNDS = 4, WARM = 2 };
    size_t made_when_warm = 0;
    for (int round = 0; round < ROUNDS; round++) { /* threads torn down and started again */
        pthread_t threads[THREADS];
        churn_args args[THREADS];
        for (int t = 0; t < THREADS; t++) {
            args[t].shared = shared;
            args[t].seed = (uint64_t)(round * THREADS + t + 1) * 0x9E3779B97F4A7C15ull;
            pthread_create(&threads[t], NULL, churn, &args[t]);
        }
        for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
        if (round == WARM - 1) made_when_warm = objects_made(a);
        for (unsigned i = 0; i < cfg.arenas; i++) {
            bp_arena_stats s;
            bp_arena_get_stats(a, i, &s, sizeof s);
            assert_int_equal(s.threads, 0);
            assert_true(bp__arena_check(&a->arenas[i]));
        }
    }
    bp_allocator_stats s;
    bp_allocator_get_stats(a, &s, sizeof s);
    assert_int_equal(s.thread_caches, 0);   /* every worker exited: caches flushed */
    assert_int_equal(s.cached_entries, 0);
    assert_int_equal(s.arena_cached_entries, 0); /* the last thread of each arena emptied its cache */
    for (int i = 0; i < SLOTS; i++) {
        bp_buf *b = atomic_exchange(&shared->slot[i], NULL);
        if (b != NULL) check_and_release(b);
    }
    assert_true(bp_thread_cache_flush(a) >= 0); /* this thread's cache too */
    bp_allocator_get_stats(a, &s, sizeof s);
    assert_int_equal(s.cached_entries, 0);
    assert_int_equal(s.cached_bytes, 0);
    assert_int_equal(s.active_buffers, 0);
    assert_int_equal(s.active_bytes, 0);
    assert_int_equal(s.allocations, s.deallocations);
    /* Objects of exited threads went back to the allocator and are reused: the number of
     * bp_buf objects ever made is bounded by the peak (live buffers plus the regions the
     * thread caches hold, each with its object), not by the traffic - the rounds after the
     * warm ones, with new threads and as much traffic again each, make (almost) none.
     * Measured against two warm rounds rather than one: on a loaded machine the first
     * round's threads may run one after another and hold fewer buffers at once than later
     * rounds' (a clean-clone CI run failed so). Measured: 11008-11200 after round 1,
     * 11072-11328 after round 3 (9664 throughout at TSan's scale). */
    size_t made = objects_made(a);
    assert_true(made >= SLOTS);
    assert_true(made <= made_when_warm + made_when_warm / 8);
    free(shared);
    bp_allocator_destroy(a);
}

static void *retain_release_many(void *arg)
{
    bp_buf *b = arg;
    for (int i = 0; i < 20000 / scale_divisor(); i++) {
        assert_int_equal(bp_retain(b), 0);
        assert_int_equal(bp_release(b), 0);
    }
    return NULL;
}

static void test_shared_reference_count_is_atomic(void **state)
{
    (void)state;
    bp_allocator *a = bp_allocator_new(NULL, NULL);
    bp_buf *b = bp_alloc(a, 64);
    assert_int_equal(bp_retain_n(b, 2), 0); /* three holders: the count never reaches 0 */
    pthread_t t1, t2;
    pthread_create(&t1, NULL, retain_release_many, b);
    pthread_create(&t2, NULL, retain_release_many, b);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    assert_int_equal(bp_refcnt(b), 3);
    assert_int_equal(bp_release_n(b, 3), 1);
    bp_allocator_destroy(a);
}

static void *alloc_and_exit(void *arg)
{
    bp_allocator *a = arg;
    bp_buf *bufs[100];
    for (int i = 0; i < 100; i++) bufs[i] = bp_alloc(a, 64);
    for (int i = 0; i < 100; i++) bp_release(bufs[i]);
    return NULL;
}

static void test_thread_exit_returns_recycled_objects(void **state)
{
    (void)state;
    bp_allocator *a = bp_allocator_new(NULL, NULL);
    pthread_t t;
    pthread_create(&t, NULL, alloc_and_exit, a);
    pthread_join(t, NULL);
    pthread_mutex_lock(&a->lock);
    size_t spare = a->objects.nspare;
    pthread_mutex_unlock(&a->lock);
    assert_int_equal(spare, 2 * BP__SLAB_BUFS); /* all 128 objects made are spare again */
    bp_allocator_stats s;
    bp_allocator_get_stats(a, &s, sizeof s);
    assert_int_equal(s.active_buffers, 0);
    assert_int_equal(s.threads, 0);
    bp_allocator_destroy(a);
}

/* ---- cross-thread release ---- */

enum { HANDOFF = 200 };

typedef struct handoff {
    bp_allocator *a;
    bp_buf *bufs[HANDOFF];
    pthread_barrier_t filled, emptied;
    int rounds;
    size_t size; /* of every buffer; 0: 64 B to ~3 KiB, in turn */
} handoff;

static void *consumer(void *arg)
{
    handoff *h = arg;
    for (int r = 0; r < h->rounds; r++) {
        pthread_barrier_wait(&h->filled);
        for (int i = 0; i < HANDOFF; i++) {
            uint32_t v = 0;
            assert_int_equal(bp_read_u32(h->bufs[i], &v), 0);
            assert_int_equal(v, (uint32_t)(r * HANDOFF + i));
            assert_int_equal(bp_release(h->bufs[i]), 1);
        }
        pthread_barrier_wait(&h->emptied);
    }
    return NULL;
}

static size_t slab_count(bp_allocator *a)
{
    size_t n = 0;
    pthread_mutex_lock(&a->lock);
    for (bp__buf_slab *slab = a->objects.slabs; slab != NULL; slab = slab->next) n++;
    pthread_mutex_unlock(&a->lock);
    return n;
}

static size_t mapped_bytes(bp_allocator *a)
{
    bp_allocator_stats s;
    bp_allocator_get_stats(a, &s, sizeof s);
    return s.mapped_bytes;
}

/* The producer, on a thread of its own. Figures are checked on the main thread (cmocka's
 * assertions belong there). */
typedef struct steady_figures {
    size_t mapped_after_warmup, mapped_at_end;
    size_t slabs_after_warmup, slabs_at_end;
    size_t pending_before_drain, pending_after_drain; /* remote_pending_bytes */
} steady_figures;

static steady_figures figures;

/* Rounds before the figures are taken. Cached regions keep their bp_buf objects (the thread
 * cache is the recycler), so the producer's object count settles after the caches have
 * filled: round 8 here; 20 leaves room. */
#define WARMUP_ROUNDS 20

static void *steady_state_body(void *arg)
{
    handoff *h = arg;
    pthread_t c;
    pthread_barrier_init(&h->filled, NULL, 2);
    pthread_barrier_init(&h->emptied, NULL, 2);
    pthread_create(&c, NULL, consumer, h);
    for (int r = 0; r < h->rounds; r++) {
        if (r == WARMUP_ROUNDS) {
            figures.mapped_after_warmup = mapped_bytes(h->a);
            figures.slabs_after_warmup = slab_count(h->a);
        }
        for (int i = 0; i < HANDOFF; i++) {
            h->bufs[i] = bp_alloc(h->a, h->size != 0 ? h->size : (size_t)(64 + (i % 4) * 1000));
            bp_write_u32(h->bufs[i], (uint32_t)(r * HANDOFF + i));
        }
        pthread_barrier_wait(&h->filled);
        pthread_barrier_wait(&h->emptied);
    }
    pthread_join(c, NULL);
    /* The consumer's exit pushed its last batches: they wait on this thread's stack until
     * it takes them back (a flush drains it). */
    bp_allocator_stats s;
    bp_allocator_get_stats(h->a, &s, sizeof s);
    figures.pending_before_drain = s.remote_pending_bytes;
    bp_thread_cache_flush(h->a);
    bp_allocator_get_stats(h->a, &s, sizeof s);
    figures.pending_after_drain = s.remote_pending_bytes;
    figures.mapped_at_end = mapped_bytes(h->a);
    figures.slabs_at_end = slab_count(h->a);
    pthread_barrier_destroy(&h->filled);
    pthread_barrier_destroy(&h->emptied);
    return NULL;
}

/* Regions and bp_buf objects flow back to the producer: after warming up, more rounds map
 * no memory and make no objects. `has_prefetchw` picks the take-back's prefetch (the
 * write prefetch the CPU has, or the compiler's); both must come out the same. */
static void producer_consumer_steady_state(bool has_prefetchw, size_t size)
{
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 2;
    cfg.background_purge = 0; /* the owner takes every buffer back itself (counted below) */
    handoff *h = calloc(1, sizeof *h);
    h->a = bp_allocator_new(&cfg, NULL);
    h->a->has_prefetchw = has_prefetchw && bp__os_cpu_has_prefetchw();
    h->size = size;
    h->rounds = 100 / scale_divisor() + WARMUP_ROUNDS + 10;
    pthread_t p;
    pthread_create(&p, NULL, steady_state_body, h);
    pthread_join(p, NULL);
    assert_true(figures.mapped_after_warmup > 0);
    assert_int_equal(figures.mapped_at_end, figures.mapped_after_warmup);
    assert_int_equal(figures.slabs_at_end, figures.slabs_after_warmup);
    assert_true(figures.pending_before_drain > 0); /* some of the last round at least */
    assert_int_equal(figures.pending_after_drain, 0);
    bp_allocator_stats s;
    bp_allocator_get_stats(h->a, &s, sizeof s);
    uint64_t handed = (uint64_t)h->rounds * HANDOFF;
    assert_int_equal(s.remote_releases, handed);  /* every release went back without a lock */
    assert_int_equal(s.remote_drained, handed);   /* and all came home (the last at exit) */
    assert_int_equal(s.active_buffers, 0);
    assert_int_equal(s.active_bytes, 0);
    assert_int_equal(s.remote_pending_bytes, 0);
    assert_int_equal(s.cached_entries, 0);
    assert_int_equal(s.threads, 0);
    bp_allocator_destroy(h->a);
    free(h);
}

static void test_producer_consumer_reaches_a_steady_state(void **state)
{
    (void)state;
    producer_consumer_steady_state(true, 0);
}

/* 64 KiB, the largest class thread caches keep by default (a run each, 16 to a remote
 * batch by its byte bound): the buffers come back to the producer's cache in batches. */
static void test_producer_consumer_of_64k_buffers_reaches_a_steady_state(void **state)
{
    (void)state;
    producer_consumer_steady_state(true, 64 * 1024);
}

static void test_producer_consumer_without_a_write_prefetch(void **state)
{
    (void)state;
    producer_consumer_steady_state(false, 0);
}

/* The CPUID bit the take-back's write prefetch depends on is the one Linux calls
 * 3dnowprefetch (CPUID 0x80000001 ECX bit 8): both must agree. Not under Valgrind, whose
 * CPUID describes the CPU it emulates, not the one the kernel saw. */
static void test_prefetchw_detection_agrees_with_the_kernel(void **state)
{
    (void)state;
#if (defined(__x86_64__) || defined(__i386__)) && !defined(__PRFCHW__)
#  if HAVE_VALGRIND_H
    if (RUNNING_ON_VALGRIND) skip();
#  endif
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f == NULL) skip();
    char line[8192];
    bool found_flags = false, kernel_says = false;
    while (!found_flags && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "flags", 5) != 0) continue;
        found_flags = true;
        kernel_says = strstr(line, " 3dnowprefetch") != NULL;
    }
    fclose(f);
    if (!found_flags) skip();
    assert_int_equal(bp__os_cpu_has_prefetchw(), kernel_says);
#else
    assert_true(bp__os_cpu_has_prefetchw()); /* __builtin_prefetch(p, 1) is one already */
#endif
}

static void *alloc_many_and_exit(void *arg)
{
    handoff *h = arg;
    for (int i = 0; i < HANDOFF; i++) h->bufs[i] = bp_alloc(h->a, (size_t)(16 + i * 300));
    return NULL;
}

static void test_release_after_the_owner_exited(void **state)
{
    (void)state;
    handoff *h = calloc(1, sizeof *h);
    h->a = bp_allocator_new(NULL, NULL);
    pthread_t t;
    pthread_create(&t, NULL, alloc_many_and_exit, h);
    pthread_join(t, NULL);
    /* The owner's remote stack is closed: this thread frees them itself. */
    for (int i = 0; i < HANDOFF; i++) assert_int_equal(bp_release(h->bufs[i]), 1);
    bp_allocator_stats s;
    bp_allocator_get_stats(h->a, &s, sizeof s);
    assert_int_equal(s.remote_releases, 0);
    assert_int_equal(s.active_buffers, 0);
    assert_int_equal(s.active_bytes, 0);
    /* A new thread takes the old state over; a buffer it allocates and this thread
     * releases goes back to it remotely. */
    pthread_create(&t, NULL, alloc_many_and_exit, h);
    pthread_join(t, NULL);
    size_t states = 0;
    for (bp__thread_state *ts = h->a->threads; ts != NULL; ts = ts->next) states++;
    assert_int_equal(states, 2); /* this thread's and the one both workers used */
    for (int i = 0; i < HANDOFF; i++) assert_int_equal(bp_release(h->bufs[i]), 1);
    assert_int_equal(bp_thread_cache_flush(h->a) >= 0, 1);
    bp_allocator_get_stats(h->a, &s, sizeof s);
    assert_int_equal(s.active_buffers, 0);
    assert_int_equal(s.active_bytes, 0);
    bp_allocator_destroy(h->a);
    free(h);
}

typedef struct ten_bufs {
    bp_allocator *a;
    size_t size;
    bp_buf *bufs[10];
    pthread_barrier_t *handed, *done; /* NULL: exit at once */
} ten_bufs;

/* Allocates ten buffers, then exits, or (with barriers) waits idle until told to. */
static void *alloc_ten(void *arg)
{
    ten_bufs *t = arg;
    for (int i = 0; i < 10; i++) t->bufs[i] = bp_alloc(t->a, t->size);
    if (t->handed != NULL) {
        pthread_barrier_wait(t->handed);
        pthread_barrier_wait(t->done);
    }
    return NULL;
}

/* A thread with a state of its own releases buffers of a class thread caches keep whose
 * allocating thread has exited: they wait in its outgoing batch (still counted in
 * active_bytes, not in active_buffers), and when the batch is sent on (here at a trim) the
 * thread finds the owner gone and gives them back itself: not counted as remote releases,
 * as the header says. */
static void test_releases_to_an_exited_owner_wait_in_the_batch(void **state)
{
    (void)state;
    bp_allocator *a = bp_allocator_new(NULL, NULL);
    assert_non_null(a);
    bp_buf *mine = bp_alloc(a, 100); /* this thread has a state */
    ten_bufs ten = {a, 16 * 1024, {NULL}, NULL, NULL};
    pthread_t t;
    pthread_create(&t, NULL, alloc_ten, &ten);
    pthread_join(t, NULL);
    for (int i = 0; i < 10; i++) assert_non_null(ten.bufs[i]);
    size_t mine_bytes = mine->region.length;
    for (int i = 0; i < 10; i++) assert_int_equal(bp_release(ten.bufs[i]), 1);
    bp_allocator_stats s;
    bp_allocator_get_stats(a, &s, sizeof s);
    assert_int_equal(s.active_buffers, 1);
    assert_int_equal(s.active_bytes, mine_bytes + 10 * 16 * 1024);
    assert_int_equal(s.remote_pending_bytes, 10 * 16 * 1024);
    assert_int_equal(s.remote_releases, 0);
    assert_true(bp_thread_cache_trim(a) >= 0); /* (it trims this thread's bins too) */
    bp_allocator_get_stats(a, &s, sizeof s);
    assert_int_equal(s.active_buffers, 1);
    assert_int_equal(s.active_bytes, mine_bytes);
    assert_int_equal(s.remote_pending_bytes, 0);
    assert_int_equal(s.remote_releases, 0);
    assert_int_equal(s.remote_drained, 0);
    assert_int_equal(bp_release(mine), 1);
    bp_allocator_destroy(a);
}

/* An allocator with cfg, a buffer of this thread's (so that it has a state), and an owner
 * thread that allocated ten buffers of `size` and now idles, alive, until
 * idle_owner_finish. */
typedef struct idle_owner {
    bp_allocator *a;
    bp_buf *mine;
    pthread_barrier_t handed, done;
    ten_bufs ten;
    pthread_t thread;
} idle_owner;

static void idle_owner_start(idle_owner *o, const bp_config *cfg, size_t size)
{
    o->a = bp_allocator_new(cfg, NULL);
    assert_non_null(o->a);
    o->mine = bp_alloc(o->a, 100);
    assert_non_null(o->mine);
    pthread_barrier_init(&o->handed, NULL, 2);
    pthread_barrier_init(&o->done, NULL, 2);
    o->ten = (ten_bufs){o->a, size, {NULL}, &o->handed, &o->done};
    pthread_create(&o->thread, NULL, alloc_ten, &o->ten);
    pthread_barrier_wait(&o->handed);
    for (int i = 0; i < 10; i++) assert_non_null(o->ten.bufs[i]);
}

/* Lets the owner exit; then this thread allocates once more (adopting the owner's state or
 * not, it works on), releases everything and destroys the allocator. */
static void idle_owner_finish(idle_owner *o)
{
    pthread_barrier_wait(&o->done);
    pthread_join(o->thread, NULL);
    pthread_barrier_destroy(&o->handed);
    pthread_barrier_destroy(&o->done);
    bp_buf *again = bp_alloc(o->a, o->ten.size);
    assert_non_null(again);
    assert_int_equal(bp_release(again), 1);
    assert_int_equal(bp_release(o->mine), 1);
    bp_allocator_stats s;
    bp_allocator_get_stats(o->a, &s, sizeof s);
    assert_int_equal(s.active_buffers, 0);
    bp_allocator_destroy(o->a);
}

/* Buffers of sizes no thread cache keeps (a long run, a huge mapping, a class whose bins
 * are configured away) released on another thread than the one that allocated them go back
 * to their arena, or are unmapped, by the releasing thread at once: queued for an owner
 * that stays idle, they would stay resident for as long as it idles. */
static void test_uncached_buffers_released_elsewhere_go_back_at_once(void **state)
{
    (void)state;
    struct {
        size_t size;
        unsigned small_cache_size; /* 0: no small class cached (normal ones still are) */
    } cases[] = {{256 * 1024, 256}, {8u << 20, 256}, {1024, 0}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        bp_config cfg;
        bp_config_init(&cfg);
        cfg.small_cache_size = cases[k].small_cache_size;
        idle_owner o;
        idle_owner_start(&o, &cfg, cases[k].size);
        size_t each = o.ten.bufs[0]->region.length;
        bp_allocator_stats before, after;
        bp_allocator_get_stats(o.a, &before, sizeof before);
        assert_int_equal(before.active_bytes, o.mine->region.length + 10 * each);
        for (int i = 0; i < 10; i++) assert_int_equal(bp_release(o.ten.bufs[i]), 1);
        bp_allocator_get_stats(o.a, &after, sizeof after);
        assert_int_equal(after.active_buffers, 1);
        assert_int_equal(after.active_bytes, o.mine->region.length);
        assert_int_equal(after.remote_releases, 0);
        if (cases[k].size > cfg.chunk_size) /* unmapped */
            assert_int_equal(before.mapped_bytes - after.mapped_bytes, 10 * each);
        idle_owner_finish(&o);
    }
}

/* Buffers of a cached class released on another thread wait on their owner's stack until
 * it next misses its cache; an owner that idles would keep them for good. A purge gives
 * them back: bp_allocator_purge from any thread, and the background purge once the stack
 * has stayed as it was for a pass. */
static void test_purges_reclaim_what_waits_for_an_idle_owner(void **state)
{
    (void)state;
    for (int background = 0; background < 2; background++) {
        bp_config cfg;
        bp_config_init(&cfg);
        cfg.background_purge = (unsigned)background;
        cfg.dirty_decay_ms = cfg.chunk_decay_ms = 40;
        idle_owner o;
        idle_owner_start(&o, &cfg, 16 * 1024);
        for (int i = 0; i < 10; i++) assert_int_equal(bp_release(o.ten.bufs[i]), 1);
        assert_true(bp_thread_cache_trim(o.a) >= 0); /* sends the partial batch on */
        bp_allocator_stats s;
        bp_allocator_get_stats(o.a, &s, sizeof s);
        assert_int_equal(s.remote_releases, 10);
        assert_int_equal(s.active_bytes, o.mine->region.length + 10 * 16 * 1024); /* on the owner's stack */
        assert_int_equal(s.remote_pending_bytes, 10 * 16 * 1024);
        if (!background) {
            assert_true(bp_allocator_purge(o.a) >= 0);
            bp_allocator_get_stats(o.a, &s, sizeof s);
        } else {
            for (int waited = 0; waited < 300 && s.active_bytes != o.mine->region.length; waited++) {
                struct timespec pause = {0, 10 * 1000 * 1000};
                nanosleep(&pause, NULL);
                bp_allocator_get_stats(o.a, &s, sizeof s);
            }
        }
        assert_int_equal(s.active_bytes, o.mine->region.length);
        assert_int_equal(s.remote_pending_bytes, 0);
        assert_int_equal(s.active_buffers, 1);
        assert_int_equal(s.remote_drained, 0); /* not taken back by the owner */
        idle_owner_finish(&o);
    }
}

static void test_remote_releases_waiting_at_destroy(void **state)
{
    (void)state;
    handoff *h = calloc(1, sizeof *h);
    h->a = bp_allocator_new(NULL, NULL);
    /* This thread owns the buffers; a helper releases them onto this thread's stack, which
     * nobody drains before the allocator is destroyed: no leak, no crash. */
    for (int i = 0; i < HANDOFF; i++) h->bufs[i] = bp_alloc(h->a, 100);
    h->rounds = 1;
    pthread_barrier_init(&h->filled, NULL, 2);
    pthread_barrier_init(&h->emptied, NULL, 2);
    pthread_t c;
    pthread_create(&c, NULL, consumer, h);
    for (int i = 0; i < HANDOFF; i++) bp_write_u32(h->bufs[i], (uint32_t)i);
    pthread_barrier_wait(&h->filled);
    pthread_barrier_wait(&h->emptied);
    pthread_join(c, NULL);
    bp_allocator_stats s;
    bp_allocator_get_stats(h->a, &s, sizeof s);
    assert_int_equal(s.remote_releases, HANDOFF);
    assert_int_equal(s.active_buffers, 0);
    assert_int_equal(s.remote_pending_bytes, HANDOFF * h->bufs[0]->region.length);
    pthread_barrier_destroy(&h->filled);
    pthread_barrier_destroy(&h->emptied);
    bp_allocator_destroy(h->a);
    free(h);
}

/* Releases every handed-off buffer on a thread of its own; counts the releases that
 * reported the last reference gone. */
static void *release_all(void *arg)
{
    handoff *h = arg;
    long done = 0;
    for (int i = 0; i < HANDOFF; i++) {
        uint32_t v = 0;
        if (bp_read_u32(h->bufs[i], &v) == 0 && v == (uint32_t)i * 7u && bp_release(h->bufs[i]) == 1) done++;
    }
    return (void *)done;
}

/* Buffers a thread has released for other owners and not pushed to them yet. */
static uint32_t pending_remote_releases(const bp__thread_state *ts)
{
    uint32_t n = 0;
    for (unsigned i = 0; i < BP__REMOTE_SLOTS; i++)
        if (ts->remote_slots[i].batch != NULL) n += ts->remote_slots[i].batch->count;
    return n;
}

/* A releasing thread that goes idle keeps what its partial batches hold until it next
 * trims or exits, out of reach of any purge: a batch goes on once it holds
 * BP__REMOTE_BATCH_BYTES, whatever its count, so that is at most what waits per owner
 * (256 KiB buffers, cached here: 4 to a batch, not 64). Small buffers still go 64 to a
 * batch. */
static void test_idle_releaser_holds_a_bounded_batch(void **state)
{
    (void)state;
    struct {
        size_t size;
        uint32_t pending; /* of the 10 released */
    } cases[] = {{256 * 1024, 10 % 4}, {256, 10}};
    _Static_assert(BP__REMOTE_BATCH_BYTES == 1024 * 1024, "the cases assume 4 per batch");
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        bp_config cfg;
        bp_config_init(&cfg);
        cfg.background_purge = 0;
        cfg.max_cached_size = 256 * 1024; /* thread caches keep the class: batched */
        idle_owner o;
        idle_owner_start(&o, &cfg, cases[k].size);
        size_t each = o.ten.bufs[0]->region.length;
        for (int i = 0; i < 10; i++) assert_int_equal(bp_release(o.ten.bufs[i]), 1);
        assert_int_equal(pending_remote_releases(bp__thread_state_get(o.a)), cases[k].pending);
        bp_allocator_stats s;
        bp_allocator_get_stats(o.a, &s, sizeof s);
        assert_int_equal(s.remote_pending_bytes, 10 * each); /* in the batch or pushed */
        assert_true(bp_allocator_purge(o.a) >= 0); /* takes what reached the owner's stack */
        bp_allocator_get_stats(o.a, &s, sizeof s);
        assert_int_equal(s.active_bytes, o.mine->region.length + cases[k].pending * each);
        assert_int_equal(s.remote_pending_bytes, cases[k].pending * each);
        assert_int_equal(s.remote_releases, 10 - cases[k].pending);
        assert_true(bp_thread_cache_trim(o.a) >= 0); /* the rest goes on */
        assert_int_equal(pending_remote_releases(bp__thread_state_get(o.a)), 0);
        bp_allocator_get_stats(o.a, &s, sizeof s);
        assert_int_equal(s.remote_pending_bytes, cases[k].pending * each); /* now pushed */
        idle_owner_finish(&o);
    }
}

/* A consumer that allocates a size no thread cache keeps between its remote releases. */
typedef struct mixed_consumer {
    handoff *h;
    int released;          /* remote releases, one 64 KiB allocation after each */
    int extra_allocations; /* then this many more 64 KiB allocations */
    bool trim;             /* then bp_thread_cache_trim */
    uint32_t pending;      /* its batch's count at the end */
    bool owner_stack_empty; /* whether nothing had reached the owner's remote stack */
} mixed_consumer;

static void *release_with_uncached_allocations(void *arg)
{
    mixed_consumer *m = arg;
    bp_allocator *a = m->h->a;
    bp__thread_state *owner = m->h->bufs[0]->owner;
    /* First a thread state and a stocked recycler (taking its first objects is a slow path
     * of its own, which flushes). */
    assert_int_equal(bp_release(bp_alloc(a, 65536)), 1);
    for (int i = 0; i < m->released + m->extra_allocations; i++) {
        if (i < m->released) assert_int_equal(bp_release(m->h->bufs[i]), 1);
        bp_buf *big = bp_alloc(a, 65536);
        assert_non_null(big);
        assert_int_equal(bp_release(big), 1);
    }
    if (m->trim) assert_true(bp_thread_cache_trim(a) >= 0);
    bp__thread_state *ts = bp__thread_state_get(a);
    m->pending = pending_remote_releases(ts);
    m->owner_stack_empty = atomic_load(&owner->remote_head) == NULL;
    return NULL;
}

/* An allocation of an uncached size is no reason to push a partial batch: a consumer doing
 * one after every release kept pushing batches of one buffer (a CAS and a malloc'ed batch
 * each; its hand-off ran 3x slower). Its batch fills as usual, and its scheduled trim
 * bounds how long a partial one waits. */
static void test_uncached_allocations_do_not_push_partial_batches(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.cache_trim_interval = 64;
    cfg.background_purge = 0; /* the owner drains its stack itself (counted below) */
    handoff *h = calloc(1, sizeof *h);
    h->a = bp_allocator_new(&cfg, NULL);
    enum { RELEASED = 40 }; /* fewer than a batch holds */
    for (int i = 0; i < RELEASED; i++) h->bufs[i] = bp_alloc(h->a, 256);
    mixed_consumer m = {h, RELEASED, 0, false, 0, false};
    run_on_thread(release_with_uncached_allocations, &m);
    assert_int_equal(m.pending, RELEASED); /* all in one batch, none pushed yet */
    assert_true(m.owner_stack_empty);
    /* The consumer's exit pushed them: all came home to their owner (this thread). */
    bp_allocator_stats s;
    bp_allocator_get_stats(h->a, &s, sizeof s);
    assert_int_equal(s.remote_releases, RELEASED);
    assert_int_equal(bp__remote_drain(bp__thread_state_get(h->a)), RELEASED);

    /* Past its trim interval of allocations, the consumer's partial batch goes. */
    for (int i = 0; i < RELEASED; i++) h->bufs[i] = bp_alloc(h->a, 256);
    m = (mixed_consumer){h, 5, 100, false, 0, true};
    run_on_thread(release_with_uncached_allocations, &m);
    assert_int_equal(m.pending, 0);
    assert_false(m.owner_stack_empty);
    assert_int_equal(bp__remote_drain(bp__thread_state_get(h->a)), 5);
    /* So does it on bp_thread_cache_trim, before its clock comes round. */
    m = (mixed_consumer){h, 5, 0, true, 0, true};
    for (int i = 0; i < 5; i++) h->bufs[i] = h->bufs[5 + i];
    run_on_thread(release_with_uncached_allocations, &m);
    assert_int_equal(m.pending, 0);
    assert_false(m.owner_stack_empty);
    assert_int_equal(bp__remote_drain(bp__thread_state_get(h->a)), 5);
    for (int i = 10; i < RELEASED; i++) assert_int_equal(bp_release(h->bufs[i]), 1);
    bp_allocator_get_stats(h->a, &s, sizeof s);
    assert_int_equal(s.active_buffers, 0);
    bp_allocator_destroy(h->a);
    free(h);
}

/* Owners that allocate and then wait (alive, so their remote stacks stay open). */
enum { PER_OWNER = 30, MAX_OWNERS = 16 };
typedef struct waiting_owner {
    bp_allocator *a;
    bp_buf *bufs[PER_OWNER];
    pthread_barrier_t allocated, release;
} waiting_owner;

static void *allocate_and_wait(void *arg)
{
    waiting_owner *o = arg;
    for (int i = 0; i < PER_OWNER; i++) o->bufs[i] = bp_alloc(o->a, 256);
    pthread_barrier_wait(&o->allocated);
    pthread_barrier_wait(&o->release); /* the consumer is done: exit takes everything back */
    return NULL;
}

typedef struct alternating_consumer {
    waiting_owner *first, *second;
    uint32_t pending;
    bool stacks_empty;
} alternating_consumer;

static void *release_alternately(void *arg)
{
    alternating_consumer *c = arg;
    for (int i = 0; i < PER_OWNER; i++) {
        assert_int_equal(bp_release(c->first->bufs[i]), 1);
        assert_int_equal(bp_release(c->second->bufs[i]), 1);
    }
    bp__thread_state *ts = bp__thread_state_get(c->first->a);
    c->pending = pending_remote_releases(ts);
    c->stacks_empty = atomic_load(&c->first->bufs[0]->owner->remote_head) == NULL &&
                      atomic_load(&c->second->bufs[0]->owner->remote_head) == NULL;
    return NULL;
}

/* A thread releasing the buffers of two owners in turn (a worker serving two event loops)
 * collects a batch for each, rather than pushing a batch of one at every change of owner
 * (8-12x slower per release). Two owners whose states fall in different slots are picked
 * (a third may share one with either; it would then push the other's batch, correctly). */
static void test_releases_for_owners_in_turn_fill_a_batch_each(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.background_purge = 0; /* the idle owners take their batches back themselves (counted) */
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    waiting_owner *owners = calloc(MAX_OWNERS, sizeof *owners);
    pthread_t threads[MAX_OWNERS];
    int started = 0, first = -1, second = -1;
    while (second < 0 && started < MAX_OWNERS) {
        waiting_owner *o = &owners[started];
        o->a = a;
        pthread_barrier_init(&o->allocated, NULL, 2);
        pthread_barrier_init(&o->release, NULL, 2);
        pthread_create(&threads[started], NULL, allocate_and_wait, o);
        pthread_barrier_wait(&o->allocated);
        if (first < 0) first = started;
        else if (bp__remote_slot_of(o->bufs[0]->owner) != bp__remote_slot_of(owners[first].bufs[0]->owner))
            second = started;
        started++;
    }
    assert_true(second >= 0);
    alternating_consumer c = {&owners[first], &owners[second], 0, false};
    run_on_thread(release_alternately, &c);
    assert_int_equal(c.pending, 2 * PER_OWNER); /* two batches, still held */
    assert_true(c.stacks_empty);
    /* The consumer's exit pushed both; the other owners' buffers go from here, pushed
     * while their owners live; each owner's exit takes its batches back. */
    for (int i = 0; i < started; i++)
        if (i != first && i != second)
            for (int k = 0; k < PER_OWNER; k++) assert_int_equal(bp_release(owners[i].bufs[k]), 1);
    assert_true(bp_thread_cache_flush(a) >= 0);
    for (int i = 0; i < started; i++) {
        pthread_barrier_wait(&owners[i].release);
        pthread_join(threads[i], NULL);
        pthread_barrier_destroy(&owners[i].allocated);
        pthread_barrier_destroy(&owners[i].release);
    }
    bp_allocator_stats s;
    bp_allocator_get_stats(a, &s, sizeof s);
    assert_int_equal(s.remote_releases, 2 * PER_OWNER + (uint64_t)(started - 2) * PER_OWNER);
    assert_int_equal(s.remote_drained, s.remote_releases);
    assert_int_equal(s.active_buffers, 0);
    free(owners);
    bp_allocator_destroy(a);
}

static void test_remote_release_without_memory_for_a_batch(void **state)
{
    (void)state;
    handoff *h = calloc(1, sizeof *h);
    h->a = bp_allocator_new(NULL, NULL);
    for (int i = 0; i < HANDOFF; i++) {
        h->bufs[i] = bp_alloc(h->a, (size_t)(16 + i * 300));
        assert_int_equal(bp_write_u32(h->bufs[i], (uint32_t)i * 7u), 0);
    }
    /* The owner (this thread) is alive, but the releasing thread cannot make a batch to
     * queue the buffers in: each one goes back from there, as if the owner had exited. */
    bp__remote_inject_batch_failure(true);
    pthread_t t;
    void *released;
    pthread_create(&t, NULL, release_all, h);
    pthread_join(t, &released);
    bp__remote_inject_batch_failure(false);
    assert_int_equal((long)released, HANDOFF);
    bp_allocator_stats s;
    bp_allocator_get_stats(h->a, &s, sizeof s);
    assert_int_equal(s.remote_releases, 0); /* nothing was queued for the owner */
    assert_int_equal(s.remote_drained, 0);
    assert_int_equal(s.active_buffers, 0);
    /* The releaser's cache went back at its exit; what is left in the owner's is what its
     * refills took ahead. */
    assert_true(bp_thread_cache_flush(h->a) >= 0);
    bp_allocator_get_stats(h->a, &s, sizeof s);
    assert_int_equal(s.cached_entries, 0);
    assert_int_equal(s.active_bytes, 0);
    /* With memory for batches again, the same hand-off queues every buffer for the owner. */
    for (int i = 0; i < HANDOFF; i++) {
        h->bufs[i] = bp_alloc(h->a, 100);
        assert_int_equal(bp_write_u32(h->bufs[i], (uint32_t)i * 7u), 0);
    }
    pthread_create(&t, NULL, release_all, h);
    pthread_join(t, &released);
    assert_int_equal((long)released, HANDOFF);
    bp_allocator_get_stats(h->a, &s, sizeof s);
    assert_int_equal(s.remote_releases, HANDOFF);
    assert_int_equal(s.active_buffers, 0);
    bp_allocator_destroy(h->a);
    free(h);
}

/* ---- a buffer whose region is not of its owner's arena never goes into its cache (a bin
 * hands its overflow to its arena's cache unchecked) ---- */

typedef struct away_job {
    bp_allocator *a;
    bp_buf *b;
    bp__arena *arena;           /* the thread's arena */
    bp__thread_state *state;    /* the thread's state */
    pthread_barrier_t *bound, *go;
} away_job;

static void *bind_here(away_job *job)
{
    bp_buf *probe = bp_alloc(job->a, 32);
    job->arena = bp__region_arena(&probe->region);
    job->state = bp__thread_state_get(job->a);
    bp_release(probe);
    return NULL;
}

static void *grow_elsewhere(void *arg)
{
    away_job *job = arg;
    bind_here(job);
    uint8_t bytes[10000] = {0};
    assert_int_equal(bp_write_bytes(job->b, bytes, sizeof bytes), 0); /* moves it, from this arena */
    return NULL;
}

static void test_buffer_grown_on_another_arena_goes_back_there(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 2;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    bp_buf *b = bp_alloc(a, 64);
    bp__arena *home = bp__region_arena(&b->region);
    away_job job = {.a = a, .b = b};
    run_on_thread(grow_elsewhere, &job);
    assert_ptr_not_equal(job.arena, home);
    assert_ptr_equal(bp__region_arena(&b->region), job.arena);
    assert_int_equal(bp_capacity(b) >= 10000, 1);
    bp_allocator_stats s;
    bp_allocator_get_stats(a, &s, sizeof s);
    size_t cached_before = s.cached_entries;
    bp_release(b); /* on its owner's thread, but not into its owner's cache */
    bp_allocator_get_stats(a, &s, sizeof s);
    assert_int_equal(s.cached_entries, cached_before);
    bp_arena_stats away;
    bp_arena_get_stats(a, job.arena->index, &away, sizeof away);
    assert_int_equal(away.active_bytes, 0); /* given back to the arena it came from */
    assert_int_equal(away.active_normal, 0);
    assert_true(bp__arena_check(&a->arenas[0]) && bp__arena_check(&a->arenas[1]));
    bp_allocator_destroy(a);
}

static void *hold_an_arena(void *arg)
{
    away_job *job = arg;
    bind_here(job);
    pthread_barrier_wait(job->bound);
    pthread_barrier_wait(job->go);
    return NULL;
}

static void *alloc_and_leave(void *arg)
{
    away_job *job = arg;
    bind_here(job);
    job->b = bp_alloc(job->a, 64);
    return NULL;
}

static void *release_from_readopted_state(void *arg)
{
    away_job *job = arg;
    bind_here(job);
    bp_allocator_stats before, after;
    bp_allocator_get_stats(job->a, &before, sizeof before);
    bp_release(job->b);
    bp_allocator_get_stats(job->a, &after, sizeof after);
    assert_int_equal(after.cached_entries, before.cached_entries);
    assert_int_equal(after.remote_releases, before.remote_releases); /* its owner's state is this thread's */
    return NULL;
}

static void test_readopted_state_keeps_other_arenas_regions_out(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 2;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    pthread_barrier_t bound, go;
    pthread_barrier_init(&bound, NULL, 2);
    pthread_barrier_init(&go, NULL, 2);
    /* A holds arena 0 while B's state binds arena 1 and allocates; then both exit. */
    away_job holder = {.a = a, .bound = &bound, .go = &go}, first = {.a = a};
    pthread_t t;
    pthread_create(&t, NULL, hold_an_arena, &holder);
    pthread_barrier_wait(&bound);
    run_on_thread(alloc_and_leave, &first);
    pthread_barrier_wait(&go);
    pthread_join(t, NULL);
    assert_ptr_not_equal(first.arena, holder.arena);
    /* B's state is taken by the next thread, which binds arena 0 (both are free now). */
    away_job second = {.a = a, .b = first.b};
    run_on_thread(release_from_readopted_state, &second);
    assert_ptr_equal(second.state, first.state);
    assert_ptr_not_equal(second.arena, first.arena);
    bp_arena_stats s;
    bp_arena_get_stats(a, first.arena->index, &s, sizeof s);
    assert_int_equal(s.active_bytes, 0);
    assert_true(bp__arena_check(&a->arenas[0]) && bp__arena_check(&a->arenas[1]));
    bp_allocator_destroy(a);
    pthread_barrier_destroy(&bound);
    pthread_barrier_destroy(&go);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_spread_over_arenas_and_unbind_on_exit),
        cmocka_unit_test(test_cross_thread_release_and_thread_turnover),
        cmocka_unit_test(test_shared_reference_count_is_atomic),
        cmocka_unit_test(test_thread_exit_returns_recycled_objects),
        cmocka_unit_test(test_producer_consumer_reaches_a_steady_state),
        cmocka_unit_test(test_producer_consumer_of_64k_buffers_reaches_a_steady_state),
        cmocka_unit_test(test_producer_consumer_without_a_write_prefetch),
        cmocka_unit_test(test_prefetchw_detection_agrees_with_the_kernel),
        cmocka_unit_test(test_release_after_the_owner_exited),
        cmocka_unit_test(test_releases_to_an_exited_owner_wait_in_the_batch),
        cmocka_unit_test(test_uncached_buffers_released_elsewhere_go_back_at_once),
        cmocka_unit_test(test_purges_reclaim_what_waits_for_an_idle_owner),
        cmocka_unit_test(test_idle_releaser_holds_a_bounded_batch),
        cmocka_unit_test(test_remote_releases_waiting_at_destroy),
        cmocka_unit_test(test_remote_release_without_memory_for_a_batch),
        cmocka_unit_test(test_uncached_allocations_do_not_push_partial_batches),
        cmocka_unit_test(test_releases_for_owners_in_turn_fill_a_batch_each),
        cmocka_unit_test(test_buffer_grown_on_another_arena_goes_back_there),
        cmocka_unit_test(test_readopted_state_keeps_other_arenas_regions_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
