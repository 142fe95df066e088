/* SPDX-License-Identifier: MIT */
/*
 * Thread cache slow paths: bins allocated on first use, trimming, flushing.
 */
#include "tcache.h"

#include "chunk.h"

#include <stdlib.h>
#include <string.h>

/* Bins of the larger classes are bounded by bytes too (as jemalloc gives its large bins
 * fewer slots): 256 entries of a 28 KiB class would hold 7 MiB a thread. */
enum { MIN_BOUNDED_ENTRIES = 8 };

/* A bin grows to at most this many times its configured capacity, never past
 * cache_class_max_bytes (with no byte bound, bins keep their size), and only after it
 * overflowed this many times, each after a miss, between two trims: bursts larger than
 * the bin that keep coming back. */
enum { GROWTH_LIMIT = 4, CYCLES_TO_GROW = 2 };

/* The configured entries of class `cls`'s bins. */
static uint32_t configured_entries(const bp__size_classes *sc, const bp_config *cfg, unsigned cls)
{
    return cls < sc->nsmall ? cfg->small_cache_size : cfg->normal_cache_size;
}

/* `entries`, or fewer if cache_class_max_bytes bounds class `cls`'s bins to fewer. */
static uint32_t within_byte_bound(const bp__size_classes *sc, const bp_config *cfg, unsigned cls, uint64_t entries)
{
    if (cfg->cache_class_max_bytes != 0) {
        size_t bound = cfg->cache_class_max_bytes / sc->class_size[cls];
        if (bound < MIN_BOUNDED_ENTRIES) bound = MIN_BOUNDED_ENTRIES;
        if (bound < entries) entries = bound;
    }
    return (uint32_t)entries;
}

uint32_t bp__tcache_class_capacity(const bp__size_classes *sc, const bp_config *cfg, unsigned cls)
{
    if (sc->class_size[cls] > cfg->max_cached_size) return 0;
    return within_byte_bound(sc, cfg, cls, configured_entries(sc, cfg, cls));
}

unsigned bp__tcache_cacheable_classes(const bp__size_classes *sc, const bp_config *cfg)
{
    unsigned n = sc->nclasses;
    while (n > 0 && bp__tcache_class_capacity(sc, cfg, n - 1) == 0) n--;
    return n;
}

static atomic_uint_fast32_t next_tag_id = 1; /* 0 and 2^24 - 1 are never a cache's */

#if BP__TESTING
void bp__tcache_set_next_tag_id(uint32_t id) { atomic_store_explicit(&next_tag_id, id, memory_order_relaxed); }
#endif

static atomic_bool fixed_sampling;             /* test builds' hook */
static _Atomic uint64_t sample_streams;         /* a distinct seed for every clock */

/* Whether the clocks sample at fixed gaps: never outside test builds. */
static bool sampling_fixed(void)
{
    return BP__TESTING && atomic_load_explicit(&fixed_sampling, memory_order_relaxed);
}

#if BP__TESTING
void bp__tcache_fixed_sampling(bool fixed) { atomic_store_explicit(&fixed_sampling, fixed, memory_order_relaxed); }
#endif

/* Buffer allocations from one tracked buffer to the next: uniform in
 * 1 .. 2 x interval - 1 (see bp__tcache_tick). xorshift64*: the top bits are good enough for
 * spreading samples, and this runs once per tracked buffer. */
static uint32_t next_sample_gap(bp__tcache *tc)
{
    uint32_t interval = tc->sample_interval;
    if (interval <= 1 || sampling_fixed()) return interval;
    uint64_t x = tc->sample_rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    tc->sample_rng = x;
    return 1 + (uint32_t)(((x * 0x2545F4914F6CDD1Dull) >> 32) % (2ull * interval - 1));
}

/* Arms the fast path's countdown to stop just before the trim or the next tracked buffer,
 * whichever comes first. */
