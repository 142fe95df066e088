/* SPDX-License-Identifier: MIT */
/*
 * Statistics: an allocator's and its arenas' counters, arrays of per-chunk, per-class and
 * per-thread-cache figures, and the whole picture as text (Netty's dumpStats) or JSON
 * (jemalloc's "J"). Everything here only reads, under the locks that guard what it reads.
 */
#include "allocator.h"
#include "state.h"
#include "tcache.h"
#include "thread.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void copy_out(void *out, size_t out_size, const void *full, size_t full_size)
{
    memcpy(out, full, out_size < full_size ? out_size : full_size);
}

int bp_arena_get_stats(const bp_allocator *a, unsigned index, bp_arena_stats *out, size_t out_size)
{
    if (a == NULL || out == NULL || out_size == 0)
        return bp__misuse(BP_EINVAL, __func__, "NULL argument or zero out_size");
    if (!a->pooled || index >= a->config.arenas)
        return bp__misuse(BP_ERANGE, __func__, "arena %u does not exist (the allocator has %u)",
                          index, a->pooled ? a->config.arenas : 0);
    bp_arena_stats full;
    bp__arena_get_stats(&a->arenas[index], &full);
    copy_out(out, out_size, &full, sizeof full);
    return 0;
}

int bp_allocator_get_stats(const bp_allocator *a, bp_allocator_stats *out, size_t out_size)
{
    if (a == NULL || out == NULL || out_size == 0)
        return bp__misuse(BP_EINVAL, __func__, "NULL argument or zero out_size");
    bp_allocator_stats full;
    memset(&full, 0, sizeof full);
    bp_allocator *mutable_a = (bp_allocator *)a; /* the lock is not part of the value */
    bp__thread_states_reap(mutable_a); /* after a fork: threads that are not there count no more */
    if (a->pooled) {
        full.arenas = a->config.arenas;
        full.page_size = a->config.page_size;
        full.chunk_size = a->config.chunk_size;
        for (unsigned i = 0; i < a->config.arenas; i++) {
            bp_arena_stats s;
            bp__arena_get_stats(&mutable_a->arenas[i], &s);
            full.mapped_bytes += (s.chunks + s.retained_chunks) * a->config.chunk_size + s.huge_mapped_bytes;
            full.retained_chunks += s.retained_chunks;
            full.dirty_bytes += s.dirty_bytes;
            full.purged_bytes += s.purged_bytes;
            full.active_bytes += s.active_bytes;
            full.chunks += s.chunks;
            full.allocations += s.allocations_small + s.allocations_normal + s.allocations_huge;
            full.deallocations += s.deallocations_small + s.deallocations_normal + s.deallocations_huge;
            full.arena_cached_entries += s.cached_entries;
            full.arena_cached_bytes += s.cached_bytes;
            full.arena_cached_runs += s.cached_runs;
            full.arena_cached_run_bytes += s.cached_run_bytes;
            full.free_page_bytes += s.free_page_bytes;
            full.free_slot_bytes += s.free_slot_bytes;
        }
    } else {
        full.allocations = atomic_load(&mutable_a->unpooled_allocations);
        full.deallocations = atomic_load(&mutable_a->unpooled_deallocations);
        full.active_bytes = atomic_load(&mutable_a->unpooled_active_bytes);
    }
    pthread_mutex_lock(&mutable_a->lock);
    uint64_t active = a->buffers_active_exited;
    full.cache_hits = a->cache_hits_exited;
    full.cache_misses = a->cache_misses_exited;
    full.cache_trims = a->cache_trims_exited;
    full.remote_releases = a->remote_releases_exited;
    full.remote_drained = a->remote_drained_exited;
    uint64_t pending = 0; /* modulo 2^64: the totals of different threads, read while they run */
    uint64_t views = a->views_active_exited + atomic_load_explicit(&mutable_a->view_ledger_stateless, memory_order_relaxed);
    full.object_bytes = bp__object_pool_bytes(&a->objects);
    for (bp__thread_state *ts = a->threads; ts != NULL; ts = ts->next) {
        full.object_bytes += sizeof *ts;
        pending += atomic_load_explicit(&ts->remote_pushed_bytes, memory_order_relaxed) -
                   atomic_load_explicit(&ts->remote_returned_bytes, memory_order_relaxed) -
                   atomic_load_explicit(&ts->remote_reclaimed_bytes, memory_order_relaxed);
        for (unsigned i = 0; i < BP__REMOTE_SLOTS; i++)
            pending += atomic_load_explicit(&ts->remote_slots[i].bytes, memory_order_relaxed);
        active += atomic_load_explicit(&ts->tcache.ledger, memory_order_relaxed);
        views += atomic_load_explicit(&ts->view_ledger, memory_order_relaxed);
        full.remote_releases += atomic_load_explicit(&ts->remote_releases, memory_order_relaxed);
        full.remote_drained += atomic_load_explicit(&ts->remote_drained, memory_order_relaxed);
        if (!ts->in_use) continue;
        full.threads++;
        if (ts->arena == NULL) continue;
        full.thread_caches++;
        size_t entries, bytes;
        uint64_t hits;
        bp__tcache_totals(&ts->tcache, &entries, &bytes, &hits);
        full.cached_entries += entries;
        full.cached_bytes += bytes;
        full.cache_hits += hits;
        full.cache_misses += atomic_load_explicit(&ts->tcache.misses, memory_order_relaxed);
        full.cache_trims += atomic_load_explicit(&ts->tcache.trims, memory_order_relaxed);
    }
    pthread_mutex_unlock(&mutable_a->lock);
    /* Each ledger counts its bins' entries too (see bp__tcache.ledger). Read while threads
     * run: a moment's disagreement must not wrap below zero. */
    int64_t outstanding = (int64_t)(active - full.cached_entries);
    full.active_buffers = outstanding > 0 ? (uint64_t)outstanding : 0;
    full.active_views = (int64_t)views > 0 ? views : 0; /* (a view may end on another thread) */
    full.remote_pending_bytes = (int64_t)pending > 0 ? (size_t)pending : 0;
    /* Cache counters are read without stopping their threads: never let the difference
     * go below zero while a region moves between a cache and a buffer. */
    size_t held = full.cached_bytes + full.arena_cached_bytes;
    full.active_bytes = full.active_bytes > held ? full.active_bytes - held : 0;
    copy_out(out, out_size, &full, sizeof full);
    return 0;
}

