/* SPDX-License-Identifier: MIT */
/*
 * A thread cache (Netty's PoolThreadCache): per thread and allocator, one bounded bin per
 * cacheable size class (every small class, and normal classes up to max_cached_size) of
 * regions this thread released recently. An allocation that finds its bin non-empty takes
 * no lock, no atomic read-modify-write and no system call.
 *
 * The cache and the bp_buf recycler are one: a bin holds released bp_buf objects with their
 * regions still attached, so a hit is one pop that yields both (no region copied in or out,
 * no second stack), and a release of a buffer allocated here is one push.
 *
 * Invariants
 * - A region in a bin is, for its arena, still handed out; it belongs to no live buffer.
 * - An object in a bin: refcnt 0, region of the bin's class and of this thread's arena,
 *   head.memory == region.memory, allocator and owner this cache's, release tag
 *   bp__release_tag(cache, class), root, views, leak and composite NULL (what bp_alloc_ex
 *   would otherwise have to store on every allocation). Slow paths put objects in through
 *   bp__buf_cache_at_home, which checks the arena and rewrites owner and tag.
 * - A bin is its slot (hot) and its stack: count + (hot != NULL) <= capacity, the stack
 *   holding at most capacity - 1. The slot is taken first and filled first; the stack's
 *   entries[0] is its oldest, entries[count-1] its newest (the warmest region is reused
 *   first; a release into a full slot goes onto the stack, so the slot may hold an older
 *   one than the stack's top). limit is the stack's capacity once entries exist and 0
 *   before, so that one compare refuses a push into a full stack and into one not set up
 *   yet. A class whose capacity is 0 gets no release tag: no fast path fills its slot.
 * - A full bin gives its older half back in one pass, to the arena's cache of ready buffers
 *   (bp__arena_cache_bin) as far as it has room, the rest to the chunks (a normal class's
 *   runs to the arena's run cache, as far as it has room); filling for the second time
 *   after a miss since the last trim, it doubles instead, up to max_capacity, and a trim
 *   halves it again when it served less than half of it. A miss takes a batch (half a
 *   bin) from the arena's cache; if it is empty, a small class takes a batch of fresh
 *   regions (half a bin, at most ~64 KiB) from the arena under one lock (as jemalloc does),
 *   a normal class the runs the run cache holds for it (up to half a bin), else one fresh
 *   run (a batch of fresh ones would hold too much memory). A trim and a flush free
 *   straight to the chunks: those regions are cold.
 * - Only the owning thread writes a bin's state (count and hits since the last trim, in one
 *   word so that a pop updates both with one store) and its slot; they are read and
 *   written with relaxed __atomic builtins (plain moves) so that stats can sum them from
 *   another thread (bp__tcache_totals) instead of the hot path keeping running totals.
 *   Hits cannot wrap: every take also counts down to the next scheduled trim, which folds
 *   them into hits_before_trims at least every 2^32 - 1 allocations.
 * - Every multi-step change of the bins runs inside the owner's guard (see bp__guard), so
 *   that a fork never sees one half done.
 * Only the owning thread touches a cache, except when the allocator is destroyed.
 */
#ifndef BP__TCACHE_H
#define BP__TCACHE_H

#include "arena.h"
#include "common.h"
#include "lock.h"
#include "object.h"
#include "recycler.h"
#include "size_class.h"

#include <stdatomic.h>

/* A bin (bp__tcache_bin) and the head of the cache that holds the bins (bp__tcache_head)
 * are in bytepool.h, whose inline bp_alloc and bp_release pop and push them. */

/* Release tags (bp__buf_head.release_tag) let a release find its bin from the buffer's
 * first cache line alone. A cache has a tag base, unique in the process for the life of one
 * thread's binding (id << 8); an object it may take back with no further check - a plain
 * root of this cache's thread and arena, of a class it keeps, no leak record, no views -
 * carries base + class.
 * Anything else carries BP__TAG_NONE, and so does everything once ids run out (2^24 - 2
 * bindings): base + class minus another cache's base is never below 256, and ncacheable is
 * at most BP__MAX_CLASSES. A release compares the tag with its low byte cleared to its
 * cache's base, so no base may equal BP__TAG_NONE so cleared (0xffffff00): id 2^24 - 1 is
 * never handed out, and a spent cache's base has a low byte that no cleared tag has. */