static void clock_arm(bp__tcache *tc)
{
    uint32_t next = tc->trim_in;
    if (tc->sample_interval != 0 && tc->sample_in < next) next = tc->sample_in;
    if (BP__POISONS) next = 1; /* every allocation through the slow path (see BP__POISONS) */
    tc->fast_armed = tc->head.fast_left = next;
}

void bp__tcache_clock_init(bp__tcache *tc, uint32_t trim_interval, uint32_t sample_interval)
{
    tc->trim_interval = trim_interval;
    tc->trim_in = trim_interval ? trim_interval : UINT32_MAX;
    tc->sample_interval = sample_interval;
    /* splitmix64 of a per-clock count: distinct, well-mixed, never 0 (xorshift's fixed point) */
    uint64_t z = atomic_fetch_add_explicit(&sample_streams, 1, memory_order_relaxed) * 0x9E3779B97F4A7C15ull +
                 (uint64_t)(uintptr_t)tc;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    tc->sample_rng = (z ^ (z >> 31)) | 1;
    if (sample_interval == 0) tc->sample_in = 0;
    else tc->sample_in = sampling_fixed() ? 1 : next_sample_gap(tc);
    clock_arm(tc);
}

unsigned bp__tcache_tick(bp__tcache *tc, bool buffer)
{
    /* The fast path serves while fast_left > 1, so it served at most fast_armed - 1 since
     * arming, and fast_armed was at most trim_in and sample_in: neither goes below 0 here,
     * and a region for growth (not counted for sampling) cannot bring sample_in to 0. */
    uint32_t served = tc->fast_armed - tc->head.fast_left;
    bool sample = false;
    if (tc->sample_interval != 0) {
        tc->sample_in -= served + (buffer ? 1u : 0u);
        if (tc->sample_in == 0) {
            sample = true;
            tc->sample_in = next_sample_gap(tc);
        }
    }
    tc->trim_in -= served + 1;
    bool trim = tc->trim_in == 0;
    if (trim) tc->trim_in = tc->trim_interval ? tc->trim_interval : UINT32_MAX;
    clock_arm(tc);
    /* Every allocation counts, cached class or not: the schedule is also the clock of the
     * arena's caches and purges, which a thread allocating only uncached sizes drives too. */
    return (sample ? BP__TICK_SAMPLE : 0u) | (trim && tc->arena != NULL ? BP__TICK_TRIM : 0u);
}

/* A small class's refill to start with, and the most it grows back to: half a bin, but no
 * more than about 64 KiB of memory taken ahead. */
static uint32_t first_refill(const bp__size_classes *sc, uint32_t capacity, unsigned cls)
{
    size_t by_bytes = (64 * 1024) / sc->class_size[cls];
    uint32_t refill = capacity / 2 < by_bytes ? capacity / 2 : (uint32_t)by_bytes;
    return refill > 0 ? refill : 1;
}

void bp__tcache_init(bp__tcache *tc, const bp__tcache_thread *thread, bp__arena *arena, const bp__size_classes *sc,
                     const bp_config *cfg, uint32_t sample_interval)
{
    memset(tc, 0, sizeof *tc);
    tc->allocator = thread->allocator;
    tc->owner = thread->owner;
    tc->recycler = thread->recycler;
    tc->guard = thread->guard;
    if (cfg->release_check) { /* no tags: every release takes the slow path's compare-and-set */
        tc->head.tag_base = BP__TAG_SPENT;
    } else {
        uint32_t id = (uint32_t)atomic_fetch_add_explicit(&next_tag_id, 1, memory_order_relaxed);
        if (id >= 0xffffff) { /* spent: every release of this cache's buffers takes the slow path */
            atomic_store_explicit(&next_tag_id, 0xffffff, memory_order_relaxed);
            tc->head.tag_base = BP__TAG_SPENT;
        } else {
            tc->head.tag_base = id << 8;
        }
    }
    tc->sc = sc;
    tc->arena = arena;
    bp__tcache_clock_init(tc, cfg->cache_trim_interval, sample_interval);
    tc->head.ncacheable = bp__tcache_cacheable_classes(sc, cfg);
    for (unsigned c = 0; c < tc->head.ncacheable; c++) {
        bool small = c < sc->nsmall;
        uint32_t capacity = bp__tcache_class_capacity(sc, cfg, c);
        tc->head.bins[c].capacity = tc->base_capacity[c] = tc->max_capacity[c] = capacity;
        if (capacity > 0 && cfg->cache_class_max_bytes != 0) /* else bins keep their size */
            tc->max_capacity[c] =
                within_byte_bound(sc, cfg, c, (uint64_t)configured_entries(sc, cfg, c) * GROWTH_LIMIT);
        if (small && capacity > 0) tc->refill[c] = first_refill(sc, capacity, c);
    }
    /* With leak detection on too: the clock stops the fast path before a tracked one. */
    tc->head.fast_classes = tc->head.ncacheable;
}

