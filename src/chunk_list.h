/* SPDX-License-Identifier: MIT */
/*
 * Chunk lists: chunks grouped by usage into bands (Netty's PoolChunkList), so allocation
 * prefers chunks that are already well used and a chunk that empties can be unmapped.
 *
 *   band   usage range   after alloc, usage >= max: move up    after free, usage < min: move down
 *   qInit  [-, 25)       -> q000                               never (stays, never unmapped)
 *   q000   [1, 50)       -> q025                               unmapped (it is empty)
 *   q025   [25, 75)      -> q050                               -> q000
 *   q050   [50, 100)     -> q075                               -> q025
 *   q075   [75, 100)     -> q100                               -> q050
 *   q100   [100, -]      -                                     -> q075
 *
 * A move continues as far as the usage demands. Guarded by the arena's lock.
 *
 * Runs are not looked for band by band: every chunk in a band is also in the arena's fit
 * index (bp__fit_index), which a chunk joins as it enters the bands and leaves as it
 * leaves them, so that a run request finds the best fit over all chunks without walking
 * those that cannot serve it.
 */
#ifndef BP__CHUNK_LIST_H
#define BP__CHUNK_LIST_H

#include "chunk.h"

#include <stdbool.h>
#include <stddef.h>

enum { BP__Q_INIT, BP__Q000, BP__Q025, BP__Q050, BP__Q075, BP__Q100, BP__NBANDS };

#define BP__MAX_PAGE_CLASSES 128 /* bp__chunk.nonempty has this many bits */

typedef struct bp__chunk_list {
    bp__chunk *head;
    struct bp__chunk_list *up, *down; /* down is NULL for q000 (empty chunks are unmapped)
                                         and the list itself for qInit */
    int min_usage, max_usage;
    size_t count;
    unsigned band;
    bp__fit_index *fit;         /* the arena's: a chunk in any band is in it */
} bp__chunk_list;

/* Sets up the six bands of one arena, linked as in the table, their chunks indexed in
 * `fit`. */
void bp__chunk_lists_init(bp__chunk_list lists[BP__NBANDS], bp__fit_index *fit);

/* Band names for stats: "qInit", "q000", ... */
const char *bp__chunk_band_name(unsigned band);

/* Puts a chunk into `list`, or further up if its usage demands. */
void bp__chunk_list_add(bp__chunk_list *list, bp__chunk *chunk);

void bp__chunk_list_remove(bp__chunk_list *list, bp__chunk *chunk);

/* To be called after a run was taken from `chunk` (a member of `list`): moves it up as its
 * usage demands. */
void bp__chunk_list_took(bp__chunk_list *list, bp__chunk *chunk);

/* To be called after a run of `chunk` (a member of `list`) was freed: moves it down as its
 * usage demands. Returns false when the chunk emptied below q000: it has then been taken
 * out of every list and the fit index, and the caller must delete it. */
bool bp__chunk_list_after_free(bp__chunk_list *list, bp__chunk *chunk);

/* Debug: the list's links, count and bands, and each chunk in the list's fit index. */
bool bp__chunk_list_check(const bp__chunk_list *list);

#endif
