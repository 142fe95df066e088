/* SPDX-License-Identifier: MIT */
/*
 * Process and thread lifecycle: fork while other threads allocate and release (the child
 * allocates, releases what it inherited, counts exactly, makes and destroys allocators),
 * and while a thread is inside a multi-step change of its cache; an allocator destroyed
 * while another thread still caches its state; exact statistics after every injected
 * failure; misuse reporting (BYTEPOOL_ABORT_ON_MISUSE, and the function each report
 * names). Smaller under TSan (BP_TEST_SCALE=tsan).
 */
#include "test_util.h"

#include "allocator.h"
#include "thread.h"
#include "os.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

static bool under_tsan(void)
{
    const char *scale = getenv("BP_TEST_SCALE");
    return scale != NULL && strcmp(scale, "tsan") == 0;
}

static bp_allocator_stats stats_of(const bp_allocator *a)
{
    bp_allocator_stats s;
    assert_int_equal(bp_allocator_get_stats(a, &s, sizeof s), 0);
    return s;
}

/* A buffer's contents: a seed in its first 8 bytes and its complement in its last 8. */
static void stamp(bp_buf *b, uint64_t seed)
{
    size_t cap = bp_capacity(b);
    bp_set_u64(b, 0, seed);
    bp_set_u64(b, cap - 8, ~seed);
    bp_set_writer_index(b, cap);
}

/* The seed a stamped buffer holds; false when its two ends disagree. */
static bool stamped(const bp_buf *b, uint64_t *seed)
{
    uint64_t head = 0, tail = 0;
    size_t cap = bp_capacity(b);
    if (cap < 16 || bp_get_u64(b, 0, &head) != 0 || bp_get_u64(b, cap - 8, &tail) != 0) return false;
    if (seed != NULL) *seed = head;
    return tail == ~head;
}

/* ---------------------------------------------------------------------------------------
 * fork() while other threads allocate and release
 * ------------------------------------------------------------------------------------- */

#define FORK_WORKERS_MAX 8
#define FORK_RING 32
#define FORK_MAILBOXES 16
#define CHILD_BUFS 48
#define CHILD_DEADLINE_MS 10000

static const size_t fork_sizes[] = {64, 200, 1000, 4096, 9000, 16384, 40000, 65536, 100000};
#define NSIZES (sizeof fork_sizes / sizeof fork_sizes[0])

typedef struct fork_world {
    bp_allocator *a;
    atomic_bool stop;
    atomic_int failures;
    atomic_ulong rounds;
    /* Buffers handed between threads: whoever takes one out releases it (remotely, mostly). */
    _Atomic(bp_buf *) mailbox[FORK_MAILBOXES];
} fork_world;

typedef struct fork_worker_args {
    fork_world *world;
    uint64_t seed;
} fork_worker_args;

static void release_checked(fork_world *w, bp_buf *b)
{
    if (b == NULL) return;
    if (!stamped(b, NULL) || bp_release(b) != 1) atomic_fetch_add(&w->failures, 1);
}

static void *fork_worker(void *arg)
{
    fork_worker_args *args = arg;
    fork_world *w = args->world;
    uint64_t rng = args->seed;
    bp_buf *ring[FORK_RING] = {0};
    while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
        bp_buf *b = bp_alloc(w->a, fork_sizes[test_rand(&rng) % NSIZES]);
        if (b == NULL) {
            atomic_fetch_add(&w->failures, 1);
            break;
        }
        stamp(b, test_rand(&rng));
        unsigned slot = (unsigned)(test_rand(&rng) % FORK_RING);
        release_checked(w, ring[slot]);
        ring[slot] = b;
        if (test_rand(&rng) % 4 == 0) { /* one to another thread, one from it */
            unsigned m = (unsigned)(test_rand(&rng) % FORK_MAILBOXES);
            release_checked(w, atomic_exchange(&w->mailbox[m], ring[slot]));
            ring[slot] = NULL;
        }
        atomic_fetch_add_explicit(&w->rounds, 1, memory_order_relaxed);
    }
    for (unsigned i = 0; i < FORK_RING; i++) release_checked(w, ring[i]);
    return NULL;
}

/* What the child checks, each failure with its own exit code (the child must not use
 * cmocka). `inherited` was allocated by a worker thread, which the child does not have;
 * `own` by the forking thread. */