void bp__tcache_configure_arena(bp__arena *arena, const bp__size_classes *sc, const bp_config *cfg)
{
    uint32_t capacity[BP__MAX_CLASSES] = {0};
    for (unsigned c = 0; c < sc->nclasses; c++) {
        /* Only thread bins feed it: a class they do not keep is not kept here either. */
        if (bp__tcache_class_capacity(sc, cfg, c) == 0) continue;
        size_t by_bytes = cfg->arena_cache_max_bytes / sc->class_size[c];
        capacity[c] = cfg->arena_cache_size < by_bytes ? cfg->arena_cache_size : (uint32_t)by_bytes;
    }
    /* Normal classes no thread cache keeps are a suffix (the larger sizes; all of them with
     * normal_cache_size 0): their runs are as long as their sizes need, and held by no run
     * cache (see bp__run_cache_bin). */
    unsigned cacheable = bp__tcache_cacheable_classes(sc, cfg);
    bp__arena_configure_caches(arena, cacheable > sc->nsmall ? cacheable : sc->nsmall, capacity,
                               cfg->arena_cache_max_bytes);
}

void bp__tcache_totals(const bp__tcache *tc, size_t *entries, size_t *bytes, uint64_t *hits)
{
    *entries = 0;
    *bytes = 0;
    *hits = atomic_load_explicit((_Atomic uint64_t *)&tc->hits_before_trims, memory_order_relaxed);
    for (unsigned c = 0; c < tc->head.ncacheable; c++) {
        const bp__tcache_bin *bin = &tc->head.bins[c];
        uint64_t state = bp__bin_state(bin);
        uint32_t count = bp__bin_entries(bin);
        *entries += count;
        *bytes += (size_t)count * tc->sc->class_size[c];
        *hits += state >> 32;
    }
}

/* Gives released objects of class `cls` back for good: regions to their arenas (a batch
 * per lock; `hold`: see bp__regions_free_batch), objects to r (which may be NULL: then to
 * the pool's spare list). */
static void free_released(bp__object_pool *pool, bp__recycler *r, const bp__size_classes *sc, unsigned cls,
                          bp_buf *const *bufs, uint32_t n, bool hold)
{
    bp__cached_region regions[64];
    for (uint32_t done = 0; done < n;) {
        uint32_t k = n - done < 64 ? n - done : 64;
        for (uint32_t i = 0; i < k; i++) {
            bp_buf *b = bufs[done + i];
            regions[i] = (bp__cached_region){b->region.memory, b->region.chunk, b->region.handle};
            bp__object_retire(pool, r, b, false);
        }
        bp__regions_free_batch(sc, cls, regions, k, hold);
        done += k;
    }
}

/* Moves up to n of the newest entries of the arena's cache of `cls` into out, oldest of
 * them first, and makes them tc's (owner and tag). Returns how many. */
