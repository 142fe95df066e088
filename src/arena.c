/* SPDX-License-Identifier: MIT */
/*
 * Allocation inside an arena: small classes from subpage pools, normal classes as page
 * runs from its chunks (the closest fit over all of them, through the fit index; then a
 * retained or new chunk), huge sizes as exact mappings.
 */
#include "arena.h"

#include "os.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int bp__arena_init(bp__arena *arena, const bp__size_classes *sc, unsigned index, unsigned decay_ms,
                   unsigned dirty_decay_ms, unsigned dirty_max_percent, unsigned run_cache_size)
{
    memset(arena, 0, sizeof *arena);
    if (bp__lock_init(&arena->lock) != 0) return BP_ENOMEM;
    arena->sc = sc;
    arena->index = index;
    arena->decay_ms = decay_ms;
    arena->dirty_decay_ms = dirty_decay_ms;
    arena->dirty_max_percent = dirty_max_percent;
    arena->last_dirty_pass_ms = arena->peak_since_ms = now_ms();
    atomic_init(&arena->threads, 0);
    bp__chunk_lists_init(arena->lists, &arena->fit);
    for (unsigned c = sc->nsmall; c < sc->nclasses; c++) arena->runs[c].capacity = run_cache_size;
    arena->whole_from = sc->nclasses;
    return 0;
}

void bp__arena_destroy(bp__arena *arena)
{
    /* Held-back runs go with their chunks, unmapped below: forgotten, not given back. */
    for (unsigned c = 0; c < BP__MAX_CLASSES; c++) arena->runs[c].count = arena->runs[c].low_water = 0;
    arena->run_cache_entries = arena->run_cache_bytes = 0;
    for (unsigned b = 0; b < BP__NBANDS; b++) {
        bp__chunk *c = arena->lists[b].head;
        while (c != NULL) {
            bp__chunk *next = c->next;
            for (uint32_t p = 0; p < arena->sc->chunk_pages; p++)
                bp__subpage_delete(c->subpages[p]);
            bp__chunk_delete(c);
            c = next;
        }
        arena->lists[b].head = NULL;
    }
    memset(arena->pools, 0, sizeof arena->pools); /* their subpages went with the chunks */
    bp__arena_purge(arena, true);
    for (bp__huge *h = arena->huge_head; h != NULL;) {
        bp__huge *next = h->next;
        BP__UNPOISON(h->memory, h->length);
        bp__os_unmap(h->memory, h->length);
        free(h);
        h = next;
    }
    arena->huge_head = NULL;
    /* Objects in the cache live in the allocator's slabs; only the arrays are the arena's. */
    for (unsigned c = 0; c < BP__MAX_CLASSES; c++) {
        free(arena->cache[c].entries);
        free(arena->runs[c].entries);
    }
    bp__lock_destroy(&arena->lock);
}

void bp__arena_configure_caches(bp__arena *arena, unsigned whole_from, const uint32_t *capacity, size_t max_bytes)
{
    arena->whole_from = whole_from;
    arena->cache_max_bytes = max_bytes;
    for (unsigned c = 0; c < arena->sc->nclasses; c++) arena->cache[c].capacity = capacity[c];
    /* A run held back for a class no bin keeps would wait for a request of its exact
     * length; in the chunk, the closest fit reuses it for any (see bp__run_cache_bin). */
    for (unsigned c = whole_from; c < arena->sc->nclasses; c++) arena->runs[c].capacity = 0;
}

/* ---------------------------------------------------------------------------------------
 * The arena's cache of ready buffers (see bp__arena_cache_bin): pointers only, never
 * dereferenced here.
 * ------------------------------------------------------------------------------------- */

uint32_t bp__arena_cache_give(bp__arena *arena, unsigned cls, struct bp_buf *const *bufs, uint32_t n, uint32_t giver)
{
    bp__arena_cache_bin *ac = &arena->cache[cls];
    if (ac->capacity == 0 || n == 0) return 0; /* capacity never changes: no lock needed */
    bp__lock_acquire(&arena->lock);
    if (ac->entries == NULL) ac->entries = malloc(ac->capacity * sizeof *ac->entries);
    uint32_t room = ac->entries != NULL ? ac->capacity - ac->count : 0;
    size_t budget = (arena->cache_max_bytes - arena->cache_bytes) / arena->sc->class_size[cls];
    if (budget < room) room = (uint32_t)budget;
    uint32_t k = n < room ? n : room;
    if (k > 0) memcpy(ac->entries + ac->count, bufs, k * sizeof *bufs);
    if (ac->count == 0) ac->giver = giver;
    else if (ac->giver != giver) ac->giver = BP__ARENA_GIVERS_MIXED;
    ac->count += k;
    arena->cache_entries += k;
    arena->cache_bytes += (size_t)k * arena->sc->class_size[cls];
    bp__lock_release(&arena->lock);
    return k;
}

uint32_t bp__arena_cache_take(bp__arena *arena, unsigned cls, struct bp_buf **out, uint32_t n, uint32_t taker,
                              bool *same_giver)
{
    bp__arena_cache_bin *ac = &arena->cache[cls];
    *same_giver = false;
    if (ac->capacity == 0) return 0;
    bp__lock_acquire(&arena->lock);
    uint32_t k = n < ac->count ? n : ac->count;
    if (k > 0) { /* (entries may not even exist yet) */
        ac->count -= k;
        memcpy(out, ac->entries + ac->count, k * sizeof *out);
        if (ac->count < ac->low_water) ac->low_water = ac->count;
        *same_giver = ac->giver == taker;
        arena->cache_entries -= k;
        arena->cache_bytes -= (size_t)k * arena->sc->class_size[cls];
    }
    bp__lock_release(&arena->lock);
    return k;
}