static int child_checks(bp_allocator *def, bp_buf *inherited, uint64_t inherited_seed, bp_buf *own,
                        uint64_t own_seed)
{
    bp_allocator_stats s0;
    if (bp_allocator_get_stats(def, &s0, sizeof s0) != 0) return 10;
    /* Only this thread is left: the workers' states were released as at their exit. */
    if (s0.threads != 1 || s0.thread_caches != 1) return 11;
    if (s0.active_buffers < 2) return 12;
    bp_buf *bufs[CHILD_BUFS];
    for (unsigned i = 0; i < CHILD_BUFS; i++) {
        bufs[i] = bp_alloc(def, fork_sizes[i % NSIZES]);
        if (bufs[i] == NULL) return 13;
        stamp(bufs[i], 1000u + i);
    }
    bp_allocator_stats s1;
    bp_allocator_get_stats(def, &s1, sizeof s1);
    if (s1.active_buffers != s0.active_buffers + CHILD_BUFS) return 14;
    /* A new allocator, used by this thread alone. */
    bp_allocator *mine = bp_allocator_new(NULL, NULL);
    if (mine == NULL) return 15;
    bp_buf *more[CHILD_BUFS];
    for (unsigned i = 0; i < CHILD_BUFS; i++) {
        more[i] = bp_alloc(mine, fork_sizes[(i * 5) % NSIZES]);
        if (more[i] == NULL) return 16;
        stamp(more[i], 5000u + i);
    }
    bp_allocator_stats m;
    bp_allocator_get_stats(mine, &m, sizeof m);
    if (m.active_buffers != CHILD_BUFS || m.threads != 1 || m.thread_caches != 1) return 17;
    for (unsigned i = 0; i < CHILD_BUFS; i++) {
        uint64_t seed;
        if (!stamped(more[i], &seed) || seed != 5000u + i || bp_release(more[i]) != 1) return 18;
    }
    bp_allocator_get_stats(mine, &m, sizeof m);
    if (m.active_buffers != 0 || m.active_bytes != 0) return 19;
    bp_allocator_destroy(mine);
    /* What the parent's threads left: intact, and released here. */
    uint64_t seed;
    if (!stamped(inherited, &seed) || seed != inherited_seed) return 20;
    if (bp_release(inherited) != 1) return 21;
    if (!stamped(own, &seed) || seed != own_seed) return 22;
    if (bp_release(own) != 1) return 23;
    for (unsigned i = 0; i < CHILD_BUFS; i++) {
        if (!stamped(bufs[i], &seed) || seed != 1000u + i || bp_release(bufs[i]) != 1) return 24;
    }
    bp_allocator_get_stats(def, &s1, sizeof s1);
    if (s1.active_buffers != s0.active_buffers - 2) return 25;
    if (s1.threads != 1) return 26;
    /* The remote release of the worker's buffer goes back from here (its owner is gone). */
    if (bp_thread_cache_flush(def) < 0) return 27;
    bp_allocator_get_stats(def, &s1, sizeof s1);
    if (s1.cached_entries != 0 || s1.active_buffers != s0.active_buffers - 2) return 28;
    /* And the default allocator keeps serving. */
    bp_buf *last = bp_alloc(def, 300);
    if (last == NULL || bp_release(last) != 1) return 29;
    return 0;
}

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* Waits for the child until the deadline, then kills it: a hang is a failure (-1), never
 * a hang of the test. Returns the exit code, or 100 + the signal that ended it. */
