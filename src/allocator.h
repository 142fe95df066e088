/* SPDX-License-Identifier: MIT */
/*
 * The allocator object and the per-thread state it keeps: the arena a thread is bound to
 * and its recycler of bp_buf objects (Netty's Recycler), so that steady traffic allocates
 * no metadata.
 *
 * A thread's state is found through a one-entry thread-local cache (allocator id -> state),
 * then through the allocator's pthread key, whose destructor returns the state's objects
 * and arena binding when the thread exits. Ids are never reused, so a cache entry for a
 * destroyed allocator can never match a new one.
 */
#ifndef BP__ALLOCATOR_H
#define BP__ALLOCATOR_H

#include "arena.h"
#include "buf.h"
#include "common.h"
#include "size_class.h"
#include "leak.h"
#include "tcache.h"

#include <pthread.h>
#include <stdatomic.h>

#define BP__SLAB_BUFS 64     /* bp_buf objects per metadata slab */
#define BP__SPARE_BATCH 64   /* objects moved at once between a thread and the spare list */
#define BP__QUARANTINE 4096  /* paranoid: released objects held back before reuse */

typedef struct bp__buf_slab {
    struct bp__buf_slab *next;
    bp_buf bufs[BP__SLAB_BUFS];
} bp__buf_slab;

#define BP__REMOTE_SLOT_BITS 3 /* 8 slots: owners a thread collects remote releases for at once */
#define BP__REMOTE_SLOTS (1u << BP__REMOTE_SLOT_BITS)

/* One thread's view of one allocator. Counters have a single writer (the thread) and
 * are read by stats with relaxed loads; they are updated with a load and a store, never a
 * read-modify-write. */
typedef struct bp__thread_state {
    bp_allocator *allocator;
    bp__arena *arena;            /* bound on first use; NULL for unpooled or while unused */
    bp_buf *free_bufs;           /* recycler stack */
    unsigned nfree_bufs;
    bool in_use;                 /* a live thread owns it (guarded by allocator->lock) */
    _Atomic uint64_t remote_releases; /* buffers this thread pushed to other owners */
    _Atomic uint64_t remote_drained;  /* buffers other threads pushed to this one */
    struct bp__thread_state *prev, *next; /* in allocator->threads */
    /* Released buffers of other owners, collected to be pushed a batch at a time (snmalloc's
     * batching): one CAS per batch instead of per buffer. One batch per slot, each slot for
     * the owners that hash to it (bp__remote_slot_of), so a thread releasing buffers of a
     * few owners in turn (a worker serving several event loops) fills a batch for each
     * instead of pushing one at every change of owner. */
    struct bp__remote_slot {
        struct bp__thread_state *owner;
        struct bp__remote_batch *batch; /* NULL until a release needs one */
    } remote_slots[BP__REMOTE_SLOTS];
    /* Batches of buffers allocated here and released by other threads: a push-only stack
     * (Treiber) that other threads CAS onto and this thread takes whole with one exchange.
     * BP__REMOTE_CLOSED while no thread owns the state. On its own cache line: other
     * threads write it. */
    _Alignas(BP__CACHE_LINE) _Atomic(struct bp__remote_batch *) remote_head;
    _Alignas(BP__CACHE_LINE) bp__tcache tcache; /* pooled allocators only */
    /* Views made on this thread minus views ended on it (modulo 2^64), for stats. */
    _Atomic uint64_t view_ledger;
    /* Held by the owning thread while it changes its cache, recycler or remote batches in
     * more than one step (bp__state_enter), and by the fork handlers, so that a child process
     * never finds a state of a vanished thread half-changed (see the fork handlers). */
    bp__lock fork_lock;
    unsigned fork_depth;         /* the owning thread's nesting of bp__state_enter */
} bp__thread_state;

/* Brackets a multi-step change of ts by its own thread (nestable): the fork handlers wait
 * for it to end before the process forks. An uncontended lock, taken on slow paths only. */
BP__INLINE void bp__state_enter(bp__thread_state *ts)
{
    if (ts->fork_depth++ == 0) bp__lock_acquire(&ts->fork_lock);
}

BP__INLINE void bp__state_leave(bp__thread_state *ts)
{
    if (--ts->fork_depth == 0) bp__lock_release(&ts->fork_lock);
}