size_t bp__arena_cache_entries(bp__arena *arena)
{
    bp__lock_acquire(&arena->lock);
    size_t n = arena->cache_entries;
    bp__lock_release(&arena->lock);
    return n;
}

uint32_t bp__arena_cache_take_idle(bp__arena *arena, unsigned cls, struct bp_buf **out, uint32_t n, bool all)
{
    bp__arena_cache_bin *ac = &arena->cache[cls];
    bp__lock_acquire(&arena->lock);
    uint32_t idle = all ? ac->count : ac->low_water < ac->count ? ac->low_water : ac->count;
    uint32_t k = idle < n ? idle : n;
    if (k > 0) { /* (entries may not even exist yet) */
        memcpy(out, ac->entries, k * sizeof *out);
        memmove(ac->entries, ac->entries + k, (ac->count - k) * sizeof *ac->entries);
        ac->count -= k;
        arena->cache_entries -= k;
        arena->cache_bytes -= (size_t)k * arena->sc->class_size[cls];
    }
    /* What stays is counted from now on: idle at the next call unless taken. */
    ac->low_water = idle == k ? ac->count : ac->low_water - k;
    bp__lock_release(&arena->lock);
    return k;
}

static void run_cache_release_all_locked(bp__arena *arena);

/* ---------------------------------------------------------------------------------------
 * The bound on free resident pages (dirty_max_percent)
 * ------------------------------------------------------------------------------------- */

/* After active_bytes grew: the window's peak follows. */
static inline void note_active_locked(bp__arena *arena)
{
    if (arena->active_bytes > arena->peak_active) arena->peak_active = arena->active_bytes;
}

/* At a purge check: a window of dirty_decay_ms (1 s when that is 0 or never) ends, and the
 * peak that counts is the higher of the two last windows'. */
static void roll_peak_locked(bp__arena *arena, uint64_t now)
{
    unsigned decay = arena->dirty_decay_ms;
    uint64_t window = decay == 0 || decay == BP_DECAY_NEVER ? 1000 : decay;
    if (now - arena->peak_since_ms < window) return;
    arena->peak_before = arena->peak_active;
    arena->peak_active = arena->active_bytes;
    arena->peak_since_ms = now;
}

enum { BP__LRU_BATCH = 16 };

/* Up to BP__LRU_BATCH chunks with dirty pages, in the lists or retained, that took or gave
 * back a run the longest ago, oldest first, in lru[]; returns how many. One walk over the
 * chunks serves that many purges. */
static unsigned least_recently_used_dirty(bp__arena *arena, bp__chunk *lru[BP__LRU_BATCH])
{
    unsigned n = 0;
    for (unsigned b = 0; b <= BP__NBANDS; b++)
        for (bp__chunk *c = b < BP__NBANDS ? arena->lists[b].head : arena->retained; c != NULL; c = c->next) {
            if (c->dirty_pages == 0 || (n == BP__LRU_BATCH && c->last_used >= lru[n - 1]->last_used)) continue;
            unsigned i = n < BP__LRU_BATCH ? n++ : n - 1; /* insertion, dropping the newest */
            for (; i > 0 && lru[i - 1]->last_used > c->last_used; i--) lru[i] = lru[i - 1];
            lru[i] = c;
        }
    return n;
}

/* Handed-out bytes plus free resident ones (dirty pages, held runs) may reach the peak of
 * handed-out bytes plus dirty_max_percent of it. Past that, the least recently used
 * chunks' free pages go back until a quarter of the allowance is free again, so that a
 * steady state purges in batches rather than a page at every allocation. Free pages in
 * chunks that runs were recently taken from or given back to are the likeliest to be used
 * again soon (the placement prefers dirty pages); those in chunks nobody touched for
 * longest, the least. Called after a run was taken: giving one back changes handed-out
 * bytes into free resident bytes, the sum stays. */
static void bound_dirty_locked(bp__arena *arena)
{
    if (arena->dirty_max_percent == 0) return;
    const unsigned shift = arena->sc->page_shift;
    size_t peak = arena->peak_active > arena->peak_before ? arena->peak_active : arena->peak_before;
    size_t allowance = peak / 100 * arena->dirty_max_percent + peak % 100 * arena->dirty_max_percent / 100;
    size_t resident = arena->active_bytes + arena->run_cache_bytes +
                      ((arena->dirty_pages + arena->retained_dirty_pages) << shift);
    if (resident <= peak + allowance) return;
    size_t excess = (resident - (peak + allowance - allowance / 4)) >> shift;
    while (excess > 0) {
        bp__chunk *lru[BP__LRU_BATCH];
        unsigned n = least_recently_used_dirty(arena, lru);
        size_t before = excess;
        for (unsigned i = 0; i < n && excess > 0; i++) {
            size_t bytes = bp__chunk_purge_some(lru[i], true, excess);
            arena->purged_bytes += bytes;
            excess -= bytes >> shift;
        }
        if (excess == before) break; /* no dirty page left anywhere */
    }
}

/* How many chunks of a class's list in the fit index a run request looks at: all of them
 * in most arenas, a bounded scan in arenas of hundreds of chunks. */
enum { BP__FIT_SPAN = 32 };

/* The shortest run of bucket k that holds `pages`, over the first `span` chunks of the fit
 * index's list k; more dirty pages (free but resident: no page fault to reuse them) break
 * a tie. NULL when none of them has one. */