#define BP__TAG_NONE UINT32_MAX
#define BP__TAG_SPENT 1u /* the base of caches made after ids ran out, or for an allocator
                            with release_check: matches no tag */

typedef struct bp__tcache {
    /* First: what the allocation and release fast paths read (tag base, countdown, bins). */
    bp__tcache_head head;
    uint32_t trim_interval;
    /* The rest of the allocation clock, which only slow paths read. */
    uint32_t fast_armed;       /* fast_left when the clock was last armed */
    uint32_t trim_in;          /* allocations from then to the scheduled trim */
    uint32_t sample_in;        /* buffer allocations from then to the next leak-tracked one */
    uint32_t sample_interval;  /* track 1 buffer in this many; 0: leak detection is off */
    const bp__size_classes *sc;
    bp__arena *arena;          /* the thread's arena */
    /* The thread this cache is part of, as the objects it hands out name them. */
    bp_allocator *allocator;
    struct bp__thread_state *owner;
    bp__recycler *recycler;    /* the thread's: objects for fresh regions, and back */
    /* Fresh regions a miss of a small class takes at once: half the configured bin, up to
     * about 64 KiB, to start with; halved at a trim that finds most of a refill unused,
     * doubled back when the bin runs dry twice between trims (see grow_refill). */
    uint32_t refill[BP__MAX_CLASSES];
    /* Bins that keep cycling through the arena's cache grow (see bp__tcache_put_slow): per
     * class, the capacity a bin starts with and shrinks back to, the most it may grow to,
     * how many entries its stack's array has room for, whether it missed since it last
     * overflowed, and its overflows after a miss since it last grew or was trimmed. */
    uint32_t base_capacity[BP__MAX_CLASSES];
    uint32_t max_capacity[BP__MAX_CLASSES];
    uint32_t entries_room[BP__MAX_CLASSES];
    uint8_t missed[BP__MAX_CLASSES];
    uint8_t cycles[BP__MAX_CLASSES];
    uint8_t refilled[BP__MAX_CLASSES]; /* a small class's bin ran dry since the last trim */
    bp__guard *guard;          /* the thread's (see the invariants) */
    _Atomic uint64_t hits_before_trims; /* hits counted in the bins' states, then
                                            carried here at each trim */
    _Atomic uint64_t misses, trims;
    /* Buffers allocated on this thread minus buffers released on it, plus the entries in
     * the bins (modulo 2^64). A fast allocation (one pop) or release (one push) changes
     * both terms and leaves it alone, so only slow paths write it (bp__tcache_ledger):
     * the fast paths keep no counter, and stats take the difference. */
    _Atomic uint64_t ledger;
    uint64_t sample_rng;       /* xorshift state drawing the gaps between tracked buffers */
} bp__tcache;

/* Slow paths: a buffer allocated (+1) or released (-1) here, or entries put into (+n) or
 * taken out of (-n) the bins other than by the fast paths. */
static inline void bp__tcache_ledger(bp__tcache *tc, int64_t delta)
{
    atomic_store_explicit(&tc->ledger, atomic_load_explicit(&tc->ledger, memory_order_relaxed) + (uint64_t)delta,
                          memory_order_relaxed);
}

/* The thread a cache is part of: what its objects name as allocator and owner, the
 * recycler it takes objects from and gives them back to, the guard of its changes. */
typedef struct bp__tcache_thread {
    bp_allocator *allocator;
    struct bp__thread_state *owner;
    bp__recycler *recycler;
    bp__guard *guard;
} bp__tcache_thread;

/* A pooled thread's cache, its clock included (see bp__tcache_clock_init). */
void bp__tcache_init(bp__tcache *tc, const bp__tcache_thread *thread, bp__arena *arena, const bp__size_classes *sc,
                     const bp_config *cfg, uint32_t sample_interval);

/* The allocation clock alone, for a thread state with no cache (an unpooled allocator's),
 * which still samples for leak detection. trim_interval 0: never trims; sample_interval 0:
 * never samples. */
void bp__tcache_clock_init(bp__tcache *tc, uint32_t trim_interval, uint32_t sample_interval);

