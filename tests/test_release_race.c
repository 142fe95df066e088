/* SPDX-License-Identifier: MIT */
/* Releases racing for the same last reference (misuse): with bp_config.release_check,
 * exactly one of two racing releases succeeds on every path - the allocating thread's and
 * another's, uncached and huge sizes, views, composites, release_n, a retain against the
 * last release, unpooled allocators - and the pool stays intact afterwards. Also retains
 * and releases racing on a shared count (defined in both modes). Smaller under TSan
 * (BP_TEST_SCALE=tsan) and Valgrind. */
#include "test_util.h"

#include "allocator.h"
#include "thread.h"

#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static int scale_divisor(void)
{
    const char *scale = getenv("BP_TEST_SCALE");
    return RUNNING_ON_VALGRIND || (scale != NULL && strcmp(scale, "tsan") == 0) ? 10 : 1;
}

enum { ROUNDS = 4000, CHUNK = 256 * 1024, HUGE_SIZE = CHUNK + 4096, UNCACHED_SIZE = 128 * 1024 };

/* A barrier for the two racers that spins, so that both leave it within a few hundred
 * nanoseconds and the jitter below makes their releases overlap in many rounds. A racer
 * whose partner has not come after a bounded spin sleeps on a futex instead: when other
 * programs share the cores (make test runs several at once), the partner may not be
 * running at all, and a spinning or yielding waiter only keeps it off its CPU. */
typedef struct spin_barrier {
    _Atomic unsigned arrived;
    _Atomic unsigned generation; /* the futex word */
    _Atomic unsigned sleepers;
} spin_barrier;

enum { SPIN_BEFORE_SLEEP = 4096 };

static void spin_wait(spin_barrier *b)
{
    unsigned generation = atomic_load_explicit(&b->generation, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->arrived, 1, memory_order_acq_rel) == 1) {
        atomic_store_explicit(&b->arrived, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&b->generation, 1, memory_order_seq_cst);
        if (atomic_load_explicit(&b->sleepers, memory_order_seq_cst) != 0)
            syscall(SYS_futex, &b->generation, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
        return;
    }
    for (unsigned spins = 0; atomic_load_explicit(&b->generation, memory_order_acquire) == generation; spins++) {
        if (spins < SPIN_BEFORE_SLEEP) continue;
        /* sleepers is raised before generation is read again: the waker either sees it or
         * the kernel sees the new generation and does not sleep */
        atomic_fetch_add_explicit(&b->sleepers, 1, memory_order_seq_cst);
        if (atomic_load_explicit(&b->generation, memory_order_seq_cst) == generation)
            syscall(SYS_futex, &b->generation, FUTEX_WAIT_PRIVATE, generation, NULL, NULL, 0);
        atomic_fetch_sub_explicit(&b->sleepers, 1, memory_order_relaxed);
    }
}

/* What a round races on. Racer 0 prepares each round's buffer (it is the allocating
 * thread, except for RACE_BOTH_REMOTE) and checks the outcome. */
typedef enum race_kind {
    RACE_OWNER_VS_REMOTE, /* 64 B, a thread-cached class: racer 0's release is the owner's */
    RACE_BOTH_REMOTE,     /* 64 B allocated by the main thread: both releases are remote */
    RACE_UNCACHED,        /* 128 KiB, above max_cached_size */
    RACE_HUGE,            /* above the chunk size: a mapping of its own */
    RACE_RETAINED_SLICE,  /* a retained slice (holding the root), released by both */
    RACE_PLAIN_SLICE,     /* racer 0 releases the root, racer 1 a plain slice sharing its count */
    RACE_COMPOSITE,       /* a composite of two components, released by both */
    RACE_RELEASE_N,       /* count 2, bp_release_n(2) by both */
    RACE_RELEASE_N_MIXED, /* count 2, bp_release_n(2) against bp_release_n(1) */
    RACE_RETAIN,          /* racer 0 releases the last reference while racer 1 retains it */
} race_kind;