#define BP__REMOTE_CLOSED ((struct bp__remote_batch *)(uintptr_t)1)

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
    pthread_mutex_t lock;        /* guards the fields below */
    bp__thread_state *threads;
    bp_buf *spare_bufs;          /* objects handed back by full or exiting recyclers */
    size_t nspare_bufs;
    bp__buf_slab *slabs;
    uint64_t buffers_active_exited; /* counters of threads that have exited (their ledgers) */
    uint64_t cache_hits_exited, cache_misses_exited, cache_trims_exited;
    uint64_t remote_releases_exited, remote_drained_exited;
    uint64_t views_active_exited;   /* the view ledgers of threads that have exited */
    _Atomic uint64_t view_ledger_stateless; /* views ended where no thread state could be had */
    bp__leak_tracker leak;
    struct bp_allocator *next_tracked; /* in the list of allocators reported at exit */
    struct bp_allocator *next_live;    /* in the list of every allocator (fork handlers) */
    /* Paranoid leak detection holds released bp_buf objects back from reuse (FIFO, under
     * `lock`), so a stale pointer keeps failing with BP_EFREED for a while. */
    bp_buf **quarantine;
    size_t quarantine_head, quarantine_count;
    /* Unpooled allocators have no arenas; they count here. */
    _Atomic uint64_t unpooled_allocations, unpooled_deallocations;
    _Atomic size_t unpooled_active_bytes;
};

/* Adds to a counter that only this thread writes: a load and a store, no locked
 * instruction, and still a clean read for other threads (relaxed atomics). */
static inline void bp__counter_add(_Atomic uint64_t *counter, uint64_t n)
{
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* One-entry cache: the thread cache of the allocator this thread used last, the head of its
 * state's `tcache` (bp__tls_last and its type are in bytepool.h, which the inline bp_alloc
 * and bp_release read). initial-exec keeps
 * the access a single %fs-relative load, also inside the shared library.
 * Every allocation and release loads it, often right after the program wrote a buffer's
 * bytes, so it sits in the middle of a cache line of its own: a CPU treats a load as
 * dependent on an earlier store when their addresses match in the low 12 bits (4 KiB
 * aliasing), and the bytes programs write most - a buffer's first and last, at line edges
 * for every power-of-two size - then never match it. Left wherever the TLS layout put it,
 * it once sat at page offset 0xbf0-0xbff, and bursts of 1 KiB buffers whose last byte
 * (0xbff) was written ran 15 % slower. */
extern bp__thread_state bp__no_thread_state; /* its cache is bp__tls_last's when none is cached */

/* The thread state whose cache bp__tls_last holds. */
BP__INLINE bp__thread_state *bp__tls_last_state(void)
{
    return (bp__thread_state *)(void *)((char *)bp__tls_last.cache - offsetof(bp__thread_state, tcache.head));
}

/* Finds or creates this thread's state for `a`; NULL when out of memory. */
bp__thread_state *bp__thread_state_slow(bp_allocator *a);

/* A buffer released on a thread that has no state for its allocator (it could not be made):
 * counted off the allocator's ledger of exited threads, so that active_buffers stays exact. */
void bp__count_stateless_release(bp_allocator *a);

#if BP__TESTING
/* Test hook: while `fail` is set, making a thread state fails as malloc would when out of
 * memory. */
void bp__inject_thread_state_failure(bool fail);
#endif

/* This thread's state for `a`, created on first use; NULL when out of memory. */
static inline bp__thread_state *bp__thread_state_get(bp_allocator *a)
{
    if (BP__LIKELY(bp__tls_last.allocator_id == a->head.id)) return bp__tls_last_state();
    return bp__thread_state_slow(a);
}

/* A view made (+1) or ended (-1) on this thread; ts NULL when its state could not be had. */
static inline void bp__view_ledger(bp_allocator *a, bp__thread_state *ts, int64_t delta)
{
    if (BP__LIKELY(ts != NULL)) bp__counter_add(&ts->view_ledger, (uint64_t)delta);
    else atomic_fetch_add_explicit(&a->view_ledger_stateless, (uint64_t)delta, memory_order_relaxed);
}

bp_buf *bp__buf_object_refill(bp__thread_state *ts);
void bp__buf_object_overflow(bp_allocator *a, bp__thread_state *ts, bp_buf *b);

