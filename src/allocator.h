/* SPDX-License-Identifier: MIT */
/*
 * The allocator object: its configuration, arenas, object pool and counters, the list of
 * its thread states, and the memory behind its buffers - regions from an arena (pooled) or
 * from malloc (unpooled), given back with their objects. The process's registry of live
 * allocators (for the fork handlers) is here too. Making and ending allocators is in
 * lifetime.c; thread states in thread.c.
 */
#ifndef BP__ALLOCATOR_H
#define BP__ALLOCATOR_H

#include "arena.h"
#include "common.h"
#include "leak.h"
#include "object.h"
#include "recycler.h"
#include "size_class.h"
#include "state.h"

#include <pthread.h>
#include <stdatomic.h>

struct bp_allocator {
    bp__allocator_head head;     /* first: the id (unique for the life of the process) and the
                                    size-class table, which the inline bp_alloc reads */
    bool pooled;
    bool is_default;
    bool has_prefetchw;          /* bp__os_cpu_has_prefetchw(), for remote take-backs */
    bool release_check;          /* config.release_check (always for unpooled), on the line
                                    every slow release reads anyway */
    bp_config config;
    bp__size_classes sc;
    bp__arena *arenas;           /* config.arenas of them; NULL if unpooled */
    pthread_key_t thread_key;
    pthread_mutex_t lock;        /* guards the fields below and the object pool */
    bp__thread_state *threads;
    bp__object_pool objects;
    uint64_t buffers_active_exited; /* counters of threads that have exited (their ledgers) */
    uint64_t cache_hits_exited, cache_misses_exited, cache_trims_exited;
    uint64_t remote_releases_exited, remote_drained_exited;
    uint64_t views_active_exited;   /* the view ledgers of threads that have exited */
    _Atomic uint64_t view_ledger_stateless; /* views ended where no thread state could be had */
    atomic_bool vanished_states; /* some state is marked vanished (see bp__thread_states_reap) */
    bp__leak_tracker leak;
    struct bp_allocator *next_tracked; /* in the list of allocators reported at exit */
    struct bp_allocator *next_live;    /* in the registry (bp__registry_lock) */
    /* Unpooled allocators have no arenas; they count here. */
    _Atomic uint64_t unpooled_allocations, unpooled_deallocations;
    _Atomic size_t unpooled_active_bytes;
};

/* The registry of live allocators, for the fork handlers, which also walk each one's thread
 * states under its lock: a state joins a->threads under it (and a->lock). */
extern pthread_mutex_t bp__registry_lock;
extern bp_allocator *bp__live_allocators;

void bp__registry_add(bp_allocator *a);
void bp__registry_remove(bp_allocator *a);

/* The class of `size` for a pooled allocator (sc->nclasses when huge): up to 4 KiB from the
 * table in the allocator's head, which the inline bp_alloc reads too. */
BP__INLINE unsigned bp__allocator_class_of(const bp_allocator *a, size_t size)
{
    if (BP__LIKELY(size <= BP__INLINE_SIZE_LIMIT)) return a->head.classes[(size + 15) >> BP__LOG2_QUANTUM];
    return bp__size_class_of(&a->sc, size);
}

/* ts's recycler, or none (ts NULL: objects go to the pool). */
BP__INLINE bp__recycler *bp__recycler_of(bp__thread_state *ts) { return ts != NULL ? &ts->recycler : NULL; }

/* Region of at least `size` bytes from the allocator: pooled from `arena`, or malloc'ed
 * when unpooled (arena NULL). 0 or BP_ENOMEM. */
int bp__region_alloc(bp_allocator *a, bp__arena *arena, size_t size, bp__region *out);

/* Gives a region back to its arena, or to free() when it was malloc'ed. */
void bp__region_free(bp_allocator *a, const bp__region *region);

/* A released buffer whose region goes to no thread cache: the region back to its arena (or
 * to free()), the object to ts's recycler (ts may be NULL), or with hold_back to
 * quarantine. */
void bp__buf_free(bp__thread_state *ts, bp_allocator *a, bp_buf *b, bool hold_back);

