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

void bp__chunk_lists_init(bp__chunk_list lists[BP__NBANDS])
{
    static const int min_usage[BP__NBANDS] = {INT_MIN, 1, 25, 50, 75, 100};
    static const int max_usage[BP__NBANDS] = {25, 50, 75, 100, 100, INT_MAX};
    for (unsigned b = 0; b < BP__NBANDS; b++) {
        bp__chunk_list *l = &lists[b];
        l->head = NULL;
        memset(l->by_class, 0, sizeof l->by_class);
        l->filed[0] = l->filed[1] = 0;
        l->count = 0;
        l->band = b;
        l->min_usage = min_usage[b];
        l->max_usage = max_usage[b];
        l->up = b + 1 < BP__NBANDS ? &lists[b + 1] : NULL;
        l->down = b == BP__Q_INIT ? l : (b == BP__Q000 ? NULL : &lists[b - 1]);
    }
}

/* Files the chunk under its largest free run's class (not at all when it is full). */
static void file_chunk(bp__chunk_list *list, bp__chunk *chunk)
{
    int k = bp__chunk_largest_free_class(chunk);
    chunk->filed_class = k;
    if (k < 0) return;
    chunk->class_prev = NULL;
    chunk->class_next = list->by_class[k];
    if (chunk->class_next != NULL) chunk->class_next->class_prev = chunk;
    list->by_class[k] = chunk;
    list->filed[k / 64] |= (uint64_t)1 << (k % 64);
}

static void unfile_chunk(bp__chunk_list *list, bp__chunk *chunk)
{
    int k = chunk->filed_class;
    if (k < 0) return;
    if (chunk->class_prev != NULL) chunk->class_prev->class_next = chunk->class_next;
    else list->by_class[k] = chunk->class_next;
    if (chunk->class_next != NULL) chunk->class_next->class_prev = chunk->class_prev;
    if (list->by_class[k] == NULL) list->filed[k / 64] &= ~((uint64_t)1 << (k % 64));
    chunk->class_prev = chunk->class_next = NULL;
    chunk->filed_class = -1;
}

/* After its runs changed: filed again if its largest free run's class moved. */
static void refile_chunk(bp__chunk_list *list, bp__chunk *chunk)
{
    if (bp__chunk_largest_free_class(chunk) == chunk->filed_class) return;
    unfile_chunk(list, chunk);
    file_chunk(list, chunk);
}

static void link_chunk(bp__chunk_list *list, bp__chunk *chunk)
{
    file_chunk(list, chunk);
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
    unfile_chunk(list, chunk);
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

bp__chunk *bp__chunk_list_pick(const bp__chunk_list *list, unsigned k)
{
    bp__chunk *best = list->by_class[k];
    unsigned n = 1;
    for (bp__chunk *c = best->class_next; c != NULL && n < BP__CHUNK_PICK_SPAN; c = c->class_next, n++)
        if (c->dirty_pages > best->dirty_pages) best = c;
    return best;
}

bp__chunk *bp__chunk_list_pick_fit(const bp__chunk_list *list, uint32_t pages, unsigned own, long *offset)
{
    bp__chunk *fit = NULL;
    unsigned n = 0;
    for (bp__chunk *c = list->by_class[own]; c != NULL && n < 2 * BP__CHUNK_PICK_SPAN; c = c->class_next, n++) {
        if (fit != NULL && c->dirty_pages < pages) continue; /* no better than the one found */
        long at = bp__chunk_find_run(c, pages);
        if (at < 0) continue;
        fit = c;
        *offset = at;
        if (c->dirty_pages >= pages) break;
    }
    return fit;
}

void bp__chunk_list_took(bp__chunk_list *list, bp__chunk *chunk)
{
    if (bp__chunk_usage(chunk) >= list->max_usage && list->up != NULL) {
        bp__chunk_list_remove(list, chunk);
        bp__chunk_list_add(list->up, chunk);
    } else {
        refile_chunk(list, chunk);
    }
}

long bp__chunk_list_alloc_run(bp__chunk_list *list, uint32_t pages, unsigned page_class, bp__chunk **out)
{
    int k = bp__bits128_first_from(list->filed, page_class); /* lowest class with a chunk filed */
    if (k < 0) return -1;
    /* Any chunk filed at k >= page_class has a free run of at least `pages` pages. */
    bp__chunk *c = bp__chunk_list_pick(list, (unsigned)k);
    long offset = c->sc->page_class_pages[page_class] == pages ? bp__chunk_alloc_run_in(c, pages, page_class)
                                                               : bp__chunk_alloc_run(c, pages);
    BP__ASSERT(offset >= 0);
    bp__chunk_list_took(list, c);
    *out = c;
    return offset;
}

bool bp__chunk_list_after_free(bp__chunk_list *list, bp__chunk *chunk)
{
    int usage = bp__chunk_usage(chunk);
    if (usage >= list->min_usage) {
        refile_chunk(list, chunk);
        return true;
    }
    bp__chunk_list_remove(list, chunk);
    bp__chunk_list *target = list->down;
    while (target != NULL && usage < target->min_usage) target = target->down;
    if (target == NULL) return false; /* below q000: empty, to be unmapped */
    link_chunk(target, chunk);
    return true;
}

bool bp__chunk_list_check(const bp__chunk_list *list)
{
    size_t filed_members = 0, filed = 0;
    for (const bp__chunk *c = list->head; c != NULL; c = c->next) {
        if (c->filed_class != bp__chunk_largest_free_class(c)) return false;
        filed_members += c->filed_class >= 0;
    }
    for (unsigned k = 0; k < BP__MAX_PAGE_CLASSES; k++) {
        bool bit = (list->filed[k / 64] >> (k % 64)) & 1u;
        if (bit != (list->by_class[k] != NULL)) return false;
        for (const bp__chunk *c = list->by_class[k]; c != NULL; c = c->class_next, filed++)
            if (c->filed_class != (int)k || c->band != list->band) return false;
    }
    return filed == filed_members;
}