typedef struct race {
    bp_allocator *a;
    race_kind kind;
    int rounds;
    spin_barrier barrier;
    bp_buf *root;      /* this round's buffer (racer 0's, or the main thread's) */
    bp_buf *target[2]; /* what each racer releases */
    bp_buf **premade;  /* RACE_BOTH_REMOTE: one buffer per round, from the main thread */
    int rc[2];
    /* Outcomes, counted by racer 0 */
    int exact;      /* rounds where one call took the last reference and the other failed as documented */
    int both_freed; /* rounds where both calls returned 1 */
    int other;      /* anything else (the first such round's codes in first_other) */
    int first_other[2];
    int setup_failed;
    int cpus[2];    /* where the racers run, -1: anywhere */
    bool stopped;   /* by racer 0 after a round that was not exact */
} race;

static bp_buf *composite_of_two(bp_allocator *a)
{
    bp_buf *c = bp_composite(a, 4, NULL);
    bp_buf *x = bp_alloc(a, 32), *y = bp_alloc(a, 32);
    if (c == NULL || x == NULL || y == NULL) return NULL;
    bp_write_u32(x, 1);
    bp_write_u32(y, 2);
    if (bp_composite_add(c, x, 1) != 0 || bp_composite_add(c, y, 1) != 0) return NULL;
    return c;
}

/* Racer 0, before a round: the buffer and what each racer releases. */
static bool prepare(race *r, int round)
{
    bp_allocator *a = r->a;
    bp_buf *b = NULL;
    switch (r->kind) {
    case RACE_OWNER_VS_REMOTE:
    case RACE_RELEASE_N:
    case RACE_RELEASE_N_MIXED:
    case RACE_RETAIN:
        b = bp_alloc(a, 64);
        if (b != NULL && (r->kind == RACE_RELEASE_N || r->kind == RACE_RELEASE_N_MIXED) && bp_retain(b) != 0)
            return false;
        r->target[0] = r->target[1] = b;
        break;
    case RACE_BOTH_REMOTE:
        b = r->premade[round];
        r->target[0] = r->target[1] = b;
        break;
    case RACE_UNCACHED:
    case RACE_HUGE:
        b = bp_alloc(a, r->kind == RACE_HUGE ? HUGE_SIZE : UNCACHED_SIZE);
        r->target[0] = r->target[1] = b;
        break;
    case RACE_RETAINED_SLICE:
        b = bp_alloc(a, 64);
        if (b == NULL) return false;
        r->target[0] = r->target[1] = bp_retained_slice(b, 8, 16, NULL);
        if (r->target[0] == NULL || bp_release(b) != 0) return false; /* the slice holds the root now */
        break;
    case RACE_PLAIN_SLICE:
        b = bp_alloc(a, 64);
        if (b == NULL) return false;
        r->target[0] = b;
        r->target[1] = bp_slice(b, 8, 16, NULL);
        if (r->target[1] == NULL) return false;
        break;
    case RACE_COMPOSITE:
        b = composite_of_two(a);
        r->target[0] = r->target[1] = b;
        break;
    }
    r->root = b;
    return b != NULL;
}

static int race_call(race *r, int who)
{
    bp_buf *b = r->target[who];
    switch (r->kind) {
    case RACE_RELEASE_N: return bp_release_n(b, 2);
    case RACE_RELEASE_N_MIXED: return bp_release_n(b, who == 0 ? 2 : 1);
    case RACE_RETAIN: return who == 0 ? bp_release(b) : bp_retain(b);
    default: return bp_release(b);
    }
}

/* Racer 0, after a round: classifies the two results; false if the round was not exact. A
 * round where the last reference survived (a retain or a smaller release_n came first) is
 * finished here: exactly one release of it must then succeed. */
static bool judge(race *r)
{
    int x = r->rc[0], y = r->rc[1];
    bool exact;
    if (r->kind == RACE_RETAIN) {
        /* release first: (1, EFREED); retain first: (0, 0) and the retainer's reference left */
        exact = (x == 1 && y == BP_EFREED) || (x == 0 && y == 0 && bp_refcnt(r->root) == 1 && bp_release(r->root) == 1);
    } else if (r->kind == RACE_RELEASE_N_MIXED) {
        /* release_n(2) first: (1, EFREED); release_n(1) first: (EREFCNT, 0), one reference left */
        exact = (x == 1 && y == BP_EFREED) ||
                (x == BP_EREFCNT && y == 0 && bp_refcnt(r->root) == 1 && bp_release(r->root) == 1);
    } else {
        exact = (x == 1 && y == BP_EFREED) || (x == BP_EFREED && y == 1);
    }
    if (exact) {
        r->exact++;
    } else if (x == 1 && y == 1) {
        r->both_freed++;
    } else if (r->other++ == 0) {
        r->first_other[0] = x;
        r->first_other[1] = y;
    }
    return exact;
}