static int wait_with_deadline(pid_t pid)
{
    uint64_t deadline = now_ms() + CHILD_DEADLINE_MS;
    for (;;) {
        int status;
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
        if (got < 0) return -2;
        if (now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        struct timespec pause = {0, 200 * 1000};
        nanosleep(&pause, NULL);
    }
}

/* Fewer forks under TSan and Valgrind, which slow every worker down. Under TSan the parent
 * is checked as usual (the fork handlers take and let go of every
 * lock while the workers run); a child of a multi-threaded process runs with TSan's checks
 * off (TSan's choice: it cannot know which of its own locks the vanished threads held), and
 * still makes all of its own checks. */
static void test_fork_while_threads_allocate(void **state)
{
    (void)state;
    int forks = under_tsan() || RUNNING_ON_VALGRIND ? 50 : 200;
    fork_world *w = calloc(1, sizeof *w);
    w->a = bp_allocator_default();
    assert_non_null(w->a);
    /* A busy worker per CPU (at least two, so that releases cross threads): every CPU is
     * inside the allocator when fork() comes; more would only wait for a CPU. */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int workers = cpus < 2 ? 2 : cpus > FORK_WORKERS_MAX ? FORK_WORKERS_MAX : (int)cpus;
    pthread_t threads[FORK_WORKERS_MAX];
    fork_worker_args args[FORK_WORKERS_MAX];
    for (int i = 0; i < workers; i++) {
        args[i] = (fork_worker_args){w, 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1)};
        assert_int_equal(pthread_create(&threads[i], NULL, fork_worker, &args[i]), 0);
    }
    int hangs = 0, failed = 0, first_failure = 0;
    unsigned next_box = 0;
    for (int f = 0; f < forks && hangs == 0; f++) {
        /* A worker's buffer, taken from a mailbox (its owner is a worker thread). */
        bp_buf *inherited = NULL;
        while (inherited == NULL && atomic_load(&w->failures) == 0)
            inherited = atomic_exchange(&w->mailbox[next_box++ % FORK_MAILBOXES], NULL);
        if (inherited == NULL) break;
        uint64_t inherited_seed = 0;
        assert_true(stamped(inherited, &inherited_seed));
        bp_buf *own = bp_alloc(w->a, fork_sizes[(unsigned)f % NSIZES]);
        assert_non_null(own);
        uint64_t own_seed = 77u + (unsigned)f;
        stamp(own, own_seed);
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) _exit(child_checks(w->a, inherited, inherited_seed, own, own_seed));
        int code = wait_with_deadline(pid);
        if (code == -1) hangs++;
        if (code != 0 && failed++ == 0) first_failure = code;
        assert_int_equal(bp_release(inherited), 1);
        assert_int_equal(bp_release(own), 1);
    }
    atomic_store(&w->stop, true);
    for (int i = 0; i < workers; i++) pthread_join(threads[i], NULL);
    for (unsigned m = 0; m < FORK_MAILBOXES; m++) release_checked(w, atomic_exchange(&w->mailbox[m], NULL));
    if (hangs != 0 || failed != 0)
        fail_msg("%d of %d children failed (%d hung; first exit code %d)", failed, forks, hangs, first_failure);
    assert_int_equal(atomic_load(&w->failures), 0);
    assert_true(atomic_load(&w->rounds) > 0);
    assert_int_equal(stats_of(w->a).active_buffers, 0);
    free(w);
}

/* ---------------------------------------------------------------------------------------
 * An allocator destroyed while another thread, alive, still caches its state
 * ------------------------------------------------------------------------------------- */

typedef struct destroy_race {
    bp_allocator *doomed, *other;
    pthread_barrier_t used, destroyed;
    atomic_bool done;
    bp_buf *foreign;      /* allocated by the main thread from `other`, released by the thread */
    long released, rounds;
    int bad;
} destroy_race;

/* Allocates and releases from `other` (through both the inline paths and the library's
 * copies); counts what went wrong. */
static void churn_other(destroy_race *r, int rounds)
{
    bp_buf *(*alloc_copy)(bp_allocator *, size_t) = bp_alloc;
    int (*release_copy)(bp_buf *) = bp_release;
    for (int i = 0; i < rounds; i++) {
        size_t size = fork_sizes[(unsigned)i % NSIZES];
        bp_buf *b = i % 2 ? bp_alloc(r->other, size) : alloc_copy(r->other, size);
        int err = 0;
        bp_buf *c = bp_alloc_ex(r->other, 128, 1024, &err);
        if (b == NULL || c == NULL) {
            r->bad++;
            continue;
        }
        stamp(b, (uint64_t)i);
        uint64_t seed;
        if (!stamped(b, &seed) || seed != (uint64_t)i) r->bad++;
        if ((i % 2 ? bp_release(b) : release_copy(b)) != 1) r->bad++;
        if (bp_release_n(c, 1) != 1) r->bad++;
        r->rounds++;
    }
}

