/*
 * Thread cache slow paths: bins allocated on first use, trimming, flushing.
 */
#include "tcache.h"

#include "allocator.h"
#include "chunk.h"

#include <stdlib.h>
#include <string.h>

void bp__tcache_init(bp__tcache *tc, bp__arena *arena, const bp__size_classes *sc, const bp_config *cfg)
{
    memset(tc, 0, sizeof *tc);
    tc->sc = sc;
    tc->arena = arena;
    tc->trim_interval = cfg->cache_trim_interval;
    tc->allocations_until_trim = cfg->cache_trim_interval ? cfg->cache_trim_interval : UINT32_MAX;
    for (unsigned c = 0; c < sc->nclasses; c++) {
        bool small = c < sc->nsmall;
        if (!small && sc->class_size[c] > cfg->max_cached_size) break;
        uint32_t capacity = small ? cfg->small_cache_size : cfg->normal_cache_size;
        if (small && sc->class_size[c] > cfg->max_cached_size) capacity = 0;
        tc->bins[c].capacity = capacity;
        if (capacity > 0) tc->ncacheable = c + 1;
        /* Half a bin per refill, but no more than about 64 KiB of memory taken ahead. */
        if (small && capacity > 0) {
            size_t by_bytes = (64 * 1024) / sc->class_size[c];
            uint32_t refill = capacity / 2 < by_bytes ? capacity / 2 : (uint32_t)by_bytes;
            tc->bins[c].refill = refill > 0 ? refill : 1;
        }
    }
    /* A tracked allocation needs a leak record: every allocation takes the slow path. */
    tc->fast_classes = cfg->leak_detection == BP_LEAK_DISABLED ? tc->ncacheable : 0;
}

void bp__tcache_totals(const bp__tcache *tc, size_t *entries, size_t *bytes, uint64_t *hits)
{
    *entries = 0;
    *bytes = 0;
    *hits = atomic_load_explicit((_Atomic uint64_t *)&tc->hits_before_trims, memory_order_relaxed);
    for (unsigned c = 0; c < tc->ncacheable; c++) {
        uint64_t state = bp__bin_state(&tc->bins[c]);
        uint32_t count = (uint32_t)state;
        *entries += count;
        *bytes += (size_t)count * tc->sc->class_size[c];
        *hits += state >> 32;
    }
}

/* The thread state this cache is part of: its recycler takes the objects whose regions go
 * back to the arena. */
static bp__thread_state *owner_of(bp__tcache *tc)
{
    return (bp__thread_state *)(void *)((char *)tc - offsetof(bp__thread_state, tcache));
}

/* Gives entries [0, n) of a bin back - regions to their arenas, objects to the recycler -
 * and closes the gap. */
static void give_back_oldest(bp__tcache *tc, unsigned cls, uint32_t n)
{
    bp__tcache_bin *bin = &tc->bins[cls];
    if (n == 0) return;
    bp__thread_state *ts = owner_of(tc);
    uint32_t count = bp__bin_count(bin);
    bp__cached_region regions[64];
    for (uint32_t done = 0; done < n;) {
        uint32_t k = n - done < 64 ? n - done : 64;
        for (uint32_t i = 0; i < k; i++) {
            bp_buf *b = bin->entries[done + i];
            regions[i] = (bp__cached_region){b->region.memory, b->region.chunk, b->region.handle};
            bp__buf_object_retire(ts, ts->allocator, b, false);
        }
        bp__regions_free_batch(tc->sc, cls, regions, k);
        done += k;
    }
    memmove(bin->entries, bin->entries + n, (count - n) * sizeof *bin->entries);
    bp__bin_set_count(bin, count - n);
}

static bool ensure_entries(bp__tcache_bin *bin)
{
    if (bin->entries == NULL) bin->entries = malloc(bin->capacity * sizeof *bin->entries);
    if (bin->entries == NULL) return false;
    bin->limit = bin->capacity;
    return true;
}

/* The hits since the last trim go to the cache's running total; the count stays. */
static uint32_t carry_hits(bp__tcache *tc, bp__tcache_bin *bin)
{
    uint64_t state = bp__bin_state(bin);
    bp__tcache_count_n(&tc->hits_before_trims, state >> 32);
    atomic_store_explicit(&bin->state, (uint32_t)state, memory_order_relaxed);
    return (uint32_t)(state >> 32);
}