static bp__chunk *shortest_in_class(const bp__fit_index *fit, unsigned k, uint32_t pages, unsigned span, long *offset)
{
    bp__chunk *best = NULL;
    uint32_t best_pages = UINT32_MAX;
    unsigned n = 0;
    for (bp__chunk *c = fit->head[k]; c != NULL && n < span; c = c->fit_links[2 * k + 1], n++) {
        uint32_t length;
        long at = bp__chunk_shortest_run(c, k, pages, &length);
        if (at < 0) continue;
        if (length < best_pages || (length == best_pages && c->dirty_pages > best->dirty_pages)) {
            best = c;
            best_pages = length;
            *offset = at;
        }
    }
    return best;
}

/* A run from the chunks in the lists, or -1 if none has one long enough: the closest fit
 * over all of them (see shortest_in_class), cut from that free run's high end or its low
 * end (see alloc_run). */
static long alloc_run_in_lists(bp__arena *arena, uint32_t pages, unsigned page_class, bool high, bp__chunk **out)
{
    const bp__size_classes *sc = arena->sc;
    const bp__fit_index *fit = &arena->fit;
    bp__chunk *chunk = NULL;
    long offset = -1;
    /* A length that is no class's: its own bucket (between the class below and this one)
     * may hold a run long enough. */
    if (sc->page_class_pages[page_class] != pages)
        chunk = shortest_in_class(fit, page_class - 1, pages, BP__FIT_SPAN, &offset);
    if (chunk == NULL) {
        int k = bp__bits128_first_from(fit->nonempty, page_class);
        if (k < 0) return -1;
        chunk = shortest_in_class(fit, (unsigned)k, pages, BP__FIT_SPAN, &offset);
        BP__ASSERT(chunk != NULL);
    }
    offset = bp__chunk_take_run(chunk, (uint32_t)offset, pages, high);
    bp__chunk_list_took(&arena->lists[chunk->band], chunk);
    *out = chunk;
    return offset;
}

/* A run from the chunks we have; else, once the run cache's runs are back in their chunks
 * (they may coalesce into a long enough run), from a retained or a new chunk: holding runs
 * back never makes the arena take more chunks.
 *
 * With `high` (the runs of classes no thread cache keeps: long, as many pages as their
 * sizes need) the run is cut from the high end of the free run it goes into, other runs
 * (subpages, cached classes) from the low end. Long and short runs so gather at opposite
 * ends of the holes and of new chunks, and a long run given back tends to coalesce with
 * free space beside other long runs into a hole long ones fit, rather than sit between
 * short runs (docs/design.md: what it measured). */
static long alloc_run(bp__arena *arena, uint32_t pages, bool high, bp__chunk **out)
{
    unsigned page_class = bp__page_class_ceil(arena->sc, pages); /* once, for every chunk tried */
    long offset = alloc_run_in_lists(arena, pages, page_class, high, out);
    if (offset < 0 && arena->run_cache_entries > 0) {
        run_cache_release_all_locked(arena);
        offset = alloc_run_in_lists(arena, pages, page_class, high, out);
    }
    if (offset >= 0) {
        (*out)->last_used = ++arena->clock;
        bound_dirty_locked(arena);
        return offset;
    }
    bp__chunk *chunk = arena->retained;
    if (chunk != NULL) { /* an empty chunk kept for reuse: still one free run, still mapped */
        arena->retained = chunk->next;
        arena->nretained--;
        chunk->next = NULL;
        arena->retained_dirty_pages -= chunk->dirty_pages;
    } else {
        chunk = bp__chunk_new(arena, arena->sc);
        if (chunk == NULL) return -1;
    }
    arena->chunks++;
    chunk->dirty_sum = &arena->dirty_pages; /* counted while in the lists */
    arena->dirty_pages += chunk->dirty_pages;
    chunk->last_used = ++arena->clock;
    offset = bp__chunk_take_run(chunk, 0, pages, high);
    bp__chunk_list_add(&arena->lists[BP__Q_INIT], chunk);
    bound_dirty_locked(arena);
    *out = chunk;
    return offset;
}

/* Takes the retained chunks that must go now (all, or those past the decay time) out of
 * the list; the caller unmaps them after letting go of the lock. */
static bp__chunk *take_expired_locked(bp__arena *arena, bool all)
{
    if (arena->retained == NULL) return NULL;
    uint64_t now = all ? 0 : now_ms();
    bp__chunk **link = &arena->retained;
    /* Newest first: once one has expired, every older one has too. */
    while (*link != NULL && !all && now - (*link)->empty_since_ms < arena->decay_ms) link = &(*link)->next;
    bp__chunk *expired = *link;
    *link = NULL;
    for (bp__chunk *c = expired; c != NULL; c = c->next) {
        arena->nretained--;
        arena->retained_dirty_pages -= c->dirty_pages;
        c->dirty_sum = NULL;
    }
    return expired;
}

static size_t delete_chunks(bp__chunk *list)
{
    size_t n = 0;
    while (list != NULL) {
        bp__chunk *next = list->next;
        bp__chunk_delete(list);
        list = next;
        n++;
    }
    return n;
}

/* A purge pass over the free pages of every chunk in use. Under the lock: a page must not
 * be handed out while it is being purged. */
static void purge_dirty_locked(bp__arena *arena, bool all, uint64_t now)
{
    for (unsigned b = 0; b < BP__NBANDS; b++)
        for (bp__chunk *c = arena->lists[b].head; c != NULL; c = c->next)
            if (c->dirty_pages > 0) arena->purged_bytes += bp__chunk_purge(c, all);
    arena->last_dirty_pass_ms = now;
}

/* After a run was freed: move the chunk between bands; an emptied chunk is retained for
 * reuse (or, with no decay time, handed back to unmap). Returns chunks to unmap. */
static bp__chunk *retain_empty_locked(bp__arena *arena, bp__chunk *chunk);

static bp__chunk *settle_after_free(bp__arena *arena, bp__chunk *chunk)
{
    if (bp__chunk_list_after_free(&arena->lists[chunk->band], chunk)) return NULL;
    arena->chunks--;
    return retain_empty_locked(arena, chunk);
}