static void *use_then_idle(void *arg)
{
    destroy_race *r = arg;
    bp_buf *b = bp_alloc(r->doomed, 256); /* this thread's state for `doomed`, cached */
    bp_write_u32(b, 7);
    if (bp_release(b) != 1) r->bad++;
    pthread_barrier_wait(&r->used);
    pthread_barrier_wait(&r->destroyed); /* idle, alive, while `doomed` goes */
    /* First a release of another allocator's buffer (the inline path looks at the cached
     * state), then allocations and releases. */
    r->released = bp_release(r->foreign);
    churn_other(r, under_tsan() ? 200 : 2000);
    return NULL;
}

static void test_destroy_while_an_idle_thread_caches_its_state(void **state)
{
    (void)state;
    destroy_race *r = calloc(1, sizeof *r);
    r->doomed = bp_allocator_new(NULL, NULL);
    r->other = bp_allocator_new(NULL, NULL);
    pthread_barrier_init(&r->used, NULL, 2);
    pthread_barrier_init(&r->destroyed, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, use_then_idle, r);
    pthread_barrier_wait(&r->used);
    bp_allocator_destroy(r->doomed);
    /* Allocated after the destroy, so that the freed state's memory may be reused by now. */
    r->foreign = bp_alloc(r->other, 256);
    stamp(r->foreign, 42);
    pthread_barrier_wait(&r->destroyed);
    pthread_join(t, NULL);
    assert_int_equal(r->released, 1);
    assert_int_equal(r->bad, 0);
    assert_int_equal(r->rounds, under_tsan() ? 200 : 2000);
    assert_true(bp_thread_cache_flush(r->other) >= 0);
    bp_allocator_stats s = stats_of(r->other);
    assert_int_equal(s.active_buffers, 0);
    assert_int_equal(s.active_bytes, 0);
    assert_int_equal(s.remote_releases, 1);
    assert_int_equal(s.threads, 1); /* the thread exited; this one is left */
    pthread_barrier_destroy(&r->used);
    pthread_barrier_destroy(&r->destroyed);
    bp_allocator_destroy(r->other);
    free(r);
}

static void *use_once_then_churn(void *arg)
{
    destroy_race *r = arg;
    bp_buf *b = bp_alloc(r->doomed, 256);
    if (bp_release(b) != 1) r->bad++;
    churn_other(r, 10); /* the cached state is now `other`'s */
    pthread_barrier_wait(&r->used);
    while (!atomic_load(&r->done)) churn_other(r, 10);
    churn_other(r, 100);
    return NULL;
}

static void test_destroy_while_a_busy_thread_uses_another(void **state)
{
    (void)state;
    destroy_race *r = calloc(1, sizeof *r);
    r->doomed = bp_allocator_new(NULL, NULL);
    r->other = bp_allocator_new(NULL, NULL);
    pthread_barrier_init(&r->used, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, use_once_then_churn, r);
    pthread_barrier_wait(&r->used);
    bp_allocator_destroy(r->doomed); /* while the thread churns through `other` */
    atomic_store(&r->done, true);
    pthread_join(t, NULL);
    assert_int_equal(r->bad, 0);
    assert_true(r->rounds >= 110);
    bp_allocator_stats s = stats_of(r->other);
    assert_int_equal(s.active_buffers, 0);
    assert_int_equal(s.active_bytes, 0);
    pthread_barrier_destroy(&r->used);
    bp_allocator_destroy(r->other);
    free(r);
}

/* ---------------------------------------------------------------------------------------
 * Statistics after every injected failure
 * ------------------------------------------------------------------------------------- */

/* The counts agree with `live` buffers of `live_bytes` bytes (size-class bytes when pooled),
 * and regions taken from the arenas but not given back are exactly those of the live
 * buffers and the caches. */
static void expect_counts(const bp_allocator *a, uint64_t live, size_t live_bytes)
{
    bp_allocator_stats s = stats_of(a);
    assert_int_equal(s.active_buffers, live);
    assert_int_equal(s.active_bytes, live_bytes);
    assert_int_equal(s.allocations - s.deallocations, live + s.cached_entries + s.arena_cached_entries);
}