bool bp__tcache_put_slow(bp__tcache *tc, unsigned cls, bp_buf *b)
{
    bp__tcache_bin *bin = &tc->bins[cls];
    if (bin->capacity == 0 || !ensure_entries(bin)) return false;
    uint32_t count = bp__bin_count(bin);
    if (count == bin->capacity) give_back_oldest(tc, cls, (count + 1) / 2);
    return bp__tcache_push(tc, cls, b);
}

bp_buf *bp__tcache_refill(bp__tcache *tc, unsigned cls)
{
    if (cls >= tc->ncacheable) return NULL;
    bp__tcache_bin *bin = &tc->bins[cls];
    if (bin->refill == 0 || !ensure_entries(bin)) return NULL;
    bp__thread_state *ts = owner_of(tc);
    bp_allocator *a = ts->allocator;
    /* Objects first: getting them may drain remote releases into this very bin. */
    bp_buf *objects[512];
    uint32_t want = bin->refill < 512 ? bin->refill : 512, have = 0;
    while (have < want && (objects[have] = bp__buf_object_get(ts)) != NULL) have++;
    uint32_t room = bin->capacity - bp__bin_count(bin) + 1; /* one goes out now */
    uint32_t take = have < room ? have : room;
    /* Taken in address order; the lowest goes out now, the next lowest ends on top. */
    bp__cached_region batch[512];
    unsigned got = take > 0 ? bp__arena_alloc_small_batch(tc->arena, cls, batch, take) : 0;
    for (unsigned i = 0; i < got; i++) {
        bp_buf *b = objects[i];
        b->region = (bp__region){.memory = batch[i].memory, .length = tc->sc->class_size[cls],
                                 .kind = BP__KIND_SMALL, .class_index = cls, .chunk = batch[i].chunk,
                                 .handle = batch[i].handle};
        bp__buf_object_prepare(b, a, ts);
    }
    for (uint32_t i = got; i < have; i++) bp__buf_object_put(ts, a, objects[i]);
    if (got == 0) return NULL;
    uint32_t count = bp__bin_count(bin);
    for (unsigned i = got - 1; i >= 1; i--) bin->entries[count++] = objects[i];
    bp__bin_set_count(bin, count);
    return objects[0];
}

size_t bp__tcache_trim(bp__tcache *tc)
{
    size_t freed = 0;
    for (unsigned c = 0; c < tc->ncacheable; c++) {
        bp__tcache_bin *bin = &tc->bins[c];
        uint32_t count = bp__bin_count(bin), hits = carry_hits(tc, bin);
        uint32_t unused = count > hits ? count - hits : 0;
        /* The oldest entries are the ones nobody asked for. */
        give_back_oldest(tc, c, unused);
        freed += unused;
    }
    bp__tcache_count(&tc->trims);
    return freed;
}

void bp__tcache_scheduled_trim(bp__tcache *tc)
{
    tc->allocations_until_trim = tc->trim_interval ? tc->trim_interval : UINT32_MAX;
    if (tc->trim_interval == 0) {
        /* Trimming is off; the countdown still bounds the bins' hit counts. */
        for (unsigned c = 0; c < tc->ncacheable; c++) carry_hits(tc, &tc->bins[c]);
        return;
    }
    bp__tcache_trim(tc);
    /* A busy thread is a clock for its arena too: empty chunks past their time go. */
    if (tc->arena != NULL) bp__arena_purge(tc->arena, false);
}

void bp__tcache_flush(bp__tcache *tc)
{
    for (unsigned c = 0; c < tc->ncacheable; c++) {
        bp__tcache_bin *bin = &tc->bins[c];
        give_back_oldest(tc, c, bp__bin_count(bin));
        carry_hits(tc, bin);
    }
    bp__tcache_discard(tc);
}

void bp__tcache_discard(bp__tcache *tc)
{
    for (unsigned c = 0; c < tc->ncacheable; c++) {
        free(tc->bins[c].entries);
        tc->bins[c].entries = NULL;
        tc->bins[c].limit = 0;
        bp__bin_set_count(&tc->bins[c], 0);
    }
}