static uint32_t arena_cache_take(bp__tcache *tc, unsigned cls, bp_buf **out, uint32_t n)
{
    bool same_giver;
    uint32_t k = bp__arena_cache_take(tc->arena, cls, out, n, tc->head.tag_base, &same_giver);
    /* Its own, given back since its binding began: nothing to rewrite. */
    if (k == 0 || (same_giver && tc->head.tag_base != BP__TAG_SPENT)) return k;
    /* Owner and tag only written when they change (a matching tag says the owner matches
     * too): the objects' lines stay shared if nothing changes. */
    uint32_t tag = bp__release_tag(tc, cls);
    for (uint32_t i = 0; i < k; i++) {
        bp_buf *b = out[i];
        if (b->head.release_tag != tag || tag == BP__TAG_NONE) {
            b->owner = tc->owner;
            b->head.release_tag = tag;
        }
    }
    return k;
}

size_t bp__tcache_trim_arena(bp__arena *arena, bp__object_pool *pool, bp__recycler *r, bool all)
{
    size_t freed = 0;
    /* Empty, every class's low-water mark is 0 already (it never exceeds the count). */
    if (bp__arena_cache_entries(arena) == 0) return 0;
    for (unsigned c = 0; c < arena->sc->nclasses; c++) {
        if (arena->cache[c].capacity == 0) continue; /* set before the arena's first use */
        uint32_t k;
        do { /* the oldest idle entries, 64 at a time, freed outside the lock */
            bp_buf *batch[64];
            k = bp__arena_cache_take_idle(arena, c, batch, 64, all);
            if (k > 0) free_released(pool, r, arena->sc, c, batch, k, false);
            freed += k;
        } while (k == 64);
    }
    return freed;
}

static _Atomic(void (*)(void)) gap_hook; /* test builds' hook, see tcache.h */

#if BP__TESTING
void bp__tcache_set_gap_hook(void (*hook)(void)) { atomic_store(&gap_hook, hook); }
#endif

/* Gives entries [0, n) of a bin back and closes the gap: with `to_arena_cache` to the
 * arena's cache as far as it has room (a bin holds only its arena's regions), the rest to
 * the chunks. */
static void give_back_oldest(bp__tcache *tc, unsigned cls, uint32_t n, bool to_arena_cache)
{
    bp__tcache_bin *bin = &tc->head.bins[cls];
    if (n == 0) return;
    /* Given away while still listed: a fork in between must wait. */
    bp__guard_enter(tc->guard);
    uint32_t count = bp__bin_count(bin), kept = 0;
    for (uint32_t i = 0; BP__DEBUG && i < n; i++) BP__ASSERT(bin->entries[i]->region.chunk->arena == tc->arena);
    if (to_arena_cache) kept = bp__arena_cache_give(tc->arena, cls, bin->entries, n, tc->head.tag_base);
    free_released(tc->recycler->pool, tc->recycler, tc->sc, cls, bin->entries + kept, n - kept, to_arena_cache);
    void (*hook)(void) = BP__TESTING ? atomic_load_explicit(&gap_hook, memory_order_relaxed) : NULL;
    if (BP__UNLIKELY(hook != NULL)) hook();
    memmove(bin->entries, bin->entries + n, (count - n) * sizeof *bin->entries);
    bp__bin_set_count(bin, count - n);
    bp__tcache_ledger(tc, -(int64_t)n);
    bp__guard_leave(tc->guard);
}

/* The stack's share of a bin's capacity: the rest is the slot. */
static uint32_t stack_capacity(const bp__tcache_bin *bin) { return bin->capacity - 1; }

static bool ensure_entries(bp__tcache *tc, unsigned cls)
{
    bp__tcache_bin *bin = &tc->head.bins[cls];
    if (bin->entries == NULL) {
        bin->entries = malloc(bin->capacity * sizeof *bin->entries);
        if (bin->entries == NULL) return false;
        tc->entries_room[cls] = bin->capacity;
    }
    bin->limit = stack_capacity(bin);
    return true;
}