typedef struct racer_arg {
    race *r;
    int who;
    uint64_t rng;
} racer_arg;

/* The racer waiting in the barrier leaves it a cache-line transfer after the one that
 * arrived last, longer than a release takes: each racer first waits a random 0-127 turns
 * of a loop, so that in many rounds the two releases overlap. */
static void jitter(racer_arg *ra)
{
    unsigned turns = (unsigned)(test_rand(&ra->rng) >> 57);
    for (volatile unsigned i = 0; i < turns; i++) {
    }
}

/* Two racers sharing one CPU never overlap: each gets a CPU of its own when there are two. */
static void pick_cpus(race *r)
{
    cpu_set_t allowed;
    r->cpus[0] = r->cpus[1] = -1;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || CPU_COUNT(&allowed) < 2) return;
    for (int cpu = 0, found = 0; cpu < CPU_SETSIZE && found < 2; cpu++)
        if (CPU_ISSET(cpu, &allowed)) r->cpus[found++] = cpu;
}

static void *race_loop(void *arg)
{
    racer_arg *ra = arg;
    race *r = ra->r;
    if (r->cpus[ra->who] >= 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(r->cpus[ra->who], &one);
        pthread_setaffinity_np(pthread_self(), sizeof one, &one); /* best effort */
    }
    for (int round = 0; round < r->rounds; round++) {
        if (ra->who == 0 && !r->stopped && !prepare(r, round)) {
            r->setup_failed++;
            r->target[0] = r->target[1] = NULL; /* both calls then fail with BP_EINVAL */
        }
        spin_wait(&r->barrier); /* go */
        if (r->stopped) break;  /* the pool is broken: stop before the damage spreads */
        jitter(ra);
        r->rc[ra->who] = race_call(r, ra->who);
        spin_wait(&r->barrier); /* both done */
        if (ra->who == 0 && !judge(r)) {
            /* said now: the broken pool may abort this thread's exit before main can say it */
            fprintf(stderr, "race kind %d, round %d: the two calls returned %d and %d\n", (int)r->kind, round,
                    r->rc[0], r->rc[1]);
            r->stopped = true;
        }
    }
    return NULL;
}

static void run_race(race *r)
{
    pthread_t t[2];
    pick_cpus(r);
    racer_arg args[2] = {{r, 0, 0x9e3779b97f4a7c15ull}, {r, 1, 0xbf58476d1ce4e5b9ull}};
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, race_loop, &args[i]), 0);
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
}

static uint64_t active_buffers(bp_allocator *a)
{
    bp_allocator_stats s;
    assert_int_equal(bp_allocator_get_stats(a, &s, sizeof s), 0);
    return s.active_buffers;
}

static int compare_addresses(const void *x, const void *y)
{
    uintptr_t p = (uintptr_t) * (void *const *)x, q = (uintptr_t) * (void *const *)y;
    return (p > q) - (p < q);
}

/* Buffer i's pattern: its 32-bit words numbered from i * 131 (size a multiple of 4). */
static void pool_pattern(uint32_t *words, size_t size, int i)
{
    for (size_t k = 0; k < size / 4; k++) words[k] = (uint32_t)i * 131 + (uint32_t)k * 4;
}

/* The pool is intact: `n` buffers of `size` bytes are n distinct objects with disjoint
 * memory, each keeping a pattern of its own in every byte, and counted exactly. The
 * patterns go in and come out with one call per buffer (under TSan, one range check). */