/* The arguments every array snapshot takes (arena: which one, or UINT_MAX for none): 0, or
 * the reported error. */
static int check_snapshot_args(const bp_allocator *a, unsigned arena, const void *out, size_t max, size_t elem_size,
                               const char *func)
{
    if (a == NULL || (out == NULL && max > 0) || elem_size == 0)
        return bp__misuse(BP_EINVAL, func, "NULL allocator, NULL out with max %zu, or elem_size 0", max);
    if (arena != UINT_MAX && (!a->pooled || arena >= a->config.arenas))
        return bp__misuse(BP_ERANGE, func, "arena %u does not exist", arena);
    return 0;
}

long bp_arena_chunk_stats(const bp_allocator *a, unsigned arena, bp_chunk_stats *out, size_t max, size_t elem_size)
{
    int rc = check_snapshot_args(a, arena, out, max, elem_size, __func__);
    return rc != 0 ? rc : (long)bp__arena_chunk_stats(&a->arenas[arena], out, max, elem_size);
}

long bp_arena_class_stats(const bp_allocator *a, unsigned arena, bp_class_stats *out, size_t max, size_t elem_size)
{
    int rc = check_snapshot_args(a, arena, out, max, elem_size, __func__);
    return rc != 0 ? rc : (long)bp__arena_class_stats(&a->arenas[arena], out, max, elem_size);
}