/* Sets a bin's capacity (its stack's array has room for it), inside the guard: a fork sees
 * the old capacity or the new one. */
static void set_capacity(bp__tcache *tc, unsigned cls, bp_buf **entries, uint32_t capacity)
{
    bp__tcache_bin *bin = &tc->head.bins[cls];
    bin->entries = entries;
    bin->capacity = capacity;
    bin->limit = stack_capacity(bin);
}

/* Doubles a full bin's capacity, up to max_capacity; false when it cannot grow. */
static bool grow_bin(bp__tcache *tc, unsigned cls)
{
    bp__tcache_bin *bin = &tc->head.bins[cls];
    uint32_t capacity = bin->capacity < tc->max_capacity[cls] / 2 ? 2 * bin->capacity : tc->max_capacity[cls];
    if (capacity <= bin->capacity) return false;
    bp__guard_enter(tc->guard); /* the array may move: not while a fork reads it */
    bp_buf **entries = bin->entries;
    if (tc->entries_room[cls] < capacity && (entries = realloc(entries, capacity * sizeof *entries)) != NULL)
        tc->entries_room[cls] = capacity;
    if (entries != NULL) set_capacity(tc, cls, entries, capacity);
    bp__guard_leave(tc->guard);
    return entries != NULL;
}

/* Gives the slot's entry back to the chunks (a trim or a flush: it is cold). */
static void give_back_hot(bp__tcache *tc, unsigned cls)
{
    bp__tcache_bin *bin = &tc->head.bins[cls];
    bp_buf *hot = bp__bin_hot(bin);
    if (hot == NULL) return;
    bp__guard_enter(tc->guard);
    __atomic_store_n(&bin->hot, (bp_buf *)NULL, __ATOMIC_RELAXED);
    free_released(tc->recycler->pool, tc->recycler, tc->sc, cls, &hot, 1, false);
    bp__tcache_ledger(tc, -1);
    bp__guard_leave(tc->guard);
}

/* The hits since the last trim go to the cache's running total; the count stays. */
static uint32_t carry_hits(bp__tcache *tc, bp__tcache_bin *bin)
{
    uint64_t state = bp__bin_state(bin);
    bp__tcache_count_n(&tc->hits_before_trims, state >> 32);
    __atomic_store_n(&bin->state, (uint64_t)(uint32_t)state, __ATOMIC_RELAXED);
    return (uint32_t)(state >> 32);
}

bool bp__tcache_put_slow(bp__tcache *tc, unsigned cls, bp_buf *b)
{
    bp__tcache_bin *bin = &tc->head.bins[cls];
    if (bin->capacity == 0 || !ensure_entries(tc, cls)) return false;
    uint32_t count = bp__bin_count(bin);
    if (count == stack_capacity(bin)) {
        /* Full again after a miss: a burst larger than the bin went round through the
         * arena's cache. The second time between two trims, the bin grows instead. */
        bool grown = false;
        if (tc->missed[cls]) {
            tc->missed[cls] = 0;
            if (++tc->cycles[cls] >= CYCLES_TO_GROW && grow_bin(tc, cls)) {
                tc->cycles[cls] = 0;
                grown = true;
            }
        }
        if (!grown) give_back_oldest(tc, cls, (count + 1) / 2, true);
    }
    return bp__tcache_push_kept(tc, cls, b);
}

/* An object with a fresh region of class `cls` from tc's arena, made to meet the bins'
 * invariants. */
static void prepare_for_bin(bp__tcache *tc, bp_buf *b, unsigned cls)
{
    b->head.memory = b->region.memory;
    b->root = NULL;
    b->views = NULL;
    b->leak = NULL;
    b->composite = NULL;
    b->allocator = tc->allocator;
    b->owner = tc->owner;
    b->head.release_tag = bp__release_tag(tc, cls);
}