/* A bp_buf object from the thread's recycler (or a new slab); NULL when out of memory. */
BP__INLINE bp_buf *bp__buf_object_get(bp__thread_state *ts)
{
    bp_buf *b = ts->free_bufs;
    if (BP__LIKELY(b != NULL)) {
        ts->free_bufs = b->next_free;
        ts->nfree_bufs--;
        return b;
    }
    return bp__buf_object_refill(ts);
}

/* Paranoid leak detection: holds a released object back; the oldest held one goes to the
 * spare list. */
void bp__buf_object_quarantine(bp_allocator *a, bp_buf *b);

/* Gives a released bp_buf object back to the thread's recycler (ts may be NULL). */
BP__INLINE void bp__buf_object_put(bp__thread_state *ts, bp_allocator *a, bp_buf *b)
{
    if (BP__LIKELY(ts != NULL && ts->nfree_bufs < a->config.recycler_capacity)) {
        b->next_free = ts->free_bufs;
        ts->free_bufs = b;
        ts->nfree_bufs++;
        return;
    }
    bp__buf_object_overflow(a, ts, b);
}

/* A released object whose region went elsewhere: no memory reachable through it any more,
 * and back to the recycler - or, with hold_back (paranoid leak detection), to quarantine. */
BP__INLINE void bp__buf_object_retire(bp__thread_state *ts, bp_allocator *a, bp_buf *b, bool hold_back)
{
    b->head.memory = NULL;
    b->region.memory = NULL;
    if (BP__UNLIKELY(hold_back)) bp__buf_object_quarantine(a, b);
    else bp__buf_object_put(ts, a, b);
}

/* A released buffer whose region goes to no thread cache: the region back to its arena,
 * with the object held on it where the arena keeps objects with the runs of its class (see
 * bp__held_run); otherwise the object to ts's recycler (ts may be NULL), or with hold_back
 * to quarantine (and not held on the run). */
void bp__buf_give_back(bp__thread_state *ts, bp_allocator *a, bp_buf *b, bool hold_back);

/* The objects `arena` let loose (see bp__arena_take_loose_objects) back into ts's recycler
 * (ts may be NULL: then to the spare list). */
void bp__buf_objects_reclaim(bp_allocator *a, bp__thread_state *ts, bp__arena *arena);

/* Region of at least `size` bytes from the allocator: pooled from `arena`, or malloc'ed
 * when unpooled (arena NULL). 0 or BP_ENOMEM. */
int bp__region_alloc(bp_allocator *a, bp__arena *arena, size_t size, bp__region *out);

/* Gives a region back to its arena, or to free() when it was malloc'ed. */
void bp__region_free(bp_allocator *a, const bp__region *region);

/* Whether a region belongs to ts's arena: only those go into ts's cache (a bin gives its
 * overflow to its arena's cache without looking at the objects). */
BP__INLINE bool bp__region_is_home(const bp__region *region, const bp__thread_state *ts)
{
    return region->chunk != NULL && region->chunk->arena == ts->arena;
}

/* The release tag for a plain root owned by ts (which may be NULL) with its current region:
 * ts's base + class when its release may go straight into ts's cache. Not for a live root
 * a view or a composite recorded (odd generation, see buf.h): that one keeps BP__TAG_NONE
 * until it is released. */
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
 * root fresh from bp_alloc_ex has, besides its indices and count. */
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
    uint32_t tag = b->head.release_tag;
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
    if (tag != own) b->head.release_tag = own;
    return bp__tcache_put(&ts->tcache, cls, b);
}

/* The class of `size` for a pooled allocator (sc->nclasses when huge): up to 4 KiB from the
 * table in the allocator's head, which the inline bp_alloc reads too. */
BP__INLINE unsigned bp__allocator_class_of(const bp_allocator *a, size_t size)
{
    if (BP__LIKELY(size <= BP__INLINE_SIZE_LIMIT)) return a->head.classes[(size + 15) >> BP__LOG2_QUANTUM];
    return bp__size_class_of(&a->sc, size);
}

/* A cache miss, an uncached size or an unpooled allocator: a released object with a fresh
 * region of at least `size` bytes attached (prepared), or NULL with *rc = BP_ENOMEM. `cls` is
 * size's class (bp__size_class_of) for a pooled thread state, ignored otherwise. */