/* An empty chunk out of the lists: retained for reuse, or (with no decay time) to unmap.
 * Returns chunks to unmap. */
static bp__chunk *retain_empty_locked(bp__arena *arena, bp__chunk *chunk)
{
    arena->dirty_pages -= chunk->dirty_pages;
    chunk->dirty_sum = NULL;
    if (arena->decay_ms == 0) {
        chunk->next = NULL;
        return chunk;
    }
    chunk->dirty_sum = &arena->retained_dirty_pages;
    arena->retained_dirty_pages += chunk->dirty_pages;
    bp__chunk *expired = take_expired_locked(arena, false);
    chunk->empty_since_ms = now_ms();
    chunk->next = arena->retained;
    arena->retained = chunk;
    arena->nretained++;
    return expired;
}

static void append_chunks(bp__chunk **list, bp__chunk *more)
{
    if (more == NULL) return;
    bp__chunk *last = more;
    while (last->next != NULL) last = last->next;
    last->next = *list;
    *list = more;
}

/* ---------------------------------------------------------------------------------------
 * The run cache (see bp__run_cache_bin)
 * ------------------------------------------------------------------------------------- */

/* Holds a freed normal run back from its chunk if its class keeps runs and has room. */
BP__INLINE bool run_cache_put(bp__arena *arena, const bp__region *region)
{
    unsigned cls = region->class_index;
    bp__run_cache_bin *bin = &arena->runs[cls];
    if (bin->count == bin->capacity) return false; /* full, or not kept (capacity 0) */
    /* A class that keeps runs is one thread caches keep: its runs have the class's length
     * (see alloc_normal), so any request of the class can take one. */
    BP__ASSERT(bp__handle_pages(region->handle) == arena->sc->run_pages[cls]);
    if (BP__UNLIKELY(bin->entries == NULL)) {
        bin->entries = malloc(bin->capacity * sizeof *bin->entries);
        if (bin->entries == NULL) return false; /* then into the chunk, as without the cache */
    }
    bin->entries[bin->count++] = (bp__cached_region){region->memory, region->chunk, region->handle};
    arena->run_cache_entries++;
    arena->run_cache_bytes += region->length;
    return true;
}

/* The newest held-back run of normal class `cls` into *out; false when there is none. */
BP__INLINE bool run_cache_take(bp__arena *arena, unsigned cls, bp__region *out)
{
    bp__run_cache_bin *bin = &arena->runs[cls];
    if (bin->count == 0) return false;
    const bp__cached_region *run = &bin->entries[--bin->count];
    if (bin->count < bin->low_water) bin->low_water = bin->count;
    out->memory = run->memory;
    out->chunk = run->chunk;
    out->handle = run->handle;
    out->length = arena->sc->class_size[cls];
    arena->run_cache_entries--;
    arena->run_cache_bytes -= out->length;
    return true;
}

/* Gives the oldest n runs of class `cls` back to their chunks (coalescing, moving chunks
 * between bands); chunks that must be unmapped collect in arena->doomed. */
static void run_cache_release_oldest(bp__arena *arena, unsigned cls, uint32_t n)
{
    bp__run_cache_bin *bin = &arena->runs[cls];
    BP__ASSERT(n <= bin->count);
    if (n == 0) return; /* entries may not even exist yet */
    for (uint32_t i = 0; i < n; i++) {
        const bp__cached_region *run = &bin->entries[i];
        bp__chunk_free_run(run->chunk, bp__handle_offset(run->handle), bp__handle_pages(run->handle));
        run->chunk->last_used = ++arena->clock;
        append_chunks(&arena->doomed, settle_after_free(arena, run->chunk));
    }
    memmove(bin->entries, bin->entries + n, (bin->count - n) * sizeof *bin->entries);
    bin->count -= n;
    arena->run_cache_entries -= n;
    arena->run_cache_bytes -= (size_t)n * arena->sc->class_size[cls];
}

static void run_cache_release_all_locked(bp__arena *arena)
{
    for (unsigned c = arena->sc->nsmall; c < arena->sc->nclasses && arena->run_cache_entries > 0; c++) {
        run_cache_release_oldest(arena, c, arena->runs[c].count);
        arena->runs[c].low_water = 0;
    }
}

/* The runs not taken since the last call go back; what stays is counted from now on. */
static void run_cache_release_idle_locked(bp__arena *arena)
{
    for (unsigned c = arena->sc->nsmall; c < arena->sc->nclasses; c++) {
        bp__run_cache_bin *bin = &arena->runs[c];
        if (bin->low_water > 0) run_cache_release_oldest(arena, c, bin->low_water);
        bin->low_water = bin->count;
    }
}

/* The chunks emptied under the lock that must be unmapped: the caller unmaps them (with
 * delete_chunks) once it has let go of the lock. */
static bp__chunk *take_doomed_locked(bp__arena *arena)
{
    bp__chunk *doomed = arena->doomed;
    arena->doomed = NULL;
    return doomed;
}

void bp__arena_run_cache_flush(bp__arena *arena)
{
    bp__lock_acquire(&arena->lock);
    run_cache_release_all_locked(arena);
    bp__chunk *doomed = take_doomed_locked(arena);
    bp__lock_release(&arena->lock);
    delete_chunks(doomed);
}

/* The empty subpage each small class's pool keeps for steady use (see
 * bp__subpage_free_slot) gives its run back, so that nothing pins an otherwise empty chunk.
 * Emptied chunks collect in arena->doomed or the retained list. */
