/* SPDX-License-Identifier: MIT */
/*
 * The memory behind buffers (regions from arenas or malloc, given back with their
 * objects) and the registry of live allocators.
 */
#include "allocator.h"

#include <stdlib.h>

pthread_mutex_t bp__registry_lock = PTHREAD_MUTEX_INITIALIZER;
bp_allocator *bp__live_allocators;

void bp__registry_add(bp_allocator *a)
{
    pthread_mutex_lock(&bp__registry_lock);
    a->next_live = bp__live_allocators;
    bp__live_allocators = a;
    pthread_mutex_unlock(&bp__registry_lock);
}

void bp__registry_remove(bp_allocator *a)
{
    pthread_mutex_lock(&bp__registry_lock);
    for (bp_allocator **link = &bp__live_allocators; *link != NULL; link = &(*link)->next_live) {
        if (*link == a) {
            *link = a->next_live;
            break;
        }
    }
    pthread_mutex_unlock(&bp__registry_lock);
}

int bp__region_alloc(bp_allocator *a, bp__arena *arena, size_t size, bp__region *out)
{
    if (arena != NULL) return bp__arena_alloc(arena, size, out);
    void *memory = malloc(size == 0 ? 1 : size);
    if (memory == NULL) return BP_ENOMEM;
    out->memory = memory;
    out->length = size;
    out->chunk = NULL;
    out->handle = 0;
    out->kind = BP__KIND_MALLOC;
    atomic_fetch_add_explicit(&a->unpooled_allocations, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&a->unpooled_active_bytes, size, memory_order_relaxed);
    return 0;
}

void bp__region_free(bp_allocator *a, const bp__region *region)
{
    if (region->kind != BP__KIND_MALLOC) {
        bp__arena_free(bp__region_arena(region), region);
        return;
    }
    free(region->memory);
    atomic_fetch_add_explicit(&a->unpooled_deallocations, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&a->unpooled_active_bytes, region->length, memory_order_relaxed);
}

void bp__buf_free(bp__thread_state *ts, bp_allocator *a, bp_buf *b, bool hold_back)
{
    bp__region_free(a, &b->region);
    bp__object_retire(&a->objects, bp__recycler_of(ts), b, hold_back);
}