typedef struct stateless {
    bp_allocator *a;
    bp_buf **bufs;
    int n;
    int released;
    int err_alloc_ex, err_trim, err_flush;
    bp_buf *got;
} stateless;

/* A thread that never used `a`, with no memory for its state: every release still
 * releases, every call that needs the state says BP_ENOMEM. */
static void *release_without_state(void *arg)
{
    stateless *s = arg;
    bp__inject_thread_state_failure(true);
    for (int i = 0; i < s->n; i++) s->released += bp_release(s->bufs[i]);
    s->got = bp_alloc(s->a, 100);
    bp_alloc_ex(s->a, 100, 200, &s->err_alloc_ex);
    s->err_trim = bp_thread_cache_trim(s->a);
    s->err_flush = bp_thread_cache_flush(s->a);
    bp__inject_thread_state_failure(false);
    return NULL;
}

static void release_on_stateless_thread(bp_allocator *a, bool pooled)
{
    enum { N = 40 };
    bp_buf *bufs[N];
    size_t bytes = 0;
    for (int i = 0; i < N; i++) {
        bufs[i] = bp_alloc(a, fork_sizes[(unsigned)i % NSIZES]);
        assert_non_null(bufs[i]);
        bytes += pooled ? bufs[i]->region.length : bp_capacity(bufs[i]);
    }
    expect_counts(a, N, bytes);
    stateless s = {.a = a, .bufs = bufs, .n = N};
    run_on_thread(release_without_state, &s);
    assert_int_equal(s.released, N);
    assert_null(s.got);
    assert_int_equal(s.err_alloc_ex, BP_ENOMEM);
    assert_int_equal(s.err_trim, BP_ENOMEM);
    assert_int_equal(s.err_flush, BP_ENOMEM);
    expect_counts(a, 0, 0);
    /* And this thread, which has its state, carries on. */
    bp_buf *b = bp_alloc(a, 1000);
    assert_non_null(b);
    expect_counts(a, 1, pooled ? b->region.length : 1000);
    assert_int_equal(bp_release(b), 1);
    expect_counts(a, 0, 0);
}

static void test_release_on_a_thread_without_state_is_counted(void **state)
{
    (void)state;
    bp_allocator *a = bp_allocator_new(NULL, NULL);
    release_on_stateless_thread(a, true);
    bp_allocator_destroy(a);
    bp_allocator *u = bp_allocator_new_unpooled(NULL);
    release_on_stateless_thread(u, false);
    bp_allocator_destroy(u);
}

/* Views and retained views released where no state can be made: their root's count is
 * exact too. */
static void *release_views_without_state(void *arg)
{
    stateless *s = arg;
    bp__inject_thread_state_failure(true);
    for (int i = 0; i < s->n; i++) s->released += bp_release(s->bufs[i]);
    bp__inject_thread_state_failure(false);
    return NULL;
}

static void test_views_released_without_state_are_counted(void **state)
{
    (void)state;
    bp_allocator *a = bp_allocator_new(NULL, NULL);
    bp_buf *root = bp_alloc(a, 4096);
    bp_buf *bufs[3];
    bufs[0] = bp_retained_slice(root, 0, 100, NULL);
    bufs[1] = bp_retained_duplicate(root, NULL);
    bufs[2] = root; /* the last reference goes last */
    assert_non_null(bufs[0]);
    assert_non_null(bufs[1]);
    expect_counts(a, 1, 4096);
    stateless s = {.a = a, .bufs = bufs, .n = 3};
    run_on_thread(release_views_without_state, &s);
    assert_int_equal(s.released, 3);
    expect_counts(a, 0, 0);
    bp_allocator_destroy(a);
}