static void release_kept_subpages_locked(bp__arena *arena)
{
    for (unsigned c = 0; c < arena->sc->nsmall; c++) {
        bp__subpage_pool *pool = &arena->pools[c];
        bp__subpage *sp = pool->head;
        if (pool->count != 1 || sp->nfree != sp->nslots) continue;
        bp__subpage_pool_remove(pool, sp);
        bp__chunk *chunk = sp->chunk;
        chunk->subpages[sp->run_offset] = NULL;
        bp__chunk_free_run(chunk, sp->run_offset, sp->run_pages);
        bp__subpage_delete(sp);
        append_chunks(&arena->doomed, settle_after_free(arena, chunk));
    }
}

/* Chunks of qInit with every page free (qInit keeps them, as Netty's does, so that a class
 * in steady use does not map and unmap chunks) go to the retained list like any emptied
 * chunk. */
static void release_empty_new_chunks_locked(bp__arena *arena)
{
    bp__chunk_list *list = &arena->lists[BP__Q_INIT];
    for (bp__chunk *c = list->head; c != NULL;) {
        bp__chunk *next = c->next;
        if (bp__chunk_longest_free_run(c) == arena->sc->chunk_pages) {
            bp__chunk_list_remove(list, c);
            bp__chunk_fit_leave(c);
            arena->chunks--;
            append_chunks(&arena->doomed, retain_empty_locked(arena, c));
        }
        c = next;
    }
}

/* The purge under the lock: `all`, or what has been idle long enough, where idle_ms is how
 * long nothing was allocated from or released to the arena (0: unknown). */
static bp__chunk *purge_locked(bp__arena *arena, bool all, uint64_t idle_ms, uint64_t now)
{
    roll_peak_locked(arena, now);
    if (all) run_cache_release_all_locked(arena);
    else run_cache_release_idle_locked(arena);
    if (all || (idle_ms > 0 && idle_ms >= arena->decay_ms)) {
        release_kept_subpages_locked(arena);
        release_empty_new_chunks_locked(arena);
    }
    bp__chunk *expired = take_expired_locked(arena, all);
    append_chunks(&expired, take_doomed_locked(arena));
    /* Idle for dirty_decay_ms: every free page has been free at least that long. */
    bool all_dirty = all || (arena->dirty_decay_ms != BP_DECAY_NEVER && idle_ms > 0 && idle_ms >= arena->dirty_decay_ms);
    bool pass_due = arena->dirty_decay_ms != BP_DECAY_NEVER && now - arena->last_dirty_pass_ms >= arena->dirty_decay_ms;
    if (all_dirty || pass_due) purge_dirty_locked(arena, all_dirty, now);
    return expired;
}

size_t bp__arena_purge(bp__arena *arena, bool all)
{
    uint64_t now = now_ms();
    bp__lock_acquire(&arena->lock);
    bp__chunk *expired = purge_locked(arena, all, 0, now);
    bp__lock_release(&arena->lock);
    return delete_chunks(expired);
}

/* Every allocation and release the arena has counted. */
static uint64_t operations_locked(const bp__arena *arena)
{
    uint64_t n = 0;
    for (unsigned k = 0; k < BP__NKINDS; k++) n += arena->allocations[k] + arena->deallocations[k];
    return n;
}

bool bp__arena_idle(bp__arena *arena, uint64_t *idle_ms)
{
    uint64_t now = now_ms();
    bp__lock_acquire(&arena->lock);
    uint64_t ops = operations_locked(arena);
    bool idle = ops == arena->idle_ops;
    if (!idle) {
        arena->idle_ops = ops;
        arena->idle_since_ms = now;
    }
    *idle_ms = now - arena->idle_since_ms;
    bp__lock_release(&arena->lock);
    return idle;
}

size_t bp__arena_purge_idle(bp__arena *arena, uint64_t idle_ms)
{
    uint64_t now = now_ms();
    bp__lock_acquire(&arena->lock);
    bp__chunk *expired = purge_locked(arena, false, idle_ms > 0 ? idle_ms : 1, now);
    /* What the purge itself gave back is no sign of life. */
    arena->idle_ops = operations_locked(arena);
    bp__lock_release(&arena->lock);
    return delete_chunks(expired);
}

/* Up to n (1..64) slots of a small class from one subpage, under the lock: the pool's
 * first subpage, or a new one. Returns how many (0: out of memory). */
static unsigned take_slots(bp__arena *arena, unsigned cls, bp__cached_region *out, unsigned n)
{
    const bp__size_classes *sc = arena->sc;
    bp__subpage_pool *pool = &arena->pools[cls];
    bp__subpage *sp = pool->head;
    if (sp == NULL) {
        bp__chunk *chunk;
        long offset = alloc_run(arena, sc->run_pages[cls], false, &chunk);
        if (offset < 0) return 0;
        sp = bp__subpage_new(chunk, (uint32_t)offset, sc->run_pages[cls], cls,
                             (uint32_t)sc->class_size[cls], sc->run_slots[cls]);
        if (sp == NULL) {
            bp__chunk_free_run(chunk, (uint32_t)offset, sc->run_pages[cls]);
            delete_chunks(settle_after_free(arena, chunk));
            return 0;
        }
        chunk->subpages[offset] = sp;
        bp__subpage_pool_push(pool, sp);
    }
    uint32_t slots[64];
    unsigned got = bp__subpage_alloc_slots(sp, pool, slots, n);
    bp__chunk *chunk = sp->chunk;
    uint8_t *run = chunk->base + ((size_t)sp->run_offset << sc->page_shift);
    uint64_t run_handle = bp__handle_make(sp->run_offset, sp->run_pages, true, 0);
    for (unsigned i = 0; i < got; i++) {
        out[i].chunk = chunk;
        out[i].memory = run + (size_t)slots[i] * sp->slot_size;
        out[i].handle = run_handle | slots[i];
    }
    return got;
}

