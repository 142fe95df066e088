/* SPDX-License-Identifier: MIT */
/*
 * bytepool-bench: bytepool against glibc malloc, jemalloc, tcmalloc and mimalloc on buffer
 * traffic, all measured in the same run.
 *
 * Each (workload, backend) measurement runs in a child process of this binary. The malloc
 * family is the child's real malloc: glibc as is, the others preloaded (LD_PRELOAD) from
 * Debian's packages. A malloc "buffer" is malloc(size) plus the same reads and writes the
 * bytepool version does, so it does strictly less work than a ref-counted ByteBuf.
 * Backends are interleaved within each repetition; the table shows medians. Resident
 * memory (mixed, churn) is read from /proc/self/statm in that child, so each backend is
 * measured in a process of its own, with nothing left by another.
 *
 *   bytepool-bench [--quick] [--reps N] [--only WORKLOAD] [--json FILE]
 *
 * bench/plot.py turns the JSON into the plots in docs/.
 */
#include <bytepool.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__GNUC__)
#  define ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#  define ALWAYS_INLINE static inline
#endif

/* ---------------------------------------------------------------------------------------
 * Backends: what a "buffer" is. Workloads are written once against `ops` and inlined with
 * a constant ops, so each backend gets its own straight-line code.
 * ------------------------------------------------------------------------------------- */

typedef struct ops {
    /* The allocator handle (NULL for malloc), read once per workload into a local, as
     * Netty's PoolBufTest holds its allocator in a local variable. Read from a global at
     * every call, it would be a load the compiler cannot hoist past the calls: ~0.25 ns of
     * a 5 ns poolbuftest iteration that malloc, which takes no handle, does not pay. */
    void *(*context)(void);
    void *(*alloc)(void *ctx, size_t size);
    void (*release)(void *buf);
    void (*write_u32)(void *buf, uint32_t v);       /* at the writer index, which advances */
    uint32_t (*read_u32)(void *buf);                /* at the reader index, which advances */
    void (*set_u8)(void *buf, size_t index, uint8_t v);
    uint8_t (*get_u8)(void *buf, size_t index);
    void (*fill)(void *buf, size_t size, uint8_t v); /* every byte, as a reader from a socket would */
} ops;

static bp_allocator *bench_allocator;

/* Every op is forced inline into the workload (both families alike): the compiler would
 * otherwise keep some of bytepool's accessors out of line - their inline bodies carry the
 * call to the library's slow half - and measure an extra call per op that malloc's
 * two-instruction versions do not pay. */

ALWAYS_INLINE void *bp_ops_context(void) { return bench_allocator; }
ALWAYS_INLINE void *bp_ops_alloc(void *ctx, size_t size) { return bp_alloc(ctx, size); }
ALWAYS_INLINE void bp_ops_release(void *buf) { bp_release(buf); }
ALWAYS_INLINE void bp_ops_write_u32(void *buf, uint32_t v) { bp_write_u32(buf, v); }
ALWAYS_INLINE uint32_t bp_ops_read_u32(void *buf)
{
    uint32_t v = 0;
    bp_read_u32(buf, &v);
    return v;
}
ALWAYS_INLINE void bp_ops_set_u8(void *buf, size_t index, uint8_t v) { bp_set_u8(buf, index, v); }
ALWAYS_INLINE uint8_t bp_ops_get_u8(void *buf, size_t index)
{
    uint8_t v = 0;
    bp_get_u8(buf, index, &v);
    return v;
}
/* The zero-copy way a producer fills a buffer: straight through the raw pointer (the
 * int written next lands at offset 0, as in the malloc version). */
ALWAYS_INLINE void bp_ops_fill(void *buf, size_t size, uint8_t v) { memset(bp_data(buf, 0), v, size); }
static const ops bytepool_ops = {bp_ops_context, bp_ops_alloc, bp_ops_release, bp_ops_write_u32,
                                 bp_ops_read_u32, bp_ops_set_u8, bp_ops_get_u8, bp_ops_fill};

/* malloc buffers: the same big-endian int at offset 0, read back from offset 0. */
ALWAYS_INLINE void *m_context(void) { return NULL; }
ALWAYS_INLINE void *m_alloc(void *ctx, size_t size)
{
    (void)ctx;
    return malloc(size);
}
ALWAYS_INLINE void m_release(void *buf) { free(buf); }
ALWAYS_INLINE void m_write_u32(void *buf, uint32_t v)
{
    uint32_t be = __builtin_bswap32(v);
    memcpy(buf, &be, 4);
}
ALWAYS_INLINE uint32_t m_read_u32(void *buf)
{
    uint32_t be;
    memcpy(&be, buf, 4);
    return __builtin_bswap32(be);
}
ALWAYS_INLINE void m_set_u8(void *buf, size_t index, uint8_t v) { ((uint8_t *)buf)[index] = v; }
ALWAYS_INLINE uint8_t m_get_u8(void *buf, size_t index) { return ((uint8_t *)buf)[index]; }
ALWAYS_INLINE void m_fill(void *buf, size_t size, uint8_t v) { memset(buf, v, size); }
static const ops malloc_ops = {m_context, m_alloc, m_release, m_write_u32, m_read_u32, m_set_u8, m_get_u8, m_fill};

typedef struct backend {
    const char *name;
    const char *preload; /* library to preload, NULL for none */
    bool bytepool;       /* uses the bytepool ops */
    bool pooled;
} backend;

static const backend backends[] = {
    {"bytepool", NULL, true, true},
    {"bytepool-unpooled", NULL, true, false},
    {"glibc", NULL, false, false},
#ifdef BP_BENCH_JEMALLOC
    {"jemalloc", BP_BENCH_JEMALLOC, false, false},
#endif
#ifdef BP_BENCH_TCMALLOC
    {"tcmalloc", BP_BENCH_TCMALLOC, false, false},
#endif
#ifdef BP_BENCH_MIMALLOC
    {"mimalloc", BP_BENCH_MIMALLOC, false, false},
#endif
};
#define NBACKENDS (sizeof backends / sizeof backends[0])

/* ---------------------------------------------------------------------------------------
 * Measuring
 * ------------------------------------------------------------------------------------- */

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Resident bytes of this process (/proc/self/statm), read without allocating: while the
 * mixed workload watches memory after its release, the malloc under test must see no call,
 * and fopen would allocate its FILE with it. */