#if BP__TESTING
/* Tests only: sample every sample_interval-th buffer exactly (the first one first) instead
 * of at random gaps, in clocks initialized or drawing a gap after this. */
void bp__tcache_fixed_sampling(bool fixed);
#endif

/* The allocation clock. Two things fall due by counting allocations - the scheduled trim
 * (every trim_interval allocations of this thread: buffers and the regions growth takes)
 * and the next leak-tracked buffer (every sample_interval buffer allocations) - and the
 * fast path must serve neither. It keeps one countdown, fast_left, which it only tests and
 * decrements (it serves while fast_left > 1); every allocation that reaches a slow path
 * calls this, which settles what the fast path served since the clock was armed, runs the
 * trim if it is due, and arms the countdown again to stop before whichever comes first. So
 * leak detection costs the allocations it does not track nothing (Netty's sampling, without
 * a slow path for all of them). The gaps between tracked buffers are drawn uniformly from
 * 1 .. 2 x sample_interval - 1 (mean: the interval), as Netty rolls a die per buffer: with a
 * fixed gap, a program allocating in a repeating pattern would have the same allocation
 * site tracked every time and another never (a loop allocating two buffers per turn and
 * leaking the second, sampled every 128th: never the leaking one). `buffer` is false for a
 * region growth takes (it counts toward the trim only). Returns BP__TICK_SAMPLE when this
 * allocation is the one to track, and BP__TICK_TRIM when the scheduled trim is due (the
 * caller runs bp__tcache_scheduled_trim, and what else its thread does on that clock). */
#define BP__TICK_SAMPLE 1u
#define BP__TICK_TRIM 2u
unsigned bp__tcache_tick(bp__tcache *tc, bool buffer);

#if BP__TESTING
/* Tests only: `hook` (NULL: none) is called when a bin has given regions back and still
 * lists them - the window a fork must never see (see bp__guard). */
void bp__tcache_set_gap_hook(void (*hook)(void));

/* Tests only: the id the next cache's tag base is made from (to reach the spent ids). */
void bp__tcache_set_next_tag_id(uint32_t id);
#endif

/* Whether this cache keeps class `cls`: a bin of it, with room for entries. */
static inline bool bp__tcache_keeps(const bp__tcache *tc, unsigned cls)
{
    return cls < tc->head.ncacheable && tc->head.bins[cls].capacity != 0;
}

/* The release tag of an object of class `cls` that this cache may take back unchecked:
 * none for a class it does not keep, so a matching tag names a bin that exists. */
static inline uint32_t bp__release_tag(const bp__tcache *tc, unsigned cls)
{
    if (BP__POISONS || tc->head.tag_base == BP__TAG_SPENT || !bp__tcache_keeps(tc, cls)) return BP__TAG_NONE;
    return tc->head.tag_base + cls;
}

/* Entries a thread bin of class `cls` holds under `cfg` (0: the class is not cached). */
uint32_t bp__tcache_class_capacity(const bp__size_classes *sc, const bp_config *cfg, unsigned cls);

/* One past the last class a thread bin keeps under `cfg` (0: none): a thread cache's
 * ncacheable, and with the small classes the arena's whole_from. Every class from it up
 * has capacity 0. */
unsigned bp__tcache_cacheable_classes(const bp__size_classes *sc, const bp_config *cfg);

/* Sets up what an arena keeps for the thread caches of `cfg` (bp__arena_configure_caches):
 * its cache holds arena_cache_size entries per class that thread caches keep, at most
 * arena_cache_max_bytes of them, and its run cache holds no run of a normal class no thread
 * cache keeps. */
void bp__tcache_configure_arena(bp__arena *arena, const bp__size_classes *sc, const bp_config *cfg);

/* Frees (regions to chunks, objects to r, which may be NULL, or else to the pool) the
 * entries of the arena's cache that stayed idle since the last trim - every class's
 * low-water mark, the oldest first - or, with `all`, every entry. Returns how many. */
size_t bp__tcache_trim_arena(bp__arena *arena, bp__object_pool *pool, bp__recycler *r, bool all);

/* Gives every cached region back to its arena and frees the bins. */
void bp__tcache_flush(bp__tcache *tc);

/* Netty's trim: each bin gives back the regions that were not asked for since the last
 * trim (count - hits since then). Returns the number of regions given back. */