static int alloc_small(bp__arena *arena, unsigned cls, bp__region *out)
{
    bp__cached_region slot;
    if (take_slots(arena, cls, &slot, 1) == 0) return BP_ENOMEM;
    out->memory = slot.memory;
    out->chunk = slot.chunk;
    out->handle = slot.handle;
    out->length = arena->sc->class_size[cls];
    return 0;
}

unsigned bp__arena_alloc_small_batch(bp__arena *arena, unsigned cls, bp__cached_region *out, unsigned n)
{
    unsigned taken = 0;
    bp__lock_acquire(&arena->lock);
    while (taken < n) {
        unsigned got = take_slots(arena, cls, out + taken, n - taken < 64 ? n - taken : 64);
        if (got == 0) break;
        taken += got;
    }
    arena->allocations[BP__KIND_SMALL] += taken;
    arena->active_bytes += taken * arena->sc->class_size[cls];
    note_active_locked(arena);
    bp__chunk *doomed = take_doomed_locked(arena); /* a subpage run may have released runs */
    bp__lock_release(&arena->lock);
    delete_chunks(doomed);
    return taken;
}

/* A run of `pages` pages from the chunks (`high`: see alloc_run). */
static int alloc_pages(bp__arena *arena, uint32_t pages, bool high, bp__region *out)
{
    bp__chunk *chunk;
    long offset = alloc_run(arena, pages, high, &chunk);
    if (offset < 0) return BP_ENOMEM;
    out->chunk = chunk;
    out->memory = chunk->base + ((size_t)offset << arena->sc->page_shift);
    out->length = (size_t)pages << arena->sc->page_shift;
    out->handle = bp__handle_make((uint32_t)offset, pages, false, 0);
    return 0;
}

/* A run for `size` bytes of normal class `cls`: from the run cache, else from the chunks.
 * A class thread caches keep gets the class's length, as any of its regions may serve any
 * size of the class; above them (cls >= whole_from) a run is as many pages as the size
 * needs, which spares the class rounding's untouched tail (up to a fifth of the run) when
 * the pages are reused. */
BP__INLINE int alloc_normal(bp__arena *arena, unsigned cls, size_t size, bp__region *out)
{
    const bp__size_classes *sc = arena->sc;
    if (cls >= arena->whole_from) {
        uint32_t pages = (uint32_t)(bp__align_up(size, sc->page_size) >> sc->page_shift);
        return alloc_pages(arena, pages, true, out);
    }
    if (run_cache_take(arena, cls, out)) return 0;
    return alloc_pages(arena, sc->run_pages[cls], false, out);
}

unsigned bp__arena_alloc_normal_batch(bp__arena *arena, unsigned cls, bp__cached_region *out, unsigned n)
{
    BP__ASSERT(cls >= arena->sc->nsmall && cls < arena->whole_from && n > 0);
    unsigned k = 0;
    bp__region run;
    bp__lock_acquire(&arena->lock);
    while (k < n && run_cache_take(arena, cls, &run)) out[k++] = (bp__cached_region){run.memory, run.chunk, run.handle};
    if (k == 0 && alloc_normal(arena, cls, arena->sc->class_size[cls], &run) == 0)
        out[k++] = (bp__cached_region){run.memory, run.chunk, run.handle};
    if (k > 0) {
        arena->allocations[BP__KIND_NORMAL] += k;
        arena->active_bytes += (size_t)k * arena->sc->class_size[cls];
        note_active_locked(arena);
    }
    bp__chunk *doomed = take_doomed_locked(arena); /* a new run may have released runs */
    bp__lock_release(&arena->lock);
    delete_chunks(doomed);
    return k;
}

static int alloc_huge(bp__arena *arena, size_t size, bp__region *out)
{
    size_t length = bp__align_up(size, bp__os_page_size());
    bp__huge *node = malloc(sizeof *node);
    if (node == NULL) return BP_ENOMEM;
    node->memory = bp__os_map(length);
    if (node->memory == NULL) {
        free(node);
        return BP_ENOMEM;
    }
    node->length = length;
    node->arena = arena;
    bp__lock_acquire(&arena->lock);
    node->prev = NULL;
    node->next = arena->huge_head;
    if (arena->huge_head != NULL) arena->huge_head->prev = node;
    arena->huge_head = node;
    arena->huge_mapped_bytes += length;
    arena->active_bytes += length;
    note_active_locked(arena);
    arena->allocations[BP__KIND_HUGE]++;
    bp__lock_release(&arena->lock);
    out->memory = node->memory;
    out->length = length;
    out->chunk = NULL;
    out->handle = (uint64_t)(uintptr_t)node;
    out->kind = BP__KIND_HUGE;
    out->class_index = arena->sc->nclasses;
    return 0;
}

int bp__arena_alloc(bp__arena *arena, size_t size, bp__region *out)
{
    const bp__size_classes *sc = arena->sc;
    unsigned cls = bp__size_class_of(sc, size);
    if (cls >= sc->nclasses) return alloc_huge(arena, size, out);
    unsigned kind = bp__size_class_is_small(sc, cls) ? BP__KIND_SMALL : BP__KIND_NORMAL;
    bp__lock_acquire(&arena->lock);
    int rc = kind == BP__KIND_SMALL ? alloc_small(arena, cls, out) : alloc_normal(arena, cls, size, out);
    if (rc == 0) {
        out->kind = kind;
        out->class_index = cls;
        arena->allocations[kind]++;
        arena->active_bytes += out->length;
        note_active_locked(arena);
    }
    bp__chunk *doomed = take_doomed_locked(arena); /* a new run may have released runs */
    bp__lock_release(&arena->lock);
    delete_chunks(doomed);
    return rc;
}