long bp_allocator_thread_cache_stats(const bp_allocator *a, bp_thread_cache_stats *out, size_t max, size_t elem_size)
{
    int rc = check_snapshot_args(a, UINT_MAX, out, max, elem_size, __func__);
    if (rc != 0) return rc;
    bp_allocator *mutable_a = (bp_allocator *)a; /* the lock is not part of the value */
    bp__thread_states_reap(mutable_a);
    size_t n = 0;
    pthread_mutex_lock(&mutable_a->lock);
    for (const bp__thread_state *ts = a->threads; ts != NULL; ts = ts->next) {
        if (!ts->in_use || ts->arena == NULL) continue;
        if (n < max) {
            bp_thread_cache_stats s = {
                .arena = ts->arena->index,
                .misses = atomic_load_explicit(&ts->tcache.misses, memory_order_relaxed),
                .trims = atomic_load_explicit(&ts->tcache.trims, memory_order_relaxed),
            };
            bp__tcache_totals(&ts->tcache, &s.entries, &s.bytes, &s.hits);
            memcpy((char *)out + n * elem_size, &s, elem_size < sizeof s ? elem_size : sizeof s);
        }
        n++;
    }
    pthread_mutex_unlock(&mutable_a->lock);
    return (long)n;
}

/* ---- gathering everything once, for both dumps ---- */

typedef struct arena_picture {
    bp_arena_stats stats;
    bp_chunk_stats *chunks;
    size_t nchunks;
    bp_class_stats classes[BP__MAX_CLASSES];
    size_t nclasses;
} arena_picture;

typedef struct picture {
    bp_allocator_stats totals;
    arena_picture *arenas;
    unsigned narenas;
    bp_thread_cache_stats *caches;
    size_t ncaches;
} picture;

static void picture_free(picture *p)
{
    for (unsigned i = 0; i < p->narenas; i++) free(p->arenas[i].chunks);
    free(p->arenas);
    free(p->caches);
}

static int picture_take(const bp_allocator *a, picture *p)
{
    memset(p, 0, sizeof *p);
    bp_allocator_get_stats(a, &p->totals, sizeof p->totals);
    if (a->pooled) {
        p->narenas = a->config.arenas;
        p->arenas = calloc(p->narenas, sizeof *p->arenas);
        if (p->arenas == NULL) return BP_ENOMEM;
        for (unsigned i = 0; i < p->narenas; i++) {
            arena_picture *ap = &p->arenas[i];
            bp_arena_get_stats(a, i, &ap->stats, sizeof ap->stats);
            /* Chunks can come and go between asking and taking: ask with room to spare. */
            size_t room = ap->stats.chunks + 8;
            ap->chunks = calloc(room, sizeof *ap->chunks);
            if (ap->chunks == NULL) return BP_ENOMEM;
            size_t n = bp__arena_chunk_stats(&a->arenas[i], ap->chunks, room, sizeof *ap->chunks);
            ap->nchunks = n < room ? n : room;
            ap->nclasses = bp__arena_class_stats(&a->arenas[i], ap->classes, BP__MAX_CLASSES, sizeof ap->classes[0]);
        }
    }
    size_t room = p->totals.threads + 8;
    p->caches = calloc(room, sizeof *p->caches);
    if (p->caches == NULL) return BP_ENOMEM;
    long n = bp_allocator_thread_cache_stats(a, p->caches, room, sizeof *p->caches);
    p->ncaches = n < 0 ? 0 : (size_t)n < room ? (size_t)n : room;
    return 0;
}

static const char *const band_names[BP_CHUNK_BANDS] = {"qInit", "q000", "q025", "q050", "q075", "q100"};

static bool arena_is_idle(const arena_picture *ap)
{
    const bp_arena_stats *s = &ap->stats;
    return s->allocations_small + s->allocations_normal + s->allocations_huge == 0 && s->threads == 0 &&
           s->retained_chunks == 0;
}