/* bp__tcache_refill inside the guard: regions taken for the bin are in it, counted, before
 * a fork can happen. */
BP__INLINE bp_buf *refill_locked(bp__tcache *tc, bp__tcache_bin *bin, unsigned cls)
{
    /* Ready buffers from the arena's cache first, straight into the bin: pointers copied,
     * no chunk touched. Half a bin whatever the class (not the ~64 KiB bound of a fresh
     * refill): these regions are held already, and a burst of 4 KiB buffers then takes one
     * lock per 128 instead of per 16. */
    uint32_t count = bp__bin_count(bin), room = stack_capacity(bin) - count;
    uint32_t want = (bin->capacity + 1) / 2;
    if (want > room + 1) want = room + 1; /* one goes out now */
    uint32_t got = arena_cache_take(tc, cls, bin->entries + count, want);
    if (got > 0) {
        bp__bin_set_count(bin, count + got - 1);
        bp__tcache_ledger(tc, got - 1);
        return bin->entries[count + got - 1]; /* the newest goes out now */
    }
    /* Small classes: fresh slots, about 64 KiB ahead. Normal classes: the runs the arena
     * holds back for the class (an earlier burst's overflow), half a bin's worth, or one
     * fresh run. */
    bool small = cls < tc->sc->nsmall;
    bp_buf *objects[512];
    want = small ? tc->refill[cls] : want;
    if (want > 512) want = 512;
    uint32_t have = 0;
    while (have < want && (objects[have] = bp__object_get(tc->recycler)) != NULL) have++;
    uint32_t take = have < room + 1 ? have : room + 1; /* one goes out now */
    /* Small slots come in address order; the lowest goes out now, the next lowest ends on
     * top. */
    bp__cached_region batch[512];
    got = take == 0 ? 0
          : small   ? bp__arena_alloc_small_batch(tc->arena, cls, batch, take)
                    : bp__arena_alloc_normal_batch(tc->arena, cls, batch, take);
    for (unsigned i = 0; i < got; i++) {
        bp_buf *b = objects[i];
        b->region = (bp__region){.memory = batch[i].memory, .length = tc->sc->class_size[cls],
                                 .kind = small ? BP__KIND_SMALL : BP__KIND_NORMAL, .class_index = cls,
                                 .chunk = batch[i].chunk, .handle = batch[i].handle};
        prepare_for_bin(tc, b, cls);
    }
    for (uint32_t i = got; i < have; i++) bp__object_put(tc->recycler->pool, tc->recycler, objects[i]);
    if (got == 0) return NULL;
    count = bp__bin_count(bin);
    for (unsigned i = got - 1; i >= 1; i--) bin->entries[count++] = objects[i];
    bp__bin_set_count(bin, count);
    bp__tcache_ledger(tc, got - 1);
    return objects[0];
}

/* A small class's refill follows use, as jemalloc's fill count does. It doubles, up to
 * where it started, when the bin runs dry a second time between two trims (a burst): what
 * the last refill took was all asked for. It halves, down to one, at a trim that finds
 * most of a refill's worth unused (a class asked for a few times between trims, which
 * would otherwise take a batch at each miss only to give nearly all of it back at the
 * next trim). */
static void grow_refill(bp__tcache *tc, unsigned cls)
{
    uint32_t refill = tc->refill[cls], most = first_refill(tc->sc, tc->base_capacity[cls], cls);
    tc->refill[cls] = refill < most / 2 ? refill * 2 : most;
}

static void shrink_refill(bp__tcache *tc, unsigned cls, uint32_t unused)
{
    uint32_t refill = tc->refill[cls];
    if (unused > 0 && unused >= refill / 2 && refill > 1) tc->refill[cls] = refill / 2;
    tc->refilled[cls] = 0;
}