static void test_map_failures_change_no_count(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    bp_buf *kept = bp_alloc(a, 1000); /* maps the first chunk */
    size_t kept_bytes = kept->region.length;
    expect_counts(a, 1, kept_bytes);
    bp__os_inject_map_failure(0);
    int err = 0;
    assert_null(bp_alloc_ex(a, (size_t)8 << 20, (size_t)8 << 20, &err)); /* huge */
    assert_int_equal(err, BP_ENOMEM);
    expect_counts(a, 1, kept_bytes);
    /* Growth past what the chunk can give fails, the buffer as it was. */
    assert_int_equal(bp_ensure_writable(kept, (size_t)16 << 20), BP_ENOMEM);
    assert_int_equal(bp_capacity(kept), 1000);
    expect_counts(a, 1, kept_bytes);
    /* Small allocations fill the chunk, then fail when it is full. */
    bp_buf *many[600];
    int n = 0;
    err = 0;
    while (n < 600 && (many[n] = bp_alloc_ex(a, 16384, 16384, &err)) != NULL) n++;
    assert_int_equal(err, BP_ENOMEM);
    assert_true(n > 0 && n < 600);
    size_t bytes = kept_bytes + (size_t)n * 16384;
    expect_counts(a, 1 + (uint64_t)n, bytes);
    bp__os_inject_map_failure(-1);
    for (int i = 0; i < n; i++) assert_int_equal(bp_release(many[i]), 1);
    assert_int_equal(bp_release(kept), 1);
    expect_counts(a, 0, 0);
    bp_allocator_destroy(a);
}

typedef struct batchless {
    bp_buf **bufs;
    int n, released;
} batchless;

static void *release_without_batches(void *arg)
{
    batchless *b = arg;
    bp__remote_inject_batch_failure(true);
    for (int i = 0; i < b->n; i++) b->released += bp_release(b->bufs[i]);
    bp__remote_inject_batch_failure(false);
    return NULL;
}

static void test_batch_failures_change_no_count(void **state)
{
    (void)state;
    enum { N = 100 };
    bp_allocator *a = bp_allocator_new(NULL, NULL);
    bp_buf *bufs[N];
    size_t bytes = 0;
    for (int i = 0; i < N; i++) {
        bufs[i] = bp_alloc(a, fork_sizes[(unsigned)i % NSIZES]);
        bytes += bufs[i]->region.length;
    }
    expect_counts(a, N, bytes);
    batchless b = {bufs + N / 2, N / 2, 0};
    run_on_thread(release_without_batches, &b);
    assert_int_equal(b.released, N / 2);
    bytes = 0;
    for (int i = 0; i < N / 2; i++) bytes += bufs[i]->region.length;
    expect_counts(a, N / 2, bytes);
    for (int i = 0; i < N / 2; i++) assert_int_equal(bp_release(bufs[i]), 1);
    expect_counts(a, 0, 0);
    assert_int_equal(stats_of(a).remote_releases, 0);
    bp_allocator_destroy(a);
}

/* A fork while another thread is inside a multi-step change of its cache (caught, through a
 * test hook, where a full bin has given its older half away and still lists it): the fork
 * waits for the change to end, so the child, which releases that thread's cache, gives
 * nothing back twice. */
static atomic_bool gap_armed, gap_entered;

static void pause_in_gap(void)
{
    if (!atomic_exchange(&gap_armed, false)) return;
    atomic_store(&gap_entered, true);
    struct timespec pause = {0, 300 * 1000 * 1000};
    nanosleep(&pause, NULL);
}

typedef struct gap_args {
    bp_allocator *a;
    pthread_barrier_t forked;
} gap_args;

static void *overflow_a_bin(void *arg)
{
    gap_args *g = arg;
    bp_buf *bufs[32];
    for (int i = 0; i < 32; i++) bufs[i] = bp_alloc(g->a, 64);
    atomic_store(&gap_armed, true);
    for (int i = 0; i < 32; i++) bp_release(bufs[i]); /* the bin (8) overflows on the way */
    pthread_barrier_wait(&g->forked); /* alive until the child is made */
    return NULL;
}

static int gap_child_checks(bp_allocator *a)
{
    /* Reaching here, the vanished thread's cache went back: each region once. */
    for (unsigned i = 0; i < a->config.arenas; i++)
        if (!bp__arena_check(&a->arenas[i])) return 30;
    bp_buf *b = bp_alloc(a, 64);
    if (b == NULL || bp_release(b) != 1) return 31;
    bp_allocator_stats s;
    bp_allocator_get_stats(a, &s, sizeof s);
    return s.threads == 1 ? 0 : 32;
}