static size_t resident_bytes(void)
{
    char text[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return 0;
    text[n] = '\0';
    char *end;
    (void)strtoul(text, &end, 10); /* the mapped size, then the resident pages */
    return strtoul(end, NULL, 10) * (size_t)sysconf(_SC_PAGESIZE);
}

/* Sleeps until `ms` milliseconds after `origin` (CLOCK_MONOTONIC): samples every 100 ms
 * without drift. */
static void sleep_until(const struct timespec *origin, uint64_t ms)
{
    struct timespec at = *origin;
    at.tv_sec += (time_t)(ms / 1000);
    at.tv_nsec += (long)(ms % 1000) * 1000000;
    if (at.tv_nsec >= 1000000000) {
        at.tv_sec++;
        at.tv_nsec -= 1000000000;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == EINTR) continue;
}

static uint64_t rng_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* What a child reports. */
typedef struct result {
    double ns_per_op;
    uint64_t ops;
    uint64_t checksum;
    double peak_live, peak_rss, rss_after; /* mixed and churn */
    char samples[32768];                   /* mixed: [[live, rss], ...]; churn: [[ms, live,
                                              rss], ...]; threads: each thread's own ns per
                                              buffer */
    char extra[16384];                     /* more members of the child's JSON object, each
                                              with its leading comma */
    size_t extra_used;
} result;

/* Appends members to r->extra (printf-style, starting with a comma). */
static void extra_add(result *r, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void extra_add(result *r, const char *format, ...)
{
    if (r->extra_used >= sizeof r->extra - 1) return;
    va_list args;
    va_start(args, format);
    int n = vsnprintf(r->extra + r->extra_used, sizeof r->extra - r->extra_used, format, args);
    va_end(args);
    size_t room = sizeof r->extra - r->extra_used;
    if (n > 0) r->extra_used += (size_t)n < room ? (size_t)n : room - 1;
}

/* ---------------------------------------------------------------------------------------
 * Workloads
 * ------------------------------------------------------------------------------------- */

/* poolbuftest: Netty's PoolBufTest in a loop: allocate 256 B, write an int, read it back,
 * release. The request/response buffer of a protocol codec. */
ALWAYS_INLINE void poolbuftest_loop(const ops *o, uint64_t iterations, result *r)
{
    void *ctx = o->context();
    uint64_t sum = 0;
    double start = now_ns();
    for (uint64_t i = 0; i < iterations; i++) {
        void *b = o->alloc(ctx, 256);
        o->write_u32(b, (uint32_t)i);
        sum += o->read_u32(b);
        o->release(b);
    }
    r->ns_per_op = (now_ns() - start) / (double)iterations;
    r->ops = iterations;
    r->checksum = sum;
}

/* batch-S: allocate 1000 buffers of S bytes, touch each (an int at the front, a byte at the
 * end), then release all: a burst of messages decoded, then flushed.
 * alloc-S (touch false): the batch as it is worded - allocate 1000, release them all
 * - with no byte touched: what the allocator alone costs, without batch-S's accessors (for
 * bytepool four checked calls on the buffer, for malloc four plain loads and stores). */
ALWAYS_INLINE uint64_t burst_round(const ops *o, void *ctx, void **bufs, size_t size, bool touch)
{
    uint64_t sum = 0;
    for (int i = 0; i < 1000; i++) {
        void *b = o->alloc(ctx, size);
        if (touch) {
            o->write_u32(b, (uint32_t)i);
            o->set_u8(b, size - 1, (uint8_t)i);
        }
        bufs[i] = b;
    }
    for (int i = 0; i < 1000; i++) {
        sum += touch ? o->read_u32(bufs[i]) + o->get_u8(bufs[i], size - 1) : bufs[i] != NULL;
        o->release(bufs[i]);
    }
    return sum;
}

ALWAYS_INLINE void burst_loop(const ops *o, size_t size, uint64_t rounds, bool touch, result *r)
{
    void **bufs = malloc(1000 * sizeof *bufs);
    /* One round untimed first, for every backend: the steady state of repeated bursts is
     * measured, not the first touch of fresh memory (page faults, once per process), which
     * at 64 KiB would otherwise be a third of the time of every allocator alike. */
    void *ctx = o->context();
    uint64_t sum = burst_round(o, ctx, bufs, size, touch);
    double start = now_ns();
    for (uint64_t k = 0; k < rounds; k++) sum += burst_round(o, ctx, bufs, size, touch);
    r->ns_per_op = (now_ns() - start) / (double)(rounds * 1000);
    r->ops = rounds * 1000;
    r->checksum = sum;
    free(bufs);
}

/* random-slots: Netty's allocator benchmark pattern: 8192 slots; at a random slot release
 * what is there and allocate a random size up to 64 KiB. Long-lived mixed sizes. */
ALWAYS_INLINE void random_slots_loop(const ops *o, uint64_t steps, result *r)
{
    enum { SLOTS = 8192 };
    void *ctx = o->context();
    void **slot = calloc(SLOTS, sizeof *slot);
    uint64_t rng = 0x2545F4914F6CDD1Dull, sum = 0;
    double start = now_ns();
    for (uint64_t i = 0; i < steps; i++) {
        uint64_t x = rng_next(&rng);
        size_t at = x % SLOTS;
        size_t size = 8 + (x >> 20) % (65536 - 8);
        if (slot[at] != NULL) {
            sum += o->read_u32(slot[at]);
            o->release(slot[at]);
        }
        void *b = o->alloc(ctx, size);
        o->write_u32(b, (uint32_t)i);
        slot[at] = b;
    }
    r->ns_per_op = (now_ns() - start) / (double)steps;
    for (size_t i = 0; i < SLOTS; i++)
        if (slot[i] != NULL) o->release(slot[i]);
    r->ops = steps;
    r->checksum = sum;
    free(slot);
}

/* xthread: a producer allocates and fills, a consumer reads and releases, through a
 * bounded single-producer single-consumer ring: the event loop -> worker hand-off. */
typedef struct ring {
    _Atomic uint64_t head; /* written by the consumer */
    char pad1[56];
    _Atomic uint64_t tail; /* written by the producer */
    char pad2[56];
    void *slot[1024];
    const ops *o;
    uint64_t count;
    uint64_t sum;
} ring;

ALWAYS_INLINE void consume(ring *q)
{
    const ops *o = q->o;
    uint64_t head = 0, sum = 0;
    while (head < q->count) {
        uint64_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
        while (head < tail) {
            void *b = q->slot[head % 1024];
            sum += o->read_u32(b);
            o->release(b);
            head++;
        }
        atomic_store_explicit(&q->head, head, memory_order_release);
    }
    q->sum = sum;
}

static void *consumer_bytepool(void *arg)
{
    consume(arg);
    return NULL;
}

static void *consumer_malloc(void *arg)
{
    consume(arg);
    return NULL;
}

ALWAYS_INLINE void xthread_loop(const ops *o, void *(*consumer)(void *), uint64_t count, result *r)
{
    void *ctx = o->context();
    ring *q = calloc(1, sizeof *q);
    q->o = o;
    q->count = count;
    pthread_t thread;
    double start = now_ns();
    pthread_create(&thread, NULL, consumer, q);
    uint64_t tail = 0;
    while (tail < count) {
        while (tail - atomic_load_explicit(&q->head, memory_order_acquire) >= 1024) {
        }
        void *b = o->alloc(ctx, 256);
        o->write_u32(b, (uint32_t)tail);
        q->slot[tail % 1024] = b;
        tail++;
        if ((tail & 15) == 0 || tail == count) atomic_store_explicit(&q->tail, tail, memory_order_release);
    }
    pthread_join(thread, NULL);
    r->ns_per_op = (now_ns() - start) / (double)count;
    r->ops = count;
    r->checksum = q->sum;
    free(q);
}

/* ---------------------------------------------------------------------------------------
 * Memory: bytepool's own account, the backends' purge calls, the watch after a release
 * ------------------------------------------------------------------------------------- */

/* bytepool's account of its memory at one moment, as the member "name": {...} (bytes),
 * next to what the bench holds (`live`, requested sizes) and resident memory over the
 * workload's baseline (`rss`): it says where resident memory beyond the live bytes is.
 * malloc_heap and malloc_used are glibc's (mallinfo2): bytepool keeps its metadata there
 * (bp_buf slabs, chunk bitmaps, cache arrays), as does the bench its own arrays. */
static void bytepool_snapshot(result *r, const char *name, double live, double rss)
{
    bp_allocator_stats s;
    if (bench_allocator == NULL || bp_allocator_get_stats(bench_allocator, &s, sizeof s) != 0) return;
    static bp_chunk_stats chunks[4096];
    bp_class_stats classes[128];
    size_t chunk_free = 0, small_free = 0;
    for (unsigned i = 0; i < s.arenas; i++) {
        long n = bp_arena_chunk_stats(bench_allocator, i, chunks, 4096, sizeof chunks[0]);
        for (long k = 0; k < n && k < 4096; k++) chunk_free += chunks[k].free_bytes;
        long m = bp_arena_class_stats(bench_allocator, i, classes, 128, sizeof classes[0]);
        for (long k = 0; k < m && k < 128; k++) small_free += classes[k].slots_free * classes[k].size;
    }
    size_t heap = 0, heap_used = 0;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
    struct mallinfo2 mi = mallinfo2();
    heap = mi.arena + mi.hblkhd;
    heap_used = mi.uordblks + mi.hblkhd;
#endif
    extra_add(r,
              ",\"%s\":{\"live\":%.0f,\"rss\":%.0f,\"mapped\":%zu,\"chunks\":%zu,\"retained_chunks\":%zu,"
              "\"active\":%zu,\"thread_caches\":%zu,\"arena_cache\":%zu,\"run_cache\":%zu,\"small_free\":%zu,"
              "\"chunk_free\":%zu,\"dirty\":%zu,\"purged\":%llu,\"buffers\":%llu,\"malloc_heap\":%zu,"
              "\"malloc_used\":%zu}",
              name, live, rss, s.mapped_bytes, s.chunks, s.retained_chunks, s.active_bytes, s.cached_bytes,
              s.arena_cached_bytes, s.arena_cached_run_bytes, small_free, chunk_free, s.dirty_bytes,
              (unsigned long long)s.purged_bytes, (unsigned long long)s.active_buffers, heap, heap_used);
}

typedef void (*any_function)(void);

/* A function of the preloaded malloc, or NULL. */
static any_function find_function(const char *name)
{
    void *p = dlsym(RTLD_DEFAULT, name);
    any_function f = NULL;
    if (p != NULL) memcpy(&f, &p, sizeof f);
    return f;
}

/* Calls the backend's way to give free memory back to the OS now, as bp_allocator_purge
 * does for bytepool, and returns its name (NULL: the library has none). Like
 * bp_allocator_purge, none of them empties the thread caches but mimalloc's. */
static const char *explicit_purge(const backend *be)
{
    if (be->bytepool && be->pooled) {
        bp_allocator_purge(bench_allocator);
        return "bp_allocator_purge";
    }
    if (be->preload == NULL) { /* glibc, and bytepool-unpooled, whose buffers are glibc's */
        malloc_trim(0);
        return "malloc_trim(0)";
    }
    any_function f = find_function("mallctl");
    if (f != NULL) {
        ((int (*)(const char *, void *, size_t *, void *, size_t))f)("arena.4096.purge", NULL, NULL, NULL, 0);
        return "mallctl(arena.<all>.purge)";
    }
    if ((f = find_function("MallocExtension_ReleaseFreeMemory")) != NULL) {
        ((void (*)(void))f)();
        return "MallocExtension_ReleaseFreeMemory()";
    }
    if ((f = find_function("mi_collect")) != NULL) {
        ((void (*)(bool))f)(true);
        return "mi_collect(true)";
    }
    return NULL;
}

enum { WATCH_MS = 2000, WATCH_STEP_MS = 100, WATCH_SAMPLES = WATCH_MS / WATCH_STEP_MS + 1 };

/* After everything is released: resident memory at once and then every 100 ms for 2 s,
 * the program making no call to the allocator under test meanwhile, nor to malloc (samples
 * go to locals, read with open and read, and are written out after the 2 s), as a program
 * that goes idle. Then the backend's purge call; for bytepool also a flush of this
 * thread's cache with another purge. Members: release [[ms, rss], ...], rss_2s,
 * purge_call, rss_purged (bytepool: rss_flushed, and snapshots bp_idle, bp_purged,
 * bp_flushed). */
static void watch_release(const backend *be, result *r, size_t baseline)
{
    double at_ms[WATCH_SAMPLES], rss[WATCH_SAMPLES];
    struct timespec origin;
    clock_gettime(CLOCK_MONOTONIC, &origin);
    double start = now_ns();
    for (int k = 0; k < WATCH_SAMPLES; k++) {
        if (k > 0) sleep_until(&origin, (uint64_t)k * WATCH_STEP_MS);
        at_ms[k] = (now_ns() - start) / 1e6;
        rss[k] = (double)resident_bytes() - (double)baseline;
    }
    r->rss_after = rss[0];
    extra_add(r, ",\"release\":[");
    for (int k = 0; k < WATCH_SAMPLES; k++) extra_add(r, "%s[%.0f,%.0f]", k ? "," : "", at_ms[k], rss[k]);
    extra_add(r, "],\"rss_2s\":%.0f", rss[WATCH_SAMPLES - 1]);
    bool pooled = be->bytepool && be->pooled;
    if (pooled) bytepool_snapshot(r, "bp_idle", 0, rss[WATCH_SAMPLES - 1]);
    const char *call = explicit_purge(be);
    if (call == NULL) return;
    double purged = (double)resident_bytes() - (double)baseline;
    extra_add(r, ",\"purge_call\":\"%s\",\"rss_purged\":%.0f", call, purged);
    if (!pooled) return;
    bytepool_snapshot(r, "bp_purged", 0, purged);
    bp_thread_cache_flush(bench_allocator);
    bp_allocator_purge(bench_allocator);
    double flushed = (double)resident_bytes() - (double)baseline;
    extra_add(r, ",\"rss_flushed\":%.0f", flushed);
    bytepool_snapshot(r, "bp_flushed", 0, flushed);
}

/* mixed: 20 000 live buffers, each step replaces a random one; sizes 70% 64 B-1 KiB,
 * 25% 1-64 KiB, 5% 64 KiB-1 MiB, log-uniform in each band: a server holding many
 * connections' buffers. Every buffer is filled (so its pages are resident, as a real
 * message's are) and checked; tracks live bytes against resident memory, then releases
 * every buffer and watches resident memory fall, or not (watch_release). */
static size_t mixed_size(uint64_t *rng)
{
    uint64_t x = rng_next(rng);
    unsigned band = (unsigned)(x % 100);
    double lo = band < 70 ? 64 : band < 95 ? 1024 : 65536;
    double hi = band < 70 ? 1024 : band < 95 ? 65536 : 1048576;
    double u = (double)(rng_next(rng) >> 11) / 9007199254740992.0;
    return (size_t)exp(log(lo) + u * (log(hi) - log(lo)));
}

ALWAYS_INLINE void mixed_loop(const ops *o, const backend *be, uint64_t steps, result *r)
{
    enum { LIVE = 20000 };
    void *ctx = o->context();
    void **live = calloc(LIVE, sizeof *live);
    size_t *sizes = calloc(LIVE, sizeof *sizes);
    uint64_t rng = 0x9E3779B97F4A7C15ull, sum = 0;
    size_t live_bytes = 0, baseline = resident_bytes();
    double peak_live = 0, peak_rss = 0, elapsed = 0;
    size_t used = 0;
    used += (size_t)snprintf(r->samples + used, sizeof r->samples - used, "[");
    for (int i = 0; i < LIVE; i++) {
        sizes[i] = mixed_size(&rng);
        live[i] = o->alloc(ctx, sizes[i]);
        o->fill(live[i], sizes[i], (uint8_t)sizes[i]);
        o->write_u32(live[i], (uint32_t)i);
        live_bytes += sizes[i];
        if (i % 1000 == 999 && used < sizeof r->samples - 64) /* the ramp up, for the plot */
            used += (size_t)snprintf(r->samples + used, sizeof r->samples - used, "%s[%zu,%zu]",
                                     i == 999 ? "" : ",", live_bytes, resident_bytes() - baseline);
    }
    uint64_t sample_every = steps / 40 > 0 ? steps / 40 : 1;
    double start = now_ns();
    for (uint64_t s = 0; s < steps; s++) {
        size_t at = rng_next(&rng) % LIVE;
        sum += o->read_u32(live[at]) + o->get_u8(live[at], sizes[at] - 1);
        o->release(live[at]);
        live_bytes -= sizes[at];
        sizes[at] = mixed_size(&rng);
        live[at] = o->alloc(ctx, sizes[at]);
        o->fill(live[at], sizes[at], (uint8_t)sizes[at]);
        o->write_u32(live[at], (uint32_t)s);
        live_bytes += sizes[at];
        if (s % sample_every == 0) {
            double pause = now_ns();
            double rss = (double)(resident_bytes() - baseline);
            if ((double)live_bytes > peak_live) peak_live = (double)live_bytes;
            if (rss > peak_rss) peak_rss = rss;
            if (used < sizeof r->samples - 64)
                used += (size_t)snprintf(r->samples + used, sizeof r->samples - used, ",[%zu,%.0f]",
                                         live_bytes, rss);
            start += now_ns() - pause; /* sampling is not part of the time */
        }
    }
    elapsed = now_ns() - start;
    if (be->bytepool && be->pooled)
        bytepool_snapshot(r, "bp_steady", (double)live_bytes, (double)resident_bytes() - (double)baseline);
    for (int i = 0; i < LIVE; i++) o->release(live[i]);
    watch_release(be, r, baseline); /* before the arrays are freed: free is a malloc call */
    snprintf(r->samples + used, sizeof r->samples - used, "]");
    r->ns_per_op = elapsed / (double)steps;
    r->ops = steps;
    r->checksum = sum;
    r->peak_live = peak_live;
    r->peak_rss = peak_rss;
    free(live);
    free(sizes);
}

/* churn: a producer thread allocates buffers of mixed's sizes (up to 1 MiB), fills them
 * and passes them through a bounded ring to a consumer thread, which checks each and
 * releases it once CHURN_HOLD newer ones are in flight (the producer waits at CHURN_HOLD +
 * CHURN_SLACK): about 65 MiB live (3072 buffers of 22 KiB on average), varying with the
 * sizes in flight, turned over for the whole run, every buffer released on the other
 * thread. The main thread samples resident memory and the bytes in flight (the bench's
 * own count) every 100 ms. The checksum is the number of buffers whose bytes were not what
 * the producer wrote: 0. */
enum { CHURN_RING = 4096, CHURN_HOLD = 3072, CHURN_SLACK = 64, CHURN_SAMPLE_MS = 100, CHURN_SETTLE_MS = 5000 };

typedef struct churn_slot {
    void *buf;
    size_t size;
} churn_slot;

typedef struct churn {
    _Atomic uint64_t head; /* buffers released; written by the consumer */
    _Atomic uint64_t released_bytes;
    char pad1[48];
    _Atomic uint64_t tail; /* buffers handed over; written by the producer */
    _Atomic uint64_t produced_bytes;
    char pad2[48];
    atomic_bool stop;  /* main -> producer: hand over no more */
    atomic_bool drain; /* main -> consumer: release everything left, then return */
    uint64_t errors;   /* the consumer's */
    churn_slot slot[CHURN_RING];
} churn;

/* A wait for the other thread: on a 2-vCPU machine the sampling thread needs a CPU too. */
static void churn_wait(void) { sched_yield(); }

ALWAYS_INLINE void churn_produce(const ops *o, churn *q)
{
    void *ctx = o->context();
    uint64_t rng = 0x2545F4914F6CDD1Dull, tail = 0, bytes = 0;
    while (!atomic_load_explicit(&q->stop, memory_order_relaxed)) {
        if (tail - atomic_load_explicit(&q->head, memory_order_acquire) >= CHURN_HOLD + CHURN_SLACK) {
            churn_wait();
            continue;
        }
        size_t size = mixed_size(&rng);
        void *b = o->alloc(ctx, size);
        o->fill(b, size, (uint8_t)tail);
        o->write_u32(b, (uint32_t)tail);
        q->slot[tail % CHURN_RING] = (churn_slot){b, size};
        bytes += size;
        atomic_store_explicit(&q->produced_bytes, bytes, memory_order_relaxed);
        atomic_store_explicit(&q->tail, ++tail, memory_order_release);
    }
}

ALWAYS_INLINE void churn_consume(const ops *o, churn *q)
{
    uint64_t head = 0, bytes = 0, errors = 0;
    for (;;) {
        bool drain = atomic_load_explicit(&q->drain, memory_order_acquire);
        uint64_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
        if (tail - head <= (drain ? 0 : CHURN_HOLD)) {
            if (drain) break; /* drain is set after the producer returned: tail is final */
            churn_wait();
            continue;
        }
        churn_slot s = q->slot[head % CHURN_RING];
        errors += o->read_u32(s.buf) != (uint32_t)head || o->get_u8(s.buf, s.size - 1) != (uint8_t)head;
        o->release(s.buf);
        bytes += s.size;
        atomic_store_explicit(&q->released_bytes, bytes, memory_order_relaxed);
        atomic_store_explicit(&q->head, ++head, memory_order_release);
    }
    q->errors = errors;
}

static void *churn_producer_bytepool(void *arg)
{
    churn_produce(&bytepool_ops, arg);
    return NULL;
}

static void *churn_consumer_bytepool(void *arg)
{
    churn_consume(&bytepool_ops, arg);
    return NULL;
}

static void *churn_producer_malloc(void *arg)
{
    churn_produce(&malloc_ops, arg);
    return NULL;
}

static void *churn_consumer_malloc(void *arg)
{
    churn_consume(&malloc_ops, arg);
    return NULL;
}

/* Runs churn for duration_ms. Besides the samples: peak_live and peak_rss, churn_live and
 * churn_rss (the last sample's), churn_end_ratio (resident / live there) and
 * churn_max_ratio (the highest resident / live of the samples after the first 5 s). */
static void churn_run(const backend *be, uint64_t duration_ms, result *r)
{
    churn *q = calloc(1, sizeof *q);
    if (q == NULL) exit(1);
    size_t baseline = resident_bytes();
    pthread_t producer, consumer;
    struct timespec origin;
    clock_gettime(CLOCK_MONOTONIC, &origin);
    double start = now_ns();
    pthread_create(&consumer, NULL, be->bytepool ? churn_consumer_bytepool : churn_consumer_malloc, q);
    pthread_create(&producer, NULL, be->bytepool ? churn_producer_bytepool : churn_producer_malloc, q);
    size_t used = (size_t)snprintf(r->samples, sizeof r->samples, "[");
    double live = 0, rss = 0, max_ratio = 0;
    for (uint64_t at = CHURN_SAMPLE_MS; at <= duration_ms; at += CHURN_SAMPLE_MS) {
        sleep_until(&origin, at);
        double ms = (now_ns() - start) / 1e6;
        live = (double)atomic_load_explicit(&q->produced_bytes, memory_order_relaxed) -
               (double)atomic_load_explicit(&q->released_bytes, memory_order_relaxed);
        rss = (double)resident_bytes() - (double)baseline;
        if (live > r->peak_live) r->peak_live = live;
        if (rss > r->peak_rss) r->peak_rss = rss;
        if (ms >= CHURN_SETTLE_MS && live > 0 && rss / live > max_ratio) max_ratio = rss / live;
        if (used < sizeof r->samples - 64)
            used += (size_t)snprintf(r->samples + used, sizeof r->samples - used, "%s[%.0f,%.0f,%.0f]",
                                     at == CHURN_SAMPLE_MS ? "" : ",", ms, live, rss);
    }
    snprintf(r->samples + used, sizeof r->samples - used, "]");
    /* While both threads still run: the producer's exit would flush its thread cache. */
    if (be->bytepool && be->pooled) bytepool_snapshot(r, "bp_end", live, rss);
    atomic_store_explicit(&q->stop, true, memory_order_relaxed);
    pthread_join(producer, NULL);
    double elapsed = now_ns() - start;
    uint64_t produced = atomic_load_explicit(&q->tail, memory_order_relaxed);
    atomic_store_explicit(&q->drain, true, memory_order_release);
    pthread_join(consumer, NULL);
    extra_add(r, ",\"churn_live\":%.0f,\"churn_rss\":%.0f,\"churn_end_ratio\":%.4f,\"churn_max_ratio\":%.4f", live,
              rss, live > 0 ? rss / live : 0, max_ratio);
    r->ns_per_op = produced ? elapsed / (double)produced : 0;
    r->ops = produced;
    r->checksum = q->errors;
    free(q);
}

/* threads-T: T threads each running batch-256 on their own: does throughput scale?
 *
 * Measured over a fixed window, as throughput benchmarks do: the threads warm up (one
 * untimed round each, as burst_loop does), meet at a barrier, and run rounds until main
 * says stop; each times its own rounds, and the throughput is the sum of the threads' rates.
 * With a fixed amount of work per thread instead, the run lasts as long as its slowest
 * thread: on a 2-vCPU VM any other work the guest or the host runs lands on one of the two,
 * and the other thread's idle wait at the end was counted as the allocator's. */
typedef struct thread_job {
    _Alignas(64) pthread_barrier_t *start; /* a line each: the jobs sit side by side */
    const atomic_bool *stop;
    uint64_t rounds;   /* completed in the window */
    double elapsed_ns; /* from the barrier to the end of the last round */
    uint64_t sum;
} thread_job;

ALWAYS_INLINE void batch_thread(const ops *o, thread_job *job)
{
    void *bufs[1000];
    void *ctx = o->context();
    job->sum = burst_round(o, ctx, bufs, 256, true);
    pthread_barrier_wait(job->start);
    double start = now_ns();
    uint64_t rounds = 0;
    while (!atomic_load_explicit(job->stop, memory_order_relaxed)) {
        job->sum += burst_round(o, ctx, bufs, 256, true);
        rounds++;
    }
    job->elapsed_ns = now_ns() - start;
    job->rounds = rounds;
}

static void *batch_thread_bytepool(void *arg)
{
    batch_thread(&bytepool_ops, arg);
    return NULL;
}

static void *batch_thread_malloc(void *arg)
{
    batch_thread(&malloc_ops, arg);
    return NULL;
}

static void threads_run(void *(*fn)(void *), unsigned nthreads, uint64_t window_ms, result *r)
{
    pthread_t threads[64];
    thread_job jobs[64];
    pthread_barrier_t start;
    atomic_bool stop = false;
    pthread_barrier_init(&start, NULL, nthreads + 1);
    for (unsigned t = 0; t < nthreads; t++) {
        jobs[t] = (thread_job){.start = &start, .stop = &stop};
        pthread_create(&threads[t], NULL, fn, &jobs[t]);
    }
    pthread_barrier_wait(&start); /* every thread warmed up: the window opens */
    struct timespec window = {(time_t)(window_ms / 1000), (long)(window_ms % 1000) * 1000000};
    while (nanosleep(&window, &window) != 0 && errno == EINTR) continue;
    atomic_store_explicit(&stop, true, memory_order_relaxed);
    double buffers_per_ns = 0;
    size_t used = (size_t)snprintf(r->samples, sizeof r->samples, "[");
    r->checksum = 0;
    r->ops = 0;
    for (unsigned t = 0; t < nthreads; t++) {
        pthread_join(threads[t], NULL);
        /* Every round sums the same values: per round, the checksum compares across windows
         * of different lengths. */
        r->checksum += jobs[t].sum / (jobs[t].rounds + 1);
        r->ops += jobs[t].rounds * 1000;
        if (jobs[t].elapsed_ns > 0) buffers_per_ns += (double)jobs[t].rounds * 1000 / jobs[t].elapsed_ns;
        if (used < sizeof r->samples - 32)
            used += (size_t)snprintf(r->samples + used, sizeof r->samples - used, "%s%.3f", t ? "," : "",
                                     jobs[t].rounds ? jobs[t].elapsed_ns / ((double)jobs[t].rounds * 1000) : 0.0);
    }
    snprintf(r->samples + used, sizeof r->samples - used, "]");
    pthread_barrier_destroy(&start);
    r->ns_per_op = buffers_per_ns > 0 ? 1 / buffers_per_ns : 0; /* per buffer, all threads together */
}

/* ---------------------------------------------------------------------------------------
 * Cases and the child side
 * ------------------------------------------------------------------------------------- */

typedef struct bench_case {
    char name[32];
    char kind[16];    /* poolbuftest, batch, alloc, random-slots, xthread, mixed, churn, threads */
    uint64_t param;   /* batch, alloc: size; threads: T */
    uint64_t count;   /* iterations, rounds or steps; threads, churn: the window in ms */
    int reps;         /* repetitions; 0: the run's */
    bool no_unpooled; /* not run on bytepool-unpooled */
} bench_case;

static void run_case(const backend *be, const bench_case *c, result *r)
{
    memset(r, 0, sizeof *r);
    if (be->bytepool) {
        int err = 0;
        /* BYTEPOOL_* variables apply (e.g. BYTEPOOL_LEAK_DETECTION=paranoid). */
        bp_config cfg;
        char why[200];
        if (bp_config_from_env(&cfg, why, sizeof why) != 0) {
            fprintf(stderr, "bench: %s\n", why);
            exit(1);
        }
        bench_allocator = be->pooled ? bp_allocator_new(&cfg, &err) : bp_allocator_new_unpooled(&err);
        if (bench_allocator == NULL) {
            fprintf(stderr, "bench: no allocator: %s\n", bp_strerror(err));
            exit(1);
        }
    }
    const ops *o = be->bytepool ? &bytepool_ops : &malloc_ops;
    if (strcmp(c->kind, "poolbuftest") == 0) {
        if (be->bytepool) poolbuftest_loop(&bytepool_ops, c->count, r);
        else poolbuftest_loop(&malloc_ops, c->count, r);
    } else if (strcmp(c->kind, "batch") == 0) { /* constant `touch`: each loop its own code */
        if (be->bytepool) burst_loop(&bytepool_ops, c->param, c->count, true, r);
        else burst_loop(&malloc_ops, c->param, c->count, true, r);
    } else if (strcmp(c->kind, "alloc") == 0) {
        if (be->bytepool) burst_loop(&bytepool_ops, c->param, c->count, false, r);
        else burst_loop(&malloc_ops, c->param, c->count, false, r);
    } else if (strcmp(c->kind, "random-slots") == 0) {
        if (be->bytepool) random_slots_loop(&bytepool_ops, c->count, r);
        else random_slots_loop(&malloc_ops, c->count, r);
    } else if (strcmp(c->kind, "xthread") == 0) {
        if (be->bytepool) xthread_loop(&bytepool_ops, consumer_bytepool, c->count, r);
        else xthread_loop(&malloc_ops, consumer_malloc, c->count, r);
    } else if (strcmp(c->kind, "mixed") == 0) {
        if (be->bytepool) mixed_loop(&bytepool_ops, be, c->count, r);
        else mixed_loop(&malloc_ops, be, c->count, r);
    } else if (strcmp(c->kind, "churn") == 0) {
        churn_run(be, c->count, r);
    } else if (strcmp(c->kind, "threads") == 0) {
        threads_run(be->bytepool ? batch_thread_bytepool : batch_thread_malloc, (unsigned)c->param,
                    c->count, r);
    }
    (void)o;
}

static int child_main(const char *backend_name, const bench_case *c)
{
    const backend *be = NULL;
    for (size_t i = 0; i < NBACKENDS; i++)
        if (strcmp(backends[i].name, backend_name) == 0) be = &backends[i];
    if (be == NULL) return 2;
    static result r; /* 48 KiB: not on the stack */
    run_case(be, c, &r);
    printf("{\"ns_per_op\":%.3f,\"ops\":%llu,\"checksum\":%llu,\"peak_live\":%.0f,\"peak_rss\":%.0f,"
           "\"rss_after\":%.0f,\"samples\":%s%s}\n",
           r.ns_per_op, (unsigned long long)r.ops, (unsigned long long)r.checksum, r.peak_live,
           r.peak_rss, r.rss_after, r.samples[0] ? r.samples : "[]", r.extra);
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * The parent: runs children, collects, reports
 * ------------------------------------------------------------------------------------- */

#define MAX_CASES 32
#define MAX_REPS 15

typedef struct measurement {
    double ns[MAX_REPS];
    int rep[MAX_REPS];           /* the repetition each run belongs to */
    char *raw[MAX_REPS];         /* each run's JSON object */
    uint64_t checksum;
    bool checksum_mismatch;
    int n;
} measurement;

static measurement table[MAX_CASES][NBACKENDS];

static bool run_child(const char *self, const backend *be, const bench_case *c, char *out, size_t out_len)
{
    int fds[2];
    if (pipe(fds) != 0) return false;
    pid_t pid = fork();
    if (pid < 0) return false;
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        if (be->preload != NULL) setenv("LD_PRELOAD", be->preload, 1);
        else unsetenv("LD_PRELOAD");
        char param[32], count[32];
        snprintf(param, sizeof param, "%llu", (unsigned long long)c->param);
        snprintf(count, sizeof count, "%llu", (unsigned long long)c->count);
        execl(self, self, "--child", be->name, c->kind, param, count, c->name, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    size_t used = 0;
    ssize_t n;
    while (used + 1 < out_len && (n = read(fds[0], out + used, out_len - 1 - used)) > 0) used += (size_t)n;
    out[used] = '\0';
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 && used > 0;
}

static double json_number(const char *json, const char *key)
{
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *at = strstr(json, pattern);
    return at ? strtod(at + strlen(pattern), NULL) : NAN;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *values, int n)
{
    double sorted[MAX_REPS];
    memcpy(sorted, values, (size_t)n * sizeof *values);
    qsort(sorted, (size_t)n, sizeof *sorted, compare_double);
    return n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

static void command_output(const char *command, char *out, size_t len)
{
    out[0] = '\0';
    FILE *p = popen(command, "r");
    if (p == NULL) return;
    if (fgets(out, (int)len, p) == NULL) out[0] = '\0';
    pclose(p);
    out[strcspn(out, "\n")] = '\0';
    for (char *c = out; *c; c++)
        if (*c == '"' || *c == '\\') *c = '\'';
}

/* Runs case `c` on backend `b` once in a child and records it as repetition `rep`. */
static void measure_once(const char *self, const bench_case *bc, int c, size_t b, int rep)
{
    measurement *m = &table[c][b];
    static char out[65536]; /* a child's JSON object: the churn's samples are ~20 KB */
    if (!run_child(self, &backends[b], bc, out, sizeof out)) {
        fprintf(stderr, "bench: %s on %s failed\n", bc->name, backends[b].name);
        return;
    }
    out[strcspn(out, "\n")] = '\0';
    uint64_t checksum = (uint64_t)json_number(out, "checksum");
    if (m->n == 0 && b == 0) m->checksum = checksum;
    if (table[c][0].n > 0 && checksum != table[c][0].checksum) m->checksum_mismatch = true;
    m->ns[m->n] = json_number(out, "ns_per_op");
    m->rep[m->n] = rep;
    m->raw[m->n] = strdup(out);
    if (m->raw[m->n] == NULL) {
        fprintf(stderr, "bench: out of memory\n");
        exit(1);
    }
    m->n++;
}

/* The median over a backend's runs of one member of their JSON objects (NAN if none has
 * it); `ratio_of`, if not NULL, divides each run's value by that member's first. */
static double median_member(const measurement *m, const char *key, const char *ratio_of)
{
    double values[MAX_REPS];
    int n = 0;
    for (int i = 0; i < m->n; i++) {
        double v = json_number(m->raw[i], key);
        if (ratio_of != NULL) v /= json_number(m->raw[i], ratio_of);
        if (!isnan(v)) values[n++] = v;
    }
    return n > 0 ? median(values, n) : NAN;
}

/* mixed's memory, medians over the runs: the peak, resident 2 s after everything was
 * released (no call made meanwhile), and after the backend's purge call. */
static void print_mixed_memory(const measurement *row)
{
    printf("\nmixed: memory (MiB; %% of the peak), median of the runs\n%-19s %9s %9s %8s %9s %9s  %s\n", "backend",
           "peak live", "peak RSS", "RSS/live", "RSS at 2s", "purged",
           "(purge call; bytepool: then with its thread cache flushed)");
    for (size_t b = 0; b < NBACKENDS; b++) {
        const measurement *m = &row[b];
        if (m->n == 0) continue;
        const char *raw = m->raw[0], *call = strstr(raw, "\"purge_call\":\"");
        char name[64] = "";
        if (call != NULL) sscanf(call + 14, "%63[^\"]", name);
        printf("%-19s %9.1f %9.1f %8.2f %8.1f%% %8.1f%%  %s", backends[b].name,
               median_member(m, "peak_live", NULL) / 1048576, median_member(m, "peak_rss", NULL) / 1048576,
               median_member(m, "peak_rss", "peak_live"), 100 * median_member(m, "rss_2s", "peak_rss"),
               100 * median_member(m, "rss_purged", "peak_rss"), name);
        if (backends[b].bytepool && backends[b].pooled)
            printf("; %.1f%%", 100 * median_member(m, "rss_flushed", "peak_rss"));
        printf("\n");
    }
}

/* churn's memory: resident per live byte at the end and at worst after the first 5 s. */
static void print_churn_memory(const measurement *row)
{
    printf("\nchurn: memory (MiB), one run each\n%-19s %9s %9s %12s %20s\n", "backend", "peak live", "peak RSS",
           "RSS/live end", "max RSS/live >5 s");
    for (size_t b = 0; b < NBACKENDS; b++) {
        const measurement *m = &row[b];
        if (m->n == 0) continue;
        printf("%-19s %9.1f %9.1f %12.2f %20.2f\n", backends[b].name,
               median_member(m, "peak_live", NULL) / 1048576, median_member(m, "peak_rss", NULL) / 1048576,
               median_member(m, "churn_end_ratio", NULL), median_member(m, "churn_max_ratio", NULL));
    }
}

/* Throughput of threads-T over threads-1 for one backend: the median of the ratios of runs
 * of the same repetition (back to back, see main). Fills ratios[] and returns how many;
 * 0 when the cases are not both there. */
static int scaling_ratios(const measurement *one, const measurement *many, double *ratios)
{
    int n = 0;
    for (int i = 0; i < many->n; i++)
        for (int j = 0; j < one->n; j++)
            if (one->rep[j] == many->rep[i] && many->ns[i] > 0) ratios[n++] = one->ns[j] / many->ns[i];
    return n;
}

static int threads_one_case(const bench_case *cases, int ncases)
{
    for (int c = 0; c < ncases; c++)
        if (strcmp(cases[c].kind, "threads") == 0 && cases[c].param == 1) return c;
    return -1;
}

static void write_json(const char *path, const bench_case *cases, int ncases, int reps, bool quick)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "bench: cannot write %s: %s\n", path, strerror(errno));
        return;
    }
    char cpu[256], kernel[256], jemalloc[64], tcmalloc[64], mimalloc[64];
    /* The model name alone ("AMD EPYC") can stand for several generations: family and model too. */
    command_output("awk -F': ' '/^model name/{n=$2} /^cpu family/{f=$2} /^model\\t/{m=$2} "
                   "END{printf \"%s (family %s, model %s)\", n, f, m}' /proc/cpuinfo",
                   cpu, sizeof cpu);
    struct utsname u;
    snprintf(kernel, sizeof kernel, "%s", uname(&u) == 0 ? u.release : "unknown");
    command_output("dpkg-query -W -f '${Version}' libjemalloc2 2>/dev/null", jemalloc, sizeof jemalloc);
    command_output("dpkg-query -W -f '${Version}' libgoogle-perftools4 2>/dev/null", tcmalloc, sizeof tcmalloc);
    command_output("dpkg-query -W -f '${Version}' libmimalloc2.0 2>/dev/null", mimalloc, sizeof mimalloc);
    fprintf(f, "{\n  \"machine\": {\"cpu\": \"%s\", \"cores\": %ld, \"kernel\": \"%s\", \"compiler\": \"%s\",\n",
            cpu, sysconf(_SC_NPROCESSORS_ONLN), kernel, __VERSION__);
    fprintf(f, "    \"bytepool\": \"%d.%d.%d\", \"jemalloc\": \"%s\", \"tcmalloc\": \"%s\", \"mimalloc\": \"%s\"},\n",
            BP_VERSION_MAJOR, BP_VERSION_MINOR, BP_VERSION_PATCH, jemalloc, tcmalloc, mimalloc);
    fprintf(f, "  \"quick\": %s, \"repetitions\": %d,\n  \"results\": [\n", quick ? "true" : "false", reps);
    bool first = true;
    for (int c = 0; c < ncases; c++) {
        for (size_t b = 0; b < NBACKENDS; b++) {
            measurement *m = &table[c][b];
            if (m->n == 0) continue;
            fprintf(f, "%s    {\"workload\": \"%s\", \"backend\": \"%s\", \"median_ns_per_op\": %.3f, \"runs\": [",
                    first ? "" : ",\n", cases[c].name, backends[b].name, median(m->ns, m->n));
            for (int i = 0; i < m->n; i++) fprintf(f, "%s%s", i ? ", " : "", m->raw[i]);
            fprintf(f, "]}");
            first = false;
        }
    }
    fprintf(f, "\n  ],\n  \"scaling\": [");
    int one = threads_one_case(cases, ncases);
    first = true;
    for (int c = 0; c < ncases && one >= 0; c++) {
        if (strcmp(cases[c].kind, "threads") != 0 || cases[c].param == 1) continue;
        for (size_t b = 0; b < NBACKENDS; b++) {
            double ratios[MAX_REPS];
            int n = scaling_ratios(&table[one][b], &table[c][b], ratios);
            if (n == 0) continue;
            fprintf(f, "%s\n    {\"workload\": \"%s\", \"backend\": \"%s\", \"median_ratio\": %.3f, \"ratios\": [",
                    first ? "" : ",", cases[c].name, backends[b].name, median(ratios, n));
            for (int i = 0; i < n; i++) fprintf(f, "%s%.3f", i ? ", " : "", ratios[i]);
            fprintf(f, "]}");
            first = false;
        }
    }
    fprintf(f, "\n  ]\n}\n");
    fclose(f);
}

static int make_cases(bench_case *cases, bool quick, const char *only)
{
    uint64_t scale = quick ? 1 : 5;
    int n = 0;
#define ADD(nm, kd, pr, ct)                                                                \
    do {                                                                                   \
        if (only == NULL || strstr(nm, only) != NULL) {                                    \
            snprintf(cases[n].name, sizeof cases[n].name, "%s", nm);                       \
            snprintf(cases[n].kind, sizeof cases[n].kind, "%s", kd);                       \
            cases[n].param = (pr);                                                         \
            cases[n].count = (ct);                                                         \
            n++;                                                                           \
        }                                                                                  \
    } while (0)
    ADD("poolbuftest", "poolbuftest", 0, 10000000 * scale); /* ~0.3 s a run: shorter ones catch this VM's bursts of noise */
    static const size_t sizes[] = {64, 256, 1024, 4096, 16384, 65536};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "batch-%zu", sizes[i]);
        ADD(name, "batch", sizes[i], (sizes[i] >= 16384 ? 100 : 500) * scale);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "alloc-%zu", sizes[i]);
        ADD(name, "alloc", sizes[i], (sizes[i] >= 16384 ? 100 : 500) * scale);
    }
    ADD("random-slots", "random-slots", 0, 400000 * scale);
    ADD("xthread", "xthread", 0, 400000 * scale);
    ADD("mixed", "mixed", 0, 50000 * scale);
    /* One run a backend: 60 s (quick: 6 s, the first 5 of which the ratio leaves out). */
    ADD("churn", "churn", 0, quick ? 6000 : 60000);
    if (n > 0 && strcmp(cases[n - 1].kind, "churn") == 0) {
        cases[n - 1].reps = 1;
        cases[n - 1].no_unpooled = true;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned max_threads = cores > 2 ? (unsigned)cores : 2;
    for (unsigned t = 1; t <= max_threads && t <= 16; t++) {
        char name[32];
        snprintf(name, sizeof name, "threads-%u", t);
        /* A window of 25 ms (quick) or 125 ms: thousands of rounds a thread. */
        ADD(name, "threads", t, 25 * scale);
    }
#undef ADD
    return n;
}