size_t bp__tcache_trim(bp__tcache *tc);

/* Frees the bins' arrays without returning regions (the arenas are going away). */
void bp__tcache_discard(bp__tcache *tc);

/* The scheduled trim, when bp__tcache_tick says it is due: the bins (bp__tcache_trim), then,
 * a busy thread being a clock for its arena too, the arena's cache (what no thread cache
 * needed since the last trim), its idle runs and empty chunks (bp__arena_purge). With trimming off, only carries the bins' hit counts. */
BP__NOINLINE void bp__tcache_scheduled_trim(bp__tcache *tc);

BP__NOINLINE bool bp__tcache_put_slow(bp__tcache *tc, unsigned cls, bp_buf *b);

/* A miss on a cached class: refills the bin with half a bin of ready buffers from the
 * arena's cache or, for a small class when that is empty, with a batch of fresh regions
 * (each given an object from the recycler, with its cache's invariants), and returns one.
 * NULL when neither can be had (a normal class with the arena's cache empty, no memory,
 * no objects). */
BP__NOINLINE bp_buf *bp__tcache_refill(bp__tcache *tc, unsigned cls);

static inline void bp__tcache_count_n(_Atomic uint64_t *counter, uint64_t n)
{
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void bp__tcache_count(_Atomic uint64_t *counter) { bp__tcache_count_n(counter, 1); }

/* A bin's state is single-writer: relaxed loads and stores (plain moves), no
 * read-modify-write (bp__bin_state, in bytepool.h, loads it). */
static inline uint32_t bp__bin_count(const bp__tcache_bin *bin) { return (uint32_t)bp__bin_state(bin); }

/* What a bin holds: its stack and its slot. */
static inline uint32_t bp__bin_entries(const bp__tcache_bin *bin)
{
    return bp__bin_count(bin) + (bp__bin_hot(bin) != NULL);
}

/* A new count, the hits kept. */
static inline void bp__bin_set_count(bp__tcache_bin *bin, uint32_t count)
{
    __atomic_store_n(&bin->state, (bp__bin_state(bin) & ~(BP__BIN_HIT - 1)) | count, __ATOMIC_RELAXED);
}

/* What a cache holds and has served, summed from its bins (any thread may call it). */
void bp__tcache_totals(const bp__tcache *tc, size_t *entries, size_t *bytes, uint64_t *hits);

/* Takes a released object with a cached region of class `cls` (< sc->nclasses). NULL on a
 * miss (the caller counts it, looks at remote releases, then refills or goes to the arena).
 * The caller has ticked the clock (bp__tcache_tick). */
BP__INLINE bp_buf *bp__tcache_take(bp__tcache *tc, unsigned cls)
{
    if (cls >= tc->head.ncacheable) return NULL;
    bp__tcache_bin *bin = &tc->head.bins[cls];
    uint64_t state = bp__bin_state(bin);
    bp_buf *hot = bp__bin_hot(bin);
    if (hot == NULL && BP__UNLIKELY((uint32_t)state == 0)) return NULL;
    bp__tcache_ledger(tc, -1);
    return hot != NULL ? bp__bin_take_hot(bin, hot, state) : bp__bin_pop(bin, state);
}

/* For the release fast path: a push with no call in it, for a class this cache keeps (the
 * class of a tag that matches its base: its capacity is not 0). False, changing nothing,
 * when the bin's stack is not there yet or the bin is full: the caller then goes through
 * bp__tcache_put. */
BP__INLINE bool bp__tcache_push_kept(bp__tcache *tc, unsigned cls, bp_buf *b)
{
    BP__ASSERT(cls < tc->head.ncacheable);
    return bp__bin_push(&tc->head.bins[cls], b); /* (which keeps the bin's address opaque) */
}

/* Caches a released object whose region has class `cls` (the bin invariants already hold
 * for it), making room in a full bin. False when the class is not cached: the caller gives
 * the region to the arena. */
BP__INLINE bool bp__tcache_put(bp__tcache *tc, unsigned cls, bp_buf *b)
{
    bool put = bp__tcache_keeps(tc, cls) && (bp__tcache_push_kept(tc, cls, b) || bp__tcache_put_slow(tc, cls, b));
    if (put) bp__tcache_ledger(tc, 1);
    return put;
}

#endif