static void check_pool_intact(bp_allocator *a, size_t size, int n)
{
    uint64_t before = active_buffers(a);
    bp_buf **bufs = calloc((size_t)n, sizeof *bufs);
    void **objects = calloc((size_t)n, sizeof *objects);
    void **memory = calloc((size_t)n, sizeof *memory);
    uint32_t *pattern = malloc(size), *got = malloc(size);
    assert_true(bufs != NULL && objects != NULL && memory != NULL && pattern != NULL && got != NULL);
    for (int i = 0; i < n; i++) {
        bufs[i] = bp_alloc(a, size);
        assert_non_null(bufs[i]);
        objects[i] = bufs[i];
        memory[i] = bp_data(bufs[i], 0);
        assert_non_null(memory[i]);
        pool_pattern(pattern, size, i);
        assert_int_equal(bp_set_bytes(bufs[i], 0, pattern, size), 0);
    }
    assert_int_equal(active_buffers(a), before + (uint64_t)n);
    qsort(objects, (size_t)n, sizeof *objects, compare_addresses);
    qsort(memory, (size_t)n, sizeof *memory, compare_addresses);
    for (int i = 1; i < n; i++) {
        assert_ptr_not_equal(objects[i - 1], objects[i]);
        assert_true((uintptr_t)memory[i - 1] + size <= (uintptr_t)memory[i]);
    }
    for (int i = 0; i < n; i++) {
        pool_pattern(pattern, size, i);
        assert_int_equal(bp_get_bytes(bufs[i], 0, got, size), 0);
        assert_memory_equal(got, pattern, size);
        assert_int_equal(bp_release(bufs[i]), 1);
    }
    assert_int_equal(active_buffers(a), before);
    free(bufs);
    free(objects);
    free(memory);
    free(pattern);
    free(got);
}

/* background_purge 0 where a test counts what owners take back themselves: the background
 * purge takes the stack of an owner that took nothing back for a pass, which a stalled test
 * thread can be. */
static bp_allocator *checked_allocator_with(unsigned leak_detection, unsigned background_purge)
{
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.chunk_size = CHUNK;
    cfg.release_check = 1;
    cfg.leak_detection = leak_detection;
    cfg.background_purge = background_purge;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    return a;
}

static bp_allocator *checked_allocator_leak(unsigned leak_detection) { return checked_allocator_with(leak_detection, 1); }

static bp_allocator *checked_allocator(void) { return checked_allocator_leak(BP_LEAK_DISABLED); }

/* Races `kind` for the scaled number of rounds on `a` and checks every round's outcome
 * and the pool afterwards. */
static void race_and_check(bp_allocator *a, race_kind kind)
{
    race *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->a = a;
    r->kind = kind;
    r->rounds = ROUNDS / scale_divisor();
    if (kind == RACE_BOTH_REMOTE) {
        r->premade = calloc((size_t)r->rounds, sizeof *r->premade);
        assert_non_null(r->premade);
        for (int i = 0; i < r->rounds; i++) assert_non_null(r->premade[i] = bp_alloc(a, 64));
    }
    run_race(r);
    if (r->exact != r->rounds)
        fail_msg("kind %d: round %d of %d not exact: %d with both releases succeeding, %d other (%d, %d), "
                 "%d setups failed",
                 (int)kind, r->exact + 1, r->rounds, r->both_freed, r->other, r->first_other[0], r->first_other[1],
                 r->setup_failed);
    /* Every buffer of the rounds went back exactly once (the racers' caches went back to
     * the arenas when they exited). */
    assert_int_equal(active_buffers(a), 0);
    check_pool_intact(a, 64, 2000);
    check_pool_intact(a, 32, 2000);
    check_pool_intact(a, UNCACHED_SIZE, 64);
    free(r->premade);
    free(r);
}

static void test_owner_and_remote_release_race(void **state)
{
    (void)state;
    bp_allocator *a = checked_allocator();
    race_and_check(a, RACE_OWNER_VS_REMOTE);
    bp_allocator_destroy(a);
}

static void test_two_remote_releases_race(void **state)
{
    (void)state;
    bp_allocator *a = checked_allocator();
    race_and_check(a, RACE_BOTH_REMOTE);
    bp_allocator_destroy(a);
}

static void test_uncached_and_huge_releases_race(void **state)
{
    (void)state;
    bp_allocator *a = checked_allocator();
    race_and_check(a, RACE_UNCACHED);
    race_and_check(a, RACE_HUGE);
    bp_allocator_destroy(a);
}

static void test_view_and_composite_releases_race(void **state)
{
    (void)state;
    bp_allocator *a = checked_allocator();
    race_and_check(a, RACE_RETAINED_SLICE);
    race_and_check(a, RACE_PLAIN_SLICE);
    race_and_check(a, RACE_COMPOSITE);
    bp_allocator_destroy(a);
}

static void test_release_n_races(void **state)
{
    (void)state;
    bp_allocator *a = checked_allocator();
    race_and_check(a, RACE_RELEASE_N);
    race_and_check(a, RACE_RELEASE_N_MIXED);
    bp_allocator_destroy(a);
}