int main(int argc, char **argv)
{
    if (argc >= 7 && strcmp(argv[1], "--child") == 0) {
        bench_case c;
        memset(&c, 0, sizeof c);
        snprintf(c.kind, sizeof c.kind, "%s", argv[3]);
        c.param = strtoull(argv[4], NULL, 10);
        c.count = strtoull(argv[5], NULL, 10);
        snprintf(c.name, sizeof c.name, "%s", argv[6]);
        return child_main(argv[2], &c);
    }
    bool quick = false;
    int reps = 0;
    const char *only = NULL, *json = "bench/results/results.json";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) quick = true;
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
        else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) json = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--quick] [--reps N] [--only WORKLOAD] [--json FILE]\n", argv[0]);
            return 2;
        }
    }
    if (reps <= 0) reps = quick ? 3 : 5;
    if (reps > MAX_REPS) reps = MAX_REPS;
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) return 1;
    self[len] = '\0';

    static bench_case cases[MAX_CASES];
    int ncases = make_cases(cases, quick, only);
    printf("bytepool-bench: %d workloads x %zu backends x %d repetitions (churn: one run)%s\n", ncases, NBACKENDS,
           reps, quick ? " (quick)" : "");
    for (int c = 0; c < ncases;) {
        /* The threads-T cases run as one group: in each repetition each backend runs
         * threads-1, threads-2, ... back to back. Run one case after the other, threads-1
         * and threads-T would be minutes apart, and the scaling ratio between them would
         * compare two states of this noisy VM rather than one thread count with another. */
        int group_end = c + 1;
        if (strcmp(cases[c].kind, "threads") == 0)
            while (group_end < ncases && strcmp(cases[group_end].kind, "threads") == 0) group_end++;
        double start = now_ns();
        int case_reps = cases[c].reps > 0 ? cases[c].reps : reps;
        for (int rep = 0; rep < case_reps; rep++)
            for (size_t k = 0; k < NBACKENDS; k++) {
                size_t b = (k + (size_t)rep) % NBACKENDS; /* rotate who goes first */
                for (int g = c; g < group_end; g++)
                    if (!(cases[g].no_unpooled && backends[b].bytepool && !backends[b].pooled))
                        measure_once(self, &cases[g], g, b, rep);
            }
        for (int g = c; g < group_end; g++)
            printf("  %-14s done in %5.1f s%s\n", cases[g].name, (now_ns() - start) / 1e9,
                   group_end - c > 1 ? " (with the other threads-T, interleaved)" : "");
        fflush(stdout);
        c = group_end;
    }

    printf("\nmedian ns per buffer (ratio = backend / bytepool; > 1 means bytepool is faster)\n");
    printf("%-14s", "workload");
    for (size_t b = 0; b < NBACKENDS; b++) printf(" %19s", backends[b].name);
    printf("\n");
    for (int c = 0; c < ncases; c++) {
        printf("%-14s", cases[c].name);
        double base = table[c][0].n ? median(table[c][0].ns, table[c][0].n) : NAN;
        for (size_t b = 0; b < NBACKENDS; b++) {
            measurement *m = &table[c][b];
            if (m->n == 0) {
                printf(" %19s", "-");
                continue;
            }
            double v = median(m->ns, m->n);
            char cell[32];
            if (b == 0) snprintf(cell, sizeof cell, "%.1f", v);
            else snprintf(cell, sizeof cell, "%.1f (%.2fx)", v, v / base);
            printf(" %19s%s", cell, m->checksum_mismatch ? "!" : "");
        }
        printf("\n");
    }
    for (int c = 0; c < ncases; c++) {
        if (strcmp(cases[c].kind, "mixed") == 0) print_mixed_memory(&table[c][0]);
        if (strcmp(cases[c].kind, "churn") == 0) print_churn_memory(&table[c][0]);
    }
    int one = threads_one_case(cases, ncases);
    bool scaling_header = false;
    for (int c = 0; c < ncases && one >= 0; c++) {
        if (strcmp(cases[c].kind, "threads") != 0 || cases[c].param == 1) continue;
        if (!scaling_header) {
            printf("\nscaling: throughput of T threads over one, median of the repetitions' ratios\n%-14s", "workload");
            for (size_t b = 0; b < NBACKENDS; b++) printf(" %19s", backends[b].name);
            printf("\n");
            scaling_header = true;
        }
        printf("%-14s", cases[c].name);
        for (size_t b = 0; b < NBACKENDS; b++) {
            double ratios[MAX_REPS];
            int n = scaling_ratios(&table[one][b], &table[c][b], ratios);
            char cell[32] = "-";
            if (n > 0) snprintf(cell, sizeof cell, "%.2fx", median(ratios, n));
            printf(" %19s", cell);
        }
        printf("\n");
    }

    bool mismatch = false;
    for (int c = 0; c < ncases; c++)
        for (size_t b = 0; b < NBACKENDS; b++) mismatch |= table[c][b].checksum_mismatch;
    if (mismatch) printf("\n! checksum differs from bytepool's: that backend did not do the same work\n");

    write_json(json, cases, ncases, reps, quick);
    printf("\nraw figures: %s\n", json);
    return mismatch ? 1 : 0;
}