static void free_huge(bp__arena *arena, const bp__region *region)
{
    bp__huge *node = (bp__huge *)(uintptr_t)region->handle;
    bp__lock_acquire(&arena->lock);
    if (node->prev != NULL) node->prev->next = node->next;
    else arena->huge_head = node->next;
    if (node->next != NULL) node->next->prev = node->prev;
    arena->huge_mapped_bytes -= node->length;
    arena->active_bytes -= node->length;
    arena->deallocations[BP__KIND_HUGE]++;
    bp__lock_release(&arena->lock);
    BP__UNPOISON(node->memory, node->length); /* the next mapping there starts clean */
    bp__os_unmap(node->memory, node->length);
    free(node);
}

/* Gives a slot or run back, under the lock; returns chunks to unmap (linked by next). */
static bp__chunk *free_locked(bp__arena *arena, bp__chunk *chunk, uint64_t handle, unsigned kind,
                              size_t length)
{
    uint32_t offset = bp__handle_offset(handle);
    arena->deallocations[kind]++;
    arena->active_bytes -= length;
    if (bp__handle_is_subpage(handle)) {
        bp__subpage *sp = chunk->subpages[offset];
        if (!bp__subpage_free_slot(sp, &arena->pools[sp->class_index], bp__handle_slot(handle)))
            return NULL;
        chunk->subpages[offset] = NULL;
        bp__chunk_free_run(chunk, offset, sp->run_pages);
        bp__subpage_delete(sp);
    } else {
        bp__chunk_free_run(chunk, offset, bp__handle_pages(handle));
    }
    chunk->last_used = ++arena->clock;
    return settle_after_free(arena, chunk);
}

/* Takes back a small or normal region under the lock: a normal run into the run cache
 * while a thread is bound and its class has room there, anything else into its chunk.
 * Chunks to unmap go to *dead. */
BP__INLINE void free_region_locked(bp__arena *arena, const bp__region *region, bp__chunk **dead)
{
    /* Held back only while a thread is bound to take it: the last thread to leave empties
     * the run cache after its count reached 0 (under this lock), so a run released here
     * either sees the count at 0 or is put before that emptying. */
    if (region->kind == BP__KIND_NORMAL && atomic_load_explicit(&arena->threads, memory_order_relaxed) > 0 &&
        run_cache_put(arena, region)) {
        arena->deallocations[BP__KIND_NORMAL]++; /* freed, as far as anyone but its chunk knows */
        arena->active_bytes -= region->length;
        return;
    }
    *dead = free_locked(arena, region->chunk, region->handle, region->kind, region->length);
}

void bp__arena_free(bp__arena *arena, const bp__region *region)
{
    if (region->kind == BP__KIND_HUGE) {
        free_huge(arena, region);
        return;
    }
    bp__chunk *dead = NULL;
    bp__lock_acquire(&arena->lock);
    free_region_locked(arena, region, &dead);
    bp__lock_release(&arena->lock);
    /* Chunks to unmap are out of every list: unmap them without holding the lock. Subpages
     * of a chunk that emptied were all deleted when their last slot went. */
    delete_chunks(dead);
}

void bp__regions_free_batch(const bp__size_classes *sc, unsigned cls, const bp__cached_region *regions,
                            unsigned n, bool hold)
{
    unsigned kind = cls < sc->nsmall ? BP__KIND_SMALL : BP__KIND_NORMAL;
    size_t length = sc->class_size[cls];
    hold = hold && kind == BP__KIND_NORMAL;
    bp__chunk *dead = NULL;
    unsigned i = 0;
    while (i < n) {
        bp__arena *arena = regions[i].chunk->arena;
        bp__lock_acquire(&arena->lock);
        for (; i < n && regions[i].chunk->arena == arena; i++) {
            if (hold) {
                const bp__region region = {.memory = regions[i].memory, .length = length, .kind = kind,
                                           .class_index = cls, .chunk = regions[i].chunk,
                                           .handle = regions[i].handle};
                bp__chunk *gone = NULL;
                free_region_locked(arena, &region, &gone);
                append_chunks(&dead, gone);
            } else {
                append_chunks(&dead, free_locked(arena, regions[i].chunk, regions[i].handle, kind, length));
            }
        }
        bp__lock_release(&arena->lock);
    }
    delete_chunks(dead);
}

void bp__arena_get_stats(bp__arena *arena, bp_arena_stats *out)
{
    memset(out, 0, sizeof *out);
    bp__lock_acquire(&arena->lock);
    out->allocations_small = arena->allocations[BP__KIND_SMALL];
    out->allocations_normal = arena->allocations[BP__KIND_NORMAL];
    out->allocations_huge = arena->allocations[BP__KIND_HUGE];
    out->deallocations_small = arena->deallocations[BP__KIND_SMALL];
    out->deallocations_normal = arena->deallocations[BP__KIND_NORMAL];
    out->deallocations_huge = arena->deallocations[BP__KIND_HUGE];
    out->active_bytes = arena->active_bytes;
    out->chunks = arena->chunks;
    out->retained_chunks = arena->nretained;
    out->huge_mapped_bytes = arena->huge_mapped_bytes;
    out->purged_bytes = arena->purged_bytes;
    out->cached_entries = arena->cache_entries;
    out->cached_bytes = arena->cache_bytes;
    out->cached_runs = arena->run_cache_entries;
    out->cached_run_bytes = arena->run_cache_bytes;
    for (unsigned b = 0; b < BP__NBANDS; b++)
        for (bp__chunk *c = arena->lists[b].head; c != NULL; c = c->next) {
            out->dirty_bytes += c->dirty_pages << arena->sc->page_shift;
            out->free_page_bytes += c->free_bytes;
        }
    for (unsigned cls = 0; cls < arena->sc->nsmall; cls++)
        for (const bp__subpage *sp = arena->pools[cls].head; sp != NULL; sp = sp->next)
            out->free_slot_bytes += (size_t)sp->nfree * sp->slot_size;
    for (unsigned b = 0; b < BP__NBANDS; b++) out->chunks_in_band[b] = arena->lists[b].count;
    bp__lock_release(&arena->lock);
    out->active_small = out->allocations_small - out->deallocations_small;
    out->active_normal = out->allocations_normal - out->deallocations_normal;
    out->active_huge = out->allocations_huge - out->deallocations_huge;
    out->threads = atomic_load_explicit(&arena->threads, memory_order_relaxed);
}

