/*
 * Thread cache slow paths: bins allocated on first use, trimming, flushing.
 */
#include "tcache.h"

#include "chunk.h"

#include <stdlib.h>
#include <string.h>

void bp__tcache_init(bp__tcache *tc, const bp__size_classes *sc, const bp_config *cfg)
{
    memset(tc, 0, sizeof *tc);
    tc->sc = sc;
    tc->trim_interval = cfg->cache_trim_interval;
    tc->allocations_until_trim = cfg->cache_trim_interval ? cfg->cache_trim_interval : UINT32_MAX;
    for (unsigned c = 0; c < sc->nclasses; c++) {
        bool small = c < sc->nsmall;
        if (!small && sc->class_size[c] > cfg->max_cached_size) break;
        uint32_t capacity = small ? cfg->small_cache_size : cfg->normal_cache_size;
        if (small && sc->class_size[c] > cfg->max_cached_size) capacity = 0;
        tc->bins[c].capacity = capacity;
        if (capacity > 0) tc->ncacheable = c + 1;
    }
}

static void give_back(bp__tcache *tc, unsigned cls, const bp__tcache_entry *e)
{
    bp__region region = {
        .memory = e->memory,
        .length = tc->sc->class_size[cls],
        .chunk = e->chunk,
        .handle = e->handle,
        .kind = cls < tc->sc->nsmall ? BP__KIND_SMALL : BP__KIND_NORMAL,
        .class_index = cls,
    };
    bp__arena_free(e->chunk->arena, &region);
    bp__tcache_adjust(tc, region.length, false);
}

bool bp__tcache_put_slow(bp__tcache *tc, const bp__region *region)
{
    bp__tcache_bin *bin = &tc->bins[region->class_index];
    if (bin->capacity == 0 || bin->count == bin->capacity) return false;
    bin->entries = malloc(bin->capacity * sizeof *bin->entries);
    if (bin->entries == NULL) return false;
    return bp__tcache_put(tc, region);
}

size_t bp__tcache_trim(bp__tcache *tc)
{
    size_t freed = 0;
    for (unsigned c = 0; c < tc->ncacheable; c++) {
        bp__tcache_bin *bin = &tc->bins[c];
        uint32_t unused = bin->count > bin->hits_since_trim ? bin->count - bin->hits_since_trim : 0;
        bin->hits_since_trim = 0;
        if (unused == 0) continue;
        /* The oldest entries are the ones nobody asked for. */
        for (uint32_t i = 0; i < unused; i++) give_back(tc, c, &bin->entries[i]);
        memmove(bin->entries, bin->entries + unused, (bin->count - unused) * sizeof *bin->entries);
        bin->count -= unused;
        freed += unused;
    }
    bp__tcache_count(&tc->trims);
    return freed;
}

void bp__tcache_scheduled_trim(bp__tcache *tc)
{
    tc->allocations_until_trim = tc->trim_interval ? tc->trim_interval : UINT32_MAX;
    if (tc->trim_interval) bp__tcache_trim(tc);
}

void bp__tcache_flush(bp__tcache *tc)
{
    for (unsigned c = 0; c < tc->ncacheable; c++) {
        bp__tcache_bin *bin = &tc->bins[c];
        for (uint32_t i = 0; i < bin->count; i++) give_back(tc, c, &bin->entries[i]);
        bin->count = 0;
        bin->hits_since_trim = 0;
    }
    bp__tcache_discard(tc);
}

void bp__tcache_discard(bp__tcache *tc)
{
    for (unsigned c = 0; c < tc->ncacheable; c++) {
        free(tc->bins[c].entries);
        tc->bins[c].entries = NULL;
        tc->bins[c].count = 0;
    }
}
