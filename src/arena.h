/* SPDX-License-Identifier: MIT */
/*
 * An arena: the chunk lists, the per-class subpage pools and the huge mappings of one
 * share of the allocator's threads (Netty's PoolArena), behind one lock. Threads are
 * spread over arenas so that they rarely contend for the same lock.
 *
 * Invariants (under lock)
 * - Every chunk of the arena is in exactly one of its chunk lists.
 * - A small class's pool holds exactly the subpages of that class with a free slot (plus
 *   possibly one empty subpage, kept to avoid churn).
 * - active_bytes == sum of region lengths handed out and not yet freed.
 */
#ifndef BP__ARENA_H
#define BP__ARENA_H

#include "chunk.h"
#include "chunk_list.h"
#include "common.h"
#include "lock.h"
#include "size_class.h"
#include "subpage.h"

#include <pthread.h>
#include <stdatomic.h>

/* Where a region came from. Unpooled (malloc'ed) regions are not counted by arenas. */
/* BP__KIND_NONE: no region at all (views and composites, which show other buffers' memory). */
/* BP__KIND_WRAPPED: the program's memory (bp_wrap), given back through its free_fn. */
enum {
    BP__KIND_SMALL, BP__KIND_NORMAL, BP__KIND_HUGE, BP__NKINDS, BP__KIND_MALLOC = BP__NKINDS, BP__KIND_NONE,
    BP__KIND_WRAPPED
};

/* Memory handed out for one buffer. */
typedef struct bp__region {
    uint8_t *memory;
    size_t length;       /* usable bytes (the class size, or the whole huge mapping) */
    unsigned kind;       /* BP__KIND_* */
    unsigned class_index; /* size class; sc->nclasses for huge, unpooled and wrapped regions */
    union {
        struct {
            struct bp__chunk *chunk; /* NULL for a huge mapping */
            uint64_t handle;     /* chunk: run/slot handle; huge: its bp__huge node */
        };
        /* BP__KIND_WRAPPED: what its release calls. Such a region never goes back to an
         * arena or a cache (its buffer's release branches off before), so nothing reads
         * chunk or handle of it. */
        struct {
            bp_wrap_free_fn free_fn;
            void *user_data;
        } wrapped;
    };
} bp__region;            /* kind and class before chunk and handle: see struct bp_buf */

/* A pooled small or normal region without its class (the caller knows it): what thread
 * caches keep and what batches move. */
typedef struct bp__cached_region {
    uint8_t *memory;
    struct bp__chunk *chunk;
    uint64_t handle;
} bp__cached_region;

/* The arena's cache of one class: released buffers (bp_buf objects with their regions still
 * attached, as thread caches keep them) that the arena's threads gave back when a bin
 * overflowed, for any of them to take back in a batch (tcmalloc's transfer cache). A region
 * here is still handed out for its chunk; moving it between a thread cache and this cache
 * copies pointers and touches neither the objects nor the chunk. Guarded by the arena lock. */
typedef struct bp__arena_cache_bin {
    struct bp_buf **entries; /* entries[0] the oldest; allocated on first use */
    uint32_t count;
    uint32_t capacity;       /* 0: the class is not kept */
    uint32_t low_water;      /* the fewest entries since the last trim: that many were idle */
    uint32_t giver;          /* the tag base of the thread cache that gave every entry here,
                                BP__ARENA_GIVERS_MIXED once two have: that thread takes them
                                back without touching them (their owner and tags are its own) */
} bp__arena_cache_bin;

#define BP__ARENA_GIVERS_MIXED UINT32_MAX /* no thread cache's tag base */

/* The arena's run cache of one normal class that thread caches keep: runs of that class
 * freed past the caches (what overflowed a thread's bin and the arena's cache, a burst
 * likely to come back, or was released where no thread cache took it) but not given back
 * to their chunks (deferred coalescing, as jemalloc delays it for its dirty extents). To
 * its chunk such a run is still in use; the arena counts it as freed. The class's next
 * allocations from the arena take them with no chunk work (a thread's miss up to half a
 * bin under one lock); the runs go back to their chunks (split and coalesce as usual)
 * before the arena would take an empty or new chunk, when idle since the last purge check,
 * when the arena is purged, and when its last thread leaves (runs are held back only while
 * a thread is bound). Classes no thread cache keeps hold none: their runs, as long as
 * their sizes need, go straight back to their chunks, where the closest fit can reuse them
 * for any length. Guarded by the arena lock. */