static void write_text(const bp_allocator *a, const picture *pp, FILE *out)
{
    const picture p = *pp;
    const bp_allocator_stats *s = &p.totals;
    if (!a->pooled) {
        fprintf(out, "unpooled allocator: %llu buffers alive, %llu views, %zu bytes in use, %llu allocations, "
                     "%llu deallocations\n",
                (unsigned long long)s->active_buffers, (unsigned long long)s->active_views, s->active_bytes,
                (unsigned long long)s->allocations, (unsigned long long)s->deallocations);
    } else {
        fprintf(out, "pooled allocator: %u arenas, page %zu B, chunk %zu B\n", s->arenas, s->page_size, s->chunk_size);
        fprintf(out, "  %llu buffers alive, %llu views, %zu bytes in use, %zu bytes mapped (chunks in use: %zu, retained empty: %zu, plus huge mappings)\n",
                (unsigned long long)s->active_buffers, (unsigned long long)s->active_views, s->active_bytes,
                s->mapped_bytes, s->chunks, s->retained_chunks);
        fprintf(out, "  free inside chunks: %zu bytes of pages (%zu of them still resident), %zu bytes of small slots; "
                     "%llu bytes given back to the OS by purging; %zu bytes of bookkeeping outside\n",
                s->free_page_bytes, s->dirty_bytes, s->free_slot_bytes, (unsigned long long)s->purged_bytes,
                s->object_bytes);
        fprintf(out, "  %u threads, %u thread caches: %zu regions (%zu bytes) cached; %llu hits, %llu misses, %llu trims\n",
                s->threads, s->thread_caches, s->cached_entries, s->cached_bytes, (unsigned long long)s->cache_hits,
                (unsigned long long)s->cache_misses, (unsigned long long)s->cache_trims);
        fprintf(out, "  arena caches: %zu released buffers (%zu bytes) ready for their threads; %zu freed runs (%zu bytes) held back from their chunks\n",
                s->arena_cached_entries, s->arena_cached_bytes, s->arena_cached_runs, s->arena_cached_run_bytes);
        fprintf(out,
                "  %llu buffers released on another thread, %llu of them taken back by their owner; "
                "%zu bytes of such buffers not back yet\n",
                (unsigned long long)s->remote_releases, (unsigned long long)s->remote_drained, s->remote_pending_bytes);
        for (unsigned i = 0; i < p.narenas; i++) {
            const arena_picture *ap = &p.arenas[i];
            if (arena_is_idle(ap)) continue;
            const bp_arena_stats *as = &ap->stats;
            fprintf(out, "  arena %u: %u threads; out to buffers and caches: small %llu normal %llu huge %llu (%zu B); "
                         "allocations %llu/%llu/%llu; cache %zu (%zu B); runs held %zu (%zu B); chunks %zu (+%zu retained) [",
                    i, as->threads, (unsigned long long)as->active_small, (unsigned long long)as->active_normal,
                    (unsigned long long)as->active_huge, as->active_bytes, (unsigned long long)as->allocations_small,
                    (unsigned long long)as->allocations_normal, (unsigned long long)as->allocations_huge,
                    as->cached_entries, as->cached_bytes, as->cached_runs, as->cached_run_bytes, as->chunks,
                    as->retained_chunks);
            for (unsigned b = 0; b < BP_CHUNK_BANDS; b++)
                fprintf(out, "%s%s %zu", b ? ", " : "", band_names[b], as->chunks_in_band[b]);
            fprintf(out, "]\n");
            for (size_t c = 0; c < ap->nchunks; c++)
                fprintf(out, "    chunk in %s: usage %d%%, %zu bytes free, longest free run %zu bytes\n",
                        band_names[ap->chunks[c].band], ap->chunks[c].usage, ap->chunks[c].free_bytes,
                        ap->chunks[c].longest_free_run);
            for (size_t k = 0; k < ap->nclasses; k++) {
                const bp_class_stats *cs = &ap->classes[k];
                if (cs->subpages == 0) continue;
                fprintf(out, "    small class %zu B: %zu subpage%s with free slots (runs of %zu B, %zu slots), %zu slots free\n",
                        cs->size, cs->subpages, cs->subpages == 1 ? "" : "s", cs->run_bytes, cs->slots_per_run,
                        cs->slots_free);
            }
        }
        for (size_t t = 0; t < p.ncaches; t++) {
            const bp_thread_cache_stats *tc = &p.caches[t];
            fprintf(out, "  thread cache %zu (arena %u): %zu regions, %zu bytes; %llu hits, %llu misses, %llu trims\n", t,
                    tc->arena, tc->entries, tc->bytes, (unsigned long long)tc->hits, (unsigned long long)tc->misses,
                    (unsigned long long)tc->trims);
        }
    }
}