/* Whether a region belongs to ts's arena: only those go into ts's cache (a bin gives its
 * overflow to its arena's cache without looking at the objects). */
BP__INLINE bool bp__region_is_home(const bp__region *region, const bp__thread_state *ts)
{
    return region->chunk != NULL && region->chunk->arena == ts->arena;
}

/* The release tag for a plain root owned by ts (which may be NULL) with its current region:
 * ts's base + class when its release may go straight into ts's cache. Not for a live root
 * a view or a composite recorded (odd generation, see object.h): that one keeps
 * BP__TAG_NONE until it is released. */
BP__INLINE uint32_t bp__buf_release_tag(const bp_buf *b, const bp__thread_state *ts)
{
    if (ts == NULL) return BP__TAG_NONE;
    /* The class first, as in bp__buf_cache_at_home: no look at the chunk for a class the
     * cache does not keep. */
    uint32_t tag = bp__release_tag(&ts->tcache, b->region.class_index);
    return tag != BP__TAG_NONE && bp__region_is_home(&b->region, ts) ? tag : BP__TAG_NONE;
}

/* The class in a release tag (its low byte), read as a byte of its own: a load straight
 * into the bin index, not a word load and a zero-extension. */
BP__INLINE unsigned bp__release_tag_class(const bp_buf *b)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return ((const unsigned char *)&b->head.release_tag)[sizeof b->head.release_tag - 1];
#else
    return ((const unsigned char *)&b->head.release_tag)[0];
#endif
}

/* Makes a released object (with its region set) meet the thread cache's invariants: what a
 * root fresh from bp_alloc_ex has, besides its indices and count. ts may be NULL (an object
 * no thread cache will take: composites, wrapped buffers). */
BP__INLINE void bp__buf_object_prepare(bp_buf *b, bp_allocator *a, bp__thread_state *ts)
{
    b->head.memory = b->region.memory;
    b->root = NULL;
    b->views = NULL;
    b->leak = NULL;
    b->composite = NULL;
    b->allocator = a;
    b->owner = ts;
    b->head.release_tag = bp__buf_release_tag(b, ts);
}

/* A released object (bin invariants otherwise met) into ts's cache as ts's own: owner and
 * release tag rewritten unless the tag is already this cache's (which says the owner, the
 * arena and the class are). False, changing nothing, for another arena's region, a class
 * not cached, or a bin that refuses. */
BP__INLINE bool bp__buf_cache_at_home(bp__thread_state *ts, bp_buf *b)
{
    /* A tag of this cache says all of it - owner, arena, class - from the first line (a
     * remote take-back then reads nothing else of an object another core wrote last). As
     * on the release fast path, BP__TAG_NONE matches no cache's base (see tcache.h). */
    uint32_t tag = BP__TAG_LOAD(b);
    if (!BP__POISONS && BP__LIKELY((tag & ~0xffu) == ts->tcache.head.tag_base)) /* (those builds: no tag) */
        return bp__tcache_put(&ts->tcache, bp__release_tag_class(b), b);
    /* The class first: for one no cache keeps (every release of such a buffer comes here)
     * that answers without a look at the region's chunk. */
    unsigned cls = b->region.class_index;
    if (cls >= ts->tcache.head.ncacheable || !bp__region_is_home(&b->region, ts)) return false;
    b->owner = ts;
    /* Stored only when it changes: a cache whose every release takes the slow path keeps
     * BP__TAG_NONE, which a release racing this one (and failing) may be reading. */
    uint32_t own = bp__release_tag(&ts->tcache, cls);
    if (tag != own) BP__TAG_STORE(b, own);
    return bp__tcache_put(&ts->tcache, cls, b);
}

/* A view made (+1) or ended (-1) on this thread; ts NULL when its state could not be had. */
static inline void bp__view_ledger(bp_allocator *a, bp__thread_state *ts, int64_t delta)
{
    if (BP__LIKELY(ts != NULL)) bp__counter_add(&ts->view_ledger, (uint64_t)delta);
    else atomic_fetch_add_explicit(&a->view_ledger_stateless, (uint64_t)delta, memory_order_relaxed);
}

#endif