typedef struct bp__run_cache_bin {
    bp__cached_region *entries; /* entries[0] the oldest; allocated on first use */
    uint32_t count;
    uint32_t capacity;          /* 0: the class is not kept (small classes, classes no
                                   thread cache keeps, or off) */
    uint32_t low_water;         /* the fewest entries since the last check: that many idle */
} bp__run_cache_bin;

/* A huge mapping, listed so that destroying the arena can unmap what users leaked. */
typedef struct bp__huge {
    struct bp__huge *prev, *next;
    struct bp__arena *arena;
    void *memory;
    size_t length;
} bp__huge;

typedef struct bp__arena {
    bp__lock lock;
    const bp__size_classes *sc;
    bp__chunk_list lists[BP__NBANDS];
    bp__fit_index fit;                          /* the chunks of the lists by free run class */
    bp__subpage_pool pools[BP__MAX_CLASSES]; /* entries 0 .. sc->nsmall - 1 used */
    bp__huge *huge_head;
    uint64_t allocations[BP__NKINDS];
    uint64_t deallocations[BP__NKINDS];
    size_t active_bytes;
    size_t huge_mapped_bytes;
    size_t chunks;        /* chunks in the lists */
    bp__chunk *retained;  /* empty chunks kept for reuse, newest first (linked by next) */
    size_t nretained;
    unsigned decay_ms;    /* chunk_decay_ms */
    unsigned dirty_decay_ms;
    uint64_t last_dirty_pass_ms; /* the last purge pass over the chunks' free pages */
    uint64_t purged_bytes;
    size_t dirty_pages;   /* of the chunks in the lists (each one's dirty_sum points here) */
    size_t retained_dirty_pages; /* of the retained chunks (theirs points here) */
    uint64_t clock;       /* counts runs taken and given back: chunks' last_used */
    unsigned dirty_max_percent;
    size_t peak_active;   /* the most active_bytes since peak_since_ms ... */
    size_t peak_before;   /* ... and in the window before */
    uint64_t peak_since_ms;
    atomic_uint threads;  /* threads bound to this arena (changed without the lock) */
    unsigned index;
    size_t cache_entries, cache_bytes; /* summed over `cache` */
    size_t cache_max_bytes;              /* arena_cache_max_bytes: cache_bytes stays below */
    bp__arena_cache_bin cache[BP__MAX_CLASSES];
    size_t run_cache_entries, run_cache_bytes; /* summed over `runs` */
    bp__chunk *doomed;    /* chunks emptied under the lock, unmapped once it is let go */
    bp__run_cache_bin runs[BP__MAX_CLASSES];   /* entries sc->nsmall .. sc->nclasses - 1 used */
    unsigned whole_from;  /* the first normal class no thread cache keeps: from it up, a
                             run is as many pages as the size needs and the run cache keeps
                             none (sc->nclasses: none); see bp__arena_configure_caches */
    uint64_t idle_ops;    /* operations counted at the last bp__arena_idle ... */
    uint64_t idle_since_ms; /* ... and when that count last changed */
} __attribute__((aligned(BP__CACHE_LINE))) bp__arena;

/* dirty_max_percent: the bound on free resident bytes (bp_config); run_cache_size: capacity
 * of each normal class's run cache (0: none). */
int bp__arena_init(bp__arena *arena, const bp__size_classes *sc, unsigned index, unsigned decay_ms,
                   unsigned dirty_decay_ms, unsigned dirty_max_percent, unsigned run_cache_size);

/* Sets, before the arena is first used, what the thread caches above it keep: classes from
 * `whole_from` up are kept by none (their runs take as many pages as their sizes need, and
 * the run cache holds none of them), and the arena's cache keeps up to capacity[c] ready
 * buffers of class c (0: none), max_bytes in all. */
void bp__arena_configure_caches(bp__arena *arena, unsigned whole_from, const uint32_t *capacity, size_t max_bytes);

/* The arena's cache (see bp__arena_cache_bin). Moves as many of bufs[0, n) as there is room
 * for onto the top of class cls's cache, noting `giver` (a thread cache's tag base). Returns
 * how many. */
uint32_t bp__arena_cache_give(bp__arena *arena, unsigned cls, struct bp_buf *const *bufs, uint32_t n, uint32_t giver);

/* Moves up to n of the newest entries of class cls's cache into out, oldest of them first.
 * *same_giver: every entry there was given by `taker` since its cache began (a taker that
 * gave them needs to change nothing in them). Returns how many. */
uint32_t bp__arena_cache_take(bp__arena *arena, unsigned cls, struct bp_buf **out, uint32_t n, uint32_t taker,
                              bool *same_giver);