static void write_json(const bp_allocator *a, const picture *pp, FILE *out)
{
    const picture p = *pp;
    const bp_allocator_stats *s = &p.totals;
    fprintf(out,
            "{\"allocator\": {\"pooled\": %s, \"arenas\": %u, \"page_size\": %zu, \"chunk_size\": %zu, "
            "\"mapped_bytes\": %zu, \"active_bytes\": %zu, \"active_buffers\": %llu, \"active_views\": %llu, \"chunks\": %zu, "
            "\"retained_chunks\": %zu, \"allocations\": %llu, \"deallocations\": %llu, \"threads\": %u, "
            "\"thread_caches\": %u, \"cached_entries\": %zu, \"cached_bytes\": %zu, \"cache_hits\": %llu, "
            "\"cache_misses\": %llu, \"cache_trims\": %llu, \"remote_releases\": %llu, \"remote_drained\": %llu, "
            "\"dirty_bytes\": %zu, \"purged_bytes\": %llu, \"arena_cached_entries\": %zu, \"arena_cached_bytes\": %zu, "
            "\"arena_cached_runs\": %zu, \"arena_cached_run_bytes\": %zu, \"free_page_bytes\": %zu, "
            "\"free_slot_bytes\": %zu, \"object_bytes\": %zu, \"remote_pending_bytes\": %zu},\n",
            a->pooled ? "true" : "false", s->arenas, s->page_size, s->chunk_size, s->mapped_bytes, s->active_bytes,
            (unsigned long long)s->active_buffers, (unsigned long long)s->active_views, s->chunks, s->retained_chunks,
            (unsigned long long)s->allocations,
            (unsigned long long)s->deallocations, s->threads, s->thread_caches, s->cached_entries, s->cached_bytes,
            (unsigned long long)s->cache_hits, (unsigned long long)s->cache_misses, (unsigned long long)s->cache_trims,
            (unsigned long long)s->remote_releases, (unsigned long long)s->remote_drained, s->dirty_bytes,
            (unsigned long long)s->purged_bytes, s->arena_cached_entries, s->arena_cached_bytes, s->arena_cached_runs,
            s->arena_cached_run_bytes, s->free_page_bytes, s->free_slot_bytes, s->object_bytes, s->remote_pending_bytes);
    fprintf(out, " \"arenas\": [");
    for (unsigned i = 0; i < p.narenas; i++) {
        const arena_picture *ap = &p.arenas[i];
        const bp_arena_stats *as = &ap->stats;
        fprintf(out,
                "%s\n  {\"index\": %u, \"threads\": %u, \"allocations\": {\"small\": %llu, \"normal\": %llu, \"huge\": %llu}, "
                "\"deallocations\": {\"small\": %llu, \"normal\": %llu, \"huge\": %llu}, "
                "\"active\": {\"small\": %llu, \"normal\": %llu, \"huge\": %llu}, \"active_bytes\": %zu, "
                "\"huge_mapped_bytes\": %zu, \"chunks\": %zu, \"retained_chunks\": %zu, \"dirty_bytes\": %zu, "
                "\"purged_bytes\": %llu, \"cached_entries\": %zu, \"cached_bytes\": %zu, \"cached_runs\": %zu, "
                "\"cached_run_bytes\": %zu, \"free_page_bytes\": %zu, \"free_slot_bytes\": %zu,\n   \"chunk_lists\": [",
                i ? "," : "", i, as->threads, (unsigned long long)as->allocations_small,
                (unsigned long long)as->allocations_normal, (unsigned long long)as->allocations_huge,
                (unsigned long long)as->deallocations_small, (unsigned long long)as->deallocations_normal,
                (unsigned long long)as->deallocations_huge, (unsigned long long)as->active_small,
                (unsigned long long)as->active_normal, (unsigned long long)as->active_huge, as->active_bytes,
                as->huge_mapped_bytes, as->chunks, as->retained_chunks, as->dirty_bytes,
                (unsigned long long)as->purged_bytes, as->cached_entries, as->cached_bytes, as->cached_runs,
                as->cached_run_bytes, as->free_page_bytes, as->free_slot_bytes);
        for (unsigned b = 0; b < BP_CHUNK_BANDS; b++) {
            fprintf(out, "%s{\"band\": \"%s\", \"chunks\": [", b ? ", " : "", band_names[b]);
            bool first = true;
            for (size_t c = 0; c < ap->nchunks; c++) {
                if (ap->chunks[c].band != b) continue;
                fprintf(out, "%s{\"usage\": %d, \"free_bytes\": %zu, \"longest_free_run\": %zu}", first ? "" : ", ",
                        ap->chunks[c].usage, ap->chunks[c].free_bytes, ap->chunks[c].longest_free_run);
                first = false;
            }
            fprintf(out, "]}");
        }
        fprintf(out, "],\n   \"small_classes\": [");
        for (size_t k = 0; k < ap->nclasses; k++) {
            const bp_class_stats *cs = &ap->classes[k];
            fprintf(out, "%s{\"size\": %zu, \"run_bytes\": %zu, \"slots_per_run\": %zu, \"subpages\": %zu, \"slots_free\": %zu}",
                    k ? ", " : "", cs->size, cs->run_bytes, cs->slots_per_run, cs->subpages, cs->slots_free);
        }
        fprintf(out, "]}");
    }
    fprintf(out, "],\n \"thread_caches\": [");
    for (size_t t = 0; t < p.ncaches; t++) {
        const bp_thread_cache_stats *tc = &p.caches[t];
        fprintf(out, "%s{\"arena\": %u, \"entries\": %zu, \"bytes\": %zu, \"hits\": %llu, \"misses\": %llu, \"trims\": %llu}",
                t ? ", " : "", tc->arena, tc->entries, tc->bytes, (unsigned long long)tc->hits,
                (unsigned long long)tc->misses, (unsigned long long)tc->trims);
    }
    fprintf(out, "]}\n");
}

/* Both dumps: check, take one picture of everything, write it, check the stream. */
static int print_with(const bp_allocator *a, FILE *out, const char *func,
                      void (*write)(const bp_allocator *, const picture *, FILE *))
{
    if (a == NULL || out == NULL) return bp__misuse(BP_EINVAL, func, "NULL argument");
    picture p;
    int rc = picture_take(a, &p);
    if (rc == 0) write(a, &p, out);
    picture_free(&p);
    if (rc != 0) return rc;
    return fflush(out) != 0 || ferror(out) ? BP_EIO : 0;
}

int bp_allocator_print_stats(const bp_allocator *a, FILE *out)
{
    return print_with(a, out, __func__, write_text);
}

int bp_allocator_print_stats_json(const bp_allocator *a, FILE *out)
{
    return print_with(a, out, __func__, write_json);
}