/* Each held-back run is of a class thread caches keep, a used run of its class in a chunk
 * of this arena's lists (not retained: retained chunks are empty), its memory where its
 * handle says; the totals add up; no bin is over capacity or below its low-water mark. */
static bool run_cache_check_locked(bp__arena *arena)
{
    const bp__size_classes *sc = arena->sc;
    size_t entries = 0, bytes = 0;
    for (unsigned c = 0; c < BP__MAX_CLASSES; c++) {
        const bp__run_cache_bin *bin = &arena->runs[c];
        if (bin->count > bin->capacity || bin->low_water > bin->count) return false;
        if (bin->count > 0 && (c < sc->nsmall || c >= arena->whole_from)) return false;
        for (uint32_t i = 0; i < bin->count; i++) {
            const bp__cached_region *run = &bin->entries[i];
            uint32_t offset = bp__handle_offset(run->handle);
            if (run->chunk->arena != arena || run->chunk->band >= BP__NBANDS || bp__handle_is_subpage(run->handle))
                return false;
            if (bp__handle_pages(run->handle) != sc->run_pages[c] ||
                !bp__chunk_run_in_use(run->chunk, offset, sc->run_pages[c]))
                return false;
            if (run->memory != run->chunk->base + ((size_t)offset << sc->page_shift)) return false;
        }
        entries += bin->count;
        bytes += (size_t)bin->count * sc->class_size[c];
    }
    return entries == arena->run_cache_entries && bytes == arena->run_cache_bytes && arena->doomed == NULL;
}

bool bp__arena_check(bp__arena *arena)
{
    bool ok = true;
    size_t chunks = 0, dirty = 0, memberships = 0; /* (chunk, free run class) pairs */
    bp__lock_acquire(&arena->lock);
    for (unsigned b = 0; b < BP__NBANDS && ok; b++) {
        size_t count = 0;
        for (bp__chunk *c = arena->lists[b].head; c != NULL && ok; c = c->next) {
            ok = c->band == b && c->arena == arena && c->dirty_sum == &arena->dirty_pages &&
                 c->last_used <= arena->clock && bp__chunk_check(c);
            dirty += c->dirty_pages;
            count++;
            for (unsigned w = 0; w < 2; w++)
                for (uint64_t bits = c->nonempty[w]; bits != 0; bits &= bits - 1) memberships++;
        }
        ok = ok && count == arena->lists[b].count && bp__chunk_list_check(&arena->lists[b]);
        chunks += count;
    }
    ok = ok && bp__fit_index_check(&arena->fit, memberships); /* the lists checked each chunk's fit */
    size_t retained_dirty = 0;
    for (bp__chunk *c = arena->retained; c != NULL && ok; c = c->next) {
        ok = c->dirty_sum == &arena->retained_dirty_pages && c->fit == NULL;
        retained_dirty += c->dirty_pages;
    }
    ok = ok && chunks == arena->chunks && dirty == arena->dirty_pages &&
         retained_dirty == arena->retained_dirty_pages && run_cache_check_locked(arena);
    bp__lock_release(&arena->lock);
    return ok;
}

static void put_element(void *out, size_t i, size_t elem_size, const void *full, size_t full_size)
{
    memcpy((char *)out + i * elem_size, full, elem_size < full_size ? elem_size : full_size);
}

size_t bp__arena_chunk_stats(bp__arena *arena, bp_chunk_stats *out, size_t max, size_t elem_size)
{
    size_t n = 0;
    bp__lock_acquire(&arena->lock);
    for (unsigned band = 0; band < BP__NBANDS; band++) {
        for (bp__chunk *c = arena->lists[band].head; c != NULL; c = c->next, n++) {
            if (n >= max) continue;
            bp_chunk_stats s = {
                .band = band,
                .usage = bp__chunk_usage(c),
                .chunk_size = arena->sc->chunk_size,
                .free_bytes = c->free_bytes,
                .longest_free_run = (size_t)bp__chunk_longest_free_run(c) << arena->sc->page_shift,
            };
            put_element(out, n, elem_size, &s, sizeof s);
        }
    }
    bp__lock_release(&arena->lock);
    return n;
}

size_t bp__arena_class_stats(bp__arena *arena, bp_class_stats *out, size_t max, size_t elem_size)
{
    const bp__size_classes *sc = arena->sc;
    bp__lock_acquire(&arena->lock);
    for (unsigned cls = 0; cls < sc->nsmall && cls < max; cls++) {
        bp_class_stats s = {
            .size = sc->class_size[cls],
            .run_bytes = (size_t)sc->run_pages[cls] << sc->page_shift,
            .slots_per_run = sc->run_slots[cls],
        };
        for (bp__subpage *sp = arena->pools[cls].head; sp != NULL; sp = sp->next) {
            s.subpages++;
            s.slots_free += sp->nfree;
        }
        put_element(out, cls, elem_size, &s, sizeof s);
    }
    bp__lock_release(&arena->lock);
    return sc->nsmall;
}
