/* SPDX-License-Identifier: MIT */
/*
 * Usage bands of chunks; see chunk_list.h for the table of moves.
 */
#include "chunk_list.h"

#include "common.h"

#include <limits.h>
#include <string.h>

static const char *const band_names[BP__NBANDS] = {"qInit", "q000", "q025", "q050", "q075", "q100"};

const char *bp__chunk_band_name(unsigned band)
{
    return band < BP__NBANDS ? band_names[band] : "?";
}

void bp__chunk_lists_init(bp__chunk_list lists[BP__NBANDS], bp__fit_index *fit)
{
    memset(fit, 0, sizeof *fit);
    static const int min_usage[BP__NBANDS] = {INT_MIN, 1, 25, 50, 75, 100};
    static const int max_usage[BP__NBANDS] = {25, 50, 75, 100, 100, INT_MAX};
    for (unsigned b = 0; b < BP__NBANDS; b++) {
        bp__chunk_list *l = &lists[b];
        l->head = NULL;
        l->count = 0;
        l->band = b;
        l->fit = fit;
        l->min_usage = min_usage[b];
        l->max_usage = max_usage[b];
        l->up = b + 1 < BP__NBANDS ? &lists[b + 1] : NULL;
        l->down = b == BP__Q_INIT ? l : (b == BP__Q000 ? NULL : &lists[b - 1]);
    }
}

static void link_chunk(bp__chunk_list *list, bp__chunk *chunk)
{
    if (chunk->fit == NULL) bp__chunk_fit_join(chunk, list->fit); /* entering the bands */
    chunk->band = list->band;
    chunk->prev = NULL;
    chunk->next = list->head;
    if (list->head != NULL) list->head->prev = chunk;
    list->head = chunk;
    list->count++;
}

void bp__chunk_list_remove(bp__chunk_list *list, bp__chunk *chunk)
{
    BP__ASSERT(chunk->band == list->band);
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

void bp__chunk_list_took(bp__chunk_list *list, bp__chunk *chunk)
{
    if (bp__chunk_usage(chunk) >= list->max_usage && list->up != NULL) {
        bp__chunk_list_remove(list, chunk);
        bp__chunk_list_add(list->up, chunk);
    }
}

bool bp__chunk_list_after_free(bp__chunk_list *list, bp__chunk *chunk)
{
    int usage = bp__chunk_usage(chunk);
    if (usage >= list->min_usage) return true;
    bp__chunk_list_remove(list, chunk);
    bp__chunk_list *target = list->down;
    while (target != NULL && usage < target->min_usage) target = target->down;
    if (target == NULL) { /* below q000: empty, to be unmapped */
        bp__chunk_fit_leave(chunk);
        return false;
    }
    link_chunk(target, chunk);
    return true;
}

bool bp__chunk_list_check(const bp__chunk_list *list)
{
    size_t count = 0;
    const bp__chunk *prev = NULL;
    for (const bp__chunk *c = list->head; c != NULL; prev = c, c = c->next, count++)
        if (c->prev != prev || c->band != list->band || c->fit != list->fit) return false;
    return count == list->count;
}