static void test_fork_waits_for_a_change_of_a_thread_cache(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.small_cache_size = 8;
    gap_args g = {.a = bp_allocator_new(&cfg, NULL)};
    assert_non_null(g.a);
    pthread_barrier_init(&g.forked, NULL, 2);
    atomic_store(&gap_entered, false);
    bp__tcache_set_gap_hook(pause_in_gap);
    pthread_t t;
    pthread_create(&t, NULL, overflow_a_bin, &g);
    while (!atomic_load(&gap_entered)) {
        struct timespec pause = {0, 100 * 1000};
        nanosleep(&pause, NULL);
    }
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(gap_child_checks(g.a));
    int code = wait_with_deadline(pid);
    pthread_barrier_wait(&g.forked);
    pthread_join(t, NULL);
    bp__tcache_set_gap_hook(NULL);
    assert_int_equal(code, 0);
    expect_counts(g.a, 0, 0);
    pthread_barrier_destroy(&g.forked);
    bp_allocator_destroy(g.a);
}

/* ---------------------------------------------------------------------------------------
 * Misuse reporting
 * ------------------------------------------------------------------------------------- */

/* Modes run in a fresh process (run_self) with BYTEPOOL_ABORT_ON_MISUSE=1. */
static int mode_double_release_new_only(void)
{
    bp_allocator *a = bp_allocator_new(NULL, NULL);
    bp_buf *b = bp_alloc(a, 64);
    bp_release(b);
    bp_release(b); /* aborts here */
    return 1;
}

static int mode_misuse_before_any_allocator(void)
{
    bp_retain(NULL); /* aborts here */
    return 1;
}

static int mode_program_handler_wins(void)
{
    misuse_capture_start();
    bp_allocator *a = bp_allocator_new_unpooled(NULL);
    bp_buf *b = bp_alloc(a, 64);
    bp_release(b);
    if (bp_release(b) != BP_EFREED || last_misuse.count != 1) return 2;
    return strcmp(last_misuse.func, "bp_release") == 0 ? 0 : 3;
}

static void test_env_abort_without_the_default_allocator(void **state)
{
    (void)state;
    char err[1024];
    int status = run_self("double-release-new-only", "BYTEPOOL_ABORT_ON_MISUSE", "1", err, sizeof err);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    assert_non_null(strstr(err, "bytepool: bp_release: buffer "));
    assert_non_null(strstr(err, " already released (refCnt: 0, decrement: 1) (BP_EFREED)"));
    status = run_self("misuse-before-any-allocator", "BYTEPOOL_ABORT_ON_MISUSE", "1", err, sizeof err);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    assert_non_null(strstr(err, "bytepool: bp_retain: buffer is NULL (BP_EINVAL)"));
    /* A handler the program installs replaces the environment's. */
    status = run_self("program-handler-wins", "BYTEPOOL_ABORT_ON_MISUSE", "1", err, sizeof err);
    assert_int_equal(exit_code(status), 0);
    assert_string_equal(err, "");
    /* Anything but 1 leaves misuse unreported. */
    status = run_self("double-release-new-only", "BYTEPOOL_ABORT_ON_MISUSE", "0", err, sizeof err);
    assert_int_equal(exit_code(status), 1);
    assert_string_equal(err, "");
}

/* The call's report names `func`. */
#define EXPECT_REPORT(call, code, func_name)                                                \
    do {                                                                                    \
        last_misuse.count = 0;                                                              \
        assert_int_equal((call), (code));                                                   \
        assert_int_equal(last_misuse.count, 1);                                             \
        assert_int_equal(last_misuse.err, (code));                                          \
        assert_string_equal(last_misuse.func, (func_name));                                 \
    } while (0)

