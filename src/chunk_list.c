/*
 * Usage bands of chunks; see chunk_list.h for the table of moves.
 */
#include "chunk_list.h"

#include "common.h"

#include <limits.h>

static const char *const band_names[BP__NBANDS] = {"qInit", "q000", "q025", "q050", "q075", "q100"};

const char *bp__chunk_band_name(unsigned band)
{
    return band < BP__NBANDS ? band_names[band] : "?";
}

void bp__chunk_lists_init(bp__chunk_list lists[BP__NBANDS], size_t chunk_size)
{
    static const int min_usage[BP__NBANDS] = {INT_MIN, 1, 25, 50, 75, 100};
    static const int max_usage[BP__NBANDS] = {25, 50, 75, 100, 100, INT_MAX};
    for (unsigned b = 0; b < BP__NBANDS; b++) {
        bp__chunk_list *l = &lists[b];
        l->head = NULL;
        l->count = 0;
        l->band = b;
        l->min_usage = min_usage[b];
        l->max_usage = max_usage[b];
        l->up = b + 1 < BP__NBANDS ? &lists[b + 1] : NULL;
        l->down = b == BP__Q_INIT ? l : (b == BP__Q000 ? NULL : &lists[b - 1]);
        /* A chunk in this band is at least min_usage % used, so at most the rest is free. */
        int min_used = min_usage[b] < 0 ? 0 : min_usage[b];
        l->max_alloc = min_used >= 100 ? 0 : chunk_size * (size_t)(100 - min_used) / 100;
    }
}

static void link_chunk(bp__chunk_list *list, bp__chunk *chunk)
{
    chunk->band = list->band;
    chunk->prev = NULL;
    chunk->next = list->head;
    if (list->head != NULL) list->head->prev = chunk;
    list->head = chunk;
    list->count++;
}

void bp__chunk_list_remove(bp__chunk_list *list, bp__chunk *chunk)
{
    BP_ASSERT(chunk->band == list->band);
    if (chunk->prev != NULL) chunk->prev->next = chunk->next;
    else list->head = chunk->next;
    if (chunk->next != NULL) chunk->next->prev = chunk->prev;
    chunk->prev = chunk->next = NULL;
    list->count--;
}

void bp__chunk_list_add(bp__chunk_list *list, bp__chunk *chunk)
{
    int usage = bp__chunk_usage(chunk);
    while (usage >= list->max_usage && list->up != NULL) list = list->up;
    link_chunk(list, chunk);
}

long bp__chunk_list_alloc_run(bp__chunk_list *list, uint32_t pages, unsigned page_class, bp__chunk **out)
{
    size_t bytes = (size_t)pages << (list->head ? list->head->sc->page_shift : 0);
    if (list->head == NULL || bytes > list->max_alloc) return -1;
    for (bp__chunk *c = list->head; c != NULL; c = c->next) {
        long offset = bp__chunk_alloc_run_in(c, pages, page_class);
        if (offset < 0) continue;
        if (bp__chunk_usage(c) >= list->max_usage && list->up != NULL) {
            bp__chunk_list_remove(list, c);
            bp__chunk_list_add(list->up, c);
        }
        *out = c;
        return offset;
    }
    return -1;
}

bool bp__chunk_list_after_free(bp__chunk_list *list, bp__chunk *chunk)
{
    int usage = bp__chunk_usage(chunk);
    if (usage >= list->min_usage) return true;
    bp__chunk_list_remove(list, chunk);
    bp__chunk_list *target = list->down;
    while (target != NULL && usage < target->min_usage) target = target->down;
    if (target == NULL) return false; /* below q000: empty, to be unmapped */
    link_chunk(target, chunk);
    return true;
}