static void test_retain_races_the_last_release(void **state)
{
    (void)state;
    bp_allocator *a = checked_allocator();
    race_and_check(a, RACE_RETAIN);
    bp_allocator_destroy(a);
}

/* Every buffer tracked: the release that wins drops the leak record, which the call that
 * loses must not read (TSan checks). Nothing is reported: every buffer went back once. */
static long leaks_reported;

static void count_reports(const char *report, void *user_data)
{
    (void)report;
    (void)user_data;
    leaks_reported++;
}

static void test_tracked_buffers_race(void **state)
{
    (void)state;
    bp_allocator *a = checked_allocator_leak(BP_LEAK_PARANOID);
    bp_leak_sink previous = bp_set_leak_sink(count_reports, NULL);
    race_and_check(a, RACE_RETAIN);
    race_and_check(a, RACE_OWNER_VS_REMOTE);
    assert_int_equal(bp_leak_report(a), 0);
    bp_allocator_destroy(a);
    bp_set_leak_sink(previous, NULL);
    assert_int_equal(leaks_reported, 0);
}

/* Unpooled allocators always check: a double free() would corrupt the C heap. */
static void test_unpooled_releases_race(void **state)
{
    (void)state;
    bp_allocator *a = bp_allocator_new_unpooled(NULL);
    assert_non_null(a);
    race_and_check(a, RACE_OWNER_VS_REMOTE);
    race_and_check(a, RACE_RETAINED_SLICE);
    bp_allocator_destroy(a);
}

/* ---- retains and releases of references that are held: exact in both modes ---- */

typedef struct churn {
    bp_buf *b;
    int iterations;
    spin_barrier *start;
} churn;

static void *retain_release_churn(void *arg)
{
    churn *c = arg;
    spin_wait(c->start);
    for (int i = 0; i < c->iterations; i++) {
        if (bp_retain(c->b) != 0 || bp_retain_n(c->b, 2) != 0) return (void *)1;
        if (bp_release(c->b) != 0 || bp_release_n(c->b, 2) != 0) return (void *)1; /* ours: never the last */
    }
    for (int i = 0; i < c->iterations; i++)
        if (bp_retain(c->b) != 0) return (void *)1; /* kept: counted at the end */
    return NULL;
}

static void retain_release_race(bp_allocator *a)
{
    spin_barrier start = {0, 0, 0};
    int iterations = 20000 / scale_divisor();
    for (int kind = 0; kind < 2; kind++) {
        bp_buf *root = bp_alloc(a, kind == 0 ? 64 : UNCACHED_SIZE);
        assert_non_null(root);
        churn c = {root, iterations, &start};
        pthread_t t[2];
        for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, retain_release_churn, &c), 0);
        for (int i = 0; i < 2; i++) {
            void *result = NULL;
            assert_int_equal(pthread_join(t[i], &result), 0);
            assert_null(result);
        }
        assert_int_equal(bp_refcnt(root), 1 + 2 * iterations);
        assert_int_equal(bp_release_n(root, (uint32_t)(2 * iterations)), 0);
        assert_int_equal(bp_refcnt(root), 1);
        assert_int_equal(bp_release(root), 1);
        assert_int_equal(bp_refcnt(root), 0);
        assert_int_equal(bp_retain(root), BP_EFREED); /* a count at 0 stays there */
        assert_int_equal(bp_release(root), BP_EFREED);
    }
    assert_int_equal(active_buffers(a), 0);
}

static void test_retains_and_releases_of_a_shared_count_are_exact(void **state)
{
    (void)state;
    bp_allocator *plain = bp_allocator_new(NULL, NULL);
    assert_non_null(plain);
    retain_release_race(plain);
    bp_allocator_destroy(plain);
    bp_allocator *checked = checked_allocator();
    retain_release_race(checked);
    bp_allocator_destroy(checked);
}

/* ---- single-threaded: the mode's effect on each path ---- */

/* With release_check no buffer carries a tag a thread cache takes back unchecked, yet
 * released buffers still go round through the thread cache (same object, same memory). */