static void test_reports_name_the_function_called(void **state)
{
    (void)state;
    misuse_capture_start();
    bp_allocator *a = bp_allocator_new(NULL, NULL);
    int (*release_copy)(bp_buf *) = bp_release; /* the library's extern copy */
    bp_buf *b = bp_alloc(a, 64);
    assert_int_equal(bp_release(b), 1);
    EXPECT_REPORT(bp_release(b), BP_EFREED, "bp_release");
    EXPECT_REPORT(release_copy(b), BP_EFREED, "bp_release");
    EXPECT_REPORT(bp_release_n(b, 1), BP_EFREED, "bp_release_n");
    EXPECT_REPORT(bp_retain(b), BP_EFREED, "bp_retain");
    EXPECT_REPORT(bp_retain_n(b, 2), BP_EFREED, "bp_retain_n");
    EXPECT_REPORT(bp_release(NULL), BP_EINVAL, "bp_release");
    EXPECT_REPORT(release_copy(NULL), BP_EINVAL, "bp_release");
    EXPECT_REPORT(bp_retain(NULL), BP_EINVAL, "bp_retain");
    EXPECT_REPORT(bp_release_n(NULL, 1), BP_EINVAL, "bp_release_n");
    assert_null(bp_alloc(NULL, 8));
    assert_string_equal(last_misuse.func, "bp_alloc");
    assert_null(bp_alloc(a, BP_CAPACITY_LIMIT + 1));
    assert_int_equal(last_misuse.err, BP_EOVERFLOW);
    assert_string_equal(last_misuse.func, "bp_alloc");
    assert_null(bp_alloc_ex(NULL, 8, 8, NULL));
    assert_string_equal(last_misuse.func, "bp_alloc_ex");
    /* Through views, whose counts are their root's or their own. */
    bp_buf *root = bp_alloc(a, 64);
    bp_buf *slice = bp_slice(root, 0, 8, NULL);
    bp_buf *retained = bp_retained_slice(root, 0, 8, NULL);
    EXPECT_REPORT(bp_release_n(slice, 5), BP_EREFCNT, "bp_release_n");
    EXPECT_REPORT(bp_release_n(retained, 2), BP_EREFCNT, "bp_release_n");
    assert_int_equal(bp_release(retained), 1);
    EXPECT_REPORT(bp_release(retained), BP_EFREED, "bp_release");
    EXPECT_REPORT(bp_retain(retained), BP_EFREED, "bp_retain");
    assert_int_equal(bp_retain_n(root, INT32_MAX - 1), 0);
    EXPECT_REPORT(bp_retain(slice), BP_EREFCNT, "bp_retain");
    assert_null(bp_retained_slice(root, 0, 8, NULL)); /* a reference on the root too many */
    assert_string_equal(last_misuse.func, "bp_retained_slice");
    assert_int_equal(bp_release_n(root, INT32_MAX - 1), 0);
    assert_int_equal(bp_release(slice), 1); /* the root's last reference */
    EXPECT_REPORT(bp_release(slice), BP_EFREED, "bp_release");
    /* Functions made of others. */
    bp_buf *x = bp_alloc(a, 8);
    int out = 0;
    EXPECT_REPORT(bp_get_bool(x, 8, &out), BP_ERANGE, "bp_get_bool");
    EXPECT_REPORT(bp_read_bool(x, &out), BP_ERANGE, "bp_read_bool");
    EXPECT_REPORT(bp_set_bool(x, 9, 1), BP_ERANGE, "bp_set_bool");
    EXPECT_REPORT(bp_equals(x, NULL), BP_EINVAL, "bp_equals");
    assert_int_equal(bp_write_bool(x, 1), 0);
    assert_int_equal(bp_read_bool(x, &out), 0);
    assert_int_equal(out, 1);
    assert_int_equal(bp_release(x), 1);
    EXPECT_REPORT(bp_write_bool(x, 1), BP_EFREED, "bp_write_bool");
    misuse_capture_stop();
    bp_allocator_destroy(a);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        if (strcmp(argv[1], "double-release-new-only") == 0) return mode_double_release_new_only();
        if (strcmp(argv[1], "misuse-before-any-allocator") == 0) return mode_misuse_before_any_allocator();
        if (strcmp(argv[1], "program-handler-wins") == 0) return mode_program_handler_wins();
        return 127;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reports_name_the_function_called),
        cmocka_unit_test(test_env_abort_without_the_default_allocator),
        cmocka_unit_test(test_release_on_a_thread_without_state_is_counted),
        cmocka_unit_test(test_views_released_without_state_are_counted),
        cmocka_unit_test(test_map_failures_change_no_count),
        cmocka_unit_test(test_batch_failures_change_no_count),
        cmocka_unit_test(test_destroy_while_an_idle_thread_caches_its_state),
        cmocka_unit_test(test_destroy_while_a_busy_thread_uses_another),
        cmocka_unit_test(test_fork_while_threads_allocate),
        cmocka_unit_test(test_fork_waits_for_a_change_of_a_thread_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