bp_buf *bp__tcache_refill(bp__tcache *tc, unsigned cls)
{
    if (cls >= tc->head.ncacheable) return NULL;
    bp__tcache_bin *bin = &tc->head.bins[cls];
    if (bin->capacity == 0 || !ensure_entries(tc, cls)) return NULL;
    tc->missed[cls] = 1;
    if (cls < tc->sc->nsmall) {
        /* Dry again since the last trim: all the last refill took was asked for. */
        if (tc->refilled[cls]) grow_refill(tc, cls);
        tc->refilled[cls] = 1;
    }
    bp__guard_enter(tc->guard);
    bp_buf *b = refill_locked(tc, bin, cls);
    bp__guard_leave(tc->guard);
    return b;
}

size_t bp__tcache_trim(bp__tcache *tc)
{
    size_t freed = 0;
    bp__guard_enter(tc->guard);
    for (unsigned c = 0; c < tc->head.ncacheable; c++) {
        bp__tcache_bin *bin = &tc->head.bins[c];
        uint32_t count = bp__bin_count(bin), held = bp__bin_entries(bin), hits = carry_hits(tc, bin);
        uint32_t unused = held > hits ? held - hits : 0;
        /* The oldest entries are the ones nobody asked for: cold, so past the arena's
         * cache too. The stack's go first; the slot's when none of the bin was asked for. */
        give_back_oldest(tc, c, unused < count ? unused : count, false);
        if (unused > count) give_back_hot(tc, c);
        freed += unused;
        if (c < tc->sc->nsmall) shrink_refill(tc, c, unused);
        /* A grown bin that served less than half its capacity since the last trim halves. */
        if (bin->capacity > tc->base_capacity[c] && hits < bin->capacity / 2) {
            uint32_t capacity = bin->capacity / 2 > tc->base_capacity[c] ? bin->capacity / 2 : tc->base_capacity[c];
            count = bp__bin_count(bin);
            if (count > capacity - 1) {
                give_back_oldest(tc, c, count - (capacity - 1), false);
                freed += count - (capacity - 1);
            }
            set_capacity(tc, c, bin->entries, capacity);
        }
        tc->missed[c] = tc->cycles[c] = 0;
    }
    bp__tcache_count(&tc->trims);
    bp__guard_leave(tc->guard);
    return freed;
}

void bp__tcache_scheduled_trim(bp__tcache *tc)
{
    bp__guard_enter(tc->guard);
    if (tc->trim_interval == 0) {
        /* Trimming is off; the countdown still bounds the bins' hit counts. */
        for (unsigned c = 0; c < tc->head.ncacheable; c++) carry_hits(tc, &tc->head.bins[c]);
    } else {
        bp__tcache_trim(tc);
        bp__tcache_trim_arena(tc->arena, tc->recycler->pool, tc->recycler, false);
        bp__arena_purge(tc->arena, false);
    }
    bp__guard_leave(tc->guard);
}

void bp__tcache_flush(bp__tcache *tc)
{
    bp__guard_enter(tc->guard);
    for (unsigned c = 0; c < tc->head.ncacheable; c++) {
        bp__tcache_bin *bin = &tc->head.bins[c];
        give_back_oldest(tc, c, bp__bin_count(bin), false);
        give_back_hot(tc, c);
        carry_hits(tc, bin);
    }
    bp__tcache_discard(tc);
    bp__guard_leave(tc->guard);
}

void bp__tcache_discard(bp__tcache *tc)
{
    for (unsigned c = 0; c < tc->head.ncacheable; c++) {
        free(tc->head.bins[c].entries);
        tc->head.bins[c].entries = NULL;
        tc->head.bins[c].limit = 0;
        tc->head.bins[c].capacity = tc->base_capacity[c];
        tc->entries_room[c] = 0;
        tc->missed[c] = tc->cycles[c] = 0;
        __atomic_store_n(&tc->head.bins[c].hot, (bp_buf *)NULL, __ATOMIC_RELAXED);
        bp__bin_set_count(&tc->head.bins[c], 0);
    }
}