/* How many entries the cache holds in all its classes. */
size_t bp__arena_cache_entries(bp__arena *arena);

/* Moves up to n of the oldest entries of class cls's cache that stayed idle since the last
 * call (below the low-water mark), or with `all` any entries, into out, for the caller to
 * free. Returns how many: n when more may be left. */
uint32_t bp__arena_cache_take_idle(bp__arena *arena, unsigned cls, struct bp_buf **out, uint32_t n, bool all);

/* The arena a pooled region must go back to (NULL for a malloc'ed one). */
static inline bp__arena *bp__region_arena(const bp__region *region)
{
    if (region->chunk != NULL) return region->chunk->arena;
    if (region->kind == BP__KIND_HUGE) return ((const bp__huge *)(uintptr_t)region->handle)->arena;
    return NULL;
}

/* Unmaps every chunk and huge mapping, including those still handed out. */
void bp__arena_destroy(bp__arena *arena);

/* Hands out a region of at least `size` bytes (size <= BP_CAPACITY_LIMIT).
 * Returns 0, or BP_ENOMEM when memory cannot be mapped. */
int bp__arena_alloc(bp__arena *arena, size_t size, bp__region *out);

/* Takes back a region that this arena handed out: a normal run into the run cache while
 * its class has room there, anything else into its chunk. */
void bp__arena_free(bp__arena *arena, const bp__region *region);

/* Hands out up to n regions of small class `cls` under one lock, lowest address first.
 * Returns how many (0 only when memory cannot be mapped). */
unsigned bp__arena_alloc_small_batch(bp__arena *arena, unsigned cls, bp__cached_region *out, unsigned n);

/* Hands out up to n runs of normal class `cls` (one thread caches keep) under one lock:
 * those its run cache holds, newest first, or when it holds none, one run cut from the
 * chunks. Returns how many (0: memory cannot be mapped). */
unsigned bp__arena_alloc_normal_batch(bp__arena *arena, unsigned cls, bp__cached_region *out, unsigned n);

/* Takes back n regions of class `cls`, each to its own arena, locking each arena once per
 * run of regions that belong to it. With `hold` (an overflowing cache: a burst that may
 * come back), normal runs go to the run cache as far as it has room; else
 * (trims: what is not in demand) into their chunks. */
void bp__regions_free_batch(const bp__size_classes *sc, unsigned cls, const bp__cached_region *regions,
                            unsigned n, bool hold);

/* Gives the run cache's runs back to their chunks: all of them, or those idle since the
 * last call (the low-water mark); with `all`, also the empty subpage each small class keeps.
 * Then unmaps retained empty chunks: all of them, or only those empty for decay_ms or more.
 * Then, with `all` or when dirty_decay_ms has passed since the last pass, purges the free
 * pages of the chunks in use: all of them, or those free since the last pass. Returns how
 * many chunks were unmapped. */
size_t bp__arena_purge(bp__arena *arena, bool all);

/* Whether nothing was allocated from or released to the arena since the last call (or the
 * last bp__arena_purge_idle); *idle_ms: for how long. For the background purge, which
 * leaves busy arenas to the purges their threads' allocations drive. */
bool bp__arena_idle(bp__arena *arena, uint64_t *idle_ms);

/* bp__arena_purge(arena, false) for an arena idle for idle_ms: in addition, once idle for
 * dirty_decay_ms every free page goes back (each has been free that long), and once idle
 * for chunk_decay_ms the empty subpage each small class keeps gives its run back. What
 * this purge releases does not count as activity for bp__arena_idle. */
size_t bp__arena_purge_idle(bp__arena *arena, uint64_t idle_ms);

/* Gives every run in the run cache back to its chunk (an arena nobody is bound to). */
void bp__arena_run_cache_flush(bp__arena *arena);

/* Copies counters under the lock. */
void bp__arena_get_stats(bp__arena *arena, bp_arena_stats *out);

/* Snapshots under the lock: chunks (band by band) and small classes, written as the public
 * array functions describe; return how many there are in all. */
size_t bp__arena_chunk_stats(bp__arena *arena, bp_chunk_stats *out, size_t max, size_t elem_size);
size_t bp__arena_class_stats(bp__arena *arena, bp_class_stats *out, size_t max, size_t elem_size);

/* Debug: checks every chunk of the arena (bp__chunk_check) and list membership, and that
 * each run in the run cache is a used run of its class in one of the arena's chunks. */
bool bp__arena_check(bp__arena *arena);

#endif