static void test_checked_buffers_still_reuse_the_thread_cache(void **state)
{
    (void)state;
    bp_allocator *a = checked_allocator();
    bp_buf *b = bp_alloc(a, 64);
    assert_non_null(b);
    void *memory = bp_data(b, 0);
    assert_int_equal(bp_release(b), 1);
    bp_buf *again = bp_alloc(a, 64);
    assert_ptr_equal(again, b);
    assert_ptr_equal(bp_data(again, 0), memory);
    assert_int_equal(bp_release(again), 1);
    assert_int_equal(bp_release(again), BP_EFREED);
    assert_int_equal(bp_retain(again), BP_EFREED);
    bp_allocator_stats s;
    assert_int_equal(bp_allocator_get_stats(a, &s, sizeof s), 0);
    assert_int_equal(s.active_buffers, 0);
    assert_true(s.cache_hits >= 1);
    bp_allocator_destroy(a);
}

/* Every place that gives a buffer a release tag gives a release_check allocator's buffers
 * BP__TAG_NONE, which no thread cache matches: fresh regions, cache hits, growth into a new
 * region, batches from the arena's cache, remote releases taken back, uncached sizes. */
static bool all_untagged(bp_buf **bufs, int n)
{
    for (int i = 0; i < n; i++)
        if (bufs[i]->head.release_tag != BP__TAG_NONE) return false;
    return true;
}

static void *release_all(void *arg)
{
    bp_buf **bufs = arg;
    for (int i = 0; i < 100; i++)
        if (bp_release(bufs[i]) != 1) return arg;
    return NULL; /* exiting pushes them to their owner */
}

static void test_checked_buffers_carry_no_release_tag(void **state)
{
    (void)state;
    enum { BURST = 1000 };
    bp_buf *bufs[BURST];
    bp_allocator *plain = bp_allocator_new(NULL, NULL);
    bufs[0] = bp_alloc(plain, 64);
    if (!BP__POISONS) assert_int_not_equal(bufs[0]->head.release_tag, BP__TAG_NONE); /* the default: tagged */
    bp_release(bufs[0]);
    bp_allocator_destroy(plain);

    bp_allocator *a = checked_allocator_with(BP_LEAK_DISABLED, 0); /* counts the owner's take-backs */
    for (int round = 0; round < 2; round++) { /* fresh regions, then thread and arena caches */
        for (int i = 0; i < BURST; i++) assert_non_null(bufs[i] = bp_alloc(a, 64));
        assert_true(all_untagged(bufs, BURST));
        for (int i = 0; i < BURST; i++) assert_int_equal(bp_release(bufs[i]), 1);
    }
    bp_buf *grown = bp_alloc(a, 64);
    assert_int_equal(bp_ensure_writable(grown, 4096), 0); /* a new region, another class */
    assert_true(all_untagged(&grown, 1));
    assert_int_equal(bp_release(grown), 1);
    for (int i = 0; i < 100; i++) bufs[i] = bp_alloc(a, 64);
    assert_null(run_on_thread(release_all, bufs));
    for (int i = 0; i < BURST; i++) assert_non_null(bufs[i] = bp_alloc(a, 64)); /* takes them back */
    bp_allocator_stats s;
    assert_int_equal(bp_allocator_get_stats(a, &s, sizeof s), 0);
    assert_int_equal(s.remote_drained, 100);
    assert_true(all_untagged(bufs, BURST));
    for (int i = 0; i < BURST; i++) assert_int_equal(bp_release(bufs[i]), 1);
    for (int round = 0; round < 2; round++) { /* uncached: a run, then the run cache */
        for (int i = 0; i < 8; i++) assert_non_null(bufs[i] = bp_alloc(a, UNCACHED_SIZE));
        assert_true(all_untagged(bufs, 8));
        for (int i = 0; i < 8; i++) assert_int_equal(bp_release(bufs[i]), 1);
    }
    assert_int_equal(active_buffers(a), 0);
    bp_allocator_destroy(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checked_buffers_still_reuse_the_thread_cache),
        cmocka_unit_test(test_checked_buffers_carry_no_release_tag),
        cmocka_unit_test(test_owner_and_remote_release_race),
        cmocka_unit_test(test_two_remote_releases_race),
        cmocka_unit_test(test_uncached_and_huge_releases_race),
        cmocka_unit_test(test_view_and_composite_releases_race),
        cmocka_unit_test(test_release_n_races),
        cmocka_unit_test(test_retain_races_the_last_release),
        cmocka_unit_test(test_tracked_buffers_race),
        cmocka_unit_test(test_unpooled_releases_race),
        cmocka_unit_test(test_retains_and_releases_of_a_shared_count_are_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