bp_buf *bp__buf_alloc_miss(bp_allocator *a, bp__thread_state *ts, size_t size, unsigned cls, int *rc);

/* A released object with a region of at least `size` bytes attached: from the thread cache
 * (one pop) when it has one, otherwise from bp__buf_alloc_miss. Ticks the thread's
 * allocation clock first: for a buffer when `sample` is not NULL (set to whether leak
 * detection tracks this one), else for a region growth takes. */
BP__INLINE bp_buf *bp__buf_with_region(bp_allocator *a, bp__thread_state *ts, size_t size, int *rc, bool *sample)
{
    bool due = bp__tcache_tick(&ts->tcache, sample != NULL);
    if (sample != NULL) *sample = due;
    unsigned cls = 0;
    if (BP__LIKELY(ts->arena != NULL)) {
        cls = bp__allocator_class_of(a, size); /* once, for the miss too */
        bp_buf *b = bp__tcache_take(&ts->tcache, cls);
        if (BP__LIKELY(b != NULL)) return b;
    }
    return bp__buf_alloc_miss(a, ts, size, cls, rc);
}

/* For growth, which needs memory without another object: a region through the cache first
 * (0 or BP_ENOMEM), and an old region back into it. */
int bp__region_take(bp_allocator *a, bp__thread_state *ts, size_t size, bp__region *out);
void bp__region_give(bp_allocator *a, bp__thread_state *ts, const bp__region *region);

#ifndef BP__REMOTE_BATCH
#define BP__REMOTE_BATCH 64 /* buffers per remote push; 1 = a CAS per buffer */
#endif

/* Buffers released on one thread for another owner, as an array: the owner's take-back
 * reads the pointers in sequence (and can prefetch the objects) instead of chasing a list
 * linked through objects that another core wrote last. malloc'ed by the releasing thread,
 * freed by the owner. */
typedef struct bp__remote_batch {
    struct bp__remote_batch *next; /* in the owner's remote stack */
    unsigned count;
    bp_buf *bufs[BP__REMOTE_BATCH];
} bp__remote_batch;

/* Pushes the slot's pending batch onto its owner's remote stack; if the owner has closed it
 * (its thread exited), frees the buffers here. */
void bp__remote_flush_slot(bp__thread_state *ts, struct bp__remote_slot *slot);

/* Pushes every pending batch of this thread (bp__remote_flush_slot). */
void bp__remote_flush(bp__thread_state *ts);

/* A remote release with no batch in its slot to add to: makes one, or when that fails frees
 * the buffer here as if its owner had exited. */
void bp__remote_release_slow(bp__thread_state *ts, struct bp__remote_slot *slot, bp_buf *b);

/* The slot for an owner's batch: its state's address hashed (Fibonacci hashing of the
 * line number), no load. */
BP__INLINE unsigned bp__remote_slot_of(const bp__thread_state *owner)
{
    uint32_t line = (uint32_t)((uintptr_t)owner / BP__CACHE_LINE);
    return (line * 2654435769u) >> (32 - BP__REMOTE_SLOT_BITS);
}

#if BP__TESTING
/* Test hook: while `fail` is set, making a remote batch fails as malloc would when out of
 * memory. */
void bp__remote_inject_batch_failure(bool fail);
#endif

/* Queues a buffer released on `ts` for its owner (another thread state). */
BP__INLINE void bp__remote_release(bp__thread_state *ts, bp__thread_state *owner, bp_buf *b)
{
    struct bp__remote_slot *slot = &ts->remote_slots[bp__remote_slot_of(owner)];
    if (BP__UNLIKELY(slot->owner != owner)) { /* another owner had the slot: its batch goes */
        bp__remote_flush_slot(ts, slot);
        slot->owner = owner;
    }
    bp__remote_batch *batch = slot->batch;
    if (BP__UNLIKELY(batch == NULL)) {
        bp__remote_release_slow(ts, slot, b);
        return;
    }
    batch->bufs[batch->count++] = b;
    if (BP__UNLIKELY(batch->count == BP__REMOTE_BATCH)) bp__remote_flush_slot(ts, slot);
}

/* Takes every buffer other threads pushed to this thread: regions into the cache (or back
 * to their arenas), objects into the recycler. Returns how many. */
size_t bp__remote_drain(bp__thread_state *ts);

#endif
